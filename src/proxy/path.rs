//! Request targets: the path normaliser, the route table (method + path to a [`Route`]),
//! and the query string read the way Go's `url.ParseQuery` reads it. Pure; tested below.
//!
//! The normaliser is strict rather than clever: a path holds only letters, digits and
//! `- . _ / : @` (so no percent-encoding, no backslash, no `;`), has no empty, `.` or `..`
//! segment, and may start with an API version `/vMAJOR.MINOR` (1.40 or newer). What the
//! proxy forwards is rebuilt from the route, never copied from the request.

use hyper::Method;

use super::Denial;
use super::policy::rule;

/// The oldest API version let through. Older versions accept a host configuration on
/// `start`, and other shapes the body policy does not read.
pub const MIN_API: (u32, u32) = (1, 40);

/// A normalised path: the version prefix (without `/`) and the segments after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub version: Option<String>,
    pub segments: Vec<String>,
}

fn path_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '/' | ':' | '@')
}

pub fn normalise(raw: &str) -> Result<Target, Denial> {
    let deny = |why: String| Denial::new(rule::PATH, format!("the path {raw:?} {why}"));
    let Some(rest) = raw.strip_prefix('/') else {
        return Err(deny("does not start with /".into()));
    };
    if let Some(c) = raw.chars().find(|&c| !path_char(c)) {
        return Err(deny(format!(
            "holds {c:?}: only letters, digits and - . _ / : @ are let through (no percent-encoding)"
        )));
    }
    let mut segments: Vec<String> = rest.split('/').map(str::to_string).collect();
    if segments.iter().any(String::is_empty) {
        return Err(deny("has an empty segment (// or a trailing /)".into()));
    }
    if segments.iter().any(|s| s == "." || s == "..") {
        return Err(deny("has a . or .. segment".into()));
    }
    let mut version = None;
    let first = &segments[0];
    if first.len() > 1
        && first.starts_with('v')
        && first[1..].starts_with(|c: char| c.is_ascii_digit())
    {
        let Some((major, minor)) = parse_version(&first[1..]) else {
            return Err(deny(format!(
                "starts with {first:?}, which is not an API version vMAJOR.MINOR"
            )));
        };
        if (major, minor) < MIN_API {
            return Err(Denial::new(
                rule::VERSION,
                format!(
                    "the path {raw:?} asks for API version {major}.{minor}; the proxy lets through {}.{} or newer",
                    MIN_API.0, MIN_API.1
                ),
            ));
        }
        version = Some(segments.remove(0));
    }
    if segments.is_empty() {
        return Err(deny("names no endpoint".into()));
    }
    Ok(Target { version, segments })
}

