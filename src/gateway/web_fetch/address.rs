//! Which IP addresses the fetcher may connect to. Pure: no I/O.
//!
//! IPv4 is a deny-list of the special-purpose ranges (IANA registry). IPv6 is an allow-list:
//! only global unicast (2000::/3) outside its special ranges, plus the forms that carry an
//! IPv4 address (mapped, compatible, NAT64, 6to4, Teredo), which are judged by that address.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::FetchConfig;

/// Why an address is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressClass {
    Unspecified,
    Loopback,
    Private,
    SharedNat,
    CloudMetadata,
    LinkLocal,
    Multicast,
    Broadcast,
    Documentation,
    Benchmarking,
    Reserved,
    UniqueLocal,
    SiteLocal,
}

impl AddressClass {
    fn describe(self) -> &'static str {
        match self {
            Self::Unspecified => "an unspecified address",
            Self::Loopback => "a loopback address",
            Self::Private => "a private (RFC 1918) address",
            Self::SharedNat => "a carrier-grade NAT (100.64.0.0/10) address",
            Self::CloudMetadata => "the cloud metadata address (link-local)",
            Self::LinkLocal => "a link-local address",
            Self::Multicast => "a multicast address",
            Self::Broadcast => "the broadcast address",
            Self::Documentation => "a documentation address",
            Self::Benchmarking => "a benchmarking address",
            Self::Reserved => "a reserved or special-purpose address",
            Self::UniqueLocal => "a unique-local (fc00::/7) address",
            Self::SiteLocal => "a site-local (fec0::/10) address",
        }
    }
}

/// How an IPv6 address carries an IPv4 one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Embedding {
    Mapped,
    Compatible,
    Nat64,
    SixToFour,
    Teredo,
}

impl Embedding {
    fn describe(self) -> &'static str {
        match self {
            Self::Mapped => "IPv4-mapped",
            Self::Compatible => "IPv4-compatible",
            Self::Nat64 => "NAT64",
            Self::SixToFour => "6to4",
            Self::Teredo => "Teredo",
        }
    }
}

/// A refused address, with the reason; its `Display` is meant for the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressDenied {
    pub ip: IpAddr,
    pub class: AddressClass,
    /// Set when the reason is the IPv4 address inside an IPv6 one.
    pub embedded: Option<(Embedding, Ipv4Addr)>,
}

impl fmt::Display for AddressDenied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.embedded {
            None => write!(f, "{} is {}", self.ip, self.class.describe()),
            Some((how, v4)) => write!(f, "{} embeds {v4} ({}), {}", self.ip, how.describe(), self.class.describe()),
        }
    }
}

impl std::error::Error for AddressDenied {}

/// `Ok` when the fetcher may connect to `ip`: a public address, or one inside
/// `config.allowed_private_networks` (tests only). The exemption is matched against the
/// address exactly as given, so `::ffff:127.0.0.2` is not exempted by `127.0.0.2/32`.
pub fn address_allowed(ip: IpAddr, config: &FetchConfig) -> Result<(), AddressDenied> {
    if config.allowed_private_networks.iter().any(|net| net.contains(&ip)) {
        return Ok(());
    }
    match classify(ip) {
        None => Ok(()),
        Some((class, embedded)) => Err(AddressDenied { ip, class, embedded }),
    }
}

/// `None` for a public address; otherwise what it is.
pub fn classify(ip: IpAddr) -> Option<(AddressClass, Option<(Embedding, Ipv4Addr)>)> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4).map(|class| (class, None)),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

/// (network, prefix length, class); the first match wins, so narrower ranges come first.
const V4_RANGES: &[(Ipv4Addr, u8, AddressClass)] = &[
    (Ipv4Addr::new(0, 0, 0, 0), 8, AddressClass::Unspecified), // "this network"
    (Ipv4Addr::new(10, 0, 0, 0), 8, AddressClass::Private),
    (Ipv4Addr::new(100, 64, 0, 0), 10, AddressClass::SharedNat),
    (Ipv4Addr::new(127, 0, 0, 0), 8, AddressClass::Loopback),
    (Ipv4Addr::new(169, 254, 169, 254), 32, AddressClass::CloudMetadata),
    (Ipv4Addr::new(169, 254, 0, 0), 16, AddressClass::LinkLocal),
    (Ipv4Addr::new(172, 16, 0, 0), 12, AddressClass::Private),
    (Ipv4Addr::new(192, 0, 0, 0), 24, AddressClass::Reserved), // IETF protocol assignments
    (Ipv4Addr::new(192, 0, 2, 0), 24, AddressClass::Documentation),
    (Ipv4Addr::new(192, 88, 99, 0), 24, AddressClass::Reserved), // 6to4 relay anycast
    (Ipv4Addr::new(192, 168, 0, 0), 16, AddressClass::Private),
    (Ipv4Addr::new(198, 18, 0, 0), 15, AddressClass::Benchmarking),
    (Ipv4Addr::new(198, 51, 100, 0), 24, AddressClass::Documentation),
    (Ipv4Addr::new(203, 0, 113, 0), 24, AddressClass::Documentation),
    (Ipv4Addr::new(224, 0, 0, 0), 4, AddressClass::Multicast),
    (Ipv4Addr::new(255, 255, 255, 255), 32, AddressClass::Broadcast),
    (Ipv4Addr::new(240, 0, 0, 0), 4, AddressClass::Reserved),
];

