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
//! mounts, volume driver options), no other container's volumes, no unconfined security
//! profile, no sysctl, no cgroup parent, no other runtime, no published port, and only
//! fields it knows.

use super::Denial;
use super::json::{self, Go, JsonError, Schema, Ty};

/// The label every object the proxy lets firstmate touch carries.
pub const LABEL_MANAGED: &str = "firstmate.managed";

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
    ("Volumes", A),
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
        ("Target", A),
        ("ReadOnly", A),
        ("Consistency", A),
        ("BindOptions", Ty::Ptr(&A)),
        ("VolumeOptions", Ty::Ptr(&Ty::Struct(&VOLUME_OPTIONS))),
        ("TmpfsOptions", A),
        ("ImageOptions", Ty::Ptr(&A)),
        ("ClusterOptions", Ty::Ptr(&A)),
    ]],
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
    ("RestartPolicy", A),
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
    ("ExtraHosts", A),
    ("GroupAdd", A),
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
    ("Tmpfs", A),
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
    ("PidsLimit", A),
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
        ("Aliases", A),
        ("MacAddress", A),
        ("DriverOpts", Ty::Map(&A)),
        ("GwPriority", A),
        ("NetworkID", A),
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
        ("User", A),
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
        ("Name", A),
        ("Driver", Ty::Str),
        ("DriverOpts", Ty::Map(&A)),
        ("Labels", Ty::Map(&Ty::Str)),
        ("ClusterVolumeSpec", Ty::Ptr(&A)),
    ]],
};

static IPAM: Schema = Schema {
    groups: &[&[("Driver", Ty::Str), ("Config", A), ("Options", Ty::Map(&A))]],
};

pub static NETWORK_CREATE: Schema = Schema {
    groups: &[&[
        ("Name", A),
        ("CheckDuplicate", A),
        ("Driver", Ty::Str),
        ("Scope", A),
        ("EnableIPv6", A),
        ("EnableIPv4", A),
        ("IPAM", Ty::Ptr(&Ty::Struct(&IPAM))),
        ("Internal", A),
        ("Attachable", A),
        ("Ingress", Ty::Bool),
        ("ConfigOnly", A),
        ("ConfigFrom", Ty::Ptr(&A)),
        ("Options", Ty::Map(&A)),
        ("Labels", Ty::Map(&Ty::Str)),
    ]],
};

// --- decisions -------------------------------------------------------------------------

/// What a create that passed the policy still needs checked upstream.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct CreatePlan {
    /// Named volumes it mounts: each must exist and carry the managed label.
    pub volumes: Vec<String>,
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
    if let Go::Map(endpoints) = v.get("NetworkingConfig").get("EndpointsConfig") {
        for (net, e) in endpoints {
            if !e.get("DriverOpts").is_empty() {
                deny(
                    rule::KERNEL,
                    format!(
                        "NetworkingConfig.EndpointsConfig[{net:?}].DriverOpts is not empty (driver options set interface sysctls)"
                    ),
                )?;
            }
        }
    }
    let mut plan = CreatePlan::default();
    host_config(&v, "", &mut plan)?;
    host_config(v.get("HostConfig"), "HostConfig.", &mut plan)?;
    Ok(plan)
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

    let network = h.get("NetworkMode").str();
    let lower = network.to_ascii_lowercase();
    if lower == "host" || lower.starts_with("container:") {
        deny(rule::NAMESPACES, format!("{p}NetworkMode is {network:?}"))?;
    }
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
    Ok(())
}

fn mount(m: &Go, p: &str, plan: &mut CreatePlan) -> Result<(), Denial> {
    let typ = m.get("Type").str();
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
    Ok(())
}

pub fn volume_create(body: &[u8]) -> Result<(), Denial> {
    let v = read(body, &VOLUME_CREATE, "volume create")?;
    require_label(v.get("Labels"), "Labels")?;
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
    Ok(())
}

pub fn network_create(body: &[u8]) -> Result<(), Denial> {
    let v = read(body, &NETWORK_CREATE, "network create")?;
    require_label(v.get("Labels"), "Labels")?;
    let driver = v.get("Driver").str();
    if !matches!(driver, "" | "bridge") {
        deny(rule::DRIVERS, format!("Driver is {driver:?}"))?;
    }
    if !v.get("Options").is_empty() {
        deny(
            rule::DRIVERS,
            "Options is not empty (driver options can take over host interfaces)".into(),
        )?;
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
    Ok(())
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

    fn with_host(host: &str) -> String {
        format!(r#"{{"Image":"x",{LABEL},"HostConfig":{{{host}}}}}"#)
    }

    /// What bollard sends for firstmate's hardened worker.
    const WORKER: &str = r#"{"Image":"firstmate-test-agent:latest","Cmd":["claude","-p"],
        "Env":["A=1"],"Labels":{"firstmate.managed":"true","firstmate.session":"s1",
        "firstmate.instance":"default"},"WorkingDir":"/workspace","AttachStdin":true,
        "AttachStdout":true,"AttachStderr":true,"OpenStdin":true,"StdinOnce":false,"Tty":false,
        "HostConfig":{"CapDrop":["ALL"],"SecurityOpt":["no-new-privileges"],"Privileged":false,
        "Memory":268435456,"MemorySwap":268435456,"NanoCpus":1000000000,"PidsLimit":256,
        "Mounts":[{"Target":"/workspace","Source":"firstmate-s1-workspace","Type":"volume"},
        {"Target":"/home/agent","Source":"firstmate-s1-home","Type":"volume"}],
        "NetworkMode":"firstmate-agents"}}"#;

    /// What the docker CLI (28.x) sends for `docker create --label firstmate.managed=true
    /// --cap-drop ALL -i IMAGE cat`.
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
        "MemorySwappiness":null,"OomKillDisable":null,"PidsLimit":null,"Ulimits":[],
        "CpuCount":0,"CpuPercent":0,"IOMaximumIOps":0,"IOMaximumBandwidth":0,
        "MaskedPaths":null,"ReadonlyPaths":null},"NetworkingConfig":{"EndpointsConfig":{}}}"#;

    #[test]
    fn what_firstmate_and_the_docker_cli_send_is_allowed() {
        let plan = create(WORKER).unwrap();
        assert_eq!(
            plan.volumes,
            ["firstmate-s1-workspace", "firstmate-s1-home"]
        );
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
        assert!(create(r#"{"Labels":{"firstmate.managed":"true"},"LABELS":{"a":"b"}}"#).is_ok());
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
            (r#""NetworkMode":"container:victim""#, rule::NAMESPACES),
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
            r#"{{"Image":"x",{LABEL},"NetworkingConfig":{{"EndpointsConfig":{{"agents":{{"Aliases":["a"],"DriverOpts":null}}}}}}}}"#
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
        assert!(exec_create(br#"{"Cmd":["id"],"AttachStdout":true,"User":"root"}"#).is_ok());
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
    }
}
