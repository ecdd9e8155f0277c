//! The listening socket, the accept loop, and the drain.

use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use log::{debug, error, info, warn};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;
use tokio::time::{sleep, sleep_until, Instant};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::serve::{http, tls_handshake};
use crate::state::RelayState;
use crate::transport::capacity::Admission;

/// Pending connections the kernel holds for us while the accept loop is busy.
const LISTEN_BACKLOG: i32 = 4096;
/// First pause after a failed accept (e.g. out of file descriptors).
const ACCEPT_BACKOFF_START: Duration = Duration::from_millis(10);
/// Longest pause after repeated failed accepts.
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// How often the drain says how many connections it is still waiting for.
const DRAIN_PROGRESS_INTERVAL: Duration = Duration::from_secs(1);

/// A bound relay, ready to [`Server::run`].
#[derive(Debug)]
pub struct Server {
    /// The listening socket.
    listener: TcpListener,
    /// Shared with every task the server starts.
    state: Arc<RelayState>,
}

impl Server {
    /// Binds the listening socket described by `config`. Must run inside a tokio runtime.
    pub fn bind(config: Config) -> io::Result<Self> {
        let listener = TcpListener::from_std(listen(&config)?)?;
        Ok(Self {
            listener,
            state: Arc::new(RelayState::new(config)?),
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The state the server shares with its tasks (metrics, engine), for inspection.
    pub fn state(&self) -> Arc<RelayState> {
        Arc::clone(&self.state)
    }

    /// Serves until `shutdown` completes, then drains: stops accepting, sends Close 1001
    /// to every connection, and returns once they have closed or the drain timeout passed.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> io::Result<()> {
        let Server { listener, state } = self;
        let config = &state.config;
        info!(
            "notify-relay {} listening on {}",
            env!("CARGO_PKG_VERSION"),
            listener.local_addr()?
        );
        warn_if_key_space_is_split(config);
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        let mut backoff = ACCEPT_BACKOFF_START;
        let mut shutdown = std::pin::pin!(shutdown);
        tracker.spawn(engine_ticks(Arc::clone(&state), cancel.clone()));
        tracker.spawn(keep_alive(Arc::clone(&state), cancel.clone()));
        if !config.stats_interval.is_zero() {
            let every = config.stats_interval;
            tracker.spawn(log_totals(Arc::clone(&state), every, cancel.clone()));
        }

        loop {
            let accepted = tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => accepted,
            };
            match accepted {
                Ok((tcp, remote)) => {
                    backoff = ACCEPT_BACKOFF_START;
                    // IPv4 clients of the dual-stack socket log as 1.2.3.4, not ::ffff:1.2.3.4.
                    let remote = SocketAddr::new(remote.ip().to_canonical(), remote.port());
                    // Notifications are small and latency matters more than packet count.
                    let _ = tcp.set_nodelay(true);
                    // At capacity the connection may still reach /healthz, /readyz and
                    // /metrics; http refuses it only if it asks for a WebSocket.
                    let admission = state.capacity.admit();
                    if let Admission::Overflow(_) = admission {
                        debug!("{remote} arrived at max-connections: plain HTTP only");
                    }
                    let task_state = Arc::clone(&state);
                    match &state.tls {
                        None => tracker.spawn(http::serve_connection(
                            tcp,
                            remote,
                            task_state,
                            admission,
                            cancel.clone(),
                            tracker.clone(),
                        )),
                        // The handshake runs in the connection's task, not here.
                        Some(tls) => tracker.spawn(tls_handshake::serve_connection(
                            tls.acceptor(),
                            tcp,
                            remote,
                            task_state,
                            admission,
                            cancel.clone(),
                            tracker.clone(),
                        )),
                    };
                }
                Err(e) => {
                    state.metrics.accept_errors.inc();
                    // Out of file descriptors and similar: back off instead of spinning,
                    // so the connections being served can close and free some.
                    error!("accept failed: {e}; retrying in {backoff:?}");
                    tokio::select! {
                        () = &mut shutdown => break,
                        () = sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                }
            }
        }

        // A request already on its way gets 503 from /readyz and for an upgrade.
        state.readiness.set_draining();
        drop(listener);
        let open = state.metrics.connections.get();
        info!(
            "shutting down: closing {open} connection(s), waiting up to {}",
            humantime::format_duration(config.drain_timeout)
        );
        cancel.cancel();
        tracker.close();
        drain(&tracker, config.drain_timeout).await;
        state.engine.settle().await;
        let metrics = &state.metrics;
        info!(
            "stopped: {} connection(s) served, {} message(s) routed, {} delivered",
            metrics.connections_opened.get(),
            metrics.messages_routed.get(),
            metrics.messages_delivered.get()
        );
        Ok(())
    }
}

/// Runs the engine's housekeeping (expiring retained messages) until `cancel`.
async fn engine_ticks(state: Arc<RelayState>, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(state.engine.tick_interval());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = tick.tick() => state.engine.tick(tokio::time::Instant::now().into_std()),
        }
    }
}

