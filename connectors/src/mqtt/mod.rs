//! MQTT: the embedded broker (rumqttd) that nodes publish to, the server's links into it, and
//! the client of an external broker.
//!
//! Nodes publish readings to `kaiabc/sensors/{node_id}`; the gate in front of the embedded
//! broker hands every such publish to the server's [`Intake`] as a [`MqttMessage`] and
//! acknowledges it only once the intake has it on disk. Nodes' `kaiabc/nodes/{node_id}/status`
//! messages (their Last Will `offline`) go to a status hook. The server publishes each node's output, retained,
//! to `kaiabc/nodes/{node_id}/output` through [`MqttOutput`].

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rumqttd::local::LinkTx;

use crate::address_limits::{Connections, FailedAuth};
use rumqttd::protocol::{Packet, Publish};
use rumqttd::{Broker, Config, ConnectionSettings, Notification, RouterConfig, ServerSettings};

/// The topic filter nodes publish readings under.
pub const SENSOR_TOPICS: &str = "kaiabc/sensors/+";

/// The topic filter of nodes' online/offline status (their Last Will).
pub const STATUS_TOPICS: &str = "kaiabc/nodes/+/status";

/// Receives `(node_id, payload)` of each status message.
pub type StatusHook = Arc<dyn Fn(&str, &[u8]) + Send + Sync>;

mod client;
mod gate;
mod tls;

pub use client::{parse_url, start_client, Ack, BrokerUrl, ClientOptions, MessageHandler};
pub use tls::TlsListen;

/// Publishes the server's messages: into the embedded broker, or through the client of an
/// external one.
pub struct MqttOutput {
    link: OutputLink,
}

enum OutputLink {
    Embedded(Mutex<LinkTx>),
    Client(rumqttc::Client),
}

impl std::fmt::Debug for MqttOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MqttOutput")
    }
}

impl MqttOutput {
    /// Publishes `payload` to `topic`, retained (a node that connects later gets the latest).
    /// Never blocks on subscribers: the router queues it.
    pub fn publish_retained(&self, topic: &str, payload: Vec<u8>) -> Result<(), MqttError> {
        self.publish_retained_all(vec![(topic.to_string(), payload)])
    }

    /// Publishes each `(topic, payload)` retained, in order, as [`Self::publish_retained`]
    /// does one.
    ///
    /// The embedded broker's router takes everything queued on a link each time the link
    /// wakes it, so the messages are queued together and the router is woken once: woken once
    /// a message, as `LinkTx::send` does, the router's thread was switched to for every state
    /// the dataflow applied.
    pub fn publish_retained_all(&self, messages: Vec<(String, Vec<u8>)>) -> Result<(), MqttError> {
        let link = match &self.link {
            OutputLink::Embedded(link) => link,
            OutputLink::Client(c) => {
                for (topic, payload) in messages {
                    c.try_publish(topic, rumqttc::QoS::AtMostOnce, true, payload)
                        .map_err(|e| MqttError::Link(e.to_string()))?;
                }
                return Ok(());
            }
        };
        let packet = |topic: String, payload: Vec<u8>| {
            Packet::Publish(Publish::new(topic.into_bytes(), payload, true), None)
        };
        let mut messages = messages.into_iter();
        let Some((topic, payload)) = messages.next_back() else {
            return Ok(());
        };
        let mut link = link
            .lock()
            .map_err(|_| MqttError::Link("output link lock poisoned".into()))?;
        {
            let mut queued = link.buffer();
            for (topic, payload) in messages {
                queued.push_back(packet(topic, payload));
            }
        }
        // The last one goes through `send`, which queues it and wakes the router once for
        // everything queued. `LinkTx::send` is async in signature only: it queues and notifies
        // without awaiting, so one poll completes it.
        let mut fut = std::pin::pin!(link.send(packet(topic, payload)));
        match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(r) => r.map(|_| ()).map_err(|e| MqttError::Link(e.to_string())),
            Poll::Pending => Err(MqttError::Link("the output link would block".into())),
        }
    }
}

impl MqttOutput {
    fn client(c: rumqttc::Client) -> Self {
        Self {
            link: OutputLink::Client(c),
        }
    }
}

