//! The gate in front of the embedded broker: it ties each MQTT login to its node's topics,
//! which rumqttd cannot do (it checks credentials at connect and never again).
//!
//! Nodes connect to the gate, not to rumqttd. The gate reads each client's CONNECT, checks the
//! login itself, and passes the connection on to rumqttd on a loopback port that only accepts
//! the gate's own password, so nobody can go around it. After that it frames every packet the
//! client sends (MQTT 3.1.1) and lets through only what the login may do:
//!
//! - publish to `kaiabc/sensors/{node}` and `kaiabc/nodes/{node}/status`;
//! - subscribe to filters inside `kaiabc/nodes/{node}/`;
//! - leave a Last Will on `kaiabc/nodes/{node}/status`.
//!
//! A node's readings (`kaiabc/sensors/{node}`) do not go through rumqttd at all: the server is
//! their only subscriber (no login may subscribe to another node's topics), so the gate hands
//! them to the server's [`Intake`] itself and acknowledges each one (PUBACK, PUBREC) only once
//! the intake says it is durable (in the write-ahead log, or in Kafka). Acknowledgements go out
//! in the order the publishes came in, as MQTT requires, because the intake reports in that
//! order. That also keeps the second TCP hop and rumqttd's router off every reading's path.
//!
//! Without logins (`--mqtt-anonymous`) the gate still takes every publish under
//! `kaiabc/sensors/`, so that anonymous readings are acknowledged only once durable too; it
//! lets everything else through to rumqttd unchecked.
//!
//! MQTT 3.1.1 cannot refuse a single PUBLISH, so a forbidden one is acknowledged as Mosquitto
//! does with its ACLs, not delivered, and handed on as a refused [`MqttMessage`] for the dead
//! letters: nothing a node sends is lost without a trace. A forbidden SUBSCRIBE is answered
//! with a failure SUBACK. The client id is prefixed with the login inside the broker, so one
//! node cannot take over another's session by using its client id. Bytes from the broker to
//! the client pass through whole packets at a time, so the gate's own answers never land in
//! the middle of one.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use chrono::Utc;
use rumqttc::mqttbytes::v4::{
    ConnAck, ConnectReturnCode, Packet, PubAck, PubComp, PubRec, Publish, SubAck, Subscribe,
    SubscribeReasonCode,
};
use rumqttc::mqttbytes::{check, Error as FrameError, PacketType, Protocol, QoS};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::{Authenticator, Intake, MqttMessage, Taken};
use crate::address_limits::{Connections, FailedAuth, FAILED_PER_MINUTE};

/// The largest packet the gate frames; rumqttd's own limit is a little below.
pub(crate) const MAX_PACKET: usize = 260 * 1024;

/// How long a new connection has to send its CONNECT.
const CONNECT_WAIT: Duration = Duration::from_secs(10);

/// Publishes of one connection handed to the intake and not yet durable: beyond this the gate
/// stops reading from the client (TCP pushes back on it) until the intake catches up.
const IN_FLIGHT: usize = 1024;

/// What a client may do: a logged-in node its own topics only; without logins, anything.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Login {
    /// A node logged in with its key.
    Node(Grant),
    /// Logins are off (`--mqtt-anonymous`).
    Anonymous,
}

/// What the gate does with a PUBLISH.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    /// A reading: to the server's intake, acknowledged once durable.
    Take,
    /// Not allowed: acknowledged, kept from the broker, handed on for the dead letters.
    Refuse(String),
    /// To rumqttd.
    Pass,
}

impl Login {
    fn name(&self) -> &str {
        match self {
            Self::Node(g) => &g.node,
            Self::Anonymous => "anonymous",
        }
    }

    fn route(&self, topic: &[u8]) -> Route {
        match self {
            Self::Node(g) if topic == g.sensors.as_bytes() => Route::Take,
            Self::Node(g) if g.may_publish(topic) => Route::Pass,
            Self::Node(g) => Route::Refuse(format!(
                "the MQTT client logged in as {:?} may not publish to {:?}",
                g.node,
                String::from_utf8_lossy(topic)
            )),
            Self::Anonymous if topic.starts_with(b"kaiabc/sensors/") => Route::Take,
            Self::Anonymous => Route::Pass,
        }
    }

    fn may_subscribe(&self, filter: &str) -> bool {
        match self {
            Self::Node(g) => g.may_subscribe(filter),
            Self::Anonymous => true,
        }
    }

    fn may_leave_will(&self, topic: &[u8]) -> bool {
        match self {
            Self::Node(g) => g.may_publish(topic),
            Self::Anonymous => true,
        }
    }
}

/// What a logged-in node may do: its own topics only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Grant {
    /// The node (the MQTT username).
    node: String,
    /// `kaiabc/sensors/{node}`.
    sensors: String,
    /// `kaiabc/nodes/{node}/status`.
    status: String,
    /// `kaiabc/nodes/{node}/`.
    own: String,
    /// `kaiabc/nodes/{node}`, which `kaiabc/nodes/{node}/#` also matches.
    own_root: String,
}

impl Grant {
    /// The grant of a node logged in as `node`.
    pub(crate) fn node(node: &str) -> Self {
        Self {
            node: node.to_string(),
            sensors: format!("kaiabc/sensors/{node}"),
            status: format!("kaiabc/nodes/{node}/status"),
            own: format!("kaiabc/nodes/{node}/"),
            own_root: format!("kaiabc/nodes/{node}"),
        }
    }

    /// Whether a PUBLISH (or a Last Will) to `topic` is allowed.
    pub(crate) fn may_publish(&self, topic: &[u8]) -> bool {
        topic == self.sensors.as_bytes() || topic == self.status.as_bytes()
    }

    /// Whether a subscription to `filter` is allowed: every topic it can match must be the
    /// node's own, so its first three levels must be literal and name the node.
    pub(crate) fn may_subscribe(&self, filter: &str) -> bool {
        filter == self.own_root
            || filter
                .strip_prefix(self.own.as_str())
                .is_some_and(|rest| !rest.is_empty())
    }
}

/// The gate's settings.
pub(crate) struct Gate {
    /// Checks logins; `None`: anyone may connect and do anything.
    pub auth: Option<Authenticator>,
    /// rumqttd's loopback listener.
    pub broker: SocketAddr,
    /// The password rumqttd accepts: the gate's alone.
    pub secret: String,
    /// Where readings and refused publishes go.
    pub intake: Arc<dyn Intake>,
    /// Logins checked at once. A key's first check is an argon2 hash (tens of milliseconds,
    /// 19 MiB): a thousand nodes reconnecting together must queue, not take every core and
    /// gigabytes at once.
    pub checking: tokio::sync::Semaphore,
    /// Connections open at once (`BrokerOptions::max_connections`).
    pub connections: Arc<tokio::sync::Semaphore>,
    /// Connections open at once per client address.
    pub per_address: Arc<Connections>,
    /// Failed logins per client address.
    pub failed_logins: Arc<FailedAuth>,
    /// Readings a connection may publish a second (`BrokerOptions::readings_per_second`).
    pub readings_per_second: u32,
}

