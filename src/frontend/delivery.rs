//! Delivery of session output to chat threads, for every chat front end: one reader per
//! session thread takes the session's events from the store (from the last delivered
//! one), renders them, and feeds that thread's [`Outbox`]. What differs per platform
//! (how a thread is reached, how events and the status look) is its [`Threads`].

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, broadcast, mpsc};
use tracing::warn;

use crate::engine::Engine;
use crate::event::{EventBody, SessionEvent};
use crate::frontend::outbox::{self, Body, Input, Limits, Outbox, Piece, Rendered, Sink};
use crate::frontend::view;
use crate::protocol::AgentEvent;
use crate::store::{Binding, SessionRecord, Store};

/// Turns a session's events into thread output, in order (it may remember what it saw).
pub trait Render: Default + Send + 'static {
    fn render(&mut self, body: &EventBody) -> Rendered;
}

/// A neutral view's answer as a front end's blocks: each item becomes the blocks
/// `blocks` makes of it (with the item's key), nothing and a turn's start stay what
/// they are. An approval is a message of its own, asking for an answer while it waits.
pub fn blocks_of(
    view: view::View,
    mut blocks: impl FnMut(Option<String>, &view::Item) -> Vec<outbox::Block>,
) -> Rendered {
    match view {
        view::View::Nothing => Rendered::Nothing,
        view::View::TurnStart => Rendered::TurnStart,
        view::View::Items(items) => Rendered::Blocks(
            items
                .into_iter()
                .flat_map(|k| {
                    let mut out = blocks(k.key, &k.item);
                    if let view::Item::Approval(a) = &k.item
                        && let [only] = out.as_mut_slice()
                    {
                        only.alone = true;
                        if a.answer.is_none() {
                            only.body.ask = Some(a.id.clone());
                        }
                    }
                    out
                })
                .collect(),
        ),
    }
}

/// A chat platform's side of delivery.
pub trait Threads: Send + Sync + 'static {
    type Sink: Sink + 'static;
    type Renderer: Render;
    /// The front end's name in the bindings (`matrix`, `discord`).
    fn frontend(&self) -> &'static str;
    /// The sink of a session's thread and the id of its status message, if posted; None
    /// when the thread cannot be reached (said in the log).
    fn sink(
        &self,
        binding: &Binding,
        record: &SessionRecord,
    ) -> impl Future<Output = Option<(Self::Sink, Option<String>)>> + Send;
    /// The status message of a session (edited when [`view::status_key`] changes).
    fn status(&self, s: &SessionRecord) -> Body;
    fn limits(&self) -> Limits;
}

/// The readers of one front end's session threads.
pub struct Deliveries<T: Threads> {
    inner: Arc<Inner<T>>,
}

impl<T: Threads> Clone for Deliveries<T> {
    fn clone(&self) -> Self {
        Deliveries {
            inner: self.inner.clone(),
        }
    }
}

struct Inner<T> {
    threads: T,
    engine: Engine,
    readers: Mutex<HashMap<String, Arc<Notify>>>,
    /// Sessions known not to have a thread of this front end.
    not_mine: Mutex<HashSet<String>>,
}

impl<T: Threads> Deliveries<T> {
    pub fn new(threads: T, engine: Engine) -> Deliveries<T> {
        Deliveries {
            inner: Arc::new(Inner {
                threads,
                engine,
                readers: Mutex::new(HashMap::new()),
                not_mine: Mutex::new(HashSet::new()),
            }),
        }
    }

    fn store(&self) -> &Store {
        self.inner.engine.store()
    }

