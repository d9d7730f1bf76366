//! Reading BiT checkpoints as users have them: the official `.npz` (big_transfer), and
//! safetensors files from timm, Hugging Face transformers or big_transfer's PyTorch code.
//!
//! Every reader produces a [`Checkpoint`]: named `f32` arrays in the file's own layout, plus
//! the [`Layout`] that says how the names and kernel axes are to be read.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use crate::error::ImportError;
use crate::tensor::Array;

/// The naming and axis conventions of a checkpoint source.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Layout {
    /// Official big_transfer `.npz`: `resnet/...` names, HWIO kernels, WS eps 1e-10.
    Npz,
    /// timm `resnetv2_*_bit`: `stem.conv.weight`, `stages.N.blocks.M...`, OIHW, eps 1e-8.
    Timm,
    /// Hugging Face transformers `BitForImageClassification`: `bit.encoder...`, eps 1e-8.
    Transformers,
    /// big_transfer's own PyTorch module (`bit_pytorch`): `root.conv.weight`, `body.blockN...`,
    /// OIHW, eps 1e-10.
    BitPytorch,
}

impl Layout {
    /// Every layout, in detection order.
    pub const ALL: [Layout; 4] = [Layout::Npz, Layout::Timm, Layout::Transformers, Layout::BitPytorch];

    /// The epsilon the source's weight standardization adds to the variance.
    pub fn ws_eps(self) -> f32 {
        match self {
            Layout::Npz | Layout::BitPytorch => 1e-10,
            Layout::Timm | Layout::Transformers => 1e-8,
        }
    }

    /// Whether convolution kernels are stored HWIO (TensorFlow/JAX) rather than OIHW.
    pub fn kernels_hwio(self) -> bool {
        self == Layout::Npz
    }

