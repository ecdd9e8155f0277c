//! Publisher tokens (Part 5 of docs/PROTOCOL.md): with `--publish-token`, HTTP publish
//! needs `Authorization: Bearer <token>`, and a WebSocket connection may deliver only if
//! its handshake carried the token; listening needs none.

mod common;

use common::{http_exchange, metric, Client, Relay, RelayProcess};
use serde_json::json;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const TOKEN: &str = "publisher-token-1";
const OTHER_TOKEN: &str = "publisher-token-2";

async fn secured() -> Relay {
    Relay::start_with(|config| {
        config.auth.publish_tokens = vec![TOKEN.into(), OTHER_TOKEN.into()];
    })
    .await
}

fn series(relay: &Relay, name: &str) -> f64 {
    metric(&relay.state.metrics.encode(), name)
}

#[tokio::test]
async fn http_publish_needs_a_bearer_publisher_token() {
    let relay = secured().await;
    let mut listener = relay.registered("k").await;
    for headers in [
        vec![],
        vec![("authorization", "Bearer wrong")],
        vec![("authorization", "Bearer publisher-token-")],
        vec![("authorization", "publisher-token-1")],
        vec![("authorization", "Basic cHVibGlzaGVyLXRva2VuLTE=")],
    ] {
        for path in ["/publish/k", "/publish"] {
            let body = if path == "/publish" {
                r#"{"recipient_uuid":"k","message":"forged"}"#
            } else {
                "forged"
            };
            let reply = http_exchange(relay.addr, "POST", path, &headers, body).await;
            assert_eq!(reply.status, 401, "{path} {headers:?}");
            assert_eq!(reply.header("www-authenticate"), Some("Bearer"));
            assert_eq!(reply.body, r#"{"ok":false,"error":"unauthorized"}"#);
        }
    }
    // Publishing through the query string is not a way in either.
    let reply = http_exchange(
        relay.addr,
        "POST",
        &format!("/publish/k?token={TOKEN}"),
        &[],
        "forged",
    )
    .await;
    assert_eq!(reply.status, 401);
    assert_eq!(
        series(&relay, "notify_relay_publish_unauthorized_total"),
        11.0
    );
    for token in [TOKEN, OTHER_TOKEN] {
        let bearer = format!("Bearer {token}");
        let reply = http_exchange(
            relay.addr,
            "POST",
            "/publish/k",
            &[("authorization", &bearer)],
            token,
        )
        .await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        // The first message the listener sees is the authorized one: nothing forged got
        // through before it.
        assert_eq!(listener.recv_text().await, token);
    }
    relay.stop().await;
}

#[tokio::test]
async fn a_websocket_without_the_token_in_its_handshake_cannot_deliver_but_can_listen() {
    let relay = secured().await;
    // Listening needs no publisher token.
    let mut listener = relay.registered("k").await;
    let mut anonymous = relay.client().await;
    let reply = anonymous
        .request(json!({"recipient_uuid": "k", "message": "forged"}))
        .await;
    assert_eq!(reply["ok"], false, "{reply}");
    assert_eq!(reply["error"], "unauthorized", "{reply}");
    // Without an id: dropped silently, counted.
    anonymous
        .send_json(json!({"recipient_uuid": "k", "message": "forged too"}))
        .await;
    // Still open: a presence query round-trips.
    let reply = anonymous.request(json!({"presence": "k"})).await;
    assert_eq!(reply["connections"], 1, "{reply}");
    assert_eq!(
        series(
            &relay,
            "notify_relay_messages_dropped_total{reason=\"unauthorized\"}"
        ),
        2.0
    );

    // The token in the query string of the handshake (what a browser can do).
    let mut by_query = Client::connect(&format!("{}?token={TOKEN}", relay.url())).await;
    assert_eq!(by_query.deliver("k", json!("by query")).await, 1);
    assert_eq!(listener.recv_text().await, "by query");

    // The token in an Authorization header of the handshake.
    let mut request = relay.url().into_client_request().expect("request");
    let bearer = format!("Bearer {OTHER_TOKEN}");
    request
        .headers_mut()
        .insert("authorization", bearer.parse().expect("header value"));
    let mut by_header = Client::connect_request(request).await;
    assert_eq!(by_header.deliver("k", json!("by header")).await, 1);
    assert_eq!(listener.recv_text().await, "by header");

    // A wrong token in the handshake is no token.
    let mut wrong = Client::connect(&format!("{}?token=nope", relay.url())).await;
    let reply = wrong
        .request(json!({"recipient_uuid": "k", "message": "forged"}))
        .await;
    assert_eq!(reply["error"], "unauthorized");
    relay.stop().await;
}

#[tokio::test]
async fn without_publish_tokens_anyone_publishes_as_before() {
    let relay = Relay::start().await;
    let mut listener = relay.registered("k").await;
    let reply = http_exchange(relay.addr, "POST", "/publish/k", &[], "open").await;
    assert_eq!(reply.status, 200);
    assert_eq!(listener.recv_text().await, "open");
    let mut producer = relay.client().await;
    assert_eq!(producer.deliver("k", json!("open too")).await, 1);
    relay.stop().await;
}

#[tokio::test]
async fn tokens_come_from_a_file_or_the_environment() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("tokens");
    std::fs::write(&path, format!("# publishers\n{TOKEN}\n\n{OTHER_TOKEN}\n")).expect("write");
    let path = path.to_str().expect("utf-8 path");
    let from_file = RelayProcess::spawn(&["--publish-token-file", path]);
    let from_env = RelayProcess::spawn_with_env(
        &[],
        &[(
            "NOTIFY_RELAY_PUBLISH_TOKEN",
            &format!("{TOKEN},{OTHER_TOKEN}"),
        )],
    );
    for relay in [&from_file, &from_env] {
        for (token, status) in [(TOKEN, 200), (OTHER_TOKEN, 200), ("# publishers", 401)] {
            let bearer = format!("Bearer {token}");
            let reply = http_exchange(
                relay.addr,
                "POST",
                "/publish/k",
                &[("authorization", &bearer)],
                "x",
            )
            .await;
            assert_eq!(reply.status, status, "{token}");
        }
    }
    let log = from_file.log_text() + &from_env.log_text();
    assert!(!log.contains(TOKEN) && !log.contains(OTHER_TOKEN), "{log}");
}
