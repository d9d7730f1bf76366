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
//!    weight standardization, shape arithmetic, the pad amounts `torch.onnx.export` computes
//!    for `F.pad` as `ConstantOfShape -> Concat -> Reshape -> Slice(step -1) -> Transpose ->
//!    Reshape -> Cast`) is evaluated once and replaced by an initializer, whatever its op,
//!    until no such node is left. The ops in [`EVALUATED`] go through a small evaluator
//!    written for them, exact in f64 (the weight standardization rounds once, to the f32
//!    kernel); every other op, and these on element types that evaluator does not hold
//!    (bool, int32, float64, ...), is run by tract on its own ([`bit_engine::eval`]), and its
//!    result keeps the element type tract returns. Random ops
//!    ([`bit_engine::eval::NONDETERMINISTIC`]) are never folded; a node tract cannot
//!    evaluate stays in the graph, and the report lists it with tract's reason.
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
use tract_onnx::prelude::{Datum, DatumType, Tensor};

use crate::ImportOptions;
use crate::contract::ContractChoice;
use crate::error::ImportError;
use crate::onnx::write_model;
use crate::probe::read_proto;

/// Ops the constant folder evaluates itself (in f64, on f32 and i64 values); tract evaluates
/// the others.
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
    /// How many of those tract evaluated (the others went through [`EVALUATED`]'s evaluator).
    pub folded_by_tract: usize,
    /// Nodes whose inputs are all constant but which stay, each as `'name' (Op): why`
    /// (random ops, ops tract cannot evaluate).
    pub constant_left: Vec<String>,
    /// Decomposed GroupNorms rewritten to `GroupNormalization`.
    pub group_norms: usize,
    /// Classes (the output's last dimension), if static.
    pub classes: Option<usize>,
    /// Where the labels came from.
    pub labels_source: &'static str,
    /// The preprocessing contract written.
    pub preprocess: bit_runtime::Preprocess,
}

/// A constant tensor, row-major.
#[derive(Clone, Debug, PartialEq)]
enum Val {
    /// An f32 tensor, its values held in f64 so that a chain of evaluated ops rounds once,
    /// when written.
    F(Vec<f64>, Vec<usize>),
    /// An i64 tensor.
    I(Vec<i64>, Vec<usize>),
    /// Any other ONNX element type (bool, int32, float64, ...): the tensor as ONNX holds it,
    /// its `dims` kept equal to the shape beside it, written back with its own type and
    /// bytes. [`eval`] never sees one: tract evaluates the nodes that read it.
    T(Box<pb::TensorProto>, Vec<usize>),
}

impl Val {
    fn shape(&self) -> &[usize] {
        match self {
            Val::F(_, s) | Val::I(_, s) | Val::T(_, s) => s,
        }
    }
    /// Whether [`eval`] takes it.
    fn is_plain(&self) -> bool {
        !matches!(self, Val::T(..))
    }
    fn floats(&self) -> Vec<f64> {
        match self {
            Val::F(v, _) => v.clone(),
            Val::I(v, _) => v.iter().map(|&x| x as f64).collect(),
            Val::T(t, _) => load_tensor(t).ok().and_then(|t| tensor_values(&t)).unwrap_or_default(),
        }
    }
    fn ints(&self) -> Vec<i64> {
        match self {
            Val::I(v, _) => v.clone(),
            Val::F(v, _) => v.iter().map(|&x| x as i64).collect(),
            Val::T(t, _) => load_tensor(t).ok().and_then(|t| tensor_values(&t)).unwrap_or_default(),
        }
    }
    /// The same values in `shape`, which callers make of the same number of elements.
    fn reshaped(self, shape: Vec<usize>) -> Val {
        match self {
            Val::F(v, _) => Val::F(v, shape),
            Val::I(v, _) => Val::I(v, shape),
            Val::T(mut t, _) => {
                t.dims = shape.iter().map(|&d| d as i64).collect();
                Val::T(t, shape)
            }
        }
    }
    /// A tensor tract computed: f32 and i64 (and tract's shape integers, as i64) in the
    /// evaluator's form, any other ONNX type as ONNX writes it; why not for types ONNX has no
    /// name for.
    fn from_tensor(t: Tensor) -> Result<Val, String> {
        let (dt, shape) = (t.datum_type(), t.shape().to_vec());
        let unnamed = || format!("tract computes {dt:?}, which ONNX has no type for");
        match dt {
            DatumType::F32 => Ok(Val::F(
                tensor_values::<f32>(&t).ok_or_else(unnamed)?.into_iter().map(f64::from).collect(),
                shape,
            )),
            DatumType::I64 | DatumType::TDim => Ok(Val::I(
                tensor_values(&t).ok_or_else(|| format!("tract computes {dt:?} values: {t:?}"))?,
                shape,
            )),
            _ => {
                let data_type = onnx_type(dt).ok_or_else(unnamed)?;
                let view = t.try_as_plain_ram().map_err(|e| format!("{dt:?} tensor not in memory: {e}"))?;
                let mut proto = pb::TensorProto {
                    dims: shape.iter().map(|&d| d as i64).collect(),
                    data_type: data_type as i32,
                    ..Default::default()
                };
                if dt == DatumType::String {
                    let strings = view.as_slice::<String>().map_err(|e| format!("{e}"))?;
                    proto.string_data = strings.iter().map(|s| s.as_bytes().to_vec()).collect();
                } else {
                    // tract's bytes are in the host's order, raw_data little-endian: the same
                    // on every target of this workspace.
                    proto.raw_data = view.as_bytes().to_vec();
                }
                Ok(Val::T(Box::new(proto), shape))
            }
        }
    }
}

