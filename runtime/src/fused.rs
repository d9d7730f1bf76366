//! A fused GroupNorm -> affine -> clip -> u8 op, installed into tract when a model is loaded.
//!
//! `bit-tool quantize` writes each quantized convolution's input as standard ONNX:
//! `GroupNormalization(x, gamma / s, beta / s + 0.5) -> Clip(0, 255) -> Cast(u8)`. tract
//! decomposes that into about ten passes over the activation (two reductions, several
//! element-wise ops, a scalar cast loop). [`fuse_for_tract`] replaces each such chain in the
//! protobuf by one node that [`onnx_framework`] maps to [`GroupNormQuantizeU8`]: per group,
//! one pass for the mean, one for the variance, one that writes u8 directly. The model file
//! stays standard ONNX; only the runtime's view of it changes.
//!
//! More rewrites keep activations in 8 bits where that is exact, or skip generic passes:
//! - `DequantizeLinear -> Pad(0) -> MaxPool` (BiT's stem) becomes `MaxPool8(q, padded with
//!   the zero point) -> DequantizeLinear` ([`MaxPool8`]): dequantizing is monotonic and maps
//!   the zero point to 0, so the max and the padding commute with it, and the pool runs on
//!   8-bit values instead of f32. The DequantizeLinear then feeds the GroupNorm chain and is
//!   absorbed by it. A pool with settings `MaxPool8` does not cover (dilation, ceil rounding)
//!   becomes `Pad(zero point) -> MaxPool -> DequantizeLinear` instead.
//! - `Add(DequantizeLinear(q), y)` (each residual sum) becomes one [`DequantizeAdd`] pass
//!   instead of writing and re-reading an f32 tensor.
//! - A 1x1 convolution with stride s and no padding (BiT's projections) reads a
//!   [`Subsample`] of its input with stride 1: one pass, where tract inserts a generic
//!   Downsample per axis.
//!
//! The GroupNorm and DequantizeAdd kernels are plain Rust written to vectorize; on x86_64
//! they run as an AVX2 build where the CPU has it (`simd_dispatch`), with FMA off so that
//! every target computes the same bits.

use tract_onnx::pb;
use tract_onnx::prelude::*;
use tract_onnx::tract_hir::internal::*;

/// The op type of the fused node in the rewritten protobuf.
pub const FUSED_OP: &str = "BitGroupNormQuantizeU8";
/// Its domain (not a standard ONNX one).
pub const FUSED_DOMAIN: &str = "bit.edge";

/// tract's ONNX loader with the fused op registered.
pub fn onnx_framework() -> tract_onnx::Onnx {
    let mut framework = onnx();
    framework.op_register.insert(FUSED_OP, parse_fused);
    framework.op_register.insert(DQ_ADD_OP, parse_dequantize_add);
    framework.op_register.insert(POOL_OP, parse_max_pool8);
    framework.op_register.insert(SUBSAMPLE_OP, parse_subsample);
    framework
}

/// The op type of an 8-bit max pool with its constant padding built in.
pub const POOL_OP: &str = "BitMaxPool8";
/// The op type of a strided pixel pick in front of a 1x1 convolution.
pub const SUBSAMPLE_OP: &str = "BitSubsample";

/// The op type of a fused `Add(DequantizeLinear(..), ..)`.
pub const DQ_ADD_OP: &str = "BitDequantizeAdd";

/// What [`fuse_for_tract`] rewrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Fused {
    /// `GroupNormalization -> Clip(0, 255) -> Cast(u8)` chains replaced by one op.
    pub group_norm_chains: usize,
    /// `DequantizeLinear -> Pad -> MaxPool` turned into a u8 pool.
    pub pools: usize,
    /// `Add`s with a dequantized input replaced by one op.
    pub dequantize_adds: usize,
    /// Of `pools`, those that became one [`MaxPool8`] op (padding included).
    pub pools_8bit: usize,
    /// Strided 1x1 convolutions now reading a [`Subsample`] with stride 1.
    pub subsampled_convs: usize,
}

fn parse_fused(
    _ctx: &tract_onnx::model::ParsingContext,
    node: &pb::NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let groups: usize = node.get_attr("num_groups")?;
    let eps: f32 = node.get_attr_opt("epsilon")?.unwrap_or(1e-5);
    let input_scale: Option<f32> = node.get_attr_opt("input_scale")?;
    // Over u8 values q = x / s (+ zp), the same normalization needs eps / s^2.
    let eps = match input_scale {
        Some(s) => eps / (s * s),
        None => eps,
    };
    Ok((expand(FusedExpansion { groups, eps, u8_input: input_scale.is_some() }), vec![]))
}

/// Rewrites the graph for tract (see the module documentation). Every rewrite applies only
/// where the values it removes have no other reader and are not graph outputs.
pub fn fuse_for_tract(proto: &mut pb::ModelProto) -> Fused {
    let (pools, pools_8bit) = proto.graph.as_mut().map(sink_dequantize_through_pools).unwrap_or((0, 0));
    let group_norm_chains = fuse_group_norms(proto);
    let dequantize_adds = proto.graph.as_mut().map(fuse_dequantize_adds).unwrap_or(0);
    let subsampled_convs = proto.graph.as_mut().map(subsample_pointwise_convs).unwrap_or(0);
    let custom_ops = group_norm_chains + dequantize_adds + pools_8bit + subsampled_convs;
    if custom_ops > 0 && !proto.opset_import.iter().any(|o| o.domain == FUSED_DOMAIN) {
        proto.opset_import.push(pb::OperatorSetIdProto { domain: FUSED_DOMAIN.into(), version: 1 });
    }
    Fused { group_norm_chains, pools, dequantize_adds, pools_8bit, subsampled_convs }
}

