//! Reading one RGB pixel from a frame in any raw format, for the fused resize in
//! [`crate::preprocess::Resizer`].
//!
//! YUV is converted with the frame's [`YuvColor`]: matrix (`Kr`, `Kb`) and range. With
//! `Kg = 1 - Kr - Kb`, and for limited range `Y' = (Y - 16) * 255/219`, `Cb = (U - 128) *
//! 255/224`, `Cr = (V - 128) * 255/224` (full range: `Y' = Y`, `Cb = U - 128`, `Cr = V -
//! 128`):
//!
//! ```text
//! R = Y' + 2 (1 - Kr) Cr
//! G = Y' - 2 Kb (1 - Kb) / Kg Cb - 2 Kr (1 - Kr) / Kg Cr
//! B = Y' + 2 (1 - Kb) Cb
//! ```
//!
//! in 8.8 fixed point (each coefficient x 256, rounded), clamped to 0..=255. For the default,
//! BT.601 limited range, the coefficients are 298, 409, 100, 208 and 516. Chroma is taken
//! from the pixel's own pair (4:2:2) or 2x2 block (4:2:0), not interpolated: the same
//! "convert the frame to RGB8" a plain converter does, so that converting each bilinear tap
//! and then interpolating equals converting the whole frame first and then resizing it.

use crate::frame::{YuvColor, YuvRange};

/// The fixed-point YUV -> RGB8 conversion of one [`YuvColor`] (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Coeffs {
    y: i32,
    y_off: i32,
    rv: i32,
    gu: i32,
    gv: i32,
    bu: i32,
}

/// Where a row conversion takes its coefficients from: a [`Coeffs`] value, or [`Bt601Limited`],
/// the default encoding as compile-time constants. The hot loops are generic over it and the
/// callers pick the constant instance when a frame uses the default: with the constants
/// known the compiler narrows the multiplies (on one EPYC core the fixed-footprint 640x480
/// YUYV squash took 0.75 ms with run-time coefficients, 0.54 ms with constants).
pub(crate) trait Matrix: Copy {
    /// The coefficients.
    fn coeffs(self) -> Coeffs;
}

impl Matrix for Coeffs {
    #[inline(always)]
    fn coeffs(self) -> Coeffs {
        self
    }
}

/// BT.601 limited range, the default, as constants (see [`Matrix`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Bt601Limited;

impl Matrix for Bt601Limited {
    #[inline(always)]
    fn coeffs(self) -> Coeffs {
        Coeffs::BT601_LIMITED
    }
}

impl Coeffs {
    /// [`Coeffs::new`] of BT.601 limited range (checked equal in the tests).
    pub(crate) const BT601_LIMITED: Coeffs = Coeffs { y: 298, y_off: 16, rv: 409, gu: 100, gv: 208, bu: 516 };

    pub(crate) fn new(color: YuvColor) -> Coeffs {
        let (kr, kb) = color.matrix.kr_kb();
        let kg = 1.0 - kr - kb;
        let (ys, y_off, cs) = match color.range {
            YuvRange::Limited => (255.0 / 219.0, 16, 255.0 / 224.0),
            YuvRange::Full => (1.0, 0, 1.0),
        };
        let q = |x: f64| (x * 256.0).round() as i32;
        Coeffs {
            y: q(ys),
            y_off,
            rv: q(2.0 * (1.0 - kr) * cs),
            gu: q(2.0 * kb * (1.0 - kb) / kg * cs),
            gv: q(2.0 * kr * (1.0 - kr) / kg * cs),
            bu: q(2.0 * (1.0 - kb) * cs),
        }
    }

    /// One pixel's Y, U, V as R, G, B.
    #[inline(always)]
    pub(crate) fn rgb(self, y: u8, u: u8, v: u8) -> [u8; 3] {
        let c = self.y * (y as i32 - self.y_off) + 128;
        let d = u as i32 - 128;
        let e = v as i32 - 128;
        [
            clamp8((c + self.rv * e) >> 8),
            clamp8((c - self.gu * d - self.gv * e) >> 8),
            clamp8((c + self.bu * d) >> 8),
        ]
    }
}

#[inline(always)]
fn clamp8(v: i32) -> u8 {
    v.clamp(0, 255) as u8
}

/// An RGB pixel as the word the antialiased resize reads: `r | g << 8 | b << 16`.
#[inline(always)]
pub(crate) fn rgbx([r, g, b]: [u8; 3]) -> u32 {
    u32::from_le_bytes([r, g, b, 0])
}

