//! The Redis engine: several relay processes that point at one Redis (or Valkey) serve
//! one key space (Part 4 of docs/PROTOCOL.md).
//!
//! What lives where:
//! - **In Redis**, per key (all under the hash tag `{KEY}`, see [`keys`]): the stream of
//!   retained messages with its epoch, sequence, pending set and collapse names, the
//!   presence hash (each relay's connection count, written when it changes, and the
//!   total) and the key's watchers. The Lua scripts beside this file are the only code
//!   that changes them, one atomic step each: `publish.lua` (presence, sequence, room,
//!   pending, PUBLISH or SPUBLISH), `subscribe.lua` (presence, expiry, then pending or
//!   replay), `count.lua`, `presence.lua`, `watch.lua` (while a key has watchers, a change
//!   of its total is published on its channel as a presence event, see [`watch`]) and
//!   `drop.lua` (a dead relay's entries go).
//! - **In Redis, per relay**: the roster ([`roster`]): which relays are alive (one
//!   heartbeat each), and which keys each has entries under, so the relay that notices a
//!   dead one drops them. Nothing is refreshed per key: an idle connection costs nothing.
//! - **In this process**: the local subscribers of each key ([`channel::Channel`]), fed by
//!   one pub/sub connection per shard, subscribed to the channels of exactly the keys
//!   with local subscribers whose slot that shard owns (per-key interest; [`listener`]).
//!   One server is one shard; a Redis Cluster has one per master, with sharded pub/sub
//!   (SPUBLISH in the scripts, SSUBSCRIBE), so a message touches only its slot's shard
//!   ([`topology`]). The scripts run through [`requests`], which on a cluster sends each
//!   to the master of its keys' slot; on one server publishes leave in pipelines
//!   ([`batch`]).
//!
//! Every message, local or not, reaches local subscribers through Redis's channel, so all
//! relays see one order per key. A registration subscribes the key's channel first, then
//! runs its script, so a message is either in what the script hands over or arrives live
//! after it (the seq tells which), never both and never neither.
//!
//! Faults: the listener probes its own subscriptions every second through Redis, through
//! each shard; a probe that does not come back within [`PROBE_TIMEOUT`] (Redis down,
//! paused, or a silently dead subscription) makes the relay not ready, and the
//! subscriptions are made anew (on a cluster also after a slot moved), after which the
//! relay joins the roster again and every key's subscribers are handed what they missed
//! from the stream, or a gap signal when Redis lost it, while its counts are written
//! again. A relay killed with -9 stops counting within about 15 s, when a live relay
//! finds its heartbeat gone.

mod batch;
mod channel;
mod keys;
mod listener;
mod requests;
mod roster;
mod topology;
mod watch;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use ::redis::Script;
use dashmap::DashMap;
use futures_util::future::Either;
use log::{debug, warn};
use tokio::sync::{mpsc, oneshot, Notify};
use tokio_util::sync::CancellationToken;

use self::channel::{Channel, Handed};
use self::requests::Requests;
use self::topology::Flavor;
use crate::config::redis_url::RedisTarget;
use crate::config::StreamConfig;
use crate::delivery::engine::memory::EpochSource;
use crate::delivery::engine::{Engine, EngineFuture, EngineStats, Preamble, Start, Unavailable};
use crate::message::{Eviction, Outgoing, Position, Published, Since};
use crate::observability::log_text::escaped;
use crate::observability::metrics::Metrics;
use crate::observability::readiness::ReadinessCheck;
use crate::peer::registry::{Framing, Peer, PeerId};

/// How long one Redis request may take before it counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the listener sends a probe through its own subscription.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// A probe not back within this long: Redis is unreachable or unresponsive, or the
/// subscription went silent. The relay is not ready and the subscription is made anew.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a key's channel stays subscribed after its last local subscriber left, so a
/// reload does not unsubscribe and subscribe again.
const UNSUBSCRIBE_DELAY: Duration = Duration::from_secs(2);
/// Pending channel (un)subscriptions queued for the listener.
const COMMAND_QUEUE: usize = 1024;

