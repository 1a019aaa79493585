//! `firstmate-test-agent`: a small, deterministic fake of the Claude Code CLI.
//!
//! It is installed in a test image as `/usr/local/bin/claude` and speaks Claude
//! Code's stream-json protocol, so firstmate can be tested end to end without a
//! model. It runs in two forms:
//!
//! * multi-turn: `claude -p --input-format stream-json --output-format stream-json
//!   --verbose [--model M] [--resume ID] [--replay-user-messages] ...` reads one
//!   JSON message a line on stdin. Each `{"type":"user",...}` message is one turn
//!   (messages that arrive while a turn runs are queued); a `control_request`
//!   with subtype `interrupt` is answered at once and aborts the running turn,
//!   which then ends with an `error_during_execution` result. At EOF the queued
//!   turns are finished and the agent exits 0.
//! * one-shot: `claude -p "PROMPT" --output-format stream-json --verbose` runs
//!   the prompt as one turn and exits 0 (without a prompt argument, and without
//!   `--input-format stream-json`, the prompt is read from stdin).
//!
//! Unknown `--flag`, `--flag=value` and `--flag value` arguments are accepted and
//! ignored. A user message's content may be a string or content blocks: the text
//! blocks are the script, and each image block adds a line `[image TYPE, N bytes]`
//! (which the script echoes), so tests see what the model would have been shown.
//!
//! # The script language
//!
//! Every prompt is a script: one instruction a line; each line is trimmed and
//! empty lines are skipped.
//!
//! | line             | what the agent does                                              |
//! |------------------|------------------------------------------------------------------|
//! | `say TEXT`       | an assistant text message TEXT                                   |
//! | `run COMMAND`    | a Bash tool call: `sh -c COMMAND`, stdin null, stdout and stderr  |
//! |                  | merged; the output (trailing newline trimmed) is the tool result, |
//! |                  | an error when the exit code is not 0                              |
//! | `sleep DURATION` | waits (humantime: `2s`, `500ms`, ...)                            |
//! | `flood N`        | N assistant text messages `line i/N`, as fast as it can           |
//! | `fail TEXT`      | ends the turn at once as an error (as on an API error): a result  |
//! |                  | with `is_error: true` and `result: TEXT`; the rest is skipped     |
//! | `exit CODE`      | the process exits at once with CODE (0 to 255)                    |
//! | `ask TOOL CMD`   | a TOOL call (input `{"command": CMD}`) that asks permission first, |
//! |                  | as Claude Code does: with `--permission-prompt-tool stdio` a      |
//! |                  | `control_request` `can_use_tool` on stdout, answered by a         |
//! |                  | `control_response` on stdin; allowed, CMD runs as for `run`;      |
//! |                  | denied, the tool result is the denial's message (an error).       |
//! |                  | With `--permission-mode bypassPermissions` (or `--dangerously-    |
//! |                  | skip-permissions`) it runs without asking; with neither and no    |
//! |                  | prompt tool it is denied at once, as the CLI does.                |
//! | anything else    | an assistant text message `echo: LINE`                           |
//!
//! An instruction with a bad argument (`sleep forever`, `flood x`, `exit x`)
//! becomes the assistant text `test-agent: bad instruction 'LINE': WHY` and the
//! script goes on.
//!
//! # Output
//!
//! One JSON object a line on stdout, shaped like Claude Code 2.1.x: a
//! `system`/`init` event at the start of the first turn, `assistant` messages
//! (text or a `Bash` `tool_use`), `user` messages carrying `tool_result`s, and a
//! `result` event at the end of every turn. Usage is deterministic so cost
//! accounting can be tested: input tokens are the bytes of the prompt, output
//! tokens the bytes of assistant text and tool output of the turn, and
//! `total_cost_usd` is, over the whole process, `(input * 3 + output * 15) / 1e6`.
//!
//! Each prompt is appended to `$HOME/.claude/projects/test-agent/<SESSION>.jsonl`
//! so `--resume` has something to point at.
//!
//! A broken stdout makes the agent exit quietly.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::io::{self, BufRead, BufWriter, Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

const VERSION: &str = "test-agent";
const DEFAULT_MODEL: &str = "scripted";

// ---------------------------------------------------------------------------
// Command line (pure)
// ---------------------------------------------------------------------------

/// What the command line asks for.
#[derive(Debug, Default, PartialEq)]
struct Args {
    /// `--input-format stream-json`: read user messages from stdin.
    stream_input: bool,
    model: Option<String>,
    resume: Option<String>,
    replay_user_messages: bool,
    /// The positional prompt of the one-shot form (several are joined with a space).
    prompt: Option<String>,
    help: bool,
    version: bool,
    /// `--permission-mode`.
    permission_mode: Option<String>,
    /// `--permission-prompt-tool stdio`: permission prompts go to the host.
    prompt_on_stdio: bool,
    /// `--dangerously-skip-permissions`.
    skip_permissions: bool,
}

/// Flags of Claude Code that take no value (so an argument after them is the prompt).
const BOOL_FLAGS: &[&str] = &[
    "-p",
    "--print",
    "--verbose",
    "--replay-user-messages",
    "--dangerously-skip-permissions",
    "--allow-dangerously-skip-permissions",
    "--include-partial-messages",
    "-c",
    "--continue",
    "--fork-session",
    "--strict-mcp-config",
    "--ide",
    "--debug",
    "-d",
    "--mcp-debug",
    "--disable-slash-commands",
    "--no-session-persistence",
];

/// Parses the arguments after the program name. Never fails: anything it does
/// not know is ignored.
fn parse_args<I, S>(args: I) -> Args
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let args: Vec<String> = args.into_iter().map(Into::into).collect();
    let mut out = Args::default();
    let mut positional: Vec<String> = Vec::new();
    let mut i = 0;
    let mut only_positional = false;
    while i < args.len() {
        let arg = &args[i];
        i += 1;
        if only_positional || arg == "-" || !arg.starts_with('-') {
            positional.push(arg.clone());
            continue;
        }
        if arg == "--" {
            only_positional = true;
            continue;
        }
        let (name, inline_value) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n, Some(v.to_string())),
            _ => (arg.as_str(), None),
        };
        match name {
            "-h" | "--help" => out.help = true,
            "-v" | "--version" => out.version = true,
            "--replay-user-messages" => out.replay_user_messages = true,
            "--dangerously-skip-permissions" => out.skip_permissions = true,
            n if BOOL_FLAGS.contains(&n) => {}
            _ => {
                // A flag with a value: inline, or the next argument unless that
                // is itself a flag.
                let value = match inline_value {
                    Some(v) => Some(v),
                    None => match args.get(i) {
                        Some(next) if !next.starts_with('-') || next == "-" => {
                            i += 1;
                            Some(next.clone())
                        }
                        _ => None,
                    },
                };
                match (name, value) {
                    ("--input-format", Some(v)) => out.stream_input = v == "stream-json",
                    ("--model", Some(v)) => out.model = Some(v),
                    ("-r" | "--resume", Some(v)) => out.resume = Some(v),
                    ("--permission-mode", Some(v)) => out.permission_mode = Some(v),
                    ("--permission-prompt-tool", Some(v)) => out.prompt_on_stdio = v == "stdio",
                    _ => {}
                }
            }
        }
    }
    if !positional.is_empty() {
        out.prompt = Some(positional.join(" "));
    }
    out
}

