//! Part 4: several real relay processes on one real `redis-server` are one key space.
//! Cross-relay delivery and order, a key with tabs on two relays, pending messages and
//! resumption on another relay than the one left, presence and `delivered` across
//! relays, a relay killed with -9, and Redis stopped, restarted, paused and cut off
//! mid-traffic.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{http_request, wait_readyz, within, Client, RedisServer, RelayProcess};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpStream;

/// Starts a relay on `redis` and waits until it says it is ready.
async fn relay(redis: &RedisServer, extra: &[&str]) -> RelayProcess {
    let url = redis.url();
    let mut args = vec!["--redis", url.as_str()];
    args.extend_from_slice(extra);
    let relay = RelayProcess::spawn(&args);
    wait_readyz(relay.addr, 200).await;
    relay
}

/// `POST /publish/<key>` with a text body: (status, answer).
async fn publish(addr: SocketAddr, key: &str, body: &str) -> (u16, Value) {
    let tcp = within("tcp connect", TcpStream::connect(addr))
        .await
        .expect("tcp connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .expect("http handshake");
    tokio::spawn(conn);
    let request = hyper::Request::builder()
        .method("POST")
        .uri(format!("/publish/{key}"))
        .header("host", addr.to_string())
        .body(Full::new(Bytes::from(body.to_owned())))
        .expect("request");
    let response = within("http response", sender.send_request(request))
        .await
        .expect("response");
    let status = response.status().as_u16();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (status, serde_json::from_slice(&bytes).expect("JSON answer"))
}

/// `GET /presence/<key>`: the connections count.
async fn presence(addr: SocketAddr, key: &str) -> u64 {
    let (status, _, body) = http_request(addr, "GET", &format!("/presence/{key}")).await;
    assert_eq!(status, 200, "{body}");
    let value: Value = serde_json::from_str(&body).expect("JSON");
    value["connections"].as_u64().expect("connections")
}

/// Waits (up to `deadline`) until presence of `key` seen from `addr` is `want`.
async fn presence_becomes(addr: SocketAddr, key: &str, want: u64, deadline: Duration) {
    let start = std::time::Instant::now();
    loop {
        let got = presence(addr, key).await;
        if got == want {
            return;
        }
        assert!(
            start.elapsed() < deadline,
            "presence of {key} stayed {got}, not {want}, for {deadline:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Registers a resumable connection and returns the reply.
async fn resume(client: &mut Client, key: &str, since: &str) -> Value {
    let reply = client
        .request(json!({"recipient_uuid": key, "message": "connected", "since": since}))
        .await;
    assert_eq!(reply["ok"], true, "{reply}");
    reply
}

#[tokio::test(flavor = "multi_thread")]
async fn a_message_sent_on_any_relay_reaches_every_relay_in_order() {
    let redis = RedisServer::start();
    let (a, b, c) = (
        relay(&redis, &[]).await,
        relay(&redis, &[]).await,
        relay(&redis, &[]).await,
    );
    // A key with tabs on two relays.
    let mut tab_a = Client::connect(&a.url()).await;
    tab_a.register("two-tabs").await;
    let mut tab_b = Client::connect(&b.url()).await;
    tab_b.register("two-tabs").await;
    let mut sender = Client::connect(&c.url()).await;
    for i in 0..50 {
        let reply = sender
            .request(json!({"recipient_uuid": "two-tabs", "message": format!("m{i}")}))
            .await;
        assert_eq!(reply["delivered"], 2, "{reply}");
        assert_eq!(reply["buffered"], false, "{reply}");
        assert!(reply["cursor"].is_string(), "{reply}");
    }
    for tab in [&mut tab_a, &mut tab_b] {
        for i in 0..50 {
            assert_eq!(tab.recv_text().await, format!("m{i}"));
        }
    }
    // A relay's own sender reaches its own and the other relays' connections alike.
    assert_eq!(tab_a.deliver("two-tabs", json!("from a")).await, 2);
    assert_eq!(tab_a.recv_text().await, "from a");
    assert_eq!(tab_b.recv_text().await, "from a");
    assert_eq!(presence(c.addr, "two-tabs").await, 2);
    // Over HTTP on the third relay, too.
    let (status, answer) = publish(c.addr, "two-tabs", "over http").await;
    assert_eq!((status, &answer["delivered"]), (200, &json!(2)), "{answer}");
    assert_eq!(tab_b.recv_text().await, "over http");
}

#[tokio::test(flavor = "multi_thread")]
async fn pending_and_resumption_work_on_another_relay_than_the_one_left() {
    let redis = RedisServer::start();
    let (a, b, c) = (
        relay(&redis, &[]).await,
        relay(&redis, &[]).await,
        relay(&redis, &[]).await,
    );
    let mut sender = Client::connect(&a.url()).await;
    for text in ["50%", "done"] {
        let reply = sender
            .request(json!({"recipient_uuid": "job-7", "message": text}))
            .await;
        assert_eq!(
            (&reply["delivered"], &reply["buffered"]),
            (&json!(0), &json!(true))
        );
    }
    // The page opens on another relay: it gets the pending messages, once.
    let mut page = Client::connect(&b.url()).await;
    page.register("job-7").await;
    assert_eq!(page.recv_text().await, "50%");
    assert_eq!(page.recv_text().await, "done");
    let mut second = Client::connect(&c.url()).await;
    let reply = second
        .request(json!({"recipient_uuid": "job-7", "message": "connected"}))
        .await;
    assert_eq!(
        reply["replayed"], 0,
        "each pending message is handed over once"
    );

    // A resumable listener on relay a leaves, misses two messages, resumes on c.
    let mut listener = Client::connect(&a.url()).await;
    let reply = resume(&mut listener, "feed", "latest").await;
    assert_eq!(reply["replayed"], 0);
    assert_eq!(sender.deliver("feed", json!("seen")).await, 1);
    let seen = listener.recv_json().await;
    assert_eq!(seen["message"], "seen");
    drop(listener);
    presence_becomes(b.addr, "feed", 0, common::DEADLINE).await;
    for text in ["missed 1", "missed 2"] {
        sender.deliver("feed", json!(text)).await;
    }
    let mut back = Client::connect(&c.url()).await;
    let cursor = seen["cursor"].as_str().expect("cursor");
    let reply = resume(&mut back, "feed", cursor).await;
    assert_eq!(reply["replayed"], 2, "{reply}");
    for text in ["missed 1", "missed 2"] {
        let envelope = back.recv_json().await;
        assert_eq!(envelope["message"], text, "{envelope}");
    }
    assert_eq!(sender.deliver("feed", json!("live")).await, 1);
    assert_eq!(back.recv_json().await["message"], "live");
}