    /// Short lowercase name, as used on the command line and in model metadata.
    pub fn name(self) -> &'static str {
        match self {
            Layout::Npz => "npz",
            Layout::Timm => "timm",
            Layout::Transformers => "transformers",
            Layout::BitPytorch => "bit_pytorch",
        }
    }

    /// Parses [`Layout::name`].
    pub fn from_name(name: &str) -> Option<Layout> {
        Layout::ALL.into_iter().find(|l| l.name() == name)
    }

    /// The array name of `slot` in this layout. Blocks and units are 1-based, as in the
    /// official names.
    pub fn key(self, slot: Slot) -> String {
        use Slot::*;
        let part_letter = |p: usize| ["a", "b", "c"][p];
        match (self, slot) {
            (Layout::Npz, RootConv) => "resnet/root_block/standardized_conv2d/kernel".into(),
            (Layout::Npz, Conv { block, unit, part }) => {
                format!("resnet/block{block}/unit{unit:02}/{}/standardized_conv2d/kernel", part_letter(part))
            }
            (Layout::Npz, Proj { block }) => {
                format!("resnet/block{block}/unit01/a/proj/standardized_conv2d/kernel")
            }
            (Layout::Npz, Gn { block, unit, part, beta }) => format!(
                "resnet/block{block}/unit{unit:02}/{}/group_norm/{}",
                part_letter(part),
                if beta { "beta" } else { "gamma" }
            ),
            (Layout::Npz, FinalGn { beta }) => {
                format!("resnet/group_norm/{}", if beta { "beta" } else { "gamma" })
            }
            (Layout::Npz, HeadWeight) => "resnet/head/conv2d/kernel".into(),
            (Layout::Npz, HeadBias) => "resnet/head/conv2d/bias".into(),

            (Layout::Timm, RootConv) => "stem.conv.weight".into(),
            (Layout::Timm, Conv { block, unit, part }) => {
                format!("stages.{}.blocks.{}.conv{}.weight", block - 1, unit - 1, part + 1)
            }
            (Layout::Timm, Proj { block }) => {
                format!("stages.{}.blocks.0.downsample.conv.weight", block - 1)
            }
            (Layout::Timm, Gn { block, unit, part, beta }) => {
                format!("stages.{}.blocks.{}.norm{}.{}", block - 1, unit - 1, part + 1, weight_or_bias(beta))
            }
            (Layout::Timm, FinalGn { beta }) => format!("norm.{}", weight_or_bias(beta)),
            (Layout::Timm, HeadWeight) => "head.fc.weight".into(),
            (Layout::Timm, HeadBias) => "head.fc.bias".into(),

            (Layout::Transformers, RootConv) => "bit.embedder.convolution.weight".into(),
            (Layout::Transformers, Conv { block, unit, part }) => {
                format!("bit.encoder.stages.{}.layers.{}.conv{}.weight", block - 1, unit - 1, part + 1)
            }
            (Layout::Transformers, Proj { block }) => {
                format!("bit.encoder.stages.{}.layers.0.downsample.conv.weight", block - 1)
            }
            (Layout::Transformers, Gn { block, unit, part, beta }) => format!(
                "bit.encoder.stages.{}.layers.{}.norm{}.{}",
                block - 1,
                unit - 1,
                part + 1,
                weight_or_bias(beta)
            ),
            (Layout::Transformers, FinalGn { beta }) => {
                format!("bit.norm.{}", weight_or_bias(beta))
            }
            (Layout::Transformers, HeadWeight) => "classifier.1.weight".into(),
            (Layout::Transformers, HeadBias) => "classifier.1.bias".into(),

            (Layout::BitPytorch, RootConv) => "root.conv.weight".into(),
            (Layout::BitPytorch, Conv { block, unit, part }) => {
                format!("body.block{block}.unit{unit:02}.conv{}.weight", part + 1)
            }
            (Layout::BitPytorch, Proj { block }) => {
                format!("body.block{block}.unit01.downsample.weight")
            }
            (Layout::BitPytorch, Gn { block, unit, part, beta }) => {
                format!("body.block{block}.unit{unit:02}.gn{}.{}", part + 1, weight_or_bias(beta))
            }
            (Layout::BitPytorch, FinalGn { beta }) => {
                format!("head.gn.{}", weight_or_bias(beta))
            }
            (Layout::BitPytorch, HeadWeight) => "head.conv.weight".into(),
            (Layout::BitPytorch, HeadBias) => "head.conv.bias".into(),
        }
    }

    /// The (block, unit), 1-based, that an array name of this layout belongs to, if any.
    pub fn unit_of(self, key: &str) -> Option<(usize, usize)> {
        let number = |s: &str| s.parse::<usize>().ok();
        let parts: Vec<&str> = match self {
            Layout::Npz => key.split('/').collect(),
            _ => key.split('.').collect(),
        };
        match self {
            Layout::Npz => {
                let block = number(parts.get(1)?.strip_prefix("block")?)?;
                let unit = number(parts.get(2)?.strip_prefix("unit")?)?;
                (parts[0] == "resnet").then_some((block, unit))
            }
            Layout::Timm => {
                (parts.first()? == &"stages" && parts.get(2)? == &"blocks").then_some(())?;
                Some((number(parts[1])? + 1, number(parts.get(3)?)? + 1))
            }
            Layout::Transformers => {
                (parts.get(..3)? == ["bit", "encoder", "stages"] && parts.get(4)? == &"layers")
                    .then_some(())?;
                Some((number(parts[3])? + 1, number(parts.get(5)?)? + 1))
            }
            Layout::BitPytorch => {
                (parts.first()? == &"body").then_some(())?;
                let block = number(parts.get(1)?.strip_prefix("block")?)?;
                let unit = number(parts.get(2)?.strip_prefix("unit")?)?;
                Some((block, unit))
            }
        }
    }
}

fn weight_or_bias(beta: bool) -> &'static str {
    if beta { "bias" } else { "weight" }
}

/// A position in the BiT network that holds one checkpoint array.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    /// The 7x7/2 root convolution.
    RootConv,
    /// Convolution `part` (0 = a/1x1, 1 = b/3x3, 2 = c/1x1) of a unit.
    Conv {
        /// 1-based block.
        block: usize,
        /// 1-based unit.
        unit: usize,
        /// 0..3.
        part: usize,
    },
    /// The projection shortcut of a block's first unit.
    Proj {
        /// 1-based block.
        block: usize,
    },
    /// GroupNorm `part` of a unit (it normalizes the input of conv `part`).
    Gn {
        /// 1-based block.
        block: usize,
        /// 1-based unit.
        unit: usize,
        /// 0..3.
        part: usize,
        /// `beta` (bias) rather than `gamma` (scale).
        beta: bool,
    },
    /// The GroupNorm before the head.
    FinalGn {
        /// `beta` rather than `gamma`.
        beta: bool,
    },
    /// The classifier weight.
    HeadWeight,
    /// The classifier bias.
    HeadBias,
}

