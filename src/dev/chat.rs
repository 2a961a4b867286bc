//! `moltmate dev chat`: type as a user of the local stack and read their agent's replies.
//!
//! Talks to the Telegram stand-in's control API only: each line is injected as a private
//! message from the current user (`POST /control/messages`), then the bot's messages to that
//! chat are read as they arrive (`GET /control/chats/<id>/messages?min_count=N&timeout_ms=T`,
//! a long poll). So it sees exactly what the person would see in Telegram.
//!
//! On a terminal it is interactive (a prompt naming the current user; `/as NAME` switches);
//! otherwise (or with `--script FILE`) it reads the lines, prints `NAME> text` and
//! `bot> reply` on stdout, and exits non-zero if a message got no reply.

use std::collections::HashMap;
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::telegram::SentMessage;
use crate::gateway::commands::STARTING;

#[derive(clap::Args, Debug, Clone)]
pub struct ChatArgs {
    /// The Telegram stand-in's URL (`TELEGRAM_URL` in the dev stack's DIR/env).
    #[arg(long, env = "TELEGRAM_URL")]
    pub telegram_url: String,
    /// A user to type as, NAME=TELEGRAM_ID (repeatable).
    #[arg(long = "user", value_name = "NAME=TELEGRAM_ID", value_parser = parse_user)]
    pub users: Vec<ChatUser>,
    /// Take users from MoltmateUser manifests (metadata.name, spec.telegram.userId; repeatable).
    #[arg(long = "users-from", value_name = "FILE")]
    pub users_from: Vec<PathBuf>,
    /// Read the messages from this file (else standard input; non-interactive unless a terminal).
    #[arg(long, value_name = "FILE")]
    pub script: Option<PathBuf>,
    /// How long to wait for the first reply to a message.
    #[arg(long, default_value = "120s", value_parser = crate::duration::parse_arg)]
    pub reply_timeout: Duration,
    /// After a reply, keep printing further ones until none came for this long.
    #[arg(long, default_value = "2s", value_parser = crate::duration::parse_arg)]
    pub quiet: Duration,
}

/// Someone to type as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatUser {
    pub name: String,
    pub telegram_id: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    #[error("{0}")]
    Usage(String),
    #[error("reading {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error(
        "cannot reach the Telegram stand-in at {url} ({source}); is the stack up? (`scripts/dev-stack up DIR` writes TELEGRAM_URL into DIR/env)"
    )]
    Unreachable { url: String, source: reqwest::Error },
    #[error("the Telegram stand-in answered {status} to {what}: {body}")]
    Refused { what: String, status: u16, body: String },
    #[error("setting up the HTTP client: {0}")]
    Setup(String),
    #[error("standard input: {0}")]
    Stdin(std::io::Error),
}

/// `NAME=TELEGRAM_ID`.
pub fn parse_user(spec: &str) -> Result<ChatUser, String> {
    let (name, id) = spec.split_once('=').ok_or_else(|| format!("expected NAME=TELEGRAM_ID, got {spec:?}"))?;
    let name = name.trim();
    if name.is_empty() || name.contains(char::is_whitespace) || name.contains(':') {
        return Err(format!("bad user name {name:?}: one word, no ':'"));
    }
    let telegram_id = id
        .trim()
        .parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| format!("bad Telegram id {id:?} for {name}: a positive number"))?;
    Ok(ChatUser { name: name.to_string(), telegram_id })
}

/// The MoltmateUsers in a YAML file (one or more documents; other kinds are skipped).
pub fn users_from_manifest(yaml: &str) -> Result<Vec<ChatUser>, String> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(yaml).map_err(|e| format!("not YAML: {e}"))?;
    let mut users = Vec::new();
    for doc in docs.iter().filter(|d| d["kind"] == "MoltmateUser") {
        let name = doc["metadata"]["name"].as_str().ok_or("a MoltmateUser without metadata.name")?;
        let id = doc["spec"]["telegram"]["userId"]
            .as_i64()
            .ok_or_else(|| format!("MoltmateUser {name} has no spec.telegram.userId"))?;
        users.push(parse_user(&format!("{name}={id}"))?);
    }
    Ok(users)
}

/// One line of input, understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// Send `text` as `users[user]`.
    Say { user: usize, text: String },
    /// `/as NAME`.
    Switch(usize),
    /// `/users`.
    Users,
    /// `/quit` (end of input does the same).
    Quit,
    /// An empty line on a terminal: show replies that came in since.
    Check,
    /// Blank lines and `#` comments of a script.
    Skip,
}

