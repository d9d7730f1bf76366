//! Deterministic random BiT checkpoints in the exact layouts users have (official npz, timm,
//! transformers, big_transfer PyTorch), for tests and the demo: real weights cannot be
//! downloaded on a build machine without internet.
//!
//! The same seed and architecture give the same network in every layout: values are drawn in
//! one fixed order in OIHW, and only names and axes differ between layouts.

use std::io::Write;
use std::path::Path;

use rand::SeedableRng;
use rand_distr::{Distribution, Normal};

use crate::bit::Arch;
use crate::checkpoint::{Layout, Slot};
use crate::error::ImportError;
use crate::onnx::write_atomically;
use crate::tensor::Array;

/// How a slot's values are drawn.
#[derive(Clone, Copy, Debug)]
enum Init {
    /// He-normal: std `sqrt(2 / fan_in)`.
    He,
    /// `1 + 0.1 N(0, 1)` (GroupNorm scale).
    Gamma,
    /// `0.1 N(0, 1)` (GroupNorm shift).
    Beta,
    /// `0.05 N(0, 1)` (head weight: logits with a spread of a few units).
    Head,
    /// Zeros.
    Zero,
}

/// Every array of `arch` in drawing order, with its canonical shape (OIHW kernels,
/// `[classes, features]` head).
fn slots(arch: &Arch) -> Vec<(Slot, Vec<usize>, Init)> {
    let mut out = vec![(Slot::RootConv, vec![arch.root_channels(), 3, 7, 7], Init::He)];
    let mut cin = arch.root_channels();
    for (b, &depth) in arch.depths.iter().enumerate() {
        let (block, mid, cout) = (b + 1, arch.mid(b), arch.out(b));
        for u in 0..depth {
            let unit = u + 1;
            let unit_cin = if u == 0 { cin } else { cout };
            let gn = |part, c| {
                [
                    (Slot::Gn { block, unit, part, beta: false }, vec![c], Init::Gamma),
                    (Slot::Gn { block, unit, part, beta: true }, vec![c], Init::Beta),
                ]
            };
            out.extend(gn(0, unit_cin));
            out.push((Slot::Conv { block, unit, part: 0 }, vec![mid, unit_cin, 1, 1], Init::He));
            if u == 0 {
                out.push((Slot::Proj { block }, vec![cout, unit_cin, 1, 1], Init::He));
            }
            out.extend(gn(1, mid));
            out.push((Slot::Conv { block, unit, part: 1 }, vec![mid, mid, 3, 3], Init::He));
            out.extend(gn(2, mid));
            out.push((Slot::Conv { block, unit, part: 2 }, vec![cout, mid, 1, 1], Init::He));
        }
        cin = cout;
    }
    let f = arch.features();
    out.push((Slot::FinalGn { beta: false }, vec![f], Init::Gamma));
    out.push((Slot::FinalGn { beta: true }, vec![f], Init::Beta));
    out.push((Slot::HeadWeight, vec![arch.num_classes, f], Init::Head));
    out.push((Slot::HeadBias, vec![arch.num_classes], Init::Zero));
    out
}

/// Draws every array of `arch` from `seed`, named and laid out for `layout`.
pub fn synth_arrays(arch: &Arch, seed: u64, layout: Layout) -> Vec<(String, Array)> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let normal = Normal::new(0.0f32, 1.0).expect("unit normal");
    slots(arch)
        .into_iter()
        .map(|(slot, shape, init)| {
            let n: usize = shape.iter().product();
            let fan_in: usize = shape.iter().skip(1).product();
            let (mul, add) = match init {
                Init::He => ((2.0 / fan_in as f32).sqrt(), 0.0),
                Init::Gamma => (0.1, 1.0),
                Init::Beta => (0.1, 0.0),
                Init::Head => (0.05, 0.0),
                Init::Zero => (0.0, 0.0),
            };
            let data: Vec<f32> = (0..n).map(|_| normal.sample(&mut rng) * mul + add).collect();
            let canonical = Array::new(shape, data);
            (layout.key(slot), stored(layout, slot, canonical))
        })
        .collect()
}

