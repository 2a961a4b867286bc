//! The agent itself: workspace volume, token Secret, Service and the hardened Pod.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource, HTTPGetAction, HostAlias,
    PersistentVolumeClaim, PersistentVolumeClaimSpec, PersistentVolumeClaimVolumeSource, Pod, PodDNSConfig,
    PodSecurityContext, PodSpec, Probe, ResourceRequirements, SeccompProfile, Secret, SecretKeySelector,
    SecurityContext, Service, ServicePort, ServiceSpec, Volume, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use sha2::{Digest, Sha256};

use super::Ctx;
use crate::crd::{NetworkMode, WorkspaceAccess};
use crate::names;
use crate::profile::ResolvedProfile;
use crate::quantity::min_quantity;

/// The agent runs as this uid/gid, never root.
pub const AGENT_UID: i64 = 10001;
pub const WORKSPACE_MOUNT: &str = "/workspace";

/// What the agent asks the scheduler for: a little, capped by its limits.
pub(super) fn requests(profile: &ResolvedProfile) -> (&str, &str) {
    (min_quantity("100m", &profile.cpu), min_quantity("128Mi", &profile.memory))
}

pub(super) fn workspace(ctx: &Ctx) -> PersistentVolumeClaim {
    let mut claim = PersistentVolumeClaim {
        metadata: ctx.meta(names::WORKSPACE_PVC),
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: ctx.input.config.storage_class.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([("storage".into(), Quantity(ctx.input.profile.storage.clone()))])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    };
    stamp_reset_generation(&mut claim, ctx.reset_generation);
    claim
}

/// Record on a workspace claim the reset generation its volume was made for. Only once a
/// user has been reset: claims of users who never were stay as they were made.
pub fn stamp_reset_generation(claim: &mut PersistentVolumeClaim, generation: i64) {
    let annotations = claim.metadata.annotations.get_or_insert_with(BTreeMap::new);
    if generation > 0 {
        annotations.insert(names::ANNOTATION_RESET_GENERATION.into(), generation.to_string());
    } else {
        annotations.remove(names::ANNOTATION_RESET_GENERATION);
    }
    if annotations.is_empty() {
        claim.metadata.annotations = None;
    }
}

pub(super) fn token_secret(ctx: &Ctx) -> Secret {
    Secret {
        metadata: ctx.meta(names::TOKEN_SECRET),
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([(
            names::TOKEN_SECRET_KEY.into(),
            ByteString(ctx.input.agent_token.as_bytes().to_vec()),
        )])),
        ..Secret::default()
    }
}

pub(super) fn service(ctx: &Ctx) -> Service {
    let port = i32::from(ctx.input.config.agent_port);
    Service {
        metadata: ctx.meta(names::AGENT_SERVICE),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(names::agent_labels(ctx.user_name)),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                protocol: Some("TCP".into()),
                port,
                target_port: Some(IntOrString::Int(port)),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar { name: name.into(), value: Some(value.into()), ..EnvVar::default() }
}

fn quantities(pairs: &[(&str, &str)]) -> BTreeMap<String, Quantity> {
    pairs.iter().map(|(k, v)| (k.to_string(), Quantity(v.to_string()))).collect()
}

fn runtime_default_seccomp() -> SeccompProfile {
    SeccompProfile { type_: "RuntimeDefault".into(), ..SeccompProfile::default() }
}

fn probe(path: &str, period_seconds: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("http".into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period_seconds),
        ..Probe::default()
    }
}

/// The agent turns Ready only once it has found its egress blocked, which may be a moment
/// after it listens; a woken user's message waits for Ready, so the kubelet looks often. The
/// agent holds the first probe until that verdict (up to 800 ms, under the default 1 s
/// `timeoutSeconds`), so a start does not wait for the next period.
const READINESS_PERIOD_SECONDS: i32 = 1;
const LIVENESS_PERIOD_SECONDS: i32 = 10;

