//! `[metrics] listen`: `GET /metrics` (Prometheus text format 0.0.4) and `GET /healthz`
//! (200 `ok` when the database and Docker answer, else 503 and what is wrong).
//!
//! Every figure is read when scraped (the store's counts, the engine's counters), so
//! it is true whichever engine changed it. [`render`] is pure and tested below.

use std::convert::Infallible;
use std::fmt::Write as _;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tracing::{debug, warn};

use crate::engine::Engine;
use crate::event::SessionState;
use crate::gateway::egress::{EgressCounts, Outcome};
use crate::store::StoreMetrics;

/// What one scrape reports.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub store: StoreMetrics,
    /// Session tasks running in this process.
    pub live_tasks: usize,
    /// Events stored and published by this process since it started.
    pub events_published: u64,
    /// Requests to this process's egress proxy, by outcome.
    pub egress: EgressCounts,
}

/// The Prometheus text of a snapshot.
pub fn render(s: &Snapshot) -> String {
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str, samples: &[(String, String)]| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    let states: Vec<(String, String)> = SessionState::ALL
        .iter()
        .map(|st| {
            let n = s
                .store
                .sessions
                .iter()
                .filter(|(name, _)| name == st.as_str())
                .map(|(_, n)| n)
                .sum::<i64>();
            (format!("{{state=\"{}\"}}", st.as_str()), n.to_string())
        })
        .collect();
    family(
        "firstmate_sessions",
        "gauge",
        "Sessions of this instance by state.",
        &states,
    );
    family(
        "firstmate_session_tasks",
        "gauge",
        "Sessions whose task runs in this process.",
        &[(String::new(), s.live_tasks.to_string())],
    );
    family(
        "firstmate_turns_total",
        "counter",
        "Agent turns finished, over all sessions of this instance.",
        &[(String::new(), s.store.turns.to_string())],
    );
    family(
        "firstmate_events_published_total",
        "counter",
        "Session events stored and published by this process.",
        &[(String::new(), s.events_published.to_string())],
    );
    let api = &s.store.api;
    family(
        "firstmate_gateway_calls_total",
        "counter",
        "Model API calls that went through the gateway.",
        &[(String::new(), api.calls.to_string())],
    );
    let u = &api.usage;
    family(
        "firstmate_gateway_tokens_total",
        "counter",
        "Tokens of the model API calls, as the gateway counted them.",
        &[
            ("{kind=\"input\"}".into(), u.input_tokens.to_string()),
            ("{kind=\"output\"}".into(), u.output_tokens.to_string()),
            (
                "{kind=\"cache_read\"}".into(),
                u.cache_read_tokens.to_string(),
            ),
            (
                "{kind=\"cache_write\"}".into(),
                u.cache_write_tokens.to_string(),
            ),
        ],
    );
    family(
        "firstmate_gateway_cost_usd_total",
        "counter",
        "What the model API calls cost, in US dollars, at the gateway's prices.",
        &[(String::new(), format!("{}", api.cost_usd))],
    );
    let count = |outcome: &str| {
        s.store
            .approvals
            .iter()
            .filter(|(o, _)| o == outcome)
            .map(|(_, n)| n)
            .sum::<i64>()
    };
    let approvals: Vec<(String, String)> = crate::approval::Answer::ALL
        .iter()
        .map(|a| {
            (
                format!("{{outcome=\"{}\"}}", a.as_str()),
                count(a.as_str()).to_string(),
            )
        })
        .collect();
    family(
        "firstmate_approvals_total",
        "counter",
        "Approvals answered, by outcome (approved, always, denied, timed_out).",
        &approvals,
    );
    family(
        "firstmate_approvals_waiting",
        "gauge",
        "Approvals that wait for a person.",
        &[(String::new(), count("waiting").to_string())],
    );
    let egress: Vec<(String, String)> = Outcome::ALL
        .iter()
        .map(|o| {
            (
                format!("{{outcome=\"{}\"}}", o.as_str()),
                s.egress.get(*o).to_string(),
            )
        })
        .collect();
    family(
        "firstmate_egress_requests_total",
        "counter",
        "Requests to the gateway's egress proxy since this process started, by outcome \
         (allowed, or refused: not_allowed, private, unresolved, bad_token).",
        &egress,
    );
    out
}

