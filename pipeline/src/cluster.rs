//! Running as one process of a timely cluster: how many processes there are, which one this is,
//! and where each one's workers listen (a hosts file, one `host:port` a line, in process order).
//!
//! Timely numbers workers across the cluster: process `p` with `w` threads runs workers
//! `p·w … p·w + w − 1`, so a worker's index (which names its lake files and checkpoints, and
//! which the exchange by node hashes onto) is unique in the cluster, and worker 0 (which reads a
//! replay's files and gathers the fleet's rows) is the first thread of process 0.

use std::path::{Path, PathBuf};

/// The cluster flags, shared by `kaiabc run` and `kaiabc replay`.
#[derive(Clone, Debug, clap::Args)]
pub struct ClusterArgs {
    /// Processes in the timely cluster, each running `--workers` threads; 1 runs alone.
    #[arg(long, default_value_t = 1, env = "KAIABC_PROCESSES")]
    pub processes: usize,
    /// This process's index in the cluster, 0 to `--processes` − 1.
    #[arg(long, default_value_t = 0, env = "KAIABC_PROCESS")]
    pub process: usize,
    /// The cluster's hosts file: one `host:port` a line, in process order, where each process's
    /// workers listen for the others (needed with `--processes` above 1; blank lines and `#`
    /// comments are skipped).
    #[arg(long, env = "KAIABC_HOSTS")]
    pub hosts: Option<PathBuf>,
    /// How long a process waits for the others of its cluster to connect, seconds.
    #[arg(long, default_value_t = 60, env = "KAIABC_CLUSTER_CONNECT_SECONDS")]
    pub connect_seconds: u64,
}

impl Default for ClusterArgs {
    fn default() -> Self {
        Self {
            processes: 1,
            process: 0,
            hosts: None,
            connect_seconds: 60,
        }
    }
}

/// Why a cluster cannot be formed from the flags.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// `--processes 0`.
    #[error("--processes must be at least 1")]
    NoProcesses,
    /// `--process` is not below `--processes`.
    #[error("--process {process} is not in the cluster of {processes} (0 to {})", processes - 1)]
    ProcessOutOfRange {
        /// The index given.
        process: usize,
        /// The cluster's size.
        processes: usize,
    },
    /// `--processes` above 1 without `--hosts`.
    #[error("--processes {0} needs --hosts FILE (one host:port a line, in process order)")]
    NoHosts(usize),
    /// The hosts file could not be read.
    #[error("reading the hosts file {path}: {source}")]
    ReadHosts {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The hosts file does not list one address per process.
    #[error("the hosts file {path} lists {listed} addresses for {processes} processes")]
    HostCount {
        /// The file.
        path: PathBuf,
        /// Addresses it lists.
        listed: usize,
        /// `--processes`.
        processes: usize,
    },
    /// This process could not listen at its address.
    #[error("listening for the cluster at {address}: {source}")]
    Listen {
        /// Its address in the hosts file.
        address: String,
        /// Why.
        source: std::io::Error,
    },
    /// A process did not connect in time.
    #[error("process {process} ({address}) did not connect within {seconds} s")]
    ConnectTimeout {
        /// The process waited for.
        process: usize,
        /// Its address in the hosts file.
        address: String,
        /// `--connect-seconds`.
        seconds: u64,
    },
    /// A connection failed while the cluster was forming.
    #[error("connecting the cluster: {0}")]
    Network(std::io::Error),
    /// Timely could not start the workers.
    #[error("starting the workers: {0}")]
    Start(String),
    /// A line is not `host:port`.
    #[error("the hosts file {path}, line {line}: {text:?} is not host:port")]
    BadAddress {
        /// The file.
        path: PathBuf,
        /// Its line number.
        line: usize,
        /// What it says.
        text: String,
    },
}

impl ClusterError {
    /// A stable code for logs and tests.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NoProcesses => "CLUSTER_NO_PROCESSES",
            Self::ProcessOutOfRange { .. } => "CLUSTER_PROCESS_OUT_OF_RANGE",
            Self::NoHosts(_) => "CLUSTER_NO_HOSTS",
            Self::ReadHosts { .. } => "CLUSTER_READ_HOSTS",
            Self::HostCount { .. } => "CLUSTER_HOST_COUNT",
            Self::BadAddress { .. } => "CLUSTER_BAD_ADDRESS",
            Self::Listen { .. } => "CLUSTER_LISTEN",
            Self::ConnectTimeout { .. } => "CLUSTER_CONNECT_TIMEOUT",
            Self::Network(_) => "CLUSTER_NETWORK",
            Self::Start(_) => "CLUSTER_START",
        }
    }
}

