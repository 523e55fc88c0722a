//! The dataflow's consumer of `kaiabc.readings`: polled without blocking from the source
//! worker's loop, with offsets committed only when the caller says the records up to them are
//! safe (their rows committed to the lake and their nodes checkpointed).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::config::FromClientConfigAndContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::{Headers, Message};
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use super::{
    KafkaConfig, KafkaError, NODE_ERROR_HEADER, READINGS_TOPIC, RECEIVED_AT_HEADER, SOURCE_HEADER,
};

/// How long an offset commit may wait for the broker.
pub const COMMIT_WAIT: Duration = Duration::from_secs(10);

/// How long reading the topic's partitions may wait for the broker.
const METADATA_WAIT: Duration = Duration::from_secs(10);

/// The next offset to read, per partition of `kaiabc.readings`.
pub type Offsets = BTreeMap<i32, i64>;

/// One record of `kaiabc.readings`.
#[derive(Clone, Debug)]
pub struct ReadingRecord {
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// The node the original transport vouched for.
    pub key: Option<String>,
    /// The message as the node sent it.
    pub payload: Vec<u8>,
    /// The original source (`mqtt:TOPIC`), from the `source` header.
    pub source: Option<String>,
    /// The original arrival time, from the `received_at` header.
    pub received_at: Option<String>,
    /// Why the transport vouched for no node, from the `node_error` header.
    pub node_error: Option<String>,
    /// The record's Kafka timestamp (milliseconds since the epoch).
    pub timestamp_ms: Option<i64>,
}

/// Keeps librdkafka's per-partition consumer lag from its statistics.
#[derive(Default)]
struct Context {
    lag: Arc<Mutex<BTreeMap<i32, i64>>>,
}

impl ClientContext for Context {
    fn stats(&self, statistics: Statistics) {
        if let Some(topic) = statistics.topics.get(READINGS_TOPIC) {
            let lag: BTreeMap<i32, i64> = topic
                .partitions
                .iter()
                .filter(|(p, s)| **p >= 0 && s.consumer_lag >= 0)
                .map(|(p, s)| (*p, s.consumer_lag))
                .collect();
            if let Ok(mut l) = self.lag.lock() {
                *l = lag;
            }
        }
    }
}

impl ConsumerContext for Context {
    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                tracing::info!(partitions = tpl.count(), "Kafka partitions assigned")
            }
            Rebalance::Revoke(tpl) => {
                tracing::info!(partitions = tpl.count(), "Kafka partitions revoked")
            }
            Rebalance::Error(e) => tracing::warn!(error = %e, "Kafka rebalance"),
        }
    }
}

/// A consumer of `kaiabc.readings` in the configured group, committing by hand.
pub struct KafkaSource {
    /// Shared with the thread a commit runs on (see [`KafkaSource::commit`]).
    consumer: Arc<BaseConsumer<Context>>,
    positions: Offsets,
    lag: Arc<Mutex<BTreeMap<i32, i64>>>,
}

impl std::fmt::Debug for KafkaSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSource")
            .field("positions", &self.positions)
            .finish()
    }
}

/// The headers the pipeline reads from a record (each text; invalid UTF-8 is replaced, not
/// refused).
#[derive(Debug, Default, PartialEq)]
struct RecordHeaders {
    /// `source`: where the message first came in.
    source: Option<String>,
    /// `received_at`: when it came in.
    received_at: Option<String>,
    /// `node_error`: why the transport vouched for no node.
    node_error: Option<String>,
}

impl RecordHeaders {
    /// Of each header, the first one's value, read in one pass.
    fn of(m: &impl Message) -> Self {
        let mut found = Self::default();
        let Some(hs) = m.headers() else {
            return found;
        };
        let (mut source, mut received_at, mut node_error) = (false, false, false);
        for h in hs.iter() {
            let (seen, slot) = match h.key {
                SOURCE_HEADER => (&mut source, &mut found.source),
                RECEIVED_AT_HEADER => (&mut received_at, &mut found.received_at),
                NODE_ERROR_HEADER => (&mut node_error, &mut found.node_error),
                _ => continue,
            };
            if !*seen {
                *seen = true;
                *slot = h.value.map(|v| String::from_utf8_lossy(v).into_owned());
            }
        }
        found
    }
}

