//! What to do with one incoming message: pure decisions and the texts users see.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::directory::Route;

/// The bot's commands, as registered with setMyCommands.
pub const COMMANDS: &[(&str, &str)] = &[
    ("start", "Say hello"),
    ("request", "Ask the administrator for access"),
    ("help", "What this bot does"),
    ("whoami", "Your Telegram id (send it to the admin for access)"),
    ("reset", "Start a new conversation"),
    ("status", "Your assistant's profile and state"),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Start,
    Request,
    Help,
    WhoAmI,
    Reset,
    Status,
}

/// `/cmd`, `/cmd@this_bot` or `/cmd args`; a command addressed to another bot is not ours.
pub fn parse_command(text: &str, bot_username: Option<&str>) -> Option<Command> {
    let word = text.trim_start().strip_prefix('/')?.split_whitespace().next()?;
    let (name, target) = match word.split_once('@') {
        Some((name, target)) => (name, Some(target)),
        None => (word, None),
    };
    if let (Some(target), Some(me)) = (target, bot_username)
        && !target.eq_ignore_ascii_case(me)
    {
        return None;
    }
    match name.to_ascii_lowercase().as_str() {
        "start" => Some(Command::Start),
        "request" => Some(Command::Request),
        "help" => Some(Command::Help),
        "whoami" => Some(Command::WhoAmI),
        "reset" => Some(Command::Reset),
        "status" => Some(Command::Status),
        _ => None,
    }
}

/// A text message as the gateway sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incoming {
    pub update_id: i64,
    pub chat_id: i64,
    pub from_id: i64,
    pub private: bool,
    pub text: String,
    /// The sender's @username, if any (an access request names their user after it).
    pub username: Option<String>,
    /// The sender's name as Telegram shows it.
    pub name: String,
}

/// Work for a user's agent, done in order by that user's worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Work {
    Turn(String),
    Reset,
    Status,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Not for us (a group chat, when groups are off).
    Ignore,
    /// Answer at once with this text, nothing forwarded.
    Reply { text: String, outcome: MessageOutcome },
    /// Not on the allowlist: a refusal, if this sender was not refused recently.
    Refuse,
    /// Not on the allowlist and asking for access (`/start` or `/request` in a private chat,
    /// with access requests on). Nothing of theirs goes to any agent.
    RequestAccess,
    /// Into the user's queue.
    Forward { user: String, uid: String, work: Work },
}

/// How a message ended, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageOutcome {
    Answered,
    Command,
    Refused,
    Paused,
    Ignored,
    QueueFull,
    AgentUnavailable,
}

impl MessageOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageOutcome::Answered => "answered",
            MessageOutcome::Command => "command",
            MessageOutcome::Refused => "refused",
            MessageOutcome::Paused => "paused",
            MessageOutcome::Ignored => "ignored",
            MessageOutcome::QueueFull => "queue_full",
            MessageOutcome::AgentUnavailable => "agent_unavailable",
        }
    }
}

pub fn decide(
    message: &Incoming,
    route: Route,
    allow_groups: bool,
    bot_username: Option<&str>,
    access_requests: bool,
) -> Action {
    if !message.private && !allow_groups {
        return Action::Ignore;
    }
    let command = parse_command(&message.text, bot_username);
    // Anyone may ask who they are: that is how a new person gets onto the allowlist.
    if command == Some(Command::WhoAmI) {
        return Action::Reply { text: whoami_text(message.from_id), outcome: MessageOutcome::Command };
    }
    match route {
        // Only in a private chat: a request and its answers are between the person and the bot.
        Route::Unknown
            if access_requests && message.private && matches!(command, Some(Command::Start | Command::Request)) =>
        {
            Action::RequestAccess
        }
        Route::Unknown => Action::Refuse,
        Route::Paused { reason, .. } => Action::Reply { text: reason.to_string(), outcome: MessageOutcome::Paused },
        Route::Agent { user, uid } => match command {
            Some(Command::Start | Command::Help | Command::Request) => {
                Action::Reply { text: HELP.to_string(), outcome: MessageOutcome::Command }
            }
            Some(Command::Reset) => Action::Forward { user, uid, work: Work::Reset },
            Some(Command::Status) => Action::Forward { user, uid, work: Work::Status },
            Some(Command::WhoAmI) | None => Action::Forward { user, uid, work: Work::Turn(message.text.clone()) },
        },
    }
}

pub const HELP: &str = "Hi! I pass your messages to your own AI assistant, which keeps its own notes and files.\n\n\
/reset starts a new conversation\n/status shows your assistant's profile and state\n/whoami shows your Telegram id";

pub fn whoami_text(id: i64) -> String {
    format!("Your Telegram id is {id}.")
}

pub fn refusal_text(id: i64, access_requests: bool) -> String {
    if access_requests {
        return format!(
            "Sorry, this bot is private and you are not on its list of users.\n\
             Send /request to ask the administrator for access (your Telegram id is {id})."
        );
    }
    format!(
        "Sorry, this bot is private and you are not on its list of users.\n\
         If you know the administrator, send them your Telegram id, {id}, and ask for access."
    )
}

