//! Claude Code's stream-json protocol (`claude -p --input-format stream-json
//! --output-format stream-json --verbose`, Claude Code 2.1.x): stdout lines turned into
//! [`AgentEvent`]s, and the stdin lines that send a prompt or ask for an interrupt.
//!
//! Facts this relies on: every stdout line is one JSON object with a string `type`
//! (its keys in any order: `result` lines do not start with `type`); each content
//! block of an assistant message comes as its own `assistant` line (several lines
//! share one `message.id`); tool results come back as `user` lines; every turn ends
//! with its own `result` line. Pure code, no I/O; never panics.
//!
//! Checked against the real CLI (2.1.330; captures in `tests/fixtures/claude/real/`):
//! - A `system`/`init` line starts every turn, not only the first: each gives a
//!   [`AgentEvent::Started`] with the same session id (and `--resume` keeps the id).
//! - `total_cost_usd` of a `result` is the running total of the CLI process (after
//!   `--resume`, of the conversation so far), while its `usage` is the turn's own.
//! - An API error (and "Not logged in") comes as an `assistant` line of the CLI's own
//!   (`"is_api_error_message": true`, model `<synthetic>`) whose text the `result`
//!   repeats (`is_error: true`, `api_error_status`): only the turn end reports it.
//!   Retries come as `system`/`api_retry` lines (kept as unknown).
//! - An interrupt is answered by a `control_response`, then the text streamed so far
//!   (as a normal `assistant` line), a `user` line "[Request interrupted by user]" and a
//!   `result` with `is_error: true`, subtype `error_during_execution` and
//!   `terminal_reason` `aborted_streaming` (or `aborted_tools` when a tool was running).

use serde_json::{Map, Value};

use super::{AgentEvent, TurnOutcome, Usage, malformed, one_line, parse_json_line};

/// The longest `summary` of a [`AgentEvent::ToolUse`], in characters.
const SUMMARY_CHARS: usize = 200;

type Object = Map<String, Value>;

/// Parses one stdout line into zero or more neutral events (an assistant message may
/// hold several content blocks; empty lines give none).
pub fn parse_line(line: &str) -> Vec<AgentEvent> {
    parse_json_line(line, |obj, kind, line| match kind {
        "system" => system(obj, line),
        "assistant" => assistant(obj, line),
        "user" => user(obj, line),
        "result" => result(obj),
        "control_request" => control_request(obj, line),
        "control_response" | "stream_event" => Ok(Vec::new()),
        other => Ok(vec![AgentEvent::Unknown {
            kind: other.to_string(),
            raw: line.to_string(),
        }]),
    })
}

/// The stdin line (JSON and `'\n'`) that sends a user prompt.
pub fn encode_prompt(text: &str) -> String {
    let text = Value::String(text.to_string());
    format!("{{\"type\":\"user\",\"message\":{{\"role\":\"user\",\"content\":{text}}}}}\n")
}

/// An image for the model, with the prompt it came with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub media_type: String,
    pub data: Vec<u8>,
}

/// The stdin line of a prompt with images: the images as base64 image content blocks,
/// then the text (as the Messages API and Claude Code take them). Without images, the
/// plain [`encode_prompt`].
pub fn encode_prompt_with_images(text: &str, images: &[Image]) -> String {
    use base64::Engine as _;
    if images.is_empty() {
        return encode_prompt(text);
    }
    let mut content: Vec<Value> = images
        .iter()
        .map(|i| {
            serde_json::json!({
                "type": "image",
                "source": {
                    "type": "base64",
                    "media_type": i.media_type,
                    "data": base64::engine::general_purpose::STANDARD.encode(&i.data),
                }
            })
        })
        .collect();
    content.push(serde_json::json!({"type": "text", "text": text}));
    let line = serde_json::json!({"type": "user", "message": {"role": "user", "content": content}});
    format!("{line}\n")
}

/// The stdin line that asks the agent to interrupt its current turn; Claude Code
/// answers with a `control_response` and ends the turn with a `result`.
pub fn encode_interrupt(request_id: &str) -> String {
    let id = Value::String(request_id.to_string());
    format!(
        "{{\"type\":\"control_request\",\"request_id\":{id},\"request\":{{\"subtype\":\"interrupt\"}}}}\n"
    )
}

/// The permission modes a `claude` agent accepts (`[agents.*] permission_mode`): the
/// pinned CLI's own, `bypass` (short for `bypassPermissions`) and `ask` (the CLI asks
/// firstmate on stdio, [`encode_permission`] answers).
pub const PERMISSION_MODES: [&str; 9] = [
    "bypass",
    "ask",
    "bypassPermissions",
    "acceptEdits",
    "default",
    "manual",
    "auto",
    "dontAsk",
    "plan",
];

/// The stdin line that answers the CLI's `can_use_tool` request `request_id` (the
/// Claude Agent SDK's `control_response`): allow with the input asked about, or deny with
/// a message the model reads as the tool's result.
pub fn encode_permission(request_id: &str, answer: &super::Permission) -> String {
    let response = match answer {
        super::Permission::Allow { input } => {
            serde_json::json!({"behavior": "allow", "updatedInput": input})
        }
        super::Permission::Deny { message } => {
            serde_json::json!({"behavior": "deny", "message": message})
        }
    };
    let line = serde_json::json!({
        "type": "control_response",
        "response": {"subtype": "success", "request_id": request_id, "response": response},
    });
    format!("{line}\n")
}

