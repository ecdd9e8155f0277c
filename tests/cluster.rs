//! Part 4: several real relay processes on one real `redis-server` are one key space.
//! Cross-relay delivery and order, a key with tabs on two relays, pending messages and
//! resumption on another relay than the one left, registrations racing a stream, SSE,
//! collapse and ephemeral messages, streams off, presence and `delivered` across relays,
//! a relay killed with -9 or drained, an idle relay's cost in Redis, and Redis down at
//! start, stopped, restarted, paused and its subscriptions cut mid-traffic.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{
    http_request, http_request_with_body, wait_readyz, within, Client, RedisServer, RelayProcess,
};
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
    let path = format!("/publish/{key}");
    let (status, _, text) = http_request_with_body(addr, &path, body).await;
    (status, serde_json::from_str(&text).expect("JSON answer"))
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
    // A connection sending to its own key gets the message before the reply, as on one
    // relay, and the other relay's tab gets it too.
    tab_a
        .send_json(json!({"id": 1, "recipient_uuid": "two-tabs", "message": "from a"}))
        .await;
    assert_eq!(tab_a.recv_text().await, "from a");
    assert_eq!(tab_a.recv_json().await["delivered"], 2);
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

/// A relay killed with -9 never says goodbye: its connections stop counting once a live
/// relay finds its heartbeat gone (14 s, plus a sweep of at most 1 s).
#[tokio::test(flavor = "multi_thread")]
async fn a_killed_relay_stops_counting_within_the_lease() {
    let redis = RedisServer::start();
    let mut doomed = relay(&redis, &[]).await;
    let survivor = relay(&redis, &[]).await;
    let mut tab = Client::connect(&doomed.url()).await;
    tab.register("lease").await;
    let mut other = Client::connect(&survivor.url()).await;
    other.register("lease").await;
    assert_eq!(presence(survivor.addr, "lease").await, 2);
    doomed.signal("KILL");
    doomed.wait_exit(common::DEADLINE);
    let killed = std::time::Instant::now();
    presence_becomes(survivor.addr, "lease", 1, Duration::from_secs(20)).await;
    assert!(
        killed.elapsed() <= Duration::from_secs(16),
        "{:?}",
        killed.elapsed()
    );
    let mut sender = Client::connect(&survivor.url()).await;
    assert_eq!(sender.deliver("lease", json!("still here")).await, 1);
    assert_eq!(other.recv_text().await, "still here");
}

/// A relay stopped (SIGSTOP) past its heartbeat is taken for dead and its counts are
/// dropped; resumed, it notices its heartbeat ran out, joins the roster again and writes
/// its counts anew, so its connection counts again and still gets its messages.
#[tokio::test(flavor = "multi_thread")]
async fn a_relay_stopped_past_its_heartbeat_counts_again_once_resumed() {
    let redis = RedisServer::start();
    let paused = relay(&redis, &[]).await;
    let other = relay(&redis, &[]).await;
    let mut tab = Client::connect(&paused.url()).await;
    tab.register("paused").await;
    assert_eq!(presence(other.addr, "paused").await, 1);
    paused.signal("STOP");
    presence_becomes(other.addr, "paused", 0, Duration::from_secs(20)).await;
    paused.signal("CONT");
    presence_becomes(other.addr, "paused", 1, Duration::from_secs(20)).await;
    wait_readyz(paused.addr, 200).await;
    let mut sender = Client::connect(&other.url()).await;
    assert_eq!(sender.deliver("paused", json!("welcome back")).await, 1);
    assert_eq!(tab.recv_text().await, "welcome back");
}

