//! Connection caps: how many connections are open in total and from each source, and
//! whether one more may open. The decision is the pure [`admit`]; [`ConnCounter`]
//! keeps the counts and hands out a permit per connection that gives its place back
//! when dropped.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex, PoisonError};

/// The two caps of one listener kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnCaps {
    pub total: usize,
    pub per_source: usize,
}

/// What to do with a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Admit,
    /// Every connection slot is taken.
    OverTotal,
    /// This source holds all the connections it may.
    OverPerSource,
}

/// Whether one more connection fits, given what is open now.
pub fn admit(open_total: usize, open_from_source: usize, caps: ConnCaps) -> Admission {
    if open_from_source >= caps.per_source {
        Admission::OverPerSource
    } else if open_total >= caps.total {
        Admission::OverTotal
    } else {
        Admission::Admit
    }
}

/// What a per-source cap counts: an IPv4 address (also when written v4-mapped), or
/// an IPv6 /64, the smallest block one site is normally given: a host with a /64
/// cannot get past the cap by changing its address.
pub fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut seg = v6.segments();
                seg[4..].fill(0);
                IpAddr::V6(Ipv6Addr::from(seg))
            }
        },
    }
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    by_source: HashMap<IpAddr, usize>,
}

/// Open connections in total and by source; taken on accept, given back on close.
#[derive(Debug)]
pub struct ConnCounter {
    caps: ConnCaps,
    // One lock taken once per accept and once per close: never on a message path.
    counts: Mutex<Counts>,
}

impl ConnCounter {
    pub fn new(caps: ConnCaps) -> Arc<ConnCounter> {
        Arc::new(ConnCounter {
            caps,
            counts: Mutex::new(Counts::default()),
        })
    }

    pub fn caps(&self) -> ConnCaps {
        self.caps
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A place for a connection from `ip`, or why there is none.
    pub fn try_acquire(self: &Arc<Self>, ip: IpAddr) -> Result<ConnPermit, Admission> {
        let key = source_key(ip);
        let mut c = self.counts();
        let from = c.by_source.get(&key).copied().unwrap_or(0);
        match admit(c.total, from, self.caps) {
            Admission::Admit => {}
            refused => return Err(refused),
        }
        c.total += 1;
        *c.by_source.entry(key).or_insert(0) += 1;
        Ok(ConnPermit {
            counter: self.clone(),
            key,
        })
    }

    /// A place for a connection we open ourselves: counted, never refused (the caps
    /// are for what others open).
    pub fn acquire_own(self: &Arc<Self>, ip: IpAddr) -> ConnPermit {
        let key = source_key(ip);
        let mut c = self.counts();
        c.total += 1;
        *c.by_source.entry(key).or_insert(0) += 1;
        ConnPermit {
            counter: self.clone(),
            key,
        }
    }

    pub fn open_total(&self) -> usize {
        self.counts().total
    }

    pub fn open_from(&self, ip: IpAddr) -> usize {
        self.counts()
            .by_source
            .get(&source_key(ip))
            .copied()
            .unwrap_or(0)
    }

    fn release(&self, key: IpAddr) {
        let mut c = self.counts();
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.by_source.get_mut(&key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                c.by_source.remove(&key);
            }
        }
    }
}

/// One open connection's place; dropping it gives the place back.
#[derive(Debug)]
pub struct ConnPermit {
    counter: Arc<ConnCounter>,
    key: IpAddr,
}

impl ConnPermit {
    /// The source this connection is counted under (see [`source_key`]).
    pub fn source(&self) -> IpAddr {
        self.key
    }
}

impl Drop for ConnPermit {
    fn drop(&mut self) {
        self.counter.release(self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAPS: ConnCaps = ConnCaps {
        total: 3,
        per_source: 2,
    };

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn admit_checks_the_source_then_the_total() {
        assert_eq!(admit(0, 0, CAPS), Admission::Admit);
        assert_eq!(admit(2, 1, CAPS), Admission::Admit);
        assert_eq!(admit(2, 2, CAPS), Admission::OverPerSource);
        assert_eq!(admit(3, 0, CAPS), Admission::OverTotal);
        assert_eq!(admit(3, 2, CAPS), Admission::OverPerSource);
    }

    #[test]
    fn one_source_is_capped_and_others_still_get_in() {
        let c = ConnCounter::new(CAPS);
        let a1 = c.try_acquire(ip("10.0.0.1")).expect("first");
        let _a2 = c.try_acquire(ip("10.0.0.1")).expect("second");
        assert_eq!(
            c.try_acquire(ip("10.0.0.1")).unwrap_err(),
            Admission::OverPerSource
        );
        let _b = c.try_acquire(ip("10.0.0.2")).expect("other source");
        assert_eq!(
            c.try_acquire(ip("10.0.0.3")).unwrap_err(),
            Admission::OverTotal
        );
        drop(a1);
        assert_eq!(c.open_total(), 2);
        assert_eq!(c.open_from(ip("10.0.0.1")), 1);
        assert!(c.try_acquire(ip("10.0.0.1")).is_ok());
    }

    #[test]
    fn dropping_every_permit_leaves_nothing_counted() {
        let c = ConnCounter::new(CAPS);
        let permits: Vec<_> = ["10.0.0.1", "10.0.0.2", "10.0.0.1"]
            .iter()
            .map(|s| c.try_acquire(ip(s)).expect("fits"))
            .collect();
        drop(permits);
        assert_eq!(c.open_total(), 0);
        assert!(c.counts().by_source.is_empty());
    }

    #[test]
    fn own_connections_count_but_are_never_refused() {
        let c = ConnCounter::new(CAPS);
        let _own: Vec<_> = (0..5).map(|_| c.acquire_own(ip("10.0.0.9"))).collect();
        assert_eq!(c.open_total(), 5);
        assert_eq!(
            c.try_acquire(ip("10.0.0.1")).unwrap_err(),
            Admission::OverTotal
        );
    }

    #[test]
    fn ipv6_sources_count_by_slash_64_and_v4_mapped_as_v4() {
        assert_eq!(source_key(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        assert_eq!(
            source_key(ip("2001:db8:1:2:ffff:1:2:3")),
            source_key(ip("2001:db8:1:2::9"))
        );
        assert_ne!(
            source_key(ip("2001:db8:1:3::1")),
            source_key(ip("2001:db8:1:2::1"))
        );
        assert_eq!(source_key(ip("::ffff:192.0.2.1")), ip("192.0.2.1"));
        let c = ConnCounter::new(CAPS);
        let _a = c.try_acquire(ip("2001:db8::1")).expect("1");
        let _b = c.try_acquire(ip("2001:db8::2")).expect("2");
        assert_eq!(
            c.try_acquire(ip("2001:db8::3")).unwrap_err(),
            Admission::OverPerSource
        );
    }
}
