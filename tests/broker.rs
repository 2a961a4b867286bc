//! The broker over real HTTP: its router served on 127.0.0.1, the LLM stand-in as the
//! provider, and local pages for web_fetch on 127.0.0.2 (`allowed.test`) and 127.0.0.3
//! (`evil.test`) with the fetcher's test-only settings and a test resolver. Users live in a
//! reflector store fed by hand, as the gateway's watch would feed it.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_openai::Client;
use async_openai::config::OpenAIConfig;
use async_openai::middleware::ReqwestService;
use async_openai::middleware::retry::OpenAIRetryLayer;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::future::BoxFuture;
use kube::runtime::reflector::{self, store::Writer};
use kube::runtime::watcher::Event;
use moltmates::MoltmateUser;
use moltmates::agent::history::Message;
use moltmates::agent::llm::{LlmError, ToolSpec, build_request, parse_response};
use moltmates::crd::{MoltmateUserSpec, Profile, ResourcesSpec, WebFetchSpec, WebSpec};
use moltmates::dev::llm::{LlmStandIn, Scripted};
use moltmates::gateway::broker::{ApiKey, BrokerConfig, BrokerState, Clock, ProviderConfig, router};
use moltmates::gateway::web_fetch::{FetchConfig, Fetcher, Lookup};
use moltmates::token::MasterKey;
use prometheus_client::registry::Registry;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tower::Layer;

const REAL_KEY: &str = "sk-real-provider-key-0123456789";
const DEFAULT_MODEL: &str = "dev-model-1";
const WAIT: Duration = Duration::from_secs(10);
/// Some day at 12:00 UTC, in ms.
const NOON: i64 = 20_000 * 86_400_000 + 43_200_000;

// ---------------------------------------------------------------------------------------
// Pages for web_fetch

#[derive(Clone)]
struct Pages {
    /// Requests parked at `/hold` right now.
    held: watch::Sender<usize>,
    release: Arc<Notify>,
}

fn pages_router(pages: Pages) -> Router {
    Router::new()
        .route(
            "/page",
            get(|| async {
                ([(header::CONTENT_TYPE, "text/html")], "<html><body><h1>Cats</h1><p>Cats purr.</p></body></html>")
            }),
        )
        // `/redirect?<url>`: 302 to the raw query.
        .route("/redirect", get(|uri: Uri| async move { redirect(uri.query().unwrap_or("/")) }))
        .route(
            "/hold",
            get(|State(p): State<Pages>| async move {
                let released = p.release.notified();
                p.held.send_modify(|n| *n += 1);
                released.await;
                p.held.send_modify(|n| *n -= 1);
                "released"
            }),
        )
        .with_state(pages)
}

fn redirect(to: &str) -> Response {
    let mut response = StatusCode::FOUND.into_response();
    response.headers_mut().insert(header::LOCATION, HeaderValue::from_str(to).unwrap());
    response
}

