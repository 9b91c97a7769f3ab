//! The pure half of RFC 3263 section 4: what to look up for a URI, and in which
//! order to try what the lookups found (RFC 2782 priority, then weighted random).

use super::super::Transport;
use crate::sip::message::SipUri;
use std::net::{IpAddr, SocketAddr};

/// RFC 3261 19.1.2: the port when a `sip:` URI names none.
pub const DEFAULT_PORT: u16 = 5060;
/// RFC 3261 19.1.2: the port when a `sips:` URI (or a target over TLS) names none.
pub const DEFAULT_TLS_PORT: u16 = 5061;

/// The default port of a transport (RFC 3261 19.1.2, RFC 3263 4.2).
pub fn default_port(transport: Transport) -> u16 {
    match transport {
        Transport::Tls => DEFAULT_TLS_PORT,
        Transport::Udp | Transport::Tcp => DEFAULT_PORT,
    }
}

/// One place to send a request: a transport and an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Target {
    pub transport: Transport,
    pub addr: SocketAddr,
}

/// Why a URI cannot be turned into targets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    #[error("sips: and transport=tls need TLS, which is not configured")]
    TlsUnsupported,
    #[error("transport {0:?} is not supported (udp, tcp or tls)")]
    UnsupportedTransport(String),
    #[error("{0:?} URIs name no host to resolve")]
    NotSip(String),
    /// NXDOMAIN, or no SRV and no A/AAAA record.
    #[error("no address for {0}")]
    NotFound(String),
    /// The lookup itself failed (timeout, no name server answered).
    #[error("cannot look up {host}: {reason}")]
    Lookup { host: String, reason: String },
}

/// What RFC 3263 4.1 and 4.2 say to look up for a URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan<'a> {
    /// A numeric IP address: no lookup at all.
    Literal(Target),
    /// An explicit port: A/AAAA of the host only.
    Address {
        host: &'a str,
        port: u16,
        transport: Transport,
    },
    /// No port: SRV for each transport in turn (the first with records wins), else
    /// A/AAAA of the host at 5060 over the first transport.
    Srv {
        host: &'a str,
        transports: &'static [Transport],
    },
}

/// The plan for `uri`. `forced` (a configured destination's transport) wins over the
/// URI's `;transport=`, which wins over what DNS says. NAPTR (RFC 3263 4.1) is
/// skipped: without it, a client may try the SRV records of the transports it
/// supports, UDP first.
pub fn plan(uri: &SipUri, forced: Option<Transport>) -> Result<Plan<'_>, ResolveError> {
    let sips = uri.scheme.eq_ignore_ascii_case("sips");
    if !sips && !uri.scheme.eq_ignore_ascii_case("sip") {
        return Err(ResolveError::NotSip(uri.scheme.clone()));
    }
    let transport = match forced {
        Some(t) => Some(t),
        None => match uri.transport() {
            Some(name) => {
                Some(Transport::from_name(&name).ok_or(ResolveError::UnsupportedTransport(name))?)
            }
            None => None,
        },
    };
    // RFC 3261 19.1 and RFC 5630 3.1: a sips: URI is reached over TLS whatever else is
    // said (`;transport=tcp` on it means TLS over TCP); never over UDP, never plain.
    let transport = match (sips, transport) {
        (true, Some(Transport::Udp)) => {
            return Err(ResolveError::UnsupportedTransport(
                "udp (a sips: URI needs TLS)".into(),
            ))
        }
        (true, _) => Some(Transport::Tls),
        (false, t) => t,
    };
    let host = uri.host.trim_matches(['[', ']']);
    if let Ok(ip) = host.parse::<IpAddr>() {
        // RFC 3263 4.1: a numeric address with no transport given means UDP.
        let transport = transport.unwrap_or(Transport::Udp);
        return Ok(Plan::Literal(Target {
            transport,
            addr: SocketAddr::new(ip, uri.port.unwrap_or(default_port(transport))),
        }));
    }
    if let Some(port) = uri.port {
        // RFC 3263 4.2: an explicit port means A/AAAA only.
        return Ok(Plan::Address {
            host,
            port,
            transport: transport.unwrap_or(Transport::Udp),
        });
    }
    let transports: &'static [Transport] = match transport {
        Some(Transport::Udp) => &[Transport::Udp],
        Some(Transport::Tcp) => &[Transport::Tcp],
        Some(Transport::Tls) => &[Transport::Tls],
        None => &[Transport::Udp, Transport::Tcp],
    };
    Ok(Plan::Srv { host, transports })
}

