//! Start-up, run and shutdown: from a validated [`Config`] to the running daemon and back.
//!
//! [`check`] runs every check start-up runs (the model is loaded and optimized exactly as for
//! a run, its labels matched against the output rules, the replay files read, the ROI
//! matched against the frames, the save directory and the HTTP address tried) without
//! opening the camera or a GPIO line, so a configuration `--check-config` accepts starts.
//! [`run`] installs the signal handlers before anything slow (a SIGTERM or SIGUSR1 arriving
//! while the model loads is handled, not fatal), then builds the parts in order: source,
//! classifier, control FIFO, GPIO, metrics, result sinks, HTTP, and runs the frame loop.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bit_runtime::{Classifier, ClassifierConfig, Frame, Roi};

use crate::config::{Config, SourceConfig};
use crate::daemon::{DaemonError, Exit, LoopMetrics};
use crate::feed::{Feed, FramePolicy, FramePool, ModelTag};
use crate::gpio::{self, OutputDriver, OutputRule, TriggerLatch};
use crate::http::{HttpConfig, HttpServer};
use crate::metrics::Registry;
use crate::mqtt::Mqtt;
use crate::notify::Notifier;
use crate::sink::frames::{FrameSaver, FrameStore};
use crate::sink::json::{JsonLines, LineOutput};
use crate::sink::status::{Status, StatusSink};
use crate::sink::{Dispatcher, ResultSink};
use crate::source::FrameSource;
use crate::source::replay::ReplaySource;
use crate::source::v4l2::V4l2Source;
use crate::{control, monotonic_now};

/// Results the frame loop can queue for the sinks before the oldest is dropped.
pub const RESULT_QUEUE: usize = 64;

/// Frame buffers shared between the loop and the sinks (preview, saving).
pub const FRAME_BUFFERS: usize = 4;

/// The consumer name GPIO lines are requested with (`gpioinfo` shows it).
pub const CONSUMER: &str = "camera-classifier";

/// How long shutdown waits for the sinks (MQTT's offline message, queued lines and saves).
pub const SHUTDOWN_WAIT: Duration = Duration::from_secs(3);

/// Whether stdout is the systemd journal (systemd sets `$JOURNAL_STREAM` for it).
pub fn journal() -> bool {
    std::env::var_os("JOURNAL_STREAM").is_some()
}

