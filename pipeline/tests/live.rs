//! `kaiabc run` end to end: a real MQTT client publishes to the embedded broker, the state is
//! served over HTTP as soon as each reading is applied, and SIGTERM drains into the lake.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::ok;
use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// GET `path` from `addr`: (status, body).
fn get(addr: SocketAddr, path: &str) -> Option<(u16, serde_json::Value)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split("\r\n\r\n").nth(1)?;
    // Bodies may be chunked: take the JSON object between the first '{' and the last '}'.
    let json = &body[body.find('{')?..=body.rfind('}')?];
    Some((status, serde_json::from_str(json).ok()?))
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
    }
}

fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

fn wait_until<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn reading(node: &str, seq: i64, minute: u32, kelvin: f64) -> String {
    serde_json::json!({
        "node_id": node,
        "seq": seq,
        "timestamp": format!("2026-01-05T10:{minute:02}:00Z"),
        "temperature_kelvin": kelvin,
        "humidity_percent": 40.0,
        "pressure_pa": 101000.0,
        "sensor_type": "BME280",
    })
    .to_string()
}

/// Publishes each payload to its topic with QoS 1 and waits for the broker's acks.
fn publish(port: u16, messages: &[(String, String)]) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut o = MqttOptions::new("test-node", "127.0.0.1", port);
        o.set_keep_alive(Duration::from_secs(5));
        let (client, mut events) = AsyncClient::new(o, 100);
        for (topic, payload) in messages {
            client
                .publish(
                    topic.as_str(),
                    QoS::AtLeastOnce,
                    false,
                    payload.clone().into_bytes(),
                )
                .await
                .unwrap();
        }
        let mut acked = 0;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while acked < messages.len() {
            match tokio::time::timeout_at(deadline, events.poll()).await {
                Ok(Ok(Event::Incoming(Incoming::PubAck(_)))) => acked += 1,
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    // The broker may still be starting: retry the connection.
                    eprintln!("mqtt: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(_) => panic!("no PUBACK for every publish ({acked}/{})", messages.len()),
            }
        }
        client.disconnect().await.ok();
    });
}

#[test]
fn mqtt_readings_reach_the_http_state_and_the_lake_and_sigterm_commits() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
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
            lake.to_str().unwrap(),
            "--commit-interval-seconds",
            "1",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut server = Server(child);
    let health = wait_until("the health endpoint", || {
        get(http, "/v1/health").filter(|(s, _)| *s == 200)
    });
    assert_eq!(health.1["status"], "healthy");

    // Nothing yet: the specification's error body.
    let (status, body) = get(http, "/v1/oscillator/state?node_id=n1").unwrap();
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "NODE_NOT_FOUND");

    let topic = "kaiabc/sensors/n1".to_string();
    publish(
        mqtt_port,
        &[
            (topic.clone(), reading("n1", 1, 0, 300.0)),
            // A batch of two in one message.
            (
                topic.clone(),
                format!(
                    "[{},{}]",
                    reading("n1", 2, 1, 300.2),
                    reading("n1", 3, 2, 300.4)
                ),
            ),
            // Another node's reading on n1's topic is refused, and kept as a dead letter.
            (topic.clone(), reading("n2", 1, 0, 300.0)),
            // Malformed.
            (topic, "{not json".to_string()),
        ],
    );
    // The state of the last reading is served as soon as it is applied (no lateness wait).
    let (_, state) = wait_until("n1's third state", || {
        get(http, "/v1/oscillator/state?node_id=n1").filter(|(s, b)| *s == 200 && b["seq"] == 3)
    });
    assert_eq!(state["node_id"], "n1");
    assert_eq!(state["timestamp"], "2026-01-05T10:02:00.000000Z");
    for key in [
        "circadian_time",
        "phase",
        "period_hours",
        "koa_metric",
        "temperature_kelvin",
    ] {
        assert!(state[key].is_number(), "{key} in {state}");
    }
    assert!(state["state_variables"]["C_ST"].is_number());

    // SIGTERM: drain, commit, exit 0.
    sigterm(&server.0);
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = server.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "kaiabc run did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut stderr = String::new();
    server
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(status.success(), "exit {status}: {stderr}");

    let lake = lake.to_str().unwrap();
    let rows = ok(&[
        "query",
        "SELECT seq FROM readings ORDER BY seq",
        "--lake",
        lake,
        "--format",
        "csv",
    ]);
    assert_eq!(rows, "seq\n1\n2\n3\n");
    let states = ok(&[
        "query",
        "SELECT count(*) AS n FROM states",
        "--lake",
        lake,
        "--format",
        "csv",
    ]);
    assert_eq!(states, "n\n3\n");
    let dead = ok(&[
        "query",
        "SELECT reason, source FROM dead_letters ORDER BY reason",
        "--lake",
        lake,
        "--format",
        "csv",
    ]);
    assert_eq!(
        dead,
        "reason,source\nINVALID_NODE_ID,mqtt:kaiabc/sensors/n1\nPARSE_ERROR,mqtt:kaiabc/sensors/n1\n"
    );
}

#[test]
fn a_taken_mqtt_port_is_a_clear_error() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kaiabc"))
        .args([
            "run",
            "--mqtt-listen",
            &format!("127.0.0.1:{port}"),
            "--http",
            "127.0.0.1:0",
            "--lake",
            dir.path().join("lake").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot listen for MQTT"), "{err}");
}
