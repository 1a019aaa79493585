//! The console front end: the chat grammar on standard input, every session's output on
//! standard output, each line prefixed with `[<session id>] `. For trying firstmate
//! without a chat account, and for scripts. It writes through a [`Sink`]: the process's
//! own stdout and stderr ([`ProcessOutput`]), or a client of `firstmate run`'s admin
//! socket (`frontend::admin`).
//!
//! Lines are taken in order: a line read while a turn runs waits for that turn to end
//! (except `interrupt`, which acts at once). At end of input the console waits until none
//! of its sessions is working, then returns; containers stay for the next console, which
//! first shows what its sessions printed meanwhile.

use std::collections::HashMap;
use std::future::Future;
use std::io::Write;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::{broadcast, mpsc};

use crate::command::{self, Command};
use crate::engine::{Engine, EngineError};
use crate::event::{EventBody, SessionEvent, SessionState};
use crate::frontend::actions::{Actor, Chat, Reply};
use crate::frontend::render;
use crate::store::SessionRecord;

pub const FRONTEND: &str = "console";
const ROOM: &str = "console";

/// How a console run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every line was a valid command.
    Clean,
    /// At least one line was refused (bad command, unknown agent...).
    HadErrors,
    /// Nobody reads the output any more (a client of the admin socket went away): the
    /// console stopped early, and what it could not write stays undelivered.
    Left,
}

impl Outcome {
    /// The console's exit code: 0 when every line was accepted, 2 when one was refused,
    /// 1 when it stopped early.
    pub fn exit_code(self) -> u8 {
        match self {
            Outcome::Clean => 0,
            Outcome::HadErrors => 2,
            Outcome::Left => 1,
        }
    }
}

/// Which of the console's two streams a text goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Session output and answers: standard output.
    Out,
    /// Refused lines: standard error.
    Err,
}

/// Where a console writes.
pub trait Sink: Send + Sync {
    /// Writes `text` (whole lines) to `stream`, and returns once it is written. An error
    /// means nobody reads any more: the console stops, and does not count as delivered
    /// what it could not write.
    fn write<'a>(
        &'a self,
        stream: Stream,
        text: &'a str,
    ) -> Pin<Box<dyn Future<Output = std::io::Result<()>> + Send + 'a>>;

    /// Whether the reader is known to be gone without a write (a client that closed its
    /// connection): the console then stops at its next safe point, between two lines,
    /// instead of being dropped in the middle of one.
    fn is_closed(&self) -> bool {
        false
    }
}

/// The process's own standard output and standard error.
pub struct ProcessOutput;

impl Sink for ProcessOutput {
    fn write<'a>(
        &'a self,
        stream: Stream,
        text: &'a str,
    ) -> Pin<Box<dyn Future<Output = std::io::Result<()>> + Send + 'a>> {
        Box::pin(async move {
            match stream {
                Stream::Out => {
                    let mut out = std::io::stdout().lock();
                    out.write_all(text.as_bytes())?;
                    out.flush()
                }
                // A closed stderr does not stop the console (nor did it ever).
                Stream::Err => {
                    let mut err = std::io::stderr().lock();
                    let _ = err.write_all(text.as_bytes());
                    let _ = err.flush();
                    Ok(())
                }
            }
        })
    }
}

/// A console's sink, and whether it failed (then nothing more is written).
#[derive(Clone)]
struct Output {
    sink: Arc<dyn Sink>,
    gone: Arc<AtomicBool>,
}

impl Output {
    /// Writes `text`; false when nobody reads any more.
    async fn write(&self, stream: Stream, text: &str) -> bool {
        if self.gone() {
            return false;
        }
        match self.sink.write(stream, text).await {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!(error = %e, "the console's output is gone");
                self.gone.store(true, Ordering::SeqCst);
                false
            }
        }
    }

    fn gone(&self) -> bool {
        self.gone.load(Ordering::SeqCst) || self.sink.is_closed()
    }
}

