//! Many idle, registered connections held open: the server's memory per connection.

use std::io;
use std::time::{Duration, Instant};

use clap::Args;
use futures_util::StreamExt;
use tokio::task::JoinSet;

use super::{close_all, open_registered, sources_for, Context};
use crate::report::Report;

/// `idle` settings.
#[derive(Debug, Clone, Args)]
pub struct Params {
    /// Connections to open and register.
    #[arg(long, short = 'c', default_value_t = 10_000)]
    pub connections: usize,
    /// How long to hold them once all are open.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    pub hold: Duration,
    /// Loopback source addresses (127.0.0.2...); 0 picks one per 10,000 connections.
    #[arg(long, default_value_t = 0)]
    pub sources: usize,
    /// Handshakes in progress at once.
    #[arg(long, default_value_t = 256)]
    pub concurrency: usize,
}

/// Runs the scenario.
pub async fn run(ctx: &Context, p: &Params) -> io::Result<Report> {
    let baseline = ctx.server.map(|s| s.rss_bytes()).transpose()?;
    let sources = sources_for(p.connections, p.sources);
    let started = Instant::now();
    let (open, errors) =
        open_registered(ctx, p.connections, sources, p.concurrency, |i| ctx.key(i)).await;
    let open_time = started.elapsed();
    let held = open.len();

    // Hold: every connection keeps being read, so Pings are answered as a page would.
    let mut holders = JoinSet::new();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    for mut ws in open {
        let mut stop = stop_rx.clone();
        holders.spawn(async move {
            loop {
                tokio::select! {
                    frame = ws.next() => if !matches!(frame, Some(Ok(_))) { return None },
                    _ = stop.changed() => return Some(ws),
                }
            }
        });
    }
    tokio::time::sleep(p.hold.min(ctx.max_time)).await;
    let rss = ctx.server.map(|s| s.rss_bytes()).transpose()?;
    let _ = stop_tx.send(true);
    let mut still_open = Vec::with_capacity(held);
    while let Some(result) = holders.join_next().await {
        if let Ok(Some(ws)) = result {
            still_open.push(ws);
        }
    }
    let dropped = held - still_open.len();

    let mut report = Report::new("idle");
    report.add("connections", p.connections);
    report.add("sources", sources);
    report.add("registered", held);
    report.add("errors", errors);
    report.add("dropped_while_held", dropped);
    report.add_f64("open_s", open_time.as_secs_f64(), 2);
    if let (Some(base), Some(rss)) = (baseline, rss) {
        report.add("server_rss_baseline_kib", base / 1024);
        report.add("server_rss_kib", rss / 1024);
        if held > 0 {
            let per = rss.saturating_sub(base) as f64 / held as f64;
            report.add_f64("server_bytes_per_conn", per, 0);
        }
    }
    close_all(still_open).await;
    Ok(report)
}
