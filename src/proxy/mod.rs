//! `firstmate socket-proxy`: stands between the bot and the Docker socket and lets through
//! only what firstmate needs (SPEC section 6). Whoever holds the Docker socket is root on
//! the host; the bot holds this proxy instead.
//!
//! Each request goes through, in order:
//! 1. [`path::normalise`]: the path, strictly (no `..`, `//`, `%`-escapes; API 1.40+);
//! 2. [`path::route`]: method + path to a [`path::Route`], or 403 (the allow-list);
//! 3. the query keys the route may carry; the body, read up to a limit (413 past it) and
//!    within a time (408 and the connection closed past it), refused where the endpoint
//!    reads none;
//! 4. the body policy ([`policy`]) for creates, read as Docker's Go decoder reads it;
//!    what it leaves to the daemon is asked next: the volumes a container create mounts
//!    (managed), the networks it joins (managed by the create's instance, or named by
//!    `--allow-network`), the container whose network it shares (managed by that
//!    instance); the volume a volume create names, when it exists (managed);
//! 5. for an operation on a container, exec, volume or network: the object is resolved by
//!    asking Docker (so names and ID prefixes resolve as Docker resolves them), must carry
//!    `firstmate.managed=true`, and is then addressed upstream by its full ID;
//! 6. lists and events are asked with a forced label filter, and filtered again.
//!
//! Answers stream through: attach and exec start (the hijacked `Upgrade: tcp` connection,
//! copied both ways), logs with follow, events, wait. Each refusal is a 403 with a JSON
//! `{"message"}` naming the rule, and a warn line in the log (method, path, rule).
//!
//! This module talks HTTP with hyper directly: only `runtime.rs` imports bollard.

pub mod json;
pub mod path;
pub mod policy;
#[cfg(test)]
mod props;

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};

use path::{ContainerOp, Route, Target};
use policy::{LABEL_INSTANCE, LABEL_MANAGED, rule};

/// The largest request body the proxy reads (a container create is a few KiB).
pub const DEFAULT_BODY_LIMIT: usize = 1 << 20;
/// How long a request body may take to arrive, once the headers are in.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(15);
/// The largest list answer it filters (containers, volumes, networks).
const LIST_LIMIT: usize = 64 << 20;
/// A body declared over the limit is read and dropped up to this size before the 413.
const DRAIN_LIMIT: u64 = 64 << 20;
/// The longest event line it filters; a longer one is dropped.
const EVENT_LINE_LIMIT: usize = 1 << 20;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error(
        "--listen {0:?}: expected IP:PORT (e.g. 127.0.0.1:2375), tcp://IP:PORT or unix:///PATH"
    )]
    BadListen(String),
    #[error(
        "--upstream {0:?}: expected unix:///PATH (e.g. unix:///var/run/docker.sock) or tcp://HOST:PORT"
    )]
    BadUpstream(String),
    #[error(
        "cannot listen on {addr}: {source}; pick a free address for --listen, or stop what holds it"
    )]
    Listen { addr: String, source: io::Error },
}

/// A refusal: the rule that refused, and what in the request broke it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    pub status: u16,
    pub rule: &'static str,
    pub detail: String,
}

impl Denial {
    pub fn new(rule: &'static str, detail: impl Into<String>) -> Self {
        Denial {
            status: 403,
            rule,
            detail: detail.into(),
        }
    }

    /// The `message` of the JSON answer.
    pub fn message(&self) -> String {
        format!(
            "firstmate socket-proxy: denied: {} (rule: {})",
            self.detail, self.rule
        )
    }
}

/// Where the proxy listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl Listen {
    pub fn parse(s: &str) -> Result<Self, ProxyError> {
        if let Some(p) = s.strip_prefix("unix://") {
            return if p.starts_with('/') {
                Ok(Listen::Unix(PathBuf::from(p)))
            } else {
                Err(ProxyError::BadListen(s.into()))
            };
        }
        let addr = s.strip_prefix("tcp://").unwrap_or(s);
        addr.parse()
            .map(Listen::Tcp)
            .map_err(|_| ProxyError::BadListen(s.into()))
    }
}

/// The Docker daemon the proxy guards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upstream {
    Unix(PathBuf),
    Tcp(String),
}

impl Upstream {
    pub fn parse(s: &str) -> Result<Self, ProxyError> {
        if let Some(p) = s.strip_prefix("unix://") {
            if p.starts_with('/') {
                return Ok(Upstream::Unix(PathBuf::from(p)));
            }
        } else if let Some(a) = s.strip_prefix("tcp://")
            && let Some((host, port)) = a.rsplit_once(':')
            && !host.is_empty()
            && port.parse::<u16>().is_ok()
        {
            return Ok(Upstream::Tcp(a.to_string()));
        }
        Err(ProxyError::BadUpstream(s.into()))
    }

