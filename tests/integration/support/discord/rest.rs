//! The REST API: routes and their rate-limit buckets (headers, 429s, the global limit),
//! what each route does to the state, Discord's checks of payloads, and request bodies
//! (JSON, or multipart with `payload_json` and `files[n]`).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use super::{
    Attachment, EPHEMERAL, FakeDiscord, Limits, Message, Rate, RequestLog, State, Thread, Window,
    iso8601,
};

const HAS_THREAD: u64 = 1 << 5;
const LOADING: u64 = 1 << 7;

// ---------------------------------------------------------------------------------------
// Responses

/// An answer: its status, headers (lower-case names) and JSON body.
pub(super) struct Resp {
    pub(super) status: u16,
    pub(super) headers: Vec<(String, String)>,
    pub(super) body: Option<Value>,
}

impl Resp {
    fn json(status: u16, body: Value) -> Resp {
        Resp {
            status,
            headers: Vec::new(),
            body: Some(body),
        }
    }

    fn no_content() -> Resp {
        Resp {
            status: 204,
            headers: Vec::new(),
            body: None,
        }
    }

    pub(super) fn error(status: u16, code: u64, message: &str) -> Resp {
        Resp::json(status, json!({"message": message, "code": code}))
    }

    /// 400 Invalid Form Body (50035) with one error at `path` (dotted).
    fn form(path: &str, code: &str, message: &str) -> Resp {
        let mut errors = json!({"_errors": [{"code": code, "message": message}]});
        for key in path.rsplit('.') {
            errors = json!({ key: errors });
        }
        Resp::json(
            400,
            json!({"message": "Invalid Form Body", "code": 50035, "errors": errors}),
        )
    }

    fn not_found() -> Resp {
        Resp::error(404, 0, "404: Not Found")
    }

    fn unknown_channel() -> Resp {
        Resp::error(404, 10003, "Unknown Channel")
    }

    fn unknown_message() -> Resp {
        Resp::error(404, 10008, "Unknown Message")
    }

    fn unknown_webhook() -> Resp {
        Resp::error(404, 10015, "Unknown Webhook")
    }
}

// ---------------------------------------------------------------------------------------
// Routing

/// A request as the routes read it (header names lower-case).
pub(super) struct Req {
    pub(super) method: String,
    pub(super) path: String,
    pub(super) query: Vec<(String, String)>,
    pub(super) headers: Vec<(String, String)>,
    pub(super) body: Vec<u8>,
}

