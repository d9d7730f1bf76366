//! Protobuf rewrites applied before tract parses a model ([`for_tract`]): each replaces a
//! chain of standard ops by one of the custom ops in [`crate::ops`], or keeps values in 8 bits
//! where that is exact. The model file stays standard ONNX (ONNX Runtime runs it unchanged);
//! only the runtime's view of it changes.
//!
//! - `GroupNormalization -> Clip(0, 255) -> Cast(u8)` (how `bit-tool quantize` writes every
//!   quantized convolution's input) becomes one [`group_norm`] op; a `DequantizeLinear`
//!   feeding the chain is absorbed, so the op reads the convolution's u8 output.
//! - `DequantizeLinear -> Pad(0) -> MaxPool` (BiT's stem) becomes
//!   `BitMaxPool8 -> DequantizeLinear` ([`max_pool8`]); a pool with settings `BitMaxPool8`
//!   does not cover (dilation, ceil rounding) becomes `Pad(zero point) -> MaxPool ->
//!   DequantizeLinear` instead. The dequantize then feeds the GroupNorm chain and is absorbed.
//! - `Add(DequantizeLinear(q), y)` (each residual sum) becomes one [`dequantize_add`] op.
//! - A 1x1 convolution with stride s and no padding (BiT's projections) reads a
//!   [`subsample`] of its input with stride 1.
//!
//! Every rewrite applies only where the values it removes have no other reader and are not
//! graph outputs.

use tract_onnx::pb;

use crate::ops::{DOMAIN, dequantize_add, group_norm, max_pool8, subsample};
use crate::proto;

/// What [`for_tract`] rewrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rewrites {
    /// `GroupNormalization -> Clip(0, 255) -> Cast(u8)` chains replaced by one op.
    pub group_norm_chains: usize,
    /// `DequantizeLinear -> Pad -> MaxPool` turned into a pool over the quantized values.
    pub pools: usize,
    /// `Add`s with a dequantized input replaced by one op.
    pub dequantize_adds: usize,
    /// Of `pools`, those that became one `BitMaxPool8` op (padding included).
    pub pools_8bit: usize,
    /// Strided 1x1 convolutions now reading a `BitSubsample` with stride 1.
    pub subsampled_convs: usize,
}

/// Rewrites `model` for tract (see the module documentation).
pub fn for_tract(model: &mut pb::ModelProto) -> Rewrites {
    let (pools, pools_8bit) = model.graph.as_mut().map(sink_dequantize_through_pools).unwrap_or((0, 0));
    let group_norm_chains = fuse_group_norms(model);
    let dequantize_adds = model.graph.as_mut().map(fuse_dequantize_adds).unwrap_or(0);
    let subsampled_convs = model.graph.as_mut().map(subsample_pointwise_convs).unwrap_or(0);
    let custom_ops = group_norm_chains + dequantize_adds + pools_8bit + subsampled_convs;
    if custom_ops > 0 && !model.opset_import.iter().any(|o| o.domain == DOMAIN) {
        model.opset_import.push(pb::OperatorSetIdProto { domain: DOMAIN.into(), version: 1 });
    }
    Rewrites { group_norm_chains, pools, dequantize_adds, pools_8bit, subsampled_convs }
}

/// `[top, left, bottom, right]` of a 4D Pad's constant `pads` input (N and C unpadded, none
/// negative).
fn spatial_pads(graph: &pb::GraphProto, pad: &pb::NodeProto) -> Option<[i64; 4]> {
    match proto::i64_initializer(graph, pad.input.get(1)?)?.as_slice() {
        &[0, 0, t, l, 0, 0, b, r] if [t, l, b, r].iter().all(|&p| p >= 0) => Some([t, l, b, r]),
        _ => None,
    }
}

/// `(kernel, strides)` of a 2D MaxPool that a `BitMaxPool8` computes exactly: one output, no
/// padding of its own, no dilation, floor rounding.
fn plain_max_pool(pool: &pb::NodeProto) -> Option<([i64; 2], [i64; 2])> {
    let kernel: [i64; 2] = proto::ints_attr(pool, "kernel_shape")?.try_into().ok()?;
    let strides: [i64; 2] = proto::ints_attr(pool, "strides").unwrap_or(vec![1, 1]).try_into().ok()?;
    let ones = |name: &str, v: i64| proto::ints_attr(pool, name).is_none_or(|d| d.iter().all(|&x| x == v));
    let auto_pad = proto::string_attr(pool, "auto_pad").is_none_or(|a| a == b"NOTSET" || a == b"VALID");
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
    if !proto::sole_reader(graph, name) {
        return None;
    }
    let node = &graph.node[index];
    let scale = proto::scalar_initializer(graph, node.input.get(1)?).filter(|s| *s > 0.0 && s.is_finite())?;
    let zero_point_name = node.input.get(2).filter(|n| !n.is_empty()).cloned();
    let zero_point = match &zero_point_name {
        Some(z) => proto::scalar_initializer(graph, z)?,
        None => 0.0,
    };
    Some(SoleDequantize { index, input: node.input[0].clone(), scale, zero_point, zero_point_name })
}

