//! Matrix's side of delivery: a session's thread is the room and the root event its
//! binding names; the outbox's operations become thread messages and edits.

use super::*;

// --- delivery of session output to threads ---------------------------------------------

/// Matrix's side of [`Deliveries`]: a session's thread is the room and the root event
/// the binding names; the status message's event id is kept in the SDK's store.
pub(super) struct MatrixThreads {
    pub(super) client: Client,
    pub(super) store: Store,
}

impl Threads for MatrixThreads {
    type Sink = RoomSink;
    type Renderer = Renderer;

    fn frontend(&self) -> &'static str {
        FRONTEND
    }

    async fn sink(
        &self,
        binding: &Binding,
        record: &SessionRecord,
    ) -> Option<(RoomSink, Option<String>)> {
        let session = &record.id;
        let room: OwnedRoomId = match record.room.as_str().try_into() {
            Ok(r) => r,
            Err(e) => {
                warn!(%session, error = %e, "the session's room is not a Matrix room id");
                return None;
            }
        };
        let status_event: Option<String> = load_json(&self.client, &status_key_of(session)).await;
        let sink = RoomSink {
            client: self.client.clone(),
            room,
            root: binding.thread_ref.clone(),
            session: session.clone(),
            store: self.store.clone(),
        };
        Some((sink, status_event))
    }

    fn status(&self, s: &SessionRecord) -> Body {
        render::status(s)
    }

    fn limits(&self) -> Limits {
        Limits::default()
    }
}

/// The reactions the bot puts on an approval that waits: approve, approve for the
/// session, deny.
pub(super) const APPROVAL_REACTIONS: [&str; 3] = ["✅", "♾️", "❌"];

/// A session thread in a Matrix room.
pub(super) struct RoomSink {
    client: Client,
    room: OwnedRoomId,
    root: String,
    session: String,
    store: Store,
}

impl Sink for RoomSink {
    async fn send(&self, op: &Op) -> Result<Option<String>, String> {
        let content = match op {
            Op::Mark { .. } => return Ok(None),
            Op::PostStatus { body } => render::in_thread(render::message(body, true), &self.root),
            Op::EditStatus { event_id, body } => {
                render::replacement(render::message(body, true), event_id)
            }
            Op::Post { body, .. } => render::in_thread(render::message(body, false), &self.root),
            Op::Edit { event_id, body, .. } => {
                render::replacement(render::message(body, false), event_id)
            }
        };
        let room = self
            .client
            .get_room(&self.room)
            .ok_or_else(|| format!("the bot is not in the room {}", self.room))?;
        let sent = room
            .send_raw("m.room.message", content)
            .await
            .map_err(|e| e.to_string())?;
        let id = sent.response.event_id.to_string();
        if matches!(op, Op::PostStatus { .. }) {
            save_json(&self.client, &status_key_of(&self.session), &id).await;
        }
        if let Op::Post { body, .. } = op
            && body.ask.is_some()
        {
            // The answers as reactions already there: one tap on a phone.
            for key in APPROVAL_REACTIONS {
                let reaction = json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": id, "key": key}});
                if let Err(e) = room.send_raw("m.reaction", reaction).await {
                    warn!(session = %self.session, error = %e, "cannot add the approval's reactions");
                    break;
                }
            }
        }
        Ok(Some(id))
    }

    async fn delivered(&self, seq: i64) {
        if let Err(e) = self.store.set_delivered(&self.session, FRONTEND, seq).await {
            warn!(session = %self.session, error = %e, "cannot record what was delivered");
        }
    }
}