/// Redis killed and started again (empty) while traffic flows: the relays keep serving
/// their own connections, say they are not ready and that sends cannot complete, then
/// subscribe again by themselves; resumable connections get a gap (Redis lost the
/// history), and every message acknowledged before and after reaches its connections.
#[tokio::test(flavor = "multi_thread")]
async fn redis_restarted_mid_traffic() {
    let mut redis = RedisServer::start();
    let (a, b) = (relay(&redis, &[]).await, relay(&redis, &[]).await);
    let mut plain = Client::connect(&a.url()).await;
    plain.register("k").await;
    let mut resumable = Client::connect(&a.url()).await;
    resume(&mut resumable, "k", "latest").await;
    let mut sender = Client::connect(&b.url()).await;
    for i in 0..20 {
        assert_eq!(sender.deliver("k", json!(format!("before {i}"))).await, 2);
    }
    for i in 0..20 {
        assert_eq!(plain.recv_text().await, format!("before {i}"));
        assert_eq!(
            resumable.recv_json().await["message"],
            format!("before {i}")
        );
    }

    redis.stop();
    wait_readyz(a.addr, 503).await;
    wait_readyz(b.addr, 503).await;
    let (status, _, _) = http_request(a.addr, "GET", "/healthz").await;
    assert_eq!(status, 200, "liveness is not readiness");
    let reply = sender
        .request(json!({"recipient_uuid": "k", "message": "lost"}))
        .await;
    assert_eq!(reply["ok"], false, "{reply}");
    assert_eq!(reply["error"], "cluster unavailable", "{reply}");
    let (status, answer) = publish(b.addr, "k", "lost too").await;
    assert_eq!(
        (status, &answer["error"]),
        (503, &json!("cluster unavailable"))
    );
    // The relay keeps serving its own connections.
    let mut local = Client::connect(&a.url()).await;
    let reply = local
        .request(json!({"recipient_uuid": "k", "message": "local only"}))
        .await;
    assert_eq!(reply["error"], "cluster unavailable", "{reply}");
    assert_eq!(plain.recv_text().await, "local only");
    assert_eq!(resumable.recv_json().await["ephemeral"], true);
    let (_, _, metrics) = http_request(b.addr, "GET", "/metrics").await;
    assert_eq!(common::metric(&metrics, "notify_relay_cluster_ready"), 0.0);
    assert!(
        common::metric(
            &metrics,
            "notify_relay_messages_dropped_total{reason=\"cluster_unavailable\"}"
        ) >= 2.0
    );

    redis.restart();
    wait_readyz(a.addr, 200).await;
    wait_readyz(b.addr, 200).await;
    // Redis lost the stream: the resumable connection is told, not left with a hole.
    let gap = resumable.recv_json().await;
    assert_eq!(gap["gap"], true, "{gap}");
    // Presence is back (written again on reconnection), and so is delivery.
    assert_eq!(presence(b.addr, "k").await, 2);
    for i in 0..20 {
        assert_eq!(sender.deliver("k", json!(format!("after {i}"))).await, 2);
    }
    for i in 0..20 {
        assert_eq!(plain.recv_text().await, format!("after {i}"));
        assert_eq!(resumable.recv_json().await["message"], format!("after {i}"));
    }
    let (_, _, metrics) = http_request(a.addr, "GET", "/metrics").await;
    assert_eq!(common::metric(&metrics, "notify_relay_cluster_ready"), 1.0);
    assert!(common::metric(&metrics, "notify_relay_cluster_reconnects_total") >= 1.0);
}

/// Redis paused (SIGSTOP) past the timeouts: its connections stay open and it answers
/// nothing. The relays notice through their probes (not ready within 10 s), sends fail
/// within a bounded time, and after SIGCONT they are ready again with nothing lost: the
/// resumable connection gets no gap, since the history is intact.
#[tokio::test(flavor = "multi_thread")]
async fn redis_paused_past_the_timeouts() {
    let redis = RedisServer::start();
    let (a, b) = (relay(&redis, &[]).await, relay(&redis, &[]).await);
    let mut resumable = Client::connect(&a.url()).await;
    resume(&mut resumable, "p", "latest").await;
    let mut sender = Client::connect(&b.url()).await;
    assert_eq!(sender.deliver("p", json!("before")).await, 1);
    assert_eq!(resumable.recv_json().await["message"], "before");

    redis.signal("STOP");
    let paused = std::time::Instant::now();
    wait_readyz(a.addr, 503).await;
    assert!(
        paused.elapsed() < Duration::from_secs(10),
        "{:?}",
        paused.elapsed()
    );
    let reply = within(
        "a send while Redis is paused",
        sender.request(json!({"recipient_uuid": "p", "message": "x"})),
    )
    .await;
    assert_eq!(reply["error"], "cluster unavailable", "{reply}");

    redis.signal("CONT");
    wait_readyz(a.addr, 200).await;
    wait_readyz(b.addr, 200).await;
    assert_eq!(sender.deliver("p", json!("after")).await, 1);
    let next = resumable.recv_json().await;
    assert_eq!(next["message"], "after", "continuity holds: no gap: {next}");
}

