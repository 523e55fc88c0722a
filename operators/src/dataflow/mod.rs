//! The timely-dataflow operators of KaiABC Stream, one per file, each an extension trait on
//! `Stream` (after timely's own `operators/core`).

pub mod node_clocks;

pub use node_clocks::{
    Checkpointing, Histogram, NodeClocks, NodeInput, NodeStats, Ordering, Routed,
    APPLY_SECONDS_BOUNDS,
};

/// A stable hash of a node id, for exchanging a node's readings to one worker. Stable across
/// processes and runs (FNV-1a), so the worker that owns a node does not depend on the run.
pub fn node_hash(node_id: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in node_id.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}
