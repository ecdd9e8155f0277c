//! What a connection keeps, measured on the real binary's resident memory: an idle one
//! holds no read buffer; after sending and receiving one 900 KiB message it is back to
//! its idle cost; an unfinished message costs about its own size, not twice; and cycles
//! of opening and closing thousands of connections leave nothing behind.

mod common;

use std::time::Duration;

use common::{within, Client, RelayProcess, DEADLINE};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::Message;

/// The message size of the measurement.
const LARGE: usize = 900 * 1024;
/// Connections per test: enough that what each keeps dwarfs the allocator's noise.
const CONNECTIONS: usize = 40;
/// Round trips in flight at once.
const AT_ONCE: usize = 8;
/// What one connection may keep after its message, beyond its idle cost. Before the fix
/// each kept about 1.8 MiB (the largest frame read and the largest frame written); an
/// idle connection costs about 3 KiB.
const KEPT_PER_CONNECTION: u64 = 32 * 1024;

async fn registered_clients(relay: &RelayProcess, prefix: &str) -> Vec<Client> {
    let mut clients = Vec::with_capacity(CONNECTIONS);
    for i in 0..CONNECTIONS {
        let mut client = Client::connect(&relay.url()).await;
        client.register(&format!("{prefix}-{i}")).await;
        clients.push(client);
    }
    clients
}

