//! Self-service access end to end: strangers ask the bot through the Telegram stand-in, admins
//! decide with the buttons the real gateway sends (or `moltmate users approve|deny`), against a
//! real control plane; in create mode the operator and real agents serve the newcomer.

use std::process::{Command, Output};
use std::time::Duration;

use crate::support::*;
use kube::api::{Api, PostParams};
use moltmates::MoltmateUser;
use moltmates::dev::telegram::{InjectMessage, SentMessage, TelegramStandIn};
use serde_json::Value;

const ADMIN: i64 = 4242;
const NEWCOMER: i64 = 5001;
const OTHER: i64 = 5002;
const THIRD: i64 = 5003;
const LATE: i64 = 5004;
const WAIT: Duration = Duration::from_secs(30);

/// The gateway with access requests on, `ADMIN` its admin.
fn gateway_with_access(stack: &Stack, extra: &[&str]) -> GatewayCommand {
    stack.gateway().with(&["--access-admins", &ADMIN.to_string()]).with(extra)
}

/// The admin opens their chat with the bot (Telegram lets a bot write only to people who have).
async fn admin_says_start(tg: &TelegramStandIn) {
    tg.inject_text(ADMIN, "/start").unwrap();
    wait_text(tg, ADMIN, "You are an administrator of this bot", WAIT).await;
}

/// A stranger's `/request`; the code they are given.
async fn request_access(tg: &TelegramStandIn, from: i64, username: Option<&str>) -> String {
    let mut message = InjectMessage::private(from, "/request").with_first_name("New");
    if let Some(username) = username {
        message = message.with_username(username);
    }
    tg.inject(message).unwrap();
    let texts = wait_text(tg, from, "Its code is ", WAIT).await;
    code_in(texts.iter().rev().find(|t| t.contains("Its code is ")).unwrap())
}

fn code_in(text: &str) -> String {
    let rest = text.split("Its code is ").nth(1).expect("a code");
    rest.chars().take_while(|c| c.is_ascii_alphanumeric()).collect()
}

/// The admin's copy of request `code`, with its buttons.
async fn admin_copy(tg: &TelegramStandIn, code: &str) -> SentMessage {
    wait_until(&format!("the admin's copy of {code}"), WAIT, || async {
        tg.sent_to(ADMIN).into_iter().find(|m| m.rendered.contains(&format!("Access request {code}")))
    })
    .await
}

/// The callback data of the button labelled `label` on `message`.
fn button(message: &SentMessage, label: &str) -> String {
    let markup = message.reply_markup.as_ref().unwrap_or_else(|| panic!("no buttons on {:?}", message.rendered));
    let buttons = markup["inline_keyboard"].as_array().unwrap().iter().flat_map(|row| row.as_array().unwrap().iter());
    let found = buttons.clone().find(|b| b["text"] == label);
    let labels: Vec<&Value> = buttons.map(|b| &b["text"]).collect();
    found.unwrap_or_else(|| panic!("no button {label:?} in {labels:?}"))["callback_data"].as_str().unwrap().to_string()
}

/// `from` presses a button with `data` on `message`; how the bot answered the press.
async fn press(tg: &TelegramStandIn, from: i64, message: &SentMessage, data: &str) -> String {
    let injected = tg.press(from, message.chat_id, message.message_id, data).unwrap();
    assert!(injected.queued, "callback queries are among the gateway's allowed_updates");
    wait_until("the press answered", WAIT, || async {
        let answers = tg.callback_answers();
        let answer = answers.into_iter().find(|a| a.callback_query_id == injected.callback_query_id)?;
        Some(answer.text.unwrap_or_default())
    })
    .await
}

/// The admin's copy of `code` once edited to contain `needle` (its buttons gone).
async fn admin_copy_edited(tg: &TelegramStandIn, code: &str, needle: &str) -> SentMessage {
    wait_until(&format!("the admin's copy of {code} saying {needle:?}"), WAIT, || async {
        tg.sent_to(ADMIN)
            .into_iter()
            .find(|m| m.rendered.contains(&format!("Access request {code}")) && m.rendered.contains(needle))
    })
    .await
}

fn users_cli(env: &TestEnv, args: &[&str]) -> Output {
    Command::new(MOLTMATE).arg("users").args(args).env("KUBECONFIG", env.admin_kubeconfig()).output().unwrap()
}

