//! Which address a request comes from, for every per-address limit and cap
//! (log-ins, sign-ups, refreshes, upgrades, connections per address).
//!
//! The peer address, unless the peer is a trusted proxy (`--trusted-proxy`):
//! then the rightmost address in `X-Forwarded-For` (or, without that header,
//! in `Forwarded: for=`) that is not itself a trusted proxy. Everything left of
//! it was written by the client and proves nothing. A malformed header from a
//! trusted proxy falls back to the peer address. Keys for the limiters are
//! IPv4 addresses and IPv6 /64 networks (one customer's usual allocation), so
//! rotating through a /64 does not buy a fresh budget.

use std::net::{IpAddr, SocketAddr};

use warp::http::HeaderMap;

use crate::config::Cidr;

/// Bits of an IPv6 address that name one client for the limits.
const IPV6_CLIENT_PREFIX: u8 = 64;

/// The peers whose forwarding headers we believe.
#[derive(Clone, Debug, Default)]
pub struct TrustedProxies(Vec<Cidr>);

impl TrustedProxies {
    pub fn new(blocks: Vec<Cidr>) -> Self {
        TrustedProxies(blocks)
    }

    /// Whether `ip` is one of the trusted proxies.
    pub fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|c| c.contains(ip))
    }

    /// The client's address (IPv4-mapped IPv6 as IPv4).
    pub fn client_addr(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.trusts(peer) {
            return peer;
        }
        self.forwarded_client(headers).unwrap_or(peer)
    }

    /// The rightmost untrusted hop; `None` without a header or when a hop
    /// on the way there is malformed. When every hop is trusted, the leftmost.
    fn forwarded_client(&self, headers: &HeaderMap) -> Option<IpAddr> {
        let hops = forwarded_hops(headers)?;
        let mut leftmost = None;
        for hop in hops.iter().rev() {
            let ip = parse_node(hop)?;
            if !self.trusts(ip) {
                return Some(ip);
            }
            leftmost = Some(ip);
        }
        leftmost
    }
}

/// The key the per-address limiters use for `addr`: IPv4 as is, IPv6 by /64.
pub fn limit_key(addr: IpAddr) -> IpAddr {
    match addr.to_canonical() {
        v4 @ IpAddr::V4(_) => v4,
        v6 => Cidr::new(v6, IPV6_CLIENT_PREFIX).network(),
    }
}

/// The hops (left to right) of `X-Forwarded-For`, or else of `Forwarded`'s
/// `for=` values; an element that is not an address stays in as written, so
/// that walking onto it counts as malformed. `None`: no header, or not text.
fn forwarded_hops(headers: &HeaderMap) -> Option<Vec<&str>> {
    let xff = headers.get_all("x-forwarded-for");
    if xff.iter().next().is_some() {
        let mut hops = Vec::new();
        for line in xff {
            hops.extend(line.to_str().ok()?.split(','));
        }
        return Some(hops);
    }
    let fwd = headers.get_all("forwarded");
    fwd.iter().next()?;
    let mut hops = Vec::new();
    for line in fwd {
        // Elements split at commas: a `for=` value never holds one (RFC 7239 §6).
        for element in line.to_str().ok()?.split(',') {
            let node = element.split(';').find_map(|pair| {
                let (k, v) = pair.split_once('=')?;
                k.trim().eq_ignore_ascii_case("for").then_some(v)
            });
            hops.push(node.unwrap_or(""));
        }
    }
    Some(hops)
}

