//! `kaiabc cluster`: launches a timely cluster of local processes (`kaiabc replay …` or
//! `kaiabc run …` with `--processes N --process I --hosts FILE` added, on free loopback ports)
//! and supervises it. A timely cluster is static, so when one process dies the others stop
//! (exit 75, see `crate::cluster`); the supervisor then stops the rest and names the one that
//! died. A replay then fails (it is not resumable mid-way); a live cluster is started again,
//! and resumes from its last aligned checkpoint.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::cluster::EXIT_PEER_LOST;

/// Arguments of `kaiabc cluster`.
#[derive(Debug, Args)]
pub struct ClusterCommandArgs {
    /// Local processes to launch.
    #[arg(long, default_value_t = 2)]
    processes: usize,
    /// Where to write the hosts file (loopback addresses on free ports); by default a file in
    /// the system's temporary directory, removed when the cluster ends.
    #[arg(long)]
    hosts_file: Option<PathBuf>,
    /// The command each process runs: `replay …` or `run …` (after `--`).
    #[arg(required = true, last = true)]
    command: Vec<String>,
}

/// How the cluster's processes ended.
#[derive(Debug)]
enum Ended {
    /// Every process finished successfully.
    Done,
    /// A process died or lost its peer: its index and status.
    Lost(usize, ExitStatus),
    /// A process failed on its own (bad input, bad flags): its index and status.
    Failed(usize, ExitStatus),
    /// The supervisor was asked to stop.
    Stopped,
}

/// Free loopback ports, one per process (bound and released: the processes bind them next).
fn free_ports(n: usize) -> Result<Vec<u16>> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<_>>()
        .context("finding free loopback ports")?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr()?.port()))
        .collect()
}

