//! The egress proxy (SPEC section 11): workers reach the hosts of `[egress] allow`, and
//! nothing else, through the gateway's listener, as an HTTP proxy (`HTTPS_PROXY`,
//! `HTTP_PROXY`). `CONNECT host:port` opens a tunnel; an absolute-URI request
//! (`GET http://host/path`) is forwarded as plain HTTP.
//!
//! A request names its session with `Proxy-Authorization: Basic base64(user:TOKEN)`, the
//! session's gateway token (unknown, revoked or of an ended session: 407). The host must
//! match `[egress] allow` (on port 443 or 80, unless the pattern names a port); it is
//! resolved once, refused when any address it resolves to is not public (loopback,
//! private, link-local, shared, multicast, and the IPv6 forms that embed them), and the
//! connection goes to an address of that answer, never to a second lookup (DNS
//! rebinding). Each refusal is a 403 with its reason, logged, counted for `/metrics`, and
//! told to the session's thread once per host.
//!
//! The pure parts (patterns, the address classification, the target of a request, the
//! `Proxy-Authorization` decoding) are tested below; the integration test
//! `tests/integration/egress.rs` drives the rest through the real binary.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use dashmap::DashMap;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tracing::{debug, info, warn};

use super::{Body, GatewayReport, Inner, full, lookup};
pub use crate::allowlist::Allowlist;
use crate::allowlist::{DEFAULT_PORTS, normalize_host};

/// How long a name may take to resolve, and a connection to open.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The copy buffer of a tunnel, each way.
const TUNNEL_BUFFER: usize = 64 * 1024;

/// What kind of non-public address `ip` is, or None for a public one.
pub fn non_public(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => non_public_v4(v4),
        IpAddr::V6(v6) => non_public_v6(v6),
    }
}

fn non_public_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, _, _] = ip.octets();
    Some(match (a, b) {
        (0, _) => "\"this network\" (0.0.0.0/8)",
        (127, _) => "loopback",
        (10, _) | (192, 168) => "private",
        (172, b) if (16..32).contains(&b) => "private",
        (169, 254) => "link-local",
        (100, b) if (64..128).contains(&b) => "shared (carrier-grade NAT, 100.64.0.0/10)",
        (224..=239, _) => "multicast",
        _ if ip.is_broadcast() => "broadcast",
        (240..=255, _) => "reserved (240.0.0.0/4)",
        _ => return None,
    })
}

fn non_public_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    if ip.is_unspecified() {
        return Some("unspecified");
    }
    if ip.is_loopback() {
        return Some("loopback");
    }
    // Forms that carry an IPv4 address: judged by it.
    let v4 = |hi: u16, lo: u16| Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8);
    if let Some(v4) = ip.to_ipv4_mapped() {
        return non_public_v4(v4);
    }
    if s[..6] == [0; 6] {
        // IPv4-compatible (::a.b.c.d, deprecated).
        return non_public_v4(v4(s[6], s[7]));
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        // NAT64, the well-known prefix 64:ff9b::/96.
        return non_public_v4(v4(s[6], s[7]));
    }
    if s[0] == 0x2002 {
        // 6to4: 2002:AABB:CCDD::/48 routes to a.b.c.d.
        return non_public_v4(v4(s[1], s[2]));
    }
    Some(match s[0] {
        x if x & 0xffc0 == 0xfe80 => "link-local",
        x if x & 0xffc0 == 0xfec0 => "site-local",
        x if x & 0xfe00 == 0xfc00 => "unique local",
        x if x & 0xff00 == 0xff00 => "multicast",
        _ => return None,
    })
}

// --- requests -------------------------------------------------------------------------

/// Whether the gateway should treat a request as a proxy request: a CONNECT, or a
/// request whose target is an absolute URI (`GET http://host/path`).
pub(super) fn is_proxy_request<B>(req: &Request<B>) -> bool {
    req.method() == Method::CONNECT || req.uri().scheme().is_some()
}

/// Where a proxy request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    /// As the client wrote it, normalized (lowercase, no brackets).
    host: String,
    port: u16,
    tunnel: bool,
}

impl Target {
    fn of(method: &Method, uri: &Uri) -> Result<Target, String> {
        let tunnel = method == Method::CONNECT;
        if !tunnel {
            match uri.scheme_str() {
                Some("http") => {}
                Some("https") => {
                    return Err(
                        "an https:// URL goes through the proxy as CONNECT host:443 (set HTTPS_PROXY)"
                            .into(),
                    );
                }
                other => return Err(format!("the scheme {other:?} is not proxied: only http")),
            }
        }
        let host = uri
            .host()
            .map(normalize_host)
            .filter(|h| !h.is_empty())
            .ok_or_else(|| "the request names no host".to_string())?;
        let port = match (uri.port_u16(), tunnel) {
            (Some(p), _) => p,
            (None, false) => 80,
            (None, true) => return Err("CONNECT needs host:port".into()),
        };
        Ok(Target { host, port, tunnel })
    }
}

