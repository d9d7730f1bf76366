//! From pixels to the NCHW input tensor: resize (squash or centre crop), bilinear sampling,
//! channel order and normalization in one pass over the output.
//!
//! The sampling taps are computed once per source size ([`Resizer::new`]); filling a tensor
//! ([`Resizer::fill_rgb8`]) does no allocation.

use crate::contract::{ChannelOrder, Preprocess, ResizeMode};

/// One output coordinate's bilinear taps along an axis.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Tap {
    lo: u32,
    hi: u32,
    /// Weight of `hi`; `lo` gets `1 - frac`.
    frac: f32,
}

/// Precomputed sampling of a `src_w` x `src_h` frame into a `size` x `size` tensor.
#[derive(Clone, Debug)]
pub struct Resizer {
    src_w: u32,
    src_h: u32,
    size: u32,
    xs: Vec<Tap>,
    ys: Vec<Tap>,
    affine: [(f32, f32); 3],
    bgr: bool,
}

impl Resizer {
    /// Taps for a source of `src_w` x `src_h` pixels under `pre`, at output side `size`.
    pub fn new(src_w: u32, src_h: u32, size: u32, pre: &Preprocess) -> Resizer {
        assert!(src_w > 0 && src_h > 0 && size > 0, "resizer needs non-empty sizes");
        let (x0, y0, cw, ch) = match pre.resize {
            ResizeMode::Squash => (0.0, 0.0, src_w as f64, src_h as f64),
            ResizeMode::CenterCrop { crop_fraction } => {
                let side = (src_w.min(src_h) as f64 * crop_fraction as f64).max(1.0);
                ((src_w as f64 - side) / 2.0, (src_h as f64 - side) / 2.0, side, side)
            }
        };
        Resizer {
            src_w,
            src_h,
            size,
            xs: taps(x0, cw, src_w, size),
            ys: taps(y0, ch, src_h, size),
            affine: pre.affine(),
            bgr: pre.channel_order == ChannelOrder::Bgr,
        }
    }

    /// Source width and height this resizer was built for.
    pub fn source_size(&self) -> (u32, u32) {
        (self.src_w, self.src_h)
    }

    /// Output side.
    pub fn size(&self) -> u32 {
        self.size
    }

    /// Fills `out` (`3 * size * size` values, NCHW with N = 1) from packed RGB8 rows of
    /// `stride` bytes.
    pub fn fill_rgb8(&self, src: &[u8], stride: usize, out: &mut [f32]) {
        let plane = (self.size * self.size) as usize;
        assert!(out.len() == 3 * plane, "output holds {} values, needs {}", out.len(), 3 * plane);
        assert!(stride >= 3 * self.src_w as usize, "stride {stride} shorter than a row");
        assert!(
            src.len() >= stride * (self.src_h as usize - 1) + 3 * self.src_w as usize,
            "source too short"
        );
        let (r_plane, rest) = out.split_at_mut(plane);
        let (g_plane, b_plane) = rest.split_at_mut(plane);
        // Tensor channel c takes source channel order[c].
        let order = if self.bgr { [2, 1, 0] } else { [0, 1, 2] };
        let aff = self.affine;
        let size = self.size as usize;
        for (oy, ty) in self.ys.iter().enumerate() {
            let row_lo = &src[ty.lo as usize * stride..];
            let row_hi = &src[ty.hi as usize * stride..];
            let wy = ty.frac;
            for (ox, tx) in self.xs.iter().enumerate() {
                let (a, b) = (3 * tx.lo as usize, 3 * tx.hi as usize);
                let wx = tx.frac;
                let mut px = [0f32; 3];
                for (c, v) in px.iter_mut().enumerate() {
                    let top = row_lo[a + c] as f32 + (row_lo[b + c] as f32 - row_lo[a + c] as f32) * wx;
                    let bot = row_hi[a + c] as f32 + (row_hi[b + c] as f32 - row_hi[a + c] as f32) * wx;
                    *v = top + (bot - top) * wy;
                }
                let i = oy * size + ox;
                r_plane[i] = px[order[0]] * aff[0].0 + aff[0].1;
                g_plane[i] = px[order[1]] * aff[1].0 + aff[1].1;
                b_plane[i] = px[order[2]] * aff[2].0 + aff[2].1;
            }
        }
    }
}

