//! The RTP side of the load: a few sockets per side shared by all calls,
//! every stream paced on one global schedule, batched sends (`sendmmsg`),
//! batched receives (`recvmmsg`) with the kernel's receive timestamp
//! (`SO_TIMESTAMPNS`), so the latency measured does not depend on when this
//! single-threaded loop gets round to reading.
//!
//! Stream `s` is call `s / 2`, direction `s % 2`: 0 is caller to far (sent
//! from the caller-side socket of the call, received on its far-side one),
//! 1 the reverse. Packets are G.711 sized: a 12-byte RTP header (PT 0, SSRC
//! naming the stream) and 160 bytes of payload whose first 8 bytes are the
//! send time (CLOCK_REALTIME, ns), the clock `SO_TIMESTAMPNS` uses.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

pub const PAYLOAD: usize = 160;
pub const PACKET: usize = 12 + PAYLOAD;
/// 50 packets/s per stream: one every 20 ms (ptime 20 at 8 kHz).
pub const PERIOD: Duration = Duration::from_millis(20);
const SSRC_BASE: u32 = 0x5100_0000;
const BATCH: usize = 64;
const RECV_BUF: usize = 2048;
const CMSG_BUF: usize = 64;
const SOCKET_BUFFER: libc::c_int = 32 << 20;
// Behind schedule by more than this (the loop did not get the CPU), the
// schedule moves on instead of sending the backlog in one burst.
const STALL: Duration = Duration::from_millis(20);

/// Where one call's two ends send. The relay answers from the same ports
/// (symmetric RTP), so these are also where each end's packets come from.
#[derive(Debug, Clone, Copy)]
pub struct CallPath {
    /// The relay's port facing the caller: where the caller end sends.
    pub caller_dst: SocketAddr,
    /// The relay's port facing the far end (the AI agent).
    pub far_dst: SocketAddr,
}

/// The load generator's sockets: `caller[c % k]` and `far[c % k]` are call
/// `c`'s two ends.
pub struct Endpoints {
    pub caller: Vec<UdpSocket>,
    pub far: Vec<UdpSocket>,
}

impl Endpoints {
    pub fn bind(per_side: usize) -> io::Result<Endpoints> {
        let open = || -> io::Result<UdpSocket> {
            let s = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
            let fd = s.as_raw_fd();
            // Root may exceed rmem_max; otherwise take what the kernel allows.
            if setsockopt_int(fd, libc::SO_RCVBUFFORCE, SOCKET_BUFFER).is_err() {
                setsockopt_int(fd, libc::SO_RCVBUF, SOCKET_BUFFER)?;
            }
            if setsockopt_int(fd, libc::SO_SNDBUFFORCE, SOCKET_BUFFER).is_err() {
                setsockopt_int(fd, libc::SO_SNDBUF, SOCKET_BUFFER)?;
            }
            setsockopt_int(fd, libc::SO_TIMESTAMPNS, 1)?;
            Ok(s)
        };
        let caller = (0..per_side).map(|_| open()).collect::<io::Result<_>>()?;
        let far = (0..per_side).map(|_| open()).collect::<io::Result<_>>()?;
        Ok(Endpoints { caller, far })
    }

    pub fn caller_addr(&self, call: usize) -> SocketAddr {
        addr_of(&self.caller[call % self.caller.len()])
    }

    pub fn far_addr(&self, call: usize) -> SocketAddr {
        addr_of(&self.far[call % self.far.len()])
    }

    /// Ports of every socket, for the drop counters in /proc/net/udp.
    pub fn ports(&self) -> Vec<u16> {
        self.caller
            .iter()
            .chain(&self.far)
            .map(|s| addr_of(s).port())
            .collect()
    }

    /// Calls that go straight from one end to the other, no relay: the
    /// baseline the relay's added latency is measured against.
    pub fn direct_paths(&self, calls: usize) -> Vec<CallPath> {
        (0..calls)
            .map(|c| CallPath {
                caller_dst: self.far_addr(c),
                far_dst: self.caller_addr(c),
            })
            .collect()
    }
}

fn addr_of(s: &UdpSocket) -> SocketAddr {
    s.local_addr().expect("a bound socket has an address")
}

