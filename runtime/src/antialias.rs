//! Antialiased resampling as Pillow's `Image.resize` does it (libImaging/Resample.c), which is
//! what transformers' BitImageProcessor, timm and torchvision use on PIL images: a separable
//! convolution, horizontal pass first, then vertical, each output an 8-bit value.
//!
//! Per axis, output `i` of an `out`-pixel resize of `len` source pixels is centred at
//! `c = (i + 0.5) * scale` with `scale = len / out`; the filter (triangle for bilinear, Keys
//! `a = -0.5` for bicubic) is stretched by `max(scale, 1)`, so its support `s` widens with
//! the downscale factor (that is the antialiasing). The taps are the source pixels
//! `trunc(c - s + 0.5) .. trunc(c + s + 0.5)` clipped to the image (taps outside it are
//! dropped, not repeated), their weights normalized to sum to 1, then rounded to 22-bit fixed
//! point. Each pass accumulates in `i32` from a half-unit, shifts right by 22 and clamps to
//! 0..=255. Every expression follows Pillow's order, so the results are Pillow's bit for bit
//! (the golden tests in `tests/pillow.rs` assert it on photos and aliasing patterns).
//!
//! Written here rather than taken from a crate: the taps must start at the crop offset of a
//! resize (shortest edge, then centre crop, in one pass), read raw camera rows (YUYV, NV12,
//! ...) through [`PixelSource`] without converting the frame first, and end in the
//! normalized NCHW tensor; fast_image_resize would need a converted RGB frame and an RGB
//! output image and rounds its SIMD coefficients to 16 bits, not Pillow's 22.
//!
//! Nothing here allocates once the buffers are sized ([`AaAxis::reserve`],
//! [`AaScratch::reserve`]).

use crate::contract::Resample;
use crate::convert::PixelSource;

/// Pillow's `PRECISION_BITS` for 8-bit images: 32 - 8 - 2.
const PRECISION_BITS: u32 = 22;
/// The accumulator's start: half a unit, so the final shift rounds.
const HALF: i32 = 1 << (PRECISION_BITS - 1);

/// Pillow's triangle filter (support 1).
fn triangle(x: f64) -> f64 {
    let x = x.abs();
    if x < 1.0 { 1.0 - x } else { 0.0 }
}

/// Pillow's bicubic filter (support 2), `a = -0.5`, written as Pillow writes it.
fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// A filter kernel and its support at scale 1.
type Filter = (fn(f64) -> f64, f64);

/// The filter of `resample`; `None` for nearest (no convolution).
fn filter(resample: Resample) -> Option<Filter> {
    match resample {
        Resample::Bilinear => Some((triangle, 1.0)),
        Resample::Bicubic => Some((bicubic, 2.0)),
        Resample::Nearest => None,
    }
}

/// Pillow's `clip8`: the accumulator's integer part, clamped to a byte.
#[inline(always)]
fn clip8(v: i32) -> u8 {
    (v >> PRECISION_BITS).clamp(0, 255) as u8
}

/// One axis of an antialiased resize: per output, the first source pixel, the tap count and
/// `ksize` fixed-point weights (the first `count` used).
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct AaAxis {
    ksize: usize,
    /// Per output: first source index (absolute, region offset included) and tap count.
    bounds: Vec<(u32, u32)>,
    /// `ksize` weights per output, 22-bit fixed point.
    k: Vec<i32>,
}

/// Pillow's `ksize`: the most taps one output can have.
fn ksize(resample: Resample, len: u32, out: u32) -> usize {
    let Some((_, support)) = filter(resample) else { return 1 };
    let scale = (len as f64 / out as f64).max(1.0);
    (support * scale).ceil() as usize * 2 + 1
}

impl AaAxis {
    /// Reserves room for any source up to `max_len` pixels resized to at least `n` outputs
    /// (of which `n` are kept), so that [`AaAxis::compute`] does not allocate.
    pub(crate) fn reserve(&mut self, resample: Resample, max_len: u32, n: u32) {
        let ks = ksize(resample, max_len, n);
        self.bounds.reserve(n as usize);
        self.k.reserve(ks * n as usize);
    }

