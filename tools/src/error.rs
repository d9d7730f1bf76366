//! Errors of the offline tool's library. Each names the file and, where there is one, the
//! array key or field involved.

use std::path::PathBuf;

/// What can go wrong reading a checkpoint or writing a model.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The file could not be opened, read or written.
    #[error("{}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A model file could not be read, or is not ONNX.
    #[error("{}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: bit_engine::proto::ReadError,
    },
    /// tract could not build or run a model.
    #[error("{}: tract", path.display())]
    Tract {
        /// The model file.
        path: PathBuf,
        /// tract's error.
        #[source]
        source: bit_runtime::Cause,
    },
    /// The file is not any checkpoint format this tool reads.
    #[error("{}: unknown checkpoint format: {detail}", path.display())]
    UnknownFormat {
        /// The file.
        path: PathBuf,
        /// What was seen.
        detail: String,
    },
    /// The file is readable but its array names follow no known BiT layout.
    #[error("{}: unknown layout: {detail}", path.display())]
    UnknownLayout {
        /// The file.
        path: PathBuf,
        /// What was seen.
        detail: String,
    },
    /// The container or one of its arrays is damaged (truncated, bad header, bad dtype).
    #[error("{}: corrupt{}: {detail}", path.display(), key_suffix(key))]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The array or field, empty when the container itself is bad.
        key: String,
        /// What is wrong.
        detail: String,
    },
    /// An array the architecture needs is absent.
    #[error("{}: missing array '{key}'", path.display())]
    MissingKey {
        /// The file.
        path: PathBuf,
        /// The array name that was looked for.
        key: String,
    },
    /// An array has the wrong shape for the architecture inferred from the others.
    #[error("{}: array '{key}' has shape {found:?}, expected {expected:?}", path.display())]
    Shape {
        /// The file.
        path: PathBuf,
        /// The array.
        key: String,
        /// What the architecture needs.
        expected: Vec<usize>,
        /// What the file holds.
        found: Vec<usize>,
    },
    /// A valid file describing something this tool does not build.
    #[error("{}: unsupported{}: {detail}", path.display(), key_suffix(key))]
    Unsupported {
        /// The file.
        path: PathBuf,
        /// The array or field.
        key: String,
        /// Why.
        detail: String,
    },
}

fn key_suffix(key: &str) -> String {
    if key.is_empty() { String::new() } else { format!(" at '{key}'") }
}
