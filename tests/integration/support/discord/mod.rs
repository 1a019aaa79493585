//! A faithful fake of Discord: the REST API (v10) and the Gateway WebSocket on 127.0.0.1,
//! following Discord's documented behaviour (errors and their codes, interaction deadlines,
//! rate-limit headers and 429s), so the Discord front end is tested against Discord's rules
//! rather than against itself.
//!
//! One guild with one text channel; people are added with [`FakeDiscord::add_member`] and act
//! through the test-side methods (`say`, `slash_command`, `click_button`, ...), which are
//! delivered to the bot over the gateway. What the bot did is read back from the state
//! (`messages`, `threads`, `interaction_responses`, `requests`).
//!
//! It runs on its own thread and tokio runtime (so sync tests can use it) and stops when
//! dropped. All state is behind one mutex; every change wakes [`FakeDiscord::wait_for`].
//!
//! Two ways in for REST: plain HTTP at [`FakeDiscord::base_url`] (serenity's
//! `HttpBuilder::proxy`, which serenity only honours with its ratelimiter disabled), or
//! `https://discord.com` tunnelled through the same port as an HTTP CONNECT proxy with a
//! test certificate ([`FakeDiscord::serenity_http`] builds either), so serenity's own
//! ratelimiter can be tested against the fake's limits.
//!
//! Here: the state, what people do, and the JSON shapes of Discord's objects; [`rest`]
//! answers the REST API, [`gateway`] runs the WebSocket, [`http`] serves REST over HTTP.

mod gateway;
mod http;
mod rest;

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::http::TestServer;
use rest::Upload;

/// Discord's epoch (2015-01-01), the base of snowflake timestamps.
const DISCORD_EPOCH_MS: u64 = 1_420_070_400_000;

/// Gateway intents the fake acts on.
pub const GUILDS: u64 = 1 << 0;
pub const GUILD_MEMBERS: u64 = 1 << 1;
pub const GUILD_MESSAGES: u64 = 1 << 9;
pub const MESSAGE_CONTENT: u64 = 1 << 15;

/// Message flags.
pub const EPHEMERAL: u64 = 1 << 6;

/// How many requests a bucket allows per window.
#[derive(Debug, Clone, Copy)]
pub struct Rate {
    pub limit: u32,
    pub per: Duration,
}

impl Rate {
    pub const fn new(limit: u32, per: Duration) -> Rate {
        Rate { limit, per }
    }
}

/// The fake's limits and timings; `Limits::default()` is Discord's (or real-world) values.
#[derive(Debug, Clone)]
pub struct Limits {
    /// All bot-authenticated requests (interaction endpoints are exempt, as documented).
    pub global: Rate,
    /// `POST` and (separately) `PATCH` of channel messages, per channel.
    pub messages: Rate,
    /// Interaction webhooks (follow-ups, `@original`), per application and token.
    pub webhooks: Rate,
    /// Interaction callbacks, per interaction.
    pub callbacks: Rate,
    /// Every other route, per route and major parameter.
    pub other: Rate,
    /// HELLO's `heartbeat_interval`.
    pub heartbeat_interval: Duration,
    /// The time to answer an interaction (3 s).
    pub interaction_deadline: Duration,
    /// How long an interaction token works for follow-ups (15 min).
    pub token_lifetime: Duration,
    /// Largest attachment (25 MiB).
    pub max_upload: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            global: Rate::new(50, Duration::from_secs(1)),
            messages: Rate::new(5, Duration::from_secs(5)),
            webhooks: Rate::new(5, Duration::from_secs(2)),
            callbacks: Rate::new(5, Duration::from_secs(1)),
            other: Rate::new(50, Duration::from_secs(1)),
            heartbeat_interval: Duration::from_millis(41_250),
            interaction_deadline: Duration::from_secs(3),
            token_lifetime: Duration::from_secs(15 * 60),
            max_upload: 25 * 1024 * 1024,
        }
    }
}

