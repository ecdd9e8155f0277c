//! Signed registration (Part 5 of docs/PROTOCOL.md): with `--auth-secret`, registering
//! under K, `/events/K` and presence of K need an HS256 JWT whose `sub` is K; every
//! refusal outcome on every door, rotation, and no token in the log.

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use common::{http_exchange, metric, within, Client, Relay, RelayProcess};
use notify_relay::policy::auth::sign;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

const SECRET: &str = "test secret, long enough";
const OLD_SECRET: &str = "the previous secret";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// A token for `key` signed with `secret`, valid for an hour.
fn token(secret: &str, key: &str) -> String {
    sign(secret.as_bytes(), key, now() + 3600)
}

async fn secured() -> Relay {
    Relay::start_with(|config| config.auth.auth_secret = Some(SECRET.into())).await
}

fn refused_count(relay: &Relay, reason: &str) -> f64 {
    metric(
        &relay.state.metrics.encode(),
        &format!("notify_relay_auth_refused_total{{reason=\"{reason}\"}}"),
    )
}

/// Reads the Close frame and returns its code and reason.
async fn close_frame(client: &mut Client) -> (CloseCode, String) {
    loop {
        match within("close", futures_util::StreamExt::next(&mut client.ws)).await {
            Some(Ok(Message::Close(Some(frame)))) => {
                return (frame.code, frame.reason.as_str().to_owned())
            }
            Some(Ok(Message::Text(text))) => panic!("unexpected frame before close: {text}"),
            Some(Ok(_)) => continue,
            other => panic!("expected a Close frame, got {other:?}"),
        }
    }
}

fn registration(key: &str, token: Option<&str>) -> Value {
    let mut frame = json!({"recipient_uuid": key, "message": "connected"});
    if let Some(token) = token {
        frame["token"] = json!(token);
    }
    frame
}

