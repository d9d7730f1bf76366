//! Loading a BiT ONNX model with tract and running it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tract_onnx::prelude::*;
use tract_onnx::tract_core::runtime::RunOptions;

use crate::contract::{self, Preprocess};
use crate::error::Error;
use crate::preprocess::Resizer;
use crate::topk::{TopK, top_k};

/// Input sizes the runtime accepts: the BiT-HyperRule resolutions and the common deployment
/// size. Any square works for the network; these are the sizes that are tested.
pub const SUPPORTED_SIZES: [u32; 5] = [128, 160, 224, 384, 480];

/// How to load a model.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Side of the square input; `None` takes the model's contract (224 for BiT).
    pub input_size: Option<u32>,
    /// Inference threads (1 = the calling thread only).
    pub threads: usize,
    /// Class names overriding the model's own.
    pub labels: Option<Vec<String>>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions { input_size: None, threads: 1, labels: None }
    }
}

/// Where a model's preprocessing contract came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContractSource {
    /// Read from the model's metadata.
    Model,
    /// The model carried none; BiT's default was assumed.
    Default,
}

/// A loaded, optimized model with one spawned tract state, ready to classify.
pub struct Model {
    path: PathBuf,
    plan: Arc<TypedRunnableModel>,
    state: TypedSimpleState,
    preprocess: Preprocess,
    contract_source: ContractSource,
    labels: Vec<String>,
    architecture: Option<serde_json::Value>,
    input_size: u32,
    threads: usize,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("path", &self.path)
            .field("input_size", &self.input_size)
            .field("classes", &self.labels.len())
            .field("threads", &self.threads)
            .finish()
    }
}

/// Metadata read from a model file without building the network.
#[derive(Clone, Debug)]
pub struct ModelInfo {
    /// Preprocessing contract (BiT's default when the model has none).
    pub preprocess: Preprocess,
    /// Where `preprocess` came from.
    pub contract_source: ContractSource,
    /// Class names, if the model carries them.
    pub labels: Option<Vec<String>>,
    /// The architecture description the tool wrote.
    pub architecture: Option<serde_json::Value>,
}

impl ModelInfo {
    /// Reads the contract from an ONNX model's `metadata_props`.
    pub fn from_proto(path: &Path, proto: &tract_onnx::pb::ModelProto) -> Result<ModelInfo, Error> {
        let meta = |key: &str| proto.metadata_props.iter().find(|e| e.key == key).map(|e| e.value.as_str());
        let bad = |key: &str, detail: String| Error::Contract {
            path: path.to_owned(),
            key: key.to_owned(),
            detail,
        };
        if let Some(version) = meta(contract::META_FORMAT)
            && version != contract::FORMAT_VERSION
        {
            return Err(bad(
                contract::META_FORMAT,
                format!("contract version {version}, this runtime reads {}", contract::FORMAT_VERSION),
            ));
        }
        let (preprocess, contract_source) = match meta(contract::META_PREPROCESS) {
            Some(json) => {
                let pre: Preprocess =
                    serde_json::from_str(json).map_err(|e| bad(contract::META_PREPROCESS, e.to_string()))?;
                pre.validate().map_err(|e| bad(contract::META_PREPROCESS, e))?;
                (pre, ContractSource::Model)
            }
            None => (Preprocess::bit_default(224), ContractSource::Default),
        };
        let labels = meta(contract::META_LABELS)
            .map(|json| {
                serde_json::from_str::<Vec<String>>(json)
                    .map_err(|e| bad(contract::META_LABELS, e.to_string()))
            })
            .transpose()?;
        let architecture = meta(contract::META_ARCHITECTURE).and_then(|json| serde_json::from_str(json).ok());
        Ok(ModelInfo { preprocess, contract_source, labels, architecture })
    }

    /// Reads only the metadata of the model at `path`.
    pub fn read(path: &Path) -> Result<ModelInfo, Error> {
        let proto = read_proto(path)?;
        ModelInfo::from_proto(path, &proto)
    }
}

fn read_proto(path: &Path) -> Result<tract_onnx::pb::ModelProto, Error> {
    let model_err = |detail: String| Error::Model { path: path.to_owned(), detail };
    let bytes = std::fs::read(path).map_err(|e| model_err(e.to_string()))?;
    // Decoding from the slice (not a reader) avoids a second in-memory copy of the file.
    <tract_onnx::pb::ModelProto as prost::Message>::decode(bytes.as_slice())
        .map_err(|e| model_err(format!("not a readable ONNX model: {e}")))
}

