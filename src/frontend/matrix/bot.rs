//! The bot: the sync loop, incoming messages parsed into commands for the shared chat
//! actions, and replies sent in order.

use super::*;

// --- the bot: sync and commands -------------------------------------------------------

#[derive(Clone)]
pub(super) struct Bot {
    pub(super) inner: Arc<BotInner>,
}

pub(super) struct BotInner {
    pub(super) client: Client,
    pub(super) cfg: MatrixConfig,
    pub(super) me: OwnedUserId,
    pub(super) replies: mpsc::UnboundedSender<Outgoing>,
    pub(super) deliveries: Deliveries<MatrixThreads>,
    pub(super) handled: tokio::sync::Mutex<Handled>,
    /// The chat rules (who may steer, what a thread command does).
    pub(super) chat: Chat,
    /// Rooms whose messages count: joined, from the bot's own join on.
    pub(super) active_rooms: Mutex<HashSet<String>>,
}

/// A message from someone in a room, as the sync gave it.
#[derive(Debug, Clone)]
pub(super) struct Incoming {
    room: OwnedRoomId,
    event_id: String,
    sender: String,
    content: Value,
}

/// An undecryptable message, tried again when keys arrive.
pub(super) struct Undecrypted {
    room: OwnedRoomId,
    event: matrix_sdk::ruma::serde::Raw<matrix_sdk::ruma::events::AnySyncTimelineEvent>,
    since: tokio::time::Instant,
}

pub(super) fn sync_filter() -> Filter {
    let mut timeline = RoomEventFilter::default();
    timeline.limit = Some(UInt::from(TIMELINE_LIMIT));
    let mut room = RoomFilter::default();
    room.timeline = timeline;
    let mut def = FilterDefinition::default();
    def.room = room;
    Filter::FilterDefinition(def)
}

impl Bot {
    fn client(&self) -> &Client {
        &self.inner.client
    }

    fn prefix(&self) -> &str {
        &self.inner.cfg.command_prefix
    }

    fn allowed(&self, user: &str) -> bool {
        self.inner.cfg.allowed_users.iter().any(|u| u == user)
    }

    pub(super) async fn sync_loop(&self) -> Result<()> {
        let mut token: Option<String> = load_json(self.client(), KEY_SYNC_TOKEN).await;
        let mut pending: Vec<Undecrypted> = Vec::new();
        let mut failures = 0u32;
        loop {
            let first = token.is_none();
            let settings = SyncSettings::new()
                .filter(sync_filter())
                .timeout(if first {
                    Duration::ZERO
                } else {
                    Duration::from_secs(30)
                })
                .token(SyncToken::from_optional_token(token.clone()));
            match self.client().sync_once(settings).await {
                Ok(resp) => {
                    failures = 0;
                    self.handle_sync(&resp, token.as_deref(), &mut pending)
                        .await;
                    token = Some(resp.next_batch.clone());
                    save_json(self.client(), KEY_SYNC_TOKEN, &resp.next_batch).await;
                }
                Err(e) => {
                    if matches!(
                        e.client_api_error_kind(),
                        Some(ErrorKind::UnknownToken { .. })
                    ) {
                        return Err(MatrixError::LoggedOut(e.to_string()));
                    }
                    failures += 1;
                    let pause = Duration::from_secs(1 << failures.min(5));
                    warn!(error = %e, retry_in = ?pause, "Matrix sync failed");
                    tokio::time::sleep(pause).await;
                }
            }
        }
    }

