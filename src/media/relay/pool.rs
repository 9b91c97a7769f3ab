//! The RTP/RTCP port pool: even port for RTP, the next odd one for RTCP
//! (RFC 3550 11), both bound when handed out and returned on drop.

use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex, MutexGuard};

#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("invalid media port range {port_min}-{port_max}: it must hold at least one even/odd pair above port 0")]
    InvalidRange { port_min: u16, port_max: u16 },
    #[error("no free RTP/RTCP port pair left in {port_min}-{port_max}")]
    Exhausted { port_min: u16, port_max: u16 },
    #[error("cannot bind media port {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
}

/// A range of RTP/RTCP port pairs on one local address. Cheap to clone;
/// clones share the same pairs. Safe to use from any thread.
#[derive(Debug, Clone)]
pub struct PortPool {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    ip: IpAddr,
    port_min: u16,
    port_max: u16,
    // The first (even) RTP port; pair i is first + 2i and first + 2i + 1.
    first: u16,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    in_use: Vec<bool>,
    // Round-robin start, so a just-freed pair is not reused at once (late
    // packets from the previous call would land in the next one).
    next: usize,
    count: usize,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere while holding the lock leaves a valid Vec<bool>.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn rtp_port(&self, index: usize) -> u16 {
        // In range by construction: index < pairs.
        (u32::from(self.first) + 2 * index as u32) as u16
    }
}

impl PortPool {
    /// A pool of the pairs (even, even + 1) that fit in `port_min..=port_max`
    /// on `ip`. Nothing is bound until `allocate`.
    pub fn new(ip: IpAddr, port_min: u16, port_max: u16) -> Result<PortPool, PoolError> {
        let first = u32::from(port_min) + u32::from(port_min) % 2;
        let max = u32::from(port_max);
        if port_min == 0 || first + 1 > max {
            return Err(PoolError::InvalidRange { port_min, port_max });
        }
        let pairs = ((max - first - 1) / 2 + 1) as usize;
        Ok(PortPool {
            inner: Arc::new(Inner {
                ip,
                port_min,
                port_max,
                first: first as u16,
                state: Mutex::new(State {
                    in_use: vec![false; pairs],
                    next: 0,
                    count: 0,
                }),
            }),
        })
    }

    /// Bind the next free pair. Pairs some other process holds are skipped.
    /// `Exhausted` means every pair is taken (the call gets 503).
    pub fn allocate(&self) -> Result<PortPair, PoolError> {
        let pairs = self.capacity();
        for _ in 0..pairs {
            let Some(lease) = self.reserve() else { break };
            match bind_pair(self.inner.ip, lease.rtp_port) {
                Ok((rtp, rtcp)) => return Ok(PortPair { rtp, rtcp, lease }),
                Err((_, e)) if e.kind() == io::ErrorKind::AddrInUse => {
                    tracing::debug!(
                        port = lease.rtp_port,
                        "media port pair in use elsewhere, skipped"
                    );
                }
                Err((addr, source)) => return Err(PoolError::Bind { addr, source }),
            }
        }
        let (port_min, port_max) = (self.inner.port_min, self.inner.port_max);
        tracing::warn!(port_min, port_max, "media port pool exhausted");
        Err(PoolError::Exhausted { port_min, port_max })
    }

    // Mark the next free pair as ours; the lease frees it again on drop.
    fn reserve(&self) -> Option<PortLease> {
        let mut state = self.inner.lock();
        let pairs = state.in_use.len();
        let index = (0..pairs)
            .map(|i| (state.next + i) % pairs)
            .find(|&i| !state.in_use[i])?;
        state.in_use[index] = true;
        state.count += 1;
        state.next = (index + 1) % pairs;
        Some(PortLease {
            pool: Arc::clone(&self.inner),
            index,
            rtp_port: self.inner.rtp_port(index),
        })
    }

    /// How many pairs the range holds.
    pub fn capacity(&self) -> usize {
        self.inner.lock().in_use.len()
    }

    /// How many pairs are handed out (or being bound) now.
    pub fn in_use(&self) -> usize {
        self.inner.lock().count
    }

    pub fn ip(&self) -> IpAddr {
        self.inner.ip
    }
}

type BindFailure = (SocketAddr, io::Error);

fn bind_pair(ip: IpAddr, rtp_port: u16) -> Result<(UdpSocket, UdpSocket), BindFailure> {
    let rtp = bind(SocketAddr::new(ip, rtp_port))?;
    let rtcp = bind(SocketAddr::new(ip, rtp_port + 1))?;
    Ok((rtp, rtcp))
}

fn bind(addr: SocketAddr) -> Result<UdpSocket, BindFailure> {
    let socket = UdpSocket::bind(addr).map_err(|e| (addr, e))?;
    // Required before the sockets are handed to tokio.
    socket.set_nonblocking(true).map_err(|e| (addr, e))?;
    Ok(socket)
}

