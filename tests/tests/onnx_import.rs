//! `bit-tool import` of ONNX exports: graphs written here the way PyTorch's exporter writes
//! timm/transformers BiT models (weight standardization computed in the graph, as a
//! training-mode BatchNormalization or a ReduceMean/Sub/Pow/Sqrt/Div chain; GroupNorm
//! decomposed into Reshape/InstanceNormalization/Reshape/Mul/Add, or native), imported, and
//! compared with the model imported from the same checkpoint.

use std::collections::BTreeMap;
use std::path::Path;

use bit_e2e::{max_abs_diff, sample_images};
use bit_runtime::{LoadOptions, Model, ModelInfo};
use bit_tools::bit::{Conv, GroupNorm};
use bit_tools::onnx::{Attr, GraphBuilder};
use bit_tools::{Arch, BitWeights, Checkpoint, Layout};
use tract_onnx::pb;

#[derive(Clone, Copy, Debug)]
enum Ws {
    /// timm StdConv2d / transformers: batch_norm(w.reshape(1, O, -1), training=True).
    BatchNorm,
    /// The arithmetic spelled out.
    Chain,
}

#[derive(Clone, Copy, Debug)]
enum Gn {
    /// Opset 17: Reshape -> InstanceNormalization -> Reshape(Shape(x)) -> Mul -> Add.
    Decomposed,
    /// Opset 21 GroupNormalization.
    Native,
}

struct Exporter {
    g: GraphBuilder,
    ws: Ws,
    gn: Gn,
    eps: f32,
    opset: i64,
}

impl Exporter {
    /// ReduceMean's axes: an input from opset 18, an attribute before.
    fn axes(&mut self, name: &str, axes: &[i64]) -> Vec<String> {
        if self.opset >= 18 { vec![self.g.i64_const(name, &[axes.len()], axes)] } else { vec![] }
    }

    fn axes_attrs(&self, axes: &[i64]) -> Vec<(&'static str, Attr)> {
        let mut attrs = vec![("keepdims", Attr::Int(1))];
        if self.opset < 18 {
            attrs.push(("axes", Attr::Ints(axes.to_vec())));
        }
        attrs
    }

    /// The raw kernel, standardized in the graph.
    fn std_weight(&mut self, name: &str, conv: &Conv) -> String {
        let w = self.g.f32_const(&format!("{name}.weight"), &conv.weight.shape, &conv.weight.data);
        let o = conv.weight.shape[0];
        match self.ws {
            Ws::BatchNorm => {
                let shape = self.g.i64_const(&format!("{name}/ws/shape"), &[3], &[1, o as i64, -1]);
                let flat = self.g.node("Reshape", &format!("{name}/ws/reshape"), &[&w, &shape], vec![]);
                let ones = self.g.f32_const(&format!("{name}/ws/ones"), &[o], &vec![1.0; o]);
                let zeros = self.g.f32_const(&format!("{name}/ws/zeros"), &[o], &vec![0.0; o]);
                let bn = self.g.node(
                    "BatchNormalization",
                    &format!("{name}/ws/bn"),
                    &[&flat, &ones, &zeros, &zeros, &ones],
                    vec![
                        ("epsilon", Attr::Float(self.eps)),
                        ("momentum", Attr::Float(0.0)),
                        ("training_mode", Attr::Int(1)),
                    ],
                );
                let back = self.g.node("Shape", &format!("{name}/ws/shape_of"), &[&w], vec![]);
                self.g.node("Reshape", &format!("{name}/ws/unflat"), &[&bn, &back], vec![])
            }
            Ws::Chain => {
                let ax = self.axes(&format!("{name}/ws/axes"), &[1, 2, 3]);
                let mut inputs: Vec<&str> = vec![&w];
                inputs.extend(ax.iter().map(String::as_str));
                let attrs = self.axes_attrs(&[1, 2, 3]);
                let mean = self.g.node("ReduceMean", &format!("{name}/ws/mean"), &inputs, attrs);
                let d = self.g.node("Sub", &format!("{name}/ws/sub"), &[&w, &mean], vec![]);
                let two = self.g.f32_const(&format!("{name}/ws/two"), &[], &[2.0]);
                let sq = self.g.node("Pow", &format!("{name}/ws/pow"), &[&d, &two], vec![]);
                let mut inputs: Vec<&str> = vec![&sq];
                inputs.extend(ax.iter().map(String::as_str));
                let attrs = self.axes_attrs(&[1, 2, 3]);
                let var = self.g.node("ReduceMean", &format!("{name}/ws/var"), &inputs, attrs);
                let eps = self.g.f32_const(&format!("{name}/ws/eps"), &[], &[self.eps]);
                let ve = self.g.node("Add", &format!("{name}/ws/add"), &[&var, &eps], vec![]);
                let sd = self.g.node("Sqrt", &format!("{name}/ws/sqrt"), &[&ve], vec![]);
                self.g.node("Div", &format!("{name}/ws/div"), &[&d, &sd], vec![])
            }
        }
    }

