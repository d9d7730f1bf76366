//! int8 quantization: integer execution in tract, exact QLinearConv semantics, fidelity, and
//! bad input.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use bit_e2e::{model_fixture, repo_root};
use bit_tools::Arch;
use bit_tools::onnx::{Attr, GraphBuilder};
use bit_tools::quantize::{
    ActivationType, Calibration, QuantizeOptions, WeightScales, quantize_model, quantize_weights,
};
use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::prelude::*;

fn base() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
}

/// Calibration and held-out frames augmented from the sample photos with different seeds.
fn frames() -> &'static (PathBuf, PathBuf) {
    static FRAMES: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    FRAMES.get_or_init(|| {
        let samples = repo_root().join("samples/images");
        let calib = base().join("int8-frames/calib");
        let held_out = base().join("int8-frames/held-out");
        bit_tools::augment::augment(&samples, &calib, 12, 1, 160, 120).unwrap();
        bit_tools::augment::augment(&samples, &held_out, 12, 2, 160, 120).unwrap();
        (calib, held_out)
    })
}

/// The reduced-depth float model quantized once per test process (per-tensor, u8, at 128).
fn int8_fixture() -> &'static (PathBuf, PathBuf) {
    static FIXTURE: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let arch = Arch { depths: vec![1, 1, 1, 1], width: 1, num_classes: 1000 };
        let f = model_fixture(&base(), "reduced-d1111", &arch, 1);
        let out = base().join("reduced-d1111/model-int8.onnx");
        let options = QuantizeOptions { input_size: Some(128), ..Default::default() };
        quantize_model(&f.model, &frames().0, &out, &options).unwrap();
        (f.model.clone(), out)
    })
}

#[test]
fn every_convolution_runs_on_integer_kernels() {
    let (_, int8) = int8_fixture();
    let model = onnx()
        .model_for_path(int8)
        .unwrap()
        .with_input_fact(0, f32::fact([1, 3, 128, 128]).into())
        .unwrap()
        .into_optimized()
        .unwrap();
    let mut integer = 0;
    let mut float = Vec::new();
    for node in model.nodes() {
        let op = node.op().name();
        assert!(op != "Conv" && !op.contains("Dequantize") || op.starts_with("DequantizeLinear"), "{op}");
        if op != "OptMatMul" {
            continue;
        }
        let types: Vec<DatumType> =
            node.inputs.iter().map(|o| model.outlet_fact(*o).unwrap().datum_type).collect();
        println!("{:45} {types:?} -> {:?}", node.name, node.outputs[0].fact.datum_type);
        if types.iter().any(|t| t.is_float()) {
            float.push(node.name.clone());
        } else {
            assert_eq!(types[0], i8::datum_type(), "{}: packed activations are i8", node.name);
            integer += 1;
        }
    }
    // R14 (depths 1,1,1,1): root + 4 x (3 convs + projection) = 17 integer convolutions;
    // only the 2048 -> K head runs in float (its int8 weights are dequantized at load, in
    // chunks of classes), by design.
    assert_eq!(integer, 17, "integer matmuls");
    assert!(!float.is_empty() && float.iter().all(|n| n.starts_with("head/")), "float matmuls: {float:?}");
}

/// Loaded by the runtime, every integer matmul covers its convolution's whole output in one
/// call: a 1x1 convolution over NCHW is one matmul over H*W, not one per image row. (tract
/// 0.23.9 merged H and W only for float matmuls; `third_party/tract-core` extends that to
/// quantized ones, which took the int8 BiT-S-R50x1 from 29 to 23 ms on one x86 thread.)
#[test]
fn integer_matmuls_cover_whole_convolutions() {
    let (_, int8) = int8_fixture();
    // Built as the runtime builds it (the one builder), with the plan in reach.
    let proto = bit_engine::proto::read(int8).unwrap();
    let session = bit_engine::Session::build(
        proto,
        &bit_engine::Options { threads: 1, ..bit_engine::Options::new(128) },
    )
    .unwrap();
    let typed = session.plan().model();
    let mut checked = 0;
    for node in typed.nodes().iter().filter(|n| n.op().name() == "OptMatMul") {
        if node.name.starts_with("head/") {
            continue;
        }
        // e.g. "c_shape:1,128,784,U8, c_m_axis:Some(1) c_n_axis:Some(2) m:128 n:784"
        let info = node.op().info().unwrap().join(" ");
        let field = |key: &str| -> usize {
            let rest =
                info.split(key).nth(1).unwrap_or_else(|| panic!("{}: no `{key}` in {info}", node.name));
            rest.split(|c: char| !c.is_ascii_digit()).next().unwrap().parse().unwrap()
        };
        let volume: usize = node.outputs[0].fact.shape.as_concrete().unwrap().iter().product();
        assert_eq!(field(" m:") * field(" n:"), volume, "{}: {info}", node.name);
        checked += 1;
    }
    assert_eq!(checked, 17, "integer matmuls");
}

