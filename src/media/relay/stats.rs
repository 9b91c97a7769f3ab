//! Per-stream counters, packet loss (RFC 3550 A.1) and interarrival jitter
//! (RFC 3550 A.8). The sequence and jitter tracking is pure: the relay task
//! feeds it header fields and arrival times, tests feed it synthetic ones.

use std::time::Duration;

// RFC 3550 A.1: a jump larger than this is a restart, not loss.
const MAX_DROPOUT: u16 = 3000;
// RFC 3550 A.1: packets this far behind the highest seen are reordered ones.
const MAX_MISORDER: u16 = 100;
const RTP_SEQ_MOD: u64 = 1 << 16;

/// What handoff received from one side's peer. `lost` and `jitter` cover RTP
/// only; `bytes` counts whole UDP payloads (header included).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ReceiveStats {
    /// RTP packets accepted and forwarded.
    pub packets: u64,
    pub bytes: u64,
    pub rtcp_packets: u64,
    pub rtcp_bytes: u64,
    /// Packets missing from the sequence space (RFC 3550 A.3), summed over
    /// every SSRC the peer used; never negative here.
    pub lost: u64,
    /// Interarrival jitter in timestamp units (RFC 3550 A.8).
    pub jitter: u32,
    /// The same jitter in milliseconds, at the configured clock rate.
    pub jitter_ms: f64,
    /// Packets dropped: not RTP/RTCP, or from a source other than the peer.
    pub dropped: u64,
    /// Of `dropped`, those from a source the peer may not use (strict
    /// latching: neither its SDP address nor an allowed network, or not
    /// where it latched).
    pub refused: u64,
}

/// What handoff sent to one side's peer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SendStats {
    pub packets: u64,
    pub bytes: u64,
    pub rtcp_packets: u64,
    pub rtcp_bytes: u64,
    /// Packets that could not be sent: no known address for the peer yet, or
    /// the socket refused them (full send buffer).
    pub unsent: u64,
}

/// SRTP on one side: what failed, by cause. Each refused packet is also in
/// `ReceiveStats::dropped` (received) or `SendStats::unsent` (sent).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SrtpStats {
    /// Received SRTP/SRTCP packets whose tag did not verify (forged,
    /// corrupted, or under another key), or too short to carry one.
    pub auth_failures: u64,
    /// Received packets already seen, or older than the replay window.
    pub replays: u64,
    /// Packets of an SSRC beyond the per-context bound, received or sent.
    pub ssrc_overflows: u64,
    /// Packets that could not be protected for this side (no room for the
    /// tag, SRTCP index exhausted).
    pub protect_failures: u64,
}

impl SrtpStats {
    /// What grew from `before` to `self`.
    pub fn since(&self, before: &SrtpStats) -> SrtpStats {
        SrtpStats {
            auth_failures: self.auth_failures.saturating_sub(before.auth_failures),
            replays: self.replays.saturating_sub(before.replays),
            ssrc_overflows: self.ssrc_overflows.saturating_sub(before.ssrc_overflows),
            protect_failures: self
                .protect_failures
                .saturating_sub(before.protect_failures),
        }
    }

    pub fn is_zero(&self) -> bool {
        *self == SrtpStats::default()
    }
}

/// Both directions of one side (caller or far).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SideStats {
    /// From this side's peer into handoff.
    pub received: ReceiveStats,
    /// From handoff out to this side's peer.
    pub sent: SendStats,
    /// SRTP failures on this side (zero on a plain leg).
    pub srtp: SrtpStats,
}

/// A snapshot of a whole relay.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RelayStats {
    pub caller: SideStats,
    /// The current far leg; earlier far legs are returned by `switch_far`.
    pub far: SideStats,
}

/// Sequence state for one SSRC (RFC 3550 A.1 `source`).
#[derive(Debug, Clone)]
struct Source {
    ssrc: u32,
    max_seq: u16,
    cycles: u64,
    base_seq: u64,
    bad_seq: u64,
    received: u64,
}

impl Source {
    fn new(ssrc: u32, seq: u16) -> Self {
        Source {
            ssrc,
            max_seq: seq,
            cycles: 0,
            base_seq: u64::from(seq),
            bad_seq: RTP_SEQ_MOD + 1,
            received: 1,
        }
    }