    fn frontend(&self) -> &'static str {
        self.inner.threads.frontend()
    }

    /// Starts feeding the threads with output not yet delivered, then follows the
    /// engine's events.
    pub async fn start(&self) {
        let events = self.inner.engine.subscribe();
        self.start_pending().await;
        tokio::spawn(self.clone().dispatch(events));
    }

    /// Makes sure the session's thread is being fed, and pokes its reader.
    pub fn ensure(&self, session: &str) {
        self.inner
            .not_mine
            .lock()
            .expect("not_mine")
            .remove(session);
        let mut readers = self.inner.readers.lock().expect("readers");
        if let Some(n) = readers.get(session) {
            n.notify_one();
            return;
        }
        let notify = Arc::new(Notify::new());
        readers.insert(session.to_string(), notify.clone());
        tokio::spawn(self.clone().read(session.to_string(), notify));
    }
    /// On start: feeds every thread that is live or has output not yet delivered.
    async fn start_pending(&self) {
        let bindings = match self.store().bindings(self.frontend()).await {
            Ok(b) => b,
            Err(e) => {
                warn!(frontend = self.frontend(), error = %e, "cannot read the threads");
                return;
            }
        };
        for b in bindings {
            match self.store().session(&b.session_id).await {
                Ok(Some(s)) if s.state.is_live() || s.next_seq - 1 > b.delivered_seq => {
                    self.ensure(&b.session_id);
                }
                _ => {}
            }
        }
    }

    /// Wakes the reader of each session that has a new event.
    async fn dispatch(self, mut events: broadcast::Receiver<SessionEvent>) {
        loop {
            match events.recv().await {
                Ok(ev) => self.wake(&ev.session).await,
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    let all: Vec<Arc<Notify>> = self
                        .inner
                        .readers
                        .lock()
                        .expect("readers")
                        .values()
                        .cloned()
                        .collect();
                    for n in all {
                        n.notify_one();
                    }
                    self.start_pending().await;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    async fn wake(&self, session: &str) {
        if let Some(n) = self.inner.readers.lock().expect("readers").get(session) {
            n.notify_one();
            return;
        }
        if self
            .inner
            .not_mine
            .lock()
            .expect("not_mine")
            .contains(session)
        {
            return;
        }
        match self.store().binding(session, self.frontend()).await {
            Ok(Some(_)) => self.ensure(session),
            Ok(None) => {
                // Not (yet) a thread of this front end; `ensure` takes it out of here when it is.
                if !self
                    .inner
                    .readers
                    .lock()
                    .expect("readers")
                    .contains_key(session)
                {
                    self.inner
                        .not_mine
                        .lock()
                        .expect("not_mine")
                        .insert(session.to_string());
                }
            }
            Err(e) => warn!(session, error = %e, "cannot read a binding"),
        }
    }

    async fn read(self, session: String, notify: Arc<Notify>) {
        let store = self.store().clone();
        let (binding, record) = loop {
            match (
                store.binding(&session, self.frontend()).await,
                store.session(&session).await,
            ) {
                (Ok(Some(b)), Ok(Some(s))) => break (b, s),
                (Ok(None), _) | (_, Ok(None)) => {
                    warn!(%session, frontend = self.frontend(), "no thread for this session");
                    self.inner.readers.lock().expect("readers").remove(&session);
                    return;
                }
                (Err(e), _) | (_, Err(e)) => {
                    warn!(%session, error = %e, "cannot read the session; trying again");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
            }
        };
        let Some((sink, status_event)) = self.inner.threads.sink(&binding, &record).await else {
            self.inner.readers.lock().expect("readers").remove(&session);
            return;
        };
        let (tx, rx) = mpsc::unbounded_channel();
        // The approvals shown before a restart: their answers edit those messages.
        let placed = match store.approval_messages(&session, self.frontend()).await {
            Ok(p) => p,
            Err(e) => {
                warn!(%session, error = %e, "cannot read where the session's approvals are");
                Vec::new()
            }
        };
        let outbox = Outbox::new(
            self.inner.threads.limits(),
            binding.delivered_seq,
            status_event,
        )
        .with_placed(
            placed
                .into_iter()
                .map(|(approval, message)| (view::approval_key(&approval), message)),
        );
        let sink = Placing {
            sink,
            store: store.clone(),
            frontend: self.frontend(),
        };
        tokio::spawn(outbox::run(session.to_string(), outbox, rx, sink));

        let mut renderer = T::Renderer::default();
        let mut read = binding.delivered_seq;
        let mut primed = read == 0;
        let mut status_key = String::new();
        loop {
            // The status first, so the thread starts with it.
            match store.session_report(&session).await {
                Ok(Some(s)) => {
                    let key = view::status_key(&s);
                    if key != status_key {
                        status_key = key;
                        let _ = tx.send(Input::Status(self.inner.threads.status(&s)));
                    }
                }
                Ok(None) => return,
                Err(e) => warn!(%session, error = %e, "cannot read the session"),
            }
            loop {
                let batch = match store.events_after(&session, read, 500).await {
                    Ok(b) => b,
                    Err(e) => {
                        warn!(%session, error = %e, "cannot read the session's events");
                        break;
                    }
                };
                let Some(last) = batch.last().map(|e| e.seq) else {
                    break;
                };
                if !primed {
                    primed = true;
                    prime(&mut renderer, &store, &session, read).await;
                }
                for ev in &batch {
                    let piece = match renderer.render(&ev.body) {
                        Rendered::Nothing => Piece::Nothing { seq: ev.seq },
                        Rendered::TurnStart => Piece::TurnStart { seq: ev.seq },
                        Rendered::Blocks(blocks) => {
                            // All blocks of one event carry its seq.
                            for block in blocks {
                                let _ = tx.send(Input::Piece(Piece::Block { seq: ev.seq, block }));
                            }
                            continue;
                        }
                    };
                    let _ = tx.send(Input::Piece(piece));
                }
                read = last;
            }
            // Status again: the events may have changed it.
            if let Ok(Some(s)) = store.session_report(&session).await {
                let key = view::status_key(&s);
                if key != status_key {
                    status_key = key;
                    let _ = tx.send(Input::Status(self.inner.threads.status(&s)));
                }
            }
            notify.notified().await;
        }
    }
}

/// How far back a reader that starts mid-session (after a restart) looks for the tool
/// calls whose results are still to come.
const PRIME_EVENTS: i64 = 2_000;

/// Shows `renderer` the tool calls and results of the `PRIME_EVENTS` events up to `to`
/// (delivered before), and drops what it makes of them: a result delivered from here on
/// is shown with its call's name and summary, after a restart too.
async fn prime<R: Render>(renderer: &mut R, store: &Store, session: &str, to: i64) {
    let mut read = (to - PRIME_EVENTS).max(0);
    while read < to {
        let batch = match store.events_after(session, read, 500).await {
            Ok(b) => b,
            Err(e) => {
                warn!(%session, error = %e, "cannot read the session's earlier tool calls");
                return;
            }
        };
        let Some(last) = batch.last().map(|e| e.seq) else {
            return;
        };
        for ev in batch.iter().filter(|ev| ev.seq <= to) {
            if let EventBody::Agent {
                event: AgentEvent::ToolUse { .. } | AgentEvent::ToolResult { .. },
            } = &ev.body
            {
                renderer.render(&ev.body);
            }
        }
        read = last;
    }
}

/// A thread's sink that records the message each approval was posted in, so a reaction
/// on it (Matrix) finds the approval and its answer edits it, after a restart too.
struct Placing<S> {
    sink: S,
    store: Store,
    frontend: &'static str,
}

impl<S: Sink> Sink for Placing<S> {
    async fn send(&self, op: &outbox::Op) -> Result<Option<String>, String> {
        let sent = self.sink.send(op).await?;
        if let (outbox::Op::Post { body, .. }, Some(message)) = (op, &sent)
            && let Some(approval) = &body.ask
            && let Err(e) = self
                .store
                .set_approval_message(approval, self.frontend, message)
                .await
        {
            warn!(approval, error = %e, "cannot keep where an approval was posted");
        }
        Ok(sent)
    }

    async fn delivered(&self, seq: i64) {
        self.sink.delivered(seq).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::SessionState;

    /// The neutral view's answers, as text.
    #[derive(Default)]
    struct Seen {
        view: view::Renderer,
        last: String,
    }

    impl Render for Seen {
        fn render(&mut self, body: &EventBody) -> Rendered {
            self.last = format!("{:?}", self.view.render(body));
            Rendered::Nothing
        }
    }

    fn tool_use(id: &str) -> EventBody {
        EventBody::Agent {
            event: AgentEvent::ToolUse {
                id: id.into(),
                name: "Bash".into(),
                summary: format!("sleep {id}"),
                input: serde_json::json!({}),
            },
        }
    }

    fn result(id: &str) -> EventBody {
        EventBody::Agent {
            event: AgentEvent::ToolResult {
                tool_use_id: id.into(),
                output: "done".into(),
                is_error: false,
            },
        }
    }

    #[tokio::test]
    async fn a_reader_started_mid_turn_knows_the_calls_delivered_before() {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = Store::connect(&url).await.expect("store");
        let mut s = SessionRecord::new_queued(
            "s1".into(),
            "a".into(),
            "scripted".into(),
            "claude".into(),
            "img".into(),
            "alice".into(),
            "discord".into(),
            "room".into(),
            "go".into(),
        );
        s.state = SessionState::Running;
        store.insert_session(&s).await.expect("insert");
        let mut events = vec![tool_use("1"), result("1"), tool_use("2")];
        // Calls far enough back are not looked for.
        events.extend((0..PRIME_EVENTS).map(|_| EventBody::Notice { text: "x".into() }));
        events.push(tool_use("3"));
        let stored = store.commit(&mut s, events).await.expect("commit");
        let delivered = stored.last().expect("events").seq;

        let mut renderer = Seen::default();
        prime(&mut renderer, &store, "s1", delivered).await;
        renderer.render(&result("3"));
        assert!(renderer.last.contains("sleep 3"), "{}", renderer.last);
        renderer.render(&result("2"));
        assert!(!renderer.last.contains("sleep 2"), "{}", renderer.last);
        assert!(renderer.last.contains("\"tool\""), "{}", renderer.last);
    }
}
