//! Integration tests: the real `firstmate` binary, a real Docker daemon, the test agent
//! image. One test binary (it links once). Run by `scripts/test` on SQLite and again on
//! PostgreSQL (FIRSTMATE_TEST_DB=postgres).

mod admin;
mod approvals;
mod burst;
mod claude_real;
mod cleanup;
mod cli;
mod codex_real;
mod console;
mod discord;
mod discord_fake;
mod egress;
mod files;
mod golden;
mod matrix;
mod metrics;
mod proxy;
mod repos;
mod repos_support;
mod support;
mod worker_network;
