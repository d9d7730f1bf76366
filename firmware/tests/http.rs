//! Tests of the status server over real TCP on 127.0.0.1, with a fake `StatusView`.

use std::fs;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

mod common;

use camera_classifier::http::{EVENT_REFRESH, HttpConfig, HttpServer, StatusView};
use common::{chromium_path, count_pixels, run_chromium};
use image::{Rgb, RgbImage};
use serde_json::{Value, json};

const LABEL: &str = "tabby cat";
/// A label that would become markup if the page used innerHTML.
const TRICKY_LABEL: &str = "<b>x</b> & \"quote\"";
const MODEL: &str = "bit-s-r50x1-int8.onnx";
const SEQ: u64 = 12;

// ---------------------------------------------------------------------------------------------------
// Test isolation: tests that count the server's threads run alone, the others run in parallel.

static THREADS: RwLock<()> = RwLock::new(());

fn shared_lock() -> RwLockReadGuard<'static, ()> {
    THREADS.read().unwrap_or_else(PoisonError::into_inner)
}

fn exclusive_lock() -> RwLockWriteGuard<'static, ()> {
    THREADS.write().unwrap_or_else(PoisonError::into_inner)
}

/// Threads of this process named by the server (`httpd-runtime`). Threads spawned by it without a
/// name would inherit the name, so a thread per connection would be counted too.
fn server_threads() -> usize {
    let tasks = fs::read_dir("/proc/self/task").expect("reading /proc/self/task");
    tasks
        .flatten()
        .filter(|task| {
            fs::read_to_string(task.path().join("comm")).is_ok_and(|comm| comm.starts_with("httpd-"))
        })
        .count()
}

/// Waits (up to 2 s) until the server's threads have named themselves, returning their count.
fn started_server_threads(expected: usize) -> usize {
    let started = Instant::now();
    while server_threads() != expected && started.elapsed() < Duration::from_secs(2) {
        thread::sleep(Duration::from_millis(5));
    }
    server_threads()
}

// ---------------------------------------------------------------------------------------------------
// The fake view.

struct FakeView {
    has_result: bool,
    jpeg: Arc<Vec<u8>>,
    health: Mutex<Result<(), String>>,
    latest_delay: Duration,
    latest_calls: AtomicUsize,
    snapshot_calls: AtomicUsize,
    panic_in_health: AtomicBool,
    broken_json: AtomicBool,
    version: AtomicU64,
}

impl FakeView {
    fn new(has_result: bool, jpeg: Vec<u8>) -> Self {
        FakeView {
            has_result,
            jpeg: Arc::new(jpeg),
            health: Mutex::new(Ok(())),
            latest_delay: Duration::ZERO,
            latest_calls: AtomicUsize::new(0),
            snapshot_calls: AtomicUsize::new(0),
            panic_in_health: AtomicBool::new(false),
            broken_json: AtomicBool::new(false),
            version: AtomicU64::new(1),
        }
    }

    fn with_result() -> Self {
        FakeView::new(true, test_jpeg())
    }
}

impl StatusView for FakeView {
    fn latest_json(&self, out: &mut Vec<u8>) {
        self.latest_calls.fetch_add(1, Ordering::SeqCst);
        if !self.latest_delay.is_zero() {
            thread::sleep(self.latest_delay);
        }
        if self.broken_json.load(Ordering::SeqCst) {
            out.extend_from_slice(b"{\"seq\":");
            return;
        }
        serde_json::to_writer(out, &latest_json(self.has_result)).expect("writing JSON to a Vec");
    }

    fn snapshot(&self) -> Option<(u64, Arc<Vec<u8>>)> {
        self.snapshot_calls.fetch_add(1, Ordering::SeqCst);
        self.has_result.then(|| (SEQ, Arc::clone(&self.jpeg)))
    }

    fn metrics(&self, out: &mut String) {
        out.push_str("# HELP camera_classifier_frames_total Frames captured.\n");
        out.push_str("# TYPE camera_classifier_frames_total counter\ncamera_classifier_frames_total 120\n");
    }

    fn health(&self) -> Result<(), String> {
        if self.panic_in_health.load(Ordering::SeqCst) {
            panic!("fake view: deliberate panic in health()");
        }
        self.health.lock().unwrap().clone()
    }

    fn version(&self) -> u64 {
        self.version.load(Ordering::SeqCst)
    }
}

/// The `/api/latest` document the daemon produces, before (`false`) or after its first result.
fn latest_json(has_result: bool) -> Value {
    let common = json!({
        "frame_seq": 57,
        "frame": {"format": "YUYV", "width": 640, "height": 480},
        "latency_ms": {"capture": 3.1, "preprocess": 1.2, "inference": 70.4, "postprocess": 0.01, "total": 75.0},
        "counters": {"frames": 120, "classified": 13, "bad_frames": 0, "dropped": 0},
        "fps": 5.2, "model": MODEL, "uptime_s": 123.4, "trigger": "continuous",
    });
    let mut doc = common.as_object().unwrap().clone();
    let specific = if has_result {
        let history: Vec<Value> = (1..=SEQ)
            .map(|seq| {
                let wobble = (seq % 4) as f64 * 1.5;
                json!({"seq": seq, "inference": 68.0 + wobble, "total": 73.0 + wobble * 1.3})
            })
            .collect();
        json!({
            "seq": SEQ, "time": "2026-11-27T10:00:00.123Z", "snapshot_seq": SEQ, "history": history,
            "top": [
                {"label": LABEL, "class": 281, "score": 0.83},
                {"label": "tiger cat", "class": 282, "score": 0.1},
                {"label": "Egyptian cat", "class": 285, "score": 0.04},
                {"label": "lynx", "class": 287, "score": 0.02},
                {"label": TRICKY_LABEL, "class": 999, "score": 0.01},
            ],
        })
    } else {
        json!({"seq": null, "time": null, "top": [], "history": [], "snapshot_seq": null})
    };
    doc.extend(specific.as_object().unwrap().clone());
    Value::Object(doc)
}

