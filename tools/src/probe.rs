//! Running an ONNX model with tract while reading intermediate tensors: calibration reads
//! every quantization point, evaluation compares float and int8 layer by layer, profiling
//! times every op.

use std::path::Path;

use bit_engine::tract_onnx::pb;
use bit_engine::tract_onnx::prelude::*;
use bit_engine::{Options, Session};
use bit_runtime::Preprocess;

use crate::error::ImportError;

pub use bit_engine::Profile;

/// A model optimized for a fixed input size whose outputs are the original outputs followed
/// by the requested intermediate tensors (built by the same builder as the runtime's models).
pub struct Probe {
    session: Session,
    /// Names of the extra outputs, in output order after the model's own outputs.
    pub names: Vec<String>,
}

fn model_err(path: &Path, e: TractError) -> ImportError {
    ImportError::Tract { path: path.to_owned(), source: e.into() }
}

impl Probe {
    /// Builds a probe of `proto` (read from `path`) exposing `extra` tensor names.
    pub fn new(
        path: &Path,
        proto: &pb::ModelProto,
        extra: &[String],
        size: u32,
        threads: usize,
    ) -> Result<Probe, ImportError> {
        let options = Options { threads, extra_outputs: extra.to_vec(), ..Options::new(size) };
        let session = Session::build(proto.clone(), &options).map_err(|e| model_err(path, e))?;
        Ok(Probe { session, names: extra.to_vec() })
    }

    /// Input side.
    pub fn size(&self) -> u32 {
        self.session.input_size()
    }

    /// Runs on one input tensor; returns (the model's first output, the extra outputs).
    pub fn run(&mut self, input: &[f32]) -> TractResult<(Vec<f32>, Vec<TValue>)> {
        let mut outputs = self.session.run_f32(input)?;
        let extra: Vec<TValue> = outputs.drain(self.session.own_outputs()..).collect();
        Ok((bit_engine::session::values(&outputs[0])?, extra))
    }

    /// Runs once with every op timed; returns seconds per op kind and per node.
    pub fn profile(&mut self, input: &[f32]) -> TractResult<Profile> {
        self.session.profile(input)
    }
}

/// Reads a model's protobuf.
pub fn read_proto(path: &Path) -> Result<pb::ModelProto, ImportError> {
    bit_engine::proto::read(path).map_err(|source| ImportError::Read { path: path.to_owned(), source })
}

/// The input tensor for an RGB image under `pre` at `size`.
pub fn image_tensor(image: &image::RgbImage, pre: &Preprocess, size: u32) -> Vec<f32> {
    bit_runtime::preprocess::image_tensor(image.as_raw(), image.width(), image.height(), pre, size)
}

/// An f32 view of a probe output.
pub fn values(t: &TValue) -> Vec<f32> {
    t.to_plain_array_view::<f32>().map(|v| v.iter().copied().collect()).unwrap_or_default()
}
