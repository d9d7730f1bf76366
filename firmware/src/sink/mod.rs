//! Result sinks: everything that takes results out of the daemon, behind one trait, fed by
//! one thread that drains the frame loop's [`Feed`].
//!
//! | sink | module | what it does with an [`Event`] |
//! |---|---|---|
//! | JSON lines | [`json`] | one line per result to stdout, through a bounded writer thread |
//! | MQTT | [`crate::mqtt`] | results, label changes, Home Assistant discovery |
//! | status page | [`status`] | the state `/`, `/api/latest`, `/snapshot.jpg` and the live stream show |
//! | saved frames | [`frames`] | JPEG files of triggered or every n-th frame, through a writer thread |
//!
//! A new output (a webhook, a file) is a new [`ResultSink`] handed to [`Dispatcher::start`]:
//! nothing else changes. A sink must not block the dispatcher for long: anything that can
//! (writing to a pipe, fsync on an SD card) goes through a [`Worker`], whose bounded queue
//! drops the oldest item (counted) rather than wait.

pub mod frames;
pub mod json;
pub mod status;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;

use crate::feed::{Event, Feed};
use crate::metrics::Counter;

/// Where results go.
pub trait ResultSink: Send {
    /// For logs.
    fn name(&self) -> &'static str;

    /// Takes one event. Called on the dispatcher thread; must not block for long.
    fn on_event(&mut self, event: &Event);

    /// Finishes what is queued (until `deadline` at most) and stops.
    fn shutdown(self: Box<Self>, deadline: Instant);
}

/// The thread that drains the feed into every sink.
pub struct Dispatcher {
    stop: Arc<AtomicBool>,
    feed: Arc<Feed>,
    thread: JoinHandle<Vec<Box<dyn ResultSink>>>,
}

impl Dispatcher {
    /// Starts draining `feed` into `sinks`, in order.
    pub fn start(feed: Arc<Feed>, mut sinks: Vec<Box<dyn ResultSink>>) -> std::io::Result<Dispatcher> {
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, f) = (stop.clone(), feed.clone());
        let names: Vec<_> = sinks.iter().map(|s| s.name()).collect();
        log::info!("result sinks: {}", if names.is_empty() { "none".into() } else { names.join(", ") });
        let thread = std::thread::Builder::new().name("sinks".into()).spawn(move || {
            f.set_consumer(std::thread::current());
            loop {
                let stopping = flag.load(Ordering::SeqCst);
                while let Some(event) = f.pop() {
                    for s in sinks.iter_mut() {
                        s.on_event(&event);
                    }
                }
                if stopping {
                    return sinks;
                }
                std::thread::park_timeout(Duration::from_millis(250));
            }
        })?;
        Ok(Dispatcher { stop, feed, thread })
    }

    /// Hands over what is queued, then shuts every sink down, all within `wait`.
    pub fn shutdown(self, wait: Duration) {
        let deadline = Instant::now() + wait;
        self.stop.store(true, Ordering::SeqCst);
        self.feed.wake();
        match self.thread.join() {
            Ok(sinks) => {
                for s in sinks {
                    let name = s.name();
                    s.shutdown(deadline);
                    log::debug!("sink {name}: stopped");
                }
            }
            Err(_) => log::error!("the sinks thread panicked"),
        }
    }
}

/// A thread doing one sink's blocking work (writes, encoding, fsync) from a bounded queue.
/// When the queue is full the oldest item is dropped and counted: a stuck reader or a slow
/// disk costs items, never the dispatcher's time.
pub struct Worker<T: Send + 'static> {
    queue: Arc<ArrayQueue<T>>,
    dropped: Arc<Counter>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl<T: Send + 'static> Worker<T> {
    /// Starts thread `name` calling `handle` on each item, in order. `handle` gets the stop
    /// flag: long operations should give up when it is set.
    pub fn start(
        name: &str,
        capacity: usize,
        dropped: Arc<Counter>,
        mut handle: impl FnMut(T, &AtomicBool) + Send + 'static,
    ) -> std::io::Result<Worker<T>> {
        let queue = Arc::new(ArrayQueue::new(capacity.max(1)));
        let stop = Arc::new(AtomicBool::new(false));
        let (q, flag) = (queue.clone(), stop.clone());
        let thread = std::thread::Builder::new().name(name.into()).spawn(move || {
            loop {
                while let Some(item) = q.pop() {
                    handle(item, &flag);
                }
                if flag.load(Ordering::SeqCst) {
                    return;
                }
                std::thread::park_timeout(Duration::from_millis(250));
            }
        })?;
        Ok(Worker { queue, dropped, stop, thread: Some(thread) })
    }

    /// Queues `item`; returns the oldest one if it had to make room (counted as dropped).
    pub fn push(&self, item: T) -> Option<T> {
        let old = self.queue.force_push(item);
        if old.is_some() {
            self.dropped.inc();
        }
        if let Some(t) = &self.thread {
            t.thread().unpark();
        }
        old
    }

    /// Items waiting.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Lets the thread finish what is queued, until `deadline`; a thread still busy then (a
    /// write that never returns) is left behind, and what it had not taken is dropped.
    pub fn shutdown(mut self, deadline: Instant) {
        if let Some(t) = self.thread.take() {
            while !t.is_finished() && !self.queue.is_empty() && Instant::now() < deadline {
                t.thread().unpark();
                std::thread::sleep(Duration::from_millis(5));
            }
            self.stop.store(true, Ordering::SeqCst);
            t.thread().unpark();
            while !t.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if t.is_finished() {
                let _ = t.join();
            } else {
                log::warn!("{}: still busy at shutdown; left behind", t.thread().name().unwrap_or("worker"));
            }
        }
    }
}

impl<T: Send + 'static> Drop for Worker<T> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = &self.thread {
            t.thread().unpark();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn a_worker_drops_the_oldest_when_full_and_drains_at_shutdown() {
        let dropped = Arc::new(Counter::default());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let gate = Arc::new(AtomicBool::new(false));
        let (s, g) = (seen.clone(), gate.clone());
        let w = Worker::start("test-worker", 2, dropped.clone(), move |v: u32, _: &AtomicBool| {
            while !g.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(1));
            }
            s.lock().unwrap().push(v);
        })
        .unwrap();
        w.push(0);
        // The thread holds item 0 at the gate; 1 and 2 fill the queue; 3 and 4 push out 1, 2.
        while w.queued() > 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        for v in 1..5 {
            w.push(v);
        }
        assert_eq!(dropped.get(), 2);
        gate.store(true, Ordering::SeqCst);
        w.shutdown(Instant::now() + Duration::from_secs(5));
        assert_eq!(*seen.lock().unwrap(), [0, 3, 4]);
    }

    #[test]
    fn a_stuck_worker_does_not_hold_up_shutdown() {
        let w = Worker::start("stuck-worker", 4, Arc::new(Counter::default()), |_: u32, _: &AtomicBool| {
            std::thread::sleep(Duration::from_secs(3600))
        })
        .unwrap();
        w.push(1);
        w.push(2);
        let t = Instant::now();
        w.shutdown(Instant::now() + Duration::from_millis(300));
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    }
}