/// A scalar initializer's value as f32 (float, uint8 or int8 tensors).
fn scalar_initializer(graph: &pb::GraphProto, name: &str) -> Option<f32> {
    use pb::tensor_proto::DataType;
    let t = graph.initializer.iter().find(|t| t.name == name)?;
    if !t.dims.iter().all(|&d| d == 1) {
        return None;
    }
    let dt = DataType::try_from(t.data_type).ok()?;
    match (dt, t.raw_data.as_slice()) {
        (DataType::Float, [a, b, c, d]) => Some(f32::from_le_bytes([*a, *b, *c, *d])),
        (DataType::Float, []) => t.float_data.first().copied().filter(|_| t.float_data.len() == 1),
        (DataType::Uint8, [v]) => Some(*v as f32),
        (DataType::Int8, [v]) => Some(*v as i8 as f32),
        (DataType::Uint8 | DataType::Int8, []) => {
            t.int32_data.first().map(|&v| v as f32).filter(|_| t.int32_data.len() == 1)
        }
        _ => None,
    }
}

fn readers(graph: &pb::GraphProto, name: &str) -> usize {
    graph.node.iter().filter(|n| n.input.iter().any(|i| i == name)).count()
}

fn is_output(graph: &pb::GraphProto, name: &str) -> bool {
    graph.output.iter().any(|o| o.name == name)
}

/// A node's integer-list attribute (`None` if absent).
fn ints_attr(node: &pb::NodeProto, name: &str) -> Option<Vec<i64>> {
    node.attribute.iter().find(|a| a.name == name).map(|a| a.ints.clone())
}

/// A node's string attribute (`None` if absent).
fn string_attr<'n>(node: &'n pb::NodeProto, name: &str) -> Option<&'n [u8]> {
    node.attribute.iter().find(|a| a.name == name).map(|a| a.s.as_slice())
}

fn ints_proto(name: &str, ints: Vec<i64>) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        ints,
        r#type: pb::attribute_proto::AttributeType::Ints as i32,
        ..Default::default()
    }
}

/// An int64 initializer's values.
fn i64_initializer(graph: &pb::GraphProto, name: &str) -> Option<Vec<i64>> {
    let t = graph.initializer.iter().find(|t| t.name == name)?;
    if t.data_type != pb::tensor_proto::DataType::Int64 as i32 {
        return None;
    }
    if t.raw_data.is_empty() {
        return Some(t.int64_data.clone());
    }
    let chunks = t.raw_data.chunks_exact(8);
    if !chunks.remainder().is_empty() {
        return None;
    }
    Some(chunks.map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect())
}

/// `[top, left, bottom, right]` of a 4D Pad's constant `pads` input (N and C unpadded, none
/// negative).
fn spatial_pads(graph: &pb::GraphProto, pad: &pb::NodeProto) -> Option<[i64; 4]> {
    match i64_initializer(graph, pad.input.get(1)?)?.as_slice() {
        &[0, 0, t, l, 0, 0, b, r] if [t, l, b, r].iter().all(|&p| p >= 0) => Some([t, l, b, r]),
        _ => None,
    }
}

/// `(kernel, strides)` of a 2D MaxPool that a [`MaxPool8`] computes exactly: one output, no
/// padding of its own, no dilation, floor rounding.
fn plain_max_pool(pool: &pb::NodeProto) -> Option<([i64; 2], [i64; 2])> {
    let kernel: [i64; 2] = ints_attr(pool, "kernel_shape")?.try_into().ok()?;
    let strides: [i64; 2] = ints_attr(pool, "strides").unwrap_or(vec![1, 1]).try_into().ok()?;
    let ones = |name: &str, v: i64| ints_attr(pool, name).is_none_or(|d| d.iter().all(|&x| x == v));
    let auto_pad = string_attr(pool, "auto_pad").is_none_or(|a| a == b"NOTSET" || a == b"VALID");
    let ceil = pool.attribute.iter().any(|a| a.name == "ceil_mode" && a.i != 0);
    let positive = kernel.iter().chain(&strides).all(|&v| v >= 1);
    (pool.output.len() == 1 && ones("pads", 0) && ones("dilations", 1) && auto_pad && !ceil && positive)
        .then_some((kernel, strides))
}

/// A `DequantizeLinear` with a scalar scale (> 0) and zero point, read by one node only.
struct SoleDequantize {
    /// Its index in the graph's nodes.
    index: usize,
    /// The quantized tensor it reads.
    input: String,
    scale: f32,
    zero_point: f32,
    /// The zero point's initializer, if the node names one (absent means 0).
    zero_point_name: Option<String>,
}

/// The `DequantizeLinear` producing `name`, if it has scalar parameters and `name` has no
/// other reader and is not a graph output.
fn sole_dequantize(graph: &pb::GraphProto, name: &str) -> Option<SoleDequantize> {
    let index = graph.node.iter().position(|n| {
        n.op_type == "DequantizeLinear" && n.output.first().map(String::as_str) == Some(name)
    })?;
    if readers(graph, name) != 1 || is_output(graph, name) {
        return None;
    }
    let node = &graph.node[index];
    let scale = scalar_initializer(graph, node.input.get(1)?).filter(|s| *s > 0.0 && s.is_finite())?;
    let zero_point_name = node.input.get(2).filter(|n| !n.is_empty()).cloned();
    let zero_point = match &zero_point_name {
        Some(z) => scalar_initializer(graph, z)?,
        None => 0.0,
    };
    Some(SoleDequantize { index, input: node.input[0].clone(), scale, zero_point, zero_point_name })
}

