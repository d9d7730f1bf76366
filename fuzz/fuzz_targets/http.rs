//! The status server (hyper's HTTP/1.1 parser and this project's rules: method, Host, body,
//! target, routes) on arbitrary bytes over a real loopback connection: every input gets an
//! answer or a close, and the server keeps serving (checked after each input).
#![no_main]

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use camera_classifier::http::{HttpConfig, HttpServer, StatusView};
use libfuzzer_sys::fuzz_target;

struct View;

impl StatusView for View {
    fn latest_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(br#"{"seq":1}"#);
    }
    fn snapshot(&self) -> Option<(u64, Arc<Vec<u8>>)> {
        Some((1, Arc::new(vec![0xff, 0xd8, 0xff, 0xd9])))
    }
    fn metrics(&self, out: &mut String) {
        out.push_str("x 1\n");
    }
    fn health(&self) -> Result<(), String> {
        Ok(())
    }
    fn version(&self) -> u64 {
        1
    }
}

fn server() -> SocketAddr {
    static SERVER: OnceLock<HttpServer> = OnceLock::new();
    SERVER
        .get_or_init(|| {
            let config = HttpConfig {
                bind: "127.0.0.1:0".parse().unwrap(),
                request_timeout: Duration::from_millis(200),
                write_timeout: Duration::from_millis(200),
                event_stream_lifetime: Duration::from_millis(50),
                allowed_hosts: vec!["t".into()],
                ..HttpConfig::default()
            };
            HttpServer::start(&config, Arc::new(View)).unwrap()
        })
        .local_addr()
}

fn exchange(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let _ = s.write_all(request);
    let _ = s.shutdown(Shutdown::Write);
    let mut reply = Vec::new();
    let _ = s.read_to_end(&mut reply);
    reply
}

fuzz_target!(|input: &[u8]| {
    let addr = server();
    exchange(addr, input);
    let health = exchange(addr, b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    assert!(health.starts_with(b"HTTP/1.1 200 OK\r\n"), "the server stopped answering");
});
