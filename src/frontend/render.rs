//! Rendering shared by the front ends: session events to text lines, the status block,
//! the `list` line, the transcript. Pure, except `transcript`, which reads the store.

use std::time::Duration;

use crate::event::{EventBody, SessionState};
use crate::protocol::{AgentEvent, TurnOutcome};
use crate::store::{SessionRecord, Store, StoreError, now_ms};

/// The lines the console prints for one event (without the session prefix).
pub fn console_lines(body: &EventBody) -> Vec<String> {
    match body {
        EventBody::State { state, detail } => {
            let detail = detail.as_deref().filter(|d| !d.is_empty());
            match (state, detail) {
                // The prompt line and the turn's end already say these.
                (
                    SessionState::Queued
                    | SessionState::Starting
                    | SessionState::Running
                    | SessionState::Waiting,
                    None,
                ) => Vec::new(),
                (_, Some(d)) => vec![format!("-- {state}: {d}")],
                (_, None) => vec![format!("-- {state}")],
            }
        }
        EventBody::Prompt { text, .. } => text.lines().map(|l| format!("> {l}")).collect(),
        EventBody::Agent { event } => agent_lines(event),
        EventBody::Stderr { .. } => Vec::new(),
        EventBody::Notice { text } => text.lines().map(str::to_string).collect(),
    }
}

fn agent_lines(event: &AgentEvent) -> Vec<String> {
    match event {
        AgentEvent::Started { .. } | AgentEvent::Unknown { .. } => Vec::new(),
        AgentEvent::Text { text } => text.lines().map(str::to_string).collect(),
        AgentEvent::ToolUse { name, summary, .. } => {
            if name == "Bash" {
                vec![format!("$ {summary}")]
            } else {
                vec![format!("* {name}: {summary}")]
            }
        }
        AgentEvent::ToolResult {
            output, is_error, ..
        } => {
            let mut lines: Vec<String> = output.lines().map(str::to_string).collect();
            if *is_error {
                lines.insert(0, "(the tool reported an error)".to_string());
            }
            lines
        }
        AgentEvent::TurnEnd { outcome, usage, .. } => {
            let tokens = format!(
                "{} in, {} out",
                usage.input_tokens + usage.cache_read_tokens + usage.cache_write_tokens,
                usage.output_tokens
            );
            vec![match outcome {
                TurnOutcome::Done => format!("-- turn done ({tokens})"),
                TurnOutcome::Error { message } => format!("-- turn failed: {message}"),
                TurnOutcome::Interrupted => "-- turn interrupted".to_string(),
            }]
        }
        AgentEvent::Malformed { line, error } => {
            vec![format!("! unreadable agent output ({error}): {line}")]
        }
    }
}

fn age(s: &SessionRecord) -> String {
    let ms = (now_ms() - s.created_at).max(0) as u64;
    // Whole seconds read better than humantime's milliseconds.
    humantime::format_duration(Duration::from_secs(ms / 1000)).to_string()
}

/// One line of `list`.
pub fn list_line(s: &SessionRecord) -> String {
    let prompt: String = s
        .first_prompt
        .lines()
        .next()
        .unwrap_or("")
        .chars()
        .take(40)
        .collect();
    format!("{}  {}  {}  {}  {}", s.id, s.state, s.agent, age(s), prompt)
}

/// The answer to `status`: one fact a line, narrow enough for a phone.
pub fn status_text(s: &SessionRecord) -> String {
    let mut out = vec![format!("state: {}", s.state)];
    if let Some(d) = s.state_detail.as_deref().filter(|d| !d.is_empty()) {
        out.push(format!("why: {d}"));
    }
    out.push(format!("agent: {}", s.agent));
    if let Some(m) = &s.model {
        out.push(format!("model: {m}"));
    }
    out.push(format!("image: {}", s.image));
    out.push(format!(
        "repo: {}",
        s.repo.as_deref().unwrap_or("(none: empty /workspace)")
    ));
    out.push(format!("age: {}", age(s)));
    out.push(format!("turns: {}", s.turns));
    out.push(format!(
        "tokens: {} in, {} out, {} cache read, {} cache write",
        s.usage.input_tokens,
        s.usage.output_tokens,
        s.usage.cache_read_tokens,
        s.usage.cache_write_tokens
    ));
    out.push(format!("cost: ${:.4}", s.cost_usd));
    out.join("\n")
}

