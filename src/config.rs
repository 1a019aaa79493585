//! `bot.toml` to a validated [`Config`].
//!
//! This module is the only reader of the config file and of the secrets it names. Every
//! error says which file, which key and (where the TOML parser knows it) which line, and
//! what is expected; unknown keys are refused with a "did you mean" where one fits.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize, Serializer};

use crate::allowlist::Allowlist;
use crate::pricing::{Price, default_prices};
use crate::protocol::ProtocolKind;

/// Looks up an environment variable; injected so tests do not touch the process env.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// A config the user has to fix. Displayed as one message naming file, key and line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{file}{line}: {message}", line = line.map(|l| format!(":{l}")).unwrap_or_default())]
    Invalid {
        file: String,
        line: Option<usize>,
        message: String,
    },
    #[error("{file}: secrets are not set:\n{}", missing.iter().map(|m| format!("  - {m}")).collect::<Vec<_>>().join("\n"))]
    Secrets { file: String, missing: Vec<String> },
}

/// A secret named in the config by `<key>_env` or `<key>_file`; never printed.
#[derive(Clone, Default)]
pub struct Secret {
    pub source: SecretSource,
    value: Option<String>,
    /// Why a `_file` secret could not be read (the OS error), for messages.
    unreadable: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub enum SecretSource {
    #[default]
    None,
    Env(String),
    File(PathBuf),
}

impl Secret {
    fn resolve(source: SecretSource, env: EnvLookup) -> Secret {
        let mut unreadable = None;
        let value = match &source {
            SecretSource::None => None,
            SecretSource::Env(var) => env(var).filter(|v| !v.is_empty()),
            SecretSource::File(path) => std::fs::read_to_string(path)
                .map_err(|e| unreadable = Some(e.to_string()))
                .ok()
                .map(|s| s.trim_end_matches(['\r', '\n']).to_string())
                .filter(|v| !v.is_empty()),
        };
        Secret {
            source,
            value,
            unreadable,
        }
    }

    /// Where the secret comes from, for a message that asks to check it: the config key
    /// and the variable or file it names, e.g. `discord.token_env (FIRSTMATE_DISCORD_TOKEN)`.
    pub fn origin(&self, key: &str) -> String {
        match &self.source {
            SecretSource::None => format!("{key}_env / {key}_file (none is set)"),
            SecretSource::Env(var) => format!("{key}_env ({var})"),
            SecretSource::File(path) => format!("{key}_file ({})", path.display()),
        }
    }

    /// The secret's value, when it was set.
    pub fn value(&self) -> Option<&str> {
        self.value.as_deref()
    }

    pub fn is_configured(&self) -> bool {
        self.source != SecretSource::None
    }

    /// What `firstmate config` shows instead of the value.
    pub fn display(&self) -> String {
        match (&self.source, &self.value) {
            (SecretSource::None, _) => "<none>".into(),
            (_, Some(_)) => "<set>".into(),
            (SecretSource::Env(var), None) => format!("<unset: {var}>"),
            (SecretSource::File(path), None) => format!("<unset: {}>", path.display()),
        }
    }

    /// Why the secret is missing, for error messages; None when it is set or not used.
    fn missing(&self, key: &str) -> Option<String> {
        match (&self.source, &self.value) {
            (SecretSource::Env(var), None) => Some(format!(
                "{key}_env names the environment variable {var}, which is not set (export {var}=...)"
            )),
            (SecretSource::File(path), None) => Some(match &self.unreadable {
                Some(why) => format!(
                    "{key}_file names {}, which cannot be read: {why}",
                    path.display()
                ),
                None => format!("{key}_file names {}, which is empty", path.display()),
            }),
            _ => None,
        }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display())
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.display())
    }
}

fn ser_duration<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&humantime::format_duration(*d).to_string())
}

fn ser_opt_duration<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => ser_duration(d, s),
        None => s.serialize_none(),
    }
}

fn ser_path<S: Serializer>(p: &Path, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&p.display().to_string())
}

/// The validated configuration.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    /// The file it came from; None for the built-in defaults.
    #[serde(skip)]
    pub path: Option<PathBuf>,
    /// `[database] url`, relative SQLite paths made absolute.
    #[serde(skip)]
    pub database_url: String,
    pub docker: DockerConfig,
    pub sessions: SessionsConfig,
    pub agents: BTreeMap<String, AgentConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub matrix: Option<MatrixConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub discord: Option<DiscordConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics: Option<MetricsConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway: Option<GatewayConfig>,
    pub egress: EgressConfig,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub repos: BTreeMap<String, RepoConfig>,
    pub admin: AdminConfig,
}

/// `[admin]`: the local socket on which `firstmate run` serves `firstmate console`.
#[derive(Debug, Clone, Serialize)]
pub struct AdminConfig {
    /// `socket`; by default `<database file>.admin.sock` beside a SQLite database, else
    /// `firstmate.admin.sock` in the config file's folder.
    #[serde(serialize_with = "ser_path")]
    pub socket: PathBuf,
}

#[derive(Debug, Clone, Serialize)]
pub struct DockerConfig {
    pub host: String,
    pub instance: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// The image of the gateway relay (with no `network`, the one container on every
    /// session network besides its worker).
    pub relay_image: String,
    /// The network where the relay meets the gateway; None: Docker's default bridge (the
    /// gateway on this host, reached at the bridge's host address).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relay_network: Option<String>,
}

/// The relay's image when the config names none.
pub const DEFAULT_RELAY_IMAGE: &str = "firstmate:latest";

#[derive(Debug, Clone, Serialize)]
pub struct SessionsConfig {
    pub default_agent: String,
    #[serde(serialize_with = "ser_duration")]
    pub idle_timeout: Duration,
    #[serde(serialize_with = "ser_duration")]
    pub max_lifetime: Duration,
    pub max_running: usize,
    pub max_running_per_user: usize,
    pub allowed_repo_hosts: Vec<String>,
    /// `keep_stopped`: how long an ended session's container and volumes are kept
    /// before the running engine removes them; None keeps them until
    /// `firstmate sessions rm` / `prune`.
    #[serde(
        serialize_with = "ser_opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub keep_stopped: Option<Duration>,
    /// `max_attachment_size`: the largest file a thread's attachment may be (bytes).
    #[serde(rename = "max_attachment_size", serialize_with = "ser_memory")]
    pub max_attachment_bytes: i64,
    /// `approvers`: who may answer an approval; empty: the session's requester and the
    /// front end's allowed users. Otherwise only these (Matrix user ids, Discord user
    /// or role ids).
    pub approvers: Vec<String>,
    /// `approval_timeout`: an approval unanswered this long is denied.
    #[serde(serialize_with = "ser_duration")]
    pub approval_timeout: Duration,
}

/// The tools an agent with `permission_mode = "ask"` asks about unless `ask_tools` says
/// otherwise.
pub const DEFAULT_ASK_TOOLS: [&str; 6] = [
    "Bash",
    "Edit",
    "Write",
    "MultiEdit",
    "NotebookEdit",
    "WebFetch",
];

#[derive(Debug, Clone, Serialize)]
pub struct AgentConfig {
    #[serde(skip)]
    pub name: String,
    pub image: String,
    pub protocol: ProtocolKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    pub permission_mode: String,
    /// With `permission_mode = "ask"`: the tools whose calls wait for a person.
    pub ask_tools: Vec<String>,
    #[serde(rename = "memory", serialize_with = "ser_memory")]
    pub memory_bytes: i64,
    #[serde(rename = "cpus", serialize_with = "ser_cpus")]
    pub nano_cpus: i64,
    pub pids_limit: i64,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
}

fn ser_memory<S: Serializer>(b: &i64, s: S) -> Result<S::Ok, S::Error> {
    let text = if b % (1 << 30) == 0 {
        format!("{}g", b >> 30)
    } else if b % (1 << 20) == 0 {
        format!("{}m", b >> 20)
    } else {
        b.to_string()
    };
    s.serialize_str(&text)
}

fn ser_cpus<S: Serializer>(n: &i64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(*n as f64 / 1e9)
}

