//! Many idle, registered connections held open: the server's memory per connection,
//! and with `--message-size`, what each keeps once it has sent and received one message
//! of that size (a large message must not leave its buffers behind).

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use futures_util::StreamExt;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;

use super::{close_all, delivery_frame, open_registered, sources_for, with_member, Context};
use crate::report::Report;
use crate::target::{send, Ws};

/// Round trips of `--message-size` in flight at once: enough to keep the relay busy,
/// few enough that the transient buffers stay small next to what is being measured.
const ROUND_TRIPS_AT_ONCE: usize = 16;

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
    /// Before holding, each connection sends one message of this size to its own key
    /// and receives it back (e.g. 900KiB; plain numbers are bytes; 0: no message).
    #[arg(long, default_value = "0", value_parser = parse_size)]
    pub message_size: usize,
}

/// Runs the scenario.
pub async fn run(ctx: &Context, p: &Params) -> io::Result<Report> {
    let baseline = ctx.server.map(|s| s.rss_bytes()).transpose()?;
    let sources = sources_for(p.connections, p.sources);
    let started = Instant::now();
    let (mut open, errors) =
        open_registered(ctx, p.connections, sources, p.concurrency, |i| ctx.key(i)).await;
    let open_time = started.elapsed();
    let held = open.len();

    let mut before_messages = None;
    let mut round_trip_errors = 0;
    if p.message_size > 0 {
        before_messages = ctx.server.map(|s| s.rss_bytes()).transpose()?;
        let (back, failed) = round_trips(ctx, open, p.message_size).await;
        open = back;
        round_trip_errors = failed;
    }

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
    ctx.mark("start").await?;
    tokio::time::sleep(p.hold.min(ctx.max_time)).await;
    let rss = ctx.server.map(|s| s.rss_bytes()).transpose()?;
    ctx.mark("end").await?;
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
    if p.message_size > 0 {
        report.add("message_size", p.message_size);
        report.add("round_trip_errors", round_trip_errors);
    }
    if let (Some(base), Some(rss)) = (baseline, rss) {
        report.add("server_rss_baseline_kib", base / 1024);
        report.add("server_rss_kib", rss / 1024);
        let per_conn = |rss: u64| rss.saturating_sub(base) as f64 / held.max(1) as f64;
        match before_messages {
            Some(idle) => {
                // Measured on the same connections before their messages: the plain
                // idle figure, and what one message each left behind.
                report.add_f64("server_bytes_per_conn", per_conn(idle), 0);
                report.add_f64("server_bytes_per_conn_after_message", per_conn(rss), 0);
                let ratio = per_conn(rss) / per_conn(idle).max(1.0);
                report.add_f64("after_message_vs_idle", ratio, 2);
            }
            None => report.add_f64("server_bytes_per_conn", per_conn(rss), 0),
        }
    }
    close_all(still_open).await;
    Ok(report)
}

/// Each connection sends one `size`-byte message to its own key and reads it back, a
/// few connections at a time. Returns the connections that completed and how many
/// failed.
async fn round_trips(ctx: &Context, open: Vec<Ws>, size: usize) -> (Vec<Ws>, usize) {
    let gate = Arc::new(Semaphore::new(ROUND_TRIPS_AT_ONCE));
    let mut tasks = JoinSet::new();
    for (i, mut ws) in open.into_iter().enumerate() {
        // Connections come back from `open_registered` in no particular order, so each
        // moves to a key of its own first: the message must come back to its sender.
        let (gate, key) = (Arc::clone(&gate), format!("{}-large", ctx.key(i)));
        tasks.spawn(async move {
            let _permit = gate.acquire_owned().await.map_err(io::Error::other)?;
            let register = serde_json::json!({"recipient_uuid": key, "message": "connected"});
            send(&mut ws, register.to_string()).await?;
            // Ephemeral: a relay that keeps streams does not retain it, so what stays is
            // what the connection itself keeps (others ignore the member).
            let frame = with_member(delivery_frame(&key, i as u64, size), r#""ephemeral":true"#);
            send(&mut ws, frame).await?;
            loop {
                match ws.next().await {
                    Some(Ok(Message::Text(text))) if text.len() == size => return Ok(ws),
                    Some(Ok(_)) => continue,
                    other => return Err(io::Error::other(format!("round trip: {other:?}"))),
                }
            }
        });
    }
    let mut back = Vec::new();
    let mut failed = 0;
    while let Some(result) = tasks.join_next().await {
        match result {
            Ok(Ok(ws)) => back.push(ws),
            Ok(Err(e)) => {
                if failed == 0 {
                    eprintln!("{e}");
                }
                failed += 1;
            }
            Err(_) => failed += 1,
        }
    }
    (back, failed)
}

/// A size in bytes, with an optional KiB or MiB suffix: `900KiB`, `1MiB`, `4096`.
fn parse_size(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, ""),
    };
    let scale = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        other => return Err(format!("unknown unit {other:?}: use B, KiB or MiB")),
    };
    number
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .ok_or_else(|| format!("not a size: {text:?}"))
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_with_units() {
        assert_eq!(parse_size("900KiB"), Ok(921_600));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("12 B"), Ok(12));
        assert!(parse_size("9kb").is_err());
        assert!(parse_size("KiB").is_err());
    }
}
