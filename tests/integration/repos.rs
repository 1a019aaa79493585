//! Repository sessions (SPEC section 8) through the real binary, the test agent and the
//! gateway: a real git server (`git http-backend`) on 127.0.0.1 that wants a token the
//! worker never sees, and the forge stand-ins. The worker reaches the gateway only
//! (through the relay), and git only through the gateway.
//!
//! - `new --repo` clones on `firstmate/<id>`; the agent commits (`run git ...`); each
//!   turn's end counts the changes; a push to `main` and a delete of another branch are
//!   refused before the server sees them, and the thread says which ref; `diff` is the
//!   change; `push` lands on the session's branch; `pr` opens a pull request with the
//!   session's details and the link reaches the thread; `status` shows the branch and
//!   the pushed commit; the token is in no container setting, workspace file, database
//!   row or log line.
//! - `--branch` on an existing branch works on a new `firstmate/<id>` from it; on a new
//!   name, that name is the session's; ad-hoc URLs on other hosts are refused; a clone
//!   that fetches what an earlier one did is answered from the gateway's pack cache.
//! - `pr` against the Forgejo and GitLab stand-ins; the agent pushing its own branch; a
//!   resumed session keeps its workspace.
//! - On the fake Discord: `repo` autocompletes from the aliases, the diffstat reaches the
//!   thread, five `/agent pr` at once open one pull request that links back to the
//!   thread (the other four are given its link).

use std::process::Command;
use std::time::Duration;

use crate::support::forge::ForgeStandIn;
use crate::support::git::GitServer;
use crate::support::service::Service;
use crate::support::worker::free_port;
use serde_json::json;

use crate::support::discord::FakeDiscord;
use crate::support::{
    Env, LiveConsole, inspect, lines_of, run_with_timeout, session_ids, stdout, text,
};

const TOKEN: &str = "glpat-firstmate-TEST-git-token-9d41";
const REPO: &str = "team/demo.git";

/// An environment whose `[repos.demo]` is `repo_url` on `forge` (API at `api`), with
/// the token in a file, and whose workers reach the gateway through the relay.
fn repo_env(repo_url: &str, forge: &str, api: &str) -> Option<Env> {
    repo_env_with(repo_url, forge, api, "")
}

/// Like `repo_env`, with `extra` tables.
fn repo_env_with(repo_url: &str, forge: &str, api: &str, extra: &str) -> Option<Env> {
    let gw_port = free_port("0.0.0.0");
    let env = Env::with_sessions(
        &format!(
            r#"
[gateway]
listen = "0.0.0.0:{gw_port}"
url = "http://firstmate:{gw_port}"

[repos.demo]
url = "{repo_url}"
default_branch = "main"
token_file = "git-token"
forge = "{forge}"
api_url = "{api}"
{extra}
"#
        ),
        "allowed_repo_hosts = [\"127.0.0.1\"]",
    )?;
    std::fs::write(env.path().join("git-token"), format!("{TOKEN}\n")).expect("token file");
    Some(env)
}

fn console(env: &Env, input: &str) -> std::process::Output {
    let mut c = env.command();
    c.arg("console").env("FIRSTMATE_LOG", "firstmate=debug");
    run_with_timeout(c, input, Duration::from_secs(300))
}

