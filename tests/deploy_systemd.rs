//! systemd/notify-relay.service: `systemd-analyze verify` accepts it, its hardening
//! scores as "OK" exposure, its stop timeout outlasts the drain, and the example
//! environment file names only settings the relay has.

mod common;

use std::path::Path;
use std::process::Command;

use common::rewrite;

fn shipped(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("systemd")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The unit with ExecStart pointing at the built binary (verify checks it exists).
fn unit_for_this_build(dir: &Path) -> std::path::PathBuf {
    let unit = rewrite(
        &shipped("notify-relay.service"),
        "ExecStart=/usr/local/bin/notify-relay",
        &format!("ExecStart={}", env!("CARGO_BIN_EXE_notify-relay")),
    );
    let path = dir.join("notify-relay.service");
    std::fs::write(&path, unit).expect("write unit");
    path
}

#[test]
fn systemd_analyze_verify_accepts_the_unit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let unit = unit_for_this_build(dir.path());
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
        .expect("systemd-analyze runs (scripts/test.sh installs systemd)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "verify failed:\n{stderr}");
    assert!(
        !stderr.contains("notify-relay.service"),
        "verify warned about the unit:\n{stderr}"
    );
}

#[test]
fn the_unit_is_hardened() {
    let dir = tempfile::tempdir().expect("tempdir");
    let unit = unit_for_this_build(dir.path());
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes"])
        .arg(&unit)
        .output()
        .expect("systemd-analyze runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let level: f64 = text
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for notify-relay.service:")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{text}"));
    assert!(
        level <= 2.0,
        "exposure {level} (systemd calls <= 2.0 'OK'):\n{text}"
    );
    let shipped = shipped("notify-relay.service");
    for directive in [
        "Restart=always",
        "DynamicUser=yes",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "CapabilityBoundingSet=\n",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "LimitNOFILE=1048576",
    ] {
        assert!(shipped.contains(directive), "missing {directive:?}");
    }
}

#[test]
fn stop_timeout_outlasts_the_drain() {
    let unit = shipped("notify-relay.service");
    let stop: u64 = unit
        .lines()
        .find_map(|l| l.strip_prefix("TimeoutStopSec="))
        .and_then(|v| v.trim().parse().ok())
        .expect("TimeoutStopSec in seconds");
    let drain = notify_relay::config::DEFAULT_DRAIN_TIMEOUT.as_secs();
    assert!(
        stop > drain,
        "TimeoutStopSec={stop} must exceed the {drain}s drain"
    );
}

#[test]
fn the_environment_file_names_real_settings() {
    let help = Command::new(env!("CARGO_BIN_EXE_notify-relay"))
        .arg("--help")
        .output()
        .expect("notify-relay --help");
    let help = String::from_utf8_lossy(&help.stdout);
    let env = shipped("notify-relay.env");
    let mut named = 0;
    for line in env.lines() {
        let line = line.trim_start_matches(['#', ' ']);
        let Some((name, _)) = line.split_once('=') else {
            continue;
        };
        if name.starts_with("NOTIFY_RELAY_") {
            assert!(
                help.contains(&format!("env: {name}=")),
                "{name} is not a setting"
            );
            named += 1;
        }
    }
    assert!(named >= 5, "the example should show the main settings");
}
