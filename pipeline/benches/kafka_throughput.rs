//! Sustained readings per second through the Kafka path: readings produced to
//! `kaiabc.readings` (as the bridge writes them) are consumed, validated, applied to their
//! nodes' clocks and published by a running `kaiabc run --kafka-brokers` (release build). The
//! baseline, measured in the same run, is `kaiabc replay` of the same readings from a JSONL
//! file: the dataflow without Kafka. Two figures: a backlog that waited in Kafka while the
//! server was down, caught up after its restart (like the replay, nothing else runs), and the
//! same number of readings again produced while it runs (the bench's producer shares the
//! cores).
//!
//! `cargo bench -p kaiabc-pipeline --bench kafka_throughput` (`KAIABC_BENCH_KAFKA_READINGS`,
//! default 200 000, over 1 000 nodes). The broker is tansu with in-memory storage. Under
//! `cargo test` it runs once with 2 000 readings as a smoke test. Nothing is asserted about speed.

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::kafka::tansu;
use common::live::{cpu_time, get_text, start_with, stop, wait_until};
use common::ok;
use kaiabc_connectors::kafka::{
    KafkaConfig, KafkaProducer, READINGS_TOPIC, RECEIVED_AT_HEADER, SOURCE_HEADER,
};

fn reading(node: usize, seq: usize) -> String {
    let t = chrono::DateTime::parse_from_rfc3339("2026-01-05T00:00:00Z").unwrap()
        + chrono::Duration::minutes(seq as i64);
    serde_json::json!({
        "node_id": format!("k-{node}"),
        "seq": seq,
        "timestamp": t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "temperature_kelvin": 298.0 + (seq % 10) as f64 * 0.3,
        "sensor_type": "BME280",
    })
    .to_string()
}