    /// Handles one sync response that started at `since` (None: the first sync ever,
    /// whose old messages are history, not commands).
    async fn handle_sync(
        &self,
        resp: &matrix_sdk::sync::SyncResponse,
        since: Option<&str>,
        pending: &mut Vec<Undecrypted>,
    ) {
        let first = since.is_none();
        // Invites.
        for room_id in resp.rooms.invited.keys() {
            self.consider_invite(room_id).await;
        }
        // Messages, in order per room.
        let mut incoming: Vec<Incoming> = Vec::new();
        let mut rooms_changed = false;
        for (room_id, update) in &resp.rooms.joined {
            let was_active = self.is_active(room_id);
            let mut active = first || was_active;
            if first && !was_active {
                self.set_active(room_id);
                rooms_changed = true;
            }
            // A long absence: the sync gives only the latest events; fetch the rest.
            let mut events = match (since, &update.timeline.prev_batch) {
                (Some(since), Some(prev)) if update.timeline.limited && was_active => {
                    self.gap(room_id, prev, since).await
                }
                _ => Vec::new(),
            };
            events.extend(update.timeline.events.iter().cloned());
            for ev in &events {
                let raw = ev.raw();
                let Ok(v) = raw.deserialize_as_unchecked::<Value>() else {
                    continue;
                };
                let kind = v["type"].as_str().unwrap_or("");
                let sender = v["sender"].as_str().unwrap_or("");
                if kind == "m.room.member"
                    && v["state_key"].as_str() == Some(self.inner.me.as_str())
                    && v["content"]["membership"] == "join"
                {
                    if !active {
                        self.set_active(room_id);
                        rooms_changed = true;
                        active = true;
                    }
                    continue;
                }
                if !active || first || sender == self.inner.me.as_str() {
                    continue;
                }
                if let TimelineEventKind::UnableToDecrypt { event, .. } = &ev.kind {
                    pending.push(Undecrypted {
                        room: room_id.clone(),
                        event: event.clone(),
                        since: tokio::time::Instant::now(),
                    });
                    continue;
                }
                if let Some(inc) = incoming_of(room_id, &v) {
                    incoming.push(inc);
                }
            }
            if !active {
                // Joined, but the join itself was not in view: from now on, it counts.
                self.set_active(room_id);
                rooms_changed = true;
            }
        }
        if rooms_changed {
            let list: Vec<String> = self
                .inner
                .active_rooms
                .lock()
                .expect("rooms")
                .iter()
                .cloned()
                .collect();
            save_json(self.client(), KEY_ROOMS, &list).await;
        }
        // Messages whose keys came late.
        let mut still = Vec::new();
        for u in pending.drain(..) {
            let Some(room) = self.client().get_room(&u.room) else {
                continue;
            };
            match room.decrypt_event(u.event.cast_ref_unchecked(), None).await {
                Ok(te) if !te.kind.is_utd() => {
                    if let Ok(v) = te.raw().deserialize_as_unchecked::<Value>()
                        && let Some(inc) = incoming_of(&u.room, &v)
                    {
                        incoming.push(inc);
                    }
                }
                _ if u.since.elapsed() < UTD_RETRY => still.push(u),
                _ => warn!(room = %u.room, "a message could not be decrypted; it is not handled"),
            }
        }
        *pending = still;
        self.handle_all(incoming).await;
    }

    /// The events of a room between the sync position `to` and the start of a limited
    /// timeline (`from`), oldest first.
    async fn gap(&self, room_id: &OwnedRoomId, from: &str, to: &str) -> Vec<TimelineEvent> {
        let Some(room) = self.client().get_room(room_id) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let mut from = from.to_string();
        for _ in 0..GAP_PAGES {
            let mut opts = MessagesOptions::backward();
            opts.from = Some(from.clone());
            opts.to = Some(to.to_string());
            opts.limit = UInt::from(100u32);
            match room.messages(opts).await {
                Ok(page) => {
                    let n = page.chunk.len();
                    out.extend(page.chunk);
                    match page.end {
                        Some(end) if n > 0 => from = end,
                        _ => break,
                    }
                }
                Err(e) => {
                    warn!(room = %room_id, error = %e, "cannot fetch the messages sent while firstmate was away; some may not be handled");
                    break;
                }
            }
        }
        info!(room = %room_id, events = out.len(), "fetched the messages sent while firstmate was away");
        out.reverse();
        out
    }

    fn is_active(&self, room: &OwnedRoomId) -> bool {
        self.inner
            .active_rooms
            .lock()
            .expect("rooms")
            .contains(room.as_str())
    }

    fn set_active(&self, room: &OwnedRoomId) {
        self.inner
            .active_rooms
            .lock()
            .expect("rooms")
            .insert(room.to_string());
    }

    async fn consider_invite(&self, room_id: &OwnedRoomId) {
        let Some(room) = self.client().get_room(room_id) else {
            return;
        };
        if room.state() != RoomState::Invited {
            return;
        }
        let inviter = match room.invite_details().await {
            Ok(d) => d.inviter_id.to_string(),
            Err(e) => {
                warn!(room = %room_id, error = %e, "cannot read an invite");
                return;
            }
        };
        if !self.allowed(&inviter) {
            info!(room = %room_id, %inviter, "ignoring an invite from a user not in matrix.allowed_users");
            return;
        }
        match room.join().await {
            Ok(()) => info!(room = %room_id, %inviter, "joined a room"),
            Err(e) => {
                warn!(room = %room_id, error = %e, "cannot join a room; trying again on the next sync")
            }
        }
    }

