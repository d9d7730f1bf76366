//! Shared test helpers: a tiny ONNX model written with tract's protobuf types (the runtime
//! does not depend on `bit-tools`), frames of every format, and the plain reference
//! conversion "frame -> RGB8" the fast paths are checked against.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use bit_runtime::contract::{self, Preprocess};
use bit_runtime::{PixelFormat, YuvColor, YuvMatrix, YuvRange};
use prost::Message;
use tract_onnx::pb;

/// Classes of the tiny model.
pub const CLASSES: usize = 10;

/// Writes a small classifier to `dir/tiny.onnx`: `input [1, 3, h, w]` -> 3x3 `Conv` (8
/// channels, pads 1) -> `Relu` -> `GlobalAveragePool` -> `Flatten` -> `Gemm` -> `logits
/// [1, CLASSES]`, with fixed weights and the contract metadata (`pre`, labels `c0`..).
pub fn tiny_model(dir: &Path, pre: &Preprocess) -> PathBuf {
    let f32t = pb::tensor_proto::DataType::Float as i32;
    let tensor = |name: &str, dims: &[i64], data: Vec<f32>| pb::TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: f32t,
        raw_data: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..Default::default()
    };
    let ints = |name: &str, v: &[i64]| pb::AttributeProto {
        name: name.into(),
        ints: v.to_vec(),
        r#type: pb::attribute_proto::AttributeType::Ints as i32,
        ..Default::default()
    };
    let int = |name: &str, v: i64| pb::AttributeProto {
        name: name.into(),
        i: v,
        r#type: pb::attribute_proto::AttributeType::Int as i32,
        ..Default::default()
    };
    let node = |op: &str, inputs: &[&str], output: &str, attribute: Vec<pb::AttributeProto>| pb::NodeProto {
        name: output.into(),
        op_type: op.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        attribute,
        ..Default::default()
    };
    let value_info = |name: &str, dims: &[Result<i64, &str>]| {
        use pb::tensor_shape_proto::{Dimension, dimension::Value};
        let dim = dims
            .iter()
            .map(|d| Dimension {
                value: Some(match d {
                    Ok(v) => Value::DimValue(*v),
                    Err(s) => Value::DimParam(s.to_string()),
                }),
                ..Default::default()
            })
            .collect();
        pb::ValueInfoProto {
            name: name.into(),
            r#type: Some(pb::TypeProto {
                value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                    elem_type: f32t,
                    shape: Some(pb::TensorShapeProto { dim }),
                })),
                ..Default::default()
            }),
            ..Default::default()
        }
    };
    // Deterministic, varied weights.
    let w = |n: usize, seed: usize| -> Vec<f32> {
        (0..n).map(|i| (((i * 7919 + seed * 104729) % 2003) as f32 / 1001.5 - 1.0) * 0.5).collect()
    };
    let graph = pb::GraphProto {
        name: "tiny".into(),
        node: vec![
            node(
                "Conv",
                &["input", "conv_w", "conv_b"],
                "conv",
                vec![ints("kernel_shape", &[3, 3]), ints("pads", &[1, 1, 1, 1])],
            ),
            node("Relu", &["conv"], "relu", vec![]),
            node("GlobalAveragePool", &["relu"], "pool", vec![]),
            node("Flatten", &["pool"], "flat", vec![int("axis", 1)]),
            node("Gemm", &["flat", "fc_w", "fc_b"], "logits", vec![]),
        ],
        initializer: vec![
            tensor("conv_w", &[8, 3, 3, 3], w(8 * 27, 1)),
            tensor("conv_b", &[8], w(8, 2)),
            tensor("fc_w", &[8, CLASSES as i64], w(8 * CLASSES, 3).iter().map(|v| v * 8.0).collect()),
            tensor("fc_b", &[CLASSES as i64], w(CLASSES, 4)),
        ],
        input: vec![value_info("input", &[Ok(1), Ok(3), Err("height"), Err("width")])],
        output: vec![value_info("logits", &[Ok(1), Ok(CLASSES as i64)])],
        ..Default::default()
    };
    let labels: Vec<String> = (0..CLASSES).map(|i| format!("c{i}")).collect();
    let meta = |key: &str, value: String| pb::StringStringEntryProto { key: key.into(), value };
    let model = pb::ModelProto {
        ir_version: 8,
        opset_import: vec![pb::OperatorSetIdProto { domain: String::new(), version: 13 }],
        producer_name: "bit-runtime tests".into(),
        graph: Some(graph),
        metadata_props: vec![
            meta(contract::META_FORMAT, contract::FORMAT_VERSION.into()),
            meta(contract::META_PREPROCESS, serde_json::to_string(pre).unwrap()),
            meta(contract::META_LABELS, serde_json::to_string(&labels).unwrap()),
        ],
        ..Default::default()
    };
    let path = dir.join("tiny.onnx");
    std::fs::write(&path, model.encode_to_vec()).unwrap();
    path
}

