//! The body policy: what a container create, an exec create, a volume create and a
//! network create may ask for. Pure; tested below and by property tests.
//!
//! Bodies are read with [`super::json`], the way Docker's Go decoder reads them, into
//! schemas of Docker's types (API 1.40 to 1.47). A container create is checked twice:
//! the `HostConfig` object, and the top level, where Docker (up to 20.10 at least) also
//! reads every host-config field through a deprecated embedded struct.
//!
//! The policy allows what a hardened worker needs and refuses the rest: no privilege, no
//! added capability, no device, no host or shared namespace, no host path (binds, bind
//! mounts, volume driver options), no mount over `/dev`, `/proc` or `/sys`, no other
//! container's volumes, no unconfined security profile, no sysctl, no cgroup parent, no
//! other runtime, no published port, no restart policy, no `host-gateway`, no root
//! group, a PID limit always, and only fields it knows.
//!
//! What only the daemon can answer is left in a [`CreatePlan`] for the server to check:
//! the volumes a create mounts, the networks it joins, the container whose network it
//! shares. The decisions on the daemon's answers are here too ([`network_joinable`],
//! [`container_shareable`], [`volume_recreatable`]), pure.

use super::Denial;
use super::json::{self, Go, JsonError, Schema, Ty};

/// The label every object the proxy lets firstmate touch carries.
pub const LABEL_MANAGED: &str = "firstmate.managed";
/// The label naming the firstmate instance an object belongs to.
pub const LABEL_INSTANCE: &str = "firstmate.instance";

/// The rules a refusal names (in its message and in the audit log).
pub mod rule {
    pub const PATH: &str = "normalised paths only";
    pub const VERSION: &str = "API version 1.40 or newer";
    pub const ENDPOINT: &str = "endpoint allow-list";
    pub const QUERY: &str = "known query parameters only";
    pub const BODY: &str = "bodies the proxy can read";
    pub const NO_BODY: &str = "no body where Docker reads none";
    pub const SIZE: &str = "body size limit";
    pub const FIELDS: &str = "known fields only";
    pub const LABEL: &str = "managed label required";
    pub const MANAGED: &str = "managed objects only";
    pub const PRIVILEGED: &str = "no privileged containers";
    pub const PRIVILEGED_EXEC: &str = "no privileged exec";
    pub const CAPABILITIES: &str = "no added capabilities";
    pub const DEVICES: &str = "no host devices";
    pub const NAMESPACES: &str = "no host or shared namespaces";
    pub const HOST_PATHS: &str = "no host paths";
    pub const OTHER_CONTAINERS: &str = "no access to other containers";
    pub const CONFINEMENT: &str = "no unconfined security profiles";
    pub const KERNEL: &str = "no kernel settings";
    pub const CGROUP: &str = "no cgroup parent";
    pub const RUNTIME: &str = "default runtime only";
    pub const OOM: &str = "no OOM-killer exemption";
    pub const PORTS: &str = "no published ports";
    pub const DRIVERS: &str = "default drivers only";
    pub const NETWORKS: &str = "managed or allowed networks only";
    pub const SYSTEM_PATHS: &str = "no mounts over /dev, /proc or /sys";
    pub const PIDS: &str = "a PID limit";
    pub const RESTART: &str = "no restart policy";
    pub const HOST_GATEWAY: &str = "no host-gateway";
    pub const ROOT_GROUP: &str = "no root group";
    pub const EXEC_ROOT: &str = "no exec as root";
    pub const TIMEOUT: &str = "body read timeout";
}

// --- Docker's types, as far as the policy reads them ---------------------------------

const A: Ty = Ty::Any;

const CONFIG: &[(&str, Ty)] = &[
    ("Hostname", A),
    ("Domainname", A),
    ("User", A),
    ("AttachStdin", A),
    ("AttachStdout", A),
    ("AttachStderr", A),
    ("ExposedPorts", A),
    ("Tty", A),
    ("OpenStdin", A),
    ("StdinOnce", A),
    ("Env", A),
    ("Cmd", A),
    ("Healthcheck", A),
    ("ArgsEscaped", A),
    ("Image", A),
    ("Volumes", Ty::Map(&A)),
    ("WorkingDir", A),
    ("Entrypoint", A),
    ("NetworkDisabled", A),
    ("MacAddress", A),
    ("OnBuild", A),
    ("Labels", Ty::Map(&Ty::Str)),
    ("StopSignal", A),
    ("StopTimeout", A),
    ("Shell", A),
];

static DRIVER: Schema = Schema {
    groups: &[&[("Name", Ty::Str), ("Options", Ty::Map(&A))]],
};

static VOLUME_OPTIONS: Schema = Schema {
    groups: &[&[
        ("NoCopy", A),
        ("Labels", A),
        ("DriverConfig", Ty::Ptr(&Ty::Struct(&DRIVER))),
        ("Subpath", A),
    ]],
};

static MOUNT: Schema = Schema {
    groups: &[&[
        ("Type", Ty::Str),
        ("Source", Ty::Str),
        ("Target", Ty::Str),
        ("ReadOnly", A),
        ("Consistency", A),
        ("BindOptions", Ty::Ptr(&A)),
        ("VolumeOptions", Ty::Ptr(&Ty::Struct(&VOLUME_OPTIONS))),
        ("TmpfsOptions", A),
        ("ImageOptions", Ty::Ptr(&A)),
        ("ClusterOptions", Ty::Ptr(&A)),
    ]],
};

static RESTART_POLICY: Schema = Schema {
    groups: &[&[("Name", Ty::Str), ("MaximumRetryCount", A)]],
};

static LOG_CONFIG: Schema = Schema {
    groups: &[&[("Type", Ty::Str), ("Config", A)]],
};

const HOST_CONFIG: &[(&str, Ty)] = &[
    ("Binds", Ty::Slice(&Ty::Str)),
    ("ContainerIDFile", A),
    ("LogConfig", Ty::Struct(&LOG_CONFIG)),
    ("NetworkMode", Ty::Str),
    ("PortBindings", Ty::Map(&A)),
    ("RestartPolicy", Ty::Struct(&RESTART_POLICY)),
    ("AutoRemove", A),
    ("VolumeDriver", Ty::Str),
    ("VolumesFrom", Ty::Slice(&A)),
    ("ConsoleSize", A),
    ("Annotations", Ty::Map(&A)),
    ("CapAdd", Ty::StrSlice),
    ("CapDrop", A),
    ("CgroupnsMode", Ty::Str),
    ("Dns", A),
    ("DnsOptions", A),
    ("DnsSearch", A),
    ("ExtraHosts", Ty::Slice(&Ty::Str)),
    ("GroupAdd", Ty::Slice(&Ty::Str)),
    ("IpcMode", Ty::Str),
    ("Cgroup", Ty::Str),
    ("Links", Ty::Slice(&A)),
    ("OomScoreAdj", Ty::Int),
    ("PidMode", Ty::Str),
    ("Privileged", Ty::Bool),
    ("PublishAllPorts", Ty::Bool),
    ("ReadonlyRootfs", A),
    ("SecurityOpt", Ty::Slice(&Ty::Str)),
    ("StorageOpt", A),
    ("Tmpfs", Ty::Map(&Ty::Str)),
    ("UTSMode", Ty::Str),
    ("UsernsMode", Ty::Str),
    ("ShmSize", A),
    ("Sysctls", Ty::Map(&A)),
    ("Runtime", Ty::Str),
    ("Isolation", A),
    ("Mounts", Ty::Slice(&Ty::Struct(&MOUNT))),
    ("MaskedPaths", Ty::Slice(&A)),
    ("ReadonlyPaths", Ty::Slice(&A)),
    ("Init", A),
];

/// `container.Resources`, embedded in the host config.
const RESOURCES: &[(&str, Ty)] = &[
    ("CpuShares", A),
    ("Memory", A),
    ("NanoCpus", A),
    ("CgroupParent", Ty::Str),
    ("BlkioWeight", A),
    ("BlkioWeightDevice", A),
    ("BlkioDeviceReadBps", A),
    ("BlkioDeviceWriteBps", A),
    ("BlkioDeviceReadIOps", A),
    ("BlkioDeviceWriteIOps", A),
    ("CpuPeriod", A),
    ("CpuQuota", A),
    ("CpuRealtimePeriod", A),
    ("CpuRealtimeRuntime", A),
    ("CpusetCpus", A),
    ("CpusetMems", A),
    ("Devices", Ty::Slice(&A)),
    ("DeviceCgroupRules", Ty::Slice(&A)),
    ("DeviceRequests", Ty::Slice(&A)),
    ("KernelMemory", A),
    ("KernelMemoryTCP", A),
    ("MemoryReservation", A),
    ("MemorySwap", A),
    ("MemorySwappiness", A),
    ("OomKillDisable", Ty::Ptr(&Ty::Bool)),
    ("PidsLimit", Ty::Ptr(&Ty::Int)),
    ("Ulimits", A),
    ("CpuCount", A),
    ("CpuPercent", A),
    ("IOMaximumIOps", A),
    ("IOMaximumBandwidth", A),
];

/// `network.EndpointSettings`, one per network a create joins.
static ENDPOINT: Schema = Schema {
    groups: &[&[
        ("IPAMConfig", A),
        ("Links", A),
        ("Aliases", Ty::Slice(&Ty::Str)),
        ("MacAddress", A),
        ("DriverOpts", Ty::Map(&A)),
        ("GwPriority", A),
        ("NetworkID", Ty::Str),
        ("EndpointID", A),
        ("Gateway", A),
        ("IPAddress", A),
        ("IPPrefixLen", A),
        ("IPv6Gateway", A),
        ("GlobalIPv6Address", A),
        ("GlobalIPv6PrefixLen", A),
        ("DNSNames", A),
    ]],
};

