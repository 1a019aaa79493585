//! The real Claude Code CLI, in `firstmate-worker:latest`, against the scripted stand-in
//! of the Anthropic Messages API (`support::anthropic`).
//!
//! Each test makes its own `--internal` Docker network: its containers reach the stand-in
//! on the network's gateway address (the stand-in listens there) and nothing else, so no
//! test reaches the internet, whatever the CLI tries. The CLI also gets the variables
//! that stop it phoning home.
//!
//! Docker and the worker image are required like the rest of the suite: skipped loudly
//! without them, a failure with CI=true (or FIRSTMATE_TEST_REQUIRE_DOCKER=1).
//!
//! With FIRSTMATE_CLAUDE_CAPTURE=DIR the CLI's stdout of each scenario is written to
//! DIR/<scenario>.jsonl: that is how `tests/fixtures/claude/real/` was made.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use firstmate::protocol::claude::{encode_interrupt, encode_prompt, parse_line};
use firstmate::protocol::{AgentEvent, TurnOutcome};
use serde_json::Value;

use crate::support::anthropic::{AnthropicStub, Reply, conversation_text};
use crate::support::worker::{
    self, HARDENED, Net, REAL_KEY, WORKER_IMAGE, assert_contains_all, assert_in_order,
    assert_interrupt_scenario, assert_key_kept, console_interrupt_scenario, console_with_key,
    engine_scenario, gateway_env, started, texts, turn_end,
};
use crate::support::{inspect, lines_of, session_ids, stdout, text};

fn worker_ready() -> bool {
    worker::worker_ready("a real Claude Code test")
}

fn events(lines: &[String]) -> Vec<AgentEvent> {
    worker::events(parse_line, lines)
}

fn capture(name: &str, lines: &[String]) {
    worker::capture("FIRSTMATE_CLAUDE_CAPTURE", name, lines)
}

/// The `claude` agent on the worker image, and the gateway's Anthropic upstream.
fn claude_tables(stub: &AnthropicStub, net: &Net) -> String {
    let mut env_table = String::new();
    for (i, (k, v)) in QUIET_ENV.iter().enumerate() {
        if i > 0 {
            env_table.push_str(", ");
        }
        env_table.push_str(&format!("{k} = \"{v}\""));
    }
    format!(
        r#"
[agents.claude]
image = "{WORKER_IMAGE}"
protocol = "claude"
memory = "2g"
pids_limit = 512
env = {{ {env_table} }}

[gateway.prices."claude-"]
input = 1.0
output = 2.0

[gateway.prices."claude-haiku-4-5"]
input = 1.0
output = 2.0

[gateway.anthropic]
upstream = "{upstream}"
api_key_env = "FIRSTMATE_TEST_REAL_KEY"
"#,
        upstream = net.base_url(stub)
    )
}

/// What keeps the CLI from calling anything but the API it is pointed at.
const QUIET_ENV: [(&str, &str); 5] = [
    ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1"),
    ("DISABLE_AUTOUPDATER", "1"),
    ("DISABLE_TELEMETRY", "1"),
    ("DISABLE_ERROR_REPORTING", "1"),
    ("DISABLE_BUG_COMMAND", "1"),
];

const TURN_TIMEOUT: Duration = Duration::from_secs(90);

/// `claude -p` in stream-json mode in a worker container, driven line by line.
struct Cli {
    child: Child,
    stdin: Option<ChildStdin>,
    rx: mpsc::Receiver<String>,
    stderr: Option<std::thread::JoinHandle<String>>,
    /// Every stdout line so far.
    lines: Vec<String>,
}

