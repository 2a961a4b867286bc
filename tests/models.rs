//! Model choice end to end: `/model` through the Telegram stand-in and the real gateway, the
//! choice kept in the person's MoltmateUser, and the real agent's next turn reaching the
//! provider with that model through the broker. Lists from the spec, the profile and the
//! installation; what an administrator's narrower list does to a choice; and what a hostile
//! agent cannot do: use a model that is not on its person's list, or pick one for them.

use std::time::Duration;

use crate::support::*;
use kube::api::{Api, Patch, PatchParams};
use moltmates::dev::llm::MODEL;
use serde_json::json;

const ALICE: i64 = 3101;
const BOB: i64 = 3102;
const CAROL: i64 = 3103;

/// The model of the last chat request whose body holds `needle`.
fn model_of(llm: &moltmates::dev::llm::LlmStandIn, needle: &str) -> Option<String> {
    llm.requests()
        .into_iter()
        .rfind(|r| r.body.to_string().contains(needle))
        .and_then(|r| r.body.get("model").and_then(|m| m.as_str()).map(str::to_string))
}

/// Send `text` as `from` and wait for the echo; the model the provider was asked for.
async fn turn(
    tg: &moltmates::dev::telegram::TelegramStandIn,
    llm: &moltmates::dev::llm::LlmStandIn,
    from: i64,
    text: &str,
) -> String {
    tg.inject_text(from, text).unwrap();
    wait_text(tg, from, &format!("You said: {text}"), Duration::from_secs(30)).await;
    model_of(llm, text).expect("the turn reached the provider")
}

async fn stored_choice(client: &kube::Client, user: &str) -> Option<String> {
    let user = Api::<moltmates::MoltmateUser>::all(client.clone()).get(user).await.unwrap();
    user.status.and_then(|s| s.model)
}

/// One chat completion through the broker as `token`, naming `model`: (status, body).
async fn ask_for(port: u16, token: &str, model: &str) -> (u16, serde_json::Value) {
    let response = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/v1/chat/completions"))
        .bearer_auth(token)
        .json(&json!({ "model": model, "messages": [{ "role": "user", "content": "hi" }] }))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("the broker answers");
    (response.status().as_u16(), response.json().await.unwrap_or_default())
}