/// The scripts: those on a key's names with the shared prelude (`lib.lua`), the roster's
/// and the probe alone.
#[derive(Debug)]
struct Scripts {
    publish: Script,
    subscribe: Script,
    presence: Script,
    count: Script,
    drop: Script,
    watch: Script,
    probe: Script,
    register: Script,
    claim: Script,
}

impl Scripts {
    /// The scripts for `flavor`'s pub/sub: the prelude publishes with its command.
    fn new(flavor: Flavor) -> Self {
        let prelude = format!(
            "local PUBLISH_COMMAND = '{}'\n{}",
            flavor.publish(),
            include_str!("lib.lua")
        );
        let with_lib = |body: &str| Script::new(&format!("{prelude}\n{body}"));
        Self {
            publish: with_lib(include_str!("publish.lua")),
            subscribe: with_lib(include_str!("subscribe.lua")),
            presence: with_lib(include_str!("presence.lua")),
            count: with_lib(include_str!("count.lua")),
            drop: with_lib(include_str!("drop.lua")),
            watch: with_lib(include_str!("watch.lua")),
            probe: Script::new(include_str!("probe.lua")),
            register: Script::new(include_str!("register.lua")),
            claim: Script::new(include_str!("claim.lua")),
        }
    }
}

/// Whether Redis answers, as the listener last saw it.
#[derive(Debug)]
pub struct Health {
    /// The listener has a live subscription.
    connected: AtomicBool,
    /// When a probe last came back, in ms since `origin`.
    probed_at: AtomicU64,
    /// The time base of `probed_at`.
    origin: Instant,
    /// Counts subscriptions made: a registration that spans a new one cannot prove what
    /// it missed, and is refused.
    generation: AtomicU64,
    /// Redis's clock minus this relay's, in ms, as the last probe measured it (within
    /// its round trip); `None` before the first probe.
    clock_offset: Mutex<Option<i64>>,
    /// `cluster_ready` in the metrics.
    metrics: Arc<Metrics>,
}

impl Health {
    fn new(metrics: Arc<Metrics>) -> Self {
        metrics.cluster_ready.set(0);
        Self {
            connected: AtomicBool::new(false),
            probed_at: AtomicU64::new(0),
            origin: Instant::now(),
            generation: AtomicU64::new(0),
            clock_offset: Mutex::new(None),
            metrics,
        }
    }

    fn now_ms(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64
    }

    /// A probe came back (or a subscription was just made).
    fn probed(&self) {
        self.probed_at(Instant::now());
    }

    /// Every shard's probe came back at `at` or later.
    fn probed_at(&self, at: Instant) {
        let ms = at.saturating_duration_since(self.origin).as_millis() as u64;
        self.probed_at.store(ms, Ordering::Relaxed);
        self.metrics.cluster_ready.set(i64::from(self.available()));
    }

    fn set_connected(&self, connected: bool) {
        self.connected.store(connected, Ordering::Relaxed);
        self.metrics.cluster_ready.set(i64::from(self.available()));
    }

    /// How long since a probe last came back.
    fn silent_for(&self) -> Duration {
        Duration::from_millis(
            self.now_ms()
                .saturating_sub(self.probed_at.load(Ordering::Relaxed)),
        )
    }

    /// Whether requests to Redis can be expected to complete.
    fn available(&self) -> bool {
        self.connected.load(Ordering::Relaxed) && self.silent_for() < PROBE_TIMEOUT
    }

    fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    /// Notes Redis's clock, `redis_ms`, read between `sent` and now (Unix ms here).
    fn clock_read(&self, redis_ms: i64, sent: i64) {
        let midway = (sent + unix_ms()) / 2;
        *Shared::lock(&self.clock_offset) = Some(redis_ms - midway);
    }

