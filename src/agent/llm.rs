//! The model, through the broker's OpenAI-compatible Chat Completions endpoint (async-openai).
//!
//! The broker is `{MOLTMATE_BROKER_URL}/v1`, the agent token is the API key: the broker knows
//! the user by it and holds the real provider key. 429, 5xx and connection errors are retried
//! with exponential backoff by async-openai's retry layer; each attempt has a timeout, and the
//! whole call a deadline (a `Retry-After` from the server cannot stall a turn for long).

use std::future::Future;
use std::time::Duration;

use async_openai::Client;
use async_openai::config::OpenAIConfig;
use async_openai::error::OpenAIError;
use async_openai::middleware::ReqwestService;
use async_openai::middleware::retry::OpenAIRetryLayer;
use async_openai::types::chat::{
    ChatCompletionMessageToolCall, ChatCompletionMessageToolCalls, ChatCompletionRequestAssistantMessage,
    ChatCompletionRequestAssistantMessageContent, ChatCompletionRequestMessage,
    ChatCompletionRequestMessageContentPartImage, ChatCompletionRequestMessageContentPartText,
    ChatCompletionRequestSystemMessage, ChatCompletionRequestSystemMessageContent, ChatCompletionRequestToolMessage,
    ChatCompletionRequestToolMessageContent, ChatCompletionRequestUserMessage, ChatCompletionRequestUserMessageContent,
    ChatCompletionRequestUserMessageContentPart, ChatCompletionTool, ChatCompletionTools, CreateChatCompletionRequest,
    CreateChatCompletionResponse, FunctionCall, FunctionObject, ImageUrl,
};
use tower::Layer;

use super::config::Config;
use super::history::{Message, ToolCall};
use super::images::Image;

/// A tool as offered to the model.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolSpec {
    pub name: &'static str,
    pub description: String,
    pub parameters: serde_json::Value,
}

/// What the model answered: text, tool calls, or both.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ModelReply {
    pub content: Option<String>,
    pub tool_calls: Vec<ToolCall>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LlmError {
    #[error("the model did not answer in time")]
    Timeout,
    #[error("the model service could not be reached: {0}")]
    Unreachable(String),
    #[error("the model service answered {status}: {message}")]
    Status { status: u16, message: String },
    #[error("the model service sent a response that is not a chat completion: {0}")]
    Decode(String),
    #[error("the model request could not be made: {0}")]
    Request(String),
    /// The installation names a model its provider does not serve: only the admin can fix it.
    #[error("the installation's model is not served by its provider: {0}")]
    ModelNotServed(String),
}

impl LlmError {
    /// The `kind` label of `moltmate_agent_llm_errors_total`.
    pub fn kind(&self) -> &'static str {
        match self {
            LlmError::Timeout => "timeout",
            LlmError::Unreachable(_) => "unreachable",
            LlmError::Status { status: 429, .. } => "rate_limited",
            LlmError::Status { .. } => "status",
            LlmError::Decode(_) => "decode",
            LlmError::Request(_) => "request",
            LlmError::ModelNotServed(_) => "model_not_served",
        }
    }

    /// What the person reads instead of an answer.
    pub fn user_reply(&self) -> String {
        let why = match self {
            LlmError::ModelNotServed(_) => {
                return "Sorry, I cannot answer: the language model this installation is set up with is \
                        not offered by its provider. Please tell the administrator (the gateway's log says \
                        which setting to fix). Your message is saved."
                    .to_string();
            }
            LlmError::Timeout => "it took too long to answer",
            LlmError::Unreachable(_) => "it cannot be reached",
            LlmError::Status { status: 429, .. } => "it is rate limited",
            LlmError::Status { status: 401 | 403, .. } => "it refused my credentials",
            LlmError::Status { .. } => "it returned an error",
            LlmError::Decode(_) | LlmError::Request(_) => "its answer could not be understood",
        };
        format!(
            "Sorry, I could not reach my language model right now ({why}). \
             Your message is saved; write again in a little while and I will pick up from here."
        )
    }
}

fn short(text: &str) -> String {
    super::history::truncate(text.trim(), 300).0
}

impl From<OpenAIError> for LlmError {
    fn from(e: OpenAIError) -> Self {
        match e {
            OpenAIError::Reqwest(e) if e.is_timeout() => LlmError::Timeout,
            OpenAIError::Reqwest(e) if e.is_connect() => LlmError::Unreachable(short(&e.to_string())),
            OpenAIError::Reqwest(e) => LlmError::Unreachable(short(&e.to_string())),
            OpenAIError::ApiError(e)
                if e.api_error.code.as_deref() == Some(crate::gateway::broker::llm::MODEL_NOT_SERVED) =>
            {
                LlmError::ModelNotServed(short(&e.api_error.message))
            }
            OpenAIError::ApiError(e) => {
                LlmError::Status { status: e.status_code.as_u16(), message: short(&e.api_error.message) }
            }
            OpenAIError::JSONDeserialize(e, _) => LlmError::Decode(short(&e.to_string())),
            other => LlmError::Request(short(&other.to_string())),
        }
    }
}

