//! Each checkpoint source's preprocessing contract, from import to frame: a synthetic
//! checkpoint of every source style is imported, and the runtime's tensors (image path
//! `Model::tensor_for_image` and the `Classifier` frame path with an RGB24 frame) must equal
//! a plain implementation of what that source's own library does, within one 8-bit step
//! before normalization.
//!
//! The plain reference is written out here, independently of the runtime: resize the whole
//! image (squash) or its shortest edge to S, with the long edge `int(S * long / short)`
//! (transformers' and torchvision's rounding); separable filters at half-pixel centres with
//! edge pixels repeated and no antialiasing (bilinear: triangle; bicubic: Keys a = -0.5 as
//! PIL; nearest: the pixel under the centre); one rounding to 8 bits at the end (PIL
//! returns 8-bit images); crop `C x C` at `((W - C) // 2, (H - C) // 2)` (transformers'
//! `center_crop`); then `(x / 255 - mean) / std`. Frames: 600x400 and 400x600 (whole-number
//! geometry), 640x480 (long side 341.33 -> 341, odd margin 117) and 333x250 (short side
//! upscaled to 256, long side 340.99 -> 340): the runtime's one-pass centre crop must
//! reproduce the two steps' rounding.
//!
//! Antialiased contracts (transformers, timm) have their own plain reference, Pillow's
//! `Image.resize` from its definition: the filter stretched by the downscale factor
//! (`max(scale, 1)`), every source pixel whose centre lies within its support weighted,
//! pixels outside the image dropped and the weights renormalized, the horizontal pass
//! rounded to 8 bits before the vertical one; all in f64 (the runtime uses Pillow's 22-bit
//! fixed point, and `runtime/tests/pillow.rs` checks it against Pillow's own output).

use std::path::{Path, PathBuf};

use bit_runtime::contract::{ChannelOrder, Preprocess, Resample, ResizeMode};
use bit_runtime::{
    Classifier, ClassifierConfig, ContractSource, Frame, LoadOptions, Model, ModelInfo, PixelFormat,
};
use bit_tools::contract::{CLIP_MEAN, CLIP_STD, ContractChoice, Overrides, ResizeKind};
use bit_tools::{Arch, ImportOptions, Layout};

fn arch() -> Arch {
    Arch { depths: vec![1, 1, 1, 1], width: 1, num_classes: 10 }
}

/// A photo (chelsea.png) resized to `w` x `h` with the image crate: real texture and edges.
fn photo(w: u32, h: u32) -> image::RgbImage {
    let path = bit_e2e::sample_images().into_iter().find(|p| p.ends_with("chelsea.png")).expect("sample");
    let img = bit_runtime::load_image(&path).unwrap();
    image::imageops::resize(&img, w, h, image::imageops::FilterType::Triangle)
}

/// One axis of the plain resize: for each output, (source index, weight) pairs.
fn axis(n_in: usize, n_out: usize, filter: Resample) -> Vec<Vec<(usize, f64)>> {
    let scale = n_in as f64 / n_out as f64;
    let clamp = |i: i64| i.clamp(0, n_in as i64 - 1) as usize;
    (0..n_out)
        .map(|o| {
            let centre = (o as f64 + 0.5) * scale;
            match filter {
                Resample::Nearest => vec![(clamp(centre.floor() as i64), 1.0)],
                Resample::Bilinear | Resample::Bicubic => {
                    let (support, kernel): (i64, fn(f64) -> f64) = if filter == Resample::Bilinear {
                        (1, |d: f64| (1.0 - d.abs()).max(0.0))
                    } else {
                        (2, |d: f64| {
                            let (a, d) = (-0.5, d.abs());
                            if d < 1.0 {
                                (a + 2.0) * d.powi(3) - (a + 3.0) * d * d + 1.0
                            } else if d < 2.0 {
                                a * d.powi(3) - 5.0 * a * d * d + 8.0 * a * d - 4.0 * a
                            } else {
                                0.0
                            }
                        })
                    };
                    let s = centre - 0.5;
                    let f = s.floor() as i64;
                    (f - support + 1..=f + support).map(|i| (clamp(i), kernel(s - i as f64))).collect()
                }
            }
        })
        .collect()
}

