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

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// Discord's epoch (2015-01-01), the base of snowflake timestamps.
const DISCORD_EPOCH_MS: u64 = 1_420_070_400_000;
const MAX_HEAD: usize = 256 * 1024;
/// Bodies above this are refused by closing the connection (uploads are capped lower).
const MAX_BODY: usize = 64 * 1024 * 1024;

/// Gateway intents the fake acts on.
pub const GUILDS: u64 = 1 << 0;
pub const GUILD_MEMBERS: u64 = 1 << 1;
pub const GUILD_MESSAGES: u64 = 1 << 9;
pub const MESSAGE_CONTENT: u64 = 1 << 15;

/// Message flags.
pub const EPHEMERAL: u64 = 1 << 6;
const HAS_THREAD: u64 = 1 << 5;
const LOADING: u64 = 1 << 7;

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
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
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
    pub const CA_PEM: &'static str = CA_PEM;

    pub fn start() -> FakeDiscord {
        FakeDiscord::start_with(Limits::default())
    }

    pub fn start_with(limits: Limits) -> FakeDiscord {
        let http = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the fake Discord");
        let ws = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the fake gateway");
        http.set_nonblocking(true).expect("nonblocking");
        ws.set_nonblocking(true).expect("nonblocking");
        let addr = http.local_addr().expect("local addr");
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
                cdn: format!("http://{addr}/cdn"),
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
        let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
        let sh = shared.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            rt.block_on(async move {
                let http = TcpListener::from_std(http).expect("tokio listener");
                let ws = TcpListener::from_std(ws).expect("tokio listener");
                let tls = tls_acceptor();
                loop {
                    tokio::select! {
                        _ = &mut stop_rx => break,
                        accepted = http.accept() => {
                            if let Ok((stream, _)) = accepted {
                                tokio::spawn(serve_tcp(stream, sh.clone(), tls.clone()));
                            }
                        }
                        accepted = ws.accept() => {
                            if let Ok((stream, _)) = accepted {
                                tokio::spawn(gateway_conn(stream, sh.clone()));
                            }
                        }
                    }
                }
            });
        });
        FakeDiscord {
            addr,
            shared,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT`: serenity's `HttpBuilder::proxy`, or a CONNECT proxy for
    /// `https://discord.com`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
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
                    reqwest012::Certificate::from_pem(CA_PEM.as_bytes()).expect("CA pem"),
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

impl Drop for FakeDiscord {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
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

// ---------------------------------------------------------------------------------------
// Responses

struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Option<Value>,
}

impl Resp {
    fn json(status: u16, body: Value) -> Resp {
        Resp {
            status,
            headers: Vec::new(),
            body: Some(body),
        }
    }

    fn no_content() -> Resp {
        Resp {
            status: 204,
            headers: Vec::new(),
            body: None,
        }
    }

    fn error(status: u16, code: u64, message: &str) -> Resp {
        Resp::json(status, json!({"message": message, "code": code}))
    }

    /// 400 Invalid Form Body (50035) with one error at `path` (dotted).
    fn form(path: &str, code: &str, message: &str) -> Resp {
        let mut errors = json!({"_errors": [{"code": code, "message": message}]});
        for key in path.rsplit('.') {
            errors = json!({ key: errors });
        }
        Resp::json(
            400,
            json!({"message": "Invalid Form Body", "code": 50035, "errors": errors}),
        )
    }

    fn not_found() -> Resp {
        Resp::error(404, 0, "404: Not Found")
    }

    fn unknown_channel() -> Resp {
        Resp::error(404, 10003, "Unknown Channel")
    }

    fn unknown_message() -> Resp {
        Resp::error(404, 10008, "Unknown Message")
    }

    fn unknown_webhook() -> Resp {
        Resp::error(404, 10015, "Unknown Webhook")
    }
}

// ---------------------------------------------------------------------------------------
// Routing

struct Req {
    method: String,
    path: String,
    query: Vec<(String, String)>,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Req {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn query(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

enum Route {
    Gateway,
    GatewayBot,
    Me,
    App,
    Commands {
        app: u64,
        guild: Option<u64>,
    },
    Callback {
        id: u64,
        token: String,
    },
    Followup {
        app: u64,
        token: String,
    },
    WebhookMessage {
        app: u64,
        token: String,
        message: Option<u64>,
    },
    Channel {
        c: u64,
    },
    ChannelMessages {
        c: u64,
    },
    ChannelMessage {
        c: u64,
        m: u64,
    },
    StartThread {
        c: u64,
        m: u64,
    },
    Typing {
        c: u64,
    },
}

/// Which bucket a request counts against.
struct Bucket {
    template: String,
    major: String,
    rate: Rate,
    global: bool,
}

impl Route {
    fn parse(path: &str) -> Option<Route> {
        let rest = path.strip_prefix("/api/v10/")?;
        let segs: Vec<&str> = rest.split('/').collect();
        let id = |s: &str| s.parse::<u64>().ok();
        Some(match segs.as_slice() {
            ["gateway"] => Route::Gateway,
            ["gateway", "bot"] => Route::GatewayBot,
            ["users", "@me"] => Route::Me,
            ["oauth2", "applications", "@me"] => Route::App,
            ["applications", app, "commands"] => Route::Commands {
                app: id(app)?,
                guild: None,
            },
            ["applications", app, "guilds", g, "commands"] => Route::Commands {
                app: id(app)?,
                guild: Some(id(g)?),
            },
            ["interactions", i, token, "callback"] => Route::Callback {
                id: id(i)?,
                token: token.to_string(),
            },
            ["webhooks", app, token] => Route::Followup {
                app: id(app)?,
                token: token.to_string(),
            },
            ["webhooks", app, token, "messages", m] => Route::WebhookMessage {
                app: id(app)?,
                token: token.to_string(),
                message: if *m == "@original" {
                    None
                } else {
                    Some(id(m)?)
                },
            },
            ["channels", c] => Route::Channel { c: id(c)? },
            ["channels", c, "messages"] => Route::ChannelMessages { c: id(c)? },
            ["channels", c, "messages", m] => Route::ChannelMessage {
                c: id(c)?,
                m: id(m)?,
            },
            ["channels", c, "messages", m, "threads"] => Route::StartThread {
                c: id(c)?,
                m: id(m)?,
            },
            ["channels", c, "typing"] => Route::Typing { c: id(c)? },
            _ => return None,
        })
    }

    fn allows(&self, method: &str) -> bool {
        let allowed: &[&str] = match self {
            Route::Gateway | Route::GatewayBot | Route::Me | Route::App | Route::Channel { .. } => {
                &["GET"]
            }
            Route::Commands { .. } => &["GET", "PUT", "POST"],
            Route::Callback { .. } | Route::Followup { .. } | Route::StartThread { .. } => {
                &["POST"]
            }
            Route::Typing { .. } => &["POST"],
            Route::WebhookMessage { .. } | Route::ChannelMessage { .. } => {
                &["GET", "PATCH", "DELETE"]
            }
            Route::ChannelMessages { .. } => &["GET", "POST"],
        };
        allowed.contains(&method)
    }

    /// Interaction endpoints are authenticated by their token, not the bot's.
    fn needs_bot_auth(&self) -> bool {
        !matches!(
            self,
            Route::Callback { .. }
                | Route::Followup { .. }
                | Route::WebhookMessage { .. }
                | Route::Gateway
        )
    }

    fn bucket(&self, method: &str, limits: &Limits) -> Bucket {
        let b = |template: &str, major: String, rate: Rate| Bucket {
            template: format!("{method} {template}"),
            major,
            rate,
            global: true,
        };
        match self {
            Route::Gateway => b("/gateway", String::new(), limits.other),
            Route::GatewayBot => b("/gateway/bot", String::new(), limits.other),
            Route::Me => b("/users/@me", String::new(), limits.other),
            Route::App => b("/oauth2/applications/@me", String::new(), limits.other),
            Route::Commands { app, guild: None } => {
                b("/applications/{}/commands", app.to_string(), limits.other)
            }
            Route::Commands {
                app,
                guild: Some(g),
            } => b(
                "/applications/{}/guilds/{}/commands",
                format!("{app}:{g}"),
                limits.other,
            ),
            Route::Callback { id, .. } => Bucket {
                global: false,
                ..b(
                    "/interactions/{}/{}/callback",
                    id.to_string(),
                    limits.callbacks,
                )
            },
            Route::Followup { app, token } => Bucket {
                global: false,
                ..b("/webhooks/{}/{}", format!("{app}:{token}"), limits.webhooks)
            },
            Route::WebhookMessage { app, token, .. } => Bucket {
                global: false,
                ..b(
                    "/webhooks/{}/{}/messages/{}",
                    format!("{app}:{token}"),
                    limits.webhooks,
                )
            },
            Route::Channel { c } => b("/channels/{}", c.to_string(), limits.other),
            Route::ChannelMessages { c } => {
                let rate = if method == "POST" {
                    limits.messages
                } else {
                    limits.other
                };
                b("/channels/{}/messages", c.to_string(), rate)
            }
            Route::ChannelMessage { c, .. } => {
                let rate = if method == "PATCH" {
                    limits.messages
                } else {
                    limits.other
                };
                b("/channels/{}/messages/{}", c.to_string(), rate)
            }
            Route::StartThread { c, .. } => b(
                "/channels/{}/messages/{}/threads",
                c.to_string(),
                limits.other,
            ),
            Route::Typing { c } => b("/channels/{}/typing", c.to_string(), limits.other),
        }
    }
}

/// An opaque bucket id per route template, as Discord's `X-RateLimit-Bucket`.
fn bucket_hash(template: &str) -> String {
    // FNV-1a, twice with different seeds for 32 hex digits.
    let fnv = |seed: u64| {
        template.bytes().fold(seed, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    };
    format!(
        "{:016x}{:016x}",
        fnv(0xcbf2_9ce4_8422_2325),
        fnv(0x6c62_272e_07bb_0142)
    )
}

fn secs(d: Duration) -> String {
    // Rounded up to the millisecond so waiting exactly this long is enough.
    let ms = d.as_micros().div_ceil(1000);
    format!("{}.{:03}", ms / 1000, ms % 1000)
}

fn epoch_secs(at: Instant, now: Instant) -> String {
    let t = SystemTime::now() + at.saturating_duration_since(now);
    secs(t.duration_since(UNIX_EPOCH).unwrap_or_default())
}

impl State {
    fn handle(&mut self, req: &Req, now: Instant) -> (Resp, Option<String>, bool) {
        let Some(route) = Route::parse(&req.path) else {
            return (Resp::not_found(), None, false);
        };
        if !route.allows(&req.method) {
            return (Resp::error(405, 0, "405: Method Not Allowed"), None, false);
        }
        if route.needs_bot_auth() {
            let expected = format!("Bot {}", FakeDiscord::TOKEN);
            if req.header("authorization") != Some(expected.as_str()) {
                return (Resp::error(401, 0, "401: Unauthorized"), None, false);
            }
        }
        let bucket = route.bucket(&req.method, &self.limits);
        if bucket.global
            && let Some(resp) = self.take_global(now)
        {
            return (resp, None, true);
        }
        let hash = bucket_hash(&bucket.template);
        let key = (hash.clone(), bucket.major.clone());
        let window = self.buckets.entry(key).or_insert(Window {
            reset_at: now,
            remaining: 0,
        });
        if now >= window.reset_at {
            window.reset_at = now + bucket.rate.per;
            window.remaining = bucket.rate.limit;
        }
        let limited = window.remaining == 0;
        if !limited {
            window.remaining -= 1;
        }
        let reset_after = window.reset_at.saturating_duration_since(now);
        let headers = vec![
            ("x-ratelimit-limit".into(), bucket.rate.limit.to_string()),
            ("x-ratelimit-remaining".into(), window.remaining.to_string()),
            ("x-ratelimit-reset".into(), epoch_secs(window.reset_at, now)),
            ("x-ratelimit-reset-after".into(), secs(reset_after)),
            ("x-ratelimit-bucket".into(), hash.clone()),
        ];
        let mut resp = if limited {
            let mut r = Resp::json(
                429,
                json!({
                    "message": "You are being rate limited.",
                    "retry_after": (reset_after.as_secs_f64() * 1000.0).ceil() / 1000.0,
                    "global": false,
                }),
            );
            r.headers.push((
                "retry-after".into(),
                reset_after.as_secs_f64().ceil().to_string(),
            ));
            r.headers.push(("x-ratelimit-scope".into(), "user".into()));
            r
        } else {
            self.route(&route, req, now)
        };
        resp.headers.extend(headers);
        (resp, Some(hash), false)
    }

    /// Counts a request against the global limit; the 429 when it is used up.
    fn take_global(&mut self, now: Instant) -> Option<Resp> {
        let rate = self.limits.global;
        let w = self.global.get_or_insert(Window {
            reset_at: now,
            remaining: 0,
        });
        if now >= w.reset_at {
            w.reset_at = now + rate.per;
            w.remaining = rate.limit;
        }
        if w.remaining > 0 {
            w.remaining -= 1;
            return None;
        }
        let after = w.reset_at.saturating_duration_since(now);
        let mut r = Resp::json(
            429,
            json!({
                "message": "You are being rate limited.",
                "retry_after": (after.as_secs_f64() * 1000.0).ceil() / 1000.0,
                "global": true,
                "code": 0,
            }),
        );
        r.headers
            .push(("retry-after".into(), after.as_secs_f64().ceil().to_string()));
        r.headers.push(("x-ratelimit-global".into(), "true".into()));
        r.headers
            .push(("x-ratelimit-scope".into(), "global".into()));
        Some(r)
    }

    fn route(&mut self, route: &Route, req: &Req, now: Instant) -> Resp {
        let m = req.method.as_str();
        match route {
            Route::Gateway => Resp::json(200, json!({"url": self.ws_url})),
            Route::GatewayBot => Resp::json(
                200,
                json!({
                    "url": self.ws_url,
                    "shards": 1,
                    "session_start_limit": {
                        "total": 1000, "remaining": 999, "reset_after": 14_400_000,
                        "max_concurrency": 1,
                    },
                }),
            ),
            Route::Me => {
                let mut u = self.user_json(self.ids.bot);
                u["verified"] = json!(true);
                u["mfa_enabled"] = json!(false);
                u["locale"] = json!("en-US");
                Resp::json(200, u)
            }
            Route::App => Resp::json(200, self.application_json()),
            Route::Commands { app, guild } => {
                if *app != self.ids.app {
                    return Resp::error(403, 50001, "Missing Access");
                }
                if guild.is_some_and(|g| g != self.ids.guild) {
                    return Resp::error(404, 10004, "Unknown Guild");
                }
                self.commands_route(m, *guild, req)
            }
            Route::Callback { id, token } => self.callback(*id, token, req, now),
            Route::Followup { app, token } => self.followup(*app, token, req, now),
            Route::WebhookMessage {
                app,
                token,
                message,
            } => self.webhook_message(m, *app, token, *message, req, now),
            Route::Channel { c } => match self.channel_json(*c) {
                Some(j) => Resp::json(200, j),
                None => Resp::unknown_channel(),
            },
            Route::ChannelMessages { c } => {
                if self.channel_kind(*c).is_none() {
                    return Resp::unknown_channel();
                }
                if m == "GET" {
                    self.list_messages(*c, req)
                } else {
                    self.post_message(*c, req)
                }
            }
            Route::ChannelMessage { c, m: mid } => {
                if self.channel_kind(*c).is_none() {
                    return Resp::unknown_channel();
                }
                let Some(idx) = self
                    .messages
                    .iter()
                    .position(|x| x.id == *mid && x.channel_id == *c && x.flags & EPHEMERAL == 0)
                else {
                    return Resp::unknown_message();
                };
                match m {
                    "GET" => Resp::json(200, self.message_json(&self.messages[idx], false)),
                    "PATCH" => {
                        if self.messages[idx].author_id != self.ids.bot
                            || self.messages[idx].interaction_id.is_some()
                        {
                            return Resp::error(
                                403,
                                50005,
                                "Cannot edit a message authored by another user",
                            );
                        }
                        match parse_payload(req, self.limits.max_upload) {
                            Ok((data, files)) => self.edit_message(idx, &data, files),
                            Err(r) => r,
                        }
                    }
                    _ => {
                        if self.messages[idx].author_id != self.ids.bot {
                            return Resp::error(403, 50013, "Missing Permissions");
                        }
                        self.delete_message(idx);
                        Resp::no_content()
                    }
                }
            }
            Route::StartThread { c, m: mid } => self.start_thread(*c, *mid, req),
            Route::Typing { c } => match self.channel_kind(*c) {
                Some(_) => Resp::no_content(),
                None => Resp::unknown_channel(),
            },
        }
    }

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

    fn role_json(&self, id: u64, position: u64) -> Value {
        let everyone = id == self.ids.guild;
        json!({
            "id": id.to_string(),
            "name": if everyone { "@everyone".to_string() } else { format!("role-{id}") },
            "color": 0,
            "colors": {"primary_color": 0, "secondary_color": null, "tertiary_color": null},
            "hoist": false,
            "icon": null,
            "unicode_emoji": null,
            "position": position,
            "permissions": MEMBER_PERMISSIONS,
            "managed": false,
            "mentionable": false,
            "flags": 0,
        })
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

    fn guild_json(&self, all_members: bool) -> Value {
        let mut role_ids: Vec<u64> = self
            .members
            .iter()
            .flat_map(|m| m.roles.iter().copied())
            .collect();
        role_ids.sort_unstable();
        role_ids.dedup();
        let mut roles = vec![self.role_json(self.ids.guild, 0)];
        for (i, r) in role_ids.iter().enumerate() {
            roles.push(self.role_json(*r, i as u64 + 1));
        }
        let members: Vec<Value> = self
            .members
            .iter()
            .filter(|m| all_members || m.user_id == self.ids.bot)
            .map(|m| self.member_json(m.user_id, false))
            .collect();
        let threads: Vec<Value> = self.threads.iter().map(|t| self.thread_json(t)).collect();
        let mut guild = json!({
            "id": self.ids.guild.to_string(),
            "name": "Fake Guild",
            "icon": null, "icon_hash": null, "splash": null, "discovery_splash": null,
            "owner_id": self.members.iter().find(|m| !m.bot).map_or(self.ids.bot, |m| m.user_id).to_string(),
            "afk_channel_id": null,
            "afk_timeout": 300,
            "widget_enabled": false,
            "widget_channel_id": null,
            "verification_level": 0,
            "default_message_notifications": 1,
            "explicit_content_filter": 0,
            "roles": roles,
            "emojis": [],
            "features": [],
            "mfa_level": 0,
            "application_id": null,
            "system_channel_id": null,
            "system_channel_flags": 0,
            "rules_channel_id": null,
            "max_presences": null,
            "max_members": 500_000,
            "vanity_url_code": null,
            "description": null,
            "banner": null,
            "premium_tier": 0,
            "premium_subscription_count": 0,
            "preferred_locale": "en-US",
            "public_updates_channel_id": null,
            "max_video_channel_users": 25,
            "max_stage_video_channel_users": 50,
            "nsfw_level": 0,
            "stickers": [],
            "premium_progress_bar_enabled": false,
            "safety_alerts_channel_id": null,
        });
        // In two parts: one `json!` this size exceeds the macro recursion limit.
        let state = json!({
            "joined_at": self.member(self.ids.bot).map(|m| m.joined_at.clone()),
            "large": false,
            "unavailable": false,
            "member_count": self.members.len(),
            "voice_states": [],
            "members": members,
            "channels": [self.text_channel_json()],
            "threads": threads,
            "presences": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
        });
        if let (Some(g), Value::Object(rest)) = (guild.as_object_mut(), state) {
            g.extend(rest);
        }
        guild
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
    // Gateway dispatch

    /// Sends a dispatch to the session (if its intents want it) and logs it for RESUME.
    fn dispatch(&mut self, event: &str, mut d: Value) {
        let bot = self.ids.bot;
        let bot_id = bot.to_string();
        let Some(s) = self.session.as_mut() else {
            return;
        };
        let needs = match event {
            "MESSAGE_CREATE" | "MESSAGE_UPDATE" | "MESSAGE_DELETE" => GUILD_MESSAGES,
            "THREAD_CREATE" | "GUILD_CREATE" => GUILDS,
            "GUILD_MEMBER_ADD" => GUILD_MEMBERS,
            _ => 0,
        };
        if s.intents & needs != needs {
            return;
        }
        if matches!(event, "MESSAGE_CREATE" | "MESSAGE_UPDATE") && s.intents & MESSAGE_CONTENT == 0
        {
            let author = d["author"]["id"]
                .as_str()
                .and_then(|a| a.parse::<u64>().ok());
            let mentioned = d["mentions"]
                .as_array()
                .is_some_and(|ms| ms.iter().any(|u| u["id"].as_str() == Some(bot_id.as_str())));
            if author != Some(bot) && !mentioned {
                d["content"] = json!("");
                d["embeds"] = json!([]);
                d["attachments"] = json!([]);
                d["components"] = json!([]);
            }
        }
        s.seq += 1;
        let frame = json!({"op": 0, "t": event, "s": s.seq, "d": d});
        s.log.push((s.seq, frame.clone()));
        if let Some(c) = &self.conn {
            let _ = c.tx.send(Out::Frame(frame));
        }
    }

    fn identify(&mut self, conn: Conn, d: &Value) -> Result<(), u16> {
        let token = d["token"].as_str().unwrap_or_default();
        if token.strip_prefix("Bot ").unwrap_or(token) != FakeDiscord::TOKEN {
            return Err(4004);
        }
        let Some(intents) = d["intents"].as_u64() else {
            return Err(4013);
        };
        let mut identify = d.clone();
        identify["token"] = json!("(redacted)");
        self.identifies += 1;
        self.conn = Some(conn);
        self.session = Some(Session {
            id: uuid::Uuid::new_v4().simple().to_string(),
            intents,
            seq: 0,
            log: Vec::new(),
            identify,
        });
        let session_id = self.session.as_ref().map(|s| s.id.clone());
        let mut user = self.user_json(self.ids.bot);
        user["verified"] = json!(true);
        user["mfa_enabled"] = json!(false);
        let ready = json!({
            "v": 10,
            "user": user,
            "guilds": [{"id": self.ids.guild.to_string(), "unavailable": true}],
            "session_id": session_id,
            "resume_gateway_url": self.ws_url,
            "shard": [0, 1],
            "application": {"id": self.ids.app.to_string(), "flags": 0},
            "private_channels": [],
            "presences": [],
        });
        self.dispatch("READY", ready);
        let guild = self.guild_json(intents & GUILD_MEMBERS != 0);
        self.dispatch("GUILD_CREATE", guild);
        Ok(())
    }

    /// RESUME: replays what the session missed after `seq`, then RESUMED. False: invalid
    /// session.
    fn resume(&mut self, conn: Conn, d: &Value) -> bool {
        let token = d["token"].as_str().unwrap_or_default();
        let ok = token.strip_prefix("Bot ").unwrap_or(token) == FakeDiscord::TOKEN
            && self
                .session
                .as_ref()
                .is_some_and(|s| d["session_id"] == s.id.as_str());
        if !ok {
            let _ = conn.tx.send(Out::Frame(json!({"op": 9, "d": false})));
            return false;
        }
        let after = d["seq"].as_u64().unwrap_or(0);
        if let Some(s) = &self.session {
            for (seq, frame) in &s.log {
                if *seq > after {
                    let _ = conn.tx.send(Out::Frame(frame.clone()));
                }
            }
        }
        self.resumes += 1;
        self.conn = Some(conn);
        self.dispatch("RESUMED", json!({}));
        true
    }

    // -----------------------------------------------------------------------------------
    // Interactions

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

    fn callback(&mut self, id: u64, token: &str, req: &Req, now: Instant) -> Resp {
        let unknown = || Resp::error(404, 10062, "Unknown interaction");
        let Some(idx) = self
            .interactions
            .iter()
            .position(|i| i.id == id && i.token == token)
        else {
            return unknown();
        };
        let (body, files) = match parse_payload(req, self.limits.max_upload) {
            Ok(p) => p,
            Err(r) => return r,
        };
        let i = &self.interactions[idx];
        if i.callback.is_some() {
            return Resp::error(400, 40060, "Interaction has already been acknowledged.");
        }
        if now.duration_since(i.created) > self.limits.interaction_deadline {
            return unknown();
        }
        let kind = i.kind;
        let ty = body["type"].as_u64().unwrap_or(0);
        let allowed: &[u64] = match kind {
            2 => &[4, 5, 9],
            3 => &[4, 5, 6, 7, 9],
            4 => &[8],
            _ => &[],
        };
        if !allowed.contains(&ty) {
            return Resp::form(
                "type",
                "INTERACTION_RESPONSE_TYPE_INVALID",
                "Value must be one of the allowed response types for this interaction.",
            );
        }
        let data = body.get("data").cloned().unwrap_or(json!({}));
        let channel = i.channel_id;
        let bot = self.ids.bot;
        let command_kind = if kind == 2 { 20 } else { 0 };
        match ty {
            4 => {
                if let Err(r) = check_message(&data, !files.is_empty(), true) {
                    return r;
                }
                let mid = self.create_message(channel, bot, &data, files, command_kind, Some(id));
                self.interactions[idx].original = Some(mid);
            }
            5 => {
                let flags = LOADING | (data["flags"].as_u64().unwrap_or(0) & EPHEMERAL);
                let d = json!({"flags": flags});
                let mid = self.create_message(channel, bot, &d, Vec::new(), command_kind, Some(id));
                self.interactions[idx].original = Some(mid);
            }
            6 => {
                self.interactions[idx].original = self.interactions[idx].message_id;
            }
            7 => {
                if let Err(r) = check_message(&data, !files.is_empty(), false) {
                    return r;
                }
                let Some(mid) = self.interactions[idx].message_id else {
                    return Resp::unknown_message();
                };
                self.interactions[idx].original = Some(mid);
                if let Some(midx) = self.messages.iter().position(|m| m.id == mid) {
                    let r = self.edit_message(midx, &data, files);
                    if r.status >= 400 {
                        return r;
                    }
                }
            }
            8 => {
                let n = data["choices"].as_array().map_or(0, Vec::len);
                if n > 25 {
                    return Resp::form(
                        "data.choices",
                        "BASE_TYPE_MAX_LENGTH",
                        "Must be 25 or fewer in length.",
                    );
                }
            }
            _ => {}
        }
        let i = &mut self.interactions[idx];
        i.callback = Some(ty);
        i.responses.push(body);
        Resp::no_content()
    }

    /// The interaction of a webhook token, or the error Discord gives.
    fn by_token(&self, app: u64, token: &str, now: Instant) -> Result<usize, Resp> {
        if app != self.ids.app {
            return Err(Resp::unknown_webhook());
        }
        let idx = self
            .interactions
            .iter()
            .position(|i| i.token == token)
            .ok_or_else(Resp::unknown_webhook)?;
        let i = &self.interactions[idx];
        if now.duration_since(i.created) > self.limits.token_lifetime {
            return Err(Resp::error(401, 50027, "Invalid Webhook Token"));
        }
        if i.callback.is_none() {
            return Err(Resp::unknown_webhook());
        }
        Ok(idx)
    }

    fn followup(&mut self, app: u64, token: &str, req: &Req, now: Instant) -> Resp {
        let idx = match self.by_token(app, token, now) {
            Ok(i) => i,
            Err(r) => return r,
        };
        let (data, files) = match parse_payload(req, self.limits.max_upload) {
            Ok(p) => p,
            Err(r) => return r,
        };
        if let Err(r) = check_message(&data, !files.is_empty(), true) {
            return r;
        }
        let (channel, id) = (self.interactions[idx].channel_id, self.interactions[idx].id);
        let mid = self.create_message(channel, self.ids.bot, &data, files, 0, Some(id));
        self.interactions[idx].followups.push(mid);
        let m = self.messages.iter().find(|m| m.id == mid).expect("created");
        Resp::json(200, self.message_json(m, false))
    }

    fn webhook_message(
        &mut self,
        method: &str,
        app: u64,
        token: &str,
        message: Option<u64>,
        req: &Req,
        now: Instant,
    ) -> Resp {
        let idx = match self.by_token(app, token, now) {
            Ok(i) => i,
            Err(r) => return r,
        };
        let i = &self.interactions[idx];
        let target = match message {
            None => i.original,
            Some(m) if i.original == Some(m) || i.followups.contains(&m) => Some(m),
            Some(_) => None,
        };
        let Some(midx) = target.and_then(|t| self.messages.iter().position(|m| m.id == t)) else {
            return Resp::unknown_message();
        };
        match method {
            "GET" => Resp::json(200, self.message_json(&self.messages[midx], false)),
            "PATCH" => match parse_payload(req, self.limits.max_upload) {
                Ok((data, files)) => self.edit_message(midx, &data, files),
                Err(r) => r,
            },
            _ => {
                self.delete_message(midx);
                Resp::no_content()
            }
        }
    }

    // -----------------------------------------------------------------------------------
    // Messages

    fn list_messages(&self, c: u64, req: &Req) -> Resp {
        let limit = req
            .query("limit")
            .and_then(|l| l.parse::<usize>().ok())
            .unwrap_or(50);
        if !(1..=100).contains(&limit) {
            return Resp::form(
                "limit",
                "NUMBER_TYPE_MAX",
                "int value should be less than or equal to 100.",
            );
        }
        let before = req.query("before").and_then(|b| b.parse::<u64>().ok());
        let after = req.query("after").and_then(|b| b.parse::<u64>().ok());
        let mut list: Vec<&Message> = self
            .messages
            .iter()
            .filter(|m| m.channel_id == c && m.flags & EPHEMERAL == 0)
            .filter(|m| before.is_none_or(|b| m.id < b) && after.is_none_or(|a| m.id > a))
            .collect();
        // Newest first, as Discord returns them.
        list.reverse();
        if after.is_some() {
            let skip = list.len().saturating_sub(limit);
            list.drain(..skip);
        } else {
            list.truncate(limit);
        }
        Resp::json(
            200,
            Value::Array(list.iter().map(|m| self.message_json(m, false)).collect()),
        )
    }

    fn post_message(&mut self, c: u64, req: &Req) -> Resp {
        let (data, files) = match parse_payload(req, self.limits.max_upload) {
            Ok(p) => p,
            Err(r) => return r,
        };
        if let Err(r) = check_message(&data, !files.is_empty(), true) {
            return r;
        }
        let mut kind = 0;
        if let Some(r) = data.get("message_reference").filter(|r| !r.is_null()) {
            let rid = id_of(&r["message_id"]);
            let exists = rid.is_some_and(|rid| {
                self.messages
                    .iter()
                    .any(|m| m.id == rid && m.channel_id == c && m.flags & EPHEMERAL == 0)
            });
            if !exists && r["fail_if_not_exists"] != false {
                return Resp::form(
                    "message_reference",
                    "MESSAGE_REFERENCE_UNKNOWN_MESSAGE",
                    "Unknown message",
                );
            }
            if exists {
                kind = 19;
            }
        }
        let mid = self.create_message(c, self.ids.bot, &data, files, kind, None);
        let m = self.messages.iter().find(|m| m.id == mid).expect("created");
        Resp::json(200, self.message_json(m, false))
    }

    /// Stores a message (already checked) and dispatches MESSAGE_CREATE; its id.
    fn create_message(
        &mut self,
        channel_id: u64,
        author_id: u64,
        data: &Value,
        files: Vec<Upload>,
        kind: u64,
        interaction_id: Option<u64>,
    ) -> u64 {
        let id = self.snowflake();
        let content = data["content"].as_str().unwrap_or_default().to_string();
        let attachments = self.attachments(&data["attachments"], files, &[]);
        let reference = if kind == 19 {
            id_of(&data["message_reference"]["message_id"])
        } else {
            None
        };
        let m = Message {
            id,
            channel_id,
            author_id,
            mentions: self.mentions(&content),
            content,
            embeds: array_of(&data["embeds"]),
            components: array_of(&data["components"]),
            attachments,
            flags: data["flags"].as_u64().unwrap_or(0) & (EPHEMERAL | LOADING | 4 | 4096),
            edits: 0,
            kind,
            reference,
            interaction_id,
            timestamp: iso8601(SystemTime::now()),
            edited_timestamp: None,
        };
        if let Some(t) = self.threads.iter_mut().find(|t| t.id == channel_id) {
            t.message_count += 1;
        }
        let ephemeral = m.flags & EPHEMERAL != 0;
        let j = self.message_json(&m, true);
        self.messages.push(m);
        if !ephemeral {
            self.dispatch("MESSAGE_CREATE", j);
        }
        id
    }

    fn edit_message(&mut self, idx: usize, data: &Value, files: Vec<Upload>) -> Resp {
        if let Err(r) = check_message(data, !files.is_empty(), false) {
            return r;
        }
        let keep = self.messages[idx].attachments.clone();
        let attachments = if data.get("attachments").is_some() || !files.is_empty() {
            Some(self.attachments(&data["attachments"], files, &keep))
        } else {
            None
        };
        let mentions = data["content"].as_str().map(|c| self.mentions(c));
        // Changed on a copy: a refused edit leaves the message as it was.
        let mut m = self.messages[idx].clone();
        if let Some(c) = data.get("content") {
            m.content = c.as_str().unwrap_or_default().to_string();
        }
        if let Some(ms) = mentions {
            m.mentions = ms;
        }
        if let Some(e) = data.get("embeds") {
            m.embeds = array_of(e);
        }
        if let Some(c) = data.get("components") {
            m.components = array_of(c);
        }
        if let Some(a) = attachments {
            m.attachments = a;
        }
        if let Some(f) = data["flags"].as_u64() {
            // Only SUPPRESS_EMBEDS can be changed by an edit.
            m.flags = (m.flags & !4) | (f & 4);
        }
        let was_loading = m.flags & LOADING != 0;
        m.flags &= !LOADING;
        let empty = m.content.is_empty()
            && m.embeds.is_empty()
            && m.attachments.is_empty()
            && m.components.is_empty();
        if empty && !was_loading {
            return Resp::error(400, 50006, "Cannot send an empty message");
        }
        m.edits += 1;
        m.edited_timestamp = Some(iso8601(SystemTime::now()));
        self.messages[idx] = m.clone();
        if m.flags & EPHEMERAL == 0 {
            let j = self.message_json(&m, true);
            self.dispatch("MESSAGE_UPDATE", j);
        }
        Resp::json(200, self.message_json(&m, false))
    }

    fn delete_message(&mut self, idx: usize) {
        let m = self.messages.remove(idx);
        if m.flags & EPHEMERAL == 0 {
            let d = json!({
                "id": m.id.to_string(),
                "channel_id": m.channel_id.to_string(),
                "guild_id": self.ids.guild.to_string(),
            });
            self.dispatch("MESSAGE_DELETE", d);
        }
    }

    /// The attachments a payload names: kept ones by id, new ones from `files[n]`.
    fn attachments(
        &mut self,
        spec: &Value,
        files: Vec<Upload>,
        keep: &[Attachment],
    ) -> Vec<Attachment> {
        let spec = array_of(spec);
        let mut out: Vec<Attachment> = keep
            .iter()
            .filter(|a| spec.iter().any(|s| id_of(&s["id"]) == Some(a.id)))
            .cloned()
            .collect();
        for f in files {
            let meta = spec
                .iter()
                .find(|s| id_of(&s["id"]) == Some(f.index))
                .cloned()
                .unwrap_or(Value::Null);
            let id = self.snowflake();
            out.push(Attachment {
                id,
                filename: meta["filename"]
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or(f.filename),
                content_type: f.content_type,
                description: meta["description"].as_str().map(str::to_string),
                bytes: f.bytes,
            });
        }
        out
    }

    /// The members mentioned as `<@id>` or `<@!id>`.
    fn mentions(&self, content: &str) -> Vec<u64> {
        let mut out = Vec::new();
        for part in content.split("<@").skip(1) {
            let part = part.strip_prefix('!').unwrap_or(part);
            if let Some((id, _)) = part.split_once('>')
                && let Ok(id) = id.parse::<u64>()
                && self.member(id).is_some()
                && !out.contains(&id)
            {
                out.push(id);
            }
        }
        out
    }

    // -----------------------------------------------------------------------------------
    // Threads

    fn start_thread(&mut self, c: u64, mid: u64, req: &Req) -> Resp {
        match self.channel_kind(c) {
            None => return Resp::unknown_channel(),
            Some(0) => {}
            Some(_) => {
                return Resp::error(400, 50024, "Cannot execute action on this channel type");
            }
        }
        if !self
            .messages
            .iter()
            .any(|m| m.id == mid && m.channel_id == c && m.flags & EPHEMERAL == 0)
        {
            return Resp::unknown_message();
        }
        let body: Value = match serde_json::from_slice(&req.body) {
            Ok(v) => v,
            Err(_) => return Resp::error(400, 50109, "The request body contains invalid JSON."),
        };
        let name = body["name"].as_str().unwrap_or_default();
        let len = name.chars().count();
        if !(1..=100).contains(&len) {
            return Resp::form(
                "name",
                "BASE_TYPE_BAD_LENGTH",
                "Must be between 1 and 100 in length.",
            );
        }
        let archive = match &body["auto_archive_duration"] {
            Value::Null => 4320,
            v => match v.as_u64() {
                Some(d @ (60 | 1440 | 4320 | 10080)) => d,
                _ => {
                    return Resp::form(
                        "auto_archive_duration",
                        "BASE_TYPE_CHOICES",
                        "Value must be one of {60, 1440, 4320, 10080}.",
                    );
                }
            },
        };
        if self.threads.iter().any(|t| t.id == mid) {
            return Resp::error(
                400,
                160004,
                "A thread has already been created for this message",
            );
        }
        let t = Thread {
            id: mid,
            parent_id: c,
            name: name.to_string(),
            message_id: Some(mid),
            owner_id: self.ids.bot,
            auto_archive_duration: archive,
            message_count: 0,
            created: iso8601(SystemTime::now()),
        };
        let mut j = self.thread_json(&t);
        self.threads.push(t);
        if let Some(m) = self.messages.iter_mut().find(|m| m.id == mid) {
            m.flags |= HAS_THREAD;
        }
        let mut d = j.clone();
        d["newly_created"] = json!(true);
        self.dispatch("THREAD_CREATE", d);
        j["member"] = json!({
            "id": mid.to_string(),
            "user_id": self.ids.bot.to_string(),
            "join_timestamp": iso8601(SystemTime::now()),
            "flags": 1,
        });
        Resp::json(201, j)
    }

    // -----------------------------------------------------------------------------------
    // Application commands

    fn commands_route(&mut self, method: &str, guild: Option<u64>, req: &Req) -> Resp {
        let list = |st: &State| {
            if guild.is_some() {
                st.guild_commands.clone()
            } else {
                st.commands.clone()
            }
        };
        if method == "GET" {
            return Resp::json(200, Value::Array(list(self)));
        }
        let body: Value = match serde_json::from_slice(&req.body) {
            Ok(v) => v,
            Err(_) => return Resp::error(400, 50109, "The request body contains invalid JSON."),
        };
        let existing = list(self);
        if method == "PUT" {
            let Some(items) = body.as_array() else {
                return Resp::form("_", "BASE_TYPE_ARRAY", "Must be an array.");
            };
            if items.len() > 100 {
                return Resp::form(
                    "_",
                    "BASE_TYPE_MAX_LENGTH",
                    "Must be 100 or fewer in length.",
                );
            }
            let mut out = Vec::new();
            for (n, c) in items.iter().enumerate() {
                match self.command(c, guild, &existing) {
                    Ok(c) => out.push(c),
                    Err((path, code, msg)) => return Resp::form(&format!("{n}.{path}"), code, msg),
                }
            }
            *self.commands_mut(guild) = out.clone();
            return Resp::json(200, Value::Array(out));
        }
        match self.command(&body, guild, &existing) {
            Ok(c) => {
                let list = self.commands_mut(guild);
                let created = !list.iter().any(|x| x["name"] == c["name"]);
                list.retain(|x| x["name"] != c["name"]);
                list.push(c.clone());
                Resp::json(if created { 201 } else { 200 }, c)
            }
            Err((path, code, msg)) => Resp::form(path, code, msg),
        }
    }

    fn commands_mut(&mut self, guild: Option<u64>) -> &mut Vec<Value> {
        if guild.is_some() {
            &mut self.guild_commands
        } else {
            &mut self.commands
        }
    }

    /// A command as stored and returned (its id kept across overwrites of the same name).
    fn command(
        &mut self,
        c: &Value,
        guild: Option<u64>,
        existing: &[Value],
    ) -> Result<Value, (&'static str, &'static str, &'static str)> {
        let kind = c["type"].as_u64().unwrap_or(1);
        let name = c["name"].as_str().unwrap_or_default();
        let n = name.chars().count();
        if !(1..=32).contains(&n) {
            return Err((
                "name",
                "BASE_TYPE_BAD_LENGTH",
                "Must be between 1 and 32 in length.",
            ));
        }
        if kind == 1
            && !name
                .chars()
                .all(|ch| ch == '-' || ch == '_' || ch.is_lowercase() || ch.is_numeric())
        {
            return Err((
                "name",
                "APPLICATION_COMMAND_INVALID_NAME",
                "Command name is invalid",
            ));
        }
        let description = c["description"].as_str().unwrap_or_default();
        let d = description.chars().count();
        if kind == 1 && !(1..=100).contains(&d) {
            return Err((
                "description",
                "BASE_TYPE_BAD_LENGTH",
                "Must be between 1 and 100 in length.",
            ));
        }
        if c["options"].as_array().is_some_and(|o| o.len() > 25) {
            return Err((
                "options",
                "BASE_TYPE_MAX_LENGTH",
                "Must be 25 or fewer in length.",
            ));
        }
        let id = existing
            .iter()
            .find(|e| e["name"] == name && e["type"] == kind)
            .and_then(|e| id_of(&e["id"]))
            .unwrap_or_else(|| self.snowflake());
        let version = self.snowflake();
        let mut out = json!({
            "id": id.to_string(),
            "application_id": self.ids.app.to_string(),
            "version": version.to_string(),
            "type": kind,
            "name": name,
            "name_localizations": null,
            "description": description,
            "description_localizations": null,
            "default_member_permissions": c.get("default_member_permissions").cloned().unwrap_or(Value::Null),
            "nsfw": c["nsfw"].as_bool().unwrap_or(false),
            "integration_types": c.get("integration_types").cloned().unwrap_or(json!([0])),
            "contexts": c.get("contexts").cloned().unwrap_or(Value::Null),
        });
        if let Some(o) = c.get("options").filter(|o| !o.is_null()) {
            out["options"] = o.clone();
        }
        match guild {
            Some(g) => out["guild_id"] = json!(g.to_string()),
            None => out["dm_permission"] = json!(c["dm_permission"].as_bool().unwrap_or(true)),
        }
        Ok(out)
    }
}

/// What a member may do (text basics, no administrator), as a decimal string.
const MEMBER_PERMISSIONS: &str = "2248473465835073";
/// The bot's permissions in the channel.
const BOT_PERMISSIONS: &str = "2251799813685247";

fn array_of(v: &Value) -> Vec<Value> {
    v.as_array().cloned().unwrap_or_default()
}

/// A snowflake given as a string or a number.
fn id_of(v: &Value) -> Option<u64> {
    match v {
        Value::String(s) => s.parse().ok(),
        v => v.as_u64(),
    }
}

/// Discord's message rules: content at most 2000 characters, at most 10 embeds, and (for a
/// new message) something to send.
fn check_message(data: &Value, has_files: bool, new: bool) -> Result<(), Resp> {
    let content = data["content"].as_str().unwrap_or_default();
    if content.chars().count() > 2000 {
        return Err(Resp::form(
            "content",
            "BASE_TYPE_MAX_LENGTH",
            "Must be 2000 or fewer in length.",
        ));
    }
    let embeds = data["embeds"].as_array().map_or(0, Vec::len);
    if embeds > 10 {
        return Err(Resp::form(
            "embeds",
            "BASE_TYPE_MAX_LENGTH",
            "Must be 10 or fewer in length.",
        ));
    }
    let components = data["components"].as_array().map_or(0, Vec::len);
    let stickers = data["sticker_ids"].as_array().map_or(0, Vec::len);
    if new
        && content.is_empty()
        && embeds == 0
        && components == 0
        && stickers == 0
        && !has_files
        && data["poll"].is_null()
    {
        return Err(Resp::error(400, 50006, "Cannot send an empty message"));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Request bodies: JSON, or multipart with `payload_json` and `files[n]`

struct Upload {
    index: u64,
    filename: String,
    content_type: Option<String>,
    bytes: Vec<u8>,
}

fn parse_payload(req: &Req, max_upload: usize) -> Result<(Value, Vec<Upload>), Resp> {
    let bad_json = || Resp::error(400, 50109, "The request body contains invalid JSON.");
    let ctype = req.header("content-type").unwrap_or_default();
    if let Some(boundary) = ctype
        .split(';')
        .find_map(|p| p.trim().strip_prefix("boundary="))
        .filter(|_| ctype.starts_with("multipart/form-data"))
    {
        let boundary = boundary.trim_matches('"');
        let mut json_part = Value::Object(Default::default());
        let mut files = Vec::new();
        for part in multipart_parts(&req.body, boundary) {
            if part.name == "payload_json" {
                json_part = serde_json::from_slice(&part.body).map_err(|_| bad_json())?;
            } else if let Some(n) = part
                .name
                .strip_prefix("files[")
                .and_then(|r| r.strip_suffix(']'))
                .and_then(|n| n.parse::<u64>().ok())
            {
                if part.body.len() > max_upload {
                    return Err(Resp::error(413, 40005, "Request entity too large"));
                }
                files.push(Upload {
                    index: n,
                    filename: part.filename.unwrap_or_else(|| format!("file{n}")),
                    content_type: part.content_type,
                    bytes: part.body,
                });
            } else if part.name == "file" {
                if part.body.len() > max_upload {
                    return Err(Resp::error(413, 40005, "Request entity too large"));
                }
                files.push(Upload {
                    index: files.len() as u64,
                    filename: part.filename.unwrap_or_else(|| "file".into()),
                    content_type: part.content_type,
                    bytes: part.body,
                });
            }
        }
        return Ok((json_part, files));
    }
    if req.body.is_empty() {
        return Ok((json!({}), Vec::new()));
    }
    let v: Value = serde_json::from_slice(&req.body).map_err(|_| bad_json())?;
    Ok((v, Vec::new()))
}

struct Part {
    name: String,
    filename: Option<String>,
    content_type: Option<String>,
    body: Vec<u8>,
}

fn multipart_parts(body: &[u8], boundary: &str) -> Vec<Part> {
    let delim = format!("--{boundary}");
    let d = delim.as_bytes();
    let mut starts = Vec::new();
    let mut i = 0;
    while i + d.len() <= body.len() {
        if &body[i..i + d.len()] == d {
            starts.push(i);
            i += d.len();
        } else {
            i += 1;
        }
    }
    let mut parts = Vec::new();
    for w in starts.windows(2) {
        let chunk = &body[w[0] + d.len()..w[1]];
        let chunk = chunk.strip_prefix(b"\r\n").unwrap_or(chunk);
        let chunk = chunk.strip_suffix(b"\r\n").unwrap_or(chunk);
        let Some(split) = chunk.windows(4).position(|x| x == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&chunk[..split]);
        let mut part = Part {
            name: String::new(),
            filename: None,
            content_type: None,
            body: chunk[split + 4..].to_vec(),
        };
        for line in head.lines() {
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            match k.trim().to_ascii_lowercase().as_str() {
                "content-disposition" => {
                    for p in v.split(';') {
                        let p = p.trim();
                        if let Some(n) = p.strip_prefix("name=") {
                            part.name = n.trim_matches('"').to_string();
                        } else if let Some(f) = p.strip_prefix("filename=") {
                            part.filename = Some(f.trim_matches('"').to_string());
                        }
                    }
                }
                "content-type" => part.content_type = Some(v.trim().to_string()),
                _ => {}
            }
        }
        parts.push(part);
    }
    parts
}

// ---------------------------------------------------------------------------------------
// HTTP

async fn serve_tcp(stream: TcpStream, shared: Arc<Shared>, tls: tokio_rustls::TlsAcceptor) {
    let mut conn = BufReader::new(stream);
    let Ok(Some(first)) = read_request(&mut conn).await else {
        return;
    };
    if first.method == "CONNECT" {
        // `https://discord.com` through the fake as a proxy: TLS with the test certificate.
        if conn
            .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
            .await
            .is_err()
        {
            return;
        }
        let Ok(stream) = tls.accept(conn.into_inner()).await else {
            return;
        };
        serve_http(BufReader::new(stream), None, shared).await;
    } else {
        serve_http(conn, Some(first), shared).await;
    }
}

async fn serve_http<S: AsyncRead + AsyncWrite + Unpin>(
    mut conn: BufReader<S>,
    mut pending: Option<Req>,
    shared: Arc<Shared>,
) {
    loop {
        let req = match pending.take() {
            Some(r) => r,
            None => match read_request(&mut conn).await {
                Ok(Some(r)) => r,
                _ => return,
            },
        };
        let close = req
            .header("connection")
            .is_some_and(|c| c.eq_ignore_ascii_case("close"));
        if let Some(rest) = req.path.strip_prefix("/cdn/attachments/") {
            // The CDN: `{channel}/{attachment id}/{filename}`, bytes as uploaded.
            let id = rest.split('/').nth(1).and_then(|i| i.parse::<u64>().ok());
            let bytes = id.and_then(|id| {
                let st = shared.lock();
                st.messages
                    .iter()
                    .flat_map(|m| m.attachments.iter())
                    .find(|a| a.id == id)
                    .map(|a| a.bytes.clone())
            });
            let head = match &bytes {
                Some(b) => format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ncontent-length: {}\r\n\r\n",
                    b.len()
                ),
                None => "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n".to_string(),
            };
            if conn.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            if let Some(b) = bytes
                && conn.write_all(&b).await.is_err()
            {
                return;
            }
            if conn.flush().await.is_err() || close {
                return;
            }
            continue;
        }
        let resp = shared.change(|st| {
            let now = Instant::now();
            let (resp, bucket, global) = st.handle(&req, now);
            st.requests.push(RequestLog {
                method: req.method.clone(),
                path: req.path.clone(),
                status: resp.status,
                at: now,
                bucket,
                global,
                headers: resp.headers.clone(),
                body: resp.body.clone(),
            });
            resp
        });
        if write_response(&mut conn, &resp).await.is_err() || close {
            return;
        }
    }
}

async fn read_request<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut BufReader<S>,
) -> std::io::Result<Option<Req>> {
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
    let mut line = String::new();
    if conn.read_line(&mut line).await? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return Err(bad("bad request line"));
    };
    let method = method.to_string();
    // A proxied request may carry an absolute URL.
    let target = match target.find("://") {
        Some(i) => {
            let rest = &target[i + 3..];
            rest.find('/').map_or("/", |j| &rest[j..]).to_string()
        }
        None => target.to_string(),
    };
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), q.to_string()),
        None => (target, String::new()),
    };
    let query = query
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k.to_string(), v.to_string())
        })
        .collect();
    let mut headers = Vec::new();
    let mut head_len = line.len();
    loop {
        line.clear();
        if conn.read_line(&mut line).await? == 0 {
            return Err(bad("end of stream in the headers"));
        }
        head_len += line.len();
        if head_len > MAX_HEAD {
            return Err(bad("headers too large"));
        }
        let l = line.trim_end_matches(['\r', '\n']);
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let mut req = Req {
        method,
        path,
        query,
        headers,
        body: Vec::new(),
    };
    if req.method == "CONNECT" {
        return Ok(Some(req));
    }
    let chunked = req
        .header("transfer-encoding")
        .is_some_and(|t| t.to_ascii_lowercase().contains("chunked"));
    let length = req.header("content-length").map(str::to_string);
    req.body = read_body(conn, chunked, length.as_deref()).await?;
    Ok(Some(req))
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Payload Too Large",
        429 => "Too Many Requests",
        _ => "Status",
    }
}

