//! Per-program argument rules: which options are allowed, which arguments name files, and
//! whether those files are read or written.
//!
//! Programs with a rule set fail closed: an option the rule does not know is refused.
//! Other programs get the conservative generic treatment (every argument may be a path).

mod awk;
mod find;
mod generic;
mod options;
mod sed;
mod simple;

use super::program::Program;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

/// An argument that names a file, as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileArg {
    pub path: String,
    pub access: Access,
}

/// The arguments to run (a rule may add hardening options such as sed's `--sandbox`) and
/// the files they name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub args: Vec<String>,
    pub files: Vec<FileArg>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error("`{program} {option}` is not allowed: it {why}")]
    Forbidden { program: String, option: String, why: &'static str },
    #[error("`{program} {option}`: this option is not known to the policy, and unknown options are refused{hint}")]
    Unknown { program: String, option: String, hint: String },
    #[error("`{program} {option}` needs a value")]
    MissingValue { program: String, option: String },
    #[error("`{program} {option}` takes no value")]
    UnexpectedValue { program: String, option: String },
    #[error("`{program} {option}` expects a number, not `{value}`")]
    NotANumber { program: String, option: String, value: String },
    #[error("`{program}` takes no operand `{operand}` here")]
    ExtraOperand { program: String, operand: String },
    #[error("`{program}` {what}: {why}")]
    Script { program: String, what: &'static str, why: String },
}

/// The rule set a program name has, if any.
enum Rules {
    Sed,
    Awk,
    Find,
    Simple(&'static simple::Simple),
}

fn rules_for(name: &str) -> Option<Rules> {
    match name {
        "sed" => Some(Rules::Sed),
        "awk" | "gawk" | "mawk" | "nawk" | "original-awk" => Some(Rules::Awk),
        "find" => Some(Rules::Find),
        _ => simple::rule(name).map(Rules::Simple),
    }
}

/// Whether `name` has a rule set of its own.
pub fn has_rule(name: &str) -> bool {
    rules_for(name).is_some()
}

pub fn analyze(program: &Program, args: &[String]) -> Result<Plan, RuleError> {
    let name = program.name.as_str();
    // The name decides first (`awk`), then the file behind it (`nawk -> gawk`).
    let rules = [name, program.canonical_name()].into_iter().find_map(rules_for);
    match rules {
        Some(Rules::Sed) => sed::analyze(name, program.canonical_name() == "sed", args),
        Some(Rules::Awk) => awk::analyze(name, program.canonical_name() == "gawk", args),
        Some(Rules::Find) => find::analyze(args),
        Some(Rules::Simple(rule)) => simple::analyze(name, rule, args),
        None => generic::analyze(name, args),
    }
}
