//! Part 4 on a real 3-master Redis Cluster: relay processes given `redis+cluster://` are
//! one key space with keys on every shard; pub/sub is sharded (a key's channel lives only
//! on the shard that owns its slot, nothing uses classic PUBLISH); pending messages,
//! resumption, presence and `delivered` hold across relays; a shard killed and started
//! again (empty) makes the relays not ready, then ready by themselves, with a gap signal
//! exactly where history was lost; a slot moved to another shard is followed.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{
    http_request, http_request_with_body, wait_readyz, Client, RedisCluster, RelayProcess,
};
use serde_json::{json, Value};

/// Starts a relay on `cluster` and waits until it says it is ready.
async fn relay(cluster: &RedisCluster) -> RelayProcess {
    let url = cluster.url();
    let relay = RelayProcess::spawn(&["--redis", url.as_str()]);
    wait_readyz(relay.addr, 200).await;
    relay
}

/// `GET /presence/<key>`: the connections count.
async fn presence(addr: SocketAddr, key: &str) -> u64 {
    let (status, _, body) = http_request(addr, "GET", &format!("/presence/{key}")).await;
    assert_eq!(status, 200, "{body}");
    let value: Value = serde_json::from_str(&body).expect("JSON");
    value["connections"].as_u64().expect("connections")
}

/// The key's channel name in Redis.
fn channel(key: &str) -> String {
    format!("nr:{{{key}}}:ch")
}

/// Registers a resumable connection and returns the reply.
async fn resume(client: &mut Client, key: &str, since: &str) -> Value {
    let reply = client
        .request(json!({"recipient_uuid": key, "message": "connected", "since": since}))
        .await;
    assert_eq!(reply["ok"], true, "{reply}");
    reply
}

