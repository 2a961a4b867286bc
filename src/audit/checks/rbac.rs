//! RBAC in sandbox namespaces: the operator binds no role there, and the agent's
//! ServiceAccount has no token mounted. Any binding that reaches into a sandbox (a RoleBinding
//! there, or a ClusterRoleBinding naming one of its ServiceAccounts) was made by someone else
//! and hands the Kubernetes API to whatever runs there.

use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleBinding, RoleRef, Subject};
use kube::ResourceExt;

use crate::audit::finding::{Finding, object};
use crate::audit::snapshot::{Snapshot, in_namespace};

pub const CHECK: &str = "rbac-bindings";

fn role(role_ref: &RoleRef) -> String {
    format!("{} {}", role_ref.kind, role_ref.name)
}

fn subjects(subjects: &[Subject]) -> String {
    let shown: Vec<String> = subjects
        .iter()
        .map(|s| match &s.namespace {
            Some(ns) => format!("{} {ns}/{}", s.kind, s.name),
            None => format!("{} {}", s.kind, s.name),
        })
        .collect();
    shown.join(", ")
}

pub fn check(snap: &Snapshot, out: &mut Vec<Finding>) {
    let sandboxes = snap.sandbox_namespaces();
    for ns in &sandboxes {
        let bindings: Vec<&RoleBinding> = in_namespace(&snap.role_bindings, ns).collect();
        if bindings.is_empty() {
            out.push(Finding::pass(
                CHECK,
                object("Namespace", None, ns),
                "no RoleBinding: nothing there may use the Kubernetes API",
            ));
        }
        for binding in bindings {
            out.push(Finding::fail(
                CHECK,
                object("RoleBinding", Some(ns), &binding.name_any()),
                format!(
                    "binds {} to {} in a sandbox namespace; the operator binds no role there",
                    role(&binding.role_ref),
                    subjects(binding.subjects.as_deref().unwrap_or_default())
                ),
                format!("kubectl delete rolebinding -n {ns} {}", binding.name_any()),
            ));
        }
    }
    let into_a_sandbox = |b: &&ClusterRoleBinding| {
        b.subjects
            .iter()
            .flatten()
            .any(|s| s.kind == "ServiceAccount" && s.namespace.as_ref().is_some_and(|ns| sandboxes.contains(ns)))
    };
    for binding in snap.cluster_role_bindings.iter().filter(into_a_sandbox) {
        out.push(Finding::fail(
            CHECK,
            object("ClusterRoleBinding", None, &binding.name_any()),
            format!(
                "binds {} cluster-wide to {}, a ServiceAccount of a sandbox namespace",
                role(&binding.role_ref),
                subjects(binding.subjects.as_deref().unwrap_or_default())
            ),
            format!("kubectl delete clusterrolebinding {}", binding.name_any()),
        ));
    }
}
