//! The Matrix front end: a matrix-sdk client (SQLite store, end-to-end encryption) that
//! takes commands from rooms and runs each session in the thread of its `new` message.
//! The only module that imports `matrix_sdk`.
//!
//! - [`render`]: the neutral view's items and the chat replies as Matrix message
//!   contents (plain body and HTML). Pure.
//! - this file: login (the login is saved next to the store and restored, so a restart
//!   is the same device), the sync loop, parsing commands (what they do is the shared
//!   [`crate::frontend::actions`]), and the Matrix side of delivery
//!   ([`crate::frontend::delivery`] over the shared [`crate::frontend::outbox`]).
//!
//! Exactly once, across restarts, both ways:
//! - In: the sync position firstmate goes on from is stored (in the SDK's store) only
//!   after every message of a sync response was handled, and the ids of handled messages
//!   are remembered, so a message is handled once even when a crash makes a response
//!   come again. A `new` whose thread already has a session is not run twice. After a
//!   long absence, the messages a sync leaves out (`limited`) are fetched page by page.
//!   The first sync of a new store, and a newly joined room's history before the bot's
//!   own join, are history: they are not run.
//! - Out: each thread's binding stores the last event whose output the homeserver has
//!   acknowledged; delivery goes on from there.

pub mod render;

use std::collections::{HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use matrix_sdk::attachment::AttachmentConfig;
use matrix_sdk::authentication::matrix::MatrixSession;
use matrix_sdk::config::{RequestConfig, SyncSettings, SyncToken};
use matrix_sdk::deserialized_responses::{TimelineEvent, TimelineEventKind};
use matrix_sdk::media::{MediaFormat, MediaRequestParameters};
use matrix_sdk::room::MessagesOptions;
use matrix_sdk::room::reply::{EnforceThread, Reply as SdkReply};
use matrix_sdk::ruma::api::client::filter::{FilterDefinition, RoomEventFilter, RoomFilter};
use matrix_sdk::ruma::api::client::sync::sync_events::v3::Filter;
use matrix_sdk::ruma::api::error::ErrorKind;
use matrix_sdk::ruma::events::room::message::{AddMentions, ReplyWithinThread};
use matrix_sdk::ruma::events::room::{EncryptedFile, MediaSource};
use matrix_sdk::ruma::{OwnedEventId, OwnedRoomId, OwnedUserId, UInt};
use matrix_sdk::store::StateStoreDataKey;
use matrix_sdk::{Client, Room, RoomState, SessionMeta, SessionTokens};
use serde_json::Value;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use self::render::Renderer;
use crate::command::{self, Command};
use crate::config::MatrixConfig;
use crate::engine::Engine;
use crate::frontend::actions::{Actor, Attachment, Chat, Download, Reply};
use crate::frontend::delivery::{Deliveries, Threads};
use crate::frontend::outbox::Body;
use crate::frontend::outbox::{Limits, Op, Sink};
use crate::store::{Binding, SessionRecord, Store};

/// The default log filter for the SDK's own logs: its warnings and errors, without the
/// HTTP client's report of every expected 404 (a room without encryption state...) and
/// the crypto layer's chatter about key backups firstmate does not use. Failures that
/// matter are logged by this module, with what they mean.
pub const LOG_FILTER: &str = "matrix_sdk=warn,matrix_sdk::http_client=off,matrix_sdk_base=warn,\
     matrix_sdk_crypto=error,matrix_sdk_sqlite=warn,matrix_sdk_common=warn";

/// The `frontend` name of sessions and bindings made here.
pub const FRONTEND: &str = "matrix";

/// The saved login, in `store_path`.
const SESSION_FILE: &str = "firstmate-login.json";
/// Keys of firstmate's own values in the SDK's store.
const KEY_SYNC_TOKEN: &str = "firstmate.sync_token";
const KEY_HANDLED: &str = "firstmate.handled";
const KEY_ROOMS: &str = "firstmate.rooms";
/// How many handled message ids are remembered (a crash replays one sync response).
const HANDLED_KEEP: usize = 2000;
/// How many timeline events one sync may bring per room before it says `limited`.
const TIMELINE_LIMIT: u32 = 200;
/// Pages of 100 events fetched at most to fill a gap after a long absence.
const GAP_PAGES: usize = 50;
/// How long a message that could not be decrypted is tried again (its key may come late).
const UTD_RETRY: Duration = Duration::from_secs(600);

#[derive(Debug, thiserror::Error)]
pub enum MatrixError {
    #[error(
        "cannot open the Matrix store at {path}: {reason}; check matrix.store_path (a folder firstmate may write)"
    )]
    Store { path: PathBuf, reason: String },
    #[error(
        "the Matrix store at {path} belongs to another login ({reason}); point matrix.store_path at a new folder, or delete this one to start afresh (encrypted history it held is lost)"
    )]
    StoreMismatch { path: PathBuf, reason: String },
    #[error(
        "cannot reach the Matrix homeserver {url}: {reason}; check matrix.homeserver_url in the config and the network"
    )]
    Connect { url: String, reason: String },
    #[error(
        "the Matrix homeserver {url} answered {reason}; check that matrix.homeserver_url in the config is the homeserver's client API address"
    )]
    Homeserver { url: String, reason: String },
    #[error("Matrix login as {user} failed: {reason}; check the {credential} in the config")]
    Login {
        user: String,
        /// Which secret was used, and the config key that names it.
        credential: String,
        reason: String,
    },
    #[error(
        "matrix.user_id is {configured} but the Matrix access token belongs to {actual}; fix matrix.user_id or the token"
    )]
    WrongUser { configured: String, actual: String },
    #[error(
        "[matrix] has no credential set: set the variable or file named by password_env / password_file or access_token_env / access_token_file"
    )]
    NoCredential,
    #[error("the Matrix login was revoked ({0}); start firstmate again to log in afresh")]
    LoggedOut(String),
    #[error("Matrix error: {0}")]
    Other(String),
}

