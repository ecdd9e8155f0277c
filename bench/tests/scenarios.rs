//! Every scenario, small, against a real relay (in this process, so `--pid` is ours):
//! each finishes, loses nothing, and reports the figures the comparison reads.

use std::io::{BufRead, BufReader, Lines, Write};
use std::process::{Child, ChildStderr, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use notify_relay::state::RelayState;
use notify_relay::{Config, Server};
use serde_json::Value;

/// Starts a relay on 127.0.0.1:0 in a background runtime; returns its URL.
fn relay() -> String {
    relay_with_state().0
}

/// [`relay`], and its state, to read its counters.
fn relay_with_state() -> (String, Arc<RelayState>) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        runtime.block_on(async move {
            let server = Server::bind(Config::loopback_ephemeral()).expect("bind");
            tx.send((server.local_addr().expect("addr"), server.state()))
                .expect("send addr");
            let _ = server.run(std::future::pending()).await;
        });
    });
    let (addr, state) = rx.recv().expect("relay address");
    (format!("ws://{addr}/"), state)
}

fn bench(url: &str, args: &[&str]) -> Value {
    let pid = std::process::id().to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_notify-relay-bench"))
        .args(["--url", url, "--pid", &pid, "--json", "--max-time", "30s"])
        .args(args)
        .output()
        .expect("bench runs");
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[test]
fn throughput_delivers_everything_and_reports_server_cpu() {
    let url = relay();
    let r = bench(
        &url,
        &["throughput", "-r", "5", "-s", "2", "-n", "2000", "-w", "50"],
    );
    assert_eq!(r["sent"], 2000);
    assert_eq!(r["delivered"], 2000);
    assert_eq!(r["lost"], 0);
    assert!(r["delivered_per_s"].as_f64().expect("rate") > 0.0);
    assert!(r["server_cpu_us_per_msg"].is_number());
    assert!(
        r["latency_p99_us"].as_f64().expect("p99") >= r["latency_p50_us"].as_f64().expect("p50")
    );
}

#[test]
fn latency_sends_at_the_requested_rate() {
    let url = relay();
    let r = bench(
        &url,
        &[
            "latency",
            "--rate",
            "500",
            "--duration",
            "1s",
            "-r",
            "3",
            "-s",
            "2",
        ],
    );
    let sent = r["sent"].as_u64().expect("sent");
    assert!((450..=550).contains(&sent), "sent {sent} at 500/s for 1 s");
    assert_eq!(r["lost"], 0);
    assert!(r["latency_max_us"].is_number());
}

#[test]
fn idle_holds_registered_connections_and_measures_memory() {
    let url = relay();
    let r = bench(
        &url,
        &["idle", "-c", "200", "--hold", "100ms", "--sources", "2"],
    );
    assert_eq!(r["registered"], 200);
    assert_eq!(r["errors"], 0);
    assert_eq!(r["dropped_while_held"], 0);
    assert!(r["server_bytes_per_conn"].is_number());
}

#[test]
fn idle_with_a_message_each_reports_memory_before_and_after() {
    let url = relay();
    let r = bench(
        &url,
        &[
            "idle",
            "-c",
            "20",
            "--hold",
            "100ms",
            "--message-size",
            "64KiB",
        ],
    );
    assert_eq!(r["registered"], 20);
    assert_eq!(r["round_trip_errors"], 0);
    assert_eq!(r["dropped_while_held"], 0);
    assert_eq!(r["message_size"], 65536);
    assert!(r["server_bytes_per_conn_after_message"].is_number());
    assert!(r["after_message_vs_idle"].is_number());
}

#[test]
fn fanout_reaches_every_connection_under_the_key() {
    let url = relay();
    let r = bench(&url, &["fanout", "-k", "20", "-n", "50"]);
    assert_eq!(r["deliveries"], 1000);
    assert_eq!(r["lost"], 0);
}

#[test]
fn fanout_proves_its_registrations_with_a_few_probes_not_one_per_connection() {
    // The probes are ephemeral and the payloads are not, so the relay's ephemeral
    // deliveries are the setup's. One probe per connection to the shared key would be
    // K(K+1)/2 = 820 deliveries; proving each on its own key and then the moves is K
    // plus K per round, and a round is 2 s, so a few at most.
    let k = 40;
    let (url, state) = relay_with_state();
    let r = bench(&url, &["fanout", "-k", &k.to_string(), "-n", "10"]);
    assert_eq!(r["deliveries"], 10 * k);
    let probes = state.metrics.ephemeral_delivered.get();
    assert!(probes >= 2 * k, "{probes} probe deliveries");
    assert!(
        probes <= 6 * k,
        "{probes} probe deliveries for {k} connections"
    );
}

#[test]
fn churn_reports_a_peak_per_cycle() {
    let url = relay();
    let r = bench(&url, &["churn", "-c", "100", "--cycles", "3"]);
    assert_eq!(r["errors"], 0);
    assert_eq!(
        r["server_peak_rss_kib_by_cycle"].as_array().map(Vec::len),
        Some(3)
    );
}

#[test]
fn churn_with_watchers_counts_their_frames() {
    let url = relay();
    let r = bench(
        &url,
        &[
            "churn",
            "-c",
            "100",
            "--cycles",
            "2",
            "--keys",
            "10",
            "--watchers",
            "2",
        ],
    );
    assert_eq!(r["errors"], 0);
    assert_eq!(r["presence_changes"], 400);
    let frames = r["watcher_frames"].as_u64().expect("watcher_frames");
    assert!(frames > 0 && frames <= 2 * 400, "{frames}");
}

/// The bench with `--marks`, its standard input, output and error piped; killed if the
/// test fails first.
struct Marked {
    child: Child,
    stderr: Lines<BufReader<ChildStderr>>,
}

impl Marked {
    fn start(url: &str, args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_notify-relay-bench"))
            .args(["--url", url, "--json", "--max-time", "30s", "--marks"])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("bench runs");
        let stderr = BufReader::new(child.stderr.take().expect("stderr")).lines();
        Self { child, stderr }
    }

    /// Reads stderr up to the line `mark: NAME`; fails at its end.
    fn wait_for_mark(&mut self, name: &str) {
        let wanted = format!("mark: {name}");
        for line in self.stderr.by_ref() {
            if line.expect("stderr") == wanted {
                return;
            }
        }
        panic!("the bench ended before {wanted:?}");
    }

    /// Still running a while after the mark: it waits for the answer.
    fn assert_waits(&mut self) {
        std::thread::sleep(Duration::from_millis(300));
        assert!(
            self.child.try_wait().expect("try_wait").is_none(),
            "it went on"
        );
    }

    fn answer(&mut self) {
        let stdin = self.child.stdin.as_mut().expect("stdin");
        stdin
            .write_all(b"\n")
            .and_then(|()| stdin.flush())
            .expect("answer");
    }

    fn report(mut self) -> Value {
        let mut out = self.child.stdout.take().expect("stdout");
        let mut text = String::new();
        std::io::Read::read_to_string(&mut out, &mut text).expect("stdout");
        assert!(self.child.wait().expect("wait").success());
        serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}: {text}"))
    }
}