/// A smooth image with edges and every value range, as RGB8 rows (`3 * w` bytes each).
pub fn rgb_pattern(w: usize, h: usize, seed: usize) -> Vec<u8> {
    let mut rgb = Vec::with_capacity(3 * w * h);
    for y in 0..h {
        for x in 0..w {
            let fx = x as f32 / w as f32;
            let fy = y as f32 / h as f32;
            let s = seed as f32 * 0.37;
            let r = 127.5 + 127.5 * (fx * 9.0 + s).sin() * (fy * 3.0).cos();
            let g = if (x / 16 + y / 16 + seed).is_multiple_of(2) { 30.0 } else { 220.0 };
            let b = 255.0 * fx * fy;
            rgb.extend([r as u8, g as u8, b as u8]);
        }
    }
    rgb
}

/// Pseudo-random bytes (every YUV combination, including out-of-gamut ones).
pub fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (state >> 56) as u8
        })
        .collect()
}

/// BT.601 limited range RGB -> YUV (rounded), the inverse of the runtime's conversion.
fn rgb_to_yuv(p: &[u8]) -> (u8, u8, u8) {
    let (r, g, b) = (p[0] as f64, p[1] as f64, p[2] as f64);
    let y = 16.0 + 0.257 * r + 0.504 * g + 0.098 * b;
    let u = 128.0 - 0.148 * r - 0.291 * g + 0.439 * b;
    let v = 128.0 + 0.439 * r - 0.368 * g - 0.071 * b;
    let q = |x: f64| x.round().clamp(0.0, 255.0) as u8;
    (q(y), q(u), q(v))
}

/// A `w` x `h` frame of `format` showing `rgb_pattern`, rows `stride` bytes apart (`None`:
/// packed). MJPEG ignores the stride.
pub fn frame_bytes(format: PixelFormat, w: usize, h: usize, stride: Option<usize>, seed: usize) -> Vec<u8> {
    let rgb = rgb_pattern(w, h, seed);
    let px = |x: usize, y: usize| &rgb[3 * (y * w + x)..3 * (y * w + x) + 3];
    if format == PixelFormat::Mjpeg {
        let mut out = Vec::new();
        let mut enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 85);
        enc.encode(&rgb, w as u32, h as u32, image::ExtendedColorType::Rgb8).unwrap();
        return out;
    }
    let row = format.row_bytes(w as u32).unwrap();
    let stride = stride.unwrap_or(row);
    let rows = if format == PixelFormat::Nv12 { h + h / 2 } else { h };
    // Padding bytes are 0xAA: a read of padding shows up in the comparison.
    let mut out = vec![0xaa; stride * rows];
    for y in 0..h {
        let line = &mut out[y * stride..y * stride + row];
        match format {
            PixelFormat::Rgb24 => line.copy_from_slice(&rgb[3 * y * w..3 * (y + 1) * w]),
            PixelFormat::Bgr24 => {
                for x in 0..w {
                    let p = px(x, y);
                    line[3 * x..3 * x + 3].copy_from_slice(&[p[2], p[1], p[0]]);
                }
            }
            PixelFormat::Grey | PixelFormat::Nv12 => {
                for (x, luma) in line.iter_mut().enumerate() {
                    *luma = rgb_to_yuv(px(x, y)).0;
                }
            }
            PixelFormat::Yuyv | PixelFormat::Uyvy => {
                for x in (0..w).step_by(2) {
                    let (y0, u, v) = rgb_to_yuv(px(x, y));
                    let (y1, ..) = rgb_to_yuv(px(x + 1, y));
                    let quad = if format == PixelFormat::Yuyv { [y0, u, y1, v] } else { [u, y0, v, y1] };
                    line[2 * x..2 * x + 4].copy_from_slice(&quad);
                }
            }
            PixelFormat::Mjpeg => unreachable!(),
        }
    }
    if format == PixelFormat::Nv12 {
        for cy in 0..h / 2 {
            for cx in 0..w / 2 {
                let (_, u, v) = rgb_to_yuv(px(2 * cx, 2 * cy));
                let at = (h + cy) * stride + 2 * cx;
                out[at] = u;
                out[at + 1] = v;
            }
        }
    }
    out
}

