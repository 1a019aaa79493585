//! The gateway's git route (SPEC section 8): a worker's git remote is
//! `<gateway url>/git/<session id>`; the gateway forwards git's smart HTTP requests
//! (`info/refs`, `git-upload-pack`, `git-receive-pack`) to the session's repository
//! with the repository's credential, and streams the answers back.
//!
//! Invariants: a request needs the session's gateway token (`Authorization: Bearer`)
//! and names that same session; the worker's own `Authorization` never goes upstream.
//! A push is read before the forge sees it: its command list (the pkt-lines before the
//! pack) may update only the session's branch, never delete a ref, never carry a push
//! certificate, and may move the branch only from where this session left it (nothing,
//! or a commit the session pushed): the forge checks each update's old value under its
//! lock, so the session never overwrites a commit someone else pushed. Anything else is
//! refused whole, answered as git's own `receive-pack` would (`ng <ref> <reason>`), and
//! the thread is told which ref was refused. A push the forge accepted is recorded
//! (`pushed_commit`) before its answer ends.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use dashmap::DashMap;
use futures_util::StreamExt;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::HeaderValue;
use hyper::{Method, Request, Response, StatusCode};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::{Body, GatewayReport, Inner, bearer, full, lookup, packs};

/// The longest command list (the part of a push before its pack) the gateway reads.
const MAX_COMMANDS: usize = 1024 * 1024;

/// What the gateway may do for a session's git traffic.
#[derive(Debug, Clone, PartialEq)]
pub struct GitGrant {
    /// The repository's clone URL (`https://git.example.org/team/demo.git`).
    pub upstream: String,
    /// The `Authorization` value requests go upstream with; None: a public repository.
    pub authorization: Option<String>,
    /// The branch the session may push (`firstmate/<id>`); None until its workspace is
    /// cloned.
    pub push_branch: Option<String>,
}

/// The most commits a session's push history keeps (the newest).
const MAX_ATTEMPTS: usize = 256;

/// Each session's grant, and the commits it tried to push to its branch.
#[derive(Default)]
pub(super) struct Grants {
    grants: DashMap<String, GitGrant>,
    /// Commits sent to the forge as the new value of the session's branch, accepted or
    /// not (whether the forge took one can be lost with the connection). Only this
    /// session made them, so the branch standing at one of them holds nobody else's work.
    attempts: DashMap<String, Vec<String>>,
}

impl Grants {
    pub(super) fn set(&self, session: &str, grant: GitGrant) {
        self.grants.insert(session.to_string(), grant);
    }
    pub(super) fn forget(&self, session: &str) {
        self.grants.remove(session);
        self.attempts.remove(session);
    }
    fn get(&self, session: &str) -> Option<GitGrant> {
        self.grants.get(session).map(|g| g.clone())
    }
    fn attempts(&self, session: &str) -> Vec<String> {
        self.attempts
            .get(session)
            .map(|a| a.clone())
            .unwrap_or_default()
    }
    fn attempted(&self, session: &str, commit: &str) {
        let mut list = self.attempts.entry(session.to_string()).or_default();
        if !list.iter().any(|c| c == commit) {
            if list.len() >= MAX_ATTEMPTS {
                list.remove(0);
            }
            list.push(commit.to_string());
        }
    }
}

/// One ref update of a push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefUpdate {
    pub old: String,
    pub new: String,
    pub name: String,
}

impl RefUpdate {
    fn deletes(&self) -> bool {
        is_zero(&self.new)
    }
    fn creates(&self) -> bool {
        is_zero(&self.old)
    }
}

/// The all-zero oid: no commit (a ref created, or deleted).
fn is_zero(oid: &str) -> bool {
    oid.bytes().all(|b| b == b'0')
}

/// How far the command list of a push has been read.
#[derive(Debug, PartialEq, Eq)]
pub enum Commands {
    /// More bytes are needed.
    More,
    /// The whole list: its updates and the client's capabilities.
    Done {
        updates: Vec<RefUpdate>,
        caps: Vec<String>,
    },
    /// Not a command list the gateway lets through.
    Bad(String),
}

