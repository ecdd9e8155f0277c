//! Keep-alive: Pings at the configured interval; an unanswered Ping closes with 1011.

mod common;

use std::time::Duration;

use common::Relay;
use notify_relay::observability::metrics::CloseReason;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

#[tokio::test]
async fn pings_come_every_interval_while_they_are_answered() {
    // The Pong timeout stays at its 30 s default: Pings must keep the interval's pace,
    // not wait for the timeout (which they did once, when the timer was not re-armed).
    let relay = Relay::start_with(|c| c.ping_interval = Duration::from_millis(100)).await;
    let mut client = relay.registered("alive").await;
    // Reading answers each Ping (tungstenite queues the Pong).
    client.expect_pings(5).await;
    client.assert_alive().await;
    assert_eq!(
        relay.state.metrics.closed_count(CloseReason::PingTimeout),
        0
    );
    relay.stop().await;
}

#[tokio::test]
async fn an_answering_client_outlives_many_pong_timeouts() {
    let relay = Relay::start_with(|c| {
        c.ping_interval = Duration::from_millis(50);
        c.ping_timeout = Duration::from_millis(200);
    })
    .await;
    let mut client = relay.registered("alive").await;
    // Twenty Pings span five Pong timeouts.
    client.expect_pings(20).await;
    client.assert_alive().await;
    let closed = relay.state.metrics.closed_count(CloseReason::PingTimeout);
    assert_eq!(closed, 0);
    relay.stop().await;
}

#[tokio::test]
async fn a_client_that_never_answers_is_closed_with_1011() {
    let relay = Relay::start_with(|c| {
        c.ping_interval = Duration::from_millis(100);
        c.ping_timeout = Duration::from_millis(300);
    })
    .await;
    let mut silent = relay.registered("silent").await;
    // Not reading means not answering Pings.
    common::eventually("ping timeout", || {
        relay.state.metrics.closed_count(CloseReason::PingTimeout) == 1
    })
    .await;
    assert_eq!(relay.state.engine.stats().keys, 0, "key released");
    assert_eq!(silent.expect_close().await, CloseCode::Error);
    relay.stop().await;
}

#[tokio::test]
async fn closed_connections_leave_the_keep_alive_wheel_at_once() {
    // The interval is far past the test's deadline: no bucket of the wheel comes due
    // while the test runs, so only the connections taking themselves out when they end
    // can empty it (a wheel that let go of closed connections at their next visit held
    // each one's task memory for up to a minute under churn).
    let relay = Relay::start_with(|c| c.ping_interval = Duration::from_secs(600)).await;
    const CONNECTIONS: usize = 50;
    let mut clients = Vec::new();
    for n in 0..CONNECTIONS {
        clients.push(relay.registered(&format!("churn-{n}")).await);
    }
    assert_eq!(relay.state.keepalive.len(), CONNECTIONS);
    // Half close cleanly, half just go away.
    for (n, mut client) in clients.into_iter().enumerate() {
        if n % 2 == 0 {
            common::within("close", client.ws.close(None))
                .await
                .expect("close");
        }
    }
    common::eventually("every closed connection out of the wheel", || {
        relay.state.keepalive.is_empty()
    })
    .await;
    // A new connection after the churn is in the wheel, and pinged as ever.
    let _fresh = relay.registered("fresh").await;
    assert_eq!(relay.state.keepalive.len(), 1);
    relay.stop().await;
}