/// The filter of `resample` and its support at scale 1.
fn kernel(filter: Resample) -> (f64, fn(f64) -> f64) {
    match filter {
        Resample::Bilinear => (1.0, |d: f64| (1.0 - d.abs()).max(0.0)),
        _ => (2.0, |d: f64| {
            let (a, d) = (-0.5, d.abs());
            if d < 1.0 {
                (a + 2.0) * d.powi(3) - (a + 3.0) * d * d + 1.0
            } else if d < 2.0 {
                a * d.powi(3) - 5.0 * a * d * d + 8.0 * a * d - 4.0 * a
            } else {
                0.0
            }
        }),
    }
}

/// One axis of Pillow's antialiased resize: the pixels whose centres lie within the
/// stretched support of each output centre, weights normalized to sum to 1.
fn axis_antialiased(n_in: usize, n_out: usize, filter: Resample) -> Vec<Vec<(usize, f64)>> {
    let scale = n_in as f64 / n_out as f64;
    let stretch = scale.max(1.0);
    let (support, k) = kernel(filter);
    (0..n_out)
        .map(|o| {
            let centre = (o as f64 + 0.5) * scale;
            let taps: Vec<(usize, f64)> = (0..n_in)
                .map(|i| (i, (i as f64 + 0.5 - centre) / stretch))
                .filter(|&(_, d)| d.abs() < support)
                .map(|(i, d)| (i, k(d)))
                .collect();
            let sum: f64 = taps.iter().map(|t| t.1).sum();
            taps.into_iter().map(|(i, w)| (i, w / sum)).collect()
        })
        .collect()
}

/// The plain contract: returns the NCHW tensor of `img` under `pre` at `pre.input_size`.
fn reference(img: &image::RgbImage, pre: &Preprocess) -> Vec<f32> {
    if pre.antialiased() {
        return reference_antialiased(img, pre);
    }
    let (w, h) = (img.width() as usize, img.height() as usize);
    let c = pre.input_size as usize;
    let ((rw, rh), (left, top)) = geometry(w, h, pre);
    let (xs, ys) = (axis(w, rw, pre.resample), axis(h, rh, pre.resample));
    let px = |x: usize, y: usize, ch: usize| img.get_pixel(x as u32, y as u32)[ch] as f64;
    let order = match pre.channel_order {
        ChannelOrder::Rgb => [0, 1, 2],
        ChannelOrder::Bgr => [2, 1, 0],
    };
    let mut out = vec![0f32; 3 * c * c];
    for (t, &ch) in order.iter().enumerate() {
        for oy in 0..c {
            for ox in 0..c {
                let mut v = 0.0;
                for &(y, wy) in &ys[oy + top] {
                    for &(x, wx) in &xs[ox + left] {
                        v += px(x, y, ch) * wx * wy;
                    }
                }
                let byte = v.round().clamp(0.0, 255.0);
                out[t * c * c + oy * c + ox] =
                    ((byte / 255.0 - pre.mean[t] as f64) / pre.std[t] as f64) as f32;
            }
        }
    }
    out
}

/// The resized size and crop offset of a `w` x `h` image under `pre`.
fn geometry(w: usize, h: usize, pre: &Preprocess) -> ((usize, usize), (usize, usize)) {
    let c = pre.input_size as usize;
    let (rw, rh) = match pre.resize {
        ResizeMode::Squash => (c, c),
        ResizeMode::CenterCrop { crop_fraction } => {
            let s = (c as f64 / crop_fraction as f64).round() as usize;
            if w <= h { (s, s * h / w) } else { (s * w / h, s) }
        }
    };
    ((rw, rh), ((rw - c) / 2, (rh - c) / 2))
}

