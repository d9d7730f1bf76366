//! Calibration memory does not grow with the number of calibration images: `bit-tool
//! quantize` keeps per-tensor statistics, not the preprocessed inputs (0.6 MB each at 224 px;
//! 10,000 images once took 5.9 GB). Measured with a global allocator that tracks the live
//! heap's high-water mark; the one test in this file runs its two quantizations in sequence.

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};

use bit_e2e::model_fixture;
use bit_tools::Arch;
use bit_tools::quantize::{QuantizeOptions, quantize_model};

struct Tracking;

static LIVE: AtomicI64 = AtomicI64::new(0);
static PEAK: AtomicI64 = AtomicI64::new(0);

fn grew(by: i64) {
    let now = LIVE.fetch_add(by, Ordering::Relaxed) + by;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged; the
// tracking touches only two atomics.
unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        grew(layout.size() as i64);
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        grew(layout.size() as i64);
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        grew(new_size as i64 - layout.size() as i64);
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as i64, Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Tracking = Tracking;

/// The live heap's high-water mark above its level at the start, while quantizing on `n`
/// copies of one sample photo.
fn peak_quantizing(model: &Path, base: &Path, n: usize) -> i64 {
    let calib = base.join(format!("calib-{n}"));
    std::fs::create_dir_all(&calib).unwrap();
    let photo = bit_e2e::repo_root().join("samples/images/chelsea.png");
    for i in 0..n {
        std::fs::copy(&photo, calib.join(format!("{i:03}.png"))).unwrap();
    }
    let out = base.join(format!("int8-{n}.onnx"));
    let options = QuantizeOptions { threads: 1, progress: false, ..Default::default() };
    let start = LIVE.load(Ordering::Relaxed);
    PEAK.store(start, Ordering::Relaxed);
    let report = quantize_model(model, &calib, &out, &options).unwrap();
    assert_eq!(report.images, n);
    PEAK.load(Ordering::Relaxed) - start
}

#[test]
fn calibration_memory_does_not_grow_with_the_number_of_images() {
    let base = tempfile::tempdir().unwrap();
    let arch = Arch { depths: vec![1, 1, 1, 1], width: 1, num_classes: 10 };
    let f = model_fixture(base.path(), "calib-memory", &arch, 3);
    let few = peak_quantizing(&f.model, base.path(), 4);
    let many = peak_quantizing(&f.model, base.path(), 20);
    // One input tensor at the contract's 224 px: 3 x 224 x 224 f32.
    let tensor = 3 * 224 * 224 * 4;
    println!(
        "peak heap while quantizing: 4 images {few} B, 20 images {many} B (one input tensor {tensor} B)"
    );
    // Keeping the inputs would add 16 tensors (9.6 MB) to the peak; allow 2 for noise.
    assert!(many - few < 2 * tensor as i64, "the peak grew by {} B for 16 more images", many - few);
}