    async fn connect(&self) -> io::Result<Conn> {
        Ok(match self {
            Upstream::Unix(p) => Conn::Unix(UnixStream::connect(p).await?),
            Upstream::Tcp(a) => {
                let s = TcpStream::connect(a.as_str()).await?;
                let _ = s.set_nodelay(true);
                Conn::Tcp(s)
            }
        })
    }

    fn host_header(&self) -> &str {
        match self {
            Upstream::Unix(_) => "docker",
            Upstream::Tcp(a) => a,
        }
    }
}

impl std::fmt::Display for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Upstream::Unix(p) => write!(f, "unix://{}", p.display()),
            Upstream::Tcp(a) => write!(f, "tcp://{a}"),
        }
    }
}

/// A connection to the daemon.
enum Conn {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Unix(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tcp(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Unix(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tcp(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Unix(s) => Pin::new(s).poll_flush(cx),
            Conn::Tcp(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Unix(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tcp(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// How the proxy decides, beyond its fixed policy.
#[derive(Debug, Clone)]
pub struct Options {
    /// The largest request body it reads (413 past it).
    pub body_limit: usize,
    /// How long a body may take to arrive (408 past it).
    pub body_timeout: Duration,
    /// Networks a create may join although firstmate does not manage them (by name):
    /// the configured `docker.network`, `--allow-network`.
    pub allow_networks: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            body_limit: DEFAULT_BODY_LIMIT,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            allow_networks: Vec::new(),
        }
    }
}

/// Listens on `listen` and serves until `shutdown` resolves.
pub async fn run(
    listen: Listen,
    upstream: Upstream,
    options: Options,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ProxyError> {
    let proxy = Arc::new(Proxy::new(upstream, options));
    match listen {
        Listen::Tcp(addr) => {
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| ProxyError::Listen {
                    addr: addr.to_string(),
                    source,
                })?;
            let local = listener.local_addr().map_err(|source| ProxyError::Listen {
                addr: addr.to_string(),
                source,
            })?;
            tracing::info!(
                "firstmate socket-proxy listening on {local}, guarding {}",
                proxy.upstream
            );
            proxy.serve_tcp(listener, shutdown).await;
        }
        Listen::Unix(path) => {
            let err = |source| ProxyError::Listen {
                addr: format!("unix://{}", path.display()),
                source,
            };
            // A socket left by an earlier run is replaced; any other file is not.
            if let Ok(meta) = std::fs::symlink_metadata(&path) {
                use std::os::unix::fs::FileTypeExt;
                if meta.file_type().is_socket() {
                    std::fs::remove_file(&path).map_err(err)?;
                }
            }
            let listener = UnixListener::bind(&path).map_err(err)?;
            tracing::info!(
                "firstmate socket-proxy listening on unix://{}, guarding {}",
                path.display(),
                proxy.upstream
            );
            proxy.serve_unix(listener, shutdown).await;
            let _ = std::fs::remove_file(&path);
        }
    }
    Ok(())
}

/// Why a request got no forwarded answer.
enum Fail {
    Denied(Denial),
    /// Docker's own answer to a lookup (e.g. 404 No such container), passed on.
    Answer(Box<Response<Body>>),
    Upstream(String),
}

impl From<Denial> for Fail {
    fn from(d: Denial) -> Self {
        Fail::Denied(d)
    }
}

/// A 200 answer to a lookup: parsed, and as it came.
struct Found {
    value: serde_json::Value,
    head: hyper::http::response::Parts,
    bytes: Bytes,
}

impl Found {
    fn into_response(self) -> Response<Body> {
        let mut head = self.head;
        let names: Vec<HeaderName> = head
            .headers
            .keys()
            .filter(|k| hop_by_hop(k) || **k == header::CONTENT_LENGTH)
            .cloned()
            .collect();
        for k in names {
            head.headers.remove(k);
        }
        Response::from_parts(head, full(self.bytes))
    }
}

pub struct Proxy {
    upstream: Upstream,
    options: Options,
}

impl Proxy {
    pub fn new(upstream: Upstream, options: Options) -> Self {
        Proxy { upstream, options }
    }

    pub async fn serve_tcp(self: Arc<Self>, listener: TcpListener, shutdown: impl Future) {
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        let _ = stream.set_nodelay(true);
                        self.clone().spawn_connection(stream);
                    }
                    Err(e) => {
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
            }
        }
    }

    pub async fn serve_unix(self: Arc<Self>, listener: UnixListener, shutdown: impl Future) {
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => self.clone().spawn_connection(stream),
                    Err(e) => {
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
            }
        }
    }

    fn spawn_connection<S>(self: Arc<Self>, stream: S)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let proxy = self.clone();
                async move { Ok::<_, Infallible>(proxy.handle(req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(30))
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            if let Err(e) = conn.await {
                tracing::debug!("client connection ended: {e}");
            }
        });
    }

    /// One request: decided, forwarded or refused, and logged.
    pub async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        let method = req.method().clone();
        let shown = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| req.uri().to_string());
        match self.serve(req).await {
            Ok(res) => {
                tracing::debug!(%method, path = %shown, status = res.status().as_u16(), "allowed");
                res
            }
            Err(Fail::Answer(res)) => {
                let res = *res;
                tracing::debug!(%method, path = %shown, status = res.status().as_u16(), "answered by Docker's lookup");
                res
            }
            Err(Fail::Denied(d)) => {
                tracing::warn!(%method, path = %shown, rule = d.rule, "denied: {}", d.detail);
                let status = StatusCode::from_u16(d.status).unwrap_or(StatusCode::FORBIDDEN);
                let mut res = message(status, &d.message());
                if status == StatusCode::REQUEST_TIMEOUT {
                    // What is left of the body would be read as the next request.
                    res.headers_mut()
                        .insert(header::CONNECTION, HeaderValue::from_static("close"));
                }
                res
            }
            Err(Fail::Upstream(e)) => {
                tracing::error!(%method, path = %shown, "Docker did not answer: {e}");
                message(
                    StatusCode::BAD_GATEWAY,
                    &format!(
                        "firstmate socket-proxy: cannot reach the Docker daemon at {}: {e}",
                        self.upstream
                    ),
                )
            }
        }
    }