type Result<T, E = MatrixError> = std::result::Result<T, E>;

fn other(e: impl std::fmt::Display) -> MatrixError {
    MatrixError::Other(e.to_string())
}

/// The credential a login uses, for messages: the access token when set, else the password.
fn credential(cfg: &MatrixConfig) -> String {
    if cfg.access_token.value().is_some() {
        format!(
            "access token named by {}",
            cfg.access_token.origin("matrix.access_token")
        )
    } else {
        format!(
            "password named by {}",
            cfg.password.origin("matrix.password")
        )
    }
}

/// A failed request to the homeserver, told apart: no answer (refused, DNS, timeout,
/// TLS) is the address's fault; a refused credential is the password's or token's; any
/// other answer is the server's.
fn http_failure(cfg: &MatrixConfig, e: &matrix_sdk::HttpError) -> MatrixError {
    if let matrix_sdk::HttpError::Reqwest(r) = e
        && let Some(reason) = crate::error::network_failure(r)
    {
        return MatrixError::Connect {
            url: cfg.homeserver_url.clone(),
            reason,
        };
    }
    if let matrix_sdk::HttpError::Cached(inner) = e {
        return http_failure(cfg, inner);
    }
    match e.client_api_error_kind() {
        Some(kind) if is_credential_error(kind) => MatrixError::Login {
            user: cfg.user_id.clone(),
            credential: credential(cfg),
            reason: crate::error::cause(e),
        },
        _ => MatrixError::Homeserver {
            url: cfg.homeserver_url.clone(),
            reason: crate::error::cause(e),
        },
    }
}

/// [`http_failure`] for the SDK's wider error.
fn sdk_failure(cfg: &MatrixConfig, e: &matrix_sdk::Error) -> MatrixError {
    match e {
        matrix_sdk::Error::Http(h) => http_failure(cfg, h),
        _ => other(crate::error::cause(e)),
    }
}

/// The homeserver refused who we say we are (as opposed to being unreachable or broken).
fn is_credential_error(kind: &ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::Forbidden
            | ErrorKind::UnknownToken { .. }
            | ErrorKind::MissingToken
            | ErrorKind::UserDeactivated
            | ErrorKind::UserLocked
            | ErrorKind::InvalidUsername
    )
}

// --- login --------------------------------------------------------------------------

/// A logged-in client. `connect` then `run`.
pub struct MatrixFrontend {
    client: Client,
    cfg: MatrixConfig,
}

impl MatrixFrontend {
    /// Opens the store and logs in: restores the saved login (the same device as last
    /// time), else logs in with the access token or the password and saves the login.
    pub async fn connect(cfg: MatrixConfig) -> Result<MatrixFrontend> {
        let path = cfg.store_path.clone();
        create_private_dir(&path)?;
        let client = open_client(&cfg).await?;
        let saved = read_saved_login(&path);
        let restored = match saved {
            Some(session) => {
                let device = session.meta.device_id.to_string();
                restore(&client, session, &path).await?;
                match client.whoami().await {
                    Ok(w) => {
                        check_user(&cfg, w.user_id.as_str())?;
                        true
                    }
                    Err(e)
                        if matches!(
                            e.client_api_error_kind(),
                            Some(ErrorKind::UnknownToken { .. })
                        ) =>
                    {
                        // A revoked login means its device is gone, with its keys on
                        // the homeserver: start over as a new device with new keys.
                        warn!(%device, "the saved Matrix login was revoked; logging in as a new device (messages encrypted for the old one cannot be read any more)");
                        drop(client);
                        forget_device(&path)?;
                        let client = open_client(&cfg).await?;
                        fresh_login(&client, &cfg).await?;
                        return Ok(MatrixFrontend { client, cfg });
                    }
                    Err(e) => return Err(http_failure(&cfg, &e)),
                }
            }
            None => false,
        };
        if !restored {
            fresh_login(&client, &cfg).await?;
        }
        Ok(MatrixFrontend { client, cfg })
    }

    pub fn user_id(&self) -> Option<String> {
        self.client.user_id().map(|u| u.to_string())
    }

    pub fn device_id(&self) -> Option<String> {
        self.client.device_id().map(|d| d.to_string())
    }

    /// Runs the front end until an unrecoverable error: syncs, handles commands, and
    /// delivers every session's output to its thread.
    pub async fn run(self, engine: Engine) -> Result<()> {
        let me = self
            .client
            .user_id()
            .ok_or_else(|| other("not logged in"))?
            .to_owned();
        info!(user = %me, device = ?self.device_id(), "Matrix front end running");
        let handled = Handled::load(&self.client).await;
        let rooms = load_json::<Vec<String>>(&self.client, KEY_ROOMS)
            .await
            .unwrap_or_default();
        // What the homeserver takes in one upload (`get`); when it does not say, a
        // common default.
        let upload_limit = match self.client.load_or_fetch_max_upload_size().await {
            Ok(n) => u64::from(n),
            Err(e) => {
                warn!(error = %e, "the homeserver's upload limit is unknown; assuming 50 MB");
                50 * 1024 * 1024
            }
        };
        let (reply_tx, reply_rx) = mpsc::unbounded_channel();
        let deliveries = Deliveries::new(
            MatrixThreads {
                client: self.client.clone(),
                store: engine.store().clone(),
            },
            engine.clone(),
        );
        let bot = Bot {
            inner: Arc::new(BotInner {
                client: self.client.clone(),
                cfg: self.cfg,
                me,
                replies: reply_tx,
                deliveries: deliveries.clone(),
                handled: tokio::sync::Mutex::new(handled),
                chat: Chat::new(engine.clone(), FRONTEND).with_upload_limit(upload_limit),
                active_rooms: Mutex::new(rooms.into_iter().collect()),
            }),
        };
        tokio::spawn(send_replies(self.client.clone(), reply_rx));
        deliveries.start().await;
        bot.sync_loop().await
    }
}