/// [`reference`] for antialiased contracts: Pillow's two passes, each rounded to 8 bits.
fn reference_antialiased(img: &image::RgbImage, pre: &Preprocess) -> Vec<f32> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let c = pre.input_size as usize;
    let ((rw, rh), (left, top)) = geometry(w, h, pre);
    let (xs, ys) = (axis_antialiased(w, rw, pre.resample), axis_antialiased(h, rh, pre.resample));
    let round8 = |v: f64| v.round().clamp(0.0, 255.0);
    // Horizontal pass over every source row, the crop's columns only.
    let mut mid = vec![[0f64; 3]; c * h];
    for y in 0..h {
        for ox in 0..c {
            for (ch, m) in mid[y * c + ox].iter_mut().enumerate() {
                let px = |x: usize| img.get_pixel(x as u32, y as u32)[ch] as f64;
                *m = round8(xs[ox + left].iter().map(|&(x, wx)| px(x) * wx).sum());
            }
        }
    }
    let order = match pre.channel_order {
        ChannelOrder::Rgb => [0, 1, 2],
        ChannelOrder::Bgr => [2, 1, 0],
    };
    let mut out = vec![0f32; 3 * c * c];
    for (t, &ch) in order.iter().enumerate() {
        for oy in 0..c {
            for ox in 0..c {
                let v: f64 = ys[oy + top].iter().map(|&(y, wy)| mid[y * c + ox][ch] * wy).sum();
                out[t * c * c + oy * c + ox] =
                    ((round8(v) / 255.0 - pre.mean[t] as f64) / pre.std[t] as f64) as f32;
            }
        }
    }
    out
}

/// Largest difference in 8-bit steps before normalization.
fn max_lsb(got: &[f32], want: &[f32], pre: &Preprocess) -> f64 {
    let plane = got.len() / 3;
    got.iter()
        .zip(want)
        .enumerate()
        .map(|(i, (g, w))| ((g - w) as f64 * 255.0 * pre.std[i / plane] as f64).abs())
        .fold(0.0, f64::max)
}

/// Imports `checkpoint` and checks that both runtime paths follow the model's contract,
/// which must equal `expected` (source included). Returns the model.
fn check(checkpoint: &Path, out: &Path, options: &ImportOptions, expected: &Preprocess) -> PathBuf {
    let report = bit_tools::import_checkpoint(checkpoint, out, options).unwrap();
    let info = ModelInfo::read(out).unwrap();
    assert_eq!(info.contract_source, ContractSource::Model);
    assert_eq!(info.preprocess, report.preprocess);
    let got = &info.preprocess;
    let close = |a: [f32; 3], b: [f32; 3]| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-6);
    assert!(close(got.mean, expected.mean) && close(got.std, expected.std), "{got:?} vs {expected:?}");
    assert_eq!(
        (got.input_size, got.channel_order, got.resize, got.resample, got.antialias, &got.source),
        (
            expected.input_size,
            expected.channel_order,
            expected.resize,
            expected.resample,
            expected.antialias,
            &expected.source
        )
    );
    let model = Model::load(out, &LoadOptions::default()).unwrap();
    let mut classifier = Classifier::new(out, &ClassifierConfig::default()).unwrap();
    let source = got.source.as_deref().unwrap();
    for (w, h) in [(600, 400), (400, 600), (640, 480), (333, 250)] {
        let img = photo(w, h);
        let want = reference(&img, got);
        let image_path = model.tensor_for_image(&img);
        let d = max_lsb(&image_path, &want, got);
        println!("{source}: {w}x{h} image path vs plain reference: {d:.3} steps");
        // One step, plus the f32 rounding of the normalization (a byte that rounds the other
        // way is exactly one step off before it).
        assert!(d <= 1.0 + 1e-3, "{source}, {w}x{h}: image path differs by {d} steps");
        classifier.classify(&Frame::new(img.as_raw(), PixelFormat::Rgb24, w, h)).unwrap();
        let d = max_lsb(classifier.input(), &want, got);
        println!("{source}: {w}x{h} RGB24 frame path vs plain reference: {d:.3} steps");
        assert!(d <= 1.0 + 1e-3, "{source}, {w}x{h}: frame path differs by {d} steps");
    }
    out.to_owned()
}

#[test]
fn npz_gets_bit_default() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("ckpt.npz");
    bit_tools::synth::write_synthetic(&ckpt, &arch(), 3, Layout::Npz, None).unwrap();
    let expected = Preprocess::bit_default(224).with_source("npz default");
    check(&ckpt, &dir.path().join("npz.onnx"), &ImportOptions::default(), &expected);
}

