//! A client of an external MQTT broker (Mosquitto is the reference): subscribes to the sensor
//! and status topics with a persistent session at QoS 1, and hands each publish on together
//! with the ack that completes it, so the caller acknowledges only once the message is safe.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use rumqttc::{Client, Event, MqttOptions, Packet, Publish, QoS};

use super::{
    status_node, MqttError, MqttMessage, MqttOutput, StatusHook, SENSOR_TOPICS, STATUS_TOPICS,
};

/// Where and how to connect.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// `mqtt://[user:password@]host[:port]` (`tcp://` is accepted too; the port defaults to 1883).
    pub url: String,
    /// The client id. A persistent session is kept under it: use one id per running process.
    pub client_id: String,
    /// Keep the session (subscriptions and unacknowledged QoS 1 messages) across reconnects
    /// and restarts.
    pub persistent: bool,
}

/// An acknowledgement owed to the broker for one QoS 1 publish.
pub struct Ack {
    client: Client,
    publish: Publish,
}

impl Ack {
    /// Acknowledges the publish: the broker forgets it. Until then, it redelivers it after a
    /// reconnect (with a persistent session).
    pub fn ack(self) {
        if let Err(e) = self.client.try_ack(&self.publish) {
            tracing::warn!(error = %e, "acknowledging an MQTT publish");
        }
    }
}

/// Receives each sensor publish and the ack it is owed.
pub type MessageHandler = Box<dyn FnMut(MqttMessage, Ack) + Send>;

/// The parts of `mqtt://user:password@host:port`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerUrl {
    /// Host name or address.
    pub host: String,
    /// Port (1883 when the URL names none).
    pub port: u16,
    /// Username and password.
    pub login: Option<(String, String)>,
}

/// Splits `mqtt://user:pass@host:port` into its parts.
pub fn parse_url(url: &str) -> Result<BrokerUrl, MqttError> {
    let bad = |why: &str| MqttError::Url(format!("{url:?}: {why}"));
    let rest = url
        .strip_prefix("mqtt://")
        .or_else(|| url.strip_prefix("tcp://"))
        .ok_or_else(|| bad("expected mqtt://host[:port]"))?;
    let rest = rest.trim_end_matches('/');
    let (creds, hostport) = match rest.rsplit_once('@') {
        Some((c, h)) => {
            let (u, p) = c.split_once(':').unwrap_or((c, ""));
            (Some((u.to_string(), p.to_string())), h)
        }
        None => (None, rest),
    };
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) => (
            h,
            p.parse::<u16>()
                .map_err(|_| bad("the port is not a number"))?,
        ),
        None => (hostport, 1883),
    };
    if host.is_empty() {
        return Err(bad("no host"));
    }
    Ok(BrokerUrl {
        host: host.to_string(),
        port,
        login: creds,
    })
}

/// Connects to the broker in `opts.url` and calls `handler` for every publish under
/// [`SENSOR_TOPICS`] (without one, sensor topics are not subscribed to); status messages go to
/// `on_status`. The client reconnects by itself; the returned output publishes through the same
/// connection.
pub fn start_client(
    opts: ClientOptions,
    mut handler: Option<MessageHandler>,
    on_status: Option<StatusHook>,
) -> Result<Arc<MqttOutput>, MqttError> {
    let BrokerUrl { host, port, login } = parse_url(&opts.url)?;
    let mut mo = MqttOptions::new(&opts.client_id, host, port);
    mo.set_clean_session(!opts.persistent)
        .set_manual_acks(true)
        .set_keep_alive(Duration::from_secs(30))
        .set_max_packet_size(256 * 1024, 256 * 1024)
        .set_inflight(1000);
    if let Some((u, p)) = login {
        mo.set_credentials(u, p);
    }
    let (client, mut connection) = Client::new(mo, 10_000);
    let subscriber = client.clone();
    std::thread::Builder::new()
        .name("mqtt-client".into())
        .spawn(move || {
            let mut failures = 0u32;
            for event in connection.iter() {
                match event {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        failures = 0;
                        tracing::info!("connected to the MQTT broker");
                        // Subscribing again on a kept session is harmless.
                        let sensors = handler.is_some().then_some(SENSOR_TOPICS);
                        for filter in sensors.into_iter().chain([STATUS_TOPICS]) {
                            if let Err(e) = subscriber.try_subscribe(filter, QoS::AtLeastOnce) {
                                tracing::error!(error = %e, filter, "MQTT subscribe");
                            }
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let topic = p.topic.clone();
                        if let Some(node) = status_node(&topic) {
                            if let Some(hook) = &on_status {
                                hook(node, &p.payload);
                            }
                            Ack {
                                client: subscriber.clone(),
                                publish: p,
                            }
                            .ack();
                            continue;
                        }
                        let msg = MqttMessage {
                            topic,
                            payload: p.payload.to_vec(),
                            received_at: Utc::now(),
                            refused: None,
                        };
                        let Some(handler) = handler.as_mut() else {
                            continue;
                        };
                        handler(
                            msg,
                            Ack {
                                client: subscriber.clone(),
                                publish: p,
                            },
                        );
                    }
                    Ok(_) => {}
                    Err(e) => {
                        failures += 1;
                        let wait = Duration::from_millis(100 * u64::from(failures.min(50)));
                        tracing::warn!(error = %e, ?wait, "MQTT connection lost; reconnecting");
                        std::thread::sleep(wait);
                    }
                }
            }
        })
        .map_err(|e| MqttError::Link(e.to_string()))?;
    Ok(Arc::new(MqttOutput::client(client)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse() {
        let url = |host: &str, port, login: Option<(&str, &str)>| BrokerUrl {
            host: host.into(),
            port,
            login: login.map(|(u, p)| (u.into(), p.into())),
        };
        assert_eq!(
            parse_url("mqtt://127.0.0.1:1884").unwrap(),
            url("127.0.0.1", 1884, None)
        );
        assert_eq!(
            parse_url("tcp://broker").unwrap(),
            url("broker", 1883, None)
        );
        assert_eq!(
            parse_url("mqtt://kaiabc:s3:cret@h:1").unwrap(),
            url("h", 1, Some(("kaiabc", "s3:cret")))
        );
        assert!(parse_url("http://h").is_err());
        assert!(parse_url("mqtt://h:x").is_err());
        assert!(parse_url("mqtt://:1").is_err());
    }
}
