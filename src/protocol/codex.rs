//! Codex CLI's `codex exec --json` protocol: one process per turn (`codex exec` for the
//! first, `codex exec resume <thread id>` after), its stdout lines turned into
//! [`AgentEvent`]s.
//!
//! A Codex worker container runs an idle keeper as its main process ([`KEEPER`]); each
//! turn is a `docker exec` of [`turn_argv`], a small `sh` wrapper that takes a lock (one
//! turn at a time, even when the next prompt comes while the last process is still
//! writing its session file), runs Codex with its stdin closed, writes Codex's stdout
//! and stderr into the main process's (so the container log holds them, and a restarted
//! firstmate reads on from its cursor), and ends with an exit marker line
//! (`{"type":"firstmate.turn_exit","turn":N,"code":C}`) that [`exit_marker`] reads. A
//! marker for the running turn means Codex ended without a `turn.completed` or
//! `turn.failed`: a crash, or an interrupt (SIGINT to the process in the pid file).
//!
//! Facts this relies on (Codex CLI 0.169; captures in `tests/fixtures/codex/real/`):
//! every stdout line is one JSON object with a string `type`; `thread.started` carries
//! the id `resume` needs; `item.started` / `item.updated` / `item.completed` carry an
//! `item` with an `id` and a `type`; a turn ends with `turn.completed` (its `usage`,
//! where `input_tokens` includes `cached_input_tokens`) or `turn.failed`. Pure code, no
//! I/O; never panics.

use serde_json::{Map, Value, json};

use super::{AgentEvent, TurnOutcome, Usage, one_line, parse_json_line};

/// The longest `summary` of a [`AgentEvent::ToolUse`], in characters.
const SUMMARY_CHARS: usize = 200;
/// The name the gateway's model provider has in Codex's config.
pub const PROVIDER: &str = "firstmate";
/// Settings that keep Codex from calling home on every turn (Codex 0.169): the curated
/// plugins sync (github.com, api.github.com, chatgpt.com) and analytics
/// (ab.chatgpt.com).
const QUIET: [&str; 2] = ["features.plugins=false", "analytics.enabled=false"];
/// The main process of a Codex worker: it idles until the container is stopped, and
/// leaves at once on SIGTERM.
pub const KEEPER: [&str; 3] = [
    "sh",
    "-c",
    "trap 'exit 0' TERM INT; while :; do sleep 86400 & wait $!; done",
];
/// Where the running turn's number and Codex process id are kept (for an interrupt).
pub const PID_FILE: &str = "/tmp/firstmate-turn.pid";
const LOCK_FILE: &str = "/tmp/firstmate-turn.lock";
/// The type of the wrapper's exit marker line.
const EXIT_MARKER: &str = "firstmate.turn_exit";

type Object = Map<String, Value>;

/// What one turn of Codex is started with.
#[derive(Debug, Clone, Default)]
pub struct TurnCommand<'a> {
    pub model: Option<&'a str>,
    /// `bypassPermissions` (the container is the sandbox: no approvals, no Codex
    /// sandbox) or one of Codex's sandbox modes (`read-only`, `workspace-write`,
    /// `danger-full-access`).
    pub permission_mode: Option<&'a str>,
    /// The thread to continue (`codex exec resume`).
    pub resume: Option<&'a str>,
    /// The OpenAI-compatible base URL (with `/v1`) of the model gateway, set up as a
    /// model provider whose key is read from `OPENAI_API_KEY`.
    pub base_url: Option<&'a str>,
    /// `[agents.*] args`, before the prompt.
    pub extra: &'a [String],
    pub prompt: &'a str,
}

/// The permission modes a `codex` agent accepts (`[agents.*] permission_mode`).
pub const PERMISSION_MODES: [&str; 4] = [
    "bypassPermissions",
    "read-only",
    "workspace-write",
    "danger-full-access",
];

/// A TOML string, as `-c key=value` reads its value.
fn toml_str(s: &str) -> String {
    Value::String(s.to_string()).to_string()
}

