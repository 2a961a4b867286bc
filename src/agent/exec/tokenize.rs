//! Command line -> argv, refusing everything a shell would interpret.
//!
//! There is no shell behind this: the argv goes straight to `execve`. We still refuse shell
//! syntax instead of passing it through literally, because the model writes command lines
//! for a shell; an argv that differs from what a shell would have produced means the model
//! (or whoever injected the text) expected something we are not doing.
//!
//! Hand-written rather than `shlex`: shlex returns the words but not *which characters were
//! quoted*, and that is the whole question here (`'*'` is a literal, `*` a glob; `'$x'` a
//! literal, `"$x"` an expansion; `FOO=1 cat` an assignment, `'FOO=1'` a program name).

/// Why a command line was refused before any program was looked at.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SyntaxError {
    #[error("the command is empty")]
    Empty,
    #[error(
        "the command contains a line break, which a shell would treat as the start of another command; send one command on one line"
    )]
    LineBreak,
    #[error("the command contains the control character {0}; remove it")]
    Control(String),
    #[error(
        "the command contains the invisible character {0} (a format, direction or private-use mark, or a space that does not separate words), which makes it read differently from what runs; remove it"
    )]
    Invisible(String),
    #[error("`$` would be expanded by a shell; quote it with single quotes or remove it")]
    Dollar,
    #[error("backticks (`) would run a command in a shell; quote them with single quotes or remove them")]
    Backtick,
    #[error(
        "`{0}` {1}; there is no shell here: run one program per call, and quote the character if it is part of an argument"
    )]
    Operator(char, &'static str),
    #[error("`{0}` is a shell glob and would be expanded by a shell; quote it, or name the files one by one")]
    Glob(char),
    #[error("`~` would be expanded by a shell to a home directory; use a path relative to the workspace")]
    Tilde,
    #[error("`#` starts a comment in a shell, which would drop the rest of the command; quote it")]
    Comment,
    #[error("`{0}` sets an environment variable in a shell; the environment of commands is fixed")]
    Assignment(String),
    #[error("the command has an unterminated {0} quote")]
    Unterminated(&'static str),
    #[error("the command ends with a backslash that escapes nothing")]
    TrailingBackslash,
}

/// What a shell does with an unquoted operator character, for the refusal reason.
fn operator(c: char) -> Option<&'static str> {
    Some(match c {
        '|' => "is a shell pipe",
        ';' => "separates commands in a shell",
        '&' => "runs or chains commands in a shell",
        '<' | '>' => "is a shell redirection (the output comes back to you without one)",
        '(' | ')' => "groups commands in a subshell",
        '{' | '}' => "is brace expansion or a command group in a shell",
        _ => return None,
    })
}

/// One word being built, with what the assignment and tilde rules need to know.
#[derive(Default)]
struct Word {
    text: String,
    started: bool,
    /// The characters before the first quote or escape: only these can form `NAME=`.
    unquoted_prefix: String,
    quoted_seen: bool,
    /// The previous character, if it was unquoted (for `=~` and `:~`).
    last_unquoted: Option<char>,
}

impl Word {
    fn push_unquoted(&mut self, c: char) {
        self.started = true;
        self.text.push(c);
        if !self.quoted_seen {
            self.unquoted_prefix.push(c);
        }
        self.last_unquoted = Some(c);
    }

    fn push_quoted(&mut self, c: char) {
        self.started = true;
        self.quoted_seen = true;
        self.text.push(c);
        self.last_unquoted = None;
    }

    fn is_assignment(&self) -> bool {
        let Some((name, _)) = self.unquoted_prefix.split_once('=') else { return false };
        let mut chars = name.chars();
        matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
            && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
    }
}

