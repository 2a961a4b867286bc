//! What one identity asked of the API server, from the API server's own audit log (one JSON
//! object a line; the test environment logs every request at Metadata level). The same
//! reading as tests/steady_state.rs, kept per resource and with the writes listed.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

const WRITE_VERBS: &[&str] = &["create", "update", "patch", "delete", "deletecollection"];
/// Writes kept verbatim in a tally, so that any unexpected write can be named.
const LISTED_WRITES: usize = 50;

/// The requests of one identity.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Tally {
    /// Writes other than the leader Lease's, by `verb resource[/subresource]`.
    pub writes: BTreeMap<String, usize>,
    /// The first writes, as `time verb resource namespace/name`.
    pub listed_writes: Vec<String>,
    /// Leader-election Lease writes (renewals), counted apart: they are expected.
    pub lease_writes: usize,
    /// Reads that are not watches (get, list), by `verb resource`.
    pub reads: BTreeMap<String, usize>,
    /// Watch requests (each a long-lived stream; a count of (re)starts).
    pub watches: usize,
}

impl Tally {
    pub fn write_count(&self) -> usize {
        self.writes.values().sum()
    }
    pub fn read_count(&self) -> usize {
        self.reads.values().sum()
    }
}

/// Byte length of the log now: where a window starts.
pub fn offset(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// Entries written after `offset`.
pub fn entries_after(path: &Path, offset: u64) -> Vec<Value> {
    use std::io::{Read, Seek, SeekFrom};
    let mut bytes = Vec::new();
    if let Ok(mut file) = std::fs::File::open(path) {
        let _ = file.seek(SeekFrom::Start(offset)).and_then(|_| file.read_to_end(&mut bytes));
    }
    String::from_utf8_lossy(&bytes).lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

/// Count what `username` did in `entries` (completed requests only).
pub fn tally(entries: &[Value], username: &str) -> Tally {
    let mut t = Tally::default();
    for entry in entries {
        if entry["user"]["username"] != username || entry["stage"] != "ResponseComplete" {
            continue;
        }
        let verb = entry["verb"].as_str().unwrap_or_default();
        let object = &entry["objectRef"];
        let resource = object["resource"].as_str().unwrap_or_default();
        let key = match object["subresource"].as_str() {
            Some(sub) => format!("{verb} {resource}/{sub}"),
            None => format!("{verb} {resource}"),
        };
        if WRITE_VERBS.contains(&verb) {
            if resource == "leases" {
                t.lease_writes += 1;
                continue;
            }
            *t.writes.entry(key.clone()).or_default() += 1;
            if t.listed_writes.len() < LISTED_WRITES {
                let at = entry["stageTimestamp"].as_str().unwrap_or_default();
                let ns = object["namespace"].as_str().map(|n| format!("{n}/")).unwrap_or_default();
                let code = &entry["responseStatus"]["code"];
                t.listed_writes
                    .push(format!("{at} {key} {ns}{} -> {code}", object["name"].as_str().unwrap_or_default()));
            }
        } else if verb == "watch" {
            t.watches += 1;
        } else {
            *t.reads.entry(key).or_default() += 1;
        }
    }
    t
}

/// Time of the latest non-Lease write by `username` in `entries`, as written in the log.
pub fn last_write_at(entries: &[Value], username: &str) -> Option<String> {
    entries
        .iter()
        .filter(|e| e["user"]["username"] == username && e["stage"] == "ResponseComplete")
        .filter(|e| {
            WRITE_VERBS.contains(&e["verb"].as_str().unwrap_or_default()) && e["objectRef"]["resource"] != "leases"
        })
        .filter_map(|e| e["stageTimestamp"].as_str().map(str::to_string))
        .max()
}

pub fn self_test() {
    let line = |user: &str, verb: &str, resource: &str, sub: Option<&str>| {
        let mut object = serde_json::json!({ "resource": resource, "namespace": "moltmate-a", "name": "x" });
        if let Some(sub) = sub {
            object["subresource"] = sub.into();
        }
        serde_json::json!({ "stage": "ResponseComplete", "user": { "username": user }, "verb": verb, "objectRef": object,
            "stageTimestamp": "2025-01-01T00:00:00.000000Z", "responseStatus": { "code": 200 } })
    };
    let entries = vec![
        line("op", "patch", "leases", None),
        line("op", "update", "leases", None),
        line("op", "patch", "moltmateusers", Some("status")),
        line("op", "watch", "pods", None),
        line("op", "list", "pods", None),
        line("op", "get", "namespaces", None),
        line("someone", "create", "pods", None),
    ];
    let t = tally(&entries, "op");
    assert_eq!(t.lease_writes, 2);
    assert_eq!(t.writes, BTreeMap::from([("patch moltmateusers/status".to_string(), 1)]));
    assert_eq!(
        t.listed_writes,
        vec!["2025-01-01T00:00:00.000000Z patch moltmateusers/status moltmate-a/x -> 200".to_string()]
    );
    assert_eq!((t.watches, t.read_count()), (1, 2));
    assert!(last_write_at(&entries, "op").is_some() && last_write_at(&entries, "nobody").is_none());
}