/// The Codex argv of one turn.
pub fn command(t: &TurnCommand) -> Vec<String> {
    let mut argv: Vec<String> = ["codex", "exec", "--json", "--skip-git-repo-check"]
        .map(String::from)
        .to_vec();
    match t.permission_mode.filter(|m| !m.trim().is_empty()) {
        None | Some("bypassPermissions") => {
            argv.push("--dangerously-bypass-approvals-and-sandbox".into())
        }
        Some(mode) => {
            argv.push("--sandbox".into());
            argv.push(mode.to_string());
        }
    }
    if let Some(m) = t.model.filter(|m| !m.trim().is_empty()) {
        argv.push("--model".into());
        argv.push(m.to_string());
    }
    if let Some(url) = t.base_url {
        for (key, value) in [
            ("model_provider", toml_str(PROVIDER)),
            (
                &format!("model_providers.{PROVIDER}.name"),
                toml_str("firstmate gateway"),
            ),
            (
                &format!("model_providers.{PROVIDER}.base_url"),
                toml_str(url),
            ),
            (
                &format!("model_providers.{PROVIDER}.env_key"),
                toml_str("OPENAI_API_KEY"),
            ),
            (
                &format!("model_providers.{PROVIDER}.wire_api"),
                toml_str("responses"),
            ),
        ] {
            argv.push("-c".into());
            argv.push(format!("{key}={value}"));
        }
    }
    // What Codex would fetch on its own, which a worker cannot reach: each call would
    // be an egress refusal in the thread. `[agents.*] args` come after, so a team that
    // allows the hosts can turn them back on. Unknown keys are ignored (older CLIs).
    for setting in QUIET {
        argv.push("-c".into());
        argv.push(setting.to_string());
    }
    argv.extend(t.extra.iter().cloned());
    if let Some(thread) = t.resume.filter(|r| !r.trim().is_empty()) {
        argv.push("resume".into());
        argv.push(thread.to_string());
    }
    // Whatever the prompt starts with, it is the prompt, not an option.
    argv.push("--".into());
    argv.push(t.prompt.to_string());
    argv
}

/// The `docker exec` argv of turn number `turn` (the session's turns so far + 1):
/// the wrapper around `codex` (see the module documentation).
pub fn turn_argv(turn: i64, codex: Vec<String>) -> Vec<String> {
    let script = format!(
        r#"exec 9>{LOCK_FILE}; flock 9
printf '%s\n' '{{"type":"firstmate.turn_start","turn":{turn}}}' >/proc/1/fd/1
"$@" </dev/null >/proc/1/fd/1 2>/proc/1/fd/2 &
echo "{turn} $!" >{PID_FILE}
wait $!; code=$?
rm -f {PID_FILE}
printf '{{"type":"{EXIT_MARKER}","turn":{turn},"code":%d}}\n' "$code" >/proc/1/fd/1"#
    );
    let mut argv = vec![
        "sh".to_string(),
        "-c".to_string(),
        script,
        "firstmate-turn".to_string(),
    ];
    argv.extend(codex);
    argv
}

/// The `docker exec` argv that interrupts turn number `turn` (SIGINT to its Codex,
/// which ends the turn; the conversation stays). It waits (10 s at most) for that turn's
/// process to be started, and never touches another turn's.
pub fn interrupt_argv(turn: i64) -> Vec<String> {
    vec![
        "sh".into(),
        "-c".into(),
        format!(
            r#"i=0; while [ $i -lt 100 ]; do
  set -- $(cat {PID_FILE} 2>/dev/null)
  if [ "$1" = "{turn}" ] && [ -n "$2" ]; then exec kill -INT "$2"; fi
  i=$((i+1)); sleep 0.1
done"#
        ),
    ]
}

/// The wrapper's exit marker: the turn number and Codex's exit code.
pub fn exit_marker(line: &str) -> Option<(i64, i64)> {
    let line = line.trim();
    if !line.starts_with('{') || !line.contains(EXIT_MARKER) {
        return None;
    }
    let v: Value = serde_json::from_str(line).ok()?;
    if v.get("type")?.as_str()? != EXIT_MARKER {
        return None;
    }
    Some((v.get("turn")?.as_i64()?, v.get("code")?.as_i64()?))
}

/// The turn end of a Codex process that exited with `code` before ending its turn.
pub fn exit_turn_end(code: i64) -> AgentEvent {
    let message = match code {
        0 => "codex ended without finishing the turn".to_string(),
        130 => "codex was interrupted".to_string(),
        c if c > 128 => format!("codex was killed by signal {}", c - 128),
        c => format!("codex exited with code {c} before finishing the turn"),
    };
    AgentEvent::TurnEnd {
        outcome: TurnOutcome::Error { message },
        usage: Usage::default(),
        cost_usd: None,
        agent_session_id: None,
    }
}

