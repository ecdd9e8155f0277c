//! One WebSocket connection: greeting, read loop, batched writer and heartbeat.
//!
//! Everything runs in a single task that waits on the socket and the outbox together (one
//! `poll_fn`, taking turns when both are ready). The keep-alive and the drain have no
//! timer or waiter here: the relay's one keep-alive timer (`heartbeat`) wakes the task
//! through its outbox when a Ping is due, a Pong is overdue or the relay shuts down. One
//! task (rather than a reader, a writer and a pinger) keeps an idle connection to about
//! 1.15 KiB. The task ends with a [`CloseReason`], and on every path it releases its key
//! and closes its outbox, so late producers stop counting it as a recipient.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use log::{debug, info, log, trace, Level};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{timeout, Instant};
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError, ProtocolError};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use uuid::Uuid;

use crate::delivery::engine::{Preamble, Start};
use crate::delivery::publish::publish;
use crate::message::Since;
use crate::observability::log_limit::{self, Admit, LogLimit, SharedLogLimit};
use crate::observability::log_text::{escaped, preview};
use crate::observability::metrics::{CloseReason, DropReason};
use crate::peer::beat::Due;
use crate::peer::outbox::{Drained, OutboxLimits};
use crate::peer::registry::{Peer, PeerId};
use crate::policy::auth::UNAUTHORIZED;
use crate::policy::limits::{FrameLimit, FrameVerdict, IpSlot};
use crate::protocol::{self, Command, Frame, Rejection, Reply, Request};
use crate::state::RelayState;
use crate::transport::fragment;
use crate::transport::heartbeat::Slot;
use crate::transport::message_timeout::{MessageTimedOut, MessageTimeout};
use crate::transport::read_ahead::ReadAhead;

/// How long the relay waits for the client's half of a close handshake it started.
const CLOSE_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// How many write batches a connection counts as busy after a batch of several frames.
const BUSY_BATCHES: u8 = 8;
/// Chunk size for discarding input after a desynchronising error.
const DISCARD_BUFFER_SIZE: usize = 8 * 1024;

/// What a connection runs over: a TCP stream, or TLS over one. Code that serves
/// connections is generic over it, so the plain path is compiled for `TcpStream` itself
/// and pays nothing for TLS being possible.
pub trait Transport: AsyncRead + AsyncWrite + Unpin + Send + 'static {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Transport for T {}

/// The socket of a WebSocket connection: TCP (or TLS over TCP), read through
/// [`ReadAhead`], with the time bound on unfinished messages.
pub type Socket<S = TcpStream> = MessageTimeout<ReadAhead<S>>;

/// The socket of an upgraded connection. `early` are bytes the client sent behind its
/// handshake, already read by the HTTP layer: the socket serves them first, so the
/// message tracking sees every byte.
pub fn socket<S: Transport>(stream: S, early: &[u8]) -> Socket<S> {
    MessageTimeout::new(ReadAhead::with_unread(stream, early))
}

/// What woke a connection's task.
enum Event {
    /// Its outbox has frames, or the keep-alive timer has something for it.
    Outbox,
    /// The socket gave a message, an error, or its end (`None`). The end is a variant,
    /// not `next_event` returning `Option<Event>`: that wrapper made the connection's
    /// future larger (592 bytes in a debug build against 536; see `tests`).
    Frame(Option<Result<Message, WsError>>),
}

/// A connection that ends with a reason.
type Ended = Result<(), CloseReason>;

/// What the handshake granted a connection, held until the socket is closed.
#[derive(Debug)]
pub struct Admitted {
    /// Its share of `--max-connections`.
    pub slot: OwnedSemaphorePermit,
    /// Its place in its client IP's `--max-connections-per-ip`, when that is set; boxed,
    /// so a relay without that limit does not carry its room in every connection.
    pub per_ip: Option<Box<IpSlot>>,
    /// Whether its handshake carried a publisher token (or none is required).
    pub may_publish: bool,
}

