//! Publishing one message: the engine call and the metrics and log lines that every door
//! (a WebSocket frame, an HTTP publish) shares, so both count and log alike. Warnings go
//! through the caller's `warn`, which applies its log budget (a client can trigger them
//! at will).

use std::fmt::{self, Display};

use log::debug;

use crate::delivery::engine::Engine;
use crate::message::Outgoing;
use crate::observability::log_text::escaped;
use crate::observability::metrics::{DropReason, Metrics};
use crate::protocol::Reply;

/// A sink for warning lines, rate-limited by the caller.
pub type Warn<'a> = dyn FnMut(fmt::Arguments<'_>) + Send + 'a;

/// Publishes `message` to `to` and says what became of it. `from` names the sender in log
/// lines (a connection id, or an HTTP client's address); `warn` logs warnings.
pub async fn publish(
    engine: &dyn Engine,
    metrics: &Metrics,
    from: &(dyn Display + Sync),
    to: &str,
    message: Outgoing,
    warn: &mut Warn<'_>,
) -> Reply {
    metrics.messages_routed.inc();
    let size = message.payload.as_text().len();
    let ephemeral = message.ephemeral;
    let outcome = match engine.publish(to, message).await {
        Ok(outcome) => outcome,
        Err(unavailable) => {
            warn(format_args!(
                "{from}: message to {} dropped ({unavailable})",
                escaped(to)
            ));
            metrics.dropped(DropReason::Unavailable, 1);
            return Reply::Unavailable;
        }
    };
    metrics.messages_delivered.inc_by(outcome.delivered as u64);
    if outcome.overflowed > 0 {
        warn(format_args!(
            "{from}: message to {} not queued for {} slow connection(s)",
            escaped(to),
            outcome.overflowed
        ));
        metrics.dropped(DropReason::SlowConsumer, outcome.overflowed as u64);
    }
    if ephemeral {
        metrics.ephemeral_delivered.inc_by(outcome.delivered as u64);
        if outcome.delivered == 0 {
            // Nobody there is the normal fate of a typing indicator: not worth a warning.
            metrics.ephemeral_dropped.inc();
            debug!(
                "{from}: ephemeral message to {} reached nobody",
                escaped(to)
            );
        }
    } else if outcome.buffered {
        metrics.messages_buffered.inc();
        debug!("{from}: {size} bytes to {} kept as pending", escaped(to));
    } else if outcome.delivered == 0 && outcome.overflowed == 0 {
        warn(format_args!(
            "{from}: message to {} dropped (no_recipient)",
            escaped(to)
        ));
        metrics.dropped(DropReason::NoRecipient, 1);
    } else {
        debug!(
            "{from}: {size} bytes to {} -> {} connection(s)",
            escaped(to),
            outcome.delivered
        );
    }
    Reply::Delivered {
        outcome,
        streams: engine.streams_enabled(),
    }
}
