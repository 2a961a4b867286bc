//! The store behind a lock, plus a change signal so that long polls, webhook delivery and the
//! control API's waits wake on state changes instead of sleeping.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;
use tokio::time::Instant;

use super::store::Store;

pub struct Shared {
    store: Mutex<Store>,
    /// Bumped after every change; waiters re-check their condition.
    changed: watch::Sender<()>,
    shutting_down: AtomicBool,
    pub token: String,
}

/// How a wait ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Waited<T> {
    Ready(T),
    TimedOut,
    ShuttingDown,
}

impl Shared {
    pub fn new(store: Store, token: String) -> Self {
        Self { store: Mutex::new(store), changed: watch::Sender::new(()), shutting_down: AtomicBool::new(false), token }
    }

    fn lock(&self) -> MutexGuard<'_, Store> {
        // A panic elsewhere while holding the lock leaves the store consistent enough for a
        // test double; keep serving rather than cascade the panic.
        self.store.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn read<T>(&self, f: impl FnOnce(&Store) -> T) -> T {
        f(&self.lock())
    }

    pub fn update<T>(&self, f: impl FnOnce(&mut Store) -> T) -> T {
        let result = f(&mut self.lock());
        self.changed.send_replace(());
        result
    }

    pub fn shut_down(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
        self.changed.send_replace(());
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    /// Re-run `check` on every change until it yields a value, `timeout` passes (`None`: never)
    /// or the stand-in shuts down. A `check` that yields may have changed the store, so other
    /// waiters are woken then.
    pub async fn wait_until<T>(
        &self,
        timeout: Option<Duration>,
        mut check: impl FnMut(&mut Store) -> Option<T>,
    ) -> Waited<T> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut rx = self.changed.subscribe();
        loop {
            // Mark the current version seen before checking, so a change made after the
            // check cannot be missed.
            rx.borrow_and_update();
            if self.is_shutting_down() {
                return Waited::ShuttingDown;
            }
            if let Some(value) = check(&mut self.lock()) {
                self.changed.send_replace(());
                return Waited::Ready(value);
            }
            let changed = rx.changed();
            match deadline {
                Some(deadline) => {
                    if tokio::time::timeout_at(deadline, changed).await.is_err() {
                        return Waited::TimedOut;
                    }
                }
                // The sender lives as long as `self`, so this cannot fail while we wait.
                None => {
                    let _ = changed.await;
                }
            }
        }
    }

    /// Sleep that ends early on shutdown; returns false if it did.
    pub async fn sleep(&self, duration: Duration) -> bool {
        let result = self.wait_until(Some(duration), |_| None::<()>).await;
        !matches!(result, Waited::ShuttingDown)
    }
}

/// Unix time in seconds, as Telegram's `date` fields.
pub fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}
