//! The tract side of the BiT runtime, shared by `bit-runtime` (what a device links) and
//! `bit-tool`: everything here speaks tract's and ONNX's types, which stay out of the
//! runtime's public API.
//!
//! - [`budget`]: the memory budget checked on a graph before tract allocates.
//! - [`eval`]: one node evaluated on constant inputs (the import's constant folding).
//! - [`proto`]: reading ONNX files; attribute, initializer and graph queries.
//! - [`rewrite`]: the protobuf rewrites applied before tract parses a model.
//! - [`ops`]: the custom ops those rewrites use, one module each, and the loader that knows
//!   them.
//! - [`optimize`]: tract's optimization plus the constant folding it leaves undone.
//! - [`session`]: the one model builder (input size, threads, extra outputs) and the spawned
//!   state every run reuses.
#![deny(missing_docs)]

pub mod budget;
pub mod eval;
pub mod ops;
pub mod optimize;
pub mod proto;
pub mod rewrite;
pub mod session;

pub use session::{Options, Profile, Session};
/// The tract ONNX crate this engine is built on (the same version everywhere).
pub use tract_onnx;
