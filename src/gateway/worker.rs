//! One user's worker: takes their messages in order, wakes their agent if it sleeps, asks it,
//! and sends the answer back.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector::Store;
use tokio::sync::mpsc;
use tracing::Instrument;

use super::activity::ActivityRecorder;
use super::agent_client::{AgentClient, AgentError, backoff};
use super::broker::BrokerState;
use super::commands::{self, Attachment, MessageOutcome, Work};
use super::directory::{agent_address, running_agent_address};
use super::media::{self, MediaPolicy};
use super::metrics::GatewayMetrics;
use super::telegram::{Outbox, Ticket};
use crate::agent::api::{Sender, StatusResponse, TurnRequest, TurnStatus};
use crate::token::MasterKey;

/// Tries of one agent call when it is unreachable or busy (about 7.5 s of pauses in all).
const AGENT_ATTEMPTS: u32 = 5;

/// How often a waking user's pod is looked for in the watch cache.
const WAKE_POLL: Duration = Duration::from_millis(25);

/// How often, at most, a waking agent whose container runs is asked whether it serves.
const READY_ASK_EVERY: Duration = Duration::from_millis(100);

/// A queued message for one user.
pub struct Job {
    pub ticket: Ticket,
    pub chat_id: i64,
    pub from_id: i64,
    pub uid: String,
    pub work: Work,
}

/// What the agent's answer asks the gateway to do.
enum Answer {
    /// Send this, then `files` from the agent's `files/`; `confirm`: tell the agent once
    /// Telegram has it (turns, not commands); `markdown`: the model's words, shown formatted
    /// (the gateway's own are plain text).
    Text { text: String, confirm: bool, markdown: bool, files: Vec<String> },
    /// The reply went out before a restart and was confirmed: send nothing.
    AlreadyDelivered,
}

pub struct Worker {
    pub outbox: Outbox,
    /// For fetching the files people send (the bot token stays here, never with an agent).
    pub telegram: teloxide::Bot,
    pub media: MediaPolicy,
    /// Transcribes voice notes with the provider key, counted in the user's budget.
    pub broker: Arc<BrokerState>,
    /// The provider's transcription model; None: voice notes are not taken.
    pub transcription_model: Option<String>,
    pub agents: AgentClient,
    pub pods: Store<Pod>,
    pub master_key: MasterKey,
    pub activity: ActivityRecorder,
    pub metrics: Arc<GatewayMetrics>,
    pub wake_timeout: Duration,
    /// Tell the user their assistant is starting if waking takes longer than this.
    pub starting_notice_after: Duration,
}

impl Worker {
    pub async fn run(self: Arc<Self>, user: String, mut jobs: mpsc::Receiver<Job>) {
        while let Some(job) = jobs.recv().await {
            let received = job.ticket.received;
            let outcome = {
                // Typing while we wake the agent and it thinks.
                let typing = self.outbox.typing_forever(job.chat_id);
                // Every line logged for this message names the user and their Telegram id.
                let span = tracing::info_span!("message", user = %user, telegram_id = job.from_id, update_id = job.ticket.update_id);
                tokio::select! {
                    outcome = self.serve(&user, &job).instrument(span) => outcome,
                    never = typing => match never {},
                }
            };
            self.metrics.finished(outcome, received.elapsed().as_secs_f64());
            tracing::info!(
                user,
                telegram_id = job.from_id,
                update_id = job.ticket.update_id,
                outcome = outcome.as_str(),
                "message handled"
            );
            // Dropping the job's ticket marks the update done.
        }
    }