    /// The moment, in Redis's clock, after which a request sent now must not take
    /// effect (its caller was told it failed); 0 while the clocks were not compared.
    fn deadline(&self) -> i64 {
        match *Shared::lock(&self.clock_offset) {
            Some(offset) => unix_ms() + offset + REQUEST_TIMEOUT.as_millis() as i64,
            None => 0,
        }
    }
}

/// This relay's wall clock in Unix ms.
fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl ReadinessCheck for Health {
    fn not_ready(&self) -> Option<String> {
        if !self.connected.load(Ordering::Relaxed) {
            return Some("cluster: redis unreachable".to_owned());
        }
        let silent = self.silent_for();
        (silent >= PROBE_TIMEOUT)
            .then(|| format!("cluster: redis not answering for {}s", silent.as_secs()))
    }
}

/// A request to the listener.
#[derive(Debug)]
enum Command {
    /// Subscribe the key's channel (if it is not yet) and answer with the subscription's
    /// generation once Redis confirmed it; `None` when that failed.
    Listen {
        key: Box<str>,
        done: oneshot::Sender<Option<u64>>,
    },
}

/// What the engine, the listener, the count writer and the roster keeper share.
#[derive(Debug)]
struct Shared {
    /// This relay's name in presence hashes and its probe channel.
    relay: String,
    /// Requests and scripts (reconnects by itself).
    requests: Requests,
    /// Keys with local subscribers (or that had some a moment ago).
    channels: DashMap<Box<str>, Channel>,
    /// Keys with local watchers of their presence.
    watches: watch::Watches,
    scripts: Scripts,
    /// Publishes pipelined, on one server (`None` on a cluster: see [`batch`]).
    batcher: Option<batch::Batcher>,
    /// Retention settings (`--buffer-max`, `--buffer-ttl`).
    config: StreamConfig,
    /// Candidate epochs for streams a script creates.
    epochs: EpochSource,
    health: Arc<Health>,
    /// This relay's place among the live relays.
    roster: roster::Roster,
    /// Requests to the listener.
    commands: mpsc::Sender<Command>,
    /// Keys whose local count changed since it was last written to Redis.
    dirty: Mutex<HashSet<Box<str>>>,
    /// Wakes the count writer when `dirty` gained a key.
    dirty_added: Notify,
    /// Held while counts taken from `dirty` are being written, so that the last write
    /// before exit ([`Engine::settle`]) waits for one under way and no count is lost
    /// between the two.
    count_writer: tokio::sync::Mutex<()>,
    /// Tokens of this relay's publishes whose copy has not come back on its subscription
    /// yet (see [`Shared::publish`]).
    awaited: Mutex<HashSet<u64>>,
    /// The next such token.
    next_token: AtomicU64,
    /// Wakes publishers when a copy came back.
    delivered_here: Notify,
    /// Keys whose last local subscriber left, and when.
    idle: Mutex<HashMap<Box<str>, Instant>>,
    /// Live messages buffered for one registration in flight, at most.
    buffer_limit: usize,
    metrics: Arc<Metrics>,
}

/// The Redis engine. See the module docs.
#[derive(Debug)]
pub struct RedisEngine {
    shared: Arc<Shared>,
    /// Stops the listener, the count writer and the roster keeper when the engine goes.
    stop: CancellationToken,
}

