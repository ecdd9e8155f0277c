//! A live-server fuzzer: seeded, bounded, loopback only. Raw TCP clients throw malformed,
//! fragmented, oversize, invalid-UTF-8, unmasked, reserved-opcode and control-frame-abuse
//! frames at a running relay, while a canary pair keeps exchanging messages. The relay
//! must not lose a canary message, must end every fuzzed connection (no stuck task: the
//! connection gauge returns to the canaries alone), must give back the memory the attack
//! took (resident memory back to its baseline), and must keep serving.
//!
//! `FUZZ_SEED` and `FUZZ_CONNECTIONS` change the run (the seed is printed, so a failure
//! can be replayed); CI runs the short default.

mod common;

use std::time::Duration;

use common::{http_request, metric, read_response, read_to_end, within, Client, RelayProcess};
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Fuzzed connections in the default (CI) run.
const DEFAULT_CONNECTIONS: u64 = 150;
/// The default seed.
const DEFAULT_SEED: u64 = 0x5eed_1234_abcd_0001;
/// A canary message after this many fuzzed connections.
const CANARY_EVERY: u64 = 5;
/// The canaries' key: far (many edits) from every key the fuzzer's templates name, so a
/// mutated frame cannot address it.
const CANARY_KEY: &str = "canary-3f2a6c1e-9b7d";
/// Fuzzed connections before the memory baseline is taken.
const WARM_UP: u64 = 20;
/// How far above its baseline the relay's resident memory may end (allocator caches).
const MEMORY_SLACK: u64 = 4 << 20;
/// The relay's message size limit in this test, so oversize frames are cheap.
const MAX_MESSAGE: usize = 4096;

/// xorshift64*: a small deterministic generator, enough to pick cases from a seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// One frame as a client sends it: FIN/RSV/opcode byte, mask bit and length, key, payload.
fn frame(
    fin: bool,
    rsv: u8,
    opcode: u8,
    masked: bool,
    payload: &[u8],
    claimed: Option<u64>,
) -> Vec<u8> {
    let mut out = vec![(u8::from(fin) << 7) | ((rsv & 7) << 4) | (opcode & 0x0f)];
    let len = claimed.unwrap_or(payload.len() as u64);
    let mask_bit = if masked { 0x80 } else { 0 };
    if len < 126 {
        out.push(mask_bit | len as u8);
    } else if len <= u64::from(u16::MAX) {
        out.push(mask_bit | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(mask_bit | 127);
        out.extend_from_slice(&len.to_be_bytes());
    }
    let key = [0x37, 0xfa, 0x21, 0x3d];
    if masked {
        out.extend_from_slice(&key);
    }
    out.extend(
        payload
            .iter()
            .enumerate()
            .map(|(i, b)| if masked { b ^ key[i % 4] } else { *b }),
    );
    out
}

/// Text that looks like the protocol, broken in a random way.
fn almost_json(rng: &mut Rng) -> Vec<u8> {
    let templates = [
        r#"{"recipient_uuid":"fuzz","message":"connected"}"#,
        r#"{"recipient_uuid":"fuzz","message":{"a":[1,2,{"b":null}]},"id":7}"#,
        r#"{"presence":"fuzz","id":"p","token":"x.y.z"}"#,
        r#"{"recipient_uuid":"fuzz","message":"connected","since":"earliest","token":1}"#,
        r#"{"id":[],"recipient_uuid":"\ud800","message":"\udfff"}"#,
        r#"{"recipient_uuid":"k\n\u001b[2J","message":"x","collapse":"c","ephemeral":true}"#,
    ];
    let mut text = templates[rng.below(templates.len() as u64) as usize]
        .as_bytes()
        .to_vec();
    for _ in 0..rng.below(4) {
        let at = rng.below(text.len() as u64) as usize;
        match rng.below(3) {
            0 => text[at] = rng.next() as u8,
            1 => text.truncate(at),
            _ => text.insert(at, b"{}[]\",:\\"[rng.below(8) as usize]),
        }
        if text.is_empty() {
            break;
        }
    }
    text
}

/// The frames of one fuzzed connection.
fn attack(rng: &mut Rng) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..=rng.below(4) {
        let kind = rng.below(10);
        let bytes = match kind {
            0 => frame(true, 0, 1, true, &almost_json(rng), None),
            1 => {
                let n = rng.below(64) as usize;
                frame(true, 0, 1, true, &rng.bytes(n), None)
            }
            2 => {
                // Fragmented text, maybe with a Ping between, maybe never finished.
                let mut parts = frame(false, 0, 1, true, b"{\"recipient_uuid\":\"fu", None);
                if rng.below(2) == 0 {
                    parts.extend(frame(true, 0, 9, true, b"between", None));
                }
                let fin = rng.below(3) != 0;
                parts.extend(frame(fin, 0, 0, true, b"zz\",\"message\":\"x\"}", None));
                parts
            }
            3 => {
                // Oversize: a header claiming more than the limit, part of the payload.
                let claimed = MAX_MESSAGE as u64 + 1 + rng.below(1 << 20);
                let n = rng.below(256) as usize;
                frame(true, 0, 2, true, &rng.bytes(n), Some(claimed))
            }
            4 => {
                // A Ping over the 125-byte limit of control frames.
                let n = 126 + rng.below(64) as usize;
                frame(true, 0, 9, true, &rng.bytes(n), None)
            }
            5 => frame(false, 0, 9, true, b"fragmented ping", None),
            6 => {
                let payload = match rng.below(3) {
                    0 => vec![0x03],
                    1 => 999u16.to_be_bytes().to_vec(),
                    _ => [&1000u16.to_be_bytes()[..], &[0xff, 0xfe]].concat(),
                };
                frame(true, 0, 8, true, &payload, None)
            }
            7 => frame(true, 1 + rng.below(7) as u8, 1, true, b"{}", None),
            8 => frame(true, 0, 3 + rng.below(5) as u8, true, b"reserved", None),
            _ => frame(true, 0, 1, false, b"{\"unmasked\":true}", None),
        };
        out.extend(bytes);
    }
    out
}

