//! What the operator reads in the log of the real binary: connects and registrations at
//! info, dropped frames at warn with their reason, and the totals at a set interval.

mod common;

use common::{Client, RelayProcess};
use serde_json::json;

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
