//! Where frames come from: the [`FrameSource`] trait, a V4L2 camera ([`v4l2`]) and a replay
//! of files ([`replay`]).
//!
//! A source hands out one borrowed frame at a time; the frame stays valid until the next
//! call (for V4L2 it is the mmap'ed driver buffer itself, returned to the driver then).
//! Errors on this path are [`SourceError`]: `Copy`, no formatting. Opening is where the
//! expensive, descriptive errors live ([`OpenError`]).

pub mod replay;
pub mod v4l2;

use std::time::Duration;

use bit_runtime::Frame;

/// One frame and where it came from.
#[derive(Clone, Copy, Debug)]
pub struct Captured<'a> {
    /// The pixels, borrowed from the source until its next call.
    pub frame: Frame<'a>,
    /// The source's frame counter (V4L2 `sequence`; gaps mean frames the driver dropped).
    pub sequence: u64,
    /// When the frame was captured, on `CLOCK_MONOTONIC` (see [`crate::monotonic_now`]).
    pub timestamp: Duration,
}

/// Why no frame came.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    /// Nothing within the wait; ask again.
    #[error("no frame yet")]
    Timeout,
    /// A replay that ends, ended.
    #[error("end of the replay")]
    End,
    /// The device failed or vanished (unplugged, I/O error): close and reopen it.
    #[error("{what}: {kind}")]
    Lost {
        /// The failed operation.
        what: &'static str,
        /// The I/O error's kind.
        kind: std::io::ErrorKind,
        /// The OS error number, if any.
        errno: Option<i32>,
    },
}

impl SourceError {
    /// A lost device from an I/O error; interrupted waits and timeouts are [`SourceError::Timeout`].
    pub fn from_io(what: &'static str, e: &std::io::Error) -> SourceError {
        match e.kind() {
            std::io::ErrorKind::TimedOut
            | std::io::ErrorKind::Interrupted
            | std::io::ErrorKind::WouldBlock => SourceError::Timeout,
            kind => SourceError::Lost { what, kind, errno: e.raw_os_error() },
        }
    }
}

/// Why a source could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The device or files are not there (yet): worth retrying.
    #[error("{0}")]
    Unavailable(String),
    /// The device exists but cannot deliver frames the runtime reads: retrying won't help.
    #[error("{0}")]
    Unusable(String),
}

/// A camera, or something standing in for one.
pub trait FrameSource {
    /// What it is, for logs (`/dev/video0: YUYV 640x480`).
    fn describe(&self) -> String;

    /// Largest frame it can deliver, known before [`FrameSource::open`] (sizes the
    /// classifier's buffers).
    fn frame_limit(&self) -> (u32, u32);

    /// The frame sizes known before opening (a replay's files, a camera's configured size);
    /// empty when only the device can tell.
    fn known_sizes(&self) -> Vec<(u32, u32)> {
        Vec::new()
    }

    /// Opens (or reopens) the source; `min_size` is the smallest frame that needs no
    /// upscaling (the model's input, or what its contract resizes to before cropping).
    fn open(&mut self, min_size: (u32, u32)) -> Result<(), OpenError>;

    /// Releases the device (after [`SourceError::Lost`], before reopening, at exit).
    fn close(&mut self);

    /// The next frame, waiting at most `wait`.
    fn next_frame(&mut self, wait: Duration) -> Result<Captured<'_>, SourceError>;
}