/// The argv that starts the agent: `claude -p` in stream-json mode, then
/// `--model M`, `--permission-mode MODE` and `--resume ID` when given (and not
/// empty), then `extra`. Mode `ask` is the CLI's default mode with its permission
/// prompts sent to stdout as `can_use_tool` control requests (`--permission-prompt-tool
/// stdio`, as the Claude Agent SDK runs it); `bypass` is `bypassPermissions`.
pub fn command(
    model: Option<&str>,
    permission_mode: Option<&str>,
    resume: Option<&str>,
    extra: &[String],
) -> Vec<String> {
    let mut argv: Vec<String> = [
        "claude",
        "-p",
        "--input-format",
        "stream-json",
        "--output-format",
        "stream-json",
        "--verbose",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    let ask = permission_mode == Some("ask");
    let permission_mode = permission_mode.map(|m| match m {
        "ask" => "default",
        "bypass" => "bypassPermissions",
        other => other,
    });
    for (flag, value) in [
        ("--model", model),
        ("--permission-mode", permission_mode),
        ("--resume", resume),
    ] {
        if let Some(v) = value.filter(|v| !v.trim().is_empty()) {
            argv.push(flag.to_string());
            argv.push(v.to_string());
        }
    }
    if ask {
        argv.extend(["--permission-prompt-tool".to_string(), "stdio".to_string()]);
    }
    argv.extend(extra.iter().cloned());
    argv
}

/// `control_request` lines: the CLI asks its host. `can_use_tool` (with
/// `--permission-prompt-tool stdio`) asks whether a tool call may run; the other
/// subtypes are kept as unknown.
fn control_request(obj: &Object, line: &str) -> Result<Vec<AgentEvent>, String> {
    let ctx = "control_request";
    let request_id = req_str(obj, "request_id", ctx)?;
    let request = req_obj(obj, "request", ctx)?;
    let subtype = req_str(request, "subtype", "control_request.request")?;
    if subtype != "can_use_tool" {
        return Ok(vec![AgentEvent::Unknown {
            kind: format!("control_request/{subtype}"),
            raw: line.to_string(),
        }]);
    }
    let ctx = "can_use_tool request";
    let tool = req_str(request, "tool_name", ctx)?;
    let input = match request.get("input") {
        None | Some(Value::Null) => Value::Object(Object::new()),
        Some(v) => v.clone(),
    };
    Ok(vec![AgentEvent::PermissionRequest {
        request_id: request_id.to_string(),
        tool: tool.to_string(),
        summary: summarize(tool, &input),
        input,
        tool_use_id: opt_str(request, "tool_use_id", ctx)?.map(String::from),
    }])
}

/// `system` lines: `init` starts (or resumes) the conversation; the other subtypes
/// (`compact_boundary`, `hook_response`, `status`, ...) are kept as unknown.
fn system(obj: &Object, line: &str) -> Result<Vec<AgentEvent>, String> {
    let subtype = req_str(obj, "subtype", "system")?;
    if subtype != "init" {
        return Ok(vec![AgentEvent::Unknown {
            kind: format!("system/{subtype}"),
            raw: line.to_string(),
        }]);
    }
    Ok(vec![AgentEvent::Started {
        agent_session_id: req_str(obj, "session_id", "system/init")?.to_string(),
        model: opt_str(obj, "model", "system/init")?.map(String::from),
    }])
}

/// `assistant` lines: text and tool calls; thinking is not shown. A line the CLI made
/// itself to report an API error gives nothing: the `result` after it carries the
/// message.
fn assistant(obj: &Object, line: &str) -> Result<Vec<AgentEvent>, String> {
    let message = req_obj(obj, "message", "assistant")?;
    if opt_bool(obj, "is_api_error_message", "assistant")?.unwrap_or(false) {
        return Ok(Vec::new());
    }
    let blocks = match message.get("content") {
        Some(Value::Array(blocks)) => blocks,
        Some(Value::String(text)) => return Ok(text_event(text).into_iter().collect()),
        _ => return Err("assistant message without a `content` array".into()),
    };
    Ok(each_block(blocks, line, assistant_block))
}

/// The events of a message's content blocks, read by `read`; a block it cannot read
/// is a malformed event of its own and the others still count.
fn each_block(
    blocks: &[Value],
    line: &str,
    read: fn(&Value, &str) -> Result<Option<AgentEvent>, String>,
) -> Vec<AgentEvent> {
    blocks
        .iter()
        .filter_map(|block| match read(block, line) {
            Ok(ev) => ev,
            Err(e) => Some(malformed(line, e)),
        })
        .collect()
}

fn assistant_block(block: &Value, line: &str) -> Result<Option<AgentEvent>, String> {
    let (block, kind) = block_kind(block, "assistant")?;
    Ok(match kind {
        "text" => text_event(req_str(block, "text", "assistant text block")?),
        "tool_use" => {
            let ctx = "assistant tool_use block";
            let name = req_str(block, "name", ctx)?;
            let input = match block.get("input") {
                None | Some(Value::Null) => Value::Object(Object::new()),
                Some(v) => v.clone(),
            };
            Some(AgentEvent::ToolUse {
                id: req_str(block, "id", ctx)?.to_string(),
                name: name.to_string(),
                summary: summarize(name, &input),
                input,
            })
        }
        "thinking" | "redacted_thinking" => None,
        other => Some(AgentEvent::Unknown {
            kind: format!("assistant/{other}"),
            raw: line.to_string(),
        }),
    })
}

fn text_event(text: &str) -> Option<AgentEvent> {
    (!text.trim().is_empty()).then(|| AgentEvent::Text {
        text: text.to_string(),
    })
}

/// `user` lines: tool results. A plain-string content is a replayed prompt
/// (`--replay-user-messages`) and gives nothing, as do text and image blocks (the
/// prompt of a subagent, "[Request interrupted by user]").
fn user(obj: &Object, line: &str) -> Result<Vec<AgentEvent>, String> {
    let message = req_obj(obj, "message", "user")?;
    let blocks = match message.get("content") {
        Some(Value::Array(blocks)) => blocks,
        Some(Value::String(_)) => return Ok(Vec::new()),
        _ => return Err("user message without a `content` array or string".into()),
    };
    Ok(each_block(blocks, line, user_block))
}

fn user_block(block: &Value, line: &str) -> Result<Option<AgentEvent>, String> {
    let (block, kind) = block_kind(block, "user")?;
    Ok(match kind {
        "tool_result" => {
            let ctx = "tool_result block";
            Some(AgentEvent::ToolResult {
                tool_use_id: req_str(block, "tool_use_id", ctx)?.to_string(),
                output: tool_output(block.get("content"))?,
                is_error: opt_bool(block, "is_error", ctx)?.unwrap_or(false),
            })
        }
        "text" | "image" => None,
        other => Some(AgentEvent::Unknown {
            kind: format!("user/{other}"),
            raw: line.to_string(),
        }),
    })
}

/// The `content` of a tool result: a string, or blocks (text joined with newlines,
/// images as `[image]`).
fn tool_output(content: Option<&Value>) -> Result<String, String> {
    match content {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(blocks)) => {
            let parts: Vec<String> = blocks
                .iter()
                .map(|b| match b {
                    Value::String(s) => s.clone(),
                    Value::Object(o) => match o.get("type").and_then(Value::as_str) {
                        Some("text") => o
                            .get("text")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_string(),
                        Some(kind) => format!("[{kind}]"),
                        None => "[?]".to_string(),
                    },
                    _ => "[?]".to_string(),
                })
                .collect();
            Ok(parts.join("\n"))
        }
        Some(_) => Err("tool_result `content` is neither a string nor an array".into()),
    }
}

/// `result` lines: the end of a turn. A turn cut short by an interrupt
/// (`terminal_reason` `aborted_streaming`, `aborted_tools`, ...) is interrupted, not
/// failed.
fn result(obj: &Object) -> Result<Vec<AgentEvent>, String> {
    let ctx = "result";
    let subtype = opt_str(obj, "subtype", ctx)?.unwrap_or_default();
    let is_error = opt_bool(obj, "is_error", ctx)?.unwrap_or(false);
    let aborted = opt_str(obj, "terminal_reason", ctx)?.is_some_and(|r| r.starts_with("aborted"));
    let outcome = if aborted {
        TurnOutcome::Interrupted
    } else if is_error {
        TurnOutcome::Error {
            message: error_message(obj, subtype)?,
        }
    } else {
        TurnOutcome::Done
    };
    let usage = match obj.get("usage") {
        None | Some(Value::Null) => Usage::default(),
        Some(Value::Object(u)) => Usage {
            input_tokens: count(u, "input_tokens")?,
            output_tokens: count(u, "output_tokens")?,
            cache_read_tokens: count(u, "cache_read_input_tokens")?,
            cache_write_tokens: count(u, "cache_creation_input_tokens")?,
        },
        Some(_) => return Err("`usage` of result is not an object".into()),
    };
    let cost_usd = match obj.get("total_cost_usd") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => n.as_f64(),
        Some(_) => return Err("`total_cost_usd` of result is not a number".into()),
    };
    Ok(vec![AgentEvent::TurnEnd {
        outcome,
        usage,
        cost_usd,
        agent_session_id: opt_str(obj, "session_id", ctx)?.map(String::from),
    }])
}

