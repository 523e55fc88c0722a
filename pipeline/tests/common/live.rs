//! Helpers of the live end-to-end tests: run `kaiabc run` on free ports, talk HTTP and MQTT to
//! it, stop it with SIGTERM.
#![allow(dead_code)] // each test crate uses its own subset

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS};

use super::ok;

/// A loopback port that is free now, for a server a test starts with an explicit address
/// (where it can, a test starts the server on port 0 and reads the port it announces).
/// Below the kernel's ephemeral range ([`kaiabc_connectors::ports::loopback_port`]): a port
/// from that range could be taken by any client socket before the server binds it (it
/// happened: a server that never started), or while a restarted server is down.
pub fn free_port() -> u16 {
    kaiabc_connectors::ports::loopback_port().unwrap()
}

/// The JWT secret the tests give the server (and `kaiabc token`).
pub const SECRET: &str = "test-secret-test-secret-test-secret-0123";

/// A token for `role`, minted by `kaiabc token`.
pub fn token(role: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_kaiabc"))
        .args([
            "token",
            "--role",
            role,
            "--subject",
            "tester",
            "--ttl",
            "10m",
        ])
        .env("KAIABC_JWT_SECRET", SECRET)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

thread_local! {
    /// The status line and headers of this thread's last `request`, lower-cased.
    static LAST_HEAD: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

/// A header of this thread's last `request`.
pub fn last_header(name: &str) -> Option<String> {
    LAST_HEAD.with(|h| {
        h.borrow()
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")).map(str::to_string))
    })
}

/// Sends a request with extra header lines: (status, body as JSON, or Null).
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, serde_json::Value) {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
    request_on(s, method, path, headers, body)
}

/// A connection to `addr` from the loopback address `from` (127.0.0.2 and so on: a second
/// client address on one machine, as the server's per-address limits see it).
pub fn connect_from(from: std::net::IpAddr, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    sock.bind(&SocketAddr::new(from, 0).into())?;
    sock.connect_timeout(&addr.into(), Duration::from_secs(2))?;
    Ok(sock.into())
}

/// [`request`] on a connection already open.
pub fn request_on(
    mut s: TcpStream,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, serde_json::Value) {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    write!(s, "{head}\r\n{body}").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    LAST_HEAD.with(|h| {
        *h.borrow_mut() = text
            .split("\r\n\r\n")
            .next()
            .unwrap_or("")
            .to_ascii_lowercase()
    });
    let status = text.split_whitespace().nth(1).unwrap().parse().unwrap();
    let rest = text.split("\r\n\r\n").nth(1).unwrap_or("");
    let json = match (rest.find('{'), rest.rfind('}')) {
        (Some(a), Some(b)) if a < b => serde_json::from_str(&rest[a..=b]).unwrap_or_default(),
        _ => serde_json::Value::Null,
    };
    (status, json)
}

/// GET `path` from `addr` as an observer: (status, body).
pub fn get(addr: SocketAddr, path: &str) -> Option<(u16, serde_json::Value)> {
    static OBSERVER: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let t = OBSERVER.get_or_init(|| token("observer"));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {t}\r\nConnection: close\r\n\r\n"
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

/// GET `path` with a bearer token: (status, lower-cased head, body bytes). The body must not be
/// chunked (warp sends a known length for whole bodies).
pub fn get_bytes(addr: SocketAddr, path: &str, token: &str) -> (u16, String, Vec<u8>) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a head");
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, head, raw[split + 4..].to_vec())
}

/// GET `path` from `addr`: (status, headers and body as text).
pub fn get_text(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, text)
}

