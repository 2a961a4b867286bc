//! Waiting longer after each failure: doubling from a first pause up to a ceiling. One rule
//! for every retry loop (agent calls, reconciles, the stand-ins' restarts and deliveries).

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Backoff {
    pub const fn new(initial: Duration, max: Duration) -> Self {
        Self { initial, max }
    }

    /// The pause after `failures` earlier failures: `initial`, then doubling, at most `max`.
    pub fn delay(&self, failures: u32) -> Duration {
        let factor = 2u32.saturating_pow(failures.min(31));
        self.initial.saturating_mul(factor).min(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_from_the_first_pause_and_caps() {
        let backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(8));
        let delays: Vec<_> = (0..7).map(|n| backoff.delay(n).as_millis()).collect();
        assert_eq!(delays, [500, 1000, 2000, 4000, 8000, 8000, 8000]);
        assert_eq!(backoff.delay(u32::MAX), Duration::from_secs(8), "no overflow");
    }
}
