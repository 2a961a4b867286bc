//! Stopping on SIGTERM (the kubelet, at a rollout or a pod's deletion) or SIGINT (Ctrl-C).
//!
//! The handlers are installed when [`Shutdown::on_signals`] is called, first thing in a
//! process: as PID 1 of a container, a process ignores every signal it has no handler for,
//! so a handler installed late leaves a window in which the kubelet's SIGTERM does nothing
//! and the pod waits out its grace period for SIGKILL.

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

/// Whether this process has been asked to stop. Cheap to clone; every clone sees the request.
#[derive(Debug, Clone)]
pub struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    /// Install the SIGTERM and SIGINT handlers now; the request is seen from the first signal on.
    pub fn on_signals() -> std::io::Result<Self> {
        let mut term = signal(SignalKind::terminate())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        let (requested, shutdown) = watch::channel(false);
        tokio::spawn(async move {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = interrupt.recv() => "SIGINT",
            };
            tracing::info!(signal = name, "shutting down");
            requested.send_replace(true);
            // Kept, so that waiters never see a closed channel.
            std::future::pending::<()>().await;
        });
        Ok(Self(shutdown))
    }

    /// A request that the returned sender makes (for tests and embedding).
    pub fn manual() -> (watch::Sender<bool>, Self) {
        let (requested, shutdown) = watch::channel(false);
        (requested, Self(shutdown))
    }

    pub fn is_requested(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once a stop is requested (never, if the sender is gone without asking).
    pub async fn requested(&self) {
        let mut shutdown = self.0.clone();
        if shutdown.wait_for(|requested| *requested).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_clone_sees_the_request() {
        let (sender, shutdown) = Shutdown::manual();
        let waiter = shutdown.clone();
        let waiting = tokio::spawn(async move { waiter.requested().await });
        assert!(!shutdown.is_requested());
        sender.send_replace(true);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiting).await.unwrap().unwrap();
        assert!(shutdown.is_requested());
        // A waiter that comes late returns at once.
        tokio::time::timeout(std::time::Duration::from_secs(5), shutdown.requested()).await.unwrap();
    }
}