/// Serves one upgraded WebSocket until it closes.
///
/// A plain function returning the task's future, so the socket is stored once in that
/// future (inside the [`Connection`]), not once as an argument and again as a field:
/// this future is most of what an idle connection costs.
pub fn serve<S: Transport>(
    mut ws: WebSocketStream<Socket<S>>,
    remote: SocketAddr,
    state: Arc<RelayState>,
    admitted: Admitted,
) -> impl Future<Output = ()> + Send {
    ws.get_mut().set_limit(state.config.message_timeout);
    let frame_limit = FrameLimit::new(&state.config.limits, Instant::now());
    let peer = Peer::new(OutboxLimits::from_config(&state.config));
    // Its keep-alive is the relay's one timer (see `heartbeat`), not a timer here.
    let keepalive = state.keepalive.add(&peer);
    let Admitted {
        slot,
        per_ip,
        may_publish,
    } = admitted;
    let mut connection = Connection {
        peer,
        keepalive,
        key: None,
        watching: None,
        log_limit: None,
        ws,
        state,
        frame_limit,
        _slot: slot,
        _per_ip: per_ip,
        may_publish,
        busy: 0,
        outbox_first: false,
    };
    // Here, not in the async block: that block keeps every value it captures (`remote`)
    // for the connection's whole life.
    connection.opened(remote);
    // An async block that uses `connection` in place: an `async fn` taking it by value
    // would store it twice (rust-lang/rust#62958).
    async move {
        let reason = match connection.run().await {
            Ok(()) => CloseReason::ClientClose,
            Err(reason) => reason,
        };
        connection.ended(reason);
        // Boxed, like the write paths below: an await point's state is part of every
        // connection's task, idle or not, so rarely-taken paths keep theirs on the heap.
        Box::pin(connection.close_for(reason)).await;
    }
}

struct Connection<S> {
    /// What other tasks reach: this connection's id and outbox.
    peer: Arc<Peer>,
    /// The key this connection is registered under: the reverse map, one entry. The
    /// same allocation as the key in the engine's map when this connection made the
    /// entry (see `Engine::subscribe`): one copy of the key per idle connection, not two.
    key: Option<Arc<str>>,
    /// The keys whose presence this connection watches; made on its first watch. Boxed:
    /// a set inline would add its 48 bytes to every connection's task, watching or not.
    #[allow(clippy::box_collection)]
    watching: Option<Box<HashSet<Box<str>>>>,
    /// This connection's budget of log lines it can trigger; made on its first such line.
    log_limit: Option<Box<LogLimit>>,
    /// The socket.
    ws: WebSocketStream<Socket<S>>,
    /// Configuration, engine and metrics.
    state: Arc<RelayState>,
    /// Its `--frame-rate` bucket, when that is set.
    frame_limit: Option<Box<FrameLimit>>,
    /// Its share of `--max-connections` (released when it is dropped, after the socket).
    /// What the handshake granted ([`Admitted`]) is kept field by field, not as one
    /// struct: `may_publish` then shares its 8 bytes with the other small fields below
    /// instead of padding a struct of its own, and the task stays in its 512-byte class.
    _slot: OwnedSemaphorePermit,
    /// Its place in its client IP's `--max-connections-per-ip`, when that is set.
    _per_ip: Option<Box<IpSlot>>,
    /// Whether its handshake carried a publisher token (or none is required).
    may_publish: bool,
    /// Write batches to go before this connection counts as quiet again: see
    /// `write_queued`.
    busy: u8,
    /// Whether the outbox is polled before the socket this time: see `next_event`.
    outbox_first: bool,
    /// Its entry in the relay's keep-alive wheel, taken out when it ends.
    keepalive: Slot,
}

impl<S: Transport> Connection<S> {
    fn opened(&self, remote: SocketAddr) {
        let metrics = &self.state.metrics;
        metrics.connections.inc();
        metrics.connections_opened.inc();
        // The original identified an unregistered connection as tmp_<uuid>; it is only
        // a name for the logs here, since unregistered connections are never routable.
        info!(
            "conn {} connected from {remote} as tmp_{}",
            self.peer.id,
            Uuid::new_v4()
        );
    }

    /// Makes the connection unreachable and counts it, before the (possibly slow)
    /// close handshake.
    fn ended(&mut self, reason: CloseReason) {
        self.release();
        let metrics = &self.state.metrics;
        metrics.connections.dec();
        metrics.closed(reason);
        let id = self.peer.id;
        match reason {
            CloseReason::ClientClose | CloseReason::Reset | CloseReason::Shutdown => {
                info!("conn {id} closed ({})", reason.as_str())
            }
            _ => self.log_limited(
                Level::Warn,
                format_args!("conn {id} closed by the relay ({})", reason.as_str()),
            ),
        }
        self.report_suppressed();
    }