    async fn serve(&self, mut req: Request<Incoming>) -> Result<Response<Body>, Fail> {
        let target = path::normalise(req.uri().path())?;
        let route = path::route(req.method(), &target)?;
        let params = path::parse_query(req.uri().query())?;
        path::check_query(&route, &params)?;
        let upgrade = wants_upgrade(req.headers()).then(|| hyper::upgrade::on(&mut req));
        let (head, incoming) = req.into_parts();
        let req = &head;
        let body = self.read_body(incoming, req, route.takes_body()).await?;
        let v = target.version.as_deref();
        let raw_query = req.uri.query().map(str::to_string);
        let q = raw_query.as_deref();
        let label = format!("{LABEL_MANAGED}=true");

        match route {
            Route::Ping | Route::Version | Route::Info | Route::ImageInspect(_) => {
                self.forward(req, upgrade, &rebuilt(&target), q, body).await
            }
            Route::ContainerList => {
                let q = path::force_label(&params, &label)?;
                let res = self
                    .send_on(req, false, &rebuilt(&target), Some(&q), body)
                    .await?;
                filter_list(res, List::Array).await
            }
            Route::ContainerCreate => {
                let plan = policy::container_create(&body)?;
                for vol in &plan.volumes {
                    self.mountable_volume(vol).await?;
                }
                let instance = plan.instance.as_deref();
                for net in &plan.networks {
                    let answer = self.resolve("networks", net, rule::NETWORKS).await?;
                    policy::network_joinable(net, &answer, instance, &self.options.allow_networks)?;
                }
                for c in &plan.containers {
                    let answer = self
                        .resolve("containers", &format!("{c}/json"), rule::NAMESPACES)
                        .await?;
                    policy::container_shareable(c, &answer, instance)?;
                }
                self.forward(req, upgrade, &rebuilt(&target), q, body).await
            }
            Route::Container(id, ContainerOp::Inspect) => {
                // The check is the inspect itself: Docker's answer goes back as it came.
                let p = path::upstream_path(v, &["containers", &id, "json"]);
                let p = match q {
                    Some(q) if !q.is_empty() => format!("{p}?{q}"),
                    _ => p,
                };
                let (_, found) = self.inspect_managed(&p, &id).await?;
                Ok(found.into_response())
            }
            Route::Container(id, op) => {
                let full = self.managed_container(&id).await?;
                let p = match op.segment() {
                    Some(last) => path::upstream_path(v, &["containers", &full, last]),
                    None => path::upstream_path(v, &["containers", &full]),
                };
                self.forward(req, upgrade, &p, q, body).await
            }
            Route::ExecCreate(id) => {
                policy::exec_create(&body)?;
                let full = self.managed_container(&id).await?;
                let p = path::upstream_path(v, &["containers", &full, "exec"]);
                self.forward(req, upgrade, &p, q, body).await
            }
            Route::Exec(id, op) => {
                let full = self.managed_exec(&id).await?;
                let p = path::upstream_path(v, &["exec", &full, op.segment()]);
                self.forward(req, upgrade, &p, q, body).await
            }
            Route::Events => {
                let q = path::force_label(&params, &label)?;
                let res = self
                    .send_on(req, false, &rebuilt(&target), Some(&q), body)
                    .await?;
                Ok(filter_events(res))
            }
            Route::VolumeList => {
                let q = path::force_label(&params, &label)?;
                let res = self
                    .send_on(req, false, &rebuilt(&target), Some(&q), body)
                    .await?;
                filter_list(res, List::Volumes).await
            }
            Route::NetworkList => {
                let q = path::force_label(&params, &label)?;
                let res = self
                    .send_on(req, false, &rebuilt(&target), Some(&q), body)
                    .await?;
                filter_list(res, List::Array).await
            }
            Route::VolumeCreate => {
                if let Some(name) = policy::volume_create(&body)? {
                    match self.lookup(&format!("/volumes/{name}")).await {
                        Ok(found) => policy::volume_recreatable(&name, &found.value)?,
                        Err(Fail::Answer(res)) if res.status() == StatusCode::NOT_FOUND => {}
                        Err(e) => return Err(e),
                    }
                }
                self.forward(req, upgrade, &rebuilt(&target), q, body).await
            }
            Route::NetworkCreate => {
                policy::network_create(&body)?;
                self.forward(req, upgrade, &rebuilt(&target), q, body).await
            }
            Route::Volume(name, _) => {
                let full = self.managed_object("volumes", &name, "Name").await?;
                let p = path::upstream_path(v, &["volumes", &full]);
                self.forward(req, upgrade, &p, q, body).await
            }
            Route::NetworkConnect(id, disconnect) => {
                let ask = policy::network_connect(&body, disconnect)?;
                let net = self.resolve("networks", &id, rule::NETWORKS).await?;
                let instance = net["Labels"][LABEL_INSTANCE].as_str().map(str::to_string);
                if !policy::network_managed_by(&net, None) {
                    return Err(Denial::new(
                        rule::MANAGED,
                        format!("the network {id} does not carry {LABEL_MANAGED}=true"),
                    )
                    .into());
                }
                let (full, found) = self
                    .inspect_managed(
                        &format!("/containers/{}/json", ask.container),
                        &ask.container,
                    )
                    .await?;
                let theirs = found.value["Config"]["Labels"][LABEL_INSTANCE].as_str();
                if theirs != instance.as_deref() {
                    return Err(Denial::new(
                        rule::NETWORKS,
                        format!(
                            "the container {} and the network {id} belong to different instances ({LABEL_INSTANCE})",
                            ask.container
                        ),
                    )
                    .into());
                }
                let net_id = full_id(&net, "Id", &id)?;
                let last = if disconnect { "disconnect" } else { "connect" };
                let p = path::upstream_path(v, &["networks", &net_id, last]);
                let body = Bytes::from(ask.body(&full, disconnect));
                self.forward(req, upgrade, &p, q, body).await
            }
            Route::Network(id, _) => {
                let full = self.managed_object("networks", &id, "Id").await?;
                let p = path::upstream_path(v, &["networks", &full]);
                self.forward(req, upgrade, &p, q, body).await
            }
        }
    }

