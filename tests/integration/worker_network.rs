//! From inside a worker, as a prompt-injected agent would try: each session sits on a
//! network of its own with no route out, and the only thing it reaches is the gateway
//! (through the gateway relay, firstmate:latest). Not the host (neither the Docker
//! bridge's address nor the machine's own), not cloud metadata, not a server on another
//! Docker network standing in for the internet, not another session's worker, and no
//! name resolves but the gateway's.
//!
//! A probe is bash's `/dev/tcp`: "Connection refused" means the address was reached (no
//! listener), "No route to host" or a timeout means it was not; the gateway, reached and
//! answering, is the probe's own proof that it can tell.

use std::process::Command;
use std::time::Duration;

use crate::support::worker::free_port;
use crate::support::{Env, inspect, lines_of, run_with_timeout, session_ids, stdout, text};

/// The relay's image: `scripts/test` builds it from the binary under test.
const RELAY_IMAGE: &str = "firstmate:latest";

fn have_relay_image() -> bool {
    let ok = Command::new("docker")
        .args(["image", "inspect", RELAY_IMAGE])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        let why = format!(
            "the gateway relay image {RELAY_IMAGE} is missing: run \
             FIRSTMATE_BOT_BINARY=target/debug/firstmate scripts/build-images bot"
        );
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{why}");
        }
        eprintln!("\n!!! SKIPPING a worker network test: {why} !!!\n");
    }
    ok
}

/// A shell line that tries a TCP connection and says what happened, tagged.
fn probe(tag: &str, host: &str, port: u16) -> String {
    format!(
        "timeout 4 bash -c 'echo > /dev/tcp/{host}/{port}' 2>/tmp/{tag}; r=$?; sed 's/^/{tag}: /' /tmp/{tag}; echo \"{tag}: rc=$r\""
    )
}

/// What the probe tagged `tag` printed.
fn outcome(lines: &[String], tag: &str) -> String {
    lines
        .iter()
        .filter_map(|l| l.strip_prefix(&format!("{tag}: ")))
        .collect::<Vec<_>>()
        .join(" | ")
}

fn assert_unreachable(lines: &[String], tag: &str) {
    let o = outcome(lines, tag);
    assert!(
        o.contains("No route to host") || o.contains("rc=124"),
        "{tag} was reached from inside a worker (or the probe did not run): {o:?}\n{}",
        lines.join("\n")
    );
}

fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().expect("docker");
    assert!(out.status.success(), "docker {args:?}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A Docker network that is not firstmate's, with a container on it: the internet's
/// stand-in. Removed when dropped.
struct Outside {
    net: String,
    container: String,
}

impl Outside {
    fn new(suffix: &str) -> Outside {
        let net = format!("fm-outside-{suffix}");
        let container = format!("fm-outside-{suffix}");
        docker(&["network", "create", &net]);
        docker(&[
            "run",
            "-d",
            "--name",
            &container,
            "--network",
            &net,
            crate::support::TEST_IMAGE,
            "sleep",
            "600",
        ]);
        Outside { net, container }
    }

    fn ip(&self) -> String {
        let v = inspect(&self.container);
        v["NetworkSettings"]["Networks"][&self.net]["IPAddress"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rm", "-f", &self.container])
            .output();
        let _ = Command::new("docker")
            .args(["network", "rm", &self.net])
            .output();
    }
}

/// This machine's own addresses that a container could aim at (not loopback).
fn host_addresses() -> Vec<String> {
    let out = Command::new("hostname")
        .arg("-I")
        .output()
        .expect("hostname -I");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter(|a| !a.contains(':'))
        .map(str::to_string)
        .collect()
}

#[test]
fn a_worker_reaches_the_gateway_and_nothing_else() {
    if !have_relay_image() {
        return;
    }
    let port = free_port("0.0.0.0");
    let extra = format!(
        "[gateway]\nlisten = \"0.0.0.0:{port}\"\nurl = \"http://firstmate:{port}\"\n\n\
         [gateway.anthropic]\nupstream = \"http://127.0.0.1:9\"\napi_key_env = \"FM_TEST_KEY\"\n"
    );
    let Some(env) = Env::new(&extra) else { return };
    let outside = Outside::new(&env.instance);
    // A service on this machine, on every address: the worker must not reach it.
    let host_service = std::net::TcpListener::bind("0.0.0.0:0").expect("bind");
    let host_port = host_service.local_addr().unwrap().port();

    // Session B first: its worker is the neighbour A must not reach.
    let console = |input: &str| {
        let mut c = env.command();
        c.arg("console").env("FM_TEST_KEY", "sk-real");
        run_with_timeout(c, input, Duration::from_secs(180))
    };
    let first = console("new --agent scripted say here\n");
    let b = session_ids(&stdout(&first))
        .first()
        .cloned()
        .unwrap_or_else(|| {
            panic!("no session B: {}", text(&first));
        });
    let b_ip = inspect(&format!("firstmate-{b}"))["NetworkSettings"]["Networks"]
        [&format!("firstmate-{b}-net")]["IPAddress"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        !b_ip.is_empty(),
        "session B's worker has no address on its own network"
    );

    let mut probes = vec![
        // The gateway answers (a wrong token: 401, and nothing reaches the upstream).
        format!(
            "bash -c 'exec 3<>/dev/tcp/firstmate/{port} && printf \"GET /anthropic/v1/models HTTP/1.0\\r\\nx-api-key: wrong\\r\\n\\r\\n\" >&3 && head -1 <&3' | sed 's/^/gateway: /'"
        ),
        probe("metadata", "169.254.169.254", 80),
        probe("outside", &outside.ip(), 80),
        probe("neighbour", &b_ip, 80),
        "getent hosts deb.debian.org >/dev/null; echo \"dns: rc=$?\"".to_string(),
        "getent hosts firstmate >/dev/null; echo \"dns-gateway: rc=$?\"".to_string(),
    ];
    // Every address of this machine: its own, Docker's bridges' (the default bridge's,
    // where the relay reaches the gateway, among them).
    let hosts = host_addresses();
    assert!(!hosts.is_empty(), "hostname -I printed no address");
    for (i, a) in hosts.iter().enumerate() {
        probes.push(probe(&format!("host-{i}"), a, host_port));
    }
    let script = probes.join("; ");
    let input = format!("new --agent scripted run {script}\nstop\n");
    let out = console(&input);
    let all = stdout(&out);
    let a = session_ids(&all)
        .into_iter()
        .find(|id| *id != b)
        .unwrap_or_else(|| panic!("no session A: {}", text(&out)));
    let lines = lines_of(&all, &a);

    assert!(
        outcome(&lines, "gateway").starts_with("HTTP/1.0 401")
            || outcome(&lines, "gateway").starts_with("HTTP/1.1 401"),
        "the gateway did not answer from inside the worker: {}",
        lines.join("\n")
    );
    for tag in ["metadata", "outside", "neighbour"] {
        assert_unreachable(&lines, tag);
    }
    for i in 0..hosts.len() {
        assert_unreachable(&lines, &format!("host-{i}"));
    }
    assert_eq!(
        outcome(&lines, "dns"),
        "rc=2",
        "an outside name resolved:\n{}",
        lines.join("\n")
    );
    assert_eq!(
        outcome(&lines, "dns-gateway"),
        "rc=0",
        "{}",
        lines.join("\n")
    );

    // Its network goes with its container's end; B's stays while B runs.
    let a_net = format!("firstmate-{a}-net");
    let gone = Command::new("docker")
        .args(["network", "inspect", &a_net])
        .output()
        .expect("docker");
    assert!(!gone.status.success(), "{a_net} outlived its session");
    docker(&["network", "inspect", &format!("firstmate-{b}-net")]);
    drop(host_service);
}
