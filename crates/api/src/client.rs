//! The client's address: who a request comes from, for rate limits, the audit log and the
//! login-failure limit.
//!
//! The server loop puts the socket's peer into every request as
//! [`axum::extract::ConnectInfo`]. That peer is the client, unless it is one of the trusted
//! proxies (`BACKROOM_TRUSTED_PROXIES`, none by default). Only then is `X-Forwarded-For`
//! read, right to left: each proxy appends the address it received the request from, so the
//! entries on the right were written by our own proxies and the first untrusted one from the
//! right is the client. Whatever is left of it the client wrote itself and may be forged. A
//! malformed entry ends the walk at the last trusted hop: it names no one we can believe.
//!
//! [`layer`] resolves the address once per request (it runs outermost) and puts it into the
//! request's extensions; handlers take it with the [`ClientAddr`] extractor, middleware reads
//! it with [`ClientAddr::of`].

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::str::FromStr;

use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::{Extensions, HeaderMap, request::Parts};
use axum::middleware::Next;
use axum::response::Response;
use ipnet::IpNet;

/// The most `X-Forwarded-For` entries walked; a chain of proxies is a handful of hops.
const MAX_HOPS: usize = 32;

/// The proxies whose `X-Forwarded-For` is believed: addresses and CIDR ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// None: every request's address is its socket peer.
    pub fn none() -> Self {
        Self::default()
    }

    /// A comma list of IP addresses and CIDR ranges (`10.0.0.0/8, 192.168.1.7, ::1`); empty
    /// items are skipped, anything else that is not an address or a range is refused.
    pub fn parse(list: &str) -> Result<Self, String> {
        let mut nets = Vec::new();
        for item in list.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let net = match IpNet::from_str(item) {
                Ok(net) => net.trunc(),
                Err(_) => match IpAddr::from_str(item) {
                    Ok(ip) => IpNet::from(ip.to_canonical()),
                    Err(_) => {
                        return Err(format!("`{item}` is not an IP address or a CIDR range such as 10.0.0.0/8"));
                    }
                },
            };
            if !nets.contains(&net) {
                nets.push(net);
            }
        }
        Ok(Self(nets))
    }

    /// The ranges, as given (each trimmed to its network).
    pub fn nets(&self) -> &[IpNet] {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `ip` is one of the trusted proxies.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|n| n.contains(&ip))
    }
}

/// The client's address: the socket's peer, or, when the peer is a trusted proxy, the
/// address the proxies' `X-Forwarded-For` names (see the module's description).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientAddr(pub IpAddr);

impl ClientAddr {
    /// The address [`layer`] resolved for this request; without it (a router driven without
    /// the server loop) the socket's peer, or `0.0.0.0` when there is none either.
    pub fn of(extensions: &Extensions) -> ClientAddr {
        if let Some(addr) = extensions.get::<ClientAddr>() {
            return *addr;
        }
        ClientAddr(peer(extensions).unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)))
    }
}

impl std::fmt::Display for ClientAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientAddr::of(&parts.extensions))
    }
}

/// The socket peer the server loop recorded, if any.
fn peer(extensions: &Extensions) -> Option<IpAddr> {
    extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip().to_canonical())
}

/// The client's address for a request from `peer` with these headers (see the module's
/// description). Never fails: a forged or malformed header yields the peer or the last
/// trusted hop.
pub fn resolve(peer: IpAddr, headers: &HeaderMap, trusted: &TrustedProxies) -> IpAddr {
    let mut current = peer.to_canonical();
    if trusted.is_empty() || !trusted.contains(current) {
        return current;
    }
    // Several header lines are one list, in order.
    let lines: Vec<&str> = match headers.get_all("x-forwarded-for").iter().map(|v| v.to_str()).collect() {
        Ok(lines) => lines,
        // Not visible ASCII: nothing in it can be believed.
        Err(_) => return current,
    };
    let entries = lines.iter().rev().flat_map(|line| line.rsplit(','));
    for entry in entries.take(MAX_HOPS) {
        let Some(ip) = parse_hop(entry.trim()) else {
            return current;
        };
        if !trusted.contains(ip) {
            return ip;
        }
        current = ip;
    }
    current
}

/// One `X-Forwarded-For` entry: an address, also written `1.2.3.4:port`, `[::1]` or
/// `[::1]:port`.
fn parse_hop(entry: &str) -> Option<IpAddr> {
    if let Ok(ip) = IpAddr::from_str(entry) {
        return Some(ip.to_canonical());
    }
    if let Some(rest) = entry.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        let port_ok = after.is_empty() || after.strip_prefix(':').is_some_and(|p| p.parse::<u16>().is_ok());
        return port_ok.then(|| IpAddr::from_str(inside).ok()).flatten().map(|ip| ip.to_canonical());
    }
    SocketAddr::from_str(entry).ok().map(|s| s.ip().to_canonical())
}

