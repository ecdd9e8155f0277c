//! Closed loop: S senders send N messages of P bytes to random recipients among R, with
//! at most W deliveries in flight. Measures delivered msgs/s, loss and latency.

use std::io;
use std::sync::Arc;
use std::time::Instant;

use clap::Args;
use futures_util::SinkExt;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;

use super::{delivery_frame, take_window, Context, CpuMark, Deliveries, Recipients};
use crate::report::Report;
use crate::target::Ws;

/// `throughput` settings.
#[derive(Debug, Clone, Args)]
pub struct Params {
    /// Recipient connections, each under its own key.
    #[arg(long, short = 'r', default_value_t = 100)]
    pub recipients: usize,
    /// Sender connections.
    #[arg(long, short = 's', default_value_t = 10)]
    pub senders: usize,
    /// Messages in all.
    #[arg(long, short = 'n', default_value_t = 200_000)]
    pub messages: u64,
    /// Payload size in bytes.
    #[arg(long, short = 'p', default_value_t = 64)]
    pub size: usize,
    /// Deliveries in flight at most (closed loop).
    #[arg(long, short = 'w', default_value_t = 2000)]
    pub window: usize,
}

/// Runs the scenario.
pub async fn run(ctx: &Context, p: &Params) -> io::Result<Report> {
    let (recipients, keys) = Recipients::one_per_key(ctx, p.recipients, p.window).await?;
    let mut senders = Vec::new();
    for _ in 0..p.senders.max(1) {
        senders.push(ctx.send_target.connect(None).await?);
    }

    ctx.mark("start").await?;
    let deadline = Instant::now() + ctx.max_time;
    let cpu = CpuMark::start(ctx.server)?;
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    let count = senders.len() as u64;
    for (i, ws) in senders.into_iter().enumerate() {
        let share = p.messages / count + u64::from((i as u64) < p.messages % count);
        let (keys, deliveries) = (Arc::clone(&keys), Arc::clone(&recipients.deliveries));
        tasks.spawn(send_loop(ws, share, keys, p.size, deliveries, deadline));
    }
    let mut sent = 0;
    while let Some(result) = tasks.join_next().await {
        sent += result.map_err(io::Error::other)??;
    }
    recipients.deliveries.wait_for(sent, deadline).await;
    let elapsed = started.elapsed().as_secs_f64();
    let received = recipients.received();

    let mut report = Report::new("throughput");
    report.add("recipients", p.recipients);
    report.add("senders", p.senders);
    report.add("size", p.size);
    report.add("window", p.window);
    report.add("sent", sent);
    report.add("delivered", received);
    report.add("lost", sent.saturating_sub(received));
    report.add_f64("elapsed_s", elapsed, 3);
    report.add_f64("delivered_per_s", received as f64 / elapsed, 0);
    cpu.report(&mut report, received)?;
    ctx.mark("end").await?;
    recipients.finish().await.report(&mut report);
    Ok(report)
}

async fn send_loop(
    mut ws: Ws,
    count: u64,
    keys: Arc<Vec<String>>,
    size: usize,
    deliveries: Arc<Deliveries>,
    deadline: Instant,
) -> io::Result<u64> {
    let mut rng = fastrand::Rng::new();
    for seq in 0..count {
        if !take_window(&mut ws, &deliveries.window, 1, deadline).await? {
            return Ok(seq);
        }
        let key = &keys[rng.usize(..keys.len())];
        let frame = delivery_frame(key, seq, size);
        ws.feed(Message::text(frame))
            .await
            .map_err(io::Error::other)?;
    }
    ws.flush().await.map_err(io::Error::other)?;
    Ok(count)
}
