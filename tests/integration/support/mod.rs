//! Shared test support: a test environment with its own config, database (SQLite, or a
//! fresh PostgreSQL database when FIRSTMATE_TEST_DB=postgres) and Docker instance label,
//! so tests run side by side; helpers to drive the real `firstmate` binary; Docker
//! inspection through the `docker` CLI; cleanup of every container and volume the test
//! made.
//!
//! Docker is required: with CI=true (or FIRSTMATE_TEST_REQUIRE_DOCKER=1) a missing daemon
//! or test image fails the test; elsewhere the test is skipped with a loud message.

#![allow(dead_code)]

pub mod anthropic;
pub mod discord;
pub mod forge;
pub mod git;
pub mod http;
pub mod openai;
pub mod service;
pub mod stub;
pub mod synapse;
pub mod worker;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const TEST_IMAGE: &str = "firstmate-test-agent:latest";

pub struct Env {
    pub dir: tempfile::TempDir,
    pub instance: String,
    pub config: PathBuf,
    pub db_url: String,
    /// The socket proxy this environment's engine reaches Docker through, if any.
    pub proxy: Option<ProxyProcess>,
}

fn required() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
        || std::env::var("FIRSTMATE_TEST_REQUIRE_DOCKER").is_ok_and(|v| v == "1")
}

fn docker_ok() -> Result<(), String> {
    let info = Command::new("docker")
        .arg("info")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !matches!(info, Ok(s) if s.success()) {
        return Err("no Docker daemon answers: start dockerd, or run scripts/test".into());
    }
    let img = Command::new("docker")
        .args(["image", "inspect", TEST_IMAGE])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !matches!(img, Ok(s) if s.success()) {
        return Err(format!(
            "the image {TEST_IMAGE} is missing: run scripts/build-images test-agent"
        ));
    }
    Ok(())
}

/// FIRSTMATE_TEST_VIA_PROXY=1: every `Env` reaches Docker through a socket proxy, so
/// the engine's tests show that firstmate needs nothing the proxy refuses.
fn via_proxy() -> bool {
    std::env::var("FIRSTMATE_TEST_VIA_PROXY").is_ok_and(|v| v == "1" || v == "true")
}

/// A `firstmate socket-proxy` in front of the real Docker socket, on a free port of
/// 127.0.0.1; killed when dropped. What it logs is kept for assertions.
pub struct ProxyProcess {
    child: Child,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl ProxyProcess {
    pub fn start() -> ProxyProcess {
        ProxyProcess::start_with(&[])
    }

    /// A proxy started with `args` after `socket-proxy --listen 127.0.0.1:0`.
    pub fn start_with(args: &[&str]) -> ProxyProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_firstmate"))
            .args(["socket-proxy", "--listen", "127.0.0.1:0"])
            .args(args)
            .env("FIRSTMATE_LOG", "info")
            .env_remove("FIRSTMATE_LOG_FORMAT")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn firstmate socket-proxy");
        let stderr = child.stderr.take().expect("stderr");
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let keep = log.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if let Some((_, rest)) = line.split_once("listening on ") {
                    let addr = rest.split(',').next().unwrap_or("").trim().to_string();
                    let _ = tx.send(addr);
                }
                if let Ok(mut l) = keep.lock() {
                    l.push_str(&line);
                    l.push('\n');
                }
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "the socket proxy did not say where it listens:\n{}",
                    log.lock().map(|l| l.clone()).unwrap_or_default()
                );
            }
        };
        ProxyProcess { child, addr, log }
    }

    /// `tcp://127.0.0.1:PORT`, for docker.host and DOCKER_HOST.
    pub fn host(&self) -> String {
        format!("tcp://{}", self.addr)
    }

    /// What the proxy logged so far.
    pub fn log(&self) -> String {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn random_suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..8].to_string()
}

impl Env {
    /// A fresh environment, or None (after a loud message) when Docker is not there and
    /// the run does not require it. `extra` is appended to the generated config.
    pub fn new(extra: &str) -> Option<Env> {
        Env::with_sessions(extra, "")
    }

    /// Like `new`, with extra keys inside `[sessions]`.
    pub fn with_sessions(extra: &str, sessions: &str) -> Option<Env> {
        Env::build(extra, sessions, via_proxy())
    }

    /// Like `new`, with the engine reaching Docker through a `firstmate socket-proxy`.
    pub fn via_proxy(extra: &str) -> Option<Env> {
        Env::build(extra, "", true)
    }

