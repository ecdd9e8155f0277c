//! The `notify-relay` daemon: parses the configuration, sets up logging and signals,
//! and runs the server until SIGTERM or SIGINT. SIGHUP reloads the TLS certificate.

use std::io::{self, Write};
use std::process::ExitCode;
use std::sync::Arc;

use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches};
use futures_util::StreamExt;
use log::{error, info, warn};
use notify_relay::observability::log_text::write_line_safe;
use notify_relay::state::RelayState;
use notify_relay::{Config, Server};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook_tokio::Signals;

/// jemalloc: measured against glibc malloc and mimalloc (docs/BENCHMARKS.md), it costs
/// the least memory per idle connection and the least CPU per routed message.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's start-up options (a C string it reads by this name). Freed pages go back to
/// the OS within 100 ms, from jemalloc's background thread: by default jemalloc keeps
/// them for 10 s, and under connection churn that shows as RSS growing cycle after cycle
/// (+68% over ten cycles of 10,000 connects; flat with this). Not at once (0 ms): then
/// every emptied page is an `madvise` on the freeing thread and a page fault when it is
/// used again, which in a fan-out was one `madvise` per 45 deliveries and a quarter of
/// the CPU per delivery. Without the background thread, pages freed just before the relay
/// goes idle would stay until the next allocation. `_RJEM_MALLOC_CONF` still overrides it.
#[export_name = "_rjem_malloc_conf"]
static JEMALLOC_OPTIONS: &[u8; 59] =
    b"background_thread:true,dirty_decay_ms:100,muzzy_decay_ms:0\0";

fn main() -> ExitCode {
    let matches = Config::command().get_matches();
    let mut config = match Config::from_arg_matches(&matches) {
        Ok(config) => config,
        Err(e) => e.exit(),
    };
    if let Err(why) = config.auth.load_files() {
        return cannot_start(why);
    }
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format(log_line)
        .init();
    let chosen = matches.value_source("max_connections") != Some(ValueSource::DefaultValue);
    raise_open_file_limit(config.max_connections, chosen);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return cannot_start(format!("cannot start the runtime: {e}")),
    };
    let server = match runtime.block_on(async { Server::bind(config) }) {
        Ok(server) => server,
        Err(e) => return cannot_start(e),
    };
    match runtime.block_on(serve(server)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// A start-up failure that is not a usage error (a file that cannot be read, a port in
/// use), said the way clap says a usage error, so every refusal to start reads alike:
/// one `error:` line on stderr, before the relay logs anything about serving.
fn cannot_start(why: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {why}");
    ExitCode::FAILURE
}

async fn serve(server: Server) -> io::Result<()> {
    reload_on_hangup(server.state())?;
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

/// On each SIGHUP, reloads the TLS certificate and key from their files (certbot renews
/// them in place); open connections are kept. Without TLS there is nothing to reload:
/// the relay says so rather than exit, SIGHUP's default.
fn reload_on_hangup(state: Arc<RelayState>) -> io::Result<()> {
    let mut hangups = Signals::new([SIGHUP])?;
    tokio::spawn(async move {
        while hangups.next().await.is_some() {
            if state.tls.is_none() {
                info!("received SIGHUP: nothing to reload (TLS is off)");
                continue;
            }
            info!("received SIGHUP: reloading the TLS certificate");
            let state = Arc::clone(&state);
            // Reading files blocks: off the async workers.
            let reload = tokio::task::spawn_blocking(move || {
                if let Some(tls) = &state.tls {
                    tls.reload_and_report(&state.metrics);
                }
            });
            if let Err(e) = reload.await {
                error!("TLS reload did not finish: {e}");
            }
        }
    });
    Ok(())
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
/// the relay far below what it can hold, so it is raised to the hard limit.
///
/// When even the hard limit leaves room for fewer than `--max-connections`, accepts
/// start failing before the relay answers 503. That is a warning when the operator chose
/// `--max-connections` (the machine cannot give what was asked for); with the default,
/// a ceiling nobody asked for, it is information, so a plain start stays quiet. Either
/// way the line says what to raise.
fn raise_open_file_limit(max_connections: usize, chosen: bool) {
    /// Descriptors the relay needs besides connections (listener, epoll, signals, logs).
    const RESERVED: u64 = 32;
    let limit = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        Err(e) => {
            warn!("cannot raise the open file limit: {e}");
            return;
        }
    };
    let needed = max_connections as u64 + RESERVED;
    if limit >= needed {
        info!("open file limit {limit}: room for --max-connections {max_connections}");
        return;
    }
    let fit = limit.saturating_sub(RESERVED);
    let kernel_cap = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|text| text.trim().parse::<u64>().ok());
    let raise = match kernel_cap {
        Some(cap) if limit >= cap => format!("sysctl fs.nr_open={needed}, then LimitNOFILE"),
        _ => format!("LimitNOFILE={needed}, minfds or ulimit -n"),
    };
    if chosen {
        warn!(
            "open file limit {limit} fits about {fit} of --max-connections {max_connections}; \
             past that accepts fail (raise: {raise})"
        );
    } else {
        info!("open file limit {limit}: about {fit} connections (raise: {raise})");
    }
}