fn classify_v4(ip: Ipv4Addr) -> Option<AddressClass> {
    let n = ip.to_bits();
    V4_RANGES.iter().find(|(net, len, _)| n >> (32 - len) == net.to_bits() >> (32 - len)).map(|(_, _, class)| *class)
}

const fn v6(a: u16, b: u16, c: u16) -> u128 {
    Ipv6Addr::new(a, b, c, 0, 0, 0, 0, 0).to_bits()
}

const V6_RANGES: &[(u128, u8, AddressClass)] = &[
    (v6(0x100, 0, 0), 64, AddressClass::Reserved),     // discard-only
    (v6(0x64, 0xff9b, 1), 48, AddressClass::Reserved), // local-use NAT64
    (v6(0x2001, 2, 0), 48, AddressClass::Benchmarking),
    (v6(0x2001, 0xdb8, 0), 32, AddressClass::Documentation),
    (v6(0x2001, 0, 0), 23, AddressClass::Reserved), // IETF protocol assignments
    (v6(0x3fff, 0, 0), 20, AddressClass::Documentation),
    (v6(0xfc00, 0, 0), 7, AddressClass::UniqueLocal),
    (v6(0xfe80, 0, 0), 10, AddressClass::LinkLocal),
    (v6(0xfec0, 0, 0), 10, AddressClass::SiteLocal),
    (v6(0xff00, 0, 0), 8, AddressClass::Multicast),
];

const MAPPED: u128 = Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0, 0).to_bits();

fn in_v6(n: u128, net: u128, len: u8) -> bool {
    n >> (128 - len) == net >> (128 - len)
}

fn low_v4(n: u128) -> Ipv4Addr {
    Ipv4Addr::from_bits(n as u32)
}

