//! Access control (Part 5 of docs/PROTOCOL.md): signed registration tokens and publisher
//! tokens. Both are off unless configured, so every existing client keeps working.
//!
//! A registration token is an HS256 JWT whose `sub` is the key and which carries `exp`.
//! It is checked here with `hmac` + `sha2` rather than a general JWT library: the relay
//! accepts exactly one algorithm, so there is no algorithm choice to get wrong (no `none`,
//! no RSA/HMAC confusion), the signature is checked with [`Mac::verify_slice`], which
//! compares in constant time, and no unused RSA/EC code is built in.
//!
//! Publisher tokens are opaque strings. A presented token is compared with every
//! configured one through their SHA-256 digests with [`subtle`]'s constant-time equality,
//! so neither the content nor the length of a configured token leaks through timing.

use std::fmt;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use data_encoding::BASE64URL_NOPAD;
use hmac::{Hmac, Mac};
use hyper::header::{self, HeaderMap, HeaderValue};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// The only signing algorithm accepted.
pub const ALGORITHM: &str = "HS256";
/// Longest token looked at, in bytes: a JWT for a 256-byte key is far shorter, and a
/// larger one is refused before any decoding.
pub const MAX_TOKEN_LENGTH: usize = 4096;
/// The error text of a refusal, the same on every door.
pub const UNAUTHORIZED: &str = "unauthorized";

/// The access-control settings (all off by default).
#[derive(Clone, PartialEq, Eq, Default, clap::Args)]
pub struct AuthConfig {
    /// Secret for HS256 registration tokens: with it, registering, /events/KEY and
    /// presence need a JWT whose sub is the key and which has exp.
    #[arg(long, env = "NOTIFY_RELAY_AUTH_SECRET", hide_env_values = true)]
    pub auth_secret: Option<String>,

    /// File holding the registration token secret (trailing newline ignored), instead of
    /// --auth-secret.
    #[arg(
        long,
        env = "NOTIFY_RELAY_AUTH_SECRET_FILE",
        conflicts_with = "auth_secret"
    )]
    pub auth_secret_file: Option<PathBuf>,

    /// A previous secret still accepted while tokens signed with it are in use (rotation).
    #[arg(
        long,
        env = "NOTIFY_RELAY_AUTH_SECRET_PREVIOUS",
        hide_env_values = true
    )]
    pub auth_secret_previous: Option<String>,

    /// Token a publisher must present (HTTP publish: Authorization: Bearer; WebSocket: in
    /// the handshake, Authorization: Bearer or ?token=). Repeatable; comma-separated in
    /// the environment variable.
    #[arg(
        long = "publish-token",
        env = "NOTIFY_RELAY_PUBLISH_TOKEN",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub publish_tokens: Vec<String>,

    /// File of publisher tokens, one a line (empty lines and lines starting with # are
    /// skipped).
    #[arg(long, env = "NOTIFY_RELAY_PUBLISH_TOKEN_FILE")]
    pub publish_token_file: Option<PathBuf>,

    /// Origins (e.g. https://app.example) whose pages may open a WebSocket or an event
    /// stream, comma-separated; other Origin headers get 403. Requests without Origin
    /// (non-browser clients) are allowed. Unset: any origin.
    #[arg(long, env = "NOTIFY_RELAY_ALLOWED_ORIGINS", value_delimiter = ',', value_parser = origin)]
    pub allowed_origins: Vec<String>,
}

