//! K connections under one key, one sender: how fast one message reaches many.

use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use clap::Args;
use futures_util::SinkExt;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio::time::timeout_at;
use tokio_tungstenite::tungstenite::Message;

use super::{collect, open_registered, payload, spawn_recipient, Context, CpuMark, Deliveries};
use crate::report::Report;

/// `fanout` settings.
#[derive(Debug, Clone, Args)]
pub struct Params {
    /// Connections registered under the one key.
    #[arg(long, short = 'k', default_value_t = 1000)]
    pub connections: usize,
    /// Messages to send to the key.
    #[arg(long, short = 'n', default_value_t = 1000)]
    pub messages: u64,
    /// Payload size in bytes.
    #[arg(long, short = 'p', default_value_t = 64)]
    pub size: usize,
    /// Messages in flight at most (each is K deliveries).
    #[arg(long, short = 'w', default_value_t = 20)]
    pub window: usize,
}

/// Runs the scenario.
pub async fn run(ctx: &Context, p: &Params) -> io::Result<Report> {
    let k = p.connections.max(1);
    let key = ctx.key(0);
    let deliveries = Deliveries::new(p.window.max(1) * k);
    let stop = Arc::new(Notify::new());
    let (open, errors) = open_registered(ctx, k, 1, 64, |_| key.clone()).await;
    if errors > 0 {
        return Err(io::Error::other(format!("{errors} connections failed")));
    }
    let mut recipients = JoinSet::new();
    for ws in open {
        spawn_recipient(
            &mut recipients,
            ws,
            Arc::clone(&deliveries),
            Arc::clone(&stop),
        );
    }
    let mut sender = ctx.target.connect(None).await?;
    let deadline = Instant::now() + ctx.max_time;
    let cpu = CpuMark::start(ctx.server)?;
    let started = Instant::now();
    let mut sent = 0;
    for seq in 0..p.messages {
        let want = k as u32;
        match deliveries.window.try_acquire_many(want) {
            Ok(permits) => permits.forget(),
            Err(_) => {
                sender.flush().await.map_err(io::Error::other)?;
                match timeout_at(deadline.into(), deliveries.window.acquire_many(want)).await {
                    Ok(Ok(permits)) => permits.forget(),
                    _ => break,
                }
            }
        }
        let frame = format!(
            r#"{{"recipient_uuid":"{key}","message":"{}"}}"#,
            payload(seq, p.size)
        );
        sender
            .feed(Message::text(frame))
            .await
            .map_err(io::Error::other)?;
        sent += 1;
    }
    sender.flush().await.map_err(io::Error::other)?;
    let expected = sent * k as u64;
    deliveries.wait_for(expected, deadline).await;
    let elapsed = started.elapsed().as_secs_f64();
    let received = deliveries.received.load(Ordering::Relaxed);

    let mut report = Report::new("fanout");
    report.add("connections", k);
    report.add("size", p.size);
    report.add("sent", sent);
    report.add("deliveries", received);
    report.add("lost", expected.saturating_sub(received));
    report.add_f64("elapsed_s", elapsed, 3);
    report.add_f64("deliveries_per_s", received as f64 / elapsed, 0);
    cpu.report(&mut report, received)?;
    collect(recipients, &stop).await.report(&mut report);
    Ok(report)
}
