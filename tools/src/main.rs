//! `bit-tool`: import BiT checkpoints, make synthetic ones, classify images, benchmark.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use bit_runtime::contract::{ChannelOrder, Resample};
use bit_runtime::{LoadOptions, Model, ModelInfo, load_image};
use bit_tools::contract::{ContractChoice, Overrides, ResizeKind};
use bit_tools::{Arch, ImportOptions, Layout};
use clap::{Parser, Subcommand};

mod bench;

#[derive(Parser)]
#[command(name = "bit-tool", version, about = "Offline tool for BiT image classifiers on edge boards")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write a deterministic random checkpoint in an exact BiT layout (tests, demos).
    Synth {
        /// Output file (.npz for the official layout, .safetensors otherwise).
        #[arg(short, long)]
        out: PathBuf,
        /// Units per block, comma-separated (R50: 3,4,6,3; R101: 3,4,23,3; R152: 3,8,36,3).
        #[arg(long, default_value = "3,4,6,3", value_delimiter = ',')]
        depths: Vec<usize>,
        /// Width factor (1, 3, 4).
        #[arg(long, default_value_t = 1)]
        width: usize,
        /// Head classes (BiT-S: 1000, BiT-M: 21843).
        #[arg(long, default_value_t = 1000)]
        classes: usize,
        /// Random seed.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Layout: npz, timm, transformers or bit_pytorch.
        #[arg(long, default_value = "npz")]
        layout: String,
    },
    /// Read a checkpoint (official .npz, timm/transformers/bit_pytorch safetensors) or an
    /// ONNX export of a fine-tuned model (.onnx), fold weight standardization and write a
    /// float ONNX model.
    Import {
        /// The checkpoint file, a transformers directory with model.safetensors, or an ONNX
        /// export (.onnx).
        checkpoint: PathBuf,
        /// Output ONNX model.
        #[arg(short, long)]
        out: PathBuf,
        /// Label file (one name per line, or a TSV with a `name` column).
        #[arg(long)]
        labels: Option<PathBuf>,
        /// Where the preprocessing contract comes from: `auto` (the checkpoint's source:
        /// npz -> BiT default, transformers -> preprocessor_config.json, timm -> config.json
        /// pretrained_cfg or timm's BiT default), `bit` (BiT default), or a JSON file
        /// (preprocessor_config.json, timm config.json / pretrained_cfg, bit.preprocess).
        #[arg(long, default_value = "auto")]
        contract: String,
        /// Contract: default input size (a crop keeps its fraction).
        #[arg(long, value_parser = parse_input_size)]
        input_size: Option<u32>,
        /// Contract: per-channel mean on [0, 1] values, in tensor channel order.
        #[arg(long, value_name = "R,G,B", value_parser = parse_mean)]
        mean: Option<[f32; 3]>,
        /// Contract: per-channel standard deviation on [0, 1] values.
        #[arg(long, value_name = "R,G,B", value_parser = parse_std)]
        std: Option<[f32; 3]>,
        /// Contract: squash (whole frame to the square) or crop (centred square).
        #[arg(long, value_parser = parse_resize)]
        resize: Option<bit_tools::contract::ResizeKind>,
        /// Contract: fraction of the shorter side a centre crop keeps, in (0, 1] (implies
        /// --resize crop); "shortest edge S, crop C" is C/S.
        #[arg(long, value_parser = parse_crop_fraction)]
        crop_fraction: Option<f32>,
        /// Contract: bilinear, bicubic or nearest.
        #[arg(long, value_parser = parse_resample)]
        resample: Option<bit_runtime::contract::Resample>,
        /// Contract: rgb or bgr.
        #[arg(long, value_parser = parse_channel_order)]
        channel_order: Option<bit_runtime::contract::ChannelOrder>,
        /// Contract: on (resize as Pillow's Image.resize: the filter widens with the
        /// downscale, what transformers, timm and torchvision fine-tunes saw) or off (a fixed
        /// footprint, as BiT's TensorFlow pipeline). Default: from the checkpoint's source.
        #[arg(long, value_name = "on|off", value_parser = parse_on_off)]
        antialias: Option<bool>,
    },
    /// Quantize a float model to int8 (QLinearConv on tract's integer kernels), calibrating
    /// on a directory of images.
    Quantize {
        /// The float ONNX model (from `import`).
        model: PathBuf,
        /// Directory of calibration images (frames like the deployment camera's are best).
        #[arg(long)]
        calib: PathBuf,
        /// Output int8 ONNX model.
        #[arg(short, long)]
        out: PathBuf,
        /// Weight scales: per-tensor (fastest in tract) or per-channel.
        #[arg(long, default_value = "per-tensor")]
        weights: String,
        /// Activation type: u8 or i8.
        #[arg(long, default_value = "u8")]
        activations: String,
        /// Range calibration: minmax, percentile or mse.
        #[arg(long, default_value = "mse")]
        method: String,
        /// Percentile for `--method percentile`.
        #[arg(long, default_value_t = 99.99)]
        percentile: f64,
        /// Use exactly this many calibration images.
        #[arg(long)]
        num_images: Option<usize>,
        /// Calibration input size; default: the model's.
        #[arg(long)]
        input_size: Option<u32>,
        /// Threads for calibration.
        #[arg(long, default_value_t = 2)]
        threads: usize,
    },
    /// Compare an int8 model with its float original on held-out images: top-1 agreement,
    /// top-5 overlap, cosine, logit SQNR and per-layer SQNR (table, and JSON with --json-out).
    Eval {
        /// The float model.
        #[arg(long)]
        float: PathBuf,
        /// The quantized model.
        #[arg(long)]
        int8: PathBuf,
        /// Directory of held-out images (not the calibration set).
        #[arg(long)]
        images: PathBuf,
        /// Input size; default: the model's.
        #[arg(long)]
        input_size: Option<u32>,
        /// Write the full report as JSON here.
        #[arg(long)]
        json_out: Option<PathBuf>,
        /// Layers to list, lowest SQNR first.
        #[arg(long, default_value_t = 10)]
        worst: usize,
        /// Threads.
        #[arg(long, default_value_t = 2)]
        threads: usize,
    },
    /// Teach the model new classes: train a new head on the CPU from DATA (one sub-folder
    /// of images per class, named after the class), write a model with the new labels.
    Finetune {
        /// The float model from `import` (its backbone is kept).
        #[arg(short, long)]
        model: PathBuf,
        /// One sub-folder per class, each with that class's images.
        #[arg(long)]
        data: PathBuf,
        /// The new float model.
        #[arg(short, long)]
        out: PathBuf,
        /// Fraction of each class held out for the accuracy and confusion matrix.
        #[arg(long, default_value_t = 0.3)]
        holdout: f64,
        /// Augmented copies per training image (mirror, then random crops).
        #[arg(long, default_value_t = 4)]
        augment: usize,
        /// Gradient steps of the head's training.
        #[arg(long, default_value_t = 500)]
        steps: usize,
        /// L2 weight decay of the head (on standardized features).
        #[arg(long, default_value_t = 1e-3)]
        weight_decay: f32,
        /// Seed of the split and the augmentation.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Input size; default: the model's contract.
        #[arg(long, value_parser = parse_input_size)]
        input_size: Option<u32>,
        /// Threads for the backbone runs.
        #[arg(long, default_value_t = 2)]
        threads: usize,
        /// Also write an int8 model, calibrated on the training images.
        #[arg(long)]
        int8: Option<PathBuf>,
        /// Write the report (accuracies, confusion matrix) as JSON.
        #[arg(long)]
        json_out: Option<PathBuf>,
    },
    /// Make more frames from a few photos: random crops, scales and flips, as PNG.
    Augment {
        /// Directory of source images.
        #[arg(long)]
        from: PathBuf,
        /// Output directory (created).
        #[arg(short, long)]
        out: PathBuf,
        /// Frames to write.
        #[arg(long, default_value_t = 100)]
        count: usize,
        /// Random seed (use different seeds for calibration and held-out sets).
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Frame size, WIDTHxHEIGHT.
        #[arg(long, default_value = "320x240")]
        size: String,
    },
    /// Classify image files and print the top-k classes.
    Classify {
        /// The ONNX model.
        #[arg(short, long)]
        model: PathBuf,
        /// Images (PNG, JPEG).
        #[arg(required = true)]
        images: Vec<PathBuf>,
        /// Input size (128, 160, 224, 384, 480); default: the model's.
        #[arg(long)]
        input_size: Option<u32>,
        /// How many classes to print.
        #[arg(short = 'k', long, default_value_t = 5)]
        top_k: usize,
        /// Inference threads.
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// Label file overriding the model's labels.
        #[arg(long)]
        labels: Option<PathBuf>,
        /// One JSON object per image instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Print a model's contract, labels and architecture.
    Info {
        /// The ONNX model.
        model: PathBuf,
    },
    /// Benchmark load time, latency and peak memory; prints a table.
    Bench {
        /// ONNX models (repeat to compare, e.g. float and int8, in one run); default: a
        /// synthetic BiT-S-R50x1 made in a temporary directory.
        #[arg(short, long)]
        model: Vec<PathBuf>,
        /// Input sizes.
        #[arg(long, default_value = "224,128", value_delimiter = ',')]
        sizes: Vec<u32>,
        /// Thread counts.
        #[arg(long, default_value = "1,2", value_delimiter = ',')]
        threads: Vec<usize>,
        /// Timed runs per configuration (after one warm-up run).
        #[arg(long, default_value_t = 20)]
        runs: usize,
    },
    /// tract's per-op profile of a model: time per op kind and the slowest nodes.
    Profile {
        /// The ONNX model.
        model: PathBuf,
        /// Input size; default: the model's.
        #[arg(long)]
        input_size: Option<u32>,
        /// Profiled runs (after one warm-up); the median per node is reported.
        #[arg(long, default_value_t = 10)]
        runs: usize,
        /// Nodes to list, slowest first.
        #[arg(long, default_value_t = 15)]
        top: usize,
        /// Inference threads.
        #[arg(long, default_value_t = 1)]
        threads: usize,
    },
    /// One benchmark configuration in this process (used by `bench`; prints JSON).
    #[command(hide = true)]
    BenchOne {
        #[arg(long)]
        model: PathBuf,
        #[arg(long)]
        size: u32,
        #[arg(long)]
        threads: usize,
        #[arg(long)]
        runs: usize,
    },
}

