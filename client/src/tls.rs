//! `wss://`: the TLS client configuration (the system's CAs, plus an optional private CA)
//! and the errors a handshake can end with, told apart so that a person can act on them.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::crypto::aws_lc_rs;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

use crate::Error;

/// The application protocol offered in the handshake: the WebSocket upgrade is HTTP/1.1.
const ALPN_HTTP_1_1: &[u8] = b"http/1.1";

/// A TLS client configuration that trusts the system's CAs and, when given, the CA
/// certificates in the PEM file `ca_cert` (a private or self-signed relay).
pub(crate) fn client_config(ca_cert: Option<&Path>) -> Result<Arc<ClientConfig>, Error> {
    let mut roots = RootCertStore::empty();
    // The system's store: on Debian /etc/ssl/certs (the ca-certificates package, with
    // any CA added through update-ca-certificates); SSL_CERT_FILE/SSL_CERT_DIR override.
    // Unreadable entries are skipped: a --ca-cert may be all the trust that is needed.
    let system = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(system.certs);
    if let Some(path) = ca_cert {
        for certificate in read_ca_file(path)? {
            roots
                .add(certificate)
                .map_err(|e| Error::Tls(format!("CA certificate file {}: {e}", path.display())))?;
        }
    }
    if roots.is_empty() {
        return Err(Error::Tls(
            "no trusted CA certificates: the system has none (install ca-certificates) \
             and no CA certificate file was given"
                .to_owned(),
        ));
    }
    let provider = Arc::new(aws_lc_rs::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN_HTTP_1_1.to_vec()];
    Ok(Arc::new(config))
}

/// The certificates in the PEM file `path`; at least one.
fn read_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let unusable =
        |why: String| Error::Tls(format!("CA certificate file {}: {why}", path.display()));
    let pem = std::fs::read(path).map_err(|e| unusable(format!("cannot be read: {e}")))?;
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| unusable(format!("not valid PEM: {e}")))?;
    if certificates.is_empty() {
        return Err(unusable("holds no PEM certificate".to_owned()));
    }
    Ok(certificates)
}

/// The name the relay's certificate must be valid for: the URL's host (a DNS name or an
/// IP address, without the brackets of an IPv6 literal).
pub(crate) fn server_name(host: &str) -> Result<ServerName<'static>, Error> {
    ServerName::try_from(host.to_owned()).map_err(|e| {
        Error::Url(format!(
            "{host} cannot be checked against a certificate: {e}"
        ))
    })
}

/// A client's TLS side: its configuration, and the CA file it trusts besides the
/// system's (named when a certificate is refused).
pub(crate) struct TlsClient {
    pub(crate) config: Arc<ClientConfig>,
    pub(crate) ca_cert: Option<PathBuf>,
}

impl TlsClient {
    /// The TLS handshake over `tcp`, its failure told as a refused certificate
    /// (untrusted, wrong name, expired: [`Error::Certificate`]) or as any other connect
    /// failure.
    pub(crate) async fn handshake(
        &self,
        name: ServerName<'static>,
        tcp: TcpStream,
    ) -> Result<TlsStream<TcpStream>, Error> {
        let host = name.to_str().into_owned();
        TlsConnector::from(Arc::clone(&self.config))
            .connect(name, tcp)
            .await
            .map_err(|e| self.handshake_error(&host, e))
    }

    fn handshake_error(&self, host: &str, error: io::Error) -> Error {
        // tokio-rustls hands rustls' own error over inside the io::Error.
        let reason = match error
            .get_ref()
            .and_then(|e| e.downcast_ref::<rustls::Error>())
        {
            Some(rustls::Error::InvalidCertificate(reason)) => reason,
            Some(other) => {
                return Error::Connect(format!("TLS handshake with {host} failed: {other}"))
            }
            None => return Error::Connect(format!("TLS handshake with {host} failed: {error}")),
        };
        let checked = match &self.ca_cert {
            Some(path) => format!("checked against the system's CAs and {}", path.display()),
            None => "checked against the system's CAs only; trust a private CA or a \
                     self-signed certificate with --ca-cert or ClientOptions::ca_cert"
                .to_owned(),
        };
        let advice = if is_ca_as_server(reason) {
            "; it is a CA certificate (basicConstraints CA:TRUE, which `openssl req -x509` \
             sets by default): a self-signed server certificate needs \
             `-addext basicConstraints=critical,CA:FALSE`"
        } else {
            ""
        };
        Error::Certificate(format!(
            "the certificate of {host} is not trusted: {reason} ({checked}){advice}"
        ))
    }
}

/// Whether the relay presented a CA certificate as its own, which webpki refuses even
/// when it is the trusted one: the usual self-signed certificate made by `openssl req`.
fn is_ca_as_server(reason: &rustls::CertificateError) -> bool {
    match reason {
        rustls::CertificateError::Other(other) => matches!(
            other.0.downcast_ref::<webpki::Error>(),
            Some(webpki::Error::CaUsedAsEndEntity)
        ),
        _ => false,
    }
}
