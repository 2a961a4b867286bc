//! Table-driven rules for programs whose danger is all in their options and operands:
//! cat, head, tail, grep, wc, ls, sort, uniq, cut, tr, ln, pdftotext.

use super::options::Arg::{Deny, Flag, Opt, Val};
use super::options::Kind::{Num, Read, Text, Write};
use super::options::{self, Spec};
use super::{Access, FileArg, Plan, RuleError};

/// What a program's operands are.
#[derive(Debug, Clone, Copy)]
pub enum Operands {
    /// Files it reads.
    Read,
    /// A pattern, then files (grep), unless the pattern came from `-e`/`-f`.
    Pattern,
    /// Not files at all (tr).
    Text,
    /// `[INPUT [OUTPUT]]` (uniq).
    InOut,
    /// Files it creates or changes (ln).
    Write,
    /// `PDF [OUTPUT]`, OUTPUT defaulting to the PDF's name with `.txt`, `.html` (with
    /// `-htmlmeta`, `-bbox`, `-bbox-layout`) or `.tsv` (pdftotext).
    Pdf,
}

#[derive(Debug)]
pub struct Simple {
    pub spec: Spec,
    pub operands: Operands,
}

const FOLLOW: &str = "follows the file forever, which only ends at the timeout";

static CAT: Simple = Simple {
    spec: Spec::gnu(
        &[
            ('A', Flag),
            ('b', Flag),
            ('e', Flag),
            ('E', Flag),
            ('n', Flag),
            ('s', Flag),
            ('t', Flag),
            ('T', Flag),
            ('u', Flag),
            ('v', Flag),
        ],
        &[
            ("show-all", Flag),
            ("number-nonblank", Flag),
            ("show-ends", Flag),
            ("number", Flag),
            ("squeeze-blank", Flag),
            ("show-tabs", Flag),
            ("show-nonprinting", Flag),
        ],
    ),
    operands: Operands::Read,
};

static HEAD: Simple = Simple {
    spec: Spec::gnu(
        &[('c', Val(Num)), ('n', Val(Num)), ('q', Flag), ('v', Flag), ('z', Flag)],
        &[
            ("bytes", Val(Num)),
            ("lines", Val(Num)),
            ("quiet", Flag),
            ("silent", Flag),
            ("verbose", Flag),
            ("zero-terminated", Flag),
        ],
    )
    .with_digits(),
    operands: Operands::Read,
};

static TAIL: Simple = Simple {
    spec: Spec::gnu(
        &[
            ('c', Val(Num)),
            ('n', Val(Num)),
            ('q', Flag),
            ('v', Flag),
            ('z', Flag),
            ('f', Deny(FOLLOW)),
            ('F', Deny(FOLLOW)),
            ('s', Deny("only matters when following, which is refused")),
        ],
        &[
            ("bytes", Val(Num)),
            ("lines", Val(Num)),
            ("quiet", Flag),
            ("silent", Flag),
            ("verbose", Flag),
            ("zero-terminated", Flag),
            ("follow", Deny(FOLLOW)),
            ("retry", Deny(FOLLOW)),
            ("pid", Deny("only matters when following, which is refused")),
            ("sleep-interval", Deny("only matters when following, which is refused")),
            ("max-unchanged-stats", Deny("only matters when following, which is refused")),
        ],
    )
    .with_digits(),
    operands: Operands::Read,
};