/// Why a turn failed: the `result` text, else the `errors` list, else the subtype in
/// words; with the API's HTTP status when the CLI gives one and the text does not say
/// it ("Invalid API key · Fix external API key (HTTP 401)").
fn error_message(obj: &Object, subtype: &str) -> Result<String, String> {
    let mut message = error_text(obj, subtype)?;
    if let Some(status) = obj.get("api_error_status").and_then(Value::as_u64) {
        let status = status.to_string();
        if !message.contains(&status) {
            message = format!("{message} (HTTP {status})");
        }
    }
    Ok(message)
}

fn error_text(obj: &Object, subtype: &str) -> Result<String, String> {
    let ctx = "result";
    if let Some(r) = opt_str(obj, "result", ctx)?.filter(|r| !r.trim().is_empty()) {
        return Ok(r.to_string());
    }
    if let Some(Value::Array(errors)) = obj.get("errors") {
        let errors: Vec<String> = errors
            .iter()
            .map(|e| match e {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .filter(|e| !e.trim().is_empty())
            .collect();
        if !errors.is_empty() {
            return Ok(errors.join("; "));
        }
    }
    if let Some(e) = opt_str(obj, "error", ctx)?.filter(|e| !e.trim().is_empty()) {
        return Ok(e.to_string());
    }
    Ok(match subtype {
        "error_max_turns" => "the agent reached its maximum number of turns".into(),
        "error_during_execution" => "the turn failed during execution".into(),
        "error_max_budget_usd" => "the agent reached its spending limit".into(),
        "error_max_structured_output_retries" => {
            "the agent could not produce valid structured output".into()
        }
        "" | "success" => "the agent reported an error".into(),
        other => other.to_string(),
    })
}

/// The key argument of a tool call, in one line of at most 200 characters.
fn summarize(tool: &str, input: &Value) -> String {
    let field = |key: &str| input.get(key).and_then(Value::as_str);
    let key_arg = match tool {
        "Bash" => field("command"),
        "Read" | "Write" | "Edit" | "MultiEdit" => field("file_path"),
        "NotebookEdit" | "NotebookRead" => field("notebook_path").or_else(|| field("file_path")),
        "Glob" | "Grep" => field("pattern"),
        "WebFetch" => field("url"),
        "WebSearch" => field("query"),
        "Task" | "Agent" => field("description"),
        "TodoWrite" => {
            if let Some(todos) = input.get("todos").and_then(Value::as_array) {
                return match todos.len() {
                    1 => "1 todo".to_string(),
                    n => format!("{n} todos"),
                };
            }
            None
        }
        _ => None,
    };
    let text = key_arg.or_else(|| {
        input
            .as_object()
            .and_then(|o| o.values().find_map(Value::as_str))
    });
    one_line(text.unwrap_or_default(), SUMMARY_CHARS)
}

/// A content block as an object with its string `type`.
fn block_kind<'a>(block: &'a Value, ctx: &str) -> Result<(&'a Object, &'a str), String> {
    let Value::Object(block) = block else {
        return Err(format!("{ctx} content block is not an object"));
    };
    let kind = req_str(block, "type", &format!("{ctx} content block"))?;
    Ok((block, kind))
}

/// A field that may be missing or null, but is a string when present.
fn opt_str<'a>(obj: &'a Object, key: &str, ctx: &str) -> Result<Option<&'a str>, String> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(format!("`{key}` of {ctx} is not a string")),
    }
}

fn req_str<'a>(obj: &'a Object, key: &str, ctx: &str) -> Result<&'a str, String> {
    opt_str(obj, key, ctx)?.ok_or_else(|| format!("{ctx} has no string `{key}`"))
}

fn req_obj<'a>(obj: &'a Object, key: &str, ctx: &str) -> Result<&'a Object, String> {
    match obj.get(key) {
        Some(Value::Object(o)) => Ok(o),
        _ => Err(format!("{ctx} has no object `{key}`")),
    }
}

fn opt_bool(obj: &Object, key: &str, ctx: &str) -> Result<Option<bool>, String> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(format!("`{key}` of {ctx} is not a boolean")),
    }
}

/// A token count: missing or null is 0.
fn count(usage: &Object, key: &str) -> Result<i64, String> {
    match usage.get(key) {
        None | Some(Value::Null) => Ok(0),
        Some(Value::Number(n)) => Ok(n
            .as_i64()
            .or_else(|| n.as_u64().map(|_| i64::MAX))
            // Float counts do not occur; a saturating cast is good enough.
            .or_else(|| n.as_f64().map(|f| f as i64))
            .unwrap_or_default()),
        Some(_) => Err(format!("`usage.{key}` of result is not a number")),
    }
}

/// Claude Code: one process for the session, prompts and interrupts on its stdin.
pub struct ClaudeDriver;

impl super::Driver for ClaudeDriver {
    fn container_cmd(&self, l: &super::Launch) -> Vec<String> {
        command(l.model, l.permission_mode, l.resume, l.extra)
    }

    fn uses_stdin(&self) -> bool {
        true
    }

    fn sees_images(&self) -> bool {
        true
    }

    fn start_turn(&self, _: &super::Launch, _: i64, prompt: &str, images: &[Image]) -> super::Io {
        super::Io::Stdin(encode_prompt_with_images(prompt, images))
    }

    fn interrupt(&self, _: i64, request_id: &str) -> super::Io {
        super::Io::Stdin(encode_interrupt(request_id))
    }

    fn parse(&self, line: &str, _: Option<i64>) -> Vec<AgentEvent> {
        parse_line(line)
    }

    fn turn_usage(&self, _: &Usage, reported: Usage) -> Usage {
        reported
    }