impl Req {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn query(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

enum Route {
    Gateway,
    GatewayBot,
    Me,
    App,
    Commands {
        app: u64,
        guild: Option<u64>,
    },
    Callback {
        id: u64,
        token: String,
    },
    Followup {
        app: u64,
        token: String,
    },
    WebhookMessage {
        app: u64,
        token: String,
        message: Option<u64>,
    },
    Channel {
        c: u64,
    },
    ChannelMessages {
        c: u64,
    },
    ChannelMessage {
        c: u64,
        m: u64,
    },
    StartThread {
        c: u64,
        m: u64,
    },
    Typing {
        c: u64,
    },
}

/// Which bucket a request counts against.
struct Bucket {
    template: String,
    major: String,
    rate: Rate,
    global: bool,
}

impl Route {
    fn parse(path: &str) -> Option<Route> {
        let rest = path.strip_prefix("/api/v10/")?;
        let segs: Vec<&str> = rest.split('/').collect();
        let id = |s: &str| s.parse::<u64>().ok();
        Some(match segs.as_slice() {
            ["gateway"] => Route::Gateway,
            ["gateway", "bot"] => Route::GatewayBot,
            ["users", "@me"] => Route::Me,
            ["oauth2", "applications", "@me"] => Route::App,
            ["applications", app, "commands"] => Route::Commands {
                app: id(app)?,
                guild: None,
            },
            ["applications", app, "guilds", g, "commands"] => Route::Commands {
                app: id(app)?,
                guild: Some(id(g)?),
            },
            ["interactions", i, token, "callback"] => Route::Callback {
                id: id(i)?,
                token: token.to_string(),
            },
            ["webhooks", app, token] => Route::Followup {
                app: id(app)?,
                token: token.to_string(),
            },
            ["webhooks", app, token, "messages", m] => Route::WebhookMessage {
                app: id(app)?,
                token: token.to_string(),
                message: if *m == "@original" {
                    None
                } else {
                    Some(id(m)?)
                },
            },
            ["channels", c] => Route::Channel { c: id(c)? },
            ["channels", c, "messages"] => Route::ChannelMessages { c: id(c)? },
            ["channels", c, "messages", m] => Route::ChannelMessage {
                c: id(c)?,
                m: id(m)?,
            },
            ["channels", c, "messages", m, "threads"] => Route::StartThread {
                c: id(c)?,
                m: id(m)?,
            },
            ["channels", c, "typing"] => Route::Typing { c: id(c)? },
            _ => return None,
        })
    }

    fn allows(&self, method: &str) -> bool {
        let allowed: &[&str] = match self {
            Route::Gateway | Route::GatewayBot | Route::Me | Route::App | Route::Channel { .. } => {
                &["GET"]
            }
            Route::Commands { .. } => &["GET", "PUT", "POST"],
            Route::Callback { .. } | Route::Followup { .. } | Route::StartThread { .. } => {
                &["POST"]
            }
            Route::Typing { .. } => &["POST"],
            Route::WebhookMessage { .. } | Route::ChannelMessage { .. } => {
                &["GET", "PATCH", "DELETE"]
            }
            Route::ChannelMessages { .. } => &["GET", "POST"],
        };
        allowed.contains(&method)
    }

    /// Interaction endpoints are authenticated by their token, not the bot's.
    fn needs_bot_auth(&self) -> bool {
        !matches!(
            self,
            Route::Callback { .. }
                | Route::Followup { .. }
                | Route::WebhookMessage { .. }
                | Route::Gateway
        )
    }

    fn bucket(&self, method: &str, limits: &Limits) -> Bucket {
        let b = |template: &str, major: String, rate: Rate| Bucket {
            template: format!("{method} {template}"),
            major,
            rate,
            global: true,
        };
        match self {
            Route::Gateway => b("/gateway", String::new(), limits.other),
            Route::GatewayBot => b("/gateway/bot", String::new(), limits.other),
            Route::Me => b("/users/@me", String::new(), limits.other),
            Route::App => b("/oauth2/applications/@me", String::new(), limits.other),
            Route::Commands { app, guild: None } => {
                b("/applications/{}/commands", app.to_string(), limits.other)
            }
            Route::Commands {
                app,
                guild: Some(g),
            } => b(
                "/applications/{}/guilds/{}/commands",
                format!("{app}:{g}"),
                limits.other,
            ),
            Route::Callback { id, .. } => Bucket {
                global: false,
                ..b(
                    "/interactions/{}/{}/callback",
                    id.to_string(),
                    limits.callbacks,
                )
            },
            Route::Followup { app, token } => Bucket {
                global: false,
                ..b("/webhooks/{}/{}", format!("{app}:{token}"), limits.webhooks)
            },
            Route::WebhookMessage { app, token, .. } => Bucket {
                global: false,
                ..b(
                    "/webhooks/{}/{}/messages/{}",
                    format!("{app}:{token}"),
                    limits.webhooks,
                )
            },
            Route::Channel { c } => b("/channels/{}", c.to_string(), limits.other),
            Route::ChannelMessages { c } => {
                let rate = if method == "POST" {
                    limits.messages
                } else {
                    limits.other
                };
                b("/channels/{}/messages", c.to_string(), rate)
            }
            Route::ChannelMessage { c, .. } => {
                let rate = if method == "PATCH" {
                    limits.messages
                } else {
                    limits.other
                };
                b("/channels/{}/messages/{}", c.to_string(), rate)
            }
            Route::StartThread { c, .. } => b(
                "/channels/{}/messages/{}/threads",
                c.to_string(),
                limits.other,
            ),
            Route::Typing { c } => b("/channels/{}/typing", c.to_string(), limits.other),
        }
    }
}

/// An opaque bucket id per route template, as Discord's `X-RateLimit-Bucket`.
fn bucket_hash(template: &str) -> String {
    // FNV-1a, twice with different seeds for 32 hex digits.
    let fnv = |seed: u64| {
        template.bytes().fold(seed, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    };
    format!(
        "{:016x}{:016x}",
        fnv(0xcbf2_9ce4_8422_2325),
        fnv(0x6c62_272e_07bb_0142)
    )
}

fn secs(d: Duration) -> String {
    // Rounded up to the millisecond so waiting exactly this long is enough.
    let ms = d.as_micros().div_ceil(1000);
    format!("{}.{:03}", ms / 1000, ms % 1000)
}

fn epoch_secs(at: Instant, now: Instant) -> String {
    let t = SystemTime::now() + at.saturating_duration_since(now);
    secs(t.duration_since(UNIX_EPOCH).unwrap_or_default())
}

impl State {
    /// Answers a request, and logs it with its answer.
    pub(super) fn answer(&mut self, req: &Req) -> Resp {
        let now = Instant::now();
        let (resp, bucket, global) = self.handle(req, now);
        self.requests.push(RequestLog {
            method: req.method.clone(),
            path: req.path.clone(),
            status: resp.status,
            at: now,
            bucket,
            global,
            headers: resp.headers.clone(),
            body: resp.body.clone(),
        });
        resp
    }

    fn handle(&mut self, req: &Req, now: Instant) -> (Resp, Option<String>, bool) {
        let Some(route) = Route::parse(&req.path) else {
            return (Resp::not_found(), None, false);
        };
        if !route.allows(&req.method) {
            return (Resp::error(405, 0, "405: Method Not Allowed"), None, false);
        }
        if route.needs_bot_auth() {
            let expected = format!("Bot {}", FakeDiscord::TOKEN);
            if req.header("authorization") != Some(expected.as_str()) {
                return (Resp::error(401, 0, "401: Unauthorized"), None, false);
            }
        }
        let bucket = route.bucket(&req.method, &self.limits);
        if bucket.global
            && let Some(resp) = self.take_global(now)
        {
            return (resp, None, true);
        }
        let hash = bucket_hash(&bucket.template);
        let key = (hash.clone(), bucket.major.clone());
        let window = self.buckets.entry(key).or_insert(Window {
            reset_at: now,
            remaining: 0,
        });
        if now >= window.reset_at {
            window.reset_at = now + bucket.rate.per;
            window.remaining = bucket.rate.limit;
        }
        let limited = window.remaining == 0;
        if !limited {
            window.remaining -= 1;
        }
        let reset_after = window.reset_at.saturating_duration_since(now);
        let headers = vec![
            ("x-ratelimit-limit".into(), bucket.rate.limit.to_string()),
            ("x-ratelimit-remaining".into(), window.remaining.to_string()),
            ("x-ratelimit-reset".into(), epoch_secs(window.reset_at, now)),
            ("x-ratelimit-reset-after".into(), secs(reset_after)),
            ("x-ratelimit-bucket".into(), hash.clone()),
        ];
        let mut resp = if limited {
            let mut r = Resp::json(
                429,
                json!({
                    "message": "You are being rate limited.",
                    "retry_after": (reset_after.as_secs_f64() * 1000.0).ceil() / 1000.0,
                    "global": false,
                }),
            );
            r.headers.push((
                "retry-after".into(),
                reset_after.as_secs_f64().ceil().to_string(),
            ));
            r.headers.push(("x-ratelimit-scope".into(), "user".into()));
            r
        } else {
            self.route(&route, req, now)
        };
        resp.headers.extend(headers);
        (resp, Some(hash), false)
    }

    /// Counts a request against the global limit; the 429 when it is used up.
    fn take_global(&mut self, now: Instant) -> Option<Resp> {
        let rate = self.limits.global;
        let w = self.global.get_or_insert(Window {
            reset_at: now,
            remaining: 0,
        });
        if now >= w.reset_at {
            w.reset_at = now + rate.per;
            w.remaining = rate.limit;
        }
        if w.remaining > 0 {
            w.remaining -= 1;
            return None;
        }
        let after = w.reset_at.saturating_duration_since(now);
        let mut r = Resp::json(
            429,
            json!({
                "message": "You are being rate limited.",
                "retry_after": (after.as_secs_f64() * 1000.0).ceil() / 1000.0,
                "global": true,
                "code": 0,
            }),
        );
        r.headers
            .push(("retry-after".into(), after.as_secs_f64().ceil().to_string()));
        r.headers.push(("x-ratelimit-global".into(), "true".into()));
        r.headers
            .push(("x-ratelimit-scope".into(), "global".into()));
        Some(r)
    }

    fn route(&mut self, route: &Route, req: &Req, now: Instant) -> Resp {
        let m = req.method.as_str();
        match route {
            Route::Gateway => Resp::json(200, json!({"url": self.ws_url})),
            Route::GatewayBot => Resp::json(
                200,
                json!({
                    "url": self.ws_url,
                    "shards": 1,
                    "session_start_limit": {
                        "total": 1000, "remaining": 999, "reset_after": 14_400_000,
                        "max_concurrency": 1,
                    },
                }),
            ),
            Route::Me => {
                let mut u = self.user_json(self.ids.bot);
                u["verified"] = json!(true);
                u["mfa_enabled"] = json!(false);
                u["locale"] = json!("en-US");
                Resp::json(200, u)
            }
            Route::App => Resp::json(200, self.application_json()),
            Route::Commands { app, guild } => {
                if *app != self.ids.app {
                    return Resp::error(403, 50001, "Missing Access");
                }
                if guild.is_some_and(|g| g != self.ids.guild) {
                    return Resp::error(404, 10004, "Unknown Guild");
                }
                self.commands_route(m, *guild, req)
            }
            Route::Callback { id, token } => self.callback(*id, token, req, now),
            Route::Followup { app, token } => self.followup(*app, token, req, now),
            Route::WebhookMessage {
                app,
                token,
                message,
            } => self.webhook_message(m, *app, token, *message, req, now),
            Route::Channel { c } => match self.channel_json(*c) {
                Some(j) => Resp::json(200, j),
                None => Resp::unknown_channel(),
            },
            Route::ChannelMessages { c } => {
                if self.channel_kind(*c).is_none() {
                    return Resp::unknown_channel();
                }
                if m == "GET" {
                    self.list_messages(*c, req)
                } else {
                    self.post_message(*c, req)
                }
            }
            Route::ChannelMessage { c, m: mid } => {
                if self.channel_kind(*c).is_none() {
                    return Resp::unknown_channel();
                }
                let Some(idx) = self
                    .messages
                    .iter()
                    .position(|x| x.id == *mid && x.channel_id == *c && x.flags & EPHEMERAL == 0)
                else {
                    return Resp::unknown_message();
                };
                match m {
                    "GET" => Resp::json(200, self.message_json(&self.messages[idx], false)),
                    "PATCH" => {
                        if self.messages[idx].author_id != self.ids.bot
                            || self.messages[idx].interaction_id.is_some()
                        {
                            return Resp::error(
                                403,
                                50005,
                                "Cannot edit a message authored by another user",
                            );
                        }
                        match parse_payload(req, self.limits.max_upload) {
                            Ok((data, files)) => self.edit_message(idx, &data, files),
                            Err(r) => r,
                        }
                    }
                    _ => {
                        if self.messages[idx].author_id != self.ids.bot {
                            return Resp::error(403, 50013, "Missing Permissions");
                        }
                        self.delete_message(idx);
                        Resp::no_content()
                    }
                }
            }
            Route::StartThread { c, m: mid } => self.start_thread(*c, *mid, req),
            Route::Typing { c } => match self.channel_kind(*c) {
                Some(_) => Resp::no_content(),
                None => Resp::unknown_channel(),
            },
        }
    }

    // -----------------------------------------------------------------------------------
    // Interactions

    fn callback(&mut self, id: u64, token: &str, req: &Req, now: Instant) -> Resp {
        let unknown = || Resp::error(404, 10062, "Unknown interaction");
        let Some(idx) = self
            .interactions
            .iter()
            .position(|i| i.id == id && i.token == token)
        else {
            return unknown();
        };
        let (body, files) = match parse_payload(req, self.limits.max_upload) {
            Ok(p) => p,
            Err(r) => return r,
        };
        let i = &self.interactions[idx];
        if i.callback.is_some() {
            return Resp::error(400, 40060, "Interaction has already been acknowledged.");
        }
        if now.duration_since(i.created) > self.limits.interaction_deadline {
            return unknown();
        }
        let kind = i.kind;
        let ty = body["type"].as_u64().unwrap_or(0);
        let allowed: &[u64] = match kind {
            2 => &[4, 5, 9],
            3 => &[4, 5, 6, 7, 9],
            4 => &[8],
            _ => &[],
        };
        if !allowed.contains(&ty) {
            return Resp::form(
                "type",
                "INTERACTION_RESPONSE_TYPE_INVALID",
                "Value must be one of the allowed response types for this interaction.",
            );
        }
        let data = body.get("data").cloned().unwrap_or(json!({}));
        let channel = i.channel_id;
        let bot = self.ids.bot;
        let command_kind = if kind == 2 { 20 } else { 0 };
        match ty {
            4 => {
                if let Err(r) = check_message(&data, !files.is_empty(), true) {
                    return r;
                }
                let mid = self.create_message(channel, bot, &data, files, command_kind, Some(id));
                self.interactions[idx].original = Some(mid);
            }
            5 => {
                let flags = LOADING | (data["flags"].as_u64().unwrap_or(0) & EPHEMERAL);
                let d = json!({"flags": flags});
                let mid = self.create_message(channel, bot, &d, Vec::new(), command_kind, Some(id));
                self.interactions[idx].original = Some(mid);
            }
            6 => {
                self.interactions[idx].original = self.interactions[idx].message_id;
            }
            7 => {
                if let Err(r) = check_message(&data, !files.is_empty(), false) {
                    return r;
                }
                let Some(mid) = self.interactions[idx].message_id else {
                    return Resp::unknown_message();
                };
                self.interactions[idx].original = Some(mid);
                if let Some(midx) = self.messages.iter().position(|m| m.id == mid) {
                    let r = self.edit_message(midx, &data, files);
                    if r.status >= 400 {
                        return r;
                    }
                }
            }
            8 => {
                let n = data["choices"].as_array().map_or(0, Vec::len);
                if n > 25 {
                    return Resp::form(
                        "data.choices",
                        "BASE_TYPE_MAX_LENGTH",
                        "Must be 25 or fewer in length.",
                    );
                }
            }
            _ => {}
        }
        let i = &mut self.interactions[idx];
        i.callback = Some(ty);
        i.responses.push(body);
        Resp::no_content()
    }

    /// The interaction of a webhook token, or the error Discord gives.
    fn by_token(&self, app: u64, token: &str, now: Instant) -> Result<usize, Resp> {
        if app != self.ids.app {
            return Err(Resp::unknown_webhook());
        }
        let idx = self
            .interactions
            .iter()
            .position(|i| i.token == token)
            .ok_or_else(Resp::unknown_webhook)?;
        let i = &self.interactions[idx];
        if now.duration_since(i.created) > self.limits.token_lifetime {
            return Err(Resp::error(401, 50027, "Invalid Webhook Token"));
        }
        if i.callback.is_none() {
            return Err(Resp::unknown_webhook());
        }
        Ok(idx)
    }

    fn followup(&mut self, app: u64, token: &str, req: &Req, now: Instant) -> Resp {
        let idx = match self.by_token(app, token, now) {
            Ok(i) => i,
            Err(r) => return r,
        };
        let (data, files) = match parse_payload(req, self.limits.max_upload) {
            Ok(p) => p,
            Err(r) => return r,
        };
        if let Err(r) = check_message(&data, !files.is_empty(), true) {
            return r;
        }
        let (channel, id) = (self.interactions[idx].channel_id, self.interactions[idx].id);
        let mid = self.create_message(channel, self.ids.bot, &data, files, 0, Some(id));
        self.interactions[idx].followups.push(mid);
        let m = self.messages.iter().find(|m| m.id == mid).expect("created");
        Resp::json(200, self.message_json(m, false))
    }

    fn webhook_message(
        &mut self,
        method: &str,
        app: u64,
        token: &str,
        message: Option<u64>,
        req: &Req,
        now: Instant,
    ) -> Resp {
        let idx = match self.by_token(app, token, now) {
            Ok(i) => i,
            Err(r) => return r,
        };
        let i = &self.interactions[idx];
        let target = match message {
            None => i.original,
            Some(m) if i.original == Some(m) || i.followups.contains(&m) => Some(m),
            Some(_) => None,
        };
        let Some(midx) = target.and_then(|t| self.messages.iter().position(|m| m.id == t)) else {
            return Resp::unknown_message();
        };
        match method {
            "GET" => Resp::json(200, self.message_json(&self.messages[midx], false)),
            "PATCH" => match parse_payload(req, self.limits.max_upload) {
                Ok((data, files)) => self.edit_message(midx, &data, files),
                Err(r) => r,
            },
            _ => {
                self.delete_message(midx);
                Resp::no_content()
            }
        }
    }

    // -----------------------------------------------------------------------------------
    // Messages

    fn list_messages(&self, c: u64, req: &Req) -> Resp {
        let limit = req
            .query("limit")
            .and_then(|l| l.parse::<usize>().ok())
            .unwrap_or(50);
        if !(1..=100).contains(&limit) {
            return Resp::form(
                "limit",
                "NUMBER_TYPE_MAX",
                "int value should be less than or equal to 100.",
            );
        }
        let before = req.query("before").and_then(|b| b.parse::<u64>().ok());
        let after = req.query("after").and_then(|b| b.parse::<u64>().ok());
        let mut list: Vec<&Message> = self
            .messages
            .iter()
            .filter(|m| m.channel_id == c && m.flags & EPHEMERAL == 0)
            .filter(|m| before.is_none_or(|b| m.id < b) && after.is_none_or(|a| m.id > a))
            .collect();
        // Newest first, as Discord returns them.
        list.reverse();
        if after.is_some() {
            let skip = list.len().saturating_sub(limit);
            list.drain(..skip);
        } else {
            list.truncate(limit);
        }
        Resp::json(
            200,
            Value::Array(list.iter().map(|m| self.message_json(m, false)).collect()),
        )
    }

    fn post_message(&mut self, c: u64, req: &Req) -> Resp {
        let (data, files) = match parse_payload(req, self.limits.max_upload) {
            Ok(p) => p,
            Err(r) => return r,
        };
        if let Err(r) = check_message(&data, !files.is_empty(), true) {
            return r;
        }
        let mut kind = 0;
        if let Some(r) = data.get("message_reference").filter(|r| !r.is_null()) {
            let rid = id_of(&r["message_id"]);
            let exists = rid.is_some_and(|rid| {
                self.messages
                    .iter()
                    .any(|m| m.id == rid && m.channel_id == c && m.flags & EPHEMERAL == 0)
            });
            if !exists && r["fail_if_not_exists"] != false {
                return Resp::form(
                    "message_reference",
                    "MESSAGE_REFERENCE_UNKNOWN_MESSAGE",
                    "Unknown message",
                );
            }
            if exists {
                kind = 19;
            }
        }
        let mid = self.create_message(c, self.ids.bot, &data, files, kind, None);
        let m = self.messages.iter().find(|m| m.id == mid).expect("created");
        Resp::json(200, self.message_json(m, false))
    }

    /// Stores a message (already checked) and dispatches MESSAGE_CREATE; its id.
    pub(super) fn create_message(
        &mut self,
        channel_id: u64,
        author_id: u64,
        data: &Value,
        files: Vec<Upload>,
        kind: u64,
        interaction_id: Option<u64>,
    ) -> u64 {
        let id = self.snowflake();
        let content = data["content"].as_str().unwrap_or_default().to_string();
        let attachments = self.attachments(&data["attachments"], files, &[]);
        let reference = if kind == 19 {
            id_of(&data["message_reference"]["message_id"])
        } else {
            None
        };
        let m = Message {
            id,
            channel_id,
            author_id,
            mentions: self.mentions(&content),
            content,
            embeds: array_of(&data["embeds"]),
            components: array_of(&data["components"]),
            attachments,
            flags: data["flags"].as_u64().unwrap_or(0) & (EPHEMERAL | LOADING | 4 | 4096),
            edits: 0,
            kind,
            reference,
            interaction_id,
            timestamp: iso8601(SystemTime::now()),
            edited_timestamp: None,
        };
        if let Some(t) = self.threads.iter_mut().find(|t| t.id == channel_id) {
            t.message_count += 1;
        }
        let ephemeral = m.flags & EPHEMERAL != 0;
        let j = self.message_json(&m, true);
        self.messages.push(m);
        if !ephemeral {
            self.dispatch("MESSAGE_CREATE", j);
        }
        id
    }

    fn edit_message(&mut self, idx: usize, data: &Value, files: Vec<Upload>) -> Resp {
        if let Err(r) = check_message(data, !files.is_empty(), false) {
            return r;
        }
        let keep = self.messages[idx].attachments.clone();
        let attachments = if data.get("attachments").is_some() || !files.is_empty() {
            Some(self.attachments(&data["attachments"], files, &keep))
        } else {
            None
        };
        let mentions = data["content"].as_str().map(|c| self.mentions(c));
        // Changed on a copy: a refused edit leaves the message as it was.
        let mut m = self.messages[idx].clone();
        if let Some(c) = data.get("content") {
            m.content = c.as_str().unwrap_or_default().to_string();
        }
        if let Some(ms) = mentions {
            m.mentions = ms;
        }
        if let Some(e) = data.get("embeds") {
            m.embeds = array_of(e);
        }
        if let Some(c) = data.get("components") {
            m.components = array_of(c);
        }
        if let Some(a) = attachments {
            m.attachments = a;
        }
        if let Some(f) = data["flags"].as_u64() {
            // Only SUPPRESS_EMBEDS can be changed by an edit.
            m.flags = (m.flags & !4) | (f & 4);
        }
        let was_loading = m.flags & LOADING != 0;
        m.flags &= !LOADING;
        let empty = m.content.is_empty()
            && m.embeds.is_empty()
            && m.attachments.is_empty()
            && m.components.is_empty();
        if empty && !was_loading {
            return Resp::error(400, 50006, "Cannot send an empty message");
        }
        m.edits += 1;
        m.edited_timestamp = Some(iso8601(SystemTime::now()));
        self.messages[idx] = m.clone();
        if m.flags & EPHEMERAL == 0 {
            let j = self.message_json(&m, true);
            self.dispatch("MESSAGE_UPDATE", j);
        }
        Resp::json(200, self.message_json(&m, false))
    }

    fn delete_message(&mut self, idx: usize) {
        let m = self.messages.remove(idx);
        if m.flags & EPHEMERAL == 0 {
            let d = json!({
                "id": m.id.to_string(),
                "channel_id": m.channel_id.to_string(),
                "guild_id": self.ids.guild.to_string(),
            });
            self.dispatch("MESSAGE_DELETE", d);
        }
    }

    /// The attachments a payload names: kept ones by id, new ones from `files[n]`.
    fn attachments(
        &mut self,
        spec: &Value,
        files: Vec<Upload>,
        keep: &[Attachment],
    ) -> Vec<Attachment> {
        let spec = array_of(spec);
        let mut out: Vec<Attachment> = keep
            .iter()
            .filter(|a| spec.iter().any(|s| id_of(&s["id"]) == Some(a.id)))
            .cloned()
            .collect();
        for f in files {
            let meta = spec
                .iter()
                .find(|s| id_of(&s["id"]) == Some(f.index))
                .cloned()
                .unwrap_or(Value::Null);
            let id = self.snowflake();
            out.push(Attachment {
                id,
                filename: meta["filename"]
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or(f.filename),
                content_type: f.content_type,
                description: meta["description"].as_str().map(str::to_string),
                bytes: f.bytes,
            });
        }
        out
    }

    /// The members mentioned as `<@id>` or `<@!id>`.
    fn mentions(&self, content: &str) -> Vec<u64> {
        let mut out = Vec::new();
        for part in content.split("<@").skip(1) {
            let part = part.strip_prefix('!').unwrap_or(part);
            if let Some((id, _)) = part.split_once('>')
                && let Ok(id) = id.parse::<u64>()
                && self.member(id).is_some()
                && !out.contains(&id)
            {
                out.push(id);
            }
        }
        out
    }

    // -----------------------------------------------------------------------------------
    // Threads

    fn start_thread(&mut self, c: u64, mid: u64, req: &Req) -> Resp {
        match self.channel_kind(c) {
            None => return Resp::unknown_channel(),
            Some(0) => {}
            Some(_) => {
                return Resp::error(400, 50024, "Cannot execute action on this channel type");
            }
        }
        if !self
            .messages
            .iter()
            .any(|m| m.id == mid && m.channel_id == c && m.flags & EPHEMERAL == 0)
        {
            return Resp::unknown_message();
        }
        let body: Value = match serde_json::from_slice(&req.body) {
            Ok(v) => v,
            Err(_) => return Resp::error(400, 50109, "The request body contains invalid JSON."),
        };
        let name = body["name"].as_str().unwrap_or_default();
        let len = name.chars().count();
        if !(1..=100).contains(&len) {
            return Resp::form(
                "name",
                "BASE_TYPE_BAD_LENGTH",
                "Must be between 1 and 100 in length.",
            );
        }
        let archive = match &body["auto_archive_duration"] {
            Value::Null => 4320,
            v => match v.as_u64() {
                Some(d @ (60 | 1440 | 4320 | 10080)) => d,
                _ => {
                    return Resp::form(
                        "auto_archive_duration",
                        "BASE_TYPE_CHOICES",
                        "Value must be one of {60, 1440, 4320, 10080}.",
                    );
                }
            },
        };
        if self.threads.iter().any(|t| t.id == mid) {
            return Resp::error(
                400,
                160004,
                "A thread has already been created for this message",
            );
        }
        let t = Thread {
            id: mid,
            parent_id: c,
            name: name.to_string(),
            message_id: Some(mid),
            owner_id: self.ids.bot,
            auto_archive_duration: archive,
            message_count: 0,
            created: iso8601(SystemTime::now()),
        };
        let mut j = self.thread_json(&t);
        self.threads.push(t);
        if let Some(m) = self.messages.iter_mut().find(|m| m.id == mid) {
            m.flags |= HAS_THREAD;
        }
        let mut d = j.clone();
        d["newly_created"] = json!(true);
        self.dispatch("THREAD_CREATE", d);
        j["member"] = json!({
            "id": mid.to_string(),
            "user_id": self.ids.bot.to_string(),
            "join_timestamp": iso8601(SystemTime::now()),
            "flags": 1,
        });
        Resp::json(201, j)
    }

    // -----------------------------------------------------------------------------------
    // Application commands

    fn commands_route(&mut self, method: &str, guild: Option<u64>, req: &Req) -> Resp {
        let list = |st: &State| {
            if guild.is_some() {
                st.guild_commands.clone()
            } else {
                st.commands.clone()
            }
        };
        if method == "GET" {
            return Resp::json(200, Value::Array(list(self)));
        }
        let body: Value = match serde_json::from_slice(&req.body) {
            Ok(v) => v,
            Err(_) => return Resp::error(400, 50109, "The request body contains invalid JSON."),
        };
        let existing = list(self);
        if method == "PUT" {
            let Some(items) = body.as_array() else {
                return Resp::form("_", "BASE_TYPE_ARRAY", "Must be an array.");
            };
            if items.len() > 100 {
                return Resp::form(
                    "_",
                    "BASE_TYPE_MAX_LENGTH",
                    "Must be 100 or fewer in length.",
                );
            }
            let mut out = Vec::new();
            for (n, c) in items.iter().enumerate() {
                match self.command(c, guild, &existing) {
                    Ok(c) => out.push(c),
                    Err((path, code, msg)) => return Resp::form(&format!("{n}.{path}"), code, msg),
                }
            }
            *self.commands_mut(guild) = out.clone();
            return Resp::json(200, Value::Array(out));
        }
        match self.command(&body, guild, &existing) {
            Ok(c) => {
                let list = self.commands_mut(guild);
                let created = !list.iter().any(|x| x["name"] == c["name"]);
                list.retain(|x| x["name"] != c["name"]);
                list.push(c.clone());
                Resp::json(if created { 201 } else { 200 }, c)
            }
            Err((path, code, msg)) => Resp::form(path, code, msg),
        }
    }

    fn commands_mut(&mut self, guild: Option<u64>) -> &mut Vec<Value> {
        if guild.is_some() {
            &mut self.guild_commands
        } else {
            &mut self.commands
        }
    }

    /// A command as stored and returned (its id kept across overwrites of the same name).
    fn command(
        &mut self,
        c: &Value,
        guild: Option<u64>,
        existing: &[Value],
    ) -> Result<Value, (&'static str, &'static str, &'static str)> {
        let kind = c["type"].as_u64().unwrap_or(1);
        let name = c["name"].as_str().unwrap_or_default();
        let n = name.chars().count();
        if !(1..=32).contains(&n) {
            return Err((
                "name",
                "BASE_TYPE_BAD_LENGTH",
                "Must be between 1 and 32 in length.",
            ));
        }
        if kind == 1
            && !name
                .chars()
                .all(|ch| ch == '-' || ch == '_' || ch.is_lowercase() || ch.is_numeric())
        {
            return Err((
                "name",
                "APPLICATION_COMMAND_INVALID_NAME",
                "Command name is invalid",
            ));
        }
        let description = c["description"].as_str().unwrap_or_default();
        let d = description.chars().count();
        if kind == 1 && !(1..=100).contains(&d) {
            return Err((
                "description",
                "BASE_TYPE_BAD_LENGTH",
                "Must be between 1 and 100 in length.",
            ));
        }
        if c["options"].as_array().is_some_and(|o| o.len() > 25) {
            return Err((
                "options",
                "BASE_TYPE_MAX_LENGTH",
                "Must be 25 or fewer in length.",
            ));
        }
        let id = existing
            .iter()
            .find(|e| e["name"] == name && e["type"] == kind)
            .and_then(|e| id_of(&e["id"]))
            .unwrap_or_else(|| self.snowflake());
        let version = self.snowflake();
        let mut out = json!({
            "id": id.to_string(),
            "application_id": self.ids.app.to_string(),
            "version": version.to_string(),
            "type": kind,
            "name": name,
            "name_localizations": null,
            "description": description,
            "description_localizations": null,
            "default_member_permissions": c.get("default_member_permissions").cloned().unwrap_or(Value::Null),
            "nsfw": c["nsfw"].as_bool().unwrap_or(false),
            "integration_types": c.get("integration_types").cloned().unwrap_or(json!([0])),
            "contexts": c.get("contexts").cloned().unwrap_or(Value::Null),
        });
        if let Some(o) = c.get("options").filter(|o| !o.is_null()) {
            out["options"] = o.clone();
        }
        match guild {
            Some(g) => out["guild_id"] = json!(g.to_string()),
            None => out["dm_permission"] = json!(c["dm_permission"].as_bool().unwrap_or(true)),
        }
        Ok(out)
    }
}

fn array_of(v: &Value) -> Vec<Value> {
    v.as_array().cloned().unwrap_or_default()
}

/// A snowflake given as a string or a number.
fn id_of(v: &Value) -> Option<u64> {
    match v {
        Value::String(s) => s.parse().ok(),
        v => v.as_u64(),
    }
}

/// Discord's message rules: content at most 2000 characters, at most 10 embeds, and (for a
/// new message) something to send.
fn check_message(data: &Value, has_files: bool, new: bool) -> Result<(), Resp> {
    let content = data["content"].as_str().unwrap_or_default();
    if content.chars().count() > 2000 {
        return Err(Resp::form(
            "content",
            "BASE_TYPE_MAX_LENGTH",
            "Must be 2000 or fewer in length.",
        ));
    }
    let embeds = data["embeds"].as_array().map_or(0, Vec::len);
    if embeds > 10 {
        return Err(Resp::form(
            "embeds",
            "BASE_TYPE_MAX_LENGTH",
            "Must be 10 or fewer in length.",
        ));
    }
    let components = data["components"].as_array().map_or(0, Vec::len);
    let stickers = data["sticker_ids"].as_array().map_or(0, Vec::len);
    if new
        && content.is_empty()
        && embeds == 0
        && components == 0
        && stickers == 0
        && !has_files
        && data["poll"].is_null()
    {
        return Err(Resp::error(400, 50006, "Cannot send an empty message"));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Request bodies: JSON, or multipart with `payload_json` and `files[n]`

pub(super) struct Upload {
    pub(super) index: u64,
    pub(super) filename: String,
    pub(super) content_type: Option<String>,
    pub(super) bytes: Vec<u8>,
}

fn parse_payload(req: &Req, max_upload: usize) -> Result<(Value, Vec<Upload>), Resp> {
    let bad_json = || Resp::error(400, 50109, "The request body contains invalid JSON.");
    let ctype = req.header("content-type").unwrap_or_default();
    if let Some(boundary) = ctype
        .split(';')
        .find_map(|p| p.trim().strip_prefix("boundary="))
        .filter(|_| ctype.starts_with("multipart/form-data"))
    {
        let boundary = boundary.trim_matches('"');
        let mut json_part = Value::Object(Default::default());
        let mut files = Vec::new();
        for part in multipart_parts(&req.body, boundary) {
            if part.name == "payload_json" {
                json_part = serde_json::from_slice(&part.body).map_err(|_| bad_json())?;
            } else if let Some(n) = part
                .name
                .strip_prefix("files[")
                .and_then(|r| r.strip_suffix(']'))
                .and_then(|n| n.parse::<u64>().ok())
            {
                if part.body.len() > max_upload {
                    return Err(Resp::error(413, 40005, "Request entity too large"));
                }
                files.push(Upload {
                    index: n,
                    filename: part.filename.unwrap_or_else(|| format!("file{n}")),
                    content_type: part.content_type,
                    bytes: part.body,
                });
            } else if part.name == "file" {
                if part.body.len() > max_upload {
                    return Err(Resp::error(413, 40005, "Request entity too large"));
                }
                files.push(Upload {
                    index: files.len() as u64,
                    filename: part.filename.unwrap_or_else(|| "file".into()),
                    content_type: part.content_type,
                    bytes: part.body,
                });
            }
        }
        return Ok((json_part, files));
    }
    if req.body.is_empty() {
        return Ok((json!({}), Vec::new()));
    }
    let v: Value = serde_json::from_slice(&req.body).map_err(|_| bad_json())?;
    Ok((v, Vec::new()))
}

struct Part {
    name: String,
    filename: Option<String>,
    content_type: Option<String>,
    body: Vec<u8>,
}

fn multipart_parts(body: &[u8], boundary: &str) -> Vec<Part> {
    let delim = format!("--{boundary}");
    let d = delim.as_bytes();
    let mut starts = Vec::new();
    let mut i = 0;
    while i + d.len() <= body.len() {
        if &body[i..i + d.len()] == d {
            starts.push(i);
            i += d.len();
        } else {
            i += 1;
        }
    }
    let mut parts = Vec::new();
    for w in starts.windows(2) {
        let chunk = &body[w[0] + d.len()..w[1]];
        let chunk = chunk.strip_prefix(b"\r\n").unwrap_or(chunk);
        let chunk = chunk.strip_suffix(b"\r\n").unwrap_or(chunk);
        let Some(split) = chunk.windows(4).position(|x| x == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&chunk[..split]);
        let mut part = Part {
            name: String::new(),
            filename: None,
            content_type: None,
            body: chunk[split + 4..].to_vec(),
        };
        for line in head.lines() {
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            match k.trim().to_ascii_lowercase().as_str() {
                "content-disposition" => {
                    for p in v.split(';') {
                        let p = p.trim();
                        if let Some(n) = p.strip_prefix("name=") {
                            part.name = n.trim_matches('"').to_string();
                        } else if let Some(f) = p.strip_prefix("filename=") {
                            part.filename = Some(f.trim_matches('"').to_string());
                        }
                    }
                }
                "content-type" => part.content_type = Some(v.trim().to_string()),
                _ => {}
            }
        }
        parts.push(part);
    }
    parts
}
