//! Access requests on Telegram: a stranger's `/start` or `/request` becomes a request the
//! admins get with Approve and Deny buttons; an admin's press decides it; the person and the
//! admins are told the outcome (of the CLI's decisions too, and of an expiry). Texts and the
//! buttons' data are pure functions here; the decisions themselves are `crate::access`'s.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube::runtime::reflector::Store;
use kube::{Client, ResourceExt};
use teloxide::types::{InlineKeyboardButton, InlineKeyboardMarkup};

use super::commands::{Incoming, Refusals};
use super::metrics::GatewayMetrics;
use super::telegram::{ButtonPress, Outbox};
use crate::access::request::{outcome_text, show_time};
use crate::access::{self, AccessRequest, Ask, Limits, Mode, Refusal, RequestStore, State, Verdict};
use crate::crd::{MoltmateUser, Profile};

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

/// What a button asks for. Its data is `access:approve:<code>:<profile>` or
/// `access:deny:<code>` (at most 64 bytes, Telegram's limit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ButtonAction {
    Approve { code: String, profile: Profile },
    Deny { code: String },
}

impl ButtonAction {
    pub fn data(&self) -> String {
        match self {
            ButtonAction::Approve { code, profile } => format!("access:approve:{code}:{}", profile.as_str()),
            ButtonAction::Deny { code } => format!("access:deny:{code}"),
        }
    }

    pub fn parse(data: &str) -> Option<Self> {
        let mut parts = data.strip_prefix("access:")?.split(':');
        let action = match (parts.next()?, parts.next()?, parts.next()) {
            ("approve", code, Some(profile)) => ButtonAction::Approve {
                code: code.to_string(),
                profile: Profile::ALL.into_iter().find(|p| p.as_str() == profile)?,
            },
            ("deny", code, None) => ButtonAction::Deny { code: code.to_string() },
            _ => return None,
        };
        parts.next().is_none().then_some(action)
    }
}

/// What a press gets, before any I/O: only an admin's press of a well-formed button for an
/// offered profile goes on to a decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PressVerdict {
    NotAnAdmin,
    Unknown,
    Decide(ButtonAction),
}

pub fn judge_press(admins: &[i64], offered: &[Profile], from_id: i64, data: &str) -> PressVerdict {
    if !admins.contains(&from_id) {
        return PressVerdict::NotAnAdmin;
    }
    match ButtonAction::parse(data) {
        Some(ButtonAction::Approve { profile, .. }) if !offered.contains(&profile) => PressVerdict::Unknown,
        Some(action) => PressVerdict::Decide(action),
        None => PressVerdict::Unknown,
    }
}

/// The admins' buttons for a request: one Approve per offered profile, and Deny.
pub fn buttons(code: &str, profiles: &[Profile]) -> InlineKeyboardMarkup {
    let approve = profiles.iter().map(|p| {
        let action = ButtonAction::Approve { code: code.to_string(), profile: *p };
        InlineKeyboardButton::callback(format!("Approve: {}", p.as_str()), action.data())
    });
    let deny = ButtonAction::Deny { code: code.to_string() };
    InlineKeyboardMarkup::new([approve.collect::<Vec<_>>(), vec![InlineKeyboardButton::callback("Deny", deny.data())]])
}

pub fn admin_request_text(code: &str, request: &AccessRequest) -> String {
    format!(
        "Access request {code}\nFrom: {}\nExpires: {}\n\nApprove with a profile, or deny. From a terminal: \
         moltmate users approve {code} [--profile P] / moltmate users deny {code}",
        request.who(),
        show_time(request.expires_at)
    )
}

/// The admins' copy once the outcome is known (the buttons go).
pub fn admin_outcome_text(code: &str, request: &AccessRequest, now: i64) -> String {
    let outcome = match request.state(now) {
        State::Expired => format!("expired at {} without a decision", show_time(request.expires_at)),
        _ => outcome_text(request.decision.as_ref()),
    };
    format!("Access request {code} from {}: {outcome}.", request.who())
}