    fn answer(&self, request_id: &str, answer: &super::Permission) -> Option<super::Io> {
        Some(super::Io::Stdin(encode_permission(request_id, answer)))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn images_go_before_the_text_as_base64_blocks() {
        let line = encode_prompt_with_images(
            "what is this?",
            &[Image {
                media_type: "image/png".into(),
                data: b"\x89PNG".to_vec(),
            }],
        );
        assert!(line.ends_with('\n'));
        let v: Value = serde_json::from_str(line.trim_end()).unwrap();
        let content = &v["message"]["content"];
        assert_eq!(content[0]["type"], "image");
        assert_eq!(content[0]["source"]["media_type"], "image/png");
        assert_eq!(content[0]["source"]["data"], "iVBORw==");
        assert_eq!(
            content[1],
            serde_json::json!({"type": "text", "text": "what is this?"})
        );
        assert_eq!(encode_prompt_with_images("hi", &[]), encode_prompt("hi"));
    }

    const TWO_TURNS: &str = include_str!("../../tests/fixtures/claude/two_turns.jsonl");
    const ERROR_RESULT: &str = include_str!("../../tests/fixtures/claude/error_result.jsonl");
    const UNKNOWN_AND_MALFORMED: &str =
        include_str!("../../tests/fixtures/claude/unknown_and_malformed.jsonl");
    // Captured from the real CLI (see tests/fixtures/claude/README.md).
    const REAL_TWO_TURNS_TOOL: &str =
        include_str!("../../tests/fixtures/claude/real/two_turns_tool.jsonl");
    const REAL_RESUME: &str = include_str!("../../tests/fixtures/claude/real/resume.jsonl");
    const REAL_API_ERROR: &str = include_str!("../../tests/fixtures/claude/real/api_error.jsonl");
    const REAL_INTERRUPT: &str = include_str!("../../tests/fixtures/claude/real/interrupt.jsonl");

    fn parse_all(text: &str) -> Vec<AgentEvent> {
        text.lines().flat_map(parse_line).collect()
    }

    fn one(line: &str) -> AgentEvent {
        let mut events = parse_line(line);
        assert_eq!(events.len(), 1, "line {line} gave {events:?}");
        events.remove(0)
    }

    fn assistant_line(blocks: Value) -> String {
        json!({"type": "assistant", "message": {"id": "msg_1", "role": "assistant", "content": blocks}, "session_id": "s"})
            .to_string()
    }

    fn user_line(content: Value) -> String {
        json!({"type": "user", "message": {"role": "user", "content": content}, "session_id": "s"})
            .to_string()
    }

    fn summary_of(name: &str, input: Value) -> String {
        let line =
            assistant_line(json!([{"type": "tool_use", "id": "t", "name": name, "input": input}]));
        match one(&line) {
            AgentEvent::ToolUse { summary, .. } => summary,
            other => panic!("not a tool use: {other:?}"),
        }
    }

    #[test]
    fn two_turns_fixture() {
        let events = parse_all(TWO_TURNS);
        let session = "0b0e5a4c-6f1e-4c2a-9d43-2d8f1a7c9e11";
        let expected = vec![
            AgentEvent::Started {
                agent_session_id: session.into(),
                model: Some("claude-sonnet-4-5-20250929".into()),
            },
            AgentEvent::Text {
                text: "I'll compute that with the shell.".into(),
            },
            AgentEvent::ToolUse {
                id: "toolu_01XaQ3pV7yWb2m9ZkR4cTn8E".into(),
                name: "Bash".into(),
                summary: "echo $((6*7))".into(),
                input: json!({"command": "echo $((6*7))", "description": "Compute 6*7"}),
            },
            AgentEvent::ToolResult {
                tool_use_id: "toolu_01XaQ3pV7yWb2m9ZkR4cTn8E".into(),
                output: "42".into(),
                is_error: false,
            },
            AgentEvent::Text {
                text: "The answer is 42.".into(),
            },
            AgentEvent::TurnEnd {
                outcome: TurnOutcome::Done,
                usage: Usage {
                    input_tokens: 10,
                    output_tokens: 56,
                    cache_read_tokens: 2345,
                    cache_write_tokens: 1234,
                },
                cost_usd: Some(0.0123),
                agent_session_id: Some(session.into()),
            },
            AgentEvent::ToolUse {
                id: "toolu_01Gd8sJq2WcN5vLbY7tPz3Rk".into(),
                name: "Read".into(),
                summary: "/workspace/README.md".into(),
                input: json!({"file_path": "/workspace/README.md"}),
            },
            AgentEvent::ToolResult {
                tool_use_id: "toolu_01Gd8sJq2WcN5vLbY7tPz3Rk".into(),
                output: "     1→# demo\n     2→\n     3→A demo repository.\n".into(),
                is_error: false,
            },
            AgentEvent::Text {
                text: "The README says: *A demo repository.*".into(),
            },
            AgentEvent::TurnEnd {
                outcome: TurnOutcome::Done,
                usage: Usage {
                    input_tokens: 8,
                    output_tokens: 41,
                    cache_read_tokens: 5120,
                    cache_write_tokens: 310,
                },
                cost_usd: Some(0.0198),
                agent_session_id: Some(session.into()),
            },
        ];
        assert_eq!(events, expected);
    }

    #[test]
    fn error_result_fixture() {
        let events = parse_all(ERROR_RESULT);
        let outcomes: Vec<_> = events
            .iter()
            .filter_map(|e| match e {
                AgentEvent::TurnEnd { outcome, .. } => Some(outcome.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(
            outcomes,
            vec![
                TurnOutcome::Error {
                    message: "API Error: 401 {\"type\":\"error\",\"error\":{\"type\":\"authentication_error\",\"message\":\"invalid x-api-key\"}}".into()
                },
                TurnOutcome::Error {
                    message: "the agent reached its maximum number of turns".into()
                },
                TurnOutcome::Error {
                    message: "the turn failed during execution".into()
                },
            ]
        );
        assert!(matches!(events.first(), Some(AgentEvent::Started { .. })));
        assert!(events.iter().any(|e| matches!(
            e,
            AgentEvent::ToolResult { is_error: true, output, .. } if output.contains("No such file")
        )));
    }

    #[test]
    fn unknown_and_malformed_fixture() {
        let events = parse_all(UNKNOWN_AND_MALFORMED);
        let kinds: Vec<String> = events
            .iter()
            .map(|e| match e {
                AgentEvent::Unknown { kind, .. } => format!("unknown {kind}"),
                AgentEvent::Malformed { .. } => "malformed".into(),
                AgentEvent::Started { .. } => "started".into(),
                AgentEvent::Text { .. } => "text".into(),
                AgentEvent::TurnEnd { .. } => "turn_end".into(),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "started",
                "unknown system/hook_response",
                "unknown rate_limit_event",
                "unknown assistant/server_tool_use",
                "text",
                "unknown system/compact_boundary",
                "malformed",
                "malformed",
                "malformed",
                "malformed",
                "turn_end",
            ]
        );
        for e in &events {
            if let AgentEvent::Unknown { raw, .. } = e {
                assert!(
                    serde_json::from_str::<Value>(raw).is_ok(),
                    "raw is the line"
                );
            }
        }
    }

    /// The session id of a capture's first (`system`/`init`) line.
    fn session_of(capture: &str) -> String {
        let first: Value =
            serde_json::from_str(capture.lines().next().unwrap_or_default()).unwrap_or_default();
        assert_eq!(first["subtype"], "init", "a capture starts with init");
        first["session_id"].as_str().unwrap_or_default().to_string()
    }

    /// Each event in one line, the session id written `S`, for comparing whole captures.
    fn describe(capture: &str) -> Vec<String> {
        let sid = session_of(capture);
        let events = parse_all(capture);
        events
            .iter()
            .map(|e| {
                let line = match e {
                    AgentEvent::Started {
                        agent_session_id,
                        model,
                    } => format!(
                        "started {agent_session_id} {}",
                        model.as_deref().unwrap_or("-")
                    ),
                    AgentEvent::Text { text } => format!("text {text}"),
                    AgentEvent::ToolUse {
                        id, name, summary, ..
                    } => format!("tool {id} {name}: {summary}"),
                    AgentEvent::ToolResult {
                        tool_use_id,
                        output,
                        is_error,
                    } => format!(
                        "result {tool_use_id} {}: {output}",
                        if *is_error { "error" } else { "ok" }
                    ),
                    AgentEvent::TurnEnd {
                        outcome,
                        usage,
                        cost_usd,
                        agent_session_id,
                    } => format!(
                        "end {outcome:?} {}/{}/{}/{} ${:.5} {}",
                        usage.input_tokens,
                        usage.output_tokens,
                        usage.cache_read_tokens,
                        usage.cache_write_tokens,
                        cost_usd.unwrap_or(-1.0),
                        agent_session_id.as_deref().unwrap_or("-")
                    ),
                    AgentEvent::Unknown { kind, .. } => format!("unknown {kind}"),
                    AgentEvent::Malformed { error, .. } => format!("malformed {error}"),
                    AgentEvent::PermissionRequest { tool, summary, .. } => {
                        format!("asks {tool} {summary}")
                    }
                };
                line.replace(&sid, "S")
            })
            .collect()
    }

    #[test]
    fn real_two_turns_with_a_tool() {
        assert_eq!(
            describe(REAL_TWO_TURNS_TOOL),
            [
                "started S claude-opus-5-5",
                "text I'll compute that with the shell.",
                "tool toolu_01Stub000000000000000003 Bash: echo $((6*7)) | tee answer.txt; id -un",
                "result toolu_01Stub000000000000000003 ok: 42\nagent",
                "text The answer is 42.",
                "end Done 240/60/0/0 $0.00216 S",
                // Every turn starts with its own init line.
                "started S claude-opus-5-5",
                "text You asked me to compute 6*7.",
                // The usage is the turn's, the cost the process's running total.
                "end Done 120/30/0/0 $0.00324 S",
            ]
        );
        // The tool call's input is kept whole.
        let tool = parse_all(REAL_TWO_TURNS_TOOL)
            .into_iter()
            .find(|e| matches!(e, AgentEvent::ToolUse { .. }));
        match tool {
            Some(AgentEvent::ToolUse { input, .. }) => assert_eq!(
                input,
                json!({"command": "echo $((6*7)) | tee answer.txt; id -un", "description": "Run the command"})
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn real_resume_keeps_the_session_and_its_running_cost() {
        assert_eq!(session_of(REAL_RESUME), session_of(REAL_TWO_TURNS_TOOL));
        assert_eq!(
            describe(REAL_RESUME),
            [
                "started S claude-opus-5-5",
                "text Reading it back.",
                "tool toolu_01Stub000000000000000010 Bash: cat answer.txt",
                "result toolu_01Stub000000000000000010 ok: 42",
                "text It still says 42.",
                // 0.00324 of the first container, and this turn's 0.00216.
                "end Done 240/60/0/0 $0.00540 S",
            ]
        );
    }

    #[test]
    fn real_api_errors() {
        let described = describe(REAL_API_ERROR);
        let overloaded = described[5].clone();
        assert!(
            overloaded.starts_with(
                "end Error { message: \"API Error: 529 Overloaded. This is a server-side issue"
            ),
            "{overloaded}"
        );
        assert!(!overloaded.contains("(HTTP 529)"), "{overloaded}");
        assert_eq!(
            described,
            [
                "started S claude-opus-5-5",
                "unknown system/api_retry",
                // Not the CLI's own assistant line with the same text: the turn end only.
                "end Error { message: \"Invalid API key · Fix external API key (HTTP 401)\" } 0/0/0/0 $0.00000 S",
                "started S claude-opus-5-5",
                "unknown system/api_retry",
                &overloaded,
                "started S claude-opus-5-5",
                "text Recovered.",
                "end Done 120/30/0/0 $0.00108 S",
            ]
        );
    }

    #[test]
    fn real_interrupts() {
        let described = describe(REAL_INTERRUPT);
        let refused = described[6].clone();
        assert!(
            refused.starts_with(
                "result toolu_01Stub000000000000000005 error: The user doesn't want to proceed"
            ),
            "{refused}"
        );
        assert_eq!(
            described,
            [
                "started S claude-opus-5-5",
                // The control_response gives nothing; the text streamed so far is kept.
                "text tick tick tick tick tick ",
                // An interrupted stream: no usage, but the estimate is in the cost.
                "end Interrupted 0/0/0/0 $0.00064 S",
                "started S claude-opus-5-5",
                "text Waiting for it.",
                "tool toolu_01Stub000000000000000005 Bash: timeout 120 tail -f /dev/null; echo finished",
                &refused,
                "end Interrupted 120/30/0/0 $0.00172 S",
                "started S claude-opus-5-5",
                "text Still here after two interrupts.",
                "end Done 120/30/0/0 $0.00280 S",
            ]
        );
    }

    #[test]
    fn real_lines_are_never_malformed_and_every_turn_ends() {
        for capture in [
            REAL_TWO_TURNS_TOOL,
            REAL_RESUME,
            REAL_API_ERROR,
            REAL_INTERRUPT,
        ] {
            let results = capture
                .lines()
                .filter(|l| serde_json::from_str::<Value>(l).is_ok_and(|v| v["type"] == "result"))
                .count();
            let events = parse_all(capture);
            let ends = events
                .iter()
                .filter(|e| matches!(e, AgentEvent::TurnEnd { .. }))
                .count();
            assert_eq!(results, ends);
            assert!(results > 0);
            for e in events {
                assert!(!matches!(e, AgentEvent::Malformed { .. }), "{e:?}");
            }
        }
    }

    #[test]
    fn api_error_lines_of_the_cli_give_nothing() {
        let line = r#"{"type":"assistant","message":{"id":"x","model":"<synthetic>","role":"assistant","content":[{"type":"text","text":"Not logged in · Please run /login"}]},"session_id":"s","error":"authentication_failed","is_api_error_message":true}"#;
        assert_eq!(parse_line(line), vec![]);
        let line = r#"{"type":"assistant","message":{"content":[{"type":"text","text":"hi"}]},"is_api_error_message":false}"#;
        assert_eq!(one(line), AgentEvent::Text { text: "hi".into() });
        let line = r#"{"type":"assistant","message":{"content":[]},"is_api_error_message":"yes"}"#;
        assert!(
            matches!(one(line), AgentEvent::Malformed { error, .. } if error.contains("not a boolean"))
        );
    }

    #[test]
    fn aborted_turns_are_interrupted() {
        for reason in ["aborted_streaming", "aborted_tools"] {
            let line = json!({"type": "result", "subtype": "error_during_execution", "is_error": true,
                "errors": ["[ede_diagnostic] result_type=user"], "terminal_reason": reason, "session_id": "s"})
            .to_string();
            assert!(
                matches!(
                    one(&line),
                    AgentEvent::TurnEnd {
                        outcome: TurnOutcome::Interrupted,
                        ..
                    }
                ),
                "{line}"
            );
        }
        let line =
            r#"{"type":"result","is_error":true,"result":"x","terminal_reason":"api_error"}"#;
        assert!(matches!(
            one(line),
            AgentEvent::TurnEnd {
                outcome: TurnOutcome::Error { .. },
                ..
            }
        ));
        let line = r#"{"type":"result","terminal_reason":7}"#;
        assert!(
            matches!(one(line), AgentEvent::Malformed { error, .. } if error.contains("not a string"))
        );
    }

    #[test]
    fn init_gives_started() {
        let line = r#"{"type":"system","subtype":"init","cwd":"/w","session_id":"abc","tools":[],"model":"claude-opus-4-1"}"#;
        assert_eq!(
            one(line),
            AgentEvent::Started {
                agent_session_id: "abc".into(),
                model: Some("claude-opus-4-1".into())
            }
        );
        let no_model = r#"{"type":"system","subtype":"init","session_id":"abc"}"#;
        assert_eq!(
            one(no_model),
            AgentEvent::Started {
                agent_session_id: "abc".into(),
                model: None
            }
        );
    }

    #[test]
    fn other_system_subtypes_are_unknown() {
        for subtype in ["compact_boundary", "hook_response", "status"] {
            let line = json!({"type": "system", "subtype": subtype, "session_id": "s"}).to_string();
            assert_eq!(
                one(&line),
                AgentEvent::Unknown {
                    kind: format!("system/{subtype}"),
                    raw: line.clone()
                }
            );
        }
    }

    #[test]
    fn assistant_text_blocks() {
        let line = assistant_line(json!([
            {"type": "text", "text": "one"},
            {"type": "text", "text": ""},
            {"type": "text", "text": "  \n"},
            {"type": "thinking", "thinking": "hmm", "signature": "x"},
            {"type": "redacted_thinking", "data": "xyz"},
            {"type": "text", "text": "two\n\n- a"},
        ]));
        assert_eq!(
            parse_line(&line),
            vec![
                AgentEvent::Text { text: "one".into() },
                AgentEvent::Text {
                    text: "two\n\n- a".into()
                },
            ]
        );
    }

    #[test]
    fn assistant_unknown_block() {
        let line = assistant_line(
            json!([{"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {}}]),
        );
        assert_eq!(
            one(&line),
            AgentEvent::Unknown {
                kind: "assistant/server_tool_use".into(),
                raw: line.clone()
            }
        );
    }

    #[test]
    fn tool_use_keeps_input() {
        let input = json!({"command": "ls", "timeout": 1000});
        let line = assistant_line(
            json!([{"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": input}]),
        );
        assert_eq!(
            one(&line),
            AgentEvent::ToolUse {
                id: "toolu_1".into(),
                name: "Bash".into(),
                summary: "ls".into(),
                input
            }
        );
        let no_input = assistant_line(json!([{"type": "tool_use", "id": "t", "name": "X"}]));
        assert!(
            matches!(one(&no_input), AgentEvent::ToolUse { summary, input, .. } if summary.is_empty() && input == json!({}))
        );
    }

    #[test]
    fn tool_summaries() {
        let cases = [
            (
                "Bash",
                json!({"command": "cargo test", "description": "Run tests"}),
                "cargo test",
            ),
            (
                "Read",
                json!({"file_path": "/w/a.rs", "limit": 10}),
                "/w/a.rs",
            ),
            (
                "Write",
                json!({"content": "x", "file_path": "/w/b.rs"}),
                "/w/b.rs",
            ),
            (
                "Edit",
                json!({"file_path": "/w/c.rs", "new_string": "a", "old_string": "b"}),
                "/w/c.rs",
            ),
            (
                "MultiEdit",
                json!({"edits": [], "file_path": "/w/d.rs"}),
                "/w/d.rs",
            ),
            (
                "NotebookEdit",
                json!({"new_source": "x", "notebook_path": "/w/n.ipynb"}),
                "/w/n.ipynb",
            ),
            (
                "Glob",
                json!({"path": "/w", "pattern": "**/*.rs"}),
                "**/*.rs",
            ),
            (
                "Grep",
                json!({"output_mode": "content", "pattern": "fn main"}),
                "fn main",
            ),
            (
                "WebFetch",
                json!({"prompt": "summarize", "url": "https://example.com"}),
                "https://example.com",
            ),
            ("WebSearch", json!({"query": "rust serde"}), "rust serde"),
            (
                "Task",
                json!({"description": "Find callers", "prompt": "...", "subagent_type": "Explore"}),
                "Find callers",
            ),
            (
                "TodoWrite",
                json!({"todos": [{"content": "a"}, {"content": "b"}, {"content": "c"}]}),
                "3 todos",
            ),
            ("TodoWrite", json!({"todos": [{"content": "a"}]}), "1 todo"),
            (
                "mcp__github__get_issue",
                json!({"number": 5, "repo": "o/r"}),
                "o/r",
            ),
            ("Bash", json!({"command": "cd /w &&\nmake"}), "cd /w &&…"),
            ("Bash", json!({"description": "fallback"}), "fallback"),
            ("Unknown", json!({"n": 1}), ""),
            ("Unknown", json!("just a string"), ""),
        ];
        for (name, input, want) in cases {
            assert_eq!(summary_of(name, input.clone()), want, "{name} {input}");
        }
        let long = "x".repeat(300);
        let s = summary_of("Bash", json!({ "command": long }));
        assert_eq!(s.chars().count(), 200);
        assert!(s.ends_with('…'));
        let exact = "é".repeat(200);
        assert_eq!(
            summary_of("Bash", json!({ "command": exact.clone() })),
            exact
        );
    }

    #[test]
    fn tool_results() {
        let line = user_line(json!([
            {"type": "tool_result", "tool_use_id": "a", "content": "out", "is_error": false},
            {"type": "tool_result", "tool_use_id": "b", "content": "boom", "is_error": true},
            {"type": "tool_result", "tool_use_id": "c", "content": [{"type": "text", "text": "one"}, {"type": "image", "source": {}}, {"type": "text", "text": "two"}]},
            {"type": "tool_result", "tool_use_id": "d"},
        ]));
        assert_eq!(
            parse_line(&line),
            vec![
                AgentEvent::ToolResult {
                    tool_use_id: "a".into(),
                    output: "out".into(),
                    is_error: false
                },
                AgentEvent::ToolResult {
                    tool_use_id: "b".into(),
                    output: "boom".into(),
                    is_error: true
                },
                AgentEvent::ToolResult {
                    tool_use_id: "c".into(),
                    output: "one\n[image]\ntwo".into(),
                    is_error: false
                },
                AgentEvent::ToolResult {
                    tool_use_id: "d".into(),
                    output: String::new(),
                    is_error: false
                },
            ]
        );
    }

    #[test]
    fn user_prompts_give_nothing() {
        assert_eq!(parse_line(&user_line(json!("hello"))), vec![]);
        assert_eq!(
            parse_line(&user_line(
                json!([{"type": "text", "text": "[Request interrupted by user]"}])
            )),
            vec![]
        );
        assert!(matches!(
            one(&user_line(json!([{"type": "document"}]))),
            AgentEvent::Unknown { kind, .. } if kind == "user/document"
        ));
    }

    #[test]
    fn result_success() {
        let line = r#"{"type":"result","subtype":"success","is_error":false,"result":"ok","session_id":"s1","total_cost_usd":0.5,"usage":{"input_tokens":1,"output_tokens":2,"cache_read_input_tokens":3,"cache_creation_input_tokens":4}}"#;
        assert_eq!(
            one(line),
            AgentEvent::TurnEnd {
                outcome: TurnOutcome::Done,
                usage: Usage {
                    input_tokens: 1,
                    output_tokens: 2,
                    cache_read_tokens: 3,
                    cache_write_tokens: 4
                },
                cost_usd: Some(0.5),
                agent_session_id: Some("s1".into())
            }
        );
        let bare = r#"{"type":"result","subtype":"success","is_error":false}"#;
        assert_eq!(
            one(bare),
            AgentEvent::TurnEnd {
                outcome: TurnOutcome::Done,
                usage: Usage::default(),
                cost_usd: None,
                agent_session_id: None
            }
        );
    }

    #[test]
    fn result_errors() {
        let cases = [
            (
                json!({"subtype": "success", "is_error": true, "result": "API Error: 500"}),
                "API Error: 500",
            ),
            (
                json!({"subtype": "success", "is_error": true, "result": "API Error: 500 x", "api_error_status": 500}),
                "API Error: 500 x",
            ),
            (
                json!({"subtype": "success", "is_error": true, "result": "Invalid API key", "api_error_status": 401}),
                "Invalid API key (HTTP 401)",
            ),
            (
                json!({"subtype": "error_max_turns", "is_error": true}),
                "the agent reached its maximum number of turns",
            ),
            (
                json!({"subtype": "error_during_execution", "is_error": true, "result": ""}),
                "the turn failed during execution",
            ),
            (
                json!({"subtype": "error_during_execution", "is_error": true, "errors": ["tool crashed"]}),
                "tool crashed",
            ),
            (
                json!({"subtype": "error_max_budget_usd", "is_error": true}),
                "the agent reached its spending limit",
            ),
            (
                json!({"subtype": "error_something_new", "is_error": true}),
                "error_something_new",
            ),
            (
                json!({"subtype": "success", "is_error": true}),
                "the agent reported an error",
            ),
        ];
        for (mut obj, want) in cases {
            obj["type"] = json!("result");
            obj["session_id"] = json!("s");
            let line = obj.to_string();
            match one(&line) {
                AgentEvent::TurnEnd {
                    outcome: TurnOutcome::Error { message },
                    agent_session_id,
                    usage,
                    ..
                } => {
                    assert_eq!(message, want, "{line}");
                    assert_eq!(agent_session_id.as_deref(), Some("s"));
                    assert_eq!(usage, Usage::default());
                }
                other => panic!("{line}: {other:?}"),
            }
        }
    }

    #[test]
    fn ignored_types() {
        let lines = [
            r#"{"type":"control_response","response":{"subtype":"success","request_id":"interrupt-1","response":{}}}"#,
            r#"{"type":"stream_event","event":{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}},"session_id":"s","parent_tool_use_id":null,"uuid":"u"}"#,
            "",
            "   ",
            "\r",
        ];
        for line in lines {
            assert_eq!(parse_line(line), vec![], "{line}");
        }
    }

    #[test]
    fn other_types_are_unknown() {
        let line = r#"{"type":"rate_limit_event","rate_limit_info":{"status":"allowed"},"session_id":"s"}"#;
        assert_eq!(
            one(line),
            AgentEvent::Unknown {
                kind: "rate_limit_event".into(),
                raw: line.into()
            }
        );
    }

    #[test]
    fn malformed_lines() {
        let cases = [
            ("not json at all", "not JSON"),
            ("[1,2]", "not a JSON object"),
            ("{\"type\":5}", "no string `type`"),
            ("{\"subtype\":\"init\"}", "no string `type`"),
            ("{\"type\":\"system\"}", "system has no string `subtype`"),
            (
                "{\"type\":\"system\",\"subtype\":\"init\"}",
                "no string `session_id`",
            ),
            (
                "{\"type\":\"system\",\"subtype\":\"init\",\"session_id\":1}",
                "`session_id` of system/init is not a string",
            ),
            ("{\"type\":\"assistant\"}", "no object `message`"),
            (
                "{\"type\":\"assistant\",\"message\":{\"content\":5}}",
                "without a `content` array",
            ),
            (
                "{\"type\":\"assistant\",\"message\":{\"content\":[7]}}",
                "not an object",
            ),
            (
                "{\"type\":\"assistant\",\"message\":{\"content\":[{\"type\":\"text\"}]}}",
                "no string `text`",
            ),
            (
                "{\"type\":\"assistant\",\"message\":{\"content\":[{\"type\":\"tool_use\",\"name\":\"Bash\"}]}}",
                "no string `id`",
            ),
            (
                "{\"type\":\"user\",\"message\":{\"content\":[{\"type\":\"tool_result\"}]}}",
                "no string `tool_use_id`",
            ),
            (
                "{\"type\":\"user\",\"message\":{\"content\":[{\"type\":\"tool_result\",\"tool_use_id\":\"a\",\"is_error\":\"yes\"}]}}",
                "not a boolean",
            ),
            (
                "{\"type\":\"user\",\"message\":{\"content\":[{\"type\":\"tool_result\",\"tool_use_id\":\"a\",\"content\":{}}]}}",
                "neither a string nor an array",
            ),
            (
                "{\"type\":\"result\",\"usage\":[]}",
                "`usage` of result is not an object",
            ),
            (
                "{\"type\":\"result\",\"usage\":{\"input_tokens\":\"3\"}}",
                "not a number",
            ),
            (
                "{\"type\":\"result\",\"total_cost_usd\":\"1\"}",
                "not a number",
            ),
            ("{\"type\":\"result\",\"is_error\":1}", "not a boolean"),
        ];
        for (line, want) in cases {
            match one(line) {
                AgentEvent::Malformed { line: l, error } => {
                    assert_eq!(l, line);
                    assert!(error.contains(want), "{line}: {error}");
                }
                other => panic!("{line}: {other:?}"),
            }
        }
        let long = format!("{{{}", "x".repeat(2000));
        match one(&long) {
            AgentEvent::Malformed { line, .. } => assert_eq!(line.chars().count(), 500),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_bad_block_does_not_hide_the_others() {
        let line =
            assistant_line(json!([{"type": "text", "text": "ok"}, {"type": "text", "text": 3}]));
        let events = parse_line(&line);
        assert_eq!(events.len(), 2);
        assert_eq!(events[0], AgentEvent::Text { text: "ok".into() });
        assert!(matches!(events[1], AgentEvent::Malformed { .. }));
    }

    #[test]
    fn never_panics() {
        let deep_array = "[".repeat(100_000);
        let deep_object = "{\"type\":\"assistant\",\"message\":".repeat(10_000);
        let deep_input = format!(
            "{{\"type\":\"assistant\",\"message\":{{\"content\":[{{\"type\":\"tool_use\",\"id\":\"t\",\"name\":\"X\",\"input\":{}1{}}}]}}}}",
            "{\"a\":".repeat(100),
            "}".repeat(100)
        );
        let crafted = [
            "\0\u{1}\u{ffff}",
            "{",
            "}",
            "{\"type\":",
            "{\"type\":\"result\",\"usage\":{\"input_tokens\":1e400}}",
            "{\"type\":\"result\",\"usage\":{\"input_tokens\":18446744073709551615,\"output_tokens\":-1.5}}",
            "{\"type\":\"result\",\"total_cost_usd\":-0.0}",
            "{\"type\":\"\u{1f600}\"}",
            "\"type\"",
            "null",
            "{\"type\":\"assistant\",\"message\":{\"content\":[{\"type\":\"tool_use\",\"id\":\"t\",\"name\":\"Bash\",\"input\":{\"command\":\"\u{2028}\u{200d}\u{0301}\"}}]}}",
            "{\"type\":\"user\",\"message\":{\"content\":[{\"type\":\"tool_result\",\"tool_use_id\":\"a\",\"content\":[1,null,{\"x\":1},[2]]}]}}",
            &deep_array,
            &deep_object,
            &deep_input,
        ];
        for line in crafted {
            let _ = parse_line(line);
        }
        for line in TWO_TURNS
            .lines()
            .chain(ERROR_RESULT.lines())
            .chain(UNKNOWN_AND_MALFORMED.lines())
            .chain(REAL_API_ERROR.lines())
            .chain(REAL_INTERRUPT.lines())
        {
            for (i, _) in line.char_indices() {
                let _ = parse_line(&line[..i]);
            }
        }
    }

    #[test]
    fn encodes_stdin_lines() {
        assert_eq!(
            encode_prompt("say \"hi\"\nthen ✓"),
            "{\"type\":\"user\",\"message\":{\"role\":\"user\",\"content\":\"say \\\"hi\\\"\\nthen ✓\"}}\n"
        );
        let v: Value =
            serde_json::from_str(encode_prompt("x\u{2028}\\").trim_end()).unwrap_or_default();
        assert_eq!(v["message"]["content"], "x\u{2028}\\");
        assert_eq!(
            encode_interrupt("interrupt-1"),
            "{\"type\":\"control_request\",\"request_id\":\"interrupt-1\",\"request\":{\"subtype\":\"interrupt\"}}\n"
        );
        let v: Value =
            serde_json::from_str(encode_interrupt("a\"b").trim_end()).unwrap_or_default();
        assert_eq!(v["request_id"], "a\"b");
    }

    #[test]
    fn can_use_tool_requests_and_their_answers() {
        // As the pinned CLI (2.1.330) sends it with `--permission-prompt-tool stdio`.
        let line = r#"{"type":"control_request","request_id":"4797fe3b","request":{"subtype":"can_use_tool","tool_name":"Bash","display_name":"Bash","input":{"command":"echo hi > /workspace/x.txt","description":"Run the command"},"description":"Run the command","permission_suggestions":[],"blocked_path":"/workspace/x.txt","tool_use_id":"toolu_01"}}"#;
        let input =
            json!({"command": "echo hi > /workspace/x.txt", "description": "Run the command"});
        assert_eq!(
            one(line),
            AgentEvent::PermissionRequest {
                request_id: "4797fe3b".into(),
                tool: "Bash".into(),
                summary: "echo hi > /workspace/x.txt".into(),
                input: input.clone(),
                tool_use_id: Some("toolu_01".into()),
            }
        );
        let other =
            r#"{"type":"control_request","request_id":"r","request":{"subtype":"hook_callback"}}"#;
        assert!(
            matches!(one(other), AgentEvent::Unknown { kind, .. } if kind == "control_request/hook_callback")
        );
        let bad = r#"{"type":"control_request","request":{"subtype":"can_use_tool"}}"#;
        assert!(matches!(one(bad), AgentEvent::Malformed { .. }));

        let allow = encode_permission(
            "4797fe3b",
            &crate::protocol::Permission::Allow {
                input: input.clone(),
            },
        );
        assert!(allow.ends_with('\n'));
        let v: Value = serde_json::from_str(allow.trim_end()).unwrap();
        assert_eq!(
            v,
            json!({"type": "control_response", "response": {"subtype": "success", "request_id": "4797fe3b",
                "response": {"behavior": "allow", "updatedInput": input}}})
        );
        let deny = encode_permission(
            "r2",
            &crate::protocol::Permission::Deny {
                message: "denied by @alice".into(),
            },
        );
        let v: Value = serde_json::from_str(deny.trim_end()).unwrap();
        assert_eq!(
            v["response"]["response"],
            json!({"behavior": "deny", "message": "denied by @alice"})
        );
        assert_eq!(v["response"]["request_id"], "r2");
    }

    #[test]
    fn ask_is_the_default_mode_with_prompts_on_stdio() {
        let argv = command(None, Some("ask"), None, &[]);
        let tail: Vec<&str> = argv[7..].iter().map(String::as_str).collect();
        assert_eq!(
            tail,
            [
                "--permission-mode",
                "default",
                "--permission-prompt-tool",
                "stdio"
            ]
        );
        let argv = command(None, Some("bypass"), None, &[]);
        assert_eq!(argv[7..], ["--permission-mode", "bypassPermissions"]);
    }

    #[test]
    fn argv() {
        let base = [
            "claude",
            "-p",
            "--input-format",
            "stream-json",
            "--output-format",
            "stream-json",
            "--verbose",
        ];
        assert_eq!(command(None, None, None, &[]), base);
        let extra = vec!["--max-turns".to_string(), "50".to_string()];
        let mut want: Vec<&str> = base.to_vec();
        want.extend([
            "--model",
            "opus",
            "--permission-mode",
            "bypassPermissions",
            "--resume",
            "0b0e",
            "--max-turns",
            "50",
        ]);
        assert_eq!(
            command(
                Some("opus"),
                Some("bypassPermissions"),
                Some("0b0e"),
                &extra
            ),
            want
        );
        assert_eq!(command(Some(""), Some(" "), None, &[]), base);
    }
}