fn parse_version(s: &str) -> Option<(u32, u32)> {
    let (a, b) = s.split_once('.')?;
    let num = |x: &str| {
        (!x.is_empty() && x.len() <= 4 && x.bytes().all(|b| b.is_ascii_digit()))
            .then(|| x.parse().ok())
            .flatten()
    };
    Some((num(a)?, num(b)?))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerOp {
    Inspect,
    Start,
    Stop,
    Kill,
    Wait,
    Attach,
    Logs,
    Resize,
    Remove,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecOp {
    Start,
    Resize,
    Inspect,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectOp {
    Inspect,
    Remove,
}

/// Everything the proxy lets through (SPEC section 6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Ping,
    Version,
    Info,
    ImageInspect(String),
    ContainerList,
    ContainerCreate,
    Container(String, ContainerOp),
    ExecCreate(String),
    Exec(String, ExecOp),
    Events,
    VolumeList,
    VolumeCreate,
    Volume(String, ObjectOp),
    NetworkList,
    NetworkCreate,
    Network(String, ObjectOp),
    /// Connect (false) or disconnect (true) a container and a network.
    NetworkConnect(String, bool),
}

pub fn route(method: &Method, t: &Target) -> Result<Route, Denial> {
    use ContainerOp as C;
    let s: Vec<&str> = t.segments.iter().map(String::as_str).collect();
    let id = |x: &str| x.to_string();
    let r = match (method.as_str(), s.as_slice()) {
        ("GET" | "HEAD", ["_ping"]) => Route::Ping,
        ("GET", ["version"]) => Route::Version,
        ("GET", ["info"]) => Route::Info,
        ("GET", ["images", name @ .., "json"]) if !name.is_empty() => {
            Route::ImageInspect(name.join("/"))
        }
        ("GET", ["containers", "json"]) => Route::ContainerList,
        ("POST", ["containers", "create"]) => Route::ContainerCreate,
        ("GET", ["containers", c, "json"]) => Route::Container(id(c), C::Inspect),
        ("GET", ["containers", c, "logs"]) => Route::Container(id(c), C::Logs),
        ("DELETE", ["containers", c]) => Route::Container(id(c), C::Remove),
        ("POST", ["containers", c, op]) => match *op {
            "start" => Route::Container(id(c), C::Start),
            "stop" => Route::Container(id(c), C::Stop),
            "kill" => Route::Container(id(c), C::Kill),
            "wait" => Route::Container(id(c), C::Wait),
            "attach" => Route::Container(id(c), C::Attach),
            "resize" => Route::Container(id(c), C::Resize),
            "exec" => Route::ExecCreate(id(c)),
            _ => return Err(not_allowed(method, t)),
        },
        ("POST", ["exec", e, "start"]) => Route::Exec(id(e), ExecOp::Start),
        ("POST", ["exec", e, "resize"]) => Route::Exec(id(e), ExecOp::Resize),
        ("GET", ["exec", e, "json"]) => Route::Exec(id(e), ExecOp::Inspect),
        ("GET", ["events"]) => Route::Events,
        ("GET", ["volumes"]) => Route::VolumeList,
        ("POST", ["volumes", "create"]) => Route::VolumeCreate,
        ("GET", ["volumes", v]) => Route::Volume(id(v), ObjectOp::Inspect),
        ("DELETE", ["volumes", v]) => Route::Volume(id(v), ObjectOp::Remove),
        ("GET", ["networks"]) => Route::NetworkList,
        ("POST", ["networks", "create"]) => Route::NetworkCreate,
        ("GET", ["networks", n]) => Route::Network(id(n), ObjectOp::Inspect),
        ("DELETE", ["networks", n]) => Route::Network(id(n), ObjectOp::Remove),
        ("POST", ["networks", n, "connect"]) => Route::NetworkConnect(id(n), false),
        ("POST", ["networks", n, "disconnect"]) => Route::NetworkConnect(id(n), true),
        _ => return Err(not_allowed(method, t)),
    };
    Ok(r)
}

fn not_allowed(method: &Method, t: &Target) -> Denial {
    Denial::new(
        rule::ENDPOINT,
        format!(
            "{method} /{} is not on the allow-list of what firstmate needs",
            t.segments.join("/")
        ),
    )
}

impl Route {
    /// The query parameters each endpoint may carry (Docker's names).
    pub fn query_keys(&self) -> &'static [&'static str] {
        use ContainerOp as C;
        match self {
            Route::ContainerList => &["all", "limit", "size", "filters", "before", "since"],
            Route::ContainerCreate => &["name", "platform"],
            Route::Container(_, op) => match op {
                C::Inspect => &["size"],
                C::Start => &["detachKeys"],
                C::Stop => &["t", "signal"],
                C::Kill => &["signal"],
                C::Wait => &["condition"],
                C::Attach => &["stream", "stdin", "stdout", "stderr", "logs", "detachKeys"],
                C::Logs => &[
                    "follow",
                    "stdout",
                    "stderr",
                    "since",
                    "until",
                    "timestamps",
                    "tail",
                    "details",
                ],
                C::Resize => &["h", "w"],
                C::Remove => &["v", "force", "link"],
            },
            Route::Exec(_, ExecOp::Resize) => &["h", "w"],
            Route::Events => &["since", "until", "filters"],
            Route::VolumeList | Route::NetworkList => &["filters"],
            Route::Volume(_, ObjectOp::Remove) => &["force"],
            Route::Network(_, ObjectOp::Inspect) => &["verbose", "scope"],
            _ => &[],
        }
    }

    /// Whether the endpoint reads a request body.
    pub fn takes_body(&self) -> bool {
        matches!(
            self,
            Route::ContainerCreate
                | Route::ExecCreate(_)
                | Route::Exec(_, ExecOp::Start)
                | Route::VolumeCreate
                | Route::NetworkCreate
                | Route::NetworkConnect(..)
        )
    }
}

impl ContainerOp {
    /// The last path segment upstream (none for a remove: `DELETE /containers/{id}`).
    pub fn segment(self) -> Option<&'static str> {
        match self {
            ContainerOp::Inspect => Some("json"),
            ContainerOp::Start => Some("start"),
            ContainerOp::Stop => Some("stop"),
            ContainerOp::Kill => Some("kill"),
            ContainerOp::Wait => Some("wait"),
            ContainerOp::Attach => Some("attach"),
            ContainerOp::Logs => Some("logs"),
            ContainerOp::Resize => Some("resize"),
            ContainerOp::Remove => None,
        }
    }
}

