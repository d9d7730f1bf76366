//! Metrics: counters, gauges and histograms that each part of the daemon registers at start-up
//! and updates with relaxed atomics (no lock, no allocation on the frame loop), and the
//! Prometheus text exposition `/metrics` serves.
//!
//! This module is a leaf: it knows nothing of the daemon. The frame loop, the result sinks,
//! MQTT and the HTTP server each register what they count into one [`Registry`]; values that
//! are only known when scraped (board sensors, whether MQTT is connected) come from a
//! [`Collector`]. Names follow Prometheus conventions: the registry's prefix, `_total` for
//! counters, base units (seconds, hertz, celsius).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.add(1);
    }

    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// The count.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down (stored as f64 bits).
#[derive(Debug, Default)]
pub struct Gauge(AtomicU64);

impl Gauge {
    /// Sets the value.
    pub fn set(&self, v: f64) {
        self.0.store(v.to_bits(), Ordering::Relaxed);
    }

    /// The value (0 before the first `set`).
    pub fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }
}

/// Histogram bucket upper bounds for latencies, seconds.
pub const LATENCY_BUCKETS: [f64; 14] =
    [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0];

/// A fixed-bucket histogram of durations ([`LATENCY_BUCKETS`]), lock-free.
#[derive(Debug, Default)]
pub struct Histogram {
    counts: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_ns: AtomicU64,
}

impl Histogram {
    /// Records one duration.
    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        let i = LATENCY_BUCKETS.iter().position(|&b| s <= b).unwrap_or(LATENCY_BUCKETS.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// Cumulative counts per bucket (the last is `+Inf`, the total), and the sum in seconds.
    pub fn snapshot(&self) -> ([u64; LATENCY_BUCKETS.len() + 1], f64) {
        let mut out = [0u64; LATENCY_BUCKETS.len() + 1];
        let mut acc = 0;
        for (o, c) in out.iter_mut().zip(&self.counts) {
            acc += c.load(Ordering::Relaxed);
            *o = acc;
        }
        (out, self.sum_ns.load(Ordering::Relaxed) as f64 * 1e-9)
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }
}

/// Values computed when `/metrics` is scraped.
pub trait Collector: Send + Sync {
    /// Appends samples with [`Exposition`]'s helpers.
    fn collect(&self, out: &mut Exposition);
}

impl<F: Fn(&mut Exposition) + Send + Sync> Collector for F {
    fn collect(&self, out: &mut Exposition) {
        self(out)
    }
}

enum Metric {
    Counter(Arc<Counter>),
    Gauge(Arc<Gauge>),
    /// One family: label name, then (label value, histogram) per series.
    Histograms(&'static str, Vec<(&'static str, Arc<Histogram>)>),
    /// One family: label name, then (label value, counter) per series.
    Counters(&'static str, Vec<(String, Arc<Counter>)>),
    Collector(Box<dyn Collector>),
}

struct Entry {
    name: &'static str,
    help: &'static str,
    metric: Metric,
}

/// Where every part registers its metrics; renders them for `/metrics`. Registration takes a
/// lock (start-up), updates do not (each metric is its own atomics), a scrape takes the lock
/// for as long as it renders.
pub struct Registry {
    prefix: &'static str,
    entries: Mutex<Vec<Entry>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").field("prefix", &self.prefix).finish_non_exhaustive()
    }
}

impl Registry {
    /// An empty registry; every metric name gets `<prefix>_` in front.
    pub fn new(prefix: &'static str) -> Registry {
        Registry { prefix, entries: Mutex::new(Vec::new()) }
    }

    fn push(&self, name: &'static str, help: &'static str, metric: Metric) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        debug_assert!(entries.iter().all(|e| e.name != name), "metric {name} registered twice");
        entries.push(Entry { name, help, metric });
    }

    /// Registers and returns a counter (`name` should end in `_total`).
    pub fn counter(&self, name: &'static str, help: &'static str) -> Arc<Counter> {
        let c = Arc::new(Counter::default());
        self.push(name, help, Metric::Counter(c.clone()));
        c
    }

    /// Registers and returns a gauge.
    pub fn gauge(&self, name: &'static str, help: &'static str) -> Arc<Gauge> {
        let g = Arc::new(Gauge::default());
        self.push(name, help, Metric::Gauge(g.clone()));
        g
    }

    /// Registers one histogram per label value of `label` (e.g. one per pipeline stage).
    pub fn histograms(
        &self,
        name: &'static str,
        help: &'static str,
        label: &'static str,
        values: &[&'static str],
    ) -> Vec<Arc<Histogram>> {
        let series: Vec<_> = values.iter().map(|v| (*v, Arc::new(Histogram::default()))).collect();
        let handles = series.iter().map(|(_, h)| h.clone()).collect();
        self.push(name, help, Metric::Histograms(label, series));
        handles
    }

    /// Registers one counter per label value of `label` (e.g. one per HTTP status code).
    pub fn counters(
        &self,
        name: &'static str,
        help: &'static str,
        label: &'static str,
        values: &[&str],
    ) -> Vec<Arc<Counter>> {
        let series: Vec<_> = values.iter().map(|v| (v.to_string(), Arc::new(Counter::default()))).collect();
        let handles = series.iter().map(|(_, c)| c.clone()).collect();
        self.push(name, help, Metric::Counters(label, series));
        handles
    }

    /// Registers values computed at scrape time under the family `name` (its samples are
    /// written by the collector, which may write several families).
    pub fn collector(&self, name: &'static str, collector: impl Collector + 'static) {
        self.push(name, "", Metric::Collector(Box::new(collector)));
    }

    /// The Prometheus text exposition (format 0.0.4) of every metric, in registration order.
    pub fn render(&self, out: &mut String) {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let mut x = Exposition { prefix: self.prefix, out };
        for e in entries.iter() {
            match &e.metric {
                Metric::Counter(c) => x.counter(e.name, e.help, c.get()),
                Metric::Gauge(g) => x.gauge(e.name, e.help, g.get()),
                Metric::Counters(label, series) => {
                    x.header(e.name, e.help, "counter");
                    for (v, c) in series {
                        x.sample(e.name, &[(label, v)], c.get() as f64);
                    }
                }
                Metric::Histograms(label, series) => {
                    x.header(e.name, e.help, "histogram");
                    for (v, h) in series {
                        x.histogram_series(e.name, label, v, h);
                    }
                }
                Metric::Collector(c) => c.collect(&mut x),
            }
        }
    }
}

