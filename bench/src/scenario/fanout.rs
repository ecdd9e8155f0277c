//! K connections under one key, one sender: how fast one message reaches many.

use std::io;
use std::time::Instant;

use clap::Args;
use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;

use super::{delivery_frame, open_registered, take_window, Context, CpuMark, Recipients};
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
    let (open, errors) = open_registered(ctx, k, 1, 64, |_| key.clone()).await;
    if errors > 0 {
        return Err(io::Error::other(format!("{errors} connections failed")));
    }
    // Each message is K deliveries, so the window is counted in deliveries.
    let mut recipients = Recipients::new(p.window.max(1) * k);
    for ws in open {
        recipients.add(ws);
    }
    let mut sender = ctx.target.connect(None).await?;
    let deadline = Instant::now() + ctx.max_time;
    let cpu = CpuMark::start(ctx.server)?;
    let started = Instant::now();
    let mut sent = 0;
    for seq in 0..p.messages {
        if !take_window(
            &mut sender,
            &recipients.deliveries.window,
            k as u32,
            deadline,
        )
        .await?
        {
            break;
        }
        let frame = delivery_frame(&key, seq, p.size);
        sender
            .feed(Message::text(frame))
            .await
            .map_err(io::Error::other)?;
        sent += 1;
    }
    sender.flush().await.map_err(io::Error::other)?;
    let expected = sent * k as u64;
    recipients.deliveries.wait_for(expected, deadline).await;
    let elapsed = started.elapsed().as_secs_f64();
    let received = recipients.received();

    let mut report = Report::new("fanout");
    report.add("connections", k);
    report.add("size", p.size);
    report.add("sent", sent);
    report.add("deliveries", received);
    report.add("lost", expected.saturating_sub(received));
    report.add_f64("elapsed_s", elapsed, 3);
    report.add_f64("deliveries_per_s", received as f64 / elapsed, 0);
    cpu.report(&mut report, received)?;
    recipients.finish().await.report(&mut report);
    Ok(report)
}