/// Refuses an output that is one of the command's inputs (the same file, by inode), before any work.
fn not_an_input(out: &Path, inputs: &[&Path]) -> anyhow::Result<()> {
    bit_runtime::fs::ensure_not_an_input(out, inputs).map_err(anyhow::Error::msg)
}

fn main() -> ExitCode {
    if let Some(why) = bit_runtime::cpu::unsupported_cpu() {
        eprintln!("bit-tool: {why}");
        return ExitCode::from(2);
    }
    // Like other command-line tools, end quietly when the reader of stdout goes away
    // (`bit-tool info MODEL | head`) instead of panicking on a failed print.
    // SAFETY: restoring the default disposition of SIGPIPE before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn,tract_onnx=error"))
        .init();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bit-tool: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Synth { out, depths, width, classes, seed, layout } => {
            let layout = Layout::from_name(&layout).with_context(|| {
                format!("unknown layout '{layout}' (npz, timm, transformers, bit_pytorch)")
            })?;
            if depths.len() != 4 || depths.contains(&0) {
                bail!("--depths needs four positive unit counts, got {depths:?}");
            }
            if width == 0 || classes == 0 {
                bail!("--width and --classes must be positive");
            }
            let arch = Arch { depths, width, num_classes: classes };
            let labels = (classes == 1000).then(bit_tools::imagenet1k_labels);
            bit_tools::synth::write_synthetic(&out, &arch, seed, layout, labels.as_deref())?;
            println!(
                "wrote {} ({} layout, {}, {classes} classes, seed {seed}, random weights)",
                out.display(),
                layout.name(),
                arch.name()
            );
            Ok(())
        }
        Command::Import {
            checkpoint,
            out,
            labels,
            contract,
            input_size,
            mean,
            std,
            resize,
            crop_fraction,
            resample,
            channel_order,
            antialias,
        } => {
            let labels = labels.map(|p| bit_runtime::read_labels(&p)).transpose()?;
            let start = Instant::now();
            let contract = match contract.as_str() {
                "auto" => ContractChoice::Auto,
                "bit" => ContractChoice::BitDefault,
                file => ContractChoice::File(PathBuf::from(file)),
            };
            let overrides = Overrides {
                input_size,
                mean,
                std,
                resize,
                crop_fraction,
                resample,
                channel_order,
                antialias,
            };
            let options = ImportOptions { labels, contract, overrides };
            let mut inputs = vec![checkpoint.as_path()];
            if let ContractChoice::File(file) = &options.contract {
                inputs.push(file);
            }
            not_an_input(&out, &inputs)?;
            if checkpoint.extension().is_some_and(|e| e.eq_ignore_ascii_case("onnx")) {
                let r = bit_tools::onnx_import::import_onnx(&checkpoint, &out, &options)
                    .with_context(|| format!("importing {}", checkpoint.display()))?;
                let ops = |m: &std::collections::BTreeMap<String, usize>| {
                    m.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ")
                };
                println!(
                    "wrote {}: ONNX export, {} classes, labels: {}; {} constant nodes folded ({} by tract), {} GroupNorms rewritten ({:.1} s)",
                    out.display(),
                    r.classes.map_or("?".into(), |c| c.to_string()),
                    r.labels_source,
                    r.folded,
                    r.folded_by_tract,
                    r.group_norms,
                    start.elapsed().as_secs_f64()
                );
                println!("ops before: {}", ops(&r.ops_before));
                println!("ops after:  {}", ops(&r.ops_after));
                for left in &r.constant_left {
                    println!("constant node left in the graph: {left}");
                }
                println!("preprocessing contract: {}", serde_json::to_string(&r.preprocess)?);
                return Ok(());
            }
            let report = bit_tools::import_checkpoint(&checkpoint, &out, &options)
                .with_context(|| format!("importing {}", checkpoint.display()))?;
            println!(
                "wrote {}: BiT-{} from {} layout, {} classes, {:.2} M parameters, labels: {}, weight standardization folded ({:.1} s)",
                out.display(),
                report.arch.name(),
                report.layout.name(),
                report.arch.num_classes,
                report.parameters as f64 / 1e6,
                report.labels_source,
                start.elapsed().as_secs_f64()
            );
            println!(
                "preprocessing contract ({}): {}",
                report.preprocess.source.as_deref().unwrap_or("unknown"),
                serde_json::to_string(&report.preprocess)?
            );
            Ok(())
        }
        Command::Quantize {
            model,
            calib,
            out,
            weights,
            activations,
            method,
            percentile,
            num_images,
            input_size,
            threads,
        } => {
            use bit_tools::quantize::*;
            let options = QuantizeOptions {
                weights: match weights.as_str() {
                    "per-tensor" => WeightScales::PerTensor,
                    "per-channel" => WeightScales::PerChannel,
                    other => bail!("--weights '{other}': expected per-tensor or per-channel"),
                },
                activations: match activations.as_str() {
                    "u8" => ActivationType::U8,
                    "i8" => ActivationType::I8,
                    other => bail!("--activations '{other}': expected u8 or i8"),
                },
                calibration: match method.as_str() {
                    "minmax" => Calibration::MinMax,
                    "percentile" if percentile > 50.0 && percentile <= 100.0 => {
                        Calibration::Percentile { percentile }
                    }
                    "percentile" => bail!("--percentile {percentile}: expected a value in (50, 100]"),
                    "mse" => Calibration::Mse,
                    other => bail!("--method '{other}': expected minmax, percentile or mse"),
                },
                input_size,
                num_images,
                threads,
                progress: true,
            };
            not_an_input(&out, &[&model, &calib])?;
            let start = Instant::now();
            let report = quantize_model(&model, &calib, &out, &options)
                .with_context(|| format!("quantizing {}", model.display()))?;
            println!(
                "wrote {}: {} convolutions int8 ({:?} weights, {:?} activations), calibrated on {} images at {} px, {:.1} MB ({:.1} s)",
                out.display(),
                report.convs,
                options.weights,
                options.activations,
                report.images,
                report.input_size,
                report.bytes as f64 / 1e6,
                start.elapsed().as_secs_f64()
            );
            Ok(())
        }
        Command::Eval { float, int8, images, input_size, json_out, worst, threads } => {
            if let Some(path) = &json_out {
                not_an_input(path, &[&float, &int8, &images])?;
            }
            let report = bit_tools::eval::evaluate(&float, &int8, &images, input_size, threads, true)?;
            print!("{}", report.table(worst));
            if let Some(path) = json_out {
                let json = serde_json::to_vec_pretty(&report)?;
                bit_tools::onnx::write_atomically(&path, &json)?;
                println!("wrote {}", path.display());
            }
            Ok(())
        }
        Command::Finetune {
            model,
            data,
            out,
            holdout,
            augment,
            steps,
            weight_decay,
            seed,
            input_size,
            threads,
            int8,
            json_out,
        } => {
            if !(0.0..1.0).contains(&holdout) {
                bail!("--holdout {holdout}: expected a fraction in [0, 1)");
            }
            not_an_input(&out, &[&model, &data])?;
            for extra in int8.iter().chain(&json_out) {
                not_an_input(extra, &[&model, &data, &out])?;
                if extra == &out || std::path::absolute(extra).ok() == std::path::absolute(&out).ok() {
                    bail!("{} is also the --out model: choose another path", extra.display());
                }
            }
            let options = bit_tools::finetune::FinetuneOptions {
                holdout,
                augment,
                steps,
                weight_decay,
                seed,
                input_size,
                threads,
                progress: true,
            };
            let report = bit_tools::finetune::finetune(&model, &data, &out, &options)?;
            print!("{}", report.table());
            println!("wrote {} ({:.1} MB)", out.display(), report.bytes as f64 / 1e6);
            if let Some(int8) = int8 {
                let q =
                    bit_tools::quantize::QuantizeOptions { threads, progress: true, ..Default::default() };
                let r = bit_tools::quantize::quantize_model_files(
                    &out,
                    &data,
                    report.train_files.clone(),
                    &int8,
                    &q,
                )?;
                println!(
                    "wrote {} ({:.1} MB, {} convolutions int8, calibrated on {} training images)",
                    int8.display(),
                    r.bytes as f64 / 1e6,
                    r.convs,
                    r.images
                );
            }
            if let Some(path) = json_out {
                bit_tools::onnx::write_atomically(&path, &serde_json::to_vec_pretty(&report)?)?;
                println!("wrote {}", path.display());
            }
            Ok(())
        }
        Command::Augment { from, out, count, seed, size } => {
            let (w, h) = size
                .split_once('x')
                .and_then(|(w, h)| Some((w.parse::<u32>().ok()?, h.parse::<u32>().ok()?)))
                .filter(|(w, h)| *w > 0 && *h > 0)
                .with_context(|| format!("--size '{size}': expected WIDTHxHEIGHT"))?;
            let written = bit_tools::augment::augment(&from, &out, count, seed, w, h)?;
            println!("wrote {} frames of {w}x{h} to {}", written.len(), out.display());
            Ok(())
        }
        Command::Classify { model, images, input_size, top_k, threads, labels, json } => {
            classify(&model, &images, input_size, top_k, threads, labels.as_deref(), json)
        }
        Command::Info { model } => info(&model),
        Command::Bench { model, sizes, threads, runs } => bench::bench(model, &sizes, &threads, runs),
        Command::Profile { model, input_size, runs, top, threads } => {
            bench::profile(&model, input_size, runs, top, threads)
        }
        Command::BenchOne { model, size, threads, runs } => bench::bench_one(&model, size, threads, runs),
    }
}

