//! The model gateway: worker containers reach the model APIs only through it, with a
//! per-session token; it puts the real credential on the way out, streams the response
//! back unbuffered, and counts what each call used.
//!
//! Invariants: the real credential is read from the config only here and is never
//! logged, stored or passed to a container; a token works only while its session is
//! live; a session (or user) over its spending limit gets no further call through, and
//! the engine is told to stop it.
//!
//! The same listener is the workers' egress proxy (`egress.rs`): CONNECT and absolute-URI
//! requests go to the hosts of `[egress] allow`, by session token, never to a private
//! address.

pub mod egress;
pub mod git;
pub mod packs;
pub mod usage;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use dashmap::DashMap;
use futures_util::StreamExt;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::config::{GatewayConfig, UpstreamConfig};
use crate::pricing::price_of;
use crate::protocol::ProtocolKind;
use crate::store::{SessionRecord, Store, StoreError, TokenRecord, now_ms};
use usage::{Api, Meter, SseScanner};

/// The largest request body the gateway forwards.
const MAX_REQUEST: usize = 32 * 1024 * 1024;
/// How much of a non-streamed response is kept to read its usage.
const MAX_METERED_BODY: usize = 8 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("cannot listen on gateway.listen = {addr}: {source}; pick a free address in [gateway]")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot set up the gateway's HTTP client: {0}")]
    Client(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A session went over a spending limit: the engine stops it with `reason`.
#[derive(Debug, Clone, PartialEq)]
pub struct LimitReached {
    pub session: String,
    pub reason: String,
}

/// What the gateway asks of the engine.
#[derive(Debug, Clone, PartialEq)]
pub enum GatewayReport {
    /// Stop the session.
    Limit(LimitReached),
    /// Say `text` in the session's thread (an egress refusal, once per host; a push
    /// refused).
    Notice { session: String, text: String },
    /// The session's branch was pushed (by the agent or by `push`), now at `commit`.
    Pushed {
        session: String,
        branch: String,
        commit: String,
    },
}

type Body = BoxBody<Bytes, std::io::Error>;

#[derive(Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

struct Inner {
    config: GatewayConfig,
    store: Store,
    client: reqwest::Client,
    /// Tokens seen valid, by token (a cache of the store's `gateway_tokens`).
    tokens: DashMap<String, TokenRecord>,
    reports: mpsc::UnboundedSender<GatewayReport>,
    egress: egress::Egress,
    /// What each session's git traffic may do.
    git: git::Grants,
    /// Fetches shared between sessions cloning the same repository at once.
    packs: packs::Packs,
}

impl Gateway {
    /// A gateway whose egress proxy allows `allow`, and the stream of what it asks of
    /// the engine (sessions to stop for their spending, notices for their threads).
    pub fn new(
        config: GatewayConfig,
        allow: egress::Allowlist,
        store: Store,
    ) -> Result<(Gateway, mpsc::UnboundedReceiver<GatewayReport>), GatewayError> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(30))
            .no_gzip()
            .build()
            .map_err(|e| GatewayError::Client(crate::error::cause(&e)))?;
        let (tx, rx) = mpsc::unbounded_channel();
        let gw = Gateway {
            inner: Arc::new(Inner {
                config,
                store,
                client,
                tokens: DashMap::new(),
                reports: tx,
                egress: egress::Egress::new(allow),
                git: git::Grants::default(),
                packs: packs::Packs::default(),
            }),
        };
        Ok((gw, rx))
    }

    pub async fn bind(&self) -> Result<TcpListener, GatewayError> {
        let addr = self.inner.config.listen;
        TcpListener::bind(addr)
            .await
            .map_err(|source| GatewayError::Bind { addr, source })
    }

    /// Serves requests on `listener` until the task is dropped.
    pub async fn serve(self, listener: TcpListener) {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    warn!(error = %e, "gateway: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            // Small writes (headers, then each event) must not wait for delayed ACKs.
            let _ = stream.set_nodelay(true);
            let inner = self.inner.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let inner = inner.clone();
                    async move { Ok::<_, Infallible>(handle(inner, req).await) }
                });
                if let Err(e) = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades()
                    .await
                {
                    debug!(%peer, error = %e, "gateway: connection ended");
                }
            });
        }
    }

    /// A fresh token for a session's new container (earlier ones are revoked), and the
    /// environment that points the agent at the gateway with it: the model API's base
    /// URL and key, and the egress proxy (`HTTPS_PROXY`, `HTTP_PROXY`, with the token as
    /// its password) for everything but the gateway itself (`NO_PROXY`). The proxy is
    /// given even when `[egress] allow` is empty: its refusals then say why.
    ///
    /// With `git`, the session's repository is served at `<url>/git/<session>` and the
    /// environment carries git's configuration for it (`repo::git_env`).
    pub async fn issue(
        &self,
        session: &str,
        owner: &str,
        protocol: ProtocolKind,
        git: Option<git::GitGrant>,
    ) -> Result<Vec<String>, GatewayError> {
        self.revoke(session).await?;
        let token = format!(
            "fm-{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        self.inner
            .store
            .insert_gateway_token(&token, session, owner)
            .await?;
        let url = &self.inner.config.url;
        let mut env = match protocol {
            ProtocolKind::Claude => vec![
                format!("ANTHROPIC_BASE_URL={url}/anthropic"),
                format!("ANTHROPIC_API_KEY={token}"),
            ],
            ProtocolKind::Codex => vec![
                format!("OPENAI_BASE_URL={}", self.openai_base_url()),
                format!("OPENAI_API_KEY={token}"),
            ],
        };
        env.extend(proxy_env(url, &token));
        if let Some(grant) = git {
            self.grant_git(session, grant);
            env.extend(crate::repo::git_env(url, &token, session));
        }
        Ok(env)
    }

    /// Serves `session`'s repository as `grant` says (again after a restart, when the
    /// session's token is still the one its container holds).
    pub fn grant_git(&self, session: &str, grant: git::GitGrant) {
        self.inner.git.set(session, grant);
    }

    /// The workers' git remote for `session`.
    pub fn git_remote(&self, session: &str) -> String {
        crate::repo::remote_url(&self.inner.config.url, session)
    }

    /// Egress requests by outcome since this gateway started.
    pub fn egress_counts(&self) -> egress::EgressCounts {
        self.inner.egress.counts()
    }

    /// The OpenAI-compatible base URL (with `/v1`) workers are given.
    pub fn openai_base_url(&self) -> String {
        format!("{}/openai/v1", self.inner.config.url)
    }

    /// Revokes a session's tokens: the gateway answers them 401 from now on.
    pub async fn revoke(&self, session: &str) -> Result<(), GatewayError> {
        self.inner.store.revoke_gateway_tokens(session).await?;
        self.inner.tokens.retain(|_, r| r.session_id != session);
        self.inner.egress.forget(session);
        self.inner.git.forget(session);
        Ok(())
    }
}

