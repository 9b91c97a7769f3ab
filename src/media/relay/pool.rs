//! The RTP/RTCP port pool: even port for RTP, the next odd one for RTCP
//! (RFC 3550 11), both bound when handed out and returned on drop.
//!
//! Pairs are taken at random from the free set (a shuffled free list: O(1)
//! to take and to give back), so the next call's ports cannot be guessed from
//! this one's: a call on 25100 says nothing of where the next one is (issue
//! 12; sequential pairs let an attacker aim RTP at a call not yet set up).
//!
//! Creating and binding two sockets costs tens of microseconds of system
//! time, on the path of every call set-up and of every transfer INVITE. With
//! `keep_spares` the pool keeps a few pairs bound ahead of need, refilled by
//! a thread of its own, and `allocate` hands one of those out.

use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard, Weak};

use rand::Rng;

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
    // Pairs bound ahead of need, oldest first; marked in use, no lease (a
    // lease holds the pool: the pool holding leases would never be freed).
    spares: Mutex<VecDeque<Spare>>,
    spare_target: AtomicUsize,
    // Held by the refill thread from reserving a pair until it is a spare, so
    // a pair being bound is never out of sight of an `allocate` that found none.
    binding: Mutex<()>,
    // Wakes the refill thread; it exits when this goes with the pool.
    refill: Mutex<Option<mpsc::Sender<()>>>,
}

#[derive(Debug)]
struct Spare {
    rtp: UdpSocket,
    rtcp: UdpSocket,
    index: usize,
}

#[derive(Debug)]
struct State {
    in_use: Vec<bool>,
    // The indices with `in_use` false, in no particular order; a pair is
    // taken from a random position. A just-freed pair is as likely as any
    // other to be next, one in `free.len()`.
    free: Vec<usize>,
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

    // Mark a free pair, chosen at random, as ours, if more than `keep_free`
    // pairs are free.
    fn reserve_index(&self, keep_free: usize) -> Option<usize> {
        let mut state = self.lock();
        if state.free.len() <= keep_free {
            return None;
        }
        let at = rand::thread_rng().gen_range(0..state.free.len());
        let index = state.free.swap_remove(at);
        state.in_use[index] = true;
        state.count += 1;
        Some(index)
    }

    fn release_index(&self, index: usize) {
        let mut state = self.lock();
        if let Some(slot) = state.in_use.get_mut(index) {
            if *slot {
                *slot = false;
                state.count -= 1;
                state.free.push(index);
            }
        }
    }

    fn spares(&self) -> MutexGuard<'_, VecDeque<Spare>> {
        self.spares.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn kick_refill(&self) {
        let refill = self.refill.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tx) = refill.as_ref() {
            let _ = tx.send(());
        }
    }

    // Bind pairs until the spares are back at their target, the pool is
    // nearly full, or binding fails for another reason than a port in use.
    // Spares come only out of plenty: with `target` or fewer pairs free a
    // spare being bound could make `allocate` find none, so then there are none.
    fn refill_spares(&self) {
        let mut skipped = 0;
        let target = self.spare_target.load(Ordering::Relaxed);
        while self.spares().len() < target {
            let _binding = self.binding.lock().unwrap_or_else(|e| e.into_inner());
            let Some(index) = self.reserve_index(target) else {
                return;
            };
            match bind_pair(self.ip, self.rtp_port(index)) {
                Ok((rtp, rtcp)) => self.spares().push_back(Spare { rtp, rtcp, index }),
                Err((_, e)) => {
                    self.release_index(index);
                    skipped += 1;
                    if e.kind() != io::ErrorKind::AddrInUse || skipped >= self.lock().in_use.len() {
                        return;
                    }
                }
            }
        }
    }
}

