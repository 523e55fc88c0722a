//! `kaiabc run`: the live pipeline (an embedded or external MQTT broker, optionally Kafka, the
//! HTTP API and the lake), and `kaiabc bridge`, the MQTT → Kafka bridge alone.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use kaiabc_connectors::kafka::{ensure_topics, KafkaConfig, KafkaProducer, KafkaSource};
use kaiabc_connectors::lake::{open_checkpoints, read_checkpoints, LakeConfig};
use kaiabc_connectors::mqtt::{
    start_client, start_embedded_broker, Authenticator, BrokerOptions, ClientOptions, StatusHook,
};
use kaiabc_connectors::wal::{self, WalConfig, WalWriter};
use kaiabc_operators::clock::ClockConfig;
use kaiabc_operators::node::NodeConfig;

use crate::auth::{load_secret, Jwt, Registry, Role};
use crate::bridge;
use crate::dataflow::inbound::Ingest;
use crate::dataflow::live::{run_live, LiveOptions, LiveShared};
use crate::dataflow::source::{LogSource, OffsetSource};
use crate::ratelimit::{Limits, RateLimiter};
use crate::server::Api;

/// Arguments of `kaiabc run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// A TOML config file (`kaiabc config template` prints one with every key). Flags and
    /// environment variables override it.
    #[arg(long, env = "KAIABC_CONFIG")]
    config: Option<PathBuf>,
    /// Address of the HTTP API (REST under /v1).
    #[arg(long, default_value = "127.0.0.1:8000", env = "KAIABC_HTTP")]
    http: SocketAddr,
    /// Address the embedded MQTT broker listens on (nodes publish to kaiabc/sensors/{node_id}).
    #[arg(long, default_value = "127.0.0.1:1883", env = "KAIABC_MQTT_LISTEN")]
    mqtt_listen: SocketAddr,
    /// A second listener of the embedded broker, with TLS (e.g. 127.0.0.1:8883): the same
    /// logins and topics as the plain one. Needs --mqtt-tls-cert and --mqtt-tls-key
    /// (`kaiabc certs` makes both).
    #[arg(long, env = "KAIABC_MQTT_TLS_LISTEN", requires_all = ["mqtt_tls_cert", "mqtt_tls_key"])]
    mqtt_tls_listen: Option<SocketAddr>,
    /// PEM file of the TLS listener's certificate (then any intermediates).
    #[arg(long, env = "KAIABC_MQTT_TLS_CERT", requires = "mqtt_tls_listen")]
    mqtt_tls_cert: Option<PathBuf>,
    /// PEM file of the TLS listener's private key.
    #[arg(long, env = "KAIABC_MQTT_TLS_KEY", requires = "mqtt_tls_listen")]
    mqtt_tls_key: Option<PathBuf>,
    /// The lake's root directory.
    #[arg(long, default_value = "data/lake", env = "KAIABC_LAKE")]
    lake: PathBuf,
    /// Timely worker threads.
    #[arg(long, default_value_t = 1, env = "KAIABC_WORKERS")]
    workers: usize,
    /// One process of a timely cluster (reading Kafka; with --http and --mqtt-listen ports
    /// offset by the process index, so that one set of flags serves every process of a host).
    #[command(flatten)]
    cluster: crate::cluster::ClusterArgs,
    /// Allowed lateness of event time, seconds (when a lake day is complete).
    #[arg(long, default_value_t = 60, env = "KAIABC_LATENESS_SECONDS")]
    lateness_seconds: u64,
    #[command(flatten)]
    fleet: crate::fleet::FleetArgs,
    /// A reading older than this (hours) before the time of receipt, or before its node's
    /// newest reading, is refused as `STALE_TIMESTAMP` (a node whose clock is wrong must not
    /// drag its clock and its windows through decades).
    #[arg(long, default_value_t = 168, env = "KAIABC_MAX_READING_AGE_HOURS")]
    max_reading_age_hours: u64,
    /// Seconds between lake commits (how fresh SQL over the lake is).
    #[arg(long, default_value_t = 10, env = "KAIABC_COMMIT_INTERVAL_SECONDS")]
    commit_interval_seconds: u64,
    /// The write-ahead log: every message is on disk there before it is acknowledged, and is
    /// read again after a crash (default: `_wal` in the lake).
    #[arg(long, env = "KAIABC_WAL")]
    wal: Option<PathBuf>,
    /// The most the write-ahead log may hold on disk, MiB: beyond it (the pipeline is not
    /// keeping up, or cannot commit) ingestion answers 503 and MQTT publishes wait.
    #[arg(long, default_value_t = 1024, env = "KAIABC_WAL_MAX_MB")]
    wal_max_mb: u64,
    /// For benchmarks only: acknowledge once written to the log, without waiting for the disk
    /// (a crash or power loss can then lose acknowledged messages).
    #[arg(long, env = "KAIABC_WAL_NO_FSYNC")]
    wal_no_fsync: bool,
    /// Write the lake inline on the dataflow workers instead of on a writing thread per worker
    /// (slower readings while files are written; for comparison benchmarks).
    #[arg(long, env = "KAIABC_LAKE_INLINE")]
    lake_inline: bool,
    /// Where the node registry and the generated JWT secret live.
    #[arg(long, default_value = "data/state", env = "KAIABC_STATE_DIR")]
    state_dir: PathBuf,
    /// Ingestion requests a minute per API key or token: single, batch or bulk (429 beyond).
    #[arg(long, default_value_t = Limits::CONTRACT.ingest_per_minute, env = "KAIABC_RATE_LIMIT_INGEST")]
    rate_limit_ingest: u32,
    /// State queries a minute per API key or token: reads of state, history, analytics,
    /// diagnostics (429 beyond).
    #[arg(long, default_value_t = Limits::CONTRACT.query_per_minute, env = "KAIABC_RATE_LIMIT_QUERY")]
    rate_limit_query: u32,
    /// Configuration updates and control commands a minute per API key or token (429 beyond).
    #[arg(long, default_value_t = Limits::CONTRACT.change_per_minute, env = "KAIABC_RATE_LIMIT_CHANGE")]
    rate_limit_change: u32,
    /// WebSocket connections open at once per client (a node, or a token's subject).
    #[arg(long, default_value_t = Limits::CONTRACT.ws_per_client, env = "KAIABC_WS_PER_CLIENT")]
    ws_per_client: u32,
    /// HTTP (and WebSocket) connections open at once; one more is answered 503.
    #[arg(long, default_value_t = 4096, env = "KAIABC_HTTP_MAX_CONNECTIONS")]
    http_max_connections: usize,
    /// HTTP/WebSocket connections open at once from one client address.
    #[arg(long, default_value_t = crate::server::listener::DEFAULT_MAX_PER_ADDRESS, env = "KAIABC_HTTP_MAX_CONNECTIONS_PER_ADDRESS")]
    http_max_connections_per_address: usize,
    /// An HTTP connection from which nothing arrives for this long (s) is closed.
    #[arg(long, default_value_t = 120, env = "KAIABC_HTTP_IDLE_SECONDS")]
    http_idle_seconds: u64,
    /// MQTT connections open at once (embedded broker); one more is closed when accepted.
    #[arg(long, default_value_t = kaiabc_connectors::mqtt::DEFAULT_MAX_CONNECTIONS, env = "KAIABC_MQTT_MAX_CONNECTIONS")]
    mqtt_max_connections: usize,
    /// MQTT connections open at once from one client address.
    #[arg(long, default_value_t = crate::server::listener::DEFAULT_MAX_PER_ADDRESS, env = "KAIABC_MQTT_MAX_CONNECTIONS_PER_ADDRESS")]
    mqtt_max_connections_per_address: usize,
    /// Readings an MQTT connection may publish a second (a second's worth at once); a faster
    /// client is paced, not refused. 0: unpaced.
    #[arg(long, default_value_t = kaiabc_connectors::mqtt::DEFAULT_READINGS_PER_SECOND, env = "KAIABC_MQTT_READINGS_PER_SECOND")]
    mqtt_readings_per_second: u32,
    /// Let MQTT clients publish without credentials (by default a node logs in with its node
    /// id as username and its API key as password).
    #[arg(long, env = "KAIABC_MQTT_ANONYMOUS")]
    mqtt_anonymous: bool,
    /// Use this external broker (`mqtt://[user:password@]host[:port]`) instead of the embedded
    /// one; node credentials are then the broker's business (its password file and ACLs).
    #[arg(long, env = "KAIABC_MQTT_URL")]
    mqtt_url: Option<String>,
    /// Client id at the external broker (a persistent session is kept under it).
    #[arg(long, default_value = "kaiabc-pipeline", env = "KAIABC_MQTT_CLIENT_ID")]
    mqtt_client_id: String,
    /// With --kafka-brokers and --mqtt-url: leave MQTT → Kafka to a separate `kaiabc bridge`,
    /// and use the broker only for the nodes' outputs and status.
    #[arg(long, env = "KAIABC_NO_BRIDGE")]
    no_bridge: bool,
    #[command(flatten)]
    kafka: KafkaArgs,
}

