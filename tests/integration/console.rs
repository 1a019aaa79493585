//! Sessions driven through `firstmate console` on the real daemon.

use std::io::{BufRead, BufReader, Write};
use std::time::Duration;

use crate::support::{Env, inspect, lines_of, session_ids, stdout, text, wait_child};

fn only_session(out: &str) -> String {
    let ids = session_ids(out);
    assert_eq!(ids.len(), 1, "expected one session in:\n{out}");
    ids[0].clone()
}

#[test]
fn say_run_stop_leaves_a_stopped_hardened_labelled_container() {
    let Some(env) = Env::new("") else { return };
    let out = env.console("new --agent scripted say hi\nrun echo $((6*7))\nstop\n");
    assert!(out.status.success(), "{}", text(&out));
    let all = stdout(&out);
    let id = only_session(&all);
    let lines = lines_of(&all, &id);
    assert!(lines.iter().any(|l| l == "hi"), "no `hi` in:\n{all}");
    assert!(lines.iter().any(|l| l == "42"), "no `42` in:\n{all}");
    assert!(
        lines.iter().any(|l| l.starts_with("-- stopped")),
        "the stop is not reported:\n{all}"
    );

    let c = inspect(&format!("firstmate-{id}"));
    assert_eq!(c["State"]["Running"], false, "container still running");
    let labels = &c["Config"]["Labels"];
    assert_eq!(labels["firstmate.managed"], "true");
    assert_eq!(labels["firstmate.session"], id.as_str());
    assert_eq!(labels["firstmate.instance"], env.instance.as_str());
    let host = &c["HostConfig"];
    assert_eq!(host["CapDrop"], serde_json::json!(["ALL"]));
    assert_eq!(host["Privileged"], false);
    assert!(
        host["SecurityOpt"]
            .as_array()
            .is_some_and(|a| a.iter().any(|o| o == "no-new-privileges")),
        "no no-new-privileges: {host}"
    );
    assert!(host["Memory"].as_i64().unwrap_or(0) > 0, "no memory limit");
    assert!(host["NanoCpus"].as_i64().unwrap_or(0) > 0, "no CPU limit");
    assert!(host["PidsLimit"].as_i64().unwrap_or(0) > 0, "no PID limit");
    assert!(
        host["Binds"].is_null() || host["Binds"].as_array().is_some_and(|b| b.is_empty()),
        "host paths are bound: {}",
        host["Binds"]
    );
    for m in c["Mounts"].as_array().cloned().unwrap_or_default() {
        assert!(
            m["Type"] == "volume" || (m["Type"] == "tmpfs" && m["Destination"] == "/tmp"),
            "a mount that is neither a volume nor the /tmp tmpfs: {m}"
        );
    }
    assert_eq!(host["Init"], true, "no init reaps orphans: {host}");
    assert_eq!(
        host["ReadonlyRootfs"], true,
        "the root filesystem is writable"
    );
    assert!(
        host["Tmpfs"]["/tmp"]
            .as_str()
            .is_some_and(|o| o.contains("size=")),
        "/tmp is not a size-limited tmpfs: {host}"
    );
    assert_eq!(
        c["Config"]["User"], "agent",
        "the worker does not run as the image's user"
    );

    let s = env.session(&id);
    assert_eq!(s["state"], "stopped");
    assert_eq!(s["turns"], 2);
    assert!(
        s["input_tokens"].as_i64().unwrap_or(0) > 0,
        "no tokens counted: {s}"
    );
    assert!(
        s["cost_usd"].as_f64().unwrap_or(0.0) > 0.0,
        "no cost counted: {s}"
    );
}

#[test]
fn after_a_killed_fork_bomb_the_next_turn_can_fork_again() {
    let Some(env) = Env::new("") else { return };
    // The Env's pids_limit is 256. 200 orphans, then killed: with no init they would stay
    // zombies of the agent (PID 1, which reaps only its own children) and keep 200 PIDs,
    // so the next turn could not start 100 more. The init reaps them. The count is taken
    // again for up to 10 s: under load the last background `sleep` may still be starting.
    let count = "for f in /proc/[0-9]*/stat; do read -r p c s r 2>/dev/null < $f || continue; \
                 [ \"$c\" = \"(sleep)\" ] || continue; \
                 if [ \"$s\" = Z ]; then z=$((z+1)); else n=$((n+1)); fi; done";
    let input = format!(
        "new run for i in $(seq 200); do (sleep 1000 </dev/null >/dev/null 2>&1 &); done; n=0; z=0; {count}; echo bomb $n\n\
         run for f in /proc/[0-9]*/stat; do read -r p c r 2>/dev/null < $f && [ \"$c\" = \"(sleep)\" ] && kill -9 $p; done; echo killed\n\
         run sleep 1; for i in $(seq 100); do (sleep 1000 </dev/null >/dev/null 2>&1 &) 2>/dev/null; done; for t in $(seq 40); do n=0; z=0; {count}; [ $n -ge 100 ] && [ $z = 0 ] && break; sleep 0.25; done; echo alive $n zombies $z\n\
         stop\n"
    );
    let out = env.console(&input);
    assert!(out.status.success(), "{}", text(&out));
    let all = stdout(&out);
    let id = only_session(&all);
    let lines = lines_of(&all, &id);
    assert!(
        lines.iter().any(|l| l == "bomb 200"),
        "the orphans did not all start:\n{all}"
    );
    assert!(lines.iter().any(|l| l == "killed"), "{all}");
    assert!(
        lines.iter().any(|l| l == "alive 100 zombies 0"),
        "the killed orphans kept their PIDs:\n{all}"
    );
}

