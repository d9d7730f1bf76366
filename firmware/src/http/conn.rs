//! Connections: the accept loop, the table that enforces the connection limits (evicting the oldest
//! idle connection), each connection's task (hyper's HTTP/1.1 plus the request-head deadline) and the
//! socket wrapper that gives writes a progress deadline.
//!
//! Everything here runs on the server's one thread (a `LocalSet`), so shared state is `Rc` + `Cell`.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Shutdown, SocketAddr};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use log::{debug, warn};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::time::{Instant, Sleep};

use super::body::ConnState;
use super::events::{self, Hub};
use super::hosts::Hosts;
use super::respond::{self, Ctx};
use super::{HttpConfig, HttpStats, StatusView};
use crate::monotonic_now;
use crate::throttle::Throttle;

/// After the last response, unread request bytes are drained for at most this long / this many
/// bytes, so that closing the socket does not reset the connection before the client has read the
/// answer.
const LINGER_TIME: Duration = Duration::from_millis(250);
const LINGER_BYTES: usize = 64 * 1024;
/// Pause after a failed `accept` (e.g. out of file descriptors) so that the loop cannot spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);
/// Connections being refused with a 503 at once (each holds its socket for at most
/// [`REFUSAL_LINGER`]); beyond, a refused connection is just closed. With `max_connections` at its
/// limit of 768 this keeps the server within systemd's default 1024 descriptors.
const MAX_REFUSING: usize = 192;
/// A refused client normally reads its 503 and closes at once; this bounds the wait when it does not.
const REFUSAL_LINGER: Duration = Duration::from_millis(100);
/// hyper's smallest read buffer.
const MIN_BUFFER: usize = 8192;

/// What the server's task needs; built on the caller's thread (everything here is `Send`).
pub(super) struct Server {
    config: HttpConfig,
    view: Arc<dyn StatusView>,
    stats: Arc<HttpStats>,
    local_addr: SocketAddr,
}

/// State shared by the server's tasks: what answering needs, and the connection table.
struct Shared {
    ctx: Ctx,
    table: RefCell<Table>,
    refusing: Cell<usize>,
}

impl std::ops::Deref for Shared {
    type Target = Ctx;

    fn deref(&self) -> &Ctx {
        &self.ctx
    }
}

impl Server {
    pub(super) fn new(
        config: &HttpConfig,
        view: Arc<dyn StatusView>,
        stats: Arc<HttpStats>,
        local_addr: SocketAddr,
    ) -> Server {
        Server { config: config.clone(), view, stats, local_addr }
    }

    /// Accepts until `stopped` fires (or its sender is dropped). Runs inside a `LocalSet`.
    pub(super) async fn run(self, listener: std::net::TcpListener, mut stopped: oneshot::Receiver<()>) {
        let listener = match TcpListener::from_std(listener) {
            Ok(listener) => listener,
            Err(e) => {
                warn!("HTTP server on {}: cannot register the listener: {e}", self.local_addr);
                return;
            }
        };
        let hub = Rc::new(Hub::new(self.config.max_event_streams, self.config.event_stream_lifetime));
        tokio::task::spawn_local(events::ticker(Arc::clone(&self.view), Rc::clone(&hub)));
        let ctx = Rc::new(Shared {
            ctx: Ctx {
                hosts: Hosts::new(&self.config.allowed_hosts),
                events: hub,
                config: self.config,
                view: self.view,
                stats: self.stats,
            },
            table: RefCell::new(Table::default()),
            refusing: Cell::new(0),
        });
        let mut accept_warnings = Throttle::new(Duration::from_secs(60));
        loop {
            tokio::select! {
                _ = &mut stopped => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => admit(&ctx, stream, peer),
                    Err(e) => {
                        if let Some(held) = accept_warnings.allow(monotonic_now()) {
                            warn!("HTTP server: accept failed: {e} ({held} more since the last warning)");
                        }
                        tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    }
                }
            }
        }
        debug!("HTTP server on {}: stopping", self.local_addr);
    }
}

/// The connections held, in accept order.
#[derive(Default)]
struct Table {
    next_id: u64,
    conns: BTreeMap<u64, Rc<ConnState>>,
}

impl Table {
    fn from(&self, ip: IpAddr) -> usize {
        self.conns.values().filter(|c| c.ip == ip).count()
    }

