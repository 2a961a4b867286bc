//! Watch caches of the operator and the gateway: how objects are listed and what of them is
//! kept. Memory at 1,000 users is mostly these caches and the lists that fill them
//! (scripts/bench, memory), so both are kept small here, in one place.

use std::borrow::Cow;
use std::fmt::Debug;
use std::marker::PhantomData;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures::{Stream, StreamExt, future};
use k8s_openapi::api::core::v1::{
    Namespace, Node, NodeStatus, PersistentVolumeClaim, Pod, PodStatus, ResourceQuota, Service,
};
use kube::runtime::reflector::{self, Lookup, Store};
use kube::runtime::utils::Backoff;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::warn;

use crate::crd::MoltmateUser;

/// Objects per page of a (re)list. A page is parsed whole, managed fields included, before
/// they are dropped; unpaged lists of every kind at once (`any_semantic`, which the API server
/// answers from its watch cache without paging) peaked the operator's heap at start-up at 2.5
/// times what its caches hold, and the allocator keeps such a peak resident (scripts/bench,
/// memory: 92 MiB after a restart at 500 users, 61 MiB with pages of 50).
pub const LIST_PAGE: u32 = 50;

/// How a watch retries after an error: after 0.5 s, then twice as long each time, at most 5 s
/// apart; a success starts over. kube's default (0.8 s to 30 s, client-go's) let a resumed
/// watch's `410 Expired` wait another 30 s before the re-list, so the operator took up a new
/// user a minute after an API server was back (scripts/bench, chaos-apiserver). One operator
/// and one gateway retrying a dozen watches every 5 s is no load for an API server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchRetry {
    next: Duration,
}

impl WatchRetry {
    const FIRST: Duration = Duration::from_millis(500);
    const LONGEST: Duration = Duration::from_secs(5);
}

impl Default for WatchRetry {
    fn default() -> Self {
        Self { next: Self::FIRST }
    }
}

impl Iterator for WatchRetry {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let delay = self.next;
        self.next = (delay * 2).min(Self::LONGEST);
        Some(delay)
    }
}

impl Backoff for WatchRetry {
    fn reset(&mut self) {
        *self = Self::default();
    }
}

/// How long one watch request lasts before it is made anew from where it was (the API server
/// ends it, or the client gives up on a silent one 5 s later). kube's default, 290 s, left a
/// watch that went silent across an API server restart unnoticed for 5 minutes; a new watch a
/// minute per kind is no load.
const WATCH_TIMEOUT_SECS: u32 = 60;

/// The list-and-watch configuration of every cache.
pub fn config() -> watcher::Config {
    watcher::Config::default().page_size(LIST_PAGE).timeout(WATCH_TIMEOUT_SECS)
}

/// A reflector over `api` objects matching `config`, with `trim` dropping what no reader
/// needs before an object is stored; returns the store and its watch events, which must be
/// polled to keep the store up to date.
///
/// Watch errors are logged here and never passed on: the watcher already backs off on its own
/// (`WatchRetry`). Passed on to a `Controller`, each error also paused its merged trigger
/// stream, and with it every other watch, for up to 30 s, with that backoff reset only after
/// 2 minutes without an error: after an API server restart the operator's caches stalled for
/// minutes (scripts/bench, chaos-apiserver).
pub fn reflect<K>(
    api: Api<K>,
    config: watcher::Config,
    trim: fn(&mut K),
) -> (Store<K>, impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static)
where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Send + Sync + 'static,
{
    let (reader, writer) = reflector::store();
    let events = retrying(api, config)
        .modify(move |object| {
            // Managed fields are bookkeeping nothing here reads.
            object.managed_fields_mut().clear();
            trim(object);
        })
        .reflect(writer);
    (reader, without_errors::<K, _>(events).map(Ok))
}

/// As `reflect`, but each object is stored as its JSON text, compressed (`Compact`), rather
/// than as the k8s-openapi struct, and without the metadata only the API server reads
/// (`trim_metadata`). The structs hold every optional field inline (an empty `Pod` is
/// kilobytes), and each string, label and quantity is an allocation of its own: at 1,000
/// users the owned kinds kept whole were most of the operator's memory (scripts/bench,
/// memory). A reader decodes the one object it looks up (`Compact::decode`), the same object
/// it would have read.
///
/// The events passed on carry the trimmed objects themselves, for the controller's mappers.
pub fn reflect_compact<K>(
    api: Api<K>,
    config: watcher::Config,
    trim: fn(&mut K),
) -> (Store<Compact<K>>, impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static)
where
    K: Resource<DynamicType = ()> + Clone + Debug + Serialize + DeserializeOwned + Send + Sync + 'static,
{
    let (reader, mut writer) = reflector::store::<Compact<K>>();
    let dictionary = Dictionary::default();
    let events = retrying(api, config)
        .modify(move |object| {
            trim_metadata(object);
            trim(object);
        })
        .inspect(move |event| {
            if let Ok(event) = event {
                writer.apply_watcher_event(&compact_event(event, &dictionary));
            }
        });
    (reader, without_errors::<K, _>(events).map(Ok))
}

