//! The HTTP side of the scripted API stand-ins (`anthropic`, `openai`), on the shared
//! hyper test server ([`super::http`]): it records every request (method, path,
//! headers, body) and hands the agent turns the next reply of a script. What a request
//! is and how it is answered is the API's ([`Api`]); the rest is here.
//!
//! An answer is written through a [`Writer`]: a JSON body whole ([`send_json`]), or a
//! `text/event-stream` ([`start_sse`]) whose events go out one by one as they are sent
//! ([`send_sse_event`]), each its own chunk.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

pub use super::http::BoxFuture;
use super::http::{Body, TestServer, full};

/// The largest request body accepted.
const MAX_BODY: usize = 64 * 1024 * 1024;

/// One scripted API: which requests are agent turns, and how each is answered.
pub trait Api: Send + Sync + 'static {
    type Reply: Clone + Send + 'static;
    /// What [`Api::route`] decided for a request.
    type Answer: Send + 'static;
    /// Decides the answer; an agent turn sets `req.scripted` and takes `next()`
    /// (`None` when the script is used up).
    fn route(req: &mut Request, next: &mut dyn FnMut() -> Option<Self::Reply>) -> Self::Answer;
    fn answer<'a>(
        w: &'a mut Writer,
        req: &'a Request,
        answer: Self::Answer,
        ids: &'a Ids,
    ) -> BoxFuture<'a, std::io::Result<()>>;
    /// A few words on a request body, for [`Stub::log`].
    fn describe(body: &Value) -> String;
}

/// Where an answer goes: its head (with a whole body, or the start of a stream), then
/// the stream's chunks.
pub struct Writer {
    head: Option<oneshot::Sender<hyper::Response<Body>>>,
    stream: Option<mpsc::Sender<Bytes>>,
}

impl Writer {
    fn respond(&mut self, resp: hyper::Response<Body>) -> std::io::Result<()> {
        let head = self
            .head
            .take()
            .ok_or_else(|| std::io::Error::other("answered already"))?;
        head.send(resp)
            .map_err(|_| std::io::Error::other("the client left"))
    }
}

/// Fresh ids for messages, calls and requests.
#[derive(Default)]
pub struct Ids(AtomicU64);

impl Ids {
    pub fn next(&self, prefix: &str) -> String {
        let n = self.0.fetch_add(1, Ordering::Relaxed) + 1;
        format!("{prefix}_01Stub{n:018}")
    }
}

/// One request as the stand-in received it.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// The request target, with its query string.
    pub path: String,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Whether it took a reply from the script.
    pub scripted: bool,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// The path without its query string.
    pub fn route(&self) -> &str {
        self.path.split('?').next().unwrap_or_default()
    }
}

struct State<R> {
    script: VecDeque<R>,
    requests: Vec<Request>,
}

struct Shared<R> {
    state: Mutex<State<R>>,
    changed: Condvar,
    ids: Ids,
}

/// A running stand-in of the API `A`; stops when dropped.
pub struct Stub<A: Api> {
    server: TestServer,
    shared: Arc<Shared<A::Reply>>,
}

impl<A: Api> Stub<A> {
    /// Starts a stand-in listening on `bind` (`"127.0.0.1:0"`, or a Docker network's
    /// gateway address for containers), following `script`.
    pub fn start(bind: &str, script: Vec<A::Reply>) -> Stub<A> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                script: script.into(),
                requests: Vec::new(),
            }),
            changed: Condvar::new(),
            ids: Ids::default(),
        });
        let sh = shared.clone();
        let server = TestServer::start_on(
            bind,
            Arc::new(move |req| Box::pin(serve::<A>(req, sh.clone()))),
        );
        Stub { server, shared }
    }

    pub fn port(&self) -> u16 {
        self.server.port()
    }

    /// Appends replies to the script.
    pub fn push(&self, replies: impl IntoIterator<Item = A::Reply>) {
        let mut st = self.shared.state.lock().expect("lock");
        st.script.extend(replies);
    }

    /// Drops the replies not used yet; how many there were.
    pub fn clear(&self) -> usize {
        let mut st = self.shared.state.lock().expect("lock");
        let n = st.script.len();
        st.script.clear();
        n
    }

    /// How many replies of the script are not used yet.
    pub fn remaining(&self) -> usize {
        self.shared.state.lock().expect("lock").script.len()
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<Request> {
        self.shared.state.lock().expect("lock").requests.clone()
    }

    /// The JSON bodies of the agent turns (the requests that took a scripted reply).
    pub fn turns(&self) -> Vec<Value> {
        self.requests()
            .iter()
            .filter(|r| r.scripted)
            .map(Request::json)
            .collect()
    }

    /// Waits until `n` agent turns have been received; false after `timeout`.
    pub fn wait_turns(&self, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut st = self.shared.state.lock().expect("lock");
        loop {
            if st.requests.iter().filter(|r| r.scripted).count() >= n {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            st = self.shared.changed.wait_timeout(st, left).expect("wait").0;
        }
    }

    /// A one-line-per-request log, for assertion messages.
    pub fn log(&self) -> String {
        self.requests()
            .iter()
            .map(|r| {
                format!(
                    "{} {} scripted={} {}\n",
                    r.method,
                    r.path,
                    r.scripted,
                    A::describe(&r.json())
                )
            })
            .collect()
    }
}

/// One request: read whole, routed, recorded, answered by a task of its own (a stream
/// goes on after the head is returned).
async fn serve<A: Api>(
    req: hyper::Request<hyper::body::Incoming>,
    shared: Arc<Shared<A::Reply>>,
) -> hyper::Response<Body> {
    let (parts, body) = req.into_parts();
    let body = match super::http::read_body(body, MAX_BODY).await {
        Ok(b) => b.to_vec(),
        Err(e) => return super::http::response(400, "text/plain", format!("stand-in: {e}")),
    };
    let mut req = Request {
        method: parts.method.to_string(),
        path: parts
            .uri
            .path_and_query()
            .map_or_else(|| "/".to_string(), |p| p.as_str().to_string()),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body,
        scripted: false,
    };
    let answer = A::route(&mut req, &mut || {
        shared.state.lock().expect("lock").script.pop_front()
    });
    {
        let mut st = shared.state.lock().expect("lock");
        st.requests.push(req.clone());
        shared.changed.notify_all();
    }
    let (head, answered) = oneshot::channel();
    tokio::spawn(async move {
        let mut w = Writer {
            head: Some(head),
            stream: None,
        };
        let _ = A::answer(&mut w, &req, answer, &shared.ids).await;
    });
    answered
        .await
        .unwrap_or_else(|_| super::http::response(500, "text/plain", "stand-in: no answer"))
}

pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        529 => "Overloaded",
        _ => "Status",
    }
}

