//! The Python client library (clients/python, module `notify_relay`) against the real
//! relay: its pytest suite, run on this tree's copy of the module with this build's relay.
//! scripts/test.sh installs pytest and the package; this test fails, not skips, without
//! them, and fails when pytest collects no test (its exit status 5).

use std::path::Path;
use std::process::Command;

#[test]
fn python_client_pytest_suite_passes_against_the_real_relay() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let package = root.join("clients/python");
    let output = Command::new("python3")
        .args(["-m", "pytest", "-p", "no:cacheprovider", "-q", "-rfE"])
        .arg(package.join("tests"))
        .current_dir(&package)
        .env("NOTIFY_RELAY_BIN", env!("CARGO_BIN_EXE_notify-relay"))
        .env("PYTHONPATH", &package)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "pytest failed ({:?}; 5 means no tests were collected)\nstdout:\n{stdout}\nstderr:\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains(" passed"), "pytest ran nothing:\n{stdout}");
}
