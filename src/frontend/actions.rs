//! The chat actions every front end shares: who may do what, what a thread command does
//! to its session, and the answer it gets, as a neutral [`Reply`] each front end renders
//! in its own words. Front ends parse what people type (and render); the rules live
//! here, once: a prompt or steering command from someone not allowed is refused (a
//! prompt once per person and thread, so a chatty bystander is not answered every
//! time), reading commands (`status`, `logs`) are open to everyone in the room, and an
//! engine error becomes a reply that says what to do.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;

use tracing::warn;

use crate::command::{Command, NewArgs};
use crate::engine::{Engine, EngineError, NewSession};
use crate::frontend::render;
use crate::store::SessionRecord;

/// Who asks.
#[derive(Debug, Clone)]
pub struct Actor {
    /// The id the session records as owner or prompt author (a Matrix user id, a Discord
    /// user's number, the console's user).
    pub id: String,
    /// How the thread names them ("stopped by ..."): for Discord a mention.
    pub mention: String,
    /// Whether the front end's allow lists let them start and steer sessions.
    pub allowed: bool,
    /// Their roles (Discord's role ids; empty elsewhere), for `sessions.approvers`.
    pub roles: Vec<String>,
}

/// The answer to a chat action.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// Done; the thread's own output shows the effect. `ack` is a short word for a front
    /// end that must answer something (a Discord interaction).
    Done { ack: &'static str },
    /// Not allowed: the front end says which of its settings lets people in.
    Refused,
    /// A thread command sent outside a session's thread (the command's name).
    NotInThread(&'static str),
    /// The command could not be done: what is wrong and how to fix it.
    Problem(String),
    /// The session's status.
    Status(Box<SessionRecord>),
    /// A file to send: the session's transcript, a workspace file.
    File { name: String, data: Vec<u8> },
}

impl From<EngineError> for Reply {
    fn from(e: EngineError) -> Reply {
        Reply::Problem(e.to_string())
    }
}

/// A front end's chat actions over the engine.
pub struct Chat {
    engine: Engine,
    frontend: &'static str,
    refused: Refusals,
    /// The largest file this front end can send (`get`).
    upload_limit: u64,
    /// The web link of a session's thread (for a pull request's description).
    link: Option<ThreadLink>,
}

/// Makes the web link of a session's thread from the session and its thread's id.
pub type ThreadLink = std::sync::Arc<dyn Fn(&SessionRecord, &str) -> Option<String> + Send + Sync>;

/// A file attached to a message, not yet downloaded.
pub struct Attachment {
    pub name: String,
    /// What the platform says it weighs, when it says.
    pub size: Option<u64>,
    /// Starts the download: a stream of its bytes.
    pub open: Pin<Box<dyn Future<Output = Result<Download, String>> + Send>>,
}

/// An attachment's bytes as they arrive.
pub type Download = Pin<Box<dyn tokio::io::AsyncRead + Send>>;

/// The (person, thread) pairs already told they may not steer there: a bystander's
/// messages in a thread are refused once, not answered one by one.
#[derive(Debug, Default)]
pub struct Refusals(Mutex<HashSet<(String, String)>>);

impl Refusals {
    /// True the first time `who` is refused in `thread`, false after.
    pub fn first(&self, who: &str, thread: &str) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert((who.to_string(), thread.to_string()))
    }
}

impl Chat {
    pub fn new(engine: Engine, frontend: &'static str) -> Chat {
        Chat {
            engine,
            frontend,
            refused: Refusals::default(),
            upload_limit: u64::MAX,
            link: None,
        }
    }

    /// How this front end links to a thread.
    pub fn with_thread_link(mut self, link: ThreadLink) -> Chat {
        self.link = Some(link);
        self
    }

    /// The web link of the session's thread on this front end, if it has one.
    async fn thread_link(&self, id: &str) -> Option<String> {
        let link = self.link.as_ref()?;
        let store = self.engine.store();
        let binding = store.binding(id, self.frontend).await.ok()??;
        let s = store.session(id).await.ok()??;
        link(&s, &binding.thread_ref)
    }

    /// The largest file this front end can send; a bigger `get` is refused with its size.
    pub fn with_upload_limit(mut self, bytes: u64) -> Chat {
        self.upload_limit = bytes;
        self
    }

