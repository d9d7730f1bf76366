//! The frame loop ([`camera_classifier::daemon::Loop`]) against scripted sources: a camera
//! that fails, stalls, delivers stale or corrupt frames; triggers; output lines on mock pins.

mod common;

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use bit_runtime::{Classifier, ClassifierConfig, Frame, PixelFormat};
use camera_classifier::config::Mode;
use camera_classifier::daemon::{Counters, DaemonError, Exit, Loop, LoopMetrics};
use camera_classifier::feed::{Feed, FramePolicy, FramePool, ModelTag};
use camera_classifier::gpio::{OutputDriver, OutputRule, TriggerLatch, TriggerSource};
use camera_classifier::metrics::Registry;
use camera_classifier::monotonic_now;
use camera_classifier::notify::Notifier;
use camera_classifier::sink::json::{JsonLines, LineOutput};
use camera_classifier::sink::{Dispatcher, ResultSink};
use camera_classifier::source::{Captured, FrameSource, OpenError, SourceError};
use embedded_hal_mock::eh1::digital::{Mock, State, Transaction};

/// What a scripted source does on each call.
enum Step {
    /// A grey 16x16 frame stamped `age` before now.
    Frame { age: Duration, corrupt: bool },
    /// A frame stamped just before the pending trigger fired, then the trigger.
    TriggerThenStaleFrame,
    /// No frame (waits the whole `wait`).
    Timeout,
    /// The device fails.
    Lost,
}

struct Scripted {
    steps: VecDeque<Step>,
    opens: u32,
    fail_opens: u32,
    latch: Arc<TriggerLatch>,
    good: Vec<u8>,
    seq: u64,
    unusable: bool,
}

impl Scripted {
    fn new(steps: Vec<Step>, latch: Arc<TriggerLatch>) -> Scripted {
        Scripted {
            steps: steps.into(),
            opens: 0,
            fail_opens: 0,
            latch,
            good: vec![90u8; 16 * 16],
            seq: 0,
            unusable: false,
        }
    }
}

impl FrameSource for Scripted {
    fn describe(&self) -> String {
        "scripted".into()
    }
    fn frame_limit(&self) -> (u32, u32) {
        (16, 16)
    }
    fn open(&mut self, _: (u32, u32)) -> Result<(), OpenError> {
        if self.unusable {
            return Err(OpenError::Unusable("scripted: Bayer only".into()));
        }
        self.opens += 1;
        if self.fail_opens > 0 {
            self.fail_opens -= 1;
            return Err(OpenError::Unavailable("scripted: not yet".into()));
        }
        Ok(())
    }
    fn close(&mut self) {}
    fn next_frame(&mut self, wait: Duration) -> Result<Captured<'_>, SourceError> {
        let Some(step) = self.steps.pop_front() else { return Err(SourceError::End) };
        let now = monotonic_now();
        let (timestamp, corrupt) = match step {
            Step::Frame { age, corrupt } => (now - age, corrupt),
            Step::TriggerThenStaleFrame => {
                self.latch.fire(TriggerSource::Signal, now);
                (now - Duration::from_millis(1), false)
            }
            Step::Timeout => {
                std::thread::sleep(wait);
                return Err(SourceError::Timeout);
            }
            Step::Lost => {
                return Err(SourceError::Lost {
                    what: "VIDIOC_DQBUF",
                    kind: std::io::ErrorKind::Other,
                    errno: Some(19),
                });
            }
        };
        self.seq += 1;
        let data = if corrupt { &self.good[..100] } else { &self.good[..] };
        Ok(Captured { frame: Frame::new(data, PixelFormat::Grey, 16, 16), sequence: self.seq - 1, timestamp })
    }
}

fn classifier() -> Classifier {
    let config = ClassifierConfig {
        input_size: Some(64),
        max_width: 16,
        max_height: 16,
        top_k: 4,
        ..Default::default()
    };
    Classifier::new(&common::model(), &config).unwrap()
}

fn frame() -> Step {
    Step::Frame { age: Duration::from_millis(2), corrupt: false }
}

