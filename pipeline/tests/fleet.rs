//! The fleet's views and alerts in a live `kaiabc run`: registered nodes grouped by location and
//! board, a node that goes silent raised as `NODE_OFFLINE` on event time (on `/v1/alerts`, the
//! WebSocket's `alert` stream and `/metrics`) and cleared when it reports again; and a replay of
//! the same readings with the same registry raising and clearing the same alerts.

mod common;

use std::collections::BTreeSet;

use common::live::*;
use serde_json::{json, Value};

fn bearer(t: &str) -> String {
    format!("Bearer {t}")
}

/// `(code, node, raised_at, cleared_at)` of an alert as `/v1/alerts` or a replay lists it.
fn key(a: &Value) -> (String, String, String, String) {
    let s = |v: &Value| v.as_str().unwrap_or("").to_string();
    (
        s(&a["code"]),
        s(&a["node_id"]),
        s(&a["raised_at"]),
        s(&a["cleared_at"]),
    )
}

#[test]
fn a_silent_node_is_offline_on_every_surface_then_clears_and_a_replay_agrees() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let flags = ["--offline-after", "3", "--stale-after", "1"];
    let (server, http, mqtt) = start_with(&lake, &[&["--mqtt-anonymous"][..], &flags].concat());
    let admin = token("admin");
    for (node, location, hw) in [
        ("fa", "chamber-1", "raspberry_pi_pico"),
        ("fb", "chamber-1", "elm11"),
        ("fc", "field", "raspberry_pi_pico"),
    ] {
        let (status, body) = request(
            http,
            "POST",
            "/v1/sensors/nodes",
            &[("Authorization", &bearer(&admin))],
            &json!({"node_id": node, "location": location, "hardware_type": hw}).to_string(),
        );
        assert_eq!(status, 201, "{body}");
    }
    let rt = ws_runtime();
    let mut ws = rt.block_on(async {
        let mut ws = ws_observer(http).await;
        send(
            &mut ws,
            json!({"action": "subscribe", "streams": ["alert", "fleet.summary", "fleet.group.location.*"]}),
        )
        .await;
        // The fleet's streams come with a snapshot, as the nodes' do.
        let ack = next_json(&mut ws).await.unwrap();
        assert_eq!(ack["type"], "ack", "{ack}");
        let snap = ack["snapshot"].as_array().unwrap();
        assert!(snap.iter().any(|i| i["stream"] == "fleet.summary"), "{ack}");
        ws
    });

    // fa reports for minutes 0–2, fb and fc for 0–10: with 60 s of lateness event time
    // reaches minute 9, past fa's offline time (2 + 3).
    let mut sent: Vec<(String, String)> = Vec::new();
    let mut seq = std::collections::HashMap::new();
    let mut minute = |nodes: &[&str], m: u32, sent: &mut Vec<(String, String)>| {
        for n in nodes {
            let s = seq.entry(n.to_string()).or_insert(0i64);
            *s += 1;
            let msg = (
                format!("kaiabc/sensors/{n}"),
                reading(n, *s, m, 300.0 + m as f64 * 0.1),
            );
            publish(mqtt, std::slice::from_ref(&msg));
            sent.push(msg);
        }
    };
    for m in 0..=10 {
        let nodes: &[&str] = if m <= 2 {
            &["fa", "fb", "fc"]
        } else {
            &["fb", "fc"]
        };
        minute(nodes, m, &mut sent);
    }
    let summary = wait_until("fa offline in the fleet's summary", || {
        get(http, "/v1/fleet/summary")
            .filter(|(s, b)| *s == 200 && b["fleet"]["status"]["offline"] == 1)
    })
    .1;
    assert_eq!(summary["fleet"]["nodes"], 3, "{summary}");
    assert_eq!(summary["fleet"]["status"]["online"], 2, "{summary}");
    assert_eq!(
        summary["fleet"]["hardware"]["raspberry_pi_pico"], 2,
        "{summary}"
    );
    // Two live clocks: R is defined, in [0, 1].
    let r = summary["fleet"]["synchrony"]["order_parameter"]
        .as_f64()
        .unwrap();
    assert!((0.0..=1.0).contains(&r), "{summary}");
    assert_eq!(summary["alerts_active"]["NODE_OFFLINE"], 1, "{summary}");

    let (status, groups) = get(http, "/v1/fleet/groups?by=location").unwrap();
    assert_eq!(status, 200);
    let chamber = groups["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["group"] == "chamber-1")
        .unwrap();
    assert_eq!(chamber["nodes"], 2, "{groups}");
    assert_eq!(chamber["status"]["offline"], 1, "{groups}");
    let (status, body) = get(http, "/v1/fleet/groups?by=planet").unwrap();
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "INVALID_PARAMETER", "{body}");
    let (status, sync) = get(http, "/v1/fleet/synchrony?by=hardware_type").unwrap();
    assert_eq!(
        (status, sync["by"].as_str()),
        (200, Some("hardware_type")),
        "{sync}"
    );
    let (status, outliers) = get(http, "/v1/fleet/outliers").unwrap();
    assert_eq!(status, 200, "{outliers}");

    let (_, alerts) = get(http, "/v1/alerts").unwrap();
    let active = alerts["active"].as_array().unwrap();
    assert_eq!(active.len(), 1, "{alerts}");
    assert_eq!(active[0]["code"], "NODE_OFFLINE");
    assert_eq!(active[0]["node_id"], "fa");
    assert_eq!(
        active[0]["raised_at"], "2026-01-05T10:05:00.000000Z",
        "{alerts}"
    );
    assert_eq!(
        active[0]["details"]["last_seen"], "2026-01-05T10:02:00.000000Z",
        "{alerts}"
    );
    // The group streams' changes arrive in sequence, each a group's view as `/v1/fleet/groups`
    // shows it.
    let mut group_seqs: Vec<u64> = Vec::new();
    let mut chamber_nodes = None;
    let event = rt.block_on(async {
        loop {
            let m = next_json(&mut ws).await.expect("the socket closed");
            if m["stream"] == "fleet.group.location.chamber-1" {
                group_seqs.push(m["seq"].as_u64().unwrap());
                chamber_nodes = m["data"]["nodes"].as_i64();
                assert_eq!(m["event"], "fleet.group", "{m}");
                assert!(m["node_id"].is_null(), "{m}");
            }
            if m["event"] == "alert" {
                return m;
            }
        }
    });
    assert!(!group_seqs.is_empty());
    assert!(group_seqs.windows(2).all(|w| w[1] > w[0]), "{group_seqs:?}");
    assert_eq!(chamber_nodes, Some(2));
    assert_eq!(
        (
            event["code"].as_str(),
            event["node_id"].as_str(),
            event["severity"].as_str()
        ),
        (Some("NODE_OFFLINE"), Some("fa"), Some("warning")),
        "{event}"
    );
    let (_, metrics) = get_text(http, "/metrics");
    assert!(
        metrics.contains("kaiabc_alerts_active{code=\"NODE_OFFLINE\",severity=\"warning\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "kaiabc_fleet_nodes{by=\"location\",group=\"chamber-1\",status=\"offline\"} 1"
        ),
        "{metrics}"
    );
    let body = metrics.split("\r\n\r\n").nth(1).unwrap();
    promtool_check(body);
    // Every metric the stack's alerting rules read is one this server exports.
    let rules = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus/alerts.yml"),
    )
    .unwrap();
    for word in rules.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        if word.starts_with("kaiabc_") {
            assert!(
                body.contains(&format!("\n{word}")),
                "{word} is not exported:\n{body}"
            );
        }
    }

    // fa comes back at minute 12; event time moves on to 13.
    minute(&["fb", "fc"], 11, &mut sent);
    for m in 12..=14 {
        minute(&["fa", "fb", "fc"], m, &mut sent);
    }
    let alerts = wait_until("fa's alert cleared", || {
        get(http, "/v1/alerts")
            .filter(|(_, b)| b["count"] == 0)
            .map(|(_, b)| b)
    });
    let recent = alerts["recent"].as_array().unwrap();
    assert_eq!(recent.len(), 1, "{alerts}");
    assert_eq!(
        recent[0]["cleared_at"], "2026-01-05T10:12:00.000000Z",
        "{alerts}"
    );
    let cleared = rt.block_on(async {
        loop {
            let m = next_json(&mut ws).await.expect("the socket closed");
            if m["event"] == "alert" {
                return m;
            }
        }
    });
    assert_eq!(cleared["data"]["state"], "cleared", "{cleared}");
    assert_eq!(
        cleared["details"]["last_seen"], "2026-01-05T10:02:00.000000Z",
        "{cleared}"
    );
    let live: BTreeSet<_> = recent.iter().map(key).collect();
    stop(server);

    // The same readings replayed with the same registry and thresholds.
    let log = dir.path().join("sent.jsonl");
    let lines: Vec<&str> = sent.iter().map(|(_, p)| p.as_str()).collect();
    std::fs::write(&log, lines.join("\n") + "\n").unwrap();
    let registry = lake.with_extension("state").join("nodes.json");
    let replayed_lake = dir.path().join("replayed");
    let mut args = vec![
        "replay",
        log.to_str().unwrap(),
        "--json",
        "--registry",
        registry.to_str().unwrap(),
        "--lake",
        replayed_lake.to_str().unwrap(),
    ];
    args.extend(flags);
    let out = common::ok(&args);
    let summary: Value = serde_json::from_str(&out).unwrap();
    let replayed: BTreeSet<_> = summary["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["state"] == "cleared")
        .map(key)
        .collect();
    assert_eq!(live, replayed, "{summary}");
    assert_eq!(summary["fleet"]["groups"]["location"], 2, "{summary}");
}

