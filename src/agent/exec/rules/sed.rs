//! sed: options, and a parser for the script that follows GNU sed's own reading of it.
//!
//! GNU sed can run shell commands (`e`, `s///e`), write files (`w`, `W`, `s///w`) and read
//! arbitrary files (`r`, `R`). We parse the script the way GNU sed's compiler does and refuse
//! those commands; anything the parser does not recognise is refused too. The parser only
//! ever treats text as inert (regexes, replacements, labels, a/i/c text) where GNU sed does,
//! so a command cannot hide inside what we skipped. As a second line, GNU sed also gets
//! `--sandbox`, which makes sed itself reject e/r/w.

use super::options::Arg::{Deny, Flag, Opt, Val};
use super::options::Kind::{Num, Text};
use super::options::{self, Spec};
use super::{Access, FileArg, Plan, RuleError};

const SPEC: Spec = Spec::gnu(
    &[
        ('n', Flag),
        ('E', Flag),
        ('r', Flag),
        ('s', Flag),
        ('u', Flag),
        ('z', Flag),
        ('e', Val(Text)),
        ('l', Val(Num)),
        ('i', Opt(Text)),
        ('f', Deny("reads the script from a file the policy cannot see; put the script on the command line")),
    ],
    &[
        ("quiet", Flag),
        ("silent", Flag),
        ("regexp-extended", Flag),
        ("separate", Flag),
        ("unbuffered", Flag),
        ("null-data", Flag),
        ("debug", Flag),
        ("sandbox", Flag),
        ("expression", Val(Text)),
        ("line-length", Val(Num)),
        ("in-place", Opt(Text)),
        ("file", Deny("reads the script from a file the policy cannot see; put the script on the command line")),
        ("posix", Deny("changes how the script is parsed")),
        ("follow-symlinks", Deny("follows symbolic links when editing in place")),
    ],
);

pub fn analyze(program: &str, gnu: bool, args: &[String]) -> Result<Plan, RuleError> {
    let parsed = options::parse(program, &SPEC, args)?;
    let mut operands = parsed.operands.iter();
    let expressions: Vec<&str> = parsed.values(&["-e", "--expression"]).collect();
    let scripts: Vec<&str> = if expressions.is_empty() {
        match operands.next() {
            Some(script) => vec![script.as_str()],
            None => return Err(script_error(program, "no script given".into())),
        }
    } else {
        expressions
    };
    for script in &scripts {
        check_script(script).map_err(|why| script_error(program, why))?;
    }
    // GNU sed appends `*`-expanded suffixes to the file's path; a `/` in the suffix puts
    // the backup in another directory (`--in-place=/tmp/*`).
    if let Some(suffix) = parsed.values(&["-i", "--in-place"]).find(|s| s.contains('/')) {
        return Err(script_error(
            program,
            format!(
                "the in-place backup suffix `{suffix}` contains `/`, which would put the backup in another directory"
            ),
        ));
    }
    let in_place = parsed.has(&["-i", "--in-place"]);
    let access = if in_place { Access::Write } else { Access::Read };
    let files = operands.filter(|o| *o != "-").map(|o| FileArg { path: o.clone(), access }).collect();
    let mut args = args.to_vec();
    if gnu {
        args.insert(0, "--sandbox".into());
    }
    Ok(Plan { args, files })
}

fn script_error(program: &str, why: String) -> RuleError {
    RuleError::Script { program: program.into(), what: "script", why }
}

/// A cursor over one `-e` expression.
struct Cursor {
    chars: Vec<char>,
    pos: usize,
}

impl Cursor {
    fn new(src: &str) -> Self {
        Self { chars: src.chars().collect(), pos: 0 }
    }
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }
    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        self.pos += usize::from(c.is_some());
        c
    }
    fn skip_blanks(&mut self) {
        while matches!(self.peek(), Some(' ' | '\t')) {
            self.pos += 1;
        }
    }
    fn next_nonblank(&mut self) -> Option<char> {
        self.skip_blanks();
        self.next()
    }
    fn digits(&mut self) {
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.pos += 1;
        }
    }
}

