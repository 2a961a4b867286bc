//! Why a fetch did not happen. Each message is specific enough to show to the model.

use std::net::IpAddr;
use std::time::Duration;

use super::address::AddressDenied;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    // Refusals: the request is not allowed.
    #[error("web fetch is disabled for this user")]
    Disabled,
    #[error("the URL is longer than {0} characters")]
    UrlTooLong(usize),
    #[error("the URL is not valid: {0}")]
    InvalidUrl(String),
    #[error("http:// is not allowed, use https://")]
    HttpNotAllowed,
    #[error("{0}: URLs are not allowed, only https://")]
    Scheme(String),
    #[error("URLs with a user name or password are not allowed")]
    Userinfo,
    #[error("the URL has no host")]
    NoHost,
    #[error("{0} is not a valid host name")]
    InvalidHost(String),
    #[error("{0} is not a public domain name")]
    NotPublicName(String),
    #[error("port {port} is not allowed (allowed: {})", join(allowed))]
    Port { port: u16, allowed: Vec<u16> },
    #[error("{host} is not in allowedDomains ({})", if allowed.is_empty() { "the list is empty".to_string() } else { allowed.join(", ") })]
    DomainNotAllowed { host: String, allowed: Vec<String> },
    #[error("{0}: IP address hosts are not allowed, use a domain name")]
    IpLiteral(IpAddr),
    #[error("{0}")]
    Address(AddressDenied),
    #[error("{host} resolves to a forbidden address: {denied}")]
    ResolvedAddress { host: String, denied: AddressDenied },
    #[error("too many redirects (more than {0})")]
    TooManyRedirects(usize),
    #[error("redirect from {from} has no valid Location")]
    BadRedirect { from: String },

    // Failures: allowed, but it did not work.
    #[error("cannot resolve {host}: {reason}")]
    Dns { host: String, reason: String },
    #[error("{0} does not resolve to any address")]
    NoAddress(String),
    #[error("cannot connect to {host}: {reason}")]
    Connect { host: String, reason: String },
    #[error("the request to {host} failed: {reason}")]
    Request { host: String, reason: String },
    #[error("timed out after {}", seconds(.0))]
    Timeout(Duration),
    #[error("the page could not be turned into text: {0}")]
    Convert(String),
}

impl FetchError {
    /// `true` when the URL (or where it led) is not allowed; `false` when an allowed fetch
    /// failed. The gateway answers 403 for the first, a gateway error for the second.
    pub fn is_refusal(&self) -> bool {
        !matches!(
            self,
            Self::Dns { .. }
                | Self::NoAddress(_)
                | Self::Connect { .. }
                | Self::Request { .. }
                | Self::Timeout(_)
                | Self::Convert(_)
        )
    }
}

fn join(ports: &[u16]) -> String {
    ports.iter().map(u16::to_string).collect::<Vec<_>>().join(", ")
}

fn seconds(d: &Duration) -> String {
    if d.subsec_millis() == 0 { format!("{} s", d.as_secs()) } else { format!("{} ms", d.as_millis()) }
}

/// The fetcher could not be built (TLS set-up).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot set up the web fetcher: {0}")]
pub struct SetupError(pub String);
