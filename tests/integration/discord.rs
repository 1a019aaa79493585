//! The Discord front end of `firstmate run` against the fake Discord
//! (`support::discord`): `/agent new` opens a thread from its answer, the session's output
//! goes there (status message with buttons first), thread messages are prompts, the
//! thread commands and buttons act on the session, strangers are refused, and the rate
//! limits are honoured.

use std::time::Duration;

use serde_json::json;

use crate::support::Env;
use crate::support::discord::{EPHEMERAL, FakeDiscord, Limits, Message, Rate};
use crate::support::service::Service;

const ALICE: u64 = 111_111_111_111_111_111;
const BOB: u64 = 222_222_222_222_222_222;
const WAIT: Duration = Duration::from_secs(60);

struct Bot {
    env: Env,
    service: Option<Service>,
}

impl Bot {
    fn start(fake: &FakeDiscord) -> Option<Bot> {
        Bot::start_with(fake, "")
    }

    /// With extra keys inside `[sessions]`.
    fn start_with(fake: &FakeDiscord, sessions: &str) -> Option<Bot> {
        Bot::start_agent(fake, sessions, "")
    }

    /// With extra keys inside `[sessions]` and the test agent's `[agents.scripted]`.
    fn start_agent(fake: &FakeDiscord, sessions: &str, agent: &str) -> Option<Bot> {
        let extra = format!("{agent}{}", fake.config(&[ALICE]));
        let env = Env::with_sessions(&extra, sessions)?;
        let mut bot = Bot { env, service: None };
        bot.spawn();
        Some(bot)
    }

    fn spawn(&mut self) {
        self.service = Some(Service::spawn(
            &self.env,
            "firstmate=debug,info",
            &[("FIRSTMATE_TEST_DISCORD_TOKEN", FakeDiscord::TOKEN)],
        ));
    }

    /// Stops the bot; its log, for assertion messages.
    fn stop(&mut self) -> String {
        self.service.take().map(Service::kill).unwrap_or_default()
    }
}