/// `DequantizeLinear(q) -> Pad(constant 0) -> MaxPool` becomes `MaxPool8(q, padded with the
/// zero point) -> DequantizeLinear`, or `Pad(q, zero point) -> MaxPool -> DequantizeLinear`
/// where the pool has settings `BitMaxPool8` does not cover. Returns how many were rewritten
/// and how many of those are `BitMaxPool8` ops.
fn sink_dequantize_through_pools(graph: &mut pb::GraphProto) -> (usize, usize) {
    let (mut done, mut pools_8bit) = (0, 0);
    'search: loop {
        for p in 0..graph.node.len() {
            let pad = &graph.node[p];
            // Opset 11+ Pad (pads as an input), constant mode, value absent, empty or 0.
            let constant = pad.attribute.iter().all(|a| a.name != "mode" || a.s == b"constant");
            let value_zero = match pad.input.get(2).map(String::as_str) {
                None | Some("") => true,
                Some(v) => proto::scalar_initializer(graph, v) == Some(0.0),
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
            if !proto::sole_reader(graph, &pad_out) {
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
                    op_type: max_pool8::OP.into(),
                    domain: DOMAIN.into(),
                    input: vec![dq.input],
                    output: vec![pool_q],
                    attribute: vec![
                        proto::ints("kernel_shape", kernel.to_vec()),
                        proto::ints("strides", strides.to_vec()),
                        proto::ints("pads", pads.to_vec()),
                        proto::int("pad_value", dq.zero_point as i64),
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

/// A 1x1 convolution with stride s and no padding reads every s-th pixel: a `BitSubsample`
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
            && proto::ints_attr(conv, "kernel_shape").is_none_or(|k| k == [1, 1])
            && proto::ints_attr(conv, "pads").is_none_or(|p| p.iter().all(|&v| v == 0))
            && proto::string_attr(conv, "auto_pad").is_none_or(|a| a == b"NOTSET" || a == b"VALID");
        let strides = proto::ints_attr(conv, "strides").unwrap_or_default();
        if !pointwise || strides.len() != 2 || strides.iter().any(|&s| s < 1) || strides == [1, 1] {
            i += 1;
            continue;
        }
        let picked = format!("{}/{}", conv.name, subsample::OP);
        let node = pb::NodeProto {
            name: picked.clone(),
            op_type: subsample::OP.into(),
            domain: DOMAIN.into(),
            input: vec![conv.input[0].clone()],
            output: vec![picked.clone()],
            attribute: vec![proto::ints("strides", strides)],
            ..Default::default()
        };
        let conv = &mut graph.node[i];
        conv.input[0] = picked;
        conv.attribute.retain(|a| a.name != "strides");
        conv.attribute.push(proto::ints("strides", vec![1, 1]));
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
            node.op_type = dequantize_add::OP.into();
            node.domain = DOMAIN.into();
            let mut remove = Vec::new();
            for (i, side) in sides.into_iter().enumerate() {
                if let Some(SoleDequantize { index, input, scale, zero_point, .. }) = side {
                    node.input[i] = input;
                    let tag = ["a", "b"][i];
                    node.attribute.push(proto::float(&format!("scale_{tag}"), scale));
                    node.attribute.push(proto::int(&format!("zero_point_{tag}"), zero_point as i64));
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
fn fuse_group_norms(model: &mut pb::ModelProto) -> usize {
    let opset = proto::opset(model);
    // Before opset 21, GroupNormalization's scale and bias are per group, not per channel.
    if opset < 21 {
        return 0;
    }
    let Some(graph) = model.graph.as_mut() else { return 0 };
    // An intermediate value the fusion removes: read by one node only, not a graph output.
    let sole = |name: &str| proto::sole_reader(graph, name);
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
        let bound = |i: usize| clip.input.get(i).and_then(|n| proto::scalar_initializer(graph, n));
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
        gn.op_type = group_norm::OP.into();
        gn.domain = DOMAIN.into();
        gn.output = vec![out];
        if let Some(dq) = absorbed {
            gn.input[0] = dq.input;
            gn.attribute.push(proto::float("input_scale", dq.scale));
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
