//! The `firstmate` command line: parses arguments, loads the config, wires the parts
//! together, and maps errors to exit codes (0 ok, 2 bad config or arguments, 1 other).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};

use firstmate::config::{Config, ConfigError};
use firstmate::engine::Engine;
use firstmate::event::SessionState;
use firstmate::frontend::{admin, console, discord, matrix, render};
use firstmate::proxy;
use firstmate::runtime::{DockerRuntime, Runtime, container_name};
use firstmate::store::{SessionRecord, Store};

#[derive(Parser)]
#[command(
    name = "firstmate",
    version,
    about = "Run AI coding agents in isolated Docker containers and drive them from chat"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Args, Clone)]
struct ConfigArg {
    /// The config file [default: bot.toml, or $FIRSTMATE_CONFIG]
    #[arg(long, short = 'c', env = "FIRSTMATE_CONFIG", value_name = "PATH")]
    config: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the bot: every front end enabled in the config, the session engine
    Run(ConfigArg),
    /// A terminal front end with the chat command grammar: commands on stdin, output on stdout
    Console(ConfigArg),
    /// The Docker socket proxy: lets through only what firstmate needs (SPEC section 6)
    SocketProxy {
        /// Address to listen on: IP:PORT (e.g. 127.0.0.1:2375) or unix:///PATH
        #[arg(long, value_name = "ADDR")]
        listen: String,
        /// The Docker socket to guard
        #[arg(
            long,
            default_value = "unix:///var/run/docker.sock",
            value_name = "URL"
        )]
        upstream: String,
        /// A network workers may join although firstmate does not manage it: the
        /// config's docker.network when it names such a network (repeatable). Managed
        /// networks of the create's instance, `none` and the default bridge need none.
        #[arg(long = "allow-network", value_name = "NAME")]
        allow_network: Vec<String>,
        /// How long a request body may take to arrive before a 408
        #[arg(long, default_value = "15s", value_name = "DURATION", value_parser = humantime::parse_duration)]
        body_timeout: std::time::Duration,
    },
    /// The gateway relay (run by firstmate in a container of its own): forwards TCP
    /// connections from the session networks to the gateway
    GatewayRelay {
        /// Address to listen on: IP:PORT
        #[arg(long, value_name = "ADDR")]
        listen: std::net::SocketAddr,
        /// Where to forward: HOST:PORT, or host-gateway:PORT for the host (the default route)
        #[arg(long, value_name = "HOST:PORT")]
        to: String,
    },
    /// Check the config, the database, Docker and the worker images
    Doctor(ConfigArg),
    /// Admin view of sessions, from the database and Docker
    Sessions {
        #[command(subcommand)]
        command: SessionsCmd,
    },
    /// Apply database migrations
    Migrate(ConfigArg),
    /// Validate the config and print the effective configuration (secrets hidden)
    Config(ConfigArg),
}

#[derive(Subcommand)]
enum SessionsCmd {
    /// List sessions (live and queued ones; --all for every one)
    List {
        #[command(flatten)]
        config: ConfigArg,
        /// Include stopped and failed sessions
        #[arg(long)]
        all: bool,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// Show one session
    Show {
        #[command(flatten)]
        config: ConfigArg,
        /// The session id
        id: String,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// Stop a session's container
    Stop {
        #[command(flatten)]
        config: ConfigArg,
        /// The session id
        id: String,
    },
    /// Print a session's full transcript
    Logs {
        #[command(flatten)]
        config: ConfigArg,
        /// The session id
        id: String,
    },
    /// Remove an ended session's container and volumes (its transcript stays)
    Rm {
        #[command(flatten)]
        config: ConfigArg,
        /// The session id (a stopped or failed session)
        id: String,
    },
    /// Remove the containers and volumes of ended sessions (their transcripts stay)
    Prune {
        #[command(flatten)]
        config: ConfigArg,
        /// Only sessions that ended more than this long ago, like 7d or 12h [default: 0s, every ended session]
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
        older_than: Option<std::time::Duration>,
    },
}

/// An error that is the user's to fix in what they typed or configured: exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct UsageError(String);

fn main() -> ExitCode {
    #[cfg(unix)]
    // SAFETY: first thing in main, before any other thread exists. Restores the default
    // action, so `firstmate sessions list | head` ends quietly like other tools.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    std::panic::set_hook(Box::new(|info| {
        eprintln!(
            "firstmate: internal error: {info}\nThis is a bug; please report it with the command you ran. Sessions and their containers are kept."
        );
        if std::env::var_os("RUST_BACKTRACE").is_some() {
            eprintln!("{}", std::backtrace::Backtrace::force_capture());
        }
    }));
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("firstmate: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            let usage = e.downcast_ref::<ConfigError>().is_some()
                || e.downcast_ref::<UsageError>().is_some();
            // Each error's message holds its cause (src/error.rs): the outermost only, so
            // no cause is printed twice.
            eprintln!("firstmate: {e}");
            ExitCode::from(if usage { 2 } else { 1 })
        }
    }
}