/// Aborts a task when dropped: a console dropped mid-run (its client left) stops its
/// printer at once.
pub(crate) struct AbortOnDrop(pub(crate) tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub struct Console {
    engine: Engine,
    chat: Chat,
    owner: String,
    current: Option<String>,
    transcript_dir: PathBuf,
    had_errors: bool,
    out: Output,
}

impl Console {
    /// A console acting for `owner`; `logs` writes transcripts into `transcript_dir`;
    /// everything it prints goes to `sink`.
    pub fn new(
        engine: Engine,
        owner: String,
        transcript_dir: PathBuf,
        sink: Arc<dyn Sink>,
    ) -> Console {
        Console {
            chat: Chat::new(engine.clone(), FRONTEND),
            engine,
            owner,
            current: None,
            transcript_dir,
            had_errors: false,
            out: Output {
                sink,
                gone: Arc::new(AtomicBool::new(false)),
            },
        }
    }

    /// Runs until end of input, then waits for the console's sessions to settle.
    pub async fn run<R>(mut self, input: R) -> anyhow::Result<Outcome>
    where
        R: tokio::io::AsyncRead + Unpin + Send + 'static,
    {
        let events = self.engine.subscribe();
        let (done_tx, done_rx) = mpsc::channel::<()>(1);
        let (flush_tx, flush_rx) = mpsc::channel::<tokio::sync::oneshot::Sender<()>>(1);
        let mut printer = AbortOnDrop(tokio::spawn(print_events(
            self.engine.clone(),
            self.out.clone(),
            events,
            flush_rx,
            done_rx,
        )));

        // The current session of a console started again: its newest one.
        let mine = self.my_sessions().await?;
        self.current = mine.first().map(|s| s.id.clone());

        // Read input on its own task, so `interrupt` can act while a turn runs. Every
        // line goes to `lines`, in order; an interrupt (and an answer to an approval,
        // and `stop`) is also announced on `urgent` at once, for the main loop to act on
        // while it waits for a turn.
        let (line_tx, mut line_rx) = mpsc::unbounded_channel::<(usize, Input)>();
        let (intr_tx, mut intr_rx) = mpsc::unbounded_channel::<(usize, String)>();
        tokio::spawn(async move {
            let mut input = BufReader::new(input);
            let mut index = 0;
            loop {
                let line = read_line(&mut input).await;
                let last = matches!(line, None | Some(Input::Unreadable(_)));
                let Some(line) = line else { break };
                if let Input::Line(text) = &line
                    && matches!(
                        command::parse_line(text),
                        Ok(Command::Interrupt | Command::Answer(_) | Command::Stop)
                    )
                {
                    let _ = intr_tx.send((index, text.clone()));
                }
                if line_tx.send((index, line)).is_err() || last {
                    break;
                }
                index += 1;
            }
        });

        // Interrupts (and answers) already acted on while waiting for a turn, by line
        // index; answers and `stop`s read ahead, waiting for an approval to act on.
        let mut done = std::collections::HashSet::new();
        let mut held = std::collections::VecDeque::new();
        while let Some((index, input)) = line_rx.recv().await {
            if self.out.gone() {
                return Ok(Outcome::Left);
            }
            let line = match input {
                Input::Line(line) => line,
                Input::NotUtf8 => {
                    self.error(format!(
                        "line {}: not UTF-8 text, skipped; the console reads UTF-8 lines \
                         (convert the input first, e.g. with `iconv -t UTF-8`)",
                        index + 1
                    ))
                    .await;
                    continue;
                }
                Input::Unreadable(e) => {
                    self.error(format!(
                        "cannot read line {} of the input: {e}; the lines after it are not read",
                        index + 1
                    ))
                    .await;
                    break;
                }
            };
            let parsed = command::parse_line(&line);
            match parsed {
                Ok(Command::Interrupt) => {
                    if !done.remove(&index) {
                        self.interrupt_now().await;
                    }
                }
                // A prompt is stored at once (the engine runs it when the turn before
                // it ends); every other command waits for the turn, but an interrupt
                // read meanwhile acts at once.
                Ok(Command::Prompt(_)) => self.handle(&line).await,
                _ => {
                    self.wait_idle(index, &mut intr_rx, &mut done, &mut held)
                        .await?;
                    held.retain(|(k, _)| *k != index);
                    if self.out.gone() {
                        return Ok(Outcome::Left);
                    }
                    if done.remove(&index) {
                        // An answer or `stop` acted on while the turn waited for it.
                        flush(&flush_tx).await;
                        continue;
                    }
                    // What the turn printed comes before this command's answer.
                    flush(&flush_tx).await;
                    self.handle(&line).await;
                }
            }
            // Let the printer show what the line caused before the next one.
            flush(&flush_tx).await;
        }
        let mut none = std::collections::HashSet::new();
        let (_, mut closed) = mpsc::unbounded_channel();
        self.wait_idle(usize::MAX, &mut closed, &mut none, &mut Default::default())
            .await?;
        flush(&flush_tx).await;
        drop(done_tx);
        let _ = (&mut printer.0).await;
        Ok(if self.out.gone() {
            Outcome::Left
        } else if self.had_errors {
            Outcome::HadErrors
        } else {
            Outcome::Clean
        })
    }

    async fn my_sessions(&self) -> anyhow::Result<Vec<SessionRecord>> {
        Ok(self.engine.sessions_in(FRONTEND, ROOM).await?)
    }

    /// Waits while a session of this console works (starting, running, or holding a
    /// prompt not yet taken). A queued session does not count: it may wait for a slot
    /// that only a later line frees; nor does a turn that waits for an approval. An
    /// interrupt read after line `index` acts at once and is noted in `done`, as does
    /// an answer (or `stop`) once an approval of the current session waits.
    async fn wait_idle(
        &mut self,
        index: usize,
        urgent: &mut mpsc::UnboundedReceiver<(usize, String)>,
        done: &mut std::collections::HashSet<usize>,
        held: &mut std::collections::VecDeque<(usize, String)>,
    ) -> anyhow::Result<()> {
        let mut events = self.engine.subscribe();
        // Answers and `stop`s read ahead (`held`): acted on at once while an approval of
        // the current session waits (they would wait for the turn, and the turn for
        // them); otherwise they keep their place in line.
        loop {
            if !held.is_empty() && self.approval_waits().await {
                if let Some((k, line)) = held.pop_front() {
                    done.insert(k);
                    self.handle(&line).await;
                }
                continue;
            }
            let mut busy = false;
            for s in self.my_sessions().await? {
                let working = match s.state {
                    SessionState::Starting | SessionState::Running => true,
                    // A prompt is taken and its turn recorded in one transaction: when
                    // none is pending any more, read the state again, after the count.
                    SessionState::Waiting => {
                        self.engine.store().pending_prompts(&s.id).await? > 0
                            || matches!(
                                self.engine.session(&s.id).await?.state,
                                SessionState::Starting | SessionState::Running
                            )
                    }
                    _ => false,
                };
                // A turn that waits for a person's approval is not waited for: the
                // answer may be a line still to come, or another console's.
                let working = working && !self.waits_for_answer(&s.id).await;
                tracing::trace!(session = %s.id, state = %s.state, working, "waiting for the turn");
                busy |= working || self.engine.is_settling(&s.id);
            }
            if !busy {
                tracing::debug!(line = index, "no session of this console is working");
                return Ok(());
            }
            if self.out.gone() {
                tracing::debug!(line = index, "the console's reader left; not waiting");
                return Ok(());
            }
            tokio::select! {
                Some((k, line)) = urgent.recv() => {
                    // Lines before this one were handled in order already; an interrupt
                    // on this line is the main loop's.
                    let interrupt = matches!(command::parse_line(&line), Ok(Command::Interrupt));
                    if interrupt && k > index {
                        done.insert(k);
                        self.interrupt_now().await;
                    } else if !interrupt && k >= index {
                        held.push_back((k, line));
                    }
                }
                _ = events.recv() => {}
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            }
        }
    }

    /// Whether an approval of the current session waits for an answer.
    async fn approval_waits(&self) -> bool {
        match self.current.clone() {
            Some(id) => self.waits_for_answer(&id).await,
            None => false,
        }
    }

    /// Whether an approval of session `id` waits for an answer.
    async fn waits_for_answer(&self, id: &str) -> bool {
        self.engine
            .store()
            .waiting_approval(id)
            .await
            .is_ok_and(|waiting| waiting.is_some())
    }

    /// Reports a refused line on stderr. Messages quote the user's input (a session
    /// id, an agent or image name): each overlong word is cut, see [`cut_long_words`].
    async fn error(&mut self, msg: impl std::fmt::Display) {
        self.had_errors = true;
        let text = format!("firstmate: {}\n", cut_long_words(&msg.to_string()));
        self.out.write(Stream::Err, &text).await;
    }

    async fn reply(&self, session: Option<&str>, text: &str) {
        self.out.write(Stream::Out, &prefixed(session, text)).await;
    }

    async fn interrupt_now(&mut self) {
        let Some(id) = self.current.clone() else {
            self.error("no session to interrupt; start one with `new PROMPT`")
                .await;
            return;
        };
        // The interrupt is for the turn of the last prompt taken before it: let the
        // prompts stored earlier start first.
        let mut events = self.engine.subscribe();
        loop {
            let state = match self.engine.session(&id).await {
                Ok(s) => s.state,
                Err(e) => return self.error(e).await,
            };
            let pending = match self.engine.store().pending_prompts(&id).await {
                Ok(n) => n,
                Err(e) => return self.error(e).await,
            };
            if pending == 0
                || !matches!(
                    state,
                    SessionState::Running | SessionState::Waiting | SessionState::Starting
                )
            {
                break;
            }
            tokio::select! {
                _ = events.recv() => {}
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            }
        }
        if let Err(e) = self.engine.interrupt(&id).await {
            self.error(e).await;
        }
    }

    async fn current(&mut self) -> Option<String> {
        if self.current.is_none() {
            self.error("no current session; start one with `new [--agent NAME] PROMPT`, or pick one with `use ID`")
                .await;
        }
        self.current.clone()
    }

    async fn handle(&mut self, line: &str) {
        if line.trim().is_empty() {
            return;
        }
        let cmd = match command::parse_line(line) {
            Ok(c) => c,
            Err(e) => return self.error(e).await,
        };
        let by = self.owner.clone();
        let actor = Actor {
            id: by.clone(),
            mention: by.clone(),
            allowed: true,
            roles: Vec::new(),
        };
        let result: Result<(), EngineError> = match cmd {
            Command::Help => {
                self.reply(None, &command::help_text()).await;
                Ok(())
            }
            Command::New(args) => {
                // The console's thread is the session itself: bound from seq 1 in the
                // same transaction as the session, so the printer shows everything.
                let id = crate::engine::new_session_id();
                let req = self
                    .chat
                    .new_request(args, &actor, ROOM, Some(id.clone()), Some(id));
                self.engine.new_session(req).await.map(|s| {
                    self.current = Some(s.id);
                })
            }
            Command::Use { session } => match self.engine.session(&session).await {
                Ok(s) => {
                    if let Err(e) = self.engine.follow(&s, FRONTEND, &s.id).await {
                        tracing::warn!(session = %s.id, error = %e, "cannot show the session's output here");
                    }
                    self.current = Some(s.id.clone());
                    self.reply(
                        Some(&s.id),
                        &format!("now using session {} ({})", s.id, s.state),
                    )
                    .await;
                    Ok(())
                }
                Err(e) => Err(e),
            },
            Command::List => match self.my_sessions().await {
                Ok(list) => {
                    self.reply(None, &render::list_text(&list)).await;
                    Ok(())
                }
                Err(e) => Err(EngineError::Other(e.to_string())),
            },
            Command::Prompt(text) => match self.current().await {
                Some(id) => self.engine.prompt(&id, &text, &by).await,
                None => Ok(()),
            },
            // Acted on as soon as it is read (see `run`), not in line order.
            Command::Interrupt => Ok(()),
            Command::Put { path } => match self.current().await {
                Some(id) => self.put(&id, &path).await,
                None => Ok(()),
            },
            Command::Get { path } => match self.current().await {
                Some(id) => self.get(&id, &path).await,
                None => Ok(()),
            },
            cmd => {
                if let Some(id) = self.current().await {
                    let reply = self.chat.on_session(&actor, &id, &cmd).await;
                    self.answer(&id, reply).await;
                }
                Ok(())
            }
        };
        if let Err(e) = result {
            self.error(e).await;
        }
    }

    /// `put LOCAL_PATH`: the file (relative to the console's folder) into the
    /// workspace's inbox.
    async fn put(&mut self, id: &str, path: &str) -> Result<(), EngineError> {
        let local = self.transcript_dir.join(path);
        let file = tokio::fs::File::open(&local).await.map_err(|e| {
            EngineError::Other(format!(
                "cannot read {}: {e}; `put` takes a file on this machine, relative to the folder the console runs in",
                local.display()
            ))
        })?;
        let name = local
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "file".into());
        let stored = self.engine.put_file(id, &name, file).await?;
        self.reply(Some(id), &format!("copied {} to {stored}", local.display()))
            .await;
        Ok(())
    }

    /// `get PATH`: the workspace file (a folder as `.tar.gz`) into the console's folder,
    /// written as it comes; a name already there is not overwritten.
    async fn get(&mut self, id: &str, path: &str) -> Result<(), EngineError> {
        use std::io::Write as _;
        let part = self
            .transcript_dir
            .join(format!(".firstmate-get-{id}-{}.part", std::process::id()));
        let mut file = std::fs::File::create(&part).map_err(|e| {
            EngineError::Other(format!(
                "cannot write into {}: {e}",
                self.transcript_dir.display()
            ))
        })?;
        let got = self
            .engine
            .get_file(id, path, u64::MAX, &mut |chunk: &[u8]| {
                file.write_all(chunk)
            })
            .await;
        let (name, size) = match got {
            Ok(g) => g,
            Err(e) => {
                let _ = std::fs::remove_file(&part);
                return Err(e);
            }
        };
        let mut target = self.transcript_dir.join(&name);
        let mut n = 1;
        while target.exists() {
            target = self.transcript_dir.join(format!("{n}-{name}"));
            n += 1;
        }
        std::fs::rename(&part, &target).map_err(|e| {
            let _ = std::fs::remove_file(&part);
            EngineError::Other(format!("cannot write {}: {e}", target.display()))
        })?;
        self.reply(
            Some(id),
            &format!(
                "{path} written to {} ({})",
                target.display(),
                crate::files::human_size(size)
            ),
        )
        .await;
        Ok(())
    }

    /// Prints a chat action's reply; a file (the transcript, a diff) goes to the
    /// transcript folder.
    async fn answer(&mut self, id: &str, reply: Reply) {
        match reply {
            Reply::Done { .. } => {}
            Reply::Status(s) => self.reply(Some(id), &render::status_text(&s)).await,
            Reply::File { name, data } => {
                let what = if name.ends_with(".diff") {
                    "diff"
                } else {
                    "transcript"
                };
                let path = self.transcript_dir.join(name);
                match std::fs::write(&path, data) {
                    Ok(()) => {
                        let text = format!("{what} written to {}", path.display());
                        self.reply(Some(id), &text).await
                    }
                    Err(e) => {
                        self.error(format!(
                            "cannot write the {what} to {}: {e}",
                            path.display()
                        ))
                        .await
                    }
                }
            }
            Reply::Problem(text) => self.error(text).await,
            // The console acts for its owner, who may do everything, always on the
            // current session.
            Reply::Refused | Reply::NotInThread(_) => {}
        }
    }
}