/// 160x120 JPEG: left half pure red, right half pure blue.
fn test_jpeg() -> Vec<u8> {
    let img = RgbImage::from_fn(160, 120, |x, _| if x < 80 { Rgb([255, 0, 0]) } else { Rgb([0, 0, 255]) });
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 95)
        .encode_image(&img)
        .expect("encoding JPEG");
    out
}

// ---------------------------------------------------------------------------------------------------
// A minimal HTTP client.

#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    fn content_length(&self) -> usize {
        self.header("Content-Length").expect("Content-Length header").parse().expect("numeric Content-Length")
    }

    /// Checks what every response must have; the body must be complete unless `head_only`. (hyper's
    /// own answers to unparseable requests have an empty body and no `nosniff`.)
    fn assert_well_formed(&self, head_only: bool) {
        if self.content_length() > 0 {
            assert_eq!(self.header("X-Content-Type-Options"), Some("nosniff"), "{self:?}");
        }
        assert!(self.header("Date").is_some_and(|d| d.ends_with(" GMT")), "{self:?}");
        let expected = if head_only { 0 } else { self.content_length() };
        assert_eq!(self.body.len(), expected, "body length vs Content-Length, head_only={head_only}");
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn parse_reply(bytes: &[u8]) -> Result<Reply, String> {
    let end =
        bytes.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(|| format!("no head end in {bytes:?}"))?;
    let head = std::str::from_utf8(&bytes[..end]).map_err(|e| format!("non-UTF-8 head: {e}"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    if parts.next() != Some("HTTP/1.1") {
        return Err(format!("bad status line {status_line:?}"));
    }
    let status =
        parts.next().and_then(|s| s.parse().ok()).ok_or_else(|| format!("bad status {status_line:?}"))?;
    let headers = lines
        .map(|line| {
            let (name, value) = line.split_once(':').ok_or_else(|| format!("bad header line {line:?}"))?;
            Ok((name.to_string(), value.trim().to_string()))
        })
        .collect::<Result<_, String>>()?;
    Ok(Reply { status, headers, body: bytes[end + 4..].to_vec() })
}

/// Reads until EOF. A reset after some data counts as the end: the server may close with unread input.
fn read_to_close(stream: &mut TcpStream, timeout: Duration) -> Result<Vec<u8>, String> {
    stream.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    let mut chunk = [0u8; 65536];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return Ok(out),
            Ok(n) => out.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset && !out.is_empty() => return Ok(out),
            Err(e) => return Err(format!("reading the reply after {} bytes: {e}", out.len())),
        }
    }
}

/// Reads one response: its head, then `Content-Length` bytes of body (none for a HEAD request), or
/// to the close when there is no length. The connection may stay open (keep-alive).
fn read_reply(stream: &mut TcpStream, head_only: bool, timeout: Duration) -> Result<Reply, String> {
    stream.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 65536];
    let mut read = |bytes: &mut Vec<u8>| match stream.read(&mut chunk) {
        Ok(0) => Ok(false),
        Ok(n) => {
            bytes.extend_from_slice(&chunk[..n]);
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset && !bytes.is_empty() => Ok(false),
        Err(e) => Err(format!("reading the reply after {} bytes: {e}", bytes.len())),
    };
    let head_end = loop {
        if let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        if !read(&mut bytes)? {
            return Err(format!(
                "connection closed before a complete head: {:?}",
                String::from_utf8_lossy(&bytes)
            ));
        }
    };
    let length = parse_reply(&bytes[..head_end])?.header("Content-Length").map(|n| n.parse::<usize>());
    match length {
        _ if head_only => {}
        Some(Ok(length)) => {
            while bytes.len() < head_end + length {
                if !read(&mut bytes)? {
                    break;
                }
            }
        }
        Some(Err(e)) => return Err(format!("bad Content-Length: {e}")),
        None => while read(&mut bytes)? {},
    }
    if let Some(Ok(length)) = length {
        // What follows belongs to the next response on this connection.
        bytes.truncate(head_end + if head_only { 0 } else { length });
    }
    parse_reply(&bytes)
}

fn try_exchange(addr: SocketAddr, request: &[u8]) -> Result<Reply, String> {
    let mut stream =
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| format!("connecting: {e}"))?;
    stream.write_all(request).map_err(|e| format!("sending the request: {e}"))?;
    read_reply(&mut stream, request.starts_with(b"HEAD "), Duration::from_secs(10))
}

fn exchange(addr: SocketAddr, request: &[u8]) -> Reply {
    try_exchange(addr, request)
        .unwrap_or_else(|e| panic!("request {:?}: {e}", String::from_utf8_lossy(request)))
}

fn get(addr: SocketAddr, path: &str) -> Reply {
    exchange(addr, format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes())
}

