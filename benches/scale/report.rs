//! The report: every figure in one JSON file, and a table of the figures with targets.

use std::fmt::Write;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};

/// One line of the summary table.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Row {
    pub benchmark: String,
    pub users: usize,
    pub figure: String,
    pub value: f64,
    pub unit: String,
    /// The target, as "at most this"; `None` for figures that are only reported.
    pub at_most: Option<f64>,
}

impl Row {
    pub fn pass(&self) -> Option<bool> {
        self.at_most.map(|limit| self.value <= limit)
    }
}

pub struct Report {
    root: Map<String, Value>,
    rows: Vec<Row>,
    notes: Vec<String>,
    errors: Vec<String>,
}

impl Report {
    pub fn new(options: &impl serde::Serialize, repo: &Path) -> Report {
        let mut root = Map::new();
        root.insert("machine".into(), machine(repo));
        root.insert("options".into(), serde_json::to_value(options).unwrap_or(Value::Null));
        Report { root, rows: Vec::new(), notes: Vec::new(), errors: Vec::new() }
    }

    /// Everything measured by `benchmark` at a size (or under another key), as
    /// `benchmark.<key>` in the JSON.
    pub fn section(&mut self, benchmark: &str, key: impl std::fmt::Display, value: Value) {
        let entry = self.root.entry(benchmark.to_string()).or_insert_with(|| json!({}));
        entry[key.to_string()] = value;
    }

    /// A figure for the table that has no target.
    pub fn figure(&mut self, benchmark: &str, users: usize, figure: &str, value: f64, unit: &str) {
        self.push(benchmark, users, figure, value, unit, None);
    }

    /// A figure with its target: at most `limit`.
    pub fn target(&mut self, benchmark: &str, users: usize, figure: &str, value: f64, unit: &str, limit: f64) {
        self.push(benchmark, users, figure, value, unit, Some(limit));
    }

    fn push(&mut self, benchmark: &str, users: usize, figure: &str, value: f64, unit: &str, at_most: Option<f64>) {
        self.rows.push(Row {
            benchmark: benchmark.into(),
            users,
            figure: figure.into(),
            value,
            unit: unit.into(),
            at_most,
        });
    }

    pub fn note(&mut self, text: impl Into<String>) {
        self.notes.push(text.into());
    }

    pub fn note_if(&mut self, text: Option<String>) {
        if let Some(text) = text {
            self.note(text);
        }
    }

    pub fn error(&mut self, text: impl Into<String>) {
        self.errors.push(text.into());
    }

    pub fn has_errors(&self) -> bool {
        !self.errors.is_empty()
    }

    /// Write `report.json` into `dir`, with the table rows, notes and errors.
    pub fn write(&self, dir: &Path) -> std::io::Result<PathBuf> {
        std::fs::create_dir_all(dir)?;
        let mut root = self.root.clone();
        root.insert("finished".into(), json!(jiff::Timestamp::now().to_string()));
        root.insert("targets".into(), serde_json::to_value(&self.rows).unwrap_or_default());
        root.insert("notes".into(), json!(self.notes));
        root.insert("errors".into(), json!(self.errors));
        let path = dir.join("report.json");
        std::fs::write(&path, serde_json::to_string_pretty(&Value::Object(root)).unwrap_or_default() + "\n")?;
        Ok(path)
    }

    /// The table printed at the end of a run.
    pub fn table(&self) -> String {
        let header = ["benchmark", "users", "figure", "value", "target", "result"];
        let mut lines: Vec<[String; 6]> = vec![header.map(str::to_string)];
        for r in &self.rows {
            let target = r.at_most.map(|t| format!("<= {} {}", fmt(t), r.unit)).unwrap_or_default();
            let result = match r.pass() {
                Some(true) => "PASS",
                Some(false) => "MISS",
                None => "",
            };
            lines.push([
                r.benchmark.clone(),
                r.users.to_string(),
                r.figure.clone(),
                format!("{} {}", fmt(r.value), r.unit),
                target,
                result.into(),
            ]);
        }
        let widths: Vec<usize> =
            (0..header.len()).map(|i| lines.iter().map(|l| l[i].chars().count()).max().unwrap_or(0)).collect();
        let mut out = String::new();
        for (n, line) in lines.iter().enumerate() {
            let cells: Vec<String> = line.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
            let _ = writeln!(out, "{}", cells.join("  ").trim_end());
            if n == 0 {
                let _ = writeln!(out, "{}", widths.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>().join("  "));
            }
        }
        for note in &self.notes {
            let _ = writeln!(out, "note: {note}");
        }
        for error in &self.errors {
            let _ = writeln!(out, "ERROR: {error}");
        }
        out
    }
}

/// Up to 3 decimals, without trailing zeros.
fn fmt(v: f64) -> String {
    let text = format!("{v:.3}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text == "-0" { "0".into() } else { text.into() }
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The machine and the code the figures come from.
fn machine(repo: &Path) -> Value {
    let os = read("/etc/os-release")
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .unwrap_or_default()
        .trim_matches('"')
        .to_string();
    let cpu = read("/proc/cpuinfo")
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string());
    let mem_kib: Option<u64> = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok());
    json!({
        "date": jiff::Timestamp::now().to_string(),
        "nproc": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "cpu": cpu,
        "memory_gib": mem_kib.map(|k| (k as f64 / 1048576.0 * 10.0).round() / 10.0),
        "kernel": read("/proc/sys/kernel/osrelease").trim(),
        "os": os,
        "loadavg_at_start": read("/proc/loadavg").split_whitespace().take(3).collect::<Vec<_>>().join(" "),
        "git_commit": git_commit(repo),
    })
}

/// HEAD's commit, read from the repository's files (no git process).
fn git_commit(repo: &Path) -> Option<String> {
    let mut git = repo.join(".git");
    if git.is_file() {
        // A worktree: `.git` names the real directory.
        let pointer = std::fs::read_to_string(&git).ok()?;
        git = repo.join(pointer.strip_prefix("gitdir:")?.trim());
    }
    let head = std::fs::read_to_string(git.join("HEAD")).ok()?;
    let Some(reference) = head.trim().strip_prefix("ref: ") else { return Some(head.trim().to_string()) };
    // A worktree keeps refs in the common directory.
    let common =
        std::fs::read_to_string(git.join("commondir")).ok().map(|c| git.join(c.trim())).unwrap_or_else(|| git.clone());
    for dir in [&git, &common] {
        if let Ok(id) = std::fs::read_to_string(dir.join(reference)) {
            return Some(id.trim().to_string());
        }
        let packed = std::fs::read_to_string(dir.join("packed-refs")).unwrap_or_default();
        if let Some(id) = packed.lines().find_map(|l| l.strip_suffix(reference).map(str::trim)) {
            return Some(id.to_string());
        }
    }
    None
}

pub fn self_test() {
    assert_eq!(fmt(1.5), "1.5");
    assert_eq!(fmt(2.0), "2");
    assert_eq!(fmt(0.12345), "0.123");
    let mut r = Report::new(&json!({}), Path::new("/nonexistent"));
    r.target("provisioning", 100, "ratio", 1.1, "x", 1.3);
    r.target("steady", 100, "writes", 3.0, "", 0.0);
    r.figure("steady", 100, "reads", 7.0, "");
    let table = r.table();
    assert!(table.contains("PASS") && table.contains("MISS"), "{table}");
    assert_eq!(r.rows[2].pass(), None);
}
