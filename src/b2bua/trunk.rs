//! Per-trunk limits beside the global ones: concurrent calls (a slot held by the
//! call's task and given back when the slot is dropped, so every way a call ends
//! gives it back exactly once) and calls per second (a token bucket).

use super::TokenBucket;
use crate::config::Trunk;
use crate::metrics::Metrics;
use ipnet::IpNet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// One trunk's live state.
#[derive(Debug)]
struct TrunkState {
    max_calls: Option<usize>,
    active: AtomicUsize,
    cps: Option<Mutex<TokenBucket>>,
    /// The trunk's media CIDRs, for the media relay's latching.
    media: Arc<[IpNet]>,
    /// The trunk's `srtp`, for its calls' caller leg.
    srtp: crate::config::srtp::SrtpPolicy,
}

/// Every trunk's limits, in configuration order (indexed like `Settings::trunks`).
#[derive(Debug)]
pub struct TrunkLimits {
    trunks: Box<[TrunkState]>,
    metrics: Arc<Metrics>,
}

/// Why a trunk's limit refused a new call (503).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrunkRefusal {
    MaxCalls,
    CallsPerSecond,
}

/// One call's place in its trunk's `max_calls`; given back on drop.
#[derive(Debug)]
pub struct TrunkSlot {
    limits: Arc<TrunkLimits>,
    index: usize,
}

impl TrunkLimits {
    pub fn new(trunks: &[Trunk], metrics: Arc<Metrics>) -> Arc<TrunkLimits> {
        metrics.trunks.init(trunks.iter().map(|t| t.name.as_str()));
        Arc::new(TrunkLimits {
            trunks: trunks
                .iter()
                .map(|t| TrunkState {
                    max_calls: t.max_calls,
                    active: AtomicUsize::new(0),
                    cps: t
                        .max_calls_per_second
                        .map(|r| Mutex::new(TokenBucket::new(f64::from(r)))),
                    media: t.media.clone(),
                    srtp: t.srtp,
                })
                .collect(),
            metrics,
        })
    }

    /// A new call from trunk `index`: a slot, or which limit refuses it (counted).
    pub fn admit(self: &Arc<Self>, index: usize, now: Instant) -> Result<TrunkSlot, TrunkRefusal> {
        let Some(t) = self.trunks.get(index) else {
            // Not a configured trunk: nothing of ours limits it.
            return Err(TrunkRefusal::MaxCalls);
        };
        let refused = |why| {
            if let Some(c) = self.metrics.trunks.get(index) {
                Metrics::inc(&c.calls_rejected_limit_total);
            }
            Err(why)
        };
        if !take_slot(&t.active, t.max_calls) {
            return refused(TrunkRefusal::MaxCalls);
        }
        // From here the slot is held: dropping it gives it back.
        let slot = TrunkSlot {
            limits: self.clone(),
            index,
        };
        if let Some(c) = self.metrics.trunks.get(index) {
            Metrics::up(&c.calls_active);
        }
        if let Some(bucket) = &t.cps {
            if !bucket.lock().map(|mut b| b.take(now)).unwrap_or(false) {
                drop(slot);
                return refused(TrunkRefusal::CallsPerSecond);
            }
        }
        Ok(slot)
    }

    /// Calls from trunk `index` in progress.
    pub fn active(&self, index: usize) -> usize {
        self.trunks
            .get(index)
            .map_or(0, |t| t.active.load(Ordering::Relaxed))
    }
}

/// Take one of `max` places (any number when `None`); false when all are taken.
pub(super) fn take_slot(active: &AtomicUsize, max: Option<usize>) -> bool {
    active
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| match max {
            Some(m) if n >= m => None,
            _ => Some(n + 1),
        })
        .is_ok()
}

impl TrunkSlot {
    /// The trunk this call came from (index into `Settings::trunks`).
    pub fn trunk(&self) -> usize {
        self.index
    }

