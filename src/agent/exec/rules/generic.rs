//! Programs without a rule set (only reachable under `blocklist` and `full`, or when an
//! admin allowlists them): every argument that could name a file is checked as one.
//!
//! Conservative on purpose: every non-option argument is treated as a path (`echo /etc`
//! is refused), and so is the value of an option (`--output=/tmp/x`, `-o/tmp/x`). Paths
//! only fail when they leave the workspace, so ordinary words pass.

use super::{Access, FileArg, Plan, RuleError};

pub fn analyze(program: &str, args: &[String]) -> Result<Plan, RuleError> {
    let mut files = Vec::new();
    let mut options_done = false;
    for arg in args {
        if arg == "-" {
            continue;
        }
        if arg == "--" && !options_done {
            options_done = true;
            continue;
        }
        if options_done || !arg.starts_with('-') {
            files.push(FileArg { path: arg.clone(), access: Access::Read });
            continue;
        }
        if arg.starts_with("--files0-from") {
            return Err(RuleError::Forbidden {
                program: program.into(),
                option: "--files0-from".into(),
                why: "reads the names of files to open from a file, which the policy cannot check",
            });
        }
        // `--name=value`: the value; `-oVALUE`: what follows the option letter.
        let value = match arg.split_once('=') {
            Some((_, value)) => Some(value),
            None if !arg.starts_with("--") => arg.get(2..).filter(|v| !v.is_empty()),
            None => None,
        };
        if let Some(value) = value {
            files.push(FileArg { path: value.into(), access: Access::Read });
        }
    }
    Ok(Plan { args: args.to_vec(), files })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn treats_words_and_option_values_as_paths() {
        let args: Vec<String> = ["-la", "--output=/tmp/x", "-o/etc/y", "word", "--", "-z", "-"].iter().map(|s| s.to_string()).collect();
        let plan = analyze("prog", &args).unwrap();
        let paths: Vec<&str> = plan.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["a", "/tmp/x", "/etc/y", "word", "-z"]);
        let err = analyze("du", &["--files0-from=list".to_string()]).unwrap_err().to_string();
        assert!(err.contains("`du --files0-from`"), "{err}");
    }
}