/// The proxy variables of a worker: the gateway at `url` with `token` as the password,
/// and the gateway's own host (its model API) and the loopback names left out.
fn proxy_env(url: &str, token: &str) -> Vec<String> {
    let (scheme, rest) = url.split_once("://").unwrap_or(("http", url));
    let authority = rest.split('/').next().unwrap_or(rest);
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(v6),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    let proxy = format!("{scheme}://firstmate:{token}@{authority}");
    let no_proxy = format!("{host},localhost,127.0.0.1");
    vec![
        format!("HTTPS_PROXY={proxy}"),
        format!("https_proxy={proxy}"),
        format!("HTTP_PROXY={proxy}"),
        format!("http_proxy={proxy}"),
        format!("NO_PROXY={no_proxy}"),
        format!("no_proxy={no_proxy}"),
    ]
}

fn json_error(status: StatusCode, kind: &str, message: &str) -> Response<Body> {
    let body = serde_json::json!({
        "type": "error",
        "error": { "type": kind, "message": format!("firstmate gateway: {message}") },
    });
    let mut resp = Response::new(full(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

fn full(b: Bytes) -> Body {
    Full::new(b).map_err(|never| match never {}).boxed()
}

/// Headers that belong to one hop, or that the gateway sets itself.
fn is_dropped_header(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "host"
            | "content-length"
            | "accept-encoding"
            | "x-api-key"
            | "authorization"
    )
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    if let Some(v) = headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
        return Some(v.trim().to_string());
    }
    let auth = headers.get("authorization")?.to_str().ok()?;
    let (scheme, token) = auth.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_string())
}