/// `DequantizeLinear(q) -> Pad(constant 0) -> MaxPool` becomes `MaxPool8(q, padded with the
/// zero point) -> DequantizeLinear`, or `Pad(q, zero point) -> MaxPool -> DequantizeLinear`
/// where the pool has settings [`MaxPool8`] does not cover. Returns how many were rewritten
/// and how many of those are [`MaxPool8`] ops.
fn sink_dequantize_through_pools(graph: &mut pb::GraphProto) -> (usize, usize) {
    let (mut done, mut pools_8bit) = (0, 0);
    'search: loop {
        for p in 0..graph.node.len() {
            let pad = &graph.node[p];
            // Opset 11+ Pad (pads as an input), constant mode, value absent, empty or 0.
            let constant = pad.attribute.iter().all(|a| a.name != "mode" || a.s == b"constant");
            let value_zero = match pad.input.get(2).map(String::as_str) {
                None | Some("") => true,
                Some(v) => scalar_initializer(graph, v) == Some(0.0),
            };
            if pad.op_type != "Pad" || pad.input.len() < 2 || !constant || !value_zero || pad.input.len() > 3
            {
                continue;
            }
            let Some(dq) = sole_dequantize(graph, &pad.input[0]) else { continue };
            let pad_out = pad.output[0].clone();
            let Some(m) = graph.node.iter().position(|n| {
                n.op_type == "MaxPool" && n.output.len() == 1 && n.input.first() == Some(&pad_out)
            }) else {
                continue;
            };
            if readers(graph, &pad_out) != 1 || is_output(graph, &pad_out) {
                continue;
            }
            let pool_out = graph.node[m].output[0].clone();
            let pool_q = format!("{pool_out}/u8");
            let mut dq_node = graph.node[dq.index].clone();
            dq_node.input[0] = pool_q.clone();
            dq_node.output[0] = pool_out;
            let fused = spatial_pads(graph, pad).zip(plain_max_pool(&graph.node[m]));
            if let Some((pads, (kernel, strides))) = fused {
                // One op replaces the pad and the pool; the dequantize takes the pool's place.
                graph.node[p] = pb::NodeProto {
                    name: graph.node[m].name.clone(),
                    op_type: POOL_OP.into(),
                    domain: FUSED_DOMAIN.into(),
                    input: vec![dq.input],
                    output: vec![pool_q],
                    attribute: vec![
                        ints_proto("kernel_shape", kernel.to_vec()),
                        ints_proto("strides", strides.to_vec()),
                        ints_proto("pads", pads.to_vec()),
                        pb::AttributeProto {
                            name: "pad_value".into(),
                            i: dq.zero_point as i64,
                            r#type: pb::attribute_proto::AttributeType::Int as i32,
                            ..Default::default()
                        },
                    ],
                    ..Default::default()
                };
                graph.node[m] = dq_node;
                graph.node.remove(dq.index);
                pools_8bit += 1;
            } else {
                let pad = &mut graph.node[p];
                pad.input[0] = dq.input;
                // Padding with the zero point (a missing one is 0, Pad's default) pads with 0.0.
                pad.input.truncate(2);
                pad.input.extend(dq.zero_point_name);
                graph.node[m].output[0] = pool_q;
                graph.node.remove(dq.index);
                // After the pool, which moved up by one if the dequantize was before it.
                let m = if dq.index < m { m - 1 } else { m };
                graph.node.insert(m + 1, dq_node);
            }
            done += 1;
            continue 'search;
        }
        return (done, pools_8bit);
    }
}

/// A 1x1 convolution with stride s and no padding reads every s-th pixel: a [`Subsample`]
/// picks those first and the convolution runs with stride 1. (tract would insert a generic
/// Downsample per axis instead.) Returns how many convolutions were changed.
fn subsample_pointwise_convs(graph: &mut pb::GraphProto) -> usize {
    let mut done = 0;
    let mut i = 0;
    while i < graph.node.len() {
        let conv = &graph.node[i];
        let weight = match conv.op_type.as_str() {
            "Conv" | "ConvInteger" => 1,
            "QLinearConv" => 3,
            _ => usize::MAX,
        };
        let pointwise = conv.domain.is_empty()
            && weight != usize::MAX
            && conv
                .input
                .get(weight)
                .and_then(|w| graph.initializer.iter().find(|t| &t.name == w))
                .is_some_and(|w| w.dims.len() == 4 && w.dims[2..] == [1, 1])
            && ints_attr(conv, "kernel_shape").is_none_or(|k| k == [1, 1])
            && ints_attr(conv, "pads").is_none_or(|p| p.iter().all(|&v| v == 0))
            && string_attr(conv, "auto_pad").is_none_or(|a| a == b"NOTSET" || a == b"VALID");
        let strides = ints_attr(conv, "strides").unwrap_or_default();
        if !pointwise || strides.len() != 2 || strides.iter().any(|&s| s < 1) || strides == [1, 1] {
            i += 1;
            continue;
        }
        let picked = format!("{}/{}", conv.name, SUBSAMPLE_OP);
        let node = pb::NodeProto {
            name: picked.clone(),
            op_type: SUBSAMPLE_OP.into(),
            domain: FUSED_DOMAIN.into(),
            input: vec![conv.input[0].clone()],
            output: vec![picked.clone()],
            attribute: vec![ints_proto("strides", strides)],
            ..Default::default()
        };
        let conv = &mut graph.node[i];
        conv.input[0] = picked;
        conv.attribute.retain(|a| a.name != "strides");
        conv.attribute.push(ints_proto("strides", vec![1, 1]));
        graph.node.insert(i, node);
        done += 1;
        i += 2;
    }
    done
}

/// `Add(DequantizeLinear(q), y)` (either side, or both) becomes one `BitDequantizeAdd` node.
fn fuse_dequantize_adds(graph: &mut pb::GraphProto) -> usize {
    let mut done = 0;
    'search: loop {
        for a in 0..graph.node.len() {
            let add = &graph.node[a];
            if add.op_type != "Add"
                || !add.domain.is_empty()
                || add.input.len() != 2
                || add.input[0] == add.input[1]
            {
                continue;
            }
            let sides = [sole_dequantize(graph, &add.input[0]), sole_dequantize(graph, &add.input[1])];
            if sides.iter().all(Option::is_none) {
                continue;
            }
            let mut node = add.clone();
            node.op_type = DQ_ADD_OP.into();
            node.domain = FUSED_DOMAIN.into();
            let mut remove = Vec::new();
            for (i, side) in sides.into_iter().enumerate() {
                if let Some(SoleDequantize { index, input, scale, zero_point, .. }) = side {
                    node.input[i] = input;
                    let tag = ["a", "b"][i];
                    node.attribute.push(pb::AttributeProto {
                        name: format!("scale_{tag}"),
                        f: scale,
                        r#type: pb::attribute_proto::AttributeType::Float as i32,
                        ..Default::default()
                    });
                    node.attribute.push(pb::AttributeProto {
                        name: format!("zero_point_{tag}"),
                        i: zero_point as i64,
                        r#type: pb::attribute_proto::AttributeType::Int as i32,
                        ..Default::default()
                    });
                    remove.push(index);
                }
            }
            graph.node[a] = node;
            remove.sort_unstable();
            for d in remove.into_iter().rev() {
                graph.node.remove(d);
            }
            done += 1;
            continue 'search;
        }
        return done;
    }
}