/// Writes samples in the text exposition format. Helpers take names without the prefix.
pub struct Exposition<'a> {
    prefix: &'static str,
    out: &'a mut String,
}

impl Exposition<'_> {
    /// `# HELP` and `# TYPE` lines of a family.
    pub fn header(&mut self, name: &str, help: &str, kind: &str) {
        let p = self.prefix;
        let _ = writeln!(self.out, "# HELP {p}_{name} {help}\n# TYPE {p}_{name} {kind}");
    }

    /// One sample line, label values escaped.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], v: f64) {
        let _ = write!(self.out, "{}_{name}", self.prefix);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, val)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape(val));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {v}");
    }

    /// A whole counter family with one unlabelled sample.
    pub fn counter(&mut self, name: &str, help: &str, v: u64) {
        self.header(name, help, "counter");
        self.sample(name, &[], v as f64);
    }

    /// A whole gauge family with one unlabelled sample.
    pub fn gauge(&mut self, name: &str, help: &str, v: f64) {
        self.header(name, help, "gauge");
        self.sample(name, &[], v);
    }

    /// Text already in the exposition format (a part that renders its own families).
    pub fn raw(&mut self, text: &str) {
        self.out.push_str(text);
    }

    fn histogram_series(&mut self, name: &str, label: &str, value: &str, h: &Histogram) {
        let (cum, sum) = h.snapshot();
        let bucket = format!("{name}_bucket");
        for (b, c) in LATENCY_BUCKETS.iter().zip(&cum) {
            self.sample(&bucket, &[(label, value), ("le", &b.to_string())], *c as f64);
        }
        let total = cum[LATENCY_BUCKETS.len()];
        self.sample(&bucket, &[(label, value), ("le", "+Inf")], total as f64);
        self.sample(&format!("{name}_sum"), &[(label, value)], sum);
        self.sample(&format!("{name}_count"), &[(label, value)], total as f64);
    }
}

/// A label value with `\`, `"` and newlines escaped.
pub fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every sample line: a name, optional labels, one number; every family has a TYPE.
    pub(crate) fn assert_well_formed(out: &str) {
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
    fn histograms_are_cumulative_with_the_sum_in_seconds() {
        let h = Histogram::default();
        for ms in [0.5, 3.0, 3.0, 70.0, 9000.0] {
            h.observe(Duration::from_secs_f64(ms / 1e3));
        }
        let (cum, sum) = h.snapshot();
        // le 0.001: 1; le 0.005: 3; le 0.075: 4; +Inf: 5.
        assert_eq!((cum[0], cum[1], cum[2], cum[6], cum[13], cum[14]), (1, 1, 3, 4, 4, 5));
        assert!((sum - 9.0765).abs() < 1e-9, "{sum}");
        assert_eq!(h.count(), 5);
    }

    #[test]
    fn a_registry_renders_what_each_part_registered() {
        let r = Registry::new("cc");
        let frames = r.counter("frames_total", "Frames.");
        let up = r.gauge("source_up", "1 while open.");
        let lat = r.histograms("latency_seconds", "Latency.", "stage", &["capture", "total"]);
        let codes = r.counters("http_responses_total", "Responses.", "code", &["200", "404"]);
        r.collector("board", |x: &mut Exposition| {
            x.header("temperature_celsius", "Zones.", "gauge");
            x.sample("temperature_celsius", &[("zone", "cpu \"0\"")], 61.5);
        });
        frames.add(9);
        up.set(1.0);
        lat[1].observe(Duration::from_millis(70));
        codes[1].inc();
        let mut out = String::new();
        r.render(&mut out);
        assert!(out.contains("# TYPE cc_frames_total counter\ncc_frames_total 9\n"), "{out}");
        assert!(out.contains("cc_source_up 1\n"));
        assert!(out.contains("cc_latency_seconds_bucket{stage=\"total\",le=\"0.075\"} 1\n"));
        assert!(out.contains("cc_latency_seconds_bucket{stage=\"total\",le=\"0.05\"} 0\n"));
        assert!(out.contains("cc_latency_seconds_count{stage=\"capture\"} 0\n"));
        assert!(out.contains("cc_http_responses_total{code=\"404\"} 1\n"));
        assert!(out.contains("cc_temperature_celsius{zone=\"cpu \\\"0\\\"\"} 61.5\n"));
        assert_well_formed(&out);
    }
}