/// A line of input, as the reader task hands it to the main loop.
enum Input {
    /// A line of text, without its line ending.
    Line(String),
    /// A line that is not UTF-8: refused, and the lines after it still run.
    NotUtf8,
    /// Reading failed: the input ends here.
    Unreadable(std::io::Error),
}

/// Reads the next line (`\n` or `\r\n` ended, or the last bytes before end of input);
/// None at end of input.
async fn read_line<R>(input: &mut BufReader<R>) -> Option<Input>
where
    R: tokio::io::AsyncRead + Unpin,
{
    let mut buf = Vec::new();
    match input.read_until(b'\n', &mut buf).await {
        Ok(0) => None,
        Ok(_) => {
            if buf.last() == Some(&b'\n') {
                buf.pop();
                if buf.last() == Some(&b'\r') {
                    buf.pop();
                }
            }
            Some(String::from_utf8(buf).map_or(Input::NotUtf8, Input::Line))
        }
        Err(e) => Some(Input::Unreadable(e)),
    }
}

/// `msg` with every word longer than [`command::ECHO_CHARS`] characters cut as
/// [`command::echo`] cuts it (the punctuation around a word stays): error messages
/// quote what the user wrote, and a pasted megabyte must not come back whole.
fn cut_long_words(msg: &str) -> String {
    let punct = |c: char| c.is_ascii_punctuation();
    msg.split_inclusive(char::is_whitespace)
        .map(|piece| {
            let word = piece.trim_end_matches(char::is_whitespace);
            let core = word.trim_start_matches(punct);
            let lead = &word[..word.len() - core.len()];
            let core = core.trim_end_matches(punct);
            let rest = &piece[lead.len() + core.len()..];
            format!("{lead}{}{rest}", command::echo(core))
        })
        .collect()
}

