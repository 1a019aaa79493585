//! The HTTP side of the scripted API stand-ins (`anthropic`, `openai`): a small
//! HTTP/1.1 server on its own thread and tokio runtime (so sync tests can use it) that
//! records every request (method, path, headers, body) and hands the agent turns the
//! next reply of a script. What a request is and how it is answered is the API's
//! ([`Api`]); the rest is here.
//!
//! Request bodies may come with `Content-Length` or chunked. Responses with a body are
//! sent with `Content-Length`; streams are chunked, one server-sent event a chunk,
//! flushed one by one ([`send_sse_event`]).

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};

/// The largest request head or body accepted.
const MAX_BODY: usize = 64 * 1024 * 1024;
const MAX_HEAD: usize = 256 * 1024;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One scripted API: which requests are agent turns, and how each is answered.
pub trait Api: Send + Sync + 'static {
    type Reply: Clone + Send + 'static;
    /// What [`Api::route`] decided for a request.
    type Answer: Send + 'static;
    /// Decides the answer; an agent turn sets `req.scripted` and takes `next()`
    /// (`None` when the script is used up).
    fn route(req: &mut Request, next: &mut dyn FnMut() -> Option<Self::Reply>) -> Self::Answer;
    fn answer<'a>(
        w: &'a mut OwnedWriteHalf,
        req: &'a Request,
        answer: Self::Answer,
        ids: &'a Ids,
    ) -> BoxFuture<'a, std::io::Result<()>>;
    /// A few words on a request body, for [`Stub::log`].
    fn describe(body: &Value) -> String;
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
    addr: SocketAddr,
    shared: Arc<Shared<A::Reply>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl<A: Api> Stub<A> {
    /// Starts a stand-in listening on `bind` (`"127.0.0.1:0"`, or a Docker network's
    /// gateway address for containers), following `script`.
    pub fn start(bind: &str, script: Vec<A::Reply>) -> Stub<A> {
        let std_listener = std::net::TcpListener::bind(bind).expect("bind the API stand-in");
        std_listener.set_nonblocking(true).expect("nonblocking");
        let addr = std_listener.local_addr().expect("local addr");
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                script: script.into(),
                requests: Vec::new(),
            }),
            changed: Condvar::new(),
            ids: Ids::default(),
        });
        let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
        let sh = shared.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            rt.block_on(async move {
                let listener = TcpListener::from_std(std_listener).expect("tokio listener");
                loop {
                    tokio::select! {
                        _ = &mut stop_rx => break,
                        accepted = listener.accept() => {
                            if let Ok((stream, _)) = accepted {
                                tokio::spawn(serve::<A>(stream, sh.clone()));
                            }
                        }
                    }
                }
            });
        });
        Stub {
            addr,
            shared,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
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

impl<A: Api> Drop for Stub<A> {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn serve<A: Api>(stream: TcpStream, shared: Arc<Shared<A::Reply>>) {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    // Keep-alive: requests one after another until the client closes.
    while let Ok(Some(mut req)) = read_request(&mut reader, &mut write).await {
        let keep_alive = !req
            .header("connection")
            .is_some_and(|c| c.eq_ignore_ascii_case("close"));
        let answer = A::route(&mut req, &mut || {
            shared.state.lock().expect("lock").script.pop_front()
        });
        {
            let mut st = shared.state.lock().expect("lock");
            st.requests.push(req.clone());
            shared.changed.notify_all();
        }
        if A::answer(&mut write, &req, answer, &shared.ids)
            .await
            .is_err()
            || !keep_alive
        {
            break;
        }
    }
}

/// Reads a request body: chunked (trailers skipped), or of `content_length` bytes, or
/// none; at most 64 MiB.
pub async fn read_body<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    chunked: bool,
    content_length: Option<&str>,
) -> std::io::Result<Vec<u8>> {
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
    let mut body = Vec::new();
    let mut line = String::new();
    if chunked {
        loop {
            line.clear();
            reader.read_line(&mut line).await?;
            let size = line.trim().split(';').next().unwrap_or_default();
            let size = usize::from_str_radix(size, 16).map_err(|_| bad("bad chunk size"))?;
            if body.len() + size > MAX_BODY {
                return Err(bad("body too large"));
            }
            if size == 0 {
                // Trailers, up to the empty line.
                loop {
                    line.clear();
                    if reader.read_line(&mut line).await? == 0 || line.trim().is_empty() {
                        break;
                    }
                }
                break;
            }
            let start = body.len();
            body.resize(start + size, 0);
            reader.read_exact(&mut body[start..]).await?;
            line.clear();
            reader.read_line(&mut line).await?; // the CRLF after the chunk
        }
    } else if let Some(len) = content_length {
        let len: usize = len.trim().parse().map_err(|_| bad("bad content-length"))?;
        if len > MAX_BODY {
            return Err(bad("body too large"));
        }
        body.resize(len, 0);
        reader.read_exact(&mut body).await?;
    }
    Ok(body)
}

/// Reads one request; `None` at a clean end of the connection.
async fn read_request(
    reader: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
    write: &mut OwnedWriteHalf,
) -> std::io::Result<Option<Request>> {
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
    let mut line = String::new();
    if reader.read_line(&mut line).await? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let (Some(method), Some(path)) = (parts.next(), parts.next()) else {
        return Err(bad("bad request line"));
    };
    let (method, path) = (method.to_string(), path.to_string());
    let mut headers = Vec::new();
    let mut head_len = line.len();
    loop {
        line.clear();
        if reader.read_line(&mut line).await? == 0 {
            return Err(bad("end of stream in the headers"));
        }
        head_len += line.len();
        if head_len > MAX_HEAD {
            return Err(bad("headers too large"));
        }
        let l = line.trim_end_matches(['\r', '\n']);
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let mut req = Request {
        method,
        path,
        headers,
        body: Vec::new(),
        scripted: false,
    };
    if req
        .header("expect")
        .is_some_and(|e| e.eq_ignore_ascii_case("100-continue"))
    {
        write.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
    }
    let chunked = req
        .header("transfer-encoding")
        .is_some_and(|t| t.to_ascii_lowercase().contains("chunked"));
    let length = req.header("content-length").map(str::to_string);
    req.body = read_body(reader, chunked, length.as_deref()).await?;
    Ok(Some(req))
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

/// Sends a JSON body with `Content-Length`, and `extra` headers.
pub async fn send_json(
    w: &mut OwnedWriteHalf,
    status: u16,
    body: &Value,
    extra: &[(&str, &str)],
) -> std::io::Result<()> {
    let text = body.to_string();
    let mut head = format!(
        "HTTP/1.1 {status} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
        reason(status),
        text.len()
    );
    for (k, v) in extra {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    w.write_all(head.as_bytes()).await?;
    w.write_all(text.as_bytes()).await?;
    w.flush().await
}

/// Starts a chunked `text/event-stream` answer.
pub async fn start_sse(w: &mut OwnedWriteHalf, extra: &[(&str, &str)]) -> std::io::Result<()> {
    let mut head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\ncache-control: no-cache\r\ntransfer-encoding: chunked\r\n".to_string();
    for (k, v) in extra {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    w.write_all(head.as_bytes()).await
}

/// Sends one server-sent event as its own chunk, and flushes it.
pub async fn send_sse_event(
    w: &mut OwnedWriteHalf,
    name: &str,
    data: &Value,
) -> std::io::Result<()> {
    let data = format!("event: {name}\ndata: {data}\n\n");
    w.write_all(format!("{:x}\r\n{data}\r\n", data.len()).as_bytes())
        .await?;
    w.flush().await
}

/// Ends a chunked answer.
pub async fn end_chunked(w: &mut OwnedWriteHalf) -> std::io::Result<()> {
    w.write_all(b"0\r\n\r\n").await?;
    w.flush().await
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