    fn conv(&mut self, name: &str, x: &str, conv: &Conv, stride: usize, pad: usize) -> String {
        let w = self.std_weight(name, conv);
        let k = conv.weight.shape[2] as i64;
        let (s, p) = (stride as i64, pad as i64);
        self.g.node(
            "Conv",
            name,
            &[x, &w],
            vec![
                ("kernel_shape", Attr::Ints(vec![k, k])),
                ("strides", Attr::Ints(vec![s, s])),
                ("pads", Attr::Ints(vec![p, p, p, p])),
            ],
        )
    }

    fn gn_relu(&mut self, name: &str, x: &str, gn: &GroupNorm) -> String {
        let c = gn.gamma.len();
        let normed = match self.gn {
            Gn::Native => {
                let s = self.g.f32_const(&format!("{name}.weight"), &[c], &gn.gamma);
                let b = self.g.f32_const(&format!("{name}.bias"), &[c], &gn.beta);
                self.g.node(
                    "GroupNormalization",
                    &format!("{name}/gn"),
                    &[x, &s, &b],
                    vec![("num_groups", Attr::Int(32)), ("epsilon", Attr::Float(1e-5))],
                )
            }
            Gn::Decomposed => {
                let shape = self.g.i64_const(&format!("{name}/gn/shape"), &[3], &[0, 32, -1]);
                let grouped = self.g.node("Reshape", &format!("{name}/gn/reshape"), &[x, &shape], vec![]);
                let ones = self.g.f32_const(&format!("{name}/gn/ones"), &[32], &[1.0; 32]);
                let zeros = self.g.f32_const(&format!("{name}/gn/zeros"), &[32], &[0.0; 32]);
                let inorm = self.g.node(
                    "InstanceNormalization",
                    &format!("{name}/gn/inorm"),
                    &[&grouped, &ones, &zeros],
                    vec![("epsilon", Attr::Float(1e-5))],
                );
                let back = self.g.node("Shape", &format!("{name}/gn/shape_of"), &[x], vec![]);
                let y = self.g.node("Reshape", &format!("{name}/gn/unflat"), &[&inorm, &back], vec![]);
                let s = self.g.f32_const(&format!("{name}.weight"), &[c, 1, 1], &gn.gamma);
                let b = self.g.f32_const(&format!("{name}.bias"), &[c, 1, 1], &gn.beta);
                let m = self.g.node("Mul", &format!("{name}/gn/mul"), &[&y, &s], vec![]);
                self.g.node("Add", &format!("{name}/gn/add"), &[&m, &b], vec![])
            }
        };
        self.g.node("Relu", &format!("{name}/relu"), &[&normed], vec![])
    }
}

