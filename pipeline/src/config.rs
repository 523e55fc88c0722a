//! The config file of `kaiabc run`, `bridge` and `token`: TOML whose keys stand for the flags'
//! environment variables, so that flags beat the environment, which beats the file, which beats
//! the built-in defaults.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Every key a config file may hold: (`section.key`, environment variable, flag, what it is).
pub const KEYS: &[(&str, &str, &str, &str)] = &[
    (
        "server.http",
        "KAIABC_HTTP",
        "--http",
        "address of the HTTP API",
    ),
    (
        "server.state_dir",
        "KAIABC_STATE_DIR",
        "--state-dir",
        "node registry and generated JWT secret",
    ),
    (
        "auth.jwt_secret",
        "KAIABC_JWT_SECRET",
        "",
        "HS256 secret of the API's tokens (32 bytes or more)",
    ),
    (
        "log.format",
        "KAIABC_LOG_FORMAT",
        "--log-format",
        "stderr logs: text, or json (one object per event, for Loki)",
    ),
    (
        "mqtt.listen",
        "KAIABC_MQTT_LISTEN",
        "--mqtt-listen",
        "address of the embedded broker",
    ),
    (
        "mqtt.tls_listen",
        "KAIABC_MQTT_TLS_LISTEN",
        "--mqtt-tls-listen",
        "second listener of the embedded broker, with TLS (e.g. 0.0.0.0:8883)",
    ),
    (
        "mqtt.tls_cert",
        "KAIABC_MQTT_TLS_CERT",
        "--mqtt-tls-cert",
        "PEM certificate (chain) of the TLS listener",
    ),
    (
        "mqtt.tls_key",
        "KAIABC_MQTT_TLS_KEY",
        "--mqtt-tls-key",
        "PEM private key of the TLS listener",
    ),
    (
        "mqtt.url",
        "KAIABC_MQTT_URL",
        "--mqtt-url",
        "external broker instead of the embedded one",
    ),
    (
        "mqtt.client_id",
        "KAIABC_MQTT_CLIENT_ID",
        "--mqtt-client-id",
        "client id at the external broker",
    ),
    (
        "mqtt.anonymous",
        "KAIABC_MQTT_ANONYMOUS",
        "--mqtt-anonymous",
        "let MQTT clients in without credentials",
    ),
    (
        "mqtt.no_bridge",
        "KAIABC_NO_BRIDGE",
        "--no-bridge",
        "leave MQTT → Kafka to `kaiabc bridge`",
    ),
    (
        "kafka.brokers",
        "KAIABC_KAFKA_BROKERS",
        "--kafka-brokers",
        "bootstrap servers: turns on the Kafka path",
    ),
    (
        "kafka.partitions",
        "KAIABC_KAFKA_PARTITIONS",
        "--kafka-partitions",
        "partitions of created topics",
    ),
    (
        "kafka.session_timeout_ms",
        "KAIABC_KAFKA_SESSION_TIMEOUT_MS",
        "--kafka-session-timeout-ms",
        "consumer group session timeout",
    ),
    (
        "kafka.group",
        "KAIABC_KAFKA_GROUP",
        "--kafka-group",
        "the pipeline's consumer group",
    ),
    ("lake.root", "KAIABC_LAKE", "--lake", "the lake's directory"),
    (
        "lake.commit_interval_seconds",
        "KAIABC_COMMIT_INTERVAL_SECONDS",
        "--commit-interval-seconds",
        "seconds between lake commits",
    ),
    (
        "lake.inline",
        "KAIABC_LAKE_INLINE",
        "--lake-inline",
        "write the lake on the dataflow workers (benchmark baseline)",
    ),
    (
        "lake.lateness_seconds",
        "KAIABC_LATENESS_SECONDS",
        "--lateness-seconds",
        "allowed lateness of event time",
    ),
    (
        "lake.max_reading_age_hours",
        "KAIABC_MAX_READING_AGE_HOURS",
        "--max-reading-age-hours",
        "refuse readings older than this before receipt or their node's newest",
    ),
    (
        "wal.dir",
        "KAIABC_WAL",
        "--wal",
        "write-ahead log of acknowledged messages (default: LAKE/_wal)",
    ),
    (
        "wal.max_mb",
        "KAIABC_WAL_MAX_MB",
        "--wal-max-mb",
        "most the write-ahead log may hold on disk before ingestion answers 503",
    ),
    (
        "wal.no_fsync",
        "KAIABC_WAL_NO_FSYNC",
        "--wal-no-fsync",
        "benchmarks only: acknowledge before the disk has it (a crash can lose it)",
    ),
    (
        "dataflow.workers",
        "KAIABC_WORKERS",
        "--workers",
        "timely worker threads",
    ),
    (
        "cluster.processes",
        "KAIABC_PROCESSES",
        "--processes",
        "processes in the timely cluster (above 1: input from Kafka)",
    ),
    (
        "cluster.process",
        "KAIABC_PROCESS",
        "--process",
        "this process's index in the cluster",
    ),
    (
        "cluster.hosts",
        "KAIABC_HOSTS",
        "--hosts",
        "the cluster's hosts file: host:port a line, in process order",
    ),
    (
        "cluster.connect_seconds",
        "KAIABC_CLUSTER_CONNECT_SECONDS",
        "--connect-seconds",
        "how long a process waits for the others to connect",
    ),
    (
        "fleet.offline_after",
        "KAIABC_OFFLINE_AFTER",
        "--offline-after",
        "minutes without a reading before a node is offline",
    ),
    (
        "fleet.stale_after",
        "KAIABC_STALE_AFTER",
        "--stale-after",
        "minutes without a reading before a node is stale",
    ),
    (
        "fleet.resolution_minutes",
        "KAIABC_FLEET_RESOLUTION_MINUTES",
        "--fleet-resolution-minutes",
        "minutes between refreshes of a node's clock in the fleet's views",
    ),
    (
        "fleet.outlier_distance_hours",
        "KAIABC_OUTLIER_DISTANCE_HOURS",
        "--outlier-distance-hours",
        "hours from its group's median period before a node is an outlier",
    ),
    (
        "fleet.outlier_windows",
        "KAIABC_OUTLIER_WINDOWS",
        "--outlier-windows",
        "rhythm windows an outlier is judged over",
    ),
    (
        "fleet.dead_letter_alert_per_hour",
        "KAIABC_DEAD_LETTER_ALERT_PER_HOUR",
        "--dead-letter-alert-per-hour",
        "dead letters in a node's last hour above which DEAD_LETTER_RATE is raised",
    ),
    (
        "fleet.desync_below",
        "KAIABC_DESYNC_BELOW",
        "--desync-below",
        "order parameter R below which a group is DESYNCHRONIZED",
    ),
    (
        "limits.ingest_per_minute",
        "KAIABC_RATE_LIMIT_INGEST",
        "--rate-limit-ingest",
        "ingestion requests a minute per API key or token",
    ),
    (
        "limits.query_per_minute",
        "KAIABC_RATE_LIMIT_QUERY",
        "--rate-limit-query",
        "state queries a minute per API key or token",
    ),
    (
        "limits.change_per_minute",
        "KAIABC_RATE_LIMIT_CHANGE",
        "--rate-limit-change",
        "configuration updates and commands a minute per API key or token",
    ),
    (
        "limits.ws_per_client",
        "KAIABC_WS_PER_CLIENT",
        "--ws-per-client",
        "WebSocket connections open at once per client",
    ),
    (
        "limits.http_max_connections",
        "KAIABC_HTTP_MAX_CONNECTIONS",
        "--http-max-connections",
        "HTTP connections open at once",
    ),
    (
        "limits.http_max_connections_per_address",
        "KAIABC_HTTP_MAX_CONNECTIONS_PER_ADDRESS",
        "--http-max-connections-per-address",
        "HTTP connections open at once from one client address",
    ),
    (
        "limits.http_idle_seconds",
        "KAIABC_HTTP_IDLE_SECONDS",
        "--http-idle-seconds",
        "close an HTTP connection idle this long",
    ),
    (
        "limits.mqtt_max_connections",
        "KAIABC_MQTT_MAX_CONNECTIONS",
        "--mqtt-max-connections",
        "MQTT connections open at once",
    ),
    (
        "limits.mqtt_max_connections_per_address",
        "KAIABC_MQTT_MAX_CONNECTIONS_PER_ADDRESS",
        "--mqtt-max-connections-per-address",
        "MQTT connections open at once from one client address",
    ),
    (
        "limits.mqtt_readings_per_second",
        "KAIABC_MQTT_READINGS_PER_SECOND",
        "--mqtt-readings-per-second",
        "readings an MQTT connection may publish a second (faster ones are paced)",
    ),
];

