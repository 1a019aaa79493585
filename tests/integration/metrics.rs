//! `[metrics]`: `GET /healthz` and `GET /metrics` of a running `firstmate run` tell the
//! truth about the sessions in the database.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use crate::support::worker::free_port;
use crate::support::{Env, session_ids, stdout, text};

/// `GET path` on 127.0.0.1:port: the status and the body, or None when nothing answers.
fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let status = out.split_whitespace().nth(1)?.parse().ok()?;
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((status, body))
}

#[test]
fn metrics_and_health_of_a_running_bot() {
    let port = free_port("127.0.0.1");
    let Some(env) = Env::new(&format!("\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n")) else {
        return;
    };
    // One session that ran two turns and stopped, and one still waiting.
    let out = env.console("new say one\nsay two\nstop\nnew say three\n");
    assert!(out.status.success(), "{}", text(&out));
    let ids = session_ids(&stdout(&out));
    assert_eq!(ids.len(), 2, "{}", text(&out));

    let service = crate::support::service::Service::spawn(&env, "info", &[]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let health = loop {
        if let Some(h) = get(port, "/healthz") {
            break Some(h);
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let metrics = get(port, "/metrics");
    let other = get(port, "/nothing");
    let log = service.kill();

    assert_eq!(health, Some((200, "ok\n".to_string())), "{log}");
    let (status, body) = metrics.expect("no answer on /metrics");
    assert_eq!(status, 200, "{body}");
    for want in [
        "firstmate_sessions{state=\"stopped\"} 1",
        "firstmate_sessions{state=\"waiting\"} 1",
        "firstmate_sessions{state=\"failed\"} 0",
        "firstmate_turns_total 3",
        // `run` re-attached to the waiting session.
        "firstmate_session_tasks 1",
        "firstmate_gateway_calls_total 0",
    ] {
        assert!(
            body.lines().any(|l| l == want),
            "{want:?} missing in\n{body}"
        );
    }
    assert_eq!(other.map(|o| o.0), Some(404));
}
