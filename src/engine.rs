//! The session engine: sessions, their life cycle, the queue, the timeouts. It knows no
//! chat platform and does no Docker I/O of its own (the runtime does); front ends call
//! its methods and subscribe to its events.
//!
//! One task per live session owns that session's container I/O and is the only writer of
//! its event log. Everything a person sends is stored before it is acknowledged; the task
//! picks stored prompts up in order. Output is read from the container's log with a
//! stored cursor, so a restarted engine goes on from the exact line where it stopped.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use dashmap::DashMap;
use tokio::sync::{Mutex, broadcast, mpsc};
use tracing::{info, warn};

use crate::approval::{Answer, Answered};
use crate::config::{AgentConfig, Config};
use crate::event::{EventBody, SessionEvent, SessionState};
use crate::files;
use crate::gateway::{Gateway, GatewayReport};
use crate::runtime::{RemovedObjects, Runtime, RuntimeError, container_name};
use crate::store::{ApprovalRecord, SessionRecord, Store, StoreError, now_ms};

mod repos;
mod task;

use task::SessionTask;

/// How long `stop` lets the agent end before Docker kills it.
const STOP_GRACE: Duration = Duration::from_secs(3);
/// How long `stop` waits for the session's end to be recorded.
const STOP_WAIT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(
        "unknown agent `{agent}`; the agents are: {known}. Use --agent with one of them, or add [agents.{agent}] to the config"
    )]
    UnknownAgent { agent: String, known: String },
    #[error("no session {0}; `list` shows the sessions here")]
    NoSession(String),
    #[error("session {session} is {state}; {hint}")]
    WrongState {
        session: String,
        state: SessionState,
        hint: &'static str,
    },
    #[error(
        "session {session} did not stop within {}; `firstmate sessions show {session}` shows its state, `docker stop firstmate-{session}` stops its container",
        humantime::format_duration(*waited)
    )]
    StopTimeout { session: String, waited: Duration },
    #[error("{0} is not available yet in this version of firstmate")]
    NotBuilt(&'static str),
    #[error(
        "session {session} is {state}: only an ended session's container and volumes can be removed; stop it first with `firstmate sessions stop {session}`"
    )]
    StillLive {
        session: String,
        state: SessionState,
    },
    #[error(
        "{path}: no such file or folder in the workspace of session {session}; `run ls` in a prompt shows what is there"
    )]
    NoFile { session: String, path: String },
    #[error(
        "{path} is outside /workspace (it leads to {resolved}); only the workspace's files can be taken out"
    )]
    OutsideWorkspace { path: String, resolved: String },
    #[error("{what} is {size}, more than {limit}{hint}")]
    TooLarge {
        what: String,
        size: String,
        limit: String,
        hint: &'static str,
    },
    #[error("nothing in session {0} is waiting for an approval")]
    NoApproval(String),
    #[error("that approval was answered already ({0})")]
    Answered(String),
    #[error("{0}")]
    Other(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Gateway(#[from] crate::gateway::GatewayError),
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;

/// What a front end asks for when a person types `new`.
#[derive(Debug, Clone, Default)]
pub struct NewSession {
    pub agent: Option<String>,
    pub model: Option<String>,
    pub image: Option<String>,
    pub repo: Option<String>,
    pub branch: Option<String>,
    pub idle_timeout: Option<Duration>,
    pub prompt: String,
    /// Who asked (a chat user id).
    pub owner: String,
    /// Which front end (`console`, `matrix`, `discord`) and where (room / channel id).
    pub frontend: String,
    pub room: String,
    /// The session id, when the front end chose it beforehand ([`Engine::new_id`]), for
    /// example to name the thread before the session exists.
    pub id: Option<String>,
    /// The thread (in `frontend`) that shows the session. Stored in the same transaction
    /// as the session, so a session never exists without its thread; `None` when the
    /// caller binds none (tests and benchmarks drive the engine directly).
    pub thread: Option<String>,
}

enum Msg {
    /// Prompt `id` was stored: look at the queue.
    Prompt {
        id: i64,
    },
    Interrupt,
    Stop {
        reason: String,
    },
    /// Say this in the session's thread (from the gateway, a repository command);
    /// `done` is told once it is stored.
    Notice {
        text: String,
        done: Option<tokio::sync::oneshot::Sender<()>>,
    },
    /// An approval was answered: send the answer to the agent.
    Answered,
}

struct Inner {
    store: Store,
    runtime: Arc<dyn Runtime>,
    config: Arc<Config>,
    live: DashMap<String, mpsc::UnboundedSender<Msg>>,
    events: broadcast::Sender<SessionEvent>,
    schedule: Mutex<()>,
    /// The model gateway, when `[gateway]` is configured: workers get a session token
    /// and its address instead of a credential.
    gateway: Option<Gateway>,
    /// Events stored and published since this engine started.
    published: AtomicU64,
    /// Sessions re-attached to a container that is no longer running: their task is
    /// taking the rest of its log and recording the end.
    settling: DashMap<String, ()>,
    /// One repository command (`push`, `pr`) at a time per session: a burst of `pr`
    /// opens one pull request, and the rest are given its link.
    repo_locks: DashMap<String, Arc<Mutex<()>>>,
}

/// The engine. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

/// A new session id: ten hex digits of a random UUID.
pub fn new_session_id() -> String {
    let u = uuid::Uuid::new_v4().simple().to_string();
    u[..10].to_string()
}

impl Engine {
    /// What a service does on its way out: the gateway relay goes (the sessions'
    /// containers stay and are picked up on the next start).
    pub async fn shutdown(&self) {
        if let Err(e) = self.inner.runtime.remove_relay().await {
            warn!("{e}");
        }
    }

    pub fn new(store: Store, runtime: impl Runtime, config: Arc<Config>) -> Engine {
        Engine::with_gateway(store, runtime, config, None)
    }

    /// An engine whose workers reach the model APIs through `gateway`.
    pub fn with_gateway(
        store: Store,
        runtime: impl Runtime,
        config: Arc<Config>,
        gateway: Option<Gateway>,
    ) -> Engine {
        let (events, _) = broadcast::channel(4096);
        Engine {
            inner: Arc::new(Inner {
                store,
                runtime: Arc::new(runtime),
                config,
                live: DashMap::new(),
                events,
                schedule: Mutex::new(()),
                gateway,
                published: AtomicU64::new(0),
                settling: DashMap::new(),
                repo_locks: DashMap::new(),
            }),
        }
    }

    /// Acts on what the gateway reports: stops the sessions over their spending limit,
    /// and says its notices (egress refusals) in their sessions' threads.
    pub fn enforce_limits(&self, mut reports: mpsc::UnboundedReceiver<GatewayReport>) {
        let engine = self.clone();
        tokio::spawn(async move {
            while let Some(r) = reports.recv().await {
                let l = match r {
                    GatewayReport::Limit(l) => l,
                    GatewayReport::Pushed {
                        session,
                        branch,
                        commit,
                    } => {
                        // The gateway recorded it (`pushed_commit`) before the push's
                        // answer ended.
                        info!(session = %session, %branch, %commit, "the session's branch was pushed");
                        continue;
                    }
                    GatewayReport::Notice { session, text } => {
                        // The session's task writes its events; a session without one
                        // here has no live token of this gateway's.
                        if !engine.send(&session, Msg::Notice { text, done: None }) {
                            info!(session = %session, "no task here for the gateway's notice");
                        }
                        continue;
                    }
                };
                match engine.session(&l.session).await {
                    Ok(s) if s.state.is_ended() => continue,
                    Err(_) => continue,
                    Ok(_) => {}
                }
                warn!(session = %l.session, reason = %l.reason, "stopping a session over its spending limit");
                if let Err(e) = engine.stop_with_reason(&l.session, l.reason).await {
                    warn!(session = %l.session, error = %e, "cannot stop a session over its limit");
                }
            }
        });
    }

    /// Events stored and published since this engine started.
    pub fn events_published(&self) -> u64 {
        self.inner.published.load(Ordering::Relaxed)
    }

    /// The model gateway, when `[gateway]` is configured.
    pub fn gateway(&self) -> Option<&Gateway> {
        self.inner.gateway.as_ref()
    }

    /// Sessions whose task runs in this engine.
    pub fn live_tasks(&self) -> usize {
        self.inner.live.len()
    }

    /// Whether the database and Docker answer; what is wrong when not.
    pub async fn health(&self) -> Result<(), String> {
        let mut wrong = Vec::new();
        if let Err(e) = self.inner.store.ping().await {
            wrong.push(format!("database: {e}"));
        }
        if let Err(e) = self.inner.runtime.ping().await {
            wrong.push(format!("docker: {e}"));
        }
        if wrong.is_empty() {
            Ok(())
        } else {
            Err(wrong.join("; "))
        }
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    fn instance(&self) -> &str {
        &self.inner.config.docker.instance
    }

    /// Whether a session's task is still taking the output of a container that ended
    /// while no engine ran: its state will change without anyone asking. A front end
    /// about to exit waits for it.
    pub fn is_settling(&self, id: &str) -> bool {
        self.inner.settling.contains_key(id)
    }

    /// Every event of every session, as it is stored. A receiver that lags should read
    /// the missed events from the store (`events_after`).
    pub fn subscribe(&self) -> broadcast::Receiver<SessionEvent> {
        self.inner.events.subscribe()
    }

    /// Re-attaches to the sessions that were live when the engine last ran, and starts
    /// queued ones that fit.
    pub async fn recover(&self) -> Result<()> {
        let live = self
            .inner
            .store
            .sessions(
                self.instance(),
                &[
                    SessionState::Starting,
                    SessionState::Running,
                    SessionState::Waiting,
                ],
            )
            .await?;
        for s in live {
            info!(session = %s.id, state = %s.state, "re-attaching");
            // Settling until its task has seen whether the container still runs (and,
            // when it does not, until its end is recorded).
            self.inner.settling.insert(s.id.clone(), ());
            self.spawn_task(s);
        }
        self.schedule().await
    }

    /// Checks what `new` asks for (the agent exists, the image is there) without
    /// creating anything: a front end that must open a thread first asks this before.
    pub async fn check_new(&self, req: &NewSession) -> Result<()> {
        self.resolve(req).await.map(|_| ())
    }

    /// The agent and image a `new` request names, checked.
    async fn resolve(
        &self,
        req: &NewSession,
    ) -> Result<(String, &AgentConfig, String, Option<crate::repo::Target>)> {
        let cfg = &self.inner.config;
        let agent_name = req
            .agent
            .clone()
            .unwrap_or_else(|| cfg.sessions.default_agent.clone());
        let agent = cfg
            .agents
            .get(&agent_name)
            .ok_or_else(|| EngineError::UnknownAgent {
                agent: agent_name.clone(),
                known: cfg.agents.keys().cloned().collect::<Vec<_>>().join(", "),
            })?;
        let repo = match &req.repo {
            Some(spec) => Some(crate::repo::resolve(cfg, spec).map_err(EngineError::Other)?),
            None => None,
        };
        if let Some(branch) = &req.branch {
            if repo.is_none() {
                return Err(EngineError::Other(
                    "--branch needs --repo: name the repository too, like `new --repo demo --branch fix-login PROMPT`".into(),
                ));
            }
            crate::repo::check_branch(branch)
                .map_err(|e| EngineError::Other(format!("--branch {e}")))?;
        }
        if repo.is_some() && self.inner.gateway.is_none() {
            return Err(EngineError::Other(
                "--repo needs the model gateway, through which workers reach repositories: add [gateway] to the config (see bot.example.toml)".into(),
            ));
        }
        let image = req.image.clone().unwrap_or_else(|| agent.image.clone());
        // Fail now, with a clear message, rather than in the session task.
        self.inner.runtime.image_home(&image).await?;
        Ok((agent_name, agent, image, repo))
    }

    /// Stores a new session with its first prompt (and its thread, `req.thread`), and
    /// starts it when a slot is free.
    pub async fn new_session(&self, req: NewSession) -> Result<SessionRecord> {
        let (agent_name, agent, image, repo) = self.resolve(&req).await?;
        let mut s = SessionRecord::new_queued(
            req.id.clone().unwrap_or_else(new_session_id),
            self.instance().to_string(),
            agent_name,
            agent.protocol.as_str().to_string(),
            image,
            req.owner.clone(),
            req.frontend.clone(),
            req.room.clone(),
            req.prompt.clone(),
        );
        s.model = req.model.clone().or_else(|| agent.model.clone());
        s.idle_timeout_ms = req.idle_timeout.map(|d| d.as_millis() as i64);
        s.repo = repo.map(|r| r.label);
        s.branch = req.branch.clone();
        // The row, the first prompt, the thread and the first events: all or nothing.
        let mut notice = format!("session {}: agent {}, image {}", s.id, s.agent, s.image);
        if let Some(r) = &s.repo {
            notice.push_str(&format!(", repository {r}"));
        }
        let evs = self
            .inner
            .store
            .create_session(
                &mut s,
                &req.owner,
                req.thread.as_deref(),
                vec![
                    EventBody::Notice { text: notice },
                    EventBody::State {
                        state: SessionState::Queued,
                        detail: None,
                    },
                ],
            )
            .await?;
        self.publish(evs);
        info!(session = %s.id, agent = %s.agent, owner = %s.owner, frontend = %s.frontend, "session created");
        match self.after_create(&s.id).await {
            Ok(s) => Ok(s),
            Err(e) => {
                // Created but not started: stop it, so nothing is left half-made.
                warn!(session = %s.id, error = %e, "cannot schedule a new session; stopping it");
                let reason = format!("it could not be scheduled: {e}");
                if let Err(e2) = self.stop_with_reason(&s.id, reason).await {
                    warn!(session = %s.id, error = %e2, "cannot stop a session that failed to start");
                }
                Err(EngineError::Other(format!(
                    "session {} was created but could not be started ({e}); it is stopped, try `new` again",
                    s.id
                )))
            }
        }
    }

    /// Starts a just created session when a slot is free, else says why it waits.
    async fn after_create(&self, id: &str) -> Result<SessionRecord> {
        self.schedule().await?;
        // Under the scheduler's lock: only the scheduler moves a session out of `queued`.
        let _guard = self.inner.schedule.lock().await;
        let s = self.session(id).await?;
        if s.state == SessionState::Queued {
            // Say why it waits; it starts when a session ends.
            let limits = &self.inner.config.sessions;
            let detail = format!(
                "waiting for a free slot (sessions.max_running = {}, sessions.max_running_per_user = {}); it starts when another session ends",
                limits.max_running, limits.max_running_per_user
            );
            self.commit_state(id, SessionState::Queued, Some(detail), false)
                .await?;
            return self.session(id).await;
        }
        Ok(s)
    }

    /// A session as `status` and `sessions show` report it: when the gateway metered
    /// its model calls, the tokens and cost are the gateway's count, not the agent's.
    pub async fn session_report(&self, id: &str) -> Result<SessionRecord> {
        self.inner
            .store
            .session_report(id)
            .await?
            .ok_or_else(|| EngineError::NoSession(id.to_string()))
    }

    pub async fn session(&self, id: &str) -> Result<SessionRecord> {
        self.inner
            .store
            .session(id)
            .await?
            .ok_or_else(|| EngineError::NoSession(id.to_string()))
    }

    /// The sessions started in `room` of `frontend` on this instance, oldest first.
    pub async fn sessions_in(&self, frontend: &str, room: &str) -> Result<Vec<SessionRecord>> {
        let instance = &self.inner.config.docker.instance;
        Ok(self
            .inner
            .store
            .sessions_in_room(instance, frontend, room)
            .await?)
    }

    /// The session `thread` of `frontend` shows, if any.
    pub async fn session_for_thread(&self, frontend: &str, thread: &str) -> Result<Option<String>> {
        Ok(self
            .inner
            .store
            .session_for_thread(frontend, thread)
            .await?)
    }

    /// Shows session `s` in `thread` of `frontend` from its next event on, unless a
    /// thread of that front end shows it already.
    pub async fn follow(&self, s: &SessionRecord, frontend: &str, thread: &str) -> Result<()> {
        let store = &self.inner.store;
        if store.binding(&s.id, frontend).await?.is_none() {
            store
                .bind_thread(&s.id, frontend, thread, s.next_seq - 1)
                .await?;
        }
        Ok(())
    }

    /// Stores a prompt for a session; it runs when the session's current turn ends.
    pub async fn prompt(&self, id: &str, text: &str, author: &str) -> Result<()> {
        let s = self.session(id).await?;
        if s.state.is_ended() {
            return Err(EngineError::WrongState {
                session: s.id,
                state: s.state,
                hint: "`resume` starts it again",
            });
        }
        let prompt = self.inner.store.enqueue_prompt(id, text, author).await?;
        self.send(id, Msg::Prompt { id: prompt });
        Ok(())
    }

    /// Ends the current turn; the session stays usable.
    pub async fn interrupt(&self, id: &str) -> Result<()> {
        let s = self.session(id).await?;
        if !self.send(id, Msg::Interrupt) {
            return Err(EngineError::WrongState {
                session: s.id,
                state: s.state,
                hint: "there is no turn to interrupt",
            });
        }
        Ok(())
    }

    /// Answers a session's approval: `approval` names it (a button's), or the oldest
    /// that waits. The first answer counts; a later one is told who answered. The
    /// answer reaches the agent through the session's task (or when its task starts
    /// again after a restart).
    pub async fn answer(
        &self,
        session: &str,
        approval: Option<&str>,
        answer: Answer,
        by: &str,
    ) -> Result<ApprovalRecord> {
        let store = &self.inner.store;
        let a = match approval {
            Some(id) => store
                .approval(id)
                .await?
                .filter(|a| a.session_id == session),
            None => store.waiting_approval(session).await?,
        }
        .ok_or_else(|| EngineError::NoApproval(session.to_string()))?;
        if let Some(done) = &a.answered {
            return Err(EngineError::Answered(done.line()));
        }
        let answered = Answered {
            answer,
            by: by.to_string(),
            why: None,
        };
        if !store.answer_approval(&a.id, &answered).await? {
            let now = store.approval(&a.id).await?;
            let line = now
                .and_then(|a| a.answered)
                .map_or_else(|| "just now".to_string(), |d| d.line());
            return Err(EngineError::Answered(line));
        }
        self.send(session, Msg::Answered);
        Ok(ApprovalRecord {
            answered: Some(answered),
            ..a
        })
    }

    /// The container of a session whose container runs (files move only then).
    /// A session still starting (or queued) is waited for, up to a minute.
    async fn running_container(&self, id: &str) -> Result<String> {
        let mut events = self.subscribe();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let mut s = self.session(id).await?;
        while matches!(s.state, SessionState::Queued | SessionState::Starting)
            && tokio::time::Instant::now() < deadline
        {
            // A doorbell: any event may be this session's start; re-read the row.
            let _ = tokio::time::timeout_at(
                deadline.min(tokio::time::Instant::now() + Duration::from_millis(500)),
                events.recv(),
            )
            .await;
            s = self.session(id).await?;
        }
        if !matches!(s.state, SessionState::Running | SessionState::Waiting) {
            return Err(EngineError::WrongState {
                session: s.id,
                state: s.state,
                hint: "files move only while its container runs; `resume` it first (or wait until it has started)",
            });
        }
        Ok(container_name(&s.id))
    }

    /// Copies `reader` into the session's `/workspace/inbox/` under a safe form of
    /// `name` (numbered when taken) and returns the path the agent sees. More than
    /// `sessions.max_attachment_size` is refused and nothing is kept; the bytes stream
    /// through, never held whole.
    pub async fn put_file<R>(&self, id: &str, name: &str, reader: R) -> Result<String>
    where
        R: tokio::io::AsyncRead + Unpin + Send,
    {
        use tokio::io::AsyncReadExt;
        let container = self.running_container(id).await?;
        let limit = self.inner.config.sessions.max_attachment_bytes.max(0) as u64;
        let mut printed = Vec::new();
        let end = self
            .inner
            .runtime
            .exec_io(
                id,
                &container,
                files::put_command(&files::safe_name(name), limit),
                // One byte over the limit is enough to tell it was too large.
                Some(&mut reader.take(limit + 1)),
                &mut |chunk: &[u8]| {
                    printed.extend_from_slice(chunk);
                    Ok(())
                },
            )
            .await?;
        match files::parse_put(&String::from_utf8_lossy(&printed)) {
            Some(files::Put::Stored(n)) if end.code == Some(0) => {
                Ok(format!("{}/{n}", files::INBOX))
            }
            Some(files::Put::TooLarge) => Err(EngineError::TooLarge {
                what: name.to_string(),
                size: format!("over {}", files::human_size(limit)),
                limit: format!(
                    "sessions.max_attachment_size ({})",
                    files::human_size(limit)
                ),
                hint: "; send a smaller file, or split it",
            }),
            _ => Err(EngineError::Other(format!(
                "cannot store {name} in the workspace of session {id}: {}",
                first_line(&end.stderr, "the copy failed")
            ))),
        }
    }

    /// Takes a file (or a folder, as a gzipped tar) out of the session's workspace:
    /// its content goes to `out` as it comes. More than `limit` bytes is refused
    /// (before anything is read when the size is known up front). Paths are resolved
    /// inside the container, symlinks included; anything that leads out of
    /// `/workspace` is refused. Returns the name to send it under and its size.
    pub async fn get_file(
        &self,
        id: &str,
        path: &str,
        limit: u64,
        out: &mut (dyn FnMut(&[u8]) -> std::io::Result<()> + Send),
    ) -> Result<(String, u64)> {
        let container = self.running_container(id).await?;
        let mut head: Vec<u8> = Vec::new();
        let mut header: Option<files::Header> = None;
        let mut sent = 0u64;
        let mut over = false;
        let result = self
            .inner
            .runtime
            .exec_io(
                id,
                &container,
                files::get_command(path),
                None,
                &mut |mut chunk: &[u8]| {
                    if header.is_none() {
                        match chunk.iter().position(|&b| b == b'\n') {
                            Some(i) => {
                                head.extend_from_slice(&chunk[..i]);
                                chunk = &chunk[i + 1..];
                                let h = files::parse_header(&String::from_utf8_lossy(&head));
                                if let Some(files::Header::File(size)) = h
                                    && size > limit
                                {
                                    over = true;
                                }
                                header = Some(h.unwrap_or(files::Header::Special));
                                if over {
                                    return Err(std::io::Error::other("over the limit"));
                                }
                            }
                            None if head.len() < 4096 => {
                                head.extend_from_slice(chunk);
                                return Ok(());
                            }
                            None => return Err(std::io::Error::other("no header")),
                        }
                    }
                    sent += chunk.len() as u64;
                    if sent > limit {
                        over = true;
                        return Err(std::io::Error::other("over the limit"));
                    }
                    if chunk.is_empty() { Ok(()) } else { out(chunk) }
                },
            )
            .await;
        let dir = matches!(header, Some(files::Header::Dir(_)));
        if over {
            let size = match header {
                Some(files::Header::File(n)) => files::human_size(n),
                Some(files::Header::Dir(n)) => format!("{} before packing", files::human_size(n)),
                _ => format!("over {}", files::human_size(limit)),
            };
            return Err(EngineError::TooLarge {
                what: path.to_string(),
                size,
                limit: format!("what can be sent here ({})", files::human_size(limit)),
                hint: "; `diff` gives the session's changes, or get a smaller file or folder",
            });
        }
        let end = result?;
        match header {
            Some(files::Header::File(_)) | Some(files::Header::Dir(_)) if end.code == Some(0) => {
                Ok((files::out_name(path, dir), sent))
            }
            Some(files::Header::Missing) => Err(EngineError::NoFile {
                session: id.to_string(),
                path: path.to_string(),
            }),
            Some(files::Header::Outside(resolved)) => Err(EngineError::OutsideWorkspace {
                path: path.to_string(),
                resolved,
            }),
            Some(files::Header::Special) => Err(EngineError::Other(format!(
                "{path} is neither a file nor a folder (a device, socket or pipe); `get` takes files and folders"
            ))),
            _ => Err(EngineError::Other(format!(
                "cannot take {path} out of the workspace of session {id}: {}",
                first_line(&end.stderr, "the copy failed")
            ))),
        }
    }

    /// Stops a session's container.
    pub async fn stop(&self, id: &str, by: &str) -> Result<()> {
        self.stop_with_reason(id, format!("stopped by {by}")).await
    }

    /// Stops a session's container; `reason` is what the thread and `status` say.
    pub async fn stop_with_reason(&self, id: &str, reason: String) -> Result<()> {
        let mut events = self.subscribe();
        // Under the scheduler's lock: only the scheduler moves a session out of `queued`
        // and registers its task.
        let guard = self.inner.schedule.lock().await;
        let s = self.session(id).await?;
        if self.send(
            id,
            Msg::Stop {
                reason: reason.clone(),
            },
        ) {
            drop(guard);
            self.wait_ended(id, &mut events, STOP_WAIT).await?;
            // The slot is free now: a queued session starts before `stop` returns.
            return self.schedule().await;
        }
        match s.state {
            SessionState::Queued => {
                self.record_stopped(&s, reason).await?;
                drop(guard);
                Ok(())
            }
            st if st.is_ended() => Err(EngineError::WrongState {
                session: s.id,
                state: st,
                hint: "it is not running",
            }),
            // Live in the database but no task here: another engine runs it. Stop the
            // container; that engine records the end, or (when none runs) we do.
            _ => {
                drop(guard);
                self.inner
                    .runtime
                    .stop(id, &container_name(id), STOP_GRACE)
                    .await?;
                let waited = self
                    .wait_ended(id, &mut events, Duration::from_secs(3))
                    .await;
                if let Err(EngineError::StopTimeout { .. }) = waited {
                    let s = self.session(id).await?;
                    if !s.state.is_ended() {
                        self.record_stopped(&s, reason).await?;
                    }
                }
                Ok(())
            }
        }
    }

    /// Records a stop made without a session task (queued, or run by no engine).
    async fn record_stopped(&self, s: &SessionRecord, reason: String) -> Result<()> {
        self.commit_state(&s.id, SessionState::Stopped, Some(reason), false)
            .await?;
        self.inner.store.cancel_pending_prompts(&s.id).await?;
        Ok(())
    }

    /// Moves a session without a task to `state`, stores the change with its event, and
    /// publishes it; `touch` also marks it active now. Only the state is written: the
    /// caller's copy of the row may be stale. (A session task records its own changes:
    /// `SessionTask::set_state`.)
    async fn commit_state(
        &self,
        id: &str,
        state: SessionState,
        detail: Option<String>,
        touch: bool,
    ) -> Result<()> {
        let evs = self
            .inner
            .store
            .commit_state(id, state, detail, touch)
            .await?;
        self.publish(evs);
        Ok(())
    }

    /// Waits until a session has ended (stopped or failed), at most `limit`.
    async fn wait_ended(
        &self,
        id: &str,
        events: &mut broadcast::Receiver<SessionEvent>,
        limit: Duration,
    ) -> Result<SessionRecord> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let s = self.session(id).await?;
            if s.state.is_ended() {
                return Ok(s);
            }
            tokio::select! {
                _ = events.recv() => {}
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                _ = tokio::time::sleep_until(deadline) => {
                    return Err(EngineError::StopTimeout {
                        session: id.to_string(),
                        waited: limit,
                    });
                }
            }
        }
    }

    /// Starts a stopped or failed session again, continuing its conversation.
    pub async fn resume(&self, id: &str, by: &str) -> Result<()> {
        let s = self.session(id).await?;
        if !s.state.is_ended() {
            return Err(EngineError::WrongState {
                session: s.id,
                state: s.state,
                hint: "only a stopped or failed session can be resumed",
            });
        }
        self.commit_state(
            &s.id,
            SessionState::Queued,
            Some(format!("resumed by {by}")),
            true,
        )
        .await?;
        self.schedule().await
    }

    fn send(&self, id: &str, msg: Msg) -> bool {
        match self.inner.live.get(id) {
            Some(tx) => tx.send(msg).is_ok(),
            None => false,
        }
    }

    fn publish(&self, evs: Vec<SessionEvent>) {
        self.inner
            .published
            .fetch_add(evs.len() as u64, Ordering::Relaxed);
        for e in evs {
            let _ = self.inner.events.send(e);
        }
    }

    /// Starts queued sessions, oldest first, while `max_running` and
    /// `max_running_per_user` allow.
    pub async fn schedule(&self) -> Result<()> {
        let _guard = self.inner.schedule.lock().await;
        let all = self
            .inner
            .store
            .sessions(
                self.instance(),
                &[
                    SessionState::Queued,
                    SessionState::Starting,
                    SessionState::Running,
                    SessionState::Waiting,
                ],
            )
            .await?;
        let cfg = &self.inner.config.sessions;
        let mut running = all.iter().filter(|s| s.state.is_live()).count();
        let mut per_user = std::collections::HashMap::<String, usize>::new();
        for s in all.iter().filter(|s| s.state.is_live()) {
            *per_user.entry(s.owner.clone()).or_default() += 1;
        }
        let mut queued: Vec<&SessionRecord> = all
            .iter()
            .filter(|s| s.state == SessionState::Queued)
            .collect();
        queued.sort_by_key(|s| (s.created_at, s.id.clone()));
        for s in queued {
            if running >= cfg.max_running {
                break;
            }
            let mine = per_user.entry(s.owner.clone()).or_default();
            if *mine >= cfg.max_running_per_user {
                continue;
            }
            *mine += 1;
            running += 1;
            self.commit_state(&s.id, SessionState::Starting, None, false)
                .await?;
            // The task starts from the row as stored now, not from the list read above.
            let s = self.session(&s.id).await?;
            self.spawn_task(s);
        }
        Ok(())
    }

    fn spawn_task(&self, s: SessionRecord) {
        let (tx, rx) = mpsc::unbounded_channel();
        // A task that is still finishing for this id keeps its own sender; the new one
        // takes the slot.
        self.inner.live.insert(s.id.clone(), tx.clone());
        let engine = self.clone();
        tokio::spawn(async move {
            let id = s.id.clone();
            let agent = engine.inner.config.agents.get(&s.agent).cloned();
            let mut task = SessionTask::new(engine.clone(), s, agent, rx);
            if let Err(e) = task.run().await {
                warn!(session = %id, error = %e, "session task failed");
                task.fail(format!("{e}")).await;
            }
            engine.inner.settling.remove(&id);
            engine.inner.repo_locks.remove(&id);
            engine.inner.live.remove_if(&id, |_, v| v.same_channel(&tx));
            if let Err(e) = engine.schedule().await {
                warn!(error = %e, "scheduling after a session ended failed");
            }
        });
    }
}

/// How often the running engine looks for sessions past `sessions.keep_stopped` at most.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// What removing one ended session's container and volumes did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removal {
    pub session: String,
    pub state: SessionState,
    pub ended_at: Option<i64>,
    pub removed: RemovedObjects,
}