/// The export of `w` (raw kernels) in the given styles.
fn export(w: &BitWeights, ws: Ws, gn: Gn, labels: &[&str]) -> pb::ModelProto {
    let opset = match gn {
        Gn::Decomposed => 17,
        Gn::Native => 21,
    };
    let mut e = Exporter { g: GraphBuilder::default(), ws, gn, eps: w.ws_eps, opset };
    let f32t = pb::tensor_proto::DataType::Float;
    e.g.input("pixel_values", f32t, &[Err("batch_size"), Ok(3), Ok(224), Ok(224)]);
    let root = e.conv("stem.conv", "pixel_values", &w.root, 2, 3);
    let pads = e.g.i64_const("stem.pad", &[8], &[0, 0, 1, 1, 0, 0, 1, 1]);
    let padded = e.g.node("Pad", "stem/pad", &[&root, &pads], vec![]);
    let mut x = e.g.node(
        "MaxPool",
        "stem/pool",
        &[&padded],
        vec![("kernel_shape", Attr::Ints(vec![3, 3])), ("strides", Attr::Ints(vec![2, 2]))],
    );
    for (b, units) in w.blocks.iter().enumerate() {
        for (u, unit) in units.iter().enumerate() {
            let p = format!("stages.{b}.blocks.{u}");
            let pre = e.gn_relu(&format!("{p}.norm1"), &x, &unit.gn1);
            let shortcut = match &unit.proj {
                Some(proj) => e.conv(&format!("{p}.downsample.conv"), &pre, proj, unit.stride, 0),
                None => x.clone(),
            };
            let h = e.conv(&format!("{p}.conv1"), &pre, &unit.conv1, 1, 0);
            let h = e.gn_relu(&format!("{p}.norm2"), &h, &unit.gn2);
            let h = e.conv(&format!("{p}.conv2"), &h, &unit.conv2, unit.stride, 1);
            let h = e.gn_relu(&format!("{p}.norm3"), &h, &unit.gn3);
            let h = e.conv(&format!("{p}.conv3"), &h, &unit.conv3, 1, 0);
            x = e.g.node("Add", &format!("{p}/add"), &[&h, &shortcut], vec![]);
        }
    }
    let x = e.gn_relu("norm", &x, &w.final_gn);
    let pooled = e.g.node("GlobalAveragePool", "head/pool", &[&x], vec![]);
    let k = w.arch.num_classes;
    let hw = e.g.f32_const("head.fc.weight", &[k, w.arch.features(), 1, 1], &w.head_weight.data);
    let hb = e.g.f32_const("head.fc.bias", &[k], &w.head_bias);
    let logits = e.g.node("Conv", "head/fc", &[&pooled, &hw, &hb], vec![]);
    e.g.node("Flatten", "logits", &[&logits], vec![("axis", Attr::Int(1))]);
    e.g.output("logits", f32t, &[Err("batch_size"), Ok(k as i64)]);
    let id2label: BTreeMap<String, &str> =
        labels.iter().enumerate().map(|(i, l)| (i.to_string(), *l)).collect();
    let mut model =
        e.g.into_model("torch_jit", &[("id2label".into(), serde_json::to_string(&id2label).unwrap())]);
    model.opset_import[0].version = opset;
    model.producer_name = "pytorch".into();
    model
}

fn load(model: &Path) -> Model {
    Model::load(model, &LoadOptions { input_size: Some(224), threads: 2, labels: None }).unwrap()
}

/// Logits of `model` on the same input tensors (the reference model's preprocessing: the
/// export carries no contract, so the import records BiT's default).
fn logits(model: &Path, inputs: &[Vec<f32>]) -> Vec<Vec<f32>> {
    let mut m = load(model);
    inputs.iter().map(|x| m.logits(x).unwrap()).collect()
}

