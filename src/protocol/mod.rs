//! Agent protocols: the wire format an agent CLI speaks on stdin/stdout, turned into
//! neutral [`AgentEvent`]s and back. Pure code, no I/O: the session task feeds lines in.

pub mod claude;
pub mod codex;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Which wire protocol an agent speaks (`protocol = "claude" | "codex"` in `[agents.*]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProtocolKind {
    Claude,
    Codex,
}

impl ProtocolKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProtocolKind::Claude => "claude",
            ProtocolKind::Codex => "codex",
        }
    }
}

/// What a session's agent runs with, for the container's command and each turn.
#[derive(Debug, Clone, Copy, Default)]
pub struct Launch<'a> {
    pub model: Option<&'a str>,
    pub permission_mode: Option<&'a str>,
    /// The agent's conversation to continue.
    pub resume: Option<&'a str>,
    /// The gateway's OpenAI-compatible base URL (`.../openai/v1`), if there is a gateway.
    pub openai_base_url: Option<&'a str>,
    /// `[agents.*] args`.
    pub extra: &'a [String],
}

/// What the session task does to reach the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Io {
    /// Write this line to the agent's stdin (an attach held for the container's life).
    Stdin(String),
    /// Run this in the container, detached (its output reaches the container's log).
    Exec(Vec<String>),
}

/// How the session task talks to one agent CLI: what its container runs, how a turn
/// starts and is interrupted, how its output lines become [`AgentEvent`]s and what a
/// turn's usage counts. Pure: the task carries out the [`Io`] it returns. One driver per
/// [`ProtocolKind`] ([`driver`]); a new agent CLI is a new driver, not new `match` arms.
pub trait Driver: Send + Sync {
    /// The container's command.
    fn container_cmd(&self, launch: &Launch) -> Vec<String>;
    /// Whether prompts go to the agent's stdin (attach before start, and again after a
    /// restart); otherwise each turn is an exec and the container only idles.
    fn uses_stdin(&self) -> bool;
    /// Whether the agent takes images with a prompt (image content blocks).
    fn sees_images(&self) -> bool;
    /// How to start turn `number` with `prompt` (and `images`, if it sees them).
    fn start_turn(
        &self,
        launch: &Launch,
        number: i64,
        prompt: &str,
        images: &[claude::Image],
    ) -> Io;
    /// How to interrupt the running turn `number`.
    fn interrupt(&self, number: i64, request_id: &str) -> Io;
    /// The events of one stdout line. `running` is the number of the turn that runs,
    /// if one does: a driver may end it from a line only it understands.
    fn parse(&self, line: &str, running: Option<i64>) -> Vec<AgentEvent>;
    /// What a turn that reported `reported` adds to the session's total `so_far`.
    fn turn_usage(&self, so_far: &Usage, reported: Usage) -> Usage;
    /// How to answer the agent's [`AgentEvent::PermissionRequest`] `request_id`; `None`
    /// for an agent that never asks.
    fn answer(&self, request_id: &str, answer: &Permission) -> Option<Io>;
}

/// The answer to an agent's permission request.
#[derive(Debug, Clone, PartialEq)]
pub enum Permission {
    /// Run the tool call, with this input (the one asked about).
    Allow { input: serde_json::Value },
    /// Do not run it; the agent (and the model) get `message`.
    Deny { message: String },
}

/// The driver of a protocol.
pub fn driver(kind: ProtocolKind) -> &'static dyn Driver {
    match kind {
        ProtocolKind::Claude => &claude::ClaudeDriver,
        ProtocolKind::Codex => &codex::CodexDriver,
    }
}

/// Token counts of one turn (or the running total of a session).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cache_read_tokens: i64,
    pub cache_write_tokens: i64,
}

/// How a turn ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum TurnOutcome {
    Done,
    Error { message: String },
    Interrupted,
}

/// One thing an agent said or did, independent of the agent's wire format.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AgentEvent {
    /// The agent started (or resumed) its conversation; `agent_session_id` is what a
    /// later `--resume` needs.
    Started {
        agent_session_id: String,
        model: Option<String>,
    },
    /// Assistant text (markdown).
    Text { text: String },
    /// A tool call. `summary` is the key argument in one line (the command of a Bash
    /// call, the path of an edit), for compact rendering.
    ToolUse {
        id: String,
        name: String,
        summary: String,
        input: serde_json::Value,
    },
    /// The output of a tool call.
    ToolResult {
        tool_use_id: String,
        output: String,
        is_error: bool,
    },
    /// The end of a turn, with its usage and cost.
    TurnEnd {
        outcome: TurnOutcome,
        usage: Usage,
        cost_usd: Option<f64>,
        agent_session_id: Option<String>,
    },
    /// The agent asks whether it may make a tool call (`permission_mode = "ask"`): it
    /// waits until [`Driver::answer`]'s line reaches it. `summary` as for
    /// [`AgentEvent::ToolUse`].
    PermissionRequest {
        request_id: String,
        tool: String,
        summary: String,
        input: serde_json::Value,
        tool_use_id: Option<String>,
    },
    /// A well-formed event of a type this version does not know: kept, not fatal.
    Unknown { kind: String, raw: String },
    /// A line that is not a valid event of the protocol: reported, not fatal.
    Malformed { line: String, error: String },
}

/// The longest `line` kept in a [`AgentEvent::Malformed`], in characters.
const MALFORMED_CHARS: usize = 500;

/// The first line of `s` (trimmed), cut to at most `max` characters; "…" marks a cut.
fn one_line(s: &str, max: usize) -> String {
    let s = s.trim();
    let mut lines = s.lines();
    let first = lines.next().unwrap_or_default().trim_end();
    let more = lines.next().is_some();
    if more || first.chars().count() > max {
        let mut cut: String = first.chars().take(max.saturating_sub(1)).collect();
        cut.push('…');
        cut
    } else {
        first.to_string()
    }
}

/// `s` cut to at most `max` characters; "…" marks a cut.
fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

fn malformed(line: &str, error: String) -> AgentEvent {
    AgentEvent::Malformed {
        line: cut(line, MALFORMED_CHARS),
        error,
    }
}

/// The frame of a JSON-lines protocol: an empty line gives nothing; a line must be one
/// JSON object with a string `type`, which `events` turns into events (object, type,
/// trimmed line); anything else, or what `events` refuses, is one malformed event.
fn parse_json_line(
    line: &str,
    events: impl FnOnce(&Map<String, Value>, &str, &str) -> Result<Vec<AgentEvent>, String>,
) -> Vec<AgentEvent> {
    let line = line.trim();
    if line.is_empty() {
        return Vec::new();
    }
    let value: Value = match serde_json::from_str(line) {
        Ok(v) => v,
        Err(e) => return vec![malformed(line, format!("not JSON: {e}"))],
    };
    let Value::Object(obj) = &value else {
        return vec![malformed(line, "not a JSON object".into())];
    };
    let Some(kind) = obj.get("type").and_then(Value::as_str) else {
        return vec![malformed(line, "no string `type` field".into())];
    };
    events(obj, kind, line).unwrap_or_else(|error| vec![malformed(line, error)])
}
