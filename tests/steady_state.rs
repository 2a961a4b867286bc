//! Once users are provisioned and nothing changes, the operator writes nothing. Measured
//! from the API server's own audit log, by the operator's identity.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::support::*;
use serde_json::{Value, json};

const USERS: usize = 20;
const QUIET: Duration = Duration::from_secs(30);
const WRITE_VERBS: &[&str] = &["create", "update", "patch", "delete", "deletecollection"];

fn audit_lines_after(path: &std::path::Path, offset: usize) -> Vec<Value> {
    let text = std::fs::read(path).unwrap();
    String::from_utf8_lossy(&text[offset.min(text.len())..])
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[tokio::test]
async fn provisioned_unchanged_users_cause_no_writes() {
    let (env, client, _node) = TestEnv::up_installed("steady").await;
    let _operator = env.spawn_operator("operator", free_port());

    for i in 0..USERS {
        apply_user(&client, &user_manifest(&format!("calm-{i}"), 7000 + i as i64, json!({}))).await.unwrap();
    }
    for i in 0..USERS {
        wait_phase(&client, &format!("calm-{i}"), "Ready", Duration::from_secs(60)).await;
    }
    // Let the last status write land before the window opens.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let offset = std::fs::metadata(env.audit_log()).unwrap().len() as usize;
    tokio::time::sleep(QUIET).await;

    let mut writes: BTreeMap<String, usize> = BTreeMap::new();
    let mut lease_writes = 0;
    let mut reads: BTreeMap<String, usize> = BTreeMap::new();
    for entry in audit_lines_after(&env.audit_log(), offset) {
        if entry["user"]["username"] != OPERATOR_USER || entry["stage"] != "ResponseComplete" {
            continue;
        }
        let verb = entry["verb"].as_str().unwrap_or_default();
        let resource = entry["objectRef"]["resource"].as_str().unwrap_or_default();
        let key = format!("{verb} {resource}/{}", entry["objectRef"]["subresource"].as_str().unwrap_or(""));
        if WRITE_VERBS.contains(&verb) {
            if resource == "leases" {
                lease_writes += 1; // leader election renews its Lease; that is the only write expected
            } else {
                *writes.entry(key).or_default() += 1;
            }
        } else if verb != "watch" {
            *reads.entry(key).or_default() += 1;
        }
    }
    eprintln!(
        "steady state over {QUIET:?} with {USERS} users: writes {writes:?}, lease renewals {lease_writes}, non-watch reads {reads:?}"
    );
    assert!(writes.is_empty(), "the operator wrote while nothing changed: {writes:?}");
    assert!(lease_writes > 0, "the audit log sees the operator at all (lease renewals)");
}