    /// Handles a sync's messages: rooms side by side, each room's in order. Returns when
    /// all are handled, so the sync position moves on only then.
    async fn handle_all(&self, incoming: Vec<Incoming>) {
        let mut by_room: Vec<(OwnedRoomId, Vec<Incoming>)> = Vec::new();
        for inc in incoming {
            match by_room.iter_mut().find(|(r, _)| *r == inc.room) {
                Some((_, list)) => list.push(inc),
                None => by_room.push((inc.room.clone(), vec![inc])),
            }
        }
        let tasks = by_room.into_iter().map(|(_, list)| {
            let bot = self.clone();
            async move {
                for inc in list {
                    bot.handle_once(inc).await;
                }
            }
        });
        futures_util::future::join_all(tasks).await;
    }

    async fn handle_once(&self, inc: Incoming) {
        let mut handled = self.inner.handled.lock().await;
        if handled.contains(&inc.event_id) {
            debug!(event = %inc.event_id, "already handled");
            return;
        }
        drop(handled);
        self.handle(&inc).await;
        handled = self.inner.handled.lock().await;
        handled.add(self.client(), &inc.event_id).await;
    }

    async fn handle(&self, inc: &Incoming) {
        let c = &inc.content;
        if c["m.relates_to"]["rel_type"] == "m.annotation" {
            return self.reaction(inc).await;
        }
        if matches!(
            c["msgtype"].as_str(),
            Some("m.file" | "m.image" | "m.video" | "m.audio")
        ) {
            return self.attachment(inc).await;
        }
        if c["msgtype"] != "m.text" {
            return;
        }
        let rel = &c["m.relates_to"];
        if rel["rel_type"] == "m.replace" {
            return; // an edit: commands run as first sent
        }
        let thread = (rel["rel_type"] == "m.thread")
            .then(|| rel["event_id"].as_str().map(str::to_string))
            .flatten();
        let Some(body) = c["body"].as_str() else {
            return;
        };
        let is_plain_reply = rel.get("m.in_reply_to").is_some() && rel["is_falling_back"] != true;
        let body = if is_plain_reply {
            render::strip_reply_fallback(body)
        } else {
            body
        };
        match command::parse_prefixed(body, self.prefix()) {
            None => {
                if let Some(root) = thread {
                    self.prompt(inc, &root, body).await;
                }
            }
            Some(Err(e)) => self.reply(inc, thread.as_deref(), render::problem(e.message())),
            Some(Ok(Command::Prompt(text))) => {
                if let Some(root) = thread {
                    self.prompt(inc, &root, &text).await;
                }
            }
            Some(Ok(cmd)) => self.command(inc, thread.as_deref(), cmd).await,
        }
    }

    /// A file or image posted in a session's thread: into the workspace's inbox, and
    /// its caption (if any) with the file's path as the next prompt. Encrypted media
    /// (in encrypted rooms) is decrypted by the SDK on the way.
    async fn attachment(&self, inc: &Incoming) {
        let c = &inc.content;
        let rel = &c["m.relates_to"];
        if rel["rel_type"] != "m.thread" {
            return;
        }
        let Some(root) = rel["event_id"].as_str() else {
            return;
        };
        let body = c["body"].as_str().unwrap_or_default();
        // `filename` set: `body` is a caption; otherwise `body` is the file's name.
        let (name, caption) = match c["filename"].as_str() {
            Some(f) if f != body => (f.to_string(), body.to_string()),
            Some(f) => (f.to_string(), String::new()),
            None => (body.to_string(), String::new()),
        };
        let source = if let Some(url) = c["url"].as_str() {
            MediaSource::Plain(url.into())
        } else {
            match serde_json::from_value::<EncryptedFile>(c["file"].clone()) {
                Ok(f) => MediaSource::Encrypted(Box::new(f)),
                Err(e) => {
                    warn!(event = %inc.event_id, error = %e, "an attachment without a usable url or file");
                    return;
                }
            }
        };
        let client = self.client().clone();
        let file = Attachment {
            name,
            size: c["info"]["size"].as_u64(),
            open: Box::pin(async move {
                let request = MediaRequestParameters {
                    source,
                    format: MediaFormat::File,
                };
                let bytes = client
                    .media()
                    .get_media_content(&request, false)
                    .await
                    .map_err(|e| e.to_string())?;
                let reader: Download = Box::pin(std::io::Cursor::new(bytes));
                Ok(reader)
            }),
        };
        let chat = &self.inner.chat;
        let Some((session, replies)) = chat
            .prompt_with_files(&self.actor(inc), root, &caption, vec![file])
            .await
        else {
            return; // some other thread
        };
        for r in replies {
            self.answer(inc, Some(root), r);
        }
        self.inner.deliveries.ensure(&session);
    }

