//! The WebSocket opening handshake (RFC 6455 section 4.2.1), sent byte by byte over raw
//! TCP: every defect gets an HTTP error that names it, and none becomes a connection.

mod common;

use common::{metric, Relay};

/// The sample key of RFC 6455 section 1.3.
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// A handshake request: `headers` go between the request line and the blank line.
fn request(method: &str, version: &str, headers: &[&str]) -> String {
    let mut text = format!("{method} / {version}\r\n");
    for header in headers {
        text.push_str(header);
        text.push_str("\r\n");
    }
    text.push_str("\r\n");
    text
}

/// What the relay must answer to one request.
struct Case {
    what: &'static str,
    request: String,
    status: u16,
    says: &'static str,
}

#[tokio::test]
async fn each_handshake_defect_gets_an_http_error_naming_it() {
    let relay = Relay::start().await;
    let host = "Host: relay.example";
    let (upgrade, connection) = ("Upgrade: websocket", "Connection: Upgrade");
    let key = format!("Sec-WebSocket-Key: {KEY}");
    let key = key.as_str();
    let v13 = "Sec-WebSocket-Version: 13";
    let handshake = |extra: &[&str]| {
        let mut headers = vec![host, upgrade, connection];
        headers.extend_from_slice(extra);
        request("GET", "HTTP/1.1", &headers)
    };
    let cases = [
        Case {
            what: "the seed's curl check (curl -i -N -H 'Connection: Upgrade' -H 'Upgrade: websocket')",
            request: request(
                "GET",
                "HTTP/1.1",
                &[host, "User-Agent: curl/8.5.0", "Accept: */*", connection, upgrade],
            ),
            status: 400,
            says: "missing Sec-WebSocket-Key header",
        },
        Case {
            what: "two keys",
            request: handshake(&[key, key, v13]),
            status: 400,
            says: "more than one Sec-WebSocket-Key",
        },
        Case {
            what: "a key that is not base64",
            request: handshake(&["Sec-WebSocket-Key: not*base64*at*all*!!!!!", v13]),
            status: 400,
            says: "invalid Sec-WebSocket-Key",
        },
        Case {
            what: "a 15-byte key",
            request: handshake(&["Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAA", v13]),
            status: 400,
            says: "invalid Sec-WebSocket-Key",
        },
        Case {
            what: "a 17-byte key",
            request: handshake(&["Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAAA=", v13]),
            status: 400,
            says: "invalid Sec-WebSocket-Key",
        },
        Case {
            what: "an empty key",
            request: handshake(&["Sec-WebSocket-Key:", v13]),
            status: 400,
            says: "invalid Sec-WebSocket-Key",
        },
        Case {
            what: "HTTP/1.0",
            request: request("GET", "HTTP/1.0", &[host, upgrade, connection, key, v13]),
            status: 505,
            says: "HTTP/1.1",
        },
        Case {
            what: "no Host",
            request: request("GET", "HTTP/1.1", &[upgrade, connection, key, v13]),
            status: 400,
            says: "missing Host header",
        },
        Case {
            what: "two Hosts",
            request: handshake(&["Host: other.example", key, v13]),
            status: 400,
            says: "more than one Host",
        },
        Case {
            what: "no version",
            request: handshake(&[key]),
            status: 400,
            says: "missing Sec-WebSocket-Version header",
        },
        Case {
            what: "no Connection: upgrade",
            request: request("GET", "HTTP/1.1", &[host, upgrade, key, v13]),
            status: 400,
            says: "Connection: upgrade",
        },
        Case {
            what: "not GET",
            request: request(
                "POST",
                "HTTP/1.1",
                &[host, upgrade, connection, key, v13, "Content-Length: 0"],
            ),
            status: 400,
            says: "GET",
        },
    ];
    for case in &cases {
        let response = common::raw_request(relay.addr, case.request.as_bytes()).await;
        assert_eq!(response.status, case.status, "{}: {response:?}", case.what);
        assert!(
            response.body.contains(case.says),
            "{}: {:?} does not say {:?}",
            case.what,
            response.body,
            case.says
        );
        assert!(
            response
                .body
                .starts_with("Failed to open a WebSocket connection: "),
            "{}: {:?}",
            case.what,
            response.body
        );
    }
    assert_eq!(relay.state.metrics.connections_opened.get(), 0);
    let (_, _, text) = relay.get("/metrics").await;
    for (reason, count) in [
        ("key", 6.0),
        ("http_version", 1.0),
        ("host", 2.0),
        ("version", 1.0),
        ("connection", 1.0),
        ("method", 1.0),
    ] {
        let series = format!("notify_relay_handshakes_rejected_total{{reason=\"{reason}\"}}");
        assert_eq!(metric(&text, &series), count, "{series}");
    }

    // The checks are not stricter than the RFC: a correct handshake switches.
    let valid = request(
        "GET",
        "HTTP/1.1",
        &[host, upgrade, "Connection: keep-alive, Upgrade", key, v13],
    );
    let response = common::raw_request(relay.addr, valid.as_bytes()).await;
    assert_eq!(response.status, 101, "{response:?}");
    // RFC 6455 section 1.3's sample accept value.
    assert_eq!(
        response.header("sec-websocket-accept"),
        Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    );
    common::eventually("connection opened", || {
        relay.state.metrics.connections_opened.get() == 1
    })
    .await;
    relay.stop().await;
}

#[tokio::test]
async fn only_an_unsupported_version_gets_426_with_the_version_we_speak() {
    let relay = Relay::start().await;
    let key = format!("Sec-WebSocket-Key: {KEY}");
    let headers = [
        "Host: relay.example",
        "Upgrade: websocket",
        "Connection: Upgrade",
        &key,
        "Sec-WebSocket-Version: 8",
    ];
    let response =
        common::raw_request(relay.addr, request("GET", "HTTP/1.1", &headers).as_bytes()).await;
    assert_eq!(response.status, 426, "{response:?}");
    assert_eq!(response.header("sec-websocket-version"), Some("13"));
    assert!(
        response.body.contains("Sec-WebSocket-Version"),
        "{response:?}"
    );
    relay.stop().await;
}

#[tokio::test]
async fn a_64_kib_header_line_gets_431_and_a_12_kib_one_is_fine() {
    let relay = Relay::start().await;
    let key = format!("Sec-WebSocket-Key: {KEY}");
    let handshake_with = |padding: usize| {
        let pad = format!("X-Padding: {}", "a".repeat(padding));
        let headers = [
            "Host: relay.example",
            "Upgrade: websocket",
            "Connection: Upgrade",
            key.as_str(),
            "Sec-WebSocket-Version: 13",
            pad.as_str(),
        ];
        request("GET", "HTTP/1.1", &headers)
    };
    let huge = common::raw_request(relay.addr, handshake_with(64 * 1024).as_bytes()).await;
    assert_eq!(huge.status, 431, "{huge:?}");
    let (_, _, text) = relay.get("/metrics").await;
    assert_eq!(
        metric(
            &text,
            "notify_relay_handshakes_rejected_total{reason=\"headers_too_large\"}"
        ),
        1.0
    );
    let large = common::raw_request(relay.addr, handshake_with(12 * 1024).as_bytes()).await;
    assert_eq!(large.status, 101, "{large:?}");
    relay.stop().await;
}
