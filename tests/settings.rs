//! Settings as an operator writes them, on the real binary: values that would start a
//! relay that then fails (every browser refused, every client dropped at its first Ping)
//! are refused at start with a message that says what form is wanted; forms operators
//! write elsewhere (a bare proxy address, sizes with units) are accepted; every refusal
//! to start reads alike (`error: ...` on stderr); and a Redis that is down at start is
//! said at WARN, with where `--redis` points.

mod common;

use std::process::{Command, Stdio};

use common::{Client, RelayProcess};
use serde_json::json;

/// Runs the relay with `args` and returns its exit code and stderr; the relay is
/// expected to refuse to start, so it must exit on its own.
fn refused(args: &[&str]) -> (Option<i32>, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_notify-relay"))
        .args(["--host", "127.0.0.1", "--port", "0"])
        .args(args)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .output()
        .expect("run notify-relay");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        !stderr.contains("listening on"),
        "{args:?} started: {stderr}"
    );
    (output.status.code(), stderr)
}

#[test]
fn settings_that_would_fail_later_are_refused_at_start_with_the_form_wanted() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["--allowed-origins", "app.example"],
            "`app.example` is not an origin (SCHEME://HOST[:PORT], no path): write it as the \
             browser sends it, e.g. https://app.example",
        ),
        (
            &["--allowed-origins", "https://app.example/page"],
            "`https://app.example/page` is not an origin",
        ),
        (
            &["--trusted-proxies", "10.0.0.0/33"],
            "`/33` is not a prefix length for 10.0.0.0: it must be 0 to 32",
        ),
        (
            &["--trusted-proxies", "::1/129"],
            "`/129` is not a prefix length for ::1: it must be 0 to 128",
        ),
        (
            &["--trusted-proxies", "10.0.0.300"],
            "`10.0.0.300` is not an IP address",
        ),
        (
            &["--ping-timeout", "0s"],
            "'0s' for '--ping-timeout <PING_TIMEOUT>': must be more than 0",
        ),
        (
            &["--ping-interval", "0s"],
            "'0s' for '--ping-interval <PING_INTERVAL>': must be more than 0",
        ),
        (
            &["--redis", "127.0.0.1:6379"],
            "`127.0.0.1:6379` is not a Redis URL: write redis://HOST:PORT[/DB]",
        ),
        (
            &["--buffer-memory", "64 potatoes"],
            "`64 potatoes` is not a size: write a size in bytes (1048576) or with a unit \
             (64MiB, 512KiB, 1GB)",
        ),
    ];
    for (args, wanted) in cases {
        let (code, stderr) = refused(args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(stderr.starts_with("error: "), "{args:?}: {stderr}");
        assert!(
            stderr.contains(wanted),
            "{args:?}: {wanted:?} not in {stderr}"
        );
    }
}

#[test]
fn every_refusal_to_start_reads_alike() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("missing.pem");
    let missing = missing.to_str().expect("utf-8 path");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port().to_string();
    let cases: &[(&[&str], &str)] = &[
        (
            &["--auth-secret-file", missing],
            "error: cannot read --auth-secret-file",
        ),
        (
            &["--tls-cert", missing, "--tls-key", missing],
            "error: --tls-cert",
        ),
        (&[&port], "error: cannot listen on 127.0.0.1 port"),
    ];
    for (args, wanted) in cases {
        let (code, stderr) = refused(args);
        assert_eq!(code, Some(1), "{args:?}: {stderr}");
        let line = stderr
            .lines()
            .find(|line| line.contains(wanted))
            .unwrap_or_else(|| panic!("{args:?}: {wanted:?} not in {stderr}"));
        assert!(line.starts_with("error: "), "{line}");
        assert!(
            !stderr.contains("ERROR"),
            "{args:?}: logged as well: {stderr}"
        );
    }
}

#[tokio::test]
async fn operators_forms_are_accepted_a_bare_proxy_address_and_sizes_with_units() {
    let relay = RelayProcess::spawn(&[
        "--trusted-proxies",
        "127.0.0.1,::1,10.0.0.0/8",
        "--max-connections-per-ip",
        "1",
        "--buffer-memory",
        "64MiB",
        "--max-message-size",
        "2KiB",
    ]);
    // 127.0.0.1 alone is trusted: a connection through it counts against the address it
    // forwards, so two "clients" behind the proxy each get their own slot.
    let forwarded = |ip: &'static str| {
        let url = relay.url();
        async move {
            let mut request =
                tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
                    url.as_str(),
                )
                .expect("request");
            request
                .headers_mut()
                .insert("X-Forwarded-For", ip.parse().expect("header"));
            Client::connect_request(request).await
        }
    };
    let mut first = forwarded("203.0.113.1").await;
    let mut second = forwarded("203.0.113.2").await;
    first.register("first").await;
    second.register("second").await;
    assert_eq!(first.deliver("second", json!("through the proxy")).await, 1);
    assert_eq!(second.recv_text().await, "through the proxy");
    // 2KiB is 2048 bytes: a frame just over it closes the connection (1009).
    second.send_text("x".repeat(2049)).await;
    assert_eq!(
        u16::from(second.expect_close().await),
        1009,
        "the size limit is 2048 bytes"
    );
}

#[test]
fn a_redis_that_is_down_at_start_is_said_at_warn_with_its_url() {
    let port = common::free_port();
    let url = format!("redis://127.0.0.1:{port}/0");
    let relay = RelayProcess::spawn(&["--redis", &url]);
    let line = relay.wait_for_log(&format!("redis: cannot connect to {url}"));
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains("not ready until it can"), "{line}");
}
