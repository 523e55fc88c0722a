//! A soak of `kaiabc run` under mixed valid and hostile traffic at once, reporting what a
//! hostile client can cost the valid ones: peak RSS, the p99 of acknowledged HTTP batches and
//! of `/v1/health`, and how many acknowledged readings are missing from the lake (goal 0).
//!
//! Valid: `KAIABC_SOAK_CLIENTS` (4) nodes posting batches of 100 readings, 10 a second each,
//! on keep-alive connections. Hostile, each on a thread of its own: idle connections opened
//! 100 at a time (beyond the connection cap), wrong API keys with a valid key id, 2 MB and
//! malformed bodies, readings dated 1970, and an MQTT client flooding another node's topic.
//!
//! `cargo bench -p kaiabc-pipeline --bench soak` runs `KAIABC_SOAK_SECONDS` (600); under
//! `cargo test` it runs 5 s as a smoke test. Nothing is asserted about speed; the figures are
//! printed.

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::live::{connect_from, csv, launch, read_status, request, request_on, stop, token};

/// Where the client trying wrong keys connects from (loopback, but not the valid nodes' address).
const ROGUE_ADDRESS: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));

const BATCH: usize = 100;

/// The body of batch `k` of `node`: readings a millisecond apart from a day ago.
fn body(node: &str, k: usize, t0: chrono::DateTime<chrono::Utc>) -> String {
    let items: Vec<serde_json::Value> = (0..BATCH)
        .map(|i| {
            let seq = (k * BATCH + i + 1) as i64;
            let t = t0 + chrono::Duration::milliseconds(seq);
            serde_json::json!({
                "node_id": node, "seq": seq,
                "timestamp": t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                "temperature_kelvin": 300.0 + (seq % 10) as f64 * 0.1,
                "sensor_type": "BME280",
            })
        })
        .collect();
    serde_json::Value::Array(items).to_string()
}

fn post(w: &mut TcpStream, path: &str, headers: &str, body: &[u8]) -> std::io::Result<()> {
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\n{headers}Content-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    w.write_all(head.as_bytes())?;
    w.write_all(body)
}

/// A valid node: batches at 10 a second until `stop`; its acknowledged readings and latencies.
fn valid(http: SocketAddr, node: String, key: String, stop: &AtomicBool) -> (u64, Vec<Duration>) {
    let t0 = chrono::Utc::now() - chrono::Duration::days(1);
    let (mut acked, mut lat, mut k) = (0u64, Vec::new(), 0usize);
    let mut conn: Option<(TcpStream, BufReader<TcpStream>)> = None;
    while !stop.load(Ordering::Relaxed) {
        let tick = Instant::now();
        if conn.is_none() {
            conn = TcpStream::connect(http).ok().map(|s| {
                let r = BufReader::new(s.try_clone().unwrap());
                (s, r)
            });
        }
        let Some((w, r)) = conn.as_mut() else {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        };
        let b = body(&node, k, t0);
        let sent = Instant::now();
        let ok = post(
            w,
            "/v1/sensors/batch",
            &format!("X-API-Key: {key}\r\n"),
            b.as_bytes(),
        )
        .and_then(|()| read_status(r));
        match ok {
            Ok(202) => {
                acked += BATCH as u64;
                lat.push(sent.elapsed());
                k += 1;
            }
            // Refused or cut off: sent again (the same batch) on a fresh connection.
            _ => conn = None,
        }
        std::thread::sleep(Duration::from_millis(100).saturating_sub(tick.elapsed()));
    }
    (acked, lat)
}

/// Runs `f` in a loop until `stop`, counting rounds.
fn hostile(stop: &AtomicBool, rounds: &AtomicU64, mut f: impl FnMut()) {
    while !stop.load(Ordering::Relaxed) {
        f();
        rounds.fetch_add(1, Ordering::Relaxed);
    }
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

fn p99(mut v: Vec<Duration>) -> f64 {
    v.sort();
    v.get(((v.len() as f64 * 0.99) as usize).min(v.len().saturating_sub(1)))
        .map_or(0.0, |d| d.as_secs_f64() * 1e3)
}

/// A raw MQTT CONNECT with a login (MQTT 3.1.1).
fn connect_packet(user: &str, pass: &str) -> Vec<u8> {
    let mut v = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0xC2, 0, 60];
    for s in ["soak-flood", user, pass] {
        v.extend_from_slice(&(s.len() as u16).to_be_bytes());
        v.extend_from_slice(s.as_bytes());
    }
    let mut p = vec![0x10, v.len() as u8];
    p.extend(v);
    p
}

