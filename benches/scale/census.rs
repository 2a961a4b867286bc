//! What the operator left behind, checked (pure): exactly one of each object per user
//! namespace, nothing that belongs to no user, and no PersistentVolumeClaim ever deleted or
//! replaced (from the API server's audit log, and from the uids a watch saw).

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;

/// Every kind the operator makes per user; the census expects exactly one of each.
pub const KINDS: &[&str] = &[
    "Namespace",
    "ServiceAccount",
    "NetworkPolicy",
    "ResourceQuota",
    "LimitRange",
    "Secret",
    "Service",
    "PersistentVolumeClaim",
    "Pod",
];
/// At most this many entries of a list are kept in the report.
const LISTED: usize = 20;

#[derive(Debug, Clone)]
pub struct UserRef {
    pub name: String,
    pub uid: String,
}

/// One object as listed: a namespace has its own name as `namespace`.
#[derive(Debug, Clone)]
pub struct Object {
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
    /// The `moltmate.io/user` label.
    pub user_label: Option<String>,
    pub owner_uids: Vec<String>,
    /// Secrets only: their `type`.
    pub secret_type: Option<String>,
}

/// Objects Kubernetes itself makes in every namespace (not the operator's).
fn kubernetes_own(o: &Object) -> bool {
    (o.kind == "ServiceAccount" && o.name == "default")
        || o.secret_type.as_deref() == Some("kubernetes.io/service-account-token")
}

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Census {
    pub users: usize,
    /// The operator's objects counted, by kind.
    pub per_kind: BTreeMap<String, usize>,
    /// `user: N Kinds (names)` where there is more than one.
    pub duplicates: Vec<String>,
    /// `user: no Kind`.
    pub missing: Vec<String>,
    /// Objects in a user namespace that no user owns: no such user, another user's label, or
    /// no owner reference to the user's uid.
    pub orphans: Vec<String>,
}

impl Census {
    pub fn duplicate_count(&self) -> usize {
        self.duplicates.len()
    }

    /// Trimmed for the report.
    pub fn listed(&self) -> Census {
        let cut = |v: &Vec<String>| v.iter().take(LISTED).cloned().collect();
        Census {
            duplicates: cut(&self.duplicates),
            missing: cut(&self.missing),
            orphans: cut(&self.orphans),
            ..self.clone()
        }
    }
}

/// Check `objects` (everything in the user namespaces `moltmate-<user>`, and anything else
/// labelled as the operator's) against `users`; `user_namespace` names a user's namespace.
pub fn census(users: &[UserRef], objects: &[Object], user_namespace: impl Fn(&str) -> String) -> Census {
    let by_namespace: HashMap<String, &UserRef> = users.iter().map(|u| (user_namespace(&u.name), u)).collect();
    let mut found: HashMap<(&str, &str), Vec<&str>> = HashMap::new();
    let mut c = Census { users: users.len(), ..Census::default() };
    for o in objects.iter().filter(|o| !kubernetes_own(o)) {
        let what = format!("{} {}/{}", o.kind, o.namespace, o.name);
        let Some(user) = by_namespace.get(&o.namespace) else {
            c.orphans.push(format!("{what}: no MoltmateUser has this namespace"));
            continue;
        };
        if o.user_label.as_deref() != Some(user.name.as_str()) {
            c.orphans.push(format!("{what}: labelled for {:?}, in the namespace of {}", o.user_label, user.name));
        } else if !o.owner_uids.contains(&user.uid) {
            c.orphans.push(format!("{what}: not owned by MoltmateUser {} (uid {})", user.name, user.uid));
        } else {
            *c.per_kind.entry(o.kind.to_string()).or_default() += 1;
            found.entry((user.name.as_str(), o.kind)).or_default().push(o.name.as_str());
        }
    }
    for user in users {
        for kind in KINDS {
            match found.get(&(user.name.as_str(), *kind)).map(Vec::as_slice) {
                None | Some([]) => c.missing.push(format!("{}: no {kind}", user.name)),
                Some([_]) => {}
                Some(names) => {
                    c.duplicates.push(format!("{}: {} {kind}s ({})", user.name, names.len(), names.join(", ")))
                }
            }
        }
    }
    for list in [&mut c.duplicates, &mut c.missing, &mut c.orphans] {
        list.sort();
    }
    c
}

