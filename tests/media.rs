//! Messages that are not text, end to end: through the Telegram stand-in, the real gateway and
//! real agents. Whatever a person sends gets an answer; documents land in the sender's own
//! workspace, and the model is told about them.

use std::time::Duration;

use crate::support::*;
use moltmates::dev::llm::Scripted;
use moltmates::dev::telegram::{ChatType, InjectMedia, InjectMessage, StandInConfig, StatsCondition, TelegramStandIn};
use serde_json::json;

const ALICE: i64 = 2001;
const BOB: i64 = 2002;
const STRANGER: i64 = 7778;
const WAIT: Duration = Duration::from_secs(30);

/// Wait until every update is confirmed: each one finished (its answer, if any, sent).
async fn wait_drained(tg: &TelegramStandIn) {
    let drained = StatsCondition { max_pending_updates: Some(0), ..Default::default() };
    tg.wait_for_stats(&drained, Duration::from_secs(20)).await.expect("every update confirmed");
}

/// The next message the bot sends to `chat` after the `before` it had sent.
async fn next_reply(tg: &TelegramStandIn, chat: i64, before: usize) -> String {
    let sent = tg.wait_for_messages(chat, before + 1, WAIT).await.expect("a reply");
    sent[before].rendered.clone()
}

/// The stand-in serves files as Telegram does, to the client the gateway uses: `getFile`
/// gives a path, the path downloads the bytes with the bot's token and with no other, and an
/// unknown file id is refused in Telegram's words.
#[tokio::test]
async fn the_telegram_stand_in_serves_sent_files_like_telegram() {
    use teloxide::net::Download;
    use teloxide::prelude::*;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let tg = TelegramStandIn::start_with("127.0.0.1:0".parse().unwrap(), StandInConfig::new(BOT_TOKEN)).await.unwrap();
    let bot = Bot::new(BOT_TOKEN).set_api_url(reqwest::Url::parse(&tg.url()).unwrap());
    tg.inject_document(ALICE, "report.pdf", "application/pdf", b"%PDF-1.4 hello".to_vec(), "read it").unwrap();
    let updates = bot.get_updates().await.unwrap();
    let teloxide::types::UpdateKind::Message(message) = &updates[0].kind else { panic!("{updates:?}") };
    let document = message.document().expect("a document message");
    assert_eq!(message.caption(), Some("read it"));
    assert_eq!(document.file_name.as_deref(), Some("report.pdf"));
    assert_eq!(document.file.size, 14);
    let file = bot.get_file(document.file.id.clone()).await.unwrap();
    assert_eq!(file.path, "documents/file_1.pdf");
    let mut bytes = Vec::new();
    bot.download_file(&file.path, &mut bytes).await.unwrap();
    assert_eq!(bytes, b"%PDF-1.4 hello");

    // sendDocument as teloxide uploads it (multipart): the name and bytes arrive.
    let upload = teloxide::types::InputFile::memory(b"a,b\n1,2\n".to_vec()).file_name("out.csv");
    let sent = bot.send_document(ChatId(ALICE), upload).await.unwrap();
    assert_eq!(sent.document().and_then(|d| d.file_name.as_deref()), Some("out.csv"));
    let document = tg.sent_to(ALICE).into_iter().find_map(|m| m.document).expect("a document sent");
    assert_eq!((document.file_name.as_str(), document.bytes.as_slice()), ("out.csv", &b"a,b\n1,2\n"[..]));
    let refused = bot
        .send_document(ChatId(ALICE), teloxide::types::InputFile::file_id(teloxide::types::FileId("nope".into())))
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("wrong file identifier"), "{refused}");
    let unknown = bot.get_file(teloxide::types::FileId("no-such-file".into())).await.unwrap_err();
    assert!(unknown.to_string().contains("invalid file_id"), "{unknown}");
    let http = reqwest::Client::new();
    for path in
        ["/file/bot1:wrong/documents/file_1.pdf".to_string(), format!("/file/bot{BOT_TOKEN}/documents/file_9.pdf")]
    {
        let response = http.get(format!("{}{path}", tg.url())).send().await.unwrap();
        assert_eq!(response.status(), 404, "{path}");
    }
}