#[test]
fn the_root_filesystem_is_read_only_but_workspace_home_and_tmp_are_writable() {
    let Some(env) = Env::new("") else { return };
    let out = env.console(
        "new run touch /etc/x 2>&1; echo etc=$?\n\
         run touch /usr/local/bin/x 2>&1; echo usr=$?\n\
         run touch /workspace/w \"$HOME/h\" /tmp/t && mkdir -p \"$HOME/.claude/x\" && echo writable\n\
         run cp /bin/true /tmp/true && /tmp/true && echo tmp-exec\n\
         run awk '$2 == \"/tmp\" { print $3, $4 }' /proc/mounts\n\
         stop\n",
    );
    assert!(out.status.success(), "{}", text(&out));
    let all = stdout(&out);
    let id = only_session(&all);
    let lines = lines_of(&all, &id);
    for path in ["/etc/x", "/usr/local/bin/x"] {
        assert!(
            lines
                .iter()
                .any(|l| l.contains(path) && l.contains("Read-only file system")),
            "a write to {path} did not fail as read-only:\n{all}"
        );
    }
    assert!(lines.iter().any(|l| l == "etc=1"), "{all}");
    assert!(
        lines.iter().any(|l| l == "writable"),
        "/workspace, $HOME or /tmp is not writable:\n{all}"
    );
    // /tmp is a tmpfs with a size limit (the agent's memory, 256m here), where programs
    // run (toolchains build and run binaries there).
    assert!(
        lines.iter().any(|l| l.starts_with("tmpfs rw,")
            && l.contains("size=262144k")
            && !l.contains("noexec")),
        "/tmp is not a size-limited tmpfs:\n{all}"
    );
    assert!(lines.iter().any(|l| l == "tmp-exec"), "{all}");
}

#[test]
fn a_crashing_agent_fails_the_session_with_a_clear_message() {
    let Some(env) = Env::new("") else { return };
    let out = env.console("new say before the crash\nexit 3\n");
    assert!(out.status.success(), "{}", text(&out));
    let all = stdout(&out);
    let id = only_session(&all);
    assert!(
        lines_of(&all, &id)
            .iter()
            .any(|l| l == "-- failed: the agent exited with code 3"),
        "no clear failure in:\n{all}"
    );
    let s = env.session(&id);
    assert_eq!(s["state"], "failed");
    assert_eq!(s["detail"], "the agent exited with code 3");
}

#[test]
fn interrupt_ends_the_turn_and_the_session_stays_usable() {
    let Some(env) = Env::new("") else { return };
    let out = env.console("new say working\nsleep 60\ninterrupt\nsay still here\nstop\n");
    assert!(out.status.success(), "{}", text(&out));
    let all = stdout(&out);
    let id = only_session(&all);
    let lines = lines_of(&all, &id);
    let intr = lines.iter().position(|l| l == "-- turn interrupted");
    let after = lines.iter().position(|l| l == "still here");
    assert!(
        matches!((intr, after), (Some(i), Some(a)) if i < a),
        "expected the interrupt, then `still here`:\n{all}"
    );
}

#[test]
fn malformed_agent_output_is_reported_and_the_session_goes_on() {
    let Some(env) = Env::new("") else { return };
    // Write straight to the agent's own stdout, around the protocol.
    let out = env.console("new run echo 'this is not json' > /proc/1/fd/1\nsay fine\nstop\n");
    assert!(out.status.success(), "{}", text(&out));
    let all = stdout(&out);
    let id = only_session(&all);
    let lines = lines_of(&all, &id);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("! unreadable agent output") && l.contains("this is not json")),
        "the malformed line is not reported:\n{all}"
    );
    assert!(
        lines.iter().any(|l| l == "fine"),
        "the session stopped working:\n{all}"
    );
}

