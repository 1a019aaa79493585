//! The Discord front end end to end (see benches/README.md): the real `firstmate run` as
//! the bot, the fake Discord of the tests (`tests/integration/support/discord/`, with
//! Discord's documented rate limits: 5 message writes per 5 s per channel), the real
//! Docker daemon and the test agent.
//!
//!   cargo bench --bench discord
//!
//! 1. Command to first output: `/agent new say hi-N` until the session's thread shows
//!    `hi-N`, for N sessions one after another (default 10, FIRSTMATE_BENCH_SESSIONS).
//! 2. Message writes (posts and edits) per 1,000 lines of agent output, and 429s, for
//!    `flood 1000` and `flood 10000` (until the last line is in the thread).
//! 3. Approval latency: `ask Bash ...` (the agent asks, `permission_mode = "ask"`) until
//!    the approval message is in the thread: from the request's Docker log timestamp to
//!    the message's timestamp in the fake, for N sessions one after another.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

#[path = "common/mod.rs"]
mod common;
use common::IMAGE;
#[allow(dead_code)]
#[path = "../tests/integration/support/discord/mod.rs"]
mod discord;
#[allow(dead_code)]
#[path = "../tests/integration/support/http.rs"]
mod http;

use discord::FakeDiscord;

const USER: u64 = 111_111_111_111_111_111;

fn main() {
    let sessions: usize = std::env::var("FIRSTMATE_BENCH_SESSIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let ok = Command::new("docker")
        .args(["image", "inspect", IMAGE])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("{IMAGE} is missing: run scripts/build-images test-agent");
        std::process::exit(1);
    }
    let fake = FakeDiscord::start();
    fake.add_member(USER, "bench", &[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let instance = common::new_instance();
    let config = dir.path().join("bot.toml");
    let discord = format!(
        "[discord]\ntoken_env = \"FIRSTMATE_BENCH_DISCORD_TOKEN\"\nguild_ids = [{}]\n\
         allowed_users = [{USER}]\napi_base_url = \"{}\"\n",
        fake.guild_id(),
        fake.base_url()
    );
    let tables = common::Tables {
        sessions: "max_running = 100\nmax_running_per_user = 100\n",
        agent: "permission_mode = \"ask\"\n",
        rest: &discord,
        ..Default::default()
    };
    let text = common::config_text(&common::sqlite_url(dir.path()), &instance, tables);
    std::fs::write(&config, text).expect("config");
    let mut bot = Command::new(env!("CARGO_BIN_EXE_firstmate"))
        .args(["run", "--config"])
        .arg(&config)
        .env("FIRSTMATE_BENCH_DISCORD_TOKEN", FakeDiscord::TOKEN)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("firstmate run");
    let wait = Duration::from_secs(120);
    assert!(
        fake.wait_for(wait, |f| !f.registered_commands().is_empty()),
        "the bot did not register /agent"
    );
    let shows = |f: &FakeDiscord, text: &str| {
        f.threads()
            .iter()
            .any(|t| f.messages(t.id).iter().any(|m| m.content.contains(text)))
    };

    // 1. Command to first output.
    let mut times = Vec::new();
    for n in 0..sessions {
        let word = format!("hi-{n}-{}", std::process::id());
        let t0 = Instant::now();
        fake.slash_command(
            USER,
            fake.channel_id(),
            "agent",
            "new",
            &[
                ("prompt", json!(format!("say {word}"))),
                ("agent", json!("scripted")),
            ],
        );
        assert!(fake.wait_for(wait, |f| shows(f, &word)), "no {word}");
        times.push(t0.elapsed());
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "command to first output in the thread ({sessions} sessions): median {:.0} ms, p95 {:.0} ms, max {:.0} ms",
        ms(times[times.len() / 2]),
        ms(times[(times.len() * 95 / 100).min(times.len() - 1)]),
        ms(times[times.len() - 1])
    );

    // 2. Writes per 1,000 lines.
    for lines in [1000usize, 10_000] {
        let before_threads: Vec<u64> = fake.threads().iter().map(|t| t.id).collect();
        let before_429 = fake.count_429();
        let t0 = Instant::now();
        fake.slash_command(
            USER,
            fake.channel_id(),
            "agent",
            "new",
            &[
                ("prompt", json!(format!("flood {lines}"))),
                ("agent", json!("scripted")),
            ],
        );
        let last = format!("line {lines}/{lines}");
        assert!(
            fake.wait_for(Duration::from_secs(600), |f| shows(f, &last)),
            "flood {lines} did not arrive"
        );
        let elapsed = t0.elapsed();
        let thread = fake
            .threads()
            .iter()
            .map(|t| t.id)
            .find(|t| !before_threads.contains(t))
            .expect("the flood's thread");
        let writes = fake
            .requests()
            .iter()
            .filter(|r| r.path.contains(&format!("/channels/{thread}/messages")))
            .count();
        println!(
            "flood {lines}: {writes} message writes ({:.1} per 1,000 lines), {} messages, {} 429s, last line after {:.1} s",
            writes as f64 * 1000.0 / lines as f64,
            fake.messages(thread).len(),
            fake.count_429() - before_429,
            elapsed.as_secs_f64()
        );
    }

    // 3. Approval latency.
    let mut lags = Vec::new();
    for n in 0..sessions {
        let command = format!("echo appr-{n}-{}", std::process::id());
        let before: Vec<u64> = fake.threads().iter().map(|t| t.id).collect();
        fake.slash_command(
            USER,
            fake.channel_id(),
            "agent",
            "new",
            &[
                ("prompt", json!(format!("ask Bash {command}"))),
                ("agent", json!("scripted")),
            ],
        );
        let question = format!("🔐 Approve Bash: {command}?");
        assert!(
            fake.wait_for(wait, |f| shows(f, &question)),
            "no {question}"
        );
        let thread = fake
            .threads()
            .into_iter()
            .find(|t| !before.contains(&t.id))
            .expect("the thread");
        let msgs = fake.messages(thread.id);
        let posted = msgs
            .iter()
            .find(|m| m.content.contains(&question))
            .map(|m| common::unix_ns_of(&m.timestamp))
            .expect("the approval message");
        let session = msgs[0]
            .content
            .split_whitespace()
            .nth(2)
            .expect("the status names the session")
            .to_string();
        let asked = common::request_times(&session)
            .into_iter()
            .find(|(c, _)| *c == command)
            .map(|(_, ns)| ns)
            .expect("the request in the agent's log");
        lags.push(Duration::from_nanos((posted - asked).max(0) as u64));
    }
    println!(
        "approval request to the approval message in the thread ({sessions} sessions): median {:.0} ms, p95 {:.0} ms, max {:.0} ms",
        common::ms(common::percentile(&mut lags, 50)),
        common::ms(common::percentile(&mut lags, 95)),
        common::ms(common::percentile(&mut lags, 100))
    );

    let _ = bot.kill();
    let _ = bot.wait();
    // The containers and volumes of this instance.
    let out = Command::new("docker")
        .args(["ps", "-aq", "--filter"])
        .arg(format!("label=firstmate.instance={instance}"))
        .output()
        .expect("docker ps");
    for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
        let _ = Command::new("docker").args(["rm", "-f", "-v", id]).output();
    }
    let out = Command::new("docker")
        .args(["volume", "ls", "-q", "--filter"])
        .arg(format!("label=firstmate.instance={instance}"))
        .output()
        .expect("docker volume ls");
    for v in String::from_utf8_lossy(&out.stdout).split_whitespace() {
        let _ = Command::new("docker")
            .args(["volume", "rm", "-f", v])
            .output();
    }
}