#[tokio::test]
async fn whatever_the_bot_cannot_take_gets_a_clear_reply_and_strangers_only_the_refusal() {
    let Stack { env, client, llm, tg, broker_port } = Stack::up("media-unsupported").await;
    let _node = env.spawn_agent_node(&format!("http://127.0.0.1:{broker_port}"));
    let _operator = env.spawn_operator("operator", free_port());
    apply_user(&client, &user_manifest("alice", ALICE, json!({ "profile": "personal" }))).await.unwrap();
    // Without transcription, voice notes too get the reply.
    let gateway = GatewayCommand::against(&env, &tg, &llm, broker_port).set("--transcription-model", "off");
    let (_gateway, _) = gateway.spawn(&env);
    wait_phase(&client, "alice", "Ready", WAIT).await;

    let kinds = [
        (InjectMedia::Sticker { emoji: Some("🙂".into()) }, "stickers"),
        (
            InjectMedia::Other { field: "location".into(), value: json!({ "latitude": 52.52, "longitude": 13.4 }) },
            "locations",
        ),
        (
            InjectMedia::Other {
                field: "contact".into(),
                value: json!({ "phone_number": "+15550100", "first_name": "Bo" }),
            },
            "contacts",
        ),
        (
            InjectMedia::Other {
                field: "video".into(),
                value: json!({ "file_id": "vid", "file_unique_id": "v1", "width": 640, "height": 360,
                    "duration": 4, "mime_type": "video/mp4", "file_size": 1000 }),
            },
            "videos",
        ),
        (
            InjectMedia::Voice { mime_type: Some("audio/ogg".into()), duration: 2, bytes: b"OggS".to_vec() },
            "voice messages",
        ),
        (InjectMedia::Photo { width: 800, height: 600, bytes: b"\xff\xd8\xff".to_vec() }, "photos"),
        // What the Telegram client library cannot read: an audio file without the duration
        // it requires, and a message it cannot read at all (its date not a number).
        (
            InjectMedia::Other { field: "audio".into(), value: json!({ "file_id": "au", "file_unique_id": "au1" }) },
            "this kind of message",
        ),
        (InjectMedia::Other { field: "date".into(), value: json!("yesterday") }, "this kind of message"),
    ];
    for (media, kind) in &kinds {
        tg.inject(InjectMessage::media(ALICE, media.clone(), "")).unwrap();
        let sent = wait_text(&tg, ALICE, &format!("can't take {kind}"), WAIT).await;
        assert!(sent.last().unwrap().contains("documents"), "says what the bot takes: {sent:?}");
    }
    wait_drained(&tg).await;
    assert_eq!(texts(&tg, ALICE).len(), kinds.len(), "one reply each: {:?}", texts(&tg, ALICE));

    // A stranger's sticker or file gets the refusal strangers get, once; nothing is fetched
    // or forwarded.
    tg.inject(InjectMessage::media(STRANGER, InjectMedia::Sticker { emoji: None }, "")).unwrap();
    wait_text(&tg, STRANGER, "not on its list", WAIT).await;
    tg.inject_document(STRANGER, "plan.pdf", "application/pdf", b"%PDF".to_vec(), "stranger's caption").unwrap();
    // Groups are not served (by default): a file there gets nothing, as text does.
    let in_group = InjectMessage {
        chat_id: Some(-600),
        chat_type: ChatType::Group,
        ..InjectMessage::document(ALICE, "g.txt", "text/plain", b"x".to_vec())
    };
    tg.inject(in_group).unwrap();
    wait_drained(&tg).await;
    assert_eq!(texts(&tg, STRANGER).len(), 1, "{:?}", texts(&tg, STRANGER));
    assert!(tg.sent_to(-600).is_empty());
    let completions = llm.requests().into_iter().filter(|r| r.path.ends_with("/chat/completions")).count();
    assert_eq!(completions, 0, "nothing of these reached a model");
}