async fn serve(ip: &str, app: Router) -> SocketAddr {
    let listener = TcpListener::bind((ip, 0)).await.expect("bind a loopback address");
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

struct TestDns(HashMap<&'static str, Vec<IpAddr>>);

impl Lookup for TestDns {
    fn lookup<'a>(&'a self, host: &'a str) -> BoxFuture<'a, io::Result<Vec<IpAddr>>> {
        let found =
            self.0.get(host).cloned().ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such test host"));
        Box::pin(async move { found })
    }
}

fn dns() -> Arc<TestDns> {
    let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
    Arc::new(TestDns(HashMap::from([
        ("allowed.test", vec![ip("127.0.0.2")]),
        ("evil.test", vec![ip("127.0.0.3")]),
        ("internal.allowed.test", vec![ip("10.0.0.1")]),
        ("metadata.allowed.test", vec![ip("169.254.169.254")]),
    ])))
}

// ---------------------------------------------------------------------------------------
// The broker and its users

struct FakeClock(AtomicI64);

impl Clock for FakeClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

struct Env {
    url: String,
    llm: LlmStandIn,
    key: MasterKey,
    users: Mutex<Writer<MoltmateUser>>,
    state: Arc<BrokerState>,
    registry: Arc<Registry>,
    clock: Arc<FakeClock>,
    http: reqwest::Client,
    /// `http://allowed.test:PORT` (127.0.0.2).
    allowed: String,
    /// `http://evil.test:PORT` (127.0.0.3).
    evil: String,
    pages: Pages,
}

fn user(name: &str, profile: Profile, edit: impl FnOnce(&mut MoltmateUserSpec)) -> MoltmateUser {
    let mut spec = MoltmateUserSpec::new(1000 + name.len() as i64, profile);
    edit(&mut spec);
    let mut u = MoltmateUser::new(name, spec);
    u.metadata.uid = Some(format!("uid-{name}"));
    u.metadata.resource_version = Some("1".into());
    u
}

fn client() -> reqwest::Client {
    // An explicit ring provider: the crate compiles in no default one (see Cargo.toml).
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    reqwest::Client::builder().tls_backend_preconfigured(tls).timeout(WAIT).build().unwrap()
}

async fn env_with(tweak: impl FnOnce(&mut BrokerConfig)) -> Env {
    let pages = Pages { held: watch::Sender::new(0), release: Arc::new(Notify::new()) };
    let allowed = serve("127.0.0.2", pages_router(pages.clone())).await;
    let evil = serve("127.0.0.3", pages_router(pages.clone())).await;
    let fetch_config = FetchConfig {
        allow_http: true,
        allow_ip_literals: true,
        allowed_private_networks: vec!["127.0.0.2/32".parse().unwrap(), "127.0.0.3/32".parse().unwrap()],
        extra_ports: vec![allowed.port(), evil.port()],
        ..FetchConfig::default()
    };
    let fetcher = Arc::new(Fetcher::with_lookup(fetch_config, dns()).unwrap());

    // A provider serving one model, refusing others as OpenAI does.
    let llm = LlmStandIn::start_serving(
        "127.0.0.1:0".parse().unwrap(),
        Some(REAL_KEY.into()),
        Some(vec![DEFAULT_MODEL.into()]),
    )
    .await
    .unwrap();
    let mut provider = ProviderConfig::new(llm.url(), ApiKey::new(REAL_KEY));
    provider.default_model = Some(DEFAULT_MODEL.into());
    provider.timeout = WAIT;
    let mut config = BrokerConfig::new(provider);
    tweak(&mut config);

    let key = MasterKey::new("b".repeat(32)).unwrap();
    let (store, mut writer) = reflector::store::<MoltmateUser>();
    let only_allowed_test = |s: &mut MoltmateUserSpec| {
        s.web = Some(WebSpec {
            fetch: Some(WebFetchSpec { enabled: None, allowed_domains: Some(vec!["allowed.test".into()]) }),
        })
    };
    for u in [
        user("alice", Profile::Family, only_allowed_test),
        user("bob", Profile::Family, |_| {}),
        user("pat", Profile::Public, |_| {}),
        user("quinn", Profile::Public, |_| {}),
        user("sam", Profile::Family, |s| s.suspend = true),
        user("ivy", Profile::Family, |s| {
            s.resources = Some(ResourcesSpec { memory: Some("0".into()), ..Default::default() })
        }),
    ] {
        writer.apply_watcher_event(&Event::Apply(u));
    }
    let mut registry = Registry::default();
    let clock = Arc::new(FakeClock(AtomicI64::new(NOON)));
    let state = Arc::new(BrokerState::new(key.clone(), store, config, fetcher, clock.clone(), &mut registry).unwrap());
    let addr = serve("127.0.0.1", router(state.clone())).await;
    Env {
        url: format!("http://{addr}"),
        llm,
        key,
        users: Mutex::new(writer),
        state,
        registry: Arc::new(registry),
        clock,
        http: client(),
        allowed: format!("http://allowed.test:{}", allowed.port()),
        evil: format!("http://evil.test:{}", evil.port()),
        pages,
    }
}

async fn env() -> Env {
    env_with(|_| {}).await
}

fn chat_body(text: &str) -> Value {
    json!({"model": "default", "messages": [{"role": "user", "content": text}]})
}

impl Env {
    fn token(&self, name: &str) -> String {
        self.key.agent_token(&format!("uid-{name}"))
    }

    async fn post(&self, path: &str, token: Option<&str>, body: &Value) -> (StatusCode, HeaderMapLite, Value) {
        let mut request = self.http.post(format!("{}{path}", self.url)).json(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        read(request.send().await.unwrap()).await
    }

    async fn chat(&self, name: &str, text: &str) -> (StatusCode, HeaderMapLite, Value) {
        self.post("/v1/chat/completions", Some(&self.token(name)), &chat_body(text)).await
    }

    async fn fetch(&self, name: &str, url: &str) -> (StatusCode, Value) {
        let (status, _, body) = self.post("/v1/fetch", Some(&self.token(name)), &json!({"url": url})).await;
        (status, body)
    }

    fn metrics(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).unwrap();
        text
    }
}

type HeaderMapLite = HashMap<String, String>;

async fn read(response: reqwest::Response) -> (StatusCode, HeaderMapLite, Value) {
    let status = StatusCode::from_u16(response.status().as_u16()).unwrap();
    let headers =
        response.headers().iter().map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string())).collect();
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, headers, body)
}

