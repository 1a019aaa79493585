//! A session's task: the one place its container's life is followed. It starts (or
//! re-attaches to) the container, hands prompts to the agent one turn at a time, turns
//! the container's log into events stored with the log cursor in one transaction, asks
//! people about tool calls, and records how the session ended. It keeps the session's
//! row in memory and is its only writer while it runs.
//!
//! Everything it does to a container goes through [`Runtime`], and every deadline (idle,
//! lifetime, approvals) is measured on the runtime's clock: the unit tests below drive
//! it with a scripted runtime on tokio's paused clock.

use std::collections::HashSet;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::{Engine, EngineError, Msg, Result, STOP_GRACE};
use crate::approval::{Answer, Answered};
use crate::config::AgentConfig;
use crate::event::{EventBody, SessionState};
use crate::files;
use crate::protocol::{self, AgentEvent, Driver, Io, Launch, ProtocolKind, TurnOutcome, claude};
use crate::runtime::{
    LogCursor, LogLine, LogStream, Runtime, StdinWriter, WorkerSpec, container_name,
};
use crate::store::{ApprovalRecord, SessionRecord, Store};

/// Lines of agent output taken into one database transaction at most.
const BATCH_LINES: usize = 512;

pub(super) struct SessionTask {
    pub(super) engine: Engine,
    pub(super) s: SessionRecord,
    pub(super) agent: Option<AgentConfig>,
    pub(super) inbox: mpsc::UnboundedReceiver<Msg>,
    /// Claude: the agent's stdin; prompts and interrupts are written to it.
    pub(super) stdin: Option<StdinWriter>,
    /// Codex: the container runs, so a turn can be started in it (`docker exec`).
    pub(super) exec_ready: bool,
    /// The gateway's OpenAI-compatible base URL, for agents that take it per turn.
    pub(super) openai_base_url: Option<String>,
    pub(super) cursor: LogCursor,
    pub(super) turn_active: bool,
    pub(super) interrupt_requested: bool,
    pub(super) stopping: Option<String>,
    /// Events waiting for the next commit.
    pub(super) pending: Vec<EventBody>,
    /// Approvals that wait for a person, oldest first.
    pub(super) waiting: Vec<ApprovalRecord>,
    /// Tools approved for the rest of the session ("always").
    pub(super) always: HashSet<String>,
    /// Lines for the agent once the events are committed (answers given without asking).
    pub(super) replies: Vec<Io>,
}

impl SessionTask {
    pub(super) fn new(
        engine: Engine,
        s: SessionRecord,
        agent: Option<AgentConfig>,
        inbox: mpsc::UnboundedReceiver<Msg>,
    ) -> SessionTask {
        let openai_base_url = engine.inner.gateway.as_ref().map(|g| g.openai_base_url());
        SessionTask {
            engine,
            s,
            agent,
            inbox,
            stdin: None,
            exec_ready: false,
            openai_base_url,
            cursor: LogCursor::new(0, 0),
            turn_active: false,
            interrupt_requested: false,
            stopping: None,
            pending: Vec::new(),
            waiting: Vec::new(),
            always: HashSet::new(),
            replies: Vec::new(),
        }
    }

    /// Now, on the runtime's clock.
    fn now(&self) -> i64 {
        self.runtime().now_ms()
    }

    pub(super) fn store(&self) -> &Store {
        &self.engine.inner.store
    }

    pub(super) fn runtime(&self) -> &dyn Runtime {
        &*self.engine.inner.runtime
    }

    fn protocol(&self) -> ProtocolKind {
        match &self.agent {
            Some(a) => a.protocol,
            None if self.s.protocol == ProtocolKind::Codex.as_str() => ProtocolKind::Codex,
            None => ProtocolKind::Claude,
        }
    }

