//! `/agent`, its buttons and thread messages: each parsed into a command or prompt for
//! the shared chat actions, the reply rendered in Discord's words.

use super::*;

pub(super) struct Handler {
    pub(super) inner: Arc<HandlerInner>,
}

pub(super) struct HandlerInner {
    pub(super) rest: Rest,
    pub(super) cfg: DiscordConfig,
    pub(super) engine: Engine,
    /// The chat rules (who may steer, what a thread command does).
    pub(super) chat: Chat,
    /// Made at the first READY, when serenity's HTTP client is at hand.
    pub(super) deliveries: OnceLock<Deliveries<DiscordThreads>>,
    /// The guild of each channel and thread commands came from: a thread's web link
    /// names its guild.
    pub(super) guilds: Arc<dashmap::DashMap<String, u64>>,
}

/// The `/agent` command and its subcommands.
pub(super) fn agent_command() -> CreateCommand {
    use CommandOptionType::{String as Str, SubCommand};
    let text = |name: &str, what: &str| CreateCommandOption::new(Str, name, what);
    let new = CreateCommandOption::new(SubCommand, "new", "Start a session in a new thread")
        .add_sub_option(text("prompt", "The first prompt").required(true))
        .add_sub_option(text("agent", "The agent ([agents.*])").set_autocomplete(true))
        .add_sub_option(text("model", "The model the agent uses"))
        .add_sub_option(text("repo", "A repository alias or URL").set_autocomplete(true))
        .add_sub_option(text("branch", "The branch to work on"))
        .add_sub_option(text("image", "The container image"))
        .add_sub_option(text("timeout", "Idle timeout, like 30m or 2h"));
    let get = CreateCommandOption::new(
        SubCommand,
        "get",
        "A workspace file, or a folder as .tar.gz",
    )
    .add_sub_option(text("path", "The path in /workspace").required(true));
    let mut cmd = CreateCommand::new(COMMAND)
        .description("Run an AI coding agent in a container")
        .add_option(new)
        .add_option(get);
    for (name, what) in [
        ("stop", "Stop this thread's session"),
        ("interrupt", "End the agent's current turn"),
        ("status", "State, agent, image, age, turns, cost"),
        ("logs", "The full transcript, as a file"),
        ("resume", "Start this thread's stopped session again"),
        ("diff", "The session's changes, as a file"),
        ("push", "Push the session's branch"),
        ("pr", "Open a pull request"),
        ("list", "The sessions of this channel"),
        ("help", "The commands"),
    ] {
        cmd = cmd.add_option(CreateCommandOption::new(SubCommand, name, what));
    }
    cmd
}

/// The Stop and Interrupt buttons of a session's status message.
pub(super) fn buttons(session: &str) -> Value {
    json!([{"type": 1, "components": [
        {"type": 2, "style": 2, "label": "Interrupt", "custom_id": format!("fm:interrupt:{session}")},
        {"type": 2, "style": 4, "label": "Stop", "custom_id": format!("fm:stop:{session}")},
    ]}])
}

/// The subcommand of an `/agent` interaction and its options (name, string value).
/// The buttons of an approval that waits: Approve, Approve for this session, Deny.
pub(super) fn approval_buttons(session: &str, approval: &str) -> Value {
    let id = |answer: &str| format!("fm:{answer}:{session}:{approval}");
    json!([{"type": 1, "components": [
        {"type": 2, "style": 3, "label": "Approve", "custom_id": id("approve")},
        {"type": 2, "style": 1, "label": "Approve for this session", "custom_id": id("always")},
        {"type": 2, "style": 4, "label": "Deny", "custom_id": id("deny")},
    ]}])
}