#[test]
fn exports_in_every_style_import_to_the_checkpoint_model() {
    let tmp = tempfile::tempdir().unwrap();
    let arch = Arch { depths: vec![1, 1, 1, 1], width: 1, num_classes: 4 };
    // timm layout: its WS eps (1e-8) is what the export computes with.
    let ckpt = tmp.path().join("bit.safetensors");
    bit_tools::synth::write_synthetic(&ckpt, &arch, 5, Layout::Timm, None).unwrap();
    let reference = tmp.path().join("reference.onnx");
    let labels = ["ant", "bee", "cat", "dog"];
    let options =
        bit_tools::ImportOptions { labels: Some(labels.map(String::from).to_vec()), ..Default::default() };
    bit_tools::import_checkpoint(&ckpt, &reference, &options).unwrap();
    let reference_model = load(&reference);
    let inputs: Vec<Vec<f32>> = sample_images()
        .iter()
        .take(3)
        .map(|p| reference_model.tensor_for_image(&bit_runtime::load_image(p).unwrap()))
        .collect();
    let expected = logits(&reference, &inputs);
    let raw = BitWeights::from_checkpoint(&Checkpoint::open(&ckpt).unwrap()).unwrap();
    assert!(!raw.ws_folded);

    for (ws, gn) in [
        (Ws::BatchNorm, Gn::Decomposed),
        (Ws::Chain, Gn::Native),
        (Ws::BatchNorm, Gn::Native),
        (Ws::Chain, Gn::Decomposed),
    ] {
        let exported = tmp.path().join(format!("export-{ws:?}-{gn:?}.onnx"));
        bit_tools::onnx::write_model(&export(&raw, ws, gn, &labels), &exported).unwrap();
        let out = tmp.path().join(format!("imported-{ws:?}-{gn:?}.onnx"));
        let r = bit_tools::onnx_import::import_onnx(&exported, &out, &Default::default()).unwrap();
        println!("{ws:?} WS, {gn:?} GroupNorm:\n  before {:?}\n  after  {:?}", r.ops_before, r.ops_after);
        for op in [
            "BatchNormalization",
            "ReduceMean",
            "Pow",
            "Sqrt",
            "Div",
            "Sub",
            "InstanceNormalization",
            "Shape",
            "Reshape",
            "Mul",
        ] {
            assert!(!r.ops_after.contains_key(op), "{op} left after import: {:?}", r.ops_after);
        }
        let convs = 1 + 3 * 4 + 4; // root, 3 per unit, 4 projections
        assert_eq!(r.ops_after.get("Conv"), Some(&(convs + 1)), "{:?}", r.ops_after);
        assert_eq!(r.ops_after.get("GroupNormalization"), Some(&(3 * 4 + 1)));
        if matches!(gn, Gn::Decomposed) {
            assert_eq!(r.group_norms, 13);
        }
        assert_eq!(r.classes, Some(4));
        assert_eq!(r.labels_source, "export metadata (id2label)");
        let info = ModelInfo::read(&out).unwrap();
        assert_eq!(info.labels.unwrap(), labels);
        if let Some(dir) = std::env::var_os("BIT_EXPORT_DIR") {
            // Keep the export for trying `bit-tool import` by hand.
            std::fs::copy(&exported, Path::new(&dir).join(exported.file_name().unwrap())).unwrap();
        }
        let got = logits(&out, &inputs);
        for (a, b) in got.iter().zip(&expected) {
            let d = max_abs_diff(a, b);
            println!("  max |logit difference| vs the checkpoint import: {d:.2e}");
            assert!(d <= 1e-4, "{ws:?}/{gn:?}: {d}");
        }
    }
    // The imported model quantizes like a checkpoint import, and the int8 model runs.
    let imported = tmp.path().join("imported-Chain-Decomposed.onnx");
    let int8 = tmp.path().join("imported-int8.onnx");
    let calib: Vec<std::path::PathBuf> = sample_images().into_iter().take(4).collect();
    let q = bit_tools::quantize::QuantizeOptions::default();
    let report = bit_tools::quantize::quantize_model_files(&imported, tmp.path(), calib, &int8, &q).unwrap();
    assert_eq!(report.convs, 17, "every convolution but the head");
    let int8_logits = logits(&int8, &inputs);
    assert_eq!(ModelInfo::read(&int8).unwrap().labels.unwrap(), labels);
    for l in &int8_logits {
        assert!(l.iter().all(|v| v.is_finite()) && l.len() == 4, "{l:?}");
    }
}

