//! WebSocket fan-out: one node's states to many subscribers of `oscillator.state.{node}`,
//! through a running `kaiabc run` (release build). Prints p50 / p99 / max latency from the
//! MQTT publish to each subscriber's event, and how many of the events arrived, for 1
//! subscriber (the baseline, same run) and for `KAIABC_BENCH_SUBSCRIBERS` (default 10 000).
//! With `KAIABC_BENCH_DUMP=<prefix>`, every delivery's reading and latency (µs) are written to
//! `<prefix>.<subscribers>`, one per line, to see how each reading's deliveries spread.
//! The server's and the clients' CPU time while the readings go out is printed beside the
//! latencies: clients and server share the machine's cores, so both bound the latency.
//!
//! `cargo bench -p kaiabc-pipeline --bench ws_fanout`. Under `cargo test` it runs once with 20
//! subscribers as a smoke test. Nothing is asserted about speed.

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::live::{cpu_time, start_with, token};
use futures_util::{SinkExt, StreamExt};
use rumqttc::{AsyncClient, MqttOptions, QoS};
use tokio_tungstenite::tungstenite::Message;

/// Readings published per round, 200 ms apart.
const READINGS: i64 = 20;

struct Figures {
    subscribers: usize,
    expected: usize,
    received: usize,
    p50: Duration,
    p99: Duration,
    max: Duration,
    connect: Duration,
    /// CPU time of the server and of this bench's clients while the readings went out.
    server_cpu: Duration,
    clients_cpu: Duration,
}

/// What a subscriber reads of a message: its type and its state's `seq`. The clients run on
/// the same two cores as the server, so each reads no more than it needs (a whole
/// `serde_json::Value` per event was as much work as the server's delivery).
#[derive(serde::Deserialize)]
struct Seen<'a> {
    #[serde(rename = "type", borrow)]
    kind: std::borrow::Cow<'a, str>,
    #[serde(default)]
    data: Option<SeenData>,
}

#[derive(serde::Deserialize)]
struct SeenData {
    seq: Option<i64>,
}

fn reading(node: &str, seq: i64) -> String {
    serde_json::json!({
        "node_id": node,
        "seq": seq,
        "timestamp": format!("2026-01-05T{:02}:{:02}:00Z", seq / 60, seq % 60),
        "temperature_kelvin": 300.0,
        "sensor_type": "BME280",
    })
    .to_string()
}

