//! The status page's state: the latest result, the last [`HISTORY`] latencies and the latest
//! preview JPEG, kept by the [`StatusSink`] and read by the HTTP server through
//! [`StatusView`]. Its lock is held only to copy or replace small values; preview frames are
//! encoded on the sinks thread, never in the frame loop or an HTTP handler.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bit_runtime::Stage;

use super::ResultSink;
use crate::daemon::LoopMetrics;
use crate::feed::{Event, ResultSlot};
use crate::http::StatusView;
use crate::metrics::{Counter, Registry};
use crate::monotonic_now;
use crate::output::{FrameJpeg, ms};

/// Latencies kept for the page's chart.
pub const HISTORY: usize = 120;

#[derive(Default)]
struct Latest {
    result: Option<ResultSlot>,
    /// (seq, arrival, inference ms, total ms)
    history: VecDeque<(u64, Duration, f64, f64)>,
    snapshot: Option<(u64, Arc<Vec<u8>>)>,
    /// Changes with every result and preview frame (`/events` pushes on it).
    version: u64,
}

/// The status page's state.
pub struct Status {
    loop_metrics: Arc<LoopMetrics>,
    registry: Arc<Registry>,
    dropped: Arc<Counter>,
    latest: Mutex<Latest>,
    stale_after: Duration,
}

impl Status {
    /// State over the loop's metrics; `/healthz` fails after `stale_after` without a frame;
    /// `/metrics` renders `registry`; `dropped` is the feed's dropped-results counter.
    pub fn new(
        loop_metrics: Arc<LoopMetrics>,
        registry: Arc<Registry>,
        dropped: Arc<Counter>,
        stale_after: Duration,
    ) -> Status {
        Status { loop_metrics, registry, dropped, latest: Mutex::new(Latest::default()), stale_after }
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
        l.history.push_back((
            r.seq,
            now,
            ms(r.timings.get(Stage::Inference)),
            ms(r.timings.get(Stage::Total)),
        ));
        l.result = Some(r.clone());
        l.version += 1;
    }

    /// Replaces the preview frame.
    pub fn set_snapshot(&self, seq: u64, jpeg: Arc<Vec<u8>>) {
        let mut l = self.lock();
        l.snapshot = Some((seq, jpeg));
        l.version += 1;
    }

    /// The JSON of `/api/latest`.
    pub fn latest_value(&self) -> serde_json::Value {
        let now = monotonic_now();
        let l = self.lock();
        let c = self.loop_metrics.snapshot();
        // Classifications per second over the history's last 10 s.
        let recent: Vec<_> =
            l.history.iter().filter(|h| now.saturating_sub(h.1) <= Duration::from_secs(10)).collect();
        let fps = match (recent.first(), recent.last()) {
            (Some(a), Some(b)) if recent.len() > 1 && b.1 > a.1 => {
                (recent.len() - 1) as f64 / (b.1 - a.1).as_secs_f64()
            }
            _ => 0.0,
        };
        let model = l.result.as_ref().map(|r| r.model.name.clone());
        let mut v = serde_json::json!({
            "seq": null, "frame_seq": null, "time": null, "trigger": null, "frame": null, "top": [],
            "latency_ms": null,
            "snapshot_seq": l.snapshot.as_ref().map(|s| s.0),
            "history": l.history.iter().map(|h| serde_json::json!({"seq": h.0, "inference": h.2, "total": h.3})).collect::<Vec<_>>(),
            "counters": {
                "frames": c.frames, "classified": c.classified, "bad_frames": c.bad_frames,
                "dropped": self.dropped.get(),
            },
            "fps": (fps * 100.0).round() / 100.0,
            "model": model,
            "uptime_s": (self.loop_metrics.uptime(now).as_secs_f64() * 10.0).round() / 10.0,
        });
        if let Some(r) = &l.result {
            // The same record as the JSON lines and MQTT results.
            if let Ok(serde_json::Value::Object(record)) = serde_json::to_value(r.record())
                && let Some(obj) = v.as_object_mut()
            {
                obj.extend(record);
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
        self.registry.render(out);
    }

    fn version(&self) -> u64 {
        self.lock().version
    }

    fn health(&self) -> Result<(), String> {
        let now = monotonic_now();
        if !self.loop_metrics.source_open() {
            return Err("the frame source is not open".into());
        }
        match self.loop_metrics.frame_age(now) {
            Some(age) if age > self.stale_after => Err(format!("no frame for {:.1} s", age.as_secs_f64())),
            None if self.loop_metrics.uptime(now) > self.stale_after => Err("no frame yet".into()),
            _ => Ok(()),
        }
    }
}

/// Feeds [`Status`]: every result, and preview frames encoded as JPEG.
pub struct StatusSink {
    status: Arc<Status>,
    encoder: FrameJpeg,
    encode_failures: u64,
}

impl StatusSink {
    /// A sink updating `status`, encoding previews at `quality`.
    pub fn new(status: Arc<Status>, quality: u8) -> StatusSink {
        StatusSink { status, encoder: FrameJpeg::new(quality), encode_failures: 0 }
    }
}

impl ResultSink for StatusSink {
    fn name(&self) -> &'static str {
        "status-page"
    }

    fn on_event(&mut self, event: &Event) {
        self.status.record(&event.result, monotonic_now());
        let Some(frame) = event.frame.as_ref().filter(|_| event.frame_use.preview) else { return };
        match self.encoder.encode(&frame.frame()) {
            Ok(jpeg) => self.status.set_snapshot(event.result.seq, Arc::new(jpeg.to_vec())),
            Err(e) => {
                self.encode_failures += 1;
                if self.encode_failures == 1 || self.encode_failures.is_power_of_two() {
                    log::warn!("preview frame {}: {e} ({} failures)", event.result.seq, self.encode_failures);
                }
            }
        }
    }

    fn shutdown(self: Box<Self>, _deadline: Instant) {}
}