/// Reads a hosts file: the `host:port` lines, in order.
pub fn read_hosts(path: &Path) -> Result<Vec<String>, ClusterError> {
    let text = std::fs::read_to_string(path).map_err(|source| ClusterError::ReadHosts {
        path: path.to_path_buf(),
        source,
    })?;
    let mut hosts = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let port_ok = line
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !port_ok {
            return Err(ClusterError::BadAddress {
                path: path.to_path_buf(),
                line: i + 1,
                text: line.to_string(),
            });
        }
        hosts.push(line.to_string());
    }
    Ok(hosts)
}

impl ClusterArgs {
    /// Whether this is a cluster of more than one process.
    pub fn is_cluster(&self) -> bool {
        self.processes > 1
    }

    /// Timely's configuration for `workers` threads in this process.
    pub fn timely_config(&self, workers: usize) -> Result<timely::Config, ClusterError> {
        if self.processes == 0 {
            return Err(ClusterError::NoProcesses);
        }
        if self.process >= self.processes {
            return Err(ClusterError::ProcessOutOfRange {
                process: self.process,
                processes: self.processes,
            });
        }
        if self.processes == 1 {
            return Ok(timely::Config::process(workers));
        }
        let path = self
            .hosts
            .as_deref()
            .ok_or(ClusterError::NoHosts(self.processes))?;
        let addresses = read_hosts(path)?;
        if addresses.len() != self.processes {
            return Err(ClusterError::HostCount {
                path: path.to_path_buf(),
                listed: addresses.len(),
                processes: self.processes,
            });
        }
        Ok(timely::Config {
            communication: timely::CommunicationConfig::Cluster {
                threads: workers,
                process: self.process,
                addresses,
                report: false,
                zerocopy: false,
            },
            worker: timely::WorkerConfig::default(),
        })
    }
}

impl ClusterArgs {
    /// Runs `func` on each of this process's `workers` threads, in the cluster the flags
    /// describe. The processes connect on their own terms rather than timely's: each listens at
    /// its address first, dials those before it and accepts those after it, and gives up after
    /// `--connect-seconds` with [`ClusterError::ConnectTimeout`] (timely's own setup retries
    /// forever and prints each retry on standard output, where a replay's `--json` goes).
    pub fn execute<T, F>(
        &self,
        workers: usize,
        func: F,
    ) -> Result<timely::communication::WorkerGuards<T>, ClusterError>
    where
        T: Send + 'static,
        F: Fn(&mut timely::worker::Worker) -> T + Send + Sync + 'static,
    {
        use timely::communication::allocator::zero_copy::initialize::initialize_networking_from_sockets;
        use timely::communication::allocator::{AllocatorBuilder, ProcessBuilder};
        let config = self.timely_config(workers)?;
        let timely::CommunicationConfig::Cluster {
            threads,
            process,
            addresses,
            ..
        } = config.communication
        else {
            return timely::execute(config, func).map_err(ClusterError::Start);
        };
        let timeout = std::time::Duration::from_secs(self.connect_seconds);
        let sockets = connect(&addresses, process, timeout)?;
        tracing::info!(process, processes = addresses.len(), "cluster connected");
        let hooks = timely::communication::Hooks::default();
        let allocators =
            ProcessBuilder::new_typed_vector(threads, hooks.refill.clone(), hooks.spill.clone());
        let (builders, guard) =
            initialize_networking_from_sockets(allocators, sockets, process, threads, hooks)
                .map_err(ClusterError::Network)?;
        let builders = builders.into_iter().map(AllocatorBuilder::Tcp).collect();
        timely::execute::execute_from(builders, Box::new(guard), config.worker, func)
            .map_err(ClusterError::Start)
    }
}

