//! End-to-end tests of `kaiabc replay` and `kaiabc query` on the datasets: the real binary,
//! real Parquet files, and the lake read back by DataFusion here and by DuckDB and pyarrow
//! (`scripts/check_lake.py`).

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    // Read when the test runs: a shared target directory may hold binaries built from a
    // clone at another path.
    Path::new(
        &std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into()),
    )
    .parent()
    .unwrap()
    .to_path_buf()
}

fn dataset(name: &str) -> String {
    root().join("datasets").join(name).display().to_string()
}

mod common;
use common::live::{all_rows, csv as query_csv};
use common::{kaiabc, ok};

fn replay(lake: &Path, files: &[String], extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["replay", "--json", "--lake", lake.to_str().unwrap()];
    args.extend(extra);
    args.extend(files.iter().map(String::as_str));
    serde_json::from_str(&ok(&args)).unwrap()
}

fn manifest() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(root().join("datasets/manifest.json")).unwrap())
        .unwrap()
}

fn entry<'a>(m: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    m["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"].as_str().unwrap().ends_with(name))
        .unwrap()
}

#[test]
fn the_datasets_land_in_the_lake_as_the_manifest_says_and_real_readers_agree() {
    let lake = tempfile::tempdir().unwrap();
    let names = [
        "greensboro-field.csv",
        "pacific-coast.jsonl",
        "chamber-cycle.csv",
    ];
    let files: Vec<String> = names.iter().map(|n| dataset(n)).collect();
    let s = replay(lake.path(), &files, &[]);
    let m = manifest();
    let (mut lines, mut valid, mut dups, mut malformed) = (0, 0, 0, 0);
    for n in names {
        let e = entry(&m, n);
        lines += e["lines"].as_u64().unwrap();
        valid += e["valid_readings"].as_u64().unwrap();
        dups += e["duplicates"].as_array().unwrap().len() as u64;
        malformed += e["malformed"].as_array().unwrap().len() as u64;
    }
    assert_eq!(s["events_in"], lines);
    assert_eq!(s["accepted"], valid);
    assert_eq!(s["rejected"]["DUPLICATE"], dups);
    let rejected: u64 = s["rejected"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| k.as_str() != "DUPLICATE")
        .map(|(_, v)| v.as_u64().unwrap())
        .sum();
    assert_eq!(rejected, malformed);
    assert_eq!(s["states"], valid, "one state per applied reading");

    // DataFusion sees the same.
    let counts = query_csv(
        lake.path(),
        "SELECT (SELECT count(*) FROM readings) AS r, (SELECT count(*) FROM dead_letters) AS d",
    );
    // Every exact copy is dropped from `readings` and kept as a DUPLICATE dead letter.
    assert_eq!(counts, format!("r,d\n{valid},{}\n", malformed + dups));

    // DuckDB and pyarrow read every table with the documented schema, and the counts per node
    // and the dead letters' reasons and line numbers match the manifest.
    let python = common::deploy::python();
    let mut check = Command::new(python);
    check
        .arg(root().join("scripts/check_lake.py"))
        .arg("--lake")
        .arg(lake.path())
        .arg("--manifest")
        .arg(root().join("datasets/manifest.json"))
        .args(&files);
    let out = check.output().expect("run check_lake.py");
    assert!(
        out.status.success(),
        "check_lake.py:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // A node held at 30 °C runs free at the model's period (20.7 h at 30 °C, Rust et al.,
    // Science 318:809, 2007); one given a 24 h ±5 K cycle locks to 24 h (Yoshida et al., PNAS
    // 2009, temperature-cycle entrainment of the in-vitro oscillator).
    let last = query_csv(
        lake.path(),
        "SELECT node_id, period_hours, false_alarm_probability FROM rhythms \
         WHERE metric = 'koa' AND node_id LIKE 'chamber%' \
         AND window_end = (SELECT max(window_end) FROM rhythms WHERE node_id LIKE 'chamber%') \
         ORDER BY node_id",
    );
    let rows: Vec<Vec<f64>> = last
        .lines()
        .skip(1)
        .map(|l| l.split(',').skip(1).map(|x| x.parse().unwrap()).collect())
        .collect();
    assert_eq!(rows.len(), 2, "{last}");
    let (constant, cycled) = (&rows[0], &rows[1]);
    assert!((constant[0] - 20.7).abs() < 0.15, "constant: {last}");
    assert!((cycled[0] - 24.0).abs() < 0.3, "cycled: {last}");
    assert!(constant[1] < 1e-6 && cycled[1] < 1e-6, "{last}");
    let state_periods = query_csv(
        lake.path(),
        "SELECT node_id, avg(period_hours) FROM states WHERE node_id LIKE 'chamber%' \
         AND timestamp >= '2025-03-12T00:00:00Z' GROUP BY node_id ORDER BY node_id",
    );
    let p: Vec<f64> = state_periods
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(1).unwrap().parse().unwrap())
        .collect();
    assert!(
        (p[0] - 20.7).abs() < 0.15 && (p[1] - 24.0).abs() < 0.3,
        "{state_periods}"
    );
}