impl Model {
    /// Loads the ONNX model at `path`, fixes its input to `[1, 3, size, size]`, optimizes it
    /// and spawns its state once.
    pub fn load(path: &Path, options: &LoadOptions) -> Result<Model, Error> {
        let model_err = |detail: String| Error::Model { path: path.to_owned(), detail };
        let mut proto = read_proto(path)?;
        let info = ModelInfo::from_proto(path, &proto)?;
        let fused = crate::fused::fuse_for_tract(&mut proto);
        if fused != crate::fused::Fused::default() {
            log::debug!("{}: rewritten for tract: {fused:?}", path.display());
        }
        let input_size = options.input_size.unwrap_or(info.preprocess.input_size);
        if !(32..=1024).contains(&input_size) {
            return Err(model_err(format!("input size {input_size} is not in 32..=1024")));
        }
        let threads = options.threads.max(1);

        // The protobuf holds a second copy of every weight: drop it before optimizing so that
        // peak memory at start-up stays near one copy of the model.
        let inference = crate::fused::onnx_framework()
            .model_for_proto_model(&proto)
            .map_err(|e| model_err(format!("{e:#}")));
        drop(proto);
        let typed = inference?
            .with_input_fact(0, f32::fact([1, 3, input_size as usize, input_size as usize]).into())
            .and_then(|m| crate::optimize::optimize(m.into_typed()?))
            .map_err(|e| model_err(format!("{e:#}")))?;
        let output = typed.output_fact(0).map_err(|e| model_err(format!("{e:#}")))?;
        let classes = match output.shape.as_concrete() {
            Some([1, k]) => *k,
            _ => return Err(model_err(format!("output is {output:?}, expected [1, classes] f32 logits"))),
        };
        let labels = match options.labels.clone().or(info.labels) {
            Some(labels) if labels.len() != classes => {
                return Err(Error::LabelCount {
                    path: path.to_owned(),
                    expected: classes,
                    found: labels.len(),
                });
            }
            Some(labels) => labels,
            None => (0..classes).map(|i| format!("class_{i}")).collect(),
        };
        let executor = if threads == 1 {
            // `Executor::multithread(1)` would still use every core.
            tract_linalg::multithread::Executor::SingleThread
        } else {
            tract_linalg::multithread::Executor::multithread(threads)
        };
        let run_options = RunOptions { executor: Some(executor), ..Default::default() };
        let plan = typed.into_runnable_with_options(&run_options).map_err(|e| model_err(format!("{e:#}")))?;
        let state = plan.spawn().map_err(|e| model_err(format!("{e:#}")))?;
        Ok(Model {
            path: path.to_owned(),
            plan,
            state,
            preprocess: info.preprocess,
            contract_source: info.contract_source,
            labels,
            architecture: info.architecture,
            input_size,
            threads,
        })
    }

    /// Class names, index order.
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// The preprocessing contract.
    pub fn preprocess(&self) -> &Preprocess {
        &self.preprocess
    }

    /// Whether the contract came from the model or is the assumed default.
    pub fn contract_source(&self) -> ContractSource {
        self.contract_source
    }

    /// Architecture description from the model metadata.
    pub fn architecture(&self) -> Option<&serde_json::Value> {
        self.architecture.as_ref()
    }

    /// Side of the square input this model was loaded at.
    pub fn input_size(&self) -> u32 {
        self.input_size
    }

    /// Inference threads.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// The optimized tract plan (for inspection and profiling).
    pub fn plan(&self) -> &Arc<TypedRunnableModel> {
        &self.plan
    }

    /// Number of input tensor values (`3 * size * size`).
    pub fn input_len(&self) -> usize {
        3 * (self.input_size as usize).pow(2)
    }

    /// Runs the network on a `[1, 3, size, size]` tensor's values and returns its logits.
    pub fn logits(&mut self, input: &[f32]) -> Result<Vec<f32>, Error> {
        let s = self.input_size as usize;
        let tensor = Tensor::from_shape(&[1, 3, s, s], input)
            .map_err(|e| Error::Inference(format!("input tensor: {e:#}")))?;
        let outputs =
            self.state.run(tvec!(tensor.into_tvalue())).map_err(|e| Error::Inference(format!("{e:#}")))?;
        let view = outputs[0].to_plain_array_view::<f32>().map_err(|e| Error::Inference(format!("{e:#}")))?;
        Ok(view.iter().copied().collect())
    }

    /// Runs the network on one input value without copying it: the caller may keep its own
    /// reference to the tensor (tract drops its clones when the run ends) and refill it for
    /// the next run.
    pub(crate) fn run_value(&mut self, input: TValue) -> TractResult<TVec<TValue>> {
        self.state.run(tvec!(input))
    }

    /// The input tensor for an RGB image under this model's contract.
    pub fn tensor_for_image(&self, image: &image::RgbImage) -> Vec<f32> {
        let resizer = Resizer::new(image.width(), image.height(), self.input_size, &self.preprocess);
        let mut input = vec![0f32; self.input_len()];
        resizer.fill_rgb8(image.as_raw(), 3 * image.width() as usize, &mut input);
        input
    }

    /// Classifies an RGB image: preprocess, run, softmax, top `k` (at most
    /// [`crate::topk::MAX_TOP_K`]).
    pub fn classify_image(&mut self, image: &image::RgbImage, k: usize) -> Result<(TopK, Vec<f32>), Error> {
        let input = self.tensor_for_image(image);
        let logits = self.logits(&input)?;
        Ok((top_k(&logits, k), logits))
    }
}

/// Decodes an image file (PNG, JPEG) to RGB8; grey and alpha images are converted.
pub fn load_image(path: &Path) -> Result<image::RgbImage, Error> {
    let reader = image::ImageReader::open(path)
        .and_then(|r| r.with_guessed_format())
        .map_err(|e| Error::Image { path: path.to_owned(), detail: e.to_string() })?;
    let decoded =
        reader.decode().map_err(|e| Error::Image { path: path.to_owned(), detail: e.to_string() })?;
    Ok(decoded.to_rgb8())
}
