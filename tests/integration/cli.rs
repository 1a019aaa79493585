//! The command line: bad config and bad commands are refused with a message naming the
//! key or the flag, exit code 2, and nothing starts.

use crate::support::{Env, stdout, text};

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn a_bad_command_names_the_flag_exits_2_and_starts_nothing() {
    let Some(env) = Env::new("") else { return };
    for (input, needle) in [
        ("new --agnet scripted say hi\n", "--agnet"),
        ("new --agent nosuch say hi\n", "nosuch"),
        ("new --timeout soon say hi\n", "--timeout"),
        ("new\n", "prompt"),
    ] {
        let out = env.console(input);
        assert_eq!(out.status.code(), Some(2), "{input:?}: {}", text(&out));
        assert!(
            stderr(&out).contains(needle),
            "{input:?} does not name {needle}: {}",
            text(&out)
        );
        assert!(env.containers().is_empty(), "{input:?} started a container");
    }
}

#[test]
fn a_bad_config_names_the_key_and_exits_2() {
    let Some(env) = Env::new("") else { return };
    let bad = env.path().join("bad.toml");
    for (toml, needle) in [
        ("[sessions]\nidel_timeout = \"30m\"\n", "idle_timeout"),
        (
            "[sessions]\nidle_timeout = \"30\"\n",
            "sessions.idle_timeout",
        ),
        (
            "[agents.x]\nimage = \"i\"\nprotocol = \"telnet\"\n",
            "protocol",
        ),
    ] {
        std::fs::write(&bad, toml).expect("write");
        let path = bad.to_string_lossy().to_string();
        for cmd in [
            vec!["config", "--config", &path],
            vec!["console", "--config", &path],
        ] {
            let out = env.firstmate(&cmd);
            assert_eq!(
                out.status.code(),
                Some(2),
                "{cmd:?} with {toml:?}: {}",
                text(&out)
            );
            let err = stderr(&out);
            assert!(
                err.contains(needle),
                "{toml:?}: message does not name {needle}: {err}"
            );
            assert!(
                err.contains("bad.toml"),
                "{toml:?}: message does not name the file: {err}"
            );
        }
    }
    assert!(env.containers().is_empty());
}

