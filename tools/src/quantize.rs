//! Post-training int8 quantization of a float BiT ONNX model into the form tract runs on
//! integer kernels: every convolution but the head becomes
//! `QuantizeLinear -> QLinearConv (i8 weights) -> DequantizeLinear`; GroupNorm, ReLU, the
//! residual adds, pooling and the head stay float between them.
//!
//! Why this form (see shared/reference/tract-0.23-notes.md): tract runs QDQ
//! (`DequantizeLinear -> Conv`) in f32, while `QLinearConv` runs i8 x i8 -> i32 kernels, with
//! the requantization fused into the matmul when the weight scale is per-tensor.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use bit_runtime::Preprocess;
use tract_onnx::pb;

use crate::error::ImportError;
use crate::onnx::{Attr, write_model};
use crate::probe::{Probe, image_tensor, read_proto, values};

/// Ops a float BiT graph (from `bit-tool import`) may contain.
const FLOAT_OPS: [&str; 8] =
    ["Conv", "GroupNormalization", "Relu", "Add", "Pad", "MaxPool", "GlobalAveragePool", "Flatten"];

/// Weight scale granularity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WeightScales {
    /// One scale per kernel: tract fuses the requantization into the matmul.
    PerTensor,
    /// One scale per output channel.
    PerChannel,
}

/// Activation integer type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ActivationType {
    /// uint8: ReLU outputs use the whole range with zero point 0.
    U8,
    /// int8, zero point shifted by -128.
    I8,
}

/// How an activation range is chosen from calibration data.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "method")]
pub enum Calibration {
    /// The observed minimum and maximum.
    MinMax,
    /// The given percentile of values (and its mirror for the lower tail of signed tensors).
    Percentile {
        /// e.g. 99.99.
        percentile: f64,
    },
    /// The clipping range minimizing the quantization mean squared error over the histogram.
    Mse,
}

/// Options of [`quantize_model`].
#[derive(Clone, Debug)]
pub struct QuantizeOptions {
    /// Weight scale granularity.
    pub weights: WeightScales,
    /// Activation integer type.
    pub activations: ActivationType,
    /// Range selection.
    pub calibration: Calibration,
    /// Calibration input size; default: the model contract's.
    pub input_size: Option<u32>,
    /// Use exactly this many calibration images (error if fewer are found).
    pub num_images: Option<usize>,
    /// Threads for the calibration runs.
    pub threads: usize,
    /// Show a progress bar.
    pub progress: bool,
}

impl Default for QuantizeOptions {
    fn default() -> Self {
        QuantizeOptions {
            weights: WeightScales::PerTensor,
            activations: ActivationType::U8,
            calibration: Calibration::Mse,
            input_size: None,
            num_images: None,
            threads: 2,
            progress: false,
        }
    }
}

/// One convolution of the float graph.
#[derive(Clone, Debug)]
pub struct ConvSite {
    /// Node index in the graph.
    pub node: usize,
    /// Node name.
    pub name: String,
    /// Float input tensor name.
    pub input: String,
    /// Weight initializer name.
    pub weight: String,
    /// Output tensor name.
    pub output: String,
}