impl Cli {
    /// Starts the CLI with a home and a workspace volume, `env` and `args` added.
    fn start(
        net: &mut Net,
        stub: &AnthropicStub,
        volumes: (&str, &str),
        env: &[&str],
        args: &[&str],
    ) -> Cli {
        let name = format!("{}-cli-{}", net.name, net.containers.len());
        net.containers.push(name.clone());
        let mut cmd = Command::new("docker");
        cmd.args(["run", "--rm", "-i", "--name", &name, "--network", &net.name]);
        cmd.args(HARDENED);
        cmd.args(["-v", &format!("{}:/home/agent", volumes.0)]);
        cmd.args(["-v", &format!("{}:/workspace", volumes.1)]);
        cmd.args(["-e", &format!("ANTHROPIC_BASE_URL={}", net.base_url(stub))]);
        cmd.args(["-e", "ANTHROPIC_API_KEY=dummy"]);
        for (k, v) in QUIET_ENV {
            cmd.args(["-e", &format!("{k}={v}")]);
        }
        for e in env {
            cmd.args(["-e", e]);
        }
        cmd.arg(WORKER_IMAGE);
        cmd.args(firstmate::protocol::claude::command(
            None,
            Some("bypassPermissions"),
            None,
            &args.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
        ));
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("docker run");
        let stdin = child.stdin.take();
        let out = child.stdout.take().expect("stdout");
        let mut err = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        });
        Cli {
            child,
            stdin,
            rx,
            stderr: Some(stderr),
            lines: Vec::new(),
        }
    }

    fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin is open");
        stdin.write_all(line.as_bytes()).expect("write to the CLI");
        stdin.flush().expect("flush");
    }

    /// The stdout lines up to and including the first that satisfies `done`.
    fn until(&mut self, what: &str, done: impl Fn(&Value) -> bool) -> Vec<String> {
        let deadline = Instant::now() + TURN_TIMEOUT;
        let mut got = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) => {
                    self.lines.push(line.clone());
                    let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
                    got.push(line);
                    if done(&v) {
                        return got;
                    }
                }
                Err(e) => panic!(
                    "no {what} from the CLI ({e:?}); its output so far:\n{}",
                    self.lines.join("\n")
                ),
            }
        }
    }

    /// The stdout lines of one turn, up to its `result`.
    fn turn(&mut self) -> Vec<String> {
        self.until("result", |v| v["type"] == "result")
    }

    /// Closes stdin and waits for the CLI to exit: its status, stderr and every stdout
    /// line.
    fn finish(mut self) -> (ExitStatus, String, Vec<String>) {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                break st;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("the CLI did not exit after its stdin closed");
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        while let Ok(line) = self.rx.recv_timeout(Duration::from_secs(2)) {
            self.lines.push(line);
        }
        let err = self.stderr.take().map(|t| t.join().unwrap_or_default());
        (
            status,
            err.unwrap_or_default(),
            std::mem::take(&mut self.lines),
        )
    }
}

const TOOL_COMMAND: &str = "echo $((6*7)) | tee answer.txt; id -un";