/// The model as the turn loop sees it (a scripted one in unit tests).
pub trait ChatModel: Send + Sync {
    fn complete(
        &self,
        system: &str,
        messages: &[Message],
        tools: &[ToolSpec],
        images: &[Image],
    ) -> impl Future<Output = Result<ModelReply, LlmError>> + Send;
}

pub struct LlmClient {
    client: Client<OpenAIConfig>,
    model: String,
    deadline: Duration,
}

impl LlmClient {
    pub fn new(config: &Config) -> Result<Self, reqwest::Error> {
        let http = super::broker_client::builder(config.llm_timeout).build()?;
        let openai = OpenAIConfig::new()
            .with_api_base(config.llm_base())
            .with_api_key(config.token.expose())
            .with_org_id("")
            .with_project_id("");
        let retries = config.llm_retries as usize;
        let service = OpenAIRetryLayer::new(retries).layer(ReqwestService::new(http.clone()));
        let client = Client::build(http, openai).with_http_service(service);
        // Every attempt may take the full timeout; backoff between attempts is at most 8 s.
        let attempts = config.llm_retries + 1;
        let deadline = config.llm_timeout * attempts + Duration::from_secs(8) * config.llm_retries;
        Ok(Self { client, model: config.model.clone(), deadline })
    }
}

impl ChatModel for LlmClient {
    async fn complete(
        &self,
        system: &str,
        messages: &[Message],
        tools: &[ToolSpec],
        images: &[Image],
    ) -> Result<ModelReply, LlmError> {
        let mut request = build_request(&self.model, system, messages, tools);
        attach_images(&mut request, images);
        match tokio::time::timeout(self.deadline, self.client.chat().create(request)).await {
            Err(_) => Err(LlmError::Timeout),
            Ok(Err(e)) => Err(e.into()),
            Ok(Ok(response)) => parse_response(response),
        }
    }
}

/// The wire request. Pure.
pub fn build_request(
    model: &str,
    system: &str,
    messages: &[Message],
    tools: &[ToolSpec],
) -> CreateChatCompletionRequest {
    let mut wire = Vec::with_capacity(messages.len() + 1);
    wire.push(ChatCompletionRequestMessage::System(ChatCompletionRequestSystemMessage {
        content: ChatCompletionRequestSystemMessageContent::Text(system.to_string()),
        name: None,
    }));
    wire.extend(messages.iter().map(to_wire));
    CreateChatCompletionRequest {
        model: model.to_string(),
        messages: wire,
        tools: (!tools.is_empty()).then(|| {
            tools
                .iter()
                .map(|t| {
                    ChatCompletionTools::Function(ChatCompletionTool {
                        function: FunctionObject {
                            name: t.name.to_string(),
                            description: Some(t.description.clone()),
                            parameters: Some(t.parameters.clone()),
                            strict: None,
                        },
                    })
                })
                .collect()
        }),
        ..Default::default()
    }
}

/// The photos as image input beside the text of the newest user message (OpenAI's content
/// parts: `{"type": "text"}` then `{"type": "image_url", "image_url": {"url": "data:..."}}`).
/// Pure.
pub fn attach_images(request: &mut CreateChatCompletionRequest, images: &[Image]) {
    if images.is_empty() {
        return;
    }
    let Some(ChatCompletionRequestMessage::User(user)) =
        request.messages.iter_mut().rev().find(|m| matches!(m, ChatCompletionRequestMessage::User(_)))
    else {
        return;
    };
    let text = match &user.content {
        ChatCompletionRequestUserMessageContent::Text(text) => text.clone(),
        ChatCompletionRequestUserMessageContent::Array(_) => return,
    };
    let mut parts =
        vec![ChatCompletionRequestUserMessageContentPart::Text(ChatCompletionRequestMessageContentPartText {
            text,
            prompt_cache_breakpoint: None,
        })];
    parts.extend(images.iter().map(|image| {
        ChatCompletionRequestUserMessageContentPart::ImageUrl(ChatCompletionRequestMessageContentPartImage {
            image_url: ImageUrl { url: image.data_url.clone(), detail: None },
            prompt_cache_breakpoint: None,
        })
    }));
    user.content = ChatCompletionRequestUserMessageContent::Array(parts);
}

