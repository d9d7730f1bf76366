//! What `/metrics` reports: the loop's counters and per-stage latency histograms as atomics
//! (written by the frame loop without locks or allocation), and the board's temperature,
//! CPU frequency and throttling read from sysfs when scraped.
//!
//! Metric names follow Prometheus conventions: `camera_classifier_` prefix, `_total` for
//! counters, base units (seconds, hertz, celsius).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::daemon::Counters;

/// The latency stages, in the order of `ResultSlot::latency`.
pub const STAGES: [&str; 5] = ["capture", "preprocess", "inference", "postprocess", "total"];

/// Histogram bucket upper bounds, seconds.
pub const BUCKETS: [f64; 14] =
    [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0];

/// A fixed-bucket histogram of durations, lock-free.
#[derive(Default)]
pub struct Histogram {
    counts: [AtomicU64; BUCKETS.len() + 1],
    sum_ns: AtomicU64,
}

impl Histogram {
    /// Records one duration.
    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        let i = BUCKETS.iter().position(|&b| s <= b).unwrap_or(BUCKETS.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(d.as_nanos().min(u64::MAX as u128) as u64, Ordering::Relaxed);
    }

    /// Cumulative counts per bucket (the last is `+Inf`, the total), and the sum in seconds.
    pub fn snapshot(&self) -> ([u64; BUCKETS.len() + 1], f64) {
        let mut out = [0u64; BUCKETS.len() + 1];
        let mut acc = 0;
        for (o, c) in out.iter_mut().zip(&self.counts) {
            acc += c.load(Ordering::Relaxed);
            *o = acc;
        }
        (out, self.sum_ns.load(Ordering::Relaxed) as f64 * 1e-9)
    }
}

/// The loop's [`Counters`] as atomics, with their metric names and help.
const COUNTERS: [(&str, &str); 11] = [
    ("frames_total", "Frames received from the source."),
    ("classified_total", "Frames classified."),
    ("bad_frames_total", "Frames refused by the runtime (corrupt, wrong size)."),
    ("inference_errors_total", "Inference failures."),
    ("source_errors_total", "Source failures (device lost, I/O errors)."),
    ("stalls_total", "Times the source sent no frame for longer than its timeout."),
    ("reconnects_total", "Successful reopenings of the source."),
    ("triggers_total", "Triggers taken."),
    ("coalesced_triggers_total", "Triggers merged into a pending one."),
    ("stale_frames_skipped_total", "Frames skipped because they were captured before the trigger."),
    ("saved_frames_total", "Frames saved to disk."),
];

fn counter_values(c: &Counters) -> [u64; 11] {
    [
        c.frames,
        c.classified,
        c.bad_frames,
        c.inference_errors,
        c.source_errors,
        c.stalls,
        c.reconnects,
        c.triggers,
        c.coalesced,
        c.stale_skipped,
        c.saved,
    ]
}

/// Shared between the frame loop (writer) and the status server (reader).
pub struct Telemetry {
    counters: [AtomicU64; 11],
    latency: [Histogram; 5],
    started: Duration,
    /// Monotonic time of the last frame, in microseconds (`u64::MAX`: none yet).
    last_frame_us: AtomicU64,
    source_open: AtomicBool,
    model: String,
    labels: Vec<String>,
    /// Extra counters owned by integrations (MQTT), appended by their own writers.
    pub mqtt: crate::mqtt::MqttStats,
    /// Where board sensors are read (`/sys`; a scratch tree in tests).
    pub sysfs: PathBuf,
}

impl Telemetry {
    /// Empty telemetry for a model file named `model` with these class names.
    pub fn new(model: &str, labels: &[String]) -> Telemetry {
        Telemetry {
            counters: Default::default(),
            latency: Default::default(),
            started: crate::monotonic_now(),
            last_frame_us: AtomicU64::new(u64::MAX),
            source_open: AtomicBool::new(false),
            model: model.to_owned(),
            labels: labels.to_vec(),
            mqtt: Default::default(),
            sysfs: PathBuf::from("/sys"),
        }
    }

    /// The model's file name.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// The model's class names.
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// Copies the loop's counters (11 relaxed stores).
    pub fn store_counters(&self, c: &Counters) {
        for (a, v) in self.counters.iter().zip(counter_values(c)) {
            a.store(v, Ordering::Relaxed);
        }
    }

