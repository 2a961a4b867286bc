//! Leader election on a Lease, so two replicas never act at once.

use std::time::Duration;

use kube::Client;
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder, LeaseManagerError};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::shutdown::Shutdown;

/// How long a release of the Lease may take at exit before the process goes without it (the
/// Lease then expires on its own).
const RELEASE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error("leader election on Lease {namespace}/{name}: {source}")]
    Lease { namespace: String, name: String, source: kube_lease_manager::LeaseManagerError },
    #[error("lost the leadership of Lease {0}; exiting so a fresh start re-elects")]
    Lost(String),
}

/// Holds the lease while alive; `lost()` resolves if another replica takes it over.
/// `release()` hands it on at once, instead of after it expires.
pub struct Leadership {
    name: String,
    state: watch::Receiver<bool>,
    task: JoinHandle<Result<LeaseManager, LeaseManagerError>>,
}

/// Wait until this process holds the Lease `namespace/name`; `None` if a stop is requested
/// first (a standby replica stops at once).
pub async fn acquire(
    client: Client,
    namespace: &str,
    name: &str,
    identity: &str,
    shutdown: &Shutdown,
) -> Result<Option<Leadership>, LeaderError> {
    let err = |source| LeaderError::Lease { namespace: namespace.into(), name: name.into(), source };
    let manager = LeaseManagerBuilder::new(client, name)
        .with_namespace(namespace)
        .with_identity(identity)
        .with_duration(15)
        .with_grace(5)
        .build()
        .await
        .map_err(err)?;
    let (mut state, task) = manager.watch().await;
    info!(lease = %format!("{namespace}/{name}"), identity, "waiting to become leader");
    let became_leader = async {
        while !*state.borrow_and_update() {
            if state.changed().await.is_err() {
                return false;
            }
        }
        true
    };
    let leading = tokio::select! {
        leading = became_leader => leading,
        () = shutdown.requested() => {
            Leadership { name: name.into(), state, task }.release().await;
            return Ok(None);
        }
    };
    if !leading {
        return Err(LeaderError::Lost(name.into()));
    }
    info!(lease = %format!("{namespace}/{name}"), identity, "became leader");
    Ok(Some(Leadership { name: name.into(), state, task }))
}

/// This replica's name in a Lease when none is configured: host name and process id
/// (`component` stands in for an unreadable host name).
pub fn default_identity(component: &str) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_default();
    let host = if host.is_empty() { component.to_string() } else { host };
    format!("{host}-{}", std::process::id())
}

/// Run `work` for as long as this replica leads (always, without leader election), then
/// release the Lease. Losing the Lease ends it with an error: a restart re-elects rather than
/// risk two leaders.
pub async fn while_leading(
    leadership: Option<Leadership>,
    work: impl std::future::Future<Output = ()>,
) -> Result<(), LeaderError> {
    match leadership {
        Some(mut leadership) => {
            let outcome = tokio::select! {
                _ = work => Ok(()),
                lost = leadership.lost() => Err(lost),
            };
            leadership.release().await;
            outcome
        }
        None => {
            work.await;
            Ok(())
        }
    }
}

impl Leadership {
    async fn lost(&mut self) -> LeaderError {
        loop {
            if !*self.state.borrow_and_update() || self.state.changed().await.is_err() {
                return LeaderError::Lost(self.name.clone());
            }
        }
    }

    /// Give the Lease up, so that another replica takes over now rather than when it expires.
    pub async fn release(self) {
        // Closing the channel makes the manager's task release the Lease and end.
        drop(self.state);
        match tokio::time::timeout(RELEASE_TIMEOUT, self.task).await {
            Ok(Ok(Ok(_))) => info!(lease = %self.name, "Lease released"),
            Ok(Ok(Err(e))) => {
                warn!(lease = %self.name, error = %e, "releasing the Lease failed; it expires on its own")
            }
            Ok(Err(e)) => warn!(lease = %self.name, error = %e, "the Lease's task failed; it expires on its own"),
            Err(_) => warn!(lease = %self.name, "releasing the Lease timed out; it expires on its own"),
        }
    }
}