#[test]
fn config_prints_the_effective_config_without_secrets() {
    let Some(env) = Env::new("") else { return };
    let out = env.firstmate(&["config"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(stdout(&out).contains(&env.instance), "{}", text(&out));

    let with_secret = env.path().join("secret.toml");
    std::fs::write(
        &with_secret,
        "[discord]\ntoken_env = \"FIRSTMATE_TEST_UNSET_TOKEN\"\nguild_ids = [1]\n",
    )
    .expect("write");
    let out = env.firstmate(&["config", "--config", &with_secret.to_string_lossy()]);
    assert_ne!(
        out.status.code(),
        Some(0),
        "an unset secret passed: {}",
        text(&out)
    );
    assert!(
        stdout(&out).contains("<unset: FIRSTMATE_TEST_UNSET_TOKEN>"),
        "{}",
        text(&out)
    );
}

#[test]
fn every_subcommand_has_help() {
    let Some(env) = Env::new("") else { return };
    for args in [
        vec!["--help"],
        vec!["run", "--help"],
        vec!["console", "--help"],
        vec!["socket-proxy", "--help"],
        vec!["doctor", "--help"],
        vec!["sessions", "list", "--help"],
        vec!["sessions", "show", "--help"],
        vec!["sessions", "stop", "--help"],
        vec!["sessions", "logs", "--help"],
        vec!["sessions", "rm", "--help"],
        vec!["sessions", "prune", "--help"],
        vec!["migrate", "--help"],
        vec!["config", "--help"],
    ] {
        let out = env.firstmate(&args);
        assert!(out.status.success(), "{args:?}: {}", text(&out));
        assert!(stdout(&out).contains("Usage"), "{args:?}: {}", text(&out));
    }
    let out = env.firstmate(&["--version"]);
    assert!(stdout(&out).starts_with("firstmate "), "{}", text(&out));
    let out = env.firstmate(&["sessions", "frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn sessions_list_show_logs_work_from_the_database() {
    let Some(env) = Env::new("") else { return };
    let out = env.console("new say listed\nstop\n");
    assert!(out.status.success(), "{}", text(&out));
    let id = crate::support::session_ids(&stdout(&out)).remove(0);
    let list = env.firstmate(&["sessions", "list", "--all", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&list.stdout).expect("json");
    assert_eq!(v[0]["id"], id.as_str());
    assert_eq!(v[0]["state"], "stopped");
    let live = env.firstmate(&["sessions", "list"]);
    assert!(
        !stdout(&live).contains(&id),
        "a stopped session listed as live"
    );
    let logs = env.firstmate(&["sessions", "logs", &id]);
    assert!(stdout(&logs).contains("listed"), "{}", text(&logs));
    let missing = env.firstmate(&["sessions", "show", "nosuchsession"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(
        stderr(&missing).contains("sessions list"),
        "{}",
        text(&missing)
    );
}

// --- error messages: the real cause, once, with its fix ----------------------------------

/// A 127.0.0.1 port nothing listens on.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// A tiny HTTP server on 127.0.0.1 answering every request with `answer(method, path)`
/// (status, JSON body); returns its base URL.
fn canned_http(answer: fn(&str, &str) -> (u16, &'static str)) -> String {
    use std::io::{BufRead, BufReader, Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let base = format!("http://{}", l.local_addr().expect("addr"));
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut conn) = conn else { continue };
            std::thread::spawn(move || {
                let mut r = BufReader::new(conn.try_clone().expect("clone"));
                let mut first = String::new();
                if r.read_line(&mut first).is_err() {
                    return;
                }
                let mut len = 0usize;
                loop {
                    let mut h = String::new();
                    if r.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                        break;
                    }
                    if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0; len];
                let _ = r.read_exact(&mut body);
                let mut parts = first.split_whitespace();
                let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
                let (status, json) = answer(method, path);
                let _ = write!(
                    conn,
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{json}",
                    json.len()
                );
            });
        }
    });
    base
}

/// Writes `toml` to a file in the env's folder and returns its path.
fn config_file(env: &Env, name: &str, toml: &str) -> String {
    let path = env.path().join(name);
    std::fs::write(&path, toml).expect("write config");
    path.to_string_lossy().into_owned()
}

/// Runs `firstmate ARGS` with extra environment variables.
fn firstmate_with(env: &Env, args: &[&str], vars: &[(&str, &str)]) -> std::process::Output {
    let mut c = env.command();
    c.args(args);
    for (k, v) in vars {
        c.env(k, v);
    }
    crate::support::run_with_timeout(c, "", std::time::Duration::from_secs(120))
}

/// The doctor line of `what` (`FAIL matrix: ...`).
fn doctor_line(out: &std::process::Output, what: &str) -> String {
    stdout(out)
        .lines()
        .find(|l| l[4..].trim_start().starts_with(&format!("{what}:")))
        .unwrap_or_else(|| panic!("no {what} line: {}", text(out)))
        .to_string()
}

#[test]
fn a_refused_postgres_names_the_refusal_and_database_url_within_seconds() {
    let Some(env) = Env::new("") else { return };
    let port = closed_port();
    let cfg = config_file(
        &env,
        "pg.toml",
        &format!("[database]\nurl = \"postgres://firstmate:secret@127.0.0.1:{port}/firstmate\"\n"),
    );
    let started = std::time::Instant::now();
    let out = env.firstmate(&["migrate", "--config", &cfg]);
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = stderr(&out);
    assert!(err.contains("Connection refused"), "{err}");
    assert_eq!(err.matches("Connection refused").count(), 1, "{err}");
    assert!(err.contains("database.url"), "{err}");
    assert!(!err.contains("secret"), "the password leaked: {err}");
    // A hang guard, not a benchmark: the pool alone waited 30 s before saying "timed out".
    assert!(
        took < std::time::Duration::from_secs(15),
        "took {took:?}: {err}"
    );
}

#[test]
fn doctor_tells_an_unreachable_matrix_and_discord_from_bad_credentials() {
    let Some(env) = Env::new("") else { return };
    let db = format!("sqlite://{}", env.path().join("d.db").display());
    let front_ends = |matrix: &str, discord: &str| {
        format!(
            "[database]\nurl = \"{db}\"\n\
             [matrix]\nhomeserver_url = \"{matrix}\"\nuser_id = \"@bot:localhost\"\n\
             password_env = \"FIRSTMATE_TEST_MATRIX_PASSWORD\"\nstore_path = \"ms\"\n\
             allowed_users = [\"@alice:localhost\"]\n\
             [discord]\ntoken_env = \"FIRSTMATE_TEST_DISCORD_TOKEN\"\nguild_ids = [1]\n\
             allowed_users = [2]\napi_base_url = \"{discord}\"\n"
        )
    };
    let vars = [
        ("FIRSTMATE_TEST_MATRIX_PASSWORD", "pw"),
        ("FIRSTMATE_TEST_DISCORD_TOKEN", "tok"),
    ];

    // Nothing listens: the address is at fault, not the password or the token.
    let closed = format!("http://127.0.0.1:{}", closed_port());
    let cfg = config_file(&env, "closed.toml", &front_ends(&closed, &closed));
    let out = firstmate_with(&env, &["doctor", "--config", &cfg], &vars);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let m = doctor_line(&out, "matrix");
    assert!(m.starts_with("FAIL"), "{m}");
    assert!(m.contains("cannot reach the Matrix homeserver"), "{m}");
    assert!(m.contains("Connection refused"), "{m}");
    assert!(m.contains("matrix.homeserver_url"), "{m}");
    assert!(!m.contains("password"), "blames the password: {m}");
    let d = doctor_line(&out, "discord");
    assert!(d.starts_with("FAIL"), "{d}");
    assert!(d.contains("cannot reach Discord"), "{d}");
    assert_eq!(d.matches("Connection refused").count(), 1, "{d}");
    assert!(d.contains("discord.api_base_url"), "{d}");
    assert!(!d.contains("token"), "blames the token: {d}");

    // They answer and refuse the credential: the password's and the token's keys are named.
    let matrix = canned_http(|_, path| {
        if path.starts_with("/_matrix/client/versions") {
            (200, r#"{"versions":["v1.1","v1.5"]}"#)
        } else if path.contains("/login") {
            (
                403,
                r#"{"errcode":"M_FORBIDDEN","error":"Invalid username or password"}"#,
            )
        } else {
            (
                404,
                r#"{"errcode":"M_UNRECOGNIZED","error":"Unrecognized request"}"#,
            )
        }
    });
    let discord = canned_http(|_, _| (401, r#"{"message":"401: Unauthorized","code":0}"#));
    let cfg = config_file(&env, "refused.toml", &front_ends(&matrix, &discord));
    let out = firstmate_with(&env, &["doctor", "--config", &cfg], &vars);
    let m = doctor_line(&out, "matrix");
    assert!(m.starts_with("FAIL"), "{m}");
    assert!(m.contains("Matrix login as @bot:localhost failed"), "{m}");
    assert!(
        m.contains("matrix.password_env (FIRSTMATE_TEST_MATRIX_PASSWORD)"),
        "{m}"
    );
    assert!(!m.contains("cannot reach"), "{m}");
    let d = doctor_line(&out, "discord");
    assert!(d.contains("Discord refused the bot token"), "{d}");
    assert!(
        d.contains("discord.token_env (FIRSTMATE_TEST_DISCORD_TOKEN)"),
        "{d}"
    );
}

#[test]
fn a_missing_file_is_named_with_its_cause_once() {
    let Some(env) = Env::new("") else { return };
    let missing = env.path().join("nosuch.toml");
    let out = env.firstmate(&["config", "--config", &missing.to_string_lossy()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = stderr(&out);
    assert!(err.contains("cannot read the config file"), "{err}");
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");

    let cfg = config_file(
        &env,
        "secretfile.toml",
        "[discord]\ntoken_file = \"no-such-token\"\nguild_ids = [1]\nallowed_roles = [2]\n",
    );
    let out = env.firstmate(&["config", "--config", &cfg]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = stderr(&out);
    assert!(err.contains("discord.token_file names"), "{err}");
    assert!(err.contains("no-such-token, which cannot be read"), "{err}");
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
}

#[test]
fn doctor_exits_2_on_a_bad_config() {
    let Some(env) = Env::new("") else { return };
    let cfg = config_file(&env, "bad.toml", "[sessions]\nidel_timeout = \"30m\"\n");
    let out = env.firstmate(&["doctor", "--config", &cfg]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        doctor_line(&out, "config").contains("idle_timeout"),
        "{}",
        text(&out)
    );
    let missing = env.path().join("nosuch.toml");
    let out = env.firstmate(&["doctor", "--config", &missing.to_string_lossy()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}

#[test]
fn config_and_doctor_warn_about_a_config_that_serves_nobody() {
    let Some(env) = Env::new("") else { return };
    let vars = [("FIRSTMATE_TEST_DISCORD_TOKEN", "tok")];
    // No front end: valid, and `run` would serve no chat.
    let out = env.firstmate(&["config"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        stderr(&out).contains("warning: no front end is configured"),
        "{}",
        text(&out)
    );
    let closed = format!("http://127.0.0.1:{}", closed_port());
    let cfg = config_file(
        &env,
        "discord.toml",
        &format!(
            "[discord]\ntoken_env = \"FIRSTMATE_TEST_DISCORD_TOKEN\"\napi_base_url = \"{closed}\"\n\
             [matrix]\nhomeserver_url = \"{closed}\"\nuser_id = \"@bot:localhost\"\n\
             access_token_env = \"FIRSTMATE_TEST_DISCORD_TOKEN\"\n"
        ),
    );
    let out = firstmate_with(&env, &["config", "--config", &cfg], &vars);
    assert!(out.status.success(), "{}", text(&out));
    let err = stderr(&out);
    for needle in [
        "warning: discord.guild_ids is empty",
        "warning: discord.allowed_users and discord.allowed_roles are both empty",
        "warning: matrix.allowed_users is empty",
    ] {
        assert!(err.contains(needle), "no {needle:?}: {err}");
    }
    assert!(!err.contains("no front end"), "{err}");
    let out = firstmate_with(&env, &["doctor", "--config", &cfg], &vars);
    let out_text = stdout(&out);
    let warns: Vec<&str> = out_text
        .lines()
        .filter(|l| l.starts_with("warn config:"))
        .collect();
    assert_eq!(warns.len(), 3, "{}", text(&out));
    assert!(
        out_text.contains("nobody may use the bot on Discord"),
        "{out_text}"
    );
}

#[test]
fn run_without_a_front_end_says_so_at_startup() {
    let Some(env) = Env::new("") else { return };
    let service = crate::support::service::Service::spawn(&env, "info", &[]);
    service.wait_log(
        "no front end is configured",
        std::time::Duration::from_secs(60),
    );
    let log = service.kill();
    let line = log
        .lines()
        .find(|l| l.contains("no front end is configured"))
        .expect("the warning");
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains("[matrix] or [discord]"), "{line}");
    assert!(line.contains("gateway and metrics"), "{line}");
}

// --- logging: FIRSTMATE_LOG, RUST_LOG, FIRSTMATE_LOG_FORMAT, colour ------------------------

/// `firstmate` in `dir` with none of the logging variables of the caller's environment.
fn bare_firstmate(dir: &std::path::Path) -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_firstmate"));
    c.current_dir(dir);
    for var in [
        "FIRSTMATE_LOG",
        "RUST_LOG",
        "FIRSTMATE_LOG_FORMAT",
        "NO_COLOR",
        "FIRSTMATE_CONFIG",
    ] {
        c.env_remove(var);
    }
    c
}

/// A `firstmate socket-proxy --listen 127.0.0.1:0` with `vars`, its standard error piped:
/// each line is sent on the receiver. Killed when dropped.
struct LoggingProxy {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl LoggingProxy {
    fn start(dir: &std::path::Path, upstream: &str, vars: &[(&str, &str)]) -> LoggingProxy {
        use std::io::BufRead;
        let mut c = bare_firstmate(dir);
        c.args([
            "socket-proxy",
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            upstream,
        ])
        .envs(vars.iter().copied())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
        let mut child = c.spawn().expect("spawn firstmate socket-proxy");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        LoggingProxy {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// The first line (from now) that `pred` accepts; every line read is kept in `seen`.
    fn line(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if pred(&line) {
                        return line;
                    }
                }
                Err(_) => panic!("no {what} in the log:\n{}", self.seen.join("\n")),
            }
        }
    }

    /// The address it listens on, from its `listening on ADDR,` line.
    fn addr(&mut self) -> String {
        let line = self.line("listening line", |l| l.contains("listening on "));
        let (_, rest) = line.split_once("listening on ").expect("listening on");
        rest.split(',').next().unwrap_or("").trim().to_string()
    }
}

impl Drop for LoggingProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn json_line(line: &str) -> serde_json::Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"))
}

#[test]
fn firstmate_log_format_json_gives_one_json_object_a_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut proxy = LoggingProxy::start(
        dir.path(),
        &format!("tcp://127.0.0.1:{}", closed_port()),
        &[("FIRSTMATE_LOG", "info"), ("FIRSTMATE_LOG_FORMAT", "json")],
    );
    let line = proxy.line("listening line", |l| l.contains("listening on"));
    let v = json_line(&line);
    assert_eq!(v["level"], "INFO", "{line}");
    let message = v["fields"]["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("firstmate socket-proxy listening on 127.0.0.1:"),
        "{line}"
    );
    assert!(
        v["target"]
            .as_str()
            .unwrap_or_default()
            .starts_with("firstmate"),
        "{line}"
    );
    assert!(v["timestamp"].is_string(), "{line}");
    assert!(!line.contains('\u{1b}'), "ANSI escapes in JSON: {line:?}");
    // Every line before it is JSON as well.
    for l in &proxy.seen {
        json_line(l);
    }
}

#[test]
fn rust_log_is_honoured_when_firstmate_log_is_unset() {
    let dir = tempfile::tempdir().expect("tempdir");
    let docker = canned_http(|_, _| (200, "\"OK\""));
    let upstream = docker.replace("http://", "tcp://");
    let mut proxy = LoggingProxy::start(
        dir.path(),
        &upstream,
        &[
            ("RUST_LOG", "warn,firstmate=debug"),
            ("FIRSTMATE_LOG_FORMAT", "json"),
        ],
    );
    let addr = proxy.addr();
    // A request the proxy lets through is logged at debug only: RUST_LOG's level.
    let mut s = std::net::TcpStream::connect(&addr).expect("connect to the proxy");
    use std::io::{Read, Write};
    s.write_all(b"GET /_ping HTTP/1.1\r\nhost: docker\r\nconnection: close\r\n\r\n")
        .expect("write");
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let line = proxy.line("debug line of the request", |l| l.contains("\"allowed\""));
    let v = json_line(&line);
    assert_eq!(v["level"], "DEBUG", "{line}");
    assert_eq!(v["fields"]["message"], "allowed", "{line}");
    assert_eq!(v["fields"]["path"], "/_ping", "{line}");
}

#[test]
fn piped_logs_have_no_colour() {
    let dir = tempfile::tempdir().expect("tempdir");
    // FIRSTMATE_LOG wins over RUST_LOG, which is then not read at all (not even checked).
    let mut proxy = LoggingProxy::start(
        dir.path(),
        &format!("tcp://127.0.0.1:{}", closed_port()),
        &[("FIRSTMATE_LOG", "info"), ("RUST_LOG", "firstmate=loud")],
    );
    let line = proxy.line("listening line", |l| l.contains("listening on"));
    assert!(line.contains("INFO"), "{line}");
    for l in &proxy.seen {
        assert!(!l.contains('\u{1b}'), "ANSI escapes on a pipe: {l:?}");
        assert!(serde_json::from_str::<serde_json::Value>(l).is_err(), "{l}");
    }
}

#[test]
fn a_bad_log_filter_or_format_exits_2_naming_it_in_every_subcommand() {
    let dir = tempfile::tempdir().expect("tempdir");
    let subcommands: [&[&str]; 8] = [
        &["run"],
        &["console"],
        &["socket-proxy", "--listen", "127.0.0.1:0"],
        &["doctor"],
        &["sessions", "list"],
        &["migrate"],
        &["config"],
        &["sessions", "prune"],
    ];
    type Vars<'a> = &'a [(&'a str, &'a str)];
    let cases: [(Vars, &[&str]); 5] = [
        (
            &[("FIRSTMATE_LOG", "firstmate=loud")],
            &[
                "FIRSTMATE_LOG=\"firstmate=loud\"",
                "`firstmate=loud`",
                "warn,firstmate=debug",
            ],
        ),
        (
            &[("FIRSTMATE_LOG", "%%garbage%%")],
            &["FIRSTMATE_LOG=\"%%garbage%%\"", "info"],
        ),
        (
            &[("RUST_LOG", "info,firstmate=loud")],
            &["RUST_LOG=\"info,firstmate=loud\"", "`firstmate=loud`"],
        ),
        (
            &[("FIRSTMATE_LOG", "warning")],
            &["FIRSTMATE_LOG=\"warning\"", "did you mean `warn`"],
        ),
        (
            &[("FIRSTMATE_LOG_FORMAT", "yaml")],
            &["FIRSTMATE_LOG_FORMAT=\"yaml\"", "`text`", "`json`"],
        ),
    ];
    for args in subcommands {
        for (vars, needles) in cases {
            let mut c = bare_firstmate(dir.path());
            c.args(args).envs(vars.iter().copied());
            let out = crate::support::run_with_timeout(c, "", std::time::Duration::from_secs(60));
            assert_eq!(
                out.status.code(),
                Some(2),
                "{args:?} {vars:?}: {}",
                text(&out)
            );
            let err = stderr(&out);
            for needle in needles {
                assert!(
                    err.contains(needle),
                    "{args:?} {vars:?}: no {needle} in {err}"
                );
            }
        }
    }
    // Nothing started: no database was made in the folder.
    let left: Vec<_> = std::fs::read_dir(dir.path()).expect("read dir").collect();
    assert!(left.is_empty(), "{left:?}");
}
