//! The web fetcher against local servers on 127.0.0.2 and 127.0.0.3 (plain HTTP and HTTPS
//! with a throwaway CA), with a test resolver for names. Nothing leaves the machine: every
//! address outside those two is refused before a connection is made, which is what these
//! tests check.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::StreamExt;
use futures::future::BoxFuture;
use moltmates::gateway::web_fetch::{FetchConfig, FetchError, FetchedPage, Fetcher, Lookup};
use moltmates::profile::WebFetchPolicy;
use tokio::net::TcpListener;

// ---------------------------------------------------------------------------------------
// Test servers

#[derive(Clone, Default)]
struct Served {
    /// Bytes the endless body has produced so far.
    endless: Arc<AtomicUsize>,
}

const PAGE: &str = r#"<!doctype html><html><head><title>Cats</title>
<style>.x { color: red }</style><script>document.write("stolen cookie")</script></head>
<body><h1>All about cats</h1><p>Cats are <em>small</em> &amp; furry.</p>
<ul><li>They purr</li><li>They sleep</li></ul><a href="/dogs">Dogs</a></body></html>"#;

fn router(served: Served) -> Router {
    Router::new()
        .route("/page", get(|| async { ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], PAGE) }))
        .route("/plain", get(|| async { "just some text" }))
        .route("/json", get(|| async { ([(header::CONTENT_TYPE, "application/json")], r#"{"a":1}"#) }))
        .route(
            "/image",
            get(|| async { ([(header::CONTENT_TYPE, "image/png")], vec![0x89u8, b'P', b'N', b'G', 0, 0, 0, 0]) }),
        )
        .route("/untyped", get(|| async { Response::new(Body::from("<html><body><p>no type</p></body></html>")) }))
        .route(
            "/latin1",
            get(|| async { ([(header::CONTENT_TYPE, "text/plain; charset=iso-8859-1")], b"caf\xe9".to_vec()) }),
        )
        .route(
            "/missing",
            get(|| async { (StatusCode::NOT_FOUND, [(header::CONTENT_TYPE, "text/html")], "<h1>Not here</h1>") }),
        )
        // `/redirect?<url>`: 302 to the raw query.
        .route("/redirect", get(|uri: Uri| async move { redirect(uri.query().unwrap_or("/")) }))
        .route(
            "/chain/{n}",
            get(|Path(n): Path<u32>| async move {
                if n == 0 { "end of the chain".into_response() } else { redirect(&format!("/chain/{}", n - 1)) }
            }),
        )
        .route(
            "/endless",
            get(|State(s): State<Served>| async move {
                let chunk = Bytes::from(vec![b'a'; 16 * 1024]);
                let stream = futures::stream::repeat(chunk).map(move |c| {
                    s.endless.fetch_add(c.len(), Ordering::SeqCst);
                    Ok::<_, Infallible>(c)
                });
                ([(header::CONTENT_TYPE, "text/plain")], Body::from_stream(stream))
            }),
        )
        // Never answers.
        .route("/slow", get(|| async { futures::future::pending::<&str>().await }))
        // Headers and a first chunk, then nothing.
        .route(
            "/trickle",
            get(|| async {
                let first = futures::stream::once(async { Ok::<_, Infallible>(Bytes::from_static(b"first ")) });
                ([(header::CONTENT_TYPE, "text/plain")], Body::from_stream(first.chain(futures::stream::pending())))
            }),
        )
        .with_state(served)
}

fn redirect(to: &str) -> Response {
    let mut response = StatusCode::FOUND.into_response();
    if let Ok(value) = HeaderValue::from_str(to) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

struct Servers {
    /// 127.0.0.2, where `allowed.test` points.
    allowed: SocketAddr,
    /// 127.0.0.3, where `evil.test` points.
    evil: SocketAddr,
    served: Served,
}

async fn serve(ip: &str, served: Served) -> SocketAddr {
    let listener = TcpListener::bind((ip, 0)).await.expect("bind a loopback address");
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router(served)).await });
    addr
}

async fn servers() -> Servers {
    let served = Served::default();
    Servers {
        allowed: serve("127.0.0.2", served.clone()).await,
        evil: serve("127.0.0.3", served.clone()).await,
        served,
    }
}

// ---------------------------------------------------------------------------------------
// Test resolver, config, policy

struct TestDns(HashMap<&'static str, Vec<IpAddr>>);

impl Lookup for TestDns {
    fn lookup<'a>(&'a self, host: &'a str) -> BoxFuture<'a, io::Result<Vec<IpAddr>>> {
        let found =
            self.0.get(host).cloned().ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such test host"));
        Box::pin(async move { found })
    }
}

fn dns() -> Arc<TestDns> {
    captured_log();
    let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
    Arc::new(TestDns(HashMap::from([
        ("allowed.test", vec![ip("127.0.0.2")]),
        ("www.allowed.test", vec![ip("127.0.0.2")]),
        ("evil.test", vec![ip("127.0.0.3")]),
        ("evilallowed.test", vec![ip("127.0.0.3")]),
        ("allowed.test.evil.test", vec![ip("127.0.0.3")]),
        ("rebind.test", vec![ip("127.0.0.2"), ip("10.0.0.1")]),
        ("metadata.test", vec![ip("169.254.169.254")]),
        ("mapped.test", vec![ip("::ffff:127.0.0.2")]),
        ("loopback.test", vec![ip("127.0.0.1")]),
    ])))
}

/// Production settings, plus exactly what the local servers need.
fn local_config(ports: &[u16]) -> FetchConfig {
    FetchConfig {
        allow_http: true,
        allow_ip_literals: true,
        allowed_private_networks: vec!["127.0.0.2/32".parse().unwrap(), "127.0.0.3/32".parse().unwrap()],
        extra_ports: ports.to_vec(),
        ..FetchConfig::default()
    }
}

fn fetcher(s: &Servers, tweak: impl FnOnce(&mut FetchConfig)) -> Fetcher {
    let mut config = local_config(&[s.allowed.port(), s.evil.port()]);
    tweak(&mut config);
    Fetcher::with_lookup(config, dns()).unwrap()
}

fn only_allowed_test() -> WebFetchPolicy {
    WebFetchPolicy { enabled: true, allowed_domains: Some(vec!["allowed.test".into()]) }
}

fn any_domain() -> WebFetchPolicy {
    WebFetchPolicy { enabled: true, allowed_domains: None }
}

async fn fetch_ok(f: &Fetcher, policy: &WebFetchPolicy, url: &str) -> FetchedPage {
    f.fetch("telegram_1", policy, url).await.unwrap_or_else(|e| panic!("{url}: {e}"))
}

/// Refused (not failed), with a reason that says `why`.
async fn refused(f: &Fetcher, policy: &WebFetchPolicy, url: &str, why: &str) -> FetchError {
    let err = f.fetch("telegram_1", policy, url).await.expect_err(url);
    assert!(err.is_refusal(), "{url}: {err} should be a refusal");
    assert!(err.to_string().contains(why), "{url}: {err:?} / {err} does not say {why:?}");
    err
}

// ---------------------------------------------------------------------------------------
// Allowed fetches

#[tokio::test]
async fn allowed_page_comes_back_as_text() {
    let s = servers().await;
    let f = fetcher(&s, |_| {});
    let url = format!("http://allowed.test:{}/page", s.allowed.port());
    let page = fetch_ok(&f, &only_allowed_test(), &url).await;
    assert_eq!((page.status, page.content_type.as_str(), page.truncated), (200, "text/html", false));
    assert_eq!(page.final_url, url);
    assert_eq!(page.bytes, PAGE.len());
    for present in ["All about cats", "Cats are *small* & furry.", "They purr", "They sleep", "Dogs"] {
        assert!(page.text.contains(present), "{present:?} missing from {}", page.text);
    }
    for absent in ["<", ">", "stolen cookie", "document.write", "color: red", "&amp;"] {
        assert!(!page.text.contains(absent), "{absent:?} in {}", page.text);
    }

    // A subdomain of an allowed domain, upper case and a trailing dot: the same host.
    let page =
        fetch_ok(&f, &only_allowed_test(), &format!("http://WWW.Allowed.Test.:{}/plain", s.allowed.port())).await;
    assert_eq!(page.text, "just some text");
}

#[tokio::test]
async fn text_types_pass_through_and_binary_is_summarised() {
    let s = servers().await;
    let f = fetcher(&s, |_| {});
    let base = format!("http://allowed.test:{}", s.allowed.port());
    let policy = only_allowed_test();

    let plain = fetch_ok(&f, &policy, &format!("{base}/plain")).await;
    assert_eq!((plain.content_type.as_str(), plain.text.as_str()), ("text/plain", "just some text"));
    let json = fetch_ok(&f, &policy, &format!("{base}/json")).await;
    assert_eq!(json.text, r#"{"a":1}"#);
    let latin1 = fetch_ok(&f, &policy, &format!("{base}/latin1")).await;
    assert_eq!(latin1.text, "café");
    let untyped = fetch_ok(&f, &policy, &format!("{base}/untyped")).await;
    assert_eq!((untyped.content_type.as_str(), untyped.text.trim()), ("", "no type"));

    let image = fetch_ok(&f, &policy, &format!("{base}/image")).await;
    assert_eq!(image.text, "binary content of type image/png, 8 bytes (not shown)");
    assert_eq!(image.bytes, 0);

    // The page's own status comes back with its text.
    let missing = fetch_ok(&f, &policy, &format!("{base}/missing")).await;
    assert_eq!(missing.status, 404);
    assert!(missing.text.contains("Not here"));
}

#[tokio::test]
async fn redirects_within_policy_are_followed_up_to_the_limit() {
    let s = servers().await;
    let f = fetcher(&s, |_| {});
    let base = format!("http://allowed.test:{}", s.allowed.port());
    let policy = only_allowed_test();

    let page = fetch_ok(&f, &policy, &format!("{base}/redirect?/plain")).await;
    assert_eq!((page.final_url, page.text), (format!("{base}/plain"), "just some text".to_string()));

    let five = fetch_ok(&f, &policy, &format!("{base}/chain/5")).await;
    assert_eq!((five.final_url, five.text), (format!("{base}/chain/0"), "end of the chain".to_string()));

    refused(&f, &policy, &format!("{base}/chain/6"), "too many redirects (more than 5)").await;
}

// ---------------------------------------------------------------------------------------
// Refusals: policy

#[tokio::test]
async fn disabled_fetch_and_domains_outside_the_list_are_refused() {
    let s = servers().await;
    let f = fetcher(&s, |_| {});
    let (a, e) = (s.allowed.port(), s.evil.port());
    let off = WebFetchPolicy { enabled: false, allowed_domains: None };
    refused(&f, &off, &format!("http://allowed.test:{a}/page"), "web fetch is disabled for this user").await;

    let policy = only_allowed_test();
    refused(&f, &policy, &format!("http://evil.test:{e}/page"), "evil.test is not in allowedDomains (allowed.test)")
        .await;
    refused(&f, &policy, &format!("http://evilallowed.test:{e}/page"), "evilallowed.test is not in allowedDomains")
        .await;
    refused(&f, &policy, &format!("http://allowed.test.evil.test:{e}/page"), "is not in allowedDomains").await;
    let nothing = WebFetchPolicy { enabled: true, allowed_domains: Some(vec![]) };
    refused(
        &f,
        &nothing,
        &format!("http://allowed.test:{a}/page"),
        "allowed.test is not in allowedDomains (the list is empty)",
    )
    .await;

    // With no list, any domain whose addresses pass is fine: the evil server does answer.
    let page = fetch_ok(&f, &any_domain(), &format!("http://evil.test:{e}/plain")).await;
    assert_eq!(page.text, "just some text");
}

#[tokio::test]
async fn idn_look_alikes_are_compared_in_ascii() {
    let s = servers().await;
    let f = fetcher(&s, |_| {});
    let a = s.allowed.port();
    // Cyrillic "а" (U+0430) for the first letter.
    let err =
        refused(&f, &only_allowed_test(), &format!("http://\u{430}llowed.test:{a}/page"), "is not in allowedDomains")
            .await;
    assert!(err.to_string().starts_with("xn--llowed-"), "{err}");
    // Full-width letters are the same name after IDNA mapping, and are fetched as such.
    let page = fetch_ok(&f, &only_allowed_test(), &format!("http://ａｌｌｏｗｅｄ.test:{a}/plain")).await;
    assert_eq!(page.final_url, format!("http://allowed.test:{a}/plain"));
}

#[tokio::test]
async fn bad_urls_are_refused() {
    let s = servers().await;
    let f = fetcher(&s, |_| {});
    let a = s.allowed.port();
    let policy = any_domain();
    let rows = [
        (format!("http://user:secret@allowed.test:{a}/page"), "user name or password"),
        (format!("http://user@allowed.test:{a}/page"), "user name or password"),
        ("file:///etc/passwd".to_string(), "file: URLs are not allowed"),
        ("gopher://allowed.test:70/_GET".to_string(), "gopher: URLs are not allowed"),
        ("data:text/html,<p>hi</p>".to_string(), "data: URLs are not allowed"),
        ("ftp://allowed.test/".to_string(), "ftp: URLs are not allowed"),
        ("http://allowed.test:1/page".to_string(), "port 1 is not allowed"),
        ("not a url".to_string(), "the URL is not valid"),
        (format!("http://localhost:{a}/"), "localhost is not a public domain name"),
    ];
    for (url, why) in rows {
        refused(&f, &policy, &url, why).await;
    }
}

#[tokio::test]
async fn production_settings_refuse_http_and_local_servers() {
    let s = servers().await;
    let f = Fetcher::with_lookup(FetchConfig::default(), dns()).unwrap();
    let policy = any_domain();
    refused(
        &f,
        &policy,
        &format!("http://allowed.test:{}/page", s.allowed.port()),
        "http:// is not allowed, use https://",
    )
    .await;
    refused(&f, &policy, &format!("https://allowed.test:{}/page", s.allowed.port()), "port").await;
    refused(
        &f,
        &policy,
        "https://allowed.test/page",
        "allowed.test resolves to a forbidden address: 127.0.0.2 is a loopback address",
    )
    .await;
    refused(&f, &policy, "https://127.0.0.2/page", "127.0.0.2 is a loopback address").await;
    refused(&f, &policy, "https://8.8.8.8/", "IP address hosts are not allowed").await;
}

// ---------------------------------------------------------------------------------------
// Refusals: addresses, directly, by name, and after redirects

#[tokio::test]
async fn forbidden_addresses_are_refused_as_literals_and_by_name() {
    let s = servers().await;
    let f = fetcher(&s, |_| {});
    let policy = any_domain();
    let a = s.allowed.port();
    let rows = [
        ("http://169.254.169.254/latest/meta-data/".to_string(), "169.254.169.254 is the cloud metadata address"),
        (
            "http://metadata.test/latest/meta-data/".to_string(),
            "metadata.test resolves to a forbidden address: 169.254.169.254 is the cloud metadata",
        ),
        (format!("http://127.0.0.1:{a}/page"), "127.0.0.1 is a loopback address"),
        (
            format!("http://loopback.test:{a}/page"),
            "loopback.test resolves to a forbidden address: 127.0.0.1 is a loopback",
        ),
        (format!("http://0x7f.1:{a}/page"), "127.0.0.1 is a loopback address"),
        (format!("http://[::ffff:127.0.0.1]:{a}/page"), "embeds 127.0.0.1 (IPv4-mapped), a loopback address"),
        (format!("http://[::ffff:7f00:2]:{a}/page"), "embeds 127.0.0.2 (IPv4-mapped), a loopback address"),
        (format!("http://[::127.0.0.1]:{a}/page"), "embeds 127.0.0.1 (IPv4-compatible), a loopback address"),
        ("http://[::ffff:169.254.169.254]/".to_string(), "embeds 169.254.169.254 (IPv4-mapped), the cloud metadata"),
        (
            format!("http://mapped.test:{a}/page"),
            "mapped.test resolves to a forbidden address: ::ffff:127.0.0.2 embeds",
        ),
        (format!("http://[::1]:{a}/page"), "::1 is a loopback address"),
        ("http://10.0.0.1/".to_string(), "10.0.0.1 is a private (RFC 1918) address"),
        // One bad address among good ones refuses the name: no rebinding through the mix.
        (format!("http://rebind.test:{a}/page"), "rebind.test resolves to a forbidden address: 10.0.0.1 is a private"),
    ];
    for (url, why) in rows {
        refused(&f, &policy, &url, why).await;
    }
}

#[tokio::test]
async fn every_redirect_is_checked_again() {
    let s = servers().await;
    let f = fetcher(&s, |_| {});
    let (a, e) = (s.allowed.port(), s.evil.port());
    let base = format!("http://allowed.test:{a}/redirect");
    let policy = only_allowed_test();
    let rows = [
        (format!("{base}?http://10.0.0.1/admin"), "10.0.0.1 is a private (RFC 1918) address"),
        (format!("{base}?http://169.254.169.254/latest/meta-data/"), "169.254.169.254 is the cloud metadata address"),
        (format!("{base}?http://[::ffff:169.254.169.254]/"), "embeds 169.254.169.254 (IPv4-mapped)"),
        (format!("{base}?http://evil.test:{e}/page"), "evil.test is not in allowedDomains (allowed.test)"),
        (format!("{base}?file:///etc/passwd"), "file: URLs are not allowed"),
        (format!("{base}?http://user:pw@allowed.test:{a}/page"), "user name or password"),
        (format!("{base}?http://allowed.test:1/"), "port 1 is not allowed"),
    ];
    for (url, why) in rows {
        refused(&f, &policy, &url, why).await;
    }
    // Allowed domain, forbidden address: the redirect target is resolved and checked too.
    let mut policy = only_allowed_test();
    policy.allowed_domains.as_mut().unwrap().push("metadata.test".into());
    refused(&f, &policy, &format!("{base}?http://metadata.test/"), "metadata.test resolves to a forbidden address")
        .await;
}

// ---------------------------------------------------------------------------------------
// Limits: size and time

#[tokio::test]
async fn endless_body_is_cut_at_the_cap() {
    let s = servers().await;
    let f = fetcher(&s, |_| {}); // the production cap: 2 MiB
    let started = Instant::now();
    let page = fetch_ok(&f, &only_allowed_test(), &format!("http://allowed.test:{}/endless", s.allowed.port())).await;
    assert!(page.truncated);
    assert_eq!(page.bytes, 2 * 1024 * 1024);
    assert!(
        page.text.ends_with("[truncated: only the first 2 MiB of the page were read]"),
        "{}",
        &page.text[page.text.len() - 80..]
    );
    // Well inside the 10 s deadline, and the server was not drained: it produced at most
    // the cap plus what the socket buffers hold.
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    let produced = s.served.endless.load(Ordering::SeqCst);
    assert!(produced < 32 * 1024 * 1024, "{produced} bytes produced");
}

#[tokio::test]
async fn slow_servers_hit_the_deadline() {
    let s = servers().await;
    let f = fetcher(&s, |c| c.timeout = Duration::from_millis(500));
    let policy = only_allowed_test();
    for path in ["slow", "trickle"] {
        let started = Instant::now();
        let err = f
            .fetch("telegram_1", &policy, &format!("http://allowed.test:{}/{path}", s.allowed.port()))
            .await
            .unwrap_err();
        assert_eq!(err, FetchError::Timeout(Duration::from_millis(500)), "{path}");
        assert_eq!(err.to_string(), "timed out after 500 ms");
        assert!(!err.is_refusal());
        assert!(started.elapsed() < Duration::from_secs(3), "{path}: {:?}", started.elapsed());
    }
}

// ---------------------------------------------------------------------------------------
// HTTPS, as in production: only the test CA and the local address are added

mod tls {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    use tokio_rustls::TlsAcceptor;
    use tokio_rustls::server::TlsStream;

    struct TlsListener {
        tcp: TcpListener,
        acceptor: TlsAcceptor,
    }

    impl axum::serve::Listener for TlsListener {
        type Io = TlsStream<tokio::net::TcpStream>;
        type Addr = SocketAddr;

        async fn accept(&mut self) -> (Self::Io, Self::Addr) {
            loop {
                let Ok((tcp, addr)) = self.tcp.accept().await else { continue };
                // A client that rejects the certificate fails the handshake: wait for the next.
                if let Ok(tls) = self.acceptor.accept(tcp).await {
                    return (tls, addr);
                }
            }
        }

        fn local_addr(&self) -> io::Result<Self::Addr> {
            self.tcp.local_addr()
        }
    }

    /// A server on 127.0.0.2 whose certificate names `allowed.test` only; the CA's root.
    async fn https_server() -> (SocketAddr, CertificateDer<'static>) {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["allowed.test".to_string()]).unwrap().signed_by(&key, &ca).unwrap();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone()], key)
            .unwrap();
        let tcp = TcpListener::bind(("127.0.0.2", 0)).await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let listener = TlsListener { tcp, acceptor: TlsAcceptor::from(Arc::new(config)) };
        tokio::spawn(async move { axum::serve(listener, router(Served::default())).await });
        (addr, ca.der().clone())
    }

    #[tokio::test]
    async fn https_with_certificate_checks() {
        let (addr, root) = https_server().await;
        let config = FetchConfig {
            allowed_private_networks: vec!["127.0.0.2/32".parse().unwrap()],
            extra_ports: vec![addr.port()],
            extra_root_certificates: vec![root],
            ..FetchConfig::default()
        };
        assert!(!config.allow_http && !config.allow_ip_literals);
        let f = Fetcher::with_lookup(config, dns()).unwrap();
        let policy = only_allowed_test();
        let port = addr.port();

        let page = fetch_ok(&f, &policy, &format!("https://allowed.test:{port}/page")).await;
        assert!(page.text.contains("All about cats"), "{}", page.text);

        // Same server under a name its certificate does not carry: the handshake fails.
        let err = f.fetch("telegram_1", &policy, &format!("https://www.allowed.test:{port}/page")).await.unwrap_err();
        assert!(matches!(err, FetchError::Connect { .. }) && err.to_string().contains("certificate"), "{err}");

        // A redirect down to http:// is refused.
        refused(
            &f,
            &policy,
            &format!("https://allowed.test:{port}/redirect?http://allowed.test:{port}/page"),
            "http:// is not allowed",
        )
        .await;
    }
}

// ---------------------------------------------------------------------------------------
// Audit log

/// Everything logged by every test in this binary. One global subscriber, installed by the
/// first test to build a resolver: a per-test (thread-local) one misses events when tests
/// run in parallel, as tracing caches callsite interest process-wide.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

static LOG: OnceLock<Captured> = OnceLock::new();

fn captured_log() -> &'static Captured {
    LOG.get_or_init(|| {
        let captured = Captured::default();
        let sink = captured.clone();
        let subscriber = tracing_subscriber::fmt().json().with_writer(move || sink.clone()).finish();
        tracing::subscriber::set_global_default(subscriber).expect("the only global subscriber");
        captured
    })
}

#[tokio::test]
async fn every_fetch_is_logged_with_user_url_decision_status_and_bytes() {
    let s = servers().await;
    let f = fetcher(&s, |_| {});
    let a = s.allowed.port();
    f.fetch("log_test", &only_allowed_test(), &format!("http://allowed.test:{a}/redirect?/plain")).await.unwrap();
    f.fetch("log_test", &any_domain(), "http://metadata.test/").await.unwrap_err();

    let text = String::from_utf8(captured_log().0.lock().unwrap().clone()).unwrap();
    let events: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let fields = |message: &str| -> Vec<&serde_json::Value> {
        events.iter().map(|e| &e["fields"]).filter(|f| f["message"] == message && f["user"] == "log_test").collect()
    };
    let done = fields("web_fetch");
    assert_eq!(done.len(), 2, "{text}");
    assert_eq!(done[0]["decision"], "allowed");
    assert_eq!(done[0]["status"], 200);
    assert_eq!(done[0]["bytes"], "just some text".len());
    assert!(done[0]["url"].as_str().unwrap().contains("/redirect?/plain"));
    assert!(done[0]["final_url"].as_str().unwrap().ends_with("/plain"));
    assert_eq!(done[1]["decision"], "denied");
    assert!(done[1]["reason"].as_str().unwrap().contains("169.254.169.254"));
    let hops = fields("web_fetch redirect");
    assert_eq!(hops.len(), 1, "{text}");
    assert_eq!(hops[0]["status"], 302);
}
