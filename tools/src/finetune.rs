//! `bit-tool finetune`: a new head for the user's own classes, trained on the CPU from a
//! folder of labelled images (one sub-folder per class), on top of a float BiT model.
//!
//! 1. The images of each class are split (seeded) into training and held-out images.
//! 2. Every training image, plus augmented copies (horizontal flip, random crops of 50-100%
//!    of the area with aspect 3:4 to 4:3), goes through the model's own preprocessing
//!    contract and the backbone; the pre-logit features (the pooled output feeding the head,
//!    2048 values for R50x1) are read with [`crate::probe::Probe`].
//! 3. A linear head is trained on them: multinomial logistic regression with L2 weight decay,
//!    on features standardized per dimension, by full-batch gradient descent with Nesterov
//!    momentum and a step of 1/L (L, the gradient's Lipschitz constant, from a power
//!    iteration), so no learning rate needs tuning. The standardization is folded into the
//!    head's weights and bias afterwards.
//! 4. The new model is the input model with the head's initializers, the output shape, the
//!    labels and the architecture metadata replaced; `quantize` treats it as any model.

use std::path::{Path, PathBuf};
use std::time::Instant;

use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};
use tract_onnx::pb;

use crate::error::ImportError;
use crate::onnx::write_model;
use crate::probe::{Probe, image_tensor, read_proto};
use crate::quantize::list_images;

/// How to train.
#[derive(Clone, Debug)]
pub struct FinetuneOptions {
    /// Fraction of each class's images held out for evaluation (at least one per class
    /// when the fraction is above zero).
    pub holdout: f64,
    /// Augmented copies per training image, besides the image itself (the first is its
    /// mirror image, the others random crops, half of them mirrored).
    pub augment: usize,
    /// Gradient steps.
    pub steps: usize,
    /// L2 penalty on the head's weights (on standardized features).
    pub weight_decay: f32,
    /// Seeds the split and the augmentation.
    pub seed: u64,
    /// Input side; default: the model contract's.
    pub input_size: Option<u32>,
    /// Threads for the backbone runs.
    pub threads: usize,
    /// Show a progress bar.
    pub progress: bool,
}

impl Default for FinetuneOptions {
    fn default() -> Self {
        FinetuneOptions {
            holdout: 0.3,
            augment: 4,
            steps: 500,
            weight_decay: 1e-3,
            seed: 0,
            input_size: None,
            threads: 2,
            progress: false,
        }
    }
}

/// The labelled images: class names (sub-folder names, sorted) and each image's class.
#[derive(Clone, Debug)]
pub struct Dataset {
    /// Class names.
    pub classes: Vec<String>,
    /// Every image and its class index.
    pub images: Labelled,
}

/// What [`finetune`] did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct FinetuneReport {
    /// Class names, index order.
    pub classes: Vec<String>,
    /// Training images (before augmentation), per class.
    pub train_images: Vec<usize>,
    /// Training samples including augmented copies.
    pub train_samples: usize,
    /// Held-out images.
    pub heldout: Vec<PathBuf>,
    /// Feature length (2048 for R50x1).
    pub features: usize,
    /// Accuracy on the training samples.
    pub train_accuracy: f64,
    /// Accuracy on the held-out images (`None` without any).
    pub heldout_accuracy: Option<f64>,
    /// Held-out confusion matrix: `confusion[true][predicted]`.
    pub confusion: Vec<Vec<usize>>,
    /// Final training loss (cross-entropy + weight decay).
    pub loss: f64,
    /// Seconds spent extracting features, and training.
    pub seconds: (f64, f64),
    /// The training images (for int8 calibration).
    pub train_files: Vec<PathBuf>,
    /// Size of the written model in bytes.
    pub bytes: u64,
}