/// Errors reading a config file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("reading the config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// It is not valid TOML.
    #[error("the config file {path} is not valid TOML: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
    /// A key nobody reads (a typo would otherwise be silently ignored).
    #[error("the config file {path} has an unknown key {key:?}; known keys: {known}")]
    UnknownKey {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
        /// The keys it may hold.
        known: String,
    },
    /// A value of the wrong kind (a table, an array, a date).
    #[error("the config file {path}: {key} must be a string, number or boolean")]
    Value {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
    },
}

/// The environment variables a config file sets: `(variable, value)` for each key it holds.
pub fn read(path: &Path) -> Result<BTreeMap<&'static str, String>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(path, &text)
}

fn parse(path: &Path, text: &str) -> Result<BTreeMap<&'static str, String>, ConfigError> {
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| ConfigError::Syntax {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    let mut flat: Vec<(String, &toml::Value)> = Vec::new();
    for (section, v) in &table {
        match v {
            toml::Value::Table(t) => {
                flat.extend(t.iter().map(|(k, v)| (format!("{section}.{k}"), v)));
            }
            other => flat.push((section.clone(), other)),
        }
    }
    let mut env = BTreeMap::new();
    for (key, value) in flat {
        let Some((_, var, _, _)) = KEYS.iter().find(|(k, ..)| *k == key) else {
            return Err(ConfigError::UnknownKey {
                path: path.to_path_buf(),
                key,
                known: KEYS.iter().map(|k| k.0).collect::<Vec<_>>().join(", "),
            });
        };
        let text = match value {
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            _ => {
                return Err(ConfigError::Value {
                    path: path.to_path_buf(),
                    key,
                })
            }
        };
        env.insert(*var, text);
    }
    Ok(env)
}

