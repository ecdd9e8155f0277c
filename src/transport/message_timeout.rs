//! A time bound on how long a client's message may stay unfinished.
//!
//! RFC 6455 lets a message arrive in any number of fragments, with Pings and Pongs in
//! between, so a client can keep one open forever (a first fragment, then empty
//! continuation frames) while answering every Ping: the heartbeat never ends it.
//! tungstenite assembles messages out of sight, so the relay follows the frame headers
//! in the bytes it hands to tungstenite ([`FrameTracker`]), and [`MessageTimeout`] fails
//! the read once a message has been open longer than `--message-timeout`. The
//! connection then closes with 1008.
//!
//! A message is open from the read that brought its first frame's header to the read
//! that brought the last byte of its final frame, so a single large frame that trickles
//! in is bounded too.

use std::future::Future;
use std::io::{self, Cursor};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, ReadBuf};
use tokio::time::{sleep_until, Instant, Sleep};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader;

/// The longest frame header: 2 bytes, an 8-byte length and a 4-byte mask.
const MAX_HEADER: usize = 14;

/// Whether a message is open after some bytes were observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Open {
    /// No message is open.
    No,
    /// A message is open, and it started in these bytes.
    Started,
    /// A message is open that started earlier.
    Continuing,
}

/// Where the tracker is in the byte stream.
#[derive(Debug, Clone, Copy)]
enum Position {
    /// Collecting a frame header; `have` bytes of it are in `header`.
    Header { have: u8 },
    /// Skipping a payload; `ends_message` if its frame is a message's final one.
    Payload { left: u64, ends_message: bool },
    /// The stream is not valid WebSocket framing: tungstenite fails the connection, so
    /// there is nothing left to follow.
    Lost,
}

/// Follows the frame boundaries of a client's byte stream and tells whether a data
/// message is open. Pure: it sees only the bytes it is given.
#[derive(Debug)]
pub struct FrameTracker {
    /// The header being collected.
    header: [u8; MAX_HEADER],
    position: Position,
    /// A data message has started and its final frame has not been read to its end.
    in_message: bool,
}

impl Default for FrameTracker {
    fn default() -> Self {
        Self {
            header: [0; MAX_HEADER],
            position: Position::Header { have: 0 },
            in_message: false,
        }
    }
}

impl FrameTracker {
    /// Follows `bytes`, the next bytes of the stream.
    pub fn observe(&mut self, mut bytes: &[u8]) -> Open {
        let mut started = false;
        while !bytes.is_empty() {
            match self.position {
                Position::Lost => return Open::No,
                Position::Payload { left, ends_message } => {
                    let n = left.min(bytes.len() as u64);
                    bytes = &bytes[n as usize..];
                    self.payload_left(left - n, ends_message);
                }
                Position::Header { have: 0 } if bytes.len() >= MAX_HEADER => {
                    // The usual case, a whole header at hand: parse it in place.
                    let mut cursor = Cursor::new(bytes);
                    match FrameHeader::parse(&mut cursor) {
                        Ok(Some((header, len))) => {
                            bytes = &bytes[cursor.position() as usize..];
                            started |= self.frame_started(&header, len);
                        }
                        // A whole header always parses; anything else is invalid.
                        Ok(None) | Err(_) => self.lose(),
                    }
                }
                Position::Header { have } => {
                    let have = usize::from(have);
                    let take = (MAX_HEADER - have).min(bytes.len());
                    self.header[have..have + take].copy_from_slice(&bytes[..take]);
                    let mut cursor = Cursor::new(&self.header[..have + take]);
                    match FrameHeader::parse(&mut cursor) {
                        Ok(Some((header, len))) => {
                            // The header ended inside what was copied: the rest is payload.
                            let used = cursor.position() as usize - have;
                            bytes = &bytes[used..];
                            started |= self.frame_started(&header, len);
                        }
                        Ok(None) => {
                            bytes = &bytes[take..];
                            self.position = Position::Header {
                                have: (have + take) as u8,
                            };
                        }
                        Err(_) => self.lose(),
                    }
                }
            }
        }
        match (self.in_message, started) {
            (false, _) => Open::No,
            (true, true) => Open::Started,
            (true, false) => Open::Continuing,
        }
    }

    /// A frame with `header` and a payload of `len` bytes begins; true if it starts a
    /// message.
    fn frame_started(&mut self, header: &FrameHeader, len: u64) -> bool {
        let mut started = false;
        let ends_message = match header.opcode {
            OpCode::Data(Data::Text | Data::Binary) => {
                started = !self.in_message;
                self.in_message = true;
                header.is_final
            }
            OpCode::Data(Data::Continue) => header.is_final,
            // Control frames (and reserved opcodes, which do not parse) end nothing.
            _ => false,
        };
        self.payload_left(len, ends_message);
        started
    }

