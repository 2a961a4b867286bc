//! The conversation as the model sees it, and how it is cut to the history budget.
//!
//! Pure: no I/O. The session store turns records into [`Message`]s; the LLM client turns
//! them into the wire format.

use serde::{Deserialize, Serialize};

/// One tool call the model asked for. `arguments` is the model's JSON text, unparsed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    pub arguments: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    User { text: String },
    Assistant { content: Option<String>, tool_calls: Vec<ToolCall> },
    Tool { call_id: String, content: String },
}

/// Stands in for a tool result that never got recorded (the agent stopped mid-turn).
pub const MISSING_RESULT: &str = "(no result: the turn was interrupted before this tool finished)";
/// Replaces an old tool result when the current turn alone is over the budget.
pub const TRIMMED_RESULT: &str = "(output left out to fit the history budget)";

impl Message {
    /// Size in characters, the unit of the history budget.
    pub fn size(&self) -> usize {
        match self {
            Message::User { text } => text.chars().count(),
            Message::Assistant { content, tool_calls } => {
                content.as_deref().map_or(0, |c| c.chars().count())
                    + tool_calls.iter().map(|c| c.name.len() + c.arguments.chars().count() + c.id.len()).sum::<usize>()
            }
            Message::Tool { call_id, content } => call_id.len() + content.chars().count(),
        }
    }
}

/// Make the sequence valid for Chat Completions: every assistant tool call is answered by a
/// tool message right after it, and no tool message stands without its call. Records of a
/// turn cut short by a crash would otherwise make every later request fail.
pub fn sanitize(messages: Vec<Message>) -> Vec<Message> {
    let mut out: Vec<Message> = Vec::with_capacity(messages.len());
    let mut open: Vec<String> = Vec::new(); // calls of the last assistant message still unanswered
    for message in messages {
        match message {
            Message::Tool { call_id, content } => {
                if let Some(pos) = open.iter().position(|id| *id == call_id) {
                    open.remove(pos);
                    out.push(Message::Tool { call_id, content });
                }
            }
            other => {
                close_open_calls(&mut out, &mut open);
                if let Message::Assistant { tool_calls, .. } = &other {
                    open = tool_calls.iter().map(|c| c.id.clone()).collect();
                }
                out.push(other);
            }
        }
    }
    close_open_calls(&mut out, &mut open);
    out
}

fn close_open_calls(out: &mut Vec<Message>, open: &mut Vec<String>) {
    for call_id in open.drain(..) {
        out.push(Message::Tool { call_id, content: MISSING_RESULT.to_string() });
    }
}

/// The newest whole turns (a turn starts at a user message) whose total size fits `budget`.
/// The last turn, the one being answered, is always kept; if it alone is over the budget,
/// its oldest tool results are replaced by a stub until it fits.
pub fn trim(messages: Vec<Message>, budget: usize) -> Vec<Message> {
    let messages = sanitize(messages);
    let starts: Vec<usize> =
        messages.iter().enumerate().filter(|(_, m)| matches!(m, Message::User { .. })).map(|(i, _)| i).collect();
    // Anything before the first user message is a fragment of a turn cut off by the window.
    let Some(&last_start) = starts.last() else { return Vec::new() };
    let sizes: Vec<usize> = messages.iter().map(Message::size).collect();
    let turn_size = |from: usize, to: usize| sizes[from..to].iter().sum::<usize>();

    let mut keep_from = last_start;
    let mut total = turn_size(last_start, messages.len());
    for pair in starts.windows(2).rev() {
        let (from, to) = (pair[0], pair[1]);
        let size = turn_size(from, to);
        if total + size > budget {
            break;
        }
        total += size;
        keep_from = from;
    }

    let mut kept: Vec<Message> = messages.into_iter().skip(keep_from).collect();
    if total > budget {
        for message in kept.iter_mut() {
            if total <= budget {
                break;
            }
            if let Message::Tool { content, .. } = message {
                let before = content.chars().count();
                let after = TRIMMED_RESULT.chars().count();
                if before > after {
                    *content = TRIMMED_RESULT.to_string();
                    total -= before - after;
                }
            }
        }
    }
    kept
}

/// Cut `text` to at most `max` bytes on a character boundary, saying so.
pub fn truncate(text: &str, max: usize) -> (String, bool) {
    if text.len() <= max {
        return (text.to_string(), false);
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    (text[..end].to_string(), true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(t: &str) -> Message {
        Message::User { text: t.into() }
    }
    fn said(t: &str) -> Message {
        Message::Assistant { content: Some(t.into()), tool_calls: vec![] }
    }
    fn calls(ids: &[&str]) -> Message {
        Message::Assistant {
            content: None,
            tool_calls: ids
                .iter()
                .map(|id| ToolCall { id: id.to_string(), name: "exec".into(), arguments: "{}".into() })
                .collect(),
        }
    }
    fn result(id: &str, t: &str) -> Message {
        Message::Tool { call_id: id.into(), content: t.into() }
    }

    #[test]
    fn sanitize_answers_every_call_and_drops_orphans() {
        let input = vec![
            result("orphan", "x"),
            user("a"),
            calls(&["1", "2"]),
            result("1", "one"),
            // "2" never recorded: the agent crashed
            user("b"),
            calls(&["3"]),
        ];
        let out = sanitize(input);
        assert_eq!(
            out,
            vec![
                user("a"),
                calls(&["1", "2"]),
                result("1", "one"),
                result("2", MISSING_RESULT),
                user("b"),
                calls(&["3"]),
                result("3", MISSING_RESULT),
            ]
        );
    }

    #[test]
    fn trim_keeps_whole_newest_turns_within_budget() {
        let history = vec![user("aaaaaaaaaa"), said("AAAAAAAAAA"), user("bbbbbbbbbb"), said("BBBBBBBBBB"), user("cc")];
        assert_eq!(trim(history.clone(), 1000), history);
        assert_eq!(trim(history.clone(), 22), vec![user("bbbbbbbbbb"), said("BBBBBBBBBB"), user("cc")]);
        assert_eq!(trim(history.clone(), 21), vec![user("cc")]);
        assert_eq!(trim(history, 0), vec![user("cc")], "the current turn is always kept");
    }

    #[test]
    fn trim_never_starts_with_a_tool_result() {
        let history = vec![calls(&["1"]), result("1", "x"), said("late"), user("now")];
        assert_eq!(trim(history, 1000), vec![user("now")]);
    }

    #[test]
    fn oversized_current_turn_loses_its_oldest_tool_output_first() {
        let big = "x".repeat(500);
        let history = vec![user("q"), calls(&["1"]), result("1", &big), calls(&["2"]), result("2", &big)];
        let out = trim(history, 700);
        assert_eq!(out[2], result("1", TRIMMED_RESULT));
        assert_eq!(out[4], result("2", &big));
    }

    #[test]
    fn truncate_respects_char_boundaries() {
        assert_eq!(truncate("héllo", 2), ("h".to_string(), true));
        assert_eq!(truncate("héllo", 3), ("hé".to_string(), true));
        assert_eq!(truncate("hi", 10), ("hi".to_string(), false));
    }
}