/// Kafka options shared by `run` and `bridge`.
#[derive(Debug, Args)]
pub struct KafkaArgs {
    /// Kafka bootstrap servers (host:port,...): turns on the Kafka path. Readings go through
    /// topic kaiabc.readings; states and dead letters are published to kaiabc.states and
    /// kaiabc.dead-letters.
    #[arg(long, env = "KAIABC_KAFKA_BROKERS")]
    kafka_brokers: Option<String>,
    /// Partitions of the topics the pipeline creates.
    #[arg(long, default_value_t = 4, env = "KAIABC_KAFKA_PARTITIONS")]
    kafka_partitions: i32,
    /// The consumer group's session timeout, milliseconds.
    #[arg(
        long,
        default_value_t = 10_000,
        env = "KAIABC_KAFKA_SESSION_TIMEOUT_MS"
    )]
    kafka_session_timeout_ms: u64,
    /// The pipeline's consumer group. Run one pipeline process per group: node state lives in
    /// the process that owns the node's partition.
    #[arg(long, default_value = "kaiabc-pipeline", env = "KAIABC_KAFKA_GROUP")]
    kafka_group: String,
}

impl KafkaArgs {
    fn config(&self) -> Option<KafkaConfig> {
        let mut c = KafkaConfig::new(self.kafka_brokers.clone()?);
        c.partitions = self.kafka_partitions;
        c.session_timeout = Duration::from_millis(self.kafka_session_timeout_ms);
        c.group = self.kafka_group.clone();
        Some(c)
    }
}

