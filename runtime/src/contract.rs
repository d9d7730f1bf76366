//! The model contract: what `bit-tool` writes into an ONNX model's `metadata_props` and the
//! runtime reads back, so that a model file is all a device needs.
//!
//! | key | value |
//! |---|---|
//! | `bit.format` | `"1"`, the version of this contract |
//! | `bit.preprocess` | JSON [`Preprocess`] |
//! | `bit.labels` | JSON array of class names, index order |
//! | `bit.architecture` | JSON object describing the network and its source (informational) |

use serde::{Deserialize, Serialize};

/// Metadata key of the contract version.
pub const META_FORMAT: &str = "bit.format";
/// The contract version this crate writes and reads.
pub const FORMAT_VERSION: &str = "1";
/// Metadata key of the JSON [`Preprocess`].
pub const META_PREPROCESS: &str = "bit.preprocess";
/// Metadata key of the JSON label array.
pub const META_LABELS: &str = "bit.labels";
/// Metadata key of the JSON architecture description.
pub const META_ARCHITECTURE: &str = "bit.architecture";

/// Channel order the network expects in its input tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelOrder {
    /// Red, green, blue (BiT, timm, transformers).
    Rgb,
    /// Blue, green, red.
    Bgr,
}

/// How a frame is brought to the square input.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "mode")]
pub enum ResizeMode {
    /// The whole frame resized straight to the square, aspect ratio not kept (BiT evaluation).
    Squash,
    /// A centred square covering `crop_fraction` of the shorter edge, resized to the input:
    /// exactly "resize the shorter edge to S = C / crop_fraction (the longer to
    /// `int(S * long / short)`), then crop C x C at `((W' - C) // 2, (H' - C) // 2)`"
    /// (transformers' BitImageProcessor, timm's eval transform with `crop_pct`), done in one
    /// pass, where C is the input side.
    CenterCrop {
        /// Fraction of the shorter edge kept, in (0, 1].
        crop_fraction: f32,
    },
}

impl ResizeMode {
    /// The side the shorter edge of a frame is resized to, for an input of `size`: `size`
    /// itself when squashing, `round(size / crop_fraction)` (at least `size`) for a centre
    /// crop. A frame whose shorter side is at least this needs no upscaling.
    pub fn shortest_edge(self, size: u32) -> u32 {
        match self {
            ResizeMode::Squash => size,
            ResizeMode::CenterCrop { crop_fraction } => {
                let c = size as f64;
                (c / crop_fraction as f64).round().max(c) as u32
            }
        }
    }
}

/// Interpolation used when resizing. Every filter samples at half-pixel centres. Without
/// [`Preprocess::antialias`] taps are clamped to the edge of the sampled region and the
/// footprint is fixed (2x2 bilinear, 4x4 bicubic) whatever the scale, as `tf.image.resize`
/// does by default; with it, bilinear and bicubic are Pillow's `Image.resize` (see there).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Resample {
    /// Bilinear with half-pixel centres and no antialiasing (`tf.image.resize` default,
    /// PyTorch `interpolate(align_corners=False)`): what BiT was trained and evaluated with.
    Bilinear,
    /// Keys cubic convolution with `a = -0.5` (PIL's `BICUBIC`, which transformers'
    /// BitImageProcessor and timm's PIL transforms use; PyTorch's `interpolate` uses -0.75),
    /// 4x4 taps, the interpolated value clamped to 0..=255 before normalization as PIL
    /// clamps its 8-bit result.
    Bicubic,
    /// The source pixel whose area holds the output pixel's centre (PIL's `NEAREST`).
    Nearest,
}

/// How pixels become the input tensor: resize, then per channel
/// `(value / 255 - mean) / std`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Preprocess {
    /// Default side of the square input, in pixels.
    pub input_size: u32,
    /// Channel order of the input tensor.
    pub channel_order: ChannelOrder,
    /// Per-channel mean, on values scaled to [0, 1], in `channel_order`.
    pub mean: [f32; 3],
    /// Per-channel standard deviation, on values scaled to [0, 1], in `channel_order`.
    pub std: [f32; 3],
    /// Resize mode.
    pub resize: ResizeMode,
    /// Interpolation.
    pub resample: Resample,
    /// Whether downscaling antialiases, as Pillow's `Image.resize` does (what transformers'
    /// BitImageProcessor, timm and torchvision use on PIL images): a separable convolution
    /// whose support widens with the downscale factor (triangle for bilinear, Keys a = -0.5
    /// for bicubic), taps outside the image dropped and the weights renormalized, 22-bit
    /// fixed-point coefficients and an 8-bit rounding between the horizontal and the
    /// vertical pass. `false` (BiT's TensorFlow pipeline, `tf.image.resize` with its default
    /// `antialias=False`): a fixed footprint, see [`Resample`]. Nearest ignores it (Pillow's
    /// nearest does not filter). Absent in models written before it existed, which read as
    /// `false`, their behaviour then.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub antialias: bool,
    /// Where the contract came from (`"npz default"`, `"preprocessor_config.json"`, `"timm
    /// pretrained_cfg"`, `"command line"`, ...). Informational; absent in models written
    /// before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

