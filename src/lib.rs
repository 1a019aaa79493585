//! firstmate: run AI coding agents in isolated Docker containers and drive them from chat.
//!
//! Module map (ARCHITECTURE.md has the flows and the invariants):
//! - [`config`]: `bot.toml` to a validated [`config::Config`]; the only reader of the
//!   process environment for settings (through the function `main` hands it).
//! - [`command`]: the chat command grammar shared by every front end. Pure.
//! - [`protocol`]: agent wire formats (Claude Code stream-json) to neutral
//!   [`protocol::AgentEvent`]s and back. Pure.
//! - [`event`]: session states and the events the engine stores and publishes.
//! - [`store`]: the database (SQLite or PostgreSQL via sqlx); the only module with SQL.
//! - [`runtime`]: Docker through bollard; the only module that imports bollard.
//! - [`engine`]: sessions, the queue, timeouts, re-attach; no chat and no Docker I/O of
//!   its own.
//! - [`frontend`]: the console front end and the renderer the front ends share.

pub mod command;
pub mod config;
pub mod engine;
pub mod event;
pub mod frontend;
pub mod protocol;
pub mod runtime;
pub mod store;
