//! Bad input: each class has a defined, logged outcome and a metric, and never affects
//! other connections.

mod common;

use common::{metric, Client, Relay};
use notify_relay::observability::metrics::{CloseReason, DropReason};
use notify_relay::protocol::Rejection;
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::MaybeTlsStream;

/// Encodes one client frame by hand, masked unless `masked` is false.
fn raw_frame(opcode: OpCode, payload: &[u8], masked: bool) -> Vec<u8> {
    let mut frame = Frame::message(payload.to_vec(), opcode, true);
    if masked {
        frame.header_mut().mask = Some([0x12, 0x34, 0x56, 0x78]);
    }
    let mut bytes = Vec::new();
    frame.format(&mut bytes).expect("format frame");
    bytes
}

/// Writes raw bytes on a client's socket, under the WebSocket layer.
async fn write_raw(client: &mut Client, bytes: &[u8]) {
    match client.ws.get_mut() {
        MaybeTlsStream::Plain(tcp) => tcp.write_all(bytes).await.expect("raw write"),
        _ => unreachable!("tests use plain TCP"),
    }
}

/// A bystander registered under its own key that must keep receiving throughout.
async fn assert_bystander_served(relay: &Relay, bystander: &mut Client) {
    let mut sender = relay.client().await;
    assert_eq!(sender.deliver("bystander", json!("fine")).await, 1);
    assert_eq!(bystander.recv_text().await, "fine");
}

#[tokio::test]
async fn oversize_message_closes_with_1009() {
    let relay = Relay::start_with(|c| c.max_message_size = 1024).await;
    let mut bystander = relay.registered("bystander").await;
    let mut client = relay.client().await;
    client.send_text("x".repeat(2048)).await;
    assert_eq!(client.expect_close().await, CloseCode::Size);
    drop(client);
    common::eventually("oversize counted", || {
        relay.state.metrics.closed_count(CloseReason::Oversize) == 1
    })
    .await;
    // Exactly at the limit is fine.
    let mut ok = relay.client().await;
    let at_limit = json!({"recipient_uuid": "bystander", "message": ""}).to_string();
    let padding = 1024 - at_limit.len();
    ok.send_json(json!({"recipient_uuid": "bystander", "message": "y".repeat(padding)}))
        .await;
    assert_eq!(bystander.recv_text().await.len(), padding);
    assert_bystander_served(&relay, &mut bystander).await;
    relay.stop().await;
}

#[tokio::test]
async fn default_limit_is_one_mebibyte() {
    let relay = Relay::start().await;
    let mut client = relay.client().await;
    client.send_text("x".repeat((1 << 20) + 1)).await;
    assert_eq!(client.expect_close().await, CloseCode::Size);
    relay.stop().await;
}

#[tokio::test]
async fn invalid_utf8_in_a_text_frame_closes_with_1007() {
    let relay = Relay::start().await;
    let mut bystander = relay.registered("bystander").await;
    let mut client = relay.client().await;
    write_raw(
        &mut client,
        &raw_frame(OpCode::Data(Data::Text), b"\xff\xfe{", true),
    )
    .await;
    assert_eq!(client.expect_close().await, CloseCode::Invalid);
    common::eventually("invalid utf-8 counted", || {
        relay.state.metrics.closed_count(CloseReason::InvalidUtf8) == 1
    })
    .await;
    assert_bystander_served(&relay, &mut bystander).await;
    relay.stop().await;
}

#[tokio::test]
async fn unmasked_client_frame_closes_with_1002() {
    let relay = Relay::start().await;
    let mut bystander = relay.registered("bystander").await;
    let mut client = relay.client().await;
    write_raw(
        &mut client,
        &raw_frame(OpCode::Data(Data::Text), b"{}", false),
    )
    .await;
    assert_eq!(client.expect_close().await, CloseCode::Protocol);
    drop(client);
    common::eventually("protocol error counted", || {
        relay.state.metrics.closed_count(CloseReason::ProtocolError) == 1
    })
    .await;
    assert_bystander_served(&relay, &mut bystander).await;
    relay.stop().await;
}

#[tokio::test]
async fn binary_frames_are_ignored_and_counted() {
    let relay = Relay::start().await;
    let mut client = relay.client().await;
    let json_bytes = json!({"recipient_uuid": "k", "message": "connected"}).to_string();
    client.send_binary(b"\x00\x01".to_vec()).await;
    client.send_binary(json_bytes.into_bytes()).await;
    client.assert_alive().await;
    assert_eq!(relay.state.metrics.dropped_count(DropReason::Binary), 2);
    // A registration sent as binary is not a registration.
    assert_eq!(relay.state.engine.stats().keys, 0);
    relay.stop().await;
}

#[tokio::test]
async fn bad_keys_are_rejected_and_the_connection_stays_open() {
    let relay = Relay::start().await;
    let max = relay.state.config.max_key_length;
    let mut client = relay.client().await;
    client
        .send_json(json!({"recipient_uuid": "k".repeat(max + 1), "message": "connected"}))
        .await;
    client
        .send_json(json!({"recipient_uuid": "k".repeat(100_000), "message": "x"}))
        .await;
    client
        .send_json(json!({"recipient_uuid": "", "message": "connected"}))
        .await;
    client.send_json(json!({"recipient_uuid": "k"})).await;
    client.register(&"k".repeat(max)).await;
    let metrics = &relay.state.metrics;
    assert_eq!(
        metrics.dropped_count(DropReason::Rejected(Rejection::KeyTooLong)),
        2
    );
    assert_eq!(
        metrics.dropped_count(DropReason::Rejected(Rejection::EmptyKey)),
        1
    );
    assert_eq!(
        metrics.dropped_count(DropReason::Rejected(Rejection::MissingMessage)),
        1
    );
    assert_eq!(relay.state.engine.stats().keys, 1);
    relay.stop().await;
}

#[tokio::test]
async fn a_registration_flood_leaves_one_key() {
    let relay = Relay::start().await;
    let mut client = relay.client().await;
    for i in 0..10_000 {
        client
            .send_json(json!({"recipient_uuid": format!("key-{i}"), "message": "connected"}))
            .await;
    }
    client.register("final").await;
    assert_eq!(relay.state.engine.stats().keys, 1);
    assert_eq!(relay.state.metrics.registrations.get(), 10_001);
    let mut sender = relay.client().await;
    assert_eq!(sender.deliver("key-9999", json!("x")).await, 0);
    assert_eq!(sender.deliver("final", json!("y")).await, 1);
    assert_eq!(client.recv_text().await, "y");
    relay.stop().await;
}

#[tokio::test]
async fn a_client_vanishing_mid_frame_is_cleaned_up() {
    let relay = Relay::start().await;
    let mut bystander = relay.registered("bystander").await;
    let mut client = relay.registered("vanishing").await;
    let frame = raw_frame(OpCode::Data(Data::Text), &[b'x'; 100], true);
    write_raw(&mut client, &frame[..30]).await;
    drop(client);
    common::eventually("reset counted and key released", || {
        relay.state.metrics.closed_count(CloseReason::Reset) == 1
            && relay.state.engine.stats().keys == 1
    })
    .await;
    let (_, _, text) = relay.get("/metrics").await;
    assert_eq!(
        metric(
            &text,
            "notify_relay_connections_closed_total{reason=\"reset\"}"
        ),
        1.0
    );
    assert_bystander_served(&relay, &mut bystander).await;
    relay.stop().await;
}