pub(super) fn pod(ctx: &Ctx) -> Pod {
    let profile = ctx.input.profile;
    let config = ctx.input.config;
    let read_only_workspace = profile.workspace_access == WorkspaceAccess::Ro;
    let (cpu_request, memory_request) = requests(profile);
    let image = profile.image.clone().unwrap_or_else(|| config.default_image.clone());
    let profile_json = serde_json::to_string(profile).expect("a resolved profile always serializes");
    let env_vars = vec![
        env("MOLTMATE_USER", ctx.user_name),
        env("MOLTMATE_TELEGRAM_ID", ctx.telegram_id.to_string()),
        env("MOLTMATE_WORKSPACE", WORKSPACE_MOUNT),
        env("MOLTMATE_LISTEN", format!("0.0.0.0:{}", config.agent_port)),
        env("MOLTMATE_BROKER_URL", format!("http://{}:{}", names::BROKER_HOSTNAME, config.broker_port)),
        env("MOLTMATE_PROFILE", profile_json),
        env("MOLTMATE_LOG_FORMAT", config.log_format.as_str()),
        EnvVar {
            name: "MOLTMATE_AGENT_TOKEN".into(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: names::TOKEN_SECRET.into(),
                    key: names::TOKEN_SECRET_KEY.into(),
                    ..SecretKeySelector::default()
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        },
    ];

    let container = Container {
        name: names::AGENT_CONTAINER.into(),
        image: Some(image),
        // The image's entrypoint runs it (the sandbox image's: the lean `moltmate-agent`); no
        // `command`, so that an image of one's own, a probe or a wrapper, keeps its entrypoint.
        args: Some(vec!["agent".into()]),
        ports: Some(vec![ContainerPort {
            name: Some("http".into()),
            container_port: i32::from(config.agent_port),
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        }]),
        env: Some(env_vars),
        resources: Some(ResourceRequirements {
            limits: Some(quantities(&[("cpu", &profile.cpu), ("memory", &profile.memory)])),
            requests: Some(quantities(&[("cpu", cpu_request), ("memory", memory_request)])),
            ..ResourceRequirements::default()
        }),
        security_context: Some(SecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(AGENT_UID),
            run_as_group: Some(AGENT_UID),
            read_only_root_filesystem: Some(true),
            allow_privilege_escalation: Some(false),
            privileged: Some(false),
            capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), ..Capabilities::default() }),
            seccomp_profile: Some(runtime_default_seccomp()),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(vec![
            VolumeMount {
                name: "workspace".into(),
                mount_path: WORKSPACE_MOUNT.into(),
                read_only: Some(read_only_workspace),
                ..VolumeMount::default()
            },
            VolumeMount { name: "tmp".into(), mount_path: "/tmp".into(), ..VolumeMount::default() },
        ]),
        readiness_probe: Some(probe("/readyz", READINESS_PERIOD_SECONDS)),
        liveness_probe: Some(probe("/healthz", LIVENESS_PERIOD_SECONDS)),
        ..Container::default()
    };

    // No DNS for sandboxed networks: lookups fail at once instead of leaking names to the
    // cluster resolver (a classic exfiltration channel); the broker is pinned in /etc/hosts.
    let (dns_policy, dns_config) = match profile.network {
        NetworkMode::Full => (None, None),
        NetworkMode::None | NetworkMode::Limited => (
            Some("None".to_string()),
            Some(PodDNSConfig { nameservers: Some(vec!["127.0.0.1".into()]), ..PodDNSConfig::default() }),
        ),
    };

    let mut spec = PodSpec {
        service_account_name: Some(names::SERVICE_ACCOUNT.into()),
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        host_aliases: ctx
            .input
            .broker_ip
            .map(|ip| vec![HostAlias { ip: ip.to_string(), hostnames: Some(vec![names::BROKER_HOSTNAME.into()]) }]),
        dns_policy,
        dns_config,
        restart_policy: Some("Always".into()),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(AGENT_UID),
            run_as_group: Some(AGENT_UID),
            fs_group: Some(AGENT_UID),
            seccomp_profile: Some(runtime_default_seccomp()),
            ..PodSecurityContext::default()
        }),
        containers: vec![container],
        volumes: Some(vec![
            Volume {
                name: "workspace".into(),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: names::WORKSPACE_PVC.into(),
                    read_only: Some(read_only_workspace),
                }),
                ..Volume::default()
            },
            Volume {
                name: "tmp".into(),
                empty_dir: Some(EmptyDirVolumeSource {
                    size_limit: Some(Quantity("64Mi".into())),
                    ..EmptyDirVolumeSource::default()
                }),
                ..Volume::default()
            },
        ]),
        ..PodSpec::default()
    };
    ctx.input.config.agent_pod.apply(&mut spec);

    let mut metadata = ctx.meta(names::AGENT_POD);
    metadata.labels = Some(names::agent_labels(ctx.user_name));
    let mut pod = Pod { metadata, spec: Some(spec), ..Pod::default() };
    let hash = spec_hash(&pod, ctx.input.agent_token);
    pod.metadata.annotations = Some(BTreeMap::from([(names::ANNOTATION_SPEC_HASH.into(), hash)]));
    pod
}

