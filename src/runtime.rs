//! The Docker runtime: worker containers through bollard. Only this module imports
//! bollard. It knows containers, volumes and logs; it knows nothing of chat or agents.
//!
//! Output is read from the container's log (`follow`, with timestamps) rather than from
//! an attach stream: the log is kept by the daemon, so after a restart of firstmate the
//! engine reads on from the exact line where it stopped. Input goes through an attach
//! that carries stdin only.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use async_trait::async_trait;
use bollard::Docker;
use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecOptions};
use bollard::models::{
    ContainerCreateBody, EndpointSettings, HealthConfig, HostConfig, Mount, MountType,
    NetworkConnectRequest, NetworkCreateRequest, NetworkDisconnectRequest, VolumeCreateRequest,
};
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, CreateContainerOptionsBuilder, InspectContainerOptions,
    ListContainersOptionsBuilder, ListVolumesOptionsBuilder, LogsOptionsBuilder,
    RemoveContainerOptionsBuilder, RemoveVolumeOptions, StopContainerOptionsBuilder,
};
use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

pub const LABEL_MANAGED: &str = "firstmate.managed";
pub const LABEL_SESSION: &str = "firstmate.session";
pub const LABEL_INSTANCE: &str = "firstmate.instance";
/// What a managed container that is no session's worker is for (`relay`).
pub const LABEL_ROLE: &str = "firstmate.role";
/// The bridge option that leaves the host without an address on a network: nothing on
/// it reaches the host (an `internal` bridge alone still reaches the host's address on it).
pub const INHIBIT_IPV4: &str = "com.docker.network.bridge.inhibit_ipv4";
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
        "Docker has no free address range for another session network (each running session \
         has one): set default-address-pools in /etc/docker/daemon.json (README: \"Worker \
         network\"), or lower sessions.max_running"
    )]
    NoAddressPool,
    #[error(
        "the gateway relay (image {image}) did not start: {detail}; build the image \
         (scripts/build-images bot) or set docker.relay_image, and check gateway.listen"
    )]
    Relay { image: String, detail: String },
    #[error("cannot {action} for session {session}: {source}")]
    Io {
        action: &'static str,
        session: String,
        source: std::io::Error,
    },
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

/// The error of a refused Docker call for a session, for `map_err`.
fn docker_error<'a>(
    action: &'static str,
    session: &'a str,
) -> impl FnOnce(bollard::errors::Error) -> RuntimeError + 'a {
    move |source| RuntimeError::Docker {
        action,
        session: session.to_string(),
        source,
    }
}

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

/// How an exec with attached I/O ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecEnd {
    /// None while Docker does not know (it had not finished when asked).
    pub code: Option<i64>,
    /// The start of its standard error.
    pub stderr: String,
}

/// What [`DockerRuntime::remove_session`] found and removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RemovedObjects {
    /// The container's name, when there was one.
    pub container: Option<String>,
    /// The volumes' names, sorted.
    pub volumes: Vec<String>,
}

/// The gateway relay: the one container on every session network besides its worker. It
/// answers to the gateway's name and port there and forwards each connection to the
/// gateway, so a worker reaches the gateway and nothing else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relay {
    /// An image with `firstmate` on its PATH (`docker.relay_image`).
    pub image: String,
    /// Where the relay meets the gateway: a network's name (`docker.relay_network`), or
    /// none for Docker's default bridge (the gateway on this host).
    pub network: Option<String>,
    /// The name and port workers call the gateway by (from `gateway.url`).
    pub alias: String,
    pub port: u16,
    /// Where it forwards: `host:port`, or `host-gateway:PORT` for the host seen from the
    /// relay's network (its default route).
    pub target: String,
}

