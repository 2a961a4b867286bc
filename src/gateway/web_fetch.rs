//! The web fetcher behind the broker's `POST /v1/fetch` (served by
//! `broker::web_fetch_endpoint`, called by the agent's `agent::tools::web_fetch`): a URL in,
//! readable text out, within one user's policy.
//!
//! Every agent is assumed hostile, so this is an SSRF boundary. On the first URL and again
//! on every redirect:
//! 1. `policy`: scheme, credentials, port, host and `allowedDomains`, without the network;
//!    IP-literal hosts are checked against the address rules here, as the client never
//!    resolves them;
//! 2. `resolve`: the name is resolved once, every address checked (`address`), and the
//!    client connects only to those addresses (no rebinding window);
//! 3. here: redirects followed by hand, the body read up to the cap while streaming, the
//!    whole fetch under one deadline; `text` turns the body into text.

mod address;
mod error;
mod policy;
mod resolve;
mod text;

use std::sync::Arc;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use reqwest::StatusCode;
use reqwest::header::{self, HeaderMap, HeaderValue};
use rustls::pki_types::CertificateDer;

pub use address::{AddressClass, AddressDenied, Embedding, address_allowed};
pub use error::{FetchError, SetupError};
use policy::check_target;
pub use policy::{MAX_URL_LEN, Target, check_url, host_allowed, normalize_domain};
pub use resolve::{Lookup, SystemLookup};

use crate::profile::WebFetchPolicy;
use text::{ContentType, ConvertError, Kind};

/// How the fetcher behaves. `Default` is the production setting; every field marked
/// "tests only" loosens it and must stay at its default in production.
#[derive(Debug, Clone)]
pub struct FetchConfig {
    /// Allow `http://` URLs (and port 80). Tests only.
    pub allow_http: bool,
    /// Allow IP-address hosts; the address rules still apply. Tests only.
    pub allow_ip_literals: bool,
    /// Addresses exempt from the address rules, such as `127.0.0.2/32`. Tests only.
    pub allowed_private_networks: Vec<IpNet>,
    /// Ports allowed besides 443 (and 80 with `allow_http`). Tests only.
    pub extra_ports: Vec<u16>,
    /// Trusted in addition to the system's root certificates. Tests only.
    pub extra_root_certificates: Vec<CertificateDer<'static>>,
    /// Body bytes read at most; the rest is never downloaded.
    pub max_bytes: usize,
    /// For the whole fetch: every hop, the body and the conversion to text.
    pub timeout: Duration,
    /// For each TCP (and TLS) connection.
    pub connect_timeout: Duration,
    pub max_redirects: usize,
}

impl Default for FetchConfig {
    fn default() -> Self {
        Self {
            allow_http: false,
            allow_ip_literals: false,
            allowed_private_networks: Vec::new(),
            extra_ports: Vec::new(),
            extra_root_certificates: Vec::new(),
            max_bytes: 2 * 1024 * 1024,
            timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            max_redirects: 5,
        }
    }
}

impl FetchConfig {
    /// 443, 80 when http is allowed, and the extra ports.
    pub fn allowed_ports(&self) -> Vec<u16> {
        let mut ports = vec![443];
        if self.allow_http {
            ports.push(80);
        }
        ports.extend(self.extra_ports.iter().filter(|p| !matches!(p, 80 | 443)));
        ports
    }

    /// `true` when no test-only relaxation is switched on.
    pub fn is_production_safe(&self) -> bool {
        !self.allow_http
            && !self.allow_ip_literals
            && self.allowed_private_networks.is_empty()
            && self.extra_ports.is_empty()
            && self.extra_root_certificates.is_empty()
    }
}

/// A fetched page, as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedPage {
    /// After redirects.
    pub final_url: String,
    /// The page's own status; 4xx and 5xx pages are returned too.
    pub status: u16,
    /// The media type without parameters (`text/html`); empty when the server sent none.
    pub content_type: String,
    /// Readable text, a summary for binary content, and a note at the end when truncated.
    pub text: String,
    /// Body bytes read (0 for binary content, which is not read).
    pub bytes: usize,
    /// The body was longer than `max_bytes`; only that much was read.
    pub truncated: bool,
}

/// The HTTP client with its checking resolver. Cheap to share (`Arc`) and reuse.
pub struct Fetcher {
    client: reqwest::Client,
    config: Arc<FetchConfig>,
}

impl Fetcher {
    /// A fetcher using the system resolver.
    pub fn new(config: FetchConfig) -> Result<Self, SetupError> {
        Self::with_lookup(config, Arc::new(SystemLookup))
    }