impl ExecOp {
    pub fn segment(self) -> &'static str {
        match self {
            ExecOp::Start => "start",
            ExecOp::Resize => "resize",
            ExecOp::Inspect => "json",
        }
    }
}

/// A path for upstream: the version prefix (if the client gave one) and the parts.
pub fn upstream_path(version: Option<&str>, parts: &[&str]) -> String {
    let mut out = String::new();
    if let Some(v) = version {
        out.push('/');
        out.push_str(v);
    }
    for p in parts {
        out.push('/');
        out.push_str(p);
    }
    out
}

/// One `key=value` of a query: raw as sent, and decoded as Go decodes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    pub raw: String,
    pub key: String,
    pub value: String,
}

/// Reads a query the way Go's `url.ParseQuery` does (`&`-separated, `+` is a space,
/// `%XX` escapes), except that what Go would refuse or skip is refused here.
pub fn parse_query(query: Option<&str>) -> Result<Vec<Param>, Denial> {
    let mut out = Vec::new();
    let Some(q) = query else { return Ok(out) };
    for pair in q.split('&') {
        if pair.is_empty() {
            continue;
        }
        let deny =
            |why: &str| Denial::new(rule::QUERY, format!("the query parameter {pair:?} {why}"));
        if pair.contains(';') {
            return Err(deny("holds a ';' (Docker refuses it too)"));
        }
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let key = unescape(k).ok_or_else(|| deny("has a broken %-escape"))?;
        let value = unescape(v).ok_or_else(|| deny("has a broken %-escape"))?;
        out.push(Param {
            raw: pair.to_string(),
            key,
            value,
        });
    }
    Ok(out)
}

