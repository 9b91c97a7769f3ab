//! The packet index of SRTP (RFC 3711 3.3.1, Appendix A: the rollover
//! counter guessed from the sequence number) and the replay window (3.3.2).
//! Pure: a context feeds them sequence numbers and indices.

/// Packets behind the highest index still accepted once (at least 64, RFC
/// 3711 3.3.2); one bit each in a `u128`.
pub const REPLAY_WINDOW: u64 = 128;

/// RFC 3711 Appendix A: the index (ROC * 2^16 + SEQ) of a packet with
/// sequence number `seq`, given `highest`, the highest index seen from
/// that SSRC (its ROC and s_l). `None` for a packet that would need a ROC
/// below zero (older than the stream's start: never valid).
pub fn estimate(highest: u64, seq: u16) -> Option<u64> {
    let roc = highest >> 16;
    let s_l = (highest & 0xffff) as u16;
    let v = if s_l < 0x8000 {
        if seq > s_l && seq - s_l > 0x8000 {
            roc.checked_sub(1)?
        } else {
            roc
        }
    } else if s_l - 0x8000 > seq {
        roc + 1
    } else {
        roc
    };
    Some((v << 16) | u64::from(seq))
}

/// Why the window refused a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Seen already.
    Replayed,
    /// Further behind the highest index than the window reaches.
    TooOld,
}

/// The replay window of one SSRC (RFC 3711 3.3.2): the highest index
/// authenticated and a bitmap of the `REPLAY_WINDOW` below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayWindow {
    highest: u64,
    // Bit n: index `highest - n` has been received.
    seen: u128,
}

impl ReplayWindow {
    /// A window whose first packet had index `index`.
    pub fn new(index: u64) -> ReplayWindow {
        ReplayWindow {
            highest: index,
            seen: 1,
        }
    }

    pub fn highest(&self) -> u64 {
        self.highest
    }

    /// Whether `index` may be accepted; call before authenticating,
    /// `accept` after.
    pub fn check(&self, index: u64) -> Result<(), Refusal> {
        if index > self.highest {
            return Ok(());
        }
        let behind = self.highest - index;
        if behind >= REPLAY_WINDOW {
            Err(Refusal::TooOld)
        } else if self.seen & (1u128 << behind) != 0 {
            Err(Refusal::Replayed)
        } else {
            Ok(())
        }
    }

    /// Record an authenticated packet (already `check`ed).
    pub fn accept(&mut self, index: u64) {
        if index > self.highest {
            let ahead = index - self.highest;
            self.seen = if ahead >= REPLAY_WINDOW {
                0
            } else {
                self.seen << ahead
            };
            self.seen |= 1;
            self.highest = index;
        } else {
            let behind = self.highest - index;
            if behind < REPLAY_WINDOW {
                self.seen |= 1u128 << behind;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimate_follows_the_sequence_across_the_wrap() {
        // Just before the wrap, 0 and 1 belong to the next ROC.
        let highest = 65_534;
        assert_eq!(estimate(highest, 65_535), Some(65_535));
        assert_eq!(estimate(highest, 0), Some(65_536));
        assert_eq!(estimate(highest, 1), Some(65_537));
        // After the wrap (ROC 1, s_l 2), a late 65,533 belongs to ROC 0.
        let highest = 65_536 + 2;
        assert_eq!(estimate(highest, 65_533), Some(65_533));
        assert_eq!(estimate(highest, 3), Some(65_539));
        // Half the sequence space either way decides.
        assert_eq!(estimate(40_000, 7_000), Some(65_536 + 7_000));
        assert_eq!(estimate(40_000, 8_000), Some(8_000));
    }

    #[test]
    fn estimate_never_goes_below_the_first_roc() {
        // s_l small, seq far above: ROC - 1, which does not exist at ROC 0.
        assert_eq!(estimate(10, 60_000), None);
        assert_eq!(estimate(65_536 + 10, 60_000), Some(60_000));
    }

    #[test]
    fn window_refuses_replays_and_the_too_old() {
        let mut w = ReplayWindow::new(1000);
        assert_eq!(w.check(1000), Err(Refusal::Replayed));
        assert_eq!(w.check(1001), Ok(()));
        w.accept(1001);
        // Reordered but new: accepted once.
        assert_eq!(w.check(999), Ok(()));
        w.accept(999);
        assert_eq!(w.check(999), Err(Refusal::Replayed));
        assert_eq!(w.check(1001 - REPLAY_WINDOW), Err(Refusal::TooOld));
        assert_eq!(w.check(1001 - REPLAY_WINDOW + 1), Ok(()));
        // A jump beyond the window forgets everything below it.
        w.accept(5000);
        assert_eq!(w.highest(), 5000);
        assert_eq!(w.check(4999), Ok(()));
        assert_eq!(w.check(1001), Err(Refusal::TooOld));
    }

    #[test]
    fn window_tracks_reordering_near_the_wrap() {
        let mut w = ReplayWindow::new(65_530);
        for seq in [65_531u16, 65_533, 0, 65_532, 65_535, 1, 65_534] {
            let index = estimate(w.highest(), seq).expect("index");
            assert_eq!(w.check(index), Ok(()), "seq {seq}");
            w.accept(index);
        }
        assert_eq!(w.highest(), 65_537);
        for seq in [65_531u16, 0, 65_534, 1] {
            let index = estimate(w.highest(), seq).expect("index");
            assert_eq!(w.check(index), Err(Refusal::Replayed), "seq {seq}");
        }
    }
}
