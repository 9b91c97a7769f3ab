//! Non-INVITE client transaction: RFC 3261 17.1.2.

use std::time::Duration;

use super::{classify, Action, StatusClass, Timer, TimerConfig};

/// States of the non-INVITE client transaction (RFC 3261 Figure 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonInviteClientState {
    Trying,
    Proceeding,
    Completed,
    Terminated,
}

/// A sans-IO non-INVITE client transaction.
#[derive(Debug, Clone)]
pub struct NonInviteClient {
    state: NonInviteClientState,
    reliable: bool,
    timers: TimerConfig,
    /// Current Timer E interval.
    interval: Duration,
}

impl NonInviteClient {
    /// Start in Trying: send the request, arm E (unreliable only) and F.
    pub fn new(reliable: bool, timers: TimerConfig) -> (Self, Vec<Action>) {
        let mut actions = vec![Action::TransmitRequest];
        // RFC 3261 17.1.2.2: Timer E only on unreliable transports; F always.
        if !reliable {
            actions.push(Action::StartTimer(Timer::E, timers.timer_e()));
        }
        actions.push(Action::StartTimer(Timer::F, timers.timer_f()));
        let machine = Self {
            state: NonInviteClientState::Trying,
            reliable,
            timers,
            interval: timers.timer_e(),
        };
        (machine, actions)
    }

    pub fn state(&self) -> NonInviteClientState {
        self.state
    }

    /// A response matched to this transaction arrived (RFC 3261 17.1.3).
    pub fn on_response(&mut self, status: u16) -> Vec<Action> {
        use NonInviteClientState::*;
        let Some(class) = classify(status) else {
            return Vec::new();
        };
        match (self.state, class) {
            // RFC 3261 17.1.2.2: E and F keep running in Proceeding.
            (Trying | Proceeding, StatusClass::Provisional) => {
                self.state = Proceeding;
                vec![Action::PassToTu]
            }
            (Trying | Proceeding, StatusClass::Success | StatusClass::Failure) => self.complete(),
            // RFC 3261 17.1.2.2: Completed only buffers response
            // retransmissions; none goes up again.
            _ => Vec::new(),
        }
    }

    /// One of this transaction's timers fired.
    pub fn on_timer(&mut self, t: Timer) -> Vec<Action> {
        use NonInviteClientState::*;
        match (self.state, t) {
            // RFC 3261 17.1.2.2: in Trying, E doubles up to T2.
            (Trying, Timer::E) if !self.reliable => {
                self.interval = self.timers.doubled_capped_at_t2(self.interval);
                self.retransmit()
            }
            // RFC 3261 17.1.2.2: in Proceeding, E is reset to T2 each time;
            // a provisional means the request arrived, so back off fully.
            (Proceeding, Timer::E) if !self.reliable => {
                self.interval = self.timers.t2;
                self.retransmit()
            }
            (Trying | Proceeding, Timer::F) => self.terminate_with(Action::Timeout),
            (Completed, Timer::K) => {
                self.state = Terminated;
                vec![Action::Terminated]
            }
            _ => Vec::new(),
        }
    }

    /// The transport failed to send the request (RFC 3261 17.1.4).
    pub fn on_transport_error(&mut self) -> Vec<Action> {
        if self.state == NonInviteClientState::Terminated {
            return Vec::new();
        }
        self.terminate_with(Action::TransportError)
    }

    fn retransmit(&self) -> Vec<Action> {
        vec![
            Action::TransmitRequest,
            Action::StartTimer(Timer::E, self.interval),
        ]
    }

    /// Final response in Trying or Proceeding (RFC 3261 17.1.2.2).
    fn complete(&mut self) -> Vec<Action> {
        let mut actions = vec![Action::PassToTu];
        let timer_k = self.timers.timer_k(self.reliable);
        // Table 4: K is 0 on reliable transports, so Completed is left at once.
        if timer_k.is_zero() {
            self.state = NonInviteClientState::Terminated;
            actions.push(Action::Terminated);
            return actions;
        }
        actions.push(Action::CancelTimer(Timer::E));
        actions.push(Action::CancelTimer(Timer::F));
        actions.push(Action::StartTimer(Timer::K, timer_k));
        self.state = NonInviteClientState::Completed;
        actions
    }