/// A frame readable one pixel at a time. `row` is called twice per output row, `rgb` four
/// times per output pixel; both must be cheap and are inlined into the resize loop.
pub(crate) trait PixelSource {
    /// What one source row needs to hand to [`PixelSource::rgb`].
    type Row<'r>: Copy
    where
        Self: 'r;
    /// Row `y` (in range: the frame was validated and taps are clamped).
    fn row(&self, y: u32) -> Self::Row<'_>;
    /// Pixel `x` of a row as R, G, B.
    fn rgb(row: Self::Row<'_>, x: u32) -> [u8; 3];
    /// Pixels `x0..x1` of a row as [`rgbx`] words into `out[..x1 - x0]`: the whole-row
    /// conversion of the antialiased resize, which reads every source pixel. The formats
    /// override it with a loop over their own layout (pixel pairs for 4:2:2 and NV12) that
    /// the compiler vectorizes; the values are [`PixelSource::rgb`]'s.
    #[inline(always)]
    fn rgbx_row(row: Self::Row<'_>, x0: u32, x1: u32, out: &mut [u32]) {
        for (x, o) in (x0..x1).zip(out) {
            *o = rgbx(Self::rgb(row, x));
        }
    }
}

/// A YUV frame: the fast path gathers raw Y, U, V per tap and converts many pixels at once.
pub(crate) trait YuvSource: PixelSource {
    /// Pixel `x` of a row as Y, U, V.
    fn yuv(row: Self::Row<'_>, x: u32) -> [u8; 3];
    /// The frame's conversion to RGB.
    fn coeffs(&self) -> Coeffs;
}

/// Packed 8-bit pixels: RGB, BGR (channel offsets swapped) or grey.
pub(crate) struct Packed<'a, const KIND: u8> {
    pub data: &'a [u8],
    pub stride: usize,
}

/// `Packed` kinds.
pub(crate) const RGB: u8 = 0;
pub(crate) const BGR: u8 = 1;
pub(crate) const GREY: u8 = 2;

impl<const KIND: u8> PixelSource for Packed<'_, KIND> {
    type Row<'r>
        = &'r [u8]
    where
        Self: 'r;

    #[inline(always)]
    fn row(&self, y: u32) -> &[u8] {
        &self.data[y as usize * self.stride..]
    }

    #[inline(always)]
    fn rgb(row: &[u8], x: u32) -> [u8; 3] {
        let x = x as usize;
        match KIND {
            RGB => [row[3 * x], row[3 * x + 1], row[3 * x + 2]],
            BGR => [row[3 * x + 2], row[3 * x + 1], row[3 * x]],
            _ => [row[x]; 3],
        }
    }

    #[inline(always)]
    fn rgbx_row(row: &[u8], x0: u32, x1: u32, out: &mut [u32]) {
        let (a, b) = (x0 as usize, x1 as usize);
        let out = &mut out[..b - a];
        match KIND {
            RGB => {
                row[3 * a..3 * b].chunks_exact(3).zip(out).for_each(|(p, o)| *o = rgbx([p[0], p[1], p[2]]))
            }
            BGR => {
                row[3 * a..3 * b].chunks_exact(3).zip(out).for_each(|(p, o)| *o = rgbx([p[2], p[1], p[0]]))
            }
            _ => row[a..b].iter().zip(out).for_each(|(&g, o)| *o = g as u32 * 0x01_01_01),
        }
    }
}

/// Packed 4:2:2: `Y0 U Y1 V` (`UYVY == false`) or `U Y0 V Y1`.
pub(crate) struct Yuv422<'a, const UYVY: bool> {
    pub data: &'a [u8],
    pub stride: usize,
    pub m: Coeffs,
}

impl<const UYVY: bool> PixelSource for Yuv422<'_, UYVY> {
    type Row<'r>
        = (&'r [u8], Coeffs)
    where
        Self: 'r;

    #[inline(always)]
    fn row(&self, y: u32) -> (&[u8], Coeffs) {
        (&self.data[y as usize * self.stride..], self.m)
    }

    #[inline(always)]
    fn rgb(row: (&[u8], Coeffs), x: u32) -> [u8; 3] {
        let [y, u, v] = Self::yuv(row, x);
        row.1.rgb(y, u, v)
    }

    #[inline(always)]
    fn rgbx_row((row, m): (&[u8], Coeffs), x0: u32, x1: u32, out: &mut [u32]) {
        let (_, x, n, _) = pair_span(x0, x1);
        let pairs = row[2 * x..2 * x + 4 * n]
            .chunks_exact(4)
            .map(|q| if UYVY { (q[1], q[3], q[0], q[2]) } else { (q[0], q[2], q[1], q[3]) });
        yuv_pairs(m, x0, x1, out, |x| Self::rgb((row, m), x), pairs)
    }
}

