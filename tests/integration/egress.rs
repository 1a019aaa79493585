//! The gateway's egress proxy (SPEC section 11), from the host, with a real HTTP client
//! (curl) and the token a real session's container was given: a host not on
//! `[egress] allow` gets 403, a listed name that resolves to loopback or does not resolve
//! gets 403, a bad or missing token 407; a listed address literal is reached both through
//! a CONNECT tunnel and as a forwarded absolute URI. The origin is a small HTTP server on
//! the gateway address (198.51.100.1) of a Docker network made with
//! `--subnet 198.51.100.0/24`: an address outside every range the proxy refuses. `/metrics`
//! counts each outcome, and the session's transcript says each refused host once.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::service::Service;
use crate::support::worker::{free_port, quiet, suffix};
use crate::support::{Env, inspect, session_ids, stdout, text};

const ORIGIN_IP: &str = "198.51.100.1";
const BODY: &str = "hello from the origin";

/// A Docker network on 198.51.100.0/24 (its gateway, on the host, is 198.51.100.1);
/// removed on drop.
struct DocNet {
    name: String,
}

impl DocNet {
    fn new() -> DocNet {
        // A network a crashed run left behind would hold the subnet.
        let stale = Command::new("docker")
            .args([
                "network",
                "ls",
                "-q",
                "--filter",
                "label=firstmate.test=egress",
            ])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        for id in stale.split_whitespace() {
            quiet(&["network", "rm", id]);
        }
        let name = format!("fm-egress-{}", suffix());
        let out = Command::new("docker")
            .args([
                "network",
                "create",
                "--subnet",
                "198.51.100.0/24",
                "--gateway",
                ORIGIN_IP,
                "--label",
                "firstmate.test=egress",
                &name,
            ])
            .output()
            .expect("docker network create");
        assert!(
            out.status.success(),
            "docker network create --subnet 198.51.100.0/24: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        DocNet { name }
    }
}

impl Drop for DocNet {
    fn drop(&mut self) {
        quiet(&["network", "rm", &self.name]);
    }
}

/// An HTTP/1.1 origin on `ip:port` that answers every request with [`BODY`] and keeps
/// each request's head.
fn origin(ip: &str, port: u16) -> Arc<Mutex<Vec<String>>> {
    let listener = TcpListener::bind((ip, port)).expect("bind the origin");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let keep = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let keep = keep.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().expect("clone"));
                let mut head = String::new();
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    head.push_str(&line);
                }
                keep.lock().expect("lock").push(head);
                let _ = write!(
                    conn,
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{BODY}",
                    BODY.len()
                );
            });
        }
    });
    seen
}

/// curl through `proxy` (`tunnel`: `-p`, a CONNECT tunnel even for http://): the HTTP
/// status of the answer (or of the CONNECT, when the proxy refused it) and the body.
fn curl(proxy: &str, url: &str, tunnel: bool) -> (u16, String) {
    let mut c = curl_cmd();
    c.args(["-sS", "--max-time", "20", "-x", proxy])
        .args(["-w", "\n%{http_code} %{http_connect}"]);
    if tunnel {
        c.arg("-p");
    }
    let out = c
        .arg(url)
        .output()
        .expect("curl (Debian: apt-get install curl)");
    let all = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, codes) = all.rsplit_once('\n').unwrap_or(("", &all));
    let (code, connect) = codes.split_once(' ').unwrap_or((codes, "0"));
    let code: u16 = code.parse().unwrap_or(0);
    let connect: u16 = connect.parse().unwrap_or(0);
    // A refused CONNECT (`-p`, or an https:// URL) leaves no answer of the origin: its
    // status is the proxy's.
    let status = if connect != 200 && connect != 0 {
        connect
    } else {
        code
    };
    (status, body.to_string())
}

/// curl, with none of the caller's proxy settings.
fn curl_cmd() -> Command {
    let mut c = Command::new("curl");
    for v in [
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
        "NO_PROXY",
        "no_proxy",
    ] {
        c.env_remove(v);
    }
    c
}

/// `GET /metrics` on 127.0.0.1:port.
fn metrics(port: u16) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("metrics listener");
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut out = String::new();
    std::io::Read::read_to_string(&mut s, &mut out).expect("read");
    out
}

