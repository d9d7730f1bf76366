//! ONNX import on arbitrary bytes: decoding, the memory budget, the load-time rewrites and
//! tract's analysis and optimization, as a device loads a model file. An error, or a
//! session; never a panic (tract's own panics are turned into errors by `Session::build`)
//! or an allocation beyond the budget.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    // libfuzzer-sys aborts on every panic, caught or not; the product catches tract's
    // (`Session::build`), so only panics that escape it may count. They still do: libfuzzer-sys
    // aborts on a panic that unwinds out of this closure.
    static QUIET: std::sync::Once = std::sync::Once::new();
    QUIET.call_once(|| std::panic::set_hook(Box::new(|_| {})));
    let Ok(model) = bit_engine::proto::decode(input) else { return };
    let _ = bit_engine::Session::build(model, &bit_engine::Options::new(16));
});