async fn handle(inner: Arc<Inner>, req: Request<Incoming>) -> Response<Body> {
    if egress::is_proxy_request(&req) {
        return egress::handle(inner, req).await;
    }
    let path = req.uri().path().to_string();
    if path == "/healthz" {
        return Response::new(full(Bytes::from_static(b"ok\n")));
    }
    if let Some(rest) = path.strip_prefix("/git/") {
        let rest = rest.to_string();
        return git::handle(inner, req, rest).await;
    }
    let (api, rest, upstream) = if let Some(rest) = path.strip_prefix("/anthropic/") {
        (Api::Anthropic, rest, inner.config.anthropic.as_ref())
    } else if let Some(rest) = path.strip_prefix("/openai/") {
        (Api::OpenAi, rest, inner.config.openai.as_ref())
    } else {
        return json_error(
            StatusCode::NOT_FOUND,
            "not_found_error",
            "unknown path: the gateway serves /anthropic/..., /openai/... and /git/...",
        );
    };
    let api_name = match api {
        Api::Anthropic => "anthropic",
        Api::OpenAi => "openai",
    };

    // Who is calling.
    let Some(token) = bearer(req.headers()) else {
        return json_error(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "no session token",
        );
    };
    let record = match lookup(&inner, &token).await {
        Ok(Some((r, _))) => r,
        Ok(None) => {
            warn!(
                api = api_name,
                "gateway: refused an unknown or revoked token"
            );
            return json_error(
                StatusCode::UNAUTHORIZED,
                "authentication_error",
                "unknown or revoked session token",
            );
        }
        Err(e) => {
            warn!(error = %e, "gateway: token lookup failed");
            return json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "api_error",
                "the gateway cannot read its database",
            );
        }
    };
    let Some(upstream) = upstream else {
        return json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "api_error",
            &format!("no upstream for {api_name}: add [gateway.{api_name}] to the config"),
        );
    };
    if let Some(reason) = over_limit(&inner, &record).await {
        let _ = inner.reports.send(GatewayReport::Limit(LimitReached {
            session: record.session_id.clone(),
            reason: reason.clone(),
        }));
        return json_error(StatusCode::FORBIDDEN, "permission_error", &reason);
    }

    // The request, with the real credential instead of the token.
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_REQUEST).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return json_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request_error",
                &format!("cannot read the request body (at most {MAX_REQUEST} bytes): {e}"),
            );
        }
    };
    let requested_model = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("model")?.as_str().map(str::to_string));
    let mut url = format!("{}/{}", upstream.upstream, rest);
    if let Some(q) = parts.uri.query() {
        url.push('?');
        url.push_str(q);
    }
    let mut headers = HeaderMap::new();
    for (name, value) in &parts.headers {
        if !is_dropped_header(name) {
            headers.append(name.clone(), value.clone());
        }
    }
    if let Err(msg) = put_credential(api, upstream, &mut headers) {
        return json_error(StatusCode::SERVICE_UNAVAILABLE, "api_error", &msg);
    }
    let started = std::time::Instant::now();
    let resp = match inner
        .client
        .request(parts.method.clone(), &url)
        .headers(headers)
        .body(body)
        .send()
        .await
    {
        Ok(r) => r,
        Err(e) => {
            let e = e.without_url();
            warn!(session = %record.session_id, api = api_name, error = %e, "gateway: upstream unreachable");
            return json_error(
                StatusCode::BAD_GATEWAY,
                "api_error",
                &format!(
                    "cannot reach the {api_name} upstream {}: {e}",
                    upstream.upstream
                ),
            );
        }
    };

    let status = resp.status();
    let streamed = resp
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("text/event-stream"));
    let mut out = Response::builder().status(status);
    for (name, value) in resp.headers() {
        if !is_dropped_header(name) {
            out = out.header(name, value);
        }
    }
    debug!(session = %record.session_id, api = api_name, %status, ms = started.elapsed().as_millis() as u64, "gateway: upstream answered");

    // Stream the body through, counting as it passes. The call is recorded before the
    // agent sees the end of the answer, so a `status` right after the turn counts it.
    let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(64);
    let mut chunks = resp.bytes_stream();
    let method = parts.method.to_string();
    tokio::spawn(async move {
        let call = Call {
            who: record,
            api_name,
            method,
            path: rest_of(&url),
            requested_model,
            status,
        };
        let mut meter = Meter::default();
        let mut scanner = SseScanner::default();
        // A whole (not streamed) answer is held until it ends, up to a limit.
        let mut held: Vec<Bytes> = Vec::new();
        let mut held_len = 0;
        let mut metering = true;
        let mut recorded = false;
        let mut client_gone = false;
        while let Some(chunk) = chunks.next().await {
            let bytes = match chunk {
                Ok(b) => b,
                Err(e) => {
                    let _ = tx
                        .send(Err(std::io::Error::other(e.without_url().to_string())))
                        .await;
                    break;
                }
            };
            let mut out = vec![bytes.clone()];
            if streamed {
                for ev in scanner.push(&bytes) {
                    meter.event(api, &ev.data);
                }
                if meter.finished && !recorded {
                    record_call(&inner, &call, std::mem::take(&mut meter)).await;
                    recorded = true;
                }
            } else if metering {
                held_len += bytes.len();
                held.push(bytes);
                out.clear();
                if held_len > MAX_METERED_BODY {
                    // Too big to read for usage: pass it on as it comes.
                    metering = false;
                    out = std::mem::take(&mut held);
                }
            }
            for b in out {
                if !client_gone && tx.send(Ok(Frame::data(b))).await.is_err() {
                    // The agent hung up; keep reading to count what was used.
                    client_gone = true;
                }
            }
        }
        if !streamed && metering {
            let whole: Vec<u8> = held.iter().flat_map(|b| b.iter().copied()).collect();
            meter.json_body(api, &whole);
        }
        if !recorded {
            record_call(&inner, &call, meter).await;
        }
        for b in held.drain(..).filter(|_| metering) {
            if tx.send(Ok(Frame::data(b))).await.is_err() {
                break;
            }
        }
    });
    let body = StreamBody::new(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }));
    out.body(BodyExt::boxed(body)).unwrap_or_else(|e| {
        json_error(
            StatusCode::BAD_GATEWAY,
            "api_error",
            &format!("cannot relay the upstream's answer: {e}"),
        )
    })
}