/// A tensor as tract reads it from a model (a panic inside tract caught as an error).
fn load_tensor(t: &pb::TensorProto) -> Result<Tensor, String> {
    std::panic::catch_unwind(|| {
        tract_onnx::tensor::load_tensor(&*tract_onnx::data_resolver::default(), t, None)
    })
    .map_err(|_| "tract panicked reading it".to_string())?
    .map_err(|e| format!("{e:#}"))
}

/// The values of `t` cast to `D`.
fn tensor_values<D: Datum + Copy>(t: &Tensor) -> Option<Vec<D>> {
    let cast = t.cast_to::<D>().ok()?;
    let values = cast.try_as_plain_ram().ok()?.as_slice::<D>().ok()?.to_vec();
    Some(values)
}

/// The ONNX element type of a tract one.
fn onnx_type(dt: DatumType) -> Option<pb::tensor_proto::DataType> {
    use pb::tensor_proto::DataType as D;
    Some(match dt {
        DatumType::Bool => D::Bool,
        DatumType::U8 => D::Uint8,
        DatumType::U16 => D::Uint16,
        DatumType::U32 => D::Uint32,
        DatumType::U64 => D::Uint64,
        DatumType::I8 => D::Int8,
        DatumType::I16 => D::Int16,
        DatumType::I32 => D::Int32,
        DatumType::I64 => D::Int64,
        DatumType::F16 => D::Float16,
        DatumType::F32 => D::Float,
        DatumType::F64 => D::Double,
        DatumType::String => D::String,
        _ => return None,
    })
}

fn err(path: &Path, key: &str, detail: impl Into<String>) -> ImportError {
    ImportError::Unsupported { path: path.to_owned(), key: key.to_owned(), detail: detail.into() }
}

/// An error at `node`, named with its op.
fn node_err(path: &Path, node: &pb::NodeProto, detail: impl Into<String>) -> ImportError {
    err(path, &format!("{} ({})", node.name, node.op_type), detail)
}