impl std::fmt::Display for Removal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "session {} ({}", self.session, self.state)?;
        if let Some(ended) = self.ended_at {
            let ago = Duration::from_secs(((now_ms() - ended).max(0) / 1000) as u64);
            write!(f, " {} ago", humantime::format_duration(ago))?;
        }
        f.write_str("): ")?;
        let mut what = Vec::new();
        if let Some(c) = &self.removed.container {
            what.push(format!("container {c}"));
        }
        match self.removed.volumes.len() {
            0 => {}
            1 => what.push(format!("volume {}", self.removed.volumes[0])),
            _ => what.push(format!("volumes {}", self.removed.volumes.join(", "))),
        }
        if what.is_empty() {
            f.write_str("no container or volume was left; marked removed")
        } else {
            write!(f, "removed {}", what.join(" and "))
        }
    }
}

/// What `prune` did: the sessions cleaned up, and those that could not be.
#[derive(Debug, Default)]
pub struct PruneReport {
    pub removed: Vec<Removal>,
    pub failed: Vec<(String, EngineError)>,
}

/// The end time (ms since the epoch) at or before which an ended session is pruned
/// when sessions ended more than `older_than` ago go.
fn prune_cutoff(now_ms: i64, older_than: Duration) -> i64 {
    now_ms.saturating_sub(older_than.as_millis().min(i64::MAX as u128) as i64)
}