impl Preprocess {
    /// BiT's own contract: RGB, `x / 127.5 - 1` (mean = std = 0.5), whole image squashed to the
    /// square, bilinear.
    pub fn bit_default(input_size: u32) -> Preprocess {
        Preprocess {
            input_size,
            channel_order: ChannelOrder::Rgb,
            mean: [0.5; 3],
            std: [0.5; 3],
            resize: ResizeMode::Squash,
            resample: Resample::Bilinear,
            antialias: false,
            source: None,
        }
    }

    /// Whether frames are resampled with Pillow's antialiasing convolution: the contract asks
    /// for it and the filter is one that filters (Pillow's nearest does not).
    pub fn antialiased(&self) -> bool {
        self.antialias && self.resample != Resample::Nearest
    }

    /// One line for people: the filter, the resize mode and whether it antialiases.
    pub fn describe_resampling(&self) -> String {
        let filter = match self.resample {
            Resample::Bilinear => "bilinear",
            Resample::Bicubic => "bicubic",
            Resample::Nearest => "nearest",
        };
        let resize = match self.resize {
            ResizeMode::Squash => "whole frame squashed to the square".to_string(),
            ResizeMode::CenterCrop { .. } => format!(
                "shortest edge to {}, centre crop {}",
                self.resize.shortest_edge(self.input_size),
                self.input_size
            ),
        };
        let aa = match (self.resample, self.antialias) {
            (Resample::Nearest, _) => "no filtering",
            (_, true) => "antialiased as Pillow's Image.resize",
            (_, false) => "not antialiased (fixed footprint, as tf.image.resize)",
        };
        format!("{filter}, {aa}; {resize}")
    }

    /// Checks ranges: a positive size, positive finite std, a crop fraction in (0, 1].
    pub fn validate(&self) -> Result<(), String> {
        if self.input_size == 0 || self.input_size > 4096 {
            return Err(format!("input_size {} is not in 1..=4096", self.input_size));
        }
        if self.std.iter().any(|s| !s.is_finite() || *s <= 0.0) {
            return Err(format!("std {:?} must be positive", self.std));
        }
        if self.mean.iter().any(|m| !m.is_finite()) {
            return Err(format!("mean {:?} must be finite", self.mean));
        }
        if let ResizeMode::CenterCrop { crop_fraction } = self.resize
            && !(crop_fraction > 0.0 && crop_fraction <= 1.0)
        {
            return Err(format!("crop_fraction {crop_fraction} is not in (0, 1]"));
        }
        Ok(())
    }

    /// The same contract with its `source` set.
    pub fn with_source(mut self, source: impl Into<String>) -> Preprocess {
        self.source = Some(source.into());
        self
    }

    /// Per-channel `(scale, offset)` with `tensor = byte * scale + offset`, in tensor channel
    /// order: the whole normalization folded into one multiply-add.
    pub fn affine(&self) -> [(f32, f32); 3] {
        std::array::from_fn(|c| {
            let std = self.std[c] as f64;
            let mean = self.mean[c] as f64;
            ((1.0 / (255.0 * std)) as f32, (-mean / std) as f32)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_without_source_or_new_filters_still_reads() {
        // A model written before `source` and the bicubic/nearest filters existed.
        let old = r#"{"input_size":224,"channel_order":"rgb","mean":[0.5,0.5,0.5],"std":[0.5,0.5,0.5],"resize":{"mode":"squash"},"resample":"bilinear"}"#;
        let pre: Preprocess = serde_json::from_str(old).unwrap();
        assert_eq!(pre, Preprocess::bit_default(224));
        // Without a source nothing new is written: old runtimes read new default models.
        assert_eq!(serde_json::to_string(&pre).unwrap(), old);
        let new =
            Preprocess { resample: Resample::Bicubic, ..Preprocess::bit_default(224) }.with_source("cli");
        let json = serde_json::to_string(&new).unwrap();
        assert!(json.contains(r#""resample":"bicubic""#) && json.contains(r#""source":"cli""#), "{json}");
        assert_eq!(serde_json::from_str::<Preprocess>(&json).unwrap(), new);
        // `antialias` is written only when set, and read back.
        assert!(!json.contains("antialias"), "{json}");
        let aa = Preprocess { antialias: true, ..new };
        let json = serde_json::to_string(&aa).unwrap();
        assert!(json.contains(r#""antialias":true"#), "{json}");
        assert_eq!(serde_json::from_str::<Preprocess>(&json).unwrap(), aa);
        assert!(aa.antialiased());
        assert!(!Preprocess { resample: Resample::Nearest, ..aa }.antialiased());
    }
}