/// A document goes to its sender's own agent: saved in `files/` under a safe name that
/// overwrites nothing, and the model is told its name, size, type and caption, so the tools
/// can work on it. Refused ones (type, size, a full workspace) get a reply saying why.
#[tokio::test]
async fn documents_land_in_the_senders_own_workspace_and_the_model_is_told() {
    let Stack { env, client, llm, tg, broker_port } = Stack::up("media-documents").await;
    let _node = env.spawn_agent_node(&format!("http://127.0.0.1:{broker_port}"));
    let _operator = env.spawn_operator("operator", free_port());
    apply_user(&client, &user_manifest("alice", ALICE, json!({ "profile": "personal" }))).await.unwrap();
    let small = json!({ "profile": "personal", "resources": { "storage": "64Ki" } });
    apply_user(&client, &user_manifest("bob", BOB, small)).await.unwrap();
    let gateway = GatewayCommand::against(&env, &tg, &llm, broker_port)
        .set("--file-max-size", "100Ki")
        .set("--file-types", "pdf,txt,csv,md");
    let (_gateway, _) = gateway.spawn(&env);
    for name in ["alice", "bob"] {
        wait_phase(&client, name, "Ready", WAIT).await;
    }

    // A text file with a caption: saved, and the model told name, size, type and caption.
    let notes = "apples: 3\npears: 5\n";
    tg.inject_document(ALICE, "notes.txt", "text/plain", notes, "how many pears?").unwrap();
    let told = format!("files/notes.txt ({} bytes, text/plain)", notes.len());
    wait_text(&tg, ALICE, &told, WAIT).await;
    let asked = llm.requests().into_iter().rfind(|r| r.path.ends_with("/chat/completions")).unwrap();
    let asked = asked.body.to_string();
    assert!(asked.contains(&told) && asked.contains("Their message with it: how many pears?"), "{asked}");
    // The tools work on it.
    tg.inject_text(ALICE, "/tool read_file notes.txt").unwrap();
    wait_text(&tg, ALICE, "pears: 5", WAIT).await;

    // The same name with other bytes: a second file; the first is kept.
    tg.inject_document(ALICE, "notes.txt", "text/plain", "apples: 4\n", "").unwrap();
    wait_text(&tg, ALICE, "files/notes (2).txt", WAIT).await;
    // A hostile name: only its last part, inside files/.
    tg.inject_document(ALICE, "../../etc/passwd.txt", "text/plain", "root:x:0:0", "").unwrap();
    wait_text(&tg, ALICE, "files/passwd.txt", WAIT).await;
    wait_drained(&tg).await;
    let before = texts(&tg, ALICE).len();
    tg.inject_text(ALICE, "/tool list_files").unwrap();
    let listing = next_reply(&tg, ALICE, before).await;
    for name in ["notes.txt", "notes (2).txt", "passwd.txt"] {
        assert!(listing.contains(name), "{name} in {listing}");
    }
    tg.inject_text(ALICE, "/tool read_file notes.txt").unwrap();
    assert!(next_reply(&tg, ALICE, before + 1).await.contains("pears: 5"), "the first file is unchanged");

    // A type not on the list, and a file over the size limit: a reply naming the limit.
    let before = llm.requests().len();
    tg.inject_document(ALICE, "setup.exe", "application/x-msdownload", b"MZ\x90\x00".to_vec(), "").unwrap();
    let sent = wait_text(&tg, ALICE, "don't take .exe", WAIT).await;
    assert!(sent.last().unwrap().contains(".pdf .txt .csv .md"), "{sent:?}");
    tg.inject_document(ALICE, "big.csv", "text/csv", vec![b'a'; 200 * 1024], "").unwrap();
    wait_text(&tg, ALICE, "up to 100.0 KiB", WAIT).await;
    wait_drained(&tg).await;
    assert_eq!(llm.requests().len(), before, "refused files reach no model");

    // Bob's file lands in Bob's workspace, not in Alice's.
    tg.inject_document(BOB, "bob-plan.md", "text/markdown", "# Bob's plan", "").unwrap();
    wait_text(&tg, BOB, "files/bob-plan.md", WAIT).await;
    let before = texts(&tg, ALICE).len();
    tg.inject_text(ALICE, "/tool list_files").unwrap();
    let listing = next_reply(&tg, ALICE, before).await;
    assert!(listing.contains("notes.txt") && !listing.contains("bob-plan"), "{listing}");
    // Bob's workspace holds 64 KiB: an 80 KiB file does not fit, and he is told so.
    tg.inject_document(BOB, "data.csv", "text/csv", vec![b'1'; 80 * 1024], "").unwrap();
    wait_text(&tg, BOB, "workspace is full", WAIT).await;

    // A stranger's document is refused as their text is; nothing reaches an agent.
    tg.inject_document(STRANGER, "plan.pdf", "application/pdf", b"%PDF".to_vec(), "stranger's caption").unwrap();
    wait_text(&tg, STRANGER, "not on its list", WAIT).await;
    wait_drained(&tg).await;
    assert!(llm.requests().iter().all(|r| !r.body.to_string().contains("stranger's caption")));
}

