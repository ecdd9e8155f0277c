//! Helpers shared by the integration tests: a real relay on 127.0.0.1:0 (in-process or
//! as the real binary), real WebSocket clients, and waits that end at a deadline.

#![allow(dead_code)]

use std::future::Future;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use notify_relay::state::RelayState;
use notify_relay::{Config, Server};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{connect_async, MaybeTlsStream, WebSocketStream};

/// How long any single expected event may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(10);

pub const GREETING: &str = "..:: Hello from the Notification Center ::..";

/// A relay running inside the test process.
pub struct Relay {
    pub addr: SocketAddr,
    pub state: Arc<RelayState>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
    /// The relay's own Redis, with NOTIFY_RELAY_TEST_REDIS set.
    _redis: Option<OwnRedis>,
}

/// The Redis an in-process relay runs on with NOTIFY_RELAY_TEST_REDIS: a `redis-server`
/// (any value), or a 3-master Redis Cluster (`cluster`).
enum OwnRedis {
    Server(RedisServer),
    Cluster(RedisCluster),
}

impl OwnRedis {
    fn from_env() -> Option<Self> {
        let wanted = std::env::var("NOTIFY_RELAY_TEST_REDIS").ok()?;
        Some(if wanted == "cluster" {
            Self::Cluster(RedisCluster::start())
        } else {
            Self::Server(RedisServer::start())
        })
    }

    fn url(&self) -> String {
        match self {
            Self::Server(server) => server.url(),
            Self::Cluster(cluster) => cluster.url(),
        }
    }
}

impl Relay {
    /// Starts a relay with default settings on 127.0.0.1:0.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Starts a relay with streams off (`--buffer-ttl 0`): exactly Parts 1-2 of the
    /// protocol, for the tests that pin that behaviour byte for byte.
    pub async fn start_streams_off() -> Self {
        Self::start_with(|config| config.streams.buffer_ttl = Duration::ZERO).await
    }

    /// Starts a relay on 127.0.0.1:0 with settings changed by `tune`.
    pub async fn start_with(tune: impl FnOnce(&mut Config)) -> Self {
        let mut config = Config::loopback_ephemeral();
        // Test clients that are not being read cannot answer the Close 1001; the drain
        // itself is tested against the real binary in tests/drain.rs.
        config.drain_timeout = Duration::from_millis(200);
        // NOTIFY_RELAY_TEST_REDIS=1 runs each in-process relay on a redis-server of its
        // own (=cluster: on a Redis Cluster of its own): the Redis engine against the
        // Parts 1-3 tests.
        let redis = OwnRedis::from_env();
        if let Some(redis) = &redis {
            config.cluster.redis = Some(redis.url());
        }
        tune(&mut config);
        let server = Server::bind(config).expect("bind 127.0.0.1:0");
        let addr = server.local_addr().expect("local addr");
        let state = server.state();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async move {
            let _ = stopped.await;
        }));
        if state.config.cluster.redis.is_some() {
            wait_readyz(addr, 200).await;
        }
        Relay {
            addr,
            state,
            stop: Some(stop),
            task,
            _redis: redis,
        }
    }

    pub fn url(&self) -> String {
        format!("ws://{}/", self.addr)
    }

    /// Connects a client and reads its greeting.
    pub async fn client(&self) -> Client {
        Client::connect(&self.url()).await
    }

    /// Connects a client registered under `key` (confirmed by an id reply).
    pub async fn registered(&self, key: &str) -> Client {
        let mut client = self.client().await;
        client.register(key).await;
        client
    }

    /// Triggers the drain and waits for `run` to return.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        timeout(DEADLINE * 2, &mut self.task)
            .await
            .expect("relay stops before the deadline")
            .expect("relay task")
            .expect("relay run");
    }

    /// An HTTP GET on the relay's port: (status, content type, body).
    pub async fn get(&self, path: &str) -> (u16, String, String) {
        http_request(self.addr, "GET", path).await
    }
}

/// Waits until `condition` holds, checking after every scheduler turn and at least every
/// few milliseconds, and fails the test at the deadline.
pub async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let waited = timeout(DEADLINE, async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "timed out waiting for: {what}");
}

/// Fails the test if `future` does not finish before the deadline.
pub async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    timeout(DEADLINE, future)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for: {what}"))
}

