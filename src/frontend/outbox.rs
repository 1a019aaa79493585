//! What chat front ends share: the blocks session output is cut into ([`Block`],
//! [`Body`]), and the pacing and coalescing of one session thread's output. Pure logic ([`Outbox`]) plus a
//! small driver ([`run`]) over a [`Sink`], so both are tested with a paused clock and a
//! fake sink, without Matrix.
//!
//! The thread holds a status message (posted first, then edited in place) and output
//! messages. Output grows by editing the latest message, at most once per
//! [`Limits::edit_every`]; when the next block would make it longer than
//! [`Limits::max_size`], or a new turn starts, the next block starts a new message.
//! Blocks are never split. Operations run one at a time and in order; a failed one is
//! retried (with a growing pause) with whatever content has come meanwhile, so nothing
//! is dropped, only delayed and merged. `delivered()` is the last event sequence number
//! whose output the homeserver has acknowledged: the caller stores it, and after a
//! restart goes on from there.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

/// A message's text as a front end renders it: the `plain` text, and the front end's
/// `rich` form of the same (Matrix: the HTML `formatted_body`; Discord: none). The outbox
/// does not look inside either; it only joins and measures them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Body {
    pub plain: String,
    pub rich: String,
    /// The approval this message asks people to answer: the front end adds its answer
    /// controls (Discord buttons, Matrix reactions). Only a message of one block has one.
    pub ask: Option<String>,
}

impl Body {
    pub fn new(plain: impl Into<String>, rich: impl Into<String>) -> Body {
        Body {
            plain: plain.into(),
            rich: rich.into(),
            ask: None,
        }
    }

    /// This body, asking people to answer approval `id`.
    pub fn asking(mut self, id: impl Into<String>) -> Body {
        self.ask = Some(id.into());
        self
    }

    /// The size the outbox counts against its message limit.
    pub fn size(&self) -> usize {
        self.plain.len() + self.rich.len()
    }
}

/// The smallest unit of output. `key` names a block that a later one may replace while
/// its message is still being edited (a tool call, then the same call with its outcome).
/// An `alone` block is a message of its own (an approval): a later block with its key
/// replaces it however much output came between, by an edit of that message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    pub key: Option<String>,
    pub body: Body,
    pub alone: bool,
}

impl Block {
    pub fn new(body: Body) -> Block {
        Block {
            key: None,
            body,
            alone: false,
        }
    }

    pub fn keyed(key: impl Into<String>, body: Body) -> Block {
        Block {
            key: Some(key.into()),
            body,
            alone: false,
        }
    }

    /// A block that is a message of its own, replaced by later blocks with its key.
    pub fn alone(key: impl Into<String>, body: Body) -> Block {
        Block {
            key: Some(key.into()),
            body,
            alone: true,
        }
    }
}

/// Joins blocks into one message body.
pub fn join(blocks: &[Block]) -> Body {
    if let [only] = blocks {
        return only.body.clone();
    }
    let mut plain = String::new();
    let mut rich = String::new();
    for (i, b) in blocks.iter().enumerate() {
        if i > 0 {
            plain.push('\n');
            rich.push('\n');
        }
        plain.push_str(&b.body.plain);
        rich.push_str(&b.body.rich);
    }
    Body {
        plain,
        rich,
        ask: None,
    }
}

/// What one event means for the thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rendered {
    /// Nothing to show (stderr, protocol bookkeeping, states the status message shows).
    Nothing,
    /// A turn starts: its output goes into a new message, below the prompt.
    TurnStart,
    Blocks(Vec<Block>),
}

/// How the outbox paces a thread.
#[derive(Debug, Clone)]
pub struct Limits {
    /// At most one edit of the output per this long.
    pub edit_every: Duration,
    /// At most one edit of the status message per this long.
    pub status_every: Duration,
    /// A message is not grown beyond this (plain plus HTML bytes).
    pub max_size: usize,
    /// The pause after a failed operation; doubles with each failure in a row.
    pub retry_first: Duration,
    pub retry_max: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            edit_every: Duration::from_millis(1500),
            status_every: Duration::from_secs(2),
            max_size: 8000,
            retry_first: Duration::from_secs(1),
            retry_max: Duration::from_secs(60),
        }
    }
}

