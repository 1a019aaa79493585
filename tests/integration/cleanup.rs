//! Cleanup of ended sessions: `firstmate sessions rm`, `sessions prune` and
//! `[sessions] keep_stopped`, on the real daemon (and through the socket proxy with
//! FIRSTMATE_TEST_VIA_PROXY=1). Containers and volumes go; transcripts stay.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{Env, session_ids, stdout, text};

fn only_session(out: &str) -> String {
    let ids = session_ids(out);
    assert_eq!(ids.len(), 1, "expected one session in:\n{out}");
    ids[0].clone()
}

/// A session that said `said` and was stopped.
fn stopped_session(env: &Env, said: &str) -> String {
    let out = env.console(&format!("new say {said}\nstop\n"));
    assert!(out.status.success(), "{}", text(&out));
    let id = only_session(&stdout(&out));
    assert_eq!(env.session(&id)["state"], "stopped");
    id
}

fn container_exists(id: &str) -> bool {
    Command::new("docker")
        .args(["container", "inspect", &format!("firstmate-{id}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("docker container inspect")
        .success()
}

/// The names of the session's volumes.
fn volumes(id: &str) -> Vec<String> {
    let out = Command::new("docker")
        .args([
            "volume",
            "ls",
            "-q",
            "--filter",
            &format!("label=firstmate.session={id}"),
        ])
        .output()
        .expect("docker volume ls");
    let mut v: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    v.sort();
    v
}

fn assert_removed(env: &Env, id: &str) {
    assert!(
        !container_exists(id),
        "the container of {id} is still there"
    );
    assert_eq!(volumes(id), Vec::<String>::new(), "volumes of {id} left");
    let s = env.session(id);
    assert!(
        s["container_removed_at_ms"].is_i64(),
        "sessions show does not say the container was removed: {s:#}"
    );
}

/// Through a socket proxy (FIRSTMATE_TEST_VIA_PROXY=1), nothing was refused.
fn assert_proxy_let_everything_through(env: &Env) {
    if let Some(p) = &env.proxy {
        let log = p.log();
        assert!(
            !log.contains("denied:"),
            "the proxy refused something the cleanup needs:\n{log}"
        );
    }
}

fn assert_kept(env: &Env, id: &str) {
    assert!(container_exists(id), "the container of {id} was removed");
    assert!(!volumes(id).is_empty(), "the volumes of {id} were removed");
    assert!(
        env.session(id)["container_removed_at_ms"].is_null(),
        "{id} is said to be removed"
    );
}

#[test]
fn rm_removes_a_stopped_sessions_container_and_volumes_and_keeps_the_transcript() {
    let Some(env) = Env::new("") else { return };
    let id = stopped_session(&env, "hello-from-the-transcript");
    let vols = volumes(&id);
    assert!(
        vols.contains(&format!("firstmate-{id}-workspace")),
        "no workspace volume: {vols:?}"
    );
    assert_kept(&env, &id);
    let conversation = env.session(&id)["agent_session_id"].clone();
    assert!(conversation.is_string(), "no conversation id");

    let out = env.firstmate(&["sessions", "rm", &id]);
    assert!(out.status.success(), "{}", text(&out));
    let said = stdout(&out);
    assert!(
        said.contains(&format!("removed container firstmate-{id}")),
        "{said}"
    );
    for v in &vols {
        assert!(said.contains(v.as_str()), "{v} is not named in:\n{said}");
    }
    assert_removed(&env, &id);

    let logs = env.firstmate(&["sessions", "logs", &id]);
    assert!(logs.status.success(), "{}", text(&logs));
    assert!(
        stdout(&logs).contains("hello-from-the-transcript"),
        "the transcript is gone:\n{}",
        text(&logs)
    );
    let show = env.firstmate(&["sessions", "show", &id]);
    assert!(show.status.success(), "{}", text(&show));
    assert!(
        stdout(&show).contains("removed with its volumes"),
        "{}",
        text(&show)
    );
    assert_eq!(env.session(&id)["state"], "stopped");

    // Again: nothing left, still fine.
    let again = env.firstmate(&["sessions", "rm", &id]);
    assert!(again.status.success(), "{}", text(&again));
    assert!(
        stdout(&again).contains("no container or volume was left"),
        "{}",
        text(&again)
    );
    // An unknown id is a bad argument.
    let unknown = env.firstmate(&["sessions", "rm", "nosuchsession"]);
    assert_eq!(unknown.status.code(), Some(2), "{}", text(&unknown));
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("no session nosuchsession"),
        "{}",
        text(&unknown)
    );

    // `resume` afterwards starts a new conversation in a fresh container and workspace.
    let out = env.console("resume\nsay back-again\nstop\n");
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        crate::support::lines_of(&stdout(&out), &id)
            .iter()
            .any(|l| l == "back-again"),
        "no output after resume:\n{}",
        text(&out)
    );
    assert_kept(&env, &id);
    let resumed = env.session(&id)["agent_session_id"].clone();
    assert!(
        resumed.is_string() && resumed != conversation,
        "the removed conversation {conversation} was resumed: {resumed}"
    );
    assert_proxy_let_everything_through(&env);
}

#[test]
fn rm_refuses_a_running_session() {
    let Some(env) = Env::new("") else { return };
    // The console leaves; the session keeps running, waiting for a prompt.
    let out = env.console("new say hi\n");
    assert!(out.status.success(), "{}", text(&out));
    let id = only_session(&stdout(&out));
    assert_eq!(env.session(&id)["state"], "waiting");

    let rm = env.firstmate(&["sessions", "rm", &id]);
    assert_eq!(rm.status.code(), Some(1), "{}", text(&rm));
    let err = String::from_utf8_lossy(&rm.stderr);
    assert!(
        err.contains(&format!("sessions stop {id}")),
        "the refusal does not say to stop it first: {err}"
    );
    assert!(container_exists(&id), "the running container was removed");
    assert_eq!(env.session(&id)["state"], "waiting");

    let stop = env.firstmate(&["sessions", "stop", &id]);
    assert!(stop.status.success(), "{}", text(&stop));
    let rm = env.firstmate(&["sessions", "rm", &id]);
    assert!(rm.status.success(), "{}", text(&rm));
    assert_removed(&env, &id);
    assert_proxy_let_everything_through(&env);
}

#[test]
fn prune_older_than_leaves_a_recent_session() {
    let Some(env) = Env::new("") else { return };
    let old = stopped_session(&env, "old");
    std::thread::sleep(Duration::from_secs(5));
    let recent = stopped_session(&env, "recent");

    let out = env.firstmate(&["sessions", "prune", "--older-than", "4s"]);
    assert!(out.status.success(), "{}", text(&out));
    let said = stdout(&out);
    assert!(
        said.lines()
            .any(|l| l.starts_with(&format!("session {old} (stopped"))
                && l.contains("removed container")),
        "{said}"
    );
    assert!(!said.contains(&recent), "{said}");
    assert!(
        said.contains("1 ended session(s) more than 4s ago cleaned up"),
        "{said}"
    );
    assert_removed(&env, &old);
    assert_kept(&env, &recent);

    // Without --older-than: every ended session not removed yet.
    let out = env.firstmate(&["sessions", "prune"]);
    assert!(out.status.success(), "{}", text(&out));
    let said = stdout(&out);
    assert!(
        said.contains(&format!("session {recent} (stopped")),
        "{said}"
    );
    assert!(!said.contains(&old), "{said}");
    assert!(said.contains("1 ended session(s) cleaned up"), "{said}");
    assert_removed(&env, &recent);
    assert!(
        stdout(&env.firstmate(&["sessions", "logs", &old])).contains("old"),
        "the transcript of {old} is gone"
    );

    let bad = env.firstmate(&["sessions", "prune", "--older-than", "soon"]);
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad));
    assert_proxy_let_everything_through(&env);
}

#[test]
fn keep_stopped_prunes_ended_sessions_automatically() {
    let Some(env) = Env::with_sessions("", "keep_stopped = \"2s\"") else {
        return;
    };
    let id = stopped_session(&env, "bye");
    let service = crate::support::service::Service::spawn(&env, "info", &[]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while container_exists(&id) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
    }
    // The log line comes right after the removal.
    std::thread::sleep(Duration::from_millis(500));
    let logged = service.kill();
    assert!(
        !container_exists(&id),
        "keep_stopped did not remove the container:\n{logged}"
    );
    assert_removed(&env, &id);
    assert!(
        logged
            .lines()
            .any(|l| l.contains("INFO") && l.contains("keep_stopped") && l.contains(&id)),
        "the removal is not logged at INFO:\n{logged}"
    );
    assert!(
        stdout(&env.firstmate(&["sessions", "logs", &id])).contains("bye"),
        "the transcript is gone"
    );
    assert_proxy_let_everything_through(&env);
}