fn rest_of(url: &str) -> String {
    url.split_once("://")
        .and_then(|(_, r)| r.split_once('/'))
        .map(|(_, p)| format!("/{}", p.split('?').next().unwrap_or("")))
        .unwrap_or_default()
}

/// One relayed call, for the log and the usage record.
struct Call {
    who: TokenRecord,
    api_name: &'static str,
    method: String,
    path: String,
    requested_model: Option<String>,
    status: StatusCode,
}

async fn record_call(inner: &Inner, call: &Call, meter: Meter) {
    let Call {
        who,
        api_name,
        method,
        path,
        requested_model,
        status,
    } = call;
    let (api_name, status) = (*api_name, *status);
    let model = meter.model.clone().or(requested_model.clone());
    let u = meter.usage;
    let used = u.input_tokens + u.output_tokens + u.cache_read_tokens + u.cache_write_tokens;
    let cost = match model
        .as_deref()
        .and_then(|m| price_of(&inner.config.prices, m))
    {
        Some(p) => p.cost(&u),
        None => {
            if used > 0 {
                warn!(model = ?model, "gateway: no price for this model; add [gateway.prices.\"<model>\"] to count its cost");
            }
            0.0
        }
    };
    info!(
        session = %who.session_id,
        api = api_name,
        %method,
        %path,
        status = status.as_u16(),
        model = model.as_deref().unwrap_or("-"),
        input = u.input_tokens,
        output = u.output_tokens,
        cache_read = u.cache_read_tokens,
        cache_write = u.cache_write_tokens,
        cost_usd = cost,
        "gateway: call"
    );
    if used == 0 && cost == 0.0 {
        return;
    }
    if let Err(e) = inner
        .store
        .record_api_usage(
            &who.session_id,
            &who.owner,
            api_name,
            model.as_deref(),
            &u,
            cost,
        )
        .await
    {
        warn!(session = %who.session_id, error = %e, "gateway: cannot record usage");
        return;
    }
    if let Some(reason) = over_limit(inner, who).await {
        let _ = inner.reports.send(GatewayReport::Limit(LimitReached {
            session: who.session_id.clone(),
            reason,
        }));
    }
}