static NETWORKING: Schema = Schema {
    groups: &[&[("EndpointsConfig", Ty::Map(&Ty::Ptr(&Ty::Struct(&ENDPOINT))))]],
};

pub static HOST: Schema = Schema {
    groups: &[HOST_CONFIG, RESOURCES],
};

/// The body of `POST /containers/create`: the container config, `HostConfig`,
/// `NetworkingConfig`, and (Docker's deprecated embedded host config) every host-config
/// field again at the top level.
pub static CREATE: Schema = Schema {
    groups: &[
        CONFIG,
        &[
            ("HostConfig", Ty::Ptr(&Ty::Struct(&HOST))),
            ("NetworkingConfig", Ty::Ptr(&Ty::Struct(&NETWORKING))),
            ("Cpuset", A),
        ],
        HOST_CONFIG,
        RESOURCES,
    ],
};

pub static EXEC: Schema = Schema {
    groups: &[&[
        ("User", Ty::Str),
        ("Privileged", Ty::Bool),
        ("Tty", A),
        ("ConsoleSize", A),
        ("AttachStdin", A),
        ("AttachStderr", A),
        ("AttachStdout", A),
        ("Detach", A),
        ("DetachKeys", A),
        ("Env", A),
        ("WorkingDir", A),
        ("Cmd", A),
    ]],
};

pub static VOLUME_CREATE: Schema = Schema {
    groups: &[&[
        ("Name", Ty::Str),
        ("Driver", Ty::Str),
        ("DriverOpts", Ty::Map(&A)),
        ("Labels", Ty::Map(&Ty::Str)),
        ("ClusterVolumeSpec", Ty::Ptr(&A)),
    ]],
};

static IPAM: Schema = Schema {
    groups: &[&[
        ("Driver", Ty::Str),
        ("Config", Ty::Slice(&A)),
        ("Options", Ty::Map(&A)),
    ]],
};

pub static NETWORK_CREATE: Schema = Schema {
    groups: &[&[
        ("Name", A),
        ("CheckDuplicate", A),
        ("Driver", Ty::Str),
        ("Scope", Ty::Str),
        ("EnableIPv6", Ty::Bool),
        ("EnableIPv4", A),
        ("IPAM", Ty::Ptr(&Ty::Struct(&IPAM))),
        ("Internal", Ty::Bool),
        ("Attachable", Ty::Bool),
        ("Ingress", Ty::Bool),
        ("ConfigOnly", Ty::Bool),
        ("ConfigFrom", Ty::Ptr(&A)),
        ("Options", Ty::Map(&Ty::Str)),
        ("Labels", Ty::Map(&Ty::Str)),
    ]],
};

// --- decisions -------------------------------------------------------------------------

/// What a create that passed the policy still needs checked upstream.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct CreatePlan {
    /// Named volumes it mounts: each must exist and carry the managed label.
    pub volumes: Vec<String>,
    /// Networks it joins, as named (name, ID or ID prefix): each must be managed by the
    /// create's instance or allowed by `--allow-network` ([`network_joinable`]).
    pub networks: Vec<String>,
    /// The container whose network namespace it shares (`container:<id>`): it must be
    /// managed by the create's instance ([`container_shareable`]).
    pub containers: Vec<String>,
    /// The create's own `firstmate.instance` label.
    pub instance: Option<String>,
}

fn push_once(list: &mut Vec<String>, item: &str) {
    if !list.iter().any(|i| i == item) {
        list.push(item.to_string());
    }
}

fn read(body: &[u8], schema: &'static Schema, what: &str) -> Result<Go, Denial> {
    let raw = json::parse(body)
        .map_err(|e| Denial::new(rule::BODY, format!("cannot read the {what} body: {e}")))?;
    json::decode(&raw, &Ty::Struct(schema)).map_err(|e| match e {
        JsonError::Unknown { .. } => Denial::new(
            rule::FIELDS,
            format!("the {what} body has an {e}; the proxy lets through only fields it knows"),
        ),
        e => Denial::new(rule::BODY, format!("cannot read the {what} body: {e}")),
    })
}

fn require_label(labels: &Go, path: &str) -> Result<(), Denial> {
    match labels.entry(LABEL_MANAGED) {
        Some(Go::Str(v)) if v == "true" => Ok(()),
        Some(v) => Err(Denial::new(
            rule::LABEL,
            format!("{path}[{LABEL_MANAGED:?}] is {:?}, not \"true\"", v.str()),
        )),
        None => Err(Denial::new(
            rule::LABEL,
            format!("{path} does not carry {LABEL_MANAGED}=true"),
        )),
    }
}

pub fn container_create(body: &[u8]) -> Result<CreatePlan, Denial> {
    let v = read(body, &CREATE, "container create")?;
    require_label(v.get("Labels"), "Labels")?;
    let mut plan = CreatePlan {
        instance: v
            .get("Labels")
            .entry(LABEL_INSTANCE)
            .map(|i| i.str().to_string()),
        ..CreatePlan::default()
    };
    if let Go::Map(endpoints) = v.get("NetworkingConfig").get("EndpointsConfig") {
        for (net, e) in endpoints {
            let p = format!("NetworkingConfig.EndpointsConfig[{net:?}]");
            if !e.get("DriverOpts").is_empty() {
                deny(
                    rule::KERNEL,
                    format!("{p}.DriverOpts is not empty (driver options set interface sysctls)"),
                )?;
            }
            let id = e.get("NetworkID").str();
            if !id.is_empty() {
                deny(
                    rule::NETWORKS,
                    format!(
                        "{p}.NetworkID is {id:?} (Docker would join that network instead of {net:?})"
                    ),
                )?;
            }
            if net.is_empty() || net.starts_with("container:") {
                deny(
                    rule::NETWORKS,
                    format!("{p} names no network a worker may join"),
                )?;
            }
            network(net, &p, &mut plan)?;
        }
    }
    if let Go::Map(volumes) = v.get("Volumes") {
        for target in volumes.keys() {
            system_path(target, &format!("Volumes[{target:?}]"))?;
        }
    }
    host_config(&v, "", &mut plan)?;
    host_config(v.get("HostConfig"), "HostConfig.", &mut plan)?;
    // Docker reads the HostConfig object when there is one, else the top level.
    let (h, p) = match v.get("HostConfig") {
        Go::Nil => (&v, ""),
        h => (h, "HostConfig."),
    };
    if h.get("PidsLimit").is_nil() {
        deny(
            rule::PIDS,
            format!("{p}PidsLimit is not set (no limit: a fork bomb takes the host's PIDs)"),
        )?;
    }
    Ok(plan)
}

/// A network a create names (in `NetworkMode` or as an endpoint): none, the default
/// bridge, or one the daemon must show to be managed or allowed (left in the plan).
fn network(name: &str, what: &str, plan: &mut CreatePlan) -> Result<(), Denial> {
    if matches!(name, "" | "default" | "bridge" | "none") {
        // "" and "default" are Docker's default network, the bridge: where firstmate's
        // workers run while no docker.network is configured.
        return Ok(());
    }
    if name.eq_ignore_ascii_case("host") {
        return deny(rule::NAMESPACES, format!("{what} is {name:?}"));
    }
    if let Some(id) = name.strip_prefix("container:") {
        if !volume_name(id) {
            return deny(rule::NAMESPACES, format!("{what} is {name:?}"));
        }
        push_once(&mut plan.containers, id);
        return Ok(());
    }
    if !volume_name(name) {
        return deny(
            rule::NETWORKS,
            format!("{what} {name:?} is not a network name"),
        );
    }
    push_once(&mut plan.networks, name);
    Ok(())
}

/// Refuses a mount target over (or above) `/dev`, `/proc` or `/sys`, as the path
/// resolves lexically; a relative path is read from `/`.
fn system_path(target: &str, what: &str) -> Result<(), Denial> {
    // A Tmpfs key may carry options after a colon: check the path before it as well.
    for path in [Some(target), target.split_once(':').map(|(p, _)| p)]
        .into_iter()
        .flatten()
    {
        let mut parts: Vec<&str> = Vec::new();
        for seg in path.split('/') {
            match seg {
                "" | "." => {}
                ".." => {
                    parts.pop();
                }
                s => parts.push(s),
            }
        }
        if parts.is_empty() || matches!(parts[0], "dev" | "proc" | "sys") {
            deny(
                rule::SYSTEM_PATHS,
                format!("{what} mounts over {path:?} (/dev, /proc and /sys are the kernel's)"),
            )?;
        }
    }
    Ok(())
}

/// Whether a user or group names root: `root`, or a number that is 0.
fn is_root(s: &str) -> bool {
    s == "root"
        || (!s.is_empty()
            && s.bytes().all(|b| b.is_ascii_digit())
            && s.trim_start_matches('0').is_empty())
}

fn deny(rule: &'static str, detail: String) -> Result<(), Denial> {
    Err(Denial::new(rule, detail))
}

fn first(v: &Go) -> String {
    match v.items().first() {
        Some(Go::Str(s)) => format!(" ({s:?})"),
        _ => String::new(),
    }
}

