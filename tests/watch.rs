//! Watching presence (Part 3 of docs/PROTOCOL.md): `watch` answers like a presence query
//! and then pushes every change of the key's connection count, over WebSocket and as
//! Server-Sent Events; `unwatch`, closing, `--max-watches`, tokens (WebSocket and SSE), a
//! storm; and across real relay processes on a real redis-server: a change on one relay
//! seen on another, a relay killed with -9, a Redis outage, a storm across relays.

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use common::{eventually, metric, within, Client, Relay};
use futures_util::StreamExt;
use http_body_util::BodyExt;
use notify_relay::policy::auth::sign;
use serde_json::{json, Value};

/// A presence push of `key`.
fn push(key: &str, connections: u64) -> Value {
    json!({"presence": key, "online": connections > 0, "connections": connections})
}

/// Closes `client` as a real client does and waits for the end of the stream.
async fn close(mut client: Client) {
    let _ = client.ws.close(None).await;
    within("close", async {
        while let Some(Ok(_)) = client.ws.next().await {}
    })
    .await;
}

/// Watches `key` and checks the reply says `connections`.
async fn watch(client: &mut Client, key: &str, connections: u64) {
    let reply = client.request(json!({"watch": key})).await;
    assert_eq!(reply["ok"], true, "{reply}");
    assert_eq!(reply["connections"], connections, "{reply}");
    assert_eq!(reply["online"], connections > 0, "{reply}");
}

fn gauge(relay: &Relay, series: &str) -> f64 {
    metric(&relay.state.metrics.encode(), series)
}

#[tokio::test]
async fn a_watcher_is_pushed_every_change_in_order() {
    let relay = Relay::start().await;
    let mut watcher = relay.client().await;
    watch(&mut watcher, "w-order", 0).await;
    let a = relay.registered("w-order").await;
    assert_eq!(watcher.recv_json().await, push("w-order", 1));
    let b = relay.registered("w-order").await;
    assert_eq!(watcher.recv_json().await, push("w-order", 2));
    close(a).await;
    assert_eq!(watcher.recv_json().await, push("w-order", 1));
    close(b).await;
    assert_eq!(watcher.recv_json().await, push("w-order", 0));
    // A second watch of a key with connections answers with its state now.
    let _c = relay.registered("w-order").await;
    assert_eq!(watcher.recv_json().await, push("w-order", 1));
    let mut late = relay.client().await;
    watch(&mut late, "w-order", 1).await;
    relay.stop().await;
}

#[tokio::test]
async fn every_online_offline_flip_is_seen_even_when_changes_come_fast() {
    let relay = Relay::start().await;
    let mut watcher = relay.client().await;
    watch(&mut watcher, "w-flip", 0).await;
    // Two connect/disconnect cycles, not waiting for the pushes in between.
    for _ in 0..2 {
        let client = relay.registered("w-flip").await;
        close(client).await;
    }
    for expected in [1, 0, 1, 0] {
        assert_eq!(watcher.recv_json().await, push("w-flip", expected));
    }
    // Nothing else was pushed: the next frame is the next change.
    let _stay = relay.registered("w-flip").await;
    assert_eq!(watcher.recv_json().await, push("w-flip", 1));
    relay.stop().await;
}

#[tokio::test]
async fn unwatch_stops_the_pushes() {
    let relay = Relay::start().await;
    let mut watcher = relay.client().await;
    watch(&mut watcher, "w-un", 0).await;
    let reply = watcher.request(json!({"unwatch": "w-un"})).await;
    assert_eq!(reply, json!({"id": reply["id"], "ok": true}));
    let _a = relay.registered("w-un").await;
    let mut asker = relay.client().await;
    let answer = asker.request(json!({"presence": "w-un"})).await;
    assert_eq!(answer["connections"], 1);
    // No push came in between: the next frame is the reply to this query.
    let answer = watcher.request(json!({"presence": "w-un"})).await;
    assert_eq!(answer["connections"], 1, "{answer}");
    // Unwatching a key not watched is fine too.
    let reply = watcher.request(json!({"unwatch": "never-watched"})).await;
    assert_eq!(reply["ok"], true);
    relay.stop().await;
}

