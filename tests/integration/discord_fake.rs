//! The fake Discord against serenity 0.12.5 itself (no Docker): a client reaches READY and
//! gets slash commands, buttons, autocomplete and messages over the gateway; REST follows
//! Discord's rules (threads, edits, attachments, limits, errors), and serenity's
//! ratelimiter honours the fake's rate-limit headers.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use serenity::all::{
    ChannelId, Command, CommandOptionType, Context, CreateActionRow, CreateAttachment,
    CreateAutocompleteResponse, CreateButton, CreateCommand, CreateCommandOption,
    CreateInteractionResponse, CreateInteractionResponseMessage, CreateMessage, CreateThread,
    EventHandler, GatewayIntents, Interaction, InteractionId, Message, MessageId, Ready,
    ResumedEvent, ShardManager,
};

use crate::support::discord::{FakeDiscord, Limits, Rate};

const ALICE: u64 = 2_000_000_000_000_000_001;
const BOB: u64 = 2_000_000_000_000_000_002;
const ROLE: u64 = 3_000_000_000_000_000_001;
const WAIT: Duration = Duration::from_secs(10);

/// What the bot's handler saw.
#[derive(Default)]
struct Seen {
    ready: Option<u64>,
    messages: Vec<(u64, u64, String)>,
    commands: Vec<String>,
    /// The error serenity returned for a second response to one interaction.
    second_response: Option<String>,
    resumed: u32,
}

struct Handler(Arc<Mutex<Seen>>);

#[serenity::async_trait]
impl EventHandler for Handler {
    async fn ready(&self, _: Context, ready: Ready) {
        self.0.lock().unwrap().ready = Some(ready.user.id.get());
    }

    async fn resume(&self, _: Context, _: ResumedEvent) {
        self.0.lock().unwrap().resumed += 1;
    }

    async fn message(&self, _: Context, m: Message) {
        let entry = (m.author.id.get(), m.channel_id.get(), m.content.clone());
        self.0.lock().unwrap().messages.push(entry);
    }

    async fn interaction_create(&self, ctx: Context, i: Interaction) {
        match i {
            Interaction::Command(c) => {
                let prompt = c.data.options.first().map(|o| format!("{:?}", o.value));
                self.0.lock().unwrap().commands.push(c.data.name.clone());
                let reply = CreateInteractionResponse::Message(
                    CreateInteractionResponseMessage::new()
                        .content(format!("on it: {}", prompt.unwrap_or_default()))
                        .components(vec![CreateActionRow::Buttons(vec![
                            CreateButton::new("stop").label("Stop"),
                        ])]),
                );
                c.create_response(&ctx.http, reply.clone())
                    .await
                    .expect("first response");
                let again = c.create_response(&ctx.http, reply).await;
                self.0.lock().unwrap().second_response = again.err().map(|e| format!("{e:?}"));
            }
            Interaction::Autocomplete(a) => {
                let choices = CreateAutocompleteResponse::new()
                    .add_string_choice("fix the build", "fix the build")
                    .add_string_choice("fix the tests", "fix the tests");
                let r = CreateInteractionResponse::Autocomplete(choices);
                a.create_response(&ctx.http, r).await.expect("autocomplete");
            }
            Interaction::Component(c) => {
                let r = CreateInteractionResponse::UpdateMessage(
                    CreateInteractionResponseMessage::new()
                        .content("stopped")
                        .components(vec![]),
                );
                c.create_response(&ctx.http, r).await.expect("update");
            }
            _ => {}
        }
    }
}

/// A serenity client on its own runtime, shut down when dropped.
struct Bot {
    rt: tokio::runtime::Runtime,
    shards: Arc<ShardManager>,
    seen: Arc<Mutex<Seen>>,
}

impl Bot {
    fn start(fake: &FakeDiscord, intents: GatewayIntents) -> Bot {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let seen = Arc::new(Mutex::new(Seen::default()));
        let http = fake.serenity_http(FakeDiscord::TOKEN, true);
        let handler = Handler(seen.clone());
        let mut client = rt.block_on(async {
            serenity::all::ClientBuilder::new_with_http(http, intents)
                .event_handler(handler)
                .await
                .expect("client")
        });
        let shards = client.shard_manager.clone();
        rt.spawn(async move { client.start().await });
        Bot { rt, shards, seen }
    }

