//! Native TLS (rustls, the aws-lc-rs provider): `wss://` and `https://` on the relay's
//! one port for deployments without a TLS proxy.
//!
//! The certificate chain and key are read from PEM files at start, and again on SIGHUP
//! (certbot renewals): a reload swaps the `ServerConfig` new handshakes use, so open
//! connections keep theirs and nothing is dropped; a reload that fails keeps the old
//! certificate. Each handshake runs in its connection's task, bounded by
//! `--handshake-timeout`, so a slow or silent client never holds up the accept loop.
//!
//! TLS only wraps the accepted stream: the plain path is a separate instantiation of
//! the same code, with no extra indirection per message.

use std::fmt;
use std::fmt::Write as _;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use log::info;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use tokio_rustls::rustls::crypto::aws_lc_rs;
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::TlsAcceptor;

use crate::config::TlsConfig;
use crate::observability::metrics::Metrics;

/// Largest certificate or key file read, in bytes: a chain of a few certificates is a
/// few KiB, and a wrong path (a log file, a device) must not be read whole.
pub const MAX_PEM_FILE_BYTES: u64 = 1 << 20;
/// The one application protocol spoken over TLS (ALPN): WebSocket handshakes and the
/// HTTP routes are HTTP/1.1. A client offering only `h2` is refused in the handshake.
const ALPN_HTTP_1_1: &[u8] = b"http/1.1";

/// Why a certificate and key could not be used; says which file and why.
#[derive(Debug)]
pub struct TlsError(String);

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TlsError {}

impl From<TlsError> for io::Error {
    fn from(error: TlsError) -> Self {
        io::Error::new(io::ErrorKind::InvalidInput, error)
    }
}

/// The relay's TLS: the files it reads and the configuration new handshakes use.
#[derive(Debug)]
pub struct Tls {
    /// `--tls-cert`.
    cert: PathBuf,
    /// `--tls-key`.
    key: PathBuf,
    /// Swapped whole by a reload; each handshake takes the one current when it starts.
    current: RwLock<Arc<ServerConfig>>,
}

/// What a successful load found, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    /// Certificates in the chain (the leaf and its intermediates).
    pub chain_length: usize,
    /// SHA-256 of the leaf certificate, as `openssl x509 -fingerprint -sha256` prints it.
    pub fingerprint: String,
}

impl fmt::Display for Loaded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} certificate(s), leaf SHA-256 fingerprint {}",
            self.chain_length, self.fingerprint
        )
    }
}

impl Tls {
    /// Loads the files `config` names; `None` when TLS is off. The error names the file
    /// and the reason (unreadable, no PEM certificate or key, key not the certificate's).
    pub fn from_config(config: &TlsConfig) -> Result<Option<Self>, TlsError> {
        let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) else {
            return Ok(None);
        };
        let (server_config, loaded) = load(cert, key)?;
        info!(
            "TLS on: serving wss:// and https:// with {} ({loaded})",
            cert.display()
        );
        Ok(Some(Self {
            cert: cert.clone(),
            key: key.clone(),
            current: RwLock::new(Arc::new(server_config)),
        }))
    }

    /// Reads the files again and, if they hold a usable certificate and key, makes new
    /// handshakes use them. Open connections keep the certificate they were made with.
    /// On error nothing changes. Reads files: call it off the async workers.
    pub fn reload(&self) -> Result<Loaded, TlsError> {
        let (server_config, loaded) = load(&self.cert, &self.key)?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(server_config);
        Ok(loaded)
    }

    /// Reloads (see [`Tls::reload`]), and logs and counts the outcome.
    pub fn reload_and_report(&self, metrics: &Metrics) {
        match self.reload() {
            Ok(loaded) => {
                metrics.tls_reloads(true).inc();
                info!(
                    "TLS certificate reloaded from {} ({loaded}); new handshakes use it",
                    self.cert.display()
                );
            }
            Err(error) => {
                metrics.tls_reloads(false).inc();
                log::error!("TLS reload failed, still serving the previous certificate: {error}");
            }
        }
    }

    /// An acceptor with the configuration current now.
    pub(crate) fn acceptor(&self) -> TlsAcceptor {
        let current = self.current.read().unwrap_or_else(PoisonError::into_inner);
        TlsAcceptor::from(Arc::clone(&current))
    }
}