impl RedisEngine {
    /// An engine on the Redis at `url`; connects in the background (the relay starts,
    /// not ready, while Redis is unreachable). Must run inside a tokio runtime.
    pub fn start(
        url: &str,
        config: StreamConfig,
        buffer_limit: usize,
        metrics: Arc<Metrics>,
    ) -> ::redis::RedisResult<Self> {
        let target = RedisTarget::parse(url).map_err(|e| {
            ::redis::RedisError::from((::redis::ErrorKind::InvalidClientConfig, "--redis", e))
        })?;
        let requests = Requests::new(&target)?;
        let (commands, listens) = mpsc::channel(COMMAND_QUEUE);
        let random = uuid::Uuid::new_v4().simple().to_string();
        let flavor = if target.is_cluster() {
            Flavor::Sharded
        } else {
            Flavor::Classic
        };
        let (batcher, jobs) = match flavor {
            Flavor::Classic => {
                let (batcher, jobs) = batch::Batcher::new();
                (Some(batcher), Some(jobs))
            }
            Flavor::Sharded => (None, None),
        };
        let shared = Arc::new(Shared {
            relay: random[..16].to_owned(),
            batcher,
            requests,
            channels: DashMap::new(),
            watches: watch::Watches::default(),
            scripts: Scripts::new(flavor),
            config,
            epochs: EpochSource::new(),
            health: Arc::new(Health::new(Arc::clone(&metrics))),
            roster: roster::Roster::new(),
            commands,
            dirty: Mutex::new(HashSet::new()),
            dirty_added: Notify::new(),
            count_writer: tokio::sync::Mutex::new(()),
            awaited: Mutex::new(HashSet::new()),
            next_token: AtomicU64::new(1),
            delivered_here: Notify::new(),
            idle: Mutex::new(HashMap::new()),
            buffer_limit: buffer_limit.max(1),
            metrics,
        });
        let stop = CancellationToken::new();
        tokio::spawn(listener::run(
            Arc::clone(&shared),
            target,
            listens,
            stop.clone(),
        ));
        tokio::spawn(keep_counts(Arc::clone(&shared), stop.clone()));
        if let Some(jobs) = jobs {
            let (shared, stop) = (Arc::clone(&shared), stop.clone());
            tokio::spawn(async move { batch::run(&shared.requests, jobs, stop).await });
        }
        tokio::spawn(roster::keep(Arc::clone(&shared), stop.clone()));
        Ok(Self { shared, stop })
    }

    /// What `/readyz` asks: whether Redis answers.
    pub fn health(&self) -> Arc<Health> {
        Arc::clone(&self.shared.health)
    }
}

impl Drop for RedisEngine {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Shared {
    fn streams_on(&self) -> bool {
        !self.config.buffer_ttl.is_zero()
    }

    fn ttl_ms(&self) -> u64 {
        self.config.buffer_ttl.as_millis() as u64
    }

    fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
        mutex.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The local count of `key` changed: write it to Redis soon.
    fn mark_dirty(&self, key: &str) {
        Self::lock(&self.dirty).insert(key.into());
        self.dirty_added.notify_one();
    }

    /// Notes that `key` has no local subscriber any more, for the delayed unsubscribe.
    fn mark_idle_if_empty(&self, key: &str) {
        if let Some(mut channel) = self.channels.get_mut(key) {
            if channel.is_empty() {
                channel.idle_since = Some(Instant::now());
                drop(channel);
                Self::lock(&self.idle).insert(key.into(), Instant::now());
            }
        }
    }

    /// Publishes through `publish.lua`. When this relay has subscribers of `key`, the
    /// reply waits (bounded) until the message came back and was handed to them: a
    /// connection that sends to its own key gets the message before the reply, as on one
    /// relay.
    async fn publish(&self, key: &str, message: &Outgoing) -> Result<Published, Unavailable> {
        let local = self.channels.get(key).is_some_and(|c| !c.is_empty());
        let token = local.then(|| {
            let token = self.next_token.fetch_add(1, Ordering::Relaxed);
            Self::lock(&self.awaited).insert(token);
            token
        });
        let origin = token.map_or_else(String::new, |t| format!("{}:{t}", self.relay));
        let outcome = self.publish_script(key, message, &origin).await;
        if let Some(token) = token {
            if outcome.is_ok() {
                self.came_back(token).await;
            }
            Self::lock(&self.awaited).remove(&token);
        }
        outcome
    }

