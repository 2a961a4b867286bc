//! Pods in sandbox namespaces run hardened (whatever made them: anything there is untrusted),
//! and every image we run is pinned.

use k8s_openapi::api::core::v1::{Container, PodSpec};
use kube::ResourceExt;

use super::install::Install;
use crate::audit::finding::{Finding, object};
use crate::audit::snapshot::{Snapshot, in_namespace};
use crate::profile;

pub const AGENT_POD: &str = "agent-pod";
pub const IMAGES: &str = "image-pinned";

pub fn check(snap: &Snapshot, out: &mut Vec<Finding>) {
    for ns in snap.sandbox_namespaces() {
        for pod in in_namespace(&snap.pods, &ns) {
            let what = object("Pod", Some(&ns), &pod.name_any());
            let problems = pod.spec.as_ref().map(problems).unwrap_or_else(|| vec!["has no spec".into()]);
            if problems.is_empty() {
                out.push(Finding::pass(
                    AGENT_POD,
                    what,
                    "no service-account token, non-root, read-only root filesystem, no privileges",
                ));
            } else {
                out.push(Finding::fail(
                    AGENT_POD,
                    what,
                    problems.join("; "),
                    format!(
                        "kubectl delete pod -n {ns} {}: the operator makes only the pod `agent`, hardened, and re-creates it; \
                         anything else in a sandbox namespace was not made by Moltmates",
                        pod.name_any()
                    ),
                ));
            }
        }
    }
}

fn containers(spec: &PodSpec) -> impl Iterator<Item = &Container> {
    spec.init_containers.iter().flatten().chain(&spec.containers)
}

/// Everything about a pod that breaks the sandbox's hardening.
fn problems(spec: &PodSpec) -> Vec<String> {
    let mut p = Vec::new();
    if spec.automount_service_account_token != Some(false) {
        p.push("may mount a service-account token (automountServiceAccountToken is not false): the Kubernetes API within reach".into());
    }
    for (on, what) in [(spec.host_network, "network"), (spec.host_pid, "PID"), (spec.host_ipc, "IPC")] {
        if on == Some(true) {
            p.push(format!("shares the node's {what} namespace"));
        }
    }
    for v in spec.volumes.iter().flatten().filter(|v| v.host_path.is_some()) {
        p.push(format!("mounts the node's filesystem (hostPath volume {})", v.name));
    }
    let pod_sc = spec.security_context.clone().unwrap_or_default();
    let pod_seccomp = pod_sc.seccomp_profile.as_ref().map(|s| s.type_.as_str());
    for c in containers(spec) {
        let sc = c.security_context.clone().unwrap_or_default();
        let non_root = sc.run_as_non_root.or(pod_sc.run_as_non_root) == Some(true);
        let uid = sc.run_as_user.or(pod_sc.run_as_user);
        if !non_root || uid == Some(0) {
            p.push(format!(
                "container {} may run as root (runAsNonRoot is not true{})",
                c.name,
                if uid == Some(0) { ", runAsUser 0" } else { "" }
            ));
        }
        if sc.read_only_root_filesystem != Some(true) {
            p.push(format!("container {} has a writable root filesystem", c.name));
        }
        if sc.privileged == Some(true) {
            p.push(format!("container {} is privileged", c.name));
        }
        if sc.allow_privilege_escalation != Some(false) {
            p.push(format!("container {} allows privilege escalation", c.name));
        }
        let caps = sc.capabilities.clone().unwrap_or_default();
        if !caps.drop.iter().flatten().any(|d| d == "ALL") {
            p.push(format!("container {} keeps Linux capabilities (drop is not [ALL])", c.name));
        }
        if let Some(add) = caps.add.filter(|a| !a.is_empty()) {
            p.push(format!("container {} adds capabilities {}", c.name, add.join(",")));
        }
        let seccomp = sc.seccomp_profile.as_ref().map(|s| s.type_.as_str()).or(pod_seccomp);
        if !matches!(seccomp, Some("RuntimeDefault" | "Localhost")) {
            p.push(format!("container {} runs without a seccomp profile", c.name));
        }
    }
    p
}

