//! The `kill -9` harness of `tests/crash.rs`: simulated nodes that send readings over HTTP and
//! MQTT QoS 1 and retry each request until it is acknowledged, a killer that SIGKILLs the
//! processes of a system under test at planned moments and restarts them on the same files and
//! ports, and the checks afterwards: every acknowledged reading is in the lake exactly once, and
//! the states equal those of one uninterrupted replay.
//!
//! A test describes its system (which processes, how each is launched, when each is ready, see
//! [`System`] and [`Restartable`]) and its kill plan ([`Kill`]); [`run`] does the rest.
#![allow(dead_code)] // each test crate uses its own subset

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use chrono::{DateTime, Utc};
use rumqttc::mqttbytes::v4::{ConnectReturnCode, Disconnect, Packet, Publish};
use rumqttc::mqttbytes::{Error as FrameError, QoS};

use super::live::{csv, get, request, stop, token, Server};

/// Nodes posting batches over HTTP, and their readings each, in batches of [`BATCH`] by
/// default (see [`System::http_batch`]).
pub const HTTP_NODES: usize = 4;
pub const HTTP_READINGS: usize = 6_000;
pub const BATCH: usize = 100;
/// Nodes publishing one reading per MQTT QoS 1 PUBLISH, and their readings each.
pub const MQTT_NODES: usize = 2;
pub const MQTT_READINGS: usize = 2_500;
/// The whole run (start, sending, kills, graceful stop) must end within this.
pub const RUN_LIMIT: Duration = Duration::from_secs(180);
/// How long one request or one wait for an acknowledgement may take before it is retried.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a (re)started process may take to be ready.
const BOOT_LIMIT: Duration = Duration::from_secs(40);
/// How long the system may take, once every reading is acknowledged, to have applied each
/// node's last one (see [`Finish::Settle`]).
const SETTLE_LIMIT: Duration = Duration::from_secs(60);
const MAX_PACKET: usize = 1024 * 1024;

/// Exact comparison of the states, or a relative tolerance (see the report when it matters).
const STATE_TOLERANCE: f64 = 0.0;

pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not valid")),
        Err(_) => default,
    }
}

/// splitmix64: a small seeded generator for the kill schedule and the retry pauses.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// The pause before a retry: 100–200 ms.
    fn pause(&mut self) -> Duration {
        Duration::from_millis(100 + self.next() % 101)
    }
}

// ---------------------------------------------------------------------------------------------
// The system under test: processes started, killed and restarted on the same files and ports.

/// One process of the system under test, one run at a time; each run's stderr goes to its own
/// log file, `{name}-{run}.log`.
pub struct Restartable {
    /// For messages and log names: `server`, `pipeline`, `bridge`.
    pub name: &'static str,
    logs: PathBuf,
    /// The command of a run (the same every time: same files, same ports).
    command: Box<dyn Fn() -> Command + Send + Sync>,
    /// Whether a run is ready (serving, connected…), given its log file.
    ready: Box<dyn Fn(&Path) -> bool + Send + Sync>,
    /// How much longer a restart takes to be ready than the first start (a consumer group
    /// waiting for the killed member's session to time out), for the nodes' pacing.
    pub restart_wait: Duration,
    child: Mutex<Option<Server>>,
    runs: AtomicUsize,
}

impl Restartable {
    /// A process run by `command`, ready when `ready` says so; logs go into `logs`.
    pub fn new(
        name: &'static str,
        logs: &Path,
        command: impl Fn() -> Command + Send + Sync + 'static,
        ready: impl Fn(&Path) -> bool + Send + Sync + 'static,
    ) -> Self {
        Self {
            name,
            logs: logs.to_path_buf(),
            command: Box::new(command),
            ready: Box::new(ready),
            restart_wait: Duration::ZERO,
            child: Mutex::new(None),
            runs: AtomicUsize::new(0),
        }
    }

    /// See [`Restartable::restart_wait`].
    pub fn restart_wait(mut self, wait: Duration) -> Self {
        self.restart_wait = wait;
        self
    }

    pub fn log(&self, run: usize) -> PathBuf {
        self.logs.join(format!("{}-{run}.log", self.name))
    }

    pub fn runs(&self) -> usize {
        self.runs.load(Ordering::SeqCst)
    }