/// A voice note is transcribed by the provider, called by the gateway with the provider key
/// (never by the agent) and counted in the sender's daily budget, the same one their agent's
/// model calls use; the agent gets the text marked as a transcript. A failed transcription and
/// a spent budget get replies saying so.
#[tokio::test]
async fn voice_notes_reach_the_agent_as_transcripts_counted_in_the_budget() {
    let Stack { env, client, llm, tg, broker_port } = Stack::up("media-voice").await;
    let profiles = env.dir.join("profiles.yaml");
    std::fs::write(&profiles, "personal:\n  llm: { tokensPerDay: 50 }\n").unwrap();
    let _node = env.spawn_agent_node(&format!("http://127.0.0.1:{broker_port}"));
    let _operator = env.spawn_operator("operator", free_port());
    apply_user(&client, &user_manifest("alice", ALICE, json!({ "profile": "personal" }))).await.unwrap();
    let gateway =
        GatewayCommand::against(&env, &tg, &llm, broker_port).with(&["--profiles-file", profiles.to_str().unwrap()]);
    let (_gateway, _) = gateway.spawn(&env);
    wait_phase(&client, "alice", "Ready", WAIT).await;
    let voice = |words: &str| {
        let media = InjectMedia::Voice { mime_type: Some("audio/ogg".into()), duration: 2, bytes: words.into() };
        InjectMessage::media(ALICE, media, "")
    };
    let transcriptions = |llm: &moltmates::dev::llm::LlmStandIn| {
        llm.requests().into_iter().filter(|r| r.path.ends_with("/audio/transcriptions")).collect::<Vec<_>>()
    };

    // The provider fails: the person is told, nothing reaches the agent.
    llm.fail_next(503, 1);
    tg.inject(voice("lost words")).unwrap();
    wait_text(&tg, ALICE, "could not transcribe that voice message just now", WAIT).await;

    // Transcribed: the model reads it marked as a transcript.
    llm.script([Scripted::Reply { content: "Noted: milk.".into(), total_tokens: Some(100) }]);
    tg.inject(voice("remind me to buy milk")).unwrap();
    wait_text(&tg, ALICE, "Noted: milk.", WAIT).await;
    let asked = llm.requests().into_iter().rfind(|r| r.path.ends_with("/chat/completions")).unwrap().body.to_string();
    assert!(asked.contains("[voice message, transcribed] remind me to buy milk"), "{asked}");
    let sent = transcriptions(&llm);
    assert_eq!(sent.len(), 2, "{sent:?}");
    let last = &sent[1];
    assert_eq!(
        last.authorization.as_deref(),
        Some(format!("Bearer {}", crate::support::stack::LLM_KEY).as_str()),
        "the provider key"
    );
    assert_eq!(last.body["model"], "whisper-1");
    assert_eq!(last.body["file"]["file_name"], "voice.ogg");
    assert_eq!(last.body["file"]["content_type"], "audio/ogg");
    assert_eq!(last.body["file"]["bytes"], "remind me to buy milk".len());

    // The turn spent the day's 50 tokens: the next voice note is refused before the provider.
    tg.inject(voice("and eggs")).unwrap();
    wait_text(&tg, ALICE, "daily token budget of 50 used up", WAIT).await;
    wait_drained(&tg).await;
    assert_eq!(transcriptions(&llm).len(), 2, "nothing more sent to the provider");
}

