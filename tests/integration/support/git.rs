//! A real git smart-HTTP server that wants a token: each request is checked for
//! `Authorization: Basic base64(USER:TOKEN)` (any user, unless [`GitServer::require_user`]
//! was set; else 401 with `WWW-Authenticate: Basic realm="git"`), then handed to
//! `git http-backend` run as a CGI (RFC 3875): the request body streamed to its stdin,
//! its stdout parsed for the CGI headers (`Status:` and the rest) and streamed back as the
//! response body. Repositories live under a temporary `GIT_PROJECT_ROOT`; every request
//! is recorded ([`GitCall`]).
//!
//! Repositories are made with real git: [`GitServer::create_repo`] (one commit on
//! `main`), [`GitServer::create_large_repo`] (thousands of files through
//! `git fast-import`), [`GitServer::commit`], [`GitServer::add_branch`]; read back with
//! [`GitServer::branches`] and [`GitServer::file_at`].
//!
//! Every git this module runs (and [`git_command`] gives tests) ignores the user's and
//! the system's git config, never prompts, and has an identity of its own.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};

use base64::Engine;
use futures_util::StreamExt;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

use super::http::{Body, RemoteAddr, TestServer, percent_decode, response};

/// The author and committer of the commits this module makes.
pub const AUTHOR_NAME: &str = "Test Author";
pub const AUTHOR_EMAIL: &str = "test@example.com";
/// Their date (fixed, so object ids are reproducible): 2023-11-14T22:13:20Z.
const DATE: &str = "1700000000 +0000";

/// One request the git server received.
#[derive(Debug, Clone)]
pub struct GitCall {
    pub method: String,
    /// The path, as sent (`/team/demo.git/info/refs`).
    pub path: String,
    /// The query string, without `?` (`service=git-upload-pack`), or empty.
    pub query: String,
    /// The user of the Basic credentials, if any were sent.
    pub user: Option<String>,
    /// Whether the credentials were accepted.
    pub authorized: bool,
    /// The status answered (401, or what http-backend said).
    pub status: u16,
}

impl GitCall {
    /// `git-upload-pack` (fetch, clone) or `git-receive-pack` (push), if the request is
    /// one of theirs.
    pub fn service(&self) -> Option<&'static str> {
        ["git-upload-pack", "git-receive-pack"]
            .into_iter()
            .find(|s| self.path.ends_with(&format!("/{s}")) || self.query.contains(s))
    }

    /// Whether it sent data to be pushed (`POST .../git-receive-pack`).
    pub fn is_push(&self) -> bool {
        self.method == "POST" && self.path.ends_with("/git-receive-pack")
    }
}

struct Shared {
    root: PathBuf,
    token: Mutex<String>,
    user: Mutex<Option<String>>,
    calls: Mutex<Vec<GitCall>>,
}

/// A running git smart-HTTP server; stops (and its repositories go) when dropped.
pub struct GitServer {
    server: TestServer,
    shared: Arc<Shared>,
    _dir: tempfile::TempDir,
}

