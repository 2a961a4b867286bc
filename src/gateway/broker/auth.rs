//! Who is calling: the agent's bearer token is HMAC(master key, user uid), so the broker
//! knows every valid token by computing it for each MoltmateUser in the watch cache.
//!
//! [`TokenIndex`] is pure: SHA-256(token) -> the uid and name it was made for, built from a
//! list of users. The map is keyed by the token's hash, so a lookup compares hashes, never
//! secret bytes (no timing signal about the token itself), and no token is kept in memory.
//!
//! [`CachedIndex`] answers each request with the user object in the watch cache now: the
//! token's hash gives a name, the cache the current object, which must still carry the uid the
//! token was made for (a user deleted and created again under the same name has a new uid and
//! a new token). A change to a user (suspend, profile, status) is so seen at once without
//! touching the index. The index is made again only when a token is not in it and the cache
//! holds a uid it does not know, and then only new uids cost an HMAC: a request costs one
//! SHA-256 and two hash lookups whatever the number of users.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kube::ResourceExt;
use kube::runtime::reflector::{ObjectRef, Store};
use sha2::{Digest, Sha256};

use crate::crd::MoltmateUser;
use crate::profile::{ProfileDefaults, ResolvedProfile, resolve_with};
use crate::token::MasterKey;

type TokenHash = [u8; 32];

fn token_hash(token: &str) -> TokenHash {
    Sha256::digest(token.as_bytes()).into()
}

/// SHA-256(agent token) -> (uid, name) of the user it was made for. Users without a uid (not
/// stored by an API server) have no token and are left out.
#[derive(Default)]
pub struct TokenIndex {
    by_hash: HashMap<TokenHash, (String, String)>,
    by_uid: HashMap<String, TokenHash>,
}

impl TokenIndex {
    /// The index of `users`, taking the hashes of uids `previous` knows from it (a token
    /// depends on the uid alone).
    pub fn build(key: &MasterKey, users: &[Arc<MoltmateUser>], previous: &TokenIndex) -> Self {
        let mut index = TokenIndex::default();
        for user in users {
            let Some(uid) = user.uid().filter(|u| !u.is_empty()) else { continue };
            let hash = previous.by_uid.get(&uid).copied().unwrap_or_else(|| token_hash(&key.agent_token(&uid)));
            index.by_hash.insert(hash, (uid.clone(), user.name_any()));
            index.by_uid.insert(uid, hash);
        }
        index
    }

    /// Whether every uid of `users` is in the index.
    pub fn covers(&self, users: &[Arc<MoltmateUser>]) -> bool {
        users
            .iter()
            .all(|u| u.metadata.uid.as_deref().is_none_or(|uid| uid.is_empty() || self.by_uid.contains_key(uid)))
    }

    /// (uid, name) of the user whose agent holds `token`.
    pub fn lookup(&self, token: &str) -> Option<(&str, &str)> {
        self.by_hash.get(&token_hash(token)).map(|(uid, name)| (uid.as_str(), name.as_str()))
    }

    pub fn len(&self) -> usize {
        self.by_hash.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }
}

