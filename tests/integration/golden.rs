//! Golden test: the Matrix and Discord output of one fixed transcript, byte for byte.
//! Any change to what people see in a thread shows here as a diff of
//! `testdata/golden-*.txt`; `FIRSTMATE_BLESS=1 cargo test --test integration golden`
//! rewrites the files after a change that is meant. Pure: no Docker, no service.

use std::fmt::Write;
use std::path::PathBuf;

use serde_json::json;

use firstmate::event::{EventBody, SessionState};
use firstmate::frontend::delivery::Render;
use firstmate::frontend::outbox::Rendered;
use firstmate::frontend::{discord, matrix};
use firstmate::protocol::{AgentEvent, TurnOutcome, Usage};
use firstmate::store::SessionRecord;

fn agent(event: AgentEvent) -> EventBody {
    EventBody::Agent { event }
}

fn tool(id: &str, name: &str, summary: &str) -> EventBody {
    agent(AgentEvent::ToolUse {
        id: id.into(),
        name: name.into(),
        summary: summary.into(),
        input: json!({}),
    })
}

fn result(id: &str, output: &str, is_error: bool) -> EventBody {
    agent(AgentEvent::ToolResult {
        tool_use_id: id.into(),
        output: output.into(),
        is_error,
    })
}

fn state(state: SessionState, detail: Option<&str>) -> EventBody {
    EventBody::State {
        state,
        detail: detail.map(str::to_string),
    }
}

/// Every kind of event a thread shows, with the edge cases that rendering cuts, folds
/// or escapes.
fn transcript() -> Vec<EventBody> {
    let many_lines: String = (1..=45).map(|i| format!("line {i}\n")).collect();
    let long_code = format!(
        "Here is the file:\n\n```rust\n{}```\n\nand after it.",
        (1..=120)
            .map(|i| format!("let value_{i} = compute({i}); // a comment that makes it wide\n"))
            .collect::<String>()
    );
    vec![
        state(SessionState::Queued, Some("2 sessions ahead")),
        state(SessionState::Starting, None),
        EventBody::Prompt {
            text: "fix the <build> & run tests".into(),
            author: "@alice:example.org".into(),
        },
        state(SessionState::Running, None),
        agent(AgentEvent::Started {
            agent_session_id: "s-1".into(),
            model: Some("claude-sonnet".into()),
        }),
        agent(AgentEvent::Text {
            text: "I'll look at **the build** first.\n\n- read `Cargo.toml`\n- run the tests\n\n<script>alert(1)</script>\n\n| a | b |\n|---|---|\n| 1 | 2 |\n".into(),
        }),
        tool("t1", "Bash", "cargo test --all *fast*"),
        result("t1", "running 3 tests\ntest a ... ok\ntest b ... ok", false),
        tool("t2", "Read", "src/lib.rs\nsecond line of the summary"),
        result("t2", "", false),
        tool("t3", "Bash", "seq 45"),
        result("t3", &many_lines, false),
        tool("t4", "Bash", "grep ``` src"),
        result("t4", "a ``` fence in output\nerror: <not found>", true),
        result("t-unknown", "one line", false),
        agent(AgentEvent::Text { text: long_code }),
        EventBody::Stderr {
            line: "warning: noise".into(),
        },
        EventBody::Notice {
            text: "idle for 30m: stopping soon\nsecond <line>".into(),
        },
        agent(AgentEvent::Unknown {
            kind: "x".into(),
            raw: "{}".into(),
        }),
        agent(AgentEvent::Malformed {
            line: "{not json".into(),
            error: "expected value".into(),
        }),
        agent(AgentEvent::TurnEnd {
            outcome: TurnOutcome::Done,
            usage: Usage {
                input_tokens: 1200,
                output_tokens: 340,
                cache_read_tokens: 5000,
                cache_write_tokens: 10,
            },
            cost_usd: Some(0.01234),
            agent_session_id: Some("s-1".into()),
        }),
        agent(AgentEvent::TurnEnd {
            outcome: TurnOutcome::Error {
                message: "rate limited <429>".into(),
            },
            usage: Usage::default(),
            cost_usd: None,
            agent_session_id: None,
        }),
        agent(AgentEvent::TurnEnd {
            outcome: TurnOutcome::Interrupted,
            usage: Usage::default(),
            cost_usd: None,
            agent_session_id: None,
        }),
        state(SessionState::Waiting, None),
        state(SessionState::Stopped, Some("stopped by @bob:example.org")),
        state(SessionState::Stopped, None),
        state(SessionState::Failed, Some("the container exited with 137")),
        state(SessionState::Failed, None),
    ]
}

