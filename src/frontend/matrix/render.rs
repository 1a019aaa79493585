//! Session events to Matrix message bodies. Pure: no I/O, no matrix-sdk types, only the
//! JSON contents the Matrix spec defines (`m.room.message` with a plain `body` and an HTML
//! `formatted_body`, thread and replacement relations).
//!
//! Output is cut into [`Block`]s, the units the outbox packs into messages: a paragraph,
//! a list or a fenced code block of the agent's markdown, one tool call, the end of a
//! turn. A block is never split across messages, so neither is a code block.

use std::collections::HashMap;

use pulldown_cmark::{Event, Options, Parser};
use serde_json::{Value, json};

use crate::event::{EventBody, SessionState};
use crate::frontend::render as shared;
use crate::protocol::{AgentEvent, TurnOutcome};
use crate::store::SessionRecord;

/// Lines of tool output shown in the thread; the rest is in `logs`.
const TOOL_OUTPUT_LINES: usize = 30;
/// Characters of tool output shown in the thread.
const TOOL_OUTPUT_CHARS: usize = 3000;
/// The most a single block may hold (plain text); longer text is cut, with a note that
/// `logs` has all of it. Keeps every event well below Matrix's 64 KiB, even encrypted.
pub const BLOCK_MAX_CHARS: usize = 12_000;

pub use crate::frontend::outbox::{Block, Body, Rendered, join};

/// Renders a session's events in order. Remembers the tool calls it saw, so a tool's
/// result can be shown on the same line as its call.
#[derive(Debug, Default)]
pub struct Renderer {
    tools: HashMap<String, (String, String)>,
}

impl Renderer {
    pub fn render(&mut self, body: &EventBody) -> Rendered {
        match body {
            EventBody::State { state, detail } => {
                let detail = detail.as_deref().filter(|d| !d.is_empty());
                let line = match (state, detail) {
                    (SessionState::Stopped, Some(d)) => format!("⏹ stopped: {d}"),
                    (SessionState::Stopped, None) => "⏹ stopped".to_string(),
                    (SessionState::Failed, Some(d)) => format!("✗ failed: {d}"),
                    (SessionState::Failed, None) => "✗ failed".to_string(),
                    (SessionState::Queued, Some(d)) => format!("⏳ queued: {d}"),
                    _ => return Rendered::Nothing,
                };
                Rendered::Blocks(vec![Block::new(Body::text(&line))])
            }
            EventBody::Prompt { .. } => Rendered::TurnStart,
            EventBody::Stderr { .. } => Rendered::Nothing,
            EventBody::Notice { text } => Rendered::Blocks(vec![Block::new(notice(text))]),
            EventBody::Agent { event } => self.agent(event),
        }
    }

    fn agent(&mut self, event: &AgentEvent) -> Rendered {
        match event {
            AgentEvent::Started { .. } | AgentEvent::Unknown { .. } => Rendered::Nothing,
            AgentEvent::Text { text } => {
                let blocks = markdown_blocks(text);
                if blocks.is_empty() {
                    Rendered::Nothing
                } else {
                    Rendered::Blocks(blocks)
                }
            }
            AgentEvent::ToolUse {
                id, name, summary, ..
            } => {
                self.tools
                    .insert(id.clone(), (name.clone(), summary.clone()));
                Rendered::Blocks(vec![Block::keyed(id, tool_line(name, summary, None))])
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
                Rendered::Blocks(vec![Block::keyed(
                    tool_use_id,
                    tool_line(&name, &summary, Some((output, *is_error))),
                )])
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
                let line = match outcome {
                    TurnOutcome::Done => format!("✓ done ({tokens}{cost})"),
                    TurnOutcome::Error { message } => format!("✗ error: {message}"),
                    TurnOutcome::Interrupted => "⏸ interrupted".to_string(),
                };
                Rendered::Blocks(vec![Block::new(Body::new(
                    line.clone(),
                    format!("<p><em>{}</em></p>", escape(&line)),
                ))])
            }
            AgentEvent::Malformed { line, error } => {
                Rendered::Blocks(vec![Block::new(Body::text(&cut(
                    &format!("! unreadable agent output ({error}): {line}"),
                    500,
                )))])
            }
        }
    }
}

