//! What the people on both sides read: the admins' copy of a request and its outcome, and the
//! person's answers (pure).

use crate::access::request::{outcome_text, show_time};
use crate::access::{AccessRequest, Ask, Mode, State, Verdict};

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
pub const STORE_DOWN: &str = "Requests cannot be taken just now. Please try again in a few minutes.";

/// `24 hours`, `30 minutes`, `45 seconds`.
pub fn human_span(seconds: i64) -> String {
    let (n, unit) = match seconds {
        s if s >= 3600 && s % 3600 == 0 => (s / 3600, "hour"),
        s if s >= 60 && s % 60 == 0 => (s / 60, "minute"),
        s => (s, "second"),
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::Decision;
    use crate::crd::Profile;

    fn request(mode: Mode, verdict: Option<Verdict>) -> AccessRequest {
        AccessRequest {
            telegram_id: 7,
            username: Some("ann".into()),
            name: "Ann".into(),
            requested_at: 0,
            expires_at: 100,
            profiles: vec![Profile::Public],
            mode,
            admin_messages: vec![],
            decision: verdict.map(|verdict| Decision { verdict, by: "telegram:42".into(), at: 5 }),
            announced: false,
        }
    }

    #[test]
    fn each_outcome_has_its_words() {
        let approved = Some(Verdict::Approved { profile: Profile::Family, user: "ann".into() });
        let told = |mode, verdict, now| requester_outcome_text("C", &request(mode, verdict), now);
        assert!(told(Mode::Create, approved.clone(), 10).contains("answers from your next message"));
        assert!(told(Mode::Gitops, approved.clone(), 10).contains("once the administrator has finished"));
        assert!(told(Mode::Create, Some(Verdict::Denied), 10).contains("declined"));
        assert!(told(Mode::Create, None, 100).contains("(C) expired"));
        let admin = admin_outcome_text("C", &request(Mode::Create, approved), 10);
        assert_eq!(
            admin,
            "Access request C from Ann (@ann, id 7): approved as family (MoltmateUser ann) by telegram:42."
        );
        assert!(admin_outcome_text("C", &request(Mode::Create, None), 100).contains("expired at 1970-01-01 00:01 UTC"));
        assert!(ask_text(&Ask::New, Some("C"), 86_400).contains("Its code is C; it expires in 24 hours"));
        assert!(ask_text(&Ask::Busy, None, 1).contains("try again in an hour"));
        assert_eq!(
            (human_span(60), human_span(1), human_span(90)),
            ("1 minute".into(), "1 second".into(), "90 seconds".into())
        );
    }
}