    async fn serve(&self, user: &str, job: &Job) -> MessageOutcome {
        self.activity.touch(user, false).await;
        let token = self.master_key.agent_token(&job.uid);
        let update_id = job.ticket.update_id;
        // A file is fetched from Telegram (and a voice note transcribed) once, before the
        // agent is asked (and woken).
        let prepared = match self.prepare(&token, &job.work).await {
            Ok(prepared) => prepared,
            Err(refusal) => {
                tracing::info!(user, update_id, reason = %refusal, "file not taken");
                self.outbox.say(job.chat_id, &refusal).await;
                return MessageOutcome::Unsupported;
            }
        };
        let upload = match &prepared {
            Prepared::Upload(upload) => Some(upload),
            _ => None,
        };
        let mut attempt = 0;
        let (ip, answer) = loop {
            // Looked up on every try: a replaced pod comes back on a new address.
            let Some(ip) = self.wake(user, Some(job.chat_id)).await else {
                self.outbox.say(job.chat_id, commands::NOT_STARTED).await;
                return MessageOutcome::AgentUnavailable;
            };
            match self.ask(user, ip, &token, job, &prepared).await {
                Err(e) if e.is_retryable() && attempt + 1 < AGENT_ATTEMPTS => {
                    tracing::debug!(user, error = %e, attempt, "agent call failed; retrying");
                    tokio::time::sleep(backoff(attempt)).await;
                    attempt += 1;
                }
                other => break (ip, other),
            }
        };
        let (text, confirm, markdown, files) = match answer {
            Ok(Answer::AlreadyDelivered) => {
                tracing::info!(user, update_id, "repeated update whose reply was delivered before: nothing sent");
                self.metrics.repeat_suppressed();
                return MessageOutcome::Answered;
            }
            Ok(Answer::Text { text, confirm, markdown, files }) => {
                (if text.trim().is_empty() { "(no answer)".to_string() } else { text }, confirm, markdown, files)
            }
            Err(e) => {
                tracing::warn!(user, update_id, error = %e, "agent call failed");
                let (text, outcome) = match upload_refusal(&e) {
                    Some(text) if upload.is_some() => (text, MessageOutcome::Unsupported),
                    _ => (commands::UNREACHABLE, MessageOutcome::AgentUnavailable),
                };
                self.outbox.say(job.chat_id, text).await;
                return outcome;
            }
        };
        let sent = if markdown {
            self.outbox.send_reply(job.chat_id, &text).await
        } else {
            self.outbox.send_text(job.chat_id, &text).await
        };
        // The files the answer hands back, after it (read from this user's agent only).
        for path in &files {
            let name = path.rsplit('/').next().unwrap_or(path);
            let outcome = match self.agents.get_file(ip, &token, path).await {
                Ok(bytes) => self.outbox.send_document(job.chat_id, name, bytes).await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            if let Err(e) = outcome {
                tracing::warn!(user, update_id, file = %path, error = %e, "sending a file failed");
                self.outbox.say(job.chat_id, &format!("Sorry, I could not send you the file {name}.")).await;
            }
        }
        match sent {
            // Recorded by the agent, so that a redelivery after a crash sends nothing. Only a
            // crash between Telegram's answer and this call can still repeat a reply.
            Ok(()) if confirm => match self.agents.delivered(ip, &token, update_id).await {
                Ok(()) => self.metrics.confirmed(),
                Err(e) => tracing::warn!(user, update_id, error = %e, "could not confirm delivery to the agent"),
            },
            Ok(()) => {}
            Err(e) => tracing::warn!(user, update_id, chat_id = job.chat_id, error = %e, "sending the reply failed"),
        }
        MessageOutcome::Answered
    }

    /// What the work needs before the agent is asked: a document's bytes, a voice note's
    /// transcript; the reply to send instead if it cannot be had.
    async fn prepare(&self, token: &str, work: &Work) -> Result<Prepared, String> {
        match work {
            Work::Document(file) => {
                let ext = self.media.file_type(file)?;
                let bytes = self.fetch(file).await?;
                Ok(Prepared::Upload(Upload {
                    name: self.media.file_name(file, &ext),
                    bytes: bytes.into(),
                    mime_type: file.mime_type.clone(),
                    caption: file.caption.clone(),
                }))
            }
            Work::Voice(file) => {
                let Some(model) = &self.transcription_model else { return Err(media::NO_TRANSCRIPTION.to_string()) };
                let audio = self.fetch(file).await?;
                let (name, mime) = media::audio_upload_name(file);
                let text = self.broker.transcribe(token, model, audio, &name, &mime).await.map_err(|e| {
                    tracing::warn!(error = %e, "transcription failed");
                    media::transcription_failed(&e)
                })?;
                if text.trim().is_empty() {
                    return Err(media::NO_WORDS.to_string());
                }
                Ok(Prepared::Transcript(media::transcript_note(&text, file.caption.as_deref())))
            }
            Work::Photo(file) => {
                let bytes = self.fetch(file).await?;
                // Telegram sends photos as JPEG; the agent numbers a name already taken.
                Ok(Prepared::Upload(Upload {
                    name: "photo.jpg".to_string(),
                    bytes: bytes.into(),
                    mime_type: Some("image/jpeg".to_string()),
                    caption: file.caption.clone(),
                }))
            }
            Work::Turn(_) | Work::Reset | Work::Status | Work::Memory | Work::Forget(_) => Ok(Prepared::Nothing),
        }
    }

    /// The bytes of a file, from Telegram, within the size limit; the reply if not.
    async fn fetch(&self, file: &Attachment) -> Result<Vec<u8>, String> {
        use teloxide::net::Download;
        use teloxide::prelude::Requester;
        let max = self.media.max_bytes;
        let could_not = "Sorry, I could not fetch that file from Telegram just now. Please send it again in a moment.";
        let found = self.telegram.get_file(teloxide::types::FileId(file.file_id.clone())).await.map_err(|e| {
            tracing::warn!(error = %e, "getFile failed");
            could_not.to_string()
        })?;
        if u64::from(found.meta.size) > max {
            return Err(media::too_large(u64::from(found.meta.size), max));
        }
        let mut stream = self.telegram.download_file_stream(&found.path);
        let mut bytes = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| {
                tracing::warn!(error = %e, "downloading a file from Telegram failed");
                could_not.to_string()
            })?;
            bytes.extend_from_slice(&chunk);
            // Telegram's size is a declaration; the bytes are what count.
            if bytes.len() as u64 > max {
                return Err(media::too_large(bytes.len() as u64, max));
            }
        }
        Ok(bytes)
    }

    /// One call to the agent; what to tell the user.
    async fn ask(
        &self,
        user: &str,
        ip: IpAddr,
        token: &str,
        job: &Job,
        prepared: &Prepared,
    ) -> Result<Answer, AgentError> {
        let note;
        let mut images = Vec::new();
        let text = match (&job.work, prepared) {
            (Work::Photo(_), Prepared::Upload(upload)) => {
                let saved = self.agents.put_file(ip, token, &upload.name, upload.bytes.clone()).await?;
                tracing::info!(user, name = %saved.name, bytes = saved.size, "photo saved in the workspace");
                note = media::photo_note(&saved.name, upload.caption.as_deref());
                images.push(saved.name);
                Some(&note)
            }
            (Work::Turn(text), _) => Some(text),
            (Work::Voice(_), Prepared::Transcript(transcript)) => Some(transcript),
            (Work::Document(_), Prepared::Upload(upload)) => {
                let saved = self.agents.put_file(ip, token, &upload.name, upload.bytes.clone()).await?;
                tracing::info!(user, name = %saved.name, bytes = saved.size, "document saved in the workspace");
                note = media::document_note(
                    &saved.name,
                    saved.size,
                    upload.mime_type.as_deref(),
                    upload.caption.as_deref(),
                );
                Some(&note)
            }
            _ => None,
        };
        match &job.work {
            Work::Turn(_) | Work::Document(_) | Work::Voice(_) | Work::Photo(_) => {
                let Some(text) = text else { return Err(AgentError::Setup("a file without its content".into())) };
                let request = TurnRequest {
                    update_id: job.ticket.update_id,
                    chat_id: job.chat_id,
                    from: Sender::Id(job.from_id),
                    text: text.clone(),
                    images,
                };
                let reply = self.agents.turn(ip, token, &request).await?;
                // Only a stored answer can be confirmed; "the model is down" is not stored.
                let confirm = match reply.status {
                    TurnStatus::AlreadyDelivered => return Ok(Answer::AlreadyDelivered),
                    // Answered before a restart, not confirmed: sent again, as it may not have arrived.
                    TurnStatus::Duplicate => {
                        tracing::info!(
                            user,
                            update_id = job.ticket.update_id,
                            "repeated update; sending the stored reply"
                        );
                        true
                    }
                    TurnStatus::Answered => true,
                    TurnStatus::ModelUnavailable => false,
                };
                Ok(Answer::Text { text: reply.reply, confirm, markdown: true, files: reply.files })
            }
            Work::Reset => self.agents.reset(ip, token).await.map(|r| Answer::Text {
                text: format!("New conversation started (session {}).", r.session_id),
                confirm: false,
                markdown: false,
                files: Vec::new(),
            }),
            Work::Status => self.agents.status(ip, token).await.map(|s| Answer::Text {
                text: status_text(&s),
                confirm: false,
                markdown: false,
                files: Vec::new(),
            }),
            Work::Memory => self.agents.memory(ip, token).await.map(|m| Answer::Text {
                text: commands::memory_text(&m),
                confirm: false,
                markdown: false,
                files: Vec::new(),
            }),
            Work::Forget(number) => match self.agents.forget(ip, token, *number).await {
                Ok(gone) => Ok(Answer::Text {
                    text: format!("Forgotten: {}", gone.forgotten.text),
                    confirm: false,
                    markdown: false,
                    files: Vec::new(),
                }),
                // No such note, or a read-only workspace: the agent says so, for the person.
                Err(e) => match e.refusal() {
                    Some(text) => Ok(Answer::Text { text, confirm: false, markdown: false, files: Vec::new() }),
                    None => Err(e),
                },
            },
        }
    }

    /// Whether the user's agent is running now (no wake needed).
    pub fn is_awake(&self, user: &str) -> bool {
        agent_address(user, &self.pods).is_some()
    }

    /// Note a delivered reminder in the agent's conversation, waking the agent if it sleeps
    /// (quietly: the person is not told it starts). Best effort: the person has the reminder.
    pub async fn note_reminder(&self, user: &str, uid: &str, key: &str, text: &str) {
        let token = self.master_key.agent_token(uid);
        for attempt in 0..AGENT_ATTEMPTS {
            let Some(ip) = self.wake(user, None).await else {
                tracing::warn!(user, key, "the agent could not be started; the reminder is not in its conversation");
                return;
            };
            match self.agents.reminder(ip, &token, key, text).await {
                Ok(()) => return,
                Err(e) if e.is_retryable() && attempt + 1 < AGENT_ATTEMPTS => {
                    tokio::time::sleep(backoff(attempt)).await;
                }
                Err(e) => {
                    tracing::warn!(user, key, error = %e, "the reminder could not be noted in the agent's conversation");
                    return;
                }
            }
        }
    }

    /// The agent's address, waking it (activity newer than the pod) if it has none; `notice`:
    /// the chat told that it is starting, should that take a while.
    async fn wake(&self, user: &str, notice: Option<i64>) -> Option<IpAddr> {
        if let Some(ip) = agent_address(user, &self.pods) {
            return Some(ip);
        }
        self.activity.touch(user, true).await;
        let started = Instant::now();
        let (mut told, mut asked) = (false, None::<Instant>);
        while started.elapsed() < self.wake_timeout {
            if let Some(ip) = agent_address(user, &self.pods) {
                return Some(ip);
            }
            // The kubelet marks the pod Ready at its next readiness probe, up to a period (1 s)
            // after the agent is ready (scripts/bench, real-node: the slowest fifth of wakes);
            // the agent answers the same question at once.
            if asked.is_none_or(|at| at.elapsed() >= READY_ASK_EVERY)
                && let Some(ip) = running_agent_address(user, &self.pods)
            {
                asked = Some(Instant::now());
                if self.agents.ready(ip).await {
                    return Some(ip);
                }
            }
            if let Some(chat_id) = notice.filter(|_| !told && started.elapsed() >= self.starting_notice_after) {
                self.outbox.say(chat_id, commands::STARTING).await;
                told = true;
            }
            // A look at the in-memory pod cache: cheap, so often (the wake benchmark showed a
            // 200 ms pause here as most of a wake's control-plane time).
            tokio::time::sleep(WAKE_POLL).await;
        }
        None
    }
}

