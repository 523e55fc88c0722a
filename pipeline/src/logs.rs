//! Logging: stderr as text or one JSON object per event (`--log-format`, `KAIABC_LOG_FORMAT`,
//! config key `log.format`), and the most recent events kept in memory for
//! `/v1/diagnostics/logs`: a `tracing` layer beside the stderr one, bounded so a chatty
//! component cannot grow it.

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

/// How stderr logs are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per event: `timestamp`, `level`, `target`, `message` and each of the
    /// event's fields (`request_id`, `node_id`, …) as a key of its own, for Loki and other
    /// aggregators.
    Json,
}

/// The format asked for before the command line is parsed (logging starts first): the last
/// `--log-format X` or `--log-format=X`, else `KAIABC_LOG_FORMAT` (which a config file's
/// `log.format` sets). An unknown value falls back to text here; clap then rejects it.
pub fn format_from(args: &[String]) -> LogFormat {
    use clap::ValueEnum;
    let mut value = std::env::var("KAIABC_LOG_FORMAT").ok();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--log-format" {
            value = it.next().cloned();
        } else if let Some(v) = a.strip_prefix("--log-format=") {
            value = Some(v.to_string());
        }
    }
    value
        .and_then(|v| LogFormat::from_str(&v, true).ok())
        .unwrap_or_default()
}

/// The format `init` installed (text until then).
static FORMAT: OnceLock<LogFormat> = OnceLock::new();

/// Writes a line for the operator on stderr whatever `KAIABC_LOG` says (start-up and stop
/// summaries): as it is in text mode, as one JSON event (level INFO, target `kaiabc`) in JSON
/// mode, so that a log shipper parses every line.
pub fn announce(message: &str) {
    match FORMAT.get().copied().unwrap_or_default() {
        LogFormat::Text => eprintln!("{message}"),
        LogFormat::Json => {
            let line = serde_json::json!({
                "timestamp": kaiabc_schemas::format_timestamp(&Utc::now()),
                "level": "INFO",
                "target": "kaiabc",
                "message": message,
            });
            eprintln!("{line}");
        }
    }
}

/// The JSON stderr layer: one object per event, the event's fields flattened beside
/// `timestamp`, `level`, `target` and `message`.
fn json_layer<S, W>(writer: W) -> impl Layer<S>
where
    S: Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + 'static,
{
    tracing_subscriber::fmt::layer()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_writer(writer)
}

/// Installs the process's subscriber: stderr in `format`, filtered by `KAIABC_LOG` (default
/// `warn`, rustls's handshake notes only as errors), and the ring, which keeps our own info
/// and above and every crate's warnings whatever stderr shows.
pub fn init(format: LogFormat) {
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_from_env("KAIABC_LOG")
        // rustls warns on every handshake whose SNI is an IP address, which MicroPython's
        // TLS sends when a node's mqtt_host is one: not the operator's concern.
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,rustls=error"));
    let _ = FORMAT.set(format);
    subscriber(format, filter).init();
}

/// The process's subscriber: stderr in `format` filtered by `stderr`, and the ring.
fn subscriber(
    format: LogFormat,
    stderr: tracing_subscriber::EnvFilter,
) -> impl Subscriber + Send + Sync + for<'a> tracing_subscriber::registry::LookupSpan<'a> {
    use tracing_subscriber::filter::FilterExt;
    use tracing_subscriber::layer::SubscriberExt;
    // The broker's spans are dropped by each layer's own filter, not by a global one: a global
    // filter function has no level, so the process's maximum level was unknown, `log` records
    // were let through at every level, and each of tungstenite's `trace!` calls (several per
    // WebSocket message) was converted and filtered, about 4 % of a fan-out's server time.
    let without_broker_spans = || {
        tracing_subscriber::filter::filter_fn(|meta| !is_broker_span(meta))
            .with_max_level_hint(tracing_subscriber::filter::LevelFilter::TRACE)
    };
    let stderr_filter = stderr.and(without_broker_spans());
    let stderr = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_filter(stderr_filter)
            .boxed(),
        LogFormat::Json => json_layer(std::io::stderr)
            .with_filter(stderr_filter)
            .boxed(),
    };
    let ring = RingLayer(ring()).with_filter(
        tracing_subscriber::EnvFilter::new(
            "warn,rustls=error,kaiabc=info,kaiabc_connectors=info,kaiabc_operators=info",
        )
        .and(without_broker_spans()),
    );
    tracing_subscriber::registry().with(stderr).with(ring)
}