    /// A reaction: ✅ ♾️ ❌ on an approval's message answer it; other reactions, and
    /// reactions on other messages, mean nothing to the bot.
    async fn reaction(&self, inc: &Incoming) {
        let rel = &inc.content["m.relates_to"];
        let (Some(target), Some(answer)) = (
            rel["event_id"].as_str(),
            rel["key"].as_str().and_then(Answer::from_reaction),
        ) else {
            return;
        };
        if let Some(approval) = self.approval_of(inc, target).await {
            return self.answer_reaction(inc, approval, answer).await;
        }
        // A reaction can come within milliseconds of the approval's message, before the
        // delivery stored which message that was: look again for a few seconds, without
        // holding up the sync.
        let (bot, inc, target) = (self.clone(), inc.clone(), target.to_string());
        tokio::spawn(async move {
            for _ in 0..25 {
                tokio::time::sleep(Duration::from_millis(200)).await;
                if let Some(approval) = bot.approval_of(&inc, &target).await {
                    return bot.answer_reaction(&inc, approval, answer).await;
                }
            }
        });
    }

    /// The approval whose message is `target`, if it is one.
    async fn approval_of(
        &self,
        inc: &Incoming,
        target: &str,
    ) -> Option<crate::store::ApprovalRecord> {
        match self
            .inner
            .chat
            .engine()
            .store()
            .approval_for_message(FRONTEND, target)
            .await
        {
            Ok(found) => found,
            Err(e) => {
                warn!(event = %inc.event_id, error = %e, "cannot look up an approval");
                None
            }
        }
    }

    async fn answer_reaction(
        &self,
        inc: &Incoming,
        approval: crate::store::ApprovalRecord,
        answer: Answer,
    ) {
        let store = self.inner.chat.engine().store();
        let reply = self
            .inner
            .chat
            .answer(
                &self.actor(inc),
                &approval.session_id,
                Some(&approval.id),
                answer,
            )
            .await;
        let root = match store.binding(&approval.session_id, FRONTEND).await {
            Ok(Some(b)) => b.thread_ref,
            _ => return,
        };
        self.answer(inc, Some(&root), reply);
        self.inner.deliveries.ensure(&approval.session_id);
    }

    fn actor(&self, inc: &Incoming) -> Actor {
        Actor {
            id: inc.sender.clone(),
            mention: inc.sender.clone(),
            allowed: self.allowed(&inc.sender),
            roles: Vec::new(),
        }
    }

    /// A message in a thread that is not a command: the next prompt of its session.
    async fn prompt(&self, inc: &Incoming, root: &str, text: &str) {
        let chat = &self.inner.chat;
        let Some((session, reply)) = chat.prompt(&self.actor(inc), root, text).await else {
            return; // some other thread
        };
        if let Some(r) = reply {
            self.answer(inc, Some(root), r);
        }
        self.inner.deliveries.ensure(&session);
    }

    async fn command(&self, inc: &Incoming, thread: Option<&str>, cmd: Command) {
        let chat = &self.inner.chat;
        let prefix = self.prefix().to_string();
        match cmd {
            Command::Help => self.reply(inc, thread, render::help(&prefix)),
            Command::List => match chat.sessions_in(inc.room.as_str()).await {
                Ok(list) => self.reply(inc, thread, render::list(&list, &prefix)),
                Err(r) => self.answer(inc, thread, r),
            },
            Command::New(args) => {
                let actor = self.actor(inc);
                if let Err(r) = chat.may_start(&actor) {
                    return self.answer(inc, thread, r);
                }
                if thread.is_some() {
                    return self.reply(
                        inc,
                        thread,
                        render::problem(&format!(
                            "`new` starts a thread of its own: send `{prefix} new ...` in the room, not inside a thread"
                        )),
                    );
                }
                if let Some(s) = chat.session_of(&inc.event_id).await {
                    // Handled before a crash: just make sure its output flows.
                    self.inner.deliveries.ensure(&s);
                    return;
                }
                // The thread is rooted at this message: bound with the session.
                let req = chat.new_request(
                    args,
                    &actor,
                    inc.room.as_str(),
                    None,
                    Some(inc.event_id.clone()),
                );
                match chat.engine().new_session(req).await {
                    Ok(s) => {
                        info!(session = %s.id, room = %inc.room, "session started from Matrix");
                        self.inner.deliveries.ensure(&s.id);
                    }
                    Err(e) => self.answer(inc, None, e.into()),
                }
            }
            Command::Use { .. } | Command::Prompt(_) => {}
            cmd => {
                let (session, reply) = chat.thread_command(&self.actor(inc), thread, &cmd).await;
                self.answer(inc, thread, reply);
                if let Some(id) = session {
                    self.inner.deliveries.ensure(&id);
                }
            }
        }
    }