/// The bot's client on its SQLite store (state, sync position, encryption keys), not yet
/// logged in.
///
/// Requests time out after 30 s; a homeserver's `M_LIMIT_EXCEEDED` is retried after its
/// `retry_after_ms` (and network errors with a growing pause) for up to 2 minutes, then
/// the request fails: the outbox tries again later with what came meanwhile, and says
/// so at WARN with the session.
///
/// The SDK's own record of the last sync position is dropped: firstmate keeps its own
/// (stored only once a response is fully handled) and syncs from it. Were the SDK's kept,
/// the SDK would throw away a response it saw before a crash ("the same sync response
/// twice") instead of handing its messages over again.
async fn open_client(cfg: &MatrixConfig) -> Result<Client> {
    let path = &cfg.store_path;
    // Every request has a deadline, and gives up retrying after a while: a homeserver
    // that does not answer shows as a logged failure, never as a thread that hangs.
    let requests = RequestConfig::new()
        .timeout(Duration::from_secs(30))
        .max_retry_time(Duration::from_secs(120));
    let client = client_builder(cfg)
        .request_config(requests)
        .sqlite_store(path, None)
        .build()
        .await
        .map_err(|e| MatrixError::Store {
            path: path.clone(),
            reason: e.to_string(),
        })?;
    client
        .state_store()
        .remove_kv_data(StateStoreDataKey::SyncToken)
        .await
        .map_err(|e| MatrixError::Store {
            path: path.clone(),
            reason: e.to_string(),
        })?;
    Ok(client)
}

/// Drops the saved login and the encryption keys of a device that no longer exists.
fn forget_device(store: &Path) -> Result<()> {
    let files = [
        SESSION_FILE,
        "matrix-sdk-crypto.sqlite3",
        "matrix-sdk-crypto.sqlite3-wal",
        "matrix-sdk-crypto.sqlite3-shm",
    ];
    for f in files {
        match std::fs::remove_file(store.join(f)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(MatrixError::Store {
                    path: store.join(f),
                    reason: e.to_string(),
                });
            }
        }
    }
    Ok(())
}

fn create_private_dir(path: &Path) -> Result<()> {
    std::fs::create_dir_all(path).map_err(|e| MatrixError::Store {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700));
    }
    Ok(())
}

fn read_saved_login(store: &Path) -> Option<MatrixSession> {
    let text = std::fs::read_to_string(store.join(SESSION_FILE)).ok()?;
    match serde_json::from_str(&text) {
        Ok(s) => Some(s),
        Err(e) => {
            warn!(error = %e, "the saved Matrix login cannot be read; logging in afresh");
            None
        }
    }
}

fn save_login(store: &Path, session: &MatrixSession) -> Result<()> {
    let path = store.join(SESSION_FILE);
    let json = serde_json::to_vec_pretty(session).map_err(other)?;
    let tmp = store.join(format!("{SESSION_FILE}.tmp"));
    {
        use std::io::Write;
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(&tmp).map_err(|e| MatrixError::Store {
            path: tmp.clone(),
            reason: e.to_string(),
        })?;
        f.write_all(&json)
            .and_then(|_| f.sync_all())
            .map_err(|e| MatrixError::Store {
                path: tmp.clone(),
                reason: e.to_string(),
            })?;
    }
    std::fs::rename(&tmp, &path).map_err(|e| MatrixError::Store {
        path,
        reason: e.to_string(),
    })
}

async fn restore(client: &Client, session: MatrixSession, path: &Path) -> Result<()> {
    client.restore_session(session).await.map_err(|e| {
        let reason = e.to_string();
        if reason.contains("doesn't match") || reason.contains("mismatch") {
            MatrixError::StoreMismatch {
                path: path.to_path_buf(),
                reason,
            }
        } else {
            MatrixError::Store {
                path: path.to_path_buf(),
                reason,
            }
        }
    })
}

fn check_user(cfg: &MatrixConfig, actual: &str) -> Result<()> {
    if actual != cfg.user_id {
        return Err(MatrixError::WrongUser {
            configured: cfg.user_id.clone(),
            actual: actual.to_string(),
        });
    }
    Ok(())
}

/// Who an access token belongs to, asked with a throwaway client.
async fn whoami_token(cfg: &MatrixConfig, token: &str) -> Result<(OwnedUserId, Option<String>)> {
    let probe = client_builder(cfg)
        .request_config(RequestConfig::short_retry().timeout(Duration::from_secs(20)))
        .build()
        .await
        .map_err(|e| MatrixError::Connect {
            url: cfg.homeserver_url.clone(),
            reason: e.to_string(),
        })?;
    let user: OwnedUserId = cfg.user_id.as_str().try_into().map_err(other)?;
    probe
        .restore_session(MatrixSession {
            meta: SessionMeta {
                user_id: user,
                device_id: "FIRSTMATEPROBE".into(),
            },
            tokens: SessionTokens {
                access_token: token.to_string(),
                refresh_token: None,
            },
        })
        .await
        .map_err(other)?;
    let w = probe.whoami().await.map_err(|e| http_failure(cfg, &e))?;
    Ok((w.user_id, w.device_id.map(|d| d.to_string())))
}

