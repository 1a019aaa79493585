//! The Discord front end (serenity 0.12): one slash command `/agent` with a subcommand
//! per chat command; `new` answers in the channel and opens a public thread from that
//! answer; everything a session says goes into its thread, paced by the shared
//! [`Outbox`](crate::frontend::outbox) (at most one edit per 1.5 s, ≤ 1900 characters a
//! message, code fences never split); a message in the thread is the next prompt; the
//! status message carries Stop and Interrupt buttons.
//!
//! serenity runs the gateway only; its address comes from `GET /api/v10/gateway` at
//! `discord.api_base_url` (Discord, a REST proxy, or a test double). Every REST call goes
//! through [`rest::Rest`], which reads Discord's rate-limit headers, waits before a
//! request would get a 429, and honours a 429's `retry_after` when one comes anyway.
//!
//! `commands.rs` parses interactions, buttons and thread messages and renders replies;
//! what a command does and who may do it is the shared chat layer's
//! ([`crate::frontend::actions`]). `threads.rs` is Discord's side of delivery; `rest.rs`
//! every REST call; this file the errors, `doctor`'s check and the client's start. Only
//! `discord.allowed_users`, and members with one of `discord.allowed_roles`, may start or
//! steer sessions; anyone else gets a short refusal only they see.

mod commands;
pub mod render;
pub mod rest;
mod threads;

pub use self::commands::thread_name;
use self::commands::*;
use self::threads::*;

use std::sync::{Arc, OnceLock};

use serde_json::{Value, json};
use serenity::all::{
    ClientBuilder, CommandDataOption, CommandDataOptionValue, CommandInteraction,
    CommandOptionType, ComponentInteraction, Context, CreateCommand, CreateCommandOption,
    EventHandler, GatewayIntents, HttpBuilder, Interaction, Message, Ready,
};
use tracing::{info, warn};

use crate::approval::Answer;
use crate::command::{Command, NewArgs};
use crate::config::DiscordConfig;
use crate::engine::Engine;
use crate::frontend::actions::{Actor, Attachment, Chat, Reply, thread_command_name};
use crate::frontend::delivery::{Deliveries, Threads};
use crate::frontend::outbox::{Body, Limits, Op, Sink};
use crate::frontend::render as shared;
use crate::store::{Binding, SessionRecord, Store};

use self::render::{MESSAGE_CHARS, Renderer};
use self::rest::{File, Rest, RestError, message};

pub const FRONTEND: &str = "discord";
/// The slash command.
pub const COMMAND: &str = "agent";

#[derive(Debug, thiserror::Error)]
pub enum DiscordError {
    #[error(
        "Discord refused the bot token ({reason}); check the token named by {origin} in the config \
         (the Bot token from the Discord developer portal, Bot tab)"
    )]
    Login { origin: String, reason: String },
    #[error(transparent)]
    Rest(#[from] RestError),
    #[error(
        "cannot connect to the Discord gateway (its address comes from {base}/api/v10/gateway/bot): \
         {reason}; check discord.api_base_url in the config and the network"
    )]
    Gateway { base: String, reason: String },
    #[error("the Discord front end stopped: {0}")]
    Client(String),
}

/// The Discord front end, before it runs.
pub struct DiscordFrontend {
    cfg: DiscordConfig,
}

fn rest_of(cfg: &DiscordConfig) -> Rest {
    Rest::new(&cfg.api_base_url, cfg.token.value().unwrap_or_default())
}

/// Checks the token against the API: the bot's name, for `firstmate doctor`.
pub async fn check(cfg: &DiscordConfig) -> Result<String, DiscordError> {
    let me = match rest_of(cfg).get("/users/@me").await {
        Ok(me) => me,
        Err(RestError::Api {
            status: 401,
            message,
            ..
        }) => {
            return Err(DiscordError::Login {
                origin: cfg.token.origin("discord.token"),
                reason: format!("401 {message}"),
            });
        }
        Err(e) => return Err(e.into()),
    };
    Ok(format!(
        "logged in as {} ({})",
        me["username"].as_str().unwrap_or("?"),
        me["id"].as_str().unwrap_or("?")
    ))
}

