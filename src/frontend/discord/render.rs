//! Session output as Discord messages: Discord's markdown, at most [`MESSAGE_CHARS`]
//! characters a message, code fences never split across messages. Pure.
//!
//! It turns the neutral view's items (`frontend/view.rs`) into Discord's markdown: a
//! tool's output becomes a fenced block; an item too long for one message becomes
//! several, each with its fences closed and reopened.

use crate::event::EventBody;
use crate::frontend::delivery::{Render, blocks_of};
use crate::frontend::outbox::{Block, Body, Rendered};
use crate::frontend::view::{self, Item};
use crate::store::SessionRecord;

/// Discord's limit is 2000 characters a message; a little is kept for joining blocks.
pub const MESSAGE_CHARS: usize = 1900;

/// Renders a session's events in order.
#[derive(Debug, Default)]
pub struct Renderer {
    view: view::Renderer,
}

impl Render for Renderer {
    fn render(&mut self, body: &EventBody) -> Rendered {
        blocks_of(self.view.render(body), |key, i| blocks(key, &text(i)))
    }
}

/// A plain-text body (Discord needs no second form).
pub fn body(text: impl Into<String>) -> Body {
    Body::new(text, String::new())
}

/// An item's text cut into messages; the first piece keeps the key, so a tool's result
/// still replaces its call.
fn blocks(key: Option<String>, text: &str) -> Vec<Block> {
    let mut pieces = split(text, MESSAGE_CHARS).into_iter();
    let mut out = Vec::new();
    if let Some(first) = pieces.next() {
        out.push(Block {
            key,
            body: body(first),
            alone: false,
        });
    }
    out.extend(pieces.map(|p| Block::new(body(p))));
    out
}

/// One item of the neutral view in Discord's markdown.
pub fn text(item: &Item) -> String {
    match item {
        // Discord shows no tables: a table reads best as monospace text, in a code block
        // (which scrolls sideways on a phone instead of wrapping into a jumble).
        Item::Markdown(s) if is_table(s) => {
            crate::frontend::render::fence(s).trim_end().to_string()
        }
        Item::Markdown(s) | Item::Line(s) | Item::Note(s) => s.clone(),
        Item::Tool(t) => tool_text(t),
        Item::Approval(a) => approval_text(a),
    }
}

/// An approval: the call in bold, the preview in a code block, who answered once
/// someone did (the buttons ask while it waits).
fn approval_text(a: &view::Approval) -> String {
    let mut out = format!("**{}**", a.head());
    if let Some(p) = &a.preview {
        out.push('\n');
        out.push_str(crate::frontend::render::fence(p).trim_end());
    }
    if let Some(answer) = &a.answer {
        out.push('\n');
        out.push_str(answer);
    }
    out
}

/// Whether a block of markdown is a table.
fn is_table(source: &str) -> bool {
    use pulldown_cmark::{Event, Parser, Tag};
    matches!(
        Parser::new_ext(source, view::markdown_options()).next(),
        Some(Event::Start(Tag::Table(_)))
    )
}

/// A tool call: the name in bold, the summary and outcome on the same line, the output
/// in a fenced block below.
fn tool_text(t: &view::Tool) -> String {
    let mut line = String::new();
    if !t.summary.is_empty() {
        line.push_str(&t.summary);
        line.push(' ');
    }
    match &t.result {
        None => line.push('…'),
        Some(r) => line.push_str(&format!("→ {}", r.outcome())),
    }
    let mut out = format!("▸ **{}** {}", t.name, escape_inline(&line));
    let Some(r) = t.result.as_ref().filter(|r| r.lines > 0) else {
        return out;
    };
    let code: Vec<&str> = r.shown.lines().collect();
    out.push_str("\n```\n");
    out.push_str(&code.join("\n").replace("```", "`\u{200b}``"));
    out.push_str("\n```");
    if let Some(more) = r.more() {
        out.push('\n');
        out.push_str(&more);
    }
    out
}