/// The host-config checks, on `h` (the `HostConfig` object, or the top level).
fn host_config(h: &Go, p: &str, plan: &mut CreatePlan) -> Result<(), Denial> {
    if h.get("Privileged").is_true() {
        deny(rule::PRIVILEGED, format!("{p}Privileged is true"))?;
    }
    let caps = h.get("CapAdd");
    if !caps.is_empty() {
        let names: Vec<&str> = caps.items().iter().map(Go::str).collect();
        deny(
            rule::CAPABILITIES,
            format!("{p}CapAdd asks for {}", names.join(", ")),
        )?;
    }
    for f in ["Devices", "DeviceRequests", "DeviceCgroupRules"] {
        if !h.get(f).is_empty() {
            deny(rule::DEVICES, format!("{p}{f} is not empty"))?;
        }
    }

    let mode = h.get("NetworkMode").str();
    if mode.to_ascii_lowercase().starts_with("container:") && !mode.starts_with("container:") {
        deny(rule::NAMESPACES, format!("{p}NetworkMode is {mode:?}"))?;
    }
    network(mode, &format!("{p}NetworkMode"), plan)?;
    for (f, allowed) in [
        ("PidMode", &[""][..]),
        ("IpcMode", &["", "none", "private", "shareable"][..]),
        ("UTSMode", &[""][..]),
        ("UsernsMode", &[""][..]),
        ("CgroupnsMode", &["", "private"][..]),
        ("Cgroup", &[""][..]),
    ] {
        let mode = h.get(f).str();
        if !allowed.contains(&mode) {
            deny(rule::NAMESPACES, format!("{p}{f} is {mode:?}"))?;
        }
    }

    let binds = h.get("Binds");
    if !binds.is_empty() {
        deny(
            rule::HOST_PATHS,
            format!("{p}Binds mounts host paths{}", first(binds)),
        )?;
    }
    for (i, m) in h.get("Mounts").items().iter().enumerate() {
        mount(m, &format!("{p}Mounts[{i}]"), plan)?;
    }
    if let Go::Map(tmpfs) = h.get("Tmpfs") {
        for target in tmpfs.keys() {
            system_path(target, &format!("{p}Tmpfs[{target:?}]"))?;
        }
    }
    if !h.get("VolumesFrom").is_empty() {
        deny(
            rule::OTHER_CONTAINERS,
            format!("{p}VolumesFrom mounts another container's volumes"),
        )?;
    }
    if !h.get("Links").is_empty() {
        deny(
            rule::OTHER_CONTAINERS,
            format!("{p}Links links other containers"),
        )?;
    }

    for opt in h.get("SecurityOpt").items() {
        let opt = opt.str();
        if !security_opt_allowed(opt) {
            deny(
                rule::CONFINEMENT,
                format!(
                    "{p}SecurityOpt has {opt:?} (only no-new-privileges and apparmor=docker-default are let through)"
                ),
            )?;
        }
    }
    for f in ["MaskedPaths", "ReadonlyPaths"] {
        if !h.get(f).is_nil() {
            deny(
                rule::CONFINEMENT,
                format!("{p}{f} replaces Docker's default masked and read-only /proc paths"),
            )?;
        }
    }
    if !h.get("Sysctls").is_empty() {
        deny(rule::KERNEL, format!("{p}Sysctls is not empty"))?;
    }
    let parent = h.get("CgroupParent").str();
    if !parent.is_empty() {
        deny(rule::CGROUP, format!("{p}CgroupParent is {parent:?}"))?;
    }
    let runtime = h.get("Runtime").str();
    if !matches!(runtime, "" | "runc") {
        deny(rule::RUNTIME, format!("{p}Runtime is {runtime:?}"))?;
    }
    if !h.get("Annotations").is_empty() {
        deny(
            rule::RUNTIME,
            format!("{p}Annotations passes OCI annotations to the runtime"),
        )?;
    }
    if h.get("OomKillDisable").is_true() {
        deny(rule::OOM, format!("{p}OomKillDisable is true"))?;
    }
    let adj = h.get("OomScoreAdj").int();
    if adj < 0 {
        deny(rule::OOM, format!("{p}OomScoreAdj is {adj}"))?;
    }
    let vd = h.get("VolumeDriver").str();
    if !matches!(vd, "" | "local") {
        deny(rule::DRIVERS, format!("{p}VolumeDriver is {vd:?}"))?;
    }
    let log = h.get("LogConfig").get("Type").str();
    if !matches!(log, "" | "json-file" | "local" | "journald" | "none") {
        deny(rule::DRIVERS, format!("{p}LogConfig.Type is {log:?}"))?;
    }
    if !h.get("PortBindings").is_empty() || h.get("PublishAllPorts").is_true() {
        deny(
            rule::PORTS,
            format!("{p}PortBindings or PublishAllPorts publishes ports on the host"),
        )?;
    }
    let restart = h.get("RestartPolicy").get("Name").str();
    if !matches!(restart, "" | "no") {
        deny(
            rule::RESTART,
            format!(
                "{p}RestartPolicy.Name is {restart:?} (a worker that ends stays ended; firstmate restarts sessions itself)"
            ),
        )?;
    }
    for host in h.get("ExtraHosts").items() {
        let host = host.str();
        if host.to_ascii_lowercase().contains("host-gateway") {
            deny(
                rule::HOST_GATEWAY,
                format!("{p}ExtraHosts has {host:?}, which points a name at the host"),
            )?;
        }
    }
    for group in h.get("GroupAdd").items() {
        let group = group.str();
        if is_root(group) {
            deny(rule::ROOT_GROUP, format!("{p}GroupAdd adds {group:?}"))?;
        }
    }
    if let Go::Int(n) = h.get("PidsLimit")
        && *n <= 0
    {
        deny(
            rule::PIDS,
            format!("{p}PidsLimit is {n} (no limit: a fork bomb takes the host's PIDs)"),
        )?;
    }
    Ok(())
}

fn mount(m: &Go, p: &str, plan: &mut CreatePlan) -> Result<(), Denial> {
    let typ = m.get("Type").str();
    system_path(m.get("Target").str(), &format!("{p}.Target"))?;
    if !m.get("BindOptions").is_nil() {
        deny(rule::HOST_PATHS, format!("{p}.BindOptions is set"))?;
    }
    match typ {
        "volume" => {
            let driver = m.get("VolumeOptions").get("DriverConfig");
            let name = driver.get("Name").str();
            if !matches!(name, "" | "local") {
                deny(
                    rule::DRIVERS,
                    format!("{p}.VolumeOptions.DriverConfig.Name is {name:?}"),
                )?;
            }
            if !driver.get("Options").is_empty() {
                deny(
                    rule::HOST_PATHS,
                    format!(
                        "{p}.VolumeOptions.DriverConfig.Options is not empty (type, o and device bind host paths)"
                    ),
                )?;
            }
            let source = m.get("Source").str();
            if !source.is_empty() {
                if !volume_name(source) {
                    deny(
                        rule::HOST_PATHS,
                        format!("{p}.Source {source:?} is not a volume name"),
                    )?;
                }
                plan.volumes.push(source.to_string());
            }
            Ok(())
        }
        "tmpfs" => {
            let source = m.get("Source").str();
            if !source.is_empty() {
                deny(
                    rule::HOST_PATHS,
                    format!("{p}.Source is {source:?} on a tmpfs mount"),
                )?;
            }
            Ok(())
        }
        other => deny(
            rule::HOST_PATHS,
            format!("{p}.Type is {other:?}; only volume and tmpfs mounts are let through"),
        ),
    }
}

/// Docker's volume names: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`.
pub fn volume_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// The security options that confine no less than Docker's defaults. Split the way the
/// daemon splits them (`=`, else the old `:`).
fn security_opt_allowed(opt: &str) -> bool {
    if opt == "no-new-privileges" {
        return true;
    }
    let kv = opt.split_once('=').or_else(|| opt.split_once(':'));
    matches!(
        kv,
        Some(("no-new-privileges", _)) | Some(("apparmor", "docker-default"))
    )
}

pub fn exec_create(body: &[u8]) -> Result<(), Denial> {
    let v = read(body, &EXEC, "exec create")?;
    if v.get("Privileged").is_true() {
        deny(rule::PRIVILEGED_EXEC, "Privileged is true".into())?;
    }
    // "user", "user:group", "uid" or "uid:gid"; empty runs as the container's user.
    let user = v.get("User").str();
    let (u, g) = user.split_once(':').unwrap_or((user, ""));
    if is_root(u) || is_root(g) {
        deny(
            rule::EXEC_ROOT,
            format!("User is {user:?}; an exec runs as the container's own user"),
        )?;
    }
    Ok(())
}

/// Decides on a volume create body; the name it gives, if any, is checked against the
/// daemon before the create goes on ([`volume_recreatable`]).
pub fn volume_create(body: &[u8]) -> Result<Option<String>, Denial> {
    let v = read(body, &VOLUME_CREATE, "volume create")?;
    require_label(v.get("Labels"), "Labels")?;
    let name = v.get("Name").str();
    if !name.is_empty() && !volume_name(name) {
        deny(rule::BODY, format!("Name {name:?} is not a volume name"))?;
    }
    let driver = v.get("Driver").str();
    if !matches!(driver, "" | "local") {
        deny(rule::DRIVERS, format!("Driver is {driver:?}"))?;
    }
    if !v.get("DriverOpts").is_empty() {
        deny(
            rule::HOST_PATHS,
            "DriverOpts is not empty (type, o and device bind host paths or mount shares)".into(),
        )?;
    }
    if !v.get("ClusterVolumeSpec").is_nil() {
        deny(rule::DRIVERS, "ClusterVolumeSpec is set".into())?;
    }
    Ok((!name.is_empty()).then(|| name.to_string()))
}

/// A volume create naming a volume that exists (`answer`: Docker's inspect of it) goes
/// on only when that volume is managed: Docker answers a create of an existing name with
/// the existing volume, driver options (share addresses, credentials) included.
pub fn volume_recreatable(name: &str, answer: &serde_json::Value) -> Result<(), Denial> {
    if labels_managed(&answer["Labels"]) {
        Ok(())
    } else {
        deny(
            rule::MANAGED,
            format!(
                "the volume {name} exists and does not carry {LABEL_MANAGED}=true (creating it again would answer with its options)"
            ),
        )
    }
}

