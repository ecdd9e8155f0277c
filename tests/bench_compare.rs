//! bench/compare.py, the benchmark comparison, from a clone: it names what is missing
//! before starting anything, and each of its servers (the relay and the peers in
//! bench/peers/) starts, is the process listening on its port, and relays messages
//! (`--smoke`, a few messages through the real load generator; no figures, no doc).
//!
//! scripts/test.sh installs the Python `websockets` library and the `ws` npm package
//! (`npm ci --omit=optional` in bench/peers). It does not install uWebSockets.js, a
//! benchmark-only download: the uWS peer is checked too once `npm ci` has run there.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// compare.py with the binaries of this build (no release build).
fn compare(args: &[&str]) -> Output {
    common::workspace_binary("notify-relay-bench");
    let bin_dir: PathBuf = Path::new(env!("CARGO_BIN_EXE_notify-relay"))
        .parent()
        .expect("target dir")
        .to_path_buf();
    Command::new("python3")
        .arg(root().join("bench/compare.py"))
        .arg("--bin-dir")
        .arg(bin_dir)
        .args(args)
        .output()
        .expect("python3 runs bench/compare.py")
}

#[test]
fn a_missing_peer_is_named_before_anything_starts() {
    let empty = tempfile::tempdir().expect("tempdir");
    let peers = empty.path().to_str().expect("utf-8 path");
    let out = compare(&[
        "--smoke",
        "--peers",
        peers,
        "--servers",
        "relay,ws,original",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    for missing in [
        format!("Node ws: the peer {peers}/ws_relay.js"),
        format!("Node ws: the npm package ws in {peers}/node_modules (run: cd {peers} && npm ci)"),
        format!("python original: the peer {peers}/original.py"),
    ] {
        assert!(stderr.contains(&missing), "{missing:?} not in:\n{stderr}");
    }
    assert!(
        !stderr.contains("notify-relay:"),
        "the relay is there:\n{stderr}"
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).is_empty(),
        "nothing ran"
    );
}

#[test]
fn an_unknown_server_is_refused() {
    let out = compare(&["--smoke", "--servers", "relay,nginx"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown server 'nginx'"));
}

#[test]
fn every_server_starts_listens_and_relays() {
    let peers = root().join("bench/peers");
    assert!(
        peers.join("node_modules/ws").is_dir(),
        "the ws npm package is not installed: run scripts/test.sh \
         (or npm ci --omit=optional in bench/peers)"
    );
    let mut servers = vec![
        ("relay", "notify-relay"),
        ("relay-nostreams", "notify-relay --buffer-ttl 0s"),
        ("ws", "Node ws"),
        ("original", "python original"),
    ];
    if peers
        .join("node_modules/@trufflesuite/uws-js-unofficial")
        .is_dir()
    {
        servers.push(("uws", "uWS.js"));
    }
    let slugs: Vec<&str> = servers.iter().map(|(slug, _)| *slug).collect();
    let out = compare(&["--smoke", "--servers", &slugs.join(",")]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (_, title) in servers {
        assert!(
            stdout.contains(&format!("smoke: {title} relayed 20 message(s)")),
            "{title}:\n{stdout}"
        );
    }
}
