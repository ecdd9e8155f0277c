//! K connections under one key, one sender: how fast one message reaches many.

use std::io;
use std::time::{Duration, Instant};

use clap::Args;
use futures_util::{SinkExt, StreamExt};
use tokio::task::JoinSet;
use tokio::time::timeout_at;
use tokio_tungstenite::tungstenite::Message;

use super::{delivery_frame, open_registered, take_window, Context, CpuMark, Recipients, Ws};
use crate::report::Report;
use crate::target::{send, PROBE};

/// How long a round of [`move_to`] waits for its probe before sending another.
const PROBE_ROUND: Duration = Duration::from_secs(2);

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
    // Each proven under a key of its own first: proving each registration with a probe
    // to the shared key would send K²/2 probes (50 million at 10,000 connections) and
    // leave most of them queued in the clients' sockets when the measurement starts.
    let (open, errors) = open_registered(ctx, k, 1, 64, |i| ctx.key(i + 1)).await;
    if errors > 0 {
        return Err(io::Error::other(format!("{errors} connections failed")));
    }
    let mut sender = ctx.target.connect(None).await?;
    let open = move_to(open, &key, &mut sender, Instant::now() + ctx.max_time).await?;
    // Each message is K deliveries, so the window is counted in deliveries.
    let mut recipients = Recipients::new(p.window.max(1) * k);
    for ws in open {
        recipients.add(ws);
    }
    ctx.mark("start").await?;
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
    ctx.mark("end").await?;
    recipients.finish().await.report(&mut report);
    Ok(report)
}

/// Registers every connection under `key` and proves it: `sender` sends a probe to `key`
/// and each connection waits for one; those whose registration the server had not yet
/// handled when it routed the probe wait for the next round's. A few probes of K
/// deliveries each, however large K is; the extra probes that proven connections receive
/// are ignored like any frame that is not a payload.
async fn move_to(
    open: Vec<Ws>,
    key: &str,
    sender: &mut Ws,
    deadline: Instant,
) -> io::Result<Vec<Ws>> {
    let register = serde_json::json!({"recipient_uuid": key, "message": "connected"}).to_string();
    let mut moving = JoinSet::new();
    for mut ws in open {
        let register = register.clone();
        moving.spawn(async move { send(&mut ws, register).await.map(|()| ws) });
    }
    let mut pending = Vec::with_capacity(moving.len());
    while let Some(moved) = moving.join_next().await {
        pending.push(moved.map_err(io::Error::other)??);
    }

    let probe = serde_json::json!({"recipient_uuid": key, "message": PROBE, "ephemeral": true});
    let mut proven = Vec::with_capacity(pending.len());
    while !pending.is_empty() {
        if Instant::now() >= deadline {
            return Err(io::Error::other(format!(
                "{} connections not proven under the fan-out key",
                pending.len()
            )));
        }
        send(sender, probe.to_string()).await?;
        let round_end = tokio::time::Instant::from_std(Instant::now() + PROBE_ROUND);
        let mut waiting = JoinSet::new();
        for mut ws in pending.drain(..) {
            waiting.spawn(async move {
                let seen = timeout_at(round_end, wait_for_probe(&mut ws)).await;
                (ws, seen)
            });
        }
        while let Some(waited) = waiting.join_next().await {
            match waited.map_err(io::Error::other)? {
                (ws, Ok(Ok(()))) => proven.push(ws),
                (ws, Err(_elapsed)) => pending.push(ws),
                (_, Ok(Err(e))) => return Err(e),
            }
        }
    }
    Ok(proven)
}

/// Reads `ws` until a probe arrives.
async fn wait_for_probe(ws: &mut Ws) -> io::Result<()> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) if text.as_str() == PROBE => return Ok(()),
            Some(Ok(_)) => continue,
            other => return Err(io::Error::other(format!("waiting for a probe: {other:?}"))),
        }
    }
}
