//! End-to-end session benchmark on the real Docker daemon (see benches/README.md).
//!
//!   cargo bench --bench sessions            (needs dockerd and firstmate-test-agent:latest)
//!
//! 1. Command to first output: `new --agent scripted say hi-N` written to a running
//!    `firstmate console` until `[id] hi-N` is read, for N sessions (default 20,
//!    FIRSTMATE_BENCH_SESSIONS), next to the floor: `docker run` of the same image doing
//!    the same one-shot prompt, until its first assistant line.
//! 2. `flood 10000` end to end: lines per second through the engine, the engine's CPU
//!    seconds and its peak RSS (the console process runs the engine).

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Instant;

#[path = "common/mod.rs"]
mod common;
use common::IMAGE;

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return; // `cargo test --benches` probes; nothing to list.
    }
    let n: usize = std::env::var("FIRSTMATE_BENCH_SESSIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let flood: usize = std::env::var("FIRSTMATE_BENCH_FLOOD")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let exe = env!("CARGO_BIN_EXE_firstmate");
    let dir = tempfile::tempdir().expect("tempdir");
    let instance = common::new_instance();
    let config = dir.path().join("bot.toml");
    let tables = common::Tables {
        sessions: "max_running = 1000\nmax_running_per_user = 1000\n",
        ..Default::default()
    };
    let text = common::config_text(&common::sqlite_url(dir.path()), &instance, tables);
    std::fs::write(&config, text).expect("config");

    // --- floor: plain docker run -------------------------------------------------
    let mut floor = Vec::new();
    for i in 0..n {
        let t = Instant::now();
        let mut child = Command::new("docker")
            .args([
                "run",
                "--rm",
                "-i",
                IMAGE,
                "claude",
                "-p",
                &format!("say floor-{i}"),
                "--output-format",
                "stream-json",
                "--verbose",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker run");
        let mut out = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        loop {
            line.clear();
            if out.read_line(&mut line).unwrap_or(0) == 0 {
                panic!("docker run ended without output: is {IMAGE} built?");
            }
            if line.contains(&format!("floor-{i}")) && line.contains("\"assistant\"") {
                break;
            }
        }
        floor.push(t.elapsed());
        let _ = child.wait();
    }

    // --- firstmate: command to first output ----------------------------------------
    let mut child = Command::new(exe)
        .arg("console")
        .env("FIRSTMATE_CONFIG", &config)
        .current_dir(dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("firstmate console");
    let pid = child.id();
    let mut stdin = child.stdin.take().expect("stdin");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut wait_for = |needle: &str| {
        let mut line = String::new();
        loop {
            line.clear();
            if out.read_line(&mut line).unwrap_or(0) == 0 {
                panic!("the console ended before printing {needle:?}");
            }
            if line.trim_end().ends_with(needle) {
                return line.clone();
            }
        }
    };
    let mut first = Vec::new();
    for i in 0..n {
        let t = Instant::now();
        writeln!(stdin, "new --agent scripted say hi-{i}").expect("write");
        stdin.flush().expect("flush");
        wait_for(&format!("] hi-{i}"));
        first.push(t.elapsed());
    }

    // --- flood ---------------------------------------------------------------------
    let cpu_before = cpu_seconds(pid);
    let t = Instant::now();
    writeln!(stdin, "flood {flood}").expect("write");
    stdin.flush().expect("flush");
    wait_for(&format!("line {flood}/{flood}"));
    let flood_time = t.elapsed();
    let cpu = cpu_seconds(pid) - cpu_before;
    let rss = common::status_kib(pid, "VmHWM:");
    drop(stdin);
    let _ = child.wait();

    common::cleanup_docker(&instance);

    println!("sessions: {n}");
    println!(
        "command to first output, firstmate console: median {:.0} ms, p95 {:.0} ms",
        common::ms(common::percentile(&mut first, 50)),
        common::ms(common::percentile(&mut first, 95))
    );
    println!(
        "floor, docker run of the same image:        median {:.0} ms, p95 {:.0} ms",
        common::ms(common::percentile(&mut floor, 50)),
        common::ms(common::percentile(&mut floor, 95))
    );
    println!(
        "flood {flood}: {:.2} s end to end, {:.0} lines/s, engine CPU {:.2} s, engine peak RSS {:.1} MiB",
        flood_time.as_secs_f64(),
        flood as f64 / flood_time.as_secs_f64(),
        cpu,
        rss as f64 / 1024.0
    );
}

fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}