/// Replaces every `GroupNormalization -> Clip(0, 255) -> Cast(u8)` chain whose intermediate
/// values have no other reader by one fused node. Returns how many were fused.
fn fuse_group_norms(proto: &mut pb::ModelProto) -> usize {
    let opset = proto.opset_import.iter().find(|o| o.domain.is_empty()).map(|o| o.version).unwrap_or(0);
    // Before opset 21, GroupNormalization's scale and bias are per group, not per channel.
    if opset < 21 {
        return 0;
    }
    let Some(graph) = proto.graph.as_mut() else { return 0 };
    // An intermediate value the fusion removes: read by one node only, not a graph output.
    let sole = |name: &str| readers(graph, name) == 1 && !is_output(graph, name);
    let mut chains = Vec::new();
    for (g, gn) in graph.node.iter().enumerate() {
        if gn.op_type != "GroupNormalization" || !sole(&gn.output[0]) {
            continue;
        }
        let Some(c) =
            graph.node.iter().position(|n| n.op_type == "Clip" && n.input.first() == Some(&gn.output[0]))
        else {
            continue;
        };
        let clip = &graph.node[c];
        let bound = |i: usize| clip.input.get(i).and_then(|n| scalar_initializer(graph, n));
        if (bound(1), bound(2)) != (Some(0.0), Some(255.0)) || !sole(&clip.output[0]) {
            continue;
        }
        let Some(k) = graph.node.iter().position(|n| {
            n.op_type == "Cast"
                && n.input.first() == Some(&clip.output[0])
                && n.attribute
                    .iter()
                    .any(|a| a.name == "to" && a.i == pb::tensor_proto::DataType::Uint8 as i64)
        }) else {
            continue;
        };
        chains.push((g, c, k));
    }
    // GroupNorm is invariant to shifting its input, and scaling it by s only scales eps by
    // 1/s^2: GN(s (q - zp), eps) = GN(q, eps / s^2). So a DequantizeLinear feeding the chain
    // (a conv output read by nothing else) is absorbed and the op reads the u8 directly.
    let absorbed: Vec<Option<SoleDequantize>> =
        chains.iter().map(|&(g, _, _)| sole_dequantize(graph, &graph.node[g].input[0])).collect();
    let mut remove = Vec::new();
    for (&(g, c, k), absorbed) in chains.iter().zip(absorbed) {
        let out = graph.node[k].output[0].clone();
        let gn = &mut graph.node[g];
        gn.op_type = FUSED_OP.into();
        gn.domain = FUSED_DOMAIN.into();
        gn.output = vec![out];
        if let Some(dq) = absorbed {
            gn.input[0] = dq.input;
            gn.attribute.push(pb::AttributeProto {
                name: "input_scale".into(),
                f: dq.scale,
                r#type: pb::attribute_proto::AttributeType::Float as i32,
                ..Default::default()
            });
            remove.push(dq.index);
        }
        remove.extend([c, k]);
    }
    remove.sort_unstable();
    for i in remove.into_iter().rev() {
        graph.node.remove(i);
    }
    chains.len()
}

#[derive(Clone, Debug, PartialEq)]
struct FusedExpansion {
    groups: usize,
    eps: f32,
    u8_input: bool,
}

impl Expansion for FusedExpansion {
    fn name(&self) -> StaticName {
        FUSED_OP.into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 3)?;
        check_output_arity(outputs, 1)?;
        s.equals(&inputs[0].datum_type, if self.u8_input { u8::datum_type() } else { f32::datum_type() })?;
        s.equals(&outputs[0].datum_type, u8::datum_type())?;
        s.equals(&inputs[0].shape, &outputs[0].shape)?;
        Ok(())
    }

    fn wire(&self, prefix: &str, model: &mut TypedModel, inputs: &[OutletId]) -> TractResult<TVec<OutletId>> {
        let konst = |i: usize| -> TractResult<Vec<f32>> {
            let fact = model.outlet_fact(inputs[i])?;
            let t = fact.konst.clone().with_context(|| format!("{prefix}: input {i} must be a constant"))?;
            Ok(t.cast_to::<f32>()?.try_as_plain_ram()?.as_slice::<f32>()?.to_vec())
        };
        let (scale, bias) = (konst(1)?, konst(2)?);
        let fact = model.outlet_fact(inputs[0])?;
        let channels = fact.shape.get(1).and_then(|d| d.to_usize().ok()).context("channel count")?;
        ensure!(
            scale.len() == channels && bias.len() == channels && channels % self.groups == 0,
            "{prefix}: {channels} channels, {} groups, {} scales, {} biases",
            self.groups,
            scale.len(),
            bias.len()
        );
        let op =
            GroupNormQuantizeU8 { groups: self.groups, eps: self.eps, scale, bias, u8_input: self.u8_input };
        model.wire_node(prefix, op, &inputs[..1])
    }
}

/// GroupNorm with a per-channel affine, clamped to [0, 255] and truncated to u8 (the affine
/// carries the quantization scale and the +0.5 that makes truncation round).
#[derive(Clone, Debug, PartialEq)]
pub struct GroupNormQuantizeU8 {
    groups: usize,
    eps: f32,
    scale: Vec<f32>,
    bias: Vec<f32>,
    /// The input is a u8 conv output (its DequantizeLinear absorbed), not f32.
    u8_input: bool,
}

impl Eq for GroupNormQuantizeU8 {}

impl Op for GroupNormQuantizeU8 {
    fn name(&self) -> StaticName {
        FUSED_OP.into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "groups: {} eps: {} input: {}",
            self.groups,
            self.eps,
            if self.u8_input { "u8" } else { "f32" }
        )])
    }

    tract_onnx::tract_core::op_as_typed_op!();
}

