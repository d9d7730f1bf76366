//! Soak: thousands of frames through one Classifier; every 200 frames the live heap (a
//! counting global allocator) and the resident memory (/proc/self/status) are sampled, and
//! both must stay flat after warm-up. Alone in its file so that no other test's memory
//! shows in the process's numbers.
//!
//! Under qemu-user, /proc/self/status describes the emulator (its translation cache grows
//! in megabyte steps as new code paths run), so `.ci/run` sets `BIT_SOAK_RSS=off` there and
//! only the live-heap bound, which qemu does not affect, is asserted.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicI64, Ordering};

use bit_runtime::contract::Preprocess;
use bit_runtime::{Classifier, ClassifierConfig, Frame, LatencyStats, PixelFormat, Stage};
use common::{frame_bytes, tiny_model};

/// Frames classified; `BIT_SOAK_FRAMES` runs a longer soak.
fn frames() -> usize {
    std::env::var("BIT_SOAK_FRAMES").ok().and_then(|v| v.parse().ok()).unwrap_or(2000).max(2 * EVERY)
}
/// RSS sampling period, frames.
const EVERY: usize = 200;
/// Allowed growth after the first sample, KiB: allocator noise, below a leak of 100 bytes
/// a frame (~176 KiB over 1800 frames).
const BOUND_KIB: i64 = 160;

/// Live heap bytes (allocated minus freed), all threads.
static LIVE: AtomicI64 = AtomicI64::new(0);

struct Counting;

// SAFETY: forwards to the system allocator; only adds bookkeeping.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as i64, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as i64, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size as i64 - layout.size() as i64, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Allowed growth of the live heap after the first sample, bytes (measured: 0): a leak of
/// even one small allocation per 200 frames shows.
const HEAP_BOUND: i64 = 1024;

fn rss_kib() -> i64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn memory_stays_flat_over_thousands_of_frames() {
    let pre = Preprocess::bit_default(224);
    let dir = tempfile::tempdir().unwrap();
    let path = tiny_model(dir.path(), &pre);
    let mut classifier = Classifier::new(&path, &ClassifierConfig::default()).unwrap();
    // A camera's mix: raw frames of two sizes, MJPEG, and the odd bad frame.
    let sources: Vec<(PixelFormat, u32, u32, Vec<u8>)> = [
        (PixelFormat::Yuyv, 640, 480),
        (PixelFormat::Nv12, 1280, 720),
        (PixelFormat::Mjpeg, 640, 480),
        (PixelFormat::Yuyv, 640, 480),
    ]
    .into_iter()
    .map(|(f, w, h)| (f, w, h, frame_bytes(f, w as usize, h as usize, None, 3)))
    .collect();
    // Sized up front: their own growth would show in the live heap.
    let mut samples = Vec::with_capacity(frames() / EVERY + 1);
    let mut heap = Vec::with_capacity(frames() / EVERY + 1);
    let mut errors = 0;
    let mut stats = LatencyStats::new();
    let frames = frames();
    for i in 0..frames {
        let (format, w, h, data) = &sources[i % sources.len()];
        let started = std::time::Instant::now();
        let data: &[u8] = if i % 97 == 0 { &data[..data.len() / 2] } else { data };
        let capture = started.elapsed();
        match classifier.classify(&Frame::new(data, *format, *w, *h)) {
            Ok(mut result) => {
                assert_eq!(result.top.len(), 5);
                result.timings.set(Stage::Capture, capture);
                stats.record_all(&result.timings);
            }
            Err(_) => errors += 1,
        }
        if (i + 1) % EVERY == 0 {
            samples.push((i + 1, rss_kib()));
            heap.push(LIVE.load(Ordering::Relaxed));
        }
    }
    let base = samples[0].1;
    let curve: Vec<String> = samples.iter().map(|(n, kib)| format!("{n}:{:+}", kib - base)).collect();
    println!("RSS after {} frames: {base} KiB; growth per sample (KiB): {}", samples[0].0, curve.join(" "));
    println!("refused frames: {errors}");
    for stage in Stage::ALL {
        println!("{:>11}: {}", stage.name(), stats.summary(stage).unwrap());
    }
    let heap_curve: Vec<i64> = heap.iter().map(|b| b - heap[0]).collect();
    println!(
        "live heap after {} frames: {} bytes; growth per sample (bytes): {heap_curve:?}",
        EVERY, heap[0]
    );
    let worst_heap = heap_curve.iter().copied().max().unwrap();
    assert!(worst_heap <= HEAP_BOUND, "live heap grew by {worst_heap} bytes after warm-up: {heap_curve:?}");
    let worst = samples.iter().map(|(_, kib)| kib - base).max().unwrap();
    if std::env::var("BIT_SOAK_RSS").is_ok_and(|v| v == "off") {
        println!("RSS bound not asserted (BIT_SOAK_RSS=off: emulated, RSS is the emulator's)");
    } else {
        assert!(worst <= BOUND_KIB, "RSS grew by {worst} KiB after warm-up: {curve:?}");
    }
    assert_eq!(errors, frames.div_ceil(97));
}
