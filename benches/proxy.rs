//! Socket proxy benchmark on the real Docker daemon (see benches/README.md, "Socket proxy").
//!
//!   cargo bench --bench proxy     (needs dockerd, firstmate-test-agent:latest, and Debian's
//!                                  `haproxy` for the third column)
//!
//! Side by side in one run, three ways to reach the daemon: its socket directly,
//! `firstmate socket-proxy`, and HAProxy with the configuration Tecnativa's
//! docker-socket-proxy ships (benches/haproxy-tecnativa.cfg, CONTAINERS=1 POST=1):
//! 1. container cycles: create + start + wait + remove of a container running `true`
//!    (FIRSTMATE_BENCH_CYCLES, default 20 per target, interleaved);
//! 2. attach throughput: a container writes FIRSTMATE_BENCH_ATTACH_MB (default 50) MB to
//!    stdout, read through an attach (the hijacked connection), from the first byte to
//!    the end (FIRSTMATE_BENCH_ATTACH_ROUNDS, default 3; the best round counts);
//! 3. the cost of one request: `GET /containers/{id}/json` of a managed container
//!    (FIRSTMATE_BENCH_INSPECTS, default 200), median.
//!
//! The client is a few lines of blocking HTTP/1.1 over std sockets, the same for every
//! target, one connection per request.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const IMAGE: &str = "firstmate-test-agent:latest";
const SOCKET: &str = "/var/run/docker.sock";

#[derive(Clone)]
enum Target {
    Unix(String),
    Tcp(String),
}

enum Stream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Read for Stream {
    fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Unix(s) => s.read(b),
            Stream::Tcp(s) => s.read(b),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Unix(s) => s.write(b),
            Stream::Tcp(s) => s.write(b),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Unix(s) => s.flush(),
            Stream::Tcp(s) => s.flush(),
        }
    }
}

impl Target {
    fn connect(&self) -> Stream {
        match self {
            Target::Unix(p) => Stream::Unix(UnixStream::connect(p).expect("connect to the socket")),
            Target::Tcp(a) => {
                let s = TcpStream::connect(a).expect("connect to the proxy");
                s.set_nodelay(true).ok();
                Stream::Tcp(s)
            }
        }
    }

    /// One request on a fresh connection: (status, body).
    fn call(&self, method: &str, path: &str, body: &str) -> (u16, String) {
        let mut s = self.connect();
        let req = format!(
            "{method} /v1.41{path} HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).expect("send");
        let mut out = Vec::new();
        s.read_to_end(&mut out).expect("read");
        let text = String::from_utf8_lossy(&out).into_owned();
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        (status, body)
    }
}

fn create(t: &Target, instance: &str, cmd: &str) -> String {
    let body = format!(
        r#"{{"Image":"{IMAGE}","Cmd":["sh","-c","{cmd}"],"AttachStdout":true,"AttachStderr":true,
        "Labels":{{"firstmate.managed":"true","firstmate.instance":"{instance}"}},
        "HostConfig":{{"CapDrop":["ALL"],"SecurityOpt":["no-new-privileges"]}}}}"#
    );
    let (status, answer) = t.call("POST", "/containers/create", &body);
    assert_eq!(status, 201, "create failed: {answer}");
    let start = answer.find("\"Id\":\"").expect("an Id") + 6;
    answer[start..start + 64].to_string()
}

fn cycle(t: &Target, instance: &str) -> Duration {
    let t0 = Instant::now();
    let id = create(t, instance, "true");
    let (s, b) = t.call("POST", &format!("/containers/{id}/start"), "");
    assert_eq!(s, 204, "start failed: {b}");
    let (s, b) = t.call("POST", &format!("/containers/{id}/wait"), "");
    assert_eq!(s, 200, "wait failed: {b}");
    let (s, b) = t.call("DELETE", &format!("/containers/{id}"), "");
    assert_eq!(s, 204, "remove failed: {b}");
    t0.elapsed()
}