impl FinetuneReport {
    /// The result as text: sizes, accuracies and the held-out confusion matrix.
    pub fn table(&self) -> String {
        let mut s = format!(
            "{} classes, {} training images ({} samples with augmentation), {} held out, {} features\n",
            self.classes.len(),
            self.train_images.iter().sum::<usize>(),
            self.train_samples,
            self.heldout.len(),
            self.features
        );
        s += &format!(
            "features {:.1} s, training {:.2} s, final loss {:.4}\ntraining accuracy {:.1}%\n",
            self.seconds.0,
            self.seconds.1,
            self.loss,
            100.0 * self.train_accuracy
        );
        match self.heldout_accuracy {
            None => s += "no held-out images (--holdout 0)\n",
            Some(a) => {
                let correct: usize = (0..self.classes.len()).map(|i| self.confusion[i][i]).sum();
                s += &format!("held-out accuracy {:.1}% ({correct}/{})\n", 100.0 * a, self.heldout.len());
                let w = self.classes.iter().map(|c| c.chars().count()).max().unwrap_or(4).clamp(4, 24);
                s += &format!("confusion (rows: true class, columns: predicted)\n{:>w$} ", "");
                for j in 0..self.classes.len() {
                    s += &format!(" {j:>4}");
                }
                s += "\n";
                for (i, row) in self.confusion.iter().enumerate() {
                    let name: String = self.classes[i].chars().take(w).collect();
                    s += &format!("{name:>w$} ");
                    for v in row {
                        s += &format!(" {v:>4}");
                    }
                    s += &format!("   ({i})\n");
                }
            }
        }
        s
    }
}

fn data_err(path: &Path, detail: impl Into<String>) -> ImportError {
    ImportError::Unsupported { path: path.to_owned(), key: String::new(), detail: detail.into() }
}

/// Reads `dir`: one sub-folder per class, each with at least one image; at least two
/// classes.
pub fn read_dataset(dir: &Path) -> Result<Dataset, ImportError> {
    let rd = std::fs::read_dir(dir).map_err(|source| ImportError::Io { path: dir.to_owned(), source })?;
    let mut folders: Vec<PathBuf> =
        rd.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_dir()).collect();
    folders.sort();
    if folders.len() < 2 {
        return Err(data_err(
            dir,
            format!(
                "{} class folder(s): finetuning needs at least two (one sub-folder of images per class)",
                folders.len()
            ),
        ));
    }
    let mut classes = Vec::new();
    let mut images = Vec::new();
    for (c, folder) in folders.iter().enumerate() {
        let files = list_images(folder)?;
        if files.is_empty() {
            return Err(data_err(folder, "class folder without images (png, jpg, bmp, ppm)"));
        }
        classes.push(folder.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
        images.extend(files.into_iter().map(|f| (f, c)));
    }
    Ok(Dataset { classes, images })
}

/// Images with their class index.
type Labelled = Vec<(PathBuf, usize)>;

/// Splits each class's images into (training, held-out), seeded.
fn split(data: &Dataset, holdout: f64, seed: u64) -> (Labelled, Labelled) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let (mut train, mut held) = (Vec::new(), Vec::new());
    for c in 0..data.classes.len() {
        let mut mine: Vec<&(PathBuf, usize)> = data.images.iter().filter(|(_, k)| *k == c).collect();
        mine.shuffle(&mut rng);
        let n = mine.len();
        let h =
            if holdout <= 0.0 || n < 2 { 0 } else { ((n as f64 * holdout).round() as usize).clamp(1, n - 1) };
        held.extend(mine[..h].iter().map(|x| (*x).clone()));
        train.extend(mine[h..].iter().map(|x| (*x).clone()));
    }
    (train, held)
}

