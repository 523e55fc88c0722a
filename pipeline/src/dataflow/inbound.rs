//! The one inbound path: every producer (the MQTT gate, the client of an external broker, the
//! HTTP API, control commands) hands a raw message to [`Ingest`] and acknowledges its sender
//! only when [`Ingest`] says the message is durable: fsync'd in the write-ahead log (embedded
//! mode) or acknowledged by Kafka. The dataflow's source reads it back from there.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use kaiabc_connectors::kafka::KafkaProducer;
use kaiabc_connectors::mqtt::{Intake, MqttMessage, Taken};
use kaiabc_connectors::wal::{WalError, WalWriter};

/// An event for the live dataflow, from MQTT or HTTP, as it was received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inbound {
    /// Where it came from (`mqtt:TOPIC`, `http:PATH`), for dead letters.
    pub source: String,
    /// The node the transport vouches for (the topic's node, the API key's node); `Err` with
    /// the reason when the transport names none.
    pub node: Result<String, String>,
    /// The payload: one reading, or a JSON array of them.
    pub payload: Vec<u8>,
    /// When it was received.
    pub received_at: DateTime<Utc>,
}

impl From<MqttMessage> for Inbound {
    fn from(m: MqttMessage) -> Self {
        let node = match &m.refused {
            Some(why) => Err(why.clone()),
            None => m
                .topic_node()
                .map(str::to_string)
                .ok_or_else(|| format!("topic {:?} is not kaiabc/sensors/{{node_id}}", m.topic)),
        };
        Self {
            source: format!("mqtt:{}", m.topic),
            node,
            payload: m.payload,
            received_at: m.received_at,
        }
    }
}

/// The version byte of [`Inbound::encode`].
const FORMAT: u8 = 1;

/// Why a log record is not an [`Inbound`].
#[derive(Debug, thiserror::Error)]
#[error("a write-ahead log record is not a message: {0}")]
pub struct DecodeError(&'static str);

impl DecodeError {
    /// A stable code.
    pub fn code(&self) -> &'static str {
        "WAL_RECORD"
    }
}

impl Inbound {
    /// The message as a log record: `[format u8][node ok u8][received µs i64][source len u32]
    /// [source][node len u32][node or why][payload]`, little-endian.
    pub fn encode(&self) -> Vec<u8> {
        let (ok, node) = match &self.node {
            Ok(n) => (1u8, n.as_bytes()),
            Err(why) => (0u8, why.as_bytes()),
        };
        let mut out = Vec::with_capacity(18 + self.source.len() + node.len() + self.payload.len());
        out.push(FORMAT);
        out.push(ok);
        out.extend_from_slice(&self.received_at.timestamp_micros().to_le_bytes());
        out.extend_from_slice(&(self.source.len() as u32).to_le_bytes());
        out.extend_from_slice(self.source.as_bytes());
        out.extend_from_slice(&(node.len() as u32).to_le_bytes());
        out.extend_from_slice(node);
        out.extend_from_slice(&self.payload);
        out
    }

    /// The message a log record holds.
    pub fn decode(mut b: &[u8]) -> Result<Self, DecodeError> {
        fn take<'a>(b: &mut &'a [u8], n: usize) -> Result<&'a [u8], DecodeError> {
            if b.len() < n {
                return Err(DecodeError("cut short"));
            }
            let (head, rest) = b.split_at(n);
            *b = rest;
            Ok(head)
        }
        fn text(b: &mut &[u8]) -> Result<String, DecodeError> {
            let n = u32::from_le_bytes(take(b, 4)?.try_into().expect("4 bytes")) as usize;
            String::from_utf8(take(b, n)?.to_vec()).map_err(|_| DecodeError("not UTF-8"))
        }
        let head = take(&mut b, 2)?;
        if head[0] != FORMAT {
            return Err(DecodeError("an unknown format"));
        }
        let micros = i64::from_le_bytes(take(&mut b, 8)?.try_into().expect("8 bytes"));
        let received_at =
            DateTime::from_timestamp_micros(micros).ok_or(DecodeError("a bad arrival time"))?;
        let source = text(&mut b)?;
        let node = text(&mut b)?;
        Ok(Self {
            source,
            node: if head[1] == 1 { Ok(node) } else { Err(node) },
            payload: b.to_vec(),
            received_at,
        })
    }
}

/// Why a message could not be made durable. The sender was not acknowledged and should send
/// it again.
#[derive(Clone, Debug, thiserror::Error)]
pub enum IngestError {
    /// The write-ahead log refused or failed it.
    #[error(transparent)]
    Log(#[from] WalError),
    /// Kafka refused or failed it.
    #[error("Kafka: {0}")]
    Kafka(String),
    /// The answer never came (the pipeline is stopping).
    #[error("the pipeline is stopping")]
    Stopping,
}

impl IngestError {
    /// A stable code for logs and answers.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Log(e) => e.code(),
            Self::Kafka(_) => "KAFKA_PRODUCE",
            Self::Stopping => "SHUTTING_DOWN",
        }
    }
}