/// One `--allowed-origins` entry, checked at start: an origin is what a browser sends in
/// `Origin`, `SCHEME://HOST[:PORT]`, so an entry without a scheme (`app.example`) or with
/// a path would start a relay that refuses every page. `null` (pages opened from disk,
/// sandboxed frames) is allowed as written. A trailing `/` is forgiven.
fn origin(text: &str) -> Result<String, String> {
    let entry = text.trim();
    let example = "write it as the browser sends it, e.g. https://app.example or \
                   http://localhost:3000";
    if entry.eq_ignore_ascii_case("null") {
        return Ok("null".to_owned());
    }
    let uri: hyper::Uri = entry
        .parse()
        .map_err(|_| format!("`{entry}` is not an origin: {example}"))?;
    let path_free = matches!(uri.path_and_query().map(|p| p.as_str()), None | Some("/"));
    let plain_host = uri
        .authority()
        .is_some_and(|authority| !authority.as_str().contains('@'));
    if uri.scheme().is_none() || !plain_host || !path_free || entry.ends_with("//") {
        return Err(format!(
            "`{entry}` is not an origin (SCHEME://HOST[:PORT], no path): {example}"
        ));
    }
    Ok(entry.trim_end_matches('/').to_owned())
}

/// Secrets stay out of `{:?}` output (a logged or printed configuration).
impl fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hidden = |set: bool| if set { "<hidden>" } else { "<none>" };
        f.debug_struct("AuthConfig")
            .field("auth_secret", &hidden(self.auth_secret.is_some()))
            .field("auth_secret_file", &self.auth_secret_file)
            .field(
                "auth_secret_previous",
                &hidden(self.auth_secret_previous.is_some()),
            )
            .field("publish_tokens", &self.publish_tokens.len())
            .field("publish_token_file", &self.publish_token_file)
            .field("allowed_origins", &self.allowed_origins)
            .finish()
    }
}

impl AuthConfig {
    /// Reads the secret and token files into the settings, and refuses empty secrets and
    /// tokens (an empty secret would sign anyone's token).
    pub fn load_files(&mut self) -> Result<(), String> {
        if let Some(path) = &self.auth_secret_file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read --auth-secret-file {}: {e}", path.display()))?;
            self.auth_secret = Some(text.trim_end_matches(['\r', '\n']).to_owned());
        }
        if let Some(path) = &self.publish_token_file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read --publish-token-file {}: {e}", path.display()))?;
            self.publish_tokens.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|line| !line.is_empty() && !line.starts_with('#'))
                    .map(str::to_owned),
            );
            if self.publish_tokens.is_empty() {
                return Err(format!(
                    "--publish-token-file {} holds no token",
                    path.display()
                ));
            }
        }
        let empty_secret = |secret: &Option<String>| secret.as_deref() == Some("");
        if empty_secret(&self.auth_secret) || empty_secret(&self.auth_secret_previous) {
            return Err("an auth secret must not be empty".to_owned());
        }
        if self.auth_secret.is_none() && self.auth_secret_previous.is_some() {
            return Err("--auth-secret-previous needs --auth-secret".to_owned());
        }
        if self.publish_tokens.iter().any(String::is_empty) {
            return Err("a publish token must not be empty".to_owned());
        }
        Ok(())
    }
}

/// Why a registration token was refused (the `reason` label of `auth_refused_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No token.
    Missing,
    /// Not a JWT, not HS256, a bad signature, or claims that are not `sub` + `exp`.
    Invalid,
    /// Signed and well-formed, but past its `exp`.
    Expired,
    /// Signed and current, but for another key.
    WrongKey,
}

impl Refusal {
    /// Every reason, for metrics.
    pub const ALL: [Refusal; 4] = [
        Refusal::Missing,
        Refusal::Invalid,
        Refusal::Expired,
        Refusal::WrongKey,
    ];

    /// A short, stable label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Missing => "missing",
            Refusal::Invalid => "invalid",
            Refusal::Expired => "expired",
            Refusal::WrongKey => "wrong_key",
        }
    }
}

/// The JOSE header members the relay reads.
#[derive(Deserialize)]
struct Header {
    alg: String,
}

/// The claims the relay reads.
#[derive(Deserialize)]
struct Claims {
    sub: String,
    exp: f64,
    nbf: Option<f64>,
}

/// The access rules of a running relay, built once from [`AuthConfig`].
pub struct Access {
    /// Registration secrets, the current one first; empty: registration is open.
    secrets: Vec<Vec<u8>>,
    /// SHA-256 digests of the publisher tokens; empty: publishing is open.
    publish_digests: Vec<[u8; 32]>,
    /// The allowed `Origin` values, without a trailing `/`; empty: any origin.
    allowed_origins: Vec<String>,
}

