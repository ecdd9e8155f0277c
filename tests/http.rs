//! HTTP on the relay's port: /healthz, /readyz, /metrics, the page at /, 404/405, and
//! the connection limit. Handshake validation is in tests/handshake.rs.

mod common;

use common::{metric, Client, Relay};
use serde_json::json;
use tokio::io::AsyncWriteExt;
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

#[tokio::test]
async fn a_browser_opening_the_relay_is_told_what_it_is() {
    let relay = Relay::start().await;
    let about = common::raw_request(
        relay.addr,
        format!(
            "GET / HTTP/1.1\r\nHost: {}\r\nAccept: text/html\r\n\r\n",
            relay.addr
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(about.status, 426, "{about:?}");
    assert_eq!(about.header("upgrade"), Some("websocket"));
    for says in [
        "WebSocket",
        &format!("ws://{}/", relay.addr),
        "/healthz",
        "/readyz",
        "/metrics",
    ] {
        assert!(
            about.body.contains(says),
            "{says:?} missing in:\n{}",
            about.body
        );
    }
    for path in ["/index.html", "/healthz/x", "/favicon.ico"] {
        let (status, _, body) = relay.get(path).await;
        assert_eq!(status, 404, "{path}");
        assert!(body.contains("/healthz"), "{path}: {body}");
    }
    relay.stop().await;
}

#[tokio::test]
async fn other_methods_get_405_with_allow() {
    let relay = Relay::start().await;
    for path in ["/", "/healthz", "/readyz", "/metrics"] {
        for method in ["POST", "PUT", "DELETE"] {
            let request =
                format!("{method} {path} HTTP/1.1\r\nHost: relay\r\nContent-Length: 0\r\n\r\n");
            let response = common::raw_request(relay.addr, request.as_bytes()).await;
            assert_eq!(response.status, 405, "{method} {path}");
            assert_eq!(
                response.header("allow"),
                Some("GET, HEAD"),
                "{method} {path}"
            );
        }
    }
    relay.stop().await;
}

#[tokio::test]
async fn head_answers_like_get_without_a_body() {
    let relay = Relay::start().await;
    for path in ["/healthz", "/readyz", "/metrics"] {
        let mut tcp = tokio::net::TcpStream::connect(relay.addr)
            .await
            .expect("connect");
        // HEAD, then GET on the same connection: had HEAD sent a body, the GET's status
        // line would not come next.
        let request = format!(
            "HEAD {path} HTTP/1.1\r\nHost: relay\r\n\r\nGET {path} HTTP/1.1\r\nHost: relay\r\n\r\n"
        );
        tcp.write_all(request.as_bytes()).await.expect("send");
        let head = common::read_response(&mut tcp, true).await;
        let get = common::read_response(&mut tcp, false).await;
        assert_eq!((head.status, get.status), (200, 200), "{path}");
        assert!(head.body.is_empty(), "{path}: {:?}", head.body);
        assert_eq!(head.header("content-type"), get.header("content-type"));
        let length: usize = head
            .header("content-length")
            .and_then(|l| l.parse().ok())
            .expect("content-length");
        assert!(length > 0, "{path}");
        if path != "/metrics" {
            assert_eq!(length, get.body.len(), "{path}");
        }
    }
    relay.stop().await;
}

#[tokio::test]
async fn readyz_says_ready_then_full_at_max_connections_then_ready_again() {
    let relay = Relay::start_with(|c| c.max_connections = 2).await;
    assert_eq!(
        relay.get("/readyz").await,
        (200, TEXT.into(), "ready\n".into())
    );
    let first = relay.client().await;
    let _second = relay.client().await;
    let (status, _, body) = relay.get("/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.starts_with("not ready\n"), "{body}");
    assert!(body.contains("full: 2 connections"), "{body}");
    assert!(body.contains("--max-connections"), "{body}");
    drop(first);
    common::eventually("a slot is free", || relay.state.capacity.has_free_slot()).await;
    assert_eq!(relay.get("/readyz").await.0, 200);
    relay.stop().await;
}

#[tokio::test]
async fn at_max_connections_healthz_and_metrics_answer_and_only_upgrades_get_503() {
    let relay = Relay::start_with(|c| c.max_connections = 1).await;
    let mut holder = relay.client().await;
    assert_eq!(
        relay.get("/healthz").await,
        (200, TEXT.into(), "ok\n".into())
    );
    let (status, _, metrics) = relay.get("/metrics").await;
    assert_eq!(status, 200);
    assert_eq!(metric(&metrics, "notify_relay_connections"), 1.0);
    let head =
        common::raw_request(relay.addr, b"HEAD /healthz HTTP/1.1\r\nHost: relay\r\n\r\n").await;
    assert_eq!(head.status, 200);
    match connect_async(relay.url()).await {
        Err(WsError::Http(response)) => assert_eq!(response.status().as_u16(), 503),
        other => panic!("expected 503, got {:?}", other.map(|_| "a connection")),
    }
    // Probes are not refusals; the upgrade is.
    assert_eq!(relay.state.metrics.connections_rejected.get(), 1);
    holder.assert_alive().await;
    relay.stop().await;
}

#[tokio::test]
async fn a_connection_past_the_limit_serves_one_request_then_closes() {
    let relay = Relay::start_with(|c| c.max_connections = 1).await;
    let _holder = relay.client().await;
    let mut tcp = tokio::net::TcpStream::connect(relay.addr)
        .await
        .expect("connect");
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: relay\r\n\r\n")
        .await
        .expect("send");
    let response = common::read_response(&mut tcp, false).await;
    assert_eq!((response.status, response.body.as_str()), (200, "ok\n"));
    assert_eq!(response.header("connection"), Some("close"));
    // No keep-alive: a second request on it gets no answer, the socket just closes.
    let _ = tcp
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: relay\r\n\r\n")
        .await;
    assert!(common::read_to_end(&mut tcp).await.is_empty());
    relay.stop().await;
}

#[tokio::test]
async fn silent_sockets_past_the_limit_cannot_lock_health_checks_out() {
    use notify_relay::transport::capacity::OVERFLOW_ALLOWANCE;

    let relay = Relay::start_with(|c| {
        c.max_connections = 1;
        // Far past the test's deadline: only eviction can close a silent socket here.
        c.handshake_timeout = std::time::Duration::from_secs(120);
    })
    .await;
    let _holder = relay.client().await;
    let mut silent = Vec::new();
    for _ in 0..OVERFLOW_ALLOWANCE {
        silent.push(
            tokio::net::TcpStream::connect(relay.addr)
                .await
                .expect("connect"),
        );
    }
    common::eventually("every silent socket holds an overflow place", || {
        relay.state.capacity.overflow_len() == OVERFLOW_ALLOWANCE
    })
    .await;
    // The probe takes the place of the oldest silent socket.
    assert_eq!(relay.get("/healthz").await.0, 200);
    assert!(common::read_to_end(&mut silent[0]).await.is_empty());
    assert_eq!(relay.state.metrics.overflow_evicted.get(), 1);
    assert_eq!(relay.state.capacity.overflow_len(), OVERFLOW_ALLOWANCE - 1);
    relay.stop().await;
}

/// A part of the relay that is not ready, as a cluster engine without its backend.
#[derive(Debug)]
struct BackendDown;

impl notify_relay::observability::readiness::ReadinessCheck for BackendDown {
    fn not_ready(&self) -> Option<String> {
        Some("cluster: backend unreachable".to_owned())
    }
}

#[tokio::test]
async fn a_registered_readiness_check_shows_in_readyz_while_healthz_stays_ok() {
    let relay = Relay::start().await;
    relay
        .state
        .readiness
        .add_check(std::sync::Arc::new(BackendDown));
    let (status, _, body) = relay.get("/readyz").await;
    assert_eq!(
        (status, body.as_str()),
        (503, "not ready\ncluster: backend unreachable\n")
    );
    assert_eq!(relay.get("/healthz").await.0, 200);
    // Readiness steers new clients away; it does not refuse them.
    let mut client = relay.client().await;
    client.assert_alive().await;
    relay.stop().await;
}

#[tokio::test]
async fn http_1_0_requests_still_reach_healthz_and_metrics() {
    // nginx proxies with HTTP/1.0 by default (examples/nginx.conf's /metrics location),
    // and some load balancers probe without a Host header.
    let relay = Relay::start().await;
    for path in ["/healthz", "/readyz", "/metrics"] {
        let request = format!("GET {path} HTTP/1.0\r\n\r\n");
        let response = common::raw_request(relay.addr, request.as_bytes()).await;
        assert_eq!(response.status, 200, "{path}");
    }
    relay.stop().await;
}

const TEXT: &str = "text/plain; charset=utf-8";

#[tokio::test]
async fn a_connection_past_the_limit_upgrades_if_a_slot_freed_meanwhile() {
    let relay = Relay::start_with(|c| c.max_connections = 1).await;
    let holder = relay.client().await;
    let mut late = tokio::net::TcpStream::connect(relay.addr)
        .await
        .expect("connect");
    common::eventually("the late connection is past the limit", || {
        relay.state.capacity.overflow_len() == 1
    })
    .await;
    drop(holder);
    common::eventually("the slot is free", || relay.state.capacity.has_free_slot()).await;
    late.write_all(
        b"GET / HTTP/1.1\r\nHost: relay\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await
    .expect("send");
    let response = common::read_response(&mut late, false).await;
    assert_eq!(response.status, 101, "{response:?}");
    common::eventually("the late connection is a WebSocket", || {
        relay.state.metrics.connections.get() == 1
    })
    .await;
    assert!(!relay.state.capacity.has_free_slot());
    relay.stop().await;
}