/// The head: the `Conv` fed by a `GlobalAveragePool`; returns (node index, feature tensor
/// name, weight initializer name, bias initializer name).
fn find_head(path: &Path, graph: &pb::GraphProto) -> Result<(usize, String, String, String), ImportError> {
    let pooled: Vec<&str> = graph
        .node
        .iter()
        .filter(|n| n.op_type == "GlobalAveragePool")
        .flat_map(|n| n.output.iter().map(String::as_str))
        .collect();
    let (i, node) = graph
        .node
        .iter()
        .enumerate()
        .rfind(|(_, n)| n.op_type == "Conv" && n.input.first().is_some_and(|x| pooled.contains(&x.as_str())))
        .ok_or_else(|| data_err(path, "not a BiT float model: no GlobalAveragePool -> Conv head"))?;
    let init = |name: Option<&String>| {
        name.filter(|n| graph.initializer.iter().any(|t| &t.name == *n)).cloned().ok_or_else(|| {
            data_err(path, "the head's weights are not plain initializers: finetune a float model from `import`, not an int8 one")
        })
    };
    Ok((i, node.input[0].clone(), init(node.input.get(1))?, init(node.input.get(2))?))
}

/// A training image and its augmented copies.
fn augmented(
    image: &image::RgbImage,
    copies: usize,
    rng: &mut rand_chacha::ChaCha8Rng,
) -> Vec<image::RgbImage> {
    let mut out = vec![image.clone()];
    for n in 0..copies {
        if n == 0 {
            out.push(image::imageops::flip_horizontal(image));
            continue;
        }
        let mut crop = crate::augment::random_crop(image, 0.5, rng);
        if rng.random_bool(0.5) {
            image::imageops::flip_horizontal_in_place(&mut crop);
        }
        out.push(crop);
    }
    out
}

/// A linear softmax classifier `logits = W x + b`, `W` row-major `[classes][features]`.
#[derive(Clone, Debug, PartialEq)]
pub struct LinearHead {
    /// Weights, `classes * features`.
    pub weight: Vec<f32>,
    /// Biases, `classes`.
    pub bias: Vec<f32>,
    /// Feature length.
    pub features: usize,
}

impl LinearHead {
    /// Logits of one feature vector.
    pub fn logits(&self, x: &[f32]) -> Vec<f32> {
        self.weight
            .chunks_exact(self.features)
            .zip(&self.bias)
            .map(|(w, b)| w.iter().zip(x).map(|(a, b)| (*a as f64) * (*b as f64)).sum::<f64>() as f32 + b)
            .collect()
    }

    /// The best class of one feature vector (lowest index on ties).
    pub fn predict(&self, x: &[f32]) -> usize {
        let l = self.logits(x);
        (0..l.len()).fold(0, |best, i| if l[i] > l[best] { i } else { best })
    }
}

