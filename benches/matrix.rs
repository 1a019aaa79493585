//! The Matrix front end end to end (see benches/README.md): the real `firstmate run` as
//! the bot, a real Synapse on loopback (scripts/start-synapse, the instance with raised
//! rate limits), the real Docker daemon and the test agent, a matrix-sdk client as the
//! person.
//!
//!   eval "$(scripts/start-synapse)" && cargo bench --bench matrix
//!
//! 1. Command to first output: `!fm new say hi-N` sent by the person until the thread
//!    shows `hi-N`, for N sessions (default 20, FIRSTMATE_BENCH_SESSIONS); also the time
//!    to the thread's first event (the status message).
//! 2. Matrix events per 1,000 lines of agent output: `flood 1000` and `flood 10000`,
//!    counting every event the bot sends for the session (posts and edits).
//! 3. Lag from an agent line to the person seeing it, 20 sessions streaming at once
//!    (each 20 lines, 0.5 s apart): the line's time is its Docker log timestamp, the
//!    person's is when its client got the first event (post or edit) holding the line.
//! 4. Approval latency: `ask Bash ...` (the agent asks, `permission_mode = "ask"`) until
//!    the person's client got the approval message: from the request's Docker log
//!    timestamp, for 10 sessions one after another.

#[path = "common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use matrix_sdk::config::SyncSettings;
use matrix_sdk::event_handler::RawEvent;
use matrix_sdk::room::Room;
use matrix_sdk::ruma::api::client::room::create_room::v3::Request as CreateRoom;
use matrix_sdk::ruma::events::room::message::OriginalSyncRoomMessageEvent;
use matrix_sdk::ruma::{OwnedRoomId, OwnedUserId};
use matrix_sdk::{Client, RoomMemberships};
use serde_json::{Value, json};

/// One event the person's client got.
#[derive(Clone)]
struct Got {
    /// Unix time (ns) when the client got it.
    at_ns: i128,
    at: Instant,
    sender: String,
    content: Value,
    event_id: String,
}

struct Person {
    client: Client,
    got: Arc<Mutex<Vec<Got>>>,
}

fn unix_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0)
}

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return; // `cargo test --benches` probes; nothing to list.
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(bench());
}