/// `NAME: text` sends as NAME (and makes NAME current), a plain line as `current`; `/as NAME`,
/// `/users` and `/quit` are ours, any other `/command` goes to the bot.
pub fn parse_line(line: &str, users: &[ChatUser], current: usize, interactive: bool) -> Result<Line, String> {
    let line = line.trim();
    let find = |name: &str| users.iter().position(|u| u.name == name);
    if line.is_empty() {
        return Ok(if interactive { Line::Check } else { Line::Skip });
    }
    if !interactive && line.starts_with('#') {
        return Ok(Line::Skip);
    }
    let mut words = line.split_whitespace();
    match words.next() {
        Some("/quit" | "/exit") => return Ok(Line::Quit),
        Some("/users") => return Ok(Line::Users),
        Some("/as") => {
            let (Some(name), None) = (words.next(), words.next()) else {
                return Err(format!("usage: /as NAME (one of: {})", names(users)));
            };
            return find(name).map(Line::Switch).ok_or_else(|| format!("no user {name:?}; known: {}", names(users)));
        }
        _ => {}
    }
    if let Some((name, text)) = line.split_once(':')
        && let Some(user) = find(name.trim())
    {
        let text = text.trim();
        if text.is_empty() {
            return Err(format!("nothing to send after \"{}:\"", name.trim()));
        }
        return Ok(Line::Say { user, text: text.to_string() });
    }
    Ok(Line::Say { user: current, text: line.to_string() })
}

fn names(users: &[ChatUser]) -> String {
    users.iter().map(|u| u.name.as_str()).collect::<Vec<_>>().join(", ")
}

/// A bot message as printed: `bot> ` before the first line, continuation lines indented.
pub fn bot_says(text: &str) -> String {
    let mut lines = text.lines();
    let first = lines.next().unwrap_or("");
    std::iter::once(format!("bot> {first}")).chain(lines.map(|l| format!("     {l}"))).collect::<Vec<_>>().join("\n")
}

/// The gateway's "starting up" notice: the real answer is still to come.
pub fn is_interim(text: &str) -> bool {
    text == STARTING
}

/// The stand-in's control API.
struct Control {
    http: reqwest::Client,
    base: String,
}

impl Control {
    fn new(base: &str) -> Result<Self, ChatError> {
        let http = crate::http::plain_http_client()
            .map_err(|e| ChatError::Setup(e.to_string()))?
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| ChatError::Setup(e.to_string()))?;
        Ok(Self { http, base: base.trim_end_matches('/').to_string() })
    }

    async fn call(&self, what: &str, request: reqwest::RequestBuilder, ok: &[u16]) -> Result<Value, ChatError> {
        let unreachable = |source| ChatError::Unreachable { url: self.base.clone(), source };
        let response = request.send().await.map_err(unreachable)?;
        let status = response.status().as_u16();
        let body = response.text().await.map_err(unreachable)?;
        if !ok.contains(&status) {
            return Err(ChatError::Refused { what: what.to_string(), status, body });
        }
        Ok(serde_json::from_str(&body).unwrap_or(Value::String(body)))
    }

    async fn check(&self) -> Result<(), ChatError> {
        self.call("GET /readyz", self.http.get(format!("{}/readyz", self.base)).timeout(Duration::from_secs(5)), &[200])
            .await
            .map(drop)
    }

    /// `user` writes `text` in their private chat with the bot.
    async fn inject(&self, user: &ChatUser, text: &str) -> Result<(), ChatError> {
        let body = json!({ "from_id": user.telegram_id, "text": text, "first_name": user.name });
        let request =
            self.http.post(format!("{}/control/messages", self.base)).json(&body).timeout(Duration::from_secs(10));
        self.call("a message", request, &[200]).await.map(drop)
    }

    /// Everything the bot sent to `chat`, once there are at least `min_count` messages or
    /// `wait` has passed.
    async fn messages(&self, chat: i64, min_count: usize, wait: Duration) -> Result<Vec<SentMessage>, ChatError> {
        let url = format!(
            "{}/control/chats/{chat}/messages?min_count={min_count}&timeout_ms={}",
            self.base,
            wait.as_millis()
        );
        let request = self.http.get(url).timeout(wait + Duration::from_secs(10));
        let body = self.call("a read of the bot's messages", request, &[200, 408]).await?;
        serde_json::from_value(body).map_err(|e| ChatError::Refused {
            what: "a read of the bot's messages".into(),
            status: 200,
            body: e.to_string(),
        })
    }
}

/// Who is typing, and how much of each chat has been printed.
struct Session {
    control: Control,
    users: Vec<ChatUser>,
    current: usize,
    seen: HashMap<i64, usize>,
    reply_timeout: Duration,
    quiet: Duration,
}

