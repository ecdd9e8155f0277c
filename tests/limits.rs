//! Running out of file descriptors (the real binary under `ulimit -n 64`): the relay
//! says so at start (a warning only when --max-connections was asked for, and naming
//! what to raise), counts the failed accepts, keeps serving the connections it has, and
//! accepts again once descriptors are free.

mod common;

use common::{Client, RelayProcess};
use serde_json::json;

#[tokio::test]
async fn out_of_file_descriptors_the_relay_keeps_serving_and_recovers() {
    let relay = RelayProcess::spawn_with_open_file_limit(64, &[]);
    relay.wait_for_log("open file limit 64: about 32 connections");
    let mut receiver = Client::connect(&relay.url()).await;
    receiver.register("receiver").await;
    let mut sender = Client::connect(&relay.url()).await;

    // The kernel completes these handshakes into the backlog; the relay cannot accept
    // them all with 64 descriptors.
    let mut flood = Vec::new();
    for _ in 0..80 {
        flood.push(
            tokio::net::TcpStream::connect(relay.addr)
                .await
                .expect("connect"),
        );
    }
    let failed = relay.wait_for_log("accept failed");
    assert!(failed.contains("retrying in"), "{failed}");

    assert_eq!(sender.deliver("receiver", json!("still served")).await, 1);
    assert_eq!(receiver.recv_text().await, "still served");

    drop(flood);
    // Once the flood's sockets are gone, new clients get in again.
    let mut late = Client::connect(&relay.url()).await;
    late.register("late").await;
    assert_eq!(sender.deliver("late", json!("welcome back")).await, 1);
    assert_eq!(late.recv_text().await, "welcome back");
    let (_, _, metrics) = common::http_request(relay.addr, "GET", "/metrics").await;
    assert!(common::metric(&metrics, "notify_relay_accept_errors_total") >= 1.0);
}

#[test]
fn the_open_file_limit_is_a_warning_only_when_max_connections_was_asked_for() {
    let limited = |args: &[&str]| {
        let relay = RelayProcess::spawn_with_open_file_limit(64, args);
        relay.wait_for_log("open file limit 64")
    };
    // The default --max-connections is a ceiling nobody asked for: information, in one
    // short line that still says what to raise for more.
    let line = limited(&[]);
    assert!(line.contains("INFO"), "{line}");
    let message = line
        .split_once("] ")
        .map_or(line.as_str(), |(_, message)| message);
    assert_eq!(
        message,
        "open file limit 64: about 32 connections (raise: LimitNOFILE=100032, minfds or ulimit -n)"
    );
    // Asked for, and more than the limit allows: a warning.
    let line = limited(&["--max-connections", "1000"]);
    assert!(line.contains("WARN"), "{line}");
    assert!(
        line.contains("fits about 32 of --max-connections 1000; past that accepts fail"),
        "{line}"
    );
    // Within the limit: information only.
    let line = limited(&["--max-connections", "20"]);
    assert!(line.contains("INFO"), "{line}");
    assert!(line.contains("room for --max-connections 20"), "{line}");
}
