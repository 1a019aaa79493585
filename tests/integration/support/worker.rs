//! What the tests of the real agent CLIs (`claude_real`, `codex_real`) share: the
//! worker image check, an `--internal` Docker network per test (its containers reach
//! the API stand-in on the network's gateway address and nothing else), a firstmate
//! environment whose gateway holds the real key, and the checks that the key stays
//! there.

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use firstmate::protocol::{AgentEvent, TurnOutcome};

use super::stub::{Api, Stub};
use super::{Env, inspect};

pub const WORKER_IMAGE: &str = "firstmate-worker:latest";

/// The `docker run` flags of firstmate's own hardening (src/runtime.rs) that an agent CLI
/// has to live with: an init as PID 1, a read-only root, a `/tmp` tmpfs where programs run.
pub const HARDENED: &[&str] = &[
    "--init",
    "--read-only",
    "--tmpfs",
    "/tmp:rw,exec,nosuid,nodev,size=536870912",
];

pub fn quiet(args: &[&str]) -> bool {
    Command::new("docker")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether Docker and the worker image are there (skip or fail as the run asks).
/// Whether Docker and the worker image are there (skip loudly, or fail when the run
/// requires them); `what` names the test for the skip message.
pub fn worker_ready(what: &str) -> bool {
    let why = if !quiet(&["info"]) {
        "no Docker daemon answers: start dockerd, or run scripts/test".to_string()
    } else if !quiet(&["image", "inspect", WORKER_IMAGE]) {
        format!(
            "the image {WORKER_IMAGE} is missing: run scripts/build-images worker \
             (FIRSTMATE_EXTRA_CA_CERTS=... behind a TLS-inspecting proxy)"
        )
    } else {
        return true;
    };
    if super::required() {
        panic!("Docker and the worker image are required for this test run: {why}");
    }
    eprintln!("\n!!! SKIPPING {what}: {why} !!!\n");
    false
}

pub fn suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..10].to_string()
}

/// An internal Docker network, and the volumes and containers a test made on it; all
/// removed on drop.
pub struct Net {
    pub name: String,
    pub gateway: String,
    pub volumes: Vec<String>,
    pub containers: Vec<String>,
}

