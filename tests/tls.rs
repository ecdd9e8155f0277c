//! Native TLS (`--tls-cert`, `--tls-key`): real clients over `wss://` and `https://`
//! (tokio-tungstenite on rustls, curl, Python `websockets` with an SSL context, headless
//! Chromium, the notify-relay-client CLI with its CA checks), certificate reload on
//! SIGHUP without dropping connections, a failed reload keeping the old certificate,
//! clear startup errors, and non-TLS input on the TLS port.
//! Each test makes its own CA and certificate (rcgen) in a temporary directory.
//! scripts/test.sh installs curl, Python `websockets`, Chromium and playwright-core.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use common::{metric, within, Relay, RelayProcess, DEADLINE, GREETING};
use futures_util::{SinkExt, StreamExt};
use notify_relay::config::TlsConfig;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::crypto::aws_lc_rs;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// A test CA and a server certificate it issued for 127.0.0.1 and localhost.
struct Identity {
    /// The CA certificate, PEM (what clients trust).
    ca_pem: String,
    /// The same, DER, for rustls clients.
    ca: CertificateDer<'static>,
    /// The server certificate, PEM.
    cert_pem: String,
    /// Its private key, PEM (PKCS#8).
    key_pem: String,
}

impl Identity {
    fn new(ca_name: &str) -> Self {
        Self::for_names(ca_name, &["127.0.0.1", "localhost"])
    }

    /// A CA named `ca_name` and a server certificate it issued for `names` only.
    fn for_names(ca_name: &str, names: &[&str]) -> Self {
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, ca_name);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key).expect("CA certificate");
        let issuer = Issuer::new(ca_params, ca_key);

        let key = KeyPair::generate().expect("server key");
        let names = names
            .iter()
            .map(|name| (*name).to_owned())
            .collect::<Vec<_>>();
        let mut params = CertificateParams::new(names).expect("server params");
        params
            .distinguished_name
            .push(DnType::CommonName, "notify-relay test server");
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.signed_by(&key, &issuer).expect("server certificate");
        Identity {
            ca_pem: ca_cert.pem(),
            ca: ca_cert.der().clone(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

/// The files a relay is started with, and the CA files clients trust, in one temporary
/// directory.
struct Files {
    dir: tempfile::TempDir,
    cert: PathBuf,
    key: PathBuf,
}

impl Files {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let cert = dir.path().join("fullchain.pem");
        let key = dir.path().join("privkey.pem");
        Files { dir, cert, key }
    }

    /// Installs `identity` as the relay's certificate and key, each replaced at once
    /// (written aside, then renamed over), as certbot does.
    fn install(&self, identity: &Identity) {
        replace(&self.cert, &identity.cert_pem);
        replace(&self.key, &identity.key_pem);
    }

    /// Writes `identity`'s CA certificate to a file named `name`, for clients.
    fn ca_file(&self, identity: &Identity, name: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, &identity.ca_pem).expect("write CA file");
        path
    }

    fn config(&self) -> TlsConfig {
        TlsConfig {
            tls_cert: Some(self.cert.clone()),
            tls_key: Some(self.key.clone()),
        }
    }

    fn args(&self) -> Vec<String> {
        vec![
            "--tls-cert".into(),
            path_str(&self.cert).into(),
            "--tls-key".into(),
            path_str(&self.key).into(),
        ]
    }
}

fn replace(path: &Path, contents: &str) {
    let aside = path.with_extension("new");
    std::fs::write(&aside, contents).expect("write");
    std::fs::rename(&aside, path).expect("rename");
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("UTF-8 temp path")
}

/// An in-process relay serving TLS with `identity`.
async fn tls_relay(files: &Files) -> Relay {
    let tls = files.config();
    Relay::start_with(move |config| config.tls = tls).await
}