    /// The trunk's media CIDRs (empty when none are configured).
    pub fn media(&self) -> Arc<[IpNet]> {
        self.limits.trunks[self.index].media.clone()
    }

    /// The trunk's `srtp`: the policy of its calls' caller leg.
    pub fn srtp(&self) -> crate::config::srtp::SrtpPolicy {
        self.limits.trunks[self.index].srtp
    }

    /// Count the call as started from its trunk.
    pub fn started(&self) {
        if let Some(c) = self.limits.metrics.trunks.get(self.index) {
            Metrics::inc(&c.calls_started_total);
        }
    }
}

impl Drop for TrunkSlot {
    fn drop(&mut self) {
        self.limits.trunks[self.index]
            .active
            .fetch_sub(1, Ordering::AcqRel);
        if let Some(c) = self.limits.metrics.trunks.get(self.index) {
            Metrics::dec(&c.calls_active);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::trunk::{compile, TrunkConfig};
    use std::time::Duration;

    fn limits(max_calls: Option<usize>, cps: Option<u32>) -> (Arc<TrunkLimits>, Arc<Metrics>) {
        let trunks = compile(&[TrunkConfig {
            name: "carrier".into(),
            sources: vec!["192.0.2.1".into()],
            media: vec!["192.0.2.0/24".into()],
            max_calls,
            max_calls_per_second: cps,
            ..Default::default()
        }])
        .unwrap();
        let metrics = Arc::new(Metrics::default());
        (TrunkLimits::new(&trunks, metrics.clone()), metrics)
    }

    #[test]
    fn max_calls_holds_until_a_slot_is_dropped_and_each_drop_gives_back_one() {
        let (l, m) = limits(Some(2), None);
        let now = Instant::now();
        let a = l.admit(0, now).unwrap();
        let b = l.admit(0, now).unwrap();
        assert_eq!(l.admit(0, now).unwrap_err(), TrunkRefusal::MaxCalls);
        assert_eq!(l.active(0), 2);
        drop(a);
        assert_eq!(l.active(0), 1);
        let c = l.admit(0, now).unwrap();
        assert_eq!(l.admit(0, now).unwrap_err(), TrunkRefusal::MaxCalls);
        drop(b);
        drop(c);
        assert_eq!(l.active(0), 0);
        let counters = m.trunks.get(0).unwrap();
        assert_eq!(counters.calls_active.load(Ordering::Relaxed), 0);
        assert_eq!(
            counters.calls_rejected_limit_total.load(Ordering::Relaxed),
            2
        );
    }

    #[test]
    fn calls_per_second_refuses_past_the_burst_and_gives_the_slot_back() {
        let (l, m) = limits(None, Some(2));
        let t0 = Instant::now();
        let _a = l.admit(0, t0).unwrap();
        let _b = l.admit(0, t0).unwrap();
        assert_eq!(l.admit(0, t0).unwrap_err(), TrunkRefusal::CallsPerSecond);
        assert_eq!(l.active(0), 2, "a refused call holds no slot");
        assert!(l.admit(0, t0 + Duration::from_millis(600)).is_ok());
        assert_eq!(
            m.trunks
                .get(0)
                .unwrap()
                .calls_rejected_limit_total
                .load(Ordering::Relaxed),
            1
        );
    }

    #[test]
    fn no_limit_configured_admits_all_and_the_slot_carries_the_media_cidrs() {
        let (l, _) = limits(None, None);
        let slots: Vec<_> = (0..100)
            .map(|_| l.admit(0, Instant::now()).unwrap())
            .collect();
        assert_eq!(slots[0].media().len(), 1);
        assert_eq!(slots[0].trunk(), 0);
        assert_eq!(l.active(0), 100);
        drop(slots);
        assert_eq!(l.active(0), 0);
    }

    #[test]
    fn an_unknown_trunk_index_is_refused_not_a_panic() {
        let (l, _) = limits(None, None);
        assert!(l.admit(7, Instant::now()).is_err());
    }
}
