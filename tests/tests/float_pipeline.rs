//! The float pipeline end to end: synthetic official checkpoint -> import (WS folded) ->
//! tract, checked against the plain reference forward pass and across checkpoint layouts.

use std::path::{Path, PathBuf};

use bit_e2e::reference::Reference;
use bit_e2e::{max_abs_diff, model_fixture, sample_images};
use bit_runtime::{LoadOptions, Model, load_image};
use bit_tools::{Arch, Checkpoint, ImportOptions, Layout};

/// Max absolute logit difference allowed between tract and the reference.
const LOGIT_TOL: f32 = 1e-4;

fn base() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
}

fn reduced() -> Arch {
    Arch { depths: vec![1, 1, 1, 1], width: 1, num_classes: 1000 }
}

fn image(name: &str) -> image::RgbImage {
    let path = sample_images().into_iter().find(|p| p.file_name().unwrap() == name).expect("sample image");
    load_image(&path).expect("decodes")
}

fn compare_with_reference(checkpoint: &Path, model: &Path, size: u32, images: &[&str]) -> f32 {
    let ckpt = Checkpoint::open(checkpoint).expect("checkpoint");
    let reference = Reference::new(&ckpt.arrays, 1e-10);
    let mut m =
        Model::load(model, &LoadOptions { input_size: Some(size), ..Default::default() }).expect("load");
    let mut worst = 0f32;
    for name in images {
        let input = m.tensor_for_image(&image(name));
        let got = m.logits(&input).expect("run");
        let want = reference.logits(&input, size as usize);
        let diff = max_abs_diff(&got, &want);
        let spread = want.iter().fold(0f32, |a, v| a.max(v.abs()));
        println!("{name} at {size}: max |tract - reference| = {diff:.3e} (max |logit| {spread:.2})");
        assert!(diff <= LOGIT_TOL, "{name} at {size}: logits differ by {diff}");
        let top = |l: &[f32]| bit_runtime::top_k(l, 5).iter().map(|p| p.class).collect::<Vec<_>>();
        assert_eq!(top(&got), top(&want), "{name}: top-5 differs");
        worst = worst.max(diff);
    }
    worst
}

#[test]
fn reduced_depth_model_matches_reference_at_128_and_224() {
    let f = model_fixture(&base(), "reduced-d1111", &reduced(), 1);
    if bit_e2e::quick() {
        println!("BIT_E2E_QUICK: 128 px only, two images");
        compare_with_reference(&f.checkpoint, &f.model, 128, &["chelsea.png", "coffee.png"]);
        return;
    }
    for size in [128, 224] {
        compare_with_reference(&f.checkpoint, &f.model, size, &["chelsea.png", "coffee.png", "camera.png"]);
    }
}

#[test]
fn full_r50x1_matches_reference_at_224() {
    if bit_e2e::quick() {
        println!("SKIPPED: BIT_E2E_QUICK is set (full R50x1 reference pass is slow under emulation)");
        return;
    }
    let arch = Arch { depths: vec![3, 4, 6, 3], width: 1, num_classes: 1000 };
    let f = model_fixture(&base(), "full-r50x1", &arch, 0);
    let mut weights =
        bit_tools::BitWeights::from_checkpoint(&Checkpoint::open(&f.checkpoint).unwrap()).unwrap();
    assert_eq!(weights.parameter_count(), 25_549_352, "BiT-S-R50x1 has 25,549,352 parameters");
    compare_with_reference(&f.checkpoint, &f.model, 224, &["chelsea.png"]);
}

/// Logits of `model` for chelsea.png at 128, preprocessed with BiT's contract whatever the
/// model's own (timm's default contract crops; `tests/tests/contract.rs` checks contracts).
fn logits_of(model: &Path) -> (Vec<f32>, Vec<String>) {
    let mut m = Model::load(model, &LoadOptions { input_size: Some(128), ..Default::default() }).unwrap();
    let input =
        bit_tools::probe::image_tensor(&image("chelsea.png"), &bit_tools::Preprocess::bit_default(128), 128);
    (m.logits(&input).unwrap(), m.labels().to_vec())
}

#[test]
fn every_checkpoint_layout_imports_to_the_same_model() {
    let dir = tempfile::tempdir().unwrap();
    let arch = Arch { depths: vec![1, 1, 1, 1], width: 1, num_classes: 10 };
    let labels: Vec<String> = (0..10).map(|i| format!("thing {i}")).collect();
    let mut logits = Vec::new();
    for layout in Layout::ALL {
        let ckpt = match layout {
            Layout::Npz => dir.path().join("ckpt.npz"),
            Layout::Transformers => {
                std::fs::create_dir(dir.path().join("hf")).unwrap();
                dir.path().join("hf/model.safetensors")
            }
            _ => dir.path().join(format!("{}.safetensors", layout.name())),
        };
        bit_tools::synth::write_synthetic(&ckpt, &arch, 7, layout, Some(&labels)).unwrap();
        // Transformers checkpoints are imported by directory, as users have them.
        let source = if layout == Layout::Transformers { dir.path().join("hf") } else { ckpt };
        let model = dir.path().join(format!("{}.onnx", layout.name()));
        let report = bit_tools::import_checkpoint(&source, &model, &ImportOptions::default()).unwrap();
        assert_eq!(report.layout, layout);
        assert_eq!(report.arch, arch);
        logits.push((layout, logits_of(&model)));
    }
    let get = |l: Layout| &logits.iter().find(|(x, _)| *x == l).unwrap().1;
    // Same eps, same values: identical folded kernels, identical logits.
    assert_eq!(get(Layout::Npz).0, get(Layout::BitPytorch).0, "npz vs bit_pytorch");
    assert_eq!(get(Layout::Timm).0, get(Layout::Transformers).0, "timm vs transformers");
    // WS eps 1e-10 (official) vs 1e-8 (timm/transformers): a small, bounded difference.
    let eps_diff = max_abs_diff(&get(Layout::Npz).0, &get(Layout::Timm).0);
    println!("npz (eps 1e-10) vs timm (eps 1e-8): max logit difference {eps_diff:.3e}");
    assert!(eps_diff <= 1e-4, "eps difference moved logits by {eps_diff}");
    assert!(eps_diff > 0.0, "different eps must give different kernels");
    assert_eq!(get(Layout::Transformers).1, labels, "id2label from config.json");
    assert_eq!(get(Layout::Npz).1[0], "class_0", "npz carries no labels");
}