impl EvalOp for GroupNormQuantizeU8 {
    tract_onnx::tract_core::op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = &inputs[0];
        let shape = input.shape();
        let channels = shape[1];
        let spatial: usize = shape[2..].iter().product();
        let mut output = unsafe { Tensor::uninitialized::<u8>(shape)? };
        {
            let x = input.try_as_plain_ram()?;
            let mut out = output.try_as_plain_ram_mut()?;
            let out = out.as_slice_mut::<u8>()?;
            let (g, e, sc, bi) = (self.groups, self.eps, &self.scale[..], &self.bias[..]);
            match input.datum_type() {
                DatumType::F32 => {
                    group_norm_quantize_on_pool(x.as_slice::<f32>()?, out, channels, spatial, g, e, sc, bi)?
                }
                DatumType::U8 => {
                    group_norm_quantize_on_pool(x.as_slice::<u8>()?, out, channels, spatial, g, e, sc, bi)?
                }
                dt => bail!("{FUSED_OP}: unsupported input type {dt:?}"),
            }
        }
        Ok(tvec!(output.into_tvalue()))
    }
}

impl TypedOp for GroupNormQuantizeU8 {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(u8::datum_type().fact(inputs[0].shape.clone())))
    }

    tract_onnx::tract_core::as_op!();
}

/// Sum of a slice in eight independent lanes (vectorizable, and closer to pairwise summation
/// than one running total).
#[inline(always)]
fn lane_sum<T: Copy + Into<f32>>(values: &[T], f: impl Fn(f32) -> f32) -> f32 {
    let mut lanes = [0f32; 8];
    let chunks = values.chunks_exact(8);
    let rest = chunks.remainder();
    for chunk in chunks {
        for (l, v) in lanes.iter_mut().zip(chunk) {
            *l += f((*v).into());
        }
    }
    lanes.iter().sum::<f32>() + rest.iter().map(|v| f((*v).into())).sum::<f32>()
}

/// Runs `f` compiled for AVX2 where the CPU has it (x86_64 only; NEON is baseline on aarch64).
/// Everything `f` calls must be `#[inline(always)]` to be compiled with it. FMA stays off, so
/// the results are bit-identical to the baseline build (and to the ARM builds).
#[inline(always)]
fn simd_dispatch<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        #[target_feature(enable = "avx2")]
        unsafe fn avx2<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        // SAFETY: the CPU has AVX2 (checked above).
        return unsafe { avx2(f) };
    }
    f()
}

/// [`group_norm_quantize_group`] over every group of every batch item of NCHW `x`, whole
/// groups spread over the threads of tract's executor (`par_chunks_mut`: inline on one
/// thread). Groups are independent, so the result does not depend on the split.
#[allow(clippy::too_many_arguments)]
fn group_norm_quantize_on_pool<T: Copy + Into<f32> + Sync>(
    x: &[T],
    out: &mut [u8],
    channels: usize,
    spatial: usize,
    groups: usize,
    eps: f32,
    scale: &[f32],
    bias: &[f32],
) -> TractResult<()> {
    let per_group = channels / groups * spatial;
    let chunk = |first: usize, os: &mut [u8]| -> TractResult<()> {
        let xs = &x[first * per_group..][..os.len()];
        for (i, (xs, os)) in xs.chunks_exact(per_group).zip(os.chunks_exact_mut(per_group)).enumerate() {
            let c0 = (first + i) % groups * (channels / groups);
            let (sc, bi) = (&scale[c0..], &bias[c0..]);
            simd_dispatch(
                #[inline(always)]
                || group_norm_quantize_group(xs, os, spatial, eps, sc, bi),
            )
        }
        Ok(())
    };
    tract_linalg::multithread::par_chunks_mut(out, per_group, x.len(), chunk)
}

/// The kernel, for one group: `out = u8(clamp((x - mean_g) / sqrt(var_g + eps) * scale_c +
/// bias_c, 0, 255))`. `xs` and `out` hold the group's channels (`spatial` values each),
/// `scale` and `bias` start at its first channel.
#[inline(always)]
fn group_norm_quantize_group<T: Copy + Into<f32>>(
    xs: &[T],
    out: &mut [u8],
    spatial: usize,
    eps: f32,
    scale: &[f32],
    bias: &[f32],
) {
    let n = xs.len() as f32;
    let mean = lane_sum(xs, |v| v) / n;
    let var = lane_sum(xs, |v| (v - mean) * (v - mean)) / n;
    let inv = 1.0 / (var + eps).sqrt();
    for (c, (xc, oc)) in xs.chunks_exact(spatial).zip(out.chunks_exact_mut(spatial)).enumerate() {
        let a = inv * scale[c];
        let shift = bias[c] - mean * a;
        for (o, v) in oc.iter_mut().zip(xc) {
            // `max` maps NaN to 0, so y is finite and in [0, 255]; `clamp` would keep NaN.
            #[allow(clippy::manual_clamp)]
            let y = ((*v).into() * a + shift).max(0.0).min(255.0);
            // SAFETY: y is finite and within i32's range (see above). A saturating
            // `as u8` here does not vectorize and costs 4x as much.
            *o = unsafe { y.to_int_unchecked::<i32>() } as u8;
        }
    }
}

/// How a [`DequantizeAdd`] input becomes f32: as is, or `(q - zero_point) * scale`.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Dequantize {
    scale: f32,
    zero_point: i32,
}

fn parse_dequantize_add(
    _ctx: &tract_onnx::model::ParsingContext,
    node: &pb::NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let side = |tag: &str| -> TractResult<Option<Dequantize>> {
        let scale: Option<f32> = node.get_attr_opt(&format!("scale_{tag}"))?;
        let zero_point: Option<i64> = node.get_attr_opt(&format!("zero_point_{tag}"))?;
        Ok(match (scale, zero_point) {
            (Some(scale), Some(zp)) => Some(Dequantize { scale, zero_point: zp as i32 }),
            (None, None) => None,
            _ => bail!("{}: scale_{tag} and zero_point_{tag} go together", node.name),
        })
    };
    Ok((expand(DequantizeAddExpansion { sides: [side("a")?, side("b")?] }), vec![]))
}