/// The int8 model gives the same logits, to the bit, on one thread and on three: tract's
/// threaded matmuls split tiles, not sums, and the runtime's own ops split independent
/// groups and blocks over the same pool.
#[test]
fn int8_logits_do_not_depend_on_the_thread_count() {
    let (_, int8) = int8_fixture();
    let logits = |threads: usize| {
        let options = bit_runtime::LoadOptions { input_size: Some(128), threads, labels: None };
        let mut model = bit_runtime::Model::load(int8, &options).unwrap();
        let input: Vec<f32> =
            (0..model.input_len()).map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0).collect();
        model.logits(&input).unwrap()
    };
    let one = logits(1);
    assert!(one.iter().any(|&v| v != 0.0));
    assert_eq!(one, logits(3));
}

/// Plain QLinearConv (ONNX semantics): integer accumulation of zero-point-corrected values
/// (padding contributes real zero), requantization by `x_scale * w_scale / y_scale` in f32,
/// round half to even, add the output zero point, saturate to u8.
#[allow(clippy::too_many_arguments)]
fn qlinear_conv_reference(
    x: &[u8],
    (c, h, w): (usize, usize, usize),
    xs: f32,
    xz: i32,
    k: &[i8],
    (o, kh): (usize, usize),
    ws: f32,
    ys: f32,
    yz: i32,
    stride: usize,
    pad: usize,
) -> Vec<u8> {
    let oh = (h + 2 * pad - kh) / stride + 1;
    let ow = (w + 2 * pad - kh) / stride + 1;
    let mult = xs * ws / ys;
    let mut out = Vec::with_capacity(o * oh * ow);
    for oc in 0..o {
        for oy in 0..oh {
            for ox in 0..ow {
                let mut acc: i32 = 0;
                for ic in 0..c {
                    for dy in 0..kh {
                        for dx in 0..kh {
                            let iy = (oy * stride + dy) as isize - pad as isize;
                            let ix = (ox * stride + dx) as isize - pad as isize;
                            if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                continue;
                            }
                            let xv = x[(ic * h + iy as usize) * w + ix as usize] as i32 - xz;
                            acc += xv * k[((oc * c + ic) * kh + dy) * kh + dx] as i32;
                        }
                    }
                }
                let y = (acc as f32 * mult).round_ties_even() as i32 + yz;
                out.push(y.clamp(0, 255) as u8);
            }
        }
    }
    out
}

#[test]
fn qlinear_conv_matches_plain_integer_semantics_exactly() {
    let mut seed = 0x9e3779b97f4a7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    // (name, cin, cout, kernel, stride, pad, spatial): the four kinds of BiT convolution, then
    // shapes for the panel-major im2col of the patched tract-core: output rows shorter and
    // longer than a panel, a single partial panel, K not a multiple of 4, no padding, 5x5.
    // Each also runs on two threads, which must give the same bytes.
    for (name, c, o, k, stride, pad, hw) in [
        ("7x7/2", 3, 16, 7, 2, 3, 23),
        ("1x1", 32, 24, 1, 1, 0, 9),
        ("3x3/1", 16, 16, 3, 1, 1, 11),
        ("3x3/2", 16, 8, 3, 2, 1, 12),
        ("3x3/1 at 14", 24, 8, 3, 1, 1, 14),
        ("3x3/1 at 7", 40, 8, 3, 1, 1, 7),
        ("3x3/1 at 3", 8, 8, 3, 1, 1, 3),
        ("3x3/2 at 13", 8, 8, 3, 2, 1, 13),
        ("3x3/1 K=27", 3, 16, 3, 1, 1, 19),
        ("3x3/1 unpadded", 8, 16, 3, 1, 0, 20),
        ("5x5/1", 4, 16, 5, 1, 2, 18),
        // Large enough (k x n >= 32768) for the im2col to split its panels over threads.
        ("7x7/2 at 61", 3, 16, 7, 2, 3, 61),
        ("3x3/1 at 37", 32, 16, 3, 1, 1, 37),
    ] {
        let x: Vec<u8> = (0..c * hw * hw).map(|_| (next() % 256) as u8).collect();
        let w: Vec<i8> = (0..o * c * k * k).map(|_| (next() % 255) as i8).map(|v| v.max(-127)).collect();
        // Output scale chosen so the accumulators (std ~ 74 * 73 * sqrt(taps)) land mostly in
        // range around the zero point, with some saturation at both ends.
        let (xs, xz, ws, yz) = (0.02f32, 117i32, 0.003f32, 120i32);
        let ys = xs * ws * 74.0 * 73.0 * ((c * k * k) as f32).sqrt() / 50.0;
        let mut g = GraphBuilder::default();
        g.input("x", DataType::Uint8, &[Ok(1), Ok(c as i64), Ok(hw as i64), Ok(hw as i64)]);
        let xs_n = g.f32_const("xs", &[], &[xs]);
        let xz_n = g.raw_const("xz", &[], DataType::Uint8, vec![xz as u8]);
        let w_n = g.raw_const("w", &[o, c, k, k], DataType::Int8, w.iter().map(|&v| v as u8).collect());
        let ws_n = g.f32_const("ws", &[], &[ws]);
        let wz_n = g.raw_const("wz", &[], DataType::Int8, vec![0]);
        let ys_n = g.f32_const("ys", &[], &[ys]);
        let yz_n = g.raw_const("yz", &[], DataType::Uint8, vec![yz as u8]);
        let p = pad as i64;
        g.node(
            "QLinearConv",
            "y",
            &["x", &xs_n, &xz_n, &w_n, &ws_n, &wz_n, &ys_n, &yz_n],
            vec![
                ("kernel_shape", Attr::Ints(vec![k as i64, k as i64])),
                ("strides", Attr::Ints(vec![stride as i64, stride as i64])),
                ("pads", Attr::Ints(vec![p, p, p, p])),
            ],
        );
        let oh = (hw + 2 * pad - k) / stride + 1;
        g.output("y", DataType::Uint8, &[Ok(1), Ok(o as i64), Ok(oh as i64), Ok(oh as i64)]);
        let proto = g.into_model("qconv", &[]);
        let model = onnx().model_for_proto_model(&proto).unwrap().into_optimized().unwrap();
        let input = Tensor::from_shape(&[1, c, hw, hw], &x).unwrap();
        let run = |threads: usize| -> Vec<u8> {
            use tract_onnx::tract_core::tract_linalg::multithread::Executor;
            let executor = if threads == 1 { Executor::SingleThread } else { Executor::multithread(threads) };
            let options = tract_onnx::tract_core::runtime::RunOptions {
                executor: Some(executor),
                ..Default::default()
            };
            let plan = model.clone().into_runnable_with_options(&options).unwrap();
            let out = plan.run(tvec!(input.clone().into_tvalue())).unwrap();
            out[0].to_plain_array_view::<u8>().unwrap().iter().copied().collect()
        };
        let got = run(1);
        assert_eq!(got, run(2), "{name}: two threads compute other bytes");
        let want = qlinear_conv_reference(&x, (c, hw, hw), xs, xz, &w, (o, k), ws, ys, yz, stride, pad);
        let diffs = got.iter().zip(&want).filter(|(a, b)| a != b).count();
        let saturated = want.iter().filter(|&&v| v == 0 || v == 255).count();
        println!("{name}: {} outputs, {diffs} differ, {saturated} saturated", want.len());
        assert_eq!(got.len(), want.len(), "{name}: shape");
        assert_eq!(diffs, 0, "{name}: tract differs from the ONNX semantics");
        assert!(saturated < want.len() / 10, "{name}: test data should mostly stay in range");
        if want.len() >= 1000 {
            assert!(saturated > 0, "{name}: saturation is exercised too");
        }
    }
}