/// The trained BiT-architecture checkpoint in ../shared/models (depths 1,1,1,1, 8 classes,
/// 128 px), when present: its float accuracy on the held-out shapes is 92.5% (222/240) as
/// published beside it, so the import and preprocessing reproduce a trained network exactly.
#[test]
fn trained_shapes_checkpoint_reproduces_its_published_accuracy() {
    let shared = bit_e2e::repo_root().join("../shared/models");
    let ckpt = shared.join("bit_shapes_d1111.npz");
    if !ckpt.is_file() {
        println!("SKIPPED: {} not present", ckpt.display());
        return;
    }
    if bit_e2e::quick() {
        println!("SKIPPED: BIT_E2E_QUICK is set (240 images; parity with x86_64 is checked separately)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("shapes.onnx");
    let labels = bit_runtime::read_labels(&shared.join("shapes/labels.txt")).unwrap();
    let options = ImportOptions {
        labels: Some(labels.clone()),
        overrides: bit_tools::contract::Overrides { input_size: Some(128), ..Default::default() },
        ..Default::default()
    };
    bit_tools::import_checkpoint(&ckpt, &model, &options).unwrap();
    let mut m = Model::load(&model, &LoadOptions::default()).unwrap();
    assert_eq!(m.input_size(), 128, "the contract's input size is the default");
    let (mut correct, mut total) = (0, 0);
    for entry in std::fs::read_dir(shared.join("shapes/test")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let (top, _) = m.classify_image(&load_image(&path).unwrap(), 1).unwrap();
        let truth = labels.iter().find(|l| name.starts_with(&format!("{l}_"))).expect("class in file name");
        correct += usize::from(&labels[top[0].class] == truth);
        total += 1;
    }
    println!("trained shapes model: {correct}/{total} correct");
    assert_eq!(total, 240);
    assert_eq!(correct, 222, "published float accuracy is 92.5% (222/240)");
}

/// Opt-in: `BIT_REAL_CHECKPOINT=/path/BiT-S-R50x1.npz` imports the real weights and checks
/// the classes the sample photos are known to get.
#[test]
fn real_checkpoint() {
    let Some(path) = std::env::var_os("BIT_REAL_CHECKPOINT") else {
        println!("SKIPPED: set BIT_REAL_CHECKPOINT to a real BiT-S-R50x1.npz to run this test");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("real.onnx");
    bit_tools::import_checkpoint(Path::new(&path), &model, &ImportOptions::default()).unwrap();
    let mut m = Model::load(&model, &LoadOptions::default()).unwrap();
    for (name, expected) in [("chelsea.png", &[281, 282, 285][..]), ("coffee.png", &[967, 968][..])] {
        let (top, _) = m.classify_image(&image(name), 5).unwrap();
        let classes: Vec<usize> = top.iter().map(|p| p.class).collect();
        println!("{name}: top-5 {classes:?}");
        assert!(classes.iter().any(|c| expected.contains(c)), "{name}: none of {expected:?} in {classes:?}");
    }
}

/// Some official files number their kernels (`standardized_conv2d_3/kernel`): they import to
/// the same model as the plain names.
#[test]
fn numbered_standardized_conv2d_names_are_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let arch = Arch { depths: vec![1, 1, 1, 1], width: 1, num_classes: 10 };
    let arrays = bit_tools::synth::synth_arrays(&arch, 11, Layout::Npz);
    let numbered: Vec<_> = arrays
        .iter()
        .enumerate()
        .map(|(i, (k, a))| {
            (k.replace("standardized_conv2d/", &format!("standardized_conv2d_{i}/")), a.clone())
        })
        .collect();
    assert!(numbered.iter().any(|(k, _)| k.contains("/a/proj/standardized_conv2d_")));
    let (plain, renamed) = (dir.path().join("plain.npz"), dir.path().join("numbered.npz"));
    bit_tools::synth::write_npz(&plain, &arrays).unwrap();
    bit_tools::synth::write_npz(&renamed, &numbered).unwrap();
    let mut logits = Vec::new();
    for ckpt in [&plain, &renamed] {
        let model = ckpt.with_extension("onnx");
        bit_tools::import_checkpoint(ckpt, &model, &ImportOptions::default()).unwrap();
        logits.push(logits_of(&model).0);
    }
    assert_eq!(logits[0], logits[1]);
}
