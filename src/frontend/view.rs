//! The neutral view of a session thread: what each event shows, before any front end's
//! markup. Pure. [`Renderer`] turns events into [`Item`]s (a block of the agent's
//! markdown, a line, a note, a tool call with its outcome and folded output); each chat
//! front end turns items into its own messages (`matrix/render.rs`: HTML;
//! `discord/render.rs`: Discord's markdown). The cutting rules (how much tool output a
//! thread shows, how long one block may be) live here, so every front end shows the same.

use std::collections::HashMap;

use pulldown_cmark::{Event, Options, Parser};

use crate::event::{EventBody, SessionState};
use crate::protocol::{AgentEvent, TurnOutcome};
use crate::store::SessionRecord;

/// Lines of tool output shown in the thread; the rest is in `logs`.
const TOOL_OUTPUT_LINES: usize = 30;
/// Characters of tool output shown in the thread.
const TOOL_OUTPUT_CHARS: usize = 3000;
/// The most a single block may hold (characters); longer text is cut, with a note that
/// `logs` has all of it. Keeps every Matrix event well below 64 KiB, even encrypted.
pub const BLOCK_MAX_CHARS: usize = 12_000;

/// One unit of a thread's output. A front end never splits one across messages unless
/// its own limit forces it (Discord's 2000 characters), and then keeps code fences whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// One top-level block of the agent's markdown (a paragraph, a list, a fenced code
    /// block...), its source text, already cut to [`BLOCK_MAX_CHARS`].
    Markdown(String),
    /// A line from firstmate, shown as plain text (a state change, unreadable output).
    Line(String),
    /// A note from firstmate, shown emphasised (a notice, the end of a turn).
    Note(String),
    /// A tool call; a later item with the same key replaces it once its result is in.
    Tool(Tool),
    /// A tool call waiting for a person's approval, or answered: a message of its own
    /// (with the front end's answer controls while it waits), edited once answered.
    Approval(Approval),
}

/// An approval as the thread shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approval {
    pub id: String,
    pub tool: String,
    /// The key argument, one line (may be empty).
    pub summary: String,
    /// A longer command, a diff, the start of a file (see [`crate::approval::preview`]).
    pub preview: Option<String>,
    /// Once answered: who answered and how, in one line ([`crate::approval::Answered::line`]).
    pub answer: Option<String>,
}

impl Approval {
    /// The message's first line: "🔐 Approve Bash: touch x?" while it waits, "Bash:
    /// touch x" once answered.
    pub fn head(&self) -> String {
        let call = if self.summary.is_empty() {
            self.tool.clone()
        } else {
            format!("{}: {}", self.tool, self.summary)
        };
        match self.answer {
            None => format!("🔐 Approve {call}?"),
            Some(_) => call,
        }
    }
}

/// The key of an approval's item: its answer replaces the question.
pub fn approval_key(id: &str) -> String {
    format!("approval:{id}")
}

/// A tool call as the thread shows it: one line, with the output folded below it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tool {
    pub name: String,
    /// The key argument, one line, cut to 200 characters (may be empty).
    pub summary: String,
    /// `None` while the call runs.
    pub result: Option<ToolResult>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolResult {
    pub failed: bool,
    /// Lines of output in all.
    pub lines: usize,
    /// The first lines, within the thread's limits (empty when there was no output).
    pub shown: String,
    /// Lines left out of `shown`; `logs` has them.
    pub hidden: usize,
}

impl ToolResult {
    /// "ok", "ok, 1 line", "ok, 12 lines" or "failed".
    pub fn outcome(&self) -> String {
        match (self.failed, self.lines) {
            (true, _) => "failed".to_string(),
            (false, 0) => "ok".to_string(),
            (false, 1) => "ok, 1 line".to_string(),
            (false, n) => format!("ok, {n} lines"),
        }
    }

    /// The line under folded output that says how much more `logs` has, if anything was
    /// left out.
    pub fn more(&self) -> Option<String> {
        let what = if self.failed {
            "error output"
        } else {
            "output"
        };
        (self.hidden > 0)
            .then(|| format!("… {} more line(s): `logs` has the full {what}", self.hidden))
    }
}

/// An item, and the key under which a later item replaces it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keyed {
    pub key: Option<String>,
    pub item: Item,
}

