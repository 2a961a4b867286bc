//! What to do with one incoming message: pure decisions and the texts users see.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::broker::usage::UsageFigures;
use super::directory::Route;
use super::media::{self, MediaPolicy};
use super::model_choice;
use super::reminders::chat as reminders;
use crate::agent::api::MemoryResponse;
use crate::profile::LlmLimits;

/// The bot's commands, as registered with setMyCommands.
pub const COMMANDS: &[(&str, &str)] = &[
    ("start", "Say hello"),
    ("request", "Ask the administrator for access"),
    ("help", "What this bot does"),
    ("whoami", "Your Telegram id (send it to the admin for access)"),
    ("reset", "Start a new conversation"),
    ("status", "Your assistant's profile and state"),
    ("usage", "Your usage today and this month"),
    ("memory", "What your assistant remembers"),
    ("forget", "Forget a note: /forget N"),
    ("reminders", "Your reminders (/reminders cancel 3 cancels one)"),
    ("timezone", "Your time zone for reminders, e.g. /timezone Europe/Berlin"),
    ("model", "The model your assistant uses, and picking another"),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Start,
    Request,
    Help,
    WhoAmI,
    Reset,
    Status,
    Usage,
    Memory,
    Forget,
    Reminders,
    Timezone,
    Model,
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
        "usage" => Some(Command::Usage),
        "memory" => Some(Command::Memory),
        "forget" => Some(Command::Forget),
        "reminders" => Some(Command::Reminders),
        "timezone" => Some(Command::Timezone),
        "model" => Some(Command::Model),
        _ => None,
    }
}

/// What follows the command word.
fn command_args(text: &str) -> &str {
    let text = text.trim_start();
    text.find(char::is_whitespace).map_or("", |at| &text[at..])
}

/// A message as the gateway sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incoming {
    pub update_id: i64,
    pub chat_id: i64,
    pub from_id: i64,
    pub private: bool,
    pub content: Content,
    /// The sender's @username, if any (an access request names their user after it).
    pub username: Option<String>,
    /// The sender's name as Telegram shows it.
    pub name: String,
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
    Memory,
    /// Remove this note (its number in `/memory`).
    Forget(usize),
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
    /// The user's usage, answered by the gateway from the broker's counts (no agent woken).
    Usage { user: String },
    /// A reminders or time zone command: answered from the store, no agent needed.
    Reminders { user: String, request: reminders::Request },
    /// `/model`: answered from the user's settings, no agent needed.
    Model { user: String, request: model_choice::Request },
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
    /// Strangers may ask for access (admins are named).
    pub access_requests: bool,
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
        // Only in a private chat: a request and its answers are between the person and the bot.
        Route::Unknown
            if settings.access_requests
                && message.private
                && matches!(command, Some(Command::Start | Command::Request)) =>
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
            Some(Command::Usage) => Action::Usage { user },
            Some(Command::Memory) => Action::Forward { user, uid, work: Work::Memory },
            Some(Command::Forget) => match note_number(text) {
                Some(number) => Action::Forward { user, uid, work: Work::Forget(number) },
                None => Action::Reply { text: FORGET_HOW.to_string(), outcome: MessageOutcome::Command },
            },
            Some(Command::Reminders) => {
                Action::Reminders { user, request: reminders::parse_reminders(command_args(text)) }
            }
            Some(Command::Timezone) => {
                Action::Reminders { user, request: reminders::parse_timezone(command_args(text)) }
            }
            Some(Command::Model) => Action::Model { user, request: model_choice::parse(command_args(text)) },
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
/reset starts a new conversation\n/status shows your assistant's profile and state\n/usage shows what you used today and this month\n\
/memory shows what your assistant remembers, /forget N removes a note\n\
/reminders lists your reminders (ask your assistant to set one: \"remind me tomorrow at 8 to call mum\")\n\
/timezone Europe/Berlin sets your time zone\n/model shows or changes the model your assistant uses\n/whoami shows your Telegram id";

