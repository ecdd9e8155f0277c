//! The Debian package (`cargo deb`, [package.metadata.deb] in Cargo.toml): built from this
//! build's relay and client, inspected with `dpkg-deb -c` and `-I` (both binaries in
//! /usr/bin, the unit, /etc/default/notify-relay as a conffile, the docs, the system user
//! made in postinst), its unit checked against systemd/notify-relay.service and by
//! `systemd-analyze verify`, and unpacked with `dpkg-deb -x` into a scratch folder: its
//! README's links lead to files it carries, and its relay, started with the packaged
//! /etc/default/notify-relay as systemd reads it, serves on loopback only.
//! scripts/test.sh installs cargo-deb; this test fails, not skips, without it.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{free_port, rewrite, systemd_environment, RelayProcess};

/// The unit for a manual install, which the package's unit follows.
const MANUAL_UNIT: &str = "systemd/notify-relay.service";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs a command; its stdout, or a failure with everything it printed.
fn run(command: &mut Command) -> String {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// `cargo deb` on the relay and client this test suite built (the dev profile, no second
/// build; fast compression; `cargo build --workspace --bins` builds the client):
/// the path of the .deb in `out`.
fn build_deb(out: &Path) -> PathBuf {
    let relay = Path::new(env!("CARGO_BIN_EXE_notify-relay"));
    let profile = relay
        .parent()
        .and_then(Path::file_name)
        .and_then(|name| name.to_str())
        .expect("target/<profile>/notify-relay");
    let profile = if profile == "debug" { "dev" } else { profile };
    run(Command::new("cargo")
        .args([
            "deb",
            "--no-build",
            "--fast",
            "--profile",
            profile,
            "--output",
        ])
        .arg(out)
        .current_dir(root()));
    let mut debs: Vec<PathBuf> = std::fs::read_dir(out)
        .expect("read output")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "deb"))
        .collect();
    assert_eq!(debs.len(), 1, "one package in {}", out.display());
    debs.remove(0)
}

