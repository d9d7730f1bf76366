//! Results to an MQTT broker (rumqttc, MQTT 3.1.1 over TCP), off the frame loop.
//!
//! Topics, under `topic_prefix` (default `camera-classifier/<device_id>`):
//!
//! | topic | payload | QoS | retained |
//! |---|---|---|---|
//! | `<prefix>/availability` | `online`, or `offline` (also the last will) | 1 | yes |
//! | `<prefix>/result` | the JSON result line, per classification (if `results`) | `qos` | no |
//! | `<prefix>/label` | `{"label","class","score","seq","time"}` when the top-1 class changes | 1 | yes |
//!
//! With `home_assistant = true`, discovery configs for a label, a score and an inference
//! latency sensor go to `<discovery_prefix>/sensor/<device_id>/<name>/config` (retained)
//! on every connection.
//!
//! The client runs its own connection thread, which reconnects with backoff (1 s up to
//! 30 s) whenever the broker goes away. On every connection it republishes availability,
//! discovery and the current label (brokers without persistence forget retained messages
//! when they restart). While the broker is away nothing is queued: results are counted as
//! skipped (stale results replayed after an outage would only mislead, and a backlog would
//! push the reconnection's availability message out of the client's bounded queue), and the
//! label is kept to be republished. Publishing never blocks: a full request queue drops the
//! message and counts it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rumqttc::{Client, Connection, ConnectionError, Event, LastWill, MqttOptions, Outgoing, Packet, QoS};

pub use crate::config::MqttConfig;
use crate::feed::{Event as FeedEvent, ResultSlot};
use crate::metrics::{Counter, Gauge, Registry};
use crate::sink::ResultSink;

/// MQTT's counters, registered into the daemon's metrics.
pub struct MqttStats {
    /// Messages handed to the client.
    pub published: Arc<Counter>,
    /// Messages dropped because the client's queue was full.
    pub dropped: Arc<Counter>,
    /// Results not sent because the broker was unreachable.
    pub skipped: Arc<Counter>,
    /// Connections made (the first one included).
    pub connections: Arc<Counter>,
    /// Connection errors.
    pub errors: Arc<Counter>,
    /// 1 while connected.
    pub connected: Arc<Gauge>,
}

impl MqttStats {
    /// Registers the MQTT metrics.
    pub fn register(r: &Registry) -> Arc<MqttStats> {
        Arc::new(MqttStats {
            published: r.counter("mqtt_published_total", "Messages handed to the MQTT client."),
            dropped: r.counter("mqtt_dropped_total", "Messages dropped: the client's queue was full."),
            skipped: r.counter("mqtt_skipped_total", "Results not sent while the broker was unreachable."),
            connections: r.counter("mqtt_connections_total", "Connections to the broker."),
            errors: r.counter("mqtt_errors_total", "Connection errors."),
            connected: r.gauge("mqtt_connected", "1 while connected to the broker."),
        })
    }

    fn is_connected(&self) -> bool {
        self.connected.get() > 0.0
    }
}

/// The topics, computed once.
struct Topics {
    availability: String,
    result: String,
    label: String,
}

/// State the connection thread republishes on every connection.
struct Shared {
    stop: AtomicBool,
    last_label: Mutex<Option<Vec<u8>>>,
}

/// The publisher: a result sink.
pub struct Mqtt {
    client: Client,
    topics: Arc<Topics>,
    shared: Arc<Shared>,
    stats: Arc<MqttStats>,
    qos: QoS,
    results: bool,
    last_class: Option<usize>,
    thread: Option<JoinHandle<()>>,
}

fn qos(q: u8) -> QoS {
    if q == 0 { QoS::AtMostOnce } else { QoS::AtLeastOnce }
}

