//! Which relays are alive, so that a dead relay stops counting without any relay
//! refreshing anything per key.
//!
//! A relay writes its connection count under a key only when it changes (`count.lua`,
//! `subscribe.lua`), with no expiry: an idle connection costs Redis nothing. Liveness is
//! per relay instead, in the roster (all its names share one hash tag, so one slot):
//! - each relay is listed in the roster's set and keeps a heartbeat key alive, rewritten
//!   every [`HEARTBEAT_EVERY`] with an expiry of [`HEARTBEAT_TTL`];
//! - each relay keeps an index of the keys it has entries under (a count or a watch),
//!   written when such an entry comes or goes;
//! - every relay looks at the roster every [`SWEEP_EVERY`]: a listed relay whose
//!   heartbeat is gone is dead. One relay claims it (`claim.lua`: it leaves the roster),
//!   and drops its entries under every key of its index (`drop.lua`: the totals follow,
//!   and the keys' watchers are told). A relay killed with -9 thus stops counting within
//!   [`HEARTBEAT_TTL`] plus one sweep, about 15 s.
//!
//! A relay that was only paused (its heartbeat ran out while it was stopped) learns it
//! from its next heartbeat, which rewrites the key only if it still exists: the listener
//! then starts over as after any loss, joins the roster again (waiting while a claimant is
//! still dropping its entries) and writes every count again in its catch-up.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ::redis::Script;
use futures_util::future::{join_all, try_join};
use futures_util::TryFutureExt;
use log::{info, warn};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{keys, request, Shared};
use crate::delivery::engine::Unavailable;
use crate::observability::log_text::escaped;

/// How often a relay rewrites its heartbeat.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);
/// How long a heartbeat lasts: a relay that missed two in a row is taken for dead.
const HEARTBEAT_TTL: Duration = Duration::from_secs(14);
/// How often a relay looks for dead ones.
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// How long a claim holds off the claimed relay's return: longer than dropping its
/// entries takes, short enough that a claimant that died mid-way holds nobody up long.
const CLAIM_TTL: Duration = Duration::from_secs(30);
/// Keys of a dead relay read and dropped at a time.
const DROP_BATCH: usize = 256;
/// How long a relay that joins again waits for a claimant still dropping its entries.
const CLAIM_WAIT: Duration = Duration::from_secs(10);

/// This relay's place in the roster.
#[derive(Debug)]
pub(super) struct Roster {
    /// Joined, with a heartbeat kept: entries may be written.
    joined: AtomicBool,
    /// The heartbeat found itself gone: the listener must start over and join again.
    pub(super) lapsed: Notify,
}

impl Roster {
    pub(super) fn new() -> Self {
        Self {
            joined: AtomicBool::new(false),
            lapsed: Notify::new(),
        }
    }
}