fn head(addr: SocketAddr, path: &str) -> Reply {
    exchange(addr, format!("HEAD {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes())
}

fn test_config() -> HttpConfig {
    let allowed_hosts = vec!["t".to_string(), "test".to_string()];
    HttpConfig { bind: "127.0.0.1:0".parse().unwrap(), allowed_hosts, ..HttpConfig::default() }
}

fn start(config: &HttpConfig, view: &Arc<FakeView>) -> (HttpServer, SocketAddr) {
    let server =
        HttpServer::start(config, Arc::clone(view) as Arc<dyn StatusView>).expect("starting the server");
    let addr = server.local_addr();
    (server, addr)
}

// ---------------------------------------------------------------------------------------------------
// 1. Routes.

#[test]
fn every_route_serves_its_content() {
    let _lock = shared_lock();
    let view = Arc::new(FakeView::with_result());
    let (server, addr) = start(&test_config(), &view);

    let page = get(addr, "/");
    page.assert_well_formed(false);
    assert_eq!((page.status, page.header("Content-Type")), (200, Some("text/html; charset=utf-8")));
    let html = page.text();
    for needle in
        ["<title>camera-classifier</title>", "id=\"frame\"", "id=\"top\"", "id=\"chart\"", "/api/latest"]
    {
        assert!(html.contains(needle), "page lacks {needle}");
    }

    let latest = get(addr, "/api/latest?cache=bust");
    latest.assert_well_formed(false);
    assert_eq!((latest.status, latest.header("Content-Type")), (200, Some("application/json")));
    assert_eq!(latest.header("Cache-Control"), Some("no-store"));
    let doc: Value = serde_json::from_slice(&latest.body).expect("/api/latest is JSON");
    assert_eq!(doc, latest_json(true));
    assert_eq!(doc["top"][0]["label"], LABEL);

    let snapshot = get(addr, "/snapshot.jpg?seq=12");
    snapshot.assert_well_formed(false);
    assert_eq!((snapshot.status, snapshot.header("Content-Type")), (200, Some("image/jpeg")));
    assert_eq!(snapshot.header("Cache-Control"), Some("no-store"));
    assert_eq!(snapshot.header("X-Result-Seq"), Some("12"));
    assert!(snapshot.body == *view.jpeg, "snapshot bytes differ from the view's JPEG");

    let metrics = get(addr, "/metrics");
    metrics.assert_well_formed(false);
    assert_eq!(metrics.status, 200);
    assert_eq!(metrics.header("Content-Type"), Some("text/plain; version=0.0.4; charset=utf-8"));
    assert!(metrics.text().contains("\ncamera_classifier_frames_total 120\n"), "{}", metrics.text());

    let health = get(addr, "/healthz");
    health.assert_well_formed(false);
    assert_eq!((health.status, health.text().as_str()), (200, "ok\n"));

    let missing = get(addr, "/nope");
    missing.assert_well_formed(false);
    assert_eq!(missing.status, 404);

    // HEAD: same status and Content-Length as GET, no body.
    for (path, get_reply) in
        [("/", &page), ("/api/latest", &latest), ("/snapshot.jpg", &snapshot), ("/metrics", &metrics)]
    {
        let reply = head(addr, path);
        reply.assert_well_formed(true);
        assert_eq!(reply.status, 200, "HEAD {path}");
        assert_eq!(reply.content_length(), get_reply.body.len(), "HEAD {path} Content-Length");
        assert_eq!(reply.header("Content-Type"), get_reply.header("Content-Type"), "HEAD {path}");
    }
    assert_eq!(head(addr, "/healthz").status, 200);
    assert!(view.latest_calls.load(Ordering::SeqCst) >= 2 && view.snapshot_calls.load(Ordering::SeqCst) >= 2);

    let stats = server.stats();
    assert_eq!((stats.responses(200), stats.responses(404), stats.bad_requests()), (10, 1, 1));
    server.shutdown();
}

#[test]
fn before_the_first_result_and_when_unhealthy() {
    let _lock = shared_lock();
    let view = Arc::new(FakeView::new(false, Vec::new()));
    let (server, addr) = start(&test_config(), &view);

    let snapshot = get(addr, "/snapshot.jpg");
    snapshot.assert_well_formed(false);
    assert_eq!((snapshot.status, snapshot.header("Retry-After")), (503, Some("1")));
    assert_eq!(snapshot.text(), "no frame yet\n");

    let doc: Value = serde_json::from_slice(&get(addr, "/api/latest").body).expect("JSON before a result");
    for null in ["seq", "time", "snapshot_seq"] {
        assert!(doc[null].is_null(), "{null} should be null: {doc}");
    }
    assert_eq!(
        (doc["top"].as_array().map(Vec::len), doc["history"].as_array().map(Vec::len)),
        (Some(0), Some(0))
    );
    assert_eq!(doc["model"], MODEL);

    *view.health.lock().unwrap() = Err("camera stalled for 12 s".into());
    let sick = get(addr, "/healthz");
    sick.assert_well_formed(false);
    assert_eq!(sick.status, 503);
    assert!(sick.text().contains("camera stalled for 12 s"), "{}", sick.text());
    *view.health.lock().unwrap() = Ok(());
    assert_eq!(get(addr, "/healthz").status, 200);
    server.shutdown();
}

#[test]
fn a_panicking_view_gets_500_and_the_worker_survives() {
    let _lock = shared_lock();
    let view = Arc::new(FakeView::with_result());
    let (server, addr) = start(&test_config(), &view);
    view.panic_in_health.store(true, Ordering::SeqCst);
    let reply = get(addr, "/healthz");
    reply.assert_well_formed(false);
    assert_eq!(reply.status, 500);
    view.panic_in_health.store(false, Ordering::SeqCst);
    assert_eq!(get(addr, "/healthz").status, 200, "the server must still be alive");
    server.shutdown();
}

#[test]
fn stats_are_exported_in_prometheus_format() {
    let _lock = shared_lock();
    let view = Arc::new(FakeView::with_result());
    let (server, addr) = start(&test_config(), &view);
    get(addr, "/healthz");
    get(addr, "/healthz");
    get(addr, "/missing");
    let stats = server.stats();
    let mut text = String::new();
    stats.write_metrics(&mut text);
    assert!(text.contains("\ncamera_classifier_http_requests_total{code=\"200\"} 2\n"), "{text}");
    assert!(text.contains("\ncamera_classifier_http_requests_total{code=\"404\"} 1\n"), "{text}");
    assert!(text.contains("\ncamera_classifier_http_bad_requests_total 1\n"), "{text}");
    assert!(text.contains("\ncamera_classifier_http_connections_total 3\n"), "{text}");
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (series, value) = line.rsplit_once(' ').expect("sample line");
        let name = series.split('{').next().unwrap();
        assert!(value.parse::<u64>().is_ok(), "{line}");
        assert!(text.contains(&format!("# TYPE {name} counter\n")), "no TYPE for {name}");
        assert!(text.contains(&format!("# HELP {name} ")), "no HELP for {name}");
    }
    server.shutdown();
}

#[test]
fn start_errors_name_what_failed() {
    let _lock = shared_lock();
    let view = Arc::new(FakeView::with_result());
    let (server, addr) = start(&test_config(), &view);
    let taken = HttpConfig { bind: addr, ..test_config() };
    let err = HttpServer::start(&taken, view.clone()).expect_err("binding a taken port must fail");
    assert!(err.to_string().starts_with(&format!("binding {addr}: ")), "{err}");
    assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
    let err =
        HttpServer::start(&HttpConfig { max_connections: 0, ..test_config() }, view.clone()).unwrap_err();
    assert!(err.to_string().contains("max_connections"), "{err}");
    server.shutdown();
}

// ---------------------------------------------------------------------------------------------------
// 2. Bad input.

#[test]
fn bad_input_gets_precise_statuses_and_the_server_keeps_serving() {
    let _lock = shared_lock();
    let view = Arc::new(FakeView::with_result());
    let (server, addr) = start(&test_config(), &view);
    let big_header = format!("GET / HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n", "a".repeat(20 * 1024));
    let long_target = format!("GET /{} HTTP/1.1\r\nHost: t\r\n\r\n", "a".repeat(5 * 1024));
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("garbage line", b"garbage\r\n\r\n".to_vec(), 400),
        ("POST with body", b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello".to_vec(), 405),
        ("DELETE", b"DELETE /metrics HTTP/1.1\r\nHost: t\r\n\r\n".to_vec(), 405),
        ("20 KB header", big_header.into_bytes(), 431),
        ("5 KB target", long_target.into_bytes(), 414),
        // hyper's parser: a version other than HTTP/1.x is a malformed HTTP/1 request.
        ("HTTP/2.0", b"GET / HTTP/2.0\r\nHost: t\r\n\r\n".to_vec(), 400),
        ("GET with body", b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n0123456789".to_vec(), 413),
        (
            "chunked GET",
            b"GET / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(),
            413,
        ),
        ("unknown path", b"GET /etc/passwd HTTP/1.1\r\nHost: t\r\n\r\n".to_vec(), 404),
        ("non-UTF-8 target", b"GET /\xff\xfe HTTP/1.1\r\nHost: t\r\n\r\n".to_vec(), 400),
        ("control byte in target", b"GET /a\x07b HTTP/1.1\r\nHost: t\r\n\r\n".to_vec(), 400),
        ("absolute-form target", b"GET http://t/ HTTP/1.1\r\nHost: t\r\n\r\n".to_vec(), 400),
        ("no Host in HTTP/1.1", b"GET / HTTP/1.1\r\n\r\n".to_vec(), 400),
        ("two Hosts", b"GET / HTTP/1.1\r\nHost: t\r\nHost: u\r\n\r\n".to_vec(), 400),
        ("DNS rebinding", b"GET /snapshot.jpg HTTP/1.1\r\nHost: evil.example.com:8080\r\n\r\n".to_vec(), 421),
        (
            "binary junk",
            vec![0x16, 0x03, 0x01, 0x00, 0xa5, 0x01, 0x00, 0x00, b'\r', b'\n', b'\r', b'\n'],
            400,
        ),
    ];
    for (what, request, expected) in &cases {
        let reply = exchange(addr, request);
        reply.assert_well_formed(false);
        assert_eq!(reply.status, *expected, "{what}: {}", reply.text());
        if *expected == 405 {
            assert_eq!(reply.header("Allow"), Some("GET, HEAD"), "{what}");
        }
    }
    // Bare LF line endings are accepted; so are IP addresses, localhost and configured names.
    assert_eq!(exchange(addr, b"GET /healthz HTTP/1.1\nHost: t\n\n").status, 200);
    for host in ["localhost:8080", "127.0.0.1", "[::1]:8080", "T"] {
        let request = format!("GET /healthz HTTP/1.1\r\nHost: {host}\r\n\r\n");
        assert_eq!(exchange(addr, request.as_bytes()).status, 200, "Host: {host}");
    }
    // A complete request followed by the client's half-close still gets its answer (found by the
    // `http` fuzz target: hyper's default drops the response on the EOF).
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").unwrap();
    stream.shutdown(Shutdown::Write).unwrap();
    let reply = parse_reply(&read_to_close(&mut stream, Duration::from_secs(5)).unwrap()).unwrap();
    assert_eq!((reply.status, reply.text().as_str()), (200, "ok\n"));
    // The HTTP/2 preface: this server speaks HTTP/1.1 only; hyper closes without an answer.
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").unwrap();
    assert_eq!(read_to_close(&mut stream, Duration::from_secs(5)), Ok(Vec::new()));
    // A head cut short by the client's EOF gets 400 (the client may still read).
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.write_all(b"GET /healthz HT").unwrap();
    stream.shutdown(Shutdown::Write).unwrap();
    let reply = parse_reply(&read_to_close(&mut stream, Duration::from_secs(5)).unwrap()).unwrap();
    assert_eq!(reply.status, 400);

    let health = get(addr, "/healthz");
    assert_eq!((health.status, health.text().as_str()), (200, "ok\n"));
    let stats = server.stats();
    // + the head cut short, + the HTTP/2 preface (refused without an answer).
    let client_errors = cases.iter().filter(|(_, _, code)| (400..500).contains(code)).count() as u64 + 2;
    assert_eq!(stats.bad_requests(), client_errors);
    assert_eq!((stats.responses(431), stats.responses(414), stats.responses(421)), (1, 1, 1));
    server.shutdown();
}

// ---------------------------------------------------------------------------------------------------
// 3. Many concurrent clients.

#[test]
fn many_concurrent_clients_get_complete_answers_from_one_thread() {
    const CLIENTS: usize = 200;
    let _lock = exclusive_lock();
    assert_eq!(server_threads(), 0, "a server of another test is still running");
    let view = Arc::new(FakeView::with_result());
    let config = test_config();
    let (server, addr) = start(&config, &view);
    assert_eq!(started_server_threads(1), 1);

    let barrier = Arc::new(Barrier::new(CLIENTS + 1));
    let finished = Arc::new(AtomicUsize::new(0));
    let clients: Vec<JoinHandle<Result<Reply, String>>> = (0..CLIENTS)
        .map(|_| {
            let (barrier, finished) = (Arc::clone(&barrier), Arc::clone(&finished));
            thread::spawn(move || {
                barrier.wait();
                let reply = try_exchange(addr, b"GET /api/latest HTTP/1.1\r\nHost: t\r\n\r\n");
                finished.fetch_add(1, Ordering::SeqCst);
                reply
            })
        })
        .collect();
    barrier.wait();
    let started = Instant::now();
    let mut thread_samples = Vec::new();
    while finished.load(Ordering::SeqCst) < CLIENTS && started.elapsed() < Duration::from_secs(30) {
        thread_samples.push(server_threads());
        thread::sleep(Duration::from_millis(2));
    }
    let elapsed = started.elapsed();
    let (mut ok, mut busy, mut failures) = (0u64, 0u64, Vec::new());
    for client in clients {
        match client.join().expect("client thread") {
            Ok(reply) if reply.status == 200 && reply.body.len() == reply.content_length() => {
                serde_json::from_slice::<Value>(&reply.body).expect("complete JSON");
                ok += 1;
            }
            // All from one address: beyond max_connections_per_client fresh connections (none idle
            // long enough to be evicted) a client is told to retry.
            Ok(reply) if reply.status == 503 && reply.header("Retry-After") == Some("1") => {
                reply.assert_well_formed(false);
                busy += 1;
            }
            Ok(reply) => failures.push(format!("unexpected reply {} {:?}", reply.status, reply.headers)),
            Err(e) => failures.push(e),
        }
    }
    println!(
        "{CLIENTS} clients: {ok} × 200, {busy} × 503 in {elapsed:?}; thread samples {}",
        thread_samples.len()
    );
    assert!(
        failures.is_empty(),
        "{} clients failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
    assert!(!thread_samples.is_empty());
    assert!(thread_samples.iter().all(|&n| n == 1), "server threads: {thread_samples:?}");
    assert!(ok >= config.max_connections_per_client as u64, "{ok} served, {busy} rejected");
    let stats = server.stats();
    assert_eq!((stats.responses(200), stats.rejected(), stats.connections()), (ok, busy, CLIENTS as u64));
    server.shutdown();
    assert_eq!(server_threads(), 0, "shutdown must join every thread");
}

#[test]
fn keep_alive_serves_several_requests_on_one_connection() {
    let _lock = shared_lock();
    let view = Arc::new(FakeView::with_result());
    let (server, addr) = start(&test_config(), &view);
    let mut stream = TcpStream::connect(addr).unwrap();
    for path in ["/healthz", "/api/latest", "/snapshot.jpg", "/nope", "/healthz"] {
        stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes()).unwrap();
        let reply = read_reply(&mut stream, false, Duration::from_secs(5)).expect(path);
        reply.assert_well_formed(false);
        assert_eq!(reply.status, if path == "/nope" { 404 } else { 200 }, "{path}");
        assert_eq!(reply.header("Connection"), None, "{path}: the connection stays open");
    }
    // Two requests in one write (pipelined): two answers, in order; the second asks to close.
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\nHEAD /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let both = read_to_close(&mut stream, Duration::from_secs(5)).unwrap();
    let second = both.windows(9).rposition(|w| w == b"HTTP/1.1 ").expect("two answers");
    let (first, second) = (parse_reply(&both[..second]).unwrap(), parse_reply(&both[second..]).unwrap());
    assert_eq!((first.status, first.text().as_str()), (200, "ok\n"));
    assert_eq!((second.status, second.body.len(), second.header("Connection")), (200, 0, Some("close")));
    let stats = server.stats();
    assert_eq!((stats.connections(), stats.responses(200)), (1, 6));
    server.shutdown();
}

// ---------------------------------------------------------------------------------------------------
// 4. Slow and idle clients.

/// A client that sends its request head one byte per 100 ms and never finishes it.
struct Dribbler {
    stream: TcpStream,
    connected: Instant,
    writer: JoinHandle<()>,
}

impl Dribbler {
    fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).expect("connecting");
        let connected = Instant::now();
        let mut writer = stream.try_clone().unwrap();
        let writer = thread::spawn(move || {
            let mut bytes = b"GET / HTTP/1.1\r\nHost: t\r\nX-Slow: ".iter().chain(std::iter::repeat(&b'a'));
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(5) {
                let byte = *bytes.next().unwrap();
                if writer.write_all(&[byte]).is_err() {
                    return;
                }
                thread::sleep(Duration::from_millis(100));
            }
        });
        Dribbler { stream, connected, writer }
    }

    /// The server's answer and when it came, counted from the connect, and the writer thread (it
    /// stops at its next failed write; join it after reading every answer, or the wait for it delays
    /// the next reading).
    fn answer(mut self) -> (Reply, Duration, JoinHandle<()>) {
        let bytes = read_to_close(&mut self.stream, Duration::from_secs(5)).expect("slow client's answer");
        let elapsed = self.connected.elapsed();
        let _ = self.stream.shutdown(Shutdown::Both);
        (parse_reply(&bytes).expect("an HTTP answer"), elapsed, self.writer)
    }
}

