//! `network.allowed_ips`: who may call the webhook route.

use std::net::IpAddr;

use ipnet::IpNet;

#[derive(Clone, Debug, Default)]
pub struct Allowlist {
    nets: Vec<IpNet>,
}

impl Allowlist {
    pub fn new(nets: Vec<IpNet>) -> Self {
        Self { nets }
    }

    /// An empty list allows everyone (a warning is logged at start-up).
    pub fn is_open(&self) -> bool {
        self.nets.is_empty()
    }

    /// `ip` must already be canonical (mapped IPv6 as IPv4).
    pub fn allows(&self, ip: IpAddr) -> bool {
        self.is_open() || self.nets.iter().any(|n| n.contains(&ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_network;

    #[test]
    fn matches_cidrs_and_single_addresses_in_both_families() {
        let list = Allowlist::new(
            [
                "203.0.113.0/24",
                "198.51.100.7",
                "2001:db8::/32",
                "::ffff:192.0.2.0/120",
            ]
            .iter()
            .map(|s| parse_network(s).unwrap())
            .collect(),
        );
        let yes = [
            "203.0.113.1",
            "203.0.113.255",
            "198.51.100.7",
            "2001:db8::1",
            "192.0.2.9",
        ];
        let no = [
            "203.0.114.1",
            "198.51.100.8",
            "2001:db9::1",
            "10.0.0.1",
            "::1",
            "192.0.3.1",
        ];
        for ip in yes {
            assert!(list.allows(ip.parse().unwrap()), "{ip}");
        }
        for ip in no {
            assert!(!list.allows(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn empty_allows_everyone() {
        let list = Allowlist::default();
        assert!(list.is_open());
        assert!(list.allows("192.0.2.1".parse().unwrap()));
    }
}
