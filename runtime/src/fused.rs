//! A fused GroupNorm -> affine -> clip -> u8 op, installed into tract when a model is loaded.
//!
//! `bit-tool quantize` writes each quantized convolution's input as standard ONNX:
//! `GroupNormalization(x, gamma / s, beta / s + 0.5) -> Clip(0, 255) -> Cast(u8)`. tract
//! decomposes that into about ten passes over the activation (two reductions, several
//! element-wise ops, a scalar cast loop). [`fuse_for_tract`] replaces each such chain in the
//! protobuf by one node that [`onnx_framework`] maps to [`GroupNormQuantizeU8`]: per group,
//! one pass for the mean, one for the variance, one that writes u8 directly. The model file
//! stays standard ONNX; only the runtime's view of it changes.

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
    framework
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

/// Replaces every `GroupNormalization -> Clip(0, 255) -> Cast(u8)` chain whose intermediate
/// values have no other reader by one fused node. Returns how many were fused.
pub fn fuse_for_tract(proto: &mut pb::ModelProto) -> usize {
    let opset = proto.opset_import.iter().find(|o| o.domain.is_empty()).map(|o| o.version).unwrap_or(0);
    // Before opset 21, GroupNormalization's scale and bias are per group, not per channel.
    if opset < 21 {
        return 0;
    }
    let Some(graph) = proto.graph.as_mut() else { return 0 };
    let scalar = |name: &str| -> Option<f32> {
        let t = graph.initializer.iter().find(|t| t.name == name)?;
        match (t.data_type, t.raw_data.len(), t.float_data.as_slice()) {
            (1, 4, _) => Some(f32::from_le_bytes(t.raw_data[..4].try_into().ok()?)),
            (1, 0, [v]) => Some(*v),
            _ => None,
        }
    };
    let readers =
        |name: &str| -> usize { graph.node.iter().filter(|n| n.input.iter().any(|i| i == name)).count() };
    let outputs: Vec<&str> = graph.output.iter().map(|o| o.name.as_str()).collect();
    let mut chains = Vec::new();
    for (g, gn) in graph.node.iter().enumerate() {
        if gn.op_type != "GroupNormalization"
            || readers(&gn.output[0]) != 1
            || outputs.contains(&gn.output[0].as_str())
        {
            continue;
        }
        let Some(c) =
            graph.node.iter().position(|n| n.op_type == "Clip" && n.input.first() == Some(&gn.output[0]))
        else {
            continue;
        };
        let clip = &graph.node[c];
        let bounds = (clip.input.get(1).and_then(|n| scalar(n)), clip.input.get(2).and_then(|n| scalar(n)));
        if bounds != (Some(0.0), Some(255.0))
            || readers(&clip.output[0]) != 1
            || outputs.contains(&clip.output[0].as_str())
        {
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
    let absorbed: Vec<Option<(usize, f32, String)>> = chains
        .iter()
        .map(|&(g, _, _)| {
            let input = &graph.node[g].input[0];
            let d = graph.node.iter().position(|n| {
                n.op_type == "DequantizeLinear" && n.output.first() == Some(input) && n.input.len() >= 2
            })?;
            if readers(input) != 1 || outputs.contains(&input.as_str()) {
                return None;
            }
            let s = scalar(&graph.node[d].input[1]).filter(|s| *s > 0.0)?;
            Some((d, s, graph.node[d].input[0].clone()))
        })
        .collect();
    let mut remove = Vec::new();
    for (&(g, c, k), absorbed) in chains.iter().zip(absorbed) {
        let out = graph.node[k].output[0].clone();
        let gn = &mut graph.node[g];
        gn.op_type = FUSED_OP.into();
        gn.domain = FUSED_DOMAIN.into();
        gn.output = vec![out];
        if let Some((d, input_scale, q)) = absorbed {
            gn.input[0] = q;
            gn.attribute.push(pb::AttributeProto {
                name: "input_scale".into(),
                f: input_scale,
                r#type: pb::attribute_proto::AttributeType::Float as i32,
                ..Default::default()
            });
            remove.push(d);
        }
        remove.extend([c, k]);
    }
    remove.sort_unstable();
    for i in remove.into_iter().rev() {
        graph.node.remove(i);
    }
    if !chains.is_empty() && !proto.opset_import.iter().any(|o| o.domain == FUSED_DOMAIN) {
        proto.opset_import.push(pb::OperatorSetIdProto { domain: FUSED_DOMAIN.into(), version: 1 });
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
        let (batch, channels) = (shape[0], shape[1]);
        let spatial: usize = shape[2..].iter().product();
        let mut output = unsafe { Tensor::uninitialized::<u8>(shape)? };
        {
            let x = input.try_as_plain_ram()?;
            let mut out = output.try_as_plain_ram_mut()?;
            let out = out.as_slice_mut::<u8>()?;
            let (g, e, sc, bi) = (self.groups, self.eps, &self.scale[..], &self.bias[..]);
            match input.datum_type() {
                DatumType::F32 => {
                    group_norm_quantize(x.as_slice::<f32>()?, out, batch, channels, spatial, g, e, sc, bi)
                }
                DatumType::U8 => {
                    group_norm_quantize(x.as_slice::<u8>()?, out, batch, channels, spatial, g, e, sc, bi)
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

/// The kernel: `out = u8(clamp((x - mean_g) / sqrt(var_g + eps) * scale_c + bias_c, 0, 255))`.
#[allow(clippy::too_many_arguments)]
pub fn group_norm_quantize<T: Copy + Into<f32>>(
    x: &[T],
    out: &mut [u8],
    batch: usize,
    channels: usize,
    spatial: usize,
    groups: usize,
    eps: f32,
    scale: &[f32],
    bias: &[f32],
) {
    let per_group = channels / groups * spatial;
    for b in 0..batch {
        for g in 0..groups {
            let start = (b * channels) * spatial + g * per_group;
            let xs = &x[start..start + per_group];
            let n = per_group as f32;
            let mean = lane_sum(xs, |v| v) / n;
            let var = lane_sum(xs, |v| (v - mean) * (v - mean)) / n;
            let inv = 1.0 / (var + eps).sqrt();
            for (k, (xc, oc)) in xs
                .chunks_exact(spatial)
                .zip(out[start..start + per_group].chunks_exact_mut(spatial))
                .enumerate()
            {
                let c = g * (channels / groups) + k;
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
    }
}