#[test]
fn egress_proxy_allows_listed_hosts_and_refuses_the_rest() {
    let gw_port = free_port("0.0.0.0");
    let metrics_port = free_port("127.0.0.1");
    let origin_port = free_port("0.0.0.0");
    // Workers reach the gateway as firstmate:PORT (through the relay); this test, on the
    // host, at 127.0.0.1:PORT.
    let gw = format!("127.0.0.1:{gw_port}");
    let Some(env) = Env::new(&format!(
        r#"
[gateway]
listen = "0.0.0.0:{gw_port}"
url = "http://firstmate:{gw_port}"

[metrics]
listen = "127.0.0.1:{metrics_port}"

[egress]
allow = ["{ORIGIN_IP}:{origin_port}", "localhost:{origin_port}", "nothing-here.invalid"]
"#
    )) else {
        return;
    };
    let _net = DocNet::new();
    let seen = origin(ORIGIN_IP, origin_port);

    let service = Service::start_logging(&env, "firstmate=debug");
    let out = env.console("new say hi\n");
    assert!(out.status.success(), "{}", text(&out));
    let ids = session_ids(&stdout(&out));
    let id = ids
        .first()
        .cloned()
        .unwrap_or_else(|| panic!("no session: {}", text(&out)));

    // The container's proxy settings carry its token; the model API stays direct.
    let vars: Vec<String> = inspect(&format!("firstmate-{id}"))["Config"]["Env"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    let var = |name: &str| {
        vars.iter()
            .find_map(|v| v.strip_prefix(&format!("{name}=")).map(str::to_string))
            .unwrap_or_else(|| panic!("no {name} in {vars:?}"))
    };
    let token = var("ANTHROPIC_API_KEY");
    let in_worker = var("HTTPS_PROXY");
    assert_eq!(
        in_worker,
        format!("http://firstmate:{token}@firstmate:{gw_port}")
    );
    for name in ["HTTP_PROXY", "http_proxy", "https_proxy"] {
        assert_eq!(var(name), in_worker, "{name}");
    }
    assert_eq!(var("NO_PROXY"), "firstmate,localhost,127.0.0.1");
    assert_eq!(
        var("ANTHROPIC_BASE_URL"),
        format!("http://firstmate:{gw_port}/anthropic")
    );
    let proxy = format!("http://firstmate:{token}@{gw}");

    let origin_url = format!("http://{ORIGIN_IP}:{origin_port}");
    // Allowed: an absolute URI, forwarded, and a CONNECT tunnel.
    assert_eq!(
        curl(&proxy, &format!("{origin_url}/forwarded?x=1"), false),
        (200, BODY.to_string())
    );
    assert_eq!(
        curl(&proxy, &format!("{origin_url}/tunnelled"), true),
        (200, BODY.to_string())
    );
    // Not on the list (twice: said once), also as a CONNECT; a listed host on a port the
    // pattern does not name.
    for _ in 0..2 {
        let (status, body) = curl(&proxy, "http://example.com/", false);
        assert_eq!(status, 403, "{body}");
        assert!(body.contains("not on [egress] allow"), "{body}");
    }
    assert_eq!(curl(&proxy, "https://example.com/", false).0, 403);
    let (status, body) = curl(&proxy, &format!("http://{ORIGIN_IP}:81/"), false);
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("allows 443 and 80 only"), "{body}");
    // Listed, but loopback, and a name that does not resolve.
    let (status, body) = curl(&proxy, &format!("http://localhost:{origin_port}/"), true);
    assert_eq!(status, 403, "{body}");
    let (status, body) = curl(&proxy, &format!("http://localhost:{origin_port}/"), false);
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("a loopback address"), "{body}");
    let (status, body) = curl(&proxy, "http://nothing-here.invalid/", false);
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("cannot resolve"), "{body}");
    // A made-up token, and none.
    let bad = format!("http://firstmate:fm-made-up@{gw}");
    assert_eq!(curl(&bad, &format!("{origin_url}/"), false).0, 407);
    assert_eq!(curl(&bad, &format!("{origin_url}/"), true).0, 407);
    let bare = curl_cmd()
        .args([
            "-sS",
            "-i",
            "--max-time",
            "20",
            "-x",
            &format!("http://{gw}"),
        ])
        .arg(format!("{origin_url}/"))
        .output()
        .expect("curl");
    let bare = String::from_utf8_lossy(&bare.stdout).to_ascii_lowercase();
    assert!(bare.starts_with("http/1.1 407"), "{bare}");
    assert!(
        bare.contains("proxy-authenticate: basic realm=\"firstmate egress\""),
        "{bare}"
    );

    // From inside the worker, with its own settings (its only way out is the relay):
    // a CONNECT to the listed origin is tunnelled, to a host not listed or a listed name
    // on loopback refused.
    let connect = |target: &str| {
        let script = format!(
            r#"a=${{HTTPS_PROXY#http://}}; cred=${{a%%@*}}; hp=${{a#*@}}; hp=${{hp%/}}
exec 3<>/dev/tcp/${{hp%:*}}/${{hp#*:}} || exit 9
printf 'CONNECT {target} HTTP/1.1\r\nHost: {target}\r\nProxy-Authorization: Basic %s\r\n\r\n' "$(printf %s "$cred" | base64 -w0)" >&3
head -1 <&3"#
        );
        let out = Command::new("docker")
            .args(["exec", &format!("firstmate-{id}"), "bash", "-c", &script])
            .output()
            .expect("docker exec");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let allowed = connect(&format!("{ORIGIN_IP}:{origin_port}"));
    assert!(allowed.starts_with("HTTP/1.1 200"), "{allowed:?}");
    let refused = connect("example.com:443");
    assert!(refused.starts_with("HTTP/1.1 403"), "{refused:?}");
    let private = connect(&format!("localhost:{origin_port}"));
    assert!(private.starts_with("HTTP/1.1 403"), "{private:?}");

    // The origin saw the allowed requests (the worker's tunnel sent none), and neither
    // the token nor any Proxy-*.
    let heads: Vec<String> = seen
        .lock()
        .expect("lock")
        .iter()
        .filter(|h| !h.is_empty())
        .cloned()
        .collect();
    assert_eq!(heads.len(), 2, "{heads:#?}");
    assert!(
        heads[0].starts_with("GET /forwarded?x=1 HTTP/1.1\r\n"),
        "{heads:#?}"
    );
    assert!(
        heads[1].starts_with("GET /tunnelled HTTP/1.1\r\n"),
        "{heads:#?}"
    );
    for h in &heads {
        assert!(
            h.to_ascii_lowercase()
                .contains(&format!("host: {ORIGIN_IP}:{origin_port}")),
            "{h}"
        );
        assert!(!h.contains(&token), "the token reached the origin: {h}");
        assert!(!h.to_ascii_lowercase().contains("proxy-"), "{h}");
    }

    let m = metrics(metrics_port);
    for want in [
        "firstmate_egress_requests_total{outcome=\"allowed\"} 3",
        "firstmate_egress_requests_total{outcome=\"not_allowed\"} 5",
        "firstmate_egress_requests_total{outcome=\"private\"} 3",
        "firstmate_egress_requests_total{outcome=\"unresolved\"} 1",
        "firstmate_egress_requests_total{outcome=\"bad_token\"} 3",
    ] {
        assert!(m.lines().any(|l| l == want), "{want:?} missing in\n{m}");
    }

    // The thread hears once per refused host.
    let wanted = [
        "egress to example.com refused: not on [egress] allow (bot.toml)",
        &format!("egress to {ORIGIN_IP} refused: not on [egress] allow"),
        "egress to localhost refused: it resolves to",
        "egress to nothing-here.invalid refused: cannot resolve it",
    ];
    let deadline = Instant::now() + Duration::from_secs(20);
    let transcript = loop {
        let out = env.firstmate(&["sessions", "logs", &id]);
        assert!(out.status.success(), "{}", text(&out));
        let t = stdout(&out);
        if wanted.iter().all(|w| t.contains(w)) || Instant::now() > deadline {
            break t;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    for w in wanted {
        assert_eq!(
            transcript.matches(w).count(),
            1,
            "{w:?} not said exactly once in\n{transcript}"
        );
    }
    assert_eq!(transcript.matches("egress to").count(), 4, "{transcript}");

    let log = service.log();
    assert!(
        log.contains("egress: refused") && log.contains("example.com"),
        "{log}"
    );
    assert!(!log.contains(&token), "the token is in the service's log");
    drop(service);
}