/// Whether a create of `instance` may join the network Docker resolved `term` to
/// (`answer`: its inspect): one carrying the managed label and the create's instance, or
/// one named by `--allow-network`.
pub fn network_joinable(
    term: &str,
    answer: &serde_json::Value,
    instance: Option<&str>,
    allowed: &[String],
) -> Result<(), Denial> {
    let name = answer["Name"].as_str().unwrap_or_default();
    if !name.is_empty() && allowed.iter().any(|a| a == name) {
        return Ok(());
    }
    let labels = &answer["Labels"];
    if labels_managed(labels)
        && instance.is_some()
        && labels.get(LABEL_INSTANCE).and_then(|i| i.as_str()) == instance
    {
        return Ok(());
    }
    deny(
        rule::NETWORKS,
        format!(
            "the network {term:?} ({name}) is neither firstmate's ({LABEL_MANAGED}=true and {LABEL_INSTANCE}={}) nor allowed with --allow-network",
            instance.unwrap_or("<the create's instance>")
        ),
    )
}

/// Whether a create of `instance` may share the network namespace of the container
/// Docker resolved `id` to (`answer`: its inspect): only one managed by that instance.
pub fn container_shareable(
    id: &str,
    answer: &serde_json::Value,
    instance: Option<&str>,
) -> Result<(), Denial> {
    let labels = &answer["Config"]["Labels"];
    if labels_managed(labels)
        && instance.is_some()
        && labels.get(LABEL_INSTANCE).and_then(|i| i.as_str()) == instance
    {
        return Ok(());
    }
    deny(
        rule::NAMESPACES,
        format!(
            "NetworkMode container:{id} shares the network of a container that is not firstmate's ({LABEL_MANAGED}=true and {LABEL_INSTANCE} of the create)"
        ),
    )
}