/// The token of `Proxy-Authorization: Basic base64(user:TOKEN)`.
fn proxy_token(headers: &HeaderMap) -> Option<String> {
    let v = headers.get("proxy-authorization")?.to_str().ok()?;
    let (scheme, b64) = v.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(base64_decode(b64.trim())?).ok()?;
    let (_, token) = decoded.split_once(':')?;
    (!token.is_empty()).then(|| token.to_string())
}

/// Standard base64 (padding optional).
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let s = s.trim_end_matches('=');
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// Headers of one hop, and the proxy's own, which never travel on.
fn is_hop_header(name: &HeaderName, listed: &HashSet<String>) -> bool {
    let n = name.as_str();
    matches!(
        n,
        "connection" | "keep-alive" | "te" | "trailer" | "transfer-encoding" | "upgrade"
    ) || n.starts_with("proxy-")
        || listed.contains(n)
}

/// The headers a request or response carries on to the next hop.
fn next_hop_headers(headers: &HeaderMap) -> HeaderMap {
    // Names listed in Connection belong to this hop too.
    let listed: HashSet<String> = headers
        .get_all("connection")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|n| n.trim().to_ascii_lowercase())
        .collect();
    let mut out = HeaderMap::new();
    for (name, value) in headers {
        if !is_hop_header(name, &listed) {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

// --- decisions ------------------------------------------------------------------------

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Refusal {
    NotAllowed,
    Private { ip: IpAddr, kind: &'static str },
    Unresolved(String),
}

impl Refusal {
    fn outcome(&self) -> Outcome {
        match self {
            Refusal::NotAllowed => Outcome::NotAllowed,
            Refusal::Private { .. } => Outcome::Private,
            Refusal::Unresolved(_) => Outcome::Unresolved,
        }
    }

    fn reason(&self, t: &Target) -> String {
        match self {
            Refusal::NotAllowed if DEFAULT_PORTS.contains(&t.port) => {
                "not on [egress] allow (bot.toml)".to_string()
            }
            Refusal::NotAllowed => format!(
                "not on [egress] allow (bot.toml); a pattern without a port allows 443 and 80 only, \
                 \"{}:{}\" allows port {}",
                t.host, t.port, t.port
            ),
            Refusal::Private { ip, kind } => {
                format!("it resolves to {ip}, a {kind} address, which workers never reach")
            }
            Refusal::Unresolved(e) => format!("cannot resolve it ({e})"),
        }
    }
}

/// Resolves an allowed target once; its addresses, all public, or why not.
async fn resolve(t: &Target) -> Result<Vec<SocketAddr>, Refusal> {
    let addrs: Vec<SocketAddr> = match t.host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, t.port)],
        Err(_) => {
            match tokio::time::timeout(
                RESOLVE_TIMEOUT,
                tokio::net::lookup_host((t.host.as_str(), t.port)),
            )
            .await
            {
                Ok(Ok(a)) => a.collect(),
                Ok(Err(e)) => return Err(Refusal::Unresolved(e.to_string())),
                Err(_) => {
                    return Err(Refusal::Unresolved(format!(
                        "no answer within {}s",
                        RESOLVE_TIMEOUT.as_secs()
                    )));
                }
            }
        }
    };
    if addrs.is_empty() {
        return Err(Refusal::Unresolved("no address".into()));
    }
    if let Some((ip, kind)) = addrs
        .iter()
        .find_map(|a| non_public(a.ip()).map(|k| (a.ip(), k)))
    {
        return Err(Refusal::Private { ip, kind });
    }
    Ok(addrs)
}

/// Connects to the first of `addrs` that answers.
async fn connect(addrs: &[SocketAddr]) -> std::io::Result<TcpStream> {
    let mut last = std::io::Error::other("no address");
    for a in addrs {
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(a)).await {
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Ok(Err(e)) => last = e,
            Err(_) => {
                last = std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("{a} did not answer within {}s", CONNECT_TIMEOUT.as_secs()),
                )
            }
        }
    }
    Err(last)
}

// --- counters and notices -------------------------------------------------------------

