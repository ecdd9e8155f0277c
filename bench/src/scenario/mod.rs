//! The load scenarios and what they share: timestamped payloads, recipients that record
//! latency, and the server measurements taken around a run.

pub mod churn;
pub mod fanout;
pub mod idle;
pub mod latency;
pub mod retention;
pub mod throughput;

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;

use crate::report::{Latencies, Report};
use crate::server_stats::ServerProcess;
use crate::target::{Target, Ws};

/// What every scenario gets.
#[derive(Debug, Clone)]
pub struct Context {
    /// The relay under test.
    pub target: Target,
    /// Where senders connect (`--send-url`; the relay under test unless given).
    pub send_target: Target,
    /// The relay's process, for CPU and RSS (`--pid`).
    pub server: Option<ServerProcess>,
    /// Every run ends by this time, finished or not.
    pub max_time: Duration,
    /// `--marks`: stop at the start and the end of the measured phase (see [`Context::mark`]).
    pub marks: bool,
    /// A prefix making this run's keys unique on a shared relay.
    pub run_id: String,
}

impl Context {
    /// This run's key number `i`.
    pub fn key(&self, i: usize) -> String {
        format!("bench-{}-{i}", self.run_id)
    }

    /// With `--marks`: prints `mark: NAME` on stderr and waits for a line on standard
    /// input, at most `--max-time` (at the end of input it goes on at once). Without it,
    /// nothing.
    pub async fn mark(&self, name: &str) -> io::Result<()> {
        if !self.marks {
            return Ok(());
        }
        eprintln!("mark: {name}");
        // std's stdin keeps what it read ahead for the next call.
        let answer = tokio::task::spawn_blocking(|| {
            std::io::stdin().read_line(&mut String::new()).map(|_| ())
        });
        match tokio::time::timeout(self.max_time, answer).await {
            Ok(joined) => joined.map_err(io::Error::other)?,
            Err(_) => Err(io::Error::other(format!(
                "no line on standard input after mark {name} within --max-time"
            ))),
        }
    }
}

/// Nanoseconds since the bench started: the clock in every payload.
pub fn now_ns() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// A message of exactly `size` bytes (at least the header) carrying its send time.
pub fn payload(seq: u64, size: usize) -> String {
    let mut text = format!("{seq}:{}:", now_ns());
    if text.len() < size {
        text.extend(std::iter::repeat_n('x', size - text.len()));
    }
    text
}

/// The send time in a payload, or `None` for frames that are not bench payloads.
pub fn sent_ns(text: &str) -> Option<u64> {
    let mut parts = text.splitn(3, ':');
    let _seq: u64 = parts.next()?.parse().ok()?;
    parts.next()?.parse().ok()
}

/// Counts deliveries and gives window permits back to the senders.
#[derive(Debug)]
pub struct Deliveries {
    /// Payloads received, across all recipients.
    pub received: AtomicU64,
    /// Closed-loop window: one permit per delivery still in flight.
    pub window: Semaphore,
}

impl Deliveries {
    /// A counter with a window of `window` in-flight deliveries.
    pub fn new(window: usize) -> Arc<Self> {
        Arc::new(Self {
            received: AtomicU64::new(0),
            window: Semaphore::new(window),
        })
    }

    fn count(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// Waits until `expected` payloads arrived or `deadline` passed.
    pub async fn wait_for(&self, expected: u64, deadline: Instant) {
        while self.count() < expected && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

/// Recipient connections that count what they receive, record its latency, and give
/// window permits back to the senders.
pub struct Recipients {
    tasks: JoinSet<Vec<u64>>,
    stop: Arc<tokio::sync::Notify>,
    /// Shared with the senders.
    pub deliveries: Arc<Deliveries>,
}

impl Recipients {
    /// No recipients yet; senders may have `window` deliveries in flight.
    pub fn new(window: usize) -> Self {
        Self {
            tasks: JoinSet::new(),
            stop: Arc::new(tokio::sync::Notify::new()),
            deliveries: Deliveries::new(window.max(1)),
        }
    }

    /// `count` recipients, each registered under its own key; returns them and the keys.
    pub async fn one_per_key(
        ctx: &Context,
        count: usize,
        window: usize,
    ) -> io::Result<(Self, Arc<Vec<String>>)> {
        let mut recipients = Self::new(window);
        let keys: Vec<String> = (0..count.max(1)).map(|i| ctx.key(i)).collect();
        for key in &keys {
            recipients.add(ctx.target.registered(None, key).await?);
        }
        Ok((recipients, Arc::new(keys)))
    }

    /// Reads payloads on `ws` until it closes or the recipients finish.
    pub fn add(&mut self, mut ws: Ws) {
        let (deliveries, stop) = (Arc::clone(&self.deliveries), Arc::clone(&self.stop));
        self.tasks.spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let frame = tokio::select! {
                    frame = ws.next() => frame,
                    () = stop.notified() => break,
                };
                match frame {
                    Some(Ok(Message::Text(text))) => {
                        if let Some(sent) = sent_ns(text.as_str()) {
                            latencies.push(now_ns().saturating_sub(sent));
                            deliveries.received.fetch_add(1, Ordering::Relaxed);
                            deliveries.window.add_permits(1);
                        }
                    }
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => break,
                }
            }
            latencies
        });
    }

    /// Payloads received so far.
    pub fn received(&self) -> u64 {
        self.deliveries.count()
    }