/// What one event means for the thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum View {
    /// Nothing to show (stderr, protocol bookkeeping, states the status message shows).
    Nothing,
    /// A turn starts: its output goes into a new message, below the prompt.
    TurnStart,
    Items(Vec<Keyed>),
}

fn plain(item: Item) -> View {
    View::Items(vec![Keyed { key: None, item }])
}

/// Renders a session's events in order. Remembers the tool calls it saw, so a tool's
/// result is shown on the same line as its call.
#[derive(Debug, Default)]
pub struct Renderer {
    tools: HashMap<String, (String, String)>,
}

impl Renderer {
    pub fn render(&mut self, body: &EventBody) -> View {
        match body {
            EventBody::State { state, detail } => {
                let detail = detail.as_deref().filter(|d| !d.is_empty());
                let line = match (state, detail) {
                    (SessionState::Stopped, Some(d)) => format!("⏹ stopped: {d}"),
                    (SessionState::Stopped, None) => "⏹ stopped".to_string(),
                    (SessionState::Failed, Some(d)) => format!("✗ failed: {d}"),
                    (SessionState::Failed, None) => "✗ failed".to_string(),
                    (SessionState::Queued, Some(d)) => format!("⏳ queued: {d}"),
                    _ => return View::Nothing,
                };
                plain(Item::Line(line))
            }
            EventBody::Prompt { .. } => View::TurnStart,
            EventBody::Stderr { .. } => View::Nothing,
            EventBody::Notice { text } => plain(Item::Note(cut(text, BLOCK_MAX_CHARS))),
            EventBody::Approval {
                id,
                tool,
                summary,
                preview,
                answer,
            } => View::Items(vec![Keyed {
                key: Some(approval_key(id)),
                item: Item::Approval(Approval {
                    id: id.clone(),
                    tool: tool.clone(),
                    summary: summary.clone(),
                    preview: preview.clone(),
                    answer: answer.as_ref().map(|a| a.line()),
                }),
            }]),
            EventBody::Agent { event } => self.agent(event),
        }
    }

    fn agent(&mut self, event: &AgentEvent) -> View {
        match event {
            AgentEvent::Started { .. }
            | AgentEvent::Unknown { .. }
            | AgentEvent::PermissionRequest { .. } => View::Nothing,
            AgentEvent::Text { text } => {
                let items: Vec<Keyed> = markdown_blocks(text)
                    .into_iter()
                    .map(|source| Keyed {
                        key: None,
                        item: Item::Markdown(source),
                    })
                    .collect();
                if items.is_empty() {
                    View::Nothing
                } else {
                    View::Items(items)
                }
            }
            AgentEvent::ToolUse {
                id, name, summary, ..
            } => {
                self.tools
                    .insert(id.clone(), (name.clone(), summary.clone()));
                View::Items(vec![Keyed {
                    key: Some(id.clone()),
                    item: Item::Tool(tool(name, summary, None)),
                }])
            }
            AgentEvent::ToolResult {
                tool_use_id,
                output,
                is_error,
            } => {
                let (name, summary) = self
                    .tools
                    .remove(tool_use_id)
                    .unwrap_or_else(|| ("tool".to_string(), String::new()));
                View::Items(vec![Keyed {
                    key: Some(tool_use_id.clone()),
                    item: Item::Tool(tool(&name, &summary, Some((output, *is_error)))),
                }])
            }
            AgentEvent::TurnEnd {
                outcome,
                usage,
                cost_usd,
                ..
            } => {
                let tokens = format!(
                    "{} in, {} out",
                    usage.input_tokens + usage.cache_read_tokens + usage.cache_write_tokens,
                    usage.output_tokens
                );
                let cost = cost_usd.map(|c| format!(", ${c:.4}")).unwrap_or_default();
                plain(Item::Note(match outcome {
                    TurnOutcome::Done => format!("✓ done ({tokens}{cost})"),
                    TurnOutcome::Error { message } => format!("✗ error: {message}"),
                    TurnOutcome::Interrupted => "⏸ interrupted".to_string(),
                }))
            }
            AgentEvent::Malformed { line, error } => plain(Item::Line(cut(
                &format!("! unreadable agent output ({error}): {line}"),
                500,
            ))),
        }
    }
}

