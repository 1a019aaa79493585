//! The Docker runtime: worker containers through bollard. Only this module imports
//! bollard. It knows containers, volumes and logs; it knows nothing of chat or agents.
//!
//! Output is read from the container's log (`follow`, with timestamps) rather than from
//! an attach stream: the log is kept by the daemon, so after a restart of firstmate the
//! engine reads on from the exact line where it stopped. Input goes through an attach
//! that carries stdin only.

use std::collections::HashMap;
use std::pin::Pin;
use std::time::{Duration, UNIX_EPOCH};

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecOptions};
use bollard::models::{ContainerCreateBody, HostConfig, Mount, MountType, VolumeCreateRequest};
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, CreateContainerOptionsBuilder, InspectContainerOptions,
    ListContainersOptionsBuilder, ListVolumesOptionsBuilder, LogsOptionsBuilder,
    RemoveContainerOptionsBuilder, RemoveVolumeOptions, StopContainerOptionsBuilder,
};
use futures_util::StreamExt;
use tokio::io::AsyncWrite;
use tokio::sync::mpsc;

pub const LABEL_MANAGED: &str = "firstmate.managed";
pub const LABEL_SESSION: &str = "firstmate.session";
pub const LABEL_INSTANCE: &str = "firstmate.instance";
pub const WORKSPACE: &str = "/workspace";
/// The worker's scratch space: a tmpfs (the root filesystem is read-only).
pub const TMP: &str = "/tmp";

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(
        "cannot reach Docker at {host}: {}; start the Docker daemon or the socket proxy, \
         or fix docker.host in the config",
        crate::error::cause(source)
    )]
    Connect {
        host: String,
        source: bollard::errors::Error,
    },
    #[error(
        "the image {image} is not on this Docker host; build it (scripts/build-images) or set \
         agents.<name>.image in the config"
    )]
    NoImage { image: String },
    #[error(
        "Docker refused to {action} for session {session}: {}",
        crate::error::cause(source)
    )]
    Docker {
        action: &'static str,
        session: String,
        source: bollard::errors::Error,
    },
}

pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;

/// What a worker container is made of.
#[derive(Debug, Clone)]
pub struct WorkerSpec {
    pub session_id: String,
    pub image: String,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub memory_bytes: i64,
    pub nano_cpus: i64,
    pub pids_limit: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStream {
    Stdout,
    Stderr,
}

/// One complete line of a container's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// Docker's timestamp of the line, ns since the epoch.
    pub ts_ns: i64,
    pub stream: LogStream,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerStatus {
    pub id: String,
    pub running: bool,
    pub exit_code: Option<i64>,
    pub oom_killed: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedContainer {
    pub id: String,
    pub session_id: String,
    pub running: bool,
}

pub type StdinWriter = Pin<Box<dyn AsyncWrite + Send>>;

/// What [`DockerRuntime::remove_session`] found and removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RemovedObjects {
    /// The container's name, when there was one.
    pub container: Option<String>,
    /// The volumes' names, sorted.
    pub volumes: Vec<String>,
}

#[derive(Clone)]
pub struct DockerRuntime {
    docker: Docker,
    host: String,
    instance: String,
    network: Option<String>,
}

pub fn container_name(session_id: &str) -> String {
    format!("firstmate-{session_id}")
}

impl DockerRuntime {
    /// Connects to `host` (`unix://...` or `tcp://...`) and agrees on an API version.
    pub async fn connect(host: &str, instance: &str, network: Option<&str>) -> Result<Self> {
        let err = |source| RuntimeError::Connect {
            host: host.to_string(),
            source,
        };
        let docker = Docker::connect_with_host(host).map_err(err)?;
        let docker = docker.negotiate_version().await.map_err(err)?;
        docker.ping().await.map_err(err)?;
        Ok(DockerRuntime {
            docker,
            host: host.to_string(),
            instance: instance.to_string(),
            network: network.filter(|n| !n.is_empty()).map(str::to_string),
        })
    }