/// Drop whatever reached a spare's sockets while it waited (a late packet of
/// an earlier call on these ports), so the relay does not latch onto it.
fn drain(socket: &UdpSocket) {
    let mut buf = [0u8; 2048];
    while socket.recv_from(&mut buf).is_ok() {}
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
                    free: (0..pairs).collect(),
                    count: 0,
                }),
                spares: Mutex::new(VecDeque::new()),
                spare_target: AtomicUsize::new(0),
                binding: Mutex::new(()),
                refill: Mutex::new(None),
            }),
        })
    }

    /// Keep up to `n` pairs bound ahead of need, so `allocate` does not bind
    /// on the caller's path. A thread ("media-port-refill") tops them up when
    /// half are gone, and only while more than `n` pairs are free; it ends
    /// with the pool. Spares count as free in `in_use`; they are handed out
    /// before any other pair.
    pub fn keep_spares(&self, n: usize) -> io::Result<()> {
        self.inner.spare_target.store(n, Ordering::Relaxed);
        let mut refill = self.inner.refill.lock().unwrap_or_else(|e| e.into_inner());
        if refill.is_none() && n > 0 {
            let (tx, rx) = mpsc::channel::<()>();
            let pool: Weak<Inner> = Arc::downgrade(&self.inner);
            std::thread::Builder::new()
                .name("media-port-refill".into())
                .spawn(move || {
                    while rx.recv().is_ok() {
                        // Coalesce the wake-ups that queued up meanwhile.
                        while rx.try_recv().is_ok() {}
                        let Some(inner) = pool.upgrade() else { break };
                        inner.refill_spares();
                    }
                })?;
            *refill = Some(tx);
        }
        drop(refill);
        self.inner.kick_refill();
        Ok(())
    }

    // A spare pair, if one is bound; asks for more when half are gone.
    fn take_spare(&self) -> Option<PortPair> {
        let target = self.inner.spare_target.load(Ordering::Relaxed);
        if target == 0 {
            return None;
        }
        let (spare, left) = {
            let mut spares = self.inner.spares();
            let spare = spares.pop_front();
            (spare, spares.len())
        };
        if left * 2 < target {
            self.inner.kick_refill();
        }
        let Spare { rtp, rtcp, index } = spare?;
        drain(&rtp);
        drain(&rtcp);
        Some(PortPair {
            rtp,
            rtcp,
            lease: PortLease {
                pool: Arc::clone(&self.inner),
                index,
                rtp_port: self.inner.rtp_port(index),
            },
        })
    }

    /// Bind a free pair, chosen at random. Pairs some other process holds
    /// are skipped. `Exhausted` means every pair is taken (the call gets 503).
    pub fn allocate(&self) -> Result<PortPair, PoolError> {
        if let Some(pair) = self.take_spare() {
            return Ok(pair);
        }
        // Pairs found in use elsewhere stay reserved until this allocation
        // ends, so the random choice does not come back to them; each try
        // takes a new pair, so this ends.
        let mut skipped = Vec::new();
        while let Some(lease) = self.reserve() {
            match bind_pair(self.inner.ip, lease.rtp_port) {
                Ok((rtp, rtcp)) => return Ok(PortPair { rtp, rtcp, lease }),
                Err((_, e)) if e.kind() == io::ErrorKind::AddrInUse => {
                    tracing::debug!(
                        port = lease.rtp_port,
                        "media port pair in use elsewhere, skipped"
                    );
                    skipped.push(lease);
                }
                Err((addr, source)) => return Err(PoolError::Bind { addr, source }),
            }
        }
        drop(skipped);
        // The last free pair may have been on its way to being a spare.
        drop(self.inner.binding.lock().unwrap_or_else(|e| e.into_inner()));
        if let Some(pair) = self.take_spare() {
            return Ok(pair);
        }
        let (port_min, port_max) = (self.inner.port_min, self.inner.port_max);
        tracing::warn!(port_min, port_max, "media port pool exhausted");
        Err(PoolError::Exhausted { port_min, port_max })
    }

    // Mark a random free pair as ours; the lease frees it again on drop.
    fn reserve(&self) -> Option<PortLease> {
        let index = self.inner.reserve_index(0)?;
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

    /// How many pairs are handed out (or being bound) now; spares not included.
    pub fn in_use(&self) -> usize {
        let spares = self.inner.spares().len();
        self.inner.lock().count.saturating_sub(spares)
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
        self.pool.release_index(self.index);
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
    fn pairs_are_taken_at_random_not_in_sequence() {
        // 500 pairs; 40 taken one after another.
        let pool = PortPool::new(LOCALHOST, 47000, 47999).expect("valid range");
        let held: Vec<PortPair> = (0..40)
            .map(|i| pool.allocate().unwrap_or_else(|e| panic!("pair {i}: {e}")))
            .collect();
        let ports: Vec<u16> = held.iter().map(PortPair::rtp_port).collect();
        // Sequential allocation made every step +2 (one pair on): the next
        // call's ports were this one's + 4. Random picks almost never are.
        let next_pair_steps = ports.windows(2).filter(|w| w[1] == w[0] + 2).count();
        assert!(
            next_pair_steps < 5,
            "{next_pair_steps} of 39 steps to the next pair: {ports:?}"
        );
        let mut sorted = ports.clone();
        sorted.sort_unstable();
        assert_ne!(sorted, ports, "not handed out in ascending order");
        sorted.dedup();
        assert_eq!(sorted.len(), ports.len(), "no pair handed out twice");
        assert!(ports
            .iter()
            .all(|p| (47000..=47998).contains(p) && p % 2 == 0));
        // Two pools from scratch do not start at the same pair.
        let firsts: std::collections::HashSet<u16> = (0..8)
            .map(|_| {
                let p = PortPool::new(LOCALHOST, 47000, 47999).expect("valid range");
                p.inner.reserve_index(0).map_or(0, |i| p.inner.rtp_port(i))
            })
            .collect();
        assert!(firsts.len() > 1, "the first pair is not fixed: {firsts:?}");
    }

    #[test]
    fn every_pair_of_a_range_is_handed_out_once_then_the_pool_is_exhausted() {
        // Indices only (no sockets): the free list covers the whole range.
        let pool = PortPool::new(LOCALHOST, 20000, 20199).expect("valid range");
        let mut seen = vec![false; pool.capacity()];
        while let Some(i) = pool.inner.reserve_index(0) {
            assert!(!std::mem::replace(&mut seen[i], true), "pair {i} twice");
        }
        assert!(seen.iter().all(|s| *s), "every pair handed out");
        assert_eq!(pool.in_use(), 100);
        pool.inner.release_index(7);
        pool.inner.release_index(7);
        assert_eq!(pool.in_use(), 99, "a double release frees once");
        assert_eq!(pool.inner.reserve_index(0), Some(7), "the freed pair");
        assert_eq!(pool.inner.reserve_index(0), None);
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
        assert_eq!(pool.in_use(), 1, "the squatted pair was given back");
        // Whichever pair the random choice tries first, the free one is found.
        drop(pair);
        for _ in 0..8 {
            assert_eq!(pool.allocate().expect("pair 2").rtp_port(), min + 2);
        }
    }

    // Spares are bound on another thread: wait for them (bounded).
    fn wait_for_spares(pool: &PortPool, n: usize) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while pool.inner.spares().len() < n {
            assert!(
                std::time::Instant::now() < deadline,
                "only {} of {n} spare pairs bound",
                pool.inner.spares().len()
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    #[test]
    fn spares_are_bound_ahead_handed_out_first_and_refilled() {
        let pool = PortPool::new(LOCALHOST, 43000, 43199).expect("valid range");
        pool.keep_spares(4).expect("refill thread");
        wait_for_spares(&pool, 4);
        assert_eq!(pool.in_use(), 0, "spares are not in use");
        let first_spare = pool.inner.spares()[0].index;
        let pair = pool.allocate().expect("a spare");
        assert_eq!(pair.rtp_port(), pool.inner.rtp_port(first_spare));
        assert!(
            UdpSocket::bind(pair.rtp_addr()).is_err(),
            "RTP port is held"
        );
        assert_eq!(pool.in_use(), 1);
        // Three left is not below half of four: no refill yet. Two more go,
        // then it refills to four.
        let _a = pool.allocate().expect("a spare");
        let _b = pool.allocate().expect("a spare");
        wait_for_spares(&pool, 4);
        assert_eq!(pool.in_use(), 3);
        drop(pair);
        assert_eq!(pool.in_use(), 2);
    }

    #[test]
    fn a_nearly_full_pool_binds_no_spares() {
        // Two pairs, eight spares wanted: no spare, so a pair freed while the
        // refill thread runs is never out of reach of `allocate`.
        let (min, max) = free_range_of_two_pairs(44000);
        let pool = PortPool::new(LOCALHOST, min, max).expect("valid range");
        pool.keep_spares(8).expect("refill thread");
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(pool.inner.spares().is_empty());
        let first = pool.allocate().expect("pair 1");
        let _second = pool.allocate().expect("pair 2");
        assert!(matches!(pool.allocate(), Err(PoolError::Exhausted { .. })));
        drop(first);
        pool.allocate().expect("the freed pair");
        // Ten pairs, four spares: spares while more than four are free.
        let pool = PortPool::new(LOCALHOST, 44100, 44119).expect("valid range");
        pool.keep_spares(4).expect("refill thread");
        wait_for_spares(&pool, 4);
        let held: Vec<_> = (0..10)
            .map(|i| pool.allocate().unwrap_or_else(|e| panic!("pair {i}: {e}")))
            .collect();
        assert!(matches!(pool.allocate(), Err(PoolError::Exhausted { .. })));
        assert_eq!(held.len(), 10);
    }

    #[test]
    fn a_spare_is_handed_out_without_what_reached_it_while_it_waited() {
        let pool = PortPool::new(LOCALHOST, 45000, 45199).expect("valid range");
        pool.keep_spares(1).expect("refill thread");
        wait_for_spares(&pool, 1);
        let port = pool.inner.rtp_port(pool.inner.spares()[0].index);
        let stray = UdpSocket::bind((LOCALHOST, 0)).expect("bind");
        stray.send_to(b"late rtp", (LOCALHOST, port)).expect("send");
        std::thread::sleep(std::time::Duration::from_millis(20));
        let pair = pool.allocate().expect("the spare");
        assert_eq!(pair.rtp_port(), port);
        let (rtp, _, _) = pair.into_parts();
        let mut buf = [0u8; 64];
        assert!(
            rtp.recv_from(&mut buf).is_err(),
            "the stray datagram was dropped"
        );
    }

    #[test]
    fn non_local_address_is_a_bind_error() {
        let pool = PortPool::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 42200, 42210)
            .expect("valid range");
        assert!(matches!(pool.allocate(), Err(PoolError::Bind { .. })));
        assert_eq!(pool.in_use(), 0);
    }
}
