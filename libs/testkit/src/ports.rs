//! Ports for servers whose address must be known before they start (a stack's services name
//! each other in their settings, a Redis Cluster's nodes announce theirs).
//!
//! "Bind port 0, read the port, release it" has two races, and CI met the first: the kernel
//! hands the same ephemeral range to *outgoing* connections, so any client connecting
//! anywhere in the meantime can take the port as its source port (`Address already in use`
//! when the server binds it); and a parallel test process can be given the same port after
//! it was released. So ports come from below the ephemeral range, where the kernel never
//! picks source ports, and each one is claimed with an exclusive lock file that this process
//! holds until it exits (the kernel drops the lock if it dies), so no other test process
//! using this module takes it.

use parking_lot::Mutex;
use std::fs::{File, OpenOptions};
use std::io;
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

/// Lowest port handed out; below it sit well-known and registered services.
const LOWEST: u16 = 20_000;

/// Locks of the ports this process claimed, held until it exits.
static CLAIMED: Mutex<Vec<File>> = Mutex::new(Vec::new());

/// A loopback port that is free now, outside the kernel's ephemeral range, and claimed by
/// this process for its lifetime. Falls back to a port from the ephemeral range (bind to 0)
/// only when that range leaves no room below it.
pub fn free_port() -> io::Result<u16> {
    let highest = ephemeral_low().saturating_sub(1);
    if highest <= LOWEST {
        return ephemeral_port();
    }
    let span = u32::from(highest - LOWEST) + 1;
    let dir = lock_dir()?;
    static CURSOR: AtomicU32 = AtomicU32::new(0);
    let seed = std::process::id().wrapping_mul(2_654_435_761)
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
    for _ in 0..span.min(4_096) {
        let step = CURSOR.fetch_add(1, Ordering::Relaxed);
        // Spread processes over the range (seed), then walk it (step).
        let offset = seed.wrapping_add(step.wrapping_mul(7_919)) % span;
        let Ok(offset) = u16::try_from(offset) else {
            continue;
        };
        let port = LOWEST + offset;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(port.to_string()))?;
        if lock.try_lock().is_err() {
            continue; // another test process holds it
        }
        if TcpListener::bind(("127.0.0.1", port)).is_err() {
            continue; // something else on the machine listens there
        }
        CLAIMED.lock().push(lock);
        return Ok(port);
    }
    Err(io::Error::new(
        io::ErrorKind::AddrInUse,
        format!("no free port between {LOWEST} and {highest}"),
    ))
}

fn ephemeral_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The low end of the kernel's range for source ports (Linux default 32768).
fn ephemeral_low() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

fn lock_dir() -> io::Result<PathBuf> {
    let dir = std::env::temp_dir().join("daisi-test-ports");
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct_bindable_and_below_the_ephemeral_range() {
        let ports: Vec<u16> = (0..50).map(|_| free_port().expect("a port")).collect();
        let mut unique = ports.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), ports.len(), "a port was handed out twice");
        let low = ephemeral_low();
        for port in ports {
            if low > LOWEST {
                assert!(
                    (LOWEST..low).contains(&port),
                    "{port} is in the ephemeral range"
                );
            }
            TcpListener::bind(("127.0.0.1", port)).expect("the port is free to bind");
        }
    }

    #[test]
    fn a_claimed_port_is_locked_against_other_processes() {
        // flock conflicts between open files even in one process: this open stands for another
        // test process trying to claim the same port.
        let port = free_port().expect("a port");
        let other = OpenOptions::new()
            .write(true)
            .open(lock_dir().expect("dir").join(port.to_string()))
            .expect("open");
        assert!(other.try_lock().is_err(), "the claim is not held");
    }
}
