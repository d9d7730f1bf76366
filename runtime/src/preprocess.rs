//! From pixels to the NCHW input tensor: region of interest, resize (squash or centre crop),
//! colour conversion, sampling (bilinear, bicubic or nearest, see
//! [`crate::contract::Resample`]), channel order and normalization in one pass over the
//! output.
//!
//! Bicubic reads 4x4 taps per output pixel (weights precomputed per geometry, 4 per axis),
//! converts each to RGB8 like the bilinear path, and clamps the interpolated value to
//! 0..=255 before the normalization multiply-add: the cubic kernel overshoots at edges,
//! and PIL, which transformers and timm resize with, clamps its 8-bit result. It costs 4x
//! the conversions of bilinear.
//!
//! The sampling taps are computed once per source geometry ([`Resizer::new`],
//! [`Resizer::set_source`]); filling a tensor ([`Resizer::fill_rgb8`],
//! [`FramePreprocessor::fill`]) does no allocation.
//!
//! Raw frames (YUYV, UYVY, NV12, RGB, BGR, grey) are read straight from the capture buffer:
//! for each output pixel the four bilinear taps are converted to RGB8, then interpolated.
//! Converting each tap first keeps the reference semantics exactly, "convert the frame to
//! RGB8, then resize" (interpolating Y, U, V and converting once would be 4x fewer
//! conversions, but the clamp to 0..=255 is not linear, so saturated colours would differ).
//! For 640x480 into 224x224 that is 4 x 224² ≈ 200k conversions, fewer than the 307k of
//! converting the whole frame, and no intermediate image. MJPEG frames are decoded into a
//! scratch RGB buffer allocated once for the largest frame, then resized from it.
//!
//! YUV is BT.601 limited ("studio") range, what UVC cameras send as YUYV and what NV12 from
//! video pipelines uses: `R = 1.164 (Y-16) + 1.596 (V-128)`, `G = 1.164 (Y-16) - 0.392
//! (U-128) - 0.813 (V-128)`, `B = 1.164 (Y-16) + 2.017 (U-128)`, in 8.8 fixed point,
//! clamped to 0..=255 (within one step of the formula in f64). Chroma is the pixel's own
//! pair's (4:2:2) or 2x2 block's (4:2:0), not interpolated, as a plain converter does.
//!
//! Two kernels fill from YUV ([`Kernel`]), with identical results: the scalar one converts
//! and interpolates one output pixel at a time; the fast one (default) gathers the taps of
//! a whole output row, then converts and interpolates the row as plain arrays, which the
//! compiler vectorizes (SSE2 on x86_64, NEON on aarch64: both baseline, so no `unsafe` and
//! no run-time detection). `benches/frames.rs` measures both: ~6x on x86_64.

use crate::antialias::{self, AaAxis, AaScratch};
use crate::contract::{ChannelOrder, Preprocess, Resample, ResizeMode};
use crate::convert::{self, PixelSource, YuvSource, YuvTaps};
use crate::frame::{Frame, FrameError, MAX_SIDE, PixelFormat, check_geometry};
use crate::jpeg::JpegScratch;

/// One output coordinate's bilinear taps along an axis.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Tap {
    lo: u32,
    hi: u32,
    /// Weight of `hi`; `lo` gets `1 - frac`.
    frac: f32,
}

/// One output coordinate's bicubic taps along an axis: four source positions (clamped to
/// the region, so edge pixels repeat) and their Keys weights.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Cubic {
    idx: [u32; 4],
    w: [f32; 4],
}

/// Keys' cubic convolution kernel with `a = -0.5` (PIL's bicubic; Catmull-Rom).
fn keys(d: f64) -> f64 {
    const A: f64 = -0.5;
    let d = d.abs();
    if d <= 1.0 {
        ((A + 2.0) * d - (A + 3.0)) * d * d + 1.0
    } else if d < 2.0 {
        ((A * d - 5.0 * A) * d + 8.0 * A) * d - 4.0 * A
    } else {
        0.0
    }
}

/// A rectangle of a frame, in frame pixels: the part of the frame the resize mode applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Roi {
    /// Left column.
    pub x: u32,
    /// Top row.
    pub y: u32,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
}

impl Roi {
    /// The whole of a `width` x `height` frame.
    pub fn full(width: u32, height: u32) -> Roi {
        Roi { x: 0, y: 0, width, height }
    }

    /// Whether the region is non-empty and inside a `width` x `height` frame.
    pub fn fits(&self, width: u32, height: u32) -> bool {
        self.width > 0
            && self.height > 0
            && self.x as u64 + self.width as u64 <= width as u64
            && self.y as u64 + self.height as u64 <= height as u64
    }
}

