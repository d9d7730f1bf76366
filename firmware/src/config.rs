//! The configuration file: TOML in, a validated [`Config`] out, every problem named by its
//! field before any device is opened.
//!
//! Parsing is two steps (ripgrep's low-level then high-level flags): serde reads the file
//! into `Raw*` structs that mirror it (unknown keys are errors, so a typo is never silently
//! ignored), then [`Config::from_raw`] checks ranges, combinations and paths, collecting
//! every problem instead of stopping at the first. Relative paths are taken relative to the
//! configuration file's directory. `examples/config.toml` documents every key.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bit_runtime::{MAX_TOP_K, PixelFormat, Roi};

pub use crate::gpio::Edge;
pub use crate::gpio::linux::LineSpec as LineRef;
use serde::Deserialize;

/// Where the service looks when `--config` is not given.
pub const DEFAULT_PATH: &str = "/etc/camera-classifier/config.toml";

/// A validated configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// The model and how to run it.
    pub model: ModelConfig,
    /// Where frames come from.
    pub source: SourceConfig,
    /// Region of each frame to classify, in frame pixels; `None` for the whole frame.
    pub roi: Option<Roi>,
    /// When frames are classified.
    pub mode: Mode,
    /// GPIO trigger and outputs, if any.
    pub gpio: Option<GpioConfig>,
    /// A FIFO that triggers a classification per `trigger` line written to it.
    pub control_fifo: Option<PathBuf>,
    /// Results and saved frames.
    pub output: OutputConfig,
    /// Results to an MQTT broker, if configured.
    pub mqtt: Option<MqttConfig>,
    /// The status page, its JSON API and `/metrics`, if configured.
    pub http: Option<HttpSection>,
}

pub use crate::mqtt::MqttConfig;

/// `[http]`.
#[derive(Clone, Debug, PartialEq)]
pub struct HttpSection {
    /// Address and port to listen on (`127.0.0.1:8080` by default: localhost only).
    pub bind: std::net::SocketAddr,
    /// Worker threads.
    pub workers: usize,
    /// Connections waiting for a worker, at most (beyond: 503).
    pub max_queued: usize,
    /// Preview frames per second for the page and `/snapshot.jpg`; 0: no preview.
    pub preview_fps: f64,
    /// JPEG quality of preview frames.
    pub preview_quality: u8,
    /// `/healthz` fails when no frame came for this long.
    pub stale_after: Duration,
}

/// `[model]`.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    /// The ONNX model (float or int8) written by `bit-tool`.
    pub path: PathBuf,
    /// Inference threads.
    pub threads: usize,
    /// Classes reported per frame.
    pub top_k: usize,
    /// Input side overriding the model's contract.
    pub input_size: Option<u32>,
    /// A label file overriding the model's labels.
    pub labels: Option<PathBuf>,
}

/// Where frames come from.
#[derive(Clone, Debug, PartialEq)]
pub enum SourceConfig {
    /// A V4L2 camera.
    Camera(CameraConfig),
    /// Image or raw frame files, played back at a set rate.
    Replay(ReplayConfig),
}

/// `[camera]`.
#[derive(Clone, Debug, PartialEq)]
pub struct CameraConfig {
    /// Device node, e.g. `/dev/video0` or a stable `/dev/v4l/by-id/...` link.
    pub device: PathBuf,
    /// Pixel format to capture (V4L2 fourcc); `None` negotiates.
    pub format: Option<[u8; 4]>,
    /// Frame size to capture; `None` negotiates.
    pub size: Option<(u32, u32)>,
    /// Frame rate to ask the driver for.
    pub fps: Option<f32>,
    /// V4L2 buffers to map.
    pub buffers: u32,
    /// No frame for this long counts as a stalled camera: it is reopened.
    pub timeout: Duration,
    /// Longest wait between reconnection attempts (the backoff doubles up to it).
    pub reconnect_max: Duration,
}

/// What a replay source does after its last file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AtEnd {
    /// Start again from the first file.
    Loop,
    /// End the stream: the daemon exits cleanly once the last frame is handled.
    Stop,
    /// Deliver nothing more (a stalled camera, as far as the daemon can tell).
    Wait,
}

/// `[replay]`.
#[derive(Clone, Debug, PartialEq)]
pub struct ReplayConfig {
    /// A directory of images (png, jpg, bmp, ppm) and raw frame files
    /// (`<name>.<W>x<H>.<yuyv|uyvy|nv12|rgb|bgr|grey|mjpg>`), or one such file.
    pub path: PathBuf,
    /// Frames per second delivered.
    pub fps: f32,
    /// After the last file.
    pub at_end: AtEnd,
}

/// When frames are classified.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Mode {
    /// Every frame, at most one per `min_period` (`None`: as fast as inference allows).
    Continuous {
        /// Shortest time between two classifications.
        min_period: Option<Duration>,
    },
    /// One frame per period, on a fixed schedule.
    Interval(Duration),
    /// Only when a trigger fires (GPIO line, SIGUSR1, control FIFO).
    Triggered,
}

/// `[gpio]`.
#[derive(Clone, Debug, PartialEq)]
pub struct GpioConfig {
    /// The chip: a path (`/dev/gpiochip0`), a name (`gpiochip4`) or a label (`pinctrl-rp1`,
    /// the robust choice: Pi 5 chip numbers changed between kernels).
    pub chip: String,
    /// The trigger input, if any.
    pub trigger: Option<TriggerConfig>,
    /// Output lines driven by rules.
    pub outputs: Vec<OutputLineConfig>,
}

