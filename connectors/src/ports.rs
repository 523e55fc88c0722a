//! Loopback ports that are free now, for a listener bound later by other code (rumqttd's own
//! listener, a test's server started with an explicit address).
//!
//! A port from the kernel's ephemeral range (what `bind(0)` returns) is the range every outgoing
//! connection and every other `bind(0)` on the machine draws from, so it can be taken between
//! the check and the later bind. These ports are picked at random below that range, where only
//! an explicit bind could take one.

use std::net::{SocketAddr, TcpListener};

/// The lowest port picked.
const LOWEST: u16 = 10_000;

/// A free loopback port below the ephemeral range, or `bind(0)`'s port where the range starts
/// too low to leave room.
pub fn loopback_port() -> std::io::Result<u16> {
    if let Some(ephemeral_low) = ephemeral_start().filter(|&l| l > LOWEST + 2_000) {
        for _ in 0..1_000 {
            let mut r = [0u8; 2];
            getrandom::fill(&mut r).map_err(std::io::Error::other)?;
            let port = LOWEST + u16::from_le_bytes(r) % (ephemeral_low - LOWEST);
            if TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).is_ok() {
                return Ok(port);
            }
        }
    }
    Ok(TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))?
        .local_addr()?
        .port())
}

/// The first port of the kernel's ephemeral range, where it can be read.
fn ephemeral_start() -> Option<u16> {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse::<u16>().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The port is free (it can be bound) and, where the range leaves room, below the
    /// ephemeral range; twenty draws are not all the same port.
    #[test]
    fn ports_are_free_and_below_the_ephemeral_range() {
        let low = ephemeral_start();
        let ports: Vec<u16> = (0..20).map(|_| loopback_port().unwrap()).collect();
        for &p in &ports {
            TcpListener::bind(("127.0.0.1", p)).unwrap();
            if let Some(low) = low.filter(|&l| l > LOWEST + 2_000) {
                assert!((LOWEST..low).contains(&p), "{p} not below {low}");
            }
        }
        let mut distinct = ports.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert!(distinct.len() > 1, "{ports:?}");
    }
}
