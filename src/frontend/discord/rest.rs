//! The Discord REST calls of the front end, with Discord's rate limits honoured.
//!
//! serenity's own rate limiter sends every request to `https://discord.com`, whatever
//! base URL its `Http` is given (serenity 0.12.5 builds rate-limited requests without the
//! proxy), so with `discord.api_base_url` set it would either bypass the configured
//! address or (disabled) let 429s through. This client goes to `api_base_url` and does
//! what Discord's rate-limit documentation asks: it learns each route's bucket from
//! `X-RateLimit-Bucket`, waits before a request when the bucket's `X-RateLimit-Remaining`
//! is 0 until `X-RateLimit-Reset-After` has passed, sends one request of a bucket at a
//! time, and on a 429 waits `retry_after` (every route for a global one) and tries again.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::Mutex;
use tokio::time::Instant;
use tracing::{debug, warn};

/// The API version of every path.
const API: &str = "/api/v10";
/// Tries of one request that keeps getting 429s.
const MAX_TRIES: usize = 6;
/// The longest a 429 is waited out; longer, the call fails.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);
/// The longest one call may take, its waits for rate limits included.
const CALL_DEADLINE: Duration = Duration::from_secs(120);
/// The longest one HTTP request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum RestError {
    #[error(
        "cannot reach Discord at {base}: {}; check discord.api_base_url in the config and the network",
        network_reason(source)
    )]
    Network {
        base: String,
        source: reqwest::Error,
    },
    #[error("Discord answered {method} {route} with {status}: {message}")]
    Api {
        method: String,
        route: String,
        status: u16,
        /// Discord's JSON error code, when it gave one.
        code: Option<i64>,
        message: String,
    },
    #[error("Discord did not answer {method} {route} within {} (rate-limit waits included); the call was given up", humantime::format_duration(*.waited))]
    Timeout {
        method: String,
        route: String,
        waited: Duration,
    },
}

/// Why a request got no answer (connection refused, DNS, timeout, TLS), said once.
fn network_reason(e: &reqwest::Error) -> String {
    crate::error::network_failure(e).unwrap_or_else(|| crate::error::cause(e))
}

/// A file sent with a message.
pub struct File {
    pub name: String,
    pub data: Vec<u8>,
}

#[derive(Debug, Default)]
struct Bucket {
    remaining: Option<u64>,
    reset_at: Option<Instant>,
}

/// The REST client. Cheap to clone.
#[derive(Clone)]
pub struct Rest {
    inner: Arc<Inner>,
}

struct Inner {
    client: reqwest::Client,
    base: String,
    token: String,
    /// Route key (method and path with minor ids masked) to Discord's bucket id.
    buckets: std::sync::Mutex<HashMap<String, String>>,
    /// Bucket (or, until known, route) plus major parameters: its state, locked while a
    /// request of it is in flight.
    states: std::sync::Mutex<HashMap<String, Arc<Mutex<Bucket>>>>,
    global_until: std::sync::Mutex<Option<Instant>>,
    /// The longest one call may take, waits included.
    deadline: Duration,
}

/// The route key of a path: its major parameters (channel, guild, webhook) kept, the
/// other ids masked, as Discord buckets them.
pub fn route_key(method: &str, path: &str) -> String {
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let mut out = Vec::with_capacity(segs.len());
    for (i, s) in segs.iter().enumerate() {
        let prev = if i > 0 { segs[i - 1] } else { "" };
        let major = matches!(prev, "channels" | "guilds" | "webhooks")
            || (i >= 2 && segs[i - 2] == "webhooks");
        let is_id = s.chars().all(|c| c.is_ascii_digit()) && !s.is_empty();
        if prev == "interactions" || (prev != "webhooks" && i >= 2 && segs[i - 2] == "interactions")
        {
            out.push(":i");
        } else if is_id && !major {
            out.push(":id");
        } else {
            out.push(s);
        }
    }
    format!("{method} /{}", out.join("/"))
}

fn header_f64(h: &reqwest::header::HeaderMap, name: &str) -> Option<f64> {
    h.get(name)?.to_str().ok()?.trim().parse().ok()
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.clamp(0.0, 3600.0))
}

