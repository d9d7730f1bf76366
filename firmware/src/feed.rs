//! The frame loop's hand-off to the integrations (MQTT, the status page, metrics): bounded,
//! lock-free, and free of allocation once warm, so no integration can slow or stop the loop.
//!
//! - Results go into a fixed-capacity queue of plain [`ResultSlot`]s (no heap data). When
//!   it is full the oldest entry is dropped and counted: a stalled consumer costs results,
//!   never frames.
//! - Preview frames go through a triple buffer: the loop copies a frame into a free buffer
//!   and publishes it as the latest, replacing (and freeing) an unread one; the consumer
//!   takes the latest. The three buffers grow to the largest frame previewed and are then
//!   reused, so memory is bounded by three frames.
//! - Counters and latency histograms are atomics in [`Telemetry`], written by the loop and
//!   read by `/metrics` at any time.
//!
//! The consumer thread is woken with `Thread::unpark`, which neither blocks nor allocates.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::Thread;
use std::time::{Duration, SystemTime};

use bit_runtime::{Frame, PixelFormat, TopK};
use crossbeam_queue::ArrayQueue;

use crate::telemetry::Telemetry;

/// One classification, copied out of the frame loop.
#[derive(Clone, Debug)]
pub struct ResultSlot {
    /// Wall-clock time of the result.
    pub time: SystemTime,
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
    /// Capture, preprocess, inference, postprocess, total.
    pub latency: [Duration; 5],
}

/// A frame copied for the preview, with the result it belongs to.
#[derive(Debug)]
pub struct FrameCopy {
    /// The frame's bytes.
    pub data: Vec<u8>,
    /// Pixel layout.
    pub format: PixelFormat,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Row stride, as in [`Frame::stride`].
    pub stride: Option<usize>,
    /// The result's `seq`.
    pub seq: u64,
}

impl ResultSlot {
    /// The result as a JSON line record, with class names from `labels`.
    pub fn record<'a>(&'a self, labels: &'a [String]) -> crate::output::ResultRecord<'a> {
        crate::output::ResultRecord {
            time: self.time,
            seq: self.seq,
            frame_seq: self.frame_seq,
            trigger: self.trigger,
            format: self.format,
            width: self.width,
            height: self.height,
            top: &self.top,
            labels,
            latency: self.latency,
        }
    }
}

impl FrameCopy {
    /// The copy as a runtime frame.
    pub fn frame(&self) -> Frame<'_> {
        Frame {
            data: &self.data,
            format: self.format,
            width: self.width,
            height: self.height,
            stride: self.stride,
        }
    }
}

/// Producer and consumer ends in one (the loop holds an `Arc`, so does the consumer).
pub struct Feed {
    results: ArrayQueue<ResultSlot>,
    /// Results dropped because the queue was full.
    pub dropped: AtomicU64,
    free_frames: ArrayQueue<FrameCopy>,
    latest_frame: ArrayQueue<FrameCopy>,
    preview_period: Option<Duration>,
    last_preview: AtomicU64,
    consumer: std::sync::OnceLock<Thread>,
    /// Counters and histograms.
    pub telemetry: Arc<Telemetry>,
}

impl Feed {
    /// A feed holding up to `capacity` results; frames are copied for the preview at most
    /// once per `preview_period` (`None`: no preview).
    pub fn new(capacity: usize, preview_period: Option<Duration>, telemetry: Arc<Telemetry>) -> Feed {
        let free_frames = ArrayQueue::new(3);
        if preview_period.is_some() {
            for _ in 0..3 {
                let empty = FrameCopy {
                    data: Vec::new(),
                    format: PixelFormat::Rgb24,
                    width: 0,
                    height: 0,
                    stride: None,
                    seq: 0,
                };
                let _ = free_frames.push(empty);
            }
        }
        Feed {
            results: ArrayQueue::new(capacity.max(1)),
            dropped: AtomicU64::new(0),
            free_frames,
            latest_frame: ArrayQueue::new(1),
            preview_period,
            last_preview: AtomicU64::new(u64::MAX),
            consumer: std::sync::OnceLock::new(),
            telemetry,
        }
    }

    /// Registers the thread woken when something arrives (the consumer calls this once).
    pub fn set_consumer(&self, thread: Thread) {
        let _ = self.consumer.set(thread);
    }

    fn wake(&self) {
        if let Some(t) = self.consumer.get() {
            t.unpark();
        }
    }

    /// Hands a result over; if the queue is full the oldest one is dropped and counted.
    /// Never blocks, never allocates.
    pub fn push_result(&self, slot: ResultSlot) {
        if self.results.force_push(slot).is_some() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        self.wake();
    }

    /// Whether a preview frame is due at monotonic time `now` (at most one per period).
    pub fn preview_due(&self, now: Duration) -> bool {
        let Some(period) = self.preview_period else { return false };
        let last = self.last_preview.load(Ordering::Relaxed);
        last == u64::MAX || now.as_micros() as u64 >= last.saturating_add(period.as_micros() as u64)
    }