/// What the engine needs of a container runtime: a session's container, its log and
/// stdin, commands run in it, its network, and the clock its deadlines are measured
/// on. [`DockerRuntime`] is the one firstmate runs on; the session task's unit tests
/// drive a scripted one on tokio's paused clock.
#[async_trait]
pub trait Runtime: Send + Sync + 'static {
    /// Whether the daemon answers.
    async fn ping(&self) -> Result<()>;
    /// The image's HOME, when the image exists; `NoImage` when it does not.
    async fn image_home(&self, image: &str) -> Result<Option<String>>;
    /// Creates the session's worker container (and its volumes and network); its id.
    async fn create(&self, spec: &WorkerSpec) -> Result<String>;
    async fn start(&self, session_id: &str, container: &str) -> Result<()>;
    /// A writer to the container's stdin.
    async fn attach_stdin(&self, session_id: &str, container: &str) -> Result<StdinWriter>;
    /// The container's output as lines from `since_ns`; the channel closes when the
    /// container stops, or after an `Err` when the log breaks.
    fn follow_logs(
        &self,
        container: &str,
        since_ns: i64,
    ) -> mpsc::Receiver<Result<LogLine, String>>;
    /// None when there is no such container.
    async fn inspect(&self, container: &str) -> Result<Option<ContainerStatus>>;
    /// Runs `cmd` in the running container, nothing attached.
    async fn exec_detached(
        &self,
        session_id: &str,
        container: &str,
        cmd: Vec<String>,
    ) -> Result<()>;
    /// Runs `cmd` in the running container with `stdin` fed to it and its standard
    /// output handed to `stdout` as it comes.
    async fn exec_io(
        &self,
        session_id: &str,
        container: &str,
        cmd: Vec<String>,
        stdin: Option<&mut (dyn AsyncRead + Unpin + Send)>,
        stdout: &mut (dyn for<'b> FnMut(&'b [u8]) -> std::io::Result<()> + Send),
    ) -> Result<ExecEnd>;
    /// Stops the container: SIGTERM, then SIGKILL after `grace`.
    async fn stop(&self, session_id: &str, container: &str, grace: Duration) -> Result<()>;
    /// After a restart: the session's running container gets its gateway route back.
    async fn rejoin(&self, sid: &str) -> Result<()>;
    /// An ended session's network goes (its address range is freed).
    async fn release_network(&self, sid: &str) -> Result<()>;
    /// Removes the session's container, volumes and network.
    async fn remove_session(&self, session_id: &str) -> Result<RemovedObjects>;
    /// Removes the gateway relay this process made.
    async fn remove_relay(&self) -> Result<()>;
    /// Now, in ms since the epoch: what the session task's deadlines (idle, lifetime,
    /// approvals) are measured against.
    fn now_ms(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64)
    }
    /// Returns once [`Runtime::now_ms`] reaches `at_ms`.
    async fn sleep_until_ms(&self, at_ms: i64) {
        let wait = (at_ms - self.now_ms()).max(0) as u64;
        tokio::time::sleep(Duration::from_millis(wait)).await
    }
}

#[derive(Clone)]
pub struct DockerRuntime {
    docker: Docker,
    host: String,
    instance: String,
    network: Option<String>,
    relay: Option<Relay>,
    /// The relay container this process made (created on first need).
    relay_id: Arc<tokio::sync::Mutex<Option<String>>>,
}

pub fn container_name(session_id: &str) -> String {
    format!("firstmate-{session_id}")
}

/// The network of its own a session's worker sits on (when `docker.network` is unset).
pub fn network_name(session_id: &str) -> String {
    format!("firstmate-{session_id}-net")
}

/// The gateway relay container of an instance.
pub fn relay_name(instance: &str) -> String {
    format!("firstmate-relay-{instance}")
}