#[derive(Clone, Debug, PartialEq)]
struct DequantizeAddExpansion {
    sides: [Option<Dequantize>; 2],
}

impl Expansion for DequantizeAddExpansion {
    fn name(&self) -> StaticName {
        DQ_ADD_OP.into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 2)?;
        check_output_arity(outputs, 1)?;
        for (input, side) in inputs.iter().zip(&self.sides) {
            if side.is_none() {
                s.equals(&input.datum_type, f32::datum_type())?;
            }
        }
        s.equals(&outputs[0].datum_type, f32::datum_type())?;
        s.given_2(&inputs[0].shape, &inputs[1].shape, move |s, a, b| {
            let shape = tract_onnx::tract_core::broadcast::multi_broadcast(&[a, b])?;
            s.equals(&outputs[0].shape, shape)
        })
    }

    fn wire(&self, prefix: &str, model: &mut TypedModel, inputs: &[OutletId]) -> TractResult<TVec<OutletId>> {
        let (a, b) = (model.outlet_fact(inputs[0])?.clone(), model.outlet_fact(inputs[1])?.clone());
        if a.shape == b.shape {
            for (fact, side) in [&a, &b].iter().zip(&self.sides) {
                let ok = match side {
                    Some(_) => [u8::datum_type(), i8::datum_type()].contains(&fact.datum_type),
                    None => fact.datum_type == f32::datum_type(),
                };
                ensure!(ok, "{prefix}: input of type {:?} with dequantization {side:?}", fact.datum_type);
            }
            return model.wire_node(prefix, DequantizeAdd { sides: self.sides }, inputs);
        }
        // Broadcasting: what the rewritten graph said, with tract's own ops.
        let mut wires = tvec!();
        for (i, side) in self.sides.iter().enumerate() {
            wires.push(match side {
                Some(d) => {
                    let op = tract_onnx::tract_core::ops::quant::DequantizeLinearF32 {
                        scale: d.scale,
                        zero_point: d.zero_point,
                    };
                    model.wire_node(format!("{prefix}.dequantize_{i}"), op, &[inputs[i]])?[0]
                }
                None => inputs[i],
            });
        }
        tract_onnx::tract_core::ops::change_axes::wire_with_rank_broadcast(
            prefix,
            model,
            tract_onnx::tract_core::ops::math::add(),
            &wires,
        )
    }
}

/// `dequantize(a) + dequantize(b)` over same-shaped inputs in one pass; dequantizing is
/// `(q - zero_point) as f32 * scale`, as tract's own DequantizeLinear computes it, so the sum
/// is bit-identical to the two ops it replaces.
#[derive(Clone, Debug, PartialEq)]
pub struct DequantizeAdd {
    sides: [Option<Dequantize>; 2],
}

impl Eq for DequantizeAdd {}

impl Op for DequantizeAdd {
    fn name(&self) -> StaticName {
        DQ_ADD_OP.into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!("{:?}", self.sides)])
    }

    tract_onnx::tract_core::op_as_typed_op!();
}

/// `out = fa(a) + fb(b)`, element by element, in blocks spread over the threads of tract's
/// executor (`par_chunks_mut`: inline on one thread).
fn dequantize_add_into<A: Copy + Sync, B: Copy + Sync>(
    a: &[A],
    b: &[B],
    out: &mut [f32],
    fa: impl Fn(A) -> f32 + Sync + Send,
    fb: impl Fn(B) -> f32 + Sync + Send,
) -> TractResult<()> {
    let chunk = |first: usize, out: &mut [f32]| -> TractResult<()> {
        let (a, b) = (&a[first..][..out.len()], &b[first..][..out.len()]);
        simd_dispatch(
            #[inline(always)]
            || {
                for ((o, x), y) in out.iter_mut().zip(a).zip(b) {
                    *o = fa(*x) + fb(*y);
                }
            },
        );
        Ok(())
    };
    tract_linalg::multithread::par_chunks_mut(out, 1, out.len(), chunk)
}

impl EvalOp for DequantizeAdd {
    tract_onnx::tract_core::op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        ensure!(inputs[0].shape() == inputs[1].shape(), "{DQ_ADD_OP}: shapes differ");
        let mut output = unsafe { Tensor::uninitialized::<f32>(inputs[0].shape())? };
        {
            let mut out = output.try_as_plain_ram_mut()?;
            let out = out.as_slice_mut::<f32>()?;
            let (a, b) = (inputs[0].try_as_plain_ram()?, inputs[1].try_as_plain_ram()?);
            let [sa, sb] = self.sides;
            let d = |side: Option<Dequantize>| side.unwrap_or(Dequantize { scale: 1.0, zero_point: 0 });
            let (da, db) = (d(sa), d(sb));
            let u8a = move |v: u8| (v as i32 - da.zero_point) as f32 * da.scale;
            let i8a = move |v: i8| (v as i32 - da.zero_point) as f32 * da.scale;
            let u8b = move |v: u8| (v as i32 - db.zero_point) as f32 * db.scale;
            let i8b = move |v: i8| (v as i32 - db.zero_point) as f32 * db.scale;
            let id = |v: f32| v;
            use DatumType::{F32, I8, U8};
            // One monomorphized loop per pair of input types.
            macro_rules! add {
                ($fa:expr, $fb:expr) => {
                    dequantize_add_into(a.as_slice()?, b.as_slice()?, out, $fa, $fb)?
                };
            }
            match (sa.is_some(), inputs[0].datum_type(), sb.is_some(), inputs[1].datum_type()) {
                (true, U8, false, F32) => add!(u8a, id),
                (true, U8, true, U8) => add!(u8a, u8b),
                (false, F32, true, U8) => add!(id, u8b),
                (true, I8, false, F32) => add!(i8a, id),
                (true, I8, true, I8) => add!(i8a, i8b),
                (false, F32, true, I8) => add!(id, i8b),
                (true, U8, true, I8) => add!(u8a, i8b),
                (true, I8, true, U8) => add!(i8a, u8b),
                (qa, ta, qb, tb) => {
                    bail!("{DQ_ADD_OP}: inputs {ta:?} (dequantized: {qa}) and {tb:?} (dequantized: {qb})")
                }
            }
        }
        Ok(tvec!(output.into_tvalue()))
    }
}

