//! Reminders end to end: set by the model through a real agent's `schedule` tool, listed and
//! cancelled with `/reminders`, delivered when due by the real gateway through the Telegram
//! stand-in, once, also after a gateway restart and to an idle user, and noted in the agent's
//! conversation. And what a hostile agent cannot do with them.

use std::time::Duration;

use crate::support::*;
use jiff::Timestamp;
use kube::api::Api;
use moltmates::dev::llm::Scripted;
use serde_json::json;

const ALICE: i64 = 2001;
const BOB: i64 = 2002;
const DAVE: i64 = 2004;

fn schedule(arguments: serde_json::Value) -> Scripted {
    Scripted::ToolCall { name: "schedule".into(), arguments, total_tokens: None }
}

fn reply(text: &str) -> Scripted {
    Scripted::Reply { content: text.into(), total_tokens: None }
}

/// How many messages to `chat` contain `needle`.
fn count(tg: &moltmates::dev::telegram::TelegramStandIn, chat: i64, needle: &str) -> usize {
    texts(tg, chat).iter().filter(|t| t.contains(needle)).count()
}

/// The user's pending reminders as stored (text, due).
async fn pending(client: &kube::Client, user: &str) -> Vec<(String, String)> {
    let user = Api::<moltmates::MoltmateUser>::all(client.clone()).get(user).await.unwrap();
    let book = user.status.and_then(|s| s.reminders).unwrap_or_default();
    book.pending.into_iter().map(|r| (r.text, r.due)).collect()
}

/// The body of the model request that carried `needle` last (what the agent showed the model).
fn request_with(llm: &moltmates::dev::llm::LlmStandIn, needle: &str) -> Option<String> {
    llm.requests().into_iter().map(|r| r.body.to_string()).rfind(|b| b.contains(needle))
}

/// Wait until `at` has passed (a reminder's due time).
async fn wait_past(at: Timestamp) {
    wait_until("the due time has passed", Duration::from_secs(60), || async { (Timestamp::now() > at).then_some(()) })
        .await;
}