    /// Whether the Docker daemon (or the socket proxy) answers.
    pub async fn ping(&self) -> Result<()> {
        self.docker
            .ping()
            .await
            .map(|_| ())
            .map_err(|source| RuntimeError::Connect {
                host: self.host.clone(),
                source,
            })
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn instance(&self) -> &str {
        &self.instance
    }

    fn labels(&self, session_id: &str) -> HashMap<String, String> {
        HashMap::from([
            (LABEL_MANAGED.to_string(), "true".to_string()),
            (LABEL_SESSION.to_string(), session_id.to_string()),
            (LABEL_INSTANCE.to_string(), self.instance.clone()),
        ])
    }

    /// The image's HOME, when the image exists; `NoImage` when it does not.
    pub async fn image_home(&self, image: &str) -> Result<Option<String>> {
        match self.docker.inspect_image(image).await {
            Ok(info) => Ok(info
                .config
                .and_then(|c| c.env)
                .unwrap_or_default()
                .iter()
                .find_map(|e| e.strip_prefix("HOME=").map(str::to_string))),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Err(RuntimeError::NoImage {
                image: image.to_string(),
            }),
            Err(source) => Err(RuntimeError::Docker {
                action: "inspect the image",
                session: String::new(),
                source,
            }),
        }
    }

    async fn ensure_volume(&self, name: &str, session_id: &str) -> Result<()> {
        let req = VolumeCreateRequest {
            name: Some(name.to_string()),
            labels: Some(self.labels(session_id)),
            ..Default::default()
        };
        self.docker
            .create_volume(req)
            .await
            .map(|_| ())
            .map_err(|source| RuntimeError::Docker {
                action: "create a volume",
                session: session_id.to_string(),
                source,
            })
    }

    /// Creates the hardened worker container of a session (and its volumes), not started.
    /// An older container of the same session is removed first; its volumes are kept.
    ///
    /// The root filesystem is read-only; what the agent writes goes to `/workspace` and
    /// the home (volumes, kept across `resume`) or to `/tmp` (a tmpfs, as large as the
    /// memory limit it counts against, gone with the container). An init (Docker's
    /// `Init`) is PID 1, so orphans the agent leaves behind are reaped.
    pub async fn create(&self, spec: &WorkerSpec) -> Result<String> {
        let sid = &spec.session_id;
        let home = self.image_home(&spec.image).await?;
        let name = container_name(sid);
        self.remove(sid, &name).await?;

        let workspace_vol = format!("{name}-workspace");
        self.ensure_volume(&workspace_vol, sid).await?;
        let mut mounts = vec![Mount {
            target: Some(WORKSPACE.to_string()),
            source: Some(workspace_vol),
            typ: Some(MountType::VOLUME),
            ..Default::default()
        }];
        if let Some(home) = home.filter(|h| h != "/" && h != WORKSPACE && h != TMP) {
            let home_vol = format!("{name}-home");
            self.ensure_volume(&home_vol, sid).await?;
            mounts.push(Mount {
                target: Some(home),
                source: Some(home_vol),
                typ: Some(MountType::VOLUME),
                ..Default::default()
            });
        }

        let host_config = HostConfig {
            cap_drop: Some(vec!["ALL".to_string()]),
            security_opt: Some(vec!["no-new-privileges".to_string()]),
            privileged: Some(false),
            memory: Some(spec.memory_bytes),
            memory_swap: Some(spec.memory_bytes),
            nano_cpus: Some(spec.nano_cpus),
            pids_limit: Some(spec.pids_limit),
            init: Some(true),
            readonly_rootfs: Some(true),
            // Docker's default for a tmpfs is noexec; a /tmp where nothing runs breaks
            // toolchains (go test, build scripts) and protects nothing that /workspace
            // does not already allow.
            tmpfs: Some(HashMap::from([(
                TMP.to_string(),
                format!("rw,exec,nosuid,nodev,size={}", spec.memory_bytes),
            )])),
            mounts: Some(mounts),
            network_mode: self.network.clone(),
            ..Default::default()
        };
        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            cmd: Some(spec.cmd.clone()),
            env: Some(spec.env.clone()),
            labels: Some(self.labels(sid)),
            working_dir: Some(WORKSPACE.to_string()),
            attach_stdin: Some(true),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            open_stdin: Some(true),
            stdin_once: Some(false),
            tty: Some(false),
            host_config: Some(host_config),
            ..Default::default()
        };
        let opts = CreateContainerOptionsBuilder::default().name(&name).build();
        let created = self
            .docker
            .create_container(Some(opts), body)
            .await
            .map_err(|source| RuntimeError::Docker {
                action: "create the container",
                session: sid.clone(),
                source,
            })?;
        Ok(created.id)
    }

    pub async fn start(&self, session_id: &str, container: &str) -> Result<()> {
        self.docker
            .start_container(container, None)
            .await
            .map_err(|source| RuntimeError::Docker {
                action: "start the container",
                session: session_id.to_string(),
                source,
            })
    }

