//! `bit-tool`: import BiT checkpoints, make synthetic ones, classify images, benchmark.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use bit_runtime::{LoadOptions, Model, ModelInfo, load_image};
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
    /// Read a checkpoint (official .npz, timm/transformers/bit_pytorch safetensors),
    /// fold weight standardization and write a float ONNX model.
    Import {
        /// The checkpoint file (or a transformers directory with model.safetensors).
        checkpoint: PathBuf,
        /// Output ONNX model.
        #[arg(short, long)]
        out: PathBuf,
        /// Label file (one name per line, or a TSV with a `name` column).
        #[arg(long)]
        labels: Option<PathBuf>,
        /// Default input size recorded in the model's contract.
        #[arg(long)]
        input_size: Option<u32>,
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
        /// The ONNX model; default: a synthetic BiT-S-R50x1 made in a temporary directory.
        #[arg(short, long)]
        model: Option<PathBuf>,
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

fn main() -> ExitCode {
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
        Command::Import { checkpoint, out, labels, input_size } => {
            let labels = labels.map(|p| bit_runtime::read_labels(&p)).transpose()?;
            if let Some(size) = input_size
                && !bit_runtime::SUPPORTED_SIZES.contains(&size)
            {
                log::warn!(
                    "input size {size} is not one of the tested sizes {:?}",
                    bit_runtime::SUPPORTED_SIZES
                );
            }
            let start = Instant::now();
            let report =
                bit_tools::import_checkpoint(&checkpoint, &out, &ImportOptions { labels, input_size })
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
            Ok(())
        }
        Command::Classify { model, images, input_size, top_k, threads, labels, json } => {
            classify(&model, &images, input_size, top_k, threads, labels.as_deref(), json)
        }
        Command::Info { model } => info(&model),
        Command::Bench { model, sizes, threads, runs } => bench::bench(model, &sizes, &threads, runs),
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
    let source = match info.contract_source {
        bit_runtime::ContractSource::Model => "from the model metadata",
        bit_runtime::ContractSource::Default => "NONE in the model: BiT default assumed",
    };
    println!("preprocessing contract ({source}):");
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