    async fn run(&mut self) -> Ended {
        // Boxed, like every await below: a send's state (the sink and the message)
        // would otherwise size every connection's task for the whole of its life.
        Box::pin(self.greet()).await?;

        // The handlers' futures are boxed: this loop's state is part of every idle
        // connection's task, and unboxed the largest handler (a batched write, a frame)
        // would add its size to all of them; boxed, it costs an allocation while it runs.
        loop {
            match self.next_event().await {
                Event::Frame(None) => return Ok(()),
                event => Box::pin(self.on_event(event)).await?,
            }
        }
    }

    async fn greet(&mut self) -> Ended {
        let greeting = Message::text(self.state.config.greeting.as_str());
        self.ws
            .send(greeting)
            .await
            .map_err(|e| self.socket_error(e))
    }

    /// Waits for the outbox or the socket, whichever is ready first; when both are, each
    /// goes first every other time, so neither starves the other.
    fn next_event(&mut self) -> impl Future<Output = Event> + '_ {
        std::future::poll_fn(move |cx| {
            self.outbox_first = !self.outbox_first;
            if self.outbox_first && self.peer.outbox.poll_ready(cx).is_ready() {
                return Poll::Ready(Event::Outbox);
            }
            if let Poll::Ready(frame) = self.ws.poll_next_unpin(cx) {
                return Poll::Ready(Event::Frame(frame));
            }
            if !self.outbox_first && self.peer.outbox.poll_ready(cx).is_ready() {
                return Poll::Ready(Event::Outbox);
            }
            Poll::Pending
        })
    }

    /// Does what the keep-alive timer found due: a Ping, the end of a connection whose
    /// last Ping went unanswered, or the drain.
    async fn keep_alive(&mut self, due: Due) -> Ended {
        match due {
            Due::Shutdown => Err(CloseReason::Shutdown),
            Due::Ping => {
                trace!("conn {} ping", self.peer.id);
                self.write(Some(Message::Ping(Default::default())), false)
                    .await
            }
            Due::TimedOut => Err(CloseReason::PingTimeout),
        }
    }

    async fn on_event(&mut self, event: Event) -> Ended {
        match event {
            Event::Outbox => {
                // The relay's keep-alive timer wakes the task through the outbox.
                if let Some(due) = self.peer.beat.take_due() {
                    self.keep_alive(due).await?;
                }
                self.write_queued().await
            }
            // `run` ends the loop on the socket's end before it gets here.
            Event::Frame(None) => Ok(()),
            Event::Frame(Some(Ok(message))) => self.on_message(message).await,
            Event::Frame(Some(Err(error))) => Err(self.socket_error(error)),
        }
    }

    async fn on_message(&mut self, message: Message) -> Ended {
        if matches!(message, Message::Text(_) | Message::Binary(_)) {
            if let Some(limit) = self.frame_limit.as_mut() {
                match limit.frame(Instant::now()) {
                    FrameVerdict::Accept => {}
                    FrameVerdict::Drop => {
                        self.rate_limited(&message);
                        return Ok(());
                    }
                    FrameVerdict::Close => {
                        self.state.metrics.frames_received.inc();
                        self.state.metrics.dropped(DropReason::RateLimited, 1);
                        return Err(CloseReason::RateLimited);
                    }
                }
            }
        }
        match message {
            Message::Text(text) => {
                self.state.metrics.frames_received.inc();
                self.on_text(&text).await
            }
            Message::Binary(data) => {
                self.state.metrics.frames_received.inc();
                let id = self.peer.id;
                self.log_limited(
                    Level::Warn,
                    format_args!("conn {}: binary frame of {} bytes ignored", id, data.len()),
                );
                self.state.metrics.dropped(DropReason::Binary, 1);
                Ok(())
            }
            // tungstenite has queued the Pong; flushing sends it now.
            Message::Ping(_) => self.write(None, false).await,
            Message::Pong(_) => {
                self.peer.beat.on_pong();
                Ok(())
            }
            // tungstenite answers the Close; the stream then ends.
            Message::Close(_) | Message::Frame(_) => Ok(()),
        }
    }

    /// Drops a frame over `--frame-rate`: counted, logged within the budget, and
    /// answered `rate_limited` when it is a request with an id.
    fn rate_limited(&mut self, message: &Message) {
        let metrics = &self.state.metrics;
        metrics.frames_received.inc();
        metrics.dropped(DropReason::RateLimited, 1);
        let id = self.peer.id;
        self.log_limited(
            Level::Warn,
            format_args!("conn {id}: frame dropped: over --frame-rate"),
        );
        let Message::Text(text) = message else {
            return;
        };
        if let Frame::Request(Request { id: Some(id), .. }) =
            protocol::parse(text, self.state.config.max_key_length)
        {
            let reply = Reply::Refused(RATE_LIMITED.into()).encode(Some(id));
            self.peer.outbox.push_owed(reply.into());
        }
    }

    async fn on_text(&mut self, text: &str) -> Ended {
        let Request { id, command, token } =
            match protocol::parse(text, self.state.config.max_key_length) {
                Frame::Request(request) => request,
                Frame::Ignored(why) => {
                    let id = self.peer.id;
                    self.log_limited(
                        Level::Warn,
                        format_args!(
                            "conn {}: frame ignored ({}): {}",
                            id,
                            why.as_str(),
                            preview(text)
                        ),
                    );
                    self.state.metrics.dropped(DropReason::Ignored(why), 1);
                    return Ok(());
                }
            };
        let reply = match command {
            Ok(Command::Register { key, since }) => {
                if let Err(refusal) = self.state.access.check_registration(token.as_deref(), &key) {
                    return self.refuse_registration(id, &key, refusal).await;
                }
                // The reply goes ahead of what the registration is owed (pending messages,
                // a resume's replay), so the engine queues it first.
                let streams = self.state.engine.streams_enabled();
                let preamble = id.map(|id| -> Preamble<'_> {
                    Box::new(move |replayed| {
                        let replayed = streams.then_some(replayed);
                        Reply::Registered { replayed }.encode(Some(id)).into()
                    })
                });
                match self.register(key, since, preamble).await {
                    Ok(()) => return Ok(()),
                    Err(unavailable) => unavailable,
                }
            }
            Ok(Command::Deliver { .. }) if !self.may_publish => {
                let id = self.peer.id;
                self.log_limited(
                    Level::Warn,
                    format_args!(
                        "conn {id}: delivery refused: no publisher token in its handshake"
                    ),
                );
                self.state.metrics.dropped(DropReason::Unauthorized, 1);
                Reply::Refused(UNAUTHORIZED.into())
            }
            Ok(Command::Deliver { to, message }) => {
                // Disjoint borrows, not a clone of the shared state's Arc: every
                // connection would touch that one reference count for every message.
                let id = self.peer.id;
                let (own, state) = (&mut self.log_limit, &*self.state);
                let mut log = |line: fmt::Arguments<'_>| {
                    log_within(own, &state.log_limit, id, Level::Warn, line)
                };
                publish(
                    &*state.engine,
                    &state.metrics,
                    &Conn(id),
                    &to,
                    message,
                    &mut log,
                )
                .await
            }
            Ok(Command::Presence { key }) => {
                match self.state.access.check_registration(token.as_deref(), &key) {
                    Err(refusal) => self.refuse_query("presence", &key, refusal),
                    Ok(()) => match self.state.engine.presence(&key).await {
                        Ok(connections) => Reply::Presence(connections),
                        Err(_) => Reply::Unavailable,
                    },
                }
            }
            Ok(Command::Watch { key }) => {
                match self.state.access.check_registration(token.as_deref(), &key) {
                    Err(refusal) => self.refuse_query("watch of", &key, refusal),
                    Ok(()) => match self.watch(key, id).await {
                        Ok(()) => return Ok(()),
                        Err(reply) => reply,
                    },
                }
            }
            Ok(Command::Unwatch { key }) => {
                if let Some(watching) = self.watching.as_mut() {
                    if watching.remove(&*key) {
                        self.state.engine.unwatch(&key, &self.peer);
                    }
                }
                Reply::Done
            }
            Err(rejection) => {
                let id = self.peer.id;
                self.log_limited(
                    Level::Warn,
                    format_args!(
                        "conn {}: frame rejected ({}): {}",
                        id,
                        rejection.as_str(),
                        preview(text)
                    ),
                );
                self.state
                    .metrics
                    .dropped(DropReason::Rejected(rejection), 1);
                Reply::Error(rejection)
            }
        };
        let encoded = match (id, reply) {
            (Some(id), reply) => reply.encode(Some(id)),
            (None, Reply::Error(Rejection::InvalidId)) => protocol::encode_invalid_id_reply(),
            (None, _) => return Ok(()),
        };
        // Replies share the outbox with deliveries: one bounded queue, one writer.
        self.peer.outbox.push_owed(encoded.into());
        Ok(())
    }

    /// Refuses a presence query or watch for its token: counted and logged; the
    /// connection stays open and gets the error reply.
    fn refuse_query(
        &mut self,
        what: &str,
        key: &str,
        refusal: crate::policy::auth::Refusal,
    ) -> Reply {
        self.state.metrics.auth_refused(refusal);
        let id = self.peer.id;
        self.log_limited(
            Level::Warn,
            format_args!(
                "conn {}: {} {} refused ({} token)",
                id,
                what,
                escaped(key),
                refusal.as_str()
            ),
        );
        Reply::Refused(UNAUTHORIZED.into())
    }

    /// Watches `key`'s presence: the reply (the key's state now) is queued by the
    /// engine ahead of any push. Watching a key again only answers again.
    async fn watch(
        &mut self,
        key: Cow<'_, str>,
        id: Option<protocol::ReplyId<'_>>,
    ) -> Result<(), Reply> {
        let watching = self.watching.get_or_insert_with(Default::default);
        let new = !watching.contains(&*key);
        if new && watching.len() >= self.state.config.max_watches {
            let conn = self.peer.id;
            self.log_limited(
                Level::Warn,
                format_args!(
                    "conn {}: watch of {} refused: --max-watches reached",
                    conn,
                    escaped(&key)
                ),
            );
            return Err(Reply::Refused(TOO_MANY_WATCHES.into()));
        }
        let initial = id.map(|id| -> Preamble<'_> {
            Box::new(move |connections| Reply::Presence(connections).encode(Some(id)).into())
        });
        let engine = Arc::clone(&self.state.engine);
        if engine.watch(&key, &self.peer, initial).await.is_err() {
            return Err(Reply::Unavailable);
        }
        if new {
            if let Some(watching) = self.watching.as_mut() {
                watching.insert(key.into());
            }
        }
        Ok(())
    }

    /// Refuses a registration for its token: the error reply when the frame has an id,
    /// written out with everything queued before it, then the connection ends (Close
    /// 1008 "unauthorized"). Whatever key it held is released as it closes.
    async fn refuse_registration(
        &mut self,
        id: Option<protocol::ReplyId<'_>>,
        key: &str,
        refusal: crate::policy::auth::Refusal,
    ) -> Ended {
        self.state.metrics.auth_refused(refusal);
        let conn = self.peer.id;
        self.log_limited(
            Level::Warn,
            format_args!(
                "conn {}: registration as {} refused ({} token)",
                conn,
                escaped(key),
                refusal.as_str()
            ),
        );
        if let Some(id) = id {
            let reply = Reply::Refused(UNAUTHORIZED.into()).encode(Some(id));
            self.peer.outbox.push_owed(reply.into());
        }
        self.write_queued().await?;
        Err(CloseReason::Unauthorized)
    }

    /// Subscribes this connection under `key` (leaving its previous key), with `preamble`
    /// (the reply) queued ahead of anything the registration is owed.
    async fn register(
        &mut self,
        key: Cow<'_, str>,
        since: Option<Since>,
        preamble: Option<Preamble<'_>>,
    ) -> Result<(), Reply> {
        let engine = Arc::clone(&self.state.engine);
        if since.is_none() && self.key.as_deref() == Some(&*key) {
            debug!(
                "conn {} registered again as {}",
                self.peer.id,
                escaped(&key)
            );
            if let Some(reply) = preamble {
                self.peer.outbox.push_owed(reply(0));
            }
            return Ok(());
        }
        if let Some(old) = self.key.take() {
            engine.unsubscribe(&old, &self.peer);
        }
        let start = match since {
            Some(since) => Start::Resume(since),
            None => Start::Plain,
        };
        let key: Arc<str> = key.into();
        if engine
            .subscribe(&key, &self.peer, start, preamble)
            .await
            .is_err()
        {
            let id = self.peer.id;
            self.log_limited(
                Level::Warn,
                format_args!(
                    "conn {}: registration as {} failed: cluster unavailable",
                    id,
                    escaped(&key)
                ),
            );
            return Err(Reply::Unavailable);
        }
        self.state.metrics.registrations.inc();
        // Registrations are logged at info, and a client can send thousands of them.
        let id = self.peer.id;
        self.log_limited(
            Level::Info,
            format_args!("conn {} registered as {}", id, escaped(&key)),
        );
        self.key = Some(key);
        Ok(())
    }

    /// Writes everything queued in the outbox with one flush, or closes the connection
    /// when the outbox overflowed (slow consumer).
    async fn write_queued(&mut self) -> Ended {
        // Under load, one scheduler pass before draining lets the producers running in
        // it add to this batch (fewer, larger writes). At a moderate rate that pass is
        // all cost: for a batch of one frame it takes a second poll of the I/O driver
        // and often a wake of another worker (measured at 5,000 msg/s: 2.6 system calls
        // per message with it, 1.9 without). So it is taken only while the connection
        // is busy: one of its last few batches held more than one frame. (Not just the
        // last one: a fan-out's first batch to each recipient holds one frame, and
        // dropping the pass then would make every next batch small too.)
        if self.busy > 0 {
            tokio::task::yield_now().await;
        }
        match self.peer.outbox.take() {
            Drained::Frames(frames) if frames.is_empty() => Ok(()),
            Drained::Frames(frames) => {
                self.busy = if frames.len() > 1 {
                    BUSY_BATCHES
                } else {
                    self.busy.saturating_sub(1)
                };
                let messages = frames.into_iter().flat_map(fragment::frames);
                self.write(messages, true).await
            }
            Drained::Overflowed => Err(CloseReason::SlowConsumer),
        }
    }

    /// Writes `frames` and flushes; with no frames, flushes what tungstenite queued
    /// itself (a Pong). A write that takes longer than the ping timeout ends the
    /// connection as a slow consumer (a client that cannot take a write for that long is
    /// not alive either), and so, with `watch_overflow`, does the outbox overflowing
    /// while the write is stalled.
    async fn write(
        &mut self,
        frames: impl IntoIterator<Item = Message>,
        watch_overflow: bool,
    ) -> Ended {
        let limit = self.state.config.ping_timeout;
        let (ws, outbox) = (&mut self.ws, &self.peer.outbox);
        let write = async move {
            for frame in frames {
                ws.feed(frame).await?;
            }
            ws.flush().await
        };
        let overflowed = async move {
            if !watch_overflow {
                return std::future::pending().await;
            }
            while !outbox.is_overflowed() {
                outbox.overflow().await;
            }
        };
        // Boxed: see `serve`.
        let outcome = Box::pin(async move {
            tokio::select! {
                result = timeout(limit, write) => match result {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(error)) => Err(WriteFailure::Socket(error)),
                    Err(_elapsed) => Err(WriteFailure::Stalled),
                },
                () = overflowed => Err(WriteFailure::Stalled),
            }
        })
        .await;
        match outcome {
            Ok(()) => Ok(()),
            Err(WriteFailure::Stalled) => Err(CloseReason::SlowConsumer),
            Err(WriteFailure::Socket(error)) => Err(self.socket_error(error)),
        }
    }

    /// Ends the connection the way `reason` calls for: the close code PROTOCOL.md and
    /// RFC 6455 give it, within a bounded time.
    async fn close_for(&mut self, reason: CloseReason) {
        match reason {
            CloseReason::ClientClose | CloseReason::Reset => {}
            CloseReason::Shutdown => self.close(CloseCode::Away, "server shutting down").await,
            CloseReason::PingTimeout => {
                self.close(CloseCode::Error, "keepalive ping timeout").await
            }
            CloseReason::SlowConsumer => {
                // It gets through if the client resumes reading within the close
                // handshake's time bound (already-deregistered, so nothing else waits).
                self.close(CloseCode::Policy, "slow consumer: outgoing queue full")
                    .await
            }
            CloseReason::Oversize => {
                let limit = self.state.config.max_message_size;
                let reason = format!("message over {limit} bytes");
                self.close_desynced(CloseCode::Size, &reason).await;
            }
            CloseReason::InvalidUtf8 => {
                self.close(CloseCode::Invalid, "text frame is not valid UTF-8")
                    .await
            }
            CloseReason::ProtocolError => {
                self.close_desynced(CloseCode::Protocol, "protocol error")
                    .await
            }
            CloseReason::Unauthorized => self.close(CloseCode::Policy, UNAUTHORIZED).await,
            CloseReason::RateLimited => self.close(CloseCode::Policy, "rate limited").await,
            CloseReason::MessageTimeout => {
                // The rest of the message may still be arriving.
                let limit = self.state.config.message_timeout;
                let reason = format!("message not finished within {limit:?}");
                self.close_desynced(CloseCode::Policy, &reason).await;
            }
        }
    }

    /// Classifies a socket error into why the connection ends.
    fn socket_error(&mut self, error: WsError) -> CloseReason {
        let id = self.peer.id;
        match error {
            WsError::ConnectionClosed | WsError::AlreadyClosed => CloseReason::ClientClose,
            WsError::Capacity(CapacityError::MessageTooLong { size, max_size }) => {
                self.log_limited(
                    Level::Warn,
                    format_args!(
                        "conn {id}: message of {size} bytes over the {max_size}-byte limit"
                    ),
                );
                CloseReason::Oversize
            }
            WsError::Utf8(_) => {
                self.log_limited(
                    Level::Warn,
                    format_args!("conn {id}: text frame is not valid UTF-8"),
                );
                CloseReason::InvalidUtf8
            }
            WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => {
                debug!("conn {id}: reset without closing handshake");
                CloseReason::Reset
            }
            WsError::Io(error) if MessageTimedOut::is(&error) => {
                let limit = self.state.config.message_timeout;
                self.log_limited(
                    Level::Warn,
                    format_args!("conn {id}: message not finished within {limit:?}"),
                );
                CloseReason::MessageTimeout
            }
            WsError::Io(error) => {
                debug!("conn {id}: socket error: {error}");
                CloseReason::Reset
            }
            other => {
                self.log_limited(
                    Level::Warn,
                    format_args!("conn {id}: protocol error: {other}"),
                );
                CloseReason::ProtocolError
            }
        }
    }

    /// Logs a line this connection's client can trigger at will, within the
    /// connection's and the relay's budgets (see [`log_limit`]). A line logged after
    /// some were held back is preceded by their count.
    fn log_limited(&mut self, level: Level, line: fmt::Arguments<'_>) {
        let id = self.peer.id;
        log_within(&mut self.log_limit, &self.state.log_limit, id, level, line);
    }

    /// Reports what this connection's budget held back and has not reported yet: when
    /// the connection ends, so a flood's count is not lost.
    fn report_suppressed(&mut self) {
        let now = Instant::now();
        let Some(held_back) = self
            .log_limit
            .as_mut()
            .and_then(|own| own.take_suppressed(now))
        else {
            return;
        };
        let id = self.peer.id;
        if let Some(all_held_back) = self.state.log_limit.admit(now, held_back.count) {
            if let Some(all) = all_held_back {
                log!(Level::Warn, "all connections: {all}");
            }
            log!(Level::Warn, "conn {id}: {held_back}");
        }
    }

    /// Sends a Close frame and waits, bounded, for the client's half of the handshake.
    async fn close(&mut self, code: CloseCode, reason: &str) {
        let frame = CloseFrame {
            code,
            reason: reason.into(),
        };
        let handshake = async {
            if self.ws.close(Some(frame)).await.is_err() {
                return;
            }
            while let Some(Ok(_)) = self.ws.next().await {}
        };
        let _ = timeout(CLOSE_HANDSHAKE_TIMEOUT, handshake).await;
    }

    /// Closes a stream whose framing can no longer be trusted (the rest of an oversize
    /// frame, or garbage, is still unread): sends the Close frame, half-closes, and
    /// discards input until the client closes, so it reads the close code instead of a
    /// reset caused by unread data.
    async fn close_desynced(&mut self, code: CloseCode, reason: &str) {
        let frame = CloseFrame {
            code,
            reason: reason.into(),
        };
        let discard = async {
            // tungstenite may already have sent a Close for a protocol error.
            let _ = self.ws.close(Some(frame)).await;
            let stream = self.ws.get_mut().get_mut().get_mut();
            if stream.shutdown().await.is_err() {
                return;
            }
            // On the heap: a buffer in this future would enlarge every connection's task.
            let mut sink = vec![0u8; DISCARD_BUFFER_SIZE];
            while let Ok(1..) = stream.read(&mut sink).await {}
        };
        let _ = timeout(CLOSE_HANDSHAKE_TIMEOUT, discard).await;
    }

    /// Makes this connection unreachable: no key, and an outbox that refuses pushes.
    fn release(&mut self) {
        self.peer.outbox.close();
        self.state.keepalive.remove(self.keepalive, &self.peer);
        if let Some(key) = self.key.take() {
            self.state.engine.unsubscribe(&key, &self.peer);
        }
        for key in self
            .watching
            .take()
            .into_iter()
            .flat_map(|keys| keys.into_iter())
        {
            self.state.engine.unwatch(&key, &self.peer);
        }
    }
}