    /// The whole request body, never more than the limit nor later than the timeout;
    /// none where the route reads none.
    async fn read_body(
        &self,
        incoming: Incoming,
        req: &hyper::http::request::Parts,
        takes_body: bool,
    ) -> Result<Bytes, Fail> {
        let timeout = self.options.body_timeout;
        match tokio::time::timeout(timeout, self.read_body_now(incoming, req, takes_body)).await {
            Ok(r) => r,
            Err(_) => {
                let mut d = Denial::new(
                    rule::TIMEOUT,
                    format!(
                        "the request body did not arrive within {}",
                        humantime::format_duration(timeout)
                    ),
                );
                d.status = 408;
                Err(d.into())
            }
        }
    }

    async fn read_body_now(
        &self,
        incoming: Incoming,
        req: &hyper::http::request::Parts,
        takes_body: bool,
    ) -> Result<Bytes, Fail> {
        let limit = self.options.body_limit;
        let too_large = move || {
            let mut d = Denial::new(rule::SIZE, format!("the body is larger than {limit} bytes"));
            d.status = 413;
            d
        };
        let declared = req
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if let Some(n) = declared.filter(|&n| n > limit as u64) {
            // Read the body and drop it, frame by frame (bounded in size and time), so the
            // client reads the 413 instead of a connection reset in the middle of its write.
            if n <= DRAIN_LIMIT {
                let mut incoming = incoming;
                let drain = async { while let Some(Ok(_)) = incoming.frame().await {} };
                let _ = tokio::time::timeout(Duration::from_secs(5), drain).await;
            }
            return Err(too_large().into());
        }
        let body = Limited::new(incoming, limit)
            .collect()
            .await
            .map_err(|e| {
                if e.downcast_ref::<LengthLimitError>().is_some() {
                    Fail::Denied(too_large())
                } else {
                    Fail::Denied(Denial::new(
                        rule::BODY,
                        format!("cannot read the request body: {e}"),
                    ))
                }
            })?
            .to_bytes();
        if body.is_empty() {
            return Ok(body);
        }
        if !takes_body {
            return Err(Denial::new(
                rule::NO_BODY,
                format!(
                    "this endpoint reads no body, and the request carries {} bytes",
                    body.len()
                ),
            )
            .into());
        }
        let ctype = req
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let mime = ctype.split(';').next().unwrap_or("").trim();
        if !(mime.is_empty() || mime.eq_ignore_ascii_case("application/json")) {
            return Err(Denial::new(
                rule::BODY,
                format!("the body is {ctype:?}; only application/json is read"),
            )
            .into());
        }
        Ok(body)
    }