/// `Ok(how)` when the image names a version (a tag other than `latest`, or a digest).
pub fn pinned(image: &str) -> Result<String, String> {
    if let Some((_, digest)) = image.split_once('@') {
        return Ok(format!("digest {digest}"));
    }
    // A colon before the last slash belongs to a registry port (`host:5000/app`).
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.rsplit_once(':') {
        None => Err(format!("{image} has no tag, which means `latest`: a re-pull may silently run different code")),
        Some((_, "latest")) => Err(format!("{image} uses the tag `latest`: a re-pull may silently run different code")),
        Some((_, tag)) => Ok(format!("tag {tag}")),
    }
}

fn image_finding(what: String, image: &str, fix: &str) -> Finding {
    match pinned(image) {
        Ok(how) => Finding::pass(IMAGES, what, format!("{image} ({how})")),
        Err(why) => Finding::fail(IMAGES, what, why, fix),
    }
}

pub fn images(snap: &Snapshot, install: &Install, out: &mut Vec<Finding>) {
    let release_fix =
        "pin a version: helm upgrade ... --set image.tag=<version> (or an image@sha256 digest in your manifests)";
    for component in [install.operator, install.gateway].into_iter().flatten() {
        let spec = component.pod;
        for c in containers(spec) {
            let image = c.image.as_deref().unwrap_or_default();
            out.push(image_finding(format!("{} container {}", component.object(), c.name), image, release_fix));
        }
    }
    if let Some(op) = &install.operator {
        out.push(image_finding(
            format!("{} --sandbox-image", op.object()),
            &install.cluster.default_image,
            "pin the agent image: helm upgrade ... --set sandbox.image=moltmates/sandbox:<version>",
        ));
    }
    for user in &snap.users {
        let image = profile::resolve_with(&user.spec, &install.cluster.profiles).ok().and_then(|p| p.image);
        if let Some(image) = image {
            let name = user.name_any();
            out.push(image_finding(
                object("MoltmateUser", None, &name),
                &image,
                &format!("set spec.sandbox.image to a versioned image: kubectl edit mmu {name}"),
            ));
        }
    }
    for ns in snap.sandbox_namespaces() {
        for pod in in_namespace(&snap.pods, &ns) {
            for c in pod.spec.as_ref().map(containers).into_iter().flatten() {
                let image = c.image.as_deref().unwrap_or_default();
                out.push(image_finding(
                    format!("{} container {}", object("Pod", Some(&ns), &pod.name_any()), c.name),
                    image,
                    "pin the image of the user (spec.sandbox.image) or the operator's --sandbox-image",
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_references() {
        for ok in [
            "moltmates/moltmate:0.1.0",
            "host:5000/moltmates/moltmate:1",
            "moltmates/moltmate@sha256:abc",
            "a:latest@sha256:abc",
        ] {
            assert!(pinned(ok).is_ok(), "{ok}");
        }
        for bad in ["moltmates/moltmate", "moltmates/moltmate:latest", "host:5000/moltmates/moltmate", ""] {
            assert!(pinned(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_operators_agent_pod_is_hardened_and_a_plain_pod_is_not() {
        use crate::builders::tests::{build_for, user};
        use crate::crd::Profile;
        for profile in Profile::ALL {
            let pod = build_for(&user("alice", profile)).pod;
            assert_eq!(problems(pod.spec.as_ref().unwrap()), Vec::<String>::new(), "{profile:?}");
        }
        let plain: k8s_openapi::api::core::v1::Pod =
            serde_json::from_value(serde_json::json!({"spec": {"containers": [{"name": "c", "image": "x:1"}]}}))
                .unwrap();
        let found = problems(plain.spec.as_ref().unwrap()).join("\n");
        for expected in [
            "service-account token",
            "may run as root",
            "writable root filesystem",
            "privilege escalation",
            "capabilities",
            "seccomp",
        ] {
            assert!(found.contains(expected), "{expected} not in {found}");
        }
    }
}
