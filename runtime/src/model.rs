//! Loading a BiT ONNX model with tract and running it.

use std::path::{Path, PathBuf};

use bit_engine::proto::{self, pb};
use bit_engine::tract_onnx::prelude::*;
use bit_engine::{Options, Session};

use crate::contract::{self, Preprocess};
use crate::error::Error;
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
    session: Session,
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
    fn from_proto(path: &Path, proto: &pb::ModelProto) -> Result<ModelInfo, Error> {
        ModelInfo::from_metadata(
            path,
            proto.metadata_props.iter().map(|e| (e.key.as_str(), e.value.as_str())),
        )
    }

    /// Reads the contract from a model's metadata (`metadata_props`: key, value pairs) of
    /// the model file at `path` (named in errors).
    pub fn from_metadata<'m>(
        path: &Path,
        props: impl IntoIterator<Item = (&'m str, &'m str)>,
    ) -> Result<ModelInfo, Error> {
        let props: Vec<(&str, &str)> = props.into_iter().collect();
        let meta = |key: &str| props.iter().find(|(k, _)| *k == key).map(|(_, v)| *v);
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

fn read_proto(path: &Path) -> Result<pb::ModelProto, Error> {
    proto::read(path).map_err(|source| Error::Read { path: path.to_owned(), source })
}

impl Model {
    /// Loads the ONNX model at `path`, fixes its input to `[1, 3, size, size]`, optimizes it
    /// and spawns its state once.
    pub fn load(path: &Path, options: &LoadOptions) -> Result<Model, Error> {
        let model_err = |detail: String| Error::Model { path: path.to_owned(), detail };
        let tract_err = |stage: &'static str| {
            move |source: TractError| Error::Tract { path: path.to_owned(), stage, source: source.into() }
        };
        let proto = read_proto(path)?;
        let info = ModelInfo::from_proto(path, &proto)?;
        let input_size = options.input_size.unwrap_or(info.preprocess.input_size);
        if !(32..=1024).contains(&input_size) {
            return Err(model_err(format!("input size {input_size} is not in 32..=1024")));
        }
        let threads = options.threads.max(1);
        let session_options = Options { threads, ..Options::new(input_size) };
        let session = Session::build(proto, &session_options).map_err(tract_err("building the network"))?;
        let output = session.output_fact().map_err(tract_err("reading its output"))?;
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
        Ok(Model {
            path: path.to_owned(),
            session,
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

    /// The matrix-multiplication kernels tract chose for this model on this CPU, e.g.
    /// `arm64simd_mmm_i32_8x8_dot` (their names say the ISA and the tile).
    pub fn kernels(&self) -> Vec<String> {
        self.session.matmul_kernels()
    }

    /// Number of input tensor values (`3 * size * size`).
    pub fn input_len(&self) -> usize {
        3 * (self.input_size as usize).pow(2)
    }

    /// Runs the network on a `[1, 3, size, size]` tensor's values and returns its logits.
    pub fn logits(&mut self, input: &[f32]) -> Result<Vec<f32>, Error> {
        let outputs = self.session.run_f32(input).map_err(|e| Error::Inference(e.into()))?;
        bit_engine::session::values(&outputs[0]).map_err(|e| Error::Inference(e.into()))
    }

    /// Runs the network on one input value without copying it: the caller may keep its own
    /// reference to the tensor (tract drops its clones when the run ends) and refill it for
    /// the next run.
    pub(crate) fn run_value(&mut self, input: TValue) -> TractResult<TVec<TValue>> {
        self.session.run(input)
    }

    /// The input tensor for an RGB image under this model's contract.
    pub fn tensor_for_image(&self, image: &image::RgbImage) -> Vec<f32> {
        crate::preprocess::image_tensor(
            image.as_raw(),
            image.width(),
            image.height(),
            &self.preprocess,
            self.input_size,
        )
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
