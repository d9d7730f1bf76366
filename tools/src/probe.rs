//! Running an ONNX model with tract while reading intermediate tensors: calibration reads
//! every quantization point, evaluation compares float and int8 layer by layer, profiling
//! times every op.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use bit_runtime::Preprocess;
use bit_runtime::preprocess::Resizer;
use tract_onnx::pb;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::runtime::RunOptions;

use crate::error::ImportError;

/// A model optimized for a fixed input size whose outputs are the original outputs followed
/// by the requested intermediate tensors.
pub struct Probe {
    state: TypedSimpleState,
    size: u32,
    /// Names of the extra outputs, in output order after the model's own outputs.
    pub names: Vec<String>,
    own_outputs: usize,
}

fn model_err(path: &Path, e: impl std::fmt::Display) -> ImportError {
    ImportError::Unsupported { path: path.to_owned(), key: String::new(), detail: format!("{e:#}") }
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
        let mut proto = proto.clone();
        let graph = proto.graph.as_mut().expect("checked by the caller");
        let own_outputs = graph.output.len();
        for name in extra {
            graph.output.push(pb::ValueInfoProto {
                name: name.clone(),
                r#type: Some(pb::TypeProto {
                    value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                        elem_type: pb::tensor_proto::DataType::Float as i32,
                        shape: None,
                    })),
                    ..Default::default()
                }),
                ..Default::default()
            });
        }
        bit_runtime::fused::fuse_for_tract(&mut proto);
        let s = size as usize;
        let model = bit_runtime::fused::onnx_framework()
            .model_for_proto_model(&proto)
            .and_then(|m| m.with_input_fact(0, f32::fact([1, 3, s, s]).into()))
            .and_then(|m| bit_runtime::optimize::optimize(m.into_typed()?))
            .map_err(|e| model_err(path, e))?;
        let executor = if threads <= 1 {
            tract_linalg::multithread::Executor::SingleThread
        } else {
            tract_linalg::multithread::Executor::multithread(threads)
        };
        let plan = model
            .into_runnable_with_options(&RunOptions { executor: Some(executor), ..Default::default() })
            .map_err(|e| model_err(path, e))?;
        let state = plan.spawn().map_err(|e| model_err(path, e))?;
        Ok(Probe { state, size, names: extra.to_vec(), own_outputs })
    }

    /// Input side.
    pub fn size(&self) -> u32 {
        self.size
    }

    /// Runs on one input tensor; returns (the model's first output, the extra outputs).
    pub fn run(&mut self, input: &[f32]) -> TractResult<(Vec<f32>, Vec<TValue>)> {
        let s = self.size as usize;
        let tensor = Tensor::from_shape(&[1, 3, s, s], input)?;
        let mut outputs = self.state.run(tvec!(tensor.into_tvalue()))?;
        let extra: Vec<TValue> = outputs.drain(self.own_outputs..).collect();
        let logits = outputs[0].to_plain_array_view::<f32>()?.iter().copied().collect();
        Ok((logits, extra))
    }

    /// Runs once with every op timed; returns seconds per op kind and per node.
    pub fn profile(&mut self, input: &[f32]) -> TractResult<Profile> {
        let s = self.size as usize;
        let tensor = Tensor::from_shape(&[1, 3, s, s], input)?;
        let mut by_node: Vec<(String, String, Duration)> = Vec::new();
        self.state.run_plan_with_eval(tvec!(tensor.into_tvalue()), |ctx, state, node, inputs| {
            let start = Instant::now();
            let r = tract_onnx::tract_core::plan::eval(ctx, state, node, inputs);
            by_node.push((node.name.clone(), node.op().name().to_string(), start.elapsed()));
            r
        })?;
        let mut by_op: BTreeMap<String, (usize, Duration)> = BTreeMap::new();
        for (_, op, d) in &by_node {
            let e = by_op.entry(op.clone()).or_default();
            e.0 += 1;
            e.1 += *d;
        }
        Ok(Profile { by_node, by_op })
    }
}

/// Per-op timings of one run.
#[derive(Debug, Default)]
pub struct Profile {
    /// (node name, op name, time) in execution order.
    pub by_node: Vec<(String, String, Duration)>,
    /// op name -> (node count, total time).
    pub by_op: BTreeMap<String, (usize, Duration)>,
}

/// Reads a model's protobuf.
pub fn read_proto(path: &Path) -> Result<pb::ModelProto, ImportError> {
    let bytes = std::fs::read(path).map_err(|source| ImportError::Io { path: path.to_owned(), source })?;
    <pb::ModelProto as prost::Message>::decode(bytes.as_slice()).map_err(|e| ImportError::Corrupt {
        path: path.to_owned(),
        key: String::new(),
        detail: format!("not a readable ONNX model: {e}"),
    })
}

/// The input tensor for an RGB image under `pre` at `size`.
pub fn image_tensor(image: &image::RgbImage, pre: &Preprocess, size: u32) -> Vec<f32> {
    let resizer = Resizer::new(image.width(), image.height(), size, pre);
    let mut out = vec![0f32; 3 * (size as usize).pow(2)];
    resizer.fill_rgb8(image.as_raw(), 3 * image.width() as usize, &mut out);
    out
}

/// An f32 view of a probe output.
pub fn values(t: &TValue) -> Vec<f32> {
    t.to_plain_array_view::<f32>().map(|v| v.iter().copied().collect()).unwrap_or_default()
}