/// Logs in with the configured credential as a new device and saves the login.
async fn fresh_login(client: &Client, cfg: &MatrixConfig) -> Result<()> {
    let path = &cfg.store_path;
    if let Some(token) = cfg.access_token.value() {
        let (user, device_id) = whoami_token(cfg, token).await?;
        check_user(cfg, user.as_str())?;
        let device_id = device_id.ok_or_else(|| MatrixError::Login {
            user: cfg.user_id.clone(),
            credential: credential(cfg),
            reason: "the homeserver did not say which device the access token belongs to".into(),
        })?;
        let session = MatrixSession {
            meta: SessionMeta {
                user_id: user,
                device_id: device_id.as_str().into(),
            },
            tokens: SessionTokens {
                access_token: token.to_string(),
                refresh_token: None,
            },
        };
        restore(client, session.clone(), path).await?;
        save_login(path, &session)?;
        info!(device = %device_id, "logged in to Matrix with the access token");
        return Ok(());
    }
    let Some(password) = cfg.password.value() else {
        return Err(MatrixError::NoCredential);
    };
    let resp = client
        .matrix_auth()
        .login_username(&cfg.user_id, password)
        .initial_device_display_name("firstmate")
        .send()
        .await
        .map_err(|e| {
            let reason = e.to_string();
            if reason.contains("doesn't match") || reason.contains("mismatch") {
                MatrixError::StoreMismatch {
                    path: path.clone(),
                    reason,
                }
            } else {
                sdk_failure(cfg, &e)
            }
        })?;
    check_user(cfg, resp.user_id.as_str())?;
    let session = client
        .matrix_auth()
        .session()
        .ok_or_else(|| other("the login gave no session"))?;
    save_login(path, &session)?;
    info!(device = %resp.device_id, "logged in to Matrix with the password");
    Ok(())
}

/// A client builder for the configured homeserver. The configured `homeserver_url` wins
/// over the address a login response advertises (`well_known`): a bot in a container or
/// behind a reverse proxy reaches the server by an address the server does not know.
fn client_builder(cfg: &MatrixConfig) -> matrix_sdk::ClientBuilder {
    Client::builder()
        .homeserver_url(&cfg.homeserver_url)
        .respect_login_well_known(false)
}

/// For `firstmate doctor`: checks that the configured login works (a `whoami`), without
/// touching the bot's store. Returns what it found.
pub async fn check(cfg: &MatrixConfig) -> Result<String> {
    let client = client_builder(cfg)
        .request_config(RequestConfig::short_retry().timeout(Duration::from_secs(20)))
        .build()
        .await
        .map_err(|e| MatrixError::Connect {
            url: cfg.homeserver_url.clone(),
            reason: e.to_string(),
        })?;
    if let Some(saved) = read_saved_login(&cfg.store_path) {
        let device = saved.meta.device_id.to_string();
        client.restore_session(saved).await.map_err(other)?;
        match client.whoami().await {
            Ok(w) => {
                check_user(cfg, w.user_id.as_str())?;
                return Ok(format!(
                    "logged in as {} on {} (device {device}, saved in {})",
                    w.user_id,
                    cfg.homeserver_url,
                    cfg.store_path.display()
                ));
            }
            Err(e)
                if !matches!(
                    e.client_api_error_kind(),
                    Some(ErrorKind::UnknownToken { .. })
                ) =>
            {
                return Err(http_failure(cfg, &e));
            }
            // Revoked: `run` logs in again with the credential; check that instead.
            Err(_) => {}
        }
    }
    if let Some(token) = cfg.access_token.value() {
        let (user, device) = whoami_token(cfg, token).await?;
        check_user(cfg, user.as_str())?;
        return Ok(format!(
            "the access token is {user}'s (device {}) on {}",
            device.as_deref().unwrap_or("?"),
            cfg.homeserver_url
        ));
    }
    let Some(password) = cfg.password.value() else {
        return Err(MatrixError::NoCredential);
    };
    let probe = client_builder(cfg)
        .request_config(RequestConfig::short_retry().timeout(Duration::from_secs(20)))
        .build()
        .await
        .map_err(other)?;
    probe
        .matrix_auth()
        .login_username(&cfg.user_id, password)
        .initial_device_display_name("firstmate doctor")
        .send()
        .await
        .map_err(|e| sdk_failure(cfg, &e))?;
    let w = probe.whoami().await.map_err(|e| http_failure(cfg, &e))?;
    // The probe's device is not needed any more.
    let _ = probe.logout().await;
    check_user(cfg, w.user_id.as_str())?;
    Ok(format!(
        "the password logs in as {} on {}",
        w.user_id, cfg.homeserver_url
    ))
}

// --- firstmate's values in the SDK store -----------------------------------------------

async fn load_json<T: serde::de::DeserializeOwned>(client: &Client, key: &str) -> Option<T> {
    let bytes = client
        .state_store()
        .get_custom_value(key.as_bytes())
        .await
        .ok()
        .flatten()?;
    serde_json::from_slice(&bytes).ok()
}

async fn save_json<T: serde::Serialize>(client: &Client, key: &str, value: &T) {
    let Ok(bytes) = serde_json::to_vec(value) else {
        return;
    };
    if let Err(e) = client
        .state_store()
        .set_custom_value(key.as_bytes(), bytes)
        .await
    {
        warn!(key, error = %e, "cannot save to the Matrix store");
    }
}

fn status_key_of(session: &str) -> String {
    format!("firstmate.status.{session}")
}

/// The ids of the last messages handled.
struct Handled {
    order: VecDeque<String>,
    set: HashSet<String>,
}

impl Handled {
    async fn load(client: &Client) -> Handled {
        let order: VecDeque<String> = load_json::<Vec<String>>(client, KEY_HANDLED)
            .await
            .unwrap_or_default()
            .into();
        let set = order.iter().cloned().collect();
        Handled { order, set }
    }

    fn contains(&self, id: &str) -> bool {
        self.set.contains(id)
    }