impl fmt::Debug for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Access")
            .field("secrets", &self.secrets.len())
            .field("publish_tokens", &self.publish_digests.len())
            .finish()
    }
}

impl Access {
    /// The rules `config` sets (its files already loaded, see [`AuthConfig::load_files`]).
    pub fn new(config: &AuthConfig) -> Self {
        let secrets = [&config.auth_secret, &config.auth_secret_previous]
            .into_iter()
            .flatten()
            .filter(|secret| !secret.is_empty())
            .map(|secret| secret.as_bytes().to_vec())
            .collect();
        let publish_digests = config
            .publish_tokens
            .iter()
            .filter(|token| !token.is_empty())
            .map(|token| digest(token))
            .collect();
        let allowed_origins = config
            .allowed_origins
            .iter()
            .map(|origin| origin.trim().trim_end_matches('/').to_owned())
            .filter(|origin| !origin.is_empty())
            .collect();
        Self {
            secrets,
            publish_digests,
            allowed_origins,
        }
    }

    /// Whether a request from a browser page may open a WebSocket or an event stream:
    /// no list, no `Origin` header (not a browser), or an `Origin` on the list.
    pub fn origin_allowed(&self, headers: &HeaderMap) -> bool {
        self.allowed_origins.is_empty() || self.allowed_origin(headers) != Some(false)
    }

    /// The value of `Access-Control-Allow-Origin` for a request: `*` without a list, the
    /// request's own `Origin` when it is on the list, else none.
    pub fn cors_origin(&self, headers: &HeaderMap) -> Option<HeaderValue> {
        if self.allowed_origins.is_empty() {
            return Some(HeaderValue::from_static("*"));
        }
        headers
            .get(header::ORIGIN)
            .filter(|_| self.allowed_origin(headers) == Some(true))
            .cloned()
    }

    /// `None` without an `Origin` header, else whether it is on the list.
    fn allowed_origin(&self, headers: &HeaderMap) -> Option<bool> {
        let origin = headers.get(header::ORIGIN)?;
        let origin = origin.to_str().unwrap_or_default();
        Some(
            self.allowed_origins
                .iter()
                .any(|allowed| allowed.eq_ignore_ascii_case(origin)),
        )
    }

    /// Whether an origin list is set (CORS answers then vary by `Origin`).
    pub fn restricts_origins(&self) -> bool {
        !self.allowed_origins.is_empty()
    }

    /// Whether registering, event streams and presence need a token.
    pub fn registration_required(&self) -> bool {
        !self.secrets.is_empty()
    }

    /// Whether publishing needs a publisher token.
    pub fn publish_token_required(&self) -> bool {
        !self.publish_digests.is_empty()
    }

    /// Checks a registration token for `key` at the current time. Always `Ok` when no
    /// secret is configured.
    pub fn check_registration(&self, token: Option<&str>, key: &str) -> Result<(), Refusal> {
        if !self.registration_required() {
            return Ok(());
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |since| since.as_secs_f64());
        self.verify(token.ok_or(Refusal::Missing)?, key, now)
    }

