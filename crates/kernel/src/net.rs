//! Which addresses an outbound request (a carrier quote, a webhook delivery) may go to.
//!
//! One rule for every module that calls out to a URL a staff member typed: unless private
//! addresses are allowed (`BACKROOM_WEBHOOKS_ALLOW_PRIVATE`), only [`is_public`] addresses;
//! and the cloud metadata addresses ([`is_metadata`]) never, whatever the setting.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Whether an outbound request (a carrier quote, a webhook) may go to `ip` when private
/// addresses are not allowed: not loopback, private (RFC 1918, unique local, shared
/// 100.64/10), link-local, unspecified (`0.0.0.0/8`, `::`), broadcast, multicast,
/// documentation or reserved; an IPv6 address that carries an IPv4 one (mapped,
/// compatible, NAT64, 6to4) is judged by that IPv4 address.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

/// The cloud metadata services (`169.254.169.254`, and AWS's IPv6 `fd00:ec2::254`), also
/// when carried in an IPv6 address: never a destination, even where private addresses are
/// allowed.
pub fn is_metadata(ip: IpAddr) -> bool {
    const V4: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);
    const V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254);
    match ip {
        IpAddr::V4(v4) => v4 == V4,
        IpAddr::V6(v6) => v6 == V6 || embedded_v4(v6) == Some(V4),
    }
}

/// Whether `ip` may be called: [`is_public`] (or any address when `allow_private`), and never
/// a metadata address.
pub fn is_allowed(ip: IpAddr, allow_private: bool) -> bool {
    !is_metadata(ip) && (allow_private || is_public(ip))
}

/// The address a URL's host (as the URL parser gives it: `host_str()`) names when it is an IP
/// address, IPv6 ones in brackets included. The URL parser has already read every form of an
/// IPv4 address (`2130706433`, `0x7f.1`, `017700000001`) as the dotted one.
pub fn literal_ip(host: &str) -> Option<IpAddr> {
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    host.parse().ok()
}

/// Whether a host name is `localhost` or under `.localhost` (any case, a final dot allowed).
pub fn is_localhost_name(host: &str) -> bool {
    let name = host.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost" || name.ends_with(".localhost")
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(a == 0                                   // "this network", unspecified
        || a == 10                             // private
        || a == 127                            // loopback
        || (a == 100 && (64..128).contains(&b)) // shared (carrier-grade NAT)
        || (a == 169 && b == 254)              // link-local (cloud metadata)
        || (a == 172 && (16..32).contains(&b)) // private
        || (a == 192 && b == 0 && c == 0)      // IETF protocol assignments
        || (a == 192 && b == 0 && c == 2)      // documentation
        || (a == 192 && b == 168)              // private
        || (a == 198 && (b == 18 || b == 19))  // benchmarking
        || (a == 198 && b == 51 && c == 100)   // documentation
        || (a == 203 && b == 0 && c == 113)    // documentation
        || a >= 224) // multicast, reserved, broadcast
}

/// The IPv4 address an IPv6 one carries (mapped, compatible, NAT64, 6to4), if any.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    let embedded = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    if s[..6] == [0; 6] || s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return Some(embedded(s[6], s[7]));
    }
    if s[0] == 0x2002 {
        return Some(embedded(s[1], s[2]));
    }
    None
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_public_v4(v4);
    }
    // IPv4-compatible (::a.b.c.d, deprecated; `::` and `::1` among them).
    if s[..6] == [0; 6] {
        return s[6] != 0 && embedded_v4(ip).is_some_and(is_public_v4);
    }
    // NAT64 (64:ff9b::/96) and 6to4 (2002::/16) reach the IPv4 address they carry.
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] || s[0] == 0x2002 {
        return embedded_v4(ip).is_some_and(is_public_v4);
    }
    !((s[0] & 0xfe00) == 0xfc00      // unique local
        || (s[0] & 0xffc0) == 0xfe80 // link-local
        || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated)
        || (s[0] & 0xff00) == 0xff00 // multicast
        || (s[0] == 0x2001 && s[1] == 0x0db8)) // documentation
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_public_addresses_are_refused() {
        for bad in [
            "127.0.0.1",
            "127.1.2.3",
            "0.0.0.0",
            "10.0.0.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::",
            "fc00::1",
            "fd12:3456::1",
            "fd00:ec2::254",
            "fe80::1",
            "ff02::1",
        ] {
            let ip: IpAddr = bad.parse().unwrap();
            assert!(!is_public(ip), "{bad} is public");
            assert!(!is_allowed(ip, false), "{bad} is allowed");
        }
        for good in ["1.1.1.1", "8.8.8.8", "172.32.0.1", "100.128.0.1", "2606:4700::1111", "::ffff:1.1.1.1"] {
            assert!(is_public(good.parse().unwrap()), "{good} is refused");
        }
    }

    #[test]
    fn metadata_addresses_stay_refused_when_private_ones_are_allowed() {
        for meta in ["169.254.169.254", "::ffff:169.254.169.254", "64:ff9b::a9fe:a9fe", "fd00:ec2::254"] {
            let ip: IpAddr = meta.parse().unwrap();
            assert!(is_metadata(ip), "{meta}");
            assert!(!is_allowed(ip, true), "{meta} allowed");
        }
        for private in ["127.0.0.1", "10.0.0.1", "::1", "169.254.1.1", "fd00:ec2::253"] {
            assert!(is_allowed(private.parse().unwrap(), true), "{private}");
        }
    }

    #[test]
    fn literal_addresses_and_localhost_names() {
        assert_eq!(literal_ip("[::1]"), Some("::1".parse().unwrap()));
        assert_eq!(literal_ip("127.0.0.1"), Some("127.0.0.1".parse().unwrap()));
        assert_eq!(literal_ip("example.com"), None);
        for name in ["localhost", "LOCALHOST.", "api.localhost"] {
            assert!(is_localhost_name(name), "{name}");
        }
        assert!(!is_localhost_name("localhost.example"));
    }
}
