//! The JSON-lines sink: one line per result (see [`crate::output`] for the record), written
//! by its own thread so that a reader that stops reading (a stuck pipe, a paused terminal)
//! never reaches the frame loop or the other sinks. Lines wait in a bounded queue; when it is
//! full the oldest is dropped and counted (`result_lines_dropped_total`). The writer polls
//! the descriptor before each write, so it notices a stop request even while the reader
//! stalls.

use std::io::{self, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;

use super::{ResultSink, Worker};
use crate::feed::Event;
use crate::metrics::{Counter, Registry};

/// Lines queued for the writer at most.
pub const QUEUE: usize = 256;

/// Where lines go.
pub enum LineOutput {
    /// A file descriptor (stdout), written with poll-then-write so a stop request is seen
    /// while the reader stalls.
    Fd(RawFd),
    /// Any writer (tests).
    Writer(Box<dyn Write + Send>),
}

impl LineOutput {
    /// The process's standard output.
    pub fn stdout() -> LineOutput {
        LineOutput::Fd(io::stdout().as_raw_fd())
    }

    fn write_line(&mut self, line: &[u8], stop: &AtomicBool) -> io::Result<()> {
        match self {
            LineOutput::Fd(fd) => write_fd(*fd, line, stop),
            LineOutput::Writer(w) => w.write_all(line).and_then(|()| w.flush()),
        }
    }
}

/// Writes all of `buf` to `fd`, waiting for it to become writable in slices of 200 ms and
/// giving up (`TimedOut`) once `stop` is set.
fn write_fd(fd: RawFd, mut buf: &[u8], stop: &AtomicBool) -> io::Result<()> {
    while !buf.is_empty() {
        let mut p = libc::pollfd { fd, events: libc::POLLOUT, revents: 0 };
        // SAFETY: `p` is one valid pollfd, as the count says.
        let r = unsafe { libc::poll(&mut p, 1, 200) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if r == 0 {
            if stop.load(Ordering::Relaxed) {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "the reader stopped reading"));
            }
            continue;
        }
        if p.revents & libc::POLLOUT == 0 {
            return Err(io::Error::new(io::ErrorKind::BrokenPipe, "the reader went away"));
        }
        // SAFETY: `buf` is valid for `buf.len()` bytes.
        let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock => continue,
                _ => return Err(e),
            }
        }
        buf = &buf[n as usize..];
    }
    Ok(())
}

/// The JSON-lines sink.
pub struct JsonLines {
    worker: Worker<Vec<u8>>,
    /// Line buffers given back by the writer, reused.
    free: Arc<ArrayQueue<Vec<u8>>>,
}

impl JsonLines {
    /// Starts the writer thread on `out`; registers `result_lines_dropped_total` and
    /// `result_lines_failed_total`.
    pub fn start(mut out: LineOutput, metrics: &Registry) -> io::Result<JsonLines> {
        let dropped = metrics.counter(
            "result_lines_dropped_total",
            "JSON result lines dropped because the reader of the output fell behind.",
        );
        let failed: Arc<Counter> =
            metrics.counter("result_lines_failed_total", "JSON result lines whose write failed.");
        let free = Arc::new(ArrayQueue::new(QUEUE + 2));
        let recycle = free.clone();
        let mut gave_up = false;
        let worker = Worker::start("json-lines", QUEUE, dropped, move |line: Vec<u8>, stop: &AtomicBool| {
            if gave_up {
                failed.inc();
            } else if let Err(e) = out.write_line(&line, stop) {
                failed.inc();
                if e.kind() != io::ErrorKind::TimedOut {
                    // stdout closed: results are not worth stopping the device for.
                    log::warn!("result output failed ({e}); no more JSON lines will be written");
                    gave_up = true;
                }
            }
            let _ = recycle.push(line);
        })?;
        Ok(JsonLines { worker, free })
    }
}

impl ResultSink for JsonLines {
    fn name(&self) -> &'static str {
        "json-lines"
    }

    fn on_event(&mut self, event: &Event) {
        let mut line = self.free.pop().unwrap_or_else(|| Vec::with_capacity(1024));
        line.clear();
        // Serializing into a Vec cannot fail but for a serializer bug.
        if serde_json::to_writer(&mut line, &event.result.record()).is_ok() {
            line.push(b'\n');
            if let Some(old) = self.worker.push(line) {
                let _ = self.free.push(old);
            }
        }
    }

    fn shutdown(self: Box<Self>, deadline: Instant) {
        self.worker.shutdown(deadline.min(Instant::now() + Duration::from_secs(2)));
    }
}