#[tokio::test]
async fn reminders_set_by_the_model_are_listed_cancelled_and_delivered_once() {
    let Stack { env, client, llm, tg, broker_port } = Stack::up("reminders").await;
    let _node = env.spawn_agent_node(&format!("http://127.0.0.1:{broker_port}"));
    let _operator = env.spawn_operator("operator", free_port());
    for (name, id) in [("alice", ALICE), ("bob", BOB)] {
        apply_user(&client, &user_manifest(name, id, json!({ "profile": "personal" }))).await.unwrap();
    }
    let gateway = GatewayCommand::against(&env, &tg, &llm, broker_port);
    let (mut proc, _) = gateway.spawn(&env);
    for name in ["alice", "bob"] {
        wait_phase(&client, name, "Ready", Duration::from_secs(30)).await;
    }

    // The person's time zone: an unknown one is refused with the reason, a real one taken.
    tg.inject_text(ALICE, "/timezone Mars/Olympus").unwrap();
    wait_text(&tg, ALICE, "\"Mars/Olympus\" is not a time zone I know", Duration::from_secs(20)).await;
    tg.inject_text(ALICE, "/timezone Europe/Berlin").unwrap();
    wait_text(&tg, ALICE, "Your time zone is now Europe/Berlin", Duration::from_secs(20)).await;

    // "Remind me...": the model sets three, and a fourth far ahead.
    llm.script([
        schedule(json!({ "text": "call mum", "when": "in 8s" })),
        schedule(json!({ "text": "never this one", "when": "in 11s" })),
        schedule(json!({ "text": "after the cancelled one", "when": "in 14s" })),
        schedule(json!({ "text": "dentist", "when": "tomorrow 09:30" })),
        reply("I will remind you."),
    ]);
    tg.inject_text(ALICE, "remind me in a few seconds to call mum, and a few other things").unwrap();
    wait_text(&tg, ALICE, "I will remind you.", Duration::from_secs(20)).await;
    let seen = request_with(&llm, "reminder set: #4").expect("the model read what was set");
    assert!(seen.contains("(Europe/Berlin)"), "in the person's zone: {seen}");

    tg.inject_text(ALICE, "/reminders").unwrap();
    let list = wait_text(&tg, ALICE, "Your reminders:", Duration::from_secs(20)).await;
    let list = list.last().unwrap();
    for text in ["#1 ", "call mum", "#2 ", "never this one", "(Europe/Berlin): dentist", "/reminders cancel 1"] {
        assert!(list.contains(text), "{text:?} in {list}");
    }
    tg.inject_text(ALICE, "/reminders cancel 2").unwrap();
    wait_text(&tg, ALICE, "Cancelled reminder #2: never this one", Duration::from_secs(20)).await;
    tg.inject_text(ALICE, "/reminders cancel 9").unwrap();
    wait_text(&tg, ALICE, "There is no reminder #9", Duration::from_secs(20)).await;

    // Due: delivered, each once; the cancelled one never, though the one after it came.
    wait_text(&tg, ALICE, "⏰ Reminder: call mum", Duration::from_secs(30)).await;
    wait_text(&tg, ALICE, "⏰ Reminder: after the cancelled one", Duration::from_secs(30)).await;
    assert_eq!(count(&tg, ALICE, "⏰ Reminder: never this one"), 0, "{:?}", texts(&tg, ALICE));
    wait_until("the delivered ones leave the store", Duration::from_secs(10), || async {
        (pending(&client, "alice").await.len() == 1).then_some(())
    })
    .await;
    assert_eq!(count(&tg, ALICE, "⏰ Reminder: call mum"), 1, "{:?}", texts(&tg, ALICE));

    // A follow-up question: the agent's conversation has the reminder in it.
    tg.inject_text(ALICE, "what was that about?").unwrap();
    wait_text(&tg, ALICE, "You said: what was that about?", Duration::from_secs(20)).await;
    let asked = request_with(&llm, "what was that about?").unwrap();
    assert!(asked.contains("⏰ Reminder: call mum"), "the model saw the reminder: {asked}");

    // Due while no gateway runs: delivered once after it is back.
    llm.script([schedule(json!({ "text": "water the plants", "when": "in 5s" })), reply("Noted.")]);
    tg.inject_text(ALICE, "remind me to water the plants").unwrap();
    wait_text(&tg, ALICE, "Noted.", Duration::from_secs(20)).await;
    let (_, due) = pending(&client, "alice").await.into_iter().find(|(t, _)| t == "water the plants").unwrap();
    proc.kill();
    wait_past(due.parse::<Timestamp>().unwrap() + jiff::SignedDuration::from_secs(1)).await;
    assert_eq!(count(&tg, ALICE, "water the plants"), 0);
    let (_proc, _) = gateway.spawn(&env);
    // (The new gateway polls, and delivers, once the killed one's Lease has expired.)
    wait_text(&tg, ALICE, "⏰ Reminder: water the plants", Duration::from_secs(60)).await;
    wait_until("the late one leaves the store", Duration::from_secs(10), || async {
        pending(&client, "alice").await.iter().all(|(t, _)| t != "water the plants").then_some(())
    })
    .await;
    assert_eq!(count(&tg, ALICE, "⏰ Reminder: water the plants"), 1, "{:?}", texts(&tg, ALICE));

    // Bob's agent, prompt-injected, names Alice's chat: the reminder is Bob's, in Bob's chat.
    llm.script([
        schedule(json!({ "text": "pay mallory", "when": "in 3s", "chat_id": ALICE, "user": "alice" })),
        schedule(json!({ "text": "spam", "when": "in 2h", "repeat": "every 1m" })),
        reply("Sure."),
    ]);
    tg.inject_text(BOB, "set things up").unwrap();
    wait_text(&tg, BOB, "Sure.", Duration::from_secs(20)).await;
    let refused = request_with(&llm, "at most every 1h").expect("the refusal reached the model");
    assert!(refused.contains("denied"), "{refused}");
    wait_text(&tg, BOB, "⏰ Reminder: pay mallory", Duration::from_secs(30)).await;
    assert_eq!(count(&tg, ALICE, "mallory"), 0, "{:?}", texts(&tg, ALICE));

    // Bob's agent calling the broker itself: no field names a chat, and the rate is the
    // gateway's, whatever the agent does.
    let token = moltmates::token::MasterKey::new(MASTER_KEY).unwrap().agent_token(
        &Api::<moltmates::MoltmateUser>::all(client.clone()).get("bob").await.unwrap().metadata.uid.unwrap(),
    );
    let http = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{broker_port}/v1/reminders");
    let post = |body: serde_json::Value| http.post(&url).bearer_auth(&token).json(&body).send();
    let aimed = post(json!({ "text": "x", "when": "in 1h", "chat_id": ALICE })).await.unwrap();
    assert_eq!(aimed.status(), 400, "{:?}", aimed.text().await);
    let mut statuses = Vec::new();
    for i in 0..10 {
        statuses.push(post(json!({ "text": format!("flood {i}"), "when": "in 2h" })).await.unwrap().status().as_u16());
    }
    // Two were asked for through the model this minute; ten a minute is the most.
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 8, "{statuses:?}");
    let over = post(json!({ "text": "one more", "when": "in 2h" })).await.unwrap();
    assert_eq!(over.status(), 429);
    assert!(over.text().await.unwrap().contains("per minute"));
    // Bob cancelling "his" #4 takes his own, never Alice's dentist.
    let cancelled = http.delete(format!("{url}/4")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(cancelled.status(), 200);
    assert!(pending(&client, "alice").await.iter().any(|(t, _)| t == "dentist"));
    // Without a valid token nothing is set.
    let stranger = http.post(&url).bearer_auth("not-a-token").json(&json!({"text": "x", "when": "in 1h"})).send();
    assert_eq!(stranger.await.unwrap().status(), 401);
    tg.inject_text(ALICE, "/reminders").unwrap();
    wait_until("alice's list", Duration::from_secs(20), || async {
        texts(&tg, ALICE).last().filter(|t| t.starts_with("Your reminders:")).cloned()
    })
    .await;
    let list = texts(&tg, ALICE).last().unwrap().clone();
    assert!(list.contains("dentist") && !list.contains("flood") && !list.contains("spam"), "{list}");
}