    /// Sends a request to the daemon on a new connection.
    async fn send(&self, req: Request<Full<Bytes>>) -> Result<Response<Incoming>, Fail> {
        let stream = self
            .upstream
            .connect()
            .await
            .map_err(|e| Fail::Upstream(e.to_string()))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| Fail::Upstream(e.to_string()))?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!("upstream connection ended: {e}");
            }
        });
        sender
            .send_request(req)
            .await
            .map_err(|e| Fail::Upstream(e.to_string()))
    }

    /// GET `path` from the daemon: the JSON of a 200, or Docker's answer as it is.
    async fn lookup(&self, path: &str) -> Result<Found, Fail> {
        let req = Request::get(path)
            .header(header::HOST, self.upstream.host_header())
            .body(Full::new(Bytes::new()))
            .map_err(|e| Fail::Upstream(e.to_string()))?;
        let res = self.send(req).await?;
        if res.status() != StatusCode::OK {
            return Err(Fail::Answer(Box::new(passthrough(res))));
        }
        let (head, body) = res.into_parts();
        let bytes = Limited::new(body, LIST_LIMIT)
            .collect()
            .await
            .map_err(|e| Fail::Upstream(format!("reading {path}: {e}")))?
            .to_bytes();
        let value = serde_json::from_slice(&bytes)
            .map_err(|e| Fail::Upstream(format!("Docker's answer to {path} is not JSON: {e}")))?;
        Ok(Found { value, head, bytes })
    }

    /// The full ID of a managed container named by `id` (ID, name or ID prefix).
    async fn managed_container(&self, id: &str) -> Result<String, Fail> {
        self.inspect_managed(&format!("/containers/{id}/json"), id)
            .await
            .map(|(full, _)| full)
    }

    /// Docker's inspect answer at `path` for the container `id`, when it is managed;
    /// with the container's full ID.
    async fn inspect_managed(&self, path: &str, id: &str) -> Result<(String, Found), Fail> {
        let found = self.lookup(path).await?;
        let v = &found.value;
        if !policy::labels_managed(&v["Config"]["Labels"]) {
            return Err(Denial::new(
                rule::MANAGED,
                format!("the container {id} does not carry {LABEL_MANAGED}=true"),
            )
            .into());
        }
        let full = full_id(v, "Id", id)?;
        Ok((full, found))
    }

    /// The ID of an exec whose container is managed.
    async fn managed_exec(&self, id: &str) -> Result<String, Fail> {
        let v = self.lookup(&format!("/exec/{id}/json")).await?.value;
        let container = v["ContainerID"].as_str().unwrap_or_default();
        if !policy::volume_name(container) {
            return Err(Fail::Upstream(format!(
                "Docker's answer for the exec {id} names no container"
            )));
        }
        self.managed_container(container)
            .await
            .map_err(|e| match e {
                Fail::Denied(_) => Denial::new(
                    rule::MANAGED,
                    format!(
                        "the exec {id} runs in a container that does not carry {LABEL_MANAGED}=true"
                    ),
                )
                .into(),
                other => other,
            })?;
        full_id(&v, "ID", id)
    }

    /// The name (or ID) of a managed volume or network.
    async fn managed_object(&self, kind: &str, id: &str, key: &str) -> Result<String, Fail> {
        let v = self.lookup(&format!("/{kind}/{id}")).await?.value;
        if !policy::labels_managed(&v["Labels"]) {
            return Err(Denial::new(
                rule::MANAGED,
                format!(
                    "the {} {id} does not carry {LABEL_MANAGED}=true",
                    &kind[..kind.len() - 1]
                ),
            )
            .into());
        }
        full_id(&v, key, id)
    }

    /// Docker's inspect of `/{kind}/{id}`, for a decision of the policy; an object that
    /// is not there is refused under `rule`.
    async fn resolve(
        &self,
        kind: &str,
        id: &str,
        rule: &'static str,
    ) -> Result<serde_json::Value, Fail> {
        match self.lookup(&format!("/{kind}/{id}")).await {
            Ok(found) => Ok(found.value),
            Err(Fail::Answer(res)) if res.status() == StatusCode::NOT_FOUND => Err(Denial::new(
                rule,
                format!(
                    "the {} {} does not exist",
                    &kind[..kind.len() - 1],
                    id.trim_end_matches("/json")
                ),
            )
            .into()),
            Err(e) => Err(e),
        }
    }

    /// A named volume a create mounts: it must exist and be managed.
    async fn mountable_volume(&self, name: &str) -> Result<(), Fail> {
        match self.managed_object("volumes", name, "Name").await {
            Ok(_) => Ok(()),
            Err(Fail::Answer(res)) if res.status() == StatusCode::NOT_FOUND => Err(Denial::new(
                rule::MANAGED,
                format!(
                    "the volume {name} does not exist; create it with the label {LABEL_MANAGED}=true first"
                ),
            )
            .into()),
            Err(Fail::Denied(_)) => Err(Denial::new(
                rule::MANAGED,
                format!("the volume {name} does not carry {LABEL_MANAGED}=true"),
            )
            .into()),
            Err(e) => Err(e),
        }
    }

    /// Sends the request on to the daemon at `path` (and `query`), with the client's
    /// headers; `upgrade` keeps the hijack headers.
    async fn send_on(
        &self,
        req: &hyper::http::request::Parts,
        upgrade: bool,
        path: &str,
        query: Option<&str>,
        body: Bytes,
    ) -> Result<Response<Incoming>, Fail> {
        let uri = match query {
            Some(q) if !q.is_empty() => format!("{path}?{q}"),
            _ => path.to_string(),
        };
        let mut up = Request::builder().method(req.method.clone()).uri(&uri);
        if let Some(h) = up.headers_mut() {
            copy_headers(&req.headers, h);
            h.insert(
                header::HOST,
                HeaderValue::from_str(self.upstream.host_header())
                    .unwrap_or(HeaderValue::from_static("docker")),
            );
            if upgrade {
                h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
                if let Some(u) = req.headers.get(header::UPGRADE) {
                    h.insert(header::UPGRADE, u.clone());
                }
            }
        }
        let up = up
            .body(Full::new(body))
            .map_err(|e| Fail::Upstream(format!("cannot build the request for {uri}: {e}")))?;
        self.send(up).await
    }

    /// Forwards the request, streaming the answer back; a hijacked connection (`101`) is
    /// tunnelled both ways.
    async fn forward(
        &self,
        req: &hyper::http::request::Parts,
        upgrade: Option<hyper::upgrade::OnUpgrade>,
        path: &str,
        query: Option<&str>,
        body: Bytes,
    ) -> Result<Response<Body>, Fail> {
        let mut res = self
            .send_on(req, upgrade.is_some(), path, query, body)
            .await?;
        if res.status() != StatusCode::SWITCHING_PROTOCOLS {
            return Ok(passthrough(res));
        }
        let Some(client_side) = upgrade else {
            return Err(Fail::Upstream(
                "Docker switched protocols on a request that did not ask to".into(),
            ));
        };
        let daemon_side = hyper::upgrade::on(&mut res);
        tokio::spawn(async move {
            match tokio::try_join!(client_side, daemon_side) {
                Ok((c, d)) => {
                    let mut c = TokioIo::new(c);
                    let mut d = TokioIo::new(d);
                    match tokio::io::copy_bidirectional_with_sizes(
                        &mut c,
                        &mut d,
                        64 << 10,
                        64 << 10,
                    )
                    .await
                    {
                        Ok((up, down)) => {
                            tracing::debug!("hijacked stream closed: {up} bytes up, {down} down")
                        }
                        Err(e) => tracing::debug!("hijacked stream ended: {e}"),
                    }
                }
                Err(e) => tracing::warn!("cannot hijack the connection: {e}"),
            }
        });
        let mut out = Response::builder().status(StatusCode::SWITCHING_PROTOCOLS);
        if let Some(h) = out.headers_mut() {
            for (k, v) in res.headers() {
                if *k == header::CONNECTION || *k == header::UPGRADE || !hop_by_hop(k) {
                    h.append(k.clone(), v.clone());
                }
            }
        }
        out.body(empty())
            .map_err(|e| Fail::Upstream(format!("cannot build the 101 answer: {e}")))
    }
}

