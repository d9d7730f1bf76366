//! Latency statistics per pipeline stage over a rolling window, without allocation.
//!
//! Each stage keeps its last [`WINDOW`] durations in a fixed ring. A summary copies the
//! window to a stack array and sorts it there (`sort_unstable` sorts in place), so
//! [`LatencyStats::record`] and [`LatencyStats::summary`] never allocate; a summary costs
//! about a microsecond, cheap enough for once a second, not meant for every frame.

use std::fmt;
use std::time::Duration;

/// Durations kept per stage.
pub const WINDOW: usize = 512;

/// A stage of the per-frame pipeline: the one stage type of the runtime, the daemon, its
/// metrics and its result records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stage {
    /// The frame's age when it was taken: from the driver's capture timestamp to the moment
    /// the caller, which owns the camera, received it.
    Capture,
    /// Frame to input tensor (colour conversion, resize, normalization; MJPEG decode).
    Preprocess,
    /// The network run.
    Inference,
    /// Softmax and top-k.
    Postprocess,
    /// From capture to the result.
    Total,
}

impl Stage {
    /// How many stages there are.
    pub const COUNT: usize = 5;

    /// Every stage, in pipeline order (`Total` last).
    pub const ALL: [Stage; Stage::COUNT] =
        [Stage::Capture, Stage::Preprocess, Stage::Inference, Stage::Postprocess, Stage::Total];

    /// Lowercase name, for logs, metric labels and result records.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Capture => "capture",
            Stage::Preprocess => "preprocess",
            Stage::Inference => "inference",
            Stage::Postprocess => "postprocess",
            Stage::Total => "total",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// One duration per [`Stage`] of one frame. The classifier fills preprocess, inference and
/// postprocess; the caller owning the camera adds capture and total.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Timings([Duration; Stage::COUNT]);

impl Timings {
    /// `stage`'s duration (zero if never set).
    pub fn get(&self, stage: Stage) -> Duration {
        self.0[stage.index()]
    }

    /// Sets `stage`'s duration.
    pub fn set(&mut self, stage: Stage, d: Duration) {
        self.0[stage.index()] = d;
    }

    /// Every stage with its duration, in pipeline order.
    pub fn iter(&self) -> impl Iterator<Item = (Stage, Duration)> + '_ {
        Stage::ALL.iter().map(|&s| (s, self.get(s)))
    }
}

/// A fixed ring of the last `N` durations, in nanoseconds.
#[derive(Clone, Debug)]
pub struct Window<const N: usize> {
    nanos: [u64; N],
    /// Next slot to write.
    next: usize,
    /// Durations ever recorded (the window holds the last `min(total, N)`).
    total: u64,
}

impl<const N: usize> Default for Window<N> {
    fn default() -> Self {
        Window { nanos: [0; N], next: 0, total: 0 }
    }
}

impl<const N: usize> Window<N> {
    /// Adds one duration, replacing the oldest once the window is full. Durations beyond
    /// 584 years saturate.
    pub fn record(&mut self, d: Duration) {
        if N == 0 {
            return;
        }
        self.nanos[self.next] = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.next = (self.next + 1) % N;
        self.total += 1;
    }

    /// The duration recorded last, `None` before the first.
    pub fn last(&self) -> Option<Duration> {
        if self.total == 0 || N == 0 {
            return None;
        }
        Some(Duration::from_nanos(self.nanos[(self.next + N - 1) % N]))
    }

    /// Durations in the window.
    pub fn len(&self) -> usize {
        (self.total.min(N as u64)) as usize
    }

    /// Whether nothing was recorded yet.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// Percentiles over the window (nearest rank), `None` if empty.
    pub fn summary(&self) -> Option<Summary> {
        let n = self.len();
        if n == 0 {
            return None;
        }
        let mut sorted = [0u64; N];
        sorted[..n].copy_from_slice(&self.nanos[..n]);
        let sorted = &mut sorted[..n];
        sorted.sort_unstable();
        // Nearest rank: the smallest value with at least p of the window at or below it.
        let rank = |p: u64| sorted[((n as u64 * p).div_ceil(100) as usize).clamp(1, n) - 1];
        let mean = sorted.iter().map(|&v| v as u128).sum::<u128>() / n as u128;
        Some(Summary {
            count: n,
            total: self.total,
            mean: Duration::from_nanos(mean as u64),
            p50: Duration::from_nanos(rank(50)),
            p90: Duration::from_nanos(rank(90)),
            p99: Duration::from_nanos(rank(99)),
            max: Duration::from_nanos(sorted[n - 1]),
        })
    }