async fn snapshot(engine: &Engine) -> Result<Snapshot, String> {
    let store = engine
        .store()
        .metrics(&engine.config().docker.instance)
        .await
        .map_err(|e| e.to_string())?;
    Ok(Snapshot {
        store,
        live_tasks: engine.live_tasks(),
        events_published: engine.events_published(),
        egress: engine
            .gateway()
            .map(|g| g.egress_counts())
            .unwrap_or_default(),
    })
}

fn text(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(Bytes::from(body)));
    *res.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        res.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    res
}

async fn handle<B>(engine: Engine, req: Request<B>) -> Response<Full<Bytes>> {
    const PLAIN: &str = "text/plain; charset=utf-8";
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => match snapshot(&engine).await {
            Ok(s) => text(StatusCode::OK, "text/plain; version=0.0.4", render(&s)),
            Err(e) => {
                warn!(error = %e, "metrics: cannot read the store");
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    PLAIN,
                    format!("cannot read the database: {e}\n"),
                )
            }
        },
        (&Method::GET, "/healthz") => match engine.health().await {
            Ok(()) => text(StatusCode::OK, PLAIN, "ok\n".into()),
            Err(e) => text(StatusCode::SERVICE_UNAVAILABLE, PLAIN, format!("{e}\n")),
        },
        _ => text(
            StatusCode::NOT_FOUND,
            PLAIN,
            "not found: this server answers GET /metrics and GET /healthz\n".into(),
        ),
    }
}

/// Serves `/metrics` and `/healthz` on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, engine: Engine) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, "metrics: accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let engine = engine.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let engine = engine.clone();
                async move { Ok::<_, Infallible>(handle(engine, req).await) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                debug!(%peer, error = %e, "metrics: connection ended");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Usage;
    use crate::store::ApiUsage;

    #[test]
    fn every_state_is_reported_and_the_text_is_prometheus() {
        let s = Snapshot {
            store: StoreMetrics {
                sessions: vec![("waiting".into(), 2), ("stopped".into(), 5)],
                turns: 9,
                api: ApiUsage {
                    calls: 3,
                    usage: Usage {
                        input_tokens: 600,
                        output_tokens: 150,
                        cache_read_tokens: 0,
                        cache_write_tokens: 7,
                    },
                    cost_usd: 0.0009,
                },
                approvals: vec![
                    ("approved".into(), 3),
                    ("timed_out".into(), 1),
                    ("waiting".into(), 2),
                ],
            },
            live_tasks: 2,
            events_published: 41,
            egress: EgressCounts {
                by_outcome: [4, 3, 2, 1, 0],
            },
        };
        let text = render(&s);
        for want in [
            "# TYPE firstmate_sessions gauge",
            "firstmate_sessions{state=\"waiting\"} 2",
            "firstmate_sessions{state=\"stopped\"} 5",
            "firstmate_sessions{state=\"queued\"} 0",
            "firstmate_session_tasks 2",
            "firstmate_turns_total 9",
            "firstmate_events_published_total 41",
            "firstmate_gateway_calls_total 3",
            "firstmate_gateway_tokens_total{kind=\"cache_write\"} 7",
            "firstmate_gateway_cost_usd_total 0.0009",
            "# TYPE firstmate_egress_requests_total counter",
            "firstmate_egress_requests_total{outcome=\"allowed\"} 4",
            "firstmate_egress_requests_total{outcome=\"not_allowed\"} 3",
            "firstmate_egress_requests_total{outcome=\"private\"} 2",
            "firstmate_egress_requests_total{outcome=\"unresolved\"} 1",
            "firstmate_egress_requests_total{outcome=\"bad_token\"} 0",
            "# TYPE firstmate_approvals_total counter",
            "firstmate_approvals_total{outcome=\"approved\"} 3",
            "firstmate_approvals_total{outcome=\"always\"} 0",
            "firstmate_approvals_total{outcome=\"denied\"} 0",
            "firstmate_approvals_total{outcome=\"timed_out\"} 1",
            "firstmate_approvals_waiting 2",
        ] {
            assert!(
                text.lines().any(|l| l == want),
                "{want:?} missing in\n{text}"
            );
        }
        // Every sample line is `name{labels} value` with a number.
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            let value = l.rsplit(' ').next().unwrap_or_default();
            assert!(value.parse::<f64>().is_ok(), "{l}");
        }
    }
}