fn contents(ms: &[Message]) -> String {
    ms.iter()
        .map(|m| format!("[{}] {}", m.id, m.content))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Whether a thread has a message of the bot containing `text`.
fn thread_with(fake: &FakeDiscord, text: &str) -> bool {
    fake.thread_with(text)
}

#[test]
fn discord_sessions_live_in_threads() {
    let fake = FakeDiscord::start();
    fake.add_member(ALICE, "alice", &[]);
    fake.add_member(BOB, "bob", &[]);
    let Some(mut bot) = Bot::start(&fake) else {
        return;
    };
    let ready = fake.wait_for(WAIT, |f| {
        f.identified() && !f.registered_commands().is_empty()
    });
    assert!(ready, "the bot never registered /agent:\n{}", bot.stop());
    let cmd = &fake.registered_commands()[0];
    assert_eq!(cmd["name"], "agent");

    // A stranger is refused, only they see it, and nothing starts.
    let refused = fake.slash_command(
        BOB,
        fake.channel_id(),
        "agent",
        "new",
        &[("prompt", json!("say hi"))],
    );
    assert!(
        fake.wait_for(WAIT, |f| f.original_response(&refused).is_some()),
        "no answer to a stranger:\n{}",
        bot.stop()
    );
    let r = fake.original_response(&refused).expect("answer");
    assert!(r.flags & EPHEMERAL != 0, "the refusal is public: {r:?}");
    assert!(r.content.contains("allowed_users"), "{}", r.content);

    // Alice starts a session: an answer in the channel, a thread from it, the output there.
    let new = fake.slash_command(
        ALICE,
        fake.channel_id(),
        "agent",
        "new",
        &[
            (
                "prompt",
                json!("say hello from the agent\nrun echo $((6*7))"),
            ),
            ("agent", json!("scripted")),
        ],
    );
    let ok = fake.wait_for(WAIT, |f| {
        thread_with(f, "hello from the agent") && thread_with(f, "```\n42\n```")
    });
    let threads = fake.threads();
    assert!(
        ok,
        "no output in a thread; threads {threads:?}\nchannel:\n{}\n{}",
        contents(&fake.messages(fake.channel_id())),
        bot.stop()
    );
    assert!(fake.threads().len() == 1, "{:?}", fake.threads());
    let thread = fake.threads()[0].clone();
    let answer = fake.original_response(&new).expect("the new answer");
    assert_eq!(
        thread.message_id,
        Some(answer.id),
        "the thread is not opened from the answer"
    );
    assert_eq!(thread.name, "say hello from the agent");
    let msgs = fake.messages(thread.id);
    let status = msgs[0].clone();
    assert!(
        status.content.contains("firstmate session"),
        "{}",
        contents(&msgs)
    );
    let buttons = serde_json::to_string(&status.components).expect("json");
    assert!(
        buttons.contains("fm:stop:") && buttons.contains("fm:interrupt:"),
        "{buttons}"
    );
    assert!(
        msgs.iter()
            .any(|m| m.content.contains("▸ **Bash**") && m.content.contains("```\n42\n```")),
        "{}",
        contents(&msgs)
    );

    // A message in the thread is the next prompt; a stranger's is refused once.
    fake.say(ALICE, thread.id, "say second turn");
    assert!(
        fake.wait_for(WAIT, |f| thread_with(f, "second turn")),
        "{}",
        contents(&fake.messages(thread.id))
    );
    // One sent while a turn runs waits for it, and the thread says so at once.
    fake.say(ALICE, thread.id, "run sleep 6; echo slept");
    assert!(
        fake.wait_for(WAIT, |f| thread_with(f, "sleep 6; echo slept")),
        "{}",
        contents(&fake.messages(thread.id))
    );
    fake.say(ALICE, thread.id, "say after the sleep");
    assert!(
        fake.wait_for(WAIT, |f| thread_with(
            f,
            "⏳ queued: it runs when the current turn ends"
        )),
        "{}",
        contents(&fake.messages(thread.id))
    );
    assert!(
        !thread_with(&fake, "```\nslept\n```"),
        "the notice came after the turn: {}",
        contents(&fake.messages(thread.id))
    );
    assert!(
        fake.wait_for(WAIT, |f| thread_with(f, "after the sleep")),
        "{}",
        contents(&fake.messages(thread.id))
    );
    fake.say(BOB, thread.id, "say intruder");
    assert!(
        fake.wait_for(WAIT, |f| f.messages(thread.id).iter().any(|m| m.author_id
            == f.bot_user_id()
            && m.content.contains("may not"))),
        "{}",
        contents(&fake.messages(thread.id))
    );

    // `/agent status` in the thread; the Stop button.
    let st = fake.slash_command(ALICE, thread.id, "agent", "status", &[]);
    assert!(
        fake.wait_for(WAIT, |f| f
            .original_response(&st)
            .is_some_and(|m| m.content.contains("firstmate session")
                && m.content.contains("agent: scripted"))),
        "{:?}",
        fake.original_response(&st)
    );
    let session_id = buttons
        .split("fm:stop:")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("a stop button")
        .to_string();
    fake.click_button(
        ALICE,
        thread.id,
        status.id,
        &format!("fm:stop:{session_id}"),
    );
    let stopped = bot
        .env
        .wait_session(&session_id, WAIT, |s| s["state"] == "stopped");
    assert_eq!(stopped["state"], "stopped");
    assert!(
        fake.wait_for(WAIT, |f| f
            .message(status.id)
            .is_some_and(|m| m.content.contains("stopped"))),
        "the status message does not say it stopped: {:?}",
        fake.message(status.id)
    );
    // `logs` attaches the transcript.
    let logs = fake.slash_command(ALICE, thread.id, "agent", "logs", &[]);
    assert!(
        fake.wait_for(WAIT, |f| f
            .original_response(&logs)
            .is_some_and(|m| !m.attachments.is_empty())),
        "{:?}",
        fake.original_response(&logs)
    );
    let file = &fake.original_response(&logs).expect("logs").attachments[0];
    assert!(String::from_utf8_lossy(&file.bytes).contains("hello from the agent"));

    for m in fake.messages(thread.id) {
        assert!(m.content.chars().count() <= 2000);
    }
    assert_eq!(
        fake.count_429(),
        0,
        "429s under the default limits:\n{}",
        fake.list_429()
    );
    bot.stop();
}

/// A flood in a thread, under a tight message limit: everything arrives, edits are few,
/// and 429s are rare and waited out.
/// Alice, the bot, and a session flooding `lines` lines into its thread.
fn flood(fake: &FakeDiscord, lines: usize) -> Option<Bot> {
    fake.add_member(ALICE, "alice", &[]);
    let mut bot = Bot::start(fake)?;
    assert!(
        fake.wait_for(WAIT, |f| !f.registered_commands().is_empty()),
        "{}",
        bot.stop()
    );
    fake.slash_command(
        ALICE,
        fake.channel_id(),
        "agent",
        "new",
        &[
            ("prompt", json!(format!("flood {lines}"))),
            ("agent", json!("scripted")),
        ],
    );
    Some(bot)
}

#[test]
fn discord_a_flood_is_paced_and_nothing_is_lost() {
    let fake = FakeDiscord::start_with(Limits {
        messages: Rate::new(2, Duration::from_secs(2)),
        ..Limits::default()
    });
    let Some(mut bot) = flood(&fake, 3000) else {
        return;
    };
    let done = fake.wait_for(Duration::from_secs(120), |f| {
        thread_with(f, "line 3000/3000")
    });
    let thread = fake.threads().first().map(|t| t.id).unwrap_or_default();
    assert!(
        done,
        "the flood did not arrive:\n{}\n{}",
        contents(&fake.messages(thread)),
        bot.stop()
    );
    let text: String = fake
        .messages(thread)
        .iter()
        .map(|m| m.content.clone())
        .collect::<Vec<_>>()
        .join("\n");
    for i in [1, 1500, 2999, 3000] {
        assert!(
            text.contains(&format!("line {i}/3000")),
            "line {i} is missing"
        );
    }
    let writes = fake
        .requests()
        .iter()
        .filter(|r| r.path.contains(&format!("/channels/{thread}/messages")))
        .count();
    assert!(writes < 200, "{writes} message writes for 3000 lines");
    let n429 = fake.count_429();
    assert!(n429 <= 3, "{n429} 429s: the limits are not honoured");
    bot.stop();
}

/// The bot is killed while a session floods its thread, and started again: it goes on
/// from what Discord acknowledged, so every line arrives, and at most the one message
/// in flight at the kill comes twice.
#[test]
fn discord_a_restart_mid_flood_loses_nothing() {
    let fake = FakeDiscord::start();
    let Some(mut bot) = flood(&fake, 2000) else {
        return;
    };
    // Kill it once some output is in the thread, long before the end.
    assert!(
        fake.wait_for(WAIT, |f| thread_with(f, "line 1/2000")),
        "{}",
        bot.stop()
    );
    let first_log = bot.stop();
    assert!(
        !thread_with(&fake, "line 2000/2000"),
        "the flood was over before the kill; nothing was tested"
    );
    bot.spawn();
    let done = fake.wait_for(Duration::from_secs(120), |f| {
        thread_with(f, "line 2000/2000")
    });
    let thread = fake.threads()[0].id;
    let text: Vec<String> = fake
        .messages(thread)
        .iter()
        .filter(|m| m.author_id == fake.bot_user_id())
        .flat_map(|m| m.content.lines().map(str::to_string).collect::<Vec<_>>())
        .collect();
    assert!(
        done,
        "the flood did not finish after the restart:\n{first_log}\n{}",
        bot.stop()
    );
    let mut twice = 0;
    for i in 1..=2000 {
        let n = text
            .iter()
            .filter(|l| **l == format!("line {i}/2000"))
            .count();
        assert!(n >= 1, "line {i} is lost");
        twice += n - 1;
    }
    // One message holds about 135 lines of `line i/2000`.
    assert!(
        twice <= 150,
        "{twice} lines came twice: more than one message"
    );
    bot.stop();
}

/// Fifty `/agent new` at once from five people: every command is answered, every
/// session has its own thread with its status message, every session's events are
/// gapless and unique, and no session runs without its thread.
#[test]
fn discord_a_burst_of_fifty_new_from_five_people() {
    const N: usize = 50;
    let people: Vec<u64> = (1..=5).map(|k| 300_000_000_000_000_000 + k).collect();
    let fake = FakeDiscord::start();
    for (k, p) in people.iter().enumerate() {
        fake.add_member(*p, &format!("person{k}"), &[]);
    }
    let extra = fake.config(&people);
    let Some(env) = Env::with_sessions(&extra, "max_running = 10\nmax_running_per_user = 2") else {
        return;
    };
    let mut bot = Bot { env, service: None };
    bot.spawn();
    assert!(
        fake.wait_for(WAIT, |f| f.identified()
            && !f.registered_commands().is_empty()),
        "{}",
        bot.stop()
    );
    let asked: Vec<_> = (0..N)
        .map(|i| {
            fake.slash_command(
                people[i % people.len()],
                fake.channel_id(),
                "agent",
                "new",
                &[("prompt", json!(format!("say burst-{i}")))],
            )
        })
        .collect();
    let answered = fake.wait_for(Duration::from_secs(120), |f| {
        asked.iter().all(|i| f.original_response(i).is_some())
            && f.threads().len() >= N
            && f.threads().iter().all(|t| {
                f.messages(t.id)
                    .iter()
                    .any(|m| m.content.contains("firstmate session"))
            })
    });
    let threads = fake.threads();
    assert!(
        answered,
        "{} of {N} answered, {} threads, {} with a status message\n{}",
        asked
            .iter()
            .filter(|i| fake.original_response(i).is_some())
            .count(),
        threads.len(),
        threads
            .iter()
            .filter(|t| fake
                .messages(t.id)
                .iter()
                .any(|m| m.content.contains("firstmate session")))
            .count(),
        bot.stop()
    );
    assert_eq!(threads.len(), N, "one thread per `new`: {threads:?}");
    for (i, a) in asked.iter().enumerate() {
        let answer = fake.original_response(a).expect("answer");
        assert!(
            !answer.content.contains('⚠'),
            "`new` {i} was answered with a problem: {}",
            answer.content
        );
        let t = threads
            .iter()
            .find(|t| t.message_id == Some(answer.id))
            .unwrap_or_else(|| panic!("no thread from the answer to `new` {i}"));
        assert_eq!(t.name, format!("say burst-{i}"));
    }

    // From the database: fifty sessions, each bound to one of those threads, each log
    // dense.
    let thread_ids = threads.iter().map(|t| t.id.to_string()).collect();
    tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(crate::support::check_burst(
            &bot.env,
            "discord",
            N,
            &thread_ids,
        ));
    bot.stop();
}

/// Waits for the original answer of an interaction that satisfies `ok`; the answer.
fn answer(
    fake: &FakeDiscord,
    i: &crate::support::discord::Interaction,
    ok: impl Fn(&Message) -> bool,
) -> Option<Message> {
    fake.wait_for(WAIT, |f| f.original_response(i).is_some_and(|m| ok(&m)));
    fake.original_response(i)
}

#[test]
fn discord_attachments_go_in_and_get_takes_files_out() {
    let fake = FakeDiscord::start_with(Limits {
        // What this server lets the bot upload (the interaction's attachment_size_limit).
        max_upload: 100_000,
        ..Limits::default()
    });
    fake.add_member(ALICE, "alice", &[]);
    fake.add_member(BOB, "bob", &[]);
    let Some(mut bot) = Bot::start_with(&fake, "max_attachment_size = \"4k\"\n") else {
        return;
    };
    assert!(
        fake.wait_for(WAIT, |f| f.identified()
            && !f.registered_commands().is_empty()),
        "{}",
        bot.stop()
    );
    let get_cmd = fake.registered_commands()[0]["options"]
        .as_array()
        .and_then(|o| o.iter().find(|o| o["name"] == "get").cloned())
        .expect("a get subcommand");
    assert_eq!(get_cmd["options"][0]["name"], "path", "{get_cmd}");
    fake.slash_command(
        ALICE,
        fake.channel_id(),
        "agent",
        "new",
        &[("prompt", json!("say ready")), ("agent", json!("scripted"))],
    );
    assert!(
        fake.wait_for(WAIT, |f| thread_with(f, "ready")),
        "{}",
        bot.stop()
    );
    let thread = fake.threads()[0].id;

    // In: a CSV and an image with a prompt that reads them; the agent is told the path.
    fake.say_with_files(
        ALICE,
        thread,
        "run cat inbox/data.csv; wc -c < inbox/shot.png",
        vec![
            ("data.csv".into(), b"a,b\n1,2\n".to_vec()),
            ("shot.png".into(), b"\x89PNG\r\n\x1a\nfake image".to_vec()),
        ],
    );
    assert!(
        fake.wait_for(WAIT, |f| thread_with(f, "1,2")
            && thread_with(f, "echo: Attached file: /workspace/inbox/shot.png")),
        "{}\n{}",
        contents(&fake.messages(thread)),
        bot.stop()
    );
    assert!(
        thread_with(&fake, "\n18\n"),
        "{}",
        contents(&fake.messages(thread))
    );
    // Too large for sessions.max_attachment_size: refused with the limit, before download.
    fake.say_with_files(
        ALICE,
        thread,
        "",
        vec![("big.log".into(), vec![b'x'; 5000])],
    );
    assert!(
        fake.wait_for(WAIT, |f| thread_with(
            f,
            "big.log is 5.0 KB, more than sessions.max_attachment_size (4.1 KB)"
        )),
        "{}",
        contents(&fake.messages(thread))
    );

    // A burst of files with one name: each gets a name of its own, none is overwritten.
    for i in 0..6 {
        fake.say_with_files(
            ALICE,
            thread,
            "",
            vec![("same.txt".into(), format!("copy {i}\n").into_bytes())],
        );
    }
    let stored = |f: &FakeDiscord| {
        let text = contents(&f.messages(thread));
        [
            "same.txt",
            "same-1.txt",
            "same-2.txt",
            "same-3.txt",
            "same-4.txt",
            "same-5.txt",
        ]
        .iter()
        .all(|n| text.contains(&format!("echo: Attached file: /workspace/inbox/{n}")))
    };
    assert!(
        fake.wait_for(WAIT, stored),
        "{}",
        contents(&fake.messages(thread))
    );
    fake.say(
        ALICE,
        thread,
        "run cat inbox/same*.txt | sort | tr '\\n' ' '",
    );
    assert!(
        fake.wait_for(WAIT, |f| thread_with(
            f,
            "copy 0 copy 1 copy 2 copy 3 copy 4 copy 5"
        )),
        "{}",
        contents(&fake.messages(thread))
    );

    // Out: a file, a folder as .tar.gz.
    let got = fake.slash_command(
        ALICE,
        thread,
        "agent",
        "get",
        &[("path", json!("inbox/data.csv"))],
    );
    let m = answer(&fake, &got, |m| !m.attachments.is_empty()).expect("an answer to get");
    assert_eq!(m.attachments[0].filename, "data.csv", "{m:?}");
    assert_eq!(m.attachments[0].bytes, b"a,b\n1,2\n");
    let got = fake.slash_command(ALICE, thread, "agent", "get", &[("path", json!("inbox"))]);
    let m = answer(&fake, &got, |m| !m.attachments.is_empty()).expect("an answer to get");
    assert_eq!(m.attachments[0].filename, "inbox.tar.gz", "{m:?}");
    assert!(
        m.attachments[0].bytes.starts_with(&[0x1f, 0x8b]),
        "not gzip"
    );

    // Refused: outside the workspace, past the upload limit, and for a stranger.
    let got = fake.slash_command(
        ALICE,
        thread,
        "agent",
        "get",
        &[("path", json!("../../etc/passwd"))],
    );
    let m = answer(&fake, &got, |m| m.content.contains("outside")).expect("an answer");
    assert!(
        m.content.contains("outside /workspace") && m.attachments.is_empty(),
        "{m:?}"
    );
    fake.say(
        ALICE,
        thread,
        "run head -c 300000 /dev/zero > big.bin && ln -s /etc inbox/etc && echo made-big",
    );
    assert!(
        fake.wait_for(WAIT, |f| thread_with(f, "made-big")),
        "{}",
        contents(&fake.messages(thread))
    );
    // A symlink out of the workspace is followed, and refused.
    let got = fake.slash_command(
        ALICE,
        thread,
        "agent",
        "get",
        &[("path", json!("inbox/etc/passwd"))],
    );
    let m = answer(&fake, &got, |m| m.content.contains("outside")).expect("an answer");
    assert!(
        m.content.contains("(it leads to /etc/passwd)") && m.attachments.is_empty(),
        "{m:?}"
    );
    let got = fake.slash_command(ALICE, thread, "agent", "get", &[("path", json!("big.bin"))]);
    let m = answer(&fake, &got, |m| m.content.contains("more than")).expect("an answer");
    assert!(
        m.content.contains("300.0 KB") && m.content.contains("`diff`"),
        "{m:?}"
    );
    let got = fake.slash_command(
        BOB,
        thread,
        "agent",
        "get",
        &[("path", json!("inbox/data.csv"))],
    );
    let m = answer(&fake, &got, |m| m.content.contains("may not")).expect("an answer");
    assert!(
        m.flags & EPHEMERAL != 0 && m.attachments.is_empty(),
        "{m:?}"
    );
    assert_eq!(fake.count_429(), 0, "{}", fake.list_429());
    bot.stop();
}

/// The first message of the bot in `thread` with an approval button, and the
/// approval's custom id prefix (`fm:ANSWER:SESSION:ID` without the answer).
fn approval_message(fake: &FakeDiscord, thread: u64, tool_call: &str) -> Option<(Message, String)> {
    let asks = |m: &Message| {
        m.content.contains(tool_call)
            && serde_json::to_string(&m.components).is_ok_and(|c| c.contains("fm:approve:"))
    };
    fake.wait_for(WAIT, |f| f.messages(thread).iter().any(asks));
    let m = fake.messages(thread).into_iter().find(asks)?;
    let ids = serde_json::to_string(&m.components).ok()?;
    let rest = ids
        .split("\"fm:approve:")
        .nth(1)?
        .split('"')
        .next()?
        .to_string();
    Some((m, rest))
}

/// Approvals from a Discord thread: the compact message with three buttons, a refusal
/// only the stranger sees, approve, approve for the session (that tool no longer
/// asks), deny, the timeout, and a button pressed after the bot restarted.
#[test]
fn discord_approvals_with_buttons() {
    let fake = FakeDiscord::start();
    fake.add_member(ALICE, "alice", &[]);
    fake.add_member(BOB, "bob", &[]);
    let Some(mut bot) = Bot::start_agent(
        &fake,
        "approval_timeout = \"10s\"\n",
        "permission_mode = \"ask\"\n",
    ) else {
        return;
    };
    assert!(
        fake.wait_for(WAIT, |f| !f.registered_commands().is_empty()),
        "{}",
        bot.stop()
    );
    fake.slash_command(
        ALICE,
        fake.channel_id(),
        "agent",
        "new",
        &[(
            "prompt",
            json!(
                "ask Bash echo approved-ran\nask Bash echo always-ran\nask Bash echo unasked-ran"
            ),
        )],
    );
    assert!(
        fake.wait_for(WAIT, |f| f.threads().len() == 1),
        "{}",
        bot.stop()
    );
    let thread = fake.threads()[0].id;
    let Some((m, id)) = approval_message(&fake, thread, "echo approved-ran") else {
        panic!(
            "no approval message:\n{}\n{}",
            contents(&fake.messages(thread)),
            bot.stop()
        );
    };
    assert!(
        m.content.contains("🔐 Approve Bash: echo approved-ran?"),
        "{}",
        m.content
    );
    let buttons = serde_json::to_string(&m.components).expect("json");
    for label in ["Approve", "Approve for this session", "Deny"] {
        assert!(
            buttons.contains(&format!("\"label\":\"{label}\"")),
            "{buttons}"
        );
    }

    // Bob may not answer: only he is told, and the approval still waits.
    let refused = fake.click_button(BOB, thread, m.id, &format!("fm:approve:{id}"));
    assert!(
        fake.wait_for(WAIT, |f| !f.interaction_responses(&refused).is_empty()),
        "no answer to Bob"
    );
    let r = &fake.interaction_responses(&refused)[0];
    assert_eq!(r["type"], 4, "{r}");
    assert!(
        r["data"]["flags"].as_u64().unwrap_or(0) & EPHEMERAL != 0,
        "{r}"
    );
    assert!(
        r["data"]["content"]
            .as_str()
            .unwrap_or("")
            .contains("may answer"),
        "{r}"
    );
    assert!(
        !fake
            .message(m.id)
            .expect("the approval")
            .components
            .is_empty()
    );

    // Alice approves: the message says so and loses its buttons; the command runs.
    fake.click_button(ALICE, thread, m.id, &format!("fm:approve:{id}"));
    assert!(
        fake.wait_for(WAIT, |f| f.message(m.id).is_some_and(|m| m
            .content
            .contains(&format!("✅ approved by <@{ALICE}>"))
            && m.components.is_empty())),
        "{:?}",
        fake.message(m.id)
    );
    assert!(
        fake.wait_for(WAIT, |f| thread_with(f, "```\napproved-ran\n```")),
        "{}",
        contents(&fake.messages(thread))
    );

    // Approve for the session: the next Bash call does not ask.
    let (m2, id2) = approval_message(&fake, thread, "echo always-ran").expect("a second approval");
    fake.click_button(ALICE, thread, m2.id, &format!("fm:always:{id2}"));
    assert!(
        fake.wait_for(WAIT, |f| thread_with(f, "```\nunasked-ran\n```")),
        "{}",
        contents(&fake.messages(thread))
    );
    assert!(
        fake.message(m2.id)
            .is_some_and(|m| m.content.contains("♾️ approved for this session")),
        "{:?}",
        fake.message(m2.id)
    );
    assert!(
        !fake
            .messages(thread)
            .iter()
            .any(|m| m.content.contains("🔐 Approve Bash: echo unasked-ran")),
        "{}",
        contents(&fake.messages(thread))
    );

    // Deny, then a timeout.
    fake.say(
        ALICE,
        thread,
        "ask Edit echo denied-ran\nask Write echo late-ran",
    );
    let (m3, id3) =
        approval_message(&fake, thread, "Edit: echo denied-ran").expect("a third approval");
    fake.click_button(ALICE, thread, m3.id, &format!("fm:deny:{id3}"));
    assert!(
        fake.wait_for(WAIT, |f| f.message(m3.id).is_some_and(|m| m
            .content
            .contains(&format!("❌ denied by <@{ALICE}>")))),
        "{:?}",
        fake.message(m3.id)
    );
    let (m4, _) =
        approval_message(&fake, thread, "Write: echo late-ran").expect("a fourth approval");
    assert!(
        fake.wait_for(WAIT, |f| f.message(m4.id).is_some_and(|m| m
            .content
            .contains("⌛ denied: no answer within 10s")
            && m.components.is_empty())),
        "{:?}",
        fake.message(m4.id)
    );
    assert!(
        !thread_with(&fake, "```\ndenied-ran\n```") && !thread_with(&fake, "```\nlate-ran\n```")
    );

    // A restart with an approval waiting: its button still works.
    fake.say(ALICE, thread, "ask Write echo restart-ran");
    let (m5, id5) =
        approval_message(&fake, thread, "Write: echo restart-ran").expect("a fifth approval");
    // (The bot stores where it posted the question right after posting it.)
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(fake.count_429(), 0, "{}", fake.list_429());
    bot.stop();
    bot.spawn();
    assert!(
        fake.wait_for(WAIT, |f| f.gateway_counts().0 >= 2),
        "the bot did not come back"
    );
    // A burst: the button pressed five times at once. One press counts; the others are
    // told, each only to the presser, that it was answered already.
    let clicks: Vec<_> = (0..5)
        .map(|_| fake.click_button(ALICE, thread, m5.id, &format!("fm:approve:{id5}")))
        .collect();
    assert!(
        fake.wait_for(WAIT, |f| f
            .message(m5.id)
            .is_some_and(|m| m.content.contains("✅ approved by"))),
        "{:?}\n{}\n{}",
        fake.message(m5.id),
        contents(&fake.messages(thread)),
        bot.stop()
    );
    assert!(
        fake.wait_for(WAIT, |f| clicks
            .iter()
            .all(|c| !f.interaction_responses(c).is_empty())),
        "not every press was answered"
    );
    let responses: Vec<_> = clicks
        .iter()
        .map(|c| fake.interaction_responses(c)[0].clone())
        .collect();
    let counted = responses.iter().filter(|r| r["type"] == 6).count();
    assert_eq!(counted, 1, "{responses:?}");
    for r in responses.iter().filter(|r| r["type"] != 6) {
        assert!(
            r["data"]["content"]
                .as_str()
                .is_some_and(|c| c.contains("answered already")),
            "{r}"
        );
        assert!(
            r["data"]["flags"].as_u64().unwrap_or(0) & EPHEMERAL != 0,
            "{r}"
        );
    }
    assert!(
        fake.wait_for(WAIT, |f| f
            .messages(thread)
            .iter()
            .any(|m| m.content.contains("```\nrestart-ran\n```"))),
        "{}",
        contents(&fake.messages(thread))
    );
    let ran = fake
        .messages(thread)
        .iter()
        .filter(|m| m.content.contains("```\nrestart-ran\n```"))
        .count();
    assert_eq!(ran, 1, "{}", contents(&fake.messages(thread)));
    // Discord keeps a bucket's count across the bot's restart, which the new process
    // cannot know: its first edit in a bucket the old one had just used up may get one
    // 429 (then it keeps to the headers). More would be a storm.
    assert!(fake.count_429() <= 1, "{}", fake.list_429());
    bot.stop();
}