/// Half-pixel-centre bilinear taps for `n` outputs covering `[start, start + extent)` of a
/// source axis of `len` pixels, clamped at the edges (tf.image.resize, no antialias).
fn taps(start: f64, extent: f64, len: u32, n: u32) -> Vec<Tap> {
    let scale = extent / n as f64;
    let max = (len - 1) as f64;
    (0..n)
        .map(|i| {
            let s = (start + (i as f64 + 0.5) * scale - 0.5).clamp(0.0, max);
            let lo = s.floor();
            let hi = (lo + 1.0).min(max);
            Tap { lo: lo as u32, hi: hi as u32, frac: (s - lo) as f32 }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Plain bilinear on one channel, written out from the definition.
    fn reference(src: &[u8], w: usize, h: usize, c: usize, size: usize, ox: usize, oy: usize) -> f32 {
        let sample = |x: f64, y: f64| {
            let x = x.clamp(0.0, (w - 1) as f64);
            let y = y.clamp(0.0, (h - 1) as f64);
            let (x0, y0) = (x.floor() as usize, y.floor() as usize);
            let (x1, y1) = ((x0 + 1).min(w - 1), (y0 + 1).min(h - 1));
            let (fx, fy) = (x - x0 as f64, y - y0 as f64);
            let p = |x: usize, y: usize| src[(y * w + x) * 3 + c] as f64;
            let top = p(x0, y0) * (1.0 - fx) + p(x1, y0) * fx;
            let bot = p(x0, y1) * (1.0 - fx) + p(x1, y1) * fx;
            top * (1.0 - fy) + bot * fy
        };
        let sx = (ox as f64 + 0.5) * w as f64 / size as f64 - 0.5;
        let sy = (oy as f64 + 0.5) * h as f64 / size as f64 - 0.5;
        sample(sx, sy) as f32
    }

    fn pattern(w: usize, h: usize) -> Vec<u8> {
        (0..w * h * 3).map(|i| ((i * 7919) % 251) as u8).collect()
    }

    #[test]
    fn squash_matches_plain_bilinear_within_rounding() {
        let (w, h, size) = (37, 23, 16);
        let src = pattern(w, h);
        let pre = Preprocess::bit_default(size as u32);
        let r = Resizer::new(w as u32, h as u32, size as u32, &pre);
        let mut out = vec![0f32; 3 * size * size];
        r.fill_rgb8(&src, w * 3, &mut out);
        for c in 0..3 {
            for oy in 0..size {
                for ox in 0..size {
                    let expected = reference(&src, w, h, c, size, ox, oy) / 127.5 - 1.0;
                    let got = out[c * size * size + oy * size + ox];
                    // 1e-3 of the [-1, 1] range is well under one 8-bit step (2/255).
                    assert!((got - expected).abs() < 1e-4, "c{c} ({ox},{oy}): {got} vs {expected}");
                }
            }
        }
    }

    #[test]
    fn identity_size_reproduces_pixels_and_bgr_swaps() {
        let (w, h) = (8, 8);
        let src = pattern(w, h);
        let mut pre = Preprocess::bit_default(8);
        pre.channel_order = ChannelOrder::Bgr;
        let r = Resizer::new(8, 8, 8, &pre);
        let mut out = vec![0f32; 3 * 64];
        r.fill_rgb8(&src, w * 3, &mut out);
        // Sampling at pixel centres is exact; normalization as a multiply-add may differ
        // from `x / 127.5 - 1` by one f32 rounding.
        for i in 0..64 {
            assert!((out[i] - (src[i * 3 + 2] as f32 / 127.5 - 1.0)).abs() < 1e-6, "blue first");
            assert!((out[128 + i] - (src[i * 3] as f32 / 127.5 - 1.0)).abs() < 1e-6, "red last");
        }
    }

    #[test]
    fn center_crop_takes_the_middle_square() {
        // 12x4 frame whose middle 4x4 square is white, the rest black.
        let (w, h) = (12usize, 4usize);
        let mut src = vec![0u8; w * h * 3];
        for y in 0..h {
            for x in 4..8 {
                src[(y * w + x) * 3..(y * w + x) * 3 + 3].fill(255);
            }
        }
        let mut pre = Preprocess::bit_default(4);
        pre.resize = ResizeMode::CenterCrop { crop_fraction: 1.0 };
        let r = Resizer::new(w as u32, h as u32, 4, &pre);
        let mut out = vec![0f32; 48];
        r.fill_rgb8(&src, w * 3, &mut out);
        assert!(out.iter().all(|&v| v == 1.0), "{out:?}");
    }
}
