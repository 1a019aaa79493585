//! firstmate: run AI coding agents in isolated Docker containers and drive them from chat.
//!
//! Module map (ARCHITECTURE.md has the flows and the invariants):
//! - [`config`]: `bot.toml` to a validated [`config::Config`]; the only reader of the
//!   process environment for settings (through the function `main` hands it).
//! - [`command`]: the chat command grammar shared by every front end. Pure.
//! - [`error`]: how errors are shown: a message holds its cause once; `main` prints `{}`.
//! - [`protocol`]: agent wire formats (Claude Code stream-json, Codex exec --json) to neutral
//!   [`protocol::AgentEvent`]s and back. Pure.
//! - [`event`]: session states and the events the engine stores and publishes.
//! - [`store`]: the database (SQLite or PostgreSQL via sqlx); the only module with SQL.
//! - [`runtime`]: Docker through bollard; the only module that imports bollard.
//! - [`engine`]: sessions, the queue, timeouts, re-attach; no chat and no Docker I/O of
//!   its own.
//! - [`gateway`]: the model gateway: per-session tokens swapped for the real credential,
//!   responses streamed through and metered; the only holder of model credentials.
//! - [`frontend`]: the console front end and the renderer the front ends share.
//! - [`frontend::admin`]: the admin socket on which `firstmate run` serves the console, and
//!   the client `firstmate console` becomes when a service answers there.
//! - [`frontend::matrix`]: the Matrix front end; the only module that imports matrix_sdk.
//! - [`frontend::discord`]: the Discord front end (serenity); the only module that imports
//!   serenity.
//! - [`metrics`]: `GET /metrics` (Prometheus text) and `GET /healthz` of `[metrics]`.
//! - [`proxy`]: `firstmate socket-proxy`, the Docker socket guard (hyper, no bollard).
//! - [`logging`]: the log setup every subcommand shares (filter, text or JSON, colour).

pub mod command;
pub mod config;
pub mod engine;
pub mod error;
pub mod event;
pub mod frontend;
pub mod gateway;
pub mod logging;
pub mod metrics;
pub mod protocol;
pub mod proxy;
pub mod relay;
pub mod runtime;
pub mod store;

/// The architecture invariants of ARCHITECTURE.md, checked on the source text.
#[cfg(test)]
mod invariants {
    use std::path::{Path, PathBuf};

    fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("read src") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                sources(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") && !path.ends_with("src/lib.rs") {
                // lib.rs holds only the module map (and these checks, which name the needles).
                out.push(path);
            }
        }
    }

    /// Files under `src/` (relative, with `/`) whose code mentions `needle`.
    fn users_of(needle: &str) -> Vec<String> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        sources(&root, &mut files);
        let mut users: Vec<String> = files
            .iter()
            .filter(|f| {
                std::fs::read_to_string(f)
                    .expect("read source")
                    .lines()
                    .filter(|l| !l.trim_start().starts_with("//"))
                    .any(|l| l.contains(needle))
            })
            .map(|f| {
                f.strip_prefix(&root)
                    .expect("under src")
                    .to_string_lossy()
                    .replace('\\', "/")
            })
            .collect();
        users.sort();
        users
    }

    #[test]
    fn only_the_runtime_imports_bollard() {
        assert_eq!(users_of("bollard::"), ["runtime.rs"]);
    }

    #[test]
    fn only_the_matrix_front_end_imports_matrix_sdk() {
        for f in users_of("matrix_sdk") {
            assert!(
                f.starts_with("frontend/matrix/"),
                "{f} imports matrix_sdk; only src/frontend/matrix/ may"
            );
        }
    }

    #[test]
    fn only_the_discord_front_end_imports_serenity() {
        for f in users_of("serenity::") {
            assert!(
                f.starts_with("frontend/discord/"),
                "{f} imports serenity; only src/frontend/discord/ may"
            );
        }
    }

    #[test]
    fn only_the_store_runs_sql() {
        assert_eq!(users_of("sqlx::"), ["store.rs"]);
    }

    #[test]
    fn front_ends_know_no_docker_and_the_engine_no_chat() {
        for f in users_of("runtime::") {
            assert!(
                !f.starts_with("frontend/"),
                "{f} reaches into the Docker runtime"
            );
        }
        for f in users_of("frontend::") {
            assert!(
                f.starts_with("frontend/") || f == "main.rs",
                "{f} depends on a front end"
            );
        }
    }
}