    fn expected(&self) -> u64 {
        (self.cycles + u64::from(self.max_seq)) - self.base_seq + 1
    }

    fn lost(&self) -> u64 {
        self.expected().saturating_sub(self.received)
    }
}

/// Loss and jitter tracking for the RTP stream one peer sends.
#[derive(Debug, Clone)]
pub(crate) struct StreamState {
    clock_rate: u32,
    telephone_event_pt: Option<u8>,
    source: Option<Source>,
    // Loss of SSRCs the peer used before the current one.
    lost_before: u64,
    jitter: f64,
    // (transit, payload type) of the previous packet used for jitter.
    last_transit: Option<(u32, u8)>,
}

/// The header fields the tracker needs from one RTP packet.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RtpFields {
    pub ssrc: u32,
    pub seq: u16,
    pub timestamp: u32,
    pub payload_type: u8,
}

impl StreamState {
    pub(crate) fn new(clock_rate: u32, telephone_event_pt: Option<u8>) -> Self {
        StreamState {
            clock_rate: clock_rate.max(1),
            telephone_event_pt,
            source: None,
            lost_before: 0,
            jitter: 0.0,
            last_transit: None,
        }
    }

    /// Account for one RTP packet that arrived `arrival` after some fixed
    /// epoch (the same epoch for every packet of the stream).
    pub(crate) fn update(&mut self, p: RtpFields, arrival: Duration) {
        let counted = self.update_seq(p.ssrc, p.seq);
        if counted {
            self.update_jitter(p, arrival);
        }
    }

    // RFC 3550 A.1 `update_seq`, without probation (we forward regardless;
    // this only feeds statistics). Returns whether the packet counts.
    fn update_seq(&mut self, ssrc: u32, seq: u16) -> bool {
        let s = match &mut self.source {
            Some(s) if s.ssrc == ssrc => s,
            _ => {
                self.restart(ssrc, seq);
                return true;
            }
        };
        let udelta = seq.wrapping_sub(s.max_seq);
        if udelta < MAX_DROPOUT {
            if seq < s.max_seq {
                s.cycles += RTP_SEQ_MOD;
            }
            s.max_seq = seq;
        } else if udelta <= u16::MAX - MAX_MISORDER {
            // A large jump: two in a row means the sender restarted.
            if u64::from(seq) == s.bad_seq {
                self.restart(ssrc, seq);
                return true;
            }
            s.bad_seq = (u64::from(seq) + 1) & (RTP_SEQ_MOD - 1);
            return false;
        }
        // else: duplicate or reordered; counted as received.
        s.received += 1;
        true
    }

    fn restart(&mut self, ssrc: u32, seq: u16) {
        if let Some(old) = self.source.take() {
            self.lost_before += old.lost();
        }
        self.source = Some(Source::new(ssrc, seq));
        self.last_transit = None;
    }

    // RFC 3550 A.8. Telephone-event packets repeat their timestamp for the
    // whole event, so they are left out; a payload type change restarts the
    // difference so one codec's clock is never compared with another's.
    fn update_jitter(&mut self, p: RtpFields, arrival: Duration) {
        if Some(p.payload_type) == self.telephone_event_pt {
            return;
        }
        let arrival_units =
            (arrival.as_nanos() * u128::from(self.clock_rate) / 1_000_000_000) as u32;
        let transit = arrival_units.wrapping_sub(p.timestamp);
        if let Some((last, pt)) = self.last_transit {
            if pt == p.payload_type {
                let d = f64::from((transit.wrapping_sub(last) as i32).unsigned_abs());
                self.jitter += (d - self.jitter) / 16.0;
            }
        }
        self.last_transit = Some((transit, p.payload_type));
    }

    pub(crate) fn lost(&self) -> u64 {
        self.lost_before + self.source.as_ref().map_or(0, Source::lost)
    }

    pub(crate) fn jitter(&self) -> u32 {
        self.jitter as u32
    }

    pub(crate) fn jitter_ms(&self) -> f64 {
        self.jitter * 1000.0 / f64::from(self.clock_rate)
    }