    /// Waits (at most [`REQUEST_TIMEOUT`]) until the listener saw publish `token` back.
    async fn came_back(&self, token: u64) {
        let seen = async {
            loop {
                let notified = self.delivered_here.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if !Self::lock(&self.awaited).contains(&token) {
                    return;
                }
                notified.await;
            }
        };
        let _ = tokio::time::timeout(REQUEST_TIMEOUT, seen).await;
    }

    /// [`Shared::seen_origin`] for an origin as it came from Redis (empty: none).
    fn seen_origin_bytes(&self, origin: &[u8]) {
        if let Ok(origin) = std::str::from_utf8(origin) {
            if !origin.is_empty() {
                self.seen_origin(origin);
            }
        }
    }

    /// The listener saw a message published with `origin`: if it is one of this relay's
    /// awaited publishes, its publisher may answer now.
    fn seen_origin(&self, origin: &str) {
        let token = origin
            .strip_prefix(self.relay.as_str())
            .and_then(|rest| rest.strip_prefix(':'))
            .and_then(|t| t.parse::<u64>().ok());
        if let Some(token) = token {
            Self::lock(&self.awaited).remove(&token);
            self.delivered_here.notify_waiters();
        }
    }

    async fn publish_script(
        &self,
        key: &str,
        message: &Outgoing,
        origin: &str,
    ) -> Result<Published, Unavailable> {
        let retain = self.streams_on() && !message.ephemeral;
        let script = &self.scripts.publish;
        let epoch = self.epochs.next();
        let command = || {
            let mut command = ::redis::cmd("EVALSHA");
            command.arg(script.get_hash()).arg(keys::DATA_KEYS);
            for name in keys::data(key) {
                command.arg(name);
            }
            command
                .arg(message.payload.as_text().as_str())
                .arg(keys::kind(&message.payload))
                .arg(message.collapse.as_deref().unwrap_or(""))
                .arg(if retain { "1" } else { "0" })
                .arg(self.config.buffer_max.max(1))
                .arg(self.ttl_ms())
                .arg(&*epoch)
                .arg(keys::channel(key))
                .arg(self.health.deadline())
                .arg(origin);
            command
        };
        let answer = self.run_script(script, command).await?;
        let (connections, epoch, seq, by_max, collapsed): (i64, String, u64, u64, u64) =
            ::redis::FromRedisValue::from_redis_value(answer).map_err(|error| {
                debug!("redis: unreadable publish answer: {error}");
                Unavailable
            })?;
        let Ok(connections) = u64::try_from(connections) else {
            debug!("redis: a publish arrived after its deadline and was not carried out");
            return Err(Unavailable);
        };
        self.metrics.evicted(Eviction::Max, by_max);
        self.metrics.messages_collapsed.inc_by(collapsed);
        let position = (retain && !epoch.is_empty()).then(|| Position::new(epoch.into(), seq));
        Ok(Published {
            delivered: connections as usize,
            overflowed: 0,
            buffered: position.is_some() && connections == 0,
            position,
        })
    }

    /// Sends the `EVALSHA` of `script` that `command` makes: through the batcher on one
    /// server, alone on a cluster; a script Redis does not have (it restarted) is loaded
    /// and the command made and sent again.
    async fn run_script(
        &self,
        script: &Script,
        command: impl Fn() -> ::redis::Cmd,
    ) -> Result<::redis::Value, Unavailable> {
        let mut redis = self.requests.connection()?;
        let first = self.send(&mut redis, command()).await?;
        match first {
            Err(error)
                if error.kind()
                    == ::redis::ErrorKind::Server(::redis::ServerErrorKind::NoScript) =>
            {
                request(script.load_async(&mut redis)).await?;
                self.send(&mut redis, command()).await?.map_err(|error| {
                    debug!("redis request failed: {error}");
                    Unavailable
                })
            }
            other => other.map_err(|error| {
                debug!("redis request failed: {error}");
                Unavailable
            }),
        }
    }