/// Returns its pair to the pool when dropped.
#[derive(Debug)]
pub(crate) struct PortLease {
    pool: Arc<Inner>,
    index: usize,
    rtp_port: u16,
}

impl Drop for PortLease {
    fn drop(&mut self) {
        let mut state = self.pool.lock();
        if let Some(slot) = state.in_use.get_mut(self.index) {
            if *slot {
                *slot = false;
                state.count -= 1;
            }
        }
    }
}

/// One bound RTP/RTCP pair: the ports handoff offers to one side in its SDP.
/// Dropping it closes both sockets and returns the ports to the pool.
#[derive(Debug)]
pub struct PortPair {
    // Field order is drop order: sockets close before the lease frees the ports.
    rtp: UdpSocket,
    rtcp: UdpSocket,
    lease: PortLease,
}

impl PortPair {
    pub fn ip(&self) -> IpAddr {
        self.lease.pool.ip
    }

    pub fn rtp_port(&self) -> u16 {
        self.lease.rtp_port
    }

    pub fn rtcp_port(&self) -> u16 {
        self.lease.rtp_port + 1
    }

    pub fn rtp_addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip(), self.rtp_port())
    }

    pub fn rtcp_addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip(), self.rtcp_port())
    }

    pub(crate) fn into_parts(self) -> (UdpSocket, UdpSocket, PortLease) {
        (self.rtp, self.rtcp, self.lease)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    // Four consecutive free ports (two pairs), so the test owns the range.
    fn free_range_of_two_pairs(start: u16) -> (u16, u16) {
        for base in (start..start + 2000).step_by(4) {
            let probes: Vec<_> = (base..base + 4)
                .map(|p| UdpSocket::bind((LOCALHOST, p)))
                .collect();
            if probes.iter().all(Result::is_ok) {
                return (base, base + 3);
            }
        }
        panic!("no free port range on loopback for the test");
    }

    #[test]
    fn range_is_split_into_even_odd_pairs() {
        let pool = PortPool::new(LOCALHOST, 41001, 41010).expect("valid range");
        // 41002/3, 41004/5, 41006/7, 41008/9; 41010 has no partner.
        assert_eq!(pool.capacity(), 4);
        assert!(matches!(
            PortPool::new(LOCALHOST, 41001, 41002),
            Err(PoolError::InvalidRange { .. })
        ));
        assert!(matches!(
            PortPool::new(LOCALHOST, 0, 100),
            Err(PoolError::InvalidRange { .. })
        ));
        assert_eq!(
            PortPool::new(LOCALHOST, 65534, 65535)
                .expect("top pair")
                .capacity(),
            1
        );
    }

    #[test]
    fn pair_is_even_rtp_then_odd_rtcp_and_bound() {
        let pool = PortPool::new(LOCALHOST, 42000, 42199).expect("valid range");
        let pair = pool.allocate().expect("a free pair");
        assert_eq!(pair.rtp_port() % 2, 0);
        assert_eq!(pair.rtcp_port(), pair.rtp_port() + 1);
        assert!(
            UdpSocket::bind(pair.rtp_addr()).is_err(),
            "RTP port is held"
        );
        assert!(
            UdpSocket::bind(pair.rtcp_addr()).is_err(),
            "RTCP port is held"
        );
    }

    #[test]
    fn exhausted_pool_recovers_when_a_pair_is_dropped() {
        let (min, max) = free_range_of_two_pairs(46000);
        let pool = PortPool::new(LOCALHOST, min, max).expect("valid range");
        let first = pool.allocate().expect("pair 1");
        let _second = pool.allocate().expect("pair 2");
        assert!(matches!(pool.allocate(), Err(PoolError::Exhausted { .. })));
        assert_eq!(pool.in_use(), 2);
        let freed = first.rtp_port();
        drop(first);
        assert_eq!(pool.in_use(), 1);
        let again = pool.allocate().expect("freed pair is available again");
        assert_eq!(again.rtp_port(), freed);
    }

    #[test]
    fn pairs_held_by_another_process_are_skipped() {
        let (min, max) = free_range_of_two_pairs(48000);
        let _squatter = UdpSocket::bind((LOCALHOST, min + 1)).expect("bind RTCP port of pair 1");
        let pool = PortPool::new(LOCALHOST, min, max).expect("valid range");
        let pair = pool.allocate().expect("pair 2 is free");
        assert_eq!(pair.rtp_port(), min + 2);
        assert!(matches!(pool.allocate(), Err(PoolError::Exhausted { .. })));
    }

    #[test]
    fn non_local_address_is_a_bind_error() {
        let pool = PortPool::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 42200, 42210)
            .expect("valid range");
        assert!(matches!(pool.allocate(), Err(PoolError::Bind { .. })));
        assert_eq!(pool.in_use(), 0);
    }
}
