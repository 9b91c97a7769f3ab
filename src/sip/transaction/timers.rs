//! RFC 3261 Table 4 (plus RFC 6026's Timers L and M), in one place.
//!
//! Every machine asks this table for its durations so a transport-dependent
//! value ("0s for TCP/SCTP") is decided here and nowhere else.

use std::time::Duration;

/// The transaction timers, named as RFC 3261 17 and RFC 6026 name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Timer {
    /// INVITE client: request retransmit interval (17.1.1.2).
    A,
    /// INVITE client: transaction timeout (17.1.1.2).
    B,
    /// INVITE client: wait time for response retransmits in Completed (17.1.1.2).
    D,
    /// Non-INVITE client: request retransmit interval (17.1.2.2).
    E,
    /// Non-INVITE client: transaction timeout (17.1.2.2).
    F,
    /// INVITE server: response retransmit interval (17.2.1).
    G,
    /// INVITE server: wait time for ACK receipt (17.2.1).
    H,
    /// INVITE server: wait time for ACK retransmits in Confirmed (17.2.1).
    I,
    /// Non-INVITE server: wait time for request retransmits in Completed (17.2.2).
    J,
    /// Non-INVITE client: wait time for response retransmits in Completed (17.1.2.2).
    K,
    /// INVITE server: wait time for ACK and INVITE retransmits in Accepted (RFC 6026 8.7).
    L,
    /// INVITE client: wait time for 2xx retransmits in Accepted (RFC 6026 8.4).
    M,
}

impl Timer {
    /// Every timer, so callers (and tests) can iterate the whole table.
    pub const ALL: [Timer; 12] = [
        Timer::A,
        Timer::B,
        Timer::D,
        Timer::E,
        Timer::F,
        Timer::G,
        Timer::H,
        Timer::I,
        Timer::J,
        Timer::K,
        Timer::L,
        Timer::M,
    ];
}

/// The three base values of Table 4 from which every timer is derived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerConfig {
    /// RTT estimate.
    pub t1: Duration,
    /// Maximum retransmit interval for non-INVITE requests and INVITE responses.
    pub t2: Duration,
    /// Maximum duration a message will remain in the network.
    pub t4: Duration,
}

impl Default for TimerConfig {
    /// RFC 3261 Table 4 recommended values: T1 500ms, T2 4s, T4 5s.
    fn default() -> Self {
        Self {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
        }
    }
}

/// RFC 3261 17.1.1.2: Timer D is "at least 32 seconds" on unreliable transports.
const TIMER_D_FLOOR: Duration = Duration::from_secs(32);

impl TimerConfig {
    /// 64*T1, the transaction lifetime bound behind B, F, H, J, L and M.
    /// Saturates so an absurd configured T1 cannot panic.
    fn sixty_four_t1(&self) -> Duration {
        self.t1.saturating_mul(64)
    }

    /// Table 4: timers that only absorb retransmissions are 0 on reliable
    /// transports, because a reliable transport does not retransmit.
    fn unless_reliable(reliable: bool, d: Duration) -> Duration {
        if reliable {
            Duration::ZERO
        } else {
            d
        }
    }

    /// Next retransmit interval for Timers E and G: doubles, capped at T2
    /// (RFC 3261 17.1.2.2 and 17.2.1).
    pub(super) fn doubled_capped_at_t2(&self, interval: Duration) -> Duration {
        interval.saturating_mul(2).min(self.t2)
    }

    /// Initial Timer A, T1. Only armed on unreliable transports (17.1.1.2).
    pub fn timer_a(&self) -> Duration {
        self.t1
    }

    /// Timer B, 64*T1 (17.1.1.2).
    pub fn timer_b(&self) -> Duration {
        self.sixty_four_t1()
    }

    /// Timer D: at least 32s unreliable, 0 reliable (17.1.1.2). It has to
    /// outlive the server's Timer H (64*T1) so every retransmitted final
    /// response is still absorbed, hence the max with 64*T1 when T1 is raised.
    pub fn timer_d(&self, reliable: bool) -> Duration {
        Self::unless_reliable(reliable, self.sixty_four_t1().max(TIMER_D_FLOOR))
    }

    /// Initial Timer E, T1 (17.1.2.2).
    pub fn timer_e(&self) -> Duration {
        self.t1
    }

    /// Timer F, 64*T1 (17.1.2.2).
    pub fn timer_f(&self) -> Duration {
        self.sixty_four_t1()
    }

    /// Initial Timer G, T1 (17.2.1).
    pub fn timer_g(&self) -> Duration {
        self.t1
    }

    /// Timer H, 64*T1 (17.2.1).
    pub fn timer_h(&self) -> Duration {
        self.sixty_four_t1()
    }

    /// Timer I: T4 unreliable, 0 reliable (17.2.1).
    pub fn timer_i(&self, reliable: bool) -> Duration {
        Self::unless_reliable(reliable, self.t4)
    }

    /// Timer J: 64*T1 unreliable, 0 reliable (17.2.2).
    pub fn timer_j(&self, reliable: bool) -> Duration {
        Self::unless_reliable(reliable, self.sixty_four_t1())
    }

