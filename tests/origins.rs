//! `--allowed-origins` (Part 5 of docs/PROTOCOL.md): a WebSocket handshake or an event
//! stream from a page whose `Origin` is not listed gets 403; requests without `Origin`
//! (non-browser clients) are allowed; the Part 3 routes' CORS answer echoes an allowed
//! origin instead of `*`.

mod common;

use common::{http_exchange, metric, within, Client, Relay};
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Error as WsError;

const APP: &str = "https://app.example";
const OTHER_APP: &str = "http://localhost:3000";

async fn restricted() -> Relay {
    Relay::start_with(|config| {
        config.auth.allowed_origins = vec![APP.into(), format!("{OTHER_APP}/")];
    })
    .await
}

/// The status of a WebSocket handshake sent with `origin`: 101 or the refusal's.
async fn handshake_status(relay: &Relay, origin: Option<&str>) -> u16 {
    let mut request = relay.url().into_client_request().expect("request");
    if let Some(origin) = origin {
        request
            .headers_mut()
            .insert("origin", origin.parse().expect("header value"));
    }
    match within("handshake", connect_async(request)).await {
        Ok((mut ws, response)) => {
            let _ = ws.close(None).await;
            response.status().as_u16()
        }
        Err(WsError::Http(response)) => response.status().as_u16(),
        Err(other) => panic!("handshake failed otherwise: {other}"),
    }
}

#[tokio::test]
async fn websocket_handshakes_from_other_origins_get_403() {
    let relay = restricted().await;
    assert_eq!(handshake_status(&relay, Some(APP)).await, 101);
    assert_eq!(
        handshake_status(&relay, Some("HTTPS://APP.EXAMPLE")).await,
        101
    );
    assert_eq!(handshake_status(&relay, Some(OTHER_APP)).await, 101);
    assert_eq!(
        handshake_status(&relay, None).await,
        101,
        "non-browser clients"
    );
    for foreign in [
        "https://evil.example",
        "https://app.example.evil.example",
        "http://app.example",
        "null",
    ] {
        assert_eq!(
            handshake_status(&relay, Some(foreign)).await,
            403,
            "{foreign}"
        );
    }
    let metrics = relay.state.metrics.encode();
    assert_eq!(
        metric(
            &metrics,
            "notify_relay_handshakes_rejected_total{reason=\"origin\"}"
        ),
        4.0
    );
    // Refused handshakes hold no connection: a client still gets in.
    let mut client = Client::connect(&relay.url()).await;
    client.assert_alive().await;
    relay.stop().await;
}

#[tokio::test]
async fn event_streams_from_other_origins_get_403() {
    let relay = restricted().await;
    let accept = ("accept", "text/event-stream");
    let refused = http_exchange(
        relay.addr,
        "GET",
        "/events/k",
        &[accept, ("origin", "https://evil.example")],
        "",
    )
    .await;
    assert_eq!(refused.status, 403);
    let (status, _, text) =
        common::http_first_chunks(relay.addr, "/events/k", &[("origin", APP)], 0).await;
    assert_eq!(status, 200, "{text}");
    let (status, _, _) = common::http_first_chunks(relay.addr, "/events/k", &[], 0).await;
    assert_eq!(status, 200);
    relay.stop().await;
}

#[tokio::test]
async fn cors_answers_echo_an_allowed_origin_instead_of_any() {
    let relay = restricted().await;
    let allowed = http_exchange(relay.addr, "GET", "/presence/k", &[("origin", APP)], "").await;
    assert_eq!(allowed.status, 200);
    assert_eq!(allowed.header("access-control-allow-origin"), Some(APP));
    assert_eq!(allowed.header("vary"), Some("origin"));
    let foreign = http_exchange(
        relay.addr,
        "POST",
        "/publish/k",
        &[("origin", "https://evil.example")],
        "x",
    )
    .await;
    assert_eq!(foreign.header("access-control-allow-origin"), None);
    let preflight = http_exchange(
        relay.addr,
        "OPTIONS",
        "/publish/k",
        &[("origin", OTHER_APP)],
        "",
    )
    .await;
    assert_eq!(preflight.status, 204);
    assert_eq!(
        preflight.header("access-control-allow-origin"),
        Some(OTHER_APP)
    );
    relay.stop().await;

    // Without the setting: any origin, as before.
    let open = Relay::start().await;
    assert_eq!(
        handshake_status(&open, Some("https://evil.example")).await,
        101
    );
    let reply = http_exchange(open.addr, "GET", "/presence/k", &[("origin", APP)], "").await;
    assert_eq!(reply.header("access-control-allow-origin"), Some("*"));
    assert_eq!(reply.header("vary"), None);
    open.stop().await;
}
