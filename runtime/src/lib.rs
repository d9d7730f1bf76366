//! Runs BiT image classifiers (float or int8 ONNX written by `bit-tool`) with tract. tract and
//! the engine around it (`bit-engine`: rewrites, custom ops, the model builder) stay out of
//! this crate's public API: a device links plain types.
//!
//! A model file carries its own contract (input size, normalization, resize mode, labels) in
//! its ONNX metadata; see [`contract`]. [`Model::load`] optimizes the network for a fixed
//! input size once and keeps one tract state for every run.
//!
//! Camera frames ([`Frame`]: YUYV, UYVY, NV12, RGB, BGR, grey, MJPEG) go through a
//! [`Classifier`], which validates each frame, converts, resizes and normalizes it straight
//! into the input tensor in one pass, runs the network and returns the top classes, without
//! allocating in the runtime's own per-frame code ([`classifier`] says what tract and the
//! JPEG decoder allocate). [`stats`] keeps per-stage latency percentiles.
#![deny(missing_docs)]

mod antialias;
pub mod classifier;
pub mod contract;
mod convert;
pub mod cpu;
mod error;
pub mod frame;
pub mod fs;
mod jpeg;
mod model;
pub mod preprocess;
pub mod stats;
pub mod topk;

pub use classifier::{Classification, Classifier, ClassifierConfig, ClassifyError, InferenceError};
pub use contract::Preprocess;
pub use convert::frame_to_rgb8;
pub use error::{Cause, Error};
pub use frame::{Frame, FrameError, JpegFault, PixelFormat, YuvColor, YuvMatrix, YuvRange, raw_frame_kind};
pub use model::{ContractSource, LoadOptions, Model, ModelInfo, SUPPORTED_SIZES, load_image};
pub use preprocess::{FramePreprocessor, Roi};
pub use stats::{LatencyStats, Stage, Timings};
pub use topk::{MAX_TOP_K, Prediction, TopK, top_k};

/// Reads a label file: one class name per line (blank lines and `#` comments skipped), or a
/// TSV with a header whose `name` column holds the names (as `imagenet1k_labels.tsv`).
pub fn read_labels(path: &std::path::Path) -> Result<Vec<String>, Error> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Model { path: path.to_owned(), detail: format!("label file: {e}") })?;
    Ok(parse_labels(&text))
}

/// Parses label text (see [`read_labels`]).
pub fn parse_labels(text: &str) -> Vec<String> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty() && !l.starts_with('#'));
    let first = lines.clone().next().unwrap_or("");
    if first.contains('\t') {
        let columns: Vec<&str> = first.split('\t').collect();
        let col = columns.iter().position(|c| c.trim() == "name").unwrap_or(columns.len() - 1);
        lines.next();
        return lines.map(|l| l.split('\t').nth(col).unwrap_or("").trim().to_owned()).collect();
    }
    lines.map(|l| l.trim().to_owned()).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn label_formats() {
        assert_eq!(super::parse_labels("cat\n\n# c\ndog\n"), vec!["cat", "dog"]);
        let tsv = "index\tsynset\tname\n0\tn01\ttench\n1\tn02\tgoldfish\n";
        assert_eq!(super::parse_labels(tsv), vec!["tench", "goldfish"]);
    }
}