/// Requests of any identity that delete claims or user namespaces (whose claims go with them).
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct PvcRequests {
    /// `delete`/`deletecollection` on persistentvolumeclaims, as `time user verb ns/name -> code`.
    pub deletes: Vec<String>,
    /// `delete` of a namespace with the user prefix.
    pub namespace_deletes: Vec<String>,
    /// Requests that created a claim (`201`: a create, or a server-side apply that created).
    pub creates: usize,
}

/// Read the audit log's completed requests.
pub fn pvc_requests(entries: &[Value], namespace_prefix: &str) -> PvcRequests {
    let mut r = PvcRequests::default();
    for e in entries.iter().filter(|e| e["stage"] == "ResponseComplete") {
        let (verb, object) = (e["verb"].as_str().unwrap_or_default(), &e["objectRef"]);
        let resource = object["resource"].as_str().unwrap_or_default();
        let code = e["responseStatus"]["code"].as_i64().unwrap_or_default();
        let line = || {
            let ns = object["namespace"].as_str().map(|n| format!("{n}/")).unwrap_or_default();
            format!(
                "{} {} {verb} {ns}{} -> {code}",
                e["stageTimestamp"].as_str().unwrap_or_default(),
                e["user"]["username"].as_str().unwrap_or_default(),
                object["name"].as_str().unwrap_or_default()
            )
        };
        let deleting = verb == "delete" || verb == "deletecollection";
        if resource == "persistentvolumeclaims" && object["subresource"].is_null() {
            if deleting {
                r.deletes.push(line());
            } else if code == 201 {
                r.creates += 1;
            }
        } else if resource == "namespaces"
            && deleting
            && object["name"].as_str().is_some_and(|n| n.starts_with(namespace_prefix))
        {
            r.namespace_deletes.push(line());
        }
    }
    r
}

/// A claim as a watch saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sighting {
    /// `namespace/name`
    pub key: String,
    pub uid: String,
    pub deleted: bool,
}

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct UidCheck {
    pub claims: usize,
    /// A claim seen with another uid than at its first sighting: deleted and made anew.
    pub changed: Vec<String>,
    /// Deletions the watch saw.
    pub deleted: Vec<String>,
}

pub fn uid_check(sightings: &[Sighting]) -> UidCheck {
    let mut first: HashMap<&str, &str> = HashMap::new();
    let mut check = UidCheck::default();
    for s in sightings {
        if s.deleted {
            check.deleted.push(format!("{} (uid {})", s.key, s.uid));
        }
        let uid = *first.entry(&s.key).or_insert(&s.uid);
        if uid != s.uid && !check.changed.iter().any(|c| c.starts_with(&format!("{}:", s.key))) {
            check.changed.push(format!("{}: uid {uid} first, then {}", s.key, s.uid));
        }
    }
    check.claims = first.len();
    check
}