#[tokio::test]
async fn a_person_picks_a_model_from_their_list_and_the_broker_holds_every_request_to_it() {
    let Stack { env, client, llm, tg, broker_port } = Stack::up("models").await;
    let _node = env.spawn_agent_node(&format!("http://127.0.0.1:{broker_port}"));
    let _operator = env.spawn_operator("operator", free_port());
    // Alice's list is her own; Bob's comes from his profile; Carol's from the installation.
    let profiles = env.dir.join("profiles.yaml");
    std::fs::write(&profiles, format!("family:\n  llm: {{ models: [{MODEL}, gpt-family] }}\n")).unwrap();
    let alice_spec = json!({ "profile": "personal", "llm": { "models": ["gpt-big", MODEL] } });
    let alice = apply_user(&client, &user_manifest("alice", ALICE, alice_spec)).await.unwrap();
    apply_user(&client, &user_manifest("bob", BOB, json!({ "profile": "family" }))).await.unwrap();
    apply_user(&client, &user_manifest("carol", CAROL, json!({ "profile": "personal" }))).await.unwrap();
    let gateway = GatewayCommand::against(&env, &tg, &llm, broker_port).with(&[
        "--profiles-file",
        profiles.to_str().unwrap(),
        "--llm-models",
        &format!("{MODEL},gpt-everyone"),
    ]);
    let (mut proc, _) = gateway.spawn(&env);
    for name in ["alice", "bob", "carol"] {
        wait_phase(&client, name, "Ready", Duration::from_secs(30)).await;
    }

    // Each starts on the installation's default model, the first of nobody's list here.
    tg.inject_text(ALICE, "/model").unwrap();
    let shown = wait_text(&tg, ALICE, "Your models:", Duration::from_secs(20)).await;
    let shown = shown.last().unwrap();
    assert!(
        shown.contains(&format!("uses {MODEL}."))
            && shown.contains("1. gpt-big\n")
            && shown.contains(&format!("2. {MODEL} (in use, default)")),
        "{shown}"
    );
    assert_eq!(turn(&tg, &llm, ALICE, "first question").await, MODEL);

    // Alice picks another of hers: stored, and her next turn asks the provider for it.
    tg.inject_text(ALICE, "/model GPT-BIG").unwrap();
    wait_text(&tg, ALICE, "From now on your assistant uses gpt-big.", Duration::from_secs(20)).await;
    assert_eq!(stored_choice(&client, "alice").await.as_deref(), Some("gpt-big"));
    assert_eq!(turn(&tg, &llm, ALICE, "second question").await, "gpt-big");

    // A model of someone else's list is not hers to pick.
    tg.inject_text(ALICE, "/model gpt-family").unwrap();
    wait_text(
        &tg,
        ALICE,
        &format!("gpt-family is not one of your models. You may choose: gpt-big, {MODEL}."),
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(stored_choice(&client, "alice").await.as_deref(), Some("gpt-big"), "unchanged");

    // Bob (his profile's list) and Carol (the installation's) are untouched by Alice's choice,
    // and pick by number from their own lists.
    assert_eq!(turn(&tg, &llm, BOB, "bob asks").await, MODEL);
    tg.inject_text(BOB, "/model 2").unwrap();
    wait_text(&tg, BOB, "From now on your assistant uses gpt-family.", Duration::from_secs(20)).await;
    assert_eq!(turn(&tg, &llm, BOB, "bob asks again").await, "gpt-family");
    tg.inject_text(CAROL, "/model gpt-everyone").unwrap();
    wait_text(&tg, CAROL, "From now on your assistant uses gpt-everyone.", Duration::from_secs(20)).await;
    assert_eq!(turn(&tg, &llm, CAROL, "carol asks").await, "gpt-everyone");

    // A hostile agent holding Alice's token: a model off her list is refused before the
    // provider sees it, one on her list is served.
    let token = moltmates::token::MasterKey::new(MASTER_KEY).unwrap().agent_token(&alice.metadata.uid.unwrap());
    let asked_before = llm.requests().len();
    let (status, body) = ask_for(broker_port, &token, "gpt-family").await;
    assert_eq!(status, 400, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("\"gpt-big\"") && message.contains("not \"gpt-family\""), "{message}");
    assert_eq!(llm.requests().len(), asked_before, "nothing reached the provider");
    assert_eq!(ask_for(broker_port, &token, MODEL).await.0, 200);
    // Nor can it pick for her: the agent's token opens no way to the status.
    for path in ["/v1/model", "/v1/models/gpt-big"] {
        let status = reqwest::Client::new()
            .put(format!("http://127.0.0.1:{broker_port}{path}"))
            .bearer_auth(&token)
            .json(&json!({ "model": "gpt-family" }))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        assert!(status == 404 || status == 405, "{path}: {status}");
    }
    assert_eq!(stored_choice(&client, "alice").await.as_deref(), Some("gpt-big"));

    // The administrator narrows Alice's list: her choice no longer holds, she is back on the
    // default at once, and /model says so.
    Api::<moltmates::MoltmateUser>::all(client.clone())
        .patch("alice", &PatchParams::default(), &Patch::Merge(&json!({ "spec": { "llm": { "models": [MODEL] } } })))
        .await
        .unwrap();
    wait_until("the broker follows the narrower list", Duration::from_secs(20), || async {
        let (status, _) = ask_for(broker_port, &token, "gpt-big").await;
        (status == 400).then_some(())
    })
    .await;
    assert_eq!(turn(&tg, &llm, ALICE, "third question").await, MODEL);
    tg.inject_text(ALICE, "/model").unwrap();
    wait_text(
        &tg,
        ALICE,
        &format!("Your assistant uses {MODEL}, the only model available to you."),
        Duration::from_secs(20),
    )
    .await;

    // Back to the default clears a stored choice.
    tg.inject_text(BOB, "/model default").unwrap();
    wait_text(&tg, BOB, &format!("Your assistant uses the default model again: {MODEL}."), Duration::from_secs(20))
        .await;
    assert_eq!(stored_choice(&client, "bob").await, None);
    assert!(proc.is_running(), "the gateway exited:\n{}", proc.log_tail());
}
