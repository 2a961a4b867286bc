//! The floor for the gateway's cost per message: a relay with no logic, built on the gateway's
//! HTTP stack (a multi-thread tokio runtime, axum serving, reqwest calling), that makes the same
//! exchanges per message as the gateway: `getUpdates` in, the agent's turn, the agent's LLM
//! call proxied to the provider with the real key, `sendMessage` out. What the gateway spends
//! beyond it is its own work: access and routing decisions, per-user queues, limits, logging,
//! delivery records.
//!
//! It runs as its own process (the bench binary started as `scale floor-relay ...`) so that its
//! CPU time and instruction count are its own, as the gateway's are.

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use clap::Parser;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The first argument that starts the bench binary as the relay.
pub const SUBCOMMAND: &str = "floor-relay";

#[derive(Parser, Debug)]
#[command(name = "scale floor-relay", about = "A minimal Telegram ⇄ agent ⇄ LLM relay (benchmark floor)")]
pub struct RelayCli {
    /// Bot API base URL (the requests go to URL/botTOKEN/METHOD).
    #[arg(long)]
    telegram: String,
    #[arg(long)]
    bot_token: String,
    /// Where the agents' LLM calls arrive (the gateway's broker address).
    #[arg(long)]
    listen: std::net::SocketAddr,
    /// OpenAI-style base URL of the model provider (`.../v1`).
    #[arg(long)]
    llm: String,
    #[arg(long)]
    llm_key: String,
    /// JSON file: a list of routes (chat id → agent base URL and its bearer token).
    #[arg(long)]
    routes: std::path::PathBuf,
}

/// Where one chat's messages go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub chat_id: i64,
    /// `http://IP:PORT`
    pub agent: String,
    pub token: String,
}

/// What the relay needs of one update: its id, chat, sender and text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incoming {
    pub update_id: i64,
    pub chat_id: i64,
    pub from: i64,
    pub text: String,
}

/// The text messages of a `getUpdates` answer, and the offset that confirms them all.
pub fn read_updates(body: &Value, offset: i64) -> (Vec<Incoming>, i64) {
    let mut next = offset;
    let mut incoming = Vec::new();
    for update in body["result"].as_array().into_iter().flatten() {
        let Some(update_id) = update["update_id"].as_i64() else { continue };
        next = next.max(update_id + 1);
        let message = &update["message"];
        if let (Some(chat_id), Some(from), Some(text)) =
            (message["chat"]["id"].as_i64(), message["from"]["id"].as_i64(), message["text"].as_str())
        {
            incoming.push(Incoming { update_id, chat_id, from, text: text.to_string() });
        }
    }
    (incoming, next)
}

struct Relay {
    http: reqwest::Client,
    telegram: String,
    llm: String,
    llm_key: String,
    routes: HashMap<i64, Route>,
}

pub fn main(args: impl Iterator<Item = String>) -> ExitCode {
    let cli = RelayCli::parse_from(args);
    let routes: Vec<Route> = match std::fs::read(&cli.routes)
        .map_err(|e| e.to_string())
        .and_then(|bytes| serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", cli.routes.display())))
    {
        Ok(routes) => routes,
        Err(e) => {
            eprintln!("floor relay: routes: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    match runtime.block_on(serve(cli, routes)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("floor relay: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(cli: RelayCli, routes: Vec<Route>) -> Result<(), String> {
    // The gateway's own client set-up for agents and Telegram: rustls with ring, no proxy.
    let http = moltmates::http::plain_http_client()
        .map_err(|e| e.to_string())?
        .timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| e.to_string())?;
    let relay = Arc::new(Relay {
        http,
        telegram: format!("{}/bot{}", cli.telegram.trim_end_matches('/'), cli.bot_token),
        llm: cli.llm.trim_end_matches('/').to_string(),
        llm_key: cli.llm_key,
        routes: routes.into_iter().map(|r| (r.chat_id, r)).collect(),
    });
    let listener = tokio::net::TcpListener::bind(cli.listen).await.map_err(|e| format!("{}: {e}", cli.listen))?;
    let app =
        axum::Router::new().route("/v1/chat/completions", axum::routing::post(proxy_llm)).with_state(relay.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    eprintln!("floor relay: polling {} routes", relay.routes.len());
    let mut offset = 0;
    loop {
        let answer = relay
            .http
            .post(format!("{}/getUpdates", relay.telegram))
            .json(&json!({ "offset": offset, "timeout": 5 }))
            .send()
            .await;
        let body = match answer {
            Ok(answer) => answer.bytes().await.unwrap_or_default(),
            Err(e) => {
                eprintln!("floor relay: getUpdates: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let (incoming, next) = read_updates(&serde_json::from_slice(&body).unwrap_or_default(), offset);
        offset = next;
        for message in incoming {
            tokio::spawn(relay_one(relay.clone(), message));
        }
    }
}

/// One message: the agent's turn, then its reply to the chat.
async fn relay_one(relay: Arc<Relay>, message: Incoming) {
    let Some(route) = relay.routes.get(&message.chat_id) else { return };
    let turn = moltmates::agent::api::TurnRequest {
        update_id: message.update_id,
        chat_id: message.chat_id,
        from: moltmates::agent::api::Sender::Id(message.from),
        text: message.text,
        images: Vec::new(),
    };
    let answer = relay.http.post(format!("{}/v1/turn", route.agent)).bearer_auth(&route.token).json(&turn).send().await;
    let reply = match answer {
        Ok(answer) => answer.json::<moltmates::agent::api::TurnResponse>().await.map(|t| t.reply),
        Err(e) => Err(e),
    };
    let text = reply.unwrap_or_else(|e| format!("relay: {e}"));
    let sent = relay
        .http
        .post(format!("{}/sendMessage", relay.telegram))
        .json(&json!({ "chat_id": message.chat_id, "text": text }))
        .send()
        .await;
    if let Err(e) = sent {
        eprintln!("floor relay: sendMessage: {e}");
    }
}

/// The agent's LLM call, forwarded with the provider's key; the provider's answer handed back.
async fn proxy_llm(axum::extract::State(relay): axum::extract::State<Arc<Relay>>, body: Bytes) -> Response {
    let answer = relay
        .http
        .post(format!("{}/chat/completions", relay.llm))
        .bearer_auth(&relay.llm_key)
        .header(header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await;
    match answer {
        Ok(answer) => {
            let status = answer.status();
            let bytes = answer.bytes().await.unwrap_or_default();
            (status, [(header::CONTENT_TYPE, "application/json")], bytes).into_response()
        }
        Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    }
}

pub fn self_test() {
    let body = json!({ "ok": true, "result": [
        { "update_id": 7, "message": { "chat": { "id": 10 }, "from": { "id": 10 }, "text": "hi" } },
        { "update_id": 8, "message": { "chat": { "id": 11 }, "from": { "id": 12 }, "photo": [] } },
    ]});
    let (incoming, next) = read_updates(&body, 3);
    assert_eq!(incoming, vec![Incoming { update_id: 7, chat_id: 10, from: 10, text: "hi".into() }]);
    assert_eq!(next, 9, "an update the relay does not answer is confirmed too");
    assert_eq!(read_updates(&json!({ "ok": true, "result": [] }), 9), (vec![], 9));
}