/// A QoS 0 PUBLISH to `topic`.
fn publish_packet(topic: &str, payload: &[u8]) -> Vec<u8> {
    let len = 2 + topic.len() + payload.len();
    let mut p = vec![0x30, len as u8];
    p.extend_from_slice(&(topic.len() as u16).to_be_bytes());
    p.extend_from_slice(topic.as_bytes());
    p.extend_from_slice(payload);
    p
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let env = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_string());
    let seconds: u64 = if bench {
        env("KAIABC_SOAK_SECONDS", "600").parse().unwrap()
    } else {
        5
    };
    let clients: usize = env("KAIABC_SOAK_CLIENTS", "4").parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let (server, http, mqtt) = launch(
        &lake,
        &["--http-max-connections", "256", "--http-idle-seconds", "5"],
    );
    let pid = server.0.id();
    let auth = format!("Bearer {}", token("admin"));
    let register = |node: &str| {
        let (status, reg) = request(
            http,
            "POST",
            "/v1/sensors/nodes",
            &[("Authorization", auth.as_str())],
            &serde_json::json!({ "node_id": node }).to_string(),
        );
        assert_eq!(status, 201, "{reg}");
        reg["api_key"].as_str().unwrap().to_string()
    };
    let nodes: Vec<(String, String)> = (0..clients)
        .map(|i| {
            let n = format!("soak_{i}");
            let k = register(&n);
            (n, k)
        })
        .collect();
    let rogue_key = register("soak_rogue");
    let stop_all = AtomicBool::new(false);
    let counts: Vec<AtomicU64> = (0..5).map(|_| AtomicU64::new(0)).collect();
    println!(
        "kaiabc run for {seconds} s: {clients} valid nodes posting {BATCH}-reading batches 10 times a second, \
         while idle connections, wrong keys, oversized and malformed bodies, stale readings and an \
         MQTT flood of another node's topic go on"
    );
    let started = Instant::now();
    let (results, rss, health) = std::thread::scope(|s| {
        let valid_runs: Vec<_> = nodes
            .iter()
            .cloned()
            .map(|(n, k)| {
                let stop = &stop_all;
                s.spawn(move || valid(http, n, k, stop))
            })
            .collect();
        let (stop, c) = (&stop_all, &counts);
        s.spawn(move || {
            hostile(stop, &c[0], || {
                let held: Vec<_> = (0..100)
                    .filter_map(|_| TcpStream::connect(http).ok())
                    .collect();
                std::thread::sleep(Duration::from_millis(500));
                drop(held);
            })
        });
        let wrong = format!("{rogue_key}x");
        s.spawn(move || {
            let mut i = 0u64;
            hostile(stop, &c[1], || {
                i += 1;
                // From an address of its own: after 20 failures a minute the server refuses
                // that address without checking, and the valid nodes' address stays open.
                if let Ok(s) = connect_from(ROGUE_ADDRESS, http) {
                    let _ = request_on(
                        s,
                        "POST",
                        "/v1/sensors/temperature",
                        &[("X-API-Key", &format!("{wrong}{i}"))],
                        "{}",
                    );
                }
            })
        });
        let rogue = rogue_key.clone();
        s.spawn(move || {
            let big = vec![b'x'; 2 * 1024 * 1024];
            hostile(stop, &c[2], || {
                if let Ok(mut w) = TcpStream::connect(http) {
                    let _ = post(&mut w, "/v1/sensors/batch", &format!("X-API-Key: {rogue}\r\n"), &big);
                }
                let _ = request(http, "POST", "/v1/sensors/batch", &[("X-API-Key", &rogue)], "{[");
                let stale = r#"{"node_id":"soak_rogue","timestamp":"1970-01-01T00:00:00Z","temperature_kelvin":300.0}"#;
                let _ = request(http, "POST", "/v1/sensors/temperature", &[("X-API-Key", &rogue)], stale);
            })
        });
        let rogue = rogue_key.clone();
        s.spawn(move || {
            let publish = publish_packet("kaiabc/sensors/soak_0", b"{\"not\":\"mine\"}");
            hostile(stop, &c[3], || {
                let Ok(mut sock) = TcpStream::connect(("127.0.0.1", mqtt)) else {
                    return;
                };
                let _ = sock.write_all(&connect_packet("soak_rogue", &rogue));
                for _ in 0..1000 {
                    if sock.write_all(&publish).is_err() {
                        break;
                    }
                }
                std::thread::sleep(Duration::from_millis(50));
            })
        });
        // Watch the server: RSS every second, /v1/health every half second.
        let mut rss = Vec::new();
        let mut health = Vec::new();
        while started.elapsed() < Duration::from_secs(seconds) {
            rss.push(rss_kb(pid));
            for _ in 0..2 {
                let t = Instant::now();
                let (status, _) = request(http, "GET", "/v1/health", &[], "");
                if status == 200 {
                    health.push(t.elapsed());
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        }
        stop_all.store(true, Ordering::Relaxed);
        let results: Vec<_> = valid_runs.into_iter().map(|h| h.join().unwrap()).collect();
        (results, rss, health)
    });
    let elapsed = started.elapsed().as_secs_f64();
    stop(server);
    let acked: u64 = results.iter().map(|r| r.0).sum();
    let lat: Vec<Duration> = results.into_iter().flat_map(|r| r.1).collect();
    let in_lake: u64 = csv(
        &lake,
        "SELECT count(*) AS n FROM readings WHERE node_id LIKE 'soak\\_%' ESCAPE '\\' AND node_id <> 'soak_rogue'",
    )
    .lines()
    .nth(1)
    .and_then(|l| l.parse().ok())
    .unwrap_or(0);
    let lost = acked.saturating_sub(in_lake);
    println!("| seconds | acknowledged readings | lost | batch p99 | health p99 | health answers | peak RSS | idle rounds | wrong keys | bad bodies | MQTT floods |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    println!(
        "| {elapsed:.0} | {acked} | {lost} | {:.1} ms | {:.1} ms | {} | {:.0} MB | {} | {} | {} | {} |",
        p99(lat),
        p99(health.clone()),
        health.len(),
        rss.iter().max().copied().unwrap_or(0) as f64 / 1024.0,
        counts[0].load(Ordering::Relaxed),
        counts[1].load(Ordering::Relaxed),
        counts[2].load(Ordering::Relaxed),
        counts[3].load(Ordering::Relaxed),
    );
}
