//! Programs without a rule set (only reachable under `blocklist` and `full`, or when an
//! admin allowlists them): every argument that could name a file is checked as one.
//!
//! Conservative on purpose, because nothing is known of the program's options:
//! - every non-option argument is a path (`echo /etc` is refused);
//! - in a cluster of short options any letter may take the rest as its value
//!   (`date -uf/etc/passwd` is `-u -f /etc/passwd`; `cp -at/out` is `-a -t /out`), so every
//!   tail of the cluster is a path;
//! - a long option's value is a path (`--output=/tmp/x`), and GNU programs accept any
//!   unambiguous abbreviation of a long name, so a forbidden option is refused under every
//!   prefix of its name (`--files0-fr`).
//!
//! Paths only fail when they leave `files/`, so ordinary words pass.

use super::{Access, FileArg, Plan, RuleError};

/// Long options that no path check can make safe, and why.
const FORBIDDEN_LONG: &[(&str, &str)] =
    &[("files0-from", "reads the names of files to open from a file, which the policy cannot check")];

pub fn analyze(program: &str, args: &[String]) -> Result<Plan, RuleError> {
    let mut files = Vec::new();
    let mut options_done = false;
    let mut path = |path: &str| files.push(FileArg { path: path.into(), access: Access::Read });
    for arg in args {
        if arg == "-" {
            continue;
        }
        if arg == "--" && !options_done {
            options_done = true;
            continue;
        }
        if options_done || !arg.starts_with('-') {
            path(arg);
        } else if let Some(long) = arg.strip_prefix("--") {
            let (name, value) = long.split_once('=').map_or((long, None), |(n, v)| (n, Some(v)));
            if let Some((option, why)) =
                FORBIDDEN_LONG.iter().find(|(option, _)| !name.is_empty() && option.starts_with(name))
            {
                return Err(RuleError::Forbidden { program: program.into(), option: format!("--{option}"), why });
            }
            value.into_iter().for_each(&mut path);
        } else {
            // `-abc/x`: `bc/x`, `c/x` and `/x` may each be an option's value.
            arg.char_indices().skip(2).for_each(|(at, _)| path(&arg[at..]));
        }
    }
    Ok(Plan { args: args.to_vec(), files })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(args: &[&str]) -> Vec<String> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        analyze("prog", &args).unwrap().files.into_iter().map(|f| f.path).collect()
    }

    #[test]
    fn treats_words_and_option_values_as_paths() {
        assert_eq!(
            paths(&["-la", "--output=/tmp/x", "-o/etc/y", "word", "--", "-z", "-"]),
            ["a", "/tmp/x", "/etc/y", "etc/y", "tc/y", "c/y", "/y", "y", "word", "-z"]
        );
    }

    #[test]
    fn every_tail_of_a_short_option_cluster_is_a_path() {
        let tails = paths(&["-uf/etc/passwd"]);
        assert_eq!(tails[..3], ["f/etc/passwd", "/etc/passwd", "etc/passwd"]);
        assert_eq!(tails.len(), "f/etc/passwd".len());
        assert!(paths(&["-at/outside", "a.txt"]).contains(&"/outside".to_string()));
        assert!(paths(&["-é/x"]).contains(&"/x".to_string()), "multi-byte letters split on characters");
    }

    #[test]
    fn a_forbidden_long_option_is_refused_under_every_abbreviation() {
        for arg in ["--files0-from=list", "--files0-from", "--files0-fr=LIST", "--files0", "--fi", "--f"] {
            let err = analyze("du", &[arg.to_string()]).unwrap_err().to_string();
            assert!(err.contains("`du --files0-from`"), "{arg}: {err}");
        }
        assert!(analyze("du", &["--files=x".to_string()]).is_err(), "a prefix with a value");
        assert!(analyze("du", &["--summarize".to_string()]).is_ok());
    }
}