    fn build(extra: &str, sessions: &str, proxied: bool) -> Option<Env> {
        if let Err(why) = docker_ok() {
            if required() {
                panic!("Docker is required for this test run: {why}");
            }
            eprintln!("\n!!! SKIPPING a Docker integration test: {why} !!!\n");
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let instance = format!("test-{}", random_suffix());
        let db_url = match std::env::var("FIRSTMATE_TEST_DB").as_deref() {
            Ok("postgres") => postgres_db(&instance),
            _ => format!("sqlite://{}", dir.path().join("firstmate.db").display()),
        };
        let proxy = proxied.then(ProxyProcess::start);
        let docker_host = proxy
            .as_ref()
            .map(|p| format!("host = \"{}\"\n", p.host()))
            .unwrap_or_default();
        let config = dir.path().join("bot.toml");
        let text = format!(
            r#"[database]
url = "{db_url}"

[docker]
instance = "{instance}"
{docker_host}
[sessions]
default_agent = "scripted"
{sessions}

[agents.scripted]
image = "{TEST_IMAGE}"
protocol = "claude"
memory = "256m"
pids_limit = 256
{extra}
"#
        );
        std::fs::write(&config, text).expect("write config");
        Some(Env {
            dir,
            instance,
            config,
            db_url,
            proxy,
        })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn command(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_firstmate"));
        c.current_dir(self.dir.path())
            .env("FIRSTMATE_CONFIG", &self.config)
            // The caller's logging settings would change what the tests read.
            .env_remove("FIRSTMATE_LOG")
            .env_remove("RUST_LOG")
            .env_remove("FIRSTMATE_LOG_FORMAT");
        c
    }

    /// Runs `firstmate ARGS` to completion.
    pub fn firstmate(&self, args: &[&str]) -> Output {
        let mut c = self.command();
        c.args(args);
        run_with_timeout(c, "", Duration::from_secs(120))
    }

    /// Runs `firstmate console` with `input` on stdin, to completion.
    pub fn console(&self, input: &str) -> Output {
        let mut c = self.command();
        c.arg("console");
        run_with_timeout(c, input, Duration::from_secs(180))
    }

    /// Starts `firstmate console` with piped stdin/stdout, for tests that kill it.
    pub fn spawn_console(&self) -> Child {
        let mut c = self.command();
        c.arg("console")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c.spawn().expect("spawn firstmate console")
    }

    /// `firstmate sessions show ID --json`.
    pub fn session(&self, id: &str) -> serde_json::Value {
        let out = self.firstmate(&["sessions", "show", id, "--json"]);
        assert!(out.status.success(), "sessions show failed: {}", text(&out));
        serde_json::from_slice(&out.stdout).expect("sessions show --json prints JSON")
    }

    /// Polls the session until `pred` holds or `timeout` passes.
    pub fn wait_session(
        &self,
        id: &str,
        timeout: Duration,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.session(id);
            if pred(&s) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "session {id} did not reach the expected state; last seen: {s:#}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The containers of this test's instance.
    pub fn containers(&self) -> Vec<String> {
        let out = Command::new("docker")
            .args([
                "ps",
                "-aq",
                "--no-trunc",
                "--filter",
                &format!("label=firstmate.instance={}", self.instance),
            ])
            .output()
            .expect("docker ps");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Env {
    /// Removes what the test's instance made: containers (workers, the relay), then the
    /// volumes and the session networks they held.
    fn drop(&mut self) {
        let filter = format!("label=firstmate.instance={}", self.instance);
        for (list, rm) in [
            (["ps", "-aq"].as_slice(), ["rm", "-f"].as_slice()),
            (&["volume", "ls", "-q"], &["volume", "rm", "-f"]),
            (&["network", "ls", "-q"], &["network", "rm"]),
        ] {
            let Ok(out) = Command::new("docker")
                .args(list)
                .args(["--filter", &filter])
                .output()
            else {
                continue;
            };
            let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .map(str::to_string)
                .collect();
            if !ids.is_empty() {
                let _ = Command::new("docker")
                    .args(rm)
                    .args(&ids)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }
}

fn postgres_db(instance: &str) -> String {
    let base = std::env::var("FIRSTMATE_TEST_PG_URL").unwrap_or_else(|_| {
        panic!("FIRSTMATE_TEST_DB=postgres needs FIRSTMATE_TEST_PG_URL (scripts/test sets both)")
    });
    let name = instance.replace('-', "_");
    let out = Command::new("psql")
        .args([&base, "-q", "-c", &format!("CREATE DATABASE {name}")])
        .output()
        .expect("psql (Debian: postgresql-client)");
    assert!(
        out.status.success(),
        "cannot create the test database: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (prefix, _) = base
        .rsplit_once('/')
        .expect("FIRSTMATE_TEST_PG_URL ends in /DATABASE");
    format!("{prefix}/{name}")
}

pub fn run_with_timeout(mut c: Command, input: &str, timeout: Duration) -> Output {
    c.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().expect("spawn firstmate");
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_string();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(input.as_bytes());
    });
    let out = wait_child(child, timeout);
    let _ = writer.join();
    out
}

/// Waits for a child, killing it (and failing) after `timeout`.
pub fn wait_child(mut child: Child, timeout: Duration) -> Output {
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out_t = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = stdout.read_to_end(&mut b);
        b
    });
    let err_t = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = stderr.read_to_end(&mut b);
        b
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let st = child.wait().expect("wait");
            let o = Output {
                status: st,
                stdout: out_t.join().unwrap_or_default(),
                stderr: err_t.join().unwrap_or_default(),
            };
            panic!("firstmate did not finish within {timeout:?}:\n{}", text(&o));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Output {
        status,
        stdout: out_t.join().unwrap_or_default(),
        stderr: err_t.join().unwrap_or_default(),
    }
}

/// stdout and stderr, for assertion messages.
pub fn text(o: &Output) -> String {
    format!(
        "exit: {:?}\n--- stdout\n{}--- stderr\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The session ids in console output, in order of first appearance.
pub fn session_ids(out: &str) -> Vec<String> {
    let mut ids: Vec<String> = Vec::new();
    for line in out.lines() {
        if let Some(rest) = line.strip_prefix('[')
            && let Some((id, _)) = rest.split_once("] ")
            && !ids.iter().any(|i| i == id)
        {
            ids.push(id.to_string());
        }
    }
    ids
}

/// The lines printed for one session, without the prefix.
pub fn lines_of(out: &str, id: &str) -> Vec<String> {
    let prefix = format!("[{id}] ");
    out.lines()
        .filter_map(|l| l.strip_prefix(&prefix).map(str::to_string))
        .collect()
}

/// `docker inspect NAME` as JSON.
pub fn inspect(name: &str) -> serde_json::Value {
    let out = Command::new("docker")
        .args(["inspect", name])
        .output()
        .expect("docker inspect");
    assert!(out.status.success(), "docker inspect {name} failed");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("inspect JSON");
    v[0].clone()
}

/// After a burst of `new`: the database of `env` holds `n` sessions, each bound in
/// `frontend` to one of `threads` and no two to the same one, and each session's event
/// log is gap-free and unique (1, 2, 3 ...).
pub async fn check_burst(
    env: &Env,
    frontend: &str,
    n: usize,
    threads: &std::collections::HashSet<String>,
) {
    let store = firstmate::store::Store::open(&env.db_url)
        .await
        .expect("database");
    let all = store.sessions(&env.instance, &[]).await.expect("sessions");
    assert_eq!(all.len(), n, "one session per `new`");
    let mut bound = std::collections::HashSet::new();
    for s in &all {
        let b = store
            .binding(&s.id, frontend)
            .await
            .expect("binding")
            .unwrap_or_else(|| panic!("session {} ({}) has no thread", s.id, s.state));
        assert!(threads.contains(&b.thread_ref), "{b:?}");
        assert!(
            bound.insert(b.thread_ref.clone()),
            "two sessions share {b:?}"
        );
        let seqs: Vec<i64> = store
            .events_after(&s.id, 0, 100_000)
            .await
            .expect("events")
            .iter()
            .map(|e| e.seq)
            .collect();
        let want: Vec<i64> = (1..=seqs.len() as i64).collect();
        assert_eq!(seqs, want, "session {}: the log is not gapless", s.id);
    }
    store.close().await;
}

/// A console killed and started again: each of `expected` is printed for session `id`
/// exactly once across the first console's output (`first`) and the second's
/// (`second`, its whole output for the failure message).
pub fn assert_each_once(id: &str, expected: &[&str], first: &str, second: &Output) {
    let all = format!("{first}{}", stdout(second));
    for e in expected {
        let n = lines_of(&all, id).iter().filter(|l| l == e).count();
        assert_eq!(
            n,
            1,
            "`{e}` appears {n} times:\n--- first console\n{first}--- second console\n{}",
            text(second)
        );
    }
}

/// A `firstmate console` driven line by line: input written as the test goes, output
/// read until a line it waits for.
pub struct LiveConsole {
    pub child: Child,
    stdin: Option<std::process::ChildStdin>,
    out: BufReader<std::process::ChildStdout>,
    /// Everything it printed so far.
    pub seen: String,
}

impl LiveConsole {
    pub fn start(env: &Env) -> LiveConsole {
        let mut child = env.spawn_console();
        let stdin = child.stdin.take();
        let out = BufReader::new(child.stdout.take().expect("stdout"));
        LiveConsole {
            child,
            stdin,
            out,
            seen: String::new(),
        }
    }

    pub fn write(&mut self, input: &str) {
        let stdin = self.stdin.as_mut().expect("stdin is open");
        stdin.write_all(input.as_bytes()).expect("write");
        stdin.flush().expect("flush");
    }

    /// Reads until a line that contains `marker`; panics if the console ends first.
    pub fn until(&mut self, marker: &str) {
        loop {
            let mut line = String::new();
            if self.out.read_line(&mut line).expect("read") == 0 {
                panic!("the console ended before {marker:?}:\n{}", self.seen);
            }
            self.seen.push_str(&line);
            if line.contains(marker) {
                return;
            }
        }
    }

    /// The id of the first session it printed.
    pub fn session(&self) -> String {
        session_ids(&self.seen).remove(0)
    }

    /// Kills it with SIGKILL.
    pub fn kill(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.seen
    }

    /// Closes its input and waits for it to end: everything it printed.
    pub fn finish(mut self) -> String {
        drop(self.stdin.take());
        self.child.stdout = Some(self.out.into_inner());
        let rest = wait_child(self.child, Duration::from_secs(120));
        format!("{}{}", self.seen, text(&rest))
    }
}
