//! `notify-relay-client`: send a notification to a UUID (the replacement for the
//! original `python client.py <recipient_uuid> "message"`), or listen for them.

use std::cell::Cell;
use std::fmt;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::error::ErrorKind;
use clap::{CommandFactory, Parser, Subcommand};
use notify_relay_client::{
    check_since, check_url, registration_token, Backoff, Client, ClientOptions, Connector, Error,
    Event, Payload, Presence, SendOptions, DEFAULT_URL,
};
use rustix::event::{PollFd, PollFlags};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::watch;
use tokio::time::{sleep_until, Instant};

/// Delivered (send); --count messages (listen) or lines (watch) printed, or without
/// --count, --timeout passed while listening or watching; or the reader of standard
/// output went away (`| head -1`).
const EXIT_OK: u8 = 0;
/// The relay rejected the frame, or another failure.
const EXIT_FAILED: u8 = 1;
/// Nobody is registered under the UUID: the message reached no one.
const EXIT_NOBODY: u8 = 3;
/// The relay could not be reached, or its TLS certificate is not trusted.
const EXIT_UNREACHABLE: u8 = 4;
/// A malformed command line, including a --url that is not a ws:// or wss:// URL, a
/// --since that is no start the relay knows, a `send --json` MESSAGE that is not JSON and
/// a --ca-cert file that cannot be used.
const EXIT_USAGE: u8 = 2;
/// --timeout passed before --count was reached, or before the relay could be reached.
const EXIT_TIMEOUT: u8 = 5;
/// Nobody is connected now; the relay kept the message for the next registration.
const EXIT_PENDING: u8 = 6;
/// Stopped by SIGINT (Ctrl-C) or SIGTERM, after closing the connection cleanly.
const EXIT_INTERRUPTED: u8 = 130;