/// Check one expression. Errors are the reason, without the `sed script:` prefix.
///
/// Newlines cannot reach here (the tokenizer refuses them), but they are handled as GNU
/// sed handles them anyway, so this check does not depend on that.
pub fn check_script(script: &str) -> Result<(), String> {
    let mut c = Cursor::new(script);
    loop {
        while matches!(c.peek(), Some(';' | ' ' | '\t' | '\n')) {
            c.pos += 1;
        }
        let Some(mut ch) = c.next() else { return Ok(()) };
        if address(&mut c, ch)? {
            ch = c.next_nonblank().ok_or("an address without a command")?;
            if ch == ',' {
                let first = c.next_nonblank().ok_or("an address range without an end")?;
                if !address(&mut c, first)? {
                    return Err(format!("unexpected `{first}` after `,`"));
                }
                ch = c.next_nonblank().ok_or("an address without a command")?;
            }
        }
        if ch == '!' {
            ch = c.next_nonblank().ok_or("`!` without a command")?;
        }
        match ch {
            // A comment runs to the end of the line.
            '#' => while !matches!(c.next(), None | Some('\n')) {},
            '{' => {}
            '}' | '=' | 'd' | 'D' | 'F' | 'g' | 'G' | 'h' | 'H' | 'n' | 'N' | 'p' | 'P' | 'z' | 'x' => {
                end_of_command(&mut c, ch)?
            }
            'l' | 'L' | 'q' | 'Q' => {
                c.skip_blanks();
                c.digits();
                end_of_command(&mut c, ch)?;
            }
            ':' | 'b' | 't' | 'T' | 'v' => label(&mut c),
            'a' | 'i' | 'c' => text(&mut c, ch)?,
            's' => substitute(&mut c)?,
            'y' => {
                let delim = delimiter(&mut c, "the `y` command")?;
                delimited(&mut c, delim, false).ok_or("unterminated `y` command")?;
                delimited(&mut c, delim, false).ok_or("unterminated `y` command")?;
                end_of_command(&mut c, 'y')?;
            }
            'e' => return Err("the `e` command runs its text (or the pattern space) as a shell command".into()),
            'r' | 'R' => {
                return Err(format!(
                    "the `{ch}` command reads a file named in the script, which the policy cannot confine; name the file as an argument instead"
                ));
            }
            'w' | 'W' => {
                return Err(format!(
                    "the `{ch}` command writes to a file named in the script; the output comes back to you without it"
                ));
            }
            other => return Err(format!("unknown command `{other}`")),
        }
    }
}

/// An address, if `ch` starts one: a line number (`3`, `0~4`), `$`, `+N`/`~N`, or a regex.
fn address(c: &mut Cursor, ch: char) -> Result<bool, String> {
    match ch {
        '0'..='9' => {
            c.digits();
            c.skip_blanks();
            if c.peek() == Some('~') {
                c.pos += 1;
                c.skip_blanks();
                c.digits();
            }
            Ok(true)
        }
        '+' | '~' => {
            c.skip_blanks();
            c.digits();
            Ok(true)
        }
        '$' => Ok(true),
        '/' | '\\' => {
            let delim = if ch == '\\' { delimiter(c, "an address")? } else { '/' };
            delimited(c, delim, true).ok_or("unterminated address regex")?;
            // Address flags: `I` (case) and `M` (multiline), blanks allowed between.
            loop {
                c.skip_blanks();
                match c.peek() {
                    Some('I' | 'M') => c.pos += 1,
                    _ => return Ok(true),
                }
            }
        }
        _ => Ok(false),
    }
}

/// The delimiter of `s`, `y` or `\cREGEXc`: one visible ASCII character other than `\`
/// (GNU sed takes any character; we take fewer).
fn delimiter(c: &mut Cursor, what: &str) -> Result<char, String> {
    match c.next() {
        Some(d) if d.is_ascii_graphic() && d != '\\' => Ok(d),
        Some(d) => Err(format!("`{d}` cannot be the delimiter of {what}; use `/` or `|`")),
        None => Err(format!("{what} is unterminated")),
    }
}

