//! `kaiabc run` under repeated `kill -9`: simulated nodes send readings over HTTP and MQTT QoS 1,
//! each retrying a request until it is acknowledged, while the server is killed and restarted
//! on the same lake, state dir and ports; every acknowledged reading must then be in the lake
//! exactly once, and the states must equal those of one uninterrupted replay.
//!
//! `KAIABC_CRASH_KILLS` sets the number of kills (default 12; 0 checks the harness itself),
//! `KAIABC_CRASH_SEED` the seed of the kill schedule.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use chrono::{DateTime, TimeZone, Utc};
use rumqttc::mqttbytes::v4::{ConnectReturnCode, Disconnect, Packet, Publish};
use rumqttc::mqttbytes::{Error as FrameError, QoS};

use common::live::{csv, get, request, stop, token, Server, SECRET};

/// Nodes posting batches over HTTP, and their readings each.
const HTTP_NODES: usize = 4;
const HTTP_READINGS: usize = 6_000;
const BATCH: usize = 100;
/// Nodes publishing one reading per MQTT QoS 1 PUBLISH, and their readings each.
const MQTT_NODES: usize = 2;
const MQTT_READINGS: usize = 2_500;
/// Kills by default (`KAIABC_CRASH_KILLS` overrides).
const KILLS: usize = 12;
/// The whole run (start, sending, kills, graceful stop) must end within this.
const RUN_LIMIT: Duration = Duration::from_secs(180);
/// How long one request or one wait for an acknowledgement may take before it is retried.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a (re)started server may take to answer its health endpoint.
const BOOT_LIMIT: Duration = Duration::from_secs(40);
const MAX_PACKET: usize = 1024 * 1024;

/// Exact comparison of the states, or a relative tolerance (see the report when it matters).
const STATE_TOLERANCE: f64 = 0.0;

