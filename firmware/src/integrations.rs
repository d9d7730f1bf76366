//! The integrations thread: drains the [`Feed`], keeps the status page's state, encodes
//! preview frames, publishes to MQTT. It is the only consumer of the feed; everything it
//! does (JSON, JPEG, network) happens here, never in the frame loop.
//!
//! [`Status`] is what the HTTP server shows (it implements [`StatusView`]): the latest
//! result, the last [`HISTORY`] latencies, the latest preview JPEG, the metrics and the
//! health verdict. Its lock is held only to copy or replace small values.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::feed::{Feed, ResultSlot};
use crate::http::{HttpStats, StatusView};
use crate::monotonic_now;
use crate::mqtt::Mqtt;
use crate::output::{FrameJpeg, ms};
use crate::telemetry::Telemetry;

/// Latencies kept for the page's chart.
pub const HISTORY: usize = 120;

#[derive(Default)]
struct Latest {
    result: Option<ResultSlot>,
    /// (seq, arrival, inference ms, total ms)
    history: VecDeque<(u64, Duration, f64, f64)>,
    snapshot: Option<(u64, Arc<Vec<u8>>)>,
}

/// The status page's state.
pub struct Status {
    telemetry: Arc<Telemetry>,
    feed: Arc<Feed>,
    latest: Mutex<Latest>,
    stale_after: Duration,
    http: OnceLock<Arc<HttpStats>>,
}

impl Status {
    /// State over `feed`'s telemetry; `/healthz` fails after `stale_after` without a frame.
    pub fn new(feed: Arc<Feed>, stale_after: Duration) -> Status {
        Status {
            telemetry: feed.telemetry.clone(),
            feed,
            latest: Mutex::new(Latest::default()),
            stale_after,
            http: OnceLock::new(),
        }
    }

    /// Adds the HTTP server's own counters to `/metrics`.
    pub fn set_http_stats(&self, stats: Arc<HttpStats>) {
        let _ = self.http.set(stats);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Latest> {
        self.latest.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a result in.
    pub fn record(&self, r: &ResultSlot, now: Duration) {
        let mut l = self.lock();
        if l.history.len() == HISTORY {
            l.history.pop_front();
        }
        l.history.push_back((r.seq, now, ms(r.latency[2]), ms(r.latency[4])));
        l.result = Some(r.clone());
    }

    /// Replaces the preview frame.
    pub fn set_snapshot(&self, seq: u64, jpeg: Arc<Vec<u8>>) {
        self.lock().snapshot = Some((seq, jpeg));
    }

    /// The JSON of `/api/latest`.
    pub fn latest_value(&self) -> serde_json::Value {
        let now = monotonic_now();
        let l = self.lock();
        let labels = self.telemetry.labels();
        let c = self.telemetry.counters();
        // Classifications per second over the history's last 10 s.
        let recent: Vec<_> =
            l.history.iter().filter(|h| now.saturating_sub(h.1) <= Duration::from_secs(10)).collect();
        let fps = match (recent.first(), recent.last()) {
            (Some(a), Some(b)) if recent.len() > 1 && b.1 > a.1 => {
                (recent.len() - 1) as f64 / (b.1 - a.1).as_secs_f64()
            }
            _ => 0.0,
        };
        let mut v = serde_json::json!({
            "seq": null, "frame_seq": null, "time": null, "trigger": null, "frame": null, "top": [],
            "latency_ms": null,
            "snapshot_seq": l.snapshot.as_ref().map(|s| s.0),
            "history": l.history.iter().map(|h| serde_json::json!({"seq": h.0, "inference": h.2, "total": h.3})).collect::<Vec<_>>(),
            "counters": {
                "frames": c.frames, "classified": c.classified, "bad_frames": c.bad_frames,
                "dropped": self.feed.dropped.load(Ordering::Relaxed),
            },
            "fps": (fps * 100.0).round() / 100.0,
            "model": self.telemetry.model(),
            "uptime_s": (self.telemetry.uptime(now).as_secs_f64() * 10.0).round() / 10.0,
        });
        if let Some(r) = &l.result {
            // The same record as the JSON lines and MQTT results.
            if let Ok(serde_json::Value::Object(record)) = serde_json::to_value(r.record(labels)) {
                v.as_object_mut().expect("an object").extend(record);
            }
        }
        v
    }
}

impl StatusView for Status {
    fn latest_json(&self, out: &mut Vec<u8>) {
        let _ = serde_json::to_writer(out, &self.latest_value());
    }

    fn snapshot(&self) -> Option<(u64, Arc<Vec<u8>>)> {
        self.lock().snapshot.clone()
    }

    fn metrics(&self, out: &mut String) {
        self.telemetry.write_metrics(out, self.feed.dropped.load(Ordering::Relaxed), monotonic_now());
        if let Some(h) = self.http.get() {
            h.write_metrics(out);
        }
    }

    fn health(&self) -> Result<(), String> {
        let now = monotonic_now();
        if !self.telemetry.source_open() {
            return Err("the frame source is not open".into());
        }
        match self.telemetry.frame_age(now) {
            Some(age) if age > self.stale_after => Err(format!("no frame for {:.1} s", age.as_secs_f64())),
            None if self.telemetry.uptime(now) > self.stale_after => Err("no frame yet".into()),
            _ => Ok(()),
        }
    }
}

/// The running integrations thread.
pub struct Integrations {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl Integrations {
    /// Starts the thread consuming `feed`: results to `status` and `mqtt`, preview frames
    /// encoded at `preview_quality` into `status`.
    pub fn start(
        feed: Arc<Feed>,
        status: Option<Arc<Status>>,
        mqtt: Option<Mqtt>,
        preview_quality: u8,
    ) -> std::io::Result<Integrations> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("integrations".into())
            .spawn(move || run(&feed, status.as_deref(), mqtt, preview_quality, &flag))?;
        Ok(Integrations { stop, thread })
    }

    /// Drains what is queued, publishes `offline` to MQTT and joins the thread.
    pub fn shutdown(self) {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.thread().unpark();
        if self.thread.join().is_err() {
            log::error!("the integrations thread panicked");
        }
    }
}

fn run(feed: &Feed, status: Option<&Status>, mut mqtt: Option<Mqtt>, quality: u8, stop: &AtomicBool) {
    feed.set_consumer(std::thread::current());
    let mut encoder = FrameJpeg::new(quality);
    let mut encode_failures = 0u64;
    loop {
        let stopping = stop.load(Ordering::SeqCst);
        while let Some(r) = feed.pop_result() {
            if let Some(s) = status {
                s.record(&r, monotonic_now());
            }
            if let Some(m) = mqtt.as_mut() {
                m.publish(&r);
            }
        }
        if let Some(copy) = feed.take_frame() {
            if let Some(s) = status {
                match encoder.encode(&copy.frame()) {
                    Ok(jpeg) => s.set_snapshot(copy.seq, Arc::new(jpeg.to_vec())),
                    Err(e) => {
                        encode_failures += 1;
                        if encode_failures == 1 || encode_failures.is_power_of_two() {
                            log::warn!("preview frame {}: {e} ({encode_failures} failures)", copy.seq);
                        }
                    }
                }
            }
            feed.recycle(copy);
        }
        if stopping {
            break;
        }
        std::thread::park_timeout(Duration::from_millis(250));
    }
    if let Some(m) = mqtt {
        m.shutdown(Duration::from_secs(2));
    }
}