    /// Copy loss and jitter into a receive snapshot.
    pub(crate) fn fill(&self, r: &mut ReceiveStats) {
        r.lost = self.lost();
        r.jitter = self.jitter();
        r.jitter_ms = self.jitter_ms();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkt(seq: u16, timestamp: u32) -> RtpFields {
        RtpFields {
            ssrc: 7,
            seq,
            timestamp,
            payload_type: 0,
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn in_order_stream_has_no_loss() {
        let mut s = StreamState::new(8000, Some(101));
        for i in 0..100u16 {
            s.update(pkt(i, u32::from(i) * 160), ms(u64::from(i) * 20));
        }
        assert_eq!(s.lost(), 0);
    }

    #[test]
    fn gap_counts_as_loss() {
        let mut s = StreamState::new(8000, None);
        for i in (0..20u16).filter(|i| !(5..8).contains(i)) {
            s.update(pkt(i, u32::from(i) * 160), ms(u64::from(i) * 20));
        }
        assert_eq!(s.lost(), 3);
    }

    #[test]
    fn loss_across_sequence_wraparound() {
        let mut s = StreamState::new(8000, None);
        let mut seq = 65530u16;
        for i in 0..12u32 {
            if seq != 65535 && seq != 2 {
                s.update(pkt(seq, i * 160), ms(u64::from(i) * 20));
            }
            seq = seq.wrapping_add(1);
        }
        assert_eq!(s.lost(), 2);
    }

    #[test]
    fn reordered_and_duplicate_packets_are_not_loss() {
        let mut s = StreamState::new(8000, None);
        for seq in [0u16, 1, 3, 2, 4, 4, 5] {
            s.update(pkt(seq, u32::from(seq) * 160), ms(u64::from(seq) * 20));
        }
        assert_eq!(s.lost(), 0);
    }

    #[test]
    fn one_big_jump_is_ignored_two_in_a_row_restart() {
        let mut s = StreamState::new(8000, None);
        for seq in 0..10u16 {
            s.update(pkt(seq, 0), ms(0));
        }
        s.update(pkt(30000, 0), ms(0));
        assert_eq!(s.lost(), 0);
        s.update(pkt(30001, 0), ms(0));
        s.update(pkt(30002, 0), ms(0));
        assert_eq!(s.lost(), 0);
    }

    #[test]
    fn ssrc_change_keeps_earlier_loss() {
        let mut s = StreamState::new(8000, None);
        s.update(pkt(0, 0), ms(0));
        s.update(pkt(2, 0), ms(0));
        let other = RtpFields {
            ssrc: 9,
            seq: 500,
            timestamp: 0,
            payload_type: 0,
        };
        s.update(other, ms(0));
        assert_eq!(s.lost(), 1);
    }

    #[test]
    fn jitter_is_zero_for_perfect_pacing() {
        let mut s = StreamState::new(8000, Some(101));
        for i in 0..200u32 {
            s.update(pkt(i as u16, 1_000 + i * 160), ms(u64::from(i) * 20));
        }
        assert_eq!(s.jitter(), 0);
        assert_eq!(s.jitter_ms(), 0.0);
    }

    #[test]
    fn jitter_grows_with_uneven_arrival() {
        let mut s = StreamState::new(8000, None);
        for i in 0..200u32 {
            let wobble = if i % 2 == 0 { 0 } else { 5 };
            s.update(pkt(i as u16, i * 160), ms(u64::from(i) * 20 + wobble));
        }
        // Alternating 5 ms offsets: |D| = 40 units each time; J -> 40.
        assert!((35..=40).contains(&s.jitter()), "jitter {}", s.jitter());
    }

    #[test]
    fn telephone_events_do_not_feed_jitter() {
        let mut s = StreamState::new(8000, Some(101));
        for i in 0..10u32 {
            let event = RtpFields {
                ssrc: 7,
                seq: i as u16,
                timestamp: 0,
                payload_type: 101,
            };
            s.update(event, ms(u64::from(i) * 50));
        }
        assert_eq!(s.jitter(), 0);
        assert_eq!(s.lost(), 0);
    }
}