    /// A fetcher using `lookup` for names: tests map test names to local addresses.
    pub fn with_lookup(config: FetchConfig, lookup: Arc<dyn Lookup>) -> Result<Self, SetupError> {
        if !config.is_production_safe() {
            tracing::warn!(
                allow_http = config.allow_http,
                allow_ip_literals = config.allow_ip_literals,
                allowed_private_networks = ?config.allowed_private_networks,
                extra_ports = ?config.extra_ports,
                extra_root_certificates = config.extra_root_certificates.len(),
                "web fetch runs with test-only relaxations"
            );
        }
        let config = Arc::new(config);
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_static("text/html, text/plain;q=0.9, */*;q=0.1"));
        // No decompression is compiled in; ask for the body as is.
        headers.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("identity"));
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls_config(&config.extra_root_certificates)?)
            .dns_resolver(Arc::new(resolve::CheckedResolver { lookup, config: config.clone() }))
            // A proxy would resolve and connect for us, past the address checks.
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .referer(false)
            .https_only(!config.allow_http)
            .http1_only()
            .connect_timeout(config.connect_timeout)
            .user_agent(concat!("moltmates-web-fetch/", env!("CARGO_PKG_VERSION")))
            .default_headers(headers)
            .build()
            .map_err(|e| SetupError(e.to_string()))?;
        Ok(Self { client, config })
    }

    pub fn config(&self) -> &FetchConfig {
        &self.config
    }

    /// Fetch `url` for `user` (named in the logs) within `policy`. Every call is logged
    /// with the decision, status and bytes.
    pub async fn fetch(&self, user: &str, policy: &WebFetchPolicy, url: &str) -> Result<FetchedPage, FetchError> {
        let started = Instant::now();
        let deadline = started + self.config.timeout;
        let result = tokio::time::timeout(self.config.timeout, self.fetch_checked(user, policy, url, deadline))
            .await
            .unwrap_or(Err(FetchError::Timeout(self.config.timeout)));
        let elapsed_ms = started.elapsed().as_millis() as u64;
        // Debug formatting escapes whatever the model put in the URL.
        let url: String = url.chars().take(MAX_URL_LEN).collect();
        match &result {
            Ok(page) => tracing::info!(
                user, url = ?url, final_url = %page.final_url, decision = "allowed", status = page.status,
                bytes = page.bytes, truncated = page.truncated, elapsed_ms, "web_fetch"
            ),
            Err(e) => tracing::warn!(
                user, url = ?url, decision = if e.is_refusal() { "denied" } else { "failed" }, reason = %e, elapsed_ms, "web_fetch"
            ),
        }
        result
    }

    async fn fetch_checked(
        &self,
        user: &str,
        policy: &WebFetchPolicy,
        url: &str,
        deadline: Instant,
    ) -> Result<FetchedPage, FetchError> {
        if !policy.enabled {
            return Err(FetchError::Disabled);
        }
        let mut target = check_url(url, policy, &self.config)?;
        let mut redirects = 0;
        loop {
            let response =
                self.client.get(target.url.clone()).send().await.map_err(|e| self.request_error(&target, e))?;
            let status = response.status();
            let location = response.headers().get(header::LOCATION);
            if !is_redirect(status) || location.is_none() {
                return self.read_page(target, response, deadline).await;
            }
            redirects += 1;
            let raw = location.map(|l| String::from_utf8_lossy(l.as_bytes())).unwrap_or_default();
            tracing::info!(user, url = %target.url, status = status.as_u16(), location = ?raw, redirects, "web_fetch redirect");
            if redirects > self.config.max_redirects {
                return Err(FetchError::TooManyRedirects(self.config.max_redirects));
            }
            // Some servers send UTF-8 in Location; `join` percent-encodes it.
            let next = location
                .and_then(|l| std::str::from_utf8(l.as_bytes()).ok())
                .and_then(|l| target.url.join(l).ok())
                .ok_or_else(|| FetchError::BadRedirect { from: target.url.to_string() })?;
            target = check_target(next, policy, &self.config)?;
        }
    }

    async fn read_page(
        &self,
        target: Target,
        mut response: reqwest::Response,
        deadline: Instant,
    ) -> Result<FetchedPage, FetchError> {
        let status = response.status().as_u16();
        let header = |name| response.headers().get(name).and_then(|v: &HeaderValue| v.to_str().ok());
        let content_type = ContentType::parse(header(header::CONTENT_TYPE));
        let encoding =
            header(header::CONTENT_ENCODING).filter(|e| !e.eq_ignore_ascii_case("identity")).map(str::to_string);
        let page = |text, bytes, truncated| FetchedPage {
            final_url: target.url.to_string(),
            status,
            content_type: content_type.essence.clone(),
            text,
            bytes,
            truncated,
        };
        let mut kind = content_type.kind();
        if kind == Kind::Binary || encoding.is_some() {
            let what = match &encoding {
                Some(enc) => format!("{} ({enc}-encoded)", content_type.essence),
                None => content_type.essence.clone(),
            };
            return Ok(page(text::binary_summary(&what, response.content_length()), 0, false));
        }

        let (body, truncated) = self.read_capped(&target, &mut response).await?;
        if kind == Kind::Unknown {
            kind = text::sniff(&body);
        }
        let charset = content_type.charset.as_deref();
        let mut text = match kind {
            Kind::Binary => text::binary_summary(&content_type.essence, Some(body.len() as u64)),
            Kind::Html => {
                let html = text::decode(&body, charset, kind);
                // CPU-bound on up to max_bytes of hostile markup: off the async threads, and a
                // panic in the converter becomes an error instead of taking the broker down.
                match tokio::task::spawn_blocking(move || text::html_to_text(&html, deadline)).await {
                    Ok(Ok(text)) => text,
                    Ok(Err(ConvertError::Deadline)) => return Err(FetchError::Timeout(self.config.timeout)),
                    Ok(Err(ConvertError::Failed(reason))) => return Err(FetchError::Convert(reason)),
                    Err(_) => return Err(FetchError::Convert("the HTML converter crashed".into())),
                }
            }
            Kind::Text | Kind::Unknown => text::decode(&body, charset, kind),
        };
        if truncated {
            text.push_str(&format!(
                "\n\n[truncated: only the first {} of the page were read]",
                human_size(self.config.max_bytes)
            ));
        }
        Ok(page(text, body.len(), truncated))
    }

    /// The body, up to `max_bytes`; `true` if there was more. Stops reading at the cap, so
    /// an endless body costs no more than the cap.
    async fn read_capped(
        &self,
        target: &Target,
        response: &mut reqwest::Response,
    ) -> Result<(Vec<u8>, bool), FetchError> {
        let max = self.config.max_bytes;
        let expected = response.content_length().map_or(0, |n| n.min(max as u64) as usize);
        let mut body = Vec::with_capacity(expected);
        while let Some(chunk) = response.chunk().await.map_err(|e| self.request_error(target, e))? {
            let room = max - body.len();
            if chunk.len() > room {
                body.extend_from_slice(&chunk[..room]);
                return Ok((body, true));
            }
            body.extend_from_slice(&chunk);
        }
        Ok((body, false))
    }

    /// Our own refusal if the resolver gave one (it travels inside reqwest's error),
    /// otherwise the innermost cause, which is the specific one.
    fn request_error(&self, target: &Target, e: reqwest::Error) -> FetchError {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        let mut innermost = e.to_string();
        while let Some(err) = source {
            if let Some(ours) = err.downcast_ref::<FetchError>() {
                return ours.clone();
            }
            innermost = err.to_string();
            source = err.source();
        }
        let host = target.host.clone();
        if e.is_connect() {
            let reason = if e.is_timeout() {
                format!("no connection within {:?}", self.config.connect_timeout)
            } else {
                innermost
            };
            FetchError::Connect { host, reason }
        } else {
            FetchError::Request { host, reason: innermost }
        }
    }
}

