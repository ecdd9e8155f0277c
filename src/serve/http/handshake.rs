//! The WebSocket opening handshake as RFC 6455 section 4.2.1 asks a server to check it:
//! which requests may switch protocols, and what exactly is wrong with the others.
//!
//! The checks run in the order of the original server (Python `websockets`), so a
//! request that lacks several things is told about the same one: the method, the HTTP
//! version, Host, `Connection: upgrade`, `Sec-WebSocket-Key`, `Sec-WebSocket-Version`.
//! The `Upgrade: websocket` header has already made the request a handshake.

use data_encoding::BASE64;
use hyper::header::{self, HeaderMap, HeaderName};
use hyper::{Method, Request, StatusCode, Version};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use crate::observability::metrics::HandshakeRejection;

/// The only WebSocket version there is (RFC 6455).
pub const WEBSOCKET_VERSION: &str = "13";
/// Bytes in a decoded `Sec-WebSocket-Key`.
const KEY_BYTES: usize = 16;
/// Characters of 16 bytes in padded base64.
const KEY_BASE64_LEN: usize = 24;

/// What makes a handshake request invalid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadHandshake {
    /// The method is not GET.
    NotGet,
    /// HTTP/1.0 (or older): the handshake needs HTTP/1.1.
    OldHttp,
    /// No Host header.
    MissingHost,
    /// More than one Host header.
    MultipleHosts,
    /// No `upgrade` token in Connection.
    NoConnectionUpgrade,
    /// No `Sec-WebSocket-Key`.
    MissingKey,
    /// More than one `Sec-WebSocket-Key`.
    MultipleKeys,
    /// A `Sec-WebSocket-Key` that is not 16 bytes in base64.
    InvalidKey,
    /// No `Sec-WebSocket-Version`.
    MissingVersion,
    /// More than one `Sec-WebSocket-Version`.
    MultipleVersions,
    /// A `Sec-WebSocket-Version` other than 13.
    UnsupportedVersion,
}