#[test]
fn replaying_twice_adds_only_duplicate_dead_letters() {
    let lake = tempfile::tempdir().unwrap();
    let files = vec![dataset("pacific-coast.jsonl")];
    let first = replay(lake.path(), &files, &[]);
    assert!(first["accepted"].as_u64().unwrap() > 6000);
    let tables = |lake: &Path| {
        let mut out = String::new();
        for (table, order) in [
            ("readings", "node_id, timestamp"),
            ("states", "node_id, timestamp"),
            ("rhythms", "node_id, window_end, metric"),
        ] {
            out += &query_csv(lake, &format!("SELECT * FROM {table} ORDER BY {order}"));
        }
        out
    };
    let dead = |lake: &Path| {
        query_csv(
            lake,
            "SELECT reason, count(*) AS n FROM dead_letters GROUP BY reason ORDER BY reason",
        )
    };
    let before_rows = tables(lake.path());
    let before_dead = dead(lake.path());
    let second = replay(lake.path(), &files, &[]);
    assert_eq!(second["accepted"], 0, "{second}");
    assert_eq!(second["states"], 0);
    let dups = |s: &serde_json::Value| s["rejected"]["DUPLICATE"].as_u64().unwrap();
    assert_eq!(
        dups(&second),
        first["accepted"].as_u64().unwrap() + dups(&first)
    );
    // Readings, states and windows are untouched; each copy is one more DUPLICATE dead letter.
    assert_eq!(tables(lake.path()), before_rows);
    let count = |csv: &str, reason: &str| -> u64 {
        csv.lines()
            .find_map(|l| l.strip_prefix(&format!("{reason},")))
            .map_or(0, |n| n.parse().unwrap())
    };
    let after_dead = dead(lake.path());
    assert_eq!(
        count(&after_dead, "DUPLICATE"),
        count(&before_dead, "DUPLICATE") + dups(&second),
        "{before_dead} → {after_dead}"
    );
}

/// A key is the exact (node, timestamp, seq): a node that rebooted and counts its seq from 1
/// again sends new readings, and so does one that sends two readings with one timestamp.
#[test]
fn only_exact_copies_are_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("reboot.csv");
    std::fs::write(
        &log,
        "node_id,seq,timestamp,temperature_kelvin,sensor_type,quality\n\
         n1,1,2025-07-01T00:00:00Z,300.0,BME280,good\n\
         n1,2,2025-07-01T00:10:00Z,300.1,BME280,good\n\
         n1,1,2025-07-01T00:20:00Z,300.2,BME280,good\n\
         n1,2,2025-07-01T00:30:00Z,300.3,BME280,good\n\
         n1,3,2025-07-01T00:30:00Z,300.4,BME280,good\n\
         n1,2,2025-07-01T00:30:00Z,300.3,BME280,good\n",
    )
    .unwrap();
    let lake = dir.path().join("lake");
    let s = replay(&lake, &[log.display().to_string()], &[]);
    assert_eq!(s["applied"], 5, "{s}");
    assert_eq!(s["rejected"]["DUPLICATE"], 1, "{s}");
    let dead = query_csv(
        &lake,
        "SELECT reason, node_id, source, payload LIKE '%\"seq\":2%' AS seq2, \
         payload LIKE '%00:30:00%' AS t FROM dead_letters",
    );
    assert_eq!(
        dead,
        "reason,node_id,source,seq2,t\nDUPLICATE,n1,node:n1,true,true\n"
    );
}

/// One CSV line of a reading of `node` at `minute` after 2025-07-01T00:00Z.
fn line(node: &str, seq: Option<i64>, minute: i64) -> String {
    let t = chrono::DateTime::parse_from_rfc3339("2025-07-01T00:00:00Z").unwrap()
        + chrono::Duration::minutes(minute);
    let kelvin = 300.0 + 3.0 * (minute as f64 / 229.0).sin();
    let seq = seq.map_or(String::new(), |s| s.to_string());
    format!(
        "{node},{seq},{},{kelvin:.3},BME280,good\n",
        t.format("%Y-%m-%dT%H:%M:%SZ")
    )
}