impl Mqtt {
    /// Starts the client and its connection thread (which connects in the background: a
    /// broker that is down at start is retried like one that went away).
    pub fn start(config: &MqttConfig, metrics: &Registry) -> std::io::Result<Mqtt> {
        let stats = MqttStats::register(metrics);
        let p = config.topic_prefix.trim_end_matches('/');
        let topics = Arc::new(Topics {
            availability: format!("{p}/availability"),
            result: format!("{p}/result"),
            label: format!("{p}/label"),
        });
        let mut options = MqttOptions::new(&config.client_id, &config.host, config.port);
        options.set_keep_alive(config.keep_alive);
        options.set_clean_session(true);
        options.set_last_will(LastWill::new(&topics.availability, "offline", QoS::AtLeastOnce, true));
        if let Some(user) = &config.username {
            options.set_credentials(user, config.password.as_deref().unwrap_or(""));
        }
        let (client, connection) = Client::new(options, config.queue.max(8));
        let shared = Arc::new(Shared { stop: AtomicBool::new(false), last_label: Mutex::new(None) });
        let discovery = config.home_assistant.as_ref().map(|prefix| discovery(config, prefix, &topics));
        let thread = {
            let (client, topics, shared, stats) =
                (client.clone(), topics.clone(), shared.clone(), stats.clone());
            let broker = format!("{}:{}", config.host, config.port);
            std::thread::Builder::new().name("mqtt".into()).spawn(move || {
                connection_loop(connection, &client, &topics, &shared, &stats, &broker, discovery)
            })?
        };
        Ok(Mqtt {
            client,
            topics,
            shared,
            stats,
            qos: qos(config.qos),
            results: config.results,
            last_class: None,
            thread: Some(thread),
        })
    }

    fn send(&self, topic: &str, qos: QoS, retain: bool, payload: Vec<u8>) {
        send(&self.client, &self.stats, topic, qos, retain, payload);
    }

    /// Publishes a result (if results are on) and, when the top-1 class changed, the label;
    /// while the broker is unreachable, only remembers the label (republished on connection).
    pub fn publish(&mut self, r: &ResultSlot) {
        let connected = self.stats.is_connected();
        let labels = &r.model.labels;
        if self.results && !connected {
            self.stats.skipped.inc();
        }
        if self.results
            && connected
            && let Ok(payload) = serde_json::to_vec(&r.record())
        {
            self.send(&self.topics.result, self.qos, false, payload);
        }
        let Some(best) = r.top.first() else { return };
        if self.last_class == Some(best.class) {
            return;
        }
        self.last_class = Some(best.class);
        let payload = serde_json::json!({
            "label": labels.get(best.class).map_or("?", String::as_str),
            "class": best.class,
            "score": (best.score as f64 * 1e4).round() / 1e4,
            "seq": r.seq,
            "time": humantime::format_rfc3339_millis(r.time).to_string(),
        })
        .to_string()
        .into_bytes();
        if let Ok(mut last) = self.shared.last_label.lock() {
            *last = Some(payload.clone());
        }
        if connected {
            self.send(&self.topics.label, QoS::AtLeastOnce, true, payload);
        }
    }

    /// Publishes `offline` (retained), disconnects and joins the connection thread, waiting
    /// at most `wait` for the broker to take the last messages.
    pub fn shutdown(mut self, wait: Duration) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if self.stats.is_connected() {
            self.send(&self.topics.availability, QoS::AtLeastOnce, true, b"offline".to_vec());
        }
        let _ = self.client.try_disconnect();
        let deadline = Instant::now() + wait;
        if let Some(t) = self.thread.take() {
            while !t.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if t.is_finished() {
                let _ = t.join();
            } else {
                log::warn!("MQTT: the connection thread did not finish within {wait:?}; leaving it");
            }
        }
    }
}

fn send(client: &Client, t: &MqttStats, topic: &str, qos: QoS, retain: bool, payload: Vec<u8>) {
    match client.try_publish(topic, qos, retain, payload) {
        Ok(()) => t.published.inc(),
        Err(_) => t.dropped.inc(),
    };
}

