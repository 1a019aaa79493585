//! `firstmate gateway-relay`: the one process a worker can reach. It runs in a managed
//! container that sits on every session network (under the gateway's name) and on the
//! network where the gateway is, and forwards each TCP connection to the gateway. The
//! session networks have no route out and no address of the host, so a worker reaches
//! this relay and, through it, the gateway's port: nothing else (SPEC section 11).
//!
//! The target is resolved once, at start, before the relay joins any session network (on
//! those its own alias is the gateway's name); it then says `relay ready`.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tracing::{debug, warn};

/// The target naming the host as the relay's network sees it: its default route.
pub const HOST_GATEWAY: &str = "host-gateway";
/// Connections forwarded at once; more wait for one to close.
const MAX_CONNECTIONS: usize = 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("--to {0:?}: expected HOST:PORT or {HOST_GATEWAY}:PORT")]
    BadTarget(String),
    #[error("cannot resolve --to {to}: {detail}")]
    Resolve { to: String, detail: String },
    #[error("cannot listen on --listen {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// The default route's gateway in `/proc/net/route` (its fields are hex, little-endian).
pub fn default_gateway(route_table: &str) -> Option<Ipv4Addr> {
    route_table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 3 || f[1] != "00000000" {
            return None;
        }
        let g = u32::from_str_radix(f[2], 16).ok().filter(|g| *g != 0)?;
        Some(Ipv4Addr::from(g.swap_bytes()))
    })
}

/// Where `to` points now.
pub async fn resolve(to: &str) -> Result<SocketAddr, RelayError> {
    let (host, port) = to
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h, p.parse::<u16>().ok()?)))
        .filter(|(h, _)| !h.is_empty())
        .ok_or_else(|| RelayError::BadTarget(to.to_string()))?;
    let fail = |detail: String| RelayError::Resolve {
        to: to.to_string(),
        detail,
    };
    if host == HOST_GATEWAY {
        let table = std::fs::read_to_string("/proc/net/route")
            .map_err(|e| fail(format!("cannot read /proc/net/route: {e}")))?;
        let ip = default_gateway(&table).ok_or_else(|| fail("there is no default route".into()))?;
        return Ok(SocketAddr::from((ip, port)));
    }
    tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| fail(e.to_string()))?
        .next()
        .ok_or_else(|| fail("no address".into()))
}

/// Resolves the target, listens, says `relay ready`, and forwards until `shutdown`.
pub async fn run(
    listen: SocketAddr,
    to: &str,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), RelayError> {
    let target = resolve(to).await?;
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|source| RelayError::Bind {
            addr: listen,
            source,
        })?;
    println!("firstmate gateway-relay: relay ready: {listen} -> {target} ({to})");
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => p.expect("the semaphore is never closed"),
            _ = &mut shutdown => return Ok(()),
        };
        let (mut inbound, peer) = tokio::select! {
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    warn!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => return Ok(()),
        };
        tokio::spawn(async move {
            let _permit = permit;
            let outbound = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(target)).await;
            let mut outbound = match outbound {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => return warn!(%peer, "cannot reach the gateway at {target}: {e}"),
                Err(_) => return warn!(%peer, "the gateway at {target} did not answer within 10 s"),
            };
            let _ = inbound.set_nodelay(true);
            let _ = outbound.set_nodelay(true);
            match tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await {
                Ok((up, down)) => debug!(%peer, up, down, "closed"),
                Err(e) => debug!(%peer, "ended: {e}"),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_route_is_read_from_the_kernel_table() {
        let table = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
            eth0\t000012AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n\
            eth0\t00000000\t010011AC\t0003\t0\t0\t0\t00000000\t0\t0\t0\n";
        assert_eq!(default_gateway(table), Some(Ipv4Addr::new(172, 17, 0, 1)));
        let no_default = "Iface\tDestination\tGateway\n eth0\t000012AC\t00000000\n";
        assert_eq!(default_gateway(no_default), None);
        assert_eq!(default_gateway(""), None);
    }

    #[tokio::test]
    async fn targets_are_host_and_port() {
        for bad in ["", "gateway", ":80", "host:", "host:99999"] {
            assert!(
                matches!(resolve(bad).await, Err(RelayError::BadTarget(_))),
                "{bad}"
            );
        }
        assert_eq!(
            resolve("127.0.0.1:8787").await.unwrap(),
            "127.0.0.1:8787".parse().unwrap()
        );
    }

    #[tokio::test]
    async fn connections_are_forwarded_both_ways() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let upstream = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let to = upstream.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (mut s, _) = upstream.accept().await.unwrap();
            let mut buf = [0u8; 4];
            s.read_exact(&mut buf).await.unwrap();
            s.write_all(&buf.map(|b| b.to_ascii_uppercase()))
                .await
                .unwrap();
        });
        let probe = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let listen = probe.local_addr().unwrap();
        drop(probe);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let relay = tokio::spawn(async move {
            run(listen, &to, async {
                let _ = stopped.await;
            })
            .await
        });
        let mut c = loop {
            match TcpStream::connect(listen).await {
                Ok(c) => break c,
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        };
        c.write_all(b"ping").await.unwrap();
        let mut back = [0u8; 4];
        c.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"PING");
        let _ = stop.send(());
        relay.await.unwrap().unwrap();
    }
}