    /// A message with files in a session's thread: each file goes into the workspace's
    /// inbox (one over `sessions.max_attachment_size` is refused without downloading
    /// it), then the text, with a line naming each file's path, is the next prompt.
    /// `None` when the thread is no session's. The replies say what was refused.
    pub async fn prompt_with_files(
        &self,
        actor: &Actor,
        thread: &str,
        text: &str,
        files: Vec<Attachment>,
    ) -> Option<(String, Vec<Reply>)> {
        if files.is_empty() {
            let (session, reply) = self.prompt(actor, thread, text).await?;
            return Some((session, reply.into_iter().collect()));
        }
        let session = self.session_of(thread).await?;
        if !actor.allowed {
            let first = self.refused.first(&actor.id, thread);
            return Some((
                session,
                first.then_some(Reply::Refused).into_iter().collect(),
            ));
        }
        let limit = self.engine.config().sessions.max_attachment_bytes.max(0) as u64;
        let mut replies = Vec::new();
        let mut stored = Vec::new();
        for f in files {
            if let Some(size) = f.size.filter(|s| *s > limit) {
                replies.push(Reply::Problem(
                    EngineError::TooLarge {
                        what: f.name.clone(),
                        size: crate::files::human_size(size),
                        limit: format!(
                            "sessions.max_attachment_size ({})",
                            crate::files::human_size(limit)
                        ),
                        hint: "; send a smaller file, or split it",
                    }
                    .to_string(),
                ));
                continue;
            }
            let put = match f.open.await {
                Ok(reader) => self
                    .engine
                    .put_file(&session, &f.name, reader)
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(format!("cannot download {}: {e}", f.name)),
            };
            match put {
                Ok(path) => stored.push(path),
                Err(e) => replies.push(Reply::Problem(e)),
            }
        }
        if stored.is_empty() && text.trim().is_empty() {
            return Some((session, replies));
        }
        let prompt = crate::files::attachment_prompt(text, &stored);
        if let Err(e) = self.engine.prompt(&session, &prompt, &actor.id).await {
            replies.push(e.into());
        }
        Some((session, replies))
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The session a thread of this front end shows, if any. A store error is logged
    /// and counts as none.
    pub async fn session_of(&self, thread: &str) -> Option<String> {
        match self.engine.session_for_thread(self.frontend, thread).await {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, frontend = self.frontend, "cannot look up a thread's session");
                None
            }
        }
    }

    /// The sessions started in a room (channel), oldest first.
    pub async fn sessions_in(&self, room: &str) -> Result<Vec<SessionRecord>, Reply> {
        self.engine
            .sessions_in(self.frontend, room)
            .await
            .map_err(|e| Reply::Problem(e.to_string()))
    }

    /// A message in `thread` that is not a command: the next prompt of the thread's
    /// session. `None` when the thread is no session's (the message is not for us).
    /// Otherwise the session, and what to answer (nothing when the prompt was taken, or
    /// a refusal already given once to this person in this thread).
    pub async fn prompt(
        &self,
        actor: &Actor,
        thread: &str,
        text: &str,
    ) -> Option<(String, Option<Reply>)> {
        let session = self.session_of(thread).await?;
        // `approve`, `always` or `deny` alone answers an approval that waits; with
        // none waiting, it is a prompt like any other.
        if let Some(answer) = crate::approval::Answer::from_word(text)
            && self.waits_for_approval(&session).await
        {
            let reply = self.answer(actor, &session, None, answer).await;
            return Some((session, Some(reply)));
        }
        if !actor.allowed {
            let first = self.refused.first(&actor.id, thread);
            return Some((session, first.then_some(Reply::Refused)));
        }
        let reply = self
            .engine
            .prompt(&session, text, &actor.id)
            .await
            .err()
            .map(Reply::from);
        Some((session, reply))
    }

    /// Whether an approval of the session waits for an answer.
    async fn waits_for_approval(&self, session: &str) -> bool {
        match self.engine.store().waiting_approval(session).await {
            Ok(waiting) => waiting.is_some(),
            Err(e) => {
                warn!(session, error = %e, "cannot read the session's approvals");
                false
            }
        }
    }

    /// Answers an approval of `session` (`approval` names it, as a button does; else
    /// the oldest that waits), if `actor` may: `sessions.approvers`, or when that is
    /// empty, the session's requester and allowed people.
    pub async fn answer(
        &self,
        actor: &Actor,
        session: &str,
        approval: Option<&str>,
        answer: crate::approval::Answer,
    ) -> Reply {
        let s = match self.engine.session(session).await {
            Ok(s) => s,
            Err(e) => return e.into(),
        };
        let approvers = &self.engine.config().sessions.approvers;
        let who = crate::approval::Answerer {
            id: &actor.id,
            roles: &actor.roles,
            allowed: actor.allowed,
        };
        if !crate::approval::may_answer(approvers, &s.owner, who) {
            return Reply::Problem(if approvers.is_empty() {
                "only the session's requester and the people allowed to steer sessions may answer its approvals".into()
            } else {
                "only the people and roles in sessions.approvers may answer approvals".into()
            });
        }
        match self
            .engine
            .answer(session, approval, answer, &actor.mention)
            .await
        {
            Ok(_) => Reply::Done {
                ack: match answer {
                    crate::approval::Answer::Approve => "✅ approved",
                    crate::approval::Answer::Always => "♾️ approved for this session",
                    _ => "❌ denied",
                },
            },
            Err(e) => e.into(),
        }
    }

    /// Whether `actor` may start a session; the refusal otherwise.
    pub fn may_start(&self, actor: &Actor) -> Result<(), Reply> {
        if actor.allowed {
            Ok(())
        } else {
            Err(Reply::Refused)
        }
    }

    /// The engine's request for `new`, made the same way on every front end.
    pub fn new_request(
        &self,
        args: NewArgs,
        actor: &Actor,
        room: &str,
        id: Option<String>,
        thread: Option<String>,
    ) -> NewSession {
        NewSession {
            agent: args.agent,
            model: args.model,
            image: args.image,
            repo: args.repo,
            branch: args.branch,
            idle_timeout: args.timeout,
            prompt: args.prompt,
            owner: actor.id.clone(),
            frontend: self.frontend.into(),
            room: room.into(),
            id,
            thread,
        }
    }

    /// A command that acts on the session of the thread it was sent in (`stop`,
    /// `interrupt`, `resume`, `status`, `logs`, `diff`, `push`, `pr`). Returns the
    /// session, when the thread has one, and the reply.
    pub async fn thread_command(
        &self,
        actor: &Actor,
        thread: Option<&str>,
        cmd: &Command,
    ) -> (Option<String>, Reply) {
        let name = thread_command_name(cmd);
        let session = match thread {
            Some(t) => self.session_of(t).await,
            None => None,
        };
        let Some(id) = session else {
            return (None, Reply::NotInThread(name));
        };
        let reply = self.on_session(actor, &id, cmd).await;
        (Some(id), reply)
    }

    /// Whether `actor` may send `cmd` to a session: everyone may read (`status`,
    /// `logs`); only allowed people steer (and take files out).
    pub fn may_steer(&self, actor: &Actor, cmd: &Command) -> Result<(), Reply> {
        // Who may answer an approval is `answer`'s to say.
        let reading = matches!(cmd, Command::Status | Command::Logs | Command::Answer(_));
        if reading || actor.allowed {
            Ok(())
        } else {
            Err(Reply::Refused)
        }
    }

    /// A thread command on a known session (the console's current one, a button's).
    pub async fn on_session(&self, actor: &Actor, id: &str, cmd: &Command) -> Reply {
        if let Err(r) = self.may_steer(actor, cmd) {
            return r;
        }
        let engine = &self.engine;
        let done =
            |r: Result<(), EngineError>, ack| r.map_or_else(Reply::from, |()| Reply::Done { ack });
        match cmd {
            Command::Stop => done(engine.stop(id, &actor.mention).await, "⏹ stopped"),
            Command::Interrupt => done(engine.interrupt(id).await, "⏸ interrupting"),
            Command::Resume => done(engine.resume(id, &actor.mention).await, "▶ resuming"),
            Command::Status => match engine.session_report(id).await {
                Ok(s) => Reply::Status(Box::new(s)),
                Err(e) => e.into(),
            },
            Command::Logs => match self.transcript(id).await {
                Ok((name, text)) => Reply::File {
                    name,
                    data: text.into_bytes(),
                },
                Err(e) => e.into(),
            },
            Command::Get { path } => self.get(id, path, self.upload_limit).await,
            Command::Answer(answer) => self.answer(actor, id, None, *answer).await,
            Command::Diff => match engine.diff(id, self.upload_limit).await {
                Ok(Some((name, data))) => Reply::File { name, data },
                Ok(None) => Reply::Problem(format!(
                    "no changes: session {id}'s workspace is as it began"
                )),
                Err(e) => e.into(),
            },
            Command::Push => done(engine.push(id).await.map(drop), "⬆ pushed"),
            Command::Pr => {
                let link = self.thread_link(id).await;
                done(
                    engine.pr(id, link).await.map(drop),
                    "🔀 pull request opened",
                )
            }
            other => Reply::Problem(format!(
                "`{}` is not a thread command",
                thread_command_name(other)
            )),
        }
    }

    /// `get PATH`: a workspace file (a folder as `.tar.gz`) of at most `limit` bytes,
    /// what this front end can upload; bigger is refused with its size.
    pub async fn get(&self, id: &str, path: &str, limit: u64) -> Reply {
        if path.trim().is_empty() {
            return Reply::Problem(
                "`get` needs a path in the workspace, like `get src/main.rs` or `get .`".into(),
            );
        }
        let mut data = Vec::new();
        let got = self
            .engine
            .get_file(id, path, limit, &mut |chunk: &[u8]| {
                data.extend_from_slice(chunk);
                Ok(())
            })
            .await;
        match got {
            Ok((name, _)) => Reply::File { name, data },
            Err(e) => e.into(),
        }
    }

    /// A session's full transcript (Markdown) and the file name it goes out under.
    pub async fn transcript(&self, id: &str) -> Result<(String, String), EngineError> {
        let s = self.engine.session(id).await?;
        let text = render::transcript(self.engine.store(), &s).await?;
        Ok((format!("firstmate-{id}-transcript.md"), text))
    }
}

