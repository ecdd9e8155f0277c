//! Ephemeral and collapsible messages (docs/PROTOCOL.md, Part 3) on every door of one
//! relay: WebSocket frames, HTTP publish, SSE, the CLI and the Python progress producer.

mod common;

use std::process::Command;

use common::{metric, Client, Relay, RelayProcess};
use serde_json::{json, Value};

/// A delivery frame to `key` with `extra` members; returns the reply.
async fn send(client: &mut Client, key: &str, message: Value, extra: Value) -> Value {
    let mut frame = json!({"recipient_uuid": key, "message": message});
    if let (Some(frame), Some(extra)) = (frame.as_object_mut(), extra.as_object()) {
        frame.extend(extra.clone());
    }
    let reply = client.request(frame).await;
    assert_eq!(reply["ok"], true, "{reply}");
    reply
}

/// 200 ticks collapsed under "progress", interleaved with three plain messages.
async fn ticks_and_plain(producer: &mut Client, key: &str) -> Vec<String> {
    let mut cursors = Vec::new();
    for tick in 1..=200 {
        let reply = send(
            producer,
            key,
            json!({"p": tick}),
            json!({"collapse": "progress"}),
        )
        .await;
        cursors.push(reply["cursor"].as_str().expect("cursor").to_owned());
        if tick % 60 == 0 {
            send(
                producer,
                key,
                json!(format!("plain {}", tick / 60)),
                json!({}),
            )
            .await;
        }
    }
    cursors
}

#[tokio::test]
async fn a_late_registration_gets_the_plain_messages_and_only_the_last_tick_in_order() {
    let relay = Relay::start().await;
    let mut producer = relay.client().await;
    ticks_and_plain(&mut producer, "job").await;
    assert_eq!(relay.state.metrics.messages_collapsed.get(), 199);
    assert_eq!(relay.state.engine.stats().retained_messages, 4);
    let mut page = relay.client().await;
    page.send_json(json!({"recipient_uuid": "job", "message": "connected"}))
        .await;
    for expected in ["plain 1", "plain 2", "plain 3", r#"{"p":200}"#] {
        assert_eq!(page.recv_text().await, expected);
    }
    page.assert_alive().await;
    relay.stop().await;
}

#[tokio::test]
async fn resuming_across_collapsed_ticks_is_not_a_gap() {
    let relay = Relay::start().await;
    let mut producer = relay.client().await;
    let first = send(&mut producer, "job", json!("start"), json!({})).await;
    ticks_and_plain(&mut producer, "job").await;
    let mut tab = relay.client().await;
    let reply = tab
        .request(json!({"recipient_uuid": "job", "message": "connected",
                        "since": first["cursor"]}))
        .await;
    assert_eq!(reply["replayed"], 4);
    let mut texts = Vec::new();
    for _ in 0..4 {
        let envelope = tab.recv_json().await;
        assert!(envelope.get("gap").is_none(), "{envelope}");
        texts.push(envelope["message"].clone());
    }
    assert_eq!(
        texts,
        [
            json!("plain 1"),
            json!("plain 2"),
            json!("plain 3"),
            json!({"p": 200})
        ]
    );
    relay.stop().await;
}

#[tokio::test]
async fn names_collapse_independently_and_retention_counts_the_collapsed_stream() {
    let relay = Relay::start_with(|c| c.streams.buffer_max = 5).await;
    let mut producer = relay.client().await;
    for tick in 0..100 {
        send(
            &mut producer,
            "k",
            json!(tick),
            json!({"collapse": "progress"}),
        )
        .await;
        if tick % 25 == 0 {
            send(
                &mut producer,
                "k",
                json!(format!("plain {tick}")),
                json!({}),
            )
            .await;
        }
    }
    // 100 ticks and 4 plain messages fit in 5: nothing was evicted.
    assert_eq!(
        relay
            .state
            .metrics
            .evicted_count(notify_relay::message::Eviction::Max),
        0
    );
    send(
        &mut producer,
        "other",
        json!("eta 1"),
        json!({"collapse": "eta"}),
    )
    .await;
    send(
        &mut producer,
        "other",
        json!("pct 1"),
        json!({"collapse": "pct"}),
    )
    .await;
    send(
        &mut producer,
        "other",
        json!("eta 2"),
        json!({"collapse": "eta"}),
    )
    .await;
    let mut tab = relay.client().await;
    tab.request(json!({"recipient_uuid": "k", "message": "connected", "since": "earliest"}))
        .await;
    let mut got = Vec::new();
    for _ in 0..5 {
        got.push(tab.recv_json().await["message"].clone());
    }
    assert_eq!(
        got,
        [
            json!("plain 0"),
            json!("plain 25"),
            json!("plain 50"),
            json!("plain 75"),
            json!(99)
        ]
    );
    let mut other = relay.client().await;
    other
        .request(json!({"recipient_uuid": "other", "message": "connected", "since": "earliest"}))
        .await;
    assert_eq!(other.recv_json().await["message"], "pct 1");
    assert_eq!(other.recv_json().await["message"], "eta 2");
    relay.stop().await;
}

