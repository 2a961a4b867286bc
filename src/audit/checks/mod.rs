//! The checks: pure functions of a [`Snapshot`] and an [`AuditConfig`], one module per concern.

mod exec;
mod exposure;
mod install;
mod pods;
mod rbac;
mod retained;
mod secrets;
mod users;

use super::finding::{AuditConfig, Finding};
use super::snapshot::Snapshot;

/// Every check, in the order they are reported.
pub fn checks(snap: &Snapshot, config: &AuditConfig) -> Vec<Finding> {
    let mut out = Vec::new();
    let install = install::read(snap, config, &mut out);
    users::check(snap, &install, &mut out);
    users::pod_security(snap, &mut out);
    exec::check(snap, &install, &mut out);
    pods::check(snap, &mut out);
    rbac::check(snap, &mut out);
    exposure::check(snap, &install, &mut out);
    secrets::check(snap, &install, &mut out);
    retained::check(snap, config, &mut out);
    pods::images(snap, &install, &mut out);
    out
}

/// Every check's name, in report order.
pub const ALL: &[&str] = &[
    install::CHECK,
    users::PROVISIONED,
    users::NETWORK_POLICY,
    users::QUOTA,
    users::LIMITS,
    users::POD_SECURITY,
    exec::SECURITY,
    exec::SAFE_BINS,
    pods::AGENT_POD,
    rbac::CHECK,
    exposure::SERVICES,
    exposure::INGRESS,
    exposure::BROKER,
    secrets::SOURCE,
    secrets::MASTER_KEY,
    secrets::WEBHOOK_SECRET,
    retained::CHECK,
    pods::IMAGES,
];

#[cfg(test)]
mod tests;
