//! The requests' store: one ConfigMap in the gateway's namespace, a JSON entry per code. It
//! outlives a gateway restart and is shared with `moltmate users approve`; every change is a
//! read, an edit and a write conditional on what was read (another writer in between makes it
//! read and edit again), so two deciders never both win.

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;
use kube::api::{Api, PostParams};

use super::request::Requests;

pub const RECORD_NAME: &str = "moltmate-access-requests";
const FIELD_MANAGER: &str = "moltmate-access";
const CONFLICT_RETRIES: usize = 10;

#[derive(Clone)]
pub struct RequestStore {
    api: Api<ConfigMap>,
}

impl RequestStore {
    pub fn new(client: Client, namespace: &str) -> Self {
        Self { api: Api::namespaced(client, namespace) }
    }

    pub async fn read(&self) -> Result<Requests, kube::Error> {
        let live = self.api.get_opt(RECORD_NAME).await?;
        Ok(Requests::from_data(live.as_ref().and_then(|c| c.data.as_ref())))
    }

    /// Apply `change` to the current requests and write them if it changed anything; what
    /// `change` returned. `change` runs again on the fresh record after a conflict.
    pub async fn update<T>(&self, mut change: impl FnMut(&mut Requests) -> T) -> Result<T, kube::Error> {
        let params = PostParams { field_manager: Some(FIELD_MANAGER.into()), ..PostParams::default() };
        let mut attempt = 0;
        loop {
            let live = self.api.get_opt(RECORD_NAME).await?;
            let before = Requests::from_data(live.as_ref().and_then(|c| c.data.as_ref()));
            let mut after = before.clone();
            let outcome = change(&mut after);
            if after == before && live.is_some() {
                return Ok(outcome);
            }
            let written = match live {
                Some(mut live) => {
                    live.metadata.managed_fields = None;
                    live.data = Some(after.to_data());
                    // Conditional on the resourceVersion read.
                    self.api.replace(RECORD_NAME, &params, &live).await
                }
                None => {
                    let record = ConfigMap {
                        metadata: ObjectMeta {
                            name: Some(RECORD_NAME.into()),
                            labels: Some([("app.kubernetes.io/part-of".to_string(), "moltmates".to_string())].into()),
                            ..ObjectMeta::default()
                        },
                        data: Some(after.to_data()),
                        ..ConfigMap::default()
                    };
                    self.api.create(&params, &record).await
                }
            };
            match written {
                Ok(_) => return Ok(outcome),
                Err(kube::Error::Api(status)) if status.code == 409 && attempt < CONFLICT_RETRIES => attempt += 1,
                Err(e) => return Err(e),
            }
        }
    }
}
