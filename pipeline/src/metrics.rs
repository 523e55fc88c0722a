//! Prometheus metrics of the live pipeline, rendered in the text exposition format (0.0.4) at
//! `/metrics`: readings by node and sensor type, per-reading processing time, connected nodes,
//! dead letters by reason, WebSocket clients, lake commits and checkpoints.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kaiabc_operators::dataflow::{NodeStats, APPLY_SECONDS_BOUNDS};
use kaiabc_schemas::LakeRow;

use crate::dataflow::lake_sink::SinkReport;

/// A node counts as connected while its last reading is younger than this (wall time).
pub const CONNECTED_WITHIN: Duration = Duration::from_secs(300);

/// What one timely worker reports, copied out of the worker every few milliseconds.
#[derive(Clone, Debug, Default)]
pub struct WorkerFigures {
    /// The per-node operator's counters and processing-time histogram.
    pub nodes: NodeStats,
    /// Lake commits, checkpoints and barriers.
    pub commits: u64,
    /// Files and rows committed.
    pub files: u64,
    /// Rows committed.
    pub rows: u64,
    /// Node checkpoints saved.
    pub checkpoints: u64,
}

impl WorkerFigures {
    /// The figures of a worker's operator and sink.
    pub fn of(nodes: &NodeStats, sink: &SinkReport) -> Self {
        Self {
            nodes: *nodes,
            commits: sink.commits,
            files: sink.committed.files as u64,
            rows: sink.committed.rows as u64,
            checkpoints: sink.checkpoints.1,
        }
    }
}

/// The pipeline's metrics.
#[derive(Debug)]
pub struct Metrics {
    /// HTTP answers (see [`Metrics::http_answered`]).
    http: HttpCounters,
    started: Instant,
    /// Readings by node, then by sensor type (sorted): counting a reading of a known node and
    /// sensor type allocates nothing.
    readings: Mutex<BTreeMap<String, Vec<(String, u64)>>>,
    last_seen: Mutex<BTreeMap<String, Instant>>,
    status: Mutex<BTreeMap<String, bool>>,
    dead_letters: Mutex<BTreeMap<String, u64>>,
    /// Events received from sources (MQTT messages, HTTP requests).
    pub events_in: AtomicU64,
    workers: Mutex<Vec<WorkerFigures>>,
    kafka: Mutex<KafkaFigures>,
    /// librdkafka's per-partition consumer lag, once the Kafka source runs.
    pub kafka_lag: std::sync::OnceLock<Arc<Mutex<BTreeMap<i32, i64>>>>,
    /// The Kafka producer, for its delivery counts.
    pub kafka_producer: std::sync::OnceLock<kaiabc_connectors::kafka::KafkaProducer>,
    /// The write-ahead log's writer, once the embedded path runs.
    pub wal: std::sync::OnceLock<kaiabc_connectors::wal::WalWriter>,
    /// The write-ahead log's committed offset and its commits.
    wal_committed: Mutex<(u64, u64)>,
}

/// Counters of HTTP answers.
#[derive(Debug, Default)]
struct HttpCounters {
    requests: AtomicU64,
    errors: AtomicU64,
    micros: AtomicU64,
}

/// Offsets the pipeline committed to its consumer group.
#[derive(Debug, Default)]
struct KafkaFigures {
    commits: u64,
    offsets: BTreeMap<i32, i64>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            http: HttpCounters::default(),
            started: Instant::now(),
            readings: Mutex::default(),
            last_seen: Mutex::default(),
            status: Mutex::default(),
            dead_letters: Mutex::default(),
            events_in: AtomicU64::new(0),
            workers: Mutex::default(),
            kafka: Mutex::default(),
            kafka_lag: std::sync::OnceLock::new(),
            kafka_producer: std::sync::OnceLock::new(),
            wal: std::sync::OnceLock::new(),
            wal_committed: Mutex::default(),
        }
    }
}

/// Escapes a label value (backslash, double quote, newline).
pub fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Writes a metric's HELP and TYPE lines.
pub fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// One node's latest state and link status, for the per-node gauges.
pub struct NodeGauge<'a> {
    /// The node's latest state.
    pub state: &'a kaiabc_schemas::OscillatorState,
    /// Whether it is online (`None`: never reported a status or a recent reading).
    pub online: Option<bool>,
}