const HEADER: &str = "node_id,seq,timestamp,temperature_kelvin,sensor_type,quality\n";

/// Exact copies that arrive hours or days after their originals (in the same log, and in a
/// later replay) are dropped as DUPLICATE and land once, however far back they reach: past
/// what a node keeps in memory (a day's readings), into files the run has only staged, and
/// into the lake of an earlier run. A node that reboots (seq from 1 again, later times) and
/// one without seqs are not taken for copies.
#[test]
fn late_exact_copies_land_once_within_a_replay_and_across_replays() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let days = 3 * 1440;
    let mut log = HEADER.to_string();
    // Copies: (original minute, minute after which the copy comes).
    let copies = [(60, 360), (120, 1380), (200, 3000), (1500, 4000)];
    let mut unique = 0;
    for m in 0..days {
        log += &line("n1", Some(m + 1), m);
        unique += 1;
        // A node without seqs, every 10 minutes.
        if m % 10 == 0 {
            log += &line("n2", None, m);
            unique += 1;
        }
        for &(orig, after) in &copies {
            if m == after {
                log += &line("n1", Some(orig + 1), orig);
            }
        }
        if m == 2000 {
            log += &line("n2", None, 500);
        }
    }
    // n1 reboots: seq from 1 again, after the last reading.
    for k in 0..30 {
        log += &line("n1", Some(k + 1), days + 10 + k);
        unique += 1;
    }
    let first = dir.path().join("first.csv");
    std::fs::write(&first, &log).unwrap();
    let s = replay(&lake, &[first.display().to_string()], &[]);
    assert_eq!(s["rejected"]["DUPLICATE"], copies.len() as u64 + 1, "{s}");
    let counts = || {
        query_csv(
            &lake,
            "SELECT count(*) AS n, count(DISTINCT concat(node_id, '/', CAST(timestamp AS VARCHAR), '/', \
             coalesce(CAST(seq AS VARCHAR), '-'))) AS keys, \
             (SELECT count(*) FROM dead_letters WHERE reason = 'DUPLICATE') AS dups FROM readings",
        )
    };
    assert_eq!(counts(), format!("n,keys,dups\n{unique},{unique},5\n"));

    // A later replay: copies of readings of every day of the first, and new readings.
    let mut later = HEADER.to_string();
    for m in [5, 1441, 2900, 4319] {
        later += &line("n1", Some(m + 1), m);
    }
    later += &line("n2", None, 2880);
    later += &line("n1", Some(3), days + 12);
    for k in 30..40 {
        later += &line("n1", Some(k + 1), days + 10 + k);
    }
    let second = dir.path().join("second.csv");
    std::fs::write(&second, &later).unwrap();
    let s = replay(&lake, &[second.display().to_string()], &[]);
    assert_eq!(s["rejected"]["DUPLICATE"], 6, "{s}");
    assert_eq!(s["applied"], 10, "{s}");
    assert_eq!(
        counts(),
        format!("n,keys,dups\n{},{},11\n", unique + 10, unique + 10)
    );
}

