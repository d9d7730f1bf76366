//! `bit-tool bench`: model load time, latency (median of N runs) and peak RSS per input size
//! and thread count. Each configuration runs in its own process so that peak RSS is its own.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use bit_runtime::{LoadOptions, Model};

/// Runs every (size, threads) configuration in a child process and prints a table.
pub fn bench(models: Vec<PathBuf>, sizes: &[u32], threads: &[usize], runs: usize) -> Result<()> {
    if runs == 0 {
        bail!("--runs must be at least 1");
    }
    let tmp = tempfile::tempdir().context("temporary directory")?;
    let models = if models.is_empty() {
        let ckpt = tmp.path().join("BiT-S-R50x1-synthetic.npz");
        let onnx = tmp.path().join("bit-s-r50x1.onnx");
        eprintln!(
            "bench: no --model; making a synthetic BiT-S-R50x1 (random weights) in {}",
            tmp.path().display()
        );
        let arch = bit_tools::Arch { depths: vec![3, 4, 6, 3], width: 1, num_classes: 1000 };
        bit_tools::synth::write_synthetic(&ckpt, &arch, 0, bit_tools::Layout::Npz, None)?;
        bit_tools::import_checkpoint(&ckpt, &onnx, &Default::default())?;
        vec![onnx]
    } else {
        models
    };
    let exe = std::env::current_exe().context("locating bit-tool")?;
    for (i, model) in models.iter().enumerate() {
        let file_mb = std::fs::metadata(model).map(|m| m.len() as f64 / 1e6).unwrap_or(f64::NAN);
        println!("model {}: {} ({file_mb:.1} MB)", i + 1, model.display());
    }
    println!(
        "host: {} cores, {}",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        std::env::consts::ARCH
    );
    println!(
        "| model | input | threads | load ms | median ms | min ms | p90 ms | peak RSS MB | RSS after runs MB |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    // Models alternate inside each (size, threads) pair: they are measured side by side.
    for &size in sizes {
        for &t in threads {
            for (i, model) in models.iter().enumerate() {
                let out = Command::new(&exe)
                    .args(["bench-one", "--model"])
                    .arg(model)
                    .args([
                        "--size",
                        &size.to_string(),
                        "--threads",
                        &t.to_string(),
                        "--runs",
                        &runs.to_string(),
                    ])
                    .output()
                    .context("running a benchmark child")?;
                if !out.status.success() {
                    bail!(
                        "benchmark of {} at {size} px, {t} threads failed: {}",
                        model.display(),
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
                let r: serde_json::Value = serde_json::from_slice(&out.stdout).context("child output")?;
                let f = |k: &str| r[k].as_f64().unwrap_or(f64::NAN);
                println!(
                    "| {} | {size} | {t} | {:.0} | {:.1} | {:.1} | {:.1} | {:.0} | {:.0} |",
                    i + 1,
                    f("load_ms"),
                    f("median_ms"),
                    f("min_ms"),
                    f("p90_ms"),
                    f("peak_rss_kb") / 1024.0,
                    f("rss_kb") / 1024.0,
                );
            }
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

/// Prints tract's per-op profile: median time per node over `runs` profiled runs, summed by
/// op kind, and the slowest nodes.
pub fn profile(model: &Path, input_size: Option<u32>, runs: usize, top: usize, threads: usize) -> Result<()> {
    let proto = bit_tools::probe::read_proto(model)?;
    let info = bit_runtime::ModelInfo::from_metadata(
        model,
        proto.metadata_props.iter().map(|e| (e.key.as_str(), e.value.as_str())),
    )?;
    let size = input_size.unwrap_or(info.preprocess.input_size);
    let mut probe = bit_tools::probe::Probe::new(model, &proto, &[], size, threads)?;
    drop(proto);
    let input: Vec<f32> =
        (0..3 * (size as usize).pow(2)).map(|i| ((i * 7919 % 255) as f32) / 127.5 - 1.0).collect();
    probe.run(&input)?;
    let mut per_node: Vec<(String, String, Vec<f64>)> = Vec::new();
    let mut totals = Vec::new();
    for _ in 0..runs.max(1) {
        let p = probe.profile(&input)?;
        if per_node.is_empty() {
            per_node = p.by_node.iter().map(|(n, o, _)| (n.clone(), o.clone(), Vec::new())).collect();
        }
        for (slot, (_, _, d)) in per_node.iter_mut().zip(&p.by_node) {
            slot.2.push(d.as_secs_f64() * 1e3);
        }
        totals.push(p.by_node.iter().map(|(_, _, d)| d.as_secs_f64() * 1e3).sum::<f64>());
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let nodes: Vec<(String, String, f64)> =
        per_node.into_iter().map(|(n, o, mut v)| (n, o, median(&mut v))).collect();
    let total = median(&mut totals);
    let mut by_op: std::collections::BTreeMap<&str, (usize, f64)> = Default::default();
    for (_, op, ms) in &nodes {
        let e = by_op.entry(op.as_str()).or_default();
        e.0 += 1;
        e.1 += ms;
    }
    let mut by_op: Vec<_> = by_op.into_iter().collect();
    by_op.sort_by(|a, b| b.1.1.total_cmp(&a.1.1));
    println!(
        "model: {} at {size} px, {threads} thread(s), median of {} profiled runs: {total:.1} ms",
        model.display(),
        runs.max(1)
    );
    println!("| op | nodes | ms | share |\n|---|---|---|---|");
    for (op, (n, ms)) in &by_op {
        println!("| {op} | {n} | {ms:.2} | {:.1}% |", 100.0 * ms / total);
    }
    let mut slow = nodes.clone();
    slow.sort_by(|a, b| b.2.total_cmp(&a.2));
    println!("\nslowest {top} nodes:\n| node | op | ms |\n|---|---|---|");
    for (n, op, ms) in slow.iter().take(top) {
        println!("| {n} | {op} | {ms:.2} |");
    }
    Ok(())
}
