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
        EventBody::Approval {
            id,
            tool,
            summary,
            preview,
            answer,
        } => {
            let call = format!("{tool}: {summary}");
            match answer {
                None => {
                    let mut lines = vec![format!(
                        "? approve {call} (approval {id}): answer approve, always or deny"
                    )];
                    lines.extend(
                        preview
                            .iter()
                            .flat_map(|p| p.lines().map(|l| format!("?   {l}"))),
                    );
                    lines
                }
                Some(a) => vec![format!("? {call}: {}", a.line())],
            }
        }
    }
}

fn agent_lines(event: &AgentEvent) -> Vec<String> {
    match event {
        AgentEvent::Started { .. }
        | AgentEvent::Unknown { .. }
        | AgentEvent::PermissionRequest { .. } => Vec::new(),
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

/// Ended sessions `list` shows after the live ones.
const LIST_ENDED: usize = 5;

/// The answer to `list`: every live session, then the most recent ended ones, newest
/// first; older ended sessions are counted, not listed.
pub fn list_text(sessions: &[SessionRecord]) -> String {
    if sessions.is_empty() {
        return "no sessions yet; start one with `new PROMPT`".into();
    }
    let mut sorted: Vec<&SessionRecord> = sessions.iter().collect();
    sorted.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
    let (ended, live): (Vec<&SessionRecord>, Vec<&SessionRecord>) =
        sorted.into_iter().partition(|s| s.state.is_ended());
    let mut lines: Vec<String> = live.iter().map(|s| list_line(s)).collect();
    if live.is_empty() {
        lines.push("no live sessions".into());
    }
    lines.extend(ended.iter().take(LIST_ENDED).map(|s| list_line(s)));
    if ended.len() > LIST_ENDED {
        lines.push(format!(
            "and {} older ended sessions (`firstmate sessions list --all`)",
            ended.len() - LIST_ENDED
        ));
    }
    lines.join("\n")
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
    if s.repo.is_some() {
        let short = |c: &Option<String>| c.as_deref().map(crate::repo::short).map(str::to_string);
        let branch = s.branch.as_deref().unwrap_or("(not cloned yet)");
        match (&s.base_branch, short(&s.base_commit)) {
            (Some(base), Some(at)) => out.push(format!("branch: {branch} (from {base} at {at})")),
            _ => out.push(format!("branch: {branch}")),
        }
        out.push(format!(
            "pushed: {}",
            short(&s.pushed_commit).unwrap_or_else(|| "not yet (`push`)".into())
        ));
        if let Some(pr) = &s.pr_url {
            out.push(format!("pull request: {pr}"));
        }
    }
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

    #[test]
    fn list_shows_live_sessions_then_a_few_ended_ones() {
        let mk = |id: &str, state: SessionState, at: i64| {
            let mut s = SessionRecord::new_queued(
                id.into(),
                "i".into(),
                "scripted".into(),
                "claude".into(),
                "img".into(),
                "me".into(),
                "console".into(),
                "console".into(),
                format!("prompt of {id}"),
            );
            s.state = state;
            s.created_at = at;
            s
        };
        assert!(list_text(&[]).starts_with("no sessions yet"));
        let mut all = vec![
            mk("live1", SessionState::Running, 1),
            mk("live2", SessionState::Waiting, 50),
        ];
        for i in 0..8 {
            all.push(mk(&format!("old{i}"), SessionState::Stopped, 10 + i));
        }
        let text = list_text(&all);
        let ids: Vec<&str> = text
            .lines()
            .map(|l| l.split_whitespace().next().unwrap_or(""))
            .collect();
        assert_eq!(
            ids,
            [
                "live2", "live1", "old7", "old6", "old5", "old4", "old3", "and"
            ],
            "{text}"
        );
        assert!(
            text.ends_with("and 3 older ended sessions (`firstmate sessions list --all`)"),
            "{text}"
        );
        let ended_only = list_text(&[mk("x", SessionState::Failed, 1)]);
        assert_eq!(ended_only.lines().next(), Some("no live sessions"));
    }
}
