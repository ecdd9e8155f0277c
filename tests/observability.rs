//! The observability kit: examples/prometheus/alerts.yml passes `promtool check rules`
//! and its unit tests (tests/prometheus/alerts_test.yml), examples/grafana/notify-relay.json
//! is a dashboard whose every query names a metric, and every metric the dashboard and the
//! rules name exists on /metrics of a running relay. scripts/test.sh provides promtool
//! (Debian's prometheus package, unpacked into target/tools); these tests fail without it.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::Relay;

const DASHBOARD: &str = "examples/grafana/notify-relay.json";
const ALERTS: &str = "examples/prometheus/alerts.yml";
const ALERT_TESTS: &str = "tests/prometheus/alerts_test.yml";
/// Where scripts/test.sh unpacks promtool when it is not installed.
const UNPACKED_PROMTOOL: &str = "target/tools/prometheus/usr/bin/promtool";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// promtool: $PROMTOOL, the one on PATH, or the one scripts/test.sh unpacked.
fn promtool() -> PathBuf {
    if let Some(path) = std::env::var_os("PROMTOOL") {
        return PathBuf::from(path);
    }
    let unpacked = root().join(UNPACKED_PROMTOOL);
    if unpacked.exists() {
        return unpacked;
    }
    PathBuf::from("promtool")
}

fn run_promtool(args: &[&str]) -> String {
    let output = Command::new(promtool())
        .args(args)
        .current_dir(root())
        .output()
        .expect("promtool runs (scripts/test.sh unpacks Debian's prometheus package)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

/// Every `notify_relay_*` metric name a text mentions.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(start) = rest.find("notify_relay_") {
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

/// The metric families (sample names) /metrics exposes.
fn exposed(metrics: &str) -> BTreeSet<String> {
    metrics
        .lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .filter_map(|line| line.split(['{', ' ']).next())
        .map(str::to_string)
        .collect()
}

#[test]
fn promtool_accepts_the_alert_rules() {
    let text = run_promtool(&["check", "rules", ALERTS]);
    assert!(text.contains("SUCCESS"), "{text}");
}

#[test]
fn alert_rules_fire_on_trouble_and_stay_quiet_otherwise() {
    let text = run_promtool(&["test", "rules", ALERT_TESTS]);
    assert!(text.contains("SUCCESS"), "{text}");
}

#[test]
fn dashboard_panels_each_query_relay_metrics() {
    let dashboard: serde_json::Value = serde_json::from_str(&read(DASHBOARD)).expect("JSON");
    assert_eq!(dashboard["uid"], "notify-relay");
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.len() >= 10, "{} panels", panels.len());
    for panel in panels {
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{}: no query", panel["title"]);
        for target in targets {
            let expr = target["expr"].as_str().expect("expr");
            assert!(
                expr.contains("notify_relay_") || expr.starts_with("up{"),
                "{}: {expr}",
                panel["title"]
            );
        }
    }
}

#[tokio::test]
async fn every_metric_the_kit_names_is_on_metrics() {
    let relay = Relay::start().await;
    let (status, _, metrics) = relay.get("/metrics").await;
    assert_eq!(status, 200);
    let exposed = exposed(&metrics);
    for (file, names) in [
        (DASHBOARD, metric_names(&read(DASHBOARD))),
        (ALERTS, metric_names(&read(ALERTS))),
    ] {
        assert!(names.len() >= 5, "{file} names {names:?}");
        let missing: Vec<_> = names.difference(&exposed).collect();
        assert!(
            missing.is_empty(),
            "{file} names metrics /metrics does not have: {missing:?}"
        );
    }
    relay.stop().await;
}