/// Runs the loop over `source` with a JSON sink; returns the exit, the counters and the
/// result lines.
fn run(
    mode: Mode,
    source: &mut Scripted,
    outputs: &mut [OutputDriver<Mock>],
    stall: Option<Duration>,
) -> (Result<Exit, DaemonError>, Counters, Vec<serde_json::Value>) {
    let mut classifier = classifier();
    let mut notifier = Notifier::from_env();
    let registry = Registry::new("test");
    let metrics = LoopMetrics::register(&registry);
    let feed = Arc::new(Feed::new(64, FramePolicy::default(), &registry));
    let lines = SharedBuf::default();
    let json = JsonLines::start(LineOutput::Writer(Box::new(lines.clone())), &registry).unwrap();
    let sinks: Vec<Box<dyn ResultSink>> = vec![Box::new(json)];
    let dispatcher = Dispatcher::start(feed.clone(), sinks).unwrap();
    let mut l = Loop {
        mode,
        stall_timeout: stall,
        reconnect_max: Duration::from_millis(40),
        min_size: (64, 64),
        stop: Arc::new(AtomicBool::new(false)),
        latch: source.latch.clone(),
        outputs,
        notifier: &mut notifier,
        status_interval: Duration::from_secs(60),
        metrics: &metrics,
        feed: Some(&feed),
        frames: FramePool::new(0),
        model: Arc::new(ModelTag { name: "tiny.onnx".into(), labels: classifier.labels().to_vec() }),
    };
    let exit = l.run(&mut classifier, source);
    dispatcher.shutdown(Duration::from_secs(5));
    let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
    (exit, metrics.snapshot(), text.lines().map(|l| serde_json::from_str(l).unwrap()).collect())
}

/// A writer the test reads back after the sinks have stopped.
#[derive(Clone, Default)]
struct SharedBuf(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for SharedBuf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

const CONTINUOUS: Mode = Mode::Continuous { min_period: None };

#[test]
fn a_lost_camera_is_reopened_with_backoff_and_the_loop_goes_on() {
    let latch = Arc::new(TriggerLatch::new());
    let mut s = Scripted::new(vec![frame(), Step::Lost, frame(), Step::Lost, frame()], latch);
    s.fail_opens = 0;
    let (exit, c, lines) = run(CONTINUOUS, &mut s, &mut [], None);
    assert_eq!(exit.unwrap(), Exit::SourceEnded);
    assert_eq!((c.frames, c.classified, c.source_errors, c.reconnects), (3, 3, 2, 2));
    assert_eq!(s.opens, 3, "opened at start and after each failure");
    assert_eq!(lines.len(), 3);
}

#[test]
fn a_camera_missing_at_start_is_retried_until_it_appears() {
    let latch = Arc::new(TriggerLatch::new());
    let mut s = Scripted::new(vec![frame()], latch);
    s.fail_opens = 3;
    let t = std::time::Instant::now();
    let (exit, c, _) = run(CONTINUOUS, &mut s, &mut [], None);
    assert_eq!(exit.unwrap(), Exit::SourceEnded);
    assert_eq!((s.opens, c.classified), (4, 1));
    // Backoff 250 ms, then capped at reconnect_max = 40 ms twice.
    assert!(t.elapsed() >= Duration::from_millis(330), "{:?}", t.elapsed());
}

#[test]
fn an_unusable_camera_is_an_error_not_a_retry_loop() {
    let latch = Arc::new(TriggerLatch::new());
    let mut s = Scripted::new(vec![frame()], latch);
    s.unusable = true;
    let (exit, c, _) = run(CONTINUOUS, &mut s, &mut [], None);
    assert!(matches!(exit, Err(DaemonError::Source(ref m)) if m.contains("Bayer")), "{exit:?}");
    assert_eq!(c.frames, 0);
}

#[test]
fn a_stalled_camera_is_reopened_after_its_timeout() {
    let latch = Arc::new(TriggerLatch::new());
    // 100 ms per timeout: 4 of them exceed the 300 ms stall timeout.
    let steps = vec![frame(), Step::Timeout, Step::Timeout, Step::Timeout, Step::Timeout, frame()];
    let mut s = Scripted::new(steps, latch);
    let (exit, c, lines) = run(CONTINUOUS, &mut s, &mut [], Some(Duration::from_millis(300)));
    assert_eq!(exit.unwrap(), Exit::SourceEnded);
    assert_eq!((c.stalls, c.reconnects, c.classified), (1, 1, 2));
    assert_eq!(s.opens, 2);
    assert_eq!(lines.len(), 2);
}

#[test]
fn corrupt_frames_are_counted_and_a_pending_trigger_waits_for_a_good_one() {
    let latch = Arc::new(TriggerLatch::new());
    latch.fire(TriggerSource::Gpio, Duration::ZERO);
    let bad = Step::Frame { age: Duration::ZERO, corrupt: true };
    let mut s =
        Scripted::new(vec![bad, Step::Frame { age: Duration::ZERO, corrupt: true }, frame(), frame()], latch);
    let (exit, c, lines) = run(Mode::Triggered, &mut s, &mut [], None);
    assert_eq!(exit.unwrap(), Exit::SourceEnded);
    assert_eq!((c.frames, c.bad_frames, c.classified, c.triggers), (4, 2, 1, 1));
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["trigger"], "gpio");
    assert_eq!(lines[0]["frame_seq"], 2, "the first good frame answers the trigger");
}

