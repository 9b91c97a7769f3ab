//! A small cache of resolution answers: bounded in entries, each kept for the TTL of
//! its records (capped), negative answers briefly. The clock is passed in.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// The longest an answer is kept, whatever its records say.
pub const MAX_TTL: Duration = Duration::from_secs(300);
/// How long "no such name" or "no records" is believed.
pub const NEGATIVE_TTL: Duration = Duration::from_secs(5);

/// When an answer obtained at `now` expires: at its records' own expiry, capped at
/// [`MAX_TTL`]; a negative answer after [`NEGATIVE_TTL`].
pub fn expiry(now: Instant, valid_until: Option<Instant>, negative: bool) -> Instant {
    if negative {
        return now + NEGATIVE_TTL;
    }
    let cap = now + MAX_TTL;
    valid_until.map_or(cap, |v| v.min(cap))
}

pub struct TtlCache<K, V> {
    entries: HashMap<K, (V, Instant)>,
    capacity: usize,
}

impl<K: Eq + Hash + Clone, V: Clone> TtlCache<K, V> {
    pub fn new(capacity: usize) -> Self {
        TtlCache {
            entries: HashMap::new(),
            capacity: capacity.max(1),
        }
    }

    /// The answer for `key` if it has not expired by `now`.
    pub fn get(&mut self, key: &K, now: Instant) -> Option<V> {
        match self.entries.get(key) {
            Some((v, until)) if now < *until => Some(v.clone()),
            Some(_) => {
                self.entries.remove(key);
                None
            }
            None => None,
        }
    }

    /// Keep `value` until `until`. When full, expired entries go first, then the one
    /// that would expire soonest.
    pub fn insert(&mut self, key: K, value: V, until: Instant, now: Instant) {
        if until <= now {
            return;
        }
        if self.entries.len() >= self.capacity && !self.entries.contains_key(&key) {
            self.entries.retain(|_, (_, u)| now < *u);
            if self.entries.len() >= self.capacity {
                let soonest = self
                    .entries
                    .iter()
                    .min_by_key(|(_, (_, u))| *u)
                    .map(|(k, _)| k.clone());
                if let Some(k) = soonest {
                    self.entries.remove(&k);
                }
            }
        }
        self.entries.insert(key, (value, until));
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_is_served_until_its_expiry_then_dropped() {
        let t0 = Instant::now();
        let mut c = TtlCache::new(4);
        c.insert("a", 1, t0 + Duration::from_secs(10), t0);
        assert_eq!(c.get(&"a", t0 + Duration::from_secs(9)), Some(1));
        assert_eq!(c.get(&"a", t0 + Duration::from_secs(10)), None);
        assert_eq!(c.len(), 0);
    }

    #[test]
    fn record_ttl_is_capped_and_negative_answers_are_brief() {
        let t0 = Instant::now();
        let long = t0 + Duration::from_secs(86_400);
        assert_eq!(expiry(t0, Some(long), false), t0 + MAX_TTL);
        let short = t0 + Duration::from_secs(30);
        assert_eq!(expiry(t0, Some(short), false), short);
        assert_eq!(expiry(t0, None, false), t0 + MAX_TTL);
        assert_eq!(expiry(t0, Some(long), true), t0 + NEGATIVE_TTL);
    }

    #[test]
    fn a_full_cache_drops_expired_entries_first() {
        let t0 = Instant::now();
        let mut c = TtlCache::new(2);
        c.insert("old", 1, t0 + Duration::from_secs(1), t0);
        c.insert("live", 2, t0 + Duration::from_secs(100), t0);
        let later = t0 + Duration::from_secs(5);
        c.insert("new", 3, later + Duration::from_secs(50), later);
        assert_eq!(c.len(), 2);
        assert_eq!(c.get(&"live", later), Some(2));
        assert_eq!(c.get(&"new", later), Some(3));
    }

    #[test]
    fn a_full_cache_of_live_entries_drops_the_one_expiring_soonest() {
        let t0 = Instant::now();
        let mut c = TtlCache::new(2);
        c.insert("soon", 1, t0 + Duration::from_secs(10), t0);
        c.insert("late", 2, t0 + Duration::from_secs(100), t0);
        c.insert("new", 3, t0 + Duration::from_secs(50), t0);
        assert_eq!(c.len(), 2);
        assert_eq!(c.get(&"soon", t0), None);
        assert_eq!(c.get(&"late", t0), Some(2));
    }

    #[test]
    fn replacing_a_key_in_a_full_cache_evicts_nothing() {
        let t0 = Instant::now();
        let mut c = TtlCache::new(2);
        c.insert("a", 1, t0 + Duration::from_secs(10), t0);
        c.insert("b", 2, t0 + Duration::from_secs(10), t0);
        c.insert("a", 3, t0 + Duration::from_secs(20), t0);
        assert_eq!(c.get(&"a", t0), Some(3));
        assert_eq!(c.get(&"b", t0), Some(2));
    }

    #[test]
    fn an_already_expired_answer_is_not_kept() {
        let t0 = Instant::now();
        let mut c = TtlCache::new(2);
        c.insert("a", 1, t0, t0);
        assert_eq!(c.len(), 0);
    }
}