/// The per-node gauges (clock state, output, link), so Prometheus and Grafana can chart each
/// node's clock over days without reading the lake.
pub fn render_node_gauges(out: &mut String, nodes: &[NodeGauge<'_>]) {
    type Pick = fn(&NodeGauge<'_>) -> Option<f64>;
    let gauges: [(&str, &str, Pick); 8] = [
        (
            "kaiabc_node_koa",
            "The node's KOA output activity (0-1).",
            |g| Some(g.state.koa_metric),
        ),
        (
            "kaiabc_node_circadian_time_seconds",
            "The node's circadian time (0-86400 s: CT 0-24 h in Prometheus's base unit).",
            |g| Some(g.state.circadian_time * 3600.0),
        ),
        ("kaiabc_node_phase", "The node's clock phase (0-1).", |g| {
            Some(g.state.phase)
        }),
        (
            "kaiabc_node_period_seconds",
            "The node's estimated period.",
            |g| Some(g.state.period_hours * 3600.0),
        ),
        (
            "kaiabc_node_pwm_duty",
            "The PWM duty sent to the node (0-255).",
            |g| Some(f64::from(g.state.output_pwm)),
        ),
        (
            "kaiabc_node_temperature_kelvin",
            "The node's filtered temperature.",
            |g| Some(g.state.temperature_kelvin),
        ),
        (
            "kaiabc_node_last_reading_timestamp_seconds",
            "Event time of the node's latest applied reading (Unix seconds).",
            |g| Some(g.state.timestamp.timestamp_millis() as f64 / 1000.0),
        ),
        (
            "kaiabc_node_online",
            "1 if the node is online (MQTT status or a recent reading).",
            |g| g.online.map(|o| if o { 1.0 } else { 0.0 }),
        ),
    ];
    for (name, help, pick) in gauges {
        header(out, name, "gauge", help);
        for g in nodes {
            if let Some(v) = pick(g) {
                let _ = writeln!(out, "{name}{{node_id=\"{}\"}} {v}", label(&g.state.node_id));
            }
        }
    }
}

impl Metrics {
    /// Counts what a lake row says: an accepted reading, or a dead letter.
    pub fn observe(&self, row: &LakeRow) {
        match row {
            LakeRow::Reading(r) => {
                let (node, sensor) = (&r.reading.node_id, &r.reading.sensor_type);
                if let Ok(mut m) = self.readings.lock() {
                    let by_sensor = match m.get_mut(node) {
                        Some(v) => v,
                        None => m.entry(node.clone()).or_default(),
                    };
                    match by_sensor.binary_search_by(|(s, _)| s.as_str().cmp(sensor)) {
                        Ok(i) => by_sensor[i].1 += 1,
                        Err(i) => by_sensor.insert(i, (sensor.clone(), 1)),
                    }
                }
                let now = Instant::now();
                if let Ok(mut m) = self.last_seen.lock() {
                    match m.get_mut(node) {
                        Some(t) => *t = now,
                        None => {
                            m.insert(node.clone(), now);
                        }
                    }
                }
            }
            LakeRow::DeadLetter(d) => {
                if let Ok(mut m) = self.dead_letters.lock() {
                    *m.entry(d.reason.code().to_string()).or_default() += 1;
                }
            }
            _ => {}
        }
    }

    /// Stores worker `index`'s latest figures.
    pub fn set_worker(&self, index: usize, figures: WorkerFigures) {
        if let Ok(mut w) = self.workers.lock() {
            if w.len() <= index {
                w.resize(index + 1, WorkerFigures::default());
            }
            w[index] = figures;
        }
    }

    /// Records a position commit of the live source.
    pub fn source_committed(&self, at: &crate::dataflow::source::Position) {
        match at {
            crate::dataflow::source::Position::Kafka(offsets) => {
                if let Ok(mut k) = self.kafka.lock() {
                    k.commits += 1;
                    k.offsets.extend(offsets);
                }
            }
            crate::dataflow::source::Position::Log(offset) => {
                if let Ok(mut w) = self.wal_committed.lock() {
                    *w = (*offset, w.1 + 1);
                }
            }
        }
    }

    fn render_wal(&self, out: &mut String) {
        let Some(w) = self.wal.get() else {
            return;
        };
        let (committed, commits) = self.wal_committed.lock().map(|c| *c).unwrap_or_default();
        let gauges: [(&str, &str, &str, u64); 6] = [
            (
                "kaiabc_wal_durable_offset",
                "gauge",
                "Offsets of the write-ahead log below this are on disk (and acknowledged).",
                w.durable(),
            ),
            (
                "kaiabc_wal_committed_offset",
                "gauge",
                "The write-ahead log's committed offset: a restart reads again from here.",
                committed,
            ),
            (
                "kaiabc_wal_commits_total",
                "counter",
                "Checkpoints that committed the write-ahead log's offset.",
                commits,
            ),
            (
                "kaiabc_wal_syncs_total",
                "counter",
                "Groups of records written with one fdatasync each.",
                w.syncs(),
            ),
            (
                "kaiabc_wal_bytes",
                "gauge",
                "Bytes of write-ahead log segments on disk.",
                w.disk_bytes(),
            ),
            (
                "kaiabc_wal_segments",
                "gauge",
                "Write-ahead log segments on disk.",
                w.segments() as u64,
            ),
        ];
        for (name, kind, help, v) in gauges {
            header(out, name, kind, help);
            let _ = writeln!(out, "{name} {v}");
        }
    }

    fn render_kafka(&self, out: &mut String) {
        if let Some(lag) = self.kafka_lag.get() {
            header(
                out,
                "kaiabc_kafka_consumer_lag",
                "gauge",
                "Records of kaiabc.readings not yet consumed, by partition (librdkafka's \
                 statistics, refreshed every second).",
            );
            if let Ok(l) = lag.lock() {
                for (p, n) in l.iter() {
                    let _ = writeln!(out, "kaiabc_kafka_consumer_lag{{partition=\"{p}\"}} {n}");
                }
            }
            if let Ok(k) = self.kafka.lock() {
                header(
                    out,
                    "kaiabc_kafka_offset_commits_total",
                    "counter",
                    "Offset commits of the pipeline's consumer group (each after a checkpoint).",
                );
                let _ = writeln!(out, "kaiabc_kafka_offset_commits_total {}", k.commits);
                header(
                    out,
                    "kaiabc_kafka_committed_offset",
                    "gauge",
                    "The committed offset of kaiabc.readings, by partition.",
                );
                for (p, o) in &k.offsets {
                    let _ = writeln!(
                        out,
                        "kaiabc_kafka_committed_offset{{partition=\"{p}\"}} {o}"
                    );
                }
            }
        }
        if let Some(p) = self.kafka_producer.get() {
            header(
                out,
                "kaiabc_kafka_produced_total",
                "counter",
                "Records the Kafka producer delivered (outcome=ok) or gave up on (outcome=failed).",
            );
            let _ = writeln!(
                out,
                "kaiabc_kafka_produced_total{{outcome=\"ok\"}} {}",
                p.delivered()
            );
            let _ = writeln!(
                out,
                "kaiabc_kafka_produced_total{{outcome=\"failed\"}} {}",
                p.failed()
            );
        }
    }

    /// Records a node's MQTT status message (`online`, or its Last Will `offline`).
    pub fn set_status(&self, node: &str, payload: &[u8]) {
        let online = payload.trim_ascii().eq_ignore_ascii_case(b"online");
        if let Ok(mut m) = self.status.lock() {
            m.insert(node.to_string(), online);
        }
    }

    /// A node's status: its last status message, else whether it sent a reading within
    /// [`CONNECTED_WITHIN`]; `None` if it never reported.
    pub fn node_online(&self, node: &str) -> Option<bool> {
        if let Some(&s) = self.status.lock().ok()?.get(node) {
            return Some(s);
        }
        let seen = self.last_seen.lock().ok()?;
        seen.get(node).map(|t| t.elapsed() < CONNECTED_WITHIN)
    }

    /// Nodes online: by their status messages, or (for nodes that send none) a reading within
    /// [`CONNECTED_WITHIN`].
    pub fn connected_nodes(&self) -> usize {
        let (Ok(status), Ok(seen)) = (self.status.lock(), self.last_seen.lock()) else {
            return 0;
        };
        let by_status = status.values().filter(|&&on| on).count();
        let by_readings = seen
            .iter()
            .filter(|(n, t)| !status.contains_key(*n) && t.elapsed() < CONNECTED_WITHIN)
            .count();
        by_status + by_readings
    }

    /// The sum of every worker's figures.
    pub fn totals(&self) -> WorkerFigures {
        let mut t = WorkerFigures::default();
        if let Ok(w) = self.workers.lock() {
            for f in w.iter() {
                t.nodes.applied += f.nodes.applied;
                t.nodes.late += f.nodes.late;
                t.nodes.duplicates += f.nodes.duplicates;
                t.nodes.nodes += f.nodes.nodes;
                t.nodes.restored += f.nodes.restored;
                t.nodes.clock_failures += f.nodes.clock_failures;
                t.nodes.filter_failures += f.nodes.filter_failures;
                t.nodes.apply_seconds.merge(&f.nodes.apply_seconds);
                t.commits += f.commits;
                t.files += f.files;
                t.rows += f.rows;
                t.checkpoints += f.checkpoints;
            }
        }
        t
    }

    /// The solver's measured figures (the API's `performance_metrics`): clock advances (one
    /// per applied reading, each an adaptive integration to the reading's time) per second
    /// since start, the mean time to apply a reading (filter, clock, windows), and the share
    /// of readings whose filter and integration succeeded.
    pub fn solver_figures(&self) -> serde_json::Value {
        let t = self.totals();
        let up = self.uptime().as_secs_f64();
        let h = &t.nodes.apply_seconds;
        let n = h.count();
        let applied = t.nodes.applied;
        let failed = t.nodes.clock_failures + t.nodes.filter_failures;
        serde_json::json!({
            "average_steps_per_second": if up > 0.0 { applied as f64 / up } else { 0.0 },
            "average_iteration_time_ms": if n > 0 { h.sum_seconds / n as f64 * 1e3 } else { 0.0 },
            "stability_index": if applied + failed > 0 {
                applied as f64 / (applied + failed) as f64
            } else {
                1.0
            },
            "readings_applied": applied,
            "integration_failures": t.nodes.clock_failures,
            "filter_failures": t.nodes.filter_failures,
        })
    }

    /// An HTTP answer given: its status and how long the request took.
    pub fn http_answered(&self, status: u16, elapsed: Duration) {
        use std::sync::atomic::Ordering::Relaxed;
        self.http.requests.fetch_add(1, Relaxed);
        if status >= 400 {
            self.http.errors.fetch_add(1, Relaxed);
        }
        self.http
            .micros
            .fetch_add(elapsed.as_micros() as u64, Relaxed);
    }

    /// HTTP requests answered, of them errors (4xx and 5xx), and their total time (µs).
    pub fn http_figures(&self) -> (u64, u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (
            self.http.requests.load(Relaxed),
            self.http.errors.load(Relaxed),
            self.http.micros.load(Relaxed),
        )
    }

    /// Seconds since the pipeline started.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// The exposition text. `ws_clients` and `ws_resyncs` come from the WebSocket hub.
    pub fn render(&self, ws_clients: u64, ws_resyncs: u64) -> String {
        let mut out = String::with_capacity(4096);
        let t = self.totals();
        header(
            &mut out,
            "kaiabc_sensor_readings_total",
            "counter",
            "Readings accepted into the dataflow, by node and sensor type.",
        );
        if let Ok(m) = self.readings.lock() {
            for (node, sensor, n) in m
                .iter()
                .flat_map(|(node, v)| v.iter().map(move |(s, n)| (node, s, n)))
            {
                let _ = writeln!(
                    out,
                    "kaiabc_sensor_readings_total{{node_id=\"{}\",sensor_type=\"{}\"}} {n}",
                    label(node),
                    label(sensor)
                );
            }
        }
        header(
            &mut out,
            "kaiabc_ode_solver_seconds",
            "histogram",
            "Time to apply one reading to its node: Kalman filter and ODE step.",
        );
        let h = &t.nodes.apply_seconds;
        let mut cumulative = 0u64;
        for (i, bound) in APPLY_SECONDS_BOUNDS.iter().enumerate() {
            cumulative += h.counts[i];
            let _ = writeln!(
                out,
                "kaiabc_ode_solver_seconds_bucket{{le=\"{bound:e}\"}} {cumulative}"
            );
        }
        cumulative += h.counts[APPLY_SECONDS_BOUNDS.len()];
        let _ = writeln!(
            out,
            "kaiabc_ode_solver_seconds_bucket{{le=\"+Inf\"}} {cumulative}"
        );
        let _ = writeln!(out, "kaiabc_ode_solver_seconds_sum {}", h.sum_seconds);
        let _ = writeln!(out, "kaiabc_ode_solver_seconds_count {cumulative}");
        header(
            &mut out,
            "kaiabc_connected_nodes",
            "gauge",
            "Nodes online: by their MQTT status (Last Will), else a reading in the last 5 minutes.",
        );
        let _ = writeln!(out, "kaiabc_connected_nodes {}", self.connected_nodes());
        header(
            &mut out,
            "kaiabc_dead_letters_total",
            "counter",
            "Events rejected into the dead letters, by reason.",
        );
        if let Ok(m) = self.dead_letters.lock() {
            for (reason, n) in m.iter() {
                let _ = writeln!(
                    out,
                    "kaiabc_dead_letters_total{{reason=\"{}\"}} {n}",
                    label(reason)
                );
            }
        }
        let simple: [(&str, &str, &str, u64); 9] = [
            (
                "kaiabc_events_received_total",
                "counter",
                "Messages received from the sources (one may hold several readings).",
                self.events_in.load(Ordering::Relaxed),
            ),
            (
                "kaiabc_readings_applied_total",
                "counter",
                "Readings applied to a clock.",
                t.nodes.applied,
            ),
            (
                "kaiabc_readings_late_total",
                "counter",
                "Readings kept but older than their node's last one (not applied).",
                t.nodes.late,
            ),
            (
                "kaiabc_websocket_clients",
                "gauge",
                "Connected WebSocket clients.",
                ws_clients,
            ),
            (
                "kaiabc_websocket_resyncs_total",
                "counter",
                "Snapshots sent to WebSocket clients that fell behind.",
                ws_resyncs,
            ),
            (
                "kaiabc_parquet_commits_total",
                "counter",
                "Lake commits (every worker's).",
                t.commits,
            ),
            (
                "kaiabc_parquet_files_committed_total",
                "counter",
                "Parquet files committed to the lake.",
                t.files,
            ),
            (
                "kaiabc_parquet_rows_committed_total",
                "counter",
                "Rows committed to the lake.",
                t.rows,
            ),
            (
                "kaiabc_node_checkpoints_saved_total",
                "counter",
                "Per-node checkpoints saved beside the lake.",
                t.checkpoints,
            ),
        ];
        for (name, kind, help, v) in simple {
            header(&mut out, name, kind, help);
            let _ = writeln!(out, "{name} {v}");
        }
        header(
            &mut out,
            "kaiabc_uptime_seconds",
            "gauge",
            "Seconds since the pipeline started.",
        );
        let _ = writeln!(out, "kaiabc_uptime_seconds {}", self.uptime().as_secs_f64());
        self.render_kafka(&mut out);
        self.render_wal(&mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_end_at_the_count() {
        let m = Metrics::default();
        let mut nodes = NodeStats::default();
        for s in [2e-6, 5e-5, 5e-5, 0.2, 30.0] {
            nodes.apply_seconds.observe(s);
        }
        m.set_worker(
            1,
            WorkerFigures {
                nodes,
                ..WorkerFigures::default()
            },
        );
        let text = m.render(0, 0);
        let buckets: Vec<u64> = text
            .lines()
            .filter(|l| l.starts_with("kaiabc_ode_solver_seconds_bucket"))
            .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
            .collect();
        assert!(buckets.windows(2).all(|w| w[0] <= w[1]), "{buckets:?}");
        assert_eq!(*buckets.last().unwrap(), 5);
        assert!(
            text.contains("kaiabc_ode_solver_seconds_count 5\n"),
            "{text}"
        );
        assert_eq!(buckets[0], 1, "2 µs is in the first bucket: {text}");
    }

    #[test]
    fn readings_are_counted_by_node_and_sensor_type_in_order() {
        let m = Metrics::default();
        let row = |node: &str, sensor: &str| {
            let r: kaiabc_schemas::ReadingRow = serde_json::from_value(serde_json::json!({
                "node_id": node, "timestamp": "2026-01-05T10:00:00Z", "seq": 1,
                "temperature_kelvin": 300.0, "sensor_type": sensor, "quality": "good",
                "filtered_temperature_kelvin": null, "kalman_variance": null, "late": false
            }))
            .unwrap();
            LakeRow::Reading(r)
        };
        for (node, sensor) in [
            ("b", "BME280"),
            ("a", "X"),
            ("a", "BME280"),
            ("a", "BME280"),
        ] {
            m.observe(&row(node, sensor));
        }
        let text = m.render(0, 0);
        let counted: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("kaiabc_sensor_readings_total{"))
            .collect();
        assert_eq!(
            counted,
            [
                r#"kaiabc_sensor_readings_total{node_id="a",sensor_type="BME280"} 2"#,
                r#"kaiabc_sensor_readings_total{node_id="a",sensor_type="X"} 1"#,
                r#"kaiabc_sensor_readings_total{node_id="b",sensor_type="BME280"} 1"#,
            ]
        );
        assert_eq!(
            m.node_online("a"),
            Some(true),
            "a reading marks its node seen"
        );
    }
}