fn put_credential(
    api: Api,
    upstream: &UpstreamConfig,
    headers: &mut HeaderMap,
) -> Result<(), String> {
    let header = |v: &str| {
        HeaderValue::from_str(v)
            .map_err(|_| "the credential is not a valid header value".to_string())
    };
    match (api, upstream.api_key.value(), upstream.oauth_token.value()) {
        (Api::Anthropic, Some(key), _) => {
            headers.insert("x-api-key", header(key)?);
        }
        (Api::Anthropic, None, Some(token)) => {
            headers.insert("authorization", header(&format!("Bearer {token}"))?);
            let beta = match headers.get("anthropic-beta").and_then(|v| v.to_str().ok()) {
                Some(b) if b.contains("oauth-2025-04-20") => b.to_string(),
                Some(b) if !b.is_empty() => format!("{b},oauth-2025-04-20"),
                _ => "oauth-2025-04-20".to_string(),
            };
            headers.insert("anthropic-beta", header(&beta)?);
        }
        (Api::OpenAi, Some(key), _) | (Api::OpenAi, None, Some(key)) => {
            headers.insert("authorization", header(&format!("Bearer {key}"))?);
        }
        (api, None, None) => {
            let name = if api == Api::Anthropic {
                "anthropic"
            } else {
                "openai"
            };
            return Err(format!(
                "no credential for {name}: set api_key_env (or oauth_token_env) in [gateway.{name}]"
            ));
        }
    }
    Ok(())
}

/// The token's owner and session, with the session as it stands now, when the token is
/// known, not revoked, and its session is live.
async fn lookup(
    inner: &Inner,
    token: &str,
) -> Result<Option<(TokenRecord, SessionRecord)>, StoreError> {
    let record = match inner.tokens.get(token) {
        Some(r) => r.clone(),
        None => match inner.store.gateway_token(token).await? {
            Some(r) if !r.revoked => r,
            _ => return Ok(None),
        },
    };
    let Some(session) = inner
        .store
        .session(&record.session_id)
        .await?
        .filter(|s| s.state.is_live())
    else {
        inner.tokens.remove(token);
        return Ok(None);
    };
    inner.tokens.insert(token.to_string(), record.clone());
    Ok(Some((record, session)))
}

