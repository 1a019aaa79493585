//! The database: sessions, their ordered event log, their prompts, and the binding of a
//! session to a chat thread. One code path for SQLite and PostgreSQL through sqlx's `Any`
//! driver; only the migrations differ per backend. Only this module writes SQL.
//!
//! Invariant: sequence numbers are allocated in one place, `append_events`, from the
//! session row and in the same transaction as the events they number; so any number of
//! writers (the session task, the scheduler, `stop` from another process) can append
//! at once and the log stays dense and unique.

use std::borrow::Cow;
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AnyPool, Row, SqlSafeStr};

use crate::approval::Answered;
use crate::event::{EventBody, SessionEvent, SessionState};
use crate::protocol::Usage;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "cannot open the database {url}: {}; {}",
        crate::error::cause(source),
        connect_hint(source)
    )]
    Connect { url: String, source: sqlx::Error },
    #[error(
        "cannot open the database {url}: no answer within {}s; check database.url in the config \
         (is the database server running and reachable at that address?)",
        CONNECT_TIMEOUT.as_secs()
    )]
    ConnectTimeout { url: String },
    #[error("cannot apply the database migrations: {}", crate::error::cause(.0))]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database error: {}", crate::error::cause(.0))]
    Sql(#[from] sqlx::Error),
    #[error("the database holds an unreadable row: {0}")]
    Corrupt(String),
    #[error("no session {0}; `firstmate sessions list --all` shows the sessions")]
    NoSession(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// How long opening the database may take: a server that is down or unreachable is
/// reported after this, with its real cause, instead of after the pool's 30 s wait.
pub const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// What to check for a failed connection, by what went wrong.
fn connect_hint(e: &sqlx::Error) -> &'static str {
    let code = match e {
        sqlx::Error::Database(d) => d.code().map(|c| c.into_owned()),
        _ => None,
    };
    match code.as_deref() {
        // PostgreSQL: invalid_password, invalid_authorization_specification.
        Some("28P01") | Some("28000") => {
            "check the user name and password in database.url in the config"
        }
        // PostgreSQL: invalid_catalog_name.
        Some("3D000") => {
            "create that database (createdb NAME) or fix the database name in database.url in the config"
        }
        _ if matches!(e, sqlx::Error::Io(_) | sqlx::Error::Tls(_)) => {
            "check database.url in the config (is the database server running and reachable at that address?)"
        }
        _ => "check database.url in the config",
    }
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A session as stored: the whole row. The engine's session task keeps one in memory
/// and writes it back with each batch of events.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionRecord {
    pub id: String,
    pub instance: String,
    pub agent: String,
    pub protocol: String,
    pub image: String,
    pub model: Option<String>,
    /// The repository (`new --repo`): its alias, or the URL as given.
    pub repo: Option<String>,
    /// The branch the work goes on and is pushed to (before the clone: the `--branch`
    /// asked for).
    pub branch: Option<String>,
    /// Where the branch started: the base branch and commit (once cloned).
    pub base_branch: Option<String>,
    pub base_commit: Option<String>,
    /// The last commit pushed to `branch`, and the pull request opened for it.
    pub pushed_commit: Option<String>,
    pub pr_url: Option<String>,
    pub owner: String,
    pub frontend: String,
    pub room: String,
    pub first_prompt: String,
    pub idle_timeout_ms: Option<i64>,
    pub state: SessionState,
    pub state_detail: Option<String>,
    pub container_id: Option<String>,
    pub agent_session_id: Option<String>,
    /// Position in the container's log up to which output is stored: the Docker log
    /// timestamp (ns) of the last line taken, and how many lines carried that timestamp.
    pub log_cursor_ns: i64,
    pub log_cursor_count: i64,
    pub next_seq: i64,
    pub turns: i64,
    pub usage: Usage,
    pub cost_usd: f64,
    /// The cumulative cost the running agent process last reported (agents report a
    /// running total; the session's cost grows by the difference).
    pub agent_cost_usd: f64,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub last_activity_at: i64,
    pub ended_at: Option<i64>,
}

impl SessionRecord {
    /// A new queued session.
    #[allow(clippy::too_many_arguments)]
    pub fn new_queued(
        id: String,
        instance: String,
        agent: String,
        protocol: String,
        image: String,
        owner: String,
        frontend: String,
        room: String,
        first_prompt: String,
    ) -> SessionRecord {
        let now = now_ms();
        SessionRecord {
            id,
            instance,
            agent,
            protocol,
            image,
            model: None,
            repo: None,
            branch: None,
            base_branch: None,
            base_commit: None,
            pushed_commit: None,
            pr_url: None,
            owner,
            frontend,
            room,
            first_prompt,
            idle_timeout_ms: None,
            state: SessionState::Queued,
            state_detail: None,
            container_id: None,
            agent_session_id: None,
            log_cursor_ns: 0,
            log_cursor_count: 0,
            next_seq: 1,
            turns: 0,
            usage: Usage::default(),
            cost_usd: 0.0,
            agent_cost_usd: 0.0,
            created_at: now,
            started_at: None,
            last_activity_at: now,
            ended_at: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct PromptRecord {
    pub id: i64,
    pub session_id: String,
    pub body: String,
    pub author: String,
    pub status: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Binding {
    pub session_id: String,
    pub frontend: String,
    pub thread_ref: String,
    pub delivered_seq: i64,
    /// The thread's status message, where the front end keeps it here.
    pub status_ref: Option<String>,
}

#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

const SESSION_COLUMNS: &str = "id, instance, agent, protocol, image, model, repo, branch, owner, frontend, room, \
     first_prompt, idle_timeout_ms, state, state_detail, container_id, agent_session_id, \
     log_cursor_ns, log_cursor_count, next_seq, turns, input_tokens, output_tokens, \
     cache_read_tokens, cache_write_tokens, cost_usd, agent_cost_usd, created_at, started_at, \
     last_activity_at, ended_at, base_branch, base_commit, pushed_commit, pr_url";

fn migrations(backend: Backend) -> Vec<Migration> {
    let init = match backend {
        Backend::Sqlite => include_str!("../migrations/sqlite/0001_init.sql"),
        Backend::Postgres => include_str!("../migrations/postgres/0001_init.sql"),
    };
    let gateway = match backend {
        Backend::Sqlite => include_str!("../migrations/sqlite/0002_gateway.sql"),
        Backend::Postgres => include_str!("../migrations/postgres/0002_gateway.sql"),
    };
    let status_ref = match backend {
        Backend::Sqlite => include_str!("../migrations/sqlite/0003_status_ref.sql"),
        Backend::Postgres => include_str!("../migrations/postgres/0003_status_ref.sql"),
    };
    let removed_at = match backend {
        Backend::Sqlite => include_str!("../migrations/sqlite/0004_removed_at.sql"),
        Backend::Postgres => include_str!("../migrations/postgres/0004_removed_at.sql"),
    };
    let approvals = match backend {
        Backend::Sqlite => include_str!("../migrations/sqlite/0005_approvals.sql"),
        Backend::Postgres => include_str!("../migrations/postgres/0005_approvals.sql"),
    };
    let repos = match backend {
        Backend::Sqlite => include_str!("../migrations/sqlite/0006_repos.sql"),
        Backend::Postgres => include_str!("../migrations/postgres/0006_repos.sql"),
    };
    vec![
        Migration::new(
            1,
            Cow::Borrowed("init"),
            MigrationType::Simple,
            init.into_sql_str(),
            false,
        ),
        Migration::new(
            2,
            Cow::Borrowed("gateway"),
            MigrationType::Simple,
            gateway.into_sql_str(),
            false,
        ),
        Migration::new(
            3,
            Cow::Borrowed("status_ref"),
            MigrationType::Simple,
            status_ref.into_sql_str(),
            false,
        ),
        Migration::new(
            4,
            Cow::Borrowed("removed_at"),
            MigrationType::Simple,
            removed_at.into_sql_str(),
            false,
        ),
        Migration::new(
            5,
            Cow::Borrowed("approvals"),
            MigrationType::Simple,
            approvals.into_sql_str(),
            false,
        ),
        Migration::new(
            6,
            Cow::Borrowed("repos"),
            MigrationType::Simple,
            repos.into_sql_str(),
            false,
        ),
    ]
}

/// An agent's tool call that waits (or waited) for a person's approval.
#[derive(Debug, Clone, PartialEq)]
pub struct ApprovalRecord {
    pub id: String,
    pub session_id: String,
    /// The agent's id for the request, which its answer names.
    pub request_id: String,
    pub tool: String,
    pub summary: String,
    pub input: serde_json::Value,
    /// None while it waits.
    pub answered: Option<Answered>,
    pub created_at: i64,
    /// Whether the answer reached the agent.
    pub sent: bool,
}

/// A gateway token and whose it is.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenRecord {
    pub session_id: String,
    pub owner: String,
    pub revoked: bool,
}

/// What the model APIs reported for a session (or a user), summed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ApiUsage {
    pub calls: i64,
    pub usage: Usage,
    pub cost_usd: f64,
}

/// What `GET /metrics` reads from the store.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StoreMetrics {
    /// Sessions by state name.
    pub sessions: Vec<(String, i64)>,
    pub turns: i64,
    pub api: ApiUsage,
    /// Approvals by outcome (`approved`, `always`, `denied`, `timed_out`), and those
    /// that wait under `waiting`.
    pub approvals: Vec<(String, i64)>,
}

impl Store {
    /// Opens the database at `url` (`sqlite://PATH`, created if missing, or
    /// `postgres://...`) without migrating it.
    pub async fn open(url: &str) -> Result<Store> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            Backend::Sqlite
        };
        let url_owned = match backend {
            Backend::Sqlite if !url.contains("mode=") => {
                let sep = if url.contains('?') { '&' } else { '?' };
                format!("{url}{sep}mode=rwc")
            }
            _ => url.to_string(),
        };
        let connect_err = |source| StoreError::Connect {
            url: redact_url(url),
            source,
        };
        // One direct connection first: the pool would retry a refused connection until
        // its acquire timeout and then report only that it timed out.
        let url_redacted = redact_url(url);
        let timeout_err = || StoreError::ConnectTimeout {
            url: url_redacted.clone(),
        };
        let first = tokio::time::timeout(
            CONNECT_TIMEOUT,
            <sqlx::AnyConnection as sqlx::Connection>::connect(&url_owned),
        )
        .await
        .map_err(|_| timeout_err())?
        .map_err(connect_err)?;
        let _ = sqlx::Connection::close(first).await;
        let pool = AnyPoolOptions::new()
            .max_connections(if backend == Backend::Sqlite { 4 } else { 8 })
            .connect(&url_owned)
            .await
            .map_err(connect_err)?;
        if backend == Backend::Sqlite {
            sqlx::query("PRAGMA journal_mode=WAL")
                .execute(&pool)
                .await
                .map_err(connect_err)?;
        }
        Ok(Store { pool, backend })
    }

    /// Opens and migrates: what `run` and `console` use.
    pub async fn connect(url: &str) -> Result<Store> {
        let store = Store::open(url).await?;
        store.migrate().await?;
        Ok(store)
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub async fn migrate(&self) -> Result<()> {
        Migrator::with_migrations(migrations(self.backend))
            .run(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    // --- sessions ---------------------------------------------------------------

    pub async fn insert_session(&self, s: &SessionRecord) -> Result<()> {
        let mut conn = self.pool.acquire().await?;
        insert_session_row(&mut conn, s).await
    }

    /// Creates a session in one transaction: its row, its first prompt (pending), its
    /// binding to the thread that shows it (when the front end has one already), and
    /// its first events. Either all of it is stored or none: no session exists without
    /// its prompt, or (when `thread` is given) without its thread.
    pub async fn create_session(
        &self,
        s: &mut SessionRecord,
        author: &str,
        thread: Option<&str>,
        events: Vec<EventBody>,
    ) -> Result<Vec<SessionEvent>> {
        let mut tx = self.pool.begin().await?;
        insert_session_row(&mut tx, s).await?;
        sqlx::query(
            "INSERT INTO prompts (session_id, body, author, status, created_at) \
             VALUES ($1, $2, $3, 'pending', $4)",
        )
        .bind(&s.id)
        .bind(&s.first_prompt)
        .bind(author)
        .bind(s.created_at)
        .execute(&mut *tx)
        .await?;
        if let Some(thread) = thread {
            sqlx::query(
                "INSERT INTO bindings (session_id, frontend, thread_ref, delivered_seq) \
                 VALUES ($1, $2, $3, 0)",
            )
            .bind(&s.id)
            .bind(&s.frontend)
            .bind(thread)
            .execute(&mut *tx)
            .await?;
        }
        let out = append_events(&mut tx, &s.id, events).await?;
        tx.commit().await?;
        if let Some(last) = out.last() {
            s.next_seq = last.seq + 1;
        }
        Ok(out)
    }

    pub async fn session(&self, id: &str) -> Result<Option<SessionRecord>> {
        let sql = format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| session_from_row(&r)).transpose()
    }

    /// Sessions of an instance, newest first; `states` empty means all.
    pub async fn sessions(
        &self,
        instance: &str,
        states: &[SessionState],
    ) -> Result<Vec<SessionRecord>> {
        // The states are our own constants: listed in the SQL, so the database skips
        // the (many) ended sessions when only live ones are asked for.
        let filter = if states.is_empty() {
            String::new()
        } else {
            let names: Vec<String> = states.iter().map(|s| format!("'{}'", s.as_str())).collect();
            format!(" AND state IN ({})", names.join(", "))
        };
        let sql = format!(
            "SELECT {SESSION_COLUMNS} FROM sessions WHERE instance = $1{filter} ORDER BY created_at DESC, id"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(instance)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(session_from_row).collect()
    }

    /// Sessions started from one room (channel) of one front end, newest first.
    pub async fn sessions_in_room(
        &self,
        instance: &str,
        frontend: &str,
        room: &str,
    ) -> Result<Vec<SessionRecord>> {
        let sql = format!(
            "SELECT {SESSION_COLUMNS} FROM sessions WHERE instance = $1 AND frontend = $2 \
             AND room = $3 ORDER BY created_at DESC, id"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(instance)
            .bind(frontend)
            .bind(room)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(session_from_row).collect()
    }

    /// Writes a session's mutable fields and appends `events` in one transaction; the
    /// events are numbered by the database and `s.next_seq` follows.
    pub async fn commit(
        &self,
        s: &mut SessionRecord,
        events: Vec<EventBody>,
    ) -> Result<Vec<SessionEvent>> {
        self.commit_inner(s, events, None).await
    }

    /// Like [`Store::commit`], and marks the prompt `prompt_id` sent in the same
    /// transaction: a prompt is never seen both taken and not running.
    pub async fn commit_taking_prompt(
        &self,
        s: &mut SessionRecord,
        events: Vec<EventBody>,
        prompt_id: i64,
    ) -> Result<Vec<SessionEvent>> {
        self.commit_inner(s, events, Some(prompt_id)).await
    }

    async fn commit_inner(
        &self,
        s: &mut SessionRecord,
        events: Vec<EventBody>,
        prompt_id: Option<i64>,
    ) -> Result<Vec<SessionEvent>> {
        let mut tx = self.pool.begin().await?;
        let at = now_ms();
        if let Some(id) = prompt_id {
            sqlx::query("UPDATE prompts SET status = 'sent', sent_at = $2 WHERE id = $1")
                .bind(id)
                .bind(at)
                .execute(&mut *tx)
                .await?;
        }
        let out = append_events(&mut tx, &s.id, events).await?;
        if let Some(last) = out.last() {
            s.next_seq = last.seq + 1;
        }
        // Every field but `next_seq`, which only `append_events` moves.
        sqlx::query(
            "UPDATE sessions SET state = $2, state_detail = $3, container_id = $4, \
             agent_session_id = $5, log_cursor_ns = $6, log_cursor_count = $7, \
             turns = $8, input_tokens = $9, output_tokens = $10, cache_read_tokens = $11, \
             cache_write_tokens = $12, cost_usd = $13, started_at = $14, last_activity_at = $15, \
             ended_at = $16, image = $17, agent_cost_usd = $18 WHERE id = $1",
        )
        .bind(&s.id)
        .bind(s.state.as_str())
        .bind(&s.state_detail)
        .bind(&s.container_id)
        .bind(&s.agent_session_id)
        .bind(s.log_cursor_ns)
        .bind(s.log_cursor_count)
        .bind(s.turns)
        .bind(s.usage.input_tokens)
        .bind(s.usage.output_tokens)
        .bind(s.usage.cache_read_tokens)
        .bind(s.usage.cache_write_tokens)
        .bind(s.cost_usd)
        .bind(s.started_at)
        .bind(s.last_activity_at)
        .bind(s.ended_at)
        .bind(&s.image)
        .bind(s.agent_cost_usd)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(out)
    }

    /// Moves a session to `state` and appends its `State` event, in one transaction,
    /// touching nothing else: for changes made outside the session's task (queued,
    /// starting, resumed, stopped), which must not write back a stale copy of the row.
    pub async fn commit_state(
        &self,
        id: &str,
        state: SessionState,
        detail: Option<String>,
        touch: bool,
    ) -> Result<Vec<SessionEvent>> {
        let mut tx = self.pool.begin().await?;
        let now = now_ms();
        sqlx::query(
            "UPDATE sessions SET state = $2, state_detail = $3, ended_at = $4, \
             last_activity_at = CASE WHEN $5 = 1 THEN $6 ELSE last_activity_at END WHERE id = $1",
        )
        .bind(id)
        .bind(state.as_str())
        .bind(&detail)
        .bind(state.is_ended().then_some(now))
        .bind(touch as i64)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let out = append_events(&mut tx, id, vec![EventBody::State { state, detail }]).await?;
        tx.commit().await?;
        Ok(out)
    }

    // --- the model gateway --------------------------------------------------------

    /// Stores a new token of a session. Only its digest ([`token_digest`]) is kept: the
    /// database never holds a usable token.
    pub async fn insert_gateway_token(
        &self,
        token: &str,
        session: &str,
        owner: &str,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO gateway_tokens (token, session_id, owner, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(token_digest(token))
        .bind(session)
        .bind(owner)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn gateway_token(&self, token: &str) -> Result<Option<TokenRecord>> {
        // Tokens issued before digests were stored are kept as they are.
        for key in [token_digest(token), token.to_string()] {
            let row = sqlx::query(
                "SELECT session_id, owner, revoked_at FROM gateway_tokens WHERE token = $1",
            )
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
            if let Some(r) = row {
                return Ok(Some(TokenRecord {
                    session_id: r.try_get("session_id")?,
                    owner: r.try_get("owner")?,
                    revoked: r.try_get::<Option<i64>, _>("revoked_at")?.is_some(),
                }));
            }
        }
        Ok(None)
    }

    /// Revokes every token of a session.
    pub async fn revoke_gateway_tokens(&self, session: &str) -> Result<()> {
        sqlx::query(
            "UPDATE gateway_tokens SET revoked_at = $2 WHERE session_id = $1 AND revoked_at IS NULL",
        )
        .bind(session)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    pub async fn record_api_usage(
        &self,
        session: &str,
        owner: &str,
        api: &str,
        model: Option<&str>,
        usage: &Usage,
        cost_usd: f64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO api_usage (session_id, owner, at, api, model, input_tokens, output_tokens, \
             cache_read_tokens, cache_write_tokens, cost_usd) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(session)
        .bind(owner)
        .bind(now_ms())
        .bind(api)
        .bind(model)
        .bind(usage.input_tokens)
        .bind(usage.output_tokens)
        .bind(usage.cache_read_tokens)
        .bind(usage.cache_write_tokens)
        .bind(cost_usd)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn sum_api_usage(&self, filter: &str, key: &str, since: i64) -> Result<ApiUsage> {
        let sql = format!(
            "SELECT COUNT(*) AS calls, \
             CAST(COALESCE(SUM(input_tokens), 0) AS BIGINT) AS i, \
             CAST(COALESCE(SUM(output_tokens), 0) AS BIGINT) AS o, \
             CAST(COALESCE(SUM(cache_read_tokens), 0) AS BIGINT) AS cr, \
             CAST(COALESCE(SUM(cache_write_tokens), 0) AS BIGINT) AS cw, \
             CAST(COALESCE(SUM(cost_usd), 0) AS DOUBLE PRECISION) AS cost \
             FROM api_usage WHERE {filter} = $1 AND at >= $2"
        );
        let r = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(key)
            .bind(since)
            .fetch_one(&self.pool)
            .await?;
        api_usage_from_row(&r)
    }

    /// What the model APIs used for a session, as the gateway counted it.
    pub async fn session_api_usage(&self, session: &str) -> Result<ApiUsage> {
        self.sum_api_usage("session_id", session, 0).await
    }

    /// A session as `status` reports it: when the gateway metered its model calls, the
    /// tokens and cost are the gateway's count, not what the agent said.
    pub async fn session_report(&self, id: &str) -> Result<Option<SessionRecord>> {
        let Some(mut s) = self.session(id).await? else {
            return Ok(None);
        };
        let api = self.session_api_usage(id).await?;
        if api.calls > 0 {
            s.usage = api.usage;
            s.cost_usd = api.cost_usd;
        }
        Ok(Some(s))
    }

    /// What a user's sessions used since `since_ms`.
    pub async fn user_api_usage(&self, owner: &str, since_ms: i64) -> Result<ApiUsage> {
        self.sum_api_usage("owner", owner, since_ms).await
    }

    // --- cleanup ----------------------------------------------------------------

    /// Ended sessions of an instance that ended at or before `ended_before` (ms since
    /// the epoch) and whose container and volumes were not removed since, oldest end
    /// first: what `sessions prune` and `sessions.keep_stopped` remove.
    pub async fn prunable_sessions(
        &self,
        instance: &str,
        ended_before: i64,
    ) -> Result<Vec<SessionRecord>> {
        let sql = format!(
            "SELECT {SESSION_COLUMNS} FROM sessions WHERE instance = $1 \
             AND state IN ('stopped', 'failed') AND ended_at IS NOT NULL AND ended_at <= $2 \
             AND (removed_at IS NULL OR removed_at < ended_at) ORDER BY ended_at, id"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(instance)
            .bind(ended_before)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(session_from_row).collect()
    }

    /// Records where a repository session's work goes: its branch, and the branch and
    /// commit it started from.
    pub async fn set_workspace(
        &self,
        id: &str,
        branch: &str,
        base_branch: &str,
        base_commit: &str,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE sessions SET branch = $2, base_branch = $3, base_commit = $4 WHERE id = $1",
        )
        .bind(id)
        .bind(branch)
        .bind(base_branch)
        .bind(base_commit)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records the commit last pushed to the session's branch.
    pub async fn set_pushed(&self, id: &str, commit: &str) -> Result<()> {
        sqlx::query("UPDATE sessions SET pushed_commit = $2 WHERE id = $1")
            .bind(id)
            .bind(commit)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Records the pull request opened for the session's branch.
    pub async fn set_pr_url(&self, id: &str, url: &str) -> Result<()> {
        sqlx::query("UPDATE sessions SET pr_url = $2 WHERE id = $1")
            .bind(id)
            .bind(url)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Records that an ended session's container and volumes were removed at `at`, and
    /// forgets its agent conversation, which lived in the removed home volume (a
    /// `resume` starts a new one). False when the session is not ended (any more).
    pub async fn mark_removed(&self, id: &str, at: i64) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE sessions SET removed_at = $2, agent_session_id = NULL \
             WHERE id = $1 AND state IN ('stopped', 'failed')",
        )
        .bind(id)
        .bind(at)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// When an ended session's container and volumes were removed, if they were since
    /// it last ended.
    pub async fn removed_at(&self, id: &str) -> Result<Option<i64>> {
        let row = sqlx::query(
            "SELECT removed_at FROM sessions WHERE id = $1 AND state IN ('stopped', 'failed') \
             AND removed_at IS NOT NULL AND (ended_at IS NULL OR removed_at >= ended_at)",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(r) => Ok(r.try_get::<Option<i64>, _>("removed_at")?),
            None => Ok(None),
        }
    }

    // --- approvals ----------------------------------------------------------------

    /// Stores an agent's request for approval, once: the same request (a log line read
    /// again after a restart) gives back the approval stored the first time.
    pub async fn insert_approval(&self, a: &ApprovalRecord) -> Result<ApprovalRecord> {
        let inserted = sqlx::query(
            "INSERT INTO approvals (id, session_id, request_id, tool, summary, input, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (session_id, request_id) DO NOTHING \
             RETURNING id",
        )
        .bind(&a.id)
        .bind(&a.session_id)
        .bind(&a.request_id)
        .bind(&a.tool)
        .bind(&a.summary)
        .bind(a.input.to_string())
        .bind(a.created_at)
        .fetch_optional(&self.pool)
        .await?;
        // Inserted: the approval as it was asked. Someone may answer it before a
        // read-back, and the thread must show the question before its answer.
        if inserted.is_some() {
            return Ok(ApprovalRecord {
                answered: None,
                sent: false,
                ..a.clone()
            });
        }
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {APPROVAL_COLUMNS} FROM approvals WHERE session_id = $1 AND request_id = $2"
        )))
        .bind(&a.session_id)
        .bind(&a.request_id)
        .fetch_one(&self.pool)
        .await?;
        approval_from_row(&row)
    }

    /// Records the answer to an approval that waits; false when it was answered already
    /// (two people at once: the first answer counts).
    pub async fn answer_approval(&self, id: &str, answered: &Answered) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE approvals SET outcome = $2, answered_by = $3, why = $4, answered_at = $5 \
             WHERE id = $1 AND outcome IS NULL",
        )
        .bind(id)
        .bind(answered.answer.as_str())
        .bind(&answered.by)
        .bind(&answered.why)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Records that an approval's answer reached the agent.
    pub async fn mark_approval_sent(&self, id: &str) -> Result<()> {
        sqlx::query("UPDATE approvals SET sent_at = $2 WHERE id = $1")
            .bind(id)
            .bind(now_ms())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn approval(&self, id: &str) -> Result<Option<ApprovalRecord>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {APPROVAL_COLUMNS} FROM approvals WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(approval_from_row).transpose()
    }

    /// A session's approvals, oldest first.
    pub async fn approvals(&self, session: &str) -> Result<Vec<ApprovalRecord>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {APPROVAL_COLUMNS} FROM approvals WHERE session_id = $1 ORDER BY created_at, id"
        )))
        .bind(session)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(approval_from_row).collect()
    }

    /// The oldest approval of a session that waits for an answer, if any.
    pub async fn waiting_approval(&self, session: &str) -> Result<Option<ApprovalRecord>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {APPROVAL_COLUMNS} FROM approvals WHERE session_id = $1 AND outcome IS NULL \
             ORDER BY created_at, id LIMIT 1"
        )))
        .bind(session)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(approval_from_row).transpose()
    }

    /// Records the message a front end showed an approval in.
    pub async fn set_approval_message(
        &self,
        approval: &str,
        frontend: &str,
        message: &str,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO approval_messages (approval_id, frontend, message_ref) VALUES ($1, $2, $3) \
             ON CONFLICT (approval_id, frontend) DO UPDATE SET message_ref = excluded.message_ref",
        )
        .bind(approval)
        .bind(frontend)
        .bind(message)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The messages a front end showed a session's approvals in: (approval id, message).
    pub async fn approval_messages(
        &self,
        session: &str,
        frontend: &str,
    ) -> Result<Vec<(String, String)>> {
        let rows = sqlx::query(
            "SELECT m.approval_id, m.message_ref FROM approval_messages m \
             JOIN approvals a ON a.id = m.approval_id WHERE a.session_id = $1 AND m.frontend = $2",
        )
        .bind(session)
        .bind(frontend)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("approval_id")?, r.try_get("message_ref")?)))
            .collect()
    }

    /// The approval a front end showed in `message`, if any.
    pub async fn approval_for_message(
        &self,
        frontend: &str,
        message: &str,
    ) -> Result<Option<ApprovalRecord>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {APPROVAL_COLUMNS} FROM approvals WHERE id = \
             (SELECT approval_id FROM approval_messages WHERE frontend = $1 AND message_ref = $2)"
        )))
        .bind(frontend)
        .bind(message)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(approval_from_row).transpose()
    }

    /// Approvals of an instance's sessions by outcome, `waiting` for those without
    /// one (`GET /metrics`).
    pub async fn approval_counts(&self, instance: &str) -> Result<Vec<(String, i64)>> {
        let rows = sqlx::query(
            "SELECT COALESCE(a.outcome, 'waiting') AS outcome, COUNT(*) AS n FROM approvals a \
             JOIN sessions s ON s.id = a.session_id WHERE s.instance = $1 \
             GROUP BY COALESCE(a.outcome, 'waiting')",
        )
        .bind(instance)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("outcome")?, r.try_get("n")?)))
            .collect()
    }

    // --- metrics ----------------------------------------------------------------

    /// Sessions of an instance by state, their turns, and what the gateway counted for
    /// them: what `GET /metrics` reports.
    pub async fn metrics(&self, instance: &str) -> Result<StoreMetrics> {
        let rows = sqlx::query(
            "SELECT state, COUNT(*) AS n, CAST(COALESCE(SUM(turns), 0) AS BIGINT) AS turns \
             FROM sessions WHERE instance = $1 GROUP BY state",
        )
        .bind(instance)
        .fetch_all(&self.pool)
        .await?;
        let mut m = StoreMetrics::default();
        for r in rows {
            let state: String = r.try_get("state")?;
            let n: i64 = r.try_get("n")?;
            m.turns += r.try_get::<i64, _>("turns")?;
            m.sessions.push((state, n));
        }
        let r = sqlx::query(
            "SELECT COUNT(*) AS calls, \
             CAST(COALESCE(SUM(u.input_tokens), 0) AS BIGINT) AS i, \
             CAST(COALESCE(SUM(u.output_tokens), 0) AS BIGINT) AS o, \
             CAST(COALESCE(SUM(u.cache_read_tokens), 0) AS BIGINT) AS cr, \
             CAST(COALESCE(SUM(u.cache_write_tokens), 0) AS BIGINT) AS cw, \
             CAST(COALESCE(SUM(u.cost_usd), 0) AS DOUBLE PRECISION) AS cost \
             FROM api_usage u JOIN sessions s ON s.id = u.session_id WHERE s.instance = $1",
        )
        .bind(instance)
        .fetch_one(&self.pool)
        .await?;
        m.api = api_usage_from_row(&r)?;
        m.approvals = self.approval_counts(instance).await?;
        Ok(m)
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    // --- events -----------------------------------------------------------------

    /// Events of a session with `seq > after`, in order, at most `limit`.
    pub async fn events_after(
        &self,
        session: &str,
        after: i64,
        limit: i64,
    ) -> Result<Vec<SessionEvent>> {
        let rows = sqlx::query(
            "SELECT seq, at, body FROM events WHERE session_id = $1 AND seq > $2 \
             ORDER BY seq LIMIT $3",
        )
        .bind(session)
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let body: String = r.try_get("body")?;
                let body = serde_json::from_str(&body)
                    .map_err(|e| StoreError::Corrupt(format!("event of session {session}: {e}")))?;
                Ok(SessionEvent {
                    session: session.to_string(),
                    seq: r.try_get("seq")?,
                    at_ms: r.try_get("at")?,
                    body,
                })
            })
            .collect()
    }

    // --- prompts ----------------------------------------------------------------

    /// Stores a prompt as pending; it is durable when this returns.
    pub async fn enqueue_prompt(&self, session: &str, body: &str, author: &str) -> Result<i64> {
        let row = sqlx::query(
            "INSERT INTO prompts (session_id, body, author, status, created_at) \
             VALUES ($1, $2, $3, 'pending', $4) RETURNING id",
        )
        .bind(session)
        .bind(body)
        .bind(author)
        .bind(now_ms())
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get(0)?)
    }

    /// The oldest prompt of a session still waiting for its turn.
    pub async fn next_pending_prompt(&self, session: &str) -> Result<Option<PromptRecord>> {
        let row = sqlx::query(
            "SELECT id, session_id, body, author, status FROM prompts \
             WHERE session_id = $1 AND status = 'pending' ORDER BY id LIMIT 1",
        )
        .bind(session)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| -> Result<PromptRecord> {
            Ok(PromptRecord {
                id: r.try_get("id")?,
                session_id: r.try_get("session_id")?,
                body: r.try_get("body")?,
                author: r.try_get("author")?,
                status: r.try_get("status")?,
            })
        })
        .transpose()
    }

    pub async fn pending_prompts(&self, session: &str) -> Result<i64> {
        let row = sqlx::query(
            "SELECT COUNT(*) FROM prompts WHERE session_id = $1 AND status = 'pending'",
        )
        .bind(session)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get(0)?)
    }

    /// Where prompt `id` of `session` stands in the queue (1: next), or None when it
    /// is not waiting any more (taken or cancelled).
    pub async fn queue_place(&self, session: &str, id: i64) -> Result<Option<i64>> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS ahead, \
             COALESCE(SUM(CASE WHEN id = $2 THEN 1 ELSE 0 END), 0) AS this \
             FROM prompts WHERE session_id = $1 AND status = 'pending' AND id <= $2",
        )
        .bind(session)
        .bind(id)
        .fetch_one(&self.pool)
        .await?;
        let this: i64 = row.try_get("this")?;
        let ahead: i64 = row.try_get("ahead")?;
        Ok((this > 0).then_some(ahead))
    }

    pub async fn set_prompt_status(&self, id: i64, status: &str) -> Result<()> {
        sqlx::query("UPDATE prompts SET status = $2, sent_at = $3 WHERE id = $1")
            .bind(id)
            .bind(status)
            .bind(now_ms())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Drops the prompts still waiting (the session ended); returns how many.
    pub async fn cancel_pending_prompts(&self, session: &str) -> Result<u64> {
        let r = sqlx::query(
            "UPDATE prompts SET status = 'cancelled' WHERE session_id = $1 AND status = 'pending'",
        )
        .bind(session)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected())
    }

    // --- bindings ---------------------------------------------------------------

    pub async fn bind_thread(
        &self,
        session: &str,
        frontend: &str,
        thread_ref: &str,
        delivered_seq: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO bindings (session_id, frontend, thread_ref, delivered_seq) \
             VALUES ($1, $2, $3, $4) \
             ON CONFLICT (session_id, frontend) DO UPDATE SET thread_ref = $3",
        )
        .bind(session)
        .bind(frontend)
        .bind(thread_ref)
        .bind(delivered_seq)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn bindings(&self, frontend: &str) -> Result<Vec<Binding>> {
        let rows = sqlx::query(
            "SELECT session_id, frontend, thread_ref, delivered_seq, status_ref FROM bindings \
             WHERE frontend = $1",
        )
        .bind(frontend)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(binding_from_row).collect()
    }

    pub async fn binding(&self, session: &str, frontend: &str) -> Result<Option<Binding>> {
        let row = sqlx::query(
            "SELECT session_id, frontend, thread_ref, delivered_seq, status_ref FROM bindings \
             WHERE session_id = $1 AND frontend = $2",
        )
        .bind(session)
        .bind(frontend)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(binding_from_row).transpose()
    }

    pub async fn session_for_thread(
        &self,
        frontend: &str,
        thread_ref: &str,
    ) -> Result<Option<String>> {
        let row =
            sqlx::query("SELECT session_id FROM bindings WHERE frontend = $1 AND thread_ref = $2")
                .bind(frontend)
                .bind(thread_ref)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?)
    }

    pub async fn set_status_ref(&self, session: &str, frontend: &str, status: &str) -> Result<()> {
        sqlx::query("UPDATE bindings SET status_ref = $3 WHERE session_id = $1 AND frontend = $2")
            .bind(session)
            .bind(frontend)
            .bind(status)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn set_delivered(&self, session: &str, frontend: &str, seq: i64) -> Result<()> {
        sqlx::query(
            "UPDATE bindings SET delivered_seq = $3 WHERE session_id = $1 AND frontend = $2 \
             AND delivered_seq < $3",
        )
        .bind(session)
        .bind(frontend)
        .bind(seq)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

/// Inserts a session's row.
async fn insert_session_row(conn: &mut sqlx::AnyConnection, s: &SessionRecord) -> Result<()> {
    sqlx::query(
        "INSERT INTO sessions (id, instance, agent, protocol, image, model, repo, branch, owner, \
         frontend, room, first_prompt, idle_timeout_ms, state, state_detail, created_at, \
         last_activity_at, cost_usd) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)",
    )
    .bind(&s.id)
    .bind(&s.instance)
    .bind(&s.agent)
    .bind(&s.protocol)
    .bind(&s.image)
    .bind(&s.model)
    .bind(&s.repo)
    .bind(&s.branch)
    .bind(&s.owner)
    .bind(&s.frontend)
    .bind(&s.room)
    .bind(&s.first_prompt)
    .bind(s.idle_timeout_ms)
    .bind(s.state.as_str())
    .bind(&s.state_detail)
    .bind(s.created_at)
    .bind(s.last_activity_at)
    .bind(s.cost_usd)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Appends events to a session's log inside the caller's transaction. The sequence
/// numbers come from the session row, advanced by the same transaction (the row is
/// locked from the `UPDATE` on, on PostgreSQL and SQLite alike), so two writers can
/// never take the same numbers and a rolled-back write leaves no gap.
async fn append_events(
    conn: &mut sqlx::AnyConnection,
    session: &str,
    events: Vec<EventBody>,
) -> Result<Vec<SessionEvent>> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let n = events.len() as i64;
    let row = sqlx::query(
        "UPDATE sessions SET next_seq = next_seq + $2 WHERE id = $1 RETURNING next_seq",
    )
    .bind(session)
    .bind(n)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(|| StoreError::NoSession(session.to_string()))?;
    let end: i64 = row.try_get(0)?;
    let first = end - n;
    let at = now_ms();
    let mut out = Vec::with_capacity(events.len());
    for (i, body) in events.into_iter().enumerate() {
        let seq = first + i as i64;
        let json = serde_json::to_string(&body)
            .map_err(|e| StoreError::Corrupt(format!("cannot encode an event: {e}")))?;
        sqlx::query("INSERT INTO events (session_id, seq, at, body) VALUES ($1, $2, $3, $4)")
            .bind(session)
            .bind(seq)
            .bind(at)
            .bind(json)
            .execute(&mut *conn)
            .await?;
        out.push(SessionEvent {
            session: session.to_string(),
            seq,
            at_ms: at,
            body,
        });
    }
    Ok(out)
}

/// A row of summed API usage (`calls`, `i`, `o`, `cr`, `cw`, `cost`).
const APPROVAL_COLUMNS: &str = "id, session_id, request_id, tool, summary, input, outcome, \
     answered_by, why, created_at, sent_at";

fn approval_from_row(r: &AnyRow) -> Result<ApprovalRecord> {
    let id: String = r.try_get("id")?;
    let input: String = r.try_get("input")?;
    let outcome: Option<String> = r.try_get("outcome")?;
    let answered = match outcome {
        None => None,
        Some(o) => Some(Answered {
            answer: o
                .parse()
                .map_err(|e| StoreError::Corrupt(format!("approval {id}: {e}")))?,
            by: r
                .try_get::<Option<String>, _>("answered_by")?
                .unwrap_or_default(),
            why: r.try_get("why")?,
        }),
    };
    Ok(ApprovalRecord {
        session_id: r.try_get("session_id")?,
        request_id: r.try_get("request_id")?,
        tool: r.try_get("tool")?,
        summary: r.try_get("summary")?,
        input: serde_json::from_str(&input)
            .map_err(|e| StoreError::Corrupt(format!("approval {id}: {e}")))?,
        answered,
        created_at: r.try_get("created_at")?,
        sent: r.try_get::<Option<i64>, _>("sent_at")?.is_some(),
        id,
    })
}

fn api_usage_from_row(r: &AnyRow) -> Result<ApiUsage> {
    Ok(ApiUsage {
        calls: r.try_get("calls")?,
        usage: Usage {
            input_tokens: r.try_get("i")?,
            output_tokens: r.try_get("o")?,
            cache_read_tokens: r.try_get("cr")?,
            cache_write_tokens: r.try_get("cw")?,
        },
        cost_usd: r.try_get("cost")?,
    })
}

fn binding_from_row(r: &AnyRow) -> Result<Binding> {
    Ok(Binding {
        session_id: r.try_get("session_id")?,
        frontend: r.try_get("frontend")?,
        thread_ref: r.try_get("thread_ref")?,
        delivered_seq: r.try_get("delivered_seq")?,
        status_ref: r.try_get("status_ref")?,
    })
}

fn session_from_row(r: &AnyRow) -> Result<SessionRecord> {
    let state: String = r.try_get("state")?;
    Ok(SessionRecord {
        id: r.try_get("id")?,
        instance: r.try_get("instance")?,
        agent: r.try_get("agent")?,
        protocol: r.try_get("protocol")?,
        image: r.try_get("image")?,
        model: r.try_get("model")?,
        repo: r.try_get("repo")?,
        branch: r.try_get("branch")?,
        base_branch: r.try_get("base_branch")?,
        base_commit: r.try_get("base_commit")?,
        pushed_commit: r.try_get("pushed_commit")?,
        pr_url: r.try_get("pr_url")?,
        owner: r.try_get("owner")?,
        frontend: r.try_get("frontend")?,
        room: r.try_get("room")?,
        first_prompt: r.try_get("first_prompt")?,
        idle_timeout_ms: r.try_get("idle_timeout_ms")?,
        state: SessionState::from_str(&state).map_err(StoreError::Corrupt)?,
        state_detail: r.try_get("state_detail")?,
        container_id: r.try_get("container_id")?,
        agent_session_id: r.try_get("agent_session_id")?,
        log_cursor_ns: r.try_get("log_cursor_ns")?,
        log_cursor_count: r.try_get("log_cursor_count")?,
        next_seq: r.try_get("next_seq")?,
        turns: r.try_get("turns")?,
        usage: Usage {
            input_tokens: r.try_get("input_tokens")?,
            output_tokens: r.try_get("output_tokens")?,
            cache_read_tokens: r.try_get("cache_read_tokens")?,
            cache_write_tokens: r.try_get("cache_write_tokens")?,
        },
        cost_usd: r.try_get("cost_usd")?,
        agent_cost_usd: r.try_get("agent_cost_usd")?,
        created_at: r.try_get("created_at")?,
        started_at: r.try_get("started_at")?,
        last_activity_at: r.try_get("last_activity_at")?,
        ended_at: r.try_get("ended_at")?,
    })
}

/// The URL with any password replaced, for messages and logs.
/// The SHA-256 of a gateway token, in hex: what the store keeps of it.
pub fn token_digest(token: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub use crate::config::redact_url;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::AgentEvent;

    /// A store in a new SQLite file (kept while the directory lives) holding one queued
    /// console session, `s1`.
    async fn store_with_a_session() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = Store::connect(&url).await.expect("connect");
        store
            .insert_session(&queued("s1", "i"))
            .await
            .expect("session");
        (dir, store)
    }

    /// A queued console session of alice's, `id`, of `instance`.
    fn queued(id: &str, instance: &str) -> SessionRecord {
        SessionRecord::new_queued(
            id.into(),
            instance.into(),
            "scripted".into(),
            "claude".into(),
            "img".into(),
            "alice".into(),
            "console".into(),
            "console".into(),
            "p".into(),
        )
    }

    #[test]
    fn passwords_are_redacted_from_urls() {
        assert_eq!(
            redact_url("postgres://fm:secret@db:5432/fm"),
            "postgres://fm:<redacted>@db:5432/fm"
        );
        assert_eq!(redact_url("sqlite://x.db"), "sqlite://x.db");
        assert_eq!(redact_url("postgres://fm@db/fm"), "postgres://fm@db/fm");
    }

    #[tokio::test]
    async fn sessions_events_and_prompts_round_trip_on_sqlite() {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = Store::connect(&url).await.expect("connect");
        // Migrating twice is harmless.
        store.migrate().await.expect("migrate again");

        let mut s = queued("abc", "default");
        store.insert_session(&s).await.expect("insert");
        s.state = SessionState::Running;
        s.usage.input_tokens = 7;
        s.cost_usd = 0.25;
        let evs = store
            .commit(
                &mut s,
                vec![
                    EventBody::Agent {
                        event: AgentEvent::Text { text: "hi".into() },
                    },
                    EventBody::Notice { text: "n".into() },
                ],
            )
            .await
            .expect("commit");
        assert_eq!(evs.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2]);
        let back = store.session("abc").await.expect("get").expect("exists");
        assert_eq!(back.state, SessionState::Running);
        assert_eq!(back.next_seq, 3);
        assert_eq!(back.usage.input_tokens, 7);
        assert_eq!(back.cost_usd, 0.25);
        let after1 = store.events_after("abc", 1, 10).await.expect("events");
        assert_eq!(after1.len(), 1);
        assert_eq!(after1[0].body, EventBody::Notice { text: "n".into() });

        let p1 = store
            .enqueue_prompt("abc", "one", "alice")
            .await
            .expect("p1");
        let p2 = store
            .enqueue_prompt("abc", "two", "alice")
            .await
            .expect("p2");
        assert!(p2 > p1);
        let next = store.next_pending_prompt("abc").await.expect("next");
        assert_eq!(next.map(|p| p.body), Some("one".to_string()));
        store.set_prompt_status(p1, "sent").await.expect("status");
        assert_eq!(store.pending_prompts("abc").await.expect("count"), 1);
        assert_eq!(store.cancel_pending_prompts("abc").await.expect("c"), 1);

        store
            .bind_thread("abc", "console", "t1", 0)
            .await
            .expect("bind");
        store
            .set_delivered("abc", "console", 2)
            .await
            .expect("deliv");
        store
            .set_delivered("abc", "console", 1)
            .await
            .expect("never back");
        let b = store
            .binding("abc", "console")
            .await
            .expect("b")
            .expect("some");
        assert_eq!(b.delivered_seq, 2);
        assert_eq!(
            store.session_for_thread("console", "t1").await.expect("t"),
            Some("abc".to_string())
        );
        store.close().await;
    }

    #[tokio::test]
    async fn gateway_tokens_and_api_usage_on_sqlite() {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}", dir.path().join("g.db").display());
        let store = Store::connect(&url).await.expect("connect");
        store
            .insert_gateway_token("t1", "s1", "alice")
            .await
            .expect("token");
        store
            .insert_gateway_token("t2", "s2", "alice")
            .await
            .expect("token");
        // Only digests are stored.
        let kept: Vec<String> = sqlx::query_scalar("SELECT token FROM gateway_tokens")
            .fetch_all(&store.pool)
            .await
            .expect("select");
        assert_eq!(kept, [token_digest("t1"), token_digest("t2")]);
        assert_eq!(token_digest("t1").len(), 64);
        assert_eq!(
            store.gateway_token("t1").await.expect("get"),
            Some(TokenRecord {
                session_id: "s1".into(),
                owner: "alice".into(),
                revoked: false
            })
        );
        assert_eq!(store.gateway_token("nope").await.expect("get"), None);
        store.revoke_gateway_tokens("s1").await.expect("revoke");
        assert!(
            store
                .gateway_token("t1")
                .await
                .expect("get")
                .expect("row")
                .revoked
        );
        assert!(
            !store
                .gateway_token("t2")
                .await
                .expect("get")
                .expect("row")
                .revoked
        );

        let u = Usage {
            input_tokens: 10,
            output_tokens: 5,
            cache_read_tokens: 100,
            cache_write_tokens: 1,
        };
        assert_eq!(
            store.session_api_usage("s1").await.expect("sum"),
            ApiUsage::default()
        );
        store
            .record_api_usage("s1", "alice", "anthropic", Some("m"), &u, 0.25)
            .await
            .expect("rec");
        store
            .record_api_usage("s1", "alice", "anthropic", None, &u, 0.5)
            .await
            .expect("rec");
        store
            .record_api_usage("s2", "alice", "openai", None, &u, 1.0)
            .await
            .expect("rec");
        let s1 = store.session_api_usage("s1").await.expect("sum");
        assert_eq!(s1.calls, 2);
        assert_eq!(s1.usage.input_tokens, 20);
        assert_eq!(s1.usage.cache_read_tokens, 200);
        assert!((s1.cost_usd - 0.75).abs() < 1e-9);
        let alice = store.user_api_usage("alice", 0).await.expect("sum");
        assert!((alice.cost_usd - 1.75).abs() < 1e-9);
        assert_eq!(
            store
                .user_api_usage("alice", now_ms() + 60_000)
                .await
                .expect("sum")
                .calls,
            0
        );
        store.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn an_approval_is_stored_once_and_a_burst_of_answers_has_one_winner() {
        let (_dir, store) = store_with_a_session().await;
        let asked = ApprovalRecord {
            id: "a1".into(),
            session_id: "s1".into(),
            request_id: "req-1".into(),
            tool: "Bash".into(),
            summary: "touch x".into(),
            input: serde_json::json!({"command": "touch x"}),
            answered: None,
            created_at: 1000,
            sent: false,
        };
        // The same request read again (after a restart) is the same approval.
        let first = store.insert_approval(&asked).await.expect("insert");
        let again = store
            .insert_approval(&ApprovalRecord {
                id: "a2".into(),
                ..asked.clone()
            })
            .await
            .expect("insert again");
        assert_eq!(first, asked);
        assert_eq!(again.id, "a1");
        assert_eq!(store.approvals("s1").await.expect("list").len(), 1);
        let waiting = store.waiting_approval("s1").await.expect("waiting");
        assert_eq!(waiting.map(|a| a.id), Some("a1".into()));
        // Twenty people answer at once: one answer counts.
        let tasks: Vec<_> = (0..20)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    let answer = Answered {
                        answer: if i % 2 == 0 {
                            crate::approval::Answer::Approve
                        } else {
                            crate::approval::Answer::Deny
                        },
                        by: format!("p{i}"),
                        why: None,
                    };
                    store.answer_approval("a1", &answer).await.expect("answer")
                })
            })
            .collect();
        let mut won = 0;
        for t in tasks {
            won += usize::from(t.await.expect("task"));
        }
        assert_eq!(won, 1);
        assert_eq!(store.waiting_approval("s1").await.expect("waiting"), None);
        let a = store.approval("a1").await.expect("read").expect("there");
        assert!(a.answered.is_some() && !a.sent);
        store
            .set_approval_message("a1", "matrix", "$ev")
            .await
            .expect("place");
        store
            .set_approval_message("a1", "matrix", "$ev2")
            .await
            .expect("place again");
        assert_eq!(
            store
                .approval_for_message("matrix", "$ev2")
                .await
                .expect("find")
                .map(|a| a.id),
            Some("a1".into())
        );
        assert_eq!(
            store.approval_messages("s1", "matrix").await.expect("list"),
            [("a1".to_string(), "$ev2".to_string())]
        );
        store.mark_approval_sent("a1").await.expect("sent");
        assert!(
            store
                .approval("a1")
                .await
                .expect("read")
                .expect("there")
                .sent
        );
    }

    /// A person who answers the moment an approval is stored (the console reads ahead)
    /// must not make its question come back already answered: the thread shows the
    /// question, then the answer (a CI run once showed the answer twice). A trigger
    /// answers each approval inside its own insert: the earliest answer there can be.
    #[tokio::test]
    async fn a_new_approval_comes_back_waiting_however_fast_it_is_answered() {
        let (_dir, store) = store_with_a_session().await;
        sqlx::raw_sql(
            "CREATE TRIGGER answer_at_once AFTER INSERT ON approvals BEGIN \
             UPDATE approvals SET outcome = 'approved', answered_by = 'fast', answered_at = 1 \
             WHERE id = NEW.id; END",
        )
        .execute(&store.pool)
        .await
        .expect("trigger");
        let asked = ApprovalRecord {
            id: "a1".into(),
            session_id: "s1".into(),
            request_id: "req-1".into(),
            tool: "Bash".into(),
            summary: String::new(),
            input: serde_json::json!({}),
            answered: None,
            created_at: 1000,
            sent: false,
        };
        assert_eq!(store.insert_approval(&asked).await.expect("insert"), asked);
        // Read again (a restart), it is the approval as it stands: answered.
        let again = store.insert_approval(&asked).await.expect("insert again");
        assert_eq!(again.answered.map(|a| a.by), Some("fast".to_string()));
    }

    #[tokio::test]
    async fn prune_finds_ended_sessions_until_removed_and_again_after_a_new_end() {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = Store::connect(&url).await.expect("connect");
        let session = queued;
        let end = |s: &mut SessionRecord, state: SessionState, at: i64| {
            s.state = state;
            s.ended_at = Some(at);
            s.agent_session_id = Some("conv".into());
        };
        let mut old = session("old", "i");
        let mut new = session("new", "i");
        let mut live = session("live", "i");
        let mut other = session("other", "j");
        for s in [&old, &new, &live, &other] {
            store.insert_session(s).await.expect("insert");
        }
        end(&mut old, SessionState::Failed, 1_000);
        end(&mut new, SessionState::Stopped, 5_000);
        end(&mut other, SessionState::Stopped, 1_000);
        live.state = SessionState::Waiting;
        for s in [&mut old, &mut new, &mut live, &mut other] {
            store.commit(s, Vec::new()).await.expect("commit");
        }
        let ids = |v: Vec<SessionRecord>| v.into_iter().map(|s| s.id).collect::<Vec<_>>();
        let prunable = |before| store.prunable_sessions("i", before);
        assert_eq!(ids(prunable(2_000).await.expect("list")), vec!["old"]);
        assert_eq!(
            ids(prunable(9_000).await.expect("list")),
            vec!["old", "new"]
        );

        assert_eq!(store.removed_at("old").await.expect("get"), None);
        assert!(store.mark_removed("old", 6_000).await.expect("mark"));
        assert!(!store.mark_removed("live", 6_000).await.expect("mark"));
        assert_eq!(store.removed_at("old").await.expect("get"), Some(6_000));
        assert_eq!(store.removed_at("live").await.expect("get"), None);
        let back = store.session("old").await.expect("get").expect("exists");
        assert_eq!(
            back.agent_session_id, None,
            "the conversation was in the volume"
        );
        assert_eq!(ids(prunable(9_000).await.expect("list")), vec!["new"]);

        // Resumed and ended again: it has a container again, until the next removal.
        let mut old = back;
        end(&mut old, SessionState::Stopped, 7_000);
        store.commit(&mut old, Vec::new()).await.expect("commit");
        assert_eq!(store.removed_at("old").await.expect("get"), None);
        assert_eq!(
            ids(prunable(9_000).await.expect("list")),
            vec!["new", "old"]
        );
        store.close().await;
    }
}
