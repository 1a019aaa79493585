//! Scripted stand-ins for the forges' REST APIs that open pull requests, one server for
//! all three (told apart by path), answering as each forge documents it, and recording
//! every call ([`ForgeCall`]):
//!
//! - GitHub: `POST /repos/{owner}/{repo}/pulls`, auth `Authorization: Bearer TOKEN` (or
//!   `token TOKEN`); a `User-Agent` is required (403 without, as GitHub does).
//! - Forgejo / Gitea: `POST /api/v1/repos/{owner}/{repo}/pulls`, auth
//!   `Authorization: token TOKEN` (or `Bearer TOKEN`).
//! - GitLab: `POST /api/v4/projects/{id}/merge_requests`, `{id}` a numeric id or the
//!   URL-encoded project path (`group%2Fsub%2Fproject`; a raw `/` in it does not match:
//!   404 Project Not Found), auth `PRIVATE-TOKEN: TOKEN` or `Authorization: Bearer TOKEN`.
//!
//! Checks, in order: the route (404), `User-Agent` (GitHub), the token (401), the
//! content type (must be `application/json`: GitHub 400, Forgejo and GitLab 415), the JSON
//! (400), the required fields (GitHub 422, Forgejo 422, GitLab 400), a scripted failure
//! ([`ForgeStandIn::fail_next`]), a duplicate (GitHub 422, Forgejo 409, GitLab 409); then
//! 201 with the new pull request. Pull request numbers count 1, 2 ... per repository;
//! ids are unique across the stand-in.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};

use hyper::body::Incoming;
use hyper::{Request, Response};
use serde_json::{Value, json};

use super::http::{Body, TestServer, json as json_response, percent_decode, read_body};

const GITHUB_DOCS: &str = "https://docs.github.com/rest";
const GITHUB_PULLS_DOCS: &str = "https://docs.github.com/rest/pulls/pulls#create-a-pull-request";

