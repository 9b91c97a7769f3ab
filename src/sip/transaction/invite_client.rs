//! INVITE client transaction: RFC 3261 17.1.1 with RFC 6026 7.2's Accepted state.

use std::time::Duration;

use super::{classify, Action, StatusClass, Timer, TimerConfig};

/// States of the INVITE client transaction (RFC 3261 Figure 5 as amended by RFC 6026 8.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InviteClientState {
    Calling,
    Proceeding,
    Completed,
    Accepted,
    Terminated,
}

/// A sans-IO INVITE client transaction.
#[derive(Debug, Clone)]
pub struct InviteClient {
    state: InviteClientState,
    reliable: bool,
    timers: TimerConfig,
    /// Current Timer A interval.
    interval: Duration,
}

impl InviteClient {
    /// Start in Calling: send the INVITE, arm A (unreliable only) and B.
    pub fn new(reliable: bool, timers: TimerConfig) -> (Self, Vec<Action>) {
        let mut actions = vec![Action::TransmitRequest];
        // RFC 3261 17.1.1.2: Timer A only on unreliable transports; B always.
        if !reliable {
            actions.push(Action::StartTimer(Timer::A, timers.timer_a()));
        }
        actions.push(Action::StartTimer(Timer::B, timers.timer_b()));
        let machine = Self {
            state: InviteClientState::Calling,
            reliable,
            timers,
            interval: timers.timer_a(),
        };
        (machine, actions)
    }

    pub fn state(&self) -> InviteClientState {
        self.state
    }

    /// A response matched to this transaction arrived (RFC 3261 17.1.3).
    pub fn on_response(&mut self, status: u16) -> Vec<Action> {
        use InviteClientState::*;
        let Some(class) = classify(status) else {
            return Vec::new();
        };
        match (self.state, class) {
            (Calling | Proceeding, StatusClass::Provisional) => self.proceed(),
            (Calling | Proceeding, StatusClass::Success) => self.accept(),
            (Calling | Proceeding, StatusClass::Failure) => self.complete(),
            // RFC 3261 17.1.1.2: a retransmitted final response is re-ACKed
            // but not passed up again.
            (Completed, StatusClass::Failure) => vec![Action::TransmitAck],
            // RFC 6026 7.2: every 2xx in Accepted goes up; the TU ACKs it
            // end to end, the transaction never does.
            (Accepted, StatusClass::Success) => vec![Action::PassToTu],
            // Anything else cannot be a retransmission of what we hold.
            _ => Vec::new(),
        }
    }

    /// One of this transaction's timers fired.
    pub fn on_timer(&mut self, t: Timer) -> Vec<Action> {
        use InviteClientState::*;
        match (self.state, t) {
            // RFC 3261 17.1.1.2: Timer A doubles on every firing with no T2
            // cap for INVITE; Timer B bounds the total.
            (Calling, Timer::A) if !self.reliable => {
                self.interval = self.interval.saturating_mul(2);
                vec![
                    Action::TransmitRequest,
                    Action::StartTimer(Timer::A, self.interval),
                ]
            }
            // RFC 3261 17.1.1.2: B in Calling means no response at all.
            (Calling, Timer::B) => self.terminate_with(Action::Timeout),
            (Completed, Timer::D) | (Accepted, Timer::M) => self.terminate(),
            _ => Vec::new(),
        }
    }

    /// The transport failed to send the INVITE or the ACK (RFC 3261 17.1.4).
    pub fn on_transport_error(&mut self) -> Vec<Action> {
        if self.state == InviteClientState::Terminated {
            return Vec::new();
        }
        self.terminate_with(Action::TransportError)
    }

    /// 1xx in Calling or Proceeding.
    fn proceed(&mut self) -> Vec<Action> {
        let mut actions = vec![Action::PassToTu];
        if self.state == InviteClientState::Calling {
            // RFC 3261 17.1.1.2: retransmissions stop in Proceeding. Timer B
            // is cancelled too: once the far end is ringing, how long to wait
            // for an answer is the TU's ring timeout, not the transaction's.
            self.push_calling_cancels(&mut actions);
            self.state = InviteClientState::Proceeding;
        }
        actions
    }

    /// 2xx in Calling or Proceeding: RFC 6026 7.2 moves to Accepted so that
    /// 2xx retransmissions (and forked 2xx) still find the transaction.
    fn accept(&mut self) -> Vec<Action> {
        let mut actions = vec![Action::PassToTu];
        self.push_calling_cancels(&mut actions);
        actions.push(Action::StartTimer(Timer::M, self.timers.timer_m()));
        self.state = InviteClientState::Accepted;
        actions
    }

