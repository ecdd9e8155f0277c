//! Rate limits (Part 5 of docs/PROTOCOL.md): connections at once per client IP (429),
//! HTTP publishes per second per client IP (429 + Retry-After), frames per second per
//! connection (error rate_limited, then Close 1008 for a flood), and the client IP taken
//! from X-Forwarded-For / X-Real-IP only when the peer is a trusted proxy. Loopback
//! addresses 127.0.0.2 and 127.0.0.3 are two visitors.

mod common;

use common::{
    connect_from, eventually, http_exchange, http_exchange_on, metric, websocket_on, Relay,
};
use notify_relay::policy::limits::FLOOD_FRAMES;
use serde_json::json;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

fn series(relay: &Relay, name: &str) -> f64 {
    metric(&relay.state.metrics.encode(), name)
}

#[tokio::test]
async fn connections_per_ip_past_the_limit_get_429_and_places_come_back() {
    let relay = Relay::start_with(|c| c.limits.max_connections_per_ip = Some(2)).await;
    let url = relay.url();
    let first = websocket_on(connect_from("127.0.0.2", relay.addr).await, &url, &[])
        .await
        .expect("first connection");
    // An event stream counts like a WebSocket.
    let stream = connect_from("127.0.0.2", relay.addr).await;
    let events = tokio::spawn(http_exchange_on(
        stream,
        "GET",
        "/events/k",
        &[("accept", "text/event-stream")],
        "",
    ));
    eventually("the event stream is open", || {
        relay.state.metrics.event_streams.get() == 1
    })
    .await;
    let third = websocket_on(connect_from("127.0.0.2", relay.addr).await, &url, &[]).await;
    assert_eq!(third.err(), Some(429));
    let sse = http_exchange_on(
        connect_from("127.0.0.2", relay.addr).await,
        "GET",
        "/events/k",
        &[("accept", "text/event-stream")],
        "",
    )
    .await;
    assert_eq!(sse.status, 429);
    // Another visitor is not affected.
    let mut other = websocket_on(connect_from("127.0.0.3", relay.addr).await, &url, &[])
        .await
        .expect("another address");
    other.assert_alive().await;
    assert_eq!(
        series(
            &relay,
            "notify_relay_rate_limited_total{limit=\"connections_per_ip\"}"
        ),
        2.0
    );
    // A place freed by a closing connection is given back.
    drop(first);
    events.abort();
    eventually("the places are released", || {
        relay.state.per_ip.tracked_connections() == 1
    })
    .await;
    let again = websocket_on(connect_from("127.0.0.2", relay.addr).await, &url, &[]).await;
    assert!(again.is_ok());
    relay.stop().await;
}

#[tokio::test]
async fn publishes_past_the_rate_get_429_with_retry_after() {
    let relay = Relay::start_with(|c| c.limits.publish_rate_per_ip = Some(2)).await;
    let publish = |source: &'static str| {
        let addr = relay.addr;
        async move {
            http_exchange_on(
                connect_from(source, addr).await,
                "POST",
                "/publish/k",
                &[],
                "x",
            )
            .await
        }
    };
    assert_eq!(publish("127.0.0.2").await.status, 200);
    assert_eq!(publish("127.0.0.2").await.status, 200);
    let limited = publish("127.0.0.2").await;
    assert_eq!(limited.status, 429);
    assert_eq!(limited.header("retry-after"), Some("1"));
    assert_eq!(limited.body, r#"{"ok":false,"error":"rate_limited"}"#);
    assert_eq!(publish("127.0.0.3").await.status, 200, "another visitor");
    assert_eq!(
        series(
            &relay,
            "notify_relay_rate_limited_total{limit=\"publish_rate_per_ip\"}"
        ),
        1.0
    );
    relay.stop().await;
}

#[tokio::test]
async fn frames_over_the_rate_get_rate_limited_and_a_flood_is_closed() {
    let relay = Relay::start_with(|c| {
        c.limits.frame_rate = Some(1);
        c.limits.frame_burst = Some(3);
    })
    .await;
    let mut client = relay.client().await;
    for _ in 0..3 {
        client.assert_alive().await;
    }
    let reply = client
        .request(json!({"recipient_uuid": "k", "message": "one too many"}))
        .await;
    assert_eq!(reply["ok"], false, "{reply}");
    assert_eq!(reply["error"], "rate_limited", "{reply}");
    assert_eq!(
        series(
            &relay,
            "notify_relay_messages_dropped_total{reason=\"rate_limited\"}"
        ),
        1.0
    );
    // Keeps flooding: closed with 1008.
    for _ in 0..FLOOD_FRAMES {
        client.send_text("flood").await;
    }
    assert_eq!(client.expect_close().await, CloseCode::Policy);
    assert_eq!(
        series(
            &relay,
            "notify_relay_connections_closed_total{reason=\"rate_limited\"}"
        ),
        1.0
    );
    // Other connections have their own bucket.
    let mut other = relay.client().await;
    other.assert_alive().await;
    relay.stop().await;
}

#[tokio::test]
async fn forwarded_addresses_count_only_from_trusted_proxies() {
    // Untrusted: a forged X-Forwarded-For changes nothing, the peer address counts.
    let relay = Relay::start_with(|c| c.limits.max_connections_per_ip = Some(1)).await;
    let url = relay.url();
    let _held = websocket_on(
        connect_from("127.0.0.2", relay.addr).await,
        &url,
        &[("x-forwarded-for", "203.0.113.1")],
    )
    .await
    .expect("first");
    let forged = websocket_on(
        connect_from("127.0.0.2", relay.addr).await,
        &url,
        &[
            ("x-forwarded-for", "203.0.113.2"),
            ("x-real-ip", "203.0.113.3"),
        ],
    )
    .await;
    assert_eq!(
        forged.err(),
        Some(429),
        "a forged header is not another visitor"
    );
    relay.stop().await;

    // Trusted: the forwarded address is the visitor.
    let relay = Relay::start_with(|c| {
        c.limits.max_connections_per_ip = Some(1);
        c.limits.trusted_proxies = vec!["127.0.0.2/32".parse().expect("cidr")];
    })
    .await;
    let url = relay.url();
    let via_proxy = |client: &'static str| {
        let addr = relay.addr;
        let url = url.clone();
        async move {
            websocket_on(
                connect_from("127.0.0.2", addr).await,
                &url,
                &[("x-forwarded-for", client)],
            )
            .await
        }
    };
    let _a = via_proxy("203.0.113.1").await.expect("first visitor");
    let _b = via_proxy("203.0.113.2").await.expect("second visitor");
    assert_eq!(via_proxy("203.0.113.1").await.err(), Some(429));
    let real_ip = websocket_on(
        connect_from("127.0.0.2", relay.addr).await,
        &url,
        &[("x-real-ip", "203.0.113.2")],
    )
    .await;
    assert_eq!(real_ip.err(), Some(429), "X-Real-IP names the same visitor");
    relay.stop().await;
}

#[tokio::test]
async fn without_limits_nothing_is_limited() {
    let relay = Relay::start().await;
    let mut clients = Vec::new();
    for _ in 0..5 {
        clients.push(relay.client().await);
    }
    for _ in 0..20 {
        let reply = http_exchange(relay.addr, "POST", "/publish/k", &[], "x").await;
        assert_eq!(reply.status, 200);
    }
    for _ in 0..50 {
        clients[0].assert_alive().await;
    }
    relay.stop().await;
}