/// One hop: `1.2.3.4`, `1.2.3.4:80`, `2001:db8::1`, `[2001:db8::1]:80`, or
/// any of those in double quotes (`Forwarded`). `unknown`, obfuscated
/// identifiers (`_hidden`) and anything else: `None`.
fn parse_node(s: &str) -> Option<IpAddr> {
    let s = s.trim();
    let s = s
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(s);
    let ip = if let Some(rest) = s.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        let port_ok = after.is_empty()
            || after
                .strip_prefix(':')
                .is_some_and(|p| p.parse::<u16>().is_ok());
        if !port_ok {
            return None;
        }
        IpAddr::V6(inside.parse().ok()?)
    } else {
        match s.parse::<IpAddr>() {
            Ok(ip) => ip,
            Err(_) => s.parse::<SocketAddr>().ok()?.ip(),
        }
    };
    Some(ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;
    use warp::http::HeaderValue;

    fn proxies(list: &[&str]) -> TrustedProxies {
        TrustedProxies::new(list.iter().map(|c| c.parse().unwrap()).collect())
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    /// The client address for a request from `peer` with `pairs` as headers.
    fn client(t: &TrustedProxies, peer: &str, pairs: &[(&'static str, &str)]) -> String {
        t.client_addr(ip(peer), &headers(pairs)).to_string()
    }

    #[test]
    fn untrusted_peers_headers_are_ignored() {
        let none = proxies(&[]);
        let xff = [("x-forwarded-for", "203.0.113.9")];
        assert_eq!(client(&none, "127.0.0.1", &xff), "127.0.0.1");
        let other = proxies(&["10.0.0.0/8"]);
        assert_eq!(client(&other, "127.0.0.1", &xff), "127.0.0.1");
        let fwd = [("forwarded", "for=203.0.113.9")];
        assert_eq!(client(&other, "192.0.2.1", &fwd), "192.0.2.1");
    }

    #[test]
    fn trusted_peer_gives_rightmost_untrusted_hop() {
        let t = proxies(&["127.0.0.1/32", "10.0.0.0/8"]);
        let cases: &[(&str, &str)] = &[
            ("203.0.113.9", "203.0.113.9"),
            (" 203.0.113.9 ", "203.0.113.9"),
            // A spoofed hop left of the real one does not count.
            ("1.1.1.1, 203.0.113.9", "203.0.113.9"),
            ("evil, 203.0.113.9", "203.0.113.9"),
            // Our own proxies on the right are skipped.
            ("203.0.113.9, 10.1.2.3", "203.0.113.9"),
            ("1.1.1.1,203.0.113.9,10.0.0.1,10.0.0.2", "203.0.113.9"),
            // Every hop trusted: the leftmost is as far as the chain goes.
            ("10.0.0.5, 10.0.0.6", "10.0.0.5"),
            // Ports and IPv6 forms.
            ("203.0.113.9:4711", "203.0.113.9"),
            ("2001:db8::1", "2001:db8::1"),
            ("[2001:db8::1]:4711", "2001:db8::1"),
            ("[2001:db8::1]", "2001:db8::1"),
            ("::ffff:203.0.113.9", "203.0.113.9"),
        ];
        for (xff, want) in cases {
            let got = client(&t, "127.0.0.1", &[("x-forwarded-for", xff)]);
            assert_eq!(got, *want, "X-Forwarded-For: {xff}");
        }
        // Two header lines are one list, in order.
        let two = [
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-for", "203.0.113.9, 10.0.0.1"),
        ];
        assert_eq!(client(&t, "127.0.0.1", &two), "203.0.113.9");
        // A dual-stack listener sees IPv4 peers as mapped addresses.
        let xff = [("x-forwarded-for", "203.0.113.9")];
        assert_eq!(client(&t, "::ffff:127.0.0.1", &xff), "203.0.113.9");
    }

    #[test]
    fn forwarded_header() {
        let t = proxies(&["127.0.0.1", "10.0.0.0/8"]);
        let cases: &[(&str, &str)] = &[
            ("for=203.0.113.9", "203.0.113.9"),
            ("For=\"203.0.113.9:80\";proto=https", "203.0.113.9"),
            ("for=\"[2001:db8:cafe::17]:4711\"", "2001:db8:cafe::17"),
            ("for=1.1.1.1, for=203.0.113.9;by=10.0.0.1", "203.0.113.9"),
            ("proto=http;for=203.0.113.9, for=10.0.0.1", "203.0.113.9"),
        ];
        for (fwd, want) in cases {
            let got = client(&t, "127.0.0.1", &[("forwarded", fwd)]);
            assert_eq!(got, *want, "Forwarded: {fwd}");
        }
        // X-Forwarded-For wins when both are present.
        let both = [
            ("forwarded", "for=198.51.100.1"),
            ("x-forwarded-for", "203.0.113.9"),
        ];
        assert_eq!(client(&t, "127.0.0.1", &both), "203.0.113.9");
    }

    #[test]
    fn malformed_headers_from_a_trusted_peer_fall_back_to_the_peer() {
        let t = proxies(&["127.0.0.1", "10.0.0.0/8"]);
        for xff in [
            "",
            "garbage",
            "203.0.113.9, garbage",
            "203.0.113.9, 10.0.0.1 junk",
            "[2001:db8::1",
            "[2001:db8::1]:99999",
            "203.0.113.9:port",
            "unknown",
        ] {
            let got = client(&t, "127.0.0.1", &[("x-forwarded-for", xff)]);
            assert_eq!(got, "127.0.0.1", "X-Forwarded-For: {xff:?}");
        }
        for fwd in [
            "for=unknown",
            "for=_hidden",
            "proto=https",
            "for=203.0.113.9, by=10.0.0.1",
        ] {
            let got = client(&t, "127.0.0.1", &[("forwarded", fwd)]);
            assert_eq!(got, "127.0.0.1", "Forwarded: {fwd:?}");
        }
        // No header at all.
        assert_eq!(client(&t, "10.9.9.9", &[]), "10.9.9.9");
        // Not text.
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_bytes(b"\xff1.2.3.4").unwrap(),
        );
        assert_eq!(t.client_addr(ip("127.0.0.1"), &h), ip("127.0.0.1"));
    }

    #[test]
    fn limit_keys_are_ipv4_addresses_and_ipv6_slash_64s() {
        assert_eq!(limit_key(ip("203.0.113.9")), ip("203.0.113.9"));
        assert_eq!(limit_key(ip("::ffff:203.0.113.9")), ip("203.0.113.9"));
        let a = limit_key(ip("2001:db8:1:2::1"));
        assert_eq!(a, ip("2001:db8:1:2::"));
        assert_eq!(limit_key(ip("2001:db8:1:2:ffff:ffff:ffff:ffff")), a);
        assert_ne!(limit_key(ip("2001:db8:1:3::1")), a);
        assert_eq!(limit_key(ip("::1")), ip("::"));
    }
}