/// The convolutions to quantize (all but the head) of a float BiT graph, checked.
pub fn conv_sites(path: &Path, proto: &pb::ModelProto) -> Result<Vec<ConvSite>, ImportError> {
    let not_bit = |detail: String| ImportError::Unsupported {
        path: path.to_owned(),
        key: String::new(),
        detail: format!("not a float BiT graph from `bit-tool import`: {detail}"),
    };
    let graph = proto.graph.as_ref().ok_or_else(|| not_bit("no graph".into()))?;
    let inits: BTreeMap<&str, &pb::TensorProto> =
        graph.initializer.iter().map(|t| (t.name.as_str(), t)).collect();
    let producers: BTreeMap<&str, &pb::NodeProto> =
        graph.node.iter().flat_map(|n| n.output.iter().map(move |o| (o.as_str(), n))).collect();
    let mut sites = Vec::new();
    for (i, node) in graph.node.iter().enumerate() {
        if !FLOAT_OPS.contains(&node.op_type.as_str()) {
            return Err(not_bit(format!("op {} at node '{}'", node.op_type, node.name)));
        }
        if node.op_type != "Conv" {
            continue;
        }
        let input = node.input.first().cloned().unwrap_or_default();
        // The head reads the pooled features: it stays float (2048 x K MACs, negligible).
        if producers.get(input.as_str()).is_some_and(|p| p.op_type == "GlobalAveragePool") {
            continue;
        }
        let weight = node.input.get(1).cloned().unwrap_or_default();
        let w = inits
            .get(weight.as_str())
            .ok_or_else(|| not_bit(format!("conv '{}' has no constant weight", node.name)))?;
        if w.dims.len() != 4 || w.data_type != pb::tensor_proto::DataType::Float as i32 {
            return Err(not_bit(format!("conv '{}' weight is not a 4-D float kernel", node.name)));
        }
        if node.input.len() > 2 {
            return Err(not_bit(format!("conv '{}' has a bias (BiT convolutions have none)", node.name)));
        }
        sites.push(ConvSite {
            node: i,
            name: node.name.clone(),
            input,
            weight,
            output: node.output[0].clone(),
        });
    }
    if sites.is_empty() {
        return Err(not_bit("no convolutions".into()));
    }
    Ok(sites)
}

/// Image files and raw camera frames of a calibration or evaluation directory, sorted.
pub fn list_images(dir: &Path) -> Result<Vec<PathBuf>, ImportError> {
    let rd = std::fs::read_dir(dir).map_err(|source| ImportError::Io { path: dir.to_owned(), source })?;
    let mut files: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| bit_runtime::frame::is_frame_file(p))
        .collect();
    files.sort();
    Ok(files)
}

/// A raw camera frame file's format and size (see [`bit_runtime::frame::raw_frame_kind`]).
pub use bit_runtime::frame::raw_frame_kind;

/// Preprocesses every image of `files` exactly as the runtime does.
pub fn load_inputs(
    files: &[PathBuf],
    pre: &Preprocess,
    size: u32,
    progress: bool,
    what: &str,
) -> Result<Vec<Vec<f32>>, ImportError> {
    let bar = progress_bar(progress, files.len(), &format!("loading {what}"));
    let mut inputs = Vec::with_capacity(files.len());
    for f in files {
        inputs.push(load_input(f, pre, size)?);
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(inputs)
}

/// Preprocesses one image file or raw frame exactly as the runtime does.
pub fn load_input(f: &Path, pre: &Preprocess, size: u32) -> Result<Vec<f32>, ImportError> {
    if let Some((format, w, h)) = raw_frame_kind(f) {
        // Raw frames go through the runtime's own frame path: what the device will do.
        let bytes = std::fs::read(f).map_err(|source| ImportError::Io { path: f.to_owned(), source })?;
        let mut pre = bit_runtime::FramePreprocessor::new(pre, size, None, w, h);
        let mut out = vec![0f32; 3 * (size as usize).pow(2)];
        pre.fill(&bit_runtime::Frame::new(&bytes, format, w, h), &mut out).map_err(|e| {
            ImportError::Corrupt {
                path: f.to_owned(),
                key: String::new(),
                detail: format!("bad {format} frame: {e}"),
            }
        })?;
        return Ok(out);
    }
    let img = bit_runtime::load_image(f).map_err(|e| ImportError::Corrupt {
        path: f.to_owned(),
        key: String::new(),
        detail: format!("unreadable image: {e}"),
    })?;
    Ok(image_tensor(&img, pre, size))
}

pub(crate) fn progress_bar(show: bool, len: usize, msg: &str) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg:>24} [{bar:30}] {pos}/{len} ({eta})")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_message(msg.to_owned());
    bar
}

/// Observed statistics of one tensor over the calibration set.
#[derive(Clone, Debug)]
struct Stats {
    min: f32,
    max: f32,
    hist: Vec<u64>,
}

const BINS: usize = 2048;

impl Stats {
    fn range(&self) -> (f32, f32) {
        (self.min.min(0.0), self.max.max(0.0))
    }

    fn bin_of(&self, v: f32) -> usize {
        let (lo, hi) = self.range();
        let w = (hi - lo).max(f32::MIN_POSITIVE);
        (((v - lo) / w * BINS as f32) as usize).min(BINS - 1)
    }

