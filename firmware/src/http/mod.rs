//! The status server: hyper's HTTP/1.1 on a one-thread tokio runtime.
//!
//! It serves the live status page (`/`), the latest result as JSON (`/api/latest`) and as a stream of
//! server-sent events (`/events`, pushed when a result or preview frame arrives, a full event at least
//! every [`EVENT_REFRESH`]), the latest frame (`/snapshot.jpg`), Prometheus metrics (`/metrics`) and a
//! health check (`/healthz`).
//!
//! Why hyper: HTTP/1.1 parsing, keep-alive and response framing are what hyper is maintained for;
//! this module keeps only the policy (limits, deadlines, the `Host` check, routes). Everything runs on
//! one thread (`httpd-runtime`) with a current-thread runtime: an idle connection costs a socket and a
//! small task, not a thread, so thousands of them cannot starve the page.
//!
//! Resource bounds, so that the daemon can run for months:
//! - threads: one, whatever the load.
//! - connections: at most `max_connections`, and `max_connections_per_client` from one IP address.
//!   At a limit, the oldest connection that has been idle (no request in progress) for at least
//!   [`body::EVICTABLE_AFTER`] is closed to make room (slowloris clients and idle keep-alive
//!   connections are idle); when none is, the new connection gets `503` + `Retry-After: 1` and is closed.
//!   A request being answered is never evicted. At most `max_event_streams` `/events` streams at once.
//! - memory: the request head is capped at `max_request_bytes` (hyper's buffer at its minimum of 8 KiB
//!   or that cap); request bodies are never read; the snapshot is shared (`Arc`), not copied.
//! - time: each request head must arrive within `request_timeout` of the accept or of the previous
//!   response (else `408` when part of a head came, a plain close for an idle keep-alive connection);
//!   a write that makes no progress for `write_timeout` drops the connection.
//!
//! Answers to bad input: a malformed request (line, header, method, version) → 400 (hyper's parser);
//! head over `max_request_bytes` → 431; the HTTP/2 preface → closed (HTTP/1.1 only); a target that is
//! not origin-form (`/…`) → 400; over [`MAX_TARGET`] bytes → 414; a missing or repeated `Host` in
//! HTTP/1.1 → 400; a `Host` that is not an IP address, `localhost`, this machine's name (also as
//! `NAME.local`) or one of `allowed_hosts` → 421 (a web page using DNS rebinding sends its own name);
//! a method other than GET/HEAD → 405 with `Allow: GET, HEAD`; a body announced on GET/HEAD → 413,
//! the body is not read; a head cut short by EOF → 400; unknown path → 404.

mod body;
mod conn;
mod events;
mod hosts;
mod respond;
mod stats;

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use log::{debug, warn};

pub use events::EVENT_REFRESH;
pub use respond::MAX_TARGET;
pub use stats::HttpStats;

/// Configuration of the status server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpConfig {
    /// Address to listen on (default `127.0.0.1:8080`).
    pub bind: SocketAddr,
    /// Connections held at once (default 256); see the module documentation for what happens beyond.
    pub max_connections: usize,
    /// Connections held at once from one IP address (default 64).
    pub max_connections_per_client: usize,
    /// `/events` streams at once (default 16); beyond: 503.
    pub max_event_streams: usize,
    /// An `/events` stream ends after this long (default 10 min) and the browser reconnects (after
    /// 2 s): no stream, and nothing a proxy holds for it, lives forever.
    pub event_stream_lifetime: Duration,
    /// Deadline for each request head, counted from the accept or the previous response (default 5 s).
    pub request_timeout: Duration,
    /// A write making no progress for this long drops the connection (default 10 s).
    pub write_timeout: Duration,
    /// Cap on request line + headers (default 8192) → 431.
    pub max_request_bytes: usize,
    /// Host names accepted in `Host` besides IP addresses, `localhost` and this machine's name.
    pub allowed_hosts: Vec<String>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            bind: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8080),
            max_connections: 256,
            max_connections_per_client: 64,
            max_event_streams: 16,
            event_stream_lifetime: Duration::from_secs(600),
            request_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(10),
            max_request_bytes: 8192,
            allowed_hosts: Vec::new(),
        }
    }
}

