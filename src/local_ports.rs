//! Ports for the nodes of a local cluster when the user names none.
//!
//! A port the OS hands out for `bind(127.0.0.1:0)` lies in its ephemeral range, and
//! once a node listening there stops (to be reconfigured or restarted) the OS may give
//! it to any other socket: an outgoing connection, or another cluster's node, which then
//! answers at the restarting node's address. So ports are taken from just below the
//! ephemeral range, where the OS never hands out ports by itself. Invariant: while a
//! [`PortLease`] lives, no other lease (in this process or any other using the same
//! lock directory) holds its port, and the port was free to bind when it was taken.

use std::fs::{self, File};
use std::io;
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

/// Lowest port handed out.
const LOWEST: u16 = 20_000;

/// A port reserved for one node: an advisory lock on `<tmp>/libdynamo-ports/<port>.lock`
/// held until the lease is dropped (none for a port the OS picked).
#[derive(Debug)]
pub struct PortLease {
    port: u16,
    _lock: Option<File>,
}

impl PortLease {
    /// The reserved port.
    pub fn port(&self) -> u16 {
        self.port
    }
}

/// The first port of the OS's ephemeral range (`ip_local_port_range`), 32768 if it
/// cannot be read.
fn ephemeral_low() -> u16 {
    fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

/// Where the walk over the range starts: differs between processes and between calls,
/// so that concurrent allocators rarely probe the same ports.
fn start_offset(span: u32) -> u32 {
    static CALLS: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let mix = std::process::id()
        .wrapping_mul(2_654_435_761)
        .wrapping_add(nanos)
        .wrapping_add(CALLS.fetch_add(1, Ordering::Relaxed).wrapping_mul(64));
    mix % span
}

/// Reserves `count` ports on 127.0.0.1 that no running socket holds, from below the
/// ephemeral range. Falls back to ports the OS picks (held open together, then
/// released) when that range leaves fewer than 1,000 ports.
pub fn lease(count: usize) -> io::Result<Vec<PortLease>> {
    let high = ephemeral_low();
    if high < LOWEST + 1_000 {
        return os_picked(count);
    }
    let dir = std::env::temp_dir().join("libdynamo-ports");
    fs::create_dir_all(&dir)?;
    let span = u32::from(high - LOWEST);
    let start = start_offset(span);
    let mut leases = Vec::with_capacity(count);
    for step in 0..span {
        if leases.len() == count {
            break;
        }
        // The range is below `high` (a u16), so the port fits.
        let port = LOWEST + ((start + step) % span) as u16;
        if let Some(lease) = try_port(&dir, port)? {
            leases.push(lease);
        }
    }
    if leases.len() < count {
        return Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!(
                "only {} of {count} free ports between {LOWEST} and {high} on 127.0.0.1",
                leases.len()
            ),
        ));
    }
    Ok(leases)
}

fn try_port(dir: &std::path::Path, port: u16) -> io::Result<Option<PortLease>> {
    let path: PathBuf = dir.join(format!("{port}.lock"));
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)?;
    // flock(2), as Python's fcntl.flock takes it: the lock goes with the descriptor.
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => {}
        Err(e) if e == rustix::io::Errno::WOULDBLOCK => return Ok(None),
        Err(e) => {
            return Err(io::Error::new(
                io::Error::from(e).kind(),
                format!("locking {}: {e}", path.display()),
            ))
        }
    }
    // Locked, but a process that does not use the lock files may listen there.
    if TcpListener::bind(("127.0.0.1", port)).is_err() {
        return Ok(None);
    }
    Ok(Some(PortLease {
        port,
        _lock: Some(file),
    }))
}

/// Ports the OS picks, each distinct (all held open until every one is chosen).
fn os_picked(count: usize) -> io::Result<Vec<PortLease>> {
    let listeners = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<io::Result<Vec<_>>>()?;
    listeners
        .iter()
        .map(|l| {
            Ok(PortLease {
                port: l.local_addr()?.port(),
                _lock: None,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_are_distinct_free_and_below_the_ephemeral_range() {
        let a = lease(5).unwrap();
        let b = lease(5).unwrap();
        let mut ports: Vec<u16> = a.iter().chain(&b).map(PortLease::port).collect();
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), 10, "{ports:?}");
        if ephemeral_low() >= LOWEST + 1_000 {
            assert!(ports.iter().all(|p| (LOWEST..ephemeral_low()).contains(p)));
        }
        for p in &ports {
            TcpListener::bind(("127.0.0.1", *p)).expect("a leased port is free to bind");
        }
    }

    #[test]
    fn a_held_port_is_not_leased_again_until_dropped() {
        let dir = std::env::temp_dir().join("libdynamo-ports");
        let held = lease(1).unwrap().remove(0);
        assert!(try_port(&dir, held.port()).unwrap().is_none());
        let port = held.port();
        drop(held);
        assert!(try_port(&dir, port).unwrap().is_some());
    }

    #[test]
    fn a_port_something_listens_on_is_skipped() {
        let dir = std::env::temp_dir().join("libdynamo-ports");
        let probe = lease(1).unwrap().remove(0);
        let port = probe.port();
        drop(probe);
        let _listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        assert!(try_port(&dir, port).unwrap().is_none());
    }
}