/// A watch event with its object as a `Compact`.
fn compact_event<K: Resource<DynamicType = ()> + Serialize>(
    event: &watcher::Event<K>,
    dictionary: &Dictionary,
) -> watcher::Event<Compact<K>> {
    match event {
        watcher::Event::Apply(object) => watcher::Event::Apply(Compact::encode(object, dictionary)),
        watcher::Event::Delete(object) => watcher::Event::Delete(Compact::encode(object, dictionary)),
        watcher::Event::Init => watcher::Event::Init,
        watcher::Event::InitApply(object) => watcher::Event::InitApply(Compact::encode(object, dictionary)),
        watcher::Event::InitDone => watcher::Event::InitDone,
    }
}

/// What one cache's objects are compressed against: the JSON of the first object it stored.
/// The operator's objects of one kind differ in little more than their user's name, uid and
/// addresses, so each compresses to a tenth or less of its JSON against another (a user's nine
/// objects, taken whole from an API server: 9.0 KiB of JSON to 0.64 KiB).
#[derive(Default)]
pub struct Dictionary(OnceLock<Arc<[u8]>>);

impl Dictionary {
    fn get_or_take(&self, json: &str) -> Arc<[u8]> {
        self.0.get_or_init(|| Arc::from(json.as_bytes())).clone()
    }
}

/// Drop what the API server keeps for itself and no reader here needs: managed fields,
/// kubectl's last applied manifest, and the identity and version fields (the operator applies
/// server-side and never sends a resourceVersion; what it compares is what it sets).
pub fn trim_metadata<K: Resource>(object: &mut K) {
    let meta = object.meta_mut();
    meta.managed_fields = None;
    meta.resource_version = None;
    meta.uid = None;
    meta.creation_timestamp = None;
    meta.generation = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove(LAST_APPLIED);
        if annotations.is_empty() {
            meta.annotations = None;
        }
    }
}

/// An object of kind `K` kept as its JSON text, LZ4-compressed against its cache's
/// `Dictionary`, with its name and namespace for the store's key, in one allocation (`bytes`
/// is the name, the namespace, then the compressed JSON; at a dozen objects per user, two
/// strings more each were a tenth of what the caches hold).
pub struct Compact<K> {
    bytes: Box<[u8]>,
    name_end: u32,
    /// Where the namespace ends, for a namespaced object.
    namespace_end: Option<u32>,
    /// The length of the JSON, to decompress it.
    json_len: u32,
    dictionary: Arc<[u8]>,
    kind: PhantomData<fn() -> K>,
}

impl<K> Clone for Compact<K> {
    fn clone(&self) -> Self {
        Self {
            bytes: self.bytes.clone(),
            name_end: self.name_end,
            namespace_end: self.namespace_end,
            json_len: self.json_len,
            dictionary: self.dictionary.clone(),
            kind: PhantomData,
        }
    }
}

impl<K> Debug for Compact<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compact").field("namespace", &self.namespace()).field("name", &self.name()).finish()
    }
}

impl<K> Compact<K> {
    fn name(&self) -> &str {
        // Both were whole `String`s when stored.
        std::str::from_utf8(&self.bytes[..self.name_end as usize]).unwrap_or_default()
    }

    fn namespace(&self) -> Option<&str> {
        let range = self.name_end as usize..self.namespace_end? as usize;
        Some(std::str::from_utf8(&self.bytes[range]).unwrap_or_default())
    }

    fn compressed_json(&self) -> &[u8] {
        &self.bytes[self.namespace_end.unwrap_or(self.name_end) as usize..]
    }
}

