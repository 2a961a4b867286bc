//! The agent's HTTP client: its one peer is the broker, over the cluster's plain HTTP.
//!
//! It trusts no certificate authority. The sandbox image carries none (nothing in it needs
//! one), and reqwest's default, the platform verifier, refuses to build a client on a system
//! without any: the agent would not start. With no roots, an HTTPS URL fails its handshake,
//! which is right for an agent whose every byte out goes through the broker.

use std::time::Duration;

/// A client builder with `timeout` per request (and at most 10 s to connect).
pub fn builder(timeout: Duration) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .tls_certs_only(std::iter::empty())
}
