//! The configuration file: TOML in, a validated [`Config`] out, every problem named by its
//! field before any device is opened.
//!
//! Parsing is two steps (ripgrep's low-level then high-level flags): serde reads the file
//! into the `Raw*` structs of [`raw`] that mirror it (unknown keys are errors, so a typo is
//! never silently ignored; every default is written there, once), then the validators of
//! [`check`] check ranges, combinations and paths, collecting every problem instead of
//! stopping at the first. Relative paths are taken relative to the configuration file's
//! directory. `examples/config.toml` documents every key. Numeric values are checked
//! against the ranges the code can use (a frame rate of 1e-300 would make a period no
//! `Duration` holds).

mod check;
mod raw;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bit_runtime::{Roi, YuvColor};
use serde::Deserialize;

pub use crate::gpio::linux::LineSpec as LineRef;
pub use crate::gpio::{Edge, TriggerConfig};

/// Where the service looks when `--config` is not given.
pub const DEFAULT_PATH: &str = "/etc/camera-classifier/config.toml";

/// `[mqtt]`, validated (used by [`crate::mqtt`]; defined here so that the configuration
/// depends on no part of the daemon it configures).
#[derive(Clone, PartialEq)]
pub struct MqttConfig {
    /// Broker host name or address.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// Client identifier (unique per broker).
    pub client_id: String,
    /// User name, if the broker wants one.
    pub username: Option<String>,
    /// Password (read from `password_file`).
    pub password: Option<String>,
    /// Device identifier in topics and discovery.
    pub device_id: String,
    /// Topic prefix.
    pub topic_prefix: String,
    /// QoS of result messages (0 or 1).
    pub qos: u8,
    /// Publish every result, not only label changes.
    pub results: bool,
    /// Keep-alive interval.
    pub keep_alive: Duration,
    /// Home Assistant discovery prefix, if discovery is on.
    pub home_assistant: Option<String>,
    /// Capacity of the client's request queue (beyond: dropped and counted).
    pub queue: usize,
}

impl fmt::Debug for MqttConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MqttConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("client_id", &self.client_id)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<hidden>"))
            .field("topic_prefix", &self.topic_prefix)
            .field("qos", &self.qos)
            .field("results", &self.results)
            .field("home_assistant", &self.home_assistant)
            .finish()
    }
}

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

/// `[http]`.
#[derive(Clone, Debug, PartialEq)]
pub struct HttpSection {
    /// Address and port to listen on (`127.0.0.1:8080` by default: localhost only).
    pub bind: std::net::SocketAddr,
    /// Connections held at once (beyond: the oldest idle one is closed, or 503).
    pub max_connections: usize,
    /// Connections held at once from one IP address.
    pub max_connections_per_client: usize,
    /// Host names the page may be reached by besides IP addresses, `localhost` and this machine's
    /// name (`Host` is checked against DNS rebinding).
    pub allowed_hosts: Vec<String>,
    /// An `/events` stream ends after this long; the page reconnects.
    pub event_stream_lifetime: Duration,
    /// Keys of the old thread-pool server that were set and are ignored (start-up warns).
    pub ignored: Vec<&'static str>,
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
    /// The YUV matrix and range of the camera's YUV frames; `None` takes what the driver
    /// reports for the negotiated format (`colorspace`, `ycbcr_enc`, `quantization`). For
    /// drivers that report wrong values.
    pub yuv: Option<YuvColor>,
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
    pub trigger: Option<GpioTrigger>,
    /// Output lines driven by rules.
    pub outputs: Vec<OutputLineConfig>,
}

/// `[gpio.trigger]`: the line, and how its edges are debounced and read.
#[derive(Clone, Debug, PartialEq)]
pub struct GpioTrigger {
    /// The input line.
    pub line: LineRef,
    /// Edge, polarity and debounce.
    pub trigger: TriggerConfig,
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

/// Whether result lines go to stdout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JsonOutput {
    /// Always.
    On,
    /// Never.
    Off,
    /// Unless stdout is the systemd journal (`$JOURNAL_STREAM` names it): there every result
    /// line would be a journal entry (430,000 a day at 5 fps); the journal gets the periodic
    /// statistics and results go to the configured sinks.
    Auto,
}

impl JsonOutput {
    /// Whether lines go to stdout when `journal` says stdout is the journal.
    pub fn enabled(self, journal: bool) -> bool {
        match self {
            JsonOutput::On => true,
            JsonOutput::Off => false,
            JsonOutput::Auto => !journal,
        }
    }
}

