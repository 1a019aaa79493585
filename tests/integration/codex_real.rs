//! The real Codex CLI, in `firstmate-worker:latest`, against the scripted stand-in of
//! the OpenAI Responses API (`support::openai`), on an `--internal` Docker network of
//! its own (see `support::worker`).
//!
//! With FIRSTMATE_CODEX_CAPTURE=DIR the CLI's stdout of each direct scenario is written
//! to DIR/<scenario>.jsonl: that is how `tests/fixtures/codex/real/` was made.

use std::process::Command;
use std::time::Duration;

use firstmate::protocol::codex::{self, TurnCommand, parse_line};
use firstmate::protocol::{AgentEvent, TurnOutcome};

use crate::support::openai::{OpenAiStub, Reply, conversation_text};
use crate::support::text;
use crate::support::worker::{
    self, HARDENED, Net, REAL_KEY, WORKER_IMAGE, assert_contains_all, assert_in_order,
    assert_interrupt_scenario, assert_key_kept, console_interrupt_scenario, engine_scenario,
    gateway_env, started, texts, turn_end,
};

fn worker_ready() -> bool {
    worker::worker_ready("a real Codex CLI test")
}

fn events(lines: &[String]) -> Vec<AgentEvent> {
    worker::events(parse_line, lines)
}

/// A model this Codex knows and gives the classic function tools (`exec_command`, ...),
/// which the stand-in answers with. (Codex 0.169's default model gets its tools in a
/// JavaScript "code mode" the stand-in does not script.)
const MODEL: &str = "gpt-5.5";

const TOOL_COMMAND: &str = "echo $((6*7)) | tee answer.txt; id -un";

/// The `codex` agent on the worker image, and the gateway's OpenAI upstream.
fn codex_tables(stub: &OpenAiStub, net: &Net) -> String {
    format!(
        r#"
[agents.codex]
image = "{WORKER_IMAGE}"
protocol = "codex"
model = "{MODEL}"
memory = "2g"
pids_limit = 512

[gateway.prices."{MODEL}"]
input = 1.0
output = 2.0
cache_read = 0.5

[gateway.openai]
upstream = "{upstream}"
api_key_env = "FIRSTMATE_TEST_REAL_KEY"
"#,
        upstream = net.base_url(stub)
    )
}