/// Trains a softmax-regression head on `samples` (feature vector, class) with L2 penalty
/// `weight_decay` on the weights; returns the head (on raw features) and the final loss.
pub fn train_head(
    samples: &[(Vec<f32>, usize)],
    classes: usize,
    weight_decay: f32,
    steps: usize,
) -> (LinearHead, f64) {
    let n = samples.len();
    let d = samples.first().map_or(0, |s| s.0.len());
    // Standardize each feature over the training set (constant features get scale 1).
    let mut mean = vec![0f64; d];
    for (x, _) in samples {
        for (m, v) in mean.iter_mut().zip(x) {
            *m += *v as f64;
        }
    }
    mean.iter_mut().for_each(|m| *m /= n as f64);
    let mut std = vec![0f64; d];
    for (x, _) in samples {
        for ((s, v), m) in std.iter_mut().zip(x).zip(&mean) {
            *s += (*v as f64 - m).powi(2);
        }
    }
    std.iter_mut().for_each(|s| {
        let v = (*s / n as f64).sqrt();
        *s = if v > 1e-6 { v } else { 1.0 };
    });
    let z: Vec<Vec<f64>> = samples
        .iter()
        .map(|(x, _)| x.iter().zip(&mean).zip(&std).map(|((v, m), s)| (*v as f64 - m) / s).collect())
        .collect();
    let lambda = weight_decay as f64;

    // Lipschitz constant of the gradient: 0.5 * largest eigenvalue of Z^T Z / n (softmax
    // Hessian bound) + lambda, by power iteration.
    let mut v = vec![1.0 / (d as f64).sqrt(); d];
    let mut eig = 0.0;
    for _ in 0..50 {
        let zv: Vec<f64> = z.iter().map(|row| row.iter().zip(&v).map(|(a, b)| a * b).sum()).collect();
        let mut w = vec![0f64; d];
        for (row, s) in z.iter().zip(&zv) {
            for (wi, ri) in w.iter_mut().zip(row) {
                *wi += ri * s / n as f64;
            }
        }
        eig = w.iter().map(|x| x * x).sum::<f64>().sqrt();
        if eig == 0.0 {
            break;
        }
        v = w.iter().map(|x| x / eig).collect();
    }
    let step = 1.0 / (0.5 * eig + lambda + 1e-12);

    // (W, b) with Nesterov momentum, full batch.
    let k = classes;
    let mut w = vec![0f64; k * d];
    let mut b = vec![0f64; k];
    let (mut w_prev, mut b_prev) = (w.clone(), b.clone());
    let mut loss = 0.0;
    for t in 0..steps.max(1) {
        let mu = t as f64 / (t as f64 + 3.0);
        let wl: Vec<f64> = w.iter().zip(&w_prev).map(|(a, p)| a + mu * (a - p)).collect();
        let bl: Vec<f64> = b.iter().zip(&b_prev).map(|(a, p)| a + mu * (a - p)).collect();
        let mut gw = vec![0f64; k * d];
        let mut gb = vec![0f64; k];
        loss = 0.0;
        for (zi, (_, y)) in z.iter().zip(samples) {
            let logits: Vec<f64> = (0..k)
                .map(|c| bl[c] + wl[c * d..(c + 1) * d].iter().zip(zi).map(|(a, b)| a * b).sum::<f64>())
                .collect();
            let max = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let sum: f64 = logits.iter().map(|l| (l - max).exp()).sum();
            loss += -(logits[*y] - max - sum.ln());
            for c in 0..k {
                let p = (logits[c] - max).exp() / sum - if c == *y { 1.0 } else { 0.0 };
                gb[c] += p / n as f64;
                for (g, x) in gw[c * d..(c + 1) * d].iter_mut().zip(zi) {
                    *g += p * x / n as f64;
                }
            }
        }
        loss = loss / n as f64 + 0.5 * lambda * wl.iter().map(|x| x * x).sum::<f64>();
        w_prev =
            std::mem::replace(&mut w, wl.iter().zip(&gw).map(|(a, g)| a - step * (g + lambda * a)).collect());
        b_prev = std::mem::replace(&mut b, bl.iter().zip(&gb).map(|(a, g)| a - step * g).collect());
    }
    // Fold the standardization: W' = W / std, b' = b - sum(W * mean / std).
    let mut weight = vec![0f32; k * d];
    let mut bias = vec![0f32; k];
    for c in 0..k {
        let mut shift = 0.0;
        for j in 0..d {
            let wj = w[c * d + j] / std[j];
            weight[c * d + j] = wj as f32;
            shift += wj * mean[j];
        }
        bias[c] = (b[c] - shift) as f32;
    }
    (LinearHead { weight, bias, features: d }, loss)
}

