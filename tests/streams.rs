//! Part 3 of docs/PROTOCOL.md over WebSocket: per-key streams, pending replay, resumable
//! registration with cursors and gaps, the outcome of a send, presence.

mod common;

use std::time::Duration;

use common::{eventually, metric, within, Client, Relay};
use notify_relay::message::Eviction;
use serde_json::{json, Value};

/// Registers `client` under `key` resuming from `since`; returns the reply.
async fn resume(client: &mut Client, key: &str, since: &str) -> Value {
    client
        .request(json!({"recipient_uuid": key, "message": "connected", "since": since}))
        .await
}

/// Sends `message` to `key` and returns the whole reply.
async fn send(client: &mut Client, key: &str, message: Value) -> Value {
    let reply = client
        .request(json!({"recipient_uuid": key, "message": message}))
        .await;
    assert_eq!(reply["ok"], true, "{reply}");
    reply
}

#[tokio::test]
async fn messages_sent_before_a_registration_are_handed_to_it_in_order_then_live() {
    let relay = Relay::start().await;
    let mut producer = relay.client().await;
    for text in ["one", "two", "three"] {
        let reply = send(&mut producer, "late", json!(text)).await;
        assert_eq!(reply["delivered"], 0);
        assert_eq!(reply["buffered"], true);
        assert!(reply["cursor"].is_string(), "{reply}");
    }
    // A Part 1 registration: no id, no reply, pending messages as plain frames.
    let mut page = relay.client().await;
    page.send_json(json!({"recipient_uuid": "late", "message": "connected"}))
        .await;
    for text in ["one", "two", "three"] {
        assert_eq!(page.recv_text().await, text);
    }
    let reply = send(&mut producer, "late", json!({"live": true})).await;
    assert_eq!(
        (reply["delivered"].as_u64(), reply["buffered"].as_bool()),
        (Some(1), Some(false))
    );
    assert_eq!(page.recv_text().await, r#"{"live":true}"#);

    // Each pending message is handed over once: a second tab gets none of them.
    let mut second = relay.registered("late").await;
    send(&mut producer, "late", json!("four")).await;
    assert_eq!(second.recv_text().await, "four");
    assert_eq!(page.recv_text().await, "four");
    relay.stop().await;
}

#[tokio::test]
async fn the_registration_reply_comes_before_the_pending_messages() {
    let relay = Relay::start().await;
    let mut producer = relay.client().await;
    send(&mut producer, "k", json!("waiting")).await;
    let mut page = relay.client().await;
    page.send_json(json!({"id": "r", "recipient_uuid": "k", "message": "connected"}))
        .await;
    // It says how many retained messages follow it.
    assert_eq!(
        page.recv_text().await,
        r#"{"id":"r","ok":true,"replayed":1}"#
    );
    assert_eq!(page.recv_text().await, "waiting");
    relay.stop().await;
}

#[tokio::test]
async fn streams_off_is_parts_1_and_2_exactly() {
    let relay = Relay::start_streams_off().await;
    let mut producer = relay.client().await;
    producer
        .send_json(json!({"id": 1, "recipient_uuid": "k", "message": "lost"}))
        .await;
    assert_eq!(
        producer.recv_text().await,
        r#"{"id":1,"ok":true,"delivered":0}"#
    );
    // `since` is accepted and changes nothing: plain frames, nothing replayed.
    let mut page = relay.client().await;
    page.send_json(
        json!({"id": 2, "recipient_uuid": "k", "message": "connected", "since": "earliest"}),
    )
    .await;
    assert_eq!(page.recv_text().await, r#"{"id":2,"ok":true}"#);
    producer
        .send_json(json!({"id": 3, "recipient_uuid": "k", "message": "live"}))
        .await;
    assert_eq!(page.recv_text().await, "live");
    assert_eq!(
        producer.recv_text().await,
        r#"{"id":3,"ok":true,"delivered":1}"#
    );
    assert_eq!(relay.state.engine.stats().retained_messages, 0);
    relay.stop().await;
}

#[tokio::test]
async fn a_resumed_connection_gets_what_it_missed_as_envelopes_without_loss_or_duplicate() {
    let relay = Relay::start().await;
    let mut producer = relay.client().await;
    let mut tab = relay.client().await;
    let reply = resume(&mut tab, "job", "latest").await;
    assert_eq!(reply["ok"], true);
    send(&mut producer, "job", json!("a")).await;
    send(&mut producer, "job", json!({"b": 2})).await;
    let first = tab.recv_json().await;
    assert_eq!(first["message"], "a");
    let second = tab.recv_json().await;
    assert_eq!(second["message"], json!({"b": 2}));
    let cursor = second["cursor"].as_str().expect("cursor").to_owned();
    assert_ne!(first["cursor"], second["cursor"]);
    drop(tab);

    // Away: three messages, one of them while the tab reconnects.
    let mut expected = Vec::new();
    for i in 0..3 {
        let reply = send(&mut producer, "job", json!(format!("missed {i}"))).await;
        expected.push(reply["cursor"].as_str().expect("cursor").to_owned());
    }
    let mut tab = relay.client().await;
    let reply = resume(&mut tab, "job", &cursor).await;
    assert_eq!(reply["replayed"], 3);
    for (i, cursor) in expected.iter().enumerate() {
        let envelope = tab.recv_json().await;
        assert_eq!(envelope["message"], format!("missed {i}"));
        assert_eq!(envelope["cursor"], json!(cursor));
        assert!(envelope.get("gap").is_none());
    }
    send(&mut producer, "job", json!("live")).await;
    assert_eq!(tab.recv_json().await["message"], "live");
    relay.stop().await;
}

#[tokio::test]
async fn a_tab_that_was_away_resumes_while_another_tab_stayed() {
    let relay = Relay::start().await;
    let mut producer = relay.client().await;
    let mut stayed = relay.client().await;
    resume(&mut stayed, "shared", "latest").await;
    let mut away = relay.client().await;
    resume(&mut away, "shared", "latest").await;
    send(&mut producer, "shared", json!(1)).await;
    let last_seen = away.recv_json().await["cursor"].clone();
    assert_eq!(stayed.recv_json().await["message"], 1);
    drop(away);
    for n in 2..=4 {
        // Delivered live to the tab that stayed: not pending, yet the other tab resumes it.
        let reply = send(&mut producer, "shared", json!(n)).await;
        assert_eq!(reply["buffered"], false);
        assert_eq!(stayed.recv_json().await["message"], n);
    }
    let mut back = relay.client().await;
    resume(&mut back, "shared", last_seen.as_str().expect("cursor")).await;
    for n in 2..=4 {
        assert_eq!(back.recv_json().await["message"], n);
    }
    relay.stop().await;
}

#[tokio::test]
async fn earliest_replays_everything_retained_and_count_retention_evicts_the_oldest() {
    let relay = Relay::start_with(|c| c.streams.buffer_max = 3).await;
    let mut producer = relay.client().await;
    let mut cursors = Vec::new();
    for n in 1..=5 {
        let reply = send(&mut producer, "k", json!(n)).await;
        cursors.push(reply["cursor"].as_str().expect("cursor").to_owned());
    }
    assert_eq!(relay.state.metrics.evicted_count(Eviction::Max), 2);
    let mut tab = relay.client().await;
    resume(&mut tab, "k", "earliest").await;
    for n in 3..=5 {
        assert_eq!(tab.recv_json().await["message"], n);
    }
    // From a cursor whose successor was evicted: a gap, then what is retained.
    let mut late = relay.client().await;
    resume(&mut late, "k", &cursors[0]).await;
    let gap = late.recv_json().await;
    assert_eq!(gap["gap"], true, "{gap}");
    // The gap's cursor is the position continuity holds from: resuming there loses nothing.
    assert_eq!(gap["cursor"], json!(cursors[1]));
    for n in 3..=5 {
        assert_eq!(late.recv_json().await["message"], n);
    }
    // From the last evicted message's cursor nothing was lost: no gap.
    let mut exact = relay.client().await;
    resume(&mut exact, "k", &cursors[1]).await;
    assert_eq!(exact.recv_json().await["message"], 3);
    relay.stop().await;
}

#[tokio::test]
async fn retained_messages_expire_after_the_ttl() {
    let relay = Relay::start_with(|c| c.streams.buffer_ttl = Duration::from_millis(200)).await;
    let mut producer = relay.client().await;
    let first = send(&mut producer, "k", json!("old")).await;
    eventually("the message expired", || {
        relay.state.metrics.evicted_count(Eviction::Ttl) == 1
    })
    .await;
    assert_eq!(relay.state.engine.stats().retained_messages, 0);
    // The key's stream went with its last message: nothing is left counted.
    assert_eq!(relay.state.engine.stats().retained_bytes, 0);
    let (_, _, text) = relay.get("/metrics").await;
    assert_eq!(metric(&text, "notify_relay_retained_messages"), 0.0);
    assert_eq!(
        metric(&text, "notify_relay_messages_evicted_total{reason=\"ttl\"}"),
        1.0
    );
    // Nothing pending is left for a plain registration; a resume across it is a gap.
    let mut page = relay.registered("k").await;
    page.assert_alive().await;
    let mut tab = relay.client().await;
    resume(&mut tab, "k", first["cursor"].as_str().expect("cursor")).await;
    assert_eq!(tab.recv_json().await["gap"], true);
    relay.stop().await;
}

#[tokio::test]
async fn the_memory_cap_evicts_the_oldest_across_keys() {
    // Room for about seven of these messages (each counts its text twice, for the
    // room its stream's text ring may hold) and the four keys' streams.
    let relay = Relay::start_with(|c| c.streams.buffer_memory = 10_000).await;
    let mut producer = relay.client().await;
    let body = "x".repeat(500);
    for n in 0..20 {
        send(&mut producer, &format!("key-{}", n % 4), json!(body)).await;
    }
    let stats = relay.state.engine.stats();
    assert!(stats.retained_bytes <= 10_000, "{stats:?}");
    assert!(stats.retained_messages >= 6, "{stats:?}");
    let evicted = relay.state.metrics.evicted_count(Eviction::Memory) as usize;
    assert_eq!(evicted + stats.retained_messages, 20);
    // The newest survive: key-3 got the last message.
    let mut tab = relay.client().await;
    resume(&mut tab, "key-3", "earliest").await;
    assert_eq!(tab.recv_json().await["message"], json!(body));
    relay.stop().await;
}

#[tokio::test]
async fn a_cursor_from_another_relay_run_is_a_gap() {
    let relay = Relay::start().await;
    let mut producer = relay.client().await;
    let old = send(&mut producer, "k", json!("before restart")).await;
    relay.stop().await;

    let relay = Relay::start().await;
    let mut producer = relay.client().await;
    send(&mut producer, "k", json!("after restart")).await;
    let mut tab = relay.client().await;
    resume(&mut tab, "k", old["cursor"].as_str().expect("cursor")).await;
    let gap = tab.recv_json().await;
    assert_eq!(gap["gap"], true);
    assert_ne!(gap["cursor"], old["cursor"]);
    assert_eq!(tab.recv_json().await["message"], "after restart");
    // An unreadable cursor is treated the same way.
    let mut odd = relay.client().await;
    resume(&mut odd, "k", "not a cursor").await;
    assert_eq!(odd.recv_json().await["gap"], true);
    relay.stop().await;
}

// Two worker threads: the producer's publishes and the listener's registrations really
// run at the same time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_and_live_never_interleave_while_a_producer_keeps_sending() {
    const TOTAL: u64 = 3_000;
    let relay = Relay::start_with(|c| {
        c.streams.buffer_max = 10_000;
        // All of it runs on one test thread: the producer may run far ahead of the
        // listener, which is not what this test is about.
        c.max_queued_frames = 10_000;
    })
    .await;
    let url = relay.url();
    let producer = tokio::spawn(async move {
        let mut producer = Client::connect(&url).await;
        for n in 0..TOTAL {
            producer
                .send_json(json!({"recipient_uuid": "race", "message": n}))
                .await;
            if n % 100 == 0 {
                tokio::task::yield_now().await;
            }
        }
        producer.assert_alive().await;
    });
    // The listener leaves and resumes several times while messages keep arriving.
    let mut seen: Vec<u64> = Vec::new();
    let mut cursor = "earliest".to_owned();
    let mut tab = relay.client().await;
    resume(&mut tab, "race", &cursor).await;
    let mut reconnects = 0;
    while seen.len() < TOTAL as usize {
        let envelope = tab.recv_json().await;
        assert!(envelope.get("gap").is_none(), "unexpected gap {envelope}");
        seen.push(envelope["message"].as_u64().expect("number"));
        cursor = envelope["cursor"].as_str().expect("cursor").to_owned();
        if seen.len() % 500 == 250 {
            reconnects += 1;
            tab = relay.client().await;
            resume(&mut tab, "race", &cursor).await;
        }
    }
    within("producer", producer).await.expect("producer task");
    let expected: Vec<u64> = (0..TOTAL).collect();
    assert_eq!(seen, expected, "every number once, in order");
    assert!(reconnects >= 5);
    relay.stop().await;
}

#[tokio::test]
async fn presence_counts_connections_as_they_come_and_go() {
    let relay = Relay::start().await;
    let mut asker = relay.client().await;
    let presence = |reply: &Value| (reply["online"].clone(), reply["connections"].clone());
    let reply = asker.request(json!({"presence": "p"})).await;
    assert_eq!(presence(&reply), (json!(false), json!(0)));
    let a = relay.registered("p").await;
    let mut b = relay.client().await;
    resume(&mut b, "p", "latest").await;
    let reply = asker.request(json!({"presence": "p"})).await;
    assert_eq!(reply["ok"], true);
    assert_eq!(presence(&reply), (json!(true), json!(2)));
    drop(a);
    // A connection leaves its key before it stops counting as open.
    eventually("the tab closed", || {
        relay.state.metrics.connections.get() == 2
    })
    .await;
    let reply = asker.request(json!({"presence": "p"})).await;
    assert_eq!(presence(&reply), (json!(true), json!(1)));
    // A bad key gets the same error as a bad recipient.
    let reply = asker.request(json!({"presence": ""})).await;
    assert_eq!(reply["ok"], false);
    relay.stop().await;
}

#[tokio::test]
async fn bad_since_is_an_error_reply_and_the_connection_stays() {
    let relay = Relay::start().await;
    let mut tab = relay.client().await;
    let reply = tab
        .request(json!({"recipient_uuid": "k", "message": "connected", "since": 12}))
        .await;
    assert_eq!(reply["ok"], false);
    assert_eq!(reply["error"], "since must be a string");
    tab.assert_alive().await;
    relay.stop().await;
}