#[derive(Debug, Clone, Serialize)]
pub struct MatrixConfig {
    pub homeserver_url: String,
    pub user_id: String,
    pub password: Secret,
    pub access_token: Secret,
    #[serde(serialize_with = "ser_path")]
    pub store_path: PathBuf,
    pub command_prefix: String,
    pub allowed_users: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DiscordConfig {
    pub token: Secret,
    pub guild_ids: Vec<u64>,
    pub allowed_users: Vec<u64>,
    pub allowed_roles: Vec<u64>,
    pub api_base_url: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct MetricsConfig {
    pub listen: SocketAddr,
}

#[derive(Debug, Clone, Serialize)]
pub struct GatewayConfig {
    pub listen: SocketAddr,
    pub url: String,
    /// A session is stopped when what it spent reaches this (USD).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_limit_usd: Option<f64>,
    /// A user's sessions are stopped when what they spent within `user_limit_window`
    /// reaches this (USD).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_limit_usd: Option<f64>,
    #[serde(serialize_with = "ser_duration")]
    pub user_limit_window: Duration,
    /// USD per million tokens, by model name prefix: the built-in table with the
    /// config's `[gateway.prices.*]` over it.
    #[serde(skip)]
    pub prices: BTreeMap<String, Price>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub anthropic: Option<UpstreamConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub openai: Option<UpstreamConfig>,
}

#[derive(Debug, Clone, Serialize)]
pub struct UpstreamConfig {
    pub upstream: String,
    pub api_key: Secret,
    pub oauth_token: Secret,
}

/// `[egress]`: where workers may go through the gateway's proxy (SPEC section 11).
#[derive(Debug, Clone, Default, Serialize)]
pub struct EgressConfig {
    /// Host patterns; empty: no egress.
    pub allow: Allowlist,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Forge {
    Github,
    Forgejo,
    Gitlab,
    Git,
}

#[derive(Debug, Clone, Serialize)]
pub struct RepoConfig {
    pub url: String,
    pub default_branch: String,
    pub token: Secret,
    pub forge: Forge,
    /// The forge's API base (`api_url`); None: derived from `url` (`repo::api_base`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_url: Option<String>,
    /// The user name of the HTTP basic credential for git (`username`); None: the
    /// forge's convention (`repo::basic_user`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
}

// --- the file as written -------------------------------------------------------------

type Spanned<T> = toml::Spanned<T>;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    database: Option<RawDatabase>,
    docker: Option<RawDocker>,
    sessions: Option<RawSessions>,
    #[serde(default)]
    agents: BTreeMap<String, RawAgent>,
    matrix: Option<RawMatrix>,
    discord: Option<RawDiscord>,
    metrics: Option<RawMetrics>,
    gateway: Option<RawGateway>,
    egress: Option<RawEgress>,
    #[serde(default)]
    repos: BTreeMap<String, RawRepo>,
    admin: Option<RawAdmin>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEgress {
    #[serde(default)]
    allow: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    socket: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDatabase {
    url: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDocker {
    host: Option<String>,
    instance: Option<Spanned<String>>,
    network: Option<String>,
    relay_image: Option<String>,
    relay_network: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSessions {
    default_agent: Option<Spanned<String>>,
    idle_timeout: Option<Spanned<String>>,
    max_lifetime: Option<Spanned<String>>,
    max_running: Option<Spanned<i64>>,
    max_running_per_user: Option<Spanned<i64>>,
    #[serde(default)]
    allowed_repo_hosts: Vec<String>,
    keep_stopped: Option<Spanned<String>>,
    max_attachment_size: Option<Spanned<String>>,
    #[serde(default)]
    approvers: Vec<String>,
    approval_timeout: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgent {
    image: Option<Spanned<String>>,
    protocol: Option<ProtocolKind>,
    model: Option<String>,
    permission_mode: Option<String>,
    ask_tools: Option<Vec<String>>,
    memory: Option<Spanned<toml::Value>>,
    cpus: Option<Spanned<f64>>,
    pids_limit: Option<Spanned<i64>>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    args: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMatrix {
    homeserver_url: Option<Spanned<String>>,
    user_id: Option<Spanned<String>>,
    password_env: Option<String>,
    password_file: Option<String>,
    access_token_env: Option<String>,
    access_token_file: Option<String>,
    store_path: Option<String>,
    command_prefix: Option<Spanned<String>>,
    #[serde(default)]
    allowed_users: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDiscord {
    token_env: Option<String>,
    token_file: Option<String>,
    #[serde(default)]
    guild_ids: Vec<u64>,
    #[serde(default)]
    allowed_users: Vec<u64>,
    #[serde(default)]
    allowed_roles: Vec<u64>,
    api_base_url: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    listen: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGateway {
    listen: Option<Spanned<String>>,
    url: Option<String>,
    session_limit_usd: Option<Spanned<f64>>,
    user_limit_usd: Option<Spanned<f64>>,
    user_limit_window: Option<Spanned<String>>,
    #[serde(default)]
    prices: BTreeMap<String, Price>,
    anthropic: Option<RawUpstream>,
    openai: Option<RawUpstream>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpstream {
    upstream: Option<String>,
    api_key_env: Option<String>,
    api_key_file: Option<String>,
    oauth_token_env: Option<String>,
    oauth_token_file: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRepo {
    url: Option<Spanned<String>>,
    default_branch: Option<String>,
    token_env: Option<String>,
    token_file: Option<String>,
    forge: Option<Forge>,
    api_url: Option<String>,
    username: Option<String>,
}

// --- loading --------------------------------------------------------------------------

/// The `[docker]` table: the daemon (`DOCKER_HOST` when `host` is unset), the instance,
/// the worker network and the relay.
fn docker_section(
    ctx: &Ctx,
    raw: Option<RawDocker>,
    env: EnvLookup,
) -> Result<DockerConfig, ConfigError> {
    let docker = raw.unwrap_or(RawDocker {
        host: None,
        instance: None,
        network: None,
        relay_image: None,
        relay_network: None,
    });
    let instance = match docker.instance {
        None => "default".to_string(),
        Some(i) => {
            let v = i.get_ref();
            if v.is_empty()
                || !v
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                return Err(ctx.err(
                    Some(i.span()),
                    format!("docker.instance = {v:?}: expected letters, digits, '-', '_' or '.'"),
                ));
            }
            i.into_inner()
        }
    };
    let host = docker
        .host
        .filter(|h| !h.is_empty())
        .or_else(|| env("DOCKER_HOST").filter(|h| !h.is_empty()))
        .unwrap_or_else(|| "unix:///var/run/docker.sock".into());
    if !["unix://", "tcp://", "http://", "https://"]
        .iter()
        .any(|p| host.starts_with(p))
    {
        return Err(ctx.err(
            None,
            format!("docker.host = {host:?}: expected \"unix:///var/run/docker.sock\" or \"tcp://HOST:PORT\""),
        ));
    }
    let docker = DockerConfig {
        host,
        instance,
        network: docker.network.filter(|n| !n.is_empty()),
        relay_image: docker
            .relay_image
            .filter(|i| !i.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_RELAY_IMAGE.to_string()),
        relay_network: docker.relay_network.filter(|n| !n.is_empty()),
    };
    Ok(docker)
}

/// The `[agents.*]` tables, or the built-in agents when there are none.
fn agents_section(
    ctx: &Ctx,
    raw: BTreeMap<String, RawAgent>,
) -> Result<BTreeMap<String, AgentConfig>, ConfigError> {
    let agents = if raw.is_empty() {
        builtin_agents()
    } else {
        let mut out = BTreeMap::new();
        for (name, a) in raw {
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(ctx.err(
                    None,
                    format!("[agents.{name}]: an agent name uses letters, digits, '-' and '_'"),
                ));
            }
            let a = agent(ctx, &name, a)?;
            out.insert(name, a);
        }
        out
    };
    Ok(agents)
}

/// The `[sessions]` table; `default_agent` must name one of `agents`.
fn sessions_section(
    ctx: &Ctx,
    raw: Option<RawSessions>,
    agents: &BTreeMap<String, AgentConfig>,
) -> Result<SessionsConfig, ConfigError> {
    let s = raw.unwrap_or(RawSessions {
        default_agent: None,
        idle_timeout: None,
        max_lifetime: None,
        max_running: None,
        max_running_per_user: None,
        allowed_repo_hosts: Vec::new(),
        keep_stopped: None,
        max_attachment_size: None,
        approvers: Vec::new(),
        approval_timeout: None,
    });
    let default_agent = match &s.default_agent {
        Some(a) => {
            if !agents.contains_key(a.get_ref()) {
                return Err(ctx.err(
                    Some(a.span()),
                    format!(
                        "sessions.default_agent = {:?} names no agent: expected one of {}",
                        a.get_ref(),
                        agents.keys().cloned().collect::<Vec<_>>().join(", ")
                    ),
                ));
            }
            a.get_ref().clone()
        }
        None if agents.contains_key("claude") => "claude".into(),
        None => agents.keys().next().cloned().unwrap_or_default(),
    };
    let sessions = SessionsConfig {
        default_agent,
        idle_timeout: duration(
            ctx,
            "sessions.idle_timeout",
            s.idle_timeout.as_ref(),
            Duration::from_secs(30 * 60),
        )?,
        max_lifetime: duration(
            ctx,
            "sessions.max_lifetime",
            s.max_lifetime.as_ref(),
            Duration::from_secs(8 * 3600),
        )?,
        max_running: positive(ctx, "sessions.max_running", s.max_running.as_ref(), 10)?
            as usize,
        max_running_per_user: positive(
            ctx,
            "sessions.max_running_per_user",
            s.max_running_per_user.as_ref(),
            3,
        )? as usize,
        allowed_repo_hosts: s.allowed_repo_hosts,
        keep_stopped: match &s.keep_stopped {
            Some(v) => Some(duration(
                ctx,
                "sessions.keep_stopped",
                Some(v),
                Duration::ZERO,
            )?),
            None => None,
        },
        max_attachment_bytes: match &s.max_attachment_size {
            None => DEFAULT_MAX_ATTACHMENT,
            Some(v) => parse_memory(v.get_ref()).ok_or_else(|| {
                ctx.err(
                    Some(v.span()),
                    format!(
                        "sessions.max_attachment_size = {:?} is not a size: expected a number of bytes or one like \"25MB\" or \"512k\"",
                        v.get_ref()
                    ),
                )
            })?,
        },
        approvers: s.approvers,
        approval_timeout: duration(
            ctx,
            "sessions.approval_timeout",
            s.approval_timeout.as_ref(),
            Duration::from_secs(10 * 60),
        )?,
    };
    Ok(sessions)
}

/// The `[matrix]` table, if there is one.
fn matrix_section(
    ctx: &Ctx,
    raw: Option<RawMatrix>,
    env: EnvLookup,
) -> Result<Option<MatrixConfig>, ConfigError> {
    let matrix = match raw {
        None => None,
        Some(m) => {
            let required = |v: Option<Spanned<String>>, key: &str, example: &str| {
                v.map(Spanned::into_inner)
                    .filter(|s| !s.is_empty())
                    .ok_or_else(|| {
                        ctx.err(
                            None,
                            format!("[matrix] needs {key}, like {key} = \"{example}\""),
                        )
                    })
            };
            let homeserver_url = required(
                m.homeserver_url,
                "homeserver_url",
                "https://matrix.example.org",
            )?;
            let homeserver_url = http_url(ctx, "matrix.homeserver_url", &homeserver_url)?;
            let user_id = required(m.user_id, "user_id", "@firstmate:example.org")?;
            if !user_id.starts_with('@') || !user_id.contains(':') {
                return Err(ctx.err(None, format!("matrix.user_id = {user_id:?}: expected a full Matrix ID like \"@firstmate:example.org\"")));
            }
            let password = ctx.secret(
                "matrix",
                "password",
                m.password_env.as_ref(),
                m.password_file.as_ref(),
                env,
            )?;
            let access_token = ctx.secret(
                "matrix",
                "access_token",
                m.access_token_env.as_ref(),
                m.access_token_file.as_ref(),
                env,
            )?;
            if !password.is_configured() && !access_token.is_configured() {
                return Err(ctx.err(
                    None,
                    "[matrix] needs a credential: password_env, password_file, access_token_env or access_token_file",
                ));
            }
            let command_prefix = match m.command_prefix {
                None => "!fm".to_string(),
                Some(p)
                    if p.get_ref().trim().is_empty()
                        || p.get_ref().contains(char::is_whitespace) =>
                {
                    return Err(ctx.err(
                        Some(p.span()),
                        "matrix.command_prefix must be one word without spaces, like \"!fm\"",
                    ));
                }
                Some(p) => p.into_inner(),
            };
            Some(MatrixConfig {
                homeserver_url,
                user_id,
                password,
                access_token,
                store_path: ctx.resolve_path(m.store_path.as_deref().unwrap_or("matrix-store")),
                command_prefix,
                allowed_users: m.allowed_users,
            })
        }
    };
    Ok(matrix)
}

/// The `[discord]` table, if there is one.
fn discord_section(
    ctx: &Ctx,
    raw: Option<RawDiscord>,
    env: EnvLookup,
) -> Result<Option<DiscordConfig>, ConfigError> {
    let discord = match raw {
        None => None,
        Some(d) => {
            let token = ctx.secret(
                "discord",
                "token",
                d.token_env.as_ref(),
                d.token_file.as_ref(),
                env,
            )?;
            if !token.is_configured() {
                return Err(ctx.err(
                    None,
                    "[discord] needs token_env or token_file (the bot token)",
                ));
            }
            let api_base_url = http_url(
                ctx,
                "discord.api_base_url",
                d.api_base_url.as_deref().unwrap_or("https://discord.com"),
            )?;
            Some(DiscordConfig {
                token,
                guild_ids: d.guild_ids,
                allowed_users: d.allowed_users,
                allowed_roles: d.allowed_roles,
                api_base_url,
            })
        }
    };
    Ok(discord)
}

/// The `[gateway]` table, if there is one, checked against the worker network: with no
/// `docker.network`, workers reach it by a host name.
fn gateway_section(
    ctx: &Ctx,
    raw: Option<RawGateway>,
    docker: &DockerConfig,
    env: EnvLookup,
) -> Result<Option<GatewayConfig>, ConfigError> {
    let gateway = match raw {
        None => None,
        Some(g) => {
            let upstream = |name: &str,
                            u: Option<RawUpstream>,
                            default: &str|
             -> Result<Option<UpstreamConfig>, ConfigError> {
                let Some(u) = u else { return Ok(None) };
                let table = format!("gateway.{name}");
                Ok(Some(UpstreamConfig {
                    upstream: http_url(
                        ctx,
                        &format!("{table}.upstream"),
                        u.upstream.as_deref().unwrap_or(default),
                    )?,
                    api_key: ctx.secret(
                        &table,
                        "api_key",
                        u.api_key_env.as_ref(),
                        u.api_key_file.as_ref(),
                        env,
                    )?,
                    oauth_token: ctx.secret(
                        &table,
                        "oauth_token",
                        u.oauth_token_env.as_ref(),
                        u.oauth_token_file.as_ref(),
                        env,
                    )?,
                }))
            };
            let limit = |key: &str, v: Option<Spanned<f64>>| -> Result<Option<f64>, ConfigError> {
                match v {
                    None => Ok(None),
                    Some(v) if *v.get_ref() > 0.0 && v.get_ref().is_finite() => {
                        Ok(Some(*v.get_ref()))
                    }
                    Some(v) => Err(ctx.err(
                        Some(v.span()),
                        format!(
                            "{key} = {} must be a positive number of dollars, like 5.0",
                            v.get_ref()
                        ),
                    )),
                }
            };
            let mut prices = default_prices();
            for (model, price) in g.prices {
                let bad = [
                    price.input,
                    price.output,
                    price.cache_read,
                    price.cache_write,
                ]
                .iter()
                .any(|p| !p.is_finite() || *p < 0.0);
                if bad {
                    return Err(ctx.err(
                        None,
                        format!("[gateway.prices.\"{model}\"]: prices are dollars per million tokens, 0 or more"),
                    ));
                }
                prices.insert(model, price);
            }
            Some(GatewayConfig {
                listen: socket_addr(ctx, "gateway.listen", g.listen, "0.0.0.0:8787")?,
                url: http_url(
                    ctx,
                    "gateway.url",
                    g.url.as_deref().unwrap_or("http://firstmate:8787"),
                )?,
                session_limit_usd: limit("gateway.session_limit_usd", g.session_limit_usd)?,
                user_limit_usd: limit("gateway.user_limit_usd", g.user_limit_usd)?,
                user_limit_window: duration(
                    ctx,
                    "gateway.user_limit_window",
                    g.user_limit_window.as_ref(),
                    Duration::from_secs(24 * 3600),
                )?,
                prices,
                anthropic: upstream("anthropic", g.anthropic, "https://api.anthropic.com")?,
                openai: upstream("openai", g.openai, "https://api.openai.com")?,
            })
        }
    };

    // With no docker.network, workers reach the gateway only through the relay, which
    // answers to the url's host name on each session network: a name, not an address.
    if let (Some(g), None) = (&gateway, &docker.network) {
        let host = g
            .url
            .split_once("://")
            .map(|(_, rest)| rest)
            .unwrap_or(&g.url)
            .split(['/', ':'])
            .next()
            .unwrap_or_default();
        if host.is_empty() || host.starts_with('[') || host.parse::<std::net::Ipv4Addr>().is_ok() {
            return Err(ctx.err(
                None,
                format!(
                    "gateway.url = {:?}: workers sit on networks of their own and reach the gateway by a name (the relay's), so the url needs a host name such as \"http://firstmate:8787\"; or set docker.network to put every worker on a network you made",
                    g.url
                ),
            ));
        }
    }
    Ok(gateway)
}

/// The `[repos.*]` tables.
fn repos_section(
    ctx: &Ctx,
    raw: BTreeMap<String, RawRepo>,
    env: EnvLookup,
) -> Result<BTreeMap<String, RepoConfig>, ConfigError> {
    let mut repos = BTreeMap::new();
    for (alias, r) in raw {
        let url = r
            .url
            .map(Spanned::into_inner)
            .filter(|u| !u.is_empty())
            .ok_or_else(|| ctx.err(None, format!("[repos.{alias}] needs url, like url = \"https://git.example.org/team/demo.git\"")))?;
        if let Err(e) = crate::repo_url::RepoUrl::parse(&url) {
            return Err(ctx.err(None, format!("[repos.{alias}] url = \"{url}\": {e}")));
        }
        if let Some(api) = r.api_url.as_deref()
            && !(api.starts_with("https://") || api.starts_with("http://"))
        {
            return Err(ctx.err(
                None,
                format!("[repos.{alias}] api_url = \"{api}\" must be an http(s) URL, like \"https://api.github.com\""),
            ));
        }
        let default_branch = r.default_branch.unwrap_or_else(|| "main".into());
        if let Err(e) = crate::repo_url::check_branch(&default_branch) {
            return Err(ctx.err(None, format!("[repos.{alias}] default_branch: {e}")));
        }
        let table = format!("repos.{alias}");
        repos.insert(
            alias.clone(),
            RepoConfig {
                url,
                default_branch,
                api_url: r.api_url.map(|u| u.trim_end_matches('/').to_string()),
                username: r.username,
                token: ctx.secret(
                    &table,
                    "token",
                    r.token_env.as_ref(),
                    r.token_file.as_ref(),
                    env,
                )?,
                forge: r.forge.unwrap_or(Forge::Git),
            },
        );
    }
    Ok(repos)
}

/// The config text as TOML, its errors told with the file, line, table and key.
fn parse_raw(ctx: &Ctx, text: &str, file: &str) -> Result<RawConfig, ConfigError> {
    let raw: RawConfig = toml::from_str(text).map_err(|e| {
        let line = e.span().map(|s| ctx.line_of(s.start));
        let table = line.and_then(|l| table_at(text, l));
        let message = explain_unknown(e.message(), table.as_deref()).unwrap_or_else(|| {
            let m = friendly(e.message());
            let key = line.and_then(|l| key_at(text, l));
            match (&table, key) {
                (Some(t), Some(k)) => format!("{t}.{k}: {m}"),
                (None, Some(k)) => format!("{k}: {m}"),
                (Some(t), None) => format!("in [{t}]: {m}"),
                (None, None) => m,
            }
        });
        ConfigError::Invalid {
            file: file.to_string(),
            line,
            message,
        }
    })?;
    Ok(raw)
}

/// Builds errors that point into one file.
struct Ctx<'a> {
    file: String,
    text: &'a str,
    base_dir: PathBuf,
}

impl Ctx<'_> {
    fn line_of(&self, offset: usize) -> usize {
        self.text[..offset.min(self.text.len())]
            .matches('\n')
            .count()
            + 1
    }

    fn err(&self, span: Option<std::ops::Range<usize>>, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            file: self.file.clone(),
            line: span.map(|s| self.line_of(s.start)),
            message: message.into(),
        }
    }

    fn resolve_path(&self, p: &str) -> PathBuf {
        let path = Path::new(p);
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.base_dir.join(path)
        }
    }

    fn secret(
        &self,
        table: &str,
        key: &str,
        env_name: Option<&String>,
        file: Option<&String>,
        env: EnvLookup,
    ) -> Result<Secret, ConfigError> {
        let source = match (env_name, file) {
            (Some(_), Some(_)) => {
                return Err(self.err(
                    None,
                    format!("[{table}] gives both {key}_env and {key}_file: keep one"),
                ));
            }
            (Some(var), None) if var.trim().is_empty() => {
                return Err(self.err(
                    None,
                    format!(
                        "[{table}] {key}_env is empty: expected the name of an environment variable"
                    ),
                ));
            }
            (Some(var), None) => SecretSource::Env(var.clone()),
            (None, Some(path)) => SecretSource::File(self.resolve_path(path)),
            (None, None) => SecretSource::None,
        };
        Ok(Secret::resolve(source, env))
    }
}

/// Parses a humantime duration, naming the key when it is not one.
fn duration(
    ctx: &Ctx,
    key: &str,
    v: Option<&Spanned<String>>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    let Some(v) = v else { return Ok(default) };
    match humantime::parse_duration(v.get_ref()) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err(ctx.err(Some(v.span()), format!("{key} must be longer than zero, like \"30m\""))),
        Err(e) => Err(ctx.err(
            Some(v.span()),
            format!(
                "{key} = {:?} is not a duration ({e}): expected a humantime duration like \"30m\", \"2h\" or \"90s\"",
                v.get_ref()
            ),
        )),
    }
}

fn positive(
    ctx: &Ctx,
    key: &str,
    v: Option<&Spanned<i64>>,
    default: i64,
) -> Result<i64, ConfigError> {
    match v {
        None => Ok(default),
        Some(v) if *v.get_ref() >= 1 => Ok(*v.get_ref()),
        Some(v) => Err(ctx.err(
            Some(v.span()),
            format!("{key} = {} must be at least 1", v.get_ref()),
        )),
    }
}

/// Parses a memory size: a number of bytes, or a number with a unit (`k`, `m`, `g`, with
/// or without `b`/`ib`, case-insensitive; binary multiples as Docker reads them).
pub fn parse_memory(s: &str) -> Option<i64> {
    let s = s.trim().to_ascii_lowercase();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let num: f64 = num.parse().ok()?;
    let mult: f64 = match unit.trim() {
        "" | "b" => 1.0,
        "k" | "kb" | "kib" => 1024.0,
        "m" | "mb" | "mib" => 1024.0 * 1024.0,
        "g" | "gb" | "gib" => 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    let bytes = num * mult;
    (bytes.is_finite() && bytes >= 1.0 && bytes < i64::MAX as f64).then_some(bytes as i64)
}

const MIN_MEMORY: i64 = 6 * 1024 * 1024; // Docker refuses less than 6 MiB.

/// `sessions.max_attachment_size` unset: 25 MB (as Docker and the config read sizes).
const DEFAULT_MAX_ATTACHMENT: i64 = 25 * 1024 * 1024;

fn agent(ctx: &Ctx, name: &str, raw: RawAgent) -> Result<AgentConfig, ConfigError> {
    let key = |k: &str| format!("agents.{name}.{k}");
    let image = match raw.image {
        Some(i) if !i.get_ref().trim().is_empty() => i.into_inner(),
        Some(i) => {
            return Err(ctx.err(
                Some(i.span()),
                format!(
                    "{} is empty: expected an image name like \"firstmate-worker:latest\"",
                    key("image")
                ),
            ));
        }
        None => {
            return Err(ctx.err(
                None,
                format!("[agents.{name}] has no image: add image = \"firstmate-worker:latest\" (or another worker image)"),
            ));
        }
    };
    let memory_bytes = match raw.memory {
        None => 2 * 1024 * 1024 * 1024,
        Some(m) => {
            let parsed = match m.get_ref() {
                toml::Value::Integer(i) => Some(*i),
                toml::Value::String(s) => parse_memory(s),
                _ => None,
            };
            match parsed {
                Some(b) if b >= MIN_MEMORY => b,
                _ => {
                    return Err(ctx.err(
                        Some(m.span()),
                        format!(
                            "{} = {} is not a memory size of at least 6m: expected bytes or a string like \"512m\" or \"2g\"",
                            key("memory"),
                            m.get_ref()
                        ),
                    ));
                }
            }
        }
    };
    let nano_cpus = match raw.cpus {
        None => 2_000_000_000,
        Some(c) if *c.get_ref() > 0.0 && *c.get_ref() <= 1024.0 => (c.get_ref() * 1e9) as i64,
        Some(c) => {
            return Err(ctx.err(
                Some(c.span()),
                format!(
                    "{} = {} must be a number of CPUs above 0, like 2 or 0.5",
                    key("cpus"),
                    c.get_ref()
                ),
            ));
        }
    };
    let pids_limit = positive(ctx, &key("pids_limit"), raw.pids_limit.as_ref(), 512)?;
    let protocol = raw.protocol.unwrap_or(ProtocolKind::Claude);
    if protocol == ProtocolKind::Codex && raw.permission_mode.as_deref() == Some("ask") {
        return Err(ctx.err(
            None,
            format!(
                "{} = \"ask\" is not available for codex agents: `codex exec` has no approval requests a chat can answer; use \"ask\" with a claude agent, or one of {} here",
                key("permission_mode"),
                crate::protocol::codex::PERMISSION_MODES.join(", ")
            ),
        ));
    }
    if protocol == ProtocolKind::Claude
        && let Some(mode) = &raw.permission_mode
        && !crate::protocol::claude::PERMISSION_MODES.contains(&mode.as_str())
    {
        return Err(ctx.err(
            None,
            format!(
                "{} = {mode:?} is not a mode of a claude agent: use one of {}",
                key("permission_mode"),
                crate::protocol::claude::PERMISSION_MODES.join(", ")
            ),
        ));
    }
    if let Some(tools) = &raw.ask_tools
        && let Some(bad) = tools
            .iter()
            .find(|t| t.trim().is_empty() || t.contains([' ', ',']))
    {
        return Err(ctx.err(
            None,
            format!(
                "{} holds {bad:?}, which is not a tool name: list names like \"Bash\" or \"Edit\"",
                key("ask_tools")
            ),
        ));
    }
    if protocol == ProtocolKind::Codex
        && let Some(mode) = &raw.permission_mode
        && !crate::protocol::codex::PERMISSION_MODES.contains(&mode.as_str())
    {
        return Err(ctx.err(
            None,
            format!(
                "{} = {mode:?} is not a mode of a codex agent: use one of {}",
                key("permission_mode"),
                crate::protocol::codex::PERMISSION_MODES.join(", ")
            ),
        ));
    }
    for k in raw.env.keys() {
        if k.is_empty() || k.contains('=') {
            return Err(ctx.err(
                None,
                format!("{}: {k:?} is not an environment variable name", key("env")),
            ));
        }
        let upper = k.to_ascii_uppercase();
        if upper.contains("KEY")
            || upper.contains("TOKEN")
            || upper.contains("SECRET")
            || upper.contains("PASSWORD")
        {
            return Err(ctx.err(
                None,
                format!(
                    "{}.{k} looks like a secret: secrets never go into a worker container; the model gateway ([gateway]) holds the credentials",
                    key("env")
                ),
            ));
        }
    }
    // Arguments end up in the container's command line, which `docker inspect` shows.
    for (i, arg) in raw.args.iter().enumerate() {
        if looks_like_secret_arg(arg) {
            return Err(ctx.err(
                None,
                format!(
                    "{}[{i}] looks like a credential: the container's command line is visible to anyone who can inspect it; the model gateway ([gateway]) holds the credentials",
                    key("args")
                ),
            ));
        }
    }
    Ok(AgentConfig {
        name: name.to_string(),
        image,
        protocol,
        model: raw.model.filter(|m| !m.is_empty()),
        permission_mode: raw
            .permission_mode
            .unwrap_or_else(|| "bypassPermissions".into()),
        ask_tools: raw
            .ask_tools
            .unwrap_or_else(|| DEFAULT_ASK_TOOLS.iter().map(|t| t.to_string()).collect()),
        memory_bytes,
        nano_cpus,
        pids_limit,
        env: raw.env,
        args: raw.args,
    })
}

/// An agent argument that carries a credential: an API key's shape (`sk-...`), or a
/// key, secret or password option with its value.
fn looks_like_secret_arg(arg: &str) -> bool {
    let lower = arg.to_ascii_lowercase();
    let value = lower.split_once('=').map_or(lower.as_str(), |(_, v)| v);
    let value = value.trim_matches(['"', '\'']);
    let named = [
        "api_key",
        "api-key",
        "apikey",
        "secret",
        "password",
        "auth_token",
        "bearer",
    ]
    .iter()
    .any(|n| lower.contains(n));
    value.starts_with("sk-")
        || value.starts_with("ghp_")
        || value.starts_with("github_pat_")
        || (named && lower.contains('='))
}

/// The agents every config has unless it defines its own `[agents.*]`.
fn builtin_agents() -> BTreeMap<String, AgentConfig> {
    let mk = |name: &str, image: &str, protocol| AgentConfig {
        name: name.into(),
        image: image.into(),
        protocol,
        model: None,
        permission_mode: "bypassPermissions".into(),
        ask_tools: DEFAULT_ASK_TOOLS.iter().map(|t| t.to_string()).collect(),
        memory_bytes: 2 * 1024 * 1024 * 1024,
        nano_cpus: 2_000_000_000,
        pids_limit: 512,
        env: BTreeMap::new(),
        args: Vec::new(),
    };
    [
        mk("claude", "firstmate-worker:latest", ProtocolKind::Claude),
        mk("codex", "firstmate-worker:latest", ProtocolKind::Codex),
        mk(
            "scripted",
            "firstmate-test-agent:latest",
            ProtocolKind::Claude,
        ),
    ]
    .into_iter()
    .map(|a| (a.name.clone(), a))
    .collect()
}

fn socket_addr(
    ctx: &Ctx,
    key: &str,
    v: Option<Spanned<String>>,
    default: &str,
) -> Result<SocketAddr, ConfigError> {
    match v {
        None => Ok(default.parse().expect("default address parses")),
        Some(v) => v.get_ref().parse().map_err(|_| {
            ctx.err(
                Some(v.span()),
                format!(
                    "{key} = {:?} is not an address: expected IP:PORT like \"{default}\"",
                    v.get_ref()
                ),
            )
        }),
    }
}

fn http_url(ctx: &Ctx, key: &str, v: &str) -> Result<String, ConfigError> {
    if v.starts_with("http://") || v.starts_with("https://") {
        Ok(v.trim_end_matches('/').to_string())
    } else {
        Err(ctx.err(
            None,
            format!("{key} = {v:?} is not a URL: expected one starting with http:// or https://"),
        ))
    }
}

fn database_url(ctx: &Ctx, v: Option<Spanned<String>>) -> Result<String, ConfigError> {
    let Some(v) = v else {
        return Ok(sqlite_url(&ctx.base_dir.join("firstmate.db")));
    };
    let url = v.get_ref();
    if let Some(rest) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    {
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        if path.is_empty() {
            return Err(ctx.err(
                Some(v.span()),
                "database.url has no file: expected \"sqlite://firstmate.db\"",
            ));
        }
        if path == ":memory:" {
            return Ok(url.clone());
        }
        let full = sqlite_url(&ctx.resolve_path(path));
        return Ok(if query.is_empty() {
            full
        } else {
            format!("{full}?{query}")
        });
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(url.clone());
    }
    Err(ctx.err(
        Some(v.span()),
        format!(
            "database.url = {:?} is not supported: expected \"sqlite://PATH\" or \"postgres://USER@HOST/DB\"",
            redact_url(url)
        ),
    ))
}

/// `[admin] socket`, or its default: `<file>.admin.sock` beside a SQLite database file,
/// else (PostgreSQL, in-memory SQLite) `firstmate.admin.sock` in the config's folder.
fn admin_socket(
    ctx: &Ctx,
    v: Option<Spanned<String>>,
    database_url: &str,
) -> Result<PathBuf, ConfigError> {
    if let Some(v) = v {
        if v.get_ref().trim().is_empty() {
            return Err(ctx.err(
                Some(v.span()),
                "admin.socket is empty: expected a path, like \"firstmate.admin.sock\"",
            ));
        }
        return Ok(ctx.resolve_path(v.get_ref()));
    }
    let file = database_url
        .strip_prefix("sqlite://")
        .map(|rest| rest.split_once('?').map_or(rest, |(path, _)| path))
        .filter(|path| *path != ":memory:" && !path.is_empty());
    Ok(match file {
        Some(path) => PathBuf::from(format!("{path}.admin.sock")),
        None => ctx.base_dir.join("firstmate.admin.sock"),
    })
}

fn sqlite_url(path: &Path) -> String {
    format!("sqlite://{}", path.display())
}

/// Finds the `[table]` header above a line, for naming the full key of an unknown field.
fn table_at(text: &str, line: usize) -> Option<String> {
    text.lines()
        .take(line)
        .filter_map(|l| {
            let l = l.trim();
            let inner = l
                .strip_prefix("[[")
                .and_then(|r| r.strip_suffix("]]"))
                .or_else(|| l.strip_prefix('[').and_then(|r| r.strip_suffix(']')))?;
            Some(inner.trim().to_string())
        })
        .last()
}

/// The key assigned on a line (`key = value`), if the line is an assignment.
fn key_at(text: &str, line: usize) -> Option<String> {
    let l = text.lines().nth(line.checked_sub(1)?)?;
    let (key, _) = l.split_once('=')?;
    let key = key.trim().trim_matches('"');
    (!key.is_empty() && !key.starts_with('[')).then(|| key.to_string())
}

/// Replaces serde's internal type names ("struct RawSessions") with what the user wrote.
fn friendly(message: &str) -> String {
    let mut out = message.trim().to_string();
    while let Some(i) = out.find("struct Raw") {
        let end = out[i..]
            .find(|c: char| !c.is_alphanumeric() && c != ' ')
            .map_or(out.len(), |e| i + e);
        out.replace_range(i..end, "a table");
    }
    out.replace("enum ProtocolKind", "\"claude\" or \"codex\"")
        .replace("enum Forge", "a forge name")
        .replace("expected i64", "expected an integer")
        .replace("expected u64", "expected an integer")
        .replace("expected f64", "expected a number")
}

/// Rewrites serde's "unknown field `x`, expected one of `a`, `b`" into a message that
/// names the full key and suggests the closest known one.
fn explain_unknown(message: &str, table: Option<&str>) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    let (field, rest) = rest.split_once('`')?;
    let known: Vec<&str> = rest.split('`').skip(1).step_by(2).collect();
    let full = match table {
        Some(t) => format!("{t}.{field}"),
        None => field.to_string(),
    };
    let best = known
        .iter()
        .map(|k| (strsim::jaro_winkler(field, k), *k))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0));
    let mut out = format!("unknown key {full}");
    match best {
        Some((_, k)) => out.push_str(&format!(": did you mean {k}?")),
        None if !known.is_empty() => {
            out.push_str(&format!(": expected one of {}", known.join(", ")))
        }
        None => {}
    }
    Some(out)
}

impl Config {
    /// Reads and validates the config file at `path`.
    pub fn load(path: &Path, env: EnvLookup) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let base_dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let base_dir = std::fs::canonicalize(&base_dir).unwrap_or(base_dir);
        let mut cfg = Config::from_str(&text, &path.display().to_string(), &base_dir, env)?;
        cfg.path = Some(path.to_path_buf());
        Ok(cfg)
    }

    /// The built-in configuration used when there is no config file: SQLite in
    /// `base_dir`, the local Docker socket, the built-in agents.
    pub fn defaults(base_dir: &Path, env: EnvLookup) -> Config {
        Config::from_str("", "(built-in defaults)", base_dir, env)
            .expect("the built-in defaults are valid")
    }

    /// Validates config text; `file` names it in errors, `base_dir` anchors relative paths.
    pub fn from_str(
        text: &str,
        file: &str,
        base_dir: &Path,
        env: EnvLookup,
    ) -> Result<Config, ConfigError> {
        let ctx = Ctx {
            file: file.to_string(),
            text,
            base_dir: base_dir.to_path_buf(),
        };
        let raw = parse_raw(&ctx, text, file)?;

        let database_url = database_url(&ctx, raw.database.and_then(|d| d.url))?;
        let admin = AdminConfig {
            socket: admin_socket(&ctx, raw.admin.and_then(|a| a.socket), &database_url)?,
        };
        let docker = docker_section(&ctx, raw.docker, env)?;
        let agents = agents_section(&ctx, raw.agents)?;
        let sessions = sessions_section(&ctx, raw.sessions, &agents)?;
        let matrix = matrix_section(&ctx, raw.matrix, env)?;
        let discord = discord_section(&ctx, raw.discord, env)?;
        let metrics = match raw.metrics {
            None => None,
            Some(m) => Some(MetricsConfig {
                listen: socket_addr(&ctx, "metrics.listen", m.listen, "127.0.0.1:9464")?,
            }),
        };
        let gateway = gateway_section(&ctx, raw.gateway, &docker, env)?;
        let egress = match raw.egress {
            None => EgressConfig::default(),
            Some(e) => {
                let entries: Vec<&str> = e.allow.iter().map(|v| v.get_ref().as_str()).collect();
                let allow = Allowlist::parse(&entries).map_err(|(i, message)| {
                    ctx.err(
                        Some(e.allow[i].span()),
                        format!("egress.allow[{i}]: {message}"),
                    )
                })?;
                EgressConfig { allow }
            }
        };
        let repos = repos_section(&ctx, raw.repos, env)?;

        Ok(Config {
            path: None,
            database_url,
            docker,
            sessions,
            agents,
            matrix,
            discord,
            metrics,
            gateway,
            egress,
            repos,
            admin,
        })
    }

    /// The file name used in messages.
    pub fn file_name(&self) -> String {
        self.path
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "(built-in defaults)".into())
    }

    /// Every referenced secret that is not set, each with how to fix it.
    pub fn missing_secrets(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut check = |s: &Secret, key: &str| {
            if let Some(m) = s.missing(key) {
                out.push(m);
            }
        };
        if let Some(m) = &self.matrix {
            check(&m.password, "matrix.password");
            check(&m.access_token, "matrix.access_token");
        }
        if let Some(d) = &self.discord {
            check(&d.token, "discord.token");
        }
        if let Some(g) = &self.gateway {
            for (name, u) in [("anthropic", &g.anthropic), ("openai", &g.openai)] {
                if let Some(u) = u {
                    check(&u.api_key, &format!("gateway.{name}.api_key"));
                    check(&u.oauth_token, &format!("gateway.{name}.oauth_token"));
                }
            }
        }
        for (alias, r) in &self.repos {
            check(&r.token, &format!("repos.{alias}.token"));
        }
        out
    }

    /// Fails when a referenced secret is not set.
    pub fn check_secrets(&self) -> Result<(), ConfigError> {
        let missing = self.missing_secrets();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Secrets {
                file: self.file_name(),
                missing,
            })
        }
    }

    /// What is valid but probably not what the user wants, each with how to change it:
    /// printed by `firstmate config` (as `warning:` lines) and `firstmate doctor`.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(g) = &self.gateway
            && self.docker.network.is_none()
            && self.docker.relay_network.is_none()
            && g.listen.ip().is_loopback()
        {
            out.push(format!(
                "gateway.listen = {} is on loopback: the gateway relay reaches the gateway at \
                 this host's address on Docker's bridge, so workers cannot reach it; listen on \
                 \"0.0.0.0:{}\" (or the bridge's address)",
                g.listen,
                g.listen.port()
            ));
        }
        if self.matrix.is_none() && self.discord.is_none() {
            out.push(
                "no front end is configured (neither [matrix] nor [discord]): `firstmate run` \
                 would serve only the model gateway and metrics; add a [matrix] or [discord] \
                 table (see bot.example.toml), or use `firstmate console`"
                    .to_string(),
            );
        }
        if let Some(m) = &self.matrix
            && m.allowed_users.is_empty()
        {
            out.push(
                "matrix.allowed_users is empty: nobody may use the bot on Matrix; list the \
                 Matrix ids allowed to, e.g. allowed_users = [\"@alice:example.org\"]"
                    .to_string(),
            );
        }
        if let Some(d) = &self.discord {
            if d.guild_ids.is_empty() {
                out.push(
                    "discord.guild_ids is empty: the /agent command is registered in no server; \
                     list the ids of the servers the bot serves, e.g. guild_ids = [123456789012345678]"
                        .to_string(),
                );
            }
            if d.allowed_users.is_empty() && d.allowed_roles.is_empty() {
                out.push(
                    "discord.allowed_users and discord.allowed_roles are both empty: nobody may \
                     use the bot on Discord; list user ids in allowed_users or role ids in \
                     allowed_roles"
                        .to_string(),
                );
            }
        }
        out
    }

    /// The effective configuration as TOML, secrets shown as `<set>` / `<unset: VAR>`.
    pub fn render_effective(&self) -> String {
        let body = toml::to_string(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"));
        format!(
            "# effective configuration from {}\n[database]\nurl = {:?}\n\n{body}",
            self.file_name(),
            redact_url(&self.database_url)
        )
    }
}