    /// 300-699 in Calling or Proceeding (RFC 3261 17.1.1.2, 17.1.1.3).
    fn complete(&mut self) -> Vec<Action> {
        let mut actions = vec![Action::TransmitAck, Action::PassToTu];
        let timer_d = self.timers.timer_d(self.reliable);
        // Table 4: D is 0 on reliable transports, so Completed is left at once.
        if timer_d.is_zero() {
            self.state = InviteClientState::Terminated;
            actions.push(Action::Terminated);
            return actions;
        }
        self.push_calling_cancels(&mut actions);
        actions.push(Action::StartTimer(Timer::D, timer_d));
        self.state = InviteClientState::Completed;
        actions
    }

    /// Disarm A and B if we are still in Calling, the only state they run in.
    fn push_calling_cancels(&self, actions: &mut Vec<Action>) {
        if self.state != InviteClientState::Calling {
            return;
        }
        if !self.reliable {
            actions.push(Action::CancelTimer(Timer::A));
        }
        actions.push(Action::CancelTimer(Timer::B));
    }

    fn terminate(&mut self) -> Vec<Action> {
        self.state = InviteClientState::Terminated;
        vec![Action::Terminated]
    }

    fn terminate_with(&mut self, report: Action) -> Vec<Action> {
        self.state = InviteClientState::Terminated;
        vec![report, Action::Terminated]
    }
}

