//! The pub/sub side: one connection subscribed to the channels of the keys with local
//! subscribers, which hands each live message to them, probes itself, and after any
//! loss makes the subscription anew and catches every key's subscribers up.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ::redis::aio::{PubSubSink, PubSubStream};
use futures_util::StreamExt;
use log::{debug, info, warn};
use tokio::sync::mpsc;
use tokio::time::{sleep, timeout, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::channel::Handed;
use super::{
    keys, request, unix_ms, Command, Owed, Shared, PROBE_INTERVAL, PROBE_TIMEOUT, REQUEST_TIMEOUT,
    UNSUBSCRIBE_DELAY,
};
use crate::engine::Since;
use crate::log_text::escaped;
use crate::metrics::DropReason;

/// First pause before connecting again after a failure.
const BACKOFF_START: Duration = Duration::from_millis(100);
/// Longest pause between connection attempts.
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// How often idle keys are looked at for their delayed unsubscribe.
const SWEEP_INTERVAL: Duration = Duration::from_millis(500);
/// Channels subscribed with one command when a subscription is made anew.
const SUBSCRIBE_BATCH: usize = 256;

/// Why a subscription ended.
enum Lost {
    /// The engine is going away.
    Stopped,
    /// The connection failed or went silent.
    Failed,
}

/// Keeps a subscription until `stop`: connects (with backoff), serves, and starts over
/// when the subscription is lost.
pub(super) async fn run(
    shared: Arc<Shared>,
    client: ::redis::Client,
    mut commands: mpsc::Receiver<Command>,
    stop: CancellationToken,
) {
    let mut backoff = BACKOFF_START;
    let mut was_lost = false;
    loop {
        let connected = tokio::select! {
            () = stop.cancelled() => return,
            connected = timeout(REQUEST_TIMEOUT, client.get_async_pubsub()) => connected,
        };
        match connected {
            Ok(Ok(pubsub)) => {
                backoff = BACKOFF_START;
                let (sink, stream) = pubsub.split();
                let mut session = Session {
                    shared: &shared,
                    sink,
                    subscribed: HashSet::new(),
                    probe: keys::probe_channel(&shared.relay),
                    probe_in_flight: Arc::new(AtomicBool::new(false)),
                };
                match session.serve(stream, &mut commands, &stop, was_lost).await {
                    Lost::Stopped => return,
                    Lost::Failed => {
                        shared.health.set_connected(false);
                        was_lost = true;
                        warn!("redis: subscription lost; the relay is not ready until it is back");
                    }
                }
            }
            Ok(Err(error)) => debug!("redis: cannot connect: {error}"),
            Err(_) => debug!("redis: connecting timed out"),
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

fn refuse(command: Command) {
    match command {
        Command::Listen { done, .. } => {
            let _ = done.send(None);
        }
    }
}

/// One live subscription.
struct Session<'a> {
    shared: &'a Arc<Shared>,
    sink: PubSubSink,
    /// Keys whose channel is subscribed.
    subscribed: HashSet<Box<str>>,
    /// This relay's probe channel.
    probe: String,
    /// A probe publish has not answered yet.
    probe_in_flight: Arc<AtomicBool>,
}

impl Session<'_> {
    async fn serve(
        &mut self,
        mut stream: PubSubStream,
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
                message = stream.next() => match message {
                    Some(message) => self.on_message(&message),
                    None => {
                        warn!("redis: the subscription connection closed");
                        return Lost::Failed;
                    }
                },
                Some(command) = commands.recv() => {
                    if self.on_command(command).await.is_err() {
                        return Lost::Failed;
                    }
                }
                _ = probe.tick() => {
                    if shared.health.silent_for() >= PROBE_TIMEOUT {
                        warn!(
                            "redis: no probe came back for {}s (unreachable, paused, or a silent \
                             subscription); subscribing anew",
                            PROBE_TIMEOUT.as_secs()
                        );
                        return Lost::Failed;
                    }
                    self.send_probe();
                }
                _ = sweep.tick() => {
                    if self.unsubscribe_idle().await.is_err() {
                        return Lost::Failed;
                    }
                }
            }
        }
    }

    /// Subscribes the probe channel and the channels of every key with subscribers here,
    /// then (after a loss) hands each key's subscribers what they missed.
    async fn start(&mut self, was_lost: bool) -> Result<(), ()> {
        let shared = self.shared;
        let generation = shared.health.generation.fetch_add(1, Ordering::Relaxed) + 1;
        bounded(self.sink.subscribe(&self.probe)).await?;
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
        for batch in interest.chunks(SUBSCRIBE_BATCH) {
            let channels: Vec<String> = batch.iter().map(|k| keys::channel(k)).collect();
            bounded(self.sink.subscribe(&channels)).await?;
            self.subscribed.extend(batch.iter().cloned());
        }
        if was_lost {
            let mut caught_up = 0;
            for key in &keys {
                self.catch_up(key).await?;
                caught_up += 1;
            }
            // No watcher is left with a state from before the loss.
            super::watch::refresh_all(shared, true)
                .await
                .map_err(|_| ())?;
            info!(
                "redis: subscribed again (generation {generation}); {caught_up} key(s) caught up"
            );
            shared.metrics.cluster_reconnects.inc();
        } else {
            info!("redis: connected");
        }
        shared.health.probed();
        shared.health.set_connected(true);
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

    fn on_message(&self, message: &::redis::Msg) {
        let shared = self.shared;
        let name = message.get_channel_name();
        if name == self.probe {
            shared.health.probed();
            return;
        }
        let Some(key) = keys::key_of_channel(name.as_bytes()) else {
            return;
        };
        if let Some(event) = keys::decode_presence(message.get_payload_bytes()) {
            shared.watches.on_event(key, event, &shared.metrics);
            return;
        }
        let Some((live, origin)) = keys::decode_live(message.get_payload_bytes()) else {
            warn!(
                "redis: unreadable message on the channel of {}",
                escaped(key)
            );
            return;
        };
        let outcome = match shared.channels.get_mut(key) {
            Some(mut channel) => channel.deliver(&live, shared.buffer_limit),
            None => Default::default(),
        };
        if outcome.overflowed > 0 {
            warn!(
                "message to {} not queued for {} slow connection(s)",
                escaped(key),
                outcome.overflowed
            );
            shared
                .metrics
                .dropped(DropReason::SlowConsumer, outcome.overflowed as u64);
        }
        if !origin.is_empty() {
            shared.seen_origin(origin);
        }
    }

    async fn on_command(&mut self, command: Command) -> Result<(), ()> {
        match command {
            Command::Listen { key, done } => {
                let shared = self.shared;
                if !self.subscribed.contains(&key) {
                    if bounded(self.sink.subscribe(keys::channel(&key)))
                        .await
                        .is_err()
                    {
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

    /// Publishes a probe on this relay's own channel; [`Session::on_message`] notes its
    /// return. One at a time, so a slow Redis does not pile them up.
    fn send_probe(&self) {
        if self.probe_in_flight.swap(true, Ordering::Relaxed) {
            return;
        }
        let shared = Arc::clone(self.shared);
        let channel = self.probe.clone();
        let in_flight = Arc::clone(&self.probe_in_flight);
        tokio::spawn(async move {
            let mut redis = shared.redis.clone();
            let sent = unix_ms();
            let mut invocation = shared.scripts.probe.prepare_invoke();
            invocation.arg(channel);
            if let Ok(redis_ms) = request(invocation.invoke_async::<i64>(&mut redis)).await {
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
                bounded(self.sink.unsubscribe(keys::channel(&key))).await?;
                debug!("redis: unsubscribed from {}", escaped(&key));
            }
        }
        Ok(())
    }
}

/// Awaits a subscription command with [`REQUEST_TIMEOUT`].
async fn bounded(
    call: impl std::future::Future<Output = ::redis::RedisResult<()>>,
) -> Result<(), ()> {
    match timeout(REQUEST_TIMEOUT, call).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => {
            warn!("redis: subscription command failed: {error}");
            Err(())
        }
        Err(_) => {
            warn!("redis: subscription command timed out");
            Err(())
        }
    }
}
