//! Session records (one JSON object per line of `sessions/<id>.jsonl`), the in-memory window
//! of the current session, and the index of answered updates. Pure: the store does the I/O.
//!
//! A line: `{"v":1,"at":"<RFC 3339>","type":"user","update_id":7,"chat_id":42,"from":42,"text":"hi"}`;
//! other types: `assistant` {content, tool_calls:[{id,name,arguments}]} (a round that called
//! tools), `tool` {call_id, name, content}, `reply` {update_id, text} (the turn's answer),
//! `failed` {update_id, reason} (the model could not be reached; not shown to the model),
//! `reminder` {key, text} (a reminder the gateway delivered; shown to the model as said by it).

use std::collections::{HashMap, VecDeque};

use serde::{Deserialize, Serialize};

use super::history::{Message, ToolCall};

pub const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Record {
    User {
        update_id: i64,
        chat_id: i64,
        from: i64,
        text: String,
        /// Photos sent with it, by their names in `files/`.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        images: Vec<String>,
    },
    Assistant {
        content: Option<String>,
        tool_calls: Vec<ToolCall>,
    },
    Tool {
        call_id: String,
        name: String,
        content: String,
    },
    Reply {
        update_id: i64,
        text: String,
    },
    Failed {
        update_id: i64,
        reason: String,
    },
    Reminder {
        key: String,
        text: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line {
    pub v: u32,
    pub at: String,
    #[serde(flatten)]
    pub record: Record,
}

impl Line {
    pub fn new(record: Record, at: String) -> Self {
        Self { v: FORMAT_VERSION, at, record }
    }
}

impl Record {
    pub fn to_message(&self) -> Option<Message> {
        match self {
            Record::User { text, .. } => Some(Message::User { text: text.clone() }),
            Record::Assistant { content, tool_calls } => {
                Some(Message::Assistant { content: content.clone(), tool_calls: tool_calls.clone() })
            }
            Record::Tool { call_id, content, .. } => {
                Some(Message::Tool { call_id: call_id.clone(), content: content.clone() })
            }
            Record::Reply { text, .. } => Some(Message::Assistant { content: Some(text.clone()), tool_calls: vec![] }),
            Record::Failed { .. } => None,
            Record::Reminder { text, .. } => {
                Some(Message::Assistant { content: Some(text.clone()), tool_calls: vec![] })
            }
        }
    }

    fn size(&self) -> usize {
        self.to_message().map_or(0, |m| m.size())
    }
}

/// The tail of the current session kept in memory: at most `cap` characters of whole turns
/// (the newest turn is kept whatever its size). History trimming picks from this.
#[derive(Debug, Clone)]
pub struct Window {
    records: VecDeque<Record>,
    chars: usize,
    cap: usize,
    /// User messages in the whole session, including those no longer in the window.
    pub turns: u64,
}

impl Window {
    pub fn new(cap: usize) -> Self {
        Self { records: VecDeque::new(), chars: 0, cap, turns: 0 }
    }

    pub fn push(&mut self, record: Record) {
        if matches!(record, Record::User { .. }) {
            self.turns += 1;
        }
        self.chars += record.size();
        self.records.push_back(record);
        while self.chars > self.cap && self.drop_oldest_turn() {}
    }

    /// Drop records up to the second user message; false when only one turn is left.
    fn drop_oldest_turn(&mut self) -> bool {
        let Some(next) = self.records.iter().skip(1).position(|r| matches!(r, Record::User { .. })) else {
            return false;
        };
        for record in self.records.drain(..=next) {
            self.chars -= record.size();
        }
        true
    }

    pub fn cap(&self) -> usize {
        self.cap
    }

    pub fn messages(&self) -> Vec<Message> {
        self.records.iter().filter_map(Record::to_message).collect()
    }

    pub fn records(&self) -> impl Iterator<Item = &Record> {
        self.records.iter()
    }

    /// The photos of the newest user message (the one a turn is answering).
    pub fn last_images(&self) -> Vec<String> {
        self.records
            .iter()
            .rev()
            .find_map(|r| match r {
                Record::User { images, .. } => Some(images.clone()),
                _ => None,
            })
            .unwrap_or_default()
    }

    /// The update of the last user message if it has no reply yet: a redelivery of it is
    /// answered by running the model again, not by recording the message twice.
    pub fn unanswered_update(&self) -> Option<i64> {
        for record in self.records.iter().rev() {
            match record {
                Record::Reply { .. } => return None,
                Record::User { update_id, .. } => return Some(*update_id),
                _ => {}
            }
        }
        None
    }
}

/// Replies by update id, for at-least-once delivery: the newest `cap` answers are kept, each
/// with whether the gateway confirmed it reached Telegram (then a redelivery sends nothing).
#[derive(Debug, Clone)]
pub struct Replies {
    by_update: HashMap<i64, StoredReply>,
    order: VecDeque<i64>,
    cap: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredReply {
    pub text: String,
    /// Files in `files/` handed back with the reply (`send_file`): sent again with it.
    pub files: Vec<String>,
    pub delivered: bool,
}

impl Replies {
    pub fn new(cap: usize) -> Self {
        Self { by_update: HashMap::new(), order: VecDeque::new(), cap: cap.max(1) }
    }

    pub fn get(&self, update_id: i64) -> Option<&StoredReply> {
        self.by_update.get(&update_id)
    }

    pub fn insert(&mut self, update_id: i64, reply: String, files: Vec<String>) {
        let entry = StoredReply { text: reply, files, delivered: false };
        if self.by_update.insert(update_id, entry).is_none() {
            self.order.push_back(update_id);
        }
        while self.order.len() > self.cap {
            if let Some(old) = self.order.pop_front() {
                self.by_update.remove(&old);
            }
        }
    }

    /// The reply reached the user; false if the update is unknown (or long forgotten).
    pub fn mark_delivered(&mut self, update_id: i64) -> bool {
        self.by_update.get_mut(&update_id).map(|r| r.delivered = true).is_some()
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Oldest first, for rewriting the index file.
    pub fn entries(&self) -> impl Iterator<Item = (i64, &StoredReply)> {
        self.order.iter().filter_map(|id| self.by_update.get(id).map(|r| (*id, r)))
    }
}

/// A line of `sessions/replies.jsonl`: an answer, or (`delivered` and no reply) the mark that
/// an earlier answer reached the user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplyLine {
    pub update_id: i64,
    #[serde(default)]
    pub reply: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub delivered: bool,
}

impl ReplyLine {
    pub fn apply(self, replies: &mut Replies) {
        if let Some(reply) = self.reply {
            replies.insert(self.update_id, reply, self.files);
        }
        if self.delivered {
            replies.mark_delivered(self.update_id);
        }
    }
}

/// Session ids are zero-padded counters, so the newest is the greatest name.
pub fn session_file_name(id: u64) -> String {
    format!("{id:06}.jsonl")
}

pub fn parse_session_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".jsonl")?;
    if digits.len() < 6 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

pub fn session_id(id: u64) -> String {
    format!("{id:06}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(update_id: i64, text: &str) -> Record {
        Record::User { update_id, chat_id: 1, from: 1, text: text.into(), images: vec![] }
    }
    fn reply(update_id: i64, text: &str) -> Record {
        Record::Reply { update_id, text: text.into() }
    }

    #[test]
    fn line_format_is_flat_json() {
        let line = Line::new(user(7, "hi"), "2025-01-01T00:00:00Z".into());
        let json = serde_json::to_string(&line).unwrap();
        assert_eq!(
            json,
            r#"{"v":1,"at":"2025-01-01T00:00:00Z","type":"user","update_id":7,"chat_id":1,"from":1,"text":"hi"}"#
        );
        assert_eq!(serde_json::from_str::<Line>(&json).unwrap(), line);
        let call = Record::Assistant {
            content: None,
            tool_calls: vec![ToolCall {
                id: "c1".into(),
                name: "exec".into(),
                arguments: "{\"command\":\"ls\"}".into(),
            }],
        };
        let back: Line =
            serde_json::from_str(&serde_json::to_string(&Line::new(call.clone(), "t".into())).unwrap()).unwrap();
        assert_eq!(back.record, call);
    }

    #[test]
    fn window_drops_whole_old_turns_and_counts_all() {
        let mut w = Window::new(12);
        for (i, t) in ["aaaa", "bbbb", "cccc"].iter().enumerate() {
            w.push(user(i as i64, t));
            w.push(reply(i as i64, t));
        }
        assert_eq!(w.turns, 3);
        let texts: Vec<_> = w.messages().into_iter().map(|m| format!("{m:?}")).collect();
        assert_eq!(texts.len(), 2, "{texts:?}");
        assert!(texts[0].contains("cccc"));
        // One huge turn stays whole.
        w.push(user(9, &"z".repeat(100)));
        assert_eq!(w.messages().len(), 1);
    }

    #[test]
    fn unanswered_update_is_the_last_user_message_without_reply() {
        let mut w = Window::new(1000);
        assert_eq!(w.unanswered_update(), None);
        w.push(user(1, "a"));
        assert_eq!(w.unanswered_update(), Some(1));
        w.push(Record::Failed { update_id: 1, reason: "down".into() });
        assert_eq!(w.unanswered_update(), Some(1));
        w.push(reply(1, "ok"));
        assert_eq!(w.unanswered_update(), None);
        assert!(w.messages().iter().all(|m| !format!("{m:?}").contains("down")), "failures are not shown to the model");
    }

    #[test]
    fn replies_keep_the_newest() {
        let mut r = Replies::new(2);
        r.insert(1, "a".into(), vec![]);
        r.insert(2, "b".into(), vec![]);
        r.insert(2, "b2".into(), vec![]);
        r.insert(3, "c".into(), vec![]);
        let text = |id| r.get(id).map(|s: &StoredReply| s.text.as_str());
        assert_eq!((text(1), text(2), text(3)), (None, Some("b2"), Some("c")));
        assert_eq!(r.entries().map(|(id, r)| (id, r.text.as_str())).collect::<Vec<_>>(), vec![(2, "b2"), (3, "c")]);
    }

    #[test]
    fn session_file_names() {
        assert_eq!(session_file_name(1), "000001.jsonl");
        assert_eq!(parse_session_file_name("000001.jsonl"), Some(1));
        assert_eq!(parse_session_file_name("1234567.jsonl"), Some(1234567));
        for bad in ["replies.jsonl", "01.jsonl", "000001.json", "00000x.jsonl"] {
            assert_eq!(parse_session_file_name(bad), None, "{bad}");
        }
    }
}