    /// Closes the oldest idle connection (from `ip` when given); false when there is none.
    fn evict_oldest_idle(&mut self, ip: Option<IpAddr>, now: Instant) -> bool {
        let victim =
            self.conns.values().find(|c| ip.is_none_or(|ip| c.ip == ip) && c.idle(now)).map(|c| c.id);
        match victim.and_then(|id| self.conns.remove(&id)) {
            Some(conn) => {
                conn.close.notify_one();
                true
            }
            None => false,
        }
    }
}

/// Takes a new connection in, within the limits, or refuses it.
fn admit(ctx: &Rc<Shared>, stream: TcpStream, peer: SocketAddr) {
    ctx.stats.connection();
    let ip = peer.ip().to_canonical();
    let now = Instant::now();
    let state = {
        let mut table = ctx.table.borrow_mut();
        let mut room = true;
        if table.from(ip) >= ctx.config.max_connections_per_client {
            room = table.evict_oldest_idle(Some(ip), now);
        }
        if room && table.conns.len() >= ctx.config.max_connections {
            room = table.evict_oldest_idle(None, now);
        }
        if !room {
            drop(table);
            refuse(ctx, stream);
            return;
        }
        let id = table.next_id;
        table.next_id += 1;
        let state = Rc::new(ConnState::new(id, ip, now));
        table.conns.insert(id, Rc::clone(&state));
        state
    };
    tokio::task::spawn_local(serve(Rc::clone(ctx), stream, state));
}

/// `503` + `Retry-After: 1` on a connection there is no room for, then close.
fn refuse(ctx: &Rc<Shared>, stream: TcpStream) {
    ctx.stats.reject();
    if ctx.refusing.get() >= MAX_REFUSING {
        return;
    }
    ctx.refusing.set(ctx.refusing.get() + 1);
    let ctx = Rc::clone(ctx);
    tokio::task::spawn_local(async move {
        let answer = respond::raw_answer(503, "server busy, retry\n", &[("Retry-After", "1")]);
        if send_now(&stream, &answer) {
            ctx.stats.record(503);
        }
        linger(&stream, REFUSAL_LINGER).await;
        ctx.refusing.set(ctx.refusing.get() - 1);
    });
}

/// How a connection's task ended.
enum End {
    Hyper(Result<(), hyper::Error>),
    Evicted,
    HeadTimeout,
}

async fn serve(ctx: Rc<Shared>, stream: TcpStream, state: Rc<ConnState>) {
    let _ = stream.set_nodelay(true);
    let stream = Rc::new(stream);
    let io = Io {
        stream: Rc::clone(&stream),
        state: Rc::clone(&state),
        write_timeout: ctx.config.write_timeout,
        stall: None,
        stats: Arc::clone(&ctx.stats),
    };
    let (svc_ctx, svc_state) = (Rc::clone(&ctx), Rc::clone(&state));
    let service = service_fn(move |request| {
        let response = respond::handle(&svc_ctx.ctx, &svc_state, &request);
        std::future::ready(Ok::<_, Infallible>(response))
    });
    let mut builder = http1::Builder::new();
    builder
        .keep_alive(true)
        // A client may send its request and shut its sending side (`nc -N`, some HTTP/1.0
        // tools): it still gets the answer (hyper's default would drop it on the EOF).
        .half_close(true)
        // The head deadline is enforced below, with a 408 where hyper would only close.
        .header_read_timeout(None)
        .max_buf_size(ctx.config.max_request_bytes.max(MIN_BUFFER))
        .max_header_size(ctx.config.max_request_bytes);
    let mut conn = Box::pin(builder.serve_connection(TokioIo::new(io), service));
    let timeout = ctx.config.request_timeout;
    let end = loop {
        // While a response is in flight there is no head deadline; `changed` restarts it.
        let deadline = (state.in_flight.get() == 0).then(|| state.idle_since.get() + timeout);
        tokio::select! {
            done = conn.as_mut() => break End::Hyper(done),
            () = state.close.notified() => break End::Evicted,
            () = state.changed.notified() => {}
            () = sleep_until(deadline) => {
                if state.in_flight.get() == 0 && state.idle_since.get() + timeout <= Instant::now() {
                    break End::HeadTimeout;
                }
            }
        }
    };
    // hyper is done with the socket (or abandoned mid-head): only this task uses it from here on.
    drop(conn);
    ctx.table.borrow_mut().conns.remove(&state.id);
    match end {
        End::Hyper(Ok(())) => {}
        End::Hyper(Err(e)) => after_error(&ctx, &stream, &state, &e),
        End::Evicted => {
            ctx.stats.evict();
        }
        End::HeadTimeout => {
            if state.owes_a_request() {
                ctx.stats.time_out();
                let answer = respond::raw_answer(408, "request timeout\n", &[]);
                if send_now(&stream, &answer) {
                    ctx.stats.record(408);
                }
            }
        }
    }
    linger(&stream, LINGER_TIME).await;
}

