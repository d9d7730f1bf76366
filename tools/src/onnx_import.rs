//! `bit-tool import MODEL.onnx`: fine-tuned BiT models as users export them (timm,
//! transformers, their own PyTorch), brought to the same form as a checkpoint import.
//!
//! Such exports compute weight standardization on every run, from the raw kernels: a
//! `BatchNormalization` in training mode over the kernel reshaped to `[1, out, -1]` (timm's
//! `StdConv2d`, transformers' `WeightStandardizedConv2d`), or a `ReduceMean`/`Sub`/`Pow`/
//! `Sqrt`/`Div` chain. And older opsets spell GroupNorm as `Reshape -> InstanceNormalization
//! -> Reshape -> Mul -> Add` with `[C,1,1]` constants, a slow path in tract. Here:
//!
//! 1. **Constant folding**: every node whose inputs are all initializers or constants (the
//!    weight standardization, shape arithmetic) is evaluated once, in f64, by a small
//!    evaluator written for these ops ([`EVALUATED`]), and replaced by an initializer.
//! 2. **GroupNorm**: each decomposed GroupNorm becomes one `GroupNormalization` node
//!    (opset 21, per-channel scale and bias: the form `bit_graph` writes and the runtime
//!    fuses).
//! 3. Every remaining op must be one tract's ONNX loader knows; the error names those that
//!    are not. The model gets the metadata contract (labels from `--labels`, the export's
//!    metadata, or ILSVRC-2012 for 1000 classes; preprocessing from `--contract`, or BiT's
//!    default at the export's input size) and is written atomically.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use tract_onnx::pb;

use crate::ImportOptions;
use crate::contract::ContractChoice;
use crate::error::ImportError;
use crate::onnx::write_model;
use crate::probe::read_proto;

/// Ops the constant folder evaluates.
pub const EVALUATED: &[&str] = &[
    "Constant",
    "Identity",
    "Cast",
    "Reshape",
    "Flatten",
    "Shape",
    "Gather",
    "Unsqueeze",
    "Squeeze",
    "Concat",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Pow",
    "Sqrt",
    "Reciprocal",
    "Neg",
    "ReduceMean",
    "BatchNormalization",
];

/// What [`import_onnx`] did.
#[derive(Clone, Debug)]
pub struct OnnxImportReport {
    /// Op counts of the export.
    pub ops_before: BTreeMap<String, usize>,
    /// Op counts of the written model.
    pub ops_after: BTreeMap<String, usize>,
    /// Nodes evaluated at import and replaced by initializers.
    pub folded: usize,
    /// Decomposed GroupNorms rewritten to `GroupNormalization`.
    pub group_norms: usize,
    /// Classes (the output's last dimension), if static.
    pub classes: Option<usize>,
    /// Where the labels came from.
    pub labels_source: &'static str,
    /// The preprocessing contract written.
    pub preprocess: bit_runtime::Preprocess,
}

/// A constant tensor: f64 or i64 values, row-major, and its shape.
#[derive(Clone, Debug, PartialEq)]
enum Val {
    F(Vec<f64>, Vec<usize>),
    I(Vec<i64>, Vec<usize>),
}

impl Val {
    fn shape(&self) -> &[usize] {
        match self {
            Val::F(_, s) | Val::I(_, s) => s,
        }
    }
    fn floats(&self) -> Vec<f64> {
        match self {
            Val::F(v, _) => v.clone(),
            Val::I(v, _) => v.iter().map(|&x| x as f64).collect(),
        }
    }
    fn ints(&self) -> Vec<i64> {
        match self {
            Val::I(v, _) => v.clone(),
            Val::F(v, _) => v.iter().map(|&x| x as i64).collect(),
        }
    }
    fn reshaped(self, shape: Vec<usize>) -> Val {
        match self {
            Val::F(v, _) => Val::F(v, shape),
            Val::I(v, _) => Val::I(v, shape),
        }
    }
}

fn err(path: &Path, key: &str, detail: impl Into<String>) -> ImportError {
    ImportError::Unsupported { path: path.to_owned(), key: key.to_owned(), detail: detail.into() }
}

