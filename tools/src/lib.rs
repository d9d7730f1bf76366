//! The offline side of the product: reads BiT checkpoints as users have them, folds weight
//! standardization into static kernels and writes ONNX models the runtime loads.
#![deny(missing_docs)]

pub mod augment;
pub mod bit;
pub mod checkpoint;
pub mod contract;
mod error;
pub mod eval;
pub mod finetune;
pub mod onnx;
pub mod onnx_import;
pub mod probe;
pub mod quantize;
pub mod synth;
pub mod tensor;

use std::path::Path;

pub use bit::{Arch, BitWeights};
pub use bit_runtime::Preprocess;
pub use checkpoint::{Checkpoint, Layout};
pub use error::ImportError;

/// The 1000 ILSVRC-2012 class names, index order (BiT-S and the `-ILSVRC2012` models).
pub const IMAGENET1K_LABELS: &str = include_str!("../../models/imagenet1k_labels.txt");

/// The ILSVRC-2012 labels as a list.
pub fn imagenet1k_labels() -> Vec<String> {
    bit_runtime::parse_labels(IMAGENET1K_LABELS)
}

/// Options of [`import_checkpoint`].
#[derive(Clone, Debug, Default)]
pub struct ImportOptions {
    /// Class names, overriding any found in or beside the checkpoint.
    pub labels: Option<Vec<String>>,
    /// Where the preprocessing contract comes from (the checkpoint's source by default).
    pub contract: contract::ContractChoice,
    /// Contract fields given on the command line (input size, mean, std, ...).
    pub overrides: contract::Overrides,
}

/// What [`import_checkpoint`] did.
#[derive(Clone, Debug)]
pub struct ImportReport {
    /// Inferred architecture.
    pub arch: Arch,
    /// Source layout.
    pub layout: Layout,
    /// Parameters of the network.
    pub parameters: usize,
    /// Where the class names came from.
    pub labels_source: &'static str,
    /// The preprocessing contract written into the model (its `source` says where from).
    pub preprocess: Preprocess,
}

/// Reads a checkpoint, folds its weight standardization and writes the float ONNX model to
/// `out` atomically.
pub fn import_checkpoint(
    checkpoint: &Path,
    out: &Path,
    options: &ImportOptions,
) -> Result<ImportReport, ImportError> {
    let ckpt = Checkpoint::open(checkpoint)?;
    let mut weights = BitWeights::from_checkpoint(&ckpt)?;
    weights.fold_weight_standardization();
    let classes = weights.arch.num_classes;
    let (labels, labels_source) = match (&options.labels, &ckpt.labels) {
        (Some(l), _) => (Some(l.clone()), "label file"),
        (None, Some(l)) => (Some(l.clone()), "checkpoint config.json"),
        (None, None) if classes == 1000 => (Some(imagenet1k_labels()), "built-in ILSVRC-2012 names"),
        (None, None) => (None, "none (class_<n>)"),
    };
    if let Some(labels) = &labels
        && labels.len() != classes
    {
        return Err(ImportError::Unsupported {
            path: checkpoint.to_owned(),
            key: weights.layout.key(checkpoint::Slot::HeadBias),
            detail: format!(
                "the head has {classes} classes but {} labels were given ({labels_source})",
                labels.len()
            ),
        });
    }
    let preprocess = contract::for_checkpoint(checkpoint, weights.layout, classes, &options.contract)?;
    let preprocess = options.overrides.apply(preprocess).map_err(|detail| ImportError::Unsupported {
        path: checkpoint.to_owned(),
        key: "preprocessing contract".into(),
        detail,
    })?;
    let parameters = weights.parameter_count();
    let model =
        build_model(&weights, &preprocess, labels.as_deref(), &describe(&weights, checkpoint, parameters));
    onnx::write_model(&model, out)?;
    Ok(ImportReport {
        arch: weights.arch.clone(),
        layout: weights.layout,
        parameters,
        labels_source,
        preprocess,
    })
}

/// The architecture description stored in the model metadata.
fn describe(weights: &BitWeights, source: &Path, parameters: usize) -> serde_json::Value {
    serde_json::json!({
        "family": "BiT ResNet-v2 (GroupNorm, weight standardization)",
        "name": weights.arch.name(),
        "depths": weights.arch.depths,
        "width": weights.arch.width,
        "num_classes": weights.arch.num_classes,
        "parameters": parameters,
        "source_layout": weights.layout.name(),
        "source_file": source.file_name().map(|f| f.to_string_lossy().into_owned()),
        "ws_eps": weights.ws_eps,
        "ws_folded": weights.ws_folded,
    })
}

/// The float ONNX model of `weights` with its contract in the metadata.
pub fn build_model(
    weights: &BitWeights,
    preprocess: &Preprocess,
    labels: Option<&[String]>,
    architecture: &serde_json::Value,
) -> tract_onnx::pb::ModelProto {
    use bit_runtime::contract::*;
    let mut metadata = vec![
        (META_FORMAT.to_owned(), FORMAT_VERSION.to_owned()),
        (META_PREPROCESS.to_owned(), serde_json::to_string(preprocess).expect("serializable")),
        (META_ARCHITECTURE.to_owned(), architecture.to_string()),
    ];
    if let Some(labels) = labels {
        metadata.push((META_LABELS.to_owned(), serde_json::to_string(labels).expect("serializable")));
    }
    onnx::bit_graph(weights).into_model(&format!("bit_{}", weights.arch.name()), &metadata)
}