/// Whether Docker's error is a 404.
fn not_found(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

/// Whether Docker's error says an object is there already (a network of that name, an
/// endpoint of that container).
fn already_there(e: &bollard::errors::Error) -> bool {
    match e {
        bollard::errors::Error::DockerResponseServerError {
            status_code,
            message,
        } => *status_code == 409 || message.contains("already exists"),
        _ => false,
    }
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
            relay: None,
            relay_id: Arc::new(tokio::sync::Mutex::new(None)),
        })
    }

    /// Puts the gateway relay on every session network (with no `docker.network`, the
    /// only way a worker reaches the gateway).
    pub fn with_relay(mut self, relay: Relay) -> Self {
        self.relay = Some(relay);
        self
    }

    /// Whether each session gets a network of its own.
    pub fn isolated(&self) -> bool {
        self.network.is_none()
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// The list filter for what this instance manages.
    fn instance_filter(&self) -> HashMap<String, Vec<String>> {
        HashMap::from([(
            "label".to_string(),
            vec![
                format!("{LABEL_MANAGED}=true"),
                format!("{LABEL_INSTANCE}={}", self.instance),
            ],
        )])
    }

    fn labels(&self, session_id: &str) -> HashMap<String, String> {
        HashMap::from([
            (LABEL_MANAGED.to_string(), "true".to_string()),
            (LABEL_SESSION.to_string(), session_id.to_string()),
            (LABEL_INSTANCE.to_string(), self.instance.clone()),
        ])
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

    /// The session's own network: internal (no route out), no address of the host on it,
    /// labelled like its container; made when missing. With a relay, the relay joins it
    /// under the gateway's name.
    async fn session_network(&self, sid: &str) -> Result<String> {
        let name = network_name(sid);
        let err = |action| docker_error(action, sid);
        let req = NetworkCreateRequest {
            name: name.clone(),
            driver: Some("bridge".to_string()),
            internal: Some(true),
            options: Some(HashMap::from([(
                INHIBIT_IPV4.to_string(),
                "true".to_string(),
            )])),
            labels: Some(self.labels(sid)),
            ..Default::default()
        };
        match self.docker.create_network(req).await {
            Ok(_) => {}
            Err(e) if already_there(&e) => {}
            Err(bollard::errors::Error::DockerResponseServerError { message, .. })
                if message.contains("non-overlapping") =>
            {
                return Err(RuntimeError::NoAddressPool);
            }
            Err(e) => return Err(err("create the session's network")(e)),
        }
        if self.relay.is_some() {
            let relay = self.ensure_relay(sid).await?;
            self.join_relay(&relay, &name, sid).await?;
        }
        Ok(name)
    }

    async fn join_relay(&self, relay: &str, network: &str, sid: &str) -> Result<()> {
        let Some(r) = &self.relay else { return Ok(()) };
        let req = NetworkConnectRequest {
            container: relay.to_string(),
            endpoint_config: Some(EndpointSettings {
                aliases: Some(vec![r.alias.clone()]),
                ..Default::default()
            }),
        };
        match self.docker.connect_network(network, req).await {
            Ok(()) => Ok(()),
            Err(e) if already_there(&e) => Ok(()),
            Err(source) => Err(RuntimeError::Docker {
                action: "connect the gateway relay to the session's network",
                session: sid.to_string(),
                source,
            }),
        }
    }

    /// The relay container, running: made by this process on first need (an older one of
    /// this instance is replaced, since what it resolved may be stale), made again when it
    /// stopped, and then joined to every session network of this instance.
    async fn ensure_relay(&self, sid: &str) -> Result<String> {
        let Some(r) = self.relay.clone() else {
            return Ok(String::new());
        };
        let mut held = self.relay_id.lock().await;
        if let Some(id) = held.as_ref()
            && self.inspect(id).await?.is_some_and(|st| st.running)
        {
            return Ok(id.clone());
        }
        let id = self.start_relay(&r, sid).await?;
        *held = Some(id.clone());
        drop(held);
        for net in self.session_networks().await? {
            self.join_relay(&id, &net, sid).await?;
        }
        Ok(id)
    }

    async fn start_relay(&self, r: &Relay, sid: &str) -> Result<String> {
        let err = |action| docker_error(action, sid);
        let name = relay_name(&self.instance);
        let opts = RemoveContainerOptionsBuilder::default().force(true).build();
        match self.docker.remove_container(&name, Some(opts)).await {
            Ok(()) => {}
            Err(e) if not_found(&e) => {}
            Err(e) => return Err(err("remove the old gateway relay")(e)),
        }
        match self.docker.inspect_image(&r.image).await {
            Ok(_) => {}
            Err(e) if not_found(&e) => {
                return Err(RuntimeError::Relay {
                    image: r.image.clone(),
                    detail: "the image is not on this Docker host".into(),
                });
            }
            Err(e) => return Err(err("inspect the gateway relay's image")(e)),
        }
        let labels = HashMap::from([
            (LABEL_MANAGED.to_string(), "true".to_string()),
            (LABEL_INSTANCE.to_string(), self.instance.clone()),
            (LABEL_ROLE.to_string(), "relay".to_string()),
        ]);
        let memory = 64 << 20;
        let body = ContainerCreateBody {
            image: Some(r.image.clone()),
            cmd: Some(vec![
                "firstmate".into(),
                "gateway-relay".into(),
                "--listen".into(),
                format!("0.0.0.0:{}", r.port),
                "--to".into(),
                r.target.clone(),
            ]),
            labels: Some(labels),
            // The image's own check is the bot's (/healthz), not the relay's.
            healthcheck: Some(HealthConfig {
                test: Some(vec!["NONE".to_string()]),
                ..Default::default()
            }),
            host_config: Some(HostConfig {
                cap_drop: Some(vec!["ALL".to_string()]),
                security_opt: Some(vec!["no-new-privileges".to_string()]),
                privileged: Some(false),
                memory: Some(memory),
                memory_swap: Some(memory),
                nano_cpus: Some(500_000_000),
                pids_limit: Some(64),
                init: Some(true),
                readonly_rootfs: Some(true),
                network_mode: r.network.clone(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let opts = CreateContainerOptionsBuilder::default().name(&name).build();
        let id = self
            .docker
            .create_container(Some(opts), body)
            .await
            .map_err(err("create the gateway relay"))?
            .id;
        self.start(sid, &id).await?;
        // It says `ready` once it has resolved where the gateway is: only then may it
        // join session networks (where the gateway's name is its own).
        let mut logs = self.follow_logs(&id, 0);
        let mut last = String::new();
        let waited = tokio::time::timeout(Duration::from_secs(20), async {
            while let Some(line) = logs.recv().await {
                match line {
                    Ok(l) if l.text.contains("relay ready") => return true,
                    Ok(l) => last = l.text,
                    Err(_) => break,
                }
            }
            false
        })
        .await;
        if waited != Ok(true) {
            let detail = if last.is_empty() {
                "it did not say it was ready within 20 s".to_string()
            } else {
                last
            };
            return Err(RuntimeError::Relay {
                image: r.image.clone(),
                detail,
            });
        }
        tracing::info!(relay = %name, target = %r.target, "gateway relay started");
        Ok(id)
    }

    /// The session networks of this instance there are now.
    async fn session_networks(&self) -> Result<Vec<String>> {
        let filters = self.instance_filter();
        let opts = bollard::query_parameters::ListNetworksOptionsBuilder::default()
            .filters(&filters)
            .build();
        let nets = self
            .docker
            .list_networks(Some(opts))
            .await
            .map_err(docker_error("list the session networks", ""))?;
        Ok(nets
            .into_iter()
            .filter(|n| {
                n.labels
                    .as_ref()
                    .is_some_and(|l| l.contains_key(LABEL_SESSION))
            })
            .filter_map(|n| n.name)
            .collect())
    }

    /// Creates an exec of `cmd` in `/workspace`, as the container's own user, with its
    /// output (and stdin) attached or not; its id.
    async fn create_exec(
        &self,
        session_id: &str,
        container: &str,
        cmd: Vec<String>,
        output: bool,
        stdin: bool,
    ) -> Result<String> {
        let opts = CreateExecOptions {
            attach_stdin: Some(stdin),
            attach_stdout: Some(output),
            attach_stderr: Some(output),
            tty: Some(false),
            cmd: Some(cmd),
            working_dir: Some(WORKSPACE.to_string()),
            ..Default::default()
        };
        let exec = self
            .docker
            .create_exec(container, opts)
            .await
            .map_err(docker_error("create an exec", session_id))?;
        Ok(exec.id)
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

    /// The containers of this instance.
    pub async fn list_managed(&self) -> Result<Vec<ManagedContainer>> {
        let filters = self.instance_filter();
        let opts = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let list = self
            .docker
            .list_containers(Some(opts))
            .await
            .map_err(docker_error("list containers", ""))?;
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

#[async_trait]
impl Runtime for DockerRuntime {
    /// Whether the Docker daemon (or the socket proxy) answers.
    async fn ping(&self) -> Result<()> {
        self.docker
            .ping()
            .await
            .map(|_| ())
            .map_err(|source| RuntimeError::Connect {
                host: self.host.clone(),
                source,
            })
    }

    /// The image's HOME, when the image exists; `NoImage` when it does not.
    async fn image_home(&self, image: &str) -> Result<Option<String>> {
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

    /// Makes sure a re-attached session's network has the relay on it (after a restart of
    /// firstmate the relay is a new one).
    async fn rejoin(&self, sid: &str) -> Result<()> {
        if self.isolated() && self.relay.is_some() {
            let relay = self.ensure_relay(sid).await?;
            self.join_relay(&relay, &network_name(sid), sid).await?;
        }
        Ok(())
    }

    /// Removes this instance's gateway relay (the service is going away: a relay left on
    /// a network would keep `docker compose down` from removing it). The next engine
    /// makes a new one and joins it to the networks of the sessions it picks up.
    async fn remove_relay(&self) -> Result<()> {
        if self.relay.is_none() {
            return Ok(());
        }
        let mut held = self.relay_id.lock().await;
        let opts = RemoveContainerOptionsBuilder::default().force(true).build();
        match self
            .docker
            .remove_container(&relay_name(&self.instance), Some(opts))
            .await
        {
            Ok(()) => {}
            Err(e) if not_found(&e) => {}
            Err(source) => {
                return Err(RuntimeError::Docker {
                    action: "remove the gateway relay",
                    session: String::new(),
                    source,
                });
            }
        }
        *held = None;
        Ok(())
    }

    /// Removes a session's network (its container has stopped): the relay leaves it
    /// first. A network already gone is fine.
    async fn release_network(&self, sid: &str) -> Result<()> {
        if !self.isolated() {
            return Ok(());
        }
        let name = network_name(sid);
        if self.relay.is_some() {
            let relay = relay_name(&self.instance);
            let req = NetworkDisconnectRequest {
                container: relay,
                force: Some(true),
            };
            // Not connected, or no relay: nothing to undo.
            let _ = self.docker.disconnect_network(&name, req).await;
        }
        match self.docker.remove_network(&name).await {
            Ok(()) => Ok(()),
            Err(e) if not_found(&e) => Ok(()),
            Err(source) => Err(RuntimeError::Docker {
                action: "remove the session's network",
                session: sid.to_string(),
                source,
            }),
        }
    }

    /// Creates the hardened worker container of a session (and its volumes), not started.
    /// An older container of the same session is removed first; its volumes are kept.
    ///
    /// The root filesystem is read-only; what the agent writes goes to `/workspace` and
    /// the home (volumes, kept across `resume`) or to `/tmp` (a tmpfs, as large as the
    /// memory limit it counts against, gone with the container). An init (Docker's
    /// `Init`) is PID 1, so orphans the agent leaves behind are reaped.
    async fn create(&self, spec: &WorkerSpec) -> Result<String> {
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

        let network_mode = match &self.network {
            Some(shared) => Some(shared.clone()),
            None => Some(self.session_network(sid).await?),
        };
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
            network_mode,
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

    async fn start(&self, session_id: &str, container: &str) -> Result<()> {
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
    async fn exec_detached(
        &self,
        session_id: &str,
        container: &str,
        cmd: Vec<String>,
    ) -> Result<()> {
        let err = |action| docker_error(action, session_id);
        let exec = self
            .create_exec(session_id, container, cmd, false, false)
            .await?;
        self.docker
            .start_exec(
                &exec,
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

    /// Runs `cmd` in the running container (in `/workspace`, as the container's own
    /// user) with `stdin` copied to its standard input and then closed, and its standard
    /// output handed to `stdout` chunk by chunk as it comes, never held whole. An error
    /// from `stdout` (the caller's limit, a full disk) ends the exec early with that
    /// error. Returns the exit code and the first 4 KiB of standard error.
    async fn exec_io(
        &self,
        session_id: &str,
        container: &str,
        cmd: Vec<String>,
        stdin: Option<&mut (dyn AsyncRead + Unpin + Send)>,
        stdout: &mut (dyn for<'b> FnMut(&'b [u8]) -> std::io::Result<()> + Send),
    ) -> Result<ExecEnd> {
        use tokio::io::AsyncWriteExt;
        let err = |action| docker_error(action, session_id);
        let io_err = |action| {
            move |source| RuntimeError::Io {
                action,
                session: session_id.to_string(),
                source,
            }
        };
        let exec = self
            .create_exec(session_id, container, cmd, true, stdin.is_some())
            .await?;
        let started = self
            .docker
            .start_exec(&exec, None::<StartExecOptions>)
            .await
            .map_err(err("start an exec"))?;
        let bollard::exec::StartExecResults::Attached {
            mut output,
            mut input,
        } = started
        else {
            return Ok(ExecEnd::default());
        };
        let feed = async {
            if let Some(r) = stdin {
                tokio::io::copy(r, &mut input)
                    .await
                    .map_err(io_err("copy a file into the container"))?;
            }
            // Closing stdin is the end of the file for the command reading it.
            let _ = input.shutdown().await;
            Ok::<(), RuntimeError>(())
        };
        let mut stderr = String::new();
        let drain = async {
            while let Some(frame) = output.next().await {
                match frame.map_err(err("read an exec's output"))? {
                    LogOutput::StdOut { message } => {
                        stdout(&message).map_err(io_err("take a file out of the container"))?
                    }
                    LogOutput::StdErr { message } if stderr.len() < 4096 => {
                        stderr.push_str(&String::from_utf8_lossy(&message));
                    }
                    _ => {}
                }
            }
            Ok::<(), RuntimeError>(())
        };
        // The first failure ends both halves (dropping the connection ends the command).
        tokio::try_join!(feed, drain)?;
        let code = self
            .docker
            .inspect_exec(&exec)
            .await
            .map_err(err("inspect an exec"))?
            .exit_code;
        stderr.truncate(stderr.floor_char_boundary(4096));
        Ok(ExecEnd { code, stderr })
    }

    /// An attach that carries stdin only; what is written reaches the agent's stdin.
    async fn attach_stdin(&self, session_id: &str, container: &str) -> Result<StdinWriter> {
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
    fn follow_logs(
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

    async fn inspect(&self, container: &str) -> Result<Option<ContainerStatus>> {
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
    async fn stop(&self, session_id: &str, container: &str, grace: Duration) -> Result<()> {
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

    /// Removes a session's container (forcefully) and every volume of this instance
    /// labelled with the session; what was not there is skipped. The caller makes sure
    /// the session has ended.
    async fn remove_session(&self, session_id: &str) -> Result<RemovedObjects> {
        let err = |action| docker_error(action, session_id);
        let name = container_name(session_id);
        let opts = RemoveContainerOptionsBuilder::default().force(true).build();
        let container = match self.docker.remove_container(&name, Some(opts)).await {
            Ok(()) => Some(name),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => None,
            Err(source) => return Err(err("remove the container")(source)),
        };
        self.release_network(session_id).await?;
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