const USAGE: &str = "\
firstmate-test-agent: a scripted fake of the Claude Code CLI (stream-json only)

usage:
  claude -p --input-format stream-json --output-format stream-json --verbose
         [--model M] [--resume ID] [--replay-user-messages]
  claude -p \"PROMPT\" --output-format stream-json --verbose

script, one instruction a line:
  say TEXT | run COMMAND | ask TOOL COMMAND | sleep DURATION | flood N | fail TEXT | exit CODE
  anything else is echoed back as `echo: LINE`
";

// ---------------------------------------------------------------------------
// Script (pure)
// ---------------------------------------------------------------------------

/// One line of a prompt.
#[derive(Debug, PartialEq)]
enum Instr {
    Say(String),
    Run(String),
    Sleep(Duration),
    Flood(u64),
    Fail(String),
    Exit(i32),
    /// A tool call that asks permission first.
    Ask {
        tool: String,
        command: String,
    },
    /// Not an instruction: echoed back.
    Echo(String),
    /// An instruction with a bad argument.
    Bad {
        line: String,
        why: String,
    },
}

impl Instr {
    /// The assistant text this instruction produces without running anything.
    fn text(&self) -> Option<String> {
        match self {
            Instr::Say(t) => Some(t.clone()),
            Instr::Echo(line) => Some(format!("echo: {line}")),
            Instr::Bad { line, why } => {
                Some(format!("test-agent: bad instruction '{line}': {why}"))
            }
            _ => None,
        }
    }
}

/// Parses one trimmed, non-empty line.
fn parse_instruction(line: &str) -> Instr {
    let (word, rest) = match line.split_once(|c: char| c.is_whitespace()) {
        Some((w, r)) => (w, r.trim()),
        None => (line, ""),
    };
    let bad = |why: String| Instr::Bad {
        line: line.to_string(),
        why,
    };
    match word {
        "say" => Instr::Say(rest.to_string()),
        "fail" => Instr::Fail(rest.to_string()),
        "run" if rest.is_empty() => bad("missing command".into()),
        "run" => Instr::Run(rest.to_string()),
        "ask" => match rest.split_once(|c: char| c.is_whitespace()) {
            Some((tool, command)) if !command.trim().is_empty() => Instr::Ask {
                tool: tool.to_string(),
                command: command.trim().to_string(),
            },
            _ => bad("expected a tool and a command, like `ask Bash touch x`".into()),
        },
        "sleep" if rest.is_empty() => bad("missing duration (e.g. 2s, 500ms)".into()),
        "sleep" => match parse_duration(rest) {
            Ok(d) => Instr::Sleep(d),
            Err(e) => bad(format!("not a duration (e.g. 2s, 500ms): {e}")),
        },
        "flood" if rest.is_empty() => bad("missing number of messages".into()),
        "flood" => match rest.parse::<u64>() {
            Ok(n) => Instr::Flood(n),
            Err(e) => bad(format!("not a number of messages: {e}")),
        },
        "exit" if rest.is_empty() => bad("missing exit code".into()),
        "exit" => match rest.parse::<u8>() {
            Ok(c) => Instr::Exit(i32::from(c)),
            Err(_) => bad("not an exit code from 0 to 255".into()),
        },
        _ => Instr::Echo(line.to_string()),
    }
}

/// A humantime duration (`2s`, `1m 30s`, `500ms`), or a bare number of seconds
/// as `sleep(1)` takes it (`10`, `0.5`).
fn parse_duration(s: &str) -> Result<Duration, String> {
    if s.starts_with(|c: char| c.is_ascii_digit() || c == '.')
        && let Ok(secs) = s.parse::<f64>()
    {
        return Duration::try_from_secs_f64(secs).map_err(|e| e.to_string());
    }
    humantime::parse_duration(s).map_err(|e| e.to_string())
}

/// Parses a whole prompt: one instruction a non-empty line.
fn parse_script(prompt: &str) -> Vec<Instr> {
    prompt
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(parse_instruction)
        .collect()
}

// ---------------------------------------------------------------------------
// Input lines (pure)
// ---------------------------------------------------------------------------

/// One line of stdin in multi-turn mode.
#[derive(Debug, PartialEq)]
enum Input {
    /// Only whitespace.
    Blank,
    /// Not JSON: the parser's complaint.
    Invalid(String),
    /// A user message: the object as sent, and its text.
    User { message: Value, text: String },
    /// A control request.
    Control { request_id: Value, subtype: String },
    /// The host's answer to a permission request.
    Answer {
        request_id: String,
        allow: bool,
        message: String,
    },
    /// Valid JSON the agent does not act on, and why.
    Ignored(String),
}

/// The text of a user message: `message.content` as a string, or the `text` of
/// its text blocks joined with newlines.
fn user_text(message: &Value) -> Result<String, String> {
    let content = message
        .get("message")
        .and_then(|m| m.get("content"))
        .ok_or("a user message without message.content")?;
    match content {
        Value::String(s) => Ok(s.clone()),
        Value::Array(blocks) => {
            let mut lines: Vec<String> = blocks
                .iter()
                .filter(|b| b.get("type").and_then(Value::as_str) == Some("text"))
                .filter_map(|b| b.get("text").and_then(Value::as_str))
                .map(str::to_string)
                .collect();
            // An image block becomes a line the script echoes: `[image TYPE, N bytes]`.
            for b in blocks.iter().filter(|b| b["type"] == "image") {
                let data = b["source"]["data"].as_str().unwrap_or_default();
                let bytes = data.trim_end_matches('=').len() * 3 / 4;
                lines.push(format!(
                    "[image {}, {bytes} bytes]",
                    b["source"]["media_type"].as_str().unwrap_or("?")
                ));
            }
            Ok(lines.join("\n"))
        }
        _ => Err("a user message whose content is neither a string nor an array".into()),
    }
}