/// A worker container idling as a Codex session's does, with a home and a workspace.
fn idle_worker(net: &mut Net) -> String {
    let name = format!("{}-cli", net.name);
    let home = net.volume("home");
    let ws = net.volume("workspace");
    net.containers.push(name.clone());
    let out = Command::new("docker")
        .args(["run", "-d", "--name", &name, "--network", &net.name])
        .args(HARDENED)
        .args(["-v", &format!("{home}:/home/agent")])
        .args(["-v", &format!("{ws}:/workspace")])
        .args(["-e", "OPENAI_API_KEY=dummy"])
        .arg(WORKER_IMAGE)
        .args(codex::KEEPER)
        .output()
        .expect("docker run");
    assert!(
        out.status.success(),
        "docker run: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    name
}

/// One turn of the real CLI by `docker exec`: its stdout lines (it exits at the turn's
/// end).
fn exec_turn(container: &str, base_url: &str, resume: Option<&str>, prompt: &str) -> Vec<String> {
    let argv = codex::command(&TurnCommand {
        model: Some(MODEL),
        resume,
        base_url: Some(base_url),
        prompt,
        ..Default::default()
    });
    let mut c = Command::new("docker");
    c.args(["exec", container]).args(&argv);
    let out = crate::support::run_with_timeout(c, "", Duration::from_secs(120));
    let lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    assert!(
        out.status.success(),
        "codex exec failed: {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        lines.join("\n"),
        String::from_utf8_lossy(&out.stderr)
    );
    lines
}

/// The real CLI, run directly: a turn with a shell call, a resumed turn that carries the
/// conversation, and the parser takes every line it prints.
#[test]
fn real_codex_turn_with_a_tool_then_a_resumed_turn() {
    if !worker_ready() {
        return;
    }
    let mut net = Net::new("codex_real");
    let stub: OpenAiStub = net.stub(vec![
        Reply::shell("I'll compute that with the shell.", TOOL_COMMAND),
        Reply::text("The answer is 42."),
        Reply::text("You asked me to compute 6*7."),
    ]);
    let base_url = format!("{}/v1", net.base_url(&stub));
    let container = idle_worker(&mut net);

    let l1 = exec_turn(&container, &base_url, None, "What is 6*7? Use the shell.");
    worker::capture("FIRSTMATE_CODEX_CAPTURE", "turn_tool", &l1);
    let t1 = events(&l1);
    let thread = started(&t1);
    let tool_id = t1
        .iter()
        .find_map(|e| match e {
            AgentEvent::ToolUse {
                id, name, summary, ..
            } => {
                assert_eq!(name, "Bash");
                assert!(summary.contains("echo $((6*7))"), "{summary}");
                Some(id.clone())
            }
            _ => None,
        })
        .unwrap_or_else(|| panic!("no tool use in {t1:#?}\n{}", stub.log()));
    // The tool really ran, in the container, as its user.
    let output = t1
        .iter()
        .find_map(|e| match e {
            AgentEvent::ToolResult {
                tool_use_id,
                output,
                is_error: false,
            } if *tool_use_id == tool_id => Some(output.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no tool result in {t1:#?}"));
    assert_eq!(output.trim(), "42\nagent");
    assert!(
        texts(&t1).contains(&"The answer is 42.".to_string()),
        "{t1:#?}"
    );
    let (outcome, usage, _, _) = turn_end(&t1);
    assert_eq!(outcome, TurnOutcome::Done);
    // Two API calls of 200 in (50 of them cached) and 40 out.
    assert_eq!(
        (
            usage.input_tokens,
            usage.cache_read_tokens,
            usage.output_tokens
        ),
        (300, 100, 80),
        "{t1:#?}"
    );

    let l2 = exec_turn(&container, &base_url, Some(&thread), "What did I ask you?");
    worker::capture("FIRSTMATE_CODEX_CAPTURE", "resumed_turn", &l2);
    let t2 = events(&l2);
    assert_eq!(
        texts(&t2),
        ["You asked me to compute 6*7."],
        "{}",
        stub.log()
    );
    let (outcome, usage, _, _) = turn_end(&t2);
    assert_eq!(outcome, TurnOutcome::Done);
    // A resumed thread reports its running total (the engine takes the difference).
    assert_eq!(
        (
            usage.input_tokens,
            usage.cache_read_tokens,
            usage.output_tokens
        ),
        (450, 150, 120),
        "{t2:#?}"
    );
    if let Some(AgentEvent::Started {
        agent_session_id, ..
    }) = t2.iter().find(|e| matches!(e, AgentEvent::Started { .. }))
    {
        assert_eq!(*agent_session_id, thread, "resume changed the thread");
    }
    let turns = stub.turns();
    assert_eq!(turns.len(), 3, "{}", stub.log());
    assert_contains_all(
        &conversation_text(&turns[2]),
        &[
            "What is 6*7? Use the shell.",
            "42",
            "The answer is 42.",
            "What did I ask you?",
        ],
        "the resumed turn's request",
    );
}

/// An API error ends the turn as an error (after Codex's own retries, for a 4xx none),
/// and the next turn goes on.
#[test]
fn real_codex_api_error_fails_the_turn() {
    if !worker_ready() {
        return;
    }
    let mut net = Net::new("codex_real");
    let stub: OpenAiStub = net.stub(vec![Reply::http_error(
        400,
        "invalid_request_error",
        "The scripted stand-in refuses this one.",
    )]);
    let base_url = format!("{}/v1", net.base_url(&stub));
    let container = idle_worker(&mut net);
    let argv = codex::command(&TurnCommand {
        model: Some(MODEL),
        base_url: Some(&base_url),
        prompt: "Hello?",
        ..Default::default()
    });
    let mut c = Command::new("docker");
    c.args(["exec", &container]).args(&argv);
    let out = crate::support::run_with_timeout(c, "", Duration::from_secs(120));
    let lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    worker::capture("FIRSTMATE_CODEX_CAPTURE", "api_error", &lines);
    let evs = events(&lines);
    match turn_end(&evs).0 {
        TurnOutcome::Error { message } => assert!(
            message.contains("refuses this one") || message.contains("400"),
            "{message}"
        ),
        other => panic!("not an error: {other:?}\n{evs:#?}"),
    }
}

fn codex_env(
    net: &Net,
    stub: &OpenAiStub,
    gateway_extra: &str,
) -> Option<(crate::support::Env, String)> {
    gateway_env(net, &codex_tables(stub, net), gateway_extra)
}

/// The real CLI through the engine and the gateway: a tool call, a follow-up, `stop`,
/// `resume`; the gateway puts the real key on the way out and counts the tokens.
#[test]
fn real_codex_through_the_engine_and_the_gateway_tool_follow_up_stop_and_resume() {
    if !worker_ready() {
        return;
    }
    let net = Net::new("codex_real");
    let stub: OpenAiStub = net.stub(vec![
        Reply::shell("I'll compute that with the shell.", TOOL_COMMAND),
        Reply::text("The answer is 42."),
        Reply::text("You asked me to compute 6*7."),
        Reply::shell("Reading it back.", "cat answer.txt"),
        Reply::text("It still says 42."),
    ]);
    let Some((env, _)) = codex_env(&net, &stub, "") else {
        return;
    };
    let (out, id, lines) = engine_scenario(
        &env,
        "new --agent codex What is 6*7? Use the shell.",
        &|| stub.log(),
    );
    let id = &id;
    let want = [
        "I'll compute that with the shell.",
        "42",
        "agent",
        "The answer is 42.",
        "You asked me to compute 6*7.",
        "Reading it back.",
        "It still says 42.",
        // 5 API calls of 200 in (50 cached) / 40 out, as the gateway counted them.
        "tokens: 750 in, 200 out, 250 cache read, 0 cache write",
    ];
    assert_in_order(
        &lines,
        &want,
        &format!("{}\n--- stand-in\n{}", text(&out), stub.log()),
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("$ ") && l.contains("echo $((6*7))")),
        "the shell call is not shown:\n{}",
        text(&out)
    );
    // Codex calls home on its own (plugins, analytics) unless told not to; the thread
    // would show each refusal.
    let refused: Vec<&String> = lines
        .iter()
        .filter(|l| l.starts_with("egress to "))
        .collect();
    assert!(refused.is_empty(), "Codex called out: {refused:?}");

    let s = env.session(id);
    assert_eq!(s["state"], "stopped", "{s:#}");
    assert_eq!(s["turns"], 3, "{s:#}");
    assert_eq!(s["input_tokens"], 750, "{s:#}");
    assert_eq!(s["output_tokens"], 200, "{s:#}");
    // Per million tokens: 750 * $1 + 200 * $2 + 250 * $0.5 = 1275 micro-dollars.
    let cost = s["cost_usd"].as_f64().unwrap_or(0.0);
    assert!((cost - 0.001275).abs() < 1e-9, "{s:#}");

    // Every call reached the stand-in with the real key, never with the session token.
    let requests = stub.requests();
    assert!(!requests.is_empty());
    for r in &requests {
        assert_eq!(
            r.header("authorization"),
            Some(format!("Bearer {REAL_KEY}").as_str()),
            "{}",
            stub.log()
        );
    }
    // The resumed container continued the same conversation.
    let turns = stub.turns();
    assert_eq!(turns.len(), 5, "{}", stub.log());
    assert_contains_all(
        &conversation_text(&turns[3]),
        &[
            "What is 6*7? Use the shell.",
            "The answer is 42.",
            "What did I ask you?",
            "What is in answer.txt?",
        ],
        "the resumed turn's request",
    );
    assert_key_kept(&env, &format!("firstmate-{id}"), "OPENAI_API_KEY");
    assert!(
        !text(&out).contains(REAL_KEY),
        "the real key is in the output or the logs"
    );
}

/// `interrupt` ends a Codex turn that is streaming; the session goes on with the same
/// conversation.
#[test]
fn real_codex_interrupt_through_the_engine_keeps_the_conversation() {
    if !worker_ready() {
        return;
    }
    let net = Net::new("codex_real");
    let stub: OpenAiStub = net.stub(vec![
        Reply::slow_text("one, two, ", 600, Duration::from_millis(100)),
        Reply::text("Still here."),
    ]);
    let Some((env, _)) = codex_env(&net, &stub, "") else {
        return;
    };
    let out = console_interrupt_scenario(&env, "codex", &|t| stub.wait_turns(1, t));
    assert_interrupt_scenario(&env, &out, &stub.turns(), conversation_text, &stub.log());
}

/// A Codex session on a repository: the workspace is cloned (through the gateway, with
/// a token the worker never sees) before the first turn's exec, on the session's own
/// branch, and the agent's shell works in it.
#[test]
fn real_codex_works_in_a_cloned_repository() {
    const TOKEN: &str = "codex-repo-TEST-token-51c2";
    if !worker_ready() {
        return;
    }
    let git = crate::support::git::GitServer::start(TOKEN);
    let url = git.create_repo("team/demo.git", &[("README.md", "hello from the repo\n")]);
    let net = Net::new("codex_real");
    let stub: OpenAiStub = net.stub(vec![
        Reply::shell(
            "Reading the repository.",
            "cat README.md; git branch --show-current",
        ),
        Reply::text("It says hello."),
    ]);
    let repos = format!(
        "\n[repos.demo]\nurl = \"{url}\"\ndefault_branch = \"main\"\ntoken_file = \"git-token\"\nforge = \"git\"\n"
    );
    let Some((env, _)) = codex_env(&net, &stub, &repos) else {
        return;
    };
    std::fs::write(env.path().join("git-token"), TOKEN).expect("token file");
    let out = worker::console_with_key(
        &env,
        "new --agent codex --repo demo What does the README say?\nstop\n",
    );
    let all = crate::support::stdout(&out);
    let context = format!("{}\n--- stand-in\n{}", text(&out), stub.log());
    assert!(out.status.success(), "{context}");
    let ids = crate::support::session_ids(&all);
    assert_eq!(ids.len(), 1, "{context}");
    let id = &ids[0];
    let lines = crate::support::lines_of(&all, id);
    let at = |needle: &str| {
        lines
            .iter()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("{needle:?} missing from:\n{context}"))
    };
    let branch = format!("firstmate/{id}");
    let workspace = at(&format!("workspace: demo on branch {branch} from main"));
    let readme = at("hello from the repo");
    assert!(workspace < readme, "{context}");
    assert!(
        lines[readme..].iter().any(|l| l.trim() == branch),
        "the shell is not on {branch}:\n{context}"
    );
    at("It says hello.");
    assert!(!text(&out).contains(TOKEN), "the token is in the output");
    let container = crate::support::inspect(&format!("firstmate-{id}")).to_string();
    assert!(
        !container.contains(TOKEN),
        "the token is in the container's settings"
    );
}