fn exec(container: &str, cmd: &str) -> String {
    let out = Command::new("docker")
        .args(["exec", container, "sh", "-c", cmd])
        .output()
        .expect("docker exec");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn has(lines: &[String], needle: &str) -> bool {
    lines.iter().any(|l| l.contains(needle))
}

#[test]
fn a_repo_session_clones_commits_pushes_and_opens_a_pull_request() {
    let git = GitServer::start(TOKEN);
    let url = git.create_repo(REPO, &[("README.md", "hello from the repo\n")]);
    git.add_branch(REPO, "other", "main");
    let before = git.branches(REPO);
    let forge = ForgeStandIn::start(TOKEN);
    let Some(env) = repo_env(&url, "github", forge.url()) else {
        return;
    };

    let out = console(
        &env,
        "new --repo demo run cat README.md && git status --short --branch && git remote -v\n\
         run echo more >> README.md && echo new > added.txt && git add -A && git commit -qm 'agent change' && echo committed\n\
         run git push origin HEAD:refs/heads/main 2>&1; echo exit=$?\n\
         run git push origin --delete other 2>&1; echo exit=$?\n\
         run git ls-remote \"$(git remote get-url origin | sed 's#/git/.*#/git/0123456789#')\" 2>&1; echo exit=$?\n\
         diff\n\
         push\n\
         pr\n\
         status\n",
    );
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    let id = session_ids(&stdout(&out))
        .first()
        .cloned()
        .unwrap_or_else(|| panic!("no session: {all}"));
    let lines = lines_of(&stdout(&out), &id);
    let branch = format!("firstmate/{id}");

    // Cloned on the session's branch, from the gateway (the remote has no token).
    assert!(
        has(
            &lines,
            &format!("workspace: demo on branch {branch} from main at")
        ),
        "{all}"
    );
    assert!(has(&lines, "hello from the repo"), "{all}");
    assert!(has(&lines, &format!("## {branch}")), "{all}");
    assert!(has(&lines, "/git/") && !all.contains(TOKEN), "{all}");
    assert!(has(&lines, "committed"), "{all}");
    assert!(
        has(&lines, "📝 2 files changed, +2 −0 since the session began"),
        "{all}"
    );

    // The push to main and the delete: refused before the server, and said in the thread.
    assert!(
        has(
            &lines,
            &format!("firstmate: this session may push only to {branch}")
        ),
        "{all}"
    );
    assert!(has(&lines, "push refused: refs/heads/main"), "{all}");
    assert!(has(&lines, "push refused: refs/heads/other"), "{all}");
    // Another session's repository, with this session's token: refused.
    assert!(
        has(&lines, "The requested URL returned error: 403"),
        "{all}"
    );
    let after = git.branches(REPO);
    assert_eq!(after.get("refs/heads/main"), before.get("refs/heads/main"));
    assert_eq!(
        after.get("refs/heads/other"),
        before.get("refs/heads/other")
    );

    // diff: the change as a file.
    let diff_line = lines
        .iter()
        .find(|l| l.contains("diff written to "))
        .unwrap_or_else(|| panic!("no diff: {all}"));
    let path = diff_line.split("diff written to ").nth(1).unwrap().trim();
    let diff = std::fs::read_to_string(path).expect("the diff file");
    assert!(
        diff.contains("added.txt") && diff.contains("+more") && diff.contains("+new"),
        "{diff}"
    );

    // push: the session's branch, on the server.
    let pushed = git.branches(REPO);
    let head = pushed
        .get(&format!("refs/heads/{branch}"))
        .unwrap_or_else(|| panic!("the branch was not pushed: {pushed:?}\n{all}"));
    assert!(
        has(&lines, &format!("⬆ pushed {branch} at {}", &head[..7])),
        "{all}"
    );
    assert_eq!(
        git.file_at(REPO, &branch, "added.txt").as_deref(),
        Some("new\n")
    );
    // Every request reached the server with the token, as the GitHub user.
    let calls = git.calls();
    assert!(!calls.is_empty());
    for c in &calls {
        assert!(c.authorized, "{c:?}");
        assert_eq!(c.user.as_deref(), Some("x-access-token"), "{c:?}");
    }
    // No refused push reached the server: its only pushes are the session's branch.
    let server_pushes = calls
        .iter()
        .filter(|c| c.is_push() && c.method == "POST")
        .count();
    assert_eq!(server_pushes, 1, "{calls:#?}");

    // pr: GitHub's API, the session's details, the link in the thread.
    let pulls = forge.pulls();
    assert_eq!(pulls.len(), 1, "{}", forge.log());
    let pr = &pulls[0];
    assert_eq!(
        (pr.repo.as_str(), pr.head.as_str(), pr.base.as_str()),
        ("team/demo", branch.as_str(), "main")
    );
    assert_eq!(
        pr.title,
        "run cat README.md && git status --short --branch && git remote -v"
    );
    let body = pr.body.clone().unwrap_or_default();
    for want in [
        "Requested by:",
        "Agent: scripted",
        "Turns: ",
        "Tokens: ",
        "Cost: $",
        &id,
    ] {
        assert!(body.contains(want), "{want} in {body}");
    }
    let call = forge
        .calls()
        .into_iter()
        .find(|c| c.method == "POST")
        .expect("a POST");
    assert_eq!(
        call.header("authorization"),
        Some(format!("Bearer {TOKEN}").as_str())
    );
    assert!(
        has(&lines, &format!("🔀 pull request opened: {}", pr.html_url)),
        "{all}"
    );

    // status: the branch, where it began and what was pushed.
    assert!(
        has(&lines, &format!("branch: {branch} (from main at ")),
        "{all}"
    );
    assert!(has(&lines, &format!("pushed: {}", &head[..7])), "{all}");
    assert!(
        has(&lines, &format!("pull request: {}", pr.html_url)),
        "{all}"
    );
    let shown = env.session(&id);
    assert_eq!(shown["branch"], branch.as_str());
    assert_eq!(shown["pushed_commit"], head.as_str());

    // The token: nowhere in the container, its workspace, the database or the logs.
    let container = format!("firstmate-{id}");
    assert!(!inspect(&container).to_string().contains(TOKEN));
    let git_config = exec(&container, "cat /workspace/.git/config");
    assert!(git_config.contains("/git/"), "{git_config}");
    assert!(
        !git_config.contains(TOKEN) && !git_config.contains("extraHeader"),
        "{git_config}"
    );
    assert!(exec(&container, "env").contains("GIT_CONFIG_COUNT"));
    assert!(
        !exec(
            &container,
            "env; cat /workspace/.git/config /workspace/.git/FETCH_HEAD 2>/dev/null"
        )
        .contains(TOKEN)
    );
    assert!(
        !all.contains(TOKEN),
        "the token is in the console's output or log"
    );
    if env.db_url.starts_with("sqlite://") {
        let mut bytes = std::fs::read(env.path().join("firstmate.db")).expect("db");
        bytes.extend(std::fs::read(env.path().join("firstmate.db-wal")).unwrap_or_default());
        assert!(
            !bytes.windows(TOKEN.len()).any(|w| w == TOKEN.as_bytes()),
            "the token is in the database"
        );
    }
}

#[test]
fn branches_and_urls_choose_where_the_work_goes() {
    let git = GitServer::start(TOKEN);
    let url = git.create_repo(REPO, &[("a.txt", "a\n")]);
    git.add_branch(REPO, "feature", "main");
    let forge = ForgeStandIn::start(TOKEN);
    let Some(env) = repo_env(&url, "forgejo", forge.url()) else {
        return;
    };
    let out = console(
        &env,
        "new --repo demo --branch feature run git rev-parse --abbrev-ref HEAD && echo x > b.txt && git add b.txt && git commit -qm b\n\
         pr\n\
         new --repo demo --branch fresh-work run echo y > c.txt\n\
         push\n\
         new --repo demo run git log --oneline -1\n\
         new --repo https://github.com/o/r.git say no\n\
         new --branch x say no\n",
    );
    let all = text(&out);
    let ids = session_ids(&stdout(&out));
    assert_eq!(ids.len(), 3, "{all}");
    // An existing branch: the work goes on firstmate/<id> from it, and the pull
    // request goes back into it.
    let first = lines_of(&stdout(&out), &ids[0]);
    let own = format!("firstmate/{}", ids[0]);
    assert!(
        has(
            &first,
            &format!("workspace: demo on branch {own} from feature at")
        ),
        "{all}"
    );
    let pulls = forge.pulls();
    assert_eq!(pulls.len(), 1, "{}", forge.log());
    assert_eq!(
        (pulls[0].head.as_str(), pulls[0].base.as_str()),
        (own.as_str(), "feature")
    );
    let call = forge
        .calls()
        .into_iter()
        .find(|c| c.method == "POST")
        .expect("a POST");
    assert_eq!(call.path, "/api/v1/repos/team/demo/pulls");
    assert_eq!(
        call.header("authorization"),
        Some(format!("token {TOKEN}").as_str())
    );
    assert!(
        has(
            &first,
            &format!("🔀 pull request opened: {}", pulls[0].html_url)
        ),
        "{all}"
    );
    // A new name: the session's branch, from main; `push` commits what is not committed.
    let second = lines_of(&stdout(&out), &ids[1]);
    assert!(
        has(&second, "workspace: demo on branch fresh-work from main at"),
        "{all}"
    );
    assert_eq!(
        git.file_at(REPO, "fresh-work", "c.txt").as_deref(),
        Some("y\n")
    );
    assert!(git.branches(REPO).contains_key("refs/heads/feature"));
    // The sessions fetched the same commit: the gateway gave the later ones the first
    // one's pack.
    let third = lines_of(&stdout(&out), &ids[2]);
    assert!(has(&third, "workspace: demo on branch firstmate/"), "{all}");
    assert!(all.contains("answered from the shared pack cache"), "{all}");
    let fetches = git
        .calls()
        .iter()
        .filter(|c| c.method == "POST" && c.path.ends_with("/git-upload-pack"))
        .count();
    // Two `--branch` probes (ls-refs), three clones' ls-refs, and one pack: `feature`
    // was made from main, so all three clones want the same commit, and the second and
    // third got the first one's pack from the gateway.
    assert_eq!(
        fetches,
        2 + 3 + 1,
        "upload-pack requests that reached the server"
    );
    // Refused before anything starts.
    assert!(
        all.contains("github.com is not an allowed repository host"),
        "{all}"
    );
    assert!(all.contains("--branch needs --repo"), "{all}");
}

/// A `--branch` that did not exist is the session's own; a force push over the
/// session's own commits goes through, but once someone else pushed to the branch the
/// session's pushes are refused, `--force` or not, and their commit stays.
#[test]
fn a_session_never_overwrites_a_commit_someone_else_pushed() {
    let git = GitServer::start(TOKEN);
    let url = git.create_repo(REPO, &[("a.txt", "a\n")]);
    let forge = ForgeStandIn::start(TOKEN);
    let Some(env) = repo_env(&url, "forgejo", forge.url()) else {
        return;
    };
    let mut console = LiveConsole::start(&env);
    // Each step ends with a line its prompt does not hold (`step-N`), so the console
    // is read up to the step's output, whatever the push did.
    let step = |console: &mut LiveConsole, n: u32, run: &str| {
        console.write(&format!("{run}; echo exit=$?; echo step-$(({n}+0))\n"));
        console.until(&format!("step-{n}"));
    };
    step(
        &mut console,
        1,
        "new --repo demo --branch fresh run echo one > one.txt && git add -A && git commit -qm one && git push -q origin HEAD 2>&1",
    );
    let ours = git.branches(REPO).get("refs/heads/fresh").cloned();
    step(
        &mut console,
        2,
        "run git commit --amend -qm one-again && git push -qf origin HEAD 2>&1",
    );
    let amended = git.branches(REPO).get("refs/heads/fresh").cloned();
    // Someone else pushes to the session's branch.
    let theirs = git.commit(REPO, "fresh", &[("theirs.txt", "theirs\n")], "their work");
    step(
        &mut console,
        3,
        "run echo two > two.txt && git add -A && git commit -qm two && git push -qf origin HEAD 2>&1",
    );
    console.write("stop\n");
    let all = console.finish();
    let id = session_ids(&all)
        .first()
        .cloned()
        .unwrap_or_else(|| panic!("no session: {all}"));
    let lines = lines_of(&all, &id);
    assert!(
        has(&lines, "workspace: demo on branch fresh from main at"),
        "{all}"
    );
    let exits: Vec<&String> = lines.iter().filter(|l| l.starts_with("exit=")).collect();
    assert_eq!(exits, ["exit=0", "exit=0", "exit=1"], "{all}");
    assert!(
        ours.is_some() && amended.is_some() && ours != amended,
        "{all}"
    );
    assert_eq!(
        git.file_at(REPO, "fresh", "one.txt").as_deref(),
        Some("one\n"),
        "{all}"
    );
    // Their commit is where they left it; the thread said why the push was refused.
    assert_eq!(
        git.branches(REPO).get("refs/heads/fresh"),
        Some(&theirs),
        "{all}"
    );
    assert!(
        has(
            &lines,
            "fresh has commits this session did not push (someone else pushed to it)"
        ),
        "{all}"
    );
    assert!(has(&lines, "push refused: refs/heads/fresh"), "{all}");
    // The session's last accepted push is what the store holds.
    assert_eq!(
        env.session(&id)["pushed_commit"],
        amended.as_deref().unwrap_or_default(),
        "{all}"
    );
}

#[test]
fn a_gitlab_merge_request_and_the_agent_pushing_its_own_branch() {
    let git = GitServer::start(TOKEN);
    let url = git.create_repo(REPO, &[("a.txt", "a\n")]);
    let forge = ForgeStandIn::start(TOKEN);
    let Some(env) = repo_env(&url, "gitlab", forge.url()) else {
        return;
    };
    let service = Service::start_logging(&env, "firstmate=debug");
    let out = console(
        &env,
        "new --repo demo run echo z > z.txt && git add z.txt && git commit -qm z && git push -q origin HEAD 2>&1 && echo agent-pushed\n\
         pr\n\
         stop\n\
         resume\n\
         run git log --format=%s -1 && git rev-parse --abbrev-ref HEAD\n",
    );
    let all = text(&out);
    let id = session_ids(&stdout(&out))
        .first()
        .cloned()
        .unwrap_or_else(|| panic!("{all}"));
    let lines = lines_of(&stdout(&out), &id);
    assert!(has(&lines, "agent-pushed"), "{all}");
    let branch = format!("firstmate/{id}");
    assert_eq!(git.file_at(REPO, &branch, "z.txt").as_deref(), Some("z\n"));
    let pulls = forge.pulls();
    assert_eq!(pulls.len(), 1, "{}", forge.log());
    assert_eq!(
        (pulls[0].head.as_str(), pulls[0].base.as_str()),
        (branch.as_str(), "main")
    );
    let call = forge
        .calls()
        .into_iter()
        .find(|c| c.method == "POST")
        .expect("a POST");
    assert_eq!(call.path, "/api/v4/projects/team%2Fdemo/merge_requests");
    assert_eq!(call.header("private-token"), Some(TOKEN));
    assert!(
        has(
            &lines,
            &format!("🔀 pull request opened: {}", pulls[0].html_url)
        ),
        "{all}"
    );
    // The agent's own push was recorded as the session's pushed commit.
    let head = git.branches(REPO)[&format!("refs/heads/{branch}")].clone();
    assert_eq!(env.session(&id)["pushed_commit"], head.as_str());
    // Resumed: the same workspace, on the same branch, cloned once.
    let resumed = lines
        .iter()
        .position(|l| l.contains("> run git log"))
        .unwrap_or_else(|| panic!("{all}"));
    assert!(lines[resumed..].iter().any(|l| l.trim() == "z"), "{all}");
    assert!(lines[resumed..].iter().any(|l| l.trim() == branch), "{all}");
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.contains("workspace: demo"))
            .count(),
        1,
        "{all}"
    );
    let log = service.log();
    assert!(!log.contains(TOKEN), "the token is in the service log");
}