/// The log filter of a subcommand when neither FIRSTMATE_LOG nor RUST_LOG is set.
fn log_default(cmd: &Cmd) -> String {
    match cmd {
        Cmd::Run(_) => format!("info,serenity=warn,{}", matrix::LOG_FILTER),
        Cmd::SocketProxy { .. } | Cmd::GatewayRelay { .. } => "info".into(),
        _ => "warn".into(),
    }
}

fn current_dir() -> anyhow::Result<PathBuf> {
    std::env::current_dir().map_err(|e| {
        anyhow::anyhow!(
            "cannot read the current directory: {e}; run firstmate from a folder that exists, or pass --config"
        )
    })
}

fn env_lookup(key: &str) -> Option<String> {
    std::env::var(key).ok()
}

/// Loads the config named by --config / $FIRSTMATE_CONFIG, or `bot.toml`, or (when
/// that default file does not exist) the built-in defaults.
fn load_config(arg: &ConfigArg) -> anyhow::Result<Config> {
    match &arg.config {
        Some(path) => Ok(Config::load(path, &env_lookup)?),
        None => {
            let path = Path::new("bot.toml");
            if path.exists() {
                Ok(Config::load(path, &env_lookup)?)
            } else {
                let cwd = current_dir()?;
                Ok(Config::defaults(&cwd, &env_lookup))
            }
        }
    }
}

async fn open_store(cfg: &Config) -> anyhow::Result<Store> {
    Ok(Store::connect(&cfg.database_url).await?)
}

async fn connect_docker(cfg: &Config) -> anyhow::Result<DockerRuntime> {
    let rt = DockerRuntime::connect(
        &cfg.docker.host,
        &cfg.docker.instance,
        cfg.docker.network.as_deref(),
    )
    .await?;
    Ok(match relay_of(cfg) {
        Some(r) if rt.isolated() => rt.with_relay(r),
        _ => rt,
    })
}

