//! `/events`: the latest result pushed as server-sent events, so the page shows each result when it
//! arrives instead of polling.
//!
//! One ticker task looks at [`StatusView::version`] every [`POLL`] while any stream is open and
//! publishes the JSON of `/api/latest` into a `watch` channel when it changed (at least every
//! [`EVENT_REFRESH`], so counters and uptime stay current). Each stream has a small task that
//! forwards the channel's latest value into the response body; a client that reads slowly sees the
//! newest event, never a backlog (the channel keeps one value), and one that stops reading is
//! dropped by the connection's write timeout.

use std::cell::Cell;
use std::panic::{self, AssertUnwindSafe};
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use hyper::Response;
use hyper::header::{self, HeaderValue};
use log::warn;
use tokio::sync::{mpsc, watch};

use super::body::{InFlight, Reply};
use super::{HttpStats, StatusView};

/// A full event at least this often, even when nothing changed.
pub const EVENT_REFRESH: Duration = Duration::from_secs(1);
/// How often the ticker looks for news.
const POLL: Duration = Duration::from_millis(50);
/// A comment line this often keeps proxies from closing a quiet stream.
const KEEPALIVE: Duration = Duration::from_secs(15);
/// How long the browser waits before reconnecting a lost stream.
const RETRY_MS: u32 = 2000;

/// The event streams' shared state.
pub(super) struct Hub {
    tx: watch::Sender<Bytes>,
    open: Rc<Cell<usize>>,
    max: usize,
    lifetime: Duration,
}

impl Hub {
    pub(super) fn new(max: usize, lifetime: Duration) -> Hub {
        Hub { tx: watch::Sender::new(Bytes::new()), open: Rc::new(Cell::new(0)), max, lifetime }
    }

    /// Starts a stream: its first event is the current state. Err (giving the in-flight mark back)
    /// when `max` streams are open.
    pub(super) fn open(
        &self,
        view: &dyn StatusView,
        stats: &HttpStats,
        in_flight: InFlight,
    ) -> Result<Response<Reply>, InFlight> {
        if self.open.get() >= self.max {
            return Err(in_flight);
        }
        stats.event_stream();
        let mut rx = self.tx.subscribe();
        rx.mark_unchanged();
        let (out, body) = mpsc::channel(2);
        let mut first = format!("retry: {RETRY_MS}\n").into_bytes();
        first.extend_from_slice(&event(&current(view)));
        // Capacity 2, nothing sent yet: cannot fail.
        let _ = out.try_send(Bytes::from(first));
        let open = Rc::clone(&self.open);
        open.set(open.get() + 1);
        let lifetime = self.lifetime;
        tokio::task::spawn_local(async move {
            let _open = OpenStream(open);
            // The end of its lifetime ends the stream: dropping `out` completes the response.
            let _ = tokio::time::timeout(lifetime, forward(rx, out)).await;
        });
        Ok(event_stream_response(Reply::stream(body, in_flight)))
    }
}

/// Counts a stream as open for as long as its task lives.
struct OpenStream(Rc<Cell<usize>>);

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.set(self.0.get().saturating_sub(1));
    }
}

/// Forwards each new event to one stream until its body is dropped (the client went away, or the
/// connection's write timeout dropped it).
async fn forward(mut rx: watch::Receiver<Bytes>, out: mpsc::Sender<Bytes>) {
    loop {
        let chunk = tokio::select! {
            changed = rx.changed() => match changed {
                Ok(()) => rx.borrow_and_update().clone(),
                Err(_) => return,
            },
            () = tokio::time::sleep(KEEPALIVE) => Bytes::from_static(b": keep-alive\n\n"),
            () = out.closed() => return,
        };
        if out.send(chunk).await.is_err() {
            return;
        }
    }
}

/// Publishes the latest result when it changes, and at least every [`EVENT_REFRESH`], while any
/// stream is open.
pub(super) async fn ticker(view: std::sync::Arc<dyn StatusView>, hub: Rc<Hub>) {
    let mut published: Option<(u64, tokio::time::Instant)> = None;
    let mut interval = tokio::time::interval(POLL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let view = &*view;
        let Ok(version) = panic::catch_unwind(AssertUnwindSafe(|| view.version())) else {
            warn!("HTTP server: the status view panicked in version()");
            continue;
        };
        let now = tokio::time::Instant::now();
        if published.is_some_and(|(v, at)| v == version && now.duration_since(at) < EVENT_REFRESH) {
            continue;
        }
        // Without a stream only the version is noted: a new stream starts with the current state.
        if hub.tx.receiver_count() > 0 {
            hub.tx.send_replace(Bytes::from(event(&current(view))));
        }
        published = Some((version, now));
    }
}

/// The headers of an `/events` response.
fn event_stream_response(reply: Reply) -> Response<Reply> {
    let mut response = Response::new(reply);
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    response
}

/// The JSON of `/api/latest`; `{}` if the view panicked.
fn current(view: &dyn StatusView) -> Vec<u8> {
    let mut json = Vec::with_capacity(2048);
    if panic::catch_unwind(AssertUnwindSafe(|| view.latest_json(&mut json))).is_err() {
        warn!("HTTP server: the status view panicked in latest_json()");
        json = b"{}".to_vec();
    }
    json
}

/// One `message` event carrying `data`, each of its lines as a `data:` line (CR, LF and CRLF end a
/// line in an event stream, so each of them starts a new `data:` line here).
fn event(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 16);
    out.extend_from_slice(b"data: ");
    let mut bytes = data.iter().peekable();
    while let Some(&b) = bytes.next() {
        if b == b'\r' || b == b'\n' {
            if b == b'\r' && bytes.peek() == Some(&&b'\n') {
                bytes.next();
            }
            out.extend_from_slice(b"\ndata: ");
        } else {
            out.push(b);
        }
    }
    out.extend_from_slice(b"\n\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_framed_line_by_line() {
        assert_eq!(event(br#"{"a":1}"#), b"data: {\"a\":1}\n\n");
        // A newline in the data cannot end the event early or inject a field.
        assert_eq!(event(b"x\r\nevent: evil\ny"), b"data: x\ndata: event: evil\ndata: y\n\n");
        assert_eq!(event(b"a\rid: 9"), b"data: a\ndata: id: 9\n\n");
    }
}