/// The subscription connection is cut while Redis stays up (`CLIENT KILL TYPE pubsub`):
/// the relay subscribes again by itself and hands its connections what was published
/// meanwhile from the stream, with no gap.
#[tokio::test(flavor = "multi_thread")]
async fn a_cut_subscription_is_made_anew_and_caught_up() {
    let redis = RedisServer::start();
    let (a, b) = (relay(&redis, &[]).await, relay(&redis, &[]).await);
    let mut plain = Client::connect(&a.url()).await;
    plain.register("cut").await;
    let mut resumable = Client::connect(&a.url()).await;
    resume(&mut resumable, "cut", "latest").await;
    let mut sender = Client::connect(&b.url()).await;
    assert_eq!(sender.deliver("cut", json!("one")).await, 2);
    assert_eq!(plain.recv_text().await, "one");
    assert_eq!(resumable.recv_json().await["message"], "one");
    // Both relays lose their subscriptions; b's comes back before or after its send.
    redis.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    let reply = sender
        .request(json!({"recipient_uuid": "cut", "message": "two"}))
        .await;
    if reply["ok"] == false {
        // Sent while b was re-subscribing: refused, never half-done. Send it again.
        wait_readyz(b.addr, 200).await;
        assert_eq!(sender.deliver("cut", json!("two")).await, 2);
    }
    assert_eq!(plain.recv_text().await, "two");
    assert_eq!(resumable.recv_json().await["message"], "two");
    assert_eq!(sender.deliver("cut", json!("three")).await, 2);
    assert_eq!(plain.recv_text().await, "three");
    assert_eq!(resumable.recv_json().await["message"], "three");
}