/// Hears once whether a submitted message is durable.
pub type Acked = Box<dyn FnOnce(Result<(), IngestError>) + Send>;

/// Where producers put what they receive, and hear when it is durable.
#[derive(Clone, Debug)]
pub enum Ingest {
    /// The embedded write-ahead log.
    Log(WalWriter),
    /// Kafka's `kaiabc.readings`.
    Kafka(KafkaProducer),
}

impl Ingest {
    /// Submits `msg`; `done` hears, once, whether it is durable. For one producer, the
    /// callbacks come in the order of the submissions (the log syncs in order; Kafka delivers
    /// a partition, that is a node, in order).
    pub fn submit(&self, msg: &Inbound, done: Acked) {
        match self {
            Self::Log(w) => w.append(
                msg.encode(),
                Box::new(move |r| done(r.map(|_| ()).map_err(IngestError::from))),
            ),
            Self::Kafka(p) => {
                // The producer either queues the record (and the callback hears the broker)
                // or refuses it at once (and drops the callback unheard).
                let cell = Arc::new(std::sync::Mutex::new(Some(done)));
                let inner = Arc::clone(&cell);
                let delivered: kaiabc_connectors::kafka::Delivered = Box::new(move |r| {
                    if let Some(d) = inner.lock().ok().and_then(|mut d| d.take()) {
                        d(r.map_err(IngestError::Kafka));
                    }
                });
                if let Err(e) = crate::bridge::produce(p, msg, Some(delivered)) {
                    if let Some(d) = cell.lock().ok().and_then(|mut d| d.take()) {
                        d(Err(IngestError::Kafka(e.to_string())));
                    }
                }
            }
        }
    }

    /// Calls `done` once everything submitted before is durable.
    pub fn after_submitted(&self, done: Acked) {
        match self {
            Self::Log(w) => w.after_queued(Box::new(move |r| {
                done(r.map(|_| ()).map_err(IngestError::from))
            })),
            // Kafka's delivery reports carry no such barrier: wait for everything queued, off
            // the caller's thread (the gate's).
            Self::Kafka(p) => {
                let p = p.clone();
                std::thread::spawn(move || {
                    done(
                        p.flush(std::time::Duration::from_secs(30))
                            .map_err(|e| IngestError::Kafka(e.to_string())),
                    )
                });
            }
        }
    }

    /// Submits `msg` and waits until it is durable (from async code).
    pub async fn durable(&self, msg: &Inbound) -> Result<(), IngestError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.submit(
            msg,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        );
        rx.await.unwrap_or(Err(IngestError::Stopping))
    }

    /// Submits `msg` and waits until it is durable (from a thread that may block: it waits a
    /// sync, about a millisecond).
    pub fn durable_blocking(&self, msg: &Inbound) -> Result<(), IngestError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.submit(
            msg,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        );
        rx.recv().unwrap_or(Err(IngestError::Stopping))
    }

    /// Submits every message of `msgs` (they may share a sync) and waits until all are
    /// durable; the first error if any is not.
    pub fn durable_all_blocking(&self, msgs: &[Inbound]) -> Result<(), IngestError> {
        let (tx, rx) = std::sync::mpsc::channel();
        for m in msgs {
            let tx = tx.clone();
            self.submit(
                m,
                Box::new(move |r| {
                    let _ = tx.send(r);
                }),
            );
        }
        drop(tx);
        let mut heard = 0;
        for r in rx {
            r?;
            heard += 1;
        }
        if heard < msgs.len() {
            return Err(IngestError::Stopping);
        }
        Ok(())
    }
}

/// The embedded broker's gate hands node messages straight to the log (or Kafka).
impl Intake for Ingest {
    fn take(&self, msg: MqttMessage, taken: Taken) {
        let inbound = Inbound::from(msg);
        self.submit(
            &inbound,
            Box::new(move |r| {
                if let Err(e) = &r {
                    tracing::warn!(error = %e, code = e.code(), "an MQTT message was not stored; left unacknowledged");
                }
                taken(r.is_ok())
            }),
        );
    }

    fn after_taken(&self, taken: Taken) {
        self.after_submitted(Box::new(move |r| taken(r.is_ok())));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_comes_back_from_its_record() {
        let t = DateTime::parse_from_rfc3339("2026-11-27T06:00:00.123456Z")
            .unwrap()
            .with_timezone(&Utc);
        for node in [Ok("pico_1".to_string()), Err("no node: ✗".to_string())] {
            let m = Inbound {
                source: "mqtt:kaiabc/sensors/pico_1".into(),
                node,
                payload: br#"{"node_id":"pico_1"}"#.to_vec(),
                received_at: t,
            };
            let bytes = m.encode();
            assert_eq!(Inbound::decode(&bytes).unwrap(), m);
            assert!(Inbound::decode(&bytes[..10]).is_err());
        }
        assert!(Inbound::decode(&[9, 1]).is_err(), "an unknown format");
    }
}
