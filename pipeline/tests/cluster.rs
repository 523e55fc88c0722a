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
    ok(&args);
    assert_eq!(all_rows(&one), all_rows(&three), "1 process vs 3");

    let out = common::kaiabc(&["cluster", "--", "run"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not built yet"),
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