#[tokio::test]
async fn a_registration_without_a_valid_token_gets_unauthorized_and_close_1008() {
    let relay = secured().await;
    let expired = sign(SECRET.as_bytes(), "k", now() - 10);
    let foreign = token("some other secret", "k");
    let other_key = token(SECRET, "another-key");
    let cases = [
        (None, "missing"),
        (Some("not a jwt"), "invalid"),
        (Some(foreign.as_str()), "invalid"),
        (Some(expired.as_str()), "expired"),
        (Some(other_key.as_str()), "wrong_key"),
    ];
    for (token, reason) in cases {
        let before = refused_count(&relay, reason);
        let mut client = relay.client().await;
        let reply = client.request(registration("k", token)).await;
        assert_eq!(reply["ok"], false, "{reason}: {reply}");
        assert_eq!(reply["error"], "unauthorized", "{reason}: {reply}");
        assert_eq!(
            close_frame(&mut client).await,
            (CloseCode::Policy, "unauthorized".to_owned()),
            "{reason}"
        );
        assert_eq!(refused_count(&relay, reason), before + 1.0, "{reason}");
    }
    // Without an id there is no reply, only the close.
    let mut client = relay.client().await;
    client.send_json(registration("k", None)).await;
    assert_eq!(close_frame(&mut client).await.0, CloseCode::Policy);
    // Nobody got registered under k.
    let (_, _, presence) = relay
        .get(&format!("/presence/k?token={}", token(SECRET, "k")))
        .await;
    assert_eq!(presence, r#"{"key":"k","online":false,"connections":0}"#);
    relay.stop().await;
}

#[tokio::test]
async fn a_valid_token_registers_plain_and_resumable_connections() {
    let relay = secured().await;
    let mut plain = relay.client().await;
    let reply = plain
        .request(registration("k", Some(&token(SECRET, "k"))))
        .await;
    assert_eq!(reply["ok"], true, "{reply}");
    let mut resumable = relay.client().await;
    let mut frame = registration("k", Some(&token(SECRET, "k")));
    frame["since"] = json!("latest");
    let reply = resumable.request(frame).await;
    assert_eq!(reply["ok"], true, "{reply}");

    let sent = http_exchange(relay.addr, "POST", "/publish/k", &[], "hello").await;
    assert_eq!(sent.status, 200, "{}", sent.body);
    assert_eq!(plain.recv_text().await, "hello");
    let envelope = resumable.recv_json().await;
    assert_eq!(envelope["message"], "hello", "{envelope}");

    // Moving to another key needs that key's token: the old key's token is refused.
    let reply = plain
        .request(registration("other", Some(&token(SECRET, "k"))))
        .await;
    assert_eq!(reply["error"], "unauthorized");
    assert_eq!(close_frame(&mut plain).await.0, CloseCode::Policy);
    relay.stop().await;
}

#[tokio::test]
async fn a_presence_query_without_a_valid_token_gets_an_error_and_the_connection_stays() {
    let relay = secured().await;
    let _listener = {
        let mut c = relay.client().await;
        let reply = c
            .request(registration("k", Some(&token(SECRET, "k"))))
            .await;
        assert_eq!(reply["ok"], true);
        c
    };
    let mut asker = relay.client().await;
    for bad in [None, Some(token(SECRET, "other")), Some("x.y.z".to_owned())] {
        let mut frame = json!({"presence": "k"});
        if let Some(bad) = bad {
            frame["token"] = json!(bad);
        }
        let reply = asker.request(frame).await;
        assert_eq!(reply["ok"], false, "{reply}");
        assert_eq!(reply["error"], "unauthorized", "{reply}");
    }
    let reply = asker
        .request(json!({"presence": "k", "token": token(SECRET, "k")}))
        .await;
    assert_eq!(reply["ok"], true, "{reply}");
    assert_eq!(reply["connections"], 1, "{reply}");
    relay.stop().await;
}

#[tokio::test]
async fn http_presence_and_events_answer_401_without_a_valid_token() {
    let relay = secured().await;
    let good = token(SECRET, "k");
    for path in ["/presence/k", "/events/k"] {
        let accept = [("accept", "text/event-stream")];
        let missing = http_exchange(relay.addr, "GET", path, &accept, "").await;
        assert_eq!(missing.status, 401, "{path}");
        assert_eq!(missing.header("www-authenticate"), Some("Bearer"), "{path}");
        assert_eq!(missing.body, r#"{"ok":false,"error":"unauthorized"}"#);

        let wrong = format!("Bearer {}", token(SECRET, "other"));
        let reply = http_exchange(
            relay.addr,
            "GET",
            path,
            &[("authorization", &wrong), accept[0]],
            "",
        )
        .await;
        assert_eq!(reply.status, 401, "{path}");
        assert_eq!(
            reply.header("www-authenticate"),
            Some("Bearer error=\"invalid_token\"")
        );
        let query = format!("{path}?token=garbage");
        let reply = http_exchange(relay.addr, "GET", &query, &accept, "").await;
        assert_eq!(reply.status, 401, "{query}");
    }
    // Presence: with the header or the query parameter.
    let bearer = format!("Bearer {good}");
    let reply = http_exchange(
        relay.addr,
        "GET",
        "/presence/k",
        &[("authorization", &bearer)],
        "",
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let (status, _, _) = relay.get(&format!("/presence/k?token={good}")).await;
    assert_eq!(status, 200);

    // Events: a subscriber with the token receives the key's messages.
    let sent = http_exchange(relay.addr, "POST", "/publish/k", &[], "for the stream").await;
    assert_eq!(sent.status, 200);
    let (status, _, text) = common::http_first_chunks(
        relay.addr,
        &format!("/events/k?token={good}&since=earliest"),
        &[],
        1,
    )
    .await;
    assert_eq!(status, 200);
    assert!(text.contains("data: for the stream"), "{text}");
    let (status, _, text) = common::http_first_chunks(
        relay.addr,
        "/events/k?since=earliest",
        &[("authorization", &bearer)],
        1,
    )
    .await;
    assert_eq!(status, 200);
    assert!(text.contains("data: for the stream"), "{text}");
    assert!(refused_count(&relay, "missing") >= 2.0);
    assert!(refused_count(&relay, "wrong_key") >= 2.0);
    assert!(refused_count(&relay, "invalid") >= 2.0);
    relay.stop().await;
}

#[tokio::test]
async fn without_a_secret_tokens_are_not_needed_and_ignored() {
    let relay = Relay::start().await;
    let mut client = relay.client().await;
    let reply = client
        .request(registration("k", Some("anything at all")))
        .await;
    assert_eq!(reply["ok"], true, "{reply}");
    let (status, _, _) = relay.get("/presence/k").await;
    assert_eq!(status, 200);
    client.assert_alive().await;
    relay.stop().await;
}

/// Registers under `key` with `token` on a relay process; returns the reply.
async fn register_on(relay: &RelayProcess, key: &str, token: &str) -> Value {
    let mut client = Client::connect(&relay.url()).await;
    client.request(registration(key, Some(token))).await
}

#[tokio::test]
async fn rotation_accepts_the_previous_secret_until_restarted_without_it() {
    let old = token(OLD_SECRET, "k");
    let new = token(SECRET, "k");
    let rotating = RelayProcess::spawn(&[
        "--auth-secret",
        SECRET,
        "--auth-secret-previous",
        OLD_SECRET,
    ]);
    assert_eq!(register_on(&rotating, "k", &old).await["ok"], true);
    assert_eq!(register_on(&rotating, "k", &new).await["ok"], true);
    drop(rotating);

    // Restarted without the previous secret, given through the environment this time.
    let rotated = RelayProcess::spawn_with_env(&[], &[("NOTIFY_RELAY_AUTH_SECRET", SECRET)]);
    assert_eq!(register_on(&rotated, "k", &new).await["ok"], true);
    let reply = register_on(&rotated, "k", &old).await;
    assert_eq!(reply["error"], "unauthorized", "{reply}");
}

#[tokio::test]
async fn the_secret_can_come_from_a_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("secret");
    std::fs::write(&path, format!("{SECRET}\n")).expect("write secret");
    let path = path.to_str().expect("utf-8 path");
    let relay = RelayProcess::spawn(&["--auth-secret-file", path]);
    assert_eq!(
        register_on(&relay, "k", &token(SECRET, "k")).await["ok"],
        true
    );
    let reply = register_on(&relay, "k", &token("wrong", "k")).await;
    assert_eq!(reply["error"], "unauthorized");
}

#[test]
fn an_empty_or_unreadable_secret_stops_the_relay_at_start() {
    let binary = env!("CARGO_BIN_EXE_notify-relay");
    for args in [
        vec!["--auth-secret", ""],
        vec!["--auth-secret-file", "/nonexistent/notify-relay-secret"],
        vec!["--auth-secret-previous", OLD_SECRET],
    ] {
        let output = std::process::Command::new(binary)
            .args(["--host", "127.0.0.1", "--port", "0"])
            .args(&args)
            .output()
            .expect("run notify-relay");
        assert!(!output.status.success(), "{args:?} started");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!stderr.contains("listening on"), "{args:?}: {stderr}");
    }
}

#[tokio::test]
async fn no_token_reaches_the_log() {
    let relay = RelayProcess::spawn(&["--auth-secret", SECRET]);
    let good = token(SECRET, "k");
    let signature = good.rsplit('.').next().expect("signature").to_owned();
    let foreign = token("other secret", "k");
    let foreign_signature = foreign.rsplit('.').next().expect("signature").to_owned();

    // A registration refused for its token, one refused for the key, a frame rejected
    // with its token in the preview, a bad frame cut in the middle of a token, and HTTP
    // requests carrying tokens in the query string and the header.
    let mut client = Client::connect(&relay.url()).await;
    client
        .send_json(json!({"token": good, "id": [1], "recipient_uuid": "k"}))
        .await;
    assert_eq!(client.recv_json().await["id"], Value::Null);
    client
        .send_text(format!(r#"{{"token": "{good}", "recipient_uuid": "#))
        .await;
    client
        .send_text(format!(r#"{{"tok\u0065n":"{good}","recipient_uuid":5}}"#))
        .await;
    let reply = client.request(registration("other", Some(&good))).await;
    assert_eq!(reply["error"], "unauthorized");
    let mut client = Client::connect(&relay.url()).await;
    let reply = client.request(registration("k", Some(&foreign))).await;
    assert_eq!(reply["error"], "unauthorized");
    let path = format!("/events/other?token={good}");
    let reply = http_exchange(relay.addr, "GET", &path, &[], "").await;
    assert_eq!(reply.status, 401);
    let bearer = format!("Bearer {foreign}");
    let reply = http_exchange(
        relay.addr,
        "GET",
        "/presence/k",
        &[("authorization", &bearer)],
        "",
    )
    .await;
    assert_eq!(reply.status, 401);

    relay.wait_for_log("registration as k refused (invalid token)");
    relay.wait_for_log("request for k refused (invalid token)");
    relay.wait_for_log_count("frame ignored", 1);
    relay.wait_for_log_count("frame rejected", 2);
    let log = relay.log_text();
    assert!(log.contains("<redacted>"), "{log}");
    for secret in [&signature, &foreign_signature, &SECRET.to_owned()] {
        assert!(!log.contains(secret.as_str()), "{secret} in:\n{log}");
    }
}

#[tokio::test]
async fn the_client_cli_mints_tokens_the_relay_accepts() {
    let relay = RelayProcess::spawn(&["--auth-secret", SECRET]);
    let cli = common::workspace_binary("notify-relay-client");
    let output = std::process::Command::new(&cli)
        .args(["token", "cli-key", "--ttl", "1h"])
        .env("NOTIFY_RELAY_AUTH_SECRET", SECRET)
        .output()
        .expect("run notify-relay-client token");
    assert!(output.status.success(), "{output:?}");
    let minted = String::from_utf8(output.stdout).expect("utf-8");
    let minted = minted.trim();
    assert_eq!(register_on(&relay, "cli-key", minted).await["ok"], true);
    let reply = register_on(&relay, "another-key", minted).await;
    assert_eq!(reply["error"], "unauthorized");

    // listen with the token receives what was sent; without it, the refusal is final.
    let sent = http_exchange(relay.addr, "POST", "/publish/cli-key", &[], "for the CLI").await;
    assert_eq!(sent.status, 200);
    let url = relay.url();
    let listen = |token: Option<&str>| {
        let mut command = std::process::Command::new(&cli);
        command.args([
            "--url",
            &url,
            "listen",
            "cli-key",
            "--count",
            "1",
            "--timeout",
            "10s",
        ]);
        command.env_remove("NOTIFY_RELAY_TOKEN");
        if let Some(token) = token {
            command.env("NOTIFY_RELAY_TOKEN", token);
        }
        command.output().expect("run notify-relay-client listen")
    };
    let output = listen(Some(minted));
    assert!(output.status.success(), "{output:?}");
    assert_eq!(String::from_utf8_lossy(&output.stdout), "for the CLI\n");
    let output = listen(None);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("unauthorized"));

    let output = std::process::Command::new(&cli)
        .args(["token", "cli-key"])
        .env_remove("NOTIFY_RELAY_AUTH_SECRET")
        .output()
        .expect("run notify-relay-client token");
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(output.stdout.is_empty());
}

/// The cost of checking one registration token (what `--auth-secret` adds to each
/// registration), printed, not asserted: `cargo test --release --test auth --
/// --ignored --nocapture token_verification_cost`.
#[test]
#[ignore = "a measurement: run in release with --ignored --nocapture"]
fn token_verification_cost() {
    use notify_relay::policy::auth::{Access, AuthConfig};
    const ROUNDS: u32 = 200_000;
    let key = "3f2a6c1e-9b7d-4e5f-8a1b-2c3d4e5f6a7b";
    let token = token(SECRET, key);
    for (label, previous) in [
        ("one secret", None),
        ("two secrets (rotation)", Some(OLD_SECRET)),
    ] {
        let access = Access::new(&AuthConfig {
            auth_secret: Some(SECRET.into()),
            auth_secret_previous: previous.map(str::to_owned),
            ..AuthConfig::default()
        });
        let start = std::time::Instant::now();
        for _ in 0..ROUNDS {
            let checked = access.check_registration(Some(std::hint::black_box(&token)), key);
            assert_eq!(std::hint::black_box(checked), Ok(()));
        }
        let per = start.elapsed() / ROUNDS;
        println!(
            "token verification, {label}: {:.2} µs per registration",
            per.as_nanos() as f64 / 1000.0
        );
    }
}

#[tokio::test]
async fn refusals_of_forged_keys_and_origins_log_one_escaped_line_each() {
    let relay = RelayProcess::spawn(&[
        "--auth-secret",
        SECRET,
        "--allowed-origins",
        "https://app.example",
    ]);
    let key = "evil\n[2026-01-01T00:00:00Z WARN  notify_relay] forged-key\r\u{1b}[2J";
    let mut client = Client::connect(&relay.url()).await;
    let reply = client.request(registration(key, None)).await;
    assert_eq!(reply["error"], "unauthorized");
    let path = format!(
        "/presence/{}",
        percent_encode_all("evil\n[2026-01-01T00:00:00Z WARN  notify_relay] forged-http")
    );
    let reply = http_exchange(relay.addr, "GET", &path, &[], "").await;
    assert_eq!(reply.status, 401);
    // An Origin with a right-to-left override (header values cannot hold line breaks).
    let origin = "https://app.example\u{202e}forged-origin";
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(relay.url())
            .expect("request");
    request.headers_mut().insert(
        "origin",
        hyper::header::HeaderValue::from_bytes(origin.as_bytes()).expect("obs-text header"),
    );
    let refused = within("handshake", tokio_tungstenite::connect_async(request)).await;
    assert!(refused.is_err(), "a forged origin is not the allowed one");

    for needle in ["forged-key", "forged-http", "forged-origin"] {
        relay.wait_for_log(needle);
        let log = relay.log_text();
        let lines: Vec<&str> = log.lines().filter(|l| l.contains(needle)).collect();
        assert_eq!(lines.len(), 1, "{needle}: {lines:?}");
        assert!(
            !lines[0].contains('\u{1b}') && !lines[0].contains('\u{202e}'),
            "{lines:?}"
        );
    }
    assert!(relay
        .log_text()
        .contains(r"evil\n[2026-01-01T00:00:00Z WARN"));
}

/// Every byte percent-encoded, so a path can carry any key.
fn percent_encode_all(text: &str) -> String {
    text.bytes().map(|b| format!("%{b:02X}")).collect()
}