/// The server configuration for `cert` and `key`, with what it holds.
fn load(cert: &Path, key: &Path) -> Result<(ServerConfig, Loaded), TlsError> {
    let cert_pem = read_pem_file("--tls-cert", cert)?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad_file("--tls-cert", cert, &format!("not valid PEM: {e}")))?;
    let Some(leaf) = chain.first() else {
        return Err(bad_file(
            "--tls-cert",
            cert,
            "holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
        ));
    };
    let loaded = Loaded {
        chain_length: chain.len(),
        fingerprint: fingerprint(leaf),
    };
    let key_pem = read_pem_file("--tls-key", key)?;
    let private_key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => bad_file(
            "--tls-key",
            key,
            "holds no PEM private key (PKCS#8, PKCS#1 or SEC1)",
        ),
        e => bad_file("--tls-key", key, &format!("not valid PEM: {e}")),
    })?;
    let mut config = ServerConfig::builder_with_provider(Arc::new(aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .and_then(|builder| {
            builder
                .with_no_client_auth()
                .with_single_cert(chain, private_key)
        })
        .map_err(|e| {
            let why = match e {
                rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
                    "the key is not the private key of the (first) certificate".to_owned()
                }
                e => e.to_string(),
            };
            TlsError(format!(
                "--tls-cert {} and --tls-key {} cannot be used together: {why}",
                cert.display(),
                key.display()
            ))
        })?;
    config.alpn_protocols = vec![ALPN_HTTP_1_1.to_vec()];
    Ok((config, loaded))
}

/// The contents of a PEM file, at most [`MAX_PEM_FILE_BYTES`].
fn read_pem_file(flag: &str, path: &Path) -> Result<Vec<u8>, TlsError> {
    let mut contents = Vec::new();
    std::fs::File::open(path)
        .and_then(|file| file.take(MAX_PEM_FILE_BYTES + 1).read_to_end(&mut contents))
        .map_err(|e| bad_file(flag, path, &format!("cannot be read: {e}")))?;
    if contents.len() as u64 > MAX_PEM_FILE_BYTES {
        return Err(bad_file(
            flag,
            path,
            &format!("is larger than {MAX_PEM_FILE_BYTES} bytes: not a PEM file"),
        ));
    }
    Ok(contents)
}

fn bad_file(flag: &str, path: &Path, why: &str) -> TlsError {
    TlsError(format!("{flag} {}: {why}", path.display()))
}

/// `AB:CD:…`, the SHA-256 of a certificate.
fn fingerprint(certificate: &CertificateDer<'_>) -> String {
    let digest = Sha256::digest(certificate.as_ref());
    let mut text = String::with_capacity(digest.len() * 3);
    for (i, byte) in digest.iter().enumerate() {
        if i > 0 {
            text.push(':');
        }
        let _ = write!(text, "{byte:02X}");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_files_or_neither() {
        use clap::Parser;
        let parse = |args: &[&str]| crate::Config::try_parse_from(args);
        assert!(parse(&["notify-relay", "--tls-cert", "c.pem"]).is_err());
        assert!(parse(&["notify-relay", "--tls-key", "k.pem"]).is_err());
        let both =
            parse(&["notify-relay", "--tls-cert", "c.pem", "--tls-key", "k.pem"]).expect("parses");
        assert_eq!(both.tls.tls_cert, Some(PathBuf::from("c.pem")));
        assert_eq!(both.tls.tls_key, Some(PathBuf::from("k.pem")));
        let neither = parse(&["notify-relay"]).expect("parses");
        assert!(Tls::from_config(&neither.tls).expect("no files").is_none());
    }

    #[test]
    fn errors_name_the_file_and_the_reason() {
        let dir = tempfile::tempdir().expect("temp dir");
        let missing = dir.path().join("missing.pem");
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "not a certificate\n").expect("write");
        let config = |cert: &Path, key: &Path| TlsConfig {
            tls_cert: Some(cert.to_owned()),
            tls_key: Some(key.to_owned()),
        };
        let error = Tls::from_config(&config(&missing, &garbage))
            .expect_err("missing cert")
            .to_string();
        assert!(error.starts_with("--tls-cert "), "{error}");
        assert!(error.contains("missing.pem: cannot be read"), "{error}");
        let error = Tls::from_config(&config(&garbage, &garbage))
            .expect_err("no certificate")
            .to_string();
        assert!(
            error.contains("garbage.pem: holds no PEM certificate"),
            "{error}"
        );
    }

    #[test]
    fn fingerprints_are_colon_separated_hex() {
        let text = fingerprint(&CertificateDer::from(vec![1u8, 2, 3]));
        assert_eq!(text.len(), 32 * 3 - 1);
        assert!(text.starts_with("03:90:58:C6:F2:C0:CB:49"), "{text}");
    }
}