#[test]
fn real_claude_two_turns_with_a_tool_then_resume_in_a_new_container() {
    if !worker_ready() {
        return;
    }
    let mut net = Net::new("claude_real");
    let stub = net.stub(vec![
        Reply::bash("I'll compute that with the shell.", TOOL_COMMAND),
        Reply::text("The answer is 42."),
        Reply::text("You asked me to compute 6*7."),
    ]);
    let home = net.volume("home");
    let ws = net.volume("workspace");

    let mut cli = Cli::start(&mut net, &stub, (&home, &ws), &[], &[]);
    cli.send(&encode_prompt("What is 6*7? Use the shell."));
    let t1 = events(&cli.turn());
    let sid = started(&t1);
    let tool_id = t1
        .iter()
        .find_map(|e| match e {
            AgentEvent::ToolUse {
                id, name, summary, ..
            } => {
                assert_eq!(name, "Bash");
                assert_eq!(summary, TOOL_COMMAND);
                Some(id.clone())
            }
            _ => None,
        })
        .unwrap_or_else(|| panic!("no tool use in {t1:#?}"));
    // The tool really ran, in the container, as its user.
    assert!(
        t1.contains(&AgentEvent::ToolResult {
            tool_use_id: tool_id,
            output: "42\nagent".into(),
            is_error: false,
        }),
        "no tool result `42 agent` in {t1:#?}"
    );
    assert_eq!(
        texts(&t1),
        ["I'll compute that with the shell.", "The answer is 42."]
    );
    let (outcome, usage, cost, end_sid) = turn_end(&t1);
    assert_eq!(outcome, TurnOutcome::Done);
    // Two API calls of 120 in / 30 out each (the stand-in's default usage).
    assert_eq!((usage.input_tokens, usage.output_tokens), (240, 60));
    let cost1 = cost.expect("a cost");
    assert!(cost1 > 0.0, "no cost: {cost1}");
    assert_eq!(end_sid, sid);

    cli.send(&encode_prompt("What did I ask you?"));
    let t2 = events(&cli.turn());
    assert_eq!(texts(&t2), ["You asked me to compute 6*7."]);
    let (outcome, usage, cost, end_sid) = turn_end(&t2);
    assert_eq!(outcome, TurnOutcome::Done);
    assert_eq!((usage.input_tokens, usage.output_tokens), (120, 30));
    // total_cost_usd is the process's running total, not the turn's.
    assert!(cost.expect("a cost") > cost1);
    assert_eq!(end_sid, sid);
    let (status, stderr, all) = cli.finish();
    assert!(status.success(), "the CLI failed: {status:?}\n{stderr}");
    capture("two_turns_tool", &all);

    // The follow-up turn carried the whole conversation.
    let turns = stub.turns();
    assert_eq!(turns.len(), 3, "{}", stub.log());
    let convo = conversation_text(&turns[2]);
    assert_contains_all(
        &convo,
        &[
            "What is 6*7? Use the shell.",
            TOOL_COMMAND,
            "42\nagent",
            "The answer is 42.",
            "What did I ask you?",
        ],
        "the second turn's request",
    );

    // --resume in a second container on the same home and workspace volumes.
    stub.push([
        Reply::bash("Reading it back.", "cat answer.txt"),
        Reply::text("It still says 42."),
    ]);
    let mut cli = Cli::start(&mut net, &stub, (&home, &ws), &[], &["--resume", &sid]);
    cli.send(&encode_prompt("What is in answer.txt?"));
    let t3 = events(&cli.turn());
    assert_eq!(started(&t3), sid, "resume started another conversation");
    assert!(
        t3.iter().any(|e| matches!(e, AgentEvent::ToolResult { output, is_error: false, .. } if output == "42")),
        "the workspace did not persist: {t3:#?}"
    );
    assert_eq!(texts(&t3), ["Reading it back.", "It still says 42."]);
    let (outcome, _, _, end_sid) = turn_end(&t3);
    assert_eq!(outcome, TurnOutcome::Done);
    assert_eq!(end_sid, sid);
    let (status, stderr, all) = cli.finish();
    assert!(
        status.success(),
        "the resumed CLI failed: {status:?}\n{stderr}"
    );
    capture("resume", &all);
    let turns = stub.turns();
    assert_eq!(turns.len(), 5, "{}", stub.log());
    assert_contains_all(
        &conversation_text(&turns[3]),
        &[
            "What is 6*7? Use the shell.",
            "The answer is 42.",
            "What did I ask you?",
            "You asked me to compute 6*7.",
            "What is in answer.txt?",
        ],
        "the resumed turn's request",
    );
}

