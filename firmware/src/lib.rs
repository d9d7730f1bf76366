//! The `camera-classifier` daemon as a library: everything the binary wires together, so that
//! tests reach it without a camera, a GPIO chip or systemd.
//!
//! - [`app`]: start-up (every check, in order; signals first), the run, shutdown, and the
//!   one-shot frame capture; `main.rs` only parses the command line and calls it.
//! - [`config`]: the TOML file, parsed once into a validated [`config::Config`] (every
//!   problem reported with its field before any device opens).
//! - [`source`]: the [`source::FrameSource`] trait and its implementations: V4L2
//!   ([`source::v4l2`]) and replay of image or raw frame files ([`source::replay`]);
//!   [`negotiate`]: which of a camera's formats and sizes to capture (a pure function).
//! - [`daemon`]: the frame loop and its metrics.
//! - [`feed`]: the loop's bounded, lock-free hand-off to the result sinks.
//! - [`sink`]: the [`sink::ResultSink`] trait, the thread that drains the feed into every
//!   sink, and the JSON-lines, status-page and frame-saving sinks; [`mqtt`] is one too.
//! - [`http`]: the status page, JSON API and `/metrics` server.
//! - [`metrics`]: counters, gauges, histograms and the Prometheus writer every part
//!   registers into (a leaf module); [`board`]: board sensors read at scrape time.
//! - [`gpio`]: debounced triggers and rule-driven outputs over embedded-hal traits, the Linux
//!   implementation over gpio-cdev, and the [`gpio::TriggerLatch`] every trigger goes through.
//! - [`control`]: software triggers (SIGUSR1 and a control FIFO) and stop signals.
//! - [`notify`]: the systemd notify protocol (READY, WATCHDOG, STATUS, STOPPING).
//! - [`output`]: the result record and frames to JPEG; [`throttle`]: rate-limited warnings.
#![deny(missing_docs)]

pub mod app;
pub mod board;
pub mod config;
pub mod control;
pub mod daemon;
pub mod feed;
pub mod gpio;
pub mod http;
pub mod metrics;
pub mod mqtt;
pub mod negotiate;
pub mod notify;
pub mod output;
pub mod sink;
pub mod source;
pub mod throttle;

/// This machine's host name (`/proc/sys/kernel/hostname`, read from procfs rather than through
/// gethostname(2): no unsafe FFI for one string); None if unreadable or empty.
pub fn hostname() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim();
    (!name.is_empty()).then(|| name.to_string())
}

/// Now on `CLOCK_MONOTONIC`, the clock V4L2 buffer timestamps and the daemon's schedule use.
pub fn monotonic_now() -> std::time::Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    std::time::Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}