/// Reads the command list at the start of a `git-receive-pack` request body: pkt-lines
/// (`shallow <oid>` lines, then `<old> <new> <ref>`, the first with `\0<capabilities>`)
/// up to a flush packet.
pub fn read_commands(buf: &[u8]) -> Commands {
    let mut at = 0;
    let mut updates = Vec::new();
    let mut caps = Vec::new();
    loop {
        let Some(head) = buf.get(at..at + 4) else {
            return Commands::More;
        };
        let Some(len) = std::str::from_utf8(head)
            .ok()
            .and_then(|h| usize::from_str_radix(h, 16).ok())
        else {
            return Commands::Bad("a push whose command list is not pkt-lines".into());
        };
        if len == 0 {
            return Commands::Done { updates, caps };
        }
        if len < 4 {
            return Commands::Bad(format!("a push with a bad pkt-line length {len}"));
        }
        let Some(line) = buf.get(at + 4..at + len) else {
            return Commands::More;
        };
        at += len;
        let line = match std::str::from_utf8(line) {
            Ok(l) => l.trim_end_matches('\n'),
            Err(_) => return Commands::Bad("a push command that is not text".into()),
        };
        let (cmd, line_caps) = match line.split_once('\0') {
            Some((c, k)) => (c, Some(k)),
            None => (line, None),
        };
        if let Some(k) = line_caps {
            caps.extend(k.split(' ').filter(|c| !c.is_empty()).map(str::to_string));
        }
        if cmd == "push-cert" || cmd.starts_with("push-cert ") {
            return Commands::Bad("signed pushes (push certificates) are not supported".into());
        }
        if cmd.starts_with("shallow ") {
            continue;
        }
        let mut parts = cmd.splitn(3, ' ');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(old), Some(new), Some(name))
                if is_oid(old) && is_oid(new) && !name.is_empty() =>
            {
                updates.push(RefUpdate {
                    old: old.into(),
                    new: new.into(),
                    name: name.into(),
                })
            }
            _ => return Commands::Bad(format!("a push command git does not send: {cmd:?}")),
        }
    }
}