/// Arguments of `kaiabc bridge`.
#[derive(Debug, Args)]
pub struct BridgeArgs {
    /// A TOML config file (`kaiabc config template` prints one with every key). Flags and
    /// environment variables override it.
    #[arg(long, env = "KAIABC_CONFIG")]
    config: Option<PathBuf>,
    /// The MQTT broker nodes publish to (`mqtt://[user:password@]host[:port]`).
    #[arg(long, env = "KAIABC_MQTT_URL")]
    mqtt_url: String,
    /// Client id at the broker: the persistent session that holds unacknowledged messages.
    #[arg(long, default_value = "kaiabc-bridge")]
    client_id: String,
    #[command(flatten)]
    kafka: KafkaArgs,
}

/// Arguments of `kaiabc token`.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// A TOML config file (`kaiabc config template` prints one with every key). Flags and
    /// environment variables override it.
    #[arg(long, env = "KAIABC_CONFIG")]
    config: Option<PathBuf>,
    /// The role: admin, researcher or observer.
    #[arg(long)]
    role: String,
    /// Who the token is for.
    #[arg(long, default_value = "operator")]
    subject: String,
    /// How long it is valid: 90s, 30m, 12h or 7d.
    #[arg(long, default_value = "1h")]
    ttl: String,
    /// The state directory of the server (holds the generated secret unless
    /// KAIABC_JWT_SECRET is set).
    #[arg(long, default_value = "data/state", env = "KAIABC_STATE_DIR")]
    state_dir: PathBuf,
}

