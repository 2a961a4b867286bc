//! What to do with one incoming message: pure decisions and the texts users see.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::directory::Route;
use super::media::{self, MediaPolicy};

/// The bot's commands, as registered with setMyCommands.
pub const COMMANDS: &[(&str, &str)] = &[
    ("start", "Say hello"),
    ("help", "What this bot does"),
    ("whoami", "Your Telegram id (send it to the admin for access)"),
    ("reset", "Start a new conversation"),
    ("status", "Your assistant's profile and state"),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Start,
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
        "help" => Some(Command::Help),
        "whoami" => Some(Command::WhoAmI),
        "reset" => Some(Command::Reset),
        "status" => Some(Command::Status),
        _ => None,
    }
}

/// A message as the gateway sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incoming {
    pub update_id: i64,
    pub chat_id: i64,
    pub from_id: i64,
    pub private: bool,
    pub content: Content,
}

/// What a message carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    Text(String),
    /// A file sent as a file (PDF, text, spreadsheet...).
    Document(Attachment),
    /// A voice note or an audio file.
    Voice(Attachment),
    /// A photo (its largest size).
    Photo(Attachment),
    /// Anything else, named as the person would say it ("sticker", "video", "location"...).
    Other(&'static str),
}

/// A file in a message, as Telegram describes it (the bytes are fetched with `file_id`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Attachment {
    pub file_id: String,
    /// The sender's name for it (documents and audio files have one).
    pub file_name: Option<String>,
    /// As declared by the sender's app: a hint, not a fact.
    pub mime_type: Option<String>,
    /// As declared by Telegram; checked again on download.
    pub size: Option<u64>,
    pub caption: Option<String>,
}

/// Work for a user's agent, done in order by that user's worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Work {
    Turn(String),
    /// Fetch the file from Telegram, save it in the user's workspace, then a turn about it.
    Document(Attachment),
    /// Fetch the voice note or audio file, transcribe it, then a turn on the transcript.
    Voice(Attachment),
    /// Fetch the photo, save it in the user's workspace, then a turn with it as image input.
    Photo(Attachment),
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
    /// A kind of message the bot cannot take (a sticker, a video...), or a file it refuses.
    Unsupported,
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
            MessageOutcome::Unsupported => "unsupported",
        }
    }
}

/// What the gateway takes from its settings for the decision.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Settings {
    pub allow_groups: bool,
    pub bot_username: Option<String>,
    pub media: MediaPolicy,
}

pub fn decide(message: &Incoming, route: Route, settings: &Settings) -> Action {
    if !message.private && !settings.allow_groups {
        return Action::Ignore;
    }
    let text = match &message.content {
        Content::Text(text) => text,
        // Files and the like only in private chats: a group's files are not one person's.
        _ if !message.private => return Action::Ignore,
        other => return decide_media(other, route, &settings.media),
    };
    let command = parse_command(text, settings.bot_username.as_deref());
    // Anyone may ask who they are: that is how a new person gets onto the allowlist.
    if command == Some(Command::WhoAmI) {
        return Action::Reply { text: whoami_text(message.from_id), outcome: MessageOutcome::Command };
    }
    match route {
        Route::Unknown => Action::Refuse,
        Route::Paused { reason, .. } => Action::Reply { text: reason.to_string(), outcome: MessageOutcome::Paused },
        Route::Agent { user, uid } => match command {
            Some(Command::Start | Command::Help) => {
                Action::Reply { text: HELP.to_string(), outcome: MessageOutcome::Command }
            }
            Some(Command::Reset) => Action::Forward { user, uid, work: Work::Reset },
            Some(Command::Status) => Action::Forward { user, uid, work: Work::Status },
            Some(Command::WhoAmI) | None => Action::Forward { user, uid, work: Work::Turn(text.clone()) },
        },
    }
}

/// A private message that is not text. Strangers and paused users are answered as for text;
/// for the others, a file the policy admits goes to their agent, anything else gets a reply
/// that says what the bot can take.
fn decide_media(content: &Content, route: Route, policy: &MediaPolicy) -> Action {
    let (user, uid) = match route {
        Route::Unknown => return Action::Refuse,
        Route::Paused { reason, .. } => {
            return Action::Reply { text: reason.to_string(), outcome: MessageOutcome::Paused };
        }
        Route::Agent { user, uid } => (user, uid),
    };
    let unsupported = |text: String| Action::Reply { text, outcome: MessageOutcome::Unsupported };
    match content {
        Content::Document(file) => match policy.admit(file) {
            Ok(()) => Action::Forward { user, uid, work: Work::Document(file.clone()) },
            Err(refusal) => unsupported(refusal),
        },
        Content::Voice(file) if policy.transcribe => Action::Forward { user, uid, work: Work::Voice(file.clone()) },
        Content::Voice(_) => unsupported(media::unsupported_text("voice messages")),
        Content::Photo(file) if policy.photos => Action::Forward { user, uid, work: Work::Photo(file.clone()) },
        Content::Photo(_) => unsupported(media::unsupported_text("photos")),
        Content::Other(kind) => unsupported(media::unsupported_text(kind)),
        Content::Text(_) => unreachable!("text is decided above"),
    }
}

pub const HELP: &str = "Hi! I pass your messages to your own AI assistant, which keeps its own notes and files.\n\n\
/reset starts a new conversation\n/status shows your assistant's profile and state\n/whoami shows your Telegram id";

