//! Egress for a namespaced job whose policy allows destinations (`runner.network`): one
//! forwarder per allowed destination, listening *inside* the job's network namespace and
//! connecting from the gateway's.
//!
//! A namespaced job has its own network namespace with nothing but a loopback interface, so
//! it can reach nothing. For each allowed `host:port` the runner opens a listening socket on
//! the same loopback address and port inside that namespace (a thread of the gateway enters
//! the namespace with `setns`, binds, and ends; the socket stays where it was made), and
//! forwards every connection accepted there to the destination, from the host. The job then
//! reaches exactly the allowed destinations, at the addresses it was told (a kubeconfig's
//! `https://127.0.0.1:6443` works unchanged, TLS end to end), and nothing else: there is no
//! route, no DNS, no other port. The forwarders end with the job.
//!
//! Only loopback destinations can be mirrored this way (`127.0.0.0/8`, `::1`, `localhost`):
//! another address would have to be configured inside the namespace and routed, which the
//! runner does not do; such an allowlist is refused (fail closed), naming the destination.
//! Entering a job's namespace needs `CAP_SYS_ADMIN` over it, which the gateway has: namespaced
//! jobs already need it to run as root.

use rustix::thread::{LinkNameSpaceType, move_into_link_name_space};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener as StdListener};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// How long the sandbox may take to bring its loopback interface up.
const LOOPBACK_WAIT: Duration = Duration::from_secs(5);

/// Connections one forwarder carries at once; more wait in the listener's backlog.
const MAX_CONNECTIONS: usize = 64;

/// The loopback destinations of an allowlist, or why one cannot be enforced here.
pub(crate) fn loopback_destinations(destinations: &[String]) -> Result<Vec<SocketAddr>, String> {
    if destinations.is_empty() {
        return Err("a network allowlist with no destination".into());
    }
    destinations
        .iter()
        .map(|d| loopback_destination(d))
        .collect()
}

fn loopback_destination(destination: &str) -> Result<SocketAddr, String> {
    let refuse = |why: &str| {
        Err(format!(
            "network destination {destination:?}: {why}; the local runner forwards only \
             loopback host:port destinations (127.0.0.0/8, [::1], localhost): use a container \
             or Kubernetes runner for others"
        ))
    };
    let addr = match destination.strip_prefix("localhost:") {
        Some(port) => match port.parse::<u16>() {
            Ok(port) => SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port),
            Err(_) => return refuse("not a port"),
        },
        None => match destination.parse::<SocketAddr>() {
            Ok(addr) => addr,
            Err(_) => return refuse("not host:port"),
        },
    };
    if !addr.ip().is_loopback() {
        return refuse("not a loopback address");
    }
    if addr.port() == 0 {
        return refuse("port 0");
    }
    Ok(addr)
}

/// The running forwarders of one job; dropping it closes them and every connection.
#[derive(Debug)]
pub(crate) struct Egress {
    forwarders: Vec<JoinHandle<()>>,
}

impl Drop for Egress {
    fn drop(&mut self) {
        for f in &self.forwarders {
            f.abort();
        }
    }
}

/// Opens the forwarders of `destinations` inside the network namespace of the sandbox whose
/// launch chain is process `chain_pid` (bubblewrap, whose first child is in the namespace).
pub(crate) async fn open(chain_pid: u32, destinations: &[SocketAddr]) -> Result<Egress, String> {
    let destinations = destinations.to_vec();
    let listeners = tokio::task::spawn_blocking(move || bind_inside(chain_pid, &destinations))
        .await
        .map_err(|e| format!("the egress thread failed: {e}"))??;
    let mut forwarders = Vec::with_capacity(listeners.len());
    for (listener, destination) in listeners {
        let listener = TcpListener::from_std(listener)
            .map_err(|e| format!("cannot watch the egress socket for {destination}: {e}"))?;
        forwarders.push(tokio::spawn(forward(listener, destination)));
    }
    Ok(Egress { forwarders })
}

