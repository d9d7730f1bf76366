//! Which `Host` values the server answers (against DNS rebinding).

use std::net::{IpAddr, Ipv6Addr};

/// The names a `Host` header may carry (lower case, without a port), besides IP addresses.
pub(super) struct Hosts {
    pub(super) names: Vec<String>,
}

impl Hosts {
    /// `localhost`, this machine's name and `NAME.local` (mDNS, how people reach a Raspberry Pi),
    /// and the configured names.
    pub(super) fn new(allowed: &[String]) -> Hosts {
        let mut names = vec!["localhost".to_string()];
        if let Some(name) = crate::hostname() {
            let name = name.to_ascii_lowercase();
            names.push(format!("{name}.local"));
            names.push(name);
        }
        names.extend(allowed.iter().map(|n| n.trim_end_matches('.').to_ascii_lowercase()));
        Hosts { names }
    }

    /// Whether `host` (a `Host` header value: name or address, optional port) may be served. Any IP
    /// address is accepted: DNS rebinding needs a name that the attacker controls, and a page served
    /// from an address has that address as its own origin.
    pub(super) fn allows(&self, host: &str) -> bool {
        let name = if let Some(rest) = host.strip_prefix('[') {
            // [v6]:port
            let Some((addr, port)) = rest.split_once(']') else { return false };
            return addr.parse::<Ipv6Addr>().is_ok()
                && (port.is_empty() || port.strip_prefix(':').is_some_and(is_port));
        } else {
            match host.rsplit_once(':') {
                Some((name, port)) if is_port(port) => name,
                Some(_) => return false,
                None => host,
            }
        };
        if name.parse::<IpAddr>().is_ok() {
            return true;
        }
        let name = name.strip_suffix('.').unwrap_or(name);
        self.names.iter().any(|allowed| allowed.eq_ignore_ascii_case(name))
    }
}

fn is_port(s: &str) -> bool {
    !s.is_empty() && s.len() <= 5 && s.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts() -> Hosts {
        Hosts { names: vec!["localhost".into(), "pi".into(), "pi.local".into(), "cam.example.org".into()] }
    }

    #[test]
    fn host_names_and_addresses() {
        let h = hosts();
        for ok in [
            "localhost",
            "localhost:8080",
            "LOCALHOST",
            "127.0.0.1:8080",
            "192.168.1.20",
            "[::1]:8080",
            "[fe80::1]",
            "pi.local:8080",
            "pi.local.",
            "cam.example.org",
        ] {
            assert!(h.allows(ok), "{ok} should be allowed");
        }
        for refused in [
            "evil.example.com",
            "evil.example.com:8080",
            "localhost.evil.com",
            "pi.local.evil.com",
            "[::1",
            "[nonsense]:80",
            "localhost:80x",
            "localhost:123456",
            "",
        ] {
            assert!(!h.allows(refused), "{refused} should be refused");
        }
    }
}