#[test]
fn slowloris_clients_get_408_while_the_page_is_served() {
    const SLOW: usize = 30;
    let _lock = shared_lock();
    let request_timeout = Duration::from_millis(500);
    let config = HttpConfig { request_timeout, ..test_config() };
    let view = Arc::new(FakeView::with_result());
    let (server, addr) = start(&config, &view);

    let slow: Vec<Dribbler> = (0..SLOW).map(|_| Dribbler::connect(addr)).collect();
    thread::sleep(Duration::from_millis(100));

    // Guarantee 1: while they are held, the page and its API are served at once.
    for path in ["/", "/api/latest", "/healthz"] {
        let asked = Instant::now();
        let reply = get(addr, path);
        assert_eq!(reply.status, 200, "{path}: {}", reply.text());
        assert!(asked.elapsed() < Duration::from_millis(300), "{path} took {:?}", asked.elapsed());
    }

    // Guarantee 2: every slow client gets 408 about request_timeout after its connect.
    let mut writers = Vec::new();
    for (i, dribbler) in slow.into_iter().enumerate() {
        let (reply, elapsed, writer) = dribbler.answer();
        writers.push(writer);
        assert_eq!(reply.status, 408, "slow client {i}: {}", reply.text());
        reply.assert_well_formed(false);
        assert_eq!(reply.header("Connection"), Some("close"));
        assert!(
            elapsed >= request_timeout - Duration::from_millis(20)
                && elapsed <= request_timeout + Duration::from_millis(400),
            "slow client {i} answered after {elapsed:?}"
        );
    }
    writers.into_iter().for_each(|w| w.join().unwrap());
    let stats = server.stats();
    assert_eq!((stats.timed_out(), stats.responses(408), stats.rejected()), (SLOW as u64, SLOW as u64, 0));
    server.shutdown();
}