    fn driver(&self) -> &'static dyn Driver {
        protocol::driver(self.protocol())
    }

    /// What the agent runs with (for its command and each turn).
    fn launch(&self) -> Launch<'_> {
        Launch {
            model: self.s.model.as_deref(),
            permission_mode: self.agent.as_ref().map(|a| a.permission_mode.as_str()),
            resume: self.s.agent_session_id.as_deref(),
            openai_base_url: self.openai_base_url.as_deref(),
            extra: self.agent.as_ref().map_or(&[], |a| a.args.as_slice()),
        }
    }

    /// Whether a prompt can be handed to the agent now.
    fn can_send(&self) -> bool {
        if self.driver().uses_stdin() {
            self.stdin.is_some()
        } else {
            self.exec_ready
        }
    }

    pub(super) async fn commit(&mut self) -> Result<()> {
        let events = std::mem::take(&mut self.pending);
        let evs = self.engine.inner.store.commit(&mut self.s, events).await?;
        self.engine.publish(evs);
        Ok(())
    }

    fn set_state(&mut self, state: SessionState, detail: Option<String>) {
        if self.s.state == state && self.s.state_detail == detail {
            return;
        }
        self.s.state = state;
        self.s.state_detail = detail.clone();
        if state.is_ended() {
            self.s.ended_at = Some(self.now());
        }
        self.pending.push(EventBody::State { state, detail });
    }

    /// Revokes the session's gateway tokens: an ended session calls no model.
    async fn revoke_tokens(&mut self) {
        if let Some(gw) = &self.engine.inner.gateway
            && let Err(e) = gw.revoke(&self.s.id).await
        {
            warn!(session = %self.s.id, error = %e, "cannot revoke the session's gateway tokens");
        }
    }

    pub(super) async fn fail(&mut self, detail: String) {
        self.revoke_tokens().await;
        self.pending.clear();
        self.set_state(SessionState::Failed, Some(detail));
        if let Err(e) = self.commit().await {
            warn!(session = %self.s.id, error = %e, "cannot record the failure");
        }
    }

    async fn worker_spec(&mut self) -> Result<WorkerSpec> {
        let agent = self
            .agent
            .as_ref()
            .ok_or_else(|| EngineError::UnknownAgent {
                agent: self.s.agent.clone(),
                known: self
                    .engine
                    .inner
                    .config
                    .agents
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
        let mut cmd = protocol::driver(agent.protocol).container_cmd(&Launch {
            model: self.s.model.as_deref(),
            permission_mode: Some(agent.permission_mode.as_str()),
            resume: self.s.agent_session_id.as_deref(),
            openai_base_url: None,
            extra: &agent.args,
        });
        let mut env: Vec<String> = agent
            .env
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .chain([format!("FIRSTMATE_SESSION={}", self.s.id)])
            .collect();
        let git = self.git_grant()?;
        if git.is_some() && protocol::driver(agent.protocol).uses_stdin() {
            // The agent starts once its workspace is cloned (`prepare_workspace`).
            cmd = crate::repo::gated(cmd);
        }
        if let Some(gw) = &self.engine.inner.gateway {
            // A token of this container's own; the real credential stays in the gateway.
            env.extend(
                gw.issue(&self.s.id, &self.s.owner, agent.protocol, git)
                    .await?,
            );
        }
        Ok(WorkerSpec {
            session_id: self.s.id.clone(),
            image: self.s.image.clone(),
            cmd,
            env,
            memory_bytes: agent.memory_bytes,
            nano_cpus: agent.nano_cpus,
            pids_limit: agent.pids_limit,
        })
    }

    pub(super) async fn run(&mut self) -> Result<()> {
        let name = container_name(&self.s.id);
        let status = self.runtime().inspect(&name).await?;
        let reattach = self.s.state != SessionState::Starting
            && status
                .as_ref()
                .is_some_and(|st| self.s.container_id.as_deref() == Some(st.id.as_str()));
        if reattach {
            if let (Some(gw), Some(grant)) = (&self.engine.inner.gateway, self.git_grant()?) {
                gw.grant_git(&self.s.id, grant);
            }
            self.cursor = LogCursor::new(self.s.log_cursor_ns, self.s.log_cursor_count);
            self.turn_active = self.s.state == SessionState::Running;
            if status.as_ref().is_some_and(|st| st.running) {
                self.runtime().rejoin(&self.s.id).await?;
                if self.driver().uses_stdin() {
                    self.stdin = Some(self.runtime().attach_stdin(&self.s.id, &name).await?)
                } else {
                    self.exec_ready = true;
                }
            }
        } else if self.s.state.is_live() && self.s.state != SessionState::Starting {
            self.fail(
                "its container disappeared while firstmate was away; `resume` starts it again"
                    .into(),
            )
            .await;
            return Ok(());
        } else {
            let spec = self.worker_spec().await?;
            let id = self.runtime().create(&spec).await?;
            self.s.container_id = Some(id.clone());
            self.s.log_cursor_ns = 0;
            self.s.log_cursor_count = 0;
            // Claude Code's total_cost_usd runs on across `--resume` (it reads the
            // conversation's cost back): only a fresh conversation starts from zero.
            if self.s.agent_session_id.is_none() {
                self.s.agent_cost_usd = 0.0;
            }
            self.cursor = LogCursor::new(0, 0);
            if self.driver().uses_stdin() {
                // Attach before start, so no input is missed and the agent sees stdin
                // open.
                self.stdin = Some(self.runtime().attach_stdin(&self.s.id, &id).await?);
                self.runtime().start(&self.s.id, &id).await?;
            } else {
                // One process per turn (an exec); the container idles.
                self.runtime().start(&self.s.id, &id).await?;
                self.exec_ready = true;
            }
            if !self.prepare_workspace(&id).await? {
                return Ok(());
            }
            self.s.started_at.get_or_insert(self.now());
            self.s.last_activity_at = self.now();
            self.turn_active = false;
            self.set_state(SessionState::Waiting, None);
            self.commit().await?;
            info!(session = %self.s.id, container = %name, "container started");
        }

        if !reattach || status.as_ref().is_some_and(|st| st.running) {
            // An ordinary live session from here on; one whose container ended while
            // no engine ran stays settling until its end is recorded.
            self.engine.inner.settling.remove(&self.s.id);
        }
        let since = self.cursor.ts_ns;
        let container = self.s.container_id.clone().unwrap_or(name);
        let mut logs = self.runtime().follow_logs(&container, since);
        self.load_approvals().await?;
        self.next_prompt().await?;

        loop {
            let idle = self.idle_deadline();
            let lifetime = self.lifetime_deadline();
            let approvals = self.approval_deadline();
            // Its own handle: the sleeps must not borrow `self`, which the branches use.
            let rt = self.engine.inner.runtime.clone();
            tokio::select! {
                line = logs.recv() => match line {
                    Some(Ok(line)) => {
                        let mut batch = vec![line];
                        while batch.len() < BATCH_LINES {
                            match logs.try_recv() {
                                Ok(Ok(l)) => batch.push(l),
                                _ => break,
                            }
                        }
                        self.take_lines(batch).await?;
                    }
                    Some(Err(e)) => {
                        warn!(session = %self.s.id, error = %e, "the container log broke; reading on");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        logs = self.runtime().follow_logs(&container, self.cursor.ts_ns);
                    }
                    None => {
                        self.ended(&container).await?;
                        return Ok(());
                    }
                },
                msg = self.inbox.recv() => match msg {
                    Some(Msg::Prompt { id }) => self.prompt_arrived(id).await?,
                    Some(Msg::Interrupt) => self.interrupt().await?,
                    Some(Msg::Stop { reason }) => self.stop(reason).await?,
                    Some(Msg::Notice { text, done }) => {
                        self.pending.push(EventBody::Notice { text });
                        self.commit().await?;
                        if let Some(done) = done {
                            let _ = done.send(());
                        }
                    }
                    Some(Msg::Answered) => self.send_answers().await?,
                    None => return Ok(()),
                },
                _ = sleep_until_ms(&*rt, approvals) => self.time_out_approvals().await?,
                _ = sleep_until_ms(&*rt, idle) => {
                    let d = humantime::format_duration(Duration::from_millis(self.idle_timeout_ms() as u64));
                    self.stop(format!("idle for {d}; `resume` starts it again")).await?;
                }
                _ = sleep_until_ms(&*rt, lifetime) => {
                    let d = humantime::format_duration(self.engine.inner.config.sessions.max_lifetime);
                    self.stop(format!("it reached the maximum lifetime of {d} (sessions.max_lifetime)")).await?;
                }
            }
        }
    }

    fn idle_timeout_ms(&self) -> i64 {
        self.s
            .idle_timeout_ms
            .unwrap_or_else(|| self.engine.inner.config.sessions.idle_timeout.as_millis() as i64)
    }

    /// When the session is waiting with nothing queued, the moment it goes idle.
    fn idle_deadline(&self) -> Option<i64> {
        (self.s.state == SessionState::Waiting && self.stopping.is_none())
            .then(|| self.s.last_activity_at + self.idle_timeout_ms())
    }

    fn lifetime_deadline(&self) -> Option<i64> {
        let start = self.s.started_at?;
        self.stopping
            .is_none()
            .then(|| start + self.engine.inner.config.sessions.max_lifetime.as_millis() as i64)
    }

    /// Sends the oldest stored prompt when no turn runs.
    /// Prompt `id` was queued: it starts now when the agent is free; while a turn runs,
    /// the thread says it waits, and behind how many (someone on a phone sees it was
    /// taken).
    async fn prompt_arrived(&mut self, id: i64) -> Result<()> {
        if self.turn_active
            && self.stopping.is_none()
            && let Some(place) = self.store().queue_place(&self.s.id, id).await?
        {
            self.pending.push(EventBody::Notice {
                text: queued_notice(place),
            });
            return self.commit().await;
        }
        self.next_prompt().await
    }

    async fn next_prompt(&mut self) -> Result<()> {
        if self.turn_active || self.stopping.is_some() || !self.can_send() {
            return Ok(());
        }
        let Some(p) = self.store().next_pending_prompt(&self.s.id).await? else {
            return Ok(());
        };
        self.turn_active = true;
        self.interrupt_requested = false;
        self.s.last_activity_at = self.now();
        self.pending.push(EventBody::Prompt {
            text: p.body.clone(),
            author: p.author.clone(),
        });
        self.set_state(SessionState::Running, None);
        let events = std::mem::take(&mut self.pending);
        let evs = self
            .engine
            .inner
            .store
            .commit_taking_prompt(&mut self.s, events, p.id)
            .await?;
        self.engine.publish(evs);
        let images = if self.driver().sees_images() {
            attached_images(&self.engine, &self.s.id, &p.body).await
        } else {
            Vec::new()
        };
        let io = self
            .driver()
            .start_turn(&self.launch(), self.s.turns + 1, &p.body, &images);
        match io {
            Io::Stdin(line) => self.write_stdin(line.as_bytes()).await,
            Io::Exec(argv) => self.start_exec_turn(argv).await,
        }
    }

    /// Starts a turn that is an exec in the container (Codex: `codex exec`, or `exec
    /// resume` of the session's thread, inside the wrapper that writes to the container's
    /// log). A turn that cannot start ends as an error.
    async fn start_exec_turn(&mut self, argv: Vec<String>) -> Result<()> {
        let container = self.s.container_id.clone().unwrap_or_default();
        if let Err(e) = self
            .engine
            .inner
            .runtime
            .exec_detached(&self.s.id, &container, argv)
            .await
        {
            warn!(session = %self.s.id, error = %e, "cannot start the agent's turn");
            self.take_event(AgentEvent::TurnEnd {
                outcome: TurnOutcome::Error {
                    message: format!("cannot start the agent: {e}"),
                },
                usage: Default::default(),
                cost_usd: None,
                agent_session_id: None,
            });
            self.commit().await?;
        }
        Ok(())
    }

    async fn write_stdin(&mut self, bytes: &[u8]) -> Result<()> {
        let Some(stdin) = self.stdin.as_mut() else {
            return Ok(());
        };
        let res = async {
            stdin.write_all(bytes).await?;
            stdin.flush().await
        }
        .await;
        if let Err(e) = res {
            // The agent is gone; the log stream's end records how.
            warn!(session = %self.s.id, error = %e, "cannot write to the agent's stdin");
            self.stdin = None;
        }
        Ok(())
    }

    async fn interrupt(&mut self) -> Result<()> {
        if !self.turn_active {
            self.pending.push(EventBody::Notice {
                text: "nothing to interrupt: the agent is not working".into(),
            });
            return self.commit().await;
        }
        self.interrupt_requested = true;
        let request = format!("interrupt-{}", self.now());
        let io = self.driver().interrupt(self.s.turns + 1, &request);
        self.carry_out(io).await?;
        // After the interrupt, so the agent ends the turn rather than going on without
        // the tool.
        self.deny_waiting("the turn was interrupted").await
    }

    async fn stop(&mut self, reason: String) -> Result<()> {
        if self.stopping.is_some() {
            return Ok(());
        }
        self.deny_waiting("the session was stopped").await?;
        self.stopping = Some(reason);
        if let Some(c) = self.s.container_id.clone() {
            self.runtime().stop(&self.s.id, &c, STOP_GRACE).await?;
        }
        Ok(())
    }

    /// Takes a batch of log lines: skips what was taken before, turns the rest into
    /// events, and stores them with the new cursor in one transaction.
    async fn take_lines(&mut self, lines: Vec<LogLine>) -> Result<()> {
        let mut turn_ended = false;
        for line in lines {
            if !self.cursor.take(line.ts_ns) {
                continue;
            }
            match line.stream {
                LogStream::Stderr => self.pending.push(EventBody::Stderr { line: line.text }),
                LogStream::Stdout => {
                    let running = self.turn_active.then_some(self.s.turns + 1);
                    for ev in self.driver().parse(&line.text, running) {
                        if let AgentEvent::PermissionRequest { .. } = ev {
                            self.take_request(ev, line.ts_ns).await?;
                        } else {
                            turn_ended |= self.take_event(ev);
                        }
                    }
                }
            }
        }
        self.s.log_cursor_ns = self.cursor.ts_ns;
        self.s.log_cursor_count = self.cursor.count;
        self.s.last_activity_at = self.now();
        if turn_ended {
            // In the same commit as the turn's end: whoever waits for it sees this too.
            self.turn_diffstat().await;
        }
        self.commit().await?;
        for io in std::mem::take(&mut self.replies) {
            self.carry_out(io).await?;
        }
        if turn_ended {
            self.next_prompt().await?;
        }
        Ok(())
    }

    /// Records one agent event; true when it ended a turn.
    fn take_event(&mut self, ev: AgentEvent) -> bool {
        let mut ended = false;
        let ev = match ev {
            AgentEvent::Started {
                ref agent_session_id,
                ..
            } => {
                self.s.agent_session_id = Some(agent_session_id.clone());
                ev
            }
            AgentEvent::TurnEnd {
                outcome,
                usage,
                cost_usd,
                agent_session_id,
            } => {
                ended = true;
                let usage = self.driver().turn_usage(&self.s.usage, usage);
                let outcome = match outcome {
                    TurnOutcome::Error { .. } if self.interrupt_requested => {
                        TurnOutcome::Interrupted
                    }
                    o => o,
                };
                self.s.turns += 1;
                self.s.usage.input_tokens += usage.input_tokens;
                self.s.usage.output_tokens += usage.output_tokens;
                self.s.usage.cache_read_tokens += usage.cache_read_tokens;
                self.s.usage.cache_write_tokens += usage.cache_write_tokens;
                if let Some(total) = cost_usd {
                    self.s.cost_usd += (total - self.s.agent_cost_usd).max(0.0);
                    self.s.agent_cost_usd = total;
                }
                if let Some(a) = &agent_session_id {
                    self.s.agent_session_id = Some(a.clone());
                }
                self.turn_active = false;
                self.interrupt_requested = false;
                AgentEvent::TurnEnd {
                    outcome,
                    usage,
                    cost_usd,
                    agent_session_id,
                }
            }
            other => other,
        };
        self.pending.push(EventBody::Agent { event: ev });
        if ended && self.stopping.is_none() {
            self.set_state(SessionState::Waiting, None);
        }
        ended
    }

    /// Carries out an [`Io`]: a line to the agent's stdin, or a detached exec.
    async fn carry_out(&mut self, io: Io) -> Result<()> {
        match io {
            Io::Stdin(line) => self.write_stdin(line.as_bytes()).await,
            Io::Exec(argv) => {
                let container = self.s.container_id.clone().unwrap_or_default();
                self.runtime()
                    .exec_detached(&self.s.id, &container, argv)
                    .await?;
                Ok(())
            }
        }
    }

    /// Whether a call of `tool` waits for a person: the agent asks about the tools in
    /// its `ask_tools` that were not approved for the session; anything else it asks
    /// about is allowed at once.
    fn asks_about(&self, tool: &str) -> bool {
        !self.always.contains(tool)
            && self
                .agent
                .as_ref()
                .is_none_or(|a| a.ask_tools.iter().any(|t| t == tool))
    }

    /// The agent asks whether it may run a tool call. One it need not ask about is
    /// allowed once the batch is stored; otherwise the approval is stored (before the
    /// log cursor passes its line, so a restart reads the line again and finds it) and
    /// its message goes to the thread.
    /// `ts_ns` is when the agent wrote the request (its log line's time): the approval
    /// times out counting from then.
    async fn take_request(&mut self, ev: AgentEvent, ts_ns: i64) -> Result<()> {
        let AgentEvent::PermissionRequest {
            request_id,
            tool,
            summary,
            input,
            ..
        } = ev
        else {
            return Ok(());
        };
        if !self.asks_about(&tool) {
            if let Some(io) = self
                .driver()
                .answer(&request_id, &protocol::Permission::Allow { input })
            {
                self.replies.push(io);
            }
            return Ok(());
        }
        let a = self
            .store()
            .insert_approval(&ApprovalRecord {
                id: uuid::Uuid::new_v4().simple().to_string()[..12].to_string(),
                session_id: self.s.id.clone(),
                request_id,
                tool,
                summary,
                input,
                answered: None,
                created_at: if ts_ns > 0 {
                    ts_ns / 1_000_000
                } else {
                    self.now()
                },
                sent: false,
            })
            .await?;
        self.pending.push(approval_event(&a));
        if a.answered.is_none() {
            if !self.waiting.iter().any(|w| w.id == a.id) {
                self.waiting.push(a);
            }
            self.show_waiting();
        }
        Ok(())
    }

    /// The state's detail says what the first waiting approval is about.
    fn show_waiting(&mut self) {
        if self.stopping.is_some() || self.s.state != SessionState::Running {
            return;
        }
        let detail = self.waiting.first().map(|a| {
            let call = if a.summary.is_empty() {
                a.tool.clone()
            } else {
                format!("{} {}", a.tool, a.summary)
            };
            format!("waiting for approval: {call}")
        });
        self.set_state(SessionState::Running, detail);
    }

    /// At the start of the task: the approvals that wait, the tools approved for the
    /// session, and any answer stored while no task ran.
    async fn load_approvals(&mut self) -> Result<()> {
        let all = self.store().approvals(&self.s.id).await?;
        self.always = all
            .iter()
            .filter(|a| {
                a.answered
                    .as_ref()
                    .is_some_and(|d| d.answer == Answer::Always)
            })
            .map(|a| a.tool.clone())
            .collect();
        self.waiting = all.into_iter().filter(|a| a.answered.is_none()).collect();
        self.send_answers().await
    }

    /// Sends the agent every stored answer it has not had, and shows each in the thread.
    async fn send_answers(&mut self) -> Result<()> {
        let all = self.store().approvals(&self.s.id).await?;
        let mut sent = Vec::new();
        for a in all.into_iter().filter(|a| !a.sent) {
            let Some(done) = a.answered.clone() else {
                continue;
            };
            if done.answer == Answer::Always {
                self.always.insert(a.tool.clone());
            }
            self.waiting.retain(|w| w.id != a.id);
            self.pending.push(approval_event(&a));
            let permission = if done.answer.allows() {
                protocol::Permission::Allow {
                    input: a.input.clone(),
                }
            } else {
                protocol::Permission::Deny {
                    message: done.refusal(),
                }
            };
            if let Some(io) = self.driver().answer(&a.request_id, &permission) {
                self.replies.push(io);
            }
            sent.push(a.id);
        }
        if sent.is_empty() {
            return Ok(());
        }
        self.show_waiting();
        self.commit().await?;
        for io in std::mem::take(&mut self.replies) {
            self.carry_out(io).await?;
        }
        for id in sent {
            self.store().mark_approval_sent(&id).await?;
        }
        Ok(())
    }

    /// Denies every approval that waits (`interrupt`, `stop`, the end of the session).
    async fn deny_waiting(&mut self, why: &str) -> Result<()> {
        for a in std::mem::take(&mut self.waiting) {
            let answered = Answered {
                answer: Answer::Deny,
                by: String::new(),
                why: Some(why.to_string()),
            };
            self.store().answer_approval(&a.id, &answered).await?;
        }
        self.send_answers().await
    }

    /// When the oldest waiting approval times out.
    fn approval_deadline(&self) -> Option<i64> {
        let timeout = self
            .engine
            .inner
            .config
            .sessions
            .approval_timeout
            .as_millis() as i64;
        self.waiting.iter().map(|a| a.created_at + timeout).min()
    }

    /// Denies the approvals nobody answered in time.
    async fn time_out_approvals(&mut self) -> Result<()> {
        let timeout = self.engine.inner.config.sessions.approval_timeout;
        let now = self.now();
        let why = format!("no answer within {}", humantime::format_duration(timeout));
        let due: Vec<String> = self
            .waiting
            .iter()
            .filter(|a| a.created_at + timeout.as_millis() as i64 <= now)
            .map(|a| a.id.clone())
            .collect();
        for id in due {
            let answered = Answered {
                answer: Answer::Timeout,
                by: String::new(),
                why: Some(why.clone()),
            };
            self.store().answer_approval(&id, &answered).await?;
        }
        self.send_answers().await
    }

    /// The container's log ended: the container stopped. Records how.
    async fn ended(&mut self, container: &str) -> Result<()> {
        self.stdin = None;
        self.exec_ready = false;
        self.revoke_tokens().await;
        let status = self.runtime().inspect(container).await?;
        if let Err(e) = self.runtime().release_network(&self.s.id).await {
            // Kept, it holds an address range until `sessions rm` or the next `resume`.
            warn!(session = %self.s.id, "{e}");
        }
        // Someone else (`firstmate sessions stop`) may have stopped it and said so.
        let recorded = self.store().session(&self.s.id).await?;
        if let Some(r) = recorded.filter(|r| r.state.is_ended()) {
            // Its end is recorded already: take that record (and its event numbering).
            self.s = r;
            self.stopping = None;
            return Ok(());
        }
        if let Some(reason) = self.stopping.take() {
            self.set_state(SessionState::Stopped, Some(reason));
        } else {
            let detail = match status {
                Some(st) if st.oom_killed => format!(
                    "the agent ran out of memory; raise agents.{}.memory in the config",
                    self.s.agent
                ),
                Some(st) if st.running => "the agent's output ended unexpectedly".to_string(),
                Some(st) => format!(
                    "the agent exited with code {}",
                    st.exit_code.unwrap_or_default()
                ),
                None => "the container was removed".to_string(),
            };
            self.set_state(SessionState::Failed, Some(detail));
        }
        self.deny_waiting("the session ended").await?;
        let dropped = self.store().cancel_pending_prompts(&self.s.id).await?;
        if dropped > 0 {
            self.pending.push(EventBody::Notice {
                text: format!(
                    "{dropped} queued prompt(s) did not run because the session ended; send them again after `resume`"
                ),
            });
        }
        self.commit().await
    }
}

/// What the thread says of a prompt that waits for the current turn, `place` in the
/// queue (1: next).
fn queued_notice(place: i64) -> String {
    match place {
        ..=1 => "⏳ queued: it runs when the current turn ends".to_string(),
        n => format!(
            "⏳ queued: it runs after the current turn and {} prompt{} before it",
            n - 1,
            if n == 2 { "" } else { "s" }
        ),
    }
}

/// The event that shows an approval as it stands.
fn approval_event(a: &ApprovalRecord) -> EventBody {
    EventBody::Approval {
        id: a.id.clone(),
        tool: a.tool.clone(),
        summary: a.summary.clone(),
        preview: crate::approval::preview(&a.tool, &a.input),
        answer: a.answered.clone(),
    }
}

/// Sleeps until `deadline` on the runtime's clock, or for ever when there is none.
async fn sleep_until_ms(rt: &dyn Runtime, deadline: Option<i64>) {
    match deadline {
        Some(at) => rt.sleep_until_ms(at).await,
        None => std::future::pending().await,
    }
}

/// The images a prompt's attachment lines name, read from the workspace, for the
/// model to see as images (Claude Code). One that cannot be read (gone, too large)
/// stays a file the agent can open; the log says why.
async fn attached_images(engine: &Engine, id: &str, prompt: &str) -> Vec<claude::Image> {
    let mut images = Vec::new();
    for (path, media_type) in files::attached_images(prompt) {
        let mut data = Vec::new();
        let got = engine
            .get_file(id, &path, files::IMAGE_MAX_BYTES, &mut |chunk: &[u8]| {
                data.extend_from_slice(chunk);
                Ok(())
            })
            .await;
        match got {
            Ok(_) => images.push(claude::Image {
                media_type: media_type.to_string(),
                data,
            }),
            Err(e) => {
                warn!(session = %id, %path, error = %e, "an attached image goes to the agent as a file only")
            }
        }
    }
    images
}

#[cfg(test)]
mod tests {
    //! The task against a scripted runtime: a container whose log the test writes and
    //! whose stdin the test reads, and a paused clock that moves only when the test
    //! says (`advance`). The store is a real SQLite file.
    //!
    //! The clock is the runtime's own rather than tokio's paused one: SQLite answers
    //! from a thread of its own, which tokio's auto-advance cannot see, so tokio's
    //! clock would jump to the next deadline while a query runs.

    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use async_trait::async_trait;
    use serde_json::{Value, json};
    use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader, DuplexStream, Lines};
    use tokio::sync::{broadcast, mpsc, watch};

    use super::super::{Engine, NewSession};
    use crate::approval::Answer;
    use crate::config::Config;
    use crate::event::{EventBody, SessionEvent, SessionState};
    use crate::protocol::{AgentEvent, TurnOutcome};
    use crate::runtime::{
        ContainerStatus, ExecEnd, LogLine, LogStream, RemovedObjects, Result, Runtime, StdinWriter,
        WorkerSpec,
    };
    use crate::store::Store;

    const MINUTE: Duration = Duration::from_secs(60);

    /// The one container of a test, as the task sees it.
    #[derive(Default)]
    struct Container {
        created: bool,
        running: bool,
        exit_code: Option<i64>,
        /// The log the task follows; dropped when the container stops.
        log: Option<mpsc::Sender<Result<LogLine, String>>>,
        /// The test's end of the agent's stdin.
        stdin: Option<DuplexStream>,
        /// What the task asked of the runtime, with when (ms on the runtime's clock).
        calls: Vec<(String, i64)>,
        lines: i64,
    }

    #[derive(Clone)]
    struct Scripted {
        /// Now, in ms since the epoch.
        clock: Arc<watch::Sender<i64>>,
        c: Arc<Mutex<Container>>,
    }

    /// The runtime clock's reading when a test starts (ms since the epoch).
    const EPOCH_MS: i64 = 1_800_000_000_000;

    impl Scripted {
        fn new() -> Scripted {
            Scripted {
                clock: Arc::new(watch::Sender::new(EPOCH_MS)),
                c: Arc::default(),
            }
        }

        /// Moves the clock on by `d`: what falls due runs.
        async fn advance(&self, d: Duration) {
            self.clock.send_modify(|now| *now += d.as_millis() as i64);
            tokio::task::yield_now().await;
        }

        fn call(&self, what: &str) {
            let now = self.now_ms();
            self.c.lock().unwrap().calls.push((what.to_string(), now));
        }

        /// When the task first asked for `what`.
        fn when(&self, what: &str) -> Option<i64> {
            let c = self.c.lock().unwrap();
            c.calls.iter().find(|(w, _)| w == what).map(|(_, at)| *at)
        }

        /// The agent writes `line` to stdout, timestamped now.
        async fn say(&self, line: Value) {
            let (log, ts_ns) = {
                let mut c = self.c.lock().unwrap();
                c.lines += 1;
                (c.log.clone(), self.now_ms() * 1_000_000 + c.lines)
            };
            let log = log.expect("the task follows the log");
            log.send(Ok(LogLine {
                ts_ns,
                stream: LogStream::Stdout,
                text: line.to_string(),
            }))
            .await
            .expect("the task reads the log");
        }

        /// The agent answers a turn with `text` and ends it.
        async fn reply(&self, text: &str) {
            self.say(json!({"type": "system", "subtype": "init", "session_id": "conv-1"}))
                .await;
            self.say(json!({"type": "assistant", "session_id": "conv-1",
                "message": {"id": "m", "role": "assistant", "content": [{"type": "text", "text": text}]}}))
                .await;
            self.say(
                json!({"type": "result", "subtype": "success", "is_error": false,
                "session_id": "conv-1", "usage": {"input_tokens": 3, "output_tokens": 2}}),
            )
            .await;
        }

        /// The agent's process ends with `code`: the container stops.
        fn exit(&self, code: i64) {
            let mut c = self.c.lock().unwrap();
            c.running = false;
            c.exit_code = Some(code);
            c.log = None;
        }

        /// The lines the task writes to the agent's stdin.
        fn stdin(&self) -> Lines<BufReader<DuplexStream>> {
            let end = self.c.lock().unwrap().stdin.take();
            BufReader::new(end.expect("the task attached stdin")).lines()
        }
    }

    #[async_trait]
    impl Runtime for Scripted {
        async fn ping(&self) -> Result<()> {
            Ok(())
        }
        async fn image_home(&self, _image: &str) -> Result<Option<String>> {
            Ok(Some("/home/agent".into()))
        }
        async fn create(&self, _spec: &WorkerSpec) -> Result<String> {
            self.call("create");
            self.c.lock().unwrap().created = true;
            Ok("c1".into())
        }
        async fn start(&self, _sid: &str, _container: &str) -> Result<()> {
            self.call("start");
            self.c.lock().unwrap().running = true;
            Ok(())
        }
        async fn attach_stdin(&self, _sid: &str, _container: &str) -> Result<StdinWriter> {
            let (task, test) = tokio::io::duplex(1 << 16);
            self.c.lock().unwrap().stdin = Some(test);
            Ok(Box::pin(task))
        }
        fn follow_logs(
            &self,
            _container: &str,
            _since: i64,
        ) -> mpsc::Receiver<Result<LogLine, String>> {
            let (tx, rx) = mpsc::channel(64);
            let mut c = self.c.lock().unwrap();
            if c.running {
                c.log = Some(tx);
            }
            rx
        }
        async fn inspect(&self, _container: &str) -> Result<Option<ContainerStatus>> {
            let c = self.c.lock().unwrap();
            Ok(c.created.then(|| ContainerStatus {
                id: "c1".into(),
                running: c.running,
                exit_code: c.exit_code,
                oom_killed: false,
            }))
        }
        async fn exec_detached(
            &self,
            _sid: &str,
            _container: &str,
            cmd: Vec<String>,
        ) -> Result<()> {
            self.call(&format!("exec {}", cmd.join(" ")));
            Ok(())
        }
        async fn exec_io(
            &self,
            _sid: &str,
            _container: &str,
            _cmd: Vec<String>,
            _stdin: Option<&mut (dyn AsyncRead + Unpin + Send)>,
            _stdout: &mut (dyn for<'b> FnMut(&'b [u8]) -> std::io::Result<()> + Send),
        ) -> Result<ExecEnd> {
            Ok(ExecEnd {
                code: Some(0),
                stderr: String::new(),
            })
        }
        async fn stop(&self, _sid: &str, _container: &str, _grace: Duration) -> Result<()> {
            self.call("stop");
            self.exit(143);
            Ok(())
        }
        async fn rejoin(&self, _sid: &str) -> Result<()> {
            Ok(())
        }
        async fn release_network(&self, _sid: &str) -> Result<()> {
            Ok(())
        }
        async fn remove_session(&self, _sid: &str) -> Result<RemovedObjects> {
            Ok(RemovedObjects::default())
        }
        async fn remove_relay(&self) -> Result<()> {
            Ok(())
        }
        fn now_ms(&self) -> i64 {
            *self.clock.borrow()
        }
        async fn sleep_until_ms(&self, at_ms: i64) {
            let mut now = self.clock.subscribe();
            let _ = now.wait_for(|now| *now >= at_ms).await;
        }
    }

    /// The session's events as the engine publishes them.
    struct Watch {
        rx: broadcast::Receiver<SessionEvent>,
        seen: Vec<EventBody>,
    }

    impl Watch {
        /// The first event from here on that `what` is, within 10 s.
        async fn until(&mut self, name: &str, what: impl Fn(&EventBody) -> bool) -> EventBody {
            loop {
                let ev = tokio::time::timeout(Duration::from_secs(10), self.rx.recv()).await;
                let Ok(Ok(ev)) = ev else {
                    panic!("no {name}; saw {:#?}", self.seen);
                };
                self.seen.push(ev.body.clone());
                if what(&ev.body) {
                    return ev.body;
                }
            }
        }

        /// Lets the task do what it would do now (its store writes take real time).
        async fn settle(&mut self) {
            while let Ok(Ok(ev)) =
                tokio::time::timeout(Duration::from_millis(200), self.rx.recv()).await
            {
                self.seen.push(ev.body);
            }
        }
    }

    fn state(want: SessionState) -> impl Fn(&EventBody) -> bool {
        move |b| matches!(b, EventBody::State { state, .. } if *state == want)
    }

    fn detail(b: &EventBody) -> &str {
        match b {
            EventBody::State { detail, .. } => detail.as_deref().unwrap_or_default(),
            other => panic!("not a state: {other:?}"),
        }
    }

    struct Test {
        engine: Engine,
        rt: Scripted,
        watch: Watch,
        id: String,
        _dir: tempfile::TempDir,
    }

    /// An engine on the scripted runtime with `config` (after an agent `scripted`), and
    /// a session of it that took its first prompt, "hello".
    async fn session(config: &str) -> Test {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = Store::connect(&url).await.expect("store");
        let text = format!("[agents.scripted]\nimage = \"img\"\n{config}");
        let cfg = Config::from_str(&text, "test.toml", dir.path(), &|_| None).expect("config");
        let rt = Scripted::new();
        let engine = Engine::new(store, rt.clone(), Arc::new(cfg));
        let mut watch = Watch {
            rx: engine.subscribe(),
            seen: Vec::new(),
        };
        let s = engine
            .new_session(NewSession {
                prompt: "hello".into(),
                owner: "alice".into(),
                frontend: "console".into(),
                room: "console".into(),
                ..Default::default()
            })
            .await
            .expect("new session");
        watch
            .until("the first turn", state(SessionState::Running))
            .await;
        Test {
            engine,
            rt,
            watch,
            id: s.id,
            _dir: dir,
        }
    }

    async fn next_line(stdin: &mut Lines<BufReader<DuplexStream>>) -> Value {
        let line = stdin
            .next_line()
            .await
            .expect("read stdin")
            .expect("a line");
        serde_json::from_str(&line).expect("a JSON line")
    }

    #[tokio::test]
    async fn a_waiting_session_stops_once_idle_for_its_timeout_and_a_prompt_restarts_the_count() {
        let mut t = session("[sessions]\nidle_timeout = \"30m\"\n").await;
        let mut stdin = t.rt.stdin();
        assert_eq!(next_line(&mut stdin).await["message"]["content"], "hello");
        t.rt.reply("hi").await;
        t.watch
            .until("the turn's end", state(SessionState::Waiting))
            .await;

        // Twenty minutes on, a prompt: a turn, and the count starts again at its end.
        t.rt.advance(20 * MINUTE).await;
        t.engine
            .prompt(&t.id, "again", "alice")
            .await
            .expect("prompt");
        assert_eq!(next_line(&mut stdin).await["message"]["content"], "again");
        t.rt.reply("hi again").await;
        t.watch
            .until("the second turn's end", state(SessionState::Waiting))
            .await;
        let waiting_since = t.rt.now_ms();

        t.rt.advance(30 * MINUTE - Duration::from_millis(1)).await;
        t.watch.settle().await;
        assert_eq!(
            t.rt.when("stop"),
            None,
            "stopped before 30 minutes of idleness"
        );
        t.rt.advance(Duration::from_millis(1)).await;
        let stopped = t
            .watch
            .until("the idle stop", state(SessionState::Stopped))
            .await;
        assert_eq!(detail(&stopped), "idle for 30m; `resume` starts it again");
        assert_eq!(t.rt.when("stop"), Some(waiting_since + 30 * 60_000));
    }

    #[tokio::test]
    async fn a_working_session_is_not_idle_but_stops_at_its_maximum_lifetime() {
        let mut t = session("[sessions]\nidle_timeout = \"10m\"\nmax_lifetime = \"1h\"\n").await;
        let started = t.rt.when("start").expect("started");
        // The first turn never ends: running is not idle.
        t.rt.advance(60 * MINUTE - Duration::from_millis(1)).await;
        t.watch.settle().await;
        assert_eq!(t.rt.when("stop"), None, "stopped a working session early");
        t.rt.advance(Duration::from_millis(1)).await;
        let stopped = t
            .watch
            .until("the lifetime stop", state(SessionState::Stopped))
            .await;
        assert_eq!(
            detail(&stopped),
            "it reached the maximum lifetime of 1h (sessions.max_lifetime)"
        );
        assert_eq!(t.rt.when("stop"), Some(started + 60 * 60_000));
    }

    /// A prompt sent while a turn runs is said to wait, with how many are before it,
    /// and runs in order once the turn ends; one sent to a free agent starts at once.
    #[tokio::test]
    async fn a_prompt_sent_during_a_turn_is_said_to_wait_and_runs_after_it() {
        let mut t = session("").await;
        let mut stdin = t.rt.stdin();
        assert_eq!(next_line(&mut stdin).await["message"]["content"], "hello");
        for text in ["second", "third"] {
            t.engine.prompt(&t.id, text, "alice").await.expect("prompt");
        }
        let notice = |b: &EventBody| match b {
            EventBody::Notice { text } if text.starts_with("⏳") => Some(text.clone()),
            _ => None,
        };
        t.watch
            .until("the first notice", |b| notice(b).is_some())
            .await;
        t.watch
            .until("the second notice", |b| notice(b).is_some())
            .await;
        let said: Vec<String> = t.watch.seen.iter().filter_map(notice).collect();
        assert_eq!(
            said,
            [
                "⏳ queued: it runs when the current turn ends",
                "⏳ queued: it runs after the current turn and 1 prompt before it"
            ]
        );
        t.rt.reply("one").await;
        assert_eq!(next_line(&mut stdin).await["message"]["content"], "second");
        t.rt.reply("two").await;
        assert_eq!(next_line(&mut stdin).await["message"]["content"], "third");
        t.rt.reply("three").await;
        t.watch
            .until("the last turn's end", state(SessionState::Waiting))
            .await;
        // The agent is free: the next prompt starts without a word.
        t.engine
            .prompt(&t.id, "fourth", "alice")
            .await
            .expect("prompt");
        assert_eq!(next_line(&mut stdin).await["message"]["content"], "fourth");
        t.watch.settle().await;
        assert_eq!(t.watch.seen.iter().filter_map(notice).count(), 2);
        assert_eq!(
            super::queued_notice(4),
            "⏳ queued: it runs after the current turn and 3 prompts before it"
        );
    }

    /// Twenty prompts at once during a turn: each is told its own place, 1 to 20, and
    /// each runs once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_burst_of_prompts_during_a_turn_gets_each_place_once_and_runs_in_order() {
        let mut t = session("").await;
        let mut stdin = t.rt.stdin();
        next_line(&mut stdin).await;
        let sends: Vec<_> = (0..20)
            .map(|i| {
                let engine = t.engine.clone();
                let id = t.id.clone();
                tokio::spawn(async move { engine.prompt(&id, &format!("p{i}"), "alice").await })
            })
            .collect();
        for s in sends {
            s.await.expect("task").expect("prompt");
        }
        let mut places = Vec::new();
        while places.len() < 20 {
            let b = t
                .watch
                .until("a notice", |b| matches!(b, EventBody::Notice { .. }))
                .await;
            let EventBody::Notice { text } = b else {
                unreachable!()
            };
            places.push(match text.split(" and ").nth(1) {
                Some(rest) => {
                    rest.split(' ')
                        .next()
                        .and_then(|n| n.parse::<i64>().ok())
                        .expect("a count")
                        + 1
                }
                None => 1,
            });
        }
        places.sort();
        assert_eq!(places, (1..=20).collect::<Vec<i64>>());
        // Each runs once, one turn at a time.
        let mut ran = Vec::new();
        for _ in 0..20 {
            t.rt.reply("ok").await;
            let line = next_line(&mut stdin).await;
            ran.push(
                line["message"]["content"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            );
        }
        ran.sort_by_key(|p| p[1..].parse::<u32>().unwrap_or(u32::MAX));
        assert_eq!(ran, (0..20).map(|i| format!("p{i}")).collect::<Vec<_>>());
    }

    fn asks(request: &str, command: &str) -> Value {
        json!({"type": "control_request", "request_id": request, "request":
            {"subtype": "can_use_tool", "tool_name": "Bash", "input": {"command": command}}})
    }

    fn approval(b: &EventBody) -> Option<(&str, Option<Answer>)> {
        match b {
            EventBody::Approval { id, answer, .. } => {
                Some((id.as_str(), answer.as_ref().map(|a| a.answer)))
            }
            _ => None,
        }
    }

    #[tokio::test]
    async fn an_approval_nobody_answers_is_denied_when_its_time_is_up() {
        let mut t = session(
            "permission_mode = \"ask\"\n[sessions]\napproval_timeout = \"10m\"\nidle_timeout = \"1h\"\n",
        )
        .await;
        let mut stdin = t.rt.stdin();
        next_line(&mut stdin).await;
        t.rt.advance(MINUTE).await;
        t.rt.say(asks("r1", "ls")).await;
        t.watch
            .until("the approval", |b| {
                approval(b).is_some_and(|(_, a)| a.is_none())
            })
            .await;
        let waiting = t
            .watch
            .until("the state saying so", state(SessionState::Running))
            .await;
        assert_eq!(detail(&waiting), "waiting for approval: Bash ls");

        // Ten minutes from the request, not from the start of the session.
        t.rt.advance(10 * MINUTE - Duration::from_millis(1)).await;
        t.watch.settle().await;
        assert!(
            !t.watch
                .seen
                .iter()
                .any(|b| approval(b).is_some_and(|(_, a)| a.is_some())),
            "answered early: {:#?}",
            t.watch.seen
        );
        t.rt.advance(Duration::from_millis(1)).await;
        t.watch
            .until("the timeout", |b| {
                approval(b).is_some_and(|(_, a)| a == Some(Answer::Timeout))
            })
            .await;
        let answer = next_line(&mut stdin).await;
        assert_eq!(answer["response"]["request_id"], "r1");
        assert_eq!(answer["response"]["response"]["behavior"], "deny");
        assert_eq!(
            answer["response"]["response"]["message"],
            "Not run: nobody approved it (no answer within 10m)."
        );
    }

    #[tokio::test]
    async fn always_allows_the_tool_for_the_rest_of_the_session_without_asking() {
        let mut t = session("permission_mode = \"ask\"\n").await;
        let mut stdin = t.rt.stdin();
        next_line(&mut stdin).await;
        t.rt.say(asks("r1", "ls")).await;
        t.watch
            .until("the approval", |b| {
                approval(b).is_some_and(|(_, a)| a.is_none())
            })
            .await;
        t.engine
            .answer(&t.id, None, Answer::Always, "bob")
            .await
            .expect("answer");
        let allowed = next_line(&mut stdin).await;
        assert_eq!(allowed["response"]["request_id"], "r1");
        assert_eq!(allowed["response"]["response"]["behavior"], "allow");
        assert_eq!(
            allowed["response"]["response"]["updatedInput"]["command"],
            "ls"
        );

        // The next Bash call is allowed at once: no approval, no one asked.
        t.rt.say(asks("r2", "pwd")).await;
        let allowed = next_line(&mut stdin).await;
        assert_eq!(allowed["response"]["request_id"], "r2");
        assert_eq!(allowed["response"]["response"]["behavior"], "allow");
        t.watch.settle().await;
        let approvals: Vec<_> = t.watch.seen.iter().filter_map(approval).collect();
        assert_eq!(
            approvals.len(),
            2,
            "r1 asked and answered, r2 not asked: {approvals:?}"
        );
    }

    #[tokio::test]
    async fn an_interrupt_ends_the_turn_as_interrupted_and_the_session_waits() {
        let mut t = session("").await;
        let mut stdin = t.rt.stdin();
        next_line(&mut stdin).await;
        t.engine.interrupt(&t.id).await.expect("interrupt");
        let asked = next_line(&mut stdin).await;
        assert_eq!(asked["type"], "control_request");
        assert_eq!(asked["request"]["subtype"], "interrupt");
        // What Claude Code says when its turn is cut short without a terminal reason.
        t.rt.say(json!({"type": "result", "subtype": "error_during_execution", "is_error": true}))
            .await;
        let end = t
            .watch
            .until("the turn's end", |b| {
                matches!(
                    b,
                    EventBody::Agent {
                        event: AgentEvent::TurnEnd { .. }
                    }
                )
            })
            .await;
        let EventBody::Agent {
            event: AgentEvent::TurnEnd { outcome, .. },
        } = end
        else {
            unreachable!()
        };
        assert_eq!(outcome, TurnOutcome::Interrupted);
        t.watch.until("waiting", state(SessionState::Waiting)).await;
    }

    #[tokio::test]
    async fn an_agent_that_exits_fails_the_session_and_its_queued_prompts_are_told() {
        let mut t = session("").await;
        let mut stdin = t.rt.stdin();
        next_line(&mut stdin).await;
        t.engine
            .prompt(&t.id, "later", "alice")
            .await
            .expect("prompt");
        t.watch.settle().await;
        t.rt.exit(3);
        let failed = t
            .watch
            .until("the failure", state(SessionState::Failed))
            .await;
        assert_eq!(detail(&failed), "the agent exited with code 3");
        let notice = t
            .watch
            .until("the notice", |b| matches!(b, EventBody::Notice { .. }))
            .await;
        assert_eq!(
            notice,
            EventBody::Notice {
                text: "1 queued prompt(s) did not run because the session ended; send them again after `resume`".into()
            }
        );
        assert_eq!(t.rt.when("stop"), None);
    }
}
