//! The file-descriptor budget. At start handoff raises its soft `RLIMIT_NOFILE` to
//! the hard limit, keeps a reserve for media sockets (four per call: RTP and RTCP on
//! both legs) and for the store and the process itself, and lowers the HTTP and
//! SIP/TCP connection caps to fit in what is left, so a flood of connections can
//! never take the descriptors a new call's media needs.

/// Descriptors kept for everything but connections and media: stdio, the listeners,
/// the runtime's epoll and wakers, the store's database and journal, DNS sockets,
/// outbound HTTP (event deliveries, Zendesk) and log files.
pub const BASE_RESERVE: u64 = 256;

/// Media sockets per call: an RTP and an RTCP socket on each of two legs.
pub const MEDIA_FDS_PER_CALL: u64 = 4;

/// What the plan is made from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdPlanInput {
    /// The soft descriptor limit after raising it.
    pub nofile: u64,
    /// `limits.max_calls`.
    pub max_calls: usize,
    /// Ports in the media range (each one a socket); `None` in passthrough (no relay).
    pub media_ports: Option<u64>,
    /// `http.max_connections` as configured.
    pub http_max_connections: usize,
    /// `sip.tcp_max_connections` as configured.
    pub sip_tcp_max_connections: usize,
    /// `http.max_connections_per_ip` as configured.
    pub http_max_connections_per_ip: usize,
    /// `sip.tcp_max_connections_per_ip` as configured.
    pub sip_tcp_max_connections_per_ip: usize,
}

/// The caps to use and what was kept back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdPlan {
    /// Descriptors kept for media, the store and the process.
    pub reserve: u64,
    pub http_max_connections: usize,
    pub sip_tcp_max_connections: usize,
    pub http_max_connections_per_ip: usize,
    pub sip_tcp_max_connections_per_ip: usize,
    /// A cap was lowered.
    pub clamped: bool,
    /// The limit is too low to keep the whole media reserve and still leave a quarter
    /// for connections: calls may fail to bind media near `limits.max_calls`.
    pub media_short: bool,
}

/// Fit the connection caps in the descriptors left after the reserve. The media
/// reserve is bounded by the port range (a call cannot hold ports the range does not
/// have); connections always keep at least a quarter of the limit, so a low limit
/// with a large `max_calls` still serves HTTP and SIP/TCP. When both caps do not fit
/// they are lowered in proportion, each to at least 1, and each per-source cap with
/// its total (rounded up): one source must not fill a lowered total by itself.
pub fn plan_fds(input: FdPlanInput) -> FdPlan {
    let media = input.media_ports.map_or(0, |ports| {
        (input.max_calls as u64)
            .saturating_mul(MEDIA_FDS_PER_CALL)
            .min(ports)
    });
    let reserve = BASE_RESERVE.saturating_add(media);
    let floor = input.nofile / 4;
    let left = input.nofile.saturating_sub(reserve);
    let media_short = left < floor;
    let available = left.max(floor);
    let http = input.http_max_connections as u64;
    let tcp = input.sip_tcp_max_connections as u64;
    let want = http.saturating_add(tcp);
    if want <= available {
        return FdPlan {
            reserve,
            http_max_connections: input.http_max_connections,
            sip_tcp_max_connections: input.sip_tcp_max_connections,
            http_max_connections_per_ip: input.http_max_connections_per_ip,
            sip_tcp_max_connections_per_ip: input.sip_tcp_max_connections_per_ip,
            clamped: false,
            media_short,
        };
    }
    // want > available >= 0, so want >= 1 and the division is safe.
    let http_new = (available.saturating_mul(http) / want).max(1);
    let tcp_new = available.saturating_sub(http_new).clamp(1, tcp.max(1));
    FdPlan {
        reserve,
        http_max_connections: usize::try_from(http_new).unwrap_or(usize::MAX),
        sip_tcp_max_connections: usize::try_from(tcp_new).unwrap_or(usize::MAX),
        http_max_connections_per_ip: scale(input.http_max_connections_per_ip, http_new, http),
        sip_tcp_max_connections_per_ip: scale(input.sip_tcp_max_connections_per_ip, tcp_new, tcp),
        clamped: true,
        media_short,
    }
}

