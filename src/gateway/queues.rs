//! One bounded FIFO per user, each drained by its own worker task: a user's messages stay in
//! order, users are served in parallel, and a slow agent only delays its own user.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::mpsc;

/// Starts the worker that drains one user's queue.
pub type Spawn<J> = Box<dyn Fn(String, mpsc::Receiver<J>) + Send + Sync>;

pub struct Queues<J> {
    capacity: usize,
    senders: Mutex<HashMap<String, mpsc::Sender<J>>>,
    spawn: Spawn<J>,
}

impl<J> Queues<J> {
    pub fn new(capacity: usize, spawn: Spawn<J>) -> Self {
        Self { capacity: capacity.max(1), senders: Mutex::new(HashMap::new()), spawn }
    }

    /// Queue `job` for `user`; gives it back if the user's queue is full.
    pub fn push(&self, user: &str, job: J) -> Result<(), J> {
        let mut senders = self.senders.lock().unwrap_or_else(|e| e.into_inner());
        let job = match senders.get(user) {
            Some(tx) => match tx.try_send(job) {
                Ok(()) => return Ok(()),
                Err(mpsc::error::TrySendError::Full(job)) => return Err(job),
                // The worker is gone (it only stops if its task ended): start a fresh one.
                Err(mpsc::error::TrySendError::Closed(job)) => job,
            },
            None => job,
        };
        let (tx, rx) = mpsc::channel(self.capacity);
        // A fresh channel has room for one.
        let result = tx.try_send(job).map_err(|e| e.into_inner());
        (self.spawn)(user.to_string(), rx);
        senders.insert(user.to_string(), tx);
        result
    }

    /// Jobs waiting per user (not counting the one its worker is on), sorted by user.
    pub fn depths(&self) -> Vec<(String, usize)> {
        let senders = self.senders.lock().unwrap_or_else(|e| e.into_inner());
        let mut depths: Vec<_> = senders
            .iter()
            .filter(|(_, tx)| !tx.is_closed())
            .map(|(user, tx)| (user.clone(), tx.max_capacity() - tx.capacity()))
            .collect();
        depths.sort();
        depths
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use tokio::sync::Notify;

    #[tokio::test]
    async fn per_user_order_bound_and_parallel_users() {
        let gate = Arc::new(Notify::new());
        let seen: Arc<Mutex<Vec<(String, u32)>>> = Arc::default();
        let (spawn_gate, spawn_seen) = (gate.clone(), seen.clone());
        let queues = Queues::new(
            2,
            Box::new(move |user: String, mut rx: mpsc::Receiver<u32>| {
                let (gate, seen) = (spawn_gate.clone(), spawn_seen.clone());
                tokio::spawn(async move {
                    // alice's worker is stuck until released; bob's is not.
                    if user == "alice" {
                        gate.notified().await;
                    }
                    while let Some(job) = rx.recv().await {
                        seen.lock().unwrap().push((user.clone(), job));
                    }
                });
            }),
        );
        assert_eq!(queues.push("alice", 1), Ok(()));
        assert_eq!(queues.push("alice", 2), Ok(()));
        assert_eq!(queues.push("alice", 3), Err(3), "bounded at 2");
        assert_eq!(queues.push("bob", 10), Ok(()));
        for _ in 0..100 {
            if seen.lock().unwrap().len() == 1 {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(*seen.lock().unwrap(), vec![("bob".to_string(), 10)], "bob is served while alice waits");
        gate.notify_one();
        for _ in 0..100 {
            if seen.lock().unwrap().len() == 3 {
                break;
            }
            tokio::task::yield_now().await;
        }
        let alice: Vec<u32> = seen.lock().unwrap().iter().filter(|(u, _)| u == "alice").map(|(_, j)| *j).collect();
        assert_eq!(alice, vec![1, 2], "in order");
        assert_eq!(queues.depths(), vec![("alice".to_string(), 0), ("bob".to_string(), 0)]);
    }

    #[tokio::test]
    async fn depths_count_what_waits() {
        let queues = Queues::new(
            5,
            Box::new(|_user: String, rx: mpsc::Receiver<u32>| {
                // A worker that never takes anything: the queue only fills.
                std::mem::forget(rx);
            }),
        );
        assert!(queues.depths().is_empty());
        for job in 0..3 {
            queues.push("carol", job).unwrap();
        }
        assert_eq!(queues.depths(), vec![("carol".to_string(), 3)]);
    }
}
