//! Validation: the `Raw*` structs of [`super::raw`] to a [`Config`], every problem
//! collected with its dotted field name.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bit_runtime::{MAX_TOP_K, PixelFormat, Roi, YuvColor};

use super::raw::*;
use super::*;

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

    /// A rate (per second) in `min..=max`: bounded below so that its period (`1 / rate`)
    /// is a duration the code can hold and wait for.
    fn rate(&mut self, field: &str, value: f64, min: f64, max: f64) -> Option<f64> {
        if !(value.is_finite() && value >= min && value <= max) {
            self.problem(field, format!("{value} is not in {min}..={max}"));
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

/// Validates the whole file.
pub(super) fn config(raw: RawConfig, base: &Path) -> Result<Config, Vec<Problem>> {
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
    let fps = cam.fps.map(|f| c.rate("camera.fps", f, 0.1, 1000.0));
    let yuv = match cam.yuv.as_deref() {
        None | Some("auto") => Some(None),
        Some(name) => {
            let color = YuvColor::from_name(name);
            if color.is_none() {
                let names: Vec<&str> = YuvColor::ALL.iter().map(|c| c.name()).collect();
                c.problem(
                    "camera.yuv",
                    format!(
                        "'{name}' is not a YUV encoding: auto (as the driver reports) or one of {}",
                        names.join(", ")
                    ),
                );
            }
            color.map(Some)
        }
    };
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
        yuv: yuv?,
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
    let fps = c.rate("replay.fps", rep.fps, 0.001, 1000.0);
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
                    c.rate("mode.max_fps", f, 0.001, 1000.0).map(|f| Some(Duration::from_secs_f64(1.0 / f)))
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
        Some(GpioTrigger {
            line: line?,
            trigger: TriggerConfig {
                edge: t.edge,
                active_low: t.active_low,
                debounce: Duration::from_millis(debounce?),
            },
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
    let json = match &o.json {
        RawJson::Bool(true) => Some(JsonOutput::On),
        RawJson::Bool(false) => Some(JsonOutput::Off),
        RawJson::Word(w) if w == "auto" => Some(JsonOutput::Auto),
        RawJson::Word(w) => {
            c.problem("output.json", format!("'{w}': true, false or \"auto\""));
            None
        }
    };
    let save_every = c.int::<u64>("output.save_every", o.save_every, 0..=1_000_000_000);
    let max_saved = c.int("output.max_saved", o.max_saved, 1..=1_000_000);
    let quality = c.int("output.jpeg_quality", o.jpeg_quality, 1..=100);
    let status = c.int::<u64>("output.status_interval_s", o.status_interval_s, 1..=86_400);
    let save_dir = o.save_dir.as_ref().map(|p| c.path(p));
    Some(OutputConfig {
        json: json?,
        save_frames: o.save_frames,
        save_every: Some(save_every?).filter(|&n| n > 0),
        save_dir,
        max_saved: max_saved?,
        jpeg_quality: quality?,
        status_interval: Duration::from_secs(status?),
    })
}

/// This machine's host name (`/proc/sys/kernel/hostname`), reduced to `[A-Za-z0-9_-]`.
pub fn device_id() -> String {
    let host = crate::hostname().unwrap_or_default();
    let id: String = host
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
    // Each connection holds a file descriptor; systemd's default soft limit is 1024.
    let max_connections = c.int("http.max_connections", h.max_connections, 1..=768);
    let per_client = c.int("http.max_connections_per_client", h.max_connections_per_client, 1..=768);
    for (i, name) in h.allowed_hosts.iter().enumerate() {
        let ok = !name.is_empty()
            && name.len() <= 253
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
        if !ok {
            c.problem(format!("http.allowed_hosts[{i}]"), format!("'{name}' is not a host name"));
        }
    }
    let lifetime = c.int::<u64>("http.event_stream_lifetime_s", h.event_stream_lifetime_s, 1..=86_400);
    let ignored = [("http.workers", h.workers.is_some()), ("http.max_queued", h.max_queued.is_some())]
        .into_iter()
        .filter_map(|(key, set)| set.then_some(key))
        .collect();
    let preview_fps =
        if h.preview_fps == 0.0 { Some(0.0) } else { c.rate("http.preview_fps", h.preview_fps, 0.01, 30.0) };
    let quality = c.int("http.preview_quality", h.preview_quality, 1..=100);
    let stale = c.int::<u64>("http.stale_after_s", h.stale_after_s, 1..=86_400);
    Some(HttpSection {
        bind: bind?,
        max_connections: max_connections?,
        max_connections_per_client: per_client?,
        allowed_hosts: h.allowed_hosts.clone(),
        event_stream_lifetime: Duration::from_secs(lifetime?),
        ignored,
        preview_fps: preview_fps?,
        preview_quality: quality?,
        stale_after: Duration::from_secs(stale?),
    })
}
