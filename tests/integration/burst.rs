//! Bursts: many `new` at once, from several people, through the engine's public API (the
//! front ends' own bursts are in their files). Every request is answered, every session
//! has its thread, every session's event log is gapless and unique, none runs unseen;
//! then as many `stop`s at once, and the logs are still dense.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use firstmate::config::Config;
use firstmate::engine::{Engine, NewSession};
use firstmate::event::EventBody;
use firstmate::protocol::AgentEvent;
use firstmate::runtime::DockerRuntime;
use firstmate::store::{SessionRecord, Store};

use crate::support::Env;

const FRONTEND: &str = "burst";
const SESSIONS: usize = 50;
const PEOPLE: usize = 5;

async fn engine_of(env: &Env) -> Engine {
    let cfg = Config::load(&env.config, &|k| std::env::var(k).ok()).expect("the test config");
    let store = Store::open(&cfg.database_url)
        .await
        .expect("the test database");
    store.migrate().await.expect("migrations");
    let rt = DockerRuntime::connect(
        &cfg.docker.host,
        &cfg.docker.instance,
        cfg.docker.network.as_deref(),
    )
    .await
    .expect("Docker");
    Engine::new(store, rt, Arc::new(cfg))
}

/// Every event of a session, checked dense (1, 2, 3 ...) and unique.
async fn dense_log(store: &Store, id: &str) -> Vec<EventBody> {
    let events = store.events_after(id, 0, 100_000).await.expect("events");
    let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
    let want: Vec<i64> = (1..=events.len() as i64).collect();
    assert_eq!(seqs, want, "session {id}: the event log is not gapless");
    events.into_iter().map(|e| e.body).collect()
}

fn said(events: &[EventBody], text: &str) -> bool {
    events
        .iter()
        .any(|e| matches!(e, EventBody::Agent { event: AgentEvent::Text { text: t } } if t.contains(text)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_new_at_once_from_five_people_each_get_a_thread_and_a_dense_log() {
    // Ten run at once, two per person; the rest wait in the queue.
    let Some(env) = Env::with_sessions("", "max_running = 10\nmax_running_per_user = 2") else {
        return;
    };
    let engine = engine_of(&env).await;
    engine.recover().await.expect("recover");
    let store = engine.store().clone();

    let mut burst = tokio::task::JoinSet::new();
    for i in 0..SESSIONS {
        let engine = engine.clone();
        burst.spawn(async move {
            let req = NewSession {
                prompt: format!("say hi-{i}"),
                owner: format!("person-{}", i % PEOPLE),
                frontend: FRONTEND.into(),
                room: "room-1".into(),
                thread: Some(format!("thread-{i}")),
                ..Default::default()
            };
            (i, engine.new_session(req).await)
        });
    }
    let mut made: Vec<(usize, SessionRecord)> = Vec::new();
    while let Some(r) = burst.join_next().await {
        let (i, res) = r.expect("a `new` task panicked");
        match res {
            Ok(s) => made.push((i, s)),
            Err(e) => panic!("`new` number {i} was refused: {e}"),
        }
    }
    assert_eq!(made.len(), SESSIONS, "every `new` is answered");
    let ids: HashSet<&str> = made.iter().map(|(_, s)| s.id.as_str()).collect();
    assert_eq!(ids.len(), SESSIONS, "every session has its own id");

    // Every session is bound to its own thread, created with it.
    for (i, s) in &made {
        let b = store
            .binding(&s.id, FRONTEND)
            .await
            .expect("binding")
            .unwrap_or_else(|| panic!("session {} (`new` {i}) has no thread", s.id));
        assert_eq!(b.thread_ref, format!("thread-{i}"));
        assert_eq!(
            store
                .session_for_thread(FRONTEND, &b.thread_ref)
                .await
                .expect("lookup"),
            Some(s.id.clone())
        );
    }

    // The ten that may run do their turn; their output is in their logs.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    loop {
        let mut done = 0;
        for (i, s) in &made {
            if said(&dense_log(&store, &s.id).await, &format!("hi-{i}")) {
                done += 1;
            }
        }
        if done >= 10 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {done} of the 10 sessions that may run finished their first turn"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // None runs unseen: every live or queued session has its thread.
    let all = store
        .sessions(&engine.config().docker.instance, &[])
        .await
        .expect("sessions");
    assert_eq!(all.len(), SESSIONS);
    for s in &all {
        assert!(
            store
                .binding(&s.id, FRONTEND)
                .await
                .expect("binding")
                .is_some(),
            "session {} ({}) has no thread",
            s.id,
            s.state
        );
    }

    // As many stops at once: queued, starting and waiting sessions alike.
    let mut stops = tokio::task::JoinSet::new();
    for (_, s) in &made {
        let engine = engine.clone();
        let id = s.id.clone();
        stops.spawn(async move { (id.clone(), engine.stop(&id, "the burst test").await) });
    }
    while let Some(r) = stops.join_next().await {
        let (id, res) = r.expect("a `stop` task panicked");
        // A queued session may have started (and been stopped) by another stop's
        // scheduling; "not running" is the only acceptable refusal.
        if let Err(e) = res {
            let now = engine.session(&id).await.expect("session");
            assert!(
                now.state.is_ended(),
                "stop of {id} failed ({e}) and it is still {}",
                now.state
            );
        }
    }
    for (i, s) in &made {
        let now = engine.session(&s.id).await.expect("session");
        assert!(
            now.state.is_ended(),
            "session {} (`new` {i}) is {} after stop",
            s.id,
            now.state
        );
        let events = dense_log(&store, &s.id).await;
        assert!(
            matches!(events.last(), Some(EventBody::State { state, .. }) if state.is_ended()),
            "session {}: the last event is not its end: {:?}",
            s.id,
            events.last()
        );
    }
}
