//! The stand-ins of the repositories and pull requests tests, checked on their own (no
//! Docker): the git smart-HTTP server that wants a token, and the forge API stand-in.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::support::forge::{Forge, ForgeStandIn};
use crate::support::git::{GitServer, git, git_command, try_git};

const TOKEN: &str = "ghp_test_token_123";

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn git_server_clones_and_pushes_with_the_token() {
    let server = GitServer::start(TOKEN);
    assert_eq!(server.token(), TOKEN);
    let name = "team/demo.git";
    let url = server.create_repo(
        name,
        &[("README.md", "# demo\n"), ("src/lib.rs", "pub fn f() {}\n")],
    );
    assert_eq!(url, format!("{}/team/demo.git", server.url()));
    assert!(server.root().join(name).join("HEAD").is_file());
    let main = server.branches(name);
    assert_eq!(main.keys().collect::<Vec<_>>(), ["refs/heads/main"]);
    assert_eq!(
        server.file_at(name, "main", "src/lib.rs").as_deref(),
        Some("pub fn f() {}\n")
    );
    assert_eq!(server.file_at(name, "main", "missing.txt"), None);

    let work = tempfile::tempdir().expect("tempdir");
    let dir = work.path();

    // Without credentials, or with a wrong token: refused, and git does not prompt.
    let out = try_git(dir, &["clone", &url, "anon"]);
    assert!(!out.status.success(), "a clone without the token worked");
    let wrong = url.replace("http://", "http://x:wrong-token@");
    let out = try_git(dir, &["clone", &wrong, "wrong"]);
    assert!(!out.status.success(), "a clone with a wrong token worked");
    assert!(!dir.join("anon").exists() && !dir.join("wrong").exists());

    // With the token in the URL (any user name).
    let authed = url.replace("http://", &format!("http://x:{TOKEN}@"));
    let out = try_git(dir, &["clone", &authed, "clone"]);
    assert!(
        out.status.success(),
        "clone failed: {}\n{}",
        stderr(&out),
        server.log()
    );
    let clone = dir.join("clone");
    assert_eq!(
        std::fs::read_to_string(clone.join("README.md")).expect("README.md"),
        "# demo\n"
    );
    assert_eq!(
        git(&clone, &["rev-parse", "HEAD"]).trim(),
        main["refs/heads/main"]
    );

    // A new branch, committed and pushed.
    git(&clone, &["checkout", "-q", "-b", "feature/notes"]);
    std::fs::write(clone.join("NOTES.md"), "notes\n").expect("write");
    git(&clone, &["add", "NOTES.md"]);
    git(&clone, &["commit", "-q", "-m", "Add notes"]);
    let out = try_git(&clone, &["push", "origin", "feature/notes"]);
    assert!(
        out.status.success(),
        "push failed: {}\n{}",
        stderr(&out),
        server.log()
    );
    let head = git(&clone, &["rev-parse", "HEAD"]).trim().to_string();
    let branches = server.branches(name);
    assert_eq!(
        branches,
        BTreeMap::from([
            ("refs/heads/feature/notes".to_string(), head.clone()),
            (
                "refs/heads/main".to_string(),
                main["refs/heads/main"].clone()
            ),
        ])
    );
    assert_eq!(
        server.file_at(name, "feature/notes", "NOTES.md").as_deref(),
        Some("notes\n")
    );

    // What it recorded: the refused requests, and the push with its user.
    let calls = server.calls();
    assert!(
        calls
            .iter()
            .any(|c| !c.authorized && c.status == 401 && c.user.is_none()),
        "{}",
        server.log()
    );
    assert!(
        calls
            .iter()
            .any(|c| !c.authorized && c.status == 401 && c.user.as_deref() == Some("x")),
        "{}",
        server.log()
    );
    let push = calls
        .iter()
        .find(|c| c.is_push())
        .unwrap_or_else(|| panic!("no push recorded:\n{}", server.log()));
    assert!(push.authorized && push.status == 200, "{push:?}");
    assert_eq!(push.user.as_deref(), Some("x"));
    assert_eq!(push.service(), Some("git-receive-pack"));
    assert!(
        calls.iter().any(|c| c.method == "GET"
            && c.path == "/team/demo.git/info/refs"
            && c.query == "service=git-upload-pack"
            && c.authorized),
        "{}",
        server.log()
    );
    assert!(calls.iter().all(|c| c.authorized == (c.status != 401)));

    // Branches and commits made on the server side.
    server.add_branch(name, "release", "main");
    assert_eq!(
        server.branches(name)["refs/heads/release"],
        main["refs/heads/main"]
    );
    let upstream = server.commit(name, "main", &[("CHANGELOG.md", "v2\n")], "Upstream change");
    assert_eq!(server.branches(name)["refs/heads/main"], upstream);
    assert_eq!(
        server.file_at(name, "main", "README.md").as_deref(),
        Some("# demo\n")
    );
    let out = try_git(&clone, &["fetch", "-q", "origin"]);
    assert!(out.status.success(), "fetch failed: {}", stderr(&out));
    assert_eq!(git(&clone, &["rev-parse", "origin/main"]).trim(), upstream);

    // A required user name: the token alone is no longer enough.
    server.require_user("firstmate");
    let out = try_git(dir, &["clone", &authed, "other-user"]);
    assert!(!out.status.success(), "a clone as another user worked");
    let out = try_git(dir, &["clone", &server.url_with_token(name), "right-user"]);
    assert!(out.status.success(), "clone failed: {}", stderr(&out));

    // A rotated token: the old one is refused.
    server.set_token("rotated");
    let out = try_git(&clone, &["fetch", "-q", "origin"]);
    assert!(!out.status.success(), "a fetch with the old token worked");
}