#[test]
fn weight_quantization_is_symmetric_per_tensor_or_per_channel() {
    let w = [0.5f32, -1.0, 0.25, 2.0, -0.1, 0.0];
    let (q, s) = quantize_weights(&w, 2, WeightScales::PerTensor);
    assert_eq!(s, vec![2.0 / 127.0]);
    assert_eq!(q[3], 127);
    assert_eq!(q[1], -64, "-1.0 / (2/127) = -63.5 rounds half to even");
    let (q, s) = quantize_weights(&w, 2, WeightScales::PerChannel);
    assert_eq!(s, vec![1.0 / 127.0, 2.0 / 127.0]);
    assert_eq!((q[1], q[3]), (-127, 127), "each channel uses its whole range");
}

#[test]
fn int8_agrees_with_float_on_held_out_frames() {
    let (float, int8) = int8_fixture();
    let report = bit_tools::eval::evaluate(float, int8, &frames().1, Some(128), 2, false).unwrap();
    print!("{}", report.table(5));
    assert_eq!(report.images, 12);
    assert_eq!(report.layers.len(), 17);
    // Random weights give small logit margins, so top-1 can flip; the logits themselves must
    // stay close. Trained weights are checked below when ../shared/models is present.
    assert!(report.cosine > 0.99, "cosine {}", report.cosine);
    assert!(report.logit_sqnr_db > 20.0, "logit SQNR {}", report.logit_sqnr_db);
    assert!(report.layers.iter().all(|l| l.sqnr_db > 10.0), "{:?}", report.layers);
}