/// The node id of a `kaiabc/nodes/{node_id}/status` topic.
pub fn status_node(topic: &str) -> Option<&str> {
    topic
        .strip_prefix("kaiabc/nodes/")?
        .strip_suffix("/status")
        .filter(|n| !n.is_empty() && !n.contains('/'))
}

/// How to start the embedded broker.
#[derive(Default)]
pub struct BrokerOptions {
    /// Checks logins; `None` lets anyone connect.
    pub auth: Option<Authenticator>,
    /// Receives nodes' status messages.
    pub on_status: Option<StatusHook>,
    /// Connections open at once; one more is closed as soon as it is accepted.
    pub max_connections: usize,
    /// Connections open at once from one client address (0: only `max_connections` applies).
    pub max_connections_per_address: usize,
    /// Readings a connection may publish a second (with a second's worth at once); a faster
    /// client is paced by reading its socket more slowly, so nothing is refused or lost and
    /// one node cannot take the disk's share of the others. 0: unpaced.
    pub readings_per_second: u32,
    /// Failed logins per client address (shared with the HTTP API's key checks).
    pub failed_auth: Arc<FailedAuth>,
    /// A second listener, with TLS, served like the plain one.
    pub tls: Option<TlsListen>,
}

/// The default of [`BrokerOptions::max_connections`].
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;

/// The default of [`BrokerOptions::readings_per_second`]: a node reports once a minute, and a
/// day of buffered readings (1 440) replays in under two seconds.
pub const DEFAULT_READINGS_PER_SECOND: u32 = 1000;

/// A running embedded broker.
#[derive(Debug)]
pub struct EmbeddedBroker {
    /// The address it listens on.
    pub addr: SocketAddr,
    /// The address of its TLS listener, if it has one.
    pub tls_addr: Option<SocketAddr>,
    /// The server's publishing link.
    pub output: Arc<MqttOutput>,
    /// rumqttd's own loopback listener, behind the gate.
    #[allow(dead_code)] // read by the tests, which check nobody gets in there
    internal: SocketAddr,
}

/// Errors starting the broker.
#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    /// The listen address is taken or cannot be bound.
    #[error("cannot listen for MQTT on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// An external broker's URL is not usable.
    #[error("bad MQTT URL {0}")]
    Url(String),
    /// The broker refused the server's own link.
    #[error("the embedded broker's link: {0}")]
    Link(String),
    /// The TLS listener's certificate or key cannot be used.
    #[error("MQTT TLS: {path}: {message}")]
    Tls {
        /// The certificate or key file.
        path: std::path::PathBuf,
        /// What is wrong with it.
        message: String,
    },
}

impl MqttError {
    /// Stable identifier of the variant, for logs and machine-readable output.
    pub const fn code(&self) -> &'static str {
        match self {
            MqttError::Bind { .. } => "MQTT_BIND",
            MqttError::Url(_) => "MQTT_URL",
            MqttError::Link(_) => "MQTT_LINK",
            MqttError::Tls { .. } => "MQTT_TLS",
        }
    }
}

/// A free loopback port for rumqttd's own listener, which rumqttd binds later on its thread
/// ([`crate::ports::loopback_port`]: below the ephemeral range, where no outgoing connection can
/// take it in between).
fn internal_port() -> Result<SocketAddr, MqttError> {
    let port = crate::ports::loopback_port().map_err(|source| MqttError::Bind {
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        source,
    })?;
    Ok(SocketAddr::from(([127, 0, 0, 1], port)))
}

