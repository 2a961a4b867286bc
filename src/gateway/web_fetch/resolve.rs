//! Name resolution for the HTTP client: resolve once, check every address, hand the
//! client only checked addresses. The connection goes to exactly what was checked, so a
//! DNS answer that changes between check and connect (rebinding) gains nothing.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use futures::future::BoxFuture;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use super::address::address_allowed;
use super::{FetchConfig, FetchError};

/// Turns a host name into addresses. The production one asks the system resolver; tests
/// plug in a fixed table.
pub trait Lookup: Send + Sync {
    /// `host` is normalised: ASCII, lowercase, without a trailing dot.
    fn lookup<'a>(&'a self, host: &'a str) -> BoxFuture<'a, io::Result<Vec<IpAddr>>>;
}

/// The system resolver (getaddrinfo), always with an absolute name.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemLookup;

impl Lookup for SystemLookup {
    fn lookup<'a>(&'a self, host: &'a str) -> BoxFuture<'a, io::Result<Vec<IpAddr>>> {
        // The trailing dot stops search-domain expansion: in a pod, `evil.com` would
        // otherwise first be tried as `evil.com.<namespace>.svc.cluster.local`.
        let absolute = format!("{host}.");
        Box::pin(async move { Ok(tokio::net::lookup_host((absolute.as_str(), 0)).await?.map(|a| a.ip()).collect()) })
    }
}

/// The client's resolver: refuses the whole name if any address is not allowed, rather
/// than quietly using the others, so a rebinding attempt shows up as a refusal.
pub(super) struct CheckedResolver {
    pub lookup: Arc<dyn Lookup>,
    pub config: Arc<FetchConfig>,
}

impl Resolve for CheckedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let lookup = self.lookup.clone();
        let config = self.config.clone();
        let host = name.as_str().trim_end_matches('.').to_ascii_lowercase();
        Box::pin(async move {
            let addrs = checked_addresses(lookup.as_ref(), &config, &host).await?;
            // Port 0: the client puts in the URL's port.
            let addrs: Addrs = Box::new(addrs.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok(addrs)
        })
    }
}

/// Every address `host` resolves to, if all of them are allowed.
pub(super) async fn checked_addresses(
    lookup: &dyn Lookup,
    config: &FetchConfig,
    host: &str,
) -> Result<Vec<IpAddr>, FetchError> {
    let mut addrs =
        lookup.lookup(host).await.map_err(|e| FetchError::Dns { host: host.to_string(), reason: e.to_string() })?;
    for ip in &addrs {
        address_allowed(*ip, config)
            .map_err(|denied| FetchError::ResolvedAddress { host: host.to_string(), denied })?;
    }
    let mut seen = std::collections::HashSet::new();
    addrs.retain(|ip| seen.insert(*ip));
    if addrs.is_empty() {
        return Err(FetchError::NoAddress(host.to_string()));
    }
    Ok(addrs)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Table(Vec<(&'static str, Vec<IpAddr>)>);

    impl Lookup for Table {
        fn lookup<'a>(&'a self, host: &'a str) -> BoxFuture<'a, io::Result<Vec<IpAddr>>> {
            let found = self.0.iter().find(|(name, _)| *name == host).map(|(_, a)| a.clone());
            Box::pin(async move { found.ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such host")) })
        }
    }

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[tokio::test]
    async fn one_bad_address_refuses_the_name() {
        let table = Table(vec![
            ("good.test", ips(&["127.0.0.2", "127.0.0.2"])),
            ("mixed.test", ips(&["127.0.0.2", "10.0.0.1"])),
            ("mapped.test", ips(&["::ffff:127.0.0.1"])),
            ("empty.test", vec![]),
        ]);
        let config =
            FetchConfig { allowed_private_networks: vec!["127.0.0.2/32".parse().unwrap()], ..FetchConfig::default() };
        assert_eq!(checked_addresses(&table, &config, "good.test").await, Ok(ips(&["127.0.0.2"])));
        let err = checked_addresses(&table, &config, "mixed.test").await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "mixed.test resolves to a forbidden address: 10.0.0.1 is a private (RFC 1918) address"
        );
        assert!(matches!(
            checked_addresses(&table, &config, "mapped.test").await,
            Err(FetchError::ResolvedAddress { .. })
        ));
        assert!(matches!(checked_addresses(&table, &config, "empty.test").await, Err(FetchError::NoAddress(_))));
        assert!(matches!(checked_addresses(&table, &config, "missing.test").await, Err(FetchError::Dns { .. })));
    }
}