    async fn add(&mut self, client: &Client, id: &str) {
        if !self.set.insert(id.to_string()) {
            return;
        }
        self.order.push_back(id.to_string());
        while self.order.len() > HANDLED_KEEP {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        let list: Vec<&String> = self.order.iter().collect();
        save_json(client, KEY_HANDLED, &list).await;
    }
}

// --- the bot: sync and commands -------------------------------------------------------

#[derive(Clone)]
struct Bot {
    inner: Arc<BotInner>,
}

struct BotInner {
    client: Client,
    cfg: MatrixConfig,
    me: OwnedUserId,
    replies: mpsc::UnboundedSender<Outgoing>,
    deliveries: Deliveries<MatrixThreads>,
    handled: tokio::sync::Mutex<Handled>,
    /// The chat rules (who may steer, what a thread command does).
    chat: Chat,
    /// Rooms whose messages count: joined, from the bot's own join on.
    active_rooms: Mutex<HashSet<String>>,
}

/// A message from someone in a room, as the sync gave it.
#[derive(Debug, Clone)]
struct Incoming {
    room: OwnedRoomId,
    event_id: String,
    sender: String,
    content: Value,
}

/// An undecryptable message, tried again when keys arrive.
struct Undecrypted {
    room: OwnedRoomId,
    event: matrix_sdk::ruma::serde::Raw<matrix_sdk::ruma::events::AnySyncTimelineEvent>,
    since: tokio::time::Instant,
}

fn sync_filter() -> Filter {
    let mut timeline = RoomEventFilter::default();
    timeline.limit = Some(UInt::from(TIMELINE_LIMIT));
    let mut room = RoomFilter::default();
    room.timeline = timeline;
    let mut def = FilterDefinition::default();
    def.room = room;
    Filter::FilterDefinition(def)
}

impl Bot {
    fn client(&self) -> &Client {
        &self.inner.client
    }

    fn prefix(&self) -> &str {
        &self.inner.cfg.command_prefix
    }

    fn allowed(&self, user: &str) -> bool {
        self.inner.cfg.allowed_users.iter().any(|u| u == user)
    }

    async fn sync_loop(&self) -> Result<()> {
        let mut token: Option<String> = load_json(self.client(), KEY_SYNC_TOKEN).await;
        let mut pending: Vec<Undecrypted> = Vec::new();
        let mut failures = 0u32;
        loop {
            let first = token.is_none();
            let settings = SyncSettings::new()
                .filter(sync_filter())
                .timeout(if first {
                    Duration::ZERO
                } else {
                    Duration::from_secs(30)
                })
                .token(SyncToken::from_optional_token(token.clone()));
            match self.client().sync_once(settings).await {
                Ok(resp) => {
                    failures = 0;
                    self.handle_sync(&resp, token.as_deref(), &mut pending)
                        .await;
                    token = Some(resp.next_batch.clone());
                    save_json(self.client(), KEY_SYNC_TOKEN, &resp.next_batch).await;
                }
                Err(e) => {
                    if matches!(
                        e.client_api_error_kind(),
                        Some(ErrorKind::UnknownToken { .. })
                    ) {
                        return Err(MatrixError::LoggedOut(e.to_string()));
                    }
                    failures += 1;
                    let pause = Duration::from_secs(1 << failures.min(5));
                    warn!(error = %e, retry_in = ?pause, "Matrix sync failed");
                    tokio::time::sleep(pause).await;
                }
            }
        }
    }

    /// Handles one sync response that started at `since` (None: the first sync ever,
    /// whose old messages are history, not commands).
    async fn handle_sync(
        &self,
        resp: &matrix_sdk::sync::SyncResponse,
        since: Option<&str>,
        pending: &mut Vec<Undecrypted>,
    ) {
        let first = since.is_none();
        // Invites.
        for room_id in resp.rooms.invited.keys() {
            self.consider_invite(room_id).await;
        }
        // Messages, in order per room.
        let mut incoming: Vec<Incoming> = Vec::new();
        let mut rooms_changed = false;
        for (room_id, update) in &resp.rooms.joined {
            let was_active = self.is_active(room_id);
            let mut active = first || was_active;
            if first && !was_active {
                self.set_active(room_id);
                rooms_changed = true;
            }
            // A long absence: the sync gives only the latest events; fetch the rest.
            let mut events = match (since, &update.timeline.prev_batch) {
                (Some(since), Some(prev)) if update.timeline.limited && was_active => {
                    self.gap(room_id, prev, since).await
                }
                _ => Vec::new(),
            };
            events.extend(update.timeline.events.iter().cloned());
            for ev in &events {
                let raw = ev.raw();
                let Ok(v) = raw.deserialize_as_unchecked::<Value>() else {
                    continue;
                };
                let kind = v["type"].as_str().unwrap_or("");
                let sender = v["sender"].as_str().unwrap_or("");
                if kind == "m.room.member"
                    && v["state_key"].as_str() == Some(self.inner.me.as_str())
                    && v["content"]["membership"] == "join"
                {
                    if !active {
                        self.set_active(room_id);
                        rooms_changed = true;
                        active = true;
                    }
                    continue;
                }
                if !active || first || sender == self.inner.me.as_str() {
                    continue;
                }
                if let TimelineEventKind::UnableToDecrypt { event, .. } = &ev.kind {
                    pending.push(Undecrypted {
                        room: room_id.clone(),
                        event: event.clone(),
                        since: tokio::time::Instant::now(),
                    });
                    continue;
                }
                if let Some(inc) = incoming_of(room_id, &v) {
                    incoming.push(inc);
                }
            }
            if !active {
                // Joined, but the join itself was not in view: from now on, it counts.
                self.set_active(room_id);
                rooms_changed = true;
            }
        }
        if rooms_changed {
            let list: Vec<String> = self
                .inner
                .active_rooms
                .lock()
                .expect("rooms")
                .iter()
                .cloned()
                .collect();
            save_json(self.client(), KEY_ROOMS, &list).await;
        }
        // Messages whose keys came late.
        let mut still = Vec::new();
        for u in pending.drain(..) {
            let Some(room) = self.client().get_room(&u.room) else {
                continue;
            };
            match room.decrypt_event(u.event.cast_ref_unchecked(), None).await {
                Ok(te) if !te.kind.is_utd() => {
                    if let Ok(v) = te.raw().deserialize_as_unchecked::<Value>()
                        && let Some(inc) = incoming_of(&u.room, &v)
                    {
                        incoming.push(inc);
                    }
                }
                _ if u.since.elapsed() < UTD_RETRY => still.push(u),
                _ => warn!(room = %u.room, "a message could not be decrypted; it is not handled"),
            }
        }
        *pending = still;
        self.handle_all(incoming).await;
    }