    /// The taps of outputs `skip .. skip + n` of a resize of the `len` source pixels from
    /// `first` to `out` pixels (`skip > 0` is a centre crop of the resized axis).
    ///
    /// # Panics
    /// If the filter is nearest, or `len`, `out` or `n` is zero.
    pub(crate) fn compute(&mut self, resample: Resample, first: u32, len: u32, out: u32, skip: u32, n: u32) {
        let (f, support) = filter(resample).expect("nearest does not convolve");
        assert!(len > 0 && out > 0 && n > 0, "antialiased axis needs non-empty sizes");
        let scale = len as f64 / out as f64;
        let filterscale = scale.max(1.0);
        let support = support * filterscale;
        let ks = (support.ceil() as usize) * 2 + 1;
        let ss = 1.0 / filterscale;
        self.ksize = ks;
        self.bounds.clear();
        self.k.clear();
        for xx in skip..skip + n {
            let center = (xx as f64 + 0.5) * scale;
            // C's `(int)` truncates toward zero, as `as` does.
            let xmin = ((center - support + 0.5) as i64).max(0);
            let xmax = ((center + support + 0.5) as i64).min(len as i64);
            let count = (xmax - xmin).max(0) as usize;
            let start = self.k.len();
            let weight = |x: usize| f(((x as i64 + xmin) as f64 - center + 0.5) * ss);
            // Pillow sums the weights, then divides each by the sum; evaluating the filter
            // twice gives the same values without a buffer for them.
            let ww = (0..count).map(weight).fold(0.0, |acc, w| acc + w);
            for x in 0..count {
                let w = weight(x);
                let w = if ww != 0.0 { w / ww } else { w };
                let scaled = w * (1u32 << PRECISION_BITS) as f64;
                self.k.push(if w < 0.0 { (-0.5 + scaled) as i32 } else { (0.5 + scaled) as i32 });
            }
            self.k.resize(start + ks, 0);
            self.bounds.push((first + xmin as u32, count as u32));
        }
    }

    /// The source range the taps read: first index and one past the last.
    fn span(&self) -> (u32, u32) {
        let first = self.bounds.first().map_or(0, |b| b.0);
        let end = self.bounds.iter().map(|&(x, n)| x + n).max().unwrap_or(first);
        (first, end)
    }

    /// Number of outputs.
    pub(crate) fn len(&self) -> usize {
        self.bounds.len()
    }

    /// Output `i`'s first source index and weights.
    #[inline(always)]
    fn taps(&self, i: usize) -> (u32, &[i32]) {
        let (first, n) = self.bounds[i];
        (first, &self.k[i * self.ksize..i * self.ksize + n as usize])
    }
}

/// Buffers of an antialiased fill: one source row as [`rgbx`](crate::convert::rgbx) words,
/// the horizontally resampled rows (8-bit RGB, as Pillow's intermediate image), one output
/// row's accumulators and the output row.
#[derive(Clone, Debug, Default)]
pub(crate) struct AaScratch {
    row: Vec<u32>,
    tmp: Vec<u8>,
    acc: Vec<i32>,
    out: Vec<u8>,
}

impl AaScratch {
    /// Buffers for sources up to `max_width` x `max_height` into `size` x `size`: the fills
    /// after it do not allocate.
    pub(crate) fn reserve(&mut self, max_width: u32, max_height: u32, size: u32) {
        let (w, h, n) = (max_width as usize, max_height as usize, size as usize);
        reserve_total(&mut self.row, w);
        reserve_total(&mut self.tmp, 3 * n * h);
        reserve_total(&mut self.acc, 3 * n);
        reserve_total(&mut self.out, 3 * n);
    }
}

fn reserve_total<T>(v: &mut Vec<T>, total: usize) {
    v.reserve(total.saturating_sub(v.len()));
}

/// Resamples the region the axes describe from `src` as Pillow does, then hands each output
/// row (`3 * xs.len()` interleaved RGB bytes) to `emit` with its index.
///
/// The loops are plain Rust that the compiler vectorizes. On x86_64 the same code is also
/// compiled for AVX2 and chosen at run time when the CPU has it: the baseline (SSE2) has no
/// 32-bit multiply of packed integers, which both passes are made of. aarch64's baseline
/// NEON has one.
pub(crate) fn resample<S: PixelSource>(
    src: &S,
    xs: &AaAxis,
    ys: &AaAxis,
    scratch: &mut AaScratch,
    emit: impl FnMut(usize, &[u8]),
) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked just above).
        return unsafe { resample_avx2(src, xs, ys, scratch, emit) };
    }
    resample_portable(src, xs, ys, scratch, emit)
}