/// The error text of a watch past `--max-watches`.
pub const TOO_MANY_WATCHES: &str = "too many watches";

/// The error text of a frame dropped over `--frame-rate`.
pub const RATE_LIMITED: &str = "rate_limited";

/// Logs `line` of connection `id` within its own budget (`own`, made on its first such
/// line) and the relay's (`shared`). A line logged after some were held back is preceded
/// by their count.
fn log_within(
    own: &mut Option<Box<LogLimit>>,
    shared: &Arc<SharedLogLimit>,
    id: PeerId,
    level: Level,
    line: fmt::Arguments<'_>,
) {
    // A line that would not be logged costs nothing, not even this connection's budget
    // (registrations are logged at info: at the usual warn level, a budget made for them
    // would be 48 bytes more per idle connection).
    if !log::log_enabled!(level) {
        return;
    }
    let now = Instant::now();
    let own = own.get_or_insert_with(|| Box::new(LogLimit::new(log_limit::PER_CONNECTION, now)));
    let held_back = match own.admit(now) {
        Admit::Suppress => return,
        Admit::Log(held_back) => held_back,
    };
    let Some(all_held_back) = shared.admit(now, held_back.map_or(0, |s| s.count)) else {
        return;
    };
    if let Some(all) = all_held_back {
        log!(level, "all connections: {all}");
    }
    if let Some(mine) = held_back {
        log!(level, "conn {id}: {mine}");
    }
    log!(level, "{line}");
}

