//! Small facts about Kubernetes objects that several components read the same way, and the
//! shared records kept in ConfigMaps.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};

/// `Some` once the pod's Ready condition is True: since when, if the kubelet said.
pub fn pod_ready_since(pod: &Pod) -> Option<Option<jiff::Timestamp>> {
    let conditions = pod.status.as_ref()?.conditions.as_ref()?;
    let ready = conditions.iter().find(|c| c.type_ == "Ready" && c.status == "True")?;
    Some(ready.last_transition_time.as_ref().map(|t| t.0))
}

pub fn pod_is_ready(pod: &Pod) -> bool {
    pod_ready_since(pod).is_some()
}

/// A ConfigMap's data several writers share (the gateway's replicas, the CLI): every change
/// is a read, an edit and a write conditional on the resourceVersion read, and another
/// writer in between makes it read and edit again, so no change is lost or made twice.
#[derive(Clone)]
pub struct SharedRecord {
    api: Api<ConfigMap>,
    name: &'static str,
    field_manager: &'static str,
    /// Writes lost to another writer in a row before giving up.
    conflict_retries: usize,
}

/// A ConfigMap's data.
pub type RecordData = BTreeMap<String, String>;

impl SharedRecord {
    pub fn new(api: Api<ConfigMap>, name: &'static str, field_manager: &'static str, conflict_retries: usize) -> Self {
        Self { api, name, field_manager, conflict_retries }
    }

    /// The data as stored now; `None` while the record does not exist.
    pub async fn read(&self) -> Result<Option<RecordData>, kube::Error> {
        Ok(self.api.get_opt(self.name).await?.map(|c| c.data.unwrap_or_default()))
    }

    /// `edit` reads the data (`None`: no record yet) and says what it concluded and the data
    /// to write, if any; it runs again on the fresh data after a conflict. The record is
    /// created, labelled as part of moltmates, when it is missing.
    pub async fn update<T>(
        &self,
        mut edit: impl FnMut(Option<&RecordData>) -> (T, Option<RecordData>),
    ) -> Result<T, kube::Error> {
        let params = PostParams { field_manager: Some(self.field_manager.into()), ..PostParams::default() };
        let mut attempt = 0;
        loop {
            let live = self.api.get_opt(self.name).await?;
            let (outcome, write) = edit(live.as_ref().map(|c| c.data.as_ref().unwrap_or(&EMPTY)));
            let Some(data) = write else { return Ok(outcome) };
            let written = match live {
                Some(mut live) => {
                    live.metadata.managed_fields = None;
                    live.data = Some(data);
                    // Conditional on the resourceVersion read.
                    self.api.replace(self.name, &params, &live).await
                }
                None => {
                    let record = ConfigMap {
                        metadata: ObjectMeta {
                            name: Some(self.name.into()),
                            labels: Some([("app.kubernetes.io/part-of".to_string(), "moltmates".to_string())].into()),
                            ..ObjectMeta::default()
                        },
                        data: Some(data),
                        ..ConfigMap::default()
                    };
                    self.api.create(&params, &record).await
                }
            };
            match written {
                Ok(_) => return Ok(outcome),
                Err(kube::Error::Api(status)) if status.code == 409 && attempt < self.conflict_retries => attempt += 1,
                Err(e) => return Err(e),
            }
        }
    }
}

static EMPTY: RecordData = BTreeMap::new();

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn with_ready(status: &str, since: Option<jiff::Timestamp>) -> Pod {
        let condition = PodCondition {
            type_: "Ready".into(),
            status: status.into(),
            last_transition_time: since.map(Time),
            ..PodCondition::default()
        };
        Pod { status: Some(PodStatus { conditions: Some(vec![condition]), ..PodStatus::default() }), ..Pod::default() }
    }

    #[test]
    fn ready_only_when_the_condition_is_true() {
        let at = jiff::Timestamp::from_second(1_700_000_000).unwrap();
        assert_eq!(pod_ready_since(&with_ready("True", Some(at))), Some(Some(at)));
        assert_eq!(pod_ready_since(&with_ready("True", None)), Some(None));
        assert!(!pod_is_ready(&with_ready("False", Some(at))));
        assert!(!pod_is_ready(&Pod::default()));
    }
}