fn parse_ttl(s: &str) -> Result<Duration> {
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = n
        .parse()
        .with_context(|| format!("--ttl {s:?}: expected a number and s, m, h or d"))?;
    let secs = match unit {
        "s" | "" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => anyhow::bail!("--ttl {s:?}: the unit must be s, m, h or d"),
    };
    anyhow::ensure!(secs > 0, "--ttl must be positive");
    Ok(Duration::from_secs(secs))
}

fn jwt_for(state_dir: &std::path::Path) -> Result<Jwt> {
    let secret = load_secret(&state_dir.join("jwt-secret"))
        .map_err(|e| anyhow::anyhow!("{e} [{}]", e.code()))?;
    Ok(Jwt::new(&secret)?)
}

/// Prints a token.
pub fn token(a: &TokenArgs) -> Result<()> {
    let role: Role = a.role.parse()?;
    let jwt = jwt_for(&a.state_dir)?;
    println!("{}", jwt.mint(&a.subject, role, parse_ttl(&a.ttl)?)?);
    Ok(())
}

/// Raises the soft limit on open files to the hard one: the server holds a descriptor per
/// connection and per file it writes, and the usual soft default (1 024) is far below what the
/// system allows; running out of them made lake commits fail.
fn raise_file_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on this process's own limits, with a valid pointer.
    let raised = unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return;
        }
        let soft = lim.rlim_cur;
        lim.rlim_cur = lim.rlim_max;
        soft < lim.rlim_max && libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0
    };
    if raised {
        tracing::info!(
            open_files = lim.rlim_max,
            "raised the open-file limit to the hard limit"
        );
    }
}

