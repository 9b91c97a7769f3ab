//! What /proc says about the target and the network namespace.

use std::fs;

/// utime + stime of every thread of `pid`, in seconds.
pub fn cpu_secs(pid: u32) -> Option<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1);
    Some(ticks as f64 / hz as f64)
}

/// VmRSS of `pid` in kB.
pub fn rss_kb(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// This process's own CPU (user + system), in seconds.
pub fn self_cpu_secs() -> f64 {
    // SAFETY: getrusage fills the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

/// Netns-wide UDP counters from /proc/net/snmp: (RcvbufErrors, SndbufErrors).
pub fn udp_buffer_errors() -> (u64, u64) {
    let Ok(snmp) = fs::read_to_string("/proc/net/snmp") else {
        return (0, 0);
    };
    let mut lines = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (Some(names), Some(values)) = (lines.next(), lines.next()) else {
        return (0, 0);
    };
    let pick = |want: &str| {
        names
            .split_whitespace()
            .position(|n| n == want)
            .and_then(|i| values.split_whitespace().nth(i))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (pick("RcvbufErrors"), pick("SndbufErrors"))
}

/// Datagrams dropped on the UDP sockets bound to 127.0.0.1 at `ports`
/// (the last column of /proc/net/udp).
pub fn socket_drops(ports: &[u16]) -> u64 {
    let Ok(udp) = fs::read_to_string("/proc/net/udp") else {
        return 0;
    };
    let wanted: Vec<String> = ports.iter().map(|p| format!("0100007F:{p:04X}")).collect();
    udp.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let local = f.get(1)?;
            wanted
                .iter()
                .any(|w| w == local)
                .then(|| f.last()?.parse::<u64>().ok())?
        })
        .sum()
}
