//! Reading one RGB pixel from a frame in any raw format, for the fused resize in
//! [`crate::preprocess::Resizer`].
//!
//! YUV is converted with BT.601 limited ("studio") range, what UVC cameras send for YUYV
//! and what NV12 from video pipelines uses:
//!
//! ```text
//! R = 1.164 (Y - 16)                  + 1.596 (V - 128)
//! G = 1.164 (Y - 16) - 0.392 (U - 128) - 0.813 (V - 128)
//! B = 1.164 (Y - 16) + 2.017 (U - 128)
//! ```
//!
//! in 8.8 fixed point (coefficients x 256, rounded: 298, 409, 100, 208, 516), clamped to
//! 0..=255. Chroma is taken from the pixel's own pair (4:2:2) or 2x2 block (4:2:0), not
//! interpolated: the same "convert the frame to RGB8" a plain converter does, so that
//! converting each bilinear tap and then interpolating equals converting the whole frame
//! first and then resizing it.

/// BT.601 limited range YUV to RGB8 (see the module docs).
#[inline(always)]
pub(crate) fn yuv_to_rgb(y: u8, u: u8, v: u8) -> [u8; 3] {
    let c = 298 * (y as i32 - 16) + 128;
    let d = u as i32 - 128;
    let e = v as i32 - 128;
    [clamp8((c + 409 * e) >> 8), clamp8((c - 100 * d - 208 * e) >> 8), clamp8((c + 516 * d) >> 8)]
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
}

impl<const UYVY: bool> PixelSource for Yuv422<'_, UYVY> {
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
        let [y, u, v] = Self::yuv(row, x);
        yuv_to_rgb(y, u, v)
    }

    #[inline(always)]
    fn rgbx_row(row: &[u8], x0: u32, x1: u32, out: &mut [u32]) {
        let (_, x, n, _) = pair_span(x0, x1);
        let pairs = row[2 * x..2 * x + 4 * n]
            .chunks_exact(4)
            .map(|q| if UYVY { (q[1], q[3], q[0], q[2]) } else { (q[0], q[2], q[1], q[3]) });
        yuv_pairs(x0, x1, out, |x| Self::rgb(row, x), pairs)
    }
}

impl<const UYVY: bool> YuvSource for Yuv422<'_, UYVY> {
    #[inline(always)]
    fn yuv(row: &[u8], x: u32) -> [u8; 3] {
        let x = x as usize;
        let pair = &row[4 * (x / 2)..4 * (x / 2) + 4];
        if UYVY { [pair[1 + 2 * (x & 1)], pair[0], pair[2]] } else { [pair[2 * (x & 1)], pair[1], pair[3]] }
    }
}

/// NV12: Y plane, then interleaved `U V` at half resolution, both `stride` bytes a row.
pub(crate) struct Nv12<'a> {
    pub luma: &'a [u8],
    pub chroma: &'a [u8],
    pub stride: usize,
}

impl PixelSource for Nv12<'_> {
    type Row<'r>
        = (&'r [u8], &'r [u8])
    where
        Self: 'r;

    #[inline(always)]
    fn row(&self, y: u32) -> (&[u8], &[u8]) {
        (&self.luma[y as usize * self.stride..], &self.chroma[(y as usize / 2) * self.stride..])
    }

    #[inline(always)]
    fn rgb(row: (&[u8], &[u8]), x: u32) -> [u8; 3] {
        let [y, u, v] = Self::yuv(row, x);
        yuv_to_rgb(y, u, v)
    }

    #[inline(always)]
    fn rgbx_row((luma, chroma): (&[u8], &[u8]), x0: u32, x1: u32, out: &mut [u32]) {
        let (_, x, n, _) = pair_span(x0, x1);
        let pairs = luma[x..x + 2 * n]
            .chunks_exact(2)
            .zip(chroma[x..x + 2 * n].chunks_exact(2))
            .map(|(l, c)| (l[0], l[1], c[0], c[1]));
        yuv_pairs(x0, x1, out, |x| Self::rgb((luma, chroma), x), pairs)
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
    for ((y0, y1, u, v), d) in pairs.zip(out[o..o + 2 * n].chunks_exact_mut(2)) {
        d[0] = rgbx(yuv_to_rgb(y0, u, v));
        d[1] = rgbx(yuv_to_rgb(y1, u, v));
    }
    if trail {
        out[o + 2 * n] = rgbx(single(x1 - 1));
    }
}

