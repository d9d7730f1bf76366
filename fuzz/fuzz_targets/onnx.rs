//! ONNX import on arbitrary bytes: decoding, the memory budget, the load-time rewrites and
//! tract's analysis and optimization, as a device loads a model file. An error, or a
//! session; never a panic (tract's own panics are turned into errors by `Session::build`)
//! or an allocation beyond the budget.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let Ok(model) = bit_engine::proto::decode(input) else { return };
    let _ = bit_engine::Session::build(model, &bit_engine::Options::new(16));
});