fn classify(
    model_path: &Path,
    images: &[PathBuf],
    input_size: Option<u32>,
    k: usize,
    threads: usize,
    labels: Option<&Path>,
    json: bool,
) -> Result<()> {
    let labels = labels.map(bit_runtime::read_labels).transpose()?;
    let mut model = Model::load(model_path, &LoadOptions { input_size, threads, labels })?;
    if model.contract_source() == bit_runtime::ContractSource::Default {
        log::warn!(
            "{} carries no preprocessing contract; assuming BiT's (x/127.5-1, squash)",
            model_path.display()
        );
    }
    let mut failed = 0;
    for path in images {
        let result = load_image(path).map_err(anyhow::Error::from).and_then(|img| {
            let start = Instant::now();
            let (top, logits) = model.classify_image(&img, k)?;
            Ok((top, logits, start.elapsed()))
        });
        let (top, logits, elapsed) = match result {
            Ok(r) => r,
            Err(e) => {
                eprintln!("bit-tool: error: {e:#}");
                failed += 1;
                continue;
            }
        };
        if json {
            let top: Vec<_> = top
                .iter()
                .map(|p| {
                    serde_json::json!({"class": p.class, "label": model.labels()[p.class], "score": p.score, "logit": logits[p.class]})
                })
                .collect();
            println!(
                "{}",
                serde_json::json!({"image": path.display().to_string(), "top": top, "ms": elapsed.as_secs_f64() * 1e3})
            );
        } else {
            println!("{} ({:.1} ms)", path.display(), elapsed.as_secs_f64() * 1e3);
            for p in &top {
                println!("  {:>6.2}%  {:>5}  {}", p.score * 100.0, p.class, model.labels()[p.class]);
            }
        }
    }
    if failed > 0 {
        bail!("{failed} of {} images could not be classified", images.len());
    }
    Ok(())
}

