//! The runtime's JPEG decode (zune-jpeg) against Pillow's (libjpeg-turbo: accurate integer
//! IDCT, "fancy" triangle chroma upsampling), the decoder the models' Python pipelines read
//! files with. `runtime/tests/data/jpeg/`, written by `scripts/jpeg-golden.py`, holds small
//! synthetic JPEGs of every subsampling (and grey, progressive, restart markers, a size that
//! is no multiple of the MCU) with Pillow's decode of each, and for the sample photos
//! (`samples/images/*.jpg`) Pillow's decode of a few tiles plus whole-image per-channel sums
//! and histograms.
//!
//! Both decoders are exact JPEG implementations; they differ in IDCT rounding and in the
//! fixed-point arithmetic of the upsampling and the YCbCr to RGB conversion, so a few pixel
//! values land one or a few steps apart. The limits below are what was measured, rounded up
//! minimally: a regression in the decode path (nearest-neighbour chroma, a limited-range
//! colour conversion, a shifted block) is tens of steps and fails them.
//!
//! Image files ([`bit_runtime::load_image`], through the `image` crate) and MJPEG frames
//! ([`FramePreprocessor`]'s own decode) both use zune-jpeg; the second test checks they give
//! the same bytes. The frame path is read back through a nearest "resize" of square regions
//! at their own size with mean 0 and std 1, which is the identity (`byte / 255`).

use std::path::{Path, PathBuf};

use bit_runtime::contract::{Preprocess, Resample, ResizeMode};
use bit_runtime::{Frame, FramePreprocessor, PixelFormat, Roi};
use serde_json::Value;

/// Per case (the JPEG's file stem): the largest difference from Pillow in any channel of any
/// pixel, and the mean absolute difference over all channel values compared. Measured with
/// zune-jpeg 0.5.15 against Pillow 13.0.0 / libjpeg-turbo 3.2.0 (the same bytes on x86_64
/// with and without AVX2 and on aarch64): the maxima are the observed ones, the means the
/// observed ones rounded up. The largest differences of 4:2:2 and 4:2:0 are in the last
/// column of a width that is no multiple of the MCU, where zune-jpeg interpolates towards
/// the padding chroma sample and libjpeg-turbo repeats the last one; inside the image it is
/// rounding (zune-jpeg's upsampled chroma is on average 0.1 (4:2:2) to 0.2 (4:2:0) higher).
/// For scale: nearest-neighbour chroma on `s420-q75` would be max 105, mean 2.7; a
/// limited-range YCbCr conversion max 21, mean 6.5.
const LIMITS: &[(&str, u8, f64)] = &[
    ("s444-q75", 2, 0.015),
    ("s444-q95", 2, 0.014),
    ("s422-q75", 7, 0.16),
    ("s422-q95", 4, 0.16),
    ("s420-q75", 9, 0.31),
    ("s420-q95", 4, 0.33),
    ("grey-q75", 1, 0.007),
    ("s420-q85-progressive", 6, 0.31),
    ("s422-q85-restart", 6, 0.16),
    ("s420-q85-odd-113x87", 3, 0.3),
    ("hubble_deep_field", 2, 0.014),
    ("rocket", 2, 0.012),
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned()
}