/// Home Assistant discovery: (topic, payload) per sensor.
fn discovery(config: &MqttConfig, prefix: &str, topics: &Topics) -> Vec<(String, Vec<u8>)> {
    let id = &config.device_id;
    let device = serde_json::json!({
        "identifiers": [format!("camera-classifier-{id}")],
        "name": format!("camera-classifier {id}"),
        "model": "camera-classifier (BiT-S-R50x1)",
        "sw_version": env!("CARGO_PKG_VERSION"),
    });
    let sensor = |name: &str, title: &str, state: &str, template: &str, unit: Option<&str>| {
        let mut v = serde_json::json!({
            "name": title,
            "unique_id": format!("camera-classifier-{id}-{name}"),
            "object_id": format!("camera_classifier_{id}_{name}"),
            "state_topic": state,
            "value_template": template,
            "availability_topic": topics.availability,
            "payload_available": "online",
            "payload_not_available": "offline",
            "device": device,
        });
        if let Some(u) = unit {
            v["unit_of_measurement"] = u.into();
            v["state_class"] = "measurement".into();
        }
        if name == "label" {
            v["json_attributes_topic"] = topics.label.clone().into();
        }
        (format!("{}/sensor/{id}/{name}/config", prefix.trim_end_matches('/')), v.to_string().into_bytes())
    };
    let mut out = vec![
        sensor("label", "Label", &topics.label, "{{ value_json.label }}", None),
        sensor("score", "Score", &topics.label, "{{ value_json.score }}", None),
    ];
    if config.results {
        out.push(sensor(
            "inference",
            "Inference latency",
            &topics.result,
            "{{ value_json.latency_ms.inference }}",
            Some("ms"),
        ));
    }
    out
}

fn connection_loop(
    mut connection: Connection,
    client: &Client,
    topics: &Topics,
    shared: &Shared,
    t: &MqttStats,
    broker: &str,
    discovery: Option<Vec<(String, Vec<u8>)>>,
) {
    let mut backoff = Duration::from_secs(1);
    let mut outage_logged = false;
    loop {
        let event = match connection.recv() {
            Err(_) => return, // every client handle is gone
            Ok(e) => e,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                t.connected.set(1.0);
                t.connections.inc();
                let n = t.connections.get();
                if n == 1 {
                    log::info!("MQTT: connected to {broker}");
                } else {
                    log::info!("MQTT: connected to {broker} again (connection {n})");
                }
                backoff = Duration::from_secs(1);
                outage_logged = false;
                send(client, t, &topics.availability, QoS::AtLeastOnce, true, b"online".to_vec());
                for (topic, payload) in discovery.iter().flatten() {
                    send(client, t, topic, QoS::AtLeastOnce, true, payload.clone());
                }
                let last = shared.last_label.lock().ok().and_then(|l| l.clone());
                if let Some(label) = last {
                    send(client, t, &topics.label, QoS::AtLeastOnce, true, label);
                }
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) => {
                t.connected.set(0.0);
                if shared.stop.load(Ordering::SeqCst) {
                    return;
                }
            }
            Ok(_) => {}
            Err(e) => {
                t.connected.set(0.0);
                t.errors.inc();
                if shared.stop.load(Ordering::SeqCst) {
                    return;
                }
                let what = describe(&e);
                if outage_logged {
                    log::debug!("MQTT: {broker}: {what}; retrying in {} s", backoff.as_secs());
                } else {
                    log::warn!(
                        "MQTT: {broker}: {what}; retrying in {} s (further failures at debug level)",
                        backoff.as_secs()
                    );
                    outage_logged = true;
                }
                let until = Instant::now() + backoff;
                while Instant::now() < until {
                    if shared.stop.load(Ordering::SeqCst) {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}

fn describe(e: &ConnectionError) -> String {
    match e {
        ConnectionError::ConnectionRefused(code) => format!("connection refused by the broker ({code:?})"),
        ConnectionError::Io(io) => format!("{io}"),
        other => format!("{other}"),
    }
}

impl ResultSink for Mqtt {
    fn name(&self) -> &'static str {
        "mqtt"
    }

    fn on_event(&mut self, event: &FeedEvent) {
        self.publish(&event.result);
    }

    fn shutdown(self: Box<Self>, deadline: Instant) {
        let wait = deadline.saturating_duration_since(Instant::now()).min(Duration::from_secs(2));
        (*self).shutdown(wait);
    }
}