/// [`resample_portable`] compiled with AVX2.
///
/// # Safety
/// The CPU must have AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn resample_avx2<S: PixelSource>(
    src: &S,
    xs: &AaAxis,
    ys: &AaAxis,
    scratch: &mut AaScratch,
    emit: impl FnMut(usize, &[u8]),
) {
    resample_portable(src, xs, ys, scratch, emit)
}

/// The resize itself, for any instruction set (see [`resample`]).
#[inline(always)]
fn resample_portable<S: PixelSource>(
    src: &S,
    xs: &AaAxis,
    ys: &AaAxis,
    scratch: &mut AaScratch,
    mut emit: impl FnMut(usize, &[u8]),
) {
    let (x0, x1) = xs.span();
    let (y0, y1) = ys.span();
    let (cols, rows, w3) = ((x1 - x0) as usize, (y1 - y0) as usize, 3 * xs.len());
    let AaScratch { row, tmp, acc, out } = scratch;
    row.resize(cols, 0);
    tmp.resize(w3 * rows, 0);
    acc.resize(w3, 0);
    out.resize(w3, 0);
    // Horizontal pass over every source row the vertical taps read: the row converted whole,
    // then per output pixel its taps, four lanes (R, G, B and the unused fourth byte).
    for (y, dst) in (y0..y1).zip(tmp.chunks_exact_mut(w3)) {
        S::rgbx_row(src.row(y), x0, x1, row);
        for (i, px) in dst.chunks_exact_mut(3).enumerate() {
            let (first, k) = xs.taps(i);
            let from = (first - x0) as usize;
            let mut s = [HALF; 4];
            for (&p, &w) in row[from..from + k.len()].iter().zip(k) {
                let b = p.to_le_bytes();
                for c in 0..4 {
                    s[c] += b[c] as i32 * w;
                }
            }
            px.copy_from_slice(&[clip8(s[0]), clip8(s[1]), clip8(s[2])]);
        }
    }
    // Vertical pass: each output row a weighted sum of whole intermediate rows, a loop over
    // contiguous bytes.
    for oy in 0..ys.len() {
        let (first, k) = ys.taps(oy);
        acc.fill(HALF);
        for (t, &w) in k.iter().enumerate() {
            let at = (first - y0) as usize + t;
            for (a, &v) in acc.iter_mut().zip(&tmp[at * w3..(at + 1) * w3]) {
                *a += v as i32 * w;
            }
        }
        for (o, &a) in out.iter_mut().zip(acc.iter()) {
            *o = clip8(a);
        }
        emit(oy, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert::{Coeffs, Packed, RGB, Yuv422};
    use crate::frame::YuvColor;

    fn run<S: PixelSource>(src: &S, xs: &AaAxis, ys: &AaAxis, portable: bool) -> Vec<u8> {
        let mut out = Vec::new();
        let emit = |_: usize, row: &[u8]| out.extend_from_slice(row);
        if portable {
            resample_portable(src, xs, ys, &mut AaScratch::default(), emit)
        } else {
            resample(src, xs, ys, &mut AaScratch::default(), emit)
        }
        out
    }

    /// The run-time choice (AVX2 on a CPU that has it) gives the portable code's bytes, on
    /// both filters, a region not starting at 0 and a crop.
    #[test]
    fn every_instruction_set_gives_the_same_bytes() {
        let (w, h) = (203u32, 97u32);
        let data: Vec<u8> = (0..4 * (w * h) as usize).map(|i| (i * 7919 % 251) as u8).collect();
        for filter in [Resample::Bilinear, Resample::Bicubic] {
            let (mut xs, mut ys) = (AaAxis::default(), AaAxis::default());
            xs.compute(filter, 3, w - 5, 41, 4, 33);
            ys.compute(filter, 1, h - 1, 29, 0, 29);
            let rgb = Packed::<RGB> { data: &data, stride: 3 * w as usize };
            let yuyv = Yuv422::<false> {
                data: &data,
                stride: 2 * w as usize + 2,
                m: Coeffs::new(YuvColor::BT601_LIMITED),
            };
            assert_eq!(run(&rgb, &xs, &ys, true), run(&rgb, &xs, &ys, false), "{filter:?} rgb");
            assert_eq!(run(&yuyv, &xs, &ys, true), run(&yuyv, &xs, &ys, false), "{filter:?} yuyv");
        }
    }
}
