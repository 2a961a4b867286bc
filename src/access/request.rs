//! Access requests as kept in the store, and the pure decisions on them: whether a stranger's
//! ask makes a new request (one open request per person, a wait after a denial, a cap per
//! hour and on open requests for everyone together), when a request has expired, and whether
//! a code can still be decided.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::crd::Profile;

/// Codes are read out and typed by people: no 0/O, 1/I/L.
const CODE_ALPHABET: &[u8] = b"ABCDEFGHJKMNPQRSTUVWXYZ23456789";
pub const CODE_LEN: usize = 8;
const HOUR: i64 = 3600;

/// What an approval does: create the MoltmateUser, or hand the admin its manifest to commit.
#[derive(Serialize, Deserialize, clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Create,
    Gitops,
}

/// One person's request, as stored under its code.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AccessRequest {
    pub telegram_id: i64,
    /// Their Telegram @username, if they have one (it names their MoltmateUser).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Their name as Telegram shows it, cleaned for display; never given to an agent.
    #[serde(default)]
    pub name: String,
    /// Unix seconds.
    pub requested_at: i64,
    pub expires_at: i64,
    /// The profiles the admins are offered, the first one the default.
    pub profiles: Vec<Profile>,
    pub mode: Mode,
    /// The admins' copies of the request, to edit once it is decided.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub admin_messages: Vec<AdminMessage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<Decision>,
    /// The outcome (a decision or the expiry) has been shown to the person and the admins.
    #[serde(default)]
    pub announced: bool,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AdminMessage {
    pub chat_id: i64,
    pub message_id: i32,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Decision {
    #[serde(flatten)]
    pub verdict: Verdict,
    /// `telegram:<id>` for an admin's button, `cli:<name>` for `moltmate users`.
    pub by: String,
    pub at: i64,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(tag = "verdict", rename_all = "camelCase")]
pub enum Verdict {
    Approved { profile: Profile, user: String },
    Denied,
}

/// Where a request stands at `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Open,
    Expired,
    Approved,
    Denied,
}

impl AccessRequest {
    pub fn state(&self, now: i64) -> State {
        match &self.decision {
            Some(Decision { verdict: Verdict::Approved { .. }, .. }) => State::Approved,
            Some(Decision { verdict: Verdict::Denied, .. }) => State::Denied,
            None if now >= self.expires_at => State::Expired,
            None => State::Open,
        }
    }

    /// Who asked, for the admins: `Ann Lee (@ann, id 1001)`.
    pub fn who(&self) -> String {
        let handle = self.username.as_deref().map(|u| format!("@{u}, ")).unwrap_or_default();
        let name = if self.name.is_empty() { "Someone" } else { &self.name };
        format!("{name} ({handle}id {})", self.telegram_id)
    }
}

/// The settings the decisions follow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// How long a request waits for a decision, in seconds.
    pub ttl: i64,
    /// New requests per rolling hour, everyone together.
    pub per_hour: usize,
    /// Open requests at once, everyone together.
    pub max_open: usize,
    /// After a denial, how long the same person waits before asking again, in seconds.
    pub after_denial: i64,
}

impl Default for Limits {
    fn default() -> Self {
        Self { ttl: 24 * HOUR, per_hour: 10, max_open: 20, after_denial: 24 * HOUR }
    }
}

/// What a stranger's `/request` gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ask {
    /// A new request is made (and the admins are told).
    New,
    /// They have one open already: the same code, the admins are not told again.
    Open { code: String, expires_at: i64 },
    /// Denied lately: not before `until`.
    Declined { until: i64 },
    /// Too many requests from everyone just now.
    Busy,
}

/// All requests, by code: the store's content.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Requests(pub BTreeMap<String, AccessRequest>);

impl Requests {
    /// From the ConfigMap's data; an entry that does not parse is dropped (and so removed at
    /// the next write) rather than blocking every request.
    pub fn from_data(data: Option<&BTreeMap<String, String>>) -> Self {
        let parsed = data.into_iter().flatten().filter_map(|(code, json)| match serde_json::from_str(json) {
            Ok(request) => Some((code.clone(), request)),
            Err(e) => {
                tracing::warn!(code, error = %e, "an access request in the store does not parse; dropped");
                None
            }
        });
        Self(parsed.collect())
    }

    pub fn to_data(&self) -> BTreeMap<String, String> {
        self.0
            .iter()
            .map(|(code, r)| (code.clone(), serde_json::to_string(r).expect("requests always serialize")))
            .collect()
    }

    pub fn get(&self, code: &str) -> Option<&AccessRequest> {
        self.0.get(&normalize_code(code))
    }

