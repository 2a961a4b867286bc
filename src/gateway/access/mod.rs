//! Access requests on Telegram: a stranger's `/start` or `/request` becomes a request the
//! admins get with Approve and Deny buttons; an admin's press decides it; the person and the
//! admins are told the outcome (of the CLI's decisions too, and of an expiry). The buttons
//! ([`buttons`]) and texts ([`texts`]) are pure; the decisions themselves are `crate::access`'s;
//! [`AccessDesk`] does the I/O.

pub mod buttons;
pub mod texts;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube::runtime::reflector::Store;
use kube::{Client, ResourceExt};

use super::commands::{Incoming, Refusals};
use super::metrics::GatewayMetrics;
use super::telegram::{ButtonPress, Outbox};
use crate::access::{self, AccessRequest, Ask, Limits, Mode, Refusal, RequestStore};
use crate::crd::{MoltmateUser, Profile};
use buttons::{ButtonAction, PressVerdict, buttons, judge_press};
use texts::*;

/// The feature's settings, from the gateway's flags.
#[derive(Debug, Clone)]
pub struct AccessConfig {
    pub admins: Vec<i64>,
    /// Offered to the admins, the first one the default.
    pub profiles: Vec<Profile>,
    pub mode: Mode,
    pub limits: Limits,
    /// The gateway's namespace: where the requests are kept; never a user's namespace.
    pub namespace: String,
}

/// The gateway's side of access requests (on the Lease holder).
pub struct AccessDesk {
    pub config: AccessConfig,
    store: RequestStore,
    client: Client,
    users: Store<MoltmateUser>,
    outbox: Outbox,
    metrics: Arc<GatewayMetrics>,
    /// One answer per person every 10 s: a flood of /start costs no API calls or replies.
    throttle: Mutex<Refusals>,
    /// One announcer at a time, so no outcome is told twice.
    announcing: tokio::sync::Mutex<()>,
}

impl AccessDesk {
    pub fn new(
        config: AccessConfig,
        client: Client,
        users: Store<MoltmateUser>,
        outbox: Outbox,
        metrics: Arc<GatewayMetrics>,
    ) -> Self {
        Self {
            metrics,
            store: RequestStore::new(client.clone(), &config.namespace),
            config,
            client,
            users,
            outbox,
            throttle: Mutex::new(Refusals::new(Duration::from_secs(10))),
            announcing: tokio::sync::Mutex::new(()),
        }
    }

    fn now() -> i64 {
        jiff::Timestamp::now().as_second()
    }

    /// A stranger's `/start` or `/request`: the answer to send them, or None (throttled).
    pub async fn request(&self, message: &Incoming) -> Option<String> {
        if self.config.admins.contains(&message.from_id) {
            self.metrics.access_request("admin");
            return Some(ADMIN_GREETING.to_string());
        }
        let allowed = self.throttle.lock().unwrap_or_else(|e| e.into_inner()).allow(message.from_id, Instant::now());
        if !allowed {
            self.metrics.access_request("throttled");
            return None;
        }
        let now = Self::now();
        let (limits, profiles, mode) = (&self.config.limits, self.config.profiles.clone(), self.config.mode);
        let made = self
            .store
            .update(|requests| {
                requests.prune(now, limits);
                match requests.ask(message.from_id, now, limits) {
                    Ask::New => {
                        let code = requests.new_code(random_bytes);
                        let request = AccessRequest {
                            telegram_id: message.from_id,
                            // Telegram's are at most 32 characters; a stand-in or a forgery may not be.
                            username: message.username.as_deref().map(|u| u.chars().take(64).collect()),
                            name: message.name.clone(),
                            requested_at: now,
                            expires_at: now + limits.ttl,
                            profiles: profiles.clone(),
                            mode,
                            admin_messages: Vec::new(),
                            decision: None,
                            announced: false,
                        };
                        requests.0.insert(code.clone(), request.clone());
                        (Ask::New, Some((code, request)))
                    }
                    other => (other, None),
                }
            })
            .await;
        let (ask, new) = match made {
            Ok(made) => made,
            Err(e) => {
                tracing::warn!(telegram_id = message.from_id, error = %e, "cannot write the access request");
                self.metrics.access_request("failed");
                return Some(STORE_DOWN.to_string());
            }
        };
        self.metrics.access_request(match ask {
            Ask::New => "new",
            Ask::Open { .. } => "open",
            Ask::Declined { .. } => "declined",
            Ask::Busy => "busy",
        });
        tracing::info!(telegram_id = message.from_id, outcome = ?ask, "access request");
        let code = new.as_ref().map(|(code, _)| code.clone());
        if let Some((code, request)) = new {
            self.tell_admins(&code, &request).await;
        }
        Some(ask_text(&ask, code.as_deref(), self.config.limits.ttl))
    }

