//! `firstmate socket-proxy` against the real daemon: a corpus of attacks, each refused
//! (403 naming its rule, a warn line in the proxy's log) and leaving the daemon as it was;
//! the managed life cycle through the `docker` CLI, streams included; firstmate's own
//! engine through the proxy.
//!
//! Everything a test makes carries `firstmate.instance=<the Env's instance>`, so the
//! Env's cleanup removes it whatever happens.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::{
    Env, ProxyProcess, TEST_IMAGE, lines_of, run_with_timeout, session_ids, stdout, text,
};

/// An HTTP answer, as read off the wire.
struct Reply {
    status: u16,
    body: String,
}

/// Sends one request, byte for byte as given (no client normalises the path), and reads
/// the answer until the server closes.
fn raw<S: Read + Write>(mut s: S, method: &str, target: &str, ctype: &str, body: &[u8]) -> Reply {
    let mut req = format!("{method} {target} HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n");
    if !body.is_empty() || method == "POST" || method == "PUT" {
        req.push_str(&format!(
            "Content-Type: {ctype}\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    let wrote = s.write_all(&bytes).is_ok();
    // Even when the server stopped reading, its answer may be there to read.
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    if !wrote && out.is_empty() {
        return Reply {
            status: 0,
            body: "write failed (connection closed early)".into(),
        };
    }
    let resp = String::from_utf8_lossy(&out).into_owned();
    let status = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    Reply { status, body }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

fn via_typed(p: &ProxyProcess, method: &str, target: &str, ctype: &str, body: &[u8]) -> Reply {
    let s = TcpStream::connect(&p.addr).expect("connect to the proxy");
    s.set_read_timeout(Some(Duration::from_secs(30))).ok();
    raw(s, method, target, ctype, body)
}

/// The same, straight to the Docker socket (to set up victims and check state).
fn direct(method: &str, target: &str, body: &[u8]) -> Reply {
    let s = UnixStream::connect("/var/run/docker.sock").expect("connect to the Docker socket");
    s.set_read_timeout(Some(Duration::from_secs(30))).ok();
    raw(s, method, target, "application/json", body)
}

fn docker(host: Option<&str>, args: &[&str]) -> Output {
    docker_in(host, args, "")
}

fn docker_in(host: Option<&str>, args: &[&str], input: &str) -> Output {
    let mut c = Command::new("docker");
    match host {
        Some(h) => c.env("DOCKER_HOST", h),
        None => c.env_remove("DOCKER_HOST"),
    };
    c.args(args);
    run_with_timeout(c, input, Duration::from_secs(120))
}

fn ok(o: Output) -> String {
    assert!(o.status.success(), "docker failed: {}", text(&o));
    stdout(&o).trim().to_string()
}

/// How a request of the corpus must be answered.
#[derive(Clone, Copy, PartialEq)]
enum Want {
    /// 403 with `{"message": "firstmate socket-proxy: denied: ... (rule: ...)"}`.
    Denied,
    /// 413: the body is over the limit.
    TooLarge,
    /// Refused before routing (hyper's 400 for a request target it cannot parse), or 403.
    Refused,
}

struct Attack {
    what: String,
    method: &'static str,
    target: String,
    body: Vec<u8>,
    ctype: &'static str,
    want: Want,
}

fn attack(what: &str, method: &'static str, target: &str, body: &str) -> Attack {
    Attack {
        what: what.to_string(),
        method,
        target: target.to_string(),
        body: body.as_bytes().to_vec(),
        ctype: "application/json",
        want: Want::Denied,
    }
}

/// A create body: managed, labelled for cleanup, with a PID limit, with `extra` members
/// at the top level (a second `HostConfig` there merges into the first).
fn create_body(inst: &str, extra: &str) -> String {
    let sep = if extra.is_empty() { "" } else { "," };
    format!(
        r#"{{"Image":"{TEST_IMAGE}","Cmd":["true"],"Labels":{{"firstmate.managed":"true","firstmate.instance":"{inst}"}},"HostConfig":{{"PidsLimit":64}}{sep}{extra}}}"#
    )
}

/// Removes the networks named when dropped (the Env removes containers and volumes).
struct NetGuard(Vec<String>);

impl Drop for NetGuard {
    fn drop(&mut self) {
        for n in &self.0 {
            let _ = docker(None, &["network", "rm", n]);
        }
    }
}

/// `docker network create ARGS NAME` straight on the socket; the network's ID.
fn network(guard: &mut NetGuard, name: &str, args: &[&str]) -> String {
    let mut all = vec!["network", "create"];
    all.extend_from_slice(args);
    all.push(name);
    let id = ok(docker(None, &all));
    guard.0.push(name.to_string());
    id
}

#[test]
fn a_corpus_of_attacks_is_refused_and_changes_nothing() {
    let Some(env) = Env::new("") else { return };
    let inst = env.instance.clone();
    let p = ProxyProcess::start();
    let label = format!("firstmate.instance={inst}");

    // Victims, made straight on the socket: an unmanaged running container, an exec in
    // it, an unmanaged volume, an image tag to delete.
    let victim = format!("fm-victim-{inst}");
    ok(docker(
        None,
        &[
            "run", "-d", "--name", &victim, "--label", &label, TEST_IMAGE, "sleep", "600",
        ],
    ));
    let victim_id = ok(docker(None, &["inspect", "-f", "{{.Id}}", &victim]));
    let prefix = &victim_id[..12];
    let started = ok(docker(
        None,
        &["inspect", "-f", "{{.State.StartedAt}}", &victim],
    ));
    let exec = direct(
        "POST",
        &format!("/containers/{victim}/exec"),
        br#"{"Cmd":["touch","/tmp/pwned"],"AttachStdout":true}"#,
    );
    assert_eq!(exec.status, 201, "exec create on the socket: {}", exec.body);
    let exec_id = serde_json::from_str::<serde_json::Value>(&exec.body).unwrap()["Id"]
        .as_str()
        .unwrap()
        .to_string();
    let vol = format!("fm-victim-vol-{inst}");
    ok(docker(None, &["volume", "create", "--label", &label, &vol]));
    // A volume whose options are a secret (as an NFS or CIFS volume's address and
    // credentials are): a tmpfs stands in for the share.
    let secret_vol = format!("fm-victim-opts-{inst}");
    ok(docker(
        None,
        &[
            "volume",
            "create",
            "--label",
            &label,
            "--opt",
            "type=tmpfs",
            "--opt",
            "device=tmpfs",
            "--opt",
            "o=size=1m,uid=4242",
            &secret_vol,
        ],
    ));
    // Another project's internal network, and a managed network of another instance.
    let mut nets = NetGuard(Vec::new());
    let victim_net = format!("fm-victim-net-{inst}");
    let victim_net_id = network(&mut nets, &victim_net, &["--internal", "--label", &label]);
    let other_net = format!("fm-other-net-{inst}");
    network(
        &mut nets,
        &other_net,
        &[
            "--label",
            "firstmate.managed=true",
            "--label",
            &format!("firstmate.instance=other-{inst}"),
        ],
    );
    // A managed network of this instance (as a session's is).
    let our_net = format!("fm-our-net-{inst}");
    network(
        &mut nets,
        &our_net,
        &[
            "--internal",
            "--label",
            "firstmate.managed=true",
            "--label",
            &format!("firstmate.instance={inst}"),
        ],
    );
    let tag = format!("fm-attack-{inst}:victim");
    ok(docker(None, &["tag", TEST_IMAGE, &tag]));
    // The Env removes containers and volumes; this guard removes the tag.
    struct Tag(String);
    impl Drop for Tag {
        fn drop(&mut self) {
            let _ = docker(None, &["rmi", &self.0]);
        }
    }
    let _tag = Tag(tag.clone());
    // A managed container, made through the proxy: the target of exec attacks.
    let managed = format!("fm-managed-{inst}");
    ok(docker(
        Some(&p.host()),
        &[
            "run",
            "-d",
            "--name",
            &managed,
            "--label",
            "firstmate.managed=true",
            "--label",
            &label,
            "--cap-drop",
            "ALL",
            "--pids-limit",
            "64",
            TEST_IMAGE,
            "sleep",
            "600",
        ],
    ));
    let swarm_before = ok(docker(None, &["info", "-f", "{{.Swarm.LocalNodeState}}"]));
    let plugins_before = ok(docker(None, &["plugin", "ls", "-q"]));

    let n = format!("fm-attack-{inst}");
    let mut corpus: Vec<Attack> = Vec::new();
    macro_rules! add {
        ($what:expr, $method:expr, $target:expr, $body:expr $(,)?) => {
            corpus.push(attack($what, $method, $target, $body))
        };
    }

    // --- the daemon's own configuration: build, swarm, plugins, secrets, system -------
    add!(
        "build from a context",
        "POST",
        &format!("/build?t={n}:built"),
        ""
    );
    add!(
        "build from a remote",
        "POST",
        "/v1.41/build?remote=https://example.invalid/x.git",
        ""
    );
    add!("build cache prune", "POST", "/build/prune", "");
    add!("buildkit session", "POST", "/session", "");
    add!("grpc", "POST", "/grpc", "");
    add!(
        "swarm init",
        "POST",
        "/swarm/init",
        r#"{"ListenAddr":"127.0.0.1:2377","AdvertiseAddr":"127.0.0.1"}"#
    );
    add!(
        "swarm join",
        "POST",
        "/swarm/join",
        r#"{"RemoteAddrs":["10.0.0.1:2377"],"JoinToken":"x"}"#
    );
    add!("swarm leave", "POST", "/swarm/leave?force=1", "");
    add!("swarm inspect", "GET", "/swarm", "");
    add!("swarm unlock key", "GET", "/swarm/unlockkey", "");
    add!("nodes", "GET", "/nodes", "");
    add!("services", "GET", "/services", "");
    add!(
        "service create",
        "POST",
        "/services/create",
        r#"{"Name":"x","TaskTemplate":{"ContainerSpec":{"Image":"x","Privileges":{}}}}"#
    );
    add!("tasks", "GET", "/tasks", "");
    add!("secrets", "GET", "/secrets", "");
    add!(
        "secret create",
        "POST",
        "/secrets/create",
        r#"{"Name":"x","Data":"eA=="}"#
    );
    add!("configs", "GET", "/configs", "");
    add!(
        "config create",
        "POST",
        "/configs/create",
        r#"{"Name":"x","Data":"eA=="}"#
    );
    add!("plugins", "GET", "/plugins", "");
    add!(
        "plugin pull",
        "POST",
        "/plugins/pull?remote=vieux/sshfs",
        "[]"
    );
    add!(
        "plugin privileges",
        "GET",
        "/plugins/privileges?remote=vieux/sshfs",
        ""
    );
    add!("plugin create", "POST", "/plugins/create?name=x", "");
    add!("plugin enable", "POST", "/plugins/x/enable", "");
    add!("system df", "GET", "/system/df", "");
    add!(
        "auth",
        "POST",
        "/auth",
        r#"{"username":"x","password":"y"}"#
    );
    add!("container prune", "POST", "/containers/prune", "");
    add!("image prune", "POST", "/images/prune", "");
    add!("volume prune", "POST", "/volumes/prune", "");
    add!("network prune", "POST", "/networks/prune", "");
    add!("distribution", "GET", "/distribution/debian/json", "");

    // --- images -------------------------------------------------------------------
    add!("image delete", "DELETE", &format!("/images/{tag}"), "");
    add!(
        "image delete forced",
        "DELETE",
        &format!("/v1.41/images/{tag}?force=1"),
        ""
    );
    add!(
        "image pull",
        "POST",
        "/images/create?fromImage=alpine&tag=latest",
        ""
    );
    add!(
        "image import",
        "POST",
        &format!("/images/create?fromSrc=-&repo={n}"),
        ""
    );
    add!("image load", "POST", "/images/load", "");
    add!("image export", "GET", "/images/get?names=debian", "");
    add!(
        "image export by name",
        "GET",
        &format!("/images/{tag}/get"),
        ""
    );
    add!(
        "image tag",
        "POST",
        &format!("/images/{tag}/tag?repo={n}&tag=t"),
        ""
    );
    add!("image push", "POST", &format!("/images/{tag}/push"), "");
    add!("image list", "GET", "/images/json", "");
    add!("image search", "GET", "/images/search?term=x", "");
    add!(
        "image history",
        "GET",
        &format!("/images/{tag}/history"),
        ""
    );
    add!(
        "commit a container",
        "POST",
        &format!("/commit?container={victim}&repo={n}"),
        "{}"
    );

    // --- other containers: files, state, processes ---------------------------------
    for (what, method, op, body) in [
        ("export", "GET", "export", ""),
        ("archive put", "PUT", "archive?path=/tmp", "not a tar"),
        ("archive get", "GET", "archive?path=/etc/shadow", ""),
        ("archive stat", "HEAD", "archive?path=/", ""),
        ("update", "POST", "update", r#"{"Memory":0}"#),
        (
            "rename",
            "POST",
            &format!("rename?name={n}-renamed")[..],
            "",
        ),
        ("restart", "POST", "restart", ""),
        ("pause", "POST", "pause", ""),
        ("top", "GET", "top", ""),
        ("stats", "GET", "stats?stream=0", ""),
        ("changes", "GET", "changes", ""),
        ("start", "POST", "start", ""),
        ("stop", "POST", "stop", ""),
        ("kill", "POST", "kill", ""),
        ("wait", "POST", "wait", ""),
        ("attach", "POST", "attach?stream=1&stdout=1", ""),
        ("logs", "GET", "logs?stdout=1", ""),
        ("inspect", "GET", "json", ""),
        ("resize", "POST", "resize?h=10&w=10", ""),
        (
            "exec",
            "POST",
            "exec",
            r#"{"Cmd":["sh"],"AttachStdout":true}"#,
        ),
    ] {
        for (how, id) in [("by name", victim.as_str()), ("by ID prefix", prefix)] {
            add!(
                &format!("unmanaged container {what} {how}"),
                method,
                &format!("/v1.41/containers/{id}/{op}"),
                body,
            );
        }
    }
    add!(
        "remove an unmanaged container",
        "DELETE",
        &format!("/containers/{victim}?force=1"),
        ""
    );
    add!(
        "remove an unmanaged container by ID",
        "DELETE",
        &format!("/containers/{victim_id}?force=1"),
        ""
    );
    add!(
        "start an exec in an unmanaged container",
        "POST",
        &format!("/exec/{exec_id}/start"),
        r#"{"Detach":true}"#
    );
    add!(
        "inspect an exec of an unmanaged container",
        "GET",
        &format!("/exec/{exec_id}/json"),
        ""
    );
    add!(
        "resize an exec of an unmanaged container",
        "POST",
        &format!("/exec/{exec_id}/resize?h=1&w=1"),
        ""
    );
    add!(
        "inspect an unmanaged volume",
        "GET",
        &format!("/volumes/{vol}"),
        ""
    );
    add!(
        "remove an unmanaged volume",
        "DELETE",
        &format!("/volumes/{vol}?force=1"),
        ""
    );
    add!(
        "remove the bridge network",
        "DELETE",
        "/networks/bridge",
        ""
    );
    add!("inspect the host network", "GET", "/networks/host", "");
    add!(
        "connect to a network",
        "POST",
        "/networks/bridge/connect",
        &format!(r#"{{"Container":"{victim}"}}"#)
    );
    add!(
        "connect to another project's network",
        "POST",
        &format!("/networks/{victim_net}/connect"),
        &format!(r#"{{"Container":"{managed}"}}"#)
    );
    add!(
        "connect another project's container to a managed network",
        "POST",
        &format!("/networks/{our_net}/connect"),
        &format!(r#"{{"Container":"{victim}"}}"#)
    );
    add!(
        "connect to another instance's managed network",
        "POST",
        &format!("/networks/{other_net}/connect"),
        &format!(r#"{{"Container":"{managed}"}}"#)
    );
    add!(
        "connect with a chosen address",
        "POST",
        &format!("/networks/{our_net}/connect"),
        &format!(
            r#"{{"Container":"{managed}","EndpointConfig":{{"IPAMConfig":{{"IPv4Address":"172.31.255.9"}}}}}}"#
        )
    );
    add!(
        "connect with endpoint driver options",
        "POST",
        &format!("/networks/{our_net}/connect"),
        &format!(
            r#"{{"Container":"{managed}","EndpointConfig":{{"DriverOpts":{{"com.docker.network.endpoint.sysctls":"net.ipv4.ip_forward=1"}}}}}}"#
        )
    );
    add!(
        "connect a container under a case-folded second key",
        "POST",
        &format!("/networks/{our_net}/connect"),
        &format!(r#"{{"Container":"{managed}","container":"{victim}"}}"#)
    );
    add!(
        "disconnect another project's container",
        "POST",
        "/networks/bridge/disconnect",
        &format!(r#"{{"Container":"{victim}","Force":true}}"#)
    );

    // --- creates that reach the host: privilege, capabilities, devices, namespaces ------
    let host_attacks: Vec<(&str, String)> = vec![
        ("privileged", r#""Privileged":true"#.into()),
        ("capability SYS_ADMIN", r#""CapAdd":["SYS_ADMIN"]"#.into()),
        ("all capabilities (string form)", r#""CapAdd":"ALL""#.into()),
        ("capability SYS_PTRACE", r#""CapAdd":["CAP_SYS_PTRACE"],"CapDrop":["ALL"]"#.into()),
        ("capabilities field of API 1.40", r#""Capabilities":["CAP_SYS_ADMIN"]"#.into()),
        ("the host's disk", r#""Devices":[{"PathOnHost":"/dev/sda","PathInContainer":"/dev/sda","CgroupPermissions":"rwm"}]"#.into()),
        ("the host's memory", r#""Devices":[{"PathOnHost":"/dev/mem","PathInContainer":"/dev/mem","CgroupPermissions":"rwm"}]"#.into()),
        ("GPUs", r#""DeviceRequests":[{"Driver":"","Count":-1,"Capabilities":[["gpu"]]}]"#.into()),
        ("device cgroup rule", r#""DeviceCgroupRules":["a *:* rwm"]"#.into()),
        ("host network", r#""NetworkMode":"host""#.into()),
        ("another container's network", format!(r#""NetworkMode":"container:{victim}""#)),
        ("another container's network by ID prefix", format!(r#""NetworkMode":"container:{prefix}""#)),
        ("another project's network", format!(r#""NetworkMode":"{victim_net}""#)),
        ("another project's network by ID prefix", format!(r#""NetworkMode":"{}""#, &victim_net_id[..12])),
        ("another instance's managed network", format!(r#""NetworkMode":"{other_net}""#)),
        ("a network that does not exist", format!(r#""NetworkMode":"{n}-nonet""#)),
        ("PID limit off", r#""PidsLimit":-1"#.into()),
        ("PID limit zero", r#""PidsLimit":0"#.into()),
        ("restart always", r#""RestartPolicy":{"Name":"always"}"#.into()),
        ("restart unless stopped", r#""RestartPolicy":{"Name":"unless-stopped"}"#.into()),
        ("restart on failure", r#""RestartPolicy":{"Name":"on-failure","MaximumRetryCount":3}"#.into()),
        ("a name for the host", r#""ExtraHosts":["host.docker.internal:host-gateway"]"#.into()),
        ("the root group", r#""GroupAdd":["root"]"#.into()),
        ("group 0", r#""GroupAdd":["0"]"#.into()),
        ("a tmpfs over /dev", r#""Mounts":[{"Type":"tmpfs","Target":"/dev"}]"#.into()),
        ("a tmpfs over /proc/sys", r#""Tmpfs":{"/proc/sys":""}"#.into()),
        ("a tmpfs over /sys, spelled around", r#""Tmpfs":{"/tmp/../sys/":"rw"}"#.into()),
        ("an anonymous volume over /dev/shm", r#""Mounts":[{"Type":"volume","Target":"/dev/shm"}]"#.into()),
        ("host PID namespace", r#""PidMode":"host""#.into()),
        ("another container's PIDs", format!(r#""PidMode":"container:{victim}""#)),
        ("host IPC", r#""IpcMode":"host""#.into()),
        ("another container's IPC", format!(r#""IpcMode":"container:{victim}""#)),
        ("host UTS", r#""UTSMode":"host""#.into()),
        ("host user namespace", r#""UsernsMode":"host""#.into()),
        ("host cgroup namespace", r#""CgroupnsMode":"host""#.into()),
        ("another container's cgroup", format!(r#""Cgroup":"container:{victim}""#)),
        ("bind the host's root", r#""Binds":["/:/host"]"#.into()),
        ("bind the Docker socket", r#""Binds":["/var/run/docker.sock:/var/run/docker.sock"]"#.into()),
        ("bind /etc read-only", r#""Binds":["/etc:/etc2:ro"]"#.into()),
        ("an unmanaged volume through Binds", format!(r#""Binds":["{vol}:/data"]"#)),
        ("bind mount of /", r#""Mounts":[{"Type":"bind","Source":"/","Target":"/host"}]"#.into()),
        ("bind mount of the socket", r#""Mounts":[{"Type":"bind","Source":"/var/run/docker.sock","Target":"/s"}]"#.into()),
        ("bind mount spelled BIND", r#""Mounts":[{"Type":"BIND","Source":"/","Target":"/host"}]"#.into()),
        ("local volume driver binding /", r#""Mounts":[{"Type":"volume","Target":"/host","VolumeOptions":{"DriverConfig":{"Name":"local","Options":{"type":"none","o":"bind","device":"/"}}}}]"#.into()),
        ("an unmanaged volume", format!(r#""Mounts":[{{"Type":"volume","Source":"{vol}","Target":"/data"}}]"#)),
        ("a volume that does not exist yet", format!(r#""Mounts":[{{"Type":"volume","Source":"{n}-newvol","Target":"/data"}}]"#)),
        ("a bind kept by Go's slice reuse", r#""Mounts":[{"Type":"bind","Source":"/","Target":"/h"}],"Mounts":[{"Target":"/h"}]"#.into()),
        ("another container's volumes", format!(r#""VolumesFrom":["{victim}"]"#)),
        ("a link to another container", format!(r#""Links":["{victim}:db"]"#)),
        ("seccomp unconfined", r#""SecurityOpt":["seccomp=unconfined"]"#.into()),
        ("seccomp unconfined, old syntax", r#""SecurityOpt":["seccomp:unconfined"]"#.into()),
        ("a seccomp profile allowing everything", r#""SecurityOpt":["seccomp={\"defaultAction\":\"SCMP_ACT_ALLOW\"}"]"#.into()),
        ("AppArmor unconfined", r#""SecurityOpt":["apparmor=unconfined"]"#.into()),
        ("AppArmor unconfined, old syntax", r#""SecurityOpt":["apparmor:unconfined"]"#.into()),
        ("SELinux disabled", r#""SecurityOpt":["label=disable"]"#.into()),
        ("SELinux disabled, bare", r#""SecurityOpt":["disable"]"#.into()),
        ("SELinux super-privileged type", r#""SecurityOpt":["label=type:spc_t"]"#.into()),
        ("unmasked /proc", r#""SecurityOpt":["systempaths=unconfined"]"#.into()),
        ("no masked paths", r#""MaskedPaths":[]"#.into()),
        ("no read-only paths", r#""ReadonlyPaths":[]"#.into()),
        ("kernel core pattern", r#""Sysctls":{"kernel.core_pattern":"|/tmp/x"}"#.into()),
        ("IP forwarding", r#""Sysctls":{"net.ipv4.ip_forward":"1"}"#.into()),
        ("the root cgroup", r#""CgroupParent":"/""#.into()),
        ("the system slice", r#""CgroupParent":"system.slice""#.into()),
        ("another runtime", r#""Runtime":"io.containerd.runc.v2""#.into()),
        ("OCI annotations", r#""Annotations":{"run.oci.keep_original_groups":"1"}"#.into()),
        ("OOM killer exemption", r#""OomKillDisable":true"#.into()),
        ("OOM score protection", r#""OomScoreAdj":-1000"#.into()),
        ("a volume plugin", r#""VolumeDriver":"vieux/sshfs""#.into()),
        ("logs to a network syslog", r#""LogConfig":{"Type":"syslog","Config":{"syslog-address":"tcp://127.0.0.1:514"}}"#.into()),
        ("a published port", r#""PortBindings":{"22/tcp":[{"HostIp":"0.0.0.0","HostPort":"2222"}]}"#.into()),
        ("all ports published", r#""PublishAllPorts":true"#.into()),
        ("privileged as a string", r#""Privileged":"true""#.into()),
        ("binds as a string", r#""Binds":"/:/host""#.into()),
    ];
    for (i, (what, member)) in host_attacks.iter().enumerate() {
        let hc = create_body(&inst, &format!(r#""HostConfig":{{{member}}}"#));
        add!(
            &format!("create: {what}"),
            "POST",
            &format!("/v1.41/containers/create?name={n}-h{i}"),
            &hc
        );
        // Docker reads every host-config field at the top level too.
        let top = create_body(&inst, member);
        add!(
            &format!("create: {what} (top level)"),
            "POST",
            &format!("/containers/create?name={n}-t{i}"),
            &top
        );
    }

    // --- networks and volumes of others, named where a create joins or mounts them -------
    let endpoint_attacks = [
        (
            "another project's network as an endpoint",
            format!(r#""NetworkingConfig":{{"EndpointsConfig":{{"{victim_net}":{{}}}}}}"#),
        ),
        (
            "another project's network by endpoint NetworkID",
            format!(
                r#""NetworkingConfig":{{"EndpointsConfig":{{"bridge":{{"NetworkID":"{victim_net_id}"}}}}}}"#
            ),
        ),
        (
            "another instance's network as an endpoint",
            format!(r#""NetworkingConfig":{{"EndpointsConfig":{{"{other_net}":{{}}}}}}"#),
        ),
        (
            "the host network as an endpoint",
            r#""NetworkingConfig":{"EndpointsConfig":{"host":{}}}"#.into(),
        ),
        (
            "an anonymous volume over /dev",
            r#""Volumes":{"/dev":{}}"#.into(),
        ),
    ];
    for (i, (what, members)) in endpoint_attacks.iter().enumerate() {
        add!(
            &format!("create: {what}"),
            "POST",
            &format!("/containers/create?name={n}-w{i}"),
            &create_body(&inst, members),
        );
    }
    add!(
        "create without a PID limit",
        "POST",
        &format!("/containers/create?name={n}-w90"),
        &format!(
            r#"{{"Image":"{TEST_IMAGE}","Labels":{{"firstmate.managed":"true","firstmate.instance":"{inst}"}},"HostConfig":{{"CapDrop":["ALL"]}}}}"#
        )
    );
    add!(
        "create with the PID limit only where Docker does not read it",
        "POST",
        &format!("/containers/create?name={n}-w91"),
        &format!(
            r#"{{"Image":"{TEST_IMAGE}","PidsLimit":64,"Labels":{{"firstmate.managed":"true","firstmate.instance":"{inst}"}},"HostConfig":{{"CapDrop":["ALL"]}}}}"#
        )
    );

    // --- smuggling: spellings, repeats, nulls, escapes --------------------------------
    let smuggled = [
        (
            "lower case",
            r#""HostConfig":{"privileged":true}"#.to_string(),
        ),
        ("upper case", r#""HostConfig":{"PRIVILEGED":true}"#.into()),
        (
            "mixed case, last wins",
            r#""HostConfig":{"Privileged":false,"pRiViLeGeD":true}"#.into(),
        ),
        (
            "a null after true",
            r#""HostConfig":{"Privileged":true,"Privileged":null}"#.into(),
        ),
        (
            "an escaped key",
            r#""HostConfig":{"\u0050rivileged":true}"#.into(),
        ),
        (
            "hostconfig in lower case",
            r#""hostconfig":{"Privileged":true}"#.into(),
        ),
        (
            "HostConfig with a long s",
            "\"Ho\u{17F}tConfig\":{\"Privileged\":true}".into(),
        ),
        (
            "Binds with a long s",
            "\"HostConfig\":{\"Bind\u{17F}\":[\"/:/host\"]}".into(),
        ),
        (
            "NetworkMode with a Kelvin sign",
            "\"HostConfig\":{\"Networ\u{212A}Mode\":\"host\"}".into(),
        ),
        (
            "a second HostConfig merging into the first",
            r#""HostConfig":{"Privileged":true},"HostConfig":{"Memory":67108864}"#.into(),
        ),
        (
            "a SecurityOpt element kept by a null",
            r#""HostConfig":{"SecurityOpt":["seccomp=unconfined"],"SecurityOpt":[null]}"#.into(),
        ),
        (
            "CapAdd in a second HostConfig",
            r#""HostConfig":{"CapDrop":["ALL"]},"HOSTCONFIG":{"capadd":["SYS_ADMIN"]}"#.into(),
        ),
    ];
    for (i, (what, members)) in smuggled.iter().enumerate() {
        add!(
            &format!("smuggled: {what}"),
            "POST",
            &format!("/containers/create?name={n}-s{i}"),
            &create_body(&inst, members),
        );
    }

    // --- the label -------------------------------------------------------------------
    let unlabelled =
        format!(r#"{{"Image":"{TEST_IMAGE}","Labels":{{"firstmate.instance":"{inst}"}}}}"#);
    add!(
        "create without the label",
        "POST",
        &format!("/containers/create?name={n}-l0"),
        &unlabelled
    );
    add!(
        "create with the label false",
        "POST",
        &format!("/containers/create?name={n}-l1"),
        &format!(
            r#"{{"Image":"{TEST_IMAGE}","Labels":{{"firstmate.managed":"false","firstmate.instance":"{inst}"}}}}"#
        )
    );
    add!(
        "create with the label in another case",
        "POST",
        &format!("/containers/create?name={n}-l2"),
        &format!(
            r#"{{"Image":"{TEST_IMAGE}","Labels":{{"Firstmate.Managed":"true","firstmate.instance":"{inst}"}}}}"#
        )
    );
    add!(
        "create with the label nulled",
        "POST",
        &format!("/containers/create?name={n}-l3"),
        &format!(
            r#"{{"Image":"{TEST_IMAGE}","Labels":{{"firstmate.managed":"true","firstmate.instance":"{inst}"}},"Labels":null}}"#
        )
    );

    // --- bodies the proxy cannot read -----------------------------------------------
    add!(
        "invalid JSON",
        "POST",
        &format!("/containers/create?name={n}-b0"),
        r#"{"Image":"x","#
    );
    add!(
        "data after the JSON value",
        "POST",
        &format!("/containers/create?name={n}-b1"),
        &format!(
            r#"{} {{"HostConfig":{{"Privileged":true}}}}"#,
            create_body(&inst, "")
        )
    );
    add!(
        "a byte-order mark",
        "POST",
        &format!("/containers/create?name={n}-b2"),
        &format!("\u{feff}{}", create_body(&inst, ""))
    );
    add!(
        "deep nesting",
        "POST",
        &format!("/containers/create?name={n}-b3"),
        &format!("{}{}", "[".repeat(5000), "]".repeat(5000))
    );
    add!(
        "an unknown field",
        "POST",
        &format!("/containers/create?name={n}-b4"),
        &create_body(&inst, r#""Surprise":{"Privileged":true}"#)
    );
    let mut bad_utf8 = create_body(&inst, r#""Hostname":"XX""#).into_bytes();
    let at = bad_utf8.windows(2).position(|w| w == b"XX").unwrap();
    bad_utf8[at] = 0xff;
    corpus.push(Attack {
        body: bad_utf8,
        ..attack(
            "invalid UTF-8",
            "POST",
            &format!("/containers/create?name={n}-b5"),
            "",
        )
    });
    corpus.push(Attack {
        ctype: "application/x-www-form-urlencoded",
        ..attack(
            "a form body",
            "POST",
            &format!("/containers/create?name={n}-b6"),
            &create_body(&inst, ""),
        )
    });
    let big = create_body(&inst, &format!(r#""Env":["A={}"]"#, "x".repeat(2 << 20)));
    corpus.push(Attack {
        want: Want::TooLarge,
        ..attack(
            "a body over the limit",
            "POST",
            &format!("/containers/create?name={n}-b7"),
            &big,
        )
    });

    // --- paths and queries ------------------------------------------------------------
    let privileged = create_body(&inst, r#""HostConfig":{"Privileged":true}"#);
    for (i, target) in [
        "/v1.41/containers/../build",
        "/containers/create/../../build",
        "/%2e%2e/build",
        "/v1.41/containers/%2e%2e/build",
        "/v1.41/containers/../containers/create",
        "//containers/create",
        "/v1.41//containers/create",
        "/containers%2fcreate",
        "/containers/create/",
        "/./containers/create",
        "/V1.41/containers/create",
        "/v1.23/containers/create",
        "/v1..41/containers/create",
        "/containers/create;x",
        "/containers/create%00",
        "/containers/CREATE",
    ]
    .iter()
    .enumerate()
    {
        let sep = if target.contains('?') { '&' } else { '?' };
        add!(
            &format!("path trick {target}"),
            "POST",
            &format!("{target}{sep}name={n}-p{i}"),
            &privileged
        );
    }
    corpus.push(Attack {
        want: Want::Refused,
        ..attack(
            "backslashes",
            "POST",
            &format!("\\containers\\create?name={n}-p90"),
            &privileged,
        )
    });
    corpus.push(Attack {
        want: Want::Refused,
        ..attack(
            "absolute form",
            "POST",
            &format!("http://docker/v1.41/build?t={n}:abs"),
            "",
        )
    });
    add!(
        "start with a checkpoint from a host path",
        "POST",
        &format!("/containers/{managed}/start?checkpoint=c&checkpoint-dir=/"),
        ""
    );
    add!(
        "start with an escaped checkpoint key",
        "POST",
        &format!("/containers/{managed}/start?check%70oint=c"),
        ""
    );
    add!(
        "a host config on start (API 1.23)",
        "POST",
        &format!("/v1.23/containers/{managed}/start"),
        r#"{"Privileged":true,"Binds":["/:/host"]}"#
    );
    add!(
        "a host config on start",
        "POST",
        &format!("/containers/{managed}/start"),
        r#"{"Privileged":true,"Binds":["/:/host"]}"#
    );
    add!(
        "interface sysctls through endpoint driver options",
        "POST",
        &format!("/containers/create?name={n}-e0"),
        &create_body(
            &inst,
            r#""NetworkingConfig":{"EndpointsConfig":{"bridge":{"DriverOpts":{"com.docker.network.endpoint.sysctls":"net.ipv4.conf.IFNAME.forwarding=1"}}}}"#,
        ),
    );
    add!(
        "a semicolon in the query",
        "GET",
        "/containers/json?all=1;filters=x",
        ""
    );
    add!(
        "PUT on create",
        "PUT",
        &format!("/containers/create?name={n}-m0"),
        &create_body(&inst, "")
    );

    // --- privileged or root exec in a managed container ---------------------------------
    for (i, body) in [
        r#"{"Cmd":["sh"],"User":"root"}"#,
        r#"{"Cmd":["sh"],"User":"0"}"#,
        r#"{"Cmd":["sh"],"User":"0:0"}"#,
        r#"{"Cmd":["sh"],"user":"agent","USER":"root"}"#,
        r#"{"Cmd":["sh"],"Privileged":true}"#,
        r#"{"Cmd":["sh"],"privileged":true}"#,
        r#"{"Cmd":["sh"],"Privileged":true,"Privileged":null}"#,
        r#"{"Cmd":["sh"],"PRIVILEGED":false,"pRIVILEGED":true}"#,
        r#"{"Cmd":["sh"],"Privileged":"true"}"#,
    ]
    .iter()
    .enumerate()
    {
        add!(
            &format!("privileged exec {i}"),
            "POST",
            &format!("/containers/{managed}/exec"),
            body
        );
    }

    // --- volumes and networks ---------------------------------------------------------
    add!(
        "volume without the label",
        "POST",
        "/volumes/create",
        &format!(r#"{{"Name":"{n}-v0","Labels":{{"firstmate.instance":"{inst}"}}}}"#)
    );
    add!(
        "volume binding /",
        "POST",
        "/volumes/create",
        &format!(
            r#"{{"Name":"{n}-v1","Labels":{{"firstmate.managed":"true","firstmate.instance":"{inst}"}},"DriverOpts":{{"type":"none","o":"bind","device":"/"}}}}"#
        )
    );
    add!(
        "volume create naming an unmanaged volume (its options come back)",
        "POST",
        "/volumes/create",
        &format!(
            r#"{{"Name":"{secret_vol}","Labels":{{"firstmate.managed":"true","firstmate.instance":"{inst}"}}}}"#
        )
    );
    add!(
        "volume on an NFS share",
        "POST",
        "/volumes/create",
        &format!(
            r#"{{"Name":"{n}-v3","Labels":{{"firstmate.managed":"true","firstmate.instance":"{inst}"}},"DriverOpts":{{"type":"nfs","o":"addr=127.0.0.1,rw","device":":/export"}}}}"#
        )
    );
    add!(
        "volume on a CIFS share",
        "POST",
        "/volumes/create",
        &format!(
            r#"{{"Name":"{n}-v4","Driver":"local","Labels":{{"firstmate.managed":"true","firstmate.instance":"{inst}"}},"DriverOpts":{{"type":"cifs","o":"username=u,password=p","device":"//127.0.0.1/s"}}}}"#
        )
    );
    add!(
        "volume from a plugin",
        "POST",
        "/volumes/create",
        &format!(
            r#"{{"Name":"{n}-v2","Driver":"vieux/sshfs","Labels":{{"firstmate.managed":"true","firstmate.instance":"{inst}"}}}}"#
        )
    );
    add!(
        "network without the label",
        "POST",
        "/networks/create",
        &format!(r#"{{"Name":"{n}-n0","Labels":{{"firstmate.instance":"{inst}"}}}}"#)
    );
    add!(
        "macvlan on the host's interface",
        "POST",
        "/networks/create",
        &format!(
            r#"{{"Name":"{n}-n1","Driver":"macvlan","Options":{{"parent":"eth0"}},"Labels":{{"firstmate.managed":"true","firstmate.instance":"{inst}"}}}}"#
        )
    );
    for (what, body) in [
        ("a network with a route out", r#""Driver":"bridge""#),
        (
            "a network with a chosen subnet",
            r#""Internal":true,"IPAM":{"Config":[{"Subnet":"192.0.2.0/24"}]}"#,
        ),
        (
            "a network with IPv6",
            r#""Internal":true,"EnableIPv6":true"#,
        ),
        (
            "a network with ICC options",
            r#""Internal":true,"Options":{"com.docker.network.bridge.enable_icc":"true"}"#,
        ),
        (
            "a network that keeps the host's address",
            r#""Internal":true,"Options":{"com.docker.network.bridge.inhibit_ipv4":"false"}"#,
        ),
        (
            "an attachable swarm-scoped network",
            r#""Internal":true,"Attachable":true,"Scope":"swarm""#,
        ),
    ] {
        add!(
            what,
            "POST",
            "/networks/create",
            &format!(
                r#"{{"Name":"{n}-nx",{body},"Labels":{{"firstmate.managed":"true","firstmate.instance":"{inst}"}}}}"#
            )
        );
    }
    add!(
        "a bridge on docker0",
        "POST",
        "/networks/create",
        &format!(
            r#"{{"Name":"{n}-n2","Options":{{"com.docker.network.bridge.name":"docker0"}},"Labels":{{"firstmate.managed":"true","firstmate.instance":"{inst}"}}}}"#
        )
    );

    // --- send them all ----------------------------------------------------------------
    let mut failures = Vec::new();
    for a in &corpus {
        let r = via_typed(&p, a.method, &a.target, a.ctype, &a.body);
        let good = match a.want {
            // A HEAD answer has no body.
            Want::Denied if a.method == "HEAD" => r.status == 403,
            Want::Denied => {
                r.status == 403
                    && serde_json::from_str::<serde_json::Value>(&r.body).is_ok_and(|v| {
                        v["message"].as_str().is_some_and(|m| {
                            m.starts_with("firstmate socket-proxy: denied: ")
                                && m.contains("(rule: ")
                        })
                    })
            }
            Want::TooLarge => r.status == 413,
            Want::Refused => r.status == 403 || r.status == 400,
        };
        if !good {
            failures.push(format!(
                "{} ({} {}): {} {}",
                a.what, a.method, a.target, r.status, r.body
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} attacks were not refused:\n{}",
        failures.len(),
        corpus.len(),
        failures.join("\n")
    );

    // --- the daemon is as it was ------------------------------------------------------
    let ours = ok(docker(
        None,
        &[
            "ps",
            "-a",
            "--filter",
            &format!("label={label}"),
            "--format",
            "{{.Names}}",
        ],
    ));
    let mut names: Vec<&str> = ours.lines().collect();
    names.sort();
    let mut want = vec![managed.as_str(), victim.as_str()];
    want.sort();
    assert_eq!(names, want, "the attacks made or removed containers");
    assert_eq!(
        ok(docker(
            None,
            &[
                "inspect",
                "-f",
                "{{.State.Running}} {{.State.StartedAt}} {{.RestartCount}} {{.Name}}",
                &victim
            ]
        )),
        format!("true {started} 0 /{victim}"),
        "the victim was touched"
    );
    let e = direct("GET", &format!("/exec/{exec_id}/json"), b"");
    let e: serde_json::Value = serde_json::from_str(&e.body).unwrap();
    assert_eq!(e["Pid"], 0, "the victim's exec was started: {e}");
    let vols = ok(docker(
        None,
        &["volume", "ls", "-q", "--filter", &format!("label={label}")],
    ));
    let mut vols: Vec<&str> = vols.lines().collect();
    vols.sort();
    let mut want_vols = vec![vol.as_str(), secret_vol.as_str()];
    want_vols.sort();
    assert_eq!(vols, want_vols, "the attacks made or removed volumes");
    let listed = ok(docker(
        None,
        &[
            "network",
            "ls",
            "--filter",
            &format!("label={label}"),
            "--format",
            "{{.Name}}",
        ],
    ));
    let mut want_nets = [our_net.as_str(), victim_net.as_str()];
    want_nets.sort();
    assert_eq!(listed, want_nets.join("\n"), "the attacks made networks");
    let joined = ok(docker(
        None,
        &[
            "network",
            "inspect",
            "-f",
            "{{len .Containers}}",
            &victim_net,
        ],
    ));
    assert_eq!(joined, "0", "a container joined another project's network");
    let joined = ok(docker(
        None,
        &["network", "inspect", "-f", "{{len .Containers}}", &our_net],
    ));
    assert_eq!(joined, "0", "a connect the proxy refuses went through");
    let images = ok(docker(
        None,
        &[
            "images",
            "-q",
            "--filter",
            &format!("reference=fm-attack-{inst}*"),
        ],
    ));
    assert_eq!(
        images.lines().count(),
        1,
        "the attacks made or removed images: {images}"
    );
    assert_eq!(
        ok(docker(None, &["info", "-f", "{{.Swarm.LocalNodeState}}"])),
        swarm_before
    );
    assert_eq!(ok(docker(None, &["plugin", "ls", "-q"])), plugins_before);

    // --- and an operator can audit each refusal -----------------------------------------
    let log = p.log();
    for rule in [
        "endpoint allow-list",
        "managed objects only",
        "no privileged containers",
        "no added capabilities",
        "no host devices",
        "no host or shared namespaces",
        "no host paths",
        "no access to other containers",
        "no unconfined security profiles",
        "no kernel settings",
        "no cgroup parent",
        "managed label required",
        "bodies the proxy can read",
        "known fields only",
        "body size limit",
        "normalised paths only",
        "known query parameters only",
        "no privileged exec",
        "API version 1.40 or newer",
        "no body where Docker reads none",
        "managed or allowed networks only",
        "no mounts over /dev, /proc or /sys",
        "a PID limit",
        "no restart policy",
        "no host-gateway",
        "no root group",
        "no exec as root",
    ] {
        assert!(
            log.contains(&format!("rule=\"{rule}\"")),
            "no audit line for the rule {rule:?} in:\n{log}"
        );
    }
    let denied = log
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("denied:"))
        .count();
    assert!(
        denied >= corpus.len() - 3,
        "{denied} audit lines for {} refusals",
        corpus.len()
    );
}

#[test]
fn the_managed_life_cycle_works_through_the_docker_cli() {
    let Some(env) = Env::new("") else { return };
    let inst = env.instance.clone();
    let label = format!("firstmate.instance={inst}");
    let p = ProxyProcess::start();
    let h = p.host();
    let px = Some(h.as_str());
    let since = ok(docker(None, &["system", "info", "-f", "{{.SystemTime}}"]));

    // An unmanaged neighbour the proxy must not show.
    let victim = format!("fm-victim-{inst}");
    ok(docker(
        None,
        &[
            "create", "--name", &victim, "--label", &label, TEST_IMAGE, "true",
        ],
    ));

    // Networks are not removed by the Env: this guard does.
    struct Networks(String);
    impl Drop for Networks {
        fn drop(&mut self) {
            let ids = docker(None, &["network", "ls", "-q", "--filter", &self.0]);
            for id in stdout(&ids).lines() {
                let _ = docker(None, &["network", "rm", id]);
            }
        }
    }
    let _networks = Networks(format!("label={label}"));
    let net = format!("fm-life-{inst}-net");
    ok(docker(
        px,
        &[
            "network",
            "create",
            "--internal",
            "-o",
            "com.docker.network.bridge.inhibit_ipv4=true",
            "--label",
            "firstmate.managed=true",
            "--label",
            &label,
            &net,
        ],
    ));

    let vol = format!("fm-life-{inst}-vol");
    ok(docker(
        px,
        &[
            "volume",
            "create",
            "--label",
            "firstmate.managed=true",
            "--label",
            &label,
            &vol,
        ],
    ));
    let c = format!("fm-life-{inst}");
    ok(docker(
        px,
        &[
            "create",
            "--name",
            &c,
            "--label",
            "firstmate.managed=true",
            "--label",
            &label,
            "--cap-drop",
            "ALL",
            "--security-opt",
            "no-new-privileges",
            "--pids-limit",
            "64",
            "-i",
            "--mount",
            &format!("type=volume,source={vol},target=/workspace"),
            "--tmpfs",
            "/scratch",
            TEST_IMAGE,
            "sh",
            "-c",
            "cat; exec sleep 600",
        ],
    ));
    ok(docker(px, &["start", &c]));

    // attach: stdin in, stdout out, through the hijacked connection.
    let mut attach = Command::new("docker")
        .env("DOCKER_HOST", &h)
        .args(["attach", &c])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("docker attach");
    let mut input = attach.stdin.take().unwrap();
    let mut output = BufReader::new(attach.stdout.take().unwrap());
    std::thread::sleep(Duration::from_millis(500));
    for i in 0..3 {
        writeln!(input, "ping-{i}").unwrap();
        input.flush().unwrap();
        let mut line = String::new();
        output.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), format!("ping-{i}"), "attach did not echo");
    }
    drop(input);
    let _ = attach.kill();
    let _ = attach.wait();

    // exec, with and without stdin; the volume is writable.
    assert_eq!(
        ok(docker(px, &["exec", &c, "sh", "-c", "echo exec-ok"])),
        "exec-ok"
    );
    assert_eq!(
        ok(docker_in(
            px,
            &[
                "exec",
                "-i",
                &c,
                "sh",
                "-c",
                "cat > /workspace/f && cat /workspace/f"
            ],
            "through-the-proxy\n"
        )),
        "through-the-proxy"
    );
    let out = docker(px, &["exec", "--privileged", &c, "true"]);
    assert!(
        !out.status.success() && text(&out).contains("firstmate socket-proxy: denied"),
        "a privileged exec ran: {}",
        text(&out)
    );
    assert!(ok(docker(px, &["logs", &c])).contains("ping-2"), "logs");
    assert_eq!(
        ok(docker(
            px,
            &["inspect", "-f", "{{.HostConfig.CapDrop}}", &c]
        )),
        "[ALL]"
    );

    // Lists show managed containers only.
    let listed = ok(docker(
        px,
        &[
            "ps",
            "-a",
            "--filter",
            &format!("label={label}"),
            "--format",
            "{{.Names}}",
        ],
    ));
    assert_eq!(listed, c, "the proxy listed an unmanaged container");
    let out = docker(px, &["start", &victim]);
    assert!(
        !out.status.success() && text(&out).contains("managed objects only"),
        "{}",
        text(&out)
    );

    ok(docker(px, &["stop", "-t", "1", &c]));
    ok(docker(px, &["rm", &c]));
    ok(docker(px, &["volume", "rm", &vol]));
    assert_eq!(
        ok(docker(px, &["network", "inspect", "-f", "{{.Name}}", &net])),
        net
    );
    let out = docker(px, &["network", "rm", "bridge"]);
    assert!(
        !out.status.success() && text(&out).contains("managed objects only"),
        "{}",
        text(&out)
    );
    let out = docker(
        px,
        &[
            "run",
            "--rm",
            "--privileged",
            "--label",
            "firstmate.managed=true",
            "--pids-limit",
            "64",
            TEST_IMAGE,
            "true",
        ],
    );
    assert!(
        !out.status.success() && text(&out).contains("rule: no privileged containers"),
        "{}",
        text(&out)
    );

    // Output streams as it is written: `docker run` (attach) and `logs -f`.
    {
        let args = [
            "run",
            "--rm",
            "--label",
            "firstmate.managed=true",
            "--label",
            label.as_str(),
            "--network",
            net.as_str(),
            "--pids-limit",
            "64",
            TEST_IMAGE,
            "sh",
            "-c",
            "echo first; sleep 3; echo second",
        ];
        let mut child = Command::new("docker")
            .env("DOCKER_HOST", &h)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker run");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "first");
        let t = Instant::now();
        line.clear();
        out.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "second");
        assert!(
            t.elapsed() > Duration::from_secs(2),
            "the first line waited for the second: not streamed"
        );
        let _ = child.wait();
    }
    let ticker = format!("fm-ticker-{inst}");
    ok(docker(
        px,
        &[
            "run",
            "-d",
            "--name",
            &ticker,
            "--label",
            "firstmate.managed=true",
            "--label",
            &label,
            "--pids-limit",
            "64",
            TEST_IMAGE,
            "sh",
            "-c",
            "echo tick; sleep 3; echo tock",
        ],
    ));
    let mut logs = Command::new("docker")
        .env("DOCKER_HOST", &h)
        .args(["logs", "-f", &ticker])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("docker logs -f");
    let mut out = BufReader::new(logs.stdout.take().unwrap());
    let t = Instant::now();
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "tick");
    assert!(
        t.elapsed() < Duration::from_millis(2500),
        "logs -f did not stream"
    );
    line.clear();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "tock");
    let _ = logs.wait();

    // Events: the managed container's, never the neighbour's.
    ok(docker(None, &["start", &victim]));
    let until = ok(docker(None, &["system", "info", "-f", "{{.SystemTime}}"]));
    let events = ok(docker(
        px,
        &[
            "events",
            "--since",
            &since,
            "--until",
            &until,
            "--format",
            "{{.Actor.Attributes.name}}",
        ],
    ));
    assert!(
        events.lines().any(|l| l == c),
        "no event of the managed container:\n{events}"
    );
    assert!(
        !events.lines().any(|l| l == victim),
        "an unmanaged container's event came through:\n{events}"
    );
    ok(docker(px, &["network", "rm", &net]));
}

#[test]
fn a_worker_joins_only_networks_of_its_instance_the_allowed_ones_none_or_the_bridge() {
    let Some(env) = Env::new("") else { return };
    let inst = env.instance.clone();
    let label = format!("firstmate.instance={inst}");
    let mut nets = NetGuard(Vec::new());
    let allowed = format!("fm-allowed-net-{inst}");
    network(&mut nets, &allowed, &["--internal", "--label", &label]);
    let unmanaged = format!("fm-unmanaged-net-{inst}");
    network(&mut nets, &unmanaged, &["--internal", "--label", &label]);
    let p = ProxyProcess::start_with(&["--allow-network", &allowed]);
    let px = Some(p.host());
    let px = px.as_deref();
    // A managed network of this instance, made through the proxy.
    let ours = format!("fm-ours-net-{inst}");
    ok(docker(
        px,
        &[
            "network",
            "create",
            "--internal",
            "--label",
            "firstmate.managed=true",
            "--label",
            &label,
            &ours,
        ],
    ));
    nets.0.push(ours.clone());

    let run = |name: &str, network: &str| {
        docker(
            px,
            &[
                "create",
                "--name",
                name,
                "--label",
                "firstmate.managed=true",
                "--label",
                &label,
                "--pids-limit",
                "64",
                "--network",
                network,
                TEST_IMAGE,
                "sleep",
                "600",
            ],
        )
    };
    for (i, net) in [ours.as_str(), allowed.as_str(), "none", "bridge"]
        .into_iter()
        .enumerate()
    {
        let out = run(&format!("fm-join-{inst}-{i}"), net);
        assert!(out.status.success(), "{net}: {}", text(&out));
    }
    let out = run(&format!("fm-join-{inst}-x"), &unmanaged);
    assert!(
        !out.status.success() && text(&out).contains("rule: managed or allowed networks only"),
        "joined an unmanaged network: {}",
        text(&out)
    );
    // A managed container joins a managed network of its instance (as the gateway relay
    // joins each session's), under an alias, as the Docker CLI asks; and leaves it.
    let relay = format!("fm-join-{inst}-3");
    ok(docker(
        px,
        &["network", "connect", "--alias", "firstmate", &ours, &relay],
    ));
    let joined = ok(docker(
        None,
        &["network", "inspect", "-f", "{{len .Containers}}", &ours],
    ));
    assert_eq!(
        joined, "0",
        "a created container has no endpoint until it starts"
    );
    let aliases = ok(docker(
        None,
        &[
            "inspect",
            "-f",
            &format!("{{{{json (index .NetworkSettings.Networks \"{ours}\").Aliases}}}}"),
            &relay,
        ],
    ));
    assert!(aliases.contains("firstmate"), "aliases: {aliases}");
    ok(docker(px, &["network", "disconnect", &ours, &relay]));
    let out = docker(
        px,
        &["network", "connect", "--ip", "10.99.0.9", &ours, &relay],
    );
    assert!(
        !out.status.success() && text(&out).contains("rule: managed or allowed networks only"),
        "connected with a fixed address: {}",
        text(&out)
    );
    // Sharing the network of a managed container of this instance; not of another one.
    let first = format!("fm-join-{inst}-0");
    ok(docker(px, &["start", &first]));
    let out = run(&format!("fm-join-{inst}-c"), &format!("container:{first}"));
    assert!(out.status.success(), "{}", text(&out));
    let stranger = format!("fm-stranger-{inst}");
    ok(docker(
        None,
        &[
            "run", "-d", "--name", &stranger, "--label", &label, TEST_IMAGE, "sleep", "600",
        ],
    ));
    let out = run(
        &format!("fm-join-{inst}-s"),
        &format!("container:{stranger}"),
    );
    assert!(
        !out.status.success() && text(&out).contains("rule: no host or shared namespaces"),
        "shared an unmanaged container's network: {}",
        text(&out)
    );
    // Containers go before their networks.
    let ids = env.containers();
    if !ids.is_empty() {
        let mut rm = vec!["rm", "-f"];
        rm.extend(ids.iter().map(String::as_str));
        let _ = docker(None, &rm);
    }
}

#[test]
fn a_stalled_body_gets_a_408_and_the_connection_is_closed() {
    // No daemon is asked: the body is never complete.
    let p = ProxyProcess::start_with(&["--body-timeout", "2s"]);
    let mut s = TcpStream::connect(&p.addr).expect("connect to the proxy");
    s.set_read_timeout(Some(Duration::from_secs(20))).ok();
    let started = Instant::now();
    s.write_all(
        b"POST /containers/create HTTP/1.1\r\nHost: docker\r\nContent-Type: application/json\r\nContent-Length: 400\r\n\r\n{\"Image\":\"x\",",
    )
    .unwrap();
    // Then nothing: the proxy answers, and closes.
    let mut out = Vec::new();
    let read = s.read_to_end(&mut out);
    let waited = started.elapsed();
    let resp = String::from_utf8_lossy(&out);
    assert!(
        read.is_ok(),
        "the connection was not closed: {read:?} after {resp:?}"
    );
    assert!(resp.starts_with("HTTP/1.1 408"), "{resp}");
    assert!(resp.contains("rule: body read timeout"), "{resp}");
    assert!(
        waited >= Duration::from_millis(1900) && waited < Duration::from_secs(15),
        "answered after {waited:?}"
    );
    // The warn line may land just after the answer went out.
    let logged = (0..50).any(|_| {
        let found = p.log().contains("rule=\"body read timeout\"");
        if !found {
            std::thread::sleep(Duration::from_millis(100));
        }
        found
    });
    assert!(logged, "{}", p.log());
    // A bad duration is a usage error.
    let out = run_with_timeout(
        {
            let mut c = Command::new(env!("CARGO_BIN_EXE_firstmate"));
            c.args([
                "socket-proxy",
                "--listen",
                "127.0.0.1:0",
                "--body-timeout",
                "soon",
            ]);
            c
        },
        "",
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}

#[test]
fn the_engine_runs_a_session_through_the_proxy() {
    let Some(env) = Env::via_proxy("") else {
        return;
    };
    let out = env.console("new --agent scripted say hi\nrun echo $((6*7))\nstop\n");
    assert!(out.status.success(), "{}", text(&out));
    let all = stdout(&out);
    let ids = session_ids(&all);
    assert_eq!(ids.len(), 1, "{all}");
    let lines = lines_of(&all, &ids[0]);
    assert!(lines.iter().any(|l| l == "hi"), "no `hi` in:\n{all}");
    assert!(lines.iter().any(|l| l == "42"), "no `42` in:\n{all}");
    let log = env.proxy.as_ref().map(|p| p.log()).unwrap_or_default();
    assert!(
        !log.contains("denied:"),
        "the proxy refused something firstmate needs:\n{log}"
    );
}

#[test]
fn bad_arguments_exit_2_and_a_missing_daemon_is_a_502_that_says_where() {
    let exe = env!("CARGO_BIN_EXE_firstmate");
    for args in [
        ["socket-proxy", "--listen", "localhost"].as_slice(),
        &["socket-proxy", "--listen", "127.0.0.1:99999"],
        &[
            "socket-proxy",
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            "/var/run/docker.sock",
        ],
    ] {
        let out = run_with_timeout(
            {
                let mut c = Command::new(exe);
                c.args(args);
                c
            },
            "",
            Duration::from_secs(30),
        );
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("expected"),
            "{args:?} does not say what is expected: {}",
            text(&out)
        );
    }

    // A proxy whose daemon is not there answers 502, naming the socket.
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-docker.sock");
    let mut child = Command::new(exe)
        .args(["socket-proxy", "--listen", "127.0.0.1:0", "--upstream"])
        .arg(format!("unix://{}", missing.display()))
        .env("NO_COLOR", "1")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    let addr = loop {
        line.clear();
        assert!(err.read_line(&mut line).unwrap() > 0, "the proxy ended");
        if let Some((_, rest)) = line.split_once("listening on ") {
            break rest.split(',').next().unwrap().trim().to_string();
        }
    };
    let s = TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let r = raw(s, "GET", "/_ping", "application/json", b"");
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(r.status, 502, "{}", r.body);
    assert!(r.body.contains("no-docker.sock"), "{}", r.body);
}

#[test]
fn it_listens_on_a_unix_socket_too() {
    let Some(env) = Env::new("") else { return };
    let sock = env.path().join("proxy.sock");
    let mut child = Command::new(env!("CARGO_BIN_EXE_firstmate"))
        .args(["socket-proxy", "--listen"])
        .arg(format!("unix://{}", sock.display()))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let s = loop {
        if let Ok(s) = UnixStream::connect(&sock) {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the proxy did not listen on {sock:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let ping = raw(s, "GET", "/_ping", "application/json", b"");
    let s = UnixStream::connect(&sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let build = raw(s, "POST", "/build", "application/json", b"");
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!((ping.status, ping.body.as_str()), (200, "OK"));
    assert_eq!(build.status, 403, "{}", build.body);
}