/// Parses one stdout line into zero or more neutral events.
pub fn parse_line(line: &str) -> Vec<AgentEvent> {
    parse_json_line(line, |obj, kind, line| match kind {
        "thread.started" => match obj.get("thread_id").and_then(Value::as_str) {
            Some(id) => Ok(vec![AgentEvent::Started {
                agent_session_id: id.to_string(),
                model: None,
            }]),
            None => Err("thread.started without a string `thread_id`".to_string()),
        },
        "turn.started" | "firstmate.turn_start" | EXIT_MARKER => Ok(Vec::new()),
        "turn.completed" => Ok(vec![AgentEvent::TurnEnd {
            outcome: TurnOutcome::Done,
            usage: usage(obj.get("usage")),
            cost_usd: None,
            agent_session_id: None,
        }]),
        "turn.failed" => {
            let message = obj
                .get("error")
                .and_then(|e| e.get("message"))
                .and_then(Value::as_str)
                .filter(|m| !m.trim().is_empty())
                .map_or_else(|| "the turn failed".to_string(), api_error_text);
            Ok(vec![AgentEvent::TurnEnd {
                outcome: TurnOutcome::Error { message },
                usage: usage(obj.get("usage")),
                cost_usd: None,
                agent_session_id: None,
            }])
        }
        "item.started" | "item.updated" | "item.completed" => match obj.get("item") {
            Some(Value::Object(item)) => item_events(kind, item),
            _ => Err(format!("{kind} without an `item` object")),
        },
        // Stream errors and retries ("Reconnecting... 2/5"): the turn's end says
        // whether it failed; keep them, as Claude's retries are kept.
        other => Ok(vec![AgentEvent::Unknown {
            kind: other.to_string(),
            raw: line.to_string(),
        }]),
    })
}

/// The message of an API error: Codex passes the API's JSON error body on as it is;
/// its `type` and `message` read better in a chat.
fn api_error_text(message: &str) -> String {
    let body: Option<Value> = serde_json::from_str(message.trim()).ok();
    let error = body.as_ref().and_then(|b| b.get("error"));
    match error.and_then(|e| e.get("message")).and_then(Value::as_str) {
        Some(m) => match error.and_then(|e| e.get("type")).and_then(Value::as_str) {
            Some(t) => format!("{t}: {m}"),
            None => m.to_string(),
        },
        None => message.to_string(),
    }
}

/// Token counts of a `turn.completed`: OpenAI counts cached input inside
/// `input_tokens`; the neutral [`Usage`] keeps them apart.
fn usage(u: Option<&Value>) -> Usage {
    let int = |k: &str| {
        u.and_then(|u| u.get(k))
            .and_then(Value::as_i64)
            .unwrap_or(0)
    };
    let cached = int("cached_input_tokens");
    Usage {
        input_tokens: (int("input_tokens") - cached).max(0),
        output_tokens: int("output_tokens"),
        cache_read_tokens: cached,
        cache_write_tokens: 0,
    }
}

