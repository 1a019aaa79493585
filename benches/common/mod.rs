//! What the benchmarks share: cleanup of what a run made on Docker, and percentiles.

#![allow(dead_code)]

use std::process::{Command, Stdio};
use std::time::Duration;

/// Removes the containers, volumes and session networks labelled with `instance`
/// (containers first: a network in use cannot go).
pub fn cleanup_docker(instance: &str) {
    for (list, rm) in [
        (vec!["ps", "-aq"], vec!["rm", "-f"]),
        (vec!["volume", "ls", "-q"], vec!["volume", "rm", "-f"]),
        (vec!["network", "ls", "-q"], vec!["network", "rm"]),
    ] {
        let filter = format!("label=firstmate.instance={instance}");
        let ids: Vec<String> = Command::new("docker")
            .args(&list)
            .args(["--filter", &filter])
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .split_whitespace()
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        if !ids.is_empty() {
            let _ = Command::new("docker")
                .args(&rm)
                .args(&ids)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The `p`th percentile (nearest rank) of `v`, which it sorts; zero when empty.
pub fn percentile(v: &mut [Duration], p: usize) -> Duration {
    v.sort();
    let idx = ((v.len() * p).div_ceil(100))
        .saturating_sub(1)
        .min(v.len().saturating_sub(1));
    v.get(idx).copied().unwrap_or_default()
}

/// A SQLite store in `dir` holding one live (waiting) session, `bench`, of user `me`,
/// with the gateway token `token`: what the gateway checks a call or a tunnel against.
pub async fn store_with_live_session(
    dir: &std::path::Path,
    token: &str,
) -> firstmate::store::Store {
    use firstmate::event::SessionState;
    use firstmate::store::{SessionRecord, Store};
    let store = Store::connect(&format!("sqlite://{}", dir.join("bench.db").display()))
        .await
        .expect("store");
    let mut s = SessionRecord::new_queued(
        "bench".into(),
        "bench".into(),
        "claude".into(),
        "claude".into(),
        "img".into(),
        "me".into(),
        "console".into(),
        "console".into(),
        "p".into(),
    );
    s.state = SessionState::Waiting; // tokens work for live sessions only
    store.insert_session(&s).await.expect("session");
    store
        .insert_gateway_token(token, "bench", "me")
        .await
        .expect("token");
    store
}

/// Every JSON line of the container of `session`, with its Docker log timestamp (Unix
/// ns).
pub fn docker_json_lines(session: &str) -> Vec<(serde_json::Value, i128)> {
    let out = std::process::Command::new("docker")
        .args(["logs", "-t", &format!("firstmate-{session}")])
        .output()
        .expect("docker logs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let (ts, json) = line.split_once(' ')?;
            let ev = serde_json::from_str::<serde_json::Value>(json).ok()?;
            Some((ev, unix_ns_of(ts)))
        })
        .collect()
}

/// When the agent of `session` wrote each permission request (its Docker log
/// timestamp, Unix ns), by the command it asked about.
pub fn request_times(session: &str) -> Vec<(String, i128)> {
    docker_json_lines(session)
        .into_iter()
        .filter(|(ev, _)| {
            ev["type"] == "control_request" && ev["request"]["subtype"] == "can_use_tool"
        })
        .filter_map(|(ev, ns)| Some((ev["request"]["input"]["command"].as_str()?.to_string(), ns)))
        .collect()
}

/// An RFC 3339 time as Unix ns (0 when it is not one).
pub fn unix_ns_of(rfc3339: &str) -> i128 {
    let t = rfc3339.replace("+00:00", "Z");
    humantime::parse_rfc3339(&t)
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as i128)
}

/// The test agent's image, which every Docker bench runs.
pub const IMAGE: &str = "firstmate-test-agent:latest";

/// A name for this run's Docker objects (`docker.instance`), so cleanup takes only them.
pub fn new_instance() -> String {
    format!("bench-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
}

/// What a bench adds to the config the Docker benches share ([`config_text`]), table by
/// table; each part is whole lines.
pub struct Tables<'a> {
    pub docker: &'a str,
    pub sessions: &'a str,
    /// The agent's `memory` (256m unless said).
    pub memory: &'a str,
    pub agent: &'a str,
    /// Whole tables after the agent's (a front end, the gateway, repositories).
    pub rest: &'a str,
}

impl Default for Tables<'_> {
    fn default() -> Self {
        Tables {
            docker: "",
            sessions: "",
            memory: "256m",
            agent: "",
            rest: "",
        }
    }
}

/// The config the Docker benches share: the database at `db_url`, this run's Docker
/// `instance`, and the test agent as `scripted`, the default agent; `t` adds to it.
pub fn config_text(db_url: &str, instance: &str, t: Tables) -> String {
    let Tables {
        docker,
        sessions,
        memory,
        agent,
        rest,
    } = t;
    format!(
        "[database]\nurl = \"{db_url}\"\n\n[docker]\ninstance = \"{instance}\"\n{docker}\n\
         [sessions]\ndefault_agent = \"scripted\"\n{sessions}\n\
         [agents.scripted]\nimage = \"{IMAGE}\"\nprotocol = \"claude\"\nmemory = \"{memory}\"\n{agent}\n\
         {rest}"
    )
}

/// A SQLite database in `dir`, as `database.url`.
pub fn sqlite_url(dir: &std::path::Path) -> String {
    format!("sqlite://{}", dir.join("bench.db").display())
}

/// A `/proc/PID/status` figure in KiB (`VmRSS:`, `VmHWM:`); zero when unknown.
pub fn status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}
