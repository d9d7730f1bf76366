//! The antialiased resize against Pillow itself: `runtime/tests/data/pillow/` holds what
//! Pillow 13's `Image.resize` (and transformers' BitImageProcessor chain: shortest edge,
//! resize, centre crop) made of the sample photos and of synthetic frames that alias, written
//! by `scripts/pillow-golden.py`. The runtime's 8-bit results must equal them to within one
//! step (Pillow's arithmetic is reproduced exactly, so the observed difference is 0; the
//! step allows for a compiler's different floating-point contraction of a weight that lands
//! on a rounding boundary). The tensor is read back as bytes: with mean 0 and std 1 it is
//! `byte / 255`, exact to far under half a step.
//!
//! The same comparison for the non-antialiased filters is printed (not asserted): how far
//! the fixed-footprint resize is from what a transformers or timm model was trained with.

use std::path::{Path, PathBuf};

use bit_runtime::contract::{Preprocess, Resample, ResizeMode};
use bit_runtime::preprocess::image_tensor;
use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned()
}

/// The synthetic frame of `scripts/pillow-golden.py`: 1-pixel stripes (red), a 2x2
/// checkerboard (green), an integer zone plate (blue).
fn synthetic(w: usize, h: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(3 * w * h);
    for y in 0..h as i64 {
        for x in 0..w as i64 {
            let r2 = (x - w as i64 / 2).pow(2) + (y - h as i64 / 2).pow(2);
            let v = (r2 * 8 / 25) % 512;
            out.extend([
                (x % 2 * 255) as u8,
                (((x / 2) + (y / 2)) % 2 * 255) as u8,
                if v < 256 { v as u8 } else { (511 - v) as u8 },
            ]);
        }
    }
    out
}

/// `(rgb, width, height)` of a case's source.
fn source(name: &str) -> (Vec<u8>, u32, u32) {
    if let Some(dims) = name.strip_prefix("synthetic-") {
        let (w, h) = dims.split_once('x').unwrap();
        let (w, h) = (w.parse().unwrap(), h.parse().unwrap());
        return (synthetic(w, h), w as u32, h as u32);
    }
    let img = bit_runtime::load_image(&root().join("samples/images").join(name)).unwrap();
    let (w, h) = img.dimensions();
    (img.into_raw(), w, h)
}

/// The runtime's resize of `rgb` under `case` as bytes (tensor x 255, rounded).
fn runtime_bytes(rgb: &[u8], (w, h): (u32, u32), case: &Value, antialias: bool) -> Vec<u8> {
    let size = case["size"].as_u64().unwrap() as u32;
    let resample = match case["filter"].as_str().unwrap() {
        "bilinear" => Resample::Bilinear,
        "bicubic" => Resample::Bicubic,
        other => panic!("filter {other}"),
    };
    let resize = match case["mode"].as_str().unwrap() {
        "squash" => ResizeMode::Squash,
        _ => {
            let shortest = case["shortest"].as_u64().unwrap() as f64;
            ResizeMode::CenterCrop { crop_fraction: (size as f64 / shortest) as f32 }
        }
    };
    let pre = Preprocess {
        mean: [0.0; 3],
        std: [1.0; 3],
        resize,
        resample,
        antialias,
        ..Preprocess::bit_default(size)
    };
    assert_eq!(resize.shortest_edge(size), case["shortest"].as_u64().map_or(size, |s| s as u32));
    let t = image_tensor(rgb, w, h, &pre, size);
    let plane = (size * size) as usize;
    (0..plane)
        .flat_map(|i| (0..3).map(move |c| (c, i)))
        .map(|(c, i)| {
            let v = (t[c * plane + i] * 255.0).round();
            assert!((0.0..=255.0).contains(&v), "{v}");
            v as u8
        })
        .collect()
}

/// (max difference, mean absolute difference, share of bytes that differ).
fn compare(a: &[u8], b: &[u8]) -> (u8, f64, f64) {
    assert_eq!(a.len(), b.len());
    let d = a.iter().zip(b).map(|(x, y)| x.abs_diff(*y));
    let (max, sum, n) =
        d.fold((0u8, 0u64, 0usize), |(m, s, n), d| (m.max(d), s + d as u64, n + usize::from(d > 0)));
    (max, sum as f64 / a.len() as f64, n as f64 / a.len() as f64)
}

#[test]
fn antialiased_resize_is_pillows() {
    let dir = root().join("runtime/tests/data/pillow");
    let meta: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("cases.json")).unwrap()).unwrap();
    let cases = meta["cases"].as_array().unwrap();
    assert!(cases.len() >= 30, "{} cases", cases.len());
    println!("against Pillow {}:", meta["pillow"]);
    println!(
        "{:<48} {:>6} | {:>8} {:>9} {:>8} | {:>8} {:>9} {:>8}",
        "case", "scale", "aa max", "aa mean", "aa diff", "off max", "off mean", "off diff"
    );
    let mut worst_off = 0u8;
    for case in cases {
        let file = case["file"].as_str().unwrap();
        let golden = image::open(dir.join(file)).unwrap().to_rgb8();
        let (rgb, w, h) = source(case["source"].as_str().unwrap());
        let size = case["size"].as_u64().unwrap() as u32;
        assert_eq!(golden.dimensions(), (size, size), "{file}");
        let aa = compare(&runtime_bytes(&rgb, (w, h), case, true), golden.as_raw());
        let off = compare(&runtime_bytes(&rgb, (w, h), case, false), golden.as_raw());
        let short = case["shortest"].as_u64().map_or(size, |s| s as u32);
        let scale = w.min(h) as f64 / short as f64;
        println!(
            "{file:<48} {scale:>6.2} | {:>8} {:>9.4} {:>7.2}% | {:>8} {:>9.3} {:>7.1}%",
            aa.0,
            aa.1,
            aa.2 * 100.0,
            off.0,
            off.1,
            off.2 * 100.0
        );
        assert!(aa.0 <= 1, "{file}: {} steps from Pillow", aa.0);
        worst_off = worst_off.max(off.0);
    }
    // The synthetic frames alias: without the filter the difference is large, so these
    // goldens do tell the two apart.
    assert!(worst_off > 100, "the non-antialiased resize came within {worst_off} steps of Pillow");
}