    /// What a `/request` from `sender` at `now` gets.
    pub fn ask(&self, sender: i64, now: i64, limits: &Limits) -> Ask {
        let mine = || self.0.iter().filter(|(_, r)| r.telegram_id == sender);
        if let Some((code, r)) = mine().find(|(_, r)| r.state(now) == State::Open) {
            return Ask::Open { code: code.clone(), expires_at: r.expires_at };
        }
        let denied_until = mine()
            .filter_map(|(_, r)| match &r.decision {
                Some(Decision { verdict: Verdict::Denied, at, .. }) => Some(at + limits.after_denial),
                _ => None,
            })
            .max();
        if let Some(until) = denied_until.filter(|until| *until > now) {
            return Ask::Declined { until };
        }
        let open = self.0.values().filter(|r| r.state(now) == State::Open).count();
        let last_hour = self.0.values().filter(|r| r.requested_at > now - HOUR).count();
        if open >= limits.max_open || last_hour >= limits.per_hour {
            return Ask::Busy;
        }
        Ask::New
    }

    /// The open request under `code`, or why it cannot be decided.
    pub fn open(&self, code: &str, now: i64) -> Result<&AccessRequest, Refusal> {
        let code = normalize_code(code);
        let request = self.0.get(&code).ok_or_else(|| Refusal::NotFound(code.clone()))?;
        match request.state(now) {
            State::Open => Ok(request),
            State::Expired => Err(Refusal::Expired { code, at: request.expires_at }),
            State::Approved | State::Denied => {
                Err(Refusal::Decided { code, outcome: outcome_text(request.decision.as_ref()) })
            }
        }
    }

    /// Forget what no longer matters: requests older than a day past their expiry, once
    /// their outcome was announced (a denial is kept as long as it holds the person off).
    /// An open request is never announced, so it stays.
    pub fn prune(&mut self, now: i64, limits: &Limits) {
        let keep = limits.ttl.max(limits.after_denial) + 24 * HOUR;
        self.0.retain(|_, r| !r.announced || r.requested_at + keep > now);
    }

    /// A code no request here has, from `random` bytes.
    pub fn new_code(&self, mut random: impl FnMut() -> [u8; CODE_LEN]) -> String {
        loop {
            let code: String =
                random().iter().map(|b| CODE_ALPHABET[usize::from(*b) % CODE_ALPHABET.len()] as char).collect();
            if !self.0.contains_key(&code) {
                return code;
            }
        }
    }

    /// Requests decided or expired whose outcome is still to be shown, with their codes.
    pub fn unannounced(&self, now: i64) -> Vec<(String, AccessRequest)> {
        self.0
            .iter()
            .filter(|(_, r)| !r.announced && r.state(now) != State::Open)
            .map(|(c, r)| (c.clone(), r.clone()))
            .collect()
    }
}

/// Codes as people type them: case and surrounding blanks do not matter.
pub fn normalize_code(code: &str) -> String {
    code.trim().to_ascii_uppercase()
}

/// Why a code cannot be decided.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("no access request has the code {0} (`moltmate users requests` lists them)")]
    NotFound(String),
    #[error("access request {code} expired at {}; the person can send /request to ask again", show_time(*at))]
    Expired { code: String, at: i64 },
    #[error("access request {code} was decided already: {outcome}")]
    Decided { code: String, outcome: String },
    #[error("profile {profile} is not offered for this request (offered: {offered})")]
    ProfileNotOffered { profile: String, offered: String },
}

/// `approved as family (MoltmateUser ann) by telegram:42` or `denied by cli:admin`.
pub fn outcome_text(decision: Option<&Decision>) -> String {
    match decision {
        Some(Decision { verdict: Verdict::Approved { profile, user }, by, .. }) => {
            format!("approved as {} (MoltmateUser {user}) by {by}", profile.as_str())
        }
        Some(Decision { verdict: Verdict::Denied, by, .. }) => format!("denied by {by}"),
        None => "not decided".into(),
    }
}

/// A Unix time as people read it, in UTC.
pub fn show_time(unix: i64) -> String {
    jiff::Timestamp::from_second(unix).map(|t| t.strftime("%Y-%m-%d %H:%M UTC").to_string()).unwrap_or_default()
}