fn item_events(kind: &str, item: &Object) -> Result<Vec<AgentEvent>, String> {
    let Some(id) = item.get("id").and_then(Value::as_str) else {
        return Err(format!("{kind} item without a string `id`"));
    };
    let Some(item_type) = item.get("type").and_then(Value::as_str) else {
        return Err(format!("{kind} item without a string `type`"));
    };
    let text = |k: &str| item.get(k).and_then(Value::as_str).unwrap_or_default();
    let failed = item.get("status").and_then(Value::as_str) == Some("failed");
    let started = kind == "item.started";
    let completed = kind == "item.completed";
    let tool_use = |name: &str, summary: String, input: Value| AgentEvent::ToolUse {
        id: id.to_string(),
        name: name.to_string(),
        summary: one_line(&summary, SUMMARY_CHARS),
        input,
    };
    let result = |output: String, is_error: bool| AgentEvent::ToolResult {
        tool_use_id: id.to_string(),
        output,
        is_error,
    };
    Ok(match item_type {
        "agent_message" if completed => vec![AgentEvent::Text {
            text: text("text").to_string(),
        }],
        "command_execution" if started => {
            let command = text("command");
            vec![tool_use(
                "Bash",
                shell_body(command).to_string(),
                json!({"command": command}),
            )]
        }
        "command_execution" if completed => {
            let exit = item.get("exit_code").and_then(Value::as_i64);
            let is_error = failed || exit.is_some_and(|c| c != 0);
            let mut output = text("aggregated_output").to_string();
            if is_error && let Some(c) = exit.filter(|c| *c != 0) {
                if !output.is_empty() && !output.ends_with('\n') {
                    output.push('\n');
                }
                output.push_str(&format!("(exit code {c})"));
            }
            vec![result(output, is_error)]
        }
        // A patch comes as one completed item: the call and its result together.
        "file_change" if completed => {
            let changes: Vec<String> = item
                .get("changes")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|c| {
                    let path = c.get("path").and_then(Value::as_str).unwrap_or("?");
                    match c.get("kind").and_then(Value::as_str) {
                        Some(k) => format!("{k} {path}"),
                        None => path.to_string(),
                    }
                })
                .collect();
            let summary = changes.join(", ");
            vec![
                tool_use(
                    "Edit",
                    summary.clone(),
                    item.get("changes").cloned().unwrap_or(Value::Null),
                ),
                result(
                    if failed {
                        "the patch did not apply".into()
                    } else {
                        summary
                    },
                    failed,
                ),
            ]
        }
        "mcp_tool_call" if started => {
            let name = format!("{}.{}", text("server"), text("tool"));
            let args = item.get("arguments").cloned().unwrap_or(Value::Null);
            let summary = args
                .as_object()
                .and_then(|o| o.values().find_map(Value::as_str))
                .unwrap_or_default()
                .to_string();
            vec![tool_use(&name, summary, args)]
        }
        "mcp_tool_call" if completed => {
            let error = item
                .get("error")
                .and_then(|e| e.get("message"))
                .and_then(Value::as_str);
            let output = match error {
                Some(e) => e.to_string(),
                None => item
                    .get("result")
                    .and_then(|r| r.get("content"))
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|c| c.get("text").and_then(Value::as_str))
                    .collect::<Vec<_>>()
                    .join("\n"),
            };
            vec![result(output, failed || error.is_some())]
        }
        "web_search" if completed => vec![tool_use(
            "WebSearch",
            text("query").to_string(),
            json!({"query": text("query")}),
        )],
        "todo_list" if started => {
            let n = item
                .get("items")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            let summary = if n == 1 {
                "1 todo".to_string()
            } else {
                format!("{n} todos")
            };
            vec![tool_use(
                "TodoWrite",
                summary,
                item.get("items").cloned().unwrap_or(Value::Null),
            )]
        }
        // A non-fatal error the CLI reports as an item: say it.
        "error" if completed => vec![AgentEvent::Text {
            text: format!("⚠ {}", text("message")),
        }],
        // Reasoning summaries, and the in-between states of the items above.
        _ => Vec::new(),
    })
}

/// The script of a `bash -lc '...'` command line, for a short summary; anything else
/// as it is.
fn shell_body(command: &str) -> &str {
    let c = command.trim();
    let rest = [
        "/bin/bash -lc ",
        "bash -lc ",
        "/bin/sh -c ",
        "sh -c ",
        "bash -c ",
    ]
    .iter()
    .find_map(|p| c.strip_prefix(p));
    match rest {
        Some(r) if r.len() >= 2 && r.starts_with('\'') && r.ends_with('\'') => {
            let inner = &r[1..r.len() - 1];
            if inner.contains('\'') { c } else { inner }
        }
        Some(r) if r.len() >= 2 && r.starts_with('"') && r.ends_with('"') => {
            let inner = &r[1..r.len() - 1];
            if inner.contains(['"', '\\', '$', '`']) {
                c
            } else {
                inner
            }
        }
        _ => c,
    }
}