#[test]
fn real_claude_api_errors_end_the_turn_and_the_conversation_goes_on() {
    if !worker_ready() {
        return;
    }
    let mut net = Net::new("claude_real");
    // Each turn gets its replies just before it, and what it left is dropped after it:
    // the CLI retries some errors on its own.
    let stub = net.stub(Vec::new());
    let home = net.volume("home");
    let ws = net.volume("workspace");
    let mut cli = Cli::start(
        &mut net,
        &stub,
        (&home, &ws),
        &["CLAUDE_CODE_MAX_RETRIES=1"],
        &[],
    );

    let unauthorized = || Reply::http_error(401, "authentication_error", "invalid x-api-key");
    stub.push([unauthorized(), unauthorized(), unauthorized()]);
    cli.send(&encode_prompt("First try."));
    let t1 = events(&cli.turn());
    stub.clear();
    // The CLI's own assistant line with the error text is not shown as agent text:
    // the turn end carries it.
    assert_eq!(texts(&t1), Vec::<String>::new(), "{t1:#?}");
    match turn_end(&t1).0 {
        TurnOutcome::Error { message } => {
            assert!(message.contains("Invalid API key"), "{message}");
            assert!(message.contains("401"), "{message}");
        }
        other => panic!("turn 1 did not fail: {other:?}"),
    }

    // Retried once (CLAUDE_CODE_MAX_RETRIES=1), then given up.
    let overloaded = || Reply::http_error(529, "overloaded_error", "Overloaded");
    stub.push([overloaded(), overloaded(), overloaded()]);
    cli.send(&encode_prompt("Second try."));
    let t2 = events(&cli.turn());
    assert_eq!(stub.clear(), 1, "not one retry:\n{}", stub.log());
    assert!(
        t2.iter()
            .any(|e| matches!(e, AgentEvent::Unknown { kind, .. } if kind == "system/api_retry")),
        "no api_retry in {t2:#?}"
    );
    assert_eq!(texts(&t2), Vec::<String>::new(), "{t2:#?}");
    match turn_end(&t2).0 {
        TurnOutcome::Error { message } => {
            assert!(message.contains("529"), "{message}");
            assert!(message.contains("Overloaded"), "{message}");
        }
        other => panic!("turn 2 did not fail: {other:?}"),
    }

    stub.push([Reply::text("Recovered.")]);
    cli.send(&encode_prompt("Third try."));
    let t3 = events(&cli.turn());
    assert_eq!(texts(&t3), ["Recovered."]);
    assert_eq!(turn_end(&t3).0, TurnOutcome::Done);
    let (status, stderr, all) = cli.finish();
    assert!(status.success(), "the CLI failed: {status:?}\n{stderr}");
    capture("api_error", &all);
    assert_eq!(stub.remaining(), 0);
}