/// The gateway relay of a config with a gateway: it answers as `gateway.url`'s host and
/// port on each session network and forwards to the gateway's port, found on
/// `docker.relay_network` under the same name, or on the host (the default bridge).
fn relay_of(cfg: &Config) -> Option<firstmate::runtime::Relay> {
    let g = cfg.gateway.as_ref()?;
    let url = reqwest::Url::parse(&g.url).ok()?;
    let alias = url.host_str()?.to_string();
    let port = url.port_or_known_default()?;
    let target = match &cfg.docker.relay_network {
        Some(_) => format!("{alias}:{}", g.listen.port()),
        None => format!("{}:{}", firstmate::relay::HOST_GATEWAY, g.listen.port()),
    };
    Some(firstmate::runtime::Relay {
        image: cfg.docker.relay_image.clone(),
        network: cfg.docker.relay_network.clone(),
        alias,
        port,
        target,
    })
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    // One log setup for every subcommand (src/logging.rs); a bad setting is exit 2.
    firstmate::logging::init(&log_default(&cli.command), &env_lookup)
        .map_err(|e| UsageError(e.to_string()))?;
    match cli.command {
        Cmd::Config(arg) => {
            let cfg = load_config(&arg)?;
            print!("{}", cfg.render_effective());
            for w in cfg.warnings() {
                eprintln!("warning: {w}");
            }
            cfg.check_secrets()?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Migrate(arg) => {
            let cfg = load_config(&arg)?;
            let store = open_store(&cfg).await?;
            store.close().await;
            println!(
                "migrations applied to {}",
                firstmate::store::redact_url(&cfg.database_url)
            );
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Console(arg) => {
            let cfg = Arc::new(load_config(&arg)?);
            let owner = env_lookup("USER").unwrap_or_else(|| "console".into());
            let cwd = current_dir()?;
            // A running `firstmate run` on this config serves the console itself.
            if let Some(conn) = admin::connect(&cfg.admin.socket).await? {
                let code = admin::run_client(
                    conn,
                    admin::stdin(),
                    &owner,
                    &cwd,
                    tokio::io::stdout(),
                    tokio::io::stderr(),
                )
                .await?;
                return Ok(ExitCode::from(code));
            }
            let engine = start_engine(cfg).await?;
            let outcome =
                console::Console::new(engine.clone(), owner, cwd, Arc::new(console::ProcessOutput))
                    .run(tokio::io::stdin())
                    .await?;
            engine.store().close().await;
            Ok(ExitCode::from(outcome.exit_code()))
        }
        Cmd::Run(arg) => {
            let cfg = Arc::new(load_config(&arg)?);
            cfg.check_secrets()?;
            // Claim the admin socket first: a second `run` on this database stops here, and
            // a console started from now on waits for this service instead of running its own.
            let admin = admin::AdminSocket::bind(&cfg.admin.socket).await?;
            // Log in first: a bad credential stops here, before any container is touched.
            let matrix = match cfg.matrix.clone() {
                Some(m) => Some(matrix::MatrixFrontend::connect(m).await?),
                None => None,
            };
            let discord = match cfg.discord.clone() {
                Some(d) => {
                    discord::check(&d).await?;
                    Some(discord::DiscordFrontend::new(d))
                }
                None => None,
            };
            if matrix.is_none() && discord.is_none() {
                tracing::warn!(
                    "no front end is configured (neither [matrix] nor [discord] in {}): firstmate \
                     serves only the model gateway and metrics, and no chat reaches it; add a \
                     [matrix] or [discord] table (see bot.example.toml), or use `firstmate console`, \
                     which connects to this service",
                    cfg.file_name()
                );
            }
            let engine = start_engine(cfg).await?;
            tracing::info!(
                socket = %admin.path().display(),
                "admin socket listening (`firstmate console` connects to this service)"
            );
            tracing::info!(
                "firstmate is running; stop it with Ctrl-C or SIGTERM (sessions keep running)"
            );
            let matrix_run = async {
                match matrix {
                    Some(m) => m.run(engine.clone()).await.map_err(anyhow::Error::from),
                    None => std::future::pending().await,
                }
            };
            let discord_run = async {
                match discord {
                    Some(d) => d.run(engine.clone()).await.map_err(anyhow::Error::from),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                r = matrix_run => r?,
                r = discord_run => r?,
                _ = admin.serve(engine.clone()) => {}
                _ = shutdown_signal() => {}
            }
            tracing::info!(
                "shutting down; containers keep running and are picked up on the next start"
            );
            engine.shutdown().await;
            engine.store().close().await;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::SocketProxy {
            listen,
            upstream,
            allow_network,
            body_timeout,
        } => {
            let listen = proxy::Listen::parse(&listen).map_err(|e| UsageError(e.to_string()))?;
            let upstream =
                proxy::Upstream::parse(&upstream).map_err(|e| UsageError(e.to_string()))?;
            if let Some(bad) = allow_network.iter().find(|n| n.trim().is_empty()) {
                return Err(UsageError(format!(
                    "--allow-network {bad:?}: expected the name of a Docker network"
                ))
                .into());
            }
            let options = proxy::Options {
                allow_networks: allow_network,
                body_timeout,
                ..proxy::Options::default()
            };
            proxy::run(listen, upstream, options, shutdown_signal()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::GatewayRelay { listen, to } => {
            firstmate::relay::run(listen, &to, shutdown_signal())
                .await
                .map_err(|e| match e {
                    firstmate::relay::RelayError::BadTarget(_) => UsageError(e.to_string()).into(),
                    e => anyhow::Error::from(e),
                })?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Doctor(arg) => doctor(&arg).await,
        Cmd::Sessions { command } => sessions(command).await,
    }
}

async fn start_engine(cfg: Arc<Config>) -> anyhow::Result<Engine> {
    let cfg_metrics = cfg.metrics.clone();
    let store = open_store(&cfg).await?;
    let runtime = connect_docker(&cfg).await?;
    // The gateway listens before any session starts, so no worker calls into nothing.
    let (gateway, limits) = match &cfg.gateway {
        Some(g) => {
            cfg.check_secrets()?;
            let (gw, limits) = firstmate::gateway::Gateway::new(
                g.clone(),
                cfg.egress.allow.clone(),
                store.clone(),
            )?;
            let listener = gw.bind().await?;
            tracing::info!(listen = %g.listen, url = %g.url, "model gateway listening");
            tokio::spawn(gw.clone().serve(listener));
            (Some(gw), Some(limits))
        }
        None => (None, None),
    };
    let engine = Engine::with_gateway(store, runtime, cfg, gateway);
    if let Some(limits) = limits {
        engine.enforce_limits(limits);
    }
    if let Some(m) = &cfg_metrics {
        let listener = tokio::net::TcpListener::bind(m.listen).await.map_err(|e| {
            anyhow::anyhow!(
                "cannot listen on {} for metrics: {e}; is another firstmate running? Change metrics.listen in the config",
                m.listen
            )
        })?;
        tracing::info!(listen = %m.listen, "metrics listening (GET /metrics, GET /healthz)");
        tokio::spawn(firstmate::metrics::serve(listener, engine.clone()));
    }
    engine.recover().await?;
    engine.prune_periodically();
    Ok(engine)
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn doctor(arg: &ConfigArg) -> anyhow::Result<ExitCode> {
    let mut ok = true;
    let mut line = |pass: bool, what: &str, detail: String| {
        ok &= pass;
        println!("{} {what}: {detail}", if pass { "ok  " } else { "FAIL" });
    };
    // A warning is valid but likely unintended: it is shown, and does not fail doctor.
    let warn =
        |what: &str, detail: &str| println!("warn {what}: {detail} (a warning, not a failure)");
    let cfg = match load_config(arg) {
        Ok(c) => {
            line(
                true,
                "config",
                c.path
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| "built-in defaults (no bot.toml)".into()),
            );
            c
        }
        Err(e) => {
            line(false, "config", e.to_string());
            // Like every command: a bad config exits 2 (README, SPEC section 1).
            let usage = e.downcast_ref::<ConfigError>().is_some();
            return Ok(ExitCode::from(if usage { 2 } else { 1 }));
        }
    };
    for w in cfg.warnings() {
        warn("config", &w);
    }
    match cfg.check_secrets() {
        Ok(()) => line(true, "secrets", "every referenced secret is set".into()),
        Err(e) => line(false, "secrets", e.to_string()),
    }
    match Store::connect(&cfg.database_url).await {
        Ok(s) => {
            line(
                true,
                "database",
                firstmate::store::redact_url(&cfg.database_url),
            );
            s.close().await;
        }
        Err(e) => line(false, "database", e.to_string()),
    }
    match connect_docker(&cfg).await {
        Ok(rt) => {
            line(true, "docker", cfg.docker.host.clone());
            let mut images: Vec<(&String, &String)> =
                cfg.agents.iter().map(|(n, a)| (n, &a.image)).collect();
            images.sort();
            for (name, image) in images {
                match rt.image_home(image).await {
                    Ok(_) => line(
                        true,
                        &format!("agent {name}"),
                        format!("image {image} is present"),
                    ),
                    Err(e) => line(false, &format!("agent {name}"), e.to_string()),
                }
            }
            match (&cfg.docker.network, relay_of(&cfg)) {
                (Some(net), _) => line(
                    true,
                    "worker network",
                    format!("{net} (docker.network; shared by every worker)"),
                ),
                (None, None) => line(
                    true,
                    "worker network",
                    "one per session, with no route out".into(),
                ),
                (None, Some(r)) => match rt.image_home(&r.image).await {
                    Ok(_) => line(
                        true,
                        "worker network",
                        format!(
                            "one per session; the gateway relay ({}) forwards {}:{} to {}",
                            r.image, r.alias, r.port, r.target
                        ),
                    ),
                    Err(_) => line(
                        false,
                        "worker network",
                        format!(
                            "the gateway relay's image {} is not on this Docker host: build it (scripts/build-images bot) or set docker.relay_image",
                            r.image
                        ),
                    ),
                },
            }
        }
        Err(e) => line(false, "docker", e.to_string()),
    }
    if let Some(m) = &cfg.matrix {
        match matrix::check(m).await {
            Ok(detail) => line(true, "matrix", detail),
            Err(e) => line(false, "matrix", e.to_string()),
        }
    }
    if let Some(d) = &cfg.discord {
        match discord::check(d).await {
            Ok(detail) => line(true, "discord", detail),
            Err(e) => line(false, "discord", e.to_string()),
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn session_json(s: &SessionRecord) -> serde_json::Value {
    serde_json::json!({
        "id": s.id,
        "state": s.state.as_str(),
        "detail": s.state_detail,
        "agent": s.agent,
        "image": s.image,
        "model": s.model,
        "repo": s.repo,
        "branch": s.branch,
        "base_branch": s.base_branch,
        "base_commit": s.base_commit,
        "pushed_commit": s.pushed_commit,
        "pr_url": s.pr_url,
        "owner": s.owner,
        "frontend": s.frontend,
        "room": s.room,
        "container": container_name(&s.id),
        "turns": s.turns,
        "input_tokens": s.usage.input_tokens,
        "output_tokens": s.usage.output_tokens,
        "cache_read_tokens": s.usage.cache_read_tokens,
        "cache_write_tokens": s.usage.cache_write_tokens,
        "cost_usd": s.cost_usd,
        "created_at_ms": s.created_at,
        "ended_at_ms": s.ended_at,
        "prompt": s.first_prompt,
        "agent_session_id": s.agent_session_id,
    })
}

/// What `sessions show` says after the container line when `sessions rm` / `prune`
/// removed the container and volumes.
fn removed_note(removed_at: Option<i64>) -> String {
    match removed_at {
        Some(ms) => {
            let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
            format!(
                " (removed with its volumes at {}; the transcript is kept)",
                humantime::format_rfc3339_seconds(at)
            )
        }
        None => String::new(),
    }
}

async fn sessions(cmd: SessionsCmd) -> anyhow::Result<ExitCode> {
    let arg = match &cmd {
        SessionsCmd::List { config, .. }
        | SessionsCmd::Show { config, .. }
        | SessionsCmd::Stop { config, .. }
        | SessionsCmd::Logs { config, .. }
        | SessionsCmd::Rm { config, .. }
        | SessionsCmd::Prune { config, .. } => config.clone(),
    };
    let cfg = load_config(&arg)?;
    let store = open_store(&cfg).await?;
    let get = |id: String| {
        let store = store.clone();
        async move {
            store.session(&id).await?.ok_or_else(|| {
                anyhow::Error::from(UsageError(format!(
                    "no session {id}; `firstmate sessions list --all` shows the sessions"
                )))
            })
        }
    };
    match cmd {
        SessionsCmd::List { all, json, .. } => {
            let states: &[SessionState] = if all {
                &[]
            } else {
                &[
                    SessionState::Queued,
                    SessionState::Starting,
                    SessionState::Running,
                    SessionState::Waiting,
                ]
            };
            let list = store.sessions(&cfg.docker.instance, states).await?;
            if json {
                let v: Vec<_> = list.iter().map(session_json).collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else if list.is_empty() {
                println!(
                    "no sessions{}",
                    if all {
                        ""
                    } else {
                        " running (--all shows every one)"
                    }
                );
            } else {
                for s in &list {
                    println!("{}", render::list_line(s));
                }
            }
        }
        SessionsCmd::Show { id, json, .. } => {
            let s = get(id).await?;
            let s = store.session_report(&s.id).await?.unwrap_or(s);
            let removed_at = store.removed_at(&s.id).await?;
            if json {
                let mut v = session_json(&s);
                v["container_removed_at_ms"] = serde_json::json!(removed_at);
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!(
                    "session: {}\n{}\ncontainer: {}{}",
                    s.id,
                    render::status_text(&s),
                    container_name(&s.id),
                    removed_note(removed_at)
                );
            }
        }
        SessionsCmd::Logs { id, .. } => {
            let s = get(id).await?;
            print!("{}", render::transcript(&store, &s).await?);
        }
        SessionsCmd::Rm { id, .. } => {
            let s = get(id).await?;
            let rt = connect_docker(&cfg).await?;
            let engine = Engine::new(store.clone(), rt, Arc::new(cfg));
            let removal = engine.remove(&s.id).await?;
            println!("{removal}");
        }
        SessionsCmd::Prune { older_than, .. } => {
            let older_than = older_than.unwrap_or_default();
            let rt = connect_docker(&cfg).await?;
            let engine = Engine::new(store.clone(), rt, Arc::new(cfg));
            let report = engine.prune(older_than).await?;
            for r in &report.removed {
                println!("{r}");
            }
            for (id, e) in &report.failed {
                eprintln!("firstmate: session {id}: {e}");
            }
            let ago = if older_than.is_zero() {
                String::new()
            } else {
                format!(" more than {} ago", humantime::format_duration(older_than))
            };
            println!(
                "{} ended session(s){ago} cleaned up{}",
                report.removed.len(),
                if report.failed.is_empty() {
                    String::new()
                } else {
                    format!(", {} failed", report.failed.len())
                }
            );
            if !report.failed.is_empty() {
                store.close().await;
                return Ok(ExitCode::from(1));
            }
        }
        SessionsCmd::Stop { id, .. } => {
            let s = get(id).await?;
            if s.state.is_ended() {
                println!("session {} is already {}", s.id, s.state);
            } else {
                // The engine's own stop, without taking over the other sessions: an
                // engine that runs this session records the end, else this one does.
                let rt = connect_docker(&cfg).await?;
                let engine = Engine::new(store.clone(), rt, Arc::new(cfg));
                engine.stop(&s.id, "`firstmate sessions stop`").await?;
                println!("session {} stopped", s.id);
            }
        }
    }
    store.close().await;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_subcommand_has_a_good_default_log_filter() {
        let c = || ConfigArg { config: None };
        for cmd in [
            Cmd::Run(c()),
            Cmd::Console(c()),
            Cmd::SocketProxy {
                listen: String::new(),
                upstream: String::new(),
                allow_network: Vec::new(),
                body_timeout: std::time::Duration::from_secs(15),
            },
            Cmd::GatewayRelay {
                listen: "0.0.0.0:8787".parse().unwrap(),
                to: String::new(),
            },
            Cmd::Doctor(c()),
            Cmd::Migrate(c()),
            Cmd::Config(c()),
        ] {
            let default = log_default(&cmd);
            let checked = firstmate::logging::check_filter(
                firstmate::logging::FilterSource::Default,
                &default,
            );
            assert_eq!(checked.as_deref(), Ok(default.as_str()));
        }
    }
}
