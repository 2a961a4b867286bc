//! The agent: one user's turns, one at a time, against the session store, the model and the tools.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::Mutex;
use tracing::{info, warn};

use super::api::{
    ForgetResponse, MemoryResponse, ReportedProfile, ResetResponse, StatusResponse, TurnRequest, TurnResponse,
    TurnStatus,
};
use super::config::Config;
use super::files::FileError;
use super::history::Message;
use super::llm::ChatModel;
use super::llm::LlmClient;
use super::metrics::AgentMetrics;
use super::notes::{self, Note};
use super::prompt::{PromptInput, system_prompt};
use super::session::Record;
use super::store::{SessionStore, StoreError};
use super::tools::Tools;
use super::turn::{self, Limits, LoopError, Plan};
use super::workspace::{MEMORY_PROMPT_MAX, Workspace};

#[derive(Debug, thiserror::Error)]
pub enum TurnError {
    #[error("the conversation history could not be saved: {0}")]
    Store(#[from] StoreError),
}

/// Why a note could not be forgotten.
#[derive(Debug, thiserror::Error)]
pub enum ForgetError {
    #[error("there is no note number {0}; /memory lists them")]
    NoSuchNote(usize),
    #[error(transparent)]
    File(#[from] FileError),
}

/// What the model is asked when the oldest notes are folded into one.
const SUMMARY_SYSTEM: &str = "You keep a person's notes for their assistant. Summarise the notes \
you are given into one short paragraph of at most 600 characters that keeps every fact, name, date \
and preference. Answer with the summary only.";
/// A summary longer than this is cut: it must fit in one note.
const SUMMARY_MAX: usize = 1500;

pub struct Agent {
    pub config: Config,
    pub workspace: Workspace,
    pub tools: Tools,
    pub model: LlmClient,
    pub metrics: AgentMetrics,
    /// The turn lock: tokio's mutex is fair (FIFO), so turns run in the order they queued.
    pub session: Arc<Mutex<SessionStore>>,
    /// Session id and turn count, readable while a turn holds the lock.
    snapshot: std::sync::Mutex<(String, u64)>,
}

impl Agent {
    pub fn new(
        config: Config,
        workspace: Workspace,
        tools: Tools,
        model: LlmClient,
        metrics: AgentMetrics,
        store: SessionStore,
    ) -> Self {
        let snapshot = std::sync::Mutex::new((store.session_id(), store.window.turns));
        Self { config, workspace, tools, model, metrics, session: Arc::new(Mutex::new(store)), snapshot }
    }

    fn remember_snapshot(&self, store: &SessionStore) {
        if let Ok(mut s) = self.snapshot.lock() {
            *s = (store.session_id(), store.window.turns);
        }
    }

    /// Answer one update. The caller holds the turn lock (`store`).
    pub async fn turn(&self, store: &mut SessionStore, request: TurnRequest) -> Result<TurnResponse, TurnError> {
        let started = Instant::now();
        let user = self.config.user.as_str();
        let update_id = request.update_id;
        let respond = |reply: String, status: TurnStatus, store: &SessionStore| TurnResponse {
            reply,
            status,
            session_id: store.session_id(),
            files: Vec::new(),
        };

        match turn::plan(&store.replies, &store.window, update_id) {
            Plan::Replay(reply) => {
                info!(user, update_id, "duplicate update: answered from the store");
                self.metrics.turn("duplicate", started.elapsed());
                return Ok(TurnResponse { files: reply.files, ..respond(reply.text, TurnStatus::Duplicate, store) });
            }
            Plan::Delivered => {
                info!(user, update_id, "duplicate update whose reply was delivered: nothing to send");
                self.metrics.turn("duplicate", started.elapsed());
                return Ok(respond(String::new(), TurnStatus::AlreadyDelivered, store));
            }
            Plan::Retry => info!(user, update_id, "update redelivered before it was answered: asking the model again"),
            Plan::New => {
                // Saved (fsync'd) before the model is asked: if the model is down, the message is not lost.
                let record = Record::User {
                    update_id,
                    chat_id: request.chat_id,
                    from: request.from.id(),
                    text: request.text,
                    images: request.images,
                };
                if let Err(e) = store.append(vec![record]) {
                    self.metrics.turn("error", started.elapsed());
                    return Err(e.into());
                }
            }
        }
        self.remember_snapshot(store);

        let system = self.system_prompt().await;
        let limits = Limits { max_rounds: self.config.max_tool_rounds, history_budget: self.config.history_budget };
        // The photos of the message being answered (a retried one's too), read once per turn.
        let names = store.window.last_images();
        let images = if names.is_empty() {
            Vec::new()
        } else {
            let workspace = self.workspace.clone();
            tokio::task::spawn_blocking(move || super::images::load(&workspace, &names)).await.unwrap_or_default()
        };
        self.tools.take_outgoing();
        let outcome = turn::run(&self.model, &self.tools, store, &system, &images, limits).await;
        let files = self.tools.take_outgoing();
        let response = match outcome {
            Ok(reply) => {
                let reply = match self.fold_memory().await {
                    Some(notice) => format!("{reply}\n\n{notice}"),
                    None => reply,
                };
                if let Err(e) = store.record_reply(update_id, &reply, &files) {
                    self.metrics.turn("error", started.elapsed());
                    return Err(e.into());
                }
                info!(user, update_id, took_ms = started.elapsed().as_millis() as u64, "turn answered");
                self.metrics.turn("answered", started.elapsed());
                TurnResponse { files, ..respond(reply, TurnStatus::Answered, store) }
            }
            Err(LoopError::Llm(e)) => {
                warn!(user, update_id, kind = e.kind(), error = %e, "model unavailable");
                self.metrics.llm_error(e.kind());
                if let Err(store_error) = store.append(vec![Record::Failed { update_id, reason: e.to_string() }]) {
                    warn!(user, update_id, error = %store_error, "could not record the failed turn");
                }
                self.metrics.turn("model_unavailable", started.elapsed());
                respond(e.user_reply(), TurnStatus::ModelUnavailable, store)
            }
            Err(LoopError::Store(e)) => {
                self.metrics.turn("error", started.elapsed());
                return Err(e.into());
            }
        };
        self.remember_snapshot(store);
        Ok(response)
    }

