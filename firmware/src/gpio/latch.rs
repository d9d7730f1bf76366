//! Hand-over of triggers from the input threads to the frame loop.

use std::fmt;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// Where a trigger came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TriggerSource {
    /// A debounced GPIO input.
    Gpio,
    /// A signal (e.g. `SIGUSR1`).
    Signal,
    /// A command written to the control FIFO.
    Fifo,
}

impl TriggerSource {
    /// Lower-case name for logs and result records: `"gpio"`, `"signal"` or `"fifo"`.
    pub const fn name(self) -> &'static str {
        match self {
            TriggerSource::Gpio => "gpio",
            TriggerSource::Signal => "signal",
            TriggerSource::Fifo => "fifo",
        }
    }
}

impl fmt::Display for TriggerSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The triggers that arrived since the frame loop last took them, coalesced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pending {
    /// Source of the earliest of the coalesced triggers (by `at`; the first fired on a tie).
    pub source: TriggerSource,
    /// Time of the earliest of the coalesced triggers.
    pub first_at: Duration,
    /// How many triggers were coalesced (at least 1; saturates at `u32::MAX`).
    pub count: u32,
}

/// A one-slot, coalescing trigger latch shared (via `Arc`) by the threads that produce triggers (GPIO,
/// signals, FIFO) and the frame loop that handles them.
///
/// [`fire`](Self::fire) sets it (or, if already set, adds to the count);
/// [`take`](Self::take) empties it. A trigger that arrives while the frame loop is busy (e.g. during
/// inference) therefore stays pending and is handled once, after; any number of triggers arriving
/// during one busy period become one [`Pending`] whose `count` says how many there were. Nothing is
/// lost and nothing is handled twice. No method allocates; all are short critical sections.
#[derive(Debug, Default)]
pub struct TriggerLatch {
    slot: Mutex<Option<Pending>>,
    fired: Condvar,
}

impl TriggerLatch {
    /// An empty latch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a trigger from `source` that happened at `at` (on the daemon's clock, see
    /// [`MonotonicClock`](super::MonotonicClock)); wakes a thread blocked in
    /// [`wait_timeout`](Self::wait_timeout).
    pub fn fire(&self, source: TriggerSource, at: Duration) {
        let mut slot = self.lock();
        *slot = Some(match *slot {
            None => Pending { source, first_at: at, count: 1 },
            Some(p) => {
                let count = p.count.saturating_add(1);
                if at < p.first_at { Pending { source, first_at: at, count } } else { Pending { count, ..p } }
            }
        });
        drop(slot);
        self.fired.notify_all();
    }

    /// Takes the pending triggers, leaving the latch empty; `None` if nothing fired since the last take.
    pub fn take(&self) -> Option<Pending> {
        self.lock().take()
    }

    /// Whether triggers are pending (without taking them).
    pub fn is_pending(&self) -> bool {
        self.lock().is_some()
    }

    /// Like [`take`](Self::take), but if nothing is pending, blocks until a trigger fires or `timeout`
    /// (real time) has passed.
    pub fn wait_timeout(&self, timeout: Duration) -> Option<Pending> {
        let deadline = Instant::now().checked_add(timeout);
        let mut slot = self.lock();
        loop {
            if let Some(p) = slot.take() {
                return Some(p);
            }
            let left = match deadline {
                Some(d) => d.saturating_duration_since(Instant::now()),
                None => timeout,
            };
            if left.is_zero() {
                return None;
            }
            slot = self.fired.wait_timeout(slot, left).unwrap_or_else(PoisonError::into_inner).0;
        }
    }

    /// A panic in another thread while it held the lock cannot leave the `Option<Pending>` half
    /// written, so a poisoned lock is used as is.
    fn lock(&self) -> MutexGuard<'_, Option<Pending>> {
        self.slot.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::thread;

    const fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn latch_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<TriggerLatch>();
        assert_send_sync::<Arc<TriggerLatch>>();
    }

    #[test]
    fn source_names() {
        let names: Vec<&str> =
            [TriggerSource::Gpio, TriggerSource::Signal, TriggerSource::Fifo].map(TriggerSource::name).into();
        assert_eq!(names, ["gpio", "signal", "fifo"]);
        assert_eq!(TriggerSource::Fifo.to_string(), "fifo");
    }

    #[test]
    fn take_empties_the_latch() {
        let latch = TriggerLatch::new();
        assert_eq!(latch.take(), None);
        latch.fire(TriggerSource::Signal, ms(7));
        assert!(latch.is_pending());
        assert_eq!(latch.take(), Some(Pending { source: TriggerSource::Signal, first_at: ms(7), count: 1 }));
        assert!(!latch.is_pending());
        assert_eq!(latch.take(), None);
    }

    #[test]
    fn triggers_coalesce_and_keep_the_earliest() {
        let latch = TriggerLatch::new();
        latch.fire(TriggerSource::Fifo, ms(30));
        latch.fire(TriggerSource::Signal, ms(40));
        // A GPIO press stamped with its first edge may be reported after a later trigger.
        latch.fire(TriggerSource::Gpio, ms(25));
        assert_eq!(latch.take(), Some(Pending { source: TriggerSource::Gpio, first_at: ms(25), count: 3 }));
        assert_eq!(latch.take(), None);
    }

    #[test]
    fn wait_timeout_times_out_then_wakes_on_fire() {
        let latch = Arc::new(TriggerLatch::new());
        let start = Instant::now();
        assert_eq!(latch.wait_timeout(ms(30)), None);
        assert!(start.elapsed() >= ms(30));

        let firer = {
            let latch = Arc::clone(&latch);
            thread::spawn(move || {
                thread::sleep(ms(20));
                latch.fire(TriggerSource::Fifo, ms(1))
            })
        };
        let got = latch.wait_timeout(Duration::from_secs(10));
        assert_eq!(got, Some(Pending { source: TriggerSource::Fifo, first_at: ms(1), count: 1 }));
        firer.join().unwrap();
        assert_eq!(latch.take(), None);
    }

    #[test]
    fn concurrent_fires_are_all_counted_once() {
        let latch = Arc::new(TriggerLatch::new());
        let threads: Vec<_> = (0..4)
            .map(|i| {
                let latch = Arc::clone(&latch);
                thread::spawn(move || {
                    for n in 0..1000 {
                        latch.fire(TriggerSource::Gpio, ms(i * 1000 + n));
                    }
                })
            })
            .collect();
        let mut taken = 0u64;
        let mut takes = 0;
        while takes < 100_000 && (taken < 4000 || latch.is_pending()) {
            taken += latch.take().map_or(0, |p| u64::from(p.count));
            takes += 1;
            if takes % 64 == 0 {
                thread::yield_now();
            }
        }
        for t in threads {
            t.join().unwrap();
        }
        taken += latch.take().map_or(0, |p| u64::from(p.count));
        assert_eq!(taken, 4000);
    }
}
