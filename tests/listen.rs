//! The listening socket of the real binary: a port in use is a clear error, two relays
//! share a port with --reuse-port (a restart with no gap), and with no --host the relay
//! listens on IPv6 and IPv4.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Client, RelayProcess};
use serde_json::json;

#[test]
fn a_port_in_use_is_a_clear_error() {
    let first = RelayProcess::spawn(&[]);
    let port = first.addr.port().to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_notify-relay"))
        .args(["--host", "127.0.0.1", &port])
        .stdin(Stdio::null())
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("cannot listen on 127.0.0.1 port {port}"))
            && stderr.contains("in use"),
        "{stderr}"
    );
}

#[tokio::test]
async fn reuse_port_lets_a_new_relay_take_over_with_no_gap() {
    let mut old = RelayProcess::spawn(&["--reuse-port"]);
    // Connected while the old relay is the only listener (afterwards the kernel spreads
    // new connections over both).
    let mut client = Client::connect(&old.url()).await;
    let port = old.addr.port().to_string();
    let new = RelayProcess::spawn(&["--reuse-port", &port]);
    assert_eq!(new.addr, old.addr);

    old.signal("TERM");
    client.expect_close().await;
    assert_eq!(old.wait_exit(Duration::from_secs(10)), Some(0));
    // The port never stopped serving: the new relay answers on it.
    let mut again = Client::connect(&new.url()).await;
    again.register("after-handover").await;
    let mut sender = Client::connect(&new.url()).await;
    assert_eq!(sender.deliver("after-handover", json!("hi")).await, 1);
    assert_eq!(again.recv_text().await, "hi");
}

#[tokio::test]
async fn without_host_it_listens_on_all_interfaces() {
    let port = common::free_port();
    let mut child = common::KillOnDrop::new(
        Command::new(env!("CARGO_BIN_EXE_notify-relay"))
            .arg(port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("runs"),
    );
    let stderr = child.stderr.take().expect("stderr");
    let line = std::io::BufRead::lines(std::io::BufReader::new(stderr))
        .map_while(Result::ok)
        .find(|l| l.contains("listening on"))
        .expect("listening line");
    let reached = |host: &str| format!("ws://{host}:{port}/");
    Client::connect(&reached("127.0.0.1"))
        .await
        .assert_alive()
        .await;
    if line.contains(&format!("[::]:{port}")) {
        // One dual-stack socket: IPv6 clients too.
        Client::connect(&reached("[::1]"))
            .await
            .assert_alive()
            .await;
    } else {
        assert!(line.contains(&format!("0.0.0.0:{port}")), "{line}");
    }
}