fn notice(text: &str) -> Body {
    let text = cut(text, BLOCK_MAX_CHARS);
    Body::new(
        text.clone(),
        format!("<p><em>{}</em></p>", lines_html(&text)),
    )
}

/// One compact line for a tool call: its name, its key argument, and (once known) its
/// outcome, with the output folded below it.
pub fn tool_line(name: &str, summary: &str, result: Option<(&str, bool)>) -> Body {
    let summary = cut(summary.lines().next().unwrap_or(""), 200);
    let mut plain = format!("▸ {name}");
    let mut html = format!("▸ <b>{}</b>", escape(name));
    if !summary.is_empty() {
        plain.push_str(&format!(" {summary}"));
        html.push_str(&format!(" <code>{}</code>", escape(&summary)));
    }
    let Some((output, is_error)) = result else {
        plain.push_str(" …");
        html.push_str(" …");
        return Body::new(plain, format!("<p>{html}</p>"));
    };
    let output = output.trim_end_matches('\n');
    let lines = if output.is_empty() {
        0
    } else {
        output.lines().count()
    };
    let outcome = match (is_error, lines) {
        (true, _) => "failed".to_string(),
        (false, 0) => "ok".to_string(),
        (false, 1) => "ok, 1 line".to_string(),
        (false, n) => format!("ok, {n} lines"),
    };
    plain.push_str(&format!(" → {outcome}"));
    html.push_str(&format!(" → {}", escape(&outcome)));
    if lines == 0 {
        return Body::new(plain, format!("<p>{html}</p>"));
    }
    let (shown, hidden) = truncate_output(output);
    let more = if hidden > 0 {
        format!("\n… {hidden} more line(s): `logs` has the full output")
    } else {
        String::new()
    };
    plain.push('\n');
    plain.push_str(&indent(&shown));
    plain.push_str(&more);
    let summary_text = if is_error { "error output" } else { "output" };
    html = format!(
        "<details><summary>{html}</summary><pre><code>{}</code></pre>{}</details>",
        escape(&shown),
        if hidden > 0 {
            format!(
                "<p><em>… {hidden} more line(s): <code>logs</code> has the full {summary_text}</em></p>"
            )
        } else {
            String::new()
        }
    );
    Body::new(plain, html)
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

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Cuts `text` to at most `max` characters, saying so.
fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut s: String = text.chars().take(max).collect();
    s.push_str(" … (cut; `logs` has all of it)");
    s
}

pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Escaped text with its line breaks kept.
pub fn lines_html(s: &str) -> String {
    escape(s).replace('\n', "<br>\n")
}

fn markdown_options() -> Options {
    Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH | Options::ENABLE_TASKLISTS
}

/// Renders markdown to HTML. Raw HTML in the text is shown as text, not passed on.
pub fn markdown_html(text: &str) -> String {
    let events = Parser::new_ext(text, markdown_options()).map(|ev| match ev {
        Event::Html(s) | Event::InlineHtml(s) => Event::Text(s),
        ev => ev,
    });
    let mut html = String::new();
    pulldown_cmark::html::push_html(&mut html, events);
    html.trim_end().to_string()
}

/// Cuts markdown into its top-level blocks (paragraphs, lists, quotes, fenced code...),
/// each rendered to HTML. The plain body of a block is its markdown source.
pub fn markdown_blocks(text: &str) -> Vec<Block> {
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
    let mut blocks = Vec::new();
    for r in ranges {
        let source = text[r].trim_end_matches('\n');
        if source.trim().is_empty() {
            continue;
        }
        blocks.push(Block::new(markdown_block(source)));
    }
    blocks
}