    /// Forgets every duration.
    pub fn clear(&mut self) {
        *self = Window { nanos: [0; N], next: 0, total: 0 };
    }
}

/// Percentiles of one stage's window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Summary {
    /// Durations in the window.
    pub count: usize,
    /// Durations ever recorded.
    pub total: u64,
    /// Mean over the window.
    pub mean: Duration,
    /// Median.
    pub p50: Duration,
    /// 90th percentile.
    pub p90: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// Largest in the window.
    pub max: Duration,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        write!(
            f,
            "p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms over {} (of {})",
            ms(self.p50),
            ms(self.p90),
            ms(self.p99),
            ms(self.max),
            self.count,
            self.total
        )
    }
}

/// One [`Window`] per [`Stage`]. About 20 KiB, all inline.
#[derive(Clone, Debug, Default)]
pub struct LatencyStats {
    windows: [Window<WINDOW>; Stage::COUNT],
}

impl LatencyStats {
    /// Empty windows.
    pub fn new() -> LatencyStats {
        LatencyStats::default()
    }

    /// Adds a duration to `stage`'s window.
    pub fn record(&mut self, stage: Stage, d: Duration) {
        self.windows[stage.index()].record(d);
    }

    /// Adds every stage of one frame.
    pub fn record_all(&mut self, timings: &Timings) {
        for (stage, d) in timings.iter() {
            self.record(stage, d);
        }
    }

    /// `stage`'s percentiles, `None` before its first duration.
    pub fn summary(&self, stage: Stage) -> Option<Summary> {
        self.windows[stage.index()].summary()
    }

    /// The duration `stage` recorded last (this frame's, right after a classification).
    pub fn last(&self, stage: Stage) -> Option<Duration> {
        self.windows[stage.index()].last()
    }

    /// `stage`'s window.
    pub fn window(&self, stage: Stage) -> &Window<WINDOW> {
        &self.windows[stage.index()]
    }

    /// Forgets every duration of every stage.
    pub fn clear(&mut self) {
        self.windows.iter_mut().for_each(Window::clear);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let mut w = Window::<100>::default();
        assert!(w.summary().is_none());
        // 1..=100 ms in a scrambled order.
        for i in 0..100u64 {
            w.record(Duration::from_millis((i * 37) % 100 + 1));
        }
        let s = w.summary().unwrap();
        assert_eq!((s.count, s.total), (100, 100));
        assert_eq!(s.p50, Duration::from_millis(50));
        assert_eq!(s.p90, Duration::from_millis(90));
        assert_eq!(s.p99, Duration::from_millis(99));
        assert_eq!(s.max, Duration::from_millis(100));
        assert_eq!(s.mean, Duration::from_micros(50_500));
        // The last of the scrambled order: (99 * 37) % 100 + 1 = 64 ms.
        assert_eq!(w.last(), Some(Duration::from_millis(64)));
    }

    #[test]
    fn window_rolls_over() {
        let mut w = Window::<4>::default();
        for ms in [100, 1, 2, 3, 4] {
            w.record(Duration::from_millis(ms));
        }
        let s = w.summary().unwrap();
        assert_eq!((s.count, s.total), (4, 5));
        assert_eq!(s.max, Duration::from_millis(4), "the 100 ms was pushed out");
        assert_eq!(s.p50, Duration::from_millis(2));
        let mut stats = LatencyStats::new();
        stats.record(Stage::Inference, Duration::from_millis(7));
        assert_eq!(stats.summary(Stage::Inference).unwrap().p99, Duration::from_millis(7));
        assert!(stats.summary(Stage::Capture).is_none());
        stats.clear();
        assert!(stats.summary(Stage::Inference).is_none());
    }

    #[test]
    fn timings_keep_each_stage_apart() {
        let mut t = Timings::default();
        for (i, stage) in Stage::ALL.into_iter().enumerate() {
            t.set(stage, Duration::from_millis(i as u64 + 1));
        }
        assert_eq!(t.get(Stage::Inference), Duration::from_millis(3));
        let names: Vec<_> = t.iter().map(|(s, d)| (s.name(), d.as_millis())).collect();
        assert_eq!(
            names,
            [("capture", 1), ("preprocess", 2), ("inference", 3), ("postprocess", 4), ("total", 5)]
        );
        let mut stats = LatencyStats::new();
        stats.record_all(&t);
        assert_eq!(stats.last(Stage::Total), Some(Duration::from_millis(5)));
    }
}
