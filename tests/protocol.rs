//! docs/PROTOCOL.md, what every client of the original server relies on, checked over
//! real WebSocket connections to a real relay.

mod common;

use common::{metric, Client, Relay, GREETING};
use notify_relay::observability::metrics::DropReason;
use notify_relay::protocol::Ignored;
use serde_json::json;

#[tokio::test]
async fn greeting_is_byte_exact_on_any_path() {
    let relay = Relay::start().await;
    for path in ["", "notifications", "a/b/c?x=1"] {
        let mut client = Client::connect_raw(&format!("ws://{}/{path}", relay.addr)).await;
        assert_eq!(client.recv_text().await, GREETING);
    }
    relay.stop().await;
}

#[tokio::test]
async fn registration_is_silent_and_routes_string_payloads_verbatim() {
    let relay = Relay::start().await;
    let mut receiver = relay.client().await;
    // The original's way: no id, so no reply.
    receiver
        .send_json(json!({"recipient_uuid": "receiver-uuid", "message": "connected"}))
        .await;
    let mut sender = relay.client().await;
    common::eventually("registration", || {
        relay.state.metrics.registrations.get() == 1
    })
    .await;
    sender
        .send_json(json!({"recipient_uuid": "receiver-uuid", "message": "hello \"world\""}))
        .await;
    // Verbatim: the string itself, not its JSON quoting.
    assert_eq!(receiver.recv_text().await, "hello \"world\"");
    relay.stop().await;
}

#[tokio::test]
async fn non_string_payloads_arrive_as_compact_json() {
    let relay = Relay::start().await;
    let mut receiver = relay.registered("k").await;
    let mut sender = relay.client().await;
    sender
        .send_text(r#"{"recipient_uuid": "k", "message": { "step" : 3, "of": [ 1, 2 ] }}"#)
        .await;
    assert_eq!(receiver.recv_text().await, r#"{"step":3,"of":[1,2]}"#);
    for (message, expected) in [(json!(42), "42"), (json!(true), "true"), (json!([]), "[]")] {
        sender
            .send_json(json!({"recipient_uuid": "k", "message": message}))
            .await;
        assert_eq!(receiver.recv_text().await, expected);
    }
    relay.stop().await;
}

#[tokio::test]
async fn a_connection_can_message_itself() {
    let relay = Relay::start_streams_off().await;
    let mut client = relay.registered("me").await;
    client
        .send_json(json!({"id": 1, "recipient_uuid": "me", "message": "to myself"}))
        .await;
    // The message is queued while the frame is handled, before the frame's reply.
    assert_eq!(client.recv_text().await, "to myself");
    assert_eq!(
        client.recv_text().await,
        r#"{"id":1,"ok":true,"delivered":1}"#
    );
    relay.stop().await;
}

#[tokio::test]
async fn reregistering_moves_the_connection_to_the_new_key() {
    let relay = Relay::start().await;
    let mut client = relay.registered("old").await;
    client.register("new").await;
    let mut sender = relay.client().await;
    assert_eq!(sender.deliver("old", json!("lost")).await, 0);
    assert_eq!(sender.deliver("new", json!("found")).await, 1);
    assert_eq!(client.recv_text().await, "found");
    // Nothing stale is left under the old key.
    assert_eq!(relay.state.engine.stats().keys, 1);
    relay.stop().await;
}

#[tokio::test]
async fn unregistered_recipients_are_dropped_and_counted() {
    let relay = Relay::start_streams_off().await;
    let mut sender = relay.client().await;
    assert_eq!(sender.deliver("nobody", json!("x")).await, 0);
    sender
        .send_json(json!({"recipient_uuid": "nobody", "message": "y"}))
        .await;
    sender.assert_alive().await;
    // Three deliveries to nobody: two above and the one assert_alive makes.
    assert_eq!(
        relay.state.metrics.dropped_count(DropReason::NoRecipient),
        3
    );
    relay.stop().await;
}

#[tokio::test]
async fn temporary_keys_are_not_routable() {
    let relay = Relay::start().await;
    let mut unregistered = relay.client().await;
    let mut sender = relay.client().await;
    // Whatever a client guesses, an unregistered connection receives nothing.
    for guess in ["tmp_", "tmp", "", "*"] {
        sender
            .send_json(json!({"recipient_uuid": guess, "message": "x"}))
            .await;
    }
    assert_eq!(relay.state.engine.stats().keys, 0);
    assert_eq!(sender.deliver("marker", json!("x")).await, 0);
    unregistered.assert_alive().await;
    relay.stop().await;
}

#[tokio::test]
async fn plain_text_and_bad_json_are_ignored_and_the_connection_stays_usable() {
    let relay = Relay::start().await;
    let mut receiver = relay.registered("k").await;
    let mut client = relay.client().await;
    let junk = [
        "hello",
        "[1]",
        "\"x\"",
        "42",
        "",
        "{",
        "{\"recipient_uuid\": }",
        "{} extra",
        "{\"message\": \"no recipient\"}",
    ];
    for frame in junk {
        client.send_text(frame).await;
    }
    assert_eq!(client.deliver("k", json!("still works")).await, 1);
    assert_eq!(receiver.recv_text().await, "still works");
    let metrics = &relay.state.metrics;
    assert_eq!(
        metrics.dropped_count(DropReason::Ignored(Ignored::NotJson)),
        5
    );
    assert_eq!(
        metrics.dropped_count(DropReason::Ignored(Ignored::BadJson)),
        3
    );
    let (_, _, text) = relay.get("/metrics").await;
    assert_eq!(
        metric(
            &text,
            "notify_relay_messages_dropped_total{reason=\"missing_recipient\"}"
        ),
        1.0
    );
    relay.stop().await;
}

#[tokio::test]
async fn disconnect_releases_the_key_and_others_keep_being_served() {
    let relay = Relay::start().await;
    let leaving = relay.registered("leaving").await;
    let mut staying = relay.registered("staying").await;
    drop(leaving);
    common::eventually("key released", || relay.state.engine.stats().keys == 1).await;
    let mut sender = relay.client().await;
    assert_eq!(sender.deliver("staying", json!("hi")).await, 1);
    assert_eq!(staying.recv_text().await, "hi");
    relay.stop().await;
}