impl Net {
    /// A network for the tests of `what` (`claude_real`, `codex_real`).
    pub fn new(what: &str) -> Net {
        let name = format!("fm-{}-{}", what.replace('_', "-"), suffix());
        let out = Command::new("docker")
            .args(["network", "create", "--internal", "--label"])
            .arg(format!("firstmate.test={what}"))
            .arg(&name)
            .output()
            .expect("docker network create");
        assert!(
            out.status.success(),
            "docker network create: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = Command::new("docker")
            .args(["network", "inspect", &name, "--format"])
            .arg("{{(index .IPAM.Config 0).Gateway}}")
            .output()
            .expect("docker network inspect");
        let gateway = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert!(!gateway.is_empty(), "network {name} has no gateway address");
        Net {
            name,
            gateway,
            volumes: Vec::new(),
            containers: Vec::new(),
        }
    }

    /// The stand-in, listening on this network's gateway address.
    pub fn stub<A: Api>(&self, script: Vec<A::Reply>) -> Stub<A> {
        Stub::start(&format!("{}:0", self.gateway), script)
    }

    pub fn base_url<A: Api>(&self, stub: &Stub<A>) -> String {
        format!("http://{}:{}", self.gateway, stub.port())
    }

    pub fn volume(&mut self, what: &str) -> String {
        let v = format!("{}-{what}", self.name);
        self.volumes.push(v.clone());
        v
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for c in &self.containers {
            quiet(&["rm", "-f", c]);
        }
        for v in &self.volumes {
            quiet(&["volume", "rm", "-f", v]);
        }
        quiet(&["network", "rm", &self.name]);
    }
}

pub fn texts(evs: &[AgentEvent]) -> Vec<String> {
    evs.iter()
        .filter_map(|e| match e {
            AgentEvent::Text { text } => Some(text.clone()),
            _ => None,
        })
        .collect()
}

/// The one `TurnEnd` of a turn's events.
pub fn turn_end(
    evs: &[AgentEvent],
) -> (TurnOutcome, firstmate::protocol::Usage, Option<f64>, String) {
    let ends: Vec<_> = evs
        .iter()
        .filter_map(|e| match e {
            AgentEvent::TurnEnd {
                outcome,
                usage,
                cost_usd,
                agent_session_id,
            } => Some((
                outcome.clone(),
                *usage,
                *cost_usd,
                agent_session_id.clone().unwrap_or_default(),
            )),
            _ => None,
        })
        .collect();
    assert_eq!(ends.len(), 1, "not one turn end in {evs:#?}");
    ends[0].clone()
}

pub fn started(evs: &[AgentEvent]) -> String {
    evs.iter()
        .find_map(|e| match e {
            AgentEvent::Started {
                agent_session_id, ..
            } => Some(agent_session_id.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no Started in {evs:#?}"))
}

pub fn assert_contains_all(haystack: &[String], needles: &[&str], what: &str) {
    for n in needles {
        assert!(
            haystack.iter().any(|h| h.contains(n)),
            "{what}: {n:?} is missing from {haystack:#?}"
        );
    }
}

/// The real key the gateway holds in these tests: it must reach the stand-in and appear
/// nowhere else (container, inspect output, database, logs).
pub const REAL_KEY: &str = "sk-ant-firstmate-test-REAL-KEY-5f2c9a";

pub fn free_port(ip: &str) -> u16 {
    std::net::TcpListener::bind((ip, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A test environment whose agents run on `net`, reaching the API stand-in only through
/// firstmate's gateway (which listens on the network's gateway address). `tables` adds
/// the agents and the gateway's upstream (`[gateway.anthropic]` / `[gateway.openai]`,
/// with `api_key_env = "FIRSTMATE_TEST_REAL_KEY"`); `gateway_extra` goes into
/// `[gateway]`. Returns the environment and the gateway's URL.
pub fn gateway_env(net: &Net, tables: &str, gateway_extra: &str) -> Option<(Env, String)> {
    let port = free_port(&net.gateway);
    let gw = format!("{}:{port}", net.gateway);
    let extra = format!(
        r#"
[gateway]
listen = "{gw}"
url = "http://{gw}"
{gateway_extra}

{tables}
"#
    );
    let mut env = Env::new(&extra)?;
    // The generated config has a [docker] table already: put the network in it.
    let mut cfg = std::fs::read_to_string(&env.config).expect("read config");
    // The network is the test's, not firstmate's: a proxy lets workers join it only
    // when told to, as an operator would (`--allow-network`).
    if let Some(old) = env.proxy.take() {
        let proxy = crate::support::ProxyProcess::start_with(&["--allow-network", &net.name]);
        cfg = cfg.replace(&old.host(), &proxy.host());
        env.proxy = Some(proxy);
    }
    let cfg = cfg.replacen(
        "[docker]\n",
        &format!("[docker]\nnetwork = \"{}\"\n", net.name),
        1,
    );
    std::fs::write(&env.config, cfg).expect("write config");
    Some((env, format!("http://{gw}")))
}

pub fn console_with_key(env: &Env, input: &str) -> std::process::Output {
    let mut c = env.command();
    c.arg("console")
        .env("FIRSTMATE_TEST_REAL_KEY", REAL_KEY)
        .env("FIRSTMATE_LOG", "firstmate=debug");
    crate::support::run_with_timeout(c, input, Duration::from_secs(300))
}

/// The real key appears in no container setting and no database row; the container
/// holds a session token as `token_var`.
pub fn assert_key_kept(env: &Env, container: &str, token_var: &str) {
    let c = inspect(container);
    let shown = c.to_string();
    assert!(
        !shown.contains(REAL_KEY),
        "the real key is in the container's inspect output"
    );
    let token = c["Config"]["Env"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|e| {
            e.as_str()?
                .strip_prefix(&format!("{token_var}="))
                .map(str::to_string)
        })
        .next()
        .unwrap_or_else(|| panic!("the container has no session token as {token_var}"));
    assert!(token.starts_with("fm-"), "not a session token: {token}");
    if env.db_url.starts_with("sqlite://") {
        let db = env.path().join("firstmate.db");
        let mut bytes = std::fs::read(&db).expect("read the database");
        for wal in ["firstmate.db-wal", "firstmate.db-shm"] {
            bytes.extend(std::fs::read(env.path().join(wal)).unwrap_or_default());
        }
        let needle = REAL_KEY.as_bytes();
        assert!(
            !bytes.windows(needle.len()).any(|w| w == needle),
            "the real key is in the database"
        );
    } else {
        let dump = Command::new("pg_dump")
            .arg(&env.db_url)
            .output()
            .expect("pg_dump");
        assert!(
            dump.status.success(),
            "pg_dump: {}",
            String::from_utf8_lossy(&dump.stderr)
        );
        assert!(
            !String::from_utf8_lossy(&dump.stdout).contains(REAL_KEY),
            "the real key is in the database"
        );
    }
}

/// Writes a scenario's stdout lines to $`var`/<name>.jsonl when that variable is set:
/// how the fixtures of real output are made.
pub fn capture(var: &str, name: &str, lines: &[String]) {
    if let Ok(dir) = std::env::var(var) {
        let dir = std::path::Path::new(&dir);
        std::fs::create_dir_all(dir).expect("capture dir");
        let mut text = lines.join("\n");
        text.push('\n');
        std::fs::write(dir.join(format!("{name}.jsonl")), text).expect("write capture");
    }
}

/// The events of some lines, none of them malformed.
pub fn events(parse: fn(&str) -> Vec<AgentEvent>, lines: &[String]) -> Vec<AgentEvent> {
    let evs: Vec<AgentEvent> = lines.iter().flat_map(|l| parse(l)).collect();
    for e in &evs {
        assert!(
            !matches!(e, AgentEvent::Malformed { .. }),
            "the parser rejects a real line: {e:?}"
        );
    }
    evs
}

/// `firstmate console` (with the real key) driven by hand: `new --agent AGENT
/// Count slowly.`, then, once `streaming()` says the answer is coming (it waits, at
/// most the time it is given), `interrupt` and `Are you still there?`.
pub fn console_interrupt_scenario(
    env: &Env,
    agent: &str,
    streaming: &dyn Fn(Duration) -> bool,
) -> Output {
    let mut c = env.command();
    c.arg("console")
        .env("FIRSTMATE_TEST_REAL_KEY", REAL_KEY)
        .env("FIRSTMATE_LOG", "firstmate=debug")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().expect("firstmate console");
    let mut stdin = child.stdin.take().expect("stdin");
    writeln!(stdin, "new --agent {agent} Count slowly.").expect("write");
    assert!(
        streaming(Duration::from_secs(120)),
        "the agent never called the API"
    );
    std::thread::sleep(Duration::from_secs(1));
    writeln!(stdin, "interrupt").expect("write");
    writeln!(stdin, "Are you still there?").expect("write");
    drop(stdin);
    super::wait_child(child, Duration::from_secs(180))
}

/// `want` are whole lines of `lines`, in this order; `context` (the output, the
/// stand-in's log) is shown when not.
pub fn assert_in_order(lines: &[String], want: &[&str], context: &str) {
    let mut at = 0;
    for w in want {
        match lines[at..].iter().position(|l| l == w) {
            Some(i) => at += i + 1,
            None => panic!("{w:?} missing (in order) from:\n{context}"),
        }
    }
}

/// What [`console_interrupt_scenario`] must show (with the stand-in's script
/// `[slow text, "Still here."]`): the turn interrupted, the next answered, the stand-in
/// sent the interrupted prompt again with the next (`turns`, read by `convo`), and the
/// session waiting.
pub fn assert_interrupt_scenario(
    env: &Env,
    out: &Output,
    turns: &[serde_json::Value],
    convo: fn(&serde_json::Value) -> Vec<String>,
    log: &str,
) {
    let all = super::stdout(out);
    let id = super::session_ids(&all).remove(0);
    let lines = super::lines_of(&all, &id);
    let context = format!("{}\n--- stand-in\n{log}", super::text(out));
    assert_in_order(&lines, &["-- turn interrupted", "Still here."], &context);
    assert_eq!(turns.len(), 2, "{log}");
    assert_contains_all(
        &convo(&turns[1]),
        &["Count slowly.", "Are you still there?"],
        "the turn after the interrupt",
    );
    let s = env.session(&id);
    assert_eq!(s["state"], "waiting", "{s:#}");
}

/// The engine scenario of the real-CLI tests, through `firstmate console` with the real
/// key: `new_line` (the `new` command), a follow-up, `stop`, `resume`, another prompt,
/// `status`, `stop`. Checks that the console ended well with one session; its output,
/// the session's id and the session's lines.
pub fn engine_scenario(
    env: &Env,
    new_line: &str,
    stand_in_log: &dyn Fn() -> String,
) -> (Output, String, Vec<String>) {
    let input = format!(
        "{new_line}\nWhat did I ask you?\nstop\nresume\nWhat is in answer.txt?\nstatus\nstop\n"
    );
    let out = console_with_key(env, &input);
    let all = super::stdout(&out);
    assert!(
        out.status.success(),
        "{}\n--- stand-in\n{}",
        super::text(&out),
        stand_in_log()
    );
    let ids = super::session_ids(&all);
    assert_eq!(ids.len(), 1, "expected one session in:\n{all}");
    let lines = super::lines_of(&all, &ids[0]);
    (out, ids[0].clone(), lines)
}
