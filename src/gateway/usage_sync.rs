//! Keeping the broker's budgets in the cluster: every few seconds this replica adds what it
//! counted to the shared usage record (`broker::usage`) and takes the record's totals, which
//! include every other replica's, as the day's counts. One read and at most one write per
//! interval, whatever the traffic; a write that races another replica's is retried on the
//! fresh record (optimistic concurrency on its resourceVersion), never lost or counted twice.

use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::Api;
use tracing::{info, warn};

use super::broker::BrokerState;
use super::broker::usage::{Counted, RECORD_NAME, UsageRecord};
use crate::k8s::SharedRecord;

/// How often counts are written and the other replicas' read: the most a budget can be
/// overrun by is what all replicas admit in this long.
pub const SYNC_INTERVAL: Duration = Duration::from_secs(5);
const FIELD_MANAGER: &str = "moltmate-gateway";
/// Writes lost to another replica's in a row before this round gives up (its counts wait
/// for the next one).
const CONFLICT_RETRIES: usize = 5;

/// Take the day's counts from the record at start, so a restarted gateway does not begin the
/// day afresh.
pub async fn load(record: &SharedRecord, broker: &BrokerState) -> Result<(), kube::Error> {
    broker.settle(&UsageRecord::from_data(record.read().await?.as_ref()));
    Ok(())
}

/// The usage record in `namespace` (the gateway's).
pub fn record(api: Api<ConfigMap>) -> SharedRecord {
    SharedRecord::new(api, RECORD_NAME, FIELD_MANAGER, CONFLICT_RETRIES)
}

/// Write and read the record every `every`, for ever. Failures are logged once until the
/// record is written again; the counts wait in memory meanwhile.
pub async fn run(record: SharedRecord, broker: std::sync::Arc<BrokerState>, every: Duration) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        ticks.tick().await;
        match sync(&record, &broker).await {
            Ok(()) if failing => {
                failing = false;
                info!(record = RECORD_NAME, "usage record written again");
            }
            Ok(()) => {}
            Err(e) if !failing => {
                failing = true;
                warn!(record = RECORD_NAME, error = %e, "cannot update the usage record; budgets are enforced from memory until it can be");
            }
            Err(_) => {}
        }
    }
}

/// One round: the counts taken from the broker go into the record, or back to the broker.
pub async fn sync(record: &SharedRecord, broker: &BrokerState) -> Result<(), kube::Error> {
    let counted = broker.take_unsynced();
    match write(record, &counted).await {
        Ok(record) => {
            broker.settle(&record);
            Ok(())
        }
        Err(e) => {
            broker.restore(counted);
            Err(e)
        }
    }
}

/// Add the counts to the live record (nothing to add: just read it); the record as written.
async fn write(record: &SharedRecord, counted: &Counted) -> Result<UsageRecord, kube::Error> {
    let nothing = counted.is_empty();
    record
        .update(|data| {
            let live = UsageRecord::from_data(data);
            if nothing {
                return (live, None);
            }
            let next = live.add(counted);
            let data = next.to_data();
            (next, Some(data))
        })
        .await
}