/// How often the engine looks for sessions past `keep_stopped`: every hour, or every
/// `keep_stopped` when that is shorter, so a session goes at most twice that after
/// its end.
fn prune_interval(keep_stopped: Duration) -> Duration {
    keep_stopped.clamp(Duration::from_secs(1), PRUNE_EVERY)
}

/// Cleanup: the containers and volumes of ended sessions (the transcript stays).
impl Engine {
    /// Removes an ended session's container and volumes; its row and transcript stay.
    /// A live or queued session is refused. Removing again is harmless.
    pub async fn remove(&self, id: &str) -> Result<Removal> {
        // Under the scheduler's lock: this engine starts no session while it goes.
        let _guard = self.inner.schedule.lock().await;
        let s = self.session(id).await?;
        if s.instance != self.instance() {
            return Err(EngineError::Other(format!(
                "session {id} belongs to the instance {:?}, not {:?}; remove it with that instance's config",
                s.instance,
                self.instance()
            )));
        }
        if !s.state.is_ended() || self.inner.live.contains_key(id) {
            return Err(EngineError::StillLive {
                session: s.id,
                state: s.state,
            });
        }
        self.remove_ended(&s).await
    }

    /// Removes the containers and volumes of this instance's ended sessions that ended
    /// more than `older_than` ago (zero: every ended one) and are not removed yet.
    pub async fn prune(&self, older_than: Duration) -> Result<PruneReport> {
        let cutoff = prune_cutoff(now_ms(), older_than);
        let mut report = PruneReport::default();
        for s in self
            .inner
            .store
            .prunable_sessions(self.instance(), cutoff)
            .await?
        {
            match self.remove(&s.id).await {
                Ok(r) => report.removed.push(r),
                // Resumed since it was listed: it stays.
                Err(EngineError::StillLive { .. }) => {}
                Err(e) => report.failed.push((s.id, e)),
            }
        }
        Ok(report)
    }