    fn terminate_with(&mut self, report: Action) -> Vec<Action> {
        self.state = NonInviteClientState::Terminated;
        vec![report, Action::Terminated]
    }
}

#[cfg(test)]
mod tests {
    use super::super::sim::{assert_only_live_timers_act, Clock, StateCase};
    use super::*;
    use Action::*;
    use NonInviteClientState as S;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }
    fn trying(reliable: bool) -> NonInviteClient {
        NonInviteClient::new(reliable, TimerConfig::default()).0
    }
    fn after(reliable: bool, status: u16) -> NonInviteClient {
        let mut c = trying(reliable);
        c.on_response(status);
        c
    }
    fn proceeding(reliable: bool) -> NonInviteClient {
        after(reliable, 100)
    }
    fn completed() -> NonInviteClient {
        after(false, 200)
    }
    fn terminated() -> NonInviteClient {
        let mut c = trying(false);
        c.on_transport_error();
        c
    }

    #[test]
    fn new_on_unreliable_sends_request_and_arms_e_and_f() {
        let (c, actions) = NonInviteClient::new(false, TimerConfig::default());
        assert_eq!(c.state(), S::Trying);
        let expected = vec![
            TransmitRequest,
            StartTimer(Timer::E, ms(500)),
            StartTimer(Timer::F, ms(32_000)),
        ];
        assert_eq!(actions, expected);
    }

    #[test]
    fn new_on_reliable_arms_only_timer_f() {
        let (_, actions) = NonInviteClient::new(true, TimerConfig::default());
        assert_eq!(
            actions,
            vec![TransmitRequest, StartTimer(Timer::F, ms(32_000))]
        );
    }

    #[test]
    fn provisional_enters_proceeding_and_keeps_timers() {
        for reliable in [false, true] {
            let mut c = trying(reliable);
            assert_eq!(c.on_response(100), vec![PassToTu]);
            assert_eq!(c.state(), S::Proceeding);
            assert_eq!(c.on_response(180), vec![PassToTu]);
            assert_eq!(c.state(), S::Proceeding);
        }
    }

    #[test]
    fn final_in_trying_or_proceeding_starts_timer_k() {
        for mut c in [trying(false), proceeding(false)] {
            let expected = vec![
                PassToTu,
                CancelTimer(Timer::E),
                CancelTimer(Timer::F),
                StartTimer(Timer::K, ms(5_000)),
            ];
            assert_eq!(c.on_response(404), expected);
            assert_eq!(c.state(), S::Completed);
        }
        let mut c = trying(false);
        assert_eq!(
            c.on_response(200).last(),
            Some(&StartTimer(Timer::K, ms(5_000)))
        );
    }

    #[test]
    fn reliable_transport_skips_timer_k() {
        for mut c in [trying(true), proceeding(true)] {
            assert_eq!(c.on_response(200), vec![PassToTu, Terminated]);
            assert_eq!(c.state(), S::Terminated);
        }
    }

    #[test]
    fn responses_in_completed_are_absorbed() {
        let mut c = completed();
        for status in [100, 200, 404, 500] {
            assert_eq!(c.on_response(status), vec![], "{status}");
        }
        assert_eq!(c.state(), S::Completed);
    }

    #[test]
    fn timer_k_terminates_completed() {
        let mut c = completed();
        assert_eq!(c.on_timer(Timer::K), vec![Terminated]);
        assert_eq!(c.state(), S::Terminated);
    }

    #[test]
    fn timer_e_caps_at_t2_in_trying() {
        let mut c = trying(false);
        for next in [1_000, 2_000, 4_000, 4_000, 4_000] {
            let expected = vec![TransmitRequest, StartTimer(Timer::E, ms(next))];
            assert_eq!(c.on_timer(Timer::E), expected);
            assert_eq!(c.state(), S::Trying);
        }
    }

    #[test]
    fn timer_e_resets_to_t2_in_proceeding() {
        let mut c = trying(false);
        c.on_timer(Timer::E);
        c.on_response(100);
        for _ in 0..3 {
            let expected = vec![TransmitRequest, StartTimer(Timer::E, ms(4_000))];
            assert_eq!(c.on_timer(Timer::E), expected);
            assert_eq!(c.state(), S::Proceeding);
        }
    }

    #[test]
    fn unreliable_schedule_caps_at_t2_until_f() {
        let (mut c, initial) = NonInviteClient::new(false, TimerConfig::default());
        let mut clock = Clock::default();
        clock.apply(initial);
        clock.run(|t| c.on_timer(t));
        // Intervals 0.5, 1, 2, 4, 4, 4, ... after the original send at 0.
        let sends = [
            0, 500, 1_500, 3_500, 7_500, 11_500, 15_500, 19_500, 23_500, 27_500, 31_500,
        ];
        assert_eq!(clock.times_of(TransmitRequest), sends);
        assert_eq!(clock.times_of(Timeout), [32_000]);
        assert_eq!(clock.times_of(Terminated), [32_000]);
        assert_eq!(c.state(), S::Terminated);
    }

    #[test]
    fn proceeding_schedule_retransmits_every_t2_until_f() {
        let (mut c, initial) = NonInviteClient::new(false, TimerConfig::default());
        let mut clock = Clock::default();
        clock.apply(initial);
        clock.apply(c.on_response(100));
        clock.run(|t| c.on_timer(t));
        // First E still fires at T1, then every T2.
        let sends = [0, 500, 4_500, 8_500, 12_500, 16_500, 20_500, 24_500, 28_500];
        assert_eq!(clock.times_of(TransmitRequest), sends);
        assert_eq!(clock.times_of(Timeout), [32_000]);
    }

    #[test]
    fn reliable_schedule_sends_once_then_times_out_at_f() {
        let (mut c, initial) = NonInviteClient::new(true, TimerConfig::default());
        let mut clock = Clock::default();
        clock.apply(initial);
        clock.run(|t| c.on_timer(t));
        assert_eq!(clock.times_of(TransmitRequest), [0]);
        assert_eq!(clock.times_of(Timeout), [32_000]);
    }

    #[test]
    fn timer_f_times_out_trying_and_proceeding() {
        for mut c in [
            trying(false),
            trying(true),
            proceeding(false),
            proceeding(true),
        ] {
            assert_eq!(c.on_timer(Timer::F), vec![Timeout, Terminated]);
            assert_eq!(c.state(), S::Terminated);
        }
    }

    #[test]
    fn timer_e_on_reliable_is_stale() {
        for mut c in [trying(true), proceeding(true)] {
            let before = c.state();
            assert_eq!(c.on_timer(Timer::E), vec![]);
            assert_eq!(c.state(), before);
        }
    }

    #[test]
    fn only_the_timers_of_each_state_act() {
        let cases: [StateCase<NonInviteClient>; 5] = [
            (|| trying(false), &[Timer::E, Timer::F]),
            (|| proceeding(false), &[Timer::E, Timer::F]),
            (completed, &[Timer::K]),
            (|| trying(true), &[Timer::F]),
            (|| proceeding(true), &[Timer::F]),
        ];
        assert_only_live_timers_act(&cases, NonInviteClient::on_timer, NonInviteClient::state);
    }

    #[test]
    fn transport_error_terminates_every_live_state() {
        for mut c in [trying(false), trying(true), proceeding(false), completed()] {
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
    }

    #[test]
    fn out_of_range_status_is_ignored() {
        for status in [0, 99, 700, u16::MAX] {
            let mut c = trying(false);
            assert_eq!(c.on_response(status), vec![], "{status}");
            assert_eq!(c.state(), S::Trying);
        }
    }
}
