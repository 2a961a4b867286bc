//! The gateway's getUpdates loop against the Telegram stand-in, without a control plane:
//! every message taken once, and how often Telegram is asked while turns are under way.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::*;
use moltmates::dev::telegram::{StatsCondition, TelegramStandIn};
use moltmates::gateway::commands::Incoming;
use moltmates::gateway::telegram::{self, Handler, Ticket, Tracker};
use teloxide::prelude::*;

const TOKEN: &str = "123456:TEST-polling-token";

/// Answers every message after `turn`, like an agent would; records which updates it took.
struct Turns {
    turn: Duration,
    taken: Mutex<Vec<i64>>,
}

impl Handler for Turns {
    fn handle(&self, _message: Incoming, ticket: Ticket) {
        self.taken.lock().unwrap().push(ticket.update_id);
        let turn = self.turn;
        tokio::spawn(async move {
            tokio::time::sleep(turn).await;
            drop(ticket);
        });
    }
}

/// While turns are in flight Telegram answers each poll at once, with every unfinished
/// update again. A gateway that polled again at each new message or finished turn would ask
/// hundreds of times for this burst; it takes the burst in batches, each message once.
#[tokio::test]
async fn a_burst_of_messages_is_taken_in_batches_while_turns_are_under_way() {
    const MESSAGES: usize = 150;
    const EVERY: Duration = Duration::from_millis(4);
    let tg = TelegramStandIn::start("127.0.0.1:0".parse().unwrap(), TOKEN).await.unwrap();
    let bot = Bot::new(TOKEN).set_api_url(reqwest::Url::parse(&tg.url()).unwrap());
    let turns = Arc::new(Turns { turn: Duration::from_millis(10), taken: Mutex::new(Vec::new()) });
    let (_stop, shutdown) = moltmates::shutdown::Shutdown::manual();
    let polling = tokio::spawn(telegram::poll(
        bot,
        Arc::new(Tracker::default()),
        turns.clone(),
        Duration::from_secs(5),
        shutdown,
        Duration::from_secs(1),
    ));
    // The first (long) poll is waiting before the burst starts.
    tg.wait_for_stats(&StatsCondition { min_active_polls: Some(1), ..Default::default() }, Duration::from_secs(10))
        .await
        .expect("the loop polls");
    let polls_before = tg.stats().get_updates_calls;

    let started = Instant::now();
    let mut ids = Vec::new();
    for k in 0..MESSAGES {
        ids.push(tg.inject_text(2000 + (k % 10) as i64, &format!("message {k}")).unwrap().update_id);
        tokio::time::sleep_until((started + EVERY * (k as u32 + 1)).into()).await;
    }
    wait_until("every message taken", Duration::from_secs(30), || async {
        (turns.taken.lock().unwrap().len() >= MESSAGES).then_some(())
    })
    .await;
    let elapsed = started.elapsed();
    let polls = tg.stats().get_updates_calls - polls_before;
    tg.wait_for_stats(&StatsCondition { max_pending_updates: Some(0), ..Default::default() }, Duration::from_secs(10))
        .await
        .expect("every update confirmed once its turn is done");
    polling.abort();

    let mut taken = turns.taken.lock().unwrap().clone();
    taken.sort_unstable();
    assert_eq!(taken, ids, "each message taken exactly once");
    // At most one poll per 20 ms while busy, and one more whenever the loop falls idle.
    let bound = elapsed.as_millis() as u64 / 20 + 10;
    assert!(polls <= bound, "{polls} polls for {MESSAGES} messages in {elapsed:?}; at most {bound} expected");
}
