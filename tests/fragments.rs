//! Fragmented messages (RFC 6455 section 5.4), both ways: a client's fragments are put
//! together, but a message may not stay unfinished past `--message-timeout`; large
//! deliveries go out as bounded fragments that clients put back together; and frames a
//! client pipelines behind its handshake are read like any other.

mod common;

use std::io::Cursor;
use std::time::Duration;

use common::{within, Client, Relay, GREETING};
use futures_util::{SinkExt, StreamExt};
use notify_relay::observability::metrics::CloseReason;
use notify_relay::transport::fragment::FRAGMENT_SIZE;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::{Frame, FrameHeader};
use tokio_tungstenite::tungstenite::Message;

/// A short bound, so the test sees it pass.
const MESSAGE_TIMEOUT: Duration = Duration::from_millis(600);
/// How often the stalling client sends an empty continuation frame.
const STALL_EVERY: Duration = Duration::from_millis(50);
const TEXT: OpCode = OpCode::Data(Data::Text);
const CONTINUE: OpCode = OpCode::Data(Data::Continue);

fn fragment(opcode: Data, payload: &str, is_final: bool) -> Message {
    Message::Frame(Frame::message(
        payload.as_bytes().to_vec(),
        OpCode::Data(opcode),
        is_final,
    ))
}

#[tokio::test]
async fn a_message_kept_open_with_empty_continuations_is_closed_at_the_bound() {
    let relay = Relay::start_with(|c| c.message_timeout = MESSAGE_TIMEOUT).await;
    let mut bystander = relay.registered("bystander").await;
    let mut client = relay.client().await;

    let started = tokio::time::Instant::now();
    client
        .ws
        .send(fragment(Data::Text, "{", false))
        .await
        .expect("first fragment");
    // Empty continuations forever (bounded here by the test's deadline), Pongs answered:
    // only the message bound can end this.
    let mut pace = tokio::time::interval(STALL_EVERY);
    let code = within("the close", async {
        loop {
            tokio::select! {
                frame = client.ws.next() => match frame {
                    Some(Ok(Message::Close(Some(close)))) => return close.code,
                    Some(Ok(_)) => {}
                    other => panic!("expected a Close frame, got {other:?}"),
                },
                _ = pace.tick() => {
                    let _ = client.ws.send(fragment(Data::Continue, "", false)).await;
                }
            }
        }
    })
    .await;
    let elapsed = started.elapsed();
    assert_eq!(code, CloseCode::Policy);
    assert!(elapsed >= MESSAGE_TIMEOUT, "closed after {elapsed:?}");
    common::eventually("message timeout counted", || {
        relay
            .state
            .metrics
            .closed_count(CloseReason::MessageTimeout)
            == 1
    })
    .await;

    let mut sender = relay.client().await;
    assert_eq!(sender.deliver("bystander", json!("unaffected")).await, 1);
    assert_eq!(bystander.recv_text().await, "unaffected");
    relay.stop().await;
}

#[tokio::test]
async fn a_fragmented_message_finished_in_time_is_delivered() {
    let relay = Relay::start_with(|c| c.message_timeout = MESSAGE_TIMEOUT).await;
    let mut receiver = relay.registered("k").await;
    let mut sender = relay.client().await;
    let text = json!({"id": 1, "recipient_uuid": "k", "message": "in three parts"}).to_string();
    let (a, rest) = text.split_at(10);
    let (b, c) = rest.split_at(10);
    sender
        .ws
        .feed(fragment(Data::Text, a, false))
        .await
        .expect("feed");
    sender
        .ws
        .feed(Message::Ping(Default::default()))
        .await
        .expect("feed");
    sender
        .ws
        .feed(fragment(Data::Continue, b, false))
        .await
        .expect("feed");
    sender
        .ws
        .send(fragment(Data::Continue, c, true))
        .await
        .expect("send");
    assert_eq!(receiver.recv_text().await, "in three parts");
    assert_eq!(sender.recv_json().await["delivered"], 1);
    // Well past the bound, both connections are still open: nothing is left unfinished.
    let later = tokio::time::Instant::now() + 2 * MESSAGE_TIMEOUT;
    tokio::select! {
        () = tokio::time::sleep_until(later) => {}
        frame = receiver.ws.next() => panic!("unexpected frame {frame:?}"),
    }
    sender.assert_alive().await;
    receiver.assert_alive().await;
    assert_eq!(
        relay
            .state
            .metrics
            .closed_count(CloseReason::MessageTimeout),
        0
    );
    relay.stop().await;
}