/// Joins the roster (at the first connection, and again after any loss), then waits,
/// bounded, while a relay that took this one for dead is still dropping its entries, so
/// that the counts written next are not dropped after the fact.
pub(super) async fn join(shared: &Shared) -> Result<(), Unavailable> {
    let relay = &shared.relay;
    let deadline = tokio::time::Instant::now() + CLAIM_WAIT;
    loop {
        let claimed =
            run_roster_script(shared, &shared.scripts.register, relay, HEARTBEAT_TTL).await?;
        if claimed == 0 {
            shared.roster.joined.store(true, Ordering::Relaxed);
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            warn!("redis: another relay is still dropping this relay's old entries; going on");
            shared.roster.joined.store(true, Ordering::Relaxed);
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Leaves the roster (the drain, after every count was written as 0).
pub(super) async fn leave(shared: &Shared) -> Result<(), Unavailable> {
    shared.roster.joined.store(false, Ordering::Relaxed);
    let relay = &shared.relay;
    let mut redis = shared.requests.connection()?;
    let mut pipe = ::redis::pipe();
    pipe.cmd("SREM").arg(keys::relays()).arg(relay).ignore();
    pipe.cmd("DEL").arg(keys::heartbeat(relay)).ignore();
    pipe.cmd("DEL").arg(keys::index(relay)).ignore();
    request(pipe.query_async::<()>(&mut redis)).await
}

/// Writes this relay's entry under `key` (`write`, a script on the key's names), keeping
/// the roster's index of its keys in step: when an entry `stays` (a count above zero, or a
/// watch), the key is noted first, sent ahead of the write in the same round trip (on one
/// server Redis runs them in that order; on a cluster they go to different masters), so
/// a claimant finds every entry this relay could leave behind; when none stays, the key
/// is taken out after the write.
pub(super) async fn write_entry<T>(
    shared: &Shared,
    key: &str,
    stays: bool,
    write: impl std::future::Future<Output = Result<T, Unavailable>>,
) -> Result<T, Unavailable> {
    let index = keys::index(&shared.relay);
    if stays {
        let mut sadd = ::redis::cmd("SADD");
        sadd.arg(&index).arg(key);
        let ((), written) = try_join(query::<i64>(shared, &sadd).map_ok(|_| ()), write).await?;
        return Ok(written);
    }
    let written = write.await?;
    let mut srem = ::redis::cmd("SREM");
    srem.arg(&index).arg(key);
    query::<i64>(shared, &srem).await?;
    Ok(written)
}

/// Keeps the heartbeat and sweeps the roster until `stop`.
pub(super) async fn keep(shared: std::sync::Arc<Shared>, stop: CancellationToken) {
    let mut heartbeat = tokio::time::interval(HEARTBEAT_EVERY);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sweep = tokio::time::interval(SWEEP_EVERY);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let beat = tokio::select! {
            () = stop.cancelled() => return,
            _ = heartbeat.tick() => true,
            _ = sweep.tick() => false,
        };
        if !shared.health.available() || !shared.roster.joined.load(Ordering::Relaxed) {
            continue;
        }
        if beat {
            if let Ok(false) = beat_once(&shared).await {
                shared.roster.joined.store(false, Ordering::Relaxed);
                warn!(
                    "redis: this relay's heartbeat had run out (it was stopped or cut off); \
                     joining again and writing its presence anew"
                );
                shared.roster.lapsed.notify_one();
            }
        } else if let Err(Unavailable) = sweep_once(&shared).await {
            // Redis is not answering: the listener's probes say so and make the relay
            // not ready; the next sweep tries again.
        }
    }
}

/// Rewrites the heartbeat if it still exists; `false` when it had run out.
async fn beat_once(shared: &Shared) -> Result<bool, Unavailable> {
    let mut set = ::redis::cmd("SET");
    set.arg(keys::heartbeat(&shared.relay))
        .arg("1")
        .arg("PX")
        .arg(HEARTBEAT_TTL.as_millis() as u64)
        .arg("XX");
    Ok(query::<Option<String>>(shared, &set).await?.is_some())
}

/// Looks for listed relays without a heartbeat, claims them and drops their entries.
async fn sweep_once(shared: &Shared) -> Result<(), Unavailable> {
    let mut smembers = ::redis::cmd("SMEMBERS");
    smembers.arg(keys::relays());
    let listed: HashSet<String> = query(shared, &smembers).await?;
    let others: Vec<&String> = listed.iter().filter(|r| **r != shared.relay).collect();
    if others.is_empty() {
        return Ok(());
    }
    let mut mget = ::redis::cmd("MGET");
    for relay in &others {
        mget.arg(keys::heartbeat(relay));
    }
    let beats: Vec<Option<String>> = query(shared, &mget).await?;
    for (relay, beat) in others.into_iter().zip(beats) {
        if beat.is_none() && claim(shared, relay).await? {
            let dropped = drop_entries(shared, relay).await?;
            info!(
                "redis: relay {} stopped answering; its entries under {dropped} key(s) dropped",
                escaped(relay)
            );
        }
    }
    Ok(())
}

/// Claims dead `relay`: `true` when this relay is the one to drop its entries.
async fn claim(shared: &Shared, relay: &str) -> Result<bool, Unavailable> {
    let claimed = run_roster_script(shared, &shared.scripts.claim, relay, CLAIM_TTL).await?;
    Ok(claimed == 1)
}

/// Drops claimed `relay`'s entries under every key of its index, then the index and the
/// claim. Returns how many keys it visited.
async fn drop_entries(shared: &Shared, relay: &str) -> Result<usize, Unavailable> {
    let index = keys::index(relay);
    let mut cursor: u64 = 0;
    let mut visited = 0;
    loop {
        let mut sscan = ::redis::cmd("SSCAN");
        sscan.arg(&index).arg(cursor).arg("COUNT").arg(DROP_BATCH);
        let (next, batch): (u64, Vec<String>) = query(shared, &sscan).await?;
        let drops = batch.iter().map(|key| drop_under(shared, relay, key));
        for dropped in join_all(drops).await {
            dropped?;
        }
        visited += batch.len();
        if next == 0 {
            break;
        }
        cursor = next;
    }
    let mut redis = shared.requests.connection()?;
    let mut pipe = ::redis::pipe();
    pipe.cmd("DEL").arg(&index).ignore();
    pipe.cmd("DEL").arg(keys::claim(relay)).ignore();
    request(pipe.query_async::<()>(&mut redis)).await?;
    Ok(visited)
}

/// Runs `drop.lua` for dead `relay` under `key`.
async fn drop_under(shared: &Shared, relay: &str, key: &str) -> Result<(), Unavailable> {
    let mut redis = shared.requests.connection()?;
    let mut invocation = keys::on_key(&shared.scripts.drop, key);
    invocation.arg(relay);
    request(invocation.invoke_async::<i64>(&mut redis))
        .await
        .map(|_| ())
}

/// Runs `register.lua` or `claim.lua` for `relay`: both take the roster's set and the
/// relay's heartbeat and claim, the relay and a time in ms.
async fn run_roster_script(
    shared: &Shared,
    script: &Script,
    relay: &str,
    ttl: Duration,
) -> Result<i64, Unavailable> {
    let mut redis = shared.requests.connection()?;
    let mut invocation = script.prepare_invoke();
    invocation
        .key(keys::relays())
        .key(keys::heartbeat(relay))
        .key(keys::claim(relay))
        .arg(relay)
        .arg(ttl.as_millis() as u64);
    request(invocation.invoke_async(&mut redis)).await
}

/// Runs one command, bounded like every request.
async fn query<T: ::redis::FromRedisValue>(
    shared: &Shared,
    command: &::redis::Cmd,
) -> Result<T, Unavailable> {
    let mut redis = shared.requests.connection()?;
    request(command.query_async(&mut redis)).await
}