impl YuvSource for Nv12<'_> {
    #[inline(always)]
    fn yuv((luma, chroma): (&[u8], &[u8]), x: u32) -> [u8; 3] {
        let x = x as usize;
        let uv = &chroma[x & !1..(x & !1) + 2];
        [luma[x], uv[0], uv[1]]
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
    ) {
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
                let [rk, gk, bk] = yuv_to_rgb(y[k][i], u[k][i], v[k][i]);
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
    ) {
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
                    let [r, g, b] = yuv_to_rgb(y[i], u[i], v[i]);
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

/// Converts a raw frame to packed RGB8, `3 * width * height` bytes, with the same BT.601
/// conversion the classifier uses (for saving or showing frames: not on the per-frame
/// path). Returns `Ok(false)` and writes nothing for MJPEG, which is stored as it came.
///
/// # Panics
/// If `out` is not exactly `3 * width * height` bytes.
pub fn frame_to_rgb8(frame: &crate::Frame, out: &mut [u8]) -> Result<bool, crate::FrameError> {
    use crate::PixelFormat as F;
    let stride = frame.row_stride()?;
    let (w, h, data) = (frame.width, frame.height, frame.data);
    assert_eq!(out.len(), 3 * w as usize * h as usize, "RGB8 buffer for {w}x{h}");
    fn copy<S: PixelSource>(src: &S, w: u32, out: &mut [u8]) {
        for (y, row_out) in out.chunks_exact_mut(3 * w as usize).enumerate() {
            let row = src.row(y as u32);
            for (x, px) in row_out.chunks_exact_mut(3).enumerate() {
                px.copy_from_slice(&S::rgb(row, x as u32));
            }
        }
    }
    match frame.format {
        F::Yuyv => copy(&Yuv422::<false> { data, stride }, w, out),
        F::Uyvy => copy(&Yuv422::<true> { data, stride }, w, out),
        F::Nv12 => {
            let (luma, chroma) = data.split_at(stride * h as usize);
            copy(&Nv12 { luma, chroma, stride }, w, out)
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

    /// The conversion as written in the module docs, in f64, rounded.
    fn float(y: u8, u: u8, v: u8) -> [u8; 3] {
        let (c, d, e) = (y as f64 - 16.0, u as f64 - 128.0, v as f64 - 128.0);
        let q = |x: f64| x.round().clamp(0.0, 255.0) as u8;
        [q(1.164 * c + 1.596 * e), q(1.164 * c - 0.392 * d - 0.813 * e), q(1.164 * c + 2.017 * d)]
    }

    #[test]
    fn fixed_point_is_within_one_step_of_the_formula() {
        let mut worst = 0;
        for y in 0..=255u8 {
            for u in (0..=255u8).step_by(3) {
                for v in (0..=255u8).step_by(5) {
                    let (a, b) = (yuv_to_rgb(y, u, v), float(y, u, v));
                    for c in 0..3 {
                        worst = worst.max((a[c] as i32 - b[c] as i32).abs());
                    }
                }
            }
        }
        assert!(worst <= 1, "worst difference {worst}");
        assert_eq!(yuv_to_rgb(16, 128, 128), [0, 0, 0]);
        assert_eq!(yuv_to_rgb(235, 128, 128), [255, 255, 255]);
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
                assert_eq!(&out[3 * (4 * y + x)..][..3], &yuv_to_rgb(luma, p[1], p[3]), "pixel {x},{y}");
            }
        }
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
        check(&Yuv422::<false> { data: &data, stride }, w, "yuyv");
        check(&Yuv422::<true> { data: &data, stride }, w, "uyvy");
        let (luma, chroma) = data.split_at(stride);
        check(&Nv12 { luma, chroma, stride: stride / 3 }, w, "nv12");
    }
}