    fn bin_center(&self, b: usize) -> f32 {
        let (lo, hi) = self.range();
        lo + (b as f32 + 0.5) * (hi - lo) / BINS as f32
    }

    fn quantile(&self, q: f64) -> f32 {
        let total: u64 = self.hist.iter().sum();
        let target = (q * total as f64).ceil() as u64;
        let mut seen = 0;
        for (b, &n) in self.hist.iter().enumerate() {
            seen += n;
            if seen >= target.max(1) {
                return self.bin_center(b);
            }
        }
        self.range().1
    }

    /// The clipping range under `method`.
    fn clip(&self, method: Calibration) -> (f32, f32) {
        let (lo, hi) = self.range();
        match method {
            Calibration::MinMax => (lo, hi),
            Calibration::Percentile { percentile } => {
                let p = percentile / 100.0;
                let top = self.quantile(p).min(hi).max(0.0);
                let bottom = if lo < 0.0 { self.quantile(1.0 - p).max(lo).min(0.0) } else { 0.0 };
                (bottom, top)
            }
            Calibration::Mse => {
                let mut best = (f64::INFINITY, (lo, hi));
                for step in 0..=80 {
                    let f = 1.0 - step as f32 * 0.01;
                    let (clo, chi) = (lo * f, hi * f);
                    let (scale, zp) = qparams(clo, chi, ActivationType::U8);
                    let err: f64 = self
                        .hist
                        .iter()
                        .enumerate()
                        .filter(|(_, n)| **n > 0)
                        .map(|(b, &n)| {
                            let v = self.bin_center(b);
                            let q = ((v / scale).round_ties_even() + zp as f32).clamp(0.0, 255.0);
                            let d = (q - zp as f32) * scale - v;
                            n as f64 * (d as f64).powi(2)
                        })
                        .sum();
                    if err < best.0 {
                        best = (err, (clo, chi));
                    }
                }
                best.1
            }
        }
    }
}

/// Scale and zero point covering `[lo, hi]` (which must contain 0) with 256 levels.
pub fn qparams(lo: f32, hi: f32, act: ActivationType) -> (f32, i32) {
    let (lo, hi) = (lo.min(0.0), hi.max(0.0));
    let scale = ((hi - lo) / 255.0).max(1e-8);
    let zp = (-lo / scale).round().clamp(0.0, 255.0) as i32;
    match act {
        ActivationType::U8 => (scale, zp),
        ActivationType::I8 => (scale, zp - 128),
    }
}

