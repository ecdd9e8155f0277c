//! Messages sent to keys nobody listens to: what the server keeps for them. With
//! notify-relay's streams on, each is retained for the next registration; this measures
//! the server memory one retained message costs.

use std::io;

use clap::Args;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use super::{delivery_frame, with_member, Context, Progress};
use crate::report::Report;
use crate::target::{send, PROBE};

/// `retention` settings.
#[derive(Debug, Clone, Args)]
pub struct Params {
    /// Messages sent in all.
    #[arg(long, short = 'n', default_value_t = 100_000)]
    pub messages: usize,
    /// Keys they are spread over (round robin); nobody is registered under them.
    #[arg(long, default_value_t = 1_000)]
    pub keys: usize,
    /// Message size in bytes.
    #[arg(long, short = 's', default_value_t = 64)]
    pub size: usize,
    /// Send every message with this `collapse` name (progress ticks): a relay that
    /// collapses keeps one per key.
    #[arg(long, value_name = "NAME")]
    pub collapse: Option<String>,
}

/// Runs the scenario. Needs `--pid` to say anything about memory.
pub async fn run(ctx: &Context, p: &Params) -> io::Result<Report> {
    let own_key = ctx.key(usize::MAX);
    let mut producer = ctx.target.registered(None, &own_key).await?;
    ctx.mark("start").await?;
    let before = ctx.server.map(|s| s.rss_bytes()).transpose()?;
    let started = std::time::Instant::now();
    let mut progress = Progress::new("sent");
    let keys = p.keys.max(1);
    let mut sent = 0;
    while sent < p.messages && started.elapsed() < ctx.max_time {
        let mut frame = delivery_frame(&ctx.key(sent % keys), sent as u64, p.size);
        if let Some(name) = &p.collapse {
            frame = with_member(frame, &format!(r#""collapse":{}"#, serde_json::json!(name)));
        }
        producer
            .feed(Message::text(frame))
            .await
            .map_err(io::Error::other)?;
        sent += 1;
        if sent % 1024 == 0 {
            producer.flush().await.map_err(io::Error::other)?;
            progress.tick(sent, p.messages);
        }
    }
    // Frames of one connection are handled in order: once the probe comes back, the
    // server has handled every message before it.
    let probe = serde_json::json!({"recipient_uuid": own_key, "message": PROBE, "ephemeral": true});
    send(&mut producer, probe.to_string()).await?;
    loop {
        match producer.next().await {
            Some(Ok(Message::Text(text))) if text.as_str() == PROBE => break,
            Some(Ok(_)) => continue,
            other => return Err(io::Error::other(format!("probe: {other:?}"))),
        }
    }
    let elapsed = started.elapsed();
    let after = ctx.server.map(|s| s.rss_bytes()).transpose()?;
    ctx.mark("end").await?;

    let mut report = Report::new("retention");
    report.add("messages", sent);
    report.add("keys", keys);
    report.add("size", p.size);
    report.add("collapse", p.collapse.clone().unwrap_or_default());
    if let (Some(before), Some(after)) = (before, after) {
        report.add("server_rss_kib_before", before / 1024);
        report.add("server_rss_kib_after", after / 1024);
        report.add_f64(
            "server_rss_bytes_per_message",
            after.saturating_sub(before) as f64 / sent.max(1) as f64,
            1,
        );
    }
    report.add_f64("elapsed_s", elapsed.as_secs_f64(), 2);
    Ok(report)
}