fn info(model: &Path) -> Result<()> {
    let info = ModelInfo::read(model)?;
    println!("model: {}", model.display());
    let source = match (info.contract_source, &info.preprocess.source) {
        (bit_runtime::ContractSource::Model, Some(from)) => {
            format!("from the model metadata; source: {from}")
        }
        (bit_runtime::ContractSource::Model, None) => {
            "from the model metadata; source: not recorded (imported before sources were)".into()
        }
        (bit_runtime::ContractSource::Default, _) => {
            "NONE in the model: BiT default assumed (RGB, x/127.5-1, squash, bilinear)".into()
        }
    };
    println!("preprocessing contract ({source}):");
    println!("  resampling: {}", info.preprocess.describe_resampling());
    println!("  {}", serde_json::to_string_pretty(&info.preprocess)?.replace('\n', "\n  "));
    if let Some(arch) = &info.architecture {
        println!("architecture:\n  {}", serde_json::to_string_pretty(arch)?.replace('\n', "\n  "));
    }
    match &info.labels {
        Some(labels) => {
            let shown: Vec<&str> = labels.iter().take(5).map(String::as_str).collect();
            println!(
                "labels: {} ({}{})",
                labels.len(),
                shown.join(", "),
                if labels.len() > 5 { ", ..." } else { "" }
            );
        }
        None => println!("labels: none in the model"),
    }
    Ok(())
}