/// A stranger's name as given to Telegram, fit to show an admin: control characters out,
/// at most 64 characters.
pub fn clean_name(first: &str, last: Option<&str>) -> String {
    let full = match last {
        Some(last) if !last.is_empty() => format!("{first} {last}"),
        _ => first.to_string(),
    };
    full.chars().filter(|c| !c.is_control()).take(64).collect::<String>().trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(id: i64, at: i64) -> AccessRequest {
        AccessRequest {
            telegram_id: id,
            username: None,
            name: "N".into(),
            requested_at: at,
            expires_at: at + 100,
            profiles: vec![Profile::Public],
            mode: Mode::Create,
            admin_messages: vec![],
            decision: None,
            announced: false,
        }
    }

    fn limits() -> Limits {
        Limits { ttl: 100, per_hour: 3, max_open: 2, after_denial: 1000 }
    }

    #[test]
    fn one_open_request_per_person_and_the_same_code_again() {
        let mut r = Requests::default();
        assert_eq!(r.ask(7, 0, &limits()), Ask::New);
        r.0.insert("AAAA".into(), request(7, 0));
        assert_eq!(r.ask(7, 50, &limits()), Ask::Open { code: "AAAA".into(), expires_at: 100 });
        // Expired: they may ask again.
        assert_eq!(r.ask(7, 100, &limits()), Ask::New);
    }

    #[test]
    fn a_denial_holds_the_person_off_for_a_while() {
        let mut r = Requests::default();
        let mut denied = request(7, 0);
        denied.decision = Some(Decision { verdict: Verdict::Denied, by: "cli:x".into(), at: 10 });
        r.0.insert("AAAA".into(), denied);
        assert_eq!(r.ask(7, 20, &limits()), Ask::Declined { until: 1010 });
        assert_eq!(r.ask(8, 20, &limits()), Ask::New, "someone else");
        assert_eq!(r.ask(7, 1010, &limits()), Ask::New);
    }

    #[test]
    fn everyone_together_is_capped_per_hour_and_open_at_once() {
        let mut r = Requests::default();
        r.0.insert("A".into(), request(1, 0));
        r.0.insert("B".into(), request(2, 0));
        assert_eq!(r.ask(3, 10, &limits()), Ask::Busy, "two open");
        // Both expired: open is 0, but three asked within the hour.
        r.0.insert("C".into(), request(3, 10));
        r.0.get_mut("C").unwrap().decision = Some(Decision { verdict: Verdict::Denied, by: "x".into(), at: 11 });
        assert_eq!(r.ask(4, 200, &limits()), Ask::Busy, "three within the hour");
        assert_eq!(r.ask(4, 3601, &limits()), Ask::New, "an hour on");
    }

    #[test]
    fn expired_and_decided_codes_cannot_be_decided() {
        let mut r = Requests::default();
        r.0.insert("ABCD".into(), request(7, 0));
        assert!(r.open(" abcd ", 99).is_ok());
        assert_eq!(r.open("ABCD", 100), Err(Refusal::Expired { code: "ABCD".into(), at: 100 }));
        assert!(r.open("ABCD", 100).unwrap_err().to_string().contains("expired at 1970-01-01 00:01 UTC"));
        assert_eq!(r.open("ZZZZ", 0), Err(Refusal::NotFound("ZZZZ".into())));
        r.0.get_mut("ABCD").unwrap().decision = Some(Decision {
            verdict: Verdict::Approved { profile: Profile::Family, user: "ann".into() },
            by: "cli:x".into(),
            at: 5,
        });
        let refusal = r.open("ABCD", 6).unwrap_err();
        assert!(refusal.to_string().contains("approved as family (MoltmateUser ann)"), "{refusal}");
        assert_eq!(r.unannounced(6).len(), 1);
    }

    #[test]
    fn pruning_keeps_open_unannounced_and_recent_requests() {
        let mut r = Requests::default();
        r.0.insert("OLD".into(), AccessRequest { announced: true, ..request(1, 0) });
        r.0.insert("UNTOLD".into(), request(2, 0));
        r.0.insert("NEW".into(), AccessRequest { announced: true, ..request(3, 90_000) });
        r.prune(100_000, &Limits { ttl: 100, per_hour: 3, max_open: 2, after_denial: 100 });
        assert_eq!(r.0.keys().collect::<Vec<_>>(), ["NEW", "UNTOLD"]);
    }

    #[test]
    fn codes_are_unique_and_readable() {
        let mut r = Requests::default();
        let mut rolls = [[0u8; CODE_LEN], [0u8; CODE_LEN], [1u8; CODE_LEN]].into_iter();
        let first = r.new_code(|| rolls.next().unwrap());
        assert_eq!(first, "AAAAAAAA");
        r.0.insert(first, request(1, 0));
        assert_eq!(r.new_code(|| rolls.next().unwrap()), "BBBBBBBB", "a taken code is drawn again");
        let data = r.to_data();
        assert_eq!(Requests::from_data(Some(&data)), r);
        assert_eq!(clean_name("Ann\u{0}\n", Some("Lee")), "Ann Lee");
    }
}