    /// Stops every recipient and gathers their latencies.
    pub async fn finish(mut self) -> Latencies {
        self.stop.notify_waiters();
        let mut latencies = Latencies::default();
        while let Some(result) = self.tasks.join_next().await {
            if let Ok(samples) = result {
                latencies.extend(samples);
            }
        }
        latencies
    }
}

/// The frame that delivers payload `seq` of `size` bytes to `key`.
pub fn delivery_frame(key: &str, seq: u64, size: usize) -> String {
    // Keys and payloads are [a-z0-9:-x] only, so no JSON escaping is needed.
    format!(
        r#"{{"recipient_uuid":"{key}","message":"{}"}}"#,
        payload(seq, size)
    )
}

/// `frame` (a JSON object's text) with one more member, e.g. `"ephemeral":true`.
pub fn with_member(mut frame: String, member: &str) -> String {
    if frame.ends_with('}') {
        frame.pop();
        frame.push(',');
        frame.push_str(member);
        frame.push('}');
    }
    frame
}

/// Takes `n` window permits for the next send. When it has to wait, it first flushes
/// `ws`: what is buffered there may be what the recipients need to free permits.
/// False when `deadline` passed first.
pub async fn take_window(
    ws: &mut Ws,
    window: &Semaphore,
    n: u32,
    deadline: Instant,
) -> io::Result<bool> {
    if let Ok(permits) = window.try_acquire_many(n) {
        permits.forget();
        return Ok(true);
    }
    ws.flush().await.map_err(io::Error::other)?;
    match tokio::time::timeout_at(deadline.into(), window.acquire_many(n)).await {
        Ok(Ok(permits)) => {
            permits.forget();
            Ok(true)
        }
        _ => Ok(false),
    }
}

/// Server CPU time at the start of a measured interval.
pub struct CpuMark(Option<(ServerProcess, Duration)>);

impl CpuMark {
    /// Marks now.
    pub fn start(server: Option<ServerProcess>) -> io::Result<Self> {
        Ok(CpuMark(match server {
            Some(s) => Some((s, s.cpu_time()?)),
            None => None,
        }))
    }

    /// The server's CPU time since the mark (`None` without `--pid`).
    pub fn elapsed(&self) -> io::Result<Option<Duration>> {
        self.0
            .map(|(server, start)| Ok(server.cpu_time()?.saturating_sub(start)))
            .transpose()
    }

    /// Adds the server's CPU time since the mark, per delivered message, and its RSS.
    pub fn report(&self, report: &mut Report, delivered: u64) -> io::Result<()> {
        if let Some((server, start)) = self.0 {
            let cpu = server.cpu_time()?.saturating_sub(start);
            report.add_f64("server_cpu_s", cpu.as_secs_f64(), 3);
            if delivered > 0 {
                let per = cpu.as_secs_f64() * 1e6 / delivered as f64;
                report.add_f64("server_cpu_us_per_msg", per, 3);
            }
            report.add("server_rss_kib", server.rss_bytes()? / 1024);
        }
        Ok(())
    }
}

/// Prints progress on stderr at most once a second.
pub struct Progress {
    last: Instant,
    label: &'static str,
}

impl Progress {
    /// A progress line labelled `label`.
    pub fn new(label: &'static str) -> Self {
        Self {
            last: Instant::now(),
            label,
        }
    }

    /// Reports `done` of `total` if a second has passed.
    pub fn tick(&mut self, done: usize, total: usize) {
        if self.last.elapsed() >= Duration::from_secs(1) {
            eprintln!("{}: {done}/{total}", self.label);
            self.last = Instant::now();
        }
    }
}

/// Opens `count` registered connections, `concurrency` handshakes at a time, spread
/// over `sources` loopback source addresses; key `i` comes from `key`. Returns the
/// connections and how many failed.
pub async fn open_registered(
    ctx: &Context,
    count: usize,
    sources: usize,
    concurrency: usize,
    key: impl Fn(usize) -> String,
) -> (Vec<Ws>, usize) {
    let gate = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut opening = JoinSet::new();
    for i in 0..count {
        let (target, gate, key) = (ctx.target.clone(), Arc::clone(&gate), key(i));
        let source = crate::target::source_for(i, sources);
        opening.spawn(async move {
            let _permit = gate.acquire_owned().await.map_err(io::Error::other)?;
            target.registered(source, &key).await
        });
    }
    let mut open = Vec::with_capacity(count);
    let mut errors = 0;
    let mut progress = Progress::new("connected");
    while let Some(result) = opening.join_next().await {
        match result {
            Ok(Ok(ws)) => open.push(ws),
            Ok(Err(e)) => {
                if errors == 0 {
                    eprintln!("connection failed: {e}");
                }
                errors += 1;
            }
            Err(_) => errors += 1,
        }
        progress.tick(open.len() + errors, count);
    }
    (open, errors)
}

/// How many source addresses `connections` need (about 10,000 per address).
pub fn sources_for(connections: usize, requested: usize) -> usize {
    if requested > 0 {
        requested
    } else {
        connections.div_ceil(10_000).max(1)
    }
}

/// Closes every connection with a Close handshake, concurrently.
pub async fn close_all(connections: Vec<Ws>) {
    let mut closing = JoinSet::new();
    for mut ws in connections {
        closing.spawn(async move {
            let _ = ws.close(None).await;
            while let Some(Ok(_)) = ws.next().await {}
        });
    }
    while closing.join_next().await.is_some() {}
}