/// An idle user's agent has no pod when the reminder is due: the person gets it on time, and
/// the agent, woken quietly, has it in its conversation.
#[tokio::test]
async fn a_reminder_reaches_an_idle_user_and_wakes_the_agent_to_note_it() {
    let Stack { env, client, llm, tg, broker_port } = Stack::up("reminders-idle").await;
    let _node = env.spawn_agent_node(&format!("http://127.0.0.1:{broker_port}"));
    let _operator = env.spawn_operator("operator", free_port());
    let spec = json!({ "profile": "personal", "idleTimeout": "3s", "timezone": "America/New_York" });
    apply_user(&client, &user_manifest("dave", DAVE, spec)).await.unwrap();
    let gateway = GatewayCommand::against(&env, &tg, &llm, broker_port);
    let (_proc, metrics_port) = gateway.spawn(&env);
    wait_phase(&client, "dave", "Ready", Duration::from_secs(30)).await;

    llm.script([schedule(json!({ "text": "stretch", "when": "in 25s" })), reply("Will do.")]);
    tg.inject_text(DAVE, "remind me to stretch").unwrap();
    wait_text(&tg, DAVE, "Will do.", Duration::from_secs(20)).await;
    assert!(request_with(&llm, "(America/New_York)").is_some(), "the spec's time zone, as none was chosen");
    wait_phase(&client, "dave", "Idle", Duration::from_secs(30)).await;
    assert_eq!(count(&tg, DAVE, "stretch"), 0, "idle before it is due");

    wait_text(&tg, DAVE, "⏰ Reminder: stretch", Duration::from_secs(60)).await;
    let volumes = env.dir.join("node").join("volumes");
    wait_until("the woken agent notes it in its conversation", Duration::from_secs(60), || async {
        sessions_contain(&volumes, "moltmate-dave-", "⏰ Reminder: stretch").then_some(())
    })
    .await;
    let sent = texts(&tg, DAVE);
    assert!(!sent.iter().any(|t| t.contains("starting up")), "woken quietly: {sent:?}");
    assert_eq!(count(&tg, DAVE, "⏰ Reminder: stretch"), 1, "{sent:?}");
    let (_, metrics) = http_get(metrics_port, "/metrics").await.unwrap();
    assert!(metrics.contains("moltmate_gateway_reminders_delivered_total 1"), "{metrics}");
    tg.inject_text(DAVE, "done, thanks").unwrap();
    wait_text(&tg, DAVE, "You said: done, thanks", Duration::from_secs(30)).await;
    assert!(request_with(&llm, "done, thanks").unwrap().contains("⏰ Reminder: stretch"));
}