fn is_oid(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Why each update may not go through (None: it may), for a session that may push only
/// `push_branch`, and move it only from nothing or from one of `pushed` (the commits the
/// session pushed there).
pub fn judge(
    updates: &[RefUpdate],
    push_branch: Option<&str>,
    pushed: &[String],
) -> Vec<Option<String>> {
    let own = push_branch.map(|b| format!("refs/heads/{b}"));
    updates
        .iter()
        .map(|u| {
            let mine = own.as_deref() == Some(u.name.as_str());
            if !mine {
                Some(match push_branch {
                    Some(b) => format!("firstmate: this session may push only to {b}"),
                    None => "firstmate: this session may not push yet (its workspace is not ready)"
                        .into(),
                })
            } else if u.deletes() {
                Some("firstmate: a session may not delete branches".into())
            } else if !u.creates() && !pushed.contains(&u.old) {
                let b = push_branch.unwrap_or_default();
                Some(format!(
                    "firstmate: {b} has commits this session did not push (someone else pushed to it); the session does not overwrite them: start a new session with --branch {b} to build on them"
                ))
            } else {
                None
            }
        })
        .collect()
}

fn pkt(out: &mut Vec<u8>, payload: &[u8]) {
    out.extend_from_slice(format!("{:04x}", payload.len() + 4).as_bytes());
    out.extend_from_slice(payload);
}

/// The answer to a refused push, as `git receive-pack` gives it: `unpack ok`, then
/// `ng <ref> <reason>` for every update (the allowed ones too: nothing was applied),
/// inside side-band 1 with the reason also on side-band 2 when the client asked for
/// side-band. None when the client asked for no status report.
pub fn refusal_report(
    updates: &[RefUpdate],
    reasons: &[Option<String>],
    caps: &[String],
) -> Option<Vec<u8>> {
    let has = |c: &str| caps.iter().any(|k| k == c);
    if !has("report-status") && !has("report-status-v2") {
        return None;
    }
    let mut report = Vec::new();
    pkt(&mut report, b"unpack ok\n");
    for (u, why) in updates.iter().zip(reasons) {
        let why = why.clone().unwrap_or_else(|| {
            "firstmate: not pushed, another ref of this push was refused".into()
        });
        let why = why.replace(['\n', '\r'], " ");
        pkt(&mut report, format!("ng {} {why}\n", u.name).as_bytes());
    }
    report.extend_from_slice(b"0000");
    if !has("side-band-64k") && !has("side-band") {
        return Some(report);
    }
    let max = if has("side-band-64k") { 65515 } else { 995 };
    let mut out = Vec::new();
    if let Some(first) = reasons.iter().flatten().next() {
        pkt(&mut out, format!("\x02{first}\n").as_bytes());
    }
    for chunk in report.chunks(max) {
        let mut payload = vec![1u8];
        payload.extend_from_slice(chunk);
        pkt(&mut out, &payload);
    }
    out.extend_from_slice(b"0000");
    Some(out)
}

fn plain(status: StatusCode, text: &str) -> Response<Body> {
    let mut resp = Response::new(full(Bytes::from(format!("firstmate gateway: {text}\n"))));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// The git service a request is for, if it is one the gateway serves.
fn service(method: &Method, path: &str, query: Option<&str>) -> Option<&'static str> {
    match (method, path) {
        (&Method::GET, "info/refs") => match query? {
            "service=git-upload-pack" => Some("info/refs upload-pack"),
            "service=git-receive-pack" => Some("info/refs receive-pack"),
            _ => None,
        },
        (&Method::POST, "git-upload-pack") => Some("upload-pack"),
        (&Method::POST, "git-receive-pack") => Some("receive-pack"),
        _ => None,
    }
}

/// Serves `/git/<session>/<path>`; `rest` is what follows `/git/`.
pub(super) async fn handle(
    inner: Arc<Inner>,
    req: Request<Incoming>,
    rest: String,
) -> Response<Body> {
    let (session, path) = rest.split_once('/').unwrap_or((rest.as_str(), ""));
    let Some(svc) = service(req.method(), path, req.uri().query()) else {
        return plain(
            StatusCode::NOT_FOUND,
            "the git route serves git's smart HTTP protocol only (info/refs, git-upload-pack, git-receive-pack)",
        );
    };
    let Some(token) = bearer(req.headers()) else {
        return plain(StatusCode::UNAUTHORIZED, "no session token");
    };
    let (record, live) = match lookup(&inner, &token).await {
        Ok(Some(found)) => found,
        Ok(None) => {
            warn!("gateway git: refused an unknown or revoked token");
            return plain(StatusCode::UNAUTHORIZED, "unknown or revoked session token");
        }
        Err(e) => {
            warn!(error = %e, "gateway git: token lookup failed");
            return plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "the gateway cannot read its database",
            );
        }
    };
    if record.session_id != session {
        warn!(session = %record.session_id, asked = %session, "gateway git: a token asked for another session's repository");
        return plain(StatusCode::FORBIDDEN, "this token is not that session's");
    }
    let session = record.session_id;
    let Some(grant) = inner.git.get(&session) else {
        return plain(
            StatusCode::NOT_FOUND,
            "this session has no repository (start one with `new --repo`)",
        );
    };

    let (parts, mut body) = req.into_parts();
    let mut prefix = BytesMut::new();
    let mut pushed_ref = None;
    if svc == "receive-pack" {
        if parts
            .headers
            .get(hyper::header::CONTENT_ENCODING)
            .is_some_and(|v| v.as_bytes() != b"identity")
        {
            return plain(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "a compressed push cannot be checked; push without Content-Encoding",
            );
        }
        let (updates, caps) = loop {
            match read_commands(&prefix) {
                Commands::Done { updates, caps } => break (updates, caps),
                Commands::Bad(why) => return plain(StatusCode::BAD_REQUEST, &why),
                Commands::More if prefix.len() > MAX_COMMANDS => {
                    return plain(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "a push's command list is too long",
                    );
                }
                Commands::More => match body.frame().await {
                    Some(Ok(f)) => {
                        if let Ok(d) = f.into_data() {
                            prefix.extend_from_slice(&d);
                        }
                    }
                    Some(Err(e)) => {
                        return plain(StatusCode::BAD_REQUEST, &format!("the push broke off: {e}"));
                    }
                    None if prefix.is_empty() => break (Vec::new(), Vec::new()),
                    None => {
                        return plain(
                            StatusCode::BAD_REQUEST,
                            "a push whose command list ends early",
                        );
                    }
                },
            }
        };
        let mut mine = inner.git.attempts(&session);
        mine.extend(live.pushed_commit.clone());
        let reasons = judge(&updates, grant.push_branch.as_deref(), &mine);
        if reasons.iter().any(Option::is_some) {
            return refuse(&inner, &session, &updates, &reasons, &caps, body).await;
        }
        pushed_ref = updates.first().map(|u| (u.name.clone(), u.new.clone()));
        for u in &updates {
            inner.git.attempted(&session, &u.new);
        }
    }

    // A fetch the same as one in flight (or just answered) gets that answer.
    let mut lead = Lead(None);
    if svc == "upload-pack" {
        let whole = loop {
            if prefix.len() > packs::MAX_REQUEST {
                break false;
            }
            match body.frame().await {
                Some(Ok(f)) => {
                    if let Ok(d) = f.into_data() {
                        prefix.extend_from_slice(&d);
                    }
                }
                Some(Err(e)) => {
                    return plain(
                        StatusCode::BAD_REQUEST,
                        &format!("the fetch broke off: {e}"),
                    );
                }
                None => break true,
            }
        };
        let header = |name: &str| parts.headers.get(name).map(|v| v.as_bytes());
        let key = whole
            .then(|| {
                packs::key(
                    &grant.upstream,
                    grant.authorization.as_deref(),
                    header("git-protocol"),
                    header("content-encoding"),
                    &prefix,
                )
            })
            .flatten();
        match key.map(|k| inner.packs.join(k)) {
            Some(packs::Role::Follower(flight)) => {
                if let Some((content_type, chunks)) = flight.wait().await {
                    let n = inner
                        .packs
                        .shared
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                        + 1;
                    let size: usize = chunks.iter().map(Bytes::len).sum();
                    info!(%session, bytes = size, shared_total = n, "gateway git: a fetch answered from the shared pack cache");
                    return shared_answer(content_type, chunks);
                }
                // Not shareable after all: this request goes upstream itself.
            }
            Some(packs::Role::Leader(flight)) => lead = Lead(Some(flight)),
            None => {}
        }
    }

    // Upstream, with the repository's credential instead of the session's token.
    let query = parts
        .uri
        .query()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    let url = format!("{}/{path}{query}", grant.upstream.trim_end_matches('/'));
    let mut call = inner.client.request(parts.method.clone(), &url);
    for name in [
        "content-type",
        "accept",
        "git-protocol",
        "content-encoding",
        "user-agent",
        "accept-language",
    ] {
        if let Some(v) = parts.headers.get(name) {
            call = call.header(name, v);
        }
    }
    if let Some(auth) = &grant.authorization {
        call = call.header("authorization", auth);
    }
    if parts.method == Method::POST {
        let head =
            futures_util::stream::once(async move { Ok::<Bytes, std::io::Error>(prefix.freeze()) });
        let tail =
            http_body_util::BodyDataStream::new(body).map(|r| r.map_err(std::io::Error::other));
        call = call.body(reqwest::Body::wrap_stream(head.chain(tail)));
    }
    let resp = match call.send().await {
        Ok(r) => r,
        Err(e) => {
            let e = e.without_url();
            warn!(%session, error = %e, "gateway git: upstream unreachable");
            return plain(
                StatusCode::BAD_GATEWAY,
                &format!("cannot reach the repository: {e}"),
            );
        }
    };
    let status = resp.status();
    debug!(%session, service = svc, %status, "gateway git: upstream answered");
    if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        info!(%session, %status, "gateway git: the repository refused the credential");
    }
    let mut out = Response::builder().status(status);
    for name in [
        "content-type",
        "cache-control",
        "expires",
        "pragma",
        "content-encoding",
    ] {
        if let Some(v) = resp.headers().get(name) {
            out = out.header(name, v);
        }
    }
    if let Some(flight) = &lead.0 {
        if status == StatusCode::OK {
            let ct = resp
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            flight.start(ct);
        } else {
            flight.finish(false);
        }
    }
    let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(16);
    let mut chunks = resp.bytes_stream();
    let reports = inner.reports.clone();
    let store = inner.store.clone();
    tokio::spawn(async move {
        let mut lead = lead;
        let mut broke = false;
        // The start of a push's answer, to learn whether the branch moved.
        let mut seen = Vec::new();
        while let Some(chunk) = chunks.next().await {
            let item = chunk.map_err(|e| std::io::Error::other(e.without_url().to_string()));
            if let (Ok(b), Some(_)) = (&item, &pushed_ref)
                && seen.len() < 64 * 1024
            {
                seen.extend_from_slice(b);
            }
            let failed = item.is_err();
            if let (Ok(b), Some(flight)) = (&item, &lead.0)
                && !flight.push(b)
            {
                lead.0 = None;
            }
            broke |= failed;
            // The agent hanging up does not end a fetch others wait for.
            if tx.send(item.map(Frame::data)).await.is_err() && lead.0.is_none() || failed {
                broke |= lead.0.is_some();
                break;
            }
        }
        if let Some(flight) = lead.0.take() {
            flight.finish(!broke && status == StatusCode::OK);
        }
        if let Some((name, commit)) = pushed_ref
            && status.is_success()
            && memchr_find(&seen, format!("ok {name}").as_bytes())
        {
            // Recorded before the answer ends: the session's next push may start from it.
            if let Err(e) = store.set_pushed(&session, &commit).await {
                warn!(%session, error = %e, "gateway git: cannot record a push");
            }
            let branch = name.trim_start_matches("refs/heads/").to_string();
            let _ = reports.send(GatewayReport::Pushed {
                session,
                branch,
                commit,
            });
        }
    });
    let body = StreamBody::new(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }));
    out.body(BodyExt::boxed(body)).unwrap_or_else(|e| {
        plain(
            StatusCode::BAD_GATEWAY,
            &format!("cannot relay the answer: {e}"),
        )
    })
}