impl GitServer {
    /// Starts a server on a free port of 127.0.0.1 accepting `token` (with any user).
    pub fn start(token: &str) -> GitServer {
        let dir = tempfile::tempdir().expect("tempdir for the git server");
        let shared = Arc::new(Shared {
            root: dir.path().to_path_buf(),
            token: Mutex::new(token.to_string()),
            user: Mutex::new(None),
            calls: Mutex::new(Vec::new()),
        });
        let sh = shared.clone();
        let server = TestServer::start(move |req| handle(sh.clone(), req));
        GitServer {
            server,
            shared,
            _dir: dir,
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.server.url
    }

    pub fn port(&self) -> u16 {
        self.server.port()
    }

    /// The `GIT_PROJECT_ROOT`: repository `NAME` is the bare repository `root()/NAME`.
    pub fn root(&self) -> &Path {
        &self.shared.root
    }

    /// The token it accepts now.
    pub fn token(&self) -> String {
        self.shared.token.lock().expect("lock").clone()
    }

    /// Accepts `token` from now on (and no longer the old one): a rotated or revoked token.
    pub fn set_token(&self, token: &str) {
        *self.shared.token.lock().expect("lock") = token.to_string();
    }

    /// Accepts the token only with this user name from now on.
    pub fn require_user(&self, user: &str) {
        *self.shared.user.lock().expect("lock") = Some(user.to_string());
    }

    /// The URL of repository `name` (`http://127.0.0.1:PORT/team/demo.git`).
    pub fn repo_url(&self, name: &str) -> String {
        format!("{}/{}", self.url(), name.trim_start_matches('/'))
    }

    /// The URL of repository `name` with credentials in it
    /// (`http://x-access-token:TOKEN@127.0.0.1:PORT/team/demo.git`), for a plain
    /// `git clone`. The user is the required one, if set.
    pub fn url_with_token(&self, name: &str) -> String {
        let user = self
            .shared
            .user
            .lock()
            .expect("lock")
            .clone()
            .unwrap_or_else(|| "x-access-token".into());
        format!(
            "http://{user}:{}@{}/{}",
            self.token(),
            self.server.addr,
            name.trim_start_matches('/')
        )
    }

    /// The path of the bare repository `name`.
    pub fn repo_path(&self, name: &str) -> PathBuf {
        self.root().join(name.trim_start_matches('/'))
    }

    /// Makes the bare repository `name` (`"team/demo.git"`) with one commit on `main`
    /// holding `files` (path, content), pushes allowed over HTTP. Its URL.
    pub fn create_repo(&self, name: &str, files: &[(&str, &str)]) -> String {
        self.init_bare(name);
        fast_import(
            &self.repo_path(name),
            "main",
            None,
            "Initial commit",
            files
                .iter()
                .map(|(p, c)| (p.to_string(), c.as_bytes().to_vec())),
        );
        self.repo_url(name)
    }

    /// Makes the bare repository `name` with one commit on `main` holding `README.md`
    /// and `files` small files, 100 a directory (`src/d000/d00/f000000.txt` ...), through
    /// one `git fast-import`. Its URL.
    pub fn create_large_repo(&self, name: &str, files: usize) -> String {
        self.init_bare(name);
        let readme = std::iter::once((
            "README.md".to_string(),
            format!("# A repository of {files} files\n").into_bytes(),
        ));
        let many = (0..files).map(|i| {
            let dir = i / 100;
            (
                format!("src/d{:03}/d{:02}/f{i:06}.txt", dir / 100, dir % 100),
                format!("file {i}\n").into_bytes(),
            )
        });
        fast_import(
            &self.repo_path(name),
            "main",
            None,
            "Many files",
            readme.chain(many),
        );
        self.repo_url(name)
    }

    /// Adds a commit on `branch` of repository `name` (made from its tip; the branch is
    /// created when missing, from nothing) writing `files` over its tree. The new oid.
    pub fn commit(
        &self,
        name: &str,
        branch: &str,
        files: &[(&str, &str)],
        message: &str,
    ) -> String {
        let dir = self.repo_path(name);
        let parent = try_git(
            &dir,
            &[
                "rev-parse",
                "--verify",
                "-q",
                &format!("refs/heads/{branch}"),
            ],
        );
        let parent = parent
            .status
            .success()
            .then(|| String::from_utf8_lossy(&parent.stdout).trim().to_string());
        fast_import(
            &dir,
            branch,
            parent.as_deref(),
            message,
            files
                .iter()
                .map(|(p, c)| (p.to_string(), c.as_bytes().to_vec())),
        );
        self.branches(name)
            .remove(&format!("refs/heads/{branch}"))
            .expect("the branch just committed to")
    }

    /// Makes branch `branch` of repository `name` at `from` (a branch or an oid).
    pub fn add_branch(&self, name: &str, branch: &str, from: &str) {
        git(&self.repo_path(name), &["branch", "--", branch, from]);
    }

    /// The branches of repository `name`: `refs/heads/X` → oid.
    pub fn branches(&self, name: &str) -> BTreeMap<String, String> {
        git(
            &self.repo_path(name),
            &[
                "for-each-ref",
                "--format=%(refname) %(objectname)",
                "refs/heads",
            ],
        )
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(r, o)| (r.to_string(), o.to_string()))
        .collect()
    }