#[test]
fn the_deb_installs_the_daemon_unit_settings_user_and_docs_and_its_binary_serves() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let deb = build_deb(scratch.path());
    let name = deb.file_name().and_then(|n| n.to_str()).expect("name");
    assert!(name.starts_with("notify-relay_0."), "{name}");

    let contents = run(Command::new("dpkg-deb").arg("-c").arg(&deb));
    for (mode, path) in [
        ("-rwxr-xr-x", "./usr/bin/notify-relay"),
        ("-rwxr-xr-x", "./usr/bin/notify-relay-client"),
        (
            "-rw-r--r--",
            "./usr/lib/systemd/system/notify-relay.service",
        ),
        ("-rw-r--r--", "./etc/default/notify-relay"),
        ("-rw-r--r--", "./usr/share/doc/notify-relay/README.md"),
        (
            "-rw-r--r--",
            "./usr/share/doc/notify-relay/docs/PROTOCOL.md",
        ),
        ("-rw-r--r--", "./usr/share/doc/notify-relay/copyright"),
        (
            "-rw-r--r--",
            "./usr/share/doc/notify-relay/changelog.Debian.gz",
        ),
        (
            "-rw-r--r--",
            "./usr/share/doc/notify-relay/examples/grafana/notify-relay.json",
        ),
        (
            "-rw-r--r--",
            "./usr/share/doc/notify-relay/examples/prometheus/alerts.yml",
        ),
    ] {
        assert!(
            contents
                .lines()
                .any(|line| line.starts_with(mode) && line.ends_with(path)),
            "{mode} {path} not in the package:\n{contents}"
        );
    }

    let info = run(Command::new("dpkg-deb").arg("-I").arg(&deb));
    assert!(info.contains("Package: notify-relay"), "{info}");
    assert!(info.contains("Section: net"), "{info}");
    let depends = info
        .lines()
        .find(|line| line.trim_start().starts_with("Depends:"))
        .unwrap_or_else(|| panic!("no Depends:\n{info}"));
    assert!(depends.contains("adduser"), "{depends}");
    let conffiles = run(Command::new("dpkg-deb")
        .arg("-I")
        .arg(&deb)
        .arg("conffiles"));
    assert_eq!(conffiles.trim(), "/etc/default/notify-relay");
    let postinst = run(Command::new("dpkg-deb").arg("-I").arg(&deb).arg("postinst"));
    assert!(
        postinst.contains("adduser --system --group"),
        "postinst creates the system user:\n{postinst}"
    );
    assert!(
        postinst.contains("deb-systemd-helper enable notify-relay.service"),
        "postinst enables the unit:\n{postinst}"
    );

    let unpacked = scratch.path().join("root");
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked));
    let binary = unpacked.join("usr/bin/notify-relay");
    let version = run(Command::new(&binary).arg("--version"));
    assert_eq!(
        version.trim(),
        format!("notify-relay {}", env!("CARGO_PKG_VERSION"))
    );
    // The client that README's migration table puts in place of the original client.py.
    let client = run(Command::new(unpacked.join("usr/bin/notify-relay-client")).arg("--version"));
    assert!(client.starts_with("notify-relay-client "), "{client}");

    // /etc/default/notify-relay names only settings the packaged relay has.
    let help = run(Command::new(&binary).arg("--help"));
    let defaults =
        std::fs::read_to_string(unpacked.join("etc/default/notify-relay")).expect("defaults");
    let mut named = 0;
    for line in defaults.lines() {
        let setting = line.trim_start_matches(['#', ' ']);
        if let Some((name, _)) = setting.split_once('=') {
            if name.starts_with("NOTIFY_RELAY_") {
                named += 1;
                assert!(help.contains(&format!("env: {name}=")), "unknown {name}");
            }
        }
    }
    assert!(named >= 5, "{defaults}");

    // The packaged unit is the manual one, run as the package's user from its paths.
    let packaged_unit =
        std::fs::read_to_string(unpacked.join("usr/lib/systemd/system/notify-relay.service"))
            .expect("unit");
    let manual_unit = std::fs::read_to_string(root().join(MANUAL_UNIT)).expect("manual unit");
    let service_section = |unit: &str| unit[unit.find("[Unit]").expect("[Unit]")..].to_owned();
    let expected = rewrite(
        &rewrite(
            &rewrite(
                &rewrite(
                    &service_section(&manual_unit),
                    "EnvironmentFile=-/etc/notify-relay/notify-relay.env",
                    "EnvironmentFile=-/etc/default/notify-relay",
                ),
                "ExecStart=/usr/local/bin/notify-relay",
                "ExecStart=/usr/bin/notify-relay",
            ),
            "DynamicUser=yes\n",
            "User=notify-relay\nGroup=notify-relay\n",
        ),
        "Description=notify-relay WebSocket notification relay\n",
        "Description=notify-relay WebSocket notification relay\n\
         Documentation=file:/usr/share/doc/notify-relay/README.md\n",
    );
    assert_eq!(service_section(&packaged_unit), expected);
    let unit_here = scratch.path().join("notify-relay.service");
    std::fs::write(
        &unit_here,
        rewrite(
            &packaged_unit,
            "ExecStart=/usr/bin/notify-relay",
            &format!("ExecStart={}", binary.display()),
        ),
    )
    .expect("write unit");
    run(Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit_here));

    // The unpacked binary serves with the packaged settings, as systemd reads them (the
    // port made free): on loopback only, until the operator opens it up.
    let host_line = defaults
        .lines()
        .position(|line| line == "NOTIFY_RELAY_HOST=127.0.0.1")
        .unwrap_or_else(|| panic!("NOTIFY_RELAY_HOST=127.0.0.1 is not set:\n{defaults}"));
    let above = host_line
        .checked_sub(1)
        .and_then(|i| defaults.lines().nth(i));
    assert!(
        above.is_some_and(|line| line.starts_with('#')),
        "no comment above NOTIFY_RELAY_HOST says how to open it up"
    );
    let settings: Vec<(String, String)> = systemd_environment(&defaults)
        .into_iter()
        .map(|(name, value)| match name.as_str() {
            "NOTIFY_RELAY_PORT" => (name, free_port().to_string()),
            _ => (name, value),
        })
        .collect();
    let relay = RelayProcess::spawn_with_only_env(&binary, &settings);
    assert_eq!(relay.addr.ip().to_string(), "127.0.0.1");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (status, _, body) = runtime.block_on(common::http_request(relay.addr, "GET", "/healthz"));
    assert_eq!(status, 200, "{body}");

    assert_links_resolve(&unpacked, "usr/share/doc/notify-relay/README.md");
}

/// Every relative link of the markdown file `doc` (under `root`) names a file that is
/// under `root` too: the package carries what its README points to.
fn assert_links_resolve(root: &Path, doc: &str) {
    let path = root.join(doc);
    let text = std::fs::read_to_string(&path).expect("packaged doc");
    let dir = path.parent().expect("doc directory");
    let mut checked = 0;
    let links = text
        .split("](")
        .skip(1)
        .filter_map(|rest| rest.split_once(')').map(|(link, _)| link));
    for link in links {
        let file = link.split('#').next().unwrap_or_default();
        if file.is_empty() || file.contains("://") || file.starts_with("mailto:") {
            continue;
        }
        let resolved = dir.join(file);
        let inside = resolved.canonicalize().is_ok_and(|real| {
            real.is_file() && real.starts_with(root.canonicalize().expect("root"))
        });
        assert!(
            inside,
            "{doc} links {file}, which the package does not carry"
        );
        checked += 1;
    }
    assert!(checked > 0, "no relative link found in {doc}");
}