/// A gateway connection that ended: a refused token, or no connection at all.
fn gateway_error(cfg: &DiscordConfig, e: serenity::Error) -> DiscordError {
    use serenity::all::GatewayError as G;
    match &e {
        serenity::Error::Gateway(G::InvalidAuthentication) => DiscordError::Login {
            origin: cfg.token.origin("discord.token"),
            reason: "the gateway closed with 4004 authentication failed".into(),
        },
        serenity::Error::Http(h) if h.status_code().is_some_and(|c| c.as_u16() == 401) => {
            DiscordError::Login {
                origin: cfg.token.origin("discord.token"),
                reason: crate::error::cause(&e),
            }
        }
        serenity::Error::Gateway(_)
        | serenity::Error::Tungstenite(_)
        | serenity::Error::Io(_)
        | serenity::Error::Http(_) => DiscordError::Gateway {
            base: cfg.api_base_url.trim_end_matches('/').to_string(),
            reason: crate::error::cause(&e),
        },
        _ => DiscordError::Client(crate::error::cause(&e)),
    }
}

/// A thread's web link, `https://discord.com/channels/<guild>/<thread>`: the guild of
/// the thread (or its channel) as commands there told it, else the one guild configured.
fn thread_link(
    guilds: Arc<dashmap::DashMap<String, u64>>,
    cfg: &DiscordConfig,
) -> crate::frontend::actions::ThreadLink {
    let only = (cfg.guild_ids.len() == 1).then(|| cfg.guild_ids[0]);
    Arc::new(move |s, thread| {
        let guild = guilds
            .get(thread)
            .or_else(|| guilds.get(&s.room))
            .map(|g| *g)
            .or(only)?;
        Some(format!("https://discord.com/channels/{guild}/{thread}"))
    })
}

impl DiscordFrontend {
    pub fn new(cfg: DiscordConfig) -> DiscordFrontend {
        DiscordFrontend { cfg }
    }

    /// Connects to the gateway and serves until the connection ends for good.
    pub async fn run(self, engine: Engine) -> Result<(), DiscordError> {
        check(&self.cfg).await?;
        let intents = GatewayIntents::GUILDS
            | GatewayIntents::GUILD_MESSAGES
            | GatewayIntents::MESSAGE_CONTENT;
        let rest = rest_of(&self.cfg);
        let guilds = Arc::new(dashmap::DashMap::new());
        let handler = Handler {
            inner: Arc::new(HandlerInner {
                rest: rest.clone(),
                cfg: self.cfg.clone(),
                chat: Chat::new(engine.clone(), FRONTEND)
                    .with_thread_link(thread_link(guilds.clone(), &self.cfg)),
                engine,
                deliveries: OnceLock::new(),
                guilds,
            }),
        };
        // serenity only for the gateway (its address from `api_base_url`); every REST
        // call goes through `Rest`, which honours the rate limits there.
        let http = HttpBuilder::new(self.cfg.token.value().unwrap_or_default())
            .proxy(self.cfg.api_base_url.trim_end_matches('/'))
            .ratelimiter_disabled(true)
            .build();
        let mut client = ClientBuilder::new_with_http(http, intents)
            .event_handler(handler)
            .await
            .map_err(|e| DiscordError::Client(e.to_string()))?;
        client
            .start()
            .await
            .map_err(|e| gateway_error(&self.cfg, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_names_come_from_the_prompt() {
        assert_eq!(thread_name("abc", "Fix the tests\nplease"), "Fix the tests");
        assert_eq!(thread_name("abc", "  \n"), "session abc");
        let long = "x".repeat(200);
        assert_eq!(thread_name("abc", &long).chars().count(), 81);
    }

    #[test]
    fn the_command_has_every_subcommand_and_new_needs_a_prompt() {
        let v = serde_json::to_value(agent_command()).expect("json");
        let subs: Vec<&str> = v["options"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|o| o["name"].as_str())
            .collect();
        for s in [
            "new",
            "stop",
            "interrupt",
            "status",
            "logs",
            "resume",
            "diff",
            "push",
            "pr",
            "list",
            "help",
        ] {
            assert!(subs.contains(&s), "{s} missing: {subs:?}");
        }
        let new = &v["options"][0];
        assert_eq!(new["options"][0]["name"], "prompt");
        assert_eq!(new["options"][0]["required"], true);
        assert_eq!(new["options"][1]["autocomplete"], true);
    }
}
