//! What the operator reads in the log of the real binary: connects and registrations at
//! info, dropped frames at warn with their reason, and the totals at a set interval; and
//! what a client cannot do to it: forge lines, or flood it.

mod common;

use common::{within, Client, RelayProcess};
use futures_util::SinkExt;
use notify_relay::observability::log_limit;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn the_log_tells_connects_registrations_drops_and_totals() {
    // Streams off: a message to nobody is dropped rather than kept as pending.
    let relay = RelayProcess::spawn(&["--stats-interval", "100ms", "--buffer-ttl", "0s"]);
    let mut client = Client::connect(&relay.url()).await;
    client.register("logged-key").await;
    client.send_text("not json at all").await;
    assert_eq!(client.deliver("nobody", json!("x")).await, 0);

    let connected = relay.wait_for_log("connected from 127.0.0.1:");
    assert!(
        connected.contains("INFO") && connected.contains("as tmp_"),
        "{connected}"
    );
    let registered = relay.wait_for_log("registered as logged-key");
    assert!(registered.contains("INFO"), "{registered}");
    let ignored = relay.wait_for_log("frame ignored (not_json): not json at all");
    assert!(ignored.contains("WARN"), "{ignored}");
    let dropped = relay.wait_for_log("message to nobody dropped (no_recipient)");
    assert!(dropped.contains("WARN"), "{dropped}");
    let totals = relay.wait_for_log("totals: 1 connection(s), 1 key(s)");
    assert!(totals.contains("2 dropped"), "{totals}");
}

#[tokio::test]
async fn a_key_with_a_newline_is_one_log_line_with_the_newline_escaped() {
    let relay = RelayProcess::spawn(&[]);
    let mut client = Client::connect(&relay.url()).await;
    // A forged entry, a carriage return, a terminal title sequence, a line separator.
    client
        .register("evil\n[2026-01-01T00:00:00Z INFO  notify_relay] forged\r\u{1b}]0;pwned\u{7}\u{2028}end")
        .await;

    let line = relay.wait_for_log("registered as evil");
    assert!(
        line.contains(
            r"evil\n[2026-01-01T00:00:00Z INFO  notify_relay] forged\r\u{001b}]0;pwned\u{0007}\u{2028}end"
        ),
        "{line}"
    );
    let log = relay.log_text();
    let forged: Vec<&str> = log.lines().filter(|l| l.contains("forged")).collect();
    assert_eq!(forged, [line.as_str()], "one line, the real one");
    for raw in ['\r', '\u{1b}', '\u{7}', '\u{2028}'] {
        assert!(!log.contains(raw), "{raw:?} reached the log:\n{log}");
    }
}

/// The number in a summary line, `… and 49,871 more like it in the last 10 s`.
fn held_back(line: &str) -> u64 {
    let count = line
        .split("… and ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_else(|| panic!("not a summary: {line}"));
    count.replace(',', "").parse().expect("a count")
}

#[tokio::test]
async fn a_flood_of_bad_frames_logs_a_few_lines_and_how_many_were_held_back() {
    const FRAMES: u64 = 50_000;
    // Streams off: the closing message to nobody is dropped (one more line), not kept.
    let relay = RelayProcess::spawn(&["--buffer-ttl", "0s"]);
    let mut client = Client::connect(&relay.url()).await;
    for _ in 0..FRAMES {
        within("queue a frame", client.ws.feed(Message::text("x")))
            .await
            .expect("feed");
    }
    within("flush", client.ws.flush()).await.expect("flush");
    // Served in order: the reply means every frame was handled. Its message to nobody
    // is one more line over budget.
    client.assert_alive().await;
    within("close", client.ws.close(None)).await.expect("close");
    drop(client);

    let summary = relay.wait_for_log("more like it");
    let log = relay.log_text();
    let logged = log
        .lines()
        .filter(|l| l.contains("frame ignored") || l.contains("dropped (no_recipient)"))
        .count() as u64;
    let summarised: u64 = log
        .lines()
        .filter(|l| l.contains("more like it"))
        .map(held_back)
        .sum();
    assert!(logged <= 2 * log_limit::PER_CONNECTION as u64, "{log}");
    assert!(log.lines().count() < 50, "{log}");
    assert!(summary.contains("WARN"), "{summary}");
    assert_eq!(
        logged + summarised,
        FRAMES + 1,
        "every line is either logged or counted:\n{log}"
    );
}

#[tokio::test]
async fn many_connections_share_one_budget() {
    const CONNECTIONS: usize = 12;
    let relay = RelayProcess::spawn(&[]);
    let mut clients = Vec::new();
    for i in 0..CONNECTIONS {
        let mut client = Client::connect(&relay.url()).await;
        for j in 0..log_limit::PER_CONNECTION {
            client.send_text(format!("bad frame {i}-{j}")).await;
        }
        client.assert_alive().await;
        clients.push(client);
    }
    // Connection lines are not limited, and the log is in order: once this one is
    // read, every line before it is too.
    let _last = Client::connect(&relay.url()).await;
    relay.wait_for_log_count("connected from", CONNECTIONS + 1);
    let ignored = relay.log_text().matches("frame ignored").count();
    // Each connection is within its own budget, but together they are over the shared one.
    assert!(CONNECTIONS * log_limit::PER_CONNECTION as usize > log_limit::GLOBAL as usize);
    assert_eq!(ignored, log_limit::GLOBAL as usize, "{}", relay.log_text());
}
