//! The Kafka path end to end, with real parts: Mosquitto as the nodes' broker, `mosquitto_pub`
//! as a node, `kaiabc bridge` into a real Kafka-protocol broker (tansu), `kaiabc run` consuming
//! `kaiabc.readings`, and a librdkafka consumer (the `rdkafka` crate) reading what the pipeline
//! publishes downstream.

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::kafka::{mosquitto, tansu, Proc};

/// Mosquitto as the nodes' broker here: anyone may publish.
const ANONYMOUS: &str = "allow_anonymous true\npersistence false\n";
use common::live::*;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::Message;

fn bridge(mqtt_port: u16, kafka: &str) -> Proc {
    let child = Command::new(env!("CARGO_BIN_EXE_kaiabc"))
        .args([
            "bridge",
            "--mqtt-url",
            &format!("mqtt://127.0.0.1:{mqtt_port}"),
            "--kafka-brokers",
            kafka,
            "--kafka-session-timeout-ms",
            "6000",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Proc(child)
}

/// The pipeline consuming Kafka, with Mosquitto for the nodes' outputs (a separate bridge feeds
/// Kafka).
fn pipeline(lake: &Path, kafka: &str, mqtt_port: u16) -> (Server, SocketAddr) {
    let url = format!("mqtt://127.0.0.1:{mqtt_port}");
    let (server, http, _) = start_with(
        lake,
        &[
            "--kafka-brokers",
            kafka,
            "--mqtt-url",
            &url,
            "--no-bridge",
            "--kafka-session-timeout-ms",
            "6000",
        ],
    );
    (server, http)
}

/// `mosquitto_pub`, QoS 1: a real node's publish.
fn mosquitto_pub(port: u16, topic: &str, payload: &str) {
    let out = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1"])
        .args(["-t", topic, "-m", payload])
        .output()
        .expect("mosquitto_pub (scripts/services.sh installs it)");
    assert!(
        out.status.success(),
        "mosquitto_pub: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Reads `topic` from the beginning as a fresh group until `want` holds for the records seen.
fn consume_until(
    kafka: &str,
    topic: &str,
    want: impl Fn(&[(String, serde_json::Value)]) -> bool,
) -> Vec<(String, serde_json::Value)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", kafka)
        .set("broker.address.family", "v4")
        .set("group.id", format!("test-{topic}"))
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(45);
    while !want(&seen) {
        assert!(
            Instant::now() < deadline,
            "{topic}: not found among {} records: {seen:?}",
            seen.len()
        );
        if let Some(m) = consumer.poll(Duration::from_millis(200)) {
            let m = m.unwrap();
            let key = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
            let value = serde_json::from_slice(m.payload().unwrap_or_default()).unwrap();
            seen.push((key, value));
        }
    }
    seen
}

fn state_seq(http: SocketAddr, node: &str) -> Option<i64> {
    let (status, body) = get(http, &format!("/v1/oscillator/state?node_id={node}"))?;
    (status == 200).then(|| body["seq"].as_i64()).flatten()
}

#[test]
fn a_node_publish_goes_through_the_bridge_and_kafka_to_websocket_lake_and_topics() {
    let dir = tempfile::tempdir().unwrap();
    let (_kafka_proc, kafka) = tansu(dir.path(), "sqlite://tansu.db");
    let (_mosquitto, mqtt) = mosquitto(dir.path(), ANONYMOUS);
    let _bridge = bridge(mqtt, &kafka);
    let lake = dir.path().join("lake");
    let (server, http) = pipeline(&lake, &kafka, mqtt);
    let topic = "kaiabc/sensors/k1";
    // The first reading also waits for the consumer group's first join.
    mosquitto_pub(mqtt, topic, &reading_k("k1", 1));
    wait_until("the first state", || {
        state_seq(http, "k1").filter(|s| *s == 1)
    });

    let rt = ws_runtime();
    let elapsed = rt.block_on(async {
        let mut ws = ws_observer(http).await;
        send(
            &mut ws,
            serde_json::json!({"action": "subscribe", "streams": ["oscillator.state.k1"]}),
        )
        .await;
        let ack = next_json(&mut ws).await.unwrap();
        assert_eq!(ack["type"], "ack", "{ack}");
        let published = Instant::now();
        mosquitto_pub(mqtt, topic, &reading_k("k1", 2));
        loop {
            let e = next_json(&mut ws).await.expect("an event");
            if e["type"] == "event" && e["data"]["seq"] == 2 {
                assert_eq!(e["stream"], "oscillator.state.k1");
                return published.elapsed();
            }
        }
    });
    // The bound, through Mosquitto, the bridge, Kafka and the dataflow.
    assert!(elapsed < Duration::from_secs(1), "{elapsed:?}");

    // A malformed payload is dead-lettered, in the lake and on kaiabc.dead-letters.
    mosquitto_pub(mqtt, topic, "{\"node_id\": \"k1\", \"seq\": ");
    let dead = consume_until(&kafka, "kaiabc.dead-letters", |s| !s.is_empty());
    assert_eq!(dead[0].1["reason"], "PARSE_ERROR", "{:?}", dead[0]);
    assert_eq!(dead[0].1["source"], "mqtt:kaiabc/sensors/k1");

    // Downstream consumers read each state from kaiabc.states, keyed by node.
    let states = consume_until(&kafka, "kaiabc.states", |s| s.len() >= 2);
    for (i, (key, state)) in states.iter().enumerate() {
        assert_eq!(key, "k1");
        assert_eq!(state["node_id"], "k1");
        assert_eq!(state["seq"], i as i64 + 1);
        assert!(state["circadian_time"].is_number(), "{state}");
    }

    // Readings ten minutes apart: by event time k1 was silent past the offline threshold (5
    // minutes) between them, which kaiabc.alerts carries, keyed by node.
    let alerts = consume_until(&kafka, "kaiabc.alerts", |s| !s.is_empty());
    assert_eq!(alerts[0].0, "k1", "{alerts:?}");
    assert_eq!(
        (alerts[0].1["code"].as_str(), alerts[0].1["state"].as_str()),
        (Some("NODE_OFFLINE"), Some("raised")),
        "{alerts:?}"
    );
    assert_eq!(
        alerts[0].1["at"], "2026-01-05T00:15:00.000000Z",
        "{alerts:?}"
    );

    // Fifty minutes later by event time: the hour has passed, and kaiabc.fleet carries each
    // group's view at its top, keyed by `{group_by}/{group}`. k1 went silent after 00:20, so
    // at 01:00 the fleet is one node, offline.
    mosquitto_pub(mqtt, topic, &reading_k("k1", 7));
    let fleet = consume_until(&kafka, "kaiabc.fleet", |s| {
        s.iter().any(|(key, _)| key == "fleet/all")
    });
    let (_, all) = fleet.iter().find(|(key, _)| key == "fleet/all").unwrap();
    assert_eq!(
        (all["group_by"].as_str(), all["group"].as_str()),
        (Some("fleet"), Some("all")),
        "{all}"
    );
    let counts = (all["nodes"].as_i64(), all["offline"].as_i64());
    assert_eq!(counts, (Some(1), Some(1)), "{all}");
    assert!(
        all["snapshot_at"]
            .as_str()
            .is_some_and(|t| t.starts_with("2026-01-05T01:00:00")),
        "{all}"
    );

    let (status, metrics) = get_text(http, "/metrics");
    assert_eq!(status, 200);
    let body = metrics.split("\r\n\r\n").nth(1).unwrap();
    promtool_check(body);
    // The Grafana dashboards of the stack read only what this server (the stack's shape:
    // Mosquitto, the bridge, Kafka) exports.
    common::deploy::assert_dashboards_query_exported(body);
    assert!(body.contains("kaiabc_kafka_consumer_lag"), "{body}");
    let commits = body
        .lines()
        .find_map(|l| l.strip_prefix("kaiabc_kafka_offset_commits_total "))
        .expect("offset commits");
    assert!(commits.trim().parse::<u64>().unwrap() >= 1, "{commits}");
    stop(server);

    assert_eq!(
        csv(&lake, "SELECT node_id, seq FROM readings ORDER BY seq"),
        "node_id,seq\nk1,1\nk1,2\nk1,7\n"
    );
    let dl = csv(&lake, "SELECT reason, source FROM dead_letters");
    assert_eq!(dl, "reason,source\nPARSE_ERROR,mqtt:kaiabc/sensors/k1\n");
}

const STATES_SQL: &str = "SELECT * EXCLUDE (date) FROM states ORDER BY node_id, seq";

#[test]
fn a_pipeline_killed_mid_stream_resumes_from_its_offsets_without_loss_or_duplicates() {
    const N: i64 = 40;
    let nodes = ["r1", "r2"];
    let messages = |range: std::ops::RangeInclusive<i64>| -> Vec<(String, String)> {
        range
            .flat_map(|k| {
                nodes
                    .iter()
                    .map(move |n| (format!("kaiabc/sensors/{n}"), reading_k(n, k)))
            })
            .collect()
    };
    let dir = tempfile::tempdir().unwrap();
    // The reference: the embedded path, never interrupted.
    let reference = {
        let lake = dir.path().join("reference");
        let (server, _, mqtt) = start(&lake);
        publish(mqtt, &messages(1..=N));
        stop(server);
        csv(&lake, STATES_SQL)
    };
    assert_eq!(reference.lines().count() as i64, 1 + 2 * N);

    let (_kafka_proc, kafka) = tansu(dir.path(), "sqlite://tansu.db");
    let (_mosquitto, mqtt) = mosquitto(dir.path(), ANONYMOUS);
    let _bridge = bridge(mqtt, &kafka);
    let lake = dir.path().join("lake");
    let (server, http) = pipeline(&lake, &kafka, mqtt);
    // Nodes publish steadily through Mosquitto while the pipeline is killed and restarted.
    let publisher = std::thread::spawn(move || {
        let mut pubs: Vec<(Child, &str)> = nodes
            .iter()
            .map(|n| {
                let child = Command::new("mosquitto_pub")
                    .args(["-h", "127.0.0.1", "-p", &mqtt.to_string(), "-q", "1", "-l"])
                    .args(["-t", &format!("kaiabc/sensors/{n}")])
                    .stdin(Stdio::piped())
                    .spawn()
                    .unwrap();
                (child, *n)
            })
            .collect();
        for k in 1..=N {
            for (child, n) in pubs.iter_mut() {
                let stdin = child.stdin.as_mut().unwrap();
                writeln!(stdin, "{}", reading_k(n, k)).unwrap();
                stdin.flush().unwrap();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        for (mut child, _) in pubs {
            drop(child.stdin.take());
            assert!(child.wait().unwrap().success());
        }
    });
    wait_until("a third of the stream", || {
        state_seq(http, "r1").filter(|s| *s >= N / 3)
    });
    // Let at least one aligned checkpoint pass, then kill without warning.
    std::thread::sleep(Duration::from_millis(1500));
    let mut server = server;
    server.0.kill().unwrap();
    server.0.wait().unwrap();
    drop(server);

    let (server, http) = pipeline(&lake, &kafka, mqtt);
    publisher.join().unwrap();
    for n in nodes {
        wait_until("every reading applied after the restart", || {
            state_seq(http, n).filter(|s| *s == N)
        });
    }
    stop(server);
    let counts = csv(
        &lake,
        "SELECT count(*) AS n, count(DISTINCT node_id || ':' || CAST(seq AS VARCHAR)) AS d \
         FROM readings",
    );
    assert_eq!(counts, format!("n,d\n{},{}\n", 2 * N, 2 * N));
    // Every state equals the uninterrupted run's: no reading lost, none applied twice, and no
    // clock restarted from its initial condition.
    assert_eq!(csv(&lake, STATES_SQL), reference);
}

/// With the broker gone, a pipeline asked to stop does stop: the offset commit waits for the
/// broker at most ten seconds (librdkafka's own waits without a limit, and the pipeline hung
/// on it for as long as the broker was away). What it read stays in Kafka for the next start.
#[test]
fn a_pipeline_stops_on_sigterm_while_the_broker_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, kafka) = tansu(dir.path(), "sqlite://tansu.db");
    let (_mosquitto, mqtt) = mosquitto(dir.path(), ANONYMOUS);
    let _bridge = bridge(mqtt, &kafka);
    let lake = dir.path().join("lake");
    let (server, http) = pipeline(&lake, &kafka, mqtt);
    for k in 1..=3 {
        mosquitto_pub(mqtt, "kaiabc/sensors/g1", &reading_k("g1", k));
    }
    wait_until("the readings applied", || {
        state_seq(http, "g1").filter(|s| *s == 3)
    });
    sigterm(&broker.0);
    sigterm(&server.0);
    let started = Instant::now();
    let mut server = server;
    let stopped = loop {
        if let Some(status) = server.0.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > Duration::from_secs(60) {
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        stopped.is_some(),
        "the pipeline did not stop within 60 s of SIGTERM with the broker gone"
    );
    eprintln!(
        "stopped in {:.1} s: {:?}",
        started.elapsed().as_secs_f64(),
        stopped
    );
}