    /// Runs `cmd` in the (running) container in the background, with stdin, stdout
    /// and stderr not attached: what it prints must go where the caller sends it.
    pub async fn exec_detached(
        &self,
        session_id: &str,
        container: &str,
        cmd: Vec<String>,
    ) -> Result<()> {
        let err = |action| {
            move |source| RuntimeError::Docker {
                action,
                session: session_id.to_string(),
                source,
            }
        };
        let opts = CreateExecOptions {
            attach_stdin: Some(false),
            attach_stdout: Some(false),
            attach_stderr: Some(false),
            tty: Some(false),
            cmd: Some(cmd),
            working_dir: Some(WORKSPACE.to_string()),
            ..Default::default()
        };
        let exec = self
            .docker
            .create_exec(container, opts)
            .await
            .map_err(err("create an exec"))?;
        self.docker
            .start_exec(
                &exec.id,
                Some(StartExecOptions {
                    detach: true,
                    tty: false,
                    output_capacity: None,
                }),
            )
            .await
            .map_err(err("start an exec"))?;
        Ok(())
    }

    /// An attach that carries stdin only; what is written reaches the agent's stdin.
    pub async fn attach_stdin(&self, session_id: &str, container: &str) -> Result<StdinWriter> {
        let opts = AttachContainerOptionsBuilder::default()
            .stdin(true)
            .stdout(false)
            .stderr(false)
            .stream(true)
            .logs(false)
            .build();
        let res = self
            .docker
            .attach_container(container, Some(opts))
            .await
            .map_err(|source| RuntimeError::Docker {
                action: "attach to the container",
                session: session_id.to_string(),
                source,
            })?;
        // The output half carries nothing (stdout and stderr are off); drain it so the
        // connection stays healthy.
        let mut output = res.output;
        tokio::spawn(async move { while output.next().await.is_some() {} });
        Ok(res.input)
    }

