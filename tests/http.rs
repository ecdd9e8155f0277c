//! HTTP on the relay's port: /healthz, /metrics, 404/405, and the connection limit.

mod common;

use common::{metric, Client, Relay};
use serde_json::json;
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::Error as WsError;

#[tokio::test]
async fn healthz_answers_ok() {
    let relay = Relay::start().await;
    let (status, _, body) = relay.get("/healthz").await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    relay.stop().await;
}

#[tokio::test]
async fn metrics_reflect_traffic_in_prometheus_text_format() {
    let relay = Relay::start().await;
    let mut receiver = relay.registered("k").await;
    let mut sender = relay.client().await;
    assert_eq!(sender.deliver("k", json!("m")).await, 1);
    receiver.recv_text().await;
    sender.send_text("junk").await;
    sender.assert_alive().await;

    let (status, content_type, text) = relay.get("/metrics").await;
    assert_eq!(status, 200);
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    assert_eq!(metric(&text, "notify_relay_connections"), 2.0);
    assert_eq!(metric(&text, "notify_relay_keys"), 1.0);
    assert_eq!(metric(&text, "notify_relay_registrations_total"), 1.0);
    assert_eq!(metric(&text, "notify_relay_messages_delivered_total"), 1.0);
    assert_eq!(metric(&text, "notify_relay_messages_routed_total"), 2.0);
    // register, deliver, junk, and assert_alive's delivery.
    assert_eq!(metric(&text, "notify_relay_frames_received_total"), 4.0);
    assert_eq!(
        metric(
            &text,
            "notify_relay_messages_dropped_total{reason=\"not_json\"}"
        ),
        1.0
    );
    for series in [
        "notify_relay_connections_closed_total{reason=\"ping_timeout\"}",
        "notify_relay_connections_closed_total{reason=\"slow_consumer\"}",
        "notify_relay_connections_closed_total{reason=\"oversize\"}",
        "notify_relay_connections_rejected_total",
    ] {
        assert_eq!(metric(&text, series), 0.0, "{series}");
    }
    assert!(text.contains("# HELP notify_relay_connections Open WebSocket connections"));
    relay.stop().await;
}

#[tokio::test]
async fn unknown_routes_get_404_and_wrong_methods_405() {
    let relay = Relay::start().await;
    for path in ["/", "/index.html", "/healthz/x"] {
        assert_eq!(relay.get(path).await.0, 404, "{path}");
    }
    let (status, _, _) = common::http_request(relay.addr, "POST", "/metrics").await;
    assert_eq!(status, 405);
    relay.stop().await;
}

#[tokio::test]
async fn past_max_connections_new_clients_get_503_until_one_leaves() {
    let relay = Relay::start_with(|c| c.max_connections = 2).await;
    let first = relay.client().await;
    let _second = relay.client().await;
    match connect_async(relay.url()).await {
        Err(WsError::Http(response)) => assert_eq!(response.status().as_u16(), 503),
        other => panic!("expected 503, got {:?}", other.map(|_| "a connection")),
    }
    assert_eq!(relay.state.metrics.connections_rejected.get(), 1);
    drop(first);
    common::eventually("slot freed", || relay.state.metrics.connections.get() == 1).await;
    let mut third = Client::connect(&relay.url()).await;
    third.assert_alive().await;
    relay.stop().await;
}

#[tokio::test]
async fn a_socket_that_never_sends_a_request_is_closed_but_websockets_are_not() {
    use std::time::Duration;
    use tokio::io::AsyncReadExt;

    let relay = Relay::start_with(|c| {
        c.handshake_timeout = Duration::from_millis(200);
        c.ping_interval = Duration::from_millis(100);
    })
    .await;
    let mut websocket = relay.registered("upgraded").await;
    let mut silent = tokio::net::TcpStream::connect(relay.addr)
        .await
        .expect("connect");
    let mut buf = [0u8; 64];
    // hyper closes it (possibly after a 408 response): the read reaches end of stream.
    loop {
        let n = common::within("silent socket closed", silent.read(&mut buf))
            .await
            .unwrap_or(0);
        if n == 0 {
            break;
        }
    }
    // The upgraded connection outlives the handshake timeout: five Pings at 100 ms.
    websocket.expect_pings(5).await;
    websocket.assert_alive().await;
    relay.stop().await;
}

/// A handshake request and what the relay must answer.
struct BadHandshake {
    method: &'static str,
    headers: Vec<(&'static str, &'static str)>,
    status: u16,
    says: &'static str,
}

#[tokio::test]
async fn malformed_websocket_handshakes_get_clear_http_errors() {
    let relay = Relay::start().await;
    let (upgrade, connection) = (("upgrade", "websocket"), ("connection", "Upgrade"));
    let key = ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==");
    let v13 = ("sec-websocket-version", "13");
    let cases = [
        BadHandshake {
            method: "GET",
            headers: vec![upgrade, connection, ("sec-websocket-version", "8"), key],
            status: 426,
            says: "version",
        },
        BadHandshake {
            method: "GET",
            headers: vec![upgrade, connection, v13],
            status: 400,
            says: "Sec-WebSocket-Key",
        },
        BadHandshake {
            method: "GET",
            headers: vec![upgrade, v13, key],
            status: 400,
            says: "Connection: upgrade",
        },
        BadHandshake {
            method: "POST",
            headers: vec![upgrade, connection, v13, key],
            status: 400,
            says: "GET",
        },
    ];
    for case in cases {
        let (status, _, body) =
            common::http_request_with(relay.addr, case.method, "/", &case.headers).await;
        assert_eq!(
            status, case.status,
            "{} {:?}: {body}",
            case.method, case.headers
        );
        assert!(body.contains(case.says), "{body}");
    }
    // None of them became a connection.
    assert_eq!(relay.state.metrics.connections_opened.get(), 0);
    relay.stop().await;
}