/// As [`read`], from the file's text (e.g. a request body).
pub fn parse_text(text: &str) -> Result<BTreeMap<&'static str, String>, ConfigError> {
    parse(Path::new("<config>"), text)
}

/// The `kaiabc run` flag an environment variable stands for (`None` for variables only).
pub fn flag_of(var: &str) -> Option<&'static str> {
    KEYS.iter()
        .find(|(_, v, f, _)| *v == var && !f.is_empty())
        .map(|(_, _, f, _)| *f)
}

/// The config file named by `--config FILE` (or `--config=FILE`) in `args`, else by
/// `KAIABC_CONFIG`.
pub fn path_from(args: &[String]) -> Option<PathBuf> {
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--config" {
            return it.next().map(PathBuf::from);
        }
        if let Some(p) = a.strip_prefix("--config=") {
            return Some(PathBuf::from(p));
        }
    }
    std::env::var_os("KAIABC_CONFIG").map(PathBuf::from)
}

/// A commented config file with every key (`kaiabc config template`); `default_of(flag)` gives
/// a flag's built-in default (from the command's own definition, so they cannot drift).
pub fn template(default_of: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::from(
        "# kaiabc config file: `kaiabc run --config FILE` (or KAIABC_CONFIG=FILE).\n\
         # Precedence: flags > environment variables > this file > built-in defaults.\n\
         # Every key is optional; uncomment what you change.\n",
    );
    let mut section = "";
    for (key, var, flag, what) in KEYS {
        let (s, k) = key.split_once('.').expect("section.key");
        if s != section {
            section = s;
            let _ = write!(out, "\n[{s}]\n");
        }
        let via = if flag.is_empty() {
            var.to_string()
        } else {
            format!("{flag}, {var}")
        };
        let example = match default_of(flag) {
            Some(d) if d.parse::<f64>().is_ok() || d == "true" || d == "false" => d,
            Some(d) => format!("{d:?}"),
            None => "\"\"".into(),
        };
        let _ = writeln!(out, "# {what} ({via})\n# {k} = {example}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Result<BTreeMap<&'static str, String>, ConfigError> {
        parse(Path::new("kaiabc.toml"), text)
    }

    #[test]
    fn keys_become_environment_variables() {
        let env = p(
            "[server]\nhttp = \"0.0.0.0:8080\"\n[dataflow]\nworkers = 4\n\
                     [mqtt]\nanonymous = true\n[auth]\njwt_secret = \"s\"\n",
        )
        .unwrap();
        assert_eq!(env["KAIABC_HTTP"], "0.0.0.0:8080");
        assert_eq!(env["KAIABC_WORKERS"], "4");
        assert_eq!(env["KAIABC_MQTT_ANONYMOUS"], "true");
        assert_eq!(env["KAIABC_JWT_SECRET"], "s");
        assert_eq!(env.len(), 4);
    }

    #[test]
    fn typos_and_bad_values_are_errors() {
        let e = p("[mqtt]\nlisen = \"x\"\n").unwrap_err();
        assert!(
            matches!(&e, ConfigError::UnknownKey { key, .. } if key == "mqtt.lisen"),
            "{e}"
        );
        assert!(e.to_string().contains("mqtt.listen"), "{e}");
        let e = p("[lake]\nroot = [1]\n").unwrap_err();
        assert!(matches!(e, ConfigError::Value { .. }), "{e}");
        let e = p("[lake\nroot = 1\n").unwrap_err();
        assert!(matches!(e, ConfigError::Syntax { .. }), "{e}");
        assert!(
            p("workers = 2\n").is_err(),
            "keys outside a section are unknown"
        );
    }

    #[test]
    fn the_template_parses_back_once_uncommented() {
        let t = template(|flag| (flag == "--workers").then(|| "1".to_string()));
        assert!(t.contains("# workers = 1\n"), "{t}");
        let uncommented: String = t
            .lines()
            .map(|l| match l.strip_prefix("# ") {
                Some(kv) if kv.contains(" = ") => format!("{kv}\n"),
                _ if l.starts_with('#') => String::new(),
                _ => format!("{l}\n"),
            })
            .collect();
        let env = p(&uncommented).unwrap();
        assert_eq!(env.len(), KEYS.len());
    }

    #[test]
    fn the_config_path_comes_from_the_flag() {
        let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            path_from(&args(&["kaiabc", "run", "--config", "a.toml"])),
            Some(PathBuf::from("a.toml"))
        );
        assert_eq!(
            path_from(&args(&["kaiabc", "run", "--config=b.toml"])),
            Some(PathBuf::from("b.toml"))
        );
    }
}