    fn spawn(&self, abort: &AtomicBool) -> Result<usize, String> {
        let mut slot = self.child.lock().unwrap();
        if abort.load(Ordering::SeqCst) {
            return Err("aborted".into());
        }
        assert!(slot.is_none(), "a {} is already running", self.name);
        let run = self.runs.fetch_add(1, Ordering::SeqCst) + 1;
        let log = std::fs::File::create(self.log(run)).map_err(|e| e.to_string())?;
        let child = (self.command)()
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("spawning the {}: {e}", self.name))?;
        *slot = Some(Server::new(child));
        Ok(run)
    }

    /// Starts a run and waits until it is ready; a run that exits first (a port not free yet,
    /// say) is started again, up to five times. Returns the boot time.
    fn start(&self, abort: &AtomicBool, deadline: Instant) -> Result<Duration, String> {
        let mut last = String::new();
        for _ in 0..5 {
            let began = Instant::now();
            let run = self.spawn(abort)?;
            let limit = (began + BOOT_LIMIT).min(deadline);
            loop {
                if abort.load(Ordering::SeqCst) {
                    return Err("aborted".into());
                }
                let exited = match self.child.lock().unwrap().as_mut() {
                    Some(s) => s.0.try_wait().map_err(|e| e.to_string())?,
                    None => return Err(format!("the {} was taken away", self.name)),
                };
                if let Some(status) = exited {
                    self.child.lock().unwrap().take();
                    last = format!(
                        "{} run {run} exited with {status} before it was ready:\n{}",
                        self.name,
                        tail(&self.log(run))
                    );
                    break;
                }
                if (self.ready)(&self.log(run)) {
                    return Ok(began.elapsed());
                }
                if Instant::now() > limit {
                    return Err(format!(
                        "{} run {run} was not ready within {:?}:\n{}",
                        self.name,
                        limit - began,
                        tail(&self.log(run))
                    ));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        Err(last)
    }

    /// SIGKILL and reap the running process.
    fn kill(&self) -> bool {
        match self.child.lock().unwrap().take() {
            Some(mut s) => {
                let _ = s.0.kill();
                let _ = s.0.wait();
                true
            }
            None => false,
        }
    }

    /// The running process, for a graceful stop.
    fn take(&self) -> Option<Server> {
        self.child.lock().unwrap().take()
    }

    fn log_tail(&self) -> String {
        tail(&self.log(self.runs()))
    }
}

/// Whether a log file holds `text` (a readiness check on what a process says).
pub fn log_says(log: &Path, text: &str) -> bool {
    std::fs::read_to_string(log).is_ok_and(|t| t.contains(text))
}

/// Whether the HTTP API at `http` answers its health endpoint.
pub fn healthy(http: SocketAddr) -> bool {
    get(http, "/v1/health").is_some_and(|(s, _)| s == 200)
}

/// What the nodes talk to and what the killer kills.
pub struct System {
    /// The lake the pipeline writes.
    pub lake: PathBuf,
    /// The pipeline's HTTP API (HTTP nodes post there; the admin registers the nodes there).
    pub http: SocketAddr,
    /// The MQTT broker the MQTT nodes publish to.
    pub mqtt: SocketAddr,
    /// Whether MQTT nodes log in (node id and API key), or publish anonymously.
    pub mqtt_login: bool,
    /// Readings per HTTP request: smaller batches, more requests, more of them in flight when
    /// a kill comes.
    pub http_batch: usize,
    /// Started in this order, stopped gracefully in the reverse order.
    pub procs: Vec<Restartable>,
    /// More logs worth a look when the test fails (the brokers').
    pub other_logs: Vec<PathBuf>,
    /// How the run ends once every reading is acknowledged.
    pub finish: Finish,
    /// Set when the test ends: nothing is started any more, every thread gives up.
    abort: Arc<AtomicBool>,
}

/// How the run ends once every reading is acknowledged and the killer is done.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finish {
    /// Stop gracefully at once: an acknowledged reading is in the write-ahead log, which the
    /// graceful stop drains into the lake.
    Stop,
    /// Wait until every node's last reading is applied (its latest state has its last seq),
    /// then stop gracefully: an acknowledged reading is in Kafka (or still in the nodes'
    /// broker, on its way through the bridge), which the stop does not wait for.
    Settle,
}

impl System {
    pub fn new(lake: &Path, http: SocketAddr, mqtt: SocketAddr, procs: Vec<Restartable>) -> Self {
        Self {
            lake: lake.to_path_buf(),
            http,
            mqtt,
            mqtt_login: true,
            http_batch: BATCH,
            procs,
            other_logs: Vec::new(),
            finish: Finish::Stop,
            abort: Arc::new(AtomicBool::new(false)),
        }
    }

    fn start(&self, target: usize, deadline: Instant) -> Result<Duration, String> {
        self.procs[target].start(&self.abort, deadline)
    }

    fn kill(&self, target: usize) -> bool {
        self.procs[target].kill()
    }

    fn runs(&self) -> String {
        self.procs
            .iter()
            .map(|p| format!("{} {}", p.runs(), p.name))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Kills whatever the test started when it ends, also when an assertion fails (and then prints
/// the logs of the last runs).
struct Guard(Arc<System>);

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.abort.store(true, Ordering::SeqCst);
        for p in &self.0.procs {
            p.kill();
        }
        if std::thread::panicking() {
            for p in &self.0.procs {
                eprintln!(
                    "{} log (run {}, the last):\n{}",
                    p.name,
                    p.runs(),
                    p.log_tail()
                );
            }
            for l in &self.0.other_logs {
                let text = std::fs::read_to_string(l).unwrap_or_default();
                let dropped: Vec<&str> = text
                    .lines()
                    .filter(|l| l.to_ascii_lowercase().contains("dropp"))
                    .take(10)
                    .collect();
                eprintln!(
                    "{} (lines about dropped messages: {}):\n{}",
                    l.display(),
                    dropped.len(),
                    if dropped.is_empty() {
                        tail(l)
                    } else {
                        dropped.join("\n")
                    }
                );
            }
        }
    }
}

/// With `KAIABC_CRASH_KEEP=1`, a failed run's directory (lake, replayed lake, logs) is copied
/// next to the temporary one for a look, and its path printed; with `KAIABC_CRASH_KEEP=always`,
/// a passing run's too.
pub struct KeepOnFailure(pub PathBuf);

impl Drop for KeepOnFailure {
    fn drop(&mut self) {
        let keep = std::env::var("KAIABC_CRASH_KEEP").ok();
        if keep.as_deref() == Some("always") || (std::thread::panicking() && keep.is_some()) {
            let to = self.0.with_extension("kept");
            let copied = Command::new("cp").arg("-a").arg(&self.0).arg(&to).status();
            eprintln!("crash: the run's files: {} ({copied:?})", to.display());
        }
    }
}

/// The last lines of a log file.
pub fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// `N` distinct free ports ([`super::live::free_port`]: below the kernel's ephemeral range when
/// there is room, so no client socket can be given one of them while the process listening
/// there is down; a connection to oneself on loopback would hold the port, and the restart
/// could not bind it).
pub fn ports<const N: usize>() -> [u16; N] {
    let mut out = [0u16; N];
    for i in 0..N {
        out[i] = loop {
            let p = super::live::free_port();
            if !out[..i].contains(&p) {
                break p;
            }
        };
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The kill plan and the killer.

/// One kill: `delay` after the previous (re)start was ready, SIGKILL `target` (an index into
/// [`System::procs`]) and start it again.
#[derive(Clone, Copy, Debug)]
pub struct Kill {
    pub target: usize,
    pub delay: Duration,
}

/// The delays of `kills` kills: 1.5–5 s after the last (re)start was ready, every third one
/// 0.3 s after (on the embedded path, before the first commit of that run, which is 2 s in; on
/// the Kafka path, a pipeline is ready once it has its partitions, and is then killed while it
/// catches up with what came in as it waited for them).
pub fn delays(kills: usize, seed: u64) -> Vec<Duration> {
    let mut rng = Rng(seed);
    (0..kills)
        .map(|k| {
            if k % 3 == 1 {
                Duration::from_millis(300)
            } else {
                Duration::from_secs_f64(1.5 + 3.5 * rng.unit())
            }
        })
        .collect()
}

struct Killed {
    kills: Vec<usize>,
    restarts: usize,
}

/// Carries out the plan: kills each target after its delay (counted from when the last
/// restart was ready), restarts it on the same files and ports, and leaves the last runs
/// going.
fn killer(ctx: &Ctx, system: &System, plan: &[Kill]) -> Killed {
    let mut done = Killed {
        kills: vec![0; system.procs.len()],
        restarts: 0,
    };
    for k in plan {
        if !ctx.sleep(k.delay) {
            return done;
        }
        if system.kill(k.target) {
            done.kills[k.target] += 1;
        }
        match system.start(k.target, ctx.deadline) {
            Ok(_) => done.restarts += 1,
            Err(e) => {
                ctx.fail(format!("restart {} failed: {e}", done.restarts + 1));
                return done;
            }
        }
    }
    done
}

// ---------------------------------------------------------------------------------------------
// The test.

/// Runs a crash test in `dir` (which holds the lake and the logs): starts `system`, registers
/// the nodes, lets them send while the killer carries out `plan`, ends as the system's
/// [`Finish`] says, and checks the lake and the states. Panics with what went wrong.
pub fn run(dir: &Path, system: System, plan: &[Kill], seed: u64) {
    let began = Instant::now();
    let deadline = began + RUN_LIMIT;
    let system = Arc::new(system);
    let _guard = Guard(Arc::clone(&system));
    let mut boots = Vec::new();
    for (i, p) in system.procs.iter().enumerate() {
        let boot = system
            .start(i, deadline)
            .unwrap_or_else(|e| panic!("the {} did not start: {e}", p.name));
        boots.push(boot);
    }

    // The nodes, registered by an admin; each keeps its API key. Their readings begin at
    // midnight UTC five days ago: the newest (100 h later) is some hours old when sent, the
    // oldest less than the 168 h before its receipt beyond which a live pipeline refuses a
    // reading (`STALE_TIMESTAMP`).
    let day0 = Utc::now()
        .date_naive()
        .and_time(chrono::NaiveTime::MIN)
        .and_utc()
        - chrono::Duration::days(5);
    let admin = format!("Bearer {}", token("admin"));
    let mut specs = Vec::new();
    for k in 0..HTTP_NODES + MQTT_NODES {
        let (id, via, count) = if k < HTTP_NODES {
            (format!("crash-h{}", k + 1), Via::Http, HTTP_READINGS)
        } else {
            (
                format!("crash-m{}", k - HTTP_NODES + 1),
                Via::Mqtt,
                MQTT_READINGS,
            )
        };
        let (status, body) = request(
            system.http,
            "POST",
            "/v1/sensors/nodes",
            &[("Authorization", &admin)],
            &format!(r#"{{"node_id":"{id}"}}"#),
        );
        assert_eq!(status, 201, "registering {id}: {body}");
        let key = body["api_key"].as_str().unwrap().to_string();
        let readings = readings_for(day0, &id, k, count);
        specs.push(Arc::new(NodeSpec {
            id,
            key,
            via,
            readings,
        }));
    }

    // The nodes spread their readings over about the time the kills take, so that every kill
    // lands while they send; they catch up as fast as they can after each outage.
    let window = plan
        .iter()
        .map(|k| {
            k.delay
                + boots[k.target]
                + system.procs[k.target].restart_wait
                + Duration::from_millis(300)
        })
        .sum::<Duration>()
        .max(Duration::from_secs(10));

    let ctx = Arc::new(Ctx {
        http: system.http,
        mqtt: system.mqtt,
        mqtt_login: system.mqtt_login,
        http_batch: system.http_batch,
        abort: Arc::clone(&system.abort),
        start: Instant::now(),
        window,
        deadline,
        fatal: Mutex::new(None),
    });
    let nodes: Vec<_> = specs
        .iter()
        .enumerate()
        .map(|(k, spec)| {
            let (ctx, spec) = (Arc::clone(&ctx), Arc::clone(spec));
            let progress = Arc::new(Progress::default());
            let p = Arc::clone(&progress);
            let seed = seed ^ (k as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            let handle = std::thread::spawn(move || match spec.via {
                Via::Http => http_node(&ctx, &spec, &p, seed),
                Via::Mqtt => mqtt_node(&ctx, &spec, &p, seed),
            });
            (progress, handle)
        })
        .collect();
    let killer = {
        let (ctx, system, plan) = (Arc::clone(&ctx), Arc::clone(&system), plan.to_vec());
        std::thread::spawn(move || killer(&ctx, &system, &plan))
    };

    // Wait for the nodes and the killer, or the deadline.
    while !(killer.is_finished() && nodes.iter().all(|(_, h)| h.is_finished())) {
        if Instant::now() > deadline {
            ctx.fail(format!(
                "the run did not end within {RUN_LIMIT:?} (deadline); runs so far: {}; \
                 progress:\n{}",
                system.runs(),
                progress_text(&specs, &nodes)
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let killed = killer.join().expect("the killer thread panicked");
    let reports: Vec<NodeReport> = nodes
        .into_iter()
        .map(|(_, h)| h.join().expect("a node thread panicked"))
        .collect();
    if let Some(e) = ctx.fatal.lock().unwrap().take() {
        // The guard prints the logs.
        panic!("{e}");
    }
    let sending = began.elapsed();
    let mut problems = Vec::new();
    if system.finish == Finish::Settle {
        if let Some(p) = settle(system.http, &specs) {
            problems.push(p);
        }
    }
    let settled = began.elapsed();
    // Everything is acknowledged (and applied): stop gracefully (SIGTERM, exit 0).
    for p in system.procs.iter().rev() {
        let last = p.take().unwrap_or_else(|| panic!("a running {}", p.name));
        stop(last);
    }
    let elapsed = began.elapsed();

    let sent: usize = specs.iter().map(|s| s.readings.len()).sum();
    let acked: usize = reports
        .iter()
        .map(|r| r.acked.iter().filter(|a| **a).count())
        .sum();
    // Per transport: requests, failed ones, those cut off in flight, the mean time to an
    // acknowledgement.
    let traffic = |via: Via| {
        let rs: Vec<&NodeReport> = specs
            .iter()
            .zip(&reports)
            .filter(|(s, _)| s.via == via)
            .map(|(_, r)| r)
            .collect();
        let attempts: usize = rs.iter().map(|r| r.attempts).sum();
        let failed: usize = rs.iter().map(|r| r.failures).sum();
        let cut: usize = rs.iter().map(|r| r.cut).sum();
        let waited: Duration = rs.iter().map(|r| r.waited).sum();
        format!(
            "{attempts} requests ({failed} failed and retried, {cut} of them cut off in flight; \
             {:.1} ms to an acknowledgement on average)",
            waited.as_secs_f64() * 1e3 / (attempts - failed).max(1) as f64
        )
    };
    let per_target = system
        .procs
        .iter()
        .zip(&killed.kills)
        .map(|(p, n)| format!("{n} of the {}", p.name))
        .collect::<Vec<_>>()
        .join(", ");
    let total_kills: usize = killed.kills.iter().sum();
    eprintln!(
        "crash: {sent} readings sent, {acked} acknowledged; HTTP {}; MQTT {}; {total_kills} kills \
         ({per_target}), {} restarts, {:.1} s (sending and kills {:.1} s, settling {:.1} s; seed \
         {seed:#x}, readings from {day0}, send window {:.1} s, boots {})",
        traffic(Via::Http),
        traffic(Via::Mqtt),
        killed.restarts,
        elapsed.as_secs_f64(),
        sending.as_secs_f64(),
        (settled - sending).as_secs_f64(),
        window.as_secs_f64(),
        system
            .procs
            .iter()
            .zip(&boots)
            .map(|(p, b)| format!("{} {:.2} s", p.name, b.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    // Every node sent its readings in order, one request at a time, and had each acknowledged.
    for (spec, r) in specs.iter().zip(&reports) {
        let expected: Vec<i64> = spec.readings.iter().map(|x| x.seq).collect();
        assert_eq!(
            r.order, expected,
            "{}: readings were not acknowledged once each, in order",
            spec.id
        );
    }
    assert_eq!(acked, sent, "not every reading was acknowledged");
    assert_eq!(total_kills, plan.len(), "kills");

    if let Some(p) = check_lake(&system.lake, &specs, &reports) {
        problems.push(p);
    }
    if let Some(p) = check_states(dir, &system.lake, &specs, &reports) {
        problems.push(p);
    }
    assert!(
        problems.is_empty(),
        "after {total_kills} kills ({per_target}; {:.1} s):\n{}",
        elapsed.as_secs_f64(),
        problems.join("\n")
    );
}

/// Waits until every node's latest state is that of its last reading; `None` once it is, else
/// (after [`SETTLE_LIMIT`]) where each node is.
fn settle(http: SocketAddr, specs: &[Arc<NodeSpec>]) -> Option<String> {
    let until = Instant::now() + SETTLE_LIMIT;
    let seq_of = |node: &str| {
        get(http, &format!("/v1/oscillator/state?node_id={node}"))
            .filter(|(s, _)| *s == 200)
            .and_then(|(_, b)| b["seq"].as_i64())
    };
    loop {
        let behind: Vec<String> = specs
            .iter()
            .filter_map(|s| {
                let last = s.readings.last().map_or(0, |r| r.seq);
                let at = seq_of(&s.id);
                (at != Some(last)).then(|| format!("{} at seq {at:?} of {last}", s.id))
            })
            .collect();
        if behind.is_empty() {
            return None;
        }
        if Instant::now() > until {
            return Some(format!(
                "not every node's last reading was applied within {SETTLE_LIMIT:?} of the last \
                 acknowledgement: {}",
                behind.join(", ")
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

// ---------------------------------------------------------------------------------------------
// The nodes.

#[derive(Clone, Copy, PartialEq, Eq)]
enum Via {
    Http,
    Mqtt,
}

struct Reading {
    seq: i64,
    at: DateTime<Utc>,
    json: String,
}

struct NodeSpec {
    id: String,
    key: String,
    via: Via,
    readings: Vec<Reading>,
}

/// A node's readings: one a minute from midnight `day0` plus 7 s per node, seq from 1,
/// temperature on a smooth daily cycle, 298 K ± 3 K.
fn readings_for(day0: DateTime<Utc>, node: &str, index: usize, count: usize) -> Vec<Reading> {
    let first = day0 + chrono::Duration::seconds(7 * index as i64);
    (0..count)
        .map(|i| {
            let at = first + chrono::Duration::minutes(i as i64);
            let hours = (at - day0).num_seconds() as f64 / 3600.0;
            let kelvin = 298.0 + 3.0 * (std::f64::consts::TAU * hours / 24.0).sin();
            let seq = i as i64 + 1;
            let json = serde_json::json!({
                "node_id": node,
                "seq": seq,
                "timestamp": at.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
                "temperature_kelvin": kelvin,
                "humidity_percent": 40.0,
                "pressure_pa": 101000.0,
                "sensor_type": "BME280",
            })
            .to_string();
            Reading { seq, at, json }
        })
        .collect()
}

/// What the nodes share.
struct Ctx {
    http: SocketAddr,
    mqtt: SocketAddr,
    mqtt_login: bool,
    http_batch: usize,
    abort: Arc<AtomicBool>,
    start: Instant,
    /// Reading `i` of `n` is not sent before `start + window · i / n`.
    window: Duration,
    deadline: Instant,
    /// A harness error (not a lost reading): the first one ends the run.
    fatal: Mutex<Option<String>>,
}

impl Ctx {
    fn aborted(&self) -> bool {
        self.abort.load(Ordering::SeqCst)
    }

    fn fail(&self, why: String) {
        self.fatal.lock().unwrap().get_or_insert(why);
        self.abort.store(true, Ordering::SeqCst);
    }

    /// Sleeps `d` in small steps; false when the run was aborted meanwhile.
    fn sleep(&self, d: Duration) -> bool {
        let until = Instant::now() + d;
        while Instant::now() < until {
            if self.aborted() {
                return false;
            }
            std::thread::sleep((until - Instant::now()).min(Duration::from_millis(20)));
        }
        !self.aborted()
    }

    /// Waits until item `i` of `n` is due.
    fn pace(&self, i: usize, n: usize) -> bool {
        let due = self.start + self.window.mul_f64(i as f64 / n as f64);
        self.sleep(due.saturating_duration_since(Instant::now()))
    }
}

/// A node's live counters, for the deadline's message.
#[derive(Default)]
struct Progress {
    acked: AtomicUsize,
    last_error: Mutex<String>,
}

/// What a node did: per reading whether it was acknowledged, and the order of the
/// acknowledgements (seqs).
struct NodeReport {
    acked: Vec<bool>,
    order: Vec<i64>,
    attempts: usize,
    failures: usize,
    /// Failed attempts cut off after the request was sent (no answer, or no acknowledgement):
    /// the ones in flight at a kill, which may or may not have been stored.
    cut: usize,
    /// The time from sending to the acknowledgement, summed over the acknowledged attempts.
    waited: Duration,
}

impl NodeReport {
    fn new(n: usize) -> Self {
        Self {
            acked: vec![false; n],
            order: Vec::new(),
            attempts: 0,
            failures: 0,
            cut: 0,
            waited: Duration::ZERO,
        }
    }

    fn ack(&mut self, spec: &NodeSpec, range: std::ops::Range<usize>, progress: &Progress) {
        for i in range {
            self.acked[i] = true;
            self.order.push(spec.readings[i].seq);
        }
        progress.acked.store(self.order.len(), Ordering::SeqCst);
    }
}

fn progress_text(
    specs: &[Arc<NodeSpec>],
    nodes: &[(Arc<Progress>, std::thread::JoinHandle<NodeReport>)],
) -> String {
    specs
        .iter()
        .zip(nodes)
        .map(|(s, (p, _))| {
            format!(
                "  {}: {}/{} acknowledged; last error: {}",
                s.id,
                p.acked.load(Ordering::SeqCst),
                s.readings.len(),
                p.last_error.lock().unwrap()
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// What one attempt at a request came to.
enum Outcome {
    Acked,
    /// Not acknowledged: send the very same request again after a pause.
    Retry(String),
    /// An answer no retry can change (a harness error).
    Fatal(String),
}

/// An HTTP node: batches of [`System::http_batch`] readings to `POST /v1/sensors/batch`, one
/// request at a time, each repeated until a 2xx answer.
fn http_node(ctx: &Ctx, spec: &NodeSpec, progress: &Progress, seed: u64) -> NodeReport {
    let mut rng = Rng(seed);
    let mut report = NodeReport::new(spec.readings.len());
    let size = ctx.http_batch;
    let batches = spec.readings.len().div_ceil(size);
    for b in 0..batches {
        if !ctx.pace(b, batches) {
            return report;
        }
        let range = b * size..((b + 1) * size).min(spec.readings.len());
        let body = format!(
            "[{}]",
            spec.readings[range.clone()]
                .iter()
                .map(|r| r.json.as_str())
                .collect::<Vec<_>>()
                .join(",")
        );
        loop {
            if ctx.aborted() {
                return report;
            }
            report.attempts += 1;
            let sending = Instant::now();
            match post_batch(ctx.http, &spec.key, &body, range.len()) {
                Outcome::Acked => {
                    report.waited += sending.elapsed();
                    report.ack(spec, range, progress);
                    break;
                }
                Outcome::Retry(e) => {
                    report.failures += 1;
                    if e.starts_with("read:") || e.starts_with("no status line") {
                        report.cut += 1;
                    }
                    *progress.last_error.lock().unwrap() = e;
                    ctx.sleep(rng.pause());
                }
                Outcome::Fatal(e) => {
                    ctx.fail(format!("{}: batch {b}: {e}", spec.id));
                    return report;
                }
            }
        }
    }
    report
}

/// A TCP connection to `addr`, never one to itself (see [`ports`]).
fn connect(addr: SocketAddr) -> Result<TcpStream, String> {
    let s =
        TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT).map_err(|e| format!("connect: {e}"))?;
    if s.local_addr().ok() == Some(addr) {
        return Err("connected to itself".into());
    }
    s.set_read_timeout(Some(REQUEST_TIMEOUT))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(REQUEST_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let _ = s.set_nodelay(true);
    Ok(s)
}

/// One `POST /v1/sensors/batch` of `n` readings.
fn post_batch(addr: SocketAddr, key: &str, body: &str, n: usize) -> Outcome {
    let mut s = match connect(addr) {
        Ok(s) => s,
        Err(e) => return Outcome::Retry(e),
    };
    let head = format!(
        "POST /v1/sensors/batch HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
         X-API-Key: {key}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    if let Err(e) = s
        .write_all(head.as_bytes())
        .and_then(|_| s.write_all(body.as_bytes()))
    {
        return Outcome::Retry(format!("write: {e}"));
    }
    let mut raw = Vec::new();
    let read = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw);
    // The status line is the acknowledgement; without it nothing was acknowledged.
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|t| t.get(..3))
        .and_then(|c| c.parse::<u16>().ok());
    let Some(status) = status else {
        return Outcome::Retry(match read {
            Err(e) => format!("read: {e}"),
            Ok(_) => format!("no status line in {:?}", &text[..text.len().min(80)]),
        });
    };
    let rest = text.split("\r\n\r\n").nth(1).unwrap_or("");
    let json: serde_json::Value = match (rest.find('{'), rest.rfind('}')) {
        (Some(a), Some(b)) if a < b => serde_json::from_str(&rest[a..=b]).unwrap_or_default(),
        _ => serde_json::Value::Null,
    };
    match status {
        200..=299 => {
            // Every reading is valid: a rejection (other than a duplicate) is a harness error.
            let rejected = json["rejected"].as_array().cloned().unwrap_or_default();
            let bad: Vec<_> = rejected
                .iter()
                .filter(|r| r["code"] != "DUPLICATE")
                .collect();
            if !bad.is_empty() {
                return Outcome::Fatal(format!("{n} readings, some rejected: {json}"));
            }
            Outcome::Acked
        }
        408 | 429 | 500..=599 => Outcome::Retry(format!("HTTP {status}: {json}")),
        _ => Outcome::Fatal(format!("HTTP {status}: {json}")),
    }
}

/// An MQTT connection: the socket and the bytes read but not yet framed.
struct Mqtt {
    sock: TcpStream,
    buf: BytesMut,
}

impl Mqtt {
    /// Connects as `node`, with its login if any, and waits for a successful CONNACK.
    fn open(addr: SocketAddr, node: &str, login: Option<&str>) -> Result<Self, String> {
        let mut m = Self {
            sock: connect(addr)?,
            buf: BytesMut::new(),
        };
        let mut connect = rumqttc::mqttbytes::v4::Connect::new(node);
        connect.keep_alive = 60;
        if let Some(key) = login {
            connect.set_login(node, key);
        }
        let mut out = BytesMut::new();
        connect.write(&mut out).map_err(|e| e.to_string())?;
        m.sock
            .write_all(&out)
            .map_err(|e| format!("CONNECT: {e}"))?;
        match m.next()? {
            Packet::ConnAck(a) if a.code == ConnectReturnCode::Success => Ok(m),
            Packet::ConnAck(a) => Err(format!("CONNACK {:?}", a.code)),
            other => Err(format!("expected CONNACK, got {other:?}")),
        }
    }

    /// The next packet from the server, within [`REQUEST_TIMEOUT`].
    fn next(&mut self) -> Result<Packet, String> {
        let until = Instant::now() + REQUEST_TIMEOUT;
        loop {
            match Packet::read(&mut self.buf, MAX_PACKET) {
                Ok(p) => return Ok(p),
                Err(FrameError::InsufficientBytes(_)) => {}
                Err(e) => return Err(format!("bad packet: {e}")),
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err("no answer in time".into());
            }
            self.sock
                .set_read_timeout(Some(left))
                .map_err(|e| e.to_string())?;
            let mut chunk = [0u8; 4096];
            match self.sock.read(&mut chunk) {
                Ok(0) => return Err("connection closed".into()),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) => return Err(format!("read: {e}")),
            }
        }
    }

    /// Publishes with QoS 1 and waits for the PUBACK of `pkid`.
    fn publish(&mut self, topic: &str, payload: &str, pkid: u16, dup: bool) -> Result<(), String> {
        let mut p = Publish::new(topic, QoS::AtLeastOnce, payload.as_bytes().to_vec());
        p.pkid = pkid;
        p.dup = dup;
        let mut out = BytesMut::new();
        p.write(&mut out).map_err(|e| e.to_string())?;
        self.sock
            .write_all(&out)
            .map_err(|e| format!("PUBLISH: {e}"))?;
        loop {
            match self.next()? {
                Packet::PubAck(a) if a.pkid == pkid => return Ok(()),
                Packet::PubAck(a) => return Err(format!("PUBACK {} for PUBLISH {pkid}", a.pkid)),
                _ => {}
            }
        }
    }

    fn close(mut self) {
        let mut out = BytesMut::new();
        if Disconnect.write(&mut out).is_ok() {
            let _ = self.sock.write_all(&out);
        }
    }
}

/// An MQTT node: one reading per QoS 1 PUBLISH on `kaiabc/sensors/{node}` (logged in as
/// itself when the broker wants a login); on any error it reconnects (while the broker is down,
/// again and again) and sends the same reading again, with DUP set, until its PUBACK arrives.
fn mqtt_node(ctx: &Ctx, spec: &NodeSpec, progress: &Progress, seed: u64) -> NodeReport {
    let mut rng = Rng(seed);
    let mut report = NodeReport::new(spec.readings.len());
    let topic = format!("kaiabc/sensors/{}", spec.id);
    let login = ctx.mqtt_login.then_some(spec.key.as_str());
    let mut conn: Option<Mqtt> = None;
    let n = spec.readings.len();
    for (i, r) in spec.readings.iter().enumerate() {
        if !ctx.pace(i, n) {
            return report;
        }
        let pkid = (i % 65_535) as u16 + 1;
        let mut dup = false;
        loop {
            if ctx.aborted() {
                return report;
            }
            report.attempts += 1;
            if conn.is_none() {
                match Mqtt::open(ctx.mqtt, &spec.id, login) {
                    Ok(c) => conn = Some(c),
                    Err(e) => {
                        report.failures += 1;
                        *progress.last_error.lock().unwrap() = e;
                        dup = true;
                        ctx.sleep(rng.pause());
                        continue;
                    }
                }
            }
            let sending = Instant::now();
            let sent = conn
                .as_mut()
                .expect("connected above")
                .publish(&topic, &r.json, pkid, dup);
            match sent {
                Ok(()) => {
                    report.waited += sending.elapsed();
                    report.ack(spec, i..i + 1, progress);
                    break;
                }
                Err(e) => {
                    report.failures += 1;
                    report.cut += 1;
                    *progress.last_error.lock().unwrap() = e;
                    conn = None;
                    dup = true;
                    ctx.sleep(rng.pause());
                }
            }
        }
    }
    if let Some(c) = conn {
        c.close();
    }
    report
}

// ---------------------------------------------------------------------------------------------
// The checks.

/// A timestamp as the lake's CSV prints it, in microseconds since the epoch.
fn micros(text: &str) -> Option<i64> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t.timestamp_micros());
    }
    let naive = text.trim_end_matches('Z').replace(' ', "T");
    chrono::NaiveDateTime::parse_from_str(&naive, "%Y-%m-%dT%H:%M:%S%.f")
        .ok()
        .map(|t| t.and_utc().timestamp_micros())
}

fn rows(text: &str) -> Vec<Vec<String>> {
    csv::Reader::from_reader(text.as_bytes())
        .records()
        .map(|r| r.unwrap().iter().map(str::to_string).collect())
        .collect()
}

/// The lake's dead letters: `DUPLICATE` ones per (node, seq) of the reading they copy, and
/// the others as text.
fn dead_letters(lake: &Path) -> (BTreeMap<(String, i64), usize>, Vec<String>) {
    let mut dups: BTreeMap<(String, i64), usize> = BTreeMap::new();
    let mut other = Vec::new();
    for row in rows(&csv(
        lake,
        "SELECT reason, node_id, source, message, payload FROM dead_letters",
    )) {
        let payload: serde_json::Value = serde_json::from_str(&row[4]).unwrap_or_default();
        match (
            row[0].as_str(),
            payload["node_id"].as_str(),
            payload["seq"].as_i64(),
        ) {
            ("DUPLICATE", Some(node), Some(seq)) => {
                *dups.entry((node.to_string(), seq)).or_default() += 1;
            }
            _ => other.push(format!("{} {} ({}): {}", row[0], row[2], row[3], row[4])),
        }
    }
    (dups, other)
}

/// Every acknowledged reading is in `readings` exactly once, with its timestamp, and every dead
/// letter is a `DUPLICATE` of a reading that is (a copy read again after a crash: sent again
/// before its acknowledgement, or read again from the source past its last committed
/// position); `None` if so, else what was lost, duplicated or wrongly dead-lettered, per node.
fn check_lake(lake: &Path, specs: &[Arc<NodeSpec>], reports: &[NodeReport]) -> Option<String> {
    // (node, seq) → (timestamp, late) of each row.
    let mut found: BTreeMap<(String, i64), Vec<(i64, bool)>> = BTreeMap::new();
    for row in rows(&csv(
        lake,
        "SELECT node_id, seq, timestamp, late FROM readings",
    )) {
        let seq = row[1].parse().unwrap_or(-1);
        let at = micros(&row[2]).unwrap_or_else(|| panic!("timestamp {:?}", row[2]));
        let late = row[3] == "true";
        found
            .entry((row[0].clone(), seq))
            .or_default()
            .push((at, late));
    }
    let (mut dead, other_dead) = dead_letters(lake);
    let mut lines = Vec::new();
    let (mut lost_all, mut dup_all, mut moved_all, mut dead_all, mut dead_wrong) = (0, 0, 0, 0, 0);
    for (spec, report) in specs.iter().zip(reports) {
        let mut lost = Vec::new();
        let mut dups = Vec::new();
        let mut moved = Vec::new();
        // Rows beyond the first of a duplicated reading, and how many of them are marked late.
        let (mut copies, mut late_copies) = (0, 0);
        // Readings marked late (applied after a newer one of the node, so no state): a node
        // sends in order, so these tell why states are missing.
        let mut late = Vec::new();
        // Readings with DUPLICATE dead letters (copies dropped), and how many dead letters;
        // those whose reading is not in the lake exactly once.
        let (mut dropped, mut dropped_letters, mut dropped_wrong) = (0, 0, Vec::new());
        for (r, acked) in spec.readings.iter().zip(&report.acked) {
            if !acked {
                continue;
            }
            let key = (spec.id.clone(), r.seq);
            let rows = found.remove(&key);
            if let Some(n) = dead.remove(&key) {
                dropped += 1;
                dropped_letters += n;
                if rows.as_ref().is_none_or(|rows| rows.len() != 1) {
                    dropped_wrong.push(r.seq);
                }
            }
            match rows.as_deref() {
                None => lost.push(r.seq),
                Some([(at, is_late)]) if *at == r.at.timestamp_micros() => {
                    if *is_late {
                        late.push(r.seq);
                    }
                }
                Some([_]) => moved.push(r.seq),
                Some(all) => {
                    dups.push(r.seq);
                    copies += all.len() - 1;
                    late_copies += all.iter().filter(|(_, late)| *late).count();
                }
            }
        }
        lost_all += lost.len();
        dup_all += dups.len();
        moved_all += moved.len();
        dead_all += dropped_letters;
        dead_wrong += dropped_wrong.len();
        let acked = report.acked.iter().filter(|a| **a).count();
        lines.push(format!(
            "  {}: {acked} acknowledged, {} lost{}, {} duplicated{}{}{}{}; {dropped} copies \
             dead-lettered as DUPLICATE ({dropped_letters} dead letters){}",
            spec.id,
            lost.len(),
            runs(&lost),
            dups.len(),
            runs(&dups),
            if dups.is_empty() {
                String::new()
            } else {
                format!(" ({copies} extra rows; {late_copies} of all their rows marked late)")
            },
            if moved.is_empty() {
                String::new()
            } else {
                format!(", {} with another timestamp{}", moved.len(), runs(&moved))
            },
            if late.is_empty() {
                String::new()
            } else {
                format!("; {} marked late{}", late.len(), runs(&late))
            },
            if dropped_wrong.is_empty() {
                String::new()
            } else {
                format!(
                    ", {} of them not in the lake exactly once{}",
                    dropped_wrong.len(),
                    runs(&dropped_wrong)
                )
            }
        ));
    }
    let unexpected: Vec<String> = found
        .keys()
        .take(10)
        .map(|(n, s)| format!("{n}#{s}"))
        .collect();
    let dead_unsent: Vec<String> = dead
        .keys()
        .take(10)
        .map(|(n, s)| format!("{n}#{s}"))
        .collect();
    let ok = lost_all == 0
        && dup_all == 0
        && moved_all == 0
        && found.is_empty()
        && dead_wrong == 0
        && dead.is_empty()
        && other_dead.is_empty();
    eprintln!(
        "crash: the lake's readings against the acknowledged ones ({dead_all} DUPLICATE dead \
         letters, {} others):\n{}",
        other_dead.len(),
        lines.join("\n")
    );
    (!ok).then(|| {
        format!(
            "readings: {lost_all} acknowledged readings lost, {dup_all} duplicated, {moved_all} \
             with another timestamp, {} rows not sent {unexpected:?}; {dead_wrong} readings \
             dead-lettered as DUPLICATE but not in the lake exactly once, {} DUPLICATE dead \
             letters of readings not sent {dead_unsent:?}, {} other dead letters {:?}\n{}",
            found.len(),
            dead.len(),
            other_dead.len(),
            &other_dead[..other_dead.len().min(5)],
            lines.join("\n")
        )
    })
}

/// Runs of consecutive seqs, e.g. " (seq 3-7, 12)"; empty for none.
fn runs(seqs: &[i64]) -> String {
    if seqs.is_empty() {
        return String::new();
    }
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < seqs.len() {
        let mut j = i;
        while j + 1 < seqs.len() && seqs[j + 1] == seqs[j] + 1 {
            j += 1;
        }
        parts.push(if i == j {
            seqs[i].to_string()
        } else {
            format!("{}-{}", seqs[i], seqs[j])
        });
        i = j + 1;
    }
    let more = parts.len().saturating_sub(12);
    parts.truncate(12);
    format!(
        " (seq {}{})",
        parts.join(", "),
        if more > 0 {
            format!(" and {more} more runs")
        } else {
            String::new()
        }
    )
}

const STATES: &str = "SELECT node_id, timestamp, seq, circadian_time, phase, period_hours, \
                      koa_metric, output_pwm FROM states ORDER BY node_id, timestamp, seq";

/// The live lake's states equal those of one uninterrupted replay of every acknowledged
/// reading (in each node's order, the nodes merged by time); `None` if so.
///
/// The floats must agree exactly ([`STATE_TOLERANCE`] = 0): the science core is deterministic
/// to the bit (DEVELOPERS.md), a checkpoint restores a clock's `f64`s bit for bit, and live and
/// replay apply a node's readings in the same order, so any difference, even in the last
/// digit, means a clock saw different readings (or a restore was not exact). The message says
/// whether the differences would pass at 1e-9 relative, to tell the two apart.
fn check_states(
    dir: &Path,
    lake: &Path,
    specs: &[Arc<NodeSpec>],
    reports: &[NodeReport],
) -> Option<String> {
    let mut all: Vec<(i64, usize, i64, &str)> = Vec::new();
    for (k, (spec, report)) in specs.iter().zip(reports).enumerate() {
        for (r, acked) in spec.readings.iter().zip(&report.acked) {
            if *acked {
                all.push((r.at.timestamp_micros(), k, r.seq, &r.json));
            }
        }
    }
    all.sort();
    let file = dir.join("acknowledged.jsonl");
    let mut text = String::with_capacity(all.len() * 200);
    for (_, _, _, json) in &all {
        text.push_str(json);
        text.push('\n');
    }
    std::fs::write(&file, text).unwrap();
    let replayed = dir.join("replayed");
    super::ok(&[
        "replay",
        file.to_str().unwrap(),
        "--lake",
        replayed.to_str().unwrap(),
    ]);
    let live = rows(&csv(lake, STATES));
    let want = rows(&csv(&replayed, STATES));
    assert_eq!(want.len(), all.len(), "the replay has a state per reading");
    let key = |r: &Vec<String>| (r[0].clone(), r[1].clone(), r[2].clone());
    let mut live_by: BTreeMap<_, Vec<&Vec<String>>> = BTreeMap::new();
    for r in &live {
        live_by.entry(key(r)).or_default().push(r);
    }
    let want_by: BTreeMap<_, _> = want.iter().map(|r| (key(r), r)).collect();
    #[derive(Default)]
    struct Diff {
        missing: usize,
        extra: usize,
        duplicated: usize,
        differ: usize,
        within_1e9: usize,
        max_rel: f64,
        first: Option<String>,
    }
    let mut per: BTreeMap<String, Diff> = BTreeMap::new();
    for (k, w) in &want_by {
        let d = per.entry(k.0.clone()).or_default();
        let Some(copies) = live_by.get(k) else {
            d.missing += 1;
            continue;
        };
        if copies.len() > 1 {
            d.duplicated += 1;
        }
        let l = copies[0];
        if l == *w {
            continue;
        }
        // The largest relative difference of the value columns (after node, time and seq).
        let rel = l
            .iter()
            .zip(w.iter())
            .skip(3)
            .map(|(a, b)| match (a.parse::<f64>(), b.parse::<f64>()) {
                (Ok(x), Ok(y)) if x == y => 0.0,
                (Ok(x), Ok(y)) => (x - y).abs() / x.abs().max(y.abs()),
                _ => f64::INFINITY,
            })
            .fold(0.0, f64::max);
        if rel <= STATE_TOLERANCE {
            continue;
        }
        d.differ += 1;
        if rel <= 1e-9 {
            d.within_1e9 += 1;
        }
        d.max_rel = d.max_rel.max(rel);
        d.first
            .get_or_insert_with(|| format!("live {} / replay {}", l.join(","), w.join(",")));
    }
    let want_keys: BTreeSet<_> = want_by.keys().collect();
    for k in live_by.keys().filter(|k| !want_keys.contains(k)) {
        per.entry(k.0.clone()).or_default().extra += 1;
    }
    let bad: Vec<String> = per
        .iter()
        .filter(|(_, d)| d.missing + d.extra + d.duplicated + d.differ > 0)
        .map(|(node, d)| {
            format!(
                "  {node}: {} states missing, {} not in the replay, {} more than once, {} differ \
                 ({} of them within 1e-9 relative; largest relative difference {:.3e}){}",
                d.missing,
                d.extra,
                d.duplicated,
                d.differ,
                d.within_1e9,
                d.max_rel,
                d.first
                    .as_ref()
                    .map(|f| format!("; first: {f}"))
                    .unwrap_or_default()
            )
        })
        .collect();
    (!bad.is_empty()).then(|| {
        format!(
            "states: {} live rows, {} in the uninterrupted replay (exact comparison):\n{}",
            live.len(),
            want.len(),
            bad.join("\n")
        )
    })
}