/// Waits (up to `deadline`) until presence of `key` seen from `addr` is `want`.
async fn presence_becomes(addr: SocketAddr, key: &str, want: u64) {
    let start = std::time::Instant::now();
    loop {
        let got = presence(addr, key).await;
        if got == want {
            return;
        }
        assert!(
            start.elapsed() < common::DEADLINE,
            "presence of {key} stayed {got}, not {want}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sends `text` to `key` until a send is stored (a send refused while the cluster
/// finishes its own recovery is never half-done), waiting for readiness between tries.
/// Returns the stored send's `delivered`.
async fn send_until_stored(sender: &mut Client, relay: SocketAddr, key: &str, text: &str) -> u64 {
    for _ in 0..20 {
        let reply = sender
            .request(json!({"recipient_uuid": key, "message": text}))
            .await;
        if reply["ok"] == true {
            return reply["delivered"].as_u64().expect("delivered");
        }
        assert_eq!(reply["error"], "cluster unavailable", "{reply}");
        wait_readyz(relay, 200).await;
    }
    panic!("no send of {text:?} to {key} was stored");
}

/// Waits until the running nodes agree the cluster is whole and the relays are ready.
async fn healed(cluster: &RedisCluster, relays: &[&RelayProcess]) {
    cluster.wait_ok();
    for relay in relays {
        wait_readyz(relay.addr, 200).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_on_every_shard_reach_every_relay_in_order_through_sharded_pub_sub() {
    const MESSAGES: usize = 30;
    let cluster = RedisCluster::start();
    let (a, b, c) = (
        relay(&cluster).await,
        relay(&cluster).await,
        relay(&cluster).await,
    );
    let keys: Vec<String> = (0..3).map(|node| cluster.key_on(node, "shard")).collect();
    let mut tabs = Vec::new();
    for key in &keys {
        let mut on_a = Client::connect(&a.url()).await;
        on_a.register(key).await;
        let mut on_b = Client::connect(&b.url()).await;
        on_b.register(key).await;
        tabs.push((on_a, on_b));
    }
    // Each key's channel is subscribed on the shard that owns it, and only there.
    for (node, key) in keys.iter().enumerate() {
        for (other, server) in cluster.nodes.iter().enumerate() {
            let listed = server.cli(&["PUBSUB", "SHARDCHANNELS", &channel(key)]);
            assert_eq!(
                listed == channel(key),
                node == other,
                "node {other} lists {listed:?} for a key of node {node}"
            );
        }
    }
    let spublished: Vec<u64> = cluster.nodes.iter().map(|n| n.calls("spublish")).collect();
    let mut sender = Client::connect(&c.url()).await;
    for i in 0..MESSAGES {
        for key in &keys[..1] {
            let reply = sender
                .request(json!({"recipient_uuid": key, "message": format!("m{i}")}))
                .await;
            assert_eq!(reply["delivered"], 2, "{reply}");
        }
    }
    // Only the owning shard saw those publishes (the others saw only the relays' probes,
    // about one per relay and second), and no node saw a classic PUBLISH.
    let grown: Vec<u64> = cluster
        .nodes
        .iter()
        .zip(&spublished)
        .map(|(n, before)| n.calls("spublish") - before)
        .collect();
    assert!(grown[0] >= MESSAGES as u64, "{grown:?}");
    assert!(
        grown[1] < MESSAGES as u64 && grown[2] < MESSAGES as u64,
        "{grown:?}"
    );
    for node in &cluster.nodes {
        assert_eq!(node.calls("publish"), 0);
    }
    for (on_a, on_b) in &mut tabs[..1] {
        for tab in [on_a, on_b] {
            for i in 0..MESSAGES {
                assert_eq!(tab.recv_text().await, format!("m{i}"));
            }
        }
    }
    // Interleaved over the three shards, from another relay and over HTTP: every tab
    // gets its key's messages in order, and presence counts both relays.
    for i in 0..MESSAGES {
        for key in &keys {
            assert_eq!(sender.deliver(key, json!(format!("{key} {i}"))).await, 2);
        }
    }
    for (key, (on_a, on_b)) in keys.iter().zip(&mut tabs) {
        for tab in [on_a, on_b] {
            for i in 0..MESSAGES {
                assert_eq!(tab.recv_text().await, format!("{key} {i}"));
            }
        }
        assert_eq!(presence(c.addr, key).await, 2);
        let (status, _, body) =
            http_request_with_body(b.addr, &format!("/publish/{key}"), "over http").await;
        assert_eq!(status, 200, "{body}");
        let answer: Value = serde_json::from_str(&body).expect("JSON");
        assert_eq!(answer["delivered"], 2, "{answer}");
    }
    for (on_a, on_b) in &mut tabs {
        assert_eq!(on_a.recv_text().await, "over http");
        assert_eq!(on_b.recv_text().await, "over http");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn pending_and_resumption_work_on_another_relay_on_every_shard() {
    let cluster = RedisCluster::start();
    let (a, b, c) = (
        relay(&cluster).await,
        relay(&cluster).await,
        relay(&cluster).await,
    );
    let mut sender = Client::connect(&a.url()).await;
    for node in 0..3 {
        let job = cluster.key_on(node, "job");
        for text in ["50%", "done"] {
            let reply = sender
                .request(json!({"recipient_uuid": job, "message": text}))
                .await;
            assert_eq!(reply["buffered"], true, "{reply}");
        }
        // The page opens on another relay: it gets the pending messages, once.
        let mut page = Client::connect(&b.url()).await;
        page.register(&job).await;
        assert_eq!(page.recv_text().await, "50%");
        assert_eq!(page.recv_text().await, "done");
        let mut second = Client::connect(&c.url()).await;
        let reply = second
            .request(json!({"recipient_uuid": job, "message": "connected"}))
            .await;
        assert_eq!(reply["replayed"], 0, "{reply}");

        // A resumable listener on a leaves, misses two messages, resumes on c.
        let feed = cluster.key_on(node, "feed");
        let mut listener = Client::connect(&a.url()).await;
        resume(&mut listener, &feed, "latest").await;
        assert_eq!(sender.deliver(&feed, json!("seen")).await, 1);
        let seen = listener.recv_json().await;
        drop(listener);
        presence_becomes(b.addr, &feed, 0).await;
        for text in ["missed 1", "missed 2"] {
            sender.deliver(&feed, json!(text)).await;
        }
        let mut back = Client::connect(&c.url()).await;
        let cursor = seen["cursor"].as_str().expect("cursor");
        let reply = resume(&mut back, &feed, cursor).await;
        assert_eq!(reply["replayed"], 2, "{reply}");
        for text in ["missed 1", "missed 2"] {
            assert_eq!(back.recv_json().await["message"], text);
        }
        assert_eq!(sender.deliver(&feed, json!("live")).await, 1);
        assert_eq!(back.recv_json().await["message"], "live");
    }
}

/// A master killed and started again, empty (no replica takes over): the relays are not
/// ready and refuse what they cannot do, then come back by themselves once the cluster is
/// whole. The key on the lost shard gets a gap signal (its history is gone); the key on a
/// shard that stayed up gets none and misses nothing.
#[tokio::test(flavor = "multi_thread")]
async fn a_shard_killed_and_restarted() {
    let mut cluster = RedisCluster::start();
    let (a, b) = (relay(&cluster).await, relay(&cluster).await);
    let lost = cluster.key_on(0, "lost");
    let kept = cluster.key_on(1, "kept");
    let mut on_lost = Client::connect(&a.url()).await;
    resume(&mut on_lost, &lost, "latest").await;
    let mut on_kept = Client::connect(&a.url()).await;
    resume(&mut on_kept, &kept, "latest").await;
    let mut sender = Client::connect(&b.url()).await;
    for key in [&lost, &kept] {
        assert_eq!(sender.deliver(key, json!("before")).await, 1);
    }
    assert_eq!(on_lost.recv_json().await["message"], "before");
    assert_eq!(on_kept.recv_json().await["message"], "before");

    cluster.nodes[0].stop();
    wait_readyz(a.addr, 503).await;
    wait_readyz(b.addr, 503).await;
    let reply = sender
        .request(json!({"recipient_uuid": lost, "message": "x"}))
        .await;
    assert_eq!(reply["error"], "cluster unavailable", "{reply}");

    cluster.nodes[0].restart();
    healed(&cluster, &[&a, &b]).await;
    let gap = on_lost.recv_json().await;
    assert_eq!(gap["gap"], true, "{gap}");
    for key in [&lost, &kept] {
        assert_eq!(
            send_until_stored(&mut sender, b.addr, key, "after").await,
            1
        );
    }
    assert_eq!(on_lost.recv_json().await["message"], "after");
    let next = on_kept.recv_json().await;
    assert_eq!(
        next["message"], "after",
        "no gap where history was kept: {next}"
    );
    assert_eq!(presence(b.addr, &lost).await, 1);
}

/// A slot moved to another master (what resharding does): the old owner drops the
/// relay's shard subscription (a server-side SUNSUBSCRIBE); the relay looks the topology
/// up again, subscribes on the new owner and loses nothing.
#[tokio::test(flavor = "multi_thread")]
async fn a_slot_moved_to_another_shard_is_followed() {
    let cluster = RedisCluster::start();
    let (a, b) = (relay(&cluster).await, relay(&cluster).await);
    let key = cluster.key_on(0, "moving");
    let mut tab = Client::connect(&a.url()).await;
    resume(&mut tab, &key, "latest").await;
    let mut sender = Client::connect(&b.url()).await;
    assert_eq!(sender.deliver(&key, json!("on 0")).await, 1);
    assert_eq!(tab.recv_json().await["message"], "on 0");

    let slot = cluster.nodes[0].cli(&["CLUSTER", "KEYSLOT", &channel(&key)]);
    let id = |node: usize| cluster.nodes[node].cli(&["CLUSTER", "MYID"]);
    let (from, to) = (id(0), id(1));
    assert_eq!(
        cluster.nodes[1].cli(&["CLUSTER", "SETSLOT", &slot, "IMPORTING", &from]),
        "OK"
    );
    assert_eq!(
        cluster.nodes[0].cli(&["CLUSTER", "SETSLOT", &slot, "MIGRATING", &to]),
        "OK"
    );
    let names = cluster.nodes[0].cli(&["CLUSTER", "GETKEYSINSLOT", &slot, "100"]);
    let port = cluster.nodes[1].port.to_string();
    for name in names.lines().filter(|n| !n.is_empty()) {
        let moved =
            cluster.nodes[0].cli(&["MIGRATE", "127.0.0.1", &port, name, "0", "5000", "REPLACE"]);
        assert_eq!(moved, "OK", "{name}");
    }
    for node in &cluster.nodes {
        assert_eq!(node.cli(&["CLUSTER", "SETSLOT", &slot, "NODE", &to]), "OK");
    }
    cluster.wait_ok();
    common::eventually("the channel subscribed on the new owner", || {
        cluster.nodes[1].cli(&["PUBSUB", "SHARDCHANNELS", &channel(&key)]) == channel(&key)
    })
    .await;
    wait_readyz(a.addr, 200).await;
    wait_readyz(b.addr, 200).await;
    assert_eq!(
        send_until_stored(&mut sender, b.addr, &key, "on 1").await,
        1
    );
    let next = tab.recv_json().await;
    assert_eq!(
        next["message"], "on 1",
        "the history moved with the slot: {next}"
    );
    assert_eq!(
        cluster.nodes[0].cli(&["PUBSUB", "SHARDCHANNELS", &channel(&key)]),
        ""
    );
}

/// A master paused (SIGSTOP) while the other shards keep serving (full coverage not
/// required): its connections stay open and say nothing, so only the probe through that
/// shard can tell. The relays are not ready within 10 s, and after SIGCONT ready again
/// with nothing lost on that shard.
#[tokio::test(flavor = "multi_thread")]
async fn a_paused_shard_is_noticed_by_its_own_probe() {
    let cluster = RedisCluster::start();
    for node in &cluster.nodes {
        node.cli(&["CONFIG", "SET", "cluster-require-full-coverage", "no"]);
    }
    let (a, b) = (relay(&cluster).await, relay(&cluster).await);
    let key = cluster.key_on(2, "paused");
    let other = cluster.key_on(0, "other");
    let mut tab = Client::connect(&a.url()).await;
    resume(&mut tab, &key, "latest").await;
    let mut sender = Client::connect(&b.url()).await;
    assert_eq!(sender.deliver(&key, json!("before")).await, 1);
    assert_eq!(tab.recv_json().await["message"], "before");

    cluster.nodes[2].signal("STOP");
    let paused = std::time::Instant::now();
    wait_readyz(a.addr, 503).await;
    assert!(
        paused.elapsed() < Duration::from_secs(10),
        "{:?}",
        paused.elapsed()
    );
    // The other shards still answer: the cluster itself is not down.
    assert_eq!(
        cluster.nodes[0].cli(&["SET", &format!("{{{other}}}"), "1"]),
        "OK"
    );

    cluster.nodes[2].signal("CONT");
    healed(&cluster, &[&a, &b]).await;
    assert_eq!(
        send_until_stored(&mut sender, b.addr, &key, "after").await,
        1
    );
    let next = tab.recv_json().await;
    assert_eq!(next["message"], "after", "continuity holds: no gap: {next}");
}