pub const FORGET_HOW: &str = "Send /forget and a note's number, for example /forget 2. /memory lists the notes.";

/// The number in `/forget 2`.
fn note_number(text: &str) -> Option<usize> {
    let mut words = text.split_whitespace().skip(1);
    let number = words.next()?.trim_start_matches('#').parse().ok().filter(|&n| n > 0)?;
    words.next().is_none().then_some(number)
}

/// `/memory`: the notes, numbered as `/forget` takes them.
pub fn memory_text(memory: &MemoryResponse) -> String {
    if memory.notes.is_empty() {
        return "I have no notes about you yet. Tell me something worth keeping and I will remember it.".to_string();
    }
    let mut text = format!(
        "What I remember ({} notes, {:.1} KiB; past {} KiB the oldest are summarised into one):\n",
        memory.notes.len(),
        memory.bytes as f64 / 1024.0,
        memory.fold_at_bytes / 1024
    );
    for note in &memory.notes {
        match &note.date {
            Some(date) => text.push_str(&format!("\n{}. {} ({date})", note.number, note.text)),
            None => text.push_str(&format!("\n{}. {}", note.number, note.text)),
        }
    }
    text.push_str("\n\nSend /forget N to remove a note.");
    text
}

/// `/usage`: the person's figures against their profile's limits.
pub fn usage_text(figures: &UsageFigures, limits: &LlmLimits) -> String {
    let share = (figures.tokens_today as f64 * 100.0 / limits.tokens_per_day.max(1) as f64).min(100.0);
    format!(
        "Your usage\n\
         Today: {} of {} tokens ({share:.0}%), {} requests\n\
         This month: {} tokens, {} requests\n\
         Limits: {} tokens a day and {} requests a minute; the day starts again at 00:00 UTC.",
        thousands(figures.tokens_today),
        thousands(limits.tokens_per_day),
        thousands(figures.requests_today),
        thousands(figures.tokens_month),
        thousands(figures.requests_month),
        thousands(limits.tokens_per_day),
        limits.requests_per_minute,
    )
}

