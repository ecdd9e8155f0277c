//! examples/example.html in a real headless Chromium (Debian's), driven by
//! tests/browser/example.test.mjs through playwright-core, against the real relay and
//! notify-relay-client binaries. scripts/test.sh installs chromium and playwright-core.

mod common;

use std::path::Path;
use std::process::Command;

#[test]
fn example_page_receives_notifications_and_survives_a_relay_restart() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let tests = root.join("tests/browser");
    assert!(
        tests.join("node_modules/playwright-core").exists(),
        "playwright-core is not installed: run scripts/test.sh (or npm install in tests/browser)"
    );
    let screenshot = root.join("target/browser-example.png");
    let output = Command::new("node")
        .arg(tests.join("example.test.mjs"))
        .current_dir(&tests)
        .env("RELAY_BIN", env!("CARGO_BIN_EXE_notify-relay"))
        .env(
            "CLIENT_BIN",
            common::workspace_binary("notify-relay-client"),
        )
        .env("PAGE", root.join("examples/example.html"))
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
