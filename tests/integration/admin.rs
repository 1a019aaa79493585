//! `firstmate console` next to a running `firstmate run` on the same config is the
//! service's client, through the admin socket: same output and exit codes, no second
//! engine, gateway or metrics listener. A stale socket file breaks neither side.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use std::time::Duration;

use crate::support::service::Service;
use crate::support::worker::free_port;
use crate::support::{Env, lines_of, session_ids, stdout, text};

/// The admin socket of the environment's config, as `firstmate config` shows it.
fn socket_path(env: &Env) -> PathBuf {
    let out = env.firstmate(&["config"]);
    let shown = stdout(&out);
    let (_, admin) = shown
        .split_once("[admin]\n")
        .unwrap_or_else(|| panic!("no [admin] in the effective config:\n{}", text(&out)));
    let line = admin.lines().next().unwrap_or("");
    let path = line
        .strip_prefix("socket = \"")
        .and_then(|p| p.strip_suffix('"'))
        .unwrap_or_else(|| panic!("no admin socket line: {line}"));
    PathBuf::from(path)
}

const SCRIPT: &str = "new --agent scripted say hi\nrun echo $((6*7))\nstop\n";

/// The lines a console printed for its one session, its id in them as `<id>`.
fn session_lines(out: &std::process::Output) -> (String, Vec<String>) {
    let all = stdout(out);
    let ids = session_ids(&all);
    assert_eq!(ids.len(), 1, "expected one session:\n{}", text(out));
    // The id is in some lines too: the same output but for it.
    let lines = lines_of(&all, &ids[0])
        .iter()
        .map(|l| l.replace(&ids[0], "<id>"))
        .collect();
    (ids[0].clone(), lines)
}