/// Waits until the relay's RSS is at most `limit`; returns the last value read.
async fn rss_settles_below(relay: &RelayProcess, limit: u64) -> u64 {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let rss = relay.rss_bytes();
        if rss <= limit || tokio::time::Instant::now() >= deadline {
            return rss;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn after_a_large_message_each_way_a_connection_is_back_to_its_idle_cost() {
    // Streams off: what is measured is what connections keep, not retained messages.
    let relay = RelayProcess::spawn(&["--buffer-ttl", "0s"]);
    let mut clients = registered_clients(&relay, "large").await;
    let idle = relay.rss_bytes();

    for (batch, chunk) in clients.chunks_mut(AT_ONCE).enumerate() {
        let round_trips = chunk.iter_mut().enumerate().map(|(i, client)| async move {
            let key = format!("large-{}", batch * AT_ONCE + i);
            let message = "m".repeat(LARGE);
            client
                .send_json(json!({"recipient_uuid": key, "message": message}))
                .await;
            assert_eq!(client.recv_text().await.len(), LARGE);
        });
        futures_util::future::join_all(round_trips).await;
    }
    for client in &mut clients {
        client.assert_alive().await;
    }

    let limit = idle + CONNECTIONS as u64 * KEPT_PER_CONNECTION;
    let after = rss_settles_below(&relay, limit).await;
    assert!(
        after <= limit,
        "after one {LARGE}-byte message each way, {CONNECTIONS} connections keep {} bytes \
         each beyond their idle cost (RSS {idle} -> {after}); at most {KEPT_PER_CONNECTION} \
         is allowed",
        after.saturating_sub(idle) / CONNECTIONS as u64
    );
}

/// A read buffer so large that one kept by every idle connection would dwarf the rest
/// of its cost.
const LARGE_READ_BUFFER: usize = 64 * 1024;
/// What an idle registered connection may cost with that buffer size: its usual few KiB
/// (more in a debug build), far below the buffer it would keep if it kept one.
const IDLE_PER_CONNECTION: u64 = 24 * 1024;

#[tokio::test]
async fn an_idle_connection_holds_no_read_buffer() {
    let size = LARGE_READ_BUFFER.to_string();
    let relay = RelayProcess::spawn(&["--buffer-ttl", "0s", "--read-buffer-size", &size]);
    // One connection first, so the allocator's first-use costs are not counted.
    let mut warm_up = Client::connect(&relay.url()).await;
    warm_up.register("warm-up").await;
    let before = relay.rss_bytes();
    let mut clients = registered_clients(&relay, "idle").await;

    let limit = before + CONNECTIONS as u64 * IDLE_PER_CONNECTION;
    let after = rss_settles_below(&relay, limit).await;
    assert!(
        after <= limit,
        "{CONNECTIONS} idle connections cost {} bytes each with --read-buffer-size \
         {LARGE_READ_BUFFER} (RSS {before} -> {after}); at most {IDLE_PER_CONNECTION} is \
         allowed: an idle connection must not keep its read buffer",
        after.saturating_sub(before) / CONNECTIONS as u64
    );
    // The buffer comes back when a connection reads again.
    for client in &mut clients {
        client.assert_alive().await;
    }
}

#[tokio::test]
async fn an_unfinished_message_costs_about_its_size() {
    let relay = RelayProcess::spawn(&[]);
    let mut clients = registered_clients(&relay, "partial").await;
    let idle = relay.rss_bytes();

    for client in &mut clients {
        let first = Frame::message("p".repeat(LARGE), OpCode::Data(Data::Text), false);
        within("first fragment", client.ws.send(Message::Frame(first)))
            .await
            .expect("send");
        // Frames are handled in order: the Pong means the fragment has been read.
        within("ping", client.ws.send(Message::Ping(Default::default())))
            .await
            .expect("send");
        match within("pong", client.ws.next()).await {
            Some(Ok(Message::Pong(_))) => {}
            other => panic!("expected a pong, got {other:?}"),
        }
    }

    let per_connection = (relay.rss_bytes().saturating_sub(idle)) / CONNECTIONS as u64;
    // Before the fix the frame's read buffer stayed beside the message being assembled:
    // about twice the size.
    let most = LARGE as u64 * 14 / 10;
    assert!(
        per_connection <= most,
        "an unfinished {LARGE}-byte message costs {per_connection} bytes (at most {most})"
    );
    assert!(
        per_connection >= LARGE as u64 / 2,
        "the unfinished messages are held, so they must show: {per_connection} bytes each"
    );
}

/// Connections opened, registered and closed per churn cycle: enough that what a cycle
/// would leave behind (about 800 bytes each: the finished task's cell and its `Peer`)
/// dwarfs the allocator's noise, few enough to open in about a second.
const CHURN_CONNECTIONS: usize = 5_000;
/// Churn cycles; the first is the reference.
const CHURN_CYCLES: usize = 8;
/// Handshakes in flight at once.
const CHURN_AT_ONCE: usize = 64;
/// How far a later cycle's peak may rise above the first's: a fraction of it...
const CHURN_GROWTH_PERCENT: u64 = 10;
/// ... plus this (the allocator's own bookkeeping, a table doubling).
const CHURN_SLACK: u64 = 1024 * 1024;

/// A client from the loopback address `source`, with a small read buffer (tungstenite's
/// default of 128 KiB would make the test process, not the relay, the one that strains).
async fn churn_client(relay: &RelayProcess, source: &str) -> Client {
    use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
    use tokio_tungstenite::MaybeTlsStream;
    let tcp = common::connect_from(source, relay.addr).await;
    let config = WebSocketConfig::default().read_buffer_size(4096);
    let (ws, _) = within(
        "handshake",
        tokio_tungstenite::client_async_with_config(
            relay.url(),
            MaybeTlsStream::Plain(tcp),
            Some(config),
        ),
    )
    .await
    .expect("handshake");
    Client::from_ws(ws).await
}

/// The relay's open WebSocket connections, from its /metrics.
async fn open_connections(relay: &RelayProcess) -> f64 {
    let (_, _, text) = common::http_request(relay.addr, "GET", "/metrics").await;
    common::metric(&text, "notify_relay_connections")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_connections_leave_nothing_behind_across_churn_cycles() {
    // No keep-alive bucket comes due while the test runs (the first at 300 s): only a
    // connection taking itself out of the wheel when it ends can free what it held.
    // Streams off: only connections are measured, not retained messages.
    let relay = RelayProcess::spawn_quiet(&["--buffer-ttl", "0s", "--ping-interval", "300s"]);
    let mut peaks = Vec::new();
    let mut after_close = Vec::new();
    for cycle in 0..CHURN_CYCLES {
        // A source address of its own per cycle: the closed connections' TIME_WAIT
        // ports of the last cycles are not in the way.
        let source = format!("127.0.{}.{}", 1 + cycle / 200, 2 + cycle % 200);
        let relay = &relay;
        let clients: Vec<Client> = futures_util::stream::iter(0..CHURN_CONNECTIONS)
            .map(|i| {
                let source = source.clone();
                async move {
                    let mut client = churn_client(relay, &source).await;
                    client.register(&format!("churn-{cycle}-{i}")).await;
                    client
                }
            })
            .buffer_unordered(CHURN_AT_ONCE)
            .collect()
            .await;
        // Every connection is open and registered: this cycle's peak.
        peaks.push(relay.rss_bytes());
        drop(clients);
        let deadline = tokio::time::Instant::now() + DEADLINE;
        while open_connections(relay).await > 0.0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "cycle {cycle}: the relay still counts {} open connections",
                open_connections(relay).await
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        after_close.push(relay.rss_bytes());
    }
    let kib = |v: &[u64]| v.iter().map(|b| b / 1024).collect::<Vec<_>>();
    eprintln!(
        "churn of {CHURN_CONNECTIONS} connections: peak RSS KiB by cycle {:?}, after close {:?}",
        kib(&peaks),
        kib(&after_close)
    );
    let bound = peaks[0] + peaks[0] * CHURN_GROWTH_PERCENT / 100 + CHURN_SLACK;
    for (cycle, (&peak, &after)) in peaks.iter().zip(&after_close).enumerate().skip(1) {
        assert!(
            peak <= bound && after <= bound,
            "cycle {cycle} of {CHURN_CONNECTIONS} connections: peak RSS {} KiB, {} KiB after \
             close, past the first cycle's peak {} KiB + {CHURN_GROWTH_PERCENT}% + {} KiB: \
             closed connections are kept (by KiB: peaks {:?}, after close {:?})",
            peak / 1024,
            after / 1024,
            peaks[0] / 1024,
            CHURN_SLACK / 1024,
            kib(&peaks),
            kib(&after_close)
        );
    }
}
