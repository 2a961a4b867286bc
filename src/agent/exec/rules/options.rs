//! A getopt-like parser driven by a table of the options a program may use.
//!
//! It mirrors GNU getopt closely enough to fail closed: options may follow operands
//! (permutation) unless the program stops at its first operand (awk), `--` ends options,
//! short options cluster (`-nr`) and take attached or separate values (`-k2`, `-k 2`).
//! Long options must be written in full: GNU accepts unambiguous abbreviations
//! (`--compress` for `--compress-program`), so an abbreviation could name an option the
//! table refuses; we refuse abbreviations instead of guessing.

use super::{Access, FileArg, RuleError};

/// What an option is.
#[derive(Debug, Clone, Copy)]
pub enum Arg {
    /// Takes no value.
    Flag,
    /// Takes a value, attached (`-n5`, `--lines=5`) or as the next argument.
    Val(Kind),
    /// Takes a value only when attached (`--color=auto`, `-i.bak`).
    Opt(Kind),
    /// Refused, with the reason.
    Deny(&'static str),
}

/// What an option's value is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Text,
    Num,
    Read,
    Write,
}

/// The options of one program.
#[derive(Debug)]
pub struct Spec {
    pub short: &'static [(char, Arg)],
    /// Long names without the leading dashes.
    pub long: &'static [(&'static str, Arg)],
    /// `-5` means a count (`head -5`, `grep -2`).
    pub digits: bool,
    /// GNU permutation: options may follow operands. awk stops at its first operand.
    pub permute: bool,
    /// Poppler style: `-layout`, one dash, no clusters, values always separate.
    pub single_dash: bool,
}

impl Spec {
    pub const fn gnu(short: &'static [(char, Arg)], long: &'static [(&'static str, Arg)]) -> Self {
        Self { short, long, digits: false, permute: true, single_dash: false }
    }

    pub const fn with_digits(mut self) -> Self {
        self.digits = true;
        self
    }
}

/// The options seen (as written, e.g. `-e` or `--expression`), the operands, and the files
/// named by option values.
#[derive(Debug, Default)]
pub struct Parsed {
    pub options: Vec<(String, Option<String>)>,
    pub operands: Vec<String>,
    pub files: Vec<FileArg>,
}

impl Parsed {
    pub fn has(&self, names: &[&str]) -> bool {
        self.options.iter().any(|(n, _)| names.contains(&n.as_str()))
    }

    pub fn values<'a>(&'a self, names: &'a [&str]) -> impl Iterator<Item = &'a str> {
        self.options.iter().filter(|(n, _)| names.contains(&n.as_str())).filter_map(|(_, v)| v.as_deref())
    }
}

/// Counts: `5`, `+2`, `-3`, `10K`, `1MB`.
fn is_number(value: &str) -> bool {
    let digits = value.strip_prefix(['+', '-']).unwrap_or(value);
    let end = digits.find(|c: char| !c.is_ascii_digit()).unwrap_or(digits.len());
    end > 0 && digits[end..].len() <= 3 && digits[end..].chars().all(|c| c.is_ascii_alphabetic())
}

struct Parser<'a> {
    program: &'a str,
    parsed: Parsed,
}

impl Parser<'_> {
    fn forbidden(&self, option: &str, why: &'static str) -> RuleError {
        RuleError::Forbidden { program: self.program.into(), option: option.into(), why }
    }

    fn record(&mut self, option: &str, kind: Kind, value: String) -> Result<(), RuleError> {
        match kind {
            Kind::Num if !is_number(&value) => {
                return Err(RuleError::NotANumber { program: self.program.into(), option: option.into(), value });
            }
            // `-` is standard input or output, not a file.
            Kind::Read | Kind::Write if value != "-" => {
                let access = if kind == Kind::Write { Access::Write } else { Access::Read };
                self.parsed.files.push(FileArg { path: value.clone(), access });
            }
            _ => {}
        }
        self.parsed.options.push((option.into(), Some(value)));
        Ok(())
    }

    /// Apply one option. `attached` is a value written in the same argument.
    fn apply<'s>(
        &mut self,
        option: &str,
        arg: Arg,
        attached: Option<&str>,
        rest: &mut impl Iterator<Item = &'s String>,
    ) -> Result<(), RuleError> {
        match arg {
            Arg::Deny(why) => Err(self.forbidden(option, why)),
            Arg::Flag => {
                if attached.is_some() {
                    return Err(RuleError::UnexpectedValue { program: self.program.into(), option: option.into() });
                }
                self.parsed.options.push((option.into(), None));
                Ok(())
            }
            Arg::Opt(kind) => match attached {
                Some(v) => self.record(option, kind, v.into()),
                None => {
                    self.parsed.options.push((option.into(), None));
                    Ok(())
                }
            },
            Arg::Val(kind) => {
                let value = match attached {
                    Some(v) => v.to_string(),
                    None => rest.next().cloned().ok_or_else(|| RuleError::MissingValue {
                        program: self.program.into(),
                        option: option.into(),
                    })?,
                };
                self.record(option, kind, value)
            }
        }
    }
}