/// Counts what hyper answered (or did not) when a connection ended with an error.
fn after_error(ctx: &Ctx, stream: &TcpStream, state: &ConnState, e: &hyper::Error) {
    if e.is_parse_too_large() {
        // hyper answered 431 (a head over the limit) or 414 (a target over 64 KiB).
        ctx.stats.record(431);
    } else if e.is_parse() {
        if e.to_string().contains("HTTP2") {
            // The HTTP/2 preface: hyper closes without an answer (this server speaks HTTP/1.1).
            ctx.stats.refused_silently();
        } else {
            ctx.stats.record(400);
        }
    } else if e.is_incomplete_message() && state.in_flight.get() == 0 && state.owes_a_request() {
        // The client closed its side in the middle of a head: it may still read the answer.
        let answer = respond::raw_answer(400, "bad request: incomplete request head\n", &[]);
        if send_now(stream, &answer) {
            ctx.stats.record(400);
        }
    } else {
        debug!("HTTP connection {}: {e}", state.id);
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Writes a small answer without waiting; false when the socket did not take all of it.
fn send_now(stream: &TcpStream, bytes: &[u8]) -> bool {
    matches!(stream.try_write(bytes), Ok(n) if n == bytes.len())
}

/// Ends the sending side, then reads and discards what the client still sends, for a short while.
async fn linger(stream: &TcpStream, time: Duration) {
    let _ = socket2::SockRef::from(stream).shutdown(Shutdown::Write);
    let deadline = Instant::now() + time;
    let mut drained = 0;
    let mut scratch = [0u8; 4096];
    while drained < LINGER_BYTES {
        match tokio::time::timeout_at(deadline, stream.readable()).await {
            Ok(Ok(())) => {}
            _ => return,
        }
        match stream.try_read(&mut scratch) {
            Ok(0) => return,
            Ok(n) => drained += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => return,
        }
    }
}

/// The socket as hyper sees it: reads counted (to tell a head in progress from an idle connection),
/// and writes that fail when they make no progress for `write_timeout`, so a client that stops
/// reading cannot hold a connection and its response forever. Shares the stream with the
/// connection's task, which writes its own 408/400 after hyper is done.
struct Io {
    stream: Rc<TcpStream>,
    state: Rc<ConnState>,
    write_timeout: Duration,
    /// Started when a write first found the socket full; cleared by any progress.
    stall: Option<Pin<Box<Sleep>>>,
    stats: Arc<HttpStats>,
}

impl AsyncRead for Io {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            ready!(this.stream.poll_read_ready(cx))?;
            let room = buf.remaining().min(16 * 1024);
            match this.stream.try_read(buf.initialize_unfilled_to(room)) {
                Ok(n) => {
                    buf.advance(n);
                    this.state.bytes_read.set(this.state.bytes_read.get() + n as u64);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        loop {
            match this.stream.poll_write_ready(cx) {
                Poll::Ready(Ok(())) => match this.stream.try_write(data) {
                    Ok(n) => {
                        this.stall = None;
                        return Poll::Ready(Ok(n));
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => {
                        this.stats.write_error();
                        return Poll::Ready(Err(e));
                    }
                },
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    let timeout = this.write_timeout;
                    let stall = this.stall.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                    if stall.as_mut().poll(cx).is_ready() {
                        this.stall = None;
                        this.stats.write_error();
                        let message = format!("the client read nothing for {timeout:?}");
                        return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, message)));
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        // The connection's task drains what the client still sends before the socket closes.
        let _ = socket2::SockRef::from(&*self.stream).shutdown(Shutdown::Write);
        Poll::Ready(Ok(()))
    }
}
