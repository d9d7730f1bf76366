//! Monotonic time sources: the real one and a fake one for tests.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A monotonic time source with an arbitrary epoch.
///
/// Times exchanged by the GPIO code (edges, presses, pending triggers, output deadlines) are
/// `Duration`s since the epoch of the clock in use. Values from different clocks must not be compared.
pub trait Clock {
    /// The current time since the clock's epoch. Never decreases.
    fn now(&self) -> Duration;
}

impl<C: Clock + ?Sized> Clock for &C {
    fn now(&self) -> Duration {
        (**self).now()
    }
}

impl<C: Clock + ?Sized> Clock for Arc<C> {
    fn now(&self) -> Duration {
        (**self).now()
    }
}

/// The real clock: `CLOCK_MONOTONIC` ([`crate::monotonic_now`]), the timeline of the daemon's
/// schedule and of V4L2 buffer timestamps, so GPIO trigger times compare with frame times.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MonotonicClock;

impl Clock for MonotonicClock {
    fn now(&self) -> Duration {
        crate::monotonic_now()
    }
}

/// A manually driven clock for tests; thread-safe, so it can be shared (by reference or `Arc`) with
/// the component under test and advanced while that component holds it.
///
/// Resolution is one nanosecond; times saturate at `u64::MAX` nanoseconds (about 584 years).
#[derive(Debug, Default)]
pub struct FakeClock {
    nanos: AtomicU64,
}

fn to_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl FakeClock {
    /// A clock that reads `start` until advanced.
    pub fn new(start: Duration) -> Self {
        Self { nanos: AtomicU64::new(to_nanos(start)) }
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let by = to_nanos(by);
        // The closure always returns Some, so fetch_update cannot fail.
        let _ = self.nanos.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| Some(n.saturating_add(by)));
    }

    /// Sets the clock to `to` if that is later than the current time; a clock never goes back, so an
    /// earlier `to` is ignored.
    pub fn set(&self, to: Duration) {
        self.nanos.fetch_max(to_nanos(to), Ordering::SeqCst);
    }
}

impl Clock for FakeClock {
    fn now(&self) -> Duration {
        Duration::from_nanos(self.nanos.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn fake_clock_advances_and_never_goes_back() {
        let clock = FakeClock::new(ms(5));
        assert_eq!(clock.now(), ms(5));
        clock.advance(ms(10));
        assert_eq!(clock.now(), ms(15));
        clock.set(ms(3));
        assert_eq!(clock.now(), ms(15));
        clock.set(ms(40));
        assert_eq!(clock.now(), ms(40));
        clock.advance(Duration::MAX);
        assert_eq!(clock.now(), Duration::from_nanos(u64::MAX));
    }

    #[test]
    fn fake_clock_is_shared_through_references_and_arcs() {
        fn read(c: impl Clock) -> Duration {
            c.now()
        }
        let clock = Arc::new(FakeClock::new(ms(1)));
        let by_ref: &FakeClock = &clock;
        clock.advance(ms(1));
        assert_eq!(read(by_ref), ms(2));
        assert_eq!(read(Arc::clone(&clock)), ms(2));
    }

    #[test]
    fn monotonic_clock_is_the_daemons_clock() {
        let before = crate::monotonic_now();
        let now = MonotonicClock.now();
        let after = crate::monotonic_now();
        assert!(before <= now && now <= after, "{before:?} {now:?} {after:?}");
        std::thread::sleep(ms(20));
        assert!(MonotonicClock.now() >= now + ms(20));
    }
}