/// Runs until SIGTERM or Ctrl-C, then drains the dataflow, commits the lake and exits.
pub fn run(a: &RunArgs) -> Result<()> {
    raise_file_limit();
    anyhow::ensure!(
        a.commit_interval_seconds > 0,
        "--commit-interval-seconds must be positive"
    );
    anyhow::ensure!(
        a.max_reading_age_hours > 0,
        "--max-reading-age-hours must be positive"
    );
    // In a cluster every process reads its share of Kafka's partitions: MQTT and HTTP reach
    // them through each process's broker and API (or `kaiabc bridge`), never a local log.
    let cluster = a.cluster.clone();
    anyhow::ensure!(
        !cluster.is_cluster() || a.kafka.kafka_brokers.is_some(),
        "--processes {} needs --kafka-brokers: a cluster reads its input from Kafka",
        cluster.processes
    );
    cluster.timely_config(a.workers)?;
    let offset = |addr: SocketAddr| -> SocketAddr {
        let mut addr = addr;
        if cluster.is_cluster() && addr.port() != 0 {
            addr.set_port(addr.port() + cluster.process as u16);
        }
        addr
    };
    let (http_addr, mqtt_addr) = (offset(a.http), offset(a.mqtt_listen));
    let mqtt_tls = match (a.mqtt_tls_listen, &a.mqtt_tls_cert, &a.mqtt_tls_key) {
        (Some(addr), Some(cert), Some(key)) => Some(kaiabc_connectors::mqtt::TlsListen {
            addr: offset(addr),
            cert: cert.clone(),
            key: key.clone(),
        }),
        _ => None,
    };
    let mut node_cfg =
        NodeConfig::new(ClockConfig::default()).context("building the clock configuration")?;
    node_cfg.max_age_hours = a.max_reading_age_hours as f64;
    // The live API serves each node's whole filter (`/v1/filter/state`).
    node_cfg.filter_snapshots = true;
    let api_cfg = Arc::new(node_cfg.clone());
    // The processes of a cluster share the lake: the first compacts the checkpoints, the
    // others only read them.
    let restored = match cluster.process {
        0 => open_checkpoints(&a.lake),
        _ => read_checkpoints(&a.lake),
    }
    .with_context(|| format!("reading the checkpoints of the lake {}", a.lake.display()))?;
    let shared = Arc::new(LiveShared {
        fleet: Arc::new(crate::fleet::FleetBook::new(a.fleet.config()?)),
        ..LiveShared::default()
    });
    shared.seed(&restored);
    {
        // WebSocket subscribers to the fleet's streams get their snapshot from its book.
        let book = Arc::clone(&shared.fleet);
        let source: crate::ws::FleetSnapshot = Box::new(move |wants| book.snapshot(wants));
        let _ = shared.hub.fleet.set(crate::ws::FleetSource(source));
    }
    let jwt = jwt_for(&a.state_dir)?;
    let registry = Arc::new(Registry::open(a.state_dir.join("nodes.json"))?);
    // The fleet's registry collection is cluster-wide: one process feeds what it held at start.
    if cluster.process == 0 {
        for r in registry.list() {
            shared.fleet.registry_change(&r, 1);
        }
    }
    let auth: Option<Authenticator> = if a.mqtt_anonymous {
        tracing::warn!("MQTT clients may publish without credentials (--mqtt-anonymous)");
        None
    } else {
        let reg = Arc::clone(&registry);
        Some(Arc::new(move |user: &str, pass: &str| {
            reg.check_node(user, pass)
        }))
    };
    let on_status: StatusHook = {
        let (metrics, fleet) = (Arc::clone(&shared.metrics), Arc::clone(&shared.fleet));
        Arc::new(move |node: &str, payload: &[u8]| {
            metrics.set_status(node, payload);
            if let Some(online) = metrics.node_online(node) {
                fleet.liveness(node, online);
            }
        })
    };
    // One async worker per core: HTTP, WebSocket fan-out and MQTT share them with the
    // dataflow's threads, and a burst to thousands of WebSocket clients uses every core.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(std::thread::available_parallelism().map_or(2, |n| n.get()))
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    // With Kafka, every message goes MQTT/HTTP → kaiabc.readings → the dataflow.
    let kafka = a.kafka.config();
    anyhow::ensure!(
        !a.no_bridge || (kafka.is_some() && a.mqtt_url.is_some()),
        "--no-bridge needs --kafka-brokers and --mqtt-url"
    );
    // The one inbound path: every producer hands messages to `ingest` and acknowledges them
    // once it says they are durable; the dataflow reads them back from the same place.
    let (ingest, source, producer, log): (Ingest, Box<dyn OffsetSource>, _, Option<WalWriter>) =
        match &kafka {
            Some(cfg) => {
                prepare_topics(&runtime, cfg)?;
                let producer = KafkaProducer::new(cfg)?;
                let consumer = if cluster.is_cluster() {
                    KafkaSource::assigned(cfg, cluster.process, cluster.processes)?
                } else {
                    KafkaSource::new(cfg)?
                };
                let _ = shared.metrics.kafka_lag.set(consumer.lag());
                let _ = shared.metrics.kafka_producer.set(producer.clone());
                let _ = shared.kafka.set(producer.clone());
                (
                    Ingest::Kafka(producer.clone()),
                    Box::new(consumer),
                    Some(producer),
                    None,
                )
            }
            None => {
                let dir = a.wal.clone().unwrap_or_else(|| a.lake.join("_wal"));
                let mut cfg = WalConfig::at(&dir);
                cfg.max_bytes = a.wal_max_mb.saturating_mul(1024 * 1024);
                cfg.sync = !a.wal_no_fsync;
                if a.wal_no_fsync {
                    tracing::warn!("--wal-no-fsync: acknowledged messages can be lost in a crash");
                }
                let (writer, reader, recovered) = wal::open(cfg)
                    .with_context(|| format!("opening the write-ahead log {}", dir.display()))?;
                if recovered.end > recovered.committed {
                    tracing::info!(
                        from = recovered.committed,
                        to = recovered.end,
                        "reading again what was acknowledged but not yet checkpointed"
                    );
                }
                let _ = shared.metrics.wal.set(writer.clone());
                (
                    Ingest::Log(writer.clone()),
                    Box::new(LogSource::new(reader)),
                    None,
                    Some(writer),
                )
            }
        };
    // Failed key checks per client address, over MQTT and HTTP alike.
    let failed_auth = Arc::new(kaiabc_connectors::address_limits::FailedAuth::default());
    let mqtt = match &a.mqtt_url {
        Some(url) => {
            // In a cluster, one process bridges the external broker's readings (each would
            // otherwise write every reading to Kafka once).
            let handler = match (&producer, a.no_bridge, cluster.process) {
                (Some(_), true, _) | (Some(_), false, 1..) => None,
                _ => Some(bridge::to_ingest(ingest.clone())),
            };
            let output = start_client(
                ClientOptions {
                    url: url.clone(),
                    // Each process keeps its own persistent session.
                    client_id: match cluster.is_cluster() {
                        true => format!("{}-{}", a.mqtt_client_id, cluster.process),
                        false => a.mqtt_client_id.clone(),
                    },
                    persistent: true,
                },
                handler,
                Some(on_status),
            )?;
            let _ = shared.output.set(output);
            redact(url)
        }
        None => {
            let broker = start_embedded_broker(
                mqtt_addr,
                Arc::new(ingest.clone()),
                BrokerOptions {
                    auth,
                    on_status: Some(on_status),
                    max_connections: a.mqtt_max_connections,
                    max_connections_per_address: a.mqtt_max_connections_per_address,
                    readings_per_second: a.mqtt_readings_per_second,
                    failed_auth: Arc::clone(&failed_auth),
                    tls: mqtt_tls,
                },
            )?;
            let _ = shared.output.set(Arc::clone(&broker.output));
            match broker.tls_addr {
                Some(tls) => format!("{} and TLS on {tls}", broker.addr),
                None => broker.addr.to_string(),
            }
        }
    };
    let listener = {
        let _guard = runtime.enter();
        http_listener(http_addr)
            .with_context(|| format!("cannot listen for HTTP on {http_addr}"))?
    };
    let http = listener.local_addr()?;
    let (stop_http, http_stopped) = tokio::sync::oneshot::channel::<()>();
    let api = Arc::new(Api {
        shared: Arc::clone(&shared),
        jwt,
        registry,
        ingest,
        started: std::time::Instant::now(),
        lake: a.lake.clone(),
        control_log: crate::server::ControlLog::at(&a.lake),
        node_cfg: Arc::clone(&api_cfg),
        book: crate::server::SettingsBook::load(
            crate::server::ControlLog::at(&a.lake).path(),
            &api_cfg,
        )
        .context("reading the control log")?,
        prcs: Default::default(),
        logs: crate::logs::ring(),
        failed_auth,
        checks: Default::default(),
        limiter: RateLimiter::new(Limits {
            ingest_per_minute: a.rate_limit_ingest,
            query_per_minute: a.rate_limit_query,
            change_per_minute: a.rate_limit_change,
            ws_per_client: a.ws_per_client,
        }),
    });
    let guard = crate::server::listener::Guard {
        max_connections: a.http_max_connections,
        max_per_address: a.http_max_connections_per_address,
        idle: Duration::from_secs(a.http_idle_seconds.max(1)),
    };
    let server = runtime.spawn(crate::server::serve(listener, guard, api, async {
        let _ = http_stopped.await;
    }));
    runtime.spawn({
        let shared = Arc::clone(&shared);
        async move {
            wait_for_signal().await;
            tracing::info!("stopping: draining the dataflow and committing the lake");
            shared.stop.store(true, Ordering::SeqCst);
            shared.durability.stop();
        }
    });
    crate::logs::announce(&format!(
        "kaiabc run: MQTT on {mqtt}, HTTP on http://{http}/v1, lake in {} ({} nodes to resume){}{}",
        a.lake.display(),
        restored.nodes.len(),
        kafka
            .as_ref()
            .map(|k| format!(", Kafka at {}", k.brokers))
            .unwrap_or_default(),
        match cluster.is_cluster() {
            true => format!(", process {} of {}", cluster.process, cluster.processes),
            false => String::new(),
        }
    ));
    let summary = run_live(
        LiveOptions {
            workers: a.workers,
            lake: LakeConfig::at(&a.lake),
            lateness: Duration::from_secs(a.lateness_seconds),
            commit_every: Duration::from_secs(a.commit_interval_seconds),
            background_writer: !a.lake_inline,
            cluster: cluster.clone(),
        },
        node_cfg,
        source,
        Arc::clone(&shared),
        &restored,
    )?;
    // Messages acknowledged after the final checkpoint stay in the log for the next start.
    if let Some(w) = &log {
        w.close();
    }
    if let Some(p) = &producer {
        if let Err(e) = p.flush(Duration::from_secs(30)) {
            tracing::error!(error = %e, "flushing states to Kafka");
        }
    }
    // WebSocket clients are not closed by the HTTP server's graceful shutdown: tell them.
    shared.hub.close_all();
    let _ = stop_http.send(());
    let _ = runtime.block_on(server);
    let rejected: u64 = summary.rejected.values().sum();
    crate::logs::announce(&format!(
        "kaiabc run: stopped; {} events in, {} applied, {} rejected, {} rows in {} lake files, \
         {} nodes resumed, {} node checkpoints saved",
        summary.events_in,
        summary.applied,
        rejected,
        summary.rows_committed,
        summary.files_committed,
        summary.nodes_restored,
        summary.checkpoints_saved
    ));
    Ok(())
}