/// Reads an initializer or `Constant` tensor.
fn read_tensor(path: &Path, t: &pb::TensorProto) -> Result<Val, ImportError> {
    use pb::tensor_proto::DataType as D;
    let shape: Vec<usize> = t.dims.iter().map(|&d| d.max(0) as usize).collect();
    let n: usize = shape.iter().product();
    if !t.external_data.is_empty() {
        return Err(err(
            path,
            &t.name,
            "external tensor data: re-export with the weights inside the .onnx file",
        ));
    }
    let raw = &t.raw_data;
    let val = match D::try_from(t.data_type).unwrap_or(D::Undefined) {
        D::Float if !raw.is_empty() => Val::F(
            raw.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().expect("4")) as f64).collect(),
            shape.clone(),
        ),
        D::Float => Val::F(t.float_data.iter().map(|&x| x as f64).collect(), shape.clone()),
        D::Double if !raw.is_empty() => Val::F(
            raw.chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().expect("8"))).collect(),
            shape.clone(),
        ),
        D::Double => Val::F(t.double_data.clone(), shape.clone()),
        D::Int64 if !raw.is_empty() => Val::I(
            raw.chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().expect("8"))).collect(),
            shape.clone(),
        ),
        D::Int64 => Val::I(t.int64_data.clone(), shape.clone()),
        D::Int32 if !raw.is_empty() => Val::I(
            raw.chunks_exact(4).map(|b| i32::from_le_bytes(b.try_into().expect("4")) as i64).collect(),
            shape.clone(),
        ),
        D::Int32 => Val::I(t.int32_data.iter().map(|&x| x as i64).collect(), shape.clone()),
        other => return Err(err(path, &t.name, format!("tensor type {other:?} is not supported"))),
    };
    let len = match &val {
        Val::F(v, _) => v.len(),
        Val::I(v, _) => v.len(),
    };
    if len != n {
        return Err(err(path, &t.name, format!("{len} values for shape {shape:?}")));
    }
    Ok(val)
}

fn write_tensor(name: &str, v: &Val) -> pb::TensorProto {
    let dims = v.shape().iter().map(|&d| d as i64).collect();
    match v {
        Val::F(x, _) => pb::TensorProto {
            name: name.to_owned(),
            dims,
            data_type: pb::tensor_proto::DataType::Float as i32,
            raw_data: x.iter().flat_map(|&f| (f as f32).to_le_bytes()).collect(),
            ..Default::default()
        },
        Val::I(x, _) => pb::TensorProto {
            name: name.to_owned(),
            dims,
            data_type: pb::tensor_proto::DataType::Int64 as i32,
            raw_data: x.iter().flat_map(|i| i.to_le_bytes()).collect(),
            ..Default::default()
        },
    }
}

fn attr<'a>(node: &'a pb::NodeProto, name: &str) -> Option<&'a pb::AttributeProto> {
    node.attribute.iter().find(|a| a.name == name)
}

fn attr_i(node: &pb::NodeProto, name: &str, default: i64) -> i64 {
    attr(node, name).map_or(default, |a| a.i)
}

fn attr_f(node: &pb::NodeProto, name: &str, default: f32) -> f32 {
    attr(node, name).map_or(default, |a| a.f)
}

fn attr_ints(node: &pb::NodeProto, name: &str) -> Option<Vec<i64>> {
    attr(node, name).map(|a| a.ints.clone())
}

fn axis(a: i64, rank: usize) -> usize {
    if a < 0 { (a + rank as i64).max(0) as usize } else { a as usize }
}

fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// Numpy broadcasting of two shapes.
fn broadcast(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let r = a.len().max(b.len());
    (0..r)
        .map(|i| {
            let x = if i + a.len() >= r { a[i + a.len() - r] } else { 1 };
            let y = if i + b.len() >= r { b[i + b.len() - r] } else { 1 };
            if x == y || y == 1 {
                Some(x)
            } else if x == 1 {
                Some(y)
            } else {
                None
            }
        })
        .collect()
}

/// Index into a broadcast operand of shape `s` for flat output index `i` of shape `out`.
fn source_index(i: usize, out: &[usize], out_strides: &[usize], s: &[usize]) -> usize {
    let off = out.len() - s.len();
    let st = strides(s);
    (0..s.len()).map(|d| if s[d] == 1 { 0 } else { (i / out_strides[d + off]) % out[d + off] * st[d] }).sum()
}