/// Runs the relay's keep-alive timer (every connection's Pings and Pong deadlines)
/// until `cancel`.
async fn keep_alive(state: Arc<RelayState>, cancel: CancellationToken) {
    state.keepalive.run(cancel).await;
}

/// Waits for every task to finish, or for `timeout`. Says every second how many
/// connections it is still waiting for, and at the end why it stopped waiting.
async fn drain(tracker: &TaskTracker, timeout: Duration) {
    let started = Instant::now();
    let deadline = started + timeout;
    let mut progress =
        tokio::time::interval_at(started + DRAIN_PROGRESS_INTERVAL, DRAIN_PROGRESS_INTERVAL);
    let mut finished = std::pin::pin!(tracker.wait());
    loop {
        tokio::select! {
            () = &mut finished => {
                info!("drained: every connection closed in {}", rounded(started.elapsed()));
                return;
            }
            () = sleep_until(deadline) => {
                // What is left ends with the process (or, embedded, at its own close and
                // write timeouts, which bound every connection task).
                warn!(
                    "drain timeout passed with {} connection(s) still open (clients that did \
                     not answer the Close); stopping without them",
                    tracker.len()
                );
                return;
            }
            _ = progress.tick() => info!(
                "draining: waiting for {} connection(s) to close, {} left",
                tracker.len(),
                rounded(deadline.saturating_duration_since(Instant::now()))
            ),
        }
    }
}

/// A duration for the log, to the millisecond.
fn rounded(duration: Duration) -> humantime::FormattedDuration {
    humantime::format_duration(Duration::from_millis(duration.as_millis() as u64))
}

/// Several relays on one port (SO_REUSEPORT) each keep their own registrations: the
/// kernel spreads clients over them, and a message sent through one relay never reaches
/// a key registered on another. That is only safe for the moment an old relay hands the
/// port to a new one, or once a cluster engine makes the relays one key space.
fn warn_if_key_space_is_split(config: &Config) {
    if config.reuse_port && !config.shares_key_space() {
        warn!(
            "--reuse-port is on and no cluster engine is configured: each relay process on \
             this port has its own key space, so a client registered on one relay does not \
             receive messages sent through another. Use it only to hand the port from an \
             old relay to a new one; otherwise run one relay per port (it uses every core)"
        );
    }
}

/// Logs the totals every `every` until `cancel`: the load at a glance, in the log,
/// without scraping /metrics.
async fn log_totals(state: Arc<RelayState>, every: Duration, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    let mut delivered_before = 0;
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let metrics = &state.metrics;
        let delivered = metrics.messages_delivered.get();
        info!(
            "totals: {} connection(s), {} key(s); {} message(s) delivered in the last {:?}; \
             since start: {} connection(s), {} delivered, {} dropped",
            metrics.connections.get(),
            state.engine.stats().keys,
            delivered - delivered_before,
            every,
            metrics.connections_opened.get(),
            delivered,
            metrics.dropped_total()
        );
        delivered_before = delivered;
    }
}

/// Opens the listening socket. With no host, listens on all interfaces: IPv6 and IPv4
/// on one dual-stack socket, or IPv4 alone where IPv6 is unavailable.
fn listen(config: &Config) -> io::Result<std::net::TcpListener> {
    let port = config.effective_port();
    let reuse_port = config.reuse_port;
    let result = match config.host {
        Some(ip) => bind(SocketAddr::new(ip, port), reuse_port),
        None => match bind(SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)), reuse_port) {
            Err(e) if e.kind() != io::ErrorKind::AddrInUse => {
                info!("IPv6 unavailable ({e}); listening on IPv4 only");
                bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)), reuse_port)
            }
            other => other,
        },
    };
    result.map_err(|e| {
        let host = config
            .host
            .map_or_else(|| "all interfaces".to_owned(), |ip| ip.to_string());
        io::Error::new(
            e.kind(),
            format!("cannot listen on {host} port {port}: {e}"),
        )
    })
}

fn bind(addr: SocketAddr, reuse_port: bool) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() && addr.ip().is_unspecified() {
        socket.set_only_v6(false)?;
    }
    // Lets a restarted relay bind while old connections sit in TIME_WAIT.
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket.into())
}