fn cases() -> Value {
    let path = root().join("runtime/tests/data/jpeg/cases.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn stem(case: &Value) -> &str {
    Path::new(case["jpeg"].as_str().unwrap()).file_stem().unwrap().to_str().unwrap()
}

fn dims(case: &Value) -> (u32, u32) {
    (case["width"].as_u64().unwrap() as u32, case["height"].as_u64().unwrap() as u32)
}

/// A tile of `cases.json` as a region.
fn roi(tile: &Value) -> Roi {
    let get = |k: &str| tile[k].as_u64().unwrap() as u32;
    Roi { x: get("x"), y: get("y"), width: get("width"), height: get("height") }
}

/// `roi` of packed RGB8 rows `3 * width` bytes long.
fn crop(rgb: &[u8], width: u32, roi: Roi) -> Vec<u8> {
    let (w, x, n) = (3 * width as usize, 3 * roi.x as usize, 3 * roi.width as usize);
    let rows = rgb.chunks_exact(w).skip(roi.y as usize).take(roi.height as usize);
    rows.flat_map(|row| &row[x..x + n]).copied().collect()
}

/// Differences between two equally long RGB8 images, accumulated over several regions.
#[derive(Default)]
struct Diff {
    max: u8,
    /// Sum of the absolute differences of all channel values.
    sum: u64,
    /// Pixels with any channel different.
    differ: usize,
    pixels: usize,
}

impl Diff {
    fn add(&mut self, a: &[u8], b: &[u8]) {
        assert_eq!(a.len(), b.len());
        for (p, q) in a.chunks_exact(3).zip(b.chunks_exact(3)) {
            let d = [0, 1, 2].map(|c| p[c].abs_diff(q[c]));
            self.max = self.max.max(d[0].max(d[1]).max(d[2]));
            self.sum += d.iter().map(|&d| d as u64).sum::<u64>();
            self.differ += usize::from(d != [0; 3]);
        }
        self.pixels += a.len() / 3;
    }

    fn mean(&self) -> f64 {
        self.sum as f64 / (3 * self.pixels) as f64
    }

    fn share(&self) -> f64 {
        self.differ as f64 / self.pixels as f64
    }
}

/// Whole sample photos, from the golden sums and histograms: the largest mean signed
/// difference of a channel (measured: 0.011), and the share of channel values that would
/// have to move to turn one histogram into the other (measured: 0.0012).
const PHOTO_BIAS: f64 = 0.012;
const PHOTO_HISTOGRAM: f64 = 0.0013;

/// For a case with golden sums and histograms (a whole sample photo): per channel the mean
/// signed difference from Pillow, and the share of all channel values that would have to
/// move to turn the histograms into Pillow's.
fn whole_image(rgb: &[u8], case: &Value) -> Option<([f64; 3], f64)> {
    let sums = case["sums"].as_array()?;
    let n = (rgb.len() / 3) as f64;
    let channel = |c: usize| rgb.iter().skip(c).step_by(3).copied();
    let mut moved = 0;
    let bias = std::array::from_fn(|c| {
        let mut counts = [0u64; 256];
        channel(c).for_each(|v| counts[v as usize] += 1);
        let theirs = case["histograms"][c].as_array().unwrap();
        moved += counts.iter().zip(theirs).map(|(a, b)| a.abs_diff(b.as_u64().unwrap())).sum::<u64>();
        let ours: u64 = channel(c).map(u64::from).sum();
        (ours as f64 - sums[c].as_u64().unwrap() as f64) / n
    });
    Some((bias, moved as f64 / 2.0 / (3.0 * n)))
}

#[test]
fn decode_is_within_a_few_steps_of_pillows() {
    let meta = cases();
    let dir = root().join("runtime/tests/data/jpeg");
    let cases = meta["cases"].as_array().unwrap();
    assert_eq!(cases.len(), LIMITS.len());
    println!(
        "zune-jpeg (bit_runtime::load_image) against Pillow {} (libjpeg-turbo {}):",
        meta["pillow"], meta["libjpeg_turbo"]
    );
    println!(
        "{:<22} {:>5} {:>9} {:>8} | {:>4} {:>7} {:>7} | {:>17} {:>9}",
        "case", "samp", "size", "compared", "max", "mean", "differ", "mean R/G/B diff", "hist L1"
    );
    let mut failures = Vec::new();
    for case in cases {
        let name = stem(case);
        let (w, h) = dims(case);
        let img = bit_runtime::load_image(&root().join(case["jpeg"].as_str().unwrap())).unwrap();
        assert_eq!(img.dimensions(), (w, h), "{name}");
        let rgb = img.as_raw();
        let mut diff = Diff::default();
        for tile in case["tiles"].as_array().unwrap() {
            let golden = image::open(dir.join(tile["png"].as_str().unwrap())).unwrap().to_rgb8();
            let r = roi(tile);
            assert_eq!(golden.dimensions(), (r.width, r.height), "{name}");
            diff.add(&crop(rgb, w, r), golden.as_raw());
        }
        let whole = whole_image(rgb, case);
        let (bias, hist) = whole.map_or((String::new(), String::new()), |(bias, hist)| {
            (bias.map(|b| format!("{b:+.3}")).join("/"), format!("{hist:.4}"))
        });
        println!(
            "{:<22} {:>5} {:>9} {:>8} | {:>4} {:>7.4} {:>6.2}% | {:>17} {:>9}",
            name,
            case["subsampling"].as_str().unwrap(),
            format!("{w}x{h}"),
            diff.pixels,
            diff.max,
            diff.mean(),
            100.0 * diff.share(),
            bias,
            hist
        );
        let &(_, max, mean) =
            LIMITS.iter().find(|l| l.0 == name).unwrap_or_else(|| panic!("no limit for {name}"));
        if diff.max > max || diff.mean() > mean {
            failures.push(format!(
                "{name}: max {} (limit {max}), mean {:.4} (limit {mean})",
                diff.max,
                diff.mean()
            ));
        }
        if let Some((bias, hist)) = whole
            && (bias.iter().any(|b| b.abs() > PHOTO_BIAS) || hist > PHOTO_HISTOGRAM)
        {
            failures.push(format!("{name}: whole image bias {bias:?} (limit {PHOTO_BIAS}), histogram {hist} (limit {PHOTO_HISTOGRAM})"));
        }
    }
    assert!(failures.is_empty(), "further from Pillow than measured:\n{}", failures.join("\n"));
}

/// `roi` (square) of an MJPEG frame as the frame path decodes it.
fn frame_region(jpeg: &[u8], (w, h): (u32, u32), roi: Roi) -> Vec<u8> {
    assert_eq!(roi.width, roi.height);
    let side = roi.width;
    let pre = Preprocess {
        mean: [0.0; 3],
        std: [1.0; 3],
        resize: ResizeMode::Squash,
        resample: Resample::Nearest,
        antialias: false,
        ..Preprocess::bit_default(side)
    };
    let mut p = FramePreprocessor::new(&pre, side, Some(roi), w, h);
    let mut t = vec![0f32; 3 * (side * side) as usize];
    p.fill(&Frame::new(jpeg, PixelFormat::Mjpeg, w, h), &mut t).unwrap();
    let plane = (side * side) as usize;
    let t = &t;
    (0..plane)
        .flat_map(|i| (0..3).map(move |c| t[c * plane + i]))
        .map(|v| {
            let v = (v * 255.0).round();
            assert!((0.0..=255.0).contains(&v), "{v}");
            v as u8
        })
        .collect()
}

#[test]
fn mjpeg_frames_decode_as_files_do() {
    for case in cases()["cases"].as_array().unwrap() {
        let name = stem(case);
        let (w, h) = dims(case);
        let path = root().join(case["jpeg"].as_str().unwrap());
        let file = bit_runtime::load_image(&path).unwrap();
        let jpeg = std::fs::read(&path).unwrap();
        // Squares covering the whole image (the last row and column of them overlap the
        // others), and the square golden tiles.
        let side = w.min(h);
        let starts = |len: u32| (0..len - side).step_by(side as usize).chain([len - side]);
        let mut regions: Vec<Roi> =
            starts(h).flat_map(|y| starts(w).map(move |x| Roi { x, y, width: side, height: side })).collect();
        regions.extend(case["tiles"].as_array().unwrap().iter().map(roi).filter(|r| r.width == r.height));
        for r in regions {
            assert!(frame_region(&jpeg, (w, h), r) == crop(file.as_raw(), w, r), "{name}: {r:?} differs");
        }
    }
}
