//! `bit-tool bench`: model load time, latency (median of N runs) and peak RSS per input size
//! and thread count. Each configuration runs in its own process so that peak RSS is its own.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use bit_runtime::{LoadOptions, Model};

/// Runs every (size, threads) configuration in a child process and prints a table.
pub fn bench(model: Option<PathBuf>, sizes: &[u32], threads: &[usize], runs: usize) -> Result<()> {
    if runs == 0 {
        bail!("--runs must be at least 1");
    }
    let tmp = tempfile::tempdir().context("temporary directory")?;
    let model = match model {
        Some(m) => m,
        None => {
            let ckpt = tmp.path().join("BiT-S-R50x1-synthetic.npz");
            let onnx = tmp.path().join("bit-s-r50x1.onnx");
            eprintln!(
                "bench: no --model; making a synthetic BiT-S-R50x1 (random weights) in {}",
                tmp.path().display()
            );
            let arch = bit_tools::Arch { depths: vec![3, 4, 6, 3], width: 1, num_classes: 1000 };
            bit_tools::synth::write_synthetic(&ckpt, &arch, 0, bit_tools::Layout::Npz, None)?;
            bit_tools::import_checkpoint(&ckpt, &onnx, &Default::default())?;
            onnx
        }
    };
    let file_mb = std::fs::metadata(&model).map(|m| m.len() as f64 / 1e6).unwrap_or(f64::NAN);
    let exe = std::env::current_exe().context("locating bit-tool")?;
    println!("model: {} ({file_mb:.1} MB)", model.display());
    println!(
        "host: {} cores, {}",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        std::env::consts::ARCH
    );
    println!("| input | threads | load ms | median ms | min ms | p90 ms | peak RSS MB | RSS after runs MB |");
    println!("|---|---|---|---|---|---|---|---|");
    for &size in sizes {
        for &t in threads {
            let out = Command::new(&exe)
                .args(["bench-one", "--model"])
                .arg(&model)
                .args(["--size", &size.to_string(), "--threads", &t.to_string(), "--runs", &runs.to_string()])
                .output()
                .context("running a benchmark child")?;
            if !out.status.success() {
                bail!("benchmark at {size} px, {t} threads failed: {}", String::from_utf8_lossy(&out.stderr));
            }
            let r: serde_json::Value = serde_json::from_slice(&out.stdout).context("child output")?;
            println!(
                "| {size} | {t} | {:.0} | {:.1} | {:.1} | {:.1} | {:.0} | {:.0} |",
                r["load_ms"].as_f64().unwrap_or(f64::NAN),
                r["median_ms"].as_f64().unwrap_or(f64::NAN),
                r["min_ms"].as_f64().unwrap_or(f64::NAN),
                r["p90_ms"].as_f64().unwrap_or(f64::NAN),
                r["peak_rss_kb"].as_f64().unwrap_or(f64::NAN) / 1024.0,
                r["rss_kb"].as_f64().unwrap_or(f64::NAN) / 1024.0,
            );
        }
    }
    println!("(median of {runs} runs after one warm-up; each row in its own process)");
    Ok(())
}

/// One configuration in this process; prints a JSON object.
pub fn bench_one(model: &Path, size: u32, threads: usize, runs: usize) -> Result<()> {
    let start = Instant::now();
    let mut m = Model::load(model, &LoadOptions { input_size: Some(size), threads, labels: None })?;
    let load_ms = start.elapsed().as_secs_f64() * 1e3;
    let input: Vec<f32> = (0..m.input_len()).map(|i| ((i * 7919 % 255) as f32) / 127.5 - 1.0).collect();
    m.logits(&input)?;
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        std::hint::black_box(m.logits(&input)?);
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    let pct = |p: f64| times[((times.len() - 1) as f64 * p).round() as usize];
    println!(
        "{}",
        serde_json::json!({
            "load_ms": load_ms,
            "median_ms": pct(0.5),
            "min_ms": times[0],
            "p90_ms": pct(0.9),
            "peak_rss_kb": status_kb("VmHWM:"),
            "rss_kb": status_kb("VmRSS:"),
        })
    );
    Ok(())
}

/// A memory figure of this process from /proc/self/status (`VmHWM:` peak RSS, `VmRSS:`
/// current), in KiB; 0 where /proc is unavailable.
fn status_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}
