//! The client library against a real relay (in-process, on 127.0.0.1:0).

use notify_relay::config::TlsConfig;
use notify_relay::{Config, Server};
use notify_relay_client::{Client, ClientOptions, Connector, Error, Event, Payload};
use serde_json::json;

async fn relay() -> String {
    let server = Server::bind(Config::loopback_ephemeral()).expect("bind");
    let url = format!("ws://{}/", server.local_addr().expect("addr"));
    tokio::spawn(server.run(std::future::pending()));
    url
}

/// A relay serving TLS with a self-signed certificate for 127.0.0.1, written to `dir`:
/// its `wss://` URL and the certificate's file (what a client trusts).
async fn tls_relay(dir: &std::path::Path) -> (String, std::path::PathBuf) {
    let key = rcgen::KeyPair::generate().expect("key");
    let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).expect("params");
    let cert = params.self_signed(&key).expect("certificate");
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.pem()).expect("write certificate");
    std::fs::write(&key_path, key.serialize_pem()).expect("write key");
    let mut config = Config::loopback_ephemeral();
    config.tls = TlsConfig {
        tls_cert: Some(cert_path.clone()),
        tls_key: Some(key_path),
    };
    let server = Server::bind(config).expect("bind");
    let url = format!("wss://{}/", server.local_addr().expect("addr"));
    tokio::spawn(server.run(std::future::pending()));
    (url, cert_path)
}

#[tokio::test]
async fn wss_with_a_trusted_ca_cert_sends_and_receives() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (url, cert) = tls_relay(dir.path()).await;
    let options = ClientOptions::default().ca_cert(&cert);
    let mut tab = Client::connect_with(&url, &options).await.expect("connect");
    tab.register("secure").await.expect("register");
    // One prepared connector, several connections.
    let connector = Connector::new(&url, &options).expect("connector");
    for _ in 0..2 {
        let mut producer = connector.connect().await.expect("connect");
        let sent = producer.send("secure", Payload::Text("over TLS".into()));
        assert_eq!(sent.await.expect("send").delivered, 1);
        producer.close().await.expect("close");
        assert_eq!(tab.next_message().await.expect("message"), "over TLS");
    }
}

#[tokio::test]
async fn wss_errors_say_whether_the_certificate_or_the_ca_file_is_at_fault() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (url, _) = tls_relay(dir.path()).await;
    // Another self-signed certificate is no CA of the relay's.
    let other = tempfile::tempdir().expect("temp dir");
    let (_, other_cert) = tls_relay(other.path()).await;
    let options = ClientOptions::default().ca_cert(&other_cert);
    match Client::connect_with(&url, &options).await {
        Err(Error::Certificate(why)) => assert!(why.contains("not trusted"), "{why}"),
        other => panic!("expected a certificate error, got {:?}", other.err()),
    }
    let missing = ClientOptions::default().ca_cert(dir.path().join("missing.pem"));
    match Connector::new(&url, &missing) {
        Err(Error::Tls(why)) => assert!(why.contains("cannot be read"), "{why}"),
        other => panic!("expected a TLS setup error, got {:?}", other.err()),
    }
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