    /// The events of a room between the sync position `to` and the start of a limited
    /// timeline (`from`), oldest first.
    async fn gap(&self, room_id: &OwnedRoomId, from: &str, to: &str) -> Vec<TimelineEvent> {
        let Some(room) = self.client().get_room(room_id) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let mut from = from.to_string();
        for _ in 0..GAP_PAGES {
            let mut opts = MessagesOptions::backward();
            opts.from = Some(from.clone());
            opts.to = Some(to.to_string());
            opts.limit = UInt::from(100u32);
            match room.messages(opts).await {
                Ok(page) => {
                    let n = page.chunk.len();
                    out.extend(page.chunk);
                    match page.end {
                        Some(end) if n > 0 => from = end,
                        _ => break,
                    }
                }
                Err(e) => {
                    warn!(room = %room_id, error = %e, "cannot fetch the messages sent while firstmate was away; some may not be handled");
                    break;
                }
            }
        }
        info!(room = %room_id, events = out.len(), "fetched the messages sent while firstmate was away");
        out.reverse();
        out
    }

    fn is_active(&self, room: &OwnedRoomId) -> bool {
        self.inner
            .active_rooms
            .lock()
            .expect("rooms")
            .contains(room.as_str())
    }

    fn set_active(&self, room: &OwnedRoomId) {
        self.inner
            .active_rooms
            .lock()
            .expect("rooms")
            .insert(room.to_string());
    }

    async fn consider_invite(&self, room_id: &OwnedRoomId) {
        let Some(room) = self.client().get_room(room_id) else {
            return;
        };
        if room.state() != RoomState::Invited {
            return;
        }
        let inviter = match room.invite_details().await {
            Ok(d) => d.inviter_id.to_string(),
            Err(e) => {
                warn!(room = %room_id, error = %e, "cannot read an invite");
                return;
            }
        };
        if !self.allowed(&inviter) {
            info!(room = %room_id, %inviter, "ignoring an invite from a user not in matrix.allowed_users");
            return;
        }
        match room.join().await {
            Ok(()) => info!(room = %room_id, %inviter, "joined a room"),
            Err(e) => {
                warn!(room = %room_id, error = %e, "cannot join a room; trying again on the next sync")
            }
        }
    }

    /// Handles a sync's messages: rooms side by side, each room's in order. Returns when
    /// all are handled, so the sync position moves on only then.
    async fn handle_all(&self, incoming: Vec<Incoming>) {
        let mut by_room: Vec<(OwnedRoomId, Vec<Incoming>)> = Vec::new();
        for inc in incoming {
            match by_room.iter_mut().find(|(r, _)| *r == inc.room) {
                Some((_, list)) => list.push(inc),
                None => by_room.push((inc.room.clone(), vec![inc])),
            }
        }
        let tasks = by_room.into_iter().map(|(_, list)| {
            let bot = self.clone();
            async move {
                for inc in list {
                    bot.handle_once(inc).await;
                }
            }
        });
        futures_util::future::join_all(tasks).await;
    }

    async fn handle_once(&self, inc: Incoming) {
        let mut handled = self.inner.handled.lock().await;
        if handled.contains(&inc.event_id) {
            debug!(event = %inc.event_id, "already handled");
            return;
        }
        drop(handled);
        self.handle(&inc).await;
        handled = self.inner.handled.lock().await;
        handled.add(self.client(), &inc.event_id).await;
    }

    async fn handle(&self, inc: &Incoming) {
        let c = &inc.content;
        if matches!(
            c["msgtype"].as_str(),
            Some("m.file" | "m.image" | "m.video" | "m.audio")
        ) {
            return self.attachment(inc).await;
        }
        if c["msgtype"] != "m.text" {
            return;
        }
        let rel = &c["m.relates_to"];
        if rel["rel_type"] == "m.replace" {
            return; // an edit: commands run as first sent
        }
        let thread = (rel["rel_type"] == "m.thread")
            .then(|| rel["event_id"].as_str().map(str::to_string))
            .flatten();
        let Some(body) = c["body"].as_str() else {
            return;
        };
        let is_plain_reply = rel.get("m.in_reply_to").is_some() && rel["is_falling_back"] != true;
        let body = if is_plain_reply {
            render::strip_reply_fallback(body)
        } else {
            body
        };
        match command::parse_prefixed(body, self.prefix()) {
            None => {
                if let Some(root) = thread {
                    self.prompt(inc, &root, body).await;
                }
            }
            Some(Err(e)) => self.reply(inc, thread.as_deref(), render::problem(e.message())),
            Some(Ok(Command::Prompt(text))) => {
                if let Some(root) = thread {
                    self.prompt(inc, &root, &text).await;
                }
            }
            Some(Ok(cmd)) => self.command(inc, thread.as_deref(), cmd).await,
        }
    }