/// What the outbox is fed, in event order.
#[derive(Debug, Clone, PartialEq)]
pub enum Piece {
    /// Output of event `seq` (an event may give several blocks, pushed in a row). A keyed
    /// block replaces the block with the same key when that block is still in the message
    /// being grown; otherwise it is appended.
    Block { seq: i64, block: Block },
    /// Event `seq` starts a turn: later output goes into a new message.
    TurnStart { seq: i64 },
    /// Event `seq` shows nothing.
    Nothing { seq: i64 },
}

impl Piece {
    fn seq(&self) -> i64 {
        match self {
            Piece::Block { seq, .. } | Piece::TurnStart { seq } | Piece::Nothing { seq } => *seq,
        }
    }
}

/// Input of the driver: output, or a new status text.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    Piece(Piece),
    Status(Body),
}

/// One thing to do on the homeserver.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// Post the status message (the first message of the thread).
    PostStatus {
        body: Body,
    },
    EditStatus {
        event_id: String,
        body: Body,
    },
    /// Post a new output message.
    Post {
        body: Body,
        upto: i64,
    },
    /// Replace the content of an output message.
    Edit {
        event_id: String,
        body: Body,
        upto: i64,
    },
    /// Nothing to send: the events up to `upto` show nothing.
    Mark {
        upto: i64,
    },
}

impl Op {
    /// A short name for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Op::PostStatus { .. } => "post the status message",
            Op::EditStatus { .. } => "edit the status message",
            Op::Post { .. } => "post output",
            Op::Edit { .. } => "edit output",
            Op::Mark { .. } => "mark delivered",
        }
    }
}

#[derive(Debug)]
struct Msg {
    id: u64,
    event_id: Option<String>,
    blocks: Vec<Block>,
    size: usize,
    /// Content not yet on the homeserver.
    dirty: bool,
    /// Still takes new blocks.
    open: bool,
    /// The last event sequence number whose output this message holds.
    upto: i64,
    version: u64,
    /// Holds one `alone` block.
    alone: bool,
}

#[derive(Debug, Default)]
struct Status {
    event_id: Option<String>,
    body: Option<Body>,
    dirty: bool,
    version: u64,
    last: Option<Instant>,
}

/// What the op in flight was, to match its outcome.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Flight {
    Status { version: u64 },
    Msg { id: u64, version: u64, upto: i64 },
    Mark { upto: i64 },
}

#[derive(Debug)]
pub struct Outbox {
    limits: Limits,
    msgs: VecDeque<Msg>,
    next_id: u64,
    pushed: i64,
    delivered: i64,
    status: Status,
    last_edit: Option<Instant>,
    failures: u32,
    retry_at: Option<Instant>,
    flight: Option<Flight>,
    /// The messages of `alone` blocks posted so far, by key: a later block with the key
    /// edits the message.
    placed: HashMap<String, String>,
}

impl Outbox {
    /// An outbox whose events up to `delivered` are already in the thread, with the status
    /// message `status_event` when it was posted before.
    pub fn new(limits: Limits, delivered: i64, status_event: Option<String>) -> Outbox {
        Outbox {
            limits,
            msgs: VecDeque::new(),
            next_id: 0,
            pushed: delivered,
            delivered,
            status: Status {
                event_id: status_event,
                ..Status::default()
            },
            last_edit: None,
            failures: 0,
            retry_at: None,
            flight: None,
            placed: HashMap::new(),
        }
    }

    /// Knows that the `alone` blocks of these keys are in these messages already (from
    /// before a restart), so a block with one of the keys edits its message.
    pub fn with_placed(mut self, placed: impl IntoIterator<Item = (String, String)>) -> Outbox {
        self.placed.extend(placed);
        self
    }

    /// The last event sequence number whose output is on the homeserver.
    pub fn delivered(&self) -> i64 {
        self.delivered
    }

    /// The status message, once posted.
    pub fn status_event(&self) -> Option<&str> {
        self.status.event_id.as_deref()
    }

    /// True when everything pushed is on the homeserver.
    pub fn idle(&self) -> bool {
        self.flight.is_none()
            && self.delivered >= self.pushed
            && !self.msgs.iter().any(|m| m.dirty)
            && !(self.status.dirty && self.status.body.is_some())
    }