impl KafkaSource {
    /// Joins the group and subscribes to `kaiabc.readings`. A new group starts at the earliest
    /// offsets: nothing produced before the pipeline's first start is skipped.
    pub fn new(cfg: &KafkaConfig) -> Result<Self, KafkaError> {
        let source = Self::unassigned(cfg)?;
        source
            .consumer
            .subscribe(&[READINGS_TOPIC])
            .map_err(KafkaError::client("subscribing"))?;
        Ok(source)
    }

    /// Reads the partitions `p` of `kaiabc.readings` with `p mod processes = process`, as Arroyo
    /// assigns partitions to a source's subtasks, each from the group's committed offset (the
    /// earliest where there is none). The assignment is static, with no group rebalance: a
    /// process of a timely cluster always reads the same partitions, and the cluster's exchange
    /// takes each reading to the worker that owns its node. The partitions are those the
    /// broker lists when the source starts (the topic must exist).
    pub fn assigned(
        cfg: &KafkaConfig,
        process: usize,
        processes: usize,
    ) -> Result<Self, KafkaError> {
        let source = Self::unassigned(cfg)?;
        let metadata = source
            .consumer
            .fetch_metadata(Some(READINGS_TOPIC), METADATA_WAIT)
            .map_err(KafkaError::client("reading the topic's partitions"))?;
        let topic = metadata
            .topics()
            .iter()
            .find(|t| t.name() == READINGS_TOPIC)
            .filter(|t| t.error().is_none() && !t.partitions().is_empty())
            .ok_or(KafkaError::NoPartitions(READINGS_TOPIC))?;
        let mut tpl = TopicPartitionList::new();
        for p in topic.partitions() {
            if (p.id() as usize) % processes.max(1) == process {
                tpl.add_partition_offset(READINGS_TOPIC, p.id(), Offset::Stored)
                    .map_err(KafkaError::client("building the assignment"))?;
            }
        }
        tracing::info!(
            process,
            processes,
            partitions = ?tpl.elements().iter().map(|e| e.partition()).collect::<Vec<_>>(),
            "Kafka partitions assigned by process"
        );
        source
            .consumer
            .assign(&tpl)
            .map_err(KafkaError::client("assigning partitions"))?;
        Ok(source)
    }

