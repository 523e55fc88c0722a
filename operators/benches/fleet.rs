//! The fleet's views at scale: nodes in groups (default 100 000 in 100 locations and 2 boards)
//! on one worker. Prints the time to build the views from scratch, the amortised cost of a
//! state change in rounds of different sizes (a round is one tick: the changes that complete
//! together), the memory the views hold per node, and, as the baseline measured in the same
//! run, a rescan that recomputes every group's aggregate and medians from all nodes.
//!
//! `cargo bench -p kaiabc-operators --bench fleet` (`-- --nodes N --groups G` to change the
//! size, `--round K` for only the ticks of K changes). Under `cargo test` it runs once on 2 000 nodes as a smoke test.

use std::collections::HashMap;
use std::time::Instant;

use differential_dataflow::input::Input as _;
use kaiabc_operators::fleet::{
    fleet_views, ClockView, FleetConfig, FleetOutput, GroupAgg, GroupBy, GroupKey, Measure, Name,
    NodeEvent, NodeMeta, NodeView, OrdF64, Status,
};
use timely::dataflow::operators::vec::Input as _;
use timely::dataflow::operators::{Inspect, Probe};
use timely::dataflow::ProbeHandle;

/// The allocator the `kaiabc` binary runs with.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Resident memory of this process, bytes (`/proc/self/statm`).
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// A deterministic stream of numbers in [0, 1) (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn clock(rng: &mut Rng) -> ClockView {
    let phase = rng.next();
    ClockView {
        phase: OrdF64::from(phase),
        circadian_time: OrdF64::from(24.0 * phase),
        period_hours: OrdF64::from(23.5 + rng.next()),
        koa: OrdF64::from(rng.next()),
        temperature_kelvin: OrdF64::from(295.0 + 10.0 * rng.next()),
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str, default: usize| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let full = args.iter().any(|a| a == "--bench");
    let nodes = arg("--nodes", if full { 100_000 } else { 2_000 });
    let groups = arg("--groups", 100).max(1);
    // (changes per tick, ticks)
    let mut rounds: Vec<(usize, usize)> = if full {
        vec![(1, 200), (100, 100), (1_000, 40), (10_000, 10), (nodes, 3)]
    } else {
        vec![(1, 5), (100, 3), (nodes, 1)]
    };
    // `--round K`: only the rounds of K changes a tick (to profile one size).
    if let Some(k) = args
        .iter()
        .position(|a| a == "--round")
        .map(|_| arg("--round", 0))
    {
        rounds.retain(|(n, _)| *n == k);
    }
    let rss_before = rss();
    let report = timely::execute_directly(move |worker| {
        let probe = ProbeHandle::new();
        let changes = std::rc::Rc::new(std::cell::Cell::new(0usize));
        let seen = std::rc::Rc::clone(&changes);
        let (mut events, mut registry) = worker.dataflow::<u64, _, _>(|scope| {
            let (events_in, events) = scope.new_input::<NodeEvent>();
            let (registry_in, registry) = scope.new_collection::<(Name, NodeMeta), isize>();
            // Every state changes the views (the default refreshes a node's clock every 10
            // minutes of its event time), and no status changes by timer during the run (a
            // node that reported in one round would go stale two ticks later and offline five
            // ticks later, a tick's changes then being three times the states sent): the cost
            // measured is that of a state change.
            let cfg = FleetConfig {
                clock_resolution_minutes: 1,
                stale_after_minutes: 100_000,
                offline_after_minutes: 100_000,
                ..FleetConfig::default()
            };
            fleet_views(events, registry, cfg)
                .fleet_changes()
                .inspect(move |c| seen.set(seen.get() + c.changes.len()))
                .probe_with(&probe);
            (events_in, registry_in)
        });
        let names: Vec<Name> = (0..nodes).map(|n| format!("node_{n:06}").into()).collect();
        let metas: Vec<NodeMeta> = (0..nodes)
            .map(|n| NodeMeta {
                location: format!("site-{:03}", n % groups).into(),
                hardware_type: if n % 2 == 0 {
                    "raspberry_pi_pico"
                } else {
                    "elm11"
                }
                .into(),
                runtime: "micropython".into(),
            })
            .collect();
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let mut tick = 1u64;
        // Moves both inputs to tick `t` and runs the dataflow until the views are complete
        // before it.
        macro_rules! step_to {
            ($t:expr) => {{
                let t = $t;
                events.advance_to(t);
                registry.advance_to(t);
                registry.flush();
                worker.step_while(|| probe.less_than(&t));
            }};
        }

        // Build from scratch: the registry and one state per node in one tick.
        // The inputs are made before the clock starts: what is timed is the views' work.
        let first: Vec<NodeEvent> = names
            .iter()
            .map(|n| NodeEvent::State {
                node: n.clone(),
                at: tick as i64 * 60_000_000,
                clock: clock(&mut rng),
            })
            .collect();
        let started = Instant::now();
        for ((n, m), event) in names.iter().zip(&metas).zip(first) {
            registry.insert((n.clone(), m.clone()));
            events.send(event);
        }
        tick += 1;
        step_to!(tick);
        let build = started.elapsed();
        let rss_built = rss();

        // Rounds of changes: each a tick in which `k` nodes (spread over the groups) report.
        let mut per_change: Vec<(usize, f64, usize)> = Vec::new();
        for &(k, n_rounds) in &rounds {
            let mut times = Vec::new();
            for _ in 0..n_rounds {
                let round: Vec<NodeEvent> = (0..k)
                    .map(|_| {
                        let n = (rng.next() * nodes as f64) as usize % nodes;
                        NodeEvent::State {
                            node: names[n].clone(),
                            at: tick as i64 * 60_000_000,
                            clock: clock(&mut rng),
                        }
                    })
                    .collect();
                let started = Instant::now();
                for event in round {
                    events.send(event);
                }
                tick += 1;
                step_to!(tick);
                times.push(started.elapsed().as_secs_f64() / k as f64);
            }
            per_change.push((k, median(&mut times), n_rounds));
        }

        // The baseline: every group's aggregate recomputed from all nodes, as a service without
        // incremental views would on each tick.
        let views: Vec<(NodeView, NodeMeta)> = metas
            .iter()
            .map(|m| {
                let mut v = NodeView::never_seen();
                v.status = Status::Online;
                v.last_seen = Some(0);
                v.clock = Some(clock(&mut rng));
                (v, m.clone())
            })
            .collect();
        let mut rescans = Vec::new();
        for _ in 0..if full { 5 } else { 1 } {
            let started = Instant::now();
            let mut all: HashMap<GroupKey, GroupAgg> = HashMap::new();
            let mut values: HashMap<(GroupKey, Measure), Vec<f64>> = HashMap::new();
            for (v, m) in &views {
                let agg = GroupAgg::of(v, m);
                for g in m.groups() {
                    use differential_dataflow::difference::Semigroup;
                    all.entry(g.clone()).or_default().plus_equals(&agg);
                    for (measure, x) in Measure::of(v) {
                        values
                            .entry((g.clone(), measure))
                            .or_default()
                            .push(x.get());
                    }
                }
            }
            // And each group's median of each measure.
            let medians: usize = values
                .values_mut()
                .map(|v| median(v).is_finite() as usize)
                .sum();
            assert_eq!(medians, values.len());
            assert!(all.contains_key(&GroupKey {
                by: GroupBy::Fleet,
                value: "all".into()
            }));
            rescans.push(started.elapsed().as_secs_f64());
        }
        (
            build,
            rss_built,
            per_change,
            median(&mut rescans),
            changes.get(),
        )
    });
    let (build, rss_built, per_change, rescan, out) = report;
    let per_node = rss_built.saturating_sub(rss_before) as f64 / nodes as f64;
    println!("fleet views: {nodes} nodes, {groups} locations × 2 boards + the fleet, one worker");
    println!(
        "  build from scratch: {:.3} s ({:.2} µs a node)",
        build.as_secs_f64(),
        build.as_secs_f64() * 1e6 / nodes as f64
    );
    println!(
        "  memory held after the build: {:.0} bytes a node (RSS growth)",
        per_node
    );
    println!(
        "  baseline, a rescan of every group's aggregate and medians: {:.2} ms a tick",
        rescan * 1e3
    );
    println!(
        "  changes per tick | cost per change (median over ticks) | rescan ÷ (cost × changes)"
    );
    for (k, t, n) in &per_change {
        println!(
            "  {k:>16} | {:>9.2} µs ({n} ticks) | {:.1}×",
            t * 1e6,
            rescan / (t * *k as f64)
        );
    }
    println!("  view records changed: {out}");
}