/// Trains a head for the classes in `data_dir` on the float model at `float_path` and
/// writes the new model to `out` atomically.
pub fn finetune(
    float_path: &Path,
    data_dir: &Path,
    out: &Path,
    options: &FinetuneOptions,
) -> Result<FinetuneReport, ImportError> {
    let data = read_dataset(data_dir)?;
    let proto = read_proto(float_path)?;
    let graph = proto.graph.as_ref().ok_or_else(|| data_err(float_path, "no graph"))?;
    let (head_node, feature_name, weight_name, bias_name) = find_head(float_path, graph)?;
    let info = bit_runtime::ModelInfo::from_metadata(
        float_path,
        proto.metadata_props.iter().map(|e| (e.key.as_str(), e.value.as_str())),
    )
    .map_err(|e| data_err(float_path, e.to_string()))?;
    let size = options.input_size.unwrap_or(info.preprocess.input_size);
    let (train, held) = split(&data, options.holdout, options.seed);

    let start = Instant::now();
    let mut probe =
        Probe::new(float_path, &proto, std::slice::from_ref(&feature_name), size, options.threads)?;
    let load = |p: &Path| {
        bit_runtime::load_image(p).map_err(|e| ImportError::Corrupt {
            path: p.to_owned(),
            key: String::new(),
            detail: e.to_string(),
        })
    };
    let mut features = |img: &image::RgbImage| -> Result<Vec<f32>, ImportError> {
        let input = image_tensor(img, &info.preprocess, size);
        let (_, extra) = probe
            .run(&input)
            .map_err(|e| ImportError::Tract { path: float_path.to_owned(), source: e.into() })?;
        Ok(crate::probe::values(&extra[0]))
    };
    let bar =
        crate::quantize::progress_bar(options.progress, train.len() + held.len(), "extracting features");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(options.seed ^ 0x5eed);
    let mut samples = Vec::new();
    let mut train_images = vec![0usize; data.classes.len()];
    for (path, class) in &train {
        let img = load(path)?;
        for copy in augmented(&img, options.augment, &mut rng) {
            samples.push((features(&copy)?, *class));
        }
        train_images[*class] += 1;
        bar.inc(1);
    }
    let mut held_features = Vec::new();
    for (path, class) in &held {
        held_features.push((features(&load(path)?)?, *class));
        bar.inc(1);
    }
    bar.finish_and_clear();
    let feature_seconds = start.elapsed().as_secs_f64();
    let d = samples[0].0.len();

    let start = Instant::now();
    let k = data.classes.len();
    let (head, loss) = train_head(&samples, k, options.weight_decay, options.steps);
    let train_seconds = start.elapsed().as_secs_f64();
    let train_correct = samples.iter().filter(|(x, y)| head.predict(x) == *y).count();
    let mut confusion = vec![vec![0usize; k]; k];
    for (x, y) in &held_features {
        confusion[*y][head.predict(x)] += 1;
    }
    let held_correct: usize = (0..k).map(|i| confusion[i][i]).sum();

    let model = with_head(&proto, head_node, &weight_name, &bias_name, &head, &data.classes, train.len());
    write_model(&model, out)?;
    Ok(FinetuneReport {
        classes: data.classes,
        train_images,
        train_samples: samples.len(),
        heldout: held.iter().map(|(p, _)| p.clone()).collect(),
        features: d,
        train_accuracy: train_correct as f64 / samples.len() as f64,
        heldout_accuracy: (!held.is_empty()).then(|| held_correct as f64 / held.len() as f64),
        confusion,
        loss,
        seconds: (feature_seconds, train_seconds),
        train_files: train.into_iter().map(|(p, _)| p).collect(),
        bytes: std::fs::metadata(out).map(|m| m.len()).unwrap_or(0),
    })
}

