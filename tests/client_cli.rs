//! The notify-relay-client CLI against the real relay binary: exit codes, JSON, stdin
//! streaming, listening with --count and --timeout, and reconnection after a restart.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{workspace_binary, RelayProcess};

fn cli(relay: &RelayProcess, args: &[&str]) -> Output {
    Command::new(workspace_binary("notify-relay-client"))
        .args(args)
        .env("NOTIFY_RELAY_URL", relay.url())
        .output()
        .expect("notify-relay-client runs")
}

/// Starts `listen UUID` with extra args; returns it once it has registered.
fn listener(relay: &RelayProcess, uuid: &str, extra: &[&str]) -> std::process::Child {
    let mut child = Command::new(workspace_binary("notify-relay-client"))
        .args(["listen", uuid])
        .args(extra)
        .env("NOTIFY_RELAY_URL", relay.url())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("listener runs");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    // "listening as ..." is printed after the relay confirmed the registration.
    let ready = lines
        .by_ref()
        .map_while(Result::ok)
        .any(|l| l.contains("listening as"));
    assert!(ready, "listener never registered");
    std::thread::spawn(move || lines.for_each(drop));
    child
}

fn stdout_lines(child: std::process::Child) -> (Option<i32>, Vec<String>) {
    let output = child.wait_with_output().expect("listener exits");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    (
        output.status.code(),
        text.lines().map(str::to_owned).collect(),
    )
}

#[test]
fn send_exit_codes_say_what_happened() {
    let relay = RelayProcess::spawn(&[]);
    let out = cli(&relay, &["send", "nobody", "hello"]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("nobody is registered"));

    let listen = listener(&relay, "tab-1", &["--count", "2"]);
    let out = cli(&relay, &["send", "tab-1", "50% done"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let out = cli(
        &relay,
        &["send", "--json", "tab-1", r#"{"step": 2, "of": 4}"#],
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let (code, lines) = stdout_lines(listen);
    assert_eq!(code, Some(0));
    assert_eq!(lines, ["50% done", r#"{"step":2,"of":4}"#]);

    let out = cli(&relay, &["send", "--json", "tab-1", "{not json"]);
    assert_eq!(out.status.code(), Some(1));
    let out = cli(&relay, &["send", "", "x"]);
    assert_eq!(out.status.code(), Some(1), "an empty key is rejected");
}

#[test]
fn an_unreachable_relay_exits_4() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let out = Command::new(workspace_binary("notify-relay-client"))
        .args([
            "--url",
            &format!("ws://127.0.0.1:{port}/"),
            "send",
            "k",
            "x",
        ])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach the relay"));
}

#[test]
fn send_dash_streams_standard_input_over_one_connection() {
    let relay = RelayProcess::spawn(&[]);
    let listen = listener(&relay, "job-7", &["--count", "3"]);
    let mut send = Command::new(workspace_binary("notify-relay-client"))
        .args(["send", "job-7", "-"])
        .env("NOTIFY_RELAY_URL", relay.url())
        .stdin(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("send runs");
    let mut stdin = send.stdin.take().expect("stdin");
    writeln!(stdin, "step 1\nstep 2\nstep 3").expect("write");
    drop(stdin);
    assert_eq!(send.wait().expect("send exits").code(), Some(0));
    let (code, lines) = stdout_lines(listen);
    assert_eq!(code, Some(0));
    assert_eq!(lines, ["step 1", "step 2", "step 3"]);
    // One connection for the whole stream (plus the listener's).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let (_, _, metrics) = rt.block_on(common::http_request(relay.addr, "GET", "/metrics"));
    assert_eq!(
        common::metric(&metrics, "notify_relay_connections_opened_total"),
        2.0
    );
}

#[test]
fn listen_timeout_exits_5() {
    let relay = RelayProcess::spawn(&[]);
    let out = cli(
        &relay,
        &["listen", "quiet", "--count", "1", "--timeout", "300ms"],
    );
    assert_eq!(out.status.code(), Some(5), "{out:?}");
}

#[test]
fn listen_reconnects_and_registers_again_after_a_relay_restart() {
    let mut relay = RelayProcess::spawn(&[]);
    let port = relay.addr.port().to_string();
    let listen = listener(&relay, "survivor", &["--count", "2", "--timeout", "30s"]);
    assert_eq!(
        cli(&relay, &["send", "survivor", "before"]).status.code(),
        Some(0)
    );

    relay.signal("TERM");
    assert_eq!(relay.wait_exit(Duration::from_secs(10)), Some(0));
    // The positional PORT (as in `notify-relay 8765`) overrides the helper's --port 0.
    let relay = RelayProcess::spawn(&[&port]);
    // Deliver once the listener is back: until then the relay says nobody is there.
    let deadline = std::time::Instant::now() + common::DEADLINE;
    loop {
        let out = cli(&relay, &["send", "survivor", "after"]);
        if out.status.code() == Some(0) {
            break;
        }
        assert_eq!(out.status.code(), Some(3), "{out:?}");
        assert!(
            std::time::Instant::now() < deadline,
            "listener never came back"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (code, lines) = stdout_lines(listen);
    assert_eq!(code, Some(0));
    assert_eq!(lines, ["before", "after"]);
}