impl<K: Resource + Serialize> Compact<K> {
    /// `object`, compressed against `dictionary` (which it becomes, if it is the first).
    pub fn encode(object: &K, dictionary: &Dictionary) -> Self {
        let meta = object.meta();
        let name = meta.name.as_deref().unwrap_or_default();
        // k8s-openapi objects always serialise (string keys only); were one not to, the
        // empty text decodes to nothing, and the object counts as missing and is applied.
        let json = serde_json::to_string(object).unwrap_or_default();
        let dictionary = dictionary.get_or_take(&json);
        let compressed = lz4_flex::block::compress_with_dict(json.as_bytes(), &dictionary);
        let namespace_len = meta.namespace.as_ref().map_or(0, String::len);
        let mut bytes = Vec::with_capacity(name.len() + namespace_len + compressed.len());
        bytes.extend_from_slice(name.as_bytes());
        let name_end = offset(&bytes);
        let namespace_end = meta.namespace.as_deref().map(|namespace| {
            bytes.extend_from_slice(namespace.as_bytes());
            offset(&bytes)
        });
        bytes.extend_from_slice(&compressed);
        Self {
            bytes: bytes.into_boxed_slice(),
            name_end,
            namespace_end,
            json_len: offset(json.as_bytes()),
            dictionary,
            kind: PhantomData,
        }
    }
}

/// Names and namespaces are at most 253 bytes; an object's JSON is far below 4 GiB.
fn offset(bytes: &[u8]) -> u32 {
    u32::try_from(bytes.len()).unwrap_or(u32::MAX)
}

impl<K: DeserializeOwned> Compact<K> {
    /// The object as it was stored.
    pub fn decode(&self) -> Option<K> {
        let decoded =
            lz4_flex::block::decompress_with_dict(self.compressed_json(), self.json_len as usize, &self.dictionary)
                .map_err(|e| e.to_string())
                .and_then(|json| serde_json::from_slice(&json).map_err(|e| e.to_string()));
        match decoded {
            Ok(object) => Some(object),
            Err(error) => {
                warn!(name = %self.name(), error = %error, "cached object does not decode; treating it as missing");
                None
            }
        }
    }
}

impl<K: Resource<DynamicType = ()>> Lookup for Compact<K> {
    type DynamicType = ();

    fn kind(_: &()) -> Cow<'_, str> {
        K::kind(&())
    }

    fn group(_: &()) -> Cow<'_, str> {
        K::group(&())
    }

    fn version(_: &()) -> Cow<'_, str> {
        K::version(&())
    }

    fn plural(_: &()) -> Cow<'_, str> {
        K::plural(&())
    }

    fn name(&self) -> Option<Cow<'_, str>> {
        Some(Cow::Borrowed(Compact::name(self)))
    }

    fn namespace(&self) -> Option<Cow<'_, str>> {
        Compact::namespace(self).map(Cow::Borrowed)
    }

    // Not kept: the store's key needs neither, and each would be two more strings per object.
    fn resource_version(&self) -> Option<Cow<'_, str>> {
        None
    }

    fn uid(&self) -> Option<Cow<'_, str>> {
        None
    }
}

/// The watch events of `api` objects matching `config`, without a cache (the node stand-in's
/// kubelet loop): retried and logged as every cache's are.
pub fn watch<K>(api: Api<K>, config: watcher::Config) -> impl Stream<Item = watcher::Event<K>> + Send + 'static
where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Send + Sync + 'static,
{
    without_errors::<K, _>(retrying(api, config))
}

fn retrying<K>(
    api: Api<K>,
    config: watcher::Config,
) -> impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static
where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Send + Sync + 'static,
{
    watcher(api, config).backoff(WatchRetry::default())
}

/// Watch errors logged and dropped (see `reflect`: the watcher retries on its own).
fn without_errors<K: Resource<DynamicType = ()>, T: Send + 'static>(
    events: impl Stream<Item = Result<T, watcher::Error>> + Send + 'static,
) -> impl Stream<Item = T> + Send + 'static {
    events.filter_map(|event| {
        future::ready(match event {
            Ok(event) => Some(event),
            Err(error) => {
                warn!(kind = %K::kind(&()), error = %error, "watch failed; retrying");
                None
            }
        })
    })
}

/// Keep an object whole (managed fields aside).
pub fn keep_all<K>(_: &mut K) {}

/// A MoltmateUser without kubectl's copy of its last applied manifest, which no reader needs.
pub fn trim_user(user: &mut MoltmateUser) {
    user.annotations_mut().remove(LAST_APPLIED);
}

const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// What the operator reads of a node: its addresses (see `builders::network`). A node's
/// status is mostly images and conditions, none of which matter here.
pub fn trim_node(node: &mut Node) {
    node.spec = None;
    node.metadata.labels = None;
    node.metadata.annotations = None;
    if let Some(status) = node.status.take() {
        node.status = Some(NodeStatus { addresses: status.addresses, ..Default::default() });
    }
}

/// What the operator reads of its namespaces: their metadata. Spec (the `kubernetes`
/// finalizer) and status (the phase) are the API server's; a namespace going away shows in
/// its deletion mark.
pub fn trim_namespace(namespace: &mut Namespace) {
    namespace.spec = None;
    namespace.status = None;
}

