//! Which Telegram updates may be confirmed to `getUpdates`.
//!
//! Updates are handled per user, in parallel, so they finish out of order. The offset we
//! confirm moves past an update only once it is done (answered by its agent, or refused):
//! a gateway killed at any moment leaves every unfinished update with Telegram, which
//! delivers it again after the restart (the agent answers a repeated update_id from its
//! record instead of asking the model twice).

use std::collections::BTreeSet;

#[derive(Debug, Default, Clone)]
pub struct Confirmations {
    in_flight: BTreeSet<i64>,
    /// One past the highest update id seen.
    next: Option<i64>,
}

impl Confirmations {
    /// A received update: true if it is new and should be handled; false if it is being
    /// handled or already done (getUpdates returns unconfirmed updates again).
    pub fn begin(&mut self, update_id: i64) -> bool {
        if self.in_flight.contains(&update_id) || self.next.is_some_and(|next| update_id < next) {
            return false;
        }
        self.in_flight.insert(update_id);
        self.next = Some(update_id + 1);
        true
    }

    /// The update is answered or refused.
    pub fn done(&mut self, update_id: i64) {
        self.in_flight.remove(&update_id);
    }

    /// The `offset` for the next getUpdates: every update below it is done.
    pub fn offset(&self) -> Option<i64> {
        self.in_flight.first().copied().or(self.next)
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_waits_for_the_oldest_unfinished_update() {
        let mut c = Confirmations::default();
        assert_eq!(c.offset(), None, "nothing seen: poll without an offset");
        assert!(c.begin(10) && c.begin(11) && c.begin(12));
        assert_eq!(c.offset(), Some(10));
        c.done(11);
        assert_eq!(c.offset(), Some(10), "11 is done but 10 is not");
        c.done(10);
        assert_eq!(c.offset(), Some(12));
        c.done(12);
        assert_eq!(c.offset(), Some(13));
        assert_eq!(c.in_flight(), 0);
    }

    #[test]
    fn redelivered_updates_are_not_handled_twice() {
        let mut c = Confirmations::default();
        assert!(c.begin(5));
        assert!(!c.begin(5), "still in flight");
        assert!(c.begin(6));
        c.done(6);
        assert!(!c.begin(6), "done, though not yet confirmed (5 is still running)");
        assert!(c.begin(7));
    }

    #[test]
    fn a_fresh_gateway_handles_whatever_telegram_redelivers() {
        // After a restart nothing is known: every unconfirmed update is new again, and the
        // agent's update_id record keeps the answer single.
        let mut c = Confirmations::default();
        assert!(c.begin(5) && c.begin(6));
    }
}