/// Precomputed sampling of a `src_w` x `src_h` frame (or a region of it) into a
/// `size` x `size` tensor.
#[derive(Clone, Debug)]
pub struct Resizer {
    src_w: u32,
    src_h: u32,
    roi: Roi,
    size: u32,
    mode: ResizeMode,
    filter: Resample,
    /// Bilinear taps (nearest: `lo == hi`, `frac == 0`); empty for bicubic.
    xs: Vec<Tap>,
    ys: Vec<Tap>,
    /// `xs` as structure of arrays, for the fast path.
    x_cols: Vec<(u32, u32)>,
    x_frac: Vec<f32>,
    /// Bicubic taps; empty for the other filters. Columns as structure of arrays for the
    /// fast path.
    cx_idx: Vec<[u32; 4]>,
    /// `cx_w[k][i]`: weight of column tap `k` of output column `i`.
    cx_w: [Vec<f32>; 4],
    cy: Vec<Cubic>,
    /// Pillow's antialiasing convolution instead of the taps above
    /// ([`Preprocess::antialiased`]); its axes are empty otherwise.
    antialias: bool,
    aa_x: AaAxis,
    aa_y: AaAxis,
    affine: [(f32, f32); 3],
    bgr: bool,
}

impl Resizer {
    /// Taps for a whole source of `src_w` x `src_h` pixels under `pre`, at output side
    /// `size`.
    ///
    /// # Panics
    /// If a size is zero.
    pub fn new(src_w: u32, src_h: u32, size: u32, pre: &Preprocess) -> Resizer {
        assert!(src_w > 0 && src_h > 0 && size > 0, "resizer needs non-empty sizes");
        let mut r = Resizer {
            src_w,
            src_h,
            roi: Roi::full(src_w, src_h),
            size,
            mode: pre.resize,
            filter: pre.resample,
            // Every buffer holds `size` entries whatever the filter, so that a new geometry
            // never allocates.
            xs: Vec::with_capacity(size as usize),
            ys: Vec::with_capacity(size as usize),
            x_cols: Vec::with_capacity(size as usize),
            x_frac: Vec::with_capacity(size as usize),
            cx_idx: Vec::with_capacity(size as usize),
            cx_w: std::array::from_fn(|_| Vec::with_capacity(size as usize)),
            cy: Vec::with_capacity(size as usize),
            antialias: pre.antialiased(),
            aa_x: AaAxis::default(),
            aa_y: AaAxis::default(),
            affine: pre.affine(),
            bgr: pre.channel_order == ChannelOrder::Bgr,
        };
        r.reserve(src_w, src_h);
        r.compute_taps();
        r
    }

    /// Makes room for sources up to `max_width` x `max_height`, so that
    /// [`Resizer::set_source`] within them does not allocate (the antialiasing filter's
    /// footprint grows with the downscale factor; the other filters' do not).
    pub fn reserve(&mut self, max_width: u32, max_height: u32) {
        if self.antialias {
            self.aa_x.reserve(self.filter, max_width, self.size);
            self.aa_y.reserve(self.filter, max_height, self.size);
        }
    }

    /// Whether this resizer uses Pillow's antialiasing convolution.
    pub fn antialiased(&self) -> bool {
        self.antialias
    }

    /// Taps for the region `roi` (the whole frame if `None`) of a `src_w` x `src_h` source.
    /// The resize mode applies inside the region; samples are clamped to its edges, as if
    /// the region were cut out first.
    ///
    /// # Panics
    /// If `size` is zero.
    pub fn with_roi(
        src_w: u32,
        src_h: u32,
        roi: Option<Roi>,
        size: u32,
        pre: &Preprocess,
    ) -> Result<Resizer, FrameError> {
        let mut r = Resizer::new(1, 1, size, pre);
        r.set_source(src_w, src_h, roi)?;
        Ok(r)
    }

    /// Recomputes the taps for a new source geometry, in place: the tap buffers hold `size`
    /// entries whatever the source, so this does not allocate. On error the resizer keeps
    /// its previous geometry.
    pub fn set_source(&mut self, src_w: u32, src_h: u32, roi: Option<Roi>) -> Result<(), FrameError> {
        if src_w == 0 || src_h == 0 {
            return Err(FrameError::ZeroSize { width: src_w, height: src_h });
        }
        let roi = roi.unwrap_or(Roi::full(src_w, src_h));
        if !roi.fits(src_w, src_h) {
            return Err(FrameError::RoiOutside { roi, width: src_w, height: src_h });
        }
        (self.src_w, self.src_h, self.roi) = (src_w, src_h, roi);
        self.compute_taps();
        Ok(())
    }