impl HttpConfig {
    /// Checks the values that would make the server unusable.
    fn validate(&self) -> io::Result<()> {
        let problem = if self.max_connections == 0 {
            "max_connections must be at least 1"
        } else if self.max_connections_per_client == 0 {
            "max_connections_per_client must be at least 1"
        } else if self.request_timeout.is_zero() {
            "request_timeout must be positive"
        } else if self.event_stream_lifetime.is_zero() {
            "event_stream_lifetime must be positive"
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
/// and must not block for long (they take a Mutex briefly at most): they run on the server's thread.
pub trait StatusView: Send + Sync + 'static {
    /// Body of `/api/latest` (application/json), appended to `out`.
    fn latest_json(&self, out: &mut Vec<u8>);
    /// The latest frame as JPEG and the result `seq` it belongs to; None before the first one.
    fn snapshot(&self) -> Option<(u64, Arc<Vec<u8>>)>;
    /// Prometheus text exposition format 0.0.4, appended to `out`.
    fn metrics(&self, out: &mut String);
    /// Ok when healthy, Err(reason) otherwise.
    fn health(&self) -> Result<(), String>;
    /// A number that changes whenever [`StatusView::latest_json`] has news (a result, a preview frame):
    /// `/events` pushes an event when it does.
    fn version(&self) -> u64;
}

/// A running status server. Dropping it stops it, like [`HttpServer::shutdown`].
pub struct HttpServer {
    local_addr: SocketAddr,
    stats: Arc<HttpStats>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl HttpServer {
    /// Binds and starts the server's thread. Errors name the address (e.g. "binding 127.0.0.1:8080:
    /// Address in use").
    pub fn start(config: &HttpConfig, view: Arc<dyn StatusView>) -> io::Result<HttpServer> {
        config.validate()?;
        let bind = config.bind;
        let listener = listen(bind).map_err(|e| context(e, format!("binding {bind}")))?;
        let local_addr =
            listener.local_addr().map_err(|e| context(e, format!("reading the address bound for {bind}")))?;
        listener.set_nonblocking(true).map_err(|e| context(e, format!("configuring {bind}")))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(|e| context(e, "starting the HTTP server's runtime".into()))?;
        let stats = Arc::new(HttpStats::default());
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let server = conn::Server::new(config, view, Arc::clone(&stats), local_addr);
        let thread = thread::Builder::new()
            .name("httpd-runtime".into())
            .spawn(move || {
                let tasks = tokio::task::LocalSet::new();
                tasks.block_on(&runtime, server.run(listener, stopped));
                // Dropping the set cancels every connection task and closes its socket.
                drop(tasks);
            })
            .map_err(|e| context(e, "spawning the HTTP server thread".into()))?;
        debug!("HTTP status server listening on {local_addr}");
        Ok(HttpServer { local_addr, stats, stop: Some(stop), thread: Some(thread) })
    }

    /// The address the server listens on (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Counters for the daemon's /metrics. The server does not add them to `/metrics` itself: the
    /// daemon's [`StatusView::metrics`] appends them with [`HttpStats::write_metrics`].
    pub fn stats(&self) -> Arc<HttpStats> {
        Arc::clone(&self.stats)
    }

    /// Stops accepting, closes every connection (requests in progress are cut), joins the thread.
    /// Normally returns within milliseconds.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    /// Idempotent.
    fn stop_and_join(&mut self) {
        if let Some(stop) = self.stop.take() {
            // Err: the server's task has already ended.
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            warn!("HTTP server: its thread panicked");
        }
    }
}

impl std::fmt::Debug for HttpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpServer")
            .field("local_addr", &self.local_addr)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// A listening socket with a backlog of [`BACKLOG`] (std's is 128: a burst of connections beyond it
/// waits for the client's SYN retry, a second or more).
fn listen(bind: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = socket2::Socket::new(socket2::Domain::for_address(bind), socket2::Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.bind(&bind.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

/// Connections the kernel queues for the accept loop.
const BACKLOG: i32 = 1024;

/// Adds what was being done to an error, keeping its kind.
fn context(e: io::Error, what: String) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}