/// The full transcript of a session, as Markdown: every prompt, every message, every
/// tool call with its whole output.
pub async fn transcript(store: &Store, s: &SessionRecord) -> Result<String, StoreError> {
    let mut out = format!(
        "# firstmate session {}\n\nagent: {}, image: {}, state: {}\n\n",
        s.id, s.agent, s.image, s.state
    );
    let mut after = 0;
    loop {
        let batch = store.events_after(&s.id, after, 1000).await?;
        let Some(last) = batch.last().map(|e| e.seq) else {
            break;
        };
        for ev in batch {
            match &ev.body {
                EventBody::Prompt { text, author } => {
                    out.push_str(&format!("\n## {author}\n\n{text}\n\n"));
                }
                EventBody::Agent {
                    event: AgentEvent::ToolResult { output, .. },
                } => {
                    out.push_str(&fence(output));
                }
                EventBody::Agent {
                    event: AgentEvent::Text { text },
                } => {
                    out.push_str(text);
                    out.push_str("\n\n");
                }
                EventBody::Stderr { line } => out.push_str(&format!("stderr: {line}\n")),
                EventBody::State {
                    state: SessionState::Queued | SessionState::Starting,
                    ..
                } => {}
                other => {
                    for l in console_lines(other) {
                        out.push_str(&l);
                        out.push('\n');
                    }
                }
            }
        }
        after = last;
    }
    Ok(out)
}

/// A fenced code block that its content cannot close early.
pub fn fence(content: &str) -> String {
    let mut ticks = 3;
    let mut run = 0;
    for c in content.chars() {
        if c == '`' {
            run += 1;
            ticks = ticks.max(run + 1);
        } else {
            run = 0;
        }
    }
    let f = "`".repeat(ticks);
    format!("{f}\n{}\n{f}\n\n", content.trim_end_matches('\n'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Usage;

    fn check(body: EventBody, expect: &[&str]) {
        assert_eq!(console_lines(&body), expect);
    }

    #[test]
    fn events_render_as_console_lines() {
        check(
            EventBody::Agent {
                event: AgentEvent::Text {
                    text: "hi\nthere".into(),
                },
            },
            &["hi", "there"],
        );
        check(
            EventBody::Agent {
                event: AgentEvent::ToolUse {
                    id: "t".into(),
                    name: "Bash".into(),
                    summary: "echo $((6*7))".into(),
                    input: serde_json::json!({}),
                },
            },
            &["$ echo $((6*7))"],
        );
        check(
            EventBody::Agent {
                event: AgentEvent::ToolResult {
                    tool_use_id: "t".into(),
                    output: "42".into(),
                    is_error: false,
                },
            },
            &["42"],
        );
        check(
            EventBody::State {
                state: SessionState::Failed,
                detail: Some("the agent exited with code 3".into()),
            },
            &["-- failed: the agent exited with code 3"],
        );
        check(
            EventBody::Agent {
                event: AgentEvent::TurnEnd {
                    outcome: TurnOutcome::Interrupted,
                    usage: Usage::default(),
                    cost_usd: None,
                    agent_session_id: None,
                },
            },
            &["-- turn interrupted"],
        );
        check(EventBody::Stderr { line: "x".into() }, &[]);
    }

    #[test]
    fn fences_are_never_closed_by_their_content() {
        assert_eq!(fence("a"), "```\na\n```\n\n");
        assert_eq!(fence("x ``` y"), "````\nx ``` y\n````\n\n");
    }
}