/// systemd's `$STATE_DIRECTORY` (its first entry), else the working directory.
pub fn state_dir() -> PathBuf {
    std::env::var_os("STATE_DIRECTORY")
        .and_then(|v| v.to_str().and_then(|s| s.split(':').next()).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Where saved frames go: `output.save_dir`, else `$STATE_DIRECTORY/frames`.
pub fn save_dir(config: &Config) -> PathBuf {
    config.output.save_dir.clone().unwrap_or_else(|| state_dir().join("frames"))
}

/// Smallest frame that needs no upscaling for this classifier: the side its contract
/// resizes the shorter edge to (with the runtime's own rounding).
pub fn min_frame(classifier: &Classifier) -> (u32, u32) {
    let side = classifier.preprocessor().resize_mode().shortest_edge(classifier.model().input_size());
    (side, side)
}

/// The frame source the configuration names (not opened yet).
pub fn source(config: &Config) -> anyhow::Result<Box<dyn FrameSource>> {
    Ok(match &config.source {
        SourceConfig::Camera(cam) => Box::new(V4l2Source::new(cam)),
        SourceConfig::Replay(rep) => Box::new(ReplaySource::new(rep).context("replay")?),
    })
}

/// Loads the model for frames up to `limit`, with the configuration's labels (checked
/// against the output rules) and region of interest.
pub fn classifier(config: &Config, limit: (u32, u32), sizes: &[(u32, u32)]) -> anyhow::Result<Classifier> {
    let labels = config.check_model()?;
    if let Some(roi) = config.roi {
        check_roi(roi, limit, sizes)?;
    }
    let classifier_config = ClassifierConfig {
        input_size: config.model.input_size,
        threads: config.model.threads,
        top_k: config.model.top_k,
        resize: None,
        roi: config.roi,
        max_width: limit.0,
        max_height: limit.1,
        labels: config.model.labels.as_ref().map(|_| labels),
    };
    Classifier::new(&config.model.path, &classifier_config)
        .with_context(|| format!("loading the model {}", config.model.path.display()))
}

/// The ROI must fit the frames the source delivers: the largest one, and at least one of
/// the sizes known in advance (a replay's files, a camera's configured size).
fn check_roi(roi: Roi, limit: (u32, u32), sizes: &[(u32, u32)]) -> anyhow::Result<()> {
    let fits = |(w, h): (u32, u32)| roi.fits(w, h);
    if !fits(limit) || (!sizes.is_empty() && !sizes.iter().any(|&s| fits(s))) {
        bail!(
            "roi: {}x{} at ({}, {}) lies outside every frame of the source (largest {}x{})",
            roi.width,
            roi.height,
            roi.x,
            roi.y,
            limit.0,
            limit.1
        );
    }
    let outside = sizes.iter().filter(|&&s| !fits(s)).count();
    if outside > 0 {
        log::warn!(
            "roi: {outside} of the source's {} frame sizes are smaller than the roi: those frames will be refused",
            sizes.len()
        );
    }
    Ok(())
}

/// Whether files can be written in `dir`, creating it where it is missing: tried for real
/// (a temporary file; the directories this created are removed again), so a read-only
/// filesystem or a procfs path fails here even for root, as it would at start.
pub fn check_writable_dir(dir: &Path) -> anyhow::Result<()> {
    if std::fs::symlink_metadata(dir).is_ok_and(|m| m.file_type().is_symlink()) {
        bail!("{}: is a symlink; give the real directory", dir.display());
    }
    let mut missing = Vec::new();
    let mut probe = dir;
    while !probe.exists() {
        missing.push(probe.to_owned());
        match probe.parent() {
            Some(p) if !p.as_os_str().is_empty() => probe = p,
            _ => break,
        }
    }
    let result = std::fs::create_dir_all(dir)
        .and_then(|()| tempfile::tempfile_in(dir).map(drop))
        .with_context(|| format!("{}: cannot create files there", dir.display()));
    for created in &missing {
        let _ = std::fs::remove_dir(created);
    }
    result
}

/// What `--check-config` reports.
#[derive(Debug)]
pub struct Checked {
    /// The model's classes.
    pub classes: usize,
    /// The source, described.
    pub source: String,
    /// The matrix kernels tract chose on this CPU.
    pub kernels: Vec<String>,
}

/// Runs every check start-up runs, without opening the camera, a GPIO line or a socket for
/// longer than a bind test.
pub fn check(config: &Config) -> anyhow::Result<Checked> {
    let source = source(config)?;
    let classifier = classifier(config, source.frame_limit(), &source.known_sizes())?;
    if config.output.save_frames || config.output.save_every.is_some() {
        check_writable_dir(&save_dir(config)).context("output.save_dir")?;
    }
    if let Some(fifo) = &config.control_fifo {
        let parent = fifo.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        check_writable_dir(parent).context("control.fifo")?;
    }
    if let Some(g) = &config.gpio {
        let chip = gpio::linux::find_chip(&g.chip).context("gpio.chip")?;
        log::info!("GPIO chip {chip}");
    }
    if let Some(h) = &config.http {
        std::net::TcpListener::bind(h.bind).with_context(|| format!("http.bind: {}", h.bind))?;
    }
    Ok(Checked {
        classes: classifier.labels().len(),
        source: source.describe(),
        kernels: classifier.model().kernels(),
    })
}

/// How the daemon ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A stop request, or a stop during start-up.
    Stopped,
    /// The replay ended.
    SourceEnded,
    /// The source cannot deliver frames the runtime reads (exit status 2: retrying won't help).
    SourceUnusable(String),
}

/// The stop flag, the trigger latch and the signal handlers feeding them. Installed first
/// thing in `main`, before the configuration is read: everything after may take seconds
/// (the model load above all), and a SIGTERM, SIGUSR1 or SIGHUP arriving then must be
/// handled, not kill the process (under systemd that would turn one early trigger into a
/// restart loop).
pub struct Control {
    /// Set to stop.
    pub stop: Arc<AtomicBool>,
    /// Every trigger goes through it.
    pub latch: Arc<TriggerLatch>,
    signals: control::SignalThread,
}

impl Control {
    /// Installs the signal handlers.
    pub fn install() -> anyhow::Result<Control> {
        let stop = Arc::new(AtomicBool::new(false));
        let latch = Arc::new(TriggerLatch::new());
        let signals =
            control::spawn_signals(stop.clone(), latch.clone()).context("installing signal handlers")?;
        Ok(Control { stop, latch, signals })
    }

    /// Stops listening for signals.
    pub fn close(self) {
        self.signals.close();
    }
}

/// Runs the daemon until a stop request, the end of a replay or an unusable source.
pub fn run(config: &Config, control: &Control) -> anyhow::Result<Outcome> {
    let result = run_with(config, &control.stop, &control.latch);
    control.stop.store(true, Ordering::SeqCst);
    result
}

fn run_with(config: &Config, stop: &Arc<AtomicBool>, latch: &Arc<TriggerLatch>) -> anyhow::Result<Outcome> {
    let mut source = source(config)?;
    let mut classifier = classifier(config, source.frame_limit(), &source.known_sizes())?;
    log::info!(
        "model {}: {} classes at {}x{}, {} thread(s), kernels {:?}",
        config.model.path.display(),
        classifier.labels().len(),
        classifier.model().input_size(),
        classifier.model().input_size(),
        classifier.model().threads(),
        classifier.model().kernels()
    );
    if stop.load(Ordering::SeqCst) {
        log::info!("stopped during start-up");
        return Ok(Outcome::Stopped);
    }
    let fifo = match &config.control_fifo {
        Some(p) => Some(control::spawn_fifo(p, stop.clone(), latch.clone())?),
        None => None,
    };

    // GPIO: resolve and open everything before the first frame; a missing chip or line is
    // a configuration error on this board, reported now.
    let mut outputs: Vec<OutputDriver<gpio::linux::OutputLine>> = Vec::new();
    let mut trigger_thread = None;
    if let Some(g) = &config.gpio {
        let chip = gpio::linux::find_chip(&g.chip).context("gpio.chip")?;
        log::info!("GPIO chip {chip}");
        if let Some(t) = &g.trigger {
            trigger_thread = Some(
                gpio::linux::spawn_edge_trigger(
                    &chip,
                    &t.line,
                    t.trigger,
                    CONSUMER,
                    latch.clone(),
                    stop.clone(),
                )
                .context("gpio.trigger")?,
            );
        }
        let labels = classifier.labels();
        for (i, o) in g.outputs.iter().enumerate() {
            let pin = gpio::linux::open_output(&chip, &o.line, o.active_low, CONSUMER)
                .with_context(|| format!("gpio.outputs[{i}]"))?;
            // Labels were checked against the model by `check_model`.
            let classes = o.labels.iter().filter_map(|l| labels.iter().position(|m| m == l)).collect();
            let rule = OutputRule { classes, min_score: o.min_score, hold: o.hold, active_low: o.active_low };
            outputs.push(
                OutputDriver::new(pin, rule)
                    .with_context(|| format!("gpio.outputs[{i}]: line {}", o.line))?,
            );
        }
    }

    let model_name =
        config.model.path.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let model = Arc::new(ModelTag { name: model_name, labels: classifier.labels().to_vec() });
    let registry = Arc::new(Registry::new("camera_classifier"));
    {
        let name = model.name.clone();
        registry.collector("build_info", move |x: &mut crate::metrics::Exposition| {
            x.header("build_info", "Version and model.", "gauge");
            x.sample("build_info", &[("version", env!("CARGO_PKG_VERSION")), ("model", &name)], 1.0);
        });
    }
    let loop_metrics = LoopMetrics::register(&registry);
    registry.collector("board", crate::board::BoardSensors::new());

    let preview = config
        .http
        .as_ref()
        .filter(|h| h.preview_fps > 0.0)
        .map(|h| Duration::from_secs_f64(1.0 / h.preview_fps));
    let policy = FramePolicy {
        preview_period: preview,
        save_triggered: config.output.save_frames,
        save_every: config.output.save_every,
    };
    let feed = Arc::new(Feed::new(RESULT_QUEUE, policy, &registry));

    let mut sinks: Vec<Box<dyn ResultSink>> = Vec::new();
    if config.output.json.enabled(journal()) {
        sinks.push(Box::new(JsonLines::start(LineOutput::stdout(), &registry)?));
    } else {
        log::info!(
            "result lines: not on stdout (output.json = {:?}); status every {:?}",
            config.output.json,
            config.output.status_interval
        );
    }
    if policy.save_triggered || policy.save_every.is_some() {
        let dir = save_dir(config);
        let store = FrameStore::open(&dir, config.output.max_saved, config.output.jpeg_quality)
            .context("output.save_dir")?;
        log::info!(
            "saving frames to {} ({} kept there now, at most {})",
            dir.display(),
            store.len(),
            config.output.max_saved
        );
        sinks.push(Box::new(FrameSaver::start(store, &registry)?));
    }
    if let Some(m) = &config.mqtt {
        log::info!("MQTT: publishing to {}:{} under {}/", m.host, m.port, m.topic_prefix);
        sinks.push(Box::new(Mqtt::start(m, &registry).context("starting MQTT")?));
    }
    let mut http_server = None;
    if let Some(h) = &config.http {
        let status = Arc::new(Status::new(
            loop_metrics.clone(),
            registry.clone(),
            feed.dropped.clone(),
            h.stale_after,
        ));
        for key in &h.ignored {
            log::warn!("{key} is ignored: the status server runs on one thread (see http.max_connections)");
        }
        let server_config = HttpConfig {
            bind: h.bind,
            max_connections: h.max_connections,
            max_connections_per_client: h.max_connections_per_client,
            allowed_hosts: h.allowed_hosts.clone(),
            event_stream_lifetime: h.event_stream_lifetime,
            ..HttpConfig::default()
        };
        let server = HttpServer::start(&server_config, status.clone()).context("http.bind")?;
        let stats = server.stats();
        registry.collector("http_requests_total", move |x: &mut crate::metrics::Exposition| {
            let mut text = String::new();
            stats.write_metrics(&mut text);
            x.raw(&text);
        });
        log::info!("status page on http://{}/", server.local_addr());
        http_server = Some(server);
        sinks.push(Box::new(StatusSink::new(status, h.preview_quality)));
    }
    let dispatcher = Dispatcher::start(feed.clone(), sinks).context("starting the sinks thread")?;

    let mut notifier = Notifier::from_env();
    let mut frame_loop = crate::daemon::Loop {
        mode: config.mode,
        stall_timeout: match &config.source {
            SourceConfig::Camera(c) => Some(c.timeout),
            SourceConfig::Replay(_) => None,
        },
        reconnect_max: match &config.source {
            SourceConfig::Camera(c) => c.reconnect_max,
            SourceConfig::Replay(_) => Duration::from_secs(1),
        },
        min_size: min_frame(&classifier),
        stop: stop.clone(),
        latch: latch.clone(),
        outputs: &mut outputs,
        notifier: &mut notifier,
        status_interval: config.output.status_interval,
        metrics: &loop_metrics,
        feed: Some(&feed),
        frames: FramePool::new(if policy == FramePolicy::default() { 0 } else { FRAME_BUFFERS }),
        model,
    };
    let result = frame_loop.run(&mut classifier, &mut *source);
    stop.store(true, Ordering::SeqCst);
    if let Some(t) = trigger_thread {
        let _ = t.join();
    }
    if let Some(f) = fifo {
        f.join();
    }
    dispatcher.shutdown(SHUTDOWN_WAIT);
    if let Some(s) = http_server {
        s.shutdown();
    }
    log::info!("exit: {:?}", loop_metrics.snapshot());
    Ok(match result {
        Ok(Exit::Stopped) => Outcome::Stopped,
        Ok(Exit::SourceEnded) => Outcome::SourceEnded,
        Err(DaemonError::Source(msg)) => Outcome::SourceUnusable(msg),
    })
}

/// Saves `count` frames from the configured source into `out` as raw frame files
/// (`<prefix>-<n>.<W>x<H>.<format>`, the bytes of the driver's buffer: what `bit-tool
/// quantize --calib` and `bit-tool finetune` read through the runtime's own frame path), one
/// every `every`. Returns the files written.
pub fn capture(
    config: &Config,
    control: &Control,
    count: usize,
    every: Duration,
    out: &Path,
) -> anyhow::Result<Vec<PathBuf>> {
    let stop = &control.stop;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut source = source(config)?;
    let min = match config.model.input_size {
        Some(s) => (s, s),
        None => {
            let info = bit_runtime::ModelInfo::read(&config.model.path)?;
            let side = info.preprocess.resize.shortest_edge(info.preprocess.input_size);
            (side, side)
        }
    };
    let mut opened = false;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !opened {
        match source.open(min) {
            Ok(()) => opened = true,
            Err(crate::source::OpenError::Unusable(m)) => bail!("{m}"),
            Err(crate::source::OpenError::Unavailable(m)) if Instant::now() > deadline => bail!("{m}"),
            Err(crate::source::OpenError::Unavailable(m)) => {
                log::warn!("{m}; retrying");
                std::thread::sleep(Duration::from_millis(500));
            }
        }
        if stop.load(Ordering::SeqCst) {
            bail!("stopped");
        }
    }
    let prefix =
        humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string().replace(':', "-");
    let mut written = Vec::new();
    let mut next = monotonic_now();
    let mut misses = 0;
    while written.len() < count && !stop.load(Ordering::SeqCst) {
        let captured = match source.next_frame(crate::daemon::POLL) {
            Ok(c) => c,
            Err(crate::source::SourceError::End) => break,
            Err(crate::source::SourceError::Timeout) => {
                misses += 1;
                if misses > 100 {
                    bail!("{}: no frame for 10 s", source.describe());
                }
                continue;
            }
            Err(e) => bail!("{}: {e}", source.describe()),
        };
        misses = 0;
        let now = monotonic_now();
        if now < next {
            continue;
        }
        next = now + every;
        let f: Frame = captured.frame;
        let name = format!(
            "{prefix}-{:05}.{}",
            written.len(),
            bit_runtime::frame::raw_frame_suffix(f.format, f.width, f.height)
        );
        let path = out.join(name);
        bit_runtime::fs::write_atomically(&path, f.data, 0o644)
            .with_context(|| format!("writing {}", path.display()))?;
        written.push(path);
    }
    source.close();
    Ok(written)
}
