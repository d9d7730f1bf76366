//! The frame loop: take frames, classify the ones the mode and the triggers ask for, report
//! and drive outputs, keep systemd informed, survive everything a camera does.
//!
//! The loop asks its source for a frame at least every [`POLL`] (so stop requests,
//! output hold times and status reports are handled on time), also when it is not going to
//! classify: in triggered mode it keeps the camera's queue drained, so the frame classified
//! after a trigger is one captured after it (frames stamped before the trigger are skipped),
//! not a stale queued buffer. A trigger that arrives during an inference is latched and
//! handled once, right after.
//!
//! Nothing here stops the loop but a stop request or the end of a replay: a refused frame is
//! counted and skipped, a lost or stalled camera is closed and reopened with exponential
//! backoff, inference errors are counted.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use bit_runtime::{Classification, Classifier, ClassifyError, LatencyStats, Stage};
use embedded_hal::digital::OutputPin;

use crate::config::Mode;
use crate::feed::{Event, Feed, FramePool, ModelTag, ResultSlot};
use crate::gpio::{OutputDriver, Pending, TriggerLatch};
use crate::metrics::{Counter, Gauge, Histogram, Registry};
use crate::monotonic_now;
use crate::notify::Notifier;
use crate::source::{FrameSource, OpenError, SourceError};
use crate::throttle::Throttle;

/// Longest the loop waits for a frame before looking at its timers and stop flag.
pub const POLL: Duration = Duration::from_millis(100);

/// Frames stamped before a trigger that are skipped, at most, before one is classified
/// anyway (a driver whose timestamps are not monotonic must not starve triggers).
const MAX_STALE_SKIPS: u32 = 8;

/// Counters of everything that happened, for status lines and tests (a snapshot of
/// [`LoopMetrics`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Frames received from the source.
    pub frames: u64,
    /// Frames classified.
    pub classified: u64,
    /// Frames the classifier refused (wrong size, corrupt JPEG...).
    pub bad_frames: u64,
    /// Inference failures.
    pub inference_errors: u64,
    /// Source failures (device lost, I/O errors).
    pub source_errors: u64,
    /// Times the source went silent for longer than its timeout.
    pub stalls: u64,
    /// Successful reopenings of the source after a failure or stall.
    pub reconnects: u64,
    /// Triggers taken (each may stand for several coalesced ones).
    pub triggers: u64,
    /// Triggers that arrived while one was pending and were merged into it.
    pub coalesced: u64,
    /// Frames skipped because they were captured before the pending trigger.
    pub stale_skipped: u64,
}

/// What the frame loop counts and measures, registered into the daemon's metrics and updated
/// with relaxed atomics (no lock, no allocation per frame).
#[derive(Debug)]
pub struct LoopMetrics {
    frames: Arc<Counter>,
    classified: Arc<Counter>,
    bad_frames: Arc<Counter>,
    inference_errors: Arc<Counter>,
    source_errors: Arc<Counter>,
    stalls: Arc<Counter>,
    reconnects: Arc<Counter>,
    triggers: Arc<Counter>,
    coalesced: Arc<Counter>,
    stale_skipped: Arc<Counter>,
    latency: Vec<Arc<Histogram>>,
    source_up: Arc<Gauge>,
    /// Monotonic time of the last frame, in microseconds (`u64::MAX`: none yet).
    last_frame_us: AtomicU64,
    started: Duration,
}

impl LoopMetrics {
    /// Registers the loop's metrics into `registry`.
    pub fn register(registry: &Registry) -> Arc<LoopMetrics> {
        let c = |name, help| registry.counter(name, help);
        let stages: Vec<&'static str> = Stage::ALL.iter().map(|s| s.name()).collect();
        let m = Arc::new(LoopMetrics {
            frames: c("frames_total", "Frames received from the source."),
            classified: c("classified_total", "Frames classified."),
            bad_frames: c("bad_frames_total", "Frames refused by the runtime (corrupt, wrong size)."),
            inference_errors: c("inference_errors_total", "Inference failures."),
            source_errors: c("source_errors_total", "Source failures (device lost, I/O errors)."),
            stalls: c("stalls_total", "Times the source sent no frame for longer than its timeout."),
            reconnects: c("reconnects_total", "Successful reopenings of the source."),
            triggers: c("triggers_total", "Triggers taken."),
            coalesced: c("coalesced_triggers_total", "Triggers merged into a pending one."),
            stale_skipped: c(
                "stale_frames_skipped_total",
                "Frames skipped because they were captured before the trigger.",
            ),
            latency: registry.histograms(
                "latency_seconds",
                "Latency per stage: capture is the frame's age when taken, total from capture to result.",
                "stage",
                &stages,
            ),
            source_up: registry.gauge("source_up", "1 while the frame source is open."),
            last_frame_us: AtomicU64::new(u64::MAX),
            started: monotonic_now(),
        });
        let weak = Arc::downgrade(&m);
        registry.collector("last_frame_age_seconds", move |x: &mut crate::metrics::Exposition| {
            let now = monotonic_now();
            if let Some(m) = weak.upgrade() {
                x.gauge("uptime_seconds", "Seconds since start.", m.uptime(now).as_secs_f64());
                if let Some(age) = m.frame_age(now) {
                    x.gauge(
                        "last_frame_age_seconds",
                        "Seconds since the last frame arrived.",
                        age.as_secs_f64(),
                    );
                }
            }
        });
        m
    }