/// With photos on (a model that takes images), a photo is saved in the sender's `files/` and
/// goes to the model as image input beside its caption, as OpenAI's content parts with a
/// `data:` URL. A profile the installation keeps photos from gets the reply instead.
#[tokio::test]
async fn photos_reach_the_model_as_image_input_and_stay_in_the_workspace() {
    let Stack { env, client, llm, tg, broker_port } = Stack::up("media-photos").await;
    let _node = env.spawn_agent_node(&format!("http://127.0.0.1:{broker_port}"));
    let _operator = env.spawn_operator("operator", free_port());
    apply_user(&client, &user_manifest("alice", ALICE, json!({ "profile": "personal" }))).await.unwrap();
    apply_user(&client, &user_manifest("bob", BOB, json!({ "profile": "public" }))).await.unwrap();
    let profiles = env.dir.join("profiles.yaml");
    std::fs::write(&profiles, "public:\n  media: { photos: false }\n").unwrap();
    let gateway = GatewayCommand::against(&env, &tg, &llm, broker_port)
        .set("--photos", "true")
        .set("--profiles-file", profiles.to_str().unwrap());
    let (_gateway, _) = gateway.spawn(&env);
    wait_phase(&client, "alice", "Ready", WAIT).await;
    wait_phase(&client, "bob", "Ready", WAIT).await;

    let photo = InjectMedia::Photo { width: 640, height: 480, bytes: b"\xff\xd8\xff bob's".to_vec() };
    tg.inject(InjectMessage::media(BOB, photo, "and this?")).unwrap();
    let sent = wait_text(&tg, BOB, "can't take photos", WAIT).await;
    assert!(sent.last().unwrap().contains("documents"), "says what the bot takes: {sent:?}");
    assert!(
        !llm.requests().iter().any(|r| r.body.to_string().contains("and this?")),
        "nothing of bob's photo reached the model"
    );

    let jpeg = b"\xff\xd8\xff\xe0 a tiny jpeg".to_vec();
    let photo = InjectMedia::Photo { width: 1280, height: 960, bytes: jpeg.clone() };
    tg.inject(InjectMessage::media(ALICE, photo, "what is this?")).unwrap();
    let sent = wait_text(&tg, ALICE, "I see 1 image", WAIT).await;
    let reply = sent.last().unwrap();
    assert!(reply.contains(&format!("image/jpeg of {} bytes", jpeg.len())), "{reply}");
    assert!(reply.contains("files/photo.jpg") && reply.contains("what is this?"), "{reply}");
    let asked = llm.requests().into_iter().rfind(|r| r.path.ends_with("/chat/completions")).unwrap();
    let user = asked.body["messages"].as_array().unwrap().iter().rfind(|m| m["role"] == "user").unwrap().clone();
    assert_eq!(user["content"][0]["type"], "text");
    assert!(user["content"][1]["image_url"]["url"].as_str().unwrap().starts_with("data:image/jpeg;base64,/9j/"));

    // The photo stays in the workspace, for the tools.
    let before = texts(&tg, ALICE).len();
    tg.inject_text(ALICE, "/tool list_files").unwrap();
    let listing = next_reply(&tg, ALICE, before).await;
    assert!(listing.contains("photo.jpg"), "{listing}");
    // A later message carries no image: only the newest message's photos are sent.
    let asked = llm.requests().into_iter().rfind(|r| r.path.ends_with("/chat/completions")).unwrap();
    assert!(!asked.body.to_string().contains("image_url"), "{}", asked.body);
}

/// The agent hands a file back with `send_file`: the gateway reads it from that user's agent
/// and sends it with `sendDocument`, name and bytes intact. Paths stay inside `files/`.
#[tokio::test]
async fn the_agent_sends_files_back_as_documents() {
    let Stack { env, client, llm, tg, broker_port } = Stack::up("media-send-file").await;
    let _node = env.spawn_agent_node(&format!("http://127.0.0.1:{broker_port}"));
    let _operator = env.spawn_operator("operator", free_port());
    apply_user(&client, &user_manifest("alice", ALICE, json!({ "profile": "personal" }))).await.unwrap();
    let (_gateway, _) = GatewayCommand::against(&env, &tg, &llm, broker_port).spawn(&env);
    wait_phase(&client, "alice", "Ready", WAIT).await;

    let csv = "month,total\njan,3\nfeb,5\n";
    let write = json!({ "path": "out/report.csv", "content": csv });
    tg.inject_text(ALICE, &format!("/tool write_file {write}")).unwrap();
    wait_text(&tg, ALICE, "wrote", WAIT).await;
    tg.inject_text(ALICE, "/tool send_file out/report.csv").unwrap();
    wait_text(&tg, ALICE, "will be sent with your answer", WAIT).await;
    let document =
        wait_until("the document", WAIT, || async { tg.sent_to(ALICE).into_iter().find_map(|m| m.document) }).await;
    assert_eq!(document.file_name, "report.csv");
    assert_eq!(document.bytes, csv.as_bytes());

    // Nothing outside files/, nothing missing: the model is told, nothing is sent.
    for (path, says) in [("../../etc/passwd", "denied"), ("/etc/hostname", "denied"), ("nope.txt", "does not exist")] {
        let before = texts(&tg, ALICE).len();
        tg.inject_text(ALICE, &format!("/tool send_file {path}")).unwrap();
        let reply = next_reply(&tg, ALICE, before).await;
        assert!(reply.contains(says), "{path}: {reply}");
    }
    wait_drained(&tg).await;
    assert_eq!(tg.sent_to(ALICE).iter().filter(|m| m.document.is_some()).count(), 1);
}
