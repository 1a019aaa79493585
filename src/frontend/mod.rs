//! Front ends: they parse what people type, call the engine, and render its events.
//! A front end knows no Docker and no SQL.

pub mod actions;
pub mod admin;
pub mod console;
pub mod delivery;
pub mod discord;
pub mod matrix;
pub mod outbox;
pub mod render;
pub mod view;