    fn compute_taps(&mut self) {
        let roi = self.roi;
        let (rw, rh) = (roi.width as f64, roi.height as f64);
        // The output is pixels `off .. off + size` of each axis of a `w2` x `h2` resize of
        // the region.
        let size = self.size as f64;
        let (w2, h2, offx, offy) = match self.mode {
            ResizeMode::Squash => (size, size, 0.0, 0.0),
            ResizeMode::CenterCrop { crop_fraction } => {
                // transformers' BitImageProcessor (and timm's eval transform) in one pass:
                // the shorter side resized to S = C / crop_fraction, the longer to
                // int(S * long / short), then C x C cut at ((W' - C) // 2, (H' - C) // 2).
                // Sampling the source at the positions the crop's pixels have in the
                // resized image equals the two steps; keeping the whole-pixel rounding of
                // the resized size and offset matters (without it a 640x480 frame is
                // sampled up to a source pixel away from where transformers samples).
                let c = size;
                let s = (c / crop_fraction as f64).round().max(c);
                let long = (s * rw.max(rh) / rw.min(rh)).floor().max(c);
                let (w2, h2) = if rw <= rh { (s, long) } else { (long, s) };
                (w2, h2, ((w2 - c) / 2.0).floor(), ((h2 - c) / 2.0).floor())
            }
        };
        if self.antialias {
            let to = |v: f64| v as u32;
            self.aa_x.compute(self.filter, roi.x, roi.width, to(w2), to(offx), self.size);
            self.aa_y.compute(self.filter, roi.y, roi.height, to(h2), to(offy), self.size);
        }
        let (x0, y0, cw, ch) = match self.mode {
            ResizeMode::Squash => (0.0, 0.0, rw, rh),
            ResizeMode::CenterCrop { .. } => {
                let (sx, sy) = (rw / w2, rh / h2);
                (offx * sx, offy * sy, size * sx, size * sy)
            }
        };
        self.xs.clear();
        self.ys.clear();
        self.cx_idx.clear();
        self.cx_w.iter_mut().for_each(Vec::clear);
        self.cy.clear();
        let (ax, ay) = (
            Axis::new(roi.x as f64 + x0, cw, roi.x, roi.width, self.size),
            Axis::new(roi.y as f64 + y0, ch, roi.y, roi.height, self.size),
        );
        match self.filter {
            _ if self.antialias => {}
            Resample::Bilinear => {
                self.xs.extend(ax.bilinear());
                self.ys.extend(ay.bilinear());
            }
            Resample::Nearest => {
                self.xs.extend(ax.nearest());
                self.ys.extend(ay.nearest());
            }
            Resample::Bicubic => {
                self.cx_idx.extend(ax.cubic().map(|t| t.idx));
                for (k, w) in self.cx_w.iter_mut().enumerate() {
                    w.extend(ax.cubic().map(|t| t.w[k]));
                }
                self.cy.extend(ay.cubic());
            }
        }
        self.x_cols.clear();
        self.x_cols.extend(self.xs.iter().map(|t| (t.lo, t.hi)));
        self.x_frac.clear();
        self.x_frac.extend(self.xs.iter().map(|t| t.frac));
    }

    /// Source width and height this resizer was built for.
    pub fn source_size(&self) -> (u32, u32) {
        (self.src_w, self.src_h)
    }

    /// The region of the source that is sampled (the whole source unless one was given).
    pub fn roi(&self) -> Roi {
        self.roi
    }

    /// Output side.
    pub fn size(&self) -> u32 {
        self.size
    }

    /// Fills `out` (`3 * size * size` values, NCHW with N = 1) from packed RGB8 rows of
    /// `stride` bytes.
    ///
    /// # Panics
    /// If `out`, `stride` or `src` are too short for the source size.
    pub fn fill_rgb8(&self, src: &[u8], stride: usize, out: &mut [f32]) {
        assert!(stride >= 3 * self.src_w as usize, "stride {stride} shorter than a row");
        assert!(
            src.len() >= stride * (self.src_h as usize - 1) + 3 * self.src_w as usize,
            "source too short"
        );
        let src = convert::Packed::<{ convert::RGB }> { data: src, stride };
        // An image file: its scratch buffers are made here (the camera path keeps its own).
        self.fill_with(&src, &mut AaScratch::default(), out);
    }

    /// [`Resizer::fill_from`], or the antialiased fill with `aa` as its buffers.
    pub(crate) fn fill_with<S: PixelSource>(&self, src: &S, aa: &mut AaScratch, out: &mut [f32]) {
        if self.antialias { self.fill_aa(src, aa, out) } else { self.fill_from(src, out) }
    }