#[test]
fn rows_do_not_depend_on_workers_or_on_how_the_input_is_split() {
    let one = tempfile::tempdir().unwrap();
    let four = tempfile::tempdir().unwrap();
    let split = tempfile::tempdir().unwrap();
    let files = vec![
        dataset("greensboro-field.csv"),
        dataset("pacific-coast.jsonl"),
    ];
    replay(one.path(), &files, &["--workers", "1"]);
    replay(four.path(), &files, &["--workers", "4"]);
    let rows = all_rows(one.path());
    assert!(rows.lines().count() > 60_000);
    assert_eq!(rows, all_rows(four.path()), "1 vs 4 workers");

    // The same Greensboro log cut into two files (the second with the header repeated): the
    // same rows, except the dead letters' sources (file and line) and receipt times, which
    // name the part they came from.
    let text = std::fs::read_to_string(dataset("greensboro-field.csv")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let cut = lines.len() / 2;
    let a = split.path().join("part-a.csv");
    let b = split.path().join("part-b.csv");
    std::fs::write(&a, lines[..cut].join("\n") + "\n").unwrap();
    std::fs::write(&b, format!("{}\n{}\n", lines[0], lines[cut..].join("\n"))).unwrap();
    let lake = split.path().join("lake");
    replay(
        &lake,
        &[
            a.display().to_string(),
            b.display().to_string(),
            dataset("pacific-coast.jsonl"),
        ],
        &["--workers", "2"],
    );
    let without_dead_letters = |lake: &Path| {
        let mut out = String::new();
        for (table, order) in [
            ("readings", "node_id, timestamp"),
            ("states", "node_id, timestamp"),
            ("rhythms", "node_id, window_end, metric"),
        ] {
            out += &query_csv(lake, &format!("SELECT * FROM {table} ORDER BY {order}"));
        }
        out += &query_csv(
            lake,
            "SELECT reason, payload FROM dead_letters ORDER BY reason, payload",
        );
        out
    };
    assert_eq!(
        without_dead_letters(&lake),
        without_dead_letters(one.path())
    );
}

#[test]
fn late_readings_are_kept_marked_late_and_do_not_rewind_the_clock() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("late.csv");
    // Reading 3 (00:10:30) arrives after reading 5 (00:30): by then the watermark (newest
    // event time − 60 s lateness) has passed reading 4's minute, so 4 was applied and 3 is
    // kept, marked late, with no state. The last line repeats reading 6: a duplicate.
    std::fs::write(
        &log,
        "node_id,seq,timestamp,temperature_kelvin,sensor_type,quality\n\
         n1,1,2025-07-01T00:00:00Z,300.0,BME280,good\n\
         n1,2,2025-07-01T00:10:00Z,300.1,BME280,good\n\
         n1,4,2025-07-01T00:20:00Z,300.2,BME280,good\n\
         n1,5,2025-07-01T00:30:00Z,300.4,BME280,good\n\
         n1,3,2025-07-01T00:10:30Z,300.3,BME280,good\n\
         n1,6,2025-07-01T00:40:00Z,300.5,BME280,good\n\
         n1,6,2025-07-01T00:40:00Z,300.5,BME280,good\n",
    )
    .unwrap();
    let lake = dir.path().join("lake");
    let s = replay(
        &lake,
        &[log.display().to_string()],
        &["--lateness-seconds", "60"],
    );
    assert_eq!(s["applied"], 5);
    assert_eq!(s["late"], 1);
    assert_eq!(s["rejected"]["DUPLICATE"], 1);
    let late = query_csv(
        &lake,
        "SELECT seq, late, filtered_temperature_kelvin IS NULL AS unfiltered FROM readings \
         ORDER BY seq",
    );
    assert_eq!(
        late,
        "seq,late,unfiltered\n1,false,false\n2,false,false\n3,true,true\n4,false,false\n\
         5,false,false\n6,false,false\n"
    );
    let states = query_csv(&lake, "SELECT seq FROM states ORDER BY timestamp");
    assert_eq!(states, "seq\n1\n2\n4\n5\n6\n");

    // With 15 minutes of lateness the watermark has not passed reading 4 when 3 arrives: 3 is
    // put back in order instead.
    let lake2 = dir.path().join("lake2");
    let s = replay(
        &lake2,
        &[log.display().to_string()],
        &["--lateness-seconds", "900"],
    );
    assert_eq!(
        (s["applied"].as_u64(), s["late"].as_u64()),
        (Some(6), Some(0))
    );
    let states = query_csv(&lake2, "SELECT seq FROM states ORDER BY timestamp");
    assert_eq!(states, "seq\n1\n2\n3\n4\n5\n6\n");
}

