//! Every pixel format's fused path (convert each tap, interpolate, normalize) against the
//! plain reference: the whole frame converted to RGB8 the naive way, the region cut out,
//! then the existing RGB resize (checked against plain bilinear and bicubic in the unit
//! tests of `preprocess.rs`). Tolerance: one 8-bit step (the fixed-point YUV matrix may
//! round differently from the f64 formula), 1.5625 steps for bicubic (see [`tolerance`]);
//! RGB, BGR, grey and MJPEG must agree exactly.
//! The fast (vectorized) and scalar kernels must agree bit for bit.

mod common;

use bit_runtime::contract::{ChannelOrder, Preprocess, Resample, ResizeMode};
use bit_runtime::preprocess::{Kernel, Resizer};
use bit_runtime::{Frame, FramePreprocessor, PixelFormat, Roi, YuvColor};
use common::{frame_bytes, max_lsb, naive_rgb8_in, noise};

/// Reference tensor: naive RGB8, cropped to `roi`, resized as a whole.
fn reference(
    format: PixelFormat,
    data: &[u8],
    size_wh: (usize, usize),
    stride: Option<usize>,
    roi: Option<Roi>,
    size: u32,
    pre: &Preprocess,
) -> Vec<f32> {
    reference_in(YuvColor::BT601_LIMITED, format, data, size_wh, stride, roi, size, pre)
}

/// [`reference`] for a frame encoded with `color`.
#[allow(clippy::too_many_arguments)]
fn reference_in(
    color: YuvColor,
    format: PixelFormat,
    data: &[u8],
    (w, h): (usize, usize),
    stride: Option<usize>,
    roi: Option<Roi>,
    size: u32,
    pre: &Preprocess,
) -> Vec<f32> {
    let rgb = naive_rgb8_in(color, format, data, w, h, stride);
    let roi = roi.unwrap_or(Roi::full(w as u32, h as u32));
    let (rx, ry, rw, rh) = (roi.x as usize, roi.y as usize, roi.width as usize, roi.height as usize);
    let mut crop = Vec::with_capacity(3 * rw * rh);
    for y in ry..ry + rh {
        crop.extend_from_slice(&rgb[3 * (y * w + rx)..3 * (y * w + rx + rw)]);
    }
    let mut out = vec![0f32; 3 * (size * size) as usize];
    Resizer::new(rw as u32, rh as u32, size, pre).fill_rgb8(&crop, 3 * rw, &mut out);
    out
}

/// The runtime's path with the fast kernel, checked to equal the scalar kernel bit for bit.
fn fused(frame: &Frame, roi: Option<Roi>, size: u32, pre: &Preprocess) -> Vec<f32> {
    let fast = fused_with(Kernel::Fast, frame, roi, size, pre);
    let scalar = fused_with(Kernel::Scalar, frame, roi, size, pre);
    let same = fast.iter().zip(&scalar).all(|(a, b)| a.to_bits() == b.to_bits());
    assert!(same, "{} {}x{}: fast and scalar kernels differ", frame.format, frame.width, frame.height);
    fast
}

fn fused_with(kernel: Kernel, frame: &Frame, roi: Option<Roi>, size: u32, pre: &Preprocess) -> Vec<f32> {
    let mut p = FramePreprocessor::new(pre, size, roi, 1920, 1080);
    p.set_kernel(kernel);
    let mut out = vec![f32::NAN; 3 * (size * size) as usize];
    p.fill(frame, &mut out).unwrap_or_else(|e| panic!("{e}"));
    out
}

/// The fixed-point YUV matrix is within one step of the f64 one per pixel. Bilinear
/// weights are positive and sum to 1, so the interpolated value stays within one step;
/// bicubic weights have negative lobes, and a one-step difference per tap can add up to the
/// kernel's L1 norm squared: at most (9/16 + 9/16 + 1/16 + 1/16)^2 = 1.5625 steps for Keys
/// a = -0.5 (the resampling itself adds nothing: RGB formats agree to f32 rounding).
///
/// Antialiased, the resize rounds to 8 bits after each pass (as Pillow does). A one-step
/// source difference stays within one step through a pass of positive weights summing to 1
/// (rounding is monotone), so bilinear keeps one step; bicubic's stretched Keys kernel has an
/// L1 norm of at most 1.25 per pass (its 4-tap value above is the product of two passes),
/// so one step becomes at most 2 after the horizontal pass and 3 after the vertical one.
fn tolerance(format: PixelFormat, pre: &Preprocess) -> f32 {
    let yuv_step = match pre.resample {
        Resample::Bicubic if pre.antialiased() => 3.0,
        Resample::Bicubic => 1.5625,
        Resample::Bilinear | Resample::Nearest => 1.0,
    };
    match format {
        PixelFormat::Yuyv | PixelFormat::Uyvy | PixelFormat::Nv12 => yuv_step + 1e-3,
        // Same bytes, same interpolation: only f32 rounding of the same expression.
        _ => 1e-3,
    }
}