    /// One request's answer: through the batcher when there is one.
    async fn send(
        &self,
        redis: &mut requests::Connection,
        command: ::redis::Cmd,
    ) -> Result<::redis::RedisResult<::redis::Value>, Unavailable> {
        match &self.batcher {
            Some(batcher) => batcher.send(command).await.ok_or(Unavailable),
            None => match tokio::time::timeout(REQUEST_TIMEOUT, command.query_async(redis)).await {
                Ok(answer) => Ok(answer),
                Err(_) => Err(Unavailable),
            },
        }
    }

    /// Runs `subscribe.lua` for `key` with `local` connections here.
    async fn hand_over(&self, key: &str, local: usize, owed: &Owed) -> Result<Handed, Unavailable> {
        let (mode, since, epoch, seq) = match owed {
            Owed::Nothing => ("none", "latest", "", 0),
            Owed::Pending => ("pending", "latest", "", 0),
            Owed::Since(Since::Earliest) => ("since", "earliest", "", 0),
            Owed::Since(Since::Latest) => ("since", "latest", "", 0),
            Owed::Since(Since::Unknown) => ("since", "unknown", "", 0),
            Owed::Since(Since::After(position)) => {
                ("since", "after", &*position.epoch, position.seq)
            }
        };
        let mut redis = self.requests.connection()?;
        let mut invocation = keys::on_key(&self.scripts.subscribe, key);
        invocation
            .arg(&self.relay)
            .arg(local)
            .arg(mode)
            .arg(since)
            .arg(epoch)
            .arg(seq)
            .arg(self.ttl_ms())
            .arg(self.config.buffer_max.max(1))
            .arg(&*self.epochs.next());
        let call = invocation
            .invoke_async::<(String, u64, i64, Vec<(u64, String, String)>, u64, u64)>(&mut redis);
        let stays = local > 0 || self.watches.is_watched(key);
        let (epoch, end, gap, entries, by_ttl, by_max) =
            roster::write_entry(self, key, stays, request(call)).await?;
        self.metrics.evicted(Eviction::Ttl, by_ttl);
        self.metrics.evicted(Eviction::Max, by_max);
        Ok(Handed {
            epoch: (!epoch.is_empty()).then(|| epoch.into()),
            end,
            gap: u64::try_from(gap).ok(),
            entries: entries
                .into_iter()
                .map(|(seq, kind, text)| (seq, keys::payload(&kind, text)))
                .collect(),
        })
    }

    /// Subscribes the key's channel; the subscription's generation once Redis confirmed.
    async fn listen(&self, key: &str) -> Result<u64, Unavailable> {
        let (done, confirmed) = oneshot::channel();
        let command = Command::Listen {
            key: key.into(),
            done,
        };
        let asked = async {
            self.commands.send(command).await.ok()?;
            confirmed.await.ok()?
        };
        match tokio::time::timeout(REQUEST_TIMEOUT, asked).await {
            Ok(Some(generation)) => Ok(generation),
            _ => Err(Unavailable),
        }
    }

    async fn subscribe(
        &self,
        key: &str,
        peer: &Arc<Peer>,
        start: Start,
        preamble: Option<Preamble<'_>>,
    ) -> Result<(), Unavailable> {
        if !self.health.available() {
            return Err(Unavailable);
        }
        let streams_on = self.streams_on();
        // With streams off the relay behaves exactly as in Parts 1-2: plain frames.
        let (framing, owed) = match start {
            Start::Resume(since) if streams_on => (Framing::Envelope, Owed::Since(since)),
            Start::Events(Some(since)) if streams_on => (Framing::Events, Owed::Since(since)),
            Start::Events(_) if streams_on => (Framing::Events, Owed::Pending),
            Start::Events(_) => (Framing::Events, Owed::Nothing),
            _ if streams_on => (Framing::Plain, Owed::Pending),
            _ => (Framing::Plain, Owed::Nothing),
        };
        peer.set_framing(framing);
        let local = {
            let mut channel = self.channels.entry(key.into()).or_default();
            channel.wait(peer);
            channel.len()
        };
        let mut waiting = Waiting {
            shared: self,
            key,
            peer: peer.id,
            armed: true,
        };
        let result = async {
            let generation = self.listen(key).await?;
            let handed = self.hand_over(key, local, &owed).await?;
            Ok::<_, Unavailable>((generation, handed))
        }
        .await;
        waiting.armed = false;
        let replayed = match self.channels.get_mut(key) {
            Some(mut channel) => match result {
                Ok((generation, handed)) if generation == self.health.generation() => {
                    channel.complete(peer.id, &handed, preamble)
                }
                _ => {
                    channel.abandon(peer.id);
                    None
                }
            },
            None => None,
        };
        self.mark_dirty(key);
        match replayed {
            Some(replayed) => {
                self.metrics.messages_replayed.inc_by(replayed as u64);
                Ok(())
            }
            None => {
                self.mark_idle_if_empty(key);
                Err(Unavailable)
            }
        }
    }