fn stdout(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

async fn users_of(client: &kube::Client, telegram_id: i64) -> Vec<MoltmateUser> {
    let users = Api::<MoltmateUser>::all(client.clone()).list(&Default::default()).await.unwrap().items;
    users.into_iter().filter(|u| u.spec.telegram.user_id == telegram_id).collect()
}

/// The whole way in: a stranger's words reach no agent; their /start gets a code; the admin
/// gets buttons; a forged press changes nothing; the request outlives a gateway restart; the
/// admin's press creates the MoltmateUser with the chosen profile; the newcomer is told, and
/// their next message is answered by their own agent.
#[tokio::test]
async fn a_stranger_asks_the_admin_approves_and_their_own_agent_answers() {
    let stack = Stack::up("access-approve").await;
    stack.env.install_gateway_access_rbac().await;
    let Stack { env, client, llm, tg, broker_port } = &stack;
    let _node = env.spawn_agent_node(&format!("http://127.0.0.1:{broker_port}"));
    let _operator = env.spawn_operator("operator", free_port());
    let gateway = gateway_with_access(&stack, &["--access-profiles", "public,family"]);
    let (mut first, _) = gateway.spawn(env);
    admin_says_start(tg).await;

    // Before asking: refused, told how to ask, and nothing reaches a model.
    tg.inject(InjectMessage::private(NEWCOMER, "my words before access").with_username("Newcomer_1")).unwrap();
    wait_text(tg, NEWCOMER, "Send /request", WAIT).await;
    let code = request_access(tg, NEWCOMER, Some("Newcomer_1")).await;
    assert_eq!(code.len(), 8, "{code}");
    let copy = admin_copy(tg, &code).await;
    assert!(
        copy.rendered.contains("@Newcomer_1") && copy.rendered.contains(&NEWCOMER.to_string()),
        "{}",
        copy.rendered
    );
    let approve_family = button(&copy, "Approve: family");
    button(&copy, "Approve: public");
    button(&copy, "Deny");

    // Someone else's press (the newcomer's own, on the bot's message to them) changes nothing.
    let reply = tg.sent_to(NEWCOMER).into_iter().find(|m| m.rendered.contains(&code)).unwrap();
    let answer = press(tg, NEWCOMER, &reply, &approve_family).await;
    assert!(answer.contains("Only the bot's administrators"), "{answer}");
    let listed = stdout(&users_cli(env, &["requests"]));
    assert!(listed.lines().any(|l| l.contains(&code) && l.contains("open")), "{listed}");
    assert!(users_of(client, NEWCOMER).await.is_empty(), "a forged press created a user");

    // The request is in the cluster, not the gateway's memory: a new gateway decides it.
    first.kill();
    let (_second, _) = gateway.spawn(env);
    let answer = press(tg, ADMIN, &copy, &approve_family).await;
    assert_eq!(answer, "Approved: newcomer-1");
    let user =
        wait_until("the newcomer's MoltmateUser", WAIT, || async { users_of(client, NEWCOMER).await.pop() }).await;
    assert_eq!(kube::ResourceExt::name_any(&user), "newcomer-1");
    assert_eq!(user.spec.profile.as_str(), "family");
    let edited = admin_copy_edited(tg, &code, "approved as family").await;
    assert_eq!(edited.reply_markup, None, "the buttons are gone");
    wait_text(tg, NEWCOMER, "Your request for access was approved", WAIT).await;

    // The newcomer's next message is answered by their own agent.
    wait_phase(client, "newcomer-1", "Ready", Duration::from_secs(60)).await;
    tg.inject_text(NEWCOMER, "hello, my own assistant").unwrap();
    wait_text(tg, NEWCOMER, "You said: hello, my own assistant", Duration::from_secs(60)).await;
    let asked: Vec<String> = llm.requests().iter().map(|r| r.body.to_string()).collect();
    assert!(!asked.iter().any(|b| b.contains("my words before access")), "a stranger's words reached a model");
    // Now on the list, their /start is the usual greeting, not a request.
    tg.inject_text(NEWCOMER, "/start").unwrap();
    wait_text(tg, NEWCOMER, "I pass your messages to your own AI assistant", WAIT).await;
    // A second press of the spent buttons decides nothing more.
    let again = press(tg, ADMIN, &copy, &button(&copy, "Deny")).await;
    assert!(again.contains("Already decided"), "{again}");
}

/// A denial, the rate limits, a forged press, and an expired code, without agents.
#[tokio::test]
async fn denied_rate_limited_forged_and_expired_requests() {
    let stack = Stack::up("access-limits").await;
    stack.env.install_gateway_access_rbac().await;
    let Stack { env, client, tg, .. } = &stack;
    let gateway = gateway_with_access(&stack, &["--access-requests-per-hour", "2"]);
    let (mut first, metrics_port) = gateway.spawn(env);
    admin_says_start(tg).await;

    // One person sending /start again and again: one request, one admin message.
    let code = request_access(tg, NEWCOMER, None).await;
    for _ in 0..5 {
        tg.inject_text(NEWCOMER, "/start").unwrap();
    }
    // Everyone together: two an hour, the third is told to wait and the admin hears nothing.
    let second = request_access(tg, OTHER, None).await;
    tg.inject_text(THIRD, "/request").unwrap();
    wait_text(tg, THIRD, "Many people are asking for access just now", WAIT).await;
    admin_copy(tg, &second).await;
    let requests = tg.sent_to(ADMIN).into_iter().filter(|m| m.rendered.starts_with("Access request")).count();
    assert_eq!(requests, 2, "{:?}", texts(tg, ADMIN));

    // A forged approval from a non-admin, on the bot's own message to them: nothing changes.
    let reply = tg.sent_to(OTHER).into_iter().find(|m| m.rendered.contains(&second)).unwrap();
    let forged = format!("access:approve:{second}:public");
    assert!(press(tg, OTHER, &reply, &forged).await.contains("Only the bot's administrators"));
    assert!(users_of(client, OTHER).await.is_empty());
    let metrics = http_get(metrics_port, "/metrics").await.unwrap().1;
    for line in [
        "moltmate_gateway_access_requests_total{outcome=\"new\"} 2",
        "moltmate_gateway_access_requests_total{outcome=\"busy\"} 1",
        "moltmate_gateway_access_presses_total{outcome=\"not_an_admin\"} 1",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in:\n{metrics}");
    }

    // Deny: the person is told, the admin's copy says so, and no user is made.
    let copy = admin_copy(tg, &code).await;
    assert_eq!(press(tg, ADMIN, &copy, &button(&copy, "Deny")).await, "Denied");
    wait_text(tg, NEWCOMER, "your request for access was declined", WAIT).await;
    admin_copy_edited(tg, &code, "denied by telegram:4242").await;
    assert!(users_of(client, NEWCOMER).await.is_empty());

    // Expiry: a gateway whose requests last three seconds.
    first.kill();
    let (_short, _) = gateway.set("--access-request-ttl", "3s").set("--access-requests-per-hour", "10").spawn(env);
    let late = request_access(tg, LATE, None).await;
    let copy = admin_copy(tg, &late).await;
    wait_text(tg, LATE, "expired without an answer. Send /request to ask again", WAIT).await;
    admin_copy_edited(tg, &late, "expired at").await;
    let answer = press(tg, ADMIN, &copy, &button(&copy, "Approve: public")).await;
    assert_eq!(answer, format!("Request {late} expired."));
    let cli = users_cli(env, &["approve", &late]);
    assert!(!cli.status.success(), "{}", stdout(&cli));
    assert!(stdout(&cli).contains(&format!("access request {late} expired at")), "{}", stdout(&cli));
    assert!(users_of(client, LATE).await.is_empty());
}

/// GitOps mode: the admin's approval returns a manifest the API server accepts (server-side
/// dry run), the gateway has no right to create users, and creates none.
#[tokio::test]
async fn gitops_mode_hands_the_admin_a_manifest_the_api_server_accepts() {
    let stack = Stack::up("access-gitops").await;
    let Stack { env, client, tg, .. } = &stack;
    let gateway = gateway_with_access(&stack, &["--access-mode", "gitops", "--access-profiles", "family"]);
    let (_gateway, _) = gateway.spawn(env);
    admin_says_start(tg).await;
    let code = request_access(tg, NEWCOMER, Some("ann")).await;
    let copy = admin_copy(tg, &code).await;
    assert_eq!(press(tg, ADMIN, &copy, &button(&copy, "Approve: family")).await, "Approved: ann");
    let all = wait_text(tg, ADMIN, "Commit this manifest", WAIT).await;
    let message = all.iter().find(|t| t.contains("Commit this manifest")).unwrap();
    let manifest = message.split_once("\n\n").unwrap().1;
    let user: MoltmateUser = serde_saphyr::from_str(manifest).unwrap();
    assert_eq!((user.spec.telegram.user_id, user.spec.profile.as_str()), (NEWCOMER, "family"));
    let api: Api<MoltmateUser> = Api::all(client.clone());
    let dry_run = PostParams { dry_run: true, ..PostParams::default() };
    api.create(&dry_run, &user).await.expect("the API server accepts the manifest");
    wait_text(tg, NEWCOMER, "approved", WAIT).await;
    admin_copy_edited(tg, &code, "approved as family").await;
    assert!(users_of(client, NEWCOMER).await.is_empty(), "GitOps: the gateway created nothing");
    // And could not have: without the create-mode ClusterRole its identity may not create users.
    let as_gateway: Api<MoltmateUser> = Api::all(client_from(&env.gateway_kubeconfig()).await);
    match as_gateway.create(&PostParams::default(), &user).await {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 403, "{status:?}"),
        other => panic!("the gateway created a user: {other:?}"),
    }
}

