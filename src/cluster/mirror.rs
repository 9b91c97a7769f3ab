//! What this node has told Redis about its live calls, and what it still has to
//! (sans-IO). The events writer hands over every live-call change it commits;
//! the cluster task folds them in here and writes the difference in one script
//! with its next heartbeat. A call that starts and ends between two writes never
//! reaches Redis; a call Redis holds is removed when it ends. The state is
//! bounded by the live calls (a call's entry goes when its end is written).

use crate::store::live_calls::{LiveChange, LiveRow};
use std::collections::{HashMap, HashSet};

/// One write: rows to put (session id, value) and fields to remove.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Batch {
    pub puts: Vec<(String, String)>,
    pub dels: Vec<String>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.puts.is_empty() && self.dels.is_empty()
    }
}

/// This node's live calls, and which of them Redis has as they are now.
#[derive(Debug, Default)]
pub struct Mirror {
    live: HashMap<String, LiveRow>,
    /// In Redis (written and not removed since).
    mirrored: HashSet<String>,
    /// Changed since the last write.
    dirty: HashSet<String>,
}

impl Mirror {
    pub fn apply(&mut self, change: LiveChange) {
        match change {
            LiveChange::Started(row) => {
                self.dirty.insert(row.session_id.clone());
                self.live.insert(row.session_id.clone(), *row);
            }
            LiveChange::Answered { session_id, at_ms } => {
                // A call this node does not hold (forgotten after a claim): nothing.
                if let Some(r) = self.live.get_mut(&session_id) {
                    r.answered_ms = Some(at_ms);
                    self.dirty.insert(session_id);
                }
            }
            LiveChange::Closed { session_id } => {
                if self.live.remove(&session_id).is_some() || self.mirrored.contains(&session_id) {
                    self.dirty.insert(session_id);
                }
            }
        }
    }

    /// What the next write carries.
    pub fn batch(&self) -> Batch {
        let mut b = Batch::default();
        for id in &self.dirty {
            match self.live.get(id) {
                Some(r) => b.puts.push((id.clone(), super::wire::encode(r))),
                None if self.mirrored.contains(id) => b.dels.push(id.clone()),
                None => {}
            }
        }
        b.puts.sort();
        b.dels.sort();
        b
    }

    /// `batch` reached Redis (and nothing was applied since it was taken).
    pub fn written(&mut self, batch: &Batch) {
        for (id, _) in &batch.puts {
            self.mirrored.insert(id.clone());
        }
        for id in &batch.dels {
            self.mirrored.remove(id);
        }
        self.dirty.clear();
    }

    /// Redis lost this node's live set (another node took it for dead): the
    /// calls in `claimed` were ended by that node and are forgotten here; every
    /// other live call is written again.
    pub fn rejoin(&mut self, claimed: &HashSet<String>) {
        self.live.retain(|id, _| !claimed.contains(id));
        self.mirrored.clear();
        self.dirty = self.live.keys().cloned().collect();
    }

    /// The calls of `ids` this node holds live.
    pub fn held(&self, ids: &HashSet<String>) -> Vec<String> {
        let mut v: Vec<String> = ids
            .iter()
            .filter(|id| self.live.contains_key(*id))
            .cloned()
            .collect();
        v.sort();
        v
    }

    pub fn live_calls(&self) -> usize {
        self.live.len()
    }

    pub fn is_clean(&self) -> bool {
        self.dirty.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(sid: &str) -> LiveRow {
        LiveRow {
            session_id: sid.into(),
            org_id: "o".into(),
            node_id: "n1".into(),
            started_ms: 10,
            answered_ms: None,
            record: b"{}".to_vec(),
        }
    }
    fn started(sid: &str) -> LiveChange {
        LiveChange::Started(Box::new(row(sid)))
    }
    fn closed(sid: &str) -> LiveChange {
        LiveChange::Closed {
            session_id: sid.into(),
        }
    }
    fn ids(b: &Batch) -> (Vec<&str>, Vec<&str>) {
        (
            b.puts.iter().map(|(i, _)| i.as_str()).collect(),
            b.dels.iter().map(String::as_str).collect(),
        )
    }

    #[test]
    fn a_call_that_starts_and_ends_between_writes_is_never_written() {
        let mut m = Mirror::default();
        m.apply(started("a"));
        m.apply(closed("a"));
        assert!(m.batch().is_empty());
        assert_eq!(m.live_calls(), 0);
    }

    #[test]
    fn a_written_call_is_removed_when_it_ends_and_then_forgotten() {
        let mut m = Mirror::default();
        m.apply(started("a"));
        m.apply(started("b"));
        let b = m.batch();
        assert_eq!(ids(&b), (vec!["a", "b"], vec![]));
        m.written(&b);
        assert!(m.batch().is_empty() && m.is_clean());
        m.apply(LiveChange::Answered {
            session_id: "a".into(),
            at_ms: 99,
        });
        let b = m.batch();
        assert_eq!(ids(&b), (vec!["a"], vec![]));
        assert!(
            b.puts[0].1.contains("\"answered_ms\":99"),
            "{}",
            b.puts[0].1
        );
        m.written(&b);
        m.apply(closed("a"));
        let b = m.batch();
        assert_eq!(ids(&b), (vec![], vec!["a"]));
        m.written(&b);
        // Nothing left of "a": a late change for it writes nothing.
        m.apply(closed("a"));
        m.apply(LiveChange::Answered {
            session_id: "a".into(),
            at_ms: 1,
        });
        assert!(m.batch().is_empty());
        assert_eq!(m.live_calls(), 1);
    }

    #[test]
    fn a_failed_write_is_carried_into_the_next() {
        let mut m = Mirror::default();
        m.apply(started("a"));
        let _lost = m.batch(); // Redis did not answer: not `written`.
        m.apply(started("b"));
        assert_eq!(ids(&m.batch()), (vec!["a", "b"], vec![]));
    }

    #[test]
    fn after_a_rejoin_the_claimed_calls_are_forgotten_and_the_rest_written_again() {
        let mut m = Mirror::default();
        for s in ["a", "b", "c"] {
            m.apply(started(s));
        }
        let b = m.batch();
        m.written(&b);
        let claimed: HashSet<String> = ["b".to_owned(), "zz".to_owned()].into_iter().collect();
        assert_eq!(m.held(&claimed), ["b"]);
        m.rejoin(&claimed);
        assert!(m.held(&claimed).is_empty());
        assert_eq!(ids(&m.batch()), (vec!["a", "c"], vec![]));
        // The claimed call's own end, later, writes nothing.
        m.apply(closed("b"));
        assert_eq!(ids(&m.batch()), (vec!["a", "c"], vec![]));
    }
}