#[test]
fn sessions_over_max_running_wait_in_the_queue() {
    let Some(env) = Env::with_sessions("", "max_running = 1") else {
        return;
    };
    let out = env.console("new say first\nnew say second\nlist\n");
    // The first console run tells us the ids; the second session must be queued.
    let all = stdout(&out);
    let ids = session_ids(&all);
    assert_eq!(ids.len(), 2, "two sessions expected:\n{}", text(&out));
    let (a, b) = (&ids[0], &ids[1]);
    assert!(lines_of(&all, a).iter().any(|l| l == "first"), "{all}");
    assert_eq!(env.session(b)["state"], "queued", "{all}");
    assert!(
        !lines_of(&all, b).iter().any(|l| l == "second"),
        "the queued session ran:\n{all}"
    );
    // Stopping the first frees the slot: the second runs.
    let out = env.console(&format!("use {a}\nstop\nuse {b}\nstatus\n"));
    let all = stdout(&out);
    assert!(
        lines_of(&all, b).iter().any(|l| l == "second"),
        "the queued session did not run after a slot freed:\n{}",
        text(&out)
    );
    assert_eq!(env.session(a)["state"], "stopped");
}

#[test]
fn a_waiting_session_is_stopped_after_its_idle_timeout() {
    let Some(env) = Env::with_sessions("", "idle_timeout = \"2s\"") else {
        return;
    };
    let out = env.console("new say hello\n");
    assert!(out.status.success(), "{}", text(&out));
    let id = only_session(&stdout(&out));
    // The console left; `firstmate run` picks the session up and enforces the timeout.
    let service = crate::support::service::Service::spawn(&env, "info", &[]);
    let s = env.wait_session(&id, Duration::from_secs(60), |s| s["state"] != "waiting");
    drop(service);
    assert_eq!(s["state"], "stopped", "{s:#}");
    assert!(
        s["detail"].as_str().unwrap_or("").contains("idle"),
        "the reason is not given: {s:#}"
    );
}

#[test]
fn resume_continues_the_same_conversation() {
    let Some(env) = Env::new("") else { return };
    let out = env.console("new say one\nstop\nresume\nsay two\nstop\n");
    assert!(out.status.success(), "{}", text(&out));
    let all = stdout(&out);
    let id = only_session(&all);
    let lines = lines_of(&all, &id);
    assert!(
        lines.iter().any(|l| l == "two"),
        "no output after resume:\n{all}"
    );
    let s = env.session(&id);
    assert_eq!(s["turns"], 2);
    assert!(s["agent_session_id"].is_string(), "{s:#}");
    // The test agent keeps one transcript file per conversation: still one after resume.
    let ls = std::process::Command::new("docker")
        .args([
            "run",
            "--rm",
            "-v",
            &format!("firstmate-{id}-home:/home/agent"),
            "--entrypoint",
            "sh",
            crate::support::TEST_IMAGE,
            "-c",
            "ls /home/agent/.claude/projects/test-agent/",
        ])
        .output()
        .expect("docker run");
    let files = String::from_utf8_lossy(&ls.stdout).lines().count();
    assert_eq!(
        files,
        1,
        "resume started a new conversation: {}",
        String::from_utf8_lossy(&ls.stdout)
    );
}

/// A console killed with SIGKILL mid-turn: the turn goes on in the container; the next
/// console shows the output it missed, and runs the prompt that was queued, each once.
#[test]
fn a_console_killed_mid_turn_loses_nothing_and_repeats_nothing() {
    let Some(env) = Env::new("") else { return };
    let mut child = env.spawn_console();
    let mut stdin = child.stdin.take().expect("stdin");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    stdin
        .write_all(b"new say start\nrun sleep 3 && echo missed-output\n")
        .expect("write");
    stdin.write_all(b"say queued prompt ran\n").expect("write");
    stdin.flush().expect("flush");
    // Wait until the turn is running, then kill the console without warning.
    let mut seen = String::new();
    let id = loop {
        let mut line = String::new();
        if out.read_line(&mut line).expect("read") == 0 {
            panic!("the console ended early:\n{seen}");
        }
        seen.push_str(&line);
        if line.contains("] start") {
            break session_ids(&seen).remove(0);
        }
    };
    // The queued prompt must be stored (acknowledged) before the kill.
    env.wait_session(&id, Duration::from_secs(10), |_| true);
    std::thread::sleep(Duration::from_millis(500));
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    drop(stdin);

    let out2 = env.console("");
    assert!(out2.status.success(), "{}", text(&out2));
    crate::support::assert_each_once(
        &id,
        &["start", "missed-output", "queued prompt ran"],
        &seen,
        &out2,
    );
}

