//! Software triggers and stop requests: SIGTERM/SIGINT stop the daemon (a second one exits
//! at once), SIGUSR1 triggers a classification, and so does each `trigger` line written to
//! the control FIFO (`echo trigger > /run/camera-classifier/control`).

use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
use signal_hook::iterator::{Handle, Signals};

use crate::gpio::{TriggerLatch, TriggerSource};
use crate::monotonic_now;
use crate::throttle::Throttle;

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

/// The FIFO's mode, whatever the umask: the service's user reads, its group may write.
pub const FIFO_MODE: u32 = 0o620;

/// Opens the control FIFO at `path`, creating it if missing. Refuses a symlink, anything
/// that is not a FIFO, and a FIFO owned by another user (someone else's FIFO could feed the
/// daemon commands, or be one the daemon was tricked into opening); gives it [`FIFO_MODE`]
/// whatever the umask and whatever mode it had.
pub fn open_fifo(path: &Path) -> io::Result<std::fs::File> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::MetadataExt;
    let err = |what: &str, e: io::Error| {
        io::Error::new(e.kind(), format!("control FIFO {}: {what}: {e}", path.display()))
    };
    let refuse = |what: &str| err(what, io::Error::from(io::ErrorKind::InvalidInput));
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => return Err(refuse("is a symlink")),
        Ok(m) if !m.file_type().is_fifo() => return Err(refuse("exists and is not a FIFO")),
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let c = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|_| refuse("path"))?;
            // SAFETY: `c` is a valid NUL-terminated path for the duration of the call. Created
            // 0600 (less after the umask); the mode is set below, on the open descriptor.
            if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } != 0 {
                return Err(err("mkfifo", io::Error::last_os_error()));
            }
        }
        Err(e) => return Err(err("stat", e)),
    }
    // Read-write: opening never blocks waiting for a writer, and the last writer closing
    // does not turn every read into end-of-file. O_NOFOLLOW: a symlink swapped in since the
    // check above is refused too.
    let fifo = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| err("open", e))?;
    let m = fifo.metadata().map_err(|e| err("fstat", e))?;
    if !m.file_type().is_fifo() {
        return Err(refuse("is not a FIFO"));
    }
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if m.uid() != me {
        return Err(err(
            &format!("owned by uid {}, not by this service (uid {me}); remove it", m.uid()),
            io::Error::from(io::ErrorKind::PermissionDenied),
        ));
    }
    fifo.set_permissions(std::fs::Permissions::from_mode(FIFO_MODE)).map_err(|e| err("chmod", e))?;
    Ok(fifo)
}

/// Opens the control FIFO at `path` ([`open_fifo`]) and reads it on a thread: each
/// `trigger` line fires `latch`. Unknown commands and overlong lines are warned about at most
/// once per 10 s. The thread ends within 200 ms after `stop` is set.
pub fn spawn_fifo(path: &Path, stop: Arc<AtomicBool>, latch: Arc<TriggerLatch>) -> io::Result<FifoThread> {
    let mut fifo = open_fifo(path)?;
    let shown = path.display().to_string();
    let thread = std::thread::Builder::new().name("control-fifo".into()).spawn(move || {
        use std::os::fd::AsRawFd;
        let mut line = Vec::with_capacity(MAX_LINE);
        let mut overlong = false;
        let mut buf = [0u8; 512];
        let mut warn = Throttle::new(Duration::from_secs(10));
        let mut warn_read = Throttle::new(Duration::from_secs(10));
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
                    if warn_read.allow(monotonic_now()).is_some() {
                        log::warn!("control FIFO {shown}: {e}");
                    }
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
                let problem = match command.trim() {
                    _ if overlong => Some(format!("a line longer than {MAX_LINE} bytes")),
                    "trigger" => {
                        latch.fire(TriggerSource::Fifo, monotonic_now());
                        None
                    }
                    "" => None,
                    other => Some(format!("unknown command '{}' (known: trigger)", other.escape_debug())),
                };
                if let Some(problem) = problem
                    && let Some(held) = warn.allow(monotonic_now())
                {
                    log::warn!(
                        "control FIFO {shown}: ignored {problem} ({held} more ignored since the last warning)"
                    );
                }
                line.clear();
                overlong = false;
            }
        }
    })?;
    log::info!("control FIFO {}: write 'trigger' lines to classify", path.display());
    Ok(FifoThread { thread: Some(thread) })
}
