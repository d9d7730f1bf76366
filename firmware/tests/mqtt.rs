//! MQTT against a real broker: Debian's `mosquitto`, started by the test on a free port.
//! The daemon starts before the broker, the broker is killed and restarted while the daemon
//! runs, and the daemon is stopped gracefully and killed (last will).
//!
//! Needs `/usr/sbin/mosquitto` (`apt-get install mosquitto`); without it the tests say they
//! are skipped, unless `BIT_REQUIRE_MQTT=1` (set by `.ci/run`) makes that a failure.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use rumqttc::{Client, Event, MqttOptions, Packet, QoS};

fn mosquitto() -> Option<PathBuf> {
    let path =
        std::env::var_os("MOSQUITTO").map_or_else(|| PathBuf::from("/usr/sbin/mosquitto"), PathBuf::from);
    if path.exists() {
        return Some(path);
    }
    if std::env::var("BIT_REQUIRE_MQTT").is_ok_and(|v| v == "1") {
        panic!("{} not found and BIT_REQUIRE_MQTT=1 (apt-get install mosquitto)", path.display());
    }
    eprintln!("skipped: {} not installed (apt-get install mosquitto)", path.display());
    None
}

/// A broker on 127.0.0.1:`port`, anonymous, no persistence (a restart forgets retained
/// messages, as a default Debian install without its persistence directory would).
struct Broker {
    child: Child,
}

impl Broker {
    fn start(bin: &Path, dir: &Path, port: u16) -> Broker {
        let conf = dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"),
        )
        .unwrap();
        let child = Command::new(bin)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mosquitto");
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(start.elapsed() < Duration::from_secs(10), "mosquitto did not listen on {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        Broker { child }
    }

    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Clone, Debug)]
struct Message {
    at: Instant,
    topic: String,
    payload: String,
    retain: bool,
}

/// A subscriber to `#` that resubscribes on every connection and records what arrives.
struct Subscriber {
    messages: Arc<Mutex<Vec<Message>>>,
    client: Client,
}

impl Subscriber {
    fn start(port: u16) -> Subscriber {
        let mut options = MqttOptions::new(format!("test-sub-{}", std::process::id()), "127.0.0.1", port);
        options.set_keep_alive(Duration::from_secs(5));
        let (client, mut connection) = Client::new(options, 64);
        let messages = Arc::new(Mutex::new(Vec::new()));
        let (sub, log) = (client.clone(), messages.clone());
        std::thread::spawn(move || {
            loop {
                match connection.recv() {
                    Err(_) => return,
                    Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => {
                        let _ = sub.try_subscribe("#", QoS::AtLeastOnce);
                    }
                    Ok(Ok(Event::Incoming(Packet::Publish(p)))) => log.lock().unwrap().push(Message {
                        at: Instant::now(),
                        topic: p.topic.clone(),
                        payload: String::from_utf8_lossy(&p.payload).into_owned(),
                        retain: p.retain,
                    }),
                    Ok(Ok(_)) => {}
                    Ok(Err(_)) => std::thread::sleep(Duration::from_millis(200)),
                }
            }
        });
        Subscriber { messages, client }
    }

    fn since(&self, t: Instant) -> Vec<Message> {
        self.messages.lock().unwrap().iter().filter(|m| m.at >= t).cloned().collect()
    }

