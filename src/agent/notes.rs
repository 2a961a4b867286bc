//! MEMORY.md as the person sees it: numbered notes they can list and forget, and the fold
//! that keeps the file bounded. Pure: text in, text out; the workspace does the I/O and the
//! agent asks the model for a fold's summary.
//!
//! A note is a line `- DATE: TEXT`, as the `remember` tool writes it. Other lines (a heading
//! the person typed into the file) are kept as they are and are not notes.

use serde::{Deserialize, Serialize};

/// One note: its line in the file, and its number as `/memory` shows it (from 1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Note {
    pub number: usize,
    /// The date part, if the line has one (`2026-12-03`).
    pub date: Option<String>,
    pub text: String,
}

/// The notes in MEMORY.md, oldest first.
pub fn notes(memory: &str) -> Vec<Note> {
    memory
        .lines()
        .filter_map(|line| line.strip_prefix("- "))
        .filter(|body| !body.trim().is_empty())
        .enumerate()
        .map(|(index, body)| {
            let (date, text) = match body.split_once(": ") {
                Some((date, text)) if !date.is_empty() && !date.contains(' ') => (Some(date.to_string()), text),
                _ => (None, body),
            };
            Note { number: index + 1, date, text: text.trim().to_string() }
        })
        .collect()
}

/// MEMORY.md without note `number`, and that note; `None` if there is no such note.
pub fn forget(memory: &str, number: usize) -> Option<(String, Note)> {
    let note = notes(memory).into_iter().find(|n| n.number == number)?;
    let mut seen = 0;
    let kept: String = memory
        .split_inclusive('\n')
        .filter(|line| {
            let is_note = line.strip_prefix("- ").is_some_and(|body| !body.trim().is_empty());
            if is_note {
                seen += 1;
            }
            !(is_note && seen == number)
        })
        .collect();
    Some((kept, note))
}

/// The oldest notes to fold into one summary so that MEMORY.md, `size` bytes, gets back to
/// `target` bytes: what is left, and the notes taken out. `None` when nothing needs folding
/// (the file is within `bound`) or nothing can be (no notes).
pub fn fold_oldest(memory: &str, bound: usize, target: usize) -> Option<(String, Vec<Note>)> {
    if memory.len() <= bound {
        return None;
    }
    let all = notes(memory);
    let mut freed = 0;
    let mut taken = 0;
    let mut seen = 0;
    let mut kept = String::new();
    for line in memory.split_inclusive('\n') {
        let is_note = line.strip_prefix("- ").is_some_and(|body| !body.trim().is_empty());
        if is_note {
            seen += 1;
            if memory.len() - freed > target && seen < all.len() {
                freed += line.len();
                taken = seen;
                continue;
            }
        }
        kept.push_str(line);
    }
    (taken > 0).then(|| (kept, all.into_iter().take(taken).collect()))
}

/// A summary note to stand for `folded`, written first in the file (it is about the oldest).
pub fn with_summary(kept: &str, folded: &[Note], summary: &str, today: &str) -> String {
    let span = match (folded.first().and_then(|n| n.date.as_deref()), folded.last().and_then(|n| n.date.as_deref())) {
        (Some(first), Some(last)) if first != last => format!(" from {first} to {last}"),
        (Some(day), _) => format!(" of {day}"),
        _ => String::new(),
    };
    let summary = summary.split_whitespace().collect::<Vec<_>>().join(" ");
    let line = format!("- {today}: (summary of {} older notes{span}) {summary}\n", folded.len());
    format!("{line}{kept}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const MEMORY: &str =
        "# Notes\n- 2026-11-01: likes tea\n- 2026-11-02: sister is Jo\n\n- 2026-12-01: allergic to nuts\n";

    #[test]
    fn notes_are_numbered_lines_and_headings_are_not_notes() {
        let all = notes(MEMORY);
        assert_eq!(all.len(), 3);
        assert_eq!(all[1], Note { number: 2, date: Some("2026-11-02".into()), text: "sister is Jo".into() });
        assert_eq!(notes("- no date here\n")[0].date, None);
        assert!(notes("").is_empty());
    }

    #[test]
    fn forgetting_removes_exactly_that_note() {
        let (kept, gone) = forget(MEMORY, 2).unwrap();
        assert_eq!(gone.text, "sister is Jo");
        assert_eq!(kept, "# Notes\n- 2026-11-01: likes tea\n\n- 2026-12-01: allergic to nuts\n");
        assert_eq!(forget(MEMORY, 0), None);
        assert_eq!(forget(MEMORY, 4), None);
        // A note's text that looks like another note's is no confusion.
        let (kept, _) = forget("- a: x\n- a: x\n", 2).unwrap();
        assert_eq!(kept, "- a: x\n");
    }

    #[test]
    fn the_oldest_notes_fold_until_the_file_is_back_under_its_target() {
        let memory: String =
            (0..10).map(|i| format!("- 2026-11-{:02}: note number {i} {}\n", i + 1, "x".repeat(60))).collect();
        assert_eq!(fold_oldest(&memory, memory.len(), 100), None, "within the bound");
        let (kept, folded) = fold_oldest(&memory, 500, 400).unwrap();
        assert!(kept.len() <= 400, "{}", kept.len());
        assert_eq!(folded.first().unwrap().number, 1);
        assert!(kept.starts_with(&format!("- 2026-11-{:02}", folded.len() + 1)), "the newest stay");
        assert_eq!(notes(&kept).len() + folded.len(), 10);
        // The newest note always stays, however small the target.
        let (kept, folded) = fold_oldest(&memory, 1, 0).unwrap();
        assert_eq!((notes(&kept).len(), folded.len()), (1, 9));
        assert_eq!(fold_oldest("# just a heading that is long\n", 5, 1), None, "no notes to fold");
    }

    #[test]
    fn the_summary_goes_first_on_one_line() {
        let folded = notes(MEMORY)[..2].to_vec();
        let text = with_summary("- 2026-12-01: allergic to nuts\n", &folded, "Likes tea;\nsister Jo.", "2026-12-03");
        assert_eq!(
            text,
            "- 2026-12-03: (summary of 2 older notes from 2026-11-01 to 2026-11-02) Likes tea; sister Jo.\n\
             - 2026-12-01: allergic to nuts\n"
        );
    }
}
