//! A small, bounded HTTP/1.1 status server built on `std` only.
//!
//! It serves the live status page (`/`), the latest result as JSON (`/api/latest`), the latest frame
//! (`/snapshot.jpg`), Prometheus metrics (`/metrics`) and a health check (`/healthz`).
//!
//! Resource bounds, so that the daemon can run for months:
//! - threads: one accept thread plus `workers` worker threads, all started by [`HttpServer::start`];
//!   no thread is ever spawned per connection.
//! - connections: at most `workers + queue` are held at once. When every worker is busy and the queue is
//!   full, the accept thread answers `503` + `Retry-After: 1` itself (with a 100 ms write timeout) and
//!   closes the connection.
//! - memory: the request head buffer is capped at `max_request_bytes`; request bodies are never read;
//!   the snapshot is shared (`Arc`), not copied.
//! - time: the whole request head must arrive within `request_timeout` of the accept (else `408`); every
//!   write has `write_timeout` (a client that stops reading is dropped). Every response closes the
//!   connection (`Connection: close`).
//!
//! Answers to bad input (the body is a one-line reason): malformed request line, header line, method
//! token or `Content-Length`, a target that is not origin-form (`/…`) or has bytes outside visible
//! ASCII, a missing or repeated `Host` in HTTP/1.1, a head cut short by EOF → 400; a method other than
//! GET/HEAD → 405 with `Allow: GET, HEAD`; a body announced on GET/HEAD (`Content-Length` > 0 or any
//! `Transfer-Encoding`) → 413, the body is not read; head not complete within `request_timeout` → 408;
//! request line over 2048 bytes → 414; head over `max_request_bytes` → 431; a version other than
//! HTTP/1.x (`HTTP/2.0`, the HTTP/2 preface, `HTTP/0.9`) → 505; unknown path → 404.

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use log::{debug, warn};

/// The status page, one self-contained HTML file.
const PAGE: &str = include_str!("page.html");
/// Longest accepted request line (method, target and version), in bytes; longer → 414.
const MAX_REQUEST_LINE: usize = 2048;
/// Write timeout of the accept thread's own `503 busy` answer.
const BUSY_WRITE_TIMEOUT: Duration = Duration::from_millis(100);
/// Bodies up to this size are sent in the same write as the head.
const SMALL_BODY: usize = 16 * 1024;
/// Large bodies are written in chunks of this size, checking for shutdown in between.
const WRITE_CHUNK: usize = 64 * 1024;
/// After an error response, unread request bytes are drained for at most this long / this many bytes,
/// so that closing the socket does not reset the connection before the client has read the answer.
const LINGER_TIME: Duration = Duration::from_millis(250);
const LINGER_BYTES: usize = 64 * 1024;
/// Pause after a failed `accept` (e.g. out of file descriptors) so that the accept thread cannot spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);
/// How long `shutdown` tries to connect to its own listener to wake the accept thread.
const WAKE_TIMEOUT: Duration = Duration::from_secs(1);
/// At most one "server busy" warning per this interval.
const BUSY_WARN_INTERVAL: Duration = Duration::from_secs(60);
/// Shortest read timeout: a late connection still gets one look at bytes that already arrived.
const MIN_READ_WAIT: Duration = Duration::from_millis(1);
/// Status codes that the server sends, in the order they appear in the metrics.
const CODES: [u16; 11] = [200, 400, 404, 405, 408, 413, 414, 431, 500, 503, 505];
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'unsafe-inline'; \
     style-src 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'";
const TEXT: &str = "text/plain; charset=utf-8";

/// Configuration of the status server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpConfig {
    /// Address to listen on (default `127.0.0.1:8080`).
    pub bind: SocketAddr,
    /// Number of worker threads, fixed for the server's lifetime (default 4).
    pub workers: usize,
    /// Accepted connections that may wait for a worker (default 16); beyond that the server answers 503.
    pub queue: usize,
    /// Deadline for the whole request head, counted from the accept (default 5 s); beyond it → 408.
    pub request_timeout: Duration,
    /// Timeout of each write (default 10 s); a client that stops reading is dropped.
    pub write_timeout: Duration,
    /// Cap on request line + headers (default 8192) → 431; a request line over 2048 bytes → 414.
    pub max_request_bytes: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            bind: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8080),
            workers: 4,
            queue: 16,
            request_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(10),
            max_request_bytes: 8192,
        }
    }
}

impl HttpConfig {
    /// Checks the values that would make the server unusable.
    fn validate(&self) -> io::Result<()> {
        let problem = if self.workers == 0 {
            "workers must be at least 1"
        } else if self.request_timeout.is_zero() {
            "request_timeout must be positive"
        } else if self.write_timeout.is_zero() {
            "write_timeout must be positive"
        } else if self.max_request_bytes < 64 {
            "max_request_bytes must be at least 64"
        } else {
            return Ok(());
        };
        Err(io::Error::new(io::ErrorKind::InvalidInput, format!("invalid HTTP config: {problem}")))
    }
}