/// The id Docker's answer gives under `key` (checked to be a plain name, since it goes
/// into a path).
fn full_id(v: &serde_json::Value, key: &str, asked: &str) -> Result<String, Fail> {
    match v[key].as_str() {
        Some(s) if policy::volume_name(s) => Ok(s.to_string()),
        _ => Err(Fail::Upstream(format!(
            "Docker's answer for {asked} has no usable {key}"
        ))),
    }
}

fn rebuilt(t: &Target) -> String {
    let parts: Vec<&str> = t.segments.iter().map(String::as_str).collect();
    path::upstream_path(t.version.as_deref(), &parts)
}

fn wants_upgrade(h: &HeaderMap) -> bool {
    h.contains_key(header::UPGRADE)
        && h.get_all(header::CONNECTION).iter().any(|v| {
            v.to_str().is_ok_and(|s| {
                s.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
        })
}

fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

/// The client's headers for upstream, without hop-by-hop ones, Host, Content-Length and
/// Expect (the body is re-sent whole, with its own length).
fn copy_headers(from: &HeaderMap, to: &mut HeaderMap) {
    for (k, v) in from {
        if !hop_by_hop(k)
            && *k != header::HOST
            && *k != header::CONTENT_LENGTH
            && *k != header::EXPECT
        {
            to.append(k.clone(), v.clone());
        }
    }
}

fn empty() -> Body {
    Full::new(Bytes::new())
        .map_err(|never: Infallible| match never {})
        .boxed_unsync()
}

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into())
        .map_err(|never: Infallible| match never {})
        .boxed_unsync()
}

