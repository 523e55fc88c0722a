//! `kaiabc run` end to end: a real MQTT client publishes to the embedded broker, the state is
//! served over HTTP as soon as each reading is applied, and SIGTERM drains into the lake.

mod common;

use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::live::*;
use common::ok;
use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS};

#[test]
fn mqtt_readings_reach_the_http_state_and_the_lake_and_sigterm_commits() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let (server, http, mqtt_port) = start(&lake);
    // The server runs without transparent huge pages (the kernel reports it, on Linux 6.x).
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.0.id())).unwrap();
    if let Some(line) = status.lines().find(|l| l.starts_with("THP_enabled:")) {
        assert!(line.ends_with('0'), "{line}");
    }

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

    // Metrics: the readings by node, the dead letters by reason, valid for promtool. The two
    // refused messages came after the readings and may be counted a moment after the third
    // state is served: wait for them.
    let (status, text) = wait_until("the dead letters counted", || {
        let (status, text) = get_text(http, "/metrics");
        text.contains("kaiabc_dead_letters_total{reason=\"PARSE_ERROR\"} 1")
            .then_some((status, text))
    });
    assert_eq!(status, 200);
    let body = &text[text.find("\r\n\r\n").unwrap() + 4..];
    let header = &text[..text.find("\r\n\r\n").unwrap()].to_ascii_lowercase();
    assert!(
        header.contains("content-type: text/plain; version=0.0.4"),
        "{header}"
    );
    for line in [
        "kaiabc_sensor_readings_total{node_id=\"n1\",sensor_type=\"BME280\"} 3",
        "kaiabc_dead_letters_total{reason=\"INVALID_NODE_ID\"} 1",
        "kaiabc_dead_letters_total{reason=\"PARSE_ERROR\"} 1",
        "kaiabc_ode_solver_seconds_count 3",
        "kaiabc_connected_nodes 1",
        "kaiabc_events_received_total 4",
    ] {
        assert!(body.lines().any(|l| l == line), "no {line:?} in\n{body}");
    }
    // Per-node gauges for Grafana: the same clock the state endpoint shows.
    let gauge = |name: &str| -> f64 {
        let prefix = format!("{name}{{node_id=\"n1\"}} ");
        let line = body.lines().find(|l| l.starts_with(&prefix));
        line.unwrap_or_else(|| panic!("no {prefix:?} in\n{body}"))[prefix.len()..]
            .parse()
            .unwrap()
    };
    assert_eq!(
        gauge("kaiabc_node_pwm_duty"),
        state["output_pwm"].as_f64().unwrap()
    );
    assert_eq!(
        gauge("kaiabc_node_koa"),
        state["koa_metric"].as_f64().unwrap()
    );
    assert_eq!(gauge("kaiabc_node_online"), 1.0);
    promtool_check(body);
    let (status, perf) = request(
        http,
        "GET",
        "/v1/diagnostics/performance",
        &[("Authorization", &format!("Bearer {}", token("researcher")))],
        "",
    );
    assert_eq!(status, 200, "{perf}");
    assert_eq!(perf["readings_applied"], 3, "{perf}");
    assert_eq!(perf["nodes"]["active"], 1);
    assert!(perf["apply_ms"]["mean"].as_f64().unwrap() > 0.0, "{perf}");
    assert!(
        perf["apply_ms"]["p99_at_most"].as_f64().unwrap() > 0.0,
        "{perf}"
    );

    // SIGTERM: drain, commit, exit 0; the summary counts the four messages.
    let stderr = stop(server);
    assert!(
        stderr.contains("4 events in, 3 applied, 2 rejected"),
        "{stderr}"
    );
    // A run where nothing went wrong logs no error (a check of the embedded broker's start
    // that connected to it once made rumqttd log one at every start).
    assert!(!stderr.contains("ERROR"), "{stderr}");

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

const STATES: &str = "SELECT * EXCLUDE (date) FROM states ORDER BY node_id, seq";

/// The reference: one uninterrupted run over readings 1..=5 of two nodes.
fn uninterrupted(dir: &std::path::Path) -> String {
    let lake = dir.join("reference");
    let (server, _, mqtt) = start(&lake);
    let mut all = readings_of("a", 1..=5);
    all.extend(readings_of("b", 1..=5));
    publish(mqtt, &all);
    stop(server);
    csv(&lake, STATES)
}

