//! The client library against a real relay (in-process, on 127.0.0.1:0).

use notify_relay::{Config, Server};
use notify_relay_client::{Client, Error, Event, Payload};
use serde_json::json;

async fn relay() -> String {
    let server = Server::bind(Config::loopback_ephemeral()).expect("bind");
    let url = format!("ws://{}/", server.local_addr().expect("addr"));
    tokio::spawn(server.run(std::future::pending()));
    url
}

#[tokio::test]
async fn send_reports_how_many_connections_received_it() {
    let url = relay().await;
    let mut a = Client::connect(&url).await.expect("connect");
    let mut b = Client::connect(&url).await.expect("connect");
    a.register("k").await.expect("register");
    b.register("k").await.expect("register");
    let mut producer = Client::connect(&url).await.expect("connect");
    let sent = producer.send("k", Payload::Text("hi".into())).await;
    assert_eq!(sent.expect("send").delivered, 2);
    assert_eq!(a.next_message().await.expect("message"), "hi");
    assert_eq!(b.next_message().await.expect("message"), "hi");
    let sent = producer
        .send("nobody", Payload::Text("x".into()))
        .await
        .expect("send");
    assert_eq!((sent.delivered, sent.buffered), (0, true));
    assert!(sent.cursor.is_some());
}

#[tokio::test]
async fn json_payloads_and_messages_that_arrive_while_waiting_for_a_reply() {
    let url = relay().await;
    let mut me = Client::connect(&url).await.expect("connect");
    me.register("me").await.expect("register");
    // Self-addressed: the message comes in before the reply and must not be lost.
    let sent = me
        .send("me", Payload::from_value(&json!({"step": 1})))
        .await;
    assert_eq!(sent.expect("send").delivered, 1);
    assert_eq!(me.next_message().await.expect("message"), r#"{"step":1}"#);
    // JSON text keeps its key order and number spelling.
    let raw = Payload::json(r#"{"z": 1, "a": 1.50}"#).expect("valid JSON");
    assert_eq!(me.send("me", raw).await.expect("send").delivered, 1);
    assert_eq!(
        me.next_message().await.expect("message"),
        r#"{"z":1,"a":1.50}"#
    );
    assert!(Payload::json("{nope").is_err());
}

#[tokio::test]
async fn rejections_and_unreachable_relays_are_errors() {
    let url = relay().await;
    let mut client = Client::connect(&url).await.expect("connect");
    match client.send("", Payload::Text("x".into())).await {
        Err(Error::Rejected(why)) => assert!(why.contains("empty"), "{why}"),
        other => panic!("expected a rejection, got {other:?}"),
    }
    // A port nothing listens on: bind one, then free it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    match Client::connect(&format!("ws://127.0.0.1:{port}/")).await {
        Err(Error::Connect(_)) => {}
        other => panic!(
            "expected a connect error, got {:?}",
            other.map(|_| "a client")
        ),
    }
}

#[tokio::test]
async fn resume_hands_over_what_was_missed_then_live_and_reports_gaps() {
    let url = relay().await;
    let mut producer = Client::connect(&url).await.expect("connect");
    let mut tab = Client::connect(&url).await.expect("connect");
    tab.resume("job", "latest").await.expect("resume");
    producer
        .send("job", Payload::Text("one".into()))
        .await
        .expect("send");
    let Event::Message { text, cursor } = tab.next_event().await.expect("event") else {
        panic!("expected a message")
    };
    assert_eq!(text, "one");
    let cursor = cursor.expect("cursor");
    tab.close().await.expect("close");
    producer
        .send("job", Payload::from_value(&json!({"step": 2})))
        .await
        .expect("send");
    let mut tab = Client::connect(&url).await.expect("connect");
    tab.resume("job", &cursor).await.expect("resume");
    match tab.next_event().await.expect("event") {
        Event::Message { text, .. } => assert_eq!(text, r#"{"step":2}"#),
        other => panic!("expected the missed message, got {other:?}"),
    }
    let mut lost = Client::connect(&url).await.expect("connect");
    lost.resume("job", "another-run.1:9").await.expect("resume");
    assert!(matches!(
        lost.next_event().await.expect("event"),
        Event::Gap { .. }
    ));
}
