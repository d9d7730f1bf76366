//! Soak: thousands of frames through one Classifier, resident memory sampled every 200
//! frames from /proc/self/status, which must stay flat after warm-up. Alone in its file so
//! that no other test's memory shows in the process's RSS.

mod common;

use bit_runtime::contract::Preprocess;
use bit_runtime::{Classifier, ClassifierConfig, Frame, PixelFormat, Stage};
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
    let mut samples = Vec::new();
    let mut errors = 0;
    let frames = frames();
    for i in 0..frames {
        let (format, w, h, data) = &sources[i % sources.len()];
        let started = std::time::Instant::now();
        let data: &[u8] = if i % 97 == 0 { &data[..data.len() / 2] } else { data };
        classifier.record(Stage::Capture, started.elapsed());
        match classifier.classify(&Frame::new(data, *format, *w, *h)) {
            Ok(best) => assert_eq!(best.len(), 5),
            Err(_) => errors += 1,
        }
        if (i + 1) % EVERY == 0 {
            samples.push((i + 1, rss_kib()));
        }
    }
    let base = samples[0].1;
    let curve: Vec<String> = samples.iter().map(|(n, kib)| format!("{n}:{:+}", kib - base)).collect();
    println!("RSS after {} frames: {base} KiB; growth per sample (KiB): {}", samples[0].0, curve.join(" "));
    println!("refused frames: {errors}");
    for stage in Stage::ALL {
        println!("{:>11}: {}", stage.name(), classifier.stats().summary(stage).unwrap());
    }
    let worst = samples.iter().map(|(_, kib)| kib - base).max().unwrap();
    assert!(worst <= BOUND_KIB, "RSS grew by {worst} KiB after warm-up: {curve:?}");
    assert_eq!(errors, frames.div_ceil(97));
}