/// Go's `url.QueryUnescape`; None where Go returns an error (or the result is not UTF-8).
fn unescape(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = b.get(i + 1..i + 3)?;
                if !hex.iter().all(u8::is_ascii_hexdigit) {
                    return None;
                }
                let h = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(h, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

pub fn check_query(route: &Route, params: &[Param]) -> Result<(), Denial> {
    let allowed = route.query_keys();
    for p in params {
        if !allowed.contains(&p.key.as_str()) {
            return Err(Denial::new(
                rule::QUERY,
                format!(
                    "the query parameter {:?} is not one this endpoint may carry (allowed: {})",
                    p.key,
                    if allowed.is_empty() {
                        "none".to_string()
                    } else {
                        allowed.join(", ")
                    }
                ),
            ));
        }
    }
    Ok(())
}

/// The query with Docker's `filters` replaced by the client's filters (the first
/// `filters`, as Go reads it) plus `label=LABEL`, so the daemon answers with managed
/// objects only.
pub fn force_label(params: &[Param], label: &str) -> Result<String, Denial> {
    use std::collections::{BTreeMap, BTreeSet};
    let mut filters: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    if let Some(p) = params.iter().find(|p| p.key == "filters")
        && !p.value.is_empty()
    {
        let deny = || {
            Denial::new(
                rule::QUERY,
                format!(
                    "filters {:?} is not a JSON object of lists of strings",
                    p.value
                ),
            )
        };
        let raw = super::json::parse(p.value.as_bytes()).map_err(|_| deny())?;
        let super::json::Raw::Object(members) = raw else {
            return Err(deny());
        };
        for (k, v) in members {
            let set = filters.entry(k).or_default();
            match v {
                super::json::Raw::Array(items) => {
                    for i in items {
                        let super::json::Raw::String(s) = i else {
                            return Err(deny());
                        };
                        set.insert(s);
                    }
                }
                super::json::Raw::Object(m) => {
                    for (s, b) in m {
                        if !matches!(b, super::json::Raw::Bool(_)) {
                            return Err(deny());
                        }
                        set.insert(s);
                    }
                }
                _ => return Err(deny()),
            }
        }
    }
    filters
        .entry("label".into())
        .or_default()
        .insert(label.to_string());
    let json: serde_json::Map<String, serde_json::Value> = filters
        .into_iter()
        .map(|(k, set)| {
            let m: serde_json::Map<String, serde_json::Value> = set
                .into_iter()
                .map(|v| (v, serde_json::Value::Bool(true)))
                .collect();
            (k, serde_json::Value::Object(m))
        })
        .collect();
    let mut parts: Vec<String> = params
        .iter()
        .filter(|p| p.key != "filters")
        .map(|p| p.raw.clone())
        .collect();
    parts.push(format!(
        "filters={}",
        escape(&serde_json::Value::Object(json).to_string())
    ));
    Ok(parts.join("&"))
}

/// Percent-encodes all but RFC 3986's unreserved characters.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 2);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(method: &str, path: &str) -> Result<Route, Denial> {
        let m = Method::from_bytes(method.as_bytes()).unwrap();
        normalise(path).and_then(|t| route(&m, &t))
    }

    fn rule_of(method: &str, path: &str) -> &'static str {
        match r(method, path) {
            Ok(route) => panic!("{method} {path} allowed as {route:?}"),
            Err(d) => d.rule,
        }
    }

    #[test]
    fn versions_are_optional_and_kept() {
        let t = normalise("/v1.41/containers/json").unwrap();
        assert_eq!(t.version.as_deref(), Some("v1.41"));
        assert_eq!(t.segments, ["containers", "json"]);
        assert_eq!(normalise("/containers/json").unwrap().version, None);
        assert_eq!(r("GET", "/v1.47/_ping").unwrap(), Route::Ping);
        assert_eq!(r("HEAD", "/_ping").unwrap(), Route::Ping);
    }

    #[test]
    fn path_tricks_are_refused_before_any_route() {
        for p in [
            "/v1.41/containers/../build",
            "/containers/create/../../build",
            "//containers/create",
            "/v1.41//containers/create",
            "/containers/create/",
            "/./containers/create",
            "/%2e%2e/build",
            "/containers%2fcreate",
            "/containers/create%00",
            "/containers/create;x",
            "\\containers\\create",
            "/containers/cre ate",
            "containers/create",
            "/",
            "/v1.41",
            "/v1..41/containers/create",
            "/v1.41.2/containers/create",
            "/v1/containers/create",
            "/containers/crëate",
        ] {
            assert_eq!(rule_of("POST", p), rule::PATH, "{p}");
        }
    }

    #[test]
    fn old_api_versions_are_refused() {
        assert_eq!(
            rule_of("POST", "/v1.23/containers/abc/start"),
            rule::VERSION
        );
        assert_eq!(rule_of("GET", "/v1.39/info"), rule::VERSION);
        assert!(r("GET", "/v1.40/info").is_ok());
        assert!(r("GET", "/v2.0/info").is_ok());
    }

    #[test]
    fn the_allow_list() {
        use ContainerOp as C;
        let ok = [
            ("GET", "/version", Route::Version),
            ("GET", "/info", Route::Info),
            (
                "GET",
                "/v1.41/images/docker.io/library/debian:bookworm/json",
                Route::ImageInspect("docker.io/library/debian:bookworm".into()),
            ),
            ("GET", "/containers/json", Route::ContainerList),
            ("POST", "/containers/create", Route::ContainerCreate),
            (
                "GET",
                "/containers/abc/json",
                Route::Container("abc".into(), C::Inspect),
            ),
            (
                "POST",
                "/containers/abc/start",
                Route::Container("abc".into(), C::Start),
            ),
            (
                "POST",
                "/containers/abc/attach",
                Route::Container("abc".into(), C::Attach),
            ),
            (
                "GET",
                "/containers/abc/logs",
                Route::Container("abc".into(), C::Logs),
            ),
            (
                "DELETE",
                "/containers/abc",
                Route::Container("abc".into(), C::Remove),
            ),
            (
                "POST",
                "/containers/abc/exec",
                Route::ExecCreate("abc".into()),
            ),
            (
                "POST",
                "/exec/e1/start",
                Route::Exec("e1".into(), ExecOp::Start),
            ),
            (
                "GET",
                "/exec/e1/json",
                Route::Exec("e1".into(), ExecOp::Inspect),
            ),
            ("GET", "/events", Route::Events),
            ("POST", "/volumes/create", Route::VolumeCreate),
            (
                "DELETE",
                "/volumes/v",
                Route::Volume("v".into(), ObjectOp::Remove),
            ),
            ("GET", "/networks", Route::NetworkList),
            (
                "DELETE",
                "/networks/n",
                Route::Network("n".into(), ObjectOp::Remove),
            ),
        ];
        for (m, p, want) in ok {
            assert_eq!(r(m, p).unwrap(), want, "{m} {p}");
        }
    }

    #[test]
    fn everything_else_is_refused() {
        for (m, p) in [
            ("POST", "/build"),
            ("POST", "/v1.41/build"),
            ("POST", "/build/prune"),
            ("POST", "/session"),
            ("POST", "/swarm/init"),
            ("GET", "/swarm"),
            ("GET", "/nodes"),
            ("POST", "/services/create"),
            ("GET", "/secrets"),
            ("POST", "/configs/create"),
            ("GET", "/plugins"),
            ("POST", "/plugins/pull"),
            ("GET", "/system/df"),
            ("POST", "/containers/prune"),
            ("POST", "/images/create"),
            ("POST", "/images/load"),
            ("GET", "/images/json"),
            ("GET", "/images/get"),
            ("GET", "/images/x/get"),
            ("DELETE", "/images/x"),
            ("POST", "/images/x/tag"),
            ("POST", "/images/x/push"),
            ("POST", "/commit"),
            ("GET", "/containers/abc/export"),
            ("PUT", "/containers/abc/archive"),
            ("HEAD", "/containers/abc/archive"),
            ("GET", "/containers/abc/archive"),
            ("POST", "/containers/abc/update"),
            ("POST", "/containers/abc/rename"),
            ("POST", "/containers/abc/restart"),
            ("POST", "/containers/abc/pause"),
            ("GET", "/containers/abc/top"),
            ("POST", "/containers/abc/start/x"),
            ("GET", "/containers/a/b/json"),
            ("POST", "/networks/n/connect/x"),
            ("PUT", "/networks/n/connect"),
            ("POST", "/networks/prune"),
            ("POST", "/volumes/prune"),
            ("GET", "/CONTAINERS/json"),
            ("PUT", "/containers/create"),
            ("GET", "/distribution/x/json"),
            ("POST", "/auth"),
            ("GET", "/_ping/x"),
        ] {
            assert_eq!(rule_of(m, p), rule::ENDPOINT, "{m} {p}");
        }
    }

    #[test]
    fn queries_are_read_like_go_and_checked_per_endpoint() {
        let q = parse_query(Some("a=1&&b=x+y&c=%41&d")).unwrap();
        let kv: Vec<(&str, &str)> = q
            .iter()
            .map(|p| (p.key.as_str(), p.value.as_str()))
            .collect();
        assert_eq!(kv, [("a", "1"), ("b", "x y"), ("c", "A"), ("d", "")]);
        assert!(parse_query(Some("a=1;b=2")).is_err());
        assert!(parse_query(Some("a=%4")).is_err());
        assert!(parse_query(Some("a=%zz")).is_err());
        assert!(parse_query(Some("a=%+1")).is_err());

        let start = Route::Container("x".into(), ContainerOp::Start);
        let check = |q: &str| check_query(&start, &parse_query(Some(q)).unwrap());
        assert!(check("detachKeys=ctrl-p").is_ok());
        assert_eq!(check("checkpoint=c1").unwrap_err().rule, rule::QUERY);
        assert_eq!(check("check%70oint=c1").unwrap_err().rule, rule::QUERY);
        assert!(check_query(&Route::Info, &parse_query(Some("x=1")).unwrap()).is_err());
    }

    #[test]
    fn the_label_filter_is_forced() {
        let q = parse_query(Some(
            "all=1&filters=%7B%22name%22%3A%5B%22x%22%5D%7D&filters=zzz",
        ))
        .unwrap();
        let out = force_label(&q, "firstmate.managed=true").unwrap();
        let params = parse_query(Some(&out)).unwrap();
        assert_eq!(params[0].raw, "all=1");
        let f: Vec<&Param> = params.iter().filter(|p| p.key == "filters").collect();
        assert_eq!(f.len(), 1);
        let v: serde_json::Value = serde_json::from_str(&f[0].value).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"label": {"firstmate.managed=true": true}, "name": {"x": true}})
        );
        let legacy =
            parse_query(Some("filters=%7B%22label%22%3A%7B%22a%3Db%22%3Atrue%7D%7D")).unwrap();
        let out = force_label(&legacy, "m=true").unwrap();
        assert!(out.contains("a%3Db") && out.contains("m%3Dtrue"), "{out}");
        let bad = parse_query(Some("filters=%5B1%5D")).unwrap();
        assert!(force_label(&bad, "m=true").is_err());
    }
}
