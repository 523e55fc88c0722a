//! Kafka: the topics KaiABC Stream reads and writes, the producer every writer shares, and the
//! dataflow's consumer of `kaiabc.readings`.
//!
//! Records on `kaiabc.readings` carry one MQTT or HTTP message exactly as the node sent it (one
//! reading or a JSON array), keyed by the node the transport vouched for, with its source and
//! arrival time in headers: a consumer rebuilds the message the live pipeline would have seen,
//! so the Kafka path and the embedded path run the same validation.

mod sink;
mod source;

pub use sink::{Delivered, KafkaProducer};
pub use source::{KafkaSource, Offsets, ReadingRecord};

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::RDKafkaErrorCode;

/// Raw sensor messages, keyed by node id.
pub const READINGS_TOPIC: &str = "kaiabc.readings";
/// Each applied reading's `OscillatorState` as JSON, keyed by node id.
pub const STATES_TOPIC: &str = "kaiabc.states";
/// Rejected input as JSON `DeadLetter`s, keyed by node id when known.
pub const DEAD_LETTERS_TOPIC: &str = "kaiabc.dead-letters";
/// Each group's view at the top of every hour (`FleetSnapshot` JSON), keyed by
/// `{group_by}/{group}`.
pub const FLEET_TOPIC: &str = "kaiabc.fleet";
/// Each alert raised or cleared (`AlertRow` JSON), keyed by its node or its group.
pub const ALERTS_TOPIC: &str = "kaiabc.alerts";
/// The consumer group of the pipeline.
pub const PIPELINE_GROUP: &str = "kaiabc-pipeline";

/// Header naming where a message came from (`mqtt:TOPIC`, `http:PATH`).
pub const SOURCE_HEADER: &str = "source";
/// Header with the arrival time (RFC 3339, microseconds).
pub const RECEIVED_AT_HEADER: &str = "received_at";
/// Header present when the transport vouched for no node: why (the record then has no key).
pub const NODE_ERROR_HEADER: &str = "node_error";

/// How to reach Kafka.
#[derive(Clone, Debug)]
pub struct KafkaConfig {
    /// `bootstrap.servers`: comma-separated `host:port`.
    pub brokers: String,
    /// Partitions of each topic the pipeline creates (topics that exist are left alone).
    pub partitions: i32,
    /// The consumer group's session timeout: how long a dead consumer holds its partitions,
    /// and about twice how long the first join takes.
    pub session_timeout: Duration,
    /// The consumer group.
    pub group: String,
    /// How long the producer waits to batch records (`linger.ms`): latency against throughput.
    pub linger: Duration,
}

impl KafkaConfig {
    /// Defaults for `brokers`: 4 partitions, 10 s sessions, group `kaiabc-pipeline`, 1 ms linger.
    pub fn new(brokers: impl Into<String>) -> Self {
        Self {
            brokers: brokers.into(),
            partitions: 4,
            session_timeout: Duration::from_secs(10),
            group: PIPELINE_GROUP.into(),
            linger: Duration::from_millis(1),
        }
    }

    fn client(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers)
            // Loopback brokers advertise 127.0.0.1; do not try ::1 first.
            .set("broker.address.family", "v4");
        c
    }
}

/// Errors of the Kafka connectors.
#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    /// librdkafka refused or failed an operation.
    #[error("Kafka {what}: {source}")]
    Client {
        /// What was being done.
        what: &'static str,
        /// librdkafka's error.
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// A topic could not be created.
    #[error("creating Kafka topic {topic}: {reason}")]
    CreateTopic {
        /// The topic.
        topic: String,
        /// The broker's answer.
        reason: String,
    },
    /// The producer's queue stayed full.
    #[error("the Kafka producer's queue is full")]
    QueueFull,
    /// The broker did not answer in time.
    #[error("Kafka: {0}")]
    Timeout(String),
    /// The topic has no partitions to read (it does not exist yet).
    #[error("Kafka topic {0} has no partitions (create it first: `kaiabc run` does)")]
    NoPartitions(&'static str),
}

impl KafkaError {
    /// A stable code for the kind of failure.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Client { .. } => "KAFKA_CLIENT",
            Self::CreateTopic { .. } => "KAFKA_CREATE_TOPIC",
            Self::QueueFull => "KAFKA_QUEUE_FULL",
            Self::Timeout(_) => "KAFKA_TIMEOUT",
            Self::NoPartitions(_) => "KAFKA_NO_PARTITIONS",
        }
    }

    fn client(what: &'static str) -> impl FnOnce(rdkafka::error::KafkaError) -> Self {
        move |source| Self::Client { what, source }
    }
}

/// Creates the readings, states and dead-letter topics with `cfg.partitions` partitions each,
/// unless they exist.
pub async fn ensure_topics(cfg: &KafkaConfig) -> Result<(), KafkaError> {
    let admin: AdminClient<DefaultClientContext> = cfg
        .client()
        .create()
        .map_err(KafkaError::client("connecting the admin client"))?;
    let topics: Vec<NewTopic<'_>> = [
        READINGS_TOPIC,
        STATES_TOPIC,
        DEAD_LETTERS_TOPIC,
        FLEET_TOPIC,
        ALERTS_TOPIC,
    ]
    .iter()
    .map(|t| NewTopic::new(t, cfg.partitions, TopicReplication::Fixed(1)))
    .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = admin
        .create_topics(&topics, &opts)
        .await
        .map_err(KafkaError::client("creating topics"))?;
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(KafkaError::CreateTopic {
                    topic,
                    reason: code.to_string(),
                })
            }
        }
    }
    Ok(())
}