#[test]
fn a_restart_after_sigterm_resumes_every_clock_where_it_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let expected = uninterrupted(dir.path());
    assert_eq!(expected.lines().count(), 11, "{expected}");

    let lake = dir.path().join("lake");
    let (server, _, mqtt) = start(&lake);
    let mut first = readings_of("a", 1..=3);
    first.extend(readings_of("b", 1..=2));
    publish(mqtt, &first);
    stop(server);

    let (server, http, mqtt) = start(&lake);
    // Served from the checkpoint before any new reading.
    let (status, state) = get(http, "/v1/oscillator/state?node_id=a").unwrap();
    assert_eq!((status, state["seq"].as_i64()), (200, Some(3)), "{state}");
    // A reading from before the restart is a duplicate; the rest continue the clocks.
    let mut second = readings_of("a", 3..=5);
    second.extend(readings_of("b", 3..=5));
    publish(mqtt, &second);

    // History reads the committed lake: raw pages with a cursor, and hourly buckets.
    let range = "node_id=a&start=2026-01-05T00:00:00Z&end=2026-01-06T00:00:00Z";
    let (_, page) = wait_until("a's five committed states", || {
        get(http, &format!("/v1/oscillator/history?{range}"))
            .filter(|(s, b)| *s == 200 && b["count"] == 5)
    });
    assert_eq!(
        page["points"][0]["timestamp"], "2026-01-05T10:10:00Z",
        "{page}"
    );
    assert!(page["next_cursor"].is_null());
    let mut seqs = Vec::new();
    let mut cursor = String::new();
    loop {
        let (status, page) = get(
            http,
            &format!("/v1/oscillator/history?{range}&limit=2{cursor}"),
        )
        .unwrap();
        assert_eq!(status, 200, "{page}");
        seqs.extend(
            page["points"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["seq"].as_i64().unwrap()),
        );
        match page["next_cursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(seqs, vec![1, 2, 3, 4, 5]);
    let (_, hourly) = get(
        http,
        &format!("/v1/oscillator/history?{range}&resolution=1h"),
    )
    .unwrap();
    assert_eq!(hourly["count"], 1, "{hourly}");
    assert_eq!(hourly["points"][0]["timestamp"], "2026-01-05T10:00:00Z");
    assert_eq!(hourly["points"][0]["samples"], 5);
    for bad in [
        "node_id=a&resolution=2h",
        "node_id=a&limit=0",
        "node_id=a'--",
        "node_id=a&start=yesterday",
        "node_id=a&start=2026-01-06T00:00:00Z&end=2026-01-05T00:00:00Z",
        "node_id=a&cursor=abc",
    ] {
        let (status, body) = get(http, &format!("/v1/oscillator/history?{bad}")).unwrap();
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some("INVALID_PARAMETER")),
            "{bad}: {body}"
        );
    }

    // Exports: the same committed states as CSV, JSON and Parquet downloads.
    let researcher = token("researcher");
    let export = |q: &str| {
        get_bytes(
            http,
            &format!("/v1/analytics/export?{range}{q}"),
            &researcher,
        )
    };
    let (status, head, body) = export("&format=csv");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert!(head.contains("content-type: text/csv"), "{head}");
    assert!(
        head.contains("attachment; filename=\"a-states-20260105t000000z.csv\""),
        "{head}"
    );
    let text = String::from_utf8(body).unwrap();
    assert!(text.starts_with("timestamp,seq,circadian_time"), "{text}");
    assert_eq!(text.lines().count(), 6, "{text}");
    let (_, _, body) = export("&format=json&resolution=1h");
    let hourly: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(hourly[0]["samples"], 5, "{hourly}");
    let (status, head, body) = export("&format=parquet&data=readings");
    assert_eq!(status, 200);
    assert!(head.contains("x-row-count: 5"), "{head}");
    assert!(body.starts_with(b"PAR1") && body.ends_with(b"PAR1"));
    // An empty range still names its columns.
    let (_, _, body) = get_bytes(
        http,
        "/v1/analytics/export?node_id=nobody&data=rhythms&format=csv",
        &researcher,
    );
    assert!(String::from_utf8(body).unwrap().starts_with("node_id,"));
    for bad in [
        "&format=xml",
        "&data=secrets",
        "&data=readings&resolution=1h",
    ] {
        let (status, _, body) = export(bad);
        assert_eq!(status, 400, "{bad}: {}", String::from_utf8_lossy(&body));
    }

    let stderr = stop(server);
    assert!(stderr.contains("2 nodes resumed"), "{stderr}");

    assert_eq!(csv(&lake, STATES), expected);
    assert_eq!(
        csv(&lake, "SELECT node_id, count(*) AS n, count(DISTINCT seq) AS d FROM readings GROUP BY node_id ORDER BY node_id"),
        "node_id,n,d\na,5,5\nb,5,5\n"
    );
}

#[test]
fn a_restart_after_a_kill_resumes_from_the_last_commit() {
    let dir = tempfile::tempdir().unwrap();
    let expected = uninterrupted(dir.path());

    let lake = dir.path().join("lake");
    let (mut server, _, mqtt) = start(&lake);
    let mut first = readings_of("a", 1..=3);
    first.extend(readings_of("b", 1..=2));
    publish(mqtt, &first);
    // Wait for the commit that holds them (the lake and the checkpoints), then SIGKILL.
    wait_until("the first commit", || {
        let n = csv(&lake, "SELECT count(*) AS n FROM readings");
        let saved = std::fs::read_dir(lake.join("_checkpoints"))
            .map(|d| d.count())
            .unwrap_or(0);
        (n == "n\n5\n" && saved > 0).then_some(())
    });
    // The checkpoints are saved right after the rows commit: give that write time to finish.
    std::thread::sleep(Duration::from_millis(500));
    server.0.kill().unwrap();
    server.0.wait().unwrap();

    let (server, _, mqtt) = start(&lake);
    let mut second = readings_of("a", 4..=5);
    second.extend(readings_of("b", 3..=5));
    publish(mqtt, &second);
    stop(server);
    assert_eq!(csv(&lake, STATES), expected);
}