pub(super) fn subcommand(cmd: &CommandInteraction) -> Option<(String, Vec<(String, String)>)> {
    let sub = cmd.data.options.first()?;
    let opts = match &sub.value {
        CommandDataOptionValue::SubCommand(opts) => opts
            .iter()
            .filter_map(|o: &CommandDataOption| {
                let v = match &o.value {
                    CommandDataOptionValue::String(s) => s.clone(),
                    CommandDataOptionValue::Autocomplete { value, .. } => value.clone(),
                    CommandDataOptionValue::Integer(i) => i.to_string(),
                    CommandDataOptionValue::Boolean(b) => b.to_string(),
                    _ => return None,
                };
                Some((o.name.clone(), v))
            })
            .collect(),
        _ => Vec::new(),
    };
    Some((sub.name.clone(), opts))
}

/// A thread name from a prompt: its first line, at most 90 characters.
pub fn thread_name(session: &str, prompt: &str) -> String {
    let first = prompt.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    let mut name: String = first.trim().chars().take(80).collect();
    if first.trim().chars().count() > 80 {
        name.push('…');
    }
    if name.is_empty() {
        format!("session {session}")
    } else {
        name
    }
}

/// The help text of the slash command.
pub(super) fn help_text() -> String {
    "**/agent new** `prompt` [`agent` `model` `repo` `branch` `image` `timeout`]: starts a session in a new thread\n\
     In a session's thread: a message is the next prompt (attached files go to `/workspace/inbox/`); **/agent stop**, **interrupt**, **status**, **logs**, **resume**, **get** `path` (also the Stop and Interrupt buttons on its status message)\n\
     Anywhere: **/agent list**, **/agent help**"
        .to_string()
}

impl HandlerInner {
    fn deliveries(&self) -> Option<&Deliveries<DiscordThreads>> {
        self.deliveries.get()
    }

    fn ensure(&self, session: &str) {
        if let Some(d) = self.deliveries() {
            d.ensure(session);
        }
    }

    /// Who asks, with whether the allow lists (or one of these roles) let them steer.
    fn actor(&self, user: u64, roles: &[u64]) -> Actor {
        let allowed = self.cfg.allowed_users.contains(&user)
            || roles.iter().any(|r| self.cfg.allowed_roles.contains(r));
        Actor {
            id: user.to_string(),
            mention: format!("<@{user}>"),
            allowed,
            roles: roles.iter().map(u64::to_string).collect(),
        }
    }
}

/// A chat action's reply in Discord's words, and the file it carries (`logs`).
pub(super) fn reply_text(reply: Reply) -> (String, Option<File>) {
    let text = match reply {
        Reply::Done { ack } => ack.to_string(),
        Reply::Refused => "⚠ you may not start or steer sessions here; only the users in discord.allowed_users and members with a role in discord.allowed_roles may".to_string(),
        Reply::NotInThread(name) => format!(
            "⚠ `/agent {name}` works in a session's thread; `/agent list` shows the sessions here"
        ),
        Reply::Problem(text) => format!("⚠ {text}"),
        Reply::Status(s) => render::status(&s).plain,
        Reply::File { name, data } => {
            let caption = if name.ends_with("-transcript.md") {
                "The full transcript:".to_string()
            } else {
                format!("`{name}` ({})", crate::files::human_size(data.len() as u64))
            };
            return (caption, Some(File { name, data }));
        }
    };
    (text, None)
}

/// The role ids of an interaction's or message's member.
pub(super) fn roles_of(roles: Option<&[serenity::all::RoleId]>) -> Vec<u64> {
    roles
        .map(|r| r.iter().map(|r| r.get()).collect())
        .unwrap_or_default()
}

/// Answers an interaction with a message only its user sees.
pub(super) async fn ephemeral(rest: &Rest, cmd: &CommandInteraction, text: String) {
    let mut data = message(&clip(&text));
    data["flags"] = json!(EPHEMERAL);
    if let Err(e) = rest.respond(cmd.id.get(), &cmd.token, 4, Some(data)).await {
        warn!(error = %e, "cannot answer a Discord interaction");
    }
}

/// What the bot may upload when an interaction does not say (a server without boosts).
pub(super) const DEFAULT_UPLOAD_LIMIT: u64 = 10 * 1024 * 1024;

/// Discord's message flag: only the user of the interaction sees it.
pub(super) const EPHEMERAL: u64 = 1 << 6;