    /// Verifies `token` for `key` at `now` (seconds since the Unix epoch).
    pub fn verify(&self, token: &str, key: &str, now: f64) -> Result<(), Refusal> {
        if token.len() > MAX_TOKEN_LENGTH {
            return Err(Refusal::Invalid);
        }
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(Refusal::Invalid);
        };
        let signature = BASE64URL_NOPAD
            .decode(signature.as_bytes())
            .map_err(|_| Refusal::Invalid)?;
        let signed = &token[..header.len() + 1 + payload.len()];
        // Every secret is tried, so the time taken does not say which one matched.
        let mut valid = false;
        for secret in &self.secrets {
            valid |= hmac_sha256(secret, signed.as_bytes())
                .verify_slice(&signature)
                .is_ok();
        }
        if !valid {
            return Err(Refusal::Invalid);
        }
        let header: Header = decode_json(header)?;
        if header.alg != ALGORITHM {
            return Err(Refusal::Invalid);
        }
        let claims: Claims = decode_json(payload)?;
        if claims.nbf.is_some_and(|nbf| nbf > now) {
            return Err(Refusal::Invalid);
        }
        if claims.exp <= now {
            return Err(Refusal::Expired);
        }
        if claims.sub != key {
            return Err(Refusal::WrongKey);
        }
        Ok(())
    }

    /// Whether a publisher presented one of the configured tokens. Always `true` when
    /// none is configured.
    pub fn may_publish(&self, presented: Option<&str>) -> bool {
        if !self.publish_token_required() {
            return true;
        }
        let Some(presented) = presented else {
            return false;
        };
        let presented = digest(presented);
        // No early exit: every configured token is compared.
        let matched = self
            .publish_digests
            .iter()
            .fold(subtle::Choice::from(0), |any, known| {
                any | known.ct_eq(&presented)
            });
        matched.into()
    }
}

/// An HMAC-SHA256 over `data` keyed with `secret` (any length is a valid HMAC key).
fn hmac_sha256(secret: &[u8], data: &[u8]) -> HmacSha256 {
    let mut mac = <HmacSha256 as Mac>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(data);
    mac
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// A base64url JSON segment of a token.
fn decode_json<T: for<'de> Deserialize<'de>>(segment: &str) -> Result<T, Refusal> {
    let bytes = BASE64URL_NOPAD
        .decode(segment.as_bytes())
        .map_err(|_| Refusal::Invalid)?;
    serde_json::from_slice(&bytes).map_err(|_| Refusal::Invalid)
}

/// Signs a registration token for `key` valid until `exp` (seconds since the Unix epoch):
/// what a web app does with PyJWT, here for tests and tools.
pub fn sign(secret: &[u8], key: &str, exp: u64) -> String {
    let header = BASE64URL_NOPAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let claims = serde_json::json!({ "sub": key, "exp": exp });
    let payload = BASE64URL_NOPAD.encode(claims.to_string().as_bytes());
    let signed = format!("{header}.{payload}");
    let signature = hmac_sha256(secret, signed.as_bytes())
        .finalize()
        .into_bytes();
    format!("{signed}.{}", BASE64URL_NOPAD.encode(&signature))
}

/// The token of an `Authorization: Bearer <token>` header, if there is exactly one such.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|token| !token.is_empty())
}

/// The `token` parameter of a query string.
pub fn query_token(query: Option<&str>) -> Option<String> {
    form_urlencoded::parse(query?.as_bytes())
        .find(|(name, _)| name == "token")
        .map(|(_, value)| value.into_owned())
}