/// A database URL with its password replaced by `<redacted>`, fit for logs and errors.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let creds = &url[scheme_end + 3..at];
            match creds.find(':') {
                Some(colon) => format!(
                    "{}{}:<redacted>{}",
                    &url[..scheme_end + 3],
                    &creds[..colon],
                    &url[at..]
                ),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_str(text, "bot.toml", Path::new("/etc/firstmate"), &no_env)
    }

    fn err(text: &str) -> String {
        parse(text).expect_err("should be refused").to_string()
    }

    #[test]
    fn approvals_settings() {
        let c = parse(
            "[sessions]\napprovers = [\"@lead:x\", \"42\"]\napproval_timeout = \"90s\"\n\
             [agents.c]\nimage = \"i\"\npermission_mode = \"ask\"\n\
             [agents.d]\nimage = \"i\"\npermission_mode = \"ask\"\nask_tools = [\"Bash\"]\n",
        )
        .unwrap();
        assert_eq!(c.sessions.approvers, ["@lead:x", "42"]);
        assert_eq!(c.sessions.approval_timeout, Duration::from_secs(90));
        assert_eq!(c.agents["c"].permission_mode, "ask");
        assert_eq!(c.agents["c"].ask_tools, DEFAULT_ASK_TOOLS);
        assert_eq!(c.agents["d"].ask_tools, ["Bash"]);
        let d = parse("").unwrap();
        assert_eq!(d.sessions.approval_timeout, Duration::from_secs(600));
        assert!(d.sessions.approvers.is_empty());
        // Codex has no approvals a chat can answer: refused at load, saying so.
        let e = err("[agents.x]\nimage = \"i\"\nprotocol = \"codex\"\npermission_mode = \"ask\"\n");
        assert!(
            e.contains("agents.x.permission_mode") && e.contains("not available for codex agents"),
            "{e}"
        );
        let e = err("[agents.x]\nimage = \"i\"\npermission_mode = \"always\"\n");
        assert!(
            e.contains("not a mode of a claude agent") && e.contains("ask"),
            "{e}"
        );
        let e = err("[agents.x]\nimage = \"i\"\nask_tools = [\"Bash Edit\"]\n");
        assert!(
            e.contains("agents.x.ask_tools") && e.contains("not a tool name"),
            "{e}"
        );
        let e = err("[sessions]\napproval_timeout = \"soon\"\n");
        assert!(e.contains("sessions.approval_timeout"), "{e}");
    }

    #[test]
    fn empty_file_gives_the_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c.database_url, "sqlite:///etc/firstmate/firstmate.db");
        assert_eq!(c.docker.instance, "default");
        assert_eq!(c.sessions.default_agent, "claude");
        assert_eq!(c.sessions.idle_timeout, Duration::from_secs(1800));
        assert_eq!(c.sessions.max_lifetime, Duration::from_secs(8 * 3600));
        assert_eq!(
            (c.sessions.max_running, c.sessions.max_running_per_user),
            (10, 3)
        );
        assert_eq!(
            c.agents.keys().collect::<Vec<_>>(),
            ["claude", "codex", "scripted"]
        );
        assert!(c.matrix.is_none() && c.discord.is_none());
    }

    #[test]
    fn the_example_config_loads() {
        let text = include_str!("../bot.example.toml");
        // Every secret set; DOCKER_HOST as compose sets it, which the example leaves be.
        let env = |k: &str| match k {
            "DOCKER_HOST" => Some("tcp://socket-proxy:2375".to_string()),
            _ => Some(format!("value-of-{k}")),
        };
        let c = Config::from_str(text, "bot.example.toml", Path::new("/srv"), &env).unwrap();
        assert_eq!(c.docker.host, "tcp://socket-proxy:2375");
        assert!(c.matrix.is_some() && c.discord.is_some() && c.gateway.is_some());
        assert!(c.agents.contains_key("scripted"));
        // The example's admin socket is the default one, written out.
        let default = Config::from_str("", "bot.toml", Path::new("/srv"), &no_env).unwrap();
        assert_eq!(c.admin.socket, default.admin.socket);
        c.check_secrets().unwrap();
    }

    /// deploy/bot.toml, as docker-compose.yml mounts it at /etc/firstmate/bot.toml: every
    /// path on the data volume, Docker through the proxy even when DOCKER_HOST says
    /// otherwise, the gateway where workers reach it; and with its front ends uncommented
    /// (as a user does), the Matrix store on the volume too.
    #[test]
    fn with_networks_per_session_the_gateway_url_names_a_host() {
        let env = |k: &str| (k == "K").then(|| "k".to_string());
        let dir = std::path::Path::new("/etc/firstmate");
        let with = |docker: &str, url: &str| {
            let text = format!(
                "[docker]\n{docker}\n[gateway]\nurl = \"{url}\"\n[gateway.anthropic]\napi_key_env = \"K\"\n"
            );
            Config::from_str(&text, "bot.toml", dir, &env)
        };
        assert!(with("", "http://firstmate:8787").is_ok());
        let e = with("", "http://172.17.0.1:8787").unwrap_err().to_string();
        assert!(
            e.contains("gateway.url") && e.contains("docker.network"),
            "{e}"
        );
        assert!(with("", "http://[::1]:8787").is_err());
        assert!(with("network = \"mine\"", "http://172.17.0.1:8787").is_ok());
        // A gateway on loopback: the relay (on Docker's bridge) cannot reach it.
        let text =
            "[gateway]\nlisten = \"127.0.0.1:8787\"\n[gateway.anthropic]\napi_key_env = \"K\"\n";
        let w = Config::from_str(text, "bot.toml", dir, &env)
            .unwrap()
            .warnings();
        assert!(
            w.iter()
                .any(|w| w.contains("gateway.listen = 127.0.0.1:8787 is on loopback")),
            "{w:?}"
        );
        let fine = with("", "http://firstmate:8787").unwrap().warnings();
        assert!(!fine.iter().any(|w| w.contains("loopback")), "{fine:?}");
    }

    #[test]
    fn the_compose_config_loads_and_keeps_its_data_on_the_volume() {
        let text = include_str!("../deploy/bot.toml");
        let base = Path::new("/etc/firstmate");
        let env = |k: &str| match k {
            "DOCKER_HOST" => Some("unix:///elsewhere.sock".to_string()),
            _ => Some(format!("value-of-{k}")),
        };
        let c = Config::from_str(text, "bot.toml", base, &env).unwrap();
        assert_eq!(c.database_url, "sqlite:///var/lib/firstmate/firstmate.db");
        assert_eq!(c.docker.host, "tcp://socket-proxy:2375");
        // Workers get networks of their own; the relay meets the bot on compose's network.
        assert_eq!(c.docker.network, None);
        assert_eq!(c.docker.relay_network.as_deref(), Some("firstmate-gateway"));
        assert_eq!(c.docker.relay_image, DEFAULT_RELAY_IMAGE);
        let g = c.gateway.as_ref().expect("[gateway]");
        assert_eq!(g.url, "http://firstmate:8787");
        assert_eq!(g.listen.to_string(), "0.0.0.0:8787");
        assert_eq!(
            c.metrics.as_ref().expect("[metrics]").listen.to_string(),
            "0.0.0.0:9464"
        );
        assert!(c.agents.contains_key("scripted") && c.agents.contains_key("claude"));
        c.check_secrets().unwrap();

        // The commented front ends and repository, uncommented (tables and `key = value`
        // lines; not the alternatives commented twice), load as well.
        let is_key = |k: &str| k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        let uncommented: String = text
            .lines()
            .map(|l| match l.strip_prefix("# ") {
                Some(rest)
                    if rest.starts_with('[')
                        || rest.split_once(" = ").is_some_and(|(k, _)| is_key(k)) =>
                {
                    rest
                }
                _ => l,
            })
            .collect::<Vec<_>>()
            .join("\n");
        let c = Config::from_str(&uncommented, "bot.toml", base, &env).unwrap();
        let m = c.matrix.as_ref().expect("[matrix] uncommented");
        assert_eq!(m.store_path, Path::new("/var/lib/firstmate/matrix-store"));
        assert!(c.discord.is_some() && c.repos.contains_key("demo"));
        assert!(c.gateway.as_ref().unwrap().openai.is_some());
        c.check_secrets().unwrap();
    }

    #[test]
    fn unknown_keys_suggest_the_closest_and_name_the_line() {
        let e = err("[docker]\ninstance = \"x\"\n\n[sessions]\nidel_timeout = \"30m\"\n");
        assert!(e.contains("bot.toml:5"), "{e}");
        assert!(e.contains("sessions.idel_timeout"), "{e}");
        assert!(e.contains("did you mean idle_timeout?"), "{e}");
        let e = err("[databse]\nurl = \"x\"\n");
        assert!(e.contains("did you mean database?"), "{e}");
        let e = err("[agents.a]\nimage = \"i\"\nzzz = 1\n");
        assert!(
            e.contains("agents.a.zzz") && e.contains("expected one of"),
            "{e}"
        );
    }

    #[test]
    fn egress_patterns_are_checked_and_printed() {
        assert!(parse("").unwrap().egress.allow.is_empty());
        let c = parse(
            "[egress]\nallow = [\"PyPI.org\", \"*.githubusercontent.com\", \"203.0.113.7:8000\"]\n",
        )
        .unwrap();
        assert!(c.egress.allow.permits("raw.githubusercontent.com", 443));
        assert!(c.egress.allow.permits("203.0.113.7", 8000));
        let shown = c.render_effective();
        assert!(
            shown.contains(
                "[egress]\nallow = [\"pypi.org\", \"*.githubusercontent.com\", \"203.0.113.7:8000\"]"
            ),
            "{shown}"
        );
        let e =
            err("[egress]\nallow = [\n  \"pypi.org\",\n  \"ok.org\",\n  \"https://x.org\",\n]\n");
        assert!(e.contains("bot.toml:5"), "{e}");
        assert!(
            e.contains("egress.allow[2]") && e.contains("expected a host name"),
            "{e}"
        );
        let e = err("[egress]\nalow = []\n");
        assert!(e.contains("did you mean allow?"), "{e}");
    }

    #[test]
    fn bad_durations_name_the_key() {
        let e = err("[sessions]\nidle_timeout = \"30\"\n");
        assert!(
            e.contains("bot.toml:2") && e.contains("sessions.idle_timeout"),
            "{e}"
        );
        assert!(e.contains("\"30m\""), "{e}");
        assert_eq!(
            parse("[sessions]\nmax_lifetime = \"2h 30m\"\n")
                .unwrap()
                .sessions
                .max_lifetime,
            Duration::from_secs(9000)
        );
    }

    #[test]
    fn max_attachment_size_is_a_size_with_a_default() {
        assert_eq!(
            parse("").unwrap().sessions.max_attachment_bytes,
            25 * 1024 * 1024
        );
        let c = parse("[sessions]\nmax_attachment_size = \"1MB\"\n").unwrap();
        assert_eq!(c.sessions.max_attachment_bytes, 1024 * 1024);
        let e = parse("[sessions]\nmax_attachment_size = \"big\"\n").unwrap_err();
        assert!(
            e.to_string().contains("sessions.max_attachment_size"),
            "{e}"
        );
    }

    #[test]
    fn keep_stopped_is_optional_and_a_duration() {
        assert_eq!(parse("").unwrap().sessions.keep_stopped, None);
        let c = parse("[sessions]\nkeep_stopped = \"7d\"\n").unwrap();
        assert_eq!(
            c.sessions.keep_stopped,
            Some(Duration::from_secs(7 * 24 * 3600))
        );
        assert!(c.render_effective().contains("keep_stopped = \"7days\""));
        assert!(
            !parse("")
                .unwrap()
                .render_effective()
                .contains("keep_stopped")
        );
        let e = err("[sessions]\nkeep_stopped = \"a week\"\n");
        assert!(
            e.contains("bot.toml:2") && e.contains("sessions.keep_stopped"),
            "{e}"
        );
        assert!(err("[sessions]\nkeep_stopped = \"0s\"\n").contains("sessions.keep_stopped"));
        assert!(err("[sessions]\nkeep_stoped = \"7d\"\n").contains("did you mean keep_stopped?"));
    }

    #[test]
    fn bad_values_are_explained() {
        assert!(err("[agents.x]\nimage = \"i\"\nprotocol = \"telnet\"\n").contains("telnet"));
        let e =
            err("[agents.x]\nimage = \"i\"\nprotocol = \"codex\"\npermission_mode = \"plan\"\n");
        assert!(
            e.contains("agents.x.permission_mode") && e.contains("workspace-write"),
            "{e}"
        );
        assert!(err("[agents.x]\nprotocol = \"claude\"\n").contains("has no image"));
        for arg in [
            "sk-ant-api03-abc",
            "--api-key=xyz",
            "model_providers.x.api_key=\"k\"",
        ] {
            let e = err(&format!(
                "[agents.x]\nimage = \"i\"\nargs = [\"--x\", {arg:?}]\n"
            ));
            assert!(
                e.contains("agents.x.args[1] looks like a credential"),
                "{arg}: {e}"
            );
        }
        assert!(!looks_like_secret_arg("-c"));
        assert!(!looks_like_secret_arg("model_max_output_tokens=4000"));
        assert!(!looks_like_secret_arg("--max-turns"));
        assert!(err("[sessions]\nmax_running = 0\n").contains("sessions.max_running = 0"));
        assert!(err("[sessions]\ndefault_agent = \"nope\"\n").contains("names no agent"));
        assert!(err("[database]\nurl = \"mysql://x\"\n").contains("database.url"));
        assert!(err("[agents.x]\nimage = \"i\"\nmemory = \"lots\"\n").contains("agents.x.memory"));
        assert!(
            err("[agents.x]\nimage = \"i\"\nenv = { ANTHROPIC_API_KEY = \"sk\" }\n")
                .contains("looks like a secret")
        );
        assert!(err("[metrics]\nlisten = \"localhost\"\n").contains("metrics.listen"));
        assert!(
            err("[matrix]\nhomeserver_url = \"https://m\"\nuser_id = \"@a:m\"\n")
                .contains("needs a credential")
        );
        assert!(
            err("[discord]\ntoken_env = \"A\"\ntoken_file = \"b\"\n")
                .contains("both token_env and token_file")
        );
        assert!(err("sessions = 3\n").contains("sessions"));
    }

    #[test]
    fn agents_take_limits_and_defaults() {
        let c = parse(
            "[sessions]\ndefault_agent = \"s\"\n[agents.s]\nimage = \"img\"\nmemory = \"256m\"\ncpus = 0.5\npids_limit = 64\n",
        )
        .unwrap();
        let a = &c.agents["s"];
        assert_eq!(
            c.agents.len(),
            1,
            "a config's own agents replace the built-in ones"
        );
        assert_eq!(
            (a.memory_bytes, a.nano_cpus, a.pids_limit),
            (256 << 20, 500_000_000, 64)
        );
        assert_eq!(a.permission_mode, "bypassPermissions");
        assert_eq!(a.protocol, ProtocolKind::Claude);
        let c = parse("[agents.s]\nimage = \"img\"\n").unwrap();
        assert_eq!(c.sessions.default_agent, "s");
        assert_eq!(c.agents["s"].memory_bytes, 2 << 30);
    }

    #[test]
    fn memory_sizes_parse_like_docker() {
        assert_eq!(parse_memory("512m"), Some(512 << 20));
        assert_eq!(parse_memory("2G"), Some(2 << 30));
        assert_eq!(parse_memory("1.5GiB"), Some(3 << 29));
        assert_eq!(parse_memory("1048576"), Some(1 << 20));
        assert_eq!(parse_memory("12q"), None);
        assert_eq!(parse_memory(""), None);
        assert_eq!(parse_memory("-1m"), None);
    }

    #[test]
    fn relative_paths_resolve_against_the_config_folder() {
        let c = parse("[database]\nurl = \"sqlite://data/fm.db?mode=rwc\"\n").unwrap();
        assert_eq!(
            c.database_url,
            "sqlite:///etc/firstmate/data/fm.db?mode=rwc"
        );
        let c = parse("[database]\nurl = \"sqlite:///var/lib/fm.db\"\n").unwrap();
        assert_eq!(c.database_url, "sqlite:///var/lib/fm.db");
        let c = parse("[database]\nurl = \"postgres://u@h/db\"\n").unwrap();
        assert_eq!(c.database_url, "postgres://u@h/db");
    }

    #[test]
    fn the_admin_socket_sits_beside_the_database_or_where_configured() {
        let socket = |text: &str| parse(text).unwrap().admin.socket;
        assert_eq!(
            socket(""),
            Path::new("/etc/firstmate/firstmate.db.admin.sock")
        );
        assert_eq!(
            socket("[database]\nurl = \"sqlite://data/fm.db?mode=rwc\"\n"),
            Path::new("/etc/firstmate/data/fm.db.admin.sock")
        );
        for url in ["postgres://u@h/db", "sqlite::memory:", "sqlite://:memory:"] {
            assert_eq!(
                socket(&format!("[database]\nurl = \"{url}\"\n")),
                Path::new("/etc/firstmate/firstmate.admin.sock"),
                "{url}"
            );
        }
        assert_eq!(
            socket("[admin]\nsocket = \"run/fm.sock\"\n"),
            Path::new("/etc/firstmate/run/fm.sock")
        );
        assert_eq!(
            socket("[admin]\nsocket = \"/run/firstmate/admin.sock\"\n"),
            Path::new("/run/firstmate/admin.sock")
        );
        assert!(err("[admin]\nsocket = \"\"\n").contains("admin.socket"));
        assert!(err("[admin]\npath = \"x\"\n").contains("path"));
        assert!(
            parse("")
                .unwrap()
                .render_effective()
                .contains("[admin]\nsocket = \"/etc/firstmate/firstmate.db.admin.sock\"")
        );
    }

    #[test]
    fn secrets_are_never_rendered() {
        let env = |k: &str| (k == "TOK").then(|| "s3cr3t-value".to_string());
        let text = "[discord]\ntoken_env = \"TOK\"\nguild_ids = [1]\n[gateway.anthropic]\napi_key_env = \"NOPE\"\n";
        let c = Config::from_str(text, "bot.toml", Path::new("/"), &env).unwrap();
        let shown = c.render_effective();
        assert!(!shown.contains("s3cr3t-value"), "{shown}");
        assert!(!format!("{c:?}").contains("s3cr3t-value"));
        assert!(
            shown.contains("<set>") && shown.contains("<unset: NOPE>"),
            "{shown}"
        );
        assert_eq!(
            c.discord.as_ref().unwrap().token.value(),
            Some("s3cr3t-value")
        );
        let e = c.check_secrets().unwrap_err().to_string();
        assert!(
            e.contains("gateway.anthropic.api_key_env") && e.contains("NOPE"),
            "{e}"
        );
    }

    #[test]
    fn secret_files_are_read_and_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("tok"), "abc\n").unwrap();
        let c = Config::from_str(
            "[discord]\ntoken_file = \"tok\"\n",
            "bot.toml",
            dir.path(),
            &no_env,
        )
        .unwrap();
        assert_eq!(c.discord.unwrap().token.value(), Some("abc"));
    }

    #[test]
    fn docker_host_comes_from_the_environment_when_unset() {
        let env = |k: &str| (k == "DOCKER_HOST").then(|| "tcp://proxy:2375".to_string());
        let c = Config::from_str("", "bot.toml", Path::new("/"), &env).unwrap();
        assert_eq!(c.docker.host, "tcp://proxy:2375");
        assert_eq!(
            parse("").unwrap().docker.host,
            "unix:///var/run/docker.sock"
        );
    }

    #[test]
    fn warnings_name_what_lets_nobody_in_and_how_to_fix_it() {
        let none = parse("").unwrap().warnings();
        assert_eq!(none.len(), 1, "{none:?}");
        assert!(none[0].contains("no front end"), "{none:?}");
        assert!(none[0].contains("[matrix] or [discord]"), "{none:?}");

        let d = parse("[discord]\ntoken_env = \"T\"\n").unwrap().warnings();
        assert_eq!(d.len(), 2, "{d:?}");
        assert!(d.iter().any(|w| w.contains("discord.guild_ids is empty")));
        assert!(
            d.iter()
                .any(|w| w.contains("nobody may use the bot on Discord"))
        );

        let d = parse("[discord]\ntoken_env = \"T\"\nguild_ids = [1]\nallowed_roles = [2]\n")
            .unwrap()
            .warnings();
        assert!(d.is_empty(), "{d:?}");

        let m =
            "[matrix]\nhomeserver_url = \"https://m\"\nuser_id = \"@a:m\"\npassword_env = \"P\"\n";
        let w = parse(m).unwrap().warnings();
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("matrix.allowed_users is empty"), "{w:?}");
        let w = parse(&format!("{m}allowed_users = [\"@b:m\"]\n"))
            .unwrap()
            .warnings();
        assert!(w.is_empty(), "{w:?}");
    }

    #[test]
    fn an_unreadable_secret_file_says_why_once() {
        let c = parse("[discord]\ntoken_file = \"/nonexistent/firstmate-token\"\n").unwrap();
        let msg = c.check_secrets().unwrap_err().to_string();
        assert!(msg.contains("discord.token_file names /nonexistent/firstmate-token, which cannot be read: No such file or directory"), "{msg}");
        assert_eq!(msg.matches("No such file").count(), 1, "{msg}");
        assert_eq!(
            c.discord.unwrap().token.origin("discord.token"),
            "discord.token_file (/nonexistent/firstmate-token)"
        );
    }
}