const EXIT_CODES: &str = "\
Exit codes:
    0  delivered to at least one connection (send); --count messages received (listen)
       or --count lines printed (watch), or without --count, --timeout passed while
       listening or watching; or standard output was closed (e.g. `| head -1`)
    1  the relay rejected the message, or another failure (including a line of standard
       input that is not JSON with `send --json UUID -`)
    2  bad command line (including a --url that is not ws:// or wss://HOST:PORT/, a
       --since that is not earliest, latest or a cursor, a `send --json` MESSAGE that
       is not JSON, and a --ca-cert file that cannot be read or holds no certificate)
    3  nobody is registered under the UUID and the relay kept nothing: the message is lost
    4  the relay could not be reached, or (wss://) its certificate is not trusted
    5  --timeout passed before --count was reached, or while the relay could not be
       reached
    6  nobody is connected now: the relay keeps the message for the next registration
  130  stopped by SIGINT (Ctrl-C) or SIGTERM

Once connected, every exit closes the WebSocket with a close handshake.";

/// Send notifications through notify-relay, or listen for them.
#[derive(Debug, Parser)]
#[command(name = "notify-relay-client", version, after_help = EXIT_CODES)]
struct Cli {
    /// The relay's WebSocket URL (ws://HOST:PORT/, or wss://HOST:PORT/ for a relay that
    /// serves TLS).
    #[arg(long, global = true, env = "NOTIFY_RELAY_URL", default_value = DEFAULT_URL, value_parser = parse_url)]
    url: String,
    /// For wss://: a PEM file of CA certificates to trust besides the system's (the
    /// relay's private CA, or its self-signed certificate).
    #[arg(long, global = true, env = "NOTIFY_RELAY_CA_CERT", value_name = "PATH")]
    ca_cert: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Send MESSAGE to every connection registered under UUID.
    ///
    /// Waits for the relay to confirm how many connections received it. With MESSAGE
    /// `-`, sends each line of standard input as one message over a single connection
    /// (for scripts that stream progress).
    Send {
        /// The recipient key (the page's or worker's UUID).
        uuid: String,
        /// The message text, or `-` for one message per line of standard input.
        message: String,
        /// Send MESSAGE as a JSON value (object, array, number...) instead of a string.
        #[arg(long)]
        json: bool,
        /// For live connections only: never kept for a later registration.
        #[arg(long, conflicts_with = "collapse")]
        ephemeral: bool,
        /// Keep only the newest message of this NAME for replay (e.g. `progress`).
        #[arg(long, value_name = "NAME")]
        collapse: Option<String>,
        /// How long to wait for the relay's confirmation.
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
    /// Register as UUID and print each message on its own line.
    ///
    /// Reconnects with exponential backoff (with jitter) when the connection drops, e.g.
    /// across a relay restart, and resumes from the last message it printed: nothing
    /// is lost or printed twice while the relay retains it. A gap (history the relay no
    /// longer has) is reported on standard error.
    Listen {
        /// The key to register under.
        uuid: String,
        /// Where to start: `earliest` (what the relay retains for UUID), `latest` (only
        /// new messages), or a cursor printed by --cursors.
        #[arg(long, default_value = "earliest", value_parser = parse_since)]
        since: String,
        /// Print each message's cursor before it, separated by a tab.
        #[arg(long)]
        cursors: bool,
        /// Exit (0) after this many messages.
        #[arg(long)]
        count: Option<u64>,
        /// Listen this long, then exit: 0, or 5 if --count messages have not arrived (or
        /// the relay could not be reached).
        #[arg(long, value_parser = humantime::parse_duration)]
        timeout: Option<Duration>,
        /// Registration token (a JWT for UUID) for a relay started with --auth-secret; a
        /// refused token exits 1 without retrying.
        #[arg(long, env = "NOTIFY_RELAY_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
    /// Watch the presence of each KEY: print its state now, then one line per change,
    /// `KEY online N` or `KEY offline 0`.
    ///
    /// Reconnects with exponential backoff (with jitter) when the connection drops and
    /// watches again, printing a key's state only when it differs from the last line.
    Watch {
        /// The keys to watch.
        #[arg(required = true)]
        keys: Vec<String>,
        /// Print each state as the relay's JSON object instead:
        /// {"presence":KEY,"online":true,"connections":N}.
        #[arg(long)]
        json: bool,
        /// Exit (0) after this many lines.
        #[arg(long)]
        count: Option<u64>,
        /// Watch this long, then exit: 0, or 5 if --count lines have not been printed (or
        /// the relay could not be reached).
        #[arg(long, value_parser = humantime::parse_duration)]
        timeout: Option<Duration>,
        /// A token (a JWT for the key) for a relay started with --auth-secret: one for
        /// every KEY in order, or one for all; a refused token exits 1.
        #[arg(long, env = "NOTIFY_RELAY_TOKEN", hide_env_values = true)]
        token: Vec<String>,
    },
    /// Print a registration token for UUID (an HS256 JWT with sub and exp), signed with
    /// the relay's --auth-secret taken from NOTIFY_RELAY_AUTH_SECRET (never from the
    /// command line, where other users could read it).
    Token {
        /// The key the token lets its holder register under, listen to and ask about.
        uuid: String,
        /// How long the token is valid (e.g. 1h, 15m).
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: Duration,
    },
}

/// Where `token` reads the secret from.
const SECRET_VARIABLE: &str = "NOTIFY_RELAY_AUTH_SECRET";

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Token { uuid, ttl } = &cli.command {
        return ExitCode::from(print_token(uuid, *ttl));
    }
    // A MESSAGE that is not JSON is a bad command line: said before any connection.
    let single = match &cli.command {
        Command::Send { message, json, .. } if message != "-" => match payload(*json, message) {
            Ok(payload) => Some(payload),
            Err(e) => usage_error("send", &e),
        },
        _ => None,
    };
    let options = match &cli.ca_cert {
        Some(path) => ClientOptions::default().ca_cert(path),
        None => ClientOptions::default(),
    };
    // Loads the CAs once, before any connection: a bad --ca-cert fails now, not at the
    // first reconnect.
    let connector = match Connector::new(&cli.url, &options) {
        Ok(connector) => connector,
        Err(e) => return ExitCode::from(report(&e)),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("notify-relay-client: {e}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    let code = runtime.block_on(async {
        // Only listen and watch write to standard output.
        let prints = matches!(cli.command, Command::Listen { .. } | Command::Watch { .. });
        let mut interrupt = match Interrupt::new(prints) {
            Ok(interrupt) => interrupt,
            Err(e) => {
                eprintln!("notify-relay-client: cannot handle signals: {e}");
                return EXIT_FAILED;
            }
        };
        match cli.command {
            Command::Send {
                uuid,
                message: _,
                json,
                ephemeral,
                collapse,
                timeout,
            } => {
                let sending = Sending {
                    uuid,
                    json,
                    options: SendOptions {
                        ephemeral,
                        collapse,
                    },
                };
                send(&connector, &sending, single, timeout, &mut interrupt).await
            }
            Command::Listen {
                uuid,
                since,
                cursors,
                count,
                timeout,
                token,
            } => {
                let deadline = timeout.map(|t| Instant::now() + t);
                let session = Listening {
                    url: &cli.url,
                    connector: &connector,
                    uuid: &uuid,
                    count,
                    deadline,
                    cursors,
                    token,
                };
                listen(&session, since, &mut interrupt).await
            }
            Command::Watch {
                keys,
                json,
                count,
                timeout,
                token,
            } => {
                let session = Watching {
                    url: &cli.url,
                    connector: &connector,
                    keys: &keys,
                    json,
                    count,
                    deadline: timeout.map(|t| Instant::now() + t),
                    tokens: &token,
                };
                watch(&session, &mut interrupt).await
            }
            Command::Token { uuid, ttl } => print_token(&uuid, ttl),
        }
    });
    ExitCode::from(code)
}

/// `token`: prints a registration token for `uuid`, or says why it cannot.
fn print_token(uuid: &str, ttl: Duration) -> u8 {
    match std::env::var(SECRET_VARIABLE) {
        Ok(secret) if !secret.is_empty() => {
            let token = registration_token(secret.as_bytes(), uuid, ttl);
            match print_line(format_args!("{token}")) {
                Ok(()) => EXIT_OK,
                Err(e) => output_failed(&e),
            }
        }
        _ => {
            eprintln!("notify-relay-client: set {SECRET_VARIABLE} to the relay's --auth-secret");
            EXIT_USAGE
        }
    }
}

/// `--url`: only a ws:// or wss:// URL is a relay address (exit 2 otherwise, like any
/// bad flag).
fn parse_url(url: &str) -> Result<String, String> {
    check_url(url)
        .map(|()| url.to_owned())
        .map_err(|e| e.to_string())
}

/// `--since`: a typo would be taken by the relay as a cursor it cannot read (a gap and
/// a replay of everything), so it is refused like any bad flag (exit 2).
fn parse_since(since: &str) -> Result<String, String> {
    check_since(since).map(|()| since.to_owned())
}

/// Exits as clap does for a bad value (the message, the usage, status 2), for a check
/// that needs more than one argument.
fn usage_error(subcommand: &str, message: &str) -> ! {
    let mut cli = Cli::command();
    cli.build();
    let mut command = cli.find_subcommand(subcommand).cloned().unwrap_or(cli);
    command.error(ErrorKind::ValueValidation, message).exit()
}

/// What `send` sends for `text`: the JSON value it holds with --json, else the text.
fn payload(json: bool, text: &str) -> Result<Payload, String> {
    if !json {
        return Ok(Payload::Text(text.to_owned()));
    }
    Payload::json(text)
        .map_err(|e| format!("MESSAGE is not JSON, which --json asks for ({e}): {text}"))
}

/// Prints one line on standard output. Unlike println!, which panics, it returns the
/// error: a reader that went away (`listen | head -1`) ends the command quietly.
fn print_line(line: fmt::Arguments<'_>) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").and_then(|()| out.flush())
}

/// The exit code when standard output cannot be written: 0 when its reader is gone, the
/// way `| head` expects (it has what it wanted); 1 for a real failure (a full disk).
fn output_failed(error: &std::io::Error) -> u8 {
    if error.kind() == std::io::ErrorKind::BrokenPipe {
        return EXIT_OK;
    }
    eprintln!("notify-relay-client: writing standard output: {error}");
    EXIT_FAILED
}

/// What stops a command from outside: SIGINT and SIGTERM, caught so that the program
/// closes its connection before exiting, and the reader of standard output going away.
struct Interrupt {
    int: Signal,
    term: Signal,
    /// Turns true when standard output's reader is gone (see [`watch_output`]).
    output_gone: Option<watch::Receiver<bool>>,
}

impl Interrupt {
    /// Catches the signals, and with `prints` watches standard output.
    fn new(prints: bool) -> std::io::Result<Self> {
        Ok(Self {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
            output_gone: prints.then(watch_output),
        })
    }

    /// Waits for the next signal or the end of the output; cancel-safe, so it can sit in
    /// every `select!`.
    async fn recv(&mut self) -> Stop {
        let output_gone = async {
            let gone = match &mut self.output_gone {
                Some(gone) => gone.wait_for(|gone| *gone).await.is_ok(),
                None => false,
            };
            // Not watched, or not watchable: never.
            if !gone {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            _ = self.int.recv() => Stop::Interrupted("SIGINT"),
            _ = self.term.recv() => Stop::Interrupted("SIGTERM"),
            () = output_gone => Stop::Output(std::io::ErrorKind::BrokenPipe.into()),
        }
    }
}

/// Watches standard output for its reader going away (`listen | head -1`), so the command
/// ends then rather than at its next line, which may never come: poll(2) reports an error
/// on a pipe whose read end closed (a hang-up on a socket or terminal). A file or
/// /dev/null reports neither, and the watch never fires. poll blocks, hence the thread; it
/// is left to end with the process.
fn watch_output() -> watch::Receiver<bool> {
    let (gone, receiver) = watch::channel(false);
    std::thread::spawn(move || {
        let stdout = std::io::stdout();
        let mut fds = [PollFd::new(&stdout, PollFlags::empty())];
        loop {
            match rustix::event::poll(&mut fds, None) {
                Err(rustix::io::Errno::INTR) => continue,
                Ok(_) if fds[0].revents().intersects(PollFlags::ERR | PollFlags::HUP) => {
                    let _ = gone.send(true);
                    return;
                }
                // No standard output at all (POLLNVAL), or poll failed: not watched.
                _ => return,
            }
        }
    });
    receiver
}

/// What a `send` run sends to.
struct Sending {
    uuid: String,
    /// MESSAGE is a JSON value.
    json: bool,
    /// Ephemeral or collapsible.
    options: SendOptions,
}

/// Sends `single`, or with `None` each line of standard input (MESSAGE `-`).
async fn send(
    connector: &Connector,
    sending: &Sending,
    single: Option<Payload>,
    timeout: Duration,
    interrupt: &mut Interrupt,
) -> u8 {
    let connect = tokio::time::timeout(timeout, connector.connect());
    let mut client = tokio::select! {
        connected = connect => match connected {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => return report(&e),
            Err(_) => return report(&Error::Timeout),
        },
        stop = interrupt.recv() => return stop.code(&|| EXIT_TIMEOUT),
    };
    client.set_reply_timeout(timeout);
    let code = tokio::select! {
        code = send_all(&mut client, sending, single) => code,
        stop = interrupt.recv() => stop.code(&|| EXIT_TIMEOUT),
    };
    // Every path past the connect ends with a close handshake.
    let _ = client.close().await;
    code
}

/// Sends `single`, or each line of standard input without it; the exit code.
async fn send_all(client: &mut Client, sending: &Sending, single: Option<Payload>) -> u8 {
    if let Some(payload) = single {
        return send_one(client, sending, payload)
            .await
            .unwrap_or_else(|e| report(&e));
    }
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut worst = EXIT_OK;
    loop {
        let line = match lines.next_line().await {
            Ok(Some(line)) => line,
            Ok(None) => return worst,
            Err(e) => {
                eprintln!("notify-relay-client: reading standard input: {e}");
                return EXIT_FAILED;
            }
        };
        // A line that is not JSON (--json) is skipped; the others are still sent.
        let payload = match payload(sending.json, &line) {
            Ok(payload) => payload,
            Err(e) => {
                eprintln!("notify-relay-client: {e}");
                worst = worst.max(EXIT_FAILED);
                continue;
            }
        };
        match send_one(client, sending, payload).await {
            Ok(code) => worst = worst.max(code),
            Err(e) => return report(&e),
        }
    }
}

/// Sends one message; the exit code it deserves, or an error that ends the run.
async fn send_one(client: &mut Client, sending: &Sending, payload: Payload) -> Result<u8, Error> {
    let uuid = &sending.uuid;
    let sent = client.send_with(uuid, payload, &sending.options).await?;
    match sent.delivered {
        0 if sent.buffered => {
            eprintln!("nobody is connected to {uuid} now: kept for the next registration");
            Ok(EXIT_PENDING)
        }
        0 => {
            eprintln!("nobody is registered under {uuid}: the message reached no one");
            Ok(EXIT_NOBODY)
        }
        n => {
            eprintln!("delivered to {n} connection(s)");
            Ok(EXIT_OK)
        }
    }
}

/// How a listening session ended, other than by a connection error.
enum Stop {
    /// --count messages arrived, or without --count, the deadline passed while at work.
    Done,
    /// The --timeout deadline passed.
    TimedOut,
    /// SIGINT or SIGTERM.
    Interrupted(&'static str),
    /// Standard output could not be written (its reader went away).
    Output(std::io::Error),
}

impl Stop {
    /// The exit code of a command that stopped so; `timed_out` says how far it got.
    fn code(self, timed_out: &dyn Fn() -> u8) -> u8 {
        match self {
            Stop::Done => EXIT_OK,
            Stop::TimedOut => timed_out(),
            Stop::Interrupted(signal) => interrupted(signal),
            Stop::Output(e) => output_failed(&e),
        }
    }

    /// What the --timeout deadline means: without --count, a command that was at
    /// `work` (connected and registered) ran for the time it was given, which is
    /// success; otherwise it timed out.
    fn at_deadline(count: Option<u64>, work: &Cell<bool>) -> Stop {
        if count.is_none() && work.get() {
            Stop::Done
        } else {
            Stop::TimedOut
        }
    }
}

/// What a `listen` run was asked for.
struct Listening<'a> {
    url: &'a str,
    /// Connects to `url`.
    connector: &'a Connector,
    uuid: &'a str,
    /// Exit after this many messages.
    count: Option<u64>,
    /// Exit (timed out) at this instant.
    deadline: Option<Instant>,
    /// Print each message's cursor before it.
    cursors: bool,
    /// The registration token, for a relay with access control.
    token: Option<String>,
}

/// Where a `listen` run stands: what it printed and where to resume.
struct Progress {
    received: u64,
    /// `earliest`, `latest` or the cursor of the last message printed.
    since: String,
}

async fn listen(session: &Listening<'_>, since: String, interrupt: &mut Interrupt) -> u8 {
    let mut progress = Progress { received: 0, since };
    let mut backoff = Backoff::default();
    loop {
        let stopped = listen_once(session, &mut progress, &mut backoff, interrupt).await;
        let timed_out = || {
            eprintln!("timed out after {} message(s)", progress.received);
            EXIT_TIMEOUT
        };
        let retry = Retry {
            deadline: session.deadline,
            timed_out: &timed_out,
        };
        if let Some(code) = retry.after(stopped, &mut backoff, interrupt).await {
            return code;
        }
    }
}

/// What `listen` and `watch` do between connections: end with an exit code, or wait out
/// the backoff and connect again.
struct Retry<'a> {
    /// Give up (timed out) at this instant.
    deadline: Option<Instant>,
    /// Says how far it got and gives the exit code of a timeout.
    timed_out: &'a dyn Fn() -> u8,
}

impl Retry<'_> {
    /// The exit code when `stopped` ends the command, or when the deadline, a signal or
    /// the end of the output comes during the backoff; `None` to connect again.
    async fn after(
        &self,
        stopped: Result<Stop, Error>,
        backoff: &mut Backoff,
        interrupt: &mut Interrupt,
    ) -> Option<u8> {
        let error = match stopped {
            Ok(stop) => return Some(stop.code(self.timed_out)),
            // Retrying cannot fix these: they need a person.
            Err(
                e @ (Error::Url(_) | Error::Tls(_) | Error::Certificate(_) | Error::Rejected(_)),
            ) => return Some(report(&e)),
            Err(e) => e,
        };
        let delay = backoff.next_delay();
        eprintln!("{error}; reconnecting in {}", human(delay));
        tokio::select! {
            () = tokio::time::sleep(delay) => None,
            () = until(self.deadline) => Some((self.timed_out)()),
            stop = interrupt.recv() => Some(stop.code(self.timed_out)),
        }
    }
}

/// One connection's worth of listening. Once connected, it always ends with a close
/// handshake, whatever ends it.
async fn listen_once(
    session: &Listening<'_>,
    progress: &mut Progress,
    backoff: &mut Backoff,
    interrupt: &mut Interrupt,
) -> Result<Stop, Error> {
    let (url, uuid, deadline) = (session.url, session.uuid, session.deadline);
    let mut client = tokio::select! {
        connected = session.connector.connect() => connected?,
        () = until(deadline) => return Ok(Stop::TimedOut),
        stop = interrupt.recv() => return Ok(stop),
    };
    client.set_token(session.token.clone());
    let listening = Cell::new(false);
    let reading = async {
        client.resume(uuid, &progress.since).await?;
        backoff.reset();
        listening.set(true);
        eprintln!("listening as {uuid} on {url}");
        while session.count.is_none_or(|n| progress.received < n) {
            match client.next_event().await? {
                Event::Message { text, cursor } => {
                    let printed = match (&cursor, session.cursors) {
                        (Some(cursor), true) => print_line(format_args!("{cursor}\t{text}")),
                        (None, true) => print_line(format_args!("-\t{text}")),
                        _ => print_line(format_args!("{text}")),
                    };
                    if let Err(e) = printed {
                        return Ok(Stop::Output(e));
                    }
                    progress.received += 1;
                    if let Some(cursor) = cursor {
                        progress.since = cursor;
                    }
                }
                Event::Gap { cursor } => {
                    eprintln!("gap: the relay no longer has some messages before {cursor}");
                    progress.since = cursor;
                }
            }
        }
        Ok(Stop::Done)
    };
    let stopped = tokio::select! {
        stopped = reading => stopped,
        () = until(deadline) => Ok(Stop::at_deadline(session.count, &listening)),
        stop = interrupt.recv() => Ok(stop),
    };
    let _ = client.close().await;
    stopped
}

/// What a `watch` run was asked for.
struct Watching<'a> {
    url: &'a str,
    connector: &'a Connector,
    keys: &'a [String],
    /// Print the relay's JSON objects.
    json: bool,
    /// Exit after this many lines.
    count: Option<u64>,
    /// Exit (timed out) at this instant.
    deadline: Option<Instant>,
    /// One token per key in order, or one for all.
    tokens: &'a [String],
}

