//! The Gateway WebSocket (v10, JSON) on its own listener: HELLO and heartbeats, IDENTIFY
//! (READY, GUILD_CREATE), RESUME (what the session missed, replayed), and the dispatches
//! of the state, filtered by the session's intents.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::{
    Conn, FakeDiscord, GUILD_MEMBERS, GUILD_MESSAGES, GUILDS, MEMBER_PERMISSIONS, MESSAGE_CONTENT,
    Out, Session, Shared, State,
};

/// Accepts gateway connections until the fake stops.
pub(super) async fn listen(listener: std::net::TcpListener, shared: Arc<Shared>) {
    let listener = TcpListener::from_std(listener).expect("tokio listener");
    loop {
        if let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(connection(stream, shared.clone()));
        }
    }
}

async fn connection(stream: TcpStream, shared: Arc<Shared>) {
    use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
    let mut query = String::new();
    // The signature is tungstenite's.
    #[allow(clippy::result_large_err)]
    let callback = |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        query = req.uri().query().unwrap_or_default().to_string();
        Ok(resp)
    };
    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await else {
        return;
    };
    let close = |code: u16| {
        WsMessage::Close(Some(CloseFrame {
            code: CloseCode::from(code),
            reason: "".into(),
        }))
    };
    if !query.split('&').any(|kv| kv == "v=10") {
        let _ = ws.send(close(4012)).await;
        return;
    }
    if query
        .split('&')
        .any(|kv| kv.starts_with("encoding=") && kv != "encoding=json")
    {
        let _ = ws.send(close(4002)).await;
        return;
    }
    let interval = shared.lock().limits.heartbeat_interval.as_millis() as u64;
    let hello = json!({"op": 10, "s": null, "t": null, "d": {"heartbeat_interval": interval}});
    if ws.send(WsMessage::Text(hello.to_string())).await.is_err() {
        return;
    }
    let id = shared.conn_ids.fetch_add(1, Ordering::Relaxed) + 1;
    let (tx, mut rx) = mpsc::unbounded_channel::<Out>();
    let mut authed = false;
    loop {
        tokio::select! {
            incoming = ws.next() => {
                let text = match incoming {
                    Some(Ok(WsMessage::Text(t))) => t,
                    Some(Ok(WsMessage::Binary(_))) => {
                        let _ = ws.send(close(4002)).await;
                        break;
                    }
                    Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => break,
                    Some(Ok(_)) => continue,
                };
                let Ok(v) = serde_json::from_str::<Value>(&text) else {
                    let _ = ws.send(close(4002)).await;
                    break;
                };
                match v["op"].as_u64() {
                    Some(1) => {
                        let ack = json!({"op": 11, "s": null, "t": null, "d": null});
                        if ws.send(WsMessage::Text(ack.to_string())).await.is_err() {
                            break;
                        }
                    }
                    Some(2) if authed => {
                        let _ = ws.send(close(4005)).await;
                        break;
                    }
                    Some(2) => {
                        let conn = Conn { id, tx: tx.clone() };
                        if let Err(code) = shared.change(|st| st.identify(conn, &v["d"])) {
                            let _ = ws.send(close(code)).await;
                            break;
                        }
                        authed = true;
                    }
                    Some(6) => {
                        let conn = Conn { id, tx: tx.clone() };
                        authed = shared.change(|st| st.resume(conn, &v["d"]));
                    }
                    Some(3 | 4 | 8) => {}
                    _ => {
                        let _ = ws.send(close(4001)).await;
                        break;
                    }
                }
            }
            out = rx.recv() => match out {
                Some(Out::Frame(f)) => {
                    if ws.send(WsMessage::Text(f.to_string())).await.is_err() {
                        break;
                    }
                }
                Some(Out::Close(code)) => {
                    let _ = ws.send(close(code)).await;
                    break;
                }
                None => break,
            }
        }
    }
    shared.change(|st| {
        if st.conn.as_ref().is_some_and(|c| c.id == id) {
            st.conn = None;
        }
    });
}

impl State {
    /// Sends a dispatch to the session (if its intents want it) and logs it for RESUME.
    pub(super) fn dispatch(&mut self, event: &str, mut d: Value) {
        let bot = self.ids.bot;
        let bot_id = bot.to_string();
        let Some(s) = self.session.as_mut() else {
            return;
        };
        let needs = match event {
            "MESSAGE_CREATE" | "MESSAGE_UPDATE" | "MESSAGE_DELETE" => GUILD_MESSAGES,
            "THREAD_CREATE" | "GUILD_CREATE" => GUILDS,
            "GUILD_MEMBER_ADD" => GUILD_MEMBERS,
            _ => 0,
        };
        if s.intents & needs != needs {
            return;
        }
        if matches!(event, "MESSAGE_CREATE" | "MESSAGE_UPDATE") && s.intents & MESSAGE_CONTENT == 0
        {
            let author = d["author"]["id"]
                .as_str()
                .and_then(|a| a.parse::<u64>().ok());
            let mentioned = d["mentions"]
                .as_array()
                .is_some_and(|ms| ms.iter().any(|u| u["id"].as_str() == Some(bot_id.as_str())));
            if author != Some(bot) && !mentioned {
                d["content"] = json!("");
                d["embeds"] = json!([]);
                d["attachments"] = json!([]);
                d["components"] = json!([]);
            }
        }
        s.seq += 1;
        let frame = json!({"op": 0, "t": event, "s": s.seq, "d": d});
        s.log.push((s.seq, frame.clone()));
        if let Some(c) = &self.conn {
            let _ = c.tx.send(Out::Frame(frame));
        }
    }