/// A real WebSocket client.
pub struct Client {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
}

impl Client {
    /// Connects to `url` and checks the greeting.
    pub async fn connect(url: &str) -> Self {
        let mut client = Self::connect_raw(url).await;
        assert_eq!(client.recv_text().await, GREETING);
        client
    }

    /// Connects with a prepared handshake request (extra headers) and checks the greeting.
    pub async fn connect_request(
        request: tokio_tungstenite::tungstenite::handshake::client::Request,
    ) -> Self {
        let (ws, _) = within("connect", connect_async(request))
            .await
            .expect("websocket handshake");
        let mut client = Client { ws, next_id: 0 };
        assert_eq!(client.recv_text().await, GREETING);
        client
    }

    /// A client over an open WebSocket, once it has read the greeting.
    pub async fn from_ws(ws: WebSocketStream<MaybeTlsStream<TcpStream>>) -> Self {
        let mut client = Client { ws, next_id: 0 };
        assert_eq!(client.recv_text().await, GREETING);
        client
    }

    /// Connects without reading the greeting.
    pub async fn connect_raw(url: &str) -> Self {
        let (ws, _) = within("connect", connect_async(url))
            .await
            .expect("websocket handshake");
        Client { ws, next_id: 0 }
    }

    pub async fn send_text(&mut self, text: impl Into<String>) {
        let text: String = text.into();
        within("send", self.ws.send(Message::text(text)))
            .await
            .expect("send");
    }

    pub async fn send_binary(&mut self, data: Vec<u8>) {
        within("send", self.ws.send(Message::binary(data)))
            .await
            .expect("send");
    }

    pub async fn send_json(&mut self, value: Value) {
        self.send_text(value.to_string()).await;
    }

    /// Registers under `key` and waits for the relay to confirm it.
    pub async fn register(&mut self, key: &str) {
        let reply = self
            .request(json!({"recipient_uuid": key, "message": "connected"}))
            .await;
        assert_eq!(reply["ok"], true, "{reply}");
    }

    /// Sends `frame` with a fresh id and returns the reply (the next frame received).
    pub async fn request(&mut self, mut frame: Value) -> Value {
        self.next_id += 1;
        let id = format!("req-{}", self.next_id);
        frame["id"] = json!(id);
        self.send_json(frame).await;
        let reply = self.recv_json().await;
        assert_eq!(
            reply["id"],
            json!(id),
            "reply to the wrong request: {reply}"
        );
        reply
    }

    /// Sends a message to `key` and returns how many connections it was handed to.
    pub async fn deliver(&mut self, key: &str, message: Value) -> u64 {
        let reply = self
            .request(json!({"recipient_uuid": key, "message": message}))
            .await;
        assert_eq!(reply["ok"], true, "{reply}");
        reply["delivered"].as_u64().expect("delivered count")
    }

    /// The next data frame, which must be text (control frames are handled underneath).
    pub async fn recv_text(&mut self) -> String {
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

    pub async fn recv_json(&mut self) -> Value {
        let text = self.recv_text().await;
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
    }

    /// Reads until the relay's Close frame, then on to the end of the stream as a real
    /// client does (which lets the relay finish its side), and returns the close code.
    pub async fn expect_close(&mut self) -> CloseCode {
        loop {
            match within("close", self.ws.next()).await {
                Some(Ok(Message::Close(Some(frame)))) => {
                    while let Some(Ok(_)) = within("end of stream", self.ws.next()).await {}
                    return frame.code;
                }
                Some(Ok(Message::Close(None))) => panic!("close without a code"),
                Some(Ok(_)) => continue,
                Some(Err(e)) => panic!("connection failed before a Close frame: {e}"),
                None => panic!("connection ended before a Close frame"),
            }
        }
    }

    /// Reads until `count` Pings arrived (reading also answers them), failing on any
    /// other frame.
    pub async fn expect_pings(&mut self, count: usize) {
        for _ in 0..count {
            match within("a ping", self.ws.next()).await {
                Some(Ok(Message::Ping(_))) => {}
                other => panic!("expected a ping, got {other:?}"),
            }
        }
    }

    /// Proves the connection is open and served: a request round-trips.
    pub async fn assert_alive(&mut self) {
        let reply = self
            .request(json!({"recipient_uuid": "nobody-here", "message": "ping"}))
            .await;
        assert_eq!(reply["ok"], true);
    }
}

/// One HTTP/1.1 request through hyper's client connection: (status, content type, body).
pub async fn http_request(addr: SocketAddr, method: &str, path: &str) -> (u16, String, String) {
    http_request_with(addr, method, path, &[]).await
}

/// Like [`http_request`], with extra request headers.
pub async fn http_request_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String, String) {
    http_read(http_send(addr, method, path, headers, "").await).await
}

