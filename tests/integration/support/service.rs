//! A `firstmate run` of a test environment: how every test runs the bot (`spawn`), or
//! runs it and waits for its admin socket (`start`).

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use super::Env;

/// A `firstmate run` of the environment, its log (stderr, at info) kept for assertions;
/// killed when dropped.
pub struct Service {
    child: Child,
    log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Service {
    /// Starts `firstmate run` and waits until it serves the admin socket.
    pub fn start(env: &Env) -> Service {
        Service::start_logging(env, "info")
    }

    /// Like `start`, logging at `filter` (FIRSTMATE_LOG).
    pub fn start_logging(env: &Env, filter: &str) -> Service {
        let service = Service::spawn(env, filter, &[]);
        service.wait_log("admin socket listening", Duration::from_secs(60));
        service
    }

    /// Starts `firstmate run` logging at `filter`, with the environment variables
    /// `vars` (a front end's secret), without waiting for anything: the one way the
    /// tests run the bot.
    pub fn spawn(env: &Env, filter: &str, vars: &[(&str, &str)]) -> Service {
        let mut run = env.command();
        run.arg("run")
            .env("FIRSTMATE_LOG", filter)
            .env("NO_COLOR", "1")
            .envs(vars.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = run.spawn().expect("firstmate run");
        let stderr = child.stderr.take().expect("stderr");
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let keep = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(mut l) = keep.lock() {
                    l.push_str(&line);
                    l.push('\n');
                }
            }
        });
        Service { child, log }
    }

    /// SIGKILL, as a crash would; the log, for assertion messages.
    pub fn kill(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The reader has the last lines once the pipe closes.
        std::thread::sleep(Duration::from_millis(100));
        self.log()
    }

    /// Fails the test when the service has exited.
    pub fn assert_running(&mut self) {
        if let Ok(Some(st)) = self.child.try_wait() {
            panic!("firstmate run exited ({st}):\n{}", self.log());
        }
    }

    pub fn log(&self) -> String {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Waits until the log has a line containing `needle`.
    pub fn wait_log(&self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.log().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "the service did not log {needle:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGTERM, then waits for the exit.
    pub fn stop(mut self) -> std::process::ExitStatus {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "run did not stop:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
