//! `BitSubsample`: every s-th row and column of an NCHW tensor, which a 1x1 convolution with
//! stride s and no padding reads. The rewrite puts one in front of each such convolution and
//! gives the convolution stride 1; tract would insert a generic Downsample per axis.

use tract_onnx::pb;
use tract_onnx::prelude::*;
use tract_onnx::tract_hir::internal::*;

/// The op type in the rewritten protobuf.
pub const OP: &str = "BitSubsample";

pub(super) fn parse(
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
        OP.into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        super::same_type_batch_and_channels(s, inputs, outputs)?;
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
        OP.into()
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
        let &[n, c, h, w] = input.shape() else { bail!("{OP}: input shape {:?}", input.shape()) };
        let [sh, sw] = self.strides;
        // SAFETY: `pick` writes every output element (each plane's `ceil(h / sh) x ceil(w / sw)`
        // values), or the op fails before the tensor is returned.
        let mut output =
            unsafe { super::output_tensor(input.datum_type(), &[n, c, h.div_ceil(sh), w.div_ceil(sw)])? };
        {
            let x = input.try_as_plain_ram()?;
            let mut out = output.try_as_plain_ram_mut()?;
            match input.datum_type().unquantized() {
                DatumType::U8 | DatumType::I8 => self.pick(x.as_bytes(), out.as_bytes_mut(), h, w),
                DatumType::F32 => self.pick(x.as_slice::<f32>()?, out.as_slice_mut::<f32>()?, h, w),
                DatumType::I32 => self.pick(x.as_slice::<i32>()?, out.as_slice_mut::<i32>()?, h, w),
                dt => bail!("{OP}: unsupported input type {dt:?}"),
            }
        }
        Ok(tvec!(output.into_tvalue()))
    }
}

impl TypedOp for Subsample {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let shape = &inputs[0].shape;
        ensure!(shape.rank() == 4, "{OP}: input shape {shape:?}");
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