#[tokio::test]
async fn closing_the_watcher_releases_its_watches() {
    let relay = Relay::start().await;
    let mut watcher = relay.client().await;
    for i in 0..10 {
        watch(&mut watcher, &format!("w-rel-{i}"), 0).await;
    }
    // Watching the same key again answers again and is still one watch.
    watch(&mut watcher, "w-rel-0", 0).await;
    assert_eq!(gauge(&relay, "notify_relay_presence_watches"), 10.0);
    close(watcher).await;
    eventually("the watches to be released", || {
        gauge(&relay, "notify_relay_presence_watches") == 0.0
    })
    .await;
    // Connections under a key watched no more cost nothing.
    let _a = relay.registered("w-rel-1").await;
    assert_eq!(
        gauge(&relay, "notify_relay_presence_events_total"),
        0.0,
        "nothing pushed to a closed watcher"
    );
    relay.stop().await;
}

#[tokio::test]
async fn a_watch_is_not_a_registration() {
    let relay = Relay::start().await;
    let mut watcher = relay.client().await;
    watch(&mut watcher, "w-not", 0).await;
    let mut asker = relay.client().await;
    let answer = asker.request(json!({"presence": "w-not"})).await;
    assert_eq!(answer["connections"], 0, "{answer}");
    let (status, _, body) = relay.get("/presence/w-not").await;
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&body).expect("json")["connections"],
        0
    );
    // A message to the key reaches nobody: the watcher is not a recipient.
    assert_eq!(asker.deliver("w-not", json!("hi")).await, 0);
    // The same connection may register elsewhere and keep its watch.
    watcher.register("w-own").await;
    let _a = relay.registered("w-not").await;
    assert_eq!(watcher.recv_json().await, push("w-not", 1));
    relay.stop().await;
}

#[tokio::test]
async fn max_watches_is_enforced_per_connection() {
    let relay = Relay::start_with(|config| config.max_watches = 2).await;
    let mut watcher = relay.client().await;
    watch(&mut watcher, "w-max-a", 0).await;
    watch(&mut watcher, "w-max-b", 0).await;
    let refused = watcher.request(json!({"watch": "w-max-c"})).await;
    assert_eq!(refused["ok"], false);
    assert_eq!(refused["error"], "too many watches");
    // A key already watched is not a new watch.
    watch(&mut watcher, "w-max-a", 0).await;
    watcher
        .request(json!({"unwatch": "w-max-a"}))
        .await
        .get("ok")
        .expect("ok");
    watch(&mut watcher, "w-max-c", 0).await;
    // Another connection has its own allowance.
    let mut other = relay.client().await;
    watch(&mut other, "w-max-a", 0).await;
    relay.stop().await;
}

fn token(secret: &str, key: &str) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();
    sign(secret.as_bytes(), key, now + 3600)
}

#[tokio::test]
async fn with_auth_a_watch_needs_a_token_for_its_key() {
    const SECRET: &str = "watch secret, long enough";
    let relay = Relay::start_with(|config| config.auth.auth_secret = Some(SECRET.into())).await;
    let mut watcher = relay.client().await;
    for frame in [
        json!({"watch": "w-auth"}),
        json!({"watch": "w-auth", "token": token(SECRET, "other")}),
        json!({"watch": "w-auth", "token": token("wrong secret", "w-auth")}),
        json!({"watch": "w-auth", "token": 7}),
    ] {
        let reply = watcher.request(frame).await;
        assert_eq!(reply["ok"], false, "{reply}");
        assert_eq!(reply["error"], "unauthorized", "{reply}");
    }
    // Still open, and a good token is accepted.
    let reply = watcher
        .request(json!({"watch": "w-auth", "token": token(SECRET, "w-auth")}))
        .await;
    assert_eq!(reply["ok"], true, "{reply}");
    let mut member = relay.client().await;
    let registered = member
        .request(json!({"recipient_uuid": "w-auth", "message": "connected", "token": token(SECRET, "w-auth")}))
        .await;
    assert_eq!(registered["ok"], true);
    assert_eq!(watcher.recv_json().await, push("w-auth", 1));
    // Over SSE: a Bearer token or ?token= for the key, 401 otherwise.
    let sse = [("accept", "text/event-stream")];
    let refused = common::http_send(relay.addr, "GET", "/presence/w-auth", &sse, "").await;
    assert_eq!(refused.status(), 401);
    let good = token(SECRET, "w-auth");
    let bearer = format!("Bearer {good}");
    let with_bearer = [
        ("accept", "text/event-stream"),
        ("authorization", bearer.as_str()),
    ];
    let path = "/presence/w-auth";
    let mut body = common::http_send(relay.addr, "GET", path, &with_bearer, "")
        .await
        .into_body();
    assert_eq!(
        SseReader::default().next(&mut body).await,
        push("w-auth", 1)
    );
    let query = format!("/presence/w-auth?token={good}");
    let accepted = common::http_send(relay.addr, "GET", &query, &sse, "").await;
    assert_eq!(accepted.status(), 200);
    let other = format!("/presence/w-auth?token={}", token(SECRET, "other"));
    let wrong_key = common::http_send(relay.addr, "GET", &other, &sse, "").await;
    assert_eq!(wrong_key.status(), 401);
    relay.stop().await;
}

