//! Server-Sent Events (`GET /events/<KEY>`) against a real relay: events with cursors as
//! ids, `Last-Event-ID` and `?since=` resumption, gaps, keep-alive comments, presence and
//! delivery counts, drain, the slow-consumer cut, and a Python client.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{eventually, within, Relay};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use notify_relay::observability::metrics::CloseReason;
use serde_json::json;

/// One parsed event.
#[derive(Debug, Default, Clone, PartialEq)]
struct Event {
    id: Option<String>,
    event: Option<String>,
    data: String,
}

/// A subscription read as a real client reads it: chunks off the socket, split into
/// events (comments are counted and skipped).
struct Subscription {
    status: u16,
    content_type: String,
    body: Incoming,
    buffer: String,
    comments: usize,
}

impl Subscription {
    async fn open(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Self {
        let mut all = vec![("accept", "text/event-stream")];
        all.extend_from_slice(headers);
        let response = common::http_send(addr, "GET", path, &all, "").await;
        Subscription {
            status: response.status().as_u16(),
            content_type: common::content_type(&response),
            body: response.into_body(),
            buffer: String::new(),
            comments: 0,
        }
    }

    /// The next event, or `None` when the stream ends.
    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut event = Event::default();
                let mut data = Vec::new();
                let mut fields = 0;
                for line in block.lines() {
                    if line.starts_with(':') {
                        self.comments += 1;
                        continue;
                    }
                    let (name, value) = line.split_once(": ").unwrap_or((line, ""));
                    fields += 1;
                    match name {
                        "id" => event.id = Some(value.to_owned()),
                        "event" => event.event = Some(value.to_owned()),
                        "data" => data.push(value),
                        _ => {}
                    }
                }
                if data.is_empty() {
                    // Comments only, or `retry:`: not an event.
                    let _ = fields;
                    continue;
                }
                event.data = data.join("\n");
                return Some(event);
            }
            let frame = within("an event", self.body.frame()).await?.ok()?;
            if let Ok(data) = frame.into_data() {
                self.buffer.push_str(&String::from_utf8_lossy(&data));
            }
        }
    }
}

