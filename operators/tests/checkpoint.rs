//! A node resumed from a checkpoint carries on exactly as if it had never stopped: same states,
//! same rhythm windows, same duplicate detection; a node restarted from scratch does not.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use kaiabc_operators::clock::ClockConfig;
use kaiabc_operators::dataflow::{Checkpointing, NodeClocks, NodeStats, Ordering, Routed};
use kaiabc_operators::dedup::Seen;
use kaiabc_operators::node::{CheckpointError, NodeCheckpoint, NodeConfig, NodeState};
use kaiabc_schemas::{LakeRow, Quality, SensorReading};
use timely::dataflow::operators::capture::Event;
use timely::dataflow::operators::Capture;
use timely::dataflow::InputHandle;

/// One node for five days, a reading every 20 minutes, a 24 h ±5 K temperature cycle.
fn readings(node: &str) -> Vec<SensorReading> {
    let t0 = kaiabc_schemas::parse_timestamp("2025-03-01T00:00:00Z").unwrap();
    (0..5 * 72)
        .map(|k| {
            let minutes = 20 * k as i64;
            let h = minutes as f64 / 60.0;
            SensorReading {
                node_id: node.into(),
                seq: Some(k as i64),
                timestamp: t0 + chrono::Duration::minutes(minutes),
                temperature_kelvin: 300.0 + 5.0 * (std::f64::consts::TAU * h / 24.0).sin(),
                humidity_percent: Some(50.0),
                pressure_pa: Some(101_000.0),
                light_lux: None,
                sensor_type: "BME280".into(),
                quality: Quality::Good,
                raw_values: None,
                firmware_version: None,
            }
        })
        .collect()
}

fn rows_json(rows: &[LakeRow]) -> Vec<String> {
    rows.iter()
        .map(|r| match r {
            LakeRow::Reading(x) => serde_json::to_string(x).unwrap(),
            LakeRow::State(x) => serde_json::to_string(x).unwrap(),
            LakeRow::Rhythm(x) => serde_json::to_string(x).unwrap(),
            LakeRow::DeadLetter(x) => serde_json::to_string(x).unwrap(),
            LakeRow::PhaseShift(x) => serde_json::to_string(x).unwrap(),
            LakeRow::Fleet(x) => serde_json::to_string(x).unwrap(),
            LakeRow::Alert(x) => serde_json::to_string(x).unwrap(),
            LakeRow::Checkpoint(_) => "checkpoint".into(),
        })
        .collect()
}

fn apply_all(cfg: &NodeConfig, node: &mut NodeState, rs: &[SensorReading]) -> Vec<LakeRow> {
    let mut out = Vec::new();
    for r in rs {
        node.apply(cfg, r.clone(), &mut out).unwrap();
    }
    out
}

#[test]
fn a_resumed_node_continues_bit_for_bit() {
    let cfg = NodeConfig::new(ClockConfig::default()).unwrap();
    let rs = readings("n");
    // Stop after 2 days and 7 readings: mid-bin, mid-window, mid-cycle.
    let cut = 2 * 72 + 7;
    let mut whole = NodeState::new(&cfg).unwrap();
    let expected = rows_json(&apply_all(&cfg, &mut whole, &rs));

    let mut first = NodeState::new(&cfg).unwrap();
    let mut got = rows_json(&apply_all(&cfg, &mut first, &rs[..cut]));
    let bytes = first.checkpoint().to_bytes();
    drop(first);
    let cp = NodeCheckpoint::from_bytes(&bytes).unwrap();
    assert_eq!(
        cp.last_micros(),
        Some(rs[cut - 1].timestamp.timestamp_micros())
    );
    let mut resumed = NodeState::resume(&cfg, cp).unwrap();
    // After the restart, a reading from before the stop may be a copy (the summary covers it:
    // the lake, which holds everything before a checkpoint, decides); the next one is new.
    let key = |r: &SensorReading| (r.timestamp.timestamp_micros(), r.seq);
    let (m, s) = key(&rs[cut - 1]);
    assert_eq!(resumed.seen(m, s), Seen::AskLake);
    let (m, s) = key(&rs[cut]);
    assert_eq!(resumed.seen(m, s), Seen::New);
    got.extend(rows_json(&apply_all(&cfg, &mut resumed, &rs[cut..])));
    assert_eq!(got.len(), expected.len());
    assert_eq!(
        got, expected,
        "resumed rows differ from the uninterrupted run"
    );

    // Starting again from the initial condition is visibly different: the test can fail.
    let mut fresh = NodeState::new(&cfg).unwrap();
    let restarted = rows_json(&apply_all(&cfg, &mut fresh, &rs[cut..]));
    assert_ne!(restarted, expected[expected.len() - restarted.len()..]);
}