/// A tool call with, once known, its outcome and the first lines of its output.
pub fn tool(name: &str, summary: &str, result: Option<(&str, bool)>) -> Tool {
    let summary = cut(summary.lines().next().unwrap_or(""), 200);
    let result = result.map(|(output, failed)| {
        let output = output.trim_end_matches('\n');
        let lines = if output.is_empty() {
            0
        } else {
            output.lines().count()
        };
        let (shown, hidden) = truncate_output(output);
        ToolResult {
            failed,
            lines,
            shown,
            hidden,
        }
    });
    Tool {
        name: name.to_string(),
        summary,
        result,
    }
}

/// The first lines of a tool's output, within the thread's limits, and how many lines
/// were left out.
fn truncate_output(output: &str) -> (String, usize) {
    let total = output.lines().count();
    let mut shown = String::new();
    let mut n = 0;
    for line in output.lines() {
        if n == TOOL_OUTPUT_LINES || shown.len() + line.len() > TOOL_OUTPUT_CHARS {
            break;
        }
        if n > 0 {
            shown.push('\n');
        }
        shown.push_str(&cut(line, TOOL_OUTPUT_CHARS));
        n += 1;
    }
    (shown, total - n)
}

/// Cuts `text` to at most `max` characters, saying so.
pub fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut s: String = text.chars().take(max).collect();
    s.push_str(" … (cut; `logs` has all of it)");
    s
}

/// The markdown extensions every front end reads the agent's text with.
pub fn markdown_options() -> Options {
    Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH | Options::ENABLE_TASKLISTS
}

/// Cuts markdown into the source of its top-level blocks (paragraphs, lists, quotes,
/// fenced code...), each cut to [`BLOCK_MAX_CHARS`] (a long code block stays a code
/// block: it is closed again after the cut).
pub fn markdown_blocks(text: &str) -> Vec<String> {
    let mut ranges = Vec::new();
    let mut depth = 0usize;
    let mut start = 0usize;
    for (ev, range) in Parser::new_ext(text, markdown_options()).into_offset_iter() {
        match ev {
            Event::Start(_) => {
                if depth == 0 {
                    start = range.start;
                }
                depth += 1;
            }
            Event::End(_) => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    ranges.push(start..range.end);
                }
            }
            _ if depth == 0 => ranges.push(range),
            _ => {}
        }
    }
    ranges
        .into_iter()
        .map(|r| text[r].trim_end_matches('\n'))
        .filter(|source| !source.trim().is_empty())
        .map(markdown_block)
        .collect()
}

fn markdown_block(source: &str) -> String {
    if source.chars().count() <= BLOCK_MAX_CHARS {
        return source.to_string();
    }
    let kept: String = source.chars().take(BLOCK_MAX_CHARS).collect();
    let fenced = kept.trim_start().starts_with("```") || kept.trim_start().starts_with("~~~");
    let mut out = kept.clone();
    if fenced {
        // Close the fence the cut left open, with a fence as long as the opening one.
        let opening: String = kept
            .trim_start()
            .chars()
            .take_while(|c| *c == '`' || *c == '~')
            .collect();
        out.push('\n');
        out.push_str(&opening);
    }
    out.push_str("\n… (cut; `logs` has all of it)");
    out
}

/// The status message at the top of a session's thread: a head line and one fact a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub id: String,
    pub state: String,
    /// [`crate::frontend::render::status_text`]: one fact a line.
    pub facts: String,
}

impl Status {
    pub fn of(s: &SessionRecord) -> Status {
        Status {
            id: s.id.clone(),
            state: s.state.to_string(),
            facts: crate::frontend::render::status_text(s),
        }
    }

    /// "firstmate session ID · STATE".
    pub fn head(&self) -> String {
        format!("firstmate session {} · {}", self.id, self.state)
    }
}