    /// The counters as last stored.
    pub fn counters(&self) -> Counters {
        let v: [u64; 11] = std::array::from_fn(|i| self.counters[i].load(Ordering::Relaxed));
        Counters {
            frames: v[0],
            classified: v[1],
            bad_frames: v[2],
            inference_errors: v[3],
            source_errors: v[4],
            stalls: v[5],
            reconnects: v[6],
            triggers: v[7],
            coalesced: v[8],
            stale_skipped: v[9],
            saved: v[10],
        }
    }

    /// Records a frame's arrival at monotonic time `now`.
    pub fn frame_arrived(&self, now: Duration) {
        self.last_frame_us.store(now.as_micros() as u64, Ordering::Relaxed);
    }

    /// Records whether the source is open.
    pub fn set_source_open(&self, open: bool) {
        self.source_open.store(open, Ordering::Relaxed);
    }

    /// Whether the source is open.
    pub fn source_open(&self) -> bool {
        self.source_open.load(Ordering::Relaxed)
    }

    /// Time since the last frame at monotonic time `now`; `None` before the first.
    pub fn frame_age(&self, now: Duration) -> Option<Duration> {
        match self.last_frame_us.load(Ordering::Relaxed) {
            u64::MAX => None,
            us => Some(now.saturating_sub(Duration::from_micros(us))),
        }
    }

    /// Seconds since start.
    pub fn uptime(&self, now: Duration) -> Duration {
        now.saturating_sub(self.started)
    }

    /// Records a classification's stage latencies.
    pub fn observe(&self, latency: &[Duration; 5]) {
        for (h, d) in self.latency.iter().zip(latency) {
            h.observe(*d);
        }
    }

    /// Appends the Prometheus text exposition (format 0.0.4) of everything but HTTP's own
    /// counters, with `dropped` results and the board sensors.
    pub fn write_metrics(&self, out: &mut String, dropped: u64, now: Duration) {
        let p = "camera_classifier";
        let _ = writeln!(out, "# HELP {p}_build_info Version and model.\n# TYPE {p}_build_info gauge");
        let _ = writeln!(
            out,
            "{p}_build_info{{version=\"{}\",model=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION"),
            escape(&self.model)
        );
        gauge(out, "uptime_seconds", "Seconds since start.", self.uptime(now).as_secs_f64());
        gauge(out, "source_up", "1 while the frame source is open.", f64::from(u8::from(self.source_open())));
        if let Some(age) = self.frame_age(now) {
            gauge(out, "last_frame_age_seconds", "Seconds since the last frame arrived.", age.as_secs_f64());
        }
        for ((name, help), a) in COUNTERS.iter().zip(&self.counters) {
            counter(out, name, help, a.load(Ordering::Relaxed));
        }
        counter(
            out,
            "results_dropped_total",
            "Results dropped because the integrations fell behind.",
            dropped,
        );
        self.mqtt.write_metrics(out);

        let _ = writeln!(
            out,
            "# HELP {p}_latency_seconds Latency per stage: capture is the frame's age when taken, total \
             from capture to result.\n# TYPE {p}_latency_seconds histogram"
        );
        for (stage, h) in STAGES.iter().zip(&self.latency) {
            let (cum, sum) = h.snapshot();
            for (b, c) in BUCKETS.iter().zip(&cum) {
                let _ = writeln!(out, "{p}_latency_seconds_bucket{{stage=\"{stage}\",le=\"{b}\"}} {c}");
            }
            let total = cum[BUCKETS.len()];
            let _ = writeln!(out, "{p}_latency_seconds_bucket{{stage=\"{stage}\",le=\"+Inf\"}} {total}");
            let _ = writeln!(out, "{p}_latency_seconds_sum{{stage=\"{stage}\"}} {sum}");
            let _ = writeln!(out, "{p}_latency_seconds_count{{stage=\"{stage}\"}} {total}");
        }
        write_board(out, &self.sysfs);
    }
}

/// Appends counter `camera_classifier_<name>` with its HELP and TYPE lines.
pub(crate) fn counter(out: &mut String, name: &str, help: &str, v: u64) {
    let p = "camera_classifier";
    let _ = writeln!(out, "# HELP {p}_{name} {help}\n# TYPE {p}_{name} counter\n{p}_{name} {v}");
}