#[test]
fn real_claude_interrupt_ends_a_streaming_turn_and_a_tool_and_the_conversation_goes_on() {
    if !worker_ready() {
        return;
    }
    let mut net = Net::new("claude_real");
    let long_command = "timeout 120 tail -f /dev/null; echo finished";
    let stub = net.stub(vec![
        // About 30 s of text, one word every 200 ms.
        Reply::slow_text("tick ", 150, Duration::from_millis(200)),
        Reply::bash("Waiting for it.", long_command),
        Reply::text("Still here after two interrupts."),
    ]);
    let home = net.volume("home");
    let ws = net.volume("workspace");
    let mut cli = Cli::start(&mut net, &stub, (&home, &ws), &[], &[]);

    // 1. While the answer streams.
    cli.send(&encode_prompt("Count slowly."));
    assert!(
        stub.wait_turns(1, TURN_TIMEOUT),
        "the CLI made no request: {}",
        stub.log()
    );
    std::thread::sleep(Duration::from_millis(1500));
    cli.send(&encode_interrupt("interrupt-1"));
    let lines = cli.turn();
    assert!(
        lines.iter().any(|l| l.contains("\"control_response\"")
            && l.contains("interrupt-1")
            && l.contains("\"success\"")),
        "no control_response for the interrupt: {lines:#?}"
    );
    let t1 = events(&lines);
    assert_eq!(turn_end(&t1).0, TurnOutcome::Interrupted, "{t1:#?}");
    // What had streamed before the interrupt is kept as the assistant's text.
    assert!(texts(&t1).iter().all(|t| t.starts_with("tick")), "{t1:#?}");

    // 2. While a tool runs.
    cli.send(&encode_prompt("Run the long command."));
    let mut lines = cli.until("tool use", |v| {
        v["type"] == "assistant"
            && v["message"]["content"]
                .as_array()
                .is_some_and(|c| c.iter().any(|b| b["type"] == "tool_use"))
    });
    std::thread::sleep(Duration::from_millis(1500));
    cli.send(&encode_interrupt("interrupt-2"));
    lines.extend(cli.turn());
    let t2 = events(&lines);
    assert!(
        t2.iter()
            .any(|e| matches!(e, AgentEvent::ToolUse { summary, .. } if summary == long_command)),
        "{t2:#?}"
    );
    assert_eq!(turn_end(&t2).0, TurnOutcome::Interrupted, "{t2:#?}");
    assert!(
        !t2.iter().any(
            |e| matches!(e, AgentEvent::ToolResult { output, .. } if output.contains("finished"))
        ),
        "the tool was not interrupted: {t2:#?}"
    );

    // 3. The conversation goes on, with what came before.
    cli.send(&encode_prompt("Are you still there?"));
    let t3 = events(&cli.turn());
    assert_eq!(texts(&t3), ["Still here after two interrupts."]);
    assert_eq!(turn_end(&t3).0, TurnOutcome::Done);
    let (status, stderr, all) = cli.finish();
    assert!(status.success(), "the CLI failed: {status:?}\n{stderr}");
    capture("interrupt", &all);
    let turns = stub.turns();
    assert_eq!(turns.len(), 3, "{}", stub.log());
    assert_contains_all(
        &conversation_text(&turns[2]),
        &[
            "Count slowly.",
            "Run the long command.",
            long_command,
            "Are you still there?",
        ],
        "the turn after the interrupts",
    );
}