/// A request's token: the `Authorization: Bearer` header, else `?token=`.
pub fn request_token(headers: &HeaderMap, query: Option<&str>) -> Option<String> {
    bearer(headers)
        .map(str::to_owned)
        .or_else(|| query_token(query))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"current secret";
    const NOW: f64 = 1_800_000_000.0;

    fn access(secret: &str, previous: Option<&str>) -> Access {
        Access::new(&AuthConfig {
            auth_secret: Some(secret.to_owned()),
            auth_secret_previous: previous.map(str::to_owned),
            ..AuthConfig::default()
        })
    }

    fn token_for(key: &str) -> String {
        sign(SECRET, key, NOW as u64 + 60)
    }

    #[test]
    fn a_signed_current_token_for_the_key_passes() {
        let access = access("current secret", None);
        assert_eq!(access.verify(&token_for("k"), "k", NOW), Ok(()));
    }

    #[test]
    fn each_refusal_is_named() {
        let access = access("current secret", None);
        assert_eq!(
            access.verify(&token_for("other"), "k", NOW),
            Err(Refusal::WrongKey)
        );
        let expired = sign(SECRET, "k", NOW as u64 - 1);
        assert_eq!(access.verify(&expired, "k", NOW), Err(Refusal::Expired));
        let foreign = sign(b"another secret", "k", NOW as u64 + 60);
        assert_eq!(access.verify(&foreign, "k", NOW), Err(Refusal::Invalid));
        for garbage in ["", "a.b", "a.b.c", "a.b.c.d", &"x".repeat(5000)] {
            assert_eq!(access.verify(garbage, "k", NOW), Err(Refusal::Invalid));
        }
        assert_eq!(access.check_registration(None, "k"), Err(Refusal::Missing));
    }

    /// A token with exactly this header and payload, signed with `SECRET`.
    fn signed_as_is(header: &[u8], payload: &[u8]) -> String {
        let signed = format!(
            "{}.{}",
            BASE64URL_NOPAD.encode(header),
            BASE64URL_NOPAD.encode(payload)
        );
        let mac = hmac_sha256(SECRET, signed.as_bytes())
            .finalize()
            .into_bytes();
        format!("{signed}.{}", BASE64URL_NOPAD.encode(&mac))
    }

    #[test]
    fn only_hs256_is_accepted() {
        let access = access("current secret", None);
        let header = BASE64URL_NOPAD.encode(br#"{"alg":"none"}"#);
        let payload = BASE64URL_NOPAD.encode(br#"{"sub":"k","exp":9999999999}"#);
        let unsigned = format!("{header}.{payload}.");
        assert_eq!(access.verify(&unsigned, "k", NOW), Err(Refusal::Invalid));
        // Correctly signed with the secret but claiming another algorithm.
        let token = signed_as_is(br#"{"alg":"none"}"#, br#"{"sub":"k","exp":9999999999}"#);
        assert_eq!(access.verify(&token, "k", NOW), Err(Refusal::Invalid));
    }

    #[test]
    fn a_token_without_exp_is_invalid() {
        let access = access("current secret", None);
        let token = signed_as_is(br#"{"alg":"HS256"}"#, br#"{"sub":"k"}"#);
        assert_eq!(access.verify(&token, "k", NOW), Err(Refusal::Invalid));
    }

    #[test]
    fn the_previous_secret_is_accepted_for_rotation() {
        let rotated = access("new secret", Some("current secret"));
        assert_eq!(rotated.verify(&token_for("k"), "k", NOW), Ok(()));
        let new = sign(b"new secret", "k", NOW as u64 + 60);
        assert_eq!(rotated.verify(&new, "k", NOW), Ok(()));
        let after = access("new secret", None);
        assert_eq!(
            after.verify(&token_for("k"), "k", NOW),
            Err(Refusal::Invalid)
        );
    }

    #[test]
    fn publisher_tokens() {
        let open = Access::new(&AuthConfig::default());
        assert!(open.may_publish(None));
        let access = Access::new(&AuthConfig {
            publish_tokens: vec!["alpha".into(), "beta".into()],
            ..AuthConfig::default()
        });
        assert!(access.may_publish(Some("alpha")));
        assert!(access.may_publish(Some("beta")));
        assert!(!access.may_publish(Some("alph")));
        assert!(!access.may_publish(Some("")));
        assert!(!access.may_publish(None));
    }

    #[test]
    fn tokens_from_requests() {
        let mut headers = HeaderMap::new();
        assert_eq!(
            request_token(&headers, Some("a=1&token=q%2Bt")),
            Some("q+t".into())
        );
        headers.insert(
            header::AUTHORIZATION,
            "Bearer h.t.s".parse().expect("value"),
        );
        assert_eq!(
            request_token(&headers, Some("token=q")),
            Some("h.t.s".into())
        );
        headers.insert(header::AUTHORIZATION, "Basic abc".parse().expect("value"));
        assert_eq!(bearer(&headers), None);
    }

    #[test]
    fn debug_output_hides_secrets() {
        let config = AuthConfig {
            auth_secret: Some("s3cr3t".into()),
            publish_tokens: vec!["p4ss".into()],
            ..AuthConfig::default()
        };
        let shown = format!("{config:?}");
        assert!(
            !shown.contains("s3cr3t") && !shown.contains("p4ss"),
            "{shown}"
        );
    }
}