/// An OpenAI error body whose message contains `needle`.
fn assert_openai_error(body: &Value, needle: &str) {
    let message =
        body.pointer("/error/message").and_then(Value::as_str).unwrap_or_else(|| panic!("not an OpenAI error: {body}"));
    assert!(message.contains(needle), "{message:?} does not say {needle:?}");
    assert!(body["error"].get("type").is_some(), "{body}");
}

// ---------------------------------------------------------------------------------------
// Authentication

#[tokio::test]
async fn a_token_acts_as_its_own_user_only() {
    let env = env().await;
    let (status, _, body) = env.chat("alice", "hello").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["choices"][0]["message"]["content"], "You said: hello");
    // The request and its tokens were counted for alice, and for nobody else.
    let (requests, tokens) = env.state.usage("alice");
    assert_eq!((requests, tokens), (1, body["usage"]["total_tokens"].as_u64().unwrap()));
    assert_eq!(env.state.usage("bob"), (0, 0));

    // alice's token carries alice's fetch policy (allowed.test); bob's carries bob's (the
    // family preset, which does not include allowed.test).
    let url = format!("{}/page", env.allowed);
    assert_eq!(env.fetch("alice", &url).await.0, StatusCode::OK);
    let (status, body) = env.fetch("bob", &url).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("allowed.test is not in allowedDomains (wikipedia.org, docs.python.org)"),
        "{body}"
    );
}

