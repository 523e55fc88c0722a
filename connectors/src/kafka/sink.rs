//! The Kafka producer: idempotent, LZ4-compressed, keyed with the Java client's murmur2
//! partitioner so every producer (ours, a node gateway's, a Java service's) puts a node's
//! records in the same partition, and so each node's records stay in order.
//!
//! LZ4 rather than zstd: the live server sends every state to `kaiabc.states` (about 600
//! bytes of JSON each), and compressing them with zstd took about a tenth of its CPU while it
//! caught up on a backlog; LZ4 costs a few times less. Every Kafka client reads both.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::config::FromClientConfigAndContext;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;

use super::{KafkaConfig, KafkaError};

/// Called once with the outcome of a write: `Ok(())` once the broker has it, or the reason it
/// never will.
pub type Delivered = Box<dyn FnOnce(Result<(), String>) + Send>;

/// The per-record callback, behind a lock so the opaque pointer is `Sync` as rdkafka requires.
struct Pending(Mutex<Option<Delivered>>);

/// Counts deliveries and runs the callbacks.
#[derive(Default)]
struct Context {
    delivered: AtomicU64,
    failed: AtomicU64,
}

impl ClientContext for Context {}

impl ProducerContext for Context {
    type DeliveryOpaque = Box<Pending>;

    fn delivery(&self, result: &DeliveryResult<'_>, opaque: Self::DeliveryOpaque) {
        let outcome = match result {
            Ok(_) => {
                self.delivered.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err((e, _)) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "a Kafka write failed");
                Err(e.to_string())
            }
        };
        if let Some(f) = opaque.0.lock().ok().and_then(|mut g| g.take()) {
            f(outcome);
        }
    }
}

/// A shared producer: [`KafkaProducer::send`] queues without blocking (it waits only while
/// librdkafka's queue is full), and a background thread delivers.
#[derive(Clone)]
pub struct KafkaProducer {
    inner: Arc<ThreadedProducer<Context>>,
}

impl std::fmt::Debug for KafkaProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaProducer")
            .field("delivered", &self.delivered())
            .finish()
    }
}

/// How long `send` waits for room in a full queue before giving up.
const QUEUE_FULL_WAIT: Duration = Duration::from_secs(5);

impl KafkaProducer {
    /// Connects (lazily: librdkafka connects on the first write).
    pub fn new(cfg: &KafkaConfig) -> Result<Self, KafkaError> {
        let mut c = cfg.client();
        c.set("enable.idempotence", "true")
            .set("compression.type", "lz4")
            .set("partitioner", "murmur2_random")
            .set("linger.ms", cfg.linger.as_millis().to_string())
            .set("message.timeout.ms", "30000");
        let inner = ThreadedProducer::from_config_and_context(&c, Context::default())
            .map_err(KafkaError::client("creating the producer"))?;
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// Queues `payload` for `topic` under `key` with `headers`; `done` (if any) hears whether
    /// the broker took it.
    pub fn send(
        &self,
        topic: &str,
        key: Option<&str>,
        payload: &[u8],
        headers: &[(&str, &[u8])],
        done: Option<Delivered>,
    ) -> Result<(), KafkaError> {
        // None without headers: every state goes out without any, and an empty set is still
        // allocated, and copied at each try.
        let hs = (!headers.is_empty()).then(|| {
            headers.iter().fold(
                OwnedHeaders::new_with_capacity(headers.len()),
                |hs, (k, v)| {
                    hs.insert(Header {
                        key: k,
                        value: Some(*v),
                    })
                },
            )
        });
        let mut opaque = Some(Box::new(Pending(Mutex::new(done))));
        let started = Instant::now();
        loop {
            let mut record: BaseRecord<'_, str, [u8], Box<Pending>> =
                BaseRecord::with_opaque_to(topic, opaque.take().expect("put back on retry"))
                    .payload(payload);
            if let Some(h) = &hs {
                record = record.headers(h.clone());
            }
            if let Some(k) = key {
                record = record.key(k);
            }
            match self.inner.send(record) {
                Ok(()) => return Ok(()),
                Err((e, back))
                    if e.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull)
                        && started.elapsed() < QUEUE_FULL_WAIT =>
                {
                    opaque = Some(back.delivery_opaque);
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((e, back)) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) => {
                    drop(back);
                    return Err(KafkaError::QueueFull);
                }
                Err((source, _)) => {
                    return Err(KafkaError::Client {
                        what: "queueing a record",
                        source,
                    })
                }
            }
        }
    }

    /// Waits until every queued record is delivered (or `timeout`).
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.inner
            .flush(timeout)
            .map_err(KafkaError::client("flushing the producer"))
    }

    /// Records the broker has acknowledged.
    pub fn delivered(&self) -> u64 {
        self.inner.context().delivered.load(Ordering::Relaxed)
    }

    /// Records that failed for good.
    pub fn failed(&self) -> u64 {
        self.inner.context().failed.load(Ordering::Relaxed)
    }
}
