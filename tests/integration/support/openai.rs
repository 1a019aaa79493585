//! A scripted stand-in for the OpenAI Responses API, for running the real Codex CLI
//! without the internet.
//!
//! It answers (on the HTTP side of `support::stub`):
//! - `POST /v1/responses`: a request that offers `tools` is an agent turn and takes the
//!   next [`Reply`] of the script; with `"stream": true` it is sent as server-sent events
//!   as the API sends them (`response.created`, `response.in_progress`,
//!   `response.output_item.added`, `response.content_part.added`,
//!   `response.output_text.delta`/`.done`, `response.content_part.done`,
//!   `response.output_item.done`, `response.function_call_arguments.delta`/`.done` for a
//!   call, `response.completed` with the usage), else as one JSON response. A request
//!   without tools is a side query and gets a short text, without touching the script.
//! - `GET /v1/models`: the model list (one model, the one the replies name).
//! - anything else: 404 with OpenAI's JSON error shape.
//!
//! A shell call is made with whichever shell tool the request offers (`shell_command`,
//! `exec_command`, `shell` or the built-in `local_shell`), in that tool's argument shape:
//! Codex versions differ in which they offer.

use std::time::Duration;

use serde_json::{Value, json};

use super::stub::{
    Api, BoxFuture, Ids, Request, Stub, Writer, end_chunked, send_json, send_sse_event, start_sse,
};

/// The model named in replies when a request names none.
pub const DEFAULT_MODEL: &str = "gpt-5-codex";

/// One output item of a scripted response.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    Text(String),
    /// A shell command, made with the request's shell tool.
    Shell(String),
}

/// The token counts a scripted response reports (`input_tokens` includes the cached).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Usage {
    pub input_tokens: u64,
    pub cached_tokens: u64,
    pub output_tokens: u64,
}

impl Default for Usage {
    fn default() -> Usage {
        Usage {
            input_tokens: 200,
            cached_tokens: 50,
            output_tokens: 40,
        }
    }
}

/// What the stand-in answers to one agent turn.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// A response; text goes out in deltas of `chunk` characters, `delay` apart.
    Response {
        items: Vec<Item>,
        chunk: usize,
        delay: Duration,
        usage: Usage,
    },
    /// An HTTP error with OpenAI's JSON error body.
    HttpError {
        status: u16,
        kind: String,
        message: String,
    },
}

impl Reply {
    pub fn text(text: &str) -> Reply {
        Reply::items(vec![Item::Text(text.to_string())])
    }

    /// A shell call running `command`, after a short text.
    pub fn shell(say: &str, command: &str) -> Reply {
        let mut items = Vec::new();
        if !say.is_empty() {
            items.push(Item::Text(say.to_string()));
        }
        items.push(Item::Shell(command.to_string()));
        Reply::items(items)
    }

    pub fn items(items: Vec<Item>) -> Reply {
        Reply::Response {
            items,
            chunk: 16,
            delay: Duration::ZERO,
            usage: Usage::default(),
        }
    }

