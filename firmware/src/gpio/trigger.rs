//! A trigger input read by polling an embedded-hal input pin.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use embedded_hal::digital::InputPin;
use log::{debug, info, trace, warn};

use super::{
    Backoff, Clock, Debouncer, Press, TriggerConfig, TriggerLatch, TriggerSource, sleep_unless_stopped,
};

/// A trigger input that is sampled: each [`poll`](Self::poll) reads the pin once, at the clock's
/// current time, and feeds the level to a [`Debouncer`].
///
/// For boards or chips without edge interrupts (and for tests). Pulses shorter than the polling
/// interval can be missed, and edge times are only as precise as the interval.
#[derive(Debug)]
pub struct PolledTrigger<P, C> {
    pin: P,
    clock: C,
    config: TriggerConfig,
    debouncer: Debouncer,
}

impl<P: InputPin, C: Clock> PolledTrigger<P, C> {
    /// Reads the pin once to learn its starting level (which fires nothing; see [`Debouncer`]).
    pub fn new(mut pin: P, clock: C, config: TriggerConfig) -> Result<Self, P::Error> {
        let active = config.is_active(pin.is_high()?);
        let debouncer = Debouncer::new(&config, active, clock.now());
        Ok(Self { pin, clock, config, debouncer })
    }

    /// Samples the pin now; returns a press if one completed.
    pub fn poll(&mut self) -> Result<Option<Press>, P::Error> {
        let high = self.pin.is_high()?;
        let now = self.clock.now();
        Ok(self.debouncer.edge(now, self.config.is_active(high)))
    }

    /// When a pending level change will have been stable long enough (poll then, or sooner).
    pub fn next_deadline(&self) -> Option<Duration> {
        self.debouncer.next_deadline()
    }

    /// The debouncer, e.g. to read the debounced level.
    pub fn debouncer(&self) -> &Debouncer {
        &self.debouncer
    }

    /// The trigger configuration.
    pub fn config(&self) -> &TriggerConfig {
        &self.config
    }

    /// Gives the pin back.
    pub fn into_inner(self) -> P {
        self.pin
    }
}