    /// With `sessions.keep_stopped` set: prunes sessions ended longer ago than that now
    /// and then periodically (see `prune_interval`), logging what goes.
    pub fn prune_periodically(&self) -> Option<tokio::task::JoinHandle<()>> {
        let keep = self.inner.config.sessions.keep_stopped?;
        let every = prune_interval(keep);
        let engine = self.clone();
        info!(
            keep_stopped = %humantime::format_duration(keep),
            every = %humantime::format_duration(every),
            "ended sessions' containers and volumes are removed after sessions.keep_stopped"
        );
        Some(tokio::spawn(async move {
            loop {
                match engine.prune(keep).await {
                    Ok(report) => {
                        for r in &report.removed {
                            info!(session = %r.session, "sessions.keep_stopped: {r}");
                        }
                        for (id, e) in &report.failed {
                            warn!(session = %id, error = %e, "sessions.keep_stopped: cannot remove the session's container and volumes");
                        }
                    }
                    Err(e) => {
                        warn!(error = %e, "sessions.keep_stopped: cannot look for ended sessions")
                    }
                }
                tokio::time::sleep(every).await;
            }
        }))
    }

    async fn remove_ended(&self, s: &SessionRecord) -> Result<Removal> {
        let removed = self.inner.runtime.remove_session(&s.id).await?;
        if !self.inner.store.mark_removed(&s.id, now_ms()).await? {
            // Resumed meanwhile: its new container makes new volumes; nothing to record.
            warn!(session = %s.id, "the session was resumed while its container was being removed");
        }
        Ok(Removal {
            session: s.id.clone(),
            state: s.state,
            ended_at: s.ended_at,
            removed,
        })
    }