#[test]
fn git_server_makes_large_repositories() {
    let server = GitServer::start(TOKEN);
    let name = "big/many.git";
    let started = std::time::Instant::now();
    let url = server.create_large_repo(name, 2_500);
    let took = started.elapsed();
    assert!(took < std::time::Duration::from_secs(30), "took {took:?}");
    let files = server.git(name, &["ls-tree", "-r", "--name-only", "main"]);
    assert_eq!(files.lines().count(), 2_501, "README.md and 2,500 files");
    assert_eq!(
        server
            .file_at(name, "main", "src/d000/d24/f002499.txt")
            .as_deref(),
        Some("file 2499\n")
    );
    // 100 files a directory.
    let dir = server.git(name, &["ls-tree", "--name-only", "main", "src/d000/d07/"]);
    assert_eq!(dir.lines().count(), 100);
    // And it clones.
    let work = tempfile::tempdir().expect("tempdir");
    let authed = url.replace("http://", &format!("http://x:{TOKEN}@"));
    let out = git_command()
        .current_dir(work.path())
        .args(["clone", "-q", "--depth", "1", &authed, "big"])
        .output()
        .expect("git clone");
    assert!(out.status.success(), "clone failed: {}", stderr(&out));
    assert!(work.path().join("big/src/d000/d00/f000000.txt").is_file());
}

/// A POST of `body` (as JSON unless `content_type` says otherwise): (status, JSON).
async fn post(
    client: &reqwest::Client,
    url: &str,
    headers: &[(&str, &str)],
    content_type: Option<&str>,
    body: &Value,
) -> (u16, Value) {
    let mut r = client.post(url).body(body.to_string());
    if let Some(ct) = content_type {
        r = r.header("content-type", ct);
    }
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    let resp = r.send().await.expect("request");
    let status = resp.status().as_u16();
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .is_ok_and(|c| c.starts_with("application/json")),
        "{url}: {:?}",
        resp.headers()
    );
    (status, resp.json().await.expect("a JSON answer"))
}

const JSON: Option<&str> = Some("application/json");

