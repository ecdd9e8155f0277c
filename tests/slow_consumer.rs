//! A recipient that stops reading is closed when its queue fills, and nobody else waits.

mod common;

use common::Relay;
use futures_util::StreamExt;
use notify_relay::observability::metrics::{CloseReason, DropReason};
use serde_json::json;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

/// Enough 64 KiB messages to fill loopback socket buffers (a few MiB) and the queue.
const MAX_MESSAGES: usize = 2000;

#[tokio::test]
async fn a_recipient_that_stops_reading_is_closed_and_others_are_unaffected() {
    let relay = Relay::start_with(|c| c.max_queued_frames = 32).await;
    let mut stalled = relay.registered("stalled").await;
    let mut bystander = relay.registered("bystander").await;
    let mut producer = relay.client().await;
    let payload = "p".repeat(64 * 1024);
    let metrics = &relay.state.metrics;

    let mut sent = 0;
    while metrics.closed_count(CloseReason::SlowConsumer) == 0 {
        assert!(
            sent < MAX_MESSAGES,
            "no slow-consumer close after {sent} messages"
        );
        producer
            .send_json(json!({"recipient_uuid": "stalled", "message": payload}))
            .await;
        sent += 1;
        if sent % 50 == 0 {
            // Meanwhile, everyone else is served promptly.
            assert_eq!(producer.deliver("bystander", json!(sent)).await, 1);
            assert_eq!(bystander.recv_text().await, sent.to_string());
        }
        // Let the relay run between sends so the queue is observed as it fills.
        tokio::task::yield_now().await;
    }
    common::eventually("stalled key released", || {
        relay.state.engine.stats().keys == 1
    })
    .await;
    assert!(metrics.dropped_count(DropReason::SlowConsumer) >= 1);
    // Later messages to it are not counted as delivered.
    assert_eq!(producer.deliver("stalled", json!("late")).await, 0);
    // Reading again, the client gets what was already in flight, then Close 1008.
    let mut frames = 0;
    let code = loop {
        match common::within("stalled stream", stalled.ws.next()).await {
            Some(Ok(Message::Close(Some(frame)))) => break frame.code,
            Some(Ok(_)) => frames += 1,
            other => panic!("expected Close 1008 after {frames} frames, got {other:?}"),
        }
        assert!(frames <= MAX_MESSAGES + 2);
    };
    assert_eq!(code, CloseCode::Policy);
    relay.stop().await;
}