/// On the trained shapes checkpoint (../shared/models) int8 must beat ONNX Runtime's own
/// static quantization, whose best published setting reached 30.2 dB logit SQNR and 236/240
/// top-1 agreement, and lose at most 2 points of the float accuracy (92.5%).
#[test]
fn trained_checkpoint_int8_fidelity() {
    let shared = repo_root().join("../shared/models");
    if !shared.join("bit_shapes_d1111.npz").is_file() {
        println!("SKIPPED: ../shared/models not present");
        return;
    }
    if bit_e2e::quick() {
        println!("SKIPPED: BIT_E2E_QUICK (240 images)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let float = dir.path().join("shapes.onnx");
    let int8 = dir.path().join("shapes-int8.onnx");
    let labels = bit_runtime::read_labels(&shared.join("shapes/labels.txt")).unwrap();
    let options = bit_tools::ImportOptions {
        labels: Some(labels),
        overrides: bit_tools::contract::Overrides { input_size: Some(128), ..Default::default() },
        ..Default::default()
    };
    bit_tools::import_checkpoint(&shared.join("bit_shapes_d1111.npz"), &float, &options).unwrap();
    quantize_model(&float, &shared.join("shapes/calib"), &int8, &QuantizeOptions::default()).unwrap();
    let r = bit_tools::eval::evaluate(&float, &int8, &shared.join("shapes/test"), None, 2, false).unwrap();
    print!("{}", r.table(5));
    let (acc_f, acc_q) = r.accuracy.expect("file names carry labels");
    assert_eq!(r.images, 240);
    assert!((acc_f - 0.925).abs() < 1e-9, "float accuracy {acc_f}");
    assert!(acc_q >= acc_f - 0.02, "int8 accuracy {acc_q}");
    assert!(r.logit_sqnr_db > 30.2, "logit SQNR {}", r.logit_sqnr_db);
    assert!(r.top1_agreement * 240.0 >= 236.0, "top-1 agreement {}", r.top1_agreement);
}

fn quantize_error(model: &Path, calib: &Path, options: &QuantizeOptions) -> String {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("q.onnx");
    let err = quantize_model(model, calib, &out, options).expect_err("must fail").to_string();
    assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none(), "no output left: {err}");
    err
}

#[test]
fn quantize_bad_input() {
    let (float, int8) = int8_fixture();
    let options = QuantizeOptions { input_size: Some(128), ..Default::default() };
    let empty = tempfile::tempdir().unwrap();
    let err = quantize_error(float, empty.path(), &options);
    assert!(
        err.contains("no calibration images") && err.contains(&empty.path().display().to_string()),
        "{err}"
    );

    let err =
        quantize_error(float, &frames().0, &QuantizeOptions { num_images: Some(500), ..options.clone() });
    assert!(err.contains("500 calibration images requested, 12 found"), "{err}");

    let broken = tempfile::tempdir().unwrap();
    std::fs::write(broken.path().join("frame.png"), b"\x89PNG\r\n\x1a\nnope").unwrap();
    let err = quantize_error(float, broken.path(), &options);
    assert!(err.contains("frame.png") && err.contains("unreadable image"), "{err}");

    // Quantizing twice, or a graph that is not a BiT float graph, is refused.
    let err = quantize_error(int8, &frames().0, &options);
    assert!(err.contains("not a float BiT graph") && err.contains("QuantizeLinear"), "{err}");
    let mut g = GraphBuilder::default();
    g.input("input", DataType::Float, &[Ok(1), Ok(3), Ok(8), Ok(8)]);
    g.node("Sigmoid", "logits", &["input"], vec![]);
    g.output("logits", DataType::Float, &[Ok(1), Ok(3), Ok(8), Ok(8)]);
    let other = empty.path().join("other.onnx");
    bit_tools::onnx::write_model(&g.into_model("other", &[]), &other).unwrap();
    let err = quantize_error(&other, &frames().0, &options);
    assert!(err.contains("op Sigmoid"), "{err}");
}

#[test]
fn options_cover_calibration_methods_and_types() {
    let (float, _) = int8_fixture();
    let dir = tempfile::tempdir().unwrap();
    for (i, (weights, act, cal)) in [
        (WeightScales::PerChannel, ActivationType::I8, Calibration::MinMax),
        (WeightScales::PerTensor, ActivationType::U8, Calibration::Mse),
    ]
    .into_iter()
    .enumerate()
    {
        let out = dir.path().join(format!("q{i}.onnx"));
        let options = QuantizeOptions {
            weights,
            activations: act,
            calibration: cal,
            input_size: Some(128),
            num_images: Some(6),
            ..Default::default()
        };
        let report = quantize_model(float, &frames().0, &out, &options).unwrap();
        assert_eq!(report.images, 6);
        let r = bit_tools::eval::evaluate(float, &out, &frames().1, Some(128), 2, false).unwrap();
        println!("{weights:?} {act:?} {cal:?}: cosine {:.5}, SQNR {:.1} dB", r.cosine, r.logit_sqnr_db);
        assert!(r.cosine > 0.99, "{weights:?} {act:?} {cal:?}: cosine {}", r.cosine);
        let info = bit_runtime::ModelInfo::read(&out).unwrap();
        assert_eq!(info.labels.map(|l| l.len()), Some(1000), "labels carried over");
        assert_eq!(
            info.preprocess,
            bit_runtime::Preprocess::bit_default(224).with_source("npz default"),
            "contract carried over"
        );
    }
}

/// The fused GroupNorm -> quantize op the runtime installs computes what the standard ONNX
/// chain computes in tract: u8 outputs within one step (float rounding at step boundaries).
#[test]
fn fused_group_norm_quantize_matches_the_onnx_chain() {
    let (c, hw) = (64usize, 14usize);
    let mut g = GraphBuilder::default();
    g.input("x", DataType::Float, &[Ok(1), Ok(c as i64), Ok(hw as i64), Ok(hw as i64)]);
    let gamma: Vec<f32> = (0..c).map(|i| 20.0 + (i % 7) as f32).collect();
    let beta: Vec<f32> = (0..c).map(|i| 30.0 + (i % 5) as f32 * 3.0 + 0.5).collect();
    let s = g.f32_const("gamma", &[c], &gamma);
    let b = g.f32_const("beta", &[c], &beta);
    let gn = g.node(
        "GroupNormalization",
        "gn",
        &["x", &s, &b],
        vec![("num_groups", Attr::Int(32)), ("epsilon", Attr::Float(1e-5))],
    );
    let lo = g.f32_const("lo", &[], &[0.0]);
    let hi = g.f32_const("hi", &[], &[255.0]);
    let clip = g.node("Clip", "clip", &[&gn, &lo, &hi], vec![]);
    g.node("Cast", "y", &[&clip], vec![("to", Attr::Int(DataType::Uint8 as i64))]);
    g.output("y", DataType::Uint8, &[Ok(1), Ok(c as i64), Ok(hw as i64), Ok(hw as i64)]);
    let proto = g.into_model("gnq", &[]);
    let x: Vec<f32> = (0..c * hw * hw)
        .map(|i| ((i * 7919 % 1013) as f32 / 101.3 - 4.0) * (1.0 + (i / 196) as f32))
        .collect();
    let run = |framework: tract_onnx::Onnx, proto: &tract_onnx::pb::ModelProto| -> Vec<u8> {
        let out = run_proto(framework, proto, &[Tensor::from_shape(&[1, c, hw, hw], &x).unwrap()]);
        out[0].to_plain_array_view::<u8>().unwrap().iter().copied().collect()
    };
    let standard = run(onnx(), &proto);
    let mut fused_proto = proto.clone();
    assert_eq!(bit_engine::rewrite::for_tract(&mut fused_proto).group_norm_chains, 1, "one chain fused");
    assert_eq!(fused_proto.graph.as_ref().unwrap().node.len(), 1);
    let fused = run(bit_engine::ops::onnx(), &fused_proto);
    let max = standard.iter().zip(&fused).map(|(a, b)| a.abs_diff(*b)).max().unwrap();
    let differ = standard.iter().zip(&fused).filter(|(a, b)| a != b).count();
    let clipped = standard.iter().filter(|&&v| v == 0 || v == 255).count();
    println!("fused vs standard: {differ} of {} differ (max {max}), {clipped} clipped", standard.len());
    assert!(max <= 1, "max difference {max}");
    assert!(differ * 100 < standard.len(), "{differ} differ");
    assert!(clipped < standard.len() / 2, "the data exercises the range, not just the clip");
}

#[test]
fn runtime_fuses_every_group_norm_quantize_chain_and_agrees() {
    let (float, int8) = int8_fixture();
    let mut proto = bit_tools::probe::read_proto(int8).unwrap();
    // R14: 4 units x 3 GroupNorms feed convolutions (the head's does not).
    assert_eq!(bit_engine::rewrite::for_tract(&mut proto).group_norm_chains, 12);
    let opts = bit_runtime::LoadOptions { input_size: Some(128), ..Default::default() };
    let img = bit_runtime::load_image(&repo_root().join("samples/images/chelsea.png")).unwrap();
    let mut m = bit_runtime::Model::load(int8, &opts).unwrap();
    let fused = m.logits(&m.tensor_for_image(&img)).unwrap();
    // The same int8 graph through tract's own ops.
    let plain = onnx()
        .model_for_path(int8)
        .unwrap()
        .with_input_fact(0, f32::fact([1, 3, 128, 128]).into())
        .unwrap()
        .into_optimized()
        .unwrap()
        .into_runnable()
        .unwrap();
    let input = Tensor::from_shape(&[1, 3, 128, 128], &m.tensor_for_image(&img)).unwrap();
    let out = plain.run(tvec!(input.into_tvalue())).unwrap();
    let standard: Vec<f32> = out[0].to_plain_array_view::<f32>().unwrap().iter().copied().collect();
    let mut f = bit_runtime::Model::load(float, &opts).unwrap();
    let reference = f.logits(&f.tensor_for_image(&img)).unwrap();
    let err = |a: &[f32]| a.iter().zip(&reference).map(|(x, y)| (x - y).powi(2)).sum::<f32>().sqrt();
    println!("|int8 - float|: fused {:.4}, standard ops {:.4}", err(&fused), err(&standard));
    assert!(bit_e2e::max_abs_diff(&fused, &standard) < 0.1, "fused and standard int8 agree closely");
}

/// RGB8 to packed YUYV (BT.601 limited range), as a UVC camera delivers it.
fn rgb_to_yuyv(img: &image::RgbImage) -> Vec<u8> {
    let (w, h) = (img.width() as usize & !1, img.height() as usize);
    let mut out = Vec::with_capacity(w * h * 2);
    for y in 0..h {
        for x in (0..w).step_by(2) {
            let yuv = |p: &image::Rgb<u8>| {
                let [r, g, b] = p.0.map(|v| v as f32);
                let yy = 16.0 + 0.257 * r + 0.504 * g + 0.098 * b;
                let u = 128.0 - 0.148 * r - 0.291 * g + 0.439 * b;
                let v = 128.0 + 0.439 * r - 0.368 * g - 0.071 * b;
                [yy, u, v].map(|c| c.round().clamp(0.0, 255.0) as u8)
            };
            let (a, b) = (yuv(img.get_pixel(x as u32, y as u32)), yuv(img.get_pixel(x as u32 + 1, y as u32)));
            out.extend([
                a[0],
                ((a[1] as u16 + b[1] as u16) / 2) as u8,
                b[0],
                ((a[2] as u16 + b[2] as u16) / 2) as u8,
            ]);
        }
    }
    out
}

#[test]
fn raw_camera_frames_calibrate_like_images() {
    let (float, _) = int8_fixture();
    let dir = tempfile::tempdir().unwrap();
    let mut raw = Vec::new();
    for entry in std::fs::read_dir(&frames().0).unwrap().take(6) {
        let img = bit_runtime::load_image(&entry.unwrap().path()).unwrap();
        let path = dir.path().join(format!("cam-{}.{}x{}.yuyv", raw.len(), img.width(), img.height()));
        std::fs::write(&path, rgb_to_yuyv(&img)).unwrap();
        raw.push(path);
    }
    assert_eq!(
        bit_tools::quantize::raw_frame_kind(&raw[0]).map(|k| k.0),
        Some(bit_runtime::PixelFormat::Yuyv)
    );
    let out = dir.path().join("q.onnx");
    let options = QuantizeOptions { input_size: Some(128), ..Default::default() };
    let report = quantize_model(float, dir.path(), &out, &options).unwrap();
    assert_eq!(report.images, 6, "raw frames are calibration inputs");
    let r = bit_tools::eval::evaluate(float, &out, &frames().1, Some(128), 2, false).unwrap();
    println!("calibrated on raw YUYV frames: cosine {:.5}, SQNR {:.1} dB", r.cosine, r.logit_sqnr_db);
    assert!(r.cosine > 0.99);

    // A frame whose length does not match its name is named in the error.
    std::fs::write(dir.path().join("short.160x120.yuyv"), vec![0u8; 100]).unwrap();
    std::fs::remove_file(&out).unwrap();
    let err = quantize_error(float, dir.path(), &options);
    assert!(err.contains("short.160x120.yuyv") && err.contains("bad YUYV frame"), "{err}");
}

/// Nodes whose inputs are all constants (work tract would redo on every frame).
fn constant_work(model: &TypedModel) -> Vec<String> {
    use tract_onnx::tract_core::ops::konst::Const;
    model
        .eval_order()
        .unwrap()
        .into_iter()
        .filter(|&id| {
            let node = model.node(id);
            !node.op_is::<Const>()
                && !node.inputs.is_empty()
                && model.node_input_facts(id).unwrap().iter().all(|f| f.konst.is_some())
        })
        .map(|id| format!("{} ({})", model.node(id).name, model.node(id).op.name()))
        .collect()
}

/// tract leaves the kernel sums of large quantized convolutions to every frame (their i32
/// copies exceed its constant-folding budget); the runtime's `optimize` folds them at load and
/// changes no output bit.
#[test]
fn load_time_folding_removes_per_frame_constant_work_and_changes_nothing() {
    let (_, int8) = int8_fixture();
    let mut proto = bit_tools::probe::read_proto(int8).unwrap();
    bit_engine::rewrite::for_tract(&mut proto);
    let typed = bit_engine::ops::onnx()
        .model_for_proto_model(&proto)
        .unwrap()
        .with_input_fact(0, f32::fact([1, 3, 128, 128]).into())
        .unwrap()
        .into_typed()
        .unwrap();
    let plain = typed.clone().into_optimized().unwrap();
    let left = constant_work(&plain);
    println!("tract alone leaves {} constant nodes: {left:?}", left.len());
    assert!(left.iter().any(|n| n.contains("Cast")), "the premise: tract leaves i32 kernel casts");
    let folded = bit_engine::optimize::optimize(typed).unwrap();
    assert_eq!(constant_work(&folded), Vec::<String>::new());
    assert!(folded.nodes.len() < plain.nodes.len());
    let input: Vec<f32> = (0..3 * 128 * 128).map(|i| ((i * 7919) % 255) as f32 / 127.5 - 1.0).collect();
    let run = |m: TypedModel| -> Vec<f32> {
        let t = Tensor::from_shape(&[1, 3, 128, 128], &input).unwrap();
        let out = m.into_runnable().unwrap().run(tvec!(t.into_tvalue())).unwrap();
        out[0].to_plain_array_view::<f32>().unwrap().iter().copied().collect()
    };
    assert_eq!(run(plain), run(folded), "bit-identical logits");
}

/// Optimizes `proto` with `framework` and runs it once.
fn run_proto(
    framework: tract_onnx::Onnx,
    proto: &tract_onnx::pb::ModelProto,
    inputs: &[Tensor],
) -> TVec<TValue> {
    let model = framework.model_for_proto_model(proto).unwrap().into_optimized().unwrap();
    model.into_runnable().unwrap().run(inputs.iter().map(|t| t.clone().into_tvalue()).collect()).unwrap()
}

/// Runs `proto` with tract's standard ONNX ops and after the runtime's rewrites; returns the
/// rewrite report and both outputs (f32).
fn standard_and_rewritten(
    proto: &tract_onnx::pb::ModelProto,
    inputs: &[Tensor],
) -> (bit_engine::rewrite::Rewrites, Vec<f32>, Vec<f32>) {
    let run = |framework: tract_onnx::Onnx, proto: &tract_onnx::pb::ModelProto| -> Vec<f32> {
        let out = run_proto(framework, proto, inputs);
        out[0].to_plain_array_view::<f32>().unwrap().iter().copied().collect()
    };
    let standard = run(onnx(), proto);
    let mut rewritten = proto.clone();
    let fused = bit_engine::rewrite::for_tract(&mut rewritten);
    (fused, standard, run(bit_engine::ops::onnx(), &rewritten))
}

fn u8_const(g: &mut GraphBuilder, name: &str, v: u8) -> String {
    g.raw_const(name, &[], DataType::Uint8, vec![v])
}

/// BiT's stem `DequantizeLinear -> Pad(0) -> MaxPool` runs as one 8-bit pool padded with the
/// zero point, then dequantizes: bit-identical on several geometries, u8 and i8, also where
/// values below the zero point (negative floats) meet the padding. Pools the 8-bit op does
/// not cover (dilated, ceil rounding) keep tract's pool on 8-bit values, also bit-identical.
#[test]
fn stem_pool_on_8_bit_values_is_bit_identical() {
    struct Case {
        hw: usize,
        pads: [i64; 4],
        kernel: usize,
        stride: usize,
        signed: bool,
        /// A pool attribute the 8-bit op does not cover, and how it reads.
        extra: Option<(&'static str, Attr, &'static str)>,
    }
    let case = |hw, pads, kernel, stride, signed, extra| Case { hw, pads, kernel, stride, signed, extra };
    let cases = [
        case(9, [1, 1, 1, 1], 3, 2, false, None),
        case(10, [1, 1, 1, 1], 3, 2, false, None),
        case(10, [1, 1, 1, 1], 3, 2, true, None),
        case(8, [0, 0, 0, 0], 2, 2, false, None),
        case(11, [0, 1, 2, 0], 3, 1, true, None),
        case(7, [2, 2, 2, 2], 5, 3, false, None),
        case(9, [1, 1, 1, 1], 3, 2, false, Some(("ceil_mode", Attr::Int(1), "ceil_mode 1"))),
        case(9, [1, 1, 1, 1], 3, 1, false, Some(("dilations", Attr::Ints(vec![2, 2]), "dilations 2"))),
    ];
    let c = 3usize;
    for Case { hw, pads: [t, l, b, r], kernel, stride, signed, extra } in cases {
        let label = format!(
            "{hw}x{hw}, pads {:?}, {kernel}x{kernel}/{stride}, signed {signed}, {}",
            [t, l, b, r],
            extra.as_ref().map_or("", |e| e.2)
        );
        let (elem, zp_value) = if signed { (DataType::Int8, -7i8 as u8) } else { (DataType::Uint8, 131) };
        let mut g = GraphBuilder::default();
        g.input("q", elem, &[Ok(1), Ok(c as i64), Ok(hw as i64), Ok(hw as i64)]);
        let scale = g.f32_const("s", &[], &[0.037]);
        let zp = g.raw_const("zp", &[], elem, vec![zp_value]);
        let dq = g.node("DequantizeLinear", "dq", &["q", &scale, &zp], vec![]);
        let pads = g.i64_const("pads", &[8], &[0, 0, t, l, 0, 0, b, r]);
        let pad = g.node("Pad", "pad", &[&dq, &pads], vec![]);
        let mut attrs = vec![
            ("kernel_shape", Attr::Ints(vec![kernel as i64; 2])),
            ("strides", Attr::Ints(vec![stride as i64; 2])),
        ];
        let fallback = extra.is_some();
        attrs.extend(extra.map(|(name, attr, _)| (name, attr)));
        g.node("MaxPool", "y", &[&pad], attrs);
        g.output("y", DataType::Float, &[Ok(1), Ok(c as i64), Err("h"), Err("w")]);
        let proto = g.into_model("pool", &[]);
        // Channel 0 entirely below the zero point, so every window touching the border takes
        // the pad; the others spread over the whole range.
        let n = hw * hw;
        let q: Vec<u8> = (0..c * n)
            .map(|i| if i < n { zp_value.wrapping_sub(1 + (i % 90) as u8) } else { (i * 37 % 256) as u8 })
            .collect();
        let input = if signed {
            let q: Vec<i8> = q.iter().map(|&v| v as i8).collect();
            Tensor::from_shape(&[1, c, hw, hw], &q).unwrap()
        } else {
            Tensor::from_shape(&[1, c, hw, hw], &q).unwrap()
        };
        let (fused, standard, rewritten) = standard_and_rewritten(&proto, &[input]);
        assert_eq!((fused.pools, fused.pools_8bit), (1, usize::from(!fallback)), "{label}");
        assert_eq!(standard, rewritten, "{label}");
        assert!(standard.iter().any(|&v| v > 0.0), "{label}");
        // Channel 0: windows that touch the padding give exactly 0.0 (the pad), the others
        // a negative value.
        let channel0 = &standard[..standard.len() / c];
        assert!(channel0.iter().all(|&v| v <= 0.0), "{label}");
        assert!(channel0.iter().any(|&v| v < 0.0), "{label}");
        assert_eq!(channel0.contains(&0.0), t + l + b + r > 0, "{label}");
    }
}

/// A 1x1 convolution with stride s and no padding (BiT's projections) runs as a pixel pick
/// and a stride-1 convolution: bit-identical for QLinearConv and float Conv, even and odd
/// sizes, equal and unequal strides. Padded or larger-kernel convolutions are left alone.
#[test]
fn strided_pointwise_convs_subsample_bit_identically() {
    let (ci, co) = (5usize, 3usize);
    let cases: [(&str, usize, [i64; 2], i64, usize); 6] = [
        ("QLinearConv", 8, [2, 2], 0, 1),
        ("QLinearConv", 7, [2, 2], 0, 1),
        ("QLinearConv", 9, [3, 2], 0, 1),
        ("Conv", 7, [2, 2], 0, 1),
        ("QLinearConv", 8, [2, 2], 1, 0),
        ("QLinearConv", 8, [1, 1], 0, 0),
    ];
    for (op, hw, strides, pad, expected) in cases {
        let label = format!("{op} on {hw}x{hw}, strides {strides:?}, pads {pad}");
        let mut g = GraphBuilder::default();
        let x_elem = if op == "Conv" { DataType::Float } else { DataType::Uint8 };
        g.input("x", x_elem, &[Ok(1), Ok(ci as i64), Ok(hw as i64), Ok(hw as i64)]);
        let weights: Vec<i8> = (0..co * ci).map(|i| ((i * 41 % 200) as i32 - 100) as i8).collect();
        let attrs = vec![
            ("kernel_shape", Attr::Ints(vec![1, 1])),
            ("strides", Attr::Ints(strides.to_vec())),
            ("pads", Attr::Ints(vec![pad; 4])),
        ];
        let y = if op == "Conv" {
            let w: Vec<f32> = weights.iter().map(|&v| v as f32 * 0.01).collect();
            let w = g.f32_const("w", &[co, ci, 1, 1], &w);
            g.node("Conv", "y", &["x", &w], attrs)
        } else {
            let xs = g.f32_const("xs", &[], &[0.02]);
            let xz = u8_const(&mut g, "xz", 17);
            let w =
                g.raw_const("w", &[co, ci, 1, 1], DataType::Int8, weights.iter().map(|&v| v as u8).collect());
            let ws = g.f32_const("ws", &[], &[0.003]);
            let wz = g.raw_const("wz", &[], DataType::Int8, vec![0]);
            let ys = g.f32_const("ys", &[], &[0.05]);
            let yz = u8_const(&mut g, "yz", 128);
            let q = g.node("QLinearConv", "qconv", &["x", &xs, &xz, &w, &ws, &wz, &ys, &yz], attrs);
            g.node("DequantizeLinear", "y", &[&q, &ys, &yz], vec![])
        };
        g.output(&y, DataType::Float, &[Ok(1), Ok(co as i64), Err("h"), Err("w")]);
        let proto = g.into_model("subsample", &[]);
        let n = ci * hw * hw;
        let input = if op == "Conv" {
            let x: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
            Tensor::from_shape(&[1, ci, hw, hw], &x).unwrap()
        } else {
            let x: Vec<u8> = (0..n).map(|i| (i * 59 % 256) as u8).collect();
            Tensor::from_shape(&[1, ci, hw, hw], &x).unwrap()
        };
        let (fused, standard, rewritten) = standard_and_rewritten(&proto, &[input]);
        assert_eq!(fused.subsampled_convs, expected, "{label}");
        assert_eq!(standard, rewritten, "{label}");
        let out_hw = |s: i64| (hw as i64 + 2 * pad - 1) / s + 1;
        assert_eq!(standard.len() as i64, co as i64 * out_hw(strides[0]) * out_hw(strides[1]), "{label}");
        assert!(standard.iter().any(|&v| v != 0.0), "{label}");
    }
}

/// Residual sums `Add(DequantizeLinear(q), y)`, with one or both sides dequantized, run as one
/// op and give bit-identical sums; a broadcasting Add falls back to tract's own ops.
#[test]
fn dequantize_add_is_bit_identical() {
    let shape = [1usize, 4, 5, 6];
    let n: usize = shape.iter().product();
    let dims: Vec<Result<i64, &str>> = shape.iter().map(|&d| Ok(d as i64)).collect();
    let qa: Vec<u8> = (0..n).map(|i| (i * 97 % 256) as u8).collect();
    let qb: Vec<u8> = (0..n).map(|i| (i * 53 % 256) as u8).collect();
    let y: Vec<f32> = (0..n).map(|i| (i as f32 * 0.731).sin() * 3.0).collect();
    for case in ["q+y", "y+q", "q+q", "q+broadcast"] {
        let mut g = GraphBuilder::default();
        g.input("qa", DataType::Uint8, &dims);
        let sa = g.f32_const("sa", &[], &[0.0213]);
        let za = u8_const(&mut g, "za", 119);
        let da = g.node("DequantizeLinear", "da", &["qa", &sa, &za], vec![]);
        let mut inputs = vec![Tensor::from_shape(&shape, &qa).unwrap()];
        let other = match case {
            "q+q" => {
                g.input("qb", DataType::Uint8, &dims);
                let sb = g.f32_const("sb", &[], &[0.0177]);
                let zb = u8_const(&mut g, "zb", 3);
                inputs.push(Tensor::from_shape(&shape, &qb).unwrap());
                g.node("DequantizeLinear", "db", &["qb", &sb, &zb], vec![])
            }
            "q+broadcast" => g.f32_const("bias", &[4, 1, 1], &[0.5, -1.25, 2.0, 0.125]),
            _ => {
                g.input("y", DataType::Float, &dims);
                inputs.push(Tensor::from_shape(&shape, &y).unwrap());
                "y".to_owned()
            }
        };
        let operands = if case == "y+q" { [&other, &da] } else { [&da, &other] };
        g.node("Add", "sum", &[operands[0], operands[1]], vec![]);
        g.output("sum", DataType::Float, &dims);
        let proto = g.into_model("dqadd", &[]);
        let (fused, standard, rewritten) = standard_and_rewritten(&proto, &inputs);
        assert_eq!(fused.dequantize_adds, 1, "{case}");
        assert_eq!(standard, rewritten, "{case}");
    }
}