/// A pod's spec cannot be edited in place; this hash tells when it must be replaced. The
/// token is in it too: the pod reads it from its Secret only at start, so a new token (a
/// rotated master key) needs a new pod, or the gateway and the agent would disagree.
pub fn spec_hash(pod: &Pod, agent_token: &str) -> String {
    let token = hex::encode(Sha256::digest(agent_token.as_bytes()));
    let json = serde_json::to_vec(&(&pod.metadata.labels, &pod.spec, token)).expect("a pod always serializes");
    hex::encode(&Sha256::digest(&json)[..12])
}

#[cfg(test)]
mod tests {
    use crate::builders::tests::{build_for, user};
    use crate::crd::{NetworkMode, Profile, SandboxSpec};
    use crate::names;
    use crate::profile::ResolvedProfile;

    #[test]
    fn pod_is_hardened() {
        let d = build_for(&user("alice", Profile::Personal));
        let spec = d.pod.spec.unwrap();
        assert_eq!(spec.automount_service_account_token, Some(false));
        assert_eq!(spec.enable_service_links, Some(false));
        assert_eq!(spec.service_account_name.as_deref(), Some("agent"));
        assert!(spec.host_network.is_none() && spec.host_pid.is_none() && spec.host_ipc.is_none());
        let psc = spec.security_context.unwrap();
        assert_eq!((psc.run_as_non_root, psc.run_as_user), (Some(true), Some(10001)));
        assert_eq!(psc.seccomp_profile.unwrap().type_, "RuntimeDefault");
        let c = &spec.containers[0];
        // The image's entrypoint (the sandbox image's `moltmate-agent`) runs `agent`.
        assert_eq!((c.command.as_deref(), c.args.as_deref()), (None, Some(&["agent".to_string()][..])));
        let sc = c.security_context.as_ref().unwrap();
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(sc.capabilities.as_ref().unwrap().drop.as_deref(), Some(&["ALL".to_string()][..]));
        for v in spec.volumes.unwrap() {
            assert!(v.host_path.is_none(), "no hostPath volumes");
        }
        let mounts: Vec<_> = c.volume_mounts.as_ref().unwrap().iter().map(|m| m.mount_path.as_str()).collect();
        assert_eq!(mounts, ["/workspace", "/tmp"]);
    }

    #[test]
    fn pod_carries_the_resolved_profile_and_token_reference() {
        let d = build_for(&user("alice", Profile::Family));
        let c = &d.pod.spec.as_ref().unwrap().containers[0];
        let env = c.env.as_ref().unwrap();
        let value = |n: &str| env.iter().find(|e| e.name == n).and_then(|e| e.value.clone());
        let profile: ResolvedProfile = serde_json::from_str(&value("MOLTMATE_PROFILE").unwrap()).unwrap();
        assert_eq!(profile.profile, Profile::Family);
        assert_eq!(value("MOLTMATE_BROKER_URL").as_deref(), Some("http://moltmate-broker:8081"));
        assert_eq!(value("MOLTMATE_LOG_FORMAT").as_deref(), Some("text"), "as the operator logs");
        let token = env.iter().find(|e| e.name == "MOLTMATE_AGENT_TOKEN").unwrap();
        assert!(token.value.is_none(), "the token comes from the Secret, not a literal");
        assert_eq!(token.value_from.as_ref().unwrap().secret_key_ref.as_ref().unwrap().name, "agent-token");
        let limits = c.resources.as_ref().unwrap().limits.as_ref().unwrap();
        assert_eq!((limits["cpu"].0.as_str(), limits["memory"].0.as_str()), ("1", "1Gi"));
        assert_eq!(d.token_secret.data.unwrap()["token"].0, b"t0ken");
    }