#[test]
fn discord_repo_sessions_autocomplete_push_and_open_a_pull_request() {
    const ALICE: u64 = 111_111_111_111_111_111;
    let wait = Duration::from_secs(90);
    let git = GitServer::start(TOKEN);
    let url = git.create_repo(REPO, &[("README.md", "hello\n")]);
    let forge = ForgeStandIn::start(TOKEN);
    let fake = FakeDiscord::start();
    fake.add_member(ALICE, "alice", &[]);
    let discord = fake.config(&[ALICE]);
    let Some(env) = repo_env_with(&url, "github", forge.url(), &discord) else {
        return;
    };
    let mut service = Some(Service::spawn(
        &env,
        "firstmate=debug,info",
        &[("FIRSTMATE_TEST_DISCORD_TOKEN", FakeDiscord::TOKEN)],
    ));
    let mut stop = move || service.take().map(Service::kill).unwrap_or_default();
    assert!(fake.wait_for(wait, |f| f.identified()
        && !f.registered_commands().is_empty()));

    // The repo option completes from the aliases.
    let ac = fake.autocomplete(ALICE, fake.channel_id(), "agent", "new", "repo", "de");
    assert!(
        fake.wait_for(wait, |f| f
            .interaction_responses(&ac)
            .iter()
            .any(|r| r["data"]["choices"][0]["value"] == "demo")),
        "{:?}",
        fake.interaction_responses(&ac)
    );

    fake.slash_command(
        ALICE,
        fake.channel_id(),
        "agent",
        "new",
        &[
            ("prompt", json!("run echo hi > hi.txt")),
            ("agent", json!("scripted")),
            ("repo", json!("demo")),
        ],
    );
    if !fake.wait_for(wait, |f| {
        f.thread_with("1 file changed, +1 −0 since the session began")
    }) {
        panic!("no diffstat in the thread: {}", stop());
    }
    let thread = fake.threads()[0].id;
    assert!(fake.thread_with("workspace: demo on branch firstmate/"));
    // Five presses of `/agent pr` at once: one pull request, the others get its link.
    for _ in 0..5 {
        fake.slash_command(ALICE, thread, "agent", "pr", &[]);
    }
    let opened_earlier = |f: &FakeDiscord| {
        f.messages(thread)
            .iter()
            .map(|m| m.content.matches("pull request (opened earlier): ").count())
            .sum::<usize>()
    };
    if !fake.wait_for(wait, |f| {
        f.thread_with("pull request opened: ") && opened_earlier(f) == 4
    }) {
        panic!("no pull request link: {}", stop());
    }
    let pulls = forge.pulls();
    assert_eq!(pulls.len(), 1, "{}", forge.log());
    assert!(fake.thread_with(&pulls[0].html_url));
    let body = pulls[0].body.clone().unwrap_or_default();
    let link = format!("https://discord.com/channels/{}/{thread}", fake.guild_id());
    assert!(body.contains(&link), "{link} in {body}");
    assert!(body.contains(&format!("Requested by: {ALICE}")), "{body}");
    let branch = &pulls[0].head;
    assert_eq!(git.file_at(REPO, branch, "hi.txt").as_deref(), Some("hi\n"));
    let log = stop();
    assert!(!log.contains(TOKEN), "the token is in the bot's log");
}