/// The name people type for a thread command.
pub fn thread_command_name(cmd: &Command) -> &'static str {
    match cmd {
        Command::Stop => "stop",
        Command::Interrupt => "interrupt",
        Command::Status => "status",
        Command::Logs => "logs",
        Command::Resume => "resume",
        Command::Diff => "diff",
        Command::Push => "push",
        Command::Pr => "pr",
        Command::New(_) => "new",
        Command::List => "list",
        Command::Help => "help",
        Command::Use { .. } => "use",
        Command::Prompt(_) => "prompt",
        Command::Get { .. } => "get",
        Command::Answer(a) => match a {
            crate::approval::Answer::Approve => "approve",
            crate::approval::Answer::Always => "always",
            _ => "deny",
        },
        Command::Put { .. } => "put",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_burst_of_refused_messages_gets_one_refusal_per_person_and_thread() {
        let refusals = Arc::new(Refusals::default());
        let handles: Vec<_> = (0..64)
            .map(|i| {
                let r = refusals.clone();
                std::thread::spawn(move || {
                    r.first(&format!("@p{}:x", i % 4), &format!("$t{}", (i / 4) % 2))
                })
            })
            .collect();
        let firsts = handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .filter(|first| *first)
            .count();
        // 4 people x 2 threads, each pair refused exactly once.
        assert_eq!(firsts, 8);
        assert!(!refusals.first("@p0:x", "$t0"));
        assert!(refusals.first("@p0:x", "$t9"));
    }

    #[test]
    fn thread_commands_have_the_names_people_type() {
        for (cmd, name) in [
            (Command::Stop, "stop"),
            (Command::Interrupt, "interrupt"),
            (Command::Status, "status"),
            (Command::Logs, "logs"),
            (Command::Resume, "resume"),
            (Command::Diff, "diff"),
            (Command::Push, "push"),
            (Command::Pr, "pr"),
        ] {
            assert_eq!(thread_command_name(&cmd), name);
            assert_eq!(crate::command::parse_line(name), Ok(cmd));
        }
    }
}