/// The embedded broker (rumqttd) opens an error-level span for every message it routes, with
/// the topic formatted into it: at `warn` they were all built and closed, about 4 % of the
/// server's time on the Kafka path. Its events (warnings, errors) still reach the logs, without
/// those spans' fields.
fn is_broker_span(meta: &tracing::Metadata<'_>) -> bool {
    meta.is_span() && meta.target().starts_with("rumqttd")
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

    /// Held by each test that installs a subscriber: a callsite's interest is computed once,
    /// from every subscriber alive at the time, so another test's subscriber could enable a
    /// span this test's filters refuse.
    static ONE_SUBSCRIBER: Mutex<()> = Mutex::new(());

    #[test]
    fn the_brokers_spans_are_never_built_and_its_events_still_are() {
        let sub = subscriber(LogFormat::Text, tracing_subscriber::EnvFilter::new("warn"));
        // The most verbose level any layer keeps (the ring's `kaiabc=info`) is known, so `log`
        // records below it are refused before they are converted.
        assert_eq!(
            sub.max_level_hint(),
            Some(tracing_subscriber::filter::LevelFilter::INFO)
        );
        let _one = ONE_SUBSCRIBER.lock().unwrap_or_else(|e| e.into_inner());
        tracing::subscriber::with_default(sub, || {
            let broker = tracing::error_span!(target: "rumqttd::router::routing", "publish");
            assert!(broker.is_disabled());
            let ours = tracing::error_span!(target: "kaiabc::ws", "fan_out");
            assert!(!ours.is_disabled());
            assert!(tracing::enabled!(
                target: "rumqttd::router::routing",
                tracing::Level::ERROR
            ));
        });
    }

    #[test]
    fn the_format_comes_from_the_last_flag_or_the_environment() {
        let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            format_from(&args(&["kaiabc", "run", "--log-format", "json"])),
            LogFormat::Json
        );
        assert_eq!(
            format_from(&args(&[
                "kaiabc",
                "--log-format=json",
                "run",
                "--log-format=text"
            ])),
            LogFormat::Text
        );
    }

    /// A writer the test reads back.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn json_logs_put_each_field_under_its_own_key() {
        let out = Captured::default();
        let w = out.clone();
        let sub = tracing_subscriber::registry().with(json_layer(move || w.clone()));
        let _one = ONE_SUBSCRIBER.lock().unwrap_or_else(|e| e.into_inner());
        tracing::subscriber::with_default(sub, || {
            tracing::warn!(
                request_id = "r-1",
                node_id = "n1",
                code = "X",
                "request failed"
            );
            tracing::info!(n = 3, "second");
        });
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        let first = &lines[0];
        assert_eq!(first["level"], "WARN");
        assert_eq!(first["message"], "request failed");
        assert_eq!(first["request_id"], "r-1");
        assert_eq!(first["node_id"], "n1");
        assert!(first["target"].as_str().unwrap().contains("logs"));
        assert!(kaiabc_schemas::parse_timestamp(first["timestamp"].as_str().unwrap()).is_ok());
        assert_eq!(lines[1]["n"], 3);
    }

    #[test]
    fn the_ring_keeps_the_newest_events_at_or_above_a_level() {
        let ring = Arc::new(LogRing::default());
        let sub = tracing_subscriber::registry().with(RingLayer(Arc::clone(&ring)));
        let _one = ONE_SUBSCRIBER.lock().unwrap_or_else(|e| e.into_inner());
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
