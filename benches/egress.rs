//! The egress proxy's throughput (see benches/README.md):
//!
//!   cargo bench --bench egress
//!
//! An origin on the host, bound to the gateway address (198.51.100.1) of a Docker network
//! made with `--subnet 198.51.100.0/24`, so the proxy sees a public-looking address it
//! allows (loopback it would refuse). It answers every GET with
//! `FIRSTMATE_BENCH_EGRESS_MB` (256) MB. The same download goes to it straight, through
//! firstmate's gateway as a CONNECT tunnel (token and session checked against SQLite, the
//! allow list, one lookup, then bytes copied both ways), and as a forwarded absolute-URI
//! request (hyper on both sides); best of three each, in MB/s.

mod common;

use std::process::{Command, Stdio};
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use firstmate::config::Config;
use firstmate::gateway::Gateway;

const TOKEN: &str = "fm-bench-egress-token";
const ORIGIN_IP: &str = "198.51.100.1";
const CHUNK: usize = 64 * 1024;

fn docker(args: &[&str]) -> bool {
    Command::new("docker")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The network whose gateway address the origin listens on; removed on drop.
struct Net(String);

impl Drop for Net {
    fn drop(&mut self) {
        docker(&["network", "rm", &self.0]);
    }
}

fn b64(input: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in input.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Serves `size` bytes to every request.
async fn origin(listener: tokio::net::TcpListener, size: usize) {
    loop {
        let Ok((mut s, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let mut head = Vec::new();
            let mut b = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut b).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => head.extend_from_slice(&b[..n]),
                }
            }
            let h =
                format!("HTTP/1.1 200 OK\r\nContent-Length: {size}\r\nConnection: close\r\n\r\n");
            if s.write_all(h.as_bytes()).await.is_err() {
                return;
            }
            let chunk = vec![b'x'; CHUNK];
            let mut left = size;
            while left > 0 {
                let n = left.min(CHUNK);
                if s.write_all(&chunk[..n]).await.is_err() {
                    return;
                }
                left -= n;
            }
        });
    }
}

/// Reads an answer's head and then its body to the end; the body's length.
async fn read_answer(s: &mut TcpStream) -> usize {
    let mut buf = vec![0u8; CHUNK];
    let mut head = Vec::new();
    let body_start;
    loop {
        let n = s.read(&mut buf).await.expect("read");
        assert!(n > 0, "closed before the head ended");
        head.extend_from_slice(&buf[..n]);
        if let Some(i) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            let text = String::from_utf8_lossy(&head[..i]);
            assert!(text.starts_with("HTTP/1.1 200"), "{text}");
            body_start = head.len() - (i + 4);
            break;
        }
    }
    let mut total = body_start;
    loop {
        let n = s.read(&mut buf).await.expect("read");
        if n == 0 {
            return total;
        }
        total += n;
    }
}

/// One download: straight to the origin, through a CONNECT tunnel, or forwarded.
async fn download(how: &str, origin: &str, gateway: &str, auth: &str) -> usize {
    match how {
        "direct" => {
            let mut s = TcpStream::connect(origin).await.expect("origin");
            let req = format!("GET /big HTTP/1.1\r\nHost: {origin}\r\nConnection: close\r\n\r\n");
            s.write_all(req.as_bytes()).await.expect("write");
            read_answer(&mut s).await
        }
        "connect" => {
            let mut s = TcpStream::connect(gateway).await.expect("gateway");
            let req = format!(
                "CONNECT {origin} HTTP/1.1\r\nHost: {origin}\r\nProxy-Authorization: Basic {auth}\r\n\r\n"
            );
            s.write_all(req.as_bytes()).await.expect("write");
            // The CONNECT's answer: a head and no body.
            let mut head = Vec::new();
            let mut b = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                let n = s.read(&mut b).await.expect("read");
                assert!(n == 1, "the gateway closed the CONNECT");
                head.push(b[0]);
            }
            let text = String::from_utf8_lossy(&head);
            assert!(text.starts_with("HTTP/1.1 200"), "{text}");
            let req = format!("GET /big HTTP/1.1\r\nHost: {origin}\r\nConnection: close\r\n\r\n");
            s.write_all(req.as_bytes()).await.expect("write");
            read_answer(&mut s).await
        }
        _ => {
            let mut s = TcpStream::connect(gateway).await.expect("gateway");
            let req = format!(
                "GET http://{origin}/big HTTP/1.1\r\nHost: {origin}\r\nProxy-Authorization: Basic {auth}\r\nConnection: close\r\n\r\n"
            );
            s.write_all(req.as_bytes()).await.expect("write");
            read_answer(&mut s).await
        }
    }
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    let mb: usize = std::env::var("FIRSTMATE_BENCH_EGRESS_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    if !docker(&["info"]) {
        eprintln!("\n!!! SKIPPING the egress benchmark: no Docker daemon answers !!!\n");
        return;
    }
    let name = format!("fm-bench-egress-{}", std::process::id());
    assert!(
        docker(&[
            "network",
            "create",
            "--subnet",
            "198.51.100.0/24",
            "--gateway",
            ORIGIN_IP,
            "--label",
            "firstmate.test=bench-egress",
            &name,
        ]),
        "docker network create --subnet 198.51.100.0/24 failed (a network on it already?)"
    );
    let _net = Net(name);

    let ol = tokio::net::TcpListener::bind((ORIGIN_IP, 0))
        .await
        .expect("bind the origin");
    let origin_addr = ol.local_addr().expect("addr").to_string();
    tokio::spawn(origin(ol, mb * 1_000_000));

    let dir = tempfile::tempdir().expect("tempdir");
    let store = common::store_with_live_session(dir.path(), TOKEN).await;
    let text = format!(
        "[gateway]\nlisten = \"127.0.0.1:1\"\nurl = \"http://firstmate:1\"\n\
         [egress]\nallow = [\"{origin_addr}\"]\n"
    );
    let cfg = Config::from_str(&text, "bench.toml", dir.path(), &|_: &str| None).expect("config");
    let (gw, _reports) =
        Gateway::new(cfg.gateway.expect("gateway"), cfg.egress.allow, store).expect("gateway");
    let gl = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let gw_addr = gl.local_addr().expect("addr").to_string();
    tokio::spawn(gw.serve(gl));
    let auth = b64(format!("firstmate:{TOKEN}").as_bytes());

    println!("download of {mb} MB from {origin_addr}, best of 3:");
    let mut direct = 0.0;
    for how in ["direct", "connect", "forward"] {
        let mut best = 0.0f64;
        for _ in 0..3 {
            let t = Instant::now();
            let n = download(how, &origin_addr, &gw_addr, &auth).await;
            assert_eq!(n, mb * 1_000_000, "{how}: short body");
            best = best.max(n as f64 / t.elapsed().as_secs_f64() / 1e6);
        }
        if how == "direct" {
            direct = best;
        }
        println!(
            "{how:>8}: {best:.0} MB/s ({:.0}% of direct)",
            best / direct * 100.0
        );
    }
}