/// Runs the calibration images through the float model and returns the clipping range of
/// every tensor named in `names`. Each image is preprocessed when its turn comes (once per
/// pass) and dropped after it: memory does not grow with the number of images, only the
/// per-tensor statistics (a range and a histogram of `BINS` counts) are kept.
fn calibrate(
    path: &Path,
    proto: &pb::ModelProto,
    names: &[String],
    files: &[PathBuf],
    pre: &Preprocess,
    size: u32,
    options: &QuantizeOptions,
) -> Result<BTreeMap<String, (f32, f32)>, ImportError> {
    let mut probe = Probe::new(path, proto, names, size, options.threads)?;
    // tract's error chain stays a chain (the source), printed once by `{:#}`.
    let run_err =
        |e: tract_onnx::prelude::TractError| ImportError::Tract { path: path.to_owned(), source: e.into() };
    let mut stats: Vec<Stats> = names
        .iter()
        .map(|_| Stats { min: f32::INFINITY, max: f32::NEG_INFINITY, hist: vec![0; BINS] })
        .collect();
    let bar = progress_bar(options.progress, files.len(), "calibrating: ranges");
    for f in files {
        let (_, outs) = probe.run(&load_input(f, pre, size)?).map_err(run_err)?;
        for (s, t) in stats.iter_mut().zip(&outs) {
            for &v in values(t).iter() {
                s.min = s.min.min(v);
                s.max = s.max.max(v);
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    if options.calibration != Calibration::MinMax {
        let bar = progress_bar(options.progress, files.len(), "calibrating: histograms");
        for f in files {
            let (_, outs) = probe.run(&load_input(f, pre, size)?).map_err(run_err)?;
            for (s, t) in stats.iter_mut().zip(&outs) {
                for &v in values(t).iter() {
                    let b = s.bin_of(v);
                    s.hist[b] += 1;
                }
            }
            bar.inc(1);
        }
        bar.finish_and_clear();
    }
    Ok(names.iter().cloned().zip(stats.iter().map(|s| s.clip(options.calibration))).collect())
}

/// What [`quantize_model`] did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct QuantizeReport {
    /// Convolutions quantized.
    pub convs: usize,
    /// Calibration images used.
    pub images: usize,
    /// Input size used for calibration.
    pub input_size: u32,
    /// Output file size in bytes.
    pub bytes: u64,
}

/// Quantizes the float model at `float_path`, calibrating on the images in `calib_dir`, and
/// writes the int8 model to `out` atomically.
pub fn quantize_model(
    float_path: &Path,
    calib_dir: &Path,
    out: &Path,
    options: &QuantizeOptions,
) -> Result<QuantizeReport, ImportError> {
    let files = list_images(calib_dir)?;
    quantize_model_files(float_path, calib_dir, files, out, options)
}

/// [`quantize_model`] calibrating on the given files (`origin` names them in errors: the
/// directory or data set they come from).
pub fn quantize_model_files(
    float_path: &Path,
    origin: &Path,
    files: Vec<PathBuf>,
    out: &Path,
    options: &QuantizeOptions,
) -> Result<QuantizeReport, ImportError> {
    let proto = read_proto(float_path)?;
    let sites = conv_sites(float_path, &proto)?;
    let (pre, size, files) = calibration_files(float_path, &proto, origin, files, options)?;

    // Quantization points: every conv input and output, each once.
    let mut names: Vec<String> = Vec::new();
    let mut seen = BTreeSet::new();
    for s in &sites {
        for n in [&s.input, &s.output] {
            if seen.insert(n.clone()) {
                names.push(n.clone());
            }
        }
    }
    let ranges = calibrate(float_path, &proto, &names, &files, &pre, size, options)?;
    let quantized = rewrite(&proto, &sites, &ranges, options, files.len());
    write_model(&quantized, out)?;
    let bytes = std::fs::metadata(out).map(|m| m.len()).unwrap_or(0);
    Ok(QuantizeReport { convs: sites.len(), images: files.len(), input_size: size, bytes })
}

/// The calibration images of a quantization run, preprocessed.
#[derive(Debug)]
pub struct CalibrationSet {
    /// The float model's contract, which calibration follows (and the int8 model keeps).
    pub preprocess: Preprocess,
    /// Input side.
    pub size: u32,
    /// The images, in order.
    pub files: Vec<PathBuf>,
    /// Their input tensors: the model's contract applied through the runtime's `Resizer`
    /// (resize mode, filter, normalization), exactly what a device feeds the network.
    pub inputs: Vec<Vec<f32>>,
}

/// Lists and preprocesses the calibration images of `calib_dir` for the float model at
/// `float_path` under its own contract.
pub fn calibration_inputs(
    float_path: &Path,
    calib_dir: &Path,
    options: &QuantizeOptions,
) -> Result<CalibrationSet, ImportError> {
    calibration_set(float_path, &read_proto(float_path)?, calib_dir, list_images(calib_dir)?, options)
}

fn calibration_set(
    float_path: &Path,
    proto: &pb::ModelProto,
    calib_dir: &Path,
    files: Vec<PathBuf>,
    options: &QuantizeOptions,
) -> Result<CalibrationSet, ImportError> {
    let (preprocess, size, files) = calibration_files(float_path, proto, calib_dir, files, options)?;
    let inputs = load_inputs(&files, &preprocess, size, options.progress, "calibration images")?;
    Ok(CalibrationSet { preprocess, size, files, inputs })
}

/// The contract, input side and image files (at most `num_images`) a calibration uses; the
/// files are not opened here: a bad one is reported when calibration reaches it.
fn calibration_files(
    float_path: &Path,
    proto: &pb::ModelProto,
    calib_dir: &Path,
    mut files: Vec<PathBuf>,
    options: &QuantizeOptions,
) -> Result<(Preprocess, u32, Vec<PathBuf>), ImportError> {
    let info = bit_runtime::ModelInfo::from_metadata(
        float_path,
        proto.metadata_props.iter().map(|e| (e.key.as_str(), e.value.as_str())),
    )
    .map_err(|e| ImportError::Unsupported {
        path: float_path.to_owned(),
        key: String::new(),
        detail: e.to_string(),
    })?;
    let size = options.input_size.unwrap_or(info.preprocess.input_size);
    let calib_err =
        |detail: String| ImportError::Unsupported { path: calib_dir.to_owned(), key: String::new(), detail };
    if files.is_empty() {
        return Err(calib_err(
            "no calibration images (png, jpg, bmp, ppm) or raw frames (<name>.<W>x<H>.yuyv|uyvy|nv12|rgb|bgr|grey|mjpg) in the directory".into(),
        ));
    }
    if let Some(n) = options.num_images {
        if files.len() < n {
            return Err(calib_err(format!("{n} calibration images requested, {} found", files.len())));
        }
        files.truncate(n);
    }
    Ok((info.preprocess, size, files))
}

/// Metadata key describing the quantization (JSON).
pub const META_QUANTIZATION: &str = "bit.quantization";

/// Rewrites the float graph with quantized convolutions.
fn rewrite(
    proto: &pb::ModelProto,
    sites: &[ConvSite],
    ranges: &BTreeMap<String, (f32, f32)>,
    options: &QuantizeOptions,
    images: usize,
) -> pb::ModelProto {
    let mut proto = proto.clone();
    let graph = proto.graph.as_mut().expect("checked");
    let act_type = match options.activations {
        ActivationType::U8 => pb::tensor_proto::DataType::Uint8,
        ActivationType::I8 => pb::tensor_proto::DataType::Int8,
    };
    let mut q = Rewriter {
        b: crate::onnx::GraphBuilder::default(),
        qparams: BTreeMap::new(),
        ranges,
        act: options.activations,
        act_type,
        nodes: Vec::new(),
        quantized: BTreeMap::new(),
    };
    let by_node: BTreeMap<usize, &ConvSite> = sites.iter().map(|s| (s.node, s)).collect();
    let quantized_inputs: BTreeSet<&str> = sites.iter().map(|s| s.input.as_str()).collect();
    let mut weights: BTreeSet<String> = sites.iter().map(|s| s.weight.clone()).collect();
    for node in graph.node.iter().filter(|n| is_head(graph, n)) {
        weights.extend(node.input[1..].iter().cloned());
    }
    let float_inits: BTreeMap<&str, &pb::TensorProto> =
        graph.initializer.iter().map(|t| (t.name.as_str(), t)).collect();
    for input in &graph.input {
        if quantized_inputs.contains(input.name.as_str()) {
            q.quantize(&input.name);
        }
    }
    let fused = fusable_gn_relu(graph, sites, options.activations);
    for (i, node) in graph.node.iter().enumerate() {
        match (by_node.get(&i), fused.get(&i)) {
            (Some(site), _) => q.conv(site, node, float_inits[site.weight.as_str()], options.weights),
            (None, Some(Fused::GroupNorm(point))) => q.fused_group_norm(node, point, &float_inits),
            (None, Some(Fused::Relu(point))) => q.fused_relu_quantize(node, point),
            (None, None) if is_head(graph, node) => q.head(node, &float_inits),
            (None, None) => q.nodes.push(node.clone()),
        }
        for out in &node.output {
            if quantized_inputs.contains(out.as_str()) {
                q.quantize(out);
            }
        }
    }
    let nodes = std::mem::take(&mut q.nodes);
    let new_inits = q.b.take_initializers();
    graph.node = nodes;
    graph.initializer.retain(|t| !weights.contains(&t.name));
    graph.initializer.extend(new_inits);
    proto.metadata_props.retain(|e| e.key != META_QUANTIZATION);
    proto.metadata_props.push(pb::StringStringEntryProto {
        key: META_QUANTIZATION.into(),
        value: serde_json::json!({
            "weights": options.weights,
            "activations": options.activations,
            "calibration": options.calibration,
            "calibration_images": images,
            "form": "QLinearConv between quantized inputs (GroupNorm affine + Clip + Cast where fusable, else QuantizeLinear) and DequantizeLinear; GroupNorm, Add, pooling in float; head with per-channel int8 weights dequantized at load, float logits",
        })
        .to_string(),
    });
    proto
}

/// The values of an f32 initializer stored as raw little-endian bytes (as `import` writes).
fn floats(t: &pb::TensorProto) -> Vec<f32> {
    t.raw_data.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

/// A Conv's integer-list attributes (kernel_shape, strides, pads, dilations), to carry over.
fn int_list_attrs(node: &pb::NodeProto) -> Vec<(&str, Attr)> {
    node.attribute
        .iter()
        .filter(|a| !a.ints.is_empty())
        .map(|a| (a.name.as_str(), Attr::Ints(a.ints.clone())))
        .collect()
}

/// Whether `node` is the classifier head: a Conv reading the global average pool.
fn is_head(graph: &pb::GraphProto, node: &pb::NodeProto) -> bool {
    node.op_type == "Conv"
        && graph
            .node
            .iter()
            .any(|p| p.op_type == "GlobalAveragePool" && p.output.first() == node.input.first())
}

/// Classes per head chunk: a chunk's dequantized f32 kernel (`classes x features x 4` bytes)
/// must stay under tract's 4 MiB constant-folding budget so that it is dequantized once at
/// load, not on every run.
fn head_chunk_classes(features: usize) -> usize {
    ((4 << 20) / (4 * features)).saturating_sub(1).max(1)
}

/// A node taking part in a fused GroupNorm -> ReLU -> quantize.
enum Fused {
    /// The GroupNormalization whose affine absorbs the quantization scale; its ReLU output
    /// is this quantization point.
    GroupNorm(String),
    /// The ReLU replaced by a clip to [0, 255] and a cast to u8.
    Relu(String),
}

/// Finds `GroupNormalization -> Relu` pairs whose ReLU output is a u8 quantization point read
/// only by quantized convolutions. Quantizing such a point is
/// `clamp(floor(relu(gn * gamma + beta) / s + 0.5), 0, 255)` with zero point 0, which equals
/// `cast_u8(clip(gn * (gamma / s) + (beta / s + 0.5), 0, 255))`: the scale folds into the
/// GroupNorm affine and the ReLU into the clip, so no standalone QuantizeLinear (a scalar
/// loop in tract) remains. Ties round up instead of to even: a difference of at most one
/// step on exact ties, immaterial next to the quantization error itself.
fn fusable_gn_relu(
    graph: &pb::GraphProto,
    sites: &[ConvSite],
    act: ActivationType,
) -> BTreeMap<usize, Fused> {
    let mut fused = BTreeMap::new();
    if act != ActivationType::U8 {
        return fused;
    }
    let conv_nodes: BTreeSet<usize> = sites.iter().map(|s| s.node).collect();
    let consumers = |tensor: &str| -> Vec<usize> {
        graph
            .node
            .iter()
            .enumerate()
            .filter(|(_, n)| n.input.iter().any(|i| i == tensor))
            .map(|(i, _)| i)
            .collect()
    };
    let outputs: BTreeSet<&str> = graph.output.iter().map(|o| o.name.as_str()).collect();
    for (r, relu) in graph.node.iter().enumerate() {
        if relu.op_type != "Relu" {
            continue;
        }
        let point = &relu.output[0];
        let readers = consumers(point);
        if readers.is_empty()
            || !readers.iter().all(|i| conv_nodes.contains(i))
            || outputs.contains(point.as_str())
        {
            continue;
        }
        let Some(g) = graph.node.iter().position(|n| n.output.first() == relu.input.first()) else {
            continue;
        };
        let gn = &graph.node[g];
        if gn.op_type != "GroupNormalization"
            || consumers(&gn.output[0]) != [r]
            || outputs.contains(gn.output[0].as_str())
        {
            continue;
        }
        fused.insert(g, Fused::GroupNorm(point.clone()));
        fused.insert(r, Fused::Relu(point.clone()));
    }
    fused
}

/// Emits the quantized graph node by node.
struct Rewriter<'a> {
    b: crate::onnx::GraphBuilder,
    /// tensor -> (scale, zero point) initializer names.
    qparams: BTreeMap<String, (String, String)>,
    ranges: &'a BTreeMap<String, (f32, f32)>,
    act: ActivationType,
    act_type: pb::tensor_proto::DataType,
    nodes: Vec<pb::NodeProto>,
    /// float tensor -> its quantized tensor.
    quantized: BTreeMap<String, String>,
}

impl Rewriter<'_> {
    fn qparams(&mut self, tensor: &str) -> (String, String) {
        if let Some(names) = self.qparams.get(tensor) {
            return names.clone();
        }
        let (lo, hi) = self.ranges[tensor];
        let (scale, zp) = qparams(lo, hi, self.act);
        let s = self.b.f32_const(&format!("{tensor}/q/scale"), &[], &[scale]);
        let z = self.b.raw_const(&format!("{tensor}/q/zero_point"), &[], self.act_type, vec![zp as u8]);
        self.qparams.insert(tensor.to_owned(), (s.clone(), z.clone()));
        (s, z)
    }

    /// `QuantizeLinear` of a float tensor, once.
    fn quantize(&mut self, tensor: &str) {
        if self.quantized.contains_key(tensor) {
            return;
        }
        let (s, z) = self.qparams(tensor);
        let q = self.b.node("QuantizeLinear", &format!("{tensor}/q"), &[tensor, &s, &z], vec![]);
        self.nodes.extend(self.b.take_nodes());
        self.quantized.insert(tensor.to_owned(), q);
    }

    /// The GroupNorm of a fused pair, with its affine scaled into the u8 domain of `point`.
    fn fused_group_norm(
        &mut self,
        node: &pb::NodeProto,
        point: &str,
        inits: &BTreeMap<&str, &pb::TensorProto>,
    ) {
        let (lo, hi) = self.ranges[point];
        let (scale, zp) = qparams(lo, hi, self.act);
        debug_assert_eq!(zp, 0, "ReLU outputs have zero point 0 in u8");
        let gamma: Vec<f32> = floats(inits[node.input[1].as_str()]).iter().map(|g| g / scale).collect();
        let beta: Vec<f32> =
            floats(inits[node.input[2].as_str()]).iter().map(|b| b / scale + zp as f32 + 0.5).collect();
        let g = self.b.f32_const(&format!("{}/q/scale", node.name), &[gamma.len()], &gamma);
        let b = self.b.f32_const(&format!("{}/q/bias", node.name), &[beta.len()], &beta);
        let mut gn = node.clone();
        gn.input[1] = g;
        gn.input[2] = b;
        self.nodes.push(gn);
        // The float scale/zero point are still needed by the convolutions reading `point`.
        self.qparams(point);
    }

    /// The ReLU of a fused pair: clip to the u8 range and cast (truncation of the +0.5-shifted
    /// value is rounding).
    fn fused_relu_quantize(&mut self, node: &pb::NodeProto, point: &str) {
        let lo = self.b.f32_const(&format!("{}/q/min", node.name), &[], &[0.0]);
        let hi = self.b.f32_const(&format!("{}/q/max", node.name), &[], &[255.0]);
        let clipped =
            self.b.node("Clip", &format!("{}/q/clip", node.name), &[&node.input[0], &lo, &hi], vec![]);
        let q = self.b.node(
            "Cast",
            &format!("{point}/q"),
            &[&clipped],
            vec![("to", Attr::Int(pb::tensor_proto::DataType::Uint8 as i64))],
        );
        self.nodes.extend(self.b.take_nodes());
        self.quantized.insert(point.to_owned(), q);
    }

    /// The head with int8 weights (per output channel) stored, dequantized to float when
    /// tract loads the model: the file shrinks by 3/4 of the head, the logits stay float.
    /// The head is cut into chunks of classes so that each dequantized kernel is constant-
    /// folded at load, and the chunks' logits are concatenated.
    fn head(&mut self, node: &pb::NodeProto, inits: &BTreeMap<&str, &pb::TensorProto>) {
        let w = inits[node.input[1].as_str()];
        let dims: Vec<usize> = w.dims.iter().map(|&d| d as usize).collect();
        let (classes, per) = (dims[0], dims[1..].iter().product::<usize>());
        let wdata: Vec<f32> = floats(w);
        let bias: Option<Vec<f32>> = node.input.get(2).map(|b| floats(inits[b.as_str()]));
        let chunk = head_chunk_classes(per);
        let mut parts = Vec::new();
        for (i, start) in (0..classes).step_by(chunk).enumerate() {
            let end = (start + chunk).min(classes);
            let k = end - start;
            let (q, scales) = quantize_weights(&wdata[start * per..end * per], k, WeightScales::PerChannel);
            let name = format!("{}/part{i}", node.name);
            let mut pdims = dims.clone();
            pdims[0] = k;
            let b = &mut self.b;
            let wq = b.raw_const(
                &format!("{name}/weight_q"),
                &pdims,
                pb::tensor_proto::DataType::Int8,
                q.iter().map(|&v| v as u8).collect(),
            );
            let ws = b.f32_const(&format!("{name}/weight_scale"), &[k], &scales);
            let wz = b.raw_const(
                &format!("{name}/weight_zero_point"),
                &[k],
                pb::tensor_proto::DataType::Int8,
                vec![0; k],
            );
            let wf = b.node(
                "DequantizeLinear",
                &format!("{name}/weight"),
                &[&wq, &ws, &wz],
                vec![("axis", Attr::Int(0))],
            );
            let mut inputs = vec![node.input[0].clone(), wf];
            if let Some(bias) = &bias {
                inputs.push(b.f32_const(&format!("{name}/bias"), &[k], &bias[start..end]));
            }
            let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
            parts.push(b.node("Conv", &name, &inputs, int_list_attrs(node)));
        }
        let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
        self.b.node_with_output(
            "Concat",
            &format!("{}/concat", node.name),
            &parts,
            vec![("axis", Attr::Int(1))],
            &node.output[0],
        );
        self.nodes.extend(self.b.take_nodes());
    }

    /// `QLinearConv` + `DequantizeLinear` in place of a float `Conv`.
    fn conv(&mut self, site: &ConvSite, node: &pb::NodeProto, w: &pb::TensorProto, scales: WeightScales) {
        let wdata: Vec<f32> = floats(w);
        let dims: Vec<usize> = w.dims.iter().map(|&d| d as usize).collect();
        let (wq, wscale) = quantize_weights(&wdata, dims[0], scales);
        let b = &mut self.b;
        let wq_name = b.raw_const(
            &format!("{}/weight_q", site.name),
            &dims,
            pb::tensor_proto::DataType::Int8,
            wq.iter().map(|&v| v as u8).collect(),
        );
        let scale_dims: &[usize] = if wscale.len() == 1 { &[] } else { &[wscale.len()] };
        let ws_name = b.f32_const(&format!("{}/weight_scale", site.name), scale_dims, &wscale);
        let wz_name = b.raw_const(
            &format!("{}/weight_zero_point", site.name),
            scale_dims,
            pb::tensor_proto::DataType::Int8,
            vec![0u8; wscale.len()],
        );
        let (xs, xz) = self.qparams(&site.input);
        let (ys, yz) = self.qparams(&site.output);
        let attrs = int_list_attrs(node);
        let xq = self.quantized[&site.input].clone();
        let b = &mut self.b;
        let yq = b.node(
            "QLinearConv",
            &format!("{}/qconv", site.name),
            &[&xq, &xs, &xz, &wq_name, &ws_name, &wz_name, &ys, &yz],
            attrs,
        );
        // Dequantized under the original output name: downstream nodes are untouched.
        b.node_with_output(
            "DequantizeLinear",
            &format!("{}/dq", site.name),
            &[&yq, &ys, &yz],
            vec![],
            &site.output,
        );
        self.nodes.extend(b.take_nodes());
    }
}

/// Symmetric int8 weights in [-127, 127]: one scale, or one per output channel.
pub fn quantize_weights(w: &[f32], cout: usize, scales: WeightScales) -> (Vec<i8>, Vec<f32>) {
    let per = w.len() / cout;
    let absmax = |s: &[f32]| s.iter().fold(0f32, |m, v| m.max(v.abs()));
    let scale_of = |m: f32| if m > 0.0 { m / 127.0 } else { 1.0 };
    let channel_scales: Vec<f32> = match scales {
        WeightScales::PerTensor => vec![scale_of(absmax(w))],
        WeightScales::PerChannel => w.chunks(per).map(|c| scale_of(absmax(c))).collect(),
    };
    let q = w
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let s = channel_scales[if channel_scales.len() == 1 { 0 } else { i / per }];
            (v / s).round_ties_even().clamp(-127.0, 127.0) as i8
        })
        .collect();
    (q, channel_scales)
}