pub(super) fn clip(text: &str) -> String {
    if text.chars().count() <= MESSAGE_CHARS {
        return text.to_string();
    }
    let mut s: String = text.chars().take(MESSAGE_CHARS - 1).collect();
    s.push('…');
    s
}

#[serenity::async_trait]
impl EventHandler for Handler {
    async fn ready(&self, _ctx: Context, ready: Ready) {
        info!(user = %ready.user.name, guilds = ready.guilds.len(), "Discord front end running");
        let inner = &self.inner;
        let app = ready.application.id.get();
        let commands = json!([agent_command()]);
        for g in &inner.cfg.guild_ids {
            let path = format!("/applications/{app}/guilds/{g}/commands");
            if let Err(e) = inner.rest.put(&path, commands.clone()).await {
                warn!(guild = g, error = %e, "cannot register /agent in a guild (discord.guild_ids)");
            }
        }
        let mut fresh = false;
        let d = inner.deliveries.get_or_init(|| {
            fresh = true;
            Deliveries::new(
                DiscordThreads {
                    rest: inner.rest.clone(),
                    store: inner.engine.store().clone(),
                },
                inner.engine.clone(),
            )
        });
        if fresh {
            d.start().await;
        }
    }

    async fn interaction_create(&self, _ctx: Context, interaction: Interaction) {
        match interaction {
            Interaction::Command(cmd) if cmd.data.name == COMMAND => self.command(&cmd).await,
            Interaction::Autocomplete(cmd) if cmd.data.name == COMMAND => {
                self.autocomplete(&cmd).await
            }
            Interaction::Component(c) => self.button(&c).await,
            _ => {}
        }
    }

    async fn message(&self, _ctx: Context, msg: Message) {
        if msg.author.bot || (msg.content.trim().is_empty() && msg.attachments.is_empty()) {
            return;
        }
        let inner = &self.inner;
        let channel = msg.channel_id.get();
        let actor = inner.actor(
            msg.author.id.get(),
            &roles_of(msg.member.as_ref().map(|m| &m.roles[..])),
        );
        let files = msg
            .attachments
            .iter()
            .map(|a| {
                let rest = inner.rest.clone();
                let url = a.url.clone();
                Attachment {
                    name: a.filename.clone(),
                    size: Some(u64::from(a.size)),
                    open: Box::pin(async move { rest.download(&url).await }),
                }
            })
            .collect();
        let Some((session, replies)) = inner
            .chat
            .prompt_with_files(&actor, &channel.to_string(), &msg.content, files)
            .await
        else {
            return; // not a session's thread
        };
        for r in replies {
            let mut body = message(&clip(&reply_text(r).0));
            body["message_reference"] = json!({"message_id": msg.id.get().to_string()});
            let _ = inner.rest.send_message(channel, body).await;
        }
        inner.ensure(&session);
    }
}

/// The `repo` choices for what was typed so far (`partial`, lowercase): the aliases,
/// then recent repositories, each once, at most 25 (Discord's limit) and at most 100
/// characters (a choice's limit).
fn repo_choices(
    aliases: impl Iterator<Item = String>,
    recent: impl Iterator<Item = String>,
    partial: &str,
) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for r in aliases.chain(recent) {
        if r.chars().count() <= 100 && r.to_lowercase().contains(partial) && !out.contains(&r) {
            out.push(r);
        }
        if out.len() == 25 {
            break;
        }
    }
    out
}

/// The thread command a subcommand names (with its options).
pub(super) fn thread_command(name: &str, opts: &[(String, String)]) -> Option<Command> {
    Some(match name {
        "get" => Command::Get {
            path: opts
                .iter()
                .find(|(k, _)| k == "path")
                .map(|(_, v)| v.trim().to_string())
                .unwrap_or_default(),
        },
        "stop" => Command::Stop,
        "interrupt" => Command::Interrupt,
        "resume" => Command::Resume,
        "status" => Command::Status,
        "logs" => Command::Logs,
        "diff" => Command::Diff,
        "push" => Command::Push,
        "pr" => Command::Pr,
        _ => return None,
    })
}

