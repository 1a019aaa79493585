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

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// The model named in replies when a request names none.
pub const DEFAULT_MODEL: &str = "claude-sonnet-4-5-20250929";
/// The largest request head or body accepted.
const MAX_BODY: usize = 64 * 1024 * 1024;
const MAX_HEAD: usize = 256 * 1024;

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

/// One request as the stand-in received it.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// The request target, with its query string.
    pub path: String,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Whether it took a reply from the script.
    pub scripted: bool,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// The path without its query string.
    pub fn route(&self) -> &str {
        self.path.split('?').next().unwrap_or_default()
    }
}

#[derive(Default)]
struct State {
    script: VecDeque<Reply>,
    requests: Vec<Request>,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    ids: AtomicU64,
}

impl Shared {
    fn id(&self, prefix: &str) -> String {
        let n = self.ids.fetch_add(1, Ordering::Relaxed);
        format!("{prefix}_01Stub{n:018}")
    }
}

/// The running stand-in; stops when dropped.
pub struct AnthropicStub {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl AnthropicStub {
    /// Starts a stand-in listening on `bind` (`"127.0.0.1:0"`, or `"0.0.0.0:0"` for
    /// containers on the Docker bridge), following `script`.
    pub fn start(bind: &str, script: Vec<Reply>) -> AnthropicStub {
        let std_listener = std::net::TcpListener::bind(bind).expect("bind the Anthropic stand-in");
        std_listener.set_nonblocking(true).expect("nonblocking");
        let addr = std_listener.local_addr().expect("local addr");
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                script: script.into(),
                requests: Vec::new(),
            }),
            changed: Condvar::new(),
            ids: AtomicU64::new(1),
        });
        let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
        let sh = shared.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            rt.block_on(async move {
                let listener = TcpListener::from_std(std_listener).expect("tokio listener");
                loop {
                    tokio::select! {
                        _ = &mut stop_rx => break,
                        accepted = listener.accept() => {
                            if let Ok((stream, _)) = accepted {
                                tokio::spawn(serve(stream, sh.clone()));
                            }
                        }
                    }
                }
            });
        });
        AnthropicStub {
            addr,
            shared,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Appends replies to the script.
    pub fn push(&self, replies: impl IntoIterator<Item = Reply>) {
        let mut st = self.shared.state.lock().expect("lock");
        st.script.extend(replies);
    }

    /// Drops the replies not used yet; how many there were.
    pub fn clear(&self) -> usize {
        let mut st = self.shared.state.lock().expect("lock");
        let n = st.script.len();
        st.script.clear();
        n
    }

    /// How many replies of the script are not used yet.
    pub fn remaining(&self) -> usize {
        self.shared.state.lock().expect("lock").script.len()
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<Request> {
        self.shared.state.lock().expect("lock").requests.clone()
    }

    /// The JSON bodies of the agent turns (the requests that took a scripted reply).
    pub fn turns(&self) -> Vec<Value> {
        self.requests()
            .iter()
            .filter(|r| r.scripted)
            .map(Request::json)
            .collect()
    }

    /// Waits until `n` agent turns have been received; false after `timeout`.
    pub fn wait_turns(&self, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut st = self.shared.state.lock().expect("lock");
        loop {
            if st.requests.iter().filter(|r| r.scripted).count() >= n {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            st = self.shared.changed.wait_timeout(st, left).expect("wait").0;
        }
    }

    /// A one-line-per-request log, for assertion messages.
    pub fn log(&self) -> String {
        self.requests()
            .iter()
            .map(|r| {
                let body = r.json();
                format!(
                    "{} {} scripted={} model={} stream={} tools={} messages={}\n",
                    r.method,
                    r.path,
                    r.scripted,
                    body["model"],
                    body["stream"],
                    body["tools"].as_array().map_or(0, Vec::len),
                    body["messages"].as_array().map_or(0, Vec::len),
                )
            })
            .collect()
    }
}

impl Drop for AnthropicStub {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

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

// --- the HTTP side -------------------------------------------------------------------

async fn serve(stream: TcpStream, shared: Arc<Shared>) {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    // Keep-alive: requests one after another until the client closes.
    while let Ok(Some(mut req)) = read_request(&mut reader, &mut write).await {
        let keep_alive = !req
            .header("connection")
            .is_some_and(|c| c.eq_ignore_ascii_case("close"));
        let reply = route(&mut req, &shared);
        {
            let mut st = shared.state.lock().expect("lock");
            st.requests.push(req.clone());
            shared.changed.notify_all();
        }
        if answer(&mut write, &req, reply, &shared).await.is_err() || !keep_alive {
            break;
        }
    }
}

/// Reads one request; `None` at a clean end of the connection.
async fn read_request(
    reader: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
    write: &mut tokio::net::tcp::OwnedWriteHalf,
) -> std::io::Result<Option<Request>> {
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
    let mut line = String::new();
    if reader.read_line(&mut line).await? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let (Some(method), Some(path)) = (parts.next(), parts.next()) else {
        return Err(bad("bad request line"));
    };
    let (method, path) = (method.to_string(), path.to_string());
    let mut headers = Vec::new();
    let mut head_len = line.len();
    loop {
        line.clear();
        if reader.read_line(&mut line).await? == 0 {
            return Err(bad("end of stream in the headers"));
        }
        head_len += line.len();
        if head_len > MAX_HEAD {
            return Err(bad("headers too large"));
        }
        let l = line.trim_end_matches(['\r', '\n']);
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let mut req = Request {
        method,
        path,
        headers,
        body: Vec::new(),
        scripted: false,
    };
    if req
        .header("expect")
        .is_some_and(|e| e.eq_ignore_ascii_case("100-continue"))
    {
        write.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
    }
    let chunked = req
        .header("transfer-encoding")
        .is_some_and(|t| t.to_ascii_lowercase().contains("chunked"));
    if chunked {
        loop {
            line.clear();
            reader.read_line(&mut line).await?;
            let size = line.trim().split(';').next().unwrap_or_default();
            let size = usize::from_str_radix(size, 16).map_err(|_| bad("bad chunk size"))?;
            if req.body.len() + size > MAX_BODY {
                return Err(bad("body too large"));
            }
            if size == 0 {
                // Trailers, up to the empty line.
                loop {
                    line.clear();
                    if reader.read_line(&mut line).await? == 0 || line.trim().is_empty() {
                        break;
                    }
                }
                break;
            }
            let start = req.body.len();
            req.body.resize(start + size, 0);
            reader.read_exact(&mut req.body[start..]).await?;
            line.clear();
            reader.read_line(&mut line).await?; // the CRLF after the chunk
        }
    } else if let Some(len) = req.header("content-length") {
        let len: usize = len.parse().map_err(|_| bad("bad content-length"))?;
        if len > MAX_BODY {
            return Err(bad("body too large"));
        }
        req.body.resize(len, 0);
        reader.read_exact(&mut req.body).await?;
    }
    Ok(Some(req))
}

/// What to answer a request with.
enum Answer {
    Scripted(Reply),
    Side,
    CountTokens,
    NotFound,
}

fn route(req: &mut Request, shared: &Shared) -> Answer {
    match (req.method.as_str(), req.route()) {
        ("POST", "/v1/messages") => {
            let body = req.json();
            let has_tools = body["tools"].as_array().is_some_and(|t| !t.is_empty());
            if !has_tools {
                return Answer::Side;
            }
            req.scripted = true;
            let next = shared.state.lock().expect("lock").script.pop_front();
            Answer::Scripted(next.unwrap_or_else(|| {
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

async fn answer(
    w: &mut tokio::net::tcp::OwnedWriteHalf,
    req: &Request,
    answer: Answer,
    shared: &Shared,
) -> std::io::Result<()> {
    let body = req.json();
    let model = body["model"].as_str().unwrap_or(DEFAULT_MODEL).to_string();
    let stream = body["stream"].as_bool().unwrap_or(false);
    let request_id = shared.id("req");
    match answer {
        Answer::NotFound => {
            let msg = format!("stand-in: no route for {} {}", req.method, req.path);
            send_json(w, 404, &error_body("not_found_error", &msg), &request_id).await
        }
        Answer::CountTokens => {
            let n = (req.body.len() / 4).max(1);
            send_json(w, 200, &json!({"input_tokens": n}), &request_id).await
        }
        Answer::Side => {
            let reply = Reply::text("Scripted side answer");
            send_message(w, &model, stream, &reply, shared, &request_id).await
        }
        Answer::Scripted(Reply::HttpError {
            status,
            kind,
            message,
        }) => send_json(w, status, &error_body(&kind, &message), &request_id).await,
        Answer::Scripted(reply) => {
            send_message(w, &model, stream, &reply, shared, &request_id).await
        }
    }
}

fn error_body(kind: &str, message: &str) -> Value {
    json!({"type": "error", "error": {"type": kind, "message": message}})
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        529 => "Overloaded",
        _ => "Status",
    }
}

async fn send_json(
    w: &mut tokio::net::tcp::OwnedWriteHalf,
    status: u16,
    body: &Value,
    request_id: &str,
) -> std::io::Result<()> {
    let mut body = body.clone();
    if body["type"] == "error" {
        body["request_id"] = json!(request_id);
    }
    let text = body.to_string();
    let head = format!(
        "HTTP/1.1 {status} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nrequest-id: {request_id}\r\n\r\n",
        reason(status),
        text.len()
    );
    w.write_all(head.as_bytes()).await?;
    w.write_all(text.as_bytes()).await?;
    w.flush().await
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
    w: &mut tokio::net::tcp::OwnedWriteHalf,
    model: &str,
    stream: bool,
    reply: &Reply,
    shared: &Shared,
    request_id: &str,
) -> std::io::Result<()> {
    let msg_id = shared.id("msg");
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
                json!({"type": "tool_use", "id": shared.id("toolu"), "name": name, "input": input})
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
            return send_json(w, 529, &error_body(kind, message), request_id).await;
        }
        let body = json!({
            "id": msg_id, "type": "message", "role": "assistant", "model": model,
            "content": content, "stop_reason": stop_reason, "stop_sequence": null,
            "usage": usage_json(&usage, usage.output_tokens),
        });
        return send_json(w, 200, &body, request_id).await;
    }

    let head = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\ncache-control: no-cache\r\ntransfer-encoding: chunked\r\nrequest-id: {request_id}\r\n\r\n"
    );
    w.write_all(head.as_bytes()).await?;
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
        let data = format!("event: {name}\ndata: {ev}\n\n");
        w.write_all(format!("{:x}\r\n{data}\r\n", data.len()).as_bytes())
            .await?;
        w.flush().await?;
    }
    w.write_all(b"0\r\n\r\n").await?;
    w.flush().await
}

#[cfg(test)]
mod tests {
    //! The stand-in checked with a plain TCP client (no Docker needed).
    use super::*;
    use std::io::{Read, Write};

    fn roundtrip(port: u16, raw: &[u8]) -> String {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).ok();
        s.write_all(raw).expect("write");
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    }

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
