//! Session output as Matrix message bodies. Pure: no I/O, no matrix-sdk types, only the
//! JSON contents the Matrix spec defines (`m.room.message` with a plain `body` and an HTML
//! `formatted_body`, thread and replacement relations).
//!
//! [`Renderer`] turns the neutral view's items (`frontend/view.rs`) into [`Block`]s, the
//! units the outbox packs into messages: a paragraph, a list or a fenced code block of
//! the agent's markdown, one tool call, the end of a turn. A block is never split across
//! messages, so neither is a code block.

use pulldown_cmark::{Event, Parser};
use serde_json::{Value, json};

use crate::event::EventBody;
use crate::frontend::delivery::{Render, blocks_of};
use crate::frontend::outbox::{Block, Body, Rendered};
use crate::frontend::render as shared;
use crate::frontend::view::{self, Item};
use crate::store::SessionRecord;

/// Renders a session's events in order, as Matrix bodies.
#[derive(Debug, Default)]
pub struct Renderer {
    view: view::Renderer,
}

impl Render for Renderer {
    fn render(&mut self, body: &EventBody) -> Rendered {
        blocks_of(self.view.render(body), |key, i| {
            vec![Block {
                key,
                body: item(i),
                alone: false,
            }]
        })
    }
}

/// One item of the neutral view as a Matrix body.
pub fn item(item: &Item) -> Body {
    match item {
        Item::Markdown(source) => Body::new(source.clone(), markdown_html(source)),
        Item::Line(line) => text(line),
        Item::Note(note) => Body::new(
            note.clone(),
            format!("<p><em>{}</em></p>", lines_html(note)),
        ),
        Item::Tool(t) => tool(t),
        Item::Approval(a) => approval(a),
    }
}

/// What reacting or replying does to an approval, under the question.
pub const APPROVAL_HINT: &str =
    "React ✅ approve · ♾️ approve for this session · ❌ deny, or reply approve / always / deny";

/// An approval: the call in bold, the preview in a code block, then how to answer (or
/// who answered).
fn approval(a: &view::Approval) -> Body {
    let head = a.head();
    let mut plain = head.clone();
    let mut html = format!("<p><b>{}</b></p>", escape(&head));
    if let Some(p) = &a.preview {
        plain.push_str(&format!("\n{}", indent(p)));
        html.push_str(&format!("<pre><code>{}</code></pre>", escape(p)));
    }
    let last = a.answer.as_deref().unwrap_or(APPROVAL_HINT);
    plain.push_str(&format!("\n{last}"));
    html.push_str(&format!("<p>{}</p>", escape(last)));
    Body::new(plain, html)
}

/// A one-paragraph message from plain text.
pub fn text(plain: &str) -> Body {
    Body::new(plain, format!("<p>{}</p>", lines_html(plain)))
}

