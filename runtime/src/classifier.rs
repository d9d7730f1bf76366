//! Camera frames to top-k classes, with every buffer allocated once.
//!
//! A [`Classifier`] owns the [`Model`] (one spawned tract state), the input tensor, the
//! [`FramePreprocessor`] (taps, MJPEG scratch) and the latency windows. Per frame, the
//! runtime's own code does not allocate: the input tensor is filled in place (tract drops its
//! reference after each run, so the `Arc` is unique again) and passed to tract by reference;
//! logits are read from tract's output tensor; top-k is a `heapless::Vec`. tract itself
//! allocates every intermediate tensor of a run (it has no arena; bounded and the same for
//! every run), and an MJPEG frame costs the decoder's own allocations (see
//! `crate::jpeg`). A new frame geometry recomputes the taps in place, also without
//! allocating.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use bit_engine::tract_onnx::prelude::{TValue, Tensor};

use crate::contract::ResizeMode;
use crate::error::{Cause, Error};
use crate::frame::{Frame, FrameError, MAX_SIDE, PixelFormat};
use crate::model::{LoadOptions, Model};
use crate::preprocess::{FramePreprocessor, Roi};
use crate::stats::{Stage, Timings};
use crate::topk::{MAX_TOP_K, TopK, top_k};

/// How to build a [`Classifier`].
#[derive(Clone, Debug)]
pub struct ClassifierConfig {
    /// Side of the square input; `None` takes the model's contract.
    pub input_size: Option<u32>,
    /// Inference threads (1 = the calling thread only).
    pub threads: usize,
    /// Classes returned per frame, 1..=[`MAX_TOP_K`].
    pub top_k: usize,
    /// Resize mode overriding the model's contract.
    pub resize: Option<ResizeMode>,
    /// Region of each frame to classify, in frame pixels; `None` for the whole frame.
    pub roi: Option<Roi>,
    /// Widest frame accepted (sizes the MJPEG scratch image).
    pub max_width: u32,
    /// Tallest frame accepted.
    pub max_height: u32,
    /// Class names overriding the model's own.
    pub labels: Option<Vec<String>>,
}

impl Default for ClassifierConfig {
    /// One thread, top 5, the model's contract, whole frames up to 1920x1080.
    fn default() -> Self {
        ClassifierConfig {
            input_size: None,
            threads: 1,
            top_k: 5,
            resize: None,
            roi: None,
            max_width: 1920,
            max_height: 1080,
            labels: None,
        }
    }
}

/// Why a frame was not classified. The classifier stays usable after either.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ClassifyError {
    /// The frame was refused before any pixel was read (or, for MJPEG, while decoding).
    /// Cheap: no allocation.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// tract failed while running the network.
    #[error(transparent)]
    Inference(#[from] InferenceError),
}

/// tract failed while running the network; its error is the [`source`](std::error::Error::source).
/// Cloning shares it.
#[derive(Clone, Debug, thiserror::Error)]
#[error("inference failed")]
pub struct InferenceError(#[source] Arc<Cause>);

impl InferenceError {
    fn new(cause: impl Into<Cause>) -> InferenceError {
        InferenceError(Arc::new(cause.into()))
    }
}

impl PartialEq for InferenceError {
    /// The same failure (clones of one error), not two equal messages.
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// One classified frame: the best classes and how long each stage took.
#[derive(Clone, Debug)]
pub struct Classification {
    /// The best classes, best first.
    pub top: TopK,
    /// Preprocess, inference and postprocess as measured here; capture and total are zero
    /// until the caller, which owns the camera, sets them.
    pub timings: Timings,
}

/// A model and everything a frame needs on its way to top-k, allocated once.
pub struct Classifier {
    model: Model,
    input: Arc<Tensor>,
    pre: FramePreprocessor,
    top_k: usize,
    /// Times the input tensor had to be replaced because tract still held it.
    input_replaced: u64,
}

impl std::fmt::Debug for Classifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Classifier")
            .field("model", &self.model)
            .field("top_k", &self.top_k)
            .field("max_frame", &self.pre.max_frame())
            .finish()
    }
}