#[test]
fn websocket_subscribers_get_a_snapshot_then_every_state_as_it_is_applied() {
    let dir = tempfile::tempdir().unwrap();
    let (server, http, mqtt) = start(&dir.path().join("lake"));
    let rt = ws_runtime();
    let stderr = rt.block_on(async {
        let mut ws = ws_observer(http).await;
        send(
            &mut ws,
            serde_json::json!({"type": "subscribe", "streams": ["nonsense"]}),
        )
        .await;
        let err = next_json(&mut ws).await.unwrap();
        assert_eq!(err["error"]["code"], "INVALID_STREAM", "{err}");
        send(
            &mut ws,
            serde_json::json!({"action": "subscribe",
                "streams": ["oscillator.state.w1", "output.pwm.*"]}),
        )
        .await;
        let ack = next_json(&mut ws).await.unwrap();
        assert_eq!(ack["type"], "ack", "{ack}");
        assert_eq!(ack["snapshot"], serde_json::json!([]));

        let published = Instant::now();
        let publisher = std::thread::spawn(move || {
            let mut msgs = readings_of("w1", 1..=2);
            msgs.extend(readings_of("other", 1..=1));
            publish(mqtt, &msgs)
        });
        let mut got = Vec::new();
        let mut first_state = None;
        while got.len() < 5 {
            let e = next_json(&mut ws).await.expect("an event");
            assert_eq!(e["type"], "event", "{e}");
            let stream = e["stream"].as_str().unwrap().to_string();
            if stream == "oscillator.state.w1" && first_state.is_none() {
                first_state = Some(published.elapsed());
                assert_eq!(e["data"]["node_id"], "w1");
                assert!(e["data"]["circadian_time"].is_number(), "{e}");
                // The specification's envelope.
                assert_eq!(e["event"], "oscillator.state", "{e}");
                assert_eq!(e["node_id"], "w1", "{e}");
                assert_eq!(e["timestamp"], e["data"]["timestamp"], "{e}");
            }
            got.push((stream, e["seq"].as_u64().unwrap()));
        }
        publisher.join().unwrap();
        // The issue's bound: the state reaches a subscriber within 1 s of the publish.
        let first_state = first_state.expect("a state event");
        assert!(first_state < Duration::from_secs(1), "{first_state:?}");
        got.sort();
        assert_eq!(
            got,
            vec![
                ("oscillator.state.w1".to_string(), 1),
                ("oscillator.state.w1".to_string(), 2),
                ("output.pwm.other".to_string(), 1),
                ("output.pwm.w1".to_string(), 1),
                ("output.pwm.w1".to_string(), 2),
            ]
        );

        // A later subscriber starts from a snapshot.
        let mut late = ws_observer(http).await;
        send(
            &mut late,
            serde_json::json!({"type": "subscribe", "streams": ["*.w1"]}),
        )
        .await;
        let ack = next_json(&mut late).await.unwrap();
        let snap: Vec<(String, u64)> = ack["snapshot"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                (
                    i["stream"].as_str().unwrap().to_string(),
                    i["seq"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            snap,
            vec![
                ("oscillator.state.w1".to_string(), 2),
                ("output.pwm.w1".to_string(), 2),
                ("sensors.reading.w1".to_string(), 2),
            ]
        );
        send(&mut late, serde_json::json!({"type": "ping"})).await;
        assert_eq!(next_json(&mut late).await.unwrap()["type"], "pong");

        // Stopping the server closes the sockets.
        let stopper = tokio::task::spawn_blocking(move || stop(server));
        assert!(next_json(&mut ws).await.is_none(), "expected a close");
        stopper.await.unwrap()
    });
    assert!(stderr.contains("3 applied"), "{stderr}");
}

/// The endpoint × role table the server must enforce: for each endpoint, the lowest role allowed
/// ("public", "observer", "researcher", "admin") or "node" for API keys.
const MATRIX: &[(&str, &str, &str)] = &[
    ("GET", "/v1/health", "public"),
    ("GET", "/metrics", "public"),
    // A node's key reads its own node's state only (`Access::OwnNodeOr`); z is not p1.
    (
        "GET",
        "/v1/oscillator/state?node_id=z",
        "observer or own node",
    ),
    ("GET", "/v1/oscillator/history?node_id=z", "observer"),
    ("GET", "/v1/analytics/export?node_id=z", "researcher"),
    ("GET", "/v1/diagnostics/performance", "researcher"),
    ("GET", "/v1/sensors/nodes", "observer"),
    ("POST", "/v1/sensors/nodes", "admin"),
    ("POST", "/v1/sensors/temperature", "node"),
    ("POST", "/v1/sensors/batch", "node"),
];

#[test]
fn roles_api_keys_and_mqtt_credentials_are_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let (server, http, mqtt) = start_with(&lake, &[]);
    let admin = token("admin");
    let bearer = |t: &str| format!("Bearer {t}");

    // An admin registers two nodes; each gets its API key once.
    let mut keys = std::collections::HashMap::new();
    for node in ["p1", "p2"] {
        let (status, body) = request(
            http,
            "POST",
            "/v1/sensors/nodes",
            &[("Authorization", &bearer(&admin))],
            &format!(r#"{{"node_id":"{node}","name":"roof {node}"}}"#),
        );
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["mqtt"]["topic"], format!("kaiabc/sensors/{node}"));
        keys.insert(node, body["api_key"].as_str().unwrap().to_string());
    }
    let (status, body) = request(
        http,
        "POST",
        "/v1/sensors/nodes",
        &[("Authorization", &bearer(&admin))],
        r#"{"node_id":"p1"}"#,
    );
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("NODE_EXISTS"))
    );

    // Every endpoint × every kind of caller.
    let tokens: Vec<(&str, String)> = ["observer", "researcher", "admin"]
        .iter()
        .map(|r| (*r, token(r)))
        .collect();
    let rank = |r: &str| match r {
        "observer" => 1,
        "researcher" => 2,
        "admin" => 3,
        _ => 0,
    };
    let reading_body = reading("p1", 1, 0, 300.0);
    for (method, path, need) in MATRIX {
        let body = match *path {
            "/v1/sensors/nodes" => r#"{"node_id":"m_NODE"}"#.to_string(),
            _ => reading_body.clone(),
        };
        let body = body.replace("NODE", &format!("{}", rand_suffix()));
        let call = |headers: &[(&str, &str)]| request(http, method, path, headers, &body).0;
        // Nobody.
        let anon = call(&[]);
        if *need == "public" {
            assert_eq!(anon, 200, "{method} {path} anonymous");
            continue;
        }
        assert_eq!(anon, 401, "{method} {path} anonymous");
        assert_eq!(
            call(&[("Authorization", "Bearer not.a.jwt")]),
            401,
            "{method} {path} forged token"
        );
        for (role, t) in &tokens {
            let status = call(&[("Authorization", &bearer(t))]);
            let allowed =
                *need != "node" && rank(role) >= rank(need.trim_end_matches(" or own node"));
            if allowed {
                assert!(
                    (200..300).contains(&status) || status == 404,
                    "{method} {path} as {role}: {status}"
                );
            } else if *need == "node" {
                assert_eq!(
                    status, 401,
                    "{method} {path} as {role}: a node key is required"
                );
            } else {
                assert_eq!(status, 403, "{method} {path} as {role}");
            }
        }
        let with_key = call(&[("X-API-Key", &keys["p1"])]);
        if *need == "node" {
            // 200 once applied, 202 if the pipeline is behind: stored either way.
            assert!(
                matches!(with_key, 200 | 202),
                "{method} {path} with p1's key: {with_key}"
            );
            // Another node's key cannot submit p1's reading.
            assert_eq!(call(&[("X-API-Key", &keys["p2"])]), 403, "{method} {path}");
            assert_eq!(call(&[("X-API-Key", "kab_00000000_nope")]), 401);
        } else if need.ends_with(" or own node") {
            assert_eq!(with_key, 403, "{method} {path}: p1's key for another node");
            assert_eq!(call(&[("X-API-Key", "kab_00000000_nope")]), 401);
        } else {
            assert_eq!(with_key, 401, "{method} {path}: a key is not a token");
        }
    }

    // HTTP ingestion answers per reading and dead-letters the bad ones.
    let key1: &str = &keys["p1"];
    let (status, body) = request(
        http,
        "POST",
        "/v1/sensors/batch",
        &[("X-API-Key", key1)],
        &format!(
            "[{},{},{}]",
            reading("p1", 2, 1, 300.1),
            reading("p1", 3, 2, 900.0),
            reading("p1", 4, 3, 300.3)
        ),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["accepted"], 2);
    assert_eq!(body["rejected"], 1);
    assert_eq!(body["rejections"][0]["index"], 1);
    assert_eq!(body["rejections"][0]["code"], "TEMPERATURE_OUT_OF_RANGE");
    assert_eq!(
        body["field_errors"][0]["field"],
        "readings[1].temperature_kelvin"
    );
    assert_eq!(body["field_errors"][0]["valid_range"][1], 323.15);
    // The newest reading (seq 4, 300.3 K) was applied: its filtered value is in the answer.
    let t = body["latest_filtered"]["temperature_kelvin"]
        .as_f64()
        .unwrap();
    assert!((300.0..300.4).contains(&t), "{body}");
    let (status, body) = request(
        http,
        "POST",
        "/v1/sensors/temperature",
        &[("X-API-Key", key1)],
        "{oops",
    );
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("PARSE_ERROR"))
    );

    // MQTT: the node logs in with its id and key; a wrong key or no login is refused.
    publish_as(
        mqtt,
        Some(("p2", &keys["p2"])),
        &[("kaiabc/sensors/p2".into(), reading("p2", 1, 5, 301.0))],
    )
    .expect("p2 publishes with its key");
    assert!(publish_as(
        mqtt,
        Some(("p2", &keys["p1"])),
        &[("kaiabc/sensors/p2".into(), reading("p2", 2, 6, 301.0))]
    )
    .is_err());
    assert!(publish_as(
        mqtt,
        Some(("p2", "")),
        &[("kaiabc/sensors/p2".into(), reading("p2", 3, 7, 301.0))]
    )
    .is_err());
    // ... and only on its own topics: a publish on p1's topic is acknowledged (MQTT 3.1.1
    // cannot refuse one), never reaches p1's clock, and lands in the dead letters.
    publish_as(
        mqtt,
        Some(("p2", &keys["p2"])),
        &[("kaiabc/sensors/p1".into(), reading("p1", 9, 9, 301.0))],
    )
    .expect("the gate acknowledges a forbidden publish");
    wait_until("p2's state", || {
        get(http, "/v1/oscillator/state?node_id=p2").filter(|(s, _)| *s == 200)
    });
    // A node polls its own clock's output with its key (nodes without MQTT do).
    let (status, own) = request(
        http,
        "GET",
        "/v1/oscillator/state",
        &[("X-API-Key", &keys["p2"])],
        "",
    );
    assert_eq!(
        (status, own["node_id"].as_str()),
        (200, Some("p2")),
        "{own}"
    );
    assert!(own["output_pwm"].is_number(), "{own}");
    let (status, _) = request(
        http,
        "GET",
        "/v1/oscillator/state?node_id=p1",
        &[("X-API-Key", &keys["p2"])],
        "",
    );
    assert_eq!(status, 403, "p2's key reads p1's clock");
    let (status, list) = request(
        http,
        "GET",
        "/v1/sensors/nodes",
        &[("Authorization", &bearer(&tokens[0].1))],
        "",
    );
    assert_eq!(status, 200);
    assert!(list["count"].as_u64().unwrap() >= 2);
    assert!(list.to_string().contains("\"p2\""));
    assert!(
        !list.to_string().contains("argon2"),
        "hashes are never served"
    );
    stop(server);

    let dead = csv(
        &lake,
        "SELECT reason, source FROM dead_letters ORDER BY reason, source",
    );
    assert!(
        dead.contains("TEMPERATURE_OUT_OF_RANGE,http:/v1/sensors/batch"),
        "{dead}"
    );
    assert!(
        dead.contains("PARSE_ERROR,http:/v1/sensors/temperature"),
        "{dead}"
    );
    assert!(dead.contains("INVALID_NODE_ID,http:/v1/sensors/"), "{dead}");
    assert!(
        dead.contains("INVALID_NODE_ID,mqtt:kaiabc/sensors/p1"),
        "{dead}"
    );
    let seqs = csv(
        &lake,
        "SELECT node_id, seq FROM readings ORDER BY node_id, seq",
    );
    assert_eq!(seqs, "node_id,seq\np1,1\np1,2\np1,4\np2,1\n");
}

