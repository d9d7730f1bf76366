//! Which preprocessing contract an imported model carries, from its checkpoint source.
//!
//! | source | contract | `source` recorded |
//! |---|---|---|
//! | official `.npz` | BiT's: RGB, `x/127.5-1`, squash, bilinear, 224, not antialiased | `npz default` |
//! | big_transfer PyTorch | BiT's, antialiased | `bit_pytorch default` |
//! | transformers directory with `preprocessor_config.json` | that file (BitImageProcessor semantics), antialiased | `preprocessor_config.json` |
//! | transformers directory without it | BiT's (the google/bit-* weights are BiT's; BitImageProcessor's class defaults are CLIP's, not BiT's), not antialiased | `transformers without preprocessor_config.json: BiT default` |
//! | timm with `config.json` holding `pretrained_cfg` | that config (timm's eval transform), antialiased | `timm pretrained_cfg` |
//! | timm without it | timm's registered BiT config (see [`timm_bit_default`]), antialiased | `timm default ...` |
//! | `--contract FILE` | that file: a `preprocessor_config.json`, a timm `config.json` / `pretrained_cfg`, or a `bit.preprocess` JSON | the kind and file name |
//!
//! Command-line flags ([`Overrides`]) then replace single fields; the source gains
//! `+ command line (--flag, ...)`.
//!
//! Antialiasing ([`Preprocess::antialias`]) follows how each source resizes its images:
//! - BiT's own input pipeline is TensorFlow's: `tf.image.resize` (bilinear) whose
//!   `antialias` argument defaults to `False`, so the official weights and the transformers
//!   conversion of them (google/bit-*, no preprocessor file) read a fixed 2x2 footprint.
//! - transformers' BitImageProcessor resizes with `PIL.Image.resize` (`resize` in
//!   `image_transforms.py`; the `BitImageProcessorPil` backend), which antialiases.
//! - timm's eval transform is torchvision's `Resize` on PIL images, i.e. `PIL.Image.resize`
//!   (and torchvision's tensor resize antialiases by default since 0.17 too).
//! - big_transfer's PyTorch fine-tuning (`bit_pytorch/train.py`) evaluates with
//!   torchvision's `Resize((crop, crop))` on PIL images: Pillow's bilinear, antialiased, on a
//!   squash; a `.pth` with that layout is such a fine-tune (the pretrained ones are `.npz`).
//! - An ONNX export without a contract gets BiT's, not antialiased; `--antialias on`
//!   says otherwise.
//!
//! "Resize the shortest edge to S, then crop C x C from the centre" (transformers, and timm
//! with `S = floor(C / crop_pct)`) is [`ResizeMode::CenterCrop`] with `crop_fraction = C / S`:
//! the runtime recovers S as `round(C / crop_fraction)` and reproduces the two steps'
//! whole-pixel rounding (long side `int(S * long / short)`, offsets `(W' - C) // 2`) in one
//! pass. torchvision's `CenterCrop` (timm) rounds an odd margin half to even instead of down,
//! so for odd `W' - C` the crop may sit one resized pixel away from timm's.

use std::path::{Path, PathBuf};

use bit_runtime::contract::{ChannelOrder, Preprocess, Resample, ResizeMode};
use serde_json::Value;

use crate::checkpoint::Layout;
use crate::error::ImportError;

/// CLIP's mean, BitImageProcessor's default `image_mean`.
pub const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
/// CLIP's std, BitImageProcessor's default `image_std`.
// The digits as transformers publishes them, so the constant can be compared by eye.
#[allow(clippy::excessive_precision)]
pub const CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_58, 0.275_777_11];

/// Where `import` takes the contract from.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum ContractChoice {
    /// From the checkpoint: see the module table.
    #[default]
    Auto,
    /// BiT's default whatever the checkpoint.
    BitDefault,
    /// A JSON file: `preprocessor_config.json`, a timm `config.json` or bare
    /// `pretrained_cfg`, or a `bit.preprocess` contract.
    File(PathBuf),
}

/// How a frame is brought to the square, as given on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResizeKind {
    /// The whole frame to the square.
    Squash,
    /// A centred square (fraction from `--crop-fraction` or the source contract).
    Crop,
}