    /// Gives up following an invalid stream.
    fn lose(&mut self) {
        self.position = Position::Lost;
        self.in_message = false;
    }

    /// Moves on with `left` payload bytes to skip; at zero the frame is done.
    fn payload_left(&mut self, left: u64, ends_message: bool) {
        if left > 0 {
            self.position = Position::Payload { left, ends_message };
            return;
        }
        if ends_message {
            self.in_message = false;
        }
        self.position = Position::Header { have: 0 };
    }
}

/// The error a read fails with when a message stayed unfinished too long.
#[derive(Debug)]
pub struct MessageTimedOut;

impl std::fmt::Display for MessageTimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("message not finished in time")
    }
}

impl std::error::Error for MessageTimedOut {}

impl MessageTimedOut {
    /// Whether `error` is this one.
    pub fn is(error: &io::Error) -> bool {
        error
            .get_ref()
            .is_some_and(|inner| inner.is::<MessageTimedOut>())
    }

    fn error() -> io::Error {
        io::Error::new(io::ErrorKind::TimedOut, MessageTimedOut)
    }
}

/// A socket whose reads fail with [`MessageTimedOut`] once a message has been open for
/// longer than the limit. Writes pass through. See the module docs.
#[derive(Debug)]
pub struct MessageTimeout<S> {
    inner: S,
    /// How long a message may stay open, in milliseconds; 0 until
    /// [`MessageTimeout::set_limit`]. Four bytes, not an `Option<Duration>`'s sixteen:
    /// every idle connection's task holds one, and those eight bytes took it past
    /// jemalloc's 512-byte class.
    limit_ms: u32,
    frames: FrameTracker,
    /// When the open message must be finished.
    deadline: Option<Instant>,
    /// Wakes a reader waiting for the rest of an open message at its deadline. Made
    /// only when a read has to wait while a message is open, so complete messages cost
    /// no timer.
    timer: Option<Pin<Box<Sleep>>>,
}

impl<S> MessageTimeout<S> {
    /// Wraps `inner`, with no limit yet.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            limit_ms: 0,
            frames: FrameTracker::default(),
            deadline: None,
            timer: None,
        }
    }

    /// Limits how long a message may stay open; applies to messages started later.
    /// Kept in whole milliseconds: rounded up, at least 1, at most about 49 days.
    pub fn set_limit(&mut self, limit: Duration) {
        let ms = limit.as_nanos().div_ceil(1_000_000).max(1);
        self.limit_ms = u32::try_from(ms).unwrap_or(u32::MAX);
    }

    /// The socket underneath. Reading from it directly bypasses the tracking.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for MessageTimeout<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this
            .deadline
            .is_some_and(|deadline| Instant::now() >= deadline)
        {
            return Poll::Ready(Err(MessageTimedOut::error()));
        }
        let before = out.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, out) {
            Poll::Pending => {
                if let Some(deadline) = this.deadline {
                    let timer = this
                        .timer
                        .get_or_insert_with(|| Box::pin(sleep_until(deadline)));
                    if timer.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Err(MessageTimedOut::error()));
                    }
                }
                return Poll::Pending;
            }
            Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
            Poll::Ready(Ok(())) => {}
        }
        if this.limit_ms == 0 {
            return Poll::Ready(Ok(()));
        }
        let limit = Duration::from_millis(u64::from(this.limit_ms));
        match this.frames.observe(&out.filled()[before..]) {
            Open::No => {
                this.deadline = None;
                this.timer = None;
            }
            Open::Started => {
                this.deadline = Some(Instant::now() + limit);
                this.timer = None;
            }
            Open::Continuing => {}
        }
        Poll::Ready(Ok(()))
    }
}