/// A connect/disconnect storm with a watcher attached: the watcher stays connected, what
/// it is pushed is accounted for (pushed or coalesced), and it ends on the true state.
#[tokio::test]
async fn a_storm_is_coalesced_and_ends_on_the_current_state() {
    const CYCLES: usize = 2000;
    const CONCURRENCY: usize = 50;
    let relay = Relay::start().await;
    let mut watcher = relay.client().await;
    watch(&mut watcher, "w-storm", 0).await;
    // One connection stays throughout: no flip, so everything may coalesce.
    let anchor = relay.registered("w-storm").await;
    assert_eq!(watcher.recv_json().await, push("w-storm", 1));
    let url = relay.url();
    let workers: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                for _ in 0..CYCLES / CONCURRENCY {
                    let mut client = Client::connect(&url).await;
                    client.register("w-storm").await;
                    close(client).await;
                }
            })
        })
        .collect();
    for worker in workers {
        within("the storm", worker).await.expect("worker");
    }
    eventually("every storm connection to be gone", || {
        gauge(&relay, "notify_relay_connections") == 2.0
    })
    .await;
    // The reply to a query comes after every push queued before it.
    let mut frames = 0;
    watcher
        .send_json(json!({"id": "end", "presence": "w-storm"}))
        .await;
    let mut last = None;
    loop {
        let frame = watcher.recv_json().await;
        if frame["id"] == "end" {
            break;
        }
        frames += 1;
        last = Some(frame);
    }
    assert_eq!(
        last,
        Some(push("w-storm", 1)),
        "the last push is the true state"
    );
    let pushed = gauge(&relay, "notify_relay_presence_events_total");
    let coalesced = gauge(&relay, "notify_relay_presence_events_coalesced_total");
    eprintln!(
        "storm of {CYCLES} connect/disconnect cycles: {frames} frames to the watcher, \
         {coalesced} changes coalesced"
    );
    if relay.state.config.cluster.redis.is_none() {
        // Every change was either pushed or folded into a push.
        assert_eq!(pushed + coalesced, (2 * CYCLES + 1) as f64);
        assert_eq!(pushed as usize, frames + 1);
    }
    assert!(frames <= 2 * CYCLES);
    drop(anchor);
    relay.stop().await;
}

#[tokio::test]
async fn presence_streams_as_server_sent_events() {
    let relay = Relay::start().await;
    // Without the Accept header it stays the JSON query.
    let (status, content_type, body) = relay.get("/presence/w-sse").await;
    assert_eq!(status, 200);
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    assert_eq!(
        serde_json::from_str::<Value>(&body).expect("json")["connections"],
        0
    );
    let response = common::http_send(
        relay.addr,
        "GET",
        "/presence/w-sse",
        &[("accept", "text/event-stream")],
        "",
    )
    .await;
    assert_eq!(response.status(), 200);
    assert!(common::content_type(&response).starts_with("text/event-stream"));
    let mut body = response.into_body();
    let mut events = SseReader::default();
    assert_eq!(events.next(&mut body).await, push("w-sse", 0));
    assert_eq!(gauge(&relay, "notify_relay_presence_watches"), 1.0);
    let a = relay.registered("w-sse").await;
    assert_eq!(events.next(&mut body).await, push("w-sse", 1));
    close(a).await;
    assert_eq!(events.next(&mut body).await, push("w-sse", 0));
    // The stream does not count in presence either.
    let (_, _, answer) = relay.get("/presence/w-sse").await;
    assert_eq!(
        serde_json::from_str::<Value>(&answer).expect("json")["connections"],
        0
    );
    drop(body);
    eventually("the SSE watch to be released", || {
        gauge(&relay, "notify_relay_presence_watches") == 0.0
    })
    .await;
    relay.stop().await;
}

