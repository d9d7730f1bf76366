//! The GPIO pieces together, as the daemon's frame loop uses them: a polled trigger input (mock pin)
//! feeding the trigger latch while the frame loop is busy, and an output line following results, all
//! on a fake clock.

use std::sync::Arc;
use std::time::Duration;

use camera_classifier::gpio::*;
use embedded_hal_mock::eh1::digital::{Mock, State, Transaction};

const fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

const POLL: Duration = ms(5);
const DEBOUNCE_20MS: TriggerConfig =
    TriggerConfig { edge: Edge::Rising, active_low: false, debounce: ms(20) };

/// Pin expectations: the initial read at 0, then one read every 5 ms up to `end_ms`, high where
/// `high(t_ms)`.
fn line(end_ms: u64, high: impl Fn(u64) -> bool) -> Vec<Transaction> {
    (0..=end_ms)
        .step_by(5)
        .map(|t| Transaction::get(if high(t) { State::High } else { State::Low }))
        .collect()
}

/// The GPIO thread's work while the frame loop is busy for `busy`: poll every 5 ms, fire the latch.
fn busy_for<C: Clock>(
    busy: Duration,
    clock: &FakeClock,
    trigger: &mut PolledTrigger<Mock, C>,
    latch: &TriggerLatch,
) {
    let end = clock.now() + busy;
    while clock.now() < end {
        clock.advance(POLL);
        if let Some(press) = trigger.poll().unwrap() {
            latch.fire(TriggerSource::Gpio, press.began_at);
        }
    }
}

#[test]
fn a_bounced_press_during_inference_is_handled_once_after_it() {
    let clock = FakeClock::new(Duration::ZERO);
    let latch = TriggerLatch::new();
    // Bounce 50-60 ms, held until 200 ms, bouncy release 200-210 ms; 600 ms of samples.
    let levels = line(600, |t| matches!(t, 50 | 60..=195 | 205));
    let mut pin = Mock::new(&levels);
    let mut trigger = PolledTrigger::new(pin.clone(), &clock, DEBOUNCE_20MS).unwrap();

    // Frame 1: nothing pending; inference takes 300 ms, during which the button is pressed.
    assert_eq!(latch.take(), None);
    busy_for(ms(300), &clock, &mut trigger, &latch);
    // Frame 2: the press is there, once, stamped with its first edge.
    assert_eq!(latch.take(), Some(Pending { source: TriggerSource::Gpio, first_at: ms(50), count: 1 }));
    assert_eq!(latch.take(), None);
    // Frame 2's inference: no new press, so frame 3 has nothing.
    busy_for(ms(300), &clock, &mut trigger, &latch);
    assert_eq!(latch.take(), None);
    pin.done();
}

#[test]
fn two_presses_during_one_inference_coalesce_with_a_count() {
    let clock = FakeClock::new(Duration::ZERO);
    let latch = TriggerLatch::new();
    let levels = line(300, |t| matches!(t, 20..=100 | 180..=250));
    let mut pin = Mock::new(&levels);
    let mut trigger = PolledTrigger::new(pin.clone(), &clock, DEBOUNCE_20MS).unwrap();

    assert_eq!(latch.take(), None);
    busy_for(ms(300), &clock, &mut trigger, &latch);
    assert_eq!(latch.take(), Some(Pending { source: TriggerSource::Gpio, first_at: ms(20), count: 2 }));
    assert_eq!(latch.take(), None);
    pin.done();
}

#[test]
fn a_long_press_across_two_inferences_is_one_trigger() {
    let clock = FakeClock::new(Duration::ZERO);
    let latch = TriggerLatch::new();
    let levels = line(900, |t| (250..800).contains(&t));
    let mut pin = Mock::new(&levels);
    let mut trigger = PolledTrigger::new(pin.clone(), &clock, DEBOUNCE_20MS).unwrap();

    let mut handled = Vec::new();
    for _ in 0..3 {
        handled.extend(latch.take());
        busy_for(ms(300), &clock, &mut trigger, &latch);
    }
    handled.extend(latch.take());
    assert_eq!(handled, [Pending { source: TriggerSource::Gpio, first_at: ms(250), count: 1 }]);
    pin.done();
}

#[test]
fn triggers_from_all_sources_share_the_latch_across_threads() {
    let latch = Arc::new(TriggerLatch::new());
    let clock = Arc::new(FakeClock::new(ms(1000)));
    let handles: Vec<_> = [TriggerSource::Signal, TriggerSource::Fifo]
        .into_iter()
        .map(|source| {
            let (latch, clock) = (Arc::clone(&latch), Arc::clone(&clock));
            std::thread::spawn(move || latch.fire(source, clock.now()))
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let p = latch.take().unwrap();
    assert_eq!((p.first_at, p.count), (ms(1000), 2));
    assert!(matches!(p.source, TriggerSource::Signal | TriggerSource::Fifo));
    assert_eq!(latch.take(), None);
}

#[test]
fn an_output_follows_results_of_the_frame_loop() {
    let clock = FakeClock::new(Duration::ZERO);
    // Active low relay: idle high, active low.
    let mut pin = Mock::new(&[
        Transaction::set(State::High),
        Transaction::set(State::Low),
        Transaction::set(State::High),
    ]);
    let rule = OutputRule { classes: vec![2], min_score: 0.5, hold: ms(250), active_low: true };
    let mut out = OutputDriver::new(pin.clone(), rule).unwrap();
    // One result every 100 ms: class 2 at 0.9 in frames 1 and 2, then other classes.
    let results: [&[(usize, f32)]; 6] =
        [&[(0, 0.9)], &[(2, 0.9)], &[(2, 0.8), (0, 0.1)], &[(1, 0.7)], &[(2, 0.4)], &[(0, 0.9)]];
    let mut active = Vec::new();
    for r in results {
        out.tick(clock.now()).unwrap();
        out.update(clock.now(), r).unwrap();
        active.push(out.is_active());
        // Sleep until the next frame or the release deadline, whichever is first.
        let next_frame = clock.now() + ms(100);
        if let Some(deadline) = out.next_deadline().filter(|d| *d < next_frame) {
            clock.set(deadline);
            out.tick(clock.now()).unwrap();
        }
        clock.set(next_frame);
    }
    // Active from frame 1 (100 ms) until 200 + 250 = 450 ms: frames 1-4 see it active.
    assert_eq!(active, [false, true, true, true, true, false]);
    out.release().unwrap();
    pin.done();
}