impl TypedOp for DequantizeAdd {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(f32::datum_type().fact(inputs[0].shape.clone())))
    }

    tract_onnx::tract_core::as_op!();
}

/// Shared inference rules of [`MaxPool8`] and [`Subsample`]: one NCHW input, one NCHW
/// output of its type with the same batch and channels.
fn same_type_batch_and_channels<'r, 'p: 'r>(
    s: &mut Solver<'r>,
    inputs: &'p [TensorProxy],
    outputs: &'p [TensorProxy],
) -> InferenceResult {
    check_input_arity(inputs, 1)?;
    check_output_arity(outputs, 1)?;
    s.equals(&outputs[0].datum_type, &inputs[0].datum_type)?;
    s.equals(&inputs[0].rank, 4)?;
    s.equals(&outputs[0].rank, 4)?;
    s.equals(&outputs[0].shape[0], &inputs[0].shape[0])?;
    s.equals(&outputs[0].shape[1], &inputs[0].shape[1])
}

fn parse_max_pool8(
    _ctx: &tract_onnx::model::ParsingContext,
    node: &pb::NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let pair = |name: &str| -> TractResult<[usize; 2]> {
        let v: Vec<i64> = node.get_attr_vec(name)?;
        ensure!(v.len() == 2 && v.iter().all(|&x| x >= 1), "{}: {name} {v:?}", node.name);
        Ok([v[0] as usize, v[1] as usize])
    };
    let pads: Vec<i64> = node.get_attr_vec("pads")?;
    ensure!(pads.len() == 4 && pads.iter().all(|&p| p >= 0), "{}: pads {pads:?}", node.name);
    let pads = [pads[0] as usize, pads[1] as usize, pads[2] as usize, pads[3] as usize];
    let op = MaxPool8 {
        kernel: pair("kernel_shape")?,
        strides: pair("strides")?,
        pads,
        pad_value: node.get_attr("pad_value")?,
    };
    Ok((expand(op), vec![]))
}

/// A 2D max pool over u8 or i8 NCHW values, padded with a constant (`pad_value`, the zero
/// point: the padding a float `Pad(0)` becomes). The maximum is exact in any type, so the
/// pool equals `Pad -> MaxPool` on the same values.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MaxPool8 {
    kernel: [usize; 2],
    strides: [usize; 2],
    /// `[top, left, bottom, right]`.
    pads: [usize; 4],
    pad_value: i64,
}

impl MaxPool8 {
    /// Output rows and columns for `h x w` inputs (floor rounding), if any.
    fn output_hw(&self, h: usize, w: usize) -> Option<(usize, usize)> {
        let [t, l, b, r] = self.pads;
        let out = |n: usize, k: usize, s: usize| (n >= k).then(|| (n - k) / s + 1);
        Some((
            out(h + t + b, self.kernel[0], self.strides[0])?,
            out(w + l + r, self.kernel[1], self.strides[1])?,
        ))
    }
}

impl Expansion for MaxPool8 {
    fn name(&self) -> StaticName {
        POOL_OP.into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        same_type_batch_and_channels(s, inputs, outputs)?;
        s.given_2(&inputs[0].shape[2], &inputs[0].shape[3], move |s, h, w| {
            if let (Ok(h), Ok(w)) = (h.to_usize(), w.to_usize()) {
                let (oh, ow) = self.output_hw(h, w).with_context(|| format!("{POOL_OP}: {h}x{w} input"))?;
                s.equals(&outputs[0].shape[2], oh.to_dim())?;
                s.equals(&outputs[0].shape[3], ow.to_dim())?;
            }
            Ok(())
        })
    }

    fn wire(&self, prefix: &str, model: &mut TypedModel, inputs: &[OutletId]) -> TractResult<TVec<OutletId>> {
        let fact = model.outlet_fact(inputs[0])?;
        ensure!(
            [u8::datum_type(), i8::datum_type()].contains(&fact.datum_type.unquantized()),
            "{prefix}: {POOL_OP} reads u8 or i8, not {:?}",
            fact.datum_type
        );
        let range = if fact.datum_type.unquantized() == u8::datum_type() { 0..=255 } else { -128..=127 };
        ensure!(range.contains(&self.pad_value), "{prefix}: pad value {} out of range", self.pad_value);
        model.wire_node(prefix, self.clone(), inputs)
    }
}

impl Op for MaxPool8 {
    fn name(&self) -> StaticName {
        POOL_OP.into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!("{self:?}")])
    }

    tract_onnx::tract_core::op_as_typed_op!();
}

impl EvalOp for MaxPool8 {
    tract_onnx::tract_core::op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = &inputs[0];
        let &[n, c, h, w] = input.shape() else { bail!("{POOL_OP}: input shape {:?}", input.shape()) };
        let (oh, ow) = self.output_hw(h, w).with_context(|| format!("{POOL_OP}: {h}x{w} input"))?;
        let mut output = unsafe { Tensor::uninitialized_dt(input.datum_type(), &[n, c, oh, ow])? };
        {
            let x = input.try_as_plain_ram()?;
            let mut out = output.try_as_plain_ram_mut()?;
            match input.datum_type().unquantized() {
                DatumType::U8 => {
                    self.pool(x.as_slice::<u8>()?, out.as_slice_mut::<u8>()?, h, w, self.pad_value as u8)
                }
                DatumType::I8 => {
                    self.pool(x.as_slice::<i8>()?, out.as_slice_mut::<i8>()?, h, w, self.pad_value as i8)
                }
                dt => bail!("{POOL_OP}: unsupported input type {dt:?}"),
            }
        }
        Ok(tvec!(output.into_tvalue()))
    }
}

