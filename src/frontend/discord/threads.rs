//! Discord's side of delivery: a session's thread is the Discord thread its binding
//! names; its status message id is kept in the binding.

use super::*;

// --- delivery of session output to threads ---------------------------------------------

/// Discord's side of [`Deliveries`]: a session's thread is the Discord thread the
/// binding names; its status message id is kept in the binding.
pub(super) struct DiscordThreads {
    pub(super) rest: Rest,
    pub(super) store: Store,
}

impl Threads for DiscordThreads {
    type Sink = ThreadSink;
    type Renderer = Renderer;

    fn frontend(&self) -> &'static str {
        FRONTEND
    }

    async fn sink(
        &self,
        binding: &Binding,
        record: &SessionRecord,
    ) -> Option<(ThreadSink, Option<String>)> {
        let thread = match binding.thread_ref.parse::<u64>() {
            Ok(t) if t > 0 => t,
            _ => {
                warn!(session = %record.id, thread = %binding.thread_ref, "not a Discord thread id");
                return None;
            }
        };
        let sink = ThreadSink {
            rest: self.rest.clone(),
            thread,
            session: record.id.clone(),
            store: self.store.clone(),
        };
        Some((sink, binding.status_ref.clone()))
    }

    fn status(&self, s: &SessionRecord) -> Body {
        render::status(s)
    }

    fn limits(&self) -> Limits {
        Limits {
            max_size: MESSAGE_CHARS,
            ..Limits::default()
        }
    }
}

pub(super) struct ThreadSink {
    rest: Rest,
    thread: u64,
    session: String,
    store: Store,
}

impl ThreadSink {
    /// An output message: an approval that waits has its three buttons; any other
    /// message none (an answered approval's edit takes its buttons away).
    fn output(&self, body: &Body) -> Value {
        let mut m = message(&clip(&body.plain));
        m["components"] = match &body.ask {
            Some(approval) => approval_buttons(&self.session, approval),
            None => json!([]),
        };
        m
    }
}

pub(super) fn message_id(id: &str) -> Result<u64, String> {
    id.parse::<u64>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("{id:?} is not a Discord message id"))
}

impl Sink for ThreadSink {
    async fn send(&self, op: &Op) -> Result<Option<String>, String> {
        let rest = &self.rest;
        let with_buttons = |body: &Body| {
            let mut m = message(&clip(&body.plain));
            m["components"] = buttons(&self.session);
            m
        };
        let sent = match op {
            Op::Mark { .. } => return Ok(None),
            Op::PostStatus { body } => {
                let id = rest
                    .send_message(self.thread, with_buttons(body))
                    .await
                    .map_err(|e| e.to_string())?;
                let id = id.to_string();
                if let Err(e) = self
                    .store
                    .set_status_ref(&self.session, FRONTEND, &id)
                    .await
                {
                    warn!(session = %self.session, error = %e, "cannot keep the status message id");
                }
                return Ok(Some(id));
            }
            Op::EditStatus { event_id, body } => {
                rest.edit_message(self.thread, message_id(event_id)?, with_buttons(body))
                    .await
            }
            Op::Post { body, .. } => rest.send_message(self.thread, self.output(body)).await,
            Op::Edit { event_id, body, .. } => {
                rest.edit_message(self.thread, message_id(event_id)?, self.output(body))
                    .await
            }
        };
        sent.map(|id| Some(id.to_string()))
            .map_err(|e| e.to_string())
    }

    async fn delivered(&self, seq: i64) {
        if let Err(e) = self.store.set_delivered(&self.session, FRONTEND, seq).await {
            warn!(session = %self.session, error = %e, "cannot record what was delivered");
        }
    }
}