/// What the person is told once the outcome is known.
pub fn requester_outcome_text(code: &str, request: &AccessRequest, now: i64) -> String {
    match (&request.decision, request.state(now)) {
        (Some(d), _) if matches!(d.verdict, Verdict::Approved { .. }) && request.mode == Mode::Gitops => {
            "Your request for access was approved. Your assistant answers once the administrator has finished \
             setting it up; try a message in a little while."
                .to_string()
        }
        (_, State::Approved) => {
            "Your request for access was approved. Say hello: your own assistant answers from your next message."
                .to_string()
        }
        (_, State::Denied) => "Sorry, your request for access was declined.".to_string(),
        _ => format!("Your request for access ({code}) expired without an answer. Send /request to ask again."),
    }
}

/// What the person gets for their `/request`.
pub fn ask_text(ask: &Ask, code: Option<&str>, ttl: i64) -> String {
    match ask {
        Ask::New => format!(
            "Your request for access is with the administrator. Its code is {}; it expires in {}. \
             You will get a message here when they decide.",
            code.unwrap_or("?"),
            human_span(ttl)
        ),
        Ask::Open { code, expires_at } => format!(
            "Your request for access ({code}) is still with the administrator; it expires at {}.",
            show_time(*expires_at)
        ),
        Ask::Declined { until } => {
            format!("Your last request for access was declined. You can ask again after {}.", show_time(*until))
        }
        Ask::Busy => "Many people are asking for access just now. Please try again in an hour.".to_string(),
    }
}

pub const ADMIN_GREETING: &str =
    "You are an administrator of this bot: access requests come to this chat, with buttons to approve or deny them.";
pub const NOT_AN_ADMIN: &str = "Only the bot's administrators can decide access requests.";
pub const UNKNOWN_BUTTON: &str = "This button is not known.";
const STORE_DOWN: &str = "Requests cannot be taken just now. Please try again in a few minutes.";

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

/// `24 hours`, `30 minutes`, `45 seconds`.
fn human_span(seconds: i64) -> String {
    let (n, unit) = match seconds {
        s if s >= 3600 && s % 3600 == 0 => (s / 3600, "hour"),
        s if s >= 60 && s % 60 == 0 => (s / 60, "minute"),
        s => (s, "second"),
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

fn random_bytes() -> [u8; access::request::CODE_LEN] {
    let mut bytes = [0u8; access::request::CODE_LEN];
    getrandom::fill(&mut bytes).expect("the OS gives random bytes");
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn button_data_round_trips_and_fits() {
        for action in [
            ButtonAction::Approve { code: "ABCDEFGH".into(), profile: Profile::HighSecurity },
            ButtonAction::Deny { code: "ABCDEFGH".into() },
        ] {
            assert!(action.data().len() <= 64);
            assert_eq!(ButtonAction::parse(&action.data()), Some(action));
        }
        for bad in ["", "access:approve:X", "access:approve:X:root", "access:deny:X:extra", "other:deny:X"] {
            assert_eq!(ButtonAction::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn only_an_admins_press_of_an_offered_profile_decides() {
        let offered = [Profile::Public, Profile::Family];
        let approve = ButtonAction::Approve { code: "C".into(), profile: Profile::Family }.data();
        assert_eq!(judge_press(&[42], &offered, 7, &approve), PressVerdict::NotAnAdmin);
        assert!(matches!(judge_press(&[42], &offered, 42, &approve), PressVerdict::Decide(_)));
        let personal = ButtonAction::Approve { code: "C".into(), profile: Profile::Personal }.data();
        assert_eq!(judge_press(&[42], &offered, 42, &personal), PressVerdict::Unknown, "not offered");
        assert_eq!(judge_press(&[42], &offered, 42, "junk"), PressVerdict::Unknown);
        let markup = buttons("C", &offered);
        assert_eq!(markup.inline_keyboard[0].len(), 2);
        assert_eq!(markup.inline_keyboard[1][0].text, "Deny");
    }
}