/// Binds one listener per destination, same address and port, inside the sandbox's network
/// namespace, from a thread of its own (which ends there: it never returns to the gateway's
/// namespace, so nothing else ever runs in the job's).
fn bind_inside(
    chain_pid: u32,
    destinations: &[SocketAddr],
) -> Result<Vec<(StdListener, SocketAddr)>, String> {
    let netns = namespace_of_child(chain_pid)?;
    let destinations = destinations.to_vec();
    std::thread::Builder::new()
        .name("agw-egress".into())
        .spawn(move || {
            move_into_link_name_space(
                std::os::fd::AsFd::as_fd(&netns),
                Some(LinkNameSpaceType::Network),
            )
            .map_err(|e| format!("cannot enter the job's network namespace: {e}"))?;
            destinations
                .iter()
                .map(|d| bind_when_up(*d).map(|l| (l, *d)))
                .collect()
        })
        .map_err(|e| format!("cannot start the egress thread: {e}"))?
        .join()
        .map_err(|_| "the egress thread panicked".to_string())?
}

/// The network namespace of the first child of `pid` (bubblewrap's sandboxed child), waiting
/// for it to exist.
fn namespace_of_child(pid: u32) -> Result<std::fs::File, String> {
    let deadline = Instant::now() + LOOPBACK_WAIT;
    let children = format!("/proc/{pid}/task/{pid}/children");
    loop {
        let listed = std::fs::read_to_string(&children)
            .map_err(|e| format!("cannot read {children}: {e}"))?;
        if let Some(child) = listed.split_whitespace().next() {
            let path = format!("/proc/{child}/ns/net");
            return std::fs::File::open(&path).map_err(|e| format!("cannot open {path}: {e}"));
        }
        if Instant::now() >= deadline {
            return Err("the sandbox did not start its namespaces in time".into());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Binds `addr`, retrying while the address does not exist yet (bubblewrap brings the
/// loopback interface up after creating the namespace).
fn bind_when_up(addr: SocketAddr) -> Result<StdListener, String> {
    let deadline = Instant::now() + LOOPBACK_WAIT;
    loop {
        match StdListener::bind(addr) {
            Ok(listener) => {
                listener
                    .set_nonblocking(true)
                    .map_err(|e| format!("cannot make the egress socket non-blocking: {e}"))?;
                return Ok(listener);
            }
            Err(e)
                if e.kind() == std::io::ErrorKind::AddrNotAvailable
                    && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => return Err(format!("cannot listen on {addr} inside the sandbox: {e}")),
        }
    }
}

/// Accepts connections inside the job's namespace and carries each to `destination`.
async fn forward(listener: TcpListener, destination: SocketAddr) {
    let mut connections = JoinSet::new();
    loop {
        while connections.len() >= MAX_CONNECTIONS {
            connections.join_next().await;
        }
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let Ok((mut inside, _)) = accepted else {
            // The namespace is gone (the job ended) or the socket failed: nothing more to do.
            return;
        };
        connections.spawn(async move {
            match TcpStream::connect(destination).await {
                Ok(mut outside) => {
                    let _ = tokio::io::copy_bidirectional(&mut inside, &mut outside).await;
                }
                Err(e) => {
                    tracing::debug!(%destination, error = %e, "local runner: egress connection refused");
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_destinations_are_mirrored() {
        let ok = loopback_destinations(&[
            "127.0.0.1:6443".into(),
            "localhost:5432".into(),
            "[::1]:80".into(),
            "127.8.9.10:1".into(),
        ])
        .unwrap();
        assert_eq!(ok[1], "127.0.0.1:5432".parse().unwrap());
        for bad in [
            "10.0.0.1:443",
            "example.com:443",
            "127.0.0.1",
            "127.0.0.1:0",
            "localhost:x",
            "10.0.0.0/8",
            "",
        ] {
            let err = loopback_destinations(&[bad.into()]).unwrap_err();
            assert!(err.contains("loopback"), "{bad}: {err}");
        }
        assert!(loopback_destinations(&[]).is_err());
    }
}
