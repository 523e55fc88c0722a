//! `kaiabc` as a timely cluster: several processes on loopback, started as a user would start
//! them (the real binary, a hosts file), against one process over the same input.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::crash::ports;
use common::live::all_rows;
use common::ok;

fn dataset(name: &str) -> String {
    common::deploy::root()
        .join("datasets")
        .join(name)
        .display()
        .to_string()
}

/// A generated log of 2 000 nodes × 1 day (2.88 M readings): long enough that a replay is
/// mid-stream seconds after it starts.
fn big_log(dir: &Path) -> PathBuf {
    let log = dir.join("big.csv");
    ok(&[
        "datasets",
        "generate",
        "--nodes",
        "2000",
        "--days",
        "1",
        "-o",
        log.to_str().unwrap(),
    ]);
    log
}

/// `kaiabc replay` as process `i` of `n`, writing to `lake`, stderr piped.
fn replay_process(i: usize, n: usize, hosts: &Path, lake: &Path, inputs: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kaiabc"));
    c.args(["replay", "--workers", "1", "--processes", &n.to_string()])
        .args(["--process", &i.to_string()])
        .arg("--hosts")
        .arg(hosts)
        .arg("--lake")
        .arg(lake)
        .args(inputs)
        .stderr(Stdio::piped());
    c
}

/// A hosts file for `n` processes on loopback.
fn hosts(dir: &Path, n: usize) -> PathBuf {
    let path = dir.join("hosts");
    let lines: String = ports::<8>()[..n]
        .iter()
        .map(|p| format!("127.0.0.1:{p}\n"))
        .collect();
    std::fs::write(&path, lines).unwrap();
    path
}