/// Waits (up to 10 s) until rumqttd listens on `internal`: rumqttd only logs a failed bind on
/// its own thread, and without this check the server would start with a broker that refuses
/// every node.
///
/// It looks for the listening socket in the kernel's table instead of connecting: a connection
/// that sends no CONNECT makes rumqttd log an error, which every start would then show.
fn wait_for_listener(internal: SocketAddr) -> Result<(), MqttError> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !listening(internal) {
        if std::time::Instant::now() >= deadline {
            return Err(MqttError::Bind {
                addr: internal,
                source: std::io::Error::new(
                    std::io::ErrorKind::AddrNotAvailable,
                    "the embedded broker did not listen on its loopback port",
                ),
            });
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

/// Whether a socket listens on the IPv4 `addr`, from `/proc/net/tcp` (local address as
/// little-endian hex `0100007F:075B`, state `0A` for LISTEN). Where that table cannot be read,
/// `true`: the check is then skipped.
fn listening(addr: SocketAddr) -> bool {
    let SocketAddr::V4(v4) = addr else {
        return true;
    };
    let Ok(table) = std::fs::read_to_string("/proc/net/tcp") else {
        return true;
    };
    let local = format!(
        "{:08X}:{:04X}",
        u32::from_le_bytes(v4.ip().octets()),
        v4.port()
    );
    table.lines().skip(1).any(|line| {
        let mut fields = line.split_whitespace();
        fields.nth(1) == Some(local.as_str()) && fields.nth(1) == Some("0A")
    })
}

/// One publish received by the broker.
#[derive(Clone, Debug)]
pub struct MqttMessage {
    /// The topic it was published to.
    pub topic: String,
    /// Its payload.
    pub payload: Vec<u8>,
    /// When the server received it.
    pub received_at: DateTime<Utc>,
    /// Why the embedded broker's gate kept it from the broker (a topic outside the sender's
    /// own): it goes to the dead letters with this reason.
    pub refused: Option<String>,
}

impl MqttMessage {
    /// The node a sensor topic names (`kaiabc/sensors/{node_id}`).
    pub fn topic_node(&self) -> Option<&str> {
        self.topic
            .strip_prefix("kaiabc/sensors/")
            .filter(|n| !n.is_empty() && !n.contains('/'))
    }
}

/// Checks a client's MQTT username and password.
pub type Authenticator = Arc<dyn Fn(&str, &str) -> bool + Send + Sync>;

/// Hears once whether a taken message is durable (`true`: the gate acknowledges it) or never
/// will be (`false`: the gate closes the connection unacknowledged, so the client resends).
pub type Taken = Box<dyn FnOnce(bool) + Send>;

/// Where the embedded broker's gate hands what nodes publish under `kaiabc/sensors/`: the
/// server's write-ahead log (or Kafka). Calls to `taken` must come in the order the messages
/// were taken, since MQTT acknowledgements go out in order.
pub trait Intake: Send + Sync {
    /// Takes a message; `taken` hears when it is durable.
    fn take(&self, msg: MqttMessage, taken: Taken);
    /// Calls `taken` once everything taken before is durable (to acknowledge a resend).
    fn after_taken(&self, taken: Taken);
}

/// An in-memory intake that takes every message at once: for tests and tools that need no
/// durability.
impl<T: From<MqttMessage> + Send> Intake for std::sync::Mutex<std::sync::mpsc::Sender<T>> {
    fn take(&self, msg: MqttMessage, taken: Taken) {
        let ok = self.lock().is_ok_and(|tx| tx.send(T::from(msg)).is_ok());
        taken(ok);
    }

    fn after_taken(&self, taken: Taken) {
        taken(true);
    }
}

/// Starts rumqttd behind the gate (`gate.rs`) on `listen`. The gate hands every publish under
/// `kaiabc/sensors/` to `intake` and acknowledges it once the intake has it on disk. With
/// `auth`, every client must log in with a username and password `auth` accepts, and may then
/// use only its own node's topics (a publish elsewhere reaches `intake` as a refused message).
/// Without, anyone may do anything else.
///
/// rumqttd has no shutdown: its threads (and the gate's) end with the process.
pub fn start_embedded_broker(
    listen: SocketAddr,
    intake: Arc<dyn Intake>,
    opts: BrokerOptions,
) -> Result<EmbeddedBroker, MqttError> {
    let BrokerOptions {
        auth,
        on_status,
        max_connections,
        max_connections_per_address,
        readings_per_second,
        failed_auth,
        tls,
    } = opts;
    let public = std::net::TcpListener::bind(listen).map_err(|source| MqttError::Bind {
        addr: listen,
        source,
    })?;
    let bound = public.local_addr().map_err(|source| MqttError::Bind {
        addr: listen,
        source,
    })?;
    // The TLS listener: its files are read and its port bound now, so a bad certificate or a
    // taken port stops the start with a clear error.
    let secure = match &tls {
        None => None,
        Some(t) => {
            let acceptor = tls::acceptor(t)?;
            let bind = |source| MqttError::Bind {
                addr: t.addr,
                source,
            };
            let listener = std::net::TcpListener::bind(t.addr).map_err(bind)?;
            listener.set_nonblocking(true).map_err(bind)?;
            let addr = listener.local_addr().map_err(bind)?;
            Some((listener, acceptor, addr))
        }
    };
    let tls_addr = secure.as_ref().map(|s| s.2);
    // rumqttd listens on a loopback port of its own, which the gate connects to. rumqttd binds
    // it itself, so it is picked here (`internal_port`) and checked once rumqttd has started.
    let internal = internal_port()?;
    public
        .set_nonblocking(true)
        .map_err(|source| MqttError::Bind {
            addr: listen,
            source,
        })?;
    let mut secret = [0u8; 24];
    getrandom::fill(&mut secret).map_err(|e| MqttError::Link(e.to_string()))?;
    let secret: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    let mut connections = ConnectionSettings {
        connection_timeout_ms: 60_000,
        max_payload_size: 256 * 1024,
        max_inflight_count: 100,
        auth: None,
        external_auth: None,
        dynamic_filters: true,
    };
    {
        // Only the gate knows the password: a client that finds the loopback port cannot
        // go around the gate's checks.
        let secret = secret.clone();
        connections.set_auth_handler(move |_client_id: String, _user: String, pass: String| {
            let ok = pass == secret;
            async move { ok }
        });
    }
    let server = ServerSettings {
        name: "v4".into(),
        listen: internal,
        tls: None,
        next_connection_delay_ms: 1,
        connections,
    };
    let config = Config {
        id: 0,
        router: RouterConfig {
            max_connections: 10_000,
            max_outgoing_packet_count: 200,
            // The router keeps each subscription's messages in a log of segments, each a Vec
            // grown by doubling. 100 MB segments grew to hundreds of thousands of entries, and
            // each doubling (a copy of tens of MB, and page faults) stalled the broker for
            // about 100 ms at 10 000 readings/s: the latency bench's slowest 1 % came in the
            // seconds of the 65 536th and 131 072nd message. 1 MB segments stay small; 64 of
            // them keep 64 MB (about 25 s at 10 000/s) for a subscriber that falls behind,
            // instead of 1 GB held for good.
            max_segment_size: 1024 * 1024,
            max_segment_count: 64,
            ..Default::default()
        },
        v4: Some(HashMap::from([("1".to_string(), server)])),
        ..Default::default()
    };
    let mut broker = Broker::new(config);
    let (mut link_tx, mut link_rx) = broker
        .link("kaiabc-server")
        .map_err(|e| MqttError::Link(e.to_string()))?;
    if on_status.is_some() {
        link_tx
            .subscribe(STATUS_TOPICS)
            .map_err(|e| MqttError::Link(e.to_string()))?;
    }
    let (out_tx, out_rx) = broker
        .link("kaiabc-output")
        .map_err(|e| MqttError::Link(e.to_string()))?;
    std::thread::Builder::new()
        .name("mqtt-broker".into())
        .spawn(move || {
            if let Err(e) = broker.start() {
                tracing::error!(error = %e, "the embedded MQTT broker stopped");
            }
        })
        .map_err(|e| MqttError::Link(e.to_string()))?;
    wait_for_listener(internal)?;
    std::thread::Builder::new()
        .name("mqtt-link".into())
        .spawn(move || {
            // Keep the sender alive as long as we read: dropping it would unsubscribe.
            let _link_tx = link_tx;
            // The output link subscribes to nothing, so its receiver never fills; kept alive
            // with it.
            let _out_rx = out_rx;
            loop {
                match link_rx.recv() {
                    Ok(Some(Notification::Forward(f))) => {
                        let topic = String::from_utf8_lossy(&f.publish.topic);
                        if let (Some(node), Some(hook)) = (status_node(&topic), &on_status) {
                            hook(node, &f.publish.payload);
                        }
                    }
                    // When a link's buffer fills (200 notifications) the router ends the batch
                    // with `Unschedule` and stops forwarding to it until the link reports
                    // `Ready`, as rumqttd's network links do. Everything before it has been
                    // handled by now; without this, the first burst larger than the buffer
                    // stalled the link for good and later messages stayed in the router.
                    Ok(Some(Notification::Unschedule)) => {
                        if let Err(e) = link_rx.ready() {
                            tracing::error!(error = %e, "the MQTT link closed");
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::error!(error = %e, "the MQTT link closed");
                        return;
                    }
                }
            }
        })
        .map_err(|e| MqttError::Link(e.to_string()))?;
    let gate = Arc::new(gate::Gate {
        auth,
        broker: internal,
        secret,
        intake,
        checking: tokio::sync::Semaphore::new(
            std::thread::available_parallelism().map_or(2, |n| n.get()),
        ),
        connections: Arc::new(tokio::sync::Semaphore::new(max_connections.max(1))),
        per_address: Connections::new(match max_connections_per_address {
            0 => max_connections,
            n => n,
        }),
        failed_logins: failed_auth,
        readings_per_second,
    });
    std::thread::Builder::new()
        .name("mqtt-gate".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!(error = %e, "the MQTT gate could not start");
                    return;
                }
            };
            rt.block_on(async move {
                if let Some((listener, acceptor, _)) = secure {
                    match tokio::net::TcpListener::from_std(listener) {
                        Ok(l) => {
                            tokio::spawn(gate::run(l, Arc::clone(&gate), Some(acceptor)));
                        }
                        Err(e) => tracing::error!(error = %e, "the MQTT TLS gate could not listen"),
                    }
                }
                match tokio::net::TcpListener::from_std(public) {
                    Ok(listener) => gate::run(listener, gate, None).await,
                    Err(e) => tracing::error!(error = %e, "the MQTT gate could not listen"),
                }
            });
        })
        .map_err(|e| MqttError::Link(e.to_string()))?;
    tracing::info!(%bound, tls = ?tls_addr, "embedded MQTT broker listening");
    Ok(EmbeddedBroker {
        addr: bound,
        tls_addr,
        output: Arc::new(MqttOutput {
            link: OutputLink::Embedded(Mutex::new(out_tx)),
        }),
        internal,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A burst larger than the router's per-link buffer (200) while the server is slow must
    /// still arrive whole: the link re-arms itself after the router unschedules it. Before
    /// that, the first such burst stopped the server's subscription for good (found by the
    /// live latency bench at 10 000 readings/s). Status messages take that link.
    #[test]
    fn a_burst_beyond_the_router_buffer_arrives_whole() {
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let (readings, _r) = std::sync::mpsc::channel::<MqttMessage>();
        let seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let hook: StatusHook = {
            let seen = Arc::clone(&seen);
            let tx = Mutex::new(tx);
            Arc::new(move |node: &str, _payload: &[u8]| {
                // A slow server at first, so the router's buffer for the link fills.
                if seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < 300 {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                let _ = tx.lock().unwrap().send(node.to_string());
            })
        };
        let broker = start_embedded_broker(
            "127.0.0.1:0".parse().unwrap(),
            Arc::new(Mutex::new(readings)),
            BrokerOptions {
                auth: None,
                on_status: Some(hook),
                max_connections: super::DEFAULT_MAX_CONNECTIONS,
                ..BrokerOptions::default()
            },
        )
        .unwrap();
        let mut o = rumqttc::MqttOptions::new("burst", "127.0.0.1", broker.addr.port());
        o.set_inflight(1000);
        let (client, mut conn) = rumqttc::Client::new(o, 2000);
        std::thread::spawn(move || for _ in conn.iter() {});
        const N: usize = 1000;
        for i in 0..N {
            client
                .publish(
                    format!("kaiabc/nodes/n{}/status", i % 10),
                    rumqttc::QoS::AtLeastOnce,
                    false,
                    "online",
                )
                .unwrap();
        }
        let mut got = 0;
        while got < N && rx.recv_timeout(std::time::Duration::from_secs(30)).is_ok() {
            got += 1;
        }
        assert_eq!(got, N, "messages held in the router");
    }

    /// Outputs published together (one wake-up of the router for all of them) reach a
    /// subscriber whole and in order, and each topic keeps its newest as the retained message.
    #[test]
    fn outputs_published_together_arrive_in_order_and_the_newest_is_retained() {
        let (readings, _r) = std::sync::mpsc::channel::<MqttMessage>();
        let broker = start_embedded_broker(
            "127.0.0.1:0".parse().unwrap(),
            Arc::new(Mutex::new(readings)),
            BrokerOptions {
                max_connections: super::DEFAULT_MAX_CONNECTIONS,
                ..BrokerOptions::default()
            },
        )
        .unwrap();
        // Subscribes, then returns what it receives on a channel.
        let subscriber = |id: &str| {
            let o = rumqttc::MqttOptions::new(id, "127.0.0.1", broker.addr.port());
            let (client, mut conn) = rumqttc::Client::new(o, 100);
            client
                .subscribe("kaiabc/nodes/+/output", rumqttc::QoS::AtMostOnce)
                .unwrap();
            let (tx, rx) = std::sync::mpsc::channel::<(String, String)>();
            std::thread::spawn(move || {
                let _client = client;
                for event in conn.iter() {
                    match event {
                        Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_))) => {
                            let _ = tx.send((String::new(), String::new()));
                        }
                        Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                            let text = String::from_utf8_lossy(&p.payload).into_owned();
                            let _ = tx.send((p.topic, text));
                        }
                        Ok(_) => {}
                        Err(_) => return,
                    }
                }
            });
            rx
        };
        let wait = std::time::Duration::from_secs(30);
        let subscribed = (String::new(), String::new());
        let live = subscriber("live");
        assert_eq!(live.recv_timeout(wait).unwrap(), subscribed);
        const N: usize = 1000;
        let messages = |range: std::ops::Range<usize>| -> Vec<(String, Vec<u8>)> {
            range
                .map(|i| {
                    (
                        format!("kaiabc/nodes/n{}/output", i % 5),
                        i.to_string().into(),
                    )
                })
                .collect()
        };
        broker
            .output
            .publish_retained_all(messages(0..N / 2))
            .unwrap();
        broker.output.publish_retained_all(vec![]).unwrap();
        broker
            .output
            .publish_retained_all(messages(N / 2..N))
            .unwrap();
        let got: Vec<(String, String)> = (0..N).map(|_| live.recv_timeout(wait).unwrap()).collect();
        let expected: Vec<(String, String)> = messages(0..N)
            .into_iter()
            .map(|(t, p)| (t, String::from_utf8(p).unwrap()))
            .collect();
        assert_eq!(got, expected);

        let late = subscriber("late");
        let mut retained: Vec<(String, String)> = (0..6)
            .map(|_| late.recv_timeout(wait).unwrap())
            .filter(|m| *m != subscribed)
            .collect();
        retained.sort();
        let newest: Vec<(String, String)> = (N - 5..N)
            .map(|i| (format!("kaiabc/nodes/n{}/output", i % 5), i.to_string()))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        assert_eq!(retained, newest);
    }

    /// The kernel's table shows a listener while it listens and not after it is closed.
    #[test]
    fn a_listener_is_seen_in_the_kernel_table() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        assert!(listening(addr));
        drop(l);
        assert!(!listening(addr));
    }

    #[test]
    fn sensor_topics_name_their_node() {
        let m = |topic: &str| MqttMessage {
            topic: topic.into(),
            payload: vec![],
            received_at: Utc::now(),
            refused: None,
        };
        assert_eq!(m("kaiabc/sensors/pico_001").topic_node(), Some("pico_001"));
        assert_eq!(m("kaiabc/sensors/").topic_node(), None);
        assert_eq!(m("kaiabc/sensors/a/b").topic_node(), None);
        assert_eq!(m("other/pico_001").topic_node(), None);
        assert_eq!(status_node("kaiabc/nodes/p1/status"), Some("p1"));
        assert_eq!(status_node("kaiabc/nodes//status"), None);
        assert_eq!(status_node("kaiabc/nodes/p1/output"), None);
    }
}
