//! Repository sessions on the real Docker daemon (see benches/README.md):
//!
//!   cargo bench --bench repos        (needs dockerd, git and firstmate-test-agent:latest)
//!
//! `new --repo R say hi-N` to the first output `hi-N` (`Engine::new_session` until the
//! agent's text event; the engine clones through its gateway from a real
//! `git http-backend` on 127.0.0.1 that wants a token; workers on a Docker network reach
//! the gateway at its gateway address), for a small repository (one file) and a large
//! one (50,000 files, FIRSTMATE_BENCH_REPO_FILES), with 1 session and with 10 at once
//! (FIRSTMATE_BENCH_REPO_SESSIONS) on the same repository. Also the clone alone, as the
//! workspace notice says it.

use std::collections::HashMap;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use firstmate::config::Config;
use firstmate::engine::{Engine, NewSession};
use firstmate::event::EventBody;
use firstmate::gateway::Gateway;
use firstmate::protocol::AgentEvent;
use firstmate::runtime::DockerRuntime;
use firstmate::store::Store;

mod common;
#[allow(dead_code)]
#[path = "../tests/integration/support/git.rs"]
mod git;
#[allow(dead_code)]
#[path = "../tests/integration/support/http.rs"]
mod http;

const TOKEN: &str = "bench-git-token";

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return; // `cargo test --benches` probes; nothing to list.
    }
    if let Ok(filter) = std::env::var("FIRSTMATE_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .init();
    }
    let files: usize = env_or("FIRSTMATE_BENCH_REPO_FILES", 50_000);
    let burst: usize = env_or("FIRSTMATE_BENCH_REPO_SESSIONS", 10);

    let server = git::GitServer::start(TOKEN);
    let t = Instant::now();
    let small = server.create_repo("team/small.git", &[("README.md", "small\n")]);
    let large = server.create_large_repo("team/large.git", files);
    let made = t.elapsed();
    let pack_mb = dir_size(&server.repo_path("team/large.git")) as f64 / 1e6;

    let dir = tempfile::tempdir().expect("tempdir");
    let instance = common::new_instance();
    // Workers reach the gateway on their network's gateway address (the host).
    let net = format!("fm-bench-repos-{}", &instance[6..]);
    let made_net = Command::new("docker")
        .args([
            "network",
            "create",
            "--label",
            "firstmate.test=bench-repos",
            &net,
        ])
        .output()
        .expect("docker network create");
    assert!(
        made_net.status.success(),
        "docker network create: {}",
        String::from_utf8_lossy(&made_net.stderr)
    );
    let gw_ip = network_gateway(&net);
    let gw_port = std::net::TcpListener::bind((gw_ip.as_str(), 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    std::fs::write(dir.path().join("git-token"), TOKEN).expect("token");
    let docker = format!("network = \"{net}\"\n");
    let rest = format!(
        "[gateway]\nlisten = \"{gw_ip}:{gw_port}\"\nurl = \"http://{gw_ip}:{gw_port}\"\n\n\
         [repos.small]\nurl = \"{small}\"\ntoken_file = \"git-token\"\n\n\
         [repos.large]\nurl = \"{large}\"\ntoken_file = \"git-token\"\n"
    );
    let tables = common::Tables {
        docker: &docker,
        sessions: "max_running = 1000\nmax_running_per_user = 1000\n",
        memory: "512m",
        rest: &rest,
        ..Default::default()
    };
    let text = common::config_text(&common::sqlite_url(dir.path()), &instance, tables);
    let cfg = Config::from_str(&text, "bench.toml", dir.path(), &|_| None).expect("config");

    let rt = tokio::runtime::Runtime::new().expect("tokio");
    let (results, clones) = rt.block_on(async {
        let store = Store::connect(&cfg.database_url).await.expect("database");
        let docker = DockerRuntime::connect(&cfg.docker.host, &instance, Some(&net))
            .await
            .expect("Docker");
        let (gw, reports) = Gateway::new(
            cfg.gateway.clone().expect("gateway"),
            cfg.egress.allow.clone(),
            store.clone(),
        )
        .expect("gateway");
        let listener = gw.bind().await.expect("gateway listener");
        tokio::spawn(gw.clone().serve(listener));
        let engine = Engine::with_gateway(store, docker, Arc::new(cfg), Some(gw));
        engine.enforce_limits(reports);
        let mut results = Vec::new();
        let mut clones = Vec::new();
        let mut n = 0;
        let only = std::env::var("FIRSTMATE_BENCH_REPO_ONLY").ok();
        for repo in ["small", "large"]
            .into_iter()
            .filter(|r| only.as_deref().is_none_or(|o| o == *r))
        {
            for sessions in [1, burst] {
                let (times, clone_ms) = run(&engine, repo, sessions, &mut n).await;
                results.push((repo, sessions, times));
                clones.push((repo, sessions, clone_ms));
            }
        }
        (results, clones)
    });
    common::cleanup_docker(&instance);
    let _ = Command::new("docker")
        .args(["network", "rm", &net])
        .output();

    println!(
        "large repository: {files} files in one commit, {pack_mb:.1} MB on the server (made in {:.1} s)",
        made.as_secs_f64()
    );
    println!("`new --repo` to first output (Engine::new_session, sessions started at once):");
    for (repo, sessions, mut times) in results {
        let first = times.iter().min().copied().unwrap_or_default();
        let last = times.iter().max().copied().unwrap_or_default();
        println!(
            "  {repo:5} x{sessions:2}: first {:6.0} ms, median {:6.0} ms, last {:6.0} ms",
            common::ms(first),
            common::ms(common::percentile(&mut times, 50)),
            common::ms(last)
        );
    }
    for (repo, sessions, mut ms) in clones {
        ms.sort_by(f64::total_cmp);
        println!("  clone alone, {repo:5} x{sessions:2} (from the workspace notice): {ms:?} s");
    }
}

fn env_or(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn network_gateway(net: &str) -> String {
    let out = Command::new("docker")
        .args([
            "network",
            "inspect",
            "-f",
            "{{(index .IPAM.Config 0).Gateway}}",
            net,
        ])
        .output()
        .expect("docker network inspect");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `sessions` sessions at once on `repo`, each `say hi-N`: the time of each from
/// `new_session` to its first output, and the clone times the engine reported.
async fn run(
    engine: &Engine,
    repo: &str,
    sessions: usize,
    n: &mut usize,
) -> (Vec<Duration>, Vec<f64>) {
    let mut events = engine.subscribe();
    let start = Instant::now();
    let mut ids = HashMap::new();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..sessions {
        *n += 1;
        let engine = engine.clone();
        let req = NewSession {
            repo: Some(repo.to_string()),
            prompt: format!("say hi-{n}"),
            owner: "bench".into(),
            frontend: "bench".into(),
            room: "bench".into(),
            ..Default::default()
        };
        tasks.spawn(async move { engine.new_session(req).await.expect("new session").id });
    }
    while let Some(id) = tasks.join_next().await {
        ids.insert(id.expect("task"), None::<Duration>);
    }
    let mut clones = Vec::new();
    while ids.values().any(Option::is_none) {
        let ev = match events.recv().await {
            Ok(ev) => ev,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
            Err(e) => panic!("the engine's events ended: {e}"),
        };
        let Some(slot) = ids.get_mut(&ev.session) else {
            continue;
        };
        match &ev.body {
            EventBody::Agent {
                event: AgentEvent::Text { .. },
            } if slot.is_none() => *slot = Some(start.elapsed()),
            EventBody::Notice { text } if text.starts_with("workspace:") => {
                if let Some(s) = text
                    .split("cloned in ")
                    .nth(1)
                    .and_then(|r| r.split(' ').next()?.parse::<f64>().ok())
                {
                    clones.push(s);
                }
            }
            EventBody::State { state, detail } if state.is_ended() => {
                panic!("session {} ended: {detail:?}", ev.session)
            }
            _ => {}
        }
    }
    (ids.into_values().flatten().collect(), clones)
}

fn dir_size(path: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}