impl Rest {
    /// A client for `base_url` (`https://discord.com`, a REST proxy, or a test double).
    pub fn new(base_url: &str, token: &str) -> Rest {
        Rest::with_deadline(base_url, token, CALL_DEADLINE)
    }

    /// Like [`Rest::new`], with calls given up after `deadline` instead of
    /// [`CALL_DEADLINE`].
    pub fn with_deadline(base_url: &str, token: &str, deadline: Duration) -> Rest {
        let token = token.trim();
        let token = if token.starts_with("Bot ") {
            token.to_string()
        } else {
            format!("Bot {token}")
        };
        Rest {
            inner: Arc::new(Inner {
                client: reqwest::Client::builder()
                    .user_agent("DiscordBot (https://github.com/firstmate, 0.1) firstmate")
                    .connect_timeout(Duration::from_secs(10))
                    .timeout(REQUEST_TIMEOUT)
                    .build()
                    .unwrap_or_default(),
                base: base_url.trim_end_matches('/').to_string(),
                token,
                buckets: std::sync::Mutex::new(HashMap::new()),
                states: std::sync::Mutex::new(HashMap::new()),
                global_until: std::sync::Mutex::new(None),
                deadline,
            }),
        }
    }

    fn state_of(&self, route: &str, major: &str) -> Arc<Mutex<Bucket>> {
        let bucket = self
            .inner
            .buckets
            .lock()
            .expect("buckets")
            .get(route)
            .cloned()
            .unwrap_or_else(|| route.to_string());
        let key = format!("{bucket}|{major}");
        self.inner
            .states
            .lock()
            .expect("states")
            .entry(key)
            .or_default()
            .clone()
    }