#[test]
fn rate_limits_answer_429_with_retry_after_and_count_down_in_headers() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    // The contract's limits but for ingestion, cut to 3 a minute.
    let (server, http, _) = start_with(
        &lake,
        &[
            "--mqtt-anonymous",
            "--rate-limit-ingest",
            "3",
            "--rate-limit-query",
            "60",
            "--rate-limit-change",
            "10",
        ],
    );
    let admin = format!("Bearer {}", token("admin"));
    let (status, body) = request(
        http,
        "POST",
        "/v1/sensors/nodes",
        &[("Authorization", &admin)],
        r#"{"node_id":"rl1"}"#,
    );
    assert_eq!(status, 201);
    // Registration is a configuration change: 10 a minute.
    assert_eq!(last_header("x-ratelimit-limit").as_deref(), Some("10"));
    assert_eq!(last_header("x-ratelimit-remaining").as_deref(), Some("9"));
    let key = body["api_key"].as_str().unwrap().to_string();
    for (k, left) in [(1, "2"), (2, "1"), (3, "0")] {
        let (status, _) = request(
            http,
            "POST",
            "/v1/sensors/temperature",
            &[("X-API-Key", &key)],
            &reading("rl1", k, k as u32, 300.0),
        );
        assert!(matches!(status, 200 | 202), "{status}");
        assert_eq!(last_header("x-ratelimit-remaining").as_deref(), Some(left));
        assert_eq!(last_header("x-ratelimit-limit").as_deref(), Some("3"));
    }
    let (status, body) = request(
        http,
        "POST",
        "/v1/sensors/temperature",
        &[("X-API-Key", &key)],
        &reading("rl1", 4, 4, 300.0),
    );
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (429, Some("RATE_LIMIT_EXCEEDED"))
    );
    assert_eq!(last_header("retry-after").as_deref(), Some("20"));
    assert_eq!(body["error"]["retry_after_seconds"], 20);
    assert_eq!(last_header("x-ratelimit-remaining").as_deref(), Some("0"));
    // The contract's reset is a Unix time: when the bucket is full again.
    let reset: i64 = last_header("x-ratelimit-reset").unwrap().parse().unwrap();
    let now = chrono::Utc::now().timestamp();
    assert!((now..=now + 120).contains(&reset), "{reset} vs now {now}");
    assert_eq!(last_header("x-api-version").as_deref(), Some("1.0.0"));
    // The node's state queries are a class of their own, with their own bucket.
    let (status, _) = request(
        http,
        "GET",
        "/v1/oscillator/state?node_id=rl1",
        &[("X-API-Key", &key)],
        "",
    );
    assert!(matches!(status, 200 | 404), "{status}");
    assert_eq!(last_header("x-ratelimit-limit").as_deref(), Some("60"));
    assert_eq!(last_header("x-ratelimit-remaining").as_deref(), Some("59"));
    // The admin's own bucket is separate.
    let (status, _) = request(
        http,
        "GET",
        "/v1/sensors/nodes",
        &[("Authorization", &admin)],
        "",
    );
    assert_eq!(status, 200);
    assert_eq!(last_header("x-ratelimit-limit").as_deref(), Some("60"));
    stop(server);
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// Subscribes to `topic` and returns the first message's payload (a retained one arrives at
/// once).
fn first_message(port: u16, topic: &str) -> serde_json::Value {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut o = MqttOptions::new("test-output", "127.0.0.1", port);
        o.set_keep_alive(Duration::from_secs(5));
        let (client, mut events) = AsyncClient::new(o, 10);
        client.subscribe(topic, QoS::AtLeastOnce).await.unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            match tokio::time::timeout_at(deadline, events.poll()).await {
                Ok(Ok(Event::Incoming(Incoming::Publish(p)))) => {
                    assert!(p.retain, "the output is retained");
                    return serde_json::from_slice(&p.payload).unwrap();
                }
                Ok(_) => {}
                Err(_) => panic!("nothing on {topic}"),
            }
        }
    })
}