fn binary(a: &Val, b: &Val, op: &str) -> Option<Val> {
    let out = broadcast(a.shape(), b.shape())?;
    let n: usize = out.iter().product();
    let os = strides(&out);
    let (sa, sb) = (a.shape().to_vec(), b.shape().to_vec());
    if let (Val::I(x, _), Val::I(y, _)) = (a, b) {
        let f = |p: i64, q: i64| match op {
            "Add" => Some(p + q),
            "Sub" => Some(p - q),
            "Mul" => Some(p * q),
            "Div" if q != 0 => Some(p / q),
            _ => None,
        };
        let v: Option<Vec<i64>> = (0..n)
            .map(|i| f(x[source_index(i, &out, &os, &sa)], y[source_index(i, &out, &os, &sb)]))
            .collect();
        return v.map(|v| Val::I(v, out));
    }
    let (x, y) = (a.floats(), b.floats());
    let f = |p: f64, q: f64| match op {
        "Add" => p + q,
        "Sub" => p - q,
        "Mul" => p * q,
        "Div" => p / q,
        _ => p.powf(q),
    };
    Some(Val::F(
        (0..n).map(|i| f(x[source_index(i, &out, &os, &sa)], y[source_index(i, &out, &os, &sb)])).collect(),
        out,
    ))
}

/// Mean over `axes` of `x`, keeping them as size 1 if `keep`.
fn reduce_mean(x: &[f64], shape: &[usize], axes: &[usize], keep: bool) -> (Vec<f64>, Vec<usize>) {
    let kept: Vec<usize> =
        shape.iter().enumerate().map(|(d, &s)| if axes.contains(&d) { 1 } else { s }).collect();
    let n: usize = kept.iter().product();
    let count: usize = axes.iter().map(|&a| shape[a]).product::<usize>().max(1);
    let mut sum = vec![0f64; n];
    let (st, ks) = (strides(shape), strides(&kept));
    for (i, v) in x.iter().enumerate() {
        let j: usize = (0..shape.len())
            .map(|d| if axes.contains(&d) { 0 } else { (i / st[d]) % shape[d] * ks[d] })
            .sum();
        sum[j] += v;
    }
    sum.iter_mut().for_each(|s| *s /= count as f64);
    let out = if keep {
        kept
    } else {
        shape.iter().enumerate().filter(|(d, _)| !axes.contains(d)).map(|(_, &s)| s).collect()
    };
    (sum, out)
}

