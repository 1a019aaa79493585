//! The Matrix front end against a real Synapse (scripts/start-synapse) and the real
//! Docker daemon: the real `firstmate run` binary as the bot, a matrix-sdk client as the
//! person.

use std::time::Duration;

use crate::support::Env;
use crate::support::service::Service;
use crate::support::synapse::{Person, Synapse, count_lines, sessions, start_bot, tail};

const TURN: Duration = Duration::from_secs(90);

fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// Everything a test needs: Synapse, users, the bot's environment, the person.
struct World {
    syn: Synapse,
    bot_user: crate::support::synapse::User,
    alice: Person,
    env: Env,
}

async fn world(syn: Option<Synapse>) -> Option<World> {
    let syn = syn?;
    let bot_user = syn.register("bot").await;
    let alice_user = syn.register("alice").await;
    let env = Env::new(&syn.matrix_table(&bot_user, &[&alice_user]))?;
    let alice = Person::login(&syn, &alice_user).await;
    Some(World {
        syn,
        bot_user,
        alice,
        env,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matrix_sessions_live_in_threads() {
    let Some(w) = world(Synapse::main()).await else {
        return;
    };
    let World {
        syn,
        bot_user,
        alice,
        env,
    } = &w;
    let bob_user = syn.register("bob").await;
    let bob = Person::login(syn, &bob_user).await;
    let mut bot = start_bot(env, bot_user);

    // Invite and join; an invite from someone not allowed is ignored.
    let room = alice.room_with_bot(false, bot_user, &[&bob]).await;
    let bobs_room = bob.create_room(false, &[bot_user]).await;

    // `new` -> a thread rooted at the command, with the agent's output.
    let root = alice.send(&room, "!fm new say hi").await;
    let text = alice
        .wait_thread(&root, bot_user, &mut bot, TURN, "hi and done", |t| {
            t.lines().any(|l| l == "hi") && t.contains("✓ done")
        })
        .await;
    let thread = alice.thread(&root, bot_user);
    assert!(
        thread[0].body.starts_with("firstmate session "),
        "the status message comes first: {thread:#?}"
    );
    for m in &thread {
        assert!(!m.encrypted);
        assert!(!m.html.is_empty(), "formatted_body missing: {m:?}");
    }
    // Every message the bot posted for the session is in the thread (edits aside).
    let in_room = alice.messages_from(&room, bot_user);
    assert_eq!(
        in_room.len(),
        thread.len(),
        "bot messages outside the thread: {in_room:#?}"
    );
    assert_eq!(count_lines(&text, "hi"), 1, "{text}");

    // A thread reply is the next prompt.
    alice.send_in_thread(&room, &root, "say second").await;
    let text = alice
        .wait_thread(&root, bot_user, &mut bot, TURN, "the second turn", |t| {
            t.lines().any(|l| l == "second") && t.matches("✓ done").count() == 2
        })
        .await;
    assert_eq!(count_lines(&text, "hi"), 1, "{text}");

    // A tool call is one line with its outcome; its output is folded.
    alice
        .send_in_thread(&room, &root, "run echo $((6*7))")
        .await;
    let text = alice
        .wait_thread(&root, bot_user, &mut bot, TURN, "the tool call", |t| {
            t.matches("✓ done").count() == 3
        })
        .await;
    assert!(text.contains("▸ Bash echo $((6*7)) → ok, 1 line"), "{text}");
    let thread = alice.thread(&root, bot_user);
    assert!(
        thread.iter().any(|m| m.html.contains("<details>")),
        "{thread:#?}"
    );

    // The status message is edited in place.
    crate::support::synapse::wait_async(TURN, "the status to count 3 turns", || async {
        let status = &alice.thread(&root, bot_user)[0];
        status.edits > 0
            && status.body.contains("state: waiting")
            && status.body.contains("turns: 3")
    })
    .await;

    // Bad commands are answered, and nothing starts.
    alice.send(&room, "!fm lsit").await;
    alice
        .wait_reply(&room, bot_user, &mut bot, "did you mean `!fm list`", TURN)
        .await;
    alice.send(&room, "!fm new --agent nope say x").await;
    alice
        .wait_reply(&room, bot_user, &mut bot, "unknown agent `nope`", TURN)
        .await;
    alice.send(&room, "!fm new --timeout soon say x").await;
    alice
        .wait_reply(&room, bot_user, &mut bot, "is not a duration", TURN)
        .await;
    alice.send(&room, "!fm stop").await;
    alice
        .wait_reply(
            &room,
            bot_user,
            &mut bot,
            "works in a session's thread",
            TURN,
        )
        .await;

    // Someone not allowed gets a short refusal, and nothing starts.
    bob.send(&room, "!fm new say from bob").await;
    let refusal = alice
        .wait_reply(&room, bot_user, &mut bot, "may not start or steer", TURN)
        .await;
    assert!(
        refusal.content["body"]
            .as_str()
            .unwrap()
            .contains(&bob_user.user_id)
    );
    bob.send_in_thread(&room, &root, "say bob was here").await;
    bob.send_in_thread(&room, &root, "say bob again").await;

    // help and list, anywhere; status and logs in the thread.
    alice.send(&room, "!fm help").await;
    alice
        .wait_reply(&room, bot_user, &mut bot, "In a session's thread:", TURN)
        .await;
    alice.send_in_thread(&room, &root, "!fm list").await;
    alice
        .wait_reply(&room, bot_user, &mut bot, "  waiting  scripted", TURN)
        .await;
    alice.send_in_thread(&room, &root, "!fm status").await;
    alice
        .wait_reply(&room, bot_user, &mut bot, "cost: $", TURN)
        .await;
    alice.send_in_thread(&room, &root, "!fm logs").await;
    let file = alice
        .wait_reply(&room, bot_user, &mut bot, "-transcript.md", TURN)
        .await;
    assert_eq!(file.content["msgtype"], "m.file", "{file:?}");
    assert_eq!(file.content["m.relates_to"]["rel_type"], "m.thread");
    assert_eq!(file.content["m.relates_to"]["event_id"], root.as_str());

    // stop: the thread and its status say so.
    alice.send_in_thread(&room, &root, "!fm stop").await;
    alice
        .wait_thread(&root, bot_user, &mut bot, TURN, "the stop", |t| {
            t.contains("⏹ stopped: stopped by @alice")
        })
        .await;
    crate::support::synapse::wait_async(TURN, "the status to say stopped", || async {
        alice.thread(&root, bot_user)[0]
            .body
            .contains("state: stopped")
    })
    .await;

    // Bob's messages did nothing but one refusal in the thread; one session exists.
    let text = alice.thread_text(&root, bot_user);
    assert!(
        !text.contains("bob was here") && !text.contains("bob again"),
        "{text}"
    );
    let refusals = alice
        .messages_from(&room, bot_user)
        .iter()
        .filter(|s| {
            s.content["body"]
                .as_str()
                .is_some_and(|b| b.contains("may not start or steer"))
        })
        .count();
    assert_eq!(refusals, 2, "one for the command, one for the thread");
    let all = blocking(|| sessions(env));
    assert_eq!(all.len(), 1, "{all:#?}");
    assert_eq!(all[0]["frontend"], "matrix");
    assert_eq!(all[0]["owner"], alice.user.user_id.as_str());

    // The invite from bob was ignored.
    assert!(
        bob.is_invited(&bobs_room, bot_user).await,
        "the bot joined a room of a user who is not allowed"
    );
    bot.assert_running();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matrix_works_in_encrypted_rooms() {
    let Some(w) = world(Synapse::main()).await else {
        return;
    };
    let World {
        bot_user,
        alice,
        env,
        ..
    } = &w;
    let mut bot = start_bot(env, bot_user);
    let room = alice.room_with_bot(true, bot_user, &[]).await;

    let root = alice.send(&room, "!fm new say secret hello").await;
    alice
        .wait_thread(&root, bot_user, &mut bot, TURN, "the output", |t| {
            t.lines().any(|l| l == "secret hello") && t.contains("✓ done")
        })
        .await;
    alice.send_in_thread(&room, &root, "say more secrets").await;
    alice
        .wait_thread(&root, bot_user, &mut bot, TURN, "the second turn", |t| {
            t.lines().any(|l| l == "more secrets") && t.matches("✓ done").count() == 2
        })
        .await;
    alice.send_in_thread(&room, &root, "!fm stop").await;
    let text = alice
        .wait_thread(&root, bot_user, &mut bot, TURN, "the stop", |t| {
            t.contains("⏹ stopped")
        })
        .await;
    let thread = alice.thread(&root, bot_user);
    assert!(
        thread.iter().all(|m| m.encrypted),
        "every message of the thread was encrypted and decrypted: {thread:#?}"
    );
    assert_eq!(count_lines(&text, "secret hello"), 1, "{text}");
    assert_eq!(
        alice.undecryptable(),
        0,
        "the person could not decrypt some events"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matrix_restart_mid_turn_loses_and_repeats_nothing() {
    let Some(w) = world(Synapse::main()).await else {
        return;
    };
    let World {
        bot_user,
        alice,
        env,
        ..
    } = &w;
    let mut bot = start_bot(env, bot_user);
    let room = alice.room_with_bot(false, bot_user, &[]).await;

    let root = alice
        .send(&room, "!fm new say before\nsleep 3\nsay after")
        .await;
    alice
        .wait_thread(&root, bot_user, &mut bot, TURN, "before", |t| {
            t.lines().any(|l| l == "before")
        })
        .await;
    // A crash in the middle of the turn.
    bot.kill();
    let device_before =
        std::fs::read_to_string(env.path().join("matrix-store/firstmate-login.json"))
            .expect("the login is saved");
    // A prompt sent while the bot is down runs once it is back, even when more messages
    // than one sync brings came after it.
    alice.send_in_thread(&room, &root, "say while down").await;
    for i in 0..210 {
        alice.send(&room, &format!("chatter {i}")).await;
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    let mut bot = start_bot(env, bot_user);
    let text = alice
        .wait_thread(&root, bot_user, &mut bot, TURN, "both turns", |t| {
            t.lines().any(|l| l == "while down") && t.matches("✓ done").count() == 2
        })
        .await;
    assert!(
        bot.log()
            .contains("fetched the messages sent while firstmate was away"),
        "the prompt came through the gap, not the sync: {}",
        tail(&bot.log(), 40)
    );
    for line in ["before", "after", "while down"] {
        assert_eq!(count_lines(&text, line), 1, "{line:?} in:\n{text}");
    }
    assert_eq!(text.matches("✓ done").count(), 2, "{text}");
    // Exactly one status message, edited after the restart too.
    let thread = alice.thread(&root, bot_user);
    let statuses = thread
        .iter()
        .filter(|m| m.body.starts_with("firstmate session "))
        .count();
    assert_eq!(statuses, 1, "{thread:#?}");
    // The same device, and the old command did not run again.
    let device_after =
        std::fs::read_to_string(env.path().join("matrix-store/firstmate-login.json")).unwrap();
    assert_eq!(device_before, device_after);
    let all = blocking(|| sessions(env));
    assert_eq!(all.len(), 1, "{all:#?}");
    assert!(
        bot.log().contains("re-attaching") || all[0]["state"] == "waiting",
        "{}",
        tail(&bot.log(), 40)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matrix_keeps_up_under_default_rate_limits() {
    let Some(w) = world(Synapse::strict()).await else {
        return;
    };
    let World {
        bot_user,
        alice,
        env,
        ..
    } = &w;
    let mut bot = start_bot(env, bot_user);
    let room = alice.room_with_bot(false, bot_user, &[]).await;

    let root = alice.send(&room, "!fm new flood 300").await;
    let text = alice
        .wait_thread(
            &root,
            bot_user,
            &mut bot,
            Duration::from_secs(180),
            "300 lines",
            |t| t.contains("✓ done"),
        )
        .await;
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("line ")).collect();
    let expect: Vec<String> = (1..=300).map(|i| format!("line {i}/300")).collect();
    assert_eq!(lines, expect, "every line once, in order");
    // More turns, sent at once: more events than the burst allows, so the homeserver
    // answers M_LIMIT_EXCEEDED and the bot waits as told, merging what comes meanwhile.
    let started = std::time::Instant::now();
    for i in 1..=10 {
        alice
            .send_in_thread(&room, &root, &format!("say turn {i}\nrun echo out-{i}"))
            .await;
    }
    let text = alice
        .wait_thread(
            &root,
            bot_user,
            &mut bot,
            Duration::from_secs(300),
            "ten more turns",
            |t| t.matches("✓ done").count() == 11,
        )
        .await;
    for i in 1..=10 {
        assert_eq!(count_lines(&text, &format!("turn {i}")), 1, "{text}");
        assert!(
            text.contains(&format!("▸ Bash echo out-{i} → ok, 1 line")),
            "{text}"
        );
    }
    let events = alice
        .seen()
        .iter()
        .filter(|s| s.sender == bot_user.user_id)
        .count();
    eprintln!(
        "strict rate limits: {events} bot events in all; the last ten turns took {:?}",
        started.elapsed()
    );
    // More than the burst of 10: the limiter had to hold some back.
    assert!(events > 10, "{events} events");
    assert!(
        events < 60,
        "{events} events for 300 lines and eleven turns"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matrix_a_revoked_login_comes_back_as_a_new_device() {
    let Some(w) = world(Synapse::main()).await else {
        return;
    };
    let World {
        syn,
        bot_user,
        alice,
        env,
    } = &w;
    let mut bot = start_bot(env, bot_user);
    let room = alice.room_with_bot(true, bot_user, &[]).await;
    alice.send(&room, "!fm help").await;
    alice
        .wait_reply(&room, bot_user, &mut bot, "In a session's thread:", TURN)
        .await;
    bot.kill();

    // Someone signs the bot's device out from another client.
    let login_file = env.path().join("matrix-store/firstmate-login.json");
    let login: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&login_file).expect("saved login"))
            .expect("login JSON");
    syn.logout(login["access_token"].as_str().expect("token"))
        .await;

    let mut bot = start_bot(env, bot_user);
    let old_device = login["device_id"].clone();
    crate::support::synapse::wait_async(TURN, "a new login", || async {
        std::fs::read_to_string(&login_file)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .is_some_and(|l| l["device_id"] != old_device)
    })
    .await;
    // Give the new device a moment to publish its keys, then talk to it, encrypted.
    tokio::time::sleep(Duration::from_secs(3)).await;
    alice.send(&room, "!fm list").await;
    alice
        .wait_reply(
            &room,
            bot_user,
            &mut bot,
            "no sessions in this room yet",
            TURN,
        )
        .await;
    assert!(
        bot.log().contains("the saved Matrix login was revoked"),
        "{}",
        tail(&bot.log(), 30)
    );
}

/// Fifty `new` at once from five people in one room: every one is answered with its own
/// thread and status message, every session is bound to its root, every log is dense.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn matrix_a_burst_of_fifty_new_from_five_people() {
    const N: usize = 50;
    let Some(syn) = Synapse::main() else {
        return;
    };
    let bot_user = syn.register("bot").await;
    let mut users = Vec::new();
    for k in 0..5 {
        users.push(syn.register(&format!("burst{k}")).await);
    }
    let allowed: Vec<&crate::support::synapse::User> = users.iter().collect();
    let Some(env) = Env::with_sessions(
        &syn.matrix_table(&bot_user, &allowed),
        "max_running = 10\nmax_running_per_user = 2",
    ) else {
        return;
    };
    let mut people = Vec::new();
    for u in &users {
        people.push(Person::login(&syn, u).await);
    }
    let mut bot = start_bot(&env, &bot_user);
    let others: Vec<&Person> = people.iter().skip(1).collect();
    let room = people[0].room_with_bot(false, &bot_user, &others).await;

    let sends = (0..N).map(|i| {
        let p = &people[i % people.len()];
        let room = room.clone();
        async move { p.send(&room, &format!("!fm new say mburst-{i}")).await }
    });
    let roots: Vec<String> = futures_util::future::join_all(sends).await;
    let watcher = &people[0];
    crate::support::synapse::wait_async(
        Duration::from_secs(180),
        "every `new` to have its thread with a status message",
        || async {
            roots.iter().all(|r| {
                watcher
                    .thread(r, &bot_user)
                    .first()
                    .is_some_and(|m| m.body.starts_with("firstmate session "))
            })
        },
    )
    .await;

    bot.assert_running();
    let roots_set = roots.iter().cloned().collect();
    crate::support::check_burst(&env, "matrix", N, &roots_set).await;
    bot.kill();
}

/// Files in a session's thread, in a plain and an encrypted room: an attachment and an
/// image land in the inbox and the agent reads them; `get` sends a file and a folder
/// back; a file over `max_attachment_size` and a path out of the workspace are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matrix_files_in_and_out_in_plain_and_encrypted_rooms() {
    let Some(syn) = Synapse::main() else {
        return;
    };
    let bot_user = syn.register("bot").await;
    let alice_user = syn.register("alice").await;
    let Some(env) = Env::with_sessions(
        &syn.matrix_table(&bot_user, &[&alice_user]),
        "max_attachment_size = \"4k\"\n",
    ) else {
        return;
    };
    let alice = Person::login(&syn, &alice_user).await;
    let mut bot = start_bot(&env, &bot_user);
    for encrypted in [false, true] {
        let room = alice.room_with_bot(encrypted, &bot_user, &[]).await;
        let root = alice
            .send(&room, "!fm new --agent scripted say ready")
            .await;
        alice
            .wait_thread(&root, &bot_user, &mut bot, TURN, "the session", |t| {
                t.contains("✓ done")
            })
            .await;
        alice
            .send_file_in_thread(&room, &root, "data.csv", "text/csv", b"a,b\n1,2\n".to_vec())
            .await;
        alice
            .send_file_in_thread(
                &room,
                &root,
                "shot.png",
                "image/png",
                b"\x89PNG\r\n\x1a\nimg".to_vec(),
            )
            .await;
        alice
            .send_in_thread(
                &room,
                &root,
                "run cat inbox/data.csv; wc -c < inbox/shot.png",
            )
            .await;
        alice
            .wait_thread(&root, &bot_user, &mut bot, TURN, "the files read", |t| {
                t.contains("echo: Attached file: /workspace/inbox/data.csv")
                    && t.contains("echo: Attached file: /workspace/inbox/shot.png")
                    && t.lines().any(|l| l.trim() == "1,2")
                    && t.lines().any(|l| l.trim() == "11")
                    && t.contains("echo: [image image/png, 11 bytes]")
            })
            .await;
        alice
            .send_file_in_thread(&room, &root, "big.log", "text/plain", vec![b'x'; 5000])
            .await;
        alice
            .send_in_thread(&room, &root, "!fm get inbox/data.csv")
            .await;
        alice.send_in_thread(&room, &root, "!fm get inbox").await;
        alice
            .send_in_thread(&room, &root, "!fm get ../../etc/passwd")
            .await;
        let text = alice
            .wait_thread(&root, &bot_user, &mut bot, TURN, "the refusals", |t| {
                t.contains("more than sessions.max_attachment_size")
                    && t.contains("is outside /workspace (it leads to /etc/passwd)")
            })
            .await;
        assert!(text.contains("big.log"), "{text}");
        let mut files = Vec::new();
        for _ in 0..120 {
            files = alice
                .messages_from(&room, &bot_user)
                .into_iter()
                .filter(|s| {
                    s.content["msgtype"] == "m.file"
                        && s.content["m.relates_to"]["event_id"] == root.as_str()
                })
                .collect();
            if files.len() >= 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let named = |n: &str| files.iter().find(|f| f.content["body"] == n).cloned();
        let csv = named("data.csv").unwrap_or_else(|| panic!("no data.csv in {files:#?}"));
        assert_eq!(alice.download(&csv.content).await, b"a,b\n1,2\n");
        let tar = named("inbox.tar.gz").unwrap_or_else(|| panic!("no inbox.tar.gz in {files:#?}"));
        assert!(
            alice
                .download(&tar.content)
                .await
                .starts_with(&[0x1f, 0x8b])
        );
        assert_eq!(csv.encrypted, encrypted, "{csv:?}");
    }
    bot.assert_running();
}

/// The event id of the message of the bot in the thread of `root` whose text contains
/// `needle`, once there is one.
async fn message_with(
    who: &Person,
    root: &str,
    bot_user: &crate::support::synapse::User,
    bot: &mut Service,
    needle: &str,
) -> String {
    who.wait_thread(root, bot_user, bot, TURN, needle, |t| t.contains(needle))
        .await;
    who.thread(root, bot_user)
        .into_iter()
        .find(|m| m.body.contains(needle))
        .map(|m| m.event_id)
        .expect("the message")
}

/// Approvals in Matrix threads, in a plain and an encrypted room: a reaction approves,
/// a reply `always` approves for the session, a reaction denies, and a reaction of
/// someone not allowed is refused in the thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matrix_approvals_by_reaction_and_reply() {
    let Some(syn) = Synapse::main() else {
        return;
    };
    let bot_user = syn.register("bot").await;
    let alice_user = syn.register("alice").await;
    let bob_user = syn.register("bob").await;
    let Some(env) = Env::new(&format!(
        "permission_mode = \"ask\"\n{}",
        syn.matrix_table(&bot_user, &[&alice_user])
    )) else {
        return;
    };
    let alice = Person::login(&syn, &alice_user).await;
    let bob = Person::login(&syn, &bob_user).await;
    let mut bot = start_bot(&env, &bot_user);
    for encrypted in [false, true] {
        let room = alice.room_with_bot(encrypted, &bot_user, &[&bob]).await;
        let root = alice
            .send(
                &room,
                "!fm new ask Bash echo reacted-ran\nask Bash echo replied-ran\nask Bash echo unasked-ran\nask Edit echo denied-ran",
            )
            .await;
        let first = message_with(
            &alice,
            &root,
            &bot_user,
            &mut bot,
            "🔐 Approve Bash: echo reacted-ran?",
        )
        .await;
        // Bob may not answer: told in the thread; the approval still waits.
        bob.react(&room, &first, "✅").await;
        alice
            .wait_thread(&root, &bot_user, &mut bot, TURN, "the refusal", |t| {
                t.contains("only the session's requester")
            })
            .await;
        alice.react(&room, &first, "✅").await;
        let t = alice
            .wait_thread(&root, &bot_user, &mut bot, TURN, "the approval", |t| {
                t.contains(&format!("✅ approved by {}", alice_user.user_id))
                    && t.lines().any(|l| l.trim() == "reacted-ran")
            })
            .await;
        assert!(
            !t.contains("🔐 Approve Bash: echo reacted-ran?"),
            "the question was not edited:\n{t}"
        );
        // A reply in the thread: approve for the session; Bash asks no more.
        message_with(
            &alice,
            &root,
            &bot_user,
            &mut bot,
            "🔐 Approve Bash: echo replied-ran?",
        )
        .await;
        alice.send_in_thread(&room, &root, "always").await;
        alice
            .wait_thread(
                &root,
                &bot_user,
                &mut bot,
                TURN,
                "approve for the session",
                |t| {
                    t.contains("♾️ approved for this session by")
                        && t.lines().any(|l| l.trim() == "unasked-ran")
                },
            )
            .await;
        // A reaction denies.
        let last = message_with(
            &alice,
            &root,
            &bot_user,
            &mut bot,
            "🔐 Approve Edit: echo denied-ran?",
        )
        .await;
        alice.react(&room, &last, "❌").await;
        let t = alice
            .wait_thread(&root, &bot_user, &mut bot, TURN, "the denial", |t| {
                t.contains(&format!("❌ denied by {}", alice_user.user_id)) && t.contains("✓ done")
            })
            .await;
        assert!(!t.contains("🔐 Approve Bash: echo unasked-ran?"), "{t}");
        assert!(!t.lines().any(|l| l.trim() == "denied-ran"), "{t}");
        assert_eq!(count_lines(&t, "reacted-ran"), 1, "{t}");
        if encrypted {
            let thread = alice.thread(&root, &bot_user);
            assert!(thread.iter().all(|m| m.encrypted), "{thread:#?}");
        }
        alice.send_in_thread(&room, &root, "!fm stop").await;
        alice
            .wait_thread(&root, &bot_user, &mut bot, TURN, "the stop", |t| {
                t.contains("⏹ stopped")
            })
            .await;
    }
}
