//! awk (and gawk, mawk): only `-F` and `-v`, and a scan of the program text for anything
//! that runs commands, reads files the policy did not see, or writes files.
//!
//! We do not parse awk. Whether a `/` starts a regex or divides depends on the grammar (and
//! differs between awks), and a scanner that skips strings and regexes can be desynchronised
//! to hide code inside what it skipped. So the whole text is scanned as if it were code:
//! refusing a `|` inside a string or a regex is a false positive we accept.

use super::options::Arg::{Deny, Val};
use super::options::Kind::Text;
use super::options::{self, Spec};
use super::{Access, FileArg, Plan, RuleError};

const FROM_FILE: &str = "reads the program from a file the policy cannot see; put the program on the command line";

const SPEC: Spec = Spec {
    short: &[
        ('F', Val(Text)),
        ('v', Val(Text)),
        ('f', Deny(FROM_FILE)),
        ('E', Deny(FROM_FILE)),
        ('W', Deny("passes implementation options (mawk's `-W exec` reads the program from a file)")),
    ],
    long: &[],
    digits: false,
    // awk stops at its first operand (the program); everything after is a file or `var=value`.
    permute: false,
    single_dash: false,
};

/// Variables whose assignment changes what awk reads or reaches.
const SPECIAL: &[(&str, &str)] = &[
    ("ARGV", "`ARGV` changes which files awk reads"),
    ("ARGC", "`ARGC` changes which files awk reads"),
    ("SYMTAB", "gawk's `SYMTAB` reaches variables indirectly"),
    ("FUNCTAB", "gawk's `FUNCTAB` reaches functions indirectly"),
];

pub fn analyze(program: &str, gawk: bool, args: &[String]) -> Result<Plan, RuleError> {
    let error = |why: String| RuleError::Script { program: program.into(), what: "program", why };
    let parsed = options::parse(program, &SPEC, args)?;
    for assignment in parsed.values(&["-v"]) {
        check_assignment(assignment).map_err(error)?;
    }
    let mut operands = parsed.operands.iter();
    let text = operands.next().ok_or_else(|| error("no program given".into()))?;
    check_program(text).map_err(error)?;
    let mut files = Vec::new();
    for operand in operands {
        // `name=value` operands are assignments, made when awk reaches them.
        if assignment_name(operand).is_some() {
            check_assignment(operand).map_err(error)?;
        } else if operand != "-" {
            files.push(FileArg { path: operand.clone(), access: Access::Read });
        }
    }
    let mut args = args.to_vec();
    if gawk {
        // gawk's own sandbox: no system(), no redirections, no extensions.
        args.insert(0, "--sandbox".into());
    }
    Ok(Plan { args, files })
}

fn assignment_name(text: &str) -> Option<&str> {
    let (name, _) = text.split_once('=')?;
    let mut chars = name.chars();
    let first = chars.next()?;
    ((first == '_' || first.is_ascii_alphabetic()) && chars.all(|c| c == '_' || c.is_ascii_alphanumeric()))
        .then_some(name)
}

fn check_assignment(text: &str) -> Result<(), String> {
    match assignment_name(text) {
        None => Err(format!("`{text}` is not a `name=value` assignment")),
        Some(name) => match SPECIAL.iter().find(|(n, _)| *n == name) {
            Some((_, why)) => Err(why.to_string()),
            None => Ok(()),
        },
    }
}

fn is_word_char(c: char) -> bool {
    c == '_' || c.is_ascii_alphanumeric()
}

/// Byte offsets where `word` occurs as an identifier. A digit may come before it: awk
/// lexes `1system` as the number 1 followed by `system`.
fn occurrences<'a>(text: &'a str, word: &'a str) -> impl Iterator<Item = usize> + 'a {
    text.match_indices(word).map(|(i, _)| i).filter(move |&i| {
        let before = text[..i].chars().next_back();
        let after = text[i + word.len()..].chars().next();
        !before.is_some_and(|c| c == '_' || c.is_ascii_alphabetic()) && !after.is_some_and(is_word_char)
    })
}

