//! Running out of file descriptors (the real binary under `ulimit -n 64`): the relay
//! says so at start, counts the failed accepts, keeps serving the connections it has,
//! and accepts again once descriptors are free.

mod common;

use common::{Client, RelayProcess};
use serde_json::json;

#[tokio::test]
async fn out_of_file_descriptors_the_relay_keeps_serving_and_recovers() {
    let relay = RelayProcess::spawn_with_open_file_limit(64, &[]);
    relay.wait_for_log("open file limit 64 allows about 32 connections");
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
