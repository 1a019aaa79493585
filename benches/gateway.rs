//! The model gateway's cost (see benches/README.md), side by side in one run:
//!
//!   cargo bench --bench gateway
//!
//! A scripted Messages API on 127.0.0.1 streams server-sent events. The same requests go
//! to it straight and through firstmate's gateway (token check against SQLite, the real
//! key put on, the stream metered and relayed, the call stored):
//! 1. time to first byte of a streamed answer, over `FIRSTMATE_BENCH_CALLS` calls (200);
//! 2. throughput of one long streamed answer (about 60 MB of `content_block_delta`s);
//! 3. with Docker (and the images `firstmate:latest` and `firstmate-test-agent:latest`):
//!    the same call from inside containers, a client on Docker's default bridge calling
//!    the gateway on the host's bridge address vs a client on a session network (internal,
//!    no host address) calling it through the gateway relay, as workers do.

mod common;

use std::convert::Infallible;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::TokioIo;

use firstmate::config::Config;
use firstmate::gateway::Gateway;

const TOKEN: &str = "fm-bench-token";

fn sse(event: &str, data: &str) -> String {
    format!("event: {event}\ndata: {data}\n\n")
}

/// The answer: message_start, `blocks` frames of 64 text deltas each, the end.
fn answer(blocks: usize) -> Vec<Bytes> {
    let mut out = vec![Bytes::from(sse(
        "message_start",
        r#"{"type":"message_start","message":{"id":"msg_b","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[],"usage":{"input_tokens":100,"output_tokens":1}}}"#,
    ))];
    let delta = sse(
        "content_block_delta",
        r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"the quick brown fox jumps over the lazy dog, again and again and again. "}}"#,
    );
    let frame = Bytes::from(delta.repeat(64));
    out.extend(std::iter::repeat_n(frame, blocks));
    out.push(Bytes::from(
        sse(
            "message_delta",
            r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":500}}"#,
        ) + sse("message_stop", r#"{"type":"message_stop"}"#).as_str(),
    ));
    out
}

