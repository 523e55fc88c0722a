//! Parsing and validating log records on the worker that owns their node, so that the source
//! only reads lines and every worker shares the parsing.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use kaiabc_connectors::file::LineParser;
use kaiabc_connectors::lake::ExistingKeys;
use kaiabc_operators::dataflow::{NodeInput, Routed};
use kaiabc_schemas::{
    ControlCommand, DeadLetter, LakeRow, RawReading, Reason, Rejection, SensorReading,
};
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::operator::Operator;
use timely::dataflow::Stream;

/// A log file as every worker sees it.
#[derive(Clone, Debug)]
pub struct LogFile {
    /// Its name in dead letters' `source` (`file:NAME:LINE`).
    pub name: String,
    /// How its lines parse (`None` for Parquet: rows come parsed).
    pub parser: Option<LineParser>,
}

/// One record on its way from the source to the worker that parses it.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Incoming {
    /// Which worker parses it: the hash of its node id (so the reading needs no further
    /// exchange), or of its position when it has none.
    pub route: u64,
    /// Its position in the input (ties in event time keep input order).
    pub ordinal: u64,
    /// Index into the replay's files.
    pub file: u32,
    /// Line (or row) number.
    pub line: u64,
    /// `received_at` for a dead letter: in a replay, the newest event time read before it from
    /// its file; live, the time it arrived.
    pub received_at: DateTime<Utc>,
    /// A live record's source (`mqtt:TOPIC`); replayed records name their file and line.
    pub source: Option<String>,
    /// The record's bytes.
    pub payload: Vec<u8>,
    /// A Parquet row arrives parsed (boxed: records are moved several times on their way).
    pub parsed: Option<Box<Result<RawReading, Rejection>>>,
    /// Not a record but a source's checkpoint marker of this round, for the worker `route`
    /// (see [`kaiabc_operators::dataflow::Checkpointing`]).
    pub marker: Option<u64>,
}

/// What one worker's parser did.
#[derive(Debug, Default)]
pub struct ParseStats {
    /// Rejections by reason.
    pub rejected: BTreeMap<Reason, u64>,
    /// Time spent parsing and validating.
    pub busy: Duration,
    /// Records taken from the input.
    pub records: u64,
    /// Records that became readings (the rest were rejected, or already dead-lettered).
    pub readings: u64,
}

/// What parsing a record gives.
#[derive(Clone, Debug)]
pub enum Parsed {
    /// A valid reading or control command, for the per-node operator.
    Reading(Routed),
    /// A dead letter, for the lake.
    Dead(LakeRow),
}

/// Extension trait: parse and validate records on the worker that owns their node.
pub trait ParseValidate<'scope> {
    /// Parses each record with its file's parser and validates it against `now` (or, when
    /// `None`, live, against the record's own arrival time, and then a reading more than
    /// `max_age` older than its arrival is `STALE_TIMESTAMP`); rejected records become dead
    /// letters (unless `keys` says the lake already holds them).
    fn parse_validate(
        self,
        files: Arc<Vec<LogFile>>,
        now: Option<DateTime<Utc>>,
        max_age: Option<chrono::Duration>,
        keys: Arc<ExistingKeys>,
        stats: Rc<RefCell<ParseStats>>,
    ) -> Stream<'scope, u64, Vec<Parsed>>;
}

impl<'scope> ParseValidate<'scope> for Stream<'scope, u64, Vec<Incoming>> {
    fn parse_validate(
        self,
        files: Arc<Vec<LogFile>>,
        now: Option<DateTime<Utc>>,
        max_age: Option<chrono::Duration>,
        keys: Arc<ExistingKeys>,
        stats: Rc<RefCell<ParseStats>>,
    ) -> Stream<'scope, u64, Vec<Parsed>> {
        let limits = Limits { now, max_age };
        self.unary(
            Exchange::new(|r: &Incoming| r.route),
            "ParseValidate",
            move |_, _| {
                let mut out: Vec<Parsed> = Vec::new();
                move |input, output| {
                    let started = std::time::Instant::now();
                    let mut st = stats.borrow_mut();
                    // In arrival order, which live commands rely on.
                    input.for_each(|time, batch| {
                        for r in batch.drain(..) {
                            if let Some(epoch) = r.marker {
                                let worker = r.route;
                                out.push(Parsed::Reading((
                                    r.ordinal,
                                    NodeInput::Marker { epoch, worker },
                                )));
                                continue;
                            }
                            st.records += 1;
                            if let Some(p) = parse_one(&files, limits, &keys, &mut st, r) {
                                if matches!(p, Parsed::Reading(_)) {
                                    st.readings += 1;
                                }
                                out.push(p);
                            }
                        }
                        output.session(&time).give_iterator(out.drain(..));
                    });
                    st.busy += started.elapsed();
                }
            },
        )
    }
}