async fn round(
    http: std::net::SocketAddr,
    mqtt: u16,
    server: u32,
    node: &str,
    subscribers: usize,
) -> Figures {
    let url = format!("ws://{http}/v1/ws?token={}", token("observer"));
    let started = Instant::now();
    // Connect in waves, so the listen backlog is never the thing measured.
    let mut sockets = Vec::with_capacity(subscribers);
    for wave in (0..subscribers).collect::<Vec<_>>().chunks(500) {
        let conns = futures_util::future::join_all(wave.iter().map(|_| {
            let url = url.clone();
            let node = node.to_string();
            async move {
                // tungstenite zero-fills `read_buffer_size` bytes before every read (128 KiB by
                // default): 10 000 clients reading an event each spent 40 % of the two cores
                // the server also runs on in `memset`. An event is under 1 KiB; 4 KiB reads
                // measure the server, not the clients' buffer clearing.
                let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
                    .read_buffer_size(4096);
                let (mut ws, _) =
                    tokio_tungstenite::connect_async_with_config(url.as_str(), Some(config), false)
                        .await
                        .unwrap();
                let sub = serde_json::json!({"type": "subscribe",
                    "streams": [format!("oscillator.state.{node}")]});
                ws.send(Message::text(sub.to_string())).await.unwrap();
                let _ack = ws.next().await;
                ws
            }
        }))
        .await;
        sockets.extend(conns);
    }
    let connect = started.elapsed();
    let sent_at: Arc<Mutex<Vec<Option<Instant>>>> =
        Arc::new(Mutex::new(vec![None; READINGS as usize + 1]));
    let readers: Vec<_> = sockets
        .into_iter()
        .map(|mut ws| {
            tokio::spawn(async move {
                let mut got: Vec<(i64, Instant)> = Vec::new();
                // One timer for the whole round: a timeout per message put each message's
                // wait in the timer wheel and took it out again.
                let deadline =
                    tokio::time::sleep(Duration::from_millis(200 * READINGS as u64 + 10_000));
                tokio::pin!(deadline);
                while got.len() < READINGS as usize {
                    let m = tokio::select! {
                        m = ws.next() => m,
                        _ = &mut deadline => break,
                    };
                    let Some(Ok(m)) = m else { break };
                    let now = Instant::now();
                    let Message::Text(t) = m else { continue };
                    let v: Seen = serde_json::from_str(t.as_str()).unwrap();
                    if v.kind == "event" {
                        got.push((v.data.and_then(|d| d.seq).unwrap_or(0), now));
                    }
                }
                // The socket is handed back, not dropped: a client that closes as soon as it
                // has every event makes the server tear its connection down while it is still
                // delivering the last event to the others, and that teardown was measured as
                // the last event's latency (its p50 was twice the other events').
                (got, ws)
            })
        })
        .collect();
    let server = server.to_string();
    let cpu_before = (cpu_time(&server), cpu_time("self"));
    let mut o = MqttOptions::new(format!("bench-{node}"), "127.0.0.1", mqtt);
    o.set_keep_alive(Duration::from_secs(30));
    let (client, mut events) = AsyncClient::new(o, 100);
    let poller = tokio::spawn(async move { while events.poll().await.is_ok() {} });
    for k in 1..=READINGS {
        sent_at.lock().unwrap()[k as usize] = Some(Instant::now());
        client
            .publish(
                format!("kaiabc/sensors/{node}"),
                QoS::AtLeastOnce,
                false,
                reading(node, k),
            )
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = client.disconnect().await;
    poller.abort();
    let mut lat = Vec::new();
    let mut dump = String::new();
    let mut finished = Vec::with_capacity(readers.len());
    for r in readers {
        let (got, ws) = r.await.unwrap();
        finished.push(ws);
        for (k, at) in got {
            if let Some(t0) = sent_at.lock().unwrap().get(k as usize).copied().flatten() {
                lat.push(at - t0);
                dump.push_str(&format!("{k} {}\n", (at - t0).as_micros()));
            }
        }
    }
    let server_cpu = cpu_time(&server).saturating_sub(cpu_before.0);
    let clients_cpu = cpu_time("self").saturating_sub(cpu_before.1);
    if let Ok(f) = std::env::var("KAIABC_BENCH_DUMP") {
        std::fs::write(format!("{f}.{subscribers}"), dump).unwrap();
    }
    drop(finished);
    lat.sort();
    let q = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    Figures {
        subscribers,
        expected: subscribers * READINGS as usize,
        received: lat.len(),
        p50: q(0.5),
        p99: q(0.99),
        max: *lat.last().unwrap(),
        connect,
        server_cpu,
        clients_cpu,
    }
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let many: usize = if bench {
        std::env::var("KAIABC_BENCH_SUBSCRIBERS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(10_000)
    } else {
        20
    };
    let dir = tempfile::tempdir().unwrap();
    // Every subscriber shares one token: lift its rate limit (each upgrade is a request), and
    // the cap on open connections.
    let connections = (many + 100).to_string();
    let (server, http, mqtt) = start_with(
        &dir.path().join("lake"),
        &[
            "--mqtt-anonymous",
            "--http-max-connections",
            &connections,
            "--http-max-connections-per-address",
            &connections,
        ],
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!(
        "MQTT publish (QoS 1) -> WebSocket oscillator.state event to every subscriber of one \
         node, {READINGS} readings 200 ms apart"
    );
    println!(
        "| subscribers | events received | p50 | p99 | max | connect all | server CPU | \
         clients' CPU |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let mut rounds = Vec::new();
    for (i, n) in [1, many].into_iter().enumerate() {
        let f = rt.block_on(round(http, mqtt, server.0.id(), &format!("fan{i}"), n));
        println!(
            "| {} | {} of {} | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} s | {:.2} s | {:.2} s |",
            f.subscribers,
            f.received,
            f.expected,
            f.p50.as_secs_f64() * 1e3,
            f.p99.as_secs_f64() * 1e3,
            f.max.as_secs_f64() * 1e3,
            f.connect.as_secs_f64(),
            f.server_cpu.as_secs_f64(),
            f.clients_cpu.as_secs_f64(),
        );
        rounds.push(f);
    }
    println!(
        "p99 ratio, {} subscribers against 1: {:.1}",
        many,
        rounds[1].p99.as_secs_f64() / rounds[0].p99.as_secs_f64()
    );
    // The server's CPU for each delivery beyond the baseline round's (which holds the readings'
    // own processing and the lake's commits).
    let deliveries = rounds[1].received.saturating_sub(rounds[0].received).max(1);
    println!(
        "server CPU per delivery: {:.1} µs; clients' CPU per delivery: {:.1} µs",
        rounds[1]
            .server_cpu
            .saturating_sub(rounds[0].server_cpu)
            .as_secs_f64()
            * 1e6
            / deliveries as f64,
        rounds[1]
            .clients_cpu
            .saturating_sub(rounds[0].clients_cpu)
            .as_secs_f64()
            * 1e6
            / deliveries as f64,
    );
}