/// Registrations on one relay while another relay publishes without pause: each one gets
/// every message exactly once, in order (replay, then live, with no seam), so the
/// subscribe/replay/live race is closed across relays too.
#[tokio::test(flavor = "multi_thread")]
async fn registrations_racing_a_stream_of_messages_miss_nothing_and_repeat_nothing() {
    const MESSAGES: u64 = 300;
    let redis = RedisServer::start();
    let a = relay(&redis, &["--buffer-max", "1000"]).await;
    let b = relay(&redis, &["--buffer-max", "1000"]).await;
    let b_url = b.url();
    let sending = tokio::spawn(async move {
        let mut sender = Client::connect(&b_url).await;
        for i in 1..=MESSAGES {
            sender
                .send_json(json!({"recipient_uuid": "race", "message": i}))
                .await;
            if i % 20 == 0 {
                sender.assert_alive().await;
            }
        }
        sender.assert_alive().await;
    });
    let mut joiners = Vec::new();
    for _ in 0..6 {
        let mut joiner = Client::connect(&a.url()).await;
        resume(&mut joiner, "race", "earliest").await;
        joiners.push(joiner);
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    within("the sender", sending).await.expect("sender");
    for joiner in &mut joiners {
        for want in 1..=MESSAGES {
            let envelope = joiner.recv_json().await;
            assert_eq!(envelope["message"], want, "{envelope}");
            let cursor = envelope["cursor"].as_str().expect("cursor");
            assert!(cursor.ends_with(&format!(":{want}")), "{cursor}");
        }
    }
}

/// Server-Sent Events, collapsible and ephemeral messages behave across relays as on one.
#[tokio::test(flavor = "multi_thread")]
async fn events_collapse_and_ephemeral_work_across_relays() {
    let redis = RedisServer::start();
    let (a, b) = (relay(&redis, &[]).await, relay(&redis, &[]).await);
    let mut sender = Client::connect(&a.url()).await;
    for i in 0..5 {
        let reply = sender
            .request(json!({"recipient_uuid": "job", "message": format!("{i}0%"), "collapse": "progress"}))
            .await;
        assert_eq!(reply["buffered"], true, "{reply}");
    }
    let reply = sender
        .request(json!({"recipient_uuid": "job", "message": "typing", "ephemeral": true}))
        .await;
    assert_eq!(
        (&reply["buffered"], &reply["cursor"]),
        (&json!(false), &Value::Null)
    );
    // The collapsed ticks: only the newest is handed over, on the other relay.
    let mut events = EventStream::open(b.addr, "/events/job?since=earliest").await;
    let replayed = events.read_until("data: 40%").await;
    assert!(!replayed.contains("data: 30%"), "{replayed}");
    assert!(!replayed.contains("typing"), "{replayed}");
    assert!(replayed.contains("id: "), "{replayed}");
    // Live, across relays: an ephemeral message is an event without an id.
    sender
        .send_json(json!({"recipient_uuid": "job", "message": "typing now", "ephemeral": true}))
        .await;
    let typing = events.read_until("data: typing now").await;
    assert!(!typing.contains("id: "), "{typing}");
    assert_eq!(sender.deliver("job", json!("done")).await, 1);
    let done = events.read_until("data: done").await;
    assert!(done.contains("id: "), "{done}");
}

/// A Server-Sent Events subscription read off a raw socket.
struct EventStream {
    tcp: TcpStream,
    seen: String,
}

impl EventStream {
    async fn open(addr: SocketAddr, path: &str) -> Self {
        use tokio::io::AsyncWriteExt;
        let mut tcp = within("tcp connect", TcpStream::connect(addr))
            .await
            .expect("tcp connect");
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n");
        tcp.write_all(request.as_bytes()).await.expect("request");
        EventStream {
            tcp,
            seen: String::new(),
        }
    }

    /// Reads until `needle` arrived; returns what arrived up to and including it.
    async fn read_until(&mut self, needle: &str) -> String {
        use tokio::io::AsyncReadExt;
        let mut chunk = [0u8; 4096];
        while !self.seen.contains(needle) {
            let n = within(needle, self.tcp.read(&mut chunk))
                .await
                .expect("read");
            assert!(n > 0, "stream ended before {needle:?}: {}", self.seen);
            self.seen.push_str(&String::from_utf8_lossy(&chunk[..n]));
        }
        let end = self.seen.find(needle).expect("found") + needle.len();
        self.seen.drain(..end).collect()
    }
}

/// With streams off (`--buffer-ttl 0s`) a group of relays behaves as one relay of Parts
/// 1-2: plain frames, replies without `buffered` or `cursor`, nothing kept.
#[tokio::test(flavor = "multi_thread")]
async fn streams_off_across_relays_is_parts_1_and_2() {
    let redis = RedisServer::start();
    let a = relay(&redis, &["--buffer-ttl", "0s"]).await;
    let b = relay(&redis, &["--buffer-ttl", "0s"]).await;
    let mut sender = Client::connect(&a.url()).await;
    let reply = sender
        .request(json!({"recipient_uuid": "off", "message": "nobody"}))
        .await;
    assert_eq!(
        reply,
        json!({"id": reply["id"], "ok": true, "delivered": 0})
    );
    let mut receiver = Client::connect(&b.url()).await;
    let reply = receiver
        .request(json!({"recipient_uuid": "off", "message": "connected", "since": "earliest"}))
        .await;
    assert_eq!(reply, json!({"id": reply["id"], "ok": true}));
    let reply = sender
        .request(json!({"recipient_uuid": "off", "message": {"n": 1}}))
        .await;
    assert_eq!(
        reply,
        json!({"id": reply["id"], "ok": true, "delivered": 1})
    );
    assert_eq!(receiver.recv_text().await, r#"{"n":1}"#);
}

/// A relay stopped gracefully (SIGTERM, the drain) withdraws its presence as it exits,
/// rather than when the others find it dead.
#[tokio::test(flavor = "multi_thread")]
async fn a_drained_relay_stops_counting_at_once() {
    let redis = RedisServer::start();
    let mut leaving = relay(&redis, &[]).await;
    let staying = relay(&redis, &[]).await;
    let mut tab = Client::connect(&leaving.url()).await;
    tab.register("bye").await;
    assert_eq!(presence(staying.addr, "bye").await, 1);
    leaving.signal("TERM");
    let closed = tokio::spawn(async move { tab.expect_close().await });
    within("the close", closed).await.expect("client");
    assert_eq!(leaving.wait_exit(common::DEADLINE), Some(0));
    assert_eq!(presence(staying.addr, "bye").await, 0);
}

/// A relay started while its Redis is down runs (liveness), is not ready, refuses what it
/// cannot do, and becomes ready by itself once Redis is there.
#[tokio::test(flavor = "multi_thread")]
async fn a_relay_started_before_its_redis_becomes_ready_when_redis_comes() {
    let mut redis = RedisServer::start();
    redis.stop();
    let url = redis.url();
    let relay = RelayProcess::spawn(&["--redis", &url]);
    let (status, _, _) = http_request(relay.addr, "GET", "/healthz").await;
    assert_eq!(status, 200);
    let (status, _, body) = http_request(relay.addr, "GET", "/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("redis"), "{body}");
    let mut client = Client::connect(&relay.url()).await;
    let reply = client
        .request(json!({"recipient_uuid": "early", "message": "connected"}))
        .await;
    assert_eq!(reply["error"], "cluster unavailable", "{reply}");
    redis.restart();
    wait_readyz(relay.addr, 200).await;
    client.register("early").await;
    let mut sender = Client::connect(&relay.url()).await;
    assert_eq!(sender.deliver("early", json!("now")).await, 1);
    assert_eq!(client.recv_text().await, "now");
}

/// Commands per second Redis runs over `window`, once what registrations set off has
/// settled (fewer than 20 commands in a second, or the deadline).
async fn idle_command_rate(redis: &RedisServer, window: Duration) -> f64 {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let before = redis.all_calls();
        tokio::time::sleep(Duration::from_secs(1)).await;
        if redis.all_calls() - before < 20 || std::time::Instant::now() > deadline {
            break;
        }
    }
    let before = redis.all_calls();
    tokio::time::sleep(window).await;
    (redis.all_calls() - before) as f64 / window.as_secs_f64()
}

/// An idle relay's work in Redis is its heartbeat, its probes and its roster sweeps, the
/// same with 1,000 registered keys as with 10: a count is written when it changes, never
/// refreshed (a lease per key refreshed every 5 s was 200 scripts a second here).
#[tokio::test(flavor = "multi_thread")]
async fn an_idle_relays_redis_command_rate_does_not_grow_with_its_keys() {
    let redis = RedisServer::start();
    let relay = relay(&redis, &[]).await;
    // Longer than a heartbeat (5 s): each window holds at least one.
    let window = Duration::from_secs(6);
    let mut tabs = Vec::new();
    for n in 0..1000 {
        let mut tab = Client::connect(&relay.url()).await;
        tab.register(&format!("idle-{n}")).await;
        tabs.push(tab);
        if n == 9 {
            let few = idle_command_rate(&redis, window).await;
            eprintln!("10 keys: {few:.1} commands/s");
            assert!(few < 20.0, "10 idle keys: {few:.1} commands/s");
        }
    }
    assert_eq!(presence(relay.addr, "idle-999").await, 1);
    let many = idle_command_rate(&redis, window).await;
    eprintln!("1,000 keys: {many:.1} commands/s");
    assert!(many < 20.0, "1,000 idle keys: {many:.1} commands/s");
}