    /// Waits until a message after `t` satisfies `pred`.
    fn wait_for(&self, t: Instant, what: &str, pred: impl Fn(&Message) -> bool) -> Message {
        let start = Instant::now();
        loop {
            if let Some(m) = self.since(t).into_iter().find(|m| pred(m)) {
                return m;
            }
            if start.elapsed() > Duration::from_secs(30) {
                let seen: Vec<String> =
                    self.since(t).iter().map(|m| format!("{} {}", m.topic, m.payload)).collect();
                panic!("no {what} within 30 s; seen since: {seen:#?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let _ = self.client.try_disconnect();
    }
}

fn config(dir: &Path, port: u16, fps: u32, http_port: u16) -> PathBuf {
    let replay =
        format!("[replay]\npath = {:?}\nfps = {fps}\nat_end = \"loop\"\n", samples().display().to_string());
    let mqtt = format!(
        "[mqtt]\nhost = \"127.0.0.1\"\nport = {port}\ndevice_id = \"bench1\"\nhome_assistant = true\n\
         keep_alive_s = 5\n[output]\nstatus_interval_s = 1\n[http]\nbind = \"127.0.0.1:{http_port}\"\n"
    );
    write_config(dir, &config_text(&replay, &mqtt))
}

#[test]
fn publishes_results_labels_and_availability_and_survives_a_broker_restart() {
    let Some(bin) = mosquitto() else { return };
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let fps = 20;
    let http_port = free_port();
    let config = config(dir.path(), port, fps, http_port);

    // The daemon first: no broker yet. It classifies regardless.
    let run = start_config(&config);
    assert!(run.next_json(Duration::from_secs(60)).is_some(), "no result without a broker");
    let no_broker = run.results_for(Duration::from_secs(2));

    let broker = Broker::start(&bin, dir.path(), port);
    let t0 = Instant::now();
    let sub = Subscriber::start(port);
    let p = "camera-classifier/bench1";
    sub.wait_for(t0, "availability online", |m| {
        m.topic == format!("{p}/availability") && m.payload == "online"
    });
    let result = sub.wait_for(t0, "a result", |m| m.topic == format!("{p}/result"));
    let r: serde_json::Value = serde_json::from_str(&result.payload).unwrap();
    assert_eq!(r["top"].as_array().unwrap().len(), 3, "{r}");
    assert!(LABELS.contains(&r["top"][0]["label"].as_str().unwrap()));
    assert!(!result.retain);
    let label = sub.wait_for(t0, "a label", |m| m.topic == format!("{p}/label"));
    let l: serde_json::Value = serde_json::from_str(&label.payload).unwrap();
    assert!(LABELS.contains(&l["label"].as_str().unwrap()), "{l}");
    for sensor in ["label", "score", "inference"] {
        let d = sub
            .wait_for(t0, "discovery", |m| m.topic == format!("homeassistant/sensor/bench1/{sensor}/config"));
        let v: serde_json::Value = serde_json::from_str(&d.payload).unwrap();
        assert_eq!(v["availability_topic"], format!("{p}/availability"));
        assert_eq!(v["unique_id"], format!("camera-classifier-bench1-{sensor}"));
        assert!(v["state_topic"].as_str().unwrap().starts_with(p), "{v}");
    }
    // Label messages are sent on changes only: never two labels of the same class in a row.
    // Only live ones count (a retained copy comes again whenever the subscriber subscribes),
    // and QoS 1 is at-least-once: a redelivered message has the same `seq`.
    std::thread::sleep(Duration::from_secs(2));
    let mut labels: Vec<(u64, u64)> = sub
        .since(t0)
        .iter()
        .filter(|m| m.topic == format!("{p}/label") && !m.retain)
        .map(|m| {
            let v: serde_json::Value = serde_json::from_str(&m.payload).unwrap();
            (v["seq"].as_u64().unwrap(), v["class"].as_u64().unwrap())
        })
        .collect();
    labels.dedup();
    assert!(labels.len() >= 2, "{labels:?}");
    assert!(labels.windows(2).all(|w| w[0].1 != w[1].1 && w[0].0 < w[1].0), "repeated label: {labels:?}");
    let results = sub.since(t0).iter().filter(|m| m.topic == format!("{p}/result")).count();
    let with_broker = run.results_for(Duration::from_secs(2));

    // The broker dies; the frame loop goes on at the same pace. (Every "since" instant is
    // taken before the action whose messages it waits for: a loaded machine may deliver
    // them before this thread runs again.)
    broker.kill();
    let t1 = Instant::now();
    let down = run.results_for(Duration::from_secs(3));
    let broker = Broker::start(&bin, dir.path(), port);
    // A new broker knows nothing: availability, discovery and the label come back because
    // the daemon republishes them on reconnection (retained).
    sub.wait_for(t1, "availability online after restart", |m| {
        m.topic == format!("{p}/availability") && m.payload == "online"
    });
    sub.wait_for(t1, "a result after restart", |m| m.topic == format!("{p}/result"));
    sub.wait_for(t1, "the label after restart", |m| m.topic == format!("{p}/label"));
    sub.wait_for(t1, "discovery after restart", |m| m.topic == "homeassistant/sensor/bench1/label/config");

    // The MQTT metrics tell the story: results skipped while the broker was away (before it
    // started, and during the restart), two connections, connected now.
    let metrics = String::from_utf8(get(http_port, "/metrics").2).unwrap();
    let metric = |name: &str| -> f64 {
        let line = metrics
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name}:\n{metrics}"));
        line.rsplit_once(' ').unwrap().1.parse().unwrap()
    };
    assert_eq!(metric("camera_classifier_mqtt_connected"), 1.0);
    assert_eq!(metric("camera_classifier_mqtt_connections_total"), 2.0);
    assert!(metric("camera_classifier_mqtt_skipped_total") >= 0.8 * 5.0 * fps as f64, "{metrics}");
    assert!(metric("camera_classifier_mqtt_published_total") >= results as f64);
    assert_eq!(metric("camera_classifier_mqtt_dropped_total"), 0.0);

    let t2 = Instant::now();
    run.signal(libc::SIGTERM);
    let offline = sub.wait_for(t2, "offline on stop", |m| {
        m.topic == format!("{p}/availability") && m.payload == "offline"
    });
    let (code, _, stderr) = run.wait(Duration::from_secs(10));
    let took = t2.elapsed();
    eprintln!(
        "results/2 s: before the broker {no_broker}, with it {with_broker}, broker down (3 s) {down}; \
         {results} results published since the broker came up; offline {} ms after SIGTERM; exit after {took:?}",
        offline.at.duration_since(t2).as_millis()
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert!(took < Duration::from_secs(4), "stopping took {took:?}");
    assert!(stderr.contains("MQTT: connected to 127.0.0.1"), "{stderr}");
    assert!(stderr.contains("again (connection 2)"), "{stderr}");
    // The loop did not wait on the broker: the rate while it was down is the replay rate.
    let expect = |secs: f64| secs * fps as f64;
    assert!(no_broker as f64 >= 0.8 * expect(2.0), "{no_broker} results in 2 s without a broker");
    assert!(with_broker as f64 >= 0.8 * expect(2.0), "{with_broker} results in 2 s with the broker");
    assert!(down as f64 >= 0.8 * expect(3.0), "{down} results in 3 s with the broker down");
    assert!(results as f64 >= 0.8 * expect(2.0), "{results} results published in 2 s");
    drop(broker);
}

#[test]
fn a_killed_daemon_is_reported_offline_by_its_last_will() {
    let Some(bin) = mosquitto() else { return };
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _broker = Broker::start(&bin, dir.path(), port);
    let sub = Subscriber::start(port);
    let t0 = Instant::now();
    let mut run = start_config(&config(dir.path(), port, 10, free_port()));
    let p = "camera-classifier/bench1";
    sub.wait_for(t0, "online", |m| m.topic == format!("{p}/availability") && m.payload == "online");
    let t1 = Instant::now();
    run.child.kill().unwrap();
    run.child.wait().unwrap();
    // The broker sends the will when the TCP connection drops (a kill closes the socket).
    let will = sub
        .wait_for(t1, "the last will", |m| m.topic == format!("{p}/availability") && m.payload == "offline");
    eprintln!("last will after {} ms", will.at.duration_since(t1).as_millis());
}