/// What became of an egress request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Allowed,
    NotAllowed,
    Private,
    Unresolved,
    /// No token, or the token of no live session (407).
    BadToken,
}

impl Outcome {
    pub const ALL: [Outcome; 5] = [
        Outcome::Allowed,
        Outcome::NotAllowed,
        Outcome::Private,
        Outcome::Unresolved,
        Outcome::BadToken,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allowed => "allowed",
            Outcome::NotAllowed => "not_allowed",
            Outcome::Private => "private",
            Outcome::Unresolved => "unresolved",
            Outcome::BadToken => "bad_token",
        }
    }
}

/// Egress requests by outcome, since this process started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EgressCounts {
    pub by_outcome: [u64; 5],
}

impl EgressCounts {
    pub fn get(&self, o: Outcome) -> u64 {
        self.by_outcome[o as usize]
    }
}

/// The egress proxy's state in the gateway.
pub(super) struct Egress {
    allow: Allowlist,
    counts: [AtomicU64; 5],
    /// The hosts each session's thread was told about.
    told: DashMap<String, HashSet<String>>,
}

impl Egress {
    pub(super) fn new(allow: Allowlist) -> Egress {
        Egress {
            allow,
            counts: Default::default(),
            told: DashMap::new(),
        }
    }

    fn count(&self, o: Outcome) {
        self.counts[o as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn counts(&self) -> EgressCounts {
        let mut c = EgressCounts::default();
        for (i, n) in self.counts.iter().enumerate() {
            c.by_outcome[i] = n.load(Ordering::Relaxed);
        }
        c
    }

    /// Whether this session's thread hears about `host` now (the first time).
    fn first_time(&self, session: &str, host: &str) -> bool {
        self.told
            .entry(session.to_string())
            .or_default()
            .insert(host.to_string())
    }

    /// Forgets what a session was told (its tokens were revoked).
    pub(super) fn forget(&self, session: &str) {
        self.told.remove(session);
    }
}

// --- serving --------------------------------------------------------------------------

fn plain(status: StatusCode, text: String) -> Response<Body> {
    let mut resp = Response::new(full(Bytes::from(format!(
        "firstmate egress proxy: {text}\n"
    ))));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

fn auth_required(text: &str) -> Response<Body> {
    let mut resp = plain(StatusCode::PROXY_AUTHENTICATION_REQUIRED, text.to_string());
    resp.headers_mut().insert(
        hyper::header::PROXY_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"firstmate egress\""),
    );
    resp
}

/// Serves one proxy request (see [`is_proxy_request`]).
pub(super) async fn handle(inner: Arc<Inner>, req: Request<Incoming>) -> Response<Body> {
    let egress = &inner.egress;
    let target = match Target::of(req.method(), req.uri()) {
        Ok(t) => t,
        Err(e) => return plain(StatusCode::BAD_REQUEST, e),
    };
    // Who is asking. The token is never logged.
    let Some(token) = proxy_token(req.headers()) else {
        egress.count(Outcome::BadToken);
        debug!(host = %target.host, "egress: no Proxy-Authorization");
        return auth_required(
            "no session token: send Proxy-Authorization: Basic base64(firstmate:TOKEN), as \
             HTTPS_PROXY=http://firstmate:TOKEN@... does",
        );
    };
    let record = match lookup(&inner, &token).await {
        Ok(Some((r, _))) => r,
        Ok(None) => {
            egress.count(Outcome::BadToken);
            warn!(host = %target.host, "egress: refused an unknown or revoked token");
            return auth_required("unknown or revoked session token");
        }
        Err(e) => {
            warn!(error = %e, "egress: token lookup failed");
            return plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "the gateway cannot read its database".into(),
            );
        }
    };
    let session = record.session_id;

    // Where it may go.
    let decided = if egress.allow.permits(&target.host, target.port) {
        resolve(&target).await
    } else {
        Err(Refusal::NotAllowed)
    };
    let addrs = match decided {
        Ok(a) => a,
        Err(refusal) => {
            egress.count(refusal.outcome());
            let reason = refusal.reason(&target);
            info!(%session, host = %target.host, port = target.port, %reason, "egress: refused");
            if egress.first_time(&session, &target.host) {
                let _ = inner.reports.send(GatewayReport::Notice {
                    session: session.clone(),
                    text: format!("egress to {} refused: {reason}", target.host),
                });
            }
            return plain(
                StatusCode::FORBIDDEN,
                format!("{}:{} refused: {reason}", target.host, target.port),
            );
        }
    };
    egress.count(Outcome::Allowed);
    let stream = match connect(&addrs).await {
        Ok(s) => s,
        Err(e) => {
            info!(%session, host = %target.host, port = target.port, error = %e, "egress: cannot connect");
            return plain(
                StatusCode::BAD_GATEWAY,
                format!("cannot connect to {}:{}: {e}", target.host, target.port),
            );
        }
    };
    let peer = stream.peer_addr().ok();
    debug!(%session, host = %target.host, port = target.port, addr = ?peer, tunnel = target.tunnel, "egress: allowed");
    if target.tunnel {
        tunnel(req, stream, session, target)
    } else {
        forward(req, stream, &session, &target).await
    }
}

/// Answers a CONNECT with 200 and copies both ways once the client's side is handed over.
fn tunnel(
    req: Request<Incoming>,
    mut stream: TcpStream,
    session: String,
    target: Target,
) -> Response<Body> {
    tokio::spawn(async move {
        match hyper::upgrade::on(req).await {
            Ok(upgraded) => {
                let mut client = TokioIo::new(upgraded);
                match tokio::io::copy_bidirectional_with_sizes(
                    &mut client,
                    &mut stream,
                    TUNNEL_BUFFER,
                    TUNNEL_BUFFER,
                )
                .await
                {
                    Ok((up, down)) => {
                        debug!(%session, host = %target.host, up, down, "egress: tunnel closed")
                    }
                    Err(e) => {
                        debug!(%session, host = %target.host, error = %e, "egress: tunnel broke")
                    }
                }
            }
            Err(e) => debug!(%session, error = %e, "egress: the client left before the tunnel"),
        }
    });
    Response::new(full(Bytes::new()))
}

/// Forwards a plain-HTTP request over `stream` and relays the answer as it comes.
async fn forward(
    req: Request<Incoming>,
    stream: TcpStream,
    session: &str,
    target: &Target,
) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let mut out = Request::builder().method(parts.method).uri(path);
    let headers = next_hop_headers(&parts.headers);
    let has_host = headers.contains_key(hyper::header::HOST);
    if let Some(h) = out.headers_mut() {
        *h = headers;
        if !has_host
            && let Some(a) = parts.uri.authority()
            && let Ok(v) = HeaderValue::from_str(a.as_str())
        {
            h.insert(hyper::header::HOST, v);
        }
    }
    let out = match out.body(body) {
        Ok(r) => r,
        Err(e) => return plain(StatusCode::BAD_REQUEST, format!("cannot forward it: {e}")),
    };
    let (mut sender, conn) = match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
    {
        Ok(x) => x,
        Err(e) => {
            return plain(
                StatusCode::BAD_GATEWAY,
                format!("cannot talk to {}: {e}", target.host),
            );
        }
    };
    let s = session.to_string();
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            debug!(session = %s, error = %e, "egress: upstream connection ended");
        }
    });
    let resp = match sender.send_request(out).await {
        Ok(r) => r,
        Err(e) => {
            info!(%session, host = %target.host, error = %e, "egress: the upstream failed");
            return plain(
                StatusCode::BAD_GATEWAY,
                format!("{}:{} did not answer: {e}", target.host, target.port),
            );
        }
    };
    let (mut parts, body) = resp.into_parts();
    parts.headers = next_hop_headers(&parts.headers);
    Response::from_parts(parts, body.map_err(std::io::Error::other).boxed())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_non_public_range_is_refused() {
        for (ip, kind) in [
            ("0.0.0.0", "this network"),
            ("0.1.2.3", "this network"),
            ("127.0.0.1", "loopback"),
            ("127.255.0.9", "loopback"),
            ("10.0.0.1", "private"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("192.168.1.1", "private"),
            ("169.254.169.254", "link-local"),
            ("100.64.0.1", "shared"),
            ("100.127.255.254", "shared"),
            ("224.0.0.1", "multicast"),
            ("239.255.255.250", "multicast"),
            ("255.255.255.255", "broadcast"),
            ("240.0.0.1", "reserved"),
            ("::", "unspecified"),
            ("::1", "loopback"),
            ("fe80::1", "link-local"),
            ("febf::1", "link-local"),
            ("fc00::1", "unique local"),
            ("fd12:3456::1", "unique local"),
            ("fec0::1", "site-local"),
            ("ff02::1", "multicast"),
            // IPv4 inside IPv6: mapped, compatible, NAT64, 6to4.
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:169.254.169.254", "link-local"),
            ("::ffff:10.1.2.3", "private"),
            ("::10.1.2.3", "private"),
            ("::127.0.0.1", "loopback"),
            ("64:ff9b::a9fe:a9fe", "link-local"),
            ("64:ff9b::192.168.0.1", "private"),
            ("2002:7f00:1::", "loopback"),
            ("2002:c0a8:101::1", "private"),
        ] {
            let addr: IpAddr = ip.parse().expect(ip);
            let got = non_public(addr);
            assert!(got.is_some_and(|k| k.contains(kind)), "{ip}: {got:?}");
        }
    }

    #[test]
    fn public_and_documentation_addresses_pass() {
        for ip in [
            "203.0.113.7",
            "198.51.100.1",
            "192.0.2.1",
            "8.8.8.8",
            "172.15.255.255",
            "172.32.0.1",
            "100.63.255.255",
            "100.128.0.1",
            "169.253.1.1",
            "2001:db8::1",
            "2606:4700:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            let addr: IpAddr = ip.parse().expect(ip);
            assert_eq!(non_public(addr), None, "{ip}");
        }
    }

    #[test]
    fn targets_of_connect_and_absolute_uris() {
        let t = |m: Method, u: &str| Target::of(&m, &u.parse::<Uri>().expect(u));
        assert_eq!(
            t(Method::CONNECT, "PyPI.org:443"),
            Ok(Target {
                host: "pypi.org".into(),
                port: 443,
                tunnel: true
            })
        );
        assert_eq!(
            t(Method::GET, "http://203.0.113.7/simple/?x=1"),
            Ok(Target {
                host: "203.0.113.7".into(),
                port: 80,
                tunnel: false
            })
        );
        assert_eq!(
            t(Method::GET, "http://[2001:db8::1]:8080/"),
            Ok(Target {
                host: "2001:db8::1".into(),
                port: 8080,
                tunnel: false
            })
        );
        assert!(
            t(Method::GET, "https://pypi.org/")
                .expect_err("https")
                .contains("CONNECT")
        );
        assert!(t(Method::CONNECT, "pypi.org").is_err());
        let req = |u: &str| Request::builder().uri(u).body(()).expect("req");
        assert!(is_proxy_request(&req("http://h/x")));
        assert!(!is_proxy_request(&req("/anthropic/v1/messages")));
    }

    #[test]
    fn the_token_comes_from_basic_proxy_auth() {
        let mut h = HeaderMap::new();
        assert_eq!(proxy_token(&h), None);
        // base64("firstmate:fm-abc")
        h.insert(
            "proxy-authorization",
            HeaderValue::from_static("Basic Zmlyc3RtYXRlOmZtLWFiYw=="),
        );
        assert_eq!(proxy_token(&h).as_deref(), Some("fm-abc"));
        h.insert(
            "proxy-authorization",
            HeaderValue::from_static("basic Zmlyc3RtYXRlOmZtLWFiYw"),
        );
        assert_eq!(proxy_token(&h).as_deref(), Some("fm-abc"));
        for bad in [
            "Bearer fm-abc",
            "Basic !!!",
            "Basic Zmlyc3RtYXRl",
            "Basic Zmlyc3RtYXRlOg==",
        ] {
            h.insert("proxy-authorization", HeaderValue::from_static(bad));
            assert_eq!(proxy_token(&h), None, "{bad}");
        }
        assert_eq!(
            base64_decode("aGVsbG8gd29ybGQ=").as_deref(),
            Some(&b"hello world"[..])
        );
    }

    #[test]
    fn hop_and_proxy_headers_stay_behind() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("proxy-authorization", "Basic xyz"),
            ("proxy-connection", "keep-alive"),
            ("connection", "keep-alive, x-hop"),
            ("x-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "h2c"),
            ("host", "pypi.org"),
            ("accept", "*/*"),
            ("user-agent", "pip"),
        ] {
            h.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        let out = next_hop_headers(&h);
        let mut names: Vec<&str> = out.keys().map(|k| k.as_str()).collect();
        names.sort();
        assert_eq!(names, ["accept", "host", "user-agent"]);
    }

    #[test]
    fn each_host_is_told_once_per_session_until_forgotten() {
        let e = Egress::new(Allowlist::default());
        assert!(e.first_time("s1", "example.com"));
        assert!(!e.first_time("s1", "example.com"));
        assert!(e.first_time("s1", "other.org"));
        assert!(e.first_time("s2", "example.com"));
        e.forget("s1");
        assert!(e.first_time("s1", "example.com"));
        e.count(Outcome::Private);
        e.count(Outcome::Private);
        assert_eq!(e.counts().get(Outcome::Private), 2);
        assert_eq!(e.counts().get(Outcome::Allowed), 0);
    }
}