/// Split a command line into argv with POSIX quoting (single quotes, double quotes,
/// backslash), refusing anything a shell would expand, redirect or run.
pub fn split(line: &str) -> Result<Vec<String>, SyntaxError> {
    // Line breaks and control characters are refused anywhere, quoted or not: a quoted
    // newline is a classic injection vector (`cat 'a\nid'` pasted into a shell elsewhere),
    // and no ordinary argument needs one.
    for c in line.chars() {
        match c {
            '\n' | '\r' | '\u{2028}' | '\u{2029}' | '\u{85}' => return Err(SyntaxError::LineBreak),
            '\t' => {}
            c if c.is_control() => return Err(SyntaxError::Control(format!("U+{:04X}", c as u32))),
            // The command a person reads in a log would not be the one that ran.
            c if crate::unicode::is_invisible(c) => return Err(SyntaxError::Invisible(format!("U+{:04X}", c as u32))),
            _ => {}
        }
    }

    let mut words: Vec<Word> = Vec::new();
    let mut word = Word::default();
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' => {
                if word.started {
                    words.push(std::mem::take(&mut word));
                }
            }
            // Single quotes: everything literal up to the next single quote.
            '\'' => {
                word.started = true;
                word.quoted_seen = true;
                loop {
                    match chars.next() {
                        None => return Err(SyntaxError::Unterminated("single")),
                        Some('\'') => break,
                        Some(q) => word.push_quoted(q),
                    }
                }
                word.last_unquoted = None;
            }
            // Double quotes: a shell still expands `$` and backticks inside them. We refuse
            // both even when backslash-escaped, so there is one simple rule to explain:
            // "use single quotes".
            '"' => {
                word.started = true;
                word.quoted_seen = true;
                loop {
                    match chars.next() {
                        None => return Err(SyntaxError::Unterminated("double")),
                        Some('"') => break,
                        Some('$') => return Err(SyntaxError::Dollar),
                        Some('`') => return Err(SyntaxError::Backtick),
                        Some('\\') => match chars.next() {
                            None => return Err(SyntaxError::Unterminated("double")),
                            Some('$') => return Err(SyntaxError::Dollar),
                            Some('`') => return Err(SyntaxError::Backtick),
                            Some(e @ ('"' | '\\')) => word.push_quoted(e),
                            // POSIX: before any other character the backslash stays.
                            Some(e) => {
                                word.push_quoted('\\');
                                word.push_quoted(e);
                            }
                        },
                        Some(q) => word.push_quoted(q),
                    }
                }
                word.last_unquoted = None;
            }
            // An unquoted backslash makes the next character literal, whatever it is.
            '\\' => match chars.next() {
                None => return Err(SyntaxError::TrailingBackslash),
                Some(e) => word.push_quoted(e),
            },
            '$' => return Err(SyntaxError::Dollar),
            '`' => return Err(SyntaxError::Backtick),
            '*' | '?' | '[' => return Err(SyntaxError::Glob(c)),
            '~' if !word.started || matches!(word.last_unquoted, Some('=' | ':')) => return Err(SyntaxError::Tilde),
            '#' if !word.started => return Err(SyntaxError::Comment),
            c => match operator(c) {
                Some(what) => return Err(SyntaxError::Operator(c, what)),
                None => word.push_unquoted(c),
            },
        }
    }
    if word.started {
        words.push(word);
    }
    // Only the first word can be an assignment: after the program name, `A=1` is an argument.
    if let Some(first) = words.first().filter(|w| w.is_assignment()) {
        return Err(SyntaxError::Assignment(first.text.clone()));
    }
    if words.is_empty() {
        return Err(SyntaxError::Empty);
    }
    Ok(words.into_iter().map(|w| w.text).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_like_a_posix_shell() {
        let table: &[(&str, &[&str])] = &[
            ("cat a.txt", &["cat", "a.txt"]),
            ("grep naïve 'Résumé 東京.txt'", &["grep", "naïve", "Résumé 東京.txt"]),
            ("  cat\t a.txt  ", &["cat", "a.txt"]),
            ("cat 'my file.txt'", &["cat", "my file.txt"]),
            ("cat \"my file.txt\"", &["cat", "my file.txt"]),
            ("cat my\\ file.txt", &["cat", "my file.txt"]),
            ("grep 'a|b' x", &["grep", "a|b", "x"]),
            ("grep \"a|b;c&d>e\" x", &["grep", "a|b;c&d>e", "x"]),
            ("awk '{print $1}'", &["awk", "{print $1}"]),
            ("grep \"a\\.b\" x", &["grep", "a\\.b", "x"]),
            ("grep \"say \\\"hi\\\"\"", &["grep", "say \"hi\""]),
            ("echo ''", &["echo", ""]),
            ("echo a''b", &["echo", "ab"]),
            ("grep a\\|b", &["grep", "a|b"]),
            ("echo \\$HOME", &["echo", "$HOME"]),
            ("cat backup~ a~b", &["cat", "backup~", "a~b"]),
            ("grep -c '#' x", &["grep", "-c", "#", "x"]),
            ("cat a#b", &["cat", "a#b"]),
            ("echo A=1", &["echo", "A=1"]),
            ("'FOO=1' x", &["FOO=1", "x"]),
            ("find . -name '*.txt'", &["find", ".", "-name", "*.txt"]),
            ("find . \\( -name x \\)", &["find", ".", "(", "-name", "x", ")"]),
            ("grep ']' x", &["grep", "]", "x"]),
            ("grep ] x", &["grep", "]", "x"]),
        ];
        for (line, want) in table {
            let got = split(line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
            assert_eq!(got, *want, "{line:?}");
        }
    }

    #[test]
    fn refuses_what_a_shell_would_interpret() {
        use SyntaxError::*;
        let table: &[(&str, SyntaxError)] = &[
            ("", Empty),
            ("   ", Empty),
            ("cat a\nid", LineBreak),
            ("cat 'a\nid'", LineBreak),
            ("cat a\rid", LineBreak),
            ("cat a\0b", Control("U+0000".into())),
            ("cat \u{1b}[2J", Control("U+001B".into())),
            ("cat \u{202e}txt.exe", Invisible("U+202E".into())),
            ("cat 'a\u{2066}b'", Invisible("U+2066".into())),
            ("cat a\u{200b}", Invisible("U+200B".into())),
            ("cat \u{feff}a", Invisible("U+FEFF".into())),
            ("cat a\u{ad}b", Invisible("U+00AD".into())),
            ("cat a\u{a0}/etc/passwd", Invisible("U+00A0".into())),
            ("cat a\u{3000}b", Invisible("U+3000".into())),
            ("cat \u{e000}", Invisible("U+E000".into())),
            ("cat $HOME", Dollar),
            ("cat \"$HOME\"", Dollar),
            ("cat \"\\$HOME\"", Dollar),
            ("cat $(id)", Dollar),
            ("cat `id`", Backtick),
            ("cat \"`id`\"", Backtick),
            ("cat a | sh", Operator('|', "is a shell pipe")),
            ("cat a;id", Operator(';', "separates commands in a shell")),
            ("cat a && id", Operator('&', "runs or chains commands in a shell")),
            ("cat a > b", Operator('>', "is a shell redirection (the output comes back to you without one)")),
            ("cat < a", Operator('<', "is a shell redirection (the output comes back to you without one)")),
            ("(cat a)", Operator('(', "groups commands in a subshell")),
            ("cat {a,b}", Operator('{', "is brace expansion or a command group in a shell")),
            ("cat *.txt", Glob('*')),
            ("cat a?", Glob('?')),
            ("cat [ab]", Glob('[')),
            ("cat ~/x", Tilde),
            ("cat ~", Tilde),
            ("cat --file=~/x", Tilde),
            ("cat a:~/x", Tilde),
            ("cat a #b", Comment),
            ("FOO=1 cat a", Assignment("FOO=1".into())),
            ("PATH=. cat", Assignment("PATH=.".into())),
            ("A=\"x y\" cat", Assignment("A=x y".into())),
            ("cat 'a", Unterminated("single")),
            ("cat \"a", Unterminated("double")),
            ("cat a\\", TrailingBackslash),
        ];
        for (line, want) in table {
            assert_eq!(split(line).as_ref(), Err(want), "{line:?}");
        }
    }
}