fn classify_v6(ip: Ipv6Addr) -> Option<(AddressClass, Option<(Embedding, Ipv4Addr)>)> {
    let n = u128::from(ip);
    if n == 0 {
        return Some((AddressClass::Unspecified, None));
    }
    if n == 1 {
        return Some((AddressClass::Loopback, None));
    }
    // Forms that reach an IPv4 host: judged by that host. Compatible addresses are
    // deprecated, so even a public one is refused.
    let embedded = if in_v6(n, MAPPED, 96) {
        Some((Embedding::Mapped, low_v4(n), None))
    } else if in_v6(n, 0, 96) {
        Some((Embedding::Compatible, low_v4(n), Some(AddressClass::Reserved)))
    } else if in_v6(n, v6(0x64, 0xff9b, 0), 96) {
        Some((Embedding::Nat64, low_v4(n), None))
    } else if in_v6(n, v6(0x2002, 0, 0), 16) {
        Some((Embedding::SixToFour, low_v4(n >> 80), None))
    } else if in_v6(n, v6(0x2001, 0, 0), 32) {
        // Teredo: the client's address is the last 32 bits, inverted.
        Some((Embedding::Teredo, low_v4(!n), None))
    } else {
        None
    };
    if let Some((how, v4, fallback)) = embedded {
        return classify_v4(v4).or(fallback).map(|class| (class, Some((how, v4))));
    }
    if let Some((_, _, class)) = V6_RANGES.iter().find(|(net, len, _)| in_v6(n, *net, *len)) {
        return Some((*class, None));
    }
    // Everything outside global unicast is unassigned or special.
    if !in_v6(n, v6(0x2000, 0, 0), 3) {
        return Some((AddressClass::Reserved, None));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use AddressClass::*;

    fn production() -> FetchConfig {
        FetchConfig::default()
    }

    /// (address, expected class, or None for allowed)
    const TABLE: &[(&str, Option<AddressClass>)] = &[
        // IPv4 public
        ("1.1.1.1", None),
        ("8.8.8.8", None),
        ("93.184.215.14", None),
        ("100.63.255.255", None),
        ("100.128.0.0", None),
        ("172.15.255.255", None),
        ("172.32.0.0", None),
        ("192.0.1.1", None),
        ("192.169.0.1", None),
        ("198.17.255.255", None),
        ("198.20.0.0", None),
        ("223.255.255.255", None),
        // IPv4 special
        ("0.0.0.0", Some(Unspecified)),
        ("0.1.2.3", Some(Unspecified)),
        ("10.0.0.1", Some(Private)),
        ("10.255.255.255", Some(Private)),
        ("100.64.0.1", Some(SharedNat)),
        ("100.100.100.200", Some(SharedNat)),
        ("127.0.0.1", Some(Loopback)),
        ("127.0.0.2", Some(Loopback)),
        ("127.255.255.254", Some(Loopback)),
        ("169.254.169.254", Some(CloudMetadata)),
        ("169.254.0.1", Some(LinkLocal)),
        ("169.254.170.2", Some(LinkLocal)),
        ("172.16.0.1", Some(Private)),
        ("172.31.255.255", Some(Private)),
        ("192.0.0.192", Some(Reserved)),
        ("192.0.2.1", Some(Documentation)),
        ("192.88.99.1", Some(Reserved)),
        ("192.168.1.1", Some(Private)),
        ("198.18.0.1", Some(Benchmarking)),
        ("198.19.255.255", Some(Benchmarking)),
        ("198.51.100.7", Some(Documentation)),
        ("203.0.113.9", Some(Documentation)),
        ("224.0.0.1", Some(Multicast)),
        ("239.255.255.250", Some(Multicast)),
        ("240.0.0.1", Some(Reserved)),
        ("255.255.255.255", Some(Broadcast)),
        // IPv6 public
        ("2606:4700:4700::1111", None),
        ("2a00:1450:4001:81b::200e", None),
        ("2001:4860:4860::8888", None),
        ("::ffff:8.8.8.8", None),
        ("64:ff9b::808:808", None),
        ("2002:808:808::1", None),
        // IPv6 special
        ("::", Some(Unspecified)),
        ("::1", Some(Loopback)),
        ("fc00::1", Some(UniqueLocal)),
        ("fd00:ec2::254", Some(UniqueLocal)),
        ("fe80::1", Some(LinkLocal)),
        ("febf:ffff::1", Some(LinkLocal)),
        ("fec0::1", Some(SiteLocal)),
        ("ff02::1", Some(Multicast)),
        ("ff05::1:3", Some(Multicast)),
        ("100::1", Some(Reserved)),
        ("2001:db8::1", Some(Documentation)),
        ("3fff::1", Some(Documentation)),
        ("2001:2::1", Some(Benchmarking)),
        ("2001:10::1", Some(Reserved)),
        ("64:ff9b:1::1", Some(Reserved)),
        ("4000::1", Some(Reserved)),
        ("1::1", Some(Reserved)),
        // IPv4 inside IPv6
        ("::ffff:127.0.0.1", Some(Loopback)),
        ("::ffff:7f00:1", Some(Loopback)),
        ("::ffff:169.254.169.254", Some(CloudMetadata)),
        ("::ffff:10.0.0.1", Some(Private)),
        ("::ffff:0.0.0.0", Some(Unspecified)),
        ("::127.0.0.1", Some(Loopback)),
        ("::8.8.8.8", Some(Reserved)),
        ("64:ff9b::a9fe:a9fe", Some(CloudMetadata)),
        ("64:ff9b::7f00:1", Some(Loopback)),
        ("2002:a00:1::", Some(Private)),
        ("2002:7f00:1::1", Some(Loopback)),
        ("2001:0:4136:e378:8000:63bf:f5ff:fffe", Some(Private)), // Teredo client 10.0.0.1
        ("2001:0:4136:e378:8000:63bf:f7f7:f7f7", None),          // Teredo client 8.8.8.8
    ];

    #[test]
    fn address_table() {
        let config = production();
        for (text, expected) in TABLE {
            let ip: IpAddr = text.parse().unwrap();
            let got = address_allowed(ip, &config).err().map(|d| d.class);
            assert_eq!(got, *expected, "{text}");
        }
    }

    #[test]
    fn reasons_name_the_address_and_the_range() {
        let config = production();
        let reason = |s: &str| address_allowed(s.parse().unwrap(), &config).unwrap_err().to_string();
        assert_eq!(reason("127.0.0.1"), "127.0.0.1 is a loopback address");
        assert_eq!(reason("169.254.169.254"), "169.254.169.254 is the cloud metadata address (link-local)");
        assert_eq!(
            reason("::ffff:169.254.169.254"),
            "::ffff:169.254.169.254 embeds 169.254.169.254 (IPv4-mapped), the cloud metadata address (link-local)"
        );
        assert_eq!(reason("10.1.2.3"), "10.1.2.3 is a private (RFC 1918) address");
        assert_eq!(reason("fd00::1"), "fd00::1 is a unique-local (fc00::/7) address");
    }

    #[test]
    fn allowed_networks_exempt_exactly_what_they_list() {
        let config = FetchConfig {
            allowed_private_networks: vec!["127.0.0.2/32".parse().unwrap(), "127.0.0.3/32".parse().unwrap()],
            ..FetchConfig::default()
        };
        for ok in ["127.0.0.2", "127.0.0.3", "8.8.8.8"] {
            assert_eq!(address_allowed(ok.parse().unwrap(), &config), Ok(()), "{ok}");
        }
        for denied in ["127.0.0.1", "127.0.0.4", "::ffff:127.0.0.2", "::1", "10.0.0.1", "169.254.169.254"] {
            assert!(address_allowed(denied.parse().unwrap(), &config).is_err(), "{denied}");
        }
    }
}
