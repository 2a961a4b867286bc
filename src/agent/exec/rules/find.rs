//! find: start points are files to read; the expression may only use tests and actions
//! that print. Anything that runs programs, deletes, writes files or follows symlinks is
//! refused, and so is any primary this table does not know.

use super::{Access, FileArg, Plan, RuleError};

/// Primaries without an argument (operators included).
const NULLARY: &[&str] = &[
    "-print",
    "-print0",
    "-ls",
    "-prune",
    "-quit",
    "-true",
    "-false",
    "-empty",
    "-readable",
    "-writable",
    "-executable",
    "-nouser",
    "-nogroup",
    "-depth",
    "-d",
    "-xdev",
    "-mount",
    "-noleaf",
    "-daystart",
    "-not",
    "-a",
    "-and",
    "-o",
    "-or",
    "!",
    "(",
    ")",
    ",",
    "-ignore_readdir_race",
    "-noignore_readdir_race",
    "-nowarn",
    "-warn",
];

/// Primaries with one argument that is not a file.
const UNARY: &[&str] = &[
    "-name",
    "-iname",
    "-path",
    "-ipath",
    "-wholename",
    "-iwholename",
    "-regex",
    "-iregex",
    "-lname",
    "-ilname",
    "-type",
    "-xtype",
    "-size",
    "-perm",
    "-user",
    "-group",
    "-uid",
    "-gid",
    "-links",
    "-inum",
    "-mtime",
    "-mmin",
    "-atime",
    "-amin",
    "-ctime",
    "-cmin",
    "-maxdepth",
    "-mindepth",
    "-regextype",
    "-printf",
    "-used",
    "-fstype",
    "-context",
];

/// Primaries whose argument is a file whose times or identity are compared.
const FILE_ARG: &[&str] = &["-newer", "-anewer", "-cnewer", "-samefile"];

const RUNS: &str = "runs a program for each file";
const WRITES: &str = "writes to a file named in the expression; the output comes back to you without it";
const FOLLOWS: &str = "follows symbolic links, which can lead outside the workspace";

const DENIED: &[(&str, &str)] = &[
    ("-exec", RUNS),
    ("-execdir", RUNS),
    ("-ok", RUNS),
    ("-okdir", RUNS),
    ("-delete", "deletes files"),
    ("-fprint", WRITES),
    ("-fprint0", WRITES),
    ("-fprintf", WRITES),
    ("-fls", WRITES),
    ("-follow", FOLLOWS),
    ("-files0-from", "reads the start points from a file, which the policy cannot check"),
];

fn forbidden(option: &str, why: &'static str) -> RuleError {
    RuleError::Forbidden { program: "find".into(), option: option.into(), why }
}

enum Primary {
    Nullary,
    Text,
    File,
    Denied(&'static str),
}

fn classify(primary: &str) -> Option<Primary> {
    if NULLARY.contains(&primary) {
        return Some(Primary::Nullary);
    }
    if UNARY.contains(&primary) {
        return Some(Primary::Text);
    }
    if FILE_ARG.contains(&primary) {
        return Some(Primary::File);
    }
    // `-newerXY` (X and Y among a, B, c, m, t): compares with a file, or a date when Y is `t`.
    if let Some(xy) = primary.strip_prefix("-newer")
        && xy.len() == 2
        && xy.bytes().all(|b| b"aBcmt".contains(&b))
    {
        return Some(if xy.ends_with('t') { Primary::Text } else { Primary::File });
    }
    DENIED.iter().find(|(d, _)| *d == primary).map(|(_, why)| Primary::Denied(why))
}

pub fn analyze(args: &[String]) -> Result<Plan, RuleError> {
    let mut files = Vec::new();
    let mut rest = args.iter().peekable();

    // Global options before the start points.
    while let Some(option) = rest.next_if(|a| matches!(a.as_str(), "-H" | "-P" | "-L" | "-D") || a.starts_with("-O")) {
        match option.as_str() {
            "-H" | "-P" | "-O0" | "-O1" | "-O2" | "-O3" => {}
            "-L" => return Err(forbidden("-L", FOLLOWS)),
            other => {
                return Err(RuleError::Unknown { program: "find".into(), option: other.into(), hint: String::new() });
            }
        }
    }
    // Start points: everything up to the first primary or operator.
    while let Some(start) = rest.next_if(|a| !a.starts_with('-') && !matches!(a.as_str(), "!" | "(" | ")" | ",")) {
        files.push(FileArg { path: start.clone(), access: Access::Read });
    }
    while let Some(primary) = rest.next() {
        let kind = classify(primary).ok_or_else(|| RuleError::Unknown {
            program: "find".into(),
            option: primary.clone(),
            hint: String::new(),
        })?;
        let operand = match kind {
            Primary::Nullary => continue,
            Primary::Denied(why) => return Err(forbidden(primary, why)),
            Primary::Text | Primary::File => rest
                .next()
                .ok_or_else(|| RuleError::MissingValue { program: "find".into(), option: primary.clone() })?,
        };
        if matches!(kind, Primary::File) {
            files.push(FileArg { path: operand.clone(), access: Access::Read });
        }
    }
    Ok(Plan { args: args.to_vec(), files })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(list: &[&str]) -> Result<Vec<String>, String> {
        let args: Vec<String> = list.iter().map(|s| s.to_string()).collect();
        analyze(&args).map(|p| p.files.into_iter().map(|f| f.path).collect()).map_err(|e| e.to_string())
    }

    #[test]
    fn finds_start_points_and_file_arguments() {
        let table: &[(&[&str], &[&str])] = &[
            (&["."], &["."]),
            (&[], &[]),
            (&["-H", "a", "b", "-name", "*.txt", "-type", "f", "-print"], &["a", "b"]),
            (&[".", "(", "-name", "x", "-o", "-name", "y", ")", "!", "-empty"], &["."]),
            (&[".", "-newer", "ref", "-maxdepth", "2"], &[".", "ref"]),
            (&[".", "-newermt", "2024-01-01"], &["."]),
            (&[".", "-newermm", "ref"], &[".", "ref"]),
            (&[".", "-printf", "%p\\n"], &["."]),
        ];
        for (list, want) in table {
            assert_eq!(run(list), Ok(want.iter().map(|s| s.to_string()).collect()), "{list:?}");
        }
    }

    #[test]
    fn refuses_actions_that_run_delete_write_or_follow() {
        let table: &[(&[&str], &str)] = &[
            (&[".", "-exec", "id", "{}", "+"], "`find -exec`"),
            (&[".", "-execdir", "id", ";"], "`find -execdir`"),
            (&[".", "-ok", "id", ";"], "`find -ok`"),
            (&[".", "-okdir", "id", ";"], "`find -okdir`"),
            (&[".", "-delete"], "`find -delete`"),
            (&[".", "-fprint", "/tmp/x"], "`find -fprint`"),
            (&[".", "-fprint0", "x"], "`find -fprint0`"),
            (&[".", "-fprintf", "x", "%p"], "`find -fprintf`"),
            (&[".", "-fls", "x"], "`find -fls`"),
            (&["-L", "."], "`find -L`"),
            (&[".", "-follow"], "`find -follow`"),
            (&["-D", "exec", "."], "`find -D`"),
            (&[".", "-name"], "needs a value"),
            (&[".", "-bogus"], "`find -bogus`"),
            (&[".", "-name", "x", "stray"], "`find stray`"),
        ];
        for (list, want) in table {
            let err = run(list).unwrap_err();
            assert!(err.contains(want), "{list:?}: {err}");
        }
    }
}