async fn write_response<S: AsyncRead + AsyncWrite + Unpin>(
    w: &mut BufReader<S>,
    resp: &Resp,
) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.1 {} {}\r\n", resp.status, reason(resp.status));
    let body = resp.body.as_ref().map(Value::to_string);
    if let Some(b) = &body {
        let _ = write!(
            head,
            "content-type: application/json\r\ncontent-length: {}\r\n",
            b.len()
        );
    }
    for (k, v) in &resp.headers {
        let _ = write!(head, "{k}: {v}\r\n");
    }
    head.push_str("\r\n");
    w.write_all(head.as_bytes()).await?;
    if let Some(b) = body {
        w.write_all(b.as_bytes()).await?;
    }
    w.flush().await
}

fn tls_acceptor() -> tokio_rustls::TlsAcceptor {
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = vec![
        CertificateDer::from_pem_slice(LEAF_PEM.as_bytes()).expect("leaf pem"),
        CertificateDer::from_pem_slice(CA_PEM.as_bytes()).expect("CA pem"),
    ];
    let key = PrivateKeyDer::from_pem_slice(LEAF_KEY_PEM.as_bytes()).expect("key pem");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .expect("TLS config");
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

// ---------------------------------------------------------------------------------------
// Gateway

async fn gateway_conn(stream: TcpStream, shared: Arc<Shared>) {
    use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
    let mut query = String::new();
    // The signature is tungstenite's.
    #[allow(clippy::result_large_err)]
    let callback = |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        query = req.uri().query().unwrap_or_default().to_string();
        Ok(resp)
    };
    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await else {
        return;
    };
    let close = |code: u16| {
        WsMessage::Close(Some(CloseFrame {
            code: CloseCode::from(code),
            reason: "".into(),
        }))
    };
    if !query.split('&').any(|kv| kv == "v=10") {
        let _ = ws.send(close(4012)).await;
        return;
    }
    if query
        .split('&')
        .any(|kv| kv.starts_with("encoding=") && kv != "encoding=json")
    {
        let _ = ws.send(close(4002)).await;
        return;
    }
    let interval = shared.lock().limits.heartbeat_interval.as_millis() as u64;
    let hello = json!({"op": 10, "s": null, "t": null, "d": {"heartbeat_interval": interval}});
    if ws.send(WsMessage::Text(hello.to_string())).await.is_err() {
        return;
    }
    let id = shared.conn_ids.fetch_add(1, Ordering::Relaxed) + 1;
    let (tx, mut rx) = mpsc::unbounded_channel::<Out>();
    let mut authed = false;
    loop {
        tokio::select! {
            incoming = ws.next() => {
                let text = match incoming {
                    Some(Ok(WsMessage::Text(t))) => t,
                    Some(Ok(WsMessage::Binary(_))) => {
                        let _ = ws.send(close(4002)).await;
                        break;
                    }
                    Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => break,
                    Some(Ok(_)) => continue,
                };
                let Ok(v) = serde_json::from_str::<Value>(&text) else {
                    let _ = ws.send(close(4002)).await;
                    break;
                };
                match v["op"].as_u64() {
                    Some(1) => {
                        let ack = json!({"op": 11, "s": null, "t": null, "d": null});
                        if ws.send(WsMessage::Text(ack.to_string())).await.is_err() {
                            break;
                        }
                    }
                    Some(2) if authed => {
                        let _ = ws.send(close(4005)).await;
                        break;
                    }
                    Some(2) => {
                        let conn = Conn { id, tx: tx.clone() };
                        if let Err(code) = shared.change(|st| st.identify(conn, &v["d"])) {
                            let _ = ws.send(close(code)).await;
                            break;
                        }
                        authed = true;
                    }
                    Some(6) => {
                        let conn = Conn { id, tx: tx.clone() };
                        authed = shared.change(|st| st.resume(conn, &v["d"]));
                    }
                    Some(3 | 4 | 8) => {}
                    _ => {
                        let _ = ws.send(close(4001)).await;
                        break;
                    }
                }
            }
            out = rx.recv() => match out {
                Some(Out::Frame(f)) => {
                    if ws.send(WsMessage::Text(f.to_string())).await.is_err() {
                        break;
                    }
                }
                Some(Out::Close(code)) => {
                    let _ = ws.send(close(code)).await;
                    break;
                }
                None => break,
            }
        }
    }
    shared.change(|st| {
        if st.conn.as_ref().is_some_and(|c| c.id == id) {
            st.conn = None;
        }
    });
}

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