/// Raises this process's open-file limit towards `needed` (the tests hold both ends of every
/// connection), up to the hard limit; returns the limit now in force.
fn raise_fd_limit(needed: u64) -> u64 {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit read and write the struct passed; no other memory is touched.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        if limit.rlim_cur < needed {
            limit.rlim_cur = limit.rlim_max.min(needed);
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
    }
    limit.rlim_cur
}

#[test]
fn a_thousand_idle_connections_do_not_make_the_page_unavailable() {
    let _lock = shared_lock();
    // 1,000 client sockets, up to max_connections + 192 refusing on the server side, and the
    // other tests' sockets.
    let limit = raise_fd_limit(4096);
    let idle: usize = if limit >= 2048 { 1000 } else { (limit as usize).saturating_sub(700).max(100) };
    if idle < 1000 {
        println!("open-file limit {limit} (hard): holding {idle} idle connections instead of 1,000");
    }
    let view = Arc::new(FakeView::with_result());
    let config = test_config();
    let (server, addr) = start(&config, &view);
    let started = Instant::now();
    let mut held = Vec::with_capacity(idle);
    for i in 0..idle {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
            Ok(stream) => held.push(stream),
            Err(e) => panic!("connection {i}: {e}"),
        }
    }
    let opened = started.elapsed();
    // Idle long enough to be evictable; the connections stay open on this side.
    thread::sleep(Duration::from_millis(400));
    let mut worst = Duration::ZERO;
    for path in ["/", "/api/latest", "/snapshot.jpg", "/healthz"] {
        let asked = Instant::now();
        let reply = get(addr, path);
        worst = worst.max(asked.elapsed());
        assert_eq!(reply.status, 200, "{path} with {idle} idle connections: {}", reply.text());
        reply.assert_well_formed(false);
    }
    let stats = server.stats();
    println!(
        "{idle} idle connections opened in {opened:?}; page requests answered in at most {worst:?}; \
         {} evicted, {} refused",
        stats.evicted(),
        stats.rejected()
    );
    assert!(worst < Duration::from_millis(500), "slowest page request {worst:?}");
    // The server held at most max_connections (per client) at once: the rest was evicted or refused.
    assert!(stats.evicted() + stats.rejected() >= (idle - config.max_connections_per_client) as u64);
    assert!(stats.evicted() >= 1, "the page request evicted no idle connection");
    drop(held);
    server.shutdown();
}