async fn bench() {
    let (url, secret) = match (
        std::env::var("FIRSTMATE_TEST_SYNAPSE_URL"),
        std::env::var("FIRSTMATE_TEST_SYNAPSE_SECRET"),
    ) {
        (Ok(u), Ok(s)) => (u, s),
        _ => {
            panic!("the Matrix benchmark needs a Synapse: eval \"$(scripts/start-synapse)\" first")
        }
    };
    let n: usize = std::env::var("FIRSTMATE_BENCH_SESSIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let (bot_id, bot_pw) = register(&url, &secret, "benchbot").await;
    let (person_id, person_pw) = register(&url, &secret, "benchperson").await;

    let dir = tempfile::tempdir().expect("tempdir");
    let instance = common::new_instance();
    let config = dir.path().join("bot.toml");
    let matrix = format!(
        "[matrix]\nhomeserver_url = \"{url}\"\nuser_id = \"{bot_id}\"\npassword_env = \"BENCH_MATRIX_PASSWORD\"\n\
         store_path = \"matrix-store\"\ncommand_prefix = \"!fm\"\nallowed_users = [\"{person_id}\"]\n"
    );
    let tables = common::Tables {
        sessions: "max_running = 1000\nmax_running_per_user = 1000\n",
        agent: "permission_mode = \"ask\"\n",
        rest: &matrix,
        ..Default::default()
    };
    let text = common::config_text(&common::sqlite_url(dir.path()), &instance, tables);
    std::fs::write(&config, text).expect("config");
    let log = std::fs::File::create(dir.path().join("bot.log")).expect("log");
    let mut bot = Command::new(env!("CARGO_BIN_EXE_firstmate"))
        .arg("run")
        .env("FIRSTMATE_CONFIG", &config)
        .env("BENCH_MATRIX_PASSWORD", &bot_pw)
        .env("FIRSTMATE_LOG", "warn")
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("firstmate run");

    let person = Person::login(&url, &person_id, &person_pw).await;
    let room = person.create_room(&bot_id).await;
    person.wait_joined(&room, &bot_id).await;

    // --- 1. command to first output ------------------------------------------------
    let mut first_event = Vec::new();
    let mut first_output = Vec::new();
    for i in 0..n {
        let t = Instant::now();
        let root = person
            .send(&room, &format!("!fm new say hi-{i}"), None)
            .await;
        let needle = format!("hi-{i}");
        let mut status_at = None;
        loop {
            let thread = person.thread(&root, &bot_id);
            if status_at.is_none() && !thread.is_empty() {
                status_at = Some(thread[0].1);
            }
            if let Some((_, at)) = person
                .events_in_thread(&root, &bot_id)
                .into_iter()
                .find(|(body, _)| body.lines().any(|l| l == needle))
            {
                first_output.push(at - t);
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(120),
                "no {needle} in the thread"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        first_event.push(status_at.unwrap_or_else(Instant::now) - t);
    }

    // --- 2. events per 1,000 lines --------------------------------------------------
    let mut flood_results = Vec::new();
    for lines in [1000usize, 10_000] {
        let t = Instant::now();
        let root = person
            .send(&room, &format!("!fm new flood {lines}"), None)
            .await;
        let last = format!("line {lines}/{lines}");
        loop {
            let text = person.thread_text(&root, &bot_id);
            if text.contains(&last) && text.contains("✓ done") {
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(600),
                "flood {lines} did not end"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Let the status settle, then count.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let (posts, edits) = person.count_events(&root, &bot_id);
        let text = person.thread_text(&root, &bot_id);
        let got = text.lines().filter(|l| l.starts_with("line ")).count();
        assert_eq!(got, lines, "every line once");
        flood_results.push((lines, posts, edits, t.elapsed()));
    }

    // --- 3. lag at 20 sessions streaming at once ------------------------------------
    let streams = 20;
    let per = 20;
    let start_at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        + 45;
    let mut roots = Vec::new();
    for j in 0..streams {
        let mut prompt =
            format!("!fm new run while [ $(date +%s) -lt {start_at} ]; do sleep 0.05; done\n");
        for k in 1..=per {
            prompt.push_str(&format!("say s{j} line {k}\n"));
            if k < per {
                prompt.push_str("sleep 500ms\n");
            }
        }
        roots.push(person.send(&room, prompt.trim_end(), None).await);
    }
    let t = Instant::now();
    loop {
        let done = roots
            .iter()
            .filter(|r| person.thread_text(r, &bot_id).contains("✓ done"))
            .count();
        if done == streams {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(300),
            "the 20 streams did not end"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // When each line was written: its Docker log timestamp.
    let mut written: HashMap<String, i128> = HashMap::new();
    for root in &roots {
        let thread = person.thread(root, &bot_id);
        let status = &thread[0].0;
        let id = status
            .split_whitespace()
            .nth(2)
            .expect("the status names the session");
        for (line, ns) in docker_line_times(id) {
            written.insert(line, ns);
        }
    }
    let mut lags = Vec::new();
    for (j, root) in roots.iter().enumerate() {
        let evs = person.events_in_thread_ns(root, &bot_id);
        for k in 1..=per {
            let line = format!("s{j} line {k}");
            let Some(w) = written.get(&line) else {
                panic!("no Docker timestamp for {line:?}");
            };
            let seen = evs
                .iter()
                .filter(|(body, _)| body.lines().any(|l| l == line))
                .map(|(_, ns)| *ns)
                .min()
                .unwrap_or_else(|| panic!("{line:?} never reached the person"));
            lags.push(Duration::from_nanos((seen - w).max(0) as u64));
        }
    }

    // --- 4. approval latency -----------------------------------------------------------
    let mut approval_lags = Vec::new();
    for i in 0..10 {
        let command = format!("echo appr-{i}");
        let root = person
            .send(&room, &format!("!fm new ask Bash {command}"), None)
            .await;
        let question = format!("🔐 Approve Bash: {command}?");
        let t = Instant::now();
        let seen = loop {
            if let Some((_, ns)) = person
                .events_in_thread_ns(&root, &bot_id)
                .into_iter()
                .find(|(body, _)| body.contains(&question))
            {
                break ns;
            }
            assert!(t.elapsed() < Duration::from_secs(120), "no {question}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let thread = person.thread(&root, &bot_id);
        let id = thread[0]
            .0
            .split_whitespace()
            .nth(2)
            .expect("the status names the session")
            .to_string();
        let asked = common::request_times(&id)
            .into_iter()
            .find(|(c, _)| *c == command)
            .map(|(_, ns)| ns)
            .expect("the request in the agent's log");
        approval_lags.push(Duration::from_nanos((seen - asked).max(0) as u64));
    }

    // --- cleanup ----------------------------------------------------------------------
    let _ = bot.kill();
    let _ = bot.wait();
    common::cleanup_docker(&instance);

    println!("Matrix front end, Synapse on 127.0.0.1 (raised rate limits), {n} sessions");
    println!(
        "command to first output in the thread: median {:.0} ms, p95 {:.0} ms",
        common::ms(common::percentile(&mut first_output, 50)),
        common::ms(common::percentile(&mut first_output, 95))
    );
    println!(
        "command to the thread's first event (status): median {:.0} ms, p95 {:.0} ms",
        common::ms(common::percentile(&mut first_event, 50)),
        common::ms(common::percentile(&mut first_event, 95))
    );
    for (lines, posts, edits, took) in flood_results {
        println!(
            "flood {lines}: {} Matrix events ({posts} messages, {edits} edits) = {:.1} events per 1,000 lines; {:.1} s to the turn's end",
            posts + edits,
            (posts + edits) as f64 * 1000.0 / lines as f64,
            took.as_secs_f64()
        );
    }
    println!(
        "lag from agent line to Matrix event, {streams} sessions streaming at once ({} lines): median {:.0} ms, p95 {:.0} ms, max {:.0} ms",
        lags.len(),
        common::ms(common::percentile(&mut lags, 50)),
        common::ms(common::percentile(&mut lags, 95)),
        common::ms(common::percentile(&mut lags, 100))
    );
    println!(
        "approval request to the person's client getting the approval message ({} sessions): median {:.0} ms, p95 {:.0} ms, max {:.0} ms",
        approval_lags.len(),
        common::ms(common::percentile(&mut approval_lags, 50)),
        common::ms(common::percentile(&mut approval_lags, 95)),
        common::ms(common::percentile(&mut approval_lags, 100))
    );
}

impl Person {
    async fn login(url: &str, user: &str, password: &str) -> Person {
        let client = Client::builder()
            .homeserver_url(url)
            .build()
            .await
            .expect("client");
        client
            .matrix_auth()
            .login_username(user, password)
            .send()
            .await
            .expect("login");
        let got: Arc<Mutex<Vec<Got>>> = Arc::default();
        let g = got.clone();
        client.add_event_handler(
            move |_ev: OriginalSyncRoomMessageEvent, _room: Room, raw: RawEvent| {
                let g = g.clone();
                async move {
                    let v: Value = serde_json::from_str(raw.0.get()).unwrap_or_default();
                    g.lock().unwrap().push(Got {
                        at_ns: unix_ns(),
                        at: Instant::now(),
                        sender: v["sender"].as_str().unwrap_or_default().to_string(),
                        content: v["content"].clone(),
                        event_id: v["event_id"].as_str().unwrap_or_default().to_string(),
                    });
                }
            },
        );
        client
            .sync_once(
                SyncSettings::new()
                    .timeout(Duration::ZERO)
                    .filter(big_timeline()),
            )
            .await
            .expect("first sync");
        let c = client.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let _ = c
                    .sync(
                        SyncSettings::new()
                            .timeout(Duration::from_secs(10))
                            .filter(big_timeline()),
                    )
                    .await;
            });
        });
        Person { client, got }
    }

    async fn create_room(&self, invite: &str) -> OwnedRoomId {
        let mut req = CreateRoom::new();
        req.invite = vec![OwnedUserId::try_from(invite).expect("user id")];
        self.client
            .create_room(req)
            .await
            .expect("create room")
            .room_id()
            .to_owned()
    }

    async fn wait_joined(&self, room: &OwnedRoomId, user: &str) {
        let t = Instant::now();
        loop {
            if let Some(r) = self.client.get_room(room)
                && let Ok(m) = r.members_no_sync(RoomMemberships::JOIN).await
                && m.iter().any(|m| m.user_id().as_str() == user)
            {
                return;
            }
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "the bot did not join"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn send(&self, room: &OwnedRoomId, body: &str, root: Option<&str>) -> String {
        let mut content = json!({"msgtype": "m.text", "body": body});
        if let Some(root) = root {
            content["m.relates_to"] = json!({"rel_type": "m.thread", "event_id": root});
        }
        self.client
            .get_room(room)
            .expect("room")
            .send_raw("m.room.message", content)
            .await
            .expect("send")
            .response
            .event_id
            .to_string()
    }

    fn of(&self, from: &str) -> Vec<Got> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .filter(|g| g.sender == from)
            .cloned()
            .collect()
    }

    /// Thread messages (final text, first seen) of `from` under `root`.
    fn thread(&self, root: &str, from: &str) -> Vec<(String, Instant)> {
        let got = self.of(from);
        let mut msgs: Vec<(String, String, Instant)> = got
            .iter()
            .filter(|g| {
                g.content["m.relates_to"]["rel_type"] == "m.thread"
                    && g.content["m.relates_to"]["event_id"] == root
            })
            .map(|g| {
                (
                    g.event_id.clone(),
                    g.content["body"].as_str().unwrap_or_default().to_string(),
                    g.at,
                )
            })
            .collect();
        for g in &got {
            let rel = &g.content["m.relates_to"];
            if rel["rel_type"] == "m.replace"
                && let Some(m) = msgs.iter_mut().find(|m| rel["event_id"] == m.0.as_str())
            {
                m.1 = g.content["m.new_content"]["body"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
            }
        }
        msgs.into_iter().map(|(_, b, at)| (b, at)).collect()
    }

    fn thread_text(&self, root: &str, from: &str) -> String {
        self.thread(root, from)
            .into_iter()
            .map(|(b, _)| b)
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Every event of the thread (posts and edits), with its text and when it came.
    fn thread_events(&self, root: &str, from: &str) -> Vec<(String, Instant, i128)> {
        let got = self.of(from);
        let ids: Vec<String> = got
            .iter()
            .filter(|g| {
                g.content["m.relates_to"]["rel_type"] == "m.thread"
                    && g.content["m.relates_to"]["event_id"] == root
            })
            .map(|g| g.event_id.clone())
            .collect();
        got.iter()
            .filter_map(|g| {
                let rel = &g.content["m.relates_to"];
                if ids.contains(&g.event_id) {
                    Some((
                        g.content["body"].as_str().unwrap_or_default().to_string(),
                        g.at,
                        g.at_ns,
                    ))
                } else if rel["rel_type"] == "m.replace"
                    && ids.iter().any(|i| rel["event_id"] == i.as_str())
                {
                    Some((
                        g.content["m.new_content"]["body"]
                            .as_str()
                            .unwrap_or_default()
                            .to_string(),
                        g.at,
                        g.at_ns,
                    ))
                } else {
                    None
                }
            })
            .collect()
    }

    fn events_in_thread(&self, root: &str, from: &str) -> Vec<(String, Instant)> {
        self.thread_events(root, from)
            .into_iter()
            .map(|(b, at, _)| (b, at))
            .collect()
    }

    fn events_in_thread_ns(&self, root: &str, from: &str) -> Vec<(String, i128)> {
        self.thread_events(root, from)
            .into_iter()
            .map(|(b, _, ns)| (b, ns))
            .collect()
    }

    /// (messages, edits) the bot sent for the thread, the status message included.
    fn count_events(&self, root: &str, from: &str) -> (usize, usize) {
        let events = self.thread_events(root, from);
        let posts = self.thread(root, from).len();
        (posts, events.len() - posts)
    }
}

async fn register(url: &str, secret: &str, name: &str) -> (String, String) {
    let http = reqwest::Client::new();
    let endpoint = format!("{url}/_synapse/admin/v1/register");
    let nonce: Value = http
        .get(&endpoint)
        .send()
        .await
        .expect("nonce")
        .json()
        .await
        .expect("nonce JSON");
    let nonce = nonce["nonce"].as_str().expect("nonce").to_string();
    let username = format!("{name}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let password = uuid::Uuid::new_v4().simple().to_string();
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(secret.as_bytes()).expect("hmac");
    for (i, part) in [nonce.as_str(), &username, &password, "notadmin"]
        .iter()
        .enumerate()
    {
        if i > 0 {
            mac.update(b"\x00");
        }
        mac.update(part.as_bytes());
    }
    let mac: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let body: Value = http
        .post(&endpoint)
        .json(&json!({"nonce": nonce, "username": username, "password": password, "admin": false, "mac": mac}))
        .send()
        .await
        .expect("register")
        .json()
        .await
        .expect("register JSON");
    (
        body["user_id"].as_str().expect("user_id").to_string(),
        password,
    )
}

/// (text of each assistant line, Unix ns of its Docker log timestamp) of a session.
fn docker_line_times(session: &str) -> Vec<(String, i128)> {
    let mut v = Vec::new();
    for (ev, ns) in common::docker_json_lines(session) {
        if ev["type"] != "assistant" {
            continue;
        }
        for p in ev["message"]["content"].as_array().into_iter().flatten() {
            if let Some(text) = p["text"].as_str() {
                v.push((text.to_string(), ns));
            }
        }
    }
    v
}

/// A sync filter that never skips events: a burst of the bot's messages between two syncs
/// must all reach the person.
fn big_timeline() -> matrix_sdk::ruma::api::client::sync::sync_events::v3::Filter {
    use matrix_sdk::ruma::api::client::filter::{FilterDefinition, RoomEventFilter, RoomFilter};
    let mut timeline = RoomEventFilter::default();
    timeline.limit = Some(matrix_sdk::ruma::UInt::from(5000u32));
    let mut room = RoomFilter::default();
    room.timeline = timeline;
    let mut def = FilterDefinition::default();
    def.room = room;
    matrix_sdk::ruma::api::client::sync::sync_events::v3::Filter::FilterDefinition(def)
}