#[test]
fn a_console_next_to_a_running_service_is_its_client() {
    let metrics = free_port("127.0.0.1");
    let gateway = free_port("127.0.0.1");
    let Some(env) = Env::new(&format!(
        "\n[metrics]\nlisten = \"127.0.0.1:{metrics}\"\n\n[gateway]\nlisten = \"127.0.0.1:{gateway}\"\nurl = \"http://firstmate:{gateway}\"\n"
    )) else {
        return;
    };
    // What a console prints on its own, with no service.
    let alone = env.console(SCRIPT);
    assert!(alone.status.success(), "{}", text(&alone));
    let (_, alone_lines) = session_lines(&alone);

    let service = Service::start(&env);
    let socket = socket_path(&env);
    let mode = std::fs::metadata(&socket)
        .expect("the admin socket exists")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");

    // The console binds neither the metrics nor the gateway port the service holds: it
    // would fail if it started an engine of its own.
    let out = env.console(SCRIPT);
    assert!(
        out.status.success(),
        "{}\n--- run log\n{}",
        text(&out),
        service.log()
    );
    let (id, lines) = session_lines(&out);
    assert_eq!(
        lines,
        alone_lines,
        "through the service the console prints other lines:\n{}",
        text(&out)
    );
    assert!(lines.iter().any(|l| l == "hi"), "{}", text(&out));
    assert!(lines.iter().any(|l| l == "42"), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).trim().is_empty(),
        "{}",
        text(&out)
    );
    // The service's engine ran the session.
    let log = service.log();
    assert!(
        log.lines()
            .any(|l| l.contains("session created") && l.contains(&id)),
        "the service did not create {id}:\n{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("container started") && l.contains(&id)),
        "the service did not start {id}'s container:\n{log}"
    );
    assert!(log.contains("console connected"), "{log}");
    assert_eq!(env.session(&id)["state"], "stopped");

    // A refused line: its error on stderr, the lines after it still run, exit 2. `logs`
    // writes the transcript into the console's folder, not the service's.
    let out = env.console(&format!("use {id}\nuse no-such-session\nstatus\nlogs\n"));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("firstmate: ") && stderr.contains("no-such-session"),
        "{}",
        text(&out)
    );
    let all = stdout(&out);
    assert!(
        lines_of(&all, &id)
            .iter()
            .any(|l| l.starts_with("now using session")),
        "{}",
        text(&out)
    );
    assert!(
        lines_of(&all, &id).iter().any(|l| l.contains("stopped")),
        "the status after the refused line is missing:\n{}",
        text(&out)
    );

    let transcript = env.path().join(format!("firstmate-{id}-transcript.md"));
    assert!(
        std::fs::read_to_string(&transcript).is_ok_and(|t| t.contains("42")),
        "no transcript at {}:\n{}",
        transcript.display(),
        text(&out)
    );

    // A line that is not UTF-8 is refused by its number.
    let out = crate::console::console_bytes(&env, b"new say one\n\xff\xfe bad\nsay two\nstop\n");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("line 2: not UTF-8"),
        "{}",
        text(&out)
    );
    let (_, lines) = session_lines(&out);
    assert!(
        lines.iter().any(|l| l == "one") && lines.iter().any(|l| l == "two"),
        "{}",
        text(&out)
    );

    // `interrupt` acts at once through the socket too.
    let out = env.console("new say working\nsleep 60\ninterrupt\nsay still here\nstop\n");
    assert!(out.status.success(), "{}", text(&out));
    let (_, lines) = session_lines(&out);
    let intr = lines.iter().position(|l| l == "-- turn interrupted");
    let after = lines.iter().position(|l| l == "still here");
    assert!(
        matches!((intr, after), (Some(i), Some(a)) if i < a),
        "expected the interrupt, then `still here`:\n{}",
        text(&out)
    );

    // Stopped, the service removes its socket; a console runs on its own again.
    let status = service.stop();
    assert!(status.success(), "run exited with {status}");
    assert!(!socket.exists(), "the admin socket outlived the service");
    let out = env.console("list\n");
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn a_stale_admin_socket_breaks_neither_side() {
    let Some(env) = Env::new("") else { return };
    let socket = socket_path(&env);
    // A socket file nobody serves, as a killed service leaves it.
    drop(std::os::unix::net::UnixListener::bind(&socket).expect("bind"));
    assert!(socket.exists());

    let out = env.console(SCRIPT);
    assert!(out.status.success(), "{}", text(&out));
    let (_, lines) = session_lines(&out);
    assert!(lines.iter().any(|l| l == "42"), "{}", text(&out));

    let service = Service::start(&env);
    assert!(
        service.log().contains("removing a stale admin socket"),
        "{}",
        service.log()
    );
    // A second service on the same database is refused while the first answers.
    let second = env.firstmate(&["run"]);
    assert_eq!(second.status.code(), Some(1), "{}", text(&second));
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("already answers"),
        "{}",
        text(&second)
    );

    let out = env.console(SCRIPT);
    assert!(
        out.status.success(),
        "{}\n--- run log\n{}",
        text(&out),
        service.log()
    );
    let (id, lines) = session_lines(&out);
    assert!(lines.iter().any(|l| l == "42"), "{}", text(&out));
    assert!(service.log().contains(&id), "{}", service.log());

    // Killed without warning, the service leaves its socket behind: consoles go on.
    drop(service);
    assert!(socket.exists(), "SIGKILL cannot remove the socket");
    let out = env.console(&format!("use {id}\nstatus\n"));
    assert!(out.status.success(), "{}", text(&out));
}

/// A client killed mid-turn ends its console in the service; the next client shows
/// what it missed, once, and a second client meanwhile is refused.
#[test]
fn a_client_killed_mid_turn_loses_nothing_through_the_service() {
    let Some(env) = Env::new("") else { return };
    let service = Service::start(&env);
    let mut child = env.spawn_console();
    let mut stdin = child.stdin.take().expect("stdin");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    stdin
        .write_all(b"new say start\nrun sleep 3 && echo missed-output\n")
        .expect("write");
    stdin.flush().expect("flush");
    let mut seen = String::new();
    let id = loop {
        let mut line = String::new();
        if out.read_line(&mut line).expect("read") == 0 {
            panic!("the console ended early:\n{seen}\n{}", service.log());
        }
        seen.push_str(&line);
        if line.trim_end().ends_with("$ sleep 3 && echo missed-output") {
            break session_ids(&seen).remove(0);
        }
    };
    // One console at a time.
    let other = env.console("list\n");
    assert_eq!(other.status.code(), Some(1), "{}", text(&other));
    assert!(
        String::from_utf8_lossy(&other.stderr).contains("another `firstmate console`"),
        "{}",
        text(&other)
    );
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    drop(stdin);
    service.wait_log("the console left", Duration::from_secs(10));
    // The turn ends while no console is connected.
    std::thread::sleep(Duration::from_secs(4));
    let out = env.console("");
    assert!(
        out.status.success(),
        "{}\n--- run log\n{}",
        text(&out),
        service.log()
    );
    crate::support::assert_each_once(&id, &["start", "missed-output"], &seen, &out);
}