fn write_hosts(path: &Path, ports: &[u16]) -> Result<()> {
    let text: String = ports.iter().map(|p| format!("127.0.0.1:{p}\n")).collect();
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// Sends SIGTERM to a child (a live run then drains and commits before it exits).
fn terminate(child: &Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        // SAFETY: kill(2) with a child's pid and a signal number has no memory effects.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }
}

/// Whether a status means the process died or lost its cluster (restartable), rather than
/// failing on its own.
fn lost(status: &ExitStatus) -> bool {
    use std::os::unix::process::ExitStatusExt;
    status.signal().is_some() || status.code() == Some(EXIT_PEER_LOST)
}

/// How long the other processes are given to stop by themselves once one has failed.
const GRACE: Duration = Duration::from_secs(2);

/// Notes the processes that have exited.
fn reap(children: &mut [Option<Child>], statuses: &mut [Option<ExitStatus>]) -> Result<()> {
    for (i, slot) in children.iter_mut().enumerate() {
        if let Some(child) = slot {
            if let Some(status) = child.try_wait()? {
                tracing::info!(process = i, %status, "cluster process ended");
                statuses[i] = Some(status);
                *slot = None;
            }
        }
    }
    Ok(())
}

/// Which process brought the cluster down: one killed by a signal, else one that failed on its
/// own, else one that lost its peer (exit 75).
fn culprit(statuses: &[Option<ExitStatus>]) -> Ended {
    use std::os::unix::process::ExitStatusExt;
    let failed = |want: &dyn Fn(&ExitStatus) -> bool| {
        statuses
            .iter()
            .enumerate()
            .find_map(|(i, s)| s.filter(|s| !s.success() && want(s)).map(|s| (i, s)))
    };
    if let Some((i, s)) = failed(&|s| s.signal().is_some()) {
        Ended::Lost(i, s)
    } else if let Some((i, s)) = failed(&|s| !lost(s)) {
        Ended::Failed(i, s)
    } else if let Some((i, s)) = failed(&|_| true) {
        Ended::Lost(i, s)
    } else {
        Ended::Done
    }
}

/// Launches the processes and waits until they all finish, one dies or `stop` is set.
fn run_once(a: &ClusterCommandArgs, hosts: &Path, stop: &AtomicBool) -> Result<Ended> {
    write_hosts(hosts, &free_ports(a.processes)?)?;
    let exe = std::env::current_exe().context("finding the kaiabc binary")?;
    let mut children = Vec::new();
    for i in 0..a.processes {
        let child = Command::new(&exe)
            .args(&a.command)
            .args(["--processes", &a.processes.to_string()])
            .args(["--process", &i.to_string()])
            .arg("--hosts")
            .arg(hosts)
            .spawn()
            .with_context(|| format!("starting process {i}"))?;
        tracing::info!(process = i, pid = child.id(), "cluster process started");
        children.push(Some(child));
    }
    let mut statuses: Vec<Option<ExitStatus>> = vec![None; a.processes];
    let ended = loop {
        if stop.load(Ordering::SeqCst) {
            children.iter().flatten().for_each(terminate);
            break Ended::Stopped;
        }
        reap(&mut children, &mut statuses)?;
        if statuses.iter().flatten().any(|s| !s.success()) {
            // The others stop by themselves once their peer is gone (exit 75): give them a
            // moment, so the one that died first is told apart from those that lost it.
            let grace = Instant::now();
            while children.iter().any(Option::is_some) && grace.elapsed() < GRACE {
                std::thread::sleep(Duration::from_millis(20));
                reap(&mut children, &mut statuses)?;
            }
            children.iter().flatten().for_each(terminate);
            break culprit(&statuses);
        }
        if statuses.iter().all(Option::is_some) {
            break Ended::Done;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // Wait for the rest (they stop on SIGTERM, or exit 75 on their own once the peer is gone).
    for child in children.iter_mut().flatten() {
        child.wait()?;
    }
    Ok(ended)
}

/// Runs `kaiabc cluster`.
pub fn cluster(a: &ClusterCommandArgs) -> Result<()> {
    if a.processes == 0 {
        bail!("--processes must be at least 1");
    }
    let live = match a.command.first().map(String::as_str) {
        Some("replay") => false,
        Some("run") => true,
        other => bail!("kaiabc cluster runs `replay …` or `run …`, not {other:?}"),
    };
    if a.command
        .iter()
        .any(|c| matches!(c.as_str(), "--processes" | "--process" | "--hosts"))
    {
        bail!("kaiabc cluster sets --processes, --process and --hosts itself");
    }
    // Without `--hosts-file`, a file of the supervisor's own in the temporary directory,
    // removed however the supervisor ends (the guard is dropped on every return).
    let (hosts, _removed) = match &a.hosts_file {
        Some(path) => (path.clone(), None),
        None => {
            let own =
                std::env::temp_dir().join(format!("kaiabc-cluster-{}.hosts", std::process::id()));
            (own.clone(), tempfile::TempPath::try_from_path(own).ok())
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    watch_signals(Arc::clone(&stop))?;
    let mut backoff = RESTART_FIRST;
    loop {
        let started = Instant::now();
        match run_once(a, &hosts, &stop)? {
            Ended::Done | Ended::Stopped => return Ok(()),
            Ended::Failed(i, status) => bail!("process {i} failed ({status})"),
            Ended::Lost(i, status) if !live => bail!(
                "process {i} died ({status}); the others stopped. A replay is not resumable \
                 mid-way: remove the lake it wrote to and run it again"
            ),
            Ended::Lost(i, status) => {
                // A cluster that ran a while starts again at once; one that keeps dying backs
                // off, up to RESTART_MAX.
                if started.elapsed() > RESTART_RESET {
                    backoff = RESTART_FIRST;
                }
                eprintln!(
                    "kaiabc cluster: process {i} died ({status}); the others stopped; \
                     starting the cluster again in {:.1} s, from its last checkpoint",
                    backoff.as_secs_f64()
                );
                let until = Instant::now() + backoff;
                while Instant::now() < until {
                    if stop.load(Ordering::SeqCst) {
                        return Ok(());
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                backoff = (backoff * 2).min(RESTART_MAX);
            }
        }
    }
}

/// The wait before a live cluster's first restart…
const RESTART_FIRST: Duration = Duration::from_millis(500);
/// …doubling while it keeps dying, up to this…
const RESTART_MAX: Duration = Duration::from_secs(30);
/// …and back to the first once a run has lasted this long.
const RESTART_RESET: Duration = Duration::from_secs(60);

/// Sets `stop` on SIGTERM or Ctrl-C (the supervisor then sends SIGTERM to every process).
fn watch_signals(stop: Arc<AtomicBool>) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the signal watcher")?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            rt.block_on(async move {
                use tokio::signal::unix::{signal, SignalKind};
                let Ok(mut term) = signal(SignalKind::terminate()) else {
                    return;
                };
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
                stop.store(true, Ordering::SeqCst);
            })
        })
        .context("starting the signal watcher")?;
    Ok(())
}
