//! What a connection and its responses share: the connection's state (in flight, idle since,
//! bytes read), the mark a response holds while it is being sent, and the response body type.

use std::cell::Cell;
use std::convert::Infallible;
use std::net::IpAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::sync::Notify;
use tokio::time::Instant;

/// A connection idle for less than this is not evicted: a client that has just connected has not had
/// the time to send its request.
pub const EVICTABLE_AFTER: Duration = Duration::from_millis(250);

/// One connection's state, shared by its task, its requests' bodies and the table.
pub(super) struct ConnState {
    pub(super) id: u64,
    pub(super) ip: IpAddr,
    /// Responses not yet completely produced (the `/events` stream stays in flight).
    pub(super) in_flight: Cell<u32>,
    /// When the last response ended, or the accept.
    pub(super) idle_since: Cell<Instant>,
    pub(super) bytes_read: Cell<u64>,
    /// `bytes_read` when the last response ended: more since then is a request head in progress.
    pub(super) read_at_idle: Cell<u64>,
    pub(super) responses: Cell<u64>,
    /// Evicted: close now.
    pub(super) close: Notify,
    /// A response ended: the head deadline starts again.
    pub(super) changed: Notify,
}

impl ConnState {
    pub(super) fn new(id: u64, ip: IpAddr, accepted: Instant) -> ConnState {
        ConnState {
            id,
            ip,
            in_flight: Cell::new(0),
            idle_since: Cell::new(accepted),
            bytes_read: Cell::new(0),
            read_at_idle: Cell::new(0),
            responses: Cell::new(0),
            close: Notify::new(),
            changed: Notify::new(),
        }
    }

    pub(super) fn idle(&self, now: Instant) -> bool {
        self.in_flight.get() == 0 && now.duration_since(self.idle_since.get()) >= EVICTABLE_AFTER
    }

    /// Part of a request head came, or nothing at all on a fresh connection.
    pub(super) fn owes_a_request(&self) -> bool {
        self.bytes_read.get() > self.read_at_idle.get() || self.responses.get() == 0
    }
}

/// Marks a response in progress; dropped with the response body, when hyper has taken all of it.
pub(super) struct InFlight(Rc<ConnState>);

impl InFlight {
    pub(super) fn new(state: &Rc<ConnState>) -> InFlight {
        state.in_flight.set(state.in_flight.get() + 1);
        InFlight(Rc::clone(state))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let s = &self.0;
        s.in_flight.set(s.in_flight.get().saturating_sub(1));
        s.responses.set(s.responses.get() + 1);
        s.idle_since.set(Instant::now());
        s.read_at_idle.set(s.bytes_read.get());
        s.changed.notify_one();
    }
}

/// A response body: complete bytes (with the connection's in-flight mark), or an event stream.
pub(super) struct Reply {
    kind: Kind,
    _in_flight: Option<InFlight>,
}

enum Kind {
    Full(Option<Bytes>),
    Stream(tokio::sync::mpsc::Receiver<Bytes>),
}

impl Reply {
    pub(super) fn full(bytes: Bytes, in_flight: InFlight) -> Reply {
        Reply { kind: Kind::Full(Some(bytes)), _in_flight: Some(in_flight) }
    }

    pub(super) fn stream(rx: tokio::sync::mpsc::Receiver<Bytes>, in_flight: InFlight) -> Reply {
        Reply { kind: Kind::Stream(rx), _in_flight: Some(in_flight) }
    }
}

impl http_body::Body for Reply {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        let chunk = match &mut this.kind {
            Kind::Full(bytes) => Poll::Ready(bytes.take()),
            Kind::Stream(rx) => rx.poll_recv(cx),
        };
        if matches!(chunk, Poll::Ready(None)) {
            // The response is complete: the connection is idle from now on.
            this._in_flight = None;
        }
        chunk.map(|c| c.map(|b| Ok(Frame::data(b))))
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.kind, Kind::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Stream(_) => SizeHint::default(),
        }
    }
}