    fn seen<T>(&self, f: impl FnOnce(&Seen) -> T) -> T {
        f(&self.seen.lock().unwrap())
    }
}

impl Drop for Bot {
    fn drop(&mut self) {
        let shards = self.shards.clone();
        self.rt.block_on(async move { shards.shutdown_all().await });
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// The Discord error of a failed serenity call: (HTTP status, JSON code).
fn discord_error<T: std::fmt::Debug>(r: serenity::Result<T>) -> (u16, isize, String) {
    match r {
        Err(serenity::Error::Http(serenity::http::HttpError::UnsuccessfulRequest(e))) => {
            (e.status_code.as_u16(), e.error.code, e.error.message)
        }
        other => panic!("expected a Discord error, got {other:?}"),
    }
}

/// (HTTP status, JSON code) of a failed serenity call.
fn status_code<T: std::fmt::Debug>(r: serenity::Result<T>) -> (u16, isize) {
    let (status, code, _) = discord_error(r);
    (status, code)
}

fn header<'a>(r: &'a crate::support::discord::RequestLog, name: &str) -> Option<&'a str> {
    r.headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn task_command() -> CreateCommand {
    CreateCommand::new("task")
        .description("Run a task")
        .add_option(
            CreateCommandOption::new(CommandOptionType::SubCommand, "new", "Start a session")
                .add_sub_option(
                    CreateCommandOption::new(CommandOptionType::String, "prompt", "What to do")
                        .required(true)
                        .set_autocomplete(true),
                ),
        )
}

const ALL: u64 = (1 << 0) | (1 << 9) | (1 << 15);

#[test]
fn discord_fake_client_ready_and_interactions() {
    let fake = FakeDiscord::start();
    fake.add_member(ALICE, "alice", &[ROLE]);
    let bot = Bot::start(
        &fake,
        GatewayIntents::GUILDS | GatewayIntents::GUILD_MESSAGES | GatewayIntents::MESSAGE_CONTENT,
    );
    assert!(fake.wait_for(WAIT, |f| f.identified()), "no READY");
    assert!(
        fake.wait_for(WAIT, |_| bot.seen(|s| s.ready.is_some())),
        "the handler saw no READY"
    );
    assert_eq!(bot.seen(|s| s.ready), Some(fake.bot_user_id()));
    assert_eq!(fake.intents(), Some(ALL));
    let paths: Vec<String> = fake
        .requests()
        .iter()
        .map(|r| format!("{} {} {}", r.method, r.path, r.status))
        .collect();
    eprintln!("serenity's startup requests: {paths:?}");
    eprintln!("IDENTIFY: {}", fake.identify_payload().unwrap());
    assert!(paths.contains(&"GET /api/v10/gateway 200".to_string()));
    let events: Vec<String> = fake.dispatched().into_iter().map(|(t, _)| t).collect();
    assert_eq!(events[..2], ["READY", "GUILD_CREATE"]);

    // Commands are registered through the fake, then used by a person.
    let http = fake.serenity_http(FakeDiscord::TOKEN, false);
    http.set_application_id(fake.application_id().into());
    let cmds = rt()
        .block_on(Command::set_global_commands(&http, vec![task_command()]))
        .expect("register commands");
    assert_eq!(cmds.len(), 1);
    assert_eq!(fake.registered_commands()[0]["name"], "task");

    let i = fake.slash_command(
        ALICE,
        fake.channel_id(),
        "task",
        "new",
        &[("prompt", json!("fix the build"))],
    );
    assert!(fake.wait_for(WAIT, |f| f.original_response(&i).is_some()));
    assert!(
        fake.wait_for(WAIT, |_| bot.seen(|s| s.second_response.is_some())),
        "the second response got no error"
    );
    let original = fake.original_response(&i).unwrap();
    assert!(original.content.starts_with("on it:"), "{original:?}");
    assert_eq!(original.kind, 20);
    assert_eq!(fake.interaction_responses(&i).len(), 1);
    let second = bot.seen(|s| s.second_response.clone()).unwrap();
    assert!(
        second.contains("40060") && second.contains("400"),
        "{second}"
    );
    // The bot sees its own response as MESSAGE_CREATE.
    assert!(fake.wait_for(WAIT, |_| {
        bot.seen(|s| s.messages.iter().any(|m| m.2.starts_with("on it:")))
    }));

    // Autocomplete, then a button on the response.
    let a = fake.autocomplete(ALICE, fake.channel_id(), "task", "new", "prompt", "fix");
    assert!(fake.wait_for(WAIT, |f| !f.interaction_responses(&a).is_empty()));
    let r = &fake.interaction_responses(&a)[0];
    assert_eq!(r["type"], 8);
    assert_eq!(r["data"]["choices"].as_array().unwrap().len(), 2);

    let b = fake.click_button(ALICE, fake.channel_id(), original.id, "stop");
    assert!(
        fake.wait_for(WAIT, |f| f.message(original.id).unwrap().content
            == "stopped")
    );
    let m = fake.message(original.id).unwrap();
    assert_eq!((m.edits, m.components.len()), (1, 0));
    assert_eq!(fake.interaction_responses(&b)[0]["type"], 7);

    // A person's message in a thread reaches the bot with its content.
    let thread = rt()
        .block_on(http.create_thread_from_message(
            ChannelId::new(fake.channel_id()),
            MessageId::new(original.id),
            &json!({"name": "fix the build"}),
            None,
        ))
        .expect("thread");
    fake.say(ALICE, thread.id.get(), "and the docs");
    assert!(fake.wait_for(WAIT, |_| {
        bot.seen(|s| {
            s.messages
                .iter()
                .any(|m| m.1 == thread.id.get() && m.2 == "and the docs")
        })
    }));

    // The connection drops; serenity resumes and gets what it missed.
    fake.drop_gateway();
    fake.say(ALICE, fake.channel_id(), "while you were away");
    assert!(
        fake.wait_for(WAIT, |f| f.gateway_counts().1 == 1 && f.identified()),
        "no RESUME: {:?}",
        fake.gateway_counts()
    );
    assert!(fake.wait_for(WAIT, |_| {
        bot.seen(|s| s.resumed == 1 && s.messages.iter().any(|m| m.2 == "while you were away"))
    }));
    assert_eq!(fake.gateway_counts().0, 1, "one IDENTIFY only");
    assert_eq!(fake.count_429(), 0);
    drop(bot);
}

#[test]
fn discord_fake_message_content_intent() {
    let fake = FakeDiscord::start();
    fake.add_member(BOB, "bob", &[]);
    let bot = Bot::start(
        &fake,
        GatewayIntents::GUILDS | GatewayIntents::GUILD_MESSAGES,
    );
    assert!(fake.wait_for(WAIT, |f| f.identified()));
    let ch = fake.channel_id();
    fake.say(BOB, ch, "secret plans");
    fake.say(BOB, ch, &format!("<@{}> hello", fake.bot_user_id()));
    let http = fake.serenity_http(FakeDiscord::TOKEN, false);
    rt().block_on(ChannelId::new(ch).say(&http, "mine"))
        .expect("send");
    assert!(fake.wait_for(WAIT, |_| bot.seen(|s| s.messages.len() == 3)));
    // Serenity runs handlers concurrently: the order is not kept.
    let mut seen: Vec<String> = bot.seen(|s| s.messages.iter().map(|m| m.2.clone()).collect());
    seen.sort();
    let mention = format!("<@{}> hello", fake.bot_user_id());
    assert_eq!(seen, ["", mention.as_str(), "mine"]);
    // The content is still there for REST.
    assert_eq!(fake.messages(ch)[0].content, "secret plans");
    drop(bot);

    // Without GUILD_MESSAGES there is no MESSAGE_CREATE at all.
    let fake = FakeDiscord::start();
    fake.add_member(BOB, "bob", &[]);
    let bot = Bot::start(&fake, GatewayIntents::GUILDS);
    assert!(fake.wait_for(WAIT, |f| f.identified()));
    fake.say(BOB, fake.channel_id(), "anyone?");
    std::thread::sleep(Duration::from_millis(300));
    assert!(bot.seen(|s| s.messages.is_empty()));
    assert!(!fake.dispatched().iter().any(|(t, _)| t == "MESSAGE_CREATE"));
}

#[test]
fn discord_fake_rest_rules() {
    let fake = FakeDiscord::start_with(Limits {
        max_upload: 1024 * 1024,
        messages: Rate::new(50, Duration::from_secs(1)),
        ..Limits::default()
    });
    fake.add_member(ALICE, "alice", &[]);
    let http = fake.serenity_http(FakeDiscord::TOKEN, false);
    let ch = ChannelId::new(fake.channel_id());
    let rt = rt();

    let first = rt.block_on(ch.say(&http, "hello")).expect("send");
    let edited = rt
        .block_on(http.edit_message(ch, first.id, &json!({"content": "hello, edited"}), vec![]))
        .expect("edit");
    assert_eq!(edited.content, "hello, edited");
    assert!(edited.edited_timestamp.is_some());
    let stored = fake.message(first.id.get()).unwrap();
    assert_eq!(
        (stored.content.as_str(), stored.edits),
        ("hello, edited", 1)
    );

    // A thread from the message, messages into it, and only one thread per message.
    let thread = rt
        .block_on(ch.create_thread_from_message(&http, first.id, CreateThread::new("work")))
        .expect("thread");
    assert_eq!(thread.id.get(), first.id.get());
    assert_eq!(thread.parent_id, Some(ch));
    rt.block_on(thread.id.say(&http, "in the thread"))
        .expect("send");
    assert_eq!(fake.messages(thread.id.get())[0].content, "in the thread");
    let t = &fake.threads()[0];
    assert_eq!(
        (t.name.as_str(), t.message_id),
        ("work", Some(first.id.get()))
    );
    let again =
        rt.block_on(ch.create_thread_from_message(&http, first.id, CreateThread::new("again")));
    assert_eq!(discord_error(again).1, 160004);
    let long_name = "n".repeat(101);
    let bad = rt.block_on(http.create_thread_from_message(
        ch,
        rt.block_on(ch.say(&http, "x")).unwrap().id,
        &json!({"name": long_name}),
        None,
    ));
    assert_eq!(discord_error(bad).1, 50035);

    // Someone else's message cannot be edited.
    let theirs = fake.say(ALICE, ch.get(), "mine");
    let r = rt.block_on(http.edit_message(
        ch,
        MessageId::new(theirs),
        &json!({"content": "x"}),
        vec![],
    ));
    assert_eq!(status_code(r), (403, 50005));

    // A file, as multipart.
    let file = CreateAttachment::bytes(b"log line\n".to_vec(), "transcript.txt");
    let m = rt
        .block_on(ch.send_message(&http, CreateMessage::new().content("here").add_file(file)))
        .expect("send a file");
    assert_eq!(m.attachments[0].filename, "transcript.txt");
    let stored = fake.message(m.id.get()).unwrap();
    assert_eq!(stored.attachments[0].bytes, b"log line\n");
    assert_eq!(
        stored.attachments[0].content_type.as_deref(),
        Some("text/plain")
    );
    let big = CreateAttachment::bytes(vec![0u8; 1024 * 1024 + 1], "big.bin");
    let r = rt.block_on(ch.send_message(&http, CreateMessage::new().add_file(big)));
    assert_eq!(status_code(r), (413, 40005));

    // Discord's content limit and the empty message (sent raw: serenity's builder checks
    // the length itself).
    let long = "x".repeat(2001);
    let r = rt.block_on(http.send_message(ch, vec![], &json!({"content": long})));
    let (status, code, _) = discord_error(r);
    assert_eq!((status, code), (400, 50035));
    let last = fake.requests().pop().unwrap();
    assert_eq!(
        last.body.unwrap()["errors"]["content"]["_errors"][0]["code"],
        "BASE_TYPE_MAX_LENGTH"
    );
    let ok = "é".repeat(2000);
    rt.block_on(http.send_message(ch, vec![], &json!({"content": ok})))
        .expect("2000 characters are fine");
    let r = rt.block_on(http.send_message(ch, vec![], &json!({"content": ""})));
    assert_eq!(status_code(r), (400, 50006));

    // Unknown things, unknown routes, a bad token.
    let r = rt.block_on(ChannelId::new(42).say(&http, "hi"));
    assert_eq!(status_code(r), (404, 10003));
    let r = rt.block_on(http.get_message(ch, MessageId::new(42)));
    assert_eq!(status_code(r), (404, 10008));
    let bad = fake.serenity_http("not-the-token", false);
    let r = rt.block_on(bad.get_current_user());
    assert_eq!(discord_error(r), (401, 0, "401: Unauthorized".to_string()));
    let me = rt.block_on(http.get_current_user()).expect("users/@me");
    assert_eq!(me.id.get(), fake.bot_user_id());
    let unknown = reqwest_get(&fake, "/api/v10/nothing/here");
    assert_eq!(
        unknown,
        (404, json!({"message": "404: Not Found", "code": 0}))
    );

    // Every authenticated answer of a known route carries the rate-limit headers.
    let requests = fake.requests();
    let known = requests
        .iter()
        .filter(|r| r.status != 401 && r.path != "/api/v10/nothing/here");
    for r in known {
        for h in [
            "x-ratelimit-limit",
            "x-ratelimit-remaining",
            "x-ratelimit-reset",
            "x-ratelimit-reset-after",
            "x-ratelimit-bucket",
        ] {
            assert!(header(r, h).is_some(), "{} {} has no {h}", r.method, r.path);
        }
    }
}

/// A plain GET with the bot token: (status, JSON body).
fn reqwest_get(fake: &FakeDiscord, path: &str) -> (u16, Value) {
    rt().block_on(async {
        let r = reqwest::Client::new()
            .get(format!("{}{path}", fake.base_url()))
            .header("authorization", format!("Bot {}", FakeDiscord::TOKEN))
            .send()
            .await
            .expect("request");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    })
}

#[test]
fn discord_fake_late_callback_is_unknown() {
    let fake = FakeDiscord::start();
    fake.add_member(ALICE, "alice", &[]);
    let http = fake.serenity_http(FakeDiscord::TOKEN, false);
    http.set_application_id(fake.application_id().into());
    let rt = rt();
    rt.block_on(Command::set_global_commands(&http, vec![task_command()]))
        .expect("register");
    // No gateway session: the interaction is never delivered, the test answers it.
    let i = fake.slash_command(
        ALICE,
        fake.channel_id(),
        "task",
        "new",
        &[("prompt", json!("x"))],
    );
    std::thread::sleep(Duration::from_millis(3100));
    let reply =
        CreateInteractionResponse::Message(CreateInteractionResponseMessage::new().content("late"));
    let r = rt.block_on(http.create_interaction_response(
        InteractionId::new(i.id),
        &i.token,
        &reply,
        vec![],
    ));
    assert_eq!(status_code(r), (404, 10062));
    assert!(fake.original_response(&i).is_none());

    // In time: deferred, then the original edited through the webhook.
    let i = fake.slash_command(
        ALICE,
        fake.channel_id(),
        "task",
        "new",
        &[("prompt", json!("y"))],
    );
    let defer =
        CreateInteractionResponse::Defer(CreateInteractionResponseMessage::new().ephemeral(true));
    rt.block_on(http.create_interaction_response(
        InteractionId::new(i.id),
        &i.token,
        &defer,
        vec![],
    ))
    .expect("defer");
    rt.block_on(http.edit_original_interaction_response(
        &i.token,
        &json!({"content": "done"}),
        vec![],
    ))
    .expect("edit @original");
    let m = fake.original_response(&i).unwrap();
    assert_eq!((m.content.as_str(), m.flags), ("done", 64));
    let f = rt
        .block_on(http.create_followup_message(&i.token, &json!({"content": "more"}), vec![]))
        .expect("follow-up");
    assert_eq!(fake.followups(&i)[0].id, f.id.get());
}

#[test]
fn discord_fake_ratelimiter_honours_headers() {
    let fake = FakeDiscord::start_with(Limits {
        messages: Rate::new(5, Duration::from_secs(1)),
        ..Limits::default()
    });
    let http = fake.serenity_http(FakeDiscord::TOKEN, true);
    let ch = ChannelId::new(fake.channel_id());
    let started = Instant::now();
    rt().block_on(async {
        for n in 0..20 {
            ch.say(&http, format!("message {n}")).await.expect("send");
        }
    });
    let took = started.elapsed();
    assert_eq!(fake.messages(ch.get()).len(), 20);
    let posts: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST")
        .collect();
    eprintln!(
        "serenity's ratelimiter: 20 messages in {took:?}, {} POSTs, {} 429s",
        posts.len(),
        fake.count_429()
    );
    assert!(fake.count_429() <= 1, "a 429 storm: {}", fake.count_429());
    assert!(
        took >= Duration::from_secs(3),
        "did not wait for the windows: {took:?}"
    );
    // The same bucket hash for every message POST of the channel.
    let buckets: std::collections::BTreeSet<_> = posts.iter().map(|r| r.bucket.clone()).collect();
    assert_eq!(buckets.len(), 1);

    // Concurrent sends to a fresh channel start before serenity knows the bucket: they get
    // 429s, and serenity waits `Retry-After` and retries until all arrive.
    std::thread::sleep(Duration::from_millis(1100));
    let thread = rt()
        .block_on(ch.create_thread_from_message(
            &http,
            MessageId::new(fake.messages(ch.get())[0].id),
            CreateThread::new("burst"),
        ))
        .expect("thread");
    let before = fake.count_429();
    rt().block_on(async {
        let sends = (0..10).map(|n| thread.id.say(&http, format!("burst {n}")));
        for r in futures_util::future::join_all(sends).await {
            r.expect("send");
        }
    });
    let burst = fake.count_429() - before;
    eprintln!("serenity's ratelimiter, 10 concurrent sends: {burst} 429s, all retried");
    assert_eq!(fake.messages(thread.id.get()).len(), 10);
    assert!(burst > 0, "the concurrent burst met no 429");
}

#[test]
fn discord_fake_429s_without_ratelimiter() {
    let fake = FakeDiscord::start_with(Limits {
        messages: Rate::new(5, Duration::from_secs(2)),
        global: Rate::new(12, Duration::from_secs(1)),
        ..Limits::default()
    });
    let http = fake.serenity_http(FakeDiscord::TOKEN, false);
    let ch = ChannelId::new(fake.channel_id());
    let results: Vec<_> = rt().block_on(async {
        let mut out = Vec::new();
        for n in 0..8 {
            out.push(ch.say(&http, format!("burst {n}")).await.map(|_| ()));
        }
        out
    });
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(ok, 5);
    let limited: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| r.status == 429)
        .collect();
    assert_eq!(limited.len(), 3);
    let r = &limited[0];
    assert_eq!(header(r, "x-ratelimit-remaining"), Some("0"));
    assert_eq!(header(r, "x-ratelimit-limit"), Some("5"));
    assert_eq!(header(r, "x-ratelimit-scope"), Some("user"));
    assert!(header(r, "x-ratelimit-global").is_none());
    let retry: f64 = header(r, "retry-after").unwrap().parse().unwrap();
    let reset_after: f64 = header(r, "x-ratelimit-reset-after")
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        retry >= reset_after && reset_after > 0.0 && reset_after <= 2.0,
        "{retry} {reset_after}"
    );
    let body = r.body.clone().unwrap();
    assert_eq!(body["message"], "You are being rate limited.");
    assert_eq!(body["global"], false);
    assert!(body["retry_after"].as_f64().unwrap() > 0.0);
    // Serenity cannot decode the documented route 429 body (it has no `code`).
    let (status, code, _) = discord_error(results.into_iter().last().unwrap());
    assert_eq!((status, code), (429, -1));

    // The global limit: 12 requests a second across routes.
    std::thread::sleep(Duration::from_millis(1100));
    let statuses: Vec<u16> = rt().block_on(async {
        let mut out = Vec::new();
        for _ in 0..15 {
            let r = http.get_current_user().await;
            out.push(match r {
                Ok(_) => 200,
                Err(e) => match e {
                    serenity::Error::Http(serenity::http::HttpError::UnsuccessfulRequest(e)) => {
                        e.status_code.as_u16()
                    }
                    e => panic!("{e:?}"),
                },
            });
        }
        out
    });
    assert!(statuses[..12].iter().all(|s| *s == 200), "{statuses:?}");
    assert!(statuses[12..].iter().all(|s| *s == 429), "{statuses:?}");
    let g = fake
        .requests()
        .into_iter()
        .rfind(|r| r.status == 429)
        .unwrap();
    assert!(g.global);
    assert_eq!(header(&g, "x-ratelimit-global"), Some("true"));
    assert_eq!(header(&g, "x-ratelimit-scope"), Some("global"));
    let body = g.body.unwrap();
    assert_eq!(
        (body["global"].clone(), body["code"].clone()),
        (json!(true), json!(0))
    );
}
