//! `camera-classifier`: parses the command line, loads the configuration and hands it to the
//! library ([`camera_classifier::app`]), which does everything else.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use camera_classifier::app::{self, Outcome};
use camera_classifier::config::{self, Config, SourceConfig};
use camera_classifier::negotiate;
use camera_classifier::source::v4l2;
use clap::Parser;

/// Classifies camera frames with a BiT model: continuously, at an interval, or when a GPIO
/// line, SIGUSR1 or the control FIFO triggers; one JSON line per result on stdout.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// The configuration file.
    #[arg(long, short, default_value = config::DEFAULT_PATH)]
    config: PathBuf,
    /// Run every check start-up runs (the model is loaded, the labels matched against the
    /// output rules, replay files read, the save directory and HTTP address tried), print
    /// the result, exit 0 if the daemon would start and 1 if not. Opens no camera or GPIO
    /// line.
    #[arg(long)]
    check_config: bool,
    /// Print the formats and sizes the configured camera offers and the one the daemon would
    /// choose, then exit.
    #[arg(long)]
    list_formats: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Save frames from the configured camera (or replay) as raw frame files, the input
    /// `bit-tool quantize --calib` and `bit-tool finetune` read, then exit. Stop the service
    /// first: a camera has one reader.
    Capture {
        /// Frames to save.
        #[arg(long, default_value_t = 50)]
        count: usize,
        /// Where.
        #[arg(long)]
        out: PathBuf,
        /// Milliseconds between saved frames (move the camera or the scene between them).
        #[arg(long, default_value_t = 500)]
        every_ms: u64,
    },
}

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
    if let Some(why) = bit_runtime::cpu::unsupported_cpu() {
        eprintln!("camera-classifier: {why}");
        return ExitCode::from(2);
    }
    // Before anything else: a signal that arrives while the model loads is handled.
    let control = match app::Control::install() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("camera-classifier: {e:#}");
            return ExitCode::from(1);
        }
    };
    let args = Args::parse();
    init_logging();
    let code = match run(&args, &control) {
        Ok(code) => code,
        Err(e) => {
            log::error!("{e:#}");
            eprintln!("camera-classifier: {e:#}");
            ExitCode::from(1)
        }
    };
    control.close();
    code
}

fn run(args: &Args, control: &app::Control) -> anyhow::Result<ExitCode> {
    let config = Config::load(&args.config)?;
    if let Some(Command::Capture { count, out, every_ms }) = &args.command {
        let files = app::capture(&config, control, *count, Duration::from_millis(*every_ms), out)?;
        println!("saved {} frame(s) to {}", files.len(), out.display());
        return Ok(ExitCode::SUCCESS);
    }
    if args.check_config {
        let checked = app::check(&config)?;
        println!(
            "{}: valid ({} classes, {}; kernels {})",
            args.config.display(),
            checked.classes,
            checked.source,
            checked.kernels.join(", ")
        );
        return Ok(ExitCode::SUCCESS);
    }
    if args.list_formats {
        let SourceConfig::Camera(cam) = &config.source else {
            bail!("--list-formats needs a [camera] source")
        };
        return list_formats(cam, &config);
    }
    Ok(match app::run(&config, control)? {
        Outcome::Stopped | Outcome::SourceEnded => ExitCode::SUCCESS,
        Outcome::SourceUnusable(msg) => {
            log::error!("{msg}");
            eprintln!("camera-classifier: {msg}");
            ExitCode::from(2)
        }
    })
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
    let info = bit_runtime::ModelInfo::read(&config.model.path)?;
    let size = config.model.input_size.unwrap_or(info.preprocess.input_size);
    let side = info.preprocess.resize.shortest_edge(size);
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