/// Reads an initializer or `Constant` tensor.
fn read_tensor(path: &Path, t: &pb::TensorProto) -> Result<Val, ImportError> {
    use pb::tensor_proto::DataType as D;
    let shape: Vec<usize> = t
        .dims
        .iter()
        .map(|&d| {
            usize::try_from(d).map_err(|_| err(path, &t.name, format!("dimension {d} in {:?}", t.dims)))
        })
        .collect::<Result<_, _>>()?;
    let n = shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or_else(|| err(path, &t.name, format!("shape {shape:?} has more elements than memory")))?;
    if !t.external_data.is_empty() {
        return Err(err(
            path,
            &t.name,
            "external tensor data: re-export with the weights inside the .onnx file",
        ));
    }
    let raw = &t.raw_data;
    let data_type = D::try_from(t.data_type).unwrap_or(D::Undefined);
    let val = match data_type {
        D::Float if !raw.is_empty() => Val::F(
            raw.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().expect("4")) as f64).collect(),
            shape.clone(),
        ),
        D::Float => Val::F(t.float_data.iter().map(|&x| x as f64).collect(), shape.clone()),
        D::Int64 if !raw.is_empty() => Val::I(
            raw.chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().expect("8"))).collect(),
            shape.clone(),
        ),
        D::Int64 => Val::I(t.int64_data.clone(), shape.clone()),
        other => {
            // Checked by tract, kept as written.
            let tensor =
                load_tensor(t).map_err(|e| err(path, &t.name, format!("tensor type {other:?}: {e}")))?;
            if onnx_type(tensor.datum_type()).is_none() {
                return Err(err(path, &t.name, format!("tensor type {other:?} is not supported")));
            }
            if tensor.len() != n {
                return Err(err(path, &t.name, format!("{} values for shape {shape:?}", tensor.len())));
            }
            Val::T(Box::new(pb::TensorProto { name: String::new(), ..t.clone() }), shape.clone())
        }
    };
    let len = match &val {
        Val::F(v, _) => v.len(),
        Val::I(v, _) => v.len(),
        Val::T(..) => n,
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
        Val::T(t, _) => pb::TensorProto { name: name.to_owned(), dims, ..(**t).clone() },
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

/// `a op b`, broadcast; `None` if the shapes do not broadcast or an integer result is not
/// exact here (`Pow`, division by zero, overflow).
fn binary(a: &Val, b: &Val, op: &str) -> Option<Val> {
    let out = broadcast(a.shape(), b.shape())?;
    let n: usize = out.iter().product();
    let os = strides(&out);
    let (sa, sb) = (a.shape().to_vec(), b.shape().to_vec());
    if let (Val::I(x, _), Val::I(y, _)) = (a, b) {
        let f = |p: i64, q: i64| match op {
            "Add" => p.checked_add(q),
            "Sub" => p.checked_sub(q),
            "Mul" => p.checked_mul(q),
            "Div" => p.checked_div(q),
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
/// A missing input also gives `None`, so that tract, which evaluates the node instead, says
/// what is wrong with it.
fn eval(node: &pb::NodeProto, inputs: &[Option<&Val>], path: &Path) -> Result<Option<Vec<Val>>, ImportError> {
    let get = |i: usize| inputs.get(i).copied().flatten();
    let one = |v: Val| Ok(Some(vec![v]));
    let invalid = |detail: String| Err(node_err(path, node, detail));
    // The evaluator holds each value in 8 bytes.
    let within_budget = |shape: &[usize]| {
        let bytes = shape.iter().try_fold(8u64, |n, &d| n.checked_mul(d as u64));
        if bytes.is_none_or(|b| b > bit_engine::budget::MAX_TENSOR_BYTES) {
            return Err(node_err(
                path,
                node,
                format!("an output of shape {shape:?} is over the memory budget"),
            ));
        }
        Ok(())
    };
    let op = node.op_type.as_str();
    // Constant has no input and Concat reads them all: neither reads this.
    let none = Val::I(vec![], vec![0]);
    let x = match get(0) {
        Some(x) => x,
        None if matches!(op, "Constant" | "Concat") => &none,
        None => return Ok(None),
    };
    match op {
        "Constant" => {
            if let Some(t) = attr(node, "value").and_then(|a| a.t.as_ref()) {
                return one(read_tensor(path, t).map_err(|e| node_err(path, node, e.to_string()))?);
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
        "Identity" => one(x.clone()),
        "Cast" => {
            match attr_i(node, "to", 0) {
                // To f32 and i64 only: other types are tract's.
                1 => one(Val::F(x.floats(), x.shape().to_vec())),
                // From the f32 the tensor holds, not the f64 the evaluator computed it in.
                7 => match x {
                    Val::F(v, s) => one(Val::I(v.iter().map(|&f| f as f32 as i64).collect(), s.clone())),
                    _ => one(x.clone()),
                },
                _ => Ok(None),
            }
        }
        "Reshape" | "Flatten" => {
            let n: usize = x.shape().iter().product();
            let shape = if node.op_type == "Flatten" {
                let a = axis(attr_i(node, "axis", 1), x.shape().len());
                if a > x.shape().len() {
                    return invalid(format!("axis {a} of a tensor of shape {:?}", x.shape()));
                }
                vec![x.shape()[..a].iter().product(), x.shape()[a..].iter().product()]
            } else {
                let Some(spec) = get(1) else { return Ok(None) };
                let spec = spec.ints();
                let copy = attr_i(node, "allowzero", 0) == 0;
                let mut s = Vec::with_capacity(spec.len());
                for (i, &d) in spec.iter().enumerate() {
                    s.push(match x.shape().get(i) {
                        Some(&kept) if d == 0 && copy => kept,
                        None if d == 0 && copy => {
                            return invalid(format!(
                                "shape {spec:?} copies dimension {i} of {:?}",
                                x.shape()
                            ));
                        }
                        _ => d.max(0) as usize,
                    });
                }
                if let Some(p) = spec.iter().position(|&d| d == -1) {
                    let known: usize =
                        s.iter().enumerate().filter(|(i, _)| *i != p).map(|(_, &d)| d).product();
                    s[p] = n.checked_div(known).unwrap_or(0);
                }
                s
            };
            if shape.iter().try_fold(1usize, |p, &d| p.checked_mul(d)) != Some(n) {
                return invalid(format!("cannot reshape {:?} to {shape:?}", x.shape()));
            }
            one(x.clone().reshaped(shape))
        }
        "Shape" => {
            let s = x.shape();
            let r = s.len() as i64;
            let clip = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
            let (a, b) = (clip(attr_i(node, "start", 0)), clip(attr_i(node, "end", r)));
            let v: Vec<i64> = s[a..b.max(a)].iter().map(|&d| d as i64).collect();
            let n = v.len();
            one(Val::I(v, vec![n]))
        }
        "Gather" => {
            let Some(idx) = get(1) else { return Ok(None) };
            if axis(attr_i(node, "axis", 0), x.shape().len()) != 0 {
                return Ok(None);
            }
            let Some(&rows) = x.shape().first() else { return invalid("Gather on a scalar".into()) };
            let row: usize = x.shape()[1..].iter().product();
            let mut shape: Vec<usize> = idx.shape().to_vec();
            shape.extend_from_slice(&x.shape()[1..]);
            let picks: Vec<usize> = idx
                .ints()
                .iter()
                .map(|&i| if i < 0 { (i + rows as i64) as usize } else { i as usize })
                .collect();
            if picks.iter().any(|&p| p >= rows) {
                return invalid(format!("an index is out of range for {rows} rows"));
            }
            within_budget(&shape)?;
            match x {
                Val::F(v, _) => one(Val::F(
                    picks.iter().flat_map(|&p| v[p * row..(p + 1) * row].to_vec()).collect(),
                    shape,
                )),
                Val::I(v, _) => one(Val::I(
                    picks.iter().flat_map(|&p| v[p * row..(p + 1) * row].to_vec()).collect(),
                    shape,
                )),
                Val::T(..) => Ok(None),
            }
        }
        "Unsqueeze" | "Squeeze" => {
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
                if let Some(&a) = axes.iter().find(|&&a| shape.get(a).is_some_and(|&d| d != 1)) {
                    return invalid(format!("axis {a} of shape {shape:?} is not of size 1"));
                }
                shape =
                    shape.iter().enumerate().filter(|(d, _)| !axes.contains(d)).map(|(_, &s)| s).collect();
            }
            one(x.clone().reshaped(shape))
        }
        "Concat" => {
            let vals: Vec<&Val> = inputs.iter().flatten().copied().collect();
            let Some(r) = vals.first().map(|v| v.shape().len()) else { return Ok(None) };
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
            let Some(y) = get(1) else { return Ok(None) };
            let Some(shape) = broadcast(x.shape(), y.shape()) else {
                return invalid(format!("shapes {:?} and {:?} do not broadcast", x.shape(), y.shape()));
            };
            within_budget(&shape)?;
            Ok(binary(x, y, op).map(|v| vec![v]))
        }
        "Neg" if matches!(x, Val::I(..)) => {
            let v: Option<Vec<i64>> = x.ints().iter().map(|v| v.checked_neg()).collect();
            Ok(v.map(|v| vec![Val::I(v, x.shape().to_vec())]))
        }
        // Float ops; integer ReduceMean is tract's.
        "Sqrt" | "Reciprocal" | "ReduceMean" if !matches!(x, Val::F(..)) => Ok(None),
        "Sqrt" | "Reciprocal" | "Neg" => {
            let f = |v: f64| match node.op_type.as_str() {
                "Sqrt" => v.sqrt(),
                "Reciprocal" => 1.0 / v,
                _ => -v,
            };
            one(Val::F(x.floats().into_iter().map(f).collect(), x.shape().to_vec()))
        }
        "ReduceMean" => {
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
            let (Some(scale), Some(bias), Some(mean_in), Some(var_in)) = (get(1), get(2), get(3), get(4))
            else {
                return Ok(None);
            };
            let (scale, bias, mean_in, var_in) =
                (scale.floats(), bias.floats(), mean_in.floats(), var_in.floats());
            let shape = x.shape().to_vec();
            if shape.len() < 2 {
                return Ok(None);
            }
            let c = shape[1];
            if [&scale, &bias, &mean_in, &var_in].iter().any(|v| v.len() != c) {
                return invalid(format!("scale, bias, mean and var are not of {c} values, one per channel"));
            }
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
                (mean_in.clone(), var_in.clone())
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
                let (rm, rv) = (&mean_in, &var_in);
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

/// What [`fold_constants`] did.
#[derive(Default)]
struct Folded {
    nodes: usize,
    by_tract: usize,
    left: Vec<String>,
}

/// Evaluates `node` with tract; its values, one per non-empty output, or why not.
fn eval_with_tract(
    framework: &tract_onnx::Onnx,
    node: &pb::NodeProto,
    inputs: &[Option<&Val>],
    model: (&[pb::OperatorSetIdProto], i64),
) -> Result<Vec<Val>, String> {
    let mut named = HashSet::new();
    let initializers: Vec<pb::TensorProto> = node
        .input
        .iter()
        .zip(inputs)
        .filter_map(|(name, v)| Some((name, (*v)?)))
        .filter(|(name, _)| named.insert(name.as_str()))
        .map(|(name, v)| write_tensor(name, v))
        .collect();
    let tensors = bit_engine::eval::eval_node(framework, node, initializers, model.0, model.1)
        .map_err(|e| format!("{e:#}"))?;
    let outputs = node.output.iter().filter(|o| !o.is_empty()).count();
    if tensors.len() != outputs {
        return Err(format!("tract computes {} values for {outputs} outputs", tensors.len()));
    }
    tensors.into_iter().map(Val::from_tensor).collect()
}

/// Folds constant subgraphs: evaluates every node whose inputs are all constant, in passes
/// until one folds nothing, and leaves the initializers the remaining graph reads.
/// `model` is the opsets and IR version of the model the graph belongs to.
fn fold_constants(
    path: &Path,
    graph: &mut pb::GraphProto,
    model: (&[pb::OperatorSetIdProto], i64),
) -> Result<Folded, ImportError> {
    let mut consts: HashMap<String, Val> = HashMap::new();
    for t in &graph.initializer {
        consts.insert(t.name.clone(), read_tensor(path, t)?);
    }
    let framework = bit_engine::ops::onnx();
    let mut folded = Folded::default();
    // Why tract could not evaluate a node, by its first output: tried once.
    let mut refused: HashMap<String, String> = HashMap::new();
    let key = |node: &pb::NodeProto| node.output.iter().find(|o| !o.is_empty()).cloned().unwrap_or_default();
    loop {
        let before = folded.nodes;
        let mut kept = Vec::new();
        for node in std::mem::take(&mut graph.node) {
            let all_const = node.input.iter().all(|i| i.is_empty() || consts.contains_key(i));
            if !all_const || refused.contains_key(&key(&node)) {
                kept.push(node);
                continue;
            }
            let inputs: Vec<Option<&Val>> =
                node.input.iter().map(|i| if i.is_empty() { None } else { consts.get(i) }).collect();
            // The evaluator's values go to the outputs by position, empty names included.
            let slots = node.output.iter().rposition(|o| !o.is_empty()).map_or(0, |i| i + 1);
            let by_hand =
                EVALUATED.contains(&node.op_type.as_str()) && inputs.iter().flatten().all(|v| v.is_plain());
            let values: Vec<(String, Val)> = match by_hand.then(|| eval(&node, &inputs, path)).transpose()? {
                Some(Some(vals)) if vals.len() >= slots => {
                    node.output.iter().cloned().zip(vals).filter(|(name, _)| !name.is_empty()).collect()
                }
                _ => match eval_with_tract(&framework, &node, &inputs, model) {
                    Ok(vals) => {
                        folded.by_tract += 1;
                        node.output.iter().filter(|o| !o.is_empty()).cloned().zip(vals).collect()
                    }
                    Err(why) => {
                        log::debug!("constant node '{}' ({}) left: {why}", node.name, node.op_type);
                        refused.insert(key(&node), why);
                        kept.push(node);
                        continue;
                    }
                },
            };
            consts.extend(values);
            folded.nodes += 1;
        }
        graph.node = kept;
        if folded.nodes == before {
            break;
        }
    }
    for node in &graph.node {
        if let Some(why) = refused.get(&key(node)) {
            folded.left.push(format!("'{}' ({}): {why}", node.name, node.op_type));
        }
    }
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
        // The inputs the pattern's ops take, and an output: a node without them is not it.
        let arity = |n: &pb::NodeProto, inputs: usize| n.input.len() >= inputs && !n.output.is_empty();
        let mut found = None;
        for (i1, n1) in graph.node.iter().enumerate() {
            if n1.op_type != "Reshape" || !arity(n1, 2) {
                continue;
            }
            let Some(i2) = only(&n1.output[0]) else { continue };
            let n2 = &graph.node[i2];
            if n2.op_type != "InstanceNormalization" || !arity(n2, 3) || n2.input[0] != n1.output[0] {
                continue;
            }
            let Some(i3) = only(&n2.output[0]) else { continue };
            let n3 = &graph.node[i3];
            let Some(i4) = only(&n3.output[0]).filter(|_| arity(n3, 2)) else { continue };
            let n4 = &graph.node[i4];
            let Some(i5) = only(&n4.output[0]).filter(|_| arity(n4, 2)) else { continue };
            let n5 = &graph.node[i5];
            if !arity(n5, 2) {
                continue;
            }
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
                n.op_type == "Shape"
                    && n.output.first() == Some(&n3.input[1])
                    && only(&n3.input[1]) == Some(i3)
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
    let (opsets, ir_version) = (proto.opset_import.clone(), proto.ir_version);
    let graph = proto.graph.as_mut().ok_or_else(|| err(path, "graph", "the file has no graph"))?;
    let ops_before = count_ops(graph);
    let folded = fold_constants(path, graph, (&opsets, ir_version))?;
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
        "folded_nodes": folded.nodes,
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
    Ok(OnnxImportReport {
        ops_before,
        ops_after,
        folded: folded.nodes,
        folded_by_tract: folded.by_tract,
        constant_left: folded.left,
        group_norms,
        classes,
        labels_source,
        preprocess,
    })
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

    fn node(op: &str, inputs: &[&str], output: &str, attribute: Vec<pb::AttributeProto>) -> pb::NodeProto {
        pb::NodeProto {
            name: format!("{output}_node"),
            op_type: op.into(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.into()],
            attribute,
            ..Default::default()
        }
    }

    fn int_attr(name: &str, i: i64) -> pb::AttributeProto {
        pb::AttributeProto {
            name: name.into(),
            r#type: pb::attribute_proto::AttributeType::Int as i32,
            i,
            ..Default::default()
        }
    }

    #[test]
    fn folding_keeps_the_element_types_tract_computes_and_leaves_what_it_cannot_evaluate() {
        let path = Path::new("types.onnx");
        let mut graph = pb::GraphProto {
            initializer: vec![
                write_tensor("a", &Val::I(vec![3, -1, 4], vec![3])),
                write_tensor("b", &Val::I(vec![3, 5, 4], vec![3])),
            ],
            node: vec![
                // int32 through tract (the evaluator casts to f32 and i64 only).
                node("Cast", &["a"], "a32", vec![int_attr("to", 6)]),
                node("Equal", &["a", "b"], "same", vec![]),
                node("Not", &["same"], "differ", vec![]),
                // A chain: Range(0, 3, 1) -> Mul by a.
                node("Range", &["zero", "three", "one"], "r", vec![]),
                node("Mul", &["r", "a"], "ra", vec![]),
                node("Constant", &[], "zero", vec![]),
                node("RandomNormal", &[], "noise", vec![int_attr("dtype", 1)]),
                node("NoSuchOp", &["a"], "unknown", vec![]),
                node("Add", &["x", "a32"], "y", vec![]),
                node("Mul", &["y", "differ"], "z", vec![]),
                node("Add", &["z", "noise"], "w", vec![]),
                node("Add", &["w", "unknown"], "v", vec![]),
                node("Add", &["v", "ra"], "u", vec![]),
            ],
            ..Default::default()
        };
        // Range's inputs: the first a Constant node placed after it (folded on a later pass).
        graph.node[5].attribute = vec![pb::AttributeProto {
            name: "value".into(),
            r#type: pb::attribute_proto::AttributeType::Tensor as i32,
            t: Some(write_tensor("", &Val::I(vec![0], vec![]))),
            ..Default::default()
        }];
        graph.initializer.push(write_tensor("three", &Val::I(vec![3], vec![])));
        graph.initializer.push(write_tensor("one", &Val::I(vec![1], vec![])));
        let opsets = [pb::OperatorSetIdProto { domain: String::new(), version: 17 }];
        let folded = fold_constants(path, &mut graph, (&opsets, 8)).unwrap();
        let init = |name: &str| graph.initializer.iter().find(|t| t.name == name).cloned();
        use pb::tensor_proto::DataType as D;
        let a32 = init("a32").expect("a32 folded");
        assert_eq!(a32.data_type, D::Int32 as i32);
        assert_eq!(a32.raw_data, [3i32, -1, 4].iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<_>>());
        let differ = init("differ").expect("differ folded");
        assert_eq!((differ.data_type, differ.raw_data.as_slice()), (D::Bool as i32, &[0u8, 1, 0][..]));
        let ra = init("ra").expect("ra folded");
        assert_eq!(ra.data_type, D::Int64 as i32);
        assert_eq!(read_tensor(path, &ra).unwrap(), Val::I(vec![0, -1, 8], vec![3]));
        assert!(init("same").is_none() && init("r").is_none(), "only what the graph reads");
        let left: Vec<&str> = graph.node.iter().map(|n| n.op_type.as_str()).collect();
        assert_eq!(left, ["RandomNormal", "NoSuchOp", "Add", "Mul", "Add", "Add", "Add"]);
        // Cast, Equal, Not, Range, Mul (ra), Constant; three of them by hand.
        assert_eq!((folded.nodes, folded.by_tract), (6, 4));
        println!("left: {:#?}", folded.left);
        assert_eq!(folded.left.len(), 2, "{:?}", folded.left);
        assert!(
            folded.left[0].starts_with("'noise_node' (RandomNormal): ") && folded.left[0].contains("random")
        );
        assert!(folded.left[1].starts_with("'unknown_node' (NoSuchOp): "), "{:?}", folded.left);
    }

    #[test]
    fn evaluator_errors_name_the_node_and_its_op() {
        let mut graph = pb::GraphProto {
            initializer: vec![
                write_tensor("x", &Val::F(vec![1.0; 6], vec![2, 3])),
                write_tensor("s", &Val::I(vec![4], vec![1])),
            ],
            node: vec![node("Reshape", &["x", "s"], "y", vec![])],
            ..Default::default()
        };
        let opsets = [pb::OperatorSetIdProto { domain: String::new(), version: 17 }];
        let e = fold_constants(Path::new("bad.onnx"), &mut graph, (&opsets, 8)).err().unwrap().to_string();
        assert!(e.contains("bad.onnx") && e.contains("y_node (Reshape)"), "{e}");
    }

    /// Malformed nodes on constant inputs: an error naming the node, or the node left with
    /// tract's reason; never a panic, and never a value that does not match its shape.
    #[test]
    fn malformed_constant_nodes_are_errors_or_left_never_panics() {
        let opsets = [pb::OperatorSetIdProto { domain: String::new(), version: 17 }];
        let fold = |nodes: Vec<pb::NodeProto>| {
            let mut graph = pb::GraphProto {
                initializer: vec![
                    write_tensor("m", &Val::F(vec![1.0; 6], vec![2, 3])),
                    write_tensor("s", &Val::F(vec![2.0], vec![])),
                    write_tensor("min", &Val::I(vec![i64::MIN], vec![1])),
                    write_tensor("minus1", &Val::I(vec![-1], vec![1])),
                    write_tensor("long", &Val::I(vec![1; 1 << 16], vec![1 << 16, 1])),
                    write_tensor("wide", &Val::I(vec![1; 1 << 16], vec![1, 1 << 16])),
                    write_tensor("zeros", &Val::I(vec![0, 0, 0], vec![3])),
                    write_tensor("one", &Val::F(vec![1.0], vec![1])),
                ],
                node: nodes,
                ..Default::default()
            };
            let r = fold_constants(Path::new("bad.onnx"), &mut graph, (&opsets, 8));
            r.map(|f| (f.nodes, graph.node.len())).map_err(|e| e.to_string())
        };
        let errors = [
            node("Gather", &["s", "minus1"], "g", vec![]),
            node("Squeeze", &["m", "minus1"], "sq", vec![]),
            node("Flatten", &["m"], "f", vec![int_attr("axis", 5)]),
            node("Reshape", &["m", "zeros"], "r", vec![]),
            node("Add", &["long", "wide"], "big", vec![]),
            node("BatchNormalization", &["m", "one", "one", "one", "one"], "bn", vec![]),
        ];
        for n in errors {
            let what = format!("{} ({})", n.name, n.op_type);
            let e = fold(vec![n]).unwrap_err();
            assert!(e.contains("bad.onnx") && e.contains(&what), "{e}");
        }
        // Missing inputs, integer division overflow: left to tract, which evaluates or refuses.
        let mut no_output = node("Identity", &["m"], "", vec![]);
        no_output.output.clear();
        let others = [
            node("Identity", &[], "i", vec![]),
            node("Concat", &[], "c", vec![int_attr("axis", 0)]),
            node("Div", &["min", "minus1"], "d", vec![]),
            node("Neg", &["min"], "n", vec![]),
            node("Mul", &["m"], "mul", vec![]),
            no_output,
        ];
        for n in others {
            let op = n.op_type.clone();
            assert!(fold(vec![n]).is_ok(), "{op}");
        }
        // A double initializer goes through tract and is written back as double, unchanged.
        let d = pb::TensorProto {
            name: "d".into(),
            dims: vec![2],
            data_type: pb::tensor_proto::DataType::Double as i32,
            double_data: vec![0.1, -3.5],
            ..Default::default()
        };
        let mut graph = pb::GraphProto {
            initializer: vec![d],
            node: vec![node("Identity", &["d"], "e", vec![]), node("Add", &["x", "e"], "y", vec![])],
            ..Default::default()
        };
        let folded = fold_constants(Path::new("f64.onnx"), &mut graph, (&opsets, 8)).unwrap();
        assert_eq!((folded.nodes, folded.by_tract), (1, 1));
        let e = &graph.initializer[0];
        assert_eq!(
            (e.name.as_str(), e.data_type, e.dims.as_slice()),
            ("e", pb::tensor_proto::DataType::Double as i32, &[2i64][..])
        );
        let back = load_tensor(e).unwrap();
        assert_eq!(back.try_as_plain_ram().unwrap().as_slice::<f64>().unwrap(), &[0.1, -3.5]);
        // A negative dimension is an error, not a zero.
        let bad = pb::TensorProto { name: "neg".into(), dims: vec![-1], ..graph.initializer[0].clone() };
        assert!(read_tensor(Path::new("f64.onnx"), &bad).unwrap_err().to_string().contains("neg"));
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