impl Session {
    /// Print what the bot sent to `chat` beyond what was printed; true if any of it is an answer.
    fn print_new(&mut self, chat: i64, all: &[SentMessage]) -> bool {
        let seen = self.seen.entry(chat).or_default();
        let new = all.get(*seen..).unwrap_or_default();
        *seen = all.len();
        for message in new {
            println!("{}", bot_says(&message.rendered));
        }
        new.iter().any(|m| !is_interim(&m.rendered))
    }

    /// Replies that arrived after an earlier wait gave up.
    async fn catch_up(&mut self, user: usize) -> Result<(), ChatError> {
        let chat = self.users[user].telegram_id;
        let all = self.control.messages(chat, 0, Duration::ZERO).await?;
        self.print_new(chat, &all);
        Ok(())
    }

    /// Send one message and print the replies; false if none came in time.
    async fn exchange(&mut self, user: usize, text: &str) -> Result<bool, ChatError> {
        self.catch_up(user).await?;
        let chat = self.users[user].telegram_id;
        self.control.inject(&self.users[user], text).await?;
        let deadline = Instant::now() + self.reply_timeout;
        let mut answered = false;
        loop {
            // Until an answer: up to the deadline (a "starting up" notice is no answer);
            // after one: until the chat has been quiet for a while.
            let wait = if answered { self.quiet } else { deadline.saturating_duration_since(Instant::now()) };
            let want = self.seen.get(&chat).copied().unwrap_or(0) + 1;
            let all = self.control.messages(chat, want, wait).await?;
            if all.len() < want {
                break;
            }
            answered |= self.print_new(chat, &all);
        }
        if !answered {
            println!("(no reply yet)");
        }
        Ok(answered)
    }

    /// Work through the input; true if every message was answered.
    async fn run(
        &mut self,
        mut lines: mpsc::Receiver<std::io::Result<String>>,
        interactive: bool,
    ) -> Result<bool, ChatError> {
        let mut all_answered = true;
        loop {
            if interactive {
                print!("{}> ", self.users[self.current].name);
                let _ = std::io::stdout().flush();
            }
            let Some(line) = lines.recv().await.transpose().map_err(ChatError::Stdin)? else {
                if interactive {
                    println!();
                }
                break;
            };
            match parse_line(&line, &self.users, self.current, interactive) {
                Err(problem) if interactive => eprintln!("{problem}"),
                Err(problem) => return Err(ChatError::Usage(format!("in the script, line {line:?}: {problem}"))),
                Ok(Line::Skip) => {}
                Ok(Line::Quit) => break,
                Ok(Line::Check) => self.catch_up(self.current).await?,
                Ok(Line::Users) => {
                    for (i, u) in self.users.iter().enumerate() {
                        let mark = if i == self.current { "*" } else { " " };
                        println!("{mark} {} (Telegram id {})", u.name, u.telegram_id);
                    }
                }
                Ok(Line::Switch(user)) => {
                    self.current = user;
                    if !interactive {
                        println!("(now typing as {})", self.users[user].name);
                    }
                    self.catch_up(user).await?;
                }
                Ok(Line::Say { user, text }) => {
                    self.current = user;
                    if !interactive || line.trim() != text {
                        println!("{}> {text}", self.users[user].name);
                    }
                    all_answered &= self.exchange(user, &text).await?;
                }
            }
        }
        Ok(all_answered)
    }
}

