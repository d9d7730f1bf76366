//! Software triggers and stop requests: SIGTERM/SIGINT stop the daemon (a second one exits
//! at once), SIGUSR1 triggers a classification, and so does each `trigger` line written to
//! the control FIFO (`echo trigger > /run/camera-classifier/control`).

use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
use signal_hook::iterator::{Handle, Signals};

use crate::gpio::{TriggerLatch, TriggerSource};
use crate::monotonic_now;

/// Signal handling, running on its own thread until [`SignalThread::close`].
pub struct SignalThread {
    handle: Handle,
    thread: Option<JoinHandle<()>>,
}

/// Installs the handlers: SIGTERM and SIGINT set `stop` (a second one exits with status
/// 130), SIGUSR1 fires `latch`, SIGHUP is logged and ignored (restart the service to reload
/// the configuration).
pub fn spawn_signals(stop: Arc<AtomicBool>, latch: Arc<TriggerLatch>) -> io::Result<SignalThread> {
    let mut signals = Signals::new([SIGTERM, SIGINT, SIGUSR1, SIGHUP])?;
    let handle = signals.handle();
    let thread = std::thread::Builder::new().name("signals".into()).spawn(move || {
        for sig in signals.forever() {
            match sig {
                SIGTERM | SIGINT => {
                    if stop.swap(true, Ordering::SeqCst) {
                        log::warn!("second stop signal: exiting now");
                        std::process::exit(130);
                    }
                    log::info!("signal {sig}: stopping");
                }
                SIGUSR1 => {
                    log::debug!("SIGUSR1: trigger");
                    latch.fire(TriggerSource::Signal, monotonic_now());
                }
                _ => log::info!("SIGHUP ignored: restart the service to reload its configuration"),
            }
        }
    })?;
    Ok(SignalThread { handle, thread: Some(thread) })
}

impl SignalThread {
    /// Stops listening and joins the thread.
    pub fn close(mut self) {
        self.handle.close();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The control FIFO's reader thread.
pub struct FifoThread {
    thread: Option<JoinHandle<()>>,
}

impl FifoThread {
    /// Joins the thread (it ends within 200 ms of `stop`).
    pub fn join(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Longest command line read from the FIFO; longer ones are dropped.
const MAX_LINE: usize = 256;

/// Creates the FIFO at `path` if missing (mode 0620: the service's group may write) and
/// reads it on a thread: each `trigger` line fires `latch`. Anything else at `path` is an
/// error. The thread ends within 200 ms after `stop` is set.
pub fn spawn_fifo(path: &Path, stop: Arc<AtomicBool>, latch: Arc<TriggerLatch>) -> io::Result<FifoThread> {
    let err = |what: &str, e: io::Error| {
        io::Error::new(e.kind(), format!("control FIFO {}: {what}: {e}", path.display()))
    };
    match std::fs::metadata(path) {
        Ok(m) if m.file_type().is_fifo() => {}
        Ok(_) => return Err(err("exists and is not a FIFO", io::Error::from(io::ErrorKind::AlreadyExists))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            use std::os::unix::ffi::OsStrExt;
            let c = std::ffi::CString::new(path.as_os_str().as_bytes())
                .map_err(|_| err("path", io::Error::from(io::ErrorKind::InvalidInput)))?;
            // SAFETY: `c` is a valid NUL-terminated path for the duration of the call.
            if unsafe { libc::mkfifo(c.as_ptr(), 0o620) } != 0 {
                return Err(err("mkfifo", io::Error::last_os_error()));
            }
        }
        Err(e) => return Err(err("stat", e)),
    }
    // Read-write: opening never blocks waiting for a writer, and the last writer closing
    // does not turn every read into end-of-file.
    let mut fifo = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| err("open", e))?;
    let shown = path.display().to_string();
    let thread = std::thread::Builder::new().name("control-fifo".into()).spawn(move || {
        use std::os::fd::AsRawFd;
        let mut line = Vec::with_capacity(MAX_LINE);
        let mut overlong = false;
        let mut buf = [0u8; 512];
        while !stop.load(Ordering::Relaxed) {
            let mut pfd = libc::pollfd { fd: fifo.as_raw_fd(), events: libc::POLLIN, revents: 0 };
            // SAFETY: `pfd` is one valid pollfd for the duration of the call.
            let ready = unsafe { libc::poll(&mut pfd, 1, 200) };
            if ready <= 0 {
                continue;
            }
            let n = match fifo.read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::Interrupted => {
                    continue;
                }
                Err(e) => {
                    log::warn!("control FIFO {shown}: {e}");
                    std::thread::sleep(Duration::from_millis(200));
                    continue;
                }
            };
            for &b in &buf[..n] {
                if b != b'\n' {
                    if line.len() < MAX_LINE {
                        line.push(b);
                    } else {
                        overlong = true;
                    }
                    continue;
                }
                let command = String::from_utf8_lossy(&line);
                match command.trim() {
                    _ if overlong => {
                        log::warn!("control FIFO {shown}: line longer than {MAX_LINE} bytes ignored")
                    }
                    "trigger" => latch.fire(TriggerSource::Fifo, monotonic_now()),
                    "" => {}
                    other => log::warn!("control FIFO {shown}: unknown command '{other}' (known: trigger)"),
                }
                line.clear();
                overlong = false;
            }
        }
    })?;
    log::info!("control FIFO {}: write 'trigger' lines to classify", path.display());
    Ok(FifoThread { thread: Some(thread) })
}