async fn upstream(listener: tokio::net::TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let service = hyper::service::service_fn(
                |req: hyper::Request<hyper::body::Incoming>| async move {
                    let blocks: usize = req
                        .uri()
                        .query()
                        .and_then(|q| q.strip_prefix("blocks="))
                        .and_then(|n| n.parse().ok())
                        .unwrap_or(1);
                    let _ = req.into_body().collect().await;
                    let frames = futures_util::stream::iter(
                        answer(blocks)
                            .into_iter()
                            .map(|b| Ok::<_, Infallible>(Frame::data(b))),
                    );
                    let resp = hyper::Response::builder()
                        .header("content-type", "text/event-stream")
                        .body(StreamBody::new(frames))
                        .expect("response");
                    Ok::<_, Infallible>(resp)
                },
            );
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Time to the first body byte, and the bytes read in all.
async fn call(client: &reqwest::Client, url: &str) -> (Duration, usize) {
    let t = Instant::now();
    let resp = client
        .post(url)
        .header("x-api-key", TOKEN)
        .header("content-type", "application/json")
        .body(r#"{"model":"claude-sonnet-4-5","stream":true,"max_tokens":10,"messages":[]}"#)
        .send()
        .await
        .expect("send");
    assert!(resp.status().is_success(), "status {}", resp.status());
    let mut body = resp.bytes_stream();
    let mut first = None;
    let mut n = 0;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.expect("chunk");
        first.get_or_insert_with(|| t.elapsed());
        n += chunk.len();
    }
    (first.unwrap_or_else(|| t.elapsed()), n)
}

fn percentile(v: &mut [Duration], p: usize) -> Duration {
    v.sort();
    v[((v.len() * p).div_ceil(100))
        .saturating_sub(1)
        .min(v.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    let calls: usize = std::env::var("FIRSTMATE_BENCH_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let up = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let up_addr = up.local_addr().expect("addr");
    tokio::spawn(upstream(up));

    let dir = tempfile::tempdir().expect("tempdir");
    let store = common::store_with_live_session(dir.path(), TOKEN).await;
    let text = format!(
        "[gateway]\nlisten = \"127.0.0.1:1\"\nurl = \"http://firstmate:1\"\n\
         [gateway.anthropic]\nupstream = \"http://{up_addr}\"\napi_key_env = \"K\"\n"
    );
    let env = |k: &str| (k == "K").then(|| "bench-real-key".to_string());
    let cfg = Config::from_str(&text, "bench.toml", dir.path(), &env).expect("config");
    let (gw, _limits) =
        Gateway::new(cfg.gateway.expect("gateway"), cfg.egress.allow, store).expect("gateway");
    let gl = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let gw_addr = gl.local_addr().expect("addr");
    // The same gateway where containers reach it (the Docker bridge's host address).
    let outer = tokio::net::TcpListener::bind("0.0.0.0:0")
        .await
        .expect("bind");
    let outer_port = outer.local_addr().expect("addr").port();
    tokio::spawn(gw.clone().serve(outer));
    tokio::spawn(gw.serve(gl));

    let client = reqwest::Client::new();
    let direct = format!("http://{up_addr}/v1/messages");
    let via = format!("http://{gw_addr}/anthropic/v1/messages");
    // Warm up both paths (connections, SQLite pages).
    for _ in 0..10 {
        call(&client, &direct).await;
        call(&client, &via).await;
    }
    let (mut d, mut g) = (Vec::new(), Vec::new());
    for _ in 0..calls {
        d.push(call(&client, &direct).await.0);
        g.push(call(&client, &via).await.0);
    }
    let blocks = 6000;
    let mut rates = Vec::new();
    for url in [&direct, &via] {
        let mut best = 0.0f64;
        for _ in 0..3 {
            let t = Instant::now();
            let (_, n) = call(&client, &format!("{url}?blocks={blocks}")).await;
            best = best.max(n as f64 / t.elapsed().as_secs_f64() / 1e6);
        }
        rates.push(best);
    }
    println!("calls: {calls}");
    println!(
        "time to first byte, direct:  median {:.2} ms, p95 {:.2} ms",
        ms(percentile(&mut d, 50)),
        ms(percentile(&mut d, 95))
    );
    println!(
        "time to first byte, gateway: median {:.2} ms, p95 {:.2} ms",
        ms(percentile(&mut g, 50)),
        ms(percentile(&mut g, 95))
    );
    println!(
        "streamed answer ({blocks} frames, ~{:.0} MB): direct {:.0} MB/s, gateway {:.0} MB/s ({:.0}%)",
        answer(blocks).iter().map(|b| b.len()).sum::<usize>() as f64 / 1e6,
        rates[0],
        rates[1],
        rates[1] / rates[0] * 100.0
    );
    match tokio::task::spawn_blocking(move || from_containers(outer_port, calls)).await {
        Ok(Ok((mut bridge, mut relay))) => {
            for (what, v) in [
                ("from the default bridge, direct", &mut bridge),
                ("from a session network, relay ", &mut relay),
            ] {
                println!(
                    "time to first byte {what}: median {:.2} ms, p95 {:.2} ms",
                    ms(percentile(v, 50)),
                    ms(percentile(v, 95))
                );
            }
        }
        Ok(Err(why)) => println!("from containers: skipped ({why})"),
        Err(e) => println!("from containers: failed ({e})"),
    }
}

/// A client in a container: `calls` streamed calls, each a new connection (as an agent's
/// HTTP client may make), the time to the first byte of each answer, in ms.
const CLIENT: &str = r#"
use IO::Socket::INET; use Time::HiRes qw(time);
my ($host, $port, $n, $token) = @ARGV;
my $body = '{"model":"claude-sonnet-4-5","stream":true,"max_tokens":10,"messages":[]}';
my @t;
for my $i (1 .. $n + 10) {
    my $t0 = time;
    my $s = IO::Socket::INET->new(PeerAddr => $host, PeerPort => $port, Proto => 'tcp') or die "connect: $!";
    print $s "POST /anthropic/v1/messages HTTP/1.1
Host: $host
x-api-key: $token
content-type: application/json
content-length: " . length($body) . "
Connection: close

$body";
    my ($first, $buf);
    while (sysread($s, $buf, 65536)) { $first //= time; }
    push @t, ($first - $t0) * 1000 if $i > 10;
}
print join(" ", @t), "
";
"#;

fn docker(args: &[&str]) -> Result<String, String> {
    let out = std::process::Command::new("docker")
        .args(args)
        .output()
        .map_err(|e| format!("docker: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "docker {}: {}",
            args.first().unwrap_or(&""),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn timings(out: &str) -> Vec<Duration> {
    out.split_whitespace()
        .filter_map(|t| t.parse::<f64>().ok())
        .map(|ms| Duration::from_secs_f64(ms / 1000.0))
        .collect()
}

fn from_containers(port: u16, calls: usize) -> Result<(Vec<Duration>, Vec<Duration>), String> {
    for image in ["firstmate:latest", "firstmate-test-agent:latest"] {
        docker(&["image", "inspect", image]).map_err(|_| format!("no image {image}"))?;
    }
    let id = std::process::id();
    let net = format!("fm-bench-net-{id}");
    let relay = format!("fm-bench-relay-{id}");
    struct Cleanup(String, String);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = docker(&["rm", "-f", &self.1]);
            let _ = docker(&["network", "rm", &self.0]);
        }
    }
    let _cleanup = Cleanup(net.clone(), relay.clone());
    docker(&[
        "network",
        "create",
        "--internal",
        "-o",
        "com.docker.network.bridge.inhibit_ipv4=true",
        &net,
    ])?;
    docker(&[
        "run",
        "-d",
        "--name",
        &relay,
        "firstmate:latest",
        "firstmate",
        "gateway-relay",
        "--listen",
        "0.0.0.0:8787",
        "--to",
        &format!("host-gateway:{port}"),
    ])?;
    let ready = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        docker(&["logs", &relay]).is_ok_and(|l| l.contains("relay ready"))
    });
    if !ready {
        return Err("the relay did not say it was ready".into());
    }
    docker(&["network", "connect", "--alias", "firstmate", &net, &relay])?;
    let n = calls.to_string();
    let run = |network: &str, host: &str, port: &str| {
        docker(&[
            "run",
            "--rm",
            "--network",
            network,
            "firstmate-test-agent:latest",
            "perl",
            "-e",
            CLIENT,
            host,
            port,
            &n,
            TOKEN,
        ])
    };
    // The host's address on docker0 (the network's IPAM may not say it).
    let ip = std::process::Command::new("ip")
        .args(["-4", "-o", "addr", "show", "docker0"])
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    let bridge_ip = String::from_utf8_lossy(&ip.stdout)
        .split_whitespace()
        .nth(3)
        .and_then(|a| a.split('/').next())
        .map(str::to_string)
        .ok_or("docker0 has no IPv4 address")?;
    let bridge = timings(&run("bridge", &bridge_ip, &port.to_string())?);
    let relayed = timings(&run(&net, "firstmate", "8787")?);
    if bridge.is_empty() || relayed.is_empty() {
        return Err("the clients printed no timings".into());
    }
    Ok((bridge, relayed))
}