#[tokio::test]
async fn unknown_or_missing_tokens_get_401_and_nothing_is_forwarded() {
    let env = env().await;
    let other_key = MasterKey::new("x".repeat(32)).unwrap();
    let bad_tokens = [
        None,
        Some(String::new()),
        Some("not-a-token".to_string()),
        Some(other_key.agent_token("uid-alice")),
        Some(env.token("nobody")),
    ];
    for token in &bad_tokens {
        let (status, headers, body) = env.post("/v1/chat/completions", token.as_deref(), &chat_body("hi")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{token:?}");
        assert_openai_error(&body, "bearer token");
        assert_eq!(headers.get("www-authenticate").map(String::as_str), Some("Bearer"));
        let (status, body) = {
            let (s, _, b) =
                env.post("/v1/fetch", token.as_deref(), &json!({"url": format!("{}/page", env.allowed)})).await;
            (s, b)
        };
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(body["error"].as_str().unwrap().contains("bearer token"), "{body}");
    }
    let response = env.http.get(format!("{}/v1/models", env.url)).bearer_auth("nope").send().await.unwrap();
    assert_eq!(response.status().as_u16(), 401);
    // A scheme other than Bearer is not a token either.
    let response = env
        .http
        .post(format!("{}/v1/chat/completions", env.url))
        .basic_auth("alice", Some(env.token("alice")))
        .json(&chat_body("x"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);

    assert!(env.llm.requests().is_empty(), "forwarded: {:?}", env.llm.requests());
    assert!(
        env.metrics().contains(r#"moltmate_broker_requests_total{endpoint="chat_completions",decision="refused"} 6"#),
        "{}",
        env.metrics()
    );
}

#[tokio::test]
async fn suspended_deleted_and_invalid_users_get_403_with_the_reason() {
    let env = env().await;
    let (status, _, body) = env.chat("sam", "hi").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_openai_error(&body, "user sam is suspended");
    let (status, _, body) = env.chat("ivy", "hi").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_openai_error(&body, "user ivy has an invalid profile: spec.resources.memory");
    let (status, body) = env.fetch("sam", &format!("{}/page", env.allowed)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body["error"].as_str().unwrap().contains("suspended"), "{body}");

    // Changes in the store are seen by the next request: alice is deleted, then gone.
    assert_eq!(env.chat("alice", "hi").await.0, StatusCode::OK);
    let mut deleting = user("alice", Profile::Family, |_| {});
    deleting.metadata.resource_version = Some("2".into());
    deleting.metadata.deletion_timestamp =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now()));
    env.users.lock().unwrap().apply_watcher_event(&Event::Apply(deleting.clone()));
    let (status, _, body) = env.chat("alice", "hi").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_openai_error(&body, "user alice is being deleted");
    env.users.lock().unwrap().apply_watcher_event(&Event::Delete(deleting));
    assert_eq!(env.chat("alice", "hi").await.0, StatusCode::UNAUTHORIZED);
    // Un-suspending sam lets sam in.
    let mut back = user("sam", Profile::Family, |_| {});
    back.metadata.resource_version = Some("2".into());
    env.users.lock().unwrap().apply_watcher_event(&Event::Apply(back));
    assert_eq!(env.chat("sam", "hi").await.0, StatusCode::OK);

    // Only the two admitted requests were forwarded.
    assert_eq!(env.llm.requests().len(), 2);
}

// ---------------------------------------------------------------------------------------
// LLM proxy

#[tokio::test]
async fn the_provider_gets_the_real_key_and_never_the_agent_token() {
    let env = env().await;
    let token = env.token("alice");
    let response = env
        .http
        .post(format!("{}/v1/chat/completions", env.url))
        .bearer_auth(&token)
        .header("x-agent-header", "leak")
        .json(&json!({"model": "default", "messages": [{"role": "user", "content": "hi"}], "temperature": 0.5}))
        .send()
        .await
        .unwrap();
    let (status, _, body) = read(response).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], DEFAULT_MODEL);

    // Another model, more choices, fields that change the price: refused, nothing forwarded.
    for (request, reason) in [
        (
            json!({"model": "other", "messages": [{"role": "user", "content": "x"}]}),
            "may use the model(s) \"dev-model-1\" only",
        ),
        (json!({"model": "default", "n": 8, "messages": []}), "one choice per request"),
        (
            json!({"model": "default", "service_tier": "priority", "messages": []}),
            "does not forward the field(s) service_tier",
        ),
    ] {
        let (status, _, body) = env.post("/v1/chat/completions", Some(&token), &request).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{request}: {body}");
        assert!(body["error"]["message"].as_str().unwrap().contains(reason), "{request}: {body}");
    }
    // The served model asked for by name, with a huge answer: the cap goes to the provider.
    let asked =
        json!({"model": DEFAULT_MODEL, "max_tokens": 1_000_000, "messages": [{"role": "user", "content": "x"}]});
    let (status, _, _) = env.post("/v1/chat/completions", Some(&token), &asked).await;
    assert_eq!(status, StatusCode::OK);

    let seen = env.llm.wait_for_requests(2, WAIT).await.unwrap();
    assert_eq!(seen.len(), 2, "the refused requests never reached the provider");
    for request in &seen {
        assert_eq!(request.path, "/v1/chat/completions");
        assert_eq!(request.authorization.as_deref(), Some(format!("Bearer {REAL_KEY}").as_str()));
        assert!(!request.body.to_string().contains(&token));
    }
    assert_eq!(seen[0].body["model"], DEFAULT_MODEL);
    assert_eq!(seen[0].body["temperature"], 0.5);
    assert_eq!(seen[0].body["max_tokens"], 4096, "a request without a cap gets one");
    assert_eq!(seen[1].body["model"], DEFAULT_MODEL);
    assert_eq!(seen[1].body["max_tokens"], 4096, "lowered to the cap");

    // GET /v1/models is forwarded the same way.
    let response = env.http.get(format!("{}/v1/models", env.url)).bearer_auth(&token).send().await.unwrap();
    let (status, _, body) = read(response).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["object"], "list");
    let seen = env.llm.wait_for_requests(3, WAIT).await.unwrap();
    assert_eq!((seen[2].method.as_str(), seen[2].path.as_str()), ("GET", "/v1/models"));
    assert_eq!(seen[2].authorization.as_deref(), Some(format!("Bearer {REAL_KEY}").as_str()));
}