#[tokio::test]
async fn events_carry_cursors_as_ids_and_text_as_data_lines() {
    let relay = Relay::start().await;
    let mut events = Subscription::open(relay.addr, "/events/job", &[]).await;
    assert_eq!(events.status, 200);
    assert!(events.content_type.starts_with("text/event-stream"));
    let mut producer = relay.client().await;
    let reply = producer
        .request(json!({"recipient_uuid": "job", "message": "line 1\nline 2"}))
        .await;
    // The subscriber counts as a live connection.
    assert_eq!(reply["delivered"], 1);
    let event = events.next().await.expect("event");
    assert_eq!(event.data, "line 1\nline 2");
    assert_eq!(event.id.as_deref(), reply["cursor"].as_str());
    producer
        .request(json!({"recipient_uuid": "job", "message": {"p": [1, 2]}}))
        .await;
    assert_eq!(events.next().await.expect("event").data, r#"{"p":[1,2]}"#);
    let asked = producer.request(json!({"presence": "job"})).await;
    assert_eq!(asked["connections"], 1);
    // A client that goes away leaves the key at once, not at the next write.
    drop(events);
    eventually("the subscriber left", || {
        relay.state.metrics.event_streams.get() == 0
    })
    .await;
    let asked = producer.request(json!({"presence": "job"})).await;
    assert_eq!(asked["connections"], 0);
    relay.stop().await;
}

#[tokio::test]
async fn last_event_id_resumes_and_wins_over_since() {
    let relay = Relay::start().await;
    let mut producer = relay.client().await;
    let mut cursors = Vec::new();
    for n in 1..=4 {
        let reply = producer
            .request(json!({"recipient_uuid": "k", "message": format!("m{n}")}))
            .await;
        cursors.push(reply["cursor"].as_str().expect("cursor").to_owned());
    }
    // A first connect with ?since=: after m2.
    let path = format!("/events/k?since={}", cursors[1]);
    let mut events = Subscription::open(relay.addr, &path, &[]).await;
    assert_eq!(events.next().await.expect("event").data, "m3");
    assert_eq!(events.next().await.expect("event").data, "m4");
    // The browser's reconnect: Last-Event-ID is the newer position and wins.
    let mut resumed =
        Subscription::open(relay.addr, &path, &[("last-event-id", &cursors[2])]).await;
    let event = resumed.next().await.expect("event");
    assert_eq!(
        (event.data.as_str(), event.id.as_deref()),
        ("m4", Some(cursors[3].as_str()))
    );
    // earliest, and an id from another run: a gap event first.
    let mut all = Subscription::open(relay.addr, "/events/k?since=earliest", &[]).await;
    assert_eq!(all.next().await.expect("event").data, "m1");
    let mut lost = Subscription::open(
        relay.addr,
        "/events/k",
        &[("last-event-id", "otherrun.1:7")],
    )
    .await;
    let gap = lost.next().await.expect("gap event");
    assert_eq!(gap.event.as_deref(), Some("gap"));
    assert!(gap.id.is_some());
    assert_eq!(lost.next().await.expect("event").data, "m1");
    relay.stop().await;
}

#[tokio::test]
async fn without_a_position_a_subscriber_takes_the_pending_messages() {
    let relay = Relay::start().await;
    let mut producer = relay.client().await;
    let reply = producer
        .request(json!({"recipient_uuid": "k", "message": "waiting"}))
        .await;
    assert_eq!(reply["buffered"], true);
    let mut events = Subscription::open(relay.addr, "/events/k", &[]).await;
    let event = events.next().await.expect("event");
    assert_eq!(event.data, "waiting");
    assert_eq!(event.id.as_deref(), reply["cursor"].as_str());
    relay.stop().await;
}

#[tokio::test]
async fn an_idle_stream_gets_keep_alive_comments_and_ends_on_drain() {
    let relay = Relay::start_with(|c| c.ping_interval = Duration::from_millis(50)).await;
    let mut events = Subscription::open(relay.addr, "/events/quiet", &[]).await;
    let body = within("keep-alives", async {
        while events.comments < 3 {
            let frame = events.body.frame().await.expect("open").expect("frame");
            if let Ok(data) = frame.into_data() {
                events.comments += String::from_utf8_lossy(&data)
                    .matches(": keep-alive")
                    .count();
            }
        }
    });
    body.await;
    assert_eq!(relay.state.metrics.event_streams.get(), 1);
    let state = relay.state.clone();
    relay.stop().await;
    assert_eq!(events.next().await, None, "the stream ends on drain");
    assert_eq!(state.metrics.event_streams.get(), 0);
}

#[tokio::test]
async fn a_subscriber_that_stops_reading_is_cut_and_leaves_its_key() {
    let relay = Relay::start_with(|c| {
        c.max_queued_frames = 8;
        c.max_queued_bytes = 64 * 1024;
    })
    .await;
    // Subscribed, then never read again.
    let stalled = Subscription::open(relay.addr, "/events/slow", &[]).await;
    let mut producer = relay.client().await;
    let big = "x".repeat(60_000);
    for _ in 0..400 {
        producer
            .send_json(json!({"recipient_uuid": "slow", "message": big}))
            .await;
        if relay.state.metrics.closed_count(CloseReason::SlowConsumer) > 0 {
            break;
        }
    }
    producer.assert_alive().await;
    eventually("the stalled subscriber was cut", || {
        relay.state.metrics.closed_count(CloseReason::SlowConsumer) == 1
            && relay.state.metrics.event_streams.get() == 0
    })
    .await;
    let asked = producer.request(json!({"presence": "slow"})).await;
    assert_eq!(asked["connections"], 0);
    drop(stalled);
    relay.stop().await;
}

#[tokio::test]
async fn bad_requests_get_clear_statuses() {
    let relay = Relay::start_with(|c| c.max_key_length = 4).await;
    let (status, _, _) = common::http_request(relay.addr, "POST", "/events/k").await;
    assert_eq!(status, 405);
    let (status, _, body) = common::http_request(relay.addr, "GET", "/events/toolong").await;
    assert_eq!(status, 400);
    assert!(body.contains("too long"), "{body}");
    relay.stop().await;
}

#[tokio::test]
async fn a_python_client_reads_the_stream() {
    let relay = Relay::start().await;
    let mut producer = relay.client().await;
    producer
        .request(json!({"recipient_uuid": "py", "message": "for python"}))
        .await;
    let url = format!("http://{}/events/py", relay.addr);
    // The standard library only: what a worker without dependencies would write.
    let script = r#"
import sys, urllib.request
request = urllib.request.Request(sys.argv[1], headers={"Accept": "text/event-stream"})
with urllib.request.urlopen(request, timeout=10) as stream:
    for raw in stream:
        line = raw.decode().rstrip("\n")
        if line.startswith("data: "):
            print(line[len("data: "):], flush=True)
            break
"#;
    let output = within(
        "python",
        tokio::process::Command::new("python3")
            .args(["-c", script, &url])
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("python3 runs");
    assert!(output.status.success(), "{output:?}");
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "for python");
    relay.stop().await;
}
