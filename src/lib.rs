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
//! - [`repo`], [`repo_url`], [`forge`]: repositories: which one `new --repo` names,
//!   the scripts a worker runs, the forges' pull request APIs. Pure.
//! - [`files`], [`approval`], [`pricing`], [`allowlist`]: the pure vocabulary of files in
//!   and out, approvals, model prices and egress patterns.
//! - [`relay`]: `firstmate relay`, the gateway's one door on a session's network.

pub mod allowlist;
pub mod approval;
pub mod command;
pub mod config;
pub mod engine;
pub mod error;
pub mod event;
pub mod files;
pub mod forge;
pub mod frontend;
pub mod gateway;
pub mod logging;
pub mod metrics;
pub mod pricing;
pub mod protocol;
pub mod proxy;
pub mod relay;
pub mod repo;
pub mod repo_url;
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
    fn chat_front_ends_are_named_only_by_themselves_and_main() {
        for (needle, home) in [
            ("matrix::", "frontend/matrix/"),
            ("discord::", "frontend/discord/"),
        ] {
            for f in users_of(needle) {
                assert!(
                    f.starts_with(home) || f == "main.rs",
                    "{f} names {needle}; the shared layers (view, outbox, delivery) know no front end"
                );
            }
        }
    }

    #[test]
    fn html_is_made_only_by_the_matrix_front_end() {
        for needle in ["html", "<p>", "<b>", "<code>"] {
            // forge.rs reads the forges' `html_url` field (a link), and writes no HTML.
            for f in users_of(needle)
                .into_iter()
                .filter(|f| f != "forge.rs" || needle != "html")
            {
                assert!(
                    f.starts_with("frontend/matrix/"),
                    "{f} writes {needle:?}; the neutral view and the outbox carry no HTML"
                );
            }
        }
    }

    #[test]
    fn the_config_and_the_pure_vocabulary_depend_on_no_service() {
        // The bottom layer: what the config is made of may not reach up into what uses it.
        for file in [
            "config.rs",
            "pricing.rs",
            "allowlist.rs",
            "approval.rs",
            "command.rs",
            "event.rs",
        ] {
            let text = std::fs::read_to_string(
                Path::new(env!("CARGO_MANIFEST_DIR")).join("src").join(file),
            )
            .expect("read source");
            for higher in [
                "gateway::",
                "engine::",
                "frontend::",
                "runtime::",
                "store::",
                "proxy::",
            ] {
                assert!(
                    !text
                        .lines()
                        .filter(|l| !l.trim_start().starts_with("//"))
                        .any(|l| l.contains(higher)),
                    "{file} imports {higher}, a higher layer"
                );
            }
        }
    }

    /// The top-level modules each module's code names (`crate::X`), tests left out.
    fn module_graph() -> std::collections::BTreeMap<String, std::collections::BTreeSet<String>> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        sources(&root, &mut files);
        let mut graph: std::collections::BTreeMap<_, std::collections::BTreeSet<_>> =
            Default::default();
        for f in files {
            let rel = f.strip_prefix(&root).expect("under src").to_string_lossy();
            let module = rel.split(['/', '.']).next().unwrap_or_default().to_string();
            if module == "main" || module == "lib" {
                continue;
            }
            let text = std::fs::read_to_string(&f).expect("read source");
            let code = text.split("#[cfg(test)]").next().unwrap_or_default();
            let uses = graph.entry(module.clone()).or_default();
            for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
                for (i, _) in line.match_indices("crate::") {
                    let name: String = line[i + "crate::".len()..]
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    if name != module {
                        uses.insert(name);
                    }
                }
            }
        }
        graph
    }

    #[test]
    fn the_modules_import_each_other_without_a_circle() {
        let graph = module_graph();
        // Depth first; a module met again while still on the path closes a circle.
        fn visit<'a>(
            m: &'a str,
            graph: &'a std::collections::BTreeMap<String, std::collections::BTreeSet<String>>,
            path: &mut Vec<&'a str>,
            done: &mut std::collections::BTreeSet<&'a str>,
        ) {
            if let Some(at) = path.iter().position(|p| *p == m) {
                panic!("an import circle: {} -> {m}", path[at..].join(" -> "));
            }
            if !done.insert(m) {
                return;
            }
            path.push(m);
            for next in graph.get(m).into_iter().flatten() {
                visit(next, graph, path, done);
            }
            path.pop();
        }
        let mut done = std::collections::BTreeSet::new();
        for m in graph.keys() {
            visit(m, &graph, &mut Vec::new(), &mut done);
        }
        assert!(
            graph["engine"].contains("runtime"),
            "the graph reads imports"
        );
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