    /// The counters now.
    pub fn snapshot(&self) -> Counters {
        Counters {
            frames: self.frames.get(),
            classified: self.classified.get(),
            bad_frames: self.bad_frames.get(),
            inference_errors: self.inference_errors.get(),
            source_errors: self.source_errors.get(),
            stalls: self.stalls.get(),
            reconnects: self.reconnects.get(),
            triggers: self.triggers.get(),
            coalesced: self.coalesced.get(),
            stale_skipped: self.stale_skipped.get(),
        }
    }

    /// Records one classification's stage latencies.
    pub fn observe(&self, timings: &bit_runtime::Timings) {
        for (stage, d) in timings.iter() {
            self.latency[stage as usize].observe(d);
        }
    }

    /// The histogram of `stage`.
    pub fn latency(&self, stage: Stage) -> &Histogram {
        &self.latency[stage as usize]
    }

    /// Records a frame's arrival at monotonic time `now`.
    pub fn frame_arrived(&self, now: Duration) {
        self.last_frame_us.store(now.as_micros() as u64, Ordering::Relaxed);
    }

    /// Records whether the source is open.
    pub fn set_source_open(&self, open: bool) {
        self.source_up.set(f64::from(u8::from(open)));
    }

    /// Whether the source is open.
    pub fn source_open(&self) -> bool {
        self.source_up.get() > 0.0
    }

    /// Time since the last frame at monotonic time `now`; `None` before the first.
    pub fn frame_age(&self, now: Duration) -> Option<Duration> {
        match self.last_frame_us.load(Ordering::Relaxed) {
            u64::MAX => None,
            us => Some(now.saturating_sub(Duration::from_micros(us))),
        }
    }

    /// Time since the metrics were registered (the daemon's start).
    pub fn uptime(&self, now: Duration) -> Duration {
        now.saturating_sub(self.started)
    }
}

/// How the loop ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// A stop request (SIGTERM, SIGINT).
    Stopped,
    /// The replay ended.
    SourceEnded,
}

/// Why the loop could not run.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The source exists but cannot deliver frames the runtime reads.
    #[error("{0}")]
    Source(String),
}

/// Everything the loop needs besides the classifier and the source.
pub struct Loop<'a, P: OutputPin> {
    /// When frames are classified.
    pub mode: Mode,
    /// No frame for this long is a stall (the source is reopened); `None` never.
    pub stall_timeout: Option<Duration>,
    /// Longest wait between reopening attempts.
    pub reconnect_max: Duration,
    /// Smallest frame needing no upscaling, for negotiation.
    pub min_size: (u32, u32),
    /// Set to stop.
    pub stop: Arc<AtomicBool>,
    /// Every trigger (GPIO, SIGUSR1, FIFO, HTTP) goes through it.
    pub latch: Arc<TriggerLatch>,
    /// Rule-driven output lines.
    pub outputs: &'a mut [OutputDriver<P>],
    /// systemd.
    pub notifier: &'a mut Notifier,
    /// How often status goes to the log and to systemd.
    pub status_interval: Duration,
    /// Counters and latency histograms.
    pub metrics: &'a LoopMetrics,
    /// Hand-off to the result sinks (JSON lines, MQTT, status page, saved frames), if any.
    pub feed: Option<&'a Feed>,
    /// Buffers for the frames the sinks want.
    pub frames: FramePool,
    /// The model's name and labels, as the sinks show them.
    pub model: Arc<ModelTag>,
}

