//! The per-node operator in live (`Immediate`) and replay (`Frontier`) mode gives the same rows
//! for input that is in order per node, whatever the interleaving of nodes and the timely
//! times the readings travel at.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use kaiabc_operators::clock::ClockConfig;
use kaiabc_operators::dataflow::{NodeClocks, NodeStats, Ordering, Routed};
use kaiabc_operators::node::NodeConfig;
use kaiabc_schemas::{LakeRow, Quality, SensorReading};
use timely::dataflow::operators::capture::Event;
use timely::dataflow::operators::{Capture, Probe};
use timely::dataflow::{InputHandle, ProbeHandle};

fn readings() -> Vec<SensorReading> {
    // Three nodes, ten days, a reading every 20 minutes, each node its own daily cycle; the
    // nodes interleave in arrival order with some jitter.
    let t0 = kaiabc_schemas::parse_timestamp("2025-03-01T00:00:00Z").unwrap();
    let mut out = Vec::new();
    for k in 0..(10 * 72) {
        for (n, (mean, amp)) in [(300.0, 5.0), (296.0, 0.0), (303.0, 2.5)]
            .iter()
            .enumerate()
        {
            let minutes = 20 * k as i64 + 3 * n as i64;
            let t = t0 + chrono::Duration::minutes(minutes);
            let h = minutes as f64 / 60.0;
            out.push(SensorReading {
                node_id: format!("n{n}"),
                seq: Some(k as i64),
                timestamp: t,
                temperature_kelvin: mean + amp * (std::f64::consts::TAU * h / 24.0).sin(),
                humidity_percent: Some(50.0),
                pressure_pa: Some(101_000.0),
                light_lux: None,
                sensor_type: "BME280".into(),
                quality: Quality::Good,
                raw_values: None,
                firmware_version: None,
            });
        }
    }
    out
}

/// Runs the operator with the readings sent in `batch`-sized groups, each group at the next
/// timely time, and returns every row it produced, in a canonical order.
fn run(ordering: Ordering, batch: usize) -> Vec<String> {
    let cfg = Arc::new(NodeConfig::new(ClockConfig::default()).unwrap());
    let data = readings();
    let (tx, rx) = std::sync::mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    timely::execute(timely::Config::thread(), move |worker| {
        let mut input: InputHandle<u64, timely::container::CapacityContainerBuilder<Vec<Routed>>> =
            InputHandle::new();
        let probe = ProbeHandle::new();
        let tx = tx.lock().unwrap().clone();
        let stats = Rc::new(RefCell::new(NodeStats::default()));
        worker.dataflow::<u64, _, _>(|scope| {
            input
                .to_stream(scope)
                .node_clocks(
                    Arc::clone(&cfg),
                    ordering,
                    kaiabc_operators::dedup::LakeKeys::none(),
                    stats,
                )
                .probe_with(&probe)
                .capture_into(tx);
        });
        for (i, chunk) in data.chunks(batch).enumerate() {
            for (j, r) in chunk.iter().enumerate() {
                input.send(((i * batch + j) as u64, r.clone().into()));
            }
            input.advance_to(i as u64 + 1);
            worker.step();
        }
    })
    .unwrap();
    let mut rows: Vec<String> = rx
        .iter()
        .flat_map(|e| match e {
            Event::Messages(_, rows) => rows,
            Event::Progress(_) => Vec::new(),
        })
        .map(|r: LakeRow| format!("{r:?}"))
        .collect();
    rows.sort();
    rows
}

#[test]
fn live_and_replay_give_the_same_rows_for_in_order_input() {
    let replay = run(Ordering::Frontier, 97);
    assert!(
        replay.len() > 3 * 720 * 2,
        "readings and states: {}",
        replay.len()
    );
    assert!(replay.iter().any(|r| r.starts_with("Rhythm")));
    assert_eq!(run(Ordering::Immediate, 97), replay, "live vs replay");
    assert_eq!(
        run(Ordering::Immediate, 1),
        replay,
        "live, one reading per time"
    );
    assert_eq!(
        run(Ordering::Frontier, 1000),
        replay,
        "replay, other batches"
    );
}
