//! notify-relay-bench: a load generator for any server that speaks the notify-relay
//! protocol (only what the original server did, docs/PROTOCOL.md, so the Python original
//! and the peers in bench/peers can be measured too).
//!
//! Loopback only: it refuses targets that are not on this machine. Every run is bounded
//! in count and by `--max-time`.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod report;
mod scenario;
mod server_stats;
mod target;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use scenario::Context;
use server_stats::ServerProcess;
use target::Target;

/// Load generator for WebSocket notification relays (loopback only).
#[derive(Debug, Parser)]
#[command(name = "notify-relay-bench", version)]
struct Cli {
    /// The relay's URL; must resolve to loopback (127.0.0.0/8 or ::1).
    #[arg(long, global = true, default_value = "ws://127.0.0.1:8765/")]
    url: String,
    /// Where the senders of `throughput` and `latency` connect: another relay of the same
    /// key space (relays sharing one Redis), to measure cross-relay delivery [default:
    /// --url].
    #[arg(long, global = true)]
    send_url: Option<String>,
    /// For a wss:// URL: the PEM file of the CA that issued the relay's certificate.
    #[arg(long, global = true)]
    ca_cert: Option<PathBuf>,
    /// The relay's process id: adds its CPU time per message and its RSS.
    #[arg(long, global = true)]
    pid: Option<u32>,
    /// Print one JSON object per run instead of a table.
    #[arg(long, global = true)]
    json: bool,
    /// Upper bound on the run's measured phase.
    #[arg(long, global = true, default_value = "120s", value_parser = humantime::parse_duration)]
    max_time: Duration,
    /// At the start and at the end of the measured phase (in `idle`: of the hold), print
    /// `mark: start` or `mark: end` on stderr and wait for a line on standard input (at
    /// most --max-time; none at end of input): a script measures other processes (a
    /// second relay, Redis) over exactly that phase, and `idle` holds until it answers.
    #[arg(long, global = true)]
    marks: bool,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// Closed loop: delivered messages per second, loss and latency.
    Throughput(scenario::throughput::Params),
    /// Open loop at a fixed rate: latency percentiles from the actual send time.
    Latency(scenario::latency::Params),
    /// Many idle registered connections: server memory per connection (and what one
    /// large message each leaves behind, with --message-size).
    Idle(scenario::idle::Params),
    /// Many connections under one key: deliveries per second.
    Fanout(scenario::fanout::Params),
    /// Connect/disconnect cycles: does server memory creep?
    Churn(scenario::churn::Params),
    /// Messages to keys nobody listens to: server memory per retained message.
    Retention(scenario::retention::Params),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Each client connection is a file descriptor.
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("notify-relay-bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cli));
    // A wait for standard input (--marks) that timed out cannot be cancelled: do not wait
    // for it on the way out.
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("notify-relay-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> std::io::Result<()> {
    let ca_cert = cli.ca_cert.as_deref();
    let target = Target::parse(&cli.url, ca_cert).await?;
    let send_target = match &cli.send_url {
        Some(url) => Target::parse(url, ca_cert).await?,
        None => target.clone(),
    };
    let server = cli.pid.map(ServerProcess::new).transpose()?;
    let ctx = Context {
        target,
        send_target,
        server,
        max_time: cli.max_time,
        marks: cli.marks,
        run_id: format!("{:x}", fastrand::u32(..)),
    };
    let report = match &cli.scenario {
        Scenario::Throughput(p) => scenario::throughput::run(&ctx, p).await?,
        Scenario::Latency(p) => scenario::latency::run(&ctx, p).await?,
        Scenario::Idle(p) => scenario::idle::run(&ctx, p).await?,
        Scenario::Fanout(p) => scenario::fanout::run(&ctx, p).await?,
        Scenario::Churn(p) => scenario::churn::run(&ctx, p).await?,
        Scenario::Retention(p) => scenario::retention::run(&ctx, p).await?,
    };
    report.print(cli.json);
    Ok(())
}
