//! bench/scaleout.py, the cross-relay measurement, from a clone: every scenario runs with
//! tiny counts (`--smoke`: the PUBLISH floor with redis-benchmark, one relay, two relays
//! on one Redis saturated and paced, idle connections with and without Redis) and the
//! figures and the targets come out; what it needs is named before anything starts; and
//! every process it started is stopped, pass or fail.
//!
//! scripts/test.sh installs redis-server (and redis-tools: redis-cli, redis-benchmark).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The folder of this build's binaries (no release build).
fn bin_dir() -> PathBuf {
    common::workspace_binary("notify-relay-bench");
    Path::new(env!("CARGO_BIN_EXE_notify-relay"))
        .parent()
        .expect("target dir")
        .to_path_buf()
}

/// The python3 interpreter itself (not a shim that needs PATH): the script may be given
/// another PATH.
fn python3() -> PathBuf {
    let out = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .expect("python3 runs");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

fn scaleout(bin_dir: &Path, args: &[&str], path: Option<&Path>) -> Output {
    let mut command = Command::new(python3());
    command
        .arg(root().join("bench/scaleout.py"))
        .arg("--bin-dir")
        .arg(bin_dir)
        .args(args);
    if let Some(path) = path {
        command.env("PATH", path);
    }
    command.output().expect("python3 runs bench/scaleout.py")
}

/// The processes the script says it started (`started TITLE (pid N)`), each checked to
/// be gone; any still running is killed, then the test fails.
fn assert_all_stopped(stderr: &str) -> usize {
    let pids: Vec<u32> = stderr
        .lines()
        .filter_map(|line| line.split_once("(pid ")?.1.split_once(')')?.0.parse().ok())
        .collect();
    let running: Vec<u32> = pids
        .iter()
        .copied()
        .filter(|pid| Path::new(&format!("/proc/{pid}/exe")).exists())
        .collect();
    for pid in &running {
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
    }
    assert!(running.is_empty(), "still running: {running:?}\n{stderr}");
    pids.len()
}

#[test]
fn the_smoke_run_measures_every_scenario_and_stops_what_it_started() {
    let doc = std::fs::read_to_string(root().join("docs/SCALING.md")).expect("SCALING.md");
    let out = scaleout(&bin_dir(), &["--smoke"], None);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    // Two floors with a redis-server each; one relay three times; two relays and a
    // redis-server three times.
    assert_eq!(assert_all_stopped(&stderr), 2 + 3 + 9, "{stderr}");
    for shown in [
        "| bare PUBLISH, `redis-benchmark -P 1`, one subscriber | Redis CPU µs per PUBLISH",
        "| PUBLISH, `redis-benchmark -P 16` (reference) |",
        "| one relay, no Redis, saturated | delivered msgs/s |",
        "| relay A → Redis → relay B, saturated | delivered msgs/s |",
        "| one relay, no Redis, 200 msg/s |",
        "| relay A → Redis → relay B, 200 msg/s |",
        "| 100 idle connections, distinct keys, one relay, no Redis |",
        "| 100 idle connections, distinct keys, on relay B of two on one Redis |",
        "| A + B + Redis CPU µs per message |",
        "| Redis CPU, % of a core (INFO cpu) |",
        "| Redis CPU per cross-relay message, saturated ÷ bare PUBLISH (-P 1) | ≤ 2x |",
        "| Redis CPU per cross-relay message at 200 msg/s ÷ bare PUBLISH (-P 1) | ≤ 2x |",
        "| CPU per cross-relay message, relay A + relay B + Redis ÷ one relay's, saturated | ≤ 4x |",
        "| cross-relay p99 ÷ one relay's p99, at 200 msg/s | ≤ 2x |",
        "| 100 idle connections with Redis: Redis CPU | ≤ 0.3% |",
        "| 100 idle connections with Redis: their relay's CPU | ≤ 0.3% |",
        "| `evalsha` |",
        "<!-- scaleout:start -->",
    ] {
        assert!(stdout.contains(shown), "{shown:?} not in:\n{stdout}");
    }
    // Every ratio measured, none missing; the doc left alone.
    assert!(!stdout.contains("not measured"), "{stdout}");
    assert_eq!(
        std::fs::read_to_string(root().join("docs/SCALING.md")).expect("SCALING.md"),
        doc
    );
}

#[test]
fn a_failing_load_generator_stops_redis_and_the_relays() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::os::unix::fs::symlink(
        env!("CARGO_BIN_EXE_notify-relay"),
        dir.path().join("notify-relay"),
    )
    .expect("symlink");
    let bench = dir.path().join("notify-relay-bench");
    std::fs::write(&bench, "#!/bin/sh\necho 'the bench broke' >&2\nexit 3\n").expect("write");
    std::fs::set_permissions(&bench, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let out = scaleout(dir.path(), &["--smoke", "--only", "cross-saturated"], None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("exited with 3 before mark start") && stderr.contains("the bench broke"),
        "{stderr}"
    );
    // redis-server, relay A and relay B.
    assert_eq!(assert_all_stopped(&stderr), 3, "{stderr}");
}

#[test]
fn what_is_missing_is_named_before_anything_starts() {
    let empty = tempfile::tempdir().expect("tempdir");
    // Neither the binaries nor redis-server and redis-benchmark (an empty PATH).
    let out = scaleout(empty.path(), &["--smoke"], Some(empty.path()));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let canonical = empty.path().canonicalize().expect("canonical");
    let dir = canonical.display();
    for missing in [
        format!("{dir}/notify-relay (build: cargo build --release"),
        format!("{dir}/notify-relay-bench (build:"),
        "redis-server (Debian: apt-get install redis-server)".to_string(),
        "redis-benchmark (Debian: apt-get install redis-tools)".to_string(),
    ] {
        assert!(stderr.contains(&missing), "{missing:?} not in:\n{stderr}");
    }
    assert!(!stderr.contains("started"), "{stderr}");
}

#[test]
fn an_unknown_scenario_is_refused() {
    let out = scaleout(&bin_dir(), &["--only", "cross-saturated,nginx"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown scenario 'nginx'"));
}
