//! `BitGroupNormQuantizeU8`: GroupNorm with a per-channel affine, clamped to [0, 255] and
//! truncated to u8, in one op.
//!
//! `bit-tool quantize` writes each quantized convolution's input as standard ONNX:
//! `GroupNormalization(x, gamma / s, beta / s + 0.5) -> Clip(0, 255) -> Cast(u8)`. tract
//! decomposes that into about ten passes over the activation (two reductions, several
//! element-wise ops, a scalar cast loop). This op does it per group in three: one pass for
//! the mean, one for the variance, one that writes u8. Its input is the f32 GroupNorm input,
//! or the u8 output of the convolution before it when the rewrite absorbed the
//! `DequantizeLinear` in between (GroupNorm is shift-invariant and a scale only rescales eps).

use tract_onnx::pb;
use tract_onnx::prelude::*;
use tract_onnx::tract_hir::internal::*;

use super::simd::{dispatch, lane_sum};

/// The op type in the rewritten protobuf.
pub const OP: &str = "BitGroupNormQuantizeU8";

pub(super) fn parse(
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

#[derive(Clone, Debug, PartialEq)]
struct FusedExpansion {
    groups: usize,
    eps: f32,
    u8_input: bool,
}

impl Expansion for FusedExpansion {
    fn name(&self) -> StaticName {
        OP.into()
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
        OP.into()
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
        // SAFETY: `group_norm_quantize_on_pool` writes every element (each group's chunk).
        let mut output = unsafe { super::output_tensor(u8::datum_type(), shape)? };
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
                dt => bail!("{OP}: unsupported input type {dt:?}"),
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
            dispatch(
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