/// Field-by-field replacements of the contract from the command line. Each field has been
/// range-checked by the caller (the CLI names the flag).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Overrides {
    /// `--input-size`.
    pub input_size: Option<u32>,
    /// `--mean r,g,b` (on [0, 1] values, in the tensor's channel order).
    pub mean: Option<[f32; 3]>,
    /// `--std r,g,b`.
    pub std: Option<[f32; 3]>,
    /// `--resize squash|crop`.
    pub resize: Option<ResizeKind>,
    /// `--crop-fraction f` (implies a centre crop).
    pub crop_fraction: Option<f32>,
    /// `--resample bilinear|bicubic|nearest`.
    pub resample: Option<Resample>,
    /// `--channel-order rgb|bgr`.
    pub channel_order: Option<ChannelOrder>,
    /// `--antialias on|off`.
    pub antialias: Option<bool>,
}

impl Overrides {
    /// The flags that are set, for the `source` note.
    pub fn flags(&self) -> Vec<&'static str> {
        [
            (self.input_size.is_some(), "--input-size"),
            (self.mean.is_some(), "--mean"),
            (self.std.is_some(), "--std"),
            (self.resize.is_some(), "--resize"),
            (self.crop_fraction.is_some(), "--crop-fraction"),
            (self.resample.is_some(), "--resample"),
            (self.channel_order.is_some(), "--channel-order"),
            (self.antialias.is_some(), "--antialias"),
        ]
        .into_iter()
        .filter_map(|(set, flag)| set.then_some(flag))
        .collect()
    }

    /// `pre` with every set field replaced. Errors name the flag.
    pub fn apply(&self, mut pre: Preprocess) -> Result<Preprocess, String> {
        let flags = self.flags();
        if flags.is_empty() {
            return Ok(pre);
        }
        if let Some(size) = self.input_size {
            pre.input_size = size;
        }
        if let Some(mean) = self.mean {
            pre.mean = mean;
        }
        if let Some(std) = self.std {
            pre.std = std;
        }
        if let Some(order) = self.channel_order {
            pre.channel_order = order;
        }
        if let Some(resample) = self.resample {
            pre.resample = resample;
        }
        if let Some(antialias) = self.antialias {
            pre.antialias = antialias;
        }
        pre.resize = match (self.resize, self.crop_fraction, pre.resize) {
            (Some(ResizeKind::Squash), Some(f), _) => {
                return Err(format!("--crop-fraction {f} contradicts --resize squash"));
            }
            (Some(ResizeKind::Squash), None, _) => ResizeMode::Squash,
            (_, Some(crop_fraction), _) => ResizeMode::CenterCrop { crop_fraction },
            (Some(ResizeKind::Crop), None, ResizeMode::CenterCrop { crop_fraction }) => {
                ResizeMode::CenterCrop { crop_fraction }
            }
            (Some(ResizeKind::Crop), None, ResizeMode::Squash) => {
                return Err("--resize crop needs --crop-fraction (the source contract squashes)".into());
            }
            (None, None, keep) => keep,
        };
        let note = format!("command line ({})", flags.join(", "));
        pre.source = Some(match pre.source.take() {
            Some(from) => format!("{from} + {note}"),
            None => note,
        });
        pre.validate().map_err(|e| format!("contract after {}: {e}", flags.join(", ")))?;
        Ok(pre)
    }
}