fn connected_nodes(http: SocketAddr) -> u64 {
    let (_, text) = get_text(http, "/metrics");
    text.lines()
        .find_map(|l| l.strip_prefix("kaiabc_connected_nodes "))
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn each_output_is_published_retained_and_a_last_will_marks_a_node_offline() {
    let dir = tempfile::tempdir().unwrap();
    let (server, http, mqtt) = start(&dir.path().join("lake"));
    publish(mqtt, &readings_of("o1", 1..=2));
    let (_, state) = wait_until("o1's state", || {
        get(http, "/v1/oscillator/state?node_id=o1").filter(|(s, b)| *s == 200 && b["seq"] == 2)
    });
    // A node that connects after the fact gets its latest output at once.
    let out = first_message(mqtt, "kaiabc/nodes/o1/output");
    assert_eq!(out["seq"], 2, "{out}");
    assert_eq!(out["pwm_duty"], state["output_pwm"]);
    assert_eq!(out["circadian_time"], state["circadian_time"]);
    assert!(out["period_hours"].as_f64().unwrap() > 0.0);

    // A node announces itself online with a Last Will of offline, then vanishes uncleanly.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut o = MqttOptions::new("w-node", "127.0.0.1", mqtt);
        o.set_keep_alive(Duration::from_secs(5));
        o.set_last_will(rumqttc::LastWill::new(
            "kaiabc/nodes/w1/status",
            "offline",
            QoS::AtLeastOnce,
            true,
        ));
        let (client, mut events) = AsyncClient::new(o, 10);
        client
            .publish("kaiabc/nodes/w1/status", QoS::AtLeastOnce, true, "online")
            .await
            .unwrap();
        loop {
            if let Ok(Event::Incoming(Incoming::PubAck(_))) = events.poll().await {
                break;
            }
        }
        // o1 (recent readings) and w1 (online).
        let t0 = Instant::now();
        while connected_nodes(http) != 2 {
            assert!(t0.elapsed() < Duration::from_secs(10), "w1 never online");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Dropped without DISCONNECT: the broker sends the will.
        drop(events);
        drop(client);
    });
    let t0 = Instant::now();
    while connected_nodes(http) != 1 {
        assert!(t0.elapsed() < Duration::from_secs(20), "w1 never offline");
        std::thread::sleep(Duration::from_millis(100));
    }
    stop(server);
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

#[test]
fn a_config_file_sets_what_the_environment_and_flags_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let template = ok(&["config", "template"]);
    assert!(
        template.contains("# listen = \"127.0.0.1:1883\""),
        "{template}"
    );
    let (file_http, flag_http) = (free_port(), free_port());
    let (file_lake, env_lake) = (dir.path().join("file-lake"), dir.path().join("env-lake"));
    let config = dir.path().join("kaiabc.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nhttp = \"127.0.0.1:{file_http}\"\nstate_dir = {:?}\n\
             [mqtt]\nlisten = \"127.0.0.1:{}\"\nanonymous = true\n\
             [lake]\nroot = {:?}\n[auth]\njwt_secret = {SECRET:?}\n[log]\nformat = \"json\"\n",
            dir.path().join("state"),
            free_port(),
            file_lake,
        ),
    )
    .unwrap();
    assert!(ok(&["config", "check", config.to_str().unwrap()]).contains("valid"));
    let child = Command::new(env!("CARGO_BIN_EXE_kaiabc"))
        .args(["run", "--config", config.to_str().unwrap()])
        .args(["--http", &format!("127.0.0.1:{flag_http}")])
        .env("KAIABC_LAKE", &env_lake)
        .env_remove("KAIABC_JWT_SECRET")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let server = Server::new(child);
    let http: SocketAddr = format!("127.0.0.1:{flag_http}").parse().unwrap();
    // The flag beats the file's address; the file's JWT secret signs `token`'s tokens.
    wait_until("the flag's HTTP address", || {
        get(http, "/v1/health").filter(|(s, _)| *s == 200)
    });
    assert!(std::net::TcpStream::connect(("127.0.0.1", file_http)).is_err());
    let (status, body) = get(http, "/v1/sensors/nodes").unwrap();
    assert_eq!(status, 200, "{body}");
    let stderr = stop(server);
    // The file's log format: every line is a JSON event.
    assert!(stderr.lines().count() >= 2, "{stderr}");
    for line in stderr.lines() {
        let event: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            event["level"].is_string() && event["message"].is_string(),
            "{line}"
        );
    }
    // The environment beats the file's lake.
    assert!(env_lake.join("_checkpoints").is_dir());
    assert!(!file_lake.exists());

    std::fs::write(&config, "[mqtt]\nlisen = \"x\"\n").unwrap();
    let out = common::kaiabc(&["run", "--config", config.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown key \"mqtt.lisen\""), "{err}");
}