/// What the status message shows that is worth an edit (everything but the age, which
/// changes every second).
pub fn status_key(s: &SessionRecord) -> String {
    format!(
        "{}|{:?}|{}|{}|{}|{}|{}|{}|{:.6}",
        s.state,
        s.state_detail,
        s.turns,
        s.usage.input_tokens,
        s.usage.output_tokens,
        s.usage.cache_read_tokens,
        s.usage.cache_write_tokens,
        s.image,
        s.cost_usd
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Usage;
    use serde_json::json;

    fn items(v: &View) -> Vec<Item> {
        match v {
            View::Items(i) => i.iter().map(|k| k.item.clone()).collect(),
            _ => Vec::new(),
        }
    }

    #[test]
    fn markdown_is_cut_into_top_level_blocks_and_a_code_block_stays_whole() {
        let text = "Hello **world**.\n\n```rust\nfn main() {}\n\nlet x = 1;\n```\n\n- a\n- b\n";
        let blocks = markdown_blocks(text);
        assert_eq!(
            blocks,
            [
                "Hello **world**.",
                "```rust\nfn main() {}\n\nlet x = 1;\n```",
                "- a\n- b"
            ]
        );
    }

    #[test]
    fn an_overlong_code_block_is_cut_and_closed() {
        let code = format!("```\n{}\n```", "x\n".repeat(BLOCK_MAX_CHARS));
        let blocks = markdown_blocks(&code);
        assert_eq!(blocks.len(), 1);
        assert!(blocks[0].chars().count() < BLOCK_MAX_CHARS + 100);
        assert!(blocks[0].ends_with("\n```\n… (cut; `logs` has all of it)"));
        assert_eq!(blocks[0].matches("```").count(), 2);
    }

    #[test]
    fn a_tool_result_completes_its_call_under_the_same_key() {
        let mut r = Renderer::default();
        let call = r.render(&EventBody::Agent {
            event: AgentEvent::ToolUse {
                id: "t1".into(),
                name: "Bash".into(),
                summary: "echo hi\nmore".into(),
                input: json!({}),
            },
        });
        assert_eq!(
            items(&call),
            [Item::Tool(Tool {
                name: "Bash".into(),
                summary: "echo hi".into(),
                result: None
            })]
        );
        let done = r.render(&EventBody::Agent {
            event: AgentEvent::ToolResult {
                tool_use_id: "t1".into(),
                output: "hi\n".into(),
                is_error: false,
            },
        });
        let View::Items(k) = &done else {
            panic!("{done:?}")
        };
        assert_eq!(k[0].key.as_deref(), Some("t1"));
        let Item::Tool(t) = &k[0].item else {
            panic!("{k:?}")
        };
        assert_eq!(t.summary, "echo hi");
        let res = t.result.as_ref().unwrap();
        assert_eq!(
            (res.outcome(), res.shown.as_str()),
            ("ok, 1 line".into(), "hi")
        );
        assert_eq!(res.more(), None);
    }

    #[test]
    fn long_tool_output_is_truncated_and_counted() {
        let out: String = (1..=100).map(|i| format!("line {i}\n")).collect();
        let t = tool("Bash", "seq", Some((&out, false)));
        let r = t.result.unwrap();
        assert_eq!(r.lines, 100);
        assert_eq!(r.hidden, 70);
        assert!(r.shown.ends_with("line 30"));
        assert_eq!(
            r.more().unwrap(),
            "… 70 more line(s): `logs` has the full output"
        );
        let failed = tool("Bash", "false", Some(("", true))).result.unwrap();
        assert_eq!(failed.outcome(), "failed");
    }

    #[test]
    fn turn_ends_and_session_ends_are_notes_and_lines() {
        let mut r = Renderer::default();
        let end = r.render(&EventBody::Agent {
            event: AgentEvent::TurnEnd {
                outcome: TurnOutcome::Done,
                usage: Usage {
                    input_tokens: 3,
                    output_tokens: 4,
                    ..Usage::default()
                },
                cost_usd: Some(0.5),
                agent_session_id: None,
            },
        });
        assert_eq!(
            items(&end),
            [Item::Note("✓ done (3 in, 4 out, $0.5000)".into())]
        );
        let stopped = r.render(&EventBody::State {
            state: SessionState::Stopped,
            detail: Some("by @a:x".into()),
        });
        assert_eq!(items(&stopped), [Item::Line("⏹ stopped: by @a:x".into())]);
        let running = r.render(&EventBody::State {
            state: SessionState::Running,
            detail: None,
        });
        assert_eq!(running, View::Nothing);
    }
}
