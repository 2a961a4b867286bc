//! One user's worker: takes their messages in order, wakes their agent if it sleeps, asks it,
//! and sends the answer back.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector::Store;
use tokio::sync::mpsc;
use tracing::Instrument;

use super::activity::ActivityRecorder;
use super::agent_client::{AgentClient, AgentError, backoff};
use super::commands::{self, MessageOutcome, Work};
use super::directory::agent_address;
use super::metrics::GatewayMetrics;
use super::telegram::{Outbox, Ticket};
use crate::agent::api::{StatusResponse, TurnStatus};
use crate::token::MasterKey;

/// Tries of one agent call when it is unreachable or busy (about 7.5 s of pauses in all).
const AGENT_ATTEMPTS: u32 = 5;

/// How often a waking user's pod is looked for in the watch cache.
const WAKE_POLL: Duration = Duration::from_millis(25);

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
    /// Send this; `confirm`: tell the agent once Telegram has it (turns, not commands);
    /// `markdown`: the model's words, shown formatted (the gateway's own are plain text).
    Text { text: String, confirm: bool, markdown: bool },
    /// The reply went out before a restart and was confirmed: send nothing.
    AlreadyDelivered,
}

pub struct Worker {
    pub outbox: Outbox,
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
        let mut attempt = 0;
        let (ip, answer) = loop {
            // Looked up on every try: a replaced pod comes back on a new address.
            let Some(ip) = self.wake(user, Some(job.chat_id)).await else {
                self.outbox.say(job.chat_id, commands::NOT_STARTED).await;
                return MessageOutcome::AgentUnavailable;
            };
            match self.ask(user, ip, &token, job).await {
                Err(e) if e.is_retryable() && attempt + 1 < AGENT_ATTEMPTS => {
                    tracing::debug!(user, error = %e, attempt, "agent call failed; retrying");
                    tokio::time::sleep(backoff(attempt)).await;
                    attempt += 1;
                }
                other => break (ip, other),
            }
        };
        let (text, confirm, markdown) = match answer {
            Ok(Answer::AlreadyDelivered) => {
                tracing::info!(user, update_id, "repeated update whose reply was delivered before: nothing sent");
                self.metrics.repeat_suppressed();
                return MessageOutcome::Answered;
            }
            Ok(Answer::Text { text, confirm, markdown }) => {
                (if text.trim().is_empty() { "(no answer)".to_string() } else { text }, confirm, markdown)
            }
            Err(e) => {
                tracing::warn!(user, update_id, error = %e, "agent call failed");
                self.outbox.say(job.chat_id, commands::UNREACHABLE).await;
                return MessageOutcome::AgentUnavailable;
            }
        };
        let sent = if markdown {
            self.outbox.send_reply(job.chat_id, &text).await
        } else {
            self.outbox.send_text(job.chat_id, &text).await
        };
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

    /// One call to the agent; what to tell the user.
    async fn ask(&self, user: &str, ip: IpAddr, token: &str, job: &Job) -> Result<Answer, AgentError> {
        match &job.work {
            Work::Turn(text) => {
                let reply = self.agents.turn(ip, token, job.ticket.update_id, job.chat_id, job.from_id, text).await?;
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
                Ok(Answer::Text { text: reply.reply, confirm, markdown: true })
            }
            Work::Reset => self.agents.reset(ip, token).await.map(|r| Answer::Text {
                text: format!("New conversation started (session {}).", r.session_id),
                confirm: false,
                markdown: false,
            }),
            Work::Status => self.agents.status(ip, token).await.map(|s| Answer::Text {
                text: status_text(&s),
                confirm: false,
                markdown: false,
            }),
            Work::Memory => self.agents.memory(ip, token).await.map(|m| Answer::Text {
                text: commands::memory_text(&m),
                confirm: false,
                markdown: false,
            }),
            Work::Forget(number) => match self.agents.forget(ip, token, *number).await {
                Ok(gone) => Ok(Answer::Text {
                    text: format!("Forgotten: {}", gone.forgotten.text),
                    confirm: false,
                    markdown: false,
                }),
                // No such note, or a read-only workspace: the agent says so, for the person.
                Err(e) => match e.refusal() {
                    Some(text) => Ok(Answer::Text { text, confirm: false, markdown: false }),
                    None => Err(e),
                },
            },
        }
    }

    /// Whether the user's agent is running now (no wake needed).
    pub fn is_awake(&self, user: &str) -> bool {
        agent_address(user, &self.pods.state()).is_some()
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
        if let Some(ip) = agent_address(user, &self.pods.state()) {
            return Some(ip);
        }
        self.activity.touch(user, true).await;
        let started = Instant::now();
        let mut told = false;
        while started.elapsed() < self.wake_timeout {
            if let Some(ip) = agent_address(user, &self.pods.state()) {
                return Some(ip);
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