pub fn network_create(body: &[u8]) -> Result<(), Denial> {
    let v = read(body, &NETWORK_CREATE, "network create")?;
    require_label(v.get("Labels"), "Labels")?;
    let driver = v.get("Driver").str();
    if !matches!(driver, "" | "bridge") {
        deny(rule::DRIVERS, format!("Driver is {driver:?}"))?;
    }
    if let Go::Map(options) = v.get("Options") {
        for (key, value) in options {
            let allowed = NETWORK_OPTIONS
                .iter()
                .any(|(k, val)| k == key && *val == value.str());
            if !allowed {
                deny(
                    rule::DRIVERS,
                    format!(
                        "Options[{key:?}] = {:?} is not one firstmate sets (driver options can take over host interfaces); allowed: {}",
                        value.str(),
                        NETWORK_OPTIONS
                            .iter()
                            .map(|(k, v)| format!("{k}={v}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )?;
            }
        }
    }
    if v.get("Attachable").is_true() || v.get("ConfigOnly").is_true() {
        deny(rule::DRIVERS, "Attachable or ConfigOnly is true".into())?;
    }
    let scope = v.get("Scope").str();
    if !matches!(scope, "" | "local") {
        deny(rule::DRIVERS, format!("Scope is {scope:?}"))?;
    }
    if v.get("Ingress").is_true() {
        deny(rule::DRIVERS, "Ingress is true".into())?;
    }
    if !v.get("ConfigFrom").is_nil() {
        deny(rule::DRIVERS, "ConfigFrom is set".into())?;
    }
    let ipam = v.get("IPAM");
    let ipam_driver = ipam.get("Driver").str();
    if !matches!(ipam_driver, "" | "default") {
        deny(rule::DRIVERS, format!("IPAM.Driver is {ipam_driver:?}"))?;
    }
    if !ipam.get("Options").is_empty() {
        deny(rule::DRIVERS, "IPAM.Options is not empty".into())?;
    }
    if !ipam.get("Config").is_empty() {
        deny(
            rule::DRIVERS,
            "IPAM.Config is not empty (a chosen subnet can shadow the host's routes; Docker picks one from its pools)".into(),
        )?;
    }
    if !v.get("Internal").is_true() {
        deny(
            rule::NETWORKS,
            "Internal is not true (a network firstmate creates has no route out)".into(),
        )?;
    }
    if v.get("EnableIPv6").is_true() {
        deny(rule::NETWORKS, "EnableIPv6 is true".into())?;
    }
    Ok(())
}

/// The driver options a network create may carry, with the one value each may have: a
/// bridge with no address on the host (the host is not reachable through it).
pub const NETWORK_OPTIONS: &[(&str, &str)] = &[("com.docker.network.bridge.inhibit_ipv4", "true")];

static ENDPOINT_IPAM: Schema = Schema {
    groups: &[&[
        ("IPv4Address", Ty::Str),
        ("IPv6Address", Ty::Str),
        ("LinkLocalIPs", Ty::Slice(&Ty::Str)),
    ]],
};

/// `network.EndpointSettings` of a connect, typed throughout: the Docker CLI sends every
/// field, most of them empty, and only Aliases may be more than empty.
static CONNECT_ENDPOINT: Schema = Schema {
    groups: &[&[
        ("IPAMConfig", Ty::Ptr(&Ty::Struct(&ENDPOINT_IPAM))),
        ("Links", Ty::Slice(&Ty::Str)),
        ("Aliases", Ty::Slice(&Ty::Str)),
        ("MacAddress", Ty::Str),
        ("DriverOpts", Ty::Map(&Ty::Str)),
        ("GwPriority", Ty::Int),
        ("NetworkID", Ty::Str),
        ("EndpointID", Ty::Str),
        ("Gateway", Ty::Str),
        ("IPAddress", Ty::Str),
        ("IPPrefixLen", Ty::Int),
        ("IPv6Gateway", Ty::Str),
        ("GlobalIPv6Address", Ty::Str),
        ("GlobalIPv6PrefixLen", Ty::Int),
        ("DNSNames", Ty::Slice(&Ty::Str)),
    ]],
};

static NETWORK_CONNECT: Schema = Schema {
    groups: &[&[
        ("Container", Ty::Str),
        ("EndpointConfig", Ty::Ptr(&Ty::Struct(&CONNECT_ENDPOINT))),
        ("Force", Ty::Bool),
    ]],
};

/// A network connect or disconnect body: the container it names (checked upstream:
/// managed, of the network's instance). A connect may give aliases and nothing else of
/// the endpoint (no fixed address, links, MAC or driver options).
pub fn network_connect(body: &[u8], disconnect: bool) -> Result<Connect, Denial> {
    let what = if disconnect {
        "network disconnect"
    } else {
        "network connect"
    };
    let v = read(body, &NETWORK_CONNECT, what)?;
    let container = v.get("Container").str();
    if container.is_empty() {
        deny(rule::FIELDS, format!("the {what} names no Container"))?;
    }
    if disconnect {
        if !v.get("EndpointConfig").is_nil() {
            deny(
                rule::FIELDS,
                "a disconnect carries no EndpointConfig".into(),
            )?;
        }
    } else {
        if v.get("Force").is_true() {
            deny(rule::FIELDS, "a connect carries no Force".into())?;
        }
        if let Go::Struct(fields) = v.get("EndpointConfig") {
            for (key, value) in fields {
                if *key != "Aliases" && is_set(value) {
                    deny(
                        rule::NETWORKS,
                        format!("EndpointConfig.{key} is set (only Aliases may be)"),
                    )?;
                }
            }
        }
    }
    let aliases = v
        .get("EndpointConfig")
        .get("Aliases")
        .items()
        .iter()
        .map(|a| a.str().to_string())
        .collect();
    Ok(Connect {
        container: container.to_string(),
        aliases,
        force: v.get("Force").is_true(),
    })
}

/// What a network connect or disconnect asks, as the proxy passes it on (rebuilt, with
/// the container's full ID once it is checked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    pub container: String,
    pub aliases: Vec<String>,
    pub force: bool,
}

impl Connect {
    /// The body Docker gets: the container by its full ID, the aliases, nothing else.
    pub fn body(&self, full_id: &str, disconnect: bool) -> Vec<u8> {
        let v = if disconnect {
            serde_json::json!({ "Container": full_id, "Force": self.force })
        } else {
            serde_json::json!({
                "Container": full_id,
                "EndpointConfig": { "Aliases": self.aliases },
            })
        };
        v.to_string().into_bytes()
    }
}

/// Whether a decoded field holds more than its zero value (an opaque value always does).
fn is_set(v: &Go) -> bool {
    match v {
        Go::Nil => false,
        Go::Opaque => true,
        Go::Bool(b) => *b,
        Go::Int(i) => *i != 0,
        Go::Str(s) => !s.is_empty(),
        Go::Slice { .. } | Go::Map(_) => !v.is_empty(),
        Go::Struct(m) => m.values().any(is_set),
    }
}

/// Whether the network Docker answered (`answer`: its inspect) is firstmate's, of
/// `instance` when one is known: the only networks a container is connected to or
/// disconnected from.
pub fn network_managed_by(answer: &serde_json::Value, instance: Option<&str>) -> bool {
    let labels = &answer["Labels"];
    labels_managed(labels)
        && instance.is_none_or(|i| labels.get(LABEL_INSTANCE).and_then(|v| v.as_str()) == Some(i))
}

/// Whether Docker's answer for an object (its `Labels`) marks it managed.
pub fn labels_managed(labels: &serde_json::Value) -> bool {
    labels.get(LABEL_MANAGED).and_then(|v| v.as_str()) == Some("true")
}

#[cfg(test)]
mod tests {
    use super::*;

    const LABEL: &str = r#""Labels":{"firstmate.managed":"true"}"#;

    fn create(body: &str) -> Result<CreatePlan, Denial> {
        container_create(body.as_bytes())
    }

    /// The rule a create body is refused by (panics when it is allowed).
    fn refused(body: &str) -> &'static str {
        match create(body) {
            Ok(_) => panic!("allowed: {body}"),
            Err(d) => d.rule,
        }
    }

    /// A create with a PID limit and `host` in its HostConfig.
    fn with_host(host: &str) -> String {
        let sep = if host.is_empty() { "" } else { "," };
        format!(r#"{{"Image":"x",{LABEL},"HostConfig":{{"PidsLimit":64{sep}{host}}}}}"#)
    }

    /// What bollard sends for firstmate's hardened worker.
    const WORKER: &str = r#"{"Image":"firstmate-test-agent:latest","Cmd":["claude","-p"],
        "Env":["A=1"],"Labels":{"firstmate.managed":"true","firstmate.session":"s1",
        "firstmate.instance":"default"},"WorkingDir":"/workspace","AttachStdin":true,
        "AttachStdout":true,"AttachStderr":true,"OpenStdin":true,"StdinOnce":false,"Tty":false,
        "HostConfig":{"CapDrop":["ALL"],"SecurityOpt":["no-new-privileges"],"Privileged":false,
        "Memory":268435456,"MemorySwap":268435456,"NanoCpus":1000000000,"PidsLimit":256,
        "Init":true,"ReadonlyRootfs":true,"Tmpfs":{"/tmp":"rw,exec,nosuid,nodev,size=268435456"},
        "Mounts":[{"Target":"/workspace","Source":"firstmate-s1-workspace","Type":"volume"},
        {"Target":"/home/agent","Source":"firstmate-s1-home","Type":"volume"}],
        "NetworkMode":"firstmate-agents"}}"#;

    /// What the docker CLI (28.x) sends for `docker create --label firstmate.managed=true
    /// --cap-drop ALL --pids-limit 64 -i IMAGE cat`.
    const CLI: &str = r#"{"Hostname":"","Domainname":"","User":"","AttachStdin":true,
        "AttachStdout":true,"AttachStderr":true,"Tty":false,"OpenStdin":true,"StdinOnce":true,
        "Env":null,"Cmd":["cat"],"Image":"img","Volumes":null,"WorkingDir":"","Entrypoint":null,
        "OnBuild":null,"Labels":{"firstmate.managed":"true"},"HostConfig":{"Binds":null,
        "ContainerIDFile":"","LogConfig":{"Type":"","Config":{}},"NetworkMode":"bridge",
        "PortBindings":{},"RestartPolicy":{"Name":"no","MaximumRetryCount":0},"AutoRemove":false,
        "VolumeDriver":"","VolumesFrom":null,"ConsoleSize":[0,0],"CapAdd":null,"CapDrop":["ALL"],
        "CgroupnsMode":"","Dns":[],"DnsOptions":[],"DnsSearch":[],"ExtraHosts":null,
        "GroupAdd":null,"IpcMode":"","Cgroup":"","Links":null,"OomScoreAdj":0,"PidMode":"",
        "Privileged":false,"PublishAllPorts":false,"ReadonlyRootfs":false,"SecurityOpt":null,
        "UTSMode":"","UsernsMode":"","ShmSize":0,"Isolation":"","CpuShares":0,"Memory":0,
        "NanoCpus":0,"CgroupParent":"","BlkioWeight":0,"BlkioWeightDevice":[],
        "BlkioDeviceReadBps":[],"BlkioDeviceWriteBps":[],"BlkioDeviceReadIOps":[],
        "BlkioDeviceWriteIOps":[],"CpuPeriod":0,"CpuQuota":0,"CpuRealtimePeriod":0,
        "CpuRealtimeRuntime":0,"CpusetCpus":"","CpusetMems":"","Devices":[],
        "DeviceCgroupRules":null,"DeviceRequests":null,"MemoryReservation":0,"MemorySwap":0,
        "MemorySwappiness":null,"OomKillDisable":null,"PidsLimit":64,"Ulimits":[],
        "CpuCount":0,"CpuPercent":0,"IOMaximumIOps":0,"IOMaximumBandwidth":0,
        "MaskedPaths":null,"ReadonlyPaths":null},"NetworkingConfig":{"EndpointsConfig":{}}}"#;

    #[test]
    fn what_firstmate_and_the_docker_cli_send_is_allowed() {
        let plan = create(WORKER).unwrap();
        assert_eq!(
            plan.volumes,
            ["firstmate-s1-workspace", "firstmate-s1-home"]
        );
        assert_eq!(plan.networks, ["firstmate-agents"]);
        assert_eq!(plan.instance.as_deref(), Some("default"));
        assert_eq!(create(CLI).unwrap(), CreatePlan::default());
        assert!(create(&with_host(r#""Mounts":[{"Type":"tmpfs","Target":"/tmp"}]"#)).is_ok());
        assert!(
            create(&with_host(
                r#""SecurityOpt":["no-new-privileges:true","apparmor=docker-default"]"#
            ))
            .is_ok()
        );
        assert!(create(&with_host(r#""IpcMode":"private","NetworkMode":"none""#)).is_ok());
    }

    #[test]
    fn the_label_is_required() {
        assert_eq!(refused(r#"{"Image":"x"}"#), rule::LABEL);
        assert_eq!(
            refused(r#"{"Image":"x","Labels":{"firstmate.managed":"false"}}"#),
            rule::LABEL
        );
        assert_eq!(
            refused(r#"{"Image":"x","Labels":{"Firstmate.Managed":"true"}}"#),
            rule::LABEL
        );
        assert_eq!(
            refused(
                r#"{"Labels":{"firstmate.managed":"true"},"labels":{"firstmate.managed":null}}"#
            ),
            rule::LABEL
        );
        assert_eq!(
            refused(r#"{"Labels":{"firstmate.managed":"true"},"Labels":null}"#),
            rule::LABEL
        );
        // Maps merge: a later Labels object keeps the label.
        assert!(
            create(r#"{"Labels":{"firstmate.managed":"true"},"LABELS":{"a":"b"},"PidsLimit":1}"#)
                .is_ok()
        );
        assert_eq!(refused("null"), rule::LABEL);
    }

    #[test]
    fn privilege_is_refused_however_it_is_spelled() {
        for host in [
            r#""Privileged":true"#,
            r#""privileged":true"#,
            r#""PRIVILEGED":true"#,
            r#""pRiViLeGeD":false,"Privileged":true"#,
            r#""Privileged":true,"Privileged":null"#,
            r#""\u0050rivileged":true"#,
        ] {
            assert_eq!(refused(&with_host(host)), rule::PRIVILEGED, "{host}");
        }
        // The top level is read as a host config too (Docker's embedded HostConfig).
        assert_eq!(
            refused(&format!(r#"{{{LABEL},"Privileged":true}}"#)),
            rule::PRIVILEGED
        );
        // Spellings of HostConfig itself, and a second HostConfig merging into the first.
        assert_eq!(
            refused(&format!(
                r#"{{{LABEL},"hostconfig":{{"Privileged":true}}}}"#
            )),
            rule::PRIVILEGED
        );
        assert_eq!(
            refused(&format!(
                "{{{LABEL},\"Ho\u{17F}tConfig\":{{\"Privileged\":true}}}}"
            )),
            rule::PRIVILEGED
        );
        assert_eq!(
            refused(&format!(
                r#"{{{LABEL},"HostConfig":{{"Privileged":true}},"HostConfig":{{"Memory":1}}}}"#
            )),
            rule::PRIVILEGED
        );
        // Where the last spelling says false, Docker reads false.
        assert!(create(&with_host(r#""Privileged":true,"privileged":false"#)).is_ok());
    }

    #[test]
    fn each_dangerous_host_setting_is_refused_by_its_rule() {
        let cases: &[(&str, &str)] = &[
            (r#""CapAdd":["SYS_ADMIN"]"#, rule::CAPABILITIES),
            (r#""CapAdd":"ALL""#, rule::CAPABILITIES),
            (
                r#""capadd":["NET_ADMIN"],"CapDrop":["ALL"]"#,
                rule::CAPABILITIES,
            ),
            (
                r#""Devices":[{"PathOnHost":"/dev/sda","PathInContainer":"/dev/sda"}]"#,
                rule::DEVICES,
            ),
            (r#""DeviceRequests":[{"Count":-1}]"#, rule::DEVICES),
            (r#""DeviceCgroupRules":["a *:* rwm"]"#, rule::DEVICES),
            (r#""NetworkMode":"host""#, rule::NAMESPACES),
            (r#""NetworkMode":"HOST""#, rule::NAMESPACES),
            (r#""NetworkMode":"Container:victim""#, rule::NAMESPACES),
            (r#""NetworkMode":"container:../victim""#, rule::NAMESPACES),
            ("\"Networ\u{212A}Mode\":\"host\"", rule::NAMESPACES),
            (r#""PidMode":"host""#, rule::NAMESPACES),
            (r#""PidMode":"container:victim""#, rule::NAMESPACES),
            (r#""IpcMode":"host""#, rule::NAMESPACES),
            (r#""IpcMode":"container:victim""#, rule::NAMESPACES),
            (r#""UTSMode":"host""#, rule::NAMESPACES),
            (r#""UsernsMode":"host""#, rule::NAMESPACES),
            (r#""CgroupnsMode":"host""#, rule::NAMESPACES),
            (r#""Cgroup":"container:victim""#, rule::NAMESPACES),
            (r#""Binds":["/:/host"]"#, rule::HOST_PATHS),
            (
                r#""Binds":["/var/run/docker.sock:/var/run/docker.sock"]"#,
                rule::HOST_PATHS,
            ),
            ("\"Bind\u{17F}\":[\"/:/h\"]", rule::HOST_PATHS),
            (
                r#""Mounts":[{"Type":"bind","Source":"/","Target":"/host"}]"#,
                rule::HOST_PATHS,
            ),
            (
                r#""Mounts":[{"Type":"BIND","Source":"/","Target":"/host"}]"#,
                rule::HOST_PATHS,
            ),
            (
                r#""Mounts":[{"Type":"npipe","Source":"x","Target":"/x"}]"#,
                rule::HOST_PATHS,
            ),
            (
                r#""Mounts":[{"Source":"/","Target":"/host"}]"#,
                rule::HOST_PATHS,
            ),
            (
                r#""Mounts":[{"Type":"volume","Target":"/h","VolumeOptions":{"DriverConfig":{"Name":"local","Options":{"type":"none","o":"bind","device":"/"}}}}]"#,
                rule::HOST_PATHS,
            ),
            (
                r#""Mounts":[{"Type":"volume","Target":"/h","VolumeOptions":{"DriverConfig":{"Name":"sshfs"}}}]"#,
                rule::DRIVERS,
            ),
            (
                r#""Mounts":[{"Type":"volume","Source":"/etc","Target":"/h"}]"#,
                rule::HOST_PATHS,
            ),
            (
                r#""Mounts":[{"Type":"tmpfs","Source":"/etc","Target":"/h"}]"#,
                rule::HOST_PATHS,
            ),
            (r#""VolumesFrom":["victim"]"#, rule::OTHER_CONTAINERS),
            (r#""Links":["victim:db"]"#, rule::OTHER_CONTAINERS),
            (r#""SecurityOpt":["seccomp=unconfined"]"#, rule::CONFINEMENT),
            (r#""SecurityOpt":["seccomp:unconfined"]"#, rule::CONFINEMENT),
            (
                r#""SecurityOpt":["seccomp={\"defaultAction\":\"SCMP_ACT_ALLOW\"}"]"#,
                rule::CONFINEMENT,
            ),
            (
                r#""SecurityOpt":["apparmor=unconfined"]"#,
                rule::CONFINEMENT,
            ),
            (r#""SecurityOpt":["label=disable"]"#, rule::CONFINEMENT),
            (r#""SecurityOpt":["label:type:spc_t"]"#, rule::CONFINEMENT),
            (r#""SecurityOpt":["disable"]"#, rule::CONFINEMENT),
            (
                r#""SecurityOpt":["systempaths=unconfined"]"#,
                rule::CONFINEMENT,
            ),
            (
                r#""SecurityOpt":["no-new-privileges","seccomp=unconfined"]"#,
                rule::CONFINEMENT,
            ),
            (
                r#""SecurityOpt":["seccomp=unconfined"],"SecurityOpt":[null]"#,
                rule::CONFINEMENT,
            ),
            (r#""MaskedPaths":[]"#, rule::CONFINEMENT),
            (r#""ReadonlyPaths":[]"#, rule::CONFINEMENT),
            (r#""Sysctls":{"kernel.core_pattern":"|/x"}"#, rule::KERNEL),
            (r#""Sysctls":{"net.ipv4.ip_forward":"1"}"#, rule::KERNEL),
            (r#""CgroupParent":"/""#, rule::CGROUP),
            (r#""Runtime":"nvidia""#, rule::RUNTIME),
            (
                r#""Annotations":{"run.oci.keep_original_groups":"1"}"#,
                rule::RUNTIME,
            ),
            (r#""OomKillDisable":true"#, rule::OOM),
            (r#""OomScoreAdj":-1000"#, rule::OOM),
            (r#""VolumeDriver":"sshfs""#, rule::DRIVERS),
            (
                r#""LogConfig":{"Type":"syslog","Config":{"syslog-address":"tcp://10.0.0.1:514"}}"#,
                rule::DRIVERS,
            ),
            (
                r#""PortBindings":{"22/tcp":[{"HostPort":"22"}]}"#,
                rule::PORTS,
            ),
            (r#""PublishAllPorts":true"#, rule::PORTS),
            (r#""Capabilities":["CAP_SYS_ADMIN"]"#, rule::FIELDS),
            (r#""Privileged":"true""#, rule::BODY),
            (r#""Binds":"/:/h""#, rule::BODY),
        ];
        for (host, want) in cases {
            assert_eq!(refused(&with_host(host)), *want, "HostConfig {{{host}}}");
            // The same at the top level, where Docker reads it as well.
            let top = format!(r#"{{"Image":"x",{LABEL},{host}}}"#);
            assert_eq!(refused(&top), *want, "top level {host}");
        }
    }

    #[test]
    fn endpoint_driver_options_are_refused() {
        let ok = format!(
            r#"{{"Image":"x",{LABEL},"PidsLimit":1,"NetworkingConfig":{{"EndpointsConfig":{{"agents":{{"Aliases":["a"],"DriverOpts":null}}}}}}}}"#
        );
        assert!(create(&ok).is_ok());
        let bad = format!(
            r#"{{"Image":"x",{LABEL},"NetworkingConfig":{{"EndpointsConfig":{{"agents":{{"DriverOpts":{{"com.docker.network.endpoint.sysctls":"net.ipv4.conf.IFNAME.forwarding=1"}}}}}}}}}}"#
        );
        assert_eq!(refused(&bad), rule::KERNEL);
    }

    #[test]
    fn a_repeated_mounts_array_keeps_the_bind_docker_keeps() {
        let host =
            r#""Mounts":[{"Type":"bind","Source":"/","Target":"/h"}],"Mounts":[{"Target":"/h"}]"#;
        assert_eq!(refused(&with_host(host)), rule::HOST_PATHS);
        let host = r#""Mounts":[{"Type":"tmpfs","Target":"/t"},{"Type":"bind","Source":"/","Target":"/h"}],"Mounts":[{"Type":"tmpfs","Target":"/t"}],"Mounts":[{},{}]"#;
        assert_eq!(refused(&with_host(host)), rule::HOST_PATHS);
    }

    #[test]
    fn unreadable_bodies_are_refused() {
        for body in [
            "",
            "{",
            "{\"Image\":\"x\"} {}",
            "[]",
            "\"x\"",
            "{\"Labels\":{\"firstmate.managed\":true}}",
        ] {
            let d = create(body).unwrap_err();
            assert_eq!(d.rule, rule::BODY, "{body:?}: {}", d.detail);
        }
        let d = container_create(b"{\"Image\":\"\xff\"}").unwrap_err();
        assert_eq!(d.rule, rule::BODY);
        let d = create(r#"{"Image":"x","Surprise":1}"#).unwrap_err();
        assert_eq!(d.rule, rule::FIELDS);
        assert!(d.detail.contains("Surprise"), "{}", d.detail);
    }

    #[test]
    fn exec_create_is_never_privileged() {
        assert!(exec_create(br#"{"Cmd":["id"],"AttachStdout":true,"User":"agent"}"#).is_ok());
        for body in [
            r#"{"Cmd":["sh"],"Privileged":true}"#,
            r#"{"Cmd":["sh"],"privileged":true}"#,
            r#"{"Cmd":["sh"],"Privileged":true,"Privileged":null}"#,
            r#"{"Cmd":["sh"],"PRIVILEGED":false,"pRIVILEGED":true}"#,
        ] {
            assert_eq!(
                exec_create(body.as_bytes()).unwrap_err().rule,
                rule::PRIVILEGED_EXEC,
                "{body}"
            );
        }
        assert_eq!(
            exec_create(br#"{"Cmd":["sh"],"Privileged":1}"#)
                .unwrap_err()
                .rule,
            rule::BODY
        );
    }

    #[test]
    fn volumes_and_networks_need_the_label_and_default_drivers() {
        let l = r#""Labels":{"firstmate.managed":"true"}"#;
        assert!(volume_create(format!(r#"{{"Name":"v",{l}}}"#).as_bytes()).is_ok());
        assert_eq!(
            volume_create(br#"{"Name":"v"}"#).unwrap_err().rule,
            rule::LABEL
        );
        assert_eq!(
            volume_create(
                format!(
                    r#"{{"Name":"v",{l},"DriverOpts":{{"type":"none","o":"bind","device":"/"}}}}"#
                )
                .as_bytes()
            )
            .unwrap_err()
            .rule,
            rule::HOST_PATHS
        );
        assert_eq!(
            volume_create(format!(r#"{{"Name":"v",{l},"driver":"sshfs"}}"#).as_bytes())
                .unwrap_err()
                .rule,
            rule::DRIVERS
        );
        assert!(
            network_create(
                format!(r#"{{"Name":"n",{l},"Driver":"bridge","Internal":true}}"#).as_bytes()
            )
            .is_ok()
        );
        assert_eq!(
            network_create(br#"{"Name":"n"}"#).unwrap_err().rule,
            rule::LABEL
        );
        for bad in [
            r#""Driver":"macvlan""#,
            r#""Driver":"host""#,
            r#""Options":{"com.docker.network.bridge.name":"eth0"}"#,
            r#""Ingress":true"#,
            r#""ConfigFrom":{"Network":"x"}"#,
            r#""IPAM":{"Driver":"remote"}"#,
        ] {
            let body = format!(r#"{{"Name":"n",{l},{bad}}}"#);
            assert_eq!(
                network_create(body.as_bytes()).unwrap_err().rule,
                rule::DRIVERS,
                "{bad}"
            );
        }
    }

    #[test]
    fn a_session_network_is_internal_without_the_hosts_address_and_nothing_else() {
        let l = r#""Labels":{"firstmate.managed":"true"}"#;
        let ours = format!(
            r#"{{"Name":"n",{l},"Driver":"bridge","Internal":true,"Options":{{"com.docker.network.bridge.inhibit_ipv4":"true"}}}}"#
        );
        assert!(network_create(ours.as_bytes()).is_ok());
        for (bad, want) in [
            (r#""Driver":"bridge""#, rule::NETWORKS),
            (r#""Internal":false"#, rule::NETWORKS),
            (r#""internal":true,"Internal":false"#, rule::NETWORKS),
            (r#""Internal":true,"EnableIPv6":true"#, rule::NETWORKS),
            (
                r#""Internal":true,"IPAM":{"Config":[{"Subnet":"192.168.1.0/24"}]}"#,
                rule::DRIVERS,
            ),
            (
                r#""Internal":true,"Options":{"com.docker.network.bridge.inhibit_ipv4":"false"}"#,
                rule::DRIVERS,
            ),
            (
                r#""Internal":true,"Options":{"com.docker.network.bridge.inhibit_ipv4":"1"}"#,
                rule::DRIVERS,
            ),
            (
                r#""Internal":true,"Options":{"com.docker.network.bridge.enable_icc":"true"}"#,
                rule::DRIVERS,
            ),
            (r#""Internal":true,"Attachable":true"#, rule::DRIVERS),
            (r#""Internal":true,"Scope":"swarm""#, rule::DRIVERS),
        ] {
            let body = format!(r#"{{"Name":"n",{l},{bad}}}"#);
            assert_eq!(
                network_create(body.as_bytes()).unwrap_err().rule,
                want,
                "{bad}"
            );
        }
    }

    #[test]
    fn a_connect_names_a_container_and_at_most_aliases() {
        // What bollard sends, and what the Docker CLI sends (every field, mostly empty).
        let c = network_connect(
            br#"{"Container":"relay","EndpointConfig":{"Aliases":["firstmate"]}}"#,
            false,
        )
        .unwrap();
        assert_eq!(c.container, "relay");
        assert_eq!(c.aliases, ["firstmate"]);
        let cli = r#"{"Container":"relay","EndpointConfig":{"IPAMConfig":{},"Links":null,"Aliases":["a"],"NetworkID":"","EndpointID":"","Gateway":"","IPAddress":"","IPPrefixLen":0,"IPv6Gateway":"","GlobalIPv6Address":"","GlobalIPv6PrefixLen":0,"MacAddress":"","DriverOpts":{}}}"#;
        assert!(network_connect(cli.as_bytes(), false).is_ok());
        // The container Go's decoder would take: the last of the case-folded keys.
        let folded = network_connect(br#"{"Container":"relay","container":"victim"}"#, false);
        assert_eq!(folded.unwrap().container, "victim");
        for bad in [
            r#"{}"#,
            r#"{"Container":""}"#,
            r#"{"Container":"r","EndpointConfig":{"IPAMConfig":{"IPv4Address":"10.0.0.9"}}}"#,
            r#"{"Container":"r","EndpointConfig":{"Links":["db:db"]}}"#,
            r#"{"Container":"r","EndpointConfig":{"MacAddress":"02:42:ac:11:00:02"}}"#,
            r#"{"Container":"r","EndpointConfig":{"DriverOpts":{"com.docker.network.endpoint.sysctls":"x"}}}"#,
            r#"{"Container":"r","EndpointConfig":{"NetworkID":"other"}}"#,
            r#"{"Container":"r","Force":true}"#,
            r#"{"Container":"r","Extra":1}"#,
        ] {
            assert!(network_connect(bad.as_bytes(), false).is_err(), "{bad}");
        }
        assert!(network_connect(br#"{"Container":"r","Force":true}"#, true).is_ok());
        assert!(network_connect(br#"{"Container":"r","EndpointConfig":{}}"#, true).is_err());
        // What goes upstream: the checked container's full ID, nothing else it sent.
        let body = c.body("0123abcd", false);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"Container":"0123abcd","EndpointConfig":{"Aliases":["firstmate"]}})
        );
    }

    #[test]
    fn field_names_do_not_collide_under_folding() {
        for schema in [
            &CREATE,
            &HOST,
            &EXEC,
            &VOLUME_CREATE,
            &NETWORK_CREATE,
            &MOUNT,
            &ENDPOINT,
        ] {
            let mut seen = std::collections::HashSet::new();
            for group in schema.groups {
                for (name, _) in group.iter() {
                    assert!(seen.insert(json::fold(name)), "{name} twice");
                }
            }
        }
    }

    #[test]
    fn the_label_is_the_runtimes() {
        assert_eq!(LABEL_MANAGED, crate::runtime::LABEL_MANAGED);
        assert_eq!(LABEL_INSTANCE, crate::runtime::LABEL_INSTANCE);
    }

    fn endpoints(eps: &str) -> String {
        format!(
            r#"{{"Image":"x",{LABEL},"HostConfig":{{"PidsLimit":64}},"NetworkingConfig":{{"EndpointsConfig":{{{eps}}}}}}}"#
        )
    }

    #[test]
    fn every_network_a_create_names_is_left_to_the_daemon_but_none_and_the_default() {
        for mode in ["", "default", "bridge", "none"] {
            let plan = create(&with_host(&format!(r#""NetworkMode":"{mode}""#))).unwrap();
            assert_eq!(plan, CreatePlan::default(), "{mode}");
        }
        // Another project's internal network, by name or by ID prefix.
        for mode in ["other-project_internal", "3f2a9c"] {
            let plan = create(&with_host(&format!(r#""NetworkMode":"{mode}""#))).unwrap();
            assert_eq!(plan.networks, [mode]);
        }
        let plan = create(&endpoints(r#""victim-net":{"Aliases":["a"]}"#)).unwrap();
        assert_eq!(plan.networks, ["victim-net"]);
        // At the top level, in HostConfig and as an endpoint: each is checked, once.
        let body = format!(
            r#"{{"Image":"x",{LABEL},"NetworkMode":"a","HostConfig":{{"PidsLimit":64,"NetworkMode":"b"}},"NetworkingConfig":{{"EndpointsConfig":{{"b":{{}},"c":null,"bridge":{{}}}}}}}}"#
        );
        let mut nets = create(&body).unwrap().networks;
        nets.sort();
        assert_eq!(nets, ["a", "b", "c"]);
        // Names Docker would resolve elsewhere, or that name no network.
        for (eps, want) in [
            (r#""mine":{"NetworkID":"victim"}"#, rule::NETWORKS),
            (r#""":{}"#, rule::NETWORKS),
            (r#""container:victim":{}"#, rule::NETWORKS),
            (r#""a b":{}"#, rule::NETWORKS),
            (r#""../x":{}"#, rule::NETWORKS),
            (r#""host":{}"#, rule::NAMESPACES),
            (r#""HOST":{}"#, rule::NAMESPACES),
        ] {
            assert_eq!(refused(&endpoints(eps)), want, "{eps}");
        }
        assert_eq!(
            refused(&with_host(r#""NetworkMode":"x/../../build""#)),
            rule::NETWORKS
        );
    }

    #[test]
    fn a_container_network_mode_is_left_to_the_daemon() {
        let plan = create(&with_host(r#""NetworkMode":"container:victim""#)).unwrap();
        assert_eq!(plan.containers, ["victim"]);
        assert!(plan.networks.is_empty());
        let body = r#"{"Image":"x","Labels":{"firstmate.managed":"true","firstmate.instance":"a"},"HostConfig":{"PidsLimit":64,"NetworkMode":"container:c1"}}"#;
        let plan = create(body).unwrap();
        assert_eq!(plan.instance.as_deref(), Some("a"));
        let ours = serde_json::json!({"Config":{"Labels":{"firstmate.managed":"true","firstmate.instance":"a"}}});
        assert!(container_shareable("c1", &ours, Some("a")).is_ok());
        for (answer, instance) in [
            (&ours, Some("b")),
            (&ours, None),
            (
                &serde_json::json!({"Config":{"Labels":{"firstmate.instance":"a"}}}),
                Some("a"),
            ),
            (&serde_json::json!({"Config":{"Labels":null}}), Some("a")),
            (&serde_json::json!({}), None),
        ] {
            let d = container_shareable("c1", answer, instance).unwrap_err();
            assert_eq!(d.rule, rule::NAMESPACES, "{answer} {instance:?}");
        }
    }

    #[test]
    fn a_network_is_joinable_when_the_instance_manages_it_or_it_is_allowed() {
        let ours = serde_json::json!({"Name":"fm-net","Id":"abc","Labels":{"firstmate.managed":"true","firstmate.instance":"a"}});
        let none: &[String] = &[];
        assert!(network_joinable("fm-net", &ours, Some("a"), none).is_ok());
        assert_eq!(
            network_joinable("fm-net", &ours, Some("b"), none)
                .unwrap_err()
                .rule,
            rule::NETWORKS
        );
        assert_eq!(
            network_joinable("fm-net", &ours, None, none)
                .unwrap_err()
                .rule,
            rule::NETWORKS
        );
        // Another project's internal network: labels of its own, or firstmate's label
        // without the managed one.
        let theirs = serde_json::json!({"Name":"other_internal","Id":"def","Labels":{"firstmate.instance":"a","com.docker.compose.network":"internal"}});
        assert_eq!(
            network_joinable("other_internal", &theirs, Some("a"), none)
                .unwrap_err()
                .rule,
            rule::NETWORKS
        );
        let unlabelled = serde_json::json!({"Name":"agents","Id":"0123","Labels":{}});
        assert!(network_joinable("agents", &unlabelled, Some("a"), &["agents".into()]).is_ok());
        // The allow-list names the network Docker resolved, not the term asked.
        assert!(network_joinable("0123", &unlabelled, Some("a"), &["agents".into()]).is_ok());
        assert_eq!(
            network_joinable("agents", &theirs, Some("a"), &["agents".into()])
                .unwrap_err()
                .rule,
            rule::NETWORKS
        );
        assert!(
            network_joinable(
                "x",
                &serde_json::json!({"Labels":null}),
                Some("a"),
                &["".into()]
            )
            .is_err()
        );
    }

    #[test]
    fn a_volume_create_may_not_name_an_unmanaged_volume_nor_ask_for_a_driver() {
        let l = r#""Labels":{"firstmate.managed":"true"}"#;
        assert_eq!(
            volume_create(format!(r#"{{"Name":"v",{l}}}"#).as_bytes()).unwrap(),
            Some("v".to_string())
        );
        assert_eq!(volume_create(format!("{{{l}}}").as_bytes()).unwrap(), None);
        assert_eq!(
            volume_create(format!(r#"{{"Name":"../v",{l}}}"#).as_bytes())
                .unwrap_err()
                .rule,
            rule::BODY
        );
        // Docker answers a create of an existing name with that volume, options included.
        let nfs = serde_json::json!({"Name":"backups","Driver":"local","Labels":null,
            "Options":{"type":"nfs","o":"addr=10.0.0.5,username=u,password=p","device":":/b"}});
        let d = volume_recreatable("backups", &nfs).unwrap_err();
        assert_eq!(d.rule, rule::MANAGED);
        let labelled_otherwise =
            serde_json::json!({"Name":"v","Labels":{"firstmate.managed":"yes"}});
        assert!(volume_recreatable("v", &labelled_otherwise).is_err());
        let ours = serde_json::json!({"Name":"v","Labels":{"firstmate.managed":"true"}});
        assert!(volume_recreatable("v", &ours).is_ok());
        for (bad, want) in [
            (
                r#""DriverOpts":{"type":"nfs","o":"addr=10.0.0.5","device":":/x"}"#,
                rule::HOST_PATHS,
            ),
            (
                r#""DriverOpts":{"type":"cifs","o":"username=u,password=p","device":"//h/s"}"#,
                rule::HOST_PATHS,
            ),
            (
                r#""DriverOpts":{"o":"bind","type":"none","device":"/etc"}"#,
                rule::HOST_PATHS,
            ),
            (r#""DriverOpts":{"o":null}"#, rule::HOST_PATHS),
            (
                r#""Driver":"local","driveropts":{"type":"tmpfs"}"#,
                rule::HOST_PATHS,
            ),
            (r#""Driver":"Local""#, rule::DRIVERS),
            (r#""Driver":"nfs""#, rule::DRIVERS),
            (r#""ClusterVolumeSpec":{}"#, rule::DRIVERS),
        ] {
            let body = format!(r#"{{"Name":"v",{l},{bad}}}"#);
            assert_eq!(
                volume_create(body.as_bytes()).unwrap_err().rule,
                want,
                "{bad}"
            );
        }
        assert!(
            volume_create(
                format!(r#"{{"Name":"v",{l},"Driver":"local","DriverOpts":{{}}}}"#).as_bytes()
            )
            .is_ok()
        );
    }

    #[test]
    fn nothing_is_mounted_over_dev_proc_or_sys() {
        let bad_targets = [
            "/dev",
            "/dev/",
            "/dev/shm",
            "//dev",
            "/./proc",
            "/x/../sys",
            "/tmp/../../dev/pts",
            "/sys/fs/cgroup",
            "/proc/sys/kernel",
            "/proc/self/attr",
            "/",
            "dev",
        ];
        for t in bad_targets {
            for host in [
                format!(r#""Mounts":[{{"Type":"volume","Source":"v","Target":"{t}"}}]"#),
                format!(r#""Mounts":[{{"Type":"volume","Target":"{t}"}}]"#),
                format!(r#""Mounts":[{{"Type":"tmpfs","Target":"{t}"}}]"#),
                format!(r#""Tmpfs":{{"{t}":"rw"}}"#),
                format!(r#""Tmpfs":{{"{t}:rw":""}}"#),
            ] {
                assert_eq!(refused(&with_host(&host)), rule::SYSTEM_PATHS, "{host}");
            }
            let anon = format!(
                r#"{{"Image":"x",{LABEL},"Volumes":{{"{t}":{{}}}},"HostConfig":{{"PidsLimit":64}}}}"#
            );
            assert_eq!(refused(&anon), rule::SYSTEM_PATHS, "{anon}");
            let top = format!(r#"{{"Image":"x",{LABEL},"PidsLimit":1,"Tmpfs":{{"{t}":""}}}}"#);
            assert_eq!(refused(&top), rule::SYSTEM_PATHS, "{top}");
        }
        for t in [
            "/devices",
            "/workspace",
            "/tmp",
            "/home/agent",
            "/procfs",
            "/x/dev",
        ] {
            let host = format!(
                r#""Mounts":[{{"Type":"tmpfs","Target":"{t}"}}],"Tmpfs":{{"{t}2":"size=1m"}}"#
            );
            assert!(create(&with_host(&host)).is_ok(), "{t}");
        }
    }

    #[test]
    fn a_pid_limit_is_always_set() {
        assert!(create(&with_host("")).is_ok());
        for host in [
            r#""PidsLimit":-1"#,
            r#""PidsLimit":0"#,
            r#""PidsLimit":null"#,
            r#""pidslimit":-1"#,
            r#""PidsLimit":64,"PidsLimit":0"#,
        ] {
            assert_eq!(refused(&with_host(host)), rule::PIDS, "{host}");
        }
        // Missing: no HostConfig limit, or one only at the top level, which Docker does not
        // read when a HostConfig object is there.
        assert_eq!(
            refused(&format!(
                r#"{{"Image":"x",{LABEL},"HostConfig":{{"Memory":1}}}}"#
            )),
            rule::PIDS
        );
        assert_eq!(
            refused(&format!(
                r#"{{"Image":"x",{LABEL},"PidsLimit":64,"HostConfig":{{}}}}"#
            )),
            rule::PIDS
        );
        assert_eq!(refused(&format!(r#"{{"Image":"x",{LABEL}}}"#)), rule::PIDS);
        assert_eq!(
            refused(&format!(
                r#"{{"Image":"x",{LABEL},"PidsLimit":-1,"HostConfig":{{"PidsLimit":64}}}}"#
            )),
            rule::PIDS
        );
        // Without a HostConfig object, Docker reads the top level.
        assert!(create(&format!(r#"{{"Image":"x",{LABEL},"PidsLimit":64}}"#)).is_ok());
        assert!(
            create(&format!(
                r#"{{"Image":"x",{LABEL},"PidsLimit":64,"HostConfig":null}}"#
            ))
            .is_ok()
        );
        assert_eq!(refused(&with_host(r#""PidsLimit":"64""#)), rule::BODY);
    }

    #[test]
    fn restart_policies_host_gateway_and_the_root_group_are_refused() {
        for ok in [
            r#""RestartPolicy":{"Name":"no","MaximumRetryCount":0}"#,
            r#""RestartPolicy":{"Name":""}"#,
            r#""RestartPolicy":{}"#,
            r#""ExtraHosts":["gateway:10.0.0.1"]"#,
            r#""GroupAdd":["1000","users","10"]"#,
        ] {
            assert!(create(&with_host(ok)).is_ok(), "{ok}");
        }
        for (host, want) in [
            (r#""RestartPolicy":{"Name":"always"}"#, rule::RESTART),
            (
                r#""RestartPolicy":{"Name":"unless-stopped"}"#,
                rule::RESTART,
            ),
            (
                r#""RestartPolicy":{"Name":"on-failure","MaximumRetryCount":5}"#,
                rule::RESTART,
            ),
            (r#""restartpolicy":{"name":"always"}"#, rule::RESTART),
            (
                r#""RestartPolicy":{"Name":"always"},"RestartPolicy":{"MaximumRetryCount":1}"#,
                rule::RESTART,
            ),
            (
                r#""ExtraHosts":["host.docker.internal:host-gateway"]"#,
                rule::HOST_GATEWAY,
            ),
            (
                r#""ExtraHosts":["a:1.2.3.4","h:HOST-GATEWAY"]"#,
                rule::HOST_GATEWAY,
            ),
            (r#""GroupAdd":["root"]"#, rule::ROOT_GROUP),
            (r#""GroupAdd":["1000","0"]"#, rule::ROOT_GROUP),
            (r#""GroupAdd":["000"]"#, rule::ROOT_GROUP),
        ] {
            assert_eq!(refused(&with_host(host)), want, "{host}");
            let top = format!(r#"{{"Image":"x",{LABEL},"PidsLimit":64,{host}}}"#);
            assert_eq!(refused(&top), want, "top level {host}");
        }
    }

    #[test]
    fn an_exec_never_asks_for_root() {
        for ok in [
            r#"{"Cmd":["id"]}"#,
            r#"{"Cmd":["id"],"User":""}"#,
            r#"{"Cmd":["id"],"User":"agent"}"#,
            r#"{"Cmd":["id"],"User":"1000:1000"}"#,
            r#"{"Cmd":["id"],"User":"10"}"#,
        ] {
            assert!(exec_create(ok.as_bytes()).is_ok(), "{ok}");
        }
        for bad in [
            r#"{"Cmd":["id"],"User":"root"}"#,
            r#"{"Cmd":["id"],"User":"0"}"#,
            r#"{"Cmd":["id"],"User":"0:0"}"#,
            r#"{"Cmd":["id"],"User":"00"}"#,
            r#"{"Cmd":["id"],"User":"agent:root"}"#,
            r#"{"Cmd":["id"],"User":"1000:0"}"#,
            r#"{"Cmd":["id"],"user":"root"}"#,
            r#"{"Cmd":["id"],"User":"agent","USER":"0"}"#,
        ] {
            assert_eq!(
                exec_create(bad.as_bytes()).unwrap_err().rule,
                rule::EXEC_ROOT,
                "{bad}"
            );
        }
    }

    #[test]
    fn files_move_through_a_plain_exec_and_no_new_rule() {
        // What the engine sends for `put` and `get` (SPEC section 10): an exec of the
        // container's own user with stdin and stdout attached. Nothing names a host path
        // or asks for privilege, so the exec rules above are all it needs.
        for cmd in [
            crate::files::put_command("report.csv", 25 << 20),
            crate::files::get_command("../../etc/passwd"),
        ] {
            let body = serde_json::json!({
                "AttachStdin": true, "AttachStdout": true, "AttachStderr": true,
                "Tty": false, "Cmd": cmd, "WorkingDir": "/workspace",
            });
            assert!(exec_create(body.to_string().as_bytes()).is_ok(), "{body}");
            let as_root = serde_json::json!({"Cmd": cmd, "AttachStdin": true, "User": "root"});
            assert_eq!(
                exec_create(as_root.to_string().as_bytes())
                    .unwrap_err()
                    .rule,
                rule::EXEC_ROOT
            );
        }
    }
}