/// The usage of a Codex turn: Codex reports its thread's running total, so the turn's own
/// is what it adds to the session's total so far (a smaller total is a new thread).
pub fn turn_usage(so_far: &Usage, total: Usage) -> Usage {
    let fields = |u: &Usage| {
        [
            u.input_tokens,
            u.output_tokens,
            u.cache_read_tokens,
            u.cache_write_tokens,
        ]
    };
    if fields(&total)
        .iter()
        .zip(fields(so_far))
        .any(|(t, s)| *t < s)
    {
        return total;
    }
    Usage {
        input_tokens: total.input_tokens - so_far.input_tokens,
        output_tokens: total.output_tokens - so_far.output_tokens,
        cache_read_tokens: total.cache_read_tokens - so_far.cache_read_tokens,
        cache_write_tokens: total.cache_write_tokens - so_far.cache_write_tokens,
    }
}

/// Codex CLI: the container idles; each turn is an exec of `codex exec` in the wrapper,
/// its interrupt a signal to that turn's process; a turn whose wrapper exits first ends
/// at its exit marker.
pub struct CodexDriver;

impl super::Driver for CodexDriver {
    fn container_cmd(&self, _: &super::Launch) -> Vec<String> {
        KEEPER.map(String::from).to_vec()
    }

    fn uses_stdin(&self) -> bool {
        false
    }

    fn sees_images(&self) -> bool {
        false
    }

    fn start_turn(
        &self,
        l: &super::Launch,
        number: i64,
        prompt: &str,
        _: &[super::claude::Image],
    ) -> super::Io {
        let cmd = command(&TurnCommand {
            model: l.model,
            permission_mode: l.permission_mode,
            resume: l.resume,
            base_url: l.openai_base_url,
            extra: l.extra,
            prompt,
        });
        super::Io::Exec(turn_argv(number, cmd))
    }

    fn interrupt(&self, number: i64, _: &str) -> super::Io {
        super::Io::Exec(interrupt_argv(number))
    }

    fn parse(&self, line: &str, running: Option<i64>) -> Vec<AgentEvent> {
        match exit_marker(line) {
            // Codex exited before ending the running turn: a crash, or an interrupt. A
            // marker of an earlier, finished turn is nothing.
            Some((turn, code)) if running == Some(turn) => vec![exit_turn_end(code)],
            Some(_) => Vec::new(),
            None => parse_line(line),
        }
    }

    fn turn_usage(&self, so_far: &Usage, reported: Usage) -> Usage {
        turn_usage(so_far, reported)
    }