    /// Follows the container's output from `since_ns` (whole seconds are what Docker
    /// takes, so lines of that second come again: the caller skips what it has). The
    /// channel closes when the container stops or the log breaks (`Err`).
    pub fn follow_logs(
        &self,
        container: &str,
        since_ns: i64,
    ) -> mpsc::Receiver<Result<LogLine, String>> {
        let (tx, rx) = mpsc::channel(1024);
        let opts = LogsOptionsBuilder::default()
            .follow(true)
            .stdout(true)
            .stderr(true)
            .timestamps(true)
            .since((since_ns / 1_000_000_000).clamp(0, i32::MAX as i64) as i32)
            .build();
        let mut stream = self.docker.logs(container, Some(opts));
        tokio::spawn(async move {
            let mut splitter = LineSplitter::default();
            while let Some(item) = stream.next().await {
                let (stream_kind, bytes) = match item {
                    Ok(LogOutput::StdOut { message }) => (LogStream::Stdout, message),
                    Ok(LogOutput::StdErr { message }) => (LogStream::Stderr, message),
                    Ok(_) => continue,
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string())).await;
                        return;
                    }
                };
                for line in splitter.push(stream_kind, &bytes) {
                    if tx.send(Ok(line)).await.is_err() {
                        return;
                    }
                }
            }
            for line in splitter.finish() {
                if tx.send(Ok(line)).await.is_err() {
                    return;
                }
            }
        });
        rx
    }

    pub async fn inspect(&self, container: &str) -> Result<Option<ContainerStatus>> {
        match self
            .docker
            .inspect_container(container, None::<InspectContainerOptions>)
            .await
        {
            Ok(info) => {
                let state = info.state.unwrap_or_default();
                Ok(Some(ContainerStatus {
                    id: info.id.unwrap_or_default(),
                    running: state.running.unwrap_or(false),
                    exit_code: state.exit_code,
                    oom_killed: state.oom_killed.unwrap_or(false),
                }))
            }
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(None),
            Err(source) => Err(RuntimeError::Docker {
                action: "inspect the container",
                session: String::new(),
                source,
            }),
        }
    }

    /// Stops the container: SIGTERM, then SIGKILL after `grace`.
    pub async fn stop(&self, session_id: &str, container: &str, grace: Duration) -> Result<()> {
        let opts = StopContainerOptionsBuilder::default()
            .t(grace.as_secs().min(i32::MAX as u64) as i32)
            .build();
        match self.docker.stop_container(container, Some(opts)).await {
            Ok(()) => Ok(()),
            // 304: already stopped; 404: already gone.
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 304 | 404,
                ..
            }) => Ok(()),
            Err(source) => Err(RuntimeError::Docker {
                action: "stop the container",
                session: session_id.to_string(),
                source,
            }),
        }
    }

    /// Removes a container (forcefully) if it exists; volumes stay.
    pub async fn remove(&self, session_id: &str, container: &str) -> Result<()> {
        let opts = RemoveContainerOptionsBuilder::default().force(true).build();
        match self.docker.remove_container(container, Some(opts)).await {
            Ok(()) => Ok(()),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(()),
            Err(source) => Err(RuntimeError::Docker {
                action: "remove the container",
                session: session_id.to_string(),
                source,
            }),
        }
    }

    /// Removes a session's container (forcefully) and every volume of this instance
    /// labelled with the session; what was not there is skipped. The caller makes sure
    /// the session has ended.
    pub async fn remove_session(&self, session_id: &str) -> Result<RemovedObjects> {
        let err = |action| {
            move |source| RuntimeError::Docker {
                action,
                session: session_id.to_string(),
                source,
            }
        };
        let name = container_name(session_id);
        let opts = RemoveContainerOptionsBuilder::default().force(true).build();
        let container = match self.docker.remove_container(&name, Some(opts)).await {
            Ok(()) => Some(name),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => None,
            Err(source) => return Err(err("remove the container")(source)),
        };
        let filters = HashMap::from([(
            "label".to_string(),
            vec![
                format!("{LABEL_MANAGED}=true"),
                format!("{LABEL_SESSION}={session_id}"),
                format!("{LABEL_INSTANCE}={}", self.instance),
            ],
        )]);
        let opts = ListVolumesOptionsBuilder::default()
            .filters(&filters)
            .build();
        let listed = self
            .docker
            .list_volumes(Some(opts))
            .await
            .map_err(err("list volumes"))?;
        let mut names: Vec<String> = listed
            .volumes
            .unwrap_or_default()
            .into_iter()
            .map(|v| v.name)
            .collect();
        names.sort();
        let mut volumes = Vec::with_capacity(names.len());
        for v in names {
            match self
                .docker
                .remove_volume(&v, None::<RemoveVolumeOptions>)
                .await
            {
                Ok(()) => volumes.push(v),
                Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 404, ..
                }) => {}
                Err(source) => return Err(err("remove a volume")(source)),
            }
        }
        Ok(RemovedObjects { container, volumes })
    }

    /// The containers of this instance.
    pub async fn list_managed(&self) -> Result<Vec<ManagedContainer>> {
        let filters = HashMap::from([(
            "label".to_string(),
            vec![
                format!("{LABEL_MANAGED}=true"),
                format!("{LABEL_INSTANCE}={}", self.instance),
            ],
        )]);
        let opts = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let list = self
            .docker
            .list_containers(Some(opts))
            .await
            .map_err(|source| RuntimeError::Docker {
                action: "list containers",
                session: String::new(),
                source,
            })?;
        Ok(list
            .into_iter()
            .filter_map(|c| {
                let session_id = c.labels.as_ref()?.get(LABEL_SESSION)?.clone();
                Some(ManagedContainer {
                    id: c.id?,
                    session_id,
                    running: c.state.map(|s| s.to_string() == "running").unwrap_or(false),
                })
            })
            .collect())
    }
}

/// Turns Docker log frames (each `TIMESTAMP SP payload`, a payload being a line or a
/// piece of a long one) into whole lines, per stream. Pure; tested below.
#[derive(Debug, Default)]
pub struct LineSplitter {
    partial_out: Vec<u8>,
    partial_err: Vec<u8>,
    last_ts: i64,
}

impl LineSplitter {
    pub fn push(&mut self, stream: LogStream, frame: &[u8]) -> Vec<LogLine> {
        let (ts, payload) = split_timestamp(frame);
        let ts = ts.unwrap_or(self.last_ts);
        self.last_ts = ts;
        let buf = match stream {
            LogStream::Stdout => &mut self.partial_out,
            LogStream::Stderr => &mut self.partial_err,
        };
        buf.extend_from_slice(payload);
        let mut out = Vec::new();
        while let Some(nl) = buf.iter().position(|&b| b == b'\n') {
            let rest = buf.split_off(nl + 1);
            let mut line = std::mem::replace(buf, rest);
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            out.push(LogLine {
                ts_ns: ts,
                stream,
                text: String::from_utf8_lossy(&line).into_owned(),
            });
        }
        out
    }

