//! Delivery guarantees: several connections per key, order, and large payloads intact.

mod common;

use common::Relay;
use serde_json::json;

#[tokio::test]
async fn every_connection_under_a_key_receives_every_message_in_order() {
    let relay = Relay::start().await;
    let mut tab_a = relay.registered("user-1").await;
    let mut tab_b = relay.registered("user-1").await;
    let mut sender = relay.client().await;
    for i in 0..5 {
        assert_eq!(sender.deliver("user-1", json!(format!("m{i}"))).await, 2);
    }
    for tab in [&mut tab_a, &mut tab_b] {
        for i in 0..5 {
            assert_eq!(tab.recv_text().await, format!("m{i}"));
        }
    }
    relay.stop().await;
}

#[tokio::test]
async fn a_closing_connection_never_evicts_another_under_the_same_key() {
    let relay = Relay::start().await;
    let first = relay.registered("shared").await;
    let mut second = relay.registered("shared").await;
    drop(first);
    common::eventually("first connection gone", || {
        relay.state.metrics.connections.get() == 1
    })
    .await;
    let mut sender = relay.client().await;
    assert_eq!(sender.deliver("shared", json!("still here")).await, 1);
    assert_eq!(second.recv_text().await, "still here");
    relay.stop().await;
}

#[tokio::test]
async fn reregistration_under_a_shared_key_leaves_the_others_alone() {
    let relay = Relay::start().await;
    let mut moving = relay.registered("shared").await;
    let mut staying = relay.registered("shared").await;
    moving.register("elsewhere").await;
    let mut sender = relay.client().await;
    assert_eq!(sender.deliver("shared", json!("s")).await, 1);
    assert_eq!(staying.recv_text().await, "s");
    assert_eq!(sender.deliver("elsewhere", json!("e")).await, 1);
    assert_eq!(moving.recv_text().await, "e");
    relay.stop().await;
}

#[tokio::test]
async fn a_thousand_messages_arrive_in_order() {
    let relay = Relay::start().await;
    let mut receiver = relay.registered("ordered").await;
    let mut sender = relay.client().await;
    // No ids: the producer streams as fast as it can, as progress reporters do.
    for i in 0..1000 {
        sender
            .send_json(json!({"recipient_uuid": "ordered", "message": i.to_string()}))
            .await;
    }
    for i in 0..1000 {
        assert_eq!(receiver.recv_text().await, i.to_string());
    }
    relay.stop().await;
}

#[tokio::test]
async fn a_60_kib_unicode_payload_arrives_intact() {
    let relay = Relay::start().await;
    let mut receiver = relay.registered("big").await;
    let mut sender = relay.client().await;
    let unit = "Grüße, 世界! 🚀 \"quoted\" \\ \n";
    let payload: String = unit.repeat(60 * 1024 / unit.len() + 1);
    assert!(payload.len() >= 60 * 1024);
    assert_eq!(sender.deliver("big", json!(payload)).await, 1);
    assert_eq!(receiver.recv_text().await, payload);
    relay.stop().await;
}

#[tokio::test]
async fn many_senders_interleave_but_each_keeps_its_order() {
    let relay = Relay::start().await;
    let mut receiver = relay.registered("sink").await;
    let mut tasks = Vec::new();
    for s in 0..4 {
        let mut sender = relay.client().await;
        tasks.push(tokio::spawn(async move {
            for i in 0..200 {
                sender
                    .send_json(json!({"recipient_uuid": "sink", "message": format!("{s}:{i}")}))
                    .await;
            }
            sender
        }));
    }
    let mut next = [0u32; 4];
    for _ in 0..800 {
        let text = receiver.recv_text().await;
        let (s, i) = text.split_once(':').expect("s:i");
        let s: usize = s.parse().expect("sender");
        assert_eq!(
            i.parse::<u32>().expect("index"),
            next[s],
            "sender {s} out of order"
        );
        next[s] += 1;
    }
    for task in tasks {
        task.await.expect("sender task");
    }
    relay.stop().await;
}
