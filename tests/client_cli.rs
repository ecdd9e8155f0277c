//! The notify-relay-client CLI against the real relay binary: exit codes, JSON, stdin
//! streaming, listening with --count and --timeout, reconnection after a restart, bad
//! URLs, watching presence, and a clean close handshake on every way out (the relay
//! counts no reset).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{workspace_binary, KillOnDrop, RelayProcess, DEADLINE};

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
    started_with_stderr(relay, args, extra, ready).0
}

/// [`started`], with the rest of the CLI's stderr (complete once it exited).
fn started_with_stderr(
    relay: &RelayProcess,
    args: &[&str],
    extra: &[&str],
    ready: &str,
) -> (KillOnDrop, std::thread::JoinHandle<String>) {
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
    let rest =
        std::thread::spawn(move || lines.map_while(Result::ok).collect::<Vec<_>>().join("\n"));
    (child, rest)
}

/// Waits (with the deadline) until `child` exits by itself; its exit code.
fn exit_code(mut child: KillOnDrop) -> Option<i32> {
    let start = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status.code();
        }
        assert!(start.elapsed() < DEADLINE, "the CLI did not exit");
        std::thread::sleep(Duration::from_millis(10));
    }
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
    assert_eq!(relay.metric("notify_relay_connections_opened_total"), 2.0);
}

#[test]
fn listen_without_count_listens_for_its_timeout_then_exits_0() {
    let relay = RelayProcess::spawn(&[]);
    let out = cli(&relay, &["listen", "quiet", "--timeout", "1s"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let out = cli(&relay, &["watch", "quiet", "--timeout", "1s"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "quiet offline 0\n");
    // Never connected in that time: the listen did not happen.
    let out = Command::new(workspace_binary("notify-relay-client"))
        .args(["listen", "quiet", "--timeout", "1s"])
        .env(
            "NOTIFY_RELAY_URL",
            format!("ws://127.0.0.1:{}/", common::free_port()),
        )
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(5), "{out:?}");
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

#[test]
fn a_bad_since_or_json_is_a_usage_error_before_connecting() {
    let relay = RelayProcess::spawn(&[]);
    let out = cli(&relay, &["send", "--json", "k", "{bad"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(stderr.contains("not JSON"), "{stderr}");
    // (--timeout bounds a CLI that accepts the value and listens.)
    for since in ["lastest", "", "k3x9:", ":5", "k3x9:x", "k 3:1", "k3x9:1:2"] {
        let out = cli(
            &relay,
            &["listen", "k", "--since", since, "--timeout", "2s"],
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{since:?}: {stderr}");
        assert!(
            stderr.contains("invalid value") && stderr.contains("--since"),
            "{since:?}: {stderr}"
        );
        assert!(stderr.contains("earliest"), "says what is valid: {stderr}");
    }
    assert_eq!(relay.metric("notify_relay_connections_opened_total"), 0.0);
}

#[test]
fn listen_since_takes_earliest_latest_and_a_cursor_it_printed() {
    let relay = RelayProcess::spawn(&[]);
    assert_eq!(
        cli(&relay, &["send", "resumed", "one"]).status.code(),
        Some(6)
    );
    let out = cli(&relay, &["listen", "resumed", "--cursors", "--count", "1"]);
    let first = String::from_utf8_lossy(&out.stdout).into_owned();
    let (cursor, text) = first.trim_end().split_once('\t').expect("CURSOR\tTEXT");
    assert_eq!(text, "one");
    assert_eq!(
        cli(&relay, &["send", "resumed", "two"]).status.code(),
        Some(6)
    );
    for (since, expected) in [("earliest", "one"), (cursor, "two")] {
        let out = cli(
            &relay,
            &["listen", "resumed", "--since", since, "--count", "1"],
        );
        assert_eq!(out.status.code(), Some(0), "{since}: {out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), expected);
        assert!(
            !String::from_utf8_lossy(&out.stderr).contains("gap"),
            "{out:?}"
        );
    }
    let listen = listener(&relay, "resumed", &["--since", "latest", "--count", "1"]);
    assert_eq!(
        cli(&relay, &["send", "resumed", "three"]).status.code(),
        Some(0)
    );
    assert_eq!(stdout_lines(listen), (Some(0), vec!["three".to_owned()]));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_closed_output_ends_listen_and_watch_quietly_with_a_close_handshake() {
    let relay = RelayProcess::spawn(&[]);
    // `listen K | head -1`, then another message: the CLI ends (at once, or at the latest
    // when it writes that message), so the send finds it or the key empty.
    let listen = started_with_stderr(&relay, &["listen", "piped"], &[], "listening as");
    let first = cli(&relay, &["send", "piped", "first"]);
    assert_eq!(first.status.code(), Some(0));
    ends_quietly_after_one_line(listen, "first", || {
        let second = cli(&relay, &["send", "piped", "second"]);
        assert!(matches!(second.status.code(), Some(0 | 6)), "{second:?}");
    });
    // And without another message: it does not wait for one.
    let watch = started_with_stderr(&relay, &["watch", "quiet"], &[], "watching");
    ends_quietly_after_one_line(watch, "quiet offline 0", || ());

    let metrics = metrics_once_all_closed(&relay).await;
    assert_eq!(closed_total(&metrics, "reset"), 0.0, "{metrics}");
    assert_eq!(closed_total(&metrics, "client_close"), 4.0, "{metrics}");
}

/// Reads `line` from the CLI's stdout and closes the pipe, as `head -1` does, runs
/// `then`, and checks that the CLI exits 0 by itself without a panic.
fn ends_quietly_after_one_line(
    (mut child, stderr): (KillOnDrop, std::thread::JoinHandle<String>),
    line: &str,
    then: impl FnOnce(),
) {
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut read = String::new();
    stdout.read_line(&mut read).expect("read a line");
    assert_eq!(read.trim_end(), line);
    drop(stdout);
    then();
    assert_eq!(exit_code(child), Some(0));
    let stderr = stderr.join().expect("stderr");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// The relay's metrics once it has no connection left (waited for with the deadline).
async fn metrics_once_all_closed(relay: &RelayProcess) -> String {
    common::within("every CLI connection counted as closed", async {
        loop {
            let (_, _, text) = common::http_request(relay.addr, "GET", "/metrics").await;
            if common::metric(&text, "notify_relay_connections") == 0.0 {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
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
        // Nobody there (kept), rejected after connecting.
        (vec!["send", "anyone", "x"], 6),
        (vec!["send", "", "x"], 1),
        // --timeout expiry while listening, before and without a --count; --count reached.
        (
            vec!["listen", "quiet", "--count", "1", "--timeout", "300ms"],
            5,
        ),
        (vec!["listen", "quiet", "--timeout", "300ms"], 0),
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
    let metrics = metrics_once_all_closed(&relay).await;
    assert_eq!(
        common::metric(&metrics, "notify_relay_connections_opened_total"),
        opened
    );
    assert_eq!(closed_total(&metrics, "reset"), 0.0, "{metrics}");
    assert_eq!(closed_total(&metrics, "client_close"), opened, "{metrics}");
}