/// Evaluates one node on constant inputs; `None` if the op or this use of it is not
/// covered (the node then stays in the graph).
fn eval(node: &pb::NodeProto, inputs: &[Option<&Val>], path: &Path) -> Result<Option<Vec<Val>>, ImportError> {
    let get = |i: usize| inputs.get(i).copied().flatten();
    let x = get(0);
    let one = |v: Val| Ok(Some(vec![v]));
    match node.op_type.as_str() {
        "Constant" => {
            if let Some(t) = attr(node, "value").and_then(|a| a.t.as_ref()) {
                return one(read_tensor(path, t)?);
            }
            if let Some(a) = attr(node, "value_float") {
                return one(Val::F(vec![a.f as f64], vec![]));
            }
            if let Some(a) = attr(node, "value_int") {
                return one(Val::I(vec![a.i], vec![]));
            }
            if let Some(a) = attr(node, "value_ints") {
                return one(Val::I(a.ints.clone(), vec![a.ints.len()]));
            }
            if let Some(a) = attr(node, "value_floats") {
                return one(Val::F(a.floats.iter().map(|&f| f as f64).collect(), vec![a.floats.len()]));
            }
            Ok(None)
        }
        "Identity" => one(x.cloned().expect("input")),
        "Cast" => {
            let x = x.expect("input");
            match attr_i(node, "to", 0) {
                1 | 10 | 11 => one(Val::F(x.floats(), x.shape().to_vec())),
                6 | 7 => one(Val::I(x.ints(), x.shape().to_vec())),
                _ => Ok(None),
            }
        }
        "Reshape" | "Flatten" => {
            let x = x.expect("input");
            let n: usize = x.shape().iter().product();
            let shape = if node.op_type == "Flatten" {
                let a = axis(attr_i(node, "axis", 1), x.shape().len());
                vec![x.shape()[..a].iter().product(), x.shape()[a..].iter().product()]
            } else {
                let Some(spec) = get(1) else { return Ok(None) };
                let spec = spec.ints();
                let mut s: Vec<usize> = spec
                    .iter()
                    .enumerate()
                    .map(|(i, &d)| {
                        if d == 0 && attr_i(node, "allowzero", 0) == 0 {
                            x.shape()[i]
                        } else {
                            d.max(0) as usize
                        }
                    })
                    .collect();
                if let Some(p) = spec.iter().position(|&d| d == -1) {
                    let known: usize =
                        s.iter().enumerate().filter(|(i, _)| *i != p).map(|(_, &d)| d).product();
                    s[p] = n.checked_div(known).unwrap_or(0);
                }
                s
            };
            if shape.iter().product::<usize>() != n {
                return Err(err(path, &node.name, format!("cannot reshape {:?} to {shape:?}", x.shape())));
            }
            one(x.clone().reshaped(shape))
        }
        "Shape" => {
            let s = x.expect("input").shape();
            let r = s.len() as i64;
            let clip = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
            let (a, b) = (clip(attr_i(node, "start", 0)), clip(attr_i(node, "end", r)));
            let v: Vec<i64> = s[a..b.max(a)].iter().map(|&d| d as i64).collect();
            let n = v.len();
            one(Val::I(v, vec![n]))
        }
        "Gather" => {
            let (x, idx) = (x.expect("input"), get(1).expect("indices"));
            if axis(attr_i(node, "axis", 0), x.shape().len()) != 0 {
                return Ok(None);
            }
            let rows = x.shape().first().copied().unwrap_or(0);
            let row: usize = x.shape()[1..].iter().product();
            let mut shape: Vec<usize> = idx.shape().to_vec();
            shape.extend_from_slice(&x.shape()[1..]);
            let picks: Vec<usize> = idx
                .ints()
                .iter()
                .map(|&i| if i < 0 { (i + rows as i64) as usize } else { i as usize })
                .collect();
            if picks.iter().any(|&p| p >= rows) {
                return Err(err(path, &node.name, "Gather index out of range"));
            }
            match x {
                Val::F(v, _) => one(Val::F(
                    picks.iter().flat_map(|&p| v[p * row..(p + 1) * row].to_vec()).collect(),
                    shape,
                )),
                Val::I(v, _) => one(Val::I(
                    picks.iter().flat_map(|&p| v[p * row..(p + 1) * row].to_vec()).collect(),
                    shape,
                )),
            }
        }
        "Unsqueeze" | "Squeeze" => {
            let x = x.expect("input");
            let axes = match get(1) {
                Some(a) => Some(a.ints()),
                None => attr_ints(node, "axes"),
            };
            let mut shape = x.shape().to_vec();
            if node.op_type == "Unsqueeze" {
                let Some(axes) = axes else { return Ok(None) };
                let r = shape.len() + axes.len();
                let mut axes: Vec<usize> = axes.iter().map(|&a| axis(a, r)).collect();
                axes.sort();
                for a in axes {
                    shape.insert(a.min(shape.len()), 1);
                }
            } else {
                let r = shape.len();
                let axes: Vec<usize> = match axes {
                    Some(a) => a.iter().map(|&a| axis(a, r)).collect(),
                    None => (0..r).filter(|&d| shape[d] == 1).collect(),
                };
                shape =
                    shape.iter().enumerate().filter(|(d, _)| !axes.contains(d)).map(|(_, &s)| s).collect();
            }
            one(x.clone().reshaped(shape))
        }
        "Concat" => {
            let vals: Vec<&Val> = inputs.iter().flatten().copied().collect();
            let r = vals[0].shape().len();
            let a = axis(attr_i(node, "axis", 0), r);
            if a != 0 || vals.iter().any(|v| v.shape().len() != 1) {
                return Ok(None);
            }
            if vals.iter().all(|v| matches!(v, Val::I(..))) {
                let v: Vec<i64> = vals.iter().flat_map(|v| v.ints()).collect();
                let n = v.len();
                one(Val::I(v, vec![n]))
            } else {
                let v: Vec<f64> = vals.iter().flat_map(|v| v.floats()).collect();
                let n = v.len();
                one(Val::F(v, vec![n]))
            }
        }
        "Add" | "Sub" | "Mul" | "Div" | "Pow" => {
            let r = binary(x.expect("a"), get(1).expect("b"), &node.op_type).ok_or_else(|| {
                err(path, &node.name, format!("{} of shapes that do not broadcast", node.op_type))
            })?;
            one(r)
        }
        "Sqrt" | "Reciprocal" | "Neg" => {
            let x = x.expect("input");
            let f = |v: f64| match node.op_type.as_str() {
                "Sqrt" => v.sqrt(),
                "Reciprocal" => 1.0 / v,
                _ => -v,
            };
            one(Val::F(x.floats().into_iter().map(f).collect(), x.shape().to_vec()))
        }
        "ReduceMean" => {
            let x = x.expect("input");
            let r = x.shape().len();
            let axes: Vec<usize> = match get(1).map(|a| a.ints()).or_else(|| attr_ints(node, "axes")) {
                Some(a) if !a.is_empty() => a.iter().map(|&a| axis(a, r)).collect(),
                _ if attr_i(node, "noop_with_empty_axes", 0) == 1 => return one(x.clone()),
                _ => (0..r).collect(),
            };
            let (v, s) = reduce_mean(&x.floats(), x.shape(), &axes, attr_i(node, "keepdims", 1) == 1);
            one(Val::F(v, s))
        }
        "BatchNormalization" => {
            let x = x.expect("input");
            let (scale, bias) = (get(1).expect("scale").floats(), get(2).expect("bias").floats());
            let shape = x.shape().to_vec();
            if shape.len() < 2 {
                return Ok(None);
            }
            let c = shape[1];
            let eps = attr_f(node, "epsilon", 1e-5) as f64;
            let training = attr_i(node, "training_mode", 0) == 1;
            let xs = x.floats();
            let axes: Vec<usize> = (0..shape.len()).filter(|&d| d != 1).collect();
            let (mean, var) = if training {
                let (m, _) = reduce_mean(&xs, &shape, &axes, true);
                let inner: usize = shape[2..].iter().product();
                let sq: Vec<f64> =
                    xs.iter().enumerate().map(|(i, v)| (v - m[(i / inner) % c]).powi(2)).collect();
                let (v, _) = reduce_mean(&sq, &shape, &axes, true);
                (m, v)
            } else {
                (get(3).expect("mean").floats(), get(4).expect("var").floats())
            };
            let inner: usize = shape[2..].iter().product();
            let y: Vec<f64> = xs
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    let k = (i / inner) % c;
                    (v - mean[k]) / (var[k] + eps).sqrt() * scale[k] + bias[k]
                })
                .collect();
            let mut outs = vec![Val::F(y, shape)];
            if training && node.output.len() > 1 {
                // running_mean/var = input * momentum + batch statistic * (1 - momentum).
                let momentum = attr_f(node, "momentum", 0.9) as f64;
                let (rm, rv) = (get(3).expect("mean").floats(), get(4).expect("var").floats());
                outs.push(Val::F(
                    rm.iter().zip(&mean).map(|(r, m)| r * momentum + m * (1.0 - momentum)).collect(),
                    vec![c],
                ));
                outs.push(Val::F(
                    rv.iter().zip(&var).map(|(r, v)| r * momentum + v * (1.0 - momentum)).collect(),
                    vec![c],
                ));
            }
            Ok(Some(outs))
        }
        _ => Ok(None),
    }
}