pub fn self_test() {
    let ns = |u: &str| format!("moltmate-{u}");
    let users = vec![UserRef { name: "a".into(), uid: "ua".into() }, UserRef { name: "b".into(), uid: "ub".into() }];
    let obj = |kind: &'static str, user: &str, name: &str, uid: &str| Object {
        kind,
        namespace: ns(user),
        name: name.into(),
        user_label: Some(user.into()),
        owner_uids: vec![uid.into()],
        secret_type: None,
    };
    let mut objects: Vec<Object> =
        KINDS.iter().flat_map(|k| [obj(k, "a", "x", "ua"), obj(k, "b", "x", "ub")]).collect();
    let clean = census(&users, &objects, ns);
    assert!(clean.duplicates.is_empty() && clean.missing.is_empty() && clean.orphans.is_empty(), "{clean:?}");
    assert_eq!(clean.per_kind["Pod"], 2);
    // Kubernetes' own objects are not counted.
    objects.push(Object {
        name: "default".into(),
        user_label: None,
        owner_uids: vec![],
        ..obj("ServiceAccount", "a", "", "")
    });
    objects.push(Object {
        secret_type: Some("kubernetes.io/service-account-token".into()),
        user_label: None,
        ..obj("Secret", "a", "t", "")
    });
    assert!(census(&users, &objects, ns).orphans.is_empty());
    // A second claim, a pod gone, a leftover namespace, a stale owner.
    objects.push(obj("PersistentVolumeClaim", "a", "workspace-2", "ua"));
    objects.retain(|o| !(o.kind == "Pod" && o.namespace == "moltmate-b"));
    objects.push(obj("Namespace", "gone", "moltmate-gone", "ug"));
    objects.push(obj("Service", "b", "extra", "old-uid"));
    let c = census(&users, &objects, ns);
    assert_eq!(c.duplicates, vec!["a: 2 PersistentVolumeClaims (x, workspace-2)".to_string()]);
    assert_eq!(c.missing, vec!["b: no Pod".to_string()]);
    assert_eq!(c.orphans.len(), 2, "{:?}", c.orphans);
    assert!(c.orphans[0].contains("no MoltmateUser") && c.orphans[1].contains("not owned"), "{:?}", c.orphans);

    let entry = |user: &str, verb: &str, resource: &str, name: &str, code: i64| {
        serde_json::json!({ "stage": "ResponseComplete", "verb": verb, "user": { "username": user }, "stageTimestamp": "t",
            "objectRef": { "resource": resource, "namespace": "moltmate-a", "name": name }, "responseStatus": { "code": code } })
    };
    let entries = vec![
        entry("op", "create", "persistentvolumeclaims", "workspace", 201),
        entry("op", "patch", "persistentvolumeclaims", "workspace", 201),
        entry("op", "create", "persistentvolumeclaims", "workspace", 409),
        entry("op", "patch", "persistentvolumeclaims", "workspace", 200),
        entry("gc", "delete", "persistentvolumeclaims", "workspace", 200),
        entry("ns", "deletecollection", "persistentvolumeclaims", "", 200),
        entry("op", "delete", "namespaces", "moltmate-a", 200),
        entry("op", "delete", "namespaces", "other", 200),
        entry("op", "delete", "pods", "agent", 200),
        serde_json::json!({ "stage": "ResponseStarted", "verb": "delete", "objectRef": { "resource": "persistentvolumeclaims" } }),
    ];
    let r = pvc_requests(&entries, "moltmate-");
    assert_eq!((r.creates, r.deletes.len(), r.namespace_deletes.len()), (2, 2, 1), "{r:?}");
    assert_eq!(r.deletes[0], "t gc delete moltmate-a/workspace -> 200");
    assert_eq!(pvc_requests(&entries[..4], "moltmate-").deletes.len(), 0);

    let s = |key: &str, uid: &str, deleted: bool| Sighting { key: key.into(), uid: uid.into(), deleted };
    let steady = uid_check(&[s("a/w", "1", false), s("b/w", "2", false), s("a/w", "1", false)]);
    assert_eq!((steady.claims, steady.changed.len(), steady.deleted.len()), (2, 0, 0));
    let replaced = uid_check(&[s("a/w", "1", false), s("a/w", "1", true), s("a/w", "3", false), s("a/w", "3", false)]);
    assert_eq!(replaced.changed, vec!["a/w: uid 1 first, then 3".to_string()]);
    assert_eq!(replaced.deleted.len(), 1);
}
