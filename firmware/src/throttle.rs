//! Rate-limited warnings: input that can repeat (bad frames, a failing GPIO line, garbage on
//! the control FIFO) must not turn into an unbounded log.

use std::time::Duration;

/// Lets one event through per period and counts the ones it held back.
#[derive(Clone, Debug)]
pub struct Throttle {
    every: Duration,
    last: Option<Duration>,
    held: u64,
}

impl Throttle {
    /// At most one event per `every`.
    pub const fn new(every: Duration) -> Throttle {
        Throttle { every, last: None, held: 0 }
    }

    /// Whether an event at monotonic time `now` may be logged: `Some(n)` with the number of
    /// events held back since the last one that was, `None` to stay quiet.
    pub fn allow(&mut self, now: Duration) -> Option<u64> {
        if self.last.is_none_or(|t| now.saturating_sub(t) >= self.every) {
            self.last = Some(now);
            Some(std::mem::take(&mut self.held))
        } else {
            self.held += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_per_period_with_the_held_count() {
        let mut t = Throttle::new(Duration::from_secs(10));
        let s = Duration::from_secs;
        assert_eq!(t.allow(s(100)), Some(0), "the first goes through");
        assert_eq!(t.allow(s(101)), None);
        assert_eq!(t.allow(s(109)), None);
        assert_eq!(t.allow(s(110)), Some(2));
        assert_eq!(t.allow(s(111)), None);
        assert_eq!(t.allow(s(200)), Some(1));
    }
}