/// The arrays of a checkpoint file, as stored, with the layout they follow.
#[derive(Debug)]
pub struct Checkpoint {
    /// The file the arrays came from (named in every error).
    pub path: PathBuf,
    /// Naming and axis conventions.
    pub layout: Layout,
    /// Arrays by name.
    pub arrays: BTreeMap<String, Array>,
    /// Class labels found beside the checkpoint (transformers `config.json` `id2label`).
    pub labels: Option<Vec<String>>,
}

impl Checkpoint {
    /// Opens an official `.npz`, or a safetensors file (or a directory holding
    /// `model.safetensors` and `config.json`, as transformers saves them).
    pub fn open(path: &Path) -> Result<Checkpoint, ImportError> {
        let io_err = |source| ImportError::Io { path: path.to_owned(), source };
        if path.is_dir() {
            let inner = path.join("model.safetensors");
            if !inner.is_file() {
                return Err(ImportError::UnknownFormat {
                    path: path.to_owned(),
                    detail: "a directory must contain model.safetensors".into(),
                });
            }
            return Checkpoint::open(&inner);
        }
        let mut magic = [0u8; 9];
        let mut file = fs::File::open(path).map_err(io_err)?;
        let got = read_up_to(&mut file, &mut magic).map_err(io_err)?;
        let magic = &magic[..got];
        let mut ckpt = if magic.starts_with(b"PK") {
            read_npz(path)?
        } else if magic.len() == 9 && magic[8] == b'{' {
            read_safetensors(path)?
        } else {
            return Err(ImportError::UnknownFormat {
                path: path.to_owned(),
                detail: "neither an npz (zip) nor a safetensors file".into(),
            });
        };
        if matches!(ckpt.layout, Layout::Transformers | Layout::Timm) {
            let config = path.with_file_name("config.json");
            if config.is_file() {
                ckpt.labels = read_hf_config(&config)?;
            }
        }
        Ok(ckpt)
    }

    /// The array at `key`, or a [`ImportError::MissingKey`] naming it.
    pub fn get(&self, key: &str) -> Result<&Array, ImportError> {
        self.arrays
            .get(key)
            .ok_or_else(|| ImportError::MissingKey { path: self.path.clone(), key: key.to_owned() })
    }

    /// The array for `slot`. Official npz files sometimes number their kernels
    /// (`standardized_conv2d_3/kernel`); those are accepted for convolution slots.
    pub fn slot(&self, slot: Slot) -> Result<(String, &Array), ImportError> {
        let key = self.layout.key(slot);
        if let Some(array) = self.arrays.get(&key) {
            return Ok((key, array));
        }
        if self.layout == Layout::Npz
            && let Some(scope) = key.strip_suffix("standardized_conv2d/kernel")
        {
            let numbered: Vec<_> = self
                .arrays
                .iter()
                .filter(|(name, _)| {
                    name.strip_prefix(scope)
                        .and_then(|rest| rest.strip_prefix("standardized_conv2d_"))
                        .and_then(|rest| rest.strip_suffix("/kernel"))
                        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
                })
                .collect();
            if let [(name, array)] = numbered.as_slice() {
                return Ok(((*name).clone(), *array));
            }
        }
        Err(ImportError::MissingKey { path: self.path.clone(), key })
    }
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..])? {
            0 => break,
            n => got += n,
        }
    }
    Ok(got)
}

/// What an npz may decompress to, in total: this many times the archive's size, plus
/// [`NPZ_SLACK`]. Trained float weights barely deflate (`np.savez` stores them uncompressed);
/// what deflates well is zeros (a zero-initialised head), a small part of a checkpoint that the
/// slack covers. So a real checkpoint stays far below this, and a zip bomb is refused before it
/// fills the memory of the board `bit-tool` may run on.
pub const NPZ_EXPANSION: u64 = 16;
/// See [`NPZ_EXPANSION`].
pub const NPZ_SLACK: u64 = 256 << 20;

