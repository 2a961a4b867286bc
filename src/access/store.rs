//! The requests' store: one ConfigMap in the gateway's namespace, a JSON entry per code. It
//! outlives a gateway restart and is shared with `moltmate users approve`; every change is a
//! read, an edit and a write conditional on what was read (another writer in between makes it
//! read and edit again), so two deciders never both win.

use kube::Client;
use kube::api::Api;

use super::request::Requests;
use crate::k8s::SharedRecord;

pub const RECORD_NAME: &str = "moltmate-access-requests";
const FIELD_MANAGER: &str = "moltmate-access";
const CONFLICT_RETRIES: usize = 10;

#[derive(Clone)]
pub struct RequestStore {
    record: SharedRecord,
}

impl RequestStore {
    pub fn new(client: Client, namespace: &str) -> Self {
        Self {
            record: SharedRecord::new(Api::namespaced(client, namespace), RECORD_NAME, FIELD_MANAGER, CONFLICT_RETRIES),
        }
    }

    pub async fn read(&self) -> Result<Requests, kube::Error> {
        Ok(Requests::from_data(self.record.read().await?.as_ref()))
    }

    /// Apply `change` to the current requests and write them if it changed anything; what
    /// `change` returned. `change` runs again on the fresh record after a conflict.
    pub async fn update<T>(&self, mut change: impl FnMut(&mut Requests) -> T) -> Result<T, kube::Error> {
        self.record
            .update(|data| {
                let before = Requests::from_data(data);
                let mut after = before.clone();
                let outcome = change(&mut after);
                let write = (after != before || data.is_none()).then(|| after.to_data());
                (outcome, write)
            })
            .await
    }
}