// ---------------------------------------------------------------------------------------
// The test certificate of the CONNECT tunnel: a CA and a leaf for discord.com (test-only
// keys, valid 2020-2120).

const CA_PEM: &str = "\
-----BEGIN CERTIFICATE-----
MIIBcDCCARagAwIBAgICEAAwCgYIKoZIzj0EAwIwHjEcMBoGA1UEAwwTRmFrZURp
c2NvcmQgdGVzdCBDQTAgFw0yMDAxMDEwMDAwMDBaGA8yMTIwMDEwMTAwMDAwMFow
HjEcMBoGA1UEAwwTRmFrZURpc2NvcmQgdGVzdCBDQTBZMBMGByqGSM49AgEGCCqG
SM49AwEHA0IABPrZxVBm5I8/YuEXBAWW7c4C6oXYXc6x6CUhcJNcWJVUTvjcToDh
1+bCZpInbrlW5bdVGyVrcwQkH9rUxvElJJ2jQjBAMA8GA1UdEwEB/wQFMAMBAf8w
DgYDVR0PAQH/BAQDAgEGMB0GA1UdDgQWBBQCygobvoHLLoh+H5lWWjNw6prpQjAK
BggqhkjOPQQDAgNIADBFAiAiRrvE5brGUN0EyYvss4OEq/CQ+w6dFwamd8syOfAT
9wIhAOJSGxQi3anWT0Tp2OpwTJ6kVyphn4LLWeFhOqX4eoap
-----END CERTIFICATE-----
";
const LEAF_PEM: &str = "\
-----BEGIN CERTIFICATE-----
MIIBtTCCAVugAwIBAgICEAEwCgYIKoZIzj0EAwIwHjEcMBoGA1UEAwwTRmFrZURp
c2NvcmQgdGVzdCBDQTAgFw0yMDAxMDEwMDAwMDBaGA8yMTIwMDEwMTAwMDAwMFow
FjEUMBIGA1UEAwwLZGlzY29yZC5jb20wWTATBgcqhkjOPQIBBggqhkjOPQMBBwNC
AAQfq4UleYMZdjxElZAyDHiXoluHqR6ZOg5xbiGfT0BTvlXhVxNSr4PmasTWPV6y
wx2NSUdtraSdSRnGxqIevafPo4GOMIGLMAwGA1UdEwEB/wQCMAAwDgYDVR0PAQH/
BAQDAgeAMBMGA1UdJQQMMAoGCCsGAQUFBwMBMBYGA1UdEQQPMA2CC2Rpc2NvcmQu
Y29tMB0GA1UdDgQWBBS47EIcWdvIUIrQChoXgfeIe690MzAfBgNVHSMEGDAWgBQC
ygobvoHLLoh+H5lWWjNw6prpQjAKBggqhkjOPQQDAgNIADBFAiEAwODTQfRE+CKr
DcIKjdbZvvOLR+48cNYEfdkNuvW7EVsCIBTqpIz6+UHFt/DSgVIeRHiuiP21Ztb1
uWz4I4cy42SA
-----END CERTIFICATE-----
";
const LEAF_KEY_PEM: &str = "\
-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgNjuORf+6iRnAotNS
lJJrm/hXEpbHDrc+ITvtjRdQA5OhRANCAAQfq4UleYMZdjxElZAyDHiXoluHqR6Z
Og5xbiGfT0BTvlXhVxNSr4PmasTWPV6ywx2NSUdtraSdSRnGxqIevafP
-----END PRIVATE KEY-----
";