/// `[output]`.
#[derive(Clone, Debug, PartialEq)]
pub struct OutputConfig {
    /// One JSON line per classification on stdout.
    pub json: JsonOutput,
    /// Save frames classified on a trigger as JPEG.
    pub save_frames: bool,
    /// Save every n-th classified frame too (`None`: only triggered ones, if `save_frames`).
    pub save_every: Option<u64>,
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
    #[error("configuration {}", path.display())]
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

/// An error and its causes on one line (`a: b: c`), for a problem's message.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

fn list(problems: &[Problem]) -> String {
    problems.iter().map(|p| format!("\n  {}: {}", p.field, p.message)).collect()
}

impl Config {
    /// Reads and validates the file at `path` (at most 1 MiB: a configuration is a few KiB).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        use std::io::Read;
        let mut text = String::new();
        std::fs::File::open(path)
            .and_then(|f| f.take(1 << 20 | 1).read_to_string(&mut text))
            .map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        if text.len() > 1 << 20 {
            return Err(ConfigError::Syntax { path: path.to_owned(), message: "larger than 1 MiB".into() });
        }
        Config::parse(&text, path)
    }

    /// Validates `text`, the contents of the file at `path` (relative paths in it are taken
    /// relative to `path`'s directory).
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let raw: raw::RawConfig = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: path.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        let base = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        check::config(raw, base).map_err(|problems| ConfigError::Invalid { path: path.to_owned(), problems })
    }

    /// The model's class names (from its metadata, or the configured label file), and a
    /// check that every label an output rule names is one of them. Reads the model file's
    /// metadata only (no optimization).
    pub fn check_model(&self) -> Result<Vec<String>, ConfigError> {
        let info = bit_runtime::ModelInfo::read(&self.model.path).map_err(|e| ConfigError::Invalid {
            path: self.model.path.clone(),
            problems: vec![Problem { field: "model.path".into(), message: chain(&e) }],
        })?;
        let labels = match &self.model.labels {
            Some(p) => bit_runtime::read_labels(p).map_err(|e| ConfigError::Invalid {
                path: p.clone(),
                problems: vec![Problem { field: "model.labels".into(), message: chain(&e) }],
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
        assert_eq!(cam.yuv, None, "the driver's report");
        assert_eq!(cam.timeout, Duration::from_secs(2));
        assert_eq!(c.mode, Mode::Continuous { min_period: None });
        assert!(c.gpio.is_none() && c.roi.is_none() && c.control_fifo.is_none());
        assert!(c.output.json == JsonOutput::Auto && !c.output.save_frames && c.output.save_every.is_none());
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
            (t.line, t.trigger.edge, t.trigger.active_low, t.trigger.debounce),
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
    fn the_yuv_encoding_is_the_drivers_unless_named() {
        let d = dir_with_model();
        let base = "[model]\npath = \"model.onnx\"\n[camera]\ndevice = \"/dev/video0\"\n";
        for (value, want) in [
            ("auto", None),
            (
                "bt709-full",
                Some(YuvColor { matrix: bit_runtime::YuvMatrix::Bt709, range: bit_runtime::YuvRange::Full }),
            ),
            ("bt601-limited", Some(YuvColor::BT601_LIMITED)),
        ] {
            let c = parse(&d, &format!("{base}yuv = \"{value}\"\n")).unwrap();
            let SourceConfig::Camera(cam) = &c.source else { panic!("{:?}", c.source) };
            assert_eq!(cam.yuv, want, "{value}");
            if let Some(color) = want {
                assert_eq!(color.name(), value);
            }
        }
        let p = problems(&d, &format!("{base}yuv = \"rec709\"\n"));
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].0, "camera.yuv");
        assert!(p[0].1.contains("'rec709'") && p[0].1.contains("bt709-limited"), "{}", p[0].1);
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
        assert_eq!(
            (h.max_connections, h.max_connections_per_client, h.preview_fps, h.preview_quality),
            (256, 64, 2.0, 75)
        );
        assert!(h.allowed_hosts.is_empty() && h.ignored.is_empty());
        // The old server's keys still parse (a config written for it starts) and are reported.
        let old = parse(&d, &format!("{base}[http]\nworkers = 4\nmax_queued = 16\n")).unwrap();
        assert_eq!(old.http.unwrap().ignored, ["http.workers", "http.max_queued"]);
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
                 [http]\nbind = \"localhost\"\nmax_connections = 0\nallowed_hosts = [\"a b\"]\npreview_fps = 100\n"
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
                "http.max_connections",
                "http.allowed_hosts[0]",
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