/// What the server shows; the daemon implements it over its shared state. Every method must be cheap
/// and must not block for long (they take a Mutex briefly at most).
pub trait StatusView: Send + Sync + 'static {
    /// Body of `/api/latest` (application/json), appended to `out`.
    fn latest_json(&self, out: &mut Vec<u8>);
    /// The latest frame as JPEG and the result `seq` it belongs to; None before the first one.
    fn snapshot(&self) -> Option<(u64, Arc<Vec<u8>>)>;
    /// Prometheus text exposition format 0.0.4, appended to `out`.
    fn metrics(&self, out: &mut String);
    /// Ok when healthy, Err(reason) otherwise.
    fn health(&self) -> Result<(), String>;
}

/// Counters of the status server, updated with atomics and readable at any time.
#[derive(Debug, Default)]
pub struct HttpStats {
    responses: [AtomicU64; CODES.len()],
    connections: AtomicU64,
    rejected: AtomicU64,
    timed_out: AtomicU64,
    bad: AtomicU64,
    write_errors: AtomicU64,
}

impl HttpStats {
    /// Responses sent with status `code` (0 for codes the server never sends).
    pub fn responses(&self, code: u16) -> u64 {
        CODES.iter().position(|&c| c == code).map_or(0, |i| self.responses[i].load(Ordering::Relaxed))
    }

    /// TCP connections accepted.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }

    /// Connections answered with 503 by the accept thread because all workers and the queue were busy.
    pub fn rejected(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }

    /// Requests whose head did not arrive within the request timeout (408).
    pub fn timed_out(&self) -> u64 {
        self.timed_out.load(Ordering::Relaxed)
    }

    /// Responses with a 4xx status.
    pub fn bad_requests(&self) -> u64 {
        self.bad.load(Ordering::Relaxed)
    }

    /// Responses abandoned because the client stopped reading or went away.
    pub fn write_errors(&self) -> u64 {
        self.write_errors.load(Ordering::Relaxed)
    }