/// Reads a request body: chunked (trailers skipped), or of `content_length` bytes, or
/// none; at most 64 MiB. (The fake Discord reads its requests itself: it also serves
/// the CONNECT tunnel and the gateway WebSocket on the same connections.)
async fn read_body<R: tokio::io::AsyncBufRead + Unpin>(
    reader: &mut R,
    chunked: bool,
    content_length: Option<&str>,
) -> std::io::Result<Vec<u8>> {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt};
    const MAX_BODY: usize = 64 * 1024 * 1024;
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
    let mut body = Vec::new();
    let mut line = String::new();
    if chunked {
        loop {
            line.clear();
            reader.read_line(&mut line).await?;
            let size = line.trim().split(';').next().unwrap_or_default();
            let size = usize::from_str_radix(size, 16).map_err(|_| bad("bad chunk size"))?;
            if body.len() + size > MAX_BODY {
                return Err(bad("body too large"));
            }
            if size == 0 {
                // Trailers, up to the empty line.
                loop {
                    line.clear();
                    if reader.read_line(&mut line).await? == 0 || line.trim().is_empty() {
                        break;
                    }
                }
                break;
            }
            let start = body.len();
            body.resize(start + size, 0);
            reader.read_exact(&mut body[start..]).await?;
            line.clear();
            reader.read_line(&mut line).await?; // the CRLF after the chunk
        }
    } else if let Some(len) = content_length {
        let len: usize = len.trim().parse().map_err(|_| bad("bad content-length"))?;
        if len > MAX_BODY {
            return Err(bad("body too large"));
        }
        body.resize(len, 0);
        reader.read_exact(&mut body).await?;
    }
    Ok(body)
}