/// Connects this process (`me`) with every other: listens at its own address, dials each
/// process before it (sending its index, as timely does: a big-endian `u64`), and accepts each
/// after it (reading theirs). The result has a stream per other process, `None` at `me`.
fn connect(
    addresses: &[String],
    me: usize,
    timeout: std::time::Duration,
) -> Result<Vec<Option<std::net::TcpStream>>, ClusterError> {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    let deadline = std::time::Instant::now() + timeout;
    let late = |process: usize| ClusterError::ConnectTimeout {
        process,
        address: addresses[process].clone(),
        seconds: timeout.as_secs(),
    };
    let mut sockets: Vec<Option<TcpStream>> = addresses.iter().map(|_| None).collect();
    let listener = TcpListener::bind(&addresses[me]).map_err(|source| ClusterError::Listen {
        address: addresses[me].clone(),
        source,
    })?;
    listener
        .set_nonblocking(true)
        .map_err(ClusterError::Network)?;
    for (i, address) in addresses.iter().enumerate().take(me) {
        let mut stream = loop {
            match TcpStream::connect(address) {
                Ok(s) => break s,
                Err(e) => {
                    if std::time::Instant::now() > deadline {
                        return Err(late(i));
                    }
                    tracing::debug!(process = i, address, error = %e, "waiting for a process of the cluster");
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
            }
        };
        stream.set_nodelay(true).map_err(ClusterError::Network)?;
        stream
            .write_all(&(me as u64).to_be_bytes())
            .map_err(ClusterError::Network)?;
        sockets[i] = Some(stream);
    }
    while let Some(missing) = (me + 1..addresses.len()).find(|i| sockets[*i].is_none()) {
        match listener.accept() {
            Ok((mut stream, _)) => {
                stream
                    .set_nonblocking(false)
                    .map_err(ClusterError::Network)?;
                stream.set_nodelay(true).map_err(ClusterError::Network)?;
                let mut index = [0u8; 8];
                stream
                    .read_exact(&mut index)
                    .map_err(ClusterError::Network)?;
                let index = u64::from_be_bytes(index) as usize;
                if index > me && index < addresses.len() && sockets[index].is_none() {
                    sockets[index] = Some(stream);
                } else {
                    tracing::warn!(
                        index,
                        "a connection that is not a later process of the cluster, closed"
                    );
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if std::time::Instant::now() > deadline {
                    return Err(late(missing));
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => return Err(ClusterError::Network(e)),
        }
    }
    Ok(sockets)
}

/// The exit status of a process that lost a peer of its cluster (`EX_TEMPFAIL`): a supervisor
/// restarts the cluster, which resumes from its last checkpoint.
pub const EXIT_PEER_LOST: i32 = 75;

/// In a cluster, a process whose peer died cannot go on (a timely cluster is static): timely's
/// network threads panic on the closed socket, and the workers then on the poisoned queues.
/// This hook turns the first of those panics into one line on stderr and an exit with
/// [`EXIT_PEER_LOST`], instead of a page of backtraces from each thread or a worker waiting for
/// progress that will not come. Other panics keep the default hook.
pub fn exit_when_a_peer_is_lost() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        let thread = std::thread::current().name().unwrap_or("").to_string();
        let network = thread.starts_with("timely:send") || thread.starts_with("timely:recv");
        if network || message.contains("timely communication error") || message.contains("poisoned")
        {
            tracing::error!(
                thread,
                message,
                "a process of the cluster is gone; stopping so the cluster can be restarted"
            );
            std::process::exit(EXIT_PEER_LOST);
        }
        default(info);
    }));
}

/// Whether the worker of this global index is its process's first (with `workers` threads a
/// process): the one that applies the fleet's changes to the process's book.
pub fn first_of_process(index: usize, workers: usize) -> bool {
    index.is_multiple_of(workers.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(processes: usize, process: usize, hosts: Option<&Path>) -> ClusterArgs {
        ClusterArgs {
            processes,
            process,
            hosts: hosts.map(Path::to_path_buf),
            connect_seconds: 1,
        }
    }

    #[test]
    fn a_hosts_file_lists_one_address_per_process() {
        let dir = tempfile::tempdir().unwrap();
        let hosts = dir.path().join("hosts");
        std::fs::write(
            &hosts,
            "# the cluster\n127.0.0.1:2101\n\nnode-b:2101  # second\n",
        )
        .unwrap();
        assert_eq!(
            read_hosts(&hosts).unwrap(),
            ["127.0.0.1:2101", "node-b:2101"]
        );
        let config = args(2, 1, Some(&hosts)).timely_config(3).unwrap();
        match config.communication {
            timely::CommunicationConfig::Cluster {
                threads,
                process,
                addresses,
                ..
            } => {
                assert_eq!((threads, process, addresses.len()), (3, 1, 2));
            }
            other => panic!("{other:?}"),
        }
        let err = args(3, 0, Some(&hosts)).timely_config(1).unwrap_err();
        assert_eq!(err.code(), "CLUSTER_HOST_COUNT", "{err}");
        assert_eq!(
            args(2, 2, Some(&hosts))
                .timely_config(1)
                .unwrap_err()
                .code(),
            "CLUSTER_PROCESS_OUT_OF_RANGE"
        );
        assert_eq!(
            args(2, 0, None).timely_config(1).unwrap_err().code(),
            "CLUSTER_NO_HOSTS"
        );
        std::fs::write(&hosts, "127.0.0.1\n").unwrap();
        let err = args(1, 0, Some(&hosts)).timely_config(1);
        assert!(err.is_ok(), "one process reads no hosts file");
        assert_eq!(
            read_hosts(&hosts).unwrap_err().code(),
            "CLUSTER_BAD_ADDRESS"
        );
    }

    #[test]
    fn each_process_s_first_worker_applies_the_fleet() {
        let firsts: Vec<usize> = (0..6).filter(|i| first_of_process(*i, 2)).collect();
        assert_eq!(firsts, [0, 2, 4]);
    }
}
