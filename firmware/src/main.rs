//! `camera-classifier`: wires the configuration, the model, the frame source, GPIO, signals
//! and systemd together and runs the frame loop (all logic lives in the library).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::{Context, bail};
use bit_runtime::contract::ResizeMode;
use bit_runtime::{Classifier, ClassifierConfig};
use camera_classifier::config::{self, Config, SourceConfig};
use camera_classifier::daemon::{DaemonError, Exit, Loop};
use camera_classifier::feed::Feed;
use camera_classifier::gpio::{self, OutputDriver, OutputRule, TriggerLatch};
use camera_classifier::http::{HttpConfig, HttpServer};
use camera_classifier::integrations::{Integrations, Status};
use camera_classifier::mqtt::Mqtt;
use camera_classifier::notify::Notifier;
use camera_classifier::output::{FrameSaver, JsonLines};
use camera_classifier::source::FrameSource;
use camera_classifier::source::replay::ReplaySource;
use camera_classifier::source::v4l2::{self, V4l2Source};
use camera_classifier::telemetry::Telemetry;
use camera_classifier::{control, negotiate};
use clap::Parser;

/// Classifies camera frames with a BiT model: continuously, at an interval, or when a GPIO
/// line, SIGUSR1 or the control FIFO triggers; one JSON line per result on stdout.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// The configuration file.
    #[arg(long, short, default_value = config::DEFAULT_PATH)]
    config: PathBuf,
    /// Validate the configuration (and the model's labels against the output rules), print
    /// the result, exit 0 if valid and 1 if not. Opens no device.
    #[arg(long)]
    check_config: bool,
    /// Print the formats and sizes the configured camera offers and the one the daemon would
    /// choose, then exit.
    #[arg(long)]
    list_formats: bool,
}

/// Results the frame loop can queue for the integrations before the oldest is dropped.
const RESULT_QUEUE: usize = 64;

/// The consumer name GPIO lines are requested with (`gpioinfo` shows it).
const CONSUMER: &str = "camera-classifier";

fn init_logging() {
    let mut builder = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    // Under systemd, journald timestamps each line and reads the level from a `<N>` prefix.
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        builder.format(|buf, record| {
            let level = match record.level() {
                log::Level::Error => 3,
                log::Level::Warn => 4,
                log::Level::Info => 6,
                log::Level::Debug | log::Level::Trace => 7,
            };
            writeln!(buf, "<{level}>{}", record.args())
        });
    }
    builder.init();
}