    /// What is left when the stream ends: an unterminated last line.
    pub fn finish(&mut self) -> Vec<LogLine> {
        let mut out = Vec::new();
        for (stream, buf) in [
            (LogStream::Stdout, &mut self.partial_out),
            (LogStream::Stderr, &mut self.partial_err),
        ] {
            if !buf.is_empty() {
                out.push(LogLine {
                    ts_ns: self.last_ts,
                    stream,
                    text: String::from_utf8_lossy(buf).into_owned(),
                });
                buf.clear();
            }
        }
        out
    }
}

fn split_timestamp(frame: &[u8]) -> (Option<i64>, &[u8]) {
    let Some(sp) = frame.iter().take(40).position(|&b| b == b' ') else {
        return (None, frame);
    };
    let Ok(text) = std::str::from_utf8(&frame[..sp]) else {
        return (None, frame);
    };
    match humantime::parse_rfc3339(text) {
        Ok(t) => {
            let ns = t
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos().min(i64::MAX as u128) as i64)
                .unwrap_or(0);
            (Some(ns), &frame[sp + 1..])
        }
        Err(_) => (None, frame),
    }
}

/// Where the engine is in a container's log: skips lines already taken when a log is
/// read again from the start of a second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogCursor {
    pub ts_ns: i64,
    /// Lines taken that carry exactly `ts_ns`.
    pub count: i64,
    seen_at_ts: i64,
}

impl LogCursor {
    pub fn new(ts_ns: i64, count: i64) -> Self {
        LogCursor {
            ts_ns,
            count,
            seen_at_ts: 0,
        }
    }

    /// True when the line is new (and moves the cursor past it).
    pub fn take(&mut self, ts_ns: i64) -> bool {
        use std::cmp::Ordering;
        match ts_ns.cmp(&self.ts_ns) {
            Ordering::Less => false,
            Ordering::Equal => {
                self.seen_at_ts += 1;
                if self.seen_at_ts <= self.count {
                    false
                } else {
                    self.count += 1;
                    true
                }
            }
            Ordering::Greater => {
                self.ts_ns = ts_ns;
                self.count = 1;
                self.seen_at_ts = 1;
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(ts: &str, payload: &str) -> Vec<u8> {
        format!("{ts} {payload}").into_bytes()
    }

    #[test]
    fn frames_become_lines_with_their_timestamps() {
        let mut s = LineSplitter::default();
        let lines = s.push(
            LogStream::Stdout,
            &frame("2026-11-22T22:36:23.000000001Z", "hello\n"),
        );
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].text, "hello");
        assert_eq!(lines[0].ts_ns % 1_000_000_000, 1);
    }

    #[test]
    fn long_lines_split_by_docker_are_joined() {
        let mut s = LineSplitter::default();
        assert!(
            s.push(LogStream::Stdout, &frame("2026-11-22T22:36:23.1Z", "abc"))
                .is_empty()
        );
        assert!(
            s.push(LogStream::Stderr, &frame("2026-11-22T22:36:23.2Z", "err\n"))
                .len()
                == 1
        );
        let lines = s.push(LogStream::Stdout, &frame("2026-11-22T22:36:23.3Z", "def\n"));
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].text, "abcdef");
        assert_eq!(lines[0].ts_ns % 1_000_000_000, 300_000_000);
    }

    #[test]
    fn an_unterminated_last_line_is_kept() {
        let mut s = LineSplitter::default();
        assert!(
            s.push(LogStream::Stdout, &frame("2026-11-22T22:36:23Z", "tail"))
                .is_empty()
        );
        let rest = s.finish();
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].text, "tail");
    }

    #[test]
    fn the_cursor_skips_exactly_what_was_taken() {
        // Taken before: lines at t=5 (twice) -> cursor (5, 2).
        let mut c = LogCursor::new(5, 2);
        let replay = [3, 5, 5, 5, 6, 6];
        let taken: Vec<bool> = replay.iter().map(|&t| c.take(t)).collect();
        assert_eq!(taken, vec![false, false, false, true, true, true]);
        assert_eq!((c.ts_ns, c.count), (6, 2));
    }

    #[test]
    fn a_fresh_cursor_takes_everything() {
        let mut c = LogCursor::new(0, 0);
        assert!(c.take(1));
        assert!(c.take(1));
        assert_eq!((c.ts_ns, c.count), (1, 2));
    }
}