#[test]
fn other_graphs_import_when_tract_runs_their_ops_and_unknown_ops_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let f32t = pb::tensor_proto::DataType::Float;
    // Not BiT: conv, sigmoid, pooling, a Gemm head; one constant Mul folded on the way.
    let mut g = GraphBuilder::default();
    g.input("x", f32t, &[Ok(1), Ok(3), Ok(32), Ok(32)]);
    let w = g.f32_const("w", &[8, 3, 3, 3], &(0..216).map(|i| (i as f32 * 0.37).sin()).collect::<Vec<_>>());
    let half = g.f32_const("half", &[], &[0.5]);
    let wh = g.node("Mul", "w_half", &[&w, &half], vec![]);
    let c = g.node("Conv", "conv", &["x", &wh], vec![("kernel_shape", Attr::Ints(vec![3, 3]))]);
    let s = g.node("Sigmoid", "act", &[&c], vec![]);
    let p = g.node("GlobalAveragePool", "pool", &[&s], vec![]);
    let f = g.node("Flatten", "flat", &[&p], vec![("axis", Attr::Int(1))]);
    let fw = g.f32_const("fw", &[3, 8], &[0.1; 24]);
    g.node("Gemm", "logits", &[&f, &fw], vec![("transB", Attr::Int(1))]);
    g.output("logits", f32t, &[Ok(1), Ok(3)]);
    let model = g.into_model("other", &[]);
    let path = tmp.path().join("other.onnx");
    bit_tools::onnx::write_model(&model, &path).unwrap();
    let out = tmp.path().join("other-imported.onnx");
    let r = bit_tools::onnx_import::import_onnx(&path, &out, &Default::default()).unwrap();
    assert_eq!(r.folded, 1);
    assert!(!r.ops_after.contains_key("Mul"));
    Model::load(&out, &LoadOptions { input_size: Some(32), threads: 1, labels: None }).unwrap();

    let mut bad = model.clone();
    bad.graph.as_mut().unwrap().node[2].op_type = "FancySigmoid".into();
    let path = tmp.path().join("bad.onnx");
    bit_tools::onnx::write_model(&bad, &path).unwrap();
    let never = tmp.path().join("never.onnx");
    let e = bit_tools::onnx_import::import_onnx(&path, &never, &Default::default()).unwrap_err().to_string();
    assert!(e.contains("FancySigmoid") && e.contains("bad.onnx"), "{e}");
    assert!(!never.exists());
}

/// An int64 tensor, as a `Constant`'s value or `ConstantOfShape`'s fill.
fn i64_tensor(dims: &[i64], values: &[i64]) -> pb::TensorProto {
    pb::TensorProto {
        dims: dims.to_vec(),
        data_type: pb::tensor_proto::DataType::Int64 as i32,
        raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..Default::default()
    }
}

/// What `torch.onnx.export` (opset 11+) writes for `F.pad(x, pad)` with constant amounts
/// (`symbolic_opset11._prepare_onnx_paddings`, torch's own folding applied): `pad` in torch's
/// order (last dimension first, begin/end pairs) completed with zeros by `ConstantOfShape`,
/// reshaped to pairs, reversed by a `Slice` of step -1, transposed to begins-then-ends,
/// flattened and cast to int64: 7 nodes, their inputs `Constant` nodes. Returns the pads.
fn torch_pads(g: &mut GraphBuilder, p: &str, pad: &[i64], rank: i64) -> String {
    let c = |g: &mut GraphBuilder, name: &str, dims: &[i64], v: &[i64]| {
        let t = i64_tensor(dims, v);
        g.node("Constant", &format!("{p}/{name}"), &[], vec![("value", Attr::Tensor(Box::new(t)))])
    };
    let extension = c(g, "Constant", &[1], &[2 * rank - pad.len() as i64]);
    let amounts = c(g, "Constant_1", &[pad.len() as i64], pad);
    let zeros = g.node(
        "ConstantOfShape",
        &format!("{p}/ConstantOfShape"),
        &[&extension],
        vec![("value", Attr::Tensor(Box::new(i64_tensor(&[1], &[0]))))],
    );
    let all = g.node("Concat", &format!("{p}/Concat"), &[&amounts, &zeros], vec![("axis", Attr::Int(0))]);
    let pairs_shape = c(g, "Constant_2", &[2], &[-1, 2]);
    let pairs = g.node("Reshape", &format!("{p}/Reshape"), &[&all, &pairs_shape], vec![]);
    let axes = c(g, "Constant_3", &[1], &[0]);
    let starts = c(g, "Constant_4", &[1], &[-1]);
    let ends = c(g, "Constant_5", &[1], &[-i64::MAX]);
    let steps = c(g, "Constant_6", &[1], &[-1]);
    let flipped = g.node("Slice", &format!("{p}/Slice"), &[&pairs, &starts, &ends, &axes, &steps], vec![]);
    let t =
        g.node("Transpose", &format!("{p}/Transpose"), &[&flipped], vec![("perm", Attr::Ints(vec![1, 0]))]);
    let flat_shape = c(g, "Constant_7", &[1], &[-1]);
    let flat = g.node("Reshape", &format!("{p}/Reshape_1"), &[&t, &flat_shape], vec![]);
    g.node("Cast", &format!("{p}/Cast"), &[&flat], vec![("to", Attr::Int(7))])
}