#[tokio::test]
async fn requests_per_minute_are_limited_per_user() {
    let env = env().await;
    // pat: public profile, 10 requests per minute.
    for i in 0..10 {
        assert_eq!(env.chat("pat", &format!("message {i}")).await.0, StatusCode::OK, "request {i}");
    }
    let (status, headers, body) = env.chat("pat", "one too many").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_openai_error(&body, "rate limit: 10 requests per minute for profile public");
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    assert_eq!(headers.get("retry-after").map(String::as_str), Some("60"));
    // Others are not affected.
    assert_eq!(env.chat("quinn", "hi").await.0, StatusCode::OK);
    assert_eq!(env.chat("bob", "hi").await.0, StatusCode::OK);
    // A minute later pat may again.
    env.clock.0.fetch_add(60_000, Ordering::SeqCst);
    assert_eq!(env.chat("pat", "again").await.0, StatusCode::OK);
    // The refused request never reached the provider.
    let forwarded = env.llm.requests();
    assert_eq!(forwarded.len(), 13);
    assert!(!forwarded.iter().any(|r| r.body.to_string().contains("one too many")));
    assert!(
        env.metrics().contains(r#"moltmate_broker_requests_total{endpoint="chat_completions",decision="limited"} 1"#)
    );
}

#[tokio::test]
async fn the_daily_token_budget_is_enforced_until_midnight_utc() {
    let env = env().await;
    // pat: public profile, 100000 tokens per day. One answer reports 99990, the next 20.
    env.llm.script([
        Scripted::Reply { content: "big".into(), total_tokens: Some(99_990) },
        Scripted::Reply { content: "small".into(), total_tokens: Some(20) },
    ]);
    assert_eq!(env.chat("pat", "a").await.0, StatusCode::OK);
    assert_eq!(env.chat("pat", "b").await.0, StatusCode::OK);
    assert_eq!(env.state.usage("pat").1, 100_010);
    let (status, _, body) = env.chat("pat", "c").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_openai_error(&body, "daily token budget of 100000 used up; resets at 00:00 UTC");
    assert_eq!(body["error"]["type"], "insufficient_quota");
    assert!(env.metrics().contains("moltmate_broker_llm_tokens_total 100010"), "{}", env.metrics());

    // The agent's client does not retry a spent budget, and reads the reason.
    let err = agent_client(&env, "pat")
        .chat()
        .create(build_request("default", "sys", &[Message::User { text: "d".into() }], &[]))
        .await
        .unwrap_err();
    match LlmError::from(err) {
        LlmError::Status { status: 429, message } => assert!(message.contains("daily token budget"), "{message}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(env.llm.requests().len(), 2);

    // Midnight UTC: a new budget.
    env.clock.0.store(NOON + 43_200_000, Ordering::SeqCst);
    assert_eq!(env.chat("pat", "e").await.0, StatusCode::OK);
}

/// The budget is charged what a request may cost before it is forwarded, and settled with what
/// the provider reports: an answer cut off (too large to read) is billed by the provider all the
/// same, so its estimate stays charged; a request the provider refused costs nothing.
#[tokio::test]
async fn an_answer_that_never_arrives_whole_is_still_counted() {
    let env = env_with(|c| c.max_response_bytes = 4096).await;
    env.llm.fail_next(500, 1);
    assert_eq!(env.chat("pat", "refused").await.0, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(env.state.usage("pat").1, 0, "a refused request is not charged");

    env.llm.script([Scripted::Reply { content: "x".repeat(20_000), total_tokens: Some(7) }]);
    let (status, _, body) = env.chat("pat", "tell me everything").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert_openai_error(&body, "larger than 4096 bytes");
    let charged = env.state.usage("pat").1;
    assert!(charged > 4096, "the estimate (the prompt and the 4096-token cap) stays charged: {charged}");

    env.llm.script([Scripted::Reply { content: "short".into(), total_tokens: Some(7) }]);
    assert_eq!(env.chat("pat", "and now briefly").await.0, StatusCode::OK);
    assert_eq!(env.state.usage("pat").1, charged + 7, "a whole answer is settled at what it used");
}

#[tokio::test]
async fn provider_errors_come_back_as_openai_errors() {
    let env = env().await;
    env.llm.fail_next(500, 1);
    let (status, _, body) = env.chat("alice", "hi").await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_openai_error(&body, "the stand-in was told to fail with 500");

    // A body that is not in OpenAI's shape is wrapped into it, keeping the status.
    env.llm.script([Scripted::Raw { status: 503, body: json!("upstream down") }]);
    let (status, _, body) = env.chat("alice", "hi").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_openai_error(&body, "the model provider answered 503: \"upstream down\"");
    assert_eq!(body["error"]["type"], "server_error");

    // The provider's 429 is passed on (the agent's client retries it).
    env.llm.fail_next(429, 1);
    let (status, _, body) = env.chat("alice", "hi").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_openai_error(&body, "429");

    // A 200 that is not JSON is a bad gateway.
    env.llm.script([Scripted::Raw { status: 200, body: json!("not a completion") }]);
    let (status, _, body) = env.chat("alice", "hi").await;
    assert_eq!(status, StatusCode::OK, "a JSON string is JSON: passed through");
    assert_eq!(body, json!("not a completion"));
}

#[tokio::test]
async fn a_wrong_provider_key_or_a_dead_provider_is_a_bad_gateway() {
    let env = env_with(|c| c.provider.api_key = ApiKey::new("sk-wrong")).await;
    let (status, _, body) = env.chat("alice", "hi").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_openai_error(&body, "the model provider refused the broker's credentials (401)");
    assert!(!body.to_string().contains("sk-wrong"));

    // Nothing listens where the provider should be.
    let dead = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead_url = format!("http://{}/v1", dead.local_addr().unwrap());
    drop(dead);
    let env = env_with(|c| c.provider.base_url = dead_url).await;
    let (status, _, body) = env.chat("alice", "hi").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_openai_error(&body, "the model provider cannot be reached");
}

#[tokio::test]
async fn streaming_bad_bodies_and_oversized_bodies_are_refused() {
    let env = env_with(|c| c.max_request_bytes = 64 * 1024).await;
    let token = env.token("alice");
    let (status, _, body) = env
        .post("/v1/chat/completions", Some(&token), &json!({"model": "default", "stream": true, "messages": []}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_openai_error(&body, "streaming is not supported");

    let response = env
        .http
        .post(format!("{}/v1/chat/completions", env.url))
        .bearer_auth(&token)
        .body("{not json")
        .send()
        .await
        .unwrap();
    let (status, _, body) = read(response).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_openai_error(&body, "not JSON");

    let big = chat_body(&"x".repeat(100 * 1024));
    let (status, _, body) = env.post("/v1/chat/completions", Some(&token), &big).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_openai_error(&body, "larger than 65536 bytes");

    let (status, _, body) = env
        .post("/v1/fetch", Some(&token), &json!({"url": format!("https://allowed.test/{}", "a".repeat(20_000))}))
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(body["error"].as_str().unwrap().contains("larger than 16384 bytes"), "{body}");

    assert!(env.llm.requests().is_empty());
}

/// An installation naming a model its provider does not serve: the provider is asked for that
/// model (never the agents' placeholder), and its refusal reaches the agent with its own code
/// and the setting to fix, once (no retries), as the person's reply and the admin's log say.
/// The gateway's start check says the same on `/readyz`.
#[tokio::test]
async fn a_model_the_provider_does_not_serve_is_named_with_the_setting_to_fix() {
    let env = env_with(|c| c.provider.default_model = Some("gpt-typo".into())).await;
    let err = agent_client(&env, "alice")
        .chat()
        .create(build_request("default", "sys", &[Message::User { text: "hi".into() }], &[]))
        .await
        .unwrap_err();
    let err = LlmError::from(err);
    let LlmError::ModelNotServed(message) = &err else { panic!("{err:?}") };
    assert!(message.contains("\"gpt-typo\"") && message.contains("llm.defaultModel"), "{message}");
    assert!(err.user_reply().contains("tell the administrator"), "{}", err.user_reply());
    let asked: Vec<Value> = env.llm.requests().iter().map(|r| r.body["model"].clone()).collect();
    assert_eq!(asked, [json!("gpt-typo")], "one request, for the configured model");

    let mut provider = ProviderConfig::new(env.llm.url(), ApiKey::new(REAL_KEY));
    provider.default_model = Some("gpt-typo".into());
    let health = moltmates::http::Health::new();
    moltmates::gateway::broker::provider_check::report(provider, health.clone()).await;
    let addr = serve("127.0.0.1", moltmates::http::router(health, Registry::default(), Box::new(|| {}))).await;
    let readyz = env.http.get(format!("http://{addr}/readyz")).send().await.unwrap().text().await.unwrap();
    assert!(
        readyz.contains("llm: the provider does not list the model \"gpt-typo\"") && readyz.contains(DEFAULT_MODEL),
        "{readyz}"
    );
}

/// The agent's own client: async-openai with its retry layer, the agent's request builder
/// and response parser, the agent token as API key and the broker's `/v1` as base URL.
fn agent_client(env: &Env, name: &str) -> Client<OpenAIConfig> {
    let http = client();
    let config = OpenAIConfig::new()
        .with_api_base(format!("{}/v1", env.url))
        .with_api_key(env.token(name))
        .with_org_id("")
        .with_project_id("");
    let service = OpenAIRetryLayer::new(2).layer(ReqwestService::new(http.clone()));
    Client::build(http, config).with_http_service(service)
}

#[tokio::test]
async fn the_agents_openai_client_works_through_the_broker() {
    let env = env().await;
    let client = agent_client(&env, "alice");
    let tools = vec![ToolSpec {
        name: "exec",
        description: "run a program".into(),
        parameters: json!({"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]}),
    }];
    let messages = vec![Message::User { text: "/tool exec wc -l notes.txt".into() }];
    let response = client.chat().create(build_request("default", "You are helpful.", &messages, &tools)).await.unwrap();
    let reply = parse_response(response).unwrap();
    assert_eq!(reply.tool_calls.len(), 1);
    assert_eq!(reply.tool_calls[0].name, "exec");
    assert_eq!(
        serde_json::from_str::<Value>(&reply.tool_calls[0].arguments).unwrap(),
        json!({"command": "wc -l notes.txt"})
    );

    // One 500 is retried by the client and the retry succeeds.
    env.llm.fail_next(500, 1);
    let response =
        client.chat().create(build_request("default", "s", &[Message::User { text: "hi".into() }], &[])).await.unwrap();
    assert_eq!(parse_response(response).unwrap().content.as_deref(), Some("You said: hi"));
    let seen = env.llm.requests();
    assert_eq!(seen.len(), 3);
    assert_eq!(seen[0].body["tools"][0]["function"]["name"], "exec");
    assert_eq!(seen[0].body["model"], DEFAULT_MODEL);

    // A wrong token is a 401 the client reports, not retries.
    let err =
        agent_client(&env, "nobody").chat().create(build_request("default", "s", &messages, &[])).await.unwrap_err();
    assert!(matches!(LlmError::from(err), LlmError::Status { status: 401, .. }));
    assert_eq!(env.llm.requests().len(), 3);
}

// ---------------------------------------------------------------------------------------
// web_fetch

#[tokio::test]
async fn fetch_follows_each_users_policy_and_refusals_say_why() {
    let env = env().await;
    // Allowed: alice (family, allowedDomains [allowed.test]).
    let url = format!("{}/page", env.allowed);
    let (status, body) = env.fetch("alice", &url).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], 200);
    assert_eq!(body["content_type"], "text/html");
    assert_eq!(body["final_url"], url);
    assert_eq!(body["truncated"], false);
    assert!(body["text"].as_str().unwrap().contains("Cats purr."), "{body}");

    let refusals = [
        ("alice", format!("{}/page", env.evil), "evil.test is not in allowedDomains (allowed.test)"),
        ("pat", format!("{}/page", env.allowed), "web fetch is disabled for this user"),
        ("alice", "http://169.254.169.254/latest/meta-data/".to_string(), "169.254.169.254"),
        (
            "alice",
            format!("http://metadata.allowed.test:{}/", env.allowed.rsplit(':').next().unwrap()),
            "169.254.169.254",
        ),
        (
            "alice",
            format!(
                "{}/redirect?http://internal.allowed.test:{}/",
                env.allowed,
                env.allowed.rsplit(':').next().unwrap()
            ),
            "internal.allowed.test resolves to a forbidden address",
        ),
        (
            "alice",
            format!("{}/redirect?http://127.0.0.1:{}/", env.allowed, env.allowed.rsplit(':').next().unwrap()),
            "127.0.0.1",
        ),
        ("alice", "file:///etc/passwd".to_string(), "file"),
    ];
    for (who, url, why) in refusals {
        let (status, body) = env.fetch(who, &url).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{who} {url}: {body}");
        let reason = body["error"].as_str().unwrap_or_else(|| panic!("{body}"));
        assert!(reason.contains(why), "{who} {url}: {reason:?} does not say {why:?}");
    }

    // An allowed name that does not resolve is a failure, not a refusal.
    let mut opened = user("alice", Profile::Family, |s| {
        s.web = Some(WebSpec {
            fetch: Some(WebFetchSpec { enabled: None, allowed_domains: Some(vec!["unknown.test".into()]) }),
        })
    });
    opened.metadata.resource_version = Some("2".into());
    env.users.lock().unwrap().apply_watcher_event(&Event::Apply(opened));
    let (status, body) = env.fetch("alice", "http://unknown.test/").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert!(body["error"].as_str().unwrap().contains("unknown.test"), "{body}");

    let (status, _, body) = env.post("/v1/fetch", Some(&env.token("alice")), &json!({"link": "x"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["error"].as_str().unwrap().contains("{\"url\""), "{body}");

    let metrics = env.metrics();
    assert!(metrics.contains(r#"moltmate_broker_requests_total{endpoint="fetch",decision="refused"} 8"#), "{metrics}");
    assert!(metrics.contains(r#"moltmate_broker_requests_total{endpoint="fetch",decision="allowed"} 1"#), "{metrics}");
    assert!(metrics.contains(r#"moltmate_broker_requests_total{endpoint="fetch",decision="error"} 1"#), "{metrics}");
}

/// Every fetch is a request out of the cluster for the installation: a budget per user per
/// minute and per UTC day, as for the LLM.
#[tokio::test]
async fn fetches_have_a_budget_per_user() {
    let env = env_with(|c| {
        c.fetches_per_minute = 3;
        c.fetches_per_day = 5;
    })
    .await;
    let page = format!("{}/page", env.allowed);
    for _ in 0..3 {
        assert_eq!(env.fetch("alice", &page).await.0, StatusCode::OK);
    }
    let (status, body) = env.fetch("alice", &page).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert!(body["error"].as_str().unwrap().contains("at most 3 fetches per minute"), "{body}");
    // A minute later two more, then the day's budget is spent until midnight UTC.
    env.clock.0.fetch_add(61_000, Ordering::SeqCst);
    for _ in 0..2 {
        assert_eq!(env.fetch("alice", &page).await.0, StatusCode::OK);
    }
    let (status, body) = env.fetch("alice", &page).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert!(body["error"].as_str().unwrap().contains("daily budget of 5 fetches"), "{body}");
    env.clock.0.store(NOON + 43_200_000, Ordering::SeqCst);
    assert_eq!(env.fetch("alice", &page).await.0, StatusCode::OK);
}

#[tokio::test]
async fn concurrent_fetches_are_capped_per_user() {
    let env = Arc::new(env_with(|c| c.fetches_per_user = 2).await);
    let hold = format!("{}/hold", env.allowed);
    let mut running = Vec::new();
    for _ in 0..2 {
        let (env, hold) = (env.clone(), hold.clone());
        running.push(tokio::spawn(async move { env.fetch("alice", &hold).await }));
    }
    let mut held = env.pages.held.subscribe();
    tokio::time::timeout(WAIT, held.wait_for(|n| *n == 2)).await.unwrap().unwrap();

    let (status, body) = env.fetch("alice", &format!("{}/page", env.allowed)).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert!(body["error"].as_str().unwrap().contains("at most 2 fetches at a time per user"), "{body}");
    // Another user is not held up by alice's.
    let mut opened = user("bob", Profile::Family, |s| {
        s.web = Some(WebSpec {
            fetch: Some(WebFetchSpec { enabled: None, allowed_domains: Some(vec!["allowed.test".into()]) }),
        })
    });
    opened.metadata.resource_version = Some("2".into());
    env.users.lock().unwrap().apply_watcher_event(&Event::Apply(opened));
    assert_eq!(env.fetch("bob", &format!("{}/page", env.allowed)).await.0, StatusCode::OK);

    env.pages.release.notify_waiters();
    for task in running {
        let (status, body) = task.await.unwrap();
        assert_eq!((status, body["text"].as_str()), (StatusCode::OK, Some("released")));
    }
    assert_eq!(env.fetch("alice", &format!("{}/page", env.allowed)).await.0, StatusCode::OK);
}

/// The gateway does not start without a model, nor with the agents' placeholder as one.
#[test]
fn the_gateway_refuses_to_start_without_a_model() {
    for model in [None, Some("default"), Some(" ")] {
        let mut gateway = std::process::Command::new(env!("CARGO_BIN_EXE_moltmate"));
        gateway
            .args(["gateway", "--llm-base-url", "https://llm.example.org/v1"])
            .env_remove("MOLTMATE_LLM_DEFAULT_MODEL");
        if let Some(model) = model {
            gateway.args(["--llm-default-model", model]);
        }
        let out = gateway.output().unwrap();
        let said = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{model:?}: {said}");
        assert!(said.contains("--llm-default-model"), "{model:?}: {said}");
    }
}
