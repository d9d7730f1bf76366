//! `bit-tool finetune` end to end: a new head for synthetic classes (shapes of distinct
//! colours, generated here) on the project's random-weight backbone, the written model's
//! labels and metadata, its accuracy through the runtime on fresh images, int8 on top, and
//! bad data sets.

use std::path::{Path, PathBuf};

use bit_e2e::{model_fixture, quick};
use bit_runtime::{LoadOptions, Model, ModelInfo};
use bit_tools::Arch;
use bit_tools::finetune::{FinetuneOptions, finetune, read_dataset};
use rand::{RngExt, SeedableRng};

const CLASSES: [&str; 3] = ["blue_triangle", "green_square", "red_disc"];

/// One picture of `class`: the shape in its colour (with jitter), random size and place, on
/// a random grey background, with pixel noise.
fn picture(class: usize, rng: &mut rand_chacha::ChaCha8Rng) -> image::RgbImage {
    let (w, h) = (rng.random_range(160..320u32), rng.random_range(160..320u32));
    let bg = rng.random_range(60..200u8);
    let colour: [f32; 3] = match class {
        0 => [30.0, 60.0, 220.0],
        1 => [40.0, 200.0, 60.0],
        _ => [220.0, 40.0, 40.0],
    };
    let jitter: [f32; 3] = std::array::from_fn(|_| rng.random_range(-25.0..25.0));
    let r = rng.random_range(0.2..0.4) * w.min(h) as f32;
    let (cx, cy) = (rng.random_range(r..w as f32 - r), rng.random_range(r..h as f32 - r));
    let mut img = image::RgbImage::new(w, h);
    for (x, y, p) in img.enumerate_pixels_mut() {
        let (dx, dy) = (x as f32 - cx, y as f32 - cy);
        let inside = match class {
            0 => dy <= r && dy >= -r && dx.abs() <= (r - dy) / 2.0, // apex up
            1 => dx.abs() <= r && dy.abs() <= r,
            _ => dx * dx + dy * dy <= r * r,
        };
        for c in 0..3 {
            let base = if inside { colour[c] + jitter[c] } else { bg as f32 };
            p[c] = (base + rng.random_range(-12.0..12.0)).clamp(0.0, 255.0) as u8;
        }
    }
    img
}

/// `per_class` pictures of each class in `dir/<class>/`.
fn dataset(dir: &Path, per_class: usize, seed: u64) -> PathBuf {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    for (c, name) in CLASSES.iter().enumerate() {
        let d = dir.join(name);
        std::fs::create_dir_all(&d).unwrap();
        for i in 0..per_class {
            picture(c, &mut rng).save(d.join(format!("{i:02}.png"))).unwrap();
        }
    }
    dir.to_owned()
}

fn backbone(base: &Path) -> PathBuf {
    // The full BiT-S-R50x1 natively; one unit per stage under emulation (BIT_E2E_QUICK).
    let (name, arch) = if quick() {
        ("finetune-d1111", Arch { depths: vec![1, 1, 1, 1], width: 1, num_classes: 1000 })
    } else {
        ("finetune-r50x1", Arch { depths: vec![3, 4, 6, 3], width: 1, num_classes: 1000 })
    };
    model_fixture(base, name, &arch, 11).model.clone()
}