    pub fn apply(&mut self, input: Input) {
        match input {
            Input::Piece(p) => self.push(p),
            Input::Status(b) => self.set_status(b),
        }
    }

    /// Sets the status text; the status message is edited to it in time.
    pub fn set_status(&mut self, body: Body) {
        if self.status.body.as_ref() == Some(&body) {
            return;
        }
        self.status.body = Some(body);
        self.status.dirty = true;
        self.status.version += 1;
    }

    pub fn push(&mut self, piece: Piece) {
        let seq = piece.seq();
        // Several blocks may come from one event (one seq); anything older is taken.
        let repeat = match piece {
            Piece::Block { .. } => seq < self.pushed,
            _ => seq <= self.pushed,
        };
        if repeat || seq <= self.delivered {
            return;
        }
        self.pushed = seq;
        match piece {
            Piece::Nothing { seq } => self.extend_dirty_tail(seq),
            Piece::TurnStart { seq } => {
                self.close_open();
                self.extend_dirty_tail(seq);
            }
            Piece::Block { seq, block } => self.push_block(seq, block),
        }
    }

    /// A piece that shows nothing rides along with the message still to be sent, if any
    /// (otherwise a `Mark` covers it).
    fn extend_dirty_tail(&mut self, seq: i64) {
        if let Some(last) = self.msgs.back_mut().filter(|m| m.dirty) {
            last.upto = seq;
            last.version += 1;
        }
    }

    fn close_open(&mut self) {
        if let Some(last) = self.msgs.back_mut() {
            last.open = false;
        }
        self.drop_finished();
    }

    fn drop_finished(&mut self) {
        while self.msgs.front().is_some_and(|m| !m.open && !m.dirty) {
            self.msgs.pop_front();
        }
    }

    /// An `alone` block: replaces the block with its key (the last message in place; a
    /// message not yet posted in place, without claiming the later events; a posted
    /// one by an edit queued behind what came since, so `delivered` never passes
    /// output not yet sent), or becomes a message of its own.
    fn push_alone(&mut self, seq: i64, block: Block) {
        let size = block.body.size();
        let key = block.key.clone().unwrap_or_default();
        let holds =
            |m: &Msg| m.alone && m.blocks.first().and_then(|b| b.key.as_ref()) == Some(&key);
        if let Some(last) = self.msgs.back_mut().filter(|m| holds(m)) {
            last.blocks = vec![block];
            last.size = size;
            last.dirty = true;
            last.upto = seq;
            last.version += 1;
            return;
        }
        if let Some(m) = self
            .msgs
            .iter_mut()
            .find(|m| holds(m) && m.event_id.is_none())
        {
            m.blocks = vec![block];
            m.size = size;
            m.dirty = true;
            m.version += 1;
            return;
        }
        let posted = self
            .msgs
            .iter()
            .find(|m| holds(m))
            .and_then(|m| m.event_id.clone())
            .or_else(|| self.placed.get(&key).cloned());
        if posted.is_none() {
            self.close_open();
        }
        let id = self.next_id;
        self.next_id += 1;
        self.msgs.push_back(Msg {
            id,
            event_id: posted,
            blocks: vec![block],
            size,
            dirty: true,
            open: false,
            upto: seq,
            version: 0,
            alone: true,
        });
    }

    fn push_block(&mut self, seq: i64, block: Block) {
        if block.alone {
            return self.push_alone(seq, block);
        }
        let size = block.body.size();
        let max = self.limits.max_size;
        if let Some(open) = self.msgs.back_mut().filter(|m| m.open) {
            let slot = block
                .key
                .as_ref()
                .and_then(|k| open.blocks.iter().position(|b| b.key.as_ref() == Some(k)));
            if let Some(i) = slot {
                open.size = open.size - open.blocks[i].body.size() + size;
                open.blocks[i] = block;
                open.dirty = true;
                open.upto = seq;
                open.version += 1;
                return;
            }
            if open.blocks.is_empty() || open.size + size + 2 <= max {
                open.size += size + 2;
                open.blocks.push(block);
                open.dirty = true;
                open.upto = seq;
                open.version += 1;
                return;
            }
        }
        self.close_open();
        let id = self.next_id;
        self.next_id += 1;
        self.msgs.push_back(Msg {
            id,
            event_id: None,
            blocks: vec![block],
            size,
            dirty: true,
            // A block as large as a message is a message of its own, never edited.
            open: size < max,
            upto: seq,
            version: 0,
            alone: false,
        });
    }