impl Classifier {
    /// Loads the model at `path` (see [`Model::load`]) and allocates the input tensor, the
    /// preprocessing buffers and the statistics windows.
    pub fn new(path: &Path, config: &ClassifierConfig) -> Result<Classifier, Error> {
        let bad = |field: &'static str, detail: String| Error::Config { field, detail };
        if !(1..=MAX_TOP_K).contains(&config.top_k) {
            return Err(bad("top_k", format!("{} is not in 1..={MAX_TOP_K}", config.top_k)));
        }
        for (field, v) in [("max_width", config.max_width), ("max_height", config.max_height)] {
            if !(1..=MAX_SIDE).contains(&v) {
                return Err(bad(field, format!("{v} is not in 1..={MAX_SIDE}")));
            }
        }
        if let Some(roi) = config.roi
            && !roi.fits(config.max_width, config.max_height)
        {
            return Err(bad(
                "roi",
                format!(
                    "{}x{} at ({}, {}) is empty or outside the largest frame {}x{}",
                    roi.width, roi.height, roi.x, roi.y, config.max_width, config.max_height
                ),
            ));
        }
        let options = LoadOptions {
            input_size: config.input_size,
            threads: config.threads,
            labels: config.labels.clone(),
        };
        let model = Model::load(path, &options)?;
        let mut pre = model.preprocess().clone();
        if let Some(resize) = config.resize {
            pre.resize = resize;
            pre.validate().map_err(|e| bad("resize", e))?;
        }
        let size = model.input_size();
        let s = size as usize;
        let input = Tensor::zero::<f32>(&[1, 3, s, s]).map_err(|e| Error::Tract {
            path: path.to_owned(),
            stage: "allocating the input tensor",
            source: e.into(),
        })?;
        log::info!(
            "classifier: {} at {size}x{size}, {} thread(s), top {}, frames up to {}x{}, roi {:?}, resize {:?}",
            path.display(),
            model.threads(),
            config.top_k,
            config.max_width,
            config.max_height,
            config.roi,
            pre.resize
        );
        Ok(Classifier {
            pre: FramePreprocessor::new(&pre, size, config.roi, config.max_width, config.max_height),
            model,
            input: Arc::new(input),
            top_k: config.top_k,
            input_replaced: 0,
        })
    }

    /// Computes the sampling taps for `width` x `height` frames of `format` and checks the
    /// geometry, before the first frame. Optional: the first frame of a new geometry does it
    /// itself (in place, without allocating; it only makes that frame a little slower).
    pub fn prepare(&mut self, format: PixelFormat, width: u32, height: u32) -> Result<(), FrameError> {
        self.pre.prepare(format, width, height)
    }

    /// Classifies one frame: validate, fill the input tensor in place, run, top-k. The
    /// runtime's own code allocates nothing here (tract's run does; see the module docs).
    /// A refused frame leaves the classifier as it was.
    pub fn classify(&mut self, frame: &Frame) -> Result<Classification, ClassifyError> {
        let mut timings = Timings::default();
        let start = Instant::now();
        {
            if Arc::get_mut(&mut self.input).is_none() {
                // tract keeps its references only while a run is in progress; after a failed
                // run it may still hold one until the next successful run. Start afresh
                // rather than fail every frame; this allocates, and is counted.
                let s = self.model.input_size() as usize;
                let fresh = Tensor::zero::<f32>(&[1, 3, s, s]).map_err(inference)?;
                self.input = Arc::new(fresh);
                self.input_replaced += 1;
                log::warn!("input tensor still shared after a failed run: replaced");
            }
            let tensor = Arc::get_mut(&mut self.input)
                .ok_or_else(|| InferenceError::new("the input tensor is shared"))?;
            let mut view = tensor.try_as_plain_ram_mut().map_err(inference)?;
            let values = view.as_slice_mut::<f32>().map_err(inference)?;
            self.pre.fill(frame, values)?;
        }
        let preprocessed = Instant::now();
        timings.set(Stage::Preprocess, preprocessed - start);

        let outputs = self.model.run_value(TValue::from_const(self.input.clone())).map_err(inference)?;
        let inferred = Instant::now();
        timings.set(Stage::Inference, inferred - preprocessed);

        let top = {
            let output = outputs.first().ok_or_else(|| InferenceError::new("the network has no output"))?;
            let view = output.try_as_plain_ram().map_err(inference)?;
            top_k(view.as_slice::<f32>().map_err(inference)?, self.top_k)
        };
        drop(outputs);
        timings.set(Stage::Postprocess, inferred.elapsed());
        log::trace!("frame {}x{} {}: best {:?}", frame.width, frame.height, frame.format, top.first());
        Ok(Classification { top, timings })
    }

    /// The model.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// Class names, index order.
    pub fn labels(&self) -> &[String] {
        self.model.labels()
    }

    /// Classes returned per frame.
    pub fn top_k(&self) -> usize {
        self.top_k
    }

    /// The frame preprocessor (taps of the last geometry, limits).
    pub fn preprocessor(&self) -> &FramePreprocessor {
        &self.pre
    }

    /// The input tensor's values as the last classified frame left them (NCHW).
    pub fn input(&self) -> &[f32] {
        self.input.try_as_plain_ram().ok().and_then(|v| v.as_slice::<f32>().ok()).unwrap_or(&[])
    }

    /// Times the input tensor was reallocated because tract still held it (only after a
    /// failed run; 0 in normal operation).
    pub fn input_replacements(&self) -> u64 {
        self.input_replaced
    }
}

fn inference(e: bit_engine::tract_onnx::prelude::TractError) -> InferenceError {
    InferenceError::new(e)
}