fn main() -> ExitCode {
    let args = Args::parse();
    init_logging();
    match run(&args) {
        Ok(code) => code,
        Err(e) => {
            log::error!("{e:#}");
            eprintln!("camera-classifier: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let config = Config::load(&args.config)?;
    let labels = config.check_model()?;
    if args.check_config {
        println!(
            "{}: valid ({} classes, {} source)",
            args.config.display(),
            labels.len(),
            match &config.source {
                SourceConfig::Camera(c) => format!("camera {}", c.device.display()),
                SourceConfig::Replay(r) => format!("replay {}", r.path.display()),
            }
        );
        return Ok(ExitCode::SUCCESS);
    }
    match &config.source {
        SourceConfig::Camera(cam) => {
            if args.list_formats {
                return list_formats(cam, &config);
            }
            let source = V4l2Source::new(cam);
            serve(&config, labels, source, Some(cam.timeout), cam.reconnect_max)
        }
        SourceConfig::Replay(rep) => {
            if args.list_formats {
                bail!("--list-formats needs a [camera] source");
            }
            let source = ReplaySource::new(rep)?;
            serve(&config, labels, source, None, std::time::Duration::from_secs(1))
        }
    }
}

/// Smallest frame that needs no upscaling: the input side, or what a center-crop contract
/// resizes the shorter side to before cropping.
fn min_frame(classifier: &Classifier) -> (u32, u32) {
    let size = classifier.model().input_size();
    let side = match classifier.model().preprocess().resize {
        ResizeMode::CenterCrop { crop_fraction } if crop_fraction > 0.0 => {
            (size as f32 / crop_fraction).ceil() as u32
        }
        _ => size,
    };
    (side, side)
}

fn state_dir() -> PathBuf {
    // systemd's StateDirectory= sets $STATE_DIRECTORY (colon-separated if several).
    std::env::var_os("STATE_DIRECTORY")
        .and_then(|v| v.to_str().and_then(|s| s.split(':').next()).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("."))
}

fn serve<S: FrameSource>(
    config: &Config,
    labels: Vec<String>,
    mut source: S,
    stall_timeout: Option<std::time::Duration>,
    reconnect_max: std::time::Duration,
) -> anyhow::Result<ExitCode> {
    let (mut max_w, mut max_h) = source.frame_limit();
    if let Some(roi) = config.roi {
        max_w = max_w.max(roi.x + roi.width);
        max_h = max_h.max(roi.y + roi.height);
    }
    let classifier_config = ClassifierConfig {
        input_size: config.model.input_size,
        threads: config.model.threads,
        top_k: config.model.top_k,
        resize: None,
        roi: config.roi,
        max_width: max_w,
        max_height: max_h,
        labels: config.model.labels.as_ref().map(|_| labels.clone()),
    };
    let mut classifier = Classifier::new(&config.model.path, &classifier_config)
        .with_context(|| format!("loading the model {}", config.model.path.display()))?;

    let stop = Arc::new(AtomicBool::new(false));
    let latch = Arc::new(TriggerLatch::new());
    let signals =
        control::spawn_signals(stop.clone(), latch.clone()).context("installing signal handlers")?;
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
            let trigger =
                gpio::TriggerConfig { edge: t.edge, active_low: t.active_low, debounce: t.debounce };
            trigger_thread = Some(
                gpio::linux::spawn_edge_trigger(
                    &chip,
                    &t.line,
                    trigger,
                    CONSUMER,
                    latch.clone(),
                    stop.clone(),
                )
                .context("gpio.trigger")?,
            );
        }
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

    let mut notifier = Notifier::from_env();
    let stdout = std::io::stdout();
    let mut results = config.output.json.then(|| JsonLines::new(stdout.lock()));
    let mut saver = if config.output.save_frames {
        let dir = config.output.save_dir.clone().unwrap_or_else(|| state_dir().join("frames"));
        Some(FrameSaver::new(&dir, config.output.max_saved, config.output.jpeg_quality)?)
    } else {
        None
    };

    // Integrations: a bounded hand-off from the loop to one thread that feeds the status page
    // and MQTT. Both start before the first frame; a port in use is a startup error.
    let model_name =
        config.model.path.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let telemetry = Arc::new(Telemetry::new(&model_name, classifier.labels()));
    let preview = config
        .http
        .as_ref()
        .filter(|h| h.preview_fps > 0.0)
        .map(|h| Duration::from_secs_f64(1.0 / h.preview_fps));
    let feed = Arc::new(Feed::new(RESULT_QUEUE, preview, telemetry.clone()));
    let mut http_server = None;
    let status = match &config.http {
        Some(h) => {
            let status = Arc::new(Status::new(feed.clone(), h.stale_after));
            let server_config =
                HttpConfig { bind: h.bind, workers: h.workers, queue: h.max_queued, ..HttpConfig::default() };
            let server = HttpServer::start(&server_config, status.clone()).context("http.bind")?;
            status.set_http_stats(server.stats());
            log::info!("status page on http://{}/", server.local_addr());
            http_server = Some(server);
            Some(status)
        }
        None => None,
    };
    let mqtt = match &config.mqtt {
        Some(m) => {
            log::info!("MQTT: publishing to {}:{} under {}/", m.host, m.port, m.topic_prefix);
            Some(Mqtt::start(m, telemetry.clone()).context("starting MQTT")?)
        }
        None => None,
    };
    let integrations = (status.is_some() || mqtt.is_some())
        .then(|| {
            let quality = config.http.as_ref().map_or(75, |h| h.preview_quality);
            Integrations::start(feed.clone(), status, mqtt, quality)
        })
        .transpose()
        .context("starting the integrations thread")?;

    let mut frame_loop = Loop {
        mode: config.mode,
        stall_timeout,
        reconnect_max,
        min_size: min_frame(&classifier),
        stop: stop.clone(),
        latch,
        outputs: &mut outputs,
        notifier: &mut notifier,
        results: results.as_mut(),
        saver: saver.as_mut(),
        status_interval: config.output.status_interval,
        counters: Default::default(),
        feed: integrations.is_some().then_some(&*feed),
    };
    let result = frame_loop.run(&mut classifier, &mut source);
    let counters = frame_loop.counters;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    if let Some(t) = trigger_thread {
        let _ = t.join();
    }
    if let Some(f) = fifo {
        f.join();
    }
    signals.close();
    if let Some(i) = integrations {
        i.shutdown();
    }
    if let Some(s) = http_server {
        s.shutdown();
    }
    log::info!("exit: {counters:?}");
    match result {
        Ok(Exit::Stopped | Exit::SourceEnded) => Ok(ExitCode::SUCCESS),
        Err(DaemonError::Source(msg)) => {
            log::error!("{msg}");
            eprintln!("camera-classifier: {msg}");
            Ok(ExitCode::from(2))
        }
    }
}

fn list_formats(cam: &config::CameraConfig, config: &Config) -> anyhow::Result<ExitCode> {
    let device =
        v4l::Device::with_path(&cam.device).with_context(|| format!("opening {}", cam.device.display()))?;
    let limit = cam.size.unwrap_or(v4l2::DEFAULT_LIMIT);
    let offers = v4l2::enumerate(&device, (u32::MAX, u32::MAX))
        .with_context(|| format!("enumerating {}", cam.device.display()))?;
    for o in &offers {
        let readable = if v4l2::pixel_format(o.fourcc).is_some() { "" } else { " (not readable)" };
        println!("{} {}{readable}", String::from_utf8_lossy(&o.fourcc), o.description);
        for s in &o.sizes {
            println!("    {:?} max fps {:?}", s.range, s.max_fps);
        }
    }
    let side = config.model.input_size.unwrap_or(224);
    let limited = v4l2::enumerate(&device, limit)?;
    let request = negotiate::Request {
        min_width: side,
        min_height: side,
        fourcc: cam.format,
        size: cam.size,
        fps: cam.fps,
    };
    match negotiate::negotiate(&limited, &request) {
        Ok(c) => println!(
            "choice: {} {}x{} (upscaled: {})",
            String::from_utf8_lossy(&c.fourcc),
            c.width,
            c.height,
            c.upscaled
        ),
        Err(e) => println!("no usable format: {e}"),
    }
    Ok(ExitCode::SUCCESS)
}
