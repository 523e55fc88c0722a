//! The live source's event-time stamper: splits each inbound message into its records, stamps
//! each with its minute of event time (or the watermark, if that is later), notes the node it
//! routes to and a sender mismatch, and keeps the watermark (newest event time read − the
//! allowed lateness).

use std::time::Duration;

use chrono::DateTime;
use kaiabc_connectors::file::LineParser;
use kaiabc_operators::dataflow::node_hash;
use kaiabc_schemas::{parse_timestamp, Reason, Rejection};

use super::inbound::Inbound;
use super::parse::Incoming;
use super::tick_of;

/// How close (ticks) to the wall clock a stream's watermark must be for event time to follow
/// the wall clock through a silence: an hour.
pub const LIVE_WITHIN: u64 = 60;

/// Stamps records in arrival order, in runs of one tick: a command and the readings around it
/// must reach their node in the order they came in.
#[derive(Debug)]
pub struct Stamper {
    lateness_micros: i64,
    max_seen: Option<i64>,
    watermark: u64,
    ordinal: u64,
    pending: Vec<(u64, Vec<Incoming>)>,
    /// One of several sources (a cluster): with nothing read, event time follows the wall
    /// clock, so that a source whose partitions are silent does not hold back the others'.
    one_of_several: bool,
}

impl Stamper {
    /// A stamper allowing `lateness` of event time.
    pub fn new(lateness: Duration) -> Self {
        Self {
            lateness_micros: lateness.as_micros() as i64,
            max_seen: None,
            watermark: 0,
            ordinal: 0,
            pending: Vec::new(),
            one_of_several: false,
        }
    }

    /// A stamper for one of several sources (see `one_of_several`).
    pub fn one_of_several(mut self, yes: bool) -> Self {
        self.one_of_several = yes;
        self
    }

    /// Queues the markers of checkpoint round `epoch`, one for each of `workers`, after every
    /// record stamped so far.
    pub fn markers(&mut self, epoch: u64, workers: usize) {
        let tick = self.watermark;
        let now = chrono::Utc::now();
        let markers = (0..workers as u64).map(|w| Incoming {
            route: w,
            ordinal: self.ordinal,
            file: 0,
            line: 0,
            received_at: now,
            source: None,
            payload: Vec::new(),
            parsed: None,
            marker: Some(epoch),
        });
        self.pending.push((tick, markers.collect()));
    }

    /// The watermark tick: every record from now on is stamped at it or later.
    pub fn watermark(&self) -> u64 {
        self.watermark
    }

    /// Stamps the records of `msg`.
    pub fn stamp(&mut self, msg: &Inbound) {
        for record in records_of(msg) {
            self.ordinal += 1;
            let (route, t, parsed) = route_and_time(msg, &record);
            let tick = match t {
                Some(t) => {
                    self.max_seen = Some(self.max_seen.map_or(t, |m| m.max(t)));
                    tick_of(t).max(self.watermark)
                }
                None => self.watermark,
            };
            if self.pending.last().is_none_or(|(t, _)| *t != tick) {
                self.pending.push((tick, Vec::new()));
            }
            let run = &mut self.pending.last_mut().expect("pushed above").1;
            run.push(Incoming {
                route: route.unwrap_or(self.ordinal),
                ordinal: self.ordinal,
                file: 0,
                line: 0,
                received_at: msg.received_at,
                source: Some(msg.source.clone()),
                payload: record,
                parsed: parsed.map(|r| Box::new(Err(r))),
                marker: None,
            });
        }
    }

    /// Lets event time follow the wall clock through a silence, when the stream is live: its
    /// watermark within [`LIVE_WITHIN`] of `now` less the lateness. A fleet that stops sending
    /// entirely then still turns stale and offline, and its alerts are raised. A stream of old
    /// readings (a backfill, a test's fixed dates) keeps pure event time. Returns whether the
    /// watermark moved.
    pub fn follow_wall_clock(&mut self, now_micros: i64) -> bool {
        let wall = tick_of(now_micros - self.lateness_micros);
        let live = match self.max_seen {
            Some(_) => wall.saturating_sub(self.watermark) <= LIVE_WITHIN,
            None => self.one_of_several,
        };
        if wall > self.watermark && live {
            self.watermark = wall;
            return true;
        }
        false
    }

    /// Moves the watermark up to the newest event time read, less the lateness, and hands out
    /// the stamped runs, oldest first.
    pub fn drain(&mut self) -> std::vec::Drain<'_, (u64, Vec<Incoming>)> {
        if let Some(m) = self.max_seen {
            self.watermark = self.watermark.max(tick_of(m - self.lateness_micros));
        }
        self.pending.drain(..)
    }
}

/// The readings of a message: one JSON object, or an array of them.
pub fn records_of(msg: &Inbound) -> Vec<Vec<u8>> {
    let trimmed = msg.payload.trim_ascii_start();
    if trimmed.first() == Some(&b'[') {
        if let Ok(items) = serde_json::from_slice::<Vec<&serde_json::value::RawValue>>(trimmed) {
            return items.iter().map(|v| v.get().as_bytes().to_vec()).collect();
        }
    }
    vec![msg.payload.clone()]
}