fn parse_input_line(line: &str) -> Input {
    let line = line.trim();
    if line.is_empty() {
        return Input::Blank;
    }
    let value: Value = match serde_json::from_str(line) {
        Ok(v) => v,
        Err(e) => return Input::Invalid(e.to_string()),
    };
    match value.get("type").and_then(Value::as_str) {
        Some("user") => match user_text(&value) {
            Ok(text) => Input::User {
                message: value,
                text,
            },
            Err(why) => Input::Ignored(why),
        },
        Some("control_response") => {
            let response = &value["response"];
            let request_id = response["request_id"].as_str().unwrap_or("").to_string();
            let answer = &response["response"];
            Input::Answer {
                request_id,
                allow: answer["behavior"] == "allow",
                message: answer["message"].as_str().unwrap_or("").to_string(),
            }
        }
        Some("control_request") => {
            let request_id = value.get("request_id").cloned().unwrap_or(Value::Null);
            let subtype = value
                .get("request")
                .and_then(|r| r.get("subtype"))
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            Input::Control {
                request_id,
                subtype,
            }
        }
        Some(other) => Input::Ignored(format!("a message of type '{other}'")),
        None => Input::Ignored("a message without a type".into()),
    }
}

// ---------------------------------------------------------------------------
// Output lines (pure)
// ---------------------------------------------------------------------------

fn init_event(cwd: &str, session_id: &str, model: &str) -> Value {
    json!({
        "type": "system",
        "subtype": "init",
        "cwd": cwd,
        "session_id": session_id,
        "tools": ["Bash"],
        "model": model,
        "permissionMode": "bypassPermissions",
        "apiKeySource": "none",
        "claude_code_version": VERSION,
    })
}

fn assistant_event(msg_id: u64, model: &str, session_id: &str, content: Value) -> Value {
    json!({
        "type": "assistant",
        "message": {
            "id": format!("msg_{msg_id}"),
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [content],
            "stop_reason": null,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        },
        "parent_tool_use_id": null,
        "session_id": session_id,
    })
}

fn tool_result_event(tool_id: &str, output: &str, is_error: bool, session_id: &str) -> Value {
    json!({
        "type": "user",
        "message": {
            "role": "user",
            "content": [{
                "tool_use_id": tool_id,
                "type": "tool_result",
                "content": output,
                "is_error": is_error,
            }],
        },
        "parent_tool_use_id": null,
        "session_id": session_id,
    })
}

/// An assistant text event serialized once, with holes for the message id and
/// a text that needs no JSON escaping: `flood` renders thousands of these.
struct TextTemplate {
    /// Before the first hole, between the holes, after the second.
    parts: [String; 3],
    /// Whether the id hole comes before the text hole.
    id_first: bool,
}

impl TextTemplate {
    const ID: &str = "@@test-agent-msg-id@@";
    const TEXT: &str = "@@test-agent-text@@";

    /// None if the markers cannot be found exactly once (a model or session id
    /// containing one): the caller then serializes each event itself.
    fn new(model: &str, session_id: &str) -> Option<TextTemplate> {
        let mut v = assistant_event(
            0,
            model,
            session_id,
            json!({"type": "text", "text": Self::TEXT}),
        );
        v["message"]["id"] = json!(Self::ID);
        let s = v.to_string();
        if s.matches(Self::ID).count() != 1 || s.matches(Self::TEXT).count() != 1 {
            return None;
        }
        let id_at = s.find(Self::ID)?;
        let text_at = s.find(Self::TEXT)?;
        let (first, first_len, second, second_len) = if id_at < text_at {
            (id_at, Self::ID.len(), text_at, Self::TEXT.len())
        } else {
            (text_at, Self::TEXT.len(), id_at, Self::ID.len())
        };
        Some(TextTemplate {
            parts: [
                s[..first].to_string(),
                s[first + first_len..second].to_string(),
                s[second + second_len..].to_string(),
            ],
            id_first: id_at < text_at,
        })
    }

    /// Appends the event line (with its newline) for message `msg_<id>` saying
    /// `text`, which must need no escaping.
    fn render(&self, out: &mut String, id: u64, text: &str) {
        debug_assert!(!text.contains(['"', '\\']) && !text.contains(char::is_control));
        let id = format!("msg_{id}");
        let (a, b) = if self.id_first {
            (id.as_str(), text)
        } else {
            (text, id.as_str())
        };
        out.push_str(&self.parts[0]);
        out.push_str(a);
        out.push_str(&self.parts[1]);
        out.push_str(b);
        out.push_str(&self.parts[2]);
        out.push('\n');
    }
}

/// How a turn ended.
#[derive(Debug, PartialEq)]
enum Outcome {
    /// Ran to the end; the last assistant text.
    Done(String),
    /// `fail TEXT`.
    Failed(String),
    /// Interrupted.
    Aborted,
}

struct ResultInfo<'a> {
    outcome: &'a Outcome,
    duration_ms: u64,
    num_turns: u64,
    session_id: &'a str,
    input_tokens: u64,
    output_tokens: u64,
    total_input: u64,
    total_output: u64,
}

fn cost_usd(total_input: u64, total_output: u64) -> f64 {
    (total_input as f64 * 3.0 + total_output as f64 * 15.0) / 1_000_000.0
}

fn result_event(r: &ResultInfo) -> Value {
    let mut v = json!({
        "type": "result",
        "subtype": "success",
        "is_error": false,
        "duration_ms": r.duration_ms,
        "duration_api_ms": 0,
        "num_turns": r.num_turns,
        "session_id": r.session_id,
        "total_cost_usd": cost_usd(r.total_input, r.total_output),
        "usage": {
            "input_tokens": r.input_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": r.output_tokens,
        },
    });
    match r.outcome {
        Outcome::Done(text) => v["result"] = json!(text),
        Outcome::Failed(text) => {
            v["is_error"] = json!(true);
            v["result"] = json!(text);
        }
        Outcome::Aborted => {
            v["subtype"] = json!("error_during_execution");
            v["is_error"] = json!(true);
        }
    }
    v
}

