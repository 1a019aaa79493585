//! Files in and out of a workspace through a running `firstmate console` on the real
//! Docker daemon (see benches/README.md):
//!
//!   cargo bench --bench files        (needs dockerd and firstmate-test-agent:latest)
//!
//! `put` of a 100 MB file (FIRSTMATE_BENCH_FILE_MB) into `/workspace/inbox/` and `get`
//! of it back into the console's folder: the time of each, and the console process's
//! memory (it runs the engine that moves the bytes): resident size when idle with the
//! session running, and its peak (VmHWM) after each transfer.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Instant;

mod common;

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return; // `cargo test --benches` probes; nothing to list.
    }
    let mb: u64 = std::env::var("FIRSTMATE_BENCH_FILE_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let exe = env!("CARGO_BIN_EXE_firstmate");
    let dir = tempfile::tempdir().expect("tempdir");
    let instance = common::new_instance();
    let config = dir.path().join("bot.toml");
    let sessions = format!("max_attachment_size = \"{}MB\"\n", mb + 1);
    let tables = common::Tables {
        sessions: &sessions,
        ..Default::default()
    };
    let text = common::config_text(&common::sqlite_url(dir.path()), &instance, tables);
    std::fs::write(&config, text).expect("config");
    // Incompressible content, so nothing along the way gets it cheaper than it is.
    let size = mb * 1_000_000;
    let mut data = vec![0u8; size as usize];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for chunk in data.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    std::fs::write(dir.path().join("big.bin"), &data).expect("write the file");
    drop(data);

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
            if line.contains(needle) {
                return line.clone();
            }
        }
    };
    let mut send = |line: &str| {
        writeln!(stdin, "{line}").expect("write");
        stdin.flush().expect("flush");
    };
    send("new --agent scripted say ready");
    wait_for("] ready");
    std::thread::sleep(std::time::Duration::from_secs(1));
    let idle = common::status_kib(pid, "VmRSS:");

    let t = Instant::now();
    send("put big.bin");
    let put_line = wait_for("copied");
    let put = t.elapsed();
    let peak_put = common::status_kib(pid, "VmHWM:");
    assert!(put_line.contains("/workspace/inbox/big.bin"), "{put_line}");

    let t = Instant::now();
    send("get inbox/big.bin");
    wait_for("written to");
    let get = t.elapsed();
    let peak_get = common::status_kib(pid, "VmHWM:");
    let back = std::fs::metadata(dir.path().join("1-big.bin"))
        .map(|m| m.len())
        .unwrap_or(0);
    assert_eq!(back, size, "the file came back with another size");

    send("stop");
    drop(stdin);
    let _ = child.wait();
    common::cleanup_docker(&instance);

    let mib = |kib: u64| kib as f64 / 1024.0;
    let rate = |secs: f64| size as f64 / 1e6 / secs;
    println!("file: {mb} MB");
    println!(
        "put: {:.2} s ({:.0} MB/s); get: {:.2} s ({:.0} MB/s)",
        put.as_secs_f64(),
        rate(put.as_secs_f64()),
        get.as_secs_f64(),
        rate(get.as_secs_f64())
    );
    println!(
        "console RSS idle {:.1} MiB; peak after put {:.1} MiB (+{:.1}); after get {:.1} MiB (+{:.1})",
        mib(idle),
        mib(peak_put),
        mib(peak_put.saturating_sub(idle)),
        mib(peak_get),
        mib(peak_get.saturating_sub(idle))
    );
}