/// Runs `promtool check metrics` (Debian's `prometheus` package, installed by the test
/// command) on an exposition text.
pub fn promtool_check(text: &str) {
    let promtool = std::env::var("KAIABC_PROMTOOL").unwrap_or_else(|_| "promtool".into());
    let mut child = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{promtool}: {e} (scripts/services.sh installs it)"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A running `kaiabc run`; its stderr is read as it comes (a full pipe would block the server)
/// and kept, so a test can read what the server announced and a failure can show it.
pub struct Server(pub Child, Stderr);

/// The server's stderr so far, filled by a reading thread.
pub struct Stderr {
    text: std::sync::Arc<std::sync::Mutex<String>>,
    drain: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    /// Takes `child`'s piped stderr into a reading thread.
    pub fn new(mut child: Child) -> Self {
        let text = std::sync::Arc::<std::sync::Mutex<String>>::default();
        let drain = child.stderr.take().map(|e| {
            let text = std::sync::Arc::clone(&text);
            std::thread::spawn(move || {
                for line in BufReader::new(e).lines() {
                    let Ok(line) = line else { break };
                    let mut t = text.lock().unwrap();
                    t.push_str(&line);
                    t.push('\n');
                }
            })
        });
        Self(child, Stderr { text, drain })
    }

    /// What the server has written to stderr so far.
    pub fn stderr(&self) -> String {
        self.1.text.lock().unwrap().clone()
    }

    /// The address the server announced after `label` (`"MQTT on "`, `"TLS on "`,
    /// `"HTTP on http://"`) in its start-up line, waiting for that line. The server is
    /// started on port 0 and says which port it got: a port picked by the test and bound
    /// later by the server could be taken by another test in between.
    pub fn announced(&mut self, label: &str) -> SocketAddr {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = self.stderr();
            if let Some(line) = text.lines().find(|l| l.contains("kaiabc run: MQTT on ")) {
                let rest = &line[line
                    .find(label)
                    .unwrap_or_else(|| panic!("no {label:?} in {line}"))
                    + label.len()..];
                let end = rest.find([' ', ',', '/']).unwrap_or(rest.len());
                return rest[..end]
                    .parse()
                    .unwrap_or_else(|e| panic!("{label:?} in {line}: {e}"));
            }
            if let Some(status) = self.0.try_wait().unwrap() {
                panic!("kaiabc run exited ({status}) before it started: {text}");
            }
            assert!(
                Instant::now() < deadline,
                "kaiabc run did not announce its addresses in 30 s: {text}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until the reading thread has read the whole of stderr (the process has ended)
    /// and returns it.
    fn finish(&mut self) -> String {
        if let Some(drain) = self.1.drain.take() {
            let _ = drain.join();
        }
        self.stderr()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
    }
}

pub fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

pub fn wait_until<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn reading(node: &str, seq: i64, minute: u32, kelvin: f64) -> String {
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
pub fn publish(port: u16, messages: &[(String, String)]) {
    publish_as(port, None, messages).unwrap()
}

/// Publishes as a logged-in client (`(username, password)`); `Err` if the broker refuses it.
pub fn publish_as(
    port: u16,
    login: Option<(&str, &str)>,
    messages: &[(String, String)],
) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut o = MqttOptions::new("test-node", "127.0.0.1", port);
        o.set_keep_alive(Duration::from_secs(5));
        if let Some((u, p)) = login {
            o.set_credentials(u, p);
        }
        // Every publish is queued before the event loop runs: the queue must hold them all.
        let (client, mut events) = AsyncClient::new(o, messages.len() + 10);
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
        let mut failures = 0;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while acked < messages.len() {
            match tokio::time::timeout_at(deadline, events.poll()).await {
                Ok(Ok(Event::Incoming(Incoming::PubAck(_)))) => acked += 1,
                Ok(Ok(Event::Incoming(Incoming::ConnAck(c))))
                    if c.code != rumqttc::ConnectReturnCode::Success =>
                {
                    return Err(format!("refused: {:?}", c.code));
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    let text = e.to_string();
                    failures += 1;
                    if login.is_some() && failures >= 5 {
                        return Err(text);
                    }
                    // The broker may still be starting: retry the connection.
                    eprintln!("mqtt: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(_) if login.is_some() && acked == 0 => {
                    return Err("no PUBACK: the broker did not accept the client".into())
                }
                Err(_) => panic!("no PUBACK for every publish ({acked}/{})", messages.len()),
            }
        }
        client.disconnect().await.ok();
        Ok(())
    })
}

/// The rate limits' settings, lifted.
pub const UNLIMITED: [(&str, &str); 4] = [
    ("KAIABC_RATE_LIMIT_INGEST", "100000000"),
    ("KAIABC_RATE_LIMIT_QUERY", "100000000"),
    ("KAIABC_RATE_LIMIT_CHANGE", "100000000"),
    ("KAIABC_WS_PER_CLIENT", "100000"),
];

/// Starts `kaiabc run` on free ports over `lake` (MQTT without credentials) and waits until it
/// is healthy.
pub fn start(lake: &std::path::Path) -> (Server, SocketAddr, u16) {
    start_with(lake, &["--mqtt-anonymous"])
}

/// As [`start`], with `extra` flags instead of `--mqtt-anonymous`, committing every second.
pub fn start_with(lake: &std::path::Path, extra: &[&str]) -> (Server, SocketAddr, u16) {
    launch(lake, &[&["--commit-interval-seconds", "1"], extra].concat())
}

/// Starts `kaiabc run` on free ports over `lake` with `extra` flags (and otherwise its
/// defaults) and waits until it is healthy. The MQTT port is the embedded broker's (0 with
/// `--mqtt-url`).
pub fn launch(lake: &std::path::Path, extra: &[&str]) -> (Server, SocketAddr, u16) {
    let child = Command::new(env!("CARGO_BIN_EXE_kaiabc"))
        .args([
            "run",
            "--http",
            "127.0.0.1:0",
            "--mqtt-listen",
            "127.0.0.1:0",
            "--lake",
            lake.to_str().unwrap(),
            "--state-dir",
            lake.with_extension("state").to_str().unwrap(),
        ])
        .args(extra)
        .env("KAIABC_JWT_SECRET", SECRET)
        // The tests' readings are dated in January 2026 (`reading`), beyond the default horizon
        // of a week before their receipt; a flag a test gives still wins.
        .env("KAIABC_MAX_READING_AGE_HOURS", "87600")
        // The contract's rate limits (10 changes a minute, 5 WebSockets per client) are for
        // people and nodes, not for tests that register dozens of nodes or open many sockets
        // with one token; a test of the limits gives its own flags, which win.
        .envs(UNLIMITED)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut server = Server::new(child);
    let http = server.announced("HTTP on http://");
    // With `--mqtt-url` the server is a client of another broker, and announces its URL.
    let mqtt = match extra.contains(&"--mqtt-url") {
        true => 0,
        false => server.announced("MQTT on ").port(),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let health = loop {
        if let Some(health) = get(http, "/v1/health").filter(|(s, _)| *s == 200) {
            break health;
        }
        if let Some(status) = server.0.try_wait().unwrap() {
            panic!("kaiabc run exited ({status}): {}", server.finish());
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for the health endpoint: {}",
            server.stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(health.1["status"], "healthy");
    (server, http, mqtt)
}

/// SIGTERM, then the exit status must be 0; returns stderr.
pub fn stop(mut server: Server) -> String {
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
    let stderr = server.finish();
    assert!(status.success(), "exit {status}: {stderr}");
    stderr
}

pub fn csv(lake: &std::path::Path, sql: &str) -> String {
    ok(&[
        "query",
        sql,
        "--lake",
        lake.to_str().unwrap(),
        "--format",
        "csv",
    ])
}

/// Every row of every table of a lake, sorted, as CSV (the `date` partition column included).
pub fn all_rows(lake: &std::path::Path) -> String {
    let mut out = String::new();
    for (table, order) in [
        ("readings", "node_id, timestamp"),
        ("states", "node_id, timestamp"),
        ("rhythms", "node_id, window_end, metric"),
        ("dead_letters", "received_at, source"),
        ("fleet", "snapshot_at, group_by, \"group\""),
        ("alerts", "at, code, node_id, state"),
    ] {
        out += &csv(lake, &format!("SELECT * FROM {table} ORDER BY {order}"));
    }
    out
}

pub fn readings_of(node: &str, seqs: std::ops::RangeInclusive<i64>) -> Vec<(String, String)> {
    seqs.map(|k| {
        let kelvin = 300.0 + 0.7 * k as f64;
        (
            format!("kaiabc/sensors/{node}"),
            reading(node, k, 10 * k as u32, kelvin),
        )
    })
    .collect()
}

/// A runtime for a test's WebSocket clients.
pub fn ws_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

/// A WebSocket client of `http`'s `/v1/ws`, logged in as an observer.
pub async fn ws_observer(http: SocketAddr) -> Ws {
    let url = format!("ws://{http}/v1/ws?token={}", token("observer"));
    tokio_tungstenite::connect_async(url.as_str())
        .await
        .unwrap()
        .0
}

pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The next text message as JSON (pings are skipped); `None` when the server closed.
pub async fn next_json(ws: &mut Ws) -> Option<serde_json::Value> {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    loop {
        let m = tokio::time::timeout(Duration::from_secs(20), ws.next())
            .await
            .expect("no WebSocket message within 20 s")?
            .ok()?;
        match m {
            Message::Text(t) => return Some(serde_json::from_str(t.as_str()).unwrap()),
            Message::Close(_) => return None,
            _ => {}
        }
    }
}

pub async fn send(ws: &mut Ws, v: serde_json::Value) {
    use futures_util::SinkExt;
    ws.send(tokio_tungstenite::tungstenite::Message::text(v.to_string()))
        .await
        .unwrap();
}

/// Reads one HTTP/1.1 answer from a keep-alive connection; its status (the body is read by its
/// `Content-Length` and dropped).
#[allow(dead_code)] // used by the benches only
pub fn read_status(r: &mut BufReader<TcpStream>) -> std::io::Result<u16> {
    let mut line = String::new();
    r.read_line(&mut line)?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
    let mut len = 0usize;
    loop {
        line.clear();
        r.read_line(&mut line)?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some(v) = l.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap_or(0);
        }
    }
    let mut sink = vec![0u8; len];
    r.read_exact(&mut sink)?;
    Ok(status)
}

/// A reading `k` of `node`: every 10 minutes from 2026-01-05, a warming and cooling day.
pub fn reading_k(node: &str, k: i64) -> String {
    let t = chrono::DateTime::parse_from_rfc3339("2026-01-05T00:00:00Z").unwrap()
        + chrono::Duration::minutes(10 * k);
    let kelvin = 298.0 + 4.0 * (k as f64 * std::f64::consts::TAU / 144.0).sin();
    serde_json::json!({
        "node_id": node,
        "seq": k,
        "timestamp": t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "temperature_kelvin": kelvin,
        "humidity_percent": 40.0,
        "sensor_type": "BME280",
    })
    .to_string()
}

/// CPU time (user and system, every thread) of process `pid` so far (`"self"` for this one),
/// from `/proc/<pid>/stat`, in clock ticks of 10 ms (Linux's `USER_HZ`).
pub fn cpu_time(pid: &str) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command's name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let field = |i: usize| -> u64 {
        rest.split_whitespace()
            .nth(i)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    // utime and stime are the 14th and 15th fields; `rest` starts at the 3rd.
    Duration::from_millis(10 * (field(11) + field(12)))
}
