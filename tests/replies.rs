//! docs/PROTOCOL.md, "Replies": a frame with an "id" gets exactly one reply.

mod common;

use common::Relay;
use notify_relay::observability::metrics::DropReason;
use notify_relay::protocol::Rejection;
use serde_json::{json, Value};

#[tokio::test]
async fn delivery_reply_counts_live_connections() {
    let relay = Relay::start_streams_off().await;
    let _a = relay.registered("k").await;
    let _b = relay.registered("k").await;
    let mut sender = relay.client().await;
    sender
        .send_json(json!({"id": 7, "recipient_uuid": "k", "message": "m"}))
        .await;
    assert_eq!(
        sender.recv_text().await,
        r#"{"id":7,"ok":true,"delivered":2}"#
    );
    sender
        .send_json(json!({"id": "abc", "recipient_uuid": "none", "message": "m"}))
        .await;
    assert_eq!(
        sender.recv_text().await,
        r#"{"id":"abc","ok":true,"delivered":0}"#
    );
    relay.stop().await;
}

#[tokio::test]
async fn registration_reply_is_ok_without_a_count() {
    let relay = Relay::start_streams_off().await;
    let mut client = relay.client().await;
    client
        .send_json(json!({"id": 1.5, "recipient_uuid": "k", "message": "connected"}))
        .await;
    assert_eq!(client.recv_text().await, r#"{"id":1.5,"ok":true}"#);
    relay.stop().await;
}

#[tokio::test]
async fn frames_without_id_get_no_reply() {
    let relay = Relay::start().await;
    let mut client = relay.client().await;
    // Each of these would be answered if it carried an id; none does.
    client
        .send_json(json!({"recipient_uuid": "k", "message": "connected"}))
        .await;
    client
        .send_json(json!({"recipient_uuid": "nobody", "message": "m"}))
        .await;
    client.send_json(json!({"recipient_uuid": ""})).await;
    client.send_text("not json").await;
    // The next frame must be the reply to this request, not a reply to the above.
    let reply = client
        .request(json!({"recipient_uuid": "k", "message": "connected"}))
        .await;
    assert_eq!(reply["ok"], true);
    relay.stop().await;
}

#[tokio::test]
async fn rejected_frames_get_an_error_reply() {
    let relay = Relay::start().await;
    let mut client = relay.client().await;
    let long_key = "k".repeat(relay.state.config.max_key_length + 1);
    let cases = [
        (json!({"message": "m"}), "missing recipient_uuid"),
        (
            json!({"recipient_uuid": 5, "message": "m"}),
            "recipient_uuid must be a string",
        ),
        (
            json!({"recipient_uuid": "", "message": "m"}),
            "recipient_uuid must not be empty",
        ),
        (
            json!({"recipient_uuid": long_key, "message": "m"}),
            "recipient_uuid is too long",
        ),
        (json!({"recipient_uuid": "k"}), "missing message"),
    ];
    for (frame, error) in cases {
        let reply = client.request(frame).await;
        assert_eq!(reply["ok"], false, "{reply}");
        assert_eq!(reply["error"], error, "{reply}");
    }
    relay.stop().await;
}

#[tokio::test]
async fn an_id_that_is_not_a_string_or_number_is_rejected_with_a_null_id() {
    let relay = Relay::start().await;
    let mut client = relay.client().await;
    client
        .send_json(json!({"id": {"x": 1}, "recipient_uuid": "k", "message": "connected"}))
        .await;
    let reply: Value = client.recv_json().await;
    assert_eq!(reply["id"], Value::Null);
    assert_eq!(reply["ok"], false);
    // It was not acted on: the connection is not registered.
    assert_eq!(relay.state.engine.stats().keys, 0);
    relay.stop().await;
}

#[tokio::test]
async fn a_frame_with_a_member_given_twice_is_answered_and_its_last_values_used() {
    // Streams off: the reply is the Part 2 one, byte for byte.
    let relay = Relay::start_streams_off().await;
    let mut first = relay.registered("first").await;
    let mut last = relay.registered("last").await;
    let mut sender = relay.client().await;
    // As the original's json.loads reads it: the last of each member wins.
    sender
        .send_text(
            r#"{"id":1,"recipient_uuid":"first","message":"early","recipient_uuid":"last","message":"late","id":2}"#,
        )
        .await;
    assert_eq!(last.recv_text().await, "late");
    assert_eq!(
        sender.recv_text().await,
        r#"{"id":2,"ok":true,"delivered":1}"#
    );
    // Nothing went to the first key: its next frame is this one.
    assert_eq!(sender.deliver("first", json!("marker")).await, 1);
    assert_eq!(first.recv_text().await, "marker");
    assert_eq!(relay.state.metrics.dropped_total(), 0);
    relay.stop().await;
}

#[tokio::test]
async fn a_lone_surrogate_gets_the_same_error_in_a_key_and_in_a_message() {
    let relay = Relay::start().await;
    let mut receiver = relay.registered("k").await;
    let mut sender = relay.client().await;
    for frame in [
        r#"{"id":1,"recipient_uuid":"k\ud800","message":"connected"}"#,
        r#"{"id":1,"recipient_uuid":"k","message":"broken \udc00 text"}"#,
    ] {
        sender.send_text(frame).await;
        assert_eq!(
            sender.recv_text().await,
            r#"{"id":1,"ok":false,"error":"invalid unicode: lone surrogate"}"#
        );
    }
    let rejected = DropReason::Rejected(Rejection::LoneSurrogate);
    assert_eq!(relay.state.metrics.dropped_count(rejected), 2);
    // Nothing was delivered and the sender is still served.
    assert_eq!(sender.deliver("k", json!("after")).await, 1);
    assert_eq!(receiver.recv_text().await, "after");
    relay.stop().await;
}