/// A message as the fake holds it (after edits).
#[derive(Debug, Clone)]
pub struct Message {
    pub id: u64,
    pub channel_id: u64,
    pub author_id: u64,
    pub content: String,
    pub embeds: Vec<Value>,
    pub components: Vec<Value>,
    pub attachments: Vec<Attachment>,
    pub flags: u64,
    /// How many times it was edited.
    pub edits: u32,
    /// Discord's message type: 0 default, 19 reply, 20 slash command response.
    pub kind: u64,
    /// `message_reference.message_id`.
    pub reference: Option<u64>,
    /// The interaction it answers (original response or follow-up).
    pub interaction_id: Option<u64>,
    pub mentions: Vec<u64>,
    pub timestamp: String,
    edited_timestamp: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Attachment {
    pub id: u64,
    pub filename: String,
    pub content_type: Option<String>,
    pub description: Option<String>,
    pub bytes: Vec<u8>,
}

#[derive(Debug, Clone)]
pub struct Thread {
    pub id: u64,
    pub parent_id: u64,
    pub name: String,
    /// The message it was started from (its id is the thread's).
    pub message_id: Option<u64>,
    pub owner_id: u64,
    pub auto_archive_duration: u64,
    message_count: u64,
    created: String,
}

/// An interaction delivered to the bot, as the test holds it.
#[derive(Debug, Clone)]
pub struct Interaction {
    pub id: u64,
    pub token: String,
    /// 2 application command, 3 message component, 4 autocomplete.
    pub kind: u64,
    pub channel_id: u64,
    pub user_id: u64,
}

/// One REST request and how it was answered.
#[derive(Debug, Clone)]
pub struct RequestLog {
    pub method: String,
    pub path: String,
    pub status: u16,
    pub at: Instant,
    /// `X-RateLimit-Bucket` of the answer.
    pub bucket: Option<String>,
    /// 429 from the global limit.
    pub global: bool,
    /// The answer's headers (lower-case names).
    pub headers: Vec<(String, String)>,
    /// The answer's body (JSON), if any.
    pub body: Option<Value>,
}

struct MemberRec {
    user_id: u64,
    name: String,
    roles: Vec<u64>,
    bot: bool,
    joined_at: String,
}

struct InteractionRec {
    id: u64,
    token: String,
    kind: u64,
    channel_id: u64,
    created: Instant,
    /// The callback type accepted, if any.
    callback: Option<u64>,
    responses: Vec<Value>,
    original: Option<u64>,
    followups: Vec<u64>,
    /// The message a component was on.
    message_id: Option<u64>,
}

struct Session {
    id: String,
    intents: u64,
    seq: u64,
    /// Every dispatch of the session, for RESUME.
    log: Vec<(u64, Value)>,
    identify: Value,
}

enum Out {
    Frame(Value),
    Close(u16),
}

struct Conn {
    id: u64,
    tx: mpsc::UnboundedSender<Out>,
}

struct Window {
    reset_at: Instant,
    remaining: u32,
}

struct Ids {
    app: u64,
    bot: u64,
    guild: u64,
    channel: u64,
}

struct State {
    /// Where attachments are served (Discord's CDN: `cdn.discordapp.com`).
    cdn: String,
    limits: Limits,
    ids: Ids,
    ws_url: String,
    last_snowflake: u64,
    members: Vec<MemberRec>,
    messages: Vec<Message>,
    threads: Vec<Thread>,
    interactions: Vec<InteractionRec>,
    commands: Vec<Value>,
    guild_commands: Vec<Value>,
    requests: Vec<RequestLog>,
    buckets: HashMap<(String, String), Window>,
    global: Option<Window>,
    session: Option<Session>,
    conn: Option<Conn>,
    identifies: u32,
    resumes: u32,
    /// Bumped on every change, for `wait_for`.
    version: u64,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    conn_ids: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the state and wakes the waiters.
    fn change<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let mut st = self.lock();
        let out = f(&mut st);
        st.version += 1;
        self.changed.notify_all();
        out
    }
}

/// A running fake Discord; stops when dropped.
pub struct FakeDiscord {
    /// REST; the gateway's listener runs on its runtime too.
    server: TestServer,
    shared: Arc<Shared>,
}