    /// Answers with a chat action's reply, in Matrix's words.
    fn answer(&self, inc: &Incoming, thread: Option<&str>, reply: Reply) {
        let prefix = self.prefix();
        let body = match reply {
            // The thread shows it (the status message, the session's own lines).
            Reply::Done { .. } => return,
            Reply::Refused => render::problem(&format!(
                "{} may not start or steer sessions here; only the users in matrix.allowed_users may",
                inc.sender
            )),
            Reply::NotInThread(name) => render::problem(&format!(
                "`{name}` works in a session's thread: send `{prefix} {name}` as a reply in the thread of the session (`{prefix} list` shows the sessions here)"
            )),
            Reply::Problem(text) => render::problem(&text),
            Reply::Status(s) => render::status(&s),
            Reply::File { name, data } => {
                let Some(root) = thread else { return };
                let _ = self.inner.replies.send(Outgoing::File {
                    room: inc.room.clone(),
                    root: root.to_string(),
                    name,
                    data,
                });
                return;
            }
        };
        self.reply(inc, thread, body);
    }

    /// Answers a message: in its thread when it was in one, else as a reply to it.
    fn reply(&self, inc: &Incoming, thread: Option<&str>, body: Body) {
        let content = render::message(&body, true);
        let content = match thread {
            Some(root) => render::in_thread(content, root),
            None => render::reply_to(content, &inc.event_id),
        };
        let _ = self.inner.replies.send(Outgoing::Message {
            room: inc.room.clone(),
            content,
        });
    }
}

/// A room message from the sync, when it is one someone wrote.
pub(super) fn incoming_of(room: &OwnedRoomId, v: &Value) -> Option<Incoming> {
    if v["type"] != "m.room.message" && v["type"] != "m.reaction" {
        return None;
    }
    Some(Incoming {
        room: room.clone(),
        event_id: v["event_id"].as_str()?.to_string(),
        sender: v["sender"].as_str()?.to_string(),
        content: v["content"].clone(),
    })
}

// --- replies ----------------------------------------------------------------------------

/// Answers to commands, sent one at a time, in order.
pub(super) enum Outgoing {
    Message {
        room: OwnedRoomId,
        content: Value,
    },
    File {
        room: OwnedRoomId,
        root: String,
        name: String,
        data: Vec<u8>,
    },
}

pub(super) async fn send_replies(client: Client, mut rx: mpsc::UnboundedReceiver<Outgoing>) {
    while let Some(out) = rx.recv().await {
        let room_id = match &out {
            Outgoing::Message { room, .. } | Outgoing::File { room, .. } => room.clone(),
        };
        let Some(room) = client.get_room(&room_id) else {
            warn!(room = %room_id, "cannot answer: not in the room");
            continue;
        };
        let res = match out {
            Outgoing::Message { content, .. } => room
                .send_raw("m.room.message", content)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Outgoing::File {
                root, name, data, ..
            } => send_file(&room, &root, &name, data).await,
        };
        if let Err(e) = res {
            warn!(room = %room_id, error = %e, "cannot answer a command");
        }
    }
}

/// The media type a file goes out with, from its name (clients pick a viewer by it).
pub(super) fn mime_of(name: &str) -> &'static str {
    let lower = name.to_ascii_lowercase();
    let ext = lower.rsplit('.').next().unwrap_or_default();
    match ext {
        "md" => "text/markdown",
        "txt" | "log" | "rs" | "py" | "sh" | "toml" | "yaml" | "yml" => "text/plain",
        "csv" => "text/csv",
        "json" => "application/json",
        "gz" | "tgz" => "application/gzip",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "pdf" => "application/pdf",
        _ => "application/octet-stream",
    }
}

pub(super) async fn send_file(
    room: &Room,
    root: &str,
    name: &str,
    data: Vec<u8>,
) -> Result<(), String> {
    let root: OwnedEventId = root.try_into().map_err(|e| format!("{e}"))?;
    let mime: mime::Mime = mime_of(name)
        .parse()
        .unwrap_or(mime::APPLICATION_OCTET_STREAM);
    let config = AttachmentConfig::new().reply(Some(SdkReply {
        event_id: root,
        enforce_thread: EnforceThread::Threaded(ReplyWithinThread::No),
        add_mentions: AddMentions::No,
    }));
    room.send_attachment(name, &mime, data, config)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}
