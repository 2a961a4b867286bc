//! The agent serves only while its egress is blocked. A CNI applies a NetworkPolicy to a new
//! pod a moment after the pod has its address (kube-router: on the pod's update event), and a
//! CNI without NetworkPolicy support never does. Until then the agent would be reachable from a
//! woken user's first message with its network open. So it probes the one address every
//! profile blocks and every pod can otherwise reach, the Kubernetes API Service (a private
//! address that the kubelet names in every container's environment), and reports Ready only
//! while that connection fails; it keeps probing, so a policy removed later stops it serving.
//!
//! Outside a cluster (the node stand-in runs agents as processes) there is no such variable
//! and nothing to probe.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;

use crate::http::Health;
use crate::shutdown::Shutdown;

/// Long enough for a reachable API server on a loaded node (the kernel answers the handshake),
/// short enough not to delay an idle user's wake by much.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(300);
/// How often the check repeats once serving.
pub const RECHECK_EVERY: Duration = Duration::from_secs(10);
/// How often it repeats while egress is still open.
const RETRY_EVERY: Duration = Duration::from_millis(250);
/// How often in the first seconds of a start, before egress was ever found blocked: the CNI
/// enforces a new pod's policy a moment after the container starts (kube-router: within the
/// first 250 ms on the test node), and a woken user's message waits for this verdict.
const START_RETRY_EVERY: Duration = Duration::from_millis(50);
const START_RETRIES_FOR: Duration = Duration::from_secs(3);

/// The pause before the next probe of an open egress, `since_start` into the guard's life.
pub fn open_retry(since_start: Duration, ever_blocked: bool) -> Duration {
    if !ever_blocked && since_start < START_RETRIES_FOR { START_RETRY_EVERY } else { RETRY_EVERY }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Egress {
    /// The connection was refused, timed out or had no route: the policy is in force.
    Blocked,
    /// The connection succeeded: nothing blocks this pod's egress.
    Open,
}

/// The address to probe, from the variables the kubelet sets in every container.
pub fn probe_target(host: Option<&str>, port: Option<&str>) -> Option<SocketAddr> {
    let ip = host?.parse().ok()?;
    Some(SocketAddr::new(ip, port.unwrap_or("443").parse().ok()?))
}

pub async fn probe(target: SocketAddr, timeout: Duration) -> Egress {
    match tokio::time::timeout(timeout, TcpStream::connect(target)).await {
        Ok(Ok(_)) => Egress::Open,
        Ok(Err(_)) | Err(_) => Egress::Blocked,
    }
}

/// Keep readiness in step with the probe until shutdown. Ready is set only after a probe
/// found egress blocked.
pub async fn guard(target: SocketAddr, health: Health, shutdown: Shutdown) {
    let mut warned = false;
    let (started, mut ever_blocked) = (tokio::time::Instant::now(), false);
    loop {
        let egress = probe(target, PROBE_TIMEOUT).await;
        health.set_ready(egress == Egress::Blocked);
        let wait = match egress {
            Egress::Blocked => {
                ever_blocked = true;
                if warned {
                    tracing::info!(%target, "egress is blocked now; serving");
                    health.set_detail("isolation", "egress blocked".into());
                    warned = false;
                }
                RECHECK_EVERY
            }
            Egress::Open => {
                if !warned {
                    tracing::error!(
                        %target,
                        "egress is open: this pod reached the Kubernetes API Service, which its NetworkPolicy denies; \
                         not serving until it is blocked (the CNI must enforce NetworkPolicy)"
                    );
                    health.set_detail("isolation", format!("egress open: {target} answered; not serving"));
                    warned = true;
                }
                open_retry(started.elapsed(), ever_blocked)
            }
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = shutdown.requested() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_target_comes_from_the_kubelets_variables() {
        assert_eq!(probe_target(Some("10.43.0.1"), Some("443")), Some("10.43.0.1:443".parse().unwrap()));
        assert_eq!(probe_target(Some("fd00::1"), Some("6443")), Some("[fd00::1]:6443".parse().unwrap()));
        assert_eq!(probe_target(None, Some("443")), None, "outside a cluster");
        assert_eq!(probe_target(Some("not an ip"), None), None);
    }

    #[test]
    fn an_open_egress_is_looked_at_again_soon_only_while_starting() {
        assert_eq!(open_retry(Duration::ZERO, false), START_RETRY_EVERY);
        assert_eq!(open_retry(START_RETRIES_FOR, false), RETRY_EVERY, "a CNI that never enforces: the usual pace");
        assert_eq!(open_retry(Duration::from_millis(500), true), RETRY_EVERY, "opened later: not a start");
    }

    #[tokio::test]
    async fn a_listening_address_is_open_and_a_closed_one_blocked() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let open = listener.local_addr().unwrap();
        assert_eq!(probe(open, PROBE_TIMEOUT).await, Egress::Open);
        drop(listener);
        assert_eq!(probe(open, PROBE_TIMEOUT).await, Egress::Blocked, "refused");
    }

    #[tokio::test]
    async fn readiness_follows_the_probe() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = listener.local_addr().unwrap();
        let (stop, shutdown) = Shutdown::manual();
        let health = Health::new();
        let task = tokio::spawn(guard(target, health.clone(), shutdown));
        tokio::time::sleep(RETRY_EVERY * 2).await;
        assert!(!health.is_ready(), "open egress: not ready");
        drop(listener);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !health.is_ready() {
            assert!(tokio::time::Instant::now() < deadline, "never ready once blocked");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        stop.send(true).unwrap();
        task.await.unwrap();
    }
}