// Value parsers for the contract flags: clap puts the flag in front of each message
// ("invalid value '2' for '--crop-fraction <CROP_FRACTION>': ...").

fn parse_input_size(s: &str) -> Result<u32, String> {
    let size: u32 = s.parse().map_err(|_| format!("'{s}' is not a whole number of pixels"))?;
    if !(1..=4096).contains(&size) {
        return Err(format!("{size} is not in 1..=4096"));
    }
    if !bit_runtime::SUPPORTED_SIZES.contains(&size) {
        log::warn!("input size {size} is not one of the tested sizes {:?}", bit_runtime::SUPPORTED_SIZES);
    }
    Ok(size)
}

fn parse_triplet(s: &str) -> Result<[f32; 3], String> {
    let values: Vec<f32> = s
        .split(',')
        .map(|v| v.trim().parse::<f32>().ok().filter(|x| x.is_finite()))
        .collect::<Option<_>>()
        .ok_or_else(|| format!("'{s}' is not three comma-separated numbers R,G,B"))?;
    values.try_into().map_err(|v: Vec<f32>| format!("{} values given, expected three (R,G,B)", v.len()))
}

fn parse_mean(s: &str) -> Result<[f32; 3], String> {
    parse_triplet(s)
}

fn parse_std(s: &str) -> Result<[f32; 3], String> {
    let std = parse_triplet(s)?;
    if std.iter().any(|v| *v <= 0.0) {
        return Err(format!("{std:?}: every value must be positive"));
    }
    Ok(std)
}

