//! Latency from an MQTT publish to the WebSocket event of its state, through a running
//! `kaiabc run` (embedded broker, release build): p50 / p99 / max at fixed publish rates.
//!
//! `cargo bench -p kaiabc-pipeline --bench live_latency` runs 1 000 and 10 000 readings/s for
//! 10 s each, first with the lake written inline on the dataflow worker (`--lake-inline`, the
//! baseline), then with the writing thread (the default) (`KAIABC_BENCH_RATES=1000,10000`, `KAIABC_BENCH_SECONDS=10`, `KAIABC_BENCH_NODES`
//! nodes, default 1 000). Under `cargo test` it runs once at 200 readings/s for 1 s as a smoke
//! test. Nothing is asserted about speed; the figures are printed.

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::io::Read;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::live::{free_port, token, SECRET};
use futures_util::{SinkExt, StreamExt};
use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS};
use tokio_tungstenite::tungstenite::Message;

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

fn start(dir: &std::path::Path, extra: &[&str]) -> (Server, SocketAddr, u16) {
    let (http_port, mqtt_port) = (free_port(), free_port());
    let http: SocketAddr = format!("127.0.0.1:{http_port}").parse().unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_kaiabc"))
        .args([
            "run",
            "--http",
            &http.to_string(),
            "--mqtt-listen",
            &format!("127.0.0.1:{mqtt_port}"),
            "--lake",
            dir.join("lake").to_str().unwrap(),
            "--state-dir",
            dir.join("state").to_str().unwrap(),
            "--mqtt-anonymous",
        ])
        .args(extra)
        .env("KAIABC_JWT_SECRET", SECRET)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(mut s) = std::net::TcpStream::connect(http) {
            use std::io::Write;
            let _ = write!(
                s,
                "GET /v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            );
            let mut t = String::new();
            let _ = s.read_to_string(&mut t);
            if t.starts_with("HTTP/1.1 200") {
                break;
            }
        }
        assert!(Instant::now() < deadline, "kaiabc run did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    (Server(child), http, mqtt_port)
}

fn reading(node: &str, seq: u64) -> String {
    // Event times one second apart from a fixed past day: in order per node, never future.
    let t = chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z").unwrap()
        + chrono::Duration::seconds(seq as i64);
    serde_json::json!({
        "node_id": node, "seq": seq,
        "timestamp": t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        "temperature_kelvin": 300.0 + (seq % 10) as f64 * 0.1,
        "humidity_percent": 40.0, "pressure_pa": 101000.0, "sensor_type": "BME280",
    })
    .to_string()
}

struct Figures {
    /// Readings at or above p99, by the second of the run they were sent in.
    slow_per_second: Vec<usize>,
    sent: usize,
    received: usize,
    p50: Duration,
    p99: Duration,
    max: Duration,
    seconds: f64,
}

/// Publishes `rate` readings/s for `seconds` over `nodes` nodes (prefix `run`) and measures
/// publish → WebSocket state latency.
async fn run(
    http: SocketAddr,
    mqtt: u16,
    tag: &str,
    rate: usize,
    seconds: u64,
    nodes: usize,
) -> Figures {
    let url = format!("ws://{http}/v1/ws?token={}", token("observer"));
    let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .unwrap();
    let sub = serde_json::json!({"type": "subscribe",
        "streams": [format!("oscillator.state.{tag}-*")]});
    ws.send(Message::text(sub.to_string())).await.unwrap();
    // The ack.
    let _ = ws.next().await;
    let sent_at: Arc<Mutex<HashMap<(usize, u64), Instant>>> = Arc::default();
    let total = rate * seconds as usize;
    let receiver = {
        let sent_at = Arc::clone(&sent_at);
        let tag = tag.to_string();
        tokio::spawn(async move {
            let mut lat = Vec::with_capacity(total);
            let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds + 10);
            while lat.len() < total {
                let m = match tokio::time::timeout_at(deadline, ws.next()).await {
                    Ok(Some(Ok(m))) => m,
                    _ => break,
                };
                let now = Instant::now();
                let Message::Text(t) = m else { continue };
                let v: serde_json::Value = serde_json::from_str(t.as_str()).unwrap();
                if v["type"] != "event" {
                    continue;
                }
                let node = v["data"]["node_id"].as_str().unwrap_or("");
                let Some(n) = node
                    .strip_prefix(&format!("{tag}-"))
                    .and_then(|n| n.parse::<usize>().ok())
                else {
                    continue;
                };
                let seq = v["data"]["seq"].as_u64().unwrap_or(0);
                if let Some(t0) = sent_at.lock().unwrap().get(&(n, seq)) {
                    lat.push((*t0, now - *t0));
                }
            }
            lat
        })
    };
    let mut o = MqttOptions::new(format!("bench-{tag}"), "127.0.0.1", mqtt);
    o.set_keep_alive(Duration::from_secs(30));
    o.set_inflight(1000);
    let (client, mut events) = AsyncClient::new(o, 10_000);
    events.network_options.set_tcp_nodelay(true);
    let poller = tokio::spawn(async move {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Incoming::Disconnect)) | Err(_) => break,
                _ => {}
            }
        }
    });
    let started = Instant::now();
    let mut interval = tokio::time::interval(Duration::from_millis(10));
    let per_tick = rate / 100;
    let mut k = 0usize;
    while k < total {
        interval.tick().await;
        for _ in 0..per_tick.max(1) {
            if k >= total {
                break;
            }
            let (node, seq) = (k % nodes, (k / nodes) as u64);
            let payload = reading(&format!("{tag}-{node}"), seq);
            sent_at.lock().unwrap().insert((node, seq), Instant::now());
            client
                .publish(
                    format!("kaiabc/sensors/{tag}-{node}"),
                    QoS::AtLeastOnce,
                    false,
                    payload,
                )
                .await
                .unwrap();
            k += 1;
        }
    }
    let seconds_taken = started.elapsed().as_secs_f64();
    let timed = receiver.await.unwrap();
    let _ = client.disconnect().await;
    poller.abort();
    let mut lat: Vec<Duration> = timed.iter().map(|(_, l)| *l).collect();
    lat.sort();
    // Where in the run the slowest 1 % were sent, per second: a tail that comes in bursts at a
    // fixed period points at a periodic stall (commits, checkpoints), a spread one at load.
    let p99 = lat.get(lat.len() * 99 / 100).copied().unwrap_or_default();
    let mut per_second = vec![0usize; seconds as usize + 11];
    for (t0, l) in &timed {
        if *l >= p99 {
            let s = t0.saturating_duration_since(started).as_secs() as usize;
            if let Some(c) = per_second.get_mut(s) {
                *c += 1;
            }
        }
    }
    while per_second.last() == Some(&0) {
        per_second.pop();
    }
    let q = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    Figures {
        slow_per_second: per_second,
        sent: total,
        received: lat.len(),
        p50: q(0.50),
        p99: q(0.99),
        max: lat.last().copied().unwrap_or_default(),
        seconds: seconds_taken,
    }
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let env = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_string());
    let (rates, seconds, nodes): (Vec<usize>, u64, usize) = if bench {
        (
            env("KAIABC_BENCH_RATES", "1000,10000")
                .split(',')
                .map(|r| r.trim().parse().unwrap())
                .collect(),
            env("KAIABC_BENCH_SECONDS", "10").parse().unwrap(),
            env("KAIABC_BENCH_NODES", "1000").parse().unwrap(),
        )
    } else {
        (vec![200], 1, 20)
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!(
        "MQTT publish (QoS 1) -> WebSocket oscillator.state event, embedded broker, {nodes} nodes"
    );
    println!(
        "| lake writing | rate (readings/s) | sent | received | achieved (/s) | p50 | p99 | max |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    // The baseline writes the lake on the dataflow worker (as before the writing thread);
    // both run in the same process of this bench, one after the other.
    let modes: &[(&str, &[&str])] = if bench {
        &[
            ("inline (baseline)", &["--lake-inline"]),
            ("writer thread", &[]),
        ]
    } else {
        &[("writer thread", &[])]
    };
    for (mode, extra) in modes {
        let dir = tempfile::tempdir().unwrap();
        let (server, http, mqtt) = start(dir.path(), extra);
        for (i, rate) in rates.iter().enumerate() {
            let f = rt.block_on(run(http, mqtt, &format!("r{i}"), *rate, seconds, nodes));
            println!(
                "| {mode} | {rate} | {} | {} | {:.0} | {:.2} ms | {:.2} ms | {:.2} ms |",
                f.sent,
                f.received,
                f.sent as f64 / f.seconds,
                f.p50.as_secs_f64() * 1e3,
                f.p99.as_secs_f64() * 1e3,
                f.max.as_secs_f64() * 1e3,
            );
            eprintln!(
                "{mode}, {rate}/s: readings at or above p99 by second sent: {:?}",
                f.slow_per_second
            );
            assert!(f.received > 0, "no state reached the WebSocket");
        }
        drop(server);
    }
}