/// Whether a session file in a workspace volume of `prefix` (`moltmate-dave-`) holds `needle`.
fn sessions_contain(volumes: &std::path::Path, prefix: &str, needle: &str) -> bool {
    let Ok(entries) = std::fs::read_dir(volumes) else { return false };
    entries.flatten().filter(|e| e.file_name().to_string_lossy().starts_with(prefix)).any(|volume| {
        let Ok(files) = std::fs::read_dir(volume.path().join("sessions")) else { return false };
        files.flatten().any(|f| std::fs::read_to_string(f.path()).is_ok_and(|text| text.contains(needle)))
    })
}

/// A profile's reminder limits (`reminders` in the profile defaults) hold at the broker,
/// whatever the agent asks: waiting at once, the shortest repeat, new ones per day. Another
/// profile keeps the gateway's.
#[tokio::test]
async fn a_profiles_reminder_limits_hold_whatever_the_agent_asks() {
    let Stack { env, client, llm, tg, broker_port } = Stack::up("reminders-limits").await;
    let _node = env.spawn_agent_node(&format!("http://127.0.0.1:{broker_port}"));
    let _operator = env.spawn_operator("operator", free_port());
    let profiles = env.dir.join("profiles.yaml");
    std::fs::write(&profiles, "public:\n  reminders: { maxPending: 1, minRepeat: 2h, perDay: 3 }\n").unwrap();
    apply_user(&client, &user_manifest("alice", ALICE, json!({ "profile": "public" }))).await.unwrap();
    apply_user(&client, &user_manifest("bob", BOB, json!({ "profile": "personal" }))).await.unwrap();
    let gateway =
        GatewayCommand::against(&env, &tg, &llm, broker_port).set("--profiles-file", profiles.to_str().unwrap());
    let (_proc, _) = gateway.spawn(&env);
    for name in ["alice", "bob"] {
        wait_phase(&client, name, "Ready", Duration::from_secs(30)).await;
    }
    let wait = Duration::from_secs(20);
    let ask = |from: i64, text: &str, when: &str, repeat: Option<&str>| {
        let mut call = json!({ "text": text, "when": when });
        if let Some(repeat) = repeat {
            call["repeat"] = json!(repeat);
        }
        tg.inject_text(from, &format!("/tool schedule {call}")).unwrap();
    };

    ask(ALICE, "tea", "in 1h", None);
    wait_text(&tg, ALICE, "reminder set: #1", wait).await;
    ask(ALICE, "coffee", "in 2h", None);
    wait_text(&tg, ALICE, "there are 1 pending reminders already", wait).await;
    tg.inject_text(ALICE, "/reminders cancel 1").unwrap();
    wait_text(&tg, ALICE, "Cancelled reminder #1: tea", wait).await;
    ask(ALICE, "stretch", "in 1h", Some("every 1h"));
    wait_text(&tg, ALICE, "at most every 2h", wait).await;
    assert!(pending(&client, "alice").await.is_empty(), "nothing over the limits was kept");
    // Three asked today (two refused by the limits above still count): the fourth is over.
    ask(ALICE, "water", "in 1h", None);
    wait_text(&tg, ALICE, "at most 3 new reminders per day", wait).await;

    // Bob's profile sets none: the gateway's limits.
    for (i, text) in ["one", "two", "three", "four"].into_iter().enumerate() {
        ask(BOB, text, "in 1h", Some("every 1h"));
        wait_text(&tg, BOB, &format!("reminder set: #{}", i + 1), wait).await;
    }
    assert_eq!(pending(&client, "bob").await.len(), 4);
}