/// Why a session may not call any more, if it may not.
async fn over_limit(inner: &Inner, who: &TokenRecord) -> Option<String> {
    let cfg = &inner.config;
    if let Some(limit) = cfg.session_limit_usd {
        match inner.store.session_api_usage(&who.session_id).await {
            Ok(u) if u.cost_usd >= limit => {
                return Some(format!(
                    "the session reached its spending limit: ${:.2} of ${limit:.2} (gateway.session_limit_usd)",
                    u.cost_usd
                ));
            }
            Ok(_) => {}
            Err(e) => warn!(error = %e, "gateway: cannot read the session's spending"),
        }
    }
    if let Some(limit) = cfg.user_limit_usd {
        let since = now_ms() - cfg.user_limit_window.as_millis() as i64;
        match inner.store.user_api_usage(&who.owner, since).await {
            Ok(u) if u.cost_usd >= limit => {
                return Some(format!(
                    "{} reached the spending limit: ${:.2} of ${limit:.2} within {} (gateway.user_limit_usd)",
                    who.owner,
                    u.cost_usd,
                    humantime::format_duration(cfg.user_limit_window)
                ));
            }
            Ok(_) => {}
            Err(e) => warn!(error = %e, "gateway: cannot read the user's spending"),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_come_from_x_api_key_or_bearer() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert("authorization", HeaderValue::from_static("Bearer fm-abc"));
        assert_eq!(bearer(&h).as_deref(), Some("fm-abc"));
        h.insert("x-api-key", HeaderValue::from_static("fm-key"));
        assert_eq!(bearer(&h).as_deref(), Some("fm-key"));
        let mut h = HeaderMap::new();
        h.insert("authorization", HeaderValue::from_static("Basic xyz"));
        assert_eq!(bearer(&h), None);
    }

    #[test]
    fn the_token_never_goes_upstream() {
        for name in [
            "x-api-key",
            "authorization",
            "host",
            "content-length",
            "connection",
        ] {
            assert!(is_dropped_header(&HeaderName::from_static(name)), "{name}");
        }
        for name in [
            "anthropic-version",
            "anthropic-beta",
            "content-type",
            "x-stainless-arch",
        ] {
            assert!(!is_dropped_header(&HeaderName::from_static(name)), "{name}");
        }
    }

    #[test]
    fn workers_get_the_proxy_with_their_token_but_not_for_the_gateway() {
        let env = proxy_env("http://firstmate:8787", "fm-t");
        for want in [
            "HTTPS_PROXY=http://firstmate:fm-t@firstmate:8787",
            "https_proxy=http://firstmate:fm-t@firstmate:8787",
            "HTTP_PROXY=http://firstmate:fm-t@firstmate:8787",
            "http_proxy=http://firstmate:fm-t@firstmate:8787",
            "NO_PROXY=firstmate,localhost,127.0.0.1",
            "no_proxy=firstmate,localhost,127.0.0.1",
        ] {
            assert!(env.iter().any(|e| e == want), "{want} missing in {env:?}");
        }
        let env = proxy_env("http://[fd00::2]:8787/", "fm-t");
        assert!(env.contains(&"HTTP_PROXY=http://firstmate:fm-t@[fd00::2]:8787".to_string()));
        assert!(env.contains(&"NO_PROXY=fd00::2,localhost,127.0.0.1".to_string()));
        let env = proxy_env("http://172.18.0.1:8787", "fm-t");
        assert!(env.contains(&"NO_PROXY=172.18.0.1,localhost,127.0.0.1".to_string()));
    }

    #[test]
    fn paths_for_the_log_keep_no_query() {
        assert_eq!(rest_of("http://h:1/v1/messages?beta=true"), "/v1/messages");
        assert_eq!(
            rest_of("https://api.openai.com/v1/responses"),
            "/v1/responses"
        );
    }
}
