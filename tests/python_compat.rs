//! Compatibility with the clients users already have: the Python `websockets` library
//! (examples/python, written as for the original server) and `python -m websockets`.
//! The test command installs `websockets`; these tests fail, not skip, without it.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{KillOnDrop, RelayProcess, DEADLINE, GREETING};

const PYTHON: &str = "python3";

fn example(name: &str) -> String {
    format!("{}/examples/python/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// python3 able to import this tree's notify_relay (clients/python), whether or not
/// `pip install ./clients/python` ran: the examples built on it test this tree's copy.
fn python_with_client() -> Command {
    let mut command = Command::new(PYTHON);
    command
        .env(
            "PYTHONPATH",
            format!("{}/clients/python", env!("CARGO_MANIFEST_DIR")),
        )
        .env("PYTHONDONTWRITEBYTECODE", "1");
    command
}

/// Reads a child's stdout lines into a channel, so waits can have a deadline.
fn lines_of(stdout: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits for a line containing `needle`; returns every line read up to it.
fn wait_for_line(lines: &mpsc::Receiver<String>, needle: &str) -> Vec<String> {
    let deadline = std::time::Instant::now() + DEADLINE;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => {
                let found = line.contains(needle);
                seen.push(line);
                if found {
                    return seen;
                }
            }
            Err(_) => panic!("no line containing {needle:?}; saw {seen:?}"),
        }
    }
}

fn keys_registered(relay: &RelayProcess) -> usize {
    relay.metric("notify_relay_keys") as usize
}

fn wait_until_registered(relay: &RelayProcess, keys: usize) {
    let deadline = std::time::Instant::now() + DEADLINE;
    while keys_registered(relay) < keys {
        assert!(
            std::time::Instant::now() < deadline,
            "listener never registered"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn python_websockets_producer_and_listener_talk_through_the_relay() {
    let relay = RelayProcess::spawn(&[]);
    let mut listener = KillOnDrop::new(
        Command::new(PYTHON)
            .args([
                &example("listener.py"),
                "receiver-uuid",
                "--url",
                &relay.url(),
            ])
            .args(["--count", "2"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 runs (the test command installs websockets)"),
    );
    let lines = lines_of(listener.stdout.take().expect("stdout"));
    wait_until_registered(&relay, 1);

    // The original client.py way: fire and forget.
    let status = Command::new(PYTHON)
        .args([
            &example("producer.py"),
            "receiver-uuid",
            "héllo wörld",
            "--url",
            &relay.url(),
        ])
        .status()
        .expect("producer runs");
    assert!(status.success());
    wait_for_line(&lines, "héllo wörld");

    // With the opt-in confirmation.
    let output = Command::new(PYTHON)
        .args([
            &example("producer.py"),
            "receiver-uuid",
            "second",
            "--url",
            &relay.url(),
        ])
        .arg("--confirm")
        .output()
        .expect("producer runs");
    assert!(output.status.success(), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stdout).contains("delivered to 1 connection"));
    wait_for_line(&lines, "second");
    assert!(listener.wait().expect("listener exits").success());

    // Nobody connected: the confirming producer says the relay kept it (exit code 6).
    let status = Command::new(PYTHON)
        .args([
            &example("producer.py"),
            "nobody",
            "x",
            "--url",
            &relay.url(),
            "--confirm",
        ])
        .stdout(Stdio::null())
        .status()
        .expect("producer runs");
    assert_eq!(status.code(), Some(6));
}

/// Runs examples/python/publish_http.py; its exit code.
fn publish_http(relay: &RelayProcess, key: &str, message: &str) -> Option<i32> {
    python_with_client()
        .args([
            &example("publish_http.py"),
            key,
            message,
            "--url",
            &format!("http://{}", relay.addr),
        ])
        .stdout(Stdio::null())
        .status()
        .expect("publish_http runs")
        .code()
}

#[test]
fn http_publisher_and_resuming_listener_lose_nothing_across_a_relay_restart() {
    let mut relay = RelayProcess::spawn(&[]);
    let port = relay.addr.port().to_string();
    let mut listener = KillOnDrop::new(
        python_with_client()
            .args([
                &example("resuming_listener.py"),
                "job-py",
                "--url",
                &relay.url(),
            ])
            .args(["--count", "3"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3 runs"),
    );
    let lines = lines_of(listener.stdout.take().expect("stdout"));
    let errors = lines_of(listener.stderr.take().expect("stderr"));
    wait_until_registered(&relay, 1);
    assert_eq!(publish_http(&relay, "job-py", "one"), Some(0));
    wait_for_line(&lines, "one");

    relay.signal("TERM");
    assert_eq!(relay.wait_exit(DEADLINE), Some(0));
    let relay = RelayProcess::spawn(&[&port]);
    // Delivered if the listener is back already, else kept for it.
    for message in ["two", "three"] {
        let code = publish_http(&relay, "job-py", message);
        assert!(matches!(code, Some(0 | 6)), "{message}: {code:?}");
    }
    let seen = wait_for_line(&lines, "three");
    assert_eq!(seen, ["two", "three"], "in order, once each");
    // The new relay run cannot prove continuity: the listener is told.
    wait_for_line(&errors, "gap");
    assert!(listener.wait().expect("listener exits").success());

    // Nobody connected: kept (6); a refused message: 1.
    assert_eq!(publish_http(&relay, "nobody-py", "kept"), Some(6));
    assert_eq!(publish_http(&relay, "", "x"), Some(1));
}

#[test]
fn python_m_websockets_interactive_client_smoke_test() {
    let relay = RelayProcess::spawn(&[]);
    let mut client = KillOnDrop::new(
        Command::new(PYTHON)
            .args(["-m", "websockets", &relay.url()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 -m websockets runs"),
    );
    let lines = lines_of(client.stdout.take().expect("stdout"));
    wait_for_line(&lines, GREETING);
    let mut stdin = client.stdin.take().expect("stdin");
    writeln!(
        stdin,
        r#"{{"recipient_uuid": "smoke", "message": "connected"}}"#
    )
    .expect("write");
    writeln!(
        stdin,
        r#"{{"recipient_uuid": "smoke", "message": "hello from stdin"}}"#
    )
    .expect("write");
    stdin.flush().expect("flush");
    wait_for_line(&lines, "< hello from stdin");
    // End of input closes the connection cleanly.
    drop(stdin);
    assert!(client.wait().expect("client exits").success());
}

/// A Python `websockets` client sends a large message to itself and checks it comes back
/// whole: the relay writes it as fragments, which the client must put together.
const PYTHON_LARGE_ROUND_TRIP: &str = r#"
import asyncio, json, sys
from websockets.asyncio.client import connect

async def main(url):
    async with connect(url) as ws:
        await ws.recv()
        text = "notify €🙂 " * 20000
        await ws.send(json.dumps({"recipient_uuid": "py-large", "message": "connected"}))
        await ws.send(json.dumps({"recipient_uuid": "py-large", "message": text}))
        got = await ws.recv()
        print("whole" if got == text else f"mismatch: {len(got)} of {len(text)} characters")

asyncio.run(main(sys.argv[1]))
"#;

#[test]
fn python_websockets_receives_a_large_message_whole() {
    let relay = RelayProcess::spawn(&[]);
    let output = Command::new(PYTHON)
        .args(["-c", PYTHON_LARGE_ROUND_TRIP, &relay.url()])
        .output()
        .expect("python3 runs");
    assert!(output.status.success(), "{output:?}");
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "whole");
}
