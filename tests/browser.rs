//! The example pages in a real headless Chromium (Debian's), driven by the scripts in
//! tests/browser through playwright-core, against the real relay and notify-relay-client
//! binaries: examples/example.html (on the JS client, clients/js; its presence dot is an
//! EventSource on /presence/<KEY>) and examples/events.html (EventSource), served over HTTP
//! and opened from disk (file://); and the JS client under Node with the `ws` package.
//! scripts/test.sh installs chromium, playwright-core and ws.

mod common;

use std::path::Path;
use std::process::Command;

/// Runs `script` from tests/browser with node, the real binaries and `page`.
fn run_browser_script(script: &str, page: &str) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let tests = root.join("tests/browser");
    assert!(
        tests.join("node_modules/playwright-core").exists()
            && tests.join("node_modules/ws").exists(),
        "playwright-core or ws is not installed: run scripts/test.sh (or npm ci in tests/browser)"
    );
    let screenshot = root.join(format!("target/browser-{script}.png"));
    let output = Command::new("node")
        .arg(tests.join(script))
        .current_dir(&tests)
        .env("RELAY_BIN", env!("CARGO_BIN_EXE_notify-relay"))
        .env(
            "CLIENT_BIN",
            common::workspace_binary("notify-relay-client"),
        )
        .env("ROOT", root)
        .env("PAGE", root.join(page))
        .env("SCREENSHOT", &screenshot)
        .output()
        .expect("node runs");
    assert!(
        output.status.success(),
        "browser test failed\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn example_page_receives_notifications_resumes_and_retries_with_backoff() {
    run_browser_script("example.test.mjs", "examples/example.html");
}

#[test]
fn events_page_receives_through_eventsource_and_resumes_after_a_reload() {
    run_browser_script("events.test.mjs", "examples/events.html");
}

#[test]
fn js_client_under_node_publishes_resumes_and_reports_gaps() {
    run_browser_script("node.test.mjs", "clients/js/notify-relay.js");
}

#[test]
fn js_client_and_example_page_with_tokens_against_a_relay_with_access_control() {
    run_browser_script("auth.test.mjs", "examples/example.html");
}

#[test]
fn a_page_from_an_unlisted_origin_cannot_connect_in_chromium() {
    run_browser_script("origins.test.mjs", "tests/browser/origins.test.mjs");
}

#[test]
fn presence_streams_to_eventsource_and_the_example_page_shows_a_second_key_online() {
    run_browser_script("presence.test.mjs", "examples/example.html");
}

#[test]
fn example_pages_opened_from_disk_connect_and_receive() {
    run_browser_script("from_disk.test.mjs", "examples/example.html");
}