/// `[gpio.trigger]`.
#[derive(Clone, Debug, PartialEq)]
pub struct TriggerConfig {
    /// The input line.
    pub line: LineRef,
    /// Which transitions fire.
    pub edge: Edge,
    /// The line is active when low (a button to ground with a pull-up).
    pub active_low: bool,
    /// A level must hold this long to count.
    pub debounce: Duration,
}

/// `[[gpio.outputs]]`: "label in `labels` with score >= `min_score` sets the line active for
/// `hold`".
#[derive(Clone, Debug, PartialEq)]
pub struct OutputLineConfig {
    /// The output line.
    pub line: LineRef,
    /// Labels that match (as the model names them).
    pub labels: Vec<String>,
    /// Lowest softmax score that matches.
    pub min_score: f32,
    /// How long the line stays active after the last match.
    pub hold: Duration,
    /// Active means electrically low.
    pub active_low: bool,
}

/// `[output]`.
#[derive(Clone, Debug, PartialEq)]
pub struct OutputConfig {
    /// One JSON line per classification on stdout.
    pub json: bool,
    /// Save frames classified on a trigger as JPEG.
    pub save_frames: bool,
    /// Where; `None`: `$STATE_DIRECTORY/frames` under systemd, else `./frames`.
    pub save_dir: Option<PathBuf>,
    /// Most frames kept; the oldest are removed first.
    pub max_saved: usize,
    /// JPEG quality of saved raw frames (MJPEG frames are saved as they came).
    pub jpeg_quality: u8,
    /// How often the rate and latency go to the log and to systemd's STATUS=.
    pub status_interval: Duration,
}

/// One problem with the configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The key, dotted (`gpio.outputs[1].min_score`).
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

/// Why a configuration was refused: the file and every problem found.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("configuration {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Not valid TOML, or a key of the wrong type or unknown.
    #[error("configuration {}: {message}", path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// toml's message, with line and column.
        message: String,
    },
    /// Values out of range, missing or contradicting each other.
    #[error("configuration {}: {} problem(s):{}", path.display(), problems.len(), list(problems))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Every problem found.
        problems: Vec<Problem>,
    },
}

fn list(problems: &[Problem]) -> String {
    problems.iter().map(|p| format!("\n  {}: {}", p.field, p.message)).collect()
}

// ---- the file as written ----

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    model: Option<RawModel>,
    camera: Option<RawCamera>,
    replay: Option<RawReplay>,
    #[serde(default)]
    mode: RawMode,
    gpio: Option<RawGpio>,
    #[serde(default)]
    control: RawControl,
    #[serde(default)]
    output: RawOutput,
    mqtt: Option<RawMqtt>,
    http: Option<RawHttp>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMqtt {
    host: Option<String>,
    #[serde(default = "mqtt_port")]
    port: i64,
    client_id: Option<String>,
    device_id: Option<String>,
    topic_prefix: Option<String>,
    username: Option<String>,
    password_file: Option<PathBuf>,
    #[serde(default)]
    qos: i64,
    #[serde(default = "yes")]
    results: bool,
    #[serde(default = "thirty")]
    keep_alive_s: i64,
    #[serde(default)]
    home_assistant: bool,
    #[serde(default = "discovery_prefix")]
    discovery_prefix: String,
    #[serde(default = "hundred")]
    queue: i64,
}

fn mqtt_port() -> i64 {
    1883
}
fn discovery_prefix() -> String {
    "homeassistant".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    #[serde(default = "http_bind")]
    bind: String,
    #[serde(default = "four")]
    workers: i64,
    #[serde(default = "sixteen")]
    max_queued: i64,
    #[serde(default = "two_f")]
    preview_fps: f64,
    #[serde(default = "seventy_five")]
    preview_quality: i64,
    #[serde(default = "ten")]
    stale_after_s: i64,
}

