//! `notify-relay-client`: send a notification to a UUID (the replacement for the
//! original `python client.py <recipient_uuid> "message"`), or listen for them.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use notify_relay_client::{Backoff, Client, Error, Payload, DEFAULT_URL};
use tokio::io::{AsyncBufReadExt, BufReader};

/// Delivered (send), or --count messages received (listen).
const EXIT_OK: u8 = 0;
/// The relay rejected the frame, or another failure.
const EXIT_FAILED: u8 = 1;
/// Nobody is registered under the UUID: the message reached no one.
const EXIT_NOBODY: u8 = 3;
/// The relay could not be reached.
const EXIT_UNREACHABLE: u8 = 4;
/// --timeout passed first.
const EXIT_TIMEOUT: u8 = 5;

const EXIT_CODES: &str = "\
Exit codes:
  0  delivered to at least one connection (send), or --count messages received (listen)
  1  the relay rejected the message, or another failure
  2  bad command line
  3  nobody is registered under the UUID: the message reached no one
  4  the relay could not be reached
  5  --timeout passed first";

/// Send notifications through notify-relay, or listen for them.
#[derive(Debug, Parser)]
#[command(name = "notify-relay-client", version, after_help = EXIT_CODES)]
struct Cli {
    /// The relay's WebSocket URL.
    #[arg(long, global = true, env = "NOTIFY_RELAY_URL", default_value = DEFAULT_URL)]
    url: String,
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
        /// How long to wait for the relay's confirmation.
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
    /// Register as UUID and print each message on its own line.
    ///
    /// Reconnects with exponential backoff (with jitter) and registers again when the
    /// connection drops, e.g. across a relay restart.
    Listen {
        /// The key to register under.
        uuid: String,
        /// Exit (0) after this many messages.
        #[arg(long)]
        count: Option<u64>,
        /// Exit (5) if this much time passes before --count messages arrived.
        #[arg(long, value_parser = humantime::parse_duration)]
        timeout: Option<Duration>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
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
        match cli.command {
            Command::Send {
                uuid,
                message,
                json,
                timeout,
            } => send(&cli.url, &uuid, &message, json, timeout).await,
            Command::Listen {
                uuid,
                count,
                timeout,
            } => listen(&cli.url, &uuid, count, timeout).await,
        }
    });
    ExitCode::from(code)
}

async fn send(url: &str, uuid: &str, message: &str, json: bool, timeout: Duration) -> u8 {
    let mut client = match tokio::time::timeout(timeout, Client::connect(url)).await {
        Ok(Ok(client)) => client,
        Ok(Err(e)) => return report(&e),
        Err(_) => return report(&Error::Timeout),
    };
    client.set_reply_timeout(timeout);
    if message != "-" {
        return match send_one(&mut client, uuid, message, json).await {
            Ok(code) => code,
            Err(e) => report(&e),
        };
    }
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut worst = EXIT_OK;
    loop {
        let line = match lines.next_line().await {
            Ok(Some(line)) => line,
            Ok(None) => break,
            Err(e) => {
                eprintln!("notify-relay-client: reading standard input: {e}");
                return EXIT_FAILED;
            }
        };
        match send_one(&mut client, uuid, &line, json).await {
            Ok(code) => worst = worst.max(code),
            Err(e) => return report(&e),
        }
    }
    let _ = client.close().await;
    worst
}

/// Sends one message; the exit code it deserves, or an error that ends the run.
async fn send_one(client: &mut Client, uuid: &str, message: &str, json: bool) -> Result<u8, Error> {
    let payload = if json {
        match Payload::json(message) {
            Ok(payload) => payload,
            Err(e) => {
                eprintln!("notify-relay-client: not JSON ({e}): {message}");
                return Ok(EXIT_FAILED);
            }
        }
    } else {
        Payload::Text(message.to_owned())
    };
    match client.send(uuid, payload).await? {
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

async fn listen(url: &str, uuid: &str, count: Option<u64>, timeout: Option<Duration>) -> u8 {
    let mut received = 0u64;
    let receive = receive_forever(url, uuid, count, &mut received);
    match timeout {
        Some(limit) => match tokio::time::timeout(limit, receive).await {
            Ok(code) => code,
            Err(_) => {
                eprintln!("timed out after {received} message(s)");
                EXIT_TIMEOUT
            }
        },
        None => receive.await,
    }
}

async fn receive_forever(url: &str, uuid: &str, count: Option<u64>, received: &mut u64) -> u8 {
    let mut backoff = Backoff::default();
    loop {
        match listen_once(url, uuid, count, received, &mut backoff).await {
            Ok(()) => return EXIT_OK,
            Err(e) => {
                let delay = backoff.next_delay();
                eprintln!("{e}; reconnecting in {delay:?}");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// One connection's worth of listening: Ok once --count messages arrived.
async fn listen_once(
    url: &str,
    uuid: &str,
    count: Option<u64>,
    received: &mut u64,
    backoff: &mut Backoff,
) -> Result<(), Error> {
    let mut client = Client::connect(url).await?;
    client.register(uuid).await?;
    backoff.reset();
    eprintln!("listening as {uuid} on {url}");
    loop {
        if count.is_some_and(|n| *received >= n) {
            let _ = client.close().await;
            return Ok(());
        }
        let message = client.next_message().await?;
        println!("{message}");
        *received += 1;
    }
}

fn report(error: &Error) -> u8 {
    eprintln!("notify-relay-client: {error}");
    match error {
        Error::Connect(_) => EXIT_UNREACHABLE,
        Error::Timeout => EXIT_TIMEOUT,
        _ => EXIT_FAILED,
    }
}