    /// When an ended session's container and volumes were removed, if they were.
    pub async fn removed_at(&self, id: &str) -> Result<Option<i64>> {
        Ok(self.inner.store.removed_at(id).await?)
    }
}

/// The first non-empty line of `text`, or `otherwise`.
fn first_line<'a>(text: &'a str, otherwise: &'a str) -> &'a str {
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or(otherwise)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prune_takes_sessions_ended_at_or_before_the_cutoff() {
        assert_eq!(prune_cutoff(10_000, Duration::from_secs(3)), 7_000);
        assert_eq!(prune_cutoff(10_000, Duration::ZERO), 10_000);
        assert_eq!(prune_cutoff(10_000, Duration::MAX), 10_000 - i64::MAX);
    }

    #[test]
    fn keep_stopped_is_checked_hourly_or_more_often_when_shorter() {
        let h = Duration::from_secs(3600);
        assert_eq!(prune_interval(Duration::from_secs(7 * 24 * 3600)), h);
        assert_eq!(prune_interval(h), h);
        assert_eq!(
            prune_interval(Duration::from_secs(90)),
            Duration::from_secs(90)
        );
        assert_eq!(
            prune_interval(Duration::from_millis(10)),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn a_removal_says_what_went() {
        let r = |container: Option<&str>, volumes: &[&str]| Removal {
            session: "abc".into(),
            state: SessionState::Stopped,
            ended_at: None,
            removed: RemovedObjects {
                container: container.map(String::from),
                volumes: volumes.iter().map(|v| v.to_string()).collect(),
            },
        };
        assert_eq!(
            r(
                Some("firstmate-abc"),
                &["firstmate-abc-home", "firstmate-abc-workspace"]
            )
            .to_string(),
            "session abc (stopped): removed container firstmate-abc and volumes firstmate-abc-home, firstmate-abc-workspace"
        );
        assert_eq!(
            r(None, &["firstmate-abc-workspace"]).to_string(),
            "session abc (stopped): removed volume firstmate-abc-workspace"
        );
        assert_eq!(
            r(None, &[]).to_string(),
            "session abc (stopped): no container or volume was left; marked removed"
        );
        let mut ended = r(Some("firstmate-abc"), &[]);
        ended.ended_at = Some(now_ms() - 90_000);
        assert!(
            ended
                .to_string()
                .starts_with("session abc (stopped 1m 30s ago): removed container"),
            "{ended}"
        );
    }
}
