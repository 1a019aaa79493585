//! A real Synapse for the Matrix tests: `scripts/start-synapse` runs it (two instances:
//! `main` with raised rate limits, `strict` with Synapse's default `rc_message`) and says
//! where in FIRSTMATE_TEST_SYNAPSE_URL / _SECRET (and _STRICT_URL / _STRICT_SECRET).
//! Each test registers fresh users through the shared-secret admin API, so tests run side
//! by side, and drives a second matrix-sdk client acting as the person.
//!
//! With CI=true (or FIRSTMATE_TEST_REQUIRE_DOCKER=1) a missing or silent Synapse fails the
//! test; elsewhere the test is skipped with a loud message.

#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use matrix_sdk::config::SyncSettings;
use matrix_sdk::event_handler::RawEvent;
use matrix_sdk::room::Room;
use matrix_sdk::ruma::api::client::room::create_room::v3::Request as CreateRoom;
use matrix_sdk::ruma::events::AnyInitialStateEvent;
use matrix_sdk::ruma::events::room::encrypted::OriginalSyncRoomEncryptedEvent;
use matrix_sdk::ruma::events::room::message::OriginalSyncRoomMessageEvent;
use matrix_sdk::ruma::serde::Raw;
use matrix_sdk::ruma::{OwnedRoomId, OwnedUserId, RoomId};
use matrix_sdk::{Client, RoomMemberships, RoomState};
use serde_json::{Value, json};

use super::Env;
use super::service::Service;

fn required() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
        || std::env::var("FIRSTMATE_TEST_REQUIRE_DOCKER").is_ok_and(|v| v == "1")
}

fn random(n: usize) -> String {
    uuid::Uuid::new_v4().simple().to_string()[..n].to_string()
}

/// One running Synapse.
#[derive(Clone)]
pub struct Synapse {
    pub url: String,
    secret: String,
}

/// A registered account.
#[derive(Clone, Debug)]
pub struct User {
    pub user_id: String,
    pub password: String,
}

impl Synapse {
    /// The instance with raised rate limits, or None (after a loud message) when there is
    /// none and the run does not require it.
    pub fn main() -> Option<Synapse> {
        Synapse::from_env("FIRSTMATE_TEST_SYNAPSE")
    }

    /// The instance with Synapse's default `rc_message` (0.2 messages/s, burst 10).
    pub fn strict() -> Option<Synapse> {
        Synapse::from_env("FIRSTMATE_TEST_SYNAPSE_STRICT")
    }

    fn from_env(var: &str) -> Option<Synapse> {
        let found = match (
            std::env::var(format!("{var}_URL")),
            std::env::var(format!("{var}_SECRET")),
        ) {
            (Ok(url), Ok(secret)) => {
                let s = Synapse { url, secret };
                match s.healthy() {
                    Ok(()) => Ok(s),
                    Err(e) => Err(format!("the Synapse at {} does not answer: {e}", s.url)),
                }
            }
            _ => Err(format!(
                "{var}_URL and {var}_SECRET are not set: run `eval \"$(scripts/start-synapse)\"` (scripts/test does)"
            )),
        };
        match found {
            Ok(s) => Some(s),
            Err(why) if required() => panic!("Synapse is required for this test run: {why}"),
            Err(why) => {
                eprintln!("\n!!! SKIPPING a Matrix integration test: {why} !!!\n");
                None
            }
        }
    }