/// The bearer token of an `Authorization` header value (`Bearer <token>`, scheme in any case).
pub fn bearer(header: Option<&str>) -> Option<&str> {
    let value = header?.trim();
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Why a known user may not use the broker.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Inadmissible {
    #[error("user {0} is being deleted")]
    Deleting(String),
    #[error("user {0} is suspended (spec.suspend)")]
    Suspended(String),
    #[error("user {user} has an invalid profile: {reason}")]
    InvalidProfile { user: String, reason: String },
}

/// The user's resolved profile, if the user may use the broker at all. Pure.
pub fn admit(user: &MoltmateUser, defaults: &ProfileDefaults) -> Result<ResolvedProfile, Inadmissible> {
    let name = user.name_any();
    if user.metadata.deletion_timestamp.is_some() {
        return Err(Inadmissible::Deleting(name));
    }
    if user.spec.suspend {
        return Err(Inadmissible::Suspended(name));
    }
    resolve_with(&user.spec, defaults).map_err(|e| Inadmissible::InvalidProfile { user: name, reason: e.to_string() })
}

/// A [`TokenIndex`] over a reflector store; each lookup answers with the store's object.
pub struct CachedIndex {
    key: MasterKey,
    store: Store<MoltmateUser>,
    index: Mutex<TokenIndex>,
    /// How many times the index was made (for tests).
    builds: std::sync::atomic::AtomicUsize,
}

impl CachedIndex {
    pub fn new(key: MasterKey, store: Store<MoltmateUser>) -> Self {
        Self { key, store, index: Mutex::new(TokenIndex::default()), builds: Default::default() }
    }

    /// The user in the store now whose agent holds `token`.
    pub fn lookup(&self, token: &str) -> Option<Arc<MoltmateUser>> {
        let mut index = self.index.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(user) = self.current(&index, token) {
            return Some(user);
        }
        // Not known: perhaps a user created since the index was made.
        let users = self.store.state();
        if index.covers(&users) {
            return None;
        }
        *index = TokenIndex::build(&self.key, &users, &index);
        self.builds.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::debug!(users = users.len(), tokens = index.len(), "broker token index rebuilt");
        self.current(&index, token)
    }

    fn current(&self, index: &TokenIndex, token: &str) -> Option<Arc<MoltmateUser>> {
        let (uid, name) = index.lookup(token)?;
        let user = self.store.get(&ObjectRef::new(name))?;
        (user.metadata.uid.as_deref() == Some(uid)).then_some(user)
    }

    /// Names of the users in the store (to prune per-user state).
    pub fn names(&self) -> Vec<String> {
        self.store.state().iter().map(|u| u.name_any()).collect()
    }

    /// The Telegram id of user `name`, for log lines.
    pub fn telegram_id(&self, name: &str) -> Option<i64> {
        self.store.get(&kube::runtime::reflector::ObjectRef::new(name)).map(|u| u.spec.telegram.user_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{MoltmateUserSpec, Profile, ResourcesSpec};
    use kube::runtime::reflector::store;
    use kube::runtime::watcher::Event;

    fn key() -> MasterKey {
        MasterKey::new("m".repeat(32)).unwrap()
    }

    fn user(name: &str, uid: &str, rv: &str) -> MoltmateUser {
        let mut u = MoltmateUser::new(name, MoltmateUserSpec::new(7, Profile::Family));
        u.metadata.uid = Some(uid.into());
        u.metadata.resource_version = Some(rv.into());
        u
    }

    #[test]
    fn tokens_map_to_their_own_user_only() {
        let users = vec![Arc::new(user("alice", "uid-a", "1")), Arc::new(user("bob", "uid-b", "1"))];
        let index = TokenIndex::build(&key(), &users, &TokenIndex::default());
        assert_eq!(index.len(), 2);
        assert_eq!(index.lookup(&key().agent_token("uid-a")), Some(("uid-a", "alice")));
        assert_eq!(index.lookup(&key().agent_token("uid-b")), Some(("uid-b", "bob")));
        for bad in ["", "uid-a", "alice", &key().agent_token("uid-c"), &key().agent_token("uid-a").to_uppercase()] {
            assert!(index.lookup(bad).is_none(), "{bad}");
        }
        // Another master key's token for the same uid is not valid.
        let other = MasterKey::new("o".repeat(32)).unwrap();
        assert!(index.lookup(&other.agent_token("uid-a")).is_none());
        // Made again from the previous index: the same tokens, and the new user's.
        let more = [users.clone(), vec![Arc::new(user("carol", "uid-c", "1"))]].concat();
        assert!(index.covers(&users) && !index.covers(&more));
        let again = TokenIndex::build(&key(), &more, &index);
        assert_eq!(again.lookup(&key().agent_token("uid-a")), Some(("uid-a", "alice")));
        assert_eq!(again.lookup(&key().agent_token("uid-c")), Some(("uid-c", "carol")));
        // No uid, no token.
        let mut nouid = user("carol", "", "1");
        nouid.metadata.uid = None;
        assert!(TokenIndex::build(&key(), &[Arc::new(nouid)], &TokenIndex::default()).is_empty());
    }

    #[test]
    fn bearer_header_parsing() {
        assert_eq!(bearer(Some("Bearer abc")), Some("abc"));
        assert_eq!(bearer(Some("bearer  abc ")), Some("abc"));
        for bad in [None, Some(""), Some("Bearer"), Some("Bearer "), Some("Basic abc"), Some("abc")] {
            assert_eq!(bearer(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn suspended_deleting_and_invalid_users_are_not_admitted() {
        let ok = user("alice", "u", "1");
        assert_eq!(admit(&ok, &ProfileDefaults::default()).unwrap().profile, Profile::Family);
        let mut s = ok.clone();
        s.spec.suspend = true;
        assert_eq!(
            admit(&s, &ProfileDefaults::default()).unwrap_err().to_string(),
            "user alice is suspended (spec.suspend)"
        );
        let mut d = ok.clone();
        d.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH));
        assert_eq!(admit(&d, &ProfileDefaults::default()).unwrap_err(), Inadmissible::Deleting("alice".into()));
        let mut bad = ok.clone();
        bad.spec.resources = Some(ResourcesSpec { cpu: Some("0".into()), ..Default::default() });
        assert!(admit(&bad, &ProfileDefaults::default()).unwrap_err().to_string().contains("invalid profile"));
    }

    #[test]
    fn the_cached_index_answers_with_the_stores_object_now() {
        let (reader, mut writer) = store::<MoltmateUser>();
        let cached = CachedIndex::new(key(), reader);
        let builds = || cached.builds.load(std::sync::atomic::Ordering::Relaxed);
        let token_a = key().agent_token("uid-a");
        assert!(cached.lookup(&token_a).is_none());
        writer.apply_watcher_event(&Event::Apply(user("alice", "uid-a", "1")));
        assert!(!cached.lookup(&token_a).unwrap().spec.suspend);
        assert_eq!(builds(), 1);
        // A change to the user is seen at once, without making the index again.
        let mut suspended = user("alice", "uid-a", "2");
        suspended.spec.suspend = true;
        writer.apply_watcher_event(&Event::Apply(suspended.clone()));
        assert!(cached.lookup(&token_a).unwrap().spec.suspend);
        // Unknown tokens, with no new user in the store: no work beyond a look.
        for _ in 0..3 {
            assert!(cached.lookup(&key().agent_token("uid-x")).is_none());
        }
        assert_eq!(builds(), 1);
        writer.apply_watcher_event(&Event::Delete(suspended));
        assert!(cached.lookup(&token_a).is_none());
        // The same name created again is another user: the old token is not theirs.
        writer.apply_watcher_event(&Event::Apply(user("alice", "uid-a2", "3")));
        assert!(cached.lookup(&token_a).is_none());
        assert_eq!(cached.lookup(&key().agent_token("uid-a2")).unwrap().metadata.uid.as_deref(), Some("uid-a2"));
    }

    #[test]
    fn lookup_is_cheap() {
        let (reader, mut writer) = store::<MoltmateUser>();
        for i in 0..1000 {
            writer.apply_watcher_event(&Event::Apply(user(&format!("u{i}"), &format!("uid-{i}"), "1")));
        }
        let cached = CachedIndex::new(key(), reader);
        let token = key().agent_token("uid-500");
        let started = std::time::Instant::now();
        assert_eq!(cached.lookup(&token).unwrap().name_any(), "u500");
        let rebuild = started.elapsed();
        // Every user's status changes (new resourceVersions): lookups stay cheap.
        for i in 0..1000 {
            writer.apply_watcher_event(&Event::Apply(user(&format!("u{i}"), &format!("uid-{i}"), "2")));
        }
        let started = std::time::Instant::now();
        for _ in 0..100 {
            assert!(cached.lookup(&token).is_some());
        }
        let cached_lookup = started.elapsed() / 100;
        println!("1000 users: index made in {rebuild:?}, lookup {cached_lookup:?}");
        assert_eq!(cached.builds.load(std::sync::atomic::Ordering::Relaxed), 1);
        assert!(cached_lookup < rebuild, "a lookup should be cheaper than making the index");
    }
}