#[tokio::test]
async fn a_large_delivery_arrives_in_bounded_fragments_and_whole() {
    let relay = Relay::start().await;
    let mut sender = relay.client().await;
    // Multi-byte characters, so fragment boundaries have to respect them.
    let message: String = "notify €🙂 ".repeat(40_000);
    assert!(message.len() > 8 * FRAGMENT_SIZE);

    // Frame by frame, with a plain TCP client reading the raw stream.
    let url = relay.url();
    let mut raw = tokio::net::TcpStream::connect(relay.addr)
        .await
        .expect("connect");
    let key = "dGhlIHNhbXBsZSBub25jZQ==";
    let request = format!(
        "GET / HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n",
        relay.addr
    );
    let register =
        masked_text(&json!({"recipient_uuid": "big", "message": "connected"}).to_string());
    raw.write_all(request.as_bytes()).await.expect("handshake");
    let mut frames = RawFrames::new(raw);
    frames.skip_http_response().await;
    assert_eq!(
        frames.next().await,
        (TEXT, true, GREETING.as_bytes().to_vec())
    );
    frames.stream.write_all(&register).await.expect("register");
    common::eventually("registered", || relay.state.engine.stats().keys == 1).await;

    assert_eq!(sender.deliver("big", json!(message.clone())).await, 1);
    let mut joined = Vec::new();
    let mut count = 0;
    loop {
        let (opcode, fin, payload) = frames.next().await;
        assert_eq!(opcode, if count == 0 { TEXT } else { CONTINUE });
        assert!(
            payload.len() <= FRAGMENT_SIZE,
            "a frame of {} bytes",
            payload.len()
        );
        assert!(
            std::str::from_utf8(&payload).is_ok(),
            "each fragment is whole characters"
        );
        joined.extend(payload);
        count += 1;
        if fin {
            break;
        }
    }
    assert!(count > 8);
    assert_eq!(joined, message.as_bytes());

    // And a WebSocket client (tungstenite) gets the message whole.
    let mut client = Client::connect(&url).await;
    client.register("big-client").await;
    assert_eq!(
        sender.deliver("big-client", json!(message.clone())).await,
        1
    );
    assert_eq!(client.recv_text().await, message);
    relay.stop().await;
}

#[tokio::test]
async fn frames_pipelined_behind_the_handshake_are_read() {
    let relay = Relay::start_streams_off().await;
    let mut raw = tokio::net::TcpStream::connect(relay.addr)
        .await
        .expect("connect");
    let request = format!(
        "GET / HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        relay.addr
    );
    let mut bytes = request.into_bytes();
    // A registration with an id, its first half a fragment of its own, in the same write.
    let frame = json!({"id": 5, "recipient_uuid": "early", "message": "connected"}).to_string();
    let (a, b) = frame.split_at(8);
    bytes.extend(masked(Data::Text, false, a.as_bytes()));
    bytes.extend(masked(Data::Continue, true, b.as_bytes()));
    raw.write_all(&bytes).await.expect("write");
    let mut frames = RawFrames::new(raw);
    frames.skip_http_response().await;
    assert_eq!(
        frames.next().await,
        (TEXT, true, GREETING.as_bytes().to_vec())
    );
    assert_eq!(
        frames.next().await,
        (TEXT, true, br#"{"id":5,"ok":true}"#.to_vec())
    );
    assert_eq!(relay.state.engine.stats().keys, 1);
    relay.stop().await;
}

/// A masked client frame.
fn masked(opcode: Data, fin: bool, payload: &[u8]) -> Vec<u8> {
    let mut frame = Frame::message(payload.to_vec(), OpCode::Data(opcode), fin);
    frame.header_mut().mask = Some([7, 7, 7, 7]);
    let mut bytes = Vec::new();
    frame.format(&mut bytes).expect("format");
    bytes
}

fn masked_text(text: &str) -> Vec<u8> {
    masked(Data::Text, true, text.as_bytes())
}

/// Server frames read off a raw TCP stream, one at a time (unmasked, as servers send).
struct RawFrames {
    stream: tokio::net::TcpStream,
    buf: Vec<u8>,
}

impl RawFrames {
    fn new(stream: tokio::net::TcpStream) -> Self {
        Self {
            stream,
            buf: Vec::new(),
        }
    }

    async fn fill(&mut self, at_least: usize) {
        while self.buf.len() < at_least {
            let mut chunk = [0u8; 64 * 1024];
            let n = within("bytes", self.stream.read(&mut chunk))
                .await
                .expect("read");
            assert!(n > 0, "connection closed");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Reads past the `101 Switching Protocols` response.
    async fn skip_http_response(&mut self) {
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                assert!(self.buf.starts_with(b"HTTP/1.1 101"), "{:?}", self.buf);
                self.buf.drain(..end + 4);
                return;
            }
            let len = self.buf.len();
            self.fill(len + 1).await;
        }
    }

    /// (opcode, fin, payload) of the next frame.
    async fn next(&mut self) -> (OpCode, bool, Vec<u8>) {
        loop {
            let mut cursor = Cursor::new(&self.buf[..]);
            if let Some((header, len)) = FrameHeader::parse(&mut cursor).expect("a valid header") {
                let start = cursor.position() as usize;
                let end = start + len as usize;
                if self.buf.len() >= end {
                    assert!(header.mask.is_none(), "server frames are not masked");
                    let payload = self.buf[start..end].to_vec();
                    self.buf.drain(..end);
                    return (header.opcode, header.is_final, payload);
                }
            }
            let len = self.buf.len();
            self.fill(len + 1).await;
        }
    }
}