static GREP: Simple = Simple {
    spec: Spec::gnu(
        &[
            ('E', Flag),
            ('F', Flag),
            ('G', Flag),
            ('P', Flag),
            ('i', Flag),
            ('y', Flag),
            ('v', Flag),
            ('w', Flag),
            ('x', Flag),
            ('c', Flag),
            ('L', Flag),
            ('l', Flag),
            ('o', Flag),
            ('q', Flag),
            ('s', Flag),
            ('b', Flag),
            ('H', Flag),
            ('h', Flag),
            ('n', Flag),
            ('T', Flag),
            ('Z', Flag),
            ('z', Flag),
            ('a', Flag),
            ('I', Flag),
            ('r', Flag),
            ('U', Flag),
            ('V', Flag),
            ('e', Val(Text)),
            ('f', Val(Read)),
            ('m', Val(Num)),
            ('A', Val(Num)),
            ('B', Val(Num)),
            ('C', Val(Num)),
            ('d', Val(Text)),
            ('D', Val(Text)),
            ('R', Deny("follows every symbolic link while recursing, which can lead outside the workspace; use `-r`")),
        ],
        &[
            ("extended-regexp", Flag),
            ("fixed-strings", Flag),
            ("basic-regexp", Flag),
            ("perl-regexp", Flag),
            ("ignore-case", Flag),
            ("no-ignore-case", Flag),
            ("invert-match", Flag),
            ("word-regexp", Flag),
            ("line-regexp", Flag),
            ("count", Flag),
            ("files-without-match", Flag),
            ("files-with-matches", Flag),
            ("only-matching", Flag),
            ("quiet", Flag),
            ("silent", Flag),
            ("no-messages", Flag),
            ("byte-offset", Flag),
            ("with-filename", Flag),
            ("no-filename", Flag),
            ("line-number", Flag),
            ("initial-tab", Flag),
            ("null", Flag),
            ("null-data", Flag),
            ("text", Flag),
            ("recursive", Flag),
            ("binary", Flag),
            ("line-buffered", Flag),
            ("no-group-separator", Flag),
            ("color", Opt(Text)),
            ("colour", Opt(Text)),
            ("regexp", Val(Text)),
            ("file", Val(Read)),
            ("max-count", Val(Num)),
            ("after-context", Val(Num)),
            ("before-context", Val(Num)),
            ("context", Val(Num)),
            ("label", Val(Text)),
            ("include", Val(Text)),
            ("exclude", Val(Text)),
            ("exclude-dir", Val(Text)),
            ("exclude-from", Val(Read)),
            ("binary-files", Val(Text)),
            ("devices", Val(Text)),
            ("directories", Val(Text)),
            ("group-separator", Val(Text)),
            (
                "dereference-recursive",
                Deny("follows every symbolic link while recursing, which can lead outside the workspace; use `-r`"),
            ),
        ],
    )
    .with_digits(),
    operands: Operands::Pattern,
};

const FILES0: &str = "reads the names of files to open from a file, which the policy cannot check";

static WC: Simple = Simple {
    spec: Spec::gnu(
        &[('c', Flag), ('m', Flag), ('l', Flag), ('w', Flag), ('L', Flag)],
        &[
            ("bytes", Flag),
            ("chars", Flag),
            ("lines", Flag),
            ("words", Flag),
            ("max-line-length", Flag),
            ("total", Val(Text)),
            ("files0-from", Deny(FILES0)),
        ],
    ),
    operands: Operands::Read,
};

static LS: Simple = Simple {
    spec: Spec::gnu(
        &[
            ('a', Flag),
            ('A', Flag),
            ('b', Flag),
            ('B', Flag),
            ('c', Flag),
            ('C', Flag),
            ('d', Flag),
            ('D', Flag),
            ('f', Flag),
            ('F', Flag),
            ('g', Flag),
            ('G', Flag),
            ('h', Flag),
            ('H', Flag),
            ('i', Flag),
            ('k', Flag),
            ('l', Flag),
            ('m', Flag),
            ('n', Flag),
            ('N', Flag),
            ('o', Flag),
            ('p', Flag),
            ('q', Flag),
            ('Q', Flag),
            ('r', Flag),
            ('R', Flag),
            ('s', Flag),
            ('S', Flag),
            ('t', Flag),
            ('u', Flag),
            ('U', Flag),
            ('v', Flag),
            ('x', Flag),
            ('X', Flag),
            ('Z', Flag),
            ('1', Flag),
            ('T', Val(Num)),
            ('w', Val(Num)),
            ('I', Val(Text)),
            ('L', Deny("follows symbolic links, which can lead outside the workspace")),
        ],
        &[
            ("all", Flag),
            ("almost-all", Flag),
            ("author", Flag),
            ("escape", Flag),
            ("ignore-backups", Flag),
            ("directory", Flag),
            ("dired", Flag),
            ("file-type", Flag),
            ("full-time", Flag),
            ("group-directories-first", Flag),
            ("no-group", Flag),
            ("human-readable", Flag),
            ("si", Flag),
            ("dereference-command-line", Flag),
            ("dereference-command-line-symlink-to-dir", Flag),
            ("inode", Flag),
            ("kibibytes", Flag),
            ("literal", Flag),
            ("numeric-uid-gid", Flag),
            ("hide-control-chars", Flag),
            ("show-control-chars", Flag),
            ("quote-name", Flag),
            ("reverse", Flag),
            ("recursive", Flag),
            ("size", Flag),
            ("context", Flag),
            ("zero", Flag),
            ("color", Opt(Text)),
            ("classify", Opt(Text)),
            ("hyperlink", Opt(Text)),
            ("block-size", Val(Text)),
            ("format", Val(Text)),
            ("hide", Val(Text)),
            ("indicator-style", Val(Text)),
            ("ignore", Val(Text)),
            ("quoting-style", Val(Text)),
            ("sort", Val(Text)),
            ("time", Val(Text)),
            ("time-style", Val(Text)),
            ("tabsize", Val(Num)),
            ("width", Val(Num)),
            ("dereference", Deny("follows symbolic links, which can lead outside the workspace")),
        ],
    ),
    operands: Operands::Read,
};

