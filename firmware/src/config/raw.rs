//! The file as written: serde structs that mirror it. Unknown keys are errors (a typo is
//! never silently ignored), and every default is written once, in the `Default` impl of its
//! table (serde's `#[serde(default)]` on the struct uses it for each missing key).

use std::path::PathBuf;

use serde::Deserialize;

use super::{AtEnd, Edge, LineRef};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub model: Option<RawModel>,
    pub camera: Option<RawCamera>,
    pub replay: Option<RawReplay>,
    #[serde(default)]
    pub mode: RawMode,
    pub gpio: Option<RawGpio>,
    #[serde(default)]
    pub control: RawControl,
    #[serde(default)]
    pub output: RawOutput,
    pub mqtt: Option<RawMqtt>,
    pub http: Option<RawHttp>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawModel {
    pub path: Option<PathBuf>,
    pub threads: i64,
    pub top_k: i64,
    pub input_size: Option<i64>,
    pub labels: Option<PathBuf>,
}

impl Default for RawModel {
    fn default() -> Self {
        RawModel { path: None, threads: 1, top_k: 5, input_size: None, labels: None }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRoi {
    pub x: i64,
    pub y: i64,
    pub width: i64,
    pub height: i64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawCamera {
    pub device: Option<PathBuf>,
    pub format: Option<String>,
    pub width: Option<i64>,
    pub height: Option<i64>,
    pub fps: Option<f64>,
    pub yuv: Option<String>,
    pub buffers: i64,
    pub timeout_ms: i64,
    pub reconnect_max_ms: i64,
    pub roi: Option<RawRoi>,
}

impl Default for RawCamera {
    fn default() -> Self {
        RawCamera {
            device: None,
            format: None,
            width: None,
            height: None,
            fps: None,
            yuv: None,
            buffers: 4,
            timeout_ms: 2000,
            reconnect_max_ms: 30_000,
            roi: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawReplay {
    pub path: Option<PathBuf>,
    pub fps: f64,
    pub at_end: AtEnd,
    pub roi: Option<RawRoi>,
}

impl Default for RawReplay {
    fn default() -> Self {
        RawReplay { path: None, fps: 5.0, at_end: AtEnd::Loop, roi: None }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) enum RawModeKind {
    #[default]
    Continuous,
    Interval,
    Triggered,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawMode {
    pub kind: RawModeKind,
    pub max_fps: Option<f64>,
    pub interval_ms: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawGpio {
    pub chip: Option<String>,
    pub trigger: Option<RawTrigger>,
    pub outputs: Vec<RawOutputLine>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawTrigger {
    pub line: Option<LineRef>,
    pub edge: Edge,
    pub active_low: bool,
    pub debounce_ms: i64,
}

impl Default for RawTrigger {
    fn default() -> Self {
        RawTrigger { line: None, edge: Edge::Falling, active_low: false, debounce_ms: 30 }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawOutputLine {
    pub line: Option<LineRef>,
    pub labels: Vec<String>,
    pub min_score: f64,
    pub hold_ms: i64,
    pub active_low: bool,
}

impl Default for RawOutputLine {
    fn default() -> Self {
        RawOutputLine { line: None, labels: Vec::new(), min_score: 0.5, hold_ms: 1000, active_low: false }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawControl {
    pub fifo: Option<PathBuf>,
}

/// `output.json`: `true`, `false` or `"auto"` (checked in validation, with a clear message).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub(super) enum RawJson {
    Bool(bool),
    Word(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawOutput {
    pub json: RawJson,
    pub save_frames: bool,
    pub save_every: i64,
    pub save_dir: Option<PathBuf>,
    pub max_saved: i64,
    pub jpeg_quality: i64,
    pub status_interval_s: i64,
}

impl Default for RawOutput {
    fn default() -> Self {
        RawOutput {
            json: RawJson::Word("auto".into()),
            save_frames: false,
            save_every: 0,
            save_dir: None,
            max_saved: 100,
            jpeg_quality: 85,
            status_interval_s: 10,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawMqtt {
    pub host: Option<String>,
    pub port: i64,
    pub client_id: Option<String>,
    pub device_id: Option<String>,
    pub topic_prefix: Option<String>,
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
    pub qos: i64,
    pub results: bool,
    pub keep_alive_s: i64,
    pub home_assistant: bool,
    pub discovery_prefix: String,
    pub queue: i64,
}

impl Default for RawMqtt {
    fn default() -> Self {
        RawMqtt {
            host: None,
            port: 1883,
            client_id: None,
            device_id: None,
            topic_prefix: None,
            username: None,
            password_file: None,
            qos: 0,
            results: true,
            keep_alive_s: 30,
            home_assistant: false,
            discovery_prefix: "homeassistant".into(),
            queue: 100,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawHttp {
    pub bind: String,
    pub max_connections: i64,
    pub max_connections_per_client: i64,
    pub allowed_hosts: Vec<String>,
    pub event_stream_lifetime_s: i64,
    /// Settings of the thread-pool server before 0.2: accepted and ignored (with a warning), so
    /// that an old configuration still starts.
    pub workers: Option<i64>,
    pub max_queued: Option<i64>,
    pub preview_fps: f64,
    pub preview_quality: i64,
    pub stale_after_s: i64,
}

impl Default for RawHttp {
    fn default() -> Self {
        RawHttp {
            bind: "127.0.0.1:8080".into(),
            max_connections: 256,
            max_connections_per_client: 64,
            allowed_hosts: Vec::new(),
            event_stream_lifetime_s: 600,
            workers: None,
            max_queued: None,
            preview_fps: 2.0,
            preview_quality: 75,
            stale_after_s: 10,
        }
    }
}