    /// SOUL.md and MEMORY.md are read each turn: the agent may have changed them.
    async fn system_prompt(&self) -> String {
        let workspace = self.workspace.clone();
        let (soul, (memory, cut)) = tokio::task::spawn_blocking(move || (workspace.soul(), workspace.memory()))
            .await
            .unwrap_or_else(|_| (super::workspace::SOUL_TEMPLATE.to_string(), (String::new(), false)));
        let now = jiff::Timestamp::now().strftime("%Y-%m-%d %H:%M").to_string();
        system_prompt(&PromptInput {
            soul: &soul,
            memory: &memory,
            memory_truncated: cut,
            profile: &self.config.profile,
            writable: self.workspace.writable(),
            now: &now,
        })
    }

    /// Past its bound, MEMORY.md's oldest notes become one summary written by the model, so
    /// that the model sees all it remembers; the notice tells the person. Nothing is lost if
    /// the model cannot summarise now: the notes stay, and the next turn tries again.
    async fn fold_memory(&self) -> Option<String> {
        if !self.workspace.writable() {
            return None;
        }
        let user = self.config.user.as_str();
        let text = self.blocking(|ws| ws.memory_text()).await.ok()?;
        let (kept, folded) = notes::fold_oldest(&text, MEMORY_PROMPT_MAX, MEMORY_PROMPT_MAX * 3 / 4)?;
        let listing = folded.iter().map(|n| format!("- {}", n.text)).collect::<Vec<_>>().join("\n");
        let summary = match self.model.complete(SUMMARY_SYSTEM, &[Message::User { text: listing }], &[], &[]).await {
            Ok(reply) => reply.content.unwrap_or_default(),
            Err(e) => {
                warn!(user, error = %e, "memory is over its bound and could not be summarised now");
                return None;
            }
        };
        let summary: String = summary
            .trim()
            .chars()
            .scan(0, |bytes, c| {
                *bytes += c.len_utf8();
                (*bytes <= SUMMARY_MAX).then_some(c)
            })
            .collect();
        if summary.is_empty() {
            warn!(user, "the model gave an empty summary of the oldest notes; they stay as they are");
            return None;
        }
        let today = jiff::Timestamp::now().strftime("%Y-%m-%d").to_string();
        let next = notes::with_summary(&kept, &folded, &summary, &today);
        if let Err(e) = self.blocking(move |ws| ws.replace_memory(&next)).await {
            warn!(user, error = %e, "could not write the summarised memory");
            return None;
        }
        info!(user, folded = folded.len(), "oldest notes summarised into one");
        Some(format!(
            "(My memory was getting full, so I summarised {} older notes into one. /memory shows what I keep.)",
            folded.len()
        ))
    }

    /// The notes in MEMORY.md. The caller holds the turn lock.
    pub async fn memory(&self) -> Result<MemoryResponse, FileError> {
        let text = self.blocking(|ws| ws.memory_text()).await?;
        Ok(MemoryResponse {
            notes: notes::notes(&text),
            bytes: text.len() as u64,
            fold_at_bytes: MEMORY_PROMPT_MAX as u64,
        })
    }

    /// Remove note `number` from MEMORY.md. The caller holds the turn lock.
    pub async fn forget(&self, number: usize) -> Result<ForgetResponse, ForgetError> {
        let text = self.blocking(|ws| ws.memory_text()).await?;
        let (kept, forgotten): (String, Note) = notes::forget(&text, number).ok_or(ForgetError::NoSuchNote(number))?;
        self.blocking(move |ws| ws.replace_memory(&kept)).await?;
        info!(user = %self.config.user, number, "note forgotten at the person's request");
        Ok(ForgetResponse { forgotten })
    }

    /// Workspace I/O off the async threads.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Workspace) -> Result<T, FileError> + Send + 'static,
    ) -> Result<T, FileError> {
        let workspace = self.workspace.clone();
        tokio::task::spawn_blocking(move || work(&workspace))
            .await
            .unwrap_or_else(|e| Err(FileError::Failed(format!("workspace task failed: {e}"))))
    }

    pub fn reset(&self, store: &mut SessionStore) -> Result<ResetResponse, TurnError> {
        let previous_session_id = store.session_id();
        let session_id = store.reset()?;
        info!(user = %self.config.user, session = %session_id, previous = %previous_session_id, "new session");
        self.remember_snapshot(store);
        Ok(ResetResponse { session_id, previous_session_id })
    }

    pub async fn status(&self) -> StatusResponse {
        let (session_id, turns) = self.snapshot.lock().map(|s| s.clone()).unwrap_or_default();
        let workspace_bytes = self.workspace.bytes_used_async().await;
        StatusResponse {
            user: self.config.user.clone(),
            session_id,
            turns,
            workspace_bytes,
            persistent: self.workspace.writable(),
            profile: ReportedProfile::Resolved(Box::new(self.config.profile.clone())),
        }
    }
}
