//! How many sessions a node holds at once, bounded: a place is taken when a
//! session is created and given back when it leaves. Lock-free; never above the
//! bound, never below zero (even if a bug gave a place back twice).

use std::sync::atomic::{AtomicUsize, Ordering};

#[derive(Debug)]
pub(crate) struct Slots {
    taken: AtomicUsize,
    capacity: usize,
}

impl Slots {
    pub(crate) fn new(capacity: usize) -> Slots {
        Slots {
            taken: AtomicUsize::new(0),
            capacity,
        }
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// Takes a place; false when all `capacity` are taken.
    pub(crate) fn try_take(&self) -> bool {
        self.taken
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.capacity).then_some(n + 1)
            })
            .is_ok()
    }

    pub(crate) fn give_back(&self) {
        let _ = self
            .taken
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }

    pub(crate) fn taken(&self) -> usize {
        self.taken.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_above_the_bound_nor_below_zero() {
        let s = Slots::new(2);
        assert!(s.try_take() && s.try_take());
        assert!(!s.try_take());
        assert_eq!(s.taken(), 2);
        s.give_back();
        s.give_back();
        s.give_back();
        assert_eq!(s.taken(), 0);
        assert!(s.try_take());
    }
}