    /// Appends the counters in Prometheus text format 0.0.4 (with `# HELP` / `# TYPE`), for the daemon's
    /// `/metrics`.
    pub fn write_metrics(&self, out: &mut String) {
        let name = "camera_classifier_http_requests_total";
        let _ = writeln!(out, "# HELP {name} HTTP responses sent by the status server, by status code.");
        let _ = writeln!(out, "# TYPE {name} counter");
        for (code, count) in CODES.iter().zip(&self.responses) {
            let _ = writeln!(out, "{name}{{code=\"{code}\"}} {}", count.load(Ordering::Relaxed));
        }
        let counters = [
            ("connections", self.connections(), "TCP connections accepted by the status server."),
            (
                "rejected",
                self.rejected(),
                "Connections answered 503 because all HTTP workers and the queue were busy.",
            ),
            (
                "timeouts",
                self.timed_out(),
                "Requests whose head did not arrive within the request timeout (408).",
            ),
            ("bad_requests", self.bad_requests(), "HTTP responses with a 4xx status."),
            (
                "write_errors",
                self.write_errors(),
                "HTTP responses abandoned because the client stopped reading.",
            ),
        ];
        for (what, value, help) in counters {
            let name = format!("camera_classifier_http_{what}_total");
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}");
        }
    }

    /// Counts one response with status `code`.
    fn record(&self, code: u16) {
        if let Some(i) = CODES.iter().position(|&c| c == code) {
            self.responses[i].fetch_add(1, Ordering::Relaxed);
        }
        if (400..500).contains(&code) {
            self.bad.fetch_add(1, Ordering::Relaxed);
        }
        if code == 408 {
            self.timed_out.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A running status server. Dropping it stops it, like [`HttpServer::shutdown`].
pub struct HttpServer {
    local_addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
    workers: Vec<JoinHandle<()>>,
}

/// State shared by the accept thread, the workers and the server handle.
struct Shared {
    config: HttpConfig,
    view: Arc<dyn StatusView>,
    stats: Arc<HttpStats>,
    stop: AtomicBool,
    /// The connection each worker is serving (a clone of its socket), so that `shutdown` can wake
    /// workers blocked in a read or a write. One slot per worker.
    active: Mutex<Vec<Option<TcpStream>>>,
}

/// An accepted connection waiting for a worker.
struct Conn {
    stream: TcpStream,
    peer: SocketAddr,
    accepted: Instant,
}

impl HttpServer {
    /// Binds and starts the accept thread and the workers. Errors name the address (e.g. "binding
    /// 127.0.0.1:8080: Address in use").
    pub fn start(config: &HttpConfig, view: Arc<dyn StatusView>) -> io::Result<HttpServer> {
        config.validate()?;
        let bind = config.bind;
        let listener = TcpListener::bind(bind).map_err(|e| context(e, format!("binding {bind}")))?;
        let local_addr =
            listener.local_addr().map_err(|e| context(e, format!("reading the address bound for {bind}")))?;
        let shared = Arc::new(Shared {
            config: config.clone(),
            view,
            stats: Arc::new(HttpStats::default()),
            stop: AtomicBool::new(false),
            active: Mutex::new((0..config.workers).map(|_| None).collect()),
        });
        let (tx, rx) = mpsc::sync_channel::<Conn>(config.queue);
        let rx = Arc::new(Mutex::new(rx));
        let mut server = HttpServer { local_addr, shared, accept: None, workers: Vec::new() };
        // The accept thread owns the only sender: once it has exited, idle workers see a closed channel.
        // If a later spawn fails, dropping `server` stops and joins what was started.
        let shared = Arc::clone(&server.shared);
        let accept = thread::Builder::new()
            .name("httpd-accept".into())
            .spawn(move || accept_loop(&listener, &tx, &shared))
            .map_err(|e| context(e, "spawning the HTTP accept thread".into()))?;
        server.accept = Some(accept);
        for slot in 0..config.workers {
            let (shared, rx) = (Arc::clone(&server.shared), Arc::clone(&rx));
            let worker = thread::Builder::new()
                .name(format!("httpd-worker-{slot}"))
                .spawn(move || worker_loop(slot, &shared, &rx))
                .map_err(|e| context(e, format!("spawning HTTP worker thread {slot}")))?;
            server.workers.push(worker);
        }
        debug!("HTTP status server listening on {local_addr} with {} workers", config.workers);
        Ok(server)
    }

    /// The address the server listens on (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Counters for the daemon's /metrics: requests served by status code, rejected (503 busy), timed
    /// out (408), bad (4xx), write errors. The server does not add them to `/metrics` itself: the
    /// daemon's [`StatusView::metrics`] appends them with [`HttpStats::write_metrics`].
    pub fn stats(&self) -> Arc<HttpStats> {
        Arc::clone(&self.shared.stats)
    }

    /// Stops accepting, interrupts the connections being served, joins all threads. Connections still
    /// in the queue are closed without an answer. Normally returns within milliseconds.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    /// Idempotent: stops the threads and joins them.
    fn stop_and_join(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(accept) = self.accept.take() {
            if let Err(e) = wake(self.local_addr) {
                // Cannot happen with a working loopback; never hang the daemon's shutdown over it.
                warn!(
                    "HTTP server: cannot wake the accept thread on {}: {e}; not waiting for it",
                    self.local_addr
                );
                self.shared.close_active();
                self.workers.clear();
                return;
            }
            if accept.join().is_err() {
                warn!("HTTP server: the accept thread panicked");
            }
        }
        self.shared.close_active();
        for worker in self.workers.drain(..) {
            if worker.join().is_err() {
                warn!("HTTP server: a worker thread panicked");
            }
        }
    }
}

impl std::fmt::Debug for HttpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpServer")
            .field("local_addr", &self.local_addr)
            .field("workers", &self.workers.len())
            .field("stats", &self.shared.stats)
            .finish_non_exhaustive()
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

impl Shared {
    /// Records the connection a worker serves; false (drop it) when the server is stopping.
    fn register(&self, slot: usize, stream: &TcpStream) -> bool {
        let mut active = self.active.lock().unwrap_or_else(PoisonError::into_inner);
        if self.stop.load(Ordering::SeqCst) {
            return false;
        }
        match stream.try_clone() {
            Ok(clone) => active[slot] = Some(clone),
            // Serve it anyway; only a shutdown during this request waits for its timeouts.
            Err(e) => warn!("HTTP server: cloning a client socket: {e}"),
        }
        true
    }

    fn unregister(&self, slot: usize) {
        self.active.lock().unwrap_or_else(PoisonError::into_inner)[slot] = None;
    }

    /// Shuts down every connection being served, which wakes their workers' reads and writes.
    fn close_active(&self) {
        let active = self.active.lock().unwrap_or_else(PoisonError::into_inner);
        for stream in active.iter().flatten() {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

/// Adds what failed to an I/O error, keeping its kind.
fn context(e: io::Error, what: String) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// Connects to the server's own listener so that a blocked `accept` returns.
fn wake(addr: SocketAddr) -> io::Result<()> {
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    TcpStream::connect_timeout(&SocketAddr::new(ip, addr.port()), WAKE_TIMEOUT).map(drop)
}

/// Accepts connections and hands them to the workers, answering 503 itself when the queue is full.
fn accept_loop(listener: &TcpListener, tx: &SyncSender<Conn>, shared: &Shared) {
    let mut failing = false;
    let mut busy = BusyReport::default();
    loop {
        let accepted = listener.accept();
        if shared.stop.load(Ordering::SeqCst) {
            break;
        }
        match accepted {
            Ok((stream, peer)) => {
                failing = false;
                shared.stats.connections.fetch_add(1, Ordering::Relaxed);
                let _ = stream.set_nodelay(true);
                let conn = Conn { stream, peer, accepted: Instant::now() };
                match tx.try_send(conn) {
                    Ok(()) => {}
                    Err(TrySendError::Full(conn)) => {
                        reject_busy(conn, &shared.stats);
                        busy.rejected(shared.config.workers, shared.config.queue);
                    }
                    Err(TrySendError::Disconnected(conn)) => {
                        warn!("HTTP server: no worker thread left; rejecting {}", conn.peer);
                        reject_busy(conn, &shared.stats);
                    }
                }
            }
            Err(e) if matches!(e.kind(), io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted) => {}
            Err(e) => {
                if !failing {
                    warn!("HTTP server: accepting a connection: {e}");
                }
                failing = true;
                thread::sleep(ACCEPT_ERROR_PAUSE);
            }
        }
    }
    debug!("HTTP accept thread stopped");
}

/// Rate-limits the "server busy" warning.
#[derive(Default)]
struct BusyReport {
    last_warning: Option<Instant>,
    unreported: u64,
}

impl BusyReport {
    fn rejected(&mut self, workers: usize, queue: usize) {
        self.unreported += 1;
        if self.last_warning.is_some_and(|t| t.elapsed() < BUSY_WARN_INTERVAL) {
            return;
        }
        warn!(
            "HTTP server busy ({workers} workers, queue of {queue}): rejected {} connection(s) with 503",
            self.unreported
        );
        self.last_warning = Some(Instant::now());
        self.unreported = 0;
    }
}

/// Answers `503` + `Retry-After: 1` without blocking the accept thread for more than ~100 ms.
fn reject_busy(conn: Conn, stats: &HttpStats) {
    let Conn { mut stream, peer, .. } = conn;
    // Read what already arrived (without waiting) so that closing does not turn into a reset.
    drain_available(&mut stream);
    let response = Response::text(503, "server busy, retry later\n").header("Retry-After", "1".into());
    let mut out = response.head(false);
    out.extend_from_slice(&response.body);
    let sent = stream.set_write_timeout(Some(BUSY_WRITE_TIMEOUT)).and_then(|()| stream.write_all(&out));
    stats.rejected.fetch_add(1, Ordering::Relaxed);
    stats.record(503);
    if let Err(e) = sent {
        stats.write_errors.fetch_add(1, Ordering::Relaxed);
        debug!("{peer}: writing the 503 busy answer: {e}");
    }
    let _ = stream.shutdown(Shutdown::Write);
    drain_available(&mut stream);
    debug!("{peer}: rejected with 503, all workers and the queue are busy");
}

/// Reads and discards whatever the client has sent so far, without waiting.
fn drain_available(stream: &mut TcpStream) {
    if stream.set_nonblocking(true).is_err() {
        return;
    }
    let mut scratch = [0u8; 4096];
    let mut total = 0;
    while total < LINGER_BYTES {
        match stream.read(&mut scratch) {
            Ok(0) | Err(_) => break,
            Ok(n) => total += n,
        }
    }
    let _ = stream.set_nonblocking(false);
}

/// Takes connections from the queue until the accept thread has exited and the queue is empty.
fn worker_loop(slot: usize, shared: &Shared, rx: &Mutex<Receiver<Conn>>) {
    loop {
        let next = rx.lock().unwrap_or_else(PoisonError::into_inner).recv();
        let Ok(conn) = next else { break };
        if !shared.register(slot, &conn.stream) {
            continue; // stopping: close queued connections without an answer
        }
        serve(shared, conn);
        shared.unregister(slot);
    }
}

/// Reads one request, answers it and closes the connection.
fn serve(shared: &Shared, conn: Conn) {
    let Conn { mut stream, peer, accepted } = conn;
    let config = &shared.config;
    if let Err(e) = stream.set_write_timeout(Some(config.write_timeout)) {
        debug!("{peer}: setting the write timeout: {e}");
        return;
    }
    let deadline = accepted + config.request_timeout;
    let head = match read_head(&mut stream, deadline, config.max_request_bytes) {
        Ok(head) => head,
        Err(HeadError::Closed) => {
            debug!("{peer}: closed without sending a request");
            return;
        }
        Err(HeadError::Io(e)) => {
            debug!("{peer}: reading the request: {e}");
            return;
        }
        Err(HeadError::Reject(reject)) => {
            debug!("{peer}: {} {}", reject.status, reject.reason);
            return finish(shared, &mut stream, &reject.response(), false);
        }
    };
    let (response, head_only) = match parse_request(&head) {
        Ok(request) => {
            let response = respond(shared.view.as_ref(), &request);
            let took = accepted.elapsed();
            debug!("{peer}: \"{} {}\" {} in {took:.1?}", request.method, request.target, response.status);
            (response, request.method == "HEAD")
        }
        Err(reject) => {
            debug!("{peer}: {} {}", reject.status, reject.reason);
            (reject.response(), false)
        }
    };
    finish(shared, &mut stream, &response, head_only);
}

/// Sends the response, counts it and closes the connection (lingering briefly after errors).
fn finish(shared: &Shared, stream: &mut TcpStream, response: &Response, head_only: bool) {
    shared.stats.record(response.status);
    if let Err(e) = send(stream, response, head_only, &shared.stop) {
        shared.stats.write_errors.fetch_add(1, Ordering::Relaxed);
        let peer = stream.peer_addr().map_or_else(|_| "client".to_string(), |a| a.to_string());
        debug!("{peer}: writing the {} response: {e}", response.status);
        return;
    }
    let _ = stream.shutdown(Shutdown::Write);
    // After an error the client may still be sending (a body, a huge header); closing with unread data
    // would reset the connection and could destroy the answer. A slow (408) client gets no extra time.
    if response.status >= 400 && response.status != 408 && response.status != 503 {
        linger(stream);
    }
}

/// Discards client bytes until EOF, for at most `LINGER_TIME` / `LINGER_BYTES`.
fn linger(stream: &mut TcpStream) {
    let deadline = Instant::now() + LINGER_TIME;
    let mut scratch = [0u8; 4096];
    let mut total = 0;
    while total < LINGER_BYTES {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            break;
        }
        match stream.read(&mut scratch) {
            Ok(0) | Err(_) => break,
            Ok(n) => total += n,
        }
    }
}

/// Writes head and body; large bodies go in chunks so that a shutdown is noticed between them.
fn send(stream: &mut TcpStream, response: &Response, head_only: bool, stop: &AtomicBool) -> io::Result<()> {
    let mut out = response.head(head_only);
    if head_only {
        return stream.write_all(&out);
    }
    let body: &[u8] = &response.body;
    if body.len() <= SMALL_BODY {
        out.extend_from_slice(body);
        return stream.write_all(&out);
    }
    stream.write_all(&out)?;
    for chunk in body.chunks(WRITE_CHUNK) {
        if stop.load(Ordering::Relaxed) {
            return Err(io::Error::new(io::ErrorKind::Interrupted, "server shutting down"));
        }
        stream.write_all(chunk)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------------
// Reading and parsing the request head.

/// Why no request head could be read.
enum HeadError {
    /// The client closed the connection before sending anything.
    Closed,
    /// A socket error; the connection is dropped without an answer.
    Io(io::Error),
    /// Answer with this error status.
    Reject(Reject),
}

/// An error answer: status and a short reason for the body and the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Reject {
    status: u16,
    reason: &'static str,
}

impl Reject {
    fn new(status: u16, reason: &'static str) -> Self {
        Reject { status, reason }
    }

    fn response(self) -> Response {
        let mut response = Response::text(self.status, &format!("{}\n", self.reason));
        if self.status == 405 {
            response = response.header("Allow", "GET, HEAD".into());
        }
        response
    }
}

/// Reads until the empty line that ends the head. The deadline covers the whole head: each read waits
/// only for the time left.
fn read_head(stream: &mut TcpStream, deadline: Instant, max: usize) -> Result<Vec<u8>, HeadError> {
    let mut buf = Vec::with_capacity(max.min(1024));
    let mut scan = HeadScan::default();
    let mut chunk = [0u8; 2048];
    let line_limit = MAX_REQUEST_LINE.min(max);
    loop {
        let left = deadline.saturating_duration_since(Instant::now()).max(MIN_READ_WAIT);
        stream.set_read_timeout(Some(left)).map_err(HeadError::Io)?;
        let want = (max - buf.len()).min(chunk.len());
        match stream.read(&mut chunk[..want]) {
            Ok(0) if buf.is_empty() => return Err(HeadError::Closed),
            Ok(0) => return Err(HeadError::Reject(Reject::new(400, "bad request: incomplete request head"))),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                return Err(HeadError::Reject(Reject::new(408, "request timeout")));
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(HeadError::Io(e)),
        }
        if let Some(end) = scan.feed(&buf) {
            buf.truncate(end);
            buf.drain(..scan.request_start);
            return Ok(buf);
        }
        if scan.request_line_len(buf.len()) > line_limit {
            return Err(HeadError::Reject(Reject::new(414, "request line too long")));
        }
        if buf.len() >= max {
            return Err(HeadError::Reject(Reject::new(431, "request header fields too large")));
        }
        if Instant::now() >= deadline {
            return Err(HeadError::Reject(Reject::new(408, "request timeout")));
        }
    }
}

/// Incremental search for the end of the head: the first empty line (`\r\n` or bare `\n`) after the
/// request line. Empty lines before the request line are skipped (RFC 9112 §2.2).
#[derive(Default)]
struct HeadScan {
    /// Bytes already scanned.
    pos: usize,
    /// Start of the current line.
    line_start: usize,
    /// Start of the request line.
    request_start: usize,
    /// End of the request line (index of its `\n`), once seen.
    request_end: Option<usize>,
}

impl HeadScan {
    /// Scans the bytes added since the last call; returns the length of the head once complete.
    fn feed(&mut self, buf: &[u8]) -> Option<usize> {
        while let Some(i) = buf[self.pos..].iter().position(|&b| b == b'\n').map(|i| i + self.pos) {
            let empty = matches!(&buf[self.line_start..i], b"" | b"\r");
            self.pos = i + 1;
            self.line_start = i + 1;
            match self.request_end {
                None if empty => self.request_start = i + 1,
                None => self.request_end = Some(i),
                Some(_) if empty => return Some(i + 1),
                Some(_) => {}
            }
        }
        self.pos = buf.len();
        None
    }

    /// Length of the request line (so far), without its line ending.
    fn request_line_len(&self, buf_len: usize) -> usize {
        self.request_end.map_or(buf_len, |end| end.saturating_sub(1)).saturating_sub(self.request_start)
    }
}

/// A parsed request; only what routing needs.
#[derive(Debug, PartialEq, Eq)]
struct Request<'a> {
    method: &'a str,
    /// The request target as sent (validated visible ASCII, starting with `/`).
    target: &'a str,
    /// The target without its query string.
    path: &'a str,
}

/// Protocol version of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    Http10,
    Http11,
}

/// What the headers say that matters here.
#[derive(Default)]
struct HeaderInfo {
    content_length: Option<u64>,
    transfer_encoding: bool,
    hosts: usize,
}

/// Parses the request head and applies the server-wide rules (method, no body).
fn parse_request(head: &[u8]) -> Result<Request<'_>, Reject> {
    let mut lines = head.split(|&b| b == b'\n').map(|line| line.strip_suffix(b"\r").unwrap_or(line));
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Reject::new(400, "bad request: malformed request line"));
    };
    let version = parse_version(version)?;
    if method.is_empty() || !method.iter().all(|&b| is_tchar(b)) {
        return Err(Reject::new(400, "bad request: malformed method"));
    }
    let target = parse_target(target)?;
    let mut info = HeaderInfo::default();
    for line in lines.take_while(|line| !line.is_empty()) {
        parse_header(line, &mut info)?;
    }
    if info.hosts > 1 || (version == Version::Http11 && info.hosts == 0) {
        return Err(Reject::new(400, "bad request: HTTP/1.1 needs exactly one Host header"));
    }
    // Both are valid tokens, checked above: ASCII.
    let method = std::str::from_utf8(method).unwrap_or_default();
    if method != "GET" && method != "HEAD" {
        return Err(Reject::new(405, "method not allowed"));
    }
    if info.transfer_encoding || info.content_length.is_some_and(|n| n > 0) {
        return Err(Reject::new(413, "content too large: GET and HEAD requests take no body"));
    }
    let path = target.split_once('?').map_or(target, |(path, _)| path);
    Ok(Request { method, target, path })
}

