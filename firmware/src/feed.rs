//! The frame loop's hand-off to the result sinks: bounded, lock-free, and free of allocation
//! once warm, so no sink (a stalled stdout reader, a slow SD card, a broker away) can slow or
//! stop the loop.
//!
//! - Each classification becomes an [`Event`]: a plain [`ResultSlot`] (no heap data but
//!   shared handles) and, when a sink wants the pixels (the preview is due, or the frame is to
//!   be saved), a [`SharedFrame`] from the loop's [`FramePool`].
//! - Events go into a fixed-capacity queue. When it is full the oldest event is dropped and
//!   counted: a stalled consumer costs results, never frames.
//! - The pool holds a few frame buffers, each shared by `Arc` with the sinks that read it and
//!   reused once they have all dropped it. The buffers grow to the largest frame copied and
//!   are then reused, so memory is bounded by the pool's size. When every buffer is still in
//!   use the frame is not copied, and that is counted too.
//!
//! The consumer thread is woken with `Thread::unpark`, which neither blocks nor allocates.

use std::sync::Arc;
use std::thread::Thread;
use std::time::{Duration, SystemTime};

use bit_runtime::{Frame, PixelFormat, Timings, TopK, YuvColor};
use crossbeam_queue::ArrayQueue;

use crate::metrics::{Counter, Registry};

/// What the sinks need to know about the model that produced a result.
#[derive(Debug)]
pub struct ModelTag {
    /// The model file's name.
    pub name: String,
    /// Class names, index order.
    pub labels: Vec<String>,
}

/// One classification, copied out of the frame loop.
#[derive(Clone, Debug)]
pub struct ResultSlot {
    /// Wall-clock time of the result.
    pub time: SystemTime,
    /// Monotonic time of the result (the daemon's clock).
    pub at: Duration,
    /// Classifications since start, from 0.
    pub seq: u64,
    /// The source's frame counter.
    pub frame_seq: u64,
    /// What caused it.
    pub trigger: &'static str,
    /// Frame format.
    pub format: PixelFormat,
    /// Frame width.
    pub width: u32,
    /// Frame height.
    pub height: u32,
    /// The best classes, best first.
    pub top: TopK,
    /// Every stage's latency.
    pub timings: Timings,
    /// The model (its labels name `top`'s classes).
    pub model: Arc<ModelTag>,
}

impl ResultSlot {
    /// The result as a JSON line record.
    pub fn record(&self) -> crate::output::ResultRecord<'_> {
        crate::output::ResultRecord {
            time: self.time,
            seq: self.seq,
            frame_seq: self.frame_seq,
            trigger: self.trigger,
            format: self.format,
            width: self.width,
            height: self.height,
            top: &self.top,
            labels: &self.model.labels,
            timings: self.timings,
        }
    }

    /// The best class's name (`unknown` without one).
    pub fn label(&self) -> &str {
        self.top.first().and_then(|p| self.model.labels.get(p.class)).map_or("unknown", String::as_str)
    }
}

/// A frame's bytes and geometry, owned (a pool buffer).
#[derive(Debug)]
pub struct FrameBuf {
    /// The frame's bytes as the source delivered them.
    pub data: Vec<u8>,
    /// Pixel layout.
    pub format: PixelFormat,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Row stride, as in [`Frame::stride`].
    pub stride: Option<usize>,
    /// YUV matrix and range, as in [`Frame::color`].
    pub color: YuvColor,
}

impl Default for FrameBuf {
    fn default() -> FrameBuf {
        FrameBuf {
            data: Vec::new(),
            format: PixelFormat::Grey,
            width: 0,
            height: 0,
            stride: None,
            color: YuvColor::default(),
        }
    }
}

impl FrameBuf {
    /// The copy as a runtime frame.
    pub fn frame(&self) -> Frame<'_> {
        Frame {
            data: &self.data,
            format: self.format,
            width: self.width,
            height: self.height,
            stride: self.stride,
            color: self.color,
        }
    }
}

/// A pooled frame copy shared with the sinks.
pub type SharedFrame = Arc<FrameBuf>;

/// The loop's frame buffers. Owned by the loop, which alone refills a buffer, and only while
/// no sink holds it.
#[derive(Debug)]
pub struct FramePool {
    buffers: Vec<SharedFrame>,
}

