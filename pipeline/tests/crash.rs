//! `kill -9` crash tests: simulated nodes send readings over HTTP and MQTT QoS 1, each retrying
//! a request until it is acknowledged, while the processes that acknowledged them are killed
//! with SIGKILL and restarted on the same lake, state dir, ports (and Kafka); every acknowledged
//! reading must then be in the lake exactly once, and the states must equal those of one
//! uninterrupted replay. The harness is `common::crash`; this file says what runs and what is
//! killed:
//!
//! - the embedded path: `kaiabc run` alone (its MQTT broker, its write-ahead log);
//! - the Kafka path: Mosquitto for the nodes and tansu for Kafka stay up, while `kaiabc bridge`
//!   (Mosquitto → `kaiabc.readings`) and `kaiabc run` consuming Kafka (its HTTP API producing to
//!   Kafka) are killed in turn.
//!
//! `KAIABC_CRASH_KILLS` sets the number of kills (default 12 on the embedded path, 10 on the
//! Kafka path; 0 checks the harness itself), `KAIABC_CRASH_SEED` the seed of the kill schedule,
//! `KAIABC_CRASH_TARGET` what the Kafka path's kills hit (`pipeline`, `bridge`, or `both`, the
//! default: as many of each, in a seeded order); `KAIABC_CRASH_KEEP=1` keeps a failed run's
//! files (`always`: any run's).

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::crash::{
    delays, env_or, healthy, log_says, ports, run, Finish, KeepOnFailure, Kill, Restartable, Rng,
    System,
};
use common::kafka::{mosquitto, tansu};
use common::live::SECRET;

/// Kills by default (`KAIABC_CRASH_KILLS` overrides).
const KILLS: usize = 12;
const KAFKA_KILLS: usize = 10;
/// The default seed (`KAIABC_CRASH_SEED` overrides).
const SEED: u64 = 0x6b61_6961_6263;

/// Lake commits (and with them, checkpoints and source commits) every 2 s.
const COMMIT_SECONDS: &str = "2";

/// `kaiabc run` as `common::live::launch` starts it, on fixed ports, with `extra` flags.
fn kaiabc_run(lake: &Path, http: u16, mqtt: u16, extra: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kaiabc"));
    c.args([
        "run",
        "--http",
        &format!("127.0.0.1:{http}"),
        "--mqtt-listen",
        &format!("127.0.0.1:{mqtt}"),
        "--lake",
        lake.to_str().unwrap(),
        "--state-dir",
        // As `common::live::launch` names it.
        lake.with_extension("state").to_str().unwrap(),
        "--commit-interval-seconds",
        COMMIT_SECONDS,
    ])
    .args(extra)
    .envs(crate::common::live::UNLIMITED)
    .env("KAIABC_JWT_SECRET", SECRET);
    c
}

#[test]
fn acknowledged_readings_survive_repeated_kill_9() {
    let kills: usize = env_or("KAIABC_CRASH_KILLS", KILLS);
    let seed: u64 = env_or("KAIABC_CRASH_SEED", SEED);
    let dir = tempfile::tempdir().unwrap();
    let _keep = KeepOnFailure(dir.path().to_path_buf());
    let lake = dir.path().join("lake");
    let [http, mqtt] = ports::<2>();
    let server = {
        let lake = lake.clone();
        Restartable::new(
            "server",
            dir.path(),
            move || kaiabc_run(&lake, http, mqtt, &[]),
            move |_| healthy(([127, 0, 0, 1], http).into()),
        )
    };
    let system = System::new(
        &lake,
        ([127, 0, 0, 1], http).into(),
        ([127, 0, 0, 1], mqtt).into(),
        vec![server],
    );
    let plan: Vec<Kill> = delays(kills, seed)
        .into_iter()
        .map(|delay| Kill { target: 0, delay })
        .collect();
    run(dir.path(), system, &plan, seed);
}

/// Mosquitto as the nodes' broker here: anyone may publish (as in `tests/kafka.rs`).
const ANONYMOUS: &str = "allow_anonymous true\npersistence false\n";
/// The consumer group's session timeout: a restarted pipeline gets its partitions once the
/// killed one's session has timed out.
const SESSION_TIMEOUT_MS: u64 = 6000;
/// What the processes of the Kafka path log (and the harness waits for).
const LOG: &str = "warn,kaiabc=info,kaiabc_connectors=info";

