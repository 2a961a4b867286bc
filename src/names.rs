//! Names and labels of everything the operator creates, in one place.

use std::collections::BTreeMap;

pub const NAMESPACE_PREFIX: &str = "moltmate-";
pub const FIELD_MANAGER: &str = "moltmate-operator";
pub const FINALIZER: &str = "moltmate.io/cleanup";

pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "moltmate-operator";
pub const LABEL_USER: &str = "moltmate.io/user";
pub const LABEL_COMPONENT: &str = "app.kubernetes.io/component";
pub const LABEL_NAME: &str = "app.kubernetes.io/name";
pub const LABEL_RETAINED: &str = "moltmate.io/retained";
pub const LABEL_POD_SECURITY_ENFORCE: &str = "pod-security.kubernetes.io/enforce";
pub const LABEL_POD_SECURITY_ENFORCE_VERSION: &str = "pod-security.kubernetes.io/enforce-version";
pub const ANNOTATION_SPEC_HASH: &str = "moltmate.io/spec-hash";
/// On a MoltmateUser: when its person last sent a message (RFC 3339), stamped by the gateway.
pub const ANNOTATION_LAST_ACTIVITY: &str = "moltmate.io/last-activity";
/// On a user's namespace: the Telegram id of the person whose workspace it holds.
pub const ANNOTATION_OWNER_TELEGRAM_ID: &str = "moltmate.io/owner-telegram-id";
/// On a workspace claim: the `spec.resetGeneration` its (empty) volume was made for.
pub const ANNOTATION_RESET_GENERATION: &str = "moltmate.io/reset-generation";

pub const SERVICE_ACCOUNT: &str = "agent";
pub const WORKSPACE_PVC: &str = "workspace";
pub const RESOURCE_QUOTA: &str = "moltmate-quota";
pub const LIMIT_RANGE: &str = "moltmate-limits";
pub const NETWORK_POLICY: &str = "moltmate-isolation";
pub const TOKEN_SECRET: &str = "agent-token";
pub const TOKEN_SECRET_KEY: &str = "token";
/// The Secrets a user namespace holds of ours; a copied pull Secret may not take these names.
pub const USER_NAMESPACE_OBJECTS: [&str; 1] = [TOKEN_SECRET];
pub const AGENT_SERVICE: &str = "agent";
pub const AGENT_POD: &str = "agent";
pub const AGENT_CONTAINER: &str = "agent";
/// The hostname the agent uses for the broker, pinned by hostAliases (agents get no DNS).
pub const BROKER_HOSTNAME: &str = "moltmate-broker";

/// Selector for everything this operator manages, used to scope its watches.
pub fn managed_selector() -> String {
    format!("{LABEL_MANAGED_BY}={MANAGED_BY}")
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NameError {
    #[error("namespace name {namespace:?} is {len} characters; Kubernetes allows 63, so the MoltmateUser name may have at most {max}", len = namespace.len(), max = 63 - NAMESPACE_PREFIX.len())]
    TooLong { namespace: String },
    #[error("namespace name {0:?} is not a DNS label (lowercase letters, digits and '-'); rename the MoltmateUser")]
    NotDnsLabel(String),
}

/// The namespace holding a user's sandbox, or why there cannot be one.
pub fn user_namespace(user_name: &str) -> Result<String, NameError> {
    let namespace = format!("{NAMESPACE_PREFIX}{user_name}");
    if namespace.len() > 63 {
        return Err(NameError::TooLong { namespace });
    }
    let label_ok = namespace.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !namespace.ends_with('-');
    if !label_ok {
        return Err(NameError::NotDnsLabel(namespace));
    }
    Ok(namespace)
}

/// Labels on every object owned for a user.
pub fn user_labels(user_name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_MANAGED_BY.to_string(), MANAGED_BY.to_string()),
        (LABEL_USER.to_string(), user_name.to_string()),
    ])
}

/// Labels on the agent pod; also the Service's selector.
pub fn agent_labels(user_name: &str) -> BTreeMap<String, String> {
    let mut labels = user_labels(user_name);
    labels.insert(LABEL_NAME.to_string(), "moltmate-agent".to_string());
    labels.insert(LABEL_COMPONENT.to_string(), "agent".to_string());
    labels
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_names() {
        assert_eq!(user_namespace("alice").as_deref(), Ok("moltmate-alice"));
        assert_eq!(user_namespace(&"a".repeat(54)).map(|n| n.len()), Ok(63));
        let too_long = user_namespace(&"a".repeat(55)).unwrap_err();
        assert!(too_long.to_string().contains("at most 54"), "{too_long}");
        assert!(matches!(user_namespace("bob.smith"), Err(NameError::NotDnsLabel(_))));
    }
}