#[test]
fn bad_sql_is_reported_plainly() {
    let lake = tempfile::tempdir().unwrap();
    let out = kaiabc(&[
        "query",
        "SELECT no_such_column FROM readings",
        "--lake",
        lake.path().to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no_such_column"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn generated_logs_are_deterministic_per_seed_and_replay_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let gen = |seed: &str, name: &str| {
        let path = dir.path().join(name);
        ok(&[
            "datasets",
            "generate",
            "--nodes",
            "5",
            "--days",
            "0.5",
            "--interval-seconds",
            "300",
            "--seed",
            seed,
            "--output",
            path.to_str().unwrap(),
        ]);
        std::fs::read_to_string(path).unwrap()
    };
    let a = gen("7", "a.csv");
    assert_eq!(a, gen("7", "b.csv"), "same seed, same file");
    assert_ne!(a, gen("8", "c.csv"), "another seed, another file");
    let lines = a.lines().count() - 1;
    assert_eq!(lines, 5 * 144, "5 nodes × 12 h / 5 min");
    let jsonl = gen("7", "d.jsonl");
    assert_eq!(jsonl.lines().count(), lines);
    let lake = dir.path().join("lake");
    let s = replay(
        &lake,
        &[dir.path().join("a.csv").display().to_string()],
        &[],
    );
    assert_eq!(s["events_in"], lines as u64);
    assert_eq!(s["applied"], lines as u64);
    assert_eq!(s["nodes"], 5);
    let per_node = s["state_bytes_per_node"].as_f64().unwrap();
    assert!(per_node > 500.0 && per_node < 64_000.0, "{per_node}");
    // The JSONL rendering of the same readings gives the same states.
    let lake2 = dir.path().join("lake2");
    replay(
        &lake2,
        &[dir.path().join("d.jsonl").display().to_string()],
        &[],
    );
    let states = |l: &Path| query_csv(l, "SELECT * FROM states ORDER BY node_id, timestamp");
    assert_eq!(states(&lake), states(&lake2));
}

#[test]
fn speed_paces_event_time_against_the_wall_clock() {
    // chamber-cycle.csv spans 12 days less 10 minutes of event time (1 036 200 s); at a million
    // times real time the replay cannot take less than about 1.04 s of wall time.
    let lake = tempfile::tempdir().unwrap();
    let s = replay(
        lake.path(),
        &[dataset("chamber-cycle.csv")],
        &["--speed", "x1000000"],
    );
    assert_eq!(s["applied"], 3456);
    let elapsed = s["elapsed_seconds"].as_f64().unwrap();
    assert!(elapsed >= 1.03, "paced replay took only {elapsed} s");
    let out = kaiabc(&["replay", "--speed", "fast", &dataset("chamber-cycle.csv")]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("max, realtime or xN"));
}

/// The control log (`_control/commands.jsonl`) replayed with the sensor log (`--control`)
/// reproduces the commands: they are merged into the readings by time.
#[test]
fn a_replayed_control_log_applies_its_commands_between_the_readings() {
    let dir = tempfile::tempdir().unwrap();
    let readings = dir.path().join("readings.jsonl");
    let lines: Vec<String> = (1..=4)
        .map(|k| {
            serde_json::json!({
                "node_id": "r1", "seq": k, "timestamp": format!("2026-01-05T10:{:02}:00Z", 10 * k),
                "temperature_kelvin": 300.0, "sensor_type": "BME280",
            })
            .to_string()
        })
        .collect();
    std::fs::write(&readings, lines.join("\n") + "\n").unwrap();
    let control = dir.path().join("commands.jsonl");
    std::fs::write(
        &control,
        concat!(
            r#"{"control":"manual_override","pwm":77,"node_id":"r1","timestamp":"2026-01-05T10:15:00Z"}"#,
            "\n",
            r#"{"control":"pause","node_id":"r1","timestamp":"2026-01-05T10:25:00Z"}"#,
            "\n",
            r#"{"control":"resume","node_id":"r1","timestamp":"2026-01-05T10:35:00Z"}"#,
            "\n",
        ),
    )
    .unwrap();
    let lake = dir.path().join("lake");
    let files = [readings.display().to_string()];
    replay(&lake, &files, &["--control", control.to_str().unwrap()]);
    // Reading 1 follows the clock; 2 is overridden; 3 came while paused (no state); 4 is
    // overridden still.
    let states = query_csv(&lake, "SELECT seq, output_pwm FROM states ORDER BY seq");
    let rows: Vec<&str> = states.lines().skip(1).collect();
    assert_eq!(rows.len(), 3, "{states}");
    assert!(rows[0].starts_with("1,") && rows[0] != "1,77", "{states}");
    assert_eq!(&rows[1..], ["2,77", "4,77"], "{states}");
    assert_eq!(
        query_csv(&lake, "SELECT count(*) AS n FROM readings"),
        "n\n4\n"
    );
    assert_eq!(
        query_csv(&lake, "SELECT count(*) AS n FROM dead_letters"),
        "n\n0\n"
    );
    // A damaged log stops the replay: skipping a command would change every state after it.
    std::fs::write(&control, "{\"control\":\"explode\"}\n").unwrap();
    let out = kaiabc(&[
        "replay",
        "--lake",
        dir.path().join("lake2").to_str().unwrap(),
        "--control",
        control.to_str().unwrap(),
        &files[0],
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("commands.jsonl:1: not a control command"),
        "{err}"
    );
}

/// The numbers of a CSV answer, row by row (its header dropped; text cells kept as they are).
fn cells(csv: &str) -> Vec<Vec<String>> {
    csv.lines()
        .skip(1)
        .map(|l| l.split(',').map(str::to_string).collect())
        .collect()
}

#[test]
fn the_fleet_s_hourly_views_match_sql_over_the_replayed_states() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log.csv");
    let text = ok(&[
        "datasets", "generate", "--nodes", "9", "--days", "1", "--seed", "7",
    ]);
    std::fs::write(&log, text).unwrap();
    // Nodes in three locations by number, boards alternating.
    let registry: Vec<serde_json::Value> = (0..9)
        .map(|n| {
            serde_json::json!({
                "node_id": format!("node_{n:05}"),
                "location": format!("loc{}", n % 3),
                "hardware_type": if n % 2 == 0 { "raspberry_pi_pico" } else { "elm11" },
                "sensor_type": "BME280",
                "registered_at": "2025-01-01T00:00:00Z",
                "key_id": "00000000",
                "key_hash": "-",
            })
        })
        .collect();
    let reg = dir.path().join("nodes.json");
    std::fs::write(&reg, serde_json::to_string(&registry).unwrap()).unwrap();
    let lake = dir.path().join("lake");
    replay(
        &lake,
        &[log.display().to_string()],
        // Every state refreshes the views, so they hold each node's last state before the hour.
        &[
            "--workers",
            "2",
            "--registry",
            reg.to_str().unwrap(),
            "--fleet-resolution-minutes",
            "1",
        ],
    );
    for hour in ["03", "12", "23"] {
        let at = format!("TIMESTAMP '2025-01-01T{hour}:00:00Z'");
        let views = query_csv(
            &lake,
            &format!(
                "SELECT \"group\", nodes, online, clocks, order_parameter, mean_phase, \
                 period_mean_hours, koa_min, koa_max, temperature_mean_kelvin, \
                 temperature_max_kelvin, elm11 FROM fleet WHERE snapshot_at = {at} \
                 AND group_by IN ('fleet', 'location') ORDER BY \"group\""
            ),
        );
        // Independently: each node's last state before the hour, grouped with SQL.
        let last = format!(
            "SELECT node_id, phase, period_hours, koa_metric, temperature_kelvin, \
             'loc' || CAST(CAST(substr(node_id, 6) AS BIGINT) % 3 AS VARCHAR) AS loc, \
             CAST(substr(node_id, 6) AS BIGINT) % 2 AS elm, \
             row_number() OVER (PARTITION BY node_id ORDER BY timestamp DESC, seq DESC) AS rn \
             FROM states WHERE timestamp < {at}"
        );
        let stats = "count(*) AS n, count(*) AS online, count(*) AS clocks, \
             sqrt(power(avg(cos(2 * pi() * phase)), 2) + power(avg(sin(2 * pi() * phase)), 2)), \
             (atan2(avg(sin(2 * pi() * phase)), avg(cos(2 * pi() * phase))) / (2 * pi()) + 1) % 1, \
             avg(period_hours), min(koa_metric), max(koa_metric), avg(temperature_kelvin), \
             max(temperature_kelvin), sum(elm)";
        let sql = query_csv(
            &lake,
            &format!(
                "WITH last AS ({last}) \
                 SELECT g, {stats} FROM (SELECT *, 'all' AS g FROM last UNION ALL \
                 SELECT *, loc AS g FROM last) WHERE rn = 1 GROUP BY g ORDER BY g"
            ),
        );
        let (views, sql) = (cells(&views), cells(&sql));
        assert_eq!(views.len(), 4, "{hour}: {views:?}");
        assert_eq!(views.len(), sql.len(), "{hour}");
        for (v, s) in views.iter().zip(&sql) {
            assert_eq!(v[0], s[0]);
            for (i, (a, b)) in v.iter().zip(s).enumerate().skip(1) {
                let (a, b): (f64, f64) = (a.parse().unwrap(), b.parse().unwrap());
                // Fixed-point sums: phases to 2⁻³² of a cycle, other sums to 2⁻²⁴.
                assert!(
                    (a - b).abs() <= 1e-6 * b.abs().max(1.0),
                    "{hour}, group {}, column {i}: views {a}, SQL {b}",
                    v[0]
                );
            }
        }
    }
}
