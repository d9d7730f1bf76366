//! Shared helpers of the daemon's integration tests: a small BiT model generated once per
//! test run, configuration files, and running the `camera-classifier` binary.
#![allow(dead_code)]

use std::fs::{self, File};
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::thread;

use image::Rgb;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Class names of the test model.
pub const LABELS: [&str; 4] = ["cat", "dog", "bird", "fish"];

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("firmware/ has a parent").to_owned()
}

/// A BiT with one unit per stage and 4 classes (random weights, official npz layout,
/// imported by bit-tools), written once per test run under the target directory. Every
/// write is atomic, so test binaries running at once agree on the file.
pub fn model() -> PathBuf {
    static MODEL: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    MODEL
        .get_or_init(|| {
            let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("firmware-fixture");
            let model = dir.join("bit-d1111-c4.onnx");
            if !model.exists() {
                std::fs::create_dir_all(&dir).unwrap();
                let arch = bit_tools::Arch { depths: vec![1, 1, 1, 1], width: 1, num_classes: 4 };
                let ckpt = dir.join(format!("checkpoint-{}.npz", std::process::id()));
                bit_tools::synth::write_synthetic(&ckpt, &arch, 7, bit_tools::Layout::Npz, None).unwrap();
                let options = bit_tools::ImportOptions {
                    labels: Some(LABELS.iter().map(|s| s.to_string()).collect()),
                    ..Default::default()
                };
                // Written to a per-process name first: test binaries may run at once.
                let mine = dir.join(format!("model-{}.onnx", std::process::id()));
                bit_tools::import_checkpoint(&ckpt, &mine, &options).unwrap();
                std::fs::rename(&mine, &model).unwrap();
                std::fs::remove_file(ckpt).unwrap();
            }
            model
        })
        .clone()
}

/// The committed sample photos.
pub fn samples() -> PathBuf {
    repo_root().join("samples/images")
}