/// Markdown characters of a one-line summary shown as they are.
fn escape_inline(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '_' | '~' | '`' | '|' | '>' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The fence a line opens or closes (its backticks or tildes), if it is one.
fn fence_of(line: &str) -> Option<&str> {
    let t = line.trim_start();
    let n = t.chars().take_while(|&c| c == '`').count();
    let m = t.chars().take_while(|&c| c == '~').count();
    match (n, m) {
        (n, _) if n >= 3 => Some(&t[..n]),
        (_, m) if m >= 3 => Some(&t[..m]),
        _ => None,
    }
}

/// Cuts `text` into pieces of at most `max` characters, at line ends where it can; a
/// piece that ends inside a fenced block closes it, and the next reopens it (with its
/// info string), so every piece is whole markdown.
pub fn split(text: &str, max: usize) -> Vec<String> {
    if text.chars().count() <= max {
        return vec![text.to_string()];
    }
    let mut pieces = Vec::new();
    let mut cur = String::new();
    let mut cur_len = 0;
    // The fence line that opened the block we are in, if any.
    let mut open: Option<String> = None;
    let push_piece =
        |cur: &mut String, cur_len: &mut usize, open: &Option<String>, pieces: &mut Vec<String>| {
            if let Some(f) = open {
                cur.push('\n');
                cur.push_str(fence_of(f).unwrap_or("```"));
            }
            pieces.push(std::mem::take(cur));
            *cur_len = 0;
            if let Some(f) = open {
                cur.push_str(f);
                *cur_len = f.chars().count();
            }
        };
    for line in text.split('\n') {
        // Room for the line, its newline and a closing fence.
        let reserve = open.as_ref().map_or(0, |_| 4);
        let mut rest = line.to_string();
        loop {
            let len = rest.chars().count();
            let sep = usize::from(cur_len > 0);
            if cur_len + sep + len + reserve <= max {
                if sep == 1 {
                    cur.push('\n');
                }
                cur.push_str(&rest);
                cur_len += sep + len;
                break;
            }
            if cur_len > open.as_ref().map_or(0, |f| f.chars().count()) {
                push_piece(&mut cur, &mut cur_len, &open, &mut pieces);
                continue;
            }
            // One line longer than a message: cut it.
            let room = max.saturating_sub(cur_len + sep + reserve).max(1);
            let head: String = rest.chars().take(room).collect();
            let tail: String = rest.chars().skip(room).collect();
            if sep == 1 {
                cur.push('\n');
            }
            cur.push_str(&head);
            cur_len += sep + room;
            push_piece(&mut cur, &mut cur_len, &open, &mut pieces);
            rest = tail;
        }
        if let Some(f) = fence_of(line) {
            match &open {
                Some(o) if fence_of(o).is_some_and(|of| f.starts_with(of) && line.trim() == f) => {
                    open = None
                }
                None => open = Some(line.trim_start().to_string()),
                _ => {}
            }
        }
    }
    if cur_len > 0 || cur.is_empty() {
        pieces.push(cur);
    }
    pieces
}

/// The status message of a session's thread.
pub fn status(s: &SessionRecord) -> Body {
    let v = view::Status::of(s);
    body(format!("**{}**\n{}", v.head(), v.facts))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::AgentEvent;

    fn rendered(r: &mut Renderer, ev: AgentEvent) -> Vec<String> {
        match r.render(&EventBody::Agent { event: ev }) {
            Rendered::Blocks(b) => b.into_iter().map(|b| b.body.plain).collect(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_tool_call_is_one_line_and_its_output_a_fenced_block() {
        let mut r = Renderer::default();
        let call = rendered(
            &mut r,
            AgentEvent::ToolUse {
                id: "t1".into(),
                name: "Bash".into(),
                summary: "echo $((6*7))".into(),
                input: serde_json::json!({}),
            },
        );
        assert_eq!(call, ["▸ **Bash** echo $((6\\*7)) …"]);
        let done = rendered(
            &mut r,
            AgentEvent::ToolResult {
                tool_use_id: "t1".into(),
                output: "42\nagent".into(),
                is_error: false,
            },
        );
        assert_eq!(
            done,
            ["▸ **Bash** echo $((6\\*7)) → ok, 2 lines\n```\n42\nagent\n```"]
        );
    }

    #[test]
    fn long_text_is_split_without_breaking_fences() {
        let code: Vec<String> = (0..400).map(|i| format!("line {i} of the code")).collect();
        let text = format!("Here:\n```rust\n{}\n```\nDone.", code.join("\n"));
        let pieces = split(&text, MESSAGE_CHARS);
        assert!(pieces.len() > 2, "{}", pieces.len());
        for p in &pieces {
            assert!(p.chars().count() <= MESSAGE_CHARS, "{}", p.chars().count());
            let fences = p.lines().filter(|l| fence_of(l).is_some()).count();
            assert_eq!(fences % 2, 0, "an unbalanced piece:\n{p}");
        }
        // Nothing lost: the code lines all come back, in order.
        let back: Vec<&str> = pieces
            .iter()
            .flat_map(|p| p.lines())
            .filter(|l| l.starts_with("line "))
            .collect();
        assert_eq!(back, code.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(pieces[1].starts_with("```rust\n"), "{}", pieces[1]);
        assert!(pieces.last().is_some_and(|p| p.ends_with("Done.")));
    }

    #[test]
    fn a_line_longer_than_a_message_is_cut_and_short_text_is_left_alone() {
        let long = "x".repeat(5000);
        let pieces = split(&long, 1900);
        assert_eq!(pieces.len(), 3);
        assert_eq!(pieces.concat(), long);
        assert_eq!(split("hi", 1900), ["hi"]);
        let mut r = Renderer::default();
        let text = rendered(
            &mut r,
            AgentEvent::Text {
                text: "# Title\n\nSome **bold** text.".into(),
            },
        );
        assert_eq!(text, ["# Title", "Some **bold** text."]);
    }

    #[test]
    fn a_table_becomes_a_code_block() {
        let mut r = Renderer::default();
        let text = rendered(
            &mut r,
            AgentEvent::Text {
                text: "Results:\n\n| a | b |\n|---|---|\n| 1 | 2 |\n".into(),
            },
        );
        assert_eq!(
            text,
            ["Results:", "```\n| a | b |\n|---|---|\n| 1 | 2 |\n```"]
        );
    }
}
