//! The Matrix front end: a matrix-sdk client (SQLite store, end-to-end encryption) that
//! takes commands from rooms and runs each session in the thread of its `new` message.
//! The only module that imports `matrix_sdk`.
//!
//! - [`render`]: the neutral view's items and the chat replies as Matrix message
//!   contents (plain body and HTML). Pure.
//! - `login.rs`: the client on its store; the login is saved next to the store and
//!   restored, so a restart is the same device; `doctor`'s [`check`].
//! - `bot.rs`: the sync loop and the messages it brings, parsed into commands (what
//!   they do is the shared [`crate::frontend::actions`]); replies, sent in order.
//! - `threads.rs`: the Matrix side of delivery ([`crate::frontend::delivery`] over the
//!   shared [`crate::frontend::outbox`]).
//! - `state.rs`: firstmate's values in the SDK's store (sync position, handled events).
//! - this file: the errors, and [`MatrixFrontend`], which connects and runs the bot.
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

mod bot;
mod login;
pub mod render;
mod state;
mod threads;

use self::bot::*;
pub use self::login::check;
use self::login::*;
use self::state::*;
use self::threads::*;

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
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use self::render::Renderer;
use crate::approval::Answer;
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
                chat: Chat::new(engine.clone(), FRONTEND)
                    .with_upload_limit(upload_limit)
                    .with_thread_link(Arc::new(|s, root| Some(render::thread_link(&s.room, root)))),
                active_rooms: Mutex::new(rooms.into_iter().collect()),
            }),
        };
        tokio::spawn(send_replies(self.client.clone(), reply_rx));
        deliveries.start().await;
        bot.sync_loop().await
    }
}
