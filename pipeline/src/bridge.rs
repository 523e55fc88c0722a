//! The MQTT → Kafka bridge: every message a node sends goes to `kaiabc.readings` unchanged,
//! keyed by the node the transport vouched for, and comes back out of Kafka as the same
//! [`Inbound`] the embedded path would have given the dataflow.

use chrono::{DateTime, SecondsFormat, Utc};
use kaiabc_connectors::kafka::{
    Delivered, KafkaError, KafkaProducer, ReadingRecord, NODE_ERROR_HEADER, READINGS_TOPIC,
    RECEIVED_AT_HEADER, SOURCE_HEADER,
};
use kaiabc_connectors::mqtt::{Ack, MessageHandler, MqttMessage};

use crate::dataflow::inbound::{Inbound, Ingest};

/// Writes `msg` to `kaiabc.readings`; `done` hears whether Kafka took it.
pub fn produce(
    producer: &KafkaProducer,
    msg: &Inbound,
    done: Option<Delivered>,
) -> Result<(), KafkaError> {
    let received = msg.received_at.to_rfc3339_opts(SecondsFormat::Micros, true);
    let mut headers: Vec<(&str, &[u8])> = vec![
        (SOURCE_HEADER, msg.source.as_bytes()),
        (RECEIVED_AT_HEADER, received.as_bytes()),
    ];
    let key = match &msg.node {
        Ok(node) => Some(node.as_str()),
        Err(why) => {
            headers.push((NODE_ERROR_HEADER, why.as_bytes()));
            None
        }
    };
    producer.send(READINGS_TOPIC, key, &msg.payload, &headers, done)
}

/// The message a `kaiabc.readings` record carries.
pub fn inbound_of(r: ReadingRecord) -> Inbound {
    let received_at = r
        .received_at
        .as_deref()
        .and_then(|s| kaiabc_schemas::parse_timestamp(s).ok())
        .or_else(|| r.timestamp_ms.and_then(DateTime::from_timestamp_millis))
        .unwrap_or_else(Utc::now);
    let node = match (r.node_error, r.key) {
        (Some(why), _) => Err(why),
        (None, Some(node)) => Ok(node),
        (None, None) => Err("the Kafka record has no key (node id)".to_string()),
    };
    Inbound {
        source: r
            .source
            .unwrap_or_else(|| format!("kafka:{READINGS_TOPIC}/{}@{}", r.partition, r.offset)),
        node,
        payload: r.payload,
        received_at,
    }
}

/// An MQTT handler (for the client of an external broker) that hands each message to the
/// inbound path and acknowledges it to the broker once it is durable. Unacknowledged, the
/// broker redelivers it after the next reconnect (the session is persistent).
pub fn to_ingest(ingest: Ingest) -> MessageHandler {
    Box::new(move |msg: MqttMessage, ack: Ack| {
        let inbound = Inbound::from(msg);
        ingest.submit(
            &inbound,
            Box::new(move |r| match r {
                Ok(()) => ack.ack(),
                Err(e) => {
                    tracing::warn!(error = %e, code = e.code(), "a message was not stored; left unacknowledged")
                }
            }),
        );
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_carries_the_message_back() {
        let t = DateTime::parse_from_rfc3339("2026-11-27T06:00:00.123456Z")
            .unwrap()
            .with_timezone(&Utc);
        let r = ReadingRecord {
            partition: 2,
            offset: 41,
            key: Some("pico_1".into()),
            payload: b"{}".to_vec(),
            source: Some("mqtt:kaiabc/sensors/pico_1".into()),
            received_at: Some(t.to_rfc3339_opts(SecondsFormat::Micros, true)),
            node_error: None,
            timestamp_ms: Some(1),
        };
        let m = inbound_of(r.clone());
        assert_eq!(m.node, Ok("pico_1".into()));
        assert_eq!(m.received_at, t);
        assert_eq!(m.source, "mqtt:kaiabc/sensors/pico_1");
        let bare = inbound_of(ReadingRecord {
            key: None,
            source: None,
            received_at: None,
            ..r.clone()
        });
        assert!(bare.node.is_err());
        assert_eq!(bare.source, "kafka:kaiabc.readings/2@41");
        assert_eq!(bare.received_at.timestamp_millis(), 1);
        let refused = inbound_of(ReadingRecord {
            node_error: Some("topic x is not kaiabc/sensors/{node_id}".into()),
            ..r
        });
        assert_eq!(
            refused.node,
            Err("topic x is not kaiabc/sensors/{node_id}".into())
        );
    }
}