/// The lines of `input`, read on a thread of their own (a blocking read of a terminal must
/// not hold up the runtime).
fn lines_of(input: impl BufRead + Send + 'static) -> mpsc::Receiver<std::io::Result<String>> {
    let (tx, rx) = mpsc::channel(1);
    std::thread::spawn(move || {
        for line in input.lines() {
            if tx.blocking_send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn read_file(path: &Path) -> Result<String, ChatError> {
    std::fs::read_to_string(path).map_err(|e| ChatError::Read { path: path.into(), reason: e.to_string() })
}

/// The users of `--user` and `--users-from`, in order; names must be unique.
fn collect_users(args: &ChatArgs) -> Result<Vec<ChatUser>, ChatError> {
    let mut users = args.users.clone();
    for path in &args.users_from {
        let found =
            users_from_manifest(&read_file(path)?).map_err(|reason| ChatError::Read { path: path.clone(), reason })?;
        users.extend(found);
    }
    if users.is_empty() {
        return Err(ChatError::Usage("no users: give --user NAME=TELEGRAM_ID or --users-from FILE".into()));
    }
    for (i, u) in users.iter().enumerate() {
        if users[..i].iter().any(|v| v.name == u.name) {
            return Err(ChatError::Usage(format!("user {} is given twice", u.name)));
        }
    }
    Ok(users)
}

pub async fn run(args: ChatArgs) -> Result<ExitCode, ChatError> {
    let users = collect_users(&args)?;
    let control = Control::new(&args.telegram_url)?;
    control.check().await?;
    let mut session = Session {
        control,
        users,
        current: 0,
        seen: HashMap::new(),
        reply_timeout: args.reply_timeout,
        quiet: args.quiet,
    };
    // Only what comes after we start is news.
    for user in 0..session.users.len() {
        let chat = session.users[user].telegram_id;
        let all = session.control.messages(chat, 0, Duration::ZERO).await?;
        session.seen.insert(chat, all.len());
    }
    let all_answered = match &args.script {
        Some(path) => session.run(lines_of(std::io::Cursor::new(read_file(path)?)), false).await?,
        None if std::io::stdin().is_terminal() => {
            eprintln!(
                "Typing as {} (Telegram id {}). /as NAME switches (users: {}); /users lists them; an empty line shows late replies; /quit or Ctrl-D ends.",
                session.users[0].name,
                session.users[0].telegram_id,
                names(&session.users)
            );
            session.run(lines_of(std::io::BufReader::new(std::io::stdin())), true).await?
        }
        None => session.run(lines_of(std::io::BufReader::new(std::io::stdin())), false).await?,
    };
    Ok(if all_answered { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn users() -> Vec<ChatUser> {
        vec![parse_user("grandma=100000002").unwrap(), parse_user("visitor=100000003").unwrap()]
    }

    #[test]
    fn user_specs() {
        assert_eq!(parse_user(" alice = 1001").unwrap(), ChatUser { name: "alice".into(), telegram_id: 1001 });
        for bad in ["alice", "=1", "alice=", "alice=x", "alice=-3", "alice=0", "a b=1", "a:b=1"] {
            assert!(parse_user(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn users_come_from_manifests() {
        let yaml = "apiVersion: moltmate.io/v1alpha1\nkind: MoltmateUser\nmetadata: { name: grandma }\nspec: { telegram: { userId: 100000002 }, profile: family }\n---\nkind: Namespace\nmetadata: { name: x }\n---\nkind: MoltmateUser\nmetadata: { name: me }\nspec: { telegram: { userId: 7 } }\n";
        let found = users_from_manifest(yaml).unwrap();
        assert_eq!(found, vec![parse_user("grandma=100000002").unwrap(), parse_user("me=7").unwrap()]);
        let err = users_from_manifest("kind: MoltmateUser\nmetadata: { name: x }\nspec: {}\n").unwrap_err();
        assert!(err.contains("spec.telegram.userId"), "{err}");
        for file in ["user-family.yaml", "user-public.yaml"] {
            let text =
                std::fs::read_to_string(format!("{}/manifests/examples/{file}", env!("CARGO_MANIFEST_DIR"))).unwrap();
            assert_eq!(users_from_manifest(&text).unwrap().len(), 1, "{file}");
        }
    }

    #[test]
    fn lines_in_a_script() {
        let u = users();
        let say = |user, text: &str| Ok(Line::Say { user, text: text.into() });
        assert_eq!(parse_line("hello", &u, 1, false), say(1, "hello"));
        assert_eq!(parse_line("grandma: hi there ", &u, 1, false), say(0, "hi there"));
        assert_eq!(parse_line("note: not a user", &u, 0, false), say(0, "note: not a user"));
        assert_eq!(parse_line("visitor:/status", &u, 0, false), say(1, "/status"));
        assert_eq!(parse_line("/status", &u, 0, false), say(0, "/status"), "bot commands go to the bot");
        assert_eq!(parse_line("/as visitor", &u, 0, false), Ok(Line::Switch(1)));
        assert_eq!(parse_line("/quit", &u, 0, false), Ok(Line::Quit));
        assert_eq!(parse_line("/users", &u, 0, false), Ok(Line::Users));
        assert_eq!(parse_line("  ", &u, 0, false), Ok(Line::Skip));
        assert_eq!(parse_line("# a comment", &u, 0, false), Ok(Line::Skip));
        assert!(parse_line("/as nobody", &u, 0, false).unwrap_err().contains("grandma, visitor"));
        assert!(parse_line("/as", &u, 0, false).unwrap_err().contains("usage"));
        assert!(parse_line("grandma:", &u, 0, false).is_err());
    }

    #[test]
    fn lines_on_a_terminal() {
        let u = users();
        assert_eq!(parse_line("", &u, 0, true), Ok(Line::Check));
        assert_eq!(parse_line("#hashtag", &u, 0, true), Ok(Line::Say { user: 0, text: "#hashtag".into() }));
    }

    #[test]
    fn replies_as_printed() {
        assert_eq!(bot_says("You said: hi"), "bot> You said: hi");
        assert_eq!(bot_says("one\ntwo"), "bot> one\n     two");
        assert_eq!(bot_says(""), "bot> ");
        assert!(is_interim(STARTING));
        assert!(!is_interim("You said: hi"));
    }
}
