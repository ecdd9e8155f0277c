//! The pub/sub side: one connection per shard (one server is one shard; a Redis Cluster
//! has one per master), each subscribed to the channels of the keys with local interest
//! whose slot that shard owns. Live messages are handed to the keys' subscribers by
//! channel; each shard is probed through its own connection; and after any loss (a
//! connection lost or silent, a slot that moved, a message that could not be queued) the
//! topology is looked up again, every channel subscribed anew and every key's
//! subscribers caught up from the streams.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ::redis::aio::MultiplexedConnection;
use ::redis::{AsyncConnectionConfig, ConnectionInfo, ProtocolVersion, PushInfo, PushKind};
use ::redis::{RedisResult, Value};
use log::{debug, info, warn};
use tokio::sync::mpsc;
use tokio::time::{sleep, timeout, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::channel::Handed;
use super::topology::Topology;
use super::{
    keys, request, unix_ms, Command, Owed, Shared, PROBE_INTERVAL, PROBE_TIMEOUT, REQUEST_TIMEOUT,
    UNSUBSCRIBE_DELAY,
};
use crate::config::redis_url::RedisTarget;
use crate::message::Since;
use crate::observability::log_text::escaped;
use crate::observability::metrics::DropReason;

/// First pause before connecting again after a failure.
const BACKOFF_START: Duration = Duration::from_millis(100);
/// Longest pause between connection attempts.
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// How often idle keys are looked at for their delayed unsubscribe.
const SWEEP_INTERVAL: Duration = Duration::from_millis(500);
/// Channels subscribed with one pipelined request when subscriptions are made anew.
const SUBSCRIBE_BATCH: usize = 256;
/// Messages from the shards' connections waiting for the listener, at most. Past it a
/// message would be lost: the listener subscribes anew and catches every key up instead.
const PUSH_QUEUE: usize = 8192;

/// Why a subscription ended.
enum Lost {
    /// The engine is going away.
    Stopped,
    /// A connection failed or went silent, or the topology changed.
    Failed,
}

/// What each shard's connection hands the listener: the shard's index and the message.
type Push = (usize, PushInfo);

/// Keeps the subscriptions until `stop`: looks up the shards, connects (with backoff),
/// serves, and starts over when anything is lost.
pub(super) async fn run(
    shared: Arc<Shared>,
    target: RedisTarget,
    mut commands: mpsc::Receiver<Command>,
    stop: CancellationToken,
) {
    let mut backoff = BACKOFF_START;
    let mut was_lost = false;
    let mut outage = Outage::new(target.describe());
    // Cluster nodes to ask for the topology: the seeds, then the masters last seen.
    let mut known: Vec<ConnectionInfo> = match &target {
        RedisTarget::Single(node) => vec![node.clone()],
        RedisTarget::Cluster(nodes) => nodes.clone(),
    };
    loop {
        let connected = tokio::select! {
            () = stop.cancelled() => return,
            connected = connect(&shared, &target, &mut known) => connected,
        };
        match connected {
            Ok((links, mut pushes)) => {
                backoff = BACKOFF_START;
                outage.ended();
                let mut session = Session::new(&shared, links);
                match session
                    .serve(&mut pushes, &mut commands, &stop, was_lost)
                    .await
                {
                    Lost::Stopped => return,
                    Lost::Failed => {
                        shared.health.set_connected(false);
                        was_lost = true;
                        warn!("redis: subscription lost; the relay is not ready until it is back");
                        outage.began();
                    }
                }
            }
            Err(error) => outage.failed(&error),
        }
        // Registrations meanwhile fail at once rather than wait.
        let pause = sleep(backoff);
        tokio::pin!(pause);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = &mut pause => break,
                Some(command) = commands.recv() => refuse(command),
            }
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// How often a Redis that stays unreachable is logged again, at most.
const OUTAGE_REMINDER: Duration = Duration::from_secs(30);

/// Says, at WARN, that Redis cannot be reached: at the first failed connect of an outage
/// (at start too, where otherwise only `/readyz` would tell), then every
/// [`OUTAGE_REMINDER`] while it lasts, and at INFO when it is over. The retries between
/// (every 2 s at most) stay at debug.
struct Outage {
    /// Where `--redis` points, without credentials.
    target: String,
    /// When the outage began; `None` while connected.
    since: Option<Instant>,
    /// When it was last logged at WARN.
    warned: Option<Instant>,
}

impl Outage {
    fn new(target: String) -> Self {
        Self {
            target,
            since: Some(Instant::now()),
            warned: None,
        }
    }

    /// A live subscription was lost (the caller logs that).
    fn began(&mut self) {
        let now = Instant::now();
        self.since = Some(now);
        self.warned = Some(now);
    }

    fn failed(&mut self, error: &str) {
        match self.warning(error, Instant::now()) {
            Some(line) => warn!("{line}"),
            None => debug!("redis: cannot connect to {}: {error}", self.target),
        }
    }

    /// The WARN line a failed connect at `now` calls for, if one is due.
    fn warning(&mut self, error: &str, now: Instant) -> Option<String> {
        let since = *self.since.get_or_insert(now);
        if self
            .warned
            .is_some_and(|warned| now.duration_since(warned) < OUTAGE_REMINDER)
        {
            return None;
        }
        self.warned = Some(now);
        let target = &self.target;
        let down = now.duration_since(since);
        Some(if down < OUTAGE_REMINDER {
            format!("redis: cannot connect to {target}: {error}; not ready until it can (retrying)")
        } else {
            format!(
                "redis: still cannot connect to {target} after {}s: {error}; not ready",
                down.as_secs()
            )
        })
    }

    /// Connected again: says how long it took, if the outage was logged.
    fn ended(&mut self) {
        if let (Some(since), Some(_)) = (self.since.take(), self.warned.take()) {
            info!(
                "redis: {} reachable again after {}s",
                self.target,
                since.elapsed().as_secs()
            );
        }
    }
}

fn refuse(command: Command) {
    match command {
        Command::Listen { done, .. } => {
            let _ = done.send(None);
        }
    }
}

/// The shards and a pub/sub connection to each.
struct Links {
    topology: Topology,
    connections: Vec<MultiplexedConnection>,
    /// A message could not be queued for the listener: something was lost.
    overflowed: Arc<AtomicBool>,
}

/// Looks up the topology, makes sure scripts can run, and opens one RESP3 connection
/// (whose push messages come to the returned queue) to each shard.
async fn connect(
    shared: &Shared,
    target: &RedisTarget,
    known: &mut Vec<ConnectionInfo>,
) -> Result<(Links, mpsc::Receiver<Push>), String> {
    let topology = match target {
        RedisTarget::Single(node) => Topology::single(node.clone()),
        RedisTarget::Cluster(seeds) => {
            let topology = resolve(known).await?;
            *known = seeds.clone();
            known.extend(topology.shards.iter().map(|s| s.node.clone()));
            topology
        }
    };
    bounded_as_text(shared.requests.connect()).await?;
    let (sender, pushes) = mpsc::channel(PUSH_QUEUE);
    let overflowed = Arc::new(AtomicBool::new(false));
    let mut connections = Vec::with_capacity(topology.shards.len());
    for (index, shard) in topology.shards.iter().enumerate() {
        let sender = sender.clone();
        let overflow = Arc::clone(&overflowed);
        let forward = move |push: PushInfo| {
            if sender.try_send((index, push)).is_err() {
                overflow.store(true, Ordering::Relaxed);
            }
            Ok::<(), std::convert::Infallible>(())
        };
        let settings = shard
            .node
            .redis_settings()
            .clone()
            .set_protocol(ProtocolVersion::RESP3);
        let client = ::redis::Client::open(shard.node.clone().set_redis_settings(settings))
            .map_err(|e| e.to_string())?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(REQUEST_TIMEOUT))
            .set_response_timeout(Some(REQUEST_TIMEOUT))
            .set_push_sender(forward);
        let connection = client.get_multiplexed_async_connection_with_config(&config);
        connections.push(
            bounded_as_text(connection)
                .await
                .map_err(|e| format!("{}: {e}", shard.name()))?,
        );
    }
    let links = Links {
        topology,
        connections,
        overflowed,
    };
    Ok((links, pushes))
}

/// Asks the known cluster nodes, in turn, which master owns which slots.
async fn resolve(known: &[ConnectionInfo]) -> Result<Topology, String> {
    let mut last_error = String::from("no node to ask");
    for node in known {
        let asked = async {
            let client = ::redis::Client::open(node.clone())?;
            let config = AsyncConnectionConfig::new()
                .set_connection_timeout(Some(REQUEST_TIMEOUT))
                .set_response_timeout(Some(REQUEST_TIMEOUT));
            let mut connection = client
                .get_multiplexed_async_connection_with_config(&config)
                .await?;
            ::redis::cmd("CLUSTER")
                .arg("SLOTS")
                .query_async::<Value>(&mut connection)
                .await
        };
        match bounded_as_text(asked).await {
            Ok(answer) => match Topology::from_cluster_slots(node, &answer) {
                Some(topology) => return Ok(topology),
                None => last_error = "the cluster does not cover every slot".into(),
            },
            Err(error) => last_error = error,
        }
    }
    Err(last_error)
}

/// One set of live subscriptions, one connection per shard.
struct Session<'a> {
    shared: &'a Arc<Shared>,
    links: Links,
    /// Keys whose channel is subscribed.
    subscribed: HashSet<Box<str>>,
    /// Channels this relay unsubscribed whose confirmation has not come back yet (any
    /// other unsubscription is the server's: the slot moved).
    unsubscribing: HashMap<String, u32>,
    /// Each shard's probe channel.
    probes: Vec<String>,
    /// When each shard's probe last came back.
    probed_at: Vec<Instant>,
    /// Each shard has a probe that has not answered yet.
    probe_in_flight: Vec<Arc<AtomicBool>>,
}

