//! Outgoing messages as frames of bounded size.
//!
//! tungstenite copies each frame whole into the connection's write buffer, so a message
//! sent as one frame makes that buffer as large as the message, for every recipient at
//! once (a 1 MiB broadcast to 200 connections: 200 MiB). Sent as fragments of at most
//! [`FRAGMENT_SIZE`] bytes, the payload stays shared by all recipients and each write
//! buffer holds about one fragment. Every WebSocket client puts fragments back together
//! (RFC 6455 section 5.4): browsers, Python `websockets`, tungstenite. Fragments are cut
//! at character boundaries, so each one is valid UTF-8 on its own, which also suits
//! clients that decode frame by frame.

use bytes::Bytes;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

/// The largest frame the relay writes: the size of the write buffer, so a write buffer
/// never grows past about two frames.
pub const FRAGMENT_SIZE: usize = 16 * 1024;

/// `text` as the messages to write: the text message itself when it fits in
/// [`FRAGMENT_SIZE`], otherwise a text frame and continuation frames, none larger than
/// that.
pub fn frames(text: Utf8Bytes) -> Fragments {
    if text.len() <= FRAGMENT_SIZE {
        return Fragments::Whole(Some(text));
    }
    Fragments::Parts {
        payload: Bytes::from(text),
        at: 0,
        done: false,
    }
}

/// The frames of one text message; see [`frames`].
#[derive(Debug)]
pub enum Fragments {
    /// A message small enough for one frame (most of them): written as it is.
    Whole(Option<Utf8Bytes>),
    /// A large message, cut into fragments.
    Parts {
        /// The whole message (valid UTF-8), shared by every fragment.
        payload: Bytes,
        /// Where the next fragment starts.
        at: usize,
        /// The final frame has been produced.
        done: bool,
    },
}

impl Iterator for Fragments {
    type Item = Message;

    fn next(&mut self) -> Option<Message> {
        let (payload, at, done) = match self {
            Fragments::Whole(text) => return text.take().map(Message::Text),
            Fragments::Parts { payload, at, done } => (payload, at, done),
        };
        if *done {
            return None;
        }
        let len = payload.len();
        let mut end = (*at + FRAGMENT_SIZE).min(len);
        // Back up to a character boundary: UTF-8 continuation bytes are 0b10xxxxxx.
        while end < len && end > *at && payload[end] & 0xc0 == 0x80 {
            end -= 1;
        }
        let opcode = if *at == 0 { Data::Text } else { Data::Continue };
        let is_final = end == len;
        let piece = payload.slice(*at..end);
        *at = end;
        *done = is_final;
        Some(Message::Frame(Frame::message(
            piece,
            OpCode::Data(opcode),
            is_final,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (opcode, is_final, payload) of each frame.
    fn split(text: &str) -> Vec<(OpCode, bool, String)> {
        frames(Utf8Bytes::from(text))
            .map(|message| match message {
                Message::Text(text) => (TEXT, true, text.as_str().to_owned()),
                Message::Frame(frame) => {
                    let header = frame.header().clone();
                    let payload = String::from_utf8(frame.into_payload().to_vec())
                        .expect("every fragment is valid UTF-8");
                    (header.opcode, header.is_final, payload)
                }
                other => panic!("expected a frame, got {other:?}"),
            })
            .collect()
    }

    const TEXT: OpCode = OpCode::Data(Data::Text);
    const CONTINUE: OpCode = OpCode::Data(Data::Continue);

    #[test]
    fn small_messages_are_one_final_text_frame() {
        assert_eq!(split("hello"), [(TEXT, true, "hello".to_owned())]);
        assert_eq!(split(""), [(TEXT, true, String::new())]);
        let exact = "x".repeat(FRAGMENT_SIZE);
        assert_eq!(split(&exact), [(TEXT, true, exact)]);
    }

    #[test]
    fn large_messages_are_bounded_fragments_that_join_back() {
        let text = "y".repeat(2 * FRAGMENT_SIZE + 1);
        let frames = split(&text);
        let shape: Vec<_> = frames
            .iter()
            .map(|(op, fin, p)| (*op, *fin, p.len()))
            .collect();
        assert_eq!(
            shape,
            [
                (TEXT, false, FRAGMENT_SIZE),
                (CONTINUE, false, FRAGMENT_SIZE),
                (CONTINUE, true, 1)
            ]
        );
        let joined: String = frames.into_iter().map(|(_, _, p)| p).collect();
        assert_eq!(joined, text);
    }

    #[test]
    fn fragments_end_on_character_boundaries() {
        // Three-byte characters never line up with the fragment size.
        let text = "€".repeat(FRAGMENT_SIZE);
        let frames = split(&text);
        assert!(frames.len() > 1);
        assert!(frames.iter().all(|(_, _, p)| p.len() <= FRAGMENT_SIZE));
        let joined: String = frames.into_iter().map(|(_, _, p)| p).collect();
        assert_eq!(joined, text);
    }
}