pub fn whoami_text(id: i64) -> String {
    format!("Your Telegram id is {id}.")
}

pub fn refusal_text(id: i64) -> String {
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
        with(Content::Text(text.into()), private)
    }

    fn with(content: Content, private: bool) -> Incoming {
        Incoming { update_id: 1, chat_id: 7, from_id: 7, private, content }
    }

    fn decide(message: &Incoming, route: Route, allow_groups: bool, bot_username: Option<&str>) -> Action {
        let settings =
            Settings { allow_groups, bot_username: bot_username.map(str::to_string), media: MediaPolicy::default() };
        super::decide(message, route, &settings)
    }

    #[test]
    fn non_text_gets_a_reply_or_goes_to_the_agent_never_silence() {
        let agent = || Route::Agent { user: "al".into(), uid: "u1".into() };
        let pdf = Attachment {
            file_id: "f1".into(),
            file_name: Some("report.pdf".into()),
            mime_type: Some("application/pdf".into()),
            size: Some(2048),
            caption: Some("summarise".into()),
        };
        assert_eq!(
            decide(&with(Content::Document(pdf.clone()), true), agent(), false, None),
            Action::Forward { user: "al".into(), uid: "u1".into(), work: Work::Document(pdf.clone()) }
        );
        for (content, says) in [
            (Content::Other("stickers"), "stickers"),
            (Content::Other("videos"), "videos"),
            (Content::Other("locations"), "locations"),
            (Content::Voice(Attachment::default()), "voice messages"),
            (Content::Photo(Attachment::default()), "photos"),
        ] {
            let action = decide(&with(content.clone(), true), agent(), false, None);
            match action {
                Action::Reply { text, outcome: MessageOutcome::Unsupported } => {
                    assert!(text.contains(says) && text.contains("documents"), "{content:?}: {text}")
                }
                other => panic!("{content:?}: {other:?}"),
            }
            // A stranger gets what strangers get; a paused user their reason; groups nothing.
            assert_eq!(decide(&with(content.clone(), true), Route::Unknown, false, None), Action::Refuse);
            let paused = Route::Paused { user: "al".into(), reason: "paused!" };
            assert_eq!(
                decide(&with(content.clone(), true), paused, false, None),
                Action::Reply { text: "paused!".into(), outcome: MessageOutcome::Paused }
            );
            assert_eq!(decide(&with(content.clone(), false), agent(), true, None), Action::Ignore);
        }
        let exe = Attachment { file_name: Some("setup.exe".into()), ..pdf.clone() };
        let refused = decide(&with(Content::Document(exe), true), agent(), false, None);
        assert!(
            matches!(&refused, Action::Reply { text, outcome: MessageOutcome::Unsupported } if text.contains(".exe")),
            "{refused:?}"
        );
        let voice = Attachment { file_id: "v".into(), mime_type: Some("audio/ogg".into()), ..Attachment::default() };
        let settings =
            Settings { media: MediaPolicy { transcribe: true, ..MediaPolicy::default() }, ..Settings::default() };
        assert_eq!(
            super::decide(&with(Content::Voice(voice.clone()), true), agent(), &settings),
            Action::Forward { user: "al".into(), uid: "u1".into(), work: Work::Voice(voice) },
            "with transcription on, voice notes go to the agent as text"
        );
        let huge = Attachment { size: Some(1 << 30), ..pdf };
        let refused = decide(&with(Content::Document(huge), true), agent(), false, None);
        assert!(
            matches!(&refused, Action::Reply { text, outcome: MessageOutcome::Unsupported } if text.contains("MiB")),
            "{refused:?}"
        );
    }

    #[test]
    fn decisions() {
        let agent = || Route::Agent { user: "al".into(), uid: "u1".into() };
        let forward = |work| Action::Forward { user: "al".into(), uid: "u1".into(), work };
        assert_eq!(decide(&msg("hi", true), agent(), false, None), forward(Work::Turn("hi".into())));
        assert_eq!(decide(&msg("hi", false), agent(), false, None), Action::Ignore);
        assert_eq!(decide(&msg("hi", false), agent(), true, None), forward(Work::Turn("hi".into())));
        assert_eq!(decide(&msg("/reset", true), agent(), false, None), forward(Work::Reset));
        assert_eq!(decide(&msg("/status", true), agent(), false, None), forward(Work::Status));
        assert!(matches!(
            decide(&msg("/help", true), agent(), false, None),
            Action::Reply { outcome: MessageOutcome::Command, .. }
        ));
        assert_eq!(decide(&msg("hi", true), Route::Unknown, false, None), Action::Refuse);
        let whoami = decide(&msg("/whoami", true), Route::Unknown, false, None);
        assert!(matches!(&whoami, Action::Reply { text, .. } if text.contains('7')), "{whoami:?}");
        let paused = decide(&msg("hi", true), Route::Paused { user: "al".into(), reason: "paused!" }, false, None);
        assert_eq!(paused, Action::Reply { text: "paused!".into(), outcome: MessageOutcome::Paused });
    }

    #[test]
    fn refusals_are_rate_limited_per_sender() {
        let mut r = Refusals::new(Duration::from_secs(600));
        let t0 = Instant::now();
        assert!(r.allow(1, t0));
        assert!(!r.allow(1, t0 + Duration::from_secs(599)));
        assert!(r.allow(2, t0 + Duration::from_secs(1)));
        assert!(r.allow(1, t0 + Duration::from_secs(600)));
        assert!(refusal_text(42).contains("42"));
    }
}
