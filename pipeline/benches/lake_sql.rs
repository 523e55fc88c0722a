//! SQL over the lake, DataFusion (as `kaiabc query` and the API run it) against DuckDB on the
//! same Parquet files, each timed in its own process around the query alone: the hourly mean
//! per node, the latest state per node written two ways, dead letters by reason, and the
//! period per node and metric over `rhythms`. Both engines' answers are checked to agree (row
//! count and a column's sum) before anything is timed.
//!
//! `cargo bench -p kaiabc-pipeline --bench lake_sql`. The lake is `KAIABC_BENCH_SQL_LAKE` if
//! set; otherwise one is made: `kaiabc datasets generate --nodes 2000 --days 1` (2.88 M
//! readings; `KAIABC_BENCH_SQL_NODES` to change) with one line in 997 malformed, replayed
//! with `--workers 2`. `KAIABC_BENCH_SQL_REPS` runs per query (default 5), medians quoted; both
//! engines use 2 threads; `KAIABC_BENCH_SQL_ONLY` keeps the queries whose name contains it (to
//! profile one). Under `cargo test` it runs once on 20 nodes as a smoke test. Nothing is
//! asserted about speed.

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use arrow::array::AsArray;
use arrow::datatypes::Float64Type;

/// The allocator of the `kaiabc` binary, which runs the API's and `kaiabc query`'s queries,
/// with its memory policy ([`alloc::no_transparent_huge_pages`]).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

// Its tests are compiled out here (no test harness): hence the unused import.
#[path = "../src/alloc.rs"]
#[allow(dead_code, unused_imports)]
mod alloc;

/// One query in both dialects, and the numeric column whose sum checks the answers agree.
struct Query {
    name: &'static str,
    datafusion: &'static str,
    duckdb: &'static str,
    check: &'static str,
}

const QUERIES: [Query; 5] = [
    Query {
        name: "hourly mean per node (readings)",
        datafusion: "SELECT node_id, date_trunc('hour', timestamp) AS hour, \
                     avg(temperature_kelvin) AS t FROM readings GROUP BY 1, 2",
        duckdb: "SELECT node_id, date_trunc('hour', timestamp) AS hour, \
                 avg(temperature_kelvin) AS t FROM readings GROUP BY 1, 2",
        check: "t",
    },
    Query {
        name: "latest state per node, last_value (states)",
        datafusion: "SELECT node_id, last_value(koa_metric ORDER BY timestamp) AS koa \
                     FROM states GROUP BY node_id",
        duckdb: "SELECT node_id, arg_max(koa_metric, timestamp) AS koa \
                 FROM states GROUP BY node_id",
        check: "koa",
    },
    Query {
        name: "latest state per node, row_number (states)",
        datafusion: "SELECT node_id, koa_metric FROM (SELECT node_id, koa_metric, \
                     row_number() OVER (PARTITION BY node_id ORDER BY timestamp DESC) AS r \
                     FROM states) WHERE r = 1",
        duckdb: "SELECT node_id, koa_metric FROM (SELECT node_id, koa_metric, \
                 row_number() OVER (PARTITION BY node_id ORDER BY timestamp DESC) AS r \
                 FROM states) WHERE r = 1",
        check: "koa_metric",
    },
    Query {
        name: "dead letters by reason",
        datafusion: "SELECT reason, count(*) AS n FROM dead_letters GROUP BY reason",
        duckdb: "SELECT reason, count(*) AS n FROM dead_letters GROUP BY reason",
        check: "n",
    },
    Query {
        name: "period per node and metric (rhythms)",
        datafusion: "SELECT node_id, metric, avg(period_hours) AS p, max(power) AS pw \
                     FROM rhythms GROUP BY node_id, metric",
        duckdb: "SELECT node_id, metric, avg(period_hours) AS p, max(power) AS pw \
                 FROM rhythms GROUP BY node_id, metric",
        check: "p",
    },
];

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// A day of `nodes` nodes, one line in 997 made malformed (spread over the nodes), replayed
/// into `dir/lake`.
fn make_lake(dir: &Path, nodes: usize) -> PathBuf {
    let log = dir.join("log.csv");
    common::ok(&[
        "datasets",
        "generate",
        "--nodes",
        &nodes.to_string(),
        "--days",
        "1",
        "--seed",
        "42",
        "--output",
        log.to_str().unwrap(),
    ]);
    let text = std::fs::read_to_string(&log).unwrap();
    let mut out = std::io::BufWriter::new(std::fs::File::create(&log).unwrap());
    for (i, line) in text.lines().enumerate() {
        if i > 0 && i % 997 == 0 {
            // A temperature that is not a number: a PARSE_ERROR dead letter.
            let broken = line.replacen(",2", ",x2", 1);
            writeln!(out, "{broken}").unwrap();
        } else {
            writeln!(out, "{line}").unwrap();
        }
    }
    out.flush().unwrap();
    drop(out);
    let lake = dir.join("lake");
    common::ok(&[
        "replay",
        log.to_str().unwrap(),
        "--workers",
        "2",
        "--lake",
        lake.to_str().unwrap(),
    ]);
    lake
}

