//! The `camera-classifier` daemon as a library: everything the binary wires together, so that
//! tests reach it without a camera, a GPIO chip or systemd.
//!
//! - [`config`]: the TOML file, parsed once into a validated [`config::Config`] (every
//!   problem reported with its field before any device opens).
//! - [`negotiate`]: which of a camera's formats and sizes to capture (a pure function).
//! - [`source`]: the [`source::FrameSource`] trait and its implementations: V4L2
//!   ([`source::v4l2`]) and replay of image or raw frame files ([`source::replay`]).
//! - [`gpio`]: debounced triggers and rule-driven outputs over embedded-hal traits, the Linux
//!   implementation over gpio-cdev, and the [`gpio::TriggerLatch`] every trigger goes through.
//! - [`control`]: software triggers (SIGUSR1 and a control FIFO) and stop signals.
//! - [`notify`]: the systemd notify protocol (READY, WATCHDOG, STATUS, STOPPING).
//! - [`output`]: JSON result lines and saved frames.
//! - [`daemon`]: the frame loop.
//! - [`feed`]: the loop's bounded, lock-free hand-off to the integrations.
//! - [`integrations`]: the thread that consumes it: status page state, preview JPEGs, MQTT.
//! - [`mqtt`]: results to an MQTT broker. [`http`]: the status page, JSON API and metrics.
//! - [`telemetry`]: counters, latency histograms and board sensors for `/metrics`.
#![deny(missing_docs)]

pub mod config;
pub mod control;
pub mod daemon;
pub mod feed;
pub mod gpio;
pub mod http;
pub mod integrations;
pub mod mqtt;
pub mod negotiate;
pub mod notify;
pub mod output;
pub mod source;
pub mod telemetry;

/// Now on `CLOCK_MONOTONIC`, the clock V4L2 buffer timestamps and the daemon's schedule use.
pub fn monotonic_now() -> std::time::Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    std::time::Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}