/// From a terminal: `moltmate users requests`, `approve CODE --profile P` and `deny CODE`;
/// the gateway tells the people and edits the admin's copies; a name taken by someone else is
/// not reused.
#[tokio::test]
async fn the_cli_approves_and_denies_and_the_gateway_tells_them() {
    let stack = Stack::up("access-cli").await;
    stack.env.install_gateway_access_rbac().await;
    let Stack { env, client, tg, .. } = &stack;
    let gateway = gateway_with_access(&stack, &["--access-profiles", "public,family"]);
    let (_gateway, _) = gateway.spawn(env);
    admin_says_start(tg).await;
    let yes = request_access(tg, NEWCOMER, Some("cli_person")).await;
    let no = request_access(tg, OTHER, None).await;
    let listed = stdout(&users_cli(env, &["requests"]));
    for code in [&yes, &no] {
        assert!(listed.lines().any(|l| l.contains(code.as_str()) && l.contains("open")), "{listed}");
    }

    // Someone else holds the name their @username gives: theirs gets the Telegram id added.
    apply_user(client, &user_manifest("cli-person", 9999, serde_json::json!({}))).await.unwrap();
    let approved = users_cli(env, &["approve", &yes.to_lowercase(), "--profile", "family"]);
    assert!(approved.status.success(), "{}", stdout(&approved));
    let created = format!("MoltmateUser cli-person-{NEWCOMER} created with profile family");
    assert!(stdout(&approved).contains(&created), "{}", stdout(&approved));
    let user = users_of(client, NEWCOMER).await.pop().expect("the user");
    assert_eq!(user.spec.profile.as_str(), "family");
    wait_text(tg, NEWCOMER, "Your request for access was approved", WAIT).await;
    admin_copy_edited(tg, &yes, &format!("approved as family (MoltmateUser cli-person-{NEWCOMER}) by cli:")).await;

    let denied = users_cli(env, &["deny", &no]);
    assert!(denied.status.success(), "{}", stdout(&denied));
    wait_text(tg, OTHER, "your request for access was declined", WAIT).await;
    admin_copy_edited(tg, &no, "denied by cli:").await;
    let again = users_cli(env, &["approve", &no]);
    assert!(!again.status.success() && stdout(&again).contains("decided already: denied"), "{}", stdout(&again));
    let unknown = users_cli(env, &["deny", "NOSUCHCD"]);
    assert!(!unknown.status.success() && stdout(&unknown).contains("no access request has the code NOSUCHCD"));
}