    /// A file or image posted in a session's thread: into the workspace's inbox, and
    /// its caption (if any) with the file's path as the next prompt. Encrypted media
    /// (in encrypted rooms) is decrypted by the SDK on the way.
    async fn attachment(&self, inc: &Incoming) {
        let c = &inc.content;
        let rel = &c["m.relates_to"];
        if rel["rel_type"] != "m.thread" {
            return;
        }
        let Some(root) = rel["event_id"].as_str() else {
            return;
        };
        let body = c["body"].as_str().unwrap_or_default();
        // `filename` set: `body` is a caption; otherwise `body` is the file's name.
        let (name, caption) = match c["filename"].as_str() {
            Some(f) if f != body => (f.to_string(), body.to_string()),
            Some(f) => (f.to_string(), String::new()),
            None => (body.to_string(), String::new()),
        };
        let source = if let Some(url) = c["url"].as_str() {
            MediaSource::Plain(url.into())
        } else {
            match serde_json::from_value::<EncryptedFile>(c["file"].clone()) {
                Ok(f) => MediaSource::Encrypted(Box::new(f)),
                Err(e) => {
                    warn!(event = %inc.event_id, error = %e, "an attachment without a usable url or file");
                    return;
                }
            }
        };
        let client = self.client().clone();
        let file = Attachment {
            name,
            size: c["info"]["size"].as_u64(),
            open: Box::pin(async move {
                let request = MediaRequestParameters {
                    source,
                    format: MediaFormat::File,
                };
                let bytes = client
                    .media()
                    .get_media_content(&request, false)
                    .await
                    .map_err(|e| e.to_string())?;
                let reader: Download = Box::pin(std::io::Cursor::new(bytes));
                Ok(reader)
            }),
        };
        let chat = &self.inner.chat;
        let Some((session, replies)) = chat
            .prompt_with_files(&self.actor(inc), root, &caption, vec![file])
            .await
        else {
            return; // some other thread
        };
        for r in replies {
            self.answer(inc, Some(root), r);
        }
        self.inner.deliveries.ensure(&session);
    }

    fn actor(&self, inc: &Incoming) -> Actor {
        Actor {
            id: inc.sender.clone(),
            mention: inc.sender.clone(),
            allowed: self.allowed(&inc.sender),
        }
    }

    /// A message in a thread that is not a command: the next prompt of its session.
    async fn prompt(&self, inc: &Incoming, root: &str, text: &str) {
        let chat = &self.inner.chat;
        let Some((session, reply)) = chat.prompt(&self.actor(inc), root, text).await else {
            return; // some other thread
        };
        if let Some(r) = reply {
            self.answer(inc, Some(root), r);
        }
        self.inner.deliveries.ensure(&session);
    }

    async fn command(&self, inc: &Incoming, thread: Option<&str>, cmd: Command) {
        let chat = &self.inner.chat;
        let prefix = self.prefix().to_string();
        match cmd {
            Command::Help => self.reply(inc, thread, render::help(&prefix)),
            Command::List => match chat.sessions_in(inc.room.as_str()).await {
                Ok(list) => self.reply(inc, thread, render::list(&list, &prefix)),
                Err(r) => self.answer(inc, thread, r),
            },
            Command::New(args) => {
                let actor = self.actor(inc);
                if let Err(r) = chat.may_start(&actor) {
                    return self.answer(inc, thread, r);
                }
                if thread.is_some() {
                    return self.reply(
                        inc,
                        thread,
                        render::problem(&format!(
                            "`new` starts a thread of its own: send `{prefix} new ...` in the room, not inside a thread"
                        )),
                    );
                }
                if let Some(s) = chat.session_of(&inc.event_id).await {
                    // Handled before a crash: just make sure its output flows.
                    self.inner.deliveries.ensure(&s);
                    return;
                }
                // The thread is rooted at this message: bound with the session.
                let req = chat.new_request(
                    args,
                    &actor,
                    inc.room.as_str(),
                    None,
                    Some(inc.event_id.clone()),
                );
                match chat.engine().new_session(req).await {
                    Ok(s) => {
                        info!(session = %s.id, room = %inc.room, "session started from Matrix");
                        self.inner.deliveries.ensure(&s.id);
                    }
                    Err(e) => self.answer(inc, None, e.into()),
                }
            }
            Command::Use { .. } | Command::Prompt(_) => {}
            cmd => {
                let (session, reply) = chat.thread_command(&self.actor(inc), thread, &cmd).await;
                self.answer(inc, thread, reply);
                if let Some(id) = session {
                    self.inner.deliveries.ensure(&id);
                }
            }
        }
    }

    /// Answers with a chat action's reply, in Matrix's words.
    fn answer(&self, inc: &Incoming, thread: Option<&str>, reply: Reply) {
        let prefix = self.prefix();
        let body = match reply {
            // The thread shows it (the status message, the session's own lines).
            Reply::Done { .. } => return,
            Reply::Refused => render::problem(&format!(
                "{} may not start or steer sessions here; only the users in matrix.allowed_users may",
                inc.sender
            )),
            Reply::NotInThread(name) => render::problem(&format!(
                "`{name}` works in a session's thread: send `{prefix} {name}` as a reply in the thread of the session (`{prefix} list` shows the sessions here)"
            )),
            Reply::Problem(text) => render::problem(&text),
            Reply::Status(s) => render::status(&s),
            Reply::File { name, data } => {
                let Some(root) = thread else { return };
                let _ = self.inner.replies.send(Outgoing::File {
                    room: inc.room.clone(),
                    root: root.to_string(),
                    name,
                    data,
                });
                return;
            }
        };
        self.reply(inc, thread, body);
    }

