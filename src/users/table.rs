//! `moltmate users`: one row per MoltmateUser, from the objects the cluster holds (pure).

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::ResourceExt;
use serde::Serialize;

use crate::crd::MoltmateUser;
use crate::names;

/// What an administrator sees of one user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Row {
    pub name: String,
    pub telegram_id: i64,
    pub profile: String,
    /// `status.phase`; `None` before the operator has looked.
    pub phase: Option<String>,
    /// The agent pod's state; `None` when there is no pod.
    pub pod: Option<String>,
    /// When the person last sent a message (RFC 3339).
    pub last_activity: Option<String>,
    /// Size of the workspace volume (its capacity once bound, else the request): not usage.
    pub volume: Option<String>,
    pub reset_generation: ResetGeneration,
    /// Messages waiting in the gateway's queue; `None` when the gateway was not asked.
    pub queue: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ResetGeneration {
    /// `spec.resetGeneration`: asked for.
    pub spec: i64,
    /// `status.resetGeneration`: done (an agent that wiped for it serves).
    pub status: i64,
}

/// The rows, sorted by name. `queues` is per user from the gateway's metrics, if read.
pub fn rows(
    users: &[MoltmateUser],
    pods: &[Pod],
    claims: &[PersistentVolumeClaim],
    queues: Option<&BTreeMap<String, u64>>,
) -> Vec<Row> {
    let of_user =
        |labels: &BTreeMap<String, String>, user: &str| labels.get(names::LABEL_USER).map(String::as_str) == Some(user);
    let mut rows: Vec<Row> = users
        .iter()
        .map(|user| {
            let name = user.name_any();
            let status = user.status.as_ref();
            let pod = pods.iter().find(|p| of_user(p.labels(), &name) && p.name_any() == names::AGENT_POD);
            let claim = claims.iter().find(|c| of_user(c.labels(), &name) && c.name_any() == names::WORKSPACE_PVC);
            let annotation = user.annotations().get(names::ANNOTATION_LAST_ACTIVITY).cloned();
            Row {
                telegram_id: user.spec.telegram.user_id,
                profile: user.spec.profile.as_str().to_string(),
                phase: status.and_then(|s| s.phase).map(|p| p.as_str().to_string()),
                pod: pod.map(pod_state),
                // The operator copies the stamp into the status; the stamp itself if it has not yet.
                last_activity: status.and_then(|s| s.last_activity.clone()).or(annotation),
                volume: claim.and_then(volume_size),
                reset_generation: ResetGeneration {
                    spec: user.spec.reset_generation,
                    status: status.and_then(|s| s.reset_generation).unwrap_or(0),
                },
                queue: queues.map(|q| q.get(&name).copied().unwrap_or(0)),
                name,
            }
        })
        .collect();
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    rows
}

/// `Running` once ready; otherwise the phase (`Running/NotReady` while probes fail), or
/// `Terminating`.
fn pod_state(pod: &Pod) -> String {
    if pod.metadata.deletion_timestamp.is_some() {
        return "Terminating".into();
    }
    let status = pod.status.as_ref();
    let phase = status.and_then(|s| s.phase.clone()).unwrap_or_else(|| "Pending".into());
    let ready = crate::k8s::pod_is_ready(pod);
    if phase == "Running" && !ready { "Running/NotReady".into() } else { phase }
}

fn volume_size(claim: &PersistentVolumeClaim) -> Option<String> {
    let capacity = claim.status.as_ref().and_then(|s| s.capacity.as_ref()).and_then(|c| c.get("storage"));
    let request = || claim.spec.as_ref()?.resources.as_ref()?.requests.as_ref()?.get("storage");
    capacity.or_else(request).map(|q| q.0.clone())
}

/// "45s", "12m", "3h", "2d": how long ago, as kubectl shows ages.
pub fn age(since: &str, now: Timestamp) -> Option<String> {
    let then: Timestamp = since.parse().ok()?;
    let seconds = now.duration_since(then).as_secs().max(0);
    Some(match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 120 * 60 => format!("{}m", s / 60),
        s if s < 48 * 3600 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    })
}