fn message(status: StatusCode, text: &str) -> Response<Body> {
    let body = serde_json::json!({ "message": text }).to_string();
    let mut res = Response::new(full(body));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

/// Docker's answer as it is, streamed.
fn passthrough(res: Response<Incoming>) -> Response<Body> {
    let (mut parts, body) = res.into_parts();
    let names: Vec<HeaderName> = parts
        .headers
        .keys()
        .filter(|k| hop_by_hop(k))
        .cloned()
        .collect();
    for k in names {
        parts.headers.remove(k);
    }
    Response::from_parts(parts, body.map_err(BoxError::from).boxed_unsync())
}

enum List {
    /// A JSON array of objects with `Labels` (containers, networks).
    Array,
    /// `{"Volumes": [...], "Warnings": ...}`.
    Volumes,
}

/// A list answer with unmanaged objects taken out (the forced filter already did; this
/// makes sure).
async fn filter_list(res: Response<Incoming>, kind: List) -> Result<Response<Body>, Fail> {
    if res.status() != StatusCode::OK {
        return Ok(passthrough(res));
    }
    let (mut parts, body) = res.into_parts();
    let bytes = Limited::new(body, LIST_LIMIT)
        .collect()
        .await
        .map_err(|e| Fail::Upstream(format!("reading a list: {e}")))?
        .to_bytes();
    let mut v: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| Fail::Upstream(format!("a list answer is not JSON: {e}")))?;
    let list = match kind {
        List::Array => v.as_array_mut(),
        List::Volumes => v.get_mut("Volumes").and_then(|l| l.as_array_mut()),
    };
    if let Some(list) = list {
        list.retain(|o| policy::labels_managed(&o["Labels"]));
    }
    let out = serde_json::to_vec(&v).map_err(|e| Fail::Upstream(e.to_string()))?;
    for k in [
        header::CONTENT_LENGTH,
        header::TRANSFER_ENCODING,
        header::CONNECTION,
    ] {
        parts.headers.remove(k);
    }
    Ok(Response::from_parts(parts, full(out)))
}

/// The event stream, line by line, with events of unmanaged objects taken out.
fn filter_events(res: Response<Incoming>) -> Response<Body> {
    if res.status() != StatusCode::OK {
        return passthrough(res);
    }
    let (mut parts, body) = res.into_parts();
    for k in [
        header::CONTENT_LENGTH,
        header::TRANSFER_ENCODING,
        header::CONNECTION,
    ] {
        parts.headers.remove(k);
    }
    struct State {
        body: Incoming,
        buf: Vec<u8>,
        done: bool,
    }
    let state = State {
        body,
        buf: Vec::new(),
        done: false,
    };
    let stream = futures_util::stream::unfold(state, |mut st| async move {
        loop {
            if let Some(nl) = st.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = st.buf.drain(..=nl).collect();
                if event_managed(&line) {
                    return Some((Ok(Frame::data(Bytes::from(line))), st));
                }
                continue;
            }
            if st.done {
                return None;
            }
            match st.body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        st.buf.extend_from_slice(&data);
                        if st.buf.len() > EVENT_LINE_LIMIT && !st.buf.contains(&b'\n') {
                            tracing::warn!(
                                "dropping an event line longer than {EVENT_LINE_LIMIT} bytes"
                            );
                            st.buf.clear();
                        }
                    }
                }
                Some(Err(e)) => {
                    st.done = true;
                    return Some((Err(BoxError::from(e)), st));
                }
                None => st.done = true,
            }
        }
    });
    Response::from_parts(parts, BodyExt::boxed_unsync(StreamBody::new(stream)))
}