/// Finishes a flight that ends without an answer to share (an error on the way).
struct Lead(Option<Arc<packs::Flight>>);

impl Drop for Lead {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            f.finish(false);
        }
    }
}

/// An answer from the shared pack cache.
fn shared_answer(content_type: Option<String>, chunks: Vec<Bytes>) -> Response<Body> {
    let stream = futures_util::stream::iter(
        chunks
            .into_iter()
            .map(|c| Ok::<_, std::io::Error>(Frame::data(c))),
    );
    let mut resp = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    let ct = content_type.unwrap_or_else(|| "application/x-git-upload-pack-result".into());
    if let Ok(v) = HeaderValue::from_str(&ct) {
        resp.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    resp.headers_mut().insert(
        hyper::header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache"),
    );
    resp
}

fn memchr_find(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Answers a refused push (after reading the rest of it, so git sees the answer and
/// not a broken pipe) and tells the thread.
async fn refuse(
    inner: &Inner,
    session: &str,
    updates: &[RefUpdate],
    reasons: &[Option<String>],
    caps: &[String],
    mut body: Incoming,
) -> Response<Body> {
    let refused: Vec<&str> = updates
        .iter()
        .zip(reasons)
        .filter(|(_, r)| r.is_some())
        .map(|(u, _)| u.name.as_str())
        .collect();
    let why = reasons.iter().flatten().next().cloned().unwrap_or_default();
    let why = why.trim_start_matches("firstmate: ");
    info!(%session, refs = ?refused, reason = %why, "gateway git: refused a push");
    let _ = inner.reports.send(GatewayReport::Notice {
        session: session.to_string(),
        text: format!("push refused: {} ({why})", refused.join(", ")),
    });
    while let Some(Ok(_)) = body.frame().await {}
    match refusal_report(updates, reasons, caps) {
        Some(report) => {
            let mut resp = Response::new(full(Bytes::from(report)));
            resp.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                HeaderValue::from_static("application/x-git-receive-pack-result"),
            );
            resp.headers_mut().insert(
                hyper::header::CACHE_CONTROL,
                HeaderValue::from_static("no-cache"),
            );
            resp
        }
        None => plain(
            StatusCode::FORBIDDEN,
            &format!("push refused: {} ({why})", refused.join(", ")),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "1111111111111111111111111111111111111111";
    const B: &str = "2222222222222222222222222222222222222222";
    const Z: &str = "0000000000000000000000000000000000000000";

    fn line(s: &str) -> Vec<u8> {
        let mut v = Vec::new();
        pkt(&mut v, s.as_bytes());
        v
    }

    fn list(lines: &[&str]) -> Vec<u8> {
        let mut v: Vec<u8> = lines.iter().flat_map(|l| line(l)).collect();
        v.extend_from_slice(b"0000PACK....");
        v
    }

    #[test]
    fn the_command_list_is_read_up_to_the_flush() {
        let body = list(&[
            &format!("{Z} {A} refs/heads/firstmate/s1\0report-status side-band-64k agent=git/2.39"),
            &format!("{A} {B} refs/heads/main\n"),
        ]);
        let Commands::Done { updates, caps } = read_commands(&body) else {
            panic!("not read")
        };
        assert_eq!(updates.len(), 2);
        assert_eq!(updates[1].name, "refs/heads/main");
        assert!(caps.contains(&"side-band-64k".to_string()));
        // Any prefix short of the flush asks for more.
        let flush = body.len() - "PACK....".len();
        for cut in 0..flush {
            assert_eq!(read_commands(&body[..cut]), Commands::More, "cut {cut}");
        }
        assert!(matches!(
            read_commands(&list(&["push-cert\0report-status"])),
            Commands::Bad(_)
        ));
        assert!(matches!(read_commands(b"zzzz"), Commands::Bad(_)));
        assert!(matches!(
            read_commands(&list(&["hello there"])),
            Commands::Bad(_)
        ));
        assert!(matches!(read_commands(b"0002"), Commands::Bad(_)));
        let shallow = list(&[
            &format!("shallow {A}"),
            &format!("{A} {B} refs/heads/x\0report-status"),
        ]);
        assert!(
            matches!(read_commands(&shallow), Commands::Done { updates, .. } if updates.len() == 1)
        );
    }

    #[test]
    fn only_the_sessions_own_branch_moves() {
        let u = |old: &str, new: &str, name: &str| RefUpdate {
            old: old.into(),
            new: new.into(),
            name: name.into(),
        };
        let r = judge(
            &[
                u(Z, A, "refs/heads/firstmate/s1"),
                u(A, B, "refs/heads/main"),
                u(A, Z, "refs/heads/other"),
                u(A, Z, "refs/heads/firstmate/s1"),
                u(Z, A, "refs/tags/v1"),
                u(Z, A, "refs/heads/firstmate/s1x"),
            ],
            Some("firstmate/s1"),
            &[],
        );
        assert_eq!(r[0], None);
        assert!(r[1].as_deref().unwrap().contains("only to firstmate/s1"));
        assert!(r[2].is_some() && r[4].is_some() && r[5].is_some());
        assert!(r[3].as_deref().unwrap().contains("delete"));
        assert!(judge(&[u(Z, A, "refs/heads/firstmate/s1")], None, &[])[0].is_some());
    }

    /// The branch moves only from where this session left it: from nothing, or from a
    /// commit it pushed (a force push over its own work is fine); from anyone else's
    /// commit it does not, fast-forward or not (the gateway cannot tell which).
    #[test]
    fn the_branch_moves_only_from_the_sessions_own_commits() {
        const C: &str = "3333333333333333333333333333333333333333";
        let own = |old: &str, new: &str| RefUpdate {
            old: old.into(),
            new: new.into(),
            name: "refs/heads/fresh".into(),
        };
        let mine = [A.to_string()];
        let judged = |old, new| judge(&[own(old, new)], Some("fresh"), &mine)[0].clone();
        assert_eq!(judged(Z, B), None, "created");
        assert_eq!(judged(A, B), None, "moved on from the session's own push");
        let over = judged(C, B).expect("someone else's commit");
        assert!(
            over.contains("fresh has commits this session did not push"),
            "{over}"
        );
        assert!(judged(A, Z).expect("a delete").contains("delete"));
        // Nothing pushed yet: only a create.
        assert!(judge(&[own(C, B)], Some("fresh"), &[])[0].is_some());
    }

    #[test]
    fn a_sessions_attempts_are_kept_once_newest_last_and_forgotten_with_it() {
        let g = Grants::default();
        for i in 0..(MAX_ATTEMPTS + 10) {
            g.attempted("s1", &format!("{i:040x}"));
        }
        g.attempted("s1", &format!("{:040x}", MAX_ATTEMPTS + 9));
        let kept = g.attempts("s1");
        assert_eq!(kept.len(), MAX_ATTEMPTS);
        assert_eq!(kept.last(), Some(&format!("{:040x}", MAX_ATTEMPTS + 9)));
        assert_eq!(kept.first(), Some(&format!("{:040x}", 10)));
        assert!(g.attempts("s2").is_empty());
        g.forget("s1");
        assert!(g.attempts("s1").is_empty());
    }

    #[test]
    fn a_refusal_reads_as_receive_packs_own_report() {
        let ups = vec![RefUpdate {
            old: A.into(),
            new: B.into(),
            name: "refs/heads/main".into(),
        }];
        let why = vec![Some(
            "firstmate: this session may push only to firstmate/s1".to_string(),
        )];
        let plain = refusal_report(&ups, &why, &["report-status".into()]).unwrap();
        assert_eq!(
            String::from_utf8(plain).unwrap(),
            "000eunpack ok\n004dng refs/heads/main firstmate: this session may push only to firstmate/s1\n0000"
        );
        let banded = refusal_report(
            &ups,
            &why,
            &["report-status".into(), "side-band-64k".into()],
        )
        .unwrap();
        let text = String::from_utf8_lossy(&banded);
        assert!(
            text.contains("\u{2}firstmate: this session may push only")
                && text.contains("\u{1}000eunpack ok")
        );
        assert!(text.ends_with("00000000"));
        assert!(refusal_report(&ups, &why, &[]).is_none());
    }
}
