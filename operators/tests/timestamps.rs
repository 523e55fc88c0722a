//! A node's clock is safe from a careless node's timestamps: a reading more than the horizon
//! (7 days) before the node's newest is refused, and a gap between readings, however long,
//! closes only the windows that still hold data, so work and rows grow with the data and not
//! with the gap (a reading dated 1700 followed by a current one used to close a window for
//! every empty hour between them).

use kaiabc_operators::clock::ClockConfig;
use kaiabc_operators::node::{NodeConfig, NodeError, NodeState};
use kaiabc_schemas::{parse_timestamp, LakeRow, SensorReading};

mod common;

fn at(ts: &str, seq: i64) -> SensorReading {
    common::reading("n", seq, parse_timestamp(ts).unwrap(), 300.0)
}

fn windows(rows: &[LakeRow]) -> usize {
    rows.iter()
        .filter(|r| matches!(r, LakeRow::Rhythm(_)))
        .count()
}

#[test]
fn a_reading_older_than_the_horizon_before_the_newest_is_refused() {
    let cfg = NodeConfig::new(ClockConfig::default()).unwrap();
    assert_eq!(cfg.max_age_hours, 168.0);
    let mut n = NodeState::new(&cfg).unwrap();
    let mut out = Vec::new();
    n.apply(&cfg, at("2025-07-10T00:00:00Z", 1), &mut out)
        .unwrap();
    // Six days back: late, kept.
    n.apply(&cfg, at("2025-07-04T00:00:00Z", 2), &mut out)
        .unwrap();
    // Eight days back: refused, with both times in the message.
    let e = n
        .apply(&cfg, at("2025-07-02T00:00:00Z", 3), &mut out)
        .unwrap_err();
    assert!(matches!(e.error, NodeError::Stale { .. }), "{:?}", e.error);
    let msg = e.error.to_string();
    assert!(
        msg.contains("2025-07-02") && msg.contains("2025-07-10"),
        "{msg}"
    );
    assert_eq!(e.reading.seq, Some(3));
}

#[test]
fn a_gap_closes_only_the_windows_that_hold_data() {
    let cfg = NodeConfig::new(ClockConfig::default()).unwrap();
    let length = cfg.window.length_hours as usize / cfg.window.every_hours as usize;
    let mut n = NodeState::new(&cfg).unwrap();
    let mut out = Vec::new();
    // A node whose clock said 1700, then the right time.
    n.apply(&cfg, at("1700-01-01T00:00:00Z", 1), &mut out)
        .unwrap();
    n.apply(&cfg, at("1700-01-01T00:10:00Z", 2), &mut out)
        .unwrap();
    let started = std::time::Instant::now();
    n.apply(&cfg, at("2025-07-01T00:00:00Z", 3), &mut out)
        .unwrap();
    // Two metrics per window; a window per hour while the data is in it (three days), none
    // for the 325 years after.
    let closed = windows(&out) / 2;
    assert!(closed <= length + 1, "{closed} windows across the gap");
    assert!(closed >= length - 1, "{closed} windows across the gap");
    eprintln!("a 325-year gap took {:?}", started.elapsed());
    // Then hourly again, from the new reading on.
    out.clear();
    n.apply(&cfg, at("2025-07-01T02:30:00Z", 4), &mut out)
        .unwrap();
    assert_eq!(windows(&out) / 2, 2);
}
