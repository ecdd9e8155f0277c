//! The TLS handshake of one accepted connection, before HTTP: bounded by
//! `--handshake-timeout`, ended early by shutdown or by a newer connection taking an
//! overflow place, counted and logged within the shared budget when it fails. The
//! certificate itself (loading, reload on SIGHUP) is `transport::tls`.

use std::future::pending;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use log::debug;
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::observability::metrics::TlsFailure;
use crate::serve::http;
use crate::state::RelayState;
use crate::transport::capacity::Admission;

/// Serves one accepted TCP connection over TLS: the handshake (bounded by
/// `--handshake-timeout`, and ended early by shutdown or, for a connection admitted past
/// `--max-connections`, by a newer one taking its place), then HTTP as on a plain port.
pub(crate) async fn serve_connection(
    acceptor: TlsAcceptor,
    tcp: TcpStream,
    remote: SocketAddr,
    state: Arc<RelayState>,
    admission: Admission,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let handshake = timeout(state.config.handshake_timeout, acceptor.accept(tcp));
    let evicted = async {
        match &admission {
            Admission::Overflow(place) => place.evicted().await,
            Admission::Slot(_) => pending().await,
        }
    };
    let result = tokio::select! {
        result = handshake => result,
        () = evicted => {
            state.metrics.overflow_evicted.inc();
            debug!("closing {remote} during its TLS handshake: it arrived at max-connections and a newer connection needs its place");
            return;
        }
        () = shutdown.cancelled() => return,
    };
    let stream = match result {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => return handshake_failed(&state, remote, &error),
        Err(_elapsed) => {
            state.metrics.tls_handshake_failed(TlsFailure::Timeout);
            debug!(
                "TLS handshake with {remote} not finished within --handshake-timeout ({})",
                humantime::format_duration(state.config.handshake_timeout)
            );
            return;
        }
    };
    http::serve_connection(stream, remote, state, admission, shutdown, tracker).await;
}

/// Counts a failed handshake and logs it: a client that left is routine (debug); one
/// that spoke something other than TLS or refused the certificate is worth a warning,
/// within the shared budget, since any client can cause it at will.
fn handshake_failed(state: &RelayState, remote: SocketAddr, error: &io::Error) {
    // tokio-rustls reports TLS errors (rustls::Error) as InvalidData; anything else is
    // the connection itself failing (EOF, reset).
    if error.kind() == io::ErrorKind::InvalidData {
        state.metrics.tls_handshake_failed(TlsFailure::Protocol);
        state
            .log_limit
            .warn(format_args!("TLS handshake with {remote} failed: {error}"));
    } else {
        state.metrics.tls_handshake_failed(TlsFailure::Closed);
        debug!("TLS handshake with {remote} ended: {error}");
    }
}