/// The request headers a call keeps.
pub const RECORDED_HEADERS: &[&str] = &[
    "authorization",
    "private-token",
    "accept",
    "content-type",
    "x-github-api-version",
    "user-agent",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Forge {
    GitHub,
    Forgejo,
    GitLab,
}

/// One request the stand-in received.
#[derive(Debug, Clone)]
pub struct ForgeCall {
    /// Whose API the path is (by its prefix: `/api/v1/` Forgejo, `/api/v4/` GitLab, else
    /// GitHub).
    pub forge: Forge,
    pub method: String,
    /// The request target as sent, percent-encoding and query included.
    pub path: String,
    /// The [`RECORDED_HEADERS`] it had, names in lower case.
    pub headers: Vec<(String, String)>,
    /// The body, if it was JSON.
    pub body: Option<Value>,
    /// The status answered.
    pub status: u16,
}

impl ForgeCall {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A pull (merge) request opened on the stand-in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullRequest {
    pub forge: Forge,
    /// `owner/repo`, or the GitLab project's path (`group/sub/project`).
    pub repo: String,
    pub id: u64,
    /// GitHub's and Forgejo's `number`, GitLab's `iid`.
    pub number: u64,
    pub title: String,
    /// GitHub's and Forgejo's `body`, GitLab's `description`.
    pub body: Option<String>,
    /// The head (source) branch, as sent (GitHub allows `owner:branch`).
    pub head: String,
    /// The base (target) branch.
    pub base: String,
    pub draft: bool,
    /// The web page of the pull request.
    pub html_url: String,
}

#[derive(Default)]
struct State {
    calls: Vec<ForgeCall>,
    pulls: Vec<PullRequest>,
    /// Scripted answers for the next create requests: (status, body).
    failures: VecDeque<(u16, Value)>,
    /// GitLab project ids → paths.
    projects: BTreeMap<u64, String>,
    next_id: u64,
}

struct Shared {
    /// The server's URL, set once it listens.
    url: OnceLock<String>,
    token: String,
    state: Mutex<State>,
}

impl Shared {
    fn url(&self) -> &str {
        self.url.get().map(String::as_str).unwrap_or_default()
    }
}

/// A running forge API stand-in; stops when dropped.
pub struct ForgeStandIn {
    server: TestServer,
    shared: Arc<Shared>,
}

impl ForgeStandIn {
    /// Starts the stand-in on a free port of 127.0.0.1, accepting `token`.
    pub fn start(token: &str) -> ForgeStandIn {
        let shared = Arc::new(Shared {
            url: OnceLock::new(),
            token: token.to_string(),
            state: Mutex::new(State {
                next_id: 1,
                ..State::default()
            }),
        });
        let sh = shared.clone();
        let server = TestServer::start(move |req| handle(sh.clone(), req));
        // Before anyone knows the port, so before any request.
        let _ = shared.url.set(server.url.clone());
        ForgeStandIn { server, shared }
    }

    /// `http://127.0.0.1:PORT`: GitHub's API base, and the root of Forgejo's (`/api/v1`)
    /// and GitLab's (`/api/v4`).
    pub fn url(&self) -> &str {
        &self.server.url
    }

    pub fn port(&self) -> u16 {
        self.server.port()
    }

    pub fn token(&self) -> &str {
        &self.shared.token
    }

    /// Every request received so far.
    pub fn calls(&self) -> Vec<ForgeCall> {
        self.shared.state.lock().expect("lock").calls.clone()
    }

    /// The pull requests opened so far, in order.
    pub fn pulls(&self) -> Vec<PullRequest> {
        self.shared.state.lock().expect("lock").pulls.clone()
    }

    /// The next create request that passes the route, token, content type and field
    /// checks is answered with `status` and `body` instead (a forge's error, a 500 ...).
    /// Several queue up.
    pub fn fail_next(&self, status: u16, body: Value) {
        self.shared
            .state
            .lock()
            .expect("lock")
            .failures
            .push_back((status, body));
    }

    /// The numeric id of the GitLab project `path` (`group/sub/project`), made known to
    /// the stand-in (a project is also made known when a request names it by path).
    pub fn gitlab_project_id(&self, path: &str) -> u64 {
        project_id(&mut self.shared.state.lock().expect("lock"), path)
    }

    /// A one-line-per-request log, for assertion messages.
    pub fn log(&self) -> String {
        self.calls()
            .iter()
            .map(|c| {
                format!(
                    "{:?} {} {} -> {} {}\n",
                    c.forge,
                    c.method,
                    c.path,
                    c.status,
                    c.body.as_ref().map(Value::to_string).unwrap_or_default()
                )
            })
            .collect()
    }
}

fn project_id(st: &mut State, path: &str) -> u64 {
    if let Some((id, _)) = st.projects.iter().find(|(_, p)| *p == path) {
        return *id;
    }
    let id = 1000 + st.projects.len() as u64 + 1;
    st.projects.insert(id, path.to_string());
    id
}

/// What a route decided: status and JSON body (and a `Location`, for GitHub's 201).
struct Answer {
    status: u16,
    body: Value,
    location: Option<String>,
}

fn answer(status: u16, body: Value) -> Answer {
    Answer {
        status,
        body,
        location: None,
    }
}

/// The parts of a request the routes look at.
struct Req {
    method: String,
    /// The path, raw (percent-encoded as sent).
    path: String,
    headers: hyper::HeaderMap,
    body: bytes::Bytes,
}

impl Req {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Whether `Authorization: SCHEME TOKEN` carries `token` with one of `schemes`.
    fn bearer(&self, schemes: &[&str], token: &str) -> bool {
        self.header("authorization")
            .and_then(|v| v.trim().split_once(' '))
            .is_some_and(|(scheme, t)| {
                schemes.iter().any(|s| s.eq_ignore_ascii_case(scheme)) && t.trim() == token
            })
    }

    fn is_json(&self) -> bool {
        self.header("content-type").is_some_and(|c| {
            c.split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
        })
    }

    fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| parts.uri.path().to_string());
    let body = read_body(body, 1 << 20).await.unwrap_or_default();
    let req = Req {
        method: parts.method.as_str().to_string(),
        path: parts.uri.path().to_string(),
        headers: parts.headers,
        body,
    };
    let forge = if req.path.starts_with("/api/v1/") {
        Forge::Forgejo
    } else if req.path.starts_with("/api/v4/") {
        Forge::GitLab
    } else {
        Forge::GitHub
    };
    let a = match forge {
        Forge::GitHub => github(&shared, &req),
        Forge::Forgejo => forgejo(&shared, &req),
        Forge::GitLab => gitlab(&shared, &req),
    };
    shared.state.lock().expect("lock").calls.push(ForgeCall {
        forge,
        method: req.method.clone(),
        path,
        headers: RECORDED_HEADERS
            .iter()
            .filter_map(|h| req.header(h).map(|v| (h.to_string(), v.to_string())))
            .collect(),
        body: req.json(),
        status: a.status,
    });
    let mut r = json_response(a.status, &a.body);
    if let Some(l) = a.location
        && let Ok(v) = hyper::header::HeaderValue::from_str(&l)
    {
        r.headers_mut().insert("location", v);
    }
    r
}

/// The path's segments after its first `/`, raw.
fn segments(path: &str) -> Vec<&str> {
    path.trim_start_matches('/').split('/').collect()
}

/// The string field `name`, if it is one and not empty.
fn string_field<'a>(body: &'a Value, name: &str) -> Option<&'a str> {
    body.get(name)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// The scripted failure queued next, if any.