/// The path of an interaction's original response.
pub(super) fn original(cmd_app: u64, token: &str) -> String {
    format!("/webhooks/{cmd_app}/{token}/messages/@original")
}

impl Handler {
    async fn command(&self, cmd: &CommandInteraction) {
        let inner = &self.inner;
        let rest = &inner.rest;
        let Some((sub, opts)) = subcommand(cmd) else {
            return ephemeral(
                rest,
                cmd,
                "⚠ `/agent` needs a subcommand; `/agent help` lists them".into(),
            )
            .await;
        };
        let actor = inner.actor(
            cmd.user.id.get(),
            &roles_of(cmd.member.as_ref().map(|m| &m.roles[..])),
        );
        let channel = cmd.channel_id.get();
        if let Some(g) = cmd.guild_id {
            inner.guilds.insert(channel.to_string(), g.get());
        }
        match sub.as_str() {
            "help" => ephemeral(rest, cmd, help_text()).await,
            "list" => {
                let text = match inner.chat.sessions_in(&channel.to_string()).await {
                    Ok(l) if l.is_empty() => {
                        "no sessions in this channel yet; start one with `/agent new`".into()
                    }
                    Ok(l) => format!("```\n{}\n```", shared::list_text(&l).trim_end()),
                    Err(r) => reply_text(r).0,
                };
                ephemeral(rest, cmd, text).await
            }
            "new" => {
                if let Err(r) = inner.chat.may_start(&actor) {
                    return ephemeral(rest, cmd, reply_text(r).0).await;
                }
                self.new_session(cmd, &actor, opts).await
            }
            name => {
                let Some(command) = thread_command(name, &opts) else {
                    let text = format!("⚠ unknown subcommand `{name}`; `/agent help` lists them");
                    return ephemeral(rest, cmd, text).await;
                };
                let Some(id) = inner.chat.session_of(&channel.to_string()).await else {
                    let text = reply_text(Reply::NotInThread(thread_command_name(&command))).0;
                    return ephemeral(rest, cmd, text).await;
                };
                if let Err(r) = inner.chat.may_steer(&actor, &command) {
                    return ephemeral(rest, cmd, reply_text(r).0).await;
                }
                // Stopping may take seconds: answer now (deferred), say how it went after.
                if let Err(e) = rest.respond(cmd.id.get(), &cmd.token, 5, None).await {
                    warn!(error = %e, "cannot answer a Discord interaction");
                    return;
                }
                let reply = match &command {
                    // What this server lets the bot upload, as the interaction says.
                    Command::Get { path } => {
                        let limit = match cmd.attachment_size_limit {
                            0 => DEFAULT_UPLOAD_LIMIT,
                            n => u64::from(n),
                        };
                        inner.chat.get(&id, path, limit).await
                    }
                    other => inner.chat.on_session(&actor, &id, other).await,
                };
                let (text, file) = reply_text(reply);
                let path = original(cmd.application_id.get(), &cmd.token);
                let sent = rest
                    .call(
                        reqwest::Method::PATCH,
                        &path,
                        Some(message(&clip(&text))),
                        file.as_ref(),
                    )
                    .await;
                if let Err(e) = sent {
                    warn!(session = %id, error = %e, "cannot answer a Discord command");
                }
                inner.ensure(&id);
            }
        }
    }

