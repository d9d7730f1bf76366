//! GPIO triggering and outputs.
//!
//! Everything that decides *when* something happens is pure and hardware-independent, written
//! against the embedded-hal 1.0 digital traits and a [`Clock`], so it is tested with
//! `embedded_hal_mock` and a [`FakeClock`]:
//!
//! - [`Debouncer`]: a software debounce state machine fed with level changes (edges or samples) and
//!   their times; it reports each debounced press (or release, see [`Edge`]) exactly once.
//! - [`PolledTrigger`]: samples any [`embedded_hal::digital::InputPin`] and feeds a [`Debouncer`]
//!   (boards or chips without edge interrupts, and tests); [`spawn_polled_trigger`] runs one on a thread.
//! - [`TriggerLatch`]: where the GPIO thread, the signal thread and the FIFO reader deliver triggers and
//!   the frame loop takes them; triggers that arrive while the frame loop is busy are coalesced into one
//!   [`Pending`] (with a count): never lost, never handled twice.
//! - [`OutputDriver`]: drives an [`embedded_hal::digital::OutputPin`] active for a hold time when a
//!   classification matches an [`OutputRule`].
//!
//! [`linux`] holds the Linux character-device (gpio-cdev) side: chip and line lookup by path, name or
//! label, a thread that turns kernel edge events into debounced triggers, and output pins.
//!
//! # Times
//! All times are [`Duration`]s on one [`Clock`]'s timeline: in the daemon [`MonotonicClock`], i.e.
//! `CLOCK_MONOTONIC` ([`crate::monotonic_now`]), the clock of V4L2 buffer timestamps, so a
//! [`Pending::first_at`] can be compared with a frame's capture time. Kernel GPIO event timestamps are
//! mapped onto that timeline before use; see [`linux::spawn_edge_trigger`].
//!
//! # Levels, `active_low` and `edge`
//! *Physical* level = the electrical level on the pin (high/low). *Active* = the asserted state after
//! applying `active_low` (`active = physical_high != active_low`): for a button that pulls the line to
//! ground, `active_low = true` and "active" means "pressed". The [`Debouncer`] works on active/inactive.
//! [`Edge`] names the debounced transition of the *physical* line that fires a trigger: `rising` fires
//! when the line settles high, `falling` when it settles low, `both` on either. So for that button,
//! `active_low = true, edge = falling` fires on press; `edge = rising` would fire on release.
//! Outputs apply `active_low` the same way: active = driven low when `active_low`. Lines are requested
//! from the kernel without its `ACTIVE_LOW` flag; the inversion is done here only.

use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

mod clock;
mod debounce;
mod latch;
pub mod linux;
mod output;
mod trigger;

pub use clock::{Clock, FakeClock, MonotonicClock};
pub use debounce::{Debouncer, Edge, Press, TriggerConfig};
pub use latch::{Pending, TriggerLatch, TriggerSource};
pub use linux::LineError;
pub use output::{OutputDriver, OutputRule};
pub use trigger::{PolledTrigger, spawn_polled_trigger};

/// Errors of the GPIO module (configuration parsing, chip/line lookup, kernel requests).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GpioError {
    /// A configuration string could not be parsed.
    #[error("invalid {what} {value:?}: expected {expected}")]
    Parse {
        /// What was being parsed (e.g. "GPIO edge").
        what: &'static str,
        /// The offending input.
        value: String,
        /// What would have been accepted.
        expected: &'static str,
    },
    /// No chip matches the configured chip (by path, name or label).
    #[error("no GPIO chip matches {spec:?} (by path, name or label); chips found: {found}")]
    ChipNotFound {
        /// The configured chip.
        spec: String,
        /// The chips that were found, as `name [label] (N lines) at path`, comma separated.
        found: String,
    },
    /// Several different chips carry the configured label.
    #[error("GPIO chip {spec:?} is ambiguous, several chips match: {candidates}; use a path or name")]
    AmbiguousChip {
        /// The configured chip.
        spec: String,
        /// The matching chips.
        candidates: String,
    },
    /// The configured line could not be resolved on the chip.
    #[error("GPIO chip {chip}: {source}")]
    Line {
        /// The chip, as `path (name [label])`.
        chip: String,
        /// What went wrong.
        #[source]
        source: LineError,
    },
    /// A gpio-cdev call (chip open, line info, line request, event read) failed.
    #[error("{context}: {source}")]
    Cdev {
        /// What was being done.
        context: String,
        /// The gpio-cdev error.
        #[source]
        source: gpio_cdev::Error,
    },
    /// An I/O error (poll on the event file descriptor, spawning a thread).
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// Longest single sleep or wait of the GPIO threads, so that a stop flag is seen within this time.
const STOP_CHECK_INTERVAL: Duration = Duration::from_millis(100);

/// Sleeps for `duration` in slices of at most [`STOP_CHECK_INTERVAL`]; returns early (with `false`)
/// once `stop` is set, `true` if the whole duration elapsed.
fn sleep_unless_stopped(duration: Duration, stop: &AtomicBool) -> bool {
    let mut left = duration;
    while !left.is_zero() {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        let slice = left.min(STOP_CHECK_INTERVAL);
        thread::sleep(slice);
        left -= slice;
    }
    !stop.load(Ordering::Relaxed)
}

/// Retry delay after consecutive failures: doubles from `initial` up to `max`.
#[derive(Debug, Clone, Copy)]
struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    const fn new(initial: Duration, max: Duration) -> Self {
        Self { initial, max, next: initial }
    }

    /// The delay to wait now; the following call returns twice as much (up to `max`).
    fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        delay
    }

    fn reset(&mut self) {
        self.next = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn backoff_doubles_up_to_max_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(500));
        let delays: Vec<u64> = (0..5).map(|_| b.next_delay().as_millis() as u64).collect();
        assert_eq!(delays, [100, 200, 400, 500, 500]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(100));
    }

    #[test]
    fn sleep_unless_stopped_returns_early_when_stopped() {
        let stop = AtomicBool::new(true);
        let start = Instant::now();
        assert!(!sleep_unless_stopped(Duration::from_secs(10), &stop));
        assert!(start.elapsed() < Duration::from_secs(1));
        let go = AtomicBool::new(false);
        assert!(sleep_unless_stopped(Duration::from_millis(5), &go));
    }

    #[test]
    fn gpio_error_messages_name_the_problem() {
        let e = GpioError::ChipNotFound {
            spec: "pinctrl-rp1".into(),
            found: "gpiochip0 [pinctrl-bcm2711] (58 lines) at /dev/gpiochip0".into(),
        };
        assert_eq!(
            e.to_string(),
            "no GPIO chip matches \"pinctrl-rp1\" (by path, name or label); chips found: \
             gpiochip0 [pinctrl-bcm2711] (58 lines) at /dev/gpiochip0"
        );
    }
}