fn take_failure(shared: &Shared) -> Option<Answer> {
    let mut st = shared.state.lock().expect("lock");
    st.failures.pop_front().map(|(s, b)| answer(s, b))
}

/// What a pull request is opened with.
struct Opening<'a> {
    forge: Forge,
    repo: &'a str,
    title: &'a str,
    body: Option<&'a str>,
    head: &'a str,
    base: &'a str,
    draft: bool,
}

/// Records a new pull request (numbered per forge and repository, its page made by
/// `page` from the number) and returns it.
fn open(st: &mut State, o: Opening<'_>, page: impl FnOnce(u64) -> String) -> PullRequest {
    let number = st
        .pulls
        .iter()
        .filter(|p| p.forge == o.forge && p.repo == o.repo)
        .count() as u64
        + 1;
    let id = st.next_id;
    st.next_id += 1;
    let pr = PullRequest {
        forge: o.forge,
        repo: o.repo.to_string(),
        id,
        number,
        title: o.title.to_string(),
        body: o.body.map(str::to_string),
        head: o.head.to_string(),
        base: o.base.to_string(),
        draft: o.draft,
        html_url: page(number),
    };
    st.pulls.push(pr.clone());
    pr
}

fn github(shared: &Shared, req: &Req) -> Answer {
    let github_error = |status: u16, message: &str| {
        answer(
            status,
            json!({"message": message, "documentation_url": GITHUB_DOCS, "status": status.to_string()}),
        )
    };
    let seg = segments(&req.path);
    let (owner, repo) = match seg.as_slice() {
        ["repos", owner, repo, "pulls"]
            if req.method == "POST" && !owner.is_empty() && !repo.is_empty() =>
        {
            (percent_decode(owner), percent_decode(repo))
        }
        _ => return github_error(404, "Not Found"),
    };
    if req.header("user-agent").is_none_or(|u| u.trim().is_empty()) {
        return answer(
            403,
            json!({"message": "Request forbidden by administrative rules. Please make sure your request has a User-Agent header (https://docs.github.com/en/rest/overview/resources-in-the-rest-api#user-agent-required). Check https://developer.github.com for other possible causes."}),
        );
    }
    if !req.bearer(&["Bearer", "token"], &shared.token) {
        return github_error(401, "Bad credentials");
    }
    let Some(body) = req.is_json().then(|| req.json()).flatten() else {
        return github_error(400, "Problems parsing JSON");
    };
    if !body.is_object() {
        return github_error(400, "Problems parsing JSON");
    }
    let mut errors = Vec::new();
    for field in ["title", "head", "base"] {
        match body.get(field) {
            None | Some(Value::Null) => errors
                .push(json!({"resource": "PullRequest", "field": field, "code": "missing_field"})),
            Some(Value::String(s)) if !s.is_empty() => {}
            Some(_) => {
                errors.push(json!({"resource": "PullRequest", "field": field, "code": "invalid"}))
            }
        }
    }
    if !matches!(
        body.get("body"),
        None | Some(Value::Null | Value::String(_))
    ) {
        errors.push(json!({"resource": "PullRequest", "field": "body", "code": "invalid"}));
    }
    if !matches!(body.get("draft"), None | Some(Value::Bool(_))) {
        errors.push(json!({"resource": "PullRequest", "field": "draft", "code": "invalid"}));
    }
    if !errors.is_empty() {
        return answer(
            422,
            json!({"message": "Validation Failed", "errors": errors, "documentation_url": GITHUB_PULLS_DOCS, "status": "422"}),
        );
    }
    if let Some(a) = take_failure(shared) {
        return a;
    }
    let title = string_field(&body, "title").unwrap_or_default();
    let head = string_field(&body, "head").unwrap_or_default();
    let base = string_field(&body, "base").unwrap_or_default();
    let text = body.get("body").and_then(Value::as_str);
    let draft = body.get("draft").and_then(Value::as_bool).unwrap_or(false);
    let full = format!("{owner}/{repo}");
    let mut st = shared.state.lock().expect("lock");
    if st
        .pulls
        .iter()
        .any(|p| p.forge == Forge::GitHub && p.repo == full && p.head == head && p.base == base)
    {
        let label = if head.contains(':') {
            head.to_string()
        } else {
            format!("{owner}:{head}")
        };
        return answer(
            422,
            json!({
                "message": "Validation Failed",
                "errors": [{"resource": "PullRequest", "code": "custom",
                            "message": format!("A pull request already exists for {label}.")}],
                "documentation_url": GITHUB_PULLS_DOCS,
                "status": "422",
            }),
        );
    }
    let opening = Opening {
        forge: Forge::GitHub,
        repo: &full,
        title,
        body: text,
        head,
        base,
        draft,
    };
    let pr = open(&mut st, opening, |n| {
        format!("{}/{full}/pull/{n}", shared.url())
    });
    let (id, number, html_url) = (pr.id, pr.number, pr.html_url);
    let api_url = format!("{}/repos/{full}/pulls/{number}", shared.url());
    let head_ref = head.rsplit(':').next().unwrap_or(head);
    Answer {
        status: 201,
        body: json!({
            "id": id,
            "node_id": format!("PR_stand_in_{id}"),
            "number": number,
            "state": "open",
            "locked": false,
            "title": title,
            "body": text,
            "draft": draft,
            "merged": false,
            "user": {"login": "firstmate-bot"},
            "html_url": html_url,
            "url": api_url,
            "head": {"ref": head_ref, "label": if head.contains(':') { head.to_string() } else { format!("{owner}:{head}") }},
            "base": {"ref": base, "label": format!("{owner}:{base}")},
        }),
        location: Some(api_url),
    }
}