/// One geometry: contract, frame size, output side, region, padded rows.
struct Case {
    name: &'static str,
    pre: Preprocess,
    frame: (usize, usize),
    size: u32,
    roi: Option<Roi>,
    padded: bool,
}

#[test]
fn every_format_matches_the_plain_reference() {
    let bgr = Preprocess {
        channel_order: ChannelOrder::Bgr,
        mean: [0.4, 0.45, 0.5],
        std: [0.2, 0.25, 0.3],
        ..Preprocess::bit_default(224)
    };
    let crop = Preprocess {
        resize: ResizeMode::CenterCrop { crop_fraction: 0.875 },
        ..Preprocess::bit_default(224)
    };
    // transformers-style: CLIP mean/std, shortest edge 256 then 224 crop, bicubic.
    let cubic = Preprocess {
        mean: [0.481_454_66, 0.457_827_5, 0.408_210_73],
        std: [0.268_629_54, 0.261_302_6, 0.275_777_1],
        resize: ResizeMode::CenterCrop { crop_fraction: 224.0 / 256.0 },
        resample: Resample::Bicubic,
        ..Preprocess::bit_default(224)
    };
    let cubic_bgr = Preprocess { resample: Resample::Bicubic, ..bgr.clone() };
    let nearest = Preprocess { resample: Resample::Nearest, ..crop.clone() };
    let aa = Preprocess { antialias: true, ..Preprocess::bit_default(224) };
    let aa_cubic = Preprocess { antialias: true, ..cubic.clone() };
    let aa_bgr = Preprocess { antialias: true, ..bgr.clone() };
    let case = |name, pre: &Preprocess, frame: (usize, usize), size, roi, padded| Case {
        name,
        pre: pre.clone(),
        frame,
        size,
        roi,
        padded,
    };
    let roi = |x, y, width, height| Some(Roi { x, y, width, height });
    let cases = [
        case("640x480 squash", &Preprocess::bit_default(224), (640, 480), 224, None, false),
        case("1280x720 centre crop", &crop, (1280, 720), 224, None, false),
        case("320x240 roi, bgr contract", &bgr, (320, 240), 96, roi(37, 20, 200, 150), true),
        case("roi + centre crop", &crop, (160, 120), 64, roi(10, 11, 101, 77), false),
        case("upscaled roi", &Preprocess::bit_default(32), (64, 48), 32, roi(5, 3, 20, 15), true),
        case("upscale 18x10 -> 32", &bgr, (18, 10), 32, None, true),
        case("2x2 -> 8", &Preprocess::bit_default(8), (2, 2), 8, None, false),
        case("bicubic 640x480 crop, CLIP", &cubic, (640, 480), 224, None, false),
        case("bicubic roi, bgr", &cubic_bgr, (320, 240), 96, roi(37, 20, 200, 150), true),
        case("bicubic upscale 18x10 -> 32", &cubic_bgr, (18, 10), 32, None, true),
        case("bicubic 2x2 -> 8", &cubic, (2, 2), 8, None, false),
        case("nearest crop", &nearest, (160, 120), 64, roi(10, 11, 101, 77), false),
        case("antialiased 640x480 squash", &aa, (640, 480), 224, None, false),
        case("antialiased bicubic 1280x720 crop, CLIP", &aa_cubic, (1280, 720), 224, None, false),
        case("antialiased roi, bgr", &aa_bgr, (320, 240), 96, roi(37, 20, 200, 150), true),
        case("antialiased roi + crop", &aa_cubic, (160, 120), 64, roi(10, 11, 101, 77), false),
        case("antialiased upscale 18x10 -> 32", &aa_cubic, (18, 10), 32, None, true),
    ];
    for Case { name, pre, frame: (w, h), size, roi, padded } in cases {
        for format in PixelFormat::ALL {
            let stride = match (padded, format.row_bytes(w as u32)) {
                (true, Some(row)) => Some(row + 13),
                _ => None,
            };
            let data = frame_bytes(format, w, h, stride, w + h);
            let mut frame = Frame::new(&data, format, w as u32, h as u32);
            if let Some(s) = stride {
                frame = frame.with_stride(s);
            }
            let got = fused(&frame, roi, size, &pre);
            let want = reference(format, &data, (w, h), stride, roi, size, &pre);
            let diff = max_lsb(&got, &want, &pre);
            assert!(diff <= tolerance(format, &pre), "{name}, {format}: {diff} steps");
        }
    }
}

