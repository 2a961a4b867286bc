//! Everything about a URL that can be decided without the network. Pure: no I/O.
//!
//! Hosts are compared in the form DNS will see: WHATWG-parsed (percent-decoding, IDNA to
//! punycode, lowercase, IPv4 number forms such as `0x7f.1`), one trailing dot removed.

use std::net::IpAddr;

use url::{Host, Url};

use super::address::address_allowed;
use super::{FetchConfig, FetchError};
use crate::profile::WebFetchPolicy;

/// Longer URLs are refused before parsing.
pub const MAX_URL_LEN: usize = 2048;

/// A URL that passed every check that needs no network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Without its fragment, which is never sent.
    pub url: Url,
    /// The host as DNS sees it (or the IP literal's text), for messages and logs.
    pub host: String,
    /// `Some` for an IP-literal host, already checked against the address rules.
    pub ip: Option<IpAddr>,
}

/// The ASCII form of a domain name, or `None` if it is not one: IDNA-mapped and
/// punycoded, lowercase, one trailing dot removed, only letters, digits, `-` and `_`, no
/// empty label. IP addresses are not domain names.
pub fn normalize_domain(name: &str) -> Option<String> {
    let name = name.trim();
    let name = name.strip_suffix('.').unwrap_or(name);
    let Ok(Host::Domain(ascii)) = Host::parse(name) else { return None };
    let ascii = ascii.to_ascii_lowercase();
    let ldh =
        |label: &str| !label.is_empty() && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    ascii.split('.').all(ldh).then_some(ascii)
}

/// Whether `host` is one of `allowed` or a subdomain of one. Both sides are normalised
/// first; an entry that is not a valid domain name (`""`, `.org`, `*.example.org`)
/// matches nothing.
pub fn host_allowed(host: &str, allowed: &[String]) -> bool {
    let Some(host) = normalize_domain(host) else { return false };
    allowed
        .iter()
        .filter_map(|entry| normalize_domain(entry))
        .any(|domain| host == domain || host.strip_suffix(&domain).is_some_and(|prefix| prefix.ends_with('.')))
}

/// Parse `raw` and check it as `check_target` does.
pub fn check_url(raw: &str, policy: &WebFetchPolicy, config: &FetchConfig) -> Result<Target, FetchError> {
    if raw.len() > MAX_URL_LEN {
        return Err(FetchError::UrlTooLong(MAX_URL_LEN));
    }
    let url = Url::parse(raw.trim()).map_err(|e| FetchError::InvalidUrl(e.to_string()))?;
    check_target(url, policy, config)
}

