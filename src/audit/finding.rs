//! What a check reports: one row per check per object.

use std::time::Duration;

use serde::Serialize;

use crate::profile::ProfileDefaults;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    Pass,
    Warn,
    Fail,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "PASS",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        }
    }
}

/// One result: which check, about which object (`Kind namespace/name`), what was found and,
/// unless it passed, how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub check: &'static str,
    pub status: Status,
    pub object: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Finding {
    pub fn pass(check: &'static str, object: impl Into<String>, message: impl Into<String>) -> Self {
        Self { check, status: Status::Pass, object: object.into(), message: message.into(), fix: None }
    }
    pub fn warn(
        check: &'static str,
        object: impl Into<String>,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self { check, status: Status::Warn, object: object.into(), message: message.into(), fix: Some(fix.into()) }
    }
    pub fn fail(
        check: &'static str,
        object: impl Into<String>,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self { check, status: Status::Fail, object: object.into(), message: message.into(), fix: Some(fix.into()) }
    }
}

/// `Kind namespace/name`, or `Kind name` for cluster-scoped objects: how rows name objects.
pub fn object(kind: &str, namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) => format!("{kind} {ns}/{name}"),
        None => format!("{kind} {name}"),
    }
}

/// Everything the checks need besides the cluster's objects.
#[derive(Debug, Clone)]
pub struct AuditConfig {
    /// The release namespace: the operator, the gateway and their Secrets.
    pub namespace: String,
    /// Retained workspaces of deleted users older than this are reported.
    pub retained_max_age: Duration,
    /// "Now", passed in so the checks stay pure.
    pub now: jiff::Timestamp,
    /// Per-profile defaults from `--profiles-file`, overriding what the operator is found to use.
    pub profiles: Option<(ProfileDefaults, String)>,
}

impl AuditConfig {
    pub fn new(namespace: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            retained_max_age: Duration::from_secs(30 * 24 * 3600),
            now: jiff::Timestamp::now(),
            profiles: None,
        }
    }
}

/// Counts per status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub pass: usize,
    pub warn: usize,
    pub fail: usize,
}

impl Summary {
    pub fn of(findings: &[Finding]) -> Self {
        let count = |s| findings.iter().filter(|f| f.status == s).count();
        Self { pass: count(Status::Pass), warn: count(Status::Warn), fail: count(Status::Fail) }
    }
}