    fn answer(&self, _: &str, _: &super::Permission) -> Option<super::Io> {
        // `codex exec` never asks (the config refuses `permission_mode = "ask"`).
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(i: i64, o: i64, c: i64) -> Usage {
        Usage {
            input_tokens: i,
            output_tokens: o,
            cache_read_tokens: c,
            cache_write_tokens: 0,
        }
    }

    #[test]
    fn a_codex_turn_counts_what_it_adds_to_the_thread_total() {
        assert_eq!(
            turn_usage(&u(300, 80, 100), u(450, 120, 150)),
            u(150, 40, 50)
        );
        assert_eq!(turn_usage(&u(0, 0, 0), u(300, 80, 100)), u(300, 80, 100));
        // A crash reports nothing; a new thread starts from zero again.
        assert_eq!(turn_usage(&u(300, 80, 100), u(0, 0, 0)), u(0, 0, 0));
        assert_eq!(turn_usage(&u(300, 80, 100), u(20, 90, 0)), u(20, 90, 0));
    }

    fn one(line: &str) -> AgentEvent {
        let mut evs = parse_line(line);
        assert_eq!(evs.len(), 1, "{evs:?}");
        evs.remove(0)
    }

    #[test]
    fn a_thread_starts_and_a_turn_completes_with_its_usage() {
        assert_eq!(
            one(r#"{"type":"thread.started","thread_id":"0199a213-81c0"}"#),
            AgentEvent::Started {
                agent_session_id: "0199a213-81c0".into(),
                model: None
            }
        );
        assert!(parse_line(r#"{"type":"turn.started"}"#).is_empty());
        assert_eq!(
            one(
                r#"{"type":"turn.completed","usage":{"input_tokens":1200,"cached_input_tokens":200,"output_tokens":345}}"#
            ),
            AgentEvent::TurnEnd {
                outcome: TurnOutcome::Done,
                usage: Usage {
                    input_tokens: 1000,
                    output_tokens: 345,
                    cache_read_tokens: 200,
                    cache_write_tokens: 0
                },
                cost_usd: None,
                agent_session_id: None,
            }
        );
        match one(r#"{"type":"turn.failed","error":{"message":"stream disconnected"}}"#) {
            AgentEvent::TurnEnd {
                outcome: TurnOutcome::Error { message },
                ..
            } => assert_eq!(message, "stream disconnected"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn commands_become_a_bash_call_and_its_result() {
        let start = r#"{"type":"item.started","item":{"id":"item_1","type":"command_execution","command":"bash -lc 'echo hi'","aggregated_output":"","exit_code":null,"status":"in_progress"}}"#;
        match one(start) {
            AgentEvent::ToolUse {
                id, name, summary, ..
            } => {
                assert_eq!((id.as_str(), name.as_str()), ("item_1", "Bash"));
                assert_eq!(summary, "echo hi");
            }
            other => panic!("{other:?}"),
        }
        let done = r#"{"type":"item.completed","item":{"id":"item_1","type":"command_execution","command":"bash -lc 'echo hi'","aggregated_output":"hi\n","exit_code":0,"status":"completed"}}"#;
        assert_eq!(
            one(done),
            AgentEvent::ToolResult {
                tool_use_id: "item_1".into(),
                output: "hi\n".into(),
                is_error: false
            }
        );
        let failed = r#"{"type":"item.completed","item":{"id":"item_2","type":"command_execution","command":"false","aggregated_output":"nope","exit_code":1,"status":"failed"}}"#;
        assert_eq!(
            one(failed),
            AgentEvent::ToolResult {
                tool_use_id: "item_2".into(),
                output: "nope\n(exit code 1)".into(),
                is_error: true
            }
        );
    }

    #[test]
    fn messages_patches_and_plans() {
        assert_eq!(
            one(
                r#"{"type":"item.completed","item":{"id":"item_3","type":"agent_message","text":"Done."}}"#
            ),
            AgentEvent::Text {
                text: "Done.".into()
            }
        );
        assert!(
            parse_line(
                r#"{"type":"item.completed","item":{"id":"item_0","type":"reasoning","text":"**Thinking**"}}"#
            )
            .is_empty()
        );
        let patch = parse_line(
            r#"{"type":"item.completed","item":{"id":"item_4","type":"file_change","changes":[{"path":"src/a.rs","kind":"update"},{"path":"b.txt","kind":"add"}],"status":"completed"}}"#,
        );
        assert_eq!(patch.len(), 2, "{patch:?}");
        match &patch[0] {
            AgentEvent::ToolUse { name, summary, .. } => {
                assert_eq!(name, "Edit");
                assert_eq!(summary, "update src/a.rs, add b.txt");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            &patch[1],
            AgentEvent::ToolResult {
                is_error: false,
                ..
            }
        ));
        match one(
            r#"{"type":"item.started","item":{"id":"item_5","type":"todo_list","items":[{"text":"a","completed":false},{"text":"b","completed":false}]}}"#,
        ) {
            AgentEvent::ToolUse { summary, .. } => assert_eq!(summary, "2 todos"),
            other => panic!("{other:?}"),
        }
        assert!(
            parse_line(
                r#"{"type":"item.updated","item":{"id":"item_5","type":"todo_list","items":[]}}"#
            )
            .is_empty()
        );
    }

    #[test]
    fn bad_and_unknown_lines_are_reported_not_fatal() {
        assert!(matches!(one("not json"), AgentEvent::Malformed { .. }));
        assert!(matches!(one("[1]"), AgentEvent::Malformed { .. }));
        assert!(matches!(
            one(r#"{"type":"item.completed"}"#),
            AgentEvent::Malformed { .. }
        ));
        assert!(matches!(
            one(r#"{"type":"error","message":"Reconnecting... 1/5"}"#),
            AgentEvent::Unknown { .. }
        ));
        assert!(parse_line("  ").is_empty());
    }

    #[test]
    fn the_exit_marker_is_read_and_only_it() {
        assert_eq!(
            exit_marker(r#"{"type":"firstmate.turn_exit","turn":3,"code":130}"#),
            Some((3, 130))
        );
        assert_eq!(
            exit_marker(r#"{"type":"item.completed","text":"firstmate.turn_exit"}"#),
            None
        );
        assert!(parse_line(r#"{"type":"firstmate.turn_exit","turn":3,"code":0}"#).is_empty());
        assert!(matches!(
            exit_turn_end(2),
            AgentEvent::TurnEnd {
                outcome: TurnOutcome::Error { .. },
                ..
            }
        ));
    }

    #[test]
    fn the_command_resumes_points_at_the_gateway_and_keeps_the_prompt_a_prompt() {
        let extra = vec![
            "-c".to_string(),
            "model_reasoning_effort=\"low\"".to_string(),
        ];
        let argv = command(&TurnCommand {
            model: Some("gpt-5-codex"),
            permission_mode: None,
            resume: Some("0199a213"),
            base_url: Some("http://gw:8787/openai/v1"),
            extra: &extra,
            prompt: "--help me",
        });
        let s = argv.join(" ");
        assert!(s.starts_with("codex exec --json --skip-git-repo-check --dangerously-bypass-approvals-and-sandbox --model gpt-5-codex"), "{s}");
        assert!(
            argv.contains(&"model_provider=\"firstmate\"".to_string()),
            "{s}"
        );
        assert!(
            argv.contains(
                &"model_providers.firstmate.base_url=\"http://gw:8787/openai/v1\"".to_string()
            ),
            "{s}"
        );
        assert!(
            s.ends_with("model_reasoning_effort=\"low\" resume 0199a213 -- --help me"),
            "{s}"
        );
        let argv = command(&TurnCommand {
            permission_mode: Some("workspace-write"),
            prompt: "hi",
            ..Default::default()
        });
        assert_eq!(
            argv.join(" "),
            "codex exec --json --skip-git-repo-check --sandbox workspace-write \
             -c features.plugins=false -c analytics.enabled=false -- hi"
        );
        let wrapped = turn_argv(4, argv.clone());
        assert_eq!(&wrapped[..2], ["sh", "-c"]);
        assert!(wrapped[2].contains("\"turn\":4"));
        assert!(wrapped[2].contains("echo \"4 $!\""));
        assert!(interrupt_argv(4)[2].contains("[ \"$1\" = \"4\" ]"));
        assert_eq!(&wrapped[4..], &argv[..]);
    }

    /// Output of the real CLI (Codex 0.169, `FIRSTMATE_CODEX_CAPTURE` in the
    /// `codex_real` tests): every line is understood.
    #[test]
    fn real_captures_parse_cleanly() {
        let all = |text: &str| -> Vec<AgentEvent> { text.lines().flat_map(parse_line).collect() };
        let tool = all(include_str!(
            "../../tests/fixtures/codex/real/turn_tool.jsonl"
        ));
        assert!(
            !tool
                .iter()
                .any(|e| matches!(e, AgentEvent::Malformed { .. } | AgentEvent::Unknown { .. })),
            "{tool:#?}"
        );
        assert!(matches!(&tool[0], AgentEvent::Started { .. }));
        assert!(tool.iter().any(|e| matches!(e, AgentEvent::ToolUse { summary, .. } if summary == "echo $((6*7)) | tee answer.txt; id -un")), "{tool:#?}");
        assert!(tool.contains(&AgentEvent::Text {
            text: "The answer is 42.".into()
        }));
        assert!(matches!(
            tool.last(),
            Some(AgentEvent::TurnEnd {
                outcome: TurnOutcome::Done,
                ..
            })
        ));
        let resumed = all(include_str!(
            "../../tests/fixtures/codex/real/resumed_turn.jsonl"
        ));
        assert!(resumed.contains(&AgentEvent::Text {
            text: "You asked me to compute 6*7.".into()
        }));
        let error = all(include_str!(
            "../../tests/fixtures/codex/real/api_error.jsonl"
        ));
        match error.last() {
            Some(AgentEvent::TurnEnd {
                outcome: TurnOutcome::Error { message },
                ..
            }) => assert_eq!(
                message,
                "invalid_request_error: The scripted stand-in refuses this one."
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn shell_wrappers_are_taken_off_summaries() {
        assert_eq!(shell_body("bash -lc 'ls -la'"), "ls -la");
        assert_eq!(shell_body("/bin/bash -lc \"echo ok\""), "echo ok");
        assert_eq!(shell_body("bash -lc 'it'\\''s'"), "bash -lc 'it'\\''s'");
        assert_eq!(shell_body("ls"), "ls");
    }
}
