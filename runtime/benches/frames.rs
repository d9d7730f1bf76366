//! Per-stage times of the frame path, as a markdown table of medians.
//!
//! `cargo bench -p bit-runtime --bench frames` (the `bench` profile inherits `release`, so
//! tract is not rebuilt). Frames are 640x480 and 1280x720 into a 224x224 tensor on the
//! calling thread (bilinear squash and centre crop, and bicubic centre crop as transformers
//! and timm models use); raw formats hold pseudo-random bytes (the work does not depend on the
//! content), MJPEG a quality-85 JPEG of a synthetic scene. Set `BENCH_REPS` to change the
//! repetitions (default 200).
//!
//! With `BENCH_MODEL=path/to/model.onnx` it also classifies `BENCH_FRAMES` (default 30)
//! YUYV 640x480 frames through a [`Classifier`] with 1 and 2 threads and prints the
//! per-stage medians from the classifier's own statistics.

use std::hint::black_box;
use std::time::{Duration, Instant};

use bit_runtime::contract::{Preprocess, Resample, ResizeMode};
use bit_runtime::preprocess::Kernel;
use bit_runtime::{
    Classifier, ClassifierConfig, Frame, FramePreprocessor, LatencyStats, PixelFormat, Stage, top_k,
};

fn noise(n: usize) -> Vec<u8> {
    let mut s = 0x2545_f491_4f6c_dd1du64;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 24) as u8
        })
        .collect()
}

fn jpeg(w: u32, h: u32) -> Vec<u8> {
    let rgb: Vec<u8> = (0..h)
        .flat_map(|y| {
            (0..w).flat_map(move |x| {
                let t = ((x / 8 + y / 8) % 2) as u8 * 60;
                [(x * 255 / w) as u8 ^ t, (y * 255 / h) as u8, ((x + y) % 256) as u8]
            })
        })
        .collect();
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 85)
        .encode(&rgb, w, h, image::ExtendedColorType::Rgb8)
        .unwrap();
    out
}

fn median(mut f: impl FnMut(), reps: usize) -> Duration {
    for _ in 0..reps.div_ceil(10) {
        f();
    }
    let mut times: Vec<Duration> = (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    times.sort();
    times[reps / 2]
}

/// Median time of filling `out` from a `w` x `h` frame of `format` (noise, or a JPEG).
fn fill_time(
    format: PixelFormat,
    (w, h): (u32, u32),
    pre: &Preprocess,
    kernel: Kernel,
    reps: usize,
    out: &mut [f32],
) -> Duration {
    let rows = if format == PixelFormat::Nv12 { h as usize * 3 / 2 } else { h as usize };
    let data = match format.row_bytes(w) {
        Some(r) => noise(r * rows),
        None => jpeg(w, h),
    };
    let frame = Frame::new(&data, format, w, h);
    let size = (out.len() as f64 / 3.0).sqrt() as u32;
    let mut p = FramePreprocessor::new(pre, size, None, 1920, 1080);
    p.set_kernel(kernel);
    median(|| p.fill(black_box(&frame), black_box(&mut *out)).unwrap(), reps)
}

fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1e3)
}