/// The contract for a checkpoint at `path` (file or directory) of `layout` with a head of
/// `classes`, before command-line overrides.
pub fn for_checkpoint(
    path: &Path,
    layout: Layout,
    classes: usize,
    choice: &ContractChoice,
) -> Result<Preprocess, ImportError> {
    match choice {
        ContractChoice::BitDefault => {
            return Ok(Preprocess::bit_default(224).with_source("BiT default (--contract bit)"));
        }
        ContractChoice::File(file) => return from_file(file),
        ContractChoice::Auto => {}
    }
    let dir =
        if path.is_dir() { path.to_owned() } else { path.parent().unwrap_or(Path::new(".")).to_owned() };
    match layout {
        Layout::Npz => Ok(Preprocess::bit_default(224).with_source("npz default")),
        Layout::BitPytorch => Ok(Preprocess { antialias: true, ..Preprocess::bit_default(224) }
            .with_source("bit_pytorch default (torchvision Resize on PIL images: antialiased)")),
        Layout::Transformers => {
            let config = dir.join("preprocessor_config.json");
            if config.is_file() {
                from_preprocessor_config(&config, &read_json(&config)?)
            } else {
                log::warn!(
                    "{}: no preprocessor_config.json beside the checkpoint; recording BiT's contract",
                    dir.display()
                );
                Ok(Preprocess::bit_default(224)
                    .with_source("transformers without preprocessor_config.json: BiT default"))
            }
        }
        Layout::Timm => {
            let config = dir.join("config.json");
            if config.is_file() {
                let json = read_json(&config)?;
                if let Some(cfg) = json.get("pretrained_cfg") {
                    return from_pretrained_cfg(&config, "pretrained_cfg.", cfg);
                }
            }
            Ok(timm_bit_default(classes))
        }
    }
}

/// timm's registered config for `resnetv2_*_bit` (timm/models/resnetv2.py `_cfg`, not in
/// the reference doc, assumed from timm's source): mean = std = 0.5 (IMAGENET_INCEPTION),
/// bilinear; the ImageNet-1k fine-tuned tags (`goog_in21k_ft_in1k`, 1000 classes) evaluate
/// at 448 with `crop_pct` 1.0, the 21k tags (`goog_in21k`) at 224 with `crop_pct` 0.875.
pub fn timm_bit_default(classes: usize) -> Preprocess {
    let (size, crop_pct, tag) =
        if classes == 1000 { (448, 1.0, "goog_in21k_ft_in1k") } else { (224, 0.875, "goog_in21k") };
    Preprocess { resize: timm_crop(size, crop_pct), antialias: true, ..Preprocess::bit_default(size) }
        .with_source(format!("timm default for resnetv2_*_bit.{tag} (no pretrained_cfg in config.json)"))
}

/// timm's eval transform: resize the shorter side to `floor(size / crop_pct)`, centre crop
/// `size`.
fn timm_crop(size: u32, crop_pct: f64) -> ResizeMode {
    if crop_pct >= 1.0 {
        return ResizeMode::CenterCrop { crop_fraction: 1.0 };
    }
    let scaled = (size as f64 / crop_pct).floor();
    ResizeMode::CenterCrop { crop_fraction: (size as f64 / scaled) as f32 }
}

fn read_json(path: &Path) -> Result<Value, ImportError> {
    let text =
        std::fs::read_to_string(path).map_err(|source| ImportError::Io { path: path.to_owned(), source })?;
    serde_json::from_str(&text).map_err(|e| ImportError::Corrupt {
        path: path.to_owned(),
        key: String::new(),
        detail: format!("invalid JSON: {e}"),
    })
}

/// A contract from `--contract FILE`, recognized by its fields.
pub fn from_file(path: &Path) -> Result<Preprocess, ImportError> {
    let json = read_json(path)?;
    let name = path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
    let pre = if let Some(cfg) = json.get("pretrained_cfg") {
        from_pretrained_cfg(path, "pretrained_cfg.", cfg)?
    } else if json.get("interpolation").is_some() || json.get("crop_pct").is_some() {
        from_pretrained_cfg(path, "", &json)?
    } else if json.get("resample").is_some_and(Value::is_string) && json.get("resize").is_some() {
        let pre: Preprocess = serde_json::from_value(json).map_err(|e| ImportError::Corrupt {
            path: path.to_owned(),
            key: String::new(),
            detail: format!("not a bit.preprocess contract: {e}"),
        })?;
        pre.validate().map_err(|detail| ImportError::Unsupported {
            path: path.to_owned(),
            key: String::new(),
            detail,
        })?;
        pre.with_source("bit.preprocess JSON")
    } else if ["do_resize", "size", "crop_size", "image_mean", "image_processor_type"]
        .iter()
        .any(|k| json.get(k).is_some())
    {
        from_preprocessor_config(path, &json)?
    } else {
        return Err(ImportError::Unsupported {
            path: path.to_owned(),
            key: String::new(),
            detail: "neither a preprocessor_config.json, a timm pretrained_cfg nor a bit.preprocess contract"
                .into(),
        });
    };
    let source = pre.source.clone().unwrap_or_default();
    Ok(pre.with_source(format!("{source} (--contract {name})")))
}