#[cfg(test)]
mod tests {
    use super::super::sim::{assert_only_live_timers_act, Clock, StateCase};
    use super::*;
    use Action::*;
    use InviteClientState as S;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }
    fn calling(reliable: bool) -> InviteClient {
        InviteClient::new(reliable, TimerConfig::default()).0
    }
    fn after(reliable: bool, status: u16) -> InviteClient {
        let mut c = calling(reliable);
        c.on_response(status);
        c
    }
    fn proceeding(reliable: bool) -> InviteClient {
        after(reliable, 180)
    }
    fn accepted(reliable: bool) -> InviteClient {
        after(reliable, 200)
    }
    fn completed() -> InviteClient {
        after(false, 486)
    }
    fn terminated() -> InviteClient {
        let mut c = calling(false);
        c.on_transport_error();
        c
    }

    #[test]
    fn new_on_unreliable_sends_invite_and_arms_a_and_b() {
        let (c, actions) = InviteClient::new(false, TimerConfig::default());
        assert_eq!(c.state(), S::Calling);
        let expected = vec![
            TransmitRequest,
            StartTimer(Timer::A, ms(500)),
            StartTimer(Timer::B, ms(32_000)),
        ];
        assert_eq!(actions, expected);
    }

    #[test]
    fn new_on_reliable_arms_only_timer_b() {
        let (_, actions) = InviteClient::new(true, TimerConfig::default());
        assert_eq!(
            actions,
            vec![TransmitRequest, StartTimer(Timer::B, ms(32_000))]
        );
    }

    #[test]
    fn provisional_in_calling_enters_proceeding_and_cancels_a_and_b() {
        let mut c = calling(false);
        let actions = c.on_response(180);
        assert_eq!(
            actions,
            vec![PassToTu, CancelTimer(Timer::A), CancelTimer(Timer::B)]
        );
        assert_eq!(c.state(), S::Proceeding);
    }

    #[test]
    fn provisional_on_reliable_cancels_only_timer_b() {
        let mut c = calling(true);
        assert_eq!(c.on_response(100), vec![PassToTu, CancelTimer(Timer::B)]);
        assert_eq!(c.state(), S::Proceeding);
    }

    #[test]
    fn further_provisionals_in_proceeding_are_passed_up() {
        for reliable in [false, true] {
            let mut c = proceeding(reliable);
            assert_eq!(c.on_response(183), vec![PassToTu]);
            assert_eq!(c.on_response(180), vec![PassToTu]);
            assert_eq!(c.state(), S::Proceeding);
        }
    }

    #[test]
    fn success_in_calling_enters_accepted_and_starts_timer_m() {
        let mut c = calling(false);
        let expected = vec![
            PassToTu,
            CancelTimer(Timer::A),
            CancelTimer(Timer::B),
            StartTimer(Timer::M, ms(32_000)),
        ];
        assert_eq!(c.on_response(200), expected);
        assert_eq!(c.state(), S::Accepted);
    }

    #[test]
    fn success_on_reliable_cancels_b_and_starts_timer_m() {
        let mut c = calling(true);
        let expected = vec![
            PassToTu,
            CancelTimer(Timer::B),
            StartTimer(Timer::M, ms(32_000)),
        ];
        assert_eq!(c.on_response(202), expected);
        assert_eq!(c.state(), S::Accepted);
    }

    #[test]
    fn success_in_proceeding_starts_timer_m_only() {
        for reliable in [false, true] {
            let mut c = proceeding(reliable);
            let expected = vec![PassToTu, StartTimer(Timer::M, ms(32_000))];
            assert_eq!(c.on_response(200), expected);
            assert_eq!(c.state(), S::Accepted);
        }
    }

    #[test]
    fn retransmitted_2xx_in_accepted_is_passed_to_tu() {
        for reliable in [false, true] {
            let mut c = accepted(reliable);
            assert_eq!(c.on_response(200), vec![PassToTu]);
            assert_eq!(c.on_response(299), vec![PassToTu]);
            assert_eq!(c.state(), S::Accepted);
        }
    }

    #[test]
    fn provisional_or_failure_in_accepted_is_absorbed() {
        let mut c = accepted(false);
        assert_eq!(c.on_response(180), vec![]);
        assert_eq!(c.on_response(486), vec![]);
        assert_eq!(c.state(), S::Accepted);
    }

    #[test]
    fn timer_m_terminates_accepted() {
        for reliable in [false, true] {
            let mut c = accepted(reliable);
            assert_eq!(c.on_timer(Timer::M), vec![Terminated]);
            assert_eq!(c.state(), S::Terminated);
        }
    }

    #[test]
    fn failure_in_calling_acks_and_starts_timer_d() {
        let mut c = calling(false);
        let expected = vec![
            TransmitAck,
            PassToTu,
            CancelTimer(Timer::A),
            CancelTimer(Timer::B),
            StartTimer(Timer::D, ms(32_000)),
        ];
        assert_eq!(c.on_response(486), expected);
        assert_eq!(c.state(), S::Completed);
    }

    #[test]
    fn failure_in_proceeding_acks_and_starts_timer_d_only() {
        let mut c = proceeding(false);
        let expected = vec![TransmitAck, PassToTu, StartTimer(Timer::D, ms(32_000))];
        assert_eq!(c.on_response(603), expected);
        assert_eq!(c.state(), S::Completed);
    }

    #[test]
    fn reliable_transport_skips_timer_d() {
        let mut c = calling(true);
        assert_eq!(c.on_response(404), vec![TransmitAck, PassToTu, Terminated]);
        assert_eq!(c.state(), S::Terminated);
        let mut c = proceeding(true);
        assert_eq!(c.on_response(300), vec![TransmitAck, PassToTu, Terminated]);
        assert_eq!(c.state(), S::Terminated);
    }

    #[test]
    fn retransmitted_failure_in_completed_only_reacks() {
        let mut c = completed();
        assert_eq!(c.on_response(486), vec![TransmitAck]);
        assert_eq!(c.on_response(486), vec![TransmitAck]);
        assert_eq!(c.state(), S::Completed);
    }

    #[test]
    fn provisional_or_success_in_completed_is_absorbed() {
        let mut c = completed();
        assert_eq!(c.on_response(180), vec![]);
        assert_eq!(c.on_response(200), vec![]);
        assert_eq!(c.state(), S::Completed);
    }

    #[test]
    fn timer_d_terminates_completed() {
        let mut c = completed();
        assert_eq!(c.on_timer(Timer::D), vec![Terminated]);
        assert_eq!(c.state(), S::Terminated);
    }

    #[test]
    fn timer_a_doubles_without_cap_until_b() {
        let mut c = calling(false);
        // Past T2 (4s) on purpose: INVITE requests are not capped.
        for next in [1_000, 2_000, 4_000, 8_000, 16_000, 32_000] {
            let expected = vec![TransmitRequest, StartTimer(Timer::A, ms(next))];
            assert_eq!(c.on_timer(Timer::A), expected);
            assert_eq!(c.state(), S::Calling);
        }
        assert_eq!(c.on_timer(Timer::B), vec![Timeout, Terminated]);
    }

    #[test]
    fn unreliable_schedule_is_six_retransmissions_then_timeout_at_b() {
        let (mut c, initial) = InviteClient::new(false, TimerConfig::default());
        let mut clock = Clock::default();
        clock.apply(initial);
        clock.run(|t| c.on_timer(t));
        // Intervals 0.5, 1, 2, 4, 8, 16s after the original send at 0.
        let sends = [0, 500, 1_500, 3_500, 7_500, 15_500, 31_500];
        assert_eq!(clock.times_of(TransmitRequest), sends);
        assert_eq!(clock.times_of(Timeout), [32_000]);
        assert_eq!(clock.times_of(Terminated), [32_000]);
        assert_eq!(c.state(), S::Terminated);
    }

    #[test]
    fn reliable_schedule_sends_once_then_times_out_at_b() {
        let (mut c, initial) = InviteClient::new(true, TimerConfig::default());
        let mut clock = Clock::default();
        clock.apply(initial);
        clock.run(|t| c.on_timer(t));
        assert_eq!(clock.times_of(TransmitRequest), [0]);
        assert_eq!(clock.times_of(Timeout), [32_000]);
    }

    #[test]
    fn ringing_leg_never_times_out_in_the_transaction() {
        let (mut c, initial) = InviteClient::new(false, TimerConfig::default());
        let mut clock = Clock::default();
        clock.apply(initial);
        clock.apply(c.on_response(180));
        assert!(!clock.is_armed(Timer::A) && !clock.is_armed(Timer::B));
        clock.run(|t| c.on_timer(t));
        assert_eq!(c.state(), S::Proceeding);
        assert_eq!(clock.times_of(Timeout), Vec::<u128>::new());
    }

    #[test]
    fn timer_b_in_calling_times_out() {
        for reliable in [false, true] {
            let mut c = calling(reliable);
            assert_eq!(c.on_timer(Timer::B), vec![Timeout, Terminated]);
            assert_eq!(c.state(), S::Terminated);
        }
    }

    #[test]
    fn timer_a_on_reliable_is_stale() {
        let mut c = calling(true);
        assert_eq!(c.on_timer(Timer::A), vec![]);
        assert_eq!(c.state(), S::Calling);
    }

    #[test]
    fn only_the_timers_of_each_state_act() {
        let cases: [StateCase<InviteClient>; 6] = [
            (|| calling(false), &[Timer::A, Timer::B]),
            (|| proceeding(false), &[]),
            (completed, &[Timer::D]),
            (|| accepted(false), &[Timer::M]),
            (|| calling(true), &[Timer::B]),
            (|| accepted(true), &[Timer::M]),
        ];
        assert_only_live_timers_act(&cases, InviteClient::on_timer, InviteClient::state);
    }

    #[test]
    fn transport_error_terminates_every_live_state() {
        let builders: [fn() -> InviteClient; 6] = [
            || calling(false),
            || calling(true),
            || proceeding(false),
            completed,
            || accepted(false),
            || accepted(true),
        ];
        for build in builders {
            let mut c = build();
            assert_eq!(c.on_transport_error(), vec![TransportError, Terminated]);
            assert_eq!(c.state(), S::Terminated);
        }
    }

    #[test]
    fn stale_timer_after_terminated_is_ignored() {
        let mut c = terminated();
        for t in Timer::ALL {
            assert_eq!(c.on_timer(t), vec![], "{t:?}");
        }
        assert_eq!(c.on_transport_error(), vec![]);
        assert_eq!(c.state(), S::Terminated);
    }

    #[test]
    fn responses_after_terminated_are_ignored() {
        let mut c = terminated();
        for status in 0..=1_000 {
            assert_eq!(c.on_response(status), vec![], "{status}");
        }
        assert_eq!(c.state(), S::Terminated);
    }

    #[test]
    fn out_of_range_status_is_ignored() {
        for status in [0, 99, 700, 999, u16::MAX] {
            let mut c = calling(false);
            assert_eq!(c.on_response(status), vec![], "{status}");
            assert_eq!(c.state(), S::Calling);
        }
    }

    #[test]
    fn huge_intervals_saturate_instead_of_panicking() {
        let timers = TimerConfig {
            t1: Duration::MAX,
            ..TimerConfig::default()
        };
        let (mut c, _) = InviteClient::new(false, timers);
        let expected = vec![TransmitRequest, StartTimer(Timer::A, Duration::MAX)];
        assert_eq!(c.on_timer(Timer::A), expected);
    }
}
