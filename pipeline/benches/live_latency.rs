//! Latency from an MQTT publish to its PUBACK (the reading is fsync'd in the write-ahead log)
//! and to the WebSocket event of its state, through a running `kaiabc run` (embedded broker,
//! release build): p50 / p99 / max at fixed publish rates.
//!
//! Every node has its own MQTT connection, as in the field. `cargo bench -p kaiabc-pipeline
//! --bench live_latency` runs 1 000 and 10 000 readings/s for 10 s each in three set-ups, each
//! against its own server:
//!
//! 1. the lake written inline on the dataflow worker (`--lake-inline`), anonymous MQTT: the
//!    baseline of the lake's writing thread;
//! 2. the writing thread, anonymous MQTT (the gate checks no login): the baseline of logins;
//! 3. the writing thread, every node logged in with its own key through the gate: the default;
//! 4. as 3 with `--wal-no-fsync` (acknowledged once written, not synced): what syncing costs.
//!
//! `KAIABC_BENCH_RATES=1000,10000`, `KAIABC_BENCH_SECONDS=10` and `KAIABC_BENCH_NODES=1000`
//! change the load. Under `cargo test` it runs set-up 3 once at 200 readings/s for 1 s over 20
//! nodes as a smoke test. Nothing is asserted about speed; the figures are printed.

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::live::{launch, request, token};
use futures_util::{SinkExt, StreamExt};
use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS};
use tokio_tungstenite::tungstenite::Message;

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
    /// Publish → PUBACK.
    ack_p50: Duration,
    ack_p99: Duration,
    seconds: f64,
}

/// One connected MQTT client per node.
struct Nodes {
    clients: Vec<AsyncClient>,
    pollers: Vec<tokio::task::JoinHandle<()>>,
    /// Publish → PUBACK times, as the clients' event loops see them.
    acks: Arc<Mutex<Vec<Duration>>>,
}

impl Drop for Nodes {
    fn drop(&mut self) {
        for p in &self.pollers {
            p.abort();
        }
    }
}

/// Connects `{tag}-0` … `{tag}-{n-1}`, each logged in with its key when `keys` is given, a
/// few at a time (a first login costs an argon2 check), and waits until all are in.
async fn connect_nodes(mqtt: u16, tag: &str, n: usize, keys: Option<&[String]>) -> Nodes {
    let mut clients = Vec::with_capacity(n);
    let mut pollers = Vec::with_capacity(n);
    let acks: Arc<Mutex<Vec<Duration>>> = Arc::default();
    for batch in (0..n).collect::<Vec<_>>().chunks(16) {
        let mut ready = Vec::new();
        for &i in batch {
            let node = format!("{tag}-{i}");
            let mut o = MqttOptions::new(node.clone(), "127.0.0.1", mqtt);
            o.set_keep_alive(Duration::from_secs(60));
            o.set_inflight(1000);
            if let Some(keys) = keys {
                o.set_credentials(node, keys[i].clone());
            }
            let (client, mut events) = AsyncClient::new(o, 10_000);
            events.network_options.set_tcp_nodelay(true);
            events.network_options.set_connection_timeout(30);
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            let acks = Arc::clone(&acks);
            pollers.push(tokio::spawn(async move {
                let mut tx = Some(tx);
                let mut out: HashMap<u16, Instant> = HashMap::new();
                loop {
                    match events.poll().await {
                        Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                            if let Some(tx) = tx.take() {
                                let _ = tx.send(());
                            }
                        }
                        Ok(Event::Outgoing(rumqttc::Outgoing::Publish(pkid))) => {
                            out.insert(pkid, Instant::now());
                        }
                        Ok(Event::Incoming(Incoming::PubAck(a))) => {
                            if let Some(t0) = out.remove(&a.pkid) {
                                acks.lock().unwrap().push(t0.elapsed());
                            }
                        }
                        Ok(_) => {}
                        // rumqttc reconnects on the next poll.
                        Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                    }
                }
            }));
            clients.push(client);
            ready.push(rx);
        }
        for r in ready {
            tokio::time::timeout(Duration::from_secs(60), r)
                .await
                .expect("a node connects")
                .unwrap();
        }
    }
    Nodes {
        clients,
        pollers,
        acks,
    }
}