/// Writes `text` as `config.toml` in `dir`.
pub fn write_config(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("config.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// A config with the test model at input 64 (fast), the given source and extra tables.
pub fn config_text(source: &str, extra: &str) -> String {
    format!(
        "[model]\npath = {:?}\ninput_size = 64\ntop_k = 3\n\n{source}\n{extra}\n",
        model().display().to_string()
    )
}

/// The daemon binary.
pub fn daemon() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_camera-classifier"));
    c.env_remove("NOTIFY_SOCKET").env_remove("WATCHDOG_USEC").env_remove("WATCHDOG_PID");
    c.env("RUST_LOG", "info");
    c
}

/// A running daemon whose stdout lines arrive on a channel. Dropping it (a test that fails
/// before `wait`) kills the daemon, so no test leaves one running.
pub struct Running {
    pub child: Child,
    pub lines: mpsc::Receiver<String>,
    pub stderr: Option<std::thread::JoinHandle<String>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Starts `cmd` with stdout and stderr captured.
pub fn start(mut cmd: Command) -> Running {
    let mut child =
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("start camera-classifier");
    let out = child.stdout.take().unwrap();
    let err = child.stderr.take().unwrap();
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let stderr = std::thread::spawn(move || {
        let mut s = String::new();
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            s.push_str(&line);
            s.push('\n');
        }
        s
    });
    Running { child, lines, stderr: Some(stderr) }
}

/// Starts the daemon on `config` with stdout and stderr captured.
pub fn start_config(config: &Path) -> Running {
    let mut c = daemon();
    c.arg("--config").arg(config);
    start(c)
}

impl Running {
    /// The next stdout line as JSON, within `timeout`.
    pub fn next_json(&self, timeout: Duration) -> Option<serde_json::Value> {
        let line = self.lines.recv_timeout(timeout).ok()?;
        Some(serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
    }

    /// Result lines printed during the next `d` (lines already queued are discarded first).
    pub fn results_for(&self, d: Duration) -> usize {
        while self.lines.try_recv().is_ok() {}
        let end = Instant::now() + d;
        let mut n = 0;
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            if self.lines.recv_timeout(left).is_ok() {
                n += 1;
            }
        }
        n
    }

    /// Sends `signal`.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, signal) }, 0);
    }

    /// Waits for the exit, at most `timeout`; returns the status code, the time it took and
    /// stderr. Kills the child and panics on timeout.
    pub fn wait(mut self, timeout: Duration) -> (Option<i32>, Duration, String) {
        let start = Instant::now();
        let stderr = self.stderr.take().expect("stderr is read once");
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let took = start.elapsed();
                return (status.code(), took, stderr.join().unwrap());
            }
            if start.elapsed() > timeout {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "camera-classifier did not exit within {timeout:?}; stderr:\n{}",
                    stderr.join().unwrap()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

// ---- HTTP ----

/// A port free on 127.0.0.1 right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// GET `path`: status code, headers (lower-case names) and body.
pub fn get(port: u16, path: &str) -> (u16, String, Vec<u8>) {
    try_get(port, path).unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

pub fn try_get(port: u16, path: &str) -> std::io::Result<(u16, String, Vec<u8>)> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    // A busy server may answer 503 and close before the request is written: read anyway.
    let _ = std::io::Write::write_fmt(
        &mut s,
        format_args!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"),
    );
    let mut raw = Vec::new();
    std::io::Read::read_to_end(&mut s, &mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other(format!("no complete head in {} bytes", raw.len())))?;
    let head = String::from_utf8_lossy(&raw[..split]).to_lowercase();
    let code = head[9..12].parse().map_err(std::io::Error::other)?;
    Ok((code, head, raw[split + 4..].to_vec()))
}

// ---- headless Chromium (Debian's `chromium`) ----

pub fn chromium_path() -> Option<PathBuf> {
    let path = std::env::var_os("CHROMIUM").map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from);
    if path.is_file() {
        return Some(path);
    }
    assert!(
        std::env::var("BIT_REQUIRE_BROWSER").as_deref() != Ok("1"),
        "chromium not installed and BIT_REQUIRE_BROWSER=1 (apt-get install chromium)"
    );
    println!("browser test skipped: chromium not installed (apt-get install chromium)");
    None
}

/// Runs headless Chromium on `url` with `mode` (`--screenshot=…` or `--dump-dom`), stdout to `stdout`.
/// Kills its whole process group if it takes more than 60 s.
pub fn run_chromium(chromium: &Path, work: &Path, run: &str, mode: &str, url: &str) -> Duration {
    let profile = work.join(format!("profile-{run}"));
    fs::create_dir_all(&profile).unwrap();
    let stdout = File::create(work.join(format!("{run}.stdout"))).unwrap();
    let stderr = File::create(work.join(format!("{run}.stderr"))).unwrap();
    let started = Instant::now();
    let mut child = Command::new(chromium)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"])
        .args(["--disable-background-networking", "--disable-component-update", "--disable-sync"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(["--window-size=1000,800", "--virtual-time-budget=5000", mode, url])
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", chromium.display()));
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(60) {
            let _ = Command::new("kill").args(["-KILL", "--", &format!("-{}", child.id())]).status();
            let _ = child.wait();
            panic!("chromium ({run}) took more than 60 s; see {}", work.display());
        }
        thread::sleep(Duration::from_millis(50));
    };
    let _ = fs::remove_dir_all(&profile);
    assert!(status.success(), "chromium ({run}) failed with {status}; see {}", work.display());
    started.elapsed()
}

/// Pixels matching `pred` and their mean x.
pub fn count_pixels(shot: &image::RgbImage, pred: impl Fn(&Rgb<u8>) -> bool) -> (usize, f64) {
    let xs: Vec<u32> = shot.enumerate_pixels().filter(|(_, _, p)| pred(p)).map(|(x, _, _)| x).collect();
    let mean = xs.iter().map(|&x| f64::from(x)).sum::<f64>() / xs.len().max(1) as f64;
    (xs.len(), mean)
}