/// MB/s of `mb` MB written to stdout, read through an attach.
fn attach_throughput(t: &Target, instance: &str, mb: usize) -> f64 {
    let bytes = mb * 1_000_000;
    let id = create(t, instance, &format!("head -c {bytes} /dev/zero"));
    let mut s = t.connect();
    let req = format!(
        "POST /v1.41/containers/{id}/attach?stream=1&stdout=1&stderr=1 HTTP/1.1\r\n\
         Host: docker\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n"
    );
    s.write_all(req.as_bytes()).expect("attach");
    let mut r = BufReader::with_capacity(1 << 16, s);
    let mut line = String::new();
    r.read_line(&mut line).expect("attach status");
    assert!(line.contains(" 101 "), "attach answered {line}");
    loop {
        line.clear();
        r.read_line(&mut line).expect("attach headers");
        if line == "\r\n" || line.is_empty() {
            break;
        }
    }
    let (st, b) = t.call("POST", &format!("/containers/{id}/start"), "");
    assert_eq!(st, 204, "start failed: {b}");
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0usize;
    let mut first: Option<Instant> = None;
    loop {
        let n = r.read(&mut buf).expect("read the stream");
        if n == 0 {
            break;
        }
        first.get_or_insert_with(Instant::now);
        total += n;
    }
    let secs = first.map(|f| f.elapsed().as_secs_f64()).unwrap_or(f64::NAN);
    // 8 bytes of header per multiplexed frame; the payload is what counts.
    assert!(total >= bytes, "read {total} bytes of {bytes}");
    t.call("POST", &format!("/containers/{id}/wait"), "");
    t.call("DELETE", &format!("/containers/{id}?force=1"), "");
    bytes as f64 / 1e6 / secs
}

fn env_num(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The processes this run started and the containers it made, gone on drop.
struct Cleanup {
    children: Vec<Child>,
    instance: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let ids = Command::new("docker")
            .env_remove("DOCKER_HOST")
            .args([
                "ps",
                "-aq",
                "--filter",
                &format!("label=firstmate.instance={}", self.instance),
            ])
            .output();
        if let Ok(o) = ids {
            let ids: Vec<String> = String::from_utf8_lossy(&o.stdout)
                .lines()
                .map(str::to_string)
                .collect();
            if !ids.is_empty() {
                let _ = Command::new("docker")
                    .env_remove("DOCKER_HOST")
                    .arg("rm")
                    .arg("-f")
                    .args(&ids)
                    .output();
            }
        }
    }
}

fn start_proxy(cleanup: &mut Cleanup) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_firstmate"))
        .args([
            "socket-proxy",
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            &format!("unix://{SOCKET}"),
        ])
        .env("FIRSTMATE_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start firstmate socket-proxy");
    let mut err = BufReader::new(child.stderr.take().expect("stderr"));
    let mut line = String::new();
    let addr = loop {
        line.clear();
        if err.read_line(&mut line).unwrap_or(0) == 0 {
            panic!("firstmate socket-proxy ended without listening");
        }
        if let Some((_, rest)) = line.split_once("listening on ") {
            break rest.split(',').next().unwrap_or("").trim().to_string();
        }
    };
    // Keep draining its log so it never blocks on a full pipe.
    std::thread::spawn(move || std::io::copy(&mut err, &mut std::io::sink()));
    cleanup.children.push(child);
    addr
}