/// A result's row count and the sum of `column` (any numeric type).
fn check(batches: &[arrow::array::RecordBatch], column: &str) -> (u64, f64) {
    let mut rows = 0;
    let mut sum = 0.0;
    for b in batches {
        rows += b.num_rows() as u64;
        let c = b.column_by_name(column).expect("the check column");
        let c = arrow::compute::cast(c, &arrow::datatypes::DataType::Float64).unwrap();
        sum += c
            .as_primitive::<Float64Type>()
            .iter()
            .flatten()
            .sum::<f64>();
    }
    (rows, sum)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    alloc::no_transparent_huge_pages();
    let bench = std::env::args().any(|a| a == "--bench");
    let reps: usize = if bench {
        env_or("KAIABC_BENCH_SQL_REPS", 5)
    } else {
        1
    };
    let tmp = tempfile::tempdir().unwrap();
    let lake = match std::env::var("KAIABC_BENCH_SQL_LAKE") {
        Ok(p) => PathBuf::from(p),
        Err(_) => {
            let nodes = if bench {
                env_or("KAIABC_BENCH_SQL_NODES", 2000)
            } else {
                20
            };
            let t = Instant::now();
            let lake = make_lake(tmp.path(), nodes);
            println!(
                "# made a lake of {nodes} nodes × 1 day in {:.1} s",
                t.elapsed().as_secs_f64()
            );
            lake
        }
    };
    let threads = 2;

    // DuckDB, in its own process: every query's runs and its check.
    let only = std::env::var("KAIABC_BENCH_SQL_ONLY").unwrap_or_default();
    let chosen: Vec<&Query> = QUERIES.iter().filter(|q| q.name.contains(&only)).collect();
    let queries: Vec<_> = chosen
        .iter()
        .map(|q| serde_json::json!({"name": q.name, "duckdb": q.duckdb, "check": q.check}))
        .collect();
    let mut py = Command::new(common::deploy::python())
        .arg(common::deploy::root().join("scripts/bench_sql_duckdb.py"))
        .arg(&lake)
        .arg(reps.to_string())
        .arg(threads.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python");
    py.stdin
        .take()
        .unwrap()
        .write_all(serde_json::to_string(&queries).unwrap().as_bytes())
        .unwrap();
    let out = py.wait_with_output().unwrap();
    assert!(out.status.success(), "bench_sql_duckdb.py failed");
    let duck: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();

    // DataFusion, here.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .unwrap();
    println!("| query | DataFusion median ms | DuckDB median ms | DataFusion / DuckDB | rows |");
    println!("|---|---|---|---|---|");
    rt.block_on(async {
        let ctx = kaiabc_connectors::lake::session(&lake).await.unwrap();
        for (q, d) in chosen.iter().zip(&duck) {
            // One run before timing, as on DuckDB's side; it also gives the check.
            let first = kaiabc_connectors::lake::collect(&ctx, q.datafusion)
                .await
                .unwrap();
            let (rows, sum) = check(&first, q.check);
            let (drows, dsum) = (
                d["rows"].as_u64().unwrap(),
                d["sum"].as_f64().unwrap_or(0.0),
            );
            assert_eq!(
                rows, drows,
                "{}: DataFusion {rows} rows, DuckDB {drows}",
                q.name
            );
            assert!(
                (sum - dsum).abs() <= 1e-9 * dsum.abs().max(1.0),
                "{}: DataFusion sums {sum}, DuckDB {dsum}",
                q.name
            );
            let mut runs = Vec::with_capacity(reps);
            for _ in 0..reps {
                let t = Instant::now();
                let b = kaiabc_connectors::lake::collect(&ctx, q.datafusion)
                    .await
                    .unwrap();
                runs.push(t.elapsed().as_secs_f64() * 1e3);
                std::hint::black_box(b);
            }
            let ms: Vec<f64> = d["ms"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect();
            let (ours, theirs) = (median(runs), median(ms));
            println!(
                "| {} | {ours:.1} | {theirs:.1} | {:.2} | {rows} |",
                q.name,
                ours / theirs
            );
        }
    });
}