    fn identify(&mut self, conn: Conn, d: &Value) -> Result<(), u16> {
        let token = d["token"].as_str().unwrap_or_default();
        if token.strip_prefix("Bot ").unwrap_or(token) != FakeDiscord::TOKEN {
            return Err(4004);
        }
        let Some(intents) = d["intents"].as_u64() else {
            return Err(4013);
        };
        let mut identify = d.clone();
        identify["token"] = json!("(redacted)");
        self.identifies += 1;
        self.conn = Some(conn);
        self.session = Some(Session {
            id: uuid::Uuid::new_v4().simple().to_string(),
            intents,
            seq: 0,
            log: Vec::new(),
            identify,
        });
        let session_id = self.session.as_ref().map(|s| s.id.clone());
        let mut user = self.user_json(self.ids.bot);
        user["verified"] = json!(true);
        user["mfa_enabled"] = json!(false);
        let ready = json!({
            "v": 10,
            "user": user,
            "guilds": [{"id": self.ids.guild.to_string(), "unavailable": true}],
            "session_id": session_id,
            "resume_gateway_url": self.ws_url,
            "shard": [0, 1],
            "application": {"id": self.ids.app.to_string(), "flags": 0},
            "private_channels": [],
            "presences": [],
        });
        self.dispatch("READY", ready);
        let guild = self.guild_json(intents & GUILD_MEMBERS != 0);
        self.dispatch("GUILD_CREATE", guild);
        Ok(())
    }

    /// RESUME: replays what the session missed after `seq`, then RESUMED. False: invalid
    /// session.
    fn resume(&mut self, conn: Conn, d: &Value) -> bool {
        let token = d["token"].as_str().unwrap_or_default();
        let ok = token.strip_prefix("Bot ").unwrap_or(token) == FakeDiscord::TOKEN
            && self
                .session
                .as_ref()
                .is_some_and(|s| d["session_id"] == s.id.as_str());
        if !ok {
            let _ = conn.tx.send(Out::Frame(json!({"op": 9, "d": false})));
            return false;
        }
        let after = d["seq"].as_u64().unwrap_or(0);
        if let Some(s) = &self.session {
            for (seq, frame) in &s.log {
                if *seq > after {
                    let _ = conn.tx.send(Out::Frame(frame.clone()));
                }
            }
        }
        self.resumes += 1;
        self.conn = Some(conn);
        self.dispatch("RESUMED", json!({}));
        true
    }

    fn role_json(&self, id: u64, position: u64) -> Value {
        let everyone = id == self.ids.guild;
        json!({
            "id": id.to_string(),
            "name": if everyone { "@everyone".to_string() } else { format!("role-{id}") },
            "color": 0,
            "colors": {"primary_color": 0, "secondary_color": null, "tertiary_color": null},
            "hoist": false,
            "icon": null,
            "unicode_emoji": null,
            "position": position,
            "permissions": MEMBER_PERMISSIONS,
            "managed": false,
            "mentionable": false,
            "flags": 0,
        })
    }

    /// The guild as GUILD_CREATE carries it: every member with the GUILD_MEMBERS intent,
    /// else the bot alone.
    fn guild_json(&self, all_members: bool) -> Value {
        let mut role_ids: Vec<u64> = self
            .members
            .iter()
            .flat_map(|m| m.roles.iter().copied())
            .collect();
        role_ids.sort_unstable();
        role_ids.dedup();
        let mut roles = vec![self.role_json(self.ids.guild, 0)];
        for (i, r) in role_ids.iter().enumerate() {
            roles.push(self.role_json(*r, i as u64 + 1));
        }
        let members: Vec<Value> = self
            .members
            .iter()
            .filter(|m| all_members || m.user_id == self.ids.bot)
            .map(|m| self.member_json(m.user_id, false))
            .collect();
        let threads: Vec<Value> = self.threads.iter().map(|t| self.thread_json(t)).collect();
        let mut guild = json!({
            "id": self.ids.guild.to_string(),
            "name": "Fake Guild",
            "icon": null, "icon_hash": null, "splash": null, "discovery_splash": null,
            "owner_id": self.members.iter().find(|m| !m.bot).map_or(self.ids.bot, |m| m.user_id).to_string(),
            "afk_channel_id": null,
            "afk_timeout": 300,
            "widget_enabled": false,
            "widget_channel_id": null,
            "verification_level": 0,
            "default_message_notifications": 1,
            "explicit_content_filter": 0,
            "roles": roles,
            "emojis": [],
            "features": [],
            "mfa_level": 0,
            "application_id": null,
            "system_channel_id": null,
            "system_channel_flags": 0,
            "rules_channel_id": null,
            "max_presences": null,
            "max_members": 500_000,
            "vanity_url_code": null,
            "description": null,
            "banner": null,
            "premium_tier": 0,
            "premium_subscription_count": 0,
            "preferred_locale": "en-US",
            "public_updates_channel_id": null,
            "max_video_channel_users": 25,
            "max_stage_video_channel_users": 50,
            "nsfw_level": 0,
            "stickers": [],
            "premium_progress_bar_enabled": false,
            "safety_alerts_channel_id": null,
        });
        // In two parts: one `json!` this size exceeds the macro recursion limit.
        let state = json!({
            "joined_at": self.member(self.ids.bot).map(|m| m.joined_at.clone()),
            "large": false,
            "unavailable": false,
            "member_count": self.members.len(),
            "voice_states": [],
            "members": members,
            "channels": [self.text_channel_json()],
            "threads": threads,
            "presences": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
        });
        if let (Some(g), Value::Object(rest)) = (guild.as_object_mut(), state) {
            g.extend(rest);
        }
        guild
    }
}