    /// Hands a message that could not go through Redis to this relay's subscribers.
    fn deliver_here(&self, key: &str, message: &Outgoing) {
        if let Some(channel) = self.channels.get(key) {
            let outcome = channel.deliver_here(&message.payload);
            debug!(
                "redis unavailable: message to {} handed to {} local connection(s) only",
                escaped(key),
                outcome.delivered
            );
        }
    }
}

/// What a registration is owed.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Owed {
    /// Nothing (streams off).
    Nothing,
    /// The key's pending messages.
    Pending,
    /// Everything retained after a position.
    Since(Since),
}

/// A registration in flight; if its future is dropped before the end, it leaves the key.
struct Waiting<'a> {
    shared: &'a Shared,
    key: &'a str,
    peer: PeerId,
    armed: bool,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if self.armed {
            if let Some(mut channel) = self.shared.channels.get_mut(self.key) {
                channel.abandon(self.peer);
            }
            self.shared.mark_dirty(self.key);
            self.shared.mark_idle_if_empty(self.key);
        }
    }
}

/// Awaits a Redis request with [`REQUEST_TIMEOUT`]; failures are [`Unavailable`].
async fn request<T>(
    call: impl std::future::Future<Output = ::redis::RedisResult<T>>,
) -> Result<T, Unavailable> {
    match tokio::time::timeout(REQUEST_TIMEOUT, call).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => {
            debug!("redis request failed: {error}");
            Err(Unavailable)
        }
        Err(_) => {
            debug!("redis request timed out");
            Err(Unavailable)
        }
    }
}

