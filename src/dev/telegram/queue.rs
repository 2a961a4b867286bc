//! The update queue and Telegram's offset rules, with no I/O.
//!
//! An update stays queued until confirmed: `getUpdates` with an `offset` confirms (drops) every
//! update whose id is lower; a negative offset keeps only the last `-offset` updates; a webhook
//! confirms an update once the receiver answers 2xx.

use std::collections::VecDeque;

use super::types::Update;

#[derive(Debug)]
pub struct UpdateQueue {
    next_id: i64,
    pending: VecDeque<Update>,
    cap: usize,
    /// Unconfirmed updates dropped because the queue was full.
    overflowed: u64,
}

impl UpdateQueue {
    pub fn new(first_id: i64, cap: usize) -> Self {
        Self { next_id: first_id, pending: VecDeque::new(), cap: cap.max(1), overflowed: 0 }
    }

    /// The id the next update will get.
    pub fn next_id(&self) -> i64 {
        self.next_id
    }

    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    pub fn overflowed(&self) -> u64 {
        self.overflowed
    }

    /// Allocate the next update id without queueing anything (an update the bot filtered out).
    pub fn skip_id(&mut self) -> i64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Queue the update built for the next id; returns that id. When full, the oldest
    /// unconfirmed update goes (Telegram likewise forgets updates nobody fetches).
    pub fn push(&mut self, build: impl FnOnce(i64) -> Update) -> i64 {
        let id = self.skip_id();
        if self.pending.len() >= self.cap {
            self.pending.pop_front();
            self.overflowed += 1;
        }
        self.pending.push_back(build(id));
        id
    }

    /// Forget every update with an id lower than `offset`.
    pub fn confirm_below(&mut self, offset: i64) {
        while self.pending.front().is_some_and(|u| u.update_id < offset) {
            self.pending.pop_front();
        }
    }

    /// Apply `getUpdates`' `offset` (confirming what it confirms), then return up to `limit`
    /// updates from the front.
    pub fn fetch(&mut self, offset: Option<i64>, limit: usize) -> Vec<Update> {
        match offset {
            Some(o) if o < 0 => {
                let keep = usize::try_from(o.unsigned_abs()).unwrap_or(usize::MAX);
                let drop = self.pending.len().saturating_sub(keep);
                self.pending.drain(..drop);
            }
            Some(o) => self.confirm_below(o),
            None => {}
        }
        self.pending.iter().take(limit).cloned().collect()
    }

    pub fn front(&self) -> Option<&Update> {
        self.pending.front()
    }

    pub fn clear(&mut self) {
        self.pending.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dev::telegram::types::{Chat, ChatType, Message};

    fn update(id: i64) -> Update {
        let chat =
            Chat { id: 1, kind: ChatType::Private, title: None, first_name: None, last_name: None, username: None };
        let message = Message {
            message_id: id,
            from: None,
            date: 0,
            chat,
            text: format!("m{id}"),
            edit_date: None,
            reply_markup: None,
            caption: None,
            media: Default::default(),
        };
        Update { update_id: id, message: Some(message), callback_query: None }
    }

    fn ids(updates: &[Update]) -> Vec<i64> {
        updates.iter().map(|u| u.update_id).collect()
    }

    fn queue_with(n: i64) -> UpdateQueue {
        let mut q = UpdateQueue::new(10, 100);
        for _ in 0..n {
            q.push(update);
        }
        q
    }

    #[test]
    fn without_offset_nothing_is_confirmed() {
        let mut q = queue_with(3);
        assert_eq!(ids(&q.fetch(None, 100)), [10, 11, 12]);
        assert_eq!(ids(&q.fetch(None, 100)), [10, 11, 12]);
    }

    #[test]
    fn offset_confirms_lower_ids_only() {
        let mut q = queue_with(3);
        assert_eq!(ids(&q.fetch(Some(12), 100)), [12]);
        // Confirmed updates are gone even for a lower offset afterwards.
        assert_eq!(ids(&q.fetch(Some(0), 100)), [12]);
        assert_eq!(ids(&q.fetch(Some(13), 100)), Vec::<i64>::new());
        assert!(q.is_empty());
        assert_eq!(q.push(update), 13);
    }

    #[test]
    fn limit_takes_from_the_front() {
        let mut q = queue_with(5);
        assert_eq!(ids(&q.fetch(None, 2)), [10, 11]);
        assert_eq!(ids(&q.fetch(Some(12), 2)), [12, 13]);
    }

    #[test]
    fn negative_offset_keeps_the_last_updates() {
        let mut q = queue_with(5);
        assert_eq!(ids(&q.fetch(Some(-2), 100)), [13, 14]);
        assert_eq!(q.len(), 2);
        assert_eq!(ids(&q.fetch(Some(-10), 100)), [13, 14]);
        assert_eq!(ids(&q.fetch(Some(i64::MIN), 100)), [13, 14]);
    }

    #[test]
    fn full_queue_drops_the_oldest() {
        let mut q = UpdateQueue::new(1, 2);
        for _ in 0..3 {
            q.push(update);
        }
        assert_eq!(ids(&q.fetch(None, 100)), [2, 3]);
        assert_eq!(q.overflowed(), 1);
    }

    #[test]
    fn skipped_ids_are_never_reused() {
        let mut q = UpdateQueue::new(1, 10);
        assert_eq!(q.skip_id(), 1);
        assert_eq!(q.push(update), 2);
    }
}