/// One block of markdown, cut to [`BLOCK_MAX_CHARS`] (a long code block stays a code
/// block: it is closed again after the cut).
fn markdown_block(source: &str) -> Body {
    if source.chars().count() <= BLOCK_MAX_CHARS {
        return Body::new(source, markdown_html(source));
    }
    let kept: String = source.chars().take(BLOCK_MAX_CHARS).collect();
    let fenced = kept.trim_start().starts_with("```") || kept.trim_start().starts_with("~~~");
    let mut plain = kept.clone();
    if fenced {
        // Close the fence the cut left open, with a fence as long as the opening one.
        let opening: String = kept
            .trim_start()
            .chars()
            .take_while(|c| *c == '`' || *c == '~')
            .collect();
        plain.push('\n');
        plain.push_str(&opening);
    }
    plain.push_str("\n… (cut; `logs` has all of it)");
    let html = markdown_html(&plain);
    Body::new(plain, html)
}

/// The status message at the top of a session's thread.
pub fn status(s: &SessionRecord) -> Body {
    let head = format!("firstmate session {} · {}", s.id, s.state);
    let facts = shared::status_text(s);
    let plain = format!("{head}\n{facts}");
    let html = format!(
        "<p><b>firstmate session <code>{}</code></b> · <b>{}</b></p>\n<p>{}</p>",
        escape(&s.id),
        escape(s.state.as_str()),
        lines_html(&facts)
    );
    Body::new(plain, html)
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

/// The answer to `help`.
pub fn help(prefix: &str) -> Body {
    let text = crate::command::help_text().replace("!fm", prefix);
    Body::new(
        text.clone(),
        format!("<pre><code>{}</code></pre>", escape(text.trim_end())),
    )
}

/// The answer to `list`.
pub fn list(sessions: &[SessionRecord], prefix: &str) -> Body {
    if sessions.is_empty() {
        return Body::text(&format!(
            "no sessions in this room yet; start one with `{prefix} new PROMPT`"
        ));
    }
    let lines: Vec<String> = sessions.iter().map(shared::list_line).collect();
    let text = lines.join("\n");
    Body::new(
        text.clone(),
        format!("<pre><code>{}</code></pre>", escape(&text)),
    )
}

/// The answer to a command that could not be done.
pub fn problem(message: &str) -> Body {
    Body::new(
        format!("⚠ {message}"),
        format!("<p>⚠ {}</p>", lines_html(message)),
    )
}

/// `m.room.message` content of msgtype `m.text` or `m.notice`.
pub fn message(body: &Body, notice: bool) -> Value {
    json!({
        "msgtype": if notice { "m.notice" } else { "m.text" },
        "body": body.plain,
        "format": "org.matrix.custom.html",
        "formatted_body": body.html,
    })
}

/// A message in the thread rooted at `root` (with the reply fallback for clients that
/// do not show threads).
pub fn in_thread(mut content: Value, root: &str) -> Value {
    content["m.relates_to"] = json!({
        "rel_type": "m.thread",
        "event_id": root,
        "is_falling_back": true,
        "m.in_reply_to": { "event_id": root },
    });
    content
}

/// A reply to `event` outside any thread.
pub fn reply_to(mut content: Value, event: &str) -> Value {
    content["m.relates_to"] = json!({ "m.in_reply_to": { "event_id": event } });
    content
}

/// An edit that replaces the content of `event` with `new_content` (a message without
/// relation).
pub fn replacement(new_content: Value, event: &str) -> Value {
    let mut content = new_content.clone();
    if let Some(b) = content.get("body").and_then(Value::as_str) {
        content["body"] = json!(format!("* {b}"));
    }
    if let Some(h) = content.get("formatted_body").and_then(Value::as_str) {
        content["formatted_body"] = json!(format!("* {h}"));
    }
    content["m.new_content"] = new_content;
    content["m.relates_to"] = json!({ "rel_type": "m.replace", "event_id": event });
    content
}

/// The text of an incoming message without a rich-reply fallback (the `> <@user> ...`
/// lines some clients put before the reply).
pub fn strip_reply_fallback(body: &str) -> &str {
    if !body.starts_with("> ") {
        return body;
    }
    let mut rest = body;
    while let Some(line_end) = rest.find('\n') {
        let line = &rest[..line_end];
        if line.starts_with("> ") || line == ">" {
            rest = &rest[line_end + 1..];
        } else {
            break;
        }
    }
    rest.strip_prefix('\n').unwrap_or(rest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Usage;

    fn render(body: EventBody) -> Rendered {
        Renderer::default().render(&body)
    }

    fn plain(r: &Rendered) -> Vec<String> {
        match r {
            Rendered::Blocks(b) => b.iter().map(|b| b.body.plain.clone()).collect(),
            _ => Vec::new(),
        }
    }

    #[test]
    fn markdown_becomes_html_blocks_and_a_code_block_stays_whole() {
        let text = "Hello **world**.\n\n```rust\nfn main() {}\n\nlet x = 1;\n```\n\n- a\n- b\n";
        let blocks = markdown_blocks(text);
        assert_eq!(blocks.len(), 3, "{blocks:#?}");
        assert_eq!(blocks[0].body.plain, "Hello **world**.");
        assert_eq!(blocks[0].body.html, "<p>Hello <strong>world</strong>.</p>");
        assert!(blocks[1].body.plain.starts_with("```rust"));
        assert!(blocks[1].body.plain.ends_with("```"));
        assert!(
            blocks[1].body.html.contains(
                "<pre><code class=\"language-rust\">fn main() {}\n\nlet x = 1;\n</code></pre>"
            ),
            "{}",
            blocks[1].body.html
        );
        assert!(blocks[2].body.html.starts_with("<ul>"));
    }

    #[test]
    fn raw_html_from_the_agent_is_escaped() {
        let blocks = markdown_blocks("<script>alert(1)</script>\n\nhi <b>x</b>");
        let html = join(&blocks).html;
        assert!(
            !html.contains("<script>") && !html.contains("<b>"),
            "{html}"
        );
        assert!(html.contains("&lt;script&gt;"), "{html}");
    }

    #[test]
    fn an_overlong_code_block_is_cut_and_closed() {
        let code = format!("```\n{}\n```", "x\n".repeat(BLOCK_MAX_CHARS));
        let blocks = markdown_blocks(&code);
        assert_eq!(blocks.len(), 1);
        let b = &blocks[0].body;
        assert!(b.plain.len() < BLOCK_MAX_CHARS + 100);
        assert!(
            b.plain.contains("\n```\n… (cut"),
            "{}",
            &b.plain[b.plain.len() - 60..]
        );
        assert_eq!(b.html.matches("<pre>").count(), 1);
    }

    #[test]
    fn a_tool_call_is_one_line_that_its_result_completes() {
        let mut r = Renderer::default();
        let call = r.render(&EventBody::Agent {
            event: AgentEvent::ToolUse {
                id: "t1".into(),
                name: "Bash".into(),
                summary: "echo $((6*7))".into(),
                input: json!({}),
            },
        });
        assert_eq!(plain(&call), ["▸ Bash echo $((6*7)) …"]);
        let res = r.render(&EventBody::Agent {
            event: AgentEvent::ToolResult {
                tool_use_id: "t1".into(),
                output: "42\n".into(),
                is_error: false,
            },
        });
        let Rendered::Blocks(b) = &res else {
            panic!("{res:?}")
        };
        assert_eq!(b[0].key.as_deref(), Some("t1"));
        assert_eq!(b[0].body.plain, "▸ Bash echo $((6*7)) → ok, 1 line\n    42");
        assert!(b[0].body.html.starts_with("<details><summary>▸ <b>Bash</b> <code>echo $((6*7))</code> → ok, 1 line</summary><pre><code>42</code></pre>"), "{}", b[0].body.html);
    }

    #[test]
    fn long_tool_output_is_folded_and_truncated() {
        let out: String = (1..=100).map(|i| format!("line {i}\n")).collect();
        let b = tool_line("Bash", "seq", Some((&out, false)));
        assert!(b.plain.contains("line 30") && !b.plain.contains("line 31\n"));
        assert!(b.plain.contains("70 more line(s)"), "{}", b.plain);
        assert!(b.html.contains("<details>") && b.html.contains("70 more line(s)"));
        let e = tool_line("Bash", "false", Some(("", true)));
        assert_eq!(e.plain, "▸ Bash false → failed");
    }

    #[test]
    fn turn_ends_and_session_ends_say_how() {
        let end = |outcome| {
            plain(&render(EventBody::Agent {
                event: AgentEvent::TurnEnd {
                    outcome,
                    usage: Usage {
                        input_tokens: 3,
                        output_tokens: 4,
                        ..Usage::default()
                    },
                    cost_usd: Some(0.5),
                    agent_session_id: None,
                },
            }))
        };
        assert_eq!(end(TurnOutcome::Done), ["✓ done (3 in, 4 out, $0.5000)"]);
        assert_eq!(
            end(TurnOutcome::Error {
                message: "boom".into()
            }),
            ["✗ error: boom"]
        );
        assert_eq!(end(TurnOutcome::Interrupted), ["⏸ interrupted"]);
        assert_eq!(
            plain(&render(EventBody::State {
                state: SessionState::Stopped,
                detail: Some("stopped by @a:x".into())
            })),
            ["⏹ stopped: stopped by @a:x"]
        );
        assert_eq!(
            render(EventBody::State {
                state: SessionState::Running,
                detail: None
            }),
            Rendered::Nothing
        );
        assert_eq!(
            render(EventBody::Prompt {
                text: "x".into(),
                author: "a".into()
            }),
            Rendered::TurnStart
        );
        assert_eq!(
            render(EventBody::Stderr { line: "x".into() }),
            Rendered::Nothing
        );
    }

    #[test]
    fn contents_carry_thread_and_replacement_relations() {
        let body = Body::text("a < b");
        let m = in_thread(message(&body, false), "$root");
        assert_eq!(m["msgtype"], "m.text");
        assert_eq!(m["body"], "a < b");
        assert_eq!(m["formatted_body"], "<p>a &lt; b</p>");
        assert_eq!(m["m.relates_to"]["rel_type"], "m.thread");
        assert_eq!(m["m.relates_to"]["event_id"], "$root");
        let e = replacement(message(&body, false), "$ev");
        assert_eq!(
            e["m.relates_to"],
            json!({"rel_type": "m.replace", "event_id": "$ev"})
        );
        assert_eq!(e["m.new_content"]["body"], "a < b");
        assert_eq!(e["body"], "* a < b");
        assert!(e["m.new_content"].get("m.relates_to").is_none());
    }

    #[test]
    fn reply_fallbacks_are_stripped() {
        assert_eq!(
            strip_reply_fallback("> <@a:x> earlier\n> more\n\n!fm stop"),
            "!fm stop"
        );
        assert_eq!(strip_reply_fallback("!fm stop"), "!fm stop");
        assert_eq!(strip_reply_fallback("> quoted only"), "> quoted only");
    }

    #[test]
    fn the_status_names_every_fact() {
        let mut s = SessionRecord::new_queued(
            "abc".into(),
            "i".into(),
            "scripted".into(),
            "claude".into(),
            "img:latest".into(),
            "@a:x".into(),
            "matrix".into(),
            "!r:x".into(),
            "say hi".into(),
        );
        s.turns = 2;
        s.cost_usd = 0.25;
        let b = status(&s);
        for fact in [
            "state: queued",
            "agent: scripted",
            "image: img:latest",
            "repo:",
            "age:",
            "turns: 2",
            "tokens:",
            "cost: $0.2500",
        ] {
            assert!(b.plain.contains(fact), "{fact} missing from {}", b.plain);
        }
        let k = status_key(&s);
        s.state = SessionState::Running;
        assert_ne!(k, status_key(&s));
    }
}