/// Random bytes reach every YUV combination, including those outside the RGB cube that the
/// conversion clamps.
#[test]
fn yuv_noise_including_out_of_gamut() {
    let bilinear = Preprocess::bit_default(50);
    // Bicubic overshoots most on noise: the clamp to 0..=255 is exercised in both kernels.
    let bicubic = Preprocess { resample: Resample::Bicubic, ..bilinear.clone() };
    for (format, pre) in [PixelFormat::Yuyv, PixelFormat::Uyvy, PixelFormat::Nv12]
        .into_iter()
        .flat_map(|f| [(f, &bilinear), (f, &bicubic)])
    {
        for (w, h) in [(64, 48), (100, 50), (2, 2)] {
            let rows = if format == PixelFormat::Nv12 { h + h / 2 } else { h };
            let data = noise(format.row_bytes(w as u32).unwrap() * rows, (w * h) as u64);
            let frame = Frame::new(&data, format, w as u32, h as u32);
            let got = fused(&frame, None, 50, pre);
            let want = reference(format, &data, (w, h), None, None, 50, pre);
            let diff = max_lsb(&got, &want, pre);
            assert!(diff <= tolerance(format, pre), "{format} {w}x{h} {:?}: {diff} steps", pre.resample);
        }
    }
}

/// Every YUV matrix and range a V4L2 driver can report, on every YUV layout and filter
/// (antialiased too), against the published formula (`common::yuv_reference`), with the
/// tolerances of the BT.601 case; and a frame tagged with another encoding than the default
/// really converts differently (the tag is not ignored on any path).
#[test]
fn every_yuv_encoding_matches_the_published_formula() {
    let bilinear = Preprocess::bit_default(40);
    let bicubic = Preprocess { resample: Resample::Bicubic, ..bilinear.clone() };
    let aa = Preprocess { antialias: true, ..bilinear.clone() };
    let aa_cubic = Preprocess { antialias: true, ..bicubic.clone() };
    let (w, h) = (96, 64);
    for format in [PixelFormat::Yuyv, PixelFormat::Uyvy, PixelFormat::Nv12] {
        // Noise reaches saturated and out-of-gamut samples, where the matrices differ most.
        let rows = if format == PixelFormat::Nv12 { h + h / 2 } else { h };
        let data = noise(format.row_bytes(w as u32).unwrap() * rows, 7);
        for pre in [&bilinear, &bicubic, &aa, &aa_cubic] {
            let default = fused(&Frame::new(&data, format, w as u32, h as u32), None, 40, pre);
            for color in YuvColor::ALL {
                let frame = Frame::new(&data, format, w as u32, h as u32).with_color(color);
                let got = fused(&frame, None, 40, pre);
                let want = reference_in(color, format, &data, (w, h), None, None, 40, pre);
                let diff = max_lsb(&got, &want, pre);
                let what = format!("{format} {color} {:?} antialias {}", pre.resample, pre.antialias);
                assert!(diff <= tolerance(format, pre), "{what}: {diff} steps");
                if color != YuvColor::BT601_LIMITED {
                    assert!(max_lsb(&got, &default, pre) >= 2.0, "{what} converts as BT.601 limited");
                }
            }
        }
    }
}

/// The MJPEG path decodes like the `image` crate (the same decoder), so a frame classifies
/// like the same JPEG file; grey JPEGs are replicated to RGB.
#[test]
fn grey_jpeg_is_replicated() {
    let (w, h) = (40u32, 30u32);
    let luma: Vec<u8> = (0..w * h).map(|i| (i * 7 % 256) as u8).collect();
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 90)
        .encode(&luma, w, h, image::ExtendedColorType::L8)
        .unwrap();
    let pre = Preprocess::bit_default(16);
    let got = fused(&Frame::new(&jpeg, PixelFormat::Mjpeg, w, h), None, 16, &pre);
    let want = reference(PixelFormat::Mjpeg, &jpeg, (w as usize, h as usize), None, None, 16, &pre);
    assert!(max_lsb(&got, &want, &pre) <= 1e-3);
    for i in 0..256 {
        assert_eq!(got[i], got[256 + i]);
        assert_eq!(got[i], got[512 + i]);
    }
}

/// A geometry change recomputes the taps; going back gives the same tensor as before.
#[test]
fn geometry_changes_between_frames() {
    let pre = Preprocess::bit_default(32);
    let mut p = FramePreprocessor::new(&pre, 32, None, 1920, 1080);
    let mut first = vec![0f32; 3 * 32 * 32];
    let mut again = first.clone();
    let mut other = first.clone();
    let a = frame_bytes(PixelFormat::Yuyv, 64, 48, None, 1);
    let b = frame_bytes(PixelFormat::Nv12, 100, 60, None, 2);
    p.fill(&Frame::new(&a, PixelFormat::Yuyv, 64, 48), &mut first).unwrap();
    p.fill(&Frame::new(&b, PixelFormat::Nv12, 100, 60), &mut other).unwrap();
    assert_eq!(p.resizer().source_size(), (100, 60));
    p.fill(&Frame::new(&a, PixelFormat::Yuyv, 64, 48), &mut again).unwrap();
    assert_eq!(first, again);
    let want = reference(PixelFormat::Nv12, &b, (100, 60), None, None, 32, &pre);
    assert!(max_lsb(&other, &want, &pre) <= 1.0 + 1e-3);
}