fn forgejo(shared: &Shared, req: &Req) -> Answer {
    let swagger = format!("{}/api/swagger", shared.url());
    let error =
        |status: u16, message: &str| answer(status, json!({"message": message, "url": swagger}));
    let seg = segments(&req.path);
    let (owner, repo) = match seg.as_slice() {
        ["api", "v1", "repos", owner, repo, "pulls"]
            if req.method == "POST" && !owner.is_empty() && !repo.is_empty() =>
        {
            (percent_decode(owner), percent_decode(repo))
        }
        _ => return error(404, "Not Found"),
    };
    if !req.bearer(&["token", "Bearer"], &shared.token) {
        return error(401, "token is required");
    }
    if !req.is_json() {
        return error(
            415,
            "Unsupported Media Type: the body must be application/json",
        );
    }
    let Some(body) = req.json().filter(Value::is_object) else {
        return error(400, "invalid JSON body");
    };
    let missing: Vec<String> = [("Title", "title"), ("Head", "head"), ("Base", "base")]
        .into_iter()
        .filter(|(_, f)| string_field(&body, f).is_none())
        .map(|(name, _)| format!("[{name}]: Required"))
        .collect();
    if !missing.is_empty() {
        return error(422, &missing.join(", "));
    }
    if let Some(a) = take_failure(shared) {
        return a;
    }
    let title = string_field(&body, "title").unwrap_or_default();
    let head = string_field(&body, "head").unwrap_or_default();
    let base = string_field(&body, "base").unwrap_or_default();
    let text = body.get("body").and_then(Value::as_str);
    let full = format!("{owner}/{repo}");
    let mut st = shared.state.lock().expect("lock");
    if let Some(p) = st
        .pulls
        .iter()
        .find(|p| p.forge == Forge::Forgejo && p.repo == full && p.head == head && p.base == base)
    {
        return error(
            409,
            &format!(
                "pull request already exists for these targets [id: {}, issue_id: {}, head_repo_id: 1, base_repo_id: 1, head_branch: {head}, base_branch: {base}]",
                p.id, p.id
            ),
        );
    }
    let opening = Opening {
        forge: Forge::Forgejo,
        repo: &full,
        title,
        body: text,
        head,
        base,
        draft: false,
    };
    let pr = open(&mut st, opening, |n| {
        format!("{}/{full}/pulls/{n}", shared.url())
    });
    let (id, number, html_url) = (pr.id, pr.number, pr.html_url);
    answer(
        201,
        json!({
            "id": id,
            "number": number,
            "state": "open",
            "title": title,
            "body": text.unwrap_or_default(),
            "user": {"login": "firstmate-bot"},
            "html_url": html_url,
            "url": html_url,
            "diff_url": format!("{html_url}.diff"),
            "merged": false,
            "mergeable": true,
            "head": {"ref": head, "label": head},
            "base": {"ref": base, "label": base},
        }),
    )
}

