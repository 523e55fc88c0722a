//! Acknowledged readings per second over HTTP (`POST /v1/sensors/batch`, 100 readings a
//! request) through a running `kaiabc run` (release build), with every answer given only once
//! the request is fsync'd in the write-ahead log, against the same run with `--wal-no-fsync`
//! (acknowledged once written, not synced: what durability costs) in the same process.
//!
//! `cargo bench -p kaiabc-pipeline --bench ingest_throughput` runs each set-up for
//! `KAIABC_BENCH_SECONDS` (10) with `KAIABC_BENCH_CLIENTS` (16) keep-alive connections, one
//! node each. Under `cargo test` it runs each set-up for 1 s with 2 clients as a smoke test.
//! Nothing is asserted about speed; the figures are printed.

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::live::{launch, read_status, request, stop, token};

const BATCH: usize = 100;

/// The body of request `k` of `node`: readings `k*BATCH+1 …`, one second apart.
fn body(node: &str, k: usize) -> String {
    let t0 = chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z").unwrap();
    let items: Vec<serde_json::Value> = (0..BATCH)
        .map(|i| {
            let seq = (k * BATCH + i + 1) as i64;
            let t = t0 + chrono::Duration::seconds(seq);
            serde_json::json!({
                "node_id": node, "seq": seq,
                "timestamp": t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
                "temperature_kelvin": 300.0 + (seq % 10) as f64 * 0.1,
                "humidity_percent": 40.0, "pressure_pa": 101000.0, "sensor_type": "BME280",
            })
        })
        .collect();
    serde_json::Value::Array(items).to_string()
}

struct Run {
    acked: usize,
    refused: usize,
    latencies: Vec<Duration>,
}

/// One client: posts its node's batches back to back until `until`.
fn client(http: SocketAddr, node: String, key: String, until: Instant) -> Run {
    let s = TcpStream::connect(http).unwrap();
    s.set_nodelay(true).unwrap();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    let mut run = Run {
        acked: 0,
        refused: 0,
        latencies: Vec::new(),
    };
    let mut k = 0;
    while Instant::now() < until {
        let b = body(&node, k);
        let head = format!(
            "POST /v1/sensors/batch HTTP/1.1\r\nHost: localhost\r\nX-API-Key: {key}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            b.len()
        );
        let sent = Instant::now();
        w.write_all(head.as_bytes()).unwrap();
        w.write_all(b.as_bytes()).unwrap();
        match read_status(&mut r).unwrap() {
            202 => {
                run.acked += BATCH;
                run.latencies.push(sent.elapsed());
                k += 1;
            }
            _ => run.refused += 1,
        }
    }
    run
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let env = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_string());
    let (seconds, clients): (u64, usize) = if bench {
        (
            env("KAIABC_BENCH_SECONDS", "10").parse().unwrap(),
            env("KAIABC_BENCH_CLIENTS", "16").parse().unwrap(),
        )
    } else {
        (1, 2)
    };
    println!(
        "HTTP POST /v1/sensors/batch ({BATCH} readings a request), {clients} keep-alive clients, {seconds} s"
    );
    println!("| set-up | acknowledged readings/s | requests | refused | p50 | p99 | fdatasyncs |");
    println!("|---|---|---|---|---|---|---|");
    for (name, flags) in [
        (
            "written, not synced (--wal-no-fsync)",
            &["--wal-no-fsync"][..],
        ),
        ("fsync'd before the answer (default)", &[][..]),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let lake = dir.path().join("lake");
        let (server, http, _) = launch(&lake, flags);
        let admin = token("admin");
        let auth = format!("Bearer {admin}");
        let mut keys = Vec::new();
        for i in 0..clients {
            let node = format!("ingest_{i}");
            let (status, reg) = request(
                http,
                "POST",
                "/v1/sensors/nodes",
                &[("Authorization", auth.as_str())],
                &serde_json::json!({"node_id": node}).to_string(),
            );
            assert_eq!(status, 201, "{reg}");
            keys.push((node, reg["api_key"].as_str().unwrap().to_string()));
        }
        let started = Instant::now();
        let until = started + Duration::from_secs(seconds);
        let runs: Vec<Run> = std::thread::scope(|s| {
            let handles: Vec<_> = keys
                .iter()
                .cloned()
                .map(|(node, key)| s.spawn(move || client(http, node, key, until)))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let elapsed = started.elapsed().as_secs_f64();
        let metrics = common::live::get_text(http, "/metrics").1;
        let syncs = metrics
            .lines()
            .find_map(|l| l.strip_prefix("kaiabc_wal_syncs_total "))
            .unwrap_or("?")
            .to_string();
        stop(server);
        let acked: usize = runs.iter().map(|r| r.acked).sum();
        let refused: usize = runs.iter().map(|r| r.refused).sum();
        let mut lat: Vec<Duration> = runs.into_iter().flat_map(|r| r.latencies).collect();
        lat.sort();
        let q = |p: f64| {
            lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
                .copied()
                .unwrap_or_default()
        };
        println!(
            "| {name} | {:.0} | {} | {refused} | {:.2} ms | {:.2} ms | {syncs} |",
            acked as f64 / elapsed,
            lat.len(),
            q(0.5).as_secs_f64() * 1e3,
            q(0.99).as_secs_f64() * 1e3,
        );
    }
}
