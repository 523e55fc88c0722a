//! The dataflow: sources → validation (rejects to dead letters) → per-node clocks → the lake.
//! `replay` drives it from sensor-log files; the live server (issue 4) drives the same graph.

pub mod lake_sink;
pub mod live;
pub mod parse;
pub mod replay;

/// Timely timestamps are whole minutes of event time since the Unix epoch: coarse enough that
/// progress tracking stays cheap, while rows keep exact event times.
pub const MICROS_PER_TICK: i64 = 60_000_000;

/// The tick containing `micros` (negative times clamp to 0).
pub fn tick_of(micros: i64) -> u64 {
    micros.max(0).div_euclid(MICROS_PER_TICK) as u64
}