/// What a job brings to its agent besides the message.
enum Prepared {
    Nothing,
    Upload(Upload),
    /// A voice note's transcript, marked as one.
    Transcript(String),
}

/// A document fetched from Telegram, for the agent.
struct Upload {
    name: String,
    bytes: axum::body::Bytes,
    mime_type: Option<String>,
    caption: Option<String>,
}

/// The agent's refusal to keep a file, in words for the person (None: not a refusal).
fn upload_refusal(error: &AgentError) -> Option<&'static str> {
    match error {
        AgentError::Status { status: 507, .. } => Some(
            "Your assistant's workspace is full, so I could not save that file. Ask your assistant to \
             delete files you no longer need (or the administrator for more space), then send it again.",
        ),
        AgentError::Status { status: 403, .. } => Some(
            "Your assistant's workspace is read-only, so it cannot keep files. Send the text as a message instead.",
        ),
        AgentError::Status { status: 413, .. } => Some("Sorry, that file is too large for your assistant to keep."),
        _ => None,
    }
}

/// `/status` for the user, from the agent's own report.
fn status_text(status: &StatusResponse) -> String {
    let profile = status.profile.name().unwrap_or("unknown");
    let session = if status.session_id.is_empty() { "?" } else { &status.session_id };
    format!(
        "Profile: {profile}\nAssistant: running\nWorkspace: {:.1} KiB used\nConversation: session {session}, {} messages",
        status.workspace_bytes as f64 / 1024.0,
        status.turns
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_reads_the_agents_report() {
        let s: StatusResponse = serde_json::from_value(serde_json::json!({"profile": {"profile": "family"}, "workspace_bytes": 2048, "turns": 3, "session_id": "000002"})).unwrap();
        let text = status_text(&s);
        assert!(
            text.contains("family")
                && text.contains("2.0 KiB")
                && text.contains("000002")
                && text.contains("3 messages"),
            "{text}"
        );
        let bare = status_text(&StatusResponse::default());
        assert!(bare.contains("Profile: unknown") && bare.contains("session ?"), "{bare}");
    }
}