/// Connects as `node` with a Last Will (`offline`, on its status topic), announces itself
/// `online` (QoS 1), then vanishes without a DISCONNECT: the broker sends the will.
fn online_then_gone(mqtt: u16, node: &str) {
    use rumqttc::{AsyncClient, Event, Incoming, LastWill, MqttOptions, QoS};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut o = MqttOptions::new(format!("{node}-client"), "127.0.0.1", mqtt);
        o.set_keep_alive(std::time::Duration::from_secs(5));
        let status = format!("kaiabc/nodes/{node}/status");
        o.set_last_will(LastWill::new(&status, "offline", QoS::AtLeastOnce, true));
        let (client, mut events) = AsyncClient::new(o, 10);
        client
            .publish(&status, QoS::AtLeastOnce, true, "online")
            .await
            .unwrap();
        loop {
            if let Ok(Event::Incoming(Incoming::PubAck(_))) = events.poll().await {
                break;
            }
        }
        drop(events);
        drop(client);
    });
}

#[test]
fn a_live_fleet_that_falls_silent_still_goes_offline_and_a_last_will_raises_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let (server, http, mqtt) = start_with(
        &lake,
        &[
            "--mqtt-anonymous",
            "--offline-after",
            "1",
            "--stale-after",
            "1",
            "--lateness-seconds",
            "0",
        ],
    );
    // One reading, stamped 150 s ago (a node reporting in real time), then silence from the
    // whole fleet: event time follows the wall clock, so the node is already past its offline
    // minute when the source next idles.
    let at = chrono::Utc::now() - chrono::Duration::seconds(150);
    let reading = json!({
        "node_id": "rt1",
        "seq": 1,
        "timestamp": kaiabc_schemas::format_timestamp(&at),
        "temperature_kelvin": 300.0,
        "humidity_percent": 40.0,
        "pressure_pa": 101000.0,
        "sensor_type": "BME280",
    })
    .to_string();
    publish(mqtt, &[("kaiabc/sensors/rt1".to_string(), reading)]);
    // A second node announces itself and drops: its Last Will. Status messages are stamped at
    // the watermark, and a tick's events apply once event time has passed it: with event time
    // following the wall clock, within the next minute.
    online_then_gone(mqtt, "lw1");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(100);
    let alerts = loop {
        let (_, b) = get(http, "/v1/alerts").unwrap();
        if b["count"] == 2 {
            break b;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not both offline: {b}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    let active = alerts["active"].as_array().unwrap();
    let by_node = |n: &str| active.iter().find(|a| a["node_id"] == n).unwrap();
    assert_eq!(by_node("rt1")["code"], "NODE_OFFLINE", "{alerts}");
    assert_eq!(by_node("rt1")["details"]["last_will"], false, "{alerts}");
    assert_eq!(by_node("lw1")["details"]["last_will"], true, "{alerts}");
    assert!(
        by_node("lw1")["message"]
            .as_str()
            .unwrap()
            .contains("Last Will"),
        "{alerts}"
    );
    stop(server);
}