/// Appends gauge `camera_classifier_<name>` with its HELP and TYPE lines.
pub(crate) fn gauge(out: &mut String, name: &str, help: &str, v: f64) {
    let p = "camera_classifier";
    let _ = writeln!(out, "# HELP {p}_{name} {help}\n# TYPE {p}_{name} gauge\n{p}_{name} {v}");
}

/// A label value with `\`, `"` and newlines escaped.
pub fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn read_trimmed(p: &Path) -> Option<String> {
    std::fs::read_to_string(p).ok().map(|s| s.trim().to_owned())
}

/// Board sensors, each only where the board exposes it:
/// - every thermal zone (`class/thermal/thermal_zone*/{type,temp}`; Pi: `cpu-thermal`,
///   Jetson: `cpu-thermal`/`CPU-therm`...);
/// - each CPU's current and maximum frequency (`devices/system/cpu/cpu*/cpufreq`);
/// - Raspberry Pi firmware's throttling flags (`devices/platform/soc/soc:firmware/get_throttled`,
///   bit 0 under-voltage, 1 frequency capped, 2 throttled, 3 soft temperature limit; bits
///   16-19 the same since boot).
fn write_board(out: &mut String, sysfs: &Path) {
    let p = "camera_classifier";
    let mut zones: Vec<(String, f64)> = Vec::new();
    if let Ok(dir) = std::fs::read_dir(sysfs.join("class/thermal")) {
        for e in dir.flatten() {
            let path = e.path();
            if !e.file_name().to_string_lossy().starts_with("thermal_zone") {
                continue;
            }
            let kind =
                read_trimmed(&path.join("type")).unwrap_or_else(|| e.file_name().to_string_lossy().into());
            if let Some(t) = read_trimmed(&path.join("temp")).and_then(|t| t.parse::<f64>().ok()) {
                zones.push((kind, t / 1000.0));
            }
        }
    }
    zones.sort_by(|a, b| a.0.cmp(&b.0));
    if !zones.is_empty() {
        let _ = writeln!(
            out,
            "# HELP {p}_temperature_celsius Thermal zone temperatures.\n# TYPE {p}_temperature_celsius gauge"
        );
        for (zone, t) in &zones {
            let _ = writeln!(out, "{p}_temperature_celsius{{zone=\"{}\"}} {t}", escape(zone));
        }
    }
    let mut freqs: Vec<(u32, f64, Option<f64>)> = Vec::new();
    if let Ok(dir) = std::fs::read_dir(sysfs.join("devices/system/cpu")) {
        for e in dir.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(n) = name.strip_prefix("cpu").and_then(|n| n.parse::<u32>().ok()) else { continue };
            let f = e.path().join("cpufreq");
            let khz = |file: &str| read_trimmed(&f.join(file)).and_then(|v| v.parse::<f64>().ok());
            if let Some(cur) = khz("scaling_cur_freq") {
                freqs.push((n, cur * 1e3, khz("cpuinfo_max_freq").map(|m| m * 1e3)));
            }
        }
    }
    freqs.sort_by_key(|f| f.0);
    if !freqs.is_empty() {
        let _ = writeln!(
            out,
            "# HELP {p}_cpu_frequency_hertz Current CPU frequency.\n# TYPE {p}_cpu_frequency_hertz gauge"
        );
        for (n, cur, _) in &freqs {
            let _ = writeln!(out, "{p}_cpu_frequency_hertz{{cpu=\"{n}\"}} {cur}");
        }
        let _ = writeln!(
            out,
            "# HELP {p}_cpu_max_frequency_hertz Highest CPU frequency.\n# TYPE {p}_cpu_max_frequency_hertz gauge"
        );
        for (n, _, max) in &freqs {
            if let Some(m) = max {
                let _ = writeln!(out, "{p}_cpu_max_frequency_hertz{{cpu=\"{n}\"}} {m}");
            }
        }
    }
    let throttled = sysfs.join("devices/platform/soc/soc:firmware/get_throttled");
    if let Some(flags) =
        read_trimmed(&throttled).and_then(|v| u64::from_str_radix(v.trim_start_matches("0x"), 16).ok())
    {
        gauge(out, "throttled_flags", "Raspberry Pi firmware get_throttled bits.", flags as f64);
        gauge(
            out,
            "throttled",
            "1 while the CPU is throttled, frequency-capped or under-voltage (Pi firmware).",
            f64::from(u8::from(flags & 0x7 != 0)),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_with_the_sum_in_seconds() {
        let h = Histogram::default();
        for ms in [0.5, 3.0, 3.0, 70.0, 9000.0] {
            h.observe(Duration::from_secs_f64(ms / 1e3));
        }
        let (cum, sum) = h.snapshot();
        // le 0.001: 1; le 0.005: 3; le 0.075: 4; +Inf: 5.
        assert_eq!((cum[0], cum[1], cum[2], cum[6], cum[13], cum[14]), (1, 1, 3, 4, 4, 5));
        assert!((sum - 9.0765).abs() < 1e-9, "{sum}");
    }

    #[test]
    fn metrics_text_is_well_formed() {
        let t = Telemetry::new("bit \"int8\".onnx", &[]);
        let c = Counters { frames: 9, classified: 4, bad_frames: 1, ..Default::default() };
        t.store_counters(&c);
        assert_eq!(t.counters(), c);
        t.observe(&[
            Duration::from_millis(2),
            Duration::ZERO,
            Duration::from_millis(70),
            Duration::ZERO,
            Duration::from_millis(80),
        ]);
        let mut out = String::new();
        t.write_metrics(&mut out, 3, crate::monotonic_now());
        assert!(out.contains("camera_classifier_frames_total 9\n"), "{out}");
        assert!(out.contains("camera_classifier_bad_frames_total 1\n"));
        assert!(out.contains("camera_classifier_results_dropped_total 3\n"));
        assert!(out.contains("model=\"bit \\\"int8\\\".onnx\""));
        assert!(
            out.contains("camera_classifier_latency_seconds_bucket{stage=\"inference\",le=\"0.075\"} 1\n")
        );
        assert!(
            out.contains("camera_classifier_latency_seconds_bucket{stage=\"inference\",le=\"0.05\"} 0\n")
        );
        assert!(out.contains("camera_classifier_latency_seconds_count{stage=\"total\"} 1\n"));
        // Every sample line: a name, optional labels, one number; every name has a TYPE.
        for line in out.lines().filter(|l| !l.starts_with('#')) {
            let (name, value) = line.rsplit_once(' ').unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line}");
            let base = name.split('{').next().unwrap();
            let family =
                ["_bucket", "_sum", "_count"].iter().fold(base, |b, s| b.strip_suffix(s).unwrap_or(b));
            assert!(out.contains(&format!("# TYPE {family} ")), "no TYPE for {line}");
        }
    }

    #[test]
    fn board_sensors_come_from_sysfs_where_present() {
        let d = tempfile::tempdir().unwrap();
        let zone = d.path().join("class/thermal/thermal_zone0");
        std::fs::create_dir_all(&zone).unwrap();
        std::fs::write(zone.join("type"), "cpu-thermal\n").unwrap();
        std::fs::write(zone.join("temp"), "61850\n").unwrap();
        let cpu = d.path().join("devices/system/cpu/cpu2/cpufreq");
        std::fs::create_dir_all(&cpu).unwrap();
        std::fs::write(cpu.join("scaling_cur_freq"), "1500000\n").unwrap();
        std::fs::write(cpu.join("cpuinfo_max_freq"), "2400000\n").unwrap();
        std::fs::create_dir_all(d.path().join("devices/system/cpu/cpufreq")).unwrap();
        let fw = d.path().join("devices/platform/soc/soc:firmware");
        std::fs::create_dir_all(&fw).unwrap();
        std::fs::write(fw.join("get_throttled"), "50005\n").unwrap();
        let mut out = String::new();
        write_board(&mut out, d.path());
        assert!(out.contains("camera_classifier_temperature_celsius{zone=\"cpu-thermal\"} 61.85\n"), "{out}");
        assert!(out.contains("camera_classifier_cpu_frequency_hertz{cpu=\"2\"} 1500000000\n"));
        assert!(out.contains("camera_classifier_cpu_max_frequency_hertz{cpu=\"2\"} 2400000000\n"));
        assert!(out.contains("camera_classifier_throttled_flags 327685\n"));
        assert!(out.contains("camera_classifier_throttled 1\n"));

        let mut none = String::new();
        write_board(&mut none, &d.path().join("missing"));
        assert!(none.is_empty());
    }
}
