//! Where reminders are kept: `status.reminders` of the person's MoltmateUser, written only by
//! the gateway (its RBAC already grants the status subresource, never the spec). Every change
//! is a read, a pure edit and a write conditional on the resourceVersion read, retried on a
//! conflict: the broker on any replica, the commands and the delivery on the Lease holder can
//! change the same person's reminders at once and none is lost.

use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use crate::crd::{MoltmateUser, ReminderBook};

/// Writes lost to another writer in a row before giving up.
const CONFLICT_RETRIES: usize = 5;
/// The field manager of `status.reminders` (not the activity stamp's: each owns its field).
const FIELD_MANAGER: &str = "moltmate-gateway-reminders";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The edit refused; the text is for the person or the model.
    #[error("{0}")]
    Refused(String),
    #[error("the user {0} does not exist")]
    NoUser(String),
    #[error("reading or writing the reminders: {0}")]
    Kube(#[from] kube::Error),
}

#[derive(Clone)]
pub struct ReminderStore {
    api: Api<MoltmateUser>,
}

impl ReminderStore {
    pub fn new(client: Client) -> Self {
        Self { api: Api::all(client) }
    }

    /// The user as stored now (not the watch cache, which may lag a write just made).
    pub async fn read(&self, user: &str) -> Result<MoltmateUser, StoreError> {
        self.api.get_opt(user).await?.ok_or_else(|| StoreError::NoUser(user.to_string()))
    }

    /// Apply `edit` to the user's reminders and write them if they changed; what `edit` said.
    pub async fn update<T>(
        &self,
        user: &str,
        mut edit: impl FnMut(&MoltmateUser, &mut ReminderBook) -> Result<T, String>,
    ) -> Result<T, StoreError> {
        let mut attempt = 0;
        loop {
            let live = self.read(user).await?;
            let before = live.status.as_ref().and_then(|s| s.reminders.clone()).unwrap_or_default();
            let mut book = before.clone();
            let outcome = edit(&live, &mut book).map_err(StoreError::Refused)?;
            if book == before {
                return Ok(outcome);
            }
            // A merge patch of the whole book (nulls and an empty list written out, so that
            // what went is removed), conditional on the version read.
            let patch = json!({
                "metadata": { "resourceVersion": live.metadata.resource_version },
                "status": { "reminders": {
                    "timezone": book.timezone,
                    "nextId": book.next_id,
                    "pending": book.pending,
                } },
            });
            match self
                .api
                .patch_status(
                    user,
                    &PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..PatchParams::default() },
                    &Patch::Merge(&patch),
                )
                .await
            {
                Ok(_) => return Ok(outcome),
                Err(kube::Error::Api(status)) if status.code == 409 && attempt < CONFLICT_RETRIES => attempt += 1,
                Err(e) => return Err(e.into()),
            }
        }
    }
}