fn setsockopt_int(fd: libc::c_int, opt: libc::c_int, value: libc::c_int) -> io::Result<()> {
    // SAFETY: fd is a live socket; the value is a c_int of the size given.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            opt,
            (&value as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// One-way latencies in 1 us buckets up to 1 s, the rest in the last one.
pub struct Histogram {
    buckets: Vec<u32>,
    count: u64,
    max_ns: u64,
}

impl Histogram {
    const BUCKETS: usize = 1_000_000;

    pub fn new() -> Self {
        Histogram {
            buckets: vec![0; Self::BUCKETS + 1],
            count: 0,
            max_ns: 0,
        }
    }

    fn record(&mut self, ns: u64) {
        let us = (ns / 1000) as usize;
        self.buckets[us.min(Self::BUCKETS)] += 1;
        self.count += 1;
        self.max_ns = self.max_ns.max(ns);
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            *a += b;
        }
        self.count += other.count;
        self.max_ns = self.max_ns.max(other.max_ns);
    }

    /// The quantile `q` in microseconds (bucket upper bound, +0.5 us midpoint).
    pub fn quantile_us(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let rank = ((self.count as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0u64;
        for (us, &n) in self.buckets.iter().enumerate() {
            seen += u64::from(n);
            if seen >= rank {
                return Some(us as f64 + 0.5);
            }
        }
        None
    }

    pub fn max_us(&self) -> f64 {
        self.max_ns as f64 / 1000.0
    }

    pub fn count(&self) -> u64 {
        self.count
    }
}

/// Settings of one RTP run.
pub struct Schedule {
    /// Seconds of sending; every stream sends `secs * 50` packets.
    pub secs: u64,
    /// How often the loop wakes to send what is due and read what arrived.
    pub tick: Duration,
    /// After the last send, how long to keep receiving.
    pub drain: Duration,
}

/// What one RTP run saw, per direction (0: caller to far, 1: far to caller).
pub struct Outcome {
    pub sent: [u64; 2],
    pub received: [u64; 2],
    /// Arrived at the wrong end or from a source other than that call's relay port.
    pub misrouted: u64,
    /// Not one of ours: wrong length, unknown SSRC, or truncated.
    pub malformed: u64,
    pub duplicates: u64,
    /// Sends the kernel refused.
    pub send_errors: u64,
    pub latency: [Histogram; 2],
    /// How far behind schedule the loop's sends ran, at worst (up to STALL).
    pub max_send_lag: Duration,
    /// Times the loop fell more than STALL behind, and the total time the
    /// schedule was moved on by then (every stream pauses alike).
    pub stalls: u64,
    pub stalled: Duration,
    pub send_secs: f64,
    /// The longest time the loop spent in each part of one tick: sending,
    /// receiving, the SIP side, and oversleeping (us). Where stalls come from.
    pub worst_us: [u64; 4],
}

struct SendBatch {
    bufs: Vec<[u8; PACKET]>,
    dests: Vec<libc::sockaddr_in>,
}

impl SendBatch {
    fn new() -> Self {
        SendBatch {
            bufs: Vec::with_capacity(BATCH),
            dests: Vec::with_capacity(BATCH),
        }
    }
}

/// Sends every call's two streams for `schedule.secs`, evenly spread over
/// each 20 ms period, and receives them; `between` runs once per tick (the
/// SIP side answers whatever the target sends meanwhile).
pub fn run(
    ep: &Endpoints,
    paths: &[CallPath],
    schedule: &Schedule,
    mut between: impl FnMut(),
) -> Outcome {
    let streams = (paths.len() * 2) as u64;
    let rounds = schedule.secs * (1000 / PERIOD.as_millis() as u64);
    let total = streams * rounds;
    let k = ep.caller.len();
    let mut out = Outcome {
        sent: [0; 2],
        received: [0; 2],
        misrouted: 0,
        malformed: 0,
        duplicates: 0,
        send_errors: 0,
        latency: [Histogram::new(), Histogram::new()],
        max_send_lag: Duration::ZERO,
        stalls: 0,
        stalled: Duration::ZERO,
        send_secs: 0.0,
        worst_us: [0; 4],
    };
    if streams == 0 {
        return out;
    }
    // Highest sequence number seen + 1 per stream, and a bitmap of seen
    // rounds would cost memory for little: duplicates are counted by the
    // per-stream count exceeding what was sent.
    let mut got = vec![0u64; streams as usize];
    let mut batches: Vec<SendBatch> = (0..2 * k).map(|_| SendBatch::new()).collect();
    let mut rx = RecvState::new();
    let dests: Vec<[libc::sockaddr_in; 2]> = paths
        .iter()
        .map(|p| [sockaddr(p.caller_dst), sockaddr(p.far_dst)])
        .collect();
    let period_ns = PERIOD.as_nanos() as u64;
    let start = Instant::now();
    let mut next = 0u64;
    let mut shift = 0u64;
    let mut tick_at = start;
    loop {
        let now = Instant::now();
        let elapsed = now.duration_since(start).as_nanos() as u64;
        // Packet g is due at g * period / streams (+ stalls): stream g % streams, round g / streams.
        let due_of = |g: u64, shift: u64| g * period_ns / streams + shift;
        if next < total {
            let lag = elapsed.saturating_sub(due_of(next, shift));
            if lag > STALL.as_nanos() as u64 {
                out.stalls += 1;
                out.stalled += Duration::from_nanos(lag);
                shift += lag;
            }
        }
        while next < total && due_of(next, shift) <= elapsed {
            let s = next % streams;
            let round = next / streams;
            let call = (s / 2) as usize;
            let dir = (s % 2) as usize;
            let lag = Duration::from_nanos(elapsed - due_of(next, shift));
            out.max_send_lag = out.max_send_lag.max(lag);
            let slot = dir * k + call % k;
            let batch = &mut batches[slot];
            batch.bufs.push(packet(s as u32, round));
            batch.dests.push(dests[call][dir]);
            if batch.bufs.len() == BATCH {
                flush(&ep_socket(ep, slot, k).as_raw_fd(), batch, &mut out, dir);
            }
            next += 1;
        }
        for (slot, batch) in batches.iter_mut().enumerate() {
            if !batch.bufs.is_empty() {
                flush(
                    &ep_socket(ep, slot, k).as_raw_fd(),
                    batch,
                    &mut out,
                    slot / k,
                );
            }
        }
        let sent_at = Instant::now();
        worst(&mut out.worst_us[0], now, sent_at);
        // Direction 0 arrives at the far end, 1 at the caller end.
        for (dir, side) in [(0usize, &ep.far), (1usize, &ep.caller)] {
            for sock in side {
                rx.drain(sock.as_raw_fd(), |p, from, rx_ns| {
                    account(p, from, rx_ns, dir, paths, &mut got, &mut out);
                });
            }
        }
        let received_at = Instant::now();
        worst(&mut out.worst_us[1], sent_at, received_at);
        between();
        worst(&mut out.worst_us[2], received_at, Instant::now());
        if next >= total {
            if out.send_secs == 0.0 {
                out.send_secs = start.elapsed().as_secs_f64();
            }
            if start.elapsed().as_secs_f64() >= out.send_secs + schedule.drain.as_secs_f64() {
                break;
            }
        }
        tick_at += schedule.tick;
        let now = Instant::now();
        if tick_at > now {
            std::thread::sleep(tick_at - now);
            worst(&mut out.worst_us[3], tick_at, Instant::now());
        } else {
            tick_at = now;
        }
    }
    for (s, &n) in got.iter().enumerate() {
        out.duplicates += n.saturating_sub(rounds);
        out.received[s % 2] -= n.saturating_sub(rounds);
    }
    out
}

fn worst(slot: &mut u64, from: Instant, to: Instant) {
    *slot = (*slot).max(to.saturating_duration_since(from).as_micros() as u64);
}

fn ep_socket(ep: &Endpoints, slot: usize, k: usize) -> &UdpSocket {
    if slot < k {
        &ep.caller[slot]
    } else {
        &ep.far[slot - k]
    }
}

fn account(
    p: &[u8],
    from: SocketAddr,
    rx_ns: u64,
    dir: usize,
    paths: &[CallPath],
    got: &mut [u64],
    out: &mut Outcome,
) {
    if p.len() != PACKET || p[0] != 0x80 {
        out.malformed += 1;
        return;
    }
    let ssrc = u32::from_be_bytes([p[8], p[9], p[10], p[11]]);
    let s = ssrc.wrapping_sub(SSRC_BASE) as usize;
    if s >= got.len() {
        out.malformed += 1;
        return;
    }
    let (call, sdir) = (s / 2, s % 2);
    let expected_from = if sdir == 0 {
        paths[call].far_dst
    } else {
        paths[call].caller_dst
    };
    if sdir != dir || from != expected_from {
        out.misrouted += 1;
        return;
    }
    let mut t = [0u8; 8];
    t.copy_from_slice(&p[12..20]);
    let tx_ns = u64::from_be_bytes(t);
    got[s] += 1;
    out.received[dir] += 1;
    out.latency[dir].record(rx_ns.saturating_sub(tx_ns));
}

fn packet(stream: u32, round: u64) -> [u8; PACKET] {
    let mut p = [0xffu8; PACKET];
    p[0] = 0x80;
    p[1] = if round == 0 { 0x80 } else { 0 };
    p[2..4].copy_from_slice(&(round as u16).to_be_bytes());
    p[4..8].copy_from_slice(&((round as u32).wrapping_mul(160)).to_be_bytes());
    p[8..12].copy_from_slice(&(SSRC_BASE + stream).to_be_bytes());
    p
}

fn sockaddr(a: SocketAddr) -> libc::sockaddr_in {
    let SocketAddr::V4(a) = a else {
        panic!("the load runs on IPv4 loopback, got {a}");
    };
    // SAFETY: sockaddr_in is plain data; all-zero is valid.
    let mut s: libc::sockaddr_in = unsafe { zeroed() };
    s.sin_family = libc::AF_INET as libc::sa_family_t;
    s.sin_port = a.port().to_be();
    s.sin_addr.s_addr = u32::from(*a.ip()).to_be();
    s
}

fn from_sockaddr(s: &libc::sockaddr_in) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(
        Ipv4Addr::from(u32::from_be(s.sin_addr.s_addr)),
        u16::from_be(s.sin_port),
    ))
}

pub fn realtime_ns() -> u64 {
    // SAFETY: clock_gettime writes the timespec it is given.
    let mut ts: libc::timespec = unsafe { zeroed() };
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

// Stamp every packet of the batch with the time now and send it in one
// sendmmsg; whatever the kernel refuses is counted and dropped.
fn flush(fd: &libc::c_int, batch: &mut SendBatch, out: &mut Outcome, dir: usize) {
    let now = realtime_ns().to_be_bytes();
    for b in &mut batch.bufs {
        b[12..20].copy_from_slice(&now);
    }
    let n = batch.bufs.len();
    // SAFETY: plain data, zero-initialised, filled below.
    let mut iov: [libc::iovec; BATCH] = unsafe { zeroed() };
    let mut msgs: [libc::mmsghdr; BATCH] = unsafe { zeroed() };
    for i in 0..n {
        iov[i].iov_base = batch.bufs[i].as_mut_ptr().cast();
        iov[i].iov_len = PACKET;
        msgs[i].msg_hdr.msg_iov = &mut iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
        msgs[i].msg_hdr.msg_name = (&mut batch.dests[i] as *mut libc::sockaddr_in).cast();
        msgs[i].msg_hdr.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
    }
    let mut done = 0usize;
    while done < n {
        // SAFETY: msgs[done..n] point at live buffers and addresses.
        let rc = unsafe {
            libc::sendmmsg(
                *fd,
                msgs.as_mut_ptr().add(done),
                (n - done) as libc::c_uint,
                0,
            )
        };
        if rc > 0 {
            out.sent[dir] += rc as u64;
            done += rc as usize;
        } else {
            // The first message failed: count it and go on with the rest.
            out.send_errors += 1;
            out.sent[dir] += 1;
            done += 1;
        }
    }
    batch.bufs.clear();
    batch.dests.clear();
}

struct RecvState {
    bufs: Vec<[u8; RECV_BUF]>,
    cmsgs: Vec<[u64; CMSG_BUF / 8]>,
    names: Vec<libc::sockaddr_in>,
}

impl RecvState {
    fn new() -> Self {
        // SAFETY: sockaddr_in is plain data.
        let name: libc::sockaddr_in = unsafe { zeroed() };
        RecvState {
            bufs: vec![[0; RECV_BUF]; BATCH],
            cmsgs: vec![[0; CMSG_BUF / 8]; BATCH],
            names: vec![name; BATCH],
        }
    }

    // Read everything queued on `fd`, BATCH datagrams per recvmmsg.
    fn drain(&mut self, fd: libc::c_int, mut each: impl FnMut(&[u8], SocketAddr, u64)) {
        loop {
            // SAFETY: plain data, zero-initialised, filled below.
            let mut iov: [libc::iovec; BATCH] = unsafe { zeroed() };
            let mut msgs: [libc::mmsghdr; BATCH] = unsafe { zeroed() };
            for i in 0..BATCH {
                iov[i].iov_base = self.bufs[i].as_mut_ptr().cast();
                iov[i].iov_len = RECV_BUF;
                let h = &mut msgs[i].msg_hdr;
                h.msg_iov = &mut iov[i];
                h.msg_iovlen = 1;
                h.msg_name = (&mut self.names[i] as *mut libc::sockaddr_in).cast();
                h.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
                h.msg_control = self.cmsgs[i].as_mut_ptr().cast();
                h.msg_controllen = CMSG_BUF;
            }
            // SAFETY: every header points at buffers that outlive the call.
            let rc = unsafe {
                libc::recvmmsg(
                    fd,
                    msgs.as_mut_ptr(),
                    BATCH as libc::c_uint,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                )
            };
            if rc <= 0 {
                return;
            }
            for (i, m) in msgs.iter().enumerate().take(rc as usize) {
                let len = m.msg_len as usize;
                let truncated = m.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
                let rx_ns = timestamp(&m.msg_hdr).unwrap_or_else(realtime_ns);
                let from = from_sockaddr(&self.names[i]);
                let data = if truncated {
                    &[][..]
                } else {
                    &self.bufs[i][..len]
                };
                each(data, from, rx_ns);
            }
            if (rc as usize) < BATCH {
                return;
            }
        }
    }
}

// The SCM_TIMESTAMPNS control message: when the datagram reached the socket.
fn timestamp(h: &libc::msghdr) -> Option<u64> {
    // SAFETY: the CMSG_* macros walk the control buffer recvmmsg filled.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(h);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                let ts = std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const libc::timespec);
                return Some(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64);
            }
            c = libc::CMSG_NXTHDR(h, c);
        }
    }
    None
}