    /// A long text streamed slowly: `n` deltas of `piece`, `delay` apart.
    pub fn slow_text(piece: &str, n: usize, delay: Duration) -> Reply {
        Reply::Response {
            items: vec![Item::Text(piece.repeat(n))],
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
}

/// The OpenAI Responses API, scripted.
pub struct OpenAi;

/// The running stand-in; stops when dropped.
pub type OpenAiStub = Stub<OpenAi>;

pub enum Answer {
    Scripted(Reply),
    Side,
    Models,
    NotFound,
}

impl Api for OpenAi {
    type Reply = Reply;
    type Answer = Answer;

    fn route(req: &mut Request, next: &mut dyn FnMut() -> Option<Reply>) -> Answer {
        match (req.method.as_str(), req.route()) {
            ("POST", "/v1/responses") => {
                let body = req.json();
                if body["tools"].as_array().is_none_or(|t| t.is_empty()) {
                    return Answer::Side;
                }
                req.scripted = true;
                Answer::Scripted(next().unwrap_or_else(|| {
                    Reply::http_error(
                        400,
                        "invalid_request_error",
                        "the scripted stand-in has no reply left for this request",
                    )
                }))
            }
            ("GET", "/v1/models") => Answer::Models,
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
        let tools: Vec<String> = body["tools"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|t| {
                t["name"]
                    .as_str()
                    .unwrap_or(t["type"].as_str().unwrap_or("?"))
                    .to_string()
            })
            .collect();
        format!(
            "model={} stream={} tools=[{}] input={}",
            body["model"],
            body["stream"],
            tools.join(","),
            body["input"].as_array().map_or(0, Vec::len),
        )
    }
}

/// The text of every message, call and call output in a request's `input`, in order:
/// what a test checks to see that earlier turns were sent again.
pub fn conversation_text(body: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for item in body["input"].as_array().into_iter().flatten() {
        match item["type"].as_str() {
            Some("message") | None => match &item["content"] {
                Value::String(s) => out.push(s.clone()),
                Value::Array(parts) => out.extend(
                    parts
                        .iter()
                        .filter_map(|p| p["text"].as_str().map(String::from)),
                ),
                _ => {}
            },
            Some("function_call") => {
                out.push(item["arguments"].as_str().unwrap_or_default().to_string())
            }
            Some("local_shell_call") => out.push(item["action"].to_string()),
            Some("function_call_output") | Some("local_shell_call_output") => match &item["output"]
            {
                Value::String(s) => out.push(s.clone()),
                other => out.push(other.to_string()),
            },
            _ => {}
        }
    }
    out
}

fn error_body(kind: &str, message: &str) -> Value {
    json!({"error": {"message": message, "type": kind, "param": null, "code": null}})
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
    let headers = [("x-request-id", request_id.as_str())];
    match answer {
        Answer::NotFound => {
            let msg = format!("stand-in: no route for {} {}", req.method, req.path);
            send_json(w, 404, &error_body("invalid_request_error", &msg), &headers).await
        }
        Answer::Models => {
            let list = json!({"object": "list", "data": [
                {"id": DEFAULT_MODEL, "object": "model", "created": 1_700_000_000, "owned_by": "firstmate-test"}
            ]});
            send_json(w, 200, &list, &headers).await
        }
        Answer::Side => {
            let reply = Reply::text("Scripted side answer");
            send_response(w, &model, stream, &reply, &body, ids, &headers).await
        }
        Answer::Scripted(Reply::HttpError {
            status,
            kind,
            message,
        }) => send_json(w, status, &error_body(&kind, &message), &headers).await,
        Answer::Scripted(reply) => {
            send_response(w, &model, stream, &reply, &body, ids, &headers).await
        }
    }
}

/// The shell tool a request offers: its name (or `local_shell`) and how it takes a
/// command.
fn shell_item(request: &Value, command: &str, ids: &Ids) -> Value {
    let tools = request["tools"].as_array().cloned().unwrap_or_default();
    let named = |n: &str| tools.iter().any(|t| t["name"] == n);
    let call_id = ids.next("call");
    let id = ids.next("fc");
    let function = |name: &str, args: Value| {
        json!({"type": "function_call", "id": id, "call_id": call_id, "name": name,
               "arguments": args.to_string(), "status": "completed"})
    };
    if named("shell_command") {
        function("shell_command", json!({"command": command}))
    } else if named("exec_command") {
        function("exec_command", json!({"cmd": command}))
    } else if named("shell") {
        function("shell", json!({"command": ["bash", "-lc", command]}))
    } else if tools.iter().any(|t| t["type"] == "local_shell") {
        json!({"type": "local_shell_call", "id": id, "call_id": call_id, "status": "completed",
               "action": {"type": "exec", "command": ["bash", "-lc", command]}})
    } else {
        // No shell offered: a call Codex will answer with an error, which a test sees.
        function("shell", json!({"command": ["bash", "-lc", command]}))
    }
}

async fn send_response(
    w: &mut Writer,
    model: &str,
    stream: bool,
    reply: &Reply,
    request: &Value,
    ids: &Ids,
    headers: &[(&str, &str)],
) -> std::io::Result<()> {
    let Reply::Response {
        items,
        chunk,
        delay,
        usage,
    } = reply
    else {
        unreachable!("HTTP errors are answered before")
    };
    let resp_id = ids.next("resp");
    let output: Vec<Value> = items
        .iter()
        .map(|i| match i {
            Item::Text(t) => json!({
                "type": "message", "id": ids.next("msg"), "role": "assistant", "status": "completed",
                "content": [{"type": "output_text", "text": t, "annotations": []}],
            }),
            Item::Shell(c) => shell_item(request, c, ids),
        })
        .collect();
    let usage_json = json!({
        "input_tokens": usage.input_tokens,
        "input_tokens_details": {"cached_tokens": usage.cached_tokens},
        "output_tokens": usage.output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": usage.input_tokens + usage.output_tokens,
    });
    let response = |status: &str, output: Value, usage: Value| {
        json!({"id": resp_id, "object": "response", "created_at": 1_700_000_000, "status": status,
               "model": model, "output": output, "usage": usage})
    };
    if !stream {
        let body = response("completed", Value::Array(output), usage_json);
        return send_json(w, 200, &body, headers).await;
    }

    start_sse(w, headers).await?;
    let mut events: Vec<Value> = vec![
        json!({"type": "response.created", "response": response("in_progress", json!([]), Value::Null)}),
        json!({"type": "response.in_progress", "response": response("in_progress", json!([]), Value::Null)}),
    ];
    for (index, item) in output.iter().enumerate() {
        let mut added = item.clone();
        added["status"] = json!("in_progress");
        match item["type"].as_str() {
            Some("message") => {
                added["content"] = json!([]);
                events.push(json!({"type": "response.output_item.added", "output_index": index, "item": added}));
                let part = json!({"type": "output_text", "text": "", "annotations": []});
                events.push(
                    json!({"type": "response.content_part.added", "item_id": item["id"],
                    "output_index": index, "content_index": 0, "part": part}),
                );
                let text = item["content"][0]["text"].as_str().unwrap_or_default();
                let chars: Vec<char> = text.chars().collect();
                for piece in chars.chunks((*chunk).max(1)) {
                    let piece: String = piece.iter().collect();
                    events.push(
                        json!({"type": "response.output_text.delta", "item_id": item["id"],
                        "output_index": index, "content_index": 0, "delta": piece}),
                    );
                }
                events.push(
                    json!({"type": "response.output_text.done", "item_id": item["id"],
                    "output_index": index, "content_index": 0, "text": text}),
                );
                events.push(
                    json!({"type": "response.content_part.done", "item_id": item["id"],
                    "output_index": index, "content_index": 0, "part": item["content"][0]}),
                );
            }
            Some("function_call") => {
                added["arguments"] = json!("");
                events.push(json!({"type": "response.output_item.added", "output_index": index, "item": added}));
                let args = item["arguments"].as_str().unwrap_or_default();
                events.push(json!({"type": "response.function_call_arguments.delta",
                    "item_id": item["id"], "output_index": index, "delta": args}));
                events.push(json!({"type": "response.function_call_arguments.done",
                    "item_id": item["id"], "output_index": index, "arguments": args}));
            }
            _ => {
                events.push(json!({"type": "response.output_item.added", "output_index": index, "item": added}));
            }
        }
        events.push(
            json!({"type": "response.output_item.done", "output_index": index, "item": item}),
        );
    }
    events.push(json!({"type": "response.completed",
        "response": response("completed", Value::Array(output.clone()), usage_json)}));
    for (i, ev) in events.iter_mut().enumerate() {
        if i > 0 && !delay.is_zero() {
            tokio::time::sleep(*delay).await;
        }
        ev["sequence_number"] = json!(i);
        let name = ev["type"].as_str().unwrap_or("message").to_string();
        send_sse_event(w, &name, ev).await?;
    }
    end_chunked(w).await
}

#[cfg(test)]
mod tests {
    //! The stand-in checked with a plain TCP client (no Docker needed).
    use super::*;
    use crate::support::stub::client::{post, roundtrip};

    #[test]
    fn openai_stub_streams_responses_calls_with_the_offered_tool_and_records() {
        let stub = OpenAiStub::start(
            "127.0.0.1:0",
            vec![
                Reply::shell("Let me look.", "echo hi"),
                Reply::text("Done."),
                Reply::http_error(400, "invalid_request_error", "bad"),
            ],
        );
        let body = json!({"model": "gpt-x", "stream": true,
            "tools": [{"type": "function", "name": "exec_command"}],
            "input": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "go"}]}]})
        .to_string();
        let out = post(stub.port(), "/v1/responses", &body);
        assert!(out.starts_with("HTTP/1.1 200 OK"), "{out}");
        for want in [
            "event: response.created",
            "event: response.output_text.delta",
            r#"\"cmd\":\"echo hi\""#,
            "event: response.function_call_arguments.done",
            "event: response.completed",
            "\"cached_tokens\":50",
        ] {
            assert!(out.contains(want), "{want} missing in {out}");
        }
        let body =
            json!({"model": "gpt-x", "tools": [{"type": "local_shell"}], "input": []}).to_string();
        let out = post(stub.port(), "/v1/responses", &body);
        assert!(out.contains("\"text\":\"Done.\""), "{out}");
        let out = post(stub.port(), "/v1/responses", &body);
        assert!(out.starts_with("HTTP/1.1 400"), "{out}");
        assert!(out.contains("invalid_request_error"), "{out}");
        let out = roundtrip(
            stub.port(),
            b"GET /v1/models HTTP/1.1\r\nConnection: close\r\n\r\n",
        );
        assert!(out.contains(DEFAULT_MODEL), "{out}");
        let out = roundtrip(
            stub.port(),
            b"GET /v1/nothing HTTP/1.1\r\nConnection: close\r\n\r\n",
        );
        assert!(out.starts_with("HTTP/1.1 404"), "{out}");
        assert_eq!(stub.turns().len(), 3);
        assert_eq!(stub.remaining(), 0);
        assert_eq!(conversation_text(&stub.turns()[0]), vec!["go".to_string()]);
        // A shell call for a request that offers `shell` takes an argv.
        stub.push([Reply::shell("", "ls")]);
        let body = json!({"model": "m", "stream": false,
            "tools": [{"type": "function", "name": "shell"}], "input": []})
        .to_string();
        let out = post(stub.port(), "/v1/responses", &body);
        assert!(
            out.contains(r#"{\"command\":[\"bash\",\"-lc\",\"ls\"]}"#),
            "{out}"
        );
    }
}
