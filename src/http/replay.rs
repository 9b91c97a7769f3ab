//! Zendesk webhook replay protection: a signature that verified is remembered for
//! as long as its timestamp could still be accepted, and the same signature again
//! is refused. A sans-IO table: the handler passes the clock in.
//!
//! The signature is an HMAC over timestamp and body, so its 32 bytes identify the
//! pair: they are the key. Memory is bounded by a hard cap. When the cap is hit
//! the guard refuses new webhooks (503, Zendesk retries) rather than forget
//! entries that are still inside the window: forgetting would let exactly those
//! be replayed. Only requests whose signature verified are recorded, so filling
//! the table takes the signing secret or Zendesk's own volume.

use std::collections::{HashSet, VecDeque};

/// Signatures remembered at most (about 100 bytes each).
pub const MAX_SEEN_SIGNATURES: usize = 65_536;

/// A Zendesk signature's HMAC-SHA256 bytes.
pub type SignatureKey = [u8; 32];

/// Why a verified signature is not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    #[error("this X-Zendesk-Webhook-Signature was already used (replay)")]
    Replayed,
    #[error("too many webhooks within the signature window; retry later")]
    Full,
}

/// The signatures seen within the window, oldest first.
#[derive(Debug)]
pub struct ReplayGuard {
    seen: HashSet<SignatureKey>,
    /// (forget after, key), in the order recorded; the forget time only grows
    /// with the clock.
    order: VecDeque<(i64, SignatureKey)>,
    cap: usize,
}

impl Default for ReplayGuard {
    fn default() -> Self {
        ReplayGuard::new(MAX_SEEN_SIGNATURES)
    }
}

impl ReplayGuard {
    pub fn new(cap: usize) -> ReplayGuard {
        ReplayGuard {
            seen: HashSet::new(),
            order: VecDeque::new(),
            cap,
        }
    }

    /// Record `key`, seen at `now_unix` with signatures accepted within
    /// `window_secs` either way of the clock. A timestamp up to one window ahead
    /// stays acceptable until one window after it, so the key is kept for two.
    pub fn check(
        &mut self,
        key: SignatureKey,
        now_unix: i64,
        window_secs: u64,
    ) -> Result<(), ReplayError> {
        self.prune(now_unix);
        if self.seen.contains(&key) {
            return Err(ReplayError::Replayed);
        }
        if self.seen.len() >= self.cap {
            return Err(ReplayError::Full);
        }
        let keep = i64::try_from(window_secs.saturating_mul(2))
            .unwrap_or(i64::MAX)
            .saturating_add(1);
        self.seen.insert(key);
        self.order.push_back((now_unix.saturating_add(keep), key));
        Ok(())
    }

    /// Forget `key`: the request it came with was not carried out (we answered
    /// 503), so Zendesk's retry of it must not count as a replay.
    pub fn forget(&mut self, key: &SignatureKey) {
        if self.seen.remove(key) {
            self.order.retain(|(_, k)| k != key);
        }
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    fn prune(&mut self, now_unix: i64) {
        while let Some((until, key)) = self.order.front().copied() {
            if until >= now_unix {
                break;
            }
            self.order.pop_front();
            self.seen.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> SignatureKey {
        [n; 32]
    }

    #[test]
    fn the_same_signature_twice_within_the_window_is_a_replay() {
        let mut g = ReplayGuard::default();
        assert_eq!(g.check(key(1), 1000, 300), Ok(()));
        assert_eq!(g.check(key(2), 1000, 300), Ok(()));
        assert_eq!(g.check(key(1), 1001, 300), Err(ReplayError::Replayed));
        assert_eq!(g.check(key(1), 1600, 300), Err(ReplayError::Replayed));
        assert_eq!(g.len(), 2);
    }

    #[test]
    fn entries_go_once_no_timestamp_could_pass_any_more() {
        let mut g = ReplayGuard::default();
        g.check(key(1), 1000, 300).expect("first");
        // Kept for two windows (a timestamp up to 300 s ahead was acceptable).
        assert_eq!(g.check(key(1), 1601, 300), Err(ReplayError::Replayed));
        assert_eq!(g.check(key(2), 1602, 300), Ok(()));
        assert_eq!(g.len(), 1, "key 1 pruned");
        assert_eq!(g.check(key(1), 1602, 300), Ok(()));
    }

    #[test]
    fn a_full_table_refuses_rather_than_forgets() {
        let mut g = ReplayGuard::new(2);
        g.check(key(1), 1000, 300).expect("1");
        g.check(key(2), 1000, 300).expect("2");
        assert_eq!(g.check(key(3), 1010, 300), Err(ReplayError::Full));
        // The remembered ones are still refused.
        assert_eq!(g.check(key(1), 1010, 300), Err(ReplayError::Replayed));
        // Room again once they age out.
        assert_eq!(g.check(key(3), 1700, 300), Ok(()));
        assert_eq!(g.len(), 1);
    }

    #[test]
    fn forgotten_keys_may_come_again() {
        let mut g = ReplayGuard::default();
        g.check(key(1), 1000, 300).expect("1");
        g.forget(&key(1));
        assert!(g.is_empty());
        assert_eq!(g.check(key(1), 1001, 300), Ok(()));
    }
}