    /// Send the request to every admin and remember their copies, to edit later.
    async fn tell_admins(&self, code: &str, request: &AccessRequest) {
        let text = admin_request_text(code, request);
        let mut copies = Vec::new();
        for admin in &self.config.admins {
            match self.outbox.send_with_buttons(*admin, &text, buttons(code, &request.profiles)).await {
                Ok(id) => copies.push(access::request::AdminMessage { chat_id: *admin, message_id: id.0 }),
                // An admin who never wrote to the bot cannot be written to; the CLI still works.
                Err(e) => tracing::warn!(admin, error = %e, "cannot send an access request to an admin"),
            }
        }
        let stored = self
            .store
            .update(|requests| {
                if let Some(r) = requests.0.get_mut(code) {
                    r.admin_messages.extend(copies.iter().copied());
                }
            })
            .await;
        if let Err(e) = stored {
            tracing::warn!(code, error = %e, "cannot record the admins' copies of an access request");
        }
    }

    /// A button press: only an admin's counts.
    pub async fn press(&self, press: &ButtonPress) {
        let action = match judge_press(&self.config.admins, &self.config.profiles, press.from_id, &press.data) {
            PressVerdict::NotAnAdmin => {
                self.metrics.access_press("not_an_admin");
                tracing::warn!(telegram_id = press.from_id, data = %press.data, "a button press from someone who is not an admin; nothing changed");
                self.outbox.answer_press(&press.query_id, NOT_AN_ADMIN).await;
                return;
            }
            PressVerdict::Unknown => {
                self.metrics.access_press("unknown");
                self.outbox.answer_press(&press.query_id, UNKNOWN_BUTTON).await;
                return;
            }
            PressVerdict::Decide(action) => action,
        };
        let by = format!("telegram:{}", press.from_id);
        let answer = match &action {
            ButtonAction::Approve { code, profile } => {
                let existing: access::Existing =
                    self.users.state().iter().map(|u| (u.name_any(), u.spec.telegram.user_id)).collect();
                match access::approve(
                    &self.client,
                    &self.store,
                    code,
                    Some(*profile),
                    &by,
                    &existing,
                    &self.config.namespace,
                )
                .await
                {
                    Ok(approval) => {
                        self.metrics.access_press("approved");
                        tracing::info!(
                            code,
                            user = approval.user,
                            profile = profile.as_str(),
                            by,
                            "access request approved"
                        );
                        if let Some(manifest) = &approval.manifest {
                            let text = format!(
                                "Commit this manifest to approve {code} ({}); the person can chat once it is deployed:\n\n{manifest}",
                                approval.request.who()
                            );
                            self.outbox.say(press.from_id, &text).await;
                        }
                        format!("Approved: {}", approval.user)
                    }
                    Err(e) => {
                        self.metrics.access_press("refused");
                        refusal_answer(code, e)
                    }
                }
            }
            ButtonAction::Deny { code } => match access::deny(&self.store, code, &by).await {
                Ok(_) => {
                    self.metrics.access_press("denied");
                    tracing::info!(code, by, "access request denied");
                    "Denied".to_string()
                }
                Err(e) => {
                    self.metrics.access_press("refused");
                    refusal_answer(code, e)
                }
            },
        };
        self.outbox.answer_press(&press.query_id, &answer).await;
        self.announce().await;
    }

    /// Tell every outcome not told yet: edit the admins' copies, tell the person. Each one is
    /// claimed in the store first (a conditional write only one teller wins), so a press on
    /// one replica and the Lease holder's look never both tell it; a crash right after the
    /// claim leaves it untold rather than told twice.
    pub async fn announce(&self) {
        let _one = self.announcing.lock().await;
        let now = Self::now();
        let due = match self.store.read().await {
            Ok(requests) => requests.unannounced(now),
            Err(e) => {
                tracing::debug!(error = %e, "cannot read the access requests");
                return;
            }
        };
        for (code, _) in due {
            // As it is when claimed: its admins' copies may have been recorded since the read.
            let claimed = self
                .store
                .update(|requests| match requests.0.get_mut(&code) {
                    Some(r) if !r.announced => {
                        r.announced = true;
                        Some(r.clone())
                    }
                    _ => None,
                })
                .await;
            let request = match claimed {
                Ok(Some(request)) => request,
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(code, error = %e, "cannot mark an access request as told; telling it later");
                    continue;
                }
            };
            let text = admin_outcome_text(&code, &request, now);
            for copy in &request.admin_messages {
                self.outbox.edit(copy.chat_id, copy.message_id, &text).await;
            }
            self.outbox.say(request.telegram_id, &requester_outcome_text(&code, &request, now)).await;
        }
    }

    /// Announce what the CLI decided and what expired, every `every`.
    pub async fn announce_forever(self: Arc<Self>, every: Duration) {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            self.announce().await;
        }
    }
}

fn refusal_answer(code: &str, error: access::Error) -> String {
    match error {
        access::Error::Refused(Refusal::Expired { .. }) => format!("Request {code} expired."),
        access::Error::Refused(Refusal::Decided { outcome, .. }) => format!("Already decided: {outcome}"),
        access::Error::Refused(refusal) => refusal.to_string(),
        access::Error::Kube(e) => {
            tracing::error!(code, error = %e, "deciding an access request failed");
            "Failed: the cluster refused; see the gateway's log.".to_string()
        }
    }
}

fn random_bytes() -> [u8; access::request::CODE_LEN] {
    let mut bytes = [0u8; access::request::CODE_LEN];
    getrandom::fill(&mut bytes).expect("the OS gives random bytes");
    bytes
}
