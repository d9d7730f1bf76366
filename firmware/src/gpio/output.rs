//! Output lines driven by classification results.

use std::time::Duration;

use embedded_hal::digital::OutputPin;

/// When an output line becomes active, and for how long.
///
/// "If any prediction has a class in `classes` with a score `>= min_score`, drive the line active
/// for `hold`."
#[derive(Debug, Clone, PartialEq)]
pub struct OutputRule {
    /// Class indices that match (resolved from label names by the caller). Empty: nothing matches.
    pub classes: Vec<usize>,
    /// Minimum score (inclusive). A NaN score never matches.
    pub min_score: f32,
    /// How long the line stays active after the last matching prediction.
    pub hold: Duration,
    /// Active = electrically low.
    pub active_low: bool,
}

impl OutputRule {
    /// Whether any of `predictions` (`(class, score)` pairs) matches the rule.
    pub fn matches(&self, predictions: &[(usize, f32)]) -> bool {
        predictions.iter().any(|&(class, score)| score >= self.min_score && self.classes.contains(&class))
    }
}

/// Drives one output pin according to an [`OutputRule`].
///
/// A matching prediction sets the line active until `now + hold`; another match while active extends
/// that; the line is released by [`tick`](Self::tick) or [`update`](Self::update) once the hold has
/// expired (at `now >= until`). The pin is written only when its state changes, starting with
/// inactive in [`new`](Self::new). If a write fails, the state is not changed, so the next `update` or
/// `tick` tries again.
///
/// With `hold == 0`, a match makes the line active until the next `tick` or non-matching `update`.
#[derive(Debug)]
pub struct OutputDriver<P> {
    pin: P,
    rule: OutputRule,
    /// The state the pin was last driven to.
    active: bool,
    /// Active until then (exclusive), since the last match.
    until: Option<Duration>,
}

impl<P: OutputPin> OutputDriver<P> {
    /// Takes the pin and drives it inactive.
    pub fn new(mut pin: P, rule: OutputRule) -> Result<Self, P::Error> {
        write(&mut pin, rule.active_low, false)?;
        Ok(Self { pin, rule, active: false, until: None })
    }

    /// Applies one classification result at time `now`; returns whether it matched the rule.
    pub fn update(&mut self, now: Duration, predictions: &[(usize, f32)]) -> Result<bool, P::Error> {
        let matched = self.rule.matches(predictions);
        if matched {
            let until = now.saturating_add(self.rule.hold);
            self.until = Some(self.until.map_or(until, |u| u.max(until)));
        }
        let want = matched || self.holding(now);
        self.drive(want)?;
        Ok(matched)
    }

    /// Releases the line if its hold has expired by `now`.
    pub fn tick(&mut self, now: Duration) -> Result<(), P::Error> {
        let want = self.holding(now);
        self.drive(want)
    }

    /// When the line is due to be released (call [`tick`](Self::tick) then), if it is active.
    pub fn next_deadline(&self) -> Option<Duration> {
        if self.active { self.until } else { None }
    }

    /// Drives the line inactive now, whatever the hold (for shutdown). Writes only if it is active.
    pub fn release(&mut self) -> Result<(), P::Error> {
        self.until = None;
        self.drive(false)
    }

    /// Whether the line is currently driven active.
    pub fn is_active(&self) -> bool {
        self.active
    }

    /// The rule.
    pub fn rule(&self) -> &OutputRule {
        &self.rule
    }

    /// Gives the pin back, as it is (call [`release`](Self::release) first to leave it inactive).
    pub fn into_inner(self) -> P {
        self.pin
    }

    fn holding(&self, now: Duration) -> bool {
        self.until.is_some_and(|until| now < until)
    }

    fn drive(&mut self, active: bool) -> Result<(), P::Error> {
        if active != self.active {
            write(&mut self.pin, self.rule.active_low, active)?;
            self.active = active;
        }
        if !active {
            self.until = None;
        }
        Ok(())
    }
}