/// Check an awk program text. Errors are the reason.
pub fn check_program(text: &str) -> Result<(), String> {
    if occurrences(text, "system").next().is_some() {
        return Err("`system` runs a shell command".into());
    }
    if text.contains('@') {
        return Err("`@` starts gawk directives (`@load`, `@include`) and indirect function calls".into());
    }
    for (name, why) in SPECIAL {
        if occurrences(text, name).next().is_some() {
            return Err(why.to_string());
        }
    }
    // `||` is "or"; any other run of `|` (`|`, `|&`) is a pipe to or from a command.
    let mut runs = text.split(|c| c != '|').filter(|run| !run.is_empty());
    if runs.any(|run| run.len() != 2) {
        return Err("`|` pipes to or from a shell command (for alternatives in a regex, use `/a/ || /b/`)".into());
    }
    if let Some(at) = occurrences(text, "getline").next()
        && text[at..].contains('<')
    {
        return Err("`getline` with `<` reads a file named in the program".into());
    }
    let print = ["print", "printf"].iter().filter_map(|w| occurrences(text, w).next()).min();
    if let Some(at) = print
        && text[at..].contains('>')
    {
        return Err(
            "`>` after `print` redirects output into a file; to compare, put the condition in a pattern (`$3 > 100 { print }`)".into(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_programs() {
        for program in [
            "{print $1}",
            "$3 > 100 {print $1}",
            "NR==2",
            "BEGIN{FS=\",\"} {sum += $2} END {print sum}",
            "/a/ || /b/ {print}",
            "{printf \"%s\\n\", $2}",
            "{x = sprintf(\"%d\", $1)} $1 >= 3",
            "NR==1{getline; print}",
            "length($0) > 72",
            "{print mysystem}",
            "{print ENVIRON[\"HOME\"]}",
        ] {
            assert_eq!(check_program(program), Ok(()), "{program}");
        }
    }

    #[test]
    fn refuses_commands_and_file_access() {
        let table = [
            ("BEGIN{system(\"id\")}", "`system`"),
            ("BEGIN{system (\"id\")}", "`system`"),
            ("BEGIN{1system(\"id\")}", "`system`"),
            ("BEGIN{print \"x\" | \"sh\"}", "`|`"),
            ("BEGIN{\"id\" | getline x; print x}", "`|`"),
            ("BEGIN{print \"x\" |& \"cat\"}", "`|`"),
            ("/a|b/", "`|`"),
            ("BEGIN{while ((getline l < \"/etc/passwd\") > 0) print l}", "`getline`"),
            ("{getline x<\"f\"}", "`getline`"),
            ("{print > \"/tmp/x\"}", "`>`"),
            ("{print >> \"out\"}", "`>`"),
            ("{printf(\"%s\", $1) > \"out\"}", "`>`"),
            ("@load \"readdir\"", "`@`"),
            ("BEGIN{f=\"system\"; @f(\"id\")}", "`system`"),
            ("BEGIN{ARGV[1]=\"/etc/passwd\"; ARGC=2} {print}", "`ARGV`"),
            ("BEGIN{ARGC=3}", "`ARGC`"),
            ("BEGIN{SYMTAB[\"x\"]}", "`SYMTAB`"),
        ];
        for (program, want) in table {
            let err = check_program(program).unwrap_err();
            assert!(err.contains(want), "{program}: {err}");
        }
    }

    #[test]
    fn options_operands_and_hardening() {
        let args = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let plan = analyze("awk", false, &args(&["-F,", "-v", "x=1", "{print $x}", "a.csv", "FS=;", "-"])).unwrap();
        assert_eq!(plan.files, vec![FileArg { path: "a.csv".into(), access: Access::Read }]);
        assert_eq!(analyze("gawk", true, &args(&["{print}"])).unwrap().args[0], "--sandbox");
        let table: &[(&[&str], &str)] = &[
            (&["-f", "prog.awk", "a"], "`awk -f`"),
            (&["-E", "prog.awk"], "`awk -E`"),
            (&["-W", "exec", "prog.awk"], "`awk -W`"),
            (&["--exec=prog.awk"], "`awk --exec`"),
            (&["-v", "ARGC=3", "{print}"], "`ARGC`"),
            (&["{print}", "ARGC=3", "a"], "`ARGC`"),
            (&[], "no program"),
        ];
        for (list, want) in table {
            let err = analyze("awk", false, &args(list)).unwrap_err().to_string();
            assert!(err.contains(want), "{list:?}: {err}");
        }
    }
}