    /// When `next` will have something to do (`now` when it has already), or None when
    /// there is nothing to do.
    pub fn due(&self, now: Instant) -> Option<Instant> {
        if self.flight.is_some() {
            return None;
        }
        let mut at: Option<Instant> = None;
        let mut consider = |t: Instant| at = Some(at.map_or(t, |a| a.min(t)));
        if self.status.body.is_some() && self.status.event_id.is_none() {
            consider(now);
        } else {
            if let Some(m) = self.msgs.iter().find(|m| m.dirty) {
                match (&m.event_id, self.last_edit) {
                    (Some(_), Some(last)) => consider(last + self.limits.edit_every),
                    _ => consider(now),
                }
            } else if self.pushed > self.delivered {
                consider(now);
            }
            if self.status.dirty && self.status.event_id.is_some() {
                match self.status.last {
                    Some(last) => consider(last + self.limits.status_every),
                    None => consider(now),
                }
            }
        }
        let at = at?;
        Some(match self.retry_at {
            Some(r) => at.max(r).max(now),
            None => at.max(now),
        })
    }

    /// The operation to run now, if one is due. Run it, then report with `done` or
    /// `failed` before asking again.
    pub fn next(&mut self, now: Instant) -> Option<Op> {
        if self.flight.is_some() || self.retry_at.is_some_and(|r| r > now) {
            return None;
        }
        let status_ready = self.status.body.is_some();
        if status_ready && self.status.event_id.is_none() {
            let body = self.status.body.clone()?;
            self.flight = Some(Flight::Status {
                version: self.status.version,
            });
            return Some(Op::PostStatus { body });
        }
        if let Some(m) = self.msgs.iter().find(|m| m.dirty) {
            let body = join(&m.blocks);
            let flight = Flight::Msg {
                id: m.id,
                version: m.version,
                upto: m.upto,
            };
            match &m.event_id {
                None => {
                    let upto = m.upto;
                    self.flight = Some(flight);
                    return Some(Op::Post { body, upto });
                }
                Some(ev) => {
                    let ready = self
                        .last_edit
                        .is_none_or(|last| now >= last + self.limits.edit_every);
                    if ready {
                        let op = Op::Edit {
                            event_id: ev.clone(),
                            body,
                            upto: m.upto,
                        };
                        self.flight = Some(flight);
                        return Some(op);
                    }
                }
            }
        } else if self.pushed > self.delivered {
            let upto = self.pushed;
            self.flight = Some(Flight::Mark { upto });
            return Some(Op::Mark { upto });
        }
        if self.status.dirty
            && let (Some(ev), Some(body)) = (&self.status.event_id, &self.status.body)
            && self
                .status
                .last
                .is_none_or(|last| now >= last + self.limits.status_every)
        {
            let op = Op::EditStatus {
                event_id: ev.clone(),
                body: body.clone(),
            };
            self.flight = Some(Flight::Status {
                version: self.status.version,
            });
            return Some(op);
        }
        None
    }

    /// The op from `next` succeeded; `event_id` is the new event's id for posts.
    pub fn done(&mut self, event_id: Option<String>, now: Instant) {
        let Some(flight) = self.flight.take() else {
            return;
        };
        self.failures = 0;
        self.retry_at = None;
        match flight {
            Flight::Status { version } => {
                if self.status.event_id.is_none() {
                    self.status.event_id = event_id;
                }
                if self.status.version == version {
                    self.status.dirty = false;
                }
                self.status.last = Some(now);
            }
            Flight::Msg { id, version, upto } => {
                if let Some(m) = self.msgs.iter_mut().find(|m| m.id == id) {
                    if m.event_id.is_none() {
                        m.event_id = event_id;
                        if m.alone
                            && let (Some(key), Some(ev)) = (
                                m.blocks.first().and_then(|b| b.key.clone()),
                                m.event_id.clone(),
                            )
                        {
                            self.placed.insert(key, ev);
                        }
                    }
                    if m.version == version {
                        m.dirty = false;
                    }
                }
                self.last_edit = Some(now);
                self.delivered = self.delivered.max(upto);
                self.drop_finished();
            }
            Flight::Mark { upto } => self.delivered = self.delivered.max(upto),
        }
    }