/// Logits of a model through tract (no rewrites, no contract needed) on `x`.
fn tract_logits(model: &pb::ModelProto, size: u32, x: &[f32]) -> Vec<f32> {
    let options = bit_engine::Options { rewrite: false, ..bit_engine::Options::new(size) };
    let mut session = bit_engine::Session::build(model.clone(), &options).unwrap();
    let out = session.run_f32(x).unwrap();
    bit_engine::session::values(&out[0]).unwrap()
}

fn ops_of(model: &pb::ModelProto) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for n in &model.graph.as_ref().unwrap().node {
        *m.entry(n.op_type.clone()).or_default() += 1;
    }
    m
}

/// The stem's `Pad` reads an initializer: its int64 values.
fn pads_of(model: &pb::ModelProto, pad_node: &str) -> Vec<i64> {
    let graph = model.graph.as_ref().unwrap();
    let pad = graph.node.iter().find(|n| n.name == pad_node).expect("the Pad node");
    let t = graph.initializer.iter().find(|t| t.name == pad.input[1]).unwrap_or_else(|| {
        panic!("pads '{}' are not an initializer; nodes: {:?}", pad.input[1], ops_of(model))
    });
    assert_eq!(t.data_type, pb::tensor_proto::DataType::Int64 as i32, "pads keep int64");
    bit_engine::proto::tensor_i64(t).unwrap()
}

#[test]
fn torch_pad_chain_of_the_stem_folds_into_the_pads_initializer() {
    let tmp = tempfile::tempdir().unwrap();
    let f32t = pb::tensor_proto::DataType::Float;
    let mut g = GraphBuilder::default();
    g.input("pixel_values", f32t, &[Ok(1), Ok(3), Ok(24), Ok(24)]);
    // Distinct amounts, so that a wrong order shows: width 1 | 2, height 3 | 4.
    let pads = torch_pads(&mut g, "/bit/embedder/convolution/pad", &[1, 2, 3, 4], 4);
    let zero = g.node(
        "Constant",
        "/bit/embedder/convolution/pad/Constant_8",
        &[],
        vec![(
            "value",
            Attr::Tensor(Box::new(pb::TensorProto {
                data_type: f32t as i32,
                float_data: vec![0.0],
                ..Default::default()
            })),
        )],
    );
    let padded = g.node("Pad", "stem/pad", &["pixel_values", &pads, &zero], vec![]);
    let w: Vec<f32> = (0..8 * 3 * 49).map(|i| ((i * 37 % 101) as f32 / 50.0 - 1.0) * 0.2).collect();
    let w = g.f32_const("stem.conv.weight", &[8, 3, 7, 7], &w);
    let conv = g.node(
        "Conv",
        "stem/conv",
        &[&padded, &w],
        vec![("kernel_shape", Attr::Ints(vec![7, 7])), ("strides", Attr::Ints(vec![2, 2]))],
    );
    let pool = g.node(
        "MaxPool",
        "stem/pool",
        &[&conv],
        vec![("kernel_shape", Attr::Ints(vec![3, 3])), ("strides", Attr::Ints(vec![2, 2]))],
    );
    let gap = g.node("GlobalAveragePool", "head/pool", &[&pool], vec![]);
    let flat = g.node("Flatten", "head/flat", &[&gap], vec![("axis", Attr::Int(1))]);
    let fw: Vec<f32> = (0..5 * 8).map(|i| (i as f32 * 0.7).sin()).collect();
    let fw = g.f32_const("head.fc.weight", &[5, 8], &fw);
    g.node("Gemm", "logits", &[&flat, &fw], vec![("transB", Attr::Int(1))]);
    g.output("logits", f32t, &[Ok(1), Ok(5)]);
    let mut model = g.into_model("torch_jit", &[]);
    model.opset_import[0].version = 17;
    let path = tmp.path().join("pad-chain.onnx");
    bit_tools::onnx::write_model(&model, &path).unwrap();
    let out = tmp.path().join("pad-chain-imported.onnx");
    let r = bit_tools::onnx_import::import_onnx(&path, &out, &Default::default()).unwrap();
    println!("before {:?}\nafter  {:?}", r.ops_before, r.ops_after);
    for op in ["ConstantOfShape", "Concat", "Reshape", "Slice", "Transpose", "Cast", "Constant"] {
        assert!(r.ops_before.contains_key(op), "{op} is in the export");
        assert!(!r.ops_after.contains_key(op), "{op} left after import: {:?}", r.ops_after);
    }
    assert_eq!(r.folded, 16, "7 chain nodes and 9 Constants");
    assert_eq!(r.folded_by_tract, 3, "ConstantOfShape, Slice, Transpose");
    assert!(r.constant_left.is_empty(), "{:?}", r.constant_left);
    let imported = bit_engine::proto::read(&out).unwrap();
    // ONNX order: begins of N, C, H, W, then ends.
    assert_eq!(pads_of(&imported, "stem/pad"), [0, 0, 3, 1, 0, 0, 4, 2]);

    let x: Vec<f32> = (0..3 * 24 * 24).map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0).collect();
    let (expected, got) = (tract_logits(&model, 24, &x), tract_logits(&imported, 24, &x));
    let d = max_abs_diff(&got, &expected);
    println!("logits {got:?}, max |difference| from the unfolded export {d:e}");
    assert!(d <= 1e-6, "{got:?} vs {expected:?}");
}