/// Typed access to a JSON object's fields, with errors naming the file and field.
struct Fields<'a> {
    path: &'a Path,
    prefix: &'a str,
    json: &'a Value,
}

impl Fields<'_> {
    fn err(&self, field: &str, detail: String) -> ImportError {
        ImportError::Unsupported {
            path: self.path.to_owned(),
            key: format!("{}{field}", self.prefix),
            detail,
        }
    }

    fn get(&self, field: &str) -> Option<&Value> {
        self.json.get(field).filter(|v| !v.is_null())
    }

    fn bool(&self, field: &str, default: bool) -> Result<bool, ImportError> {
        self.get(field).map_or(Ok(default), |v| {
            v.as_bool().ok_or_else(|| self.err(field, format!("{v} is not a boolean")))
        })
    }

    fn number(&self, field: &str, v: &Value) -> Result<f64, ImportError> {
        v.as_f64().filter(|x| x.is_finite()).ok_or_else(|| self.err(field, format!("{v} is not a number")))
    }

    fn side(&self, field: &str, v: &Value) -> Result<u32, ImportError> {
        v.as_u64()
            .filter(|&s| (1..=4096).contains(&s))
            .map(|s| s as u32)
            .ok_or_else(|| self.err(field, format!("{v} is not a size in 1..=4096")))
    }

    fn triplet(&self, field: &str, default: [f32; 3]) -> Result<[f32; 3], ImportError> {
        let Some(v) = self.get(field) else { return Ok(default) };
        // transformers accepts a single float for all channels.
        if let Some(x) = v.as_f64() {
            return Ok([x as f32; 3]);
        }
        let items = v
            .as_array()
            .filter(|a| a.len() == 3)
            .ok_or_else(|| self.err(field, format!("{v} is not three numbers")))?;
        let mut out = [0f32; 3];
        for (o, item) in out.iter_mut().zip(items) {
            *o = self.number(field, item)? as f32;
        }
        Ok(out)
    }
}