impl Watching<'_> {
    fn token(&self, index: usize) -> Option<&str> {
        match self.tokens {
            [] => None,
            [one] => Some(one),
            many => many.get(index).map(String::as_str),
        }
    }
}

/// What a `watch` run printed: how many lines, and each key's last state.
#[derive(Default)]
struct Printed {
    lines: u64,
    last: std::collections::HashMap<String, Presence>,
}

impl Printed {
    /// Prints `state` unless it is the key's last line; how the command stops now, if it
    /// does (--count reached, or standard output gone).
    fn show(&mut self, session: &Watching<'_>, state: Presence) -> Option<Stop> {
        if self.last.get(&state.key) != Some(&state) {
            let printed = if session.json {
                match serde_json::to_string(&state) {
                    Ok(line) => print_line(format_args!("{line}")),
                    Err(e) => {
                        eprintln!("notify-relay-client: {e}");
                        Ok(())
                    }
                }
            } else {
                let word = if state.online { "online" } else { "offline" };
                print_line(format_args!("{} {word} {}", state.key, state.connections))
            };
            if let Err(e) = printed {
                return Some(Stop::Output(e));
            }
            self.lines += 1;
            self.last.insert(state.key.clone(), state);
        }
        session
            .count
            .is_some_and(|n| self.lines >= n)
            .then_some(Stop::Done)
    }
}