impl FramePool {
    /// `n` empty buffers (0: frames are never copied).
    pub fn new(n: usize) -> FramePool {
        FramePool { buffers: (0..n).map(|_| Arc::new(FrameBuf::default())).collect() }
    }

    /// Copies `frame` into a free buffer and shares it; `None` while every buffer is held by
    /// a sink. Allocates only while a buffer grows to a size it has not held before.
    pub fn copy(&mut self, frame: &Frame) -> Option<SharedFrame> {
        // Only the loop clones these `Arc`s, so a buffer found unique stays unique until the
        // clone below.
        let i = self.buffers.iter_mut().position(|b| Arc::get_mut(b).is_some())?;
        let buf = Arc::get_mut(&mut self.buffers[i])?;
        buf.data.clear();
        buf.data.extend_from_slice(frame.data);
        buf.format = frame.format;
        buf.width = frame.width;
        buf.height = frame.height;
        buf.stride = frame.stride;
        buf.color = frame.color;
        Some(self.buffers[i].clone())
    }
}

/// What a result's frame is wanted for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrameUse {
    /// The status page's live preview.
    pub preview: bool,
    /// The frame saver.
    pub save: bool,
}

impl FrameUse {
    /// Whether anyone wants the pixels.
    pub fn any(self) -> bool {
        self.preview || self.save
    }
}

/// One classification for the sinks.
#[derive(Clone, Debug)]
pub struct Event {
    /// The result.
    pub result: ResultSlot,
    /// The frame, when [`Event::frame_use`] wants it and a buffer was free.
    pub frame: Option<SharedFrame>,
    /// What the frame is for.
    pub frame_use: FrameUse,
}

/// Which frames the sinks want, decided in the loop without asking them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FramePolicy {
    /// At most one preview frame per period.
    pub preview_period: Option<Duration>,
    /// Save triggered frames.
    pub save_triggered: bool,
    /// Save every n-th classified frame (by `seq`).
    pub save_every: Option<u64>,
}

/// The producer and consumer ends in one (the loop holds an `Arc`, so does the consumer).
pub struct Feed {
    events: ArrayQueue<Event>,
    /// Results dropped because the queue was full.
    pub dropped: Arc<Counter>,
    /// Frames a sink wanted that were not copied (every pool buffer in use).
    pub frames_skipped: Arc<Counter>,
    policy: FramePolicy,
    /// Monotonic microseconds of the last preview frame (`u64::MAX`: none yet).
    last_preview: std::sync::atomic::AtomicU64,
    consumer: std::sync::OnceLock<Thread>,
}

impl std::fmt::Debug for Feed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Feed").field("queued", &self.events.len()).field("policy", &self.policy).finish()
    }
}

impl Feed {
    /// A feed holding up to `capacity` events, with the frame `policy`; registers its
    /// counters.
    pub fn new(capacity: usize, policy: FramePolicy, metrics: &Registry) -> Feed {
        Feed {
            events: ArrayQueue::new(capacity.max(1)),
            dropped: metrics
                .counter("results_dropped_total", "Results dropped because the sinks fell behind."),
            frames_skipped: metrics.counter(
                "frames_not_copied_total",
                "Frames a sink wanted (preview, saving) that were not copied: every buffer was in use.",
            ),
            policy,
            last_preview: std::sync::atomic::AtomicU64::new(u64::MAX),
            consumer: std::sync::OnceLock::new(),
        }
    }

    /// The frame policy.
    pub fn policy(&self) -> FramePolicy {
        self.policy
    }

    /// Registers the thread woken when something arrives (the consumer calls this once).
    pub fn set_consumer(&self, thread: Thread) {
        let _ = self.consumer.set(thread);
    }

    /// Wakes the consumer (also used to make it look at its stop flag).
    pub fn wake(&self) {
        if let Some(t) = self.consumer.get() {
            t.unpark();
        }
    }

    /// What result `seq`, classified at monotonic `now` (triggered or not), needs its frame
    /// for. Marks the preview as taken when it is due.
    pub fn frame_use(&self, seq: u64, triggered: bool, now: Duration) -> FrameUse {
        use std::sync::atomic::Ordering::Relaxed;
        let p = self.policy;
        let preview = p.preview_period.is_some_and(|period| {
            let last = self.last_preview.load(Relaxed);
            let now_us = now.as_micros() as u64;
            let due = last == u64::MAX || now_us >= last.saturating_add(period.as_micros() as u64);
            if due {
                self.last_preview.store(now_us, Relaxed);
            }
            due
        });
        let save =
            (triggered && p.save_triggered) || p.save_every.is_some_and(|n| n > 0 && seq.is_multiple_of(n));
        FrameUse { preview, save }
    }