/// `HTTP/1.x` → ok (1.2+ treated as 1.1); other well-formed versions (`HTTP/2.0`, `HTTP/0.9`) → 505.
fn parse_version(version: &[u8]) -> Result<Version, Reject> {
    let unsupported = Reject::new(505, "HTTP version not supported");
    match version {
        b"HTTP/1.0" => Ok(Version::Http10),
        [b'H', b'T', b'T', b'P', b'/', b'1', b'.', minor] if minor.is_ascii_digit() => Ok(Version::Http11),
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
            if major.is_ascii_digit() && minor.is_ascii_digit() =>
        {
            Err(unsupported)
        }
        [b'H', b'T', b'T', b'P', b'/', major] if major.is_ascii_digit() => Err(unsupported),
        _ => Err(Reject::new(400, "bad request: malformed HTTP version")),
    }
}

/// Origin-form only: starts with `/`, visible ASCII only (no controls, spaces or non-ASCII bytes).
fn parse_target(target: &[u8]) -> Result<&str, Reject> {
    if target.first() != Some(&b'/') {
        return Err(Reject::new(400, "bad request: the target must start with /"));
    }
    if !target.iter().all(|b| (0x21..0x7f).contains(b)) {
        return Err(Reject::new(400, "bad request: invalid character in the target"));
    }
    std::str::from_utf8(target).map_err(|_| Reject::new(400, "bad request: invalid character in the target"))
}