static SORT: Simple = Simple {
    spec: Spec::gnu(
        &[
            ('b', Flag),
            ('d', Flag),
            ('f', Flag),
            ('g', Flag),
            ('h', Flag),
            ('i', Flag),
            ('M', Flag),
            ('n', Flag),
            ('R', Flag),
            ('r', Flag),
            ('V', Flag),
            ('c', Flag),
            ('C', Flag),
            ('m', Flag),
            ('s', Flag),
            ('u', Flag),
            ('z', Flag),
            ('k', Val(Text)),
            ('t', Val(Text)),
            ('S', Val(Text)),
            ('o', Val(Write)),
            ('T', Deny("puts temporary files in another directory")),
        ],
        &[
            ("ignore-leading-blanks", Flag),
            ("dictionary-order", Flag),
            ("ignore-case", Flag),
            ("general-numeric-sort", Flag),
            ("ignore-nonprinting", Flag),
            ("month-sort", Flag),
            ("human-numeric-sort", Flag),
            ("numeric-sort", Flag),
            ("random-sort", Flag),
            ("reverse", Flag),
            ("version-sort", Flag),
            ("merge", Flag),
            ("stable", Flag),
            ("unique", Flag),
            ("zero-terminated", Flag),
            ("debug", Flag),
            ("check", Opt(Text)),
            ("sort", Val(Text)),
            ("key", Val(Text)),
            ("field-separator", Val(Text)),
            ("buffer-size", Val(Text)),
            ("parallel", Val(Num)),
            ("batch-size", Val(Num)),
            ("random-source", Val(Read)),
            ("output", Val(Write)),
            ("compress-program", Deny("runs another program to compress temporary files")),
            ("files0-from", Deny(FILES0)),
            ("temporary-directory", Deny("puts temporary files in another directory")),
        ],
    ),
    operands: Operands::Read,
};

static UNIQ: Simple = Simple {
    spec: Spec::gnu(
        &[
            ('c', Flag),
            ('d', Flag),
            ('D', Flag),
            ('i', Flag),
            ('u', Flag),
            ('z', Flag),
            ('f', Val(Num)),
            ('s', Val(Num)),
            ('w', Val(Num)),
        ],
        &[
            ("count", Flag),
            ("repeated", Flag),
            ("ignore-case", Flag),
            ("unique", Flag),
            ("zero-terminated", Flag),
            ("all-repeated", Opt(Text)),
            ("group", Opt(Text)),
            ("skip-fields", Val(Num)),
            ("skip-chars", Val(Num)),
            ("check-chars", Val(Num)),
        ],
    )
    .with_digits(),
    operands: Operands::InOut,
};

static CUT: Simple = Simple {
    spec: Spec::gnu(
        &[
            ('b', Val(Text)),
            ('c', Val(Text)),
            ('f', Val(Text)),
            ('d', Val(Text)),
            ('n', Flag),
            ('s', Flag),
            ('z', Flag),
        ],
        &[
            ("bytes", Val(Text)),
            ("characters", Val(Text)),
            ("fields", Val(Text)),
            ("delimiter", Val(Text)),
            ("output-delimiter", Val(Text)),
            ("complement", Flag),
            ("only-delimited", Flag),
            ("zero-terminated", Flag),
        ],
    ),
    operands: Operands::Read,
};

static TR: Simple = Simple {
    spec: Spec::gnu(
        &[('c', Flag), ('C', Flag), ('d', Flag), ('s', Flag), ('t', Flag)],
        &[("complement", Flag), ("delete", Flag), ("squeeze-repeats", Flag), ("truncate-set1", Flag)],
    ),
    operands: Operands::Text,
};

const SYMBOLIC: &str = "makes a symbolic link, which could point outside the workspace; use a hard link or `cp`";

