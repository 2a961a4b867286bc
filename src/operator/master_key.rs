//! The master key kept in a Secret that the operator creates once: an install rendered by
//! `helm template` (Argo CD, Flux's post-renderers) then carries no key that changes on every
//! render, and every agent's token stays the same from one sync to the next.
//!
//! The Secret is never updated or deleted here: an existing one (made by an older chart, or by
//! hand) is used as it is, and a concurrent creator (a second replica) wins the race harmlessly.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::api::PostParams;

use crate::shutdown::Shutdown;
use crate::token::{MasterKey, MasterKeyError, SECRET_DATA_KEY as DATA_KEY};

/// Random bytes in a generated key (written as hex, so the Secret holds twice as many).
const GENERATED_BYTES: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "Secret {namespace}/{name} has no key `{DATA_KEY}`: add one (`openssl rand -hex 32`) or delete the Secret to have a new key generated"
    )]
    NoKey { namespace: String, name: String },
    #[error("the master key in Secret {namespace}/{name}: {source}")]
    Invalid { namespace: String, name: String, source: MasterKeyError },
    #[error("reading or creating Secret {namespace}/{name}: {source}")]
    Api { namespace: String, name: String, source: kube::Error },
    #[error("generating a master key: {0}")]
    Random(#[source] getrandom::Error),
    #[error("stopped before the master key could be read")]
    Stopped,
}

/// A new Secret holding `key_hex`, labelled as the operator's.
pub fn secret(namespace: &str, name: &str, key_hex: String) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(namespace.to_string()),
            labels: Some(BTreeMap::from([
                ("app.kubernetes.io/part-of".to_string(), "moltmates".to_string()),
                ("app.kubernetes.io/managed-by".to_string(), "moltmate-operator".to_string()),
            ])),
            annotations: Some(BTreeMap::from([(
                "moltmate.io/note".to_string(),
                "Generated once by the operator; every agent's token derives from it. Changing it restarts every agent."
                    .to_string(),
            )])),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".to_string()),
        data: Some(BTreeMap::from([(DATA_KEY.to_string(), ByteString(key_hex.into_bytes()))])),
        ..Secret::default()
    }
}

/// The master key a Secret holds.
pub fn read(namespace: &str, name: &str, secret: &Secret) -> Result<MasterKey, Error> {
    let bytes = secret
        .data
        .as_ref()
        .and_then(|data| data.get(DATA_KEY))
        .map(|value| value.0.clone())
        .ok_or_else(|| Error::NoKey { namespace: namespace.into(), name: name.into() })?;
    MasterKey::new(bytes).map_err(|source| Error::Invalid { namespace: namespace.into(), name: name.into(), source })
}

fn generate() -> Result<String, Error> {
    let mut bytes = [0u8; GENERATED_BYTES];
    getrandom::fill(&mut bytes).map_err(Error::Random)?;
    Ok(hex::encode(bytes))
}

/// The key in Secret `namespace/name`, which is created with a random key if it does not exist.
pub async fn get_or_create(api: &Api<Secret>, namespace: &str, name: &str) -> Result<MasterKey, Error> {
    let api_error = |source| Error::Api { namespace: namespace.into(), name: name.into(), source };
    // Two rounds: a creator that loses the race to another replica reads the winner's key.
    for _ in 0..2 {
        if let Some(existing) = api.get_opt(name).await.map_err(api_error)? {
            return read(namespace, name, &existing);
        }
        let created = api.create(&PostParams::default(), &secret(namespace, name, generate()?)).await;
        match created {
            Ok(created) => {
                tracing::info!(secret = %format!("{namespace}/{name}"), "generated the master key");
                return read(namespace, name, &created);
            }
            Err(kube::Error::Api(status)) if status.code == 409 => continue,
            Err(e) => return Err(api_error(e)),
        }
    }
    Err(Error::Api {
        namespace: namespace.into(),
        name: name.into(),
        source: kube::Error::Service("the Secret was created and deleted again while being read".into()),
    })
}

/// As `get_or_create`, retrying while the API server cannot be reached (an operator started
/// before its API server answers waits rather than crash-looping); refusals end at once.
pub async fn get_or_create_patiently(
    api: &Api<Secret>,
    namespace: &str,
    name: &str,
    shutdown: &Shutdown,
) -> Result<MasterKey, Error> {
    let mut delay = Duration::from_millis(500);
    loop {
        match get_or_create(api, namespace, name).await {
            Err(Error::Api { source, .. }) if is_transient(&source) => {
                tracing::warn!(error = %source, retry_in = ?delay, "cannot read the master key Secret yet");
            }
            other => return other,
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = shutdown.requested() => return Err(Error::Stopped),
        }
        delay = (delay * 2).min(Duration::from_secs(10));
    }
}

/// Whether asking again may succeed: no answer, or the API server's own trouble.
fn is_transient(error: &kube::Error) -> bool {
    match error {
        kube::Error::Api(status) => status.code == 429 || status.code >= 500,
        kube::Error::HyperError(_) | kube::Error::Service(_) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_secret_holds_a_valid_key_the_operator_reads_back() {
        let key = generate().unwrap();
        assert_eq!(key.len(), 2 * GENERATED_BYTES);
        assert!(key.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(key, generate().unwrap());
        let secret = secret("moltmates", "moltmate-master-key", key.clone());
        let read_back = read("moltmates", "moltmate-master-key", &secret).unwrap();
        assert_eq!(read_back.agent_token("uid"), MasterKey::new(key.into_bytes()).unwrap().agent_token("uid"));
    }

    #[test]
    fn a_secret_without_the_key_or_with_a_short_one_is_named_in_the_error() {
        let empty = Secret::default();
        let message = read("ns", "mk", &empty).unwrap_err().to_string();
        assert!(message.contains("ns/mk") && message.contains("master-key"), "{message}");
        let short = secret("ns", "mk", "short".into());
        let message = read("ns", "mk", &short).unwrap_err().to_string();
        assert!(message.contains("ns/mk") && message.contains("at least 32"), "{message}");
    }
}
