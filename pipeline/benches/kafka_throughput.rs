//! Sustained readings per second through the Kafka path: readings produced to
//! `kaiabc.readings` (as the bridge writes them) are consumed, validated, applied to their
//! nodes' clocks and published by a running `kaiabc run --kafka-brokers` (release build). The
//! baseline, measured in the same run, is `kaiabc replay` of the same readings from a JSONL
//! file: the dataflow without Kafka.
//!
//! `cargo bench -p kaiabc-pipeline --bench kafka_throughput` (`KAIABC_BENCH_KAFKA_READINGS`,
//! default 200 000, over 1 000 nodes). The broker is tansu with in-memory storage. Under
//! `cargo test` it runs once with 2 000 readings as a smoke test. Nothing is asserted about speed.

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::kafka::tansu;
use common::live::{get_text, start_with, stop, wait_until};
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
    let dir = tempfile::tempdir().unwrap();

    // The baseline: the same readings replayed from a file.
    let file = dir.path().join("readings.jsonl");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&file).unwrap());
    for (_, r) in &readings {
        writeln!(f, "{r}").unwrap();
    }
    drop(f);
    let t = Instant::now();
    ok(&[
        "replay",
        file.to_str().unwrap(),
        "--lake",
        dir.path().join("replay-lake").to_str().unwrap(),
    ]);
    let replay = t.elapsed();

    let (_broker, kafka) = tansu(dir.path(), "memory://tansu/");
    let lake = dir.path().join("lake");
    let (server, http, _) = start_with(
        &lake,
        &[
            "--mqtt-anonymous",
            "--kafka-brokers",
            &kafka,
            "--kafka-session-timeout-ms",
            "6000",
        ],
    );
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
    // Warm up: the consumer group's first join takes a few seconds.
    send(0, &reading(0, 0));
    wait_until("the warm-up reading", || (applied(http) >= 1).then_some(()));

    let t0 = Instant::now();
    for (node, r) in &readings {
        send(*node, r);
    }
    producer.flush(Duration::from_secs(120)).unwrap();
    let produced = t0.elapsed();
    let deadline = Instant::now() + Duration::from_secs(600);
    // `/metrics` renders every node's gauges: polled every 20 ms throughout, it took about 7 %
    // of the server's CPU, which a Prometheus scraping every 15 s never does. Polled every
    // 200 ms until nine tenths are applied, then every 20 ms, so the end is still timed to
    // 20 ms.
    loop {
        let done = applied(http);
        if done > n as u64 {
            break;
        }
        assert!(Instant::now() < deadline, "the pipeline did not finish");
        let nearly = done * 10 >= n as u64 * 9;
        std::thread::sleep(Duration::from_millis(if nearly { 20 } else { 200 }));
    }
    let through = t0.elapsed();
    stop(server);

    let rate = |d: Duration| n as f64 / d.as_secs_f64();
    println!("{n} readings over {nodes} nodes (tansu 0.6, in-memory storage)");
    println!("| path | seconds | readings/s |");
    println!("|---|---|---|");
    println!(
        "| replay from JSONL (baseline) | {:.2} | {:.0} |",
        replay.as_secs_f64(),
        rate(replay)
    );
    println!(
        "| producing to kaiabc.readings | {:.2} | {:.0} |",
        produced.as_secs_f64(),
        rate(produced)
    );
    println!(
        "| Kafka → dataflow, all applied | {:.2} | {:.0} |",
        through.as_secs_f64(),
        rate(through)
    );
    println!(
        "Kafka path / replay throughput: {:.2}",
        rate(through) / rate(replay)
    );
}