fn start_haproxy(cleanup: &mut Cleanup) -> Option<String> {
    if Command::new("haproxy").arg("-v").output().is_err() {
        eprintln!(
            "\n!!! haproxy is not installed (Debian: apt-get install haproxy): skipping that column !!!\n"
        );
        return None;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let addr = format!("127.0.0.1:{port}");
    let cfg = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/haproxy-tecnativa.cfg");
    let child = Command::new("haproxy")
        .args(["-f", cfg])
        .env("HAPROXY_BIND", &addr)
        .env("SOCKET_PATH", SOCKET)
        .env("LOG_LEVEL", "info")
        .env("CONTAINERS", "1")
        .env("POST", "1")
        .env("PING", "1")
        .env("VERSION", "1")
        .env("EVENTS", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start haproxy");
    cleanup.children.push(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(&addr).is_err() {
        assert!(
            Instant::now() < deadline,
            "haproxy did not listen on {addr}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Some(addr)
}

fn mean_ms(d: &[Duration]) -> f64 {
    d.iter().map(|d| d.as_secs_f64()).sum::<f64>() * 1000.0 / d.len().max(1) as f64
}

fn p50_ms(d: &[Duration]) -> f64 {
    let mut v: Vec<f64> = d.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return; // `cargo test --benches` probes; nothing to list.
    }
    let cycles = env_num("FIRSTMATE_BENCH_CYCLES", 20);
    let mb = env_num("FIRSTMATE_BENCH_ATTACH_MB", 50);
    let rounds = env_num("FIRSTMATE_BENCH_ATTACH_ROUNDS", 3);
    let inspects = env_num("FIRSTMATE_BENCH_INSPECTS", 200);
    let instance = format!(
        "bench-proxy-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let mut cleanup = Cleanup {
        children: Vec::new(),
        instance: instance.clone(),
    };

    let mut targets: Vec<(&str, Target)> = vec![("direct", Target::Unix(SOCKET.into()))];
    targets.push(("firstmate", Target::Tcp(start_proxy(&mut cleanup))));
    if let Some(addr) = start_haproxy(&mut cleanup) {
        targets.push(("haproxy", Target::Tcp(addr)));
    }
    let (s, b) = targets[0]
        .1
        .call("GET", &format!("/images/{IMAGE}/json"), "");
    assert_eq!(
        s, 200,
        "the image {IMAGE} is missing (scripts/build-images test-agent): {b}"
    );
    for (_, t) in &targets {
        cycle(t, &instance); // warm-up
    }

    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); targets.len()];
    for _ in 0..cycles {
        for (i, (_, t)) in targets.iter().enumerate() {
            times[i].push(cycle(t, &instance));
        }
    }
    // Per-request cost: inspecting a managed container (the proxy asks Docker twice).
    let probe = create(&targets[0].1, &instance, "true");
    let mut inspect: Vec<Vec<Duration>> = vec![Vec::new(); targets.len()];
    for _ in 0..inspects {
        for (i, (_, t)) in targets.iter().enumerate() {
            let t0 = Instant::now();
            let (s, b) = t.call("GET", &format!("/containers/{probe}/json"), "");
            assert_eq!(s, 200, "inspect failed: {b}");
            inspect[i].push(t0.elapsed());
        }
    }
    let mut speeds: Vec<f64> = vec![0.0; targets.len()];
    for _ in 0..rounds {
        for (i, (_, t)) in targets.iter().enumerate() {
            speeds[i] = speeds[i].max(attach_throughput(t, &instance, mb));
        }
    }

    println!(
        "\nsocket proxy benchmark: {cycles} create+start+wait+remove cycles per target, \
         {inspects} inspects, attach of {mb} MB (best of {rounds})\n"
    );
    print!("{:<28}", "");
    for (name, _) in &targets {
        print!("{name:>12}");
    }
    println!();
    let row = |label: &str, f: &dyn Fn(usize) -> f64| {
        print!("{label:<28}");
        for i in 0..targets.len() {
            print!("{:>12.1}", f(i));
        }
        println!();
    };
    row("cycle mean (ms)", &|i| mean_ms(&times[i]));
    row("cycle p50 (ms)", &|i| p50_ms(&times[i]));
    row("inspect p50 (ms)", &|i| p50_ms(&inspect[i]));
    row("attach throughput (MB/s)", &|i| speeds[i]);
    println!();
    for (i, (name, _)) in targets.iter().enumerate().skip(1) {
        println!(
            "{name} / direct: cycle time x{:.2}, inspect time x{:.2}, attach throughput x{:.2}",
            mean_ms(&times[i]) / mean_ms(&times[0]),
            p50_ms(&inspect[i]) / p50_ms(&inspect[0]),
            speeds[i] / speeds[0]
        );
    }
    if targets.len() == 3 {
        println!(
            "firstmate / haproxy: cycle time x{:.2}, inspect time x{:.2}, attach throughput x{:.2}",
            mean_ms(&times[1]) / mean_ms(&times[2]),
            p50_ms(&inspect[1]) / p50_ms(&inspect[2]),
            speeds[1] / speeds[2]
        );
    }
}