fn count_ops(graph: &pb::GraphProto) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for n in &graph.node {
        *m.entry(n.op_type.clone()).or_default() += 1;
    }
    m
}

/// Folds constant subgraphs; returns the number of nodes evaluated.
fn fold_constants(path: &Path, graph: &mut pb::GraphProto) -> Result<usize, ImportError> {
    let mut consts: HashMap<String, Val> = HashMap::new();
    for t in &graph.initializer {
        consts.insert(t.name.clone(), read_tensor(path, t)?);
    }
    let mut kept = Vec::new();
    let mut folded = 0;
    for node in std::mem::take(&mut graph.node) {
        let all_const = node.input.iter().all(|i| i.is_empty() || consts.contains_key(i));
        if all_const && EVALUATED.contains(&node.op_type.as_str()) {
            let inputs: Vec<Option<&Val>> =
                node.input.iter().map(|i| if i.is_empty() { None } else { consts.get(i) }).collect();
            if let Some(outs) = eval(&node, &inputs, path)? {
                for (name, v) in node.output.iter().zip(outs) {
                    if !name.is_empty() {
                        consts.insert(name.clone(), v);
                    }
                }
                folded += 1;
                continue;
            }
        }
        kept.push(node);
    }
    graph.node = kept;
    // Initializers: exactly the constants the remaining graph reads.
    let mut used: Vec<String> = Vec::new();
    let mut seen = HashSet::new();
    for n in &graph.node {
        for i in &n.input {
            if consts.contains_key(i) && seen.insert(i.clone()) {
                used.push(i.clone());
            }
        }
    }
    for o in &graph.output {
        if consts.contains_key(&o.name) && seen.insert(o.name.clone()) {
            used.push(o.name.clone());
        }
    }
    graph.initializer = used.iter().map(|n| write_tensor(n, &consts[n])).collect();
    // Old exporters list initializers as graph inputs too.
    graph.input.retain(|i| !consts.contains_key(&i.name));
    Ok(folded)
}