#[test]
fn acknowledged_readings_survive_repeated_kill_9_on_the_kafka_path() {
    let kills: usize = env_or("KAIABC_CRASH_KILLS", KAFKA_KILLS);
    let seed: u64 = env_or("KAIABC_CRASH_SEED", SEED);
    let target: String = env_or("KAIABC_CRASH_TARGET", "both".to_string());
    let dir = tempfile::tempdir().unwrap();
    let _keep = KeepOnFailure(dir.path().to_path_buf());
    // Up the whole test (and dropped after the guard of `run` has killed the rest).
    let (_tansu, kafka) = tansu(dir.path(), "sqlite://tansu.db");
    let (_mosquitto, mqtt) = mosquitto(dir.path(), ANONYMOUS);
    let mqtt_url = format!("mqtt://127.0.0.1:{mqtt}");
    let session = SESSION_TIMEOUT_MS.to_string();
    let lake = dir.path().join("lake");
    // The pipeline's --mqtt-listen is not used with --mqtt-url; a port of its own all the same.
    let [http, unused] = ports::<2>();

    // Kafka acknowledges, then the bridge acknowledges to Mosquitto (persistent session: what
    // arrives while it is down waits in Mosquitto). Ready once connected to Mosquitto.
    let bridge = {
        let (kafka, mqtt_url, session) = (kafka.clone(), mqtt_url.clone(), session.clone());
        Restartable::new(
            "bridge",
            dir.path(),
            move || {
                let mut c = Command::new(env!("CARGO_BIN_EXE_kaiabc"));
                c.args([
                    "bridge",
                    "--mqtt-url",
                    &mqtt_url,
                    "--kafka-brokers",
                    &kafka,
                    "--kafka-session-timeout-ms",
                    &session,
                ])
                .env("KAIABC_LOG", LOG)
                .env("NO_COLOR", "1");
                c
            },
            |log| log_says(log, "connected to the MQTT broker"),
        )
    };
    // The pipeline as `pipeline()` of `tests/kafka.rs` starts it, on fixed ports. Ready once it
    // answers HTTP (which produces to Kafka) and consumes (its partitions assigned: after a
    // kill, once the killed consumer's session has timed out).
    let pipeline = {
        let lake = lake.clone();
        Restartable::new(
            "pipeline",
            dir.path(),
            move || {
                let mut c = kaiabc_run(
                    &lake,
                    http,
                    unused,
                    &[
                        "--kafka-brokers",
                        &kafka,
                        "--mqtt-url",
                        &mqtt_url,
                        "--no-bridge",
                        "--kafka-session-timeout-ms",
                        &session,
                    ],
                );
                c.env("KAIABC_LOG", LOG).env("NO_COLOR", "1");
                c
            },
            move |log| {
                healthy(([127, 0, 0, 1], http).into()) && log_says(log, "Kafka partitions assigned")
            },
        )
        .restart_wait(Duration::from_millis(SESSION_TIMEOUT_MS))
    };
    let mut system = System::new(
        &lake,
        ([127, 0, 0, 1], http).into(),
        ([127, 0, 0, 1], mqtt).into(),
        // The bridge first: Mosquitto keeps messages only for a session that has subscribed.
        vec![bridge, pipeline],
    );
    system.mqtt_login = false;
    // Under this test's load a request takes about 40 ms (a few on an idle machine): with
    // batches of 20 readings, some 20 requests a second in all, one is often in flight when
    // the pipeline is killed.
    system.http_batch = 20;
    system.finish = Finish::Settle;
    system.other_logs = vec![
        dir.path().join("mosquitto.log"),
        dir.path().join("tansu.log"),
    ];

    // As many kills of each, in a seeded order (or all of one).
    let (bridge, pipeline) = (0, 1);
    let mut targets: Vec<usize> = match target.as_str() {
        "both" => (0..kills)
            .map(|k| if k % 2 == 0 { pipeline } else { bridge })
            .collect(),
        "pipeline" => vec![pipeline; kills],
        "bridge" => vec![bridge; kills],
        other => panic!("KAIABC_CRASH_TARGET={other:?}: pipeline, bridge or both"),
    };
    let mut rng = Rng(seed ^ 0x7461_7267_6574);
    for i in (1..targets.len()).rev() {
        targets.swap(i, (rng.next() % (i as u64 + 1)) as usize);
    }
    let plan: Vec<Kill> = targets
        .into_iter()
        .zip(delays(kills, seed))
        .map(|(target, delay)| Kill { target, delay })
        .collect();
    eprintln!(
        "crash: kills of the {}",
        plan.iter()
            .map(|k| format!(
                "{} after {:.1} s",
                ["bridge", "pipeline"][k.target],
                k.delay.as_secs_f64()
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );
    run(dir.path(), system, &plan, seed);
}