fn parse_crop_fraction(s: &str) -> Result<f32, String> {
    s.parse::<f32>()
        .ok()
        .filter(|f| *f > 0.0 && *f <= 1.0)
        .ok_or_else(|| format!("'{s}' is not a fraction in (0, 1]"))
}

fn parse_resize(s: &str) -> Result<ResizeKind, String> {
    match s {
        "squash" => Ok(ResizeKind::Squash),
        "crop" => Ok(ResizeKind::Crop),
        _ => Err(format!("'{s}': expected squash or crop")),
    }
}

fn parse_resample(s: &str) -> Result<Resample, String> {
    match s {
        "bilinear" => Ok(Resample::Bilinear),
        "bicubic" => Ok(Resample::Bicubic),
        "nearest" => Ok(Resample::Nearest),
        _ => Err(format!("'{s}': expected bilinear, bicubic or nearest")),
    }
}

fn parse_on_off(s: &str) -> Result<bool, String> {
    match s {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(format!("'{s}': expected on or off")),
    }
}

fn parse_channel_order(s: &str) -> Result<ChannelOrder, String> {
    match s {
        "rgb" => Ok(ChannelOrder::Rgb),
        "bgr" => Ok(ChannelOrder::Bgr),
        _ => Err(format!("'{s}': expected rgb or bgr")),
    }
}