/// Reads every array of an official big_transfer `.npz` (a zip of `.npy` files). Each entry's
/// declared size is checked against the budget above before anything is allocated, and an entry
/// that inflates beyond its declared size is refused.
pub fn read_npz(path: &Path) -> Result<Checkpoint, ImportError> {
    let file = fs::File::open(path).map_err(|source| ImportError::Io { path: path.to_owned(), source })?;
    let archive_len =
        file.metadata().map_err(|source| ImportError::Io { path: path.to_owned(), source })?.len();
    let mut budget = archive_len.saturating_mul(NPZ_EXPANSION).saturating_add(NPZ_SLACK);
    let corrupt = |key: &str, detail: String| ImportError::Corrupt {
        path: path.to_owned(),
        key: key.to_owned(),
        detail,
    };
    let mut zip = zip::ZipArchive::new(io::BufReader::new(file))
        .map_err(|e| corrupt("", format!("not a readable npz (zip) archive: {e}")))?;
    let mut arrays = BTreeMap::new();
    for index in 0..zip.len() {
        let mut entry = zip.by_index(index).map_err(|e| corrupt("", format!("zip entry {index}: {e}")))?;
        let name = entry
            .name()
            .map_err(|e| corrupt("", format!("zip entry {index} has an unreadable name: {e}")))?
            .into_owned();
        let Some(key) = name.strip_suffix(".npy") else {
            continue;
        };
        let key = key.to_owned();
        let declared = entry.size();
        if declared > budget {
            return Err(corrupt(
                &key,
                format!(
                    "declares {declared} bytes uncompressed, beyond what a {archive_len}-byte archive \
                     may expand to ({NPZ_EXPANSION}x + {} MiB): refused as a possible zip bomb",
                    NPZ_SLACK >> 20
                ),
            ));
        }
        budget -= declared;
        // Never more than declared: a lying header cannot make us read more. Nor allocate ahead
        // of the data: the capacity starts at what the archive itself could hold stored, and
        // grows only as inflated bytes actually arrive.
        let mut bytes = Vec::with_capacity(declared.min(archive_len) as usize);
        (&mut entry)
            .take(declared + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| corrupt(&key, format!("reading: {e}")))?;
        if bytes.len() as u64 != declared {
            return Err(corrupt(
                &key,
                format!(
                    "inflates to {}{} bytes, its zip header says {declared}",
                    bytes.len(),
                    if bytes.len() as u64 > declared { "+" } else { "" }
                ),
            ));
        }
        let array = parse_npy(&bytes).map_err(|detail| corrupt(&key, detail))?;
        arrays.insert(key, array);
    }
    if arrays.is_empty() {
        return Err(corrupt("", "the archive holds no .npy arrays".into()));
    }
    let layout = Layout::Npz;
    if !arrays.keys().any(|k| k.starts_with("resnet/")) {
        return Err(ImportError::UnknownLayout {
            path: path.to_owned(),
            detail: format!(
                "no 'resnet/...' arrays (first names: {})",
                arrays.keys().take(3).cloned().collect::<Vec<_>>().join(", ")
            ),
        });
    }
    Ok(Checkpoint { path: path.to_owned(), layout, arrays, labels: None })
}

/// Parses one `.npy` blob holding f32, f64 or f16 values, C or Fortran order.
fn parse_npy(bytes: &[u8]) -> Result<Array, String> {
    let mut data = bytes;
    let header = npyz::NpyHeader::from_reader(&mut data).map_err(|e| format!("bad .npy header: {e}"))?;
    let data_len = data.len();
    let npy = npyz::NpyFile::with_header(header, data);
    let shape: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
    let fortran = npy.order() == npyz::Order::Fortran;
    let dtype = npy.dtype();
    // The header's shape is checked against the bytes that follow it before anything is allocated.
    let count = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
    let Some(elem) = dtype.num_bytes() else {
        return Err(format!("unsupported dtype {dtype:?} (expected float32)"));
    };
    let Some(count) = count.filter(|n| n.checked_mul(elem).is_some_and(|b| b <= data_len)) else {
        return Err(format!(
            "the header's shape {shape:?} of {elem}-byte values needs more than the {data_len} bytes that follow it"
        ));
    };
    let data: Vec<f32> = match npy.try_data::<f32>() {
        Ok(reader) => collect_exact(reader, count)?,
        Err(npy) => match npy.try_data::<f64>() {
            Ok(reader) => collect_exact(reader, count)?.into_iter().map(|v| v as f32).collect(),
            Err(_) => return Err(format!("unsupported dtype {dtype:?} (expected float32)")),
        },
    };
    if fortran {
        let reversed: Vec<usize> = shape.iter().rev().copied().collect();
        let perm: Vec<usize> = (0..shape.len()).rev().collect();
        return Ok(Array::new(reversed, data).permuted(&perm));
    }
    Ok(Array::new(shape, data))
}

fn collect_exact<T: npyz::Deserialize, R: Read>(
    reader: npyz::NpyReader<T, R>,
    count: usize,
) -> Result<Vec<T>, String> {
    let mut out = Vec::with_capacity(count);
    for value in reader {
        out.push(value.map_err(|e| format!("truncated data: {e}"))?);
    }
    if out.len() != count {
        return Err(format!("holds {} values, its shape needs {count}", out.len()));
    }
    Ok(out)
}