/// `per_source` in the proportion `new_total / old_total`, rounded up, at least 1 and
/// never more than it was or than the new total.
fn scale(per_source: usize, new_total: u64, old_total: u64) -> usize {
    let p = per_source as u64;
    let scaled = p
        .saturating_mul(new_total)
        .div_ceil(old_total.max(1))
        .clamp(1, p.max(1))
        .min(new_total.max(1));
    usize::try_from(scaled).unwrap_or(usize::MAX)
}

/// Raise the soft `RLIMIT_NOFILE` to the hard limit; the soft limit now in force.
/// `None` when it cannot be read (the caps are then used as configured).
pub fn raise_nofile() -> Option<u64> {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => Some(n),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read or raise RLIMIT_NOFILE");
            rlimit::Resource::NOFILE.get().ok().map(|(soft, _)| soft)
        }
    }
}

/// At start: raise the descriptor limit, plan, and return the connection limits to
/// use, with a warning naming the keys when a cap was lowered.
pub fn fit_to_descriptors(settings: &crate::config::Settings) -> crate::config::ConnSettings {
    let mut conns = settings.conns;
    let Some(nofile) = raise_nofile() else {
        return conns;
    };
    let plan = plan_fds(FdPlanInput {
        nofile,
        max_calls: settings.max_calls,
        media_ports: settings
            .media
            .as_ref()
            .map(|m| u64::from(m.port_max - m.port_min) + 1),
        http_max_connections: conns.http.max_connections,
        sip_tcp_max_connections: conns.sip_tcp.max_connections,
        http_max_connections_per_ip: conns.http.max_connections_per_ip,
        sip_tcp_max_connections_per_ip: conns.sip_tcp.max_connections_per_ip,
    });
    if plan.media_short {
        tracing::warn!(
            nofile,
            reserve = plan.reserve,
            "the descriptor limit (ulimit -n) cannot hold media sockets for limits.max_calls calls \
             besides the connection caps: raise the hard limit or lower limits.max_calls"
        );
    }
    if plan.clamped {
        tracing::warn!(
            nofile,
            reserve = plan.reserve,
            http_max_connections = plan.http_max_connections,
            http_max_connections_per_ip = plan.http_max_connections_per_ip,
            sip_tcp_max_connections = plan.sip_tcp_max_connections,
            sip_tcp_max_connections_per_ip = plan.sip_tcp_max_connections_per_ip,
            "http.max_connections ({}), http.max_connections_per_ip ({}), \
             sip.tcp_max_connections ({}) and sip.tcp_max_connections_per_ip ({}) lowered to \
             fit the descriptor limit after the reserve for media (limits.max_calls) and the store",
            conns.http.max_connections,
            conns.http.max_connections_per_ip,
            conns.sip_tcp.max_connections,
            conns.sip_tcp.max_connections_per_ip,
        );
    }
    conns.http.max_connections = plan.http_max_connections;
    conns.http.max_connections_per_ip = plan.http_max_connections_per_ip;
    conns.sip_tcp.max_connections = plan.sip_tcp_max_connections;
    conns.sip_tcp.max_connections_per_ip = plan.sip_tcp_max_connections_per_ip;
    tracing::debug!(nofile, reserve = plan.reserve, "descriptor budget");
    conns
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(nofile: u64, max_calls: usize, ports: Option<u64>) -> FdPlanInput {
        FdPlanInput {
            nofile,
            max_calls,
            media_ports: ports,
            http_max_connections: 1024,
            sip_tcp_max_connections: 4096,
            http_max_connections_per_ip: 64,
            sip_tcp_max_connections_per_ip: 256,
        }
    }

    #[test]
    fn a_large_limit_keeps_the_configured_caps() {
        let p = plan_fds(input(1 << 20, 10_000, Some(10_000)));
        assert!(!p.clamped && !p.media_short);
        assert_eq!(p.http_max_connections, 1024);
        assert_eq!(p.sip_tcp_max_connections, 4096);
        assert_eq!(p.reserve, BASE_RESERVE + 10_000);
    }

    #[test]
    fn the_media_reserve_is_four_per_call_bounded_by_the_port_range() {
        assert_eq!(
            plan_fds(input(1 << 20, 100, Some(10_000))).reserve,
            BASE_RESERVE + 400
        );
        assert_eq!(
            plan_fds(input(1 << 20, 100_000, Some(2_000))).reserve,
            BASE_RESERVE + 2_000
        );
        assert_eq!(plan_fds(input(1 << 20, 100, None)).reserve, BASE_RESERVE);
    }

    #[test]
    fn a_small_limit_lowers_both_caps_in_proportion_under_what_is_left() {
        // 20000 - (256 + 4 * 1000) = 15744 left; 1024 + 4096 fit.
        assert!(!plan_fds(input(20_000, 1000, Some(10_000))).clamped);
        // 8192 - (256 + 4000) = 3936 left for 5120 wanted.
        let p = plan_fds(input(8192, 1000, Some(10_000)));
        assert!(p.clamped && !p.media_short);
        assert!(p.http_max_connections + p.sip_tcp_max_connections <= 3936);
        assert_eq!(p.http_max_connections, 3936 * 1024 / 5120);
        assert_eq!(p.sip_tcp_max_connections, 3936 - p.http_max_connections);
    }

    #[test]
    fn per_source_caps_shrink_with_their_totals_so_one_source_cannot_fill_them() {
        // ulimit -n 512 and max_calls 20: 176 descriptors for connections.
        let p = plan_fds(input(512, 20, Some(400)));
        assert_eq!(p.http_max_connections, 176 * 1024 / 5120);
        assert_eq!(
            p.http_max_connections_per_ip, 3,
            "64 * 35 / 1024, rounded up"
        );
        assert_eq!(p.sip_tcp_max_connections, 176 - 35);
        assert_eq!(
            p.sip_tcp_max_connections_per_ip, 9,
            "256 * 141 / 4096, rounded up"
        );
        assert!(p.http_max_connections_per_ip < p.http_max_connections);
        // Unclamped: the per-source caps stay as configured.
        let q = plan_fds(input(1 << 20, 20, Some(400)));
        assert_eq!(
            (
                q.http_max_connections_per_ip,
                q.sip_tcp_max_connections_per_ip
            ),
            (64, 256)
        );
    }

    #[test]
    fn connections_keep_a_quarter_when_media_would_take_everything() {
        // ulimit -n 1024 with the shipped max_calls: the reserve cannot be kept whole.
        let p = plan_fds(input(1024, 10_000, Some(10_000)));
        assert!(p.clamped && p.media_short);
        assert_eq!(p.http_max_connections + p.sip_tcp_max_connections, 256);
        assert!(p.http_max_connections >= 1 && p.sip_tcp_max_connections >= 1);
    }

    #[test]
    fn a_tiny_limit_still_leaves_one_of_each() {
        let p = plan_fds(input(4, 10, None));
        assert_eq!(p.http_max_connections, 1);
        assert_eq!(p.sip_tcp_max_connections, 1);
        let p = plan_fds(input(0, 10, None));
        assert_eq!((p.http_max_connections, p.sip_tcp_max_connections), (1, 1));
    }

    #[test]
    fn caps_never_grow() {
        for nofile in [0, 10, 300, 1000, 5000, 100_000] {
            let p = plan_fds(FdPlanInput {
                nofile,
                max_calls: 10,
                media_ports: Some(40),
                http_max_connections: 5,
                sip_tcp_max_connections: 7,
                http_max_connections_per_ip: 5,
                sip_tcp_max_connections_per_ip: 2,
            });
            assert!(p.http_max_connections <= 5 && p.sip_tcp_max_connections <= 7);
            assert!(p.http_max_connections_per_ip <= p.http_max_connections);
            assert!(p.sip_tcp_max_connections_per_ip <= 2);
            assert!(p.http_max_connections_per_ip >= 1 && p.sip_tcp_max_connections_per_ip >= 1);
        }
    }
}