#[test]
fn acknowledged_readings_survive_repeated_kill_9() {
    let kills: usize = env_or("KAIABC_CRASH_KILLS", KILLS);
    let seed: u64 = env_or("KAIABC_CRASH_SEED", 0x6b61_6961_6263);
    let began = Instant::now();
    let deadline = began + RUN_LIMIT;

    let dir = tempfile::tempdir().unwrap();
    let _keep = KeepOnFailure(dir.path().to_path_buf());
    let lake = dir.path().join("lake");
    let cluster = Arc::new(Cluster::new(dir.path(), &lake));
    let _guard = Guard(Arc::clone(&cluster));
    let boot = cluster
        .start(deadline)
        .unwrap_or_else(|e| panic!("kaiabc run did not start: {e}"));

    // The nodes, registered by an admin; each keeps its API key.
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
            cluster.http,
            "POST",
            "/v1/sensors/nodes",
            &[("Authorization", &admin)],
            &format!(r#"{{"node_id":"{id}"}}"#),
        );
        assert_eq!(status, 201, "registering {id}: {body}");
        let key = body["api_key"].as_str().unwrap().to_string();
        let readings = readings_for(&id, k, count);
        specs.push(Arc::new(NodeSpec {
            id,
            key,
            via,
            readings,
        }));
    }

    // The kills: 1.5–5 s after the server answers, every third one 0.3 s after (before the
    // first commit of that run, which is 2 s in).
    let mut rng = Rng(seed);
    let plan: Vec<Duration> = (0..kills)
        .map(|k| {
            if k % 3 == 1 {
                Duration::from_millis(300)
            } else {
                Duration::from_secs_f64(1.5 + 3.5 * rng.unit())
            }
        })
        .collect();
    // The nodes spread their readings over about the time the kills take, so that every kill
    // lands while they send; they catch up as fast as they can after each outage.
    let window = plan
        .iter()
        .map(|d| *d + boot + Duration::from_millis(300))
        .sum::<Duration>()
        .max(Duration::from_secs(10));

    let ctx = Arc::new(Ctx {
        http: cluster.http,
        mqtt: cluster.mqtt,
        cluster: Arc::clone(&cluster),
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
        let ctx = Arc::clone(&ctx);
        std::thread::spawn(move || killer(&ctx, &plan))
    };

    // Wait for the nodes and the killer, or the deadline.
    while !(killer.is_finished() && nodes.iter().all(|(_, h)| h.is_finished())) {
        if Instant::now() > deadline {
            ctx.fail(format!(
                "the run did not end within {RUN_LIMIT:?} (deadline); {} server runs so far; \
                 progress:\n{}",
                cluster.runs.load(Ordering::SeqCst),
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
        // The guard prints the server's log.
        panic!("{e}");
    }
    // Everything is acknowledged: stop gracefully (SIGTERM, exit 0).
    let last = cluster
        .server
        .lock()
        .unwrap()
        .take()
        .expect("a running server");
    stop(last);
    let elapsed = began.elapsed();

    let sent: usize = specs.iter().map(|s| s.readings.len()).sum();
    let acked: usize = reports
        .iter()
        .map(|r| r.acked.iter().filter(|a| **a).count())
        .sum();
    let requests: usize = reports.iter().map(|r| r.attempts).sum();
    let failed: usize = reports.iter().map(|r| r.failures).sum();
    eprintln!(
        "crash: {sent} readings sent, {acked} acknowledged, {requests} requests ({failed} failed \
         and retried), {} kills, {} restarts, {:.1} s (seed {seed:#x}, send window {:.1} s, \
         boot {:.2} s)",
        killed.kills,
        killed.restarts,
        elapsed.as_secs_f64(),
        window.as_secs_f64(),
        boot.as_secs_f64()
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
    assert_eq!(killed.kills, kills, "kills");

    let mut problems = Vec::new();
    if let Some(p) = check_lake(&cluster.lake, &specs, &reports) {
        problems.push(p);
    }
    if let Some(p) = check_states(dir.path(), &cluster.lake, &specs, &reports) {
        problems.push(p);
    }
    assert!(
        problems.is_empty(),
        "after {} kills ({:.1} s):\n{}",
        killed.kills,
        elapsed.as_secs_f64(),
        problems.join("\n")
    );
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not valid")),
        Err(_) => default,
    }
}

/// splitmix64: a small seeded generator for the kill schedule and the retry pauses.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// The pause before a retry: 100–200 ms.
    fn pause(&mut self) -> Duration {
        Duration::from_millis(100 + self.next() % 101)
    }
}

// ---------------------------------------------------------------------------------------------
// The server: started, killed and restarted on the same lake, state dir and ports.

/// One `kaiabc run` at a time, on fixed ports; each run's stderr goes to its own log file.
struct Cluster {
    lake: PathBuf,
    state: PathBuf,
    logs: PathBuf,
    http: SocketAddr,
    mqtt: SocketAddr,
    server: Mutex<Option<Server>>,
    runs: AtomicUsize,
    /// Set when the test ends: nothing is started any more, every thread gives up.
    abort: AtomicBool,
}

impl Cluster {
    fn new(dir: &Path, lake: &Path) -> Self {
        let (http, mqtt) = two_ports();
        Self {
            lake: lake.to_path_buf(),
            // As `common::live::launch` names it.
            state: lake.with_extension("state"),
            logs: dir.to_path_buf(),
            http: SocketAddr::from(([127, 0, 0, 1], http)),
            mqtt: SocketAddr::from(([127, 0, 0, 1], mqtt)),
            server: Mutex::new(None),
            runs: AtomicUsize::new(0),
            abort: AtomicBool::new(false),
        }
    }

    fn log(&self, run: usize) -> PathBuf {
        self.logs.join(format!("server-{run}.log"))
    }

    /// Spawns `kaiabc run` (as `common::live::launch` does, with fixed ports).
    fn spawn(&self) -> Result<usize, String> {
        let mut slot = self.server.lock().unwrap();
        if self.abort.load(Ordering::SeqCst) {
            return Err("aborted".into());
        }
        assert!(slot.is_none(), "a server is already running");
        let run = self.runs.fetch_add(1, Ordering::SeqCst) + 1;
        let log = std::fs::File::create(self.log(run)).map_err(|e| e.to_string())?;
        let child = Command::new(env!("CARGO_BIN_EXE_kaiabc"))
            .args([
                "run",
                "--http",
                &self.http.to_string(),
                "--mqtt-listen",
                &self.mqtt.to_string(),
                "--lake",
                self.lake.to_str().unwrap(),
                "--state-dir",
                self.state.to_str().unwrap(),
                "--rate-limit-node",
                "1000000",
                "--commit-interval-seconds",
                "2",
            ])
            .env("KAIABC_JWT_SECRET", SECRET)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("spawning kaiabc run: {e}"))?;
        *slot = Some(Server::new(child));
        Ok(run)
    }

    /// Starts a server and waits until its health endpoint answers; a run that exits first
    /// (a port not free yet, say) is started again, up to five times. Returns the boot time.
    fn start(&self, deadline: Instant) -> Result<Duration, String> {
        let mut last = String::new();
        for _ in 0..5 {
            let began = Instant::now();
            let run = self.spawn()?;
            let limit = (began + BOOT_LIMIT).min(deadline);
            loop {
                if self.abort.load(Ordering::SeqCst) {
                    return Err("aborted".into());
                }
                let exited = match self.server.lock().unwrap().as_mut() {
                    Some(s) => s.0.try_wait().map_err(|e| e.to_string())?,
                    None => return Err("the server was taken away".into()),
                };
                if let Some(status) = exited {
                    self.server.lock().unwrap().take();
                    last = format!(
                        "run {run} exited with {status} before answering:\n{}",
                        tail(&self.log(run))
                    );
                    break;
                }
                if get(self.http, "/v1/health").is_some_and(|(s, _)| s == 200) {
                    return Ok(began.elapsed());
                }
                if Instant::now() > limit {
                    return Err(format!(
                        "run {run} did not answer /v1/health within {:?}:\n{}",
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

    /// SIGKILL and reap the running server.
    fn kill(&self) -> bool {
        match self.server.lock().unwrap().take() {
            Some(mut s) => {
                let _ = s.0.kill();
                let _ = s.0.wait();
                true
            }
            None => false,
        }
    }

    fn log_tail(&self) -> String {
        tail(&self.log(self.runs.load(Ordering::SeqCst)))
    }
}

/// Kills whatever the test started when it ends, also when an assertion fails.
struct Guard(Arc<Cluster>);

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.abort.store(true, Ordering::SeqCst);
        self.0.kill();
        if std::thread::panicking() {
            eprintln!("server log (last run):\n{}", self.0.log_tail());
        }
    }
}

/// With `KAIABC_CRASH_KEEP=1`, a failed run's directory (lake, replayed lake, server logs) is
/// copied next to the temporary one for a look, and its path printed.
struct KeepOnFailure(PathBuf);

impl Drop for KeepOnFailure {
    fn drop(&mut self) {
        if std::thread::panicking() && std::env::var_os("KAIABC_CRASH_KEEP").is_some() {
            let to = self.0.with_extension("kept");
            let copied = Command::new("cp").arg("-a").arg(&self.0).arg(&to).status();
            eprintln!("crash: the run's files: {} ({copied:?})", to.display());
        }
    }
}

/// The last lines of a log file.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// Two free ports below the kernel's ephemeral range when there is room: no client socket
/// can then be given one of them while the server is down (a connection to oneself on
/// loopback would hold the port, and the restart could not bind it).
fn two_ports() -> (u16, u16) {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|t| {
            t.split_whitespace()
                .next()
                .and_then(|s| s.parse::<u16>().ok())
        })
        .unwrap_or(0);
    if range < 12_000 {
        let a = common::live::free_port();
        let b = loop {
            let p = common::live::free_port();
            if p != a {
                break p;
            }
        };
        return (a, b);
    }
    let mut rng = Rng(u64::from(std::process::id())
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64);
    let mut pick = |other: u16| loop {
        let p = 10_000 + (rng.next() % u64::from(range - 10_000)) as u16;
        if p != other && TcpListener::bind(("127.0.0.1", p)).is_ok() {
            break p;
        }
    };
    let a = pick(0);
    (a, pick(a))
}

// ---------------------------------------------------------------------------------------------
// The killer.

struct Killed {
    kills: usize,
    restarts: usize,
}

/// Kills the server after each planned delay (counted from when it answered), restarts it on
/// the same lake, state dir and ports, and leaves the last one running.
fn killer(ctx: &Ctx, plan: &[Duration]) -> Killed {
    let mut done = Killed {
        kills: 0,
        restarts: 0,
    };
    for delay in plan {
        if !ctx.sleep(*delay) {
            return done;
        }
        if ctx.cluster.kill() {
            done.kills += 1;
        }
        match ctx.cluster.start(ctx.deadline) {
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
// The nodes.

#[derive(Clone, Copy)]
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

/// A node's readings: one a minute from 2026-01-01T00:00:00Z plus 7 s per node, seq from 1,
/// temperature on a smooth daily cycle, 298 K ± 3 K.
fn readings_for(node: &str, index: usize, count: usize) -> Vec<Reading> {
    let day0 = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
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
    cluster: Arc<Cluster>,
    start: Instant,
    /// Reading `i` of `n` is not sent before `start + window · i / n`.
    window: Duration,
    deadline: Instant,
    /// A harness error (not a lost reading): the first one ends the run.
    fatal: Mutex<Option<String>>,
}

impl Ctx {
    fn aborted(&self) -> bool {
        self.cluster.abort.load(Ordering::SeqCst)
    }

    fn fail(&self, why: String) {
        self.fatal.lock().unwrap().get_or_insert(why);
        self.cluster.abort.store(true, Ordering::SeqCst);
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
}

impl NodeReport {
    fn new(n: usize) -> Self {
        Self {
            acked: vec![false; n],
            order: Vec::new(),
            attempts: 0,
            failures: 0,
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

/// An HTTP node: batches of [`BATCH`] readings to `POST /v1/sensors/batch`, one request at a
/// time, each repeated until a 2xx answer.
fn http_node(ctx: &Ctx, spec: &NodeSpec, progress: &Progress, seed: u64) -> NodeReport {
    let mut rng = Rng(seed);
    let mut report = NodeReport::new(spec.readings.len());
    let batches = spec.readings.len().div_ceil(BATCH);
    for b in 0..batches {
        if !ctx.pace(b, batches) {
            return report;
        }
        let range = b * BATCH..((b + 1) * BATCH).min(spec.readings.len());
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
            match post_batch(ctx.http, &spec.key, &body, range.len()) {
                Outcome::Acked => {
                    report.ack(spec, range, progress);
                    break;
                }
                Outcome::Retry(e) => {
                    report.failures += 1;
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

/// A TCP connection to `addr`, never one to itself (see [`two_ports`]).
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
    /// Connects with the node's login and waits for a successful CONNACK.
    fn open(addr: SocketAddr, node: &str, key: &str) -> Result<Self, String> {
        let mut m = Self {
            sock: connect(addr)?,
            buf: BytesMut::new(),
        };
        let mut connect = rumqttc::mqttbytes::v4::Connect::new(node);
        connect.keep_alive = 60;
        connect.set_login(node, key);
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

/// An MQTT node: one reading per QoS 1 PUBLISH on `kaiabc/sensors/{node}`, logged in as
/// itself; on any error it reconnects (while the server is down, again and again) and sends
/// the same reading again, with DUP set, until its PUBACK arrives.
fn mqtt_node(ctx: &Ctx, spec: &NodeSpec, progress: &Progress, seed: u64) -> NodeReport {
    let mut rng = Rng(seed);
    let mut report = NodeReport::new(spec.readings.len());
    let topic = format!("kaiabc/sensors/{}", spec.id);
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
            let sent = match conn.as_mut() {
                Some(c) => c.publish(&topic, &r.json, pkid, dup),
                None => match Mqtt::open(ctx.mqtt, &spec.id, &spec.key) {
                    Ok(c) => conn.insert(c).publish(&topic, &r.json, pkid, dup),
                    Err(e) => Err(e),
                },
            };
            match sent {
                Ok(()) => {
                    report.ack(spec, i..i + 1, progress);
                    break;
                }
                Err(e) => {
                    report.failures += 1;
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

/// Every acknowledged reading is in `readings` exactly once, with its timestamp; `None` if so,
/// else what was lost or duplicated, per node.
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
    let mut lines = Vec::new();
    let (mut lost_all, mut dup_all, mut moved_all) = (0, 0, 0);
    for (spec, report) in specs.iter().zip(reports) {
        let mut lost = Vec::new();
        let mut dups = Vec::new();
        let mut moved = Vec::new();
        // Rows beyond the first of a duplicated reading, and how many of them are marked late.
        let (mut copies, mut late_copies) = (0, 0);
        // Readings marked late (applied after a newer one of the node, so no state): a node
        // sends in order, so these tell why states are missing.
        let mut late = Vec::new();
        for (r, acked) in spec.readings.iter().zip(&report.acked) {
            if !acked {
                continue;
            }
            match found.remove(&(spec.id.clone(), r.seq)).as_deref() {
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
        let acked = report.acked.iter().filter(|a| **a).count();
        lines.push(format!(
            "  {}: {acked} acknowledged, {} lost{}, {} duplicated{}{}{}{}",
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
            }
        ));
    }
    let unexpected: Vec<String> = found
        .keys()
        .take(10)
        .map(|(n, s)| format!("{n}#{s}"))
        .collect();
    let ok = lost_all == 0 && dup_all == 0 && moved_all == 0 && found.is_empty();
    eprintln!(
        "crash: the lake's readings against the acknowledged ones:\n{}",
        lines.join("\n")
    );
    (!ok).then(|| {
        format!(
            "readings: {lost_all} acknowledged readings lost, {dup_all} duplicated, {moved_all} \
             with another timestamp, {} rows not sent {unexpected:?}\n{}",
            found.len(),
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
    common::ok(&[
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