    /// Pillow's antialiased resize of the region (RGB8 taps from `src`), then channel order
    /// and normalization of each 8-bit result.
    fn fill_aa<S: PixelSource>(&self, src: &S, aa: &mut AaScratch, out: &mut [f32]) {
        let (r_plane, g_plane, b_plane) = self.planes(out);
        let size = self.size as usize;
        antialias::resample(src, &self.aa_x, &self.aa_y, aa, |oy, row| {
            let base = oy * size;
            for (ox, px) in row.chunks_exact(3).enumerate() {
                [r_plane[base + ox], g_plane[base + ox], b_plane[base + ox]] =
                    self.normalize([px[0] as f32, px[1] as f32, px[2] as f32]);
            }
        });
    }

    /// The fused loop: for each output pixel, four taps from `src` as RGB8, bilinear
    /// interpolation, channel order and normalization. `src` must cover the source size
    /// (validated frames do); the taps never leave the region.
    pub(crate) fn fill_from<S: PixelSource>(&self, src: &S, out: &mut [f32]) {
        debug_assert!(!self.antialias, "the antialiased fill needs its scratch: fill_with");
        if self.filter == Resample::Bicubic {
            return self.fill_cubic(src, out);
        }
        let (r_plane, g_plane, b_plane) = self.planes(out);
        let size = self.size as usize;
        for (oy, ty) in self.ys.iter().enumerate() {
            let row_lo = src.row(ty.lo);
            let row_hi = src.row(ty.hi);
            let wy = ty.frac;
            let base = oy * size;
            let (r_row, g_row, b_row) = (
                &mut r_plane[base..base + size],
                &mut g_plane[base..base + size],
                &mut b_plane[base..base + size],
            );
            for (ox, tx) in self.xs.iter().enumerate() {
                let (a0, b0) = (S::rgb(row_lo, tx.lo), S::rgb(row_lo, tx.hi));
                let (a1, b1) = (S::rgb(row_hi, tx.lo), S::rgb(row_hi, tx.hi));
                let wx = tx.frac;
                let mut px = [0f32; 3];
                for (c, v) in px.iter_mut().enumerate() {
                    let top = a0[c] as f32 + (b0[c] as f32 - a0[c] as f32) * wx;
                    let bot = a1[c] as f32 + (b1[c] as f32 - a1[c] as f32) * wx;
                    *v = top + (bot - top) * wy;
                }
                [r_row[ox], g_row[ox], b_row[ox]] = self.normalize(px);
            }
        }
    }
}

