//! Recording that a user is active: `status.lastActivity` of their MoltmateUser, which the
//! operator reads to suspend idle agents and to wake them. The gateway writes only there: its
//! RBAC grants the status subresource, never the spec (image, profile, exec security), which an
//! internet-facing component must not be able to change.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use crate::crd::MoltmateUser;

/// The gateway's field manager on MoltmateUser status.
const FIELD_MANAGER: &str = "moltmate-gateway";

/// At most one write per user per `every` (the operator's idle timeouts are minutes).
#[derive(Debug)]
pub struct Throttle {
    every: Duration,
    last: HashMap<String, Instant>,
}

impl Throttle {
    pub fn new(every: Duration) -> Self {
        Self { every, last: HashMap::new() }
    }

    /// True if a stamp is due now (and counts it as written). `force` is for waking a user,
    /// which must not wait for the throttle.
    pub fn due(&mut self, user: &str, now: Instant, force: bool) -> bool {
        let recent = self.last.get(user).is_some_and(|at| now.duration_since(*at) < self.every);
        if recent && !force {
            return false;
        }
        self.last.insert(user.to_string(), now);
        true
    }
}

pub struct ActivityRecorder {
    api: Api<MoltmateUser>,
    throttle: Mutex<Throttle>,
}

impl ActivityRecorder {
    pub fn new(client: Client) -> Self {
        Self { api: Api::all(client), throttle: Mutex::new(Throttle::new(Duration::from_secs(60))) }
    }

    /// Stamp `user` as active now, unless done within the last minute (or `force`).
    pub async fn touch(&self, user: &str, force: bool) {
        let due = self.throttle.lock().unwrap_or_else(|e| e.into_inner()).due(user, Instant::now(), force);
        if !due {
            return;
        }
        // Server-side apply of the one field, as the gateway's own field manager: the operator
        // applies the rest of the status and leaves this field alone.
        let patch = json!({
            "apiVersion": "moltmate.io/v1alpha1",
            "kind": "MoltmateUser",
            "metadata": { "name": user },
            "status": { "lastActivity": jiff::Timestamp::now().to_string() },
        });
        if let Err(e) =
            self.api.patch_status(user, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch)).await
        {
            tracing::warn!(user, error = %e, "recording activity");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn once_a_minute_unless_forced() {
        let mut t = Throttle::new(Duration::from_secs(60));
        let t0 = Instant::now();
        assert!(t.due("a", t0, false));
        assert!(!t.due("a", t0 + Duration::from_secs(59), false));
        assert!(t.due("b", t0 + Duration::from_secs(1), false));
        assert!(t.due("a", t0 + Duration::from_secs(59), true), "waking never waits");
        assert!(t.due("a", t0 + Duration::from_secs(120), false));
    }
}