/// Checks one header line and notes the headers that matter.
fn parse_header(line: &[u8], info: &mut HeaderInfo) -> Result<(), Reject> {
    if line.first().is_some_and(|&b| b == b' ' || b == b'\t') {
        return Err(Reject::new(400, "bad request: obsolete header line folding"));
    }
    let Some(colon) = line.iter().position(|&b| b == b':') else {
        return Err(Reject::new(400, "bad request: header line without a colon"));
    };
    let name = &line[..colon];
    if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
        return Err(Reject::new(400, "bad request: malformed header name"));
    }
    let value = line[colon + 1..].trim_ascii();
    if value.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Err(Reject::new(400, "bad request: control character in a header value"));
    }
    if name.eq_ignore_ascii_case(b"content-length") {
        let length = parse_content_length(value)?;
        if info.content_length.is_some_and(|previous| previous != length) {
            return Err(Reject::new(400, "bad request: conflicting Content-Length headers"));
        }
        info.content_length = Some(length);
    } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
        info.transfer_encoding = true;
    } else if name.eq_ignore_ascii_case(b"host") {
        info.hosts += 1;
    }
    Ok(())
}

fn parse_content_length(value: &[u8]) -> Result<u64, Reject> {
    let invalid = Reject::new(400, "bad request: invalid Content-Length");
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return Err(invalid);
    }
    value.iter().try_fold(0u64, |n, &d| n.checked_mul(10)?.checked_add(u64::from(d - b'0'))).ok_or(invalid)
}