/// Reads `event: presence` events from an SSE body.
#[derive(Default)]
struct SseReader {
    text: String,
}

impl SseReader {
    async fn next(&mut self, body: &mut hyper::body::Incoming) -> Value {
        loop {
            if let Some(end) = self.text.find("\n\n") {
                let event: String = self.text.drain(..end + 2).collect();
                if let Some(data) = event.lines().find_map(|line| line.strip_prefix("data: ")) {
                    assert!(
                        event.starts_with("event: presence\n"),
                        "not a presence event: {event:?}"
                    );
                    return serde_json::from_str(data).expect("json data");
                }
                continue;
            }
            let frame = within("an event", body.frame())
                .await
                .expect("stream open")
                .expect("frame");
            if let Ok(data) = frame.into_data() {
                self.text.push_str(&String::from_utf8_lossy(&data));
            }
        }
    }
}

// Across relays: real relay processes on a real redis-server (Part 4).

mod cluster {
    use std::time::{Duration, Instant};

    use super::{close, push, watch};
    use crate::common::{wait_readyz, within, Client, RedisServer, RelayProcess};
    use futures_util::StreamExt;
    use serde_json::Value;
    use tokio::time::timeout;
    use tokio_tungstenite::tungstenite::Message;

    /// A relay's heartbeat (14 s) plus the sweep that finds it gone (1 s), and slack for
    /// a loaded machine: the longest a killed relay's connections may still show as
    /// online to a watcher (the contract's dead-relay bound is 30 s).
    const DEAD_RELAY_BOUND: Duration = Duration::from_secs(25);

    async fn relay(redis: &RedisServer) -> RelayProcess {
        let url = redis.url();
        let relay = RelayProcess::spawn(&["--redis", url.as_str()]);
        wait_readyz(relay.addr, 200).await;
        relay
    }

