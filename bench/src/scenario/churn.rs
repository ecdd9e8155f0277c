//! Cycles of connecting and disconnecting many clients: does the server's memory creep,
//! and (with `--pid`) what does one connect + register + close cost the server in CPU,
//! with and without watchers of the keys' presence (`--watchers`, notify-relay only)?

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use clap::Args;
use futures_util::StreamExt;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;

use super::{close_all, open_registered, sources_for, Context, CpuMark};
use crate::report::Report;
use crate::target::{send, Ws};

/// `churn` settings.
#[derive(Debug, Clone, Args)]
pub struct Params {
    /// Connections opened (and registered) per cycle.
    #[arg(long, short = 'c', default_value_t = 10_000)]
    pub connections: usize,
    /// Connect/disconnect cycles.
    #[arg(long, default_value_t = 10)]
    pub cycles: usize,
    /// Loopback source addresses; 0 picks one per 10,000 connections.
    #[arg(long, default_value_t = 0)]
    pub sources: usize,
    /// Handshakes in progress at once.
    #[arg(long, default_value_t = 256)]
    pub concurrency: usize,
    /// Keys the connections register under (connection i under key i mod KEYS, the same
    /// keys every cycle); 0: a key of its own for every connection.
    #[arg(long, default_value_t = 0)]
    pub keys: usize,
    /// Connections that watch the presence of every key (`{"watch": KEY}`, notify-relay
    /// only; needs --keys, at most the relay's --max-watches): each connect and close is
    /// then pushed to them.
    #[arg(long, default_value_t = 0, requires = "keys")]
    pub watchers: usize,
}

/// Runs the scenario. Needs `--pid` to say anything about memory.
pub async fn run(ctx: &Context, p: &Params) -> io::Result<Report> {
    let sources = sources_for(p.connections, p.sources);
    let frames = Arc::new(AtomicU64::new(0));
    let mut watching = JoinSet::new();
    for _ in 0..p.watchers {
        let ws = watcher(ctx, p.keys).await?;
        watching.spawn(count_frames(ws, Arc::clone(&frames)));
    }
    ctx.mark("start").await?;
    let cpu_start = ctx.server.map(|s| s.cpu_time()).transpose()?;
    let started = std::time::Instant::now();
    let mut peaks = Vec::new();
    let mut after = Vec::new();
    let mut errors = 0;
    let cpu = CpuMark::start(ctx.server)?;
    for cycle in 0..p.cycles {
        if started.elapsed() > ctx.max_time {
            break;
        }
        let key_of = |i: usize| match p.keys {
            0 => ctx.key(cycle * p.connections + i),
            keys => ctx.key(i % keys),
        };
        let (open, failed) =
            open_registered(ctx, p.connections, sources, p.concurrency, key_of).await;
        errors += failed;
        if let Some(server) = ctx.server {
            peaks.push(server.rss_bytes()? / 1024);
        }
        close_all(open).await;
        if let Some(server) = ctx.server {
            after.push(server.rss_bytes()? / 1024);
        }
        eprintln!("cycle {}/{} done", cycle + 1, p.cycles);
    }
    ctx.mark("end").await?;

    let cycles = peaks.len().max(after.len());
    let mut report = Report::new("churn");
    report.add("connections", p.connections);
    report.add("cycles", cycles);
    report.add("errors", errors);
    if let (Some(server), Some(start)) = (ctx.server, cpu_start) {
        let cpu = server.cpu_time()?.saturating_sub(start);
        report.add_f64("server_cpu_s", cpu.as_secs_f64(), 3);
        let cycled = (p.connections * cycles.max(1)) as f64;
        report.add_f64(
            "server_cpu_us_per_connection",
            cpu.as_secs_f64() * 1e6 / cycled,
            2,
        );
    }
    if p.watchers > 0 {
        // Let the last pushes arrive before counting.
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        report.add("keys", p.keys);
        report.add("watchers", p.watchers);
        report.add("presence_changes", 2 * p.connections * cycles);
        report.add("watcher_frames", frames.load(Ordering::Relaxed));
    }
    watching.abort_all();
    if let (Some(first), Some(last)) = (peaks.first(), peaks.last()) {
        report.add("server_peak_rss_kib_first", *first);
        report.add("server_peak_rss_kib_last", *last);
        report.add_f64(
            "peak_growth_pct",
            (*last as f64 / *first as f64 - 1.0) * 100.0,
            1,
        );
        report.add("server_peak_rss_kib_by_cycle", peaks.clone());
        report.add("server_rss_kib_after_close_by_cycle", after);
    }
    // What one connection costs the server from accept to close (with wss://, the TLS
    // handshake included).
    if let Some(cpu) = cpu.elapsed()? {
        let opened = (p.connections * peaks.len()).saturating_sub(errors).max(1);
        report.add_f64("server_cpu_s", cpu.as_secs_f64(), 3);
        report.add_f64(
            "server_cpu_us_per_connection",
            cpu.as_secs_f64() * 1e6 / opened as f64,
            1,
        );
    }
    report.add_f64("elapsed_s", started.elapsed().as_secs_f64(), 1);
    Ok(report)
}

/// A connection watching the presence of keys 0..`keys`, once every watch is answered.
async fn watcher(ctx: &Context, keys: usize) -> io::Result<Ws> {
    let mut ws = ctx.target.connect(None).await?;
    for i in 0..keys {
        let frame = serde_json::json!({"id": i, "watch": ctx.key(i)});
        send(&mut ws, frame.to_string()).await?;
    }
    let mut answered = 0;
    while answered < keys {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => {
                let reply: serde_json::Value =
                    serde_json::from_str(text.as_str()).unwrap_or_default();
                if reply.get("id").is_some() {
                    if reply["ok"] != true {
                        return Err(io::Error::other(format!("watch refused: {text}")));
                    }
                    answered += 1;
                }
            }
            Some(Ok(_)) => continue,
            other => return Err(io::Error::other(format!("watch: {other:?}"))),
        }
    }
    Ok(ws)
}

/// Counts the text frames a watcher receives until its task is aborted.
async fn count_frames(mut ws: Ws, frames: Arc<AtomicU64>) {
    while let Some(Ok(message)) = ws.next().await {
        if matches!(message, Message::Text(_)) {
            frames.fetch_add(1, Ordering::Relaxed);
        }
    }
}