impl<P: OutputPin> Loop<'_, P> {
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Sleeps `d` in slices, returning early on a stop request; false if stopped.
    fn sleep(&self, d: Duration) -> bool {
        let end = monotonic_now() + d;
        loop {
            if self.stopping() {
                return false;
            }
            let now = monotonic_now();
            if now >= end {
                return true;
            }
            std::thread::sleep((end - now).min(POLL));
        }
    }

    /// Opens `source`, retrying with exponential backoff (from 250 ms up to
    /// `reconnect_max`) while it is unavailable; false if stopped first.
    fn open<S: FrameSource + ?Sized>(&mut self, source: &mut S) -> Result<bool, DaemonError> {
        let mut backoff = Duration::from_millis(250);
        let mut attempts = 0u32;
        loop {
            if self.stopping() {
                return Ok(false);
            }
            match source.open(self.min_size) {
                Ok(()) => {
                    self.metrics.set_source_open(true);
                    if attempts > 0 {
                        log::info!("{}: open again after {attempts} failed attempt(s)", source.describe());
                    }
                    return Ok(true);
                }
                Err(OpenError::Unusable(msg)) => return Err(DaemonError::Source(msg)),
                Err(OpenError::Unavailable(msg)) => {
                    attempts += 1;
                    log::warn!("{msg}; retrying in {} ms", backoff.as_millis());
                    if !self.sleep(backoff) {
                        return Ok(false);
                    }
                    backoff = (backoff * 2).min(self.reconnect_max);
                }
            }
        }
    }

    /// Closes and reopens `source` after a failure or stall; false if stopped first.
    fn reopen<S: FrameSource + ?Sized>(&mut self, source: &mut S) -> Result<bool, DaemonError> {
        source.close();
        self.metrics.set_source_open(false);
        let opened = self.open(source)?;
        if opened {
            self.metrics.reconnects.inc();
        }
        Ok(opened)
    }

    fn status_line(&self, stats: &LatencyStats, rate: f64) -> String {
        let c = self.metrics.snapshot();
        let inf = stats.summary(Stage::Inference);
        let (p50, p90) = inf.map_or((0.0, 0.0), |s| (s.p50.as_secs_f64() * 1e3, s.p90.as_secs_f64() * 1e3));
        format!(
            "{} classified ({rate:.1}/s), inference p50 {p50:.1} ms p90 {p90:.1} ms; frames {}, bad {}, \
             inference errors {}, source errors {}, stalls {}, reconnects {}",
            c.classified, c.frames, c.bad_frames, c.inference_errors, c.source_errors, c.stalls, c.reconnects
        )
    }

    /// Runs until a stop request or the end of a replay.
    pub fn run<S: FrameSource + ?Sized>(
        &mut self,
        classifier: &mut Classifier,
        source: &mut S,
    ) -> Result<Exit, DaemonError> {
        if !self.open(source)? {
            return Ok(Exit::Stopped);
        }
        log::info!("frames from {}; mode {:?}", source.describe(), self.mode);
        let m = self.metrics;
        let start = monotonic_now();
        let mut stats = LatencyStats::new();
        let mut last_frame = start;
        let mut next_due = start;
        let mut pending: Option<Pending> = None;
        let mut stale_skips = 0u32;
        let mut last_status = (start, 0u64);
        let mut bad_frame_log = Throttle::new(Duration::from_secs(10));
        let mut inference_log = Throttle::new(Duration::from_secs(10));
        let mut gpio_log = Throttle::new(Duration::from_secs(10));
        let exit = loop {
            if self.stopping() {
                break Exit::Stopped;
            }
            let now = monotonic_now();
            for o in self.outputs.iter_mut() {
                if o.tick(now).is_err() {
                    gpio_failed(&mut gpio_log, now);
                }
            }
            if now.saturating_sub(last_status.0) >= self.status_interval {
                let classified = m.classified.get();
                let rate = (classified - last_status.1) as f64 / (now - last_status.0).as_secs_f64();
                let line = self.status_line(&stats, rate);
                log::info!("{line}");
                self.notifier.status(&line);
                last_status = (now, classified);
            }
            if pending.is_none() {
                pending = self.latch.take();
                if let Some(p) = &pending {
                    m.triggers.inc();
                    m.coalesced.add(u64::from(p.count.saturating_sub(1)));
                    log::debug!("trigger from {} ({} coalesced)", p.source.name(), p.count);
                }
            }

            let captured = match source.next_frame(POLL) {
                Ok(c) => c,
                Err(SourceError::Timeout) => {
                    let silent = monotonic_now().saturating_sub(last_frame);
                    if let Some(limit) = self.stall_timeout
                        && silent >= limit
                    {
                        m.stalls.inc();
                        log::warn!(
                            "{}: no frame for {} ms: reopening",
                            source.describe(),
                            silent.as_millis()
                        );
                        if !self.reopen(source)? {
                            break Exit::Stopped;
                        }
                        last_frame = monotonic_now();
                    }
                    continue;
                }
                Err(SourceError::End) => {
                    log::info!("{}: end of the replay", source.describe());
                    break Exit::SourceEnded;
                }
                Err(e @ SourceError::Lost { .. }) => {
                    m.source_errors.inc();
                    log::warn!("{}: {e}: reopening", source.describe());
                    if !self.reopen(source)? {
                        break Exit::Stopped;
                    }
                    last_frame = monotonic_now();
                    continue;
                }
            };
            let got = monotonic_now();
            last_frame = got;
            m.frames.inc();
            m.frame_arrived(got);
            self.notifier.ready();
            self.notifier.frame_handled(got);

            let trigger = match (&pending, self.mode) {
                (Some(p), _) => {
                    if captured.timestamp < p.first_at && stale_skips < MAX_STALE_SKIPS {
                        stale_skips += 1;
                        m.stale_skipped.inc();
                        continue;
                    }
                    Some(p.source.name())
                }
                (None, Mode::Continuous { min_period }) => {
                    if got < next_due {
                        None
                    } else {
                        next_due = got + min_period.unwrap_or(Duration::ZERO);
                        Some("continuous")
                    }
                }
                (None, Mode::Interval(period)) => {
                    if got < next_due {
                        None
                    } else {
                        next_due += period;
                        if next_due <= got {
                            next_due = got + period;
                        }
                        Some("interval")
                    }
                }
                (None, Mode::Triggered) => None,
            };
            let Some(trigger) = trigger else { continue };
            let triggered = pending.is_some();

            let frame = captured.frame;
            match classifier.classify(&frame) {
                Ok(Classification { top, mut timings }) => {
                    let done = monotonic_now();
                    timings.set(Stage::Capture, got.saturating_sub(captured.timestamp));
                    timings.set(Stage::Total, done.saturating_sub(captured.timestamp));
                    m.observe(&timings);
                    stats.record_all(&timings);
                    let seq = m.classified.get();
                    m.classified.inc();
                    pending = None;
                    stale_skips = 0;
                    let mut scores = [(0usize, 0f32); bit_runtime::MAX_TOP_K];
                    for (s, p) in scores.iter_mut().zip(&top) {
                        *s = (p.class, p.score);
                    }
                    for o in self.outputs.iter_mut() {
                        if o.update(done, &scores[..top.len()]).is_err() {
                            gpio_failed(&mut gpio_log, done);
                        }
                    }
                    log::trace!("frame {} classified: {:?}", captured.sequence, top.first());
                    if let Some(feed) = self.feed {
                        let frame_use = feed.frame_use(seq, triggered, done);
                        let copy = if frame_use.any() { self.frames.copy(&frame) } else { None };
                        if frame_use.any() && copy.is_none() {
                            feed.frames_skipped.inc();
                        }
                        let result = ResultSlot {
                            time: SystemTime::now(),
                            at: done,
                            seq,
                            frame_seq: captured.sequence,
                            trigger,
                            format: frame.format,
                            width: frame.width,
                            height: frame.height,
                            top,
                            timings,
                            model: self.model.clone(),
                        };
                        feed.push(Event { result, frame: copy, frame_use });
                    }
                }
                Err(ClassifyError::Frame(e)) => {
                    // A pending trigger stays pending: the next good frame answers it.
                    m.bad_frames.inc();
                    if bad_frame_log.allow(got).is_some() {
                        let refused = m.bad_frames.get();
                        log::warn!("frame {} refused: {e} ({refused} refused so far)", captured.sequence);
                    }
                }
                Err(ClassifyError::Inference(e)) => {
                    pending = None;
                    m.inference_errors.inc();
                    if let Some(held) = inference_log.allow(got) {
                        let e = anyhow::Error::from(e);
                        log::warn!(
                            "frame {}: {e:#} ({held} more since the last such warning)",
                            captured.sequence
                        );
                    }
                }
            }
        };
        self.notifier.stopping();
        m.set_source_open(false);
        for o in self.outputs.iter_mut() {
            let _ = o.release();
        }
        source.close();
        let now = monotonic_now();
        let rate = m.classified.get() as f64 / now.saturating_sub(start).as_secs_f64().max(1e-9);
        log::info!("stopping: {}", self.status_line(&stats, rate));
        Ok(exit)
    }
}

/// Logs a failed GPIO output write, at most every 10 s (the driver retries the write on every
/// tick, 10 times a second).
fn gpio_failed(log: &mut Throttle, now: Duration) {
    if let Some(held) = log.allow(now) {
        log::warn!(
            "GPIO output: write failed (retried on every tick; {held} failures since the last warning)"
        );
    }
}
