//! What a request gets: the server's rules (method, `Host`, no body, origin-form target), the routes,
//! and the response bodies.

use std::fmt::Write as _;
use std::panic::{self, AssertUnwindSafe};
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Version};
use log::warn;

use super::body::{ConnState, InFlight, Reply};
use super::events::Hub;
use super::hosts::Hosts;
use super::{HttpConfig, HttpStats, StatusView};

/// What answering a request needs; one per server, on its thread.
pub(super) struct Ctx {
    pub config: HttpConfig,
    pub view: Arc<dyn StatusView>,
    pub stats: Arc<HttpStats>,
    pub hosts: Hosts,
    pub events: Rc<Hub>,
}

/// The status page, one self-contained HTML file.
const PAGE: &str = include_str!("page.html");
/// Longest accepted request target, in bytes; longer → 414.
pub const MAX_TARGET: usize = 2048;
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'unsafe-inline'; \
     style-src 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'";
const TEXT: &str = "text/plain; charset=utf-8";

/// The snapshot, shared with the daemon without a copy.
struct SharedJpeg(Arc<Vec<u8>>);

impl AsRef<[u8]> for SharedJpeg {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// A response being built; the common headers are added by [`finish`].
struct Answer {
    status: u16,
    content_type: &'static str,
    cache_control: &'static str,
    extra: Vec<(&'static str, String)>,
    body: Bytes,
    close: bool,
}

impl Answer {
    fn new(status: u16, content_type: &'static str, body: Bytes) -> Answer {
        Answer { status, content_type, cache_control: "no-store", extra: Vec::new(), body, close: false }
    }

    fn text(status: u16, text: impl Into<String>) -> Answer {
        Answer::new(status, TEXT, Bytes::from(text.into()))
    }

    /// An error answer after which the connection closes (its request may still carry a body).
    fn refusal(status: u16, text: &str) -> Answer {
        Answer { close: true, ..Answer::text(status, text) }
    }

    fn header(mut self, name: &'static str, value: impl Into<String>) -> Answer {
        self.extra.push((name, value.into()));
        self
    }
}

/// Answers one request. Never panics: a panic in the view becomes a 500.
pub(super) fn handle<B>(ctx: &Ctx, state: &Rc<ConnState>, request: &Request<B>) -> Response<Reply> {
    let in_flight = InFlight::new(state);
    let answer = match check(ctx, request) {
        Err(refusal) => refusal,
        Ok(route) => {
            if route == "/events" && request.method() == Method::GET {
                match ctx.events.open(&*ctx.view, &ctx.stats, in_flight) {
                    Ok(response) => {
                        ctx.stats.record(200);
                        return response;
                    }
                    Err(in_flight) => {
                        ctx.stats.reject();
                        let answer = Answer::text(503, "too many event streams\n").header("Retry-After", "5");
                        return finish(ctx, request.method() == Method::HEAD, answer, in_flight);
                    }
                }
            }
            let view = &*ctx.view;
            panic::catch_unwind(AssertUnwindSafe(|| route_to(view, route))).unwrap_or_else(|_| {
                warn!("HTTP server: the status view panicked while serving {route}");
                Answer::text(500, "internal error\n")
            })
        }
    };
    finish(ctx, request.method() == Method::HEAD, answer, in_flight)
}

/// The server's rules; Ok(path) when the request may be routed.
fn check<'r, B>(ctx: &Ctx, request: &'r Request<B>) -> Result<&'r str, Answer> {
    let method = request.method();
    if method != Method::GET && method != Method::HEAD {
        return Err(Answer::refusal(405, "method not allowed\n").header("Allow", "GET, HEAD"));
    }
    let mut hosts = request.headers().get_all(header::HOST).iter();
    let host = match (hosts.next(), hosts.next()) {
        (Some(host), None) => Some(host),
        (None, None) if request.version() == Version::HTTP_10 => None,
        _ => return Err(Answer::refusal(400, "bad request: HTTP/1.1 needs exactly one Host header\n")),
    };
    if let Some(host) = host
        && !host.to_str().is_ok_and(|h| ctx.hosts.allows(h))
    {
        return Err(Answer::refusal(
            421,
            "misdirected request: this host name is not served here (add it to http.allowed_hosts)\n",
        ));
    }
    let announced = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .is_some_and(|n| n.to_str().ok().and_then(|n| n.parse::<u64>().ok()) != Some(0));
    if announced || request.headers().contains_key(header::TRANSFER_ENCODING) {
        return Err(Answer::refusal(413, "content too large: GET and HEAD requests take no body\n"));
    }
    let uri = request.uri();
    if uri.scheme().is_some() || uri.authority().is_some() || !uri.path().starts_with('/') {
        return Err(Answer::refusal(400, "bad request: the target must start with /\n"));
    }
    if uri.path_and_query().map_or(0, |p| p.as_str().len()) > MAX_TARGET {
        return Err(Answer::refusal(414, "URI too long\n"));
    }
    Ok(uri.path())
}