impl<'a> Session<'a> {
    fn new(shared: &'a Arc<Shared>, links: Links) -> Self {
        let shards = links.topology.shards.len();
        Self {
            shared,
            probes: links.topology.probe_channels(&shared.relay),
            links,
            subscribed: HashSet::new(),
            unsubscribing: HashMap::new(),
            probed_at: vec![Instant::now(); shards],
            probe_in_flight: (0..shards)
                .map(|_| Arc::new(AtomicBool::new(false)))
                .collect(),
        }
    }

    async fn serve(
        &mut self,
        pushes: &mut mpsc::Receiver<Push>,
        commands: &mut mpsc::Receiver<Command>,
        stop: &CancellationToken,
        was_lost: bool,
    ) -> Lost {
        let shared = self.shared;
        if self.start(was_lost).await.is_err() {
            return Lost::Failed;
        }
        let mut probe = tokio::time::interval(PROBE_INTERVAL);
        probe.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut sweep = tokio::time::interval(SWEEP_INTERVAL);
        sweep.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return Lost::Stopped,
                push = pushes.recv() => match push {
                    Some((shard, push)) => {
                        if self.on_push(shard, push).is_err() {
                            return Lost::Failed;
                        }
                    }
                    None => return Lost::Failed,
                },
                Some(command) = commands.recv() => {
                    if self.on_command(command).await.is_err() {
                        return Lost::Failed;
                    }
                }
                _ = probe.tick() => {
                    if self.links.overflowed.load(Ordering::Relaxed) {
                        warn!(
                            "redis: messages arrived faster than they could be handed on; \
                             subscribing anew"
                        );
                        return Lost::Failed;
                    }
                    if shared.health.silent_for() >= PROBE_TIMEOUT {
                        warn!(
                            "redis: no probe came back for {}s from {} (unreachable, paused, or \
                             a silent subscription); subscribing anew",
                            PROBE_TIMEOUT.as_secs(),
                            self.silent_shards()
                        );
                        return Lost::Failed;
                    }
                    for shard in 0..self.probes.len() {
                        self.send_probe(shard);
                    }
                }
                _ = sweep.tick() => {
                    if self.unsubscribe_idle().await.is_err() {
                        return Lost::Failed;
                    }
                }
                () = shared.roster.lapsed.notified() => return Lost::Failed,
            }
        }
    }

    /// The shards whose probe is overdue, for the log.
    fn silent_shards(&self) -> String {
        let names: Vec<String> = self
            .probed_at
            .iter()
            .zip(&self.links.topology.shards)
            .filter(|(at, _)| at.elapsed() >= PROBE_TIMEOUT)
            .map(|(_, shard)| shard.name())
            .collect();
        names.join(", ")
    }

    /// Subscribes the probe channels and the channels of every key with subscribers
    /// here, each on its shard, then (after a loss) hands each key's subscribers what
    /// they missed.
    async fn start(&mut self, was_lost: bool) -> Result<(), ()> {
        let shared = self.shared;
        let generation = shared.health.generation.fetch_add(1, Ordering::Relaxed) + 1;
        let keys: Vec<Box<str>> = shared
            .channels
            .iter()
            .filter(|c| !c.is_empty())
            .map(|c| c.key().clone())
            .collect();
        // Interest in a key's channel: its subscribers here, or its watchers here.
        let mut interest = keys.clone();
        interest.extend(
            shared
                .watches
                .keys()
                .into_iter()
                .filter(|key| shared.channels.get(key).is_none_or(|c| c.is_empty())),
        );
        let shards = self.links.topology.shards.len();
        let mut by_shard: Vec<Vec<String>> = vec![Vec::new(); shards];
        for (shard, probe) in self.probes.iter().enumerate() {
            by_shard[shard].push(probe.clone());
        }
        for key in &interest {
            let channel = keys::channel(key);
            by_shard[self.links.topology.shard_of(&channel)].push(channel);
        }
        for (shard, channels) in by_shard.iter().enumerate() {
            for batch in channels.chunks(SUBSCRIBE_BATCH) {
                self.subscribe_on(shard, batch).await?;
            }
        }
        self.subscribed.extend(interest);
        // In the roster before any count is written: this relay's counts are its own
        // again (a relay that took it for dead is done dropping them).
        super::roster::join(shared).await.map_err(|_| ())?;
        if was_lost {
            let mut caught_up = 0;
            for key in &keys {
                self.catch_up(key).await?;
                caught_up += 1;
            }
            // No watcher is left with a state from before the loss.
            super::watch::refresh_all(shared).await.map_err(|_| ())?;
            info!(
                "redis: subscribed again on {shards} shard(s) (generation {generation}); \
                 {caught_up} key(s) caught up"
            );
            shared.metrics.cluster_reconnects.inc();
        } else {
            info!("redis: connected ({shards} shard(s))");
        }
        shared.health.probed();
        shared.health.set_connected(true);
        Ok(())
    }

    /// Subscribes `channels` on `shard`'s connection, pipelined, one per command (a
    /// cluster's SSUBSCRIBE takes channels of one slot only), and checks each answer.
    async fn subscribe_on(&mut self, shard: usize, channels: &[String]) -> Result<(), ()> {
        let command = self.links.topology.flavor.subscribe();
        let mut pipe = ::redis::pipe();
        for channel in channels {
            pipe.cmd(command).arg(channel);
        }
        let connection = &mut self.links.connections[shard];
        let answers: Vec<Value> = bounded(pipe.query_async(connection)).await?;
        let confirmed = answers.len() == channels.len()
            && answers
                .iter()
                .zip(channels)
                .all(|(answer, channel)| confirms(answer, channel));
        if !confirmed {
            warn!(
                "redis: {} did not confirm a subscription (the topology changed?)",
                self.links.topology.shards[shard].name()
            );
            return Err(());
        }
        Ok(())
    }

    /// Hands `key`'s subscribers what was published while the subscription was lost:
    /// what the stream holds after the last message they got, or a gap signal when Redis
    /// lost it (a restart, an eviction). Also writes this relay's presence again.
    async fn catch_up(&self, key: &str) -> Result<(), ()> {
        let shared = self.shared;
        let (local, last) = match shared.channels.get(key) {
            Some(channel) => (channel.len(), channel.last.clone()),
            None => return Ok(()),
        };
        let owed = if shared.streams_on() {
            Owed::Since(last.map_or(Since::Earliest, Since::After))
        } else {
            Owed::Nothing
        };
        let handed = shared.hand_over(key, local, &owed).await.map_err(|_| ())?;
        if let Some(mut channel) = shared.channels.get_mut(key) {
            if handed != Handed::default() {
                channel.caught_up_after_reconnect(&handed);
            }
        }
        Ok(())
    }

    /// A push message from `shard`'s connection: a live message, a probe back, or news
    /// that the subscription is no longer whole (`Err`).
    fn on_push(&mut self, shard: usize, push: PushInfo) -> Result<(), ()> {
        match push.kind {
            PushKind::Message | PushKind::SMessage => {
                // [channel, payload]: taken apart here, so the payload is moved, not copied.
                let mut data = push.data.into_iter();
                if let (Some(Value::BulkString(channel)), Some(Value::BulkString(payload))) =
                    (data.next(), data.next())
                {
                    self.on_message(shard, &channel, payload);
                }
                Ok(())
            }
            PushKind::Disconnection => {
                warn!(
                    "redis: the subscription connection to {} closed",
                    self.links.topology.shards[shard].name()
                );
                Err(())
            }
            PushKind::Unsubscribe | PushKind::SUnsubscribe => {
                let Some(Value::BulkString(channel)) = push.data.first() else {
                    return Ok(());
                };
                let channel = String::from_utf8_lossy(channel).into_owned();
                if let Some(pending) = self.unsubscribing.get_mut(&channel) {
                    *pending -= 1;
                    if *pending == 0 {
                        self.unsubscribing.remove(&channel);
                    }
                    return Ok(());
                }
                let ours = self.probes.contains(&channel)
                    || keys::key_of_channel(channel.as_bytes())
                        .is_some_and(|key| self.subscribed.contains(&*key));
                if ours {
                    warn!(
                        "redis: {} dropped the subscription of {} (its slot moved)",
                        self.links.topology.shards[shard].name(),
                        escaped(&channel)
                    );
                    return Err(());
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn on_message(&mut self, shard: usize, channel: &[u8], payload: Vec<u8>) {
        let shared = self.shared;
        if self
            .probes
            .get(shard)
            .is_some_and(|probe| probe.as_bytes() == channel)
        {
            self.probed_at[shard] = Instant::now();
            if let Some(oldest) = self.probed_at.iter().min() {
                shared.health.probed_at(*oldest);
            }
            return;
        }
        let Some(key) = keys::key_of_channel(channel) else {
            return;
        };
        if let Some(event) = keys::decode_presence(&payload) {
            shared.watches.on_event(&key, event, &shared.metrics);
            return;
        }
        let Some(mut channel) = shared.channels.get_mut(&*key) else {
            // Nobody here under the key (any more): only a publisher may be waiting.
            if let Some((_, origin)) = keys::decode_live(payload, None) {
                shared.seen_origin_bytes(&origin);
            }
            return;
        };
        let epoch = channel.last.as_ref().map(|last| &last.epoch);
        let Some((live, origin)) = keys::decode_live(payload, epoch) else {
            drop(channel);
            warn!(
                "redis: unreadable message on the channel of {}",
                escaped(&key)
            );
            return;
        };
        let outcome = channel.deliver(&live, shared.buffer_limit);
        drop(channel);
        if outcome.overflowed > 0 {
            warn!(
                "message to {} not queued for {} slow connection(s)",
                escaped(&key),
                outcome.overflowed
            );
            shared
                .metrics
                .dropped(DropReason::SlowConsumer, outcome.overflowed as u64);
        }
        shared.seen_origin_bytes(&origin);
    }

    async fn on_command(&mut self, command: Command) -> Result<(), ()> {
        match command {
            Command::Listen { key, done } => {
                let shared = self.shared;
                if !self.subscribed.contains(&key) {
                    let channel = keys::channel(&key);
                    let shard = self.links.topology.shard_of(&channel);
                    if self.subscribe_on(shard, &[channel]).await.is_err() {
                        let _ = done.send(None);
                        return Err(());
                    }
                    self.subscribed.insert(key);
                }
                let _ = done.send(Some(shared.health.generation()));
                Ok(())
            }
        }
    }

    /// Publishes a probe on `shard`'s probe channel; [`Session::on_message`] notes its
    /// return. One at a time per shard, so a slow Redis does not pile them up.
    fn send_probe(&self, shard: usize) {
        let in_flight = Arc::clone(&self.probe_in_flight[shard]);
        if in_flight.swap(true, Ordering::Relaxed) {
            return;
        }
        let shared = Arc::clone(self.shared);
        let channel = self.probes[shard].clone();
        let publish = self.links.topology.flavor.publish();
        tokio::spawn(async move {
            let sent = unix_ms();
            let probed = async {
                let mut redis = shared.requests.connection()?;
                let mut invocation = shared.scripts.probe.prepare_invoke();
                invocation.key(channel).arg(publish);
                request(invocation.invoke_async::<i64>(&mut redis)).await
            };
            if let Ok(redis_ms) = probed.await {
                shared.health.clock_read(redis_ms, sent);
            }
            in_flight.store(false, Ordering::Relaxed);
        });
    }

    /// Unsubscribes the channels of keys that have had no subscriber here for
    /// [`UNSUBSCRIBE_DELAY`].
    async fn unsubscribe_idle(&mut self) -> Result<(), ()> {
        let shared = self.shared;
        let due: Vec<Box<str>> = {
            let mut idle = Shared::lock(&shared.idle);
            let now = Instant::now();
            let due: Vec<Box<str>> = idle
                .iter()
                .filter(|(_, since)| now.duration_since(**since) >= UNSUBSCRIBE_DELAY)
                .map(|(key, _)| key.clone())
                .collect();
            for key in &due {
                idle.remove(key);
            }
            due
        };
        for key in due {
            if shared.watches.is_watched(&key) {
                continue;
            }
            let removed = shared.channels.remove_if(&key, |_, c| c.is_empty());
            if removed.is_none() && shared.channels.contains_key(&key) {
                continue;
            }
            if self.subscribed.remove(&key) {
                let channel = keys::channel(&key);
                let shard = self.links.topology.shard_of(&channel);
                *self.unsubscribing.entry(channel.clone()).or_default() += 1;
                let mut command = ::redis::cmd(self.links.topology.flavor.unsubscribe());
                command.arg(&channel);
                let connection = &mut self.links.connections[shard];
                bounded(command.query_async::<Value>(connection)).await?;
                debug!("redis: unsubscribed from {}", escaped(&key));
            }
        }
        Ok(())
    }
}

/// Whether `answer` confirms the subscription of `channel`.
fn confirms(answer: &Value, channel: &str) -> bool {
    match answer {
        Value::Push { kind, data } => {
            matches!(kind, PushKind::Subscribe | PushKind::SSubscribe)
                && matches!(data.first(), Some(Value::BulkString(name)) if name == channel.as_bytes())
        }
        _ => false,
    }
}

/// Awaits a Redis call with [`REQUEST_TIMEOUT`]; failures are logged.
async fn bounded<T>(call: impl std::future::Future<Output = RedisResult<T>>) -> Result<T, ()> {
    bounded_as_text(call).await.map_err(|error| {
        warn!("redis: subscription command failed: {error}");
    })
}

/// Awaits a Redis call with [`REQUEST_TIMEOUT`]; failures as text.
async fn bounded_as_text<T>(
    call: impl std::future::Future<Output = RedisResult<T>>,
) -> Result<T, String> {
    match timeout(REQUEST_TIMEOUT, call).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err("timed out".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_is_warned_at_once_then_reminded_every_thirty_seconds() {
        let start = Instant::now();
        let mut outage = Outage::new("redis://127.0.0.1:6390/0".to_owned());
        outage.since = Some(start);
        let at = |secs: u64| start + Duration::from_secs(secs);
        let first = outage.warning("Connection refused", at(0));
        assert_eq!(
            first.as_deref(),
            Some(
                "redis: cannot connect to redis://127.0.0.1:6390/0: Connection refused; \
                 not ready until it can (retrying)"
            )
        );
        assert_eq!(outage.warning("Connection refused", at(2)), None);
        assert_eq!(outage.warning("Connection refused", at(29)), None);
        let reminder = outage.warning("Connection refused", at(31));
        assert!(
            reminder.as_deref().is_some_and(|line| line
                .starts_with("redis: still cannot connect to redis://127.0.0.1:6390/0 after 31s")),
            "{reminder:?}"
        );
        assert_eq!(outage.warning("Connection refused", at(45)), None);
    }
}