#[test]
fn control_commands_reach_the_clock_in_order_with_readings_are_logged_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let (server, http, mqtt) = start(&lake);
    let researcher = token("researcher");
    let observer = token("observer");
    let post = |path: &str, body: &str, t: &str| {
        request(
            http,
            "POST",
            path,
            &[("Authorization", &format!("Bearer {t}"))],
            body,
        )
    };
    let state_of = |seq: i64| {
        wait_until("the state", || {
            get(http, "/v1/oscillator/state?node_id=c1")
                .filter(|(s, b)| *s == 200 && b["seq"] == seq)
                .map(|(_, b)| b)
        })
    };
    publish(mqtt, &readings_of("c1", 1..=2));
    let free = state_of(2)["output_pwm"].as_i64().unwrap();
    let hold = if free == 77 { 78 } else { 77 };

    let (status, body) = post(
        "/v1/output/manual-override",
        &format!(r#"{{"node_id":"c1","pwm":{hold}}}"#),
        &researcher,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["command"]["control"], "manual_override");
    publish(mqtt, &readings_of("c1", 3..=3));
    assert_eq!(state_of(3)["output_pwm"], hold);

    // Paused: reading 4 is recorded but gives no state; after the resume, reading 5 does.
    assert_eq!(
        post("/v1/simulation/pause", r#"{"node_id":"c1"}"#, &researcher).0,
        200
    );
    publish(mqtt, &readings_of("c1", 4..=4));
    // The broker acknowledges before it forwards: wait until the pipeline has reading 4, so
    // that the resume comes after it.
    wait_until("reading 4 received", || {
        let (_, text) = get_text(http, "/metrics");
        text.contains("kaiabc_sensor_readings_total{node_id=\"c1\",sensor_type=\"BME280\"} 4")
            .then_some(())
    });
    assert_eq!(
        post("/v1/simulation/resume", r#"{"node_id":"c1"}"#, &researcher).0,
        200
    );
    publish(mqtt, &readings_of("c1", 5..=5));
    assert_eq!(state_of(5)["output_pwm"], hold);

    // Observers may not; malformed bodies are refused.
    assert_eq!(
        post("/v1/oscillator/reset", r#"{"node_id":"c1"}"#, &observer).0,
        403
    );
    for (path, body) in [
        (
            "/v1/output/manual-override",
            r#"{"node_id":"c1","pwm":300}"#,
        ),
        ("/v1/oscillator/reset", r#"{"node":"c1"}"#),
        ("/v1/simulation/pause", r#"{"node_id":"c 1"}"#),
    ] {
        let (status, b) = post(path, body, &researcher);
        assert_eq!(
            (status, b["error"]["code"].as_str()),
            (400, Some("INVALID_PARAMETER")),
            "{path} {body}: {b}"
        );
    }
    // A node cannot send commands on its topic: a dead letter, not a reset.
    publish(
        mqtt,
        &[(
            "kaiabc/sensors/c1".to_string(),
            r#"{"control":"reset","node_id":"c1","timestamp":"2026-01-05T11:00:00Z"}"#.to_string(),
        )],
    );
    stop(server);

    let log = std::fs::read_to_string(lake.join("_control/commands.jsonl")).unwrap();
    let actions: Vec<String> = log
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            assert_eq!(v["issued_by"], "tester", "{l}");
            v["control"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(actions, ["manual_override", "pause", "resume"]);
    assert_eq!(
        csv(&lake, "SELECT seq FROM states ORDER BY seq"),
        "seq\n1\n2\n3\n5\n"
    );
    assert_eq!(
        csv(&lake, "SELECT seq FROM readings ORDER BY seq"),
        "seq\n1\n2\n3\n4\n5\n"
    );
    let dead = csv(&lake, "SELECT reason, message FROM dead_letters");
    assert!(
        dead.contains("PARSE_ERROR,\"control commands come from the API, not from mqtt:"),
        "{dead}"
    );

    // The override is part of the node's checkpoint.
    let (server, http2, mqtt) = start(&lake);
    publish(
        mqtt,
        &[("kaiabc/sensors/c1".to_string(), reading("c1", 6, 55, 300.0))],
    );
    let (_, s) = wait_until("the state after the restart", || {
        get(http2, "/v1/oscillator/state?node_id=c1").filter(|(st, b)| *st == 200 && b["seq"] == 6)
    });
    assert_eq!(s["output_pwm"], hold);
    stop(server);
}

/// Exact copies that come after their originals are in the lake (after a commit, and after a
/// restart) are dropped as DUPLICATE, as is a copy right behind its original; a node that
/// reboots and counts its seq from 1 again is not sending copies.
#[test]
fn late_exact_copies_land_once_live_and_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let msg = |seq: i64, minute: u32| {
        (
            "kaiabc/sensors/d".to_string(),
            reading("d", seq, minute, 300.0 + f64::from(minute) / 10.0),
        )
    };
    let (server, _, mqtt) = start(&lake);
    publish(
        mqtt,
        &(1..=5).map(|k| msg(k, 10 * k as u32)).collect::<Vec<_>>(),
    );
    wait_until("the first commit", || {
        (csv(&lake, "SELECT count(*) AS n FROM readings") == "n\n5\n").then_some(())
    });
    // Copies of committed readings; the node reboots (seq 1 at a later time); a new reading
    // and its copy right behind it.
    publish(
        mqtt,
        &[msg(1, 10), msg(3, 30), msg(1, 55), msg(6, 58), msg(6, 58)],
    );
    stop(server);

    let (server, _, mqtt) = start(&lake);
    publish(mqtt, &[msg(2, 20), msg(6, 58), msg(1, 55), msg(7, 59)]);
    stop(server);
    assert_eq!(
        csv(
            &lake,
            "SELECT seq, CAST(timestamp AS VARCHAR) AS t FROM readings ORDER BY timestamp"
        ),
        "seq,t\n1,2026-01-05T10:10:00Z\n2,2026-01-05T10:20:00Z\n3,2026-01-05T10:30:00Z\n\
         4,2026-01-05T10:40:00Z\n5,2026-01-05T10:50:00Z\n1,2026-01-05T10:55:00Z\n\
         6,2026-01-05T10:58:00Z\n7,2026-01-05T10:59:00Z\n"
    );
    assert_eq!(
        csv(
            &lake,
            "SELECT count(*) AS n FROM dead_letters WHERE reason = 'DUPLICATE' AND node_id = 'd'"
        ),
        "n\n6\n"
    );
}

/// A lake that cannot be written (its staging directory replaced by a plain file, as a full
/// disk or a lack of file descriptors would refuse every new file) is loud: `/v1/health` turns
/// degraded with 503 and the reason, `/metrics` counts the failures; readings are still
/// acknowledged only once they are in the write-ahead log. When the directory is back the
/// server recovers by itself: health is healthy again and every acknowledged reading is in the
/// lake once.
#[test]
fn a_lake_that_cannot_be_written_is_loud_and_recovers_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let (server, http, mqtt) = start(&lake);
    let msg = |seq: i64| {
        (
            "kaiabc/sensors/f".to_string(),
            reading("f", seq, 5 * seq as u32, 300.0),
        )
    };
    publish(mqtt, &(1..=3).map(msg).collect::<Vec<_>>());
    wait_until("the first commit", || {
        (csv(&lake, "SELECT count(*) AS n FROM readings") == "n\n3\n").then_some(())
    });
    let staging = lake.join("_staging");
    let away = lake.join("_staging.away");
    std::fs::rename(&staging, &away).unwrap();
    std::fs::write(&staging, b"not a directory").unwrap();
    // Acknowledged (the log has them), not yet in the lake.
    publish(mqtt, &(4..=6).map(msg).collect::<Vec<_>>());
    let health = wait_until("health to say the lake is failing", || {
        Some(request(http, "GET", "/v1/health", &[], ""))
            .filter(|(s, _)| *s == 503)
            .map(|(_, b)| b)
    });
    assert_eq!(health["status"], "degraded", "{health}");
    assert_eq!(health["components"]["database"], "failing", "{health}");
    let reason = health["problems"][0]["reason"].as_str().unwrap();
    assert!(reason.contains("_staging"), "{reason}");
    let (_, text) = get_text(http, "/metrics");
    let metrics = text.split_once("\r\n\r\n").unwrap().1;
    assert!(metrics.contains("kaiabc_lake_write_failing 1"), "{metrics}");
    let failures = metrics
        .lines()
        .find_map(|l| l.strip_prefix("kaiabc_lake_write_failures_total "))
        .unwrap();
    assert!(failures.parse::<f64>().unwrap() >= 1.0, "{failures}");
    promtool_check(metrics);

    std::fs::remove_file(&staging).unwrap();
    std::fs::rename(&away, &staging).unwrap();
    wait_until("health to recover", || {
        Some(request(http, "GET", "/v1/health", &[], ""))
            .filter(|(s, b)| *s == 200 && b["status"] == "healthy")
    });
    wait_until("the readings of the outage in the lake", || {
        (csv(&lake, "SELECT count(*) AS n FROM readings") == "n\n6\n").then_some(())
    });
    stop(server);
    assert_eq!(
        csv(
            &lake,
            "SELECT count(*) AS n, count(DISTINCT seq) AS d FROM readings WHERE node_id = 'f'"
        ),
        "n,d\n6,6\n"
    );
}

/// A crash after a commit and before the checkpoints and the log's offset saved right after it
/// (a few milliseconds per commit) leaves readings in the lake that the nodes' checkpoints have
/// not seen; the log gives them again. They are applied to the clocks without being written
/// again (not dropped as duplicates: the clocks would then miss them), so the states equal an
/// uninterrupted run's. Simulated by putting the checkpoints and the log's committed offset of
/// the first commit back after the second, then killing.
#[test]
fn readings_committed_after_the_last_checkpoint_reach_the_clocks_once() {
    let dir = tempfile::tempdir().unwrap();
    let expected = uninterrupted(dir.path());
    let lake = dir.path().join("lake");
    let (mut server, _, mqtt) = start(&lake);
    let mut first = readings_of("a", 1..=2);
    first.extend(readings_of("b", 1..=2));
    publish(mqtt, &first);
    let saved = |n: &str| {
        let count = csv(&lake, "SELECT count(*) AS n FROM readings");
        let ckpts = std::fs::read_dir(lake.join("_checkpoints"))
            .map(|d| d.count())
            .unwrap_or(0);
        (count == format!("n\n{n}\n") && ckpts > 0).then_some(())
    };
    wait_until("the first commit", || saved("4"));
    // Let the checkpoints and the log's offset of that commit land, then keep them.
    std::thread::sleep(Duration::from_millis(1500));
    let copy = |from: &std::path::Path, to: &std::path::Path| {
        let _ = std::fs::remove_dir_all(to);
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_file() {
                std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
            }
        }
    };
    let keep = dir.path().join("kept");
    copy(&lake.join("_checkpoints"), &keep.join("ckpt"));
    std::fs::copy(lake.join("_wal/committed"), keep.join("committed")).unwrap();
    let mut second = readings_of("a", 3..=4);
    second.extend(readings_of("b", 3..=4));
    publish(mqtt, &second);
    wait_until("the second commit", || saved("8"));
    std::thread::sleep(Duration::from_millis(1500));
    server.0.kill().unwrap();
    server.0.wait().unwrap();
    drop(server);
    // As if the crash had come between the second commit and its checkpoints.
    copy(&keep.join("ckpt"), &lake.join("_checkpoints"));
    std::fs::copy(keep.join("committed"), lake.join("_wal/committed")).unwrap();

    let (server, _, mqtt) = start(&lake);
    let mut last = readings_of("a", 5..=5);
    last.extend(readings_of("b", 5..=5));
    publish(mqtt, &last);
    stop(server);
    assert_eq!(csv(&lake, STATES), expected);
    assert_eq!(
        csv(&lake, "SELECT count(*) AS n FROM dead_letters"),
        "n\n0\n",
        "the readings given again are not duplicates"
    );
}

/// `kaiabc run` raises its soft open-file limit to the hard one: started with 256 of 8192, it
/// runs with 8192.
#[test]
fn the_server_raises_its_open_file_limit() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let child = Command::new("prlimit")
        .args(["--nofile=256:8192", "--"])
        .arg(env!("CARGO_BIN_EXE_kaiabc"))
        .args(["run", "--http", &http.to_string(), "--mqtt-anonymous"])
        .args(["--mqtt-listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--lake", lake.to_str().unwrap()])
        .args([
            "--state-dir",
            lake.with_extension("state").to_str().unwrap(),
        ])
        .env("KAIABC_JWT_SECRET", SECRET)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let server = Server::new(child);
    wait_until("the health endpoint", || {
        get(http, "/v1/health").filter(|(s, _)| *s == 200)
    });
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", server.0.id())).unwrap();
    let open_files = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let fields: Vec<&str> = open_files.split_whitespace().collect();
    assert_eq!(&fields[3..5], &["8192", "8192"], "{open_files}");
    stop(server);
}

/// Connections are bounded: beyond `--http-max-connections` a new one is answered 503 at once,
/// one from which nothing arrives for `--http-idle-seconds` is closed, and beyond
/// `--mqtt-max-connections` an MQTT connection is closed as soon as it is accepted.
#[test]
fn connections_are_capped_and_idle_ones_closed() {
    use std::io::Read;
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let (server, http, mqtt) = start_with(
        &lake,
        &[
            "--mqtt-anonymous",
            "--http-max-connections",
            "4",
            // Three seconds, not one: on a loaded machine (CI runs test binaries side by side)
            // the four connections were once closed as idle before the fifth was answered.
            "--http-idle-seconds",
            "3",
            "--mqtt-max-connections",
            "2",
        ],
    );
    let idle: Vec<std::net::TcpStream> = (0..4)
        .map(|_| std::net::TcpStream::connect(http).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let (status, body) = request(http, "GET", "/v1/health", &[], "");
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (503, Some("OVERLOADED"))
    );
    // Idle for three seconds: closed by the server, and there is room again.
    let started = Instant::now();
    for mut s in idle {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = [0u8; 64];
        assert_eq!(
            s.read(&mut buf).unwrap_or(0),
            0,
            "an idle connection was closed"
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(request(http, "GET", "/v1/health", &[], "").0, 200);

    let held: Vec<std::net::TcpStream> = (0..2)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", mqtt)).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let mut third = std::net::TcpStream::connect(("127.0.0.1", mqtt)).unwrap();
    third
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 8];
    assert_eq!(third.read(&mut buf).unwrap_or(0), 0);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "closed at once, not after the CONNECT wait: {:?}",
        started.elapsed()
    );
    drop(held);
    stop(server);
}

/// The embedded broker's TLS listener, with a certificate from `kaiabc certs`: a registered
/// node publishes over TLS with its key (Mosquitto's own client, a real independent one) and
/// the reading reaches its clock; the wrong key, an untrusting client and a plain client are
/// refused there as on the plain port. The server logs JSON lines throughout. A bad key file
/// stops the start with a message that names it.
#[test]
fn mqtt_over_tls_applies_the_node_logins_and_the_logs_are_json() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let other = dir.path().join("other");
    ok(&["certs", "--out", certs.to_str().unwrap()]);
    ok(&["certs", "--out", other.to_str().unwrap()]);
    let (cert, key) = (certs.join("server.crt"), certs.join("server.key"));
    let lake = dir.path().join("lake");
    let (mut server, http, _) = start_with(
        &lake,
        &[
            "--log-format",
            "json",
            "--mqtt-tls-listen",
            "127.0.0.1:0",
            "--mqtt-tls-cert",
            cert.to_str().unwrap(),
            "--mqtt-tls-key",
            key.to_str().unwrap(),
        ],
    );
    let tls = server.announced("TLS on ").port();
    let admin = token("admin");
    let (status, body) = request(
        http,
        "POST",
        "/v1/sensors/nodes",
        &[("Authorization", &format!("Bearer {admin}"))],
        r#"{"node_id":"tls1"}"#,
    );
    assert_eq!(status, 201, "{body}");
    let api_key = body["api_key"].as_str().unwrap().to_string();
    let publish = |pass: &str, ca: Option<&std::path::Path>, port: u16| {
        let payload = reading("tls1", 0, 5, 299.5);
        let mut c = Command::new("mosquitto_pub");
        c.args([
            "-h",
            "localhost",
            "-p",
            &port.to_string(),
            "-u",
            "tls1",
            "-P",
            pass,
        ]);
        c.args([
            "-i",
            "tls1-test",
            "-t",
            "kaiabc/sensors/tls1",
            "-q",
            "1",
            "-m",
            &payload,
        ]);
        if let Some(ca) = ca {
            c.arg("--cafile").arg(ca);
        }
        c.stderr(Stdio::null())
            .status()
            .expect("mosquitto_pub (scripts/services.sh installs mosquitto)")
            .success()
    };
    let ca = certs.join("ca.crt");
    assert!(!publish("wrong-key", Some(&ca), tls), "a wrong key got in");
    assert!(
        !publish(&api_key, Some(&other.join("ca.crt")), tls),
        "an untrusted server was trusted"
    );
    assert!(
        !publish(&api_key, None, tls),
        "a plain client was served on the TLS port"
    );
    assert!(publish(&api_key, Some(&ca), tls));
    wait_until("the reading sent over TLS applied", || {
        get(http, "/v1/oscillator/state?node_id=tls1").filter(|(s, b)| *s == 200 && b["seq"] == 0)
    });
    let stderr = stop(server);
    // Every line is one JSON event with the keys a log shipper parses.
    let events: Vec<serde_json::Value> = stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(
        events.iter().any(|e| e["message"]
            .as_str()
            .is_some_and(|m| m.contains("and TLS on 127.0.0.1"))),
        "{stderr}"
    );
    for e in &events {
        for k in ["timestamp", "level", "target", "message"] {
            assert!(!e[k].is_null(), "{k} missing: {e}");
        }
    }

    // A key that is not a key: refused at start, naming the file.
    let out = Command::new(env!("CARGO_BIN_EXE_kaiabc"))
        .args([
            "run",
            "--http",
            "127.0.0.1:0",
            "--mqtt-listen",
            "127.0.0.1:0",
            "--mqtt-tls-listen",
            "127.0.0.1:0",
            "--mqtt-tls-cert",
            cert.to_str().unwrap(),
            "--mqtt-tls-key",
            ca.to_str().unwrap(),
            "--lake",
            dir.path().join("lake2").to_str().unwrap(),
        ])
        .env("KAIABC_JWT_SECRET", SECRET)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ca.crt") && err.contains("MQTT TLS"), "{err}");
}