/// 1234567 as "1,234,567".
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

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
        with(Content::Text(text.into()), private)
    }

    fn with(content: Content, private: bool) -> Incoming {
        Incoming { update_id: 1, chat_id: 7, from_id: 7, private, content, username: None, name: "A".into() }
    }

    fn decide(
        message: &Incoming,
        route: Route,
        allow_groups: bool,
        bot_username: Option<&str>,
        access_requests: bool,
    ) -> Action {
        let settings = Settings {
            allow_groups,
            bot_username: bot_username.map(str::to_string),
            media: MediaPolicy::default(),
            access_requests,
        };
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
            decide(&with(Content::Document(pdf.clone()), true), agent(), false, None, false),
            Action::Forward { user: "al".into(), uid: "u1".into(), work: Work::Document(pdf.clone()) }
        );
        for (content, says) in [
            (Content::Other("stickers"), "stickers"),
            (Content::Other("videos"), "videos"),
            (Content::Other("locations"), "locations"),
            (Content::Voice(Attachment::default()), "voice messages"),
            (Content::Photo(Attachment::default()), "photos"),
        ] {
            let action = decide(&with(content.clone(), true), agent(), false, None, false);
            match action {
                Action::Reply { text, outcome: MessageOutcome::Unsupported } => {
                    assert!(text.contains(says) && text.contains("documents"), "{content:?}: {text}")
                }
                other => panic!("{content:?}: {other:?}"),
            }
            // A stranger gets what strangers get; a paused user their reason; groups nothing.
            assert_eq!(decide(&with(content.clone(), true), Route::Unknown, false, None, false), Action::Refuse);
            let paused = Route::Paused { user: "al".into(), reason: "paused!" };
            assert_eq!(
                decide(&with(content.clone(), true), paused, false, None, false),
                Action::Reply { text: "paused!".into(), outcome: MessageOutcome::Paused }
            );
            assert_eq!(decide(&with(content.clone(), false), agent(), true, None, false), Action::Ignore);
        }
        let exe = Attachment { file_name: Some("setup.exe".into()), ..pdf.clone() };
        let refused = decide(&with(Content::Document(exe), true), agent(), false, None, false);
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
        let refused = decide(&with(Content::Document(huge), true), agent(), false, None, false);
        assert!(
            matches!(&refused, Action::Reply { text, outcome: MessageOutcome::Unsupported } if text.contains("MiB")),
            "{refused:?}"
        );
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
        assert_eq!(decide(&msg("/usage", true), agent(), false, None, false), Action::Usage { user: "al".into() });
        assert_eq!(decide(&msg("/usage", true), Route::Unknown, false, None, false), Action::Refuse);
        assert_eq!(decide(&msg("/memory", true), agent(), false, None, false), forward(Work::Memory));
        assert_eq!(decide(&msg("/forget 2", true), agent(), false, None, false), forward(Work::Forget(2)));
        assert_eq!(decide(&msg("/forget #3", true), agent(), false, None, false), forward(Work::Forget(3)));
        for bad in ["/forget", "/forget 0", "/forget two", "/forget 1 2", "/forget -1"] {
            assert_eq!(
                decide(&msg(bad, true), agent(), false, None, false),
                Action::Reply { text: FORGET_HOW.into(), outcome: MessageOutcome::Command },
                "{bad}"
            );
        }
        let reminders = |request| Action::Reminders { user: "al".into(), request };
        assert_eq!(decide(&msg("/reminders", true), agent(), false, None, false), reminders(reminders::Request::List));
        assert_eq!(
            decide(&msg("/reminders cancel 2", true), agent(), false, None, false),
            reminders(reminders::Request::Cancel(2))
        );
        assert_eq!(
            decide(&msg("/timezone@MoltBot Asia/Tokyo", true), agent(), false, Some("moltbot"), false),
            reminders(reminders::Request::SetTimezone("Asia/Tokyo".into()))
        );
        assert_eq!(decide(&msg("/reminders", true), Route::Unknown, false, None, false), Action::Refuse);
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
    fn usage_reads_as_figures_against_limits() {
        let figures =
            UsageFigures { tokens_today: 12_345, requests_today: 7, tokens_month: 1_234_567, requests_month: 301 };
        let limits = LlmLimits { requests_per_minute: 60, tokens_per_day: 200_000 };
        assert_eq!(
            usage_text(&figures, &limits),
            "Your usage\nToday: 12,345 of 200,000 tokens (6%), 7 requests\nThis month: 1,234,567 tokens, 301 requests\n\
             Limits: 200,000 tokens a day and 60 requests a minute; the day starts again at 00:00 UTC."
        );
        let over = UsageFigures { tokens_today: 250_000, ..UsageFigures::default() };
        assert!(usage_text(&over, &limits).contains("(100%)"));
        assert_eq!([thousands(0), thousands(999), thousands(1000)], ["0", "999", "1,000"]);
    }

    #[test]
    fn memory_lists_numbered_notes() {
        let memory: MemoryResponse = serde_json::from_value(serde_json::json!({
            "notes": [{"number": 1, "date": "2026-11-01", "text": "likes tea"}, {"number": 2, "date": null, "text": "a heading note"}],
            "bytes": 2048, "fold_at_bytes": 8192
        }))
        .unwrap();
        assert_eq!(
            memory_text(&memory),
            "What I remember (2 notes, 2.0 KiB; past 8 KiB the oldest are summarised into one):\n\n\
             1. likes tea (2026-11-01)\n2. a heading note\n\nSend /forget N to remove a note."
        );
        assert!(memory_text(&MemoryResponse::default()).starts_with("I have no notes"));
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