    /// Answers a message: in its thread when it was in one, else as a reply to it.
    fn reply(&self, inc: &Incoming, thread: Option<&str>, body: Body) {
        let content = render::message(&body, true);
        let content = match thread {
            Some(root) => render::in_thread(content, root),
            None => render::reply_to(content, &inc.event_id),
        };
        let _ = self.inner.replies.send(Outgoing::Message {
            room: inc.room.clone(),
            content,
        });
    }
}

/// A room message from the sync, when it is one someone wrote.
fn incoming_of(room: &OwnedRoomId, v: &Value) -> Option<Incoming> {
    if v["type"] != "m.room.message" {
        return None;
    }
    Some(Incoming {
        room: room.clone(),
        event_id: v["event_id"].as_str()?.to_string(),
        sender: v["sender"].as_str()?.to_string(),
        content: v["content"].clone(),
    })
}

// --- replies ----------------------------------------------------------------------------

/// Answers to commands, sent one at a time, in order.
enum Outgoing {
    Message {
        room: OwnedRoomId,
        content: Value,
    },
    File {
        room: OwnedRoomId,
        root: String,
        name: String,
        data: Vec<u8>,
    },
}

async fn send_replies(client: Client, mut rx: mpsc::UnboundedReceiver<Outgoing>) {
    while let Some(out) = rx.recv().await {
        let room_id = match &out {
            Outgoing::Message { room, .. } | Outgoing::File { room, .. } => room.clone(),
        };
        let Some(room) = client.get_room(&room_id) else {
            warn!(room = %room_id, "cannot answer: not in the room");
            continue;
        };
        let res = match out {
            Outgoing::Message { content, .. } => room
                .send_raw("m.room.message", content)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Outgoing::File {
                root, name, data, ..
            } => send_file(&room, &root, &name, data).await,
        };
        if let Err(e) = res {
            warn!(room = %room_id, error = %e, "cannot answer a command");
        }
    }
}

/// The media type a file goes out with, from its name (clients pick a viewer by it).
fn mime_of(name: &str) -> &'static str {
    let lower = name.to_ascii_lowercase();
    let ext = lower.rsplit('.').next().unwrap_or_default();
    match ext {
        "md" => "text/markdown",
        "txt" | "log" | "rs" | "py" | "sh" | "toml" | "yaml" | "yml" => "text/plain",
        "csv" => "text/csv",
        "json" => "application/json",
        "gz" | "tgz" => "application/gzip",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "pdf" => "application/pdf",
        _ => "application/octet-stream",
    }
}

async fn send_file(room: &Room, root: &str, name: &str, data: Vec<u8>) -> Result<(), String> {
    let root: OwnedEventId = root.try_into().map_err(|e| format!("{e}"))?;
    let mime: mime::Mime = mime_of(name)
        .parse()
        .unwrap_or(mime::APPLICATION_OCTET_STREAM);
    let config = AttachmentConfig::new().reply(Some(SdkReply {
        event_id: root,
        enforce_thread: EnforceThread::Threaded(ReplyWithinThread::No),
        add_mentions: AddMentions::No,
    }));
    room.send_attachment(name, &mime, data, config)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

// --- delivery of session output to threads ---------------------------------------------

/// Matrix's side of [`Deliveries`]: a session's thread is the room and the root event
/// the binding names; the status message's event id is kept in the SDK's store.
struct MatrixThreads {
    client: Client,
    store: Store,
}

impl Threads for MatrixThreads {
    type Sink = RoomSink;
    type Renderer = Renderer;

    fn frontend(&self) -> &'static str {
        FRONTEND
    }

    async fn sink(
        &self,
        binding: &Binding,
        record: &SessionRecord,
    ) -> Option<(RoomSink, Option<String>)> {
        let session = &record.id;
        let room: OwnedRoomId = match record.room.as_str().try_into() {
            Ok(r) => r,
            Err(e) => {
                warn!(%session, error = %e, "the session's room is not a Matrix room id");
                return None;
            }
        };
        let status_event: Option<String> = load_json(&self.client, &status_key_of(session)).await;
        let sink = RoomSink {
            client: self.client.clone(),
            room,
            root: binding.thread_ref.clone(),
            session: session.clone(),
            store: self.store.clone(),
        };
        Some((sink, status_event))
    }

    fn status(&self, s: &SessionRecord) -> Body {
        render::status(s)
    }

    fn limits(&self) -> Limits {
        Limits::default()
    }
}

/// A session thread in a Matrix room.
struct RoomSink {
    client: Client,
    room: OwnedRoomId,
    root: String,
    session: String,
    store: Store,
}

impl Sink for RoomSink {
    async fn send(&self, op: &Op) -> Result<Option<String>, String> {
        let content = match op {
            Op::Mark { .. } => return Ok(None),
            Op::PostStatus { body } => render::in_thread(render::message(body, true), &self.root),
            Op::EditStatus { event_id, body } => {
                render::replacement(render::message(body, true), event_id)
            }
            Op::Post { body, .. } => render::in_thread(render::message(body, false), &self.root),
            Op::Edit { event_id, body, .. } => {
                render::replacement(render::message(body, false), event_id)
            }
        };
        let room = self
            .client
            .get_room(&self.room)
            .ok_or_else(|| format!("the bot is not in the room {}", self.room))?;
        let sent = room
            .send_raw("m.room.message", content)
            .await
            .map_err(|e| e.to_string())?;
        let id = sent.response.event_id.to_string();
        if matches!(op, Op::PostStatus { .. }) {
            save_json(&self.client, &status_key_of(&self.session), &id).await;
        }
        Ok(Some(id))
    }

    async fn delivered(&self, seq: i64) {
        if let Err(e) = self.store.set_delivered(&self.session, FRONTEND, seq).await {
            warn!(session = %self.session, error = %e, "cannot record what was delivered");
        }
    }
}