/// Skip a delimited part up to its closing delimiter, as GNU sed reads it: a backslash
/// escapes the next character, and in a regex a bracket expression (`[/]`, `[]/]`,
/// `[[:alpha:]/]`) may contain the delimiter. `None` if the part never ends.
fn delimited(c: &mut Cursor, delim: char, regex: bool) -> Option<()> {
    loop {
        let ch = c.next()?;
        if ch == '\n' {
            return None;
        } else if ch == delim {
            return Some(());
        } else if ch == '\\' {
            c.next()?;
        } else if ch == '[' && regex {
            bracket(c)?;
        }
    }
}

/// Skip a bracket expression after its `[`, up to and including its `]`, with GNU sed's
/// state machine: inside `[:`, `[.` or `[=` a `]` only ends the class after its `:`/`.`/`=`,
/// and a backslash is an ordinary character.
fn bracket(c: &mut Cursor) -> Option<()> {
    if c.peek() == Some('^') {
        c.pos += 1;
    }
    // A `]` first in the list is a literal.
    if c.peek() == Some(']') {
        c.pos += 1;
    }
    // 0: plain; 1: just after `[`; 2: inside `[:...`; 3: just after the closing `:`.
    let mut state = 0u8;
    let mut class = ' ';
    loop {
        let ch = c.next()?;
        match ch {
            '\n' => return None,
            '.' | ':' | '=' if state == 1 => {
                class = ch;
                state = 2;
                continue;
            }
            '.' | ':' | '=' if state == 2 && ch == class => {
                state = 3;
                continue;
            }
            '[' => {
                if state == 0 {
                    state = 1;
                }
                continue;
            }
            ']' if state <= 1 => return Some(()),
            ']' if state == 3 => state = 0,
            _ => {}
        }
        // Any other character: from 1 back to 0, from 3 back to 2.
        state &= !1;
    }
}

fn substitute(c: &mut Cursor) -> Result<(), String> {
    let delim = delimiter(c, "the `s` command")?;
    delimited(c, delim, true).ok_or("unterminated `s` command")?;
    delimited(c, delim, false).ok_or("unterminated `s` command")?;
    loop {
        c.skip_blanks();
        match c.peek() {
            Some('g' | 'p' | 'i' | 'I' | 'm' | 'M' | '0'..='9') => c.pos += 1,
            Some('e') => return Err("the `e` flag of `s` runs the pattern space as a shell command".into()),
            Some('w') => {
                return Err(
                    "the `w` flag of `s` writes to a file named in the script; the output comes back to you without it"
                        .into(),
                );
            }
            None | Some(';' | '}' | '#' | '\n') => return Ok(()),
            Some(other) => return Err(format!("unknown `s` flag `{other}`")),
        }
    }
}

/// After a command: blanks, then the end, `;`, `}`, a comment or a newline.
fn end_of_command(c: &mut Cursor, command: char) -> Result<(), String> {
    c.skip_blanks();
    match c.peek() {
        None | Some(';' | '}' | '#' | '\n') => Ok(()),
        Some(other) => Err(format!("unexpected `{other}` after the `{command}` command")),
    }
}

/// A label (`:a`, `b end`, `v 4.2`). GNU sed ends it at a blank, `;`, `}`, `#` or newline;
/// we stop there too and parse the rest as commands.
fn label(c: &mut Cursor) {
    c.skip_blanks();
    while !matches!(c.peek(), None | Some(' ' | '\t' | ';' | '}' | '#' | '\n')) {
        c.pos += 1;
    }
}