async fn watch(session: &Watching<'_>, interrupt: &mut Interrupt) -> u8 {
    let mut printed = Printed::default();
    let mut backoff = Backoff::default();
    loop {
        let stopped = watch_once(session, &mut printed, &mut backoff, interrupt).await;
        let timed_out = || {
            eprintln!("timed out after {} line(s)", printed.lines);
            EXIT_TIMEOUT
        };
        let retry = Retry {
            deadline: session.deadline,
            timed_out: &timed_out,
        };
        if let Some(code) = retry.after(stopped, &mut backoff, interrupt).await {
            return code;
        }
    }
}

/// One connection's worth of watching; closes with a handshake whatever ends it.
async fn watch_once(
    session: &Watching<'_>,
    printed: &mut Printed,
    backoff: &mut Backoff,
    interrupt: &mut Interrupt,
) -> Result<Stop, Error> {
    let deadline = session.deadline;
    let mut client = tokio::select! {
        connected = session.connector.connect() => connected?,
        () = until(deadline) => return Ok(Stop::TimedOut),
        stop = interrupt.recv() => return Ok(stop),
    };
    let watching = Cell::new(false);
    let reading = async {
        let mut stop = None;
        for (index, key) in session.keys.iter().enumerate() {
            let state = client.watch_with(key, session.token(index)).await?;
            stop = stop.or(printed.show(session, state));
        }
        backoff.reset();
        watching.set(true);
        eprintln!("watching {} key(s) on {}", session.keys.len(), session.url);
        loop {
            if let Some(stop) = stop {
                return Ok(stop);
            }
            let state = client.next_presence().await?;
            stop = printed.show(session, state);
        }
    };
    let stopped = tokio::select! {
        stopped = reading => stopped,
        () = until(deadline) => Ok(Stop::at_deadline(session.count, &watching)),
        stop = interrupt.recv() => Ok(stop),
    };
    let _ = client.close().await;
    stopped
}

/// Completes at `deadline`, or never without one.
async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// A delay as people write it: `1s 250ms`, not `1.250372921s`.
fn human(delay: Duration) -> humantime::FormattedDuration {
    humantime::format_duration(Duration::from_millis(delay.as_millis() as u64))
}

fn interrupted(signal: &str) -> u8 {
    eprintln!("notify-relay-client: stopped by {signal}");
    EXIT_INTERRUPTED
}

fn report(error: &Error) -> u8 {
    eprintln!("notify-relay-client: {error}");
    match error {
        Error::Url(_) | Error::Tls(_) => EXIT_USAGE,
        Error::Connect(_) | Error::Certificate(_) => EXIT_UNREACHABLE,
        Error::Timeout => EXIT_TIMEOUT,
        _ => EXIT_FAILED,
    }
}
