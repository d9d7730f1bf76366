//! Runtime errors; each names the file, key or field involved.

use std::path::PathBuf;

/// What can go wrong loading or running a model.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The model file is missing, unreadable, or not a network tract can run.
    #[error("model {}: {detail}", path.display())]
    Model {
        /// The model file.
        path: PathBuf,
        /// What failed.
        detail: String,
    },
    /// The model's metadata contract is malformed.
    #[error("model {}: metadata '{key}': {detail}", path.display())]
    Contract {
        /// The model file.
        path: PathBuf,
        /// The metadata key.
        key: String,
        /// What is wrong.
        detail: String,
    },
    /// A label list does not match the model's classes.
    #[error("model {}: {found} labels given, the model has {expected} classes", path.display())]
    LabelCount {
        /// The model file.
        path: PathBuf,
        /// Classes of the model.
        expected: usize,
        /// Labels given.
        found: usize,
    },
    /// An image file could not be read or decoded.
    #[error("image {}: {detail}", path.display())]
    Image {
        /// The image file.
        path: PathBuf,
        /// What failed.
        detail: String,
    },
    /// A configuration value is out of range.
    #[error("configuration '{field}': {detail}")]
    Config {
        /// The field.
        field: &'static str,
        /// What is wrong.
        detail: String,
    },
    /// tract failed while running the network.
    #[error("inference failed: {0}")]
    Inference(String),
}