    fn healthy(&self) -> Result<(), String> {
        let url = format!("{}/health", self.url);
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(async {
                let r = reqwest::Client::new()
                    .get(&url)
                    .timeout(Duration::from_secs(5))
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                if r.status().is_success() {
                    Ok(())
                } else {
                    Err(format!("HTTP {}", r.status()))
                }
            })
        })
        .join()
        .unwrap_or_else(|_| Err("health check panicked".into()))
    }

    /// Registers a fresh user `@<name>-<random>:localhost` with the shared secret.
    pub async fn register(&self, name: &str) -> User {
        let http = reqwest::Client::new();
        let endpoint = format!("{}/_synapse/admin/v1/register", self.url);
        let nonce: Value = http
            .get(&endpoint)
            .send()
            .await
            .expect("GET register nonce")
            .json()
            .await
            .expect("nonce JSON");
        let nonce = nonce["nonce"].as_str().expect("nonce").to_string();
        let username = format!("{name}-{}", random(8));
        let password = random(24);
        let mut mac = Hmac::<sha1::Sha1>::new_from_slice(self.secret.as_bytes()).expect("hmac");
        mac.update(nonce.as_bytes());
        mac.update(b"\x00");
        mac.update(username.as_bytes());
        mac.update(b"\x00");
        mac.update(password.as_bytes());
        mac.update(b"\x00");
        mac.update(b"notadmin");
        let mac: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let resp = http
            .post(&endpoint)
            .json(&json!({
                "nonce": nonce,
                "username": username,
                "password": password,
                "admin": false,
                "mac": mac,
            }))
            .send()
            .await
            .expect("POST register");
        let status = resp.status();
        let body: Value = resp.json().await.expect("register JSON");
        assert!(status.is_success(), "registering {username} failed: {body}");
        User {
            user_id: body["user_id"].as_str().expect("user_id").to_string(),
            password,
        }
    }

    /// Revokes an access token (its device is deleted), as a user would from another
    /// client.
    pub async fn logout(&self, access_token: &str) {
        let r = reqwest::Client::new()
            .post(format!("{}/_matrix/client/v3/logout", self.url))
            .bearer_auth(access_token)
            .json(&json!({}))
            .send()
            .await
            .expect("logout");
        assert!(r.status().is_success(), "logout: {}", r.status());
    }

    /// The `[matrix]` table of a bot logging in as `bot`, with `allowed` allowed.
    pub fn matrix_table(&self, bot: &User, allowed: &[&User]) -> String {
        let allowed: Vec<String> = allowed
            .iter()
            .map(|u| format!("\"{}\"", u.user_id))
            .collect();
        format!(
            "\n[matrix]\nhomeserver_url = \"{}\"\nuser_id = \"{}\"\npassword_env = \"FIRSTMATE_TEST_MATRIX_PASSWORD\"\nstore_path = \"matrix-store\"\ncommand_prefix = \"!fm\"\nallowed_users = [{}]\n",
            self.url,
            bot.user_id,
            allowed.join(", ")
        )
    }
}

/// What the bot logs in the Matrix tests: firstmate in full, matrix-sdk's warnings.
const BOT_LOG: &str = "info,firstmate=debug,matrix_sdk=warn,matrix_sdk::http_client=off,matrix_sdk_base=warn,matrix_sdk_crypto=error";

/// `firstmate run` as the bot `bot`, killed when dropped.
pub fn start_bot(env: &Env, bot: &User) -> Service {
    Service::spawn(
        env,
        BOT_LOG,
        &[("FIRSTMATE_TEST_MATRIX_PASSWORD", &bot.password)],
    )
}

/// A message the person's client saw (decrypted when it was encrypted).
#[derive(Clone, Debug)]
pub struct Seen {
    pub room: String,
    pub event_id: String,
    pub sender: String,
    pub content: Value,
    pub encrypted: bool,
}

/// One message of a thread as it reads after its edits.
#[derive(Clone, Debug)]
pub struct ThreadMessage {
    pub event_id: String,
    pub body: String,
    pub html: String,
    pub msgtype: String,
    pub edits: usize,
    pub encrypted: bool,
}

/// The person: a matrix-sdk client that syncs in the background and records every room
/// message it sees.
pub struct Person {
    pub client: Client,
    pub user: User,
    seen: Arc<Mutex<Vec<Seen>>>,
    undecryptable: Arc<Mutex<usize>>,
    stop_sync: Option<tokio::sync::oneshot::Sender<()>>,
    _store: tempfile::TempDir,
}

impl Drop for Person {
    fn drop(&mut self) {
        if let Some(stop) = self.stop_sync.take() {
            let _ = stop.send(());
        }
    }
}