/// Waits for every process, killing them all if one fails or they take longer than `limit`
/// (a cluster whose member died must not hang the test).
fn wait_all(mut children: Vec<Child>, limit: Duration) {
    let started = Instant::now();
    let mut done = vec![false; children.len()];
    while done.iter().any(|d| !d) {
        for (i, c) in children.iter_mut().enumerate() {
            if done[i] {
                continue;
            }
            if let Some(status) = c.try_wait().unwrap() {
                done[i] = true;
                if !status.success() {
                    let mut err = String::new();
                    if let Some(mut e) = c.stderr.take() {
                        std::io::Read::read_to_string(&mut e, &mut err).ok();
                    }
                    for other in children.iter_mut() {
                        other.kill().ok();
                    }
                    panic!("process {i} failed ({status}): {err}");
                }
            }
        }
        if started.elapsed() > limit {
            for c in children.iter_mut() {
                c.kill().ok();
            }
            panic!("the cluster did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_replay_by_two_processes_writes_the_rows_of_one() {
    let dir = tempfile::tempdir().unwrap();
    let files = [
        dataset("greensboro-field.csv"),
        dataset("pacific-coast.jsonl"),
    ];
    let one = dir.path().join("one");
    let mut args = vec!["replay", "--json", "--lake", one.to_str().unwrap()];
    args.extend(files.iter().map(String::as_str));
    ok(&args);

    let two = dir.path().join("two");
    let hosts = hosts(dir.path(), 2);
    let children: Vec<Child> = (0..2)
        .map(|i| {
            let inputs: Vec<&str> = std::iter::once("--json")
                .chain(files.iter().map(String::as_str))
                .collect();
            replay_process(i, 2, &hosts, &two, &inputs)
                // A file, not a pipe: the summary lists every alert (~200 kB), more than a
                // pipe holds while nobody reads it.
                .stdout(std::fs::File::create(dir.path().join(format!("out-{i}.json"))).unwrap())
                .spawn()
                .unwrap()
        })
        .collect();
    wait_all(children, Duration::from_secs(300));
    let outputs: Vec<String> = (0..2)
        .map(|i| std::fs::read_to_string(dir.path().join(format!("out-{i}.json"))).unwrap())
        .collect();
    // Standard output is the summary alone (no connection chatter), process 0's with the
    // records it read.
    let summaries: Vec<serde_json::Value> = outputs
        .iter()
        .map(|o| serde_json::from_str(o).unwrap_or_else(|e| panic!("{e}: {o}")))
        .collect();
    assert!(summaries[0]["events_in"].as_u64().unwrap() > 30_000);
    assert_eq!(summaries[1]["events_in"], 0);
    // Each process applied its nodes' share; together, all.
    let accepted: u64 = summaries
        .iter()
        .map(|s| s["accepted"].as_u64().unwrap())
        .sum();
    assert!(summaries
        .iter()
        .all(|s| s["accepted"].as_u64().unwrap() > 0));
    let readings = common::live::csv(&two, "SELECT count(*) AS n FROM readings");
    assert_eq!(readings, format!("n\n{accepted}\n"));
    // Every process's book holds the whole cluster's fleet (the changes are broadcast).
    assert_eq!(summaries[0]["fleet"], summaries[1]["fleet"]);
    // The same alerts raised and cleared (in the order each process's book saw them, which
    // follows the arrival of the broadcast changes).
    let alerts = |s: &serde_json::Value| {
        let mut a: Vec<String> = s["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.to_string())
            .collect();
        a.sort();
        a
    };
    let (a0, a1) = (alerts(&summaries[0]), alerts(&summaries[1]));
    assert!(!a0.is_empty());
    assert!(a0 == a1, "{} alerts against {}", a0.len(), a1.len());

    let rows = all_rows(&one);
    assert!(rows.lines().count() > 60_000);
    assert_eq!(rows, all_rows(&two), "1 process vs 2 × 1 worker");
}

#[test]
fn bad_cluster_flags_are_refused_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let file = dataset("greensboro-field.csv");
    let run = |extra: &[&str]| {
        let mut args = vec!["replay", "--lake", lake.to_str().unwrap()];
        args.extend(extra);
        args.push(&file);
        common::kaiabc(&args)
    };
    let out = run(&["--processes", "2"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("CLUSTER_NO_HOSTS"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let hosts = hosts(dir.path(), 2);
    let out = run(&[
        "--processes",
        "2",
        "--process",
        "2",
        "--hosts",
        hosts.to_str().unwrap(),
    ]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("CLUSTER_PROCESS_OUT_OF_RANGE"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A process whose peers never come gives up, and says whom it waited for.
    let out = run(&[
        "--processes",
        "2",
        "--hosts",
        hosts.to_str().unwrap(),
        "--connect-seconds",
        "1",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("CLUSTER_CONNECT_TIMEOUT") && err.contains("process 1"),
        "{err}"
    );
    assert!(!lake.join("readings").exists(), "nothing written");
}

#[test]
fn when_a_process_dies_the_others_stop_with_a_status_that_asks_for_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let log = big_log(dir.path());
    let hosts = hosts(dir.path(), 2);
    let lake = dir.path().join("lake");
    let mut children: Vec<Child> = (0..2)
        .map(|i| {
            replay_process(i, 2, &hosts, &lake, &[log.to_str().unwrap()])
                .stdout(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    std::thread::sleep(Duration::from_secs(3));
    let mut survivor = children.remove(0);
    let mut victim = children.remove(0);
    assert!(
        survivor.try_wait().unwrap().is_none(),
        "still replaying when its peer is killed"
    );
    victim.kill().unwrap(); // SIGKILL
    victim.wait().unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = survivor.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(120) {
            survivor.kill().ok();
            panic!("the surviving process hangs");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut survivor.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(75), "{err}");
    assert!(err.contains("a process of the cluster is gone"), "{err}");
    assert!(!err.contains("stack backtrace"), "{err}");
}

#[test]
fn each_process_reads_its_own_kafka_partitions_from_the_group_s_offsets() {
    use kaiabc_connectors::kafka::{ensure_topics, KafkaConfig, KafkaSource, READINGS_TOPIC};
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

    let dir = tempfile::tempdir().unwrap();
    let (_kafka, brokers) = common::kafka::tansu(dir.path(), "sqlite://tansu.db");
    let cfg = KafkaConfig {
        group: "cluster-partitions".into(),
        ..KafkaConfig::new(brokers.clone())
    };
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(ensure_topics(&cfg))
        .unwrap();
    let producer: BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("broker.address.family", "v4")
        .create()
        .unwrap();
    for p in 0..cfg.partitions {
        for k in 0..8 {
            let payload = format!("{p}/{k}");
            producer
                .send(
                    BaseRecord::to(READINGS_TOPIC)
                        .partition(p)
                        .key("n")
                        .payload(&payload),
                )
                .unwrap();
        }
    }
    producer.flush(Duration::from_secs(10)).unwrap();

    // Everything a process's source reads, as (partition, offset, payload).
    let drain = |source: &mut KafkaSource, want: usize| {
        let mut got = Vec::new();
        let started = Instant::now();
        while got.len() < want && started.elapsed() < Duration::from_secs(60) {
            if let Some(r) = source.poll(Duration::from_millis(100)) {
                let r = r.unwrap();
                got.push((r.partition, r.offset, String::from_utf8(r.payload).unwrap()));
            }
        }
        got.sort();
        got
    };
    let mut first = KafkaSource::assigned(&cfg, 0, 2).unwrap();
    let mut second = KafkaSource::assigned(&cfg, 1, 2).unwrap();
    let a = drain(&mut first, 16);
    let b = drain(&mut second, 16);
    let partitions = |v: &[(i32, i64, String)]| {
        let mut p: Vec<i32> = v.iter().map(|r| r.0).collect();
        p.dedup();
        p
    };
    assert_eq!(partitions(&a), [0, 2], "{a:?}");
    assert_eq!(partitions(&b), [1, 3], "{b:?}");
    assert_eq!((a.len(), b.len()), (16, 16));
    assert!(a
        .iter()
        .all(|(p, k, payload)| *payload == format!("{p}/{k}")));

    // Process 0 committed half of each of its partitions: its next source starts there.
    first
        .commit(&[(0, 4), (2, 4)].into_iter().collect())
        .unwrap();
    drop(first);
    let mut again = KafkaSource::assigned(&cfg, 0, 2).unwrap();
    let rest = drain(&mut again, 8);
    assert_eq!(rest.len(), 8, "{rest:?}");
    assert!(
        rest.iter().all(|(p, k, _)| [0, 2].contains(p) && *k >= 4),
        "{rest:?}"
    );
    assert!(
        again.poll(Duration::from_millis(500)).is_none(),
        "nothing more"
    );
}

/// The processes whose parent is `pid` (from `/proc`).
fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid …: the command may hold spaces, so split after its ')'.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(pid) {
            out.push(child);
        }
    }
    out
}

#[test]
fn kaiabc_cluster_launches_three_processes_that_write_the_rows_of_one() {
    let dir = tempfile::tempdir().unwrap();
    let files = [
        dataset("greensboro-field.csv"),
        dataset("pacific-coast.jsonl"),
    ];
    let one = dir.path().join("one");
    let mut args = vec!["replay", "--lake", one.to_str().unwrap()];
    args.extend(files.iter().map(String::as_str));
    ok(&args);

    let three = dir.path().join("three");
    let mut args = vec![
        "cluster",
        "--processes",
        "3",
        "--",
        "replay",
        "--lake",
        three.to_str().unwrap(),
    ];
    args.extend(files.iter().map(String::as_str));
    // Its own temporary directory, to see what the supervisor leaves there.
    let tmp = dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kaiabc"))
        .args(&args)
        .env("TMPDIR", &tmp)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(all_rows(&one), all_rows(&three), "1 process vs 3");
    let left: Vec<_> = std::fs::read_dir(&tmp)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().starts_with("kaiabc-cluster-"))
        .collect();
    assert!(
        left.is_empty(),
        "the supervisor's hosts file is removed at its end: {left:?}"
    );

    let out = common::kaiabc(&["cluster", "--", "analyze"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("runs `replay …` or `run …`"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn kaiabc_cluster_stops_every_process_when_one_dies_and_says_which() {
    let dir = tempfile::tempdir().unwrap();
    let log = big_log(dir.path());
    let lake = dir.path().join("lake");
    let mut supervisor = Command::new(env!("CARGO_BIN_EXE_kaiabc"))
        .args(["cluster", "--processes", "2", "--", "replay", "--lake"])
        .arg(&lake)
        .arg(&log)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let children = loop {
        let c = children_of(supervisor.id());
        if c.len() == 2 {
            break c;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{c:?}");
        std::thread::sleep(Duration::from_millis(50));
    };
    std::thread::sleep(Duration::from_secs(3));
    // SIGKILL process 1 (the later pid is the later process).
    let victim = *children.iter().max().unwrap();
    assert!(Command::new("kill")
        .args(["-9", &victim.to_string()])
        .status()
        .unwrap()
        .success());
    let status = loop {
        if let Some(status) = supervisor.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(180) {
            supervisor.kill().ok();
            panic!("the supervisor hangs");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut supervisor.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!status.success(), "{err}");
    assert!(err.contains("process 1 died"), "{err}");
    assert!(
        children_of(supervisor.id()).is_empty(),
        "no process is left"
    );
    for pid in children {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists()
                || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .unwrap_or_default()
                    .contains(") Z "),
            "process {pid} still runs"
        );
    }
}

// The live cluster: `kaiabc cluster -- run` over Kafka (tansu), against one `kaiabc run`.

/// Nodes of the live tests and their readings each.
const LIVE_NODES: usize = 12;
const LIVE_READINGS: i64 = 30;

/// The node rows of a lake (readings, states, rhythms), sorted: what a node's clock made of
/// its readings, whichever process owned it.
fn node_rows(lake: &Path) -> String {
    use common::live::csv;
    let mut out = String::new();
    for table in ["readings", "states"] {
        out += &csv(
            lake,
            &format!(
                "SELECT * EXCLUDE (date) FROM {table} WHERE node_id LIKE 'c%' \
                 ORDER BY node_id, seq"
            ),
        );
    }
    out += &csv(
        lake,
        "SELECT * EXCLUDE (date) FROM rhythms WHERE node_id LIKE 'c%' \
         ORDER BY node_id, window_end, metric",
    );
    out
}

fn live_node(i: usize) -> String {
    format!("c{i:02}")
}

/// Writes readings `ks` of every node to `kaiabc.readings`, keyed by node (as the bridge and
/// the API write them), pausing `gap` between rounds.
fn produce(brokers: &str, ks: std::ops::RangeInclusive<i64>, gap: Duration) {
    use kaiabc_connectors::kafka::READINGS_TOPIC;
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let producer: BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("broker.address.family", "v4")
        .create()
        .unwrap();
    for k in ks {
        for i in 0..LIVE_NODES {
            let (node, payload) = (live_node(i), common::live::reading_k(&live_node(i), k));
            producer
                .send(BaseRecord::to(READINGS_TOPIC).key(&node).payload(&payload))
                .unwrap();
        }
        producer.poll(Duration::ZERO);
        std::thread::sleep(gap);
    }
    producer.flush(Duration::from_secs(10)).unwrap();
}

/// `n` consecutive free loopback ports (a cluster's processes listen at a base port plus
/// their index).
fn consecutive_ports(n: u16) -> u16 {
    for _ in 0..100 {
        let base = common::live::free_port();
        if base > u16::MAX - n {
            continue;
        }
        let all: Vec<_> = (base..base + n)
            .map(|p| std::net::TcpListener::bind(("127.0.0.1", p)))
            .collect();
        if all.iter().all(Result::is_ok) {
            return base;
        }
    }
    panic!("no {n} consecutive free ports");
}

/// A live pipeline reading Kafka as `group`: one `kaiabc run`, or `kaiabc cluster` of
/// `processes`; with the HTTP addresses of its processes.
fn live(
    dir: &Path,
    name: &str,
    brokers: &str,
    processes: u16,
) -> (common::live::Server, Vec<std::net::SocketAddr>) {
    let (http, mqtt) = (consecutive_ports(processes), consecutive_ports(processes));
    let lake = dir.join(name);
    let mut c = Command::new(env!("CARGO_BIN_EXE_kaiabc"));
    if processes > 1 {
        c.args(["cluster", "--processes", &processes.to_string(), "--"]);
    }
    c.args(["run", "--workers", "1"])
        .args(["--http", &format!("127.0.0.1:{http}")])
        .args(["--mqtt-listen", &format!("127.0.0.1:{mqtt}")])
        .arg("--lake")
        .arg(&lake)
        .arg("--state-dir")
        .arg(lake.with_extension("state"))
        .args(["--kafka-brokers", brokers, "--kafka-group", name])
        .args(["--kafka-session-timeout-ms", "6000"])
        .args(["--commit-interval-seconds", "1"])
        .env("KAIABC_JWT_SECRET", common::live::SECRET)
        // The readings are dated January 2026, beyond the default horizon before receipt.
        .env("KAIABC_MAX_READING_AGE_HOURS", "87600")
        .envs(common::live::UNLIMITED)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let server = common::live::Server::new(c.spawn().unwrap());
    let addrs: Vec<std::net::SocketAddr> = (0..processes)
        .map(|i| format!("127.0.0.1:{}", http + i).parse().unwrap())
        .collect();
    for a in &addrs {
        common::live::wait_until("every process's health endpoint", || {
            common::live::get(*a, "/v1/health").filter(|(s, _)| *s == 200)
        });
    }
    (server, addrs)
}

/// A node's latest state as a process serves it.
fn state_on(http: std::net::SocketAddr, node: &str) -> Option<serde_json::Value> {
    let (status, body) = common::live::get(http, &format!("/v1/oscillator/state?node_id={node}"))?;
    (status == 200).then_some(body)
}

/// Waits until every process serves every node's reading `k`.
fn wait_for_seq(addrs: &[std::net::SocketAddr], k: i64, limit: Duration) {
    let started = Instant::now();
    for a in addrs {
        for i in 0..LIVE_NODES {
            let node = live_node(i);
            loop {
                let seq = state_on(*a, &node).and_then(|s| s["seq"].as_i64());
                if seq == Some(k) {
                    break;
                }
                assert!(
                    started.elapsed() < limit,
                    "{node} on {a}: seq {seq:?}, waiting for {k}"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

#[test]
fn a_live_cluster_of_three_writes_the_rows_of_one_and_every_process_answers_for_every_node() {
    let dir = tempfile::tempdir().unwrap();
    let (_kafka, brokers) = common::kafka::tansu(dir.path(), "sqlite://tansu.db");
    // One process creates the topics, then reads every reading.
    let (one, one_http) = live(dir.path(), "one", &brokers, 1);
    produce(&brokers, 1..=LIVE_READINGS, Duration::ZERO);
    wait_for_seq(&one_http, LIVE_READINGS, Duration::from_secs(60));
    common::live::stop(one);

    // Three processes, each reading its partitions of the same topic from the start.
    let (three, addrs) = live(dir.path(), "three", &brokers, 3);
    wait_for_seq(&addrs, LIVE_READINGS, Duration::from_secs(90));
    // Each node is owned by one process; every process answers for it with the same state.
    for i in 0..LIVE_NODES {
        let node = live_node(i);
        let states: Vec<serde_json::Value> = addrs
            .iter()
            .map(|a| state_on(*a, &node).expect("a state"))
            .collect();
        for (p, s) in states.iter().enumerate().skip(1) {
            assert_eq!(s, &states[0], "{node}: process {p} against process 0");
        }
    }
    // A node registered through process 0 sends a reading to each process: each knows its
    // key, and answers 200 with the filtered value once the node's owner has applied it.
    let admin = common::live::token("admin");
    let (status, body) = common::live::request(
        addrs[0],
        "POST",
        "/v1/sensors/nodes",
        &[("Authorization", &format!("Bearer {admin}"))],
        r#"{"node_id":"h1"}"#,
    );
    assert_eq!(status, 201, "{body}");
    let key = body["api_key"].as_str().unwrap().to_string();
    for (i, a) in addrs.iter().enumerate() {
        let (status, body) = common::live::request(
            *a,
            "POST",
            "/v1/sensors/temperature",
            &[("X-API-Key", &key)],
            &common::live::reading("h1", i as i64 + 1, i as u32 + 1, 300.0),
        );
        assert_eq!(status, 200, "process {i}: {body}");
        assert!(
            body["filtered_value"].as_f64().is_some(),
            "process {i}: {body}"
        );
    }
    let stderr = common::live::stop(three);
    let three = dir.path().join("three");
    let all = LIVE_NODES as i64 * LIVE_READINGS;
    assert_eq!(
        common::live::csv(
            &three,
            "SELECT count(*) AS n FROM readings WHERE node_id LIKE 'c%'"
        ),
        format!("n\n{all}\n")
    );
    assert_eq!(
        common::live::csv(
            &three,
            "SELECT count(*) AS n FROM readings WHERE node_id = 'h1'"
        ),
        "n\n3\n"
    );
    assert_eq!(
        node_rows(&dir.path().join("one")),
        node_rows(&three),
        "1 process vs 3: {stderr}"
    );
}

#[test]
fn a_live_cluster_with_a_process_killed_mid_stream_restarts_with_every_reading_once_then_two_take_over(
) {
    let dir = tempfile::tempdir().unwrap();
    let (_kafka, brokers) = common::kafka::tansu(dir.path(), "sqlite://tansu.db");
    let (cluster, addrs) = live(dir.path(), "cluster", &brokers, 3);
    let producer = {
        let brokers = brokers.clone();
        std::thread::spawn(move || produce(&brokers, 1..=LIVE_READINGS, Duration::from_millis(150)))
    };
    wait_for_seq_at_least(&addrs[..1], LIVE_READINGS / 3);
    // Let an aligned checkpoint or two pass, then kill one process without warning.
    std::thread::sleep(Duration::from_millis(1500));
    let children = children_of(cluster.0.id());
    assert_eq!(children.len(), 3, "{children:?}");
    let status = Command::new("kill")
        .args(["-KILL", &children[1].to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    producer.join().unwrap();
    // The supervisor starts the cluster again; it resumes from its last checkpoint.
    wait_for_seq(&addrs, LIVE_READINGS, Duration::from_secs(120));
    let stderr = common::live::stop(cluster);
    assert!(stderr.contains("starting the cluster again"), "{stderr}");
    let lake = dir.path().join("cluster");
    let all = LIVE_NODES as i64 * LIVE_READINGS;
    assert_eq!(exactly_once(&lake), (all, all), "{stderr}");

    // The next run may have another number of processes: two take over the lake, the
    // group's offsets and the checkpoints of three.
    let more = LIVE_READINGS + 10;
    produce(&brokers, LIVE_READINGS + 1..=more, Duration::ZERO);
    let (two, addrs) = live(dir.path(), "cluster", &brokers, 2);
    wait_for_seq(&addrs, more, Duration::from_secs(60));
    let stderr = common::live::stop(two);
    let all = LIVE_NODES as i64 * more;
    assert_eq!(exactly_once(&lake), (all, all), "{stderr}");

    // The states are those of one uninterrupted process over the same readings: none lost,
    // none applied twice, no clock restarted from its initial condition.
    let (one, one_http) = live(dir.path(), "one", &brokers, 1);
    wait_for_seq(&one_http, more, Duration::from_secs(60));
    common::live::stop(one);
    assert_eq!(node_rows(&dir.path().join("one")), node_rows(&lake));
}

/// The readings in a lake, and how many of them are distinct (node, seq).
fn exactly_once(lake: &Path) -> (i64, i64) {
    let counts = common::live::csv(
        lake,
        "SELECT count(*) AS n, count(DISTINCT node_id || ':' || CAST(seq AS VARCHAR)) AS d \
         FROM readings",
    );
    let row = counts.lines().nth(1).expect("a row");
    let (n, d) = row.split_once(',').expect("two columns");
    (n.parse().unwrap(), d.parse().unwrap())
}

/// Waits until process 0 serves a state of seq `k` or later for the first node.
fn wait_for_seq_at_least(addrs: &[std::net::SocketAddr], k: i64) {
    common::live::wait_until("a third of the stream", || {
        state_on(addrs[0], &live_node(0))
            .and_then(|s| s["seq"].as_i64())
            .filter(|s| *s >= k)
    });
}