/// A connection's pace: a token bucket of readings that holds a second's worth.
#[derive(Debug)]
struct Pace {
    per_second: f64,
    tokens: f64,
    at: Instant,
}

impl Pace {
    /// A pace of `per_second` readings; `None` when unpaced (0).
    fn new(per_second: u32, now: Instant) -> Option<Self> {
        (per_second > 0).then(|| Self {
            per_second: f64::from(per_second),
            tokens: f64::from(per_second),
            at: now,
        })
    }

    /// Takes one reading; how long to wait before handling it (zero when it is within pace).
    fn take(&mut self, now: Instant) -> Duration {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = now;
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.per_second) - 1.0;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.per_second)
        }
    }
}

/// Why a connection ended early.
#[derive(Debug, thiserror::Error)]
enum GateError {
    #[error("no CONNECT within {0:?}")]
    NoConnect(Duration),
    #[error("the first packet was not a CONNECT")]
    NotConnect,
    #[error("a second CONNECT")]
    SecondConnect,
    #[error("malformed packet: {0}")]
    Frame(#[from] FrameError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("refused at connect: {0}")]
    Refused(String),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("the server could not store a message; the client is to resend it")]
    NotStored,
}

/// A client's stream: plain TCP, or TLS over it.
pub(crate) trait ClientStream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> ClientStream for T {}