impl FakeDiscord {
    /// The `[discord]` table of a bot that talks to this fake and lets `allowed` in; its
    /// token comes from FIRSTMATE_TEST_DISCORD_TOKEN ([`FakeDiscord::TOKEN`]).
    pub fn config(&self, allowed: &[u64]) -> String {
        let users: Vec<String> = allowed.iter().map(u64::to_string).collect();
        format!(
            "\n[discord]\ntoken_env = \"FIRSTMATE_TEST_DISCORD_TOKEN\"\nguild_ids = [{}]\nallowed_users = [{}]\napi_base_url = \"{}\"\n",
            self.guild_id(),
            users.join(", "),
            self.base_url()
        )
    }

    /// Whether a thread has a message of the bot containing `text`.
    pub fn thread_with(&self, text: &str) -> bool {
        self.threads().iter().any(|t| {
            self.messages(t.id)
                .iter()
                .any(|m| m.author_id == self.bot_user_id() && m.content.contains(text))
        })
    }

    /// The only bot token accepted.
    pub const TOKEN: &'static str = "MTEwMDAwMDAwMDAwMDAwMDAwMg.FakeDs.fake-discord-test-token";

    /// The CA of the certificate the CONNECT tunnel presents for `discord.com`.
    pub const CA_PEM: &'static str = http::CA_PEM;

    pub fn start() -> FakeDiscord {
        FakeDiscord::start_with(Limits::default())
    }

