//! The `notify-relay` daemon: parses the configuration, sets up logging and signals,
//! and runs the server until SIGTERM or SIGINT.

use std::io::{self, Write};
use std::process::ExitCode;

use clap::Parser;
use futures_util::StreamExt;
use log::{error, info, warn};
use notify_relay::log_text::write_line_safe;
use notify_relay::{Config, Server};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook_tokio::Signals;

/// jemalloc: measured against glibc malloc and mimalloc (docs/BENCHMARKS.md), it costs
/// the least memory per idle connection and the least CPU per routed message.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's start-up options (a C string it reads by this name). Freed pages go back to
/// the OS at once: by default jemalloc keeps them for 10 s, and under connection churn
/// that shows as RSS growing cycle after cycle (+68% over ten cycles of 10,000 connects;
/// flat with this, at no measurable CPU cost). `_RJEM_MALLOC_CONF` still overrides it.
#[export_name = "_rjem_malloc_conf"]
static JEMALLOC_OPTIONS: &[u8; 34] = b"dirty_decay_ms:0,muzzy_decay_ms:0\0";

fn main() -> ExitCode {
    let config = Config::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format(log_line)
        .init();
    raise_open_file_limit(config.max_connections);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            error!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config) -> io::Result<()> {
    let server = Server::bind(config)?;
    let mut signals = Signals::new([SIGTERM, SIGINT])?;
    let shutdown = async move {
        if let Some(signal) = signals.next().await {
            info!("received {}: draining", signal_name(signal));
        }
        // A second signal means "now": skip the rest of the drain.
        tokio::spawn(async move {
            if let Some(signal) = signals.next().await {
                warn!(
                    "received {} again: exiting without draining",
                    signal_name(signal)
                );
                std::process::exit(1);
            }
        });
    };
    server.run(shutdown).await
}

/// env_logger's default layout, `[TIME LEVEL TARGET] message`, with the message written
/// line-safe: whatever a client got into it, each record stays one line.
fn log_line(out: &mut env_logger::fmt::Formatter, record: &log::Record<'_>) -> io::Result<()> {
    let style = out.default_level_style(record.level());
    write!(
        out,
        "[{} {style}{:<5}{style:#} {}] ",
        out.timestamp(),
        record.level(),
        record.target()
    )?;
    write_line_safe(out, *record.args())?;
    writeln!(out)
}

fn signal_name(signal: i32) -> &'static str {
    match signal {
        SIGTERM => "SIGTERM",
        SIGINT => "SIGINT",
        _ => "signal",
    }
}

/// Each connection is a file descriptor; the default soft limit (often 1024) would cap
/// the relay far below what it can hold, so it is raised to the hard limit, and the
/// operator is told when that is below `--max-connections`.
fn raise_open_file_limit(max_connections: usize) {
    /// Descriptors the relay needs besides connections (listener, epoll, signals, logs).
    const RESERVED: u64 = 32;
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) if limit < max_connections as u64 + RESERVED => warn!(
            "open file limit {limit} allows about {} connections, fewer than \
             --max-connections {max_connections}: raise LimitNOFILE / ulimit -n",
            limit.saturating_sub(RESERVED)
        ),
        Ok(limit) => info!("open file limit: {limit}"),
        Err(e) => warn!("cannot raise the open file limit: {e}"),
    }
}
