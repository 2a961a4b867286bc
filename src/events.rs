//! Kubernetes Events on our objects, through the core/v1 Events API.
//!
//! kube's `Recorder` writes events.k8s.io/v1 events, which API servers before 1.22 refuse
//! for cluster-scoped objects such as a MoltmateUser; core/v1 events are accepted by every
//! version and are what `kubectl describe` lists. We emit events only on transitions, so
//! the Recorder's series aggregation is not needed.

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use kube::api::{Api, PostParams};
use kube::{Client, Resource};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Normal,
    Warning,
}

#[derive(Clone)]
pub struct EventPublisher {
    client: Client,
    component: String,
    instance: String,
}

impl EventPublisher {
    pub fn new(client: Client, component: &str, instance: &str) -> Self {
        Self { client, component: component.into(), instance: instance.into() }
    }

    /// Record an event about `object` (its namespace, or `default` for cluster-scoped objects).
    pub async fn publish<K: Resource<DynamicType = ()>>(
        &self,
        object: &K,
        type_: EventType,
        reason: &str,
        note: &str,
    ) -> Result<(), kube::Error> {
        let regarding: ObjectReference = object.object_ref(&());
        let namespace = regarding.namespace.clone().unwrap_or_else(|| "default".into());
        let now = jiff::Timestamp::now();
        let event = Event {
            metadata: ObjectMeta {
                generate_name: Some(format!("{}.", regarding.name.clone().unwrap_or_default())),
                namespace: Some(namespace.clone()),
                ..ObjectMeta::default()
            },
            involved_object: regarding,
            reason: Some(reason.into()),
            message: Some(note.chars().take(1024).collect()),
            type_: Some(match type_ {
                EventType::Normal => "Normal".into(),
                EventType::Warning => "Warning".into(),
            }),
            source: Some(EventSource { component: Some(self.component.clone()), host: None }),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            count: Some(1),
            reporting_component: Some(self.component.clone()),
            reporting_instance: Some(self.instance.clone()),
            action: Some("Reconcile".into()),
            event_time: None::<MicroTime>,
            ..Event::default()
        };
        Api::<Event>::namespaced(self.client.clone(), &namespace).create(&PostParams::default(), &event).await?;
        Ok(())
    }
}