impl<const UYVY: bool> YuvSource for Yuv422<'_, UYVY> {
    #[inline(always)]
    fn yuv((row, _): (&[u8], Coeffs), x: u32) -> [u8; 3] {
        let x = x as usize;
        let pair = &row[4 * (x / 2)..4 * (x / 2) + 4];
        if UYVY { [pair[1 + 2 * (x & 1)], pair[0], pair[2]] } else { [pair[2 * (x & 1)], pair[1], pair[3]] }
    }

    fn coeffs(&self) -> Coeffs {
        self.m
    }
}

/// NV12: Y plane, then interleaved `U V` at half resolution, both `stride` bytes a row.
pub(crate) struct Nv12<'a> {
    pub luma: &'a [u8],
    pub chroma: &'a [u8],
    pub stride: usize,
    pub m: Coeffs,
}

impl PixelSource for Nv12<'_> {
    type Row<'r>
        = (&'r [u8], &'r [u8], Coeffs)
    where
        Self: 'r;

    #[inline(always)]
    fn row(&self, y: u32) -> (&[u8], &[u8], Coeffs) {
        (&self.luma[y as usize * self.stride..], &self.chroma[(y as usize / 2) * self.stride..], self.m)
    }

    #[inline(always)]
    fn rgb(row: (&[u8], &[u8], Coeffs), x: u32) -> [u8; 3] {
        let [y, u, v] = Self::yuv(row, x);
        row.2.rgb(y, u, v)
    }

    #[inline(always)]
    fn rgbx_row((luma, chroma, m): (&[u8], &[u8], Coeffs), x0: u32, x1: u32, out: &mut [u32]) {
        let (_, x, n, _) = pair_span(x0, x1);
        let pairs = luma[x..x + 2 * n]
            .chunks_exact(2)
            .zip(chroma[x..x + 2 * n].chunks_exact(2))
            .map(|(l, c)| (l[0], l[1], c[0], c[1]));
        yuv_pairs(m, x0, x1, out, |x| Self::rgb((luma, chroma, m), x), pairs)
    }
}

/// How a row's pixels `x0..x1` split into whole pixel pairs (one chroma sample each):
/// whether a lone pixel comes first, the first pixel of the first whole pair, the number of
/// pairs, and whether a lone pixel ends the range.
#[inline(always)]
fn pair_span(x0: u32, x1: u32) -> (bool, usize, usize, bool) {
    let (x0, x1) = (x0 as usize, x1 as usize);
    let lead = x0 & 1 == 1 && x0 < x1;
    let x = x0 + lead as usize;
    let pairs = (x1 - x) / 2;
    (lead, x, pairs, x + 2 * pairs < x1)
}

/// The pairs of a 4:2:2 or 4:2:0 row (`(y0, y1, u, v)` each) into `out`, two words a pair;
/// a lone pixel before or after the pairs is converted by `single` at `x0` or `x1 - 1`.
#[inline(always)]
fn yuv_pairs(
    m: Coeffs,
    x0: u32,
    x1: u32,
    out: &mut [u32],
    single: impl Fn(u32) -> [u8; 3],
    pairs: impl Iterator<Item = (u8, u8, u8, u8)>,
) {
    let (lead, _, n, trail) = pair_span(x0, x1);
    let out = &mut out[..(x1 - x0) as usize];
    let o = lead as usize;
    if lead {
        out[0] = rgbx(single(x0));
    }
    let body = &mut out[o..o + 2 * n];
    if m == Coeffs::BT601_LIMITED {
        convert_pairs(Bt601Limited, pairs, body);
    } else {
        convert_pairs(m, pairs, body);
    }
    if trail {
        out[o + 2 * n] = rgbx(single(x1 - 1));
    }
}