#[test]
fn connections_busy_with_a_response_are_not_evicted_and_the_newcomer_gets_503() {
    let _lock = shared_lock();
    let config = HttpConfig { max_connections: 3, max_event_streams: 3, ..test_config() };
    let view = Arc::new(FakeView::with_result());
    let (server, addr) = start(&config, &view);
    // Three event streams: responses in progress, so the connections are never idle.
    let streams: Vec<TcpStream> = (0..3)
        .map(|_| {
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(b"GET /events HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
            let mut first = [0u8; 64];
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let n = s.read(&mut first).unwrap();
            assert!(
                first[..n].starts_with(b"HTTP/1.1 200 OK\r\n"),
                "{:?}",
                String::from_utf8_lossy(&first[..n])
            );
            s
        })
        .collect();
    thread::sleep(Duration::from_millis(400));
    let asked = Instant::now();
    let busy = get(addr, "/healthz");
    assert_eq!((busy.status, busy.header("Retry-After")), (503, Some("1")), "{}", busy.text());
    assert!(asked.elapsed() < Duration::from_millis(400), "503 took {:?}", asked.elapsed());
    drop(streams);
    // The streams' connections close; their slots come back.
    let started = Instant::now();
    while get(addr, "/healthz").status != 200 {
        assert!(started.elapsed() < Duration::from_secs(3), "slots not released");
        thread::sleep(Duration::from_millis(20));
    }
    let stats = server.stats();
    assert!(stats.rejected() >= 1 && stats.evicted() == 0, "{stats:?}");
    server.shutdown();
}

// ---------------------------------------------------------------------------------------------------
// 5. Server-sent events.

#[test]
fn events_push_each_change_and_refresh_when_nothing_changes() {
    let _lock = shared_lock();
    let view = Arc::new(FakeView::with_result());
    let (server, addr) = start(&test_config(), &view);
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.write_all(b"GET /events HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut received = Vec::new();
    // Reads until `count` complete events ("\n\n"-terminated data blocks) have arrived.
    let mut events_until = |count: usize, received: &mut Vec<u8>| -> Vec<Value> {
        let mut chunk = [0u8; 65536];
        loop {
            let text = String::from_utf8_lossy(received).into_owned();
            let body = text.split_once("\r\n\r\n").map_or("", |(_, body)| body).to_string();
            let events: Vec<Value> = body
                .split("\n\n")
                .filter_map(|block| block.lines().find_map(|l| l.strip_prefix("data: ")))
                .map(|data| serde_json::from_str(data).expect("each event is the JSON of /api/latest"))
                .collect();
            if events.len() >= count {
                return events;
            }
            let n = stream.read(&mut chunk).expect("reading events");
            assert!(n > 0, "the stream ended");
            received.extend_from_slice(&chunk[..n]);
        }
    };
    let first = events_until(1, &mut received);
    assert_eq!(first[0], latest_json(true));
    let head = String::from_utf8_lossy(&received).into_owned();
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.to_ascii_lowercase().contains("content-type: text/event-stream"), "{head}");
    assert!(head.contains("retry: 2000\n"), "{head}");

    // A change is pushed within a few ticker periods (a refresh may come first; it is as good).
    let changed = Instant::now();
    view.version.fetch_add(1, Ordering::SeqCst);
    let after_change = events_until(2, &mut received);
    let push = changed.elapsed();
    assert!(push < Duration::from_millis(300), "a change took {push:?} to be pushed");
    assert_eq!(after_change[1], latest_json(true));
    // With no change, a full event every EVENT_REFRESH.
    events_until(3, &mut received);
    let third = Instant::now();
    events_until(4, &mut received);
    let refresh = third.elapsed();
    assert!(
        refresh >= EVENT_REFRESH - Duration::from_millis(300)
            && refresh < EVENT_REFRESH + Duration::from_millis(500),
        "{refresh:?}"
    );
    println!("events: change pushed after {push:?}, refresh after {refresh:?}");
    assert_eq!(server.stats().event_streams(), 1);
    server.shutdown();
}

#[test]
fn a_client_that_stops_reading_is_dropped_after_the_write_timeout() {
    let _lock = shared_lock();
    // Much larger than the loopback socket buffers (a few MB), so the write really blocks.
    let big = vec![0xA5u8; 32 << 20];
    let write_timeout = Duration::from_millis(300);
    let config = HttpConfig { write_timeout, ..test_config() };
    let view = Arc::new(FakeView::new(true, big));
    let (server, addr) = start(&config, &view);

    let mut stalled = TcpStream::connect(addr).unwrap();
    stalled.write_all(b"GET /snapshot.jpg HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    thread::sleep(Duration::from_millis(100));

    // The stalled response blocks nobody else.
    let asked = Instant::now();
    assert_eq!(get(addr, "/healthz").status, 200);
    assert!(
        asked.elapsed() < Duration::from_millis(300),
        "took {:?} next to a stalled client",
        asked.elapsed()
    );
    // It is dropped once its write has made no progress for write_timeout.
    let started = Instant::now();
    while server.stats().write_errors() == 0 {
        assert!(started.elapsed() < write_timeout * 2 + Duration::from_secs(1), "never dropped");
        thread::sleep(Duration::from_millis(10));
    }
    let dropped = started.elapsed() + Duration::from_millis(100);
    assert!(dropped >= write_timeout, "dropped after {dropped:?}, before the write timeout");
    assert_eq!(server.stats().write_errors(), 1);

    // The stalled client, reading at last, finds its response cut short.
    let received = read_to_close(&mut stalled, Duration::from_secs(5)).expect("reading the stalled response");
    assert!(
        received.len() < view.jpeg.len(),
        "got {} bytes, the whole body is {}",
        received.len(),
        view.jpeg.len()
    );
    assert!(received.starts_with(b"HTTP/1.1 200 OK\r\n"));
    server.shutdown();
}

// ---------------------------------------------------------------------------------------------------
// 6. Shutdown.

#[test]
fn shutdown_is_prompt_with_idle_and_stalled_connections() {
    let _lock = exclusive_lock();
    assert_eq!(server_threads(), 0, "a server of another test is still running");
    // Default timeouts (5 s head, 10 s write): shutdown must not wait for them.
    let config = test_config();
    let view = Arc::new(FakeView::new(true, vec![0x5A; 32 << 20]));
    let (server, addr) = start(&config, &view);
    assert_eq!(started_server_threads(1), 1);

    let mut stalled = TcpStream::connect(addr).unwrap();
    stalled.write_all(b"GET /snapshot.jpg HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let mut events = TcpStream::connect(addr).unwrap();
    events.write_all(b"GET /events HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let mut idle: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(addr).unwrap()).collect();
    thread::sleep(Duration::from_millis(200));

    let started = Instant::now();
    server.shutdown();
    let took = started.elapsed();
    assert!(took < Duration::from_secs(1), "shutdown took {took:?}");
    assert_eq!(server_threads(), 0, "shutdown must join every thread");
    for stream in &mut idle {
        let closed = read_to_close(stream, Duration::from_secs(1));
        assert!(closed.as_ref().is_ok_and(Vec::is_empty) || closed.is_err_and(|e| e.contains("reset")));
    }
    let events = read_to_close(&mut events, Duration::from_secs(1));
    assert!(events.is_ok() || events.is_err_and(|e| e.contains("reset")), "the event stream ends");
    drop(stalled);
    assert!(TcpStream::connect(addr).is_err(), "still accepting after shutdown");

    // Dropping the server stops it too.
    let (server, addr) = start(&config, &view);
    let _idle = TcpStream::connect(addr).unwrap();
    thread::sleep(Duration::from_millis(50));
    let started = Instant::now();
    drop(server);
    assert!(started.elapsed() < Duration::from_secs(1), "drop took {:?}", started.elapsed());
    assert_eq!(server_threads(), 0);
    assert!(TcpStream::connect(addr).is_err(), "still accepting after drop");
}

// ---------------------------------------------------------------------------------------------------
// 7. The page in a real browser.

#[test]
fn the_page_renders_in_headless_chromium() {
    let _lock = shared_lock();
    let Some(chromium) = chromium_path() else { return };
    let view = Arc::new(FakeView::with_result());
    // Headless Chromium's virtual time stands still while a request is pending, as an event stream
    // always is: streams that end after 1 s (the page reconnects) let its 5 s budget run out.
    let config = HttpConfig { event_stream_lifetime: Duration::from_secs(1), ..test_config() };
    let (server, addr) = start(&config, &view);
    let url = format!("http://{addr}/");
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let work = std::env::temp_dir().join(format!("fw-http-browser-{}-{nanos}", std::process::id()));
    fs::create_dir_all(&work).unwrap();

    let shot_path = work.join("shot.png");
    let shot_time =
        run_chromium(&chromium, &work, "screenshot", &format!("--screenshot={}", shot_path.display()), &url);
    let (latest_calls, snapshot_calls) =
        (view.latest_calls.load(Ordering::SeqCst), view.snapshot_calls.load(Ordering::SeqCst));
    assert!(latest_calls > 0, "the page never fetched /api/latest");
    assert!(snapshot_calls > 0, "the page never fetched /snapshot.jpg");

    let dom_time = run_chromium(&chromium, &work, "dom", "--dump-dom", &url);
    let dom = fs::read_to_string(work.join("dom.stdout")).expect("reading the dumped DOM");
    println!("browser: screenshot run {shot_time:?}, DOM run {dom_time:?}; /api/latest × {latest_calls}");
    println!("screenshot: {}", shot_path.display());
    if let Some(dir) = std::env::var_os("BIT_SCREENSHOT_DIR") {
        let copy = Path::new(&dir).join("camera-classifier-page.png");
        fs::create_dir_all(&dir).unwrap();
        fs::copy(&shot_path, &copy).expect("copying the screenshot to BIT_SCREENSHOT_DIR");
        println!("screenshot copied to {}", copy.display());
    }

    assert!(dom.contains(LABEL), "the DOM lacks the label {LABEL:?}: {dom}");
    assert!(dom.contains("&lt;b&gt;x&lt;/b&gt;"), "the tricky label is not shown as text");
    assert!(!dom.contains("<b>x</b>"), "label text became markup");
    assert!(dom.contains(MODEL), "the status line lacks the model name");
    assert!(dom.contains("src=\"/snapshot.jpg?seq=12\""), "the frame was not swapped in");
    assert!(dom.contains(">live</span>"), "the page does not report itself live");

    let shot = image::open(&shot_path).expect("decoding the screenshot").to_rgb8();
    let (red, red_x) = count_pixels(&shot, |p| p[0] > 200 && p[1] < 60 && p[2] < 60);
    let (blue, blue_x) = count_pixels(&shot, |p| p[2] > 200 && p[0] < 60 && p[1] < 60);
    println!(
        "screenshot {}x{}: {red} red px (mean x {red_x:.0}), {blue} blue px (mean x {blue_x:.0})",
        { shot.width() },
        shot.height()
    );
    assert!(red > 5000 && blue > 5000, "the frame is not visible: {red} red, {blue} blue pixels");
    assert!(red_x < blue_x, "red should be left of blue");
    let stats = server.stats();
    assert_eq!(stats.bad_requests(), 0, "the page made a request the server rejected");
    assert!(stats.event_streams() >= 2, "the page did not open /events ({})", stats.event_streams());

    // When /api/latest fails, the page says so and keeps polling.
    view.broken_json.store(true, Ordering::SeqCst);
    let calls_before = view.latest_calls.load(Ordering::SeqCst);
    let broken_time = run_chromium(&chromium, &work, "broken", "--dump-dom", &url);
    let dom = fs::read_to_string(work.join("broken.stdout")).expect("reading the dumped DOM");
    let polls = view.latest_calls.load(Ordering::SeqCst) - calls_before;
    println!("browser: broken-JSON run {broken_time:?}, /api/latest × {polls}");
    assert!(dom.contains(">disconnected</span>"), "no 'disconnected' shown: {dom}");
    assert!(polls >= 3, "the page stopped polling after an error ({polls} polls)");
    server.shutdown();
}