/// Registers `{tag}-0` … `{tag}-{n-1}` with the server: their API keys.
fn register_nodes(http: SocketAddr, tag: &str, n: usize) -> Vec<String> {
    let admin = format!("Bearer {}", token("admin"));
    (0..n)
        .map(|i| {
            let (status, body) = request(
                http,
                "POST",
                "/v1/sensors/nodes",
                &[("Authorization", &admin)],
                &format!(r#"{{"node_id":"{tag}-{i}"}}"#),
            );
            assert_eq!(status, 201, "{body}");
            body["api_key"].as_str().unwrap().to_string()
        })
        .collect()
}

/// Publishes `rate` readings/s for `seconds` over the nodes `{tag}-*`, with sequence numbers
/// from `first_seq`, and measures publish → WebSocket state latency.
async fn run(
    http: SocketAddr,
    nodes_: &Nodes,
    tag: &str,
    first_seq: u64,
    rate: usize,
    seconds: u64,
) -> Figures {
    let clients = &nodes_.clients;
    let nodes = clients.len();
    nodes_.acks.lock().unwrap().clear();
    let url = format!("ws://{http}/v1/ws?token={}", token("observer"));
    let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .unwrap();
    let sub = serde_json::json!({"type": "subscribe",
        "streams": [format!("oscillator.state.{tag}-*")]});
    ws.send(Message::text(sub.to_string())).await.unwrap();
    // The ack.
    let _ = ws.next().await;
    let total = rate * seconds as usize;
    // Sized up front: growing it rehashes ~10^5 entries under the lock the receiver needs too,
    // a stall of the bench itself that showed as the run's slowest second.
    let sent_at: Arc<Mutex<HashMap<(usize, u64), Instant>>> =
        Arc::new(Mutex::new(HashMap::with_capacity(total)));
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
    let started = Instant::now();
    // Nodes publish independently: every millisecond, whatever the rate has made due since
    // the start (10 at a time at 10 000/s), not bursts of a hundred every 10 ms, which queue
    // behind one another and measure the burst rather than the pipeline.
    let mut interval = tokio::time::interval(Duration::from_millis(1));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut k = 0usize;
    while k < total {
        interval.tick().await;
        let due = ((started.elapsed().as_secs_f64() * rate as f64) as usize).min(total);
        while k < due {
            let (node, seq) = (k % nodes, first_seq + (k / nodes) as u64);
            let payload = reading(&format!("{tag}-{node}"), seq);
            sent_at.lock().unwrap().insert((node, seq), Instant::now());
            clients[node]
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
    let mut acks = std::mem::take(&mut *nodes_.acks.lock().unwrap());
    acks.sort();
    let ack_q = |p: f64| {
        acks.get(((acks.len() as f64 * p) as usize).min(acks.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
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
        ack_p50: ack_q(0.50),
        ack_p99: ack_q(0.99),
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
        "MQTT publish (QoS 1) -> WebSocket oscillator.state event, embedded broker, {nodes} nodes, one connection each"
    );
    println!("| set-up | rate (readings/s) | sent | received | achieved (/s) | PUBACK p50 | PUBACK p99 | state p50 | state p99 | state max |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    // Each set-up runs against its own server, one after the other in this process.
    let modes: &[(&str, &[&str], bool)] = if bench {
        &[
            (
                "inline lake, anonymous (baseline)",
                &["--lake-inline", "--mqtt-anonymous"],
                false,
            ),
            ("writer thread, anonymous", &["--mqtt-anonymous"], false),
            ("writer thread, node logins (gate)", &[], true),
            (
                "node logins, log not synced (--wal-no-fsync)",
                &["--wal-no-fsync"],
                true,
            ),
        ]
    } else {
        &[("writer thread, node logins (gate)", &[], true)]
    };
    // `KAIABC_BENCH_SETUPS=2,3` runs only those set-ups (numbered from 1, as above).
    let setups: Option<Vec<usize>> = std::env::var("KAIABC_BENCH_SETUPS")
        .ok()
        .map(|v| v.split(',').map(|n| n.trim().parse().unwrap()).collect());
    for (i, (mode, extra, logins)) in modes.iter().enumerate() {
        if setups.as_ref().is_some_and(|s| !s.contains(&(i + 1))) {
            continue;
        }
        let dir = tempfile::tempdir().unwrap();
        // Every simulated node connects from 127.0.0.1.
        let flags = [*extra, &["--mqtt-max-connections-per-address", "100000"]].concat();
        let (server, http, mqtt) = launch(&dir.path().join("lake"), &flags);
        let tag = "n";
        let keys = logins.then(|| register_nodes(http, tag, nodes));
        let clients = rt.block_on(connect_nodes(mqtt, tag, nodes, keys.as_deref()));
        // Each rate continues the nodes' sequences (and event times) where the last stopped.
        let mut first_seq = 0;
        for rate in &rates {
            let f = rt.block_on(run(http, &clients, tag, first_seq, *rate, seconds));
            first_seq += (rate * seconds as usize).div_ceil(nodes) as u64;
            println!(
                "| {mode} | {rate} | {} | {} | {:.0} | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms |",
                f.sent,
                f.received,
                f.sent as f64 / f.seconds,
                f.ack_p50.as_secs_f64() * 1e3,
                f.ack_p99.as_secs_f64() * 1e3,
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
        rt.block_on(async { drop(clients) });
        drop(server);
    }
}