/// Converts a canonical array to the layout's stored axes.
fn stored(layout: Layout, slot: Slot, a: Array) -> Array {
    match slot {
        Slot::HeadWeight => {
            let (k, f) = (a.shape[0], a.shape[1]);
            match layout {
                Layout::Npz => {
                    let t = a.permuted(&[1, 0]);
                    Array::new(vec![1, 1, f, k], t.data)
                }
                Layout::Transformers => a,
                Layout::Timm | Layout::BitPytorch => Array::new(vec![k, f, 1, 1], a.data),
            }
        }
        _ if a.shape.len() == 4 && layout.kernels_hwio() => a.oihw_to_hwio(),
        _ => a,
    }
}

/// Writes a random checkpoint of `arch` to `path` in `layout`: an npz for
/// [`Layout::Npz`], a safetensors file otherwise. For transformers, a `config.json` with
/// `id2label` (from `labels`) is written beside it.
pub fn write_synthetic(
    path: &Path,
    arch: &Arch,
    seed: u64,
    layout: Layout,
    labels: Option<&[String]>,
) -> Result<(), ImportError> {
    let arrays = synth_arrays(arch, seed, layout);
    match layout {
        Layout::Npz => write_npz(path, &arrays),
        _ => {
            write_safetensors(path, &arrays)?;
            if layout == Layout::Transformers {
                write_transformers_config(&path.with_file_name("config.json"), arch, labels)?;
            }
            Ok(())
        }
    }
}

/// Writes arrays as numpy's `savez` does: a stored (uncompressed) zip of `<name>.npy`
/// files, float32, C order.
pub fn write_npz(path: &Path, arrays: &[(String, Array)]) -> Result<(), ImportError> {
    use npyz::WriterBuilder;
    let io_err = |e: std::io::Error| ImportError::Io { path: path.to_owned(), source: e };
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .large_file(false);
    for (name, array) in arrays {
        let mut npy = Vec::with_capacity(array.data.len() * 4 + 128);
        {
            let shape: Vec<u64> = array.shape.iter().map(|&d| d as u64).collect();
            let mut writer = npyz::WriteOptions::new()
                .default_dtype()
                .shape(&shape)
                .writer(&mut npy)
                .begin_nd()
                .map_err(io_err)?;
            writer.extend(array.data.iter().copied()).map_err(io_err)?;
            writer.finish().map_err(io_err)?;
        }
        zip.start_file(format!("{name}.npy"), options).map_err(|e| io_err(std::io::Error::other(e)))?;
        zip.write_all(&npy).map_err(io_err)?;
    }
    let bytes = zip.finish().map_err(|e| io_err(std::io::Error::other(e)))?.into_inner();
    write_atomically(path, &bytes)
}

/// Writes arrays as a float32 safetensors file.
pub fn write_safetensors(path: &Path, arrays: &[(String, Array)]) -> Result<(), ImportError> {
    let bytes: Vec<(String, Vec<u8>, Vec<usize>)> = arrays
        .iter()
        .map(|(name, a)| {
            (name.clone(), a.data.iter().flat_map(|v| v.to_le_bytes()).collect(), a.shape.clone())
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = bytes
        .iter()
        .map(|(name, data, shape)| {
            let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), data)
                .expect("sizes agree by construction");
            (name.clone(), view)
        })
        .collect();
    let blob = safetensors::serialize(views, None).map_err(|e| ImportError::Io {
        path: path.to_owned(),
        source: std::io::Error::other(e.to_string()),
    })?;
    write_atomically(path, &blob)
}

/// Writes a transformers `BitConfig`-style `config.json`.
fn write_transformers_config(path: &Path, arch: &Arch, labels: Option<&[String]>) -> Result<(), ImportError> {
    let id2label: serde_json::Map<String, serde_json::Value> = (0..arch.num_classes)
        .map(|i| {
            let name = labels.and_then(|l| l.get(i)).cloned().unwrap_or_else(|| format!("LABEL_{i}"));
            (i.to_string(), serde_json::Value::String(name))
        })
        .collect();
    let config = serde_json::json!({
        "architectures": ["BitForImageClassification"],
        "model_type": "bit",
        "layer_type": "preactivation",
        "global_padding": null,
        "num_groups": 32,
        "depths": arch.depths,
        "hidden_sizes": (0..4).map(|b| arch.out(b)).collect::<Vec<_>>(),
        "embedding_size": arch.root_channels(),
        "width_factor": arch.width,
        "id2label": id2label,
    });
    let text = serde_json::to_string_pretty(&config).expect("JSON value");
    write_atomically(path, text.as_bytes())
}