    /// Copies `frame` for the preview, replacing an unread one. Never blocks; allocates only
    /// while a buffer grows to a frame size it has not held before.
    pub fn push_frame(&self, frame: &Frame, seq: u64, now: Duration) {
        let Some(mut copy) = self.free_frames.pop() else { return };
        self.last_preview.store(now.as_micros() as u64, Ordering::Relaxed);
        copy.data.clear();
        copy.data.extend_from_slice(frame.data);
        copy.format = frame.format;
        copy.width = frame.width;
        copy.height = frame.height;
        copy.stride = frame.stride;
        copy.seq = seq;
        if let Some(unread) = self.latest_frame.force_push(copy) {
            let _ = self.free_frames.push(unread);
        }
        self.wake();
    }

    /// The oldest queued result (consumer side).
    pub fn pop_result(&self) -> Option<ResultSlot> {
        self.results.pop()
    }

    /// The latest preview frame, to be given back with [`Feed::recycle`] (consumer side).
    pub fn take_frame(&self) -> Option<FrameCopy> {
        self.latest_frame.pop()
    }

    /// Returns a frame buffer taken with [`Feed::take_frame`].
    pub fn recycle(&self, copy: FrameCopy) {
        let _ = self.free_frames.push(copy);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(seq: u64) -> ResultSlot {
        ResultSlot {
            time: SystemTime::UNIX_EPOCH,
            seq,
            frame_seq: seq,
            trigger: "continuous",
            format: PixelFormat::Grey,
            width: 4,
            height: 2,
            top: TopK::new(),
            latency: [Duration::ZERO; 5],
        }
    }

    fn feed(capacity: usize, preview: Option<Duration>) -> Feed {
        Feed::new(capacity, preview, Arc::new(Telemetry::new("m.onnx", &[])))
    }

    #[test]
    fn a_full_queue_drops_the_oldest_and_counts_it() {
        let f = feed(3, None);
        for s in 0..5 {
            f.push_result(slot(s));
        }
        assert_eq!(f.dropped.load(Ordering::Relaxed), 2);
        let seqs: Vec<u64> = std::iter::from_fn(|| f.pop_result()).map(|s| s.seq).collect();
        assert_eq!(seqs, [2, 3, 4]);
    }

    #[test]
    fn the_preview_keeps_the_latest_frame_and_three_buffers() {
        let f = feed(1, Some(Duration::from_millis(100)));
        let grey = |v: u8| vec![v; 8];
        let (a, b, c) = (grey(1), grey(2), grey(3));
        assert!(f.preview_due(Duration::from_secs(1)));
        f.push_frame(&Frame::new(&a, PixelFormat::Grey, 4, 2), 1, Duration::from_secs(1));
        assert!(!f.preview_due(Duration::from_millis(1050)));
        assert!(f.preview_due(Duration::from_millis(1100)));
        f.push_frame(&Frame::new(&b, PixelFormat::Grey, 4, 2), 2, Duration::from_millis(1100));
        let held = f.take_frame().unwrap();
        assert_eq!((held.seq, held.data.as_slice()), (2, b.as_slice()));
        assert!(f.take_frame().is_none());
        // While the consumer holds one buffer the loop can still publish twice.
        f.push_frame(&Frame::new(&c, PixelFormat::Grey, 4, 2), 3, Duration::from_millis(1200));
        f.push_frame(&Frame::new(&a, PixelFormat::Grey, 4, 2), 4, Duration::from_millis(1300));
        f.recycle(held);
        let latest = f.take_frame().unwrap();
        assert_eq!(latest.seq, 4);
        assert_eq!(latest.frame().data, a.as_slice());
        f.recycle(latest);
        assert_eq!(f.free_frames.len(), 3);
    }

    #[test]
    fn no_preview_means_no_copies() {
        let f = feed(1, None);
        assert!(!f.preview_due(Duration::from_secs(5)));
        let a = [0u8; 8];
        f.push_frame(&Frame::new(&a, PixelFormat::Grey, 4, 2), 1, Duration::from_secs(5));
        assert!(f.take_frame().is_none());
    }

    #[test]
    fn pushing_wakes_the_consumer() {
        let f = Arc::new(feed(4, None));
        let g = f.clone();
        let t = std::thread::spawn(move || {
            g.set_consumer(std::thread::current());
            let start = std::time::Instant::now();
            loop {
                if let Some(s) = g.pop_result() {
                    return (s.seq, start.elapsed());
                }
                std::thread::park_timeout(Duration::from_secs(10));
            }
        });
        while f.consumer.get().is_none() {
            std::thread::yield_now();
        }
        f.push_result(slot(7));
        let (seq, waited) = t.join().unwrap();
        assert_eq!(seq, 7);
        assert!(waited < Duration::from_secs(5), "woken after {waited:?}");
    }
}
