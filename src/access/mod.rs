//! Self-service access: a stranger asks the bot (`/request`), the admins approve or deny from
//! Telegram's buttons or `moltmate users approve|deny`, and an approval creates the person's
//! MoltmateUser (or, for GitOps, gives the admin its manifest).
//!
//! The pure parts: [`request`] (records, rate limits, expiry), [`name`] (the user's name),
//! [`manifest`]. The requests live in a ConfigMap ([`store`]); [`approve`] and [`deny`] are the
//! decisions both the gateway and the CLI make. Telling the person and editing the admins'
//! messages is the gateway's (`gateway::access`), done for the CLI's decisions too.

pub mod manifest;
pub mod name;
pub mod request;
pub mod store;

use kube::Client;
use kube::api::{Api, PostParams};

use crate::crd::{MoltmateUser, Profile};
pub use request::{AccessRequest, Ask, Decision, Limits, Mode, Refusal, Requests, State, Verdict};
pub use store::RequestStore;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
}

/// What an approval did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approval {
    pub code: String,
    pub request: AccessRequest,
    pub user: String,
    pub profile: Profile,
    /// Create mode: the user was created now (false: the person had one already).
    pub created: bool,
    /// GitOps mode: the manifest to commit.
    pub manifest: Option<String>,
}

/// The existing users as (name, Telegram id), for naming and for not approving anyone twice.
pub type Existing = Vec<(String, i64)>;

/// Approve `code` with `profile` (the first offered when none is given). In create mode the
/// MoltmateUser is created first and the decision recorded after, so a crash in between leaves
/// a request whose next approval finds the user and records it.
pub async fn approve(
    client: &Client,
    store: &RequestStore,
    code: &str,
    profile: Option<Profile>,
    by: &str,
    existing: &Existing,
    release_namespace: &str,
) -> Result<Approval, Error> {
    let now = jiff::Timestamp::now().as_second();
    let requests = store.read().await?;
    let request = requests.open(code, now)?.clone();
    let code = request::normalize_code(code);
    let profile = profile.or(request.profiles.first().copied()).unwrap_or_default();
    let already = existing.iter().find(|(_, id)| *id == request.telegram_id).map(|(name, _)| name.clone());
    let mut taken: Vec<String> = existing.iter().map(|(n, _)| n.clone()).collect();
    let (user, created, manifest) = match (already, request.mode) {
        (Some(user), _) => (user, false, None),
        (None, Mode::Gitops) => {
            let user = name::derive(request.username.as_deref(), request.telegram_id, release_namespace, |n| {
                taken.iter().any(|t| t == n)
            });
            let manifest = manifest::yaml(&manifest::user(&user, request.telegram_id, profile, &code, by));
            (user, false, Some(manifest))
        }
        (None, Mode::Create) => {
            let api: Api<MoltmateUser> = Api::all(client.clone());
            let params = PostParams { field_manager: Some("moltmate-access".into()), ..PostParams::default() };
            let mut attempt = 0;
            loop {
                let user = name::derive(request.username.as_deref(), request.telegram_id, release_namespace, |n| {
                    taken.iter().any(|t| t == n)
                });
                match api.create(&params, &manifest::user(&user, request.telegram_id, profile, &code, by)).await {
                    Ok(_) => break (user, true, None),
                    Err(kube::Error::Api(status)) if status.code == 409 && attempt < 5 => {
                        // The same person's, made by an approval at the same moment: theirs.
                        let holder = api.get_opt(&user).await?;
                        if holder.is_some_and(|u| u.spec.telegram.user_id == request.telegram_id) {
                            break (user, false, None);
                        }
                        // Someone else's since our look: the next name.
                        attempt += 1;
                        taken.push(user);
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
    };
    let verdict = Verdict::Approved { profile, user: user.clone() };
    record(store, &code, verdict, by, now).await?;
    Ok(Approval { code, request, user, profile, created, manifest })
}

/// Deny `code`.
pub async fn deny(store: &RequestStore, code: &str, by: &str) -> Result<(String, AccessRequest), Error> {
    let now = jiff::Timestamp::now().as_second();
    let code = request::normalize_code(code);
    record(store, &code, Verdict::Denied, by, now).await?;
    let request = store.read().await?.get(&code).cloned().ok_or_else(|| Refusal::NotFound(code.clone()))?;
    Ok((code, request))
}

/// Write the decision, if the request is still open then.
async fn record(store: &RequestStore, code: &str, verdict: Verdict, by: &str, now: i64) -> Result<(), Error> {
    store
        .update(|requests| {
            requests.open(code, now)?;
            if let Some(r) = requests.0.get_mut(code) {
                r.decision = Some(Decision { verdict: verdict.clone(), by: by.to_string(), at: now });
            }
            Ok::<(), Refusal>(())
        })
        .await??;
    Ok(())
}
