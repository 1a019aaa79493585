//! Session creation under concurrency (see benches/README.md).
//!
//!   cargo bench --bench create       (needs dockerd and firstmate-test-agent:latest;
//!                                     PostgreSQL too with FIRSTMATE_BENCH_PG_URL)
//!
//! `Engine::new_session` called by 1, 10 and 50 requesters at once (five people), each
//! session bound to its own thread, until 200 sessions exist: sessions created per
//! second and the latency of one `new`, on SQLite and (when FIRSTMATE_BENCH_PG_URL names
//! a server, e.g. postgres://postgres@127.0.0.1:5432/postgres) on PostgreSQL. One
//! session may run (`max_running = 1`), so this measures the engine and the database
//! (the checks, the one transaction that stores a session with its prompt, thread and
//! first events, the scheduler), not Docker starting containers.

#[path = "common/mod.rs"]
mod common;

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use firstmate::config::Config;
use firstmate::engine::{Engine, NewSession};
use firstmate::runtime::DockerRuntime;
use firstmate::store::Store;

const SESSIONS: usize = 200;

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return; // `cargo test --benches` probes; nothing to list.
    }
    let total: usize = std::env::var("FIRSTMATE_BENCH_SESSIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(SESSIONS);
    let rt = tokio::runtime::Runtime::new().expect("tokio");
    let pg = std::env::var("FIRSTMATE_BENCH_PG_URL").ok();
    if pg.is_none() {
        eprintln!("FIRSTMATE_BENCH_PG_URL is not set: PostgreSQL is skipped");
    }
    println!("sessions per case: {total}");
    for db in ["sqlite", "postgres"] {
        if db == "postgres" && pg.is_none() {
            continue;
        }
        for requesters in [1, 10, 50] {
            let r = rt.block_on(case(db, pg.as_deref(), requesters, total));
            println!(
                "{db:>8}, {requesters:>2} at once: {:>6.1} sessions/s, one `new` median {:>5.0} ms, p95 {:>5.0} ms",
                total as f64 / r.wall.as_secs_f64(),
                common::ms(common::percentile(&mut r.latencies.clone(), 50)),
                common::ms(common::percentile(&mut r.latencies.clone(), 95)),
            );
        }
    }
}

struct CaseResult {
    wall: Duration,
    latencies: Vec<Duration>,
}

async fn case(db: &str, pg: Option<&str>, requesters: usize, total: usize) -> CaseResult {
    let dir = tempfile::tempdir().expect("tempdir");
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let instance = format!("bench-create-{suffix}");
    let url = match (db, pg) {
        ("postgres", Some(base)) => {
            let name = format!("bench_create_{suffix}");
            let ok = Command::new("psql")
                .args([base, "-q", "-c", &format!("CREATE DATABASE {name}")])
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "cannot create a database on {base} (psql)");
            let (prefix, _) = base.rsplit_once('/').expect("a URL ending in /DATABASE");
            format!("{prefix}/{name}")
        }
        _ => common::sqlite_url(dir.path()),
    };
    let tables = common::Tables {
        sessions: "max_running = 1\nmax_running_per_user = 1\n",
        ..Default::default()
    };
    let text = common::config_text(&url, &instance, tables);
    let cfg = Config::from_str(&text, "bench.toml", dir.path(), &|_| None).expect("config");
    let store = Store::open(&cfg.database_url).await.expect("database");
    store.migrate().await.expect("migrations");
    let docker = DockerRuntime::connect(&cfg.docker.host, &instance, None)
        .await
        .expect("Docker");
    let engine = Engine::new(store, docker, Arc::new(cfg));

    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..requesters {
        let engine = engine.clone();
        let next = next.clone();
        tasks.spawn(async move {
            let mut lat = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= total {
                    return lat;
                }
                let t = Instant::now();
                engine
                    .new_session(NewSession {
                        prompt: format!("say bench-{i}"),
                        owner: format!("person-{}", i % 5),
                        frontend: "bench".into(),
                        room: "room".into(),
                        thread: Some(format!("thread-{i}")),
                        ..Default::default()
                    })
                    .await
                    .expect("new");
                lat.push(t.elapsed());
            }
        });
    }
    let mut latencies = Vec::new();
    while let Some(r) = tasks.join_next().await {
        latencies.extend(r.expect("a requester panicked"));
    }
    let wall = start.elapsed();
    // The session that may run starts its container on its own task: stop it (and so
    // wait for its container) before removing what the case made.
    let live = engine
        .store()
        .sessions(&instance, &[])
        .await
        .expect("sessions");
    for s in live.iter().filter(|s| !s.state.is_ended()) {
        let _ = engine.stop(&s.id, "the benchmark").await;
    }
    common::cleanup_docker(&instance);
    CaseResult { wall, latencies }
}