fn session(state: SessionState, detail: Option<&str>) -> SessionRecord {
    let mut s = SessionRecord::new_queued(
        "abc123".into(),
        "inst".into(),
        "scripted".into(),
        "claude".into(),
        "firstmate-worker:latest".into(),
        "@alice:example.org".into(),
        "matrix".into(),
        "!room:example.org".into(),
        "fix the build".into(),
    );
    // In the future: the age shows as 0s whenever the test runs.
    s.created_at = i64::MAX / 4;
    s.state = state;
    s.state_detail = detail.map(str::to_string);
    s.model = Some("claude-sonnet".into());
    s.turns = 3;
    s.usage = Usage {
        input_tokens: 1200,
        output_tokens: 340,
        cache_read_tokens: 5000,
        cache_write_tokens: 10,
    };
    s.cost_usd = 0.01234;
    s
}

fn sessions() -> Vec<SessionRecord> {
    vec![
        session(SessionState::Running, None),
        session(SessionState::Failed, Some("the container exited with 137")),
    ]
}

fn rendered(out: &mut String, r: &Rendered, html: bool) {
    match r {
        Rendered::Nothing => out.push_str("  (nothing)\n"),
        Rendered::TurnStart => out.push_str("  (turn start)\n"),
        Rendered::Blocks(blocks) => {
            for b in blocks {
                let _ = writeln!(out, "  block key={:?}", b.key);
                let _ = writeln!(out, "  plain:\n{}", b.body.plain);
                if html {
                    let _ = writeln!(out, "  html:\n{}", b.body.rich);
                }
            }
        }
    }
}

fn matrix_output() -> String {
    let mut out = String::new();
    let mut r = matrix::render::Renderer::default();
    for (i, ev) in transcript().iter().enumerate() {
        let _ = writeln!(out, "## event {i}");
        rendered(&mut out, &r.render(ev), true);
    }
    for s in sessions() {
        let b = matrix::render::status(&s);
        let _ = writeln!(out, "## status {}\n{}\n{}", s.state, b.plain, b.rich);
    }
    let b = matrix::render::help("!fm");
    let _ = writeln!(out, "## help\n{}\n{}", b.plain, b.rich);
    for list in [Vec::new(), sessions()] {
        let b = matrix::render::list(&list, "!fm");
        let _ = writeln!(out, "## list\n{}\n{}", b.plain, b.rich);
    }
    let b = matrix::render::problem("no session <here>\nsecond line");
    let _ = writeln!(out, "## problem\n{}\n{}", b.plain, b.rich);
    out
}

fn discord_output() -> String {
    let mut out = String::new();
    let mut r = discord::render::Renderer::default();
    for (i, ev) in transcript().iter().enumerate() {
        let _ = writeln!(out, "## event {i}");
        rendered(&mut out, &r.render(ev), false);
    }
    for s in sessions() {
        let b = discord::render::status(&s);
        let _ = writeln!(out, "## status {}\n{}", s.state, b.plain);
    }
    out
}

fn check(name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/integration/testdata")
        .join(name);
    if std::env::var_os("FIRSTMATE_BLESS").is_some() {
        std::fs::write(&path, actual).expect("write the golden file");
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; FIRSTMATE_BLESS=1 writes it", path.display()));
    if expected != actual {
        let line = expected
            .lines()
            .zip(actual.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(expected.lines().count().min(actual.lines().count()));
        panic!(
            "{name} differs from line {}:\n  expected: {:?}\n  actual:   {:?}\n(FIRSTMATE_BLESS=1 rewrites it if the change is meant)",
            line + 1,
            expected.lines().nth(line),
            actual.lines().nth(line)
        );
    }
}

#[test]
fn matrix_output_of_a_fixed_transcript_is_unchanged() {
    check("golden-matrix.txt", &matrix_output());
}

#[test]
fn discord_output_of_a_fixed_transcript_is_unchanged() {
    check("golden-discord.txt", &discord_output());
}