    /// Timer K: T4 unreliable, 0 reliable (17.1.2.2).
    pub fn timer_k(&self, reliable: bool) -> Duration {
        Self::unless_reliable(reliable, self.t4)
    }

    /// Timer L, 64*T1 on every transport (RFC 6026 8.7).
    pub fn timer_l(&self) -> Duration {
        self.sixty_four_t1()
    }

    /// Timer M, 64*T1 on every transport (RFC 6026 8.4).
    pub fn timer_m(&self) -> Duration {
        self.sixty_four_t1()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Every Table 4 entry as (timer, unreliable value, reliable value).
    fn table(c: &TimerConfig) -> Vec<(Timer, Duration, Duration)> {
        vec![
            (Timer::A, c.timer_a(), c.timer_a()),
            (Timer::B, c.timer_b(), c.timer_b()),
            (Timer::D, c.timer_d(false), c.timer_d(true)),
            (Timer::E, c.timer_e(), c.timer_e()),
            (Timer::F, c.timer_f(), c.timer_f()),
            (Timer::G, c.timer_g(), c.timer_g()),
            (Timer::H, c.timer_h(), c.timer_h()),
            (Timer::I, c.timer_i(false), c.timer_i(true)),
            (Timer::J, c.timer_j(false), c.timer_j(true)),
            (Timer::K, c.timer_k(false), c.timer_k(true)),
            (Timer::L, c.timer_l(), c.timer_l()),
            (Timer::M, c.timer_m(), c.timer_m()),
        ]
    }

    #[test]
    fn default_config_is_rfc_3261_recommended_values() {
        let c = TimerConfig::default();
        assert_eq!((c.t1, c.t2, c.t4), (ms(500), ms(4_000), ms(5_000)));
    }

    #[test]
    fn table_4_values_for_default_config() {
        let c = TimerConfig::default();
        let expected = vec![
            (Timer::A, ms(500), ms(500)),
            (Timer::B, ms(32_000), ms(32_000)),
            (Timer::D, ms(32_000), Duration::ZERO),
            (Timer::E, ms(500), ms(500)),
            (Timer::F, ms(32_000), ms(32_000)),
            (Timer::G, ms(500), ms(500)),
            (Timer::H, ms(32_000), ms(32_000)),
            (Timer::I, ms(5_000), Duration::ZERO),
            (Timer::J, ms(32_000), Duration::ZERO),
            (Timer::K, ms(5_000), Duration::ZERO),
            (Timer::L, ms(32_000), ms(32_000)),
            (Timer::M, ms(32_000), ms(32_000)),
        ];
        assert_eq!(table(&c), expected);
    }

    #[test]
    fn table_4_values_follow_a_custom_config() {
        let c = TimerConfig {
            t1: ms(1_000),
            t2: ms(8_000),
            t4: ms(10_000),
        };
        let expected = vec![
            (Timer::A, ms(1_000), ms(1_000)),
            (Timer::B, ms(64_000), ms(64_000)),
            (Timer::D, ms(64_000), Duration::ZERO),
            (Timer::E, ms(1_000), ms(1_000)),
            (Timer::F, ms(64_000), ms(64_000)),
            (Timer::G, ms(1_000), ms(1_000)),
            (Timer::H, ms(64_000), ms(64_000)),
            (Timer::I, ms(10_000), Duration::ZERO),
            (Timer::J, ms(64_000), Duration::ZERO),
            (Timer::K, ms(10_000), Duration::ZERO),
            (Timer::L, ms(64_000), ms(64_000)),
            (Timer::M, ms(64_000), ms(64_000)),
        ];
        assert_eq!(table(&c), expected);
    }

    #[test]
    fn timer_d_never_drops_below_32s_on_unreliable() {
        let c = TimerConfig {
            t1: ms(100),
            ..TimerConfig::default()
        };
        assert_eq!(c.timer_d(false), ms(32_000));
        assert_eq!(c.timer_d(true), Duration::ZERO);
    }

    #[test]
    fn retransmit_interval_doubles_and_caps_at_t2() {
        let c = TimerConfig::default();
        let mut interval = c.timer_e();
        let mut seen = Vec::new();
        for _ in 0..6 {
            interval = c.doubled_capped_at_t2(interval);
            seen.push(interval);
        }
        let expected = [1_000, 2_000, 4_000, 4_000, 4_000, 4_000].map(ms);
        assert_eq!(seen, expected);
    }

    #[test]
    fn huge_t1_saturates_instead_of_panicking() {
        let c = TimerConfig {
            t1: Duration::MAX,
            t2: Duration::MAX,
            t4: Duration::MAX,
        };
        assert_eq!(c.timer_b(), Duration::MAX);
        assert_eq!(c.timer_d(false), Duration::MAX);
        assert_eq!(c.doubled_capped_at_t2(Duration::MAX), Duration::MAX);
    }

    #[test]
    fn all_lists_each_timer_once() {
        for t in Timer::ALL {
            assert_eq!(Timer::ALL.iter().filter(|&&u| u == t).count(), 1);
        }
    }
}