/// What the operator reads of a workspace claim: its metadata and spec (the size it was made
/// with). The status is the volume binder's.
pub fn trim_claim(claim: &mut PersistentVolumeClaim) {
    claim.status = None;
}

/// What the operator reads of a quota: its spec and the hard limits in force
/// (`status.hard`), not what is in use, which changes with every pod.
pub fn trim_quota(quota: &mut ResourceQuota) {
    if let Some(status) = quota.status.as_mut() {
        status.used = None;
    }
}

/// What the operator reads of a Service: its metadata and spec (the status of a ClusterIP
/// Service is an empty load balancer).
pub fn trim_service(service: &mut Service) {
    service.status = None;
}

/// What the operator and the gateway read of an agent pod: its metadata (labels, the spec
/// hash, the deletion mark) and its phase, Ready condition and address. The operator compares
/// specs through the hash, so the spec, with the container statuses most of a pod's size,
/// goes, and so do the four other conditions, read by no one here.
pub fn trim_agent_pod(pod: &mut Pod) {
    pod.spec = None;
    if let Some(status) = pod.status.take() {
        let ready = status.conditions.map(|all| all.into_iter().filter(|c| c.type_ == "Ready").collect());
        pod.status =
            Some(PodStatus { phase: status.phase, conditions: ready, pod_ip: status.pod_ip, ..Default::default() });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{MoltmateUserSpec, Profile};
    use crate::names;

    #[test]
    fn watch_retries_double_up_to_5_seconds_and_start_over_after_a_success() {
        let mut retry = WatchRetry::default();
        let delays: Vec<u64> = retry.by_ref().take(6).map(|d| d.as_millis() as u64).collect();
        assert_eq!(delays, [500, 1000, 2000, 4000, 5000, 5000]);
        retry.reset();
        assert_eq!(retry.next(), Some(Duration::from_millis(500)));
    }

    #[test]
    fn a_trimmed_user_keeps_its_own_annotations() {
        let mut user = MoltmateUser::new("alice", MoltmateUserSpec::new(7, Profile::Public));
        user.annotations_mut().insert(LAST_APPLIED.into(), "{\"spec\":{}}".into());
        user.annotations_mut().insert(names::ANNOTATION_LAST_ACTIVITY.into(), "2026-01-01T00:00:00Z".into());
        trim_user(&mut user);
        assert_eq!(user.annotations().keys().collect::<Vec<_>>(), [names::ANNOTATION_LAST_ACTIVITY]);
        assert_eq!(user.spec.telegram.user_id, 7);
    }

    #[test]
    fn a_compact_object_decodes_to_the_object_without_server_bookkeeping() {
        let mut secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(serde_json::json!({
            "metadata": { "name": "agent-token", "namespace": "moltmate-u-alice", "uid": "u-1", "resourceVersion": "42",
                          "creationTimestamp": "2026-01-01T00:00:00Z",
                          "labels": { names::LABEL_USER: "alice" },
                          "annotations": { LAST_APPLIED: "{}" },
                          "ownerReferences": [{ "apiVersion": "v1", "kind": "Namespace", "name": "x", "uid": "n-1" }],
                          "managedFields": [{ "manager": "moltmate", "operation": "Apply" }] },
            "type": "Opaque",
            "data": { "token": "c2VjcmV0" }
        }))
        .unwrap();
        trim_metadata(&mut secret);
        let compact = Compact::encode(&secret, &Dictionary::default());
        assert_eq!(Lookup::name(&compact).as_deref(), Some("agent-token"));
        assert_eq!(Lookup::namespace(&compact).as_deref(), Some("moltmate-u-alice"));
        let decoded = compact.decode().unwrap();
        assert_eq!(decoded, secret);
        assert_eq!(decoded.labels()[names::LABEL_USER], "alice");
        assert_eq!(decoded.owner_references()[0].uid, "n-1");
        assert_eq!(decoded.data.unwrap()["token"].0, b"secret");
        let meta = decoded.metadata;
        assert!(meta.managed_fields.is_none() && meta.annotations.is_none());
        assert!(meta.uid.is_none() && meta.resource_version.is_none() && meta.creation_timestamp.is_none());
    }

    #[test]
    fn objects_of_a_cache_are_compressed_against_its_first() {
        let secret = |user: &str, token: &[u8]| -> k8s_openapi::api::core::v1::Secret {
            serde_json::from_value(serde_json::json!({
                "metadata": { "name": "agent-token", "namespace": format!("moltmate-{user}"),
                              "labels": { names::LABEL_USER: user, names::LABEL_MANAGED_BY: names::MANAGED_BY },
                              "ownerReferences": [{ "apiVersion": "moltmate.io/v1alpha1", "kind": "MoltmateUser",
                                                    "name": user, "uid": format!("{user}-0000-4eba-a337-f99409fbfa2d"),
                                                    "controller": true }] },
                "type": "Opaque",
                "data": { "token": k8s_openapi::ByteString(token.to_vec()) }
            }))
            .unwrap()
        };
        let dictionary = Dictionary::default();
        let first = secret("alice", b"0123456789abcdef0123456789abcdef");
        let second = secret("bob", b"fedcba9876543210fedcba9876543210");
        let (first_compact, second_compact) =
            (Compact::encode(&first, &dictionary), Compact::encode(&second, &dictionary));
        assert_eq!(first_compact.decode().unwrap(), first);
        assert_eq!(second_compact.decode().unwrap(), second);
        assert_eq!(Lookup::namespace(&second_compact).as_deref(), Some("moltmate-bob"));
        let json = serde_json::to_string(&second).unwrap();
        let stored = second_compact.compressed_json().len();
        assert!(stored * 3 < json.len(), "{stored} bytes stored for {} bytes of JSON", json.len());
    }

    #[test]
    fn a_compact_cluster_object_has_no_namespace_and_decodes_whole() {
        let mut namespace: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": { "name": "moltmate-u-alice", "labels": { names::LABEL_USER: "alice" } },
            "spec": { "finalizers": ["kubernetes"] },
            "status": { "phase": "Active" }
        }))
        .unwrap();
        let compact = Compact::encode(&namespace, &Dictionary::default());
        assert_eq!(Lookup::name(&compact).as_deref(), Some("moltmate-u-alice"));
        assert_eq!(Lookup::namespace(&compact), None);
        assert_eq!(compact.decode().unwrap(), namespace);
        trim_namespace(&mut namespace);
        let decoded = Compact::encode(&namespace, &Dictionary::default()).decode().unwrap();
        assert_eq!(decoded.labels()[names::LABEL_USER], "alice");
        assert!(decoded.spec.is_none() && decoded.status.is_none());
    }

    #[test]
    fn a_trimmed_quota_keeps_its_hard_limits_in_force() {
        let mut quota: ResourceQuota = serde_json::from_value(serde_json::json!({
            "metadata": { "name": "agent-quota", "namespace": "moltmate-u-alice" },
            "spec": { "hard": { "pods": "2" } },
            "status": { "hard": { "pods": "2" }, "used": { "pods": "1" } }
        }))
        .unwrap();
        trim_quota(&mut quota);
        let status = quota.status.unwrap();
        assert_eq!(status.hard.unwrap()["pods"].0, "2");
        assert!(status.used.is_none());
        assert_eq!(quota.spec.unwrap().hard.unwrap()["pods"].0, "2");
    }

    #[test]
    fn a_trimmed_agent_pod_keeps_what_operator_and_gateway_read() {
        let mut pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": { "name": "agent", "namespace": "moltmate-u-alice", "deletionTimestamp": "2026-01-01T00:00:00Z",
                          "labels": { names::LABEL_USER: "alice" },
                          "annotations": { names::ANNOTATION_SPEC_HASH: "abc" } },
            "spec": { "containers": [{ "name": "agent", "image": "moltmates/sandbox:0.1.0" }] },
            "status": { "phase": "Running", "podIP": "10.0.0.7", "podIPs": [{ "ip": "10.0.0.7" }],
                        "conditions": [{ "type": "PodScheduled", "status": "True" }, { "type": "Ready", "status": "True" },
                                       { "type": "ContainersReady", "status": "True" }],
                        "containerStatuses": [{ "name": "agent", "image": "x", "imageID": "y", "ready": true, "restartCount": 0 }] }
        }))
        .unwrap();
        trim_agent_pod(&mut pod);
        assert!(pod.spec.is_none());
        assert_eq!(pod.annotations()[names::ANNOTATION_SPEC_HASH], "abc");
        assert_eq!(pod.labels()[names::LABEL_USER], "alice");
        assert!(pod.metadata.deletion_timestamp.is_some());
        let status = pod.status.unwrap();
        assert_eq!(status.phase.as_deref(), Some("Running"));
        assert_eq!(status.pod_ip.as_deref(), Some("10.0.0.7"));
        let conditions = status.conditions.unwrap();
        assert_eq!(conditions.iter().map(|c| c.type_.as_str()).collect::<Vec<_>>(), ["Ready"]);
        assert!(status.container_statuses.is_none() && status.pod_ips.is_none());
    }
}