/// Sends one HTTP/1.1 request with `body` on a new connection (hyper's client) and
/// returns the response, its body not read yet (a stream, for Server-Sent Events).
pub async fn http_send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<hyper::body::Bytes>,
) -> hyper::Response<hyper::body::Incoming> {
    let tcp = within("tcp connect", TcpStream::connect(addr))
        .await
        .expect("tcp connect");
    http_send_on(tcp, method, path, headers, body).await
}

/// Like [`http_send`], over an open connection (e.g. one bound to a source address).
pub async fn http_send_on(
    tcp: TcpStream,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<hyper::body::Bytes>,
) -> hyper::Response<hyper::body::Incoming> {
    use http_body_util::Full;
    use hyper_util::rt::TokioIo;

    let addr = tcp.peer_addr().expect("peer address");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .expect("http handshake");
    tokio::spawn(conn);
    let mut request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Full::new(body.into())).expect("request");
    within("http response", sender.send_request(request))
        .await
        .expect("response")
}

/// The content type of `response`, or "".
pub fn content_type(response: &hyper::Response<hyper::body::Incoming>) -> String {
    response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

/// Reads a whole response: (status, content type, body as text).
pub async fn http_read(response: hyper::Response<hyper::body::Incoming>) -> (u16, String, String) {
    use http_body_util::BodyExt;

    let status = response.status().as_u16();
    let content_type = content_type(&response);
    let bytes = within("http body", response.into_body().collect())
        .await
        .expect("body")
        .to_bytes();
    (
        status,
        content_type,
        String::from_utf8_lossy(&bytes).into_owned(),
    )
}

/// The value of one series in a `/metrics` text, e.g. `notify_relay_keys`.
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("no series {series} in\n{text}"))
}

/// The real `notify-relay` binary, started on 127.0.0.1 with an OS-chosen port.
pub struct RelayProcess {
    pub child: Child,
    pub addr: SocketAddr,
    pub log: Arc<std::sync::Mutex<Vec<String>>>,
}

impl RelayProcess {
    pub fn spawn(args: &[&str]) -> Self {
        Self::start(Command::new(env!("CARGO_BIN_EXE_notify-relay")), args)
    }

    /// Starts the relay with extra environment variables (settings given as NOTIFY_RELAY_*).
    pub fn spawn_with_env(args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_notify-relay"));
        command.envs(env.iter().copied());
        Self::start(command, args)
    }

    /// Starts the relay with both open-file limits (soft and hard) set to `limit`.
    pub fn spawn_with_open_file_limit(limit: u32, args: &[&str]) -> Self {
        let mut shell = Command::new("sh");
        shell.args([
            "-c",
            &format!("ulimit -n {limit} && exec \"$0\" \"$@\""),
            env!("CARGO_BIN_EXE_notify-relay"),
        ]);
        Self::start(shell, args)
    }

    /// Starts `binary` as systemd starts it from a unit with an EnvironmentFile=: no
    /// arguments, and exactly the variables `env` (e.g. from [`systemd_environment`]).
    pub fn spawn_with_only_env(binary: &std::path::Path, env: &[(String, String)]) -> Self {
        let mut command = Command::new(binary);
        command.env_clear().envs(env.iter().map(|(k, v)| (k, v)));
        Self::launch(command)
    }

