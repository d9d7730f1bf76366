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

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use bit_runtime::{Classifier, ClassifyError, Stage};
use embedded_hal::digital::OutputPin;

use crate::config::Mode;
use crate::feed::{Feed, ResultSlot};
use crate::gpio::{OutputDriver, Pending, TriggerLatch};
use crate::monotonic_now;
use crate::notify::Notifier;
use crate::output::{FrameSaver, JsonLines};
use crate::source::{FrameSource, OpenError, SourceError};

/// Longest the loop waits for a frame before looking at its timers and stop flag.
pub const POLL: Duration = Duration::from_millis(100);

/// Frames stamped before a trigger that are skipped, at most, before one is classified
/// anyway (a driver whose timestamps are not monotonic must not starve triggers).
const MAX_STALE_SKIPS: u32 = 8;

/// Counters of everything that happened, for status lines and tests.
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
    /// Frames saved.
    pub saved: u64,
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
pub struct Loop<'a, P: OutputPin, W: Write> {
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
    /// Every trigger (GPIO, SIGUSR1, FIFO) goes through it.
    pub latch: Arc<TriggerLatch>,
    /// Rule-driven output lines.
    pub outputs: &'a mut [OutputDriver<P>],
    /// systemd.
    pub notifier: &'a mut Notifier,
    /// JSON result lines, if enabled.
    pub results: Option<&'a mut JsonLines<W>>,
    /// Where triggered frames are saved, if enabled.
    pub saver: Option<&'a mut FrameSaver>,
    /// How often status goes to the log and to systemd.
    pub status_interval: Duration,
    /// The counters, updated as the loop runs.
    pub counters: Counters,
    /// Hand-off to the integrations (MQTT, status page, metrics), if any.
    pub feed: Option<&'a Feed>,
}