/// `a`, `i`, `c`: the text runs to the end of the line, a backslash escaping the next
/// character (a newline included). A backslash at the very end would continue the text
/// into the next `-e` expression, which we would then have to read as text too; refuse it.
fn text(c: &mut Cursor, command: char) -> Result<(), String> {
    let continued = || format!("the text of `{command}` continues past its expression (a trailing backslash)");
    c.skip_blanks();
    match c.next() {
        None => return Err(format!("the `{command}` command has no text")),
        Some('\n') => return Ok(()),
        // `a\text` (one-liner form) or `a\` + newline + text.
        Some('\\') => {
            c.next().ok_or_else(continued)?;
        }
        Some(_) => {}
    }
    loop {
        match c.next() {
            None | Some('\n') => return Ok(()),
            Some('\\') => {
                c.next().ok_or_else(continued)?;
            }
            Some(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_scripts() {
        for script in [
            "s/a/b/g",
            "s/a/b/ g ; p",
            "s|/usr|/opt|",
            "s/[/]/X/g",
            "s/[]/]/X/",
            "s/[[:alpha:]/]/X/",
            "s/\\//x/",
            "s/a/\\n/2",
            "/foo/d",
            "\\%foo%Id",
            "2,5p",
            "0,/re/d",
            "1~2d",
            "$!N",
            "/a/,+2{p;d}",
            "/x/!{s/a/b/;}",
            ":a;N;$!ba;s/\\n/ /g",
            "1i header; e id",
            "$a\\footer",
            "y/abc/xyz/",
            "q5",
            "l 40",
            "# just a comment; e id",
            "=",
            "",
        ] {
            assert_eq!(check_script(script), Ok(()), "{script}");
        }
    }

    #[test]
    fn refuses_commands_that_run_read_or_write() {
        let table = [
            ("e id", "`e` command"),
            ("1e", "`e` command"),
            ("s/a/id/e", "`e` flag"),
            ("s/a/b/ge", "`e` flag"),
            ("w /tmp/x", "`w` command"),
            ("/x/W /tmp/x", "`W` command"),
            ("s/a/b/w /tmp/x", "`w` flag"),
            ("r /etc/passwd", "`r` command"),
            ("0r /etc/passwd", "`r` command"),
            ("R /etc/passwd", "`R` command"),
            ("s/[/]/x/;e id", "`e` command"),
            ("s/[]/]/x/;e id", "`e` command"),
            ("s/[[:alpha:]/]/x/;w /tmp/x", "`w` command"),
            ("s/a\\/b/c/;e id", "`e` command"),
            ("\\%x%e id", "`e` command"),
            ("1!{e id\n}", "`e` command"),
            ("b end;e id", "`e` command"),
            ("s/a/b/#x\ne", "`e` command"),
            ("a foo\nr x", "`r` command"),
            ("a foo\\\ne id\nw x", "`w` command"),
            ("a\\", "trailing backslash"),
            ("a foo\\", "trailing backslash"),
            ("s/a/b", "unterminated"),
            ("k", "unknown command `k`"),
            ("pe", "unexpected `e`"),
            ("s a b ", "cannot be the delimiter"),
        ];
        for (script, want) in table {
            let err = check_script(script).unwrap_err();
            assert!(err.contains(want), "{script}: {err}");
        }
    }

    #[test]
    fn options_and_files() {
        let args = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let plan = analyze("sed", true, &args(&["-n", "2p", "a.txt"])).unwrap();
        assert_eq!(plan.args[0], "--sandbox");
        assert_eq!(plan.files, vec![FileArg { path: "a.txt".into(), access: Access::Read }]);
        let plan = analyze("sed", false, &args(&["-i.bak", "-e", "s/a/b/", "a.txt", "b.txt"])).unwrap();
        assert!(plan.files.iter().all(|f| f.access == Access::Write) && plan.files.len() == 2);
        let table: &[(&[&str], &str)] = &[
            (&["-f", "x.sed", "a"], "`sed -f`"),
            (&["--in-place=/tmp/x", "p", "a"], "`/tmp/x`"),
            (&["--posix", "p"], "`sed --posix`"),
            (&["-e", "a\\", "-e", "e id", "x"], "trailing backslash"),
            (&["-e", "p", "-e", "e id"], "`e` command"),
            (&[], "no script"),
        ];
        for (list, want) in table {
            let err = analyze("sed", true, &args(list)).unwrap_err().to_string();
            assert!(err.contains(want), "{list:?}: {err}");
        }
    }
}