impl Person {
    pub async fn login(syn: &Synapse, user: &User) -> Person {
        let store = tempfile::tempdir().expect("tempdir");
        let client = Client::builder()
            .homeserver_url(&syn.url)
            .sqlite_store(store.path(), None)
            .build()
            .await
            .expect("person client");
        client
            .matrix_auth()
            .login_username(&user.user_id, &user.password)
            .initial_device_display_name("test person")
            .send()
            .await
            .expect("person login");
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let undecryptable: Arc<Mutex<usize>> = Arc::default();
        let s = seen.clone();
        client.add_event_handler(
            move |_ev: OriginalSyncRoomMessageEvent,
                  room: Room,
                  raw: RawEvent,
                  enc: Option<matrix_sdk::deserialized_responses::EncryptionInfo>| {
                let s = s.clone();
                async move {
                    let v: Value = serde_json::from_str(raw.0.get()).unwrap_or_default();
                    s.lock().unwrap().push(Seen {
                        room: room.room_id().to_string(),
                        event_id: v["event_id"].as_str().unwrap_or_default().to_string(),
                        sender: v["sender"].as_str().unwrap_or_default().to_string(),
                        content: v["content"].clone(),
                        encrypted: enc.is_some(),
                    });
                }
            },
        );
        let u = undecryptable.clone();
        client.add_event_handler(move |_ev: OriginalSyncRoomEncryptedEvent| {
            let u = u.clone();
            async move {
                *u.lock().unwrap() += 1;
            }
        });
        // A first sync uploads the device's keys before anything is sent.
        client
            .sync_once(
                SyncSettings::new()
                    .timeout(Duration::ZERO)
                    .filter(big_timeline()),
            )
            .await
            .expect("first sync");
        // Sync on a thread of its own (its own runtime): the SDK's sync future is too deep
        // for the compiler to prove it `Send` for `tokio::spawn`.
        let c = client.clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                tokio::select! {
                    _ = c.sync(SyncSettings::new()
                        .timeout(Duration::from_secs(10))
                        .filter(big_timeline())) => {}
                    _ = stopped => {}
                }
            });
        });
        Person {
            client,
            user: user.clone(),
            seen,
            undecryptable,
            stop_sync: Some(stop),
            _store: store,
        }
    }

    /// Creates a room (end-to-end encrypted when asked) and invites `invite`.
    pub async fn create_room(&self, encrypted: bool, invite: &[&User]) -> OwnedRoomId {
        let mut req = CreateRoom::new();
        req.invite = invite
            .iter()
            .map(|u| OwnedUserId::try_from(u.user_id.as_str()).expect("user id"))
            .collect();
        req.name = Some(format!("firstmate test {}", random(4)));
        if encrypted {
            let ev = Raw::<AnyInitialStateEvent>::from_json_string(
                json!({
                    "type": "m.room.encryption",
                    "state_key": "",
                    "content": {"algorithm": "m.megolm.v1.aes-sha2"}
                })
                .to_string(),
            )
            .expect("initial state");
            req.initial_state = vec![ev];
        }
        let room = self.client.create_room(req).await.expect("create room");
        room.room_id().to_owned()
    }

    /// A new room of this person's with the bot in it (joined, not only invited) and
    /// `others` joined too: how a Matrix test begins.
    pub async fn room_with_bot(
        &self,
        encrypted: bool,
        bot: &User,
        others: &[&Person],
    ) -> OwnedRoomId {
        let mut invite = vec![bot];
        invite.extend(others.iter().map(|p| &p.user));
        let room = self.create_room(encrypted, &invite).await;
        self.wait_member(&room, bot, Duration::from_secs(60)).await;
        for p in others {
            p.join(&room).await;
        }
        room
    }

    pub async fn join(&self, room: &RoomId) {
        wait_async(Duration::from_secs(30), "the invite to arrive", || async {
            self.client.get_room(room).map(|r| r.state()) == Some(RoomState::Invited)
                || self.client.get_room(room).map(|r| r.state()) == Some(RoomState::Joined)
        })
        .await;
        self.client.join_room_by_id(room).await.expect("join");
    }

    fn room(&self, room: &RoomId) -> Room {
        self.client
            .get_room(room)
            .expect("the person is in the room")
    }

    /// Waits until `user` has joined `room`.
    pub async fn wait_member(&self, room: &RoomId, user: &User, timeout: Duration) {
        let r = self.room(room);
        let uid = OwnedUserId::try_from(user.user_id.as_str()).expect("user id");
        wait_async(timeout, &format!("{} to join", user.user_id), || async {
            r.members_no_sync(RoomMemberships::JOIN)
                .await
                .map(|m| m.iter().any(|m| m.user_id() == uid))
                .unwrap_or(false)
        })
        .await;
    }

    /// Whether `user` is only invited to `room`.
    pub async fn is_invited(&self, room: &RoomId, user: &User) -> bool {
        let r = self.room(room);
        let uid = OwnedUserId::try_from(user.user_id.as_str()).expect("user id");
        r.members_no_sync(RoomMemberships::INVITE)
            .await
            .map(|m| m.iter().any(|m| m.user_id() == uid))
            .unwrap_or(false)
    }

    /// Sends a text message to the room; returns its event id.
    pub async fn send(&self, room: &RoomId, body: &str) -> String {
        self.send_content(room, json!({"msgtype": "m.text", "body": body}))
            .await
    }

    /// Sends a text message in the thread of `root`.
    pub async fn send_in_thread(&self, room: &RoomId, root: &str, body: &str) -> String {
        self.send_content(
            room,
            json!({
                "msgtype": "m.text",
                "body": body,
                "m.relates_to": {
                    "rel_type": "m.thread",
                    "event_id": root,
                    "is_falling_back": true,
                    "m.in_reply_to": {"event_id": root},
                }
            }),
        )
        .await
    }

    /// Sends a file in the thread of `root`, as a client does (encrypted in an
    /// encrypted room); returns its event id.
    pub async fn send_file_in_thread(
        &self,
        room: &RoomId,
        root: &str,
        name: &str,
        mime: &str,
        data: Vec<u8>,
    ) -> String {
        use matrix_sdk::attachment::AttachmentConfig;
        use matrix_sdk::room::reply::{EnforceThread, Reply};
        use matrix_sdk::ruma::events::room::message::{AddMentions, ReplyWithinThread};
        let config = AttachmentConfig::new().reply(Some(Reply {
            event_id: root.try_into().expect("event id"),
            enforce_thread: EnforceThread::Threaded(ReplyWithinThread::No),
            add_mentions: AddMentions::No,
        }));
        let mime: mime::Mime = mime.parse().expect("mime");
        let sent = self
            .room(room)
            .send_attachment(name, &mime, data, config)
            .await
            .expect("send a file");
        sent.event_id.to_string()
    }

    /// The bytes of a file message's media (decrypted when it was encrypted).
    pub async fn download(&self, content: &Value) -> Vec<u8> {
        use matrix_sdk::media::{MediaFormat, MediaRequestParameters};
        use matrix_sdk::ruma::events::room::{EncryptedFile, MediaSource};
        let source = match content["url"].as_str() {
            Some(url) => MediaSource::Plain(url.into()),
            None => MediaSource::Encrypted(Box::new(
                serde_json::from_value::<EncryptedFile>(content["file"].clone()).expect("a file"),
            )),
        };
        self.client
            .media()
            .get_media_content(
                &MediaRequestParameters {
                    source,
                    format: MediaFormat::File,
                },
                false,
            )
            .await
            .expect("download")
    }

    /// Reacts to `event` with `key` (encrypted in an encrypted room, as clients do).
    pub async fn react(&self, room: &RoomId, event: &str, key: &str) -> String {
        let content =
            json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": event, "key": key}});
        let sent = self
            .room(room)
            .send_raw("m.reaction", content)
            .await
            .expect("send a reaction");
        sent.response.event_id.to_string()
    }

    async fn send_content(&self, room: &RoomId, content: Value) -> String {
        let r = self.room(room);
        let sent = r
            .send_raw("m.room.message", content)
            .await
            .expect("send a message");
        sent.response.event_id.to_string()
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn undecryptable(&self) -> usize {
        *self.undecryptable.lock().unwrap()
    }

    /// Messages from `from` in `room` that are not edits.
    pub fn messages_from(&self, room: &RoomId, from: &User) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| s.room == room.as_str() && s.sender == from.user_id)
            .filter(|s| s.content["m.relates_to"]["rel_type"] != "m.replace")
            .collect()
    }

    /// The thread of `root` (event ids are unique across rooms) as `from` posted it: every message with the thread relation,
    /// in order, each as it reads after its last edit.
    pub fn thread(&self, root: &str, from: &User) -> Vec<ThreadMessage> {
        let seen: Vec<Seen> = self
            .seen()
            .into_iter()
            .filter(|s| s.sender == from.user_id)
            .collect();
        let mut out: Vec<ThreadMessage> = Vec::new();
        for s in &seen {
            let rel = &s.content["m.relates_to"];
            if rel["rel_type"] == "m.thread" && rel["event_id"] == root {
                out.push(ThreadMessage {
                    event_id: s.event_id.clone(),
                    body: s.content["body"].as_str().unwrap_or_default().to_string(),
                    html: s.content["formatted_body"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    msgtype: s.content["msgtype"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    edits: 0,
                    encrypted: s.encrypted,
                });
            }
        }
        for s in &seen {
            let rel = &s.content["m.relates_to"];
            if rel["rel_type"] != "m.replace" {
                continue;
            }
            if let Some(m) = out
                .iter_mut()
                .find(|m| rel["event_id"] == m.event_id.as_str())
            {
                let new = &s.content["m.new_content"];
                m.body = new["body"].as_str().unwrap_or_default().to_string();
                m.html = new["formatted_body"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                m.edits += 1;
            }
        }
        out
    }

    /// The thread's text: every message's final body, in order.
    pub fn thread_text(&self, root: &str, from: &User) -> String {
        self.thread(root, from)
            .iter()
            .map(|m| m.body.clone())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Waits until the thread's text satisfies `pred`; fails with the thread and the
    /// bot's log.
    pub async fn wait_thread(
        &self,
        root: &str,
        from: &User,
        bot: &mut Service,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let text = self.thread_text(root, from);
            if pred(&text) {
                return text;
            }
            if Instant::now() > deadline {
                panic!(
                    "the thread did not show {what} within {timeout:?}; it reads:\n{text}\n--- undecryptable events: {}\n--- bot log:\n{}",
                    self.undecryptable(),
                    tail(&bot.log(), 80)
                );
            }
            bot.assert_running();
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits for a message from `from` (in a thread or not) that contains `needle`.
    pub async fn wait_reply(
        &self,
        room: &RoomId,
        from: &User,
        bot: &mut Service,
        needle: &str,
        timeout: Duration,
    ) -> Seen {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.messages_from(room, from).into_iter().find(|s| {
                s.content["body"]
                    .as_str()
                    .is_some_and(|b| b.contains(needle))
            }) {
                return s;
            }
            if Instant::now() > deadline {
                let bodies: Vec<String> = self
                    .messages_from(room, from)
                    .iter()
                    .map(|s| s.content["body"].to_string())
                    .collect();
                panic!(
                    "no reply containing {needle:?} within {timeout:?}; the bot said:\n{}\n--- bot log:\n{}",
                    bodies.join("\n"),
                    tail(&bot.log(), 80)
                );
            }
            bot.assert_running();
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Polls `pred` until it holds, failing after `timeout`.
pub async fn wait_async<F, Fut>(timeout: Duration, what: &str, pred: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !pred().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// How many times `needle` occurs as a whole line of `text`.
pub fn count_lines(text: &str, needle: &str) -> usize {
    text.lines().filter(|l| l.trim() == needle).count()
}

/// `firstmate sessions list --all --json` of the test's instance.
pub fn sessions(env: &Env) -> Vec<Value> {
    let out = env.firstmate(&["sessions", "list", "--all", "--json"]);
    assert!(out.status.success(), "{}", super::text(&out));
    serde_json::from_slice(&out.stdout).expect("sessions JSON")
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