impl Resizer {
    /// The three channel planes of an NCHW output of this size.
    fn planes<'o>(&self, out: &'o mut [f32]) -> (&'o mut [f32], &'o mut [f32], &'o mut [f32]) {
        let plane = (self.size * self.size) as usize;
        assert!(out.len() == 3 * plane, "output holds {} values, needs {}", out.len(), 3 * plane);
        let (r, rest) = out.split_at_mut(plane);
        let (g, b) = rest.split_at_mut(plane);
        (r, g, b)
    }

    /// One interpolated RGB pixel (0..255) as tensor values: channel order, then the folded
    /// normalization (one multiply-add per channel).
    #[inline(always)]
    fn normalize(&self, px: [f32; 3]) -> [f32; 3] {
        // Tensor channel c takes source channel order[c].
        let order = if self.bgr { [2, 1, 0] } else { [0, 1, 2] };
        let aff = self.affine;
        [
            px[order[0]] * aff[0].0 + aff[0].1,
            px[order[1]] * aff[1].0 + aff[1].1,
            px[order[2]] * aff[2].0 + aff[2].1,
        ]
    }

    /// [`Resizer::fill_from`] for bicubic: 4x4 taps as RGB8, each source row's four taps
    /// weighted across, the four row sums weighted down, clamped to 0..=255 (the cubic
    /// kernel overshoots at edges; PIL clamps its 8-bit result), then normalized. The fast
    /// YUV kernel ([`YuvTaps::convert_row_cubic`]) evaluates the same expressions in the same
    /// order, so both give identical results.
    fn fill_cubic<S: PixelSource>(&self, src: &S, out: &mut [f32]) {
        let (r_plane, g_plane, b_plane) = self.planes(out);
        let size = self.size as usize;
        for (oy, ty) in self.cy.iter().enumerate() {
            let rows = ty.idx.map(|y| src.row(y));
            let base = oy * size;
            for (ox, cols) in self.cx_idx.iter().enumerate() {
                let mut px = [0f32; 3];
                for (row, wy) in rows.iter().zip(ty.w) {
                    let mut h = [0f32; 3];
                    for (&x, w) in cols.iter().zip(&self.cx_w) {
                        let w = w[ox];
                        let p = S::rgb(*row, x);
                        for c in 0..3 {
                            h[c] += p[c] as f32 * w;
                        }
                    }
                    for c in 0..3 {
                        px[c] += h[c] * wy;
                    }
                }
                let px = px.map(|v| v.clamp(0.0, 255.0));
                [r_plane[base + ox], g_plane[base + ox], b_plane[base + ox]] = self.normalize(px);
            }
        }
    }

    /// The fast path for YUV frames: per output row, gather the raw Y, U, V of every tap
    /// (scalar loads), then convert, interpolate and normalize the whole row in a loop the
    /// compiler vectorizes. Same arithmetic as [`Resizer::fill_from`], same results.
    pub(crate) fn fill_yuv<S: YuvSource>(&self, src: &S, scratch: &mut YuvTaps, out: &mut [f32]) {
        let plane = (self.size * self.size) as usize;
        assert!(out.len() == 3 * plane, "output holds {} values, needs {}", out.len(), 3 * plane);
        let (first, rest) = out.split_at_mut(plane);
        let (second, third) = rest.split_at_mut(plane);
        // Source red goes to tensor channel 0, or 2 for a BGR network.
        let (r_plane, g_plane, b_plane) =
            if self.bgr { (third, second, first) } else { (first, second, third) };
        let a = self.affine;
        let aff = if self.bgr { [a[2], a[1], a[0]] } else { a };
        let m = src.coeffs();
        let planes = (r_plane, g_plane, b_plane);
        if m == convert::Coeffs::BT601_LIMITED {
            self.yuv_rows(src, scratch, planes, aff, convert::Bt601Limited);
        } else {
            self.yuv_rows(src, scratch, planes, aff, m);
        }
    }

    /// [`Resizer::fill_yuv`]'s rows, with the coefficients as a value or as constants.
    #[inline(always)]
    fn yuv_rows<S: YuvSource>(
        &self,
        src: &S,
        scratch: &mut YuvTaps,
        (r_plane, g_plane, b_plane): (&mut [f32], &mut [f32], &mut [f32]),
        aff: [(f32, f32); 3],
        m: impl convert::Matrix,
    ) {
        let size = self.size as usize;
        for (oy, ty) in self.cy.iter().enumerate() {
            scratch.gather_cubic::<S>(ty.idx.map(|y| src.row(y)), &self.cx_idx);
            let rows = oy * size..(oy + 1) * size;
            scratch.convert_row_cubic(
                &self.cx_w,
                ty.w,
                (&mut r_plane[rows.clone()], &mut g_plane[rows.clone()], &mut b_plane[rows]),
                aff,
                m,
            );
        }
        for (oy, ty) in self.ys.iter().enumerate() {
            scratch.gather::<S>(src.row(ty.lo), src.row(ty.hi), &self.x_cols);
            let rows = oy * size..(oy + 1) * size;
            scratch.convert_row(
                &self.x_frac,
                ty.frac,
                (&mut r_plane[rows.clone()], &mut g_plane[rows.clone()], &mut b_plane[rows]),
                aff,
                m,
            );
        }
    }
}

/// Which implementation fills the tensor from raw YUV frames. Both give identical results;
/// the scalar one is the plain reference the fast one is tested against.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Kernel {
    /// Gather the taps of a row, then convert and interpolate the row as arrays
    /// (auto-vectorized).
    #[default]
    Fast,
    /// Convert and interpolate one output pixel at a time.
    Scalar,
}

/// One axis of a resize: `n` outputs covering `[start, start + extent)` of a source axis
/// whose samples are clamped to the `len` pixels from `first`. Output `i`'s centre is at
/// `start + (i + 0.5) * extent / n` (half-pixel centres); no filter antialiases.
#[derive(Clone, Copy)]
struct Axis {
    start: f64,
    scale: f64,
    min: f64,
    max: f64,
    n: u32,
}

impl Axis {
    fn new(start: f64, extent: f64, first: u32, len: u32, n: u32) -> Axis {
        Axis { start, scale: extent / n as f64, min: first as f64, max: (first + len - 1) as f64, n }
    }

    /// Bilinear taps, position clamped to the edge pixels (tf.image.resize).
    fn bilinear(self) -> impl Iterator<Item = Tap> {
        (0..self.n).map(move |i| {
            let s = (self.start + (i as f64 + 0.5) * self.scale - 0.5).clamp(self.min, self.max);
            let lo = s.floor();
            let hi = (lo + 1.0).min(self.max);
            Tap { lo: lo as u32, hi: hi as u32, frac: (s - lo) as f32 }
        })
    }

    /// The pixel holding each output centre, as a bilinear tap of weight 0 (PIL `NEAREST`).
    fn nearest(self) -> impl Iterator<Item = Tap> {
        (0..self.n).map(move |i| {
            let s = (self.start + (i as f64 + 0.5) * self.scale).floor().clamp(self.min, self.max) as u32;
            Tap { lo: s, hi: s, frac: 0.0 }
        })
    }

