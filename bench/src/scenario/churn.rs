//! Cycles of connecting and disconnecting many clients: does the server's memory creep?

use std::io;

use clap::Args;

use super::{close_all, open_registered, sources_for, Context, CpuMark};
use crate::report::Report;

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
}

/// Runs the scenario. Needs `--pid` to say anything about memory.
pub async fn run(ctx: &Context, p: &Params) -> io::Result<Report> {
    let sources = sources_for(p.connections, p.sources);
    let started = std::time::Instant::now();
    let mut peaks = Vec::new();
    let mut after = Vec::new();
    let mut errors = 0;
    let cpu = CpuMark::start(ctx.server)?;
    for cycle in 0..p.cycles {
        if started.elapsed() > ctx.max_time {
            break;
        }
        let key_of = |i: usize| ctx.key(cycle * p.connections + i);
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

    let mut report = Report::new("churn");
    report.add("connections", p.connections);
    report.add("cycles", peaks.len().max(after.len()));
    report.add("errors", errors);
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
