//! Runtime errors; each names the file, key or field involved, and carries what caused it
//! as its [`source`](std::error::Error::source) (printed once: `{:#}` shows the chain).

use std::path::PathBuf;

/// An error from tract or the engine, with its chain of causes.
pub type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What can go wrong loading or running a model.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The model file could not be read or is not ONNX.
    #[error("model {}", path.display())]
    Read {
        /// The model file.
        path: PathBuf,
        /// Why.
        source: bit_engine::proto::ReadError,
    },
    /// tract could not build or optimize the network.
    #[error("model {}: {stage}", path.display())]
    Tract {
        /// The model file.
        path: PathBuf,
        /// What was being done.
        stage: &'static str,
        /// tract's error.
        #[source]
        source: Cause,
    },
    /// The model is readable but not a network the runtime can run.
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
    #[error("inference failed")]
    Inference(#[source] Cause),
}