    /// One call: JSON in, JSON out (`Value::Null` for 204), rate limits honoured, and
    /// given up (logged at WARN) after the client's deadline ([`CALL_DEADLINE`]).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        file: Option<&File>,
    ) -> Result<Value, RestError> {
        let deadline = self.inner.deadline;
        match tokio::time::timeout(deadline, self.call_inner(method.clone(), path, body, file))
            .await
        {
            Ok(r) => r,
            Err(_) => {
                let route = route_key(method.as_str(), path);
                warn!(%route, waited_ms = deadline.as_millis() as u64, "a Discord call took too long: given up");
                Err(RestError::Timeout {
                    method: method.to_string(),
                    route,
                    waited: deadline,
                })
            }
        }
    }

    async fn call_inner(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        file: Option<&File>,
    ) -> Result<Value, RestError> {
        let route = route_key(method.as_str(), path);
        // The major parameter is part of the route key already; buckets are shared
        // across routes, so it is kept apart too.
        let major = path.split('/').nth(2).unwrap_or_default().to_string();
        let mut tries = 0;
        loop {
            tries += 1;
            // A global limit stops every route.
            let global = *self.inner.global_until.lock().expect("global");
            if let Some(until) = global.filter(|u| *u > Instant::now()) {
                tokio::time::sleep_until(until).await;
            }
            let state = self.state_of(&route, &major);
            let mut b = state.lock().await;
            if b.remaining == Some(0)
                && let Some(at) = b.reset_at.filter(|at| *at > Instant::now())
            {
                debug!(%route, wait_ms = (at - Instant::now()).as_millis() as u64, "Discord bucket empty: waiting for its reset");
                tokio::time::sleep_until(at).await;
            }
            let url = format!("{}{API}{path}", self.inner.base);
            let mut req = self
                .inner
                .client
                .request(method.clone(), &url)
                .header("authorization", &self.inner.token);
            req = match (&body, file) {
                (Some(b), Some(f)) => {
                    let boundary = format!("firstmate{}", uuid::Uuid::new_v4().simple());
                    req.header(
                        "content-type",
                        format!("multipart/form-data; boundary={boundary}"),
                    )
                    .body(multipart(&boundary, b, f))
                }
                (Some(b), None) => req
                    .header("content-type", "application/json")
                    .body(b.to_string()),
                (None, _) => req,
            };
            let res = req.send().await.map_err(|source| RestError::Network {
                base: self.inner.base.clone(),
                source,
            })?;
            let status = res.status().as_u16();
            let h = res.headers().clone();
            if let Some(bucket) = h.get("x-ratelimit-bucket").and_then(|v| v.to_str().ok()) {
                // Later requests of this route wait on the bucket's own state.
                self.inner
                    .buckets
                    .lock()
                    .expect("buckets")
                    .insert(route.clone(), bucket.to_string());
            }
            if let Some(r) = header_f64(&h, "x-ratelimit-remaining") {
                b.remaining = Some(r as u64);
            }
            if let Some(r) = header_f64(&h, "x-ratelimit-reset-after") {
                b.reset_at = Some(Instant::now() + secs(r));
            }
            let text = res.text().await.unwrap_or_default();
            let json: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            if status == 429 {
                let after = json["retry_after"]
                    .as_f64()
                    .or_else(|| header_f64(&h, "retry-after"))
                    .unwrap_or(1.0);
                let wait = secs(after);
                let is_global = json["global"].as_bool().unwrap_or(false)
                    || h.get("x-ratelimit-global").is_some();
                warn!(%route, retry_after_ms = wait.as_millis() as u64, global = is_global, "Discord answered 429: waiting as it says");
                if tries >= MAX_TRIES || wait > MAX_RETRY_AFTER {
                    return Err(api_error(&method, &route, status, &json, &text));
                }
                if is_global {
                    *self.inner.global_until.lock().expect("global") = Some(Instant::now() + wait);
                } else {
                    b.remaining = Some(0);
                    b.reset_at = Some(Instant::now() + wait);
                }
                drop(b);
                if !is_global {
                    // The bucket's reset holds the next try.
                    continue;
                }
                tokio::time::sleep(wait).await;
                continue;
            }
            drop(b);
            if !(200..300).contains(&status) {
                return Err(api_error(&method, &route, status, &json, &text));
            }
            return Ok(json);
        }
    }

    pub async fn get(&self, path: &str) -> Result<Value, RestError> {
        self.call(reqwest::Method::GET, path, None, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Result<Value, RestError> {
        self.call(reqwest::Method::POST, path, Some(body), None)
            .await
    }

    pub async fn patch(&self, path: &str, body: Value) -> Result<Value, RestError> {
        self.call(reqwest::Method::PATCH, path, Some(body), None)
            .await
    }

    pub async fn put(&self, path: &str, body: Value) -> Result<Value, RestError> {
        self.call(reqwest::Method::PUT, path, Some(body), None)
            .await
    }

    /// Starts downloading an attachment from its CDN `url` (signed; no bot token goes
    /// with it): the body as a stream of bytes, never held whole. No overall deadline:
    /// a large file takes as long as it takes; the connection has one.
    pub async fn download(&self, url: &str) -> Result<crate::frontend::actions::Download, String> {
        use futures_util::TryStreamExt;
        let resp = self
            .inner
            .client
            .get(url)
            .timeout(Duration::from_secs(3600))
            .send()
            .await
            .map_err(|e| crate::error::cause(&e))?;
        if !resp.status().is_success() {
            return Err(format!("the CDN answered {}", resp.status()));
        }
        let stream = resp.bytes_stream().map_err(std::io::Error::other);
        Ok(Box::pin(tokio_util::io::StreamReader::new(stream)))
    }

    /// Posts a message in a channel (or thread): its id.
    pub async fn send_message(&self, channel: u64, body: Value) -> Result<u64, RestError> {
        let m = self
            .post(&format!("/channels/{channel}/messages"), body)
            .await?;
        Ok(id_of(&m))
    }

    pub async fn edit_message(
        &self,
        channel: u64,
        message: u64,
        body: Value,
    ) -> Result<u64, RestError> {
        let m = self
            .patch(&format!("/channels/{channel}/messages/{message}"), body)
            .await?;
        Ok(id_of(&m).max(message))
    }

    /// Answers an interaction (`type` and `data` as Discord documents them).
    pub async fn respond(
        &self,
        id: u64,
        token: &str,
        kind: u64,
        data: Option<Value>,
    ) -> Result<(), RestError> {
        let mut body = json!({"type": kind});
        if let Some(d) = data {
            body["data"] = d;
        }
        self.post(&format!("/interactions/{id}/{token}/callback"), body)
            .await
            .map(|_| ())
    }
}

/// A message body that mentions nobody, whatever its text says.
pub fn message(content: &str) -> Value {
    json!({"content": content, "allowed_mentions": {"parse": []}})
}

fn id_of(v: &Value) -> u64 {
    v["id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .or_else(|| v["id"].as_u64())
        .unwrap_or(0)
}

/// The id of a message or channel object.
pub fn object_id(v: &Value) -> u64 {
    id_of(v)
}

fn api_error(
    method: &reqwest::Method,
    route: &str,
    status: u16,
    json: &Value,
    text: &str,
) -> RestError {
    let message = json["message"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| text.chars().take(300).collect());
    let detail = if json["errors"].is_object() {
        format!("{message} ({})", json["errors"])
    } else {
        message
    };
    RestError::Api {
        method: method.to_string(),
        route: route.to_string(),
        status,
        code: json["code"].as_i64(),
        message: detail,
    }
}

/// A `multipart/form-data` body: `payload_json` and one file as `files[0]`.
fn multipart(boundary: &str, payload: &Value, file: &File) -> Vec<u8> {
    let mut payload = payload.clone();
    payload["attachments"] = json!([{"id": 0, "filename": file.name}]);
    let name = file.name.replace(['"', '\r', '\n'], "_");
    let mut out = Vec::new();
    out.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"payload_json\"\r\nContent-Type: application/json\r\n\r\n{payload}\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"files[0]\"; filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
        )
        .as_bytes(),
    );
    out.extend_from_slice(&file.data);
    out.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server that takes connections and never answers.
    fn silent_server() -> (String, std::net::TcpListener) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        (format!("http://{}", l.local_addr().expect("addr")), l)
    }

    #[tokio::test]
    async fn a_call_that_gets_no_answer_is_given_up_at_its_deadline() {
        let (base, _keep) = silent_server();
        let rest = Rest::with_deadline(&base, "t", Duration::from_millis(300));
        let started = std::time::Instant::now();
        let r = rest.get("/users/@me").await;
        assert!(
            matches!(r, Err(RestError::Timeout { ref route, .. }) if route == "GET /users/@me"),
            "{r:?}"
        );
        // A hang guard, not a timing assertion: without a deadline this never returns.
        assert!(started.elapsed() < Duration::from_secs(20));
        assert!(r.unwrap_err().to_string().contains("GET /users/@me"));
    }

    #[tokio::test]
    async fn a_wait_for_an_empty_bucket_counts_against_the_deadline() {
        let (base, _keep) = silent_server();
        let rest = Rest::with_deadline(&base, "t", Duration::from_millis(200));
        // The bucket is empty for an hour: the call gives up instead of waiting it out.
        {
            let state = rest.state_of("POST /channels/1/messages", "1");
            let mut b = state.lock().await;
            b.remaining = Some(0);
            b.reset_at = Some(Instant::now() + Duration::from_secs(3600));
        }
        let r = rest
            .post("/channels/1/messages", json!({"content": "x"}))
            .await;
        assert!(matches!(r, Err(RestError::Timeout { .. })), "{r:?}");
    }

    #[test]
    fn routes_keep_their_major_parameters_and_mask_the_rest() {
        assert_eq!(
            route_key("PATCH", "/channels/123/messages/456"),
            "PATCH /channels/123/messages/:id"
        );
        assert_eq!(
            route_key("POST", "/channels/123/messages"),
            "POST /channels/123/messages"
        );
        assert_eq!(
            route_key("PATCH", "/webhooks/77/tok/messages/@original"),
            "PATCH /webhooks/77/tok/messages/@original"
        );
        assert_eq!(
            route_key("POST", "/interactions/999/abc/callback"),
            "POST /interactions/:i/:i/callback"
        );
        assert_eq!(
            route_key("PUT", "/applications/5/guilds/6/commands"),
            "PUT /applications/:id/guilds/6/commands"
        );
    }

    #[test]
    fn a_file_goes_with_its_payload() {
        let body = multipart(
            "B",
            &json!({"content": "x"}),
            &File {
                name: "t.md".into(),
                data: b"hello".to_vec(),
            },
        );
        let text = String::from_utf8(body).expect("utf8");
        assert!(text.contains("name=\"payload_json\""));
        assert!(
            text.contains("\"attachments\":[{\"filename\":\"t.md\",\"id\":0}]"),
            "{text}"
        );
        assert!(text.contains("name=\"files[0]\"; filename=\"t.md\"\r\nContent-Type: application/octet-stream\r\n\r\nhello\r\n--B--"));
    }
}