impl MaxPool8 {
    /// Per plane and output row: the elementwise maximum of the window's input rows (with
    /// the pad value where the window leaves the image) into a padded row, then the maximum
    /// over each window of that row.
    fn pool<T: Copy + Ord>(&self, x: &[T], out: &mut [T], h: usize, w: usize, pad: T) {
        let Some((oh, ow)) = self.output_hw(h, w) else { return };
        let ([kh, kw], [sh, sw], [t, l, _, r]) = (self.kernel, self.strides, self.pads);
        let mut row = vec![pad; l + w + r];
        for (plane, out) in x.chunks_exact(h * w).zip(out.chunks_exact_mut(oh * ow)) {
            for (oy, out) in out.chunks_exact_mut(ow).enumerate() {
                let top = (oy * sh) as isize - t as isize;
                let mut rows = (top..top + kh as isize).filter(|&y| (0..h as isize).contains(&y));
                let inner = &mut row[l..l + w];
                match rows.next() {
                    Some(y) => inner.copy_from_slice(&plane[y as usize * w..][..w]),
                    None => inner.fill(pad),
                }
                for y in rows {
                    for (m, &v) in inner.iter_mut().zip(&plane[y as usize * w..][..w]) {
                        *m = (*m).max(v);
                    }
                }
                if top < 0 || top + kh as isize > h as isize {
                    for m in inner.iter_mut() {
                        *m = (*m).max(pad);
                    }
                }
                if kw == 3 && sw == 2 {
                    // BiT's stem (3x3/2): a shape the compiler vectorizes.
                    for (ox, o) in out.iter_mut().enumerate() {
                        *o = row[2 * ox].max(row[2 * ox + 1]).max(row[2 * ox + 2]);
                    }
                } else {
                    for (ox, o) in out.iter_mut().enumerate() {
                        *o = row[ox * sw..ox * sw + kw].iter().copied().max().unwrap_or(pad);
                    }
                }
            }
        }
    }
}

impl TypedOp for MaxPool8 {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let shape = inputs[0].shape.as_concrete().context("MaxPool8 needs concrete shapes")?;
        let &[n, c, h, w] = shape else { bail!("{POOL_OP}: input shape {shape:?}") };
        let (oh, ow) = self.output_hw(h, w).with_context(|| format!("{POOL_OP}: {h}x{w} input"))?;
        Ok(tvec!(inputs[0].datum_type.fact([n, c, oh, ow])))
    }

    tract_onnx::tract_core::as_op!();
}

fn parse_subsample(
    _ctx: &tract_onnx::model::ParsingContext,
    node: &pb::NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let strides: Vec<i64> = node.get_attr_vec("strides")?;
    ensure!(strides.len() == 2 && strides.iter().all(|&s| s >= 1), "{}: strides {strides:?}", node.name);
    Ok((expand(Subsample { strides: [strides[0] as usize, strides[1] as usize] }), vec![]))
}

/// Every `strides`-th row and column of an NCHW tensor (u8, i8, f32 or i32):
/// `y[n, c, i, j] = x[n, c, i * sh, j * sw]`, `ceil(h / sh) x ceil(w / sw)` per plane. A 1x1
/// convolution with stride s and no padding equals this followed by the stride-1 convolution.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Subsample {
    strides: [usize; 2],
}

impl Expansion for Subsample {
    fn name(&self) -> StaticName {
        SUBSAMPLE_OP.into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        same_type_batch_and_channels(s, inputs, outputs)?;
        let [sh, sw] = self.strides;
        s.given(&inputs[0].shape[2], move |s, h| s.equals(&outputs[0].shape[2], h.div_ceil(sh as u64)))?;
        s.given(&inputs[0].shape[3], move |s, w| s.equals(&outputs[0].shape[3], w.div_ceil(sw as u64)))
    }

    fn wire(&self, prefix: &str, model: &mut TypedModel, inputs: &[OutletId]) -> TractResult<TVec<OutletId>> {
        model.wire_node(prefix, self.clone(), inputs)
    }
}

impl Op for Subsample {
    fn name(&self) -> StaticName {
        SUBSAMPLE_OP.into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!("strides: {:?}", self.strides)])
    }

    tract_onnx::tract_core::op_as_typed_op!();
}

impl Subsample {
    fn pick<T: Copy>(&self, x: &[T], out: &mut [T], h: usize, w: usize) {
        let [sh, sw] = self.strides;
        let (oh, ow) = (h.div_ceil(sh), w.div_ceil(sw));
        for (plane, out) in x.chunks_exact(h * w).zip(out.chunks_exact_mut(oh * ow)) {
            for (y, out) in out.chunks_exact_mut(ow).enumerate() {
                let row = &plane[y * sh * w..][..w];
                for (o, v) in out.iter_mut().zip(row.iter().step_by(sw)) {
                    *o = *v;
                }
            }
        }
    }
}

impl EvalOp for Subsample {
    tract_onnx::tract_core::op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = &inputs[0];
        let &[n, c, h, w] = input.shape() else { bail!("{SUBSAMPLE_OP}: input shape {:?}", input.shape()) };
        let [sh, sw] = self.strides;
        let mut output =
            unsafe { Tensor::uninitialized_dt(input.datum_type(), &[n, c, h.div_ceil(sh), w.div_ceil(sw)])? };
        {
            let x = input.try_as_plain_ram()?;
            let mut out = output.try_as_plain_ram_mut()?;
            match input.datum_type().unquantized() {
                DatumType::U8 | DatumType::I8 => self.pick(x.as_bytes(), out.as_bytes_mut(), h, w),
                DatumType::F32 => self.pick(x.as_slice::<f32>()?, out.as_slice_mut::<f32>()?, h, w),
                DatumType::I32 => self.pick(x.as_slice::<i32>()?, out.as_slice_mut::<i32>()?, h, w),
                dt => bail!("{SUBSAMPLE_OP}: unsupported input type {dt:?}"),
            }
        }
        Ok(tvec!(output.into_tvalue()))
    }
}

impl TypedOp for Subsample {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let shape = &inputs[0].shape;
        ensure!(shape.rank() == 4, "{SUBSAMPLE_OP}: input shape {shape:?}");
        let [sh, sw] = self.strides;
        let out = [
            shape[0].clone(),
            shape[1].clone(),
            shape[2].clone().div_ceil(sh as u64),
            shape[3].clone().div_ceil(sw as u64),
        ];
        Ok(tvec!(inputs[0].datum_type.fact(out)))
    }

    tract_onnx::tract_core::as_op!();
}