/// The plain reference: the frame converted to packed RGB8 the naive way (BT.601 limited
/// range in f64, rounded; chroma of the pixel's own pair / 2x2 block; grey replicated;
/// MJPEG through the `image` crate).
pub fn naive_rgb8(format: PixelFormat, data: &[u8], w: usize, h: usize, stride: Option<usize>) -> Vec<u8> {
    naive_rgb8_in(YuvColor::BT601_LIMITED, format, data, w, h, stride)
}

/// Kr and Kb as the standards publish them (ITU-R BT.601, BT.709, BT.2020, SMPTE 240M),
/// written here rather than taken from the runtime.
fn published_kr_kb(matrix: YuvMatrix) -> (f64, f64) {
    match matrix {
        YuvMatrix::Bt601 => (0.299, 0.114),
        YuvMatrix::Bt709 => (0.2126, 0.0722),
        YuvMatrix::Bt2020 => (0.2627, 0.0593),
        YuvMatrix::Smpte240m => (0.212, 0.087),
    }
}

/// One YUV sample to RGB8 by the textbook formula in f64: limited range scales Y by 255/219
/// from 16 and chroma by 255/224 around 128, full range takes them as they are; then
/// R = Y + 2(1-Kr) Cr, B = Y + 2(1-Kb) Cb, G = (Y - Kr R - Kb B) / Kg, rounded and clamped.
pub fn yuv_reference(color: YuvColor, y: u8, u: u8, v: u8) -> [u8; 3] {
    let (kr, kb) = published_kr_kb(color.matrix);
    let kg = 1.0 - kr - kb;
    let (y, cb, cr) = match color.range {
        YuvRange::Limited => (
            (y as f64 - 16.0) * 255.0 / 219.0,
            (u as f64 - 128.0) * 255.0 / 224.0,
            (v as f64 - 128.0) * 255.0 / 224.0,
        ),
        YuvRange::Full => (y as f64, u as f64 - 128.0, v as f64 - 128.0),
    };
    let r = y + 2.0 * (1.0 - kr) * cr;
    let b = y + 2.0 * (1.0 - kb) * cb;
    let g = (y - kr * r - kb * b) / kg;
    let q = |x: f64| x.round().clamp(0.0, 255.0) as u8;
    [q(r), q(g), q(b)]
}

/// [`naive_rgb8`] for a frame encoded with `color` (YUV formats only read it).
pub fn naive_rgb8_in(
    color: YuvColor,
    format: PixelFormat,
    data: &[u8],
    w: usize,
    h: usize,
    stride: Option<usize>,
) -> Vec<u8> {
    if format == PixelFormat::Mjpeg {
        return image::load_from_memory_with_format(data, image::ImageFormat::Jpeg)
            .unwrap()
            .to_rgb8()
            .into_raw();
    }
    let stride = stride.unwrap_or(format.row_bytes(w as u32).unwrap());
    let yuv = |y: u8, u: u8, v: u8| yuv_reference(color, y, u, v);
    let mut out = Vec::with_capacity(3 * w * h);
    for y in 0..h {
        let row = &data[y * stride..];
        for x in 0..w {
            let p = match format {
                PixelFormat::Rgb24 => [row[3 * x], row[3 * x + 1], row[3 * x + 2]],
                PixelFormat::Bgr24 => [row[3 * x + 2], row[3 * x + 1], row[3 * x]],
                PixelFormat::Grey => [row[x]; 3],
                PixelFormat::Yuyv => {
                    let q = &row[4 * (x / 2)..];
                    yuv(q[2 * (x % 2)], q[1], q[3])
                }
                PixelFormat::Uyvy => {
                    let q = &row[4 * (x / 2)..];
                    yuv(q[1 + 2 * (x % 2)], q[0], q[2])
                }
                PixelFormat::Nv12 => {
                    let c = &data[(h + y / 2) * stride + 2 * (x / 2)..];
                    yuv(row[x], c[0], c[1])
                }
                PixelFormat::Mjpeg => unreachable!(),
            };
            out.extend(p);
        }
    }
    out
}

/// Largest difference between two tensors in 8-bit steps (0..255 before normalization),
/// given the per-channel scales of `Preprocess::affine`.
pub fn max_lsb(a: &[f32], b: &[f32], pre: &Preprocess) -> f32 {
    let plane = a.len() / 3;
    let aff = pre.affine();
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .enumerate()
        .map(|(i, (x, y))| {
            let d = (x - y).abs() / aff[i / plane].0;
            if d.is_nan() { f32::INFINITY } else { d }
        })
        .fold(0.0, f32::max)
}
