//! A scripted stand-in for the Anthropic Messages API, for running the real Claude Code
//! CLI without the internet.
//!
//! A small HTTP/1.1 server (its own thread and tokio runtime, so sync tests can use it)
//! that answers:
//! - `POST /v1/messages` (with or without `?beta=true`): a request that offers `tools`
//!   is an agent turn and takes the next [`Reply`] of the script; with `"stream": true`
//!   it is sent as server-sent events exactly as Anthropic sends them (`message_start`,
//!   `content_block_start`/`_delta`/`_stop` for text and for `tool_use` with
//!   `input_json_delta`, `message_delta` with `stop_reason` and usage, `message_stop`),
//!   else as one JSON message. A request without tools is a side query of the CLI (a
//!   title, a summary) and gets a short text, without touching the script.
//! - `POST /v1/messages/count_tokens`: a rough count.
//! - anything else: 404 with Anthropic's JSON error shape.
//!
//! Every request is recorded (method, path, headers, body), so a test can assert the
//! conversation: a follow-up turn carries the earlier messages. Request bodies may come
//! with `Content-Length` or chunked. Responses with a body are sent with `Content-Length`;
//! streams are chunked, one server-sent event a chunk, flushed one by one.

use std::time::Duration;

use serde_json::{Value, json};

use super::stub::{
    Api, BoxFuture, Ids, Request, Stub, Writer, end_chunked, send_json, send_sse_event, start_sse,
};

/// The model named in replies when a request names none.
pub const DEFAULT_MODEL: &str = "claude-sonnet-4-5-20250929";

/// One content block of a scripted assistant message.
#[derive(Debug, Clone, PartialEq)]
pub enum Block {
    Text(String),
    ToolUse { name: String, input: Value },
}

/// What the stand-in answers to one agent turn.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// An assistant message. `stop_reason` is `tool_use` when it holds a tool call,
    /// else `end_turn`. When streamed, text goes out in deltas of `chunk` characters
    /// with `delay` between events.
    Message {
        blocks: Vec<Block>,
        chunk: usize,
        delay: Duration,
        usage: Usage,
    },
    /// An HTTP error with Anthropic's JSON error body.
    HttpError {
        status: u16,
        kind: String,
        message: String,
    },
    /// A stream that starts (`message_start`) and then sends an `error` event, as the
    /// API does when it is overloaded mid-stream.
    StreamError { kind: String, message: String },
}

/// The token counts a scripted message reports.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_input_tokens: u64,
    pub cache_creation_input_tokens: u64,
}

impl Default for Usage {
    fn default() -> Usage {
        Usage {
            input_tokens: 120,
            output_tokens: 30,
            cache_read_input_tokens: 0,
            cache_creation_input_tokens: 0,
        }
    }
}

impl Reply {
    /// A final text answer.
    pub fn text(text: &str) -> Reply {
        Reply::blocks(vec![Block::Text(text.to_string())])
    }

    /// A Bash tool call running `command`, after a short text.
    pub fn bash(say: &str, command: &str) -> Reply {
        let mut blocks = Vec::new();
        if !say.is_empty() {
            blocks.push(Block::Text(say.to_string()));
        }
        blocks.push(Block::ToolUse {
            name: "Bash".into(),
            input: json!({"command": command, "description": "Run the command"}),
        });
        Reply::blocks(blocks)
    }

    pub fn blocks(blocks: Vec<Block>) -> Reply {
        Reply::Message {
            blocks,
            chunk: 16,
            delay: Duration::ZERO,
            usage: Usage::default(),
        }
    }

    /// A long text streamed slowly: `n` deltas of `piece`, `delay` apart.
    pub fn slow_text(piece: &str, n: usize, delay: Duration) -> Reply {
        Reply::Message {
            blocks: vec![Block::Text(piece.repeat(n))],
            chunk: piece.chars().count().max(1),
            delay,
            usage: Usage::default(),
        }
    }

    pub fn http_error(status: u16, kind: &str, message: &str) -> Reply {
        Reply::HttpError {
            status,
            kind: kind.into(),
            message: message.into(),
        }
    }

    /// Sets the usage reported by a [`Reply::Message`].
    pub fn with_usage(mut self, u: Usage) -> Reply {
        if let Reply::Message { usage, .. } = &mut self {
            *usage = u;
        }
        self
    }
}

/// The Anthropic Messages API, scripted.
pub struct Anthropic;

/// The running stand-in; stops when dropped.
pub type AnthropicStub = Stub<Anthropic>;

