//! Approvals from chat (SPEC section 9) through the console, with the test agent's
//! `ask TOOL COMMAND` (Claude Code's `can_use_tool` protocol): approve, approve for the
//! session, deny, the timeout, `interrupt`, and a restart with an approval waiting.
//! Discord and Matrix are in their own files; the real Claude Code CLI in
//! `claude_real.rs`.

use std::time::Duration;

use crate::support::{Env, LiveConsole, lines_of, session_ids, stdout, text};

/// The test agent in `permission_mode = "ask"`, approvals timing out after `timeout`.
fn asking(timeout: &str) -> Option<Env> {
    Env::with_sessions(
        "permission_mode = \"ask\"\n",
        &format!("approval_timeout = \"{timeout}\"\n"),
    )
}

fn count(lines: &[String], pred: impl Fn(&str) -> bool) -> usize {
    lines.iter().filter(|l| pred(l)).count()
}

#[test]
fn console_approve_always_deny_and_timeout() {
    let Some(env) = asking("3s") else { return };
    let input = "new say start\n\
                 ask Bash echo one > /workspace/one && echo ran-one\n\
                 approve\n\
                 ask Bash echo two > /workspace/two && echo ran-two\n\
                 always\n\
                 ask Bash echo ran-three-unasked\n\
                 ask Edit touch /workspace/denied && echo ran-denied\n\
                 deny\n\
                 ask Write touch /workspace/late && echo ran-late\n";
    // At the end of its input the console does not wait for an approval nobody can
    // give any more; the next console shows how it ended.
    let out = env.console(input);
    assert!(out.status.success(), "{}", text(&out));
    let ids = session_ids(&stdout(&out));
    assert_eq!(ids.len(), 1, "{}", text(&out));
    // (The approval times out in an engine: the next console's, which picks the
    // session up.)
    let more = console_steps(
        &env,
        &format!("use {}\n", ids[0]),
        &[(
            "no answer within 3s",
            "run ls /workspace; echo listed\nstop\n",
        )],
    );
    let all = format!("{}{more}", text(&out));
    let lines = lines_of(&format!("{}{more}", stdout(&out)), &ids[0]);
    // Each call of a tool in ask_tools asked, once; Bash, approved for the session, did
    // not ask again.
    let asked = count(&lines, |l| l.starts_with("? approve "));
    assert_eq!(asked, 4, "{all}");
    assert_eq!(
        count(&lines, |l| l.contains("ran-three-unasked")
            && l.starts_with("? ")),
        0,
        "{all}"
    );
    for (want, n) in [
        ("✅ approved by console", 1),
        ("♾️ approved for this session by console", 1),
        ("❌ denied by console", 1),
        ("⌛ denied: no answer within 3s", 1),
    ] {
        assert_eq!(count(&lines, |l| l.ends_with(want)), n, "{want}\n{all}");
    }
    // What was approved ran once; what was denied never ran, and the agent was told.
    for ran in ["ran-one", "ran-two", "ran-three-unasked"] {
        assert_eq!(count(&lines, |l| l == ran), 1, "{ran}\n{all}");
    }
    for never in ["ran-denied", "ran-late"] {
        assert_eq!(count(&lines, |l| l == never), 0, "{never}\n{all}");
    }
    assert!(
        lines
            .iter()
            .any(|l| l == "Not run: denied by console in the chat."),
        "{all}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l == "Not run: nobody approved it (no answer within 3s)."),
        "{all}"
    );
    let listed: Vec<&String> = lines
        .iter()
        .skip_while(|l| !l.starts_with("$ ls /workspace"))
        .take_while(|l| *l != "listed")
        .collect();
    let files: Vec<&str> = listed.iter().skip(1).map(|l| l.as_str()).collect();
    assert_eq!(files, ["one", "two"], "{all}");

    let shown = env.session(&ids[0]);
    assert_eq!(shown["state"], "stopped", "{shown}");
}

/// Runs a console on `first`, then for each step, once it printed a line containing
/// the step's marker, writes the step's text; closes its input after the last. What it
/// printed, all of it.
fn console_steps(env: &Env, first: &str, steps: &[(&str, &str)]) -> String {
    let mut console = LiveConsole::start(env);
    console.write(first);
    for (marker, then) in steps {
        console.until(marker);
        console.write(then);
    }
    console.finish()
}

/// `interrupt` and `stop` while an approval waits act at once, deny it and say so.
#[test]
fn interrupt_and_stop_deny_a_waiting_approval() {
    let Some(env) = asking("10m") else { return };
    let all = console_steps(
        &env,
        "new ask Write touch /workspace/x && echo ran-interrupted\n",
        &[
            ("? approve Write", "interrupt\nask Write echo ran-stopped\n"),
            ("? approve Write: echo ran-stopped", "stop\n"),
        ],
    );
    let id = session_ids(&all).remove(0);
    let lines = lines_of(&all, &id);
    assert!(
        lines
            .iter()
            .any(|l| l.ends_with("❌ denied: the turn was interrupted")),
        "{all}"
    );
    assert!(lines.iter().any(|l| l == "-- turn interrupted"), "{all}");
    assert_eq!(count(&lines, |l| l == "ran-interrupted"), 0, "{all}");
    // The next turn asks again; `stop` while it waits ends it.
    assert!(
        lines
            .iter()
            .any(|l| l.ends_with("❌ denied: the session was stopped")),
        "{all}"
    );
    assert_eq!(count(&lines, |l| l == "ran-stopped"), 0, "{all}");
    let shown = env.wait_session(&id, Duration::from_secs(30), |s| s["state"] == "stopped");
    assert_eq!(shown["state"], "stopped");
}

/// A console killed while an approval waits: the container and the agent go on
/// waiting; `sessions show` says what for; the next console answers it, and the tool
/// runs once.
#[test]
fn an_approval_waiting_across_a_restart_is_answered_once() {
    let Some(env) = asking("10m") else { return };
    let mut console = LiveConsole::start(&env);
    console.write("new ask Bash echo survived >> /workspace/log && echo ran-after-restart\n");
    console.until("? approve Bash");
    let id = console.session();
    console.kill();

    let shown = env.wait_session(&id, Duration::from_secs(20), |s| {
        s["detail"]
            .as_str()
            .is_some_and(|d| d.contains("waiting for approval"))
    });
    assert_eq!(shown["state"], "running", "{shown}");
    assert!(
        shown["detail"]
            .as_str()
            .is_some_and(|d| d.contains("Bash echo survived")),
        "{shown}"
    );

    let out = env.console(&format!(
        "use {id}\napprove\nrun cat /workspace/log\nstop\n"
    ));
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    let lines = lines_of(&stdout(&out), &id);
    assert_eq!(count(&lines, |l| l == "ran-after-restart"), 1, "{all}");
    assert_eq!(count(&lines, |l| l == "survived"), 1, "{all}");
    assert!(
        lines.iter().any(|l| l.ends_with("✅ approved by console")),
        "{all}"
    );
    // A second answer finds nothing waiting.
    let again = env.console(&format!("use {id}\ndeny\n"));
    assert!(
        text(&again).contains("nothing in session"),
        "{}",
        text(&again)
    );
}