fn control_response(request_id: &Value, subtype: &str) -> Value {
    match subtype {
        "interrupt" | "initialize" => json!({
            "type": "control_response",
            "response": {"subtype": "success", "request_id": request_id},
        }),
        other => json!({
            "type": "control_response",
            "response": {
                "subtype": "error",
                "request_id": request_id,
                "error": format!("test-agent does not support control request '{other}'"),
            },
        }),
    }
}

/// A fresh UUID-looking (version 4 layout) id from the time and the pid.
fn new_session_id() -> String {
    fn mix(mut z: u64) -> u64 {
        // splitmix64
        z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let seed = (nanos as u64) ^ ((nanos >> 64) as u64) ^ (u64::from(std::process::id()) << 32);
    let hi = mix(seed);
    let lo = mix(hi ^ u64::from(std::process::id()));
    let hi = (hi & !0xf000) | 0x4000; // version 4
    let lo = (lo & !(0b11 << 62)) | (0b10 << 62); // RFC 4122 variant
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        hi >> 32,
        (hi >> 16) & 0xffff,
        hi & 0xffff,
        lo >> 48,
        lo & 0xffff_ffff_ffff
    )
}

/// Whether a session id is safe to use as a file name.
fn safe_file_stem(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 200
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

// ---------------------------------------------------------------------------
// I/O
// ---------------------------------------------------------------------------

/// The process group of the running `run` child, 0 when none.
static CHILD_PGID: AtomicU32 = AtomicU32::new(0);

fn kill_group(pgid: u32) {
    if pgid == 0 {
        return;
    }
    // No libc: let the shell's builtin kill signal the whole group.
    let _ = Command::new("sh")
        .arg("-c")
        .arg(format!("kill -s KILL -- -{pgid} 2>/dev/null"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Exits at once, quietly, taking a running child's group along.
fn quit(code: i32) -> ! {
    kill_group(CHILD_PGID.swap(0, Ordering::SeqCst));
    std::process::exit(code)
}

fn warn(msg: &str) {
    let _ = writeln!(io::stderr().lock(), "test-agent: {msg}");
}

/// What the writer thread is asked to do.
enum Out {
    /// One or more complete lines, each ending with a newline.
    Lines(String),
    /// Flush stdout, then acknowledge.
    Flush(SyncSender<()>),
}

/// Owns stdout: writes lines in the order they are sent, flushing whenever it
/// has nothing more to write (and at least every few milliseconds). Exits the
/// process quietly when stdout is broken.
fn writer_loop(rx: Receiver<Out>) {
    let stdout = io::stdout();
    let mut w = BufWriter::with_capacity(1 << 16, stdout.lock());
    let mut last_flush = Instant::now();
    loop {
        let msg = match rx.try_recv() {
            Ok(m) => m,
            Err(TryRecvError::Empty) => {
                if w.flush().is_err() {
                    quit(0);
                }
                last_flush = Instant::now();
                match rx.recv() {
                    Ok(m) => m,
                    Err(_) => break,
                }
            }
            Err(TryRecvError::Disconnected) => break,
        };
        match msg {
            Out::Lines(lines) => {
                if w.write_all(lines.as_bytes()).is_err() {
                    quit(0);
                }
                if last_flush.elapsed() >= Duration::from_millis(5) {
                    if w.flush().is_err() {
                        quit(0);
                    }
                    last_flush = Instant::now();
                }
            }
            Out::Flush(ack) => {
                if w.flush().is_err() {
                    quit(0);
                }
                last_flush = Instant::now();
                let _ = ack.send(());
            }
        }
    }
    if w.flush().is_err() {
        quit(0);
    }
}

/// A queued turn.
struct Turn {
    /// The user message as sent (for `--replay-user-messages`).
    message: Option<Value>,
    prompt: String,
}

/// The result of a `run` child, tagged with the run it belongs to.
struct RunDone {
    run: u64,
    output: Vec<u8>,
    status: io::Result<ExitStatus>,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Turn>,
    running: bool,
    eof: bool,
    run_done: Option<RunDone>,
    /// Answers to permission requests: (request id, allowed, message).
    answers: Vec<(String, bool, String)>,
}

struct Shared {
    state: Mutex<State>,
    cv: Condvar,
    abort: AtomicBool,
    out: SyncSender<Out>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn emit(&self, v: &Value) {
        let mut line = v.to_string();
        line.push('\n');
        self.send_lines(line);
    }

    fn send_lines(&self, lines: String) {
        // The writer only goes away by exiting the process.
        let _ = self.out.send(Out::Lines(lines));
    }

    fn flush(&self) {
        let (tx, rx) = mpsc::sync_channel(1);
        if self.out.send(Out::Flush(tx)).is_ok() {
            let _ = rx.recv();
        }
    }

    fn aborted(&self) -> bool {
        self.abort.load(Ordering::SeqCst)
    }

    /// Waits up to `d`; true if interrupted meanwhile.
    fn sleep(&self, d: Duration) -> bool {
        let deadline = Instant::now().checked_add(d);
        let mut st = self.lock();
        loop {
            if self.aborted() {
                return true;
            }
            let timeout = match deadline {
                Some(dl) => {
                    let now = Instant::now();
                    if now >= dl {
                        return false;
                    }
                    dl - now
                }
                None => Duration::from_secs(3600),
            };
            st = match self.cv.wait_timeout(st, timeout) {
                Ok((g, _)) => g,
                Err(e) => e.into_inner().0,
            };
        }
    }
}

/// The reader thread: turns stdin lines into queued turns and interrupts.
fn reader_loop(shared: Arc<Shared>) {
    let stdin = io::stdin();
    let mut stdin = stdin.lock();
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match stdin.read_until(b'\n', &mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                warn(&format!("reading stdin failed, treating it as closed: {e}"));
                break;
            }
        }
        let line = String::from_utf8_lossy(&buf);
        match parse_input_line(&line) {
            Input::Blank => {}
            Input::Invalid(e) => warn(&format!("ignoring a line that is not valid JSON: {e}")),
            Input::Ignored(why) => warn(&format!("ignoring {why}")),
            Input::User { message, text } => {
                let mut st = shared.lock();
                st.queue.push_back(Turn {
                    message: Some(message),
                    prompt: text,
                });
                shared.cv.notify_all();
            }
            Input::Answer {
                request_id,
                allow,
                message,
            } => {
                let mut st = shared.lock();
                st.answers.push((request_id, allow, message));
                shared.cv.notify_all();
            }
            Input::Control {
                request_id,
                subtype,
            } => {
                // Answer first so the answer comes before the aborted turn's result.
                shared.emit(&control_response(&request_id, &subtype));
                if subtype == "interrupt" {
                    let st = shared.lock();
                    if st.running || !st.queue.is_empty() {
                        shared.abort.store(true, Ordering::SeqCst);
                        shared.cv.notify_all();
                    }
                }
            }
        }
    }
    let mut st = shared.lock();
    st.eof = true;
    shared.cv.notify_all();
}

/// The session as the turns see it.
struct Session {
    shared: Arc<Shared>,
    session_id: String,
    model: String,
    replay: bool,
    started: bool,
    turns: u64,
    total_input: u64,
    total_output: u64,
    next_msg: u64,
    next_tool: u64,
    next_run: u64,
    /// How tool calls that ask are answered.
    permissions: Permissions,
}

/// How the agent's permission prompts are answered.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Permissions {
    /// Never asked: everything runs (`bypassPermissions`).
    Bypass,
    /// Asked on stdio (`--permission-prompt-tool stdio`).
    Host,
    /// Nobody to ask: denied.
    Nobody,
}

impl Permissions {
    fn of(args: &Args) -> Permissions {
        if args.skip_permissions || args.permission_mode.as_deref() == Some("bypassPermissions") {
            Permissions::Bypass
        } else if args.prompt_on_stdio {
            Permissions::Host
        } else {
            Permissions::Nobody
        }
    }
}

/// What a permission request came to.
enum Asked {
    Allowed,
    Denied(String),
    Aborted,
}

/// What a `run` came to.
enum RunResult {
    Finished { output: String, is_error: bool },
    Aborted,
}

impl Session {
    fn text(&mut self, text: &str, turn_output: &mut u64, last: &mut String) {
        self.next_msg += 1;
        let content = json!({"type": "text", "text": text});
        self.shared.emit(&assistant_event(
            self.next_msg,
            &self.model,
            &self.session_id,
            content,
        ));
        *turn_output += text.len() as u64;
        *last = text.to_string();
    }

    /// `flood N`: N text messages as fast as possible, sent to the writer in
    /// batches, stopping early when interrupted.
    fn flood(&mut self, n: u64, turn_output: &mut u64, last: &mut String) {
        let Some(template) = TextTemplate::new(&self.model, &self.session_id) else {
            for i in 1..=n {
                if self.aborted() {
                    return;
                }
                self.text(&format!("line {i}/{n}"), turn_output, last);
            }
            return;
        };
        let mut batch = String::new();
        let mut batch_start = Instant::now();
        let mut text = String::new();
        for i in 1..=n {
            if self.aborted() {
                break;
            }
            text.clear();
            let _ = write!(text, "line {i}/{n}");
            self.next_msg += 1;
            template.render(&mut batch, self.next_msg, &text);
            *turn_output += text.len() as u64;
            if batch.len() >= 32 * 1024 || batch_start.elapsed() >= Duration::from_millis(2) {
                self.shared.send_lines(std::mem::take(&mut batch));
                batch_start = Instant::now();
            }
        }
        if !batch.is_empty() {
            self.shared.send_lines(batch);
        }
        if !text.is_empty() {
            *last = text;
        }
    }

    fn save_prompt(&self, prompt: &str) {
        if !safe_file_stem(&self.session_id) {
            return;
        }
        let Some(home) = std::env::var_os("HOME") else {
            return;
        };
        let dir = std::path::Path::new(&home).join(".claude/projects/test-agent");
        if std::fs::create_dir_all(&dir).is_err() {
            return;
        }
        let line = json!({
            "type": "user",
            "sessionId": self.session_id,
            "message": {"role": "user", "content": prompt},
        });
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(format!("{}.jsonl", self.session_id)))
        {
            let _ = writeln!(f, "{line}");
        }
    }

    /// Runs `sh -c COMMAND` in its own process group, interruptibly.
    fn run_command(&mut self, command: &str) -> RunResult {
        let spawned = io::pipe().and_then(|(reader, writer)| {
            let mut cmd = Command::new("sh");
            cmd.arg("-c")
                .arg(command)
                .stdin(Stdio::null())
                .stdout(writer.try_clone()?)
                .stderr(writer)
                .process_group(0);
            let child = cmd.spawn()?;
            // `cmd` holds the write ends: drop it so the pipe closes with the child.
            drop(cmd);
            Ok((child, reader))
        });
        let (mut child, mut reader) = match spawned {
            Ok(x) => x,
            Err(e) => {
                return RunResult::Finished {
                    output: format!("test-agent: could not start sh: {e}"),
                    is_error: true,
                };
            }
        };
        self.next_run += 1;
        let run = self.next_run;
        let pgid = child.id();
        CHILD_PGID.store(pgid, Ordering::SeqCst);
        let shared = Arc::clone(&self.shared);
        let collector = thread::Builder::new().spawn(move || {
            let mut output = Vec::new();
            let _ = reader.read_to_end(&mut output);
            let status = child.wait();
            let mut st = shared.lock();
            st.run_done = Some(RunDone {
                run,
                output,
                status,
            });
            shared.cv.notify_all();
        });
        if let Err(e) = collector {
            kill_group(CHILD_PGID.swap(0, Ordering::SeqCst));
            return RunResult::Finished {
                output: format!("test-agent: could not start a thread: {e}"),
                is_error: true,
            };
        }
        let mut st = self.shared.lock();
        loop {
            if st.run_done.as_ref().is_some_and(|d| d.run == run) {
                CHILD_PGID.store(0, Ordering::SeqCst);
                let Some(done) = st.run_done.take() else {
                    continue;
                };
                let mut output = String::from_utf8_lossy(&done.output).into_owned();
                if output.ends_with('\n') {
                    output.pop();
                    if output.ends_with('\r') {
                        output.pop();
                    }
                }
                let is_error = match done.status {
                    Ok(s) => !s.success(),
                    Err(e) => {
                        if !output.is_empty() {
                            output.push('\n');
                        }
                        output.push_str(&format!("test-agent: waiting for sh failed: {e}"));
                        true
                    }
                };
                return RunResult::Finished { output, is_error };
            }
            if self.aborted() {
                drop(st);
                kill_group(CHILD_PGID.swap(0, Ordering::SeqCst));
                return RunResult::Aborted;
            }
            st = match self.shared.cv.wait(st) {
                Ok(g) => g,
                Err(e) => e.into_inner(),
            };
        }
    }

    fn aborted(&self) -> bool {
        self.shared.aborted()
    }

    /// Asks the host whether tool call `tool_id` may run, and waits for the answer
    /// (interruptibly).
    fn ask(&mut self, tool: &str, input: &Value, tool_id: &str) -> Asked {
        match self.permissions {
            Permissions::Bypass => return Asked::Allowed,
            Permissions::Nobody => {
                return Asked::Denied(format!(
                    "Claude requested permissions to use {tool}, but you haven't granted it yet."
                ));
            }
            Permissions::Host => {}
        }
        let request_id = format!("perm-{}-{tool_id}", self.session_id);
        self.shared.emit(&json!({
            "type": "control_request",
            "request_id": request_id,
            "request": {
                "subtype": "can_use_tool",
                "tool_name": tool,
                "display_name": tool,
                "input": input,
                "permission_suggestions": [],
                "tool_use_id": tool_id,
            },
        }));
        let mut st = self.shared.lock();
        loop {
            if let Some(i) = st.answers.iter().position(|(id, ..)| *id == request_id) {
                let (_, allow, message) = st.answers.remove(i);
                return if allow {
                    Asked::Allowed
                } else {
                    Asked::Denied(message)
                };
            }
            if self.aborted() {
                return Asked::Aborted;
            }
            if st.eof {
                return Asked::Denied("stdin closed before an answer came".into());
            }
            st = match self.shared.cv.wait(st) {
                Ok(g) => g,
                Err(e) => e.into_inner(),
            };
        }
    }

    /// Runs one turn, from the init event to the result event.
    fn run_turn(&mut self, turn: &Turn) {
        let start = Instant::now();
        self.turns += 1;
        if !self.started {
            self.started = true;
            let cwd = std::env::current_dir()
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default();
            self.shared
                .emit(&init_event(&cwd, &self.session_id, &self.model));
        }
        if self.replay
            && let Some(m) = &turn.message
        {
            self.shared.emit(m);
        }
        self.save_prompt(&turn.prompt);

        let input = turn.prompt.len() as u64;
        let mut output = 0u64;
        let mut last = String::new();
        let mut outcome = None;
        for instr in parse_script(&turn.prompt) {
            if self.aborted() {
                outcome = Some(Outcome::Aborted);
                break;
            }
            match instr {
                Instr::Say(_) | Instr::Echo(_) | Instr::Bad { .. } => {
                    let text = instr.text().unwrap_or_default();
                    self.text(&text, &mut output, &mut last);
                }
                Instr::Run(_) | Instr::Ask { .. } => {
                    let (tool, command, asks) = match instr {
                        Instr::Ask { tool, command } => (tool, command, true),
                        Instr::Run(command) => ("Bash".to_string(), command, false),
                        _ => unreachable!("matched above"),
                    };
                    self.next_tool += 1;
                    let tool_id = format!("toolu_{}", self.next_tool);
                    self.next_msg += 1;
                    let input = json!({"command": command});
                    let content = json!({
                        "type": "tool_use",
                        "id": tool_id,
                        "name": tool,
                        "input": input,
                    });
                    self.shared.emit(&assistant_event(
                        self.next_msg,
                        &self.model,
                        &self.session_id,
                        content,
                    ));
                    if asks {
                        match self.ask(&tool, &input, &tool_id) {
                            Asked::Allowed => {}
                            Asked::Denied(message) => {
                                self.shared.emit(&tool_result_event(
                                    &tool_id,
                                    &message,
                                    true,
                                    &self.session_id,
                                ));
                                continue;
                            }
                            Asked::Aborted => {
                                outcome = Some(Outcome::Aborted);
                                break;
                            }
                        }
                    }
                    match self.run_command(&command) {
                        RunResult::Finished {
                            output: text,
                            is_error,
                        } => {
                            output += text.len() as u64;
                            self.shared.emit(&tool_result_event(
                                &tool_id,
                                &text,
                                is_error,
                                &self.session_id,
                            ));
                        }
                        RunResult::Aborted => {
                            outcome = Some(Outcome::Aborted);
                            break;
                        }
                    }
                }
                Instr::Sleep(d) => {
                    if self.shared.sleep(d) {
                        outcome = Some(Outcome::Aborted);
                        break;
                    }
                }
                Instr::Flood(n) => {
                    self.flood(n, &mut output, &mut last);
                    if self.aborted() {
                        outcome = Some(Outcome::Aborted);
                        break;
                    }
                }
                Instr::Fail(text) => {
                    outcome = Some(Outcome::Failed(text));
                    break;
                }
                Instr::Exit(code) => {
                    self.shared.flush();
                    quit(code);
                }
            }
        }
        if outcome.is_none() && self.aborted() {
            outcome = Some(Outcome::Aborted);
        }
        let outcome = outcome.unwrap_or(Outcome::Done(last));
        self.total_input += input;
        self.total_output += output;
        let duration_ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.shared.emit(&result_event(&ResultInfo {
            outcome: &outcome,
            duration_ms,
            num_turns: self.turns,
            session_id: &self.session_id,
            input_tokens: input,
            output_tokens: output,
            total_input: self.total_input,
            total_output: self.total_output,
        }));
    }
}