/// The time limits a reading is validated against.
#[derive(Clone, Copy)]
struct Limits {
    /// The time of receipt for the future check (`None`: each record's own).
    now: Option<DateTime<Utc>>,
    /// Live: how much older than its receipt a reading may be.
    max_age: Option<chrono::Duration>,
}

fn parse_one(
    files: &[LogFile],
    limits: Limits,
    keys: &ExistingKeys,
    st: &mut ParseStats,
    mut r: Incoming,
) -> Option<Parsed> {
    let file = &files[r.file as usize];
    if r.parsed.is_none() && ControlCommand::is_control(&r.payload) {
        return match control_of(&r) {
            Ok(cmd) => Some(Parsed::Reading((r.ordinal, NodeInput::Control(cmd)))),
            Err(rejection) => dead(file, keys, st, r, rejection),
        };
    }
    let parsed = match (r.parsed.take(), &file.parser) {
        (Some(parsed), _) => *parsed,
        (None, Some(p)) => p.parse(&r.payload),
        (None, None) => Err(Rejection::new(
            Reason::ParseError,
            "no parser for this file",
        )),
    };
    let received = limits.now.unwrap_or(r.received_at);
    let stale = |reading: SensorReading| match limits.max_age {
        Some(age) => kaiabc_schemas::validate::check_age(&reading, received, age).map(|()| reading),
        None => Ok(reading),
    };
    match parsed.and_then(|raw| raw.validate(received).and_then(stale)) {
        Ok(reading) => Some(Parsed::Reading((r.ordinal, NodeInput::Reading(reading)))),
        Err(rejection) => dead(file, keys, st, r, rejection),
    }
}

/// A rejected record's dead letter (unless the lake already holds it).
fn dead(
    file: &LogFile,
    keys: &ExistingKeys,
    st: &mut ParseStats,
    r: Incoming,
    rejection: Rejection,
) -> Option<Parsed> {
    *st.rejected.entry(rejection.reason).or_default() += 1;
    let source = r
        .source
        .unwrap_or_else(|| format!("file:{}:{}", file.name, r.line));
    let payload = String::from_utf8_lossy(&r.payload);
    if keys.has_dead_letter(&source, &payload) {
        return None;
    }
    Some(Parsed::Dead(LakeRow::DeadLetter(DeadLetter::new(
        r.received_at,
        source,
        &r.payload,
        rejection,
    ))))
}

/// Where control commands may come from: the API (`control:…`, live or through Kafka) and
/// replayed files (an operator's own log). A node's MQTT topic or HTTP ingest carries readings
/// only: a node must not reset or override a clock.
pub const CONTROL_SOURCE: &str = "control:";

/// A record's control command, if its source may send one and it is well formed.
fn control_of(r: &Incoming) -> Result<ControlCommand, Rejection> {
    if let Some(source) = r
        .source
        .as_deref()
        .filter(|s| !s.starts_with(CONTROL_SOURCE))
    {
        return Err(Rejection::new(
            Reason::ParseError,
            format!("control commands come from the API, not from {source}"),
        ));
    }
    let cmd: ControlCommand = serde_json::from_slice(&r.payload)
        .map_err(|e| Rejection::new(Reason::ParseError, format!("control command: {e}")))?;
    if !kaiabc_schemas::validate::valid_node_id(&cmd.node_id) {
        return Err(Rejection::new(
            Reason::InvalidNodeId,
            format!("node_id {:?}", cmd.node_id),
        ));
    }
    Ok(cmd)
}
