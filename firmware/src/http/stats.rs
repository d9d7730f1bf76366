//! The status server's counters, updated with atomics and readable from any thread.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// Status codes that the server sends, in the order they appear in the metrics.
pub(super) const CODES: [u16; 12] = [200, 400, 404, 405, 408, 413, 414, 421, 431, 500, 503, 505];

/// Counters of the status server.
#[derive(Debug, Default)]
pub struct HttpStats {
    responses: [AtomicU64; CODES.len()],
    connections: AtomicU64,
    rejected: AtomicU64,
    evicted: AtomicU64,
    timed_out: AtomicU64,
    bad: AtomicU64,
    write_errors: AtomicU64,
    event_streams: AtomicU64,
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

    /// Connections answered with 503 because the connection limits were reached and none could be
    /// evicted, or because too many `/events` streams were open.
    pub fn rejected(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }

    /// Idle connections closed to make room for a new one.
    pub fn evicted(&self) -> u64 {
        self.evicted.load(Ordering::Relaxed)
    }

    /// Connections closed because a request head did not arrive within the request timeout (with a
    /// 408 when part of a head had come).
    pub fn timed_out(&self) -> u64 {
        self.timed_out.load(Ordering::Relaxed)
    }

    /// Responses with a 4xx status, and requests refused without an answer (the HTTP/2 preface).
    pub fn bad_requests(&self) -> u64 {
        self.bad.load(Ordering::Relaxed)
    }

    /// Connections dropped because the client stopped reading (no write progress within the write
    /// timeout) or went away mid-response.
    pub fn write_errors(&self) -> u64 {
        self.write_errors.load(Ordering::Relaxed)
    }

    /// `/events` streams opened.
    pub fn event_streams(&self) -> u64 {
        self.event_streams.load(Ordering::Relaxed)
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
                "Connections answered 503 at the connection or event-stream limits.",
            ),
            ("evicted", self.evicted(), "Idle HTTP connections closed to make room for a new one."),
            (
                "timeouts",
                self.timed_out(),
                "Connections closed because a request head did not arrive in time.",
            ),
            ("bad_requests", self.bad_requests(), "HTTP requests refused as malformed or not allowed."),
            (
                "write_errors",
                self.write_errors(),
                "HTTP responses abandoned because the client stopped reading.",
            ),
            ("event_streams", self.event_streams(), "Server-sent event streams (/events) opened."),
        ];
        for (what, value, help) in counters {
            let name = format!("camera_classifier_http_{what}_total");
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}");
        }
    }

    /// Counts one response with status `code`.
    pub(super) fn record(&self, code: u16) {
        if let Some(i) = CODES.iter().position(|&c| c == code) {
            self.responses[i].fetch_add(1, Ordering::Relaxed);
        }
        if (400..500).contains(&code) {
            self.bad.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A request refused without a response.
    pub(super) fn refused_silently(&self) {
        self.bad.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn connection(&self) {
        self.connections.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn reject(&self) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn evict(&self) {
        self.evicted.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn time_out(&self) {
        self.timed_out.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn write_error(&self) {
        self.write_errors.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn event_stream(&self) {
        self.event_streams.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_count_by_code_and_class() {
        let stats = HttpStats::default();
        for code in [200, 200, 404, 421, 503, 799] {
            stats.record(code);
        }
        stats.refused_silently();
        assert_eq!((stats.responses(200), stats.responses(404), stats.responses(799)), (2, 1, 0));
        assert_eq!(stats.bad_requests(), 3);
        let mut text = String::new();
        stats.write_metrics(&mut text);
        assert!(text.contains("\ncamera_classifier_http_requests_total{code=\"421\"} 1\n"), "{text}");
        assert!(text.contains("\ncamera_classifier_http_bad_requests_total 3\n"), "{text}");
    }
}