/// The table, columns padded as kubectl does; `-` where there is nothing to show.
pub fn render_table(rows: &[Row], now: Timestamp) -> String {
    let header = ["NAME", "TELEGRAM ID", "PROFILE", "PHASE", "POD", "LAST ACTIVITY", "VOLUME", "RESET", "QUEUE"];
    let dash = || "-".to_string();
    let mut lines: Vec<Vec<String>> = vec![header.iter().map(|h| h.to_string()).collect()];
    for row in rows {
        let reset = row.reset_generation;
        lines.push(vec![
            row.name.clone(),
            row.telegram_id.to_string(),
            row.profile.clone(),
            row.phase.clone().unwrap_or_else(dash),
            row.pod.clone().unwrap_or_else(|| "none".into()),
            row.last_activity.as_deref().and_then(|t| age(t, now)).map_or_else(dash, |a| format!("{a} ago")),
            row.volume.clone().unwrap_or_else(dash),
            if reset.spec == 0 && reset.status == 0 { dash() } else { format!("{}/{}", reset.spec, reset.status) },
            row.queue.map_or_else(dash, |q| q.to_string()),
        ]);
    }
    let widths: Vec<usize> =
        (0..header.len()).map(|i| lines.iter().map(|l| l[i].chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for line in lines {
        let cells: Vec<String> = line.iter().zip(&widths).map(|(cell, width)| format!("{cell:<width$}")).collect();
        out.push_str(cells.join("   ").trim_end());
        out.push('\n');
    }
    out
}

/// Per user, `moltmate_gateway_queue_depth{user="NAME"} N` from a Prometheus text page.
pub fn queue_depths(metrics: &str) -> BTreeMap<String, u64> {
    metrics
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("moltmate_gateway_queue_depth{")?;
            let (labels, value) = rest.split_once('}')?;
            let user = labels.split(',').find_map(|l| l.trim().strip_prefix("user=\"")?.strip_suffix('"'))?;
            let value = value.split_whitespace().next()?.parse::<f64>().ok()?;
            Some((user.to_string(), value.max(0.0) as u64))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{MoltmateUserSpec, MoltmateUserStatus, Phase, Profile};
    use k8s_openapi::api::core::v1::{
        PersistentVolumeClaimSpec, PersistentVolumeClaimStatus, PodCondition, PodStatus, VolumeResourceRequirements,
    };
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn user(name: &str, id: i64, profile: Profile) -> MoltmateUser {
        MoltmateUser::new(name, MoltmateUserSpec::new(id, profile))
    }

    fn labelled<K: kube::Resource>(mut object: K, user: &str, name: &str) -> K {
        object.meta_mut().name = Some(name.into());
        object.meta_mut().labels = Some(names::user_labels(user));
        object
    }

    fn pod(user: &str, phase: &str, ready: bool) -> Pod {
        let status = PodStatus {
            phase: Some(phase.into()),
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: if ready { "True" } else { "False" }.into(),
                ..Default::default()
            }]),
            ..Default::default()
        };
        labelled(Pod { status: Some(status), ..Default::default() }, user, "agent")
    }

    fn claim(user: &str, request: &str, capacity: Option<&str>) -> PersistentVolumeClaim {
        let storage = |q: &str| BTreeMap::from([("storage".to_string(), Quantity(q.into()))]);
        let spec = PersistentVolumeClaimSpec {
            resources: Some(VolumeResourceRequirements { requests: Some(storage(request)), ..Default::default() }),
            ..Default::default()
        };
        let status = capacity.map(|c| PersistentVolumeClaimStatus { capacity: Some(storage(c)), ..Default::default() });
        labelled(PersistentVolumeClaim { spec: Some(spec), status, ..Default::default() }, user, "workspace")
    }

    fn now() -> Timestamp {
        "2025-03-01T12:00:00Z".parse().unwrap()
    }

    #[test]
    fn one_row_per_user_from_its_objects() {
        let mut alice = user("alice", 1001, Profile::Family);
        alice.spec.reset_generation = 2;
        alice.status = Some(MoltmateUserStatus {
            phase: Some(Phase::Ready),
            reset_generation: Some(1),
            last_activity: Some("2025-03-01T11:57:00Z".into()),
            ..Default::default()
        });
        let mut bob = user("bob", 1002, Profile::HighSecurity);
        bob.metadata.annotations =
            Some(BTreeMap::from([(names::ANNOTATION_LAST_ACTIVITY.to_string(), "2025-02-27T12:00:00Z".to_string())]));
        let mut leaving = pod("bob", "Running", true);
        leaving.metadata.deletion_timestamp = Some(Time(now()));
        let users = [bob, alice, user("carol", 1003, Profile::Public)];
        let pods = [pod("alice", "Running", true), leaving, labelled(Pod::default(), "carol", "not-the-agent")];
        let claims = [claim("alice", "5Gi", Some("5Gi")), claim("bob", "512Mi", None)];
        let queues = BTreeMap::from([("alice".to_string(), 3)]);

        let rows = rows(&users, &pods, &claims, Some(&queues));
        assert_eq!(rows.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), ["alice", "bob", "carol"]);
        let alice = &rows[0];
        assert_eq!(
            (alice.telegram_id, alice.profile.as_str(), alice.phase.as_deref()),
            (1001, "family", Some("Ready"))
        );
        assert_eq!(
            (alice.pod.as_deref(), alice.volume.as_deref(), alice.queue),
            (Some("Running"), Some("5Gi"), Some(3))
        );
        assert_eq!(alice.reset_generation, ResetGeneration { spec: 2, status: 1 });
        let bob = &rows[1];
        assert_eq!(
            (bob.profile.as_str(), bob.pod.as_deref(), bob.volume.as_deref()),
            ("high-security", Some("Terminating"), Some("512Mi"))
        );
        assert_eq!(
            bob.last_activity.as_deref(),
            Some("2025-02-27T12:00:00Z"),
            "the stamp when the status has none yet"
        );
        assert_eq!((rows[2].pod.as_deref(), rows[2].queue, rows[2].phase.as_deref()), (None, Some(0), None));

        let table = render_table(&rows, now());
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("NAME ") && lines[0].ends_with("RESET   QUEUE"), "{table}");
        let cells = |line: &str| {
            line.split("   ").map(str::trim).filter(|c| !c.is_empty()).map(str::to_string).collect::<Vec<_>>()
        };
        assert_eq!(
            cells(lines[1]),
            ["alice", "1001", "family", "Ready", "Running", "3m ago", "5Gi", "2/1", "3"],
            "{table}"
        );
        assert_eq!(
            cells(lines[2]),
            ["bob", "1002", "high-security", "-", "Terminating", "2d ago", "512Mi", "-", "0"],
            "{table}"
        );
        assert_eq!(cells(lines[3]), ["carol", "1003", "public", "-", "none", "-", "-", "-", "0"], "{table}");
        // Columns line up.
        let at =
            |line: &str| line.find(" family").or_else(|| line.find(" high-security")).or_else(|| line.find(" public"));
        assert_eq!(at(lines[1]), at(lines[2]));

        let json: serde_json::Value = serde_json::to_value(&rows).unwrap();
        assert_eq!(json[0]["resetGeneration"], serde_json::json!({"spec": 2, "status": 1}));
        assert_eq!(json[0]["telegramId"], 1001);
        assert_eq!(json[2]["pod"], serde_json::Value::Null);
        assert!(
            super::rows(&users, &pods, &claims, None).iter().all(|r| r.queue.is_none()),
            "no gateway asked: no queue"
        );
    }

    #[test]
    fn pods_show_their_state() {
        assert_eq!(pod_state(&pod("a", "Running", false)), "Running/NotReady");
        assert_eq!(pod_state(&pod("a", "Pending", false)), "Pending");
        assert_eq!(pod_state(&Pod::default()), "Pending");
    }

    #[test]
    fn ages_read_like_kubectl() {
        let cases = [
            ("2025-03-01T11:59:15Z", "45s"),
            ("2025-03-01T11:48:00Z", "12m"),
            ("2025-03-01T09:00:00Z", "3h"),
            ("2025-02-20T12:00:00Z", "9d"),
        ];
        for (then, want) in cases {
            assert_eq!(age(then, now()).as_deref(), Some(want), "{then}");
        }
        assert_eq!(age("2025-03-01T12:00:30Z", now()).as_deref(), Some("0s"), "a clock ahead is not negative");
        assert_eq!(age("yesterday", now()), None);
    }

    #[test]
    fn queue_depths_come_from_the_gateway_metrics() {
        let text = "# HELP moltmate_gateway_queue_depth Messages waiting\n\
                    # TYPE moltmate_gateway_queue_depth gauge\n\
                    moltmate_gateway_queue_depth{user=\"alice\"} 2\n\
                    moltmate_gateway_queue_depth{user=\"bob\"} 0\n\
                    moltmate_gateway_messages_total{outcome=\"answered\"} 7\n\
                    # EOF\n";
        assert_eq!(queue_depths(text), BTreeMap::from([("alice".to_string(), 2), ("bob".to_string(), 0)]));
        assert!(queue_depths("garbage").is_empty());
    }
}
