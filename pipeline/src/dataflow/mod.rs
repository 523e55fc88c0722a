//! The dataflow: sources → validation (rejects to dead letters) → per-node clocks → the lake.
//! `replay` drives it from sensor-log files; the live server drives the same graph from the
//! write-ahead log or Kafka (`inbound`, `source`, `aligner`, `stamper`, `live`).

pub mod aligner;
pub mod in_order;
pub mod inbound;
pub mod lake_sink;
pub mod live;
pub mod parse;
pub mod past;
pub mod reader;
pub mod replay;
pub mod rounds;
pub mod source;
pub mod stamper;

/// Timely timestamps are whole minutes of event time since the Unix epoch: coarse enough that
/// progress tracking stays cheap, while rows keep exact event times.
pub const MICROS_PER_TICK: i64 = 60_000_000;

/// The tick containing `micros` (negative times clamp to 0).
pub fn tick_of(micros: i64) -> u64 {
    micros.max(0).div_euclid(MICROS_PER_TICK) as u64
}

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use kaiabc_connectors::lake::ExistingKeys;
use kaiabc_operators::dataflow::{Checkpointing, NodeClocks, NodeStats, Ordering, Routed};
use kaiabc_operators::dedup::LakeKeys;
use kaiabc_operators::fleet::{
    fleet_views, FleetChanges, FleetConfig, FleetOutput, FleetRows, Name, NodeEvent, NodeMeta,
};
use kaiabc_operators::node::NodeConfig;
use kaiabc_schemas::LakeRow;
use timely::dataflow::operators::Concat;
use timely::dataflow::Stream;

use in_order::InOrder;
use parse::{Incoming, LogFile, ParseStats, ParseValidate, Parsed};

/// The graph replay and live share: records are parsed and validated on their node's worker,
/// readings go through the per-node clocks, and the lake rows (with dead letters) come out.
/// `now` is the receipt time for the future-timestamp check (`None`: each record's own);
/// `keys` are the dead letters already in the lake and `lake` what the node operator needs to
/// recognise copies of readings.
/// With `ckpt`, nodes resume from checkpoints and checkpoint barriers flow to the sink.
#[allow(clippy::too_many_arguments)]
pub fn lake_rows<'scope>(
    records: Stream<'scope, u64, Vec<Incoming>>,
    files: &Arc<Vec<LogFile>>,
    now: Option<DateTime<Utc>>,
    keys: &Arc<ExistingKeys>,
    lake: LakeKeys,
    node_cfg: &Arc<NodeConfig>,
    ordering: Ordering,
    parse_stats: &Rc<RefCell<ParseStats>>,
    stats: &Rc<RefCell<NodeStats>>,
    ckpt: Option<Checkpointing>,
) -> Stream<'scope, u64, Vec<LakeRow>> {
    // Split by `Result`, in arrival order (see `in_order`); the row moves straight into its
    // output.
    #[allow(clippy::result_large_err)]
    let (readings, dead): (
        Stream<'scope, u64, Vec<Routed>>,
        Stream<'scope, u64, Vec<LakeRow>>,
    ) = records
        .parse_validate(
            Arc::clone(files),
            now,
            // Live only: a replay of old logs is old by design.
            now.is_none()
                .then(|| chrono::Duration::microseconds((node_cfg.max_age_hours * 3.6e9) as i64)),
            Arc::clone(keys),
            Rc::clone(parse_stats),
        )
        .ok_err_in_order(|p| match p {
            Parsed::Reading(r) => Ok(r),
            Parsed::Dead(d) => Err(d),
        });
    let cfg = Arc::clone(node_cfg);
    let clocks = match ckpt {
        Some(c) => readings.node_clocks_checkpointed(cfg, ordering, lake, Rc::clone(stats), c),
        None => readings.node_clocks(cfg, ordering, lake, Rc::clone(stats)),
    };
    // Dead letters first: when a record that became one and a checkpoint marker after it
    // reach this worker together, the dead letter must be ahead of the barrier the marker
    // releases, or it would be committed a round late (and lost if the round's position were
    // committed before a crash). `concatenate` drains its inputs in order.
    dead.concat(clocks)
}

/// The fleet's views over a worker's rows (see `kaiabc_operators::fleet`): the rows pass on,
/// joined (on worker 0) by the `fleet` and `alerts` rows. Each completed tick's changes of the
/// views are broadcast to every worker, and go to `sink` where `applies` (one worker a
/// process: each process's book, and so its API, holds the whole cluster's views). `more`
/// adds events the rows do not carry (live: status messages). `registry` is the collection of
/// `(node, meta)` records the nodes are grouped by.
pub fn with_fleet<'scope>(
    rows: Stream<'scope, u64, Vec<LakeRow>>,
    more: Option<Stream<'scope, u64, Vec<NodeEvent>>>,
    registry: differential_dataflow::VecCollection<'scope, u64, (Name, NodeMeta)>,
    cfg: FleetConfig,
    applies: bool,
    mut sink: impl FnMut(&FleetChanges) + 'static,
) -> Stream<'scope, u64, Vec<LakeRow>> {
    use timely::dataflow::operators::vec::Broadcast;
    use timely::dataflow::operators::Inspect;
    let (rows, mut events) = rows.tap_in_order(NodeEvent::of);
    if let Some(more) = more {
        events = events.concat(more);
    }
    let changes = fleet_views(events, registry, cfg).fleet_changes();
    changes
        .clone()
        .broadcast()
        .inspect(move |c: &FleetChanges| {
            if applies {
                sink(c)
            }
        });
    rows.concat(changes.fleet_rows())
}