    /// Keys cubic taps (a = -0.5) around each output centre; positions outside the region
    /// repeat its edge pixel (PyTorch's bicubic border handling; PIL instead drops them and
    /// renormalizes, which differs only within two pixels of the edge).
    fn cubic(self) -> impl Iterator<Item = Cubic> {
        (0..self.n).map(move |i| {
            let s = self.start + (i as f64 + 0.5) * self.scale - 0.5;
            let f = s.floor();
            let t = s - f;
            let idx = std::array::from_fn(|k| (f + k as f64 - 1.0).clamp(self.min, self.max) as u32);
            let w = std::array::from_fn(|k| keys(t - (k as f64 - 1.0)) as f32);
            Cubic { idx, w }
        })
    }
}

fn yuv<S: YuvSource>(r: &Resizer, src: &S, fast: bool, scratch: &mut Scratch, out: &mut [f32]) {
    if r.antialias {
        r.fill_aa(src, &mut scratch.aa, out)
    } else if fast {
        r.fill_yuv(src, &mut scratch.yuv, out)
    } else {
        r.fill_from(src, out)
    }
}

/// The per-frame buffers of a [`FramePreprocessor`], sized once for the largest frame.
#[derive(Debug)]
struct Scratch {
    yuv: YuvTaps,
    aa: AaScratch,
}

/// Frames of any [`PixelFormat`] to the input tensor, with every buffer allocated up front:
/// the taps for the current geometry and the MJPEG scratch image for the largest frame.
#[derive(Debug)]
pub struct FramePreprocessor {
    resizer: Resizer,
    roi: Option<Roi>,
    /// Source size the resizer's taps are for; `None` before the first frame or `prepare`.
    prepared: Option<(u32, u32)>,
    max_width: u32,
    max_height: u32,
    jpeg: JpegScratch,
    scratch: Scratch,
    kernel: Kernel,
}

impl FramePreprocessor {
    /// A preprocessor for `size` x `size` tensors under `pre` (resize mode, normalization,
    /// channel order), sampling `roi` of each frame (the whole frame if `None`), for frames
    /// of at most `max_width` x `max_height` pixels (capped at [`MAX_SIDE`]). Allocates the
    /// MJPEG scratch image (`3 * max_width * max_height` bytes, zeroed lazily by the OS).
    ///
    /// # Panics
    /// If `size` is zero.
    pub fn new(pre: &Preprocess, size: u32, roi: Option<Roi>, max_width: u32, max_height: u32) -> Self {
        let (max_width, max_height) = (max_width.min(MAX_SIDE), max_height.min(MAX_SIDE));
        let mut resizer = Resizer::new(1, 1, size, pre);
        resizer.reserve(max_width, max_height);
        let mut aa = AaScratch::default();
        if resizer.antialiased() {
            aa.reserve(max_width, max_height, size);
        }
        FramePreprocessor {
            resizer,
            roi,
            prepared: None,
            max_width,
            max_height,
            jpeg: JpegScratch::new(max_width, max_height),
            scratch: Scratch { yuv: YuvTaps::new(size as usize), aa },
            kernel: Kernel::Fast,
        }
    }

    /// Selects the implementation for YUV frames (the fast one by default).
    pub fn set_kernel(&mut self, kernel: Kernel) {
        self.kernel = kernel;
    }

    /// The implementation used for YUV frames.
    pub fn kernel(&self) -> Kernel {
        self.kernel
    }

    /// Computes the taps for `width` x `height` frames of `format` ahead of the first one,
    /// and checks the geometry (size, parity, maximum, region of interest). Without it the
    /// first frame of a new geometry does this itself; neither allocates.
    pub fn prepare(&mut self, format: PixelFormat, width: u32, height: u32) -> Result<(), FrameError> {
        check_geometry(format, width, height)?;
        crate::frame::check_max(width, height, self.max_width, self.max_height)?;
        if self.prepared != Some((width, height)) {
            self.resizer.set_source(width, height, self.roi)?;
            self.prepared = Some((width, height));
        }
        Ok(())
    }