/// Runs `trigger` on a thread named `gpio-poll`: samples it every `interval` and fires `latch` with
/// [`TriggerSource::Gpio`] and the press's `began_at` for every press.
///
/// The thread ends within about 100 ms of `stop` being set. Read errors are logged and retried with
/// a backoff (up to 5 s); the thread never panics on them.
pub fn spawn_polled_trigger<P, C>(
    mut trigger: PolledTrigger<P, C>,
    interval: Duration,
    latch: Arc<TriggerLatch>,
    stop: Arc<AtomicBool>,
) -> io::Result<JoinHandle<()>>
where
    P: InputPin + Send + 'static,
    C: Clock + Send + 'static,
{
    let interval = interval.max(Duration::from_millis(1));
    thread::Builder::new().name("gpio-poll".into()).spawn(move || {
        info!("GPIO trigger: polling every {interval:?}, {}", trigger.config());
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let mut failing = false;
        while !stop.load(Ordering::Relaxed) {
            match trigger.poll() {
                Ok(press) => {
                    if failing {
                        info!("GPIO trigger: reading the input works again");
                        failing = false;
                        backoff.reset();
                    }
                    if let Some(press) = press {
                        latch.fire(TriggerSource::Gpio, press.began_at);
                        debug!("GPIO trigger: {press:?}");
                    } else {
                        trace!("GPIO trigger: level {}", trigger.debouncer().level());
                    }
                }
                Err(e) => {
                    let delay = backoff.next_delay();
                    warn!("GPIO trigger: reading the input failed: {e:?}; retrying in {delay:?}");
                    failing = true;
                    sleep_unless_stopped(delay, &stop);
                    continue;
                }
            }
            sleep_unless_stopped(interval, &stop);
        }
        debug!("GPIO trigger: polling stopped");
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpio::{Edge, FakeClock, Pending};
    use embedded_hal_mock::eh1::MockError;
    use embedded_hal_mock::eh1::digital::{Mock, State, Transaction};
    use std::time::Instant;

    const fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    const RISING_20MS: TriggerConfig =
        TriggerConfig { edge: Edge::Rising, active_low: false, debounce: ms(20) };

    /// Expectations for reading the given physical levels in order.
    fn reads(levels: &[State]) -> Vec<Transaction> {
        levels.iter().map(|&s| Transaction::get(s)).collect()
    }

    #[test]
    fn polled_bounce_fires_once_with_the_first_edge_time() {
        use State::{High, Low};
        let clock = FakeClock::new(ms(0));
        // One read at start, then one per 5 ms: bounce at 5..15, held from 15.
        let levels = [Low, High, Low, High, High, High, High, High, High, Low];
        let mut pin = Mock::new(&reads(&levels));
        let mut t = PolledTrigger::new(pin.clone(), &clock, RISING_20MS).unwrap();
        let mut presses = Vec::new();
        for _ in 1..levels.len() {
            clock.advance(ms(5));
            presses.extend(t.poll().unwrap());
        }
        assert_eq!(presses, [Press { began_at: ms(5), confirmed_at: ms(35), active: true }]);
        pin.done();
    }

    #[test]
    fn polled_active_low_falling_fires_on_low() {
        use State::{High, Low};
        let clock = FakeClock::new(ms(0));
        let cfg = TriggerConfig { edge: Edge::Falling, active_low: true, debounce: ms(10) };
        let levels = [High, Low, Low, Low, High, High, High];
        let mut pin = Mock::new(&reads(&levels));
        let mut t = PolledTrigger::new(pin.clone(), &clock, cfg).unwrap();
        let mut presses = Vec::new();
        for _ in 1..levels.len() {
            clock.advance(ms(10));
            presses.extend(t.poll().unwrap());
        }
        assert_eq!(presses, [Press { began_at: ms(10), confirmed_at: ms(20), active: true }]);
        assert!(!t.debouncer().debounced());
        pin.done();
    }

    #[test]
    fn a_pin_active_at_start_fires_only_after_release_and_press() {
        use State::{High, Low};
        let clock = FakeClock::new(ms(0));
        let levels = [High, High, High, High, Low, Low, Low, High, High, High];
        let mut pin = Mock::new(&reads(&levels));
        let mut t = PolledTrigger::new(pin.clone(), &clock, RISING_20MS).unwrap();
        assert!(t.debouncer().debounced());
        let mut presses = Vec::new();
        for _ in 1..levels.len() {
            clock.advance(ms(10));
            presses.extend(t.poll().unwrap());
        }
        assert_eq!(presses, [Press { began_at: ms(70), confirmed_at: ms(90), active: true }]);
        assert_eq!(t.next_deadline(), None);
        pin.done();
    }

    #[test]
    fn read_errors_are_returned() {
        let clock = FakeClock::new(ms(0));
        let mut pin = Mock::new(&[
            Transaction::get(State::Low),
            Transaction::get(State::High).with_error(MockError::Io(io::ErrorKind::Other)),
        ]);
        let mut t = PolledTrigger::new(pin.clone(), &clock, RISING_20MS).unwrap();
        assert!(t.poll().is_err());
        pin.done();
    }

    /// An input whose level is a function of a fake clock: high during `[from, to)`.
    struct ScriptedPin {
        clock: Arc<FakeClock>,
        high: (Duration, Duration),
    }

    impl embedded_hal::digital::ErrorType for ScriptedPin {
        type Error = std::convert::Infallible;
    }

    impl InputPin for ScriptedPin {
        fn is_high(&mut self) -> Result<bool, Self::Error> {
            let now = self.clock.now();
            Ok(now >= self.high.0 && now < self.high.1)
        }
        fn is_low(&mut self) -> Result<bool, Self::Error> {
            self.is_high().map(|h| !h)
        }
    }

    #[test]
    fn polling_thread_fires_the_latch_and_stops() {
        let clock = Arc::new(FakeClock::new(ms(0)));
        let pin = ScriptedPin { clock: Arc::clone(&clock), high: (ms(100), ms(10_000)) };
        let trigger = PolledTrigger::new(pin, Arc::clone(&clock), RISING_20MS).unwrap();
        let latch = Arc::new(TriggerLatch::new());
        let stop = Arc::new(AtomicBool::new(false));
        let handle = spawn_polled_trigger(trigger, ms(1), Arc::clone(&latch), Arc::clone(&stop)).unwrap();

        // The press begins at 100 ms of fake time; the thread sees it at the first sample after
        // the clock moves there, and confirms it 20 ms of fake time later.
        clock.set(ms(100));
        let start = Instant::now();
        while !latch.is_pending() && start.elapsed() < Duration::from_secs(10) {
            clock.advance(ms(1));
            std::thread::sleep(ms(1));
        }
        let pending = latch.take().expect("the polling thread fired the latch");
        assert_eq!(pending.source, TriggerSource::Gpio);
        assert_eq!(pending.count, 1);
        assert!(pending.first_at >= ms(100) && pending.first_at < ms(10_000), "{pending:?}");
        // Held for long: no second trigger.
        clock.set(ms(5_000));
        std::thread::sleep(ms(50));
        assert_eq!(latch.take(), None::<Pending>);

        stop.store(true, Ordering::Relaxed);
        let start = Instant::now();
        handle.join().unwrap();
        assert!(start.elapsed() < ms(500));
    }
}