#[test]
fn transformers_directory_gets_its_preprocessor_config() {
    let dir = tempfile::tempdir().unwrap();
    let hf = dir.path().join("hf");
    std::fs::create_dir(&hf).unwrap();
    bit_tools::synth::write_synthetic(&hf.join("model.safetensors"), &arch(), 3, Layout::Transformers, None)
        .unwrap();
    let config = serde_json::json!({
        "image_processor_type": "BitImageProcessor",
        "do_resize": true, "size": {"shortest_edge": 256}, "resample": 3,
        "do_center_crop": true, "crop_size": {"height": 224, "width": 224},
        "do_rescale": true, "rescale_factor": 0.00392156862745098,
        "do_normalize": true, "image_mean": CLIP_MEAN, "image_std": CLIP_STD,
        "do_convert_rgb": true
    });
    std::fs::write(hf.join("preprocessor_config.json"), config.to_string()).unwrap();
    let expected = Preprocess {
        mean: CLIP_MEAN,
        std: CLIP_STD,
        resize: ResizeMode::CenterCrop { crop_fraction: 224.0 / 256.0 },
        resample: Resample::Bicubic,
        antialias: true,
        ..Preprocess::bit_default(224)
    }
    .with_source("preprocessor_config.json");
    check(&hf, &dir.path().join("hf.onnx"), &ImportOptions::default(), &expected);

    // A bad field is refused, naming the file and the field.
    std::fs::write(hf.join("preprocessor_config.json"), r#"{"resample": 4}"#).unwrap();
    let e = bit_tools::import_checkpoint(&hf, &dir.path().join("bad.onnx"), &ImportOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("preprocessor_config.json") && e.contains("'resample'"), "{e}");
    // Without the file: BiT's contract, and the source says why.
    std::fs::remove_file(hf.join("preprocessor_config.json")).unwrap();
    let expected = Preprocess::bit_default(224)
        .with_source("transformers without preprocessor_config.json: BiT default");
    check(&hf, &dir.path().join("hf-default.onnx"), &ImportOptions::default(), &expected);
}

#[test]
fn timm_gets_its_pretrained_cfg_or_timm_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let timm = dir.path().join("timm");
    std::fs::create_dir(&timm).unwrap();
    let weights = timm.join("model.safetensors");
    bit_tools::synth::write_synthetic(&weights, &arch(), 3, Layout::Timm, None).unwrap();
    let config = serde_json::json!({
        "architecture": "resnetv2_50x1_bit",
        "num_classes": 10,
        "pretrained_cfg": {
            "input_size": [3, 224, 224], "interpolation": "bicubic", "crop_pct": 0.875,
            "crop_mode": "center", "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]
        }
    });
    std::fs::write(timm.join("config.json"), config.to_string()).unwrap();
    let expected = Preprocess {
        resize: ResizeMode::CenterCrop { crop_fraction: 0.875 },
        resample: Resample::Bicubic,
        antialias: true,
        ..Preprocess::bit_default(224)
    }
    .with_source("timm pretrained_cfg");
    check(&weights, &dir.path().join("timm.onnx"), &ImportOptions::default(), &expected);

    // No config.json: timm's registered config for a 21k-style head (not 1000 classes).
    std::fs::remove_file(timm.join("config.json")).unwrap();
    let expected = Preprocess {
        resize: ResizeMode::CenterCrop { crop_fraction: 0.875 },
        antialias: true,
        ..Preprocess::bit_default(224)
    }
    .with_source("timm default for resnetv2_*_bit.goog_in21k (no pretrained_cfg in config.json)");
    check(&weights, &dir.path().join("timm-default.onnx"), &ImportOptions::default(), &expected);
}

