//! One turn: decide whether the update is new, a redelivery or a duplicate, then the tool
//! loop (model -> tool calls -> results -> model ...) until the model answers in text or
//! the round limit is reached. Every step is recorded in the session as it happens.

use super::history::{self, ToolCall, truncate};
use super::images::Image;
use super::llm::{ChatModel, LlmError, ToolSpec};
use super::session::{Record, Replies, StoredReply, Window};
use super::store::{SessionStore, StoreError};
use super::tools::{ARGUMENTS_MAX, ToolResult, ToolRunner};

/// Tool calls run per round; a model asking for more gets refusals for the rest.
pub const MAX_CALLS_PER_ROUND: usize = 16;
/// The reply and any text the model sends alongside tool calls, at most.
pub const REPLY_MAX: usize = 32 * 1024;
const ID_MAX: usize = 128;
const NAME_MAX: usize = 64;

/// What to do with an incoming update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Answered before, and not known to have reached the user: send the stored reply again.
    Replay(StoredReply),
    /// Answered before, and the gateway confirmed the reply reached the user: send nothing.
    Delivered,
    /// Its message is the last one in the history, unanswered (the model was down, or the
    /// agent stopped): ask the model again without recording the message twice.
    Retry,
    /// Record the message and answer it.
    New,
}

