//! Prints throughput figures as JSON for `scripts/bench_vs_python.py`, which times SciPy and
//! astropy on the same work in the same run and prints the ratios.
//!
//! `throughput ode --rtol R --atol A --max-step-hours H|inf --days D --reps N [--nodes M [--threads T]]`
//! `throughput lomb-scargle --input FILE.csv --fmin F --fmax F --nfreq N --reps R`

use std::collections::HashMap;
use std::time::Instant;

use kaiabc_operators::clock::ClockConfig;
use kaiabc_operators::integrator::{advance_lanes, Dopri5, IntegratorConfig, Step, LANES};
use kaiabc_operators::{Etf, KaiParams};

const W: usize = LANES;
use kaiabc_operators::rhythm::lomb_scargle::{FrequencyGrid, LombScargle};
use kaiabc_operators::system::{KaiLanes, KaiSystem};
use kaiabc_operators::temperature::Constant;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

/// Advances every integrator to `t_end`, `W` at a time side by side.
fn run_nodes(igs: &mut [Dopri5<3>], p: &KaiParams, e: &Etf, k: f64, t_end: f64) {
    for chunk in igs.chunks_mut(W) {
        let noop = |_: &Step<'_, 3>| {};
        match <&mut [Dopri5<3>; W]>::try_from(&mut *chunk) {
            Ok(lanes) => {
                let mut sys = KaiLanes::new([p; W], [e; W], [Constant(k); W]);
                let mut obs = [noop; W];
                let r = advance_lanes(lanes.each_mut(), &mut sys, [t_end; W], obs.each_mut());
                r.into_iter().for_each(|x| x.unwrap());
            }
            Err(_) => {
                for ig in chunk {
                    let mut sys = KaiSystem::new(p, e, Constant(k));
                    ig.advance_to(&mut sys, t_end, noop).unwrap();
                }
            }
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(cmd) = args.first() else {
        eprintln!("usage: throughput ode|lomb-scargle [--flag value]...");
        std::process::exit(2);
    };
    let mut flags = HashMap::new();
    for pair in args[1..].chunks(2) {
        if pair.len() != 2 || !pair[0].starts_with("--") {
            eprintln!("flags come in pairs: --name value");
            std::process::exit(2);
        }
        flags.insert(
            pair[0].trim_start_matches("--").to_string(),
            pair[1].clone(),
        );
    }
    let num = |k: &str, d: f64| -> f64 {
        flags.get(k).map_or(d, |v| {
            if v == "inf" {
                f64::INFINITY
            } else {
                v.parse()
                    .unwrap_or_else(|_| panic!("--{k}: not a number: {v}"))
            }
        })
    };
    match cmd.as_str() {
        "ode" => {
            let max_step = num("max-step-hours", 0.5);
            let cfg = IntegratorConfig {
                rtol: num("rtol", 1e-6),
                atol: num("atol", 1e-9),
                min_step: 1e-10,
                max_step: if max_step.is_finite() { max_step } else { 1e9 },
            };
            let days = num("days", 1.0);
            let reps = num("reps", 200.0) as usize;
            let clock = ClockConfig {
                integrator: cfg,
                ..Default::default()
            };
            let lc = clock.limit_cycle().expect("limit cycle");
            let y0 = lc.state_at_ct(0.0).to_array();
            let nodes = num("nodes", 1.0) as usize;
            if nodes > 1 {
                // Many nodes from different phases, LANES side by side: what a worker serving
                // many nodes spends per node-day.
                let starts: Vec<[f64; 3]> = (0..nodes)
                    .map(|i| lc.state_at_ct(24.0 * i as f64 / nodes as f64).to_array())
                    .collect();
                let (p, e, k) = (&clock.params, &clock.etf, clock.reference_temperature_k);
                let threads = (num("threads", 1.0) as usize).max(1);
                let mut times = Vec::with_capacity(reps);
                let mut evals = 0;
                for _ in 0..reps {
                    let start = Instant::now();
                    let mut igs: Vec<Dopri5<3>> = starts
                        .iter()
                        .map(|y| Dopri5::new(0.0, *y, cfg).unwrap())
                        .collect();
                    // Split the nodes between worker threads the way the dataflow's workers
                    // split them (one share each, no sharing of state).
                    if threads == 1 {
                        run_nodes(&mut igs, p, e, k, 24.0 * days);
                    } else {
                        let share = igs.len().div_ceil(threads);
                        std::thread::scope(|scope| {
                            for part in igs.chunks_mut(share) {
                                scope.spawn(move || run_nodes(part, p, e, k, 24.0 * days));
                            }
                        });
                    }
                    times.push(start.elapsed().as_secs_f64() * 1e6 / days / nodes as f64);
                    evals = igs.iter().map(|i| i.stats().rhs_evals).sum::<u64>() / nodes as u64;
                }
                println!(
                    "{}",
                    serde_json::json!({
                        "median_us_per_node_day": median(times),
                        "nodes": nodes,
                        "lanes": LANES,
                        "threads": threads,
                        "rhs_evals": evals,
                    })
                );
                return;
            }
            let mut times = Vec::with_capacity(reps);
            let mut last = None;
            for _ in 0..reps {
                let start = Instant::now();
                let mut ig = Dopri5::new(0.0, y0, cfg).unwrap();
                let mut sys = KaiSystem::new(
                    &clock.params,
                    &clock.etf,
                    Constant(clock.reference_temperature_k),
                );
                ig.advance_to(&mut sys, 24.0 * days, |_| {}).unwrap();
                times.push(start.elapsed().as_secs_f64() * 1e6 / days);
                last = Some((ig.stats(), *ig.y()));
            }
            let (stats, y) = last.unwrap();
            println!(
                "{}",
                serde_json::json!({
                    "median_us_per_node_day": median(times),
                    "accepted": stats.accepted,
                    "rejected": stats.rejected,
                    "rhs_evals": stats.rhs_evals,
                    "final_state": y,
                })
            );
        }
        "lomb-scargle" => {
            let path = flags.get("input").expect("--input FILE.csv");
            let text = std::fs::read_to_string(path).expect("read input");
            let (mut t, mut y) = (Vec::new(), Vec::new());
            for line in text.lines().skip(1).filter(|l| !l.trim().is_empty()) {
                let mut it = line.split(',');
                t.push(it.next().unwrap().trim().parse::<f64>().unwrap());
                y.push(it.next().unwrap().trim().parse::<f64>().unwrap());
            }
            let (fmin, fmax) = (num("fmin", f64::NAN), num("fmax", f64::NAN));
            let nfreq = num("nfreq", 0.0) as usize;
            let reps = num("reps", 20.0) as usize;
            let mut times = Vec::with_capacity(reps);
            let mut powers = Vec::new();
            for _ in 0..reps {
                let start = Instant::now();
                let ls = LombScargle::new(&t, &y).expect("periodogram input");
                let grid = FrequencyGrid::new(fmin, (fmax - fmin) / (nfreq - 1) as f64, nfreq)
                    .expect("grid");
                powers = ls.power_grid(&grid);
                times.push(start.elapsed().as_secs_f64() * 1e6);
            }
            let (best_i, best_p) =
                powers
                    .iter()
                    .enumerate()
                    .fold((0, f64::MIN), |a, (i, &p)| if p > a.1 { (i, p) } else { a });
            let best_f = fmin + best_i as f64 * (fmax - fmin) / (nfreq - 1) as f64;
            let out =
                std::env::temp_dir().join(format!("kaiabc-ls-powers-{}.json", std::process::id()));
            std::fs::write(&out, serde_json::to_string(&powers).unwrap()).unwrap();
            println!(
                "{}",
                serde_json::json!({
                    "median_us": median(times),
                    "best_frequency": best_f,
                    "best_power": best_p,
                    "powers_file": out,
                })
            );
        }
        other => {
            eprintln!("unknown command {other}");
            std::process::exit(2);
        }
    }
}