/// The record's route (its node's hash), its event time if readable and not in the future,
/// and a rejection when the payload's node is not the sender's.
fn route_and_time(msg: &Inbound, record: &[u8]) -> (Option<u64>, Option<i64>, Option<Rejection>) {
    let peek = LineParser::Jsonl.peek(record);
    let latest: DateTime<chrono::Utc> = msg.received_at + kaiabc_schemas::validate::MAX_FUTURE;
    // A command's time is when it was issued, not sensor time: it does not move the watermark.
    let t = peek
        .timestamp
        .as_deref()
        .filter(|_| !kaiabc_schemas::ControlCommand::is_control(record))
        .and_then(|s| parse_timestamp(s).ok())
        .filter(|t| *t <= latest)
        .map(|t| t.timestamp_micros());
    let node = peek.node_id.as_deref();
    let mismatch = match (&msg.node, node) {
        (Ok(vouched), Some(node)) if vouched != node => Some(Rejection::new(
            Reason::InvalidNodeId,
            format!("payload node_id {node:?} is not the sender's node {vouched:?}"),
        )),
        (Err(why), _) => Some(Rejection::new(Reason::InvalidNodeId, why.clone())),
        _ => None,
    };
    (node.map(node_hash), t, mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_time_follows_the_wall_clock_only_for_a_live_stream() {
        let minute = 60_000_000i64;
        let now = 1_000_000 * minute;
        // A live stream: its last reading 3 minutes ago.
        let mut live = Stamper::new(Duration::from_secs(60));
        live.stamp(&msg(&format!(
            r#"{{"node_id":"n1","timestamp":"{}","temperature_kelvin":300}}"#,
            kaiabc_schemas::format_timestamp(
                &chrono::DateTime::from_timestamp_micros(now - 3 * minute).unwrap()
            )
        )));
        live.drain();
        assert_eq!(live.watermark(), 1_000_000 - 4);
        assert!(live.follow_wall_clock(now));
        assert_eq!(live.watermark(), 1_000_000 - 1);
        // A backfill of readings a year old keeps its event time.
        let mut old = Stamper::new(Duration::from_secs(60));
        old.stamp(&msg(
            r#"{"node_id":"n1","timestamp":"2000-01-01T00:00:00Z","temperature_kelvin":300}"#,
        ));
        old.drain();
        let w = old.watermark();
        assert!(!old.follow_wall_clock(now));
        assert_eq!(old.watermark(), w);
        // Nothing read yet: nothing to follow.
        assert!(!Stamper::new(Duration::ZERO).follow_wall_clock(now));
    }

    fn msg(payload: &str) -> Inbound {
        Inbound {
            source: "http:/v1/sensors/batch".into(),
            node: Ok("n1".into()),
            payload: payload.as_bytes().to_vec(),
            received_at: chrono::Utc::now(),
        }
    }

    #[test]
    fn an_array_is_split_into_its_readings_as_sent() {
        let m = msg(r#" [{"node_id":"n1","seq":1}, {"node_id":"n1","seq":2.50}]"#);
        let got: Vec<String> = records_of(&m)
            .into_iter()
            .map(|r| String::from_utf8(r).unwrap())
            .collect();
        // Each element exactly as the node sent it (not re-encoded).
        assert_eq!(
            got,
            [
                r#"{"node_id":"n1","seq":1}"#,
                r#"{"node_id":"n1","seq":2.50}"#
            ]
        );
        // Not an array of JSON values: kept whole, for the dead letters.
        assert_eq!(records_of(&msg("[1,")).len(), 1);
    }

    #[test]
    fn records_are_stamped_in_runs_and_the_watermark_trails_by_the_lateness() {
        let mut s = Stamper::new(Duration::from_secs(60));
        let r = |minute: u32| {
            format!(
                r#"{{"node_id":"n1","timestamp":"2026-01-01T00:{minute:02}:00Z","temperature_kelvin":300}}"#
            )
        };
        s.stamp(&msg(&format!("[{},{}]", r(10), r(10))));
        s.stamp(&msg(&r(12)));
        let runs: Vec<(u64, usize)> = s.drain().map(|(t, v)| (t, v.len())).collect();
        let t10 = tick_of(
            parse_timestamp("2026-01-01T00:10:00Z")
                .unwrap()
                .timestamp_micros(),
        );
        assert_eq!(runs, [(t10, 2), (t10 + 2, 1)]);
        assert_eq!(s.watermark(), t10 + 1);
        // Older than the watermark: stamped at it.
        s.stamp(&msg(&r(0)));
        let runs: Vec<u64> = s.drain().map(|(t, _)| t).collect();
        assert_eq!(runs, [t10 + 1]);
    }
}
