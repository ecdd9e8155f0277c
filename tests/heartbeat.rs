//! Keep-alive: Pings at the configured interval; an unanswered Ping closes with 1011.

mod common;

use std::time::Duration;

use common::Relay;
use notify_relay::metrics::CloseReason;
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