    /// Checks `frame` and fills `out` (`3 * size * size` values) from it. On error `out` is
    /// left untouched, except for an MJPEG frame that fails while decoding, which leaves
    /// `out` as it was too (decoding goes to the scratch image first).
    ///
    /// # Panics
    /// If `out` does not hold `3 * size * size` values.
    pub fn fill(&mut self, frame: &Frame, out: &mut [f32]) -> Result<(), FrameError> {
        let stride = frame.row_stride()?;
        self.prepare(frame.format, frame.width, frame.height)?;
        let (data, w, h) = (frame.data, frame.width, frame.height);
        let r = &self.resizer;
        let fast = self.kernel == Kernel::Fast;
        // A few multiplications: cheaper than keeping a cache of them.
        let m = convert::Coeffs::new(frame.color);
        match frame.format {
            PixelFormat::Yuyv => {
                yuv(r, &convert::Yuv422::<false> { data, stride, m }, fast, &mut self.scratch, out)
            }
            PixelFormat::Uyvy => {
                yuv(r, &convert::Yuv422::<true> { data, stride, m }, fast, &mut self.scratch, out)
            }
            PixelFormat::Nv12 => {
                // Validation guarantees `stride * h` luma bytes and the chroma rows after them.
                let (luma, chroma) = data.split_at(stride * h as usize);
                yuv(r, &convert::Nv12 { luma, chroma, stride, m }, fast, &mut self.scratch, out)
            }
            PixelFormat::Rgb24 => {
                r.fill_with(&convert::Packed::<{ convert::RGB }> { data, stride }, &mut self.scratch.aa, out)
            }
            PixelFormat::Bgr24 => {
                r.fill_with(&convert::Packed::<{ convert::BGR }> { data, stride }, &mut self.scratch.aa, out)
            }
            PixelFormat::Grey => {
                r.fill_with(&convert::Packed::<{ convert::GREY }> { data, stride }, &mut self.scratch.aa, out)
            }
            PixelFormat::Mjpeg => {
                let rgb = self.jpeg.decode(data, w, h)?;
                let src = convert::Packed::<{ convert::RGB }> { data: rgb, stride: 3 * w as usize };
                r.fill_with(&src, &mut self.scratch.aa, out)
            }
        }
        Ok(())
    }

    /// The resizer (taps of the last prepared geometry).
    pub fn resizer(&self) -> &Resizer {
        &self.resizer
    }

    /// Output side.
    pub fn size(&self) -> u32 {
        self.resizer.size
    }

    /// Largest frame accepted, width and height.
    pub fn max_frame(&self) -> (u32, u32) {
        (self.max_width, self.max_height)
    }

    /// How frames are brought to the square input.
    pub fn resize_mode(&self) -> ResizeMode {
        self.resizer().mode
    }
}