impl BadHandshake {
    /// The response status: 426 (with `Sec-WebSocket-Version: 13`) only for a version we
    /// do not speak, 505 for HTTP/1.0 (as the original), 400 for everything else.
    pub fn status(self) -> StatusCode {
        match self {
            BadHandshake::OldHttp => StatusCode::HTTP_VERSION_NOT_SUPPORTED,
            BadHandshake::UnsupportedVersion => StatusCode::UPGRADE_REQUIRED,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    /// What is wrong, for the response body and the log.
    pub fn reason(self) -> &'static str {
        match self {
            BadHandshake::NotGet => "a WebSocket handshake must use GET",
            BadHandshake::OldHttp => "a WebSocket handshake needs HTTP/1.1 or later",
            BadHandshake::MissingHost => "missing Host header",
            BadHandshake::MultipleHosts => "more than one Host header",
            BadHandshake::NoConnectionUpgrade => "missing Connection: upgrade header",
            BadHandshake::MissingKey => "missing Sec-WebSocket-Key header",
            BadHandshake::MultipleKeys => "more than one Sec-WebSocket-Key header",
            BadHandshake::InvalidKey => {
                "invalid Sec-WebSocket-Key header: it must be 16 bytes in base64"
            }
            BadHandshake::MissingVersion => "missing Sec-WebSocket-Version header",
            BadHandshake::MultipleVersions => "more than one Sec-WebSocket-Version header",
            BadHandshake::UnsupportedVersion => {
                "unsupported Sec-WebSocket-Version: this relay speaks version 13"
            }
        }
    }

    /// The `reason` label of `handshakes_rejected_total`.
    pub fn metric(self) -> HandshakeRejection {
        match self {
            BadHandshake::NotGet => HandshakeRejection::Method,
            BadHandshake::OldHttp => HandshakeRejection::HttpVersion,
            BadHandshake::MissingHost | BadHandshake::MultipleHosts => HandshakeRejection::Host,
            BadHandshake::NoConnectionUpgrade => HandshakeRejection::Connection,
            BadHandshake::MissingKey | BadHandshake::MultipleKeys | BadHandshake::InvalidKey => {
                HandshakeRejection::Key
            }
            BadHandshake::MissingVersion
            | BadHandshake::MultipleVersions
            | BadHandshake::UnsupportedVersion => HandshakeRejection::Version,
        }
    }
}

/// Checks a handshake request; returns the `Sec-WebSocket-Accept` value for it.
pub fn accept_key<B>(request: &Request<B>) -> Result<String, BadHandshake> {
    if request.method() != Method::GET {
        return Err(BadHandshake::NotGet);
    }
    if request.version() < Version::HTTP_11 {
        return Err(BadHandshake::OldHttp);
    }
    let headers = request.headers();
    one(headers, header::HOST).map_err(|many| {
        if many {
            BadHandshake::MultipleHosts
        } else {
            BadHandshake::MissingHost
        }
    })?;
    if !has_token(headers, header::CONNECTION, "upgrade") {
        return Err(BadHandshake::NoConnectionUpgrade);
    }
    let key = one(headers, header::SEC_WEBSOCKET_KEY).map_err(|many| {
        if many {
            BadHandshake::MultipleKeys
        } else {
            BadHandshake::MissingKey
        }
    })?;
    if !is_valid_key(key) {
        return Err(BadHandshake::InvalidKey);
    }
    let version = one(headers, header::SEC_WEBSOCKET_VERSION).map_err(|many| {
        if many {
            BadHandshake::MultipleVersions
        } else {
            BadHandshake::MissingVersion
        }
    })?;
    if version != WEBSOCKET_VERSION.as_bytes() {
        return Err(BadHandshake::UnsupportedVersion);
    }
    Ok(derive_accept_key(key))
}

/// Whether the request asks to switch to WebSocket.
pub fn wants_websocket(headers: &HeaderMap) -> bool {
    has_token(headers, header::UPGRADE, "websocket")
}

/// The value of a header that must appear exactly once; `Err(true)` when it appears
/// more than once, `Err(false)` when it is missing.
fn one(headers: &HeaderMap, name: HeaderName) -> Result<&[u8], bool> {
    let mut values = headers.get_all(name).iter();
    match (values.next(), values.next()) {
        (Some(value), None) => Ok(value.as_bytes()),
        (Some(_), Some(_)) => Err(true),
        (None, _) => Err(false),
    }
}

/// RFC 6455: "a base64-encoded value that, when decoded, is 16 bytes in length"
/// (padded, canonical base64, as every client library sends it).
fn is_valid_key(key: &[u8]) -> bool {
    key.len() == KEY_BASE64_LEN
        && BASE64
            .decode(key)
            .is_ok_and(|decoded| decoded.len() == KEY_BYTES)
}

/// Whether a comma-separated header holds `token` (case-insensitive).
fn has_token(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|item| item.trim().eq_ignore_ascii_case(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sample key of RFC 6455 section 1.3 and its accept value.
    const SAMPLE_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
    const SAMPLE_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

    fn handshake() -> hyper::http::request::Builder {
        Request::get("/")
            .header("host", "relay.example")
            .header("upgrade", "websocket")
            .header("connection", "Upgrade")
            .header("sec-websocket-key", SAMPLE_KEY)
            .header("sec-websocket-version", "13")
    }

    fn check(request: hyper::http::request::Builder) -> Result<String, BadHandshake> {
        accept_key(&request.body(()).expect("request"))
    }

    fn without(name: &str) -> hyper::http::request::Builder {
        let mut builder = handshake();
        if let Some(headers) = builder.headers_mut() {
            headers.remove(name);
        }
        builder
    }

    #[test]
    fn the_rfc_sample_is_accepted() {
        assert_eq!(check(handshake()).as_deref(), Ok(SAMPLE_ACCEPT));
        let http2 = handshake().version(Version::HTTP_2);
        assert!(check(http2).is_ok(), "later versions are fine");
    }

    #[test]
    fn each_defect_is_named() {
        use BadHandshake::*;
        let post = handshake().method("POST");
        assert_eq!(check(post), Err(NotGet));
        assert_eq!(check(handshake().version(Version::HTTP_10)), Err(OldHttp));
        assert_eq!(check(without("host")), Err(MissingHost));
        assert_eq!(
            check(handshake().header("host", "other")),
            Err(MultipleHosts)
        );
        assert_eq!(check(without("connection")), Err(NoConnectionUpgrade));
        assert_eq!(check(without("sec-websocket-key")), Err(MissingKey));
        assert_eq!(
            check(handshake().header("sec-websocket-key", SAMPLE_KEY)),
            Err(MultipleKeys)
        );
        assert_eq!(check(without("sec-websocket-version")), Err(MissingVersion));
        assert_eq!(
            check(handshake().header("sec-websocket-version", "13")),
            Err(MultipleVersions)
        );
    }

    #[test]
    fn keys_must_be_16_bytes_of_base64() {
        for key in [
            "",
            "not base64 at all!!!!!!!",
            "AAAAAAAAAAAAAAAAAAAA",        // 15 bytes
            "AAAAAAAAAAAAAAAAAAAAAAA=",    // 17 bytes, 24 characters
            "AAAAAAAAAAAAAAAAAAAAAAAA",    // 18 bytes, 24 characters
            "dGhlIHNhbXBsZSBub25jZQ",      // unpadded
            "dGhlIHNhbXBsZSBub25jZQ==, x", // two values in one header
            "dGhlIHNhbXBsZSBub25jZR==",    // non-zero trailing bits
        ] {
            let mut request = without("sec-websocket-key");
            if let Some(headers) = request.headers_mut() {
                headers.insert(
                    header::SEC_WEBSOCKET_KEY,
                    key.parse().expect("header value"),
                );
            }
            assert_eq!(check(request), Err(BadHandshake::InvalidKey), "{key:?}");
        }
    }

    #[test]
    fn only_version_13_and_only_a_wrong_one_gets_426() {
        let mut request = without("sec-websocket-version");
        if let Some(headers) = request.headers_mut() {
            headers.insert(header::SEC_WEBSOCKET_VERSION, "8".parse().expect("value"));
        }
        let error = check(request).expect_err("version 8");
        assert_eq!(error, BadHandshake::UnsupportedVersion);
        assert_eq!(error.status(), StatusCode::UPGRADE_REQUIRED);
        assert_eq!(
            BadHandshake::MissingVersion.status(),
            StatusCode::BAD_REQUEST
        );
    }

    #[test]
    fn header_tokens() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            "keep-alive, Upgrade".parse().expect("value"),
        );
        headers.insert(header::UPGRADE, "WebSocket".parse().expect("value"));
        assert!(has_token(&headers, header::CONNECTION, "upgrade"));
        assert!(wants_websocket(&headers));
        headers.insert(header::UPGRADE, "h2c".parse().expect("value"));
        assert!(!wants_websocket(&headers));
        assert!(!has_token(&HeaderMap::new(), header::CONNECTION, "upgrade"));
    }
}
