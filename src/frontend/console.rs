//! The console front end: the chat grammar on standard input, every session's output on
//! standard output, each line prefixed with `[<session id>] `. For trying firstmate
//! without a chat account, and for scripts.
//!
//! Lines are taken in order: a line read while a turn runs waits for that turn to end
//! (except `interrupt`, which acts at once). At end of input the console waits until none
//! of its sessions is working, then returns; containers stay for the next console, which
//! first shows what its sessions printed meanwhile.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::{broadcast, mpsc};

use crate::command::{self, Command};
use crate::engine::{Engine, EngineError, NewSession};
use crate::event::{EventBody, SessionEvent, SessionState};
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
}

pub struct Console {
    engine: Engine,
    owner: String,
    current: Option<String>,
    transcript_dir: PathBuf,
    had_errors: bool,
}

impl Console {
    pub fn new(engine: Engine, owner: String, transcript_dir: PathBuf) -> Console {
        Console {
            engine,
            owner,
            current: None,
            transcript_dir,
            had_errors: false,
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
        let printer = tokio::spawn(print_events(self.engine.clone(), events, flush_rx, done_rx));

        // The current session of a console started again: its newest one.
        let mine = self.my_sessions().await?;
        self.current = mine.first().map(|s| s.id.clone());

        // Read input on its own task, so `interrupt` can act while a turn runs. Every
        // line goes to `lines`, in order; an interrupt is also announced on `interrupts`
        // at once, for the main loop to act on while it waits for a turn.
        let (line_tx, mut line_rx) = mpsc::unbounded_channel::<(usize, Input)>();
        let (intr_tx, mut intr_rx) = mpsc::unbounded_channel::<usize>();
        tokio::spawn(async move {
            let mut input = BufReader::new(input);
            let mut index = 0;
            loop {
                let line = read_line(&mut input).await;
                let last = matches!(line, None | Some(Input::Unreadable(_)));
                let Some(line) = line else { break };
                if let Input::Line(text) = &line
                    && matches!(command::parse_line(text), Ok(Command::Interrupt))
                {
                    let _ = intr_tx.send(index);
                }
                if line_tx.send((index, line)).is_err() || last {
                    break;
                }
                index += 1;
            }
        });

        // Interrupts already acted on while waiting for a turn, by line index.
        let mut done = std::collections::HashSet::new();
        while let Some((index, input)) = line_rx.recv().await {
            let line = match input {
                Input::Line(line) => line,
                Input::NotUtf8 => {
                    self.error(format!(
                        "line {}: not UTF-8 text, skipped; the console reads UTF-8 lines \
                         (convert the input first, e.g. with `iconv -t UTF-8`)",
                        index + 1
                    ));
                    continue;
                }
                Input::Unreadable(e) => {
                    self.error(format!(
                        "cannot read line {} of the input: {e}; the lines after it are not read",
                        index + 1
                    ));
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
                    self.wait_idle(index, &mut intr_rx, &mut done).await?;
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
        self.wait_idle(usize::MAX, &mut closed, &mut none).await?;
        flush(&flush_tx).await;
        drop(done_tx);
        let _ = printer.await;
        Ok(if self.had_errors {
            Outcome::HadErrors
        } else {
            Outcome::Clean
        })
    }

    async fn my_sessions(&self) -> anyhow::Result<Vec<SessionRecord>> {
        Ok(self
            .engine
            .store()
            .sessions_in_room(&self.engine.config().docker.instance, FRONTEND, ROOM)
            .await?)
    }

    /// Waits while a session of this console works (starting, running, or holding a
    /// prompt not yet taken). A queued session does not count: it may wait for a slot
    /// that only a later line frees. An interrupt read after line `index` acts at once
    /// and is noted in `done`.
    async fn wait_idle(
        &mut self,
        index: usize,
        interrupts: &mut mpsc::UnboundedReceiver<usize>,
        done: &mut std::collections::HashSet<usize>,
    ) -> anyhow::Result<()> {
        let mut events = self.engine.subscribe();
        loop {
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
                tracing::trace!(session = %s.id, state = %s.state, working, "waiting for the turn");
                busy |= working || self.engine.is_settling(&s.id);
            }
            if !busy {
                tracing::debug!(line = index, "no session of this console is working");
                return Ok(());
            }
            tokio::select! {
                Some(k) = interrupts.recv() => {
                    // Interrupts before this line were handled in order already.
                    if k > index {
                        done.insert(k);
                        self.interrupt_now().await;
                    }
                }
                _ = events.recv() => {}
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            }
        }
    }

    /// Reports a refused line on stderr. Messages quote the user's input (a session
    /// id, an agent or image name): each overlong word is cut, see [`cut_long_words`].
    fn error(&mut self, msg: impl std::fmt::Display) {
        self.had_errors = true;
        eprintln!("firstmate: {}", cut_long_words(&msg.to_string()));
    }

    fn reply(&self, session: Option<&str>, text: &str) {
        let mut out = std::io::stdout().lock();
        for line in text.lines() {
            let _ = match session {
                Some(id) => writeln!(out, "[{id}] {line}"),
                None => writeln!(out, "{line}"),
            };
        }
        let _ = out.flush();
    }

    async fn interrupt_now(&mut self) {
        let Some(id) = self.current.clone() else {
            self.error("no session to interrupt; start one with `new PROMPT`");
            return;
        };
        // The interrupt is for the turn of the last prompt taken before it: let the
        // prompts stored earlier start first.
        let mut events = self.engine.subscribe();
        loop {
            let state = match self.engine.session(&id).await {
                Ok(s) => s.state,
                Err(e) => return self.error(e),
            };
            let pending = match self.engine.store().pending_prompts(&id).await {
                Ok(n) => n,
                Err(e) => return self.error(e),
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
            self.error(e);
        }
    }

    fn current(&mut self) -> Option<String> {
        if self.current.is_none() {
            self.error("no current session; start one with `new [--agent NAME] PROMPT`, or pick one with `use ID`");
        }
        self.current.clone()
    }

    async fn handle(&mut self, line: &str) {
        if line.trim().is_empty() {
            return;
        }
        let cmd = match command::parse_line(line) {
            Ok(c) => c,
            Err(e) => return self.error(e),
        };
        let by = self.owner.clone();
        let result: Result<(), EngineError> = match cmd {
            Command::Help => {
                self.reply(None, &command::help_text());
                Ok(())
            }
            Command::New(args) => {
                // The console's thread is the session itself: bound from seq 1 in the
                // same transaction as the session, so the printer shows everything.
                let id = crate::engine::new_session_id();
                let req = NewSession {
                    agent: args.agent,
                    model: args.model,
                    image: args.image,
                    repo: args.repo,
                    branch: args.branch,
                    idle_timeout: args.timeout,
                    prompt: args.prompt,
                    owner: by.clone(),
                    frontend: FRONTEND.into(),
                    room: ROOM.into(),
                    id: Some(id.clone()),
                    thread: Some(id),
                };
                self.engine.new_session(req).await.map(|s| {
                    self.current = Some(s.id);
                })
            }
            Command::Use { session } => match self.engine.session(&session).await {
                Ok(s) => {
                    if self
                        .engine
                        .store()
                        .binding(&s.id, FRONTEND)
                        .await
                        .ok()
                        .flatten()
                        .is_none()
                    {
                        let _ = self
                            .engine
                            .store()
                            .bind_thread(&s.id, FRONTEND, &s.id, s.next_seq - 1)
                            .await;
                    }
                    self.current = Some(s.id.clone());
                    self.reply(
                        Some(&s.id),
                        &format!("now using session {} ({})", s.id, s.state),
                    );
                    Ok(())
                }
                Err(e) => Err(e),
            },
            Command::List => match self.my_sessions().await {
                Ok(list) => {
                    self.reply(None, &render::list_text(&list));
                    Ok(())
                }
                Err(e) => Err(EngineError::Other(e.to_string())),
            },
            Command::Prompt(text) => match self.current() {
                Some(id) => self.engine.prompt(&id, &text, &by).await,
                None => Ok(()),
            },
            Command::Stop => match self.current() {
                Some(id) => self.engine.stop(&id, &by).await,
                None => Ok(()),
            },
            Command::Interrupt => Ok(()),
            Command::Resume => match self.current() {
                Some(id) => self.engine.resume(&id, &by).await,
                None => Ok(()),
            },
            Command::Status => match self.current() {
                Some(id) => match self.engine.session_report(&id).await {
                    Ok(s) => {
                        self.reply(Some(&id), &render::status_text(&s));
                        Ok(())
                    }
                    Err(e) => Err(e),
                },
                None => Ok(()),
            },
            Command::Logs => match self.current() {
                Some(id) => self.write_transcript(&id).await,
                None => Ok(()),
            },
            Command::Diff | Command::Push | Command::Pr => {
                Err(EngineError::NotBuilt("diff, push and pr (repositories)"))
            }
        };
        if let Err(e) = result {
            self.error(e);
        }
    }

    async fn write_transcript(&self, id: &str) -> Result<(), EngineError> {
        let s = self.engine.session(id).await?;
        let text = render::transcript(self.engine.store(), &s).await?;
        let path = self
            .transcript_dir
            .join(format!("firstmate-{id}-transcript.md"));
        std::fs::write(&path, text).map_err(|e| {
            EngineError::Other(format!(
                "cannot write the transcript to {}: {e}",
                path.display()
            ))
        })?;
        self.reply(
            Some(id),
            &format!("transcript written to {}", path.display()),
        );
        Ok(())
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
/// start. Remembers what it printed (the binding's `delivered_seq`).
async fn print_events(
    engine: Engine,
    mut events: broadcast::Receiver<SessionEvent>,
    mut flush_rx: mpsc::Receiver<tokio::sync::oneshot::Sender<()>>,
    mut done_rx: mpsc::Receiver<()>,
) {
    let store = engine.store().clone();
    let mut delivered: HashMap<String, i64> = HashMap::new();
    catch_up_all(&store, &mut delivered).await;
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
                        print_event(&ev);
                        let _ = store.set_delivered(&ev.session, FRONTEND, ev.seq).await;
                        ev.seq
                    } else {
                        catch_up(&store, &ev.session, from).await
                    };
                    delivered.insert(ev.session.clone(), last);
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    catch_up_all(&store, &mut delivered).await;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            Some(done) = flush_rx.recv() => {
                catch_up_all(&store, &mut delivered).await;
                let _ = done.send(());
            }
            _ = done_rx.recv() => {
                catch_up_all(&store, &mut delivered).await;
                return;
            }
        }
    }
}

/// Catches every console session up from the store.
async fn catch_up_all(store: &crate::store::Store, delivered: &mut HashMap<String, i64>) {
    let Ok(bindings) = store.bindings(FRONTEND).await else {
        return;
    };
    for b in bindings {
        let from = delivered
            .get(&b.session_id)
            .copied()
            .unwrap_or(0)
            .max(b.delivered_seq);
        let last = catch_up(store, &b.session_id, from).await;
        delivered.insert(b.session_id, last);
    }
}

/// Prints the stored events after `from`; returns the last seq printed.
async fn catch_up(store: &crate::store::Store, session: &str, from: i64) -> i64 {
    let mut last = from;
    loop {
        let Ok(batch) = store.events_after(session, last, 1000).await else {
            return last;
        };
        let Some(end) = batch.last().map(|e| e.seq) else {
            return last;
        };
        for ev in &batch {
            print_event(ev);
        }
        last = end;
        let _ = store.set_delivered(session, FRONTEND, last).await;
    }
}

fn print_event(ev: &SessionEvent) {
    let lines = render::console_lines(&ev.body);
    if lines.is_empty() {
        return;
    }
    let mut out = std::io::stdout().lock();
    for l in lines {
        let _ = writeln!(out, "[{}] {}", ev.session, l);
    }
    let _ = out.flush();
    if let EventBody::State {
        state: SessionState::Failed,
        detail,
    } = &ev.body
    {
        tracing::debug!(session = %ev.session, ?detail, "session failed");
    }
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
