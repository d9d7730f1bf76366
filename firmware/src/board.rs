//! Board sensors for `/metrics`, read from sysfs when scraped: temperatures, CPU frequencies
//! and the Raspberry Pi firmware's throttling flags (under-voltage and heat throttle a Pi
//! long before anything fails).

use std::path::{Path, PathBuf};

use crate::metrics::{Collector, Exposition};

/// The sensors under a sysfs root (`/sys`; a scratch tree in tests).
pub struct BoardSensors {
    /// Where sysfs is.
    pub sysfs: PathBuf,
}

impl BoardSensors {
    /// The machine's own sensors.
    pub fn new() -> BoardSensors {
        BoardSensors { sysfs: PathBuf::from("/sys") }
    }
}

impl Default for BoardSensors {
    fn default() -> Self {
        BoardSensors::new()
    }
}

impl Collector for BoardSensors {
    fn collect(&self, out: &mut Exposition) {
        write_board(out, &self.sysfs);
    }
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
fn write_board(x: &mut Exposition, sysfs: &Path) {
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
        x.header("temperature_celsius", "Thermal zone temperatures.", "gauge");
        for (zone, t) in &zones {
            x.sample("temperature_celsius", &[("zone", zone)], *t);
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
        x.header("cpu_frequency_hertz", "Current CPU frequency.", "gauge");
        for (n, cur, _) in &freqs {
            x.sample("cpu_frequency_hertz", &[("cpu", &n.to_string())], *cur);
        }
        x.header("cpu_max_frequency_hertz", "Highest CPU frequency.", "gauge");
        for (n, _, max) in &freqs {
            if let Some(m) = max {
                x.sample("cpu_max_frequency_hertz", &[("cpu", &n.to_string())], *m);
            }
        }
    }
    let throttled = sysfs.join("devices/platform/soc/soc:firmware/get_throttled");
    if let Some(flags) =
        read_trimmed(&throttled).and_then(|v| u64::from_str_radix(v.trim_start_matches("0x"), 16).ok())
    {
        x.gauge("throttled_flags", "Raspberry Pi firmware get_throttled bits.", flags as f64);
        x.gauge(
            "throttled",
            "1 while the CPU is throttled, frequency-capped or under-voltage (Pi firmware).",
            f64::from(u8::from(flags & 0x7 != 0)),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Registry;

    fn render(sysfs: &Path) -> String {
        let r = Registry::new("camera_classifier");
        r.collector("board", BoardSensors { sysfs: sysfs.to_owned() });
        let mut out = String::new();
        r.render(&mut out);
        out
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
        let out = render(d.path());
        assert!(out.contains("camera_classifier_temperature_celsius{zone=\"cpu-thermal\"} 61.85\n"), "{out}");
        assert!(out.contains("camera_classifier_cpu_frequency_hertz{cpu=\"2\"} 1500000000\n"));
        assert!(out.contains("camera_classifier_cpu_max_frequency_hertz{cpu=\"2\"} 2400000000\n"));
        assert!(out.contains("camera_classifier_throttled_flags 327685\n"));
        assert!(out.contains("camera_classifier_throttled 1\n"));

        let none = render(&d.path().join("missing"));
        assert!(none.is_empty());
    }
}