fn gitlab(shared: &Shared, req: &Req) -> Answer {
    let seg = segments(&req.path);
    let id = match seg.as_slice() {
        ["api", "v4", "projects", id, "merge_requests"]
            if req.method == "POST" && !id.is_empty() =>
        {
            *id
        }
        // A project path sent with raw slashes: GitLab does not find the project.
        ["api", "v4", "projects", .., "merge_requests"] if req.method == "POST" => {
            return answer(404, json!({"message": "404 Project Not Found"}));
        }
        _ => return answer(404, json!({"message": "404 Not Found"})),
    };
    let authorized = req
        .header("private-token")
        .is_some_and(|t| t.trim() == shared.token)
        || req.bearer(&["Bearer"], &shared.token);
    if !authorized {
        return answer(401, json!({"message": "401 Unauthorized"}));
    }
    let project = {
        let mut st = shared.state.lock().expect("lock");
        if id.bytes().all(|b| b.is_ascii_digit()) {
            id.parse()
                .ok()
                .and_then(|n: u64| st.projects.get(&n).cloned())
        } else {
            let path = percent_decode(id);
            path.contains('/').then(|| {
                project_id(&mut st, &path);
                path
            })
        }
    };
    let Some(project) = project else {
        return answer(404, json!({"message": "404 Project Not Found"}));
    };
    if !req.is_json() {
        let ct = req.header("content-type").unwrap_or_default();
        return answer(
            415,
            json!({"error": format!("The provided content-type '{ct}' is not supported.")}),
        );
    }
    let Some(body) = req.json().filter(Value::is_object) else {
        return answer(400, json!({"error": "The request body is not valid JSON"}));
    };
    let missing: Vec<String> = ["source_branch", "target_branch", "title"]
        .into_iter()
        .filter(|f| string_field(&body, f).is_none())
        .map(|f| format!("{f} is missing"))
        .collect();
    if !missing.is_empty() {
        return answer(400, json!({"error": missing.join(", ")}));
    }
    if let Some(a) = take_failure(shared) {
        return a;
    }
    let title = string_field(&body, "title").unwrap_or_default();
    let source = string_field(&body, "source_branch").unwrap_or_default();
    let target = string_field(&body, "target_branch").unwrap_or_default();
    let description = body.get("description").and_then(Value::as_str);
    let mut st = shared.state.lock().expect("lock");
    if let Some(p) = st
        .pulls
        .iter()
        .find(|p| p.forge == Forge::GitLab && p.repo == project && p.head == source)
    {
        return answer(
            409,
            json!({"message": [format!("Another open merge request already exists for this source branch: !{}", p.number)]}),
        );
    }
    let project_id = project_id(&mut st, &project);
    let opening = Opening {
        forge: Forge::GitLab,
        repo: &project,
        title,
        body: description,
        head: source,
        base: target,
        draft: false,
    };
    let pr = open(&mut st, opening, |n| {
        format!("{}/{project}/-/merge_requests/{n}", shared.url())
    });
    let (id, iid, web_url) = (pr.id, pr.number, pr.html_url);
    answer(
        201,
        json!({
            "id": id,
            "iid": iid,
            "project_id": project_id,
            "state": "opened",
            "title": title,
            "description": description,
            "source_branch": source,
            "target_branch": target,
            "draft": false,
            "merge_status": "checking",
            "author": {"username": "firstmate-bot"},
            "web_url": web_url,
        }),
    )
}