static LN: Simple = Simple {
    spec: Spec::gnu(
        &[
            ('b', Flag),
            ('d', Flag),
            ('F', Flag),
            ('f', Flag),
            ('i', Flag),
            ('L', Flag),
            ('n', Flag),
            ('P', Flag),
            ('T', Flag),
            ('v', Flag),
            ('S', Val(Text)),
            ('t', Val(Write)),
            ('s', Deny(SYMBOLIC)),
            ('r', Deny(SYMBOLIC)),
        ],
        &[
            ("directory", Flag),
            ("force", Flag),
            ("interactive", Flag),
            ("logical", Flag),
            ("no-dereference", Flag),
            ("physical", Flag),
            ("no-target-directory", Flag),
            ("verbose", Flag),
            ("backup", Opt(Text)),
            ("suffix", Val(Text)),
            ("target-directory", Val(Write)),
            ("symbolic", Deny(SYMBOLIC)),
            ("relative", Deny(SYMBOLIC)),
        ],
    ),
    operands: Operands::Write,
};

/// Poppler's options: one dash, exact names, separate values.
static PDFTOTEXT: Simple = Simple {
    spec: Spec {
        short: &[],
        long: &[
            ("f", Val(Num)),
            ("l", Val(Num)),
            ("r", Val(Num)),
            ("x", Val(Num)),
            ("y", Val(Num)),
            ("W", Val(Num)),
            ("H", Val(Num)),
            ("fixed", Val(Num)),
            ("colspacing", Val(Text)),
            ("enc", Val(Text)),
            ("eol", Val(Text)),
            ("opw", Val(Text)),
            ("upw", Val(Text)),
            ("layout", Flag),
            ("raw", Flag),
            ("nodiag", Flag),
            ("htmlmeta", Flag),
            ("tsv", Flag),
            ("bbox", Flag),
            ("bbox-layout", Flag),
            ("cropbox", Flag),
            ("nopgbrk", Flag),
            ("listenc", Flag),
            ("q", Flag),
            ("v", Flag),
            ("h", Flag),
            ("help", Flag),
            ("-help", Flag),
        ],
        digits: false,
        permute: true,
        single_dash: true,
    },
    operands: Operands::Pdf,
};

pub fn rule(name: &str) -> Option<&'static Simple> {
    Some(match name {
        "cat" => &CAT,
        "head" => &HEAD,
        "tail" => &TAIL,
        "grep" | "egrep" | "fgrep" | "rgrep" => &GREP,
        "wc" => &WC,
        "ls" | "dir" | "vdir" => &LS,
        "sort" => &SORT,
        "uniq" => &UNIQ,
        "cut" => &CUT,
        "tr" => &TR,
        "ln" => &LN,
        "pdftotext" => &PDFTOTEXT,
        _ => return None,
    })
}

fn file(path: &str, access: Access) -> Option<FileArg> {
    // `-` is standard input or output.
    (path != "-").then(|| FileArg { path: path.into(), access })
}

/// The files pdftotext may write without an output operand: `doc.pdf` or `doc` -> `doc.txt`,
/// or `doc.html` with `-htmlmeta`, `-bbox`, `-bbox-layout`, and `doc.tsv` with `-tsv`. Which
/// one a poppler version picks is its own choice, so every candidate is checked.
fn pdf_output_names(pdf: &str, parsed: &options::Parsed) -> Vec<String> {
    let stem = pdf.strip_suffix(".pdf").or_else(|| pdf.strip_suffix(".PDF")).unwrap_or(pdf);
    let mut names = vec![format!("{stem}.txt")];
    if parsed.has(&["-htmlmeta", "-bbox", "-bbox-layout"]) {
        names.push(format!("{stem}.html"));
    }
    if parsed.has(&["-tsv"]) {
        names.push(format!("{stem}.tsv"));
    }
    names
}

pub fn analyze(program: &str, rule: &Simple, args: &[String]) -> Result<Plan, RuleError> {
    let parsed = options::parse(program, &rule.spec, args)?;
    let ops = &parsed.operands;
    let extra = |n: usize| match ops.get(n) {
        Some(op) => Err(RuleError::ExtraOperand { program: program.into(), operand: op.clone() }),
        None => Ok(()),
    };
    let mut files = parsed.files.clone();
    match rule.operands {
        Operands::Read => files.extend(ops.iter().filter_map(|o| file(o, Access::Read))),
        Operands::Write => files.extend(ops.iter().filter_map(|o| file(o, Access::Write))),
        Operands::Text => {}
        Operands::Pattern => {
            let pattern_given = parsed.has(&["-e", "--regexp", "-f", "--file"]);
            let skip = if pattern_given { 0 } else { 1 };
            files.extend(ops.iter().skip(skip).filter_map(|o| file(o, Access::Read)));
        }
        Operands::InOut => {
            extra(2)?;
            files.extend(ops.first().and_then(|o| file(o, Access::Read)));
            files.extend(ops.get(1).and_then(|o| file(o, Access::Write)));
        }
        Operands::Pdf => {
            extra(2)?;
            if let Some(pdf) = ops.first() {
                files.extend(file(pdf, Access::Read));
                match ops.get(1) {
                    Some(out) => files.extend(file(out, Access::Write)),
                    None if pdf != "-" => {
                        files.extend(
                            pdf_output_names(pdf, &parsed)
                                .into_iter()
                                .map(|path| FileArg { path, access: Access::Write }),
                        );
                    }
                    None => {}
                }
            }
        }
    }
    Ok(Plan { args: args.to_vec(), files })
}