/// Reads every array of a safetensors file and detects which codebase wrote it.
pub fn read_safetensors(path: &Path) -> Result<Checkpoint, ImportError> {
    let bytes = fs::read(path).map_err(|source| ImportError::Io { path: path.to_owned(), source })?;
    let tensors = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| ImportError::Corrupt {
        path: path.to_owned(),
        key: String::new(),
        detail: format!("not a readable safetensors file: {e}"),
    })?;
    let mut arrays = BTreeMap::new();
    for (name, view) in tensors.tensors() {
        let shape = view.shape().to_vec();
        let raw = view.data();
        let data: Vec<f32> = match view.dtype() {
            safetensors::Dtype::F32 => {
                raw.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
            }
            safetensors::Dtype::F64 => raw
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32)
                .collect(),
            safetensors::Dtype::BF16 => raw
                .chunks_exact(2)
                .map(|c| f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16))
                .collect(),
            // Integer buffers (e.g. BatchNorm's `num_batches_tracked`) are not BiT weights.
            other if !matches!(other, safetensors::Dtype::F16) => continue,
            other => {
                return Err(ImportError::Corrupt {
                    path: path.to_owned(),
                    key: name,
                    detail: format!("unsupported dtype {other:?} (expected F32, F64 or BF16)"),
                });
            }
        };
        let name = name.strip_prefix("module.").unwrap_or(&name).to_owned();
        arrays.insert(name, Array::new(shape, data));
    }
    let layout = [Layout::Timm, Layout::Transformers, Layout::BitPytorch]
        .into_iter()
        .find(|l| arrays.contains_key(&l.key(Slot::RootConv)))
        .ok_or_else(|| ImportError::UnknownLayout {
            path: path.to_owned(),
            detail: format!(
                "no root convolution under any known name ({}); first names: {}",
                [Layout::Timm, Layout::Transformers, Layout::BitPytorch]
                    .map(|l| l.key(Slot::RootConv))
                    .join(", "),
                arrays.keys().take(3).cloned().collect::<Vec<_>>().join(", ")
            ),
        })?;
    Ok(Checkpoint { path: path.to_owned(), layout, arrays, labels: None })
}

/// Reads `id2label` from a transformers `config.json`, and refuses configurations whose
/// network is not BiT's (TF "SAME" padding, non-pre-activation units).
pub fn read_hf_config(path: &Path) -> Result<Option<Vec<String>>, ImportError> {
    let text =
        fs::read_to_string(path).map_err(|source| ImportError::Io { path: path.to_owned(), source })?;
    let config: serde_json::Value = serde_json::from_str(&text).map_err(|e| ImportError::Corrupt {
        path: path.to_owned(),
        key: String::new(),
        detail: format!("invalid JSON: {e}"),
    })?;
    let field_err = |key: &str, detail: String| ImportError::Unsupported {
        path: path.to_owned(),
        key: key.to_owned(),
        detail,
    };
    if let Some(padding) = config.get("global_padding").and_then(|v| v.as_str())
        && !padding.eq_ignore_ascii_case("none")
    {
        return Err(field_err(
            "global_padding",
            format!("'{padding}' padding is not BiT's symmetric padding"),
        ));
    }
    if let Some(kind) = config.get("layer_type").and_then(|v| v.as_str())
        && kind != "preactivation"
    {
        return Err(field_err("layer_type", format!("'{kind}' units are not BiT's pre-activation units")));
    }
    let Some(map) = config.get("id2label").and_then(|v| v.as_object()) else {
        return Ok(None);
    };
    let mut labels = vec![None; map.len()];
    for (id, label) in map {
        let index: usize =
            id.parse().ok().filter(|&i| i < labels.len()).ok_or_else(|| {
                field_err("id2label", format!("class id '{id}' is not in 0..{}", map.len()))
            })?;
        let label = label
            .as_str()
            .ok_or_else(|| field_err("id2label", format!("label of '{id}' is not a string")))?;
        labels[index] = Some(label.to_owned());
    }
    let labels: Vec<String> = labels
        .into_iter()
        .collect::<Option<_>>()
        .ok_or_else(|| field_err("id2label", "class ids are not 0..N, each once".into()))?;
    // transformers fills `LABEL_<n>` when a model was saved without names: no information.
    if labels.iter().enumerate().all(|(i, l)| *l == format!("LABEL_{i}")) {
        return Ok(None);
    }
    Ok(Some(labels))
}
