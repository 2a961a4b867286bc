//! Leader election on a Lease, so two replicas never act at once.

use kube::Client;
use kube_lease_manager::LeaseManagerBuilder;
use tokio::sync::watch;
use tracing::info;

#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error("leader election on Lease {namespace}/{name}: {source}")]
    Lease { namespace: String, name: String, source: kube_lease_manager::LeaseManagerError },
    #[error("lost the leadership of Lease {0}; exiting so a fresh start re-elects")]
    Lost(String),
}

/// Holds the lease while alive; `lost()` resolves if another replica takes it over.
pub struct Leadership {
    name: String,
    state: watch::Receiver<bool>,
}

/// Wait until this process holds the Lease `namespace/name`.
pub async fn acquire(client: Client, namespace: &str, name: &str, identity: &str) -> Result<Leadership, LeaderError> {
    let err = |source| LeaderError::Lease { namespace: namespace.into(), name: name.into(), source };
    let manager = LeaseManagerBuilder::new(client, name)
        .with_namespace(namespace)
        .with_identity(identity)
        .with_duration(15)
        .with_grace(5)
        .build()
        .await
        .map_err(err)?;
    let (mut state, _task) = manager.watch().await;
    info!(lease = %format!("{namespace}/{name}"), identity, "waiting to become leader");
    while !*state.borrow_and_update() {
        if state.changed().await.is_err() {
            return Err(LeaderError::Lost(name.into()));
        }
    }
    info!(lease = %format!("{namespace}/{name}"), identity, "became leader");
    Ok(Leadership { name: name.into(), state })
}

/// This replica's name in a Lease when none is configured: host name and process id
/// (`component` stands in for an unreadable host name).
pub fn default_identity(component: &str) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_default();
    let host = if host.is_empty() { component.to_string() } else { host };
    format!("{host}-{}", std::process::id())
}

/// Run `work` for as long as this replica leads (always, without leader election). Losing
/// the Lease ends it with an error: a restart re-elects rather than risk two leaders.
pub async fn while_leading(
    leadership: Option<Leadership>,
    work: impl std::future::Future<Output = ()>,
) -> Result<(), LeaderError> {
    match leadership {
        Some(leadership) => tokio::select! {
            _ = work => Ok(()),
            lost = leadership.lost() => Err(lost),
        },
        None => {
            work.await;
            Ok(())
        }
    }
}

impl Leadership {
    pub async fn lost(mut self) -> LeaderError {
        loop {
            if !*self.state.borrow_and_update() || self.state.changed().await.is_err() {
                return LeaderError::Lost(self.name);
            }
        }
    }
}