/// Sends a JSON body whole, with `extra` headers.
pub async fn send_json(
    w: &mut Writer,
    status: u16,
    body: &Value,
    extra: &[(&str, &str)],
) -> std::io::Result<()> {
    let mut resp = hyper::Response::new(full(body.to_string()));
    *resp.status_mut() = hyper::StatusCode::from_u16(status).map_err(std::io::Error::other)?;
    let headers = resp.headers_mut();
    headers.insert(
        "content-type",
        hyper::header::HeaderValue::from_static("application/json"),
    );
    for (k, v) in extra {
        let name =
            hyper::header::HeaderName::from_bytes(k.as_bytes()).map_err(std::io::Error::other)?;
        headers.insert(
            name,
            hyper::header::HeaderValue::from_str(v).map_err(std::io::Error::other)?,
        );
    }
    w.respond(resp)
}

/// Starts a `text/event-stream` answer (chunked).
pub async fn start_sse(w: &mut Writer, extra: &[(&str, &str)]) -> std::io::Result<()> {
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let stream = tokio_stream_of(rx).map(|b| Ok::<_, std::io::Error>(Frame::data(b)));
    let mut resp = hyper::Response::new(BodyExt::boxed(StreamBody::new(stream)));
    let headers = resp.headers_mut();
    headers.insert(
        "content-type",
        hyper::header::HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    headers.insert(
        "cache-control",
        hyper::header::HeaderValue::from_static("no-cache"),
    );
    for (k, v) in extra {
        let name =
            hyper::header::HeaderName::from_bytes(k.as_bytes()).map_err(std::io::Error::other)?;
        headers.insert(
            name,
            hyper::header::HeaderValue::from_str(v).map_err(std::io::Error::other)?,
        );
    }
    w.stream = Some(tx);
    w.respond(resp)
}

fn tokio_stream_of(rx: mpsc::Receiver<Bytes>) -> impl futures_util::Stream<Item = Bytes> {
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) })
}

/// Sends one server-sent event (its own chunk: hyper writes each frame as it comes).
pub async fn send_sse_event(w: &mut Writer, name: &str, data: &Value) -> std::io::Result<()> {
    let tx = w
        .stream
        .as_ref()
        .ok_or_else(|| std::io::Error::other("no stream started"))?;
    tx.send(Bytes::from(format!("event: {name}\ndata: {data}\n\n")))
        .await
        .map_err(|_| std::io::Error::other("the client left"))
}

/// Ends a streamed answer.
pub async fn end_chunked(w: &mut Writer) -> std::io::Result<()> {
    w.stream = None;
    Ok(())
}

#[cfg(test)]
pub mod client {
    //! A plain TCP client for checking the stand-ins (no Docker needed).
    use std::io::{Read, Write};
    use std::time::Duration;

    pub fn roundtrip(port: u16, raw: &[u8]) -> String {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).ok();
        s.write_all(raw).expect("write");
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    }

    /// A `Connection: close` POST of a JSON body.
    pub fn post(port: u16, path: &str, body: &str) -> String {
        let raw = format!(
            "POST {path} HTTP/1.1\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        roundtrip(port, raw.as_bytes())
    }
}