fn to_wire(message: &Message) -> ChatCompletionRequestMessage {
    match message {
        Message::User { text } => ChatCompletionRequestMessage::User(ChatCompletionRequestUserMessage {
            content: ChatCompletionRequestUserMessageContent::Text(text.clone()),
            name: None,
        }),
        Message::Assistant { content, tool_calls } => {
            ChatCompletionRequestMessage::Assistant(ChatCompletionRequestAssistantMessage {
                content: content.clone().map(ChatCompletionRequestAssistantMessageContent::Text),
                tool_calls: (!tool_calls.is_empty()).then(|| {
                    tool_calls
                        .iter()
                        .map(|c| {
                            ChatCompletionMessageToolCalls::Function(ChatCompletionMessageToolCall {
                                id: c.id.clone(),
                                function: FunctionCall { name: c.name.clone(), arguments: c.arguments.clone() },
                            })
                        })
                        .collect()
                }),
                ..Default::default()
            })
        }
        Message::Tool { call_id, content } => ChatCompletionRequestMessage::Tool(ChatCompletionRequestToolMessage {
            content: ChatCompletionRequestToolMessageContent::Text(content.clone()),
            tool_call_id: call_id.clone(),
        }),
    }
}

/// The first choice's text and tool calls. Custom (non-function) tool calls are kept as
/// calls of a tool that does not exist, so they get an error result like any unknown tool.
pub fn parse_response(response: CreateChatCompletionResponse) -> Result<ModelReply, LlmError> {
    let Some(choice) = response.choices.into_iter().next() else {
        return Err(LlmError::Decode("the response has no choices".into()));
    };
    let message = choice.message;
    let tool_calls = message
        .tool_calls
        .unwrap_or_default()
        .into_iter()
        .map(|call| match call {
            ChatCompletionMessageToolCalls::Function(f) => {
                ToolCall { id: f.id, name: f.function.name, arguments: f.function.arguments }
            }
            ChatCompletionMessageToolCalls::Custom(c) => {
                ToolCall { id: c.id, name: format!("custom:{}", c.custom_tool.name), arguments: c.custom_tool.input }
            }
        })
        .collect();
    let content = message.content.or(message.refusal);
    Ok(ModelReply { content, tool_calls })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn request_has_the_wire_shape() {
        let messages = vec![
            Message::User { text: "hi".into() },
            Message::Assistant {
                content: None,
                tool_calls: vec![ToolCall {
                    id: "c1".into(),
                    name: "exec".into(),
                    arguments: "{\"command\":\"ls\"}".into(),
                }],
            },
            Message::Tool { call_id: "c1".into(), content: "a.txt".into() },
        ];
        let tools = vec![ToolSpec { name: "exec", description: "run".into(), parameters: json!({"type": "object"}) }];
        let wire = serde_json::to_value(build_request("m", "sys", &messages, &tools)).unwrap();
        assert_eq!(wire["model"], "m");
        assert_eq!(wire["messages"][0], json!({"role": "system", "content": "sys"}));
        assert_eq!(wire["messages"][1], json!({"role": "user", "content": "hi"}));
        assert_eq!(
            wire["messages"][2],
            json!({"role": "assistant", "tool_calls": [{"type": "function", "id": "c1", "function": {"name": "exec", "arguments": "{\"command\":\"ls\"}"}}]})
        );
        assert_eq!(wire["messages"][3], json!({"role": "tool", "content": "a.txt", "tool_call_id": "c1"}));
        assert_eq!(wire["tools"][0]["type"], "function");
        assert_eq!(wire["tools"][0]["function"]["name"], "exec");
        let without = serde_json::to_value(build_request("m", "s", &[], &[])).unwrap();
        assert!(without.get("tools").is_none());
    }

    #[test]
    fn photos_go_beside_the_newest_user_text() {
        let messages = vec![
            Message::User { text: "old".into() },
            Message::Assistant { content: Some("ok".into()), tool_calls: vec![] },
            Message::User { text: "what is this?".into() },
        ];
        let mut request = build_request("m", "sys", &messages, &[]);
        attach_images(&mut request, &[Image { data_url: "data:image/jpeg;base64,/9j/".into() }]);
        let wire = serde_json::to_value(&request).unwrap();
        assert_eq!(wire["messages"][1]["content"], "old");
        assert_eq!(
            wire["messages"][3]["content"],
            json!([{"type": "text", "text": "what is this?"},
                   {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/"}}])
        );
    }

    #[test]
    fn response_tool_calls_and_text_are_read() {
        let response: CreateChatCompletionResponse = serde_json::from_value(json!({
            "id": "x", "object": "chat.completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant", "content": null,
                "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "exec", "arguments": "not json"}}]}}]
        }))
        .unwrap();
        let reply = parse_response(response).unwrap();
        assert_eq!(
            reply.tool_calls,
            vec![ToolCall { id: "c1".into(), name: "exec".into(), arguments: "not json".into() }]
        );
        let empty: CreateChatCompletionResponse = serde_json::from_value(
            json!({"id": "x", "object": "chat.completion", "created": 1, "model": "m", "choices": []}),
        )
        .unwrap();
        assert!(matches!(parse_response(empty), Err(LlmError::Decode(_))));
    }

    #[test]
    fn errors_read_well() {
        let e = LlmError::Status { status: 500, message: "boom".into() };
        assert_eq!(e.kind(), "status");
        assert!(e.user_reply().contains("could not reach my language model"));
        assert_eq!(LlmError::Status { status: 429, message: String::new() }.kind(), "rate_limited");
    }
}