/// What a lookup found: an SRV record with the addresses of its target, or (no SRV)
/// the host's own addresses with priority and weight 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub priority: u16,
    pub weight: u16,
    pub transport: Transport,
    pub addrs: Vec<SocketAddr>,
}

/// The targets of `candidates` in the order to try them: by priority, and within a
/// priority by RFC 2782's weighted random selection. `pick(total)` must return a
/// number in `0..=total` (uniformly at random, outside tests).
pub fn order(candidates: &[Candidate], pick: &mut impl FnMut(u32) -> u32) -> Vec<Target> {
    let mut sorted: Vec<&Candidate> = candidates.iter().collect();
    sorted.sort_by_key(|c| c.priority);
    let mut out = Vec::with_capacity(candidates.iter().map(|c| c.addrs.len()).sum());
    for group in sorted.chunk_by(|a, b| a.priority == b.priority) {
        for c in weighted(group.to_vec(), pick) {
            out.extend(c.addrs.iter().map(|&addr| Target {
                transport: c.transport,
                addr,
            }));
        }
    }
    out
}

/// RFC 2782: zero-weight records first, then repeatedly pick a random number up to
/// the sum of the weights left and take the first record whose running sum reaches it.
fn weighted<'a>(
    mut group: Vec<&'a Candidate>,
    pick: &mut impl FnMut(u32) -> u32,
) -> Vec<&'a Candidate> {
    group.sort_by_key(|c| c.weight != 0);
    let mut out = Vec::with_capacity(group.len());
    while !group.is_empty() {
        let total: u32 = group.iter().map(|c| u32::from(c.weight)).sum();
        let n = pick(total).min(total);
        let mut running = 0u32;
        let idx = group
            .iter()
            .position(|c| {
                running += u32::from(c.weight);
                running >= n
            })
            .unwrap_or(0);
        out.push(group.remove(idx));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(s: &str) -> SipUri {
        SipUri::parse(s).expect("test URI parses")
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("test address parses")
    }

    fn cand(priority: u16, weight: u16, port: u16) -> Candidate {
        Candidate {
            priority,
            weight,
            transport: Transport::Udp,
            addrs: vec![SocketAddr::from(([127, 0, 0, 1], port))],
        }
    }

    fn ports(targets: &[Target]) -> Vec<u16> {
        targets.iter().map(|t| t.addr.port()).collect()
    }

    #[test]
    fn ip_literal_is_its_own_target_on_5060_over_udp() {
        let u = uri("sip:a@192.0.2.1");
        let p = plan(&u, None).expect("plan");
        assert_eq!(
            p,
            Plan::Literal(Target {
                transport: Transport::Udp,
                addr: addr("192.0.2.1:5060")
            })
        );
    }

    #[test]
    fn ipv6_literal_keeps_its_port_and_transport_param() {
        let u = uri("sip:a@[::1]:5080;transport=tcp");
        let p = plan(&u, None).expect("plan");
        assert_eq!(
            p,
            Plan::Literal(Target {
                transport: Transport::Tcp,
                addr: addr("[::1]:5080")
            })
        );
    }

    #[test]
    fn explicit_port_means_address_lookup_only() {
        let u = uri("sip:a@ai.test:5070");
        let p = plan(&u, None).expect("plan");
        assert_eq!(
            p,
            Plan::Address {
                host: "ai.test",
                port: 5070,
                transport: Transport::Udp
            }
        );
    }

    #[test]
    fn no_port_no_transport_tries_udp_srv_then_tcp_srv() {
        let u = uri("sip:a@ai.test");
        let p = plan(&u, None).expect("plan");
        assert_eq!(
            p,
            Plan::Srv {
                host: "ai.test",
                transports: &[Transport::Udp, Transport::Tcp]
            }
        );
    }

    #[test]
    fn transport_param_picks_the_srv_service() {
        let u = uri("sip:a@ai.test;transport=TCP");
        let p = plan(&u, None).expect("plan");
        assert_eq!(
            p,
            Plan::Srv {
                host: "ai.test",
                transports: &[Transport::Tcp]
            }
        );
    }

    #[test]
    fn forced_transport_wins_over_the_uri() {
        let u = uri("sip:a@192.0.2.1;transport=udp");
        let p = plan(&u, Some(Transport::Tcp)).expect("plan");
        assert!(matches!(p, Plan::Literal(t) if t.transport == Transport::Tcp));
    }

    #[test]
    fn sips_goes_over_tls_srv_and_never_udp() {
        assert_eq!(
            plan(&uri("sips:a@ai.test"), None),
            Ok(Plan::Srv {
                host: "ai.test",
                transports: &[Transport::Tls]
            })
        );
        // TLS over TCP, RFC 5630 3.1.
        assert!(matches!(
            plan(&uri("sips:a@ai.test:5071;transport=tcp"), None),
            Ok(Plan::Address {
                transport: Transport::Tls,
                port: 5071,
                ..
            })
        ));
        assert!(matches!(
            plan(&uri("sips:a@ai.test"), Some(Transport::Udp)),
            Err(ResolveError::UnsupportedTransport(_))
        ));
    }

    #[test]
    fn tls_targets_default_to_5061() {
        let u = uri("sips:a@192.0.2.1");
        let p = plan(&u, None).expect("plan");
        assert_eq!(
            p,
            Plan::Literal(Target {
                transport: Transport::Tls,
                addr: addr("192.0.2.1:5061")
            })
        );
        let u = uri("sip:a@192.0.2.1;transport=TLS");
        let p = plan(&u, None).expect("plan");
        assert!(
            matches!(p, Plan::Literal(t) if t.addr.port() == 5061 && t.transport == Transport::Tls)
        );
        assert!(matches!(
            plan(&uri("sip:a@ai.test;transport=tls"), None),
            Ok(Plan::Srv {
                transports: &[Transport::Tls],
                ..
            })
        ));
    }

    #[test]
    fn unknown_transport_and_tel_are_refused() {
        assert_eq!(
            plan(&uri("sip:a@ai.test;transport=sctp"), None),
            Err(ResolveError::UnsupportedTransport("sctp".into()))
        );
        assert!(matches!(
            plan(&uri("tel:+14155551212"), None),
            Err(ResolveError::NotSip(_))
        ));
    }

    #[test]
    fn lower_priority_value_goes_first_whatever_the_weights() {
        let c = [cand(20, 100, 1), cand(10, 0, 2), cand(30, 5, 3)];
        assert_eq!(ports(&order(&c, &mut |t| t)), [2, 1, 3]);
    }

    #[test]
    fn weighted_pick_takes_first_running_sum_reaching_the_number() {
        // Weights 10 and 30, zero-weight first: running sums 0, 10, 40.
        let c = [cand(1, 10, 1), cand(1, 30, 2), cand(1, 0, 3)];
        // 0 selects the zero-weight record; then 11 of 40 the second; then the first.
        let mut picks = [0, 11, 0].into_iter();
        let got = order(&c, &mut |_| picks.next().unwrap_or(0));
        assert_eq!(ports(&got), [3, 2, 1]);
        // 10 of 40 selects the first (running sum 10 reaches it).
        let mut picks = [10, 0].into_iter();
        let got = order(&c[..2], &mut |_| picks.next().unwrap_or(0));
        assert_eq!(ports(&got), [1, 2]);
    }

    #[test]
    fn weighted_pick_sees_the_sum_of_the_weights_left() {
        let c = [cand(1, 10, 1), cand(1, 30, 2)];
        let mut totals = Vec::new();
        order(&c, &mut |t| {
            totals.push(t);
            t
        });
        // The highest number always takes the last record: 30's first, then 10 left.
        assert_eq!(totals, [40, 10]);
    }

    #[test]
    fn an_out_of_range_pick_is_clamped() {
        let c = [cand(1, 1, 1), cand(1, 1, 2)];
        assert_eq!(ports(&order(&c, &mut |_| u32::MAX)), [2, 1]);
    }

    #[test]
    fn every_address_of_a_candidate_follows_it() {
        let mut a = cand(1, 0, 1);
        a.addrs.push(addr("127.0.0.2:1"));
        let b = cand(2, 0, 9);
        let got = order(&[b, a], &mut |t| t);
        assert_eq!(
            got.iter().map(|t| t.addr).collect::<Vec<_>>(),
            [
                addr("127.0.0.1:1"),
                addr("127.0.0.2:1"),
                addr("127.0.0.1:9")
            ]
        );
    }
}