    #[test]
    fn read_only_workspace_for_high_security() {
        let d = build_for(&user("alice", Profile::HighSecurity));
        let spec = d.pod.spec.unwrap();
        assert_eq!(spec.containers[0].volume_mounts.as_ref().unwrap()[0].read_only, Some(true));
        assert_eq!(spec.volumes.as_ref().unwrap()[0].persistent_volume_claim.as_ref().unwrap().read_only, Some(true));
        // Requests never exceed the profile's small limits.
        let requests = spec.containers[0].resources.as_ref().unwrap().requests.clone().unwrap();
        assert_eq!(requests["cpu"].0, "100m");
        assert_eq!(requests["memory"].0, "128Mi");
    }

    #[test]
    fn sandboxed_networks_get_no_dns_but_the_broker_in_hosts() {
        let public = build_for(&user("alice", Profile::Public)).pod.spec.unwrap();
        assert_eq!(public.dns_policy.as_deref(), Some("None"));
        assert_eq!(public.dns_config.unwrap().nameservers.unwrap(), ["127.0.0.1"]);
        let alias = &public.host_aliases.unwrap()[0];
        assert_eq!(
            (alias.ip.as_str(), alias.hostnames.as_ref().unwrap()[0].as_str()),
            ("10.96.0.10", "moltmate-broker")
        );
        let mut u = user("alice", Profile::Public);
        u.spec.sandbox = Some(SandboxSpec { network: Some(NetworkMode::Full), ..Default::default() });
        assert!(build_for(&u).pod.spec.unwrap().dns_policy.is_none());
    }

    #[test]
    fn spec_hash_changes_with_what_requires_a_new_pod() {
        let base = build_for(&user("alice", Profile::Public)).pod;
        let hash = |p: &k8s_openapi::api::core::v1::Pod| {
            p.metadata.annotations.as_ref().unwrap()[names::ANNOTATION_SPEC_HASH].clone()
        };
        let mut u = user("alice", Profile::Public);
        u.spec.sandbox = Some(SandboxSpec { image: Some("other/image:2".into()), ..Default::default() });
        assert_ne!(hash(&base), hash(&build_for(&u).pod), "image");
        assert_ne!(hash(&base), hash(&build_for(&user("alice", Profile::Family)).pod), "profile");
        assert_eq!(hash(&base), hash(&build_for(&user("alice", Profile::Public)).pod));
        let u = user("alice", Profile::Public);
        let (profile, config) = (crate::profile::resolve(&u.spec).unwrap(), crate::builders::ClusterConfig::default());
        let input = crate::builders::BuildInput {
            profile: &profile,
            config: &config,
            agent_token: "rotated",
            broker_ip: Some("10.96.0.10"),
            node_addresses: &[],
            pull_secrets: &[],
        };
        assert_ne!(
            hash(&base),
            hash(&crate::builders::build(&u, &input).unwrap().pod),
            "a new token (rotated master key)"
        );
        // Settings only the operator reads leave the running agent alone.
        let mut u = user("alice", Profile::Public);
        u.spec.idle_timeout = Some("2h".into());
        u.spec.workspace = Some(crate::crd::WorkspaceSpec { deletion_policy: crate::crd::DeletionPolicy::Delete });
        assert_eq!(hash(&base), hash(&build_for(&u).pod), "idleTimeout and deletionPolicy");
    }

    #[test]
    fn a_reset_generation_is_recorded_on_the_claim_and_leaves_the_pod_alone() {
        let generation = |c: &k8s_openapi::api::core::v1::PersistentVolumeClaim| {
            c.metadata.annotations.as_ref().and_then(|a| a.get(names::ANNOTATION_RESET_GENERATION).cloned())
        };
        let base = build_for(&user("alice", Profile::Public));
        assert_eq!(generation(&base.workspace), None, "never reset: the claim is as it always was");
        let mut u = user("alice", Profile::Public);
        u.spec.reset_generation = 2;
        let reset = build_for(&u);
        assert_eq!(generation(&reset.workspace).as_deref(), Some("2"));
        // The operator replaces the pod itself, with the volume; the pod's spec does not change.
        assert_eq!(reset.pod, base.pod);
    }
}