/// `proto` with the head replaced by `head` and the class names by `classes`.
fn with_head(
    proto: &pb::ModelProto,
    head_node: usize,
    weight_name: &str,
    bias_name: &str,
    head: &LinearHead,
    classes: &[String],
    images: usize,
) -> pb::ModelProto {
    use bit_runtime::contract::{META_ARCHITECTURE, META_LABELS};
    let mut proto = proto.clone();
    let k = classes.len();
    let graph = proto.graph.as_mut().expect("checked");
    for t in graph.initializer.iter_mut() {
        let (dims, data): (Vec<i64>, &[f32]) = if t.name == weight_name {
            (vec![k as i64, head.features as i64, 1, 1], &head.weight)
        } else if t.name == bias_name {
            (vec![k as i64], &head.bias)
        } else {
            continue;
        };
        *t = pb::TensorProto {
            name: t.name.clone(),
            dims,
            data_type: pb::tensor_proto::DataType::Float as i32,
            raw_data: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        };
    }
    // The logits' declared shape: [1, classes].
    let logits = graph.node[head_node].output[0].clone();
    let single = graph.output.len() == 1;
    for o in graph.output.iter_mut() {
        if let Some(pb::type_proto::Value::TensorType(t)) = o.r#type.as_mut().and_then(|t| t.value.as_mut())
            && let Some(shape) = t.shape.as_mut()
            && shape.dim.len() == 2
            && (o.name == logits || single)
        {
            shape.dim[1].value = Some(pb::tensor_shape_proto::dimension::Value::DimValue(k as i64));
        }
    }
    for m in proto.metadata_props.iter_mut() {
        if m.key == META_ARCHITECTURE
            && let Ok(mut arch) = serde_json::from_str::<serde_json::Value>(&m.value)
        {
            arch["num_classes"] = serde_json::json!(k);
            arch["head"] = serde_json::json!({ "finetuned": true, "classes": k, "training_images": images });
            m.value = arch.to_string();
        }
    }
    proto.metadata_props.retain(|m| m.key != META_LABELS);
    proto.metadata_props.push(pb::StringStringEntryProto {
        key: META_LABELS.to_owned(),
        value: serde_json::to_string(classes).expect("serializable"),
    });
    proto
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_separable_problem_is_learned_and_the_folded_head_works_on_raw_features() {
        // Three classes in 5 dimensions with very different offsets and scales per feature.
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let centers =
            [[10.0, 0.0, 0.0, 500.0, 3.0], [0.0, 10.0, 0.0, 520.0, 3.0], [0.0, 0.0, 10.0, 480.0, 3.0]];
        let mut samples = Vec::new();
        for _ in 0..20 {
            for (c, ctr) in centers.iter().enumerate() {
                let x: Vec<f32> = ctr.iter().map(|m| (m + rng.random_range(-2.0..2.0)) as f32).collect();
                samples.push((x, c));
            }
        }
        let (head, loss) = train_head(&samples, 3, 1e-3, 300);
        assert!(loss < 0.2, "loss {loss}");
        for (x, y) in &samples {
            assert_eq!(head.predict(x), *y);
        }
        // The folded head equals the standardized one: logits are finite and ordered.
        let l = head.logits(&[10.0, 0.0, 0.0, 500.0, 3.0]);
        assert!(l[0] > l[1] && l[0] > l[2], "{l:?}");
    }

    #[test]
    fn weight_decay_shrinks_the_weights() {
        let samples: Vec<(Vec<f32>, usize)> = (0..40).map(|i| (vec![(i % 2) as f32, 1.0], i % 2)).collect();
        let norm = |h: &LinearHead| h.weight.iter().map(|w| w * w).sum::<f32>();
        let (loose, _) = train_head(&samples, 2, 1e-4, 200);
        let (tight, _) = train_head(&samples, 2, 1.0, 200);
        assert!(norm(&tight) < 0.1 * norm(&loose), "{} vs {}", norm(&tight), norm(&loose));
    }

    #[test]
    fn the_split_holds_out_per_class_and_keeps_one_to_train() {
        let images: Vec<(PathBuf, usize)> = (0..10)
            .map(|i| (PathBuf::from(format!("a{i}")), 0))
            .chain([(PathBuf::from("b0"), 1), (PathBuf::from("b1"), 1)])
            .collect();
        let data = Dataset { classes: vec!["a".into(), "b".into()], images };
        let (train, held) = split(&data, 0.3, 0);
        assert_eq!(held.iter().filter(|(_, c)| *c == 0).count(), 3);
        assert_eq!(held.iter().filter(|(_, c)| *c == 1).count(), 1);
        assert_eq!(train.len() + held.len(), 12);
        assert_eq!(split(&data, 0.3, 0), (train.clone(), held.clone()), "seeded");
        assert_eq!(split(&data, 0.0, 0).1.len(), 0);
    }
}