fn initializer<'a>(graph: &'a pb::GraphProto, name: &str) -> Option<&'a pb::TensorProto> {
    graph.initializer.iter().find(|t| t.name == name)
}

/// Rewrites `Reshape -> InstanceNormalization -> Reshape -> Mul -> Add` to
/// `GroupNormalization`; returns how many.
fn rewrite_group_norms(path: &Path, graph: &mut pb::GraphProto) -> Result<usize, ImportError> {
    let mut rewritten = 0;
    loop {
        let mut consumers: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, n) in graph.node.iter().enumerate() {
            for x in &n.input {
                consumers.entry(x.as_str()).or_default().push(i);
            }
        }
        let only = |name: &str| match consumers.get(name).map(Vec::as_slice) {
            Some([j]) => Some(*j),
            _ => None,
        };
        let const_val = |name: &str| initializer(graph, name).map(|t| read_tensor(path, t)).transpose();
        let mut found = None;
        for (i1, n1) in graph.node.iter().enumerate() {
            if n1.op_type != "Reshape" {
                continue;
            }
            let Some(i2) = only(&n1.output[0]) else { continue };
            let n2 = &graph.node[i2];
            if n2.op_type != "InstanceNormalization" || n2.input[0] != n1.output[0] {
                continue;
            }
            let Some(i3) = only(&n2.output[0]) else { continue };
            let n3 = &graph.node[i3];
            let Some(i4) = only(&n3.output[0]) else { continue };
            let n4 = &graph.node[i4];
            let Some(i5) = only(&n4.output[0]) else { continue };
            let n5 = &graph.node[i5];
            if n3.op_type != "Reshape" || n4.op_type != "Mul" || n5.op_type != "Add" {
                continue;
            }
            let (Some(s), Some(b)) = (const_val(&n2.input[1])?, const_val(&n2.input[2])?) else { continue };
            if s.floats().iter().any(|&v| v != 1.0) || b.floats().iter().any(|&v| v != 0.0) {
                continue;
            }
            let groups = s.floats().len();
            let other = |n: &pb::NodeProto, x: &str| n.input.iter().find(|i| *i != x).cloned();
            let (Some(gamma), Some(beta)) = (other(n4, &n3.output[0]), other(n5, &n4.output[0])) else {
                continue;
            };
            let (Some(g), Some(bt)) = (const_val(&gamma)?, const_val(&beta)?) else { continue };
            let c = g.floats().len();
            let per_channel = |v: &Val| {
                let s = v.shape();
                v.floats().len() == c && s.iter().filter(|&&d| d != 1).count() <= 1 && s.len() >= 3
            };
            if !per_channel(&g) || !per_channel(&bt) || bt.floats().len() != c || c % groups != 0 {
                continue;
            }
            // The second Reshape's shape, if computed by a Shape of the input, goes too.
            let shape_node = graph.node.iter().position(|n| {
                n.op_type == "Shape" && n.output[0] == n3.input[1] && only(&n.output[0]) == Some(i3)
            });
            found = Some((i1, i2, i3, i4, i5, shape_node, groups, attr_f(n2, "epsilon", 1e-5), g, bt));
            break;
        }
        let Some((i1, i2, i3, i4, i5, shape_node, groups, eps, g, bt)) = found else { break };
        let x = graph.node[i1].input[0].clone();
        let out = graph.node[i5].output[0].clone();
        let name = format!("{}_groupnorm", graph.node[i2].name);
        let c = g.floats().len();
        let scale = format!("{name}/scale");
        let bias = format!("{name}/bias");
        graph.initializer.push(write_tensor(&scale, &Val::F(g.floats(), vec![c])));
        graph.initializer.push(write_tensor(&bias, &Val::F(bt.floats(), vec![c])));
        let gn = pb::NodeProto {
            name,
            op_type: "GroupNormalization".into(),
            input: vec![x, scale, bias],
            output: vec![out],
            attribute: vec![
                pb::AttributeProto {
                    name: "num_groups".into(),
                    r#type: pb::attribute_proto::AttributeType::Int as i32,
                    i: groups as i64,
                    ..Default::default()
                },
                pb::AttributeProto {
                    name: "epsilon".into(),
                    r#type: pb::attribute_proto::AttributeType::Float as i32,
                    f: eps,
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let mut drop: Vec<usize> = vec![i1, i2, i3, i4, i5];
        drop.extend(shape_node);
        drop.sort();
        graph.node[i5] = gn;
        drop.retain(|&i| i != i5);
        for i in drop.into_iter().rev() {
            graph.node.remove(i);
        }
        rewritten += 1;
    }
    Ok(rewritten)
}

/// Imports the ONNX export at `path` and writes the model to `out`.
pub fn import_onnx(
    path: &Path,
    out: &Path,
    options: &ImportOptions,
) -> Result<OnnxImportReport, ImportError> {
    use bit_runtime::contract::*;
    let mut proto = read_proto(path)?;
    let graph = proto.graph.as_mut().ok_or_else(|| err(path, "graph", "the file has no graph"))?;
    let ops_before = count_ops(graph);
    let folded = fold_constants(path, graph)?;
    let group_norms = rewrite_group_norms(path, graph)?;
    // Initializers no longer read (the decomposed GroupNorms' constants).
    let read: HashSet<String> = graph.node.iter().flat_map(|n| n.input.iter().cloned()).collect();
    graph.initializer.retain(|t| read.contains(&t.name));
    let ops_after = count_ops(graph);

    let known = bit_engine::ops::onnx();
    let unsupported: Vec<&String> =
        ops_after.keys().filter(|op| !known.op_register.0.contains_key(*op)).collect();
    if !unsupported.is_empty() {
        return Err(err(path, "graph", format!("ops tract cannot run: {unsupported:?}")));
    }
    if graph.input.len() != 1 {
        let names: Vec<&str> = graph.input.iter().map(|i| i.name.as_str()).collect();
        return Err(err(path, "graph.input", format!("expected one image input, found {names:?}")));
    }
    let dims = |v: &pb::ValueInfoProto| -> Vec<Option<i64>> {
        match v.r#type.as_ref().and_then(|t| t.value.as_ref()) {
            Some(pb::type_proto::Value::TensorType(t)) => t
                .shape
                .as_ref()
                .map(|s| {
                    s.dim
                        .iter()
                        .map(|d| match d.value {
                            Some(pb::tensor_shape_proto::dimension::Value::DimValue(v)) => Some(v),
                            _ => None,
                        })
                        .collect()
                })
                .unwrap_or_default(),
            _ => Vec::new(),
        }
    };
    let input_dims = dims(&graph.input[0]);
    let classes = graph.output.first().and_then(|o| dims(o).last().copied().flatten()).map(|c| c as usize);
    // GroupNormalization with per-channel scale is opset 21.
    if group_norms > 0
        && let Some(op) = proto.opset_import.iter_mut().find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
    {
        if op.version < 21 && ops_before.contains_key("GroupNormalization") {
            return Err(err(
                path,
                "opset_import",
                "native GroupNormalization below opset 21 next to decomposed ones",
            ));
        }
        op.version = op.version.max(21);
    }

    let meta = |key: &str| proto.metadata_props.iter().find(|m| m.key == key).map(|m| m.value.clone());
    let from_meta = |key: &str| -> Option<Vec<String>> {
        let v: serde_json::Value = serde_json::from_str(&meta(key)?).ok()?;
        match v {
            serde_json::Value::Array(a) => a.iter().map(|x| x.as_str().map(String::from)).collect(),
            serde_json::Value::Object(m) => {
                let mut pairs: Vec<(usize, String)> =
                    m.iter().filter_map(|(k, v)| Some((k.parse().ok()?, v.as_str()?.to_owned()))).collect();
                pairs.sort();
                pairs
                    .iter()
                    .enumerate()
                    .all(|(i, (k, _))| i == *k)
                    .then(|| pairs.into_iter().map(|(_, v)| v).collect())
            }
            _ => None,
        }
    };
    let (labels, labels_source) = match (&options.labels, from_meta(META_LABELS), from_meta("id2label")) {
        (Some(l), _, _) => (Some(l.clone()), "label file"),
        (None, Some(l), _) => (Some(l), "export metadata (bit.labels)"),
        (None, None, Some(l)) => (Some(l), "export metadata (id2label)"),
        (None, None, None) if classes == Some(1000) => {
            (Some(crate::imagenet1k_labels()), "built-in ILSVRC-2012 names")
        }
        _ => (None, "none (class_<n>)"),
    };
    if let (Some(l), Some(k)) = (&labels, classes)
        && l.len() != k
    {
        return Err(err(
            path,
            "labels",
            format!("the model has {k} classes but {} labels were given ({labels_source})", l.len()),
        ));
    }
    let size = match input_dims.as_slice() {
        [_, _, Some(h), Some(w)] if h == w => *h as u32,
        _ => 224,
    };
    let preprocess = match &options.contract {
        ContractChoice::File(f) => crate::contract::from_file(f)?,
        _ => match meta(META_PREPROCESS) {
            Some(json) => {
                serde_json::from_str(&json).map_err(|e| err(path, META_PREPROCESS, e.to_string()))?
            }
            None => bit_runtime::Preprocess {
                source: Some(format!(
                    "BiT default at the export's input size {size} (the export carries no contract)"
                )),
                ..bit_runtime::Preprocess::bit_default(size)
            },
        },
    };
    let preprocess =
        options.overrides.apply(preprocess).map_err(|d| err(path, "preprocessing contract", d))?;
    let architecture = serde_json::json!({
        "family": "BiT ResNet-v2 (GroupNorm, weight standardization), imported from an ONNX export",
        "num_classes": classes,
        "source_layout": "onnx",
        "source_file": path.file_name().map(|f| f.to_string_lossy().into_owned()),
        "ws_folded": true,
        "folded_nodes": folded,
        "group_norms_rewritten": group_norms,
    });
    proto.metadata_props.retain(|m| {
        ![META_FORMAT, META_PREPROCESS, META_LABELS, META_ARCHITECTURE].contains(&m.key.as_str())
    });
    let mut entries = vec![
        (META_FORMAT.to_owned(), FORMAT_VERSION.to_owned()),
        (META_PREPROCESS.to_owned(), serde_json::to_string(&preprocess).expect("serializable")),
        (META_ARCHITECTURE.to_owned(), architecture.to_string()),
    ];
    if let Some(l) = &labels {
        entries.push((META_LABELS.to_owned(), serde_json::to_string(l).expect("serializable")));
    }
    proto
        .metadata_props
        .extend(entries.into_iter().map(|(key, value)| pb::StringStringEntryProto { key, value }));
    write_model(&proto, out)?;
    Ok(OnnxImportReport { ops_before, ops_after, folded, group_norms, classes, labels_source, preprocess })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcasting_follows_numpy() {
        assert_eq!(broadcast(&[2, 3, 4], &[3, 1]), Some(vec![2, 3, 4]));
        assert_eq!(broadcast(&[1], &[5, 2]), Some(vec![5, 2]));
        assert_eq!(broadcast(&[2, 3], &[4, 3]), None);
        let a = Val::F(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0], vec![2, 3]);
        let b = Val::F(vec![10.0, 20.0], vec![2, 1]);
        assert_eq!(
            binary(&a, &b, "Mul"),
            Some(Val::F(vec![10.0, 20.0, 30.0, 80.0, 100.0, 120.0], vec![2, 3]))
        );
        let c = Val::F(vec![1.0, 2.0, 3.0], vec![3]);
        assert_eq!(binary(&a, &c, "Sub"), Some(Val::F(vec![0.0, 0.0, 0.0, 3.0, 3.0, 3.0], vec![2, 3])));
    }

    #[test]
    fn reduce_mean_over_inner_axes() {
        let x: Vec<f64> = (0..12).map(|v| v as f64).collect();
        assert_eq!(reduce_mean(&x, &[2, 2, 3], &[1, 2], true), (vec![2.5, 8.5], vec![2, 1, 1]));
        assert_eq!(
            reduce_mean(&x, &[2, 2, 3], &[0], false),
            (vec![3.0, 4.0, 5.0, 6.0, 7.0, 8.0], vec![2, 3])
        );
    }
}