impl Engine for RedisEngine {
    fn publish<'a>(
        &'a self,
        key: &'a str,
        message: Outgoing,
    ) -> EngineFuture<'a, Result<Published, Unavailable>> {
        let shared = &self.shared;
        Either::Right(Box::pin(async move {
            let outcome = if shared.health.available() {
                shared.publish(key, &message).await
            } else {
                Err(Unavailable)
            };
            if outcome.is_err() {
                shared.deliver_here(key, &message);
            }
            outcome
        }))
    }

    fn subscribe<'a>(
        &'a self,
        key: &'a Arc<str>,
        peer: &'a Arc<Peer>,
        start: Start,
        preamble: Option<Preamble<'a>>,
    ) -> EngineFuture<'a, Result<(), Unavailable>> {
        Either::Right(Box::pin(self.shared.subscribe(key, peer, start, preamble)))
    }

    fn unsubscribe(&self, key: &str, peer: &Peer) {
        if let Some(mut channel) = self.shared.channels.get_mut(key) {
            channel.remove(peer.id);
        }
        self.shared.mark_dirty(key);
        self.shared.mark_idle_if_empty(key);
    }

    fn watch<'a>(
        &'a self,
        key: &'a str,
        peer: &'a Arc<Peer>,
        initial: Option<Preamble<'a>>,
    ) -> EngineFuture<'a, Result<(), Unavailable>> {
        Either::Right(Box::pin(watch::watch(&self.shared, key, peer, initial)))
    }

    fn unwatch(&self, key: &str, peer: &Peer) {
        watch::unwatch(&self.shared, key, peer);
    }

    fn presence<'a>(&'a self, key: &'a str) -> EngineFuture<'a, Result<usize, Unavailable>> {
        let shared = &self.shared;
        Either::Right(Box::pin(async move {
            if !shared.health.available() {
                return Err(Unavailable);
            }
            let mut redis = shared.requests.connection()?;
            let invocation = keys::on_key(&shared.scripts.presence, key);
            let call = invocation.invoke_async::<u64>(&mut redis);
            Ok(request(call).await? as usize)
        }))
    }

    fn tick(&self, _now: Instant) {
        // Redis trims streams in the scripts; the roster is kept by its own task.
    }

    fn tick_interval(&self) -> Duration {
        Duration::from_secs(1)
    }

    fn stats(&self) -> EngineStats {
        EngineStats {
            keys: self
                .shared
                .channels
                .iter()
                .filter(|channel| !channel.is_empty())
                .count(),
            // Retained messages live in Redis, not in this process.
            retained_messages: 0,
            retained_bytes: 0,
        }
    }

    fn streams_enabled(&self) -> bool {
        self.shared.streams_on()
    }

    /// Writes the counts of every key whose count changed (after the drain: zero), so
    /// the other relays stop counting this one at once.
    fn settle(&self) -> EngineFuture<'_, ()> {
        let shared = &self.shared;
        Either::Right(Box::pin(async move {
            if !shared.health.available() {
                return;
            }
            let settle = async {
                let _writing = shared.count_writer.lock().await;
                let keys: Vec<Box<str>> = Shared::lock(&shared.dirty).drain().collect();
                for key in keys {
                    let local = shared.channels.get(&*key).map_or(0, |c| c.len());
                    if write_count(shared, &key, local).await.is_err() {
                        return;
                    }
                }
                // With nothing left under any key, the relay leaves the roster at once;
                // otherwise (the drain ran out of time) it stops its heartbeat only, and
                // a live relay drops what it left behind, as after a crash.
                let nothing_left = shared.channels.iter().all(|channel| channel.is_empty())
                    && shared.watches.is_empty();
                if nothing_left {
                    let _ = roster::leave(shared).await;
                }
            };
            let _ = tokio::time::timeout(REQUEST_TIMEOUT, settle).await;
        }))
    }
}

/// Writes this relay's connection count under each key whose count changed, as it
/// changes, until `stop`. Nothing is refreshed: liveness is the roster's heartbeat.
async fn keep_counts(shared: Arc<Shared>, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = shared.dirty_added.notified() => {}
        }
        // Taken before the keys: what this batch drains from `dirty`, it writes before
        // `settle` can look.
        let _writing = shared.count_writer.lock().await;
        let keys: Vec<Box<str>> = Shared::lock(&shared.dirty).drain().collect();
        if !shared.health.available() {
            // Every count is written again once Redis is back (the listener's catch-up).
            continue;
        }
        for key in keys {
            let local = shared.channels.get(&*key).map_or(0, |c| c.len());
            if let Err(Unavailable) = write_count(&shared, &key, local).await {
                warn!("redis: presence of {} not written", escaped(&key));
                break;
            }
        }
    }
}

/// Sets this relay's count under `key` in Redis, the roster's index in step.
async fn write_count(shared: &Shared, key: &str, local: usize) -> Result<(), Unavailable> {
    let mut redis = shared.requests.connection()?;
    let mut invocation = keys::on_key(&shared.scripts.count, key);
    invocation.arg(&shared.relay).arg(local);
    let stays = local > 0 || shared.watches.is_watched(key);
    let call = request(invocation.invoke_async::<i64>(&mut redis));
    roster::write_entry(shared, key, stays, call)
        .await
        .map(|_| ())
}