/// A rustls client configuration that trusts only `ca`.
fn client_config(ca: &CertificateDer<'static>, alpn: &[&[u8]]) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.clone()).expect("CA certificate");
    let mut config = ClientConfig::builder_with_provider(Arc::new(aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// A TLS connection to `addr` that verifies the relay's certificate against `ca` only.
async fn tls_connect(
    addr: SocketAddr,
    ca: &CertificateDer<'static>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let connector = TlsConnector::from(client_config(ca, &[]));
    let name = ServerName::IpAddress(addr.ip().into());
    within("TLS handshake", connector.connect(name, tcp)).await
}

/// A WebSocket client over TLS (tokio-tungstenite on tokio-rustls).
struct WssClient {
    ws: WebSocketStream<TlsStream<TcpStream>>,
    next_id: u64,
}

impl WssClient {
    /// Connects to `wss://addr/` trusting only `ca`, and reads the greeting.
    async fn connect(addr: SocketAddr, ca: &CertificateDer<'static>) -> Self {
        let tls = tls_connect(addr, ca).await.expect("TLS handshake");
        let url = format!("wss://{addr}/");
        let (ws, _) = within(
            "websocket handshake",
            tokio_tungstenite::client_async(url, tls),
        )
        .await
        .expect("websocket handshake over TLS");
        let mut client = WssClient { ws, next_id: 0 };
        assert_eq!(client.recv_text().await, GREETING);
        client
    }

    async fn recv_text(&mut self) -> String {
        loop {
            let message = within("a frame", self.ws.next())
                .await
                .expect("connection open")
                .expect("frame");
            match message {
                Message::Text(text) => return text.as_str().to_owned(),
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("expected text, got {other:?}"),
            }
        }
    }

    async fn request(&mut self, mut frame: Value) -> Value {
        self.next_id += 1;
        frame["id"] = json!(self.next_id);
        within("send", self.ws.send(Message::text(frame.to_string())))
            .await
            .expect("send");
        let reply: Value = serde_json::from_str(&self.recv_text().await).expect("JSON reply");
        assert_eq!(reply["id"], json!(self.next_id), "{reply}");
        reply
    }

    async fn register(&mut self, key: &str) {
        let reply = self
            .request(json!({"recipient_uuid": key, "message": "connected"}))
            .await;
        assert_eq!(reply["ok"], true, "{reply}");
    }

    async fn deliver(&mut self, key: &str, message: &str) -> u64 {
        let reply = self
            .request(json!({"recipient_uuid": key, "message": message}))
            .await;
        assert_eq!(reply["ok"], true, "{reply}");
        reply["delivered"].as_u64().expect("delivered count")
    }
}

/// One HTTP/1.1 request over TLS, `Connection: close`: the whole response as text.
async fn https_request(addr: SocketAddr, ca: &CertificateDer<'static>, head: &str) -> String {
    let mut tls = tls_connect(addr, ca).await.expect("TLS handshake");
    let request = format!("{head}\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    tls.write_all(request.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    within("response", tls.read_to_end(&mut response))
        .await
        .expect("read");
    String::from_utf8_lossy(&response).into_owned()
}

/// The value of `series` in the relay's metrics, read over HTTPS.
async fn scraped(addr: SocketAddr, ca: &CertificateDer<'static>, series: &str) -> f64 {
    let response = https_request(addr, ca, "GET /metrics HTTP/1.1").await;
    metric(&response, series)
}

const PROTOCOL_FAILURES: &str = "notify_relay_tls_handshakes_failed_total{reason=\"protocol\"}";

#[tokio::test]
async fn wss_clients_get_the_greeting_register_and_exchange_messages() {
    let identity = Identity::new("test CA");
    let files = Files::new();
    files.install(&identity);
    let relay = tls_relay(&files).await;

    let mut listener = WssClient::connect(relay.addr, &identity.ca).await;
    listener.register("tls-key").await;
    let mut sender = WssClient::connect(relay.addr, &identity.ca).await;
    assert_eq!(sender.deliver("tls-key", "over wss").await, 1);
    assert_eq!(listener.recv_text().await, "over wss");

    // A client that does not trust this CA is refused in the handshake, and counted.
    let stranger = Identity::new("another CA");
    assert!(tls_connect(relay.addr, &stranger.ca).await.is_err());
    common::eventually("the refused handshake is counted", || {
        metric(&relay.state.metrics.encode(), PROTOCOL_FAILURES) == 1.0
    })
    .await;
    relay.stop().await;
}

#[tokio::test]
async fn curl_publishes_and_reads_every_http_route_over_https() {
    let identity = Identity::new("test CA");
    let files = Files::new();
    files.install(&identity);
    let ca_file = files.ca_file(&identity, "ca.pem");
    let relay = tls_relay(&files).await;
    let base = format!("https://{}", relay.addr);
    let curl = |args: Vec<String>| {
        let ca_file = ca_file.clone();
        async move {
            let output = within(
                "curl",
                tokio::process::Command::new("curl")
                    .args(["--silent", "--show-error", "--cacert"])
                    .arg(&ca_file)
                    .args(&args)
                    .kill_on_drop(true)
                    .output(),
            )
            .await
            .expect("curl runs (scripts/test.sh installs it)");
            assert!(
                output.status.success(),
                "curl {args:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            String::from_utf8_lossy(&output.stdout).into_owned()
        }
    };

    // curl offers h2 and http/1.1 (ALPN); the relay picks HTTP/1.1.
    let health = curl(vec![
        "--write-out".into(),
        " %{http_code} HTTP/%{http_version}".into(),
        format!("{base}/healthz"),
    ])
    .await;
    assert_eq!(health, "ok\n 200 HTTP/1.1");
    assert_eq!(curl(vec![format!("{base}/readyz")]).await, "ready\n");
    let about = curl(vec![format!("{base}/")]).await;
    assert!(about.contains(&format!("wss://{}/", relay.addr)), "{about}");
    assert!(curl(vec![format!("{base}/metrics")])
        .await
        .contains("notify_relay_tls_reloads_total{result=\"ok\"} 0"));

    let mut listener = WssClient::connect(relay.addr, &identity.ca).await;
    listener.register("curl-key").await;
    let presence: Value =
        serde_json::from_str(&curl(vec![format!("{base}/presence/curl-key")]).await)
            .expect("presence JSON");
    assert_eq!(presence["online"], true, "{presence}");
    let published: Value = serde_json::from_str(
        &curl(vec![
            "--data".into(),
            "from curl".into(),
            format!("{base}/publish/curl-key"),
        ])
        .await,
    )
    .expect("publish JSON");
    assert_eq!(published["delivered"], 1, "{published}");
    assert_eq!(listener.recv_text().await, "from curl");

    // Server-Sent Events over TLS: the stream's first event arrives.
    let mut events = tls_connect(relay.addr, &identity.ca).await.expect("TLS");
    let request = format!(
        "GET /events/sse-key HTTP/1.1\r\nHost: {}\r\n\r\n",
        relay.addr
    );
    events.write_all(request.as_bytes()).await.expect("write");
    let mut events = BufReader::new(events);
    let mut line = String::new();
    within("the event stream's headers", async {
        loop {
            line.clear();
            events.read_line(&mut line).await.expect("read");
            if line == "\r\n" {
                break;
            }
        }
    })
    .await;
    common::eventually("the event stream is subscribed", || {
        relay.state.metrics.event_streams.get() == 1
    })
    .await;
    curl(vec![
        "--data".into(),
        "to the stream".into(),
        format!("{base}/publish/sse-key"),
    ])
    .await;
    within("the event", async {
        loop {
            line.clear();
            events.read_line(&mut line).await.expect("read");
            if line.contains("data: to the stream") {
                break;
            }
        }
    })
    .await;
    relay.stop().await;
}

/// Registers under argv[3] at argv[1] trusting argv[2], says so, and prints the first
/// message it receives.
const PYTHON_LISTENER: &str = r#"
import asyncio, json, ssl, sys
from websockets.asyncio.client import connect

async def main(url, cafile, key):
    context = ssl.create_default_context(cafile=cafile)
    async with connect(url, ssl=context) as ws:
        print("greeting", await ws.recv(), flush=True)
        await ws.send(json.dumps({"id": 1, "recipient_uuid": key, "message": "connected"}))
        print("registered", json.loads(await ws.recv())["ok"], flush=True)
        print("received", await ws.recv(), flush=True)

asyncio.run(main(*sys.argv[1:]))
"#;

#[tokio::test]
async fn python_websockets_with_an_ssl_context_registers_and_receives() {
    let identity = Identity::new("test CA");
    let files = Files::new();
    files.install(&identity);
    let ca_file = files.ca_file(&identity, "ca.pem");
    let relay = tls_relay(&files).await;

    let mut python = tokio::process::Command::new("python3")
        .args(["-c", PYTHON_LISTENER, &format!("wss://{}/", relay.addr)])
        .arg(&ca_file)
        .arg("python-key")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 runs (scripts/test.sh installs websockets)");
    let mut lines = BufReader::new(python.stdout.take().expect("stdout")).lines();
    async fn next_line(
        lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    ) -> String {
        within("a line from the Python client", lines.next_line())
            .await
            .expect("read")
            .expect("the Python client printed a line (see its stderr above)")
    }
    assert_eq!(next_line(&mut lines).await, format!("greeting {GREETING}"));
    assert_eq!(next_line(&mut lines).await, "registered True");
    let mut sender = WssClient::connect(relay.addr, &identity.ca).await;
    assert_eq!(sender.deliver("python-key", "to python").await, 1);
    assert_eq!(next_line(&mut lines).await, "received to python");
    let status = within("python exits", python.wait()).await.expect("wait");
    assert!(status.success());
    relay.stop().await;
}

#[test]
fn chromium_receives_a_message_over_wss() {
    let identity = Identity::new("test CA");
    let files = Files::new();
    files.install(&identity);
    let ca_file = files.ca_file(&identity, "ca.pem");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let tests = root.join("tests/browser");
    assert!(
        tests.join("node_modules/playwright-core").exists(),
        "playwright-core is not installed: run scripts/test.sh (or npm ci in tests/browser)"
    );
    let output = std::process::Command::new("node")
        .arg(tests.join("tls.test.mjs"))
        .current_dir(&tests)
        .env("RELAY_BIN", env!("CARGO_BIN_EXE_notify-relay"))
        .env("TLS_CERT", &files.cert)
        .env("TLS_KEY", &files.key)
        .env("TLS_CA", &ca_file)
        .output()
        .expect("node runs");
    assert!(
        output.status.success(),
        "browser test failed\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn sighup_reloads_the_certificate_and_keeps_open_connections() {
    let old = Identity::new("old CA");
    let new = Identity::new("new CA");
    let files = Files::new();
    files.install(&old);
    let args = files.args();
    let relay = RelayProcess::spawn(&args.iter().map(String::as_str).collect::<Vec<_>>());

    let mut open = WssClient::connect(relay.addr, &old.ca).await;
    open.register("reload-key").await;
    files.install(&new);
    relay.signal("HUP");
    relay.wait_for_log("TLS certificate reloaded");

    // New handshakes present the new certificate: a client trusting only the new CA
    // gets in, one trusting only the old CA no longer does.
    let mut fresh = WssClient::connect(relay.addr, &new.ca).await;
    assert!(tls_connect(relay.addr, &old.ca).await.is_err());
    // The connection made before the reload is still served.
    assert_eq!(fresh.deliver("reload-key", "after the reload").await, 1);
    assert_eq!(open.recv_text().await, "after the reload");
    let ok = "notify_relay_tls_reloads_total{result=\"ok\"}";
    assert_eq!(scraped(relay.addr, &new.ca, ok).await, 1.0);
}

#[tokio::test]
async fn a_failed_reload_keeps_serving_the_old_certificate() {
    let identity = Identity::new("test CA");
    let files = Files::new();
    files.install(&identity);
    let args = files.args();
    let relay = RelayProcess::spawn(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let mut open = WssClient::connect(relay.addr, &identity.ca).await;
    open.register("kept-key").await;

    replace(&files.cert, "-----BEGIN GARBAGE-----\nnot base64 at all\n");
    relay.signal("HUP");
    let line = relay.wait_for_log("TLS reload failed");
    assert!(
        line.contains(&format!("--tls-cert {}", files.cert.display())),
        "the error names the file: {line}"
    );

    let mut fresh = WssClient::connect(relay.addr, &identity.ca).await;
    assert_eq!(fresh.deliver("kept-key", "still here").await, 1);
    assert_eq!(open.recv_text().await, "still here");
    let failed = "notify_relay_tls_reloads_total{result=\"failed\"}";
    assert_eq!(scraped(relay.addr, &identity.ca, failed).await, 1.0);
}

/// Runs the relay with `args` until it exits (it must, before the deadline): its exit
/// code and its stderr.
fn run_to_exit(args: &[&str]) -> (Option<i32>, String) {
    let mut child = common::KillOnDrop::new(
        std::process::Command::new(env!("CARGO_BIN_EXE_notify-relay"))
            .args(["--host", "127.0.0.1", "--port", "0"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn notify-relay"),
    );
    let deadline = std::time::Instant::now() + DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the relay started instead of refusing {args:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr)
        .expect("read stderr");
    (status.code(), stderr)
}

#[test]
fn startup_with_unusable_files_fails_with_a_clear_message() {
    let identity = Identity::new("test CA");
    let other = Identity::new("other CA");
    let files = Files::new();
    files.install(&identity);
    let cert = path_str(&files.cert);
    let key = path_str(&files.key);
    let missing = files.dir.path().join("missing-key.pem");
    let other_key = files.dir.path().join("other-key.pem");
    std::fs::write(&other_key, &other.key_pem).expect("write");

    let (code, stderr) = run_to_exit(&["--tls-cert", cert, "--tls-key", path_str(&missing)]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("--tls-key {}: cannot be read", missing.display())),
        "{stderr}"
    );

    let (code, stderr) = run_to_exit(&["--tls-cert", cert, "--tls-key", path_str(&other_key)]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("the key is not the private key of the (first) certificate"),
        "{stderr}"
    );

    // The key file given as the certificate: no certificate in it.
    let (code, stderr) = run_to_exit(&["--tls-cert", key, "--tls-key", key]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("holds no PEM certificate"), "{stderr}");

    // One without the other is a usage error.
    let (code, stderr) = run_to_exit(&["--tls-cert", cert]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--tls-key"), "{stderr}");
}

#[tokio::test]
async fn plain_http_on_the_tls_port_fails_its_handshake_and_nothing_else() {
    let identity = Identity::new("test CA");
    let files = Files::new();
    files.install(&identity);
    let relay = tls_relay(&files).await;
    let mut open = WssClient::connect(relay.addr, &identity.ca).await;
    open.register("bystander").await;

    let mut plain = TcpStream::connect(relay.addr).await.expect("connect");
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: relay\r\n\r\n")
        .await
        .expect("write");
    let answer = common::read_to_end(&mut plain).await;
    assert!(
        !String::from_utf8_lossy(&answer).contains("HTTP/1.1"),
        "no HTTP answer in clear text"
    );
    // A plain WebSocket client fails too.
    assert!(tokio_tungstenite::connect_async(relay.url()).await.is_err());
    common::eventually("both failed handshakes are counted", || {
        metric(&relay.state.metrics.encode(), PROTOCOL_FAILURES) == 2.0
    })
    .await;

    // The connection that was open is unaffected, and new ones get in.
    let mut sender = WssClient::connect(relay.addr, &identity.ca).await;
    assert_eq!(sender.deliver("bystander", "unaffected").await, 1);
    assert_eq!(open.recv_text().await, "unaffected");
    relay.stop().await;
}

#[tokio::test]
async fn a_silent_client_neither_blocks_accepts_nor_outlives_the_handshake_timeout() {
    let identity = Identity::new("test CA");
    let files = Files::new();
    files.install(&identity);

    // A connection that never says anything: others are accepted meanwhile (the
    // handshake waits in the connection's task, not in the accept loop).
    let tls = files.config();
    let patient = Relay::start_with(move |config| {
        config.tls = tls;
        config.handshake_timeout = Duration::from_secs(600);
    })
    .await;
    let _silent = TcpStream::connect(patient.addr).await.expect("connect");
    let mut client = WssClient::connect(patient.addr, &identity.ca).await;
    client.register("meanwhile").await;
    patient.stop().await;

    // Past --handshake-timeout the relay hangs up, and counts it.
    let tls = files.config();
    let strict = Relay::start_with(move |config| {
        config.tls = tls;
        config.handshake_timeout = Duration::from_millis(200);
    })
    .await;
    let mut silent = TcpStream::connect(strict.addr).await.expect("connect");
    let mut byte = [0u8; 1];
    let read = within("the relay hangs up", silent.read(&mut byte)).await;
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    let timeouts = "notify_relay_tls_handshakes_failed_total{reason=\"timeout\"}";
    assert_eq!(metric(&strict.state.metrics.encode(), timeouts), 1.0);
    strict.stop().await;
}

/// Runs `notify-relay-client` with `args` (and `env`) to its exit: its exit code, stderr.
fn client_cli(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let out = std::process::Command::new(common::workspace_binary("notify-relay-client"))
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("notify-relay-client runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A TLS relay process serving `identity`, with its files (kept for as long as it runs).
fn tls_relay_process(identity: &Identity) -> (RelayProcess, Files) {
    let files = Files::new();
    files.install(identity);
    let args = files.args();
    let relay = RelayProcess::spawn(&args.iter().map(String::as_str).collect::<Vec<_>>());
    (relay, files)
}

#[test]
fn the_client_cli_sends_and_listens_over_wss_trusting_its_ca_cert() {
    let identity = Identity::new("test CA");
    let (relay, files) = tls_relay_process(&identity);
    let ca = files.ca_file(&identity, "ca.pem");
    let url = format!("wss://{}/", relay.addr);

    let mut listen = common::KillOnDrop::new(
        std::process::Command::new(common::workspace_binary("notify-relay-client"))
            .args(["--url", &url, "--ca-cert", path_str(&ca)])
            .args(["listen", "tls-tab", "--count", "2", "--timeout", "30s"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("listener runs"),
    );
    let stderr = listen.stderr.take().expect("stderr");
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stderr));
    let ready = lines
        .by_ref()
        .map_while(Result::ok)
        .any(|line| line.contains("listening as"));
    assert!(ready, "the listener never registered over wss://");
    std::thread::spawn(move || lines.for_each(drop));

    // The CA from the environment, as a unit's environment file would give it.
    let env = [
        ("NOTIFY_RELAY_URL", url.as_str()),
        ("NOTIFY_RELAY_CA_CERT", path_str(&ca)),
    ];
    let (code, stderr) = client_cli(&["send", "tls-tab", "over TLS"], &env);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("delivered to 1 connection(s)"), "{stderr}");
    // The system's store is trusted by default: the same CA given as the system's
    // (SSL_CERT_FILE, which the store honours) needs no --ca-cert.
    let system = [("SSL_CERT_FILE", path_str(&ca))];
    let args = ["--url", &url, "send", "tls-tab", "through the system's CAs"];
    let (code, stderr) = client_cli(&args, &system);
    assert_eq!(code, Some(0), "{stderr}");

    let output = listen
        .into_inner()
        .wait_with_output()
        .expect("listener exits");
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .collect::<Vec<_>>(),
        ["over TLS", "through the system's CAs"]
    );
}

#[test]
fn the_client_cli_refuses_an_untrusted_or_misnamed_certificate_with_exit_4() {
    let identity = Identity::new("test CA");
    let (relay, files) = tls_relay_process(&identity);
    let url = format!("wss://{}/", relay.addr);
    // The relay's private CA is not among the system's (here another CA stands for the
    // system's store, so that the machine's own CAs cannot matter), nor is it --ca-cert.
    let other = Identity::new("another CA");
    let other_ca = files.ca_file(&other, "other-ca.pem");
    let system = [("SSL_CERT_FILE", path_str(&other_ca))];
    // A listener does not retry: it exits as a sender does.
    let hint = "trust a private CA or a self-signed certificate with --ca-cert";
    let checked_too = format!(
        "checked against the system's CAs and {}",
        other_ca.display()
    );
    for (args, says) in [
        (vec!["--url", &url, "send", "k", "x"], hint),
        (vec!["--url", &url, "listen", "k", "--count", "1"], hint),
        (
            vec![
                "--url",
                &url,
                "--ca-cert",
                path_str(&other_ca),
                "send",
                "k",
                "x",
            ],
            checked_too.as_str(),
        ),
    ] {
        let (code, stderr) = client_cli(&args, &system);
        assert_eq!(code, Some(4), "{args:?}: {stderr}");
        assert!(stderr.contains("is not trusted"), "{args:?}: {stderr}");
        assert!(stderr.contains("UnknownIssuer"), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }

    // A trusted CA, but a certificate for another name.
    let misnamed = Identity::for_names("test CA", &["relay.invalid"]);
    let (relay, files) = tls_relay_process(&misnamed);
    let ca = files.ca_file(&misnamed, "ca.pem");
    let url = format!("wss://{}/", relay.addr);
    let args = ["--url", &url, "--ca-cert", path_str(&ca), "send", "k", "x"];
    let (code, stderr) = client_cli(&args, &[]);
    assert_eq!(code, Some(4), "{stderr}");
    assert!(stderr.contains("not valid for name"), "{stderr}");
    assert!(stderr.contains("relay.invalid"), "{stderr}");
}

#[test]
fn an_unusable_ca_cert_file_is_a_usage_error() {
    let identity = Identity::new("test CA");
    let files = Files::new();
    files.install(&identity);
    let missing = files.dir.path().join("missing-ca.pem");
    // Checked before connecting: nothing needs to listen there.
    let url = "wss://127.0.0.1:9/";
    for (ca, expected) in [
        (missing.as_path(), "cannot be read"),
        (files.key.as_path(), "holds no PEM certificate"),
    ] {
        let args = ["--url", url, "--ca-cert", path_str(ca), "send", "k", "x"];
        let (code, stderr) = client_cli(&args, &[]);
        assert_eq!(code, Some(2), "{stderr}");
        assert!(stderr.contains(expected), "{stderr}");
        assert!(
            stderr.contains(&ca.display().to_string()),
            "names the file: {stderr}"
        );
    }
    // No CA at all: an empty system store and no --ca-cert.
    let empty = files.dir.path().join("no-system-cas");
    std::fs::create_dir(&empty).expect("empty dir");
    let system = [
        ("SSL_CERT_FILE", path_str(&empty)),
        ("SSL_CERT_DIR", path_str(&empty)),
    ];
    let (code, stderr) = client_cli(&["--url", url, "send", "k", "x"], &system);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("no trusted CA certificates"), "{stderr}");
}

/// A self-signed certificate for 127.0.0.1 (PEM certificate and key), as made without a
/// CA; `is_ca` as `openssl req -x509` makes them by default (basicConstraints CA:TRUE).
fn self_signed(is_ca: bool) -> Identity {
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_owned()]).expect("params");
    if is_ca {
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    }
    let cert = params.self_signed(&key).expect("self-signed certificate");
    Identity {
        ca_pem: cert.pem(),
        ca: cert.der().clone(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

#[test]
fn the_client_cli_trusts_a_self_signed_certificate_given_as_its_ca_cert() {
    let identity = self_signed(false);
    let (relay, files) = tls_relay_process(&identity);
    let url = format!("wss://{}/", relay.addr);
    let args = [
        "--url",
        &url,
        "--ca-cert",
        path_str(&files.cert),
        "send",
        "k",
        "x",
    ];
    let (code, stderr) = client_cli(&args, &[]);
    assert_eq!(code, Some(6), "{stderr}");

    // One that is also a CA (openssl's default) is refused by rustls even when trusted:
    // the error says how to make one that works.
    let identity = self_signed(true);
    let (relay, files) = tls_relay_process(&identity);
    let url = format!("wss://{}/", relay.addr);
    let args = [
        "--url",
        &url,
        "--ca-cert",
        path_str(&files.cert),
        "send",
        "k",
        "x",
    ];
    let (code, stderr) = client_cli(&args, &[]);
    assert_eq!(code, Some(4), "{stderr}");
    assert!(stderr.contains("CaUsedAsEndEntity"), "{stderr}");
    assert!(
        stderr.contains("basicConstraints=critical,CA:FALSE"),
        "{stderr}"
    );
}