#[test]
fn forge_stand_ins_answer_as_documented() {
    let forge = ForgeStandIn::start(TOKEN);
    let base = forge.url().to_string();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let client = reqwest::Client::builder()
            .user_agent("firstmate-test")
            .build()
            .expect("client");
        let bearer = format!("Bearer {TOKEN}");
        let token = format!("token {TOKEN}");

        // --- GitHub
        let gh = format!("{base}/repos/acme/widget/pulls");
        let pr = json!({"title": "Add notes", "head": "feature/notes", "base": "main", "body": "Why"});
        let gh_headers = [
            ("authorization", bearer.as_str()),
            ("accept", "application/vnd.github+json"),
            ("x-github-api-version", "2022-11-28"),
        ];
        let (s, v) = post(&client, &gh, &[], JSON, &pr).await;
        assert_eq!((s, v["message"].as_str()), (401, Some("Bad credentials")), "{v}");
        assert_eq!(v["status"], "401");
        let (s, _) = post(&client, &gh, &[("authorization", "Bearer nope")], JSON, &pr).await;
        assert_eq!(s, 401);
        let (s, v) = post(&client, &gh, &gh_headers, Some("text/plain"), &pr).await;
        assert_eq!((s, v["message"].as_str()), (400, Some("Problems parsing JSON")));
        let (s, v) = post(&client, &gh, &gh_headers, JSON, &json!({"title": "t", "base": "main"})).await;
        assert_eq!(s, 422, "{v}");
        assert_eq!(v["message"], "Validation Failed");
        assert_eq!(
            v["errors"],
            json!([{"resource": "PullRequest", "field": "head", "code": "missing_field"}])
        );
        // No User-Agent: GitHub refuses.
        let bare = reqwest::Client::new();
        let (s, _) = post(&bare, &gh, &gh_headers, JSON, &pr).await;
        assert_eq!(s, 403);

        let (s, v) = post(&client, &gh, &gh_headers, JSON, &pr).await;
        assert_eq!(s, 201, "{v}");
        assert_eq!(v["number"], 1);
        assert_eq!(v["state"], "open");
        assert_eq!(v["title"], "Add notes");
        assert_eq!(v["body"], "Why");
        assert_eq!(v["html_url"], format!("{base}/acme/widget/pull/1"));
        assert_eq!(v["url"], format!("{base}/repos/acme/widget/pulls/1"));
        assert_eq!(v["head"]["ref"], "feature/notes");
        assert_eq!(v["base"]["ref"], "main");
        assert!(v["id"].as_u64().is_some());
        let (s, v) = post(&client, &gh, &[("authorization", token.as_str())], JSON, &pr).await;
        assert_eq!(s, 422, "{v}");
        assert_eq!(
            v["errors"][0]["message"],
            "A pull request already exists for acme:feature/notes."
        );
        assert_eq!(v["errors"][0]["code"], "custom");
        let other = json!({"title": "Other", "head": "other", "base": "main", "draft": true});
        let (s, v) = post(&client, &gh, &[("authorization", token.as_str())], JSON, &other).await;
        assert_eq!((s, v["number"].as_u64()), (201, Some(2)), "{v}");
        assert_eq!(v["draft"], true);
        let (s, v) = post(&client, &format!("{base}/repos/acme/widget/issues"), &gh_headers, JSON, &pr).await;
        assert_eq!((s, v["message"].as_str()), (404, Some("Not Found")));

        // --- Forgejo
        let fj = format!("{base}/api/v1/repos/acme/widget/pulls");
        let (s, v) = post(&client, &fj, &[], JSON, &pr).await;
        assert_eq!(s, 401);
        assert_eq!(v, json!({"message": "token is required", "url": format!("{base}/api/swagger")}));
        let fj_auth = [("authorization", token.as_str())];
        let (s, _) = post(&client, &fj, &fj_auth, Some("text/plain"), &pr).await;
        assert_eq!(s, 415);
        let (s, v) = post(&client, &fj, &fj_auth, JSON, &json!({"title": "t", "base": "main"})).await;
        assert_eq!((s, v["message"].as_str()), (422, Some("[Head]: Required")));
        let (s, v) = post(&client, &fj, &fj_auth, JSON, &pr).await;
        assert_eq!(s, 201, "{v}");
        assert_eq!(v["number"], 1, "numbers are per forge and repository");
        assert_eq!(v["state"], "open");
        assert_eq!(v["html_url"], format!("{base}/acme/widget/pulls/1"));
        assert_eq!(v["head"]["ref"], "feature/notes");
        assert_eq!(v["base"]["ref"], "main");
        let id = v["id"].as_u64().expect("id");
        let (s, v) = post(&client, &fj, &[("authorization", bearer.as_str())], JSON, &pr).await;
        assert_eq!(s, 409);
        assert_eq!(
            v["message"],
            format!(
                "pull request already exists for these targets [id: {id}, issue_id: {id}, head_repo_id: 1, base_repo_id: 1, head_branch: feature/notes, base_branch: main]"
            )
        );

        // --- GitLab
        let mr = json!({"source_branch": "feature/notes", "target_branch": "main", "title": "Add notes", "description": "Why"});
        let gl = format!("{base}/api/v4/projects/group%2Fsub%2Fproject/merge_requests");
        let pt = [("private-token", TOKEN)];
        let (s, v) = post(&client, &gl, &[], JSON, &mr).await;
        assert_eq!((s, v), (401, json!({"message": "401 Unauthorized"})));
        let raw = format!("{base}/api/v4/projects/group/sub/project/merge_requests");
        let (s, v) = post(&client, &raw, &pt, JSON, &mr).await;
        assert_eq!((s, v), (404, json!({"message": "404 Project Not Found"})));
        let (s, _) = post(&client, &gl, &pt, Some("text/plain"), &mr).await;
        assert_eq!(s, 415);
        let (s, v) = post(&client, &gl, &pt, JSON, &json!({"source_branch": "x", "target_branch": "main"})).await;
        assert_eq!((s, v), (400, json!({"error": "title is missing"})));
        let (s, v) = post(&client, &gl, &pt, JSON, &mr).await;
        assert_eq!(s, 201, "{v}");
        assert_eq!(v["iid"], 1);
        assert_eq!(v["state"], "opened");
        assert_eq!(v["title"], "Add notes");
        assert_eq!(v["description"], "Why");
        assert_eq!(v["source_branch"], "feature/notes");
        assert_eq!(v["target_branch"], "main");
        assert_eq!(v["web_url"], format!("{base}/group/sub/project/-/merge_requests/1"));
        let project_id = forge.gitlab_project_id("group/sub/project");
        assert_eq!(v["project_id"], project_id);
        let by_id = format!("{base}/api/v4/projects/{project_id}/merge_requests");
        let (s, v) = post(&client, &by_id, &[("authorization", bearer.as_str())], JSON, &mr).await;
        assert_eq!(s, 409);
        assert_eq!(
            v,
            json!({"message": ["Another open merge request already exists for this source branch: !1"]})
        );
        let (s, _) = post(&client, &format!("{base}/api/v4/projects/999999/merge_requests"), &pt, JSON, &mr).await;
        assert_eq!(s, 404);

        // --- A scripted failure, once.
        forge.fail_next(502, json!({"message": "Server Error"}));
        let third = json!({"title": "Third", "head": "third", "base": "main"});
        let (s, _) = post(&client, &gh, &gh_headers, JSON, &third).await;
        assert_eq!(s, 502);
        let (s, v) = post(&client, &gh, &gh_headers, JSON, &third).await;
        assert_eq!((s, v["number"].as_u64()), (201, Some(3)));
    });

    // What it recorded.
    let calls = forge.calls();
    let created: Vec<_> = calls.iter().filter(|c| c.status == 201).collect();
    assert_eq!(created.len(), 5, "{}", forge.log());
    let gh = created[0];
    assert_eq!(gh.forge, Forge::GitHub);
    assert_eq!(gh.method, "POST");
    assert_eq!(gh.path, "/repos/acme/widget/pulls");
    assert_eq!(
        gh.header("authorization"),
        Some(format!("Bearer {TOKEN}").as_str())
    );
    assert_eq!(gh.header("accept"), Some("application/vnd.github+json"));
    assert_eq!(gh.header("x-github-api-version"), Some("2022-11-28"));
    assert_eq!(gh.header("user-agent"), Some("firstmate-test"));
    assert_eq!(gh.header("content-type"), Some("application/json"));
    assert_eq!(gh.body.as_ref().expect("body")["head"], "feature/notes");
    let gl = created
        .iter()
        .find(|c| c.forge == Forge::GitLab)
        .expect("GitLab");
    assert_eq!(
        gl.path,
        "/api/v4/projects/group%2Fsub%2Fproject/merge_requests"
    );
    assert_eq!(gl.header("private-token"), Some(TOKEN));
    assert!(
        calls
            .iter()
            .any(|c| c.forge == Forge::Forgejo && c.status == 409)
    );

    let pulls = forge.pulls();
    assert_eq!(
        pulls
            .iter()
            .map(|p| (p.forge, p.repo.as_str(), p.number, p.head.as_str()))
            .collect::<Vec<_>>(),
        [
            (Forge::GitHub, "acme/widget", 1, "feature/notes"),
            (Forge::GitHub, "acme/widget", 2, "other"),
            (Forge::Forgejo, "acme/widget", 1, "feature/notes"),
            (Forge::GitLab, "group/sub/project", 1, "feature/notes"),
            (Forge::GitHub, "acme/widget", 3, "third"),
        ]
    );
    assert!(pulls[1].draft);
    assert_eq!(pulls[3].body.as_deref(), Some("Why"));
}