/// tests/data/transformers-bit-tiny.onnx: `scripts/torch-export.py --tiny`, a random-weight
/// transformers `BitForImageClassification` (preactivation, SAME padding, dynamic stem
/// padding, 8-32 channels) exported by `torch.onnx.export` (TorchScript, opset 17), and the
/// logits of torch and of ONNX Runtime on the script's input formula beside it. (tract itself
/// cannot run the export unchanged: its weight standardization is `BatchNormalization` in
/// training mode, with 3 outputs.)
#[test]
fn a_transformers_export_by_torch_imports_and_gives_torchs_logits() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("data");
    let export = data.join("transformers-bit-tiny.onnx");
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(data.join("transformers-bit-tiny.json")).unwrap())
            .unwrap();
    let size = expected["size"].as_u64().unwrap() as u32;
    let logits = |key: &str| -> Vec<f32> {
        expected[key].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect()
    };
    let (torch, ort) = (logits("torch_logits"), logits("onnxruntime_logits"));
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("imported.onnx");
    let r = bit_tools::onnx_import::import_onnx(&export, &out, &Default::default()).unwrap();
    println!(
        "before {:?}\nafter  {:?}\nfolded {} ({} by tract)",
        r.ops_before, r.ops_after, r.folded, r.folded_by_tract
    );
    assert!(r.constant_left.is_empty(), "{:?}", r.constant_left);
    for op in ["BatchNormalization", "ReduceMean", "InstanceNormalization", "Constant", "Identity", "Mul"] {
        assert!(!r.ops_after.contains_key(op), "{op} left after import: {:?}", r.ops_after);
    }
    // The stem convolution's pad chain is constant and goes; the four other Pads (stem
    // pool, strided 3x3 convs) compute their amounts from Shape of an activation, which
    // tract folds at load once the input size is fixed.
    assert_eq!(r.ops_before.get("ConstantOfShape"), Some(&5));
    assert_eq!(r.ops_after.get("ConstantOfShape"), Some(&4));
    assert_eq!(r.folded_by_tract, 3);
    let imported = bit_engine::proto::read(&out).unwrap();
    // SAME for a 7x7/2 kernel on 64: 5 in all, 2 before and 3 after on each side.
    assert_eq!(pads_of(&imported, "/bit/embedder/convolution/pad/Pad"), [0, 0, 2, 2, 0, 0, 3, 3]);

    let x: Vec<f32> = (0..3 * size as usize * size as usize)
        .map(|i| ((i * 7919) % 1000) as f64 / 500.0 - 1.0)
        .map(|v| v as f32)
        .collect();
    let mut model =
        Model::load(&out, &LoadOptions { input_size: Some(size), threads: 1, labels: None }).unwrap();
    let got = model.logits(&x).unwrap();
    let (d_torch, d_ort) = (max_abs_diff(&got, &torch), max_abs_diff(&got, &ort));
    println!("max |logit difference|: {d_torch:.2e} vs torch, {d_ort:.2e} vs ONNX Runtime on the export");
    assert!(d_torch <= 1e-4, "{got:?} vs torch {torch:?}");
    assert!(d_ort <= 1e-4, "{got:?} vs ONNX Runtime {ort:?}");
}
