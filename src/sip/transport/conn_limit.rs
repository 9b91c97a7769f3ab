//! Which SIP/TCP connection gives way when a new one would exceed a cap: an idle
//! connection that carries no dialog, from the source that holds the most. Pure; the
//! hub gathers the candidates and closes the one chosen.

use super::ConnId;
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

/// A connection younger in idleness than this is in use, not idle: never evicted.
pub const EVICT_MIN_IDLE: Duration = Duration::from_secs(1);

/// What the choice needs to know of one open connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    pub id: ConnId,
    /// Its source as the per-source cap counts it (`net::source_key`).
    pub source: IpAddr,
    /// Accepted from a peer; our own connections (to the AI agent, a transfer target)
    /// are never evicted.
    pub inbound: bool,
    /// A dialog (a live call) holds it.
    pub held: bool,
    /// Part of a message is buffered: the peer is sending.
    pub mid_message: bool,
    /// Since the last byte either way.
    pub idle_for: Duration,
}

/// Which cap the new connection would exceed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Over {
    /// The new connection's source holds all it may: only its own connections may give way.
    Source(IpAddr),
    /// Every slot is taken: any source's may.
    Total,
}

/// The connection to close to make room, or `None` (then the new one is refused).
/// Eligible: inbound, held by no dialog, not in the middle of a message, idle at least
/// [`EVICT_MIN_IDLE`]. Among them: for the total cap, first the source holding the
/// most connections (a flood gives way before a trunk's one connection), then the
/// longest idle, then the oldest.
pub fn choose_victim(candidates: &[Candidate], over: Over) -> Option<ConnId> {
    let mut per_source: HashMap<IpAddr, usize> = HashMap::new();
    for c in candidates {
        *per_source.entry(c.source).or_insert(0) += 1;
    }
    candidates
        .iter()
        .filter(|c| match over {
            Over::Source(s) => c.source == s,
            Over::Total => true,
        })
        .filter(|c| c.inbound && !c.held && !c.mid_message && c.idle_for >= EVICT_MIN_IDLE)
        .max_by(|a, b| {
            let load = |c: &Candidate| per_source.get(&c.source).copied().unwrap_or(0);
            load(a)
                .cmp(&load(b))
                .then(a.idle_for.cmp(&b.idle_for))
                .then(b.id.cmp(&a.id))
        })
        .map(|c| c.id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn idle(id: ConnId, source: &str, secs: u64) -> Candidate {
        Candidate {
            id,
            source: ip(source),
            inbound: true,
            held: false,
            mid_message: false,
            idle_for: Duration::from_secs(secs),
        }
    }

    #[test]
    fn the_longest_idle_of_the_source_goes_first() {
        let c = [
            idle(1, "10.0.0.1", 5),
            idle(2, "10.0.0.1", 50),
            idle(3, "10.0.0.2", 500),
        ];
        assert_eq!(choose_victim(&c, Over::Source(ip("10.0.0.1"))), Some(2));
    }

    #[test]
    fn a_connection_carrying_a_dialog_is_never_chosen() {
        let mut held = idle(1, "10.0.0.1", 500);
        held.held = true;
        assert_eq!(choose_victim(&[held], Over::Source(ip("10.0.0.1"))), None);
        assert_eq!(choose_victim(&[held], Over::Total), None);
        assert_eq!(
            choose_victim(&[held, idle(2, "10.0.0.1", 3)], Over::Total),
            Some(2)
        );
    }

    #[test]
    fn busy_recent_and_own_connections_are_not_idle() {
        let mut sending = idle(1, "10.0.0.1", 500);
        sending.mid_message = true;
        let recent = Candidate {
            idle_for: Duration::from_millis(200),
            ..idle(2, "10.0.0.1", 0)
        };
        let mut own = idle(3, "10.0.0.1", 500);
        own.inbound = false;
        assert_eq!(
            choose_victim(&[sending, recent, own], Over::Source(ip("10.0.0.1"))),
            None
        );
    }

    #[test]
    fn over_the_source_cap_other_sources_are_spared() {
        let c = [idle(1, "10.0.0.2", 900), idle(2, "10.0.0.3", 900)];
        assert_eq!(choose_victim(&c, Over::Source(ip("10.0.0.1"))), None);
    }

    #[test]
    fn over_the_total_cap_the_heaviest_source_gives_way_before_a_trunk() {
        // The trunk's one connection is the longest idle, but the flood goes first.
        let c = [
            idle(1, "192.0.2.10", 3000),
            idle(2, "10.0.0.9", 2),
            idle(3, "10.0.0.9", 4),
            idle(4, "10.0.0.9", 3),
        ];
        assert_eq!(choose_victim(&c, Over::Total), Some(3));
    }

    #[test]
    fn equal_idleness_takes_the_oldest_connection() {
        let c = [idle(7, "10.0.0.1", 5), idle(4, "10.0.0.1", 5)];
        assert_eq!(choose_victim(&c, Over::Total), Some(4));
    }

    #[test]
    fn nothing_open_means_nothing_to_evict() {
        assert_eq!(choose_victim(&[], Over::Total), None);
    }
}
