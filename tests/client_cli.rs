//! The notify-relay-client CLI against the real relay binary: exit codes, JSON, stdin
//! streaming, listening with --count and --timeout, reconnection after a restart, bad
//! URLs, watching presence, and a clean close handshake on every way out (the relay
//! counts no reset).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{workspace_binary, KillOnDrop, RelayProcess};

fn cli(relay: &RelayProcess, args: &[&str]) -> Output {
    Command::new(workspace_binary("notify-relay-client"))
        .args(args)
        .env("NOTIFY_RELAY_URL", relay.url())
        .output()
        .expect("notify-relay-client runs")
}

/// Starts `listen UUID` with extra args; returns it once it has registered.
fn listener(relay: &RelayProcess, uuid: &str, extra: &[&str]) -> KillOnDrop {
    started(relay, &["listen", uuid], extra, "listening as")
}

/// Starts the CLI with `args` and `extra`; returns it once stderr said `ready`.
fn started(relay: &RelayProcess, args: &[&str], extra: &[&str], ready: &str) -> KillOnDrop {
    let mut child = KillOnDrop::new(
        Command::new(workspace_binary("notify-relay-client"))
            .args(args)
            .args(extra)
            .env("NOTIFY_RELAY_URL", relay.url())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("listener runs"),
    );
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    // "listening as ..." (or "watching ...") is printed once the relay confirmed.
    let confirmed = lines
        .by_ref()
        .map_while(Result::ok)
        .any(|l| l.contains(ready));
    assert!(confirmed, "never got to {ready:?}");
    std::thread::spawn(move || lines.for_each(drop));
    child
}

fn stdout_lines(child: KillOnDrop) -> (Option<i32>, Vec<String>) {
    let output = child
        .into_inner()
        .wait_with_output()
        .expect("listener exits");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    (
        output.status.code(),
        text.lines().map(str::to_owned).collect(),
    )
}

#[test]
fn watch_prints_the_state_then_one_line_per_change() {
    let relay = RelayProcess::spawn(&[]);
    let watcher = started(
        &relay,
        &["watch", "w-one", "w-two"],
        &["--count", "4", "--timeout", "20s"],
        "watching 2 key(s)",
    );
    let member = listener(&relay, "w-one", &["--count", "1"]);
    assert!(cli(&relay, &["send", "w-one", "bye"]).status.success());
    assert_eq!(stdout_lines(member).0, Some(0));
    let (code, lines) = stdout_lines(watcher);
    assert_eq!(code, Some(0), "{lines:?}");
    assert_eq!(
        lines,
        [
            "w-one offline 0",
            "w-two offline 0",
            "w-one online 1",
            "w-one offline 0"
        ]
    );
    let out = cli(&relay, &["watch", "--json", "--count", "1", "w-json"]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        r#"{"presence":"w-json","online":false,"connections":0}"#
    );
}

#[test]
fn send_exit_codes_say_what_happened() {
    let relay = RelayProcess::spawn(&[]);
    let out = cli(&relay, &["send", "nobody", "hello"]);
    assert_eq!(out.status.code(), Some(6), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("kept for the next registration"));
    // A relay that keeps nothing (streams off): the message is lost.
    let forgetful = RelayProcess::spawn(&["--buffer-ttl", "0s"]);
    let out = cli(&forgetful, &["send", "nobody", "hello"]);
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
    // Delivered live if the listener is back already, else kept for it: either way it
    // arrives once (the new relay is a new epoch: the listener resumes across a gap).
    let out = cli(&relay, &["send", "survivor", "after"]);
    assert!(matches!(out.status.code(), Some(0 | 6)), "{out:?}");
    let (code, lines) = stdout_lines(listen);
    assert_eq!(code, Some(0));
    assert_eq!(lines, ["before", "after"]);
}

#[test]
fn a_url_that_is_not_ws_is_a_usage_error() {
    for (url, expected) in [
        ("http://127.0.0.1:8765/", "the scheme is http://"),
        ("notaurl", "is not a ws:// URL"),
        ("ws://", "is not a URL"),
        ("wss://", "is not a URL"),
    ] {
        let out = Command::new(workspace_binary("notify-relay-client"))
            .args(["--url", url, "send", "k", "x"])
            .output()
            .expect("runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{url}: {stderr}");
        assert!(stderr.contains(expected), "{url}: {stderr}");
        assert!(stderr.contains("ws://HOST:PORT/"), "{stderr}");
    }
    // The environment variable is checked the same way.
    let out = Command::new(workspace_binary("notify-relay-client"))
        .args(["listen", "k"])
        .env("NOTIFY_RELAY_URL", "http://127.0.0.1:8765/")
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

fn closed_total(metrics: &str, reason: &str) -> f64 {
    common::metric(
        metrics,
        &format!("notify_relay_connections_closed_total{{reason=\"{reason}\"}}"),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn every_way_out_closes_the_connection_cleanly() {
    let relay = RelayProcess::spawn(&[]);
    let runs = [
        // Nobody there (kept), rejected after connecting, not JSON.
        (vec!["send", "anyone", "x"], 6),
        (vec!["send", "", "x"], 1),
        (vec!["send", "--json", "anyone", "{nope"], 1),
        // --timeout expiry while listening, and --count reached.
        (vec!["listen", "quiet", "--timeout", "300ms"], 5),
    ];
    for (args, code) in &runs {
        let out = cli(&relay, args);
        assert_eq!(out.status.code(), Some(*code), "{args:?}: {out:?}");
    }
    let listen = listener(&relay, "counted", &["--count", "1"]);
    assert_eq!(
        cli(&relay, &["send", "counted", "hi"]).status.code(),
        Some(0)
    );
    assert_eq!(stdout_lines(listen).0, Some(0));
    // Standard input, ended.
    let mut streamed = Command::new(workspace_binary("notify-relay-client"))
        .args(["send", "anyone", "-"])
        .env("NOTIFY_RELAY_URL", relay.url())
        .stdin(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("send runs");
    writeln!(streamed.stdin.take().expect("stdin"), "one").expect("write");
    assert_eq!(streamed.wait().expect("exits").code(), Some(6));
    // Interrupted while listening.
    let listen = listener(&relay, "interrupted", &[]);
    let signal = Command::new("kill")
        .args(["-INT", &listen.id().to_string()])
        .status()
        .expect("kill");
    assert!(signal.success());
    assert_eq!(stdout_lines(listen).0, Some(130));

    // 4 + 2 (listener, sender) + 1 + 1 connections, all closed by their clients.
    let opened = (runs.len() + 4) as f64;
    let metrics = common::within("every CLI connection counted as closed", async {
        loop {
            let (_, _, text) = common::http_request(relay.addr, "GET", "/metrics").await;
            if common::metric(&text, "notify_relay_connections") == 0.0 {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(
        common::metric(&metrics, "notify_relay_connections_opened_total"),
        opened
    );
    assert_eq!(closed_total(&metrics, "reset"), 0.0, "{metrics}");
    assert_eq!(closed_total(&metrics, "client_close"), opened, "{metrics}");
}