    /// A consumer in the group, committing by hand, not yet reading any partition.
    fn unassigned(cfg: &KafkaConfig) -> Result<Self, KafkaError> {
        let mut c = cfg.client();
        c.set("group.id", &cfg.group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set(
                "session.timeout.ms",
                cfg.session_timeout.as_millis().to_string(),
            )
            .set(
                "heartbeat.interval.ms",
                (cfg.session_timeout.as_millis() / 4).max(100).to_string(),
            )
            .set("statistics.interval.ms", "1000")
            // Low latency: answer fetches as soon as one record is there.
            .set("fetch.wait.max.ms", "5");
        let context = Context::default();
        let lag = Arc::clone(&context.lag);
        let consumer = BaseConsumer::from_config_and_context(&c, context)
            .map(Arc::new)
            .map_err(KafkaError::client("creating the consumer"))?;
        Ok(Self {
            consumer,
            positions: Offsets::new(),
            lag,
        })
    }

    /// The next record, waiting at most `timeout` (zero: only what has been fetched).
    pub fn poll(&mut self, timeout: Duration) -> Option<Result<ReadingRecord, KafkaError>> {
        let m = match self.consumer.poll(timeout)? {
            Ok(m) => m,
            Err(source) => {
                return Some(Err(KafkaError::Client {
                    what: "consuming",
                    source,
                }))
            }
        };
        self.positions.insert(m.partition(), m.offset() + 1);
        let RecordHeaders {
            source,
            received_at,
            node_error,
        } = RecordHeaders::of(&m);
        Some(Ok(ReadingRecord {
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
            payload: m.payload().unwrap_or_default().to_vec(),
            source,
            received_at,
            node_error,
            timestamp_ms: m.timestamp().to_millis(),
        }))
    }

    /// The offsets after the last record returned, per partition.
    pub fn positions(&self) -> &Offsets {
        &self.positions
    }

    /// Commits `offsets` for the group and waits for the broker's answer, for at most
    /// `COMMIT_WAIT`: a restart resumes there. librdkafka's synchronous commit waits without
    /// a limit (with the broker stopped, a pipeline asked to stop hung on it), so it runs on a
    /// thread of its own; one that does not answer in time counts as not committed, which is
    /// always safe (more is read again).
    pub fn commit(&self, offsets: &Offsets) -> Result<(), KafkaError> {
        if offsets.is_empty() {
            return Ok(());
        }
        let mut tpl = TopicPartitionList::new();
        for (p, o) in offsets {
            tpl.add_partition_offset(READINGS_TOPIC, *p, Offset::Offset(*o))
                .map_err(KafkaError::client("building the offsets"))?;
        }
        let consumer = Arc::clone(&self.consumer);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("kafka-commit".into())
            .spawn(move || {
                let _ = tx.send(consumer.commit(&tpl, CommitMode::Sync));
            })
            .map_err(|e| KafkaError::Timeout(format!("starting the commit: {e}")))?;
        match rx.recv_timeout(COMMIT_WAIT) {
            Ok(done) => done.map_err(KafkaError::client("committing offsets")),
            Err(_) => Err(KafkaError::Timeout(format!(
                "the broker did not answer the offset commit within {COMMIT_WAIT:?}"
            ))),
        }
    }

    /// Consumer lag per partition, from librdkafka's statistics (refreshed every second).
    pub fn lag(&self) -> Arc<Mutex<BTreeMap<i32, i64>>> {
        Arc::clone(&self.lag)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::message::{Header, OwnedHeaders, OwnedMessage, Timestamp};

    fn message(headers: &[(&str, Option<&[u8]>)]) -> OwnedMessage {
        let hs = headers
            .iter()
            .fold(OwnedHeaders::new(), |hs, (key, value)| {
                hs.insert(Header { key, value: *value })
            });
        OwnedMessage::new(
            Some(b"{}".to_vec()),
            None,
            READINGS_TOPIC.into(),
            Timestamp::NotAvailable,
            0,
            0,
            Some(hs),
        )
    }

    #[test]
    fn the_first_of_each_known_header_is_read_and_others_are_ignored() {
        let m = message(&[
            ("other", Some(b"x")),
            (RECEIVED_AT_HEADER, Some(b"2026-01-05T00:00:00Z")),
            (SOURCE_HEADER, Some(b"mqtt:kaiabc/sensors/n1")),
            // A second source: the first one counts, as does a first without a value.
            (SOURCE_HEADER, Some(b"mqtt:elsewhere")),
            (NODE_ERROR_HEADER, None),
            (NODE_ERROR_HEADER, Some(b"late")),
        ]);
        let RecordHeaders {
            source,
            received_at,
            node_error,
        } = RecordHeaders::of(&m);
        assert_eq!(source.as_deref(), Some("mqtt:kaiabc/sensors/n1"));
        assert_eq!(received_at.as_deref(), Some("2026-01-05T00:00:00Z"));
        assert_eq!(node_error, None);
        // Invalid UTF-8 is replaced; no headers at all read as none.
        let h = RecordHeaders::of(&message(&[(SOURCE_HEADER, Some(b"a\xffb"))]));
        assert_eq!(h.source.as_deref(), Some("a\u{fffd}b"));
        let bare = OwnedMessage::new(None, None, "t".into(), Timestamp::NotAvailable, 0, 0, None);
        assert_eq!(RecordHeaders::of(&bare), RecordHeaders::default());
    }
}