pub fn plan(replies: &Replies, window: &Window, update_id: i64) -> Plan {
    if let Some(reply) = replies.get(update_id) {
        return if reply.delivered { Plan::Delivered } else { Plan::Replay(reply.clone()) };
    }
    if window.unanswered_update() == Some(update_id) {
        return Plan::Retry;
    }
    Plan::New
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_rounds: u32,
    pub history_budget: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum LoopError {
    #[error(transparent)]
    Llm(#[from] LlmError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Run the tool loop on the session's current history; returns the reply text.
pub async fn run<M: ChatModel, T: ToolRunner>(
    model: &M,
    tools: &T,
    store: &mut SessionStore,
    system: &str,
    images: &[Image],
    limits: Limits,
) -> Result<String, LoopError> {
    let specs = tools.specs();
    let mut round = 0;
    loop {
        // The last call offers no tools: the model has to answer.
        let offered: &[ToolSpec] = if round < limits.max_rounds { &specs } else { &[] };
        let messages = history::trim(store.window.messages(), limits.history_budget);
        let reply = model.complete(system, &messages, offered, images).await?;
        if reply.tool_calls.is_empty() {
            return Ok(final_text(reply.content));
        }
        if round >= limits.max_rounds {
            // Calls to tools it was not offered: not recorded, so the history stays valid.
            return Ok(format!(
                "I stopped after {} rounds of tool calls without finishing. Ask me to continue if you want me to go on.",
                limits.max_rounds
            ));
        }
        let (calls, oversized) = accept_calls(reply.tool_calls, round);
        let content = reply.content.filter(|c| !c.trim().is_empty()).map(|c| truncate(&c, REPLY_MAX).0);
        store.append(vec![Record::Assistant { content, tool_calls: calls.clone() }])?;
        for (i, call) in calls.iter().enumerate() {
            let result = if i >= MAX_CALLS_PER_ROUND {
                ToolResult::denied(format!("at most {MAX_CALLS_PER_ROUND} tool calls run per round"))
            } else if oversized.contains(&i) {
                ToolResult::denied(format!("the arguments were longer than {ARGUMENTS_MAX} bytes"))
            } else {
                tools.call(call).await
            };
            store.append(vec![Record::Tool {
                call_id: call.id.clone(),
                name: call.name.clone(),
                content: result.content,
            }])?;
        }
        round += 1;
    }
}

fn final_text(content: Option<String>) -> String {
    match content {
        Some(text) if !text.trim().is_empty() => truncate(text.trim(), REPLY_MAX).0,
        _ => "(I have no answer to that.)".to_string(),
    }
}

/// Make the model's calls safe to record and answer: usable unique ids, bounded names and
/// arguments. Returns the calls and the indexes whose arguments were too long to keep.
pub fn accept_calls(calls: Vec<ToolCall>, round: u32) -> (Vec<ToolCall>, Vec<usize>) {
    let mut seen = std::collections::HashSet::new();
    let mut oversized = Vec::new();
    let accepted = calls
        .into_iter()
        .enumerate()
        .map(|(i, mut call)| {
            let usable =
                !call.id.is_empty() && call.id.len() <= ID_MAX && call.id.bytes().all(|b| b.is_ascii_graphic());
            if !usable || !seen.insert(call.id.clone()) {
                call.id = format!("call_r{round}_{i}");
                seen.insert(call.id.clone());
            }
            call.name = truncate(&call.name, NAME_MAX).0;
            if call.arguments.len() > ARGUMENTS_MAX {
                call.arguments = "{}".into();
                oversized.push(i);
            }
            call
        })
        .collect();
    (accepted, oversized)
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Mutex;

    use super::*;
    use crate::agent::history::Message;
    use crate::agent::llm::ModelReply;
    use crate::agent::tools::ToolDecision;

    /// A model that answers from a script and keeps what it was shown.
    struct Scripted {
        replies: Mutex<VecDeque<Result<ModelReply, LlmError>>>,
        seen: Mutex<Vec<(Vec<Message>, usize)>>,
    }

    impl Scripted {
        fn new(replies: Vec<Result<ModelReply, LlmError>>) -> Self {
            Self { replies: Mutex::new(replies.into()), seen: Mutex::new(Vec::new()) }
        }
    }

    impl ChatModel for Scripted {
        async fn complete(
            &self,
            _system: &str,
            messages: &[Message],
            tools: &[ToolSpec],
            _images: &[Image],
        ) -> Result<ModelReply, LlmError> {
            self.seen.lock().unwrap().push((messages.to_vec(), tools.len()));
            self.replies.lock().unwrap().pop_front().unwrap_or_else(|| Ok(text("done")))
        }
    }

    struct Echo;
    impl ToolRunner for Echo {
        fn specs(&self) -> Vec<ToolSpec> {
            vec![ToolSpec { name: "exec", description: String::new(), parameters: serde_json::json!({}) }]
        }
        async fn call(&self, call: &ToolCall) -> ToolResult {
            ToolResult {
                content: format!("ran {}", call.arguments),
                decision: ToolDecision::Allowed,
                exit_code: Some(0),
                bytes: 0,
            }
        }
    }

    fn text(t: &str) -> ModelReply {
        ModelReply { content: Some(t.into()), tool_calls: vec![] }
    }
    fn call(id: &str, args: &str) -> ModelReply {
        ModelReply {
            content: None,
            tool_calls: vec![ToolCall { id: id.into(), name: "exec".into(), arguments: args.into() }],
        }
    }
    fn store_with(text: &str) -> SessionStore {
        let dir = std::env::temp_dir();
        let mut s = SessionStore::open(&dir.join("moltmate-no-such-dir"), false, 100_000).unwrap();
        s.append(vec![Record::User { update_id: 1, chat_id: 1, from: 1, text: text.into(), images: vec![] }]).unwrap();
        s
    }
    const LIMITS: Limits = Limits { max_rounds: 2, history_budget: 10_000 };

    #[tokio::test]
    async fn tool_results_are_shown_to_the_model_then_it_answers() {
        let model = Scripted::new(vec![Ok(call("c1", "{\"command\":\"ls\"}")), Ok(text("3 files"))]);
        let mut store = store_with("what is there?");
        let reply = run(&model, &Echo, &mut store, "sys", &[], LIMITS).await.unwrap();
        assert_eq!(reply, "3 files");
        let seen = model.seen.lock().unwrap();
        assert_eq!(seen.len(), 2);
        assert_eq!(
            seen[1].0.last(),
            Some(&Message::Tool { call_id: "c1".into(), content: "ran {\"command\":\"ls\"}".into() })
        );
    }

    #[tokio::test]
    async fn rounds_are_bounded_and_the_last_call_offers_no_tools() {
        let model = Scripted::new(vec![Ok(call("a", "{}")), Ok(call("b", "{}")), Ok(call("c", "{}"))]);
        let mut store = store_with("loop forever");
        let reply = run(&model, &Echo, &mut store, "sys", &[], LIMITS).await.unwrap();
        assert!(reply.contains("stopped after 2 rounds"), "{reply}");
        let seen = model.seen.lock().unwrap();
        assert_eq!(seen.iter().map(|(_, tools)| *tools).collect::<Vec<_>>(), [1, 1, 0]);
        // The unoffered call was not recorded: every recorded call has its result.
        let msgs = store.window.messages();
        assert_eq!(history::sanitize(msgs.clone()), msgs);
    }

    #[tokio::test]
    async fn model_errors_end_the_loop_with_the_records_so_far() {
        let model = Scripted::new(vec![Ok(call("a", "{}")), Err(LlmError::Timeout)]);
        let mut store = store_with("hi");
        let err = run(&model, &Echo, &mut store, "sys", &[], LIMITS).await.unwrap_err();
        assert!(matches!(err, LoopError::Llm(LlmError::Timeout)));
        assert_eq!(store.window.messages().len(), 3, "user, call, result");
    }

    #[test]
    fn calls_get_usable_unique_ids_and_bounded_arguments() {
        let calls = vec![
            ToolCall { id: "".into(), name: "exec".into(), arguments: "{}".into() },
            ToolCall { id: "x".into(), name: "n".repeat(100), arguments: "{}".into() },
            ToolCall { id: "x".into(), name: "exec".into(), arguments: "a".repeat(ARGUMENTS_MAX + 1) },
        ];
        let (out, oversized) = accept_calls(calls, 3);
        assert_eq!(out.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), ["call_r3_0", "x", "call_r3_2"]);
        assert_eq!(out[1].name.len(), NAME_MAX);
        assert_eq!((out[2].arguments.as_str(), oversized), ("{}", vec![2]));
    }

    #[test]
    fn plan_replays_retries_or_starts() {
        let mut replies = Replies::new(10);
        replies.insert(5, "done".into(), vec!["out/report.csv".into()]);
        let mut window = Window::new(10_000);
        window.push(Record::User { update_id: 6, chat_id: 1, from: 1, text: "x".into(), images: vec![] });
        let stored = StoredReply { text: "done".into(), files: vec!["out/report.csv".into()], delivered: false };
        assert_eq!(plan(&replies, &window, 5), Plan::Replay(stored));
        assert_eq!(plan(&replies, &window, 6), Plan::Retry);
        assert_eq!(plan(&replies, &window, 7), Plan::New);
        replies.mark_delivered(5);
        assert_eq!(plan(&replies, &window, 5), Plan::Delivered);
    }
}