/// Accepts clients on `listener` until the process ends; with `tls`, each connection is a TLS
/// session (handshake within [`CONNECT_WAIT`]) and then served exactly as a plain one, under
/// the same logins, limits and intake.
pub(crate) async fn run(
    listener: TcpListener,
    gate: Arc<Gate>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    let ids = Arc::new(AtomicU64::new(0));
    loop {
        let (client, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of descriptors and the like: keep serving the others.
                tracing::warn!(error = %e, "MQTT accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Beyond the limit a connection is closed at once: it would hold a descriptor, and
        // MQTT has no answer before the CONNECT.
        let Ok(permit) = Arc::clone(&gate.connections).try_acquire_owned() else {
            tracing::debug!(%peer, "MQTT connection refused: too many open");
            drop(client);
            continue;
        };
        let Some(place) = gate.per_address.take(peer.ip()) else {
            tracing::debug!(%peer, "MQTT connection refused: too many open from this address");
            drop(client);
            continue;
        };
        let gate = Arc::clone(&gate);
        let ids = Arc::clone(&ids);
        let tls = tls.clone();
        tokio::spawn(async move {
            let served = match (client.set_nodelay(true), tls) {
                (Err(e), _) => Err(e.into()),
                (Ok(()), None) => serve(&gate, client, peer, &ids).await,
                (Ok(()), Some(tls)) => {
                    match tokio::time::timeout(CONNECT_WAIT, tls.accept(client)).await {
                        Ok(Ok(session)) => serve(&gate, session, peer, &ids).await,
                        Ok(Err(e)) => Err(GateError::Tls(e.to_string())),
                        Err(_) => Err(GateError::Tls(format!(
                            "no TLS handshake within {CONNECT_WAIT:?}"
                        ))),
                    }
                }
            };
            if let Err(e) = served {
                tracing::debug!(%peer, error = %e, "MQTT connection closed");
            }
            drop((permit, place));
        });
    }
}

/// Reads from `stream` until `buf` holds one whole packet; its header.
async fn read_frame<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
) -> Result<usize, GateError> {
    loop {
        match check(buf.iter(), MAX_PACKET) {
            Ok(h) => return Ok(h.frame_length()),
            Err(FrameError::InsufficientBytes(_)) => {
                if stream.read_buf(buf).await? == 0 {
                    return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// What MQTT 3.1.1 forbids in a CONNECT's flags (the parser takes them as they come), if
/// anything: the server must then close the connection (§3.1.4). `frame` starts with the
/// packet; anything that is not a CONNECT is left to the parser.
fn connect_violation(frame: &[u8]) -> Option<&'static str> {
    if frame.first().is_none_or(|b| b >> 4 != 1) {
        return None;
    }
    // The remaining length: 1–4 bytes, each with a continuation bit.
    let mut i = 1;
    while frame.get(i).is_some_and(|b| b & 0x80 != 0) {
        i += 1;
    }
    i += 1;
    // The protocol name (length-prefixed), the level, then the flags.
    let name = frame.get(i..i + 2)?;
    let flags = *frame.get(i + 2 + usize::from(u16::from_be_bytes([name[0], name[1]])) + 1)?;
    let will = flags & 0x04 != 0;
    let will_qos = (flags >> 3) & 0x03;
    if flags & 0x01 != 0 {
        Some("the reserved flag is set")
    } else if !will && (will_qos != 0 || flags & 0x20 != 0) {
        Some("a Will QoS or Will Retain without a Will")
    } else if will_qos == 3 {
        Some("Will QoS 3")
    } else if flags & 0x80 == 0 && flags & 0x40 != 0 {
        Some("a password without a user name")
    } else {
        None
    }
}

/// Writes a CONNACK refusing the client and ends the connection.
async fn refuse<S: ClientStream>(
    client: &mut S,
    code: ConnectReturnCode,
    why: String,
) -> GateError {
    let mut out = BytesMut::new();
    if ConnAck::new(code, false).write(&mut out).is_ok() {
        let _ = client.write_all(&out).await;
    }
    let _ = client.shutdown().await;
    GateError::Refused(why)
}

async fn serve<S: ClientStream>(
    gate: &Gate,
    mut client: S,
    peer: SocketAddr,
    ids: &AtomicU64,
) -> Result<(), GateError> {
    let mut inbuf = BytesMut::with_capacity(4096);
    tokio::time::timeout(CONNECT_WAIT, read_frame(&mut client, &mut inbuf))
        .await
        .map_err(|_| GateError::NoConnect(CONNECT_WAIT))??;
    if let Some(why) = connect_violation(&inbuf) {
        // MQTT 3.1.1 §3.1.2.3, §3.1.2.6, §3.1.2.9: close without a CONNACK.
        let _ = client.shutdown().await;
        return Err(GateError::Refused(format!("malformed CONNECT: {why}")));
    }
    let mut connect = match Packet::read(&mut inbuf, MAX_PACKET)? {
        Packet::Connect(c) => c,
        _ => return Err(GateError::NotConnect),
    };
    if connect.protocol != Protocol::V4 {
        let why = "only MQTT 3.1.1 is served".to_string();
        return Err(refuse(&mut client, ConnectReturnCode::RefusedProtocolVersion, why).await);
    }
    let login = match (connect.login.take(), &gate.auth) {
        (_, None) => Login::Anonymous,
        (Some(login), Some(_)) if gate.failed_logins.blocked(peer.ip()).is_some() => {
            let why = format!(
                "{:?}: more than {FAILED_PER_MINUTE} failed logins from {} this minute",
                login.username,
                peer.ip()
            );
            return Err(refuse(&mut client, ConnectReturnCode::NotAuthorized, why).await);
        }
        (Some(login), Some(auth)) => {
            let check = Arc::clone(auth);
            let user = login.username.clone();
            // The check hashes (argon2): off the gate's thread, which forwards everyone's
            // packets.
            let ok = match gate.checking.acquire().await {
                Ok(_permit) => {
                    tokio::task::spawn_blocking(move || check(&login.username, &login.password))
                        .await
                        .unwrap_or(false)
                }
                Err(_) => false,
            };
            if !ok {
                gate.failed_logins.failed(peer.ip());
                let why = format!("bad credentials for {user:?}");
                return Err(refuse(&mut client, ConnectReturnCode::NotAuthorized, why).await);
            }
            Login::Node(Grant::node(&user))
        }
        (None, Some(_)) => {
            let why = "no login".to_string();
            return Err(refuse(&mut client, ConnectReturnCode::NotAuthorized, why).await);
        }
    };
    if let Some(will) = &connect.last_will {
        if !login.may_leave_will(will.topic.as_bytes()) {
            let why = format!("a Last Will on {:?}", will.topic);
            return Err(refuse(&mut client, ConnectReturnCode::NotAuthorized, why).await);
        }
    }
    if let Login::Node(grant) = &login {
        let user = &grant.node;
        connect.client_id = if connect.client_id.is_empty() {
            if !connect.clean_session {
                let why = "an empty client id needs a clean session".to_string();
                return Err(refuse(&mut client, ConnectReturnCode::BadClientId, why).await);
            }
            // MQTT 3.1.1 §3.1.3.1: the server assigns one.
            format!("{user}:~{}", ids.fetch_add(1, Ordering::Relaxed))
        } else {
            format!("{user}:{}", connect.client_id)
        };
    } else if connect.client_id.is_empty() {
        connect.client_id = format!("anonymous:~{}", ids.fetch_add(1, Ordering::Relaxed));
    }
    connect.set_login(login.name(), &gate.secret);
    let mut broker = connect_broker(gate.broker).await?;
    broker.set_nodelay(true)?;
    let mut first = BytesMut::new();
    connect.write(&mut first)?;
    broker.write_all(&first).await?;
    // The broker's CONNACK goes to the client before anything else (MQTT 3.1.1 §3.2): the
    // gate's own answers to packets the client sent right behind its CONNECT must wait for it.
    let mut from_broker = BytesMut::with_capacity(8192);
    let len = read_frame(&mut broker, &mut from_broker).await?;
    let connack = from_broker.split_to(len);
    client.write_all(&connack).await?;
    if connack.get(3).is_some_and(|&code| code != 0) {
        return Err(GateError::Refused(format!(
            "the broker answered CONNACK {}",
            connack[3]
        )));
    }

    let (client_r, mut client_w) = tokio::io::split(client);
    let (broker_r, broker_w) = broker.into_split();
    let (answers, answers_rx) = mpsc::unbounded_channel::<BytesMut>();
    let up = upstream(gate, &login, inbuf, client_r, broker_w, answers);
    let down = downstream(broker_r, &mut client_w, answers_rx, from_broker);
    // Whichever side ends first ends the connection: the broker sees the client go (and sends
    // its Last Will), the client sees the broker go.
    let ended = tokio::select! {
        r = up => r,
        r = down => r,
    };
    // An orderly end for the client (a FIN; with TLS a close_notify first) before the socket
    // closes: closed with unread input, it would get a reset instead, and lose what was
    // already sent to it.
    let _ = tokio::time::timeout(Duration::from_secs(1), client_w.shutdown()).await;
    ended
}

/// Connects to rumqttd. It binds its listener on a thread of its own, so right after start
/// (a node that connects at once) the port may not take connections yet: retried briefly.
async fn connect_broker(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let mut tries = 0;
    loop {
        match TcpStream::connect(addr).await {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused && tries < 200 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            other => return other,
        }
    }
}

/// The length of a complete frame's fixed header (byte 1 and the remaining length).
fn header_len(frame: &[u8]) -> usize {
    1 + frame[1..]
        .iter()
        .take(4)
        .position(|b| b & 0x80 == 0)
        .map_or(4, |i| i + 1)
}

/// The topic of a complete PUBLISH frame, without copying it.
fn publish_topic(frame: &[u8]) -> Option<&[u8]> {
    let rest = &frame[header_len(frame)..];
    let len = u16::from_be_bytes([*rest.first()?, *rest.get(1)?]) as usize;
    rest.get(2..2 + len)
}

/// The packet id of a complete PUBREL frame.
fn pubrel_pkid(frame: &[u8]) -> Option<u16> {
    let rest = &frame[header_len(frame)..];
    Some(u16::from_be_bytes([*rest.first()?, *rest.get(1)?]))
}

/// Client → broker: frames every packet and lets through what the login allows; readings go
/// to the server's intake.
async fn upstream(
    gate: &Gate,
    login: &Login,
    mut inbuf: BytesMut,
    mut client: tokio::io::ReadHalf<impl ClientStream>,
    mut broker: tokio::net::tcp::OwnedWriteHalf,
    answers: mpsc::UnboundedSender<BytesMut>,
) -> Result<(), GateError> {
    let mut out = BytesMut::with_capacity(4096);
    // QoS 2 publishes the gate took itself: their PUBREL is answered here, not by the broker,
    // and a resent copy before it (DUP) is acknowledged again but not handed on twice.
    let mut held_qos2: HashSet<u16> = HashSet::new();
    let in_flight = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
    let mut refusals = Refusals::default();
    let mut pace = Pace::new(gate.readings_per_second, Instant::now());
    let mut paced = false;
    loop {
        loop {
            let h = match check(inbuf.iter(), MAX_PACKET) {
                Ok(h) => h,
                Err(FrameError::InsufficientBytes(_)) => break,
                Err(e) => return Err(e.into()),
            };
            let frame = inbuf.split_to(h.frame_length());
            match h.packet_type()? {
                PacketType::Publish => {
                    let route = match publish_topic(&frame) {
                        Some(t) => login.route(t),
                        None => Route::Refuse("a PUBLISH without a readable topic".into()),
                    };
                    let refused = match route {
                        Route::Pass => {
                            out.extend_from_slice(&frame);
                            continue;
                        }
                        Route::Take => None,
                        Route::Refuse(why) => {
                            match refusals.note(login.name(), &why)? {
                                Sampled::Keep => Some(why),
                                // Acknowledged as the others, but neither logged nor kept.
                                Sampled::Drop => {
                                    acknowledge_only(&frame, &answers, &mut held_qos2)?;
                                    continue;
                                }
                            }
                        }
                    };
                    if let Some(wait) = pace.as_mut().map(|p| p.take(Instant::now())) {
                        if !wait.is_zero() {
                            if !paced {
                                paced = true;
                                tracing::info!(
                                    login = login.name(),
                                    per_second = gate.readings_per_second,
                                    "a client publishes faster than its pace: its readings are taken more slowly"
                                );
                            }
                            // What is let through so far goes first; the client waits on
                            // TCP's flow control meanwhile.
                            if !out.is_empty() {
                                broker.write_all(&out).await?;
                                out.clear();
                            }
                            tokio::time::sleep(wait).await;
                        }
                    }
                    // Bound what this connection has waiting for the disk.
                    let permit = Arc::clone(&in_flight)
                        .acquire_owned()
                        .await
                        .map_err(|_| GateError::NotStored)?;
                    let p = Taking {
                        login,
                        refused,
                        answers: &answers,
                        permit,
                    };
                    take_publish(gate, p, frame, &mut held_qos2)?;
                }
                PacketType::PubRel => match pubrel_pkid(&frame) {
                    Some(pkid) if held_qos2.remove(&pkid) => {
                        let mut a = BytesMut::new();
                        PubComp::new(pkid).write(&mut a)?;
                        let _ = answers.send(a);
                    }
                    _ => out.extend_from_slice(&frame),
                },
                PacketType::Subscribe => {
                    let Packet::Subscribe(s) = Packet::read(&mut frame.clone(), MAX_PACKET)? else {
                        return Err(FrameError::MalformedPacket.into());
                    };
                    if s.filters.iter().all(|f| login.may_subscribe(&f.path)) {
                        out.extend_from_slice(&frame);
                    } else {
                        refuse_subscribe(login, &s, &answers)?;
                    }
                }
                PacketType::Connect => return Err(GateError::SecondConnect),
                _ => out.extend_from_slice(&frame),
            }
        }
        if !out.is_empty() {
            broker.write_all(&out).await?;
            out.clear();
        }
        if client.read_buf(&mut inbuf).await? == 0 {
            let _ = broker.shutdown().await;
            return Ok(());
        }
    }
}

/// Refused publishes a connection may send before they are only counted: the first ones are
/// logged and kept as dead letters (one line and one row each), the rest are not. A client
/// flooding refused publishes wrote 1.43 M log lines and 1.43 M dead letters in 5 s.
const REFUSALS_KEPT: u64 = 10;

/// Refused publishes a second beyond which the connection is closed.
const REFUSALS_PER_SECOND: u32 = 100;

/// How often the count of refused publishes not kept is logged.
const REFUSALS_LOGGED_EVERY: Duration = Duration::from_secs(10);

/// Whether a refused publish is kept (logged, dead-lettered) or only counted.
enum Sampled {
    Keep,
    Drop,
}

/// A connection's refused publishes.
struct Refusals {
    total: u64,
    second: (std::time::Instant, u32),
    logged: std::time::Instant,
}

impl Default for Refusals {
    fn default() -> Self {
        let now = std::time::Instant::now();
        Self {
            total: 0,
            second: (now, 0),
            logged: now,
        }
    }
}

impl Refusals {
    /// Counts one; an error closes the connection (too many a second).
    fn note(&mut self, login: &str, why: &str) -> Result<Sampled, GateError> {
        let now = std::time::Instant::now();
        self.total += 1;
        if now.duration_since(self.second.0) >= Duration::from_secs(1) {
            self.second = (now, 0);
        }
        self.second.1 += 1;
        if self.second.1 > REFUSALS_PER_SECOND {
            tracing::warn!(login, refused = self.total, "closing an MQTT connection: more than {REFUSALS_PER_SECOND} refused publishes a second");
            return Err(GateError::Refused(format!(
                "more than {REFUSALS_PER_SECOND} refused publishes a second"
            )));
        }
        if self.total <= REFUSALS_KEPT {
            return Ok(Sampled::Keep);
        }
        if now.duration_since(self.logged) >= REFUSALS_LOGGED_EVERY {
            tracing::warn!(login, refused = self.total, last = why, "refused MQTT publishes on one connection (only the first {REFUSALS_KEPT} are kept as dead letters)");
            self.logged = now;
        }
        Ok(Sampled::Drop)
    }
}

/// Acknowledges a refused PUBLISH that is not kept (QoS 1: PUBACK, QoS 2: PUBREC).
fn acknowledge_only(
    frame: &BytesMut,
    answers: &mpsc::UnboundedSender<BytesMut>,
    held_qos2: &mut HashSet<u16>,
) -> Result<(), GateError> {
    let Packet::Publish(p) = Packet::read(&mut frame.clone(), MAX_PACKET)? else {
        return Err(FrameError::MalformedPacket.into());
    };
    let mut ack = BytesMut::new();
    match p.qos {
        QoS::AtMostOnce => return Ok(()),
        QoS::AtLeastOnce => PubAck::new(p.pkid).write(&mut ack)?,
        QoS::ExactlyOnce => {
            // Its PUBREL is answered here too.
            held_qos2.insert(p.pkid);
            PubRec::new(p.pkid).write(&mut ack)?
        }
    };
    let _ = answers.send(ack);
    Ok(())
}

/// A PUBLISH the gate takes, and how to answer it.
struct Taking<'a> {
    login: &'a Login,
    /// Why it is refused (it goes to the dead letters), or `None` for a reading.
    refused: Option<String>,
    answers: &'a mpsc::UnboundedSender<BytesMut>,
    /// Held until the intake has answered.
    permit: tokio::sync::OwnedSemaphorePermit,
}

/// Takes a PUBLISH the broker must not see: the node's own reading or a forbidden publish
/// (acknowledged as Mosquitto does with its ACLs, and handed on for the dead letters). Either
/// way its acknowledgement goes out only once the intake has it on disk; if the intake cannot
/// store it, the connection is closed unacknowledged, so the client sends it again.
fn take_publish(
    gate: &Gate,
    t: Taking<'_>,
    frame: BytesMut,
    held_qos2: &mut HashSet<u16>,
) -> Result<(), GateError> {
    // The frame is not needed afterwards: decoded in place, not copied first.
    let mut frame = frame;
    let Packet::Publish(p) = Packet::read(&mut frame, MAX_PACKET)? else {
        return Err(FrameError::MalformedPacket.into());
    };
    let Publish {
        topic,
        qos,
        pkid,
        payload,
        dup,
        ..
    } = p;
    let mut ack = BytesMut::new();
    match qos {
        QoS::AtMostOnce => 0,
        QoS::AtLeastOnce => PubAck::new(pkid).write(&mut ack)?,
        QoS::ExactlyOnce => PubRec::new(pkid).write(&mut ack)?,
    };
    let answers = t.answers.clone();
    let permit = t.permit;
    let taken: Taken = Box::new(move |stored: bool| {
        drop(permit);
        if !stored {
            // An empty buffer tells the writing side to close the connection.
            let _ = answers.send(BytesMut::new());
        } else if !ack.is_empty() {
            let _ = answers.send(ack);
        }
    });
    // A QoS 2 resend of a publish already taken: acknowledged again (once the first copy is
    // durable), handed on once.
    if qos == QoS::ExactlyOnce && dup && held_qos2.contains(&pkid) {
        gate.intake.after_taken(taken);
        return Ok(());
    }
    if qos == QoS::ExactlyOnce {
        held_qos2.insert(pkid);
    }
    if let Some(why) = &t.refused {
        let login = t.login.name();
        tracing::warn!(login, %topic, %why, "refused an MQTT publish");
    }
    gate.intake.take(
        MqttMessage {
            refused: t.refused,
            topic,
            payload: payload.to_vec(),
            received_at: Utc::now(),
        },
        taken,
    );
    Ok(())
}

/// Answers a SUBSCRIBE with a forbidden filter: every filter of it fails.
fn refuse_subscribe(
    login: &Login,
    s: &Subscribe,
    answers: &mpsc::UnboundedSender<BytesMut>,
) -> Result<(), GateError> {
    let filters: Vec<&str> = s.filters.iter().map(|f| f.path.as_str()).collect();
    tracing::warn!(
        login = login.name(),
        ?filters,
        "refused an MQTT subscription outside the node's own topics"
    );
    let mut a = BytesMut::new();
    SubAck::new(s.pkid, vec![SubscribeReasonCode::Failure; s.filters.len()]).write(&mut a)?;
    let _ = answers.send(a);
    Ok(())
}

/// Broker → client: whole packets, with the gate's own answers between them.
async fn downstream(
    mut broker: tokio::net::tcp::OwnedReadHalf,
    client: &mut tokio::io::WriteHalf<impl ClientStream>,
    mut answers: mpsc::UnboundedReceiver<BytesMut>,
    mut buf: BytesMut,
) -> Result<(), GateError> {
    // Whole packets that came in behind the CONNACK go out at once.
    let whole = complete_prefix(&buf)?;
    if whole > 0 {
        let chunk = buf.split_to(whole);
        client.write_all(&chunk).await?;
    }
    loop {
        tokio::select! {
            n = broker.read_buf(&mut buf) => {
                if n? == 0 {
                    let _ = client.shutdown().await;
                    return Ok(());
                }
                let whole = complete_prefix(&buf)?;
                if whole > 0 {
                    let chunk = buf.split_to(whole);
                    client.write_all(&chunk).await?;
                }
            }
            Some(a) = answers.recv() => {
                if a.is_empty() {
                    let _ = client.shutdown().await;
                    return Err(GateError::NotStored);
                }
                client.write_all(&a).await?
            }
        }
    }
}

/// How many leading bytes of `buf` are whole packets.
fn complete_prefix(buf: &[u8]) -> Result<usize, FrameError> {
    let mut at = 0;
    loop {
        match check(buf[at..].iter(), MAX_PACKET) {
            Ok(h) => at += h.frame_length(),
            Err(FrameError::InsufficientBytes(_)) => return Ok(at),
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pace_lets_a_second_through_at_once_then_spaces_readings() {
        let t0 = Instant::now();
        let mut p = Pace::new(10, t0).unwrap();
        for _ in 0..10 {
            assert_eq!(p.take(t0), Duration::ZERO, "a second's worth at once");
        }
        assert_eq!(p.take(t0), Duration::from_millis(100));
        // Waiting out what it was told, the next one waits one interval more.
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(p.take(t1), Duration::from_millis(100));
        // After a quiet spell the bucket is full again, and no fuller.
        let t2 = t1 + Duration::from_secs(60);
        for _ in 0..10 {
            assert_eq!(p.take(t2), Duration::ZERO);
        }
        assert!(p.take(t2) > Duration::ZERO);
        assert!(Pace::new(0, t0).is_none(), "0 means unpaced");
    }

    #[test]
    fn a_node_publishes_only_to_its_own_topics() {
        let g = Grant::node("n1");
        assert!(g.may_publish(b"kaiabc/sensors/n1"));
        assert!(g.may_publish(b"kaiabc/nodes/n1/status"));
        for t in [
            "kaiabc/sensors/n2",
            "kaiabc/sensors/n1/x",
            "kaiabc/sensors/n10",
            "kaiabc/sensors/",
            "kaiabc/nodes/n1/output",
            "kaiabc/nodes/n2/status",
            "other",
        ] {
            assert!(!g.may_publish(t.as_bytes()), "{t}");
        }
    }

    #[test]
    fn a_node_subscribes_only_inside_its_own_subtree() {
        let g = Grant::node("n1");
        for f in [
            "kaiabc/nodes/n1/output",
            "kaiabc/nodes/n1/#",
            "kaiabc/nodes/n1/+",
            "kaiabc/nodes/n1",
        ] {
            assert!(g.may_subscribe(f), "{f}");
        }
        for f in [
            "kaiabc/nodes/n2/output",
            "kaiabc/nodes/+/output",
            "kaiabc/nodes/#",
            "kaiabc/nodes/n10/output",
            "kaiabc/nodes/n1/",
            "kaiabc/sensors/n2",
            "#",
            "+/nodes/n1/output",
        ] {
            assert!(!g.may_subscribe(f), "{f}");
        }
    }

    #[test]
    fn frames_are_read_without_copying_and_partial_ones_wait() {
        let mut buf = BytesMut::new();
        let mut p = Publish::new("kaiabc/sensors/n1", QoS::AtLeastOnce, vec![7u8; 300]);
        p.pkid = 9;
        p.write(&mut buf).unwrap();
        // 300 bytes of payload: a two-byte remaining length.
        assert_eq!(header_len(&buf), 3);
        assert_eq!(publish_topic(&buf), Some(&b"kaiabc/sensors/n1"[..]));
        let whole = buf.len();
        PubAck::new(3).write(&mut buf).unwrap();
        let both = buf.len();
        buf.extend_from_slice(&[0x30, 0x80]); // a PUBLISH whose length is not all here
        assert_eq!(complete_prefix(&buf).unwrap(), both);
        assert_eq!(complete_prefix(&buf[..whole - 1]).unwrap(), 0);
        let mut rel = BytesMut::new();
        rumqttc::mqttbytes::v4::PubRel::new(513)
            .write(&mut rel)
            .unwrap();
        assert_eq!(pubrel_pkid(&rel), Some(513));
    }

    mod live {
        //! The gate in front of a real rumqttd, with real rumqttc clients.

        use std::sync::mpsc::{channel, Receiver};
        use std::sync::Mutex;

        use rumqttc::{AsyncClient, ConnectionError, Event, EventLoop, Incoming, MqttOptions};

        use super::super::super::{start_embedded_broker, BrokerOptions, EmbeddedBroker};
        use super::*;

        const WAIT: Duration = Duration::from_secs(10);

        fn broker() -> (EmbeddedBroker, Receiver<MqttMessage>) {
            let (tx, rx) = channel::<MqttMessage>();
            (broker_with(Arc::new(Mutex::new(tx))), rx)
        }

        fn broker_with(intake: Arc<dyn Intake>) -> EmbeddedBroker {
            broker_paced(intake, 0)
        }

        fn broker_paced(intake: Arc<dyn Intake>, readings_per_second: u32) -> EmbeddedBroker {
            let auth: Authenticator = Arc::new(|u: &str, p: &str| p == format!("key-{u}"));
            start_embedded_broker(
                "127.0.0.1:0".parse().unwrap(),
                intake,
                BrokerOptions {
                    auth: Some(auth),
                    on_status: None,
                    max_connections: 64,
                    readings_per_second,
                    ..BrokerOptions::default()
                },
            )
            .unwrap()
        }

        /// A client that publishes faster than its pace has its readings taken more slowly:
        /// every one is acknowledged and stored, in order, none refused, and the last is
        /// acknowledged no sooner than the pace allows (the pace is a floor on the time, which
        /// no speed of the machine can undercut).
        #[test]
        fn a_fast_publisher_is_paced_and_loses_nothing() {
            use rumqttc::mqttbytes::v4::Connect;
            use std::io::{Read, Write};
            const PACE: u32 = 40;
            const SENT: u16 = 120;
            let (tx, rx) = channel::<MqttMessage>();
            let b = broker_paced(Arc::new(Mutex::new(tx)), PACE);
            let mut sock = std::net::TcpStream::connect(b.addr).unwrap();
            sock.set_read_timeout(Some(WAIT)).unwrap();
            let mut out = BytesMut::new();
            let mut connect = Connect::new("fast");
            connect.set_login("n1", "key-n1");
            connect.write(&mut out).unwrap();
            for pkid in 1..=SENT {
                let mut p = Publish::new("kaiabc/sensors/n1", QoS::AtLeastOnce, pkid.to_string());
                p.pkid = pkid;
                p.write(&mut out).unwrap();
            }
            let sent = Instant::now();
            sock.write_all(&out).unwrap();
            // CONNACK (4 bytes), then a PUBACK (4 bytes) for each publish.
            let mut acks = vec![0u8; 4 + usize::from(SENT) * 4];
            sock.read_exact(&mut acks).unwrap();
            let took = sent.elapsed();
            let pkids: Vec<u16> = acks[4..]
                .chunks(4)
                .map(|a| {
                    assert_eq!(a[0], 0x40, "a PUBACK");
                    u16::from_be_bytes([a[2], a[3]])
                })
                .collect();
            assert_eq!(pkids, (1..=SENT).collect::<Vec<_>>());
            let stored: Vec<String> = (0..SENT)
                .map(|_| String::from_utf8(next(&rx).payload).unwrap())
                .collect();
            let expected: Vec<String> = (1..=SENT).map(|i| i.to_string()).collect();
            assert_eq!(stored, expected, "every reading stored once, in order");
            // A second's worth goes at once; the other 80 at 40 a second.
            let floor = Duration::from_secs_f64(f64::from(SENT - PACE as u16) / f64::from(PACE));
            assert!(
                took >= floor - Duration::from_millis(50),
                "acknowledged in {took:?}: faster than the pace allows ({floor:?})"
            );
        }

        /// An intake that stores slowly, on a thread of its own, in order: as a disk would.
        struct SlowDisk {
            queue: Mutex<std::sync::mpsc::Sender<(Option<MqttMessage>, Taken)>>,
            /// Messages stored so far.
            stored: Arc<std::sync::atomic::AtomicUsize>,
        }

        impl SlowDisk {
            fn start(delay: Duration) -> (Arc<Self>, Receiver<MqttMessage>) {
                let (q, work) = channel::<(Option<MqttMessage>, Taken)>();
                let (tx, rx) = channel();
                let stored = Arc::new(std::sync::atomic::AtomicUsize::new(0));
                let count = Arc::clone(&stored);
                std::thread::spawn(move || {
                    for (m, taken) in work {
                        std::thread::sleep(delay);
                        if let Some(m) = m {
                            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            tx.send(m).unwrap();
                        }
                        taken(true);
                    }
                });
                let disk = Self {
                    queue: Mutex::new(q),
                    stored,
                };
                (Arc::new(disk), rx)
            }
        }

        impl Intake for SlowDisk {
            fn take(&self, msg: MqttMessage, taken: Taken) {
                self.queue.lock().unwrap().send((Some(msg), taken)).unwrap();
            }
            fn after_taken(&self, taken: Taken) {
                self.queue.lock().unwrap().send((None, taken)).unwrap();
            }
        }

        /// Connects and waits for the CONNACK: the client, or the code it was refused with.
        async fn connect(
            addr: SocketAddr,
            id: &str,
            login: Option<(&str, &str)>,
            will: Option<&str>,
        ) -> Result<(AsyncClient, EventLoop), String> {
            let mut o = MqttOptions::new(id, addr.ip().to_string(), addr.port());
            if let Some((u, p)) = login {
                o.set_credentials(u, p);
            }
            if let Some(t) = will {
                o.set_last_will(rumqttc::LastWill::new(t, "offline", QoS::AtLeastOnce, true));
            }
            let (client, mut events) = AsyncClient::new(o, 20);
            loop {
                match tokio::time::timeout(WAIT, events.poll())
                    .await
                    .expect("CONNACK")
                {
                    Ok(Event::Incoming(Incoming::ConnAck(_))) => return Ok((client, events)),
                    Ok(_) => {}
                    Err(ConnectionError::ConnectionRefused(code)) => {
                        return Err(format!("{code:?}"))
                    }
                    Err(e) => return Err(e.to_string()),
                }
            }
        }

        /// Polls until `pick` finds the event it waits for.
        async fn until<R>(
            events: &mut EventLoop,
            mut pick: impl FnMut(&Incoming) -> Option<R>,
        ) -> R {
            loop {
                match tokio::time::timeout(WAIT, events.poll())
                    .await
                    .expect("an event")
                {
                    Ok(Event::Incoming(i)) => {
                        if let Some(r) = pick(&i) {
                            return r;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => panic!("the connection failed: {e}"),
                }
            }
        }

        /// Publishes at QoS 1 and waits for the PUBACK.
        async fn publish_acked(
            c: &AsyncClient,
            events: &mut EventLoop,
            topic: &str,
            payload: &str,
        ) {
            c.publish(topic, QoS::AtLeastOnce, false, payload)
                .await
                .unwrap();
            until(events, |i| matches!(i, Incoming::PubAck(_)).then_some(())).await;
        }

        /// Subscribes and returns the SUBACK's codes.
        async fn subscribe(
            c: &AsyncClient,
            events: &mut EventLoop,
            filter: &str,
        ) -> Vec<SubscribeReasonCode> {
            c.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
            until(events, |i| match i {
                Incoming::SubAck(s) => Some(s.return_codes.clone()),
                _ => None,
            })
            .await
        }

        fn next(rx: &Receiver<MqttMessage>) -> MqttMessage {
            rx.recv_timeout(WAIT).expect("a message from the broker")
        }

        fn runtime() -> tokio::runtime::Runtime {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
        }

        /// Refused publishes are acknowledged but only the first few are kept (logged, handed
        /// on for the dead letters); a flood of them closes the connection.
        #[test]
        fn refused_publishes_are_sampled_and_a_flood_closes_the_connection() {
            use rumqttc::mqttbytes::v4::Connect;
            use std::io::{Read, Write};
            let (b, rx) = broker();
            let mut sock = std::net::TcpStream::connect(b.addr).unwrap();
            sock.set_read_timeout(Some(WAIT)).unwrap();
            let mut out = BytesMut::new();
            let mut connect = Connect::new("flood");
            connect.set_login("n1", "key-n1");
            connect.write(&mut out).unwrap();
            for pkid in 1..=50u16 {
                let mut p = Publish::new("kaiabc/sensors/n2", QoS::AtLeastOnce, "not mine");
                p.pkid = pkid;
                p.write(&mut out).unwrap();
            }
            sock.write_all(&out).unwrap();
            // CONNACK (4 bytes) and 50 PUBACKs (4 bytes each).
            let mut acks = vec![0u8; 4 + 50 * 4];
            sock.read_exact(&mut acks).unwrap();
            let mut kept = 0;
            while rx.recv_timeout(Duration::from_millis(300)).is_ok() {
                kept += 1;
            }
            assert_eq!(
                kept, REFUSALS_KEPT,
                "refused publishes kept as dead letters"
            );
            // More than a hundred in a second: closed.
            let mut flood = BytesMut::new();
            for pkid in 51..=200u16 {
                let mut p = Publish::new("kaiabc/sensors/n2", QoS::AtLeastOnce, "not mine");
                p.pkid = pkid;
                p.write(&mut flood).unwrap();
            }
            let _ = sock.write_all(&flood);
            let mut rest = Vec::new();
            let closed = sock.read_to_end(&mut rest).is_ok();
            assert!(closed, "the connection was closed");
            assert!(
                rest.len() < 150 * 4,
                "not every flooded publish was answered"
            );
        }

        /// A CONNECT whose flags MQTT 3.1.1 forbids (the reserved bit, a Will QoS without a
        /// Will, a password without a user name) ends the connection without a CONNACK; the
        /// same CONNECT with its flags right is accepted.
        #[test]
        fn a_connect_with_forbidden_flags_is_closed() {
            use rumqttc::mqttbytes::v4::Connect;
            use std::io::{Read, Write};
            let (b, _rx) = broker();
            let mut good = BytesMut::new();
            let mut connect = Connect::new("raw");
            connect.set_login("n1", "key-n1");
            connect.write(&mut good).unwrap();
            // The flags byte: after the fixed header (2 bytes here), the name "MQTT" (6) and
            // the level (1).
            let flags_at = 2 + 6 + 1;
            assert_eq!(good[flags_at] & 0xC0, 0xC0, "user name and password set");
            let answer = |bytes: &[u8]| {
                let mut sock = std::net::TcpStream::connect(b.addr).unwrap();
                sock.set_read_timeout(Some(WAIT)).unwrap();
                sock.write_all(bytes).unwrap();
                let mut got = Vec::new();
                let _ = sock.read_to_end(&mut got);
                got
            };
            for (what, set, clear) in [
                ("reserved", 0x01, 0x00),
                ("will qos without will", 0x08, 0x00),
                ("password without user", 0x00, 0x80),
            ] {
                let mut bad = good.to_vec();
                bad[flags_at] = (bad[flags_at] | set) & !clear;
                assert!(answer(&bad).is_empty(), "{what}: answered");
            }
            let mut sock = std::net::TcpStream::connect(b.addr).unwrap();
            sock.set_read_timeout(Some(WAIT)).unwrap();
            sock.write_all(&good).unwrap();
            let mut ack = [0u8; 4];
            sock.read_exact(&mut ack).unwrap();
            assert_eq!(ack, [0x20, 0x02, 0x00, 0x00], "CONNACK accepted");
        }

        /// A QoS 2 reading sent again with DUP before its PUBREL (as after a lost PUBREC) is
        /// acknowledged again but reaches the server once; PUBREL gets PUBCOMP. Raw packets,
        /// because a client library resends only after a reconnect.
        #[test]
        fn a_qos2_resend_reaches_the_server_once() {
            use rumqttc::mqttbytes::v4::{Connect, PubRel};
            use std::io::{Read, Write};
            let (b, rx) = broker();
            let mut sock = std::net::TcpStream::connect(b.addr).unwrap();
            sock.set_read_timeout(Some(WAIT)).unwrap();
            let mut out = BytesMut::new();
            let mut connect = Connect::new("raw");
            connect.set_login("n1", "key-n1");
            connect.write(&mut out).unwrap();
            let mut p = Publish::new("kaiabc/sensors/n1", QoS::ExactlyOnce, "once");
            p.pkid = 7;
            p.write(&mut out).unwrap();
            p.dup = true;
            p.write(&mut out).unwrap();
            sock.write_all(&out).unwrap();
            // CONNACK, PUBREC 7, PUBREC 7.
            let mut inbuf = BytesMut::new();
            let mut got = Vec::new();
            while got.len() < 3 {
                let mut chunk = [0u8; 256];
                let n = sock.read(&mut chunk).unwrap();
                assert!(n > 0, "the gate closed the connection");
                inbuf.extend_from_slice(&chunk[..n]);
                while let Ok(pkt) = Packet::read(&mut inbuf, MAX_PACKET) {
                    got.push(pkt);
                }
            }
            assert!(matches!(got[0], Packet::ConnAck(_)), "{got:?}");
            assert_eq!(got[1], Packet::PubRec(PubRec::new(7)));
            assert_eq!(got[2], Packet::PubRec(PubRec::new(7)));
            let mut rel = BytesMut::new();
            PubRel::new(7).write(&mut rel).unwrap();
            sock.write_all(&rel).unwrap();
            let mut comp = [0u8; 4];
            sock.read_exact(&mut comp).unwrap();
            assert_eq!(
                Packet::read(&mut BytesMut::from(&comp[..]), MAX_PACKET).unwrap(),
                Packet::PubComp(PubComp::new(7))
            );
            assert_eq!(next(&rx).payload, b"once");
            assert!(
                rx.recv_timeout(Duration::from_millis(300)).is_err(),
                "handed on twice"
            );
        }

        /// The gate hands readings to the server's intake itself and acknowledges each only
        /// once the intake has stored it: with a slow disk nothing is dropped or reordered,
        /// every PUBACK follows its storing, and a QoS 2 reading arrives once.
        #[test]
        fn readings_are_acknowledged_once_stored_and_arrive_once_in_order() {
            let (disk, rx) = SlowDisk::start(Duration::from_micros(300));
            let stored = Arc::clone(&disk.stored);
            let b = broker_with(disk);
            const N: usize = 200;
            let reader = std::thread::spawn(move || {
                let mut got = Vec::new();
                while got.len() < N + 1 {
                    let m = next(&rx);
                    assert_eq!((m.topic.as_str(), m.refused), ("kaiabc/sensors/n1", None));
                    got.push(String::from_utf8(m.payload).unwrap());
                }
                // Nothing more: the QoS 2 reading was not handed on twice.
                assert!(rx.recv_timeout(Duration::from_millis(300)).is_err());
                got
            });
            runtime().block_on(async {
                let (a, mut ae) = connect(b.addr, "n1", Some(("n1", "key-n1")), None)
                    .await
                    .unwrap();
                a.publish("kaiabc/sensors/n1", QoS::ExactlyOnce, false, "q2")
                    .await
                    .unwrap();
                until(&mut ae, |i| matches!(i, Incoming::PubComp(_)).then_some(())).await;
                // Published from a task of its own: the client's queue is short and only the
                // event loop polled below drains it.
                tokio::spawn(async move {
                    for i in 0..N {
                        a.publish("kaiabc/sensors/n1", QoS::AtLeastOnce, false, i.to_string())
                            .await
                            .unwrap();
                    }
                });
                let mut acks = 0;
                while acks < N {
                    until(&mut ae, |i| matches!(i, Incoming::PubAck(_)).then_some(())).await;
                    acks += 1;
                    // The q2 reading and the `acks` readings before this PUBACK are stored.
                    let n = stored.load(std::sync::atomic::Ordering::SeqCst);
                    assert!(n > acks, "PUBACK {acks} came when {n} were stored");
                }
            });
            let got = reader.join().unwrap();
            let want: Vec<String> = std::iter::once("q2".to_string())
                .chain((0..N).map(|i| i.to_string()))
                .collect();
            assert_eq!(got, want);
        }

        #[test]
        fn a_login_is_held_to_its_own_topics() {
            let (b, rx) = broker();
            runtime().block_on(async {
                let (a, mut ae) = connect(b.addr, "shared", Some(("n1", "key-n1")), None)
                    .await
                    .unwrap();
                // Its own topic: delivered.
                publish_acked(&a, &mut ae, "kaiabc/sensors/n1", "mine").await;
                let m = next(&rx);
                assert_eq!(
                    (m.topic.as_str(), m.refused.as_deref()),
                    ("kaiabc/sensors/n1", None)
                );
                assert_eq!(m.payload, b"mine");

                // Another node's topic, at each QoS: acknowledged, never delivered, refused.
                publish_acked(&a, &mut ae, "kaiabc/sensors/n2", "spoof1").await;
                a.publish("kaiabc/sensors/n2", QoS::ExactlyOnce, false, "spoof2")
                    .await
                    .unwrap();
                // PUBREC from the gate, then rumqttc's PUBREL, then the gate's PUBCOMP.
                until(&mut ae, |i| matches!(i, Incoming::PubComp(_)).then_some(())).await;
                a.publish("kaiabc/nodes/n1/output", QoS::AtMostOnce, false, "spoof0")
                    .await
                    .unwrap();
                // A QoS 1 publish behind the QoS 0 one: once it is acknowledged, both were sent.
                publish_acked(&a, &mut ae, "kaiabc/sensors/n1", "marker").await;
                let mut refused = Vec::new();
                let mut delivered = Vec::new();
                for _ in 0..4 {
                    let m = next(&rx);
                    let payload = String::from_utf8(m.payload).unwrap();
                    match m.refused {
                        Some(why) => {
                            assert!(why.contains("\"n1\"") && why.contains(&m.topic), "{why}");
                            refused.push((m.topic, payload));
                        }
                        None => delivered.push((m.topic, payload)),
                    }
                }
                assert_eq!(
                    delivered,
                    [("kaiabc/sensors/n1".to_string(), "marker".to_string())]
                );
                assert_eq!(
                    refused,
                    [
                        ("kaiabc/sensors/n2".to_string(), "spoof1".to_string()),
                        ("kaiabc/sensors/n2".into(), "spoof2".into()),
                        ("kaiabc/nodes/n1/output".into(), "spoof0".into()),
                    ]
                );

                // Subscriptions: its own output, yes; another node's, no.
                assert_eq!(
                    subscribe(&a, &mut ae, "kaiabc/nodes/n2/output").await,
                    [SubscribeReasonCode::Failure]
                );
                assert_eq!(
                    subscribe(&a, &mut ae, "kaiabc/nodes/n1/output").await,
                    [SubscribeReasonCode::Success(QoS::AtLeastOnce)]
                );

                // Another node with the same client id does not take over n1's session: the
                // ids are the logins' own inside the broker.
                let (_c, mut ce) = connect(b.addr, "shared", Some(("n2", "key-n2")), None)
                    .await
                    .unwrap();
                tokio::spawn(async move { while ce.poll().await.is_ok() {} });
                tokio::time::sleep(Duration::from_millis(200)).await;
                b.output
                    .publish_retained("kaiabc/nodes/n1/output", b"duty".to_vec())
                    .unwrap();
                let got = until(&mut ae, |i| match i {
                    Incoming::Publish(p) => Some((p.topic.clone(), p.payload.to_vec())),
                    _ => None,
                })
                .await;
                assert_eq!(
                    got,
                    ("kaiabc/nodes/n1/output".to_string(), b"duty".to_vec())
                );
                publish_acked(&a, &mut ae, "kaiabc/sensors/n1", "still here").await;
                assert_eq!(next(&rx).payload, b"still here");
            });
        }

        /// An address that failed more than its share of logins this minute is refused
        /// without a check, even with the right key, until the minute is over.
        #[test]
        fn an_address_with_too_many_failed_logins_is_refused_without_a_check() {
            let (b, _rx) = broker();
            runtime().block_on(async {
                let refused =
                    |r: Result<(AsyncClient, EventLoop), String>| r.map(|_| ()).unwrap_err();
                let good = connect(b.addr, "ok", Some(("n1", "key-n1")), None).await;
                assert!(good.is_ok(), "a right login passes first");
                for i in 0..FAILED_PER_MINUTE {
                    let bad = connect(b.addr, &format!("b{i}"), Some(("n1", "wrong")), None).await;
                    assert_eq!(refused(bad), "NotAuthorized");
                }
                let blocked = connect(b.addr, "late", Some(("n1", "key-n1")), None).await;
                assert_eq!(refused(blocked), "NotAuthorized");
            });
        }

        #[test]
        fn logins_are_checked_by_the_gate_and_the_broker_behind_it_takes_nobody_else() {
            let (b, _rx) = broker();
            runtime().block_on(async {
                let refused =
                    |r: Result<(AsyncClient, EventLoop), String>| r.map(|_| ()).unwrap_err();
                let bad = connect(b.addr, "x", Some(("n1", "key-n2")), None).await;
                assert_eq!(refused(bad), "NotAuthorized");
                let none = connect(b.addr, "x", None, None).await;
                assert_eq!(refused(none), "NotAuthorized");
                // A Last Will on another node's status would mark it offline.
                let will = connect(
                    b.addr,
                    "x",
                    Some(("n1", "key-n1")),
                    Some("kaiabc/nodes/n2/status"),
                )
                .await;
                assert_eq!(refused(will), "NotAuthorized");
                assert!(connect(
                    b.addr,
                    "x",
                    Some(("n1", "key-n1")),
                    Some("kaiabc/nodes/n1/status")
                )
                .await
                .is_ok());
                // rumqttd itself takes only the gate's password.
                let direct = connect(b.internal, "x", Some(("n1", "key-n1")), None).await;
                assert!(direct.is_err(), "the broker's own port let a node in");
            });
        }
    }
}
