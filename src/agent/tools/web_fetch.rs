//! The `web_fetch` tool: through the broker only (its `broker::web_fetch_endpoint`, which
//! fetches with `gateway::web_fetch`). The broker enforces `allowedDomains` and public
//! addresses; the agent checks the profile first as well, so a refused URL never leaves the pod.
//!
//! Broker contract: `POST {broker}/v1/fetch`, bearer token, body `{"url": "..."}`;
//! answer 200 `{"status": u16, "content_type": "...", "text": "..."}` (the page's own status),
//! 403 when the broker refuses the URL, other statuses when it fails.

use std::time::Duration;

use reqwest::Url;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use serde::Deserialize;

use crate::http::CappedRead;
use crate::profile::WebFetchPolicy;
use crate::secret::Secret;

pub const MAX_URL: usize = 2048;
/// The broker's answer is read up to this many bytes.
const MAX_BROKER_BODY: usize = 2 * 1024 * 1024;

/// Whether the profile lets the agent fetch `raw`; the parsed URL, or the reason it may not.
pub fn check_url(raw: &str, policy: &WebFetchPolicy) -> Result<Url, String> {
    if !policy.enabled {
        return Err("web_fetch is disabled for this profile".into());
    }
    if raw.len() > MAX_URL {
        return Err(format!("the URL is longer than {MAX_URL} characters"));
    }
    let url = Url::parse(raw.trim()).map_err(|e| format!("{raw:?} is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("scheme {:?} refused: only http and https", url.scheme()));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("URLs with credentials are refused".into());
    }
    // `domain()` is `None` for IP literals.
    let host = match (url.domain(), url.host_str()) {
        (Some(domain), _) => domain.trim_end_matches('.').to_ascii_lowercase(),
        (None, Some(_)) => return Err("IP addresses are refused; use a domain name".into()),
        (None, None) => return Err("the URL has no host".into()),
    };
    if !host.contains('.') {
        return Err(format!("{host:?} is not a public domain name"));
    }
    if let Some(allowed) = &policy.allowed_domains {
        let matches = allowed.iter().any(|d| {
            let d = d.trim().trim_end_matches('.').to_ascii_lowercase();
            !d.is_empty() && (host == d || host.ends_with(&format!(".{d}")))
        });
        if !matches {
            let list = if allowed.is_empty() { "none".to_string() } else { allowed.join(", ") };
            return Err(format!("{host} is not in allowedDomains (allowed: {list})"));
        }
    }
    Ok(url)
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Fetched {
    pub status: u16,
    #[serde(default)]
    pub content_type: String,
    #[serde(default)]
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    #[error("the broker refused: {0}")]
    Refused(String),
    #[error("the fetch failed: {0}")]
    Failed(String),
}

#[derive(Clone)]
pub struct WebFetcher {
    http: reqwest::Client,
    endpoint: String,
    token: Secret<String>,
    pub policy: WebFetchPolicy,
}

impl WebFetcher {
    pub fn new(
        endpoint: String,
        token: Secret<String>,
        policy: WebFetchPolicy,
        timeout: Duration,
    ) -> Result<Self, reqwest::Error> {
        let http = crate::agent::broker_client::builder(timeout)
            // The broker is the only peer; a redirect would lead somewhere else.
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self { http, endpoint, token, policy })
    }

    pub async fn fetch(&self, url: &Url) -> Result<Fetched, FetchError> {
        let body = serde_json::json!({ "url": url.as_str() }).to_string();
        let response = self
            .http
            .post(&self.endpoint)
            .header(AUTHORIZATION, format!("Bearer {}", self.token.expose()))
            .header(CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| {
                FetchError::Failed(if e.is_timeout() {
                    "timed out".into()
                } else {
                    "the broker cannot be reached".into()
                })
            })?;
        let status = response.status();
        let bytes = crate::http::read_capped(response, MAX_BROKER_BODY).await.map_err(|e| match e {
            CappedRead::TooLarge => FetchError::Failed(format!("the answer is larger than {MAX_BROKER_BODY} bytes")),
            CappedRead::Failed(e) => FetchError::Failed(format!("reading the answer: {e}")),
        })?;
        // The broker's errors are `{"error": "reason"}`; show the reason, not the JSON.
        let text = || {
            let reason = serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
                .unwrap_or_else(|| String::from_utf8_lossy(&bytes).trim().to_string());
            crate::agent::history::truncate(&reason, 300).0
        };
        match status.as_u16() {
            200 => serde_json::from_slice(&bytes)
                .map_err(|e| FetchError::Failed(format!("the broker's answer is not a fetch result: {e}"))),
            403 => Err(FetchError::Refused(text())),
            other => Err(FetchError::Failed(format!("the broker answered {other}: {}", text()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(domains: Option<&[&str]>) -> WebFetchPolicy {
        WebFetchPolicy { enabled: true, allowed_domains: domains.map(|d| d.iter().map(|s| s.to_string()).collect()) }
    }

    #[test]
    fn allowed_domains_and_subdomains_only() {
        let p = policy(Some(&["wikipedia.org", "Docs.Python.org."]));
        for ok in ["https://wikipedia.org/x", "https://en.wikipedia.org/wiki/Cat", "http://DOCS.python.org./3/"] {
            assert!(check_url(ok, &p).is_ok(), "{ok}");
        }
        for (bad, why) in [
            ("https://evil.com/?q=wikipedia.org", "allowedDomains"),
            ("https://wikipedia.org.evil.com/", "allowedDomains"),
            ("https://notwikipedia.org/", "allowedDomains"),
            ("https://127.0.0.1/", "IP addresses"),
            ("http://[::1]/", "IP addresses"),
            ("http://moltmate-broker:8081/", "public domain"),
            ("file:///etc/passwd", "scheme"),
            ("https://user:pw@wikipedia.org/", "credentials"),
            ("not a url", "not a URL"),
        ] {
            let err = check_url(bad, &p).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn disabled_or_empty_list_allows_nothing_and_none_allows_public_domains() {
        let mut p = policy(None);
        assert!(check_url("https://example.org/", &p).is_ok());
        p.enabled = false;
        assert!(check_url("https://example.org/", &p).unwrap_err().contains("disabled"));
        let empty = policy(Some(&[]));
        assert!(check_url("https://example.org/", &empty).unwrap_err().contains("allowed: none"));
    }
}
