//! Open loop: messages at a fixed total rate for T seconds, whatever the relay does;
//! latency is measured from the actual send time.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use futures_util::SinkExt;
use tokio::task::JoinSet;
use tokio::time::{interval, MissedTickBehavior};
use tokio_tungstenite::tungstenite::Message;

use super::{delivery_frame, Context, CpuMark, Recipients};
use crate::report::Report;
use crate::target::Ws;

/// How long stragglers may take after the last send.
const GRACE: Duration = Duration::from_secs(2);

/// `latency` settings.
#[derive(Debug, Clone, Args)]
pub struct Params {
    /// Messages per second in all.
    #[arg(long, default_value_t = 5000)]
    pub rate: u64,
    /// How long to send.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Recipient connections, each under its own key.
    #[arg(long, short = 'r', default_value_t = 100)]
    pub recipients: usize,
    /// Sender connections.
    #[arg(long, short = 's', default_value_t = 10)]
    pub senders: usize,
    /// Payload size in bytes.
    #[arg(long, short = 'p', default_value_t = 64)]
    pub size: usize,
}

/// Runs the scenario.
pub async fn run(ctx: &Context, p: &Params) -> io::Result<Report> {
    let duration = p.duration.min(ctx.max_time);
    // An open loop never waits on the window.
    let (recipients, keys) = Recipients::one_per_key(ctx, p.recipients, 1).await?;
    let senders = p.senders.max(1);
    let per_sender = p.rate as f64 / senders as f64;
    let mut tasks = JoinSet::new();
    ctx.mark("start").await?;
    let cpu = CpuMark::start(ctx.server)?;
    let started = Instant::now();
    for _ in 0..senders {
        let ws = ctx.send_target.connect(None).await?;
        tasks.spawn(paced_sender(
            ws,
            per_sender,
            duration,
            Arc::clone(&keys),
            p.size,
        ));
    }
    let mut sent = 0;
    while let Some(result) = tasks.join_next().await {
        sent += result.map_err(io::Error::other)??;
    }
    recipients
        .deliveries
        .wait_for(sent, Instant::now() + GRACE)
        .await;
    let received = recipients.received();
    let elapsed = started.elapsed().as_secs_f64();

    let mut report = Report::new("latency");
    report.add("rate", p.rate);
    report.add("recipients", p.recipients);
    report.add("senders", senders);
    report.add("size", p.size);
    report.add("sent", sent);
    report.add("delivered", received);
    report.add("lost", sent.saturating_sub(received));
    report.add_f64("achieved_rate", sent as f64 / duration.as_secs_f64(), 0);
    report.add_f64("elapsed_s", elapsed, 3);
    cpu.report(&mut report, received)?;
    ctx.mark("end").await?;
    recipients.finish().await.report(&mut report);
    Ok(report)
}

/// Sends at `rate` per second for `duration`: every millisecond, whatever is due, each
/// message stamped just before it is written.
async fn paced_sender(
    mut ws: Ws,
    rate: f64,
    duration: Duration,
    keys: Arc<Vec<String>>,
    size: usize,
) -> io::Result<u64> {
    let mut rng = fastrand::Rng::new();
    let mut tick = interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let start = Instant::now();
    let mut sent = 0u64;
    while start.elapsed() < duration {
        tick.tick().await;
        let due = (start.elapsed().as_secs_f64() * rate) as u64;
        while sent < due {
            let key = &keys[rng.usize(..keys.len())];
            ws.feed(Message::text(delivery_frame(key, sent, size)))
                .await
                .map_err(io::Error::other)?;
            sent += 1;
        }
        ws.flush().await.map_err(io::Error::other)?;
    }
    Ok(sent)
}
