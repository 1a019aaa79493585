//! A small hyper test HTTP server for the stand-ins ([`super::git`], [`super::forge`], ...)
//! and the fake Discord's REST side: HTTP/1.1 on a free port of 127.0.0.1, on its own
//! thread with its own tokio runtime (two workers), so sync tests can use it; every
//! request goes to one handler. It stops when dropped.
//!
//! The handler gets the request as hyper gives it (its body streamed) with the peer's
//! address in its extensions ([`RemoteAddr`]), and answers with a boxed body ([`Body`]),
//! which may be streamed too. [`full`], [`json`] and [`read_body`] cover the usual cases.
//! A handler may take the connection over with `hyper::upgrade::on` (a CONNECT tunnel),
//! and [`serve`] HTTP on what it makes of it.
//!
//! ```ignore
//! let server = TestServer::start(|req| async move {
//!     json(200, &serde_json::json!({ "path": req.uri().path() }))
//! });
//! // server.url == "http://127.0.0.1:PORT"
//! ```

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full, Limited, combinators::BoxBody};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A response body: whole or streamed.
pub type Body = BoxBody<Bytes, std::io::Error>;

/// What answers every request of a [`TestServer`].
pub type Handler =
    Arc<dyn Fn(Request<Incoming>) -> BoxFuture<'static, Response<Body>> + Send + Sync>;

/// The peer of a request, in its extensions.
#[derive(Debug, Clone, Copy)]
pub struct RemoteAddr(pub SocketAddr);

/// A running test server; stops when dropped.
pub struct TestServer {
    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub url: String,
    pub addr: SocketAddr,
    runtime: tokio::runtime::Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestServer {
    /// Starts a server on a free port of 127.0.0.1 that answers every request with
    /// `handler`.
    pub fn start<F, Fut>(handler: F) -> TestServer
    where
        F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<Body>> + Send + 'static,
    {
        TestServer::start_boxed(Arc::new(move |req| Box::pin(handler(req))))
    }

    /// Like [`TestServer::start`], with the handler already boxed.
    pub fn start_boxed(handler: Handler) -> TestServer {
        TestServer::start_on("127.0.0.1:0", handler)
    }

    /// Like [`TestServer::start_boxed`], listening on `bind` (a Docker network's gateway
    /// address, for containers).
    pub fn start_on(bind: &str, handler: Handler) -> TestServer {
        let std_listener = std::net::TcpListener::bind(bind).expect("bind the test server");
        std_listener.set_nonblocking(true).expect("nonblocking");
        let addr = std_listener.local_addr().expect("local addr");
        let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let runtime = rt.handle().clone();
        let thread = std::thread::Builder::new()
            .name(format!("test-server-{}", addr.port()))
            .spawn(move || {
                rt.block_on(async move {
                    let listener =
                        tokio::net::TcpListener::from_std(std_listener).expect("tokio listener");
                    loop {
                        tokio::select! {
                            _ = &mut stop_rx => break,
                            accepted = listener.accept() => {
                                let Ok((stream, peer)) = accepted else { continue };
                                tokio::spawn(serve(stream, peer, handler.clone()));
                            }
                        }
                    }
                });
                // Open connections and running handlers are cancelled; a child process a
                // handler spawned with kill_on_drop is killed.
                rt.shutdown_timeout(Duration::from_secs(2));
            })
            .expect("spawn the test server thread");
        TestServer {
            url: format!("http://{addr}"),
            addr,
            runtime,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Runs `task` on the server's runtime until the server stops (another listener of
    /// the same stand-in, say).
    pub fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        self.runtime.spawn(task);
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Serves HTTP/1.1 on one connection from `peer` (a TCP stream, or a tunnel a handler
/// took over) until it closes.
pub async fn serve<I>(io: I, peer: SocketAddr, handler: Handler)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        req.extensions_mut().insert(RemoteAddr(peer));
        let answer = handler(req);
        async move { Ok::<_, Infallible>(answer.await) }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades()
        .await;
}

/// A whole body.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// An empty body.
pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}

/// A response of `status` with a body.
pub fn response(status: u16, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    Response::builder()
        .status(StatusCode::from_u16(status).expect("status code"))
        .header("content-type", content_type)
        .body(full(body))
        .expect("response")
}

/// A JSON response of `status`.
pub fn json(status: u16, value: &serde_json::Value) -> Response<Body> {
    response(
        status,
        "application/json; charset=utf-8",
        serde_json::to_vec(value).expect("JSON"),
    )
}

/// The whole request body, up to `limit` bytes; an error past it.
pub async fn read_body(body: Incoming, limit: usize) -> Result<Bytes, String> {
    Limited::new(body, limit)
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|e| e.to_string())
}

/// `%XX` escapes decoded (others left as they are); `+` is kept.
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Some(v) = std::str::from_utf8(&b[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
