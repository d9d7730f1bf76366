//! `bit-tool eval`: how far an int8 model is from its float original on held-out images.

use std::path::Path;

use serde::Serialize;

use crate::error::ImportError;
use crate::probe::{Probe, read_proto, values};
use crate::quantize::{conv_sites, list_images, load_inputs};

/// SQNR of one layer's output over the evaluation set.
#[derive(Clone, Debug, Serialize)]
pub struct LayerSqnr {
    /// The float tensor name (a convolution output).
    pub tensor: String,
    /// `10 log10(sum signal^2 / sum (signal - quantized)^2)` over all images.
    pub sqnr_db: f64,
}

/// Fidelity of a quantized model against its float original.
#[derive(Clone, Debug, Serialize)]
pub struct EvalReport {
    /// Held-out images.
    pub images: usize,
    /// Input size.
    pub input_size: u32,
    /// Fraction of images with the same top-1 class.
    pub top1_agreement: f64,
    /// Mean |top5(float) ∩ top5(int8)| / 5.
    pub top5_overlap: f64,
    /// Mean cosine similarity of the logit vectors.
    pub cosine: f64,
    /// Mean per-image logit SQNR in dB.
    pub logit_sqnr_db: f64,
    /// Accuracy of (float, int8) when every file name starts with `<label>_`.
    pub accuracy: Option<(f64, f64)>,
    /// Per-layer SQNR, network order.
    pub layers: Vec<LayerSqnr>,
}

fn sqnr_db(signal: f64, noise: f64) -> f64 {
    if noise == 0.0 { f64::INFINITY } else { 10.0 * (signal / noise).log10() }
}

/// Runs both models on every image of `dir` and compares logits and layer outputs.
pub fn evaluate(
    float_path: &Path,
    quant_path: &Path,
    dir: &Path,
    input_size: Option<u32>,
    threads: usize,
    progress: bool,
) -> Result<EvalReport, ImportError> {
    let fproto = read_proto(float_path)?;
    let qproto = read_proto(quant_path)?;
    let sites = conv_sites(float_path, &fproto)?;
    let info = bit_runtime::ModelInfo::from_metadata(
        float_path,
        fproto.metadata_props.iter().map(|e| (e.key.as_str(), e.value.as_str())),
    )
    .map_err(|e| ImportError::Unsupported {
        path: float_path.to_owned(),
        key: String::new(),
        detail: e.to_string(),
    })?;
    let size = input_size.unwrap_or(info.preprocess.input_size);
    let files = list_images(dir)?;
    if files.is_empty() {
        return Err(ImportError::Unsupported {
            path: dir.to_owned(),
            key: String::new(),
            detail: "no images (png, jpg, bmp, ppm) in the directory".into(),
        });
    }
    let inputs = load_inputs(&files, &info.preprocess, size, progress, "held-out images")?;
    let names: Vec<String> = sites.iter().map(|s| s.output.clone()).collect();
    let mut fprobe = Probe::new(float_path, &fproto, &names, size, threads)?;
    let mut qprobe = Probe::new(quant_path, &qproto, &names, size, threads)?;
    let run_err = |p: &Path, e: bit_engine::tract_onnx::prelude::TractError| ImportError::Tract {
        path: p.to_owned(),
        source: e.into(),
    };

    let labels = info.labels.unwrap_or_default();
    let truth: Option<Vec<usize>> = files
        .iter()
        .map(|f| {
            let name = f.file_name()?.to_str()?;
            labels.iter().position(|l| name.starts_with(&format!("{l}_")))
        })
        .collect();

    let mut layer_acc = vec![(0f64, 0f64); names.len()];
    let (mut top1, mut top5, mut cos, mut sq) = (0usize, 0f64, 0f64, 0f64);
    let (mut correct_f, mut correct_q) = (0usize, 0usize);
    let bar = if progress {
        indicatif::ProgressBar::new(files.len() as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    for (i, input) in inputs.iter().enumerate() {
        let (fl, fo) = fprobe.run(input).map_err(|e| run_err(float_path, e))?;
        let (ql, qo) = qprobe.run(input).map_err(|e| run_err(quant_path, e))?;
        for (acc, (f, q)) in layer_acc.iter_mut().zip(fo.iter().zip(&qo)) {
            for (a, b) in values(f).iter().zip(values(q).iter()) {
                acc.0 += (*a as f64).powi(2);
                acc.1 += (*a as f64 - *b as f64).powi(2);
            }
        }
        let tf = bit_runtime::top_k(&fl, 5);
        let tq = bit_runtime::top_k(&ql, 5);
        top1 += usize::from(tf[0].class == tq[0].class);
        top5 += tf.iter().filter(|p| tq.iter().any(|q| q.class == p.class)).count() as f64 / tf.len() as f64;
        let dot: f64 = fl.iter().zip(&ql).map(|(a, b)| *a as f64 * *b as f64).sum();
        let nf: f64 = fl.iter().map(|a| (*a as f64).powi(2)).sum();
        let nq: f64 = ql.iter().map(|a| (*a as f64).powi(2)).sum();
        cos += dot / (nf.sqrt() * nq.sqrt()).max(f64::MIN_POSITIVE);
        let noise: f64 = fl.iter().zip(&ql).map(|(a, b)| (*a as f64 - *b as f64).powi(2)).sum();
        sq += sqnr_db(nf, noise).min(200.0);
        if let Some(t) = &truth {
            correct_f += usize::from(tf[0].class == t[i]);
            correct_q += usize::from(tq[0].class == t[i]);
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    let n = inputs.len() as f64;
    Ok(EvalReport {
        images: inputs.len(),
        input_size: size,
        top1_agreement: top1 as f64 / n,
        top5_overlap: top5 / n,
        cosine: cos / n,
        logit_sqnr_db: sq / n,
        accuracy: truth.map(|_| (correct_f as f64 / n, correct_q as f64 / n)),
        layers: names
            .into_iter()
            .zip(layer_acc)
            .map(|(tensor, (s, e))| LayerSqnr { tensor, sqnr_db: sqnr_db(s, e) })
            .collect(),
    })
}

impl EvalReport {
    /// A human-readable table: the summary, then the `worst` layers by SQNR.
    pub fn table(&self, worst: usize) -> String {
        let mut s = format!(
            "| images | top-1 agreement | top-5 overlap | cosine | logit SQNR dB |{}\n|---|---|---|---|---|{}\n| {} | {:.1}% | {:.1}% | {:.5} | {:.1} |{}\n",
            if self.accuracy.is_some() { " accuracy float / int8 |" } else { "" },
            if self.accuracy.is_some() { "---|" } else { "" },
            self.images,
            100.0 * self.top1_agreement,
            100.0 * self.top5_overlap,
            self.cosine,
            self.logit_sqnr_db,
            self.accuracy
                .map(|(f, q)| format!(" {:.1}% / {:.1}% |", 100.0 * f, 100.0 * q))
                .unwrap_or_default(),
        );
        let mut layers: Vec<&LayerSqnr> = self.layers.iter().collect();
        layers.sort_by(|a, b| a.sqnr_db.total_cmp(&b.sqnr_db));
        s += &format!(
            "\nper-layer SQNR (conv outputs), {} lowest of {}:\n| layer | SQNR dB |\n|---|---|\n",
            worst.min(layers.len()),
            layers.len()
        );
        for l in layers.iter().take(worst) {
            s += &format!("| {} | {:.1} |\n", l.tensor, l.sqnr_db);
        }
        s
    }
}