    async fn new_session(
        &self,
        cmd: &CommandInteraction,
        actor: &Actor,
        opts: Vec<(String, String)>,
    ) {
        let inner = &self.inner;
        let rest = &inner.rest;
        let get = |k: &str| {
            opts.iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let Some(prompt) = get("prompt") else {
            return ephemeral(
                rest,
                cmd,
                "⚠ `/agent new` needs a `prompt`: what the agent should do".into(),
            )
            .await;
        };
        let timeout = match get("timeout").map(|t| humantime::parse_duration(&t)) {
            None => None,
            Some(Ok(d)) => Some(d),
            Some(Err(e)) => {
                return ephemeral(
                    rest,
                    cmd,
                    format!("⚠ `timeout`: {e}; write a duration like 30m, 2h or 1h30m"),
                )
                .await;
            }
        };
        let channel = cmd.channel_id.get();
        let id = crate::engine::new_session_id();
        let args = NewArgs {
            agent: get("agent"),
            model: get("model"),
            image: get("image"),
            repo: get("repo"),
            branch: get("branch"),
            timeout,
            prompt: prompt.clone(),
        };
        let mut req =
            inner
                .chat
                .new_request(args, actor, &channel.to_string(), Some(id.clone()), None);
        // A bad agent or image is told to the requester alone, before anything shows.
        if let Err(e) = inner.engine.check_new(&req).await {
            return ephemeral(rest, cmd, format!("⚠ {e}")).await;
        }
        let agent = req
            .agent
            .clone()
            .unwrap_or_else(|| inner.engine.config().sessions.default_agent.clone());
        let head = clip(&format!(
            "{} started session `{id}` ({agent}):\n> {}",
            actor.mention,
            prompt.lines().next().unwrap_or_default()
        ));
        // The thread comes first: the session is created bound to it, so it never runs
        // without a place for its output. Nothing is created when the thread fails.
        let thread = async {
            rest.respond(cmd.id.get(), &cmd.token, 4, Some(message(&head)))
                .await?;
            let answer = rest
                .get(&original(cmd.application_id.get(), &cmd.token))
                .await?;
            let t = rest
                .post(
                    &format!(
                        "/channels/{channel}/messages/{}/threads",
                        rest::object_id(&answer)
                    ),
                    json!({"name": thread_name(&id, &prompt), "auto_archive_duration": 1440}),
                )
                .await?;
            Ok::<u64, RestError>(rest::object_id(&t))
        }
        .await;
        let t = match thread {
            Ok(t) if t > 0 => t,
            other => {
                let why = match other {
                    Err(e) => e.to_string(),
                    Ok(_) => "Discord gave no thread id".to_string(),
                };
                warn!(session = %id, channel, error = %why, "cannot open a new session's Discord thread; the session is not started");
                let text = format!(
                    "⚠ the thread for this session could not be opened ({why}); nothing was started, try `/agent new` again"
                );
                self.tell_after_answer(cmd, &text).await;
                return;
            }
        };
        req.thread = Some(t.to_string());
        match inner.engine.new_session(req).await {
            Ok(s) => {
                info!(session = %s.id, thread = t, "session started from Discord");
                inner.ensure(&s.id);
            }
            Err(e) => {
                warn!(session = %id, thread = t, error = %e, "cannot create a session for its Discord thread");
                let text = clip(&format!("⚠ the session could not be started: {e}"));
                if let Err(e2) = rest.send_message(t, message(&text)).await {
                    warn!(session = %id, thread = t, error = %e2, "cannot say in the thread why the session did not start");
                }
                self.tell_after_answer(cmd, &text).await;
            }
        }
    }

    /// Says something to the requester of a `new` whose answer may already be out:
    /// edits the original answer when there is one, else answers now (ephemeral).
    async fn tell_after_answer(&self, cmd: &CommandInteraction, text: &str) {
        let rest = &self.inner.rest;
        let path = original(cmd.application_id.get(), &cmd.token);
        if rest
            .call(
                reqwest::Method::PATCH,
                &path,
                Some(message(&clip(text))),
                None,
            )
            .await
            .is_ok()
        {
            return;
        }
        let mut data = message(&clip(text));
        data["flags"] = json!(EPHEMERAL);
        let follow = format!("/webhooks/{}/{}", cmd.application_id.get(), cmd.token);
        if let Err(e) = rest.post(&follow, data).await {
            warn!(error = %e, "cannot tell a requester that their session did not start");
        }
    }

    async fn autocomplete(&self, cmd: &CommandInteraction) {
        let Some(focused) = cmd.data.autocomplete() else {
            return;
        };
        let partial = focused.value.to_lowercase();
        let choices: Vec<Value> = match focused.name {
            "agent" => self
                .inner
                .engine
                .config()
                .agents
                .keys()
                .filter(|a| a.to_lowercase().starts_with(&partial))
                .take(25)
                .map(|a| json!({"name": a, "value": a}))
                .collect(),
            "repo" => {
                // The aliases, then the repositories this channel's sessions used.
                let channel = cmd.channel_id.get().to_string();
                let recent = self
                    .inner
                    .chat
                    .sessions_in(&channel)
                    .await
                    .unwrap_or_default();
                let aliases = self.inner.engine.config().repos.keys().cloned();
                repo_choices(
                    aliases,
                    recent.iter().rev().filter_map(|s| s.repo.clone()),
                    &partial,
                )
                .into_iter()
                .map(|r| json!({"name": r, "value": r}))
                .collect()
            }
            _ => Vec::new(),
        };
        if let Err(e) = self
            .inner
            .rest
            .respond(
                cmd.id.get(),
                &cmd.token,
                8,
                Some(json!({"choices": choices})),
            )
            .await
        {
            warn!(error = %e, "cannot answer an autocomplete");
        }
    }

    async fn button(&self, c: &ComponentInteraction) {
        let mut parts = c.data.custom_id.splitn(4, ':');
        let (Some("fm"), Some(action), Some(session)) = (parts.next(), parts.next(), parts.next())
        else {
            return;
        };
        let inner = &self.inner;
        let rest = &inner.rest;
        let actor = inner.actor(
            c.user.id.get(),
            &roles_of(c.member.as_ref().map(|m| &m.roles[..])),
        );
        let say = |text: String| {
            let mut data = message(&clip(&text));
            data["flags"] = json!(EPHEMERAL);
            data
        };
        if let (Some(answer), Some(approval)) = (Answer::from_word(action), parts.next()) {
            // The answer is quick to record: recorded, the message is edited by the
            // thread's delivery; refused, only the person who pressed is told.
            let reply = inner
                .chat
                .answer(&actor, session, Some(approval), answer)
                .await;
            let response = match reply {
                Reply::Done { .. } => rest.respond(c.id.get(), &c.token, 6, None).await,
                other => {
                    rest.respond(c.id.get(), &c.token, 4, Some(say(reply_text(other).0)))
                        .await
                }
            };
            if let Err(e) = response {
                warn!(error = %e, "cannot answer a Discord button");
            }
            inner.ensure(session);
            return;
        }
        let command = match action {
            "stop" => Command::Stop,
            "interrupt" => Command::Interrupt,
            _ => return,
        };
        if let Err(r) = inner.chat.may_steer(&actor, &command) {
            let _ = rest
                .respond(c.id.get(), &c.token, 4, Some(say(reply_text(r).0)))
                .await;
            return;
        }
        // Acknowledge at once (the status message shows the outcome), then act.
        if let Err(e) = rest.respond(c.id.get(), &c.token, 6, None).await {
            warn!(error = %e, "cannot answer a Discord button");
            return;
        }
        let reply = inner.chat.on_session(&actor, session, &command).await;
        if !matches!(reply, Reply::Done { .. }) {
            let path = format!("/webhooks/{}/{}", c.application_id.get(), c.token);
            let _ = rest.post(&path, say(reply_text(reply).0)).await;
        }
        inner.ensure(session);
    }
}

#[cfg(test)]
mod tests {
    use super::repo_choices;

    #[test]
    fn repo_choices_are_aliases_then_recent_ones_each_once() {
        let aliases = ["demo", "web"].map(String::from).into_iter();
        let recent = ["https://git.x/a/b.git", "demo", "https://git.x/a/b.git"]
            .map(String::from)
            .into_iter();
        assert_eq!(
            repo_choices(aliases.clone(), recent.clone(), ""),
            ["demo", "web", "https://git.x/a/b.git"]
        );
        assert_eq!(
            repo_choices(aliases, recent, "git.x"),
            ["https://git.x/a/b.git"]
        );
        let many = (0..40).map(|i| format!("r{i}"));
        assert_eq!(repo_choices(many, std::iter::empty(), "").len(), 25);
    }
}
