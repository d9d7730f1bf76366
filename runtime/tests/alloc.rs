//! Allocation counts on the per-frame path, with a counting global allocator.
//!
//! Counts are per thread (a `const` thread-local: no lazy initialization, no destructor, so
//! reading it from inside the allocator is safe), so tests in this file may run in parallel;
//! inference uses one thread (`Executor::SingleThread` runs on the caller).
//!
//! - The runtime's own code (preprocessing every raw format, top-k, statistics, refusing
//!   bad frames): 0 allocations, asserted.
//! - MJPEG: the decoder's own allocations per frame (zune-jpeg's state and buffers), printed,
//!   asserted to be the same for every frame.
//! - tract: a whole `Classifier::classify` minus the zero above is tract's run, printed,
//!   asserted to be non-zero and the same for every frame.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::Duration;

use bit_runtime::contract::{ChannelOrder, Preprocess, Resample, ResizeMode};
use bit_runtime::preprocess::Kernel;
use bit_runtime::{
    Classifier, ClassifierConfig, Frame, FramePreprocessor, LatencyStats, PixelFormat, Roi, Stage, top_k,
};
use common::{frame_bytes, tiny_model};

struct Counting;

thread_local! {
    /// (allocations, bytes) made by this thread.
    static COUNTS: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
}