/// RFC 9110 token character.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

// ---------------------------------------------------------------------------------------------------
// Routing and responses.

/// A response body: static, owned, or shared with the daemon (the snapshot).
enum Body {
    Static(&'static [u8]),
    Owned(Vec<u8>),
    Shared(Arc<Vec<u8>>),
}

impl std::ops::Deref for Body {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Body::Static(bytes) => bytes,
            Body::Owned(bytes) => bytes,
            Body::Shared(bytes) => bytes,
        }
    }
}

/// A complete response; always `Connection: close`.
struct Response {
    status: u16,
    content_type: &'static str,
    cache_control: &'static str,
    extra: Vec<(&'static str, String)>,
    body: Body,
}

impl Response {
    fn new(status: u16, content_type: &'static str, body: Body) -> Self {
        Response { status, content_type, cache_control: "no-store", extra: Vec::new(), body }
    }

    fn text(status: u16, text: &str) -> Self {
        Response::new(status, TEXT, Body::Owned(text.as_bytes().to_vec()))
    }

    fn header(mut self, name: &'static str, value: String) -> Self {
        self.extra.push((name, value));
        self
    }

    /// Status line and headers; `Content-Length` is the body's even for HEAD.
    fn head(&self, head_only: bool) -> Vec<u8> {
        let mut head = String::with_capacity(256);
        let _ = write!(
            head,
            "HTTP/1.1 {} {}\r\nDate: {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: {}\r\n\
             X-Content-Type-Options: nosniff\r\n",
            self.status,
            reason_phrase(self.status),
            http_date(SystemTime::now()),
            self.content_type,
            self.body.len(),
            self.cache_control,
        );
        for (name, value) in &self.extra {
            let _ = write!(head, "{name}: {value}\r\n");
        }
        head.push_str("Connection: close\r\n\r\n");
        let mut out = head.into_bytes();
        if !head_only {
            out.reserve(self.body.len().min(SMALL_BODY));
        }
        out
    }
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        414 => "URI Too Long",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

/// Builds the response for a valid GET/HEAD request. A panic in the view becomes a 500, so that a bug
/// in the daemon's state cannot kill workers one by one.
fn respond(view: &dyn StatusView, request: &Request<'_>) -> Response {
    panic::catch_unwind(AssertUnwindSafe(|| route(view, request.path))).unwrap_or_else(|_| {
        warn!("HTTP server: the status view panicked while serving {}", request.path);
        Response::text(500, "internal error\n")
    })
}

fn route(view: &dyn StatusView, path: &str) -> Response {
    match path {
        "/" => {
            let mut page = Response::new(200, "text/html; charset=utf-8", Body::Static(PAGE.as_bytes()));
            page.cache_control = "no-cache";
            page.header("Content-Security-Policy", CONTENT_SECURITY_POLICY.into())
        }
        "/api/latest" => {
            let mut json = Vec::with_capacity(2048);
            view.latest_json(&mut json);
            Response::new(200, "application/json", Body::Owned(json))
        }
        "/snapshot.jpg" => match view.snapshot() {
            Some((seq, jpeg)) => {
                Response::new(200, "image/jpeg", Body::Shared(jpeg)).header("X-Result-Seq", seq.to_string())
            }
            None => Response::text(503, "no frame yet\n").header("Retry-After", "1".into()),
        },
        "/metrics" => {
            let mut text = String::with_capacity(4096);
            view.metrics(&mut text);
            Response::new(200, "text/plain; version=0.0.4; charset=utf-8", Body::Owned(text.into_bytes()))
        }
        "/healthz" => match view.health() {
            Ok(()) => Response::text(200, "ok\n"),
            Err(reason) => Response::text(503, &format!("unhealthy: {reason}\n")),
        },
        _ => Response::text(404, "not found\n"),
    }
}

/// IMF-fixdate (RFC 9110 §5.6.7), e.g. `Sun, 06 Nov 1994 08:49:37 GMT`.
fn http_date(now: SystemTime) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] =
        ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = secs / 86_400;
    let (year, month, day) = civil_from_days(days);
    let (h, m, s) = (secs % 86_400 / 3600, secs % 3600 / 60, secs % 60);
    let weekday = DAYS[(days % 7) as usize];
    let month = MONTHS[(month - 1) as usize];
    format!("{weekday}, {day:02} {month} {year} {h:02}:{m:02}:{s:02} GMT")
}