fn main() {
    let reps: usize = std::env::var("BENCH_REPS").ok().and_then(|v| v.parse().ok()).unwrap_or(200);
    let size = 224u32;
    println!("Frame to {size}x{size} tensor, one thread, median of {reps} (ms):\n");
    println!(
        "| format | 640x480 squash | 640x480 centre crop 0.875 | 1280x720 squash | 640x480 bicubic crop 0.875 |"
    );
    println!("|---|---|---|---|---|");
    let squash = Preprocess::bit_default(size);
    let crop = Preprocess { resize: ResizeMode::CenterCrop { crop_fraction: 0.875 }, ..squash.clone() };
    let cubic = Preprocess { resample: Resample::Bicubic, ..crop.clone() };
    let mut out = vec![0f32; 3 * (size * size) as usize];
    for format in PixelFormat::ALL {
        let yuv = matches!(format, PixelFormat::Yuyv | PixelFormat::Uyvy | PixelFormat::Nv12);
        let kernels: &[Kernel] = if yuv { &[Kernel::Fast, Kernel::Scalar] } else { &[Kernel::Fast] };
        for &kernel in kernels {
            let name = if yuv { format!("{format} ({kernel:?})") } else { format.to_string() };
            let mut row = format!("| {name} |");
            for (pre, (w, h)) in
                [(&squash, (640, 480)), (&crop, (640, 480)), (&squash, (1280, 720)), (&cubic, (640, 480))]
            {
                row += &format!(" {} |", ms(fill_time(format, (w, h), pre, kernel, reps, &mut out)));
            }
            println!("{row}");
        }
    }
    println!();
    // Pillow's antialiasing convolution (transformers and timm contracts): every source
    // pixel is converted and filtered, so the cost grows with the frame, not the tensor.
    println!("Antialiased (Pillow's Image.resize), same frames and tensor (ms):\n");
    println!(
        "| format | 640x480 bilinear squash | 640x480 bicubic squash | 640x480 bicubic crop 0.875 | 1280x720 bilinear squash |"
    );
    println!("|---|---|---|---|---|");
    let aa = Preprocess { antialias: true, ..squash.clone() };
    let aa_cubic = Preprocess { resample: Resample::Bicubic, ..aa.clone() };
    let aa_cubic_crop = Preprocess { antialias: true, ..cubic.clone() };
    for format in PixelFormat::ALL {
        let mut row = format!("| {format} |");
        for (pre, (w, h)) in
            [(&aa, (640, 480)), (&aa_cubic, (640, 480)), (&aa_cubic_crop, (640, 480)), (&aa, (1280, 720))]
        {
            row += &format!(" {} |", ms(fill_time(format, (w, h), pre, Kernel::Fast, reps, &mut out)));
        }
        println!("{row}");
    }
    println!();
    println!("| stage | median (ms) |");
    println!("|---|---|");
    for classes in [10, 1000, 21843] {
        let logits: Vec<f32> =
            noise(classes * 4).chunks(4).map(|c| c[0] as f32 / 16.0 - c[1] as f32 / 32.0).collect();
        let t = median(|| drop(black_box(top_k(black_box(&logits), 5))), reps * 5);
        println!("| softmax + top-5 of {classes} | {} |", ms(t));
    }
    if let Ok(model) = std::env::var("BENCH_MODEL") {
        let frames: usize = std::env::var("BENCH_FRAMES").ok().and_then(|v| v.parse().ok()).unwrap_or(30);
        classify(std::path::Path::new(&model), frames);
    }
}

fn classify(model: &std::path::Path, frames: usize) {
    let data = noise(640 * 480 * 2);
    let frame = Frame::new(&data, PixelFormat::Yuyv, 640, 480);
    println!();
    println!("{}, YUYV 640x480, median of {frames} frames (ms):\n", model.display());
    println!("| threads | input | preprocess | inference | postprocess |");
    println!("|---|---|---|---|---|");
    for threads in [1, 2] {
        let config = ClassifierConfig { threads, ..Default::default() };
        let mut classifier = Classifier::new(model, &config).unwrap_or_else(|e| panic!("{e}"));
        for _ in 0..3 {
            classifier.classify(&frame).unwrap();
        }
        let mut stats = LatencyStats::new();
        for _ in 0..frames {
            stats.record_all(&classifier.classify(&frame).unwrap().timings);
        }
        let p50 = |stage| ms(stats.summary(stage).unwrap().p50);
        let size = classifier.model().input_size();
        println!(
            "| {threads} | {size}x{size} | {} | {} | {} |",
            p50(Stage::Preprocess),
            p50(Stage::Inference),
            p50(Stage::Postprocess)
        );
    }
}