/// Resolves every request's [`ClientAddr`] once, before any other layer needs it.
pub async fn layer(State(trusted): State<std::sync::Arc<TrustedProxies>>, mut req: Request, next: Next) -> Response {
    let addr = match peer(req.extensions()) {
        Some(p) => resolve(p, req.headers(), &trusted),
        None => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    };
    req.extensions_mut().insert(ClientAddr(addr));
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn xff(lines: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for l in lines {
            h.append("x-forwarded-for", HeaderValue::from_str(l).unwrap());
        }
        h
    }

    fn trusted(list: &str) -> TrustedProxies {
        TrustedProxies::parse(list).unwrap()
    }

    #[test]
    fn lists_of_proxies_are_checked() {
        let t = trusted(" 10.0.0.0/8, 192.168.1.7 ,::1, fd00::/8,, 10.1.2.3/8");
        assert_eq!(t.nets().len(), 4, "{t:?}");
        assert!(t.contains(ip("10.200.0.1")));
        assert!(t.contains(ip("192.168.1.7")));
        assert!(!t.contains(ip("192.168.1.8")));
        assert!(t.contains(ip("::1")));
        assert!(t.contains(ip("fd12::5")));
        assert!(t.contains(ip("::ffff:10.0.0.9")), "an IPv4-mapped address is its IPv4 address");
        assert!(trusted("").is_empty());
        for bad in ["10.0.0.0/33", "localhost", "10.0.0.1:80", "*", "10.0.0"] {
            assert!(TrustedProxies::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn without_trusted_proxies_the_peer_is_the_client() {
        let h = xff(&["203.0.113.9"]);
        assert_eq!(resolve(ip("198.51.100.1"), &h, &TrustedProxies::none()), ip("198.51.100.1"));
    }

    #[test]
    fn a_header_from_an_untrusted_peer_is_ignored() {
        let t = trusted("10.0.0.0/8");
        // A client spoofing the header (even naming a trusted proxy) is still itself.
        let h = xff(&["203.0.113.9, 10.0.0.2"]);
        assert_eq!(resolve(ip("198.51.100.1"), &h, &t), ip("198.51.100.1"));
    }

    #[test]
    fn chains_are_walked_right_to_left_past_trusted_hops() {
        let t = trusted("10.0.0.0/8");
        // The client forged the leftmost entry; the proxies appended the rest.
        let h = xff(&["1.1.1.1, 203.0.113.9, 10.0.0.3, 10.0.0.2"]);
        assert_eq!(resolve(ip("10.0.0.1"), &h, &t), ip("203.0.113.9"));
        // Several header lines are one list.
        let h = xff(&["1.1.1.1, 203.0.113.9", "10.0.0.3", "10.0.0.2"]);
        assert_eq!(resolve(ip("10.0.0.1"), &h, &t), ip("203.0.113.9"));
        // No header: the proxy itself.
        assert_eq!(resolve(ip("10.0.0.1"), &HeaderMap::new(), &t), ip("10.0.0.1"));
        // Every entry trusted: the leftmost of them.
        let h = xff(&["10.9.9.9, 10.0.0.2"]);
        assert_eq!(resolve(ip("10.0.0.1"), &h, &t), ip("10.9.9.9"));
    }

    #[test]
    fn ipv6_and_ports_are_read() {
        let t = trusted("::1, 10.0.0.0/8");
        assert_eq!(resolve(ip("::1"), &xff(&["2001:db8::7"]), &t), ip("2001:db8::7"));
        assert_eq!(resolve(ip("::1"), &xff(&["[2001:db8::7]:4711"]), &t), ip("2001:db8::7"));
        assert_eq!(resolve(ip("::1"), &xff(&["[2001:db8::8]"]), &t), ip("2001:db8::8"));
        assert_eq!(resolve(ip("::1"), &xff(&["203.0.113.9:1234"]), &t), ip("203.0.113.9"));
        // An IPv4 peer seen through a dual-stack socket is its IPv4 address.
        assert_eq!(resolve(ip("::ffff:10.0.0.1"), &xff(&["203.0.113.9"]), &t), ip("203.0.113.9"));
        assert_eq!(resolve(ip("::ffff:198.51.100.1"), &xff(&["1.2.3.4"]), &t), ip("198.51.100.1"));
    }

    #[test]
    fn garbage_stops_the_walk_at_the_last_trusted_hop() {
        let t = trusted("10.0.0.0/8");
        for (header, expected) in [
            ("203.0.113.9, nonsense, 10.0.0.2", "10.0.0.2"),
            ("203.0.113.9, nonsense", "10.0.0.1"),
            ("", "10.0.0.1"),
            (",,,", "10.0.0.1"),
            ("unknown", "10.0.0.1"),
            ("[::1", "10.0.0.1"),
            ("[::1]:99999", "10.0.0.1"),
            ("203.0.113.9 10.0.0.2", "10.0.0.1"),
            ("999.1.1.1", "10.0.0.1"),
        ] {
            assert_eq!(resolve(ip("10.0.0.1"), &xff(&[header]), &t), ip(expected), "{header:?}");
        }
        // Bytes that are not visible ASCII.
        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", HeaderValue::from_bytes(b"203.0.113.9\xff").unwrap());
        assert_eq!(resolve(ip("10.0.0.1"), &h, &t), ip("10.0.0.1"));
    }

    #[test]
    fn a_very_long_chain_is_cut() {
        let t = trusted("10.0.0.0/8");
        let chain = vec!["10.0.0.5"; 1000].join(",");
        let h = xff(&[&format!("203.0.113.9,{chain}")]);
        assert_eq!(resolve(ip("10.0.0.1"), &h, &t), ip("10.0.0.5"));
    }

    #[test]
    fn the_extension_wins_then_the_peer() {
        let mut e = Extensions::new();
        assert_eq!(ClientAddr::of(&e), ClientAddr(ip("0.0.0.0")));
        e.insert(ConnectInfo(SocketAddr::from(([198, 51, 100, 1], 5000))));
        assert_eq!(ClientAddr::of(&e), ClientAddr(ip("198.51.100.1")));
        e.insert(ClientAddr(ip("203.0.113.9")));
        assert_eq!(ClientAddr::of(&e), ClientAddr(ip("203.0.113.9")));
    }
}