/// Webhook mode: the gateway registers for button presses too, and an admin's press reaches
/// it and decides.
#[tokio::test]
async fn in_webhook_mode_an_admins_press_arrives_and_decides() {
    let stack = Stack::up("access-webhook").await;
    let Stack { env, tg, .. } = &stack;
    let secret_file = env.dir.join("webhook.secret");
    std::fs::write(&secret_file, "access_webhook_secret").unwrap();
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/telegram");
    let gateway = gateway_with_access(
        &stack,
        &[
            "--telegram-mode",
            "webhook",
            "--webhook-addr",
            &format!("127.0.0.1:{port}"),
            "--webhook-url",
            &url,
            "--webhook-secret-file",
            secret_file.to_str().unwrap(),
        ],
    );
    let (_gateway, _) = gateway.spawn(env);
    wait_until("the webhook registered", WAIT, || async { (tg.webhook_url() == Some(url.clone())).then_some(()) })
        .await;
    admin_says_start(tg).await;
    let code = request_access(tg, NEWCOMER, None).await;
    let copy = admin_copy(tg, &code).await;
    assert_eq!(press(tg, ADMIN, &copy, &button(&copy, "Deny")).await, "Denied");
    wait_text(tg, NEWCOMER, "your request for access was declined", WAIT).await;
    admin_copy_edited(tg, &code, "denied by telegram:4242").await;
}