#[inline(always)]
fn convert_pairs(m: impl Matrix, pairs: impl Iterator<Item = (u8, u8, u8, u8)>, out: &mut [u32]) {
    let m = m.coeffs();
    for ((y0, y1, u, v), d) in pairs.zip(out.chunks_exact_mut(2)) {
        d[0] = rgbx(m.rgb(y0, u, v));
        d[1] = rgbx(m.rgb(y1, u, v));
    }
}

impl YuvSource for Nv12<'_> {
    #[inline(always)]
    fn yuv((luma, chroma, _): (&[u8], &[u8], Coeffs), x: u32) -> [u8; 3] {
        let x = x as usize;
        let uv = &chroma[x & !1..(x & !1) + 2];
        [luma[x], uv[0], uv[1]]
    }

    fn coeffs(&self) -> Coeffs {
        self.m
    }
}

/// The fast path's per-row scratch: Y, U, V of the taps of every output pixel of one row,
/// as structure of arrays (bilinear uses planes 0..4: top left, top right, bottom left,
/// bottom right; bicubic all 16, plane `4 * row + column`), so that the conversion and
/// interpolation loop runs over plain arrays and the compiler vectorizes it (SSE/AVX on
/// x86_64, NEON on aarch64) without `unsafe`. 72 bytes per output column, allocated once.
#[derive(Clone, Debug)]
pub(crate) struct YuvTaps {
    y: [Vec<u8>; 16],
    u: [Vec<u8>; 16],
    v: [Vec<u8>; 16],
    /// Bicubic row sums: R, G, B over all rows so far, then R, G, B of the current row.
    acc: [Vec<f32>; 6],
}

impl YuvTaps {
    /// Scratch for rows of `n` output pixels.
    pub(crate) fn new(n: usize) -> YuvTaps {
        let planes = || std::array::from_fn(|_| vec![0u8; n]);
        YuvTaps { y: planes(), u: planes(), v: planes(), acc: std::array::from_fn(|_| vec![0f32; n]) }
    }

    /// Gathers the taps of one output row: `xs[i]` = (left, right) source columns,
    /// `top`/`bottom` the two source rows.
    #[inline(always)]
    pub(crate) fn gather<'r, S: YuvSource + 'r>(
        &mut self,
        top: S::Row<'r>,
        bottom: S::Row<'r>,
        xs: &[(u32, u32)],
    ) {
        let n = xs.len().min(self.y[0].len());
        for (i, &(l, r)) in xs[..n].iter().enumerate() {
            for (k, (row, x)) in [(top, l), (top, r), (bottom, l), (bottom, r)].into_iter().enumerate() {
                let [y, u, v] = S::yuv(row, x);
                self.y[k][i] = y;
                self.u[k][i] = u;
                self.v[k][i] = v;
            }
        }
    }

    /// Converts the gathered taps, interpolates (`wx[i]` across, `wy` down: the same
    /// expressions as the scalar path, so the results are identical) and writes
    /// `r * scale + offset` etc. into the three output rows.
    pub(crate) fn convert_row(
        &self,
        wx: &[f32],
        wy: f32,
        (r_out, g_out, b_out): (&mut [f32], &mut [f32], &mut [f32]),
        aff: [(f32, f32); 3],
        m: impl Matrix,
    ) {
        let m = m.coeffs();
        let n = wx.len().min(r_out.len()).min(g_out.len()).min(b_out.len()).min(self.y[0].len());
        // Fixed-length slices let the compiler drop the bounds checks and vectorize.
        let (y, u, v) = (
            std::array::from_fn::<_, 4, _>(|k| &self.y[k][..n]),
            std::array::from_fn::<_, 4, _>(|k| &self.u[k][..n]),
            std::array::from_fn::<_, 4, _>(|k| &self.v[k][..n]),
        );
        let (wx, r_out, g_out, b_out) = (&wx[..n], &mut r_out[..n], &mut g_out[..n], &mut b_out[..n]);
        for i in 0..n {
            let mut r = [0f32; 4];
            let mut g = [0f32; 4];
            let mut b = [0f32; 4];
            for k in 0..4 {
                let [rk, gk, bk] = m.rgb(y[k][i], u[k][i], v[k][i]);
                (r[k], g[k], b[k]) = (rk as f32, gk as f32, bk as f32);
            }
            let w = wx[i];
            let lerp = |p: [f32; 4]| {
                let top = p[0] + (p[1] - p[0]) * w;
                let bot = p[2] + (p[3] - p[2]) * w;
                top + (bot - top) * wy
            };
            r_out[i] = lerp(r) * aff[0].0 + aff[0].1;
            g_out[i] = lerp(g) * aff[1].0 + aff[1].1;
            b_out[i] = lerp(b) * aff[2].0 + aff[2].1;
        }
    }