    /// Starts the relay logging only warnings (and the line that says where it
    /// listens): for tests that open thousands of connections, whose info lines would
    /// cost the relay more than what is measured.
    pub fn spawn_quiet(args: &[&str]) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_notify-relay"));
        command
            .args(["--host", "127.0.0.1", "--port", "0"])
            .args(args)
            .env("RUST_LOG", "warn,notify_relay::serve::server=info");
        Self::launch(command)
    }

    fn start(mut command: Command, args: &[&str]) -> Self {
        command
            .args(["--host", "127.0.0.1", "--port", "0"])
            .args(args)
            .env("RUST_LOG", "info");
        Self::launch(command)
    }

    /// Runs `command` and waits until the relay says where it listens; a relay that exits
    /// (or stays silent) instead fails the test with its status and log.
    fn launch(mut command: Command) -> Self {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn notify-relay");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = line.split("listening on ").nth(1) {
                    let _ = addr_tx.send(addr.trim().to_owned());
                }
                sink.lock().expect("log lock").push(line);
            }
        });
        let Ok(addr) = addr_rx.recv_timeout(DEADLINE) else {
            // Ended or silent: its log is complete once its stderr closed.
            let _ = child.kill();
            let status = child.wait();
            panic!(
                "the relay did not start ({status:?}):\n{}",
                log.lock().expect("log lock").join("\n")
            );
        };
        let addr = addr.parse().expect("socket address");
        RelayProcess { child, addr, log }
    }

    pub fn url(&self) -> String {
        format!("ws://{}/", self.addr)
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Waits for the process to exit and returns its exit code.
    pub fn wait_exit(&mut self, deadline: Duration) -> Option<i32> {
        let start = std::time::Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status.code();
            }
            assert!(
                start.elapsed() < deadline,
                "relay did not exit within {deadline:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits (with the deadline) until a log line contains `needle`; returns that line.
    pub fn wait_for_log(&self, needle: &str) -> String {
        let deadline = std::time::Instant::now() + DEADLINE;
        loop {
            let found = self
                .log
                .lock()
                .expect("log lock")
                .iter()
                .find(|line| line.contains(needle))
                .cloned();
            if let Some(line) = found {
                return line;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no log line containing {needle:?} in:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits (with the deadline) until `needle` occurs `count` times in the log.
    pub fn wait_for_log_count(&self, needle: &str, count: usize) {
        let deadline = std::time::Instant::now() + DEADLINE;
        while self.log_text().matches(needle).count() < count {
            assert!(
                std::time::Instant::now() < deadline,
                "fewer than {count} of {needle:?} in:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The value of `series` in the relay's /metrics now.
    pub fn metric(&self, series: &str) -> f64 {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let (_, _, text) = runtime.block_on(http_request(self.addr, "GET", "/metrics"));
        metric(&text, series)
    }

    pub fn log_text(&self) -> String {
        self.log.lock().expect("log lock").join("\n")
    }

    /// The relay's resident memory (VmRSS of /proc/PID/status), in bytes.
    pub fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("read /proc/PID/status");
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kib| kib * 1024)
            .expect("VmRSS in /proc/PID/status")
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A binary of the workspace that is not this package's (built into the same target
/// directory by `cargo test --workspace` and by scripts/test.sh).
pub fn workspace_binary(name: &str) -> std::path::PathBuf {
    let path = std::path::Path::new(env!("CARGO_BIN_EXE_notify-relay")).with_file_name(name);
    assert!(
        path.exists(),
        "{} is missing: build the workspace first (cargo build --workspace --bins)",
        path.display()
    );
    path
}

/// A TCP port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// Waits until something accepts TCP connections on 127.0.0.1:`port`.
pub fn wait_for_port(port: u16) {
    let deadline = std::time::Instant::now() + DEADLINE;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "nothing listens on {port}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `text` with `from` replaced by `to`, failing the test if `from` is not there: the
/// deployment tests rewrite only paths and ports of the shipped files.
pub fn rewrite(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "expected {from:?} in the shipped file");
    text.replace(from, to)
}

/// systemd's environment.d generator (Debian's `systemd` package, like systemd-analyze).
const ENVIRONMENT_D_GENERATOR: &str =
    "/usr/lib/systemd/user-environment-generators/30-systemd-environment-d-generator";

/// The variables systemd sets from an EnvironmentFile= holding `text`, read by systemd's
/// own parser. No systemd tool loads an EnvironmentFile= without a running systemd (PID
/// 1), so this runs systemd-environment-d-generator, which reads environment.d files with
/// the same parser (`parse_env_file_internal` in systemd's env-file.c: comments, quotes,
/// continuations) and prints what they set. The one thing it does besides is expanding
/// `$NAME`, so `text` must hold no `$`.
pub fn systemd_environment(text: &str) -> Vec<(String, String)> {
    assert!(
        !text.contains('$'),
        "EnvironmentFile= does not expand $, environment.d does: no $ in\n{text}"
    );
    let generated = |with_file: bool| {
        let home = tempfile::tempdir().expect("tempdir");
        let dir = home.path().join("environment.d");
        std::fs::create_dir(&dir).expect("environment.d");
        if with_file {
            std::fs::write(dir.join("notify-relay.conf"), text).expect("write env file");
        }
        let out = Command::new(ENVIRONMENT_D_GENERATOR)
            .env_clear()
            .env("XDG_CONFIG_HOME", home.path())
            .output()
            .unwrap_or_else(|e| {
                panic!("{ENVIRONMENT_D_GENERATOR} (scripts/test.sh installs systemd): {e}")
            });
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout)
            .expect("UTF-8")
            .lines()
            .map(|line| {
                let (name, value) = line
                    .split_once('=')
                    .unwrap_or_else(|| panic!("not NAME=VALUE: {line:?}"));
                (name.to_owned(), shell_unquote(value))
            })
            .collect::<Vec<_>>()
    };
    // The machine's own environment.d files (/etc/environment.d...) are read too: what
    // the file adds is what differs from a run without it.
    let machine = generated(false);
    generated(true)
        .into_iter()
        .filter(|pair| !machine.contains(pair))
        .collect()
}

/// A value as the generator prints it: bare, or (with spaces or shell characters) in
/// double quotes with `"`, `\`, `` ` `` and `$` backslash-escaped (systemd's
/// `shell_maybe_quote`).
fn shell_unquote(value: &str) -> String {
    let Some(inner) = value
        .strip_prefix('"')
        .and_then(|rest| rest.strip_suffix('"'))
    else {
        return value.to_owned();
    };
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.extend(chars.next()),
            c => out.push(c),
        }
    }
    out
}

/// An HTTP response read off a raw socket.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    /// Header names in lower case, in the order received.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl RawResponse {
    /// The first value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Sends `request` as-is on a new TCP connection and reads one response. For requests
/// no well-behaved client library would send (two keys, HTTP/1.0, no Host, huge headers).
pub async fn raw_request(addr: SocketAddr, request: &[u8]) -> RawResponse {
    let mut tcp = within("tcp connect", TcpStream::connect(addr))
        .await
        .expect("tcp connect");
    // The relay may answer (431) and close before it has read all of a huge request.
    let _ = within("send request", tcp.write_all(request)).await;
    let head_only = request.starts_with(b"HEAD ");
    read_response(&mut tcp, head_only).await
}

/// Reads one response from `tcp`: the head, then a body of Content-Length bytes (none
/// for 101 or when `head_only`). Reads no further, so responses can be read one by one.
pub async fn read_response(tcp: &mut TcpStream, head_only: bool) -> RawResponse {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let byte = within("response head", tcp.read_u8())
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "connection ended before a response head ({e}): {:?}",
                    String::from_utf8_lossy(&head)
                )
            });
        head.push(byte);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(name, _)| name == "content-length")
        .and_then(|(_, value)| value.parse().ok())
        .unwrap_or(0);
    let mut body = Vec::new();
    if status != 101 && !head_only {
        body.resize(length, 0);
        within("response body", tcp.read_exact(&mut body))
            .await
            .expect("read response body");
    }
    RawResponse {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// Reads until the peer closes the connection (failing at the deadline); returns what
/// arrived first.
pub async fn read_to_end(tcp: &mut TcpStream) -> Vec<u8> {
    let mut data = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match within("end of stream", tcp.read(&mut chunk)).await {
            Ok(0) | Err(_) => return data,
            Ok(n) => data.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Waits until the server end of `client` has taken every byte sent so far out of its
/// kernel receive queue (Linux `/proc/net/tcp`, IPv4 loopback): the relay has read them.
pub async fn wait_until_server_read(client: &TcpStream) {
    let local = client.local_addr().expect("local addr");
    let peer = client.peer_addr().expect("peer addr");
    // /proc/net/tcp writes ports as four hex digits.
    let server_end = format!(":{:04X} ", peer.port());
    let client_end = format!(":{:04X} ", local.port());
    eventually("the relay read the bytes sent", || {
        let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
        table.lines().skip(1).any(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(local_field), Some(remote_field), Some(queues)) =
                (fields.get(1), fields.get(2), fields.get(4))
            else {
                return false;
            };
            format!("{local_field} ").ends_with(&server_end)
                && format!("{remote_field} ").ends_with(&client_end)
                && queues.ends_with(":00000000")
        })
    })
    .await;
}

/// A spawned program that is killed and reaped when the guard drops, pass or fail.
pub struct KillOnDrop(Option<Child>);

impl KillOnDrop {
    pub fn new(child: Child) -> Self {
        KillOnDrop(Some(child))
    }

    /// The child, no longer killed on drop: for waiting until it exits by itself.
    pub fn into_inner(mut self) -> Child {
        self.0.take().expect("child present until into_inner")
    }
}

impl std::ops::Deref for KillOnDrop {
    type Target = Child;
    fn deref(&self) -> &Child {
        self.0.as_ref().expect("child present until into_inner")
    }
}

impl std::ops::DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut Child {
        self.0.as_mut().expect("child present until into_inner")
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Stops a program that leads its own process group (spawned with
/// `CommandExt::process_group(0)`) together with every process it started: SIGTERM to
/// the group, a bounded wait for the leader, SIGKILL to whatever is left, and a bounded
/// wait until no member is left. Best effort, for Drop: [`processes_using`] is what
/// tests assert with.
pub fn stop_process_group(leader: &mut Child) {
    let group = format!("-{}", leader.id());
    let signal_group = |signal: &str| {
        let _ = Command::new("kill")
            .args([signal, "--", &group])
            .stderr(Stdio::null())
            .status();
    };
    signal_group("-TERM");
    let deadline = std::time::Instant::now() + DEADLINE;
    while std::time::Instant::now() < deadline {
        if let Ok(Some(_)) = leader.try_wait() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    signal_group("-KILL");
    let _ = leader.wait();
    while !group_members(leader.id()).is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The live processes whose process group is `group`.
fn group_members(group: u32) -> Vec<u32> {
    live_processes()
        .filter(|&pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    // "pid (comm) state ppid pgrp ...": comm may hold spaces and parens.
                    let after_comm = stat.rsplit_once(')')?.1;
                    after_comm.split_whitespace().nth(2)?.parse::<u32>().ok()
                })
                == Some(group)
        })
        .collect()
}

/// Every live process that runs in `dir` or names it on its command line, as
/// "PID command line": what a test that gave its programs that directory left behind.
pub fn processes_using(dir: &std::path::Path) -> Vec<String> {
    let dir = dir.to_string_lossy().into_owned();
    live_processes()
        .filter_map(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap_or_default();
            // (A zombie has neither: it is gone but for its exit status.)
            let uses = cmdline.contains(&dir) || cwd.to_string_lossy().contains(&dir);
            uses.then(|| format!("{pid} {}", cmdline.trim()))
        })
        .collect()
}

/// The pids in /proc.
fn live_processes() -> impl Iterator<Item = u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
}

/// An HTTP POST of `body` (as text): (status, content type, body).
pub async fn http_request_with_body(
    addr: SocketAddr,
    path: &str,
    body: &str,
) -> (u16, String, String) {
    http_read(http_send(addr, "POST", path, &[], body.to_owned()).await).await
}

/// Opens a streaming GET (Server-Sent Events) and reads until `events` events with data
/// arrived: (status, content type, what was read).
pub async fn http_first_chunks(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    events: usize,
) -> (u16, String, String) {
    use http_body_util::BodyExt;

    let mut all = vec![("accept", "text/event-stream")];
    all.extend_from_slice(headers);
    let response = http_send(addr, "GET", path, &all, "").await;
    let (status, content_type) = (response.status().as_u16(), content_type(&response));
    let mut body = response.into_body();
    let mut text = String::new();
    while text.matches("\ndata: ").count() + usize::from(text.starts_with("data: ")) < events {
        let frame = within("an event", body.frame())
            .await
            .expect("stream open")
            .expect("frame");
        if let Ok(data) = frame.into_data() {
            text.push_str(&String::from_utf8_lossy(&data));
        }
    }
    (status, content_type, text)
}

/// A real `redis-server` on 127.0.0.1 with a free port, no persistence, in a temporary
/// directory; killed when dropped (resumed first if paused).
pub struct RedisServer {
    pub port: u16,
    child: Option<KillOnDrop>,
    dir: tempfile::TempDir,
    /// As a Redis Cluster node: its cluster bus port.
    cluster_bus: Option<u16>,
}

impl RedisServer {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut server = RedisServer {
            port: free_port(),
            child: None,
            dir,
            cluster_bus: None,
        };
        server.restart();
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Starts it (again) on the same port, with nothing in it (a cluster node keeps its
    /// slots: its cluster configuration file is kept).
    pub fn restart(&mut self) {
        let mut command = Command::new("redis-server");
        command
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"]);
        if let Some(bus) = self.cluster_bus {
            command
                .args([
                    "--cluster-enabled",
                    "yes",
                    "--cluster-port",
                    &bus.to_string(),
                ])
                .args(["--cluster-config-file", "nodes.conf"])
                .args(["--cluster-node-timeout", CLUSTER_NODE_TIMEOUT_MS]);
        }
        let child = command
            .arg("--dir")
            .arg(self.dir.path())
            .current_dir(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server runs (scripts/test.sh installs redis-server)");
        self.child = Some(KillOnDrop::new(child));
        let deadline = std::time::Instant::now() + DEADLINE;
        while self.cli(&["PING"]) != "PONG" {
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server never answered"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills it (its data is gone).
    pub fn stop(&mut self) {
        self.child = None;
    }

    /// SIGSTOP or SIGCONT: a paused Redis keeps its connections open and answers nothing.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("running").id();
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &pid.to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Runs `redis-cli` against it and returns its output, trimmed.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .expect("redis-cli runs");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

impl Drop for RedisServer {
    /// A paused server is resumed, so that the kill that follows is not held up.
    fn drop(&mut self) {
        if let Some(child) = self.child.as_ref() {
            let _ = Command::new("kill")
                .args(["-CONT", &child.id().to_string()])
                .status();
        }
    }
}

/// A real 3-master Redis Cluster on 127.0.0.1 (`redis-server --cluster-enabled yes` on
/// free ports, joined with `redis-cli --cluster create`), no persistence, no replicas;
/// every node killed when dropped.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

/// How long a cluster node may be unreachable before the others mark it failed (short,
/// so that the fault tests do not wait Redis's default 15 s).
const CLUSTER_NODE_TIMEOUT_MS: &str = "2000";
/// How long forming (or healing) a cluster may take before the test fails.
const CLUSTER_DEADLINE: Duration = Duration::from_secs(30);

impl RedisCluster {
    /// Three masters, every slot covered, `cluster_state:ok` on every node.
    pub fn start() -> Self {
        let nodes: Vec<RedisServer> = (0..3)
            .map(|_| {
                let mut node = RedisServer {
                    port: free_port(),
                    child: None,
                    dir: tempfile::tempdir().expect("tempdir"),
                    cluster_bus: Some(free_port()),
                };
                node.restart();
                node
            })
            .collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("redis-cli --cluster create runs");
        assert!(
            out.status.success(),
            "redis-cli --cluster create: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let cluster = RedisCluster { nodes };
        cluster.wait_ok();
        cluster
    }

    /// `redis+cluster://` with every node.
    pub fn url(&self) -> String {
        let addrs: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        format!("redis+cluster://{}", addrs.join(","))
    }

    /// Waits until every running node says `cluster_state:ok`.
    pub fn wait_ok(&self) {
        let deadline = std::time::Instant::now() + CLUSTER_DEADLINE;
        for node in self.nodes.iter().filter(|n| n.child.is_some()) {
            while !node.cli(&["CLUSTER", "INFO"]).contains("cluster_state:ok") {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the cluster never became ok: {}",
                    node.cli(&["CLUSTER", "INFO"])
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// The index of the node that owns the slot of `name`.
    pub fn owner_of(&self, name: &str) -> usize {
        let slot: u16 = self.nodes[0]
            .cli(&["CLUSTER", "KEYSLOT", name])
            .parse()
            .expect("a slot");
        self.nodes
            .iter()
            .position(|node| {
                node.owned_slots()
                    .iter()
                    .any(|&(a, b)| a <= slot && slot <= b)
            })
            .expect("an owner")
    }

    /// A key (`prefix` and a number) whose data and channel live on node `node`.
    pub fn key_on(&self, node: usize, prefix: &str) -> String {
        (0..10_000)
            .map(|n| format!("{prefix}{n}"))
            .find(|key| self.owner_of(&format!("{{{key}}}")) == node)
            .expect("a key on that node")
    }
}

impl RedisServer {
    /// The slot ranges this cluster node owns (from `CLUSTER NODES`).
    pub fn owned_slots(&self) -> Vec<(u16, u16)> {
        let nodes = self.cli(&["CLUSTER", "NODES"]);
        let Some(myself) = nodes.lines().find(|line| line.contains("myself")) else {
            return Vec::new();
        };
        myself
            .split_whitespace()
            .skip(8)
            .filter_map(|range| {
                let (a, b) = range.split_once('-').unwrap_or((range, range));
                Some((a.parse().ok()?, b.parse().ok()?))
            })
            .collect()
    }

    /// `INFO commandstats`: how many commands this server has run, those scripts ran
    /// included.
    pub fn all_calls(&self) -> u64 {
        self.cli(&["INFO", "commandstats"])
            .lines()
            .filter_map(|line| {
                line.split_once(":calls=")?
                    .1
                    .split(',')
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .sum()
    }

    /// `INFO commandstats`: how many calls of `command` this server has run.
    pub fn calls(&self, command: &str) -> u64 {
        let stats = self.cli(&["INFO", "commandstats"]);
        let prefix = format!("cmdstat_{command}:calls=");
        stats
            .lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .and_then(|rest| rest.split(',').next())
            .map_or(0, |calls| calls.parse().expect("a count"))
    }
}

/// Waits until `GET /readyz` answers `status`.
pub async fn wait_readyz(addr: SocketAddr, status: u16) {
    let deadline = std::time::Instant::now() + DEADLINE;
    loop {
        let (got, _, body) = http_request(addr, "GET", "/readyz").await;
        if got == status {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "/readyz answered {got} ({body}), not {status}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A whole HTTP response: status, headers and body text.
pub struct HttpReply {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: String,
}

impl HttpReply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Any HTTP/1.1 request with headers and a body, through hyper's client connection.
pub async fn http_exchange(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> HttpReply {
    let tcp = within("tcp connect", TcpStream::connect(addr))
        .await
        .expect("tcp connect");
    http_exchange_on(tcp, method, path, headers, body).await
}

/// A TCP connection to `addr` from the loopback address `source` (any of 127.0.0.0/8),
/// so one test can be several visitors.
pub async fn connect_from(source: &str, addr: SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    let source: std::net::IpAddr = source.parse().expect("source address");
    socket
        .bind(SocketAddr::new(source, 0))
        .expect("bind the source address");
    within("tcp connect", socket.connect(addr))
        .await
        .expect("tcp connect")
}

/// A WebSocket handshake over `tcp` with extra headers: the client (greeting read), or
/// the HTTP status of the refusal.
pub async fn websocket_on(
    tcp: TcpStream,
    url: &str,
    headers: &[(&str, &str)],
) -> Result<Client, u16> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = url.into_client_request().expect("request");
    for (name, value) in headers {
        request.headers_mut().insert(
            hyper::header::HeaderName::from_bytes(name.as_bytes()).expect("header name"),
            value.parse().expect("header value"),
        );
    }
    match within(
        "handshake",
        tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(tcp)),
    )
    .await
    {
        Ok((ws, _)) => {
            let mut client = Client { ws, next_id: 0 };
            assert_eq!(client.recv_text().await, GREETING);
            Ok(client)
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            Err(response.status().as_u16())
        }
        Err(other) => panic!("handshake failed otherwise: {other}"),
    }
}

/// Like [`http_exchange`], over an open connection.
pub async fn http_exchange_on(
    tcp: TcpStream,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> HttpReply {
    use http_body_util::BodyExt;

    let response = http_send_on(tcp, method, path, headers, body.to_owned()).await;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = within("http body", response.into_body().collect())
        .await
        .expect("body")
        .to_bytes();
    HttpReply {
        status,
        headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}