fn note(bytes: usize) {
    // `try_with`: the thread may be tearing down its locals.
    let _ = COUNTS.try_with(|c| {
        let (n, b) = c.get();
        c.set((n + 1, b + bytes as u64));
    });
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged; the
// counting touches only a `Cell` of plain integers.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Runs `f` and returns (its result, allocations, bytes) made on this thread meanwhile.
fn counted<R>(f: impl FnOnce() -> R) -> (R, u64, u64) {
    let (n0, b0) = COUNTS.with(Cell::get);
    let r = f();
    let (n1, b1) = COUNTS.with(Cell::get);
    (r, n1 - n0, b1 - b0)
}

#[test]
fn runtime_per_frame_code_does_not_allocate() {
    let crop = Preprocess {
        resize: ResizeMode::CenterCrop { crop_fraction: 0.875 },
        channel_order: ChannelOrder::Bgr,
        ..Preprocess::bit_default(224)
    };
    let cubic = Preprocess {
        resize: ResizeMode::CenterCrop { crop_fraction: 224.0 / 256.0 },
        resample: Resample::Bicubic,
        ..Preprocess::bit_default(224)
    };
    let nearest = Preprocess { resample: Resample::Nearest, ..Preprocess::bit_default(224) };
    let configs = [
        (Preprocess::bit_default(224), None),
        (crop.clone(), Some(Roi { x: 16, y: 8, width: 600, height: 400 })),
        (cubic, None),
        (
            Preprocess { resample: Resample::Bicubic, ..crop.clone() },
            Some(Roi { x: 16, y: 8, width: 600, height: 400 }),
        ),
        (nearest, None),
        (Preprocess { antialias: true, ..Preprocess::bit_default(224) }, None),
        (
            Preprocess { antialias: true, resample: Resample::Bicubic, ..crop.clone() },
            Some(Roi { x: 16, y: 8, width: 600, height: 400 }),
        ),
    ];
    for (pre, roi) in configs {
        let mut p = FramePreprocessor::new(&pre, 224, roi, 1280, 720);
        let mut out = vec![0f32; 3 * 224 * 224];
        // Buffers for every format and two geometries, made before counting.
        let frames: Vec<(PixelFormat, u32, u32, Vec<u8>)> = PixelFormat::ALL
            .into_iter()
            .filter(|&f| f != PixelFormat::Mjpeg)
            .flat_map(|f| {
                [(640, 480), (1280, 720)]
                    .map(|(w, h)| (f, w, h, frame_bytes(f, w as usize, h as usize, None, 1)))
            })
            .collect();
        for kernel in [Kernel::Fast, Kernel::Scalar] {
            p.set_kernel(kernel);
            for (format, w, h, data) in &frames {
                // No warm-up: the first frame of a new geometry recomputes the taps in place.
                for round in 0..3 {
                    let (r, n, bytes) = counted(|| p.fill(&Frame::new(data, *format, *w, *h), &mut out));
                    r.unwrap();
                    assert_eq!(
                        (n, bytes),
                        (0, 0),
                        "{format} {w}x{h} {kernel:?} {:?} round {round}",
                        pre.resample
                    );
                }
            }
        }
        // Refused frames cost nothing either.
        let (r, n, _) =
            counted(|| p.fill(&Frame::new(&frames[0].3[1..], PixelFormat::Yuyv, 640, 480), &mut out));
        assert!(r.is_err());
        assert_eq!(n, 0, "a refused frame allocated");
        let (r, n, _) =
            counted(|| p.fill(&Frame::new(&[0xff, 0xd8, 0xff], PixelFormat::Mjpeg, 640, 480), &mut out));
        assert!(r.is_err());
        println!("refused MJPEG header: {n} allocations (decoder)");
    }

    let logits: Vec<f32> = (0..21843).map(|i| ((i * 7919) % 1000) as f32 / 100.0).collect();
    let (best, n, _) = counted(|| top_k(&logits, 16));
    assert_eq!((best.len(), n), (16, 0), "top-k allocated");

    let mut stats = LatencyStats::new();
    let ((), n, _) = counted(|| {
        for i in 0..5000u64 {
            for stage in Stage::ALL {
                stats.record(stage, Duration::from_micros(i % 977));
            }
        }
        for stage in Stage::ALL {
            assert!(stats.summary(stage).unwrap().p99 > Duration::ZERO);
        }
    });
    assert_eq!(n, 0, "statistics allocated");
}

#[test]
fn mjpeg_decoder_allocations_are_the_same_every_frame() {
    let pre = Preprocess::bit_default(224);
    let mut p = FramePreprocessor::new(&pre, 224, None, 1280, 720);
    let mut out = vec![0f32; 3 * 224 * 224];
    for (w, h) in [(640u32, 480u32), (1280, 720)] {
        let jpeg = frame_bytes(PixelFormat::Mjpeg, w as usize, h as usize, None, 4);
        let frame = Frame::new(&jpeg, PixelFormat::Mjpeg, w, h);
        let per_frame: Vec<(u64, u64)> = (0..6)
            .map(|_| {
                let (r, n, b) = counted(|| p.fill(&frame, &mut out));
                r.unwrap();
                (n, b)
            })
            .collect();
        println!("MJPEG {w}x{h}: decoder allocations per frame (count, bytes): {:?}", &per_frame[1..]);
        assert!(per_frame[1..].iter().all(|&c| c == per_frame[1]), "{per_frame:?}");
    }
}

#[test]
fn classify_allocates_only_in_tract() {
    let pre = Preprocess::bit_default(224);
    let dir = tempfile::tempdir().unwrap();
    let path = tiny_model(dir.path(), &pre);
    let mut classifier =
        Classifier::new(&path, &ClassifierConfig { threads: 1, ..Default::default() }).unwrap();
    let yuyv = frame_bytes(PixelFormat::Yuyv, 640, 480, None, 2);
    let frame = Frame::new(&yuyv, PixelFormat::Yuyv, 640, 480);
    let per_frame = classify_counts(&mut classifier, &frame, 3, 20);
    println!(
        "classify (YUYV 640x480 -> tiny model at 224): allocations per frame (count, bytes): {:?}",
        &per_frame[..5]
    );
    // Preprocessing, top-k and statistics are allocation-free (test above): these are tract's.
    assert!(per_frame[0].0 > 0, "tract allocates its intermediate tensors");
    assert!(per_frame.iter().all(|&c| c == per_frame[0]), "not stable: {per_frame:?}");

    let jpeg = frame_bytes(PixelFormat::Mjpeg, 640, 480, None, 2);
    let mjpeg = Frame::new(&jpeg, PixelFormat::Mjpeg, 640, 480);
    classifier.classify(&mjpeg).unwrap();
    let (r, n, b) = counted(|| classifier.classify(&mjpeg));
    r.unwrap();
    println!("classify (MJPEG 640x480): {n} allocations, {b} bytes (tract + JPEG decoder)");
    assert!(n > per_frame[0].0);

    // A refused frame never reaches tract.
    let (r, n, _) = counted(|| classifier.classify(&Frame::new(&yuyv[2..], PixelFormat::Yuyv, 640, 480)));
    assert!(r.is_err());
    assert_eq!(n, 0);
    assert_eq!(classifier.input_replacements(), 0);
}

/// Opt-in: `BIT_ALLOC_MODEL=/path/model.onnx` counts tract's allocations per frame on a real
/// model (float or int8), one thread, so that its share can be reported for BiT itself.
#[test]
fn tract_allocations_on_a_real_model() {
    let Some(path) = std::env::var_os("BIT_ALLOC_MODEL") else {
        println!("SKIPPED: set BIT_ALLOC_MODEL to a model file to count tract's allocations on it");
        return;
    };
    let mut classifier =
        Classifier::new(std::path::Path::new(&path), &ClassifierConfig { threads: 1, ..Default::default() })
            .unwrap();
    let yuyv = frame_bytes(PixelFormat::Yuyv, 640, 480, None, 2);
    let frame = Frame::new(&yuyv, PixelFormat::Yuyv, 640, 480);
    let per_frame = classify_counts(&mut classifier, &frame, 2, 5);
    println!(
        "{}: allocations per frame (count, bytes): {per_frame:?}",
        std::path::Path::new(&path).display()
    );
    assert!(per_frame.iter().all(|&c| c == per_frame[0]), "not stable: {per_frame:?}");
}

/// (allocations, bytes) of each of `runs` classifications of `frame`, after `warm_up` ones.
fn classify_counts(
    classifier: &mut Classifier,
    frame: &Frame,
    warm_up: usize,
    runs: usize,
) -> Vec<(u64, u64)> {
    for _ in 0..warm_up {
        classifier.classify(frame).unwrap();
    }
    (0..runs)
        .map(|_| {
            let (r, n, b) = counted(|| classifier.classify(frame));
            r.unwrap();
            (n, b)
        })
        .collect()
}
