//! Cross-architecture parity: the same float and int8 models classify the ten sample photos
//! the same way on every target and CPU (x86_64; aarch64 as a Cortex-A72 with tract's SMLAL
//! int8 kernels and as a Cortex-A76 with its SDOT kernels; armv7 with NEON).
//!
//! The x86_64 run (CI: the README's test command) builds the models (a reduced-depth BiT,
//! 1000 classes, 224 px, random weights in the official layout; int8 calibrated on the
//! photos) and writes them and its results into `BIT_PARITY_DIR` as `<label>.json`
//! (`BIT_PARITY_LABEL`, default the architecture). A run with `BIT_PARITY_REFERENCE` naming
//! that file loads the very same model files (an int8 model calibrated under emulation could
//! differ) and must give the same top-5 for every photo, with logits within [`FLOAT_TOL`]
//! (float) and [`INT8_TOL`] (int8). `scripts/parity-table.py` prints the table from the
//! files.
//!
//! Integer convolutions are exact on every kernel family; what may differ is float
//! arithmetic (GroupNorm, requantization scales, softmax) in the order each SIMD width sums.

use std::path::{Path, PathBuf};

use bit_e2e::{max_abs_diff, model_fixture, sample_images};
use bit_runtime::{LoadOptions, Model, load_image};
use bit_tools::Arch;
use bit_tools::quantize::{QuantizeOptions, quantize_model};

/// Float models: logits within this of the reference machine's.
const FLOAT_TOL: f32 = 1e-4;
/// int8 models: within this (a GroupNorm output rounding to the other side of a quantization
/// step moves a logit by about one activation step times a weight).
const INT8_TOL: f32 = 1e-2;

/// The matrix-multiplication kernels tract chose for `m` (their names say the ISA and tile).
fn kernels(m: &Model) -> Vec<String> {
    m.kernels()
}

/// Classifications of the sample photos (`top5`, `logits` per file name) and the kernels.
fn classify(model: &Path) -> serde_json::Value {
    let mut m = Model::load(model, &LoadOptions::default()).unwrap();
    let kernels = kernels(&m);
    println!("{}: kernels {kernels:?}", model.display());
    let mut results = serde_json::Map::new();
    for path in sample_images() {
        let (top, logits) = m.classify_image(&load_image(&path).unwrap(), 5).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        results.insert(
            name,
            serde_json::json!({"top5": top.iter().map(|p| p.class).collect::<Vec<_>>(), "logits": logits}),
        );
    }
    assert_eq!(results.len(), 10, "all ten sample images classified");
    serde_json::json!({"kernels": kernels, "photos": results})
}

/// Same top-5 everywhere and the largest logit difference.
fn compare(kind: &str, ours: &serde_json::Value, theirs: &serde_json::Value, tol: f32) -> f32 {
    let floats = |v: &serde_json::Value| -> Vec<f32> {
        v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
    };
    let mut worst = 0f32;
    for (name, o) in ours["photos"].as_object().unwrap() {
        let t = &theirs["photos"][name];
        assert_eq!(o["top5"], t["top5"], "{kind} {name}: top-5 differs from the reference machine");
        let diff = max_abs_diff(&floats(&o["logits"]), &floats(&t["logits"]));
        assert!(diff <= tol, "{kind} {name}: logits differ by {diff} (tolerance {tol})");
        worst = worst.max(diff);
    }
    worst
}

#[test]
fn float_and_int8_classify_the_sample_photos_as_on_the_reference_machine() {
    let dir = std::env::var_os("BIT_PARITY_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("parity"), PathBuf::from);
    std::fs::create_dir_all(&dir).unwrap();
    let (float, int8) = (dir.join("parity-float.onnx"), dir.join("parity-int8.onnx"));
    let reference = std::env::var_os("BIT_PARITY_REFERENCE").map(PathBuf::from);
    if reference.is_none() {
        let arch = Arch { depths: vec![1, 1, 1, 1], width: 1, num_classes: 1000 };
        let f = model_fixture(Path::new(env!("CARGO_TARGET_TMPDIR")), "parity-d1111", &arch, 1);
        std::fs::copy(&f.model, &float).unwrap();
        let calib = bit_e2e::repo_root().join("samples/images");
        quantize_model(&float, &calib, &int8, &QuantizeOptions::default()).unwrap();
    } else {
        assert!(
            float.is_file() && int8.is_file(),
            "{}: the reference run's models are missing",
            dir.display()
        );
    }
    let ours = serde_json::json!({"float": classify(&float), "int8": classify(&int8)});
    let label = std::env::var("BIT_PARITY_LABEL").unwrap_or_else(|_| std::env::consts::ARCH.to_string());
    let out = dir.join(format!("{label}.json"));
    std::fs::write(&out, serde_json::to_vec(&ours).unwrap()).unwrap();
    println!("wrote {}", out.display());

    let Some(reference) = reference else {
        println!("no BIT_PARITY_REFERENCE: this run is the reference (CI compares the ARM runs with it)");
        return;
    };
    let theirs: serde_json::Value = serde_json::from_slice(&std::fs::read(&reference).unwrap()).unwrap();
    let f = compare("float", &ours["float"], &theirs["float"], FLOAT_TOL);
    let q = compare("int8", &ours["int8"], &theirs["int8"], INT8_TOL);
    println!(
        "parity {label} vs {}: same top-5 on all 10 photos; max logit difference float {f:.3e}, int8 {q:.3e}",
        reference.display()
    );
}