#[test]
fn after_a_trigger_frames_captured_before_it_are_skipped() {
    let latch = Arc::new(TriggerLatch::new());
    // The trigger fires as a frame captured 1 ms earlier is handed out; two more frames
    // from the driver's queue are older still; then fresh ones.
    let old = Duration::from_secs(1);
    let steps = vec![
        frame(),
        Step::TriggerThenStaleFrame,
        Step::Frame { age: old, corrupt: false },
        Step::Frame { age: old, corrupt: false },
        Step::Frame { age: Duration::ZERO, corrupt: false },
        frame(),
    ];
    let mut s = Scripted::new(steps, latch);
    let (exit, c, lines) = run(Mode::Triggered, &mut s, &mut [], None);
    assert_eq!(exit.unwrap(), Exit::SourceEnded);
    // The frame handed out with the trigger is not classified (no trigger was pending when
    // it was asked for); the two queued older ones are skipped as stale.
    assert_eq!((c.frames, c.stale_skipped, c.classified), (6, 2, 1));
    assert_eq!(lines[0]["frame_seq"], 4, "the first frame captured after the trigger");
    assert_eq!(lines[0]["trigger"], "signal");
}

#[test]
fn triggers_coalesce_into_one_classification() {
    let latch = Arc::new(TriggerLatch::new());
    for _ in 0..3 {
        latch.fire(TriggerSource::Fifo, Duration::ZERO);
    }
    let mut s = Scripted::new(vec![frame(), frame(), frame()], latch);
    let (_, c, lines) = run(Mode::Triggered, &mut s, &mut [], None);
    assert_eq!((c.triggers, c.coalesced, c.classified), (1, 2, 1));
    assert_eq!(lines.len(), 1);
}

#[test]
fn the_interval_mode_classifies_on_its_schedule_only() {
    let latch = Arc::new(TriggerLatch::new());
    // 20 frames, ~100 ms apart (each timeout waits the loop's 100 ms poll).
    let mut steps = Vec::new();
    for _ in 0..20 {
        steps.push(frame());
        steps.push(Step::Timeout);
    }
    let mut s = Scripted::new(steps, latch);
    let (_, c, _) = run(Mode::Interval(Duration::from_millis(500)), &mut s, &mut [], None);
    assert_eq!(c.frames, 20);
    // About 2 s of frames at one per 500 ms: 4 or 5 (the first frame is classified at once).
    assert!((4..=5).contains(&c.classified), "{c:?}");
}

#[test]
fn output_lines_follow_the_rules() {
    let latch = Arc::new(TriggerLatch::new());
    let mut s = Scripted::new(vec![frame(), frame()], latch);
    // Every class with any score matches: the line goes active on the first result and is
    // released when the loop ends. The other rule can never match (class 9 does not exist).
    let always = OutputRule {
        classes: vec![0, 1, 2, 3],
        min_score: 0.0,
        hold: Duration::from_secs(10),
        active_low: false,
    };
    let never =
        OutputRule { classes: vec![9], min_score: 0.0, hold: Duration::from_secs(10), active_low: true };
    let mut a = Mock::new(&[
        Transaction::set(State::Low),
        Transaction::set(State::High),
        Transaction::set(State::Low),
    ]);
    let mut b = Mock::new(&[Transaction::set(State::High)]);
    let mut outputs =
        vec![OutputDriver::new(a.clone(), always).unwrap(), OutputDriver::new(b.clone(), never).unwrap()];
    let (_, c, _) = run(CONTINUOUS, &mut s, &mut outputs, None);
    assert_eq!(c.classified, 2);
    drop(outputs);
    a.done();
    b.done();
}