/// BitImageProcessor's contract from the JSON of `path` (its `preprocessor_config.json`):
/// `do_resize` + `size` (`shortest_edge`, or `height`/`width` for a squash), `resample`
/// (PIL codes 0 nearest, 2 bilinear, 3 bicubic), `do_center_crop` with `crop_size`,
/// `do_rescale` with `rescale_factor`, `do_normalize` with `image_mean`/`image_std`. Absent
/// fields take
/// BitImageProcessor's defaults (shortest edge 224, bicubic, crop 224, 1/255, CLIP mean/std).
pub fn from_preprocessor_config(path: &Path, json: &Value) -> Result<Preprocess, ImportError> {
    let f = Fields { path, prefix: "", json };
    let resample = match f.get("resample") {
        None => Resample::Bicubic,
        Some(v) => match v.as_u64() {
            Some(0) => Resample::Nearest,
            Some(2) => Resample::Bilinear,
            Some(3) => Resample::Bicubic,
            _ => {
                return Err(f.err(
                    "resample",
                    format!("{v}: supported PIL filters are 0 (nearest), 2 (bilinear), 3 (bicubic)"),
                ));
            }
        },
    };
    if !f.bool("do_resize", true)? {
        return Err(
            f.err("do_resize", "false: frames of any size must be resized to the network input".into())
        );
    }
    // `size`: {"shortest_edge": S} keeps the aspect ratio; {"height": H, "width": W} squashes.
    let size = f.get("size").cloned().unwrap_or(serde_json::json!({"shortest_edge": 224}));
    let (shortest, squash) = if let Some(v) = size.get("shortest_edge") {
        (f.side("size.shortest_edge", v)?, None)
    } else if let (Some(h), Some(w)) = (size.get("height"), size.get("width")) {
        let (h, w) = (f.side("size.height", h)?, f.side("size.width", w)?);
        if h != w {
            return Err(f.err("size", format!("{h}x{w} is not square; the network input is")));
        }
        (h, Some(h))
    } else if let Some(s) = size.as_u64() {
        (f.side("size", &Value::from(s))?, None)
    } else {
        return Err(f.err(
            "size",
            format!("{size}: expected {{\"shortest_edge\": S}} or {{\"height\": H, \"width\": W}}"),
        ));
    };
    let crop = if f.bool("do_center_crop", true)? {
        let crop = f.get("crop_size").cloned().unwrap_or(serde_json::json!({"height": 224, "width": 224}));
        let (h, w) = match (crop.get("height"), crop.get("width")) {
            (Some(h), Some(w)) => (f.side("crop_size.height", h)?, f.side("crop_size.width", w)?),
            _ => {
                let s = f.side("crop_size", &crop)?;
                (s, s)
            }
        };
        if h != w {
            return Err(f.err("crop_size", format!("{h}x{w} is not square; the network input is")));
        }
        Some(h)
    } else {
        None
    };
    let (input_size, resize) = match (squash, crop) {
        (Some(s), None) => (s, ResizeMode::Squash),
        (Some(s), Some(c)) if c == s => (s, ResizeMode::Squash),
        (Some(s), Some(c)) => {
            return Err(f.err(
                "crop_size",
                format!("a {c} crop of the {s}x{s} resized image: supported are squash, or shortest edge then crop"),
            ));
        }
        (None, Some(c)) if c <= shortest => {
            (c, ResizeMode::CenterCrop { crop_fraction: (c as f64 / shortest as f64) as f32 })
        }
        (None, Some(c)) => {
            return Err(f.err(
                "crop_size",
                format!("{c} is larger than size.shortest_edge {shortest} (transformers would pad)"),
            ));
        }
        (None, None) => {
            return Err(f.err(
                "do_center_crop",
                "false with size.shortest_edge gives non-square inputs; the network input is square".into(),
            ));
        }
    };
    // tensor = (x * rescale - mean) / std on 8-bit x; the contract's mean/std are on x / 255.
    let rescale = if f.bool("do_rescale", true)? {
        match f.get("rescale_factor") {
            Some(v) => f.number("rescale_factor", v)?,
            None => 1.0 / 255.0,
        }
    } else {
        1.0
    };
    if rescale <= 0.0 {
        return Err(f.err("rescale_factor", format!("{rescale} is not positive")));
    }
    let (mean, std) = if f.bool("do_normalize", true)? {
        (f.triplet("image_mean", CLIP_MEAN)?, f.triplet("image_std", CLIP_STD)?)
    } else {
        ([0.0; 3], [1.0; 3])
    };
    if let Some(bad) = std.iter().find(|s| **s <= 0.0) {
        return Err(f.err("image_std", format!("{bad} is not positive")));
    }
    let k = rescale * 255.0;
    let pre = Preprocess {
        input_size,
        channel_order: ChannelOrder::Rgb,
        mean: mean.map(|m| (m as f64 / k) as f32),
        std: std.map(|s| (s as f64 / k) as f32),
        resize,
        resample,
        // BitImageProcessor resizes with PIL.Image.resize.
        antialias: true,
        source: None,
    };
    pre.validate().map_err(|e| f.err("", e))?;
    Ok(pre.with_source("preprocessor_config.json"))
}