fn is_redirect(status: StatusCode) -> bool {
    matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308)
}

/// TLS for the gateway's outbound clients (fetches and the LLM provider): the platform's
/// verification with ring explicitly, rather than the process default (no global state to
/// depend on, never aws-lc-rs: see Cargo.toml); HTTP/1.1, the only protocol our reqwest speaks.
pub(crate) fn tls_config(extra_roots: &[CertificateDer<'static>]) -> Result<rustls::ClientConfig, SetupError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        rustls_platform_verifier::Verifier::new_with_extra_roots(extra_roots.iter().cloned(), provider.clone())
            .map_err(|e| SetupError(e.to_string()))?;
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| SetupError(e.to_string()))?
        // "dangerous" only because it is a custom verifier: the platform's full verification.
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tls)
}

/// `2 MiB`, `512 KiB` or `1000 bytes`.
pub(crate) fn human_size(bytes: usize) -> String {
    match bytes {
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{} MiB", b >> 20),
        b if b >= 1 << 10 && b % (1 << 10) == 0 => format!("{} KiB", b >> 10),
        b => format!("{b} bytes"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_production_safe() {
        let config = FetchConfig::default();
        assert!(config.is_production_safe());
        assert_eq!(config.allowed_ports(), vec![443]);
        assert_eq!((config.max_bytes, config.timeout, config.max_redirects), (2 << 20, Duration::from_secs(10), 5));
        let http = FetchConfig { allow_http: true, extra_ports: vec![80, 8080], ..FetchConfig::default() };
        assert_eq!(http.allowed_ports(), vec![443, 80, 8080]);
        assert!(!http.is_production_safe());
    }

    #[test]
    fn sizes_read_well() {
        assert_eq!(human_size(2 << 20), "2 MiB");
        assert_eq!(human_size(512 << 10), "512 KiB");
        assert_eq!(human_size(1000), "1000 bytes");
    }

    #[test]
    fn fetcher_builds_without_a_process_wide_crypto_provider() {
        assert!(Fetcher::new(FetchConfig::default()).is_ok());
    }

    #[test]
    fn the_fetch_future_can_be_spawned() {
        fn assert_send<T: Send>(_: &T) {}
        let fetcher = Fetcher::new(FetchConfig::default()).unwrap();
        let policy = WebFetchPolicy { enabled: false, allowed_domains: None };
        assert_send(&fetcher.fetch("u1", &policy, "https://example.org/"));
    }

    #[tokio::test]
    async fn disabled_policy_is_refused_before_anything_else() {
        let fetcher = Fetcher::new(FetchConfig::default()).unwrap();
        let off = WebFetchPolicy { enabled: false, allowed_domains: None };
        let err = fetcher.fetch("u1", &off, "file:///etc/passwd").await.unwrap_err();
        assert_eq!(err, FetchError::Disabled);
        assert!(err.is_refusal());
    }
}