fn http_bind() -> String {
    "127.0.0.1:8080".into()
}
fn sixteen() -> i64 {
    16
}
fn two_f() -> f64 {
    2.0
}
fn seventy_five() -> i64 {
    75
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModel {
    path: Option<PathBuf>,
    #[serde(default = "one")]
    threads: i64,
    #[serde(default = "five")]
    top_k: i64,
    input_size: Option<i64>,
    labels: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoi {
    x: i64,
    y: i64,
    width: i64,
    height: i64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCamera {
    device: Option<PathBuf>,
    format: Option<String>,
    width: Option<i64>,
    height: Option<i64>,
    fps: Option<f64>,
    #[serde(default = "four")]
    buffers: i64,
    #[serde(default = "two_seconds")]
    timeout_ms: i64,
    #[serde(default = "thirty_seconds")]
    reconnect_max_ms: i64,
    roi: Option<RawRoi>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReplay {
    path: Option<PathBuf>,
    #[serde(default = "five_f")]
    fps: f64,
    #[serde(default = "at_end_loop")]
    at_end: AtEnd,
    roi: Option<RawRoi>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
enum RawModeKind {
    #[default]
    Continuous,
    Interval,
    Triggered,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMode {
    #[serde(default)]
    kind: RawModeKind,
    max_fps: Option<f64>,
    interval_ms: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGpio {
    chip: Option<String>,
    trigger: Option<RawTrigger>,
    #[serde(default)]
    outputs: Vec<RawOutputLine>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTrigger {
    line: Option<LineRef>,
    #[serde(default = "falling")]
    edge: Edge,
    #[serde(default)]
    active_low: bool,
    #[serde(default = "thirty")]
    debounce_ms: i64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOutputLine {
    line: Option<LineRef>,
    #[serde(default)]
    labels: Vec<String>,
    #[serde(default = "half")]
    min_score: f64,
    #[serde(default = "one_second")]
    hold_ms: i64,
    #[serde(default)]
    active_low: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawControl {
    fifo: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOutput {
    #[serde(default = "yes")]
    json: bool,
    #[serde(default)]
    save_frames: bool,
    save_dir: Option<PathBuf>,
    #[serde(default = "hundred")]
    max_saved: i64,
    #[serde(default = "eighty_five")]
    jpeg_quality: i64,
    #[serde(default = "ten")]
    status_interval_s: i64,
}

impl Default for RawOutput {
    fn default() -> Self {
        RawOutput {
            json: true,
            save_frames: false,
            save_dir: None,
            max_saved: 100,
            jpeg_quality: 85,
            status_interval_s: 10,
        }
    }
}

fn one() -> i64 {
    1
}
fn five() -> i64 {
    5
}
fn four() -> i64 {
    4
}
fn ten() -> i64 {
    10
}
fn thirty() -> i64 {
    30
}
fn hundred() -> i64 {
    100
}
fn eighty_five() -> i64 {
    85
}
fn two_seconds() -> i64 {
    2000
}
fn thirty_seconds() -> i64 {
    30_000
}
fn one_second() -> i64 {
    1000
}
fn five_f() -> f64 {
    5.0
}
fn half() -> f64 {
    0.5
}
fn yes() -> bool {
    true
}
fn falling() -> Edge {
    Edge::Falling
}
fn at_end_loop() -> AtEnd {
    AtEnd::Loop
}

// ---- validation ----

struct Checker<'a> {
    base: &'a Path,
    problems: Vec<Problem>,
}

impl Checker<'_> {
    fn problem(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem { field: field.into(), message: message.into() });
    }

    /// `value` if it lies in `range`, else a problem and `None`.
    fn int<T: TryFrom<i64>>(
        &mut self,
        field: &str,
        value: i64,
        range: std::ops::RangeInclusive<i64>,
    ) -> Option<T> {
        if !range.contains(&value) {
            self.problem(field, format!("{value} is not in {}..={}", range.start(), range.end()));
            return None;
        }
        T::try_from(value).ok()
    }

    fn float(&mut self, field: &str, value: f64, min_exclusive: f64, max: f64) -> Option<f64> {
        if !(value.is_finite() && value > min_exclusive && value <= max) {
            self.problem(field, format!("{value} is not in ({min_exclusive}, {max}]"));
            return None;
        }
        Some(value)
    }

    fn path(&self, p: &Path) -> PathBuf {
        if p.is_absolute() { p.to_owned() } else { self.base.join(p) }
    }

    fn roi(&mut self, field: &str, raw: &Option<RawRoi>) -> Option<Roi> {
        let r = raw.as_ref()?;
        let x = self.int(&format!("{field}.x"), r.x, 0..=16383);
        let y = self.int(&format!("{field}.y"), r.y, 0..=16383);
        let w = self.int(&format!("{field}.width"), r.width, 1..=16384);
        let h = self.int(&format!("{field}.height"), r.height, 1..=16384);
        Some(Roi { x: x?, y: y?, width: w?, height: h? })
    }
}

impl Config {
    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        Config::parse(&text, path)
    }

    /// Validates `text`, the contents of the file at `path` (relative paths in it are taken
    /// relative to `path`'s directory).
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: path.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        let base = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        Config::from_raw(raw, base)
            .map_err(|problems| ConfigError::Invalid { path: path.to_owned(), problems })
    }

    fn from_raw(raw: RawConfig, base: &Path) -> Result<Config, Vec<Problem>> {
        let mut c = Checker { base, problems: Vec::new() };

        let model = match &raw.model {
            None => {
                c.problem("model", "missing: the [model] table with its path");
                None
            }
            Some(m) => {
                let path = match &m.path {
                    None => {
                        c.problem("model.path", "missing");
                        None
                    }
                    Some(p) => {
                        let p = c.path(p);
                        if !p.is_file() {
                            c.problem("model.path", format!("{}: no such file", p.display()));
                        }
                        Some(p)
                    }
                };
                let threads = c.int("model.threads", m.threads, 1..=64);
                let top_k = c.int("model.top_k", m.top_k, 1..=MAX_TOP_K as i64);
                let input_size = m.input_size.map(|s| c.int::<u32>("model.input_size", s, 32..=1024));
                let labels = m.labels.as_ref().map(|p| {
                    let p = c.path(p);
                    if !p.is_file() {
                        c.problem("model.labels", format!("{}: no such file", p.display()));
                    }
                    p
                });
                match (path, threads, top_k, input_size) {
                    (Some(path), Some(threads), Some(top_k), None | Some(Some(_))) => {
                        Some(ModelConfig { path, threads, top_k, input_size: input_size.flatten(), labels })
                    }
                    _ => None,
                }
            }
        };

        let (source, roi) = match (&raw.camera, &raw.replay) {
            (Some(_), Some(_)) => {
                c.problem("camera", "both [camera] and [replay] are given: choose one source");
                (None, None)
            }
            (None, None) => {
                c.problem("camera", "missing: a [camera] (or a [replay] source)");
                (None, None)
            }
            (Some(cam), None) => {
                let roi = c.roi("camera.roi", &cam.roi);
                (camera(&mut c, cam).map(SourceConfig::Camera), roi)
            }
            (None, Some(rep)) => {
                let roi = c.roi("replay.roi", &rep.roi);
                (replay(&mut c, rep).map(SourceConfig::Replay), roi)
            }
        };

        let mode = mode(&mut c, &raw.mode);
        let gpio = raw.gpio.as_ref().and_then(|g| gpio(&mut c, g));
        if matches!(mode, Some(Mode::Triggered)) && gpio.as_ref().and_then(|g| g.trigger.as_ref()).is_none() {
            log::info!("triggered mode without [gpio.trigger]: SIGUSR1 and the control FIFO trigger");
        }
        let control_fifo = raw.control.fifo.as_ref().map(|p| c.path(p));
        let output = output(&mut c, &raw.output);
        let mqtt = raw.mqtt.as_ref().and_then(|m| mqtt(&mut c, m));
        let http = raw.http.as_ref().and_then(|h| http(&mut c, h));

        match (model, source, mode, output) {
            (Some(model), Some(source), Some(mode), Some(output)) if c.problems.is_empty() => {
                Ok(Config { model, source, roi, mode, gpio, control_fifo, output, mqtt, http })
            }
            _ => Err(c.problems),
        }
    }

    /// The model's class names (from its metadata, or the configured label file), and a
    /// check that every label an output rule names is one of them. Reads the model file's
    /// metadata only (no optimization).
    pub fn check_model(&self) -> Result<Vec<String>, ConfigError> {
        let info = bit_runtime::ModelInfo::read(&self.model.path).map_err(|e| ConfigError::Invalid {
            path: self.model.path.clone(),
            problems: vec![Problem { field: "model.path".into(), message: format!("{e}") }],
        })?;
        let labels = match &self.model.labels {
            Some(p) => bit_runtime::read_labels(p).map_err(|e| ConfigError::Invalid {
                path: p.clone(),
                problems: vec![Problem { field: "model.labels".into(), message: format!("{e}") }],
            })?,
            None => info.labels.clone().unwrap_or_default(),
        };
        let mut problems = Vec::new();
        if let Some(g) = &self.gpio {
            for (i, o) in g.outputs.iter().enumerate() {
                for l in &o.labels {
                    if !labels.iter().any(|m| m == l) {
                        let near: Vec<&str> = labels
                            .iter()
                            .filter(|m| m.to_lowercase().contains(&l.to_lowercase()))
                            .take(5)
                            .map(String::as_str)
                            .collect();
                        problems.push(Problem {
                            field: format!("gpio.outputs[{i}].labels"),
                            message: if near.is_empty() {
                                format!("'{l}' is not a class of the model ({} classes)", labels.len())
                            } else {
                                format!("'{l}' is not a class of the model; similar: {near:?}")
                            },
                        });
                    }
                }
            }
        }
        if problems.is_empty() {
            Ok(labels)
        } else {
            Err(ConfigError::Invalid { path: self.model.path.clone(), problems })
        }
    }
}

fn camera(c: &mut Checker, cam: &RawCamera) -> Option<CameraConfig> {
    let device = match &cam.device {
        None => {
            c.problem("camera.device", "missing (e.g. /dev/video0 or /dev/v4l/by-id/...)");
            None
        }
        Some(d) if !d.is_absolute() => {
            c.problem("camera.device", format!("{}: not an absolute device path", d.display()));
            None
        }
        Some(d) => Some(d.clone()),
    };
    let format = match &cam.format {
        None => Some(None),
        Some(f) if f.eq_ignore_ascii_case("auto") => Some(None),
        Some(f) => {
            let code: Option<[u8; 4]> = f.as_bytes().try_into().ok();
            let known = code.and_then(|code| {
                // The Pi's legacy driver calls its JPEG stream 'JPEG'.
                (PixelFormat::from_fourcc(code).is_some() || &code == b"JPEG").then_some(code)
            });
            if known.is_none() {
                let names: Vec<String> = PixelFormat::ALL.iter().map(|p| p.to_string()).collect();
                c.problem(
                    "camera.format",
                    format!("'{f}' is not a format the runtime reads ({})", names.join(", ")),
                );
            }
            known.map(Some)
        }
    };
    let size = match (cam.width, cam.height) {
        (None, None) => Some(None),
        (Some(w), Some(h)) => {
            let w = c.int::<u32>("camera.width", w, 1..=16384);
            let h = c.int::<u32>("camera.height", h, 1..=16384);
            Some(w.zip(h))
        }
        _ => {
            c.problem("camera.width", "width and height go together: give both or neither");
            None
        }
    };
    let fps = cam.fps.map(|f| c.float("camera.fps", f, 0.0, 1000.0));
    let buffers = c.int("camera.buffers", cam.buffers, 2..=32);
    let timeout = c.int::<u64>("camera.timeout_ms", cam.timeout_ms, 100..=600_000);
    let reconnect = c.int::<u64>("camera.reconnect_max_ms", cam.reconnect_max_ms, 100..=3_600_000);
    Some(CameraConfig {
        device: device?,
        format: format?,
        size: size?,
        fps: match fps {
            None => None,
            Some(f) => Some(f? as f32),
        },
        buffers: buffers?,
        timeout: Duration::from_millis(timeout?),
        reconnect_max: Duration::from_millis(reconnect?),
    })
}

fn replay(c: &mut Checker, rep: &RawReplay) -> Option<ReplayConfig> {
    let path = match &rep.path {
        None => {
            c.problem("replay.path", "missing: a directory of images or raw frames");
            None
        }
        Some(p) => {
            let p = c.path(p);
            if !p.exists() {
                c.problem("replay.path", format!("{}: no such file or directory", p.display()));
            }
            Some(p)
        }
    };
    let fps = c.float("replay.fps", rep.fps, 0.0, 1000.0);
    Some(ReplayConfig { path: path?, fps: fps? as f32, at_end: rep.at_end })
}

fn mode(c: &mut Checker, m: &RawMode) -> Option<Mode> {
    match m.kind {
        RawModeKind::Continuous => {
            if m.interval_ms.is_some() {
                c.problem("mode.interval_ms", "only for kind = \"interval\"");
            }
            let min_period = match m.max_fps {
                None => Some(None),
                Some(f) => {
                    c.float("mode.max_fps", f, 0.0, 1000.0).map(|f| Some(Duration::from_secs_f64(1.0 / f)))
                }
            };
            Some(Mode::Continuous { min_period: min_period? })
        }
        RawModeKind::Interval => {
            if m.max_fps.is_some() {
                c.problem("mode.max_fps", "only for kind = \"continuous\"");
            }
            match m.interval_ms {
                None => {
                    c.problem("mode.interval_ms", "missing: kind = \"interval\" needs it");
                    None
                }
                Some(ms) => c
                    .int::<u64>("mode.interval_ms", ms, 1..=86_400_000)
                    .map(Duration::from_millis)
                    .map(Mode::Interval),
            }
        }
        RawModeKind::Triggered => {
            for (field, given) in
                [("mode.max_fps", m.max_fps.is_some()), ("mode.interval_ms", m.interval_ms.is_some())]
            {
                if given {
                    c.problem(field, "not used with kind = \"triggered\"");
                }
            }
            Some(Mode::Triggered)
        }
    }
}

fn gpio(c: &mut Checker, g: &RawGpio) -> Option<GpioConfig> {
    let chip = match &g.chip {
        None => {
            c.problem(
                "gpio.chip",
                "missing (a label such as pinctrl-bcm2711 / pinctrl-rp1, or /dev/gpiochipN)",
            );
            None
        }
        Some(s) if s.trim().is_empty() => {
            c.problem("gpio.chip", "empty");
            None
        }
        Some(s) => Some(s.clone()),
    };
    let trigger = g.trigger.as_ref().and_then(|t| {
        let line = t.line.clone();
        if line.is_none() {
            c.problem("gpio.trigger.line", "missing (an offset such as 17, or a name such as \"GPIO17\")");
        }
        let debounce = c.int::<u64>("gpio.trigger.debounce_ms", t.debounce_ms, 0..=10_000);
        Some(TriggerConfig {
            line: line?,
            edge: t.edge,
            active_low: t.active_low,
            debounce: Duration::from_millis(debounce?),
        })
    });
    let mut outputs = Vec::new();
    let mut used: Vec<(String, LineRef)> = Vec::new();
    if let Some(line) = g.trigger.as_ref().and_then(|t| t.line.clone()) {
        used.push(("gpio.trigger.line".into(), line));
    }
    for (i, o) in g.outputs.iter().enumerate() {
        let f = |k: &str| format!("gpio.outputs[{i}].{k}");
        if o.line.is_none() {
            c.problem(f("line"), "missing");
        }
        if o.labels.is_empty() {
            c.problem(f("labels"), "empty: name the labels that set this line");
        }
        let score = if (0.0..=1.0).contains(&o.min_score) {
            Some(o.min_score)
        } else {
            c.problem(f("min_score"), format!("{} is not in 0..=1", o.min_score));
            None
        };
        let hold = c.int::<u64>(&f("hold_ms"), o.hold_ms, 1..=86_400_000);
        if let Some(line) = &o.line {
            if let Some((other, _)) = used.iter().find(|(_, l)| l == line) {
                c.problem(f("line"), format!("line {line} is already used by {other}"));
            }
            used.push((f("line"), line.clone()));
        }
        if let (Some(line), Some(score), Some(hold)) = (&o.line, score, hold)
            && !o.labels.is_empty()
        {
            outputs.push(OutputLineConfig {
                line: line.clone(),
                labels: o.labels.clone(),
                min_score: score as f32,
                hold: Duration::from_millis(hold),
                active_low: o.active_low,
            });
        }
    }
    if g.trigger.is_none() && g.outputs.is_empty() {
        c.problem("gpio", "neither a trigger nor outputs: remove [gpio] or configure one");
    }
    Some(GpioConfig { chip: chip?, trigger, outputs })
}

fn output(c: &mut Checker, o: &RawOutput) -> Option<OutputConfig> {
    let max_saved = c.int("output.max_saved", o.max_saved, 1..=1_000_000);
    let quality = c.int("output.jpeg_quality", o.jpeg_quality, 1..=100);
    let status = c.int::<u64>("output.status_interval_s", o.status_interval_s, 1..=86_400);
    let save_dir = o.save_dir.as_ref().map(|p| c.path(p));
    Some(OutputConfig {
        json: o.json,
        save_frames: o.save_frames,
        save_dir,
        max_saved: max_saved?,
        jpeg_quality: quality?,
        status_interval: Duration::from_secs(status?),
    })
}

/// This machine's host name (`/proc/sys/kernel/hostname`), reduced to `[A-Za-z0-9_-]`.
pub fn device_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let id: String = host
        .trim()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' })
        .collect();
    if id.is_empty() { "camera".into() } else { id }
}

/// A topic level or prefix: non-empty, no wildcards (`+`, `#`) and no NUL.
fn topic_ok(t: &str) -> bool {
    !t.is_empty() && !t.contains(['+', '#', '\0'])
}

fn mqtt(c: &mut Checker, m: &RawMqtt) -> Option<MqttConfig> {
    let host = match &m.host {
        Some(h) if !h.trim().is_empty() => Some(h.trim().to_owned()),
        _ => {
            c.problem("mqtt.host", "missing: the broker's host name or address");
            None
        }
    };
    let port = c.int::<u16>("mqtt.port", m.port, 1..=65535);
    let qos = c.int::<u8>("mqtt.qos", m.qos, 0..=1);
    let keep_alive = c.int::<u64>("mqtt.keep_alive_s", m.keep_alive_s, 5..=3600);
    let queue = c.int::<usize>("mqtt.queue", m.queue, 1..=100_000);
    let device_id = m.device_id.clone().unwrap_or_else(device_id);
    if !topic_ok(&device_id) || device_id.contains('/') {
        c.problem("mqtt.device_id", format!("'{device_id}': must be one topic level without + # /"));
    }
    let topic_prefix = m.topic_prefix.clone().unwrap_or_else(|| format!("camera-classifier/{device_id}"));
    if !topic_ok(&topic_prefix) {
        c.problem("mqtt.topic_prefix", format!("'{topic_prefix}': empty or contains + or #"));
    }
    if m.home_assistant && !topic_ok(&m.discovery_prefix) {
        c.problem("mqtt.discovery_prefix", format!("'{}': empty or contains + or #", m.discovery_prefix));
    }
    let password = match &m.password_file {
        None => None,
        Some(p) => {
            let p = c.path(p);
            match std::fs::read_to_string(&p) {
                Ok(s) => Some(s.trim_end_matches(['\n', '\r']).to_owned()),
                Err(e) => {
                    c.problem("mqtt.password_file", format!("{}: {e}", p.display()));
                    None
                }
            }
        }
    };
    if m.password_file.is_some() && m.username.is_none() {
        c.problem("mqtt.username", "missing: a password_file is given without a username");
    }
    Some(MqttConfig {
        host: host?,
        port: port?,
        client_id: m.client_id.clone().unwrap_or_else(|| format!("camera-classifier-{device_id}")),
        username: m.username.clone(),
        password,
        device_id,
        topic_prefix,
        qos: qos?,
        results: m.results,
        keep_alive: Duration::from_secs(keep_alive?),
        home_assistant: m.home_assistant.then(|| m.discovery_prefix.clone()),
        queue: queue?,
    })
}

fn http(c: &mut Checker, h: &RawHttp) -> Option<HttpSection> {
    let bind = match h.bind.parse::<std::net::SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            c.problem("http.bind", format!("'{}' is not an address:port (e.g. 127.0.0.1:8080)", h.bind));
            None
        }
    };
    let workers = c.int("http.workers", h.workers, 1..=64);
    let max_queued = c.int("http.max_queued", h.max_queued, 1..=1024);
    let preview_fps =
        if h.preview_fps == 0.0 { Some(0.0) } else { c.float("http.preview_fps", h.preview_fps, 0.0, 30.0) };
    let quality = c.int("http.preview_quality", h.preview_quality, 1..=100);
    let stale = c.int::<u64>("http.stale_after_s", h.stale_after_s, 1..=86_400);
    Some(HttpSection {
        bind: bind?,
        workers: workers?,
        max_queued: max_queued?,
        preview_fps: preview_fps?,
        preview_quality: quality?,
        stale_after: Duration::from_secs(stale?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_with_model() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("model.onnx"), b"x").unwrap();
        std::fs::create_dir(d.path().join("frames")).unwrap();
        d
    }

    fn parse(d: &tempfile::TempDir, text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, &d.path().join("config.toml"))
    }

    fn problems(d: &tempfile::TempDir, text: &str) -> Vec<(String, String)> {
        match parse(d, text) {
            Err(ConfigError::Invalid { problems, .. }) => {
                problems.into_iter().map(|p| (p.field, p.message)).collect()
            }
            other => panic!("expected problems, got {other:?}"),
        }
    }

    #[test]
    fn a_minimal_camera_config_takes_the_defaults() {
        let d = dir_with_model();
        let c = parse(&d, "[model]\npath = \"model.onnx\"\n[camera]\ndevice = \"/dev/video0\"\n").unwrap();
        assert_eq!(c.model.path, d.path().join("model.onnx"));
        assert_eq!((c.model.threads, c.model.top_k), (1, 5));
        let SourceConfig::Camera(cam) = &c.source else { panic!("{:?}", c.source) };
        assert_eq!(cam.device, Path::new("/dev/video0"));
        assert_eq!((cam.format, cam.size, cam.fps, cam.buffers), (None, None, None, 4));
        assert_eq!(cam.timeout, Duration::from_secs(2));
        assert_eq!(c.mode, Mode::Continuous { min_period: None });
        assert!(c.gpio.is_none() && c.roi.is_none() && c.control_fifo.is_none());
        assert!(c.output.json && !c.output.save_frames);
    }

    #[test]
    fn a_full_config_is_read_field_by_field() {
        let d = dir_with_model();
        let c = parse(
            &d,
            r#"
[model]
path = "model.onnx"
threads = 2
top_k = 3
[camera]
device = "/dev/v4l/by-id/usb-046d_HD_Pro_Webcam_C920-video-index0"
format = "YUYV"
width = 640
height = 480
fps = 15
roi = { x = 80, y = 0, width = 480, height = 480 }
[mode]
kind = "triggered"
[gpio]
chip = "pinctrl-rp1"
trigger = { line = "GPIO17", edge = "rising", active_low = true, debounce_ms = 20 }
[[gpio.outputs]]
line = 27
labels = ["tabby", "tiger cat"]
min_score = 0.6
hold_ms = 1500
[control]
fifo = "/run/camera-classifier/control"
[output]
save_frames = true
max_saved = 10
"#,
        )
        .unwrap();
        let SourceConfig::Camera(cam) = &c.source else { panic!() };
        assert_eq!((cam.format, cam.size, cam.fps), (Some(*b"YUYV"), Some((640, 480)), Some(15.0)));
        assert_eq!(c.roi, Some(Roi { x: 80, y: 0, width: 480, height: 480 }));
        assert_eq!(c.mode, Mode::Triggered);
        let g = c.gpio.unwrap();
        assert_eq!(g.chip, "pinctrl-rp1");
        let t = g.trigger.unwrap();
        assert_eq!(
            (t.line, t.edge, t.active_low, t.debounce),
            (LineRef::Name("GPIO17".into()), Edge::Rising, true, Duration::from_millis(20))
        );
        assert_eq!(g.outputs.len(), 1);
        assert_eq!(g.outputs[0].line, LineRef::Offset(27));
        assert_eq!(g.outputs[0].labels, ["tabby", "tiger cat"]);
        assert_eq!((g.outputs[0].min_score, g.outputs[0].hold), (0.6, Duration::from_millis(1500)));
        assert_eq!(c.control_fifo, Some(PathBuf::from("/run/camera-classifier/control")));
        assert_eq!((c.output.save_frames, c.output.max_saved), (true, 10));
    }

    #[test]
    fn every_problem_is_reported_with_its_field() {
        let d = dir_with_model();
        let p = problems(
            &d,
            r#"
[model]
path = "missing.onnx"
threads = 0
top_k = 17
[camera]
device = "video0"
format = "H264"
width = 640
fps = -1
[mode]
kind = "interval"
[gpio]
chip = "pinctrl-bcm2711"
trigger = { line = 17, debounce_ms = 20000 }
[[gpio.outputs]]
line = 17
labels = []
min_score = 1.5
[output]
jpeg_quality = 0
"#,
        );
        let fields: Vec<&str> = p.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            fields,
            [
                "model.path",
                "model.threads",
                "model.top_k",
                "camera.device",
                "camera.format",
                "camera.width",
                "camera.fps",
                "mode.interval_ms",
                "gpio.trigger.debounce_ms",
                "gpio.outputs[0].labels",
                "gpio.outputs[0].min_score",
                "gpio.outputs[0].line",
                "output.jpeg_quality"
            ],
            "{p:#?}"
        );
        assert!(p[0].1.contains("missing.onnx: no such file"), "{}", p[0].1);
        assert!(p[4].1.contains("'H264'") && p[4].1.contains("YUYV"), "{}", p[4].1);
        assert!(p[11].1.contains("already used by gpio.trigger.line"), "{}", p[11].1);
    }

    #[test]
    fn sources_are_exclusive_and_one_is_required() {
        let d = dir_with_model();
        let none = problems(&d, "[model]\npath = \"model.onnx\"\n");
        assert_eq!(none[0].0, "camera");
        let both = problems(
            &d,
            "[model]\npath = \"model.onnx\"\n[camera]\ndevice = \"/dev/video0\"\n[replay]\npath = \"frames\"\n",
        );
        assert!(both[0].1.contains("both"), "{both:?}");
    }

    #[test]
    fn replay_paths_are_relative_to_the_config_file() {
        let d = dir_with_model();
        let c = parse(
            &d,
            "[model]\npath = \"model.onnx\"\n[replay]\npath = \"frames\"\nfps = 2.5\nat_end = \"stop\"\n",
        )
        .unwrap();
        assert_eq!(
            c.source,
            SourceConfig::Replay(ReplayConfig {
                path: d.path().join("frames"),
                fps: 2.5,
                at_end: AtEnd::Stop
            })
        );
    }

    #[test]
    fn unknown_keys_and_wrong_types_are_syntax_errors_with_a_location() {
        let d = dir_with_model();
        for (text, needle) in [
            ("[model]\npath = \"model.onnx\"\nthread = 2\n", "thread"),
            ("[model]\npath = 3\n", "path"),
            ("[model\n", "line 1"),
            ("[model]\npath = \"model.onnx\"\n[mode]\nkind = \"sometimes\"\n", "sometimes"),
        ] {
            match parse(&d, text) {
                Err(ConfigError::Syntax { message, .. }) => {
                    assert!(message.contains(needle), "{needle}: {message}")
                }
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    #[test]
    fn mode_keys_belong_to_their_kind() {
        let d = dir_with_model();
        let base = "[model]\npath = \"model.onnx\"\n[replay]\npath = \"frames\"\n";
        let c = parse(&d, &format!("{base}[mode]\nmax_fps = 4\n")).unwrap();
        assert_eq!(c.mode, Mode::Continuous { min_period: Some(Duration::from_millis(250)) });
        let c = parse(&d, &format!("{base}[mode]\nkind = \"interval\"\ninterval_ms = 5000\n")).unwrap();
        assert_eq!(c.mode, Mode::Interval(Duration::from_secs(5)));
        let p = problems(&d, &format!("{base}[mode]\nkind = \"triggered\"\nmax_fps = 4\n"));
        assert_eq!(p, [("mode.max_fps".to_string(), "not used with kind = \"triggered\"".to_string())]);
    }

    #[test]
    fn mqtt_and_http_take_their_defaults_and_check_their_values() {
        let d = dir_with_model();
        let base = "[model]\npath = \"model.onnx\"\n[replay]\npath = \"frames\"\n";
        let c =
            parse(&d, &format!("{base}[mqtt]\nhost = \"broker\"\ndevice_id = \"door\"\n[http]\n")).unwrap();
        let m = c.mqtt.unwrap();
        assert_eq!((m.host.as_str(), m.port, m.qos, m.results), ("broker", 1883, 0, true));
        assert_eq!(
            (m.topic_prefix.as_str(), m.client_id.as_str()),
            ("camera-classifier/door", "camera-classifier-door")
        );
        assert_eq!((m.home_assistant, m.password), (None, None));
        let h = c.http.unwrap();
        assert_eq!(h.bind, "127.0.0.1:8080".parse().unwrap());
        assert_eq!((h.workers, h.max_queued, h.preview_fps, h.preview_quality), (4, 16, 2.0, 75));
        assert!(parse(&d, base).unwrap().mqtt.is_none() && parse(&d, base).unwrap().http.is_none());

        std::fs::write(d.path().join("pw"), "s3cret\n").unwrap();
        let c = parse(
            &d,
            &format!("{base}[mqtt]\nhost = \"b\"\nusername = \"u\"\npassword_file = \"pw\"\nhome_assistant = true\n"),
        )
        .unwrap();
        let m = c.mqtt.unwrap();
        assert_eq!(
            (m.password.as_deref(), m.home_assistant.as_deref()),
            (Some("s3cret"), Some("homeassistant"))
        );
        assert!(!format!("{m:?}").contains("s3cret"), "the password is not logged");

        let p = problems(
            &d,
            &format!(
                "{base}[mqtt]\nport = 0\nqos = 2\ntopic_prefix = \"a/#\"\npassword_file = \"nope\"\n\
                 [http]\nbind = \"localhost\"\npreview_fps = 100\nworkers = 0\n"
            ),
        );
        let fields: Vec<&str> = p.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            fields,
            [
                "mqtt.host",
                "mqtt.port",
                "mqtt.qos",
                "mqtt.topic_prefix",
                "mqtt.password_file",
                "mqtt.username",
                "http.bind",
                "http.workers",
                "http.preview_fps",
            ],
            "{p:?}"
        );
    }

    #[test]
    fn the_example_config_parses_with_every_optional_table_enabled() {
        let d = dir_with_model();
        let text =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/config.toml"))
                .unwrap();
        // Uncomment the optional tables and their keys ("#key = value" and "#[table]").
        let mut uncommented = String::new();
        for line in text.lines() {
            let t = line.trim_start();
            let is_key = t.strip_prefix('#').is_some_and(|r| {
                r.starts_with('[') || r.split_once(" = ").is_some_and(|(k, _)| !k.contains(' '))
            });
            uncommented.push_str(if is_key { &t[1..] } else { line });
            uncommented.push('\n');
        }
        std::fs::write(d.path().join("mqtt-password"), "pw\n").unwrap();
        let uncommented = uncommented
            .replace("/etc/camera-classifier/mqtt-password", "mqtt-password")
            .replace("/var/lib/camera-classifier/frames", "frames");
        for table in ["[mqtt]", "[http]"] {
            assert!(uncommented.lines().any(|l| l == table), "{table} was not uncommented");
        }
        match parse(&d, &uncommented) {
            Ok(c) => assert!(c.mqtt.is_some() && c.http.is_some()),
            // The example names a real camera and model path; only those may be missing.
            Err(ConfigError::Invalid { problems, .. }) => {
                for p in &problems {
                    assert!(
                        ["model.path", "model.labels", "gpio"].iter().any(|f| p.field.starts_with(f)),
                        "{p:?}"
                    );
                }
            }
            Err(e) => panic!("{e}\n{uncommented}"),
        }
    }
}