/// Runs the MQTT → Kafka bridge until SIGTERM or Ctrl-C.
pub fn bridge(a: &BridgeArgs) -> Result<()> {
    let cfg = a
        .kafka
        .config()
        .context("--kafka-brokers is required for the bridge")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    prepare_topics(&runtime, &cfg)?;
    let producer = KafkaProducer::new(&cfg)?;
    start_client(
        ClientOptions {
            url: a.mqtt_url.clone(),
            client_id: a.client_id.clone(),
            persistent: true,
        },
        Some(bridge::to_ingest(Ingest::Kafka(producer.clone()))),
        None,
    )?;
    crate::logs::announce(&format!(
        "kaiabc bridge: {} → Kafka {} (topic {})",
        redact(&a.mqtt_url),
        cfg.brokers,
        kaiabc_connectors::kafka::READINGS_TOPIC
    ));
    runtime.block_on(wait_for_signal());
    producer.flush(Duration::from_secs(30))?;
    // The acks of the last deliveries go out on the client's thread.
    std::thread::sleep(Duration::from_millis(200));
    crate::logs::announce(&format!(
        "kaiabc bridge: stopped; {} messages written to Kafka, {} failed",
        producer.delivered(),
        producer.failed()
    ));
    Ok(())
}

/// Creates the topics, or fails clearly when Kafka cannot be reached.
fn prepare_topics(runtime: &tokio::runtime::Runtime, cfg: &KafkaConfig) -> Result<()> {
    let wait = Duration::from_secs(30);
    runtime
        .block_on(async { tokio::time::timeout(wait, ensure_topics(cfg)).await })
        .map_err(|_| anyhow::anyhow!("no answer within {wait:?}"))
        .and_then(|r| r.map_err(anyhow::Error::from))
        .with_context(|| format!("preparing the Kafka topics at {}", cfg.brokers))
}

/// The broker URL without its password, for logs.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            let user = creds.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..s + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}

/// The HTTP listener, with TCP_NODELAY (Linux hands it on to accepted sockets): WebSocket
/// events are small writes, and Nagle's algorithm with delayed ACKs would hold them ~40 ms.
fn http_listener(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

async fn wait_for_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async {
            match term.as_mut() {
                Some(t) => { t.recv().await; }
                None => std::future::pending::<()>().await,
            }
        } => {}
    }
}