    /// The content of `path` at `rev` in repository `name`, or None if it is not there.
    pub fn file_at(&self, name: &str, rev: &str, path: &str) -> Option<String> {
        let out = try_git(&self.repo_path(name), &["show", &format!("{rev}:{path}")]);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs `git ARGS` in the bare repository `name`: its stdout (panics if it fails).
    pub fn git(&self, name: &str, args: &[&str]) -> String {
        git(&self.repo_path(name), args)
    }

    /// Every request received so far.
    pub fn calls(&self) -> Vec<GitCall> {
        self.shared.calls.lock().expect("lock").clone()
    }

    /// A one-line-per-request log, for assertion messages.
    pub fn log(&self) -> String {
        self.calls()
            .iter()
            .map(|c| {
                format!(
                    "{} {}?{} user={:?} authorized={} -> {}\n",
                    c.method, c.path, c.query, c.user, c.authorized, c.status
                )
            })
            .collect()
    }

    fn init_bare(&self, name: &str) {
        let dir = self.repo_path(name);
        std::fs::create_dir_all(&dir).expect("the repository's directory");
        git(&dir, &["init", "--bare", "-q", "-b", "main"]);
        git(&dir, &["config", "http.receivepack", "true"]);
    }
}

/// A `git` command isolated from the machine's git config (no global or system config,
/// so no credential helpers), that never prompts, with a fixed author and committer.
pub fn git_command() -> Command {
    let mut c = Command::new("git");
    c.env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env_remove("GIT_ASKPASS")
        .env_remove("SSH_ASKPASS")
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .env_remove("GIT_INDEX_FILE")
        .env("GIT_AUTHOR_NAME", AUTHOR_NAME)
        .env("GIT_AUTHOR_EMAIL", AUTHOR_EMAIL)
        .env("GIT_COMMITTER_NAME", AUTHOR_NAME)
        .env("GIT_COMMITTER_EMAIL", AUTHOR_EMAIL)
        .stdin(Stdio::null());
    c
}

/// Runs `git ARGS` in `dir` ([`git_command`]) to completion.
pub fn try_git(dir: &Path, args: &[&str]) -> Output {
    git_command()
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run git")
}

/// Runs `git ARGS` in `dir`: its stdout; panics with its stderr if it fails.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = try_git(dir, args);
    assert!(
        out.status.success(),
        "git {args:?} in {} failed: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One commit on `branch` of the repository at `dir` (on `parent`, if given) writing
/// `files` (path, content), through `git fast-import` fed from here.
fn fast_import(
    dir: &Path,
    branch: &str,
    parent: Option<&str>,
    message: &str,
    files: impl Iterator<Item = (String, Vec<u8>)>,
) {
    let mut child = git_command()
        .current_dir(dir)
        .args(["fast-import", "--quiet", "--done"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn git fast-import");
    let stdin = child.stdin.take().expect("stdin");
    let mut w = std::io::BufWriter::with_capacity(1 << 16, stdin);
    let write = || -> std::io::Result<()> {
        let who = format!("{AUTHOR_NAME} <{AUTHOR_EMAIL}> {DATE}");
        write!(
            w,
            "commit refs/heads/{branch}\nauthor {who}\ncommitter {who}\ndata {}\n{message}\n",
            message.len()
        )?;
        if let Some(p) = parent {
            writeln!(w, "from {p}")?;
        }
        for (path, content) in files {
            assert!(
                !path.contains('\n') && !path.starts_with('"'),
                "a path fast-import would need quoted: {path:?}"
            );
            write!(w, "M 100644 inline {path}\ndata {}\n", content.len())?;
            w.write_all(&content)?;
            w.write_all(b"\n")?;
        }
        w.write_all(b"done\n")?;
        w.flush()
    };
    let written = write();
    drop(w);
    let out = child.wait_with_output().expect("wait for git fast-import");
    assert!(
        written.is_ok() && out.status.success(),
        "git fast-import in {} failed ({written:?}): {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// (user, password) of `Authorization: Basic ...`.
fn basic_auth(req: &Request<Incoming>) -> Option<(String, String)> {
    let value = req.headers().get("authorization")?.to_str().ok()?;
    let (scheme, creds) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(creds.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, pass) = decoded.split_once(':')?;
    Some((user.to_string(), pass.to_string()))
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    let method = req.method().as_str().to_string();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or_default().to_string();
    let creds = basic_auth(&req);
    let authorized = creds.as_ref().is_some_and(|(user, pass)| {
        *pass == *shared.token.lock().expect("lock")
            && shared
                .user
                .lock()
                .expect("lock")
                .as_ref()
                .is_none_or(|u| u == user)
    });
    let user = creds.map(|(u, _)| u);
    let record = |status: u16| {
        shared.calls.lock().expect("lock").push(GitCall {
            method: method.clone(),
            path: path.clone(),
            query: query.clone(),
            user: user.clone(),
            authorized,
            status,
        });
    };
    if !authorized {
        record(401);
        let mut r = response(401, "text/plain", "authentication required\n");
        r.headers_mut().insert(
            "www-authenticate",
            hyper::header::HeaderValue::from_static("Basic realm=\"git\""),
        );
        return r;
    }
    let r = cgi(&shared.root, user.as_deref().unwrap_or_default(), req).await;
    record(r.status().as_u16());
    r
}

/// Runs `git http-backend` for the request: its response.
async fn cgi(root: &Path, user: &str, req: Request<Incoming>) -> Response<Body> {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let remote = req
        .extensions()
        .get::<RemoteAddr>()
        .map(|a| a.0.ip().to_string())
        .unwrap_or_else(|| "127.0.0.1".into());
    let mut cmd = tokio::process::Command::new("git");
    cmd.arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("GATEWAY_INTERFACE", "CGI/1.1")
        .env("SERVER_PROTOCOL", "HTTP/1.1")
        .env("REQUEST_METHOD", req.method().as_str())
        .env("PATH_INFO", percent_decode(req.uri().path()))
        .env("QUERY_STRING", req.uri().query().unwrap_or_default())
        .env("REMOTE_USER", user)
        .env("REMOTE_ADDR", remote);
    for (var, name) in [
        ("CONTENT_TYPE", "content-type"),
        ("CONTENT_LENGTH", "content-length"),
        ("HTTP_CONTENT_ENCODING", "content-encoding"),
        ("GIT_PROTOCOL", "git-protocol"),
    ] {
        if let Some(v) = header(name) {
            cmd.env(var, v);
        }
    }
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return response(500, "text/plain", format!("git http-backend: {e}\n")),
    };
    // The request body, streamed to its stdin (closed at the end of the body).
    let mut stdin = child.stdin.take().expect("stdin");
    let mut body = req.into_body();
    tokio::spawn(async move {
        while let Some(Ok(frame)) = body.frame().await {
            if let Ok(data) = frame.into_data()
                && stdin.write_all(&data).await.is_err()
            {
                break;
            }
        }
        let _ = stdin.shutdown().await;
    });
    let mut stderr = child.stderr.take().expect("stderr");
    let stderr = tokio::spawn(async move {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s).await;
        s
    });
    let mut out = tokio::io::BufReader::new(child.stdout.take().expect("stdout"));
    // The CGI headers, up to an empty line.
    let mut status = 200u16;
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        match out.read_line(&mut line).await {
            Ok(0) | Err(_) => {
                let _ = child.wait().await;
                let err = stderr.await.unwrap_or_default();
                return response(
                    500,
                    "text/plain",
                    format!("git http-backend ended before its headers: {err}\n"),
                );
            }
            Ok(_) => {}
        }
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            break;
        }
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            status = value
                .split_whitespace()
                .next()
                .and_then(|c| c.parse().ok())
                .unwrap_or(500);
        } else {
            headers.push((name.to_string(), value.to_string()));
        }
    }
    // Reaped once it ends; what it said on stderr shows in the test's output.
    tokio::spawn(async move {
        let st = child.wait().await;
        let err = stderr.await.unwrap_or_default();
        if !err.trim().is_empty() || !st.as_ref().is_ok_and(|s| s.success()) {
            eprintln!("git http-backend ({st:?}): {err}");
        }
    });
    let stream = tokio_util::io::ReaderStream::new(out).map(|r| r.map(Frame::data));
    let mut builder = Response::builder().status(status);
    for (name, value) in headers {
        builder = builder.header(name, value);
    }
    builder
        .body(BodyExt::boxed(StreamBody::new(stream)))
        .unwrap_or_else(|e| response(500, "text/plain", format!("bad CGI headers: {e}\n")))
}