#[tokio::test]
async fn ephemeral_messages_reach_live_connections_only_in_each_framing() {
    let relay = Relay::start().await;
    let mut producer = relay.client().await;
    // Nobody there: not kept, nothing replayed later.
    let reply = send(
        &mut producer,
        "k",
        json!("typing"),
        json!({"ephemeral": true}),
    )
    .await;
    assert_eq!(
        (reply["delivered"].clone(), reply["buffered"].clone()),
        (json!(0), json!(false))
    );
    assert!(reply.get("cursor").is_none(), "{reply}");
    assert_eq!(relay.state.metrics.ephemeral_dropped.get(), 1);
    assert_eq!(relay.state.engine.stats().retained_messages, 0);

    let mut plain = relay.registered("k").await;
    let mut resumable = relay.client().await;
    let kept = send(&mut producer, "k", json!("kept"), json!({})).await;
    resumable
        .request(json!({"recipient_uuid": "k", "message": "connected", "since": "latest"}))
        .await;
    assert_eq!(plain.recv_text().await, "kept");
    let reply = send(
        &mut producer,
        "k",
        json!({"typing": true}),
        json!({"ephemeral": true}),
    )
    .await;
    assert_eq!(reply["delivered"], 2);
    assert_eq!(plain.recv_text().await, r#"{"typing":true}"#);
    assert_eq!(
        resumable.recv_text().await,
        r#"{"ephemeral":true,"message":{"typing":true}}"#
    );
    assert_eq!(relay.state.metrics.ephemeral_delivered.get(), 2);
    // The stored position did not move: resuming from the last cursor replays nothing.
    let mut again = relay.client().await;
    let reply = again
        .request(json!({"recipient_uuid": "k", "message": "connected", "since": kept["cursor"]}))
        .await;
    assert_eq!(reply["replayed"], 0);
    relay.stop().await;
}

#[tokio::test]
async fn ephemeral_and_collapse_over_http_and_sse() {
    let relay = Relay::start().await;
    let mut producer = relay.client().await;
    let first = send(&mut producer, "h", json!("first"), json!({})).await;
    for tick in 0..10 {
        let (status, _, _) = common::http_request_with_body(
            relay.addr,
            "/publish/h?collapse=progress",
            &format!("{tick}%"),
        )
        .await;
        assert_eq!(status, 200);
    }
    let (status, _, body) =
        common::http_request_with_body(relay.addr, "/publish/h?ephemeral=1", "typing").await;
    assert_eq!(status, 200);
    let reply: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(reply["buffered"], false);
    assert!(reply.get("cursor").is_none());
    let (status, _, body) = common::http_request_with_body(
        relay.addr,
        &format!("/publish/h?collapse={}", "n".repeat(65)),
        "x",
    )
    .await;
    assert_eq!(status, 400, "{body}");

    // SSE resume with Last-Event-ID across the collapsed ticks: the last tick, no gap.
    let cursor = first["cursor"].as_str().expect("cursor");
    let (status, _, body) =
        common::http_first_chunks(relay.addr, "/events/h", &[("last-event-id", cursor)], 1).await;
    assert_eq!(status, 200);
    assert!(body.contains("data: 9%"), "{body}");
    assert!(!body.contains("event: gap"), "{body}");
    assert!(!body.contains("data: 8%"), "{body}");
    relay.stop().await;
}

#[test]
fn the_cli_and_the_python_progress_producer_collapse_their_ticks() {
    let relay = RelayProcess::spawn(&[]);
    let client = common::workspace_binary("notify-relay-client");
    for tick in ["10%", "20%", "30%"] {
        let out = Command::new(&client)
            .args([
                "--url",
                &relay.url(),
                "send",
                "--collapse",
                "progress",
                "cli",
                tick,
            ])
            .output()
            .expect("client runs");
        assert_eq!(out.status.code(), Some(6), "{out:?}");
    }
    let out = Command::new(&client)
        .args([
            "--url",
            &relay.url(),
            "send",
            "--ephemeral",
            "cli",
            "typing",
        ])
        .output()
        .expect("client runs");
    assert_eq!(
        out.status.code(),
        Some(3),
        "ephemeral to nobody is not kept: {out:?}"
    );
    let out = Command::new("python3")
        .args([
            &format!("{}/examples/python/progress.py", env!("CARGO_MANIFEST_DIR")),
            "py",
            "--url",
            &relay.url(),
            "--ticks",
            "50",
            "--interval",
            "0",
        ])
        .output()
        .expect("python3 runs");
    assert!(out.status.success(), "{out:?}");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (_, _, text) = rt.block_on(common::http_request(relay.addr, "GET", "/metrics"));
    // 2 of the CLI's ticks and 49 of the producer's were superseded.
    assert_eq!(metric(&text, "notify_relay_messages_collapsed_total"), 51.0);
    // Kept: the CLI's last tick, the producer's last tick and its result.
    assert_eq!(metric(&text, "notify_relay_retained_messages"), 3.0);
    assert_eq!(metric(&text, "notify_relay_ephemeral_dropped_total"), 1.0);
}
