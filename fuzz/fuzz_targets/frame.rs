//! Frame validation, conversion to RGB and the daemon's per-frame path (frame straight into the
//! input tensor, `FramePreprocessor::fill`) for every pixel format, MJPEG decoding included: an
//! error or a filled buffer, never a panic or an out-of-bounds read.
#![no_main]

use std::cell::RefCell;

use bit_runtime::contract::Preprocess;
use bit_runtime::{Frame, FramePreprocessor, PixelFormat, frame::MAX_SIDE};
use libfuzzer_sys::fuzz_target;

const SIZE: u32 = 32;

thread_local! {
    static PRE: RefCell<FramePreprocessor> =
        RefCell::new(FramePreprocessor::new(&Preprocess::bit_default(SIZE), SIZE, None, 64, 64));
}

fuzz_target!(|input: &[u8]| {
    let [f, w, h, pad, data @ ..] = input else { return };
    let format = PixelFormat::ALL[*f as usize % PixelFormat::ALL.len()];
    // Small sides keep each run fast; the size arithmetic is exercised by the stride.
    let (w, h) = (u32::from(*w % 64) + 1, u32::from(*h % 64) + 1);
    let mut frame = Frame::new(data, format, w, h);
    if let Some(row) = format.row_bytes(w) {
        frame = frame.with_stride(row + usize::from(*pad % 8));
    }
    if frame.validate().is_err() {
        return;
    }
    assert!(w <= MAX_SIDE && h <= MAX_SIDE);
    let mut rgb = vec![0u8; 3 * w as usize * h as usize];
    let _ = bit_runtime::frame_to_rgb8(&frame, &mut rgb);
    let mut tensor = vec![0f32; 3 * (SIZE * SIZE) as usize];
    let filled = PRE.with_borrow_mut(|pre| pre.fill(&frame, &mut tensor));
    if filled.is_ok() {
        assert!(tensor.iter().all(|v| v.is_finite()), "non-finite input values from a {format:?} frame");
    }
});