write_through_to_inner!(MessageTimeout);

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_tungstenite::tungstenite::protocol::frame::coding::Control;
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;

    /// A client frame (masked) as bytes.
    fn frame(opcode: OpCode, payload: &[u8], is_final: bool) -> Vec<u8> {
        let mut frame = match opcode {
            OpCode::Control(Control::Ping) => Frame::ping(payload.to_vec()),
            _ => Frame::message(payload.to_vec(), opcode, is_final),
        };
        frame.header_mut().mask = Some([1, 2, 3, 4]);
        let mut bytes = Vec::new();
        frame.format(&mut bytes).expect("format");
        bytes
    }

    const TEXT: OpCode = OpCode::Data(Data::Text);
    const CONTINUE: OpCode = OpCode::Data(Data::Continue);
    const PING: OpCode = OpCode::Control(Control::Ping);

    #[test]
    fn complete_messages_leave_nothing_open_however_the_bytes_are_split() {
        let mut stream = frame(TEXT, b"hello", true);
        stream.extend(frame(TEXT, &[b'x'; 300], true)); // 16-bit length
        stream.extend(frame(TEXT, &[b'y'; 70_000], true)); // 64-bit length
        for chunk in [1, 2, 3, 7, 13, 512, stream.len()] {
            let mut tracker = FrameTracker::default();
            let mut open_seen = false;
            for piece in stream.chunks(chunk) {
                open_seen |= tracker.observe(piece) != Open::No;
            }
            assert_eq!(tracker.observe(&[]), Open::No, "chunks of {chunk}");
            assert_eq!(open_seen, chunk < stream.len(), "chunks of {chunk}");
        }
    }

    #[test]
    fn a_fragmented_message_is_open_until_its_final_frame_ends() {
        let mut tracker = FrameTracker::default();
        assert_eq!(tracker.observe(&frame(TEXT, b"{", false)), Open::Started);
        // Control frames in between do not finish it, nor do empty continuations.
        assert_eq!(tracker.observe(&frame(PING, b"", true)), Open::Continuing);
        for _ in 0..3 {
            assert_eq!(
                tracker.observe(&frame(CONTINUE, b"", false)),
                Open::Continuing
            );
        }
        let last = frame(CONTINUE, b"}", true);
        let (head, tail) = last.split_at(last.len() - 1);
        assert_eq!(tracker.observe(head), Open::Continuing);
        assert_eq!(tracker.observe(tail), Open::No);
        // The next message starts afresh, even in the same read as the end of one.
        let mut both = frame(TEXT, b"a", true);
        both.extend(frame(TEXT, b"b", false));
        assert_eq!(tracker.observe(&both), Open::Started);
    }

    #[test]
    fn invalid_framing_stops_the_tracking() {
        let mut tracker = FrameTracker::default();
        assert_eq!(tracker.observe(&frame(TEXT, b"x", false)), Open::Started);
        // Opcode 3 is reserved: tungstenite fails the connection.
        assert_eq!(tracker.observe(&[0x83, 0x80, 0, 0, 0, 0]), Open::No);
        assert_eq!(tracker.observe(&frame(TEXT, b"y", false)), Open::No);
    }

    #[tokio::test(start_paused = true)]
    async fn a_read_fails_once_a_message_stays_open_past_the_limit() {
        let limit = Duration::from_secs(5);
        let (mut client, server) = tokio::io::duplex(1024);
        let mut socket = MessageTimeout::new(server);
        socket.set_limit(limit);
        let mut buf = [0u8; 64];

        // A complete message: nothing is open, reads wait as long as they like.
        client
            .write_all(&frame(TEXT, b"done", true))
            .await
            .expect("write");
        assert!(socket.read(&mut buf).await.expect("read") > 0);
        assert!(
            tokio::time::timeout(limit * 2, socket.read(&mut buf))
                .await
                .is_err(),
            "an idle read is not bounded"
        );

        // An unfinished one: kept open with empty continuations, the read fails at the
        // limit, counted from its first frame.
        let started = Instant::now();
        client
            .write_all(&frame(TEXT, b"{", false))
            .await
            .expect("write");
        let error = loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let _ = client.write_all(&frame(CONTINUE, b"", false)).await;
            match socket.read(&mut buf).await {
                Ok(_) => continue,
                Err(error) => break error,
            }
        };
        assert!(MessageTimedOut::is(&error), "{error}");
        assert!(started.elapsed() >= limit);
        assert!(started.elapsed() < limit + Duration::from_secs(2));

        // Waiting with nothing arriving fails at the deadline too.
        let (mut client, server) = tokio::io::duplex(1024);
        let mut socket = MessageTimeout::new(server);
        socket.set_limit(limit);
        client
            .write_all(&frame(TEXT, b"{", false))
            .await
            .expect("write");
        assert!(socket.read(&mut buf).await.expect("read") > 0);
        let waited = Instant::now();
        let error = socket.read(&mut buf).await.expect_err("times out");
        assert!(MessageTimedOut::is(&error));
        assert!(waited.elapsed() >= limit - Duration::from_millis(1));
    }
}