impl Drop for Marked {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn idle_with_marks_holds_until_each_mark_is_answered() {
    let (url, state) = relay_with_state();
    let mut bench = Marked::start(&url, &["idle", "-c", "30", "--hold", "50ms"]);
    bench.wait_for_mark("start");
    // Every connection is registered and held while the script takes its first sample.
    bench.assert_waits();
    assert_eq!(state.metrics.connections.get(), 30);
    bench.answer();
    bench.wait_for_mark("end");
    // Still held, well past --hold, until the script has taken its last sample.
    bench.assert_waits();
    assert_eq!(state.metrics.connections.get(), 30);
    bench.answer();
    let r = bench.report();
    assert_eq!(r["registered"], 30);
    assert_eq!(r["dropped_while_held"], 0);
}

#[test]
fn throughput_with_marks_goes_on_at_the_end_of_input() {
    let url = relay();
    let mut bench = Marked::start(&url, &["throughput", "-r", "3", "-s", "2", "-n", "300"]);
    bench.wait_for_mark("start");
    bench.assert_waits();
    drop(bench.child.stdin.take());
    bench.wait_for_mark("end");
    let r = bench.report();
    assert_eq!(r["delivered"], 300);
    assert_eq!(r["lost"], 0);
}

#[test]
fn refuses_targets_off_this_machine() {
    let out = Command::new(env!("CARGO_BIN_EXE_notify-relay-bench"))
        .args(["--url", "ws://192.0.2.1:8765/", "idle", "-c", "1"])
        .output()
        .expect("bench runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a loopback address"));
}