#[test]
fn command_line_overrides_every_field() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("ckpt.npz");
    bit_tools::synth::write_synthetic(&ckpt, &arch(), 3, Layout::Npz, None).unwrap();
    let overrides = Overrides {
        input_size: Some(160),
        mean: Some([0.485, 0.456, 0.406]),
        std: Some([0.229, 0.224, 0.225]),
        resize: Some(ResizeKind::Crop),
        crop_fraction: Some(0.625),
        resample: Some(Resample::Bicubic),
        channel_order: Some(ChannelOrder::Bgr),
        antialias: Some(true),
    };
    let expected = Preprocess {
        input_size: 160,
        channel_order: ChannelOrder::Bgr,
        mean: [0.485, 0.456, 0.406],
        std: [0.229, 0.224, 0.225],
        resize: ResizeMode::CenterCrop { crop_fraction: 0.625 },
        resample: Resample::Bicubic,
        antialias: true,
        source: Some(
            "npz default + command line (--input-size, --mean, --std, --resize, --crop-fraction, --resample, --channel-order, --antialias)"
                .into(),
        ),
    };
    // 0.625 = 160 / 256: the same whole-number geometry as the other sources.
    let options = ImportOptions { overrides, ..Default::default() };
    check(&ckpt, &dir.path().join("cli.onnx"), &options, &expected);

    // --contract bit on a transformers-style source, and a squash with nearest.
    let overrides = Overrides { resample: Some(Resample::Nearest), ..Default::default() };
    let options = ImportOptions { contract: ContractChoice::BitDefault, overrides, ..Default::default() };
    let expected = Preprocess { resample: Resample::Nearest, ..Preprocess::bit_default(224) }
        .with_source("BiT default (--contract bit) + command line (--resample)");
    check(&ckpt, &dir.path().join("nearest.onnx"), &options, &expected);
}

#[test]
fn a_model_without_a_contract_gets_the_bit_default() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("ckpt.npz");
    let model = dir.path().join("model.onnx");
    bit_tools::synth::write_synthetic(&ckpt, &arch(), 3, Layout::Npz, None).unwrap();
    bit_tools::import_checkpoint(&ckpt, &model, &ImportOptions::default()).unwrap();
    let mut proto = bit_tools::probe::read_proto(&model).unwrap();
    proto.metadata_props.retain(|e| e.key != bit_runtime::contract::META_PREPROCESS);
    bit_tools::onnx::write_model(&proto, &model).unwrap();
    let info = ModelInfo::read(&model).unwrap();
    assert_eq!(
        (info.contract_source, info.preprocess),
        (ContractSource::Default, Preprocess::bit_default(224))
    );
    let m = Model::load(&model, &LoadOptions::default()).unwrap();
    let img = photo(333, 250);
    assert!(
        max_lsb(&m.tensor_for_image(&img), &reference(&img, &Preprocess::bit_default(224)), m.preprocess())
            <= 1.0
    );
}

/// `bit-tool quantize` calibrates on what the device will feed: the float model's own
/// contract (here bicubic, shortest edge + crop, CLIP normalization) through the runtime's
/// resizer, and the int8 model keeps that contract.
#[test]
fn quantize_calibrates_through_the_model_contract() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("ckpt.npz");
    let float = dir.path().join("float.onnx");
    bit_tools::synth::write_synthetic(&ckpt, &arch(), 3, Layout::Npz, None).unwrap();
    let overrides = Overrides {
        mean: Some(CLIP_MEAN),
        std: Some(CLIP_STD),
        crop_fraction: Some(0.875),
        resample: Some(Resample::Bicubic),
        ..Default::default()
    };
    bit_tools::import_checkpoint(&ckpt, &float, &ImportOptions { overrides, ..Default::default() }).unwrap();
    let calib = dir.path().join("calib");
    std::fs::create_dir(&calib).unwrap();
    let images = [photo(640, 480), photo(400, 600)];
    for (i, img) in images.iter().enumerate() {
        img.save(calib.join(format!("{i}.png"))).unwrap();
    }
    let options = bit_tools::quantize::QuantizeOptions { threads: 1, ..Default::default() };
    let set = bit_tools::quantize::calibration_inputs(&float, &calib, &options).unwrap();
    let model = Model::load(&float, &LoadOptions::default()).unwrap();
    assert_eq!(&set.preprocess, model.preprocess());
    assert_eq!(set.preprocess.resample, Resample::Bicubic);
    assert_eq!(set.size, 224);
    for (input, img) in set.inputs.iter().zip(&images) {
        assert_eq!(input, &model.tensor_for_image(img), "calibration input differs from the runtime's");
        let d = max_lsb(input, &reference(img, &set.preprocess), &set.preprocess);
        assert!(d <= 1.0, "calibration input {d} steps from the plain reference");
    }
    let int8 = dir.path().join("int8.onnx");
    bit_tools::quantize::quantize_model(&float, &calib, &int8, &options).unwrap();
    assert_eq!(
        ModelInfo::read(&int8).unwrap().preprocess,
        set.preprocess,
        "the int8 model keeps the contract"
    );
}