#[cfg(test)]
mod tests {
    use super::*;

    type Row<'a> = (&'a str, &'a [&'a str], &'a [(&'a str, Access)]);

    fn files_of(program: &str, line: &[&str]) -> Result<Vec<(String, Access)>, String> {
        let args: Vec<String> = line.iter().map(|s| s.to_string()).collect();
        let r = rule(program).expect("a rule");
        analyze(program, r, &args)
            .map(|p| p.files.into_iter().map(|f| (f.path, f.access)).collect())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn finds_the_file_arguments() {
        use Access::{Read as R, Write as W};
        let table: &[Row] = &[
            ("grep", &["-r", "foo", "."], &[(".", R)]),
            ("grep", &["-e", "foo", "a", "b"], &[("a", R), ("b", R)]),
            ("grep", &["-f", "pats", "a"], &[("pats", R), ("a", R)]),
            ("grep", &["/etc/passwd"], &[]),
            ("sort", &["-o", "out", "in"], &[("out", W), ("in", R)]),
            ("sort", &["-t", "/", "-k2", "in"], &[("in", R)]),
            ("uniq", &["-c", "in", "out"], &[("in", R), ("out", W)]),
            ("tr", &["a-z", "A-Z"], &[]),
            ("pdftotext", &["-layout", "doc.pdf", "-"], &[("doc.pdf", R)]),
            ("pdftotext", &["doc.pdf"], &[("doc.pdf", R), ("doc.txt", W)]),
            ("pdftotext", &["doc.pdf", "out.txt"], &[("doc.pdf", R), ("out.txt", W)]),
            ("pdftotext", &["-htmlmeta", "doc.pdf"], &[("doc.pdf", R), ("doc.txt", W), ("doc.html", W)]),
            ("pdftotext", &["doc.pdf", "-bbox"], &[("doc.pdf", R), ("doc.txt", W), ("doc.html", W)]),
            ("pdftotext", &["-bbox-layout", "doc"], &[("doc", R), ("doc.txt", W), ("doc.html", W)]),
            ("pdftotext", &["-tsv", "doc.PDF"], &[("doc.PDF", R), ("doc.txt", W), ("doc.tsv", W)]),
            ("head", &["-n", "-2", "a"], &[("a", R)]),
            ("cat", &["-", "a"], &[("a", R)]),
            ("ln", &["a", "b"], &[("a", W), ("b", W)]),
        ];
        for (program, line, want) in table {
            let want: Vec<(String, Access)> = want.iter().map(|(p, a)| (p.to_string(), *a)).collect();
            assert_eq!(files_of(program, line), Ok(want), "{program} {line:?}");
        }
    }

    #[test]
    fn refuses_dangerous_options() {
        let table: &[(&str, &[&str], &str)] = &[
            ("tail", &["-f", "a"], "`tail -f`"),
            ("tail", &["-F", "a"], "`tail -F`"),
            ("tail", &["--follow=name", "a"], "`tail --follow`"),
            ("tail", &["-5f", "a"], "`tail -5f`"),
            ("tail", &["-n5", "-f"], "`tail -f`"),
            ("grep", &["-R", "x", "."], "`grep -R`"),
            ("sort", &["--compress-program=sh", "a"], "`sort --compress-program`"),
            ("sort", &["--compress", "sh", "a"], "--compress-program"),
            ("sort", &["--files0-from=list"], "`sort --files0-from`"),
            ("sort", &["-T", "/tmp", "a"], "`sort -T`"),
            ("wc", &["--files0-from=list"], "`wc --files0-from`"),
            ("ls", &["-L"], "`ls -L`"),
            ("ln", &["-s", "/etc/passwd", "x"], "`ln -s`"),
            ("uniq", &["a", "b", "c"], "`c`"),
            ("cat", &["--bogus"], "`cat --bogus`"),
            ("pdftotext", &["--", "a.pdf"], "`pdftotext --`"),
            ("pdftotext", &["-f3", "a.pdf"], "`pdftotext -f3`"),
        ];
        for (program, line, want) in table {
            let err = files_of(program, line).unwrap_err();
            assert!(err.contains(want), "{program} {line:?}: {err}");
        }
    }
}