/// `images/bot/Dockerfile`, the multi-stage release build users run, checked without the
/// half hour it takes: its stages resolve, and its dependency-caching step stubs every
/// target `Cargo.toml` names (cargo refuses a manifest whose target files are missing).
/// `scripts/build-images bot` builds its `runtime` stage for real on every test run.
#[cfg(test)]
mod bot_dockerfile {
    const DOCKERFILE: &str = include_str!("../images/bot/Dockerfile");
    const MANIFEST: &str = include_str!("../Cargo.toml");

    /// Instructions, continuation lines joined, comments dropped.
    fn instructions() -> Vec<String> {
        let mut out = Vec::new();
        let mut cur = String::new();
        for line in DOCKERFILE.lines() {
            let t = line.trim();
            if cur.is_empty() && (t.is_empty() || t.starts_with('#')) {
                continue;
            }
            match t.strip_suffix('\\') {
                Some(part) => {
                    cur.push_str(part);
                    cur.push(' ');
                }
                None => {
                    cur.push_str(t);
                    out.push(std::mem::take(&mut cur));
                }
            }
        }
        out
    }

    #[test]
    fn its_stages_resolve_and_the_last_is_the_runtime_with_the_binary() {
        let ins = instructions();
        let mut stages: Vec<String> = Vec::new();
        let mut args: Vec<String> = Vec::new();
        let mut last_from = String::new();
        let mut runtime_user = None;
        for i in &ins {
            let (word, rest) = i.split_once(' ').unwrap_or((i, ""));
            match word {
                "ARG" if stages.is_empty() => {
                    args.push(rest.split('=').next().unwrap_or_default().to_string())
                }
                "FROM" => {
                    let parts: Vec<&str> = rest.split_whitespace().collect();
                    let image = parts[0];
                    if let Some(var) = image.strip_prefix("${").and_then(|v| v.strip_suffix('}')) {
                        assert!(
                            args.iter().any(|a| a == var),
                            "FROM {image}: no ARG {var} before the first FROM"
                        );
                    } else {
                        assert!(
                            stages.iter().any(|s| s == image),
                            "FROM {image}: no such stage"
                        );
                    }
                    if let [_, as_, name] = parts.as_slice() {
                        assert!(as_.eq_ignore_ascii_case("AS"), "{i}");
                        stages.push(name.to_string());
                    }
                    last_from = image.to_string();
                }
                "COPY" if rest.starts_with("--from=") => {
                    let from = rest["--from=".len()..]
                        .split_whitespace()
                        .next()
                        .unwrap_or_default();
                    assert!(
                        stages.iter().any(|s| s == from),
                        "COPY --from={from}: no such stage"
                    );
                }
                "USER" if stages.last().is_some_and(|s| s == "runtime") => {
                    runtime_user = Some(rest.to_string())
                }
                _ => {}
            }
        }
        assert_eq!(stages, ["runtime", "builder"]);
        assert_eq!(
            last_from, "runtime",
            "the image users get is the runtime stage"
        );
        let user = runtime_user.expect("the runtime stage sets USER");
        assert!(user != "root" && user != "0", "USER {user}");
        let builds: Vec<&String> = ins.iter().filter(|i| i.contains("cargo build")).collect();
        assert!(!builds.is_empty());
        for b in builds {
            assert!(b.contains("--release --locked"), "{b}");
        }
        assert!(
            ins.iter().any(|i| i.starts_with(
                "COPY --from=builder /usr/local/bin/firstmate /usr/local/bin/firstmate"
            )),
            "firstmate on PATH in the final image"
        );
    }

    #[test]
    fn the_dependency_step_stubs_every_target_the_manifest_names() {
        let ins = instructions();
        let stub = ins
            .iter()
            .find(|i| i.contains("fn main() {}"))
            .expect("a step that stubs the targets before the dependency build");
        // [[bin]] and [[test]] paths are stubbed by name; benches come from the manifest.
        let mut section = "";
        for line in MANIFEST.lines() {
            let t = line.trim();
            if t.starts_with('[') {
                section = t;
            } else if let Some(path) = t
                .strip_prefix("path = \"")
                .and_then(|p| p.strip_suffix('"'))
                && (section == "[[bin]]" || section == "[[test]]")
            {
                assert!(
                    stub.contains(path),
                    "the stub step does not make {path}: {stub}"
                );
            }
        }
        assert!(
            stub.contains(r"\[\[bench\]\]") && stub.contains("Cargo.toml"),
            "bench stubs are not read from Cargo.toml's [[bench]] names: {stub}"
        );
        // The sed of that step, applied to the manifest: every bench it yields.
        let benches: Vec<&str> = MANIFEST
            .split("[[bench]]")
            .skip(1)
            .filter_map(|b| b.lines().find_map(|l| l.trim().strip_prefix("name = \"")))
            .filter_map(|n| n.strip_suffix('"'))
            .collect();
        assert!(
            benches.contains(&"gateway") && benches.len() >= 7,
            "{benches:?}"
        );
        for b in benches {
            assert!(
                std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join(format!("benches/{b}.rs"))
                    .exists(),
                "bench {b}"
            );
        }
    }
}
