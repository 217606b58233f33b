//! The client IP, resolved once per request and used by everything (the
//! allowlist, the rate limiter, logs).
//!
//! `X-Forwarded-For` is believed only when the TCP peer is a trusted proxy.
//! It is then walked right to left (the entries nearest to us were written by
//! our own proxies), trusted hops are skipped, and the first untrusted
//! address is the client. An entry that does not parse ends the walk at the
//! last good hop, so a client can never slide its own choice of address in.

use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderMap;
use ipnet::IpNet;

/// Most hops walked before giving up and taking the last good one: a chain
/// of proxies is short, a header of thousands of entries is an attack.
const MAX_HOPS: usize = 32;

/// The resolved client address, stored in request extensions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClientIp(pub IpAddr);

#[derive(Clone, Debug, Default)]
pub struct ClientIpResolver {
    trusted: Vec<IpNet>,
}

impl ClientIpResolver {
    pub fn new(trusted_proxies: Vec<IpNet>) -> Self {
        Self {
            trusted: trusted_proxies,
        }
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|n| n.contains(&ip))
    }

    /// Resolves the client of a request whose TCP peer is `peer`.
    pub fn resolve(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.is_trusted(peer) {
            return peer;
        }
        // Several X-Forwarded-For lines are one list, in order.
        let mut entries: Vec<&[u8]> = Vec::new();
        for value in headers.get_all("x-forwarded-for") {
            entries.extend(value.as_bytes().split(|b| *b == b','));
        }
        let mut last_good = peer;
        for raw in entries.iter().rev().take(MAX_HOPS) {
            let Some(ip) = parse_hop(raw) else {
                return last_good;
            };
            if !self.is_trusted(ip) {
                return ip;
            }
            last_good = ip;
        }
        last_good
    }
}

/// One `X-Forwarded-For` entry: `1.2.3.4`, `1.2.3.4:5000`, `2001:db8::1`,
/// `[2001:db8::1]` or `[2001:db8::1]:443`, surrounded by optional spaces.
fn parse_hop(raw: &[u8]) -> Option<IpAddr> {
    let s = std::str::from_utf8(raw).ok()?.trim();
    if s.is_empty() || s.len() > 64 {
        return None;
    }
    let ip = if let Ok(ip) = s.parse::<IpAddr>() {
        ip
    } else if let Ok(sock) = s.parse::<SocketAddr>() {
        sock.ip()
    } else {
        s.strip_prefix('[')?
            .strip_suffix(']')?
            .parse::<IpAddr>()
            .ok()?
    };
    Some(ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn resolver(trusted: &[&str]) -> ClientIpResolver {
        ClientIpResolver::new(
            trusted
                .iter()
                .map(|s| crate::config::parse_network(s).unwrap())
                .collect(),
        )
    }

    fn headers(values: &[&[u8]]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", HeaderValue::from_bytes(v).unwrap());
        }
        h
    }

    #[test]
    fn resolution_table() {
        let r = resolver(&["10.0.0.0/8", "2001:db8:ffff::/48"]);
        let long = format!("{}1.1.1.1", "9.9.9.9, ".repeat(5000));
        let all_trusted = format!("{}10.0.0.1", "10.0.0.9, ".repeat(100));
        #[rustfmt::skip]
        let cases: Vec<(&str, &str, Vec<&[u8]>, &str)> = vec![
            ("no header, untrusted peer", "203.0.113.5", vec![], "203.0.113.5"),
            ("no header, trusted peer", "10.1.1.1", vec![], "10.1.1.1"),
            ("spoofed header from untrusted peer", "203.0.113.5", vec![b"1.2.3.4"], "203.0.113.5"),
            ("one hop via trusted proxy", "10.1.1.1", vec![b"198.51.100.7"], "198.51.100.7"),
            ("client-injected left entries are ignored", "10.1.1.1", vec![b"6.6.6.6, 198.51.100.7"], "198.51.100.7"),
            ("trusted hops are skipped", "10.1.1.1", vec![b"6.6.6.6, 198.51.100.7, 10.2.2.2, 10.3.3.3"], "198.51.100.7"),
            ("every hop trusted: leftmost", "10.1.1.1", vec![b"10.9.9.9, 10.2.2.2"], "10.9.9.9"),
            ("garbage ends the walk at the last good hop", "10.1.1.1", vec![b"1.2.3.4, garbage, 10.2.2.2"], "10.2.2.2"),
            ("garbage rightmost: the peer", "10.1.1.1", vec![b"1.2.3.4, not-an-ip"], "10.1.1.1"),
            ("empty header", "10.1.1.1", vec![b""], "10.1.1.1"),
            ("empty entry", "10.1.1.1", vec![b"1.2.3.4,,"], "10.1.1.1"),
            ("port on v4", "10.1.1.1", vec![b"203.0.113.9:5000"], "203.0.113.9"),
            ("bracketed v6 with port", "10.1.1.1", vec![b"[2001:db8::1]:443"], "2001:db8::1"),
            ("bracketed v6", "10.1.1.1", vec![b"[2001:db8::1]"], "2001:db8::1"),
            ("bare v6", "10.1.1.1", vec![b"2001:db8::2"], "2001:db8::2"),
            ("mapped v6 is v4", "10.1.1.1", vec![b"::ffff:198.51.100.7"], "198.51.100.7"),
            ("mapped v6 trusted hop", "10.1.1.1", vec![b"198.51.100.7, ::ffff:10.2.2.2"], "198.51.100.7"),
            ("mapped trusted peer", "::ffff:10.1.1.1", vec![b"198.51.100.7"], "198.51.100.7"),
            ("mapped untrusted peer", "::ffff:203.0.113.5", vec![b"1.2.3.4"], "203.0.113.5"),
            ("v6 trusted peer", "2001:db8:ffff::1", vec![b"198.51.100.7"], "198.51.100.7"),
            ("several header lines are one list", "10.1.1.1", vec![b"6.6.6.6, 198.51.100.7", b"10.2.2.2"], "198.51.100.7"),
            ("several lines, last line untrusted", "10.1.1.1", vec![b"198.51.100.7", b"203.0.113.1"], "203.0.113.1"),
            ("over-long header", "10.1.1.1", vec![long.as_bytes()], "1.1.1.1"),
            ("too many trusted hops stop at the cap", "10.1.1.1", vec![all_trusted.as_bytes()], "10.0.0.9"),
            ("non-UTF-8 entry", "10.1.1.1", vec![b"1.2.3.4, \xff\xfe"], "10.1.1.1"),
            ("space-padded entries", "10.1.1.1", vec![b"  198.51.100.7  "], "198.51.100.7"),
            ("hostname is not an address", "10.1.1.1", vec![b"evil.example"], "10.1.1.1"),
        ];
        for (name, peer, hdrs, want) in cases {
            assert_eq!(r.resolve(ip(peer), &headers(&hdrs)), ip(want), "{name}");
        }
    }

    #[test]
    fn nothing_trusted_means_headers_never_count() {
        let r = resolver(&[]);
        let h = headers(&[b"1.2.3.4"]);
        assert_eq!(r.resolve(ip("127.0.0.1"), &h), ip("127.0.0.1"));
        assert_eq!(r.resolve(ip("::ffff:127.0.0.2"), &h), ip("127.0.0.2"));
    }
}