/// One fuzzed connection: handshake, the attack, half-close, read until the relay ends it.
async fn fuzz_one(relay: &RelayProcess, rng: &mut Rng) {
    let mut tcp = within("connect", TcpStream::connect(relay.addr))
        .await
        .expect("connect");
    let handshake = "GET / HTTP/1.1\r\nHost: fuzz\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    tcp.write_all(handshake.as_bytes())
        .await
        .expect("handshake");
    assert_eq!(read_response(&mut tcp, true).await.status, 101);
    let bytes = attack(rng);
    // The relay may close in the middle of a write; that is an outcome, not a failure.
    if tcp.write_all(&bytes).await.is_ok() {
        let _ = tcp.shutdown().await;
    }
    read_to_end(&mut tcp).await;
}

#[tokio::test]
async fn fuzzed_connections_never_cost_the_canary_a_message() {
    let seed = std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_SEED);
    let connections = std::env::var("FUZZ_CONNECTIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_CONNECTIONS);
    println!("fuzz seed {seed}, {connections} connections");
    let relay = RelayProcess::spawn(&[
        "--max-message-size",
        &MAX_MESSAGE.to_string(),
        "--message-timeout",
        "1s",
    ]);
    let mut receiver = Client::connect(&relay.url()).await;
    receiver.register(CANARY_KEY).await;
    let mut sender = Client::connect(&relay.url()).await;
    let mut rng = Rng(seed.max(1));
    // A warm-up, so the baseline includes what the allocator keeps for any connection.
    for _ in 0..WARM_UP {
        fuzz_one(&relay, &mut rng).await;
    }
    let open_connections = || async {
        let (_, _, metrics) = http_request(relay.addr, "GET", "/metrics").await;
        metric(&metrics, "notify_relay_connections")
    };
    wait_for_connections(&open_connections).await;
    let baseline = relay.rss_bytes();
    let mut sent = 0u64;
    for n in 1..=connections {
        fuzz_one(&relay, &mut rng).await;
        if n % CANARY_EVERY == 0 {
            sent += 1;
            let text = format!("canary {sent}");
            assert_eq!(
                sender.deliver(CANARY_KEY, json!(text)).await,
                1,
                "after {n}"
            );
            assert_eq!(receiver.recv_text().await, text, "after connection {n}");
        }
    }
    assert!(sent > 0);
    // Every fuzzed connection has ended (no stuck task): only the canaries are left, and
    // the memory they held is back.
    wait_for_connections(&open_connections).await;
    let after = relay.rss_bytes();
    println!(
        "relay RSS: {} KiB before, {} KiB after {connections} fuzzed connections",
        baseline / 1024,
        after / 1024
    );
    assert!(
        after <= baseline + MEMORY_SLACK,
        "memory did not return to its baseline: {baseline} -> {after} bytes"
    );
    receiver.assert_alive().await;
    sender.assert_alive().await;
}

/// Waits until only the two canary connections are open.
async fn wait_for_connections<F, Fut>(open_connections: &F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = f64>,
{
    within("fuzzed connections all closed", async {
        while open_connections().await != 2.0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}
