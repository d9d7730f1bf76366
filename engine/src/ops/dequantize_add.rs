//! `BitDequantizeAdd`: `dequantize(a) + dequantize(b)` (each side optional) in one pass,
//! where tract would write and re-read an f32 tensor for each residual sum.

use tract_onnx::pb;
use tract_onnx::prelude::*;
use tract_onnx::tract_hir::internal::*;

use super::simd::dispatch;

/// The op type in the rewritten protobuf.
pub const OP: &str = "BitDequantizeAdd";

/// How a [`DequantizeAdd`] input becomes f32: as is, or `(q - zero_point) * scale`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Dequantize {
    pub(crate) scale: f32,
    pub(crate) zero_point: i32,
}

pub(super) fn parse(
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
        OP.into()
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
        OP.into()
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
        dispatch(
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
        ensure!(inputs[0].shape() == inputs[1].shape(), "{OP}: shapes differ");
        // SAFETY: `dequantize_add_into` writes every element (`par_chunks_mut` covers the
        // whole output), or the op fails before the tensor is returned.
        let mut output = unsafe { super::output_tensor(f32::datum_type(), inputs[0].shape())? };
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
                    bail!("{OP}: inputs {ta:?} (dequantized: {qa}) and {tb:?} (dequantized: {qb})")
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