/// The text of every `text` block (and string content) in a request's messages, in
/// order: what a test checks to see that earlier turns were sent again.
pub fn conversation_text(body: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for m in body["messages"].as_array().into_iter().flatten() {
        match &m["content"] {
            Value::String(s) => out.push(s.clone()),
            Value::Array(blocks) => {
                for b in blocks {
                    match b["type"].as_str() {
                        Some("text") => out.push(b["text"].as_str().unwrap_or_default().into()),
                        Some("tool_result") => match &b["content"] {
                            Value::String(s) => out.push(s.clone()),
                            Value::Array(parts) => out.extend(
                                parts
                                    .iter()
                                    .filter_map(|p| p["text"].as_str().map(String::from)),
                            ),
                            _ => {}
                        },
                        Some("tool_use") => out.push(b["input"].to_string()),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// What to answer a request with.
pub enum Answer {
    Scripted(Reply),
    Side,
    CountTokens,
    NotFound,
}

impl Api for Anthropic {
    type Reply = Reply;
    type Answer = Answer;

    fn route(req: &mut Request, next: &mut dyn FnMut() -> Option<Reply>) -> Answer {
        match (req.method.as_str(), req.route()) {
            ("POST", "/v1/messages") => {
                let body = req.json();
                let has_tools = body["tools"].as_array().is_some_and(|t| !t.is_empty());
                if !has_tools {
                    return Answer::Side;
                }
                req.scripted = true;
                Answer::Scripted(next().unwrap_or_else(|| {
                    Reply::http_error(
                        500,
                        "api_error",
                        "the scripted stand-in has no reply left for this request",
                    )
                }))
            }
            ("POST", "/v1/messages/count_tokens") => Answer::CountTokens,
            _ => Answer::NotFound,
        }
    }

    fn answer<'a>(
        w: &'a mut Writer,
        req: &'a Request,
        answer: Answer,
        ids: &'a Ids,
    ) -> BoxFuture<'a, std::io::Result<()>> {
        Box::pin(answer_with(w, req, answer, ids))
    }

    fn describe(body: &Value) -> String {
        format!(
            "model={} stream={} tools={} messages={}",
            body["model"],
            body["stream"],
            body["tools"].as_array().map_or(0, Vec::len),
            body["messages"].as_array().map_or(0, Vec::len),
        )
    }
}

async fn answer_with(
    w: &mut Writer,
    req: &Request,
    answer: Answer,
    ids: &Ids,
) -> std::io::Result<()> {
    let body = req.json();
    let model = body["model"].as_str().unwrap_or(DEFAULT_MODEL).to_string();
    let stream = body["stream"].as_bool().unwrap_or(false);
    let request_id = ids.next("req");
    match answer {
        Answer::NotFound => {
            let msg = format!("stand-in: no route for {} {}", req.method, req.path);
            send_api_json(w, 404, &error_body("not_found_error", &msg), &request_id).await
        }
        Answer::CountTokens => {
            let n = (req.body.len() / 4).max(1);
            send_api_json(w, 200, &json!({"input_tokens": n}), &request_id).await
        }
        Answer::Side => {
            let reply = Reply::text("Scripted side answer");
            send_message(w, &model, stream, &reply, ids, &request_id).await
        }
        Answer::Scripted(Reply::HttpError {
            status,
            kind,
            message,
        }) => send_api_json(w, status, &error_body(&kind, &message), &request_id).await,
        Answer::Scripted(reply) => send_message(w, &model, stream, &reply, ids, &request_id).await,
    }
}

fn error_body(kind: &str, message: &str) -> Value {
    json!({"type": "error", "error": {"type": kind, "message": message}})
}

/// A JSON answer; an error body carries the request id, as Anthropic's do.
async fn send_api_json(
    w: &mut Writer,
    status: u16,
    body: &Value,
    request_id: &str,
) -> std::io::Result<()> {
    let mut body = body.clone();
    if body["type"] == "error" {
        body["request_id"] = json!(request_id);
    }
    send_json(w, status, &body, &[("request-id", request_id)]).await
}

/// The `usage` object of a message.
fn usage_json(u: &Usage, output_tokens: u64) -> Value {
    json!({
        "input_tokens": u.input_tokens,
        "cache_creation_input_tokens": u.cache_creation_input_tokens,
        "cache_read_input_tokens": u.cache_read_input_tokens,
        "output_tokens": output_tokens,
        "service_tier": "standard",
    })
}

async fn send_message(
    w: &mut Writer,
    model: &str,
    stream: bool,
    reply: &Reply,
    ids: &Ids,
    request_id: &str,
) -> std::io::Result<()> {
    let msg_id = ids.next("msg");
    let (blocks, chunk, delay, usage) = match reply {
        Reply::Message {
            blocks,
            chunk,
            delay,
            usage,
        } => (blocks.clone(), *chunk, *delay, *usage),
        Reply::StreamError { .. } => (Vec::new(), 1, Duration::ZERO, Usage::default()),
        Reply::HttpError { .. } => unreachable!("HTTP errors are answered before"),
    };
    // Tool ids are fixed when the reply is sent, the same in both forms.
    let content: Vec<Value> = blocks
        .iter()
        .map(|b| match b {
            Block::Text(t) => json!({"type": "text", "text": t}),
            Block::ToolUse { name, input } => {
                json!({"type": "tool_use", "id": ids.next("toolu"), "name": name, "input": input})
            }
        })
        .collect();
    let stop_reason = if content.iter().any(|c| c["type"] == "tool_use") {
        "tool_use"
    } else {
        "end_turn"
    };
    if !stream {
        if let Reply::StreamError { kind, message } = reply {
            return send_api_json(w, 529, &error_body(kind, message), request_id).await;
        }
        let body = json!({
            "id": msg_id, "type": "message", "role": "assistant", "model": model,
            "content": content, "stop_reason": stop_reason, "stop_sequence": null,
            "usage": usage_json(&usage, usage.output_tokens),
        });
        return send_api_json(w, 200, &body, request_id).await;
    }

    start_sse(w, &[("request-id", request_id)]).await?;
    let mut events: Vec<Value> = vec![json!({
        "type": "message_start",
        "message": {
            "id": msg_id, "type": "message", "role": "assistant", "model": model,
            "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": usage_json(&usage, 1),
        }
    })];
    if let Reply::StreamError { kind, message } = reply {
        events.push(json!({"type": "ping"}));
        events.push(error_body(kind, message));
    } else {
        for (index, block) in content.iter().enumerate() {
            match block["type"].as_str() {
                Some("text") => {
                    events.push(json!({"type": "content_block_start", "index": index,
                        "content_block": {"type": "text", "text": ""}}));
                    if index == 0 {
                        events.push(json!({"type": "ping"}));
                    }
                    let text: Vec<char> =
                        block["text"].as_str().unwrap_or_default().chars().collect();
                    for piece in text.chunks(chunk.max(1)) {
                        let piece: String = piece.iter().collect();
                        events.push(json!({"type": "content_block_delta", "index": index,
                            "delta": {"type": "text_delta", "text": piece}}));
                    }
                }
                _ => {
                    events.push(json!({"type": "content_block_start", "index": index,
                        "content_block": {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}}));
                    events.push(json!({"type": "content_block_delta", "index": index,
                        "delta": {"type": "input_json_delta", "partial_json": ""}}));
                    let input: Vec<char> = block["input"].to_string().chars().collect();
                    for piece in input.chunks(chunk.max(1)) {
                        let piece: String = piece.iter().collect();
                        events.push(json!({"type": "content_block_delta", "index": index,
                            "delta": {"type": "input_json_delta", "partial_json": piece}}));
                    }
                }
            }
            events.push(json!({"type": "content_block_stop", "index": index}));
        }
        events.push(json!({
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": null},
            "usage": {
                "input_tokens": usage.input_tokens,
                "cache_creation_input_tokens": usage.cache_creation_input_tokens,
                "cache_read_input_tokens": usage.cache_read_input_tokens,
                "output_tokens": usage.output_tokens,
            },
        }));
        events.push(json!({"type": "message_stop"}));
    }
    for (i, ev) in events.iter().enumerate() {
        if i > 0 && !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let name = ev["type"].as_str().unwrap_or("message");
        send_sse_event(w, name, ev).await?;
    }
    end_chunked(w).await
}

#[cfg(test)]
mod tests {
    //! The stand-in checked with a plain TCP client (no Docker needed).
    use super::*;
    use crate::support::stub::client::roundtrip;

    #[test]
    fn anthropic_stub_speaks_sse_json_and_records() {
        let stub = AnthropicStub::start(
            "127.0.0.1:0",
            vec![
                Reply::bash("Let me look.", "echo hi"),
                Reply::text("Done."),
                Reply::http_error(400, "invalid_request_error", "bad"),
            ],
        );
        let body = json!({"model": "m1", "stream": true, "tools": [{"name": "Bash"}],
            "messages": [{"role": "user", "content": "go"}]})
        .to_string();
        // Chunked request body, streamed answer.
        let (a, b) = body.split_at(10);
        let raw = format!(
            "POST /v1/messages?beta=true HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\n\r\n",
            a.len(),
            b.len()
        );
        let out = roundtrip(stub.port(), raw.as_bytes());
        assert!(out.starts_with("HTTP/1.1 200 OK"), "{out}");
        for want in [
            "event: message_start",
            "\"type\":\"tool_use\"",
            "input_json_delta",
            "\"stop_reason\":\"tool_use\"",
            "event: message_stop",
        ] {
            assert!(out.contains(want), "{want} missing in {out}");
        }
        // Not streamed, Content-Length body.
        let body = json!({"model": "m1", "tools": [{"name": "Bash"}], "messages": []}).to_string();
        let raw = format!(
            "POST /v1/messages HTTP/1.1\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let out = roundtrip(stub.port(), raw.as_bytes());
        assert!(out.contains("\"text\":\"Done.\""), "{out}");
        assert!(out.contains("\"stop_reason\":\"end_turn\""), "{out}");
        let out = roundtrip(stub.port(), raw.as_bytes());
        assert!(out.starts_with("HTTP/1.1 400"), "{out}");
        assert!(out.contains("invalid_request_error"), "{out}");
        let out = roundtrip(
            stub.port(),
            b"GET /v1/models HTTP/1.1\r\nConnection: close\r\n\r\n",
        );
        assert!(out.starts_with("HTTP/1.1 404"), "{out}");
        assert_eq!(stub.turns().len(), 3);
        assert_eq!(stub.requests().len(), 4);
        assert_eq!(stub.remaining(), 0);
        assert_eq!(conversation_text(&stub.turns()[0]), vec!["go".to_string()]);
    }
}
