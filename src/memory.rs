//! The operator's heap on glibc. It holds a cache of every user's objects and, while users
//! are provisioned, their built objects and the API server's answers; glibc keeps what it
//! once held unless told otherwise (scripts/bench, memory). The static musl image needs none
//! of this, and elsewhere these are no-ops. The lean agent (`moltmate-agent`) takes one arena
//! too, for its blocking threads.

use std::time::Duration;

/// How often free heap pages are handed back while the operator runs.
pub const TRIM_EVERY: Duration = Duration::from_secs(5);

/// One malloc arena for all threads. glibc gives threads arenas of their own (up to 8 per
/// core) and keeps what each once held: the operator's reconciles, spread over the runtime's
/// threads, left its RSS at 60-66 MiB after provisioning 500 users with an arena per thread,
/// 49 MiB with one in all. Its allocations are few and not contended. Call before any
/// thread is started.
pub fn one_malloc_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; no other thread exists yet.
    #[allow(unsafe_code)]
    unsafe {
        nix::libc::mallopt(nix::libc::M_ARENA_MAX, 1);
    }
}

/// Hand free pages inside the heap back to the system every `period`: freed memory between
/// live allocations is otherwise kept, and a provisioning burst leaves the heap full of it.
pub async fn trim_periodically(period: Duration) {
    let mut every = tokio::time::interval(period);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: malloc_trim is thread-safe and only releases unused pages.
        #[allow(unsafe_code)]
        unsafe {
            nix::libc::malloc_trim(0);
        }
    }
}