impl<P: OutputPin, W: Write> Loop<'_, P, W> {
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
    fn open<S: FrameSource>(&mut self, source: &mut S) -> Result<bool, DaemonError> {
        let mut backoff = Duration::from_millis(250);
        let mut attempts = 0u32;
        loop {
            if self.stopping() {
                return Ok(false);
            }
            match source.open(self.min_size) {
                Ok(()) => {
                    if let Some(f) = self.feed {
                        f.telemetry.set_source_open(true);
                    }
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
    fn reopen<S: FrameSource>(&mut self, source: &mut S) -> Result<bool, DaemonError> {
        source.close();
        if let Some(f) = self.feed {
            f.telemetry.set_source_open(false);
        }
        let opened = self.open(source)?;
        if opened {
            self.counters.reconnects += 1;
        }
        Ok(opened)
    }

    fn status_line(&self, classifier: &Classifier, rate: f64) -> String {
        let c = &self.counters;
        let inf = classifier.stats().summary(Stage::Inference);
        let (p50, p90) = inf.map_or((0.0, 0.0), |s| (s.p50.as_secs_f64() * 1e3, s.p90.as_secs_f64() * 1e3));
        format!(
            "{} classified ({rate:.1}/s), inference p50 {p50:.1} ms p90 {p90:.1} ms; frames {}, bad {}, \
             inference errors {}, source errors {}, stalls {}, reconnects {}",
            c.classified, c.frames, c.bad_frames, c.inference_errors, c.source_errors, c.stalls, c.reconnects
        )
    }

    /// Runs until a stop request or the end of a replay.
    pub fn run<S: FrameSource>(
        &mut self,
        classifier: &mut Classifier,
        source: &mut S,
    ) -> Result<Exit, DaemonError> {
        if !self.open(source)? {
            return Ok(Exit::Stopped);
        }
        log::info!("frames from {}; mode {:?}", source.describe(), self.mode);
        let start = monotonic_now();
        let mut last_frame = start;
        let mut next_due = start;
        let mut pending: Option<Pending> = None;
        let mut stale_skips = 0u32;
        let mut last_status = (start, 0u64);
        let mut last_frame_warning = Duration::ZERO;
        let mut last_gpio_warning = None;
        let exit = loop {
            if self.stopping() {
                break Exit::Stopped;
            }
            let now = monotonic_now();
            if let Some(f) = self.feed {
                f.telemetry.store_counters(&self.counters);
            }
            for o in self.outputs.iter_mut() {
                if o.tick(now).is_err() {
                    gpio_failed(&mut last_gpio_warning, now);
                }
            }
            if now.saturating_sub(last_status.0) >= self.status_interval {
                let rate =
                    (self.counters.classified - last_status.1) as f64 / (now - last_status.0).as_secs_f64();
                let line = self.status_line(classifier, rate);
                log::info!("{line}");
                self.notifier.status(&line);
                last_status = (now, self.counters.classified);
            }
            if pending.is_none() {
                pending = self.latch.take();
                if let Some(p) = &pending {
                    self.counters.triggers += 1;
                    self.counters.coalesced += u64::from(p.count.saturating_sub(1));
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
                        self.counters.stalls += 1;
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
                    self.counters.source_errors += 1;
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
            self.counters.frames += 1;
            if let Some(f) = self.feed {
                f.telemetry.frame_arrived(got);
            }
            self.notifier.ready();
            self.notifier.frame_handled(got);

            let trigger = match (&pending, self.mode) {
                (Some(p), _) => {
                    if captured.timestamp < p.first_at && stale_skips < MAX_STALE_SKIPS {
                        stale_skips += 1;
                        self.counters.stale_skipped += 1;
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
            let age = got.saturating_sub(captured.timestamp);
            classifier.record(Stage::Capture, age);
            match classifier.classify(&frame) {
                Ok(top) => {
                    let done = monotonic_now();
                    let time = SystemTime::now();
                    let seq = self.counters.classified;
                    self.counters.classified += 1;
                    pending = None;
                    stale_skips = 0;
                    let mut scores = [(0usize, 0f32); bit_runtime::MAX_TOP_K];
                    for (s, p) in scores.iter_mut().zip(&top) {
                        *s = (p.class, p.score);
                    }
                    for o in self.outputs.iter_mut() {
                        if o.update(done, &scores[..top.len()]).is_err() {
                            gpio_failed(&mut last_gpio_warning, done);
                        }
                    }
                    let stats = classifier.stats();
                    let last = |s: Stage| stats.last(s).unwrap_or_default();
                    let labels = classifier.labels();
                    let latency = [
                        age,
                        last(Stage::Preprocess),
                        last(Stage::Inference),
                        last(Stage::Postprocess),
                        done.saturating_sub(captured.timestamp),
                    ];
                    let result = ResultSlot {
                        time,
                        seq,
                        frame_seq: captured.sequence,
                        trigger,
                        format: frame.format,
                        width: frame.width,
                        height: frame.height,
                        top,
                        latency,
                    };
                    if let Some(results) = self.results.as_deref_mut() {
                        results.write(&result.record(labels));
                    }
                    log::trace!("frame {} classified: {:?}", captured.sequence, result.top.first());
                    if triggered && let Some(saver) = self.saver.as_deref_mut() {
                        let label = result
                            .top
                            .first()
                            .and_then(|p| labels.get(p.class))
                            .map_or("unknown", String::as_str);
                        match saver.save(&frame, time, seq, label) {
                            Ok(path) => {
                                self.counters.saved += 1;
                                log::debug!("saved {}", path.display());
                            }
                            Err(e) => log::warn!("saving frame {seq}: {e}"),
                        }
                    }
                    // Counters reach the telemetry at the top of the next iteration.
                    if let Some(f) = self.feed {
                        f.telemetry.observe(&latency);
                        if f.preview_due(done) {
                            f.push_frame(&frame, seq, done);
                        }
                        f.push_result(result);
                    }
                }
                Err(ClassifyError::Frame(e)) => {
                    // A pending trigger stays pending: the next good frame answers it.
                    self.counters.bad_frames += 1;
                    if got.saturating_sub(last_frame_warning) >= Duration::from_secs(10)
                        || self.counters.bad_frames == 1
                    {
                        last_frame_warning = got;
                        log::warn!(
                            "frame {} refused: {e} ({} refused so far)",
                            captured.sequence,
                            self.counters.bad_frames
                        );
                    }
                }
                Err(e @ ClassifyError::Inference(_)) => {
                    pending = None;
                    self.counters.inference_errors += 1;
                    log::warn!("frame {}: {e}", captured.sequence);
                }
            }
        };
        self.notifier.stopping();
        if let Some(f) = self.feed {
            f.telemetry.store_counters(&self.counters);
            f.telemetry.set_source_open(false);
        }
        for o in self.outputs.iter_mut() {
            let _ = o.release();
        }
        source.close();
        let now = monotonic_now();
        let rate = self.counters.classified as f64 / now.saturating_sub(start).as_secs_f64().max(1e-9);
        log::info!("stopping: {}", self.status_line(classifier, rate));
        Ok(exit)
    }
}

/// Logs a failed GPIO output write, at most every 10 s (the driver retries the write on every
/// tick, 10 times a second).
fn gpio_failed(last: &mut Option<Duration>, now: Duration) {
    if last.is_none_or(|t| now.saturating_sub(t) >= Duration::from_secs(10)) {
        *last = Some(now);
        log::warn!("GPIO output: write failed (retried on every tick; logged at most every 10 s)");
    }
}
