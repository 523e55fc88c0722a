//! The most recent log events kept in memory for `/v1/diagnostics/logs`: a `tracing` layer
//! beside the stderr one, bounded so a chatty component cannot grow it.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, OnceLock};

use chrono::{DateTime, Utc};
use serde::Serialize;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::Layer;

/// Events kept.
pub const CAPACITY: usize = 2000;

/// One log event.
#[derive(Clone, Debug, Serialize)]
pub struct LogLine {
    /// When it was logged.
    #[serde(serialize_with = "rfc3339")]
    pub timestamp: DateTime<Utc>,
    /// `ERROR` … `TRACE`.
    pub level: String,
    /// The module that logged it.
    pub target: String,
    /// The message.
    pub message: String,
    /// The other fields, `key=value` each.
    pub fields: Vec<String>,
}

fn rfc3339<S: serde::Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&kaiabc_schemas::format_timestamp(t))
}

/// The ring of recent events.
#[derive(Debug, Default)]
pub struct LogRing {
    lines: Mutex<VecDeque<LogLine>>,
}

impl LogRing {
    /// The newest `limit` events at or above `min` (most severe is `ERROR`), oldest first.
    pub fn recent(&self, min: Level, limit: usize) -> Vec<LogLine> {
        let Ok(lines) = self.lines.lock() else {
            return Vec::new();
        };
        let mut out: Vec<LogLine> = lines
            .iter()
            .rev()
            .filter(|l| l.level.parse::<Level>().is_ok_and(|lv| lv <= min))
            .take(limit)
            .cloned()
            .collect();
        out.reverse();
        out
    }

    fn push(&self, line: LogLine) {
        if let Ok(mut lines) = self.lines.lock() {
            if lines.len() >= CAPACITY {
                lines.pop_front();
            }
            lines.push_back(line);
        }
    }
}

/// The process's ring (one per process, like the subscriber it is part of).
pub fn ring() -> Arc<LogRing> {
    static RING: OnceLock<Arc<LogRing>> = OnceLock::new();
    Arc::clone(RING.get_or_init(Arc::default))
}

/// The layer that fills [`ring`].
pub struct RingLayer(pub Arc<LogRing>);

#[derive(Default)]
struct Fields {
    message: String,
    rest: Vec<String>,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            self.rest.push(format!("{}={value:?}", field.name()));
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            self.rest.push(format!("{}={value}", field.name()));
        }
    }
}

impl<S: Subscriber> Layer<S> for RingLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut f = Fields::default();
        event.record(&mut f);
        let meta = event.metadata();
        self.0.push(LogLine {
            timestamp: Utc::now(),
            level: meta.level().to_string(),
            target: meta.target().to_string(),
            message: f.message,
            fields: f.rest,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn the_ring_keeps_the_newest_events_at_or_above_a_level() {
        let ring = Arc::new(LogRing::default());
        let sub = tracing_subscriber::registry().with(RingLayer(Arc::clone(&ring)));
        tracing::subscriber::with_default(sub, || {
            for i in 0..CAPACITY + 5 {
                tracing::info!(n = i, "event {i}");
            }
            tracing::warn!(node = "p1", "slow");
        });
        let all = ring.recent(Level::TRACE, usize::MAX);
        assert_eq!(all.len(), CAPACITY);
        assert_eq!(all.last().unwrap().message, "slow");
        assert_eq!(all.last().unwrap().fields, ["node=p1"]);
        // The oldest were dropped.
        assert_eq!(all[0].message, "event 6");
        let warns = ring.recent(Level::WARN, 10);
        assert_eq!(warns.len(), 1);
        assert_eq!(ring.recent(Level::INFO, 3).len(), 3);
    }
}