/// timm's eval contract from a `pretrained_cfg` object (`prefix` names where it sits in the
/// file): `input_size` [3, H, W], `interpolation`, `crop_pct`, `crop_mode`, `mean`, `std`.
/// Absent fields take timm's defaults for BiT (224, bilinear, 0.875, centre, 0.5/0.5).
pub fn from_pretrained_cfg(path: &Path, prefix: &str, cfg: &Value) -> Result<Preprocess, ImportError> {
    let f = Fields { path, prefix, json: cfg };
    let size = match f.get("test_input_size").or(f.get("input_size")) {
        None => 224,
        Some(v) => {
            let dims = v
                .as_array()
                .filter(|a| a.len() == 3)
                .ok_or_else(|| f.err("input_size", format!("{v} is not [3, H, W]")))?;
            let (h, w) = (f.side("input_size", &dims[1])?, f.side("input_size", &dims[2])?);
            if dims[0].as_u64() != Some(3) || h != w {
                return Err(f.err("input_size", format!("{v}: expected [3, S, S]")));
            }
            h
        }
    };
    let resample = match f.get("interpolation").map(|v| v.as_str().ok_or(v)) {
        None => Resample::Bilinear,
        Some(Ok("bilinear")) => Resample::Bilinear,
        Some(Ok("bicubic")) => Resample::Bicubic,
        Some(Ok("nearest")) => Resample::Nearest,
        Some(Ok(other)) => {
            return Err(
                f.err("interpolation", format!("'{other}': supported are bilinear, bicubic, nearest"))
            );
        }
        Some(Err(v)) => return Err(f.err("interpolation", format!("{v} is not a string"))),
    };
    let crop_pct = match f.get("test_crop_pct").or(f.get("crop_pct")) {
        None => 0.875,
        Some(v) => f.number("crop_pct", v)?,
    };
    if !(crop_pct > 0.0 && crop_pct <= 1.0) {
        return Err(f.err("crop_pct", format!("{crop_pct} is not in (0, 1]")));
    }
    let resize = match f.get("crop_mode").map(|v| v.as_str()) {
        None | Some(Some("center")) => timm_crop(size, crop_pct),
        Some(Some("squash")) if crop_pct >= 1.0 => ResizeMode::Squash,
        Some(other) => {
            return Err(f.err(
                "crop_mode",
                format!("{other:?} with crop_pct {crop_pct}: supported are 'center', and 'squash' with crop_pct 1.0"),
            ));
        }
    };
    let pre = Preprocess {
        input_size: size,
        channel_order: ChannelOrder::Rgb,
        mean: f.triplet("mean", [0.5; 3])?,
        std: f.triplet("std", [0.5; 3])?,
        resize,
        resample,
        // timm's eval transform: torchvision's Resize on PIL images.
        antialias: true,
        source: None,
    };
    pre.validate().map_err(|e| f.err("", e))?;
    Ok(pre.with_source("timm pretrained_cfg"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn p() -> &'static Path {
        Path::new("dir/preprocessor_config.json")
    }

    #[test]
    fn transformers_fields_map_to_the_contract() {
        let pre = from_preprocessor_config(
            p(),
            &json!({"do_resize": true, "size": {"shortest_edge": 256}, "resample": 3, "do_center_crop": true,
                    "crop_size": {"height": 224, "width": 224}, "do_rescale": true, "rescale_factor": 1.0/255.0,
                    "do_normalize": true, "image_mean": CLIP_MEAN, "image_std": CLIP_STD}),
        )
        .unwrap();
        assert_eq!(pre.input_size, 224);
        assert_eq!(pre.resize, ResizeMode::CenterCrop { crop_fraction: 0.875 });
        assert_eq!(pre.resample, Resample::Bicubic);
        assert!((pre.mean[0] - CLIP_MEAN[0]).abs() < 1e-7 && (pre.std[2] - CLIP_STD[2]).abs() < 1e-7);
        assert_eq!(pre.source.as_deref(), Some("preprocessor_config.json"));
        assert!(pre.antialias, "BitImageProcessor resizes with PIL");
        // Defaults are BitImageProcessor's.
        let d = from_preprocessor_config(p(), &json!({})).unwrap();
        assert_eq!(
            (d.input_size, d.resize, d.resample),
            (224, ResizeMode::CenterCrop { crop_fraction: 1.0 }, Resample::Bicubic)
        );
        // No rescale: mean/std are on 0..255 values, folded onto [0, 1] ones.
        let r = from_preprocessor_config(
            p(),
            &json!({"do_rescale": false, "image_mean": 127.5, "image_std": 127.5}),
        )
        .unwrap();
        assert_eq!((r.mean, r.std), ([0.5; 3], [0.5; 3]));
        let s = from_preprocessor_config(
            p(),
            &json!({"size": {"height": 160, "width": 160}, "do_center_crop": false}),
        )
        .unwrap();
        assert_eq!((s.input_size, s.resize), (160, ResizeMode::Squash));
    }

    #[test]
    fn bad_fields_are_named_with_the_file() {
        for (json, field) in [
            (json!({"resample": 1}), "resample"),
            (
                json!({"size": {"shortest_edge": 200}, "crop_size": {"height": 224, "width": 224}}),
                "crop_size",
            ),
            (json!({"crop_size": {"height": 224, "width": 200}}), "crop_size"),
            (json!({"image_std": [0.5, 0.0, 0.5]}), "image_std"),
            (json!({"image_mean": [0.5, 0.5]}), "image_mean"),
            (json!({"do_center_crop": false}), "do_center_crop"),
            (json!({"size": "big"}), "size"),
        ] {
            let e = from_preprocessor_config(p(), &json).unwrap_err().to_string();
            assert!(
                e.contains("preprocessor_config.json") && e.contains(&format!("'{field}'")),
                "{json}: {e}"
            );
        }
        let e = from_pretrained_cfg(Path::new("m/config.json"), "pretrained_cfg.", &json!({"crop_pct": 1.5}))
            .unwrap_err();
        assert!(
            e.to_string().contains("m/config.json") && e.to_string().contains("'pretrained_cfg.crop_pct'"),
            "{e}"
        );
        let e =
            from_pretrained_cfg(Path::new("c.json"), "", &json!({"interpolation": "lanczos"})).unwrap_err();
        assert!(e.to_string().contains("'interpolation'"), "{e}");
    }

    #[test]
    fn timm_crop_pct_is_the_fraction_timm_crops() {
        let pre = from_pretrained_cfg(
            Path::new("config.json"),
            "",
            &json!({"input_size": [3, 224, 224], "interpolation": "bicubic", "crop_pct": 0.875, "crop_mode": "center", "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}),
        )
        .unwrap();
        assert_eq!(pre.resize, ResizeMode::CenterCrop { crop_fraction: 0.875 });
        assert!(pre.antialias, "timm resizes PIL images");
        // timm resizes to floor(288 / 0.9) = 320, then crops 288: 0.9.
        let pre =
            from_pretrained_cfg(Path::new("c"), "", &json!({"input_size": [3, 288, 288], "crop_pct": 0.9}))
                .unwrap();
        assert_eq!(pre.resize, ResizeMode::CenterCrop { crop_fraction: 0.9 });
        let d = timm_bit_default(1000);
        assert_eq!(
            (d.input_size, d.resize, d.mean),
            (448, ResizeMode::CenterCrop { crop_fraction: 1.0 }, [0.5; 3])
        );
        assert!(d.antialias && d.source.unwrap().contains("goog_in21k_ft_in1k"));
    }

    #[test]
    fn overrides_replace_fields_and_name_their_flags() {
        let o = Overrides { mean: Some([0.1, 0.2, 0.3]), crop_fraction: Some(0.5), ..Default::default() };
        let pre = o.apply(Preprocess::bit_default(224).with_source("npz default")).unwrap();
        assert_eq!((pre.mean, pre.resize), ([0.1, 0.2, 0.3], ResizeMode::CenterCrop { crop_fraction: 0.5 }));
        assert_eq!(pre.source.as_deref(), Some("npz default + command line (--mean, --crop-fraction)"));
        assert!(!pre.antialias, "BiT's TensorFlow pipeline does not antialias");
        let on = Overrides { antialias: Some(true), ..Default::default() }.apply(pre).unwrap();
        assert!(on.antialias && on.source.unwrap().ends_with("--antialias)"));
        let e = Overrides { resize: Some(ResizeKind::Crop), ..Default::default() }
            .apply(Preprocess::bit_default(224));
        assert!(e.unwrap_err().contains("--crop-fraction"));
        let e =
            Overrides { resize: Some(ResizeKind::Squash), crop_fraction: Some(0.5), ..Default::default() }
                .apply(Preprocess::bit_default(224));
        assert!(e.unwrap_err().contains("--resize squash"));
        assert_eq!(
            Overrides::default().apply(Preprocess::bit_default(224)).unwrap(),
            Preprocess::bit_default(224)
        );
    }
}