    /// The op from `next` failed: it is tried again later, with what came meanwhile.
    pub fn failed(&mut self, now: Instant) {
        if self.flight.take().is_none() {
            return;
        }
        self.failures += 1;
        let factor = 2u32.saturating_pow(self.failures.saturating_sub(1).min(16));
        let pause = self
            .limits
            .retry_first
            .saturating_mul(factor)
            .min(self.limits.retry_max);
        self.retry_at = Some(now + pause);
    }
}

/// Where the driver sends operations: the Matrix room in production, a recorder in tests.
pub trait Sink: Send + Sync {
    /// Runs one operation; returns the new event's id for posts.
    fn send(
        &self,
        op: &Op,
    ) -> impl std::future::Future<Output = Result<Option<String>, String>> + Send;
    /// Records that the events up to `seq` are in the thread.
    fn delivered(&self, seq: i64) -> impl std::future::Future<Output = ()> + Send;
}

/// The longest one operation on a thread may take before it is given up (and tried
/// again later, with what came meanwhile).
pub const SEND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(90);

/// Runs an outbox: takes input as it comes, runs operations when due, reports delivered
/// events. Returns when the input is closed and everything is sent. `session` names the
/// session in the logs.
pub async fn run<S: Sink>(
    session: String,
    mut outbox: Outbox,
    mut input: mpsc::UnboundedReceiver<Input>,
    sink: S,
) {
    let mut closed = false;
    let mut reported = outbox.delivered();
    loop {
        while let Ok(i) = input.try_recv() {
            outbox.apply(i);
        }
        let now = Instant::now();
        if let Some(op) = outbox.next(now) {
            let sent = tokio::time::timeout(SEND_TIMEOUT, sink.send(&op))
                .await
                .unwrap_or_else(|_| Err(format!("no answer within {}s", SEND_TIMEOUT.as_secs())));
            match sent {
                Ok(id) => outbox.done(id, Instant::now()),
                Err(e) => {
                    tracing::warn!(%session, op = op.name(), error = %e, "cannot update the session's thread; trying again");
                    outbox.failed(Instant::now());
                }
            }
            if outbox.delivered() > reported {
                reported = outbox.delivered();
                sink.delivered(reported).await;
            }
            continue;
        }
        let due = outbox.due(now);
        if closed && (due.is_none() || outbox.idle()) {
            return;
        }
        tokio::select! {
            i = input.recv(), if !closed => match i {
                Some(i) => outbox.apply(i),
                None => closed = true,
            },
            _ = sleep_until(due) => {}
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A body whose rich form is seven characters longer than its plain one (as a
    /// front end's markup would be).
    fn body(s: &str) -> Body {
        Body::new(s, format!("[rich] {s}"))
    }

    fn text(s: &str) -> Block {
        Block::new(body(s))
    }

    fn block(seq: i64, s: &str) -> Input {
        Input::Piece(Piece::Block {
            seq,
            block: text(s),
        })
    }

    #[derive(Default)]
    struct Log {
        /// (time since start, op)
        ops: Vec<(Duration, Op)>,
        delivered: Vec<i64>,
        /// Fail this many sends first.
        fail: usize,
        /// Then never answer this many sends.
        hang: usize,
        next_id: usize,
    }

    #[derive(Clone)]
    struct Recorder {
        log: Arc<Mutex<Log>>,
        start: Instant,
        latency: Duration,
    }

    impl Recorder {
        fn new(latency: Duration) -> Recorder {
            Recorder {
                log: Arc::default(),
                start: Instant::now(),
                latency,
            }
        }

        fn ops(&self) -> Vec<(Duration, Op)> {
            self.log.lock().unwrap().ops.clone()
        }

        /// The final text of every output message, after its edits, in order.
        fn messages(&self) -> Vec<String> {
            let mut msgs: Vec<(String, String)> = Vec::new();
            for (_, op) in self.ops() {
                match op {
                    Op::Post { body, .. } => {
                        let id = format!("$m{}", msgs.len());
                        msgs.push((id, body.plain));
                    }
                    Op::Edit { event_id, body, .. } => {
                        let m = msgs.iter_mut().find(|(id, _)| *id == event_id).unwrap();
                        m.1 = body.plain;
                    }
                    _ => {}
                }
            }
            msgs.into_iter().map(|(_, t)| t).collect()
        }
    }

    impl Sink for Recorder {
        async fn send(&self, op: &Op) -> Result<Option<String>, String> {
            tokio::time::sleep(self.latency).await;
            let hang = {
                let mut log = self.log.lock().unwrap();
                if log.fail > 0 {
                    log.fail -= 1;
                    return Err("M_LIMIT_EXCEEDED".into());
                }
                let hang = log.hang > 0;
                log.hang = log.hang.saturating_sub(1);
                hang
            };
            if hang {
                std::future::pending::<()>().await;
            }
            let mut log = self.log.lock().unwrap();
            log.ops.push((self.start.elapsed(), op.clone()));
            Ok(match op {
                Op::PostStatus { .. } => Some("$status".into()),
                Op::Post { .. } => {
                    let id = format!("$m{}", log.next_id);
                    log.next_id += 1;
                    Some(id)
                }
                _ => None,
            })
        }

        async fn delivered(&self, seq: i64) {
            self.log.lock().unwrap().delivered.push(seq);
        }
    }

    fn start(
        limits: Limits,
        rec: &Recorder,
    ) -> (mpsc::UnboundedSender<Input>, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(run(
            "test".into(),
            Outbox::new(limits, 0, None),
            rx,
            rec.clone(),
        ));
        (tx, task)
    }

    fn alone(seq: i64, key: &str, s: &str, ask: bool) -> Input {
        let mut b = body(s);
        if ask {
            b = b.asking(key);
        }
        Input::Piece(Piece::Block {
            seq,
            block: Block::alone(key, b),
        })
    }

    #[tokio::test(start_paused = true)]
    async fn an_approval_is_a_message_of_its_own_and_its_answer_edits_it() {
        let rec = Recorder::new(Duration::from_millis(10));
        let (tx, task) = start(Limits::default(), &rec);
        tx.send(block(1, "before")).unwrap();
        tx.send(alone(2, "a1", "approve?", true)).unwrap();
        tx.send(block(3, "after")).unwrap();
        tokio::time::sleep(Duration::from_secs(5)).await;
        // Output after the answer, then the answer, long after the question was posted.
        tx.send(block(4, "more")).unwrap();
        tx.send(alone(5, "a1", "approved", false)).unwrap();
        tx.send(block(6, "last")).unwrap();
        drop(tx);
        task.await.unwrap();
        assert_eq!(
            rec.messages(),
            ["before", "approved", "after\nmore", "last"]
        );
        let ops = rec.ops();
        // The question went out asking, on its own; its answer is an edit without.
        let asks: Vec<_> = ops
            .iter()
            .filter_map(|(_, op)| match op {
                Op::Post { body, .. } | Op::Edit { body, .. }
                    if body.plain.starts_with("appro") =>
                {
                    Some((matches!(op, Op::Post { .. }), body.ask.clone()))
                }
                _ => None,
            })
            .collect();
        assert_eq!(asks, [(true, Some("a1".into())), (false, None)]);
        assert_eq!(rec.log.lock().unwrap().delivered.last(), Some(&6));
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_after_a_restart_edits_the_message_posted_before() {
        let rec = Recorder::new(Duration::from_millis(10));
        let (tx, rx) = mpsc::unbounded_channel();
        let outbox = Outbox::new(Limits::default(), 7, Some("$status".into()))
            .with_placed([("a1".to_string(), "$old".to_string())]);
        let task = tokio::spawn(run("test".into(), outbox, rx, rec.clone()));
        tx.send(alone(8, "a1", "denied", false)).unwrap();
        tx.send(block(9, "next")).unwrap();
        drop(tx);
        task.await.unwrap();
        let ops: Vec<Op> = rec.ops().into_iter().map(|(_, op)| op).collect();
        assert!(
            matches!(&ops[0], Op::Edit { event_id, body, upto: 8 } if event_id == "$old" && body.plain == "denied"),
            "{ops:?}"
        );
        assert!(
            matches!(&ops[1], Op::Post { body, upto: 9 } if body.plain == "next"),
            "{ops:?}"
        );
        assert_eq!(rec.log.lock().unwrap().delivered, [8, 9]);
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_before_its_question_is_posted_replaces_it_in_place() {
        let rec = Recorder::new(Duration::from_millis(10));
        let (tx, rx) = mpsc::unbounded_channel();
        let mut outbox = Outbox::new(Limits::default(), 0, None);
        // All in before anything is sent: the question is never posted as a question.
        outbox.push(Piece::Block {
            seq: 1,
            block: text("out"),
        });
        outbox.push(Piece::Block {
            seq: 2,
            block: Block::alone("a1", body("approve?").asking("a1")),
        });
        outbox.push(Piece::Block {
            seq: 3,
            block: text("after"),
        });
        outbox.push(Piece::Block {
            seq: 4,
            block: Block::alone("a1", body("denied")),
        });
        let task = tokio::spawn(run("test".into(), outbox, rx, rec.clone()));
        drop(tx);
        task.await.unwrap();
        assert_eq!(rec.messages(), ["out", "denied", "after"]);
        assert_eq!(rec.log.lock().unwrap().delivered.last(), Some(&4));
    }

    #[tokio::test(start_paused = true)]
    async fn a_send_that_never_answers_is_given_up_and_tried_again() {
        let rec = Recorder::new(Duration::from_millis(10));
        rec.log.lock().unwrap().hang = 1;
        let (tx, task) = start(Limits::default(), &rec);
        tx.send(block(1, "hi")).unwrap();
        tokio::time::sleep(SEND_TIMEOUT / 2).await;
        assert!(rec.ops().is_empty(), "{:?}", rec.ops());
        tokio::time::sleep(SEND_TIMEOUT).await;
        drop(tx);
        task.await.unwrap();
        let ops = rec.ops();
        assert!(ops.iter().all(|(t, _)| *t >= SEND_TIMEOUT), "{ops:?}");
        assert_eq!(rec.messages(), ["hi"]);
        assert_eq!(rec.log.lock().unwrap().delivered, [1]);
    }

    #[tokio::test(start_paused = true)]
    async fn the_status_comes_first_and_the_first_output_at_once() {
        let rec = Recorder::new(Duration::from_millis(10));
        let (tx, task) = start(Limits::default(), &rec);
        tx.send(Input::Status(body("queued"))).unwrap();
        tx.send(block(1, "hi")).unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let ops = rec.ops();
        assert!(matches!(ops[0].1, Op::PostStatus { .. }), "{ops:?}");
        assert!(
            matches!(&ops[1].1, Op::Post { body, upto: 1 } if body.plain == "hi"),
            "{ops:?}"
        );
        assert!(ops[1].0 < Duration::from_millis(50), "{ops:?}");
        drop(tx);
        task.await.unwrap();
        assert_eq!(rec.log.lock().unwrap().delivered, [1]);
    }

    #[tokio::test(start_paused = true)]
    async fn text_grows_by_edits_at_most_once_per_cadence() {
        let rec = Recorder::new(Duration::from_millis(20));
        let limits = Limits::default();
        let (tx, task) = start(limits.clone(), &rec);
        for i in 1..=40 {
            tx.send(block(i, &format!("line {i}"))).unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        drop(tx);
        task.await.unwrap();
        let ops = rec.ops();
        let edits: Vec<Duration> = ops
            .iter()
            .filter(|(_, op)| matches!(op, Op::Edit { .. }))
            .map(|(t, _)| *t)
            .collect();
        assert!(edits.len() >= 2, "{ops:?}");
        for w in edits.windows(2) {
            assert!(
                w[1] - w[0] >= limits.edit_every,
                "edits too close: {edits:?}"
            );
        }
        // 40 lines over 4 s: one post and a few edits, not 40 events.
        assert!(ops.len() <= 6, "{} ops: {ops:?}", ops.len());
        let expect: Vec<String> = (1..=40).map(|i| format!("line {i}")).collect();
        assert_eq!(rec.messages(), [expect.join("\n")]);
        assert_eq!(rec.log.lock().unwrap().delivered.last(), Some(&40));
    }

    #[tokio::test(start_paused = true)]
    async fn a_flood_is_coalesced_into_few_events_and_nothing_is_lost() {
        let rec = Recorder::new(Duration::from_millis(30));
        let (tx, task) = start(Limits::default(), &rec);
        tx.send(Input::Status(body("running"))).unwrap();
        for i in 1..=1000 {
            tx.send(block(i, &format!("line {i}/1000"))).unwrap();
            if i % 50 == 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        drop(tx);
        task.await.unwrap();
        let ops = rec.ops();
        assert!(ops.len() < 60, "{} events for 1000 lines", ops.len());
        let all: Vec<String> = rec
            .messages()
            .iter()
            .flat_map(|m| m.lines().map(str::to_string).collect::<Vec<_>>())
            .collect();
        let expect: Vec<String> = (1..=1000).map(|i| format!("line {i}/1000")).collect();
        assert_eq!(all, expect);
        for m in rec.messages() {
            assert!(
                m.len() * 2 < Limits::default().max_size + 200,
                "{}",
                m.len()
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn failures_delay_and_merge_but_drop_nothing() {
        let rec = Recorder::new(Duration::from_millis(5));
        rec.log.lock().unwrap().fail = 3;
        let (tx, task) = start(Limits::default(), &rec);
        tx.send(block(1, "a")).unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        tx.send(block(2, "b")).unwrap();
        tx.send(Input::Piece(Piece::Nothing { seq: 3 })).unwrap();
        drop(tx);
        task.await.unwrap();
        let ops = rec.ops();
        // Retried after 1 s, 2 s, 4 s: one post with both blocks.
        assert_eq!(ops.len(), 1, "{ops:?}");
        assert!(ops[0].0 >= Duration::from_secs(7), "{ops:?}");
        assert_eq!(rec.messages(), ["a\nb"]);
        assert_eq!(rec.log.lock().unwrap().delivered, [3]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_tool_result_completes_its_line_and_a_turn_starts_a_new_message() {
        let rec = Recorder::new(Duration::from_millis(5));
        let (tx, task) = start(Limits::default(), &rec);
        let call = Block::keyed("t1", body("▸ Bash ls …"));
        let result = Block::keyed("t1", body("▸ Bash ls → ok"));
        tx.send(Input::Piece(Piece::Block {
            seq: 1,
            block: call,
        }))
        .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        tx.send(Input::Piece(Piece::Block {
            seq: 2,
            block: result,
        }))
        .unwrap();
        tx.send(block(3, "✓ done")).unwrap();
        tokio::time::sleep(Duration::from_secs(3)).await;
        tx.send(Input::Piece(Piece::TurnStart { seq: 4 })).unwrap();
        tx.send(block(5, "second turn")).unwrap();
        drop(tx);
        task.await.unwrap();
        assert_eq!(
            rec.messages(),
            ["▸ Bash ls → ok\n✓ done", "second turn"],
            "{:?}",
            rec.ops()
        );
    }

    #[test]
    fn events_that_show_nothing_are_marked_delivered() {
        let now = Instant::now();
        let mut o = Outbox::new(Limits::default(), 4, Some("$s".into()));
        o.push(Piece::Nothing { seq: 5 });
        o.push(Piece::Nothing { seq: 5 }); // a repeat is ignored
        assert_eq!(o.next(now), Some(Op::Mark { upto: 5 }));
        o.done(None, now);
        assert_eq!(o.delivered(), 5);
        assert!(o.idle());
        assert_eq!(o.next(now), None);
        // Already delivered events are not taken again.
        o.push(Piece::Block {
            seq: 3,
            block: text("old"),
        });
        assert!(o.idle());
    }

    #[test]
    fn a_block_larger_than_a_message_is_a_message_of_its_own() {
        let now = Instant::now();
        let limits = Limits {
            max_size: 100,
            ..Limits::default()
        };
        let mut o = Outbox::new(limits, 0, None);
        o.push(Piece::Block {
            seq: 1,
            block: text("small"),
        });
        o.push(Piece::Block {
            seq: 2,
            block: text(&"x".repeat(200)),
        });
        o.push(Piece::Block {
            seq: 3,
            block: text("after"),
        });
        let mut posts = Vec::new();
        while let Some(op) = o.next(now) {
            if let Op::Post { body, .. } = &op {
                posts.push(body.plain.len());
            }
            o.done(Some(format!("$e{}", posts.len())), now);
        }
        assert_eq!(posts, [5, 200, 5]);
        assert_eq!(o.delivered(), 3);
    }
}
