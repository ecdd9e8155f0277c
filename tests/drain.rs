//! Graceful drain of the real binary: SIGTERM/SIGINT send Close 1001 to every client
//! and the process exits 0 before the drain deadline; the log says whom the drain is
//! waiting for and why it stopped waiting.

mod common;

use std::time::{Duration, Instant};

use common::{Client, RelayProcess};
use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

async fn drain_with(signal: &str) {
    let mut relay = RelayProcess::spawn(&["--drain-timeout", "5s"]);
    let mut readers = Vec::new();
    for i in 0..5 {
        let mut client = Client::connect(&relay.url()).await;
        client.register(&format!("client-{i}")).await;
        readers.push(tokio::spawn(async move { client.expect_close().await }));
    }
    let started = Instant::now();
    relay.signal(signal);
    for reader in readers {
        assert_eq!(reader.await.expect("reader"), CloseCode::Away);
    }
    let code = relay.wait_exit(Duration::from_secs(5));
    assert_eq!(code, Some(0), "log:\n{}", relay.log_text());
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(relay.log_text().contains("draining"));
    let drained = relay.wait_for_log("drained: every connection closed in");
    assert!(drained.contains("INFO"), "{drained}");
}

#[tokio::test]
async fn sigterm_closes_every_client_with_1001_and_exits_0() {
    drain_with("TERM").await;
}

#[tokio::test]
async fn sigint_drains_the_same_way() {
    drain_with("INT").await;
}

#[tokio::test]
async fn a_client_that_ignores_the_close_is_cut_at_the_drain_deadline() {
    let mut relay = RelayProcess::spawn(&["--drain-timeout", "2s"]);
    // Registered, then never read again: it cannot answer the Close.
    let mut stubborn = Client::connect(&relay.url()).await;
    stubborn.register("stubborn").await;
    let started = Instant::now();
    relay.signal("TERM");
    let code = relay.wait_exit(Duration::from_secs(5));
    assert_eq!(code, Some(0), "log:\n{}", relay.log_text());
    assert!(started.elapsed() >= Duration::from_millis(1900));
    // While it waits, the drain says for how many; at the end, why it stopped.
    let waiting = relay.wait_for_log("draining: waiting for 1 connection(s) to close");
    assert!(waiting.contains("left"), "{waiting}");
    let cut = relay.wait_for_log("drain timeout passed with 1 connection(s) still open");
    assert!(cut.contains("WARN"), "{cut}");
    assert!(!relay
        .log_text()
        .contains("drained: every connection closed"));
    // It did get the Close 1001 first.
    match common::within("close frame", stubborn.ws.next()).await {
        Some(Ok(tokio_tungstenite::tungstenite::Message::Close(Some(frame)))) => {
            assert_eq!(frame.code, CloseCode::Away)
        }
        other => panic!("expected Close 1001, got {other:?}"),
    }
}

#[tokio::test]
async fn the_listener_closes_at_once_on_sigterm() {
    let mut relay = RelayProcess::spawn(&["--drain-timeout", "5s"]);
    let mut holder = Client::connect(&relay.url()).await;
    relay.signal("TERM");
    // The holder reads its Close and answers; by then nobody can connect any more.
    assert_eq!(holder.expect_close().await, CloseCode::Away);
    assert!(tokio::net::TcpStream::connect(relay.addr).await.is_err());
    assert_eq!(relay.wait_exit(Duration::from_secs(5)), Some(0));
}

#[tokio::test]
async fn requests_on_their_way_at_sigterm_hear_that_the_relay_is_draining() {
    use tokio::io::AsyncWriteExt;

    let relay = RelayProcess::spawn(&["--drain-timeout", "5s"]);
    // Two requests, all but their final blank line sent before the signal.
    let mut probe = tokio::net::TcpStream::connect(relay.addr)
        .await
        .expect("connect");
    probe
        .write_all(b"GET /readyz HTTP/1.1\r\nHost: relay\r\n")
        .await
        .expect("send");
    let mut upgrade = tokio::net::TcpStream::connect(relay.addr)
        .await
        .expect("connect");
    upgrade
        .write_all(
            b"GET / HTTP/1.1\r\nHost: relay\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n",
        )
        .await
        .expect("send");
    common::wait_until_server_read(&probe).await;
    common::wait_until_server_read(&upgrade).await;
    relay.signal("TERM");
    relay.wait_for_log("shutting down");

    probe.write_all(b"\r\n").await.expect("send");
    let ready = common::read_response(&mut probe, false).await;
    assert_eq!(ready.status, 503, "{ready:?}");
    assert!(ready.body.contains("draining"), "{ready:?}");
    upgrade.write_all(b"\r\n").await.expect("send");
    let refused = common::read_response(&mut upgrade, false).await;
    assert_eq!(refused.status, 503, "{refused:?}");
    assert!(refused.body.contains("shutting down"), "{refused:?}");
    let mut relay = relay;
    assert_eq!(relay.wait_exit(Duration::from_secs(5)), Some(0));
}
