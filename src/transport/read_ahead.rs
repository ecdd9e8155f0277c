//! A socket reader whose buffer costs nothing while the peer is idle.
//!
//! tungstenite reads through a buffer of fixed size for the life of a connection: small
//! keeps idle connections cheap, large saves syscalls on busy ones. `ReadAhead` serves
//! both. Idle or quiet connections read straight into tungstenite's small buffer. When a
//! read fills that buffer, the peer is sending in bulk, so later reads go through a
//! larger read-ahead buffer (one syscall for many frames) until a read comes back short:
//! the burst is over and the buffer is freed.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};

/// Size of the read-ahead buffer lent to a connection while it sends in bulk.
pub const READ_AHEAD_SIZE: usize = 16 * 1024;

/// Bytes read from the socket but not yet handed to the reader.
#[derive(Debug)]
struct Ahead {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    /// The last socket read came back short: free the buffer once it is drained.
    drained: bool,
}

/// Wraps a socket; see the module docs.
#[derive(Debug)]
pub struct ReadAhead<S> {
    inner: S,
    /// Present only while the peer is sending in bulk.
    ahead: Option<Box<Ahead>>,
}

impl<S> ReadAhead<S> {
    /// Wraps `inner`, starting in the idle (unbuffered) state.
    pub fn new(inner: S) -> Self {
        Self { inner, ahead: None }
    }

    /// Wraps `inner`, serving `unread` (bytes already taken from it, e.g. by the HTTP
    /// layer past the handshake) before anything else.
    pub fn with_unread(inner: S, unread: &[u8]) -> Self {
        if unread.is_empty() {
            return Self::new(inner);
        }
        let ahead = Ahead {
            buf: unread.into(),
            start: 0,
            end: unread.len(),
            drained: true,
        };
        Self {
            inner,
            ahead: Some(Box::new(ahead)),
        }
    }

    /// The socket underneath. Reading from it directly skips any read-ahead bytes.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Whether a read-ahead buffer is currently allocated.
    pub fn is_buffering(&self) -> bool {
        self.ahead.is_some()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ReadAhead<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if out.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        let Some(ahead) = this.ahead.as_mut() else {
            let room = out.remaining();
            let before = out.filled().len();
            ready!(Pin::new(&mut this.inner).poll_read(cx, out))?;
            if out.filled().len() - before == room {
                // The reader's buffer was filled: more is probably waiting.
                this.ahead = Some(Box::new(Ahead {
                    buf: vec![0; READ_AHEAD_SIZE].into_boxed_slice(),
                    start: 0,
                    end: 0,
                    drained: false,
                }));
            }
            return Poll::Ready(Ok(()));
        };
        if ahead.start == ahead.end {
            let mut fill = ReadBuf::new(&mut ahead.buf);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut fill))?;
            let n = fill.filled().len();
            if n == 0 {
                // End of stream: nothing more to buffer.
                this.ahead = None;
                return Poll::Ready(Ok(()));
            }
            ahead.drained = n < ahead.buf.len();
            ahead.start = 0;
            ahead.end = n;
        }
        let n = out.remaining().min(ahead.end - ahead.start);
        out.put_slice(&ahead.buf[ahead.start..ahead.start + n]);
        ahead.start += n;
        if ahead.start == ahead.end && ahead.drained {
            this.ahead = None;
        }
        Poll::Ready(Ok(()))
    }
}

write_through_to_inner!(ReadAhead);

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn small_reads_stay_unbuffered_and_bulk_reads_buffer_until_drained() {
        let (mut peer, socket) = tokio::io::duplex(64 * 1024);
        let mut reader = ReadAhead::new(socket);
        let mut small = [0u8; 8];

        peer.write_all(b"hi").await.expect("write");
        let n = reader.read(&mut small).await.expect("read");
        assert_eq!(&small[..n], b"hi");
        assert!(!reader.is_buffering(), "a short read keeps it idle");

        let bulk: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
        peer.write_all(&bulk).await.expect("write");
        let mut got = Vec::new();
        while got.len() < bulk.len() {
            let n = reader.read(&mut small).await.expect("read");
            got.extend_from_slice(&small[..n]);
            if got.len() == 8 {
                assert!(reader.is_buffering(), "a full read starts buffering");
            }
        }
        assert_eq!(got, bulk, "bytes arrive intact and in order");
        assert!(!reader.is_buffering(), "drained: the buffer is freed");

        drop(peer);
        assert_eq!(reader.read(&mut small).await.expect("eof"), 0);
    }

    #[tokio::test]
    async fn unread_bytes_come_first_and_are_then_freed() {
        let (mut peer, socket) = tokio::io::duplex(64);
        let mut reader = ReadAhead::with_unread(socket, b"early ");
        peer.write_all(b"late").await.expect("write");
        drop(peer);
        let mut got = Vec::new();
        reader.read_to_end(&mut got).await.expect("read");
        assert_eq!(got, b"early late");
        assert!(!reader.is_buffering());
    }
}
