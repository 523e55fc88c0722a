//! `kaiabc run`: the live pipeline with an embedded MQTT broker, the HTTP API and the lake.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use kaiabc_connectors::lake::{open_checkpoints, LakeConfig};
use kaiabc_connectors::mqtt::start_embedded_broker;
use kaiabc_operators::clock::ClockConfig;
use kaiabc_operators::node::NodeConfig;

use crate::dataflow::live::{run_live, LiveOptions, LiveShared};

/// Arguments of `kaiabc run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Address of the HTTP API (REST under /v1).
    #[arg(long, default_value = "127.0.0.1:8000", env = "KAIABC_HTTP")]
    http: SocketAddr,
    /// Address the embedded MQTT broker listens on (nodes publish to kaiabc/sensors/{node_id}).
    #[arg(long, default_value = "127.0.0.1:1883", env = "KAIABC_MQTT_LISTEN")]
    mqtt_listen: SocketAddr,
    /// The lake's root directory.
    #[arg(long, default_value = "data/lake", env = "KAIABC_LAKE")]
    lake: PathBuf,
    /// Timely worker threads.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Allowed lateness of event time, seconds (when a lake day is complete).
    #[arg(long, default_value_t = 60)]
    lateness_seconds: u64,
    /// Seconds between lake commits (how fresh SQL over the lake is).
    #[arg(long, default_value_t = 10)]
    commit_interval_seconds: u64,
}

/// Runs until SIGTERM or Ctrl-C, then drains the dataflow, commits the lake and exits.
pub fn run(a: &RunArgs) -> Result<()> {
    anyhow::ensure!(
        a.commit_interval_seconds > 0,
        "--commit-interval-seconds must be positive"
    );
    let node_cfg =
        NodeConfig::new(ClockConfig::default()).context("building the clock configuration")?;
    let restored = open_checkpoints(&a.lake)
        .with_context(|| format!("reading the checkpoints of the lake {}", a.lake.display()))?;
    let shared = Arc::new(LiveShared::default());
    shared.seed(&restored);
    let (tx, rx) = std::sync::mpsc::sync_channel(64 * 1024);
    let mqtt = start_embedded_broker(a.mqtt_listen, tx)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind(a.http))
        .with_context(|| format!("cannot listen for HTTP on {}", a.http))?;
    let http = listener.local_addr()?;
    let (stop_http, http_stopped) = tokio::sync::oneshot::channel::<()>();
    let server = runtime.spawn(crate::server::serve(listener, Arc::clone(&shared), async {
        let _ = http_stopped.await;
    }));
    runtime.spawn({
        let shared = Arc::clone(&shared);
        async move {
            wait_for_signal().await;
            tracing::info!("stopping: draining the dataflow and committing the lake");
            shared.stop.store(true, Ordering::SeqCst);
        }
    });
    eprintln!(
        "kaiabc run: MQTT on {mqtt}, HTTP on http://{http}/v1, lake in {} ({} nodes to resume)",
        a.lake.display(),
        restored.nodes.len()
    );
    let summary = run_live(
        LiveOptions {
            workers: a.workers,
            lake: LakeConfig::at(&a.lake),
            lateness: Duration::from_secs(a.lateness_seconds),
            commit_every: Duration::from_secs(a.commit_interval_seconds),
        },
        node_cfg,
        rx,
        Arc::clone(&shared),
        &restored,
    )?;
    // WebSocket clients are not closed by the HTTP server's graceful shutdown: tell them.
    shared.hub.close_all();
    let _ = stop_http.send(());
    let _ = runtime.block_on(server);
    let rejected: u64 = summary.rejected.values().sum();
    eprintln!(
        "kaiabc run: stopped; {} events in, {} applied, {} rejected, {} rows in {} lake files, \
         {} nodes resumed, {} node checkpoints saved",
        summary.events_in,
        summary.applied,
        rejected,
        summary.rows_committed,
        summary.files_committed,
        summary.nodes_restored,
        summary.checkpoints_saved
    );
    Ok(())
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
