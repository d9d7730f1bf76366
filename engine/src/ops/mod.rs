//! The custom ops the rewrites ([`crate::rewrite`]) put into a model, one module each, and
//! the ONNX loader that knows them ([`onnx`]).
//!
//! | op type (domain `bit.edge`) | module | replaces |
//! |---|---|---|
//! | `BitGroupNormQuantizeU8` | [`group_norm`] | `GroupNormalization -> Clip(0, 255) -> Cast(u8)`, absorbing a `DequantizeLinear` in front |
//! | `BitDequantizeAdd` | [`dequantize_add`] | `Add(DequantizeLinear(q), y)` |
//! | `BitMaxPool8` | [`max_pool8`] | `DequantizeLinear -> Pad(0) -> MaxPool` (as `BitMaxPool8 -> DequantizeLinear`) |
//! | `BitSubsample` | [`subsample`] | the stride of a 1x1 convolution |
//!
//! Each computes the same bits as the tract ops it replaces (`tests/tests/int8.rs` checks
//! every one against tract's standard ops). The element-wise kernels are plain Rust written
//! to vectorize; [`simd::dispatch`] runs them as an AVX2 build on x86_64 CPUs that have it.

pub mod dequantize_add;
pub mod group_norm;
pub mod max_pool8;
pub mod simd;
pub mod subsample;

use tract_onnx::tract_hir::internal::*;

/// The domain of every custom op (not a standard ONNX one).
pub const DOMAIN: &str = "bit.edge";

/// tract's ONNX loader with the custom ops registered.
pub fn onnx() -> tract_onnx::Onnx {
    let mut framework = tract_onnx::onnx();
    framework.op_register.insert(group_norm::OP, group_norm::parse);
    framework.op_register.insert(dequantize_add::OP, dequantize_add::parse);
    framework.op_register.insert(max_pool8::OP, max_pool8::parse);
    framework.op_register.insert(subsample::OP, subsample::parse);
    framework
}

/// Shared inference rules of the 8-bit spatial ops ([`max_pool8`], [`subsample`]): one NCHW
/// input, one NCHW output of its type with the same batch and channels.
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

/// An output tensor every element of which the op writes before anyone reads it.
///
/// # Safety
/// The caller must write every element before the tensor is read or returned.
unsafe fn output_tensor(dt: DatumType, shape: &[usize]) -> TractResult<Tensor> {
    // SAFETY: u8, i8, f32 and i32 (the only types these ops produce) have no invalid bit
    // patterns, and the caller's contract covers the contents.
    unsafe { Tensor::uninitialized_dt(dt, shape) }
}