#[test]
fn damaged_checkpoints_are_errors() {
    assert!(matches!(
        NodeCheckpoint::from_bytes(&[]),
        Err(CheckpointError::Empty)
    ));
    assert!(matches!(
        NodeCheckpoint::from_bytes(&[99, 1, 2]),
        Err(CheckpointError::Version(99))
    ));
    let cfg = NodeConfig::new(ClockConfig::default()).unwrap();
    let mut n = NodeState::new(&cfg).unwrap();
    apply_all(&cfg, &mut n, &readings("n")[..3]);
    let bytes = n.checkpoint().to_bytes();
    assert!(matches!(
        NodeCheckpoint::from_bytes(&bytes[..bytes.len() / 2]),
        Err(CheckpointError::Decode(_))
    ));
}

/// Runs the checkpointed operator over `rs` (restoring from `restore`) and returns its rows.
fn run_operator(
    rs: Vec<SensorReading>,
    restore: HashMap<String, Vec<u8>>,
) -> (Vec<LakeRow>, NodeStats) {
    let cfg = Arc::new(NodeConfig::new(ClockConfig::default()).unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    let stats_out = Arc::new(std::sync::Mutex::new(NodeStats::default()));
    let so = Arc::clone(&stats_out);
    let restore = Arc::new(restore);
    timely::execute(timely::Config::thread(), move |worker| {
        let mut input: InputHandle<u64, timely::container::CapacityContainerBuilder<Vec<Routed>>> =
            InputHandle::new();
        let tx = tx.lock().unwrap().clone();
        let stats = Rc::new(RefCell::new(NodeStats::default()));
        worker.dataflow::<u64, _, _>(|scope| {
            input
                .to_stream(scope)
                .node_clocks_checkpointed(
                    Arc::clone(&cfg),
                    Ordering::Immediate,
                    kaiabc_operators::dedup::LakeKeys::none(),
                    Rc::clone(&stats),
                    Checkpointing {
                        restore: Arc::clone(&restore),
                        sources: 1,
                        sent: None,
                    },
                )
                .capture_into(tx);
        });
        for (i, r) in rs.iter().enumerate() {
            input.send((i as u64, r.clone().into()));
            input.advance_to(i as u64 + 1);
            worker.step();
        }
        drop(input);
        while worker.step() {}
        *so.lock().unwrap() = *stats.borrow();
    })
    .unwrap();
    let rows = rx
        .iter()
        .flat_map(|e| match e {
            Event::Messages(_, rows) => rows,
            Event::Progress(_) => Vec::new(),
        })
        .collect();
    let stats = *stats_out.lock().unwrap();
    (rows, stats)
}

#[test]
fn the_operator_ends_with_a_barrier_after_its_rows_and_resumes_from_it() {
    let rs = readings("n");
    let cut = 100;
    let (all, _) = run_operator(rs.clone(), HashMap::new());
    let (first, s1) = run_operator(rs[..cut].to_vec(), HashMap::new());
    assert_eq!(s1.restored, 0);
    // The last row is the end-of-input barrier with the node's checkpoint and latest state.
    let Some(LakeRow::Checkpoint(barrier)) = first.last() else {
        panic!("no barrier at the end: {:?}", first.last());
    };
    assert_eq!(barrier.nodes.len(), 1);
    let entry = &barrier.nodes[0];
    assert_eq!(entry.node_id, "n");
    let latest = entry.latest.as_ref().expect("a latest state");
    assert_eq!(latest.seq, Some(cut as i64 - 1));
    let restore = HashMap::from([(entry.node_id.clone(), entry.state.clone())]);
    let (second, s2) = run_operator(rs[cut..].to_vec(), restore);
    assert_eq!((s2.restored, s2.restore_failures), (1, 0));
    let strip = |rows: &[LakeRow]| -> Vec<String> {
        rows_json(rows)
            .into_iter()
            .filter(|r| r != "checkpoint")
            .collect()
    };
    let mut joined = strip(&first);
    joined.extend(strip(&second));
    assert_eq!(joined, strip(&all));
    // An unreadable checkpoint is counted and the node starts afresh.
    let (_, s3) = run_operator(
        rs[cut..cut + 2].to_vec(),
        HashMap::from([("n".to_string(), vec![1, 0xff])]),
    );
    assert_eq!((s3.restored, s3.restore_failures), (0, 1));
}

/// With two sources, a round's barrier waits for both sources' markers and follows everything
/// each sent before its marker: what the second source sends before its marker is in the
/// barrier's checkpoint, as in Flink's aligned checkpoints.
#[test]
fn a_rounds_barrier_follows_every_sources_marker() {
    use kaiabc_operators::dataflow::NodeInput;
    let rs = readings("n");
    let (tx, rx) = std::sync::mpsc::channel();
    // `execute_directly` wants a `Sync` closure.
    let rx = std::sync::Mutex::new(rx);
    let (barrier, sent) = timely::execute_directly(move |worker| {
        let cfg = Arc::new(NodeConfig::new(ClockConfig::default()).unwrap());
        let mut input: InputHandle<u64, timely::container::CapacityContainerBuilder<Vec<Routed>>> =
            InputHandle::new();
        let stats = Rc::new(RefCell::new(NodeStats::default()));
        let sent = Rc::new(std::cell::Cell::new(0u64));
        worker.dataflow::<u64, _, _>(|scope| {
            input
                .to_stream(scope)
                .node_clocks_checkpointed(
                    cfg,
                    Ordering::Immediate,
                    kaiabc_operators::dedup::LakeKeys::none(),
                    Rc::clone(&stats),
                    Checkpointing {
                        restore: Arc::new(HashMap::new()),
                        sources: 2,
                        sent: Some(Rc::clone(&sent)),
                    },
                )
                .capture_into(tx);
        });
        let marker = NodeInput::Marker {
            epoch: 1,
            worker: 0,
        };
        let rx = rx.lock().unwrap();
        let barriers = |worker: &mut timely::worker::Worker| -> Vec<_> {
            for _ in 0..5 {
                worker.step();
            }
            rx.try_iter()
                .flat_map(|e| match e {
                    Event::Messages(_, rows) => rows,
                    Event::Progress(_) => Vec::new(),
                })
                .filter_map(|r| match r {
                    LakeRow::Checkpoint(c) => Some(c),
                    _ => None,
                })
                .collect()
        };
        // The first source: ten readings, then its marker.
        for (i, r) in rs[..10].iter().enumerate() {
            input.send((i as u64, r.clone().into()));
        }
        input.send((10, marker.clone()));
        input.flush();
        assert!(
            barriers(worker).is_empty(),
            "a barrier with one marker of two"
        );
        assert_eq!(sent.get(), 0);
        // The second source: one more reading of the node, then its marker.
        input.send((11, rs[10].clone().into()));
        input.send((12, marker));
        input.flush();
        let got = barriers(worker);
        assert_eq!(stats.borrow().received, 11);
        (got, sent.get())
    });
    assert_eq!(barrier.len(), 1, "one barrier for the round: {barrier:?}");
    assert_eq!(barrier[0].epoch, 1);
    assert_eq!(sent, 1);
    assert_eq!(barrier[0].nodes.len(), 1);
    let latest = barrier[0].nodes[0].latest.as_ref().expect("latest state");
    assert_eq!(latest.seq, Some(10));
}