    /// Gathers the 4x4 bicubic taps of one output row: `xs[i]` the four source columns of
    /// output pixel `i`, `rows` the four source rows.
    #[inline(always)]
    pub(crate) fn gather_cubic<'r, S: YuvSource + 'r>(&mut self, rows: [S::Row<'r>; 4], xs: &[[u32; 4]]) {
        let n = xs.len().min(self.y[0].len());
        for (i, cols) in xs[..n].iter().enumerate() {
            for (j, &row) in rows.iter().enumerate() {
                for (k, &x) in cols.iter().enumerate() {
                    let [y, u, v] = S::yuv(row, x);
                    self.y[4 * j + k][i] = y;
                    self.u[4 * j + k][i] = u;
                    self.v[4 * j + k][i] = v;
                }
            }
        }
    }

    /// Converts the gathered 4x4 taps, weights them (`wx[k][i]` across, `wy` down, in the
    /// order of the scalar bicubic loop, so the results are identical), clamps to 0..=255
    /// and writes the normalized values into the three output rows. Each pass runs over
    /// one tap plane of the whole row, a loop the compiler vectorizes; the per-channel row
    /// sums live in `acc`.
    pub(crate) fn convert_row_cubic(
        &mut self,
        wx: &[Vec<f32>; 4],
        wy: [f32; 4],
        (r_out, g_out, b_out): (&mut [f32], &mut [f32], &mut [f32]),
        aff: [(f32, f32); 3],
        m: impl Matrix,
    ) {
        let m = m.coeffs();
        let n = wx
            .iter()
            .map(Vec::len)
            .fold(r_out.len().min(g_out.len()).min(b_out.len()).min(self.y[0].len()), usize::min);
        let [pr, pg, pb, hr, hg, hb] = self.acc.each_mut().map(|a| &mut a[..n]);
        pr.fill(0.0);
        pg.fill(0.0);
        pb.fill(0.0);
        for (j, &wy) in wy.iter().enumerate() {
            hr.fill(0.0);
            hg.fill(0.0);
            hb.fill(0.0);
            for (k, w) in wx.iter().enumerate() {
                let t = 4 * j + k;
                let (y, u, v, w) = (&self.y[t][..n], &self.u[t][..n], &self.v[t][..n], &w[..n]);
                for i in 0..n {
                    let [r, g, b] = m.rgb(y[i], u[i], v[i]);
                    hr[i] += r as f32 * w[i];
                    hg[i] += g as f32 * w[i];
                    hb[i] += b as f32 * w[i];
                }
            }
            for i in 0..n {
                pr[i] += hr[i] * wy;
                pg[i] += hg[i] * wy;
                pb[i] += hb[i] * wy;
            }
        }
        let (r_out, g_out, b_out) = (&mut r_out[..n], &mut g_out[..n], &mut b_out[..n]);
        for i in 0..n {
            r_out[i] = pr[i].clamp(0.0, 255.0) * aff[0].0 + aff[0].1;
            g_out[i] = pg[i].clamp(0.0, 255.0) * aff[1].0 + aff[1].1;
            b_out[i] = pb[i].clamp(0.0, 255.0) * aff[2].0 + aff[2].1;
        }
    }
}

/// Converts a raw frame to packed RGB8, `3 * width * height` bytes, with the same YUV
/// conversion (the frame's [`YuvColor`]) the classifier uses (for saving or showing frames: not on the per-frame
/// path). Returns `Ok(false)` and writes nothing for MJPEG, which is stored as it came.
///
/// # Panics
/// If `out` is not exactly `3 * width * height` bytes.
pub fn frame_to_rgb8(frame: &crate::Frame, out: &mut [u8]) -> Result<bool, crate::FrameError> {
    use crate::PixelFormat as F;
    let stride = frame.row_stride()?;
    let (w, h, data) = (frame.width, frame.height, frame.data);
    assert_eq!(out.len(), 3 * w as usize * h as usize, "RGB8 buffer for {w}x{h}");
    let m = Coeffs::new(frame.color);
    fn copy<S: PixelSource>(src: &S, w: u32, out: &mut [u8]) {
        for (y, row_out) in out.chunks_exact_mut(3 * w as usize).enumerate() {
            let row = src.row(y as u32);
            for (x, px) in row_out.chunks_exact_mut(3).enumerate() {
                px.copy_from_slice(&S::rgb(row, x as u32));
            }
        }
    }
    match frame.format {
        F::Yuyv => copy(&Yuv422::<false> { data, stride, m }, w, out),
        F::Uyvy => copy(&Yuv422::<true> { data, stride, m }, w, out),
        F::Nv12 => {
            let (luma, chroma) = data.split_at(stride * h as usize);
            copy(&Nv12 { luma, chroma, stride, m }, w, out)
        }
        F::Rgb24 => copy(&Packed::<RGB> { data, stride }, w, out),
        F::Bgr24 => copy(&Packed::<BGR> { data, stride }, w, out),
        F::Grey => copy(&Packed::<GREY> { data, stride }, w, out),
        F::Mjpeg => return Ok(false),
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::frame::{YuvMatrix, YuvRange};

    /// The published full-range matrices, typed from the standards' tables (as the V4L2
    /// colorspace documentation reprints them), not derived from `Kr`/`Kb` as the code is:
    /// `R = Y + a Cr`, `G = Y - b Cb - c Cr`, `B = Y + d Cb`.
    fn published(matrix: YuvMatrix) -> [f64; 4] {
        match matrix {
            YuvMatrix::Bt601 => [1.402, 0.344136, 0.714136, 1.772],
            YuvMatrix::Bt709 => [1.5748, 0.187324, 0.468124, 1.8556],
            YuvMatrix::Bt2020 => [1.4746, 0.164553, 0.571353, 1.8814],
            YuvMatrix::Smpte240m => [1.576, 0.226622, 0.476622, 1.826],
        }
    }

    /// The reference conversion in f64, rounded to the nearest byte.
    fn float(color: YuvColor, y: u8, u: u8, v: u8) -> [u8; 3] {
        let [a, b, c, d] = published(color.matrix);
        let (l, cb, cr) = match color.range {
            YuvRange::Limited => (
                (y as f64 - 16.0) * 255.0 / 219.0,
                (u as f64 - 128.0) * 255.0 / 224.0,
                (v as f64 - 128.0) * 255.0 / 224.0,
            ),
            YuvRange::Full => (y as f64, u as f64 - 128.0, v as f64 - 128.0),
        };
        let q = |x: f64| x.round().clamp(0.0, 255.0) as u8;
        [q(l + a * cr), q(l - b * cb - c * cr), q(l + d * cb)]
    }

    #[test]
    fn every_encoding_is_within_one_step_of_the_published_matrix() {
        for color in YuvColor::ALL {
            let m = Coeffs::new(color);
            let mut worst = 0;
            let mut differing = 0usize;
            for y in 0..=255u8 {
                for u in (0..=255u8).step_by(3) {
                    for v in (0..=255u8).step_by(5) {
                        let (a, b) = (m.rgb(y, u, v), float(color, y, u, v));
                        for c in 0..3 {
                            let d = (a[c] as i32 - b[c] as i32).abs();
                            worst = worst.max(d);
                            differing += (d > 0) as usize;
                        }
                    }
                }
            }
            assert!(worst <= 1, "{color}: worst difference {worst}");
            // Most values are exact. 8.8 coefficients are off by up to 1/512 each, which over
            // the chroma range moves about one value in twenty across a rounding boundary
            // (5.5% for BT.709 limited); a wrong coefficient shifts far more, and the worst case
            // above catches a wrong matrix outright.
            assert!(differing * 10 < 3 * 256 * 86 * 52, "{color}: {differing} values off by one");
            let (black, white) = match color.range {
                YuvRange::Limited => (16, 235),
                YuvRange::Full => (0, 255),
            };
            assert_eq!(m.rgb(black, 128, 128), [0, 0, 0], "{color}");
            assert_eq!(m.rgb(white, 128, 128), [255, 255, 255], "{color}");
        }
    }

    /// The default is the conversion the runtime always had, so models and goldens made with
    /// it see the same bytes.
    #[test]
    fn bt601_limited_keeps_the_historical_coefficients() {
        let m = Coeffs::new(YuvColor::BT601_LIMITED);
        assert_eq!((m.y, m.y_off, m.rv, m.gu, m.gv, m.bu), (298, 16, 409, 100, 208, 516));
        assert_eq!(Coeffs::new(YuvColor::default()), m);
        assert_eq!(Coeffs::BT601_LIMITED, m, "the constant instance of the hot loops");
        // JFIF's full-range BT.601 (what JPEG decoders apply), in 8.8.
        let j = Coeffs::new(YuvColor { matrix: YuvMatrix::Bt601, range: YuvRange::Full });
        assert_eq!((j.y, j.y_off, j.rv, j.gu, j.gv, j.bu), (256, 0, 359, 88, 183, 454));
        for c in YuvColor::ALL {
            assert_eq!(YuvColor::from_name(c.name()), Some(c));
        }
        assert_eq!(YuvColor::from_name("bt601"), None);
    }

    #[test]
    fn frame_to_rgb8_matches_the_per_pixel_conversion() {
        // 4x2 YUYV with a stride of 12 bytes (4 bytes of padding per row).
        let mut data = vec![0u8; 12 * 2];
        for (i, b) in data.iter_mut().enumerate() {
            *b = (i * 37 % 251) as u8;
        }
        let frame = crate::Frame::new(&data, crate::PixelFormat::Yuyv, 4, 2).with_stride(12);
        let mut out = vec![0u8; 3 * 4 * 2];
        assert!(frame_to_rgb8(&frame, &mut out).unwrap());
        for y in 0..2 {
            for x in 0..4 {
                let p = &data[12 * y + 4 * (x / 2)..];
                let luma = p[2 * (x & 1)];
                let m = Coeffs::new(YuvColor::BT601_LIMITED);
                assert_eq!(&out[3 * (4 * y + x)..][..3], &m.rgb(luma, p[1], p[3]), "pixel {x},{y}");
            }
        }
        // The frame's encoding is the one applied.
        let bt709 = YuvColor { matrix: YuvMatrix::Bt709, range: YuvRange::Full };
        let mut out709 = vec![0u8; out.len()];
        assert!(frame_to_rgb8(&frame.with_color(bt709), &mut out709).unwrap());
        let p = &data[..4];
        assert_eq!(&out709[..3], &Coeffs::new(bt709).rgb(p[0], p[1], p[3]));
        assert_ne!(out709, out);
        let jpeg = [0xff, 0xd8, 0xff, 0xd9];
        let mj = crate::Frame::new(&jpeg, crate::PixelFormat::Mjpeg, 4, 2);
        assert!(!frame_to_rgb8(&mj, &mut out).unwrap());
        let short = crate::Frame::new(&data[..10], crate::PixelFormat::Yuyv, 4, 2);
        assert!(frame_to_rgb8(&short, &mut out).is_err());
    }

    /// Every source's whole-row conversion against its per-pixel one, on every sub-range of
    /// a row (odd and even ends, lone pixels of a cut pair, empty ranges).
    #[test]
    fn row_conversion_equals_the_per_pixel_conversion() {
        fn check<S: PixelSource>(src: &S, w: u32, name: &str) {
            let mut out = vec![0u32; w as usize];
            for x0 in 0..=w {
                for x1 in x0..=w {
                    S::rgbx_row(src.row(1), x0, x1, &mut out);
                    for x in x0..x1 {
                        assert_eq!(
                            out[(x - x0) as usize],
                            rgbx(S::rgb(src.row(1), x)),
                            "{name} {x0}..{x1} at {x}"
                        );
                    }
                }
            }
        }
        let w = 10u32;
        let stride = 4 * w as usize + 3;
        let data: Vec<u8> = (0..3 * stride).map(|i| (i * 73 % 256) as u8).collect();
        check(&Packed::<RGB> { data: &data, stride }, w, "rgb");
        check(&Packed::<BGR> { data: &data, stride }, w, "bgr");
        check(&Packed::<GREY> { data: &data, stride }, w, "grey");
        for color in [YuvColor::BT601_LIMITED, YuvColor { matrix: YuvMatrix::Bt709, range: YuvRange::Full }] {
            let m = Coeffs::new(color);
            check(&Yuv422::<false> { data: &data, stride, m }, w, "yuyv");
            check(&Yuv422::<true> { data: &data, stride, m }, w, "uyvy");
            let (luma, chroma) = data.split_at(stride);
            check(&Nv12 { luma, chroma, stride: stride / 3, m }, w, "nv12");
        }
    }
}
