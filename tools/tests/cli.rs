//! The `bit-tool` command line as a user runs it.

use std::path::Path;
use std::process::{Command, Output};

fn bit_tool(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bit-tool")).args(args).output().expect("bit-tool runs")
}

fn samples() -> Vec<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../samples/images");
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "png" || e == "jpg"))
        .map(|p| p.display().to_string())
        .collect();
    v.sort();
    v
}

#[test]
fn synth_import_classify_info() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("ckpt.npz");
    let model = dir.path().join("model.onnx");
    let out = bit_tool(&["synth", "--out", ckpt.to_str().unwrap(), "--depths", "1,1,1,1", "--seed", "5"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = bit_tool(&["import", ckpt.to_str().unwrap(), "--out", model.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("1000 classes") && stdout.contains("built-in ILSVRC-2012 names"), "{stdout}");

    let images = samples();
    let mut args = vec!["classify", "--model", model.to_str().unwrap(), "--json", "-k", "3"];
    args.extend(images.iter().map(String::as_str));
    let out = bit_tool(&args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let labels = bit_tools::imagenet1k_labels();
    let lines: Vec<serde_json::Value> =
        String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), images.len());
    for line in &lines {
        let top = line["top"].as_array().unwrap();
        assert_eq!(top.len(), 3);
        let scores: Vec<f64> = top.iter().map(|t| t["score"].as_f64().unwrap()).collect();
        assert!(scores.windows(2).all(|w| w[0] >= w[1]), "best first: {scores:?}");
        assert!(scores.iter().sum::<f64>() <= 1.0 + 1e-6);
        for t in top {
            let class = t["class"].as_u64().unwrap() as usize;
            assert_eq!(t["label"].as_str().unwrap(), labels[class]);
        }
    }

    let out = bit_tool(&["info", model.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(stdout.contains("from the model metadata") && stdout.contains("\"input_size\": 224"), "{stdout}");
    assert!(stdout.contains("labels: 1000 (tench, goldfish"), "{stdout}");
}

#[test]
fn errors_exit_non_zero_and_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let bogus = dir.path().join("bogus.npz");
    std::fs::write(&bogus, b"PK\x03\x04 definitely not a zip").unwrap();
    let model = dir.path().join("out.onnx");
    let out = bit_tool(&["import", bogus.to_str().unwrap(), "--out", model.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("bit-tool: error: importing") && stderr.contains("bogus.npz"), "{stderr}");
    assert!(!model.exists(), "no output on failure");

    let out = bit_tool(&["synth", "--out", "x.npz", "--depths", "1,1,1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--depths needs four"));
}

#[test]
fn one_bad_image_does_not_stop_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("ckpt.npz");
    let model = dir.path().join("model.onnx");
    let s = |p: &Path| p.to_str().unwrap().to_owned();
    assert!(
        bit_tool(&["synth", "--out", &s(&ckpt), "--depths", "1,1,1,1", "--classes", "10"]).status.success()
    );
    assert!(bit_tool(&["import", &s(&ckpt), "--out", &s(&model)]).status.success());
    let broken = dir.path().join("broken.jpg");
    std::fs::write(&broken, b"\xff\xd8\xff\xe0 not really").unwrap();
    let good = samples()[0].clone();
    let out = bit_tool(&["classify", "--model", &s(&model), &s(&broken), &good]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("broken.jpg") && stderr.contains("1 of 2 images"), "{stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("class_"), "the good image was classified");
}

#[test]
fn contract_flags_are_recorded_and_info_names_the_source() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("ckpt.npz");
    let model = dir.path().join("model.onnx");
    let (ckpt_s, model_s) = (ckpt.to_str().unwrap(), model.to_str().unwrap());
    let out = bit_tool(&["synth", "--out", ckpt_s, "--depths", "1,1,1,1", "--classes", "10"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let out = bit_tool(&["import", ckpt_s, "--out", model_s]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("preprocessing contract (npz default)"));
    let out = bit_tool(&["info", model_s]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("source: npz default") && stdout.contains("\"resample\": \"bilinear\""),
        "{stdout}"
    );

    let flags = [
        "--input-size",
        "160",
        "--mean",
        "0.485,0.456,0.406",
        "--std",
        "0.229,0.224,0.225",
        "--resize",
        "crop",
        "--crop-fraction",
        "0.875",
        "--resample",
        "bicubic",
        "--channel-order",
        "bgr",
    ];
    let mut args = vec!["import", ckpt_s, "--out", model_s];
    args.extend(flags);
    let out = bit_tool(&args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let info = bit_runtime::ModelInfo::read(&model).unwrap();
    let pre = &info.preprocess;
    assert_eq!((pre.input_size, pre.mean, pre.std), (160, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]));
    assert_eq!(pre.resize, bit_runtime::contract::ResizeMode::CenterCrop { crop_fraction: 0.875 });
    assert_eq!(
        (pre.resample, pre.channel_order),
        (bit_runtime::contract::Resample::Bicubic, bit_runtime::contract::ChannelOrder::Bgr)
    );
    let out = bit_tool(&["info", model_s]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("source: npz default + command line (--input-size, --mean"), "{stdout}");

    // Bad values name the flag; nothing is written.
    let bad = dir.path().join("bad.onnx");
    for (flag, value) in [
        ("--mean", "0.5,0.5"),
        ("--std", "0.5,0,0.5"),
        ("--crop-fraction", "1.5"),
        ("--resample", "lanczos"),
        ("--resize", "stretch"),
        ("--channel-order", "rbg"),
        ("--input-size", "0"),
    ] {
        let out = bit_tool(&["import", ckpt_s, "--out", bad.to_str().unwrap(), flag, value]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.contains(flag), "{flag} {value}: {stderr}");
        assert!(!bad.exists());
    }
    let out = bit_tool(&["import", ckpt_s, "--out", bad.to_str().unwrap(), "--resize", "crop"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--resize crop needs --crop-fraction"));
    let json = dir.path().join("contract.json");
    std::fs::write(&json, r#"{"pretrained_cfg": {"interpolation": "area"}}"#).unwrap();
    let out =
        bit_tool(&["import", ckpt_s, "--out", bad.to_str().unwrap(), "--contract", json.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("contract.json") && stderr.contains("'pretrained_cfg.interpolation'"),
        "{stderr}"
    );

    // A model without a contract: info says BiT's default is assumed.
    let mut proto = bit_tools::probe::read_proto(&model).unwrap();
    proto.metadata_props.retain(|e| e.key != bit_runtime::contract::META_PREPROCESS);
    bit_tools::onnx::write_model(&proto, &model).unwrap();
    let out = bit_tool(&["info", model_s]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && stdout.contains("NONE in the model: BiT default assumed"), "{stdout}");
}

#[test]
fn an_output_that_is_one_of_the_inputs_is_refused_and_the_input_kept() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("ckpt.npz");
    let model = dir.path().join("model.onnx");
    let out = bit_tool(&["synth", "--out", ckpt.to_str().unwrap(), "--depths", "1,1,1,1", "--classes", "4"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let ckpt_bytes = std::fs::read(&ckpt).unwrap();
    // The same file, and the same file through a symlink.
    let link = dir.path().join("link.npz");
    std::os::unix::fs::symlink(&ckpt, &link).unwrap();
    for target in [&ckpt, &link] {
        let out = bit_tool(&["import", ckpt.to_str().unwrap(), "--out", target.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.contains("is the input"), "{stderr}");
    }
    assert_eq!(std::fs::read(&ckpt).unwrap(), ckpt_bytes, "the checkpoint is intact");

    let out = bit_tool(&["import", ckpt.to_str().unwrap(), "--out", model.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let model_bytes = std::fs::read(&model).unwrap();
    // A calibration set quantize could run on: without the check it would replace the model.
    let calib = dir.path().join("calib");
    std::fs::create_dir(&calib).unwrap();
    let photo = std::path::PathBuf::from(&samples()[0]);
    std::fs::copy(&photo, calib.join(photo.file_name().unwrap())).unwrap();
    let relative = dir.path().join(".").join("model.onnx");
    let out = bit_tool(&[
        "quantize",
        model.to_str().unwrap(),
        "--calib",
        calib.to_str().unwrap(),
        "--out",
        relative.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("is the input"), "{stderr}");
    assert_eq!(std::fs::read(&model).unwrap(), model_bytes, "the float model is intact");
}
