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