fn main() {
    let args = parse_args(
        std::env::args_os()
            .skip(1)
            .map(|a: OsString| a.to_string_lossy().into_owned()),
    );
    if args.help || args.version {
        let text = if args.help {
            USAGE.to_string()
        } else {
            format!("{VERSION} (firstmate-test-agent)\n")
        };
        let mut out = io::stdout().lock();
        let _ = out.write_all(text.as_bytes()).and_then(|_| out.flush());
        return;
    }

    let (tx, rx) = mpsc::sync_channel::<Out>(4096);
    let writer = thread::spawn(move || writer_loop(rx));
    let shared = Arc::new(Shared {
        state: Mutex::new(State::default()),
        cv: Condvar::new(),
        abort: AtomicBool::new(false),
        out: tx,
    });
    let mut session = Session {
        shared: Arc::clone(&shared),
        session_id: args.resume.clone().unwrap_or_else(new_session_id),
        model: args.model.clone().unwrap_or_else(|| DEFAULT_MODEL.into()),
        replay: args.replay_user_messages,
        started: false,
        turns: 0,
        total_input: 0,
        total_output: 0,
        next_msg: 0,
        next_tool: 0,
        next_run: 0,
        permissions: Permissions::of(&args),
    };

    if args.stream_input {
        let reader_shared = Arc::clone(&shared);
        if let Err(e) = thread::Builder::new().spawn(move || reader_loop(reader_shared)) {
            warn(&format!("could not start the stdin reader: {e}"));
            quit(1);
        }
        loop {
            let turn = {
                let mut st = shared.lock();
                loop {
                    if let Some(t) = st.queue.pop_front() {
                        st.running = true;
                        break Some(t);
                    }
                    if st.eof {
                        break None;
                    }
                    st = match shared.cv.wait(st) {
                        Ok(g) => g,
                        Err(e) => e.into_inner(),
                    };
                }
            };
            let Some(turn) = turn else { break };
            session.run_turn(&turn);
            let mut st = shared.lock();
            st.running = false;
            shared.abort.store(false, Ordering::SeqCst);
        }
    } else {
        let prompt = match &args.prompt {
            Some(p) => p.clone(),
            None => {
                let mut p = String::new();
                if let Err(e) = io::stdin().lock().read_to_string(&mut p) {
                    warn(&format!("reading the prompt from stdin failed: {e}"));
                }
                p
            }
        };
        session.run_turn(&Turn {
            message: None,
            prompt,
        });
    }

    shared.flush();
    drop(session);
    drop(shared);
    let _ = writer.join();
    quit(0);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bad(line: &str) -> String {
        match parse_instruction(line) {
            Instr::Bad { line: l, why } => {
                assert_eq!(l, line);
                why
            }
            other => panic!("expected a bad instruction for {line:?}, got {other:?}"),
        }
    }

    #[test]
    fn parses_each_instruction() {
        assert_eq!(
            parse_instruction("say hi there"),
            Instr::Say("hi there".into())
        );
        assert_eq!(parse_instruction("say"), Instr::Say(String::new()));
        assert_eq!(
            parse_instruction("run echo $((6*7))"),
            Instr::Run("echo $((6*7))".into())
        );
        assert_eq!(
            parse_instruction("sleep 2s"),
            Instr::Sleep(Duration::from_secs(2))
        );
        assert_eq!(
            parse_instruction("sleep 500ms"),
            Instr::Sleep(Duration::from_millis(500))
        );
        assert_eq!(
            parse_instruction("sleep 10"),
            Instr::Sleep(Duration::from_secs(10))
        );
        assert_eq!(
            parse_instruction("sleep 0.25"),
            Instr::Sleep(Duration::from_millis(250))
        );
        assert_eq!(
            parse_instruction("sleep 1m 30s"),
            Instr::Sleep(Duration::from_secs(90))
        );
        assert_eq!(parse_instruction("flood 10000"), Instr::Flood(10000));
        assert_eq!(parse_instruction("fail boom"), Instr::Fail("boom".into()));
        assert_eq!(parse_instruction("exit 3"), Instr::Exit(3));
        assert_eq!(parse_instruction("exit 0"), Instr::Exit(0));
        assert_eq!(
            parse_instruction("hello world"),
            Instr::Echo("hello world".into())
        );
        assert_eq!(
            parse_instruction("sayonara"),
            Instr::Echo("sayonara".into())
        );
        assert_eq!(parse_instruction("say\tTAB"), Instr::Say("TAB".into()));
    }

    #[test]
    fn bad_arguments_are_reported() {
        assert!(!bad("sleep forever").is_empty());
        assert!(!bad("sleep").is_empty());
        assert!(!bad("sleep -1").is_empty());
        assert!(!bad("sleep 1e400").is_empty());
        assert!(!bad("sleep NaN").is_empty());
        assert!(!bad("flood x").is_empty());
        assert!(!bad("flood -1").is_empty());
        assert!(!bad("flood").is_empty());
        assert!(!bad("exit x").is_empty());
        assert!(!bad("exit 256").is_empty());
        assert!(!bad("exit -1").is_empty());
        assert!(!bad("exit").is_empty());
        assert!(!bad("run").is_empty());
        let text = parse_instruction("flood x").text().unwrap_or_default();
        assert!(
            text.starts_with("test-agent: bad instruction 'flood x': "),
            "{text}"
        );
    }

    #[test]
    fn instruction_texts() {
        assert_eq!(Instr::Say("a".into()).text().as_deref(), Some("a"));
        assert_eq!(
            Instr::Echo("x y".into()).text().as_deref(),
            Some("echo: x y")
        );
        assert_eq!(Instr::Flood(1).text(), None);
    }

    #[test]
    fn scripts_trim_and_skip_empty_lines() {
        let script = parse_script("  say one  \n\n\t\nrun true\r\nexit 3\n");
        assert_eq!(
            script,
            vec![
                Instr::Say("one".into()),
                Instr::Run("true".into()),
                Instr::Exit(3)
            ]
        );
        assert!(parse_script("").is_empty());
    }

    #[test]
    fn user_message_content_as_string_or_blocks() {
        let v = json!({"type":"user","message":{"role":"user","content":"say hi"}});
        assert_eq!(user_text(&v), Ok("say hi".into()));
        let v = json!({"type":"user","message":{"role":"user","content":[
            {"type":"text","text":"say a"},
            {"type":"image","source":{"type":"base64","media_type":"image/png","data":"iVBORw=="}},
            {"type":"text","text":"say b"}
        ]}});
        // Image blocks are described after the text, for the script to echo.
        assert_eq!(
            user_text(&v),
            Ok("say a\nsay b\n[image image/png, 4 bytes]".into())
        );
        let v = json!({"type":"user","message":{"role":"user","content":[]}});
        assert_eq!(user_text(&v), Ok(String::new()));
        assert!(user_text(&json!({"type":"user"})).is_err());
        assert!(user_text(&json!({"type":"user","message":{"content":3}})).is_err());
    }

    #[test]
    fn input_lines() {
        assert_eq!(parse_input_line("   \n"), Input::Blank);
        assert!(matches!(parse_input_line("not json"), Input::Invalid(_)));
        match parse_input_line(r#"{"type":"user","message":{"role":"user","content":"say x"}}"#) {
            Input::User { message, text } => {
                assert_eq!(text, "say x");
                assert_eq!(message["type"], "user");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            parse_input_line(
                r#"{"type":"control_request","request_id":"R1","request":{"subtype":"interrupt"}}"#
            ),
            Input::Control {
                request_id: json!("R1"),
                subtype: "interrupt".into()
            }
        );
        assert!(matches!(
            parse_input_line(r#"{"type":"keep_alive"}"#),
            Input::Ignored(_)
        ));
        assert!(matches!(parse_input_line("[1,2]"), Input::Ignored(_)));
        assert!(matches!(
            parse_input_line("{\"type\":\"user\"}"),
            Input::Ignored(_)
        ));
    }

    #[test]
    fn argv_multi_turn() {
        let a = parse_args([
            "-p",
            "--input-format",
            "stream-json",
            "--output-format",
            "stream-json",
            "--verbose",
            "--model",
            "opus",
            "--resume",
            "abc-123",
            "--replay-user-messages",
            "--dangerously-skip-permissions",
            "--permission-mode",
            "bypassPermissions",
            "--unknown-switch",
            "--unknown-valued",
            "v",
            "--x=y",
        ]);
        assert_eq!(
            a,
            Args {
                stream_input: true,
                model: Some("opus".into()),
                resume: Some("abc-123".into()),
                replay_user_messages: true,
                prompt: None,
                help: false,
                version: false,
                permission_mode: Some("bypassPermissions".into()),
                prompt_on_stdio: false,
                skip_permissions: true,
            }
        );
    }

    #[test]
    fn argv_one_shot() {
        let a = parse_args([
            "-p",
            "say hi",
            "--output-format",
            "stream-json",
            "--verbose",
        ]);
        assert_eq!(a.prompt.as_deref(), Some("say hi"));
        assert!(!a.stream_input);
        let a = parse_args(["--verbose", "say hi", "-p"]);
        assert_eq!(a.prompt.as_deref(), Some("say hi"));
        let a = parse_args(["-p", "--model=sonnet", "--", "--not-a-flag"]);
        assert_eq!(a.prompt.as_deref(), Some("--not-a-flag"));
        assert_eq!(a.model.as_deref(), Some("sonnet"));
        let a = parse_args(["--input-format", "text", "-p"]);
        assert!(!a.stream_input);
        assert_eq!(a.prompt, None);
        // A value flag at the end, without its value.
        let a = parse_args(["-p", "--model"]);
        assert_eq!(a.model, None);
        let a = parse_args(Vec::<String>::new());
        assert_eq!(a, Args::default());
        assert!(parse_args(["--help"]).help);
        assert!(parse_args(["-v"]).version);
    }

    #[test]
    fn result_shapes() {
        let base = |outcome: &Outcome| {
            result_event(&ResultInfo {
                outcome,
                duration_ms: 5,
                num_turns: 2,
                session_id: "S",
                input_tokens: 10,
                output_tokens: 4,
                total_input: 100,
                total_output: 200,
            })
        };
        let ok = base(&Outcome::Done("hi".into()));
        assert_eq!(ok["subtype"], "success");
        assert_eq!(ok["is_error"], false);
        assert_eq!(ok["result"], "hi");
        assert_eq!(ok["num_turns"], 2);
        assert_eq!(ok["usage"]["input_tokens"], 10);
        assert_eq!(ok["usage"]["output_tokens"], 4);
        assert_eq!(ok["total_cost_usd"], json!(0.0033));
        let failed = base(&Outcome::Failed("api down".into()));
        assert_eq!(failed["subtype"], "success");
        assert_eq!(failed["is_error"], true);
        assert_eq!(failed["result"], "api down");
        let aborted = base(&Outcome::Aborted);
        assert_eq!(aborted["subtype"], "error_during_execution");
        assert_eq!(aborted["is_error"], true);
        assert!(aborted.get("result").is_none());
    }

    #[test]
    fn text_template_matches_serde() {
        for (model, sid) in [("scripted", "S-1"), ("we\"ird\\model", "x")] {
            let t = TextTemplate::new(model, sid).expect("template");
            let mut out = String::new();
            t.render(&mut out, 7, "line 3/9");
            let expected =
                assistant_event(7, model, sid, json!({"type": "text", "text": "line 3/9"}));
            assert_eq!(out, format!("{expected}\n"));
        }
        assert!(TextTemplate::new(TextTemplate::ID, "s").is_none());
    }

    #[test]
    fn control_responses() {
        let r = control_response(&json!("R"), "interrupt");
        assert_eq!(
            r,
            json!({"type":"control_response","response":{"subtype":"success","request_id":"R"}})
        );
        assert_eq!(
            control_response(&json!("R"), "set_model")["response"]["subtype"],
            "error"
        );
    }

    #[test]
    fn session_ids_look_like_uuids() {
        let id = new_session_id();
        let parts: Vec<&str> = id.split('-').collect();
        assert_eq!(
            parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
            [8, 4, 4, 4, 12]
        );
        assert!(id.chars().all(|c| c == '-' || c.is_ascii_hexdigit()));
        assert!(parts[2].starts_with('4'));
        assert!(safe_file_stem(&id));
        assert!(!safe_file_stem("../etc"));
        assert!(!safe_file_stem(""));
    }

    #[test]
    fn ask_instructions_and_permission_flags() {
        assert_eq!(
            parse_instruction("ask Bash touch /workspace/x"),
            Instr::Ask {
                tool: "Bash".into(),
                command: "touch /workspace/x".into()
            }
        );
        assert!(matches!(parse_instruction("ask Bash"), Instr::Bad { .. }));
        assert!(matches!(parse_instruction("ask"), Instr::Bad { .. }));
        let ask = parse_args([
            "-p",
            "--permission-mode",
            "default",
            "--permission-prompt-tool",
            "stdio",
        ]);
        assert_eq!(Permissions::of(&ask), Permissions::Host);
        let bypass = parse_args(["-p", "--permission-mode", "bypassPermissions"]);
        assert_eq!(Permissions::of(&bypass), Permissions::Bypass);
        assert_eq!(
            Permissions::of(&parse_args(["-p", "--dangerously-skip-permissions"])),
            Permissions::Bypass
        );
        assert_eq!(Permissions::of(&parse_args(["-p"])), Permissions::Nobody);
    }

    #[test]
    fn permission_answers_are_read() {
        let line = r#"{"type":"control_response","response":{"subtype":"success","request_id":"perm-1","response":{"behavior":"deny","message":"no"}}}"#;
        match parse_input_line(line) {
            Input::Answer {
                request_id,
                allow,
                message,
            } => {
                assert_eq!(
                    (request_id.as_str(), allow, message.as_str()),
                    ("perm-1", false, "no")
                );
            }
            _ => panic!("not an answer"),
        }
        let line = r#"{"type":"control_response","response":{"subtype":"success","request_id":"perm-2","response":{"behavior":"allow","updatedInput":{}}}}"#;
        assert!(matches!(
            parse_input_line(line),
            Input::Answer { allow: true, .. }
        ));
    }
}