#[test]
fn three_classes_from_ten_images_each() {
    let tmp = tempfile::tempdir().unwrap();
    let model = backbone(tmp.path());
    let data = dataset(&tmp.path().join("data"), 10, 1);
    let out = tmp.path().join("mine.onnx");
    let options = FinetuneOptions { input_size: quick().then_some(128), ..Default::default() };
    let report = finetune(&model, &data, &out, &options).unwrap();
    println!("{}", report.table());
    assert_eq!(report.classes, CLASSES);
    assert_eq!(report.train_images, [7, 7, 7]);
    assert_eq!(report.heldout.len(), 9);
    assert_eq!(report.train_samples, 21 * 5, "each image and 4 augmented copies");
    assert_eq!(report.features, 2048);
    assert!(report.train_accuracy >= 0.95, "{}", report.train_accuracy);
    assert!(report.heldout_accuracy.unwrap() >= 0.9, "{}", report.table());

    // The model carries the new labels and head, and the rest of the contract unchanged.
    let before = ModelInfo::read(&model).unwrap();
    let after = ModelInfo::read(&out).unwrap();
    assert_eq!(after.labels.as_deref(), Some(&CLASSES.map(String::from)[..]));
    assert_eq!(after.preprocess, before.preprocess);
    let arch = after.architecture.unwrap();
    assert_eq!(arch["num_classes"], 3);
    assert_eq!(arch["head"]["finetuned"], true);
    assert!(report.bytes < std::fs::metadata(&model).unwrap().len(), "a 3-class head is smaller than 1000");
    // Readable by the daemon's dynamic user.
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&out).unwrap().permissions().mode() & 0o777, 0o644);

    // Through the runtime, on 20 fresh pictures per class (never seen in training).
    let fresh = dataset(&tmp.path().join("fresh"), 20, 99);
    let load = LoadOptions { input_size: options.input_size, threads: 2, labels: None };
    let mut runtime = Model::load(&out, &load).unwrap();
    assert_eq!(runtime.labels(), CLASSES);
    let fresh_set = read_dataset(&fresh).unwrap();
    let mut correct = 0;
    for (path, class) in &fresh_set.images {
        let img = bit_runtime::load_image(path).unwrap();
        let (top, _) = runtime.classify_image(&img, 1).unwrap();
        correct += usize::from(top[0].class == *class);
    }
    let accuracy = correct as f64 / fresh_set.images.len() as f64;
    println!(
        "fresh pictures through the runtime: {correct}/{} = {:.1}%",
        fresh_set.images.len(),
        100.0 * accuracy
    );
    assert!(accuracy >= 0.9, "{accuracy}");

    // The report's held-out accuracy is what the runtime gives on those files.
    let mut held_correct = 0;
    for path in &report.heldout {
        let class = CLASSES.iter().position(|c| path.parent().unwrap().ends_with(c)).unwrap();
        let (top, _) = runtime.classify_image(&bit_runtime::load_image(path).unwrap(), 1).unwrap();
        held_correct += usize::from(top[0].class == class);
    }
    assert_eq!(held_correct as f64 / report.heldout.len() as f64, report.heldout_accuracy.unwrap());

    // int8 on top, calibrated on the training images: same labels, mostly the same answers.
    if !quick() {
        let int8 = tmp.path().join("mine-int8.onnx");
        let q = bit_tools::quantize::QuantizeOptions::default();
        bit_tools::quantize::quantize_model_files(&out, &data, report.train_files.clone(), &int8, &q)
            .unwrap();
        let mut q_runtime = Model::load(&int8, &load).unwrap();
        assert_eq!(q_runtime.labels(), CLASSES);
        let mut agree = 0;
        for (path, _) in &fresh_set.images {
            let img = bit_runtime::load_image(path).unwrap();
            let (a, _) = runtime.classify_image(&img, 1).unwrap();
            let (b, _) = q_runtime.classify_image(&img, 1).unwrap();
            agree += usize::from(a[0].class == b[0].class);
        }
        println!("int8 vs float on fresh pictures: {agree}/{} agree", fresh_set.images.len());
        assert!(agree * 10 >= fresh_set.images.len() * 9, "{agree}");
    }
}

#[test]
fn bad_data_sets_are_refused_with_the_folder_or_file_named_and_nothing_written() {
    let tmp = tempfile::tempdir().unwrap();
    let arch = Arch { depths: vec![1, 1, 1, 1], width: 1, num_classes: 4 };
    let model = model_fixture(tmp.path(), "finetune-bad", &arch, 3).model.clone();
    let out = tmp.path().join("never.onnx");
    let options = FinetuneOptions { input_size: Some(64), ..Default::default() };
    let err = |data: &Path| finetune(&model, data, &out, &options).unwrap_err().to_string();

    let one = dataset(&tmp.path().join("one"), 3, 1);
    std::fs::remove_dir_all(one.join("green_square")).unwrap();
    std::fs::remove_dir_all(one.join("red_disc")).unwrap();
    let e = err(&one);
    assert!(e.contains("at least two") && e.contains("one"), "{e}");

    let empty = dataset(&tmp.path().join("empty"), 3, 1);
    for f in std::fs::read_dir(empty.join("red_disc")).unwrap() {
        std::fs::remove_file(f.unwrap().path()).unwrap();
    }
    let e = err(&empty);
    assert!(e.contains("red_disc") && e.contains("without images"), "{e}");

    let broken = dataset(&tmp.path().join("broken"), 3, 1);
    std::fs::write(broken.join("green_square/99.png"), b"not a png").unwrap();
    let e = err(&broken);
    assert!(e.contains("99.png"), "{e}");

    let e = err(&tmp.path().join("absent"));
    assert!(e.contains("absent"), "{e}");
    assert!(!out.exists(), "no model is written after an error");
}