/// Days since 1970-01-01 → (year, month 1..=12, day 1..=31), after Howard Hinnant's `civil_from_days`.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &str) -> Result<Request<'_>, Reject> {
        parse_request(raw.as_bytes())
    }

    fn status(raw: &str) -> u16 {
        parse(raw).map_or_else(|r| r.status, |_| 200)
    }

    #[test]
    fn dates_are_imf_fixdate() {
        assert_eq!(http_date(UNIX_EPOCH), "Thu, 01 Jan 1970 00:00:00 GMT");
        let rfc_example = UNIX_EPOCH + Duration::from_secs(784_111_777);
        assert_eq!(http_date(rfc_example), "Sun, 06 Nov 1994 08:49:37 GMT");
        let leap_day = UNIX_EPOCH + Duration::from_secs(1_709_164_800 + 3599);
        assert_eq!(http_date(leap_day), "Thu, 29 Feb 2024 00:59:59 GMT");
    }

    #[test]
    fn head_scan_finds_the_empty_line() {
        for (raw, end) in [
            ("GET / HTTP/1.1\r\nHost: a\r\n\r\nrest", 27),
            ("GET / HTTP/1.1\nHost: a\n\nrest", 24),
            ("\r\n\r\nGET / HTTP/1.1\r\n\r\n", 22),
        ] {
            let mut scan = HeadScan::default();
            // Feed byte by byte, as a slow client would.
            let found = (1..=raw.len()).find_map(|n| scan.feed(&raw.as_bytes()[..n]));
            assert_eq!(found, Some(end), "{raw:?}");
        }
        let mut scan = HeadScan::default();
        assert_eq!(scan.feed(b"GET /abc HTTP/1.1\r\nHost"), None);
        assert_eq!(scan.request_line_len(23), 17);
    }

    #[test]
    fn parses_valid_requests() {
        let request = parse("GET /api/latest?x=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n").unwrap();
        assert_eq!(request, Request { method: "GET", target: "/api/latest?x=1", path: "/api/latest" });
        assert_eq!(parse("HEAD / HTTP/1.0\n\n").unwrap().method, "HEAD");
        assert_eq!(status("GET / HTTP/1.2\r\nHost: h\r\n\r\n"), 200);
    }

    #[test]
    fn rejects_bad_requests_with_precise_statuses() {
        for (raw, expected) in [
            ("garbage\r\n\r\n", 400),
            ("GET  / HTTP/1.1\r\nHost: h\r\n\r\n", 400),
            ("GET / HTTP/1.1 x\r\nHost: h\r\n\r\n", 400),
            ("GET / FTP/1.1\r\nHost: h\r\n\r\n", 400),
            ("GET http://h/ HTTP/1.1\r\nHost: h\r\n\r\n", 400),
            ("GET /\x01 HTTP/1.1\r\nHost: h\r\n\r\n", 400),
            ("GET /\u{e9} HTTP/1.1\r\nHost: h\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: h\r\n folded\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: h\r\nBad Name: x\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: h\r\nNoColon\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: h\r\nContent-Length: ten\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999999999999999\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: h\r\nX: a\rb\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: h\r\n\r\n", 405),
            ("get / HTTP/1.1\r\nHost: h\r\n\r\n", 405),
            ("GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\n", 413),
            ("GET / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n", 413),
            ("GET / HTTP/2.0\r\nHost: h\r\n\r\n", 505),
            ("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505),
            ("GET / HTTP/0.9\r\n\r\n", 505),
            ("GET / HTTP/3\r\n\r\n", 505),
        ] {
            assert_eq!(status(raw), expected, "{raw:?}");
        }
    }

    #[test]
    fn stats_count_by_code_and_class() {
        let stats = HttpStats::default();
        for code in [200, 200, 404, 408, 503, 799] {
            stats.record(code);
        }
        assert_eq!((stats.responses(200), stats.responses(404), stats.responses(799)), (2, 1, 0));
        assert_eq!((stats.bad_requests(), stats.timed_out()), (2, 1));
    }
}