fn event_managed(line: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(line)
        .is_ok_and(|v| policy::labels_managed(&v["Actor"]["Attributes"]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_and_upstream_addresses_parse() {
        assert_eq!(
            Listen::parse("127.0.0.1:2375").unwrap(),
            Listen::Tcp("127.0.0.1:2375".parse().unwrap())
        );
        assert_eq!(
            Listen::parse("tcp://0.0.0.0:2375").unwrap(),
            Listen::Tcp("0.0.0.0:2375".parse().unwrap())
        );
        assert_eq!(
            Listen::parse("unix:///run/fm.sock").unwrap(),
            Listen::Unix("/run/fm.sock".into())
        );
        for bad in [
            "",
            "2375",
            "localhost",
            "unix://rel",
            "http://1.2.3.4:1",
            "1.2.3.4:99999",
        ] {
            assert!(Listen::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            Upstream::parse("unix:///var/run/docker.sock").unwrap(),
            Upstream::Unix("/var/run/docker.sock".into())
        );
        assert_eq!(
            Upstream::parse("tcp://docker:2375").unwrap(),
            Upstream::Tcp("docker:2375".into())
        );
        for bad in [
            "",
            "/var/run/docker.sock",
            "tcp://docker",
            "tcp://:1",
            "unix://x",
        ] {
            assert!(Upstream::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_refusal_names_its_rule() {
        let d = Denial::new(rule::PRIVILEGED, "HostConfig.Privileged is true");
        assert_eq!(
            d.message(),
            "firstmate socket-proxy: denied: HostConfig.Privileged is true (rule: no privileged containers)"
        );
    }

    #[test]
    fn upgrades_need_both_headers() {
        let mut h = HeaderMap::new();
        h.insert(header::UPGRADE, HeaderValue::from_static("tcp"));
        assert!(!wants_upgrade(&h));
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        assert!(wants_upgrade(&h));
    }

    /// Sends `request` on a connection of a proxy whose daemon is not there, and reads
    /// until the proxy closes it.
    async fn exchange(request: &[u8], body_timeout: Duration) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let proxy = Arc::new(Proxy::new(
            Upstream::Unix("/nonexistent/docker.sock".into()),
            Options {
                body_timeout,
                ..Options::default()
            },
        ));
        let (mut client, server) = tokio::io::duplex(64 << 10);
        proxy.spawn_connection(server);
        client.write_all(request).await.unwrap();
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(20), client.read_to_end(&mut out))
            .await
            .expect("the proxy did not close the connection")
            .unwrap();
        String::from_utf8_lossy(&out).into_owned()
    }

    #[tokio::test]
    async fn a_stalled_body_is_answered_408_and_the_connection_closed() {
        let t = std::time::Instant::now();
        let out = exchange(
            b"POST /containers/create HTTP/1.1\r\nHost: d\r\nContent-Length: 100\r\n\r\n{\"Ima",
            Duration::from_millis(300),
        )
        .await;
        assert!(out.starts_with("HTTP/1.1 408"), "{out}");
        assert!(
            out.to_ascii_lowercase().contains("connection: close"),
            "{out}"
        );
        assert!(out.contains("(rule: body read timeout)"), "{out}");
        assert!(t.elapsed() >= Duration::from_millis(300));
        // A chunked body that stops coming is timed out too.
        let out = exchange(
            b"POST /volumes/create HTTP/1.1\r\nHost: d\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"Nam\r\n",
            Duration::from_millis(300),
        )
        .await;
        assert!(out.starts_with("HTTP/1.1 408"), "{out}");
        // A body that arrives in time is decided on (here: refused by the policy).
        let body = br#"{"Image":"x","Labels":{"firstmate.managed":"true"},"HostConfig":{"Privileged":true}}"#;
        let mut req = format!(
            "POST /containers/create HTTP/1.1\r\nHost: d\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        req.extend_from_slice(body);
        let out = exchange(&req, Duration::from_millis(300)).await;
        assert!(out.starts_with("HTTP/1.1 403"), "{out}");
    }

    #[test]
    fn only_managed_events_pass() {
        assert!(event_managed(
            br#"{"Type":"container","Actor":{"ID":"x","Attributes":{"firstmate.managed":"true"}}}"#
        ));
        assert!(!event_managed(
            br#"{"Type":"container","Actor":{"ID":"x","Attributes":{}}}"#
        ));
        assert!(!event_managed(b"not json"));
    }
}
