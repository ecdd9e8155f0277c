//! The relay under test: a loopback WebSocket URL, and connections to it from chosen
//! loopback source addresses (one address runs out of ephemeral ports near 15,000).

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::http::Uri;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{client_async_with_config, WebSocketStream};
use tokio_util::either::Either;

/// A client connection: plain TCP (`ws://`), or TLS over it (`wss://`).
pub type Ws = WebSocketStream<Either<TcpStream, TlsStream<TcpStream>>>;

/// Client read buffer: small, so tens of thousands of idle clients fit in the bench.
const CLIENT_READ_BUFFER: usize = 4096;

/// A relay on this machine.
#[derive(Debug, Clone)]
pub struct Target {
    url: String,
    addr: SocketAddr,
    /// For `wss://`: the TLS client, trusting the `--ca-cert` given.
    tls: Option<(Arc<ClientConfig>, ServerName<'static>)>,
}

impl Target {
    /// Parses `url` and refuses anything that does not resolve to loopback only. A
    /// `wss://` URL needs `ca_cert`, the PEM file of the CA its certificate is checked with.
    pub async fn parse(url: &str, ca_cert: Option<&Path>) -> io::Result<Self> {
        let uri: Uri = url
            .parse()
            .map_err(|e| invalid(format!("bad URL {url}: {e}")))?;
        let secure = match uri.scheme_str() {
            Some("ws") => false,
            Some("wss") => true,
            _ => return Err(invalid(format!("{url}: only ws:// and wss:// URLs"))),
        };
        let host = uri
            .host()
            .ok_or_else(|| invalid(format!("{url}: no host")))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port)).await?.collect();
        let addr = *addrs
            .first()
            .ok_or_else(|| invalid(format!("{url}: {host} does not resolve")))?;
        if let Some(outside) = addrs.iter().find(|a| !a.ip().is_loopback()) {
            return Err(invalid(format!(
                "refusing {url}: {outside} is not a loopback address; the bench only loads \
                 servers on this machine (127.0.0.0/8 or ::1)"
            )));
        }
        let tls = match (secure, ca_cert) {
            (false, _) => None,
            (true, None) => return Err(invalid(format!("{url}: wss:// needs --ca-cert"))),
            (true, Some(ca)) => {
                let name = ServerName::try_from(host.to_owned()).map_err(invalid_any)?;
                Some((trusting(ca)?, name))
            }
        };
        Ok(Target {
            url: url.to_owned(),
            addr,
            tls,
        })
    }

    /// Opens a WebSocket from `source` (any free port) and reads the greeting.
    pub async fn connect(&self, source: Option<IpAddr>) -> io::Result<Ws> {
        let socket = if self.addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        if let Some(source) = source {
            socket.bind(SocketAddr::new(source, 0))?;
        }
        let tcp = socket.connect(self.addr).await?;
        tcp.set_nodelay(true)?;
        let stream = match &self.tls {
            None => Either::Left(tcp),
            Some((config, name)) => {
                let connector = TlsConnector::from(Arc::clone(config));
                Either::Right(connector.connect(name.clone(), tcp).await?)
            }
        };
        let config = WebSocketConfig::default().read_buffer_size(CLIENT_READ_BUFFER);
        let (mut ws, _) = client_async_with_config(self.url.as_str(), stream, Some(config))
            .await
            .map_err(io::Error::other)?;
        match ws.next().await {
            Some(Ok(Message::Text(_))) => Ok(ws),
            other => Err(io::Error::other(format!("no greeting: {other:?}"))),
        }
    }

    /// Connects and registers under `key`, then proves the registration the way any
    /// relay of this protocol allows: a message to `key` from this very connection
    /// must come back.
    pub async fn registered(&self, source: Option<IpAddr>, key: &str) -> io::Result<Ws> {
        let mut ws = self.connect(source).await?;
        let register = serde_json::json!({"recipient_uuid": key, "message": "connected"});
        // Ephemeral: a relay that keeps streams does not retain the probe (so an idle
        // key costs what a key never sent to costs); others ignore the field.
        let probe = serde_json::json!({"recipient_uuid": key, "message": PROBE, "ephemeral": true});
        send(&mut ws, register.to_string()).await?;
        send(&mut ws, probe.to_string()).await?;
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(text))) if text.as_str() == PROBE => return Ok(ws),
                Some(Ok(_)) => continue,
                other => return Err(io::Error::other(format!("registration: {other:?}"))),
            }
        }
    }
}

/// The self-addressed message that proves a registration.
pub const PROBE: &str = "bench-probe";

/// Sends one text frame.
pub async fn send(ws: &mut Ws, text: String) -> io::Result<()> {
    ws.send(Message::text(text)).await.map_err(io::Error::other)
}

/// The source address for connection `i` of a run spread over `sources` addresses
/// (127.0.0.2, 127.0.0.3, ...; one source means the default, 127.0.0.1).
pub fn source_for(i: usize, sources: usize) -> Option<IpAddr> {
    if sources <= 1 {
        return None;
    }
    let n = (i % sources) as u8;
    Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + n)))
}

/// A TLS client configuration that trusts the CA certificates in the PEM file `ca`.
fn trusting(ca: &Path) -> io::Result<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    for certificate in CertificateDer::pem_file_iter(ca).map_err(invalid_any)? {
        roots
            .add(certificate.map_err(invalid_any)?)
            .map_err(invalid_any)?;
    }
    let config = ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

fn invalid_any(error: impl std::fmt::Display) -> io::Error {
    invalid(error.to_string())
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_loopback_targets_are_accepted() {
        for url in [
            "ws://127.0.0.1:8765/",
            "ws://127.0.0.9:1/",
            "ws://[::1]:8765/",
        ] {
            assert!(Target::parse(url, None).await.is_ok(), "{url}");
        }
        // Refused before any connection is attempted (TEST-NET and private addresses).
        for url in [
            "ws://192.0.2.1:8765/",
            "ws://10.0.0.1:8765/",
            "ws://[2001:db8::1]:80/",
        ] {
            let error = Target::parse(url, None).await.expect_err(url);
            assert!(
                error.to_string().contains("not a loopback address"),
                "{error}"
            );
        }
        let error = Target::parse("wss://127.0.0.1/", None)
            .await
            .expect_err("wss:// without a CA");
        assert!(error.to_string().contains("--ca-cert"), "{error}");
        assert!(Target::parse("http://127.0.0.1/", None).await.is_err());
        assert!(Target::parse("not a url", None).await.is_err());
    }

    #[test]
    fn source_addresses_spread_over_127_0_0_x() {
        assert_eq!(source_for(5, 1), None);
        assert_eq!(source_for(0, 3), Some(IpAddr::from([127, 0, 0, 2])));
        assert_eq!(source_for(4, 3), Some(IpAddr::from([127, 0, 0, 3])));
    }
}