/// Readings applied so far, from `/metrics`.
fn applied(http: std::net::SocketAddr) -> u64 {
    let (_, text) = get_text(http, "/metrics");
    text.lines()
        .filter(|l| l.starts_with("kaiabc_sensor_readings_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// Waits until `/metrics` counts at least `n` readings applied, and returns when it saw them.
/// `/metrics` renders every node's gauges (about 3 ms for 1 000 nodes): polled every 20 ms
/// throughout, it took about 7 % of the server's CPU, which a Prometheus scraping every 15 s
/// never does. Polled every `every` until nine tenths are applied, then every 20 ms.
fn until_applied(http: std::net::SocketAddr, n: u64, every: Duration) -> Instant {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let done = applied(http);
        if done >= n {
            return Instant::now();
        }
        assert!(Instant::now() < deadline, "the pipeline did not finish");
        let nearly = done * 10 >= n * 9;
        std::thread::sleep(if nearly {
            Duration::from_millis(20)
        } else {
            every
        });
    }
}

/// CPU seconds the server has used so far.
fn cpu_of(server: &common::live::Server) -> f64 {
    cpu_time(&server.0.id().to_string()).as_secs_f64()
}

/// CPU seconds used so far by this process's children that have ended.
fn cpu_of_children() -> f64 {
    // SAFETY: getrusage fills the struct it is given.
    let u = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut u);
        u
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(u.ru_utime) + secs(u.ru_stime)
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let (n, nodes): (usize, usize) = if bench {
        let n = std::env::var("KAIABC_BENCH_KAFKA_READINGS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(200_000);
        (n, 1_000)
    } else {
        (2_000, 20)
    };
    let readings: Vec<(usize, String)> = (0..n)
        .map(|k| (k % nodes, reading(k % nodes, k / nodes + 1)))
        .collect();
    // A day after the first ones.
    let later: Vec<(usize, String)> = (0..n)
        .map(|k| (k % nodes, reading(k % nodes, k / nodes + 1 + 1_440)))
        .collect();
    let dir = tempfile::tempdir().unwrap();

    // The baseline: the same readings replayed from a file.
    let file = dir.path().join("readings.jsonl");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&file).unwrap());
    for (_, r) in &readings {
        writeln!(f, "{r}").unwrap();
    }
    drop(f);
    let t = Instant::now();
    let cpu = cpu_of_children();
    ok(&[
        "replay",
        file.to_str().unwrap(),
        "--lake",
        dir.path().join("replay-lake").to_str().unwrap(),
    ]);
    let replay = t.elapsed();
    let replay_cpu = cpu_of_children() - cpu;

    let (_broker, kafka) = tansu(dir.path(), "memory://tansu/");
    let lake = dir.path().join("lake");
    let flags = [
        "--mqtt-anonymous",
        "--kafka-brokers",
        &kafka,
        "--kafka-session-timeout-ms",
        "6000",
    ];
    let mut cfg = KafkaConfig::new(kafka.clone());
    cfg.linger = Duration::from_millis(5);
    let producer = KafkaProducer::new(&cfg).unwrap();
    let received = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let send = |node: usize, payload: &str| {
        let key = format!("k-{node}");
        let source = format!("mqtt:kaiabc/sensors/{key}");
        producer
            .send(
                READINGS_TOPIC,
                Some(&key),
                payload.as_bytes(),
                &[
                    (SOURCE_HEADER, source.as_bytes()),
                    (RECEIVED_AT_HEADER, received.as_bytes()),
                ],
                None,
            )
            .unwrap();
    };

    // A first start makes the topics and the consumer group and applies one reading; the
    // server then stops, as for an upgrade.
    let (server, http, _) = start_with(&lake, &flags);
    send(0, &reading(0, 0));
    wait_until("the warm-up reading", || (applied(http) >= 1).then_some(()));
    stop(server);

    // Backlog: the readings wait in Kafka while the server is down; it restarts and catches
    // up. Timed from its first reading applied to its last, as the replay reads a file
    // written before it starts: no producer shares the cores.
    let t = Instant::now();
    for (node, r) in &readings {
        send(*node, r);
    }
    producer.flush(Duration::from_secs(120)).unwrap();
    let produced = t.elapsed();
    let (server, http, _) = start_with(&lake, &flags);
    let first = until_applied(http, 1, Duration::from_millis(20));
    let cpu = cpu_of(&server);
    let backlog = until_applied(http, n as u64, Duration::from_millis(200)) - first;
    let backlog_cpu = cpu_of(&server) - cpu;

    // Live: as many readings again (a day later), produced while the server runs. Timed from
    // the first send to the last reading applied, so the bench's producer (about 5 µs of CPU
    // a reading) and the broker share the two cores with the server.
    let t0 = Instant::now();
    let cpu = cpu_of(&server);
    for (node, r) in &later {
        send(*node, r);
    }
    producer.flush(Duration::from_secs(120)).unwrap();
    until_applied(http, 2 * n as u64, Duration::from_millis(200));
    let through = t0.elapsed();
    let through_cpu = cpu_of(&server) - cpu;
    stop(server);

    let rate = |d: Duration| n as f64 / d.as_secs_f64();
    println!("{n} readings over {nodes} nodes (tansu 0.6, in-memory storage)");
    println!("| path | seconds | readings/s | CPU a reading (kaiabc) |");
    println!("|---|---|---|---|");
    let us = |cpu: f64| format!("{:.1} µs", cpu * 1e6 / n as f64);
    println!(
        "| replay from JSONL (baseline) | {:.2} | {:.0} | {} |",
        replay.as_secs_f64(),
        rate(replay),
        us(replay_cpu)
    );
    println!(
        "| producing to kaiabc.readings | {:.2} | {:.0} | |",
        produced.as_secs_f64(),
        rate(produced)
    );
    println!(
        "| Kafka → dataflow, a backlog caught up after a restart | {:.2} | {:.0} | {} |",
        backlog.as_secs_f64(),
        rate(backlog),
        us(backlog_cpu)
    );
    println!(
        "| Kafka → dataflow, live: produced and applied together | {:.2} | {:.0} | {} |",
        through.as_secs_f64(),
        rate(through),
        us(through_cpu)
    );
    println!(
        "Kafka path / replay throughput: backlog {:.2}, live {:.2}",
        rate(backlog) / rate(replay),
        rate(through) / rate(replay)
    );
}