/// A connection as log lines name it: `conn #7`.
struct Conn(PeerId);

impl std::fmt::Display for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "conn {}", self.0)
    }
}

/// Why a write did not complete.
enum WriteFailure {
    /// The client did not take it in time, or its outbox overflowed meanwhile.
    Stalled,
    /// The socket failed.
    Socket(WsError),
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;
    use tokio_tungstenite::tungstenite::protocol::Role;

    /// The connection future as small as it was made (392 bytes): its task must stay in
    /// jemalloc's 512-byte class. tokio's task cell is the future plus 112 bytes (header,
    /// scheduler, id, the stage's tag, the task tracker's token, trailer) rounded up to
    /// 128, so a future past 400 bytes takes the 640-byte class: 128 bytes more per idle
    /// connection (a 408-byte future measured no better than the 528-byte one before
    /// it). A debug build lays the future out 8 bytes larger; `cargo test --release`
    /// checks the build users run.
    const LARGEST_TASK_FUTURE: usize = if cfg!(debug_assertions) { 400 } else { 392 };

    #[tokio::test]
    async fn an_idle_connections_task_fits_the_512_byte_allocation_class() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap());
        let (accepted, _client) = tokio::join!(listener.accept(), client);
        let (stream, remote) = accepted.unwrap();
        let ws = WebSocketStream::from_raw_socket(socket(stream, &[]), Role::Server, None).await;
        let state = Arc::new(RelayState::new(crate::config::Config::default()).unwrap());
        let admitted = Admitted {
            slot: Arc::new(tokio::sync::Semaphore::new(1))
                .acquire_owned()
                .await
                .unwrap(),
            per_ip: None,
            may_publish: true,
        };
        let task = serve(ws, remote, state, admitted);
        assert!(
            std::mem::size_of_val(&task) <= LARGEST_TASK_FUTURE,
            "the connection future is {} bytes",
            std::mem::size_of_val(&task)
        );
    }
}