    /// Hands an event over; if the queue is full the oldest one is dropped and counted.
    /// Never blocks, never allocates.
    pub fn push(&self, event: Event) {
        if self.events.force_push(event).is_some() {
            self.dropped.inc();
        }
        self.wake();
    }

    /// The oldest queued event (consumer side).
    pub fn pop(&self) -> Option<Event> {
        self.events.pop()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(seq: u64) -> ResultSlot {
        ResultSlot {
            time: SystemTime::UNIX_EPOCH,
            at: Duration::ZERO,
            seq,
            frame_seq: seq,
            trigger: "continuous",
            format: PixelFormat::Grey,
            width: 4,
            height: 2,
            top: TopK::new(),
            timings: Timings::default(),
            model: Arc::new(ModelTag { name: "m.onnx".into(), labels: vec![] }),
        }
    }

    fn event(seq: u64) -> Event {
        Event { result: slot(seq), frame: None, frame_use: FrameUse::default() }
    }

    #[test]
    fn a_full_queue_drops_the_oldest_and_counts_it() {
        let f = Feed::new(3, FramePolicy::default(), &Registry::new("t"));
        for s in 0..5 {
            f.push(event(s));
        }
        assert_eq!(f.dropped.get(), 2);
        let seqs: Vec<u64> = std::iter::from_fn(|| f.pop()).map(|e| e.result.seq).collect();
        assert_eq!(seqs, [2, 3, 4]);
    }

    #[test]
    fn pool_buffers_are_reused_only_once_every_sink_let_go() {
        let mut pool = FramePool::new(2);
        let (a, b, c) = ([1u8; 8], [2u8; 8], [3u8; 8]);
        let fa = pool.copy(&Frame::new(&a, PixelFormat::Grey, 4, 2)).unwrap();
        let fb = pool.copy(&Frame::new(&b, PixelFormat::Grey, 4, 2)).unwrap();
        assert!(pool.copy(&Frame::new(&c, PixelFormat::Grey, 4, 2)).is_none(), "both buffers are held");
        assert_eq!(fa.frame().data, a.as_slice());
        drop(fa);
        let fc = pool.copy(&Frame::new(&c, PixelFormat::Grey, 4, 2)).unwrap();
        assert_eq!((fc.frame().data, fb.frame().data), (c.as_slice(), b.as_slice()));
        assert_eq!(fc.width, 4);
        assert!(FramePool::new(0).copy(&Frame::new(&c, PixelFormat::Grey, 4, 2)).is_none());
    }

    #[test]
    fn the_policy_picks_preview_and_saved_frames() {
        let policy = FramePolicy {
            preview_period: Some(Duration::from_millis(100)),
            save_triggered: true,
            save_every: Some(3),
        };
        let f = Feed::new(1, policy, &Registry::new("t"));
        let ms = Duration::from_millis;
        assert_eq!(f.frame_use(1, false, ms(1000)), FrameUse { preview: true, save: false });
        assert_eq!(f.frame_use(2, true, ms(1050)), FrameUse { preview: false, save: true });
        assert_eq!(f.frame_use(3, false, ms(1100)), FrameUse { preview: true, save: true });
        assert!(!f.frame_use(4, false, ms(1150)).any());
        let none = Feed::new(1, FramePolicy::default(), &Registry::new("t"));
        assert!(!none.frame_use(0, true, ms(5)).any());
    }

    #[test]
    fn pushing_wakes_the_consumer() {
        let f = Arc::new(Feed::new(4, FramePolicy::default(), &Registry::new("t")));
        let g = f.clone();
        let t = std::thread::spawn(move || {
            g.set_consumer(std::thread::current());
            let start = std::time::Instant::now();
            loop {
                if let Some(e) = g.pop() {
                    return (e.result.seq, start.elapsed());
                }
                std::thread::park_timeout(Duration::from_secs(10));
            }
        });
        while f.consumer.get().is_none() {
            std::thread::yield_now();
        }
        f.push(event(7));
        let (seq, waited) = t.join().unwrap();
        assert_eq!(seq, 7);
        assert!(waited < Duration::from_secs(5), "woken after {waited:?}");
    }
}