/// Scheme, credentials, port, host, `allowedDomains` and (for IP literals) the address
/// rules. Run on the first URL and again on every redirect target.
pub fn check_target(mut url: Url, policy: &WebFetchPolicy, config: &FetchConfig) -> Result<Target, FetchError> {
    if url.as_str().len() > MAX_URL_LEN {
        return Err(FetchError::UrlTooLong(MAX_URL_LEN));
    }
    match url.scheme() {
        "https" => {}
        "http" if config.allow_http => {}
        "http" => return Err(FetchError::HttpNotAllowed),
        other => return Err(FetchError::Scheme(other.to_string())),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(FetchError::Userinfo);
    }
    let port = url.port_or_known_default().ok_or(FetchError::NoHost)?;
    let ports = config.allowed_ports();
    if !ports.contains(&port) {
        return Err(FetchError::Port { port, allowed: ports });
    }
    url.set_fragment(None);
    let (host, ip) = match url.host() {
        None => return Err(FetchError::NoHost),
        Some(Host::Domain(name)) => {
            let host = normalize_domain(name).ok_or_else(|| FetchError::InvalidHost(name.to_string()))?;
            // Single labels resolve through search domains to cluster services.
            if !host.contains('.') || host == "localhost" || host.ends_with(".localhost") {
                return Err(FetchError::NotPublicName(host));
            }
            (host, None)
        }
        Some(Host::Ipv4(v4)) => (v4.to_string(), Some(IpAddr::V4(v4))),
        Some(Host::Ipv6(v6)) => (v6.to_string(), Some(IpAddr::V6(v6))),
    };
    if ip.is_none() && url.host_str() != Some(host.as_str()) {
        // Send the canonical name (no trailing dot): Host header, SNI and pool key agree
        // with what was checked.
        url.set_host(Some(&host)).map_err(|_| FetchError::InvalidHost(host.clone()))?;
    }
    if let Some(ip) = ip {
        address_allowed(ip, config).map_err(FetchError::Address)?;
        if !config.allow_ip_literals {
            return Err(FetchError::IpLiteral(ip));
        }
    }
    if let Some(allowed) = &policy.allowed_domains {
        // An IP literal is never a subdomain of anything.
        if ip.is_some() || !host_allowed(&host, allowed) {
            return Err(FetchError::DomainNotAllowed { host, allowed: allowed.clone() });
        }
    }
    Ok(Target { url, host, ip })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn host_allowed_table() {
        let family = list(&["wikipedia.org", "docs.python.org"]);
        let rows: &[(&str, &[String], bool)] = &[
            ("wikipedia.org", &family, true),
            ("en.wikipedia.org", &family, true),
            ("a.b.c.wikipedia.org", &family, true),
            ("WikiPedia.ORG", &family, true),
            ("wikipedia.org.", &family, true),
            ("en.wikipedia.org.", &family, true),
            ("docs.python.org", &family, true),
            ("3.docs.python.org", &family, true),
            ("ｗｉｋｉｐｅｄｉａ.org", &family, true), // full-width letters map to ASCII (UTS 46)
            ("python.org", &family, false),
            ("evilwikipedia.org", &family, false),
            ("wikipedia.org.evil.com", &family, false),
            ("wikipedia.org-evil.com", &family, false),
            ("wikipedia.com", &family, false),
            ("wikipedia", &family, false),
            ("org", &family, false),
            ("wikipedia.org..", &family, false),
            ("wikipediа.org", &family, false), // Cyrillic а: xn--wikipedi-86g.org
            ("wikipédia.org", &family, false),
            ("xn--wikipedi-86g.org", &family, false),
            ("", &family, false),
            ("127.0.0.1", &family, false),
            ("en.wikipedia.org", &[], false),
            ("anything.org", &list(&[""]), false),
            ("anything.org", &list(&["."]), false),
            ("en.wikipedia.org", &list(&["*.wikipedia.org"]), false),
            ("en.wikipedia.org", &list(&[".wikipedia.org"]), false),
            ("en.wikipedia.org", &list(&[" Wikipedia.Org. "]), true),
            ("bücher.de", &list(&["xn--bcher-kva.de"]), true),
            ("xn--bcher-kva.de", &list(&["bücher.de"]), true),
            ("shop.bücher.de", &list(&["BÜCHER.de"]), true),
            ("buecher.de", &list(&["bücher.de"]), false),
            ("example.org", &list(&["org"]), true), // an admin may allow a whole TLD
            ("evil.com", &list(&["127.0.0.1"]), false),
        ];
        assert!(rows.len() >= 20);
        for (host, allowed, expected) in rows {
            assert_eq!(host_allowed(host, allowed), *expected, "{host:?} in {allowed:?}");
        }
    }

    fn policy(domains: Option<&[&str]>) -> WebFetchPolicy {
        WebFetchPolicy { enabled: true, allowed_domains: domains.map(list) }
    }

    #[test]
    fn url_table() {
        let any = policy(None);
        let family = policy(Some(&["wikipedia.org", "docs.python.org"]));
        let prod = FetchConfig::default();
        // (url, policy, Ok(host) or Err(start of the reason))
        let rows: &[(&str, &WebFetchPolicy, Result<&str, &str>)] = &[
            ("https://en.wikipedia.org/wiki/Cat", &family, Ok("en.wikipedia.org")),
            ("https://EN.Wikipedia.org./wiki/Cat#History", &family, Ok("en.wikipedia.org")),
            ("https://wiki%70edia.org/", &family, Ok("wikipedia.org")),
            ("https://example.org:443/", &any, Ok("example.org")),
            ("  https://example.org/  ", &any, Ok("example.org")),
            (
                "https://example.org/",
                &family,
                Err("example.org is not in allowedDomains (wikipedia.org, docs.python.org)"),
            ),
            ("https://wikipedia.org.evil.com/", &family, Err("wikipedia.org.evil.com is not in allowedDomains")),
            ("https://evil.com\\@wikipedia.org/", &family, Err("evil.com is not in allowedDomains")), // `\` is `/`
            ("https://evil.com\\.wikipedia.org/", &family, Err("evil.com is not in allowedDomains")),
            ("https://wikipediа.org/", &family, Err("xn--wikipedi-86g.org is not in allowedDomains")),
            ("http://en.wikipedia.org/", &family, Err("http:// is not allowed, use https://")),
            ("file:///etc/passwd", &any, Err("file: URLs are not allowed")),
            ("gopher://example.org/", &any, Err("gopher: URLs are not allowed")),
            ("data:text/plain,hello", &any, Err("data: URLs are not allowed")),
            ("ftp://example.org/", &any, Err("ftp: URLs are not allowed")),
            ("javascript:alert(1)", &any, Err("javascript: URLs are not allowed")),
            ("https://user:pw@example.org/", &any, Err("URLs with a user name or password")),
            ("https://user@example.org/", &any, Err("URLs with a user name or password")),
            ("https://example.org:8443/", &any, Err("port 8443 is not allowed")),
            ("https://example.org:80/", &any, Err("port 80 is not allowed")),
            ("https://127.0.0.1/", &any, Err("127.0.0.1 is a loopback address")),
            ("https://0x7f.1/", &any, Err("127.0.0.1 is a loopback address")),
            ("https://2130706433/", &any, Err("127.0.0.1 is a loopback address")),
            ("https://017700000001/", &any, Err("127.0.0.1 is a loopback address")),
            ("https://169.254.169.254/latest/meta-data/", &any, Err("169.254.169.254 is the cloud metadata address")),
            ("https://[::ffff:127.0.0.1]/", &any, Err("::ffff:127.0.0.1 embeds 127.0.0.1 (IPv4-mapped), a loopback")),
            ("https://[::1]/", &any, Err("::1 is a loopback address")),
            ("https://[fd00:ec2::254]/", &any, Err("fd00:ec2::254 is a unique-local")),
            ("https://8.8.8.8/", &any, Err("8.8.8.8: IP address hosts are not allowed")),
            ("https://localhost/", &any, Err("localhost is not a public domain name")),
            ("https://kubernetes/", &any, Err("kubernetes is not a public domain name")),
            ("https://a.localhost/", &any, Err("a.localhost is not a public domain name")),
            ("https:///path", &any, Err("")),
            ("not a url", &any, Err("the URL is not valid")),
            ("https://exa mple.org/", &any, Err("the URL is not valid")),
            ("https://ex*ample.org/", &any, Err("ex*ample.org is not a valid host name")),
        ];
        for (url, policy, expected) in rows {
            let got = check_url(url, policy, &prod);
            match (expected, &got) {
                (Ok(host), Ok(target)) => assert_eq!(&target.host, host, "{url}"),
                (Err(reason), Err(e)) => assert!(e.to_string().starts_with(reason), "{url}: {e}"),
                _ => panic!("{url}: expected {expected:?}, got {got:?}"),
            }
        }
        let long = format!("https://example.org/{}", "a".repeat(MAX_URL_LEN));
        assert!(matches!(check_url(&long, &any, &prod), Err(FetchError::UrlTooLong(_))));
        let target = check_url("https://en.wikipedia.org/a?b=c#frag", &family, &prod).unwrap();
        assert_eq!(target.url.as_str(), "https://en.wikipedia.org/a?b=c");
        let target = check_url("https://EN.Wikipedia.org./a", &family, &prod).unwrap();
        assert_eq!(target.url.as_str(), "https://en.wikipedia.org/a");
    }

    #[test]
    fn test_relaxations_are_explicit() {
        let any = policy(None);
        let local = FetchConfig {
            allow_http: true,
            allow_ip_literals: true,
            allowed_private_networks: vec!["127.0.0.2/32".parse().unwrap()],
            extra_ports: vec![8080],
            ..FetchConfig::default()
        };
        for ok in ["http://127.0.0.2:8080/", "http://127.0.0.2/", "https://8.8.8.8/", "http://example.org:8080/"] {
            assert!(check_url(ok, &any, &local).is_ok(), "{ok}");
        }
        for bad in [
            "http://127.0.0.1:8080/",
            "http://169.254.169.254/",
            "http://10.0.0.1/",
            "http://127.0.0.2:8081/",
            "http://[::ffff:127.0.0.2]/",
        ] {
            assert!(check_url(bad, &any, &local).is_err(), "{bad}");
        }
        // allowedDomains still applies to IP literals.
        let family = policy(Some(&["wikipedia.org"]));
        assert!(matches!(
            check_url("http://127.0.0.2:8080/", &family, &local),
            Err(FetchError::DomainNotAllowed { .. })
        ));
    }
}