    /// Reads pushes until one says `connections`, within `deadline`; returns them all.
    async fn until(client: &mut Client, connections: u64, deadline: Duration) -> Vec<Value> {
        let mut seen = Vec::new();
        let reading = async {
            loop {
                let frame = match client.ws.next().await {
                    Some(Ok(Message::Text(text))) => {
                        serde_json::from_str::<Value>(&text).expect("json")
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    other => panic!("expected a push, got {other:?}"),
                };
                let done = frame["connections"] == connections;
                seen.push(frame);
                if done {
                    return;
                }
            }
        };
        timeout(deadline, reading)
            .await
            .unwrap_or_else(|_| panic!("no push of {connections} within {deadline:?}: {seen:?}"));
        seen
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_change_on_one_relay_reaches_watchers_on_another() {
        let redis = RedisServer::start();
        let (a, b) = (relay(&redis).await, relay(&redis).await);
        let mut watcher = Client::connect(&b.url()).await;
        watch(&mut watcher, "cw", 0).await;
        let mut on_a = Client::connect(&a.url()).await;
        on_a.register("cw").await;
        assert_eq!(watcher.recv_json().await, push("cw", 1));
        let mut on_b = Client::connect(&b.url()).await;
        on_b.register("cw").await;
        assert_eq!(watcher.recv_json().await, push("cw", 2));
        close(on_a).await;
        assert_eq!(watcher.recv_json().await, push("cw", 1));
        close(on_b).await;
        assert_eq!(watcher.recv_json().await, push("cw", 0));
        // A watcher on the relay with the connections sees them too.
        let mut local = Client::connect(&a.url()).await;
        watch(&mut local, "cw", 0).await;
        let mut again = Client::connect(&b.url()).await;
        again.register("cw").await;
        assert_eq!(local.recv_json().await, push("cw", 1));
        assert_eq!(watcher.recv_json().await, push("cw", 1));
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_killed_relay_shows_as_offline_within_the_bound() {
        let redis = RedisServer::start();
        let (mut doomed, survivor) = (relay(&redis).await, relay(&redis).await);
        let mut watcher = Client::connect(&survivor.url()).await;
        watch(&mut watcher, "ck", 0).await;
        let mut tabs = Vec::new();
        for _ in 0..2 {
            let mut tab = Client::connect(&doomed.url()).await;
            tab.register("ck").await;
            tabs.push(tab);
        }
        until(&mut watcher, 2, common_deadline()).await;
        doomed.signal("KILL");
        doomed.wait_exit(crate::common::DEADLINE);
        let killed = Instant::now();
        let seen = until(&mut watcher, 0, DEAD_RELAY_BOUND + Duration::from_secs(5)).await;
        assert!(
            killed.elapsed() <= DEAD_RELAY_BOUND,
            "offline after {:?}",
            killed.elapsed()
        );
        assert_eq!(seen.last(), Some(&push("ck", 0)));
        eprintln!("killed relay seen as offline after {:?}", killed.elapsed());
    }

    fn common_deadline() -> Duration {
        crate::common::DEADLINE
    }

    /// Redis lost (killed, started again empty) while the key went offline: once the
    /// relays are back the watcher is told, with no stale "online" left behind.
    #[tokio::test(flavor = "multi_thread")]
    async fn after_a_redis_outage_the_watcher_gets_the_current_state() {
        let mut redis = RedisServer::start();
        let (a, b) = (relay(&redis).await, relay(&redis).await);
        let mut watcher = Client::connect(&b.url()).await;
        watch(&mut watcher, "co", 0).await;
        let mut member = Client::connect(&a.url()).await;
        member.register("co").await;
        assert_eq!(watcher.recv_json().await, push("co", 1));
        let mut stays = Client::connect(&a.url()).await;
        stays.register("co-stays").await;
        let mut stays_watcher = Client::connect(&b.url()).await;
        watch(&mut stays_watcher, "co-stays", 1).await;

        redis.stop();
        wait_readyz(b.addr, 503).await;
        close(member).await;
        redis.restart();
        wait_readyz(a.addr, 200).await;
        wait_readyz(b.addr, 200).await;
        until(&mut watcher, 0, common_deadline()).await;
        // The key that stayed online reads as online again (after at most a dip while
        // relay a writes its presence anew), and its watcher ends on that state.
        let mut probe = Client::connect(&b.url()).await;
        let answer = within("a presence query", async {
            loop {
                let answer = probe
                    .request(serde_json::json!({"presence": "co-stays"}))
                    .await;
                if answer["connections"] == 1 {
                    return answer;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        assert_eq!(answer["online"], true);
        let mut pushed = Vec::new();
        while let Ok(frame) = timeout(Duration::from_millis(500), stays_watcher.recv_json()).await {
            pushed.push(frame);
        }
        if let Some(last) = pushed.last() {
            assert_eq!(last, &push("co-stays", 1), "{pushed:?}");
        }
        drop(stays);
    }

    /// A storm on one relay with a watcher on another: the watcher's frames stay well
    /// below the changes, it ends on the true state, and its relay's memory stays flat.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_storm_across_relays_is_bounded() {
        const CYCLES: usize = 1000;
        const CONCURRENCY: usize = 25;
        let redis = RedisServer::start();
        let (a, b) = (relay(&redis).await, relay(&redis).await);
        let mut watcher = Client::connect(&b.url()).await;
        watch(&mut watcher, "cs", 0).await;
        let rss_before = b.rss_bytes();
        let url = a.url();
        let workers: Vec<_> = (0..CONCURRENCY)
            .map(|_| {
                let url = url.clone();
                tokio::spawn(async move {
                    for _ in 0..CYCLES / CONCURRENCY {
                        let mut client = Client::connect(&url).await;
                        client.register("cs").await;
                        close(client).await;
                    }
                })
            })
            .collect();
        for worker in workers {
            within("the storm", worker).await.expect("worker");
        }
        // Ends on offline; then nothing more comes.
        let mut frames = until(&mut watcher, 0, common_deadline()).await;
        while let Ok(frame) = timeout(Duration::from_millis(1500), watcher.recv_json()).await {
            frames.push(frame);
        }
        assert_eq!(frames.last(), Some(&push("cs", 0)), "{frames:?}");
        let rss_after = b.rss_bytes();
        eprintln!(
            "storm of {CYCLES} cycles on relay a: {} frames to the watcher on relay b; \
             its RSS {} -> {} KiB",
            frames.len(),
            rss_before / 1024,
            rss_after / 1024
        );
        assert!(frames.len() <= 2 * CYCLES);
        assert!(
            rss_after < rss_before + 32 * 1024 * 1024,
            "{rss_before} -> {rss_after}"
        );
    }
}