/// The input tensor (NCHW values) for an RGB8 image of `width` x `height` (rows of
/// `3 * width` bytes) under `pre` at `size`: what the runtime's models and `bit-tool`'s probes
/// both feed the network for an image file.
pub fn image_tensor(rgb: &[u8], width: u32, height: u32, pre: &Preprocess, size: u32) -> Vec<f32> {
    let resizer = Resizer::new(width, height, size, pre);
    let mut out = vec![0f32; 3 * (size as usize).pow(2)];
    resizer.fill_rgb8(rgb, 3 * width as usize, &mut out);
    out
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

    /// Plain bicubic on one channel from the definition (Keys a = -0.5 written as the
    /// textbook piecewise polynomial, edge pixels repeated, clamped to 0..=255), over the
    /// source window `(x0, y0, width, height)`.
    fn cubic_reference(
        src: &[u8],
        (w, h): (usize, usize),
        (x0, y0, sw, sh): (f64, f64, f64, f64),
        c: usize,
        size: usize,
        (ox, oy): (usize, usize),
    ) -> f64 {
        let kernel = |d: f64| {
            let (a, d) = (-0.5, d.abs());
            if d < 1.0 {
                (a + 2.0) * d.powi(3) - (a + 3.0) * d * d + 1.0
            } else if d < 2.0 {
                a * d.powi(3) - 5.0 * a * d * d + 8.0 * a * d - 4.0 * a
            } else {
                0.0
            }
        };
        let sx = x0 + (ox as f64 + 0.5) * sw / size as f64 - 0.5;
        let sy = y0 + (oy as f64 + 0.5) * sh / size as f64 - 0.5;
        let p = |x: i64, y: i64| {
            let x = x.clamp(0, w as i64 - 1) as usize;
            let y = y.clamp(0, h as i64 - 1) as usize;
            src[(y * w + x) * 3 + c] as f64
        };
        let (fx, fy) = (sx.floor() as i64, sy.floor() as i64);
        let mut v = 0.0;
        for y in fy - 1..=fy + 2 {
            for x in fx - 1..=fx + 2 {
                v += p(x, y) * kernel(sx - x as f64) * kernel(sy - y as f64);
            }
        }
        v.clamp(0.0, 255.0)
    }

    #[test]
    fn bicubic_matches_plain_keys_convolution() {
        let (w, h) = (37, 23);
        let src = pattern(w, h);
        let mut clamped = 0;
        let squash = (0.0, 0.0, w as f64, h as f64);
        // 0.875 at 20: the shorter side to round(20 / 0.875) = 23 (unchanged), the longer
        // to int(23 * 37 / 23) = 37, crop at ((37 - 20) // 2, (23 - 20) // 2) = (8, 1).
        // 0.5 at 16: 23 -> 32, 37 -> int(32 * 37 / 23) = 51, crop at (17, 8), scales
        // 37 / 51 and 23 / 32.
        let (kx, ky) = (37.0 / 51.0, 23.0 / 32.0);
        for (resize, window, size) in [
            (ResizeMode::Squash, squash, 16),
            (ResizeMode::Squash, squash, 64),
            (ResizeMode::CenterCrop { crop_fraction: 0.875 }, (8.0, 1.0, 20.0, 20.0), 20),
            (ResizeMode::CenterCrop { crop_fraction: 0.5 }, (17.0 * kx, 8.0 * ky, 16.0 * kx, 16.0 * ky), 16),
        ] {
            let pre =
                Preprocess { resize, resample: Resample::Bicubic, ..Preprocess::bit_default(size as u32) };
            let r = Resizer::new(w as u32, h as u32, size as u32, &pre);
            let mut out = vec![0f32; 3 * size * size];
            r.fill_rgb8(&src, w * 3, &mut out);
            for c in 0..3 {
                for oy in 0..size {
                    for ox in 0..size {
                        let want = cubic_reference(&src, (w, h), window, c, size, (ox, oy));
                        clamped += usize::from(want == 0.0 || want == 255.0);
                        let got = (out[c * size * size + oy * size + ox] as f64 + 1.0) * 127.5;
                        assert!((got - want).abs() < 1e-2, "{resize:?} c{c} ({ox},{oy}): {got} vs {want}");
                    }
                }
            }
        }
        // The noisy pattern overshoots: the clamp is exercised.
        assert!(clamped > 0, "no value reached the clamp");
    }

    #[test]
    fn nearest_picks_the_pixel_under_each_centre() {
        let (w, h) = (9usize, 3usize);
        let src = pattern(w, h);
        let pre = Preprocess { resample: Resample::Nearest, ..Preprocess::bit_default(3) };
        let r = Resizer::new(w as u32, h as u32, 3, &pre);
        let mut out = vec![0f32; 27];
        r.fill_rgb8(&src, w * 3, &mut out);
        // Output centres at 1.5, 4.5, 7.5 of 9 columns: pixels 1, 4, 7; rows 0, 1, 2.
        for oy in 0..3 {
            for (ox, x) in [1, 4, 7].into_iter().enumerate() {
                let want = src[(oy * w + x) * 3] as f32 / 127.5 - 1.0;
                assert!((out[oy * 3 + ox] - want).abs() < 1e-6);
            }
        }
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

    #[test]
    fn roi_is_checked_and_a_bad_one_keeps_the_geometry() {
        let pre = Preprocess::bit_default(4);
        let mut r = Resizer::with_roi(12, 4, Some(Roi { x: 4, y: 0, width: 4, height: 4 }), 4, &pre).unwrap();
        // The middle 4x4 square at pixel centres: taps land exactly on columns 4..8.
        assert_eq!(
            r.xs.iter().map(|t| (t.lo, t.frac)).collect::<Vec<_>>(),
            [(4, 0.0), (5, 0.0), (6, 0.0), (7, 0.0)]
        );
        let bad = Roi { x: 10, y: 0, width: 4, height: 4 };
        assert_eq!(
            r.set_source(12, 4, Some(bad)),
            Err(FrameError::RoiOutside { roi: bad, width: 12, height: 4 })
        );
        assert!(r.set_source(12, 4, Some(Roi { x: 0, y: 0, width: 0, height: 4 })).is_err());
        assert_eq!((r.source_size(), r.roi()), ((12, 4), Roi { x: 4, y: 0, width: 4, height: 4 }));
        // A new geometry reuses the tap buffers.
        let capacity = (r.xs.capacity(), r.ys.capacity(), r.x_cols.capacity(), r.x_frac.capacity());
        r.set_source(1920, 1080, None).unwrap();
        assert_eq!((r.xs.capacity(), r.ys.capacity(), r.x_cols.capacity(), r.x_frac.capacity()), capacity);
        // Taps never leave the region, also when upscaling a 1-pixel one.
        r.set_source(5, 5, Some(Roi { x: 2, y: 3, width: 1, height: 1 })).unwrap();
        assert!(r.xs.iter().all(|t| t.lo == 2 && t.hi == 2) && r.ys.iter().all(|t| t.lo == 3 && t.hi == 3));
    }
}