fn write<P: OutputPin>(pin: &mut P, active_low: bool, active: bool) -> Result<(), P::Error> {
    if active != active_low { pin.set_high() } else { pin.set_low() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use embedded_hal_mock::eh1::MockError;
    use embedded_hal_mock::eh1::digital::{Mock, State, Transaction};
    use std::io::ErrorKind;

    const fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn rule(active_low: bool) -> OutputRule {
        OutputRule { classes: vec![3, 7], min_score: 0.6, hold: ms(500), active_low }
    }

    fn set(state: State) -> Transaction {
        Transaction::set(state)
    }

    #[test]
    fn rule_matching() {
        let r = rule(false);
        assert!(r.matches(&[(1, 0.9), (7, 0.6)]));
        assert!(!r.matches(&[(7, 0.59), (1, 0.99)]));
        assert!(!r.matches(&[(4, 1.0)]));
        assert!(!r.matches(&[(3, f32::NAN)]));
        assert!(!r.matches(&[]));
        let empty = OutputRule { classes: vec![], ..rule(false) };
        assert!(!empty.matches(&[(3, 1.0)]));
    }

    #[test]
    fn match_sets_active_then_releases_after_hold() {
        let mut pin = Mock::new(&[set(State::Low), set(State::High), set(State::Low)]);
        let mut out = OutputDriver::new(pin.clone(), rule(false)).unwrap();
        assert!(!out.is_active());
        assert_eq!(out.next_deadline(), None);
        assert!(out.update(ms(1000), &[(7, 0.8)]).unwrap());
        assert!(out.is_active());
        assert_eq!(out.next_deadline(), Some(ms(1500)));
        out.tick(ms(1200)).unwrap();
        assert!(!out.update(ms(1300), &[(1, 0.9)]).unwrap()); // no match: still held
        out.tick(ms(1499)).unwrap();
        assert!(out.is_active());
        out.tick(ms(1500)).unwrap();
        assert!(!out.is_active());
        assert_eq!(out.next_deadline(), None);
        out.tick(ms(2000)).unwrap();
        pin.done();
    }

    #[test]
    fn a_new_match_extends_the_hold_without_rewriting() {
        let mut pin = Mock::new(&[set(State::Low), set(State::High), set(State::Low)]);
        let mut out = OutputDriver::new(pin.clone(), rule(false)).unwrap();
        assert!(out.update(ms(0), &[(3, 0.7)]).unwrap());
        assert!(out.update(ms(400), &[(3, 0.7)]).unwrap());
        assert_eq!(out.next_deadline(), Some(ms(900)));
        out.tick(ms(500)).unwrap();
        out.tick(ms(899)).unwrap();
        assert!(out.is_active());
        out.tick(ms(900)).unwrap();
        assert!(!out.is_active());
        pin.done();
    }

    #[test]
    fn expiry_and_new_match_in_one_update_keeps_the_line_active() {
        let mut pin = Mock::new(&[set(State::Low), set(State::High)]);
        let mut out = OutputDriver::new(pin.clone(), rule(false)).unwrap();
        out.update(ms(0), &[(3, 0.9)]).unwrap();
        // The hold expired at 500 but nobody ticked; a match at 600 continues the pulse.
        out.update(ms(600), &[(7, 0.9)]).unwrap();
        assert_eq!(out.next_deadline(), Some(ms(1100)));
        pin.done();
    }

    #[test]
    fn below_threshold_or_other_class_writes_nothing() {
        let mut pin = Mock::new(&[set(State::Low)]);
        let mut out = OutputDriver::new(pin.clone(), rule(false)).unwrap();
        assert!(!out.update(ms(0), &[(3, 0.59)]).unwrap());
        assert!(!out.update(ms(10), &[(5, 0.99), (6, 0.9)]).unwrap());
        out.tick(ms(5000)).unwrap();
        assert!(!out.is_active());
        pin.done();
    }

    #[test]
    fn active_low_inverts_levels() {
        let mut pin = Mock::new(&[set(State::High), set(State::Low), set(State::High)]);
        let mut out = OutputDriver::new(pin.clone(), rule(true)).unwrap();
        out.update(ms(0), &[(3, 0.9)]).unwrap();
        assert!(out.is_active());
        out.tick(ms(500)).unwrap();
        assert!(!out.is_active());
        pin.done();
    }

    #[test]
    fn release_on_shutdown_drives_inactive_once() {
        let mut pin = Mock::new(&[set(State::High), set(State::Low), set(State::High)]);
        let mut out = OutputDriver::new(pin.clone(), rule(true)).unwrap();
        out.update(ms(0), &[(7, 0.9)]).unwrap();
        out.release().unwrap();
        assert!(!out.is_active());
        assert_eq!(out.next_deadline(), None);
        out.release().unwrap(); // already inactive: no write
        out.tick(ms(100)).unwrap(); // the hold was cancelled
        pin.done();
    }

    #[test]
    fn zero_hold_is_a_pulse_until_the_next_tick() {
        let mut pin = Mock::new(&[set(State::Low), set(State::High), set(State::Low)]);
        let mut out =
            OutputDriver::new(pin.clone(), OutputRule { hold: Duration::ZERO, ..rule(false) }).unwrap();
        out.update(ms(10), &[(3, 0.9)]).unwrap();
        assert!(out.is_active());
        assert_eq!(out.next_deadline(), Some(ms(10)));
        out.tick(ms(10)).unwrap();
        assert!(!out.is_active());
        pin.done();
    }

    #[test]
    fn a_failed_write_is_retried() {
        let err = MockError::Io(ErrorKind::Other);
        let mut pin = Mock::new(&[
            set(State::Low),
            set(State::High).with_error(err),
            set(State::High),
            set(State::Low),
        ]);
        let mut out = OutputDriver::new(pin.clone(), rule(false)).unwrap();
        assert!(out.update(ms(0), &[(3, 0.9)]).is_err());
        assert!(!out.is_active());
        out.tick(ms(100)).unwrap(); // still within the hold: activation retried
        assert!(out.is_active());
        out.tick(ms(500)).unwrap();
        assert!(!out.is_active());
        pin.done();
    }
}