fn unknown(program: &str, option: &str, spec: &Spec, long_name: Option<&str>) -> RuleError {
    let hint = long_name
        .filter(|n| !n.is_empty())
        .and_then(|n| spec.long.iter().find(|(full, _)| full.starts_with(n)))
        .map(|(full, _)| format!(" (abbreviations are refused; the full name is `--{full}`)"))
        .unwrap_or_default();
    RuleError::Unknown { program: program.into(), option: option.into(), hint }
}

pub fn parse(program: &str, spec: &Spec, args: &[String]) -> Result<Parsed, RuleError> {
    let mut p = Parser { program, parsed: Parsed::default() };
    let mut rest = args.iter();
    let mut operands_only = false;
    while let Some(arg) = rest.next() {
        if operands_only || arg == "-" || !arg.starts_with('-') {
            p.parsed.operands.push(arg.clone());
            operands_only |= !spec.permute;
            continue;
        }
        if arg == "--" && !spec.single_dash {
            operands_only = true;
            continue;
        }
        if spec.single_dash {
            let found = spec.long.iter().find(|(n, _)| *n == &arg[1..]);
            let (_, rule) = found.ok_or_else(|| unknown(program, arg, spec, None))?;
            p.apply(arg, *rule, None, &mut rest)?;
        } else if let Some(long) = arg.strip_prefix("--") {
            let (name, attached) = match long.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (long, None),
            };
            let option = format!("--{name}");
            let rule = match spec.long.iter().find(|(n, _)| *n == name) {
                Some((_, rule)) => *rule,
                // Every GNU program has these two, and they only print.
                None if name == "help" || name == "version" => Arg::Flag,
                None => return Err(unknown(program, &option, spec, Some(name))),
            };
            p.apply(&option, rule, attached, &mut rest)?;
        } else {
            let body = &arg[1..];
            if spec.digits && body.starts_with(|c: char| c.is_ascii_digit()) {
                // `-5` is a count; the obsolete `-5f` / `-5c` forms mean other things per
                // program (tail's `f` is follow), so only pure digits are accepted.
                if !body.chars().all(|c| c.is_ascii_digit()) {
                    return Err(p.forbidden(
                        arg,
                        "mixes a count with other options (an obsolete form); write them separately, e.g. `-n 5`",
                    ));
                }
                p.parsed.options.push((arg.clone(), None));
                continue;
            }
            for (i, c) in body.char_indices() {
                let option = format!("-{c}");
                let rule = spec
                    .short
                    .iter()
                    .find(|(s, _)| *s == c)
                    .map(|(_, r)| *r)
                    .ok_or_else(|| unknown(program, &option, spec, None))?;
                let tail = &body[i + c.len_utf8()..];
                match rule {
                    Arg::Flag | Arg::Deny(_) => p.apply(&option, rule, None, &mut rest)?,
                    // A value option ends the cluster: the rest of it is the value.
                    Arg::Val(_) | Arg::Opt(_) => {
                        p.apply(&option, rule, Some(tail).filter(|t| !t.is_empty()), &mut rest)?;
                        break;
                    }
                }
            }
        }
    }
    Ok(p.parsed)
}

#[cfg(test)]
mod tests {
    use super::Arg::*;
    use super::Kind::*;
    use super::*;

    const SPEC: Spec = Spec::gnu(
        &[('n', Val(Num)), ('r', Flag), ('o', Val(Write)), ('x', Deny("is bad")), ('i', Opt(Text))],
        &[
            ("lines", Val(Num)),
            ("output", Val(Write)),
            ("reverse", Flag),
            ("color", Opt(Text)),
            ("compress-program", Deny("runs a program")),
        ],
    )
    .with_digits();

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_gnu_style() {
        let p = parse(
            "t",
            &SPEC,
            &args(&["-rn5", "a", "--lines", "7", "-o", "out", "b", "--color=auto", "-i.bak", "-3", "--", "-r"]),
        )
        .unwrap();
        assert_eq!(p.operands, args(&["a", "b", "-r"]));
        assert_eq!(p.values(&["-n", "--lines"]).collect::<Vec<_>>(), ["5", "7"]);
        assert_eq!(p.files, vec![FileArg { path: "out".into(), access: Access::Write }]);
        assert!(p.has(&["-r"]) && p.has(&["-3"]) && p.has(&["--color"]));
        assert_eq!(p.values(&["-i"]).collect::<Vec<_>>(), [".bak"]);
    }

    #[test]
    fn fails_closed() {
        let table: &[(&[&str], &str)] = &[
            (&["-x"], "`t -x` is not allowed: it is bad"),
            (&["-rx"], "`t -x`"),
            (&["-q"], "`t -q`: this option is not known"),
            (&["--compress=sh"], "the full name is `--compress-program`"),
            (&["--compress-program=sh"], "`t --compress-program` is not allowed: it runs a program"),
            (&["--reverse=yes"], "takes no value"),
            (&["-n"], "needs a value"),
            (&["-n", "x"], "expects a number, not `x`"),
            (&["-5r"], "`t -5r`"),
        ];
        for (list, want) in table {
            let err = parse("t", &SPEC, &args(list)).unwrap_err().to_string();
            assert!(err.contains(want), "{list:?}: {err}");
        }
    }
}