async fn flush(tx: &mpsc::Sender<tokio::sync::oneshot::Sender<()>>) {
    let (done, wait) = tokio::sync::oneshot::channel();
    if tx.send(done).await.is_ok() {
        let _ = wait.await;
    }
}

/// Prints the events of the console's sessions, each exactly once, in order: from the
/// store where the broadcast skipped or lagged, and from the last delivered event on
/// start. Remembers what it printed (the binding's `delivered_seq`), and only that: when
/// the output fails, it stops without counting the event it could not write.
async fn print_events(
    engine: Engine,
    out: Output,
    mut events: broadcast::Receiver<SessionEvent>,
    mut flush_rx: mpsc::Receiver<tokio::sync::oneshot::Sender<()>>,
    mut done_rx: mpsc::Receiver<()>,
) {
    let store = engine.store().clone();
    let mut delivered: HashMap<String, i64> = HashMap::new();
    if catch_up_all(&store, &out, &mut delivered).await.is_err() {
        return;
    }
    loop {
        tokio::select! {
            ev = events.recv() => match ev {
                Ok(ev) => {
                    let from = match delivered.get(&ev.session) {
                        Some(&d) => d,
                        None => match store.binding(&ev.session, FRONTEND).await {
                            Ok(Some(b)) => b.delivered_seq,
                            _ => continue, // not a console session
                        },
                    };
                    if ev.seq <= from {
                        continue;
                    }
                    let last = if ev.seq == from + 1 {
                        if !print_event(&out, &ev).await {
                            return;
                        }
                        let _ = store.set_delivered(&ev.session, FRONTEND, ev.seq).await;
                        ev.seq
                    } else {
                        match catch_up(&store, &out, &ev.session, from).await {
                            Ok(last) => last,
                            Err(Gone) => return,
                        }
                    };
                    delivered.insert(ev.session.clone(), last);
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    if catch_up_all(&store, &out, &mut delivered).await.is_err() {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            Some(done) = flush_rx.recv() => {
                if catch_up_all(&store, &out, &mut delivered).await.is_err() {
                    return;
                }
                let _ = done.send(());
            }
            _ = done_rx.recv() => {
                let _ = catch_up_all(&store, &out, &mut delivered).await;
                return;
            }
        }
    }
}

/// The console's output failed: nobody reads any more.
struct Gone;

/// Catches every console session up from the store.
async fn catch_up_all(
    store: &crate::store::Store,
    out: &Output,
    delivered: &mut HashMap<String, i64>,
) -> Result<(), Gone> {
    let Ok(bindings) = store.bindings(FRONTEND).await else {
        return Ok(());
    };
    for b in bindings {
        let from = delivered
            .get(&b.session_id)
            .copied()
            .unwrap_or(0)
            .max(b.delivered_seq);
        let last = catch_up(store, out, &b.session_id, from).await?;
        delivered.insert(b.session_id, last);
    }
    Ok(())
}

/// Prints the stored events after `from`; returns the last seq printed.
async fn catch_up(
    store: &crate::store::Store,
    out: &Output,
    session: &str,
    from: i64,
) -> Result<i64, Gone> {
    let mut last = from;
    loop {
        let Ok(batch) = store.events_after(session, last, 1000).await else {
            return Ok(last);
        };
        if batch.is_empty() {
            return Ok(last);
        }
        for ev in &batch {
            if !print_event(out, ev).await {
                // What was written before the failure counts as delivered.
                if last > from {
                    let _ = store.set_delivered(session, FRONTEND, last).await;
                }
                return Err(Gone);
            }
            last = ev.seq;
        }
        let _ = store.set_delivered(session, FRONTEND, last).await;
    }
}

/// `text`'s lines, each prefixed `[<session>] ` when there is a session.
fn prefixed(session: Option<&str>, text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        if let Some(id) = session {
            out.push('[');
            out.push_str(id);
            out.push_str("] ");
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Prints one event; false when the output failed.
async fn print_event(out: &Output, ev: &SessionEvent) -> bool {
    let lines = render::console_lines(&ev.body);
    if let EventBody::State {
        state: SessionState::Failed,
        detail,
    } = &ev.body
    {
        tracing::debug!(session = %ev.session, ?detail, "session failed");
    }
    if lines.is_empty() {
        return true;
    }
    let text: String = lines
        .iter()
        .map(|l| format!("[{}] {l}\n", ev.session))
        .collect();
    out.write(Stream::Out, &text).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_messages_cut_overlong_words_only() {
        let id = "x".repeat(1 << 20);
        let msg = format!("no session {id}; `list` shows the sessions here");
        assert_eq!(
            cut_long_words(&msg),
            format!(
                "no session {}… (1048576 characters); `list` shows the sessions here",
                "x".repeat(command::ECHO_CHARS - 1)
            )
        );
        let quoted = format!("unknown agent `{id}`.");
        assert!(
            cut_long_words(&quoted).ends_with("… (1048576 characters)`."),
            "{}",
            &cut_long_words(&quoted)[100..]
        );
        let once = cut_long_words(&format!("--timeout: {:?} is bad", command::echo(&id)));
        assert_eq!(cut_long_words(&once), once, "cut twice");
        assert_eq!(once.matches("characters").count(), 1, "{once}");
        let plain = "line 3: not UTF-8 text,\tskipped\n  twice ";
        assert_eq!(cut_long_words(plain), plain);
    }

    #[tokio::test]
    async fn input_lines_end_at_newlines_and_bad_bytes_refuse_one_line() {
        let bytes: &[u8] = b"one\r\n\xff\xfe two\nthree";
        let mut input = BufReader::new(bytes);
        let mut got = Vec::new();
        while let Some(line) = read_line(&mut input).await {
            got.push(match line {
                Input::Line(l) => l,
                Input::NotUtf8 => "<not utf-8>".into(),
                Input::Unreadable(e) => format!("<{e}>"),
            });
        }
        assert_eq!(got, ["one", "<not utf-8>", "three"]);
    }
}