pub const QUEUE_FULL: &str =
    "You have many messages waiting already. Please wait for the answers, then send this one again.";
pub const STARTING: &str = "Your assistant is starting up; your message will be answered in a moment.";
pub const NOT_STARTED: &str = "Your assistant could not be started just now. Please try again in a few minutes.";
pub const UNREACHABLE: &str = "Your assistant is not answering just now. Please try again in a few minutes.";

/// One refusal per sender per `every`, so an unknown sender cannot make the bot spam.
#[derive(Debug)]
pub struct Refusals {
    every: Duration,
    last: HashMap<i64, Instant>,
}

impl Refusals {
    pub fn new(every: Duration) -> Self {
        Self { every, last: HashMap::new() }
    }

    /// True if `sender` is to be told now (and remembers that they were).
    pub fn allow(&mut self, sender: i64, now: Instant) -> bool {
        // Forget old entries once in a while so a flood of ids cannot grow the map forever.
        if self.last.len() > 10_000 {
            self.last.retain(|_, at| now.duration_since(*at) < self.every);
        }
        match self.last.get(&sender) {
            Some(at) if now.duration_since(*at) < self.every => false,
            _ => {
                self.last.insert(sender, now);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse() {
        let cases = [
            ("/whoami", Some(Command::WhoAmI)),
            ("  /reset now", Some(Command::Reset)),
            ("/status@moltbot", Some(Command::Status)),
            ("/status@otherbot", None),
            ("/START", Some(Command::Start)),
            ("/unknown", None),
            ("hello /help", None),
            ("/", None),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_command(text, Some("MoltBot")), expected, "{text}");
        }
    }

    fn msg(text: &str, private: bool) -> Incoming {
        Incoming { update_id: 1, chat_id: 7, from_id: 7, private, text: text.into(), username: None, name: "A".into() }
    }

    #[test]
    fn decisions() {
        let agent = || Route::Agent { user: "al".into(), uid: "u1".into() };
        let forward = |work| Action::Forward { user: "al".into(), uid: "u1".into(), work };
        assert_eq!(decide(&msg("hi", true), agent(), false, None, false), forward(Work::Turn("hi".into())));
        assert_eq!(decide(&msg("hi", false), agent(), false, None, false), Action::Ignore);
        assert_eq!(decide(&msg("hi", false), agent(), true, None, false), forward(Work::Turn("hi".into())));
        assert_eq!(decide(&msg("/reset", true), agent(), false, None, false), forward(Work::Reset));
        assert_eq!(decide(&msg("/status", true), agent(), false, None, false), forward(Work::Status));
        assert!(matches!(
            decide(&msg("/help", true), agent(), false, None, false),
            Action::Reply { outcome: MessageOutcome::Command, .. }
        ));
        assert_eq!(decide(&msg("hi", true), Route::Unknown, false, None, false), Action::Refuse);
        let whoami = decide(&msg("/whoami", true), Route::Unknown, false, None, false);
        assert!(matches!(&whoami, Action::Reply { text, .. } if text.contains('7')), "{whoami:?}");
        let paused =
            decide(&msg("hi", true), Route::Paused { user: "al".into(), reason: "paused!" }, false, None, false);
        assert_eq!(paused, Action::Reply { text: "paused!".into(), outcome: MessageOutcome::Paused });
    }

    #[test]
    fn who_may_request_access() {
        let agent = || Route::Agent { user: "al".into(), uid: "u1".into() };
        for text in ["/start", "/request"] {
            assert_eq!(decide(&msg(text, true), Route::Unknown, false, None, true), Action::RequestAccess, "{text}");
            // Off, or in a group: the refusal as before.
            assert_eq!(decide(&msg(text, true), Route::Unknown, false, None, false), Action::Refuse, "{text}");
            assert_eq!(decide(&msg(text, false), Route::Unknown, true, None, true), Action::Refuse, "{text}");
            // A user on the list is greeted.
            assert!(matches!(
                decide(&msg(text, true), agent(), false, None, true),
                Action::Reply { outcome: MessageOutcome::Command, .. }
            ));
        }
        assert_eq!(decide(&msg("let me in", true), Route::Unknown, false, None, true), Action::Refuse);
        assert!(refusal_text(42, true).contains("/request"));
    }

    #[test]
    fn refusals_are_rate_limited_per_sender() {
        let mut r = Refusals::new(Duration::from_secs(600));
        let t0 = Instant::now();
        assert!(r.allow(1, t0));
        assert!(!r.allow(1, t0 + Duration::from_secs(599)));
        assert!(r.allow(2, t0 + Duration::from_secs(1)));
        assert!(r.allow(1, t0 + Duration::from_secs(600)));
        assert!(refusal_text(42, false).contains("42"));
    }
}