fn route_to(view: &dyn StatusView, path: &str) -> Answer {
    match path {
        "/" => {
            let mut page = Answer::new(200, "text/html; charset=utf-8", Bytes::from_static(PAGE.as_bytes()));
            page.cache_control = "no-cache";
            page.header("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        }
        "/api/latest" => {
            let mut json = Vec::with_capacity(2048);
            view.latest_json(&mut json);
            Answer::new(200, "application/json", Bytes::from(json))
        }
        "/snapshot.jpg" => match view.snapshot() {
            Some((seq, jpeg)) => Answer::new(200, "image/jpeg", Bytes::from_owner(SharedJpeg(jpeg)))
                .header("X-Result-Seq", seq.to_string()),
            None => Answer::text(503, "no frame yet\n").header("Retry-After", "1"),
        },
        "/metrics" => {
            let mut text = String::with_capacity(4096);
            view.metrics(&mut text);
            Answer::new(200, "text/plain; version=0.0.4; charset=utf-8", Bytes::from(text))
        }
        "/healthz" => match view.health() {
            Ok(()) => Answer::text(200, "ok\n"),
            Err(reason) => Answer::text(503, format!("unhealthy: {reason}\n")),
        },
        _ => Answer::text(404, "not found\n"),
    }
}

/// Adds the headers every response carries and counts it.
fn finish(ctx: &Ctx, head_only: bool, answer: Answer, in_flight: InFlight) -> Response<Reply> {
    ctx.stats.record(answer.status);
    let length = answer.body.len();
    let body = if head_only { Bytes::new() } else { answer.body };
    let mut response = Response::new(Reply::full(body, in_flight));
    *response.status_mut() = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(answer.content_type));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(answer.cache_control));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    if answer.close {
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    for (name, value) in answer.extra {
        if let Ok(value) = HeaderValue::try_from(value) {
            headers.insert(name, value);
        }
    }
    response
}

/// A complete `Connection: close` answer as bytes, for what the connection's task writes itself
/// (408, 400 for a head cut short, 503 at the limits).
pub(super) fn raw_answer(status: u16, text: &str, extra: &[(&str, &str)]) -> Vec<u8> {
    let reason = StatusCode::from_u16(status).ok().and_then(|s| s.canonical_reason()).unwrap_or("");
    let mut head = String::with_capacity(256);
    let _ = write!(
        head,
        "HTTP/1.1 {status} {reason}\r\nDate: {}\r\nContent-Type: {TEXT}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n",
        httpdate::fmt_http_date(std::time::SystemTime::now()),
        text.len()
    );
    for (name, value) in extra {
        let _ = write!(head, "{name}: {value}\r\n");
    }
    head.push_str("Connection: close\r\n\r\n");
    head.push_str(text);
    head.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_answers_are_complete_http() {
        let raw = String::from_utf8(raw_answer(408, "request timeout\n", &[("Retry-After", "1")])).unwrap();
        assert!(raw.starts_with("HTTP/1.1 408 Request Timeout\r\n"), "{raw}");
        assert!(
            raw.contains("\r\nContent-Length: 16\r\n") && raw.contains("\r\nRetry-After: 1\r\n"),
            "{raw}"
        );
        assert!(raw.ends_with("\r\nConnection: close\r\n\r\nrequest timeout\n"), "{raw}");
    }
}
