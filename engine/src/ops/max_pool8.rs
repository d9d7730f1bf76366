//! `BitMaxPool8`: a 2D max pool over u8 or i8 values with its constant padding built in.
//!
//! BiT's stem is `Pad(0) -> MaxPool` on f32. After quantization its input is a
//! `DequantizeLinear`; dequantizing is monotonic and maps the zero point to 0, so the max and
//! the padding commute with it and the rewrite runs the pool on the 8-bit values (padded with
//! the zero point) in one pass, then dequantizes.

use tract_onnx::pb;
use tract_onnx::prelude::*;
use tract_onnx::tract_hir::internal::*;

/// The op type in the rewritten protobuf.
pub const OP: &str = "BitMaxPool8";

pub(super) fn parse(
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
        OP.into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        super::same_type_batch_and_channels(s, inputs, outputs)?;
        s.given_2(&inputs[0].shape[2], &inputs[0].shape[3], move |s, h, w| {
            if let (Ok(h), Ok(w)) = (h.to_usize(), w.to_usize()) {
                let (oh, ow) = self.output_hw(h, w).with_context(|| format!("{OP}: {h}x{w} input"))?;
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
            "{prefix}: {OP} reads u8 or i8, not {:?}",
            fact.datum_type
        );
        let range = if fact.datum_type.unquantized() == u8::datum_type() { 0..=255 } else { -128..=127 };
        ensure!(range.contains(&self.pad_value), "{prefix}: pad value {} out of range", self.pad_value);
        model.wire_node(prefix, self.clone(), inputs)
    }
}

impl Op for MaxPool8 {
    fn name(&self) -> StaticName {
        OP.into()
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
        let &[n, c, h, w] = input.shape() else { bail!("{OP}: input shape {:?}", input.shape()) };
        let (oh, ow) = self.output_hw(h, w).with_context(|| format!("{OP}: {h}x{w} input"))?;
        // SAFETY: `pool` writes every output element (each plane's `oh * ow` values).
        let mut output = unsafe { super::output_tensor(input.datum_type(), &[n, c, oh, ow])? };
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
                dt => bail!("{OP}: unsupported input type {dt:?}"),
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
        let &[n, c, h, w] = shape else { bail!("{OP}: input shape {shape:?}") };
        let (oh, ow) = self.output_hw(h, w).with_context(|| format!("{OP}: {h}x{w} input"))?;
        Ok(tvec!(inputs[0].datum_type.fact([n, c, oh, ow])))
    }

    tract_onnx::tract_core::as_op!();
}