    pub fn start_with(limits: Limits) -> FakeDiscord {
        let ws = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the fake gateway");
        ws.set_nonblocking(true).expect("nonblocking");
        let ws_url = format!("ws://{}", ws.local_addr().expect("local addr"));
        let bot = 1_100_000_000_000_000_002;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                limits,
                ids: Ids {
                    app: 1_100_000_000_000_000_001,
                    bot,
                    guild: 1_100_000_000_000_000_003,
                    channel: 1_100_000_000_000_000_004,
                },
                ws_url,
                // Set below, once the server has its port.
                cdn: String::new(),
                last_snowflake: 0,
                members: vec![MemberRec {
                    user_id: bot,
                    name: "firstmate".into(),
                    roles: Vec::new(),
                    bot: true,
                    joined_at: iso8601(SystemTime::now()),
                }],
                messages: Vec::new(),
                threads: Vec::new(),
                interactions: Vec::new(),
                commands: Vec::new(),
                guild_commands: Vec::new(),
                requests: Vec::new(),
                buckets: HashMap::new(),
                global: None,
                session: None,
                conn: None,
                identifies: 0,
                resumes: 0,
                version: 0,
            }),
            changed: Condvar::new(),
            conn_ids: AtomicU64::new(0),
        });
        let server = http::start(shared.clone());
        shared.lock().cdn = format!("{}/cdn", server.url);
        server.spawn(gateway::listen(ws, shared.clone()));
        FakeDiscord { server, shared }
    }

    /// `http://127.0.0.1:PORT`: serenity's `HttpBuilder::proxy`, or a CONNECT proxy for
    /// `https://discord.com`.
    pub fn base_url(&self) -> String {
        self.server.url.clone()
    }

    /// The gateway's `ws://127.0.0.1:PORT`.
    pub fn gateway_url(&self) -> String {
        self.shared.lock().ws_url.clone()
    }

    /// A serenity `Http` for the fake. With `ratelimiter`, requests go to
    /// `https://discord.com` through the fake as a CONNECT proxy (serenity's ratelimiter
    /// ignores `HttpBuilder::proxy`); without, to `base_url` in plain HTTP.
    pub fn serenity_http(&self, token: &str, ratelimiter: bool) -> serenity::http::Http {
        let b = serenity::http::HttpBuilder::new(token);
        if ratelimiter {
            let client = reqwest012::Client::builder()
                .use_rustls_tls()
                .proxy(reqwest012::Proxy::https(self.base_url()).expect("proxy url"))
                .add_root_certificate(
                    reqwest012::Certificate::from_pem(FakeDiscord::CA_PEM.as_bytes())
                        .expect("CA pem"),
                )
                .build()
                .expect("reqwest client");
            b.client(client).build()
        } else {
            b.proxy(self.base_url()).ratelimiter_disabled(true).build()
        }
    }

    pub fn application_id(&self) -> u64 {
        self.shared.lock().ids.app
    }

    pub fn bot_user_id(&self) -> u64 {
        self.shared.lock().ids.bot
    }

    pub fn guild_id(&self) -> u64 {
        self.shared.lock().ids.guild
    }

    /// The guild's text channel (type 0).
    pub fn channel_id(&self) -> u64 {
        self.shared.lock().ids.channel
    }

    /// Adds a person to the guild, with role ids (roles are made as needed).
    pub fn add_member(&self, user_id: u64, name: &str, roles: &[u64]) {
        self.shared.change(|st| {
            st.members.retain(|m| m.user_id != user_id);
            st.members.push(MemberRec {
                user_id,
                name: name.into(),
                roles: roles.to_vec(),
                bot: false,
                joined_at: iso8601(SystemTime::now()),
            });
            let member = st.member_json(user_id, false);
            let mut d = member;
            d["guild_id"] = json!(st.ids.guild.to_string());
            st.dispatch("GUILD_MEMBER_ADD", d);
        });
    }

    /// A person uses `/name subcommand option:value...` (`subcommand` empty for a command
    /// without subcommands). Panics if the bot has not registered the command, as a person
    /// could not use it.
    pub fn slash_command(
        &self,
        user_id: u64,
        channel_id: u64,
        name: &str,
        subcommand: &str,
        options: &[(&str, Value)],
    ) -> Interaction {
        self.shared.change(|st| {
            let data = st.command_data(name, subcommand, options, None);
            st.interaction(2, user_id, channel_id, data, None)
        })
    }

    /// Discord asks the bot for autocomplete choices while a person types `partial` into
    /// `focused_option`.
    pub fn autocomplete(
        &self,
        user_id: u64,
        channel_id: u64,
        name: &str,
        subcommand: &str,
        focused_option: &str,
        partial: &str,
    ) -> Interaction {
        self.shared.change(|st| {
            let data = st.command_data(name, subcommand, &[], Some((focused_option, partial)));
            st.interaction(4, user_id, channel_id, data, None)
        })
    }

    /// A person clicks the button `custom_id` on a message; panics if there is no such
    /// button there.
    pub fn click_button(
        &self,
        user_id: u64,
        channel_id: u64,
        message_id: u64,
        custom_id: &str,
    ) -> Interaction {
        self.shared.change(|st| {
            let m = st
                .messages
                .iter()
                .find(|m| m.id == message_id && m.channel_id == channel_id)
                .unwrap_or_else(|| panic!("no message {message_id} in channel {channel_id}"));
            assert!(
                m.components.iter().any(|c| has_button(c, custom_id)),
                "message {message_id} has no button {custom_id:?}: {:?}",
                m.components
            );
            let data = json!({"custom_id": custom_id, "component_type": 2});
            st.interaction(3, user_id, channel_id, data, Some(message_id))
        })
    }

    /// A person posts `content` in a channel or thread; the message id.
    pub fn say(&self, user_id: u64, channel_id: u64, content: &str) -> u64 {
        self.shared.change(|st| {
            assert!(
                st.members.iter().any(|m| m.user_id == user_id),
                "user {user_id} is not a member: add_member first"
            );
            assert!(
                st.channel_kind(channel_id).is_some(),
                "no channel {channel_id}"
            );
            let data = json!({"content": content});
            st.create_message(channel_id, user_id, &data, Vec::new(), 0, None)
        })
    }

    /// A person posts `content` with files attached (name, bytes); the message id. The
    /// files are served at their attachment `url`, as Discord's CDN serves them.
    pub fn say_with_files(
        &self,
        user_id: u64,
        channel_id: u64,
        content: &str,
        files: Vec<(String, Vec<u8>)>,
    ) -> u64 {
        self.shared.change(|st| {
            let data = json!({"content": content});
            let uploads = files
                .into_iter()
                .enumerate()
                .map(|(i, (name, bytes))| Upload {
                    index: i as u64,
                    filename: name,
                    content_type: Some("application/octet-stream".into()),
                    bytes,
                })
                .collect();
            st.create_message(channel_id, user_id, &data, uploads, 0, None)
        })
    }

    /// The messages of a channel or thread in order, as they are now (ephemeral ones
    /// included, with flag 64).
    pub fn messages(&self, channel_id: u64) -> Vec<Message> {
        let st = self.shared.lock();
        st.messages
            .iter()
            .filter(|m| m.channel_id == channel_id)
            .cloned()
            .collect()
    }

    pub fn message(&self, id: u64) -> Option<Message> {
        let st = self.shared.lock();
        st.messages.iter().find(|m| m.id == id).cloned()
    }

    pub fn threads(&self) -> Vec<Thread> {
        self.shared.lock().threads.clone()
    }

    /// The callback bodies accepted for an interaction.
    pub fn interaction_responses(&self, i: &Interaction) -> Vec<Value> {
        let st = self.shared.lock();
        st.interactions
            .iter()
            .find(|r| r.id == i.id)
            .map(|r| r.responses.clone())
            .unwrap_or_default()
    }

    /// The message the callback made (or a PATCH of `@original` edited).
    pub fn original_response(&self, i: &Interaction) -> Option<Message> {
        let st = self.shared.lock();
        let id = st.interactions.iter().find(|r| r.id == i.id)?.original?;
        st.messages.iter().find(|m| m.id == id).cloned()
    }

    /// The follow-up messages of an interaction.
    pub fn followups(&self, i: &Interaction) -> Vec<Message> {
        let st = self.shared.lock();
        let Some(r) = st.interactions.iter().find(|r| r.id == i.id) else {
            return Vec::new();
        };
        r.followups
            .iter()
            .filter_map(|id| st.messages.iter().find(|m| m.id == *id).cloned())
            .collect()
    }

    /// Global and guild commands as registered (guild ones carry `guild_id`).
    pub fn registered_commands(&self) -> Vec<Value> {
        let st = self.shared.lock();
        st.commands
            .iter()
            .chain(&st.guild_commands)
            .cloned()
            .collect()
    }

    pub fn requests(&self) -> Vec<RequestLog> {
        self.shared.lock().requests.clone()
    }

    pub fn count_429(&self) -> usize {
        let st = self.shared.lock();
        st.requests.iter().filter(|r| r.status == 429).count()
    }

    /// The requests answered 429, a line each (method, path, bucket, global), for
    /// assertion messages.
    pub fn list_429(&self) -> String {
        let st = self.shared.lock();
        st.requests
            .iter()
            .filter(|r| r.status == 429)
            .map(|r| {
                format!(
                    "{} {} bucket {:?} global {}: {:?}",
                    r.method, r.path, r.bucket, r.global, r.body
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Waits until `what` holds (re-checked on every change); false after `timeout`.
    pub fn wait_for(&self, timeout: Duration, what: impl Fn(&FakeDiscord) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let seen = self.shared.lock().version;
            if what(self) {
                return true;
            }
            let st = self.shared.lock();
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            if st.version == seen {
                let wait = left.min(Duration::from_millis(250));
                drop(self.shared.changed.wait_timeout(st, wait));
            }
        }
    }

    /// A gateway session is READY and connected.
    pub fn identified(&self) -> bool {
        let st = self.shared.lock();
        st.session.is_some() && st.conn.is_some()
    }

    /// The intents of the current session's IDENTIFY.
    pub fn intents(&self) -> Option<u64> {
        self.shared.lock().session.as_ref().map(|s| s.intents)
    }

    /// The `d` of the current session's IDENTIFY.
    pub fn identify_payload(&self) -> Option<Value> {
        let st = self.shared.lock();
        st.session.as_ref().map(|s| s.identify.clone())
    }

    /// How many IDENTIFYs and successful RESUMEs the gateway has seen.
    pub fn gateway_counts(&self) -> (u32, u32) {
        let st = self.shared.lock();
        (st.identifies, st.resumes)
    }

    /// The dispatches of the current session (`t`, `d`), in order.
    pub fn dispatched(&self) -> Vec<(String, Value)> {
        let st = self.shared.lock();
        st.session
            .iter()
            .flat_map(|s| &s.log)
            .map(|(_, f)| (f["t"].as_str().unwrap_or("").to_string(), f["d"].clone()))
            .collect()
    }

    /// Closes the gateway connection with 4000 (the session can be resumed).
    pub fn drop_gateway(&self) {
        self.shared.change(|st| {
            if let Some(c) = st.conn.take() {
                let _ = c.tx.send(Out::Close(4000));
            }
        });
    }
}

fn has_button(component: &Value, custom_id: &str) -> bool {
    if component["type"] == 2 && component["custom_id"] == custom_id {
        return true;
    }
    component["components"]
        .as_array()
        .is_some_and(|cs| cs.iter().any(|c| has_button(c, custom_id)))
}

impl State {
    // -----------------------------------------------------------------------------------
    // Snowflakes and lookups

    fn snowflake(&mut self) -> u64 {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as u64;
        let id = (ms.saturating_sub(DISCORD_EPOCH_MS) << 22).max(self.last_snowflake + 1);
        self.last_snowflake = id;
        id
    }

    /// 0 for the text channel, 11 for a thread.
    fn channel_kind(&self, id: u64) -> Option<u64> {
        if id == self.ids.channel {
            Some(0)
        } else if self.threads.iter().any(|t| t.id == id) {
            Some(11)
        } else {
            None
        }
    }

    fn member(&self, user_id: u64) -> Option<&MemberRec> {
        self.members.iter().find(|m| m.user_id == user_id)
    }

    fn name_of(&self, user_id: u64) -> String {
        self.member(user_id)
            .map(|m| m.name.clone())
            .unwrap_or_else(|| format!("user{user_id}"))
    }

    // -----------------------------------------------------------------------------------
    // JSON shapes, as Discord documents them

    fn user_json(&self, id: u64) -> Value {
        let bot = self.member(id).is_some_and(|m| m.bot);
        let name = self.name_of(id);
        json!({
            "id": id.to_string(),
            "username": name,
            "discriminator": "0",
            "global_name": if bot { Value::Null } else { json!(name) },
            "avatar": null,
            "bot": bot,
            "system": false,
            "banner": null,
            "accent_color": null,
            "public_flags": 0,
            "flags": 0,
        })
    }

    /// A guild member; `with_permissions` as in interactions.
    fn member_json(&self, user_id: u64, with_permissions: bool) -> Value {
        let (roles, joined) = match self.member(user_id) {
            Some(m) => (m.roles.clone(), m.joined_at.clone()),
            None => (Vec::new(), iso8601(SystemTime::now())),
        };
        let mut j = json!({
            "user": self.user_json(user_id),
            "nick": null,
            "avatar": null,
            "banner": null,
            "roles": roles.iter().map(u64::to_string).collect::<Vec<_>>(),
            "joined_at": joined,
            "premium_since": null,
            "deaf": false,
            "mute": false,
            "flags": 0,
            "pending": false,
            "communication_disabled_until": null,
        });
        if with_permissions {
            j["permissions"] = json!(MEMBER_PERMISSIONS);
        }
        j
    }

    fn text_channel_json(&self) -> Value {
        let last = self
            .messages
            .iter()
            .rev()
            .find(|m| m.channel_id == self.ids.channel)
            .map(|m| m.id.to_string());
        json!({
            "id": self.ids.channel.to_string(),
            "type": 0,
            "guild_id": self.ids.guild.to_string(),
            "name": "general",
            "position": 0,
            "permission_overwrites": [],
            "nsfw": false,
            "topic": null,
            "last_message_id": last,
            "parent_id": null,
            "rate_limit_per_user": 0,
            "flags": 0,
        })
    }

    fn thread_json(&self, t: &Thread) -> Value {
        let last = self
            .messages
            .iter()
            .rev()
            .find(|m| m.channel_id == t.id)
            .map(|m| m.id.to_string());
        json!({
            "id": t.id.to_string(),
            "type": 11,
            "guild_id": self.ids.guild.to_string(),
            "parent_id": t.parent_id.to_string(),
            "owner_id": t.owner_id.to_string(),
            "name": t.name,
            "last_message_id": last,
            "message_count": t.message_count,
            "member_count": 1,
            "total_message_sent": t.message_count,
            "rate_limit_per_user": 0,
            "flags": 0,
            "thread_metadata": {
                "archived": false,
                "auto_archive_duration": t.auto_archive_duration,
                "archive_timestamp": t.created,
                "locked": false,
                "create_timestamp": t.created,
            },
        })
    }

    fn channel_json(&self, id: u64) -> Option<Value> {
        if id == self.ids.channel {
            return Some(self.text_channel_json());
        }
        let t = self.threads.iter().find(|t| t.id == id)?;
        Some(self.thread_json(t))
    }

    fn application_json(&self) -> Value {
        let owner = self
            .members
            .iter()
            .find(|m| !m.bot)
            .map_or(self.ids.bot, |m| m.user_id);
        json!({
            "id": self.ids.app.to_string(),
            "name": "firstmate",
            "icon": null,
            "description": "",
            "rpc_origins": [],
            "bot_public": false,
            "bot_require_code_grant": false,
            "bot": self.user_json(self.ids.bot),
            "owner": self.user_json(owner),
            "summary": "",
            "verify_key": "0000000000000000000000000000000000000000000000000000000000000000",
            "team": null,
            "flags": 0,
            "redirect_uris": [],
            "interactions_endpoint_url": null,
            "role_connections_verification_url": null,
        })
    }

    /// A message as REST returns it; `gateway` adds `guild_id` and `member`.
    fn message_json(&self, m: &Message, gateway: bool) -> Value {
        let attachments: Vec<Value> = m
            .attachments
            .iter()
            .map(|a| {
                // The fake's own CDN stands in for cdn.discordapp.com: same path, a
                // signed-looking query, no bot token needed.
                let url = format!(
                    "{}/attachments/{}/{}/{}?ex=0&is=0&hm=fake",
                    self.cdn, m.channel_id, a.id, a.filename
                );
                json!({
                    "id": a.id.to_string(),
                    "filename": a.filename,
                    "description": a.description,
                    "content_type": a.content_type,
                    "size": a.bytes.len(),
                    "url": url,
                    "proxy_url": url,
                })
            })
            .collect();
        let mut j = json!({
            "id": m.id.to_string(),
            "channel_id": m.channel_id.to_string(),
            "author": self.user_json(m.author_id),
            "content": m.content,
            "timestamp": m.timestamp,
            "edited_timestamp": m.edited_timestamp,
            "tts": false,
            "mention_everyone": false,
            "mentions": m.mentions.iter().map(|u| self.user_json(*u)).collect::<Vec<_>>(),
            "mention_roles": [],
            "attachments": attachments,
            "embeds": m.embeds,
            "pinned": false,
            "type": m.kind,
            "flags": m.flags,
            "components": m.components,
        });
        if let Some(r) = m.reference {
            j["message_reference"] = json!({
                "type": 0,
                "message_id": r.to_string(),
                "channel_id": m.channel_id.to_string(),
                "guild_id": self.ids.guild.to_string(),
            });
            if let Some(rm) = self.messages.iter().find(|x| x.id == r) {
                j["referenced_message"] = self.message_json(rm, false);
            }
        }
        if m.interaction_id.is_some() {
            j["webhook_id"] = json!(self.ids.app.to_string());
            j["application_id"] = json!(self.ids.app.to_string());
        }
        if let Some(t) = self.threads.iter().find(|t| t.message_id == Some(m.id)) {
            j["thread"] = self.thread_json(t);
        }
        if gateway {
            j["guild_id"] = json!(self.ids.guild.to_string());
            if m.interaction_id.is_none() {
                let mut member = self.member_json(m.author_id, false);
                if let Some(o) = member.as_object_mut() {
                    o.remove("user");
                }
                j["member"] = member;
            }
        }
        j
    }

    // -----------------------------------------------------------------------------------
    // Interactions people start (the bot answers them through the REST API)

    fn find_command(&self, name: &str) -> Option<&Value> {
        self.guild_commands
            .iter()
            .chain(&self.commands)
            .find(|c| c["name"] == name && c["type"].as_u64().unwrap_or(1) == 1)
    }

    fn command_data(
        &self,
        name: &str,
        subcommand: &str,
        options: &[(&str, Value)],
        focused: Option<(&str, &str)>,
    ) -> Value {
        let cmd = self.find_command(name).unwrap_or_else(|| {
            panic!("the bot has not registered /{name}: a person cannot use it")
        });
        let schema = if subcommand.is_empty() {
            cmd["options"].clone()
        } else {
            let sub = cmd["options"]
                .as_array()
                .and_then(|os| {
                    os.iter()
                        .find(|o| o["name"] == subcommand && o["type"] == 1)
                })
                .unwrap_or_else(|| panic!("/{name} has no subcommand {subcommand}: {cmd}"));
            sub["options"].clone()
        };
        let find = |n: &str| {
            schema
                .as_array()
                .and_then(|os| os.iter().find(|o| o["name"] == n))
                .cloned()
        };
        let mut given: Vec<Value> = Vec::new();
        for (n, v) in options {
            let kind = match find(n) {
                Some(o) => o["type"].as_u64().unwrap_or(3),
                None => panic!("/{name} {subcommand} has no option {n}"),
            };
            given.push(json!({"name": n, "type": kind, "value": v}));
        }
        if let Some((n, partial)) = focused {
            let kind = find(n).unwrap_or_else(|| panic!("/{name} {subcommand} has no option {n}"))
                ["type"]
                .as_u64()
                .unwrap_or(3);
            given.push(json!({"name": n, "type": kind, "value": partial, "focused": true}));
        } else if let Some(os) = schema.as_array() {
            for o in os {
                if o["required"] == true && !given.iter().any(|g| g["name"] == o["name"]) {
                    panic!(
                        "/{name} {subcommand}: the required option {} is missing",
                        o["name"]
                    );
                }
            }
        }
        let options = if subcommand.is_empty() {
            given
        } else {
            vec![json!({"name": subcommand, "type": 1, "options": given})]
        };
        let mut data = json!({
            "id": cmd["id"],
            "name": name,
            "type": 1,
            "options": options,
        });
        if let Some(g) = cmd.get("guild_id") {
            data["guild_id"] = g.clone();
        }
        data
    }

    fn interaction(
        &mut self,
        kind: u64,
        user_id: u64,
        channel_id: u64,
        data: Value,
        message_id: Option<u64>,
    ) -> Interaction {
        assert!(
            self.member(user_id).is_some(),
            "user {user_id} is not a member: add_member first"
        );
        let channel = self
            .channel_json(channel_id)
            .unwrap_or_else(|| panic!("no channel {channel_id}"));
        let id = self.snowflake();
        let token = format!("aW50ZXJhY3Rpb246{}{}", id, uuid::Uuid::new_v4().simple());
        let mut d = json!({
            "id": id.to_string(),
            "application_id": self.ids.app.to_string(),
            "type": kind,
            "data": data,
            "guild_id": self.ids.guild.to_string(),
            "channel": channel,
            "channel_id": channel_id.to_string(),
            "member": self.member_json(user_id, true),
            "token": token,
            "version": 1,
            "app_permissions": BOT_PERMISSIONS,
            "locale": "en-US",
            "guild_locale": "en-US",
            "entitlements": [],
            "authorizing_integration_owners": {"0": self.ids.guild.to_string()},
            "context": 0,
            "attachment_size_limit": self.limits.max_upload,
        });
        if let Some(mid) = message_id
            && let Some(m) = self.messages.iter().find(|m| m.id == mid)
        {
            d["message"] = self.message_json(m, false);
        }
        self.interactions.push(InteractionRec {
            id,
            token: token.clone(),
            kind,
            channel_id,
            created: Instant::now(),
            callback: None,
            responses: Vec::new(),
            original: None,
            followups: Vec::new(),
            message_id,
        });
        self.dispatch("INTERACTION_CREATE", d);
        Interaction {
            id,
            token,
            kind,
            channel_id,
            user_id,
        }
    }
}

/// What a member may do (text basics, no administrator), as a decimal string.
const MEMBER_PERMISSIONS: &str = "2248473465835073";
/// The bot's permissions in the channel.
const BOT_PERMISSIONS: &str = "2251799813685247";

// ---------------------------------------------------------------------------------------
// Time

/// RFC 3339 UTC with microseconds, as Discord writes timestamps.
fn iso8601(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}+00:00",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_micros()
    )
}