/// One compact line for a tool call: its name, its key argument, and (once known) its
/// outcome, with the output folded below it (`<details>`).
fn tool(t: &view::Tool) -> Body {
    let mut plain = format!("▸ {}", t.name);
    let mut html = format!("▸ <b>{}</b>", escape(&t.name));
    if !t.summary.is_empty() {
        plain.push_str(&format!(" {}", t.summary));
        html.push_str(&format!(" <code>{}</code>", escape(&t.summary)));
    }
    let Some(r) = &t.result else {
        plain.push_str(" …");
        html.push_str(" …");
        return Body::new(plain, format!("<p>{html}</p>"));
    };
    let outcome = r.outcome();
    plain.push_str(&format!(" → {outcome}"));
    html.push_str(&format!(" → {}", escape(&outcome)));
    if r.lines == 0 {
        return Body::new(plain, format!("<p>{html}</p>"));
    }
    plain.push('\n');
    plain.push_str(&indent(&r.shown));
    let more = r.more();
    if let Some(m) = &more {
        plain.push('\n');
        plain.push_str(m);
    }
    html = format!(
        "<details><summary>{html}</summary><pre><code>{}</code></pre>{}</details>",
        escape(&r.shown),
        more.map(|m| format!(
            "<p><em>{}</em></p>",
            escape(&m).replacen("`logs`", "<code>logs</code>", 1)
        ))
        .unwrap_or_default()
    );
    Body::new(plain, html)
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
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

/// Renders markdown to HTML. Raw HTML in the text is shown as text, not passed on.
pub fn markdown_html(text: &str) -> String {
    let events = Parser::new_ext(text, view::markdown_options()).map(|ev| match ev {
        Event::Html(s) | Event::InlineHtml(s) => Event::Text(s),
        ev => ev,
    });
    let mut html = String::new();
    pulldown_cmark::html::push_html(&mut html, events);
    html.trim_end().to_string()
}

/// The status message at the top of a session's thread.
pub fn status(s: &SessionRecord) -> Body {
    let v = view::Status::of(s);
    let plain = format!("{}\n{}", v.head(), v.facts);
    let html = format!(
        "<p><b>firstmate session <code>{}</code></b> · <b>{}</b></p>\n<p>{}</p>",
        escape(&v.id),
        escape(&v.state),
        lines_html(&v.facts)
    );
    Body::new(plain, html)
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
        return text(&format!(
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
        "format": "org.matrix.custom.rich",
        "formatted_body": body.rich,
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

/// The matrix.to link of a thread: its room and root event, percent-encoded as the
/// Matrix spec's matrix.to appendix asks, with the room's server as `via` (a client
/// that is not in the room finds it there).
pub fn thread_link(room: &str, root: &str) -> String {
    fn encode(id: &str) -> String {
        id.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'!' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect()
    }
    let mut link = format!("https://matrix.to/#/{}/{}", encode(room), encode(root));
    if let Some((_, server)) = room.split_once(':') {
        link.push_str("?via=");
        link.push_str(&encode(server));
    }
    link
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_link_is_encoded_with_the_rooms_server() {
        assert_eq!(
            thread_link("!room:example.org", "$ev/ent+1:example.org"),
            "https://matrix.to/#/!room%3Aexample.org/%24ev%2Fent%2B1%3Aexample.org?via=example.org"
        );
        assert_eq!(
            thread_link("!r:127.0.0.1:8008", "$e"),
            "https://matrix.to/#/!r%3A127.0.0.1%3A8008/%24e?via=127.0.0.1%3A8008"
        );
    }
    use crate::event::SessionState;
    use crate::protocol::{AgentEvent, TurnOutcome, Usage};

    fn render(body: EventBody) -> Rendered {
        Renderer::default().render(&body)
    }

    /// The agent's text as the thread shows it.
    fn markdown_blocks(text: &str) -> Vec<Block> {
        match render(EventBody::Agent {
            event: AgentEvent::Text { text: text.into() },
        }) {
            Rendered::Blocks(b) => b,
            other => panic!("{other:?}"),
        }
    }

    fn join(blocks: &[Block]) -> Body {
        crate::frontend::outbox::join(blocks)
    }

    fn tool_line(name: &str, summary: &str, result: Option<(&str, bool)>) -> Body {
        item(&Item::Tool(view::tool(name, summary, result)))
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
        assert_eq!(blocks[0].body.rich, "<p>Hello <strong>world</strong>.</p>");
        assert!(blocks[1].body.plain.starts_with("```rust"));
        assert!(blocks[1].body.plain.ends_with("```"));
        assert!(
            blocks[1].body.rich.contains(
                "<pre><code class=\"language-rust\">fn main() {}\n\nlet x = 1;\n</code></pre>"
            ),
            "{}",
            blocks[1].body.rich
        );
        assert!(blocks[2].body.rich.starts_with("<ul>"));
    }

    #[test]
    fn raw_html_from_the_agent_is_escaped() {
        let blocks = markdown_blocks("<script>alert(1)</script>\n\nhi <b>x</b>");
        let html = join(&blocks).rich;
        assert!(
            !html.contains("<script>") && !html.contains("<b>"),
            "{html}"
        );
        assert!(html.contains("&lt;script&gt;"), "{html}");
    }

    #[test]
    fn an_overlong_code_block_is_cut_and_closed() {
        let code = format!("```\n{}\n```", "x\n".repeat(view::BLOCK_MAX_CHARS));
        let blocks = markdown_blocks(&code);
        assert_eq!(blocks.len(), 1);
        let b = &blocks[0].body;
        assert!(b.plain.len() < view::BLOCK_MAX_CHARS + 100);
        assert!(
            b.plain.contains("\n```\n… (cut"),
            "{}",
            &b.plain[b.plain.len() - 60..]
        );
        assert_eq!(b.rich.matches("<pre>").count(), 1);
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
        assert!(b[0].body.rich.starts_with("<details><summary>▸ <b>Bash</b> <code>echo $((6*7))</code> → ok, 1 line</summary><pre><code>42</code></pre>"), "{}", b[0].body.rich);
    }

    #[test]
    fn long_tool_output_is_folded_and_truncated() {
        let out: String = (1..=100).map(|i| format!("line {i}\n")).collect();
        let b = tool_line("Bash", "seq", Some((&out, false)));
        assert!(b.plain.contains("line 30") && !b.plain.contains("line 31\n"));
        assert!(b.plain.contains("70 more line(s)"), "{}", b.plain);
        assert!(b.rich.contains("<details>") && b.rich.contains("70 more line(s)"));
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
        let body = text("a < b");
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
        let k = view::status_key(&s);
        s.state = SessionState::Running;
        assert_ne!(k, view::status_key(&s));
    }
}