/// Starts a console on `input`, waits until it printed a line ending in `marker` (so the
/// turn of the last prompt runs), then kills it with SIGKILL. Returns the session id
/// and what the console printed.
fn console_killed_after(env: &crate::support::Env, input: &str, marker: &str) -> (String, String) {
    let mut child = env.spawn_console();
    let mut stdin = child.stdin.take().expect("stdin");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    stdin.write_all(input.as_bytes()).expect("write");
    stdin.flush().expect("flush");
    let mut seen = String::new();
    let id = loop {
        let mut line = String::new();
        if out.read_line(&mut line).expect("read") == 0 {
            panic!("the console ended early:\n{seen}");
        }
        seen.push_str(&line);
        if line.trim_end().ends_with(marker) {
            break session_ids(&seen).remove(0);
        }
    };
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    drop(stdin);
    (id, seen)
}

/// A turn that ends while no console runs: the next console shows its output once,
/// whether it comes back with no input or with more lines.
#[test]
fn a_console_back_after_the_turn_ended_shows_what_it_missed() {
    let Some(env) = Env::new("") else { return };
    for input in ["", "list\n"] {
        let (id, seen) = console_killed_after(
            &env,
            "new say start\nrun sleep 3 && echo missed-output\n",
            "$ sleep 3 && echo missed-output",
        );
        // The turn ends while the console is away.
        std::thread::sleep(Duration::from_secs(4));
        let out = env.console(input);
        assert!(out.status.success(), "{}", text(&out));
        crate::support::assert_each_once(&id, &["start", "missed-output"], &seen, &out);
        // The next round starts a session of its own.
        let out = env.console(&format!("use {id}\nstop\n"));
        assert!(out.status.success(), "{}", text(&out));
    }
}

/// A session whose container ended while no console ran: the next console, even with
/// no input at all, shows the output it missed and the session's end, and only exits
/// once that end is stored.
#[test]
fn a_console_back_after_the_container_ended_shows_the_end() {
    let Some(env) = Env::new("") else { return };
    let (id, seen) = console_killed_after(
        &env,
        "new say start\nrun sleep 2 && echo missed-output\n",
        "$ sleep 2 && echo missed-output",
    );
    // The turn ends, then the container dies, while the console is away.
    std::thread::sleep(Duration::from_secs(3));
    let killed = std::process::Command::new("docker")
        .args(["kill", &format!("firstmate-{id}")])
        .output()
        .expect("docker kill");
    let _ = killed; // it may have ended by itself already (its stdin closed)
    std::thread::sleep(Duration::from_secs(1));
    let out = env.console("");
    let second = stdout(&out);
    let all = format!("{seen}{second}");
    let lines = lines_of(&all, &id);
    assert!(
        lines.iter().any(|l| l == "missed-output"),
        "the missed output is not shown:\n--- first console\n{seen}--- second console\n{}",
        text(&out)
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("-- failed") || l.starts_with("-- stopped")),
        "the session's end is not shown:\n--- first console\n{seen}--- second console\n{}",
        text(&out)
    );
    let state = env.session(&id)["state"].clone();
    assert!(
        state == "failed" || state == "stopped",
        "the end is not stored: {state}\n{}",
        text(&out)
    );
}

/// Runs `firstmate console` with raw bytes on stdin, to completion.
pub fn console_bytes(env: &Env, input: &[u8]) -> std::process::Output {
    let mut c = env.command();
    c.arg("console")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = c.spawn().expect("spawn firstmate console");
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = wait_child(child, Duration::from_secs(180));
    let _ = writer.join();
    out
}

/// A line that is not UTF-8 is refused like a bad command: an error that names the
/// line, the lines after it still run, exit code 2.
#[test]
fn a_line_that_is_not_utf8_is_refused_and_the_others_run() {
    let Some(env) = Env::new("") else { return };
    let out = console_bytes(&env, b"new say one\n\xff\xfe bad bytes\nsay two\nstop\n");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("line 2: not UTF-8"),
        "the bad line is not named:\n{}",
        text(&out)
    );
    let all = stdout(&out);
    let id = only_session(&all);
    let lines = lines_of(&all, &id);
    for expected in ["one", "two"] {
        assert!(
            lines.iter().any(|l| l == expected),
            "no `{expected}`:\n{}",
            text(&out)
        );
    }
    assert_eq!(env.session(&id)["state"], "stopped", "{}", text(&out));
}

/// A pasted megabyte in an argument is not echoed back whole.
#[test]
fn errors_quote_a_huge_argument_cut_short() {
    let Some(env) = Env::new("") else { return };
    let huge = "x".repeat(1 << 20);
    let out = env.console(&format!("use {huge}\nnew --agent {huge} go\nlist\n"));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.len() < 2000,
        "stderr is {} bytes long: {}…",
        stderr.len(),
        &stderr[..500.min(stderr.len())]
    );
    assert_eq!(
        stderr.matches("… (1048576 characters)").count(),
        2,
        "both echoes are not cut:\n{stderr}"
    );
    assert!(
        stdout(&out).contains("no sessions yet"),
        "the line after them did not run:\n{}",
        text(&out)
    );
}