/// The real CLI run by the firstmate engine (`firstmate console`), as a configured agent:
/// The real CLI through the engine and the gateway: a tool call, a follow-up, `stop`,
/// `resume`; the gateway puts the real key on the way out and counts the tokens.
#[test]
fn real_claude_through_the_engine_and_the_gateway_tool_follow_up_stop_and_resume() {
    if !worker_ready() {
        return;
    }
    let net = Net::new("claude_real");
    let stub = net.stub(vec![
        Reply::bash("I'll compute that with the shell.", TOOL_COMMAND),
        Reply::text("The answer is 42."),
        Reply::text("You asked me to compute 6*7."),
        Reply::bash("Reading it back.", "cat answer.txt"),
        Reply::text("It still says 42."),
    ]);
    let Some((env, _)) = gateway_env(&net, &claude_tables(&stub, &net), "") else {
        return;
    };

    let (out, id, lines) = engine_scenario(
        &env,
        "new --agent claude --model claude-haiku-4-5 What is 6*7? Use the shell.",
        &|| stub.log(),
    );
    let id = &id;
    // Claude Code calls home on its own (telemetry, error reports) unless told not to;
    // the thread would show each refusal.
    let refused: Vec<&String> = lines
        .iter()
        .filter(|l| l.starts_with("egress to "))
        .collect();
    assert!(refused.is_empty(), "Claude Code called out: {refused:?}");
    let want = [
        "I'll compute that with the shell.",
        &format!("$ {TOOL_COMMAND}"),
        "42",
        "agent",
        "The answer is 42.",
        "You asked me to compute 6*7.",
        "$ cat answer.txt",
        "It still says 42.",
        // 2 + 1 + 2 API calls of 120 in / 30 out, as the gateway counted them.
        "tokens: 600 in, 150 out, 0 cache read, 0 cache write",
    ];
    assert_in_order(
        &lines,
        &want,
        &format!("{}\n--- stand-in\n{}", text(&out), stub.log()),
    );

    let s = env.session(id);
    assert_eq!(s["state"], "stopped", "{s:#}");
    assert_eq!(s["turns"], 3, "{s:#}");
    assert_eq!(s["input_tokens"], 600, "{s:#}");
    assert_eq!(s["output_tokens"], 150, "{s:#}");
    // $1 / $2 per million tokens (the config's price): 600 * 1 + 150 * 2 = 900 micro-dollars.
    let cost = s["cost_usd"].as_f64().unwrap_or(0.0);
    assert!((cost - 0.0009).abs() < 1e-9, "{s:#}");

    // Every call reached the stand-in with the real key, never with the session token.
    let requests = stub.requests();
    assert!(!requests.is_empty());
    for r in &requests {
        assert_eq!(r.header("x-api-key"), Some(REAL_KEY), "{}", stub.log());
    }
    // `new --model` reached the CLI, before and after `resume`.
    for t in stub.turns() {
        assert_eq!(t["model"], "claude-haiku-4-5", "{}", stub.log());
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
    assert_key_kept(&env, &format!("firstmate-{id}"), "ANTHROPIC_API_KEY");
    assert!(
        !text(&out).contains(REAL_KEY),
        "the real key is in the output or the logs"
    );
    assert_eq!(
        inspect(&format!("firstmate-{id}"))["Config"]["User"],
        "agent"
    );
}

/// A session that reaches its spending limit is stopped with a clear message; its token
/// is refused afterwards, and so is any unknown token, without reaching the upstream.
#[test]
fn real_claude_spending_limit_stops_the_session_and_dead_tokens_get_401() {
    if !worker_ready() {
        return;
    }
    let net = Net::new("claude_real");
    // Each call costs 120 * $1 + 30 * $2 per million = $0.00018: the limit is hit at once.
    let stub = net.stub(vec![
        Reply::bash("Working on it.", "echo one"),
        Reply::text("Done."),
        Reply::text("never sent"),
    ]);
    let Some((env, gw_url)) = gateway_env(
        &net,
        &claude_tables(&stub, &net),
        "session_limit_usd = 0.0001",
    ) else {
        return;
    };
    let out = console_with_key(&env, "new --agent claude Do the thing.\n");
    let all = stdout(&out);
    let id = session_ids(&all).remove(0);
    let s = env.wait_session(&id, Duration::from_secs(120), |s| s["state"] == "stopped");
    assert!(
        s["detail"]
            .as_str()
            .unwrap_or("")
            .contains("spending limit"),
        "{s:#}\n{}",
        text(&out)
    );
    assert!(
        lines_of(&all, &id)
            .iter()
            .any(|l| l.contains("spending limit")),
        "the console does not say why:\n{}",
        text(&out)
    );
    assert!(
        stub.remaining() >= 2,
        "a call went through past the limit:\n{}",
        stub.log()
    );

    // The gateway of `firstmate run` refuses the stopped session's token and a made-up one.
    let token = inspect(&format!("firstmate-{id}"))["Config"]["Env"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .find_map(|e| {
            e.as_str()?
                .strip_prefix("ANTHROPIC_API_KEY=")
                .map(str::to_string)
        })
        .expect("token");
    let service = crate::support::service::Service::spawn(
        &env,
        "info",
        &[("FIRSTMATE_TEST_REAL_KEY", REAL_KEY)],
    );
    let calls_before = stub.requests().len();
    let host = gw_url.trim_start_matches("http://").to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status_of = |key: &str| -> Option<u16> {
        let mut conn = std::net::TcpStream::connect(&host).ok()?;
        let body = r#"{"model":"claude-x","max_tokens":10,"messages":[]}"#;
        write!(
            conn,
            "POST /anthropic/v1/messages HTTP/1.1\r\nHost: {host}\r\nx-api-key: {key}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .ok()?;
        let mut resp = String::new();
        conn.read_to_string(&mut resp).ok()?;
        resp.split_whitespace().nth(1)?.parse().ok()
    };
    let mut got = None;
    while Instant::now() < deadline {
        got = status_of(&token);
        if got.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let made_up = status_of("fm-0000");
    drop(service);
    assert_eq!(got, Some(401), "the stopped session's token");
    assert_eq!(made_up, Some(401), "an unknown token");
    assert_eq!(
        stub.requests().len(),
        calls_before,
        "a refused call reached the upstream"
    );
}

/// `interrupt` through the engine ends a streaming Claude Code turn; the session goes on
/// with the same conversation.
#[test]
fn real_claude_interrupt_through_the_engine_keeps_the_conversation() {
    if !worker_ready() {
        return;
    }
    let net = Net::new("claude_real");
    let stub = net.stub(vec![
        Reply::slow_text("one, two, ", 600, Duration::from_millis(100)),
        Reply::text("Still here."),
    ]);
    let Some((env, _)) = gateway_env(&net, &claude_tables(&stub, &net), "") else {
        return;
    };
    let out = console_interrupt_scenario(&env, "claude", &|t| stub.wait_turns(1, t));
    assert_interrupt_scenario(&env, &out, &stub.turns(), conversation_text, &stub.log());
}

/// `permission_mode = "ask"` with the real CLI: its `can_use_tool` requests reach the
/// console; an approved Bash call runs and its output goes back to the model; a denied
/// one never runs, and the model reads the refusal.
#[test]
fn real_claude_asks_and_the_answer_decides() {
    if !worker_ready() {
        return;
    }
    let net = Net::new("claude_real");
    let stub = net.stub(vec![
        Reply::bash(
            "Writing a.",
            "echo approved > /workspace/a.txt && echo wrote-a",
        ),
        Reply::text("Done a."),
        Reply::bash(
            "Writing b.",
            "echo denied > /workspace/b.txt && echo wrote-b",
        ),
        Reply::text("Done b."),
    ]);
    let tables = claude_tables(&stub, &net).replacen(
        "protocol = \"claude\"\n",
        "protocol = \"claude\"\npermission_mode = \"ask\"\n",
        1,
    );
    let Some((env, _)) = gateway_env(&net, &tables, "") else {
        return;
    };
    let out = console_with_key(
        &env,
        "new --agent claude --model claude-haiku-4-5 Write a.\n\
         approve\n\
         Write b.\n\
         deny\n\
         get a.txt\n\
         get b.txt\n\
         stop\n",
    );
    let all = format!("{}\n--- stand-in\n{}", text(&out), stub.log());
    let ids = session_ids(&stdout(&out));
    assert_eq!(ids.len(), 1, "{all}");
    let lines = lines_of(&stdout(&out), &ids[0]);
    assert_in_order(
        &lines,
        &[
            "Writing a.",
            "$ echo approved > /workspace/a.txt && echo wrote-a",
            "? Bash: echo approved > /workspace/a.txt && echo wrote-a: ✅ approved by console",
            "wrote-a",
            "Done a.",
            "Writing b.",
            "? Bash: echo denied > /workspace/b.txt && echo wrote-b: ❌ denied by console",
            "Not run: denied by console in the chat.",
            "Done b.",
        ],
        &all,
    );
    // What ran and what did not.
    assert_eq!(
        std::fs::read_to_string(env.path().join("a.txt"))
            .ok()
            .as_deref(),
        Some("approved\n"),
        "{all}"
    );
    assert!(text(&out).contains("b.txt: no such file"), "{all}");
    assert!(!lines.iter().any(|l| l == "wrote-b"), "{all}");
    // The model got the command's output, then the refusal.
    let turns = stub.turns();
    assert_eq!(turns.len(), 4, "{all}");
    assert_contains_all(
        &conversation_text(&turns[1]),
        &["wrote-a"],
        "after the approval",
    );
    assert_contains_all(
        &conversation_text(&turns[3]),
        &["Not run: denied by console in the chat."],
        "after the denial",
    );
}
