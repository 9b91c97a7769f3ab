//! Non-INVITE server transaction: RFC 3261 17.2.2.

use super::{classify, Action, StatusClass, Timer, TimerConfig};

/// States of the non-INVITE server transaction (RFC 3261 Figure 8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonInviteServerState {
    Trying,
    Proceeding,
    Completed,
    Terminated,
}

/// A sans-IO non-INVITE server transaction. It never retransmits on its own
/// (responses go out only when a request copy arrives), so unlike the other
/// machines it keeps no retransmit interval.
#[derive(Debug, Clone)]
pub struct NonInviteServer {
    state: NonInviteServerState,
    reliable: bool,
    timers: TimerConfig,
}

impl NonInviteServer {
    /// Start in Trying with nothing to send: the TU answers first.
    pub fn new(reliable: bool, timers: TimerConfig) -> (Self, Vec<Action>) {
        let machine = Self {
            state: NonInviteServerState::Trying,
            reliable,
            timers,
        };
        (machine, Vec::new())
    }

    pub fn state(&self) -> NonInviteServerState {
        self.state
    }

    /// The TU passed a response; the shell has stored it as "most recent".
    pub fn send_response(&mut self, status: u16) -> Vec<Action> {
        use NonInviteServerState::*;
        let Some(class) = classify(status) else {
            return Vec::new();
        };
        match (self.state, class) {
            (Trying | Proceeding, StatusClass::Provisional) => {
                self.state = Proceeding;
                vec![Action::TransmitResponse]
            }
            (Trying | Proceeding, StatusClass::Success | StatusClass::Failure) => self.complete(),
            // RFC 3261 17.2.2: further final responses in Completed are
            // discarded; nothing at all may follow a final.
            _ => Vec::new(),
        }
    }

    /// A retransmission of the request arrived.
    pub fn on_request(&mut self) -> Vec<Action> {
        match self.state {
            // RFC 3261 17.2.2: answered with the most recent response.
            NonInviteServerState::Proceeding | NonInviteServerState::Completed => {
                vec![Action::TransmitResponse]
            }
            // RFC 3261 17.2.2: in Trying there is nothing to resend yet.
            _ => Vec::new(),
        }
    }

    /// One of this transaction's timers fired.
    pub fn on_timer(&mut self, t: Timer) -> Vec<Action> {
        match (self.state, t) {
            // RFC 3261 17.2.2: J bounds how long request copies are answered.
            (NonInviteServerState::Completed, Timer::J) => {
                self.state = NonInviteServerState::Terminated;
                vec![Action::Terminated]
            }
            _ => Vec::new(),
        }
    }

    /// The transport failed to send a response (RFC 3261 17.2.4).
    pub fn on_transport_error(&mut self) -> Vec<Action> {
        if self.state == NonInviteServerState::Terminated {
            return Vec::new();
        }
        self.state = NonInviteServerState::Terminated;
        vec![Action::TransportError, Action::Terminated]
    }

    /// Final response in Trying or Proceeding (RFC 3261 17.2.2).
    fn complete(&mut self) -> Vec<Action> {
        let mut actions = vec![Action::TransmitResponse];
        let timer_j = self.timers.timer_j(self.reliable);
        // Table 4: J is 0 on reliable transports, so Completed is left at once.
        if timer_j.is_zero() {
            self.state = NonInviteServerState::Terminated;
            actions.push(Action::Terminated);
        } else {
            self.state = NonInviteServerState::Completed;
            actions.push(Action::StartTimer(Timer::J, timer_j));
        }
        actions
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::sim::{assert_only_live_timers_act, Clock, StateCase};
    use super::*;
    use Action::*;
    use NonInviteServerState as S;

    fn trying(reliable: bool) -> NonInviteServer {
        NonInviteServer::new(reliable, TimerConfig::default()).0
    }
    fn proceeding(reliable: bool) -> NonInviteServer {
        let mut s = trying(reliable);
        s.send_response(100);
        s
    }
    fn completed() -> NonInviteServer {
        let mut s = trying(false);
        s.send_response(200);
        s
    }
    fn terminated() -> NonInviteServer {
        let mut s = completed();
        s.on_timer(Timer::J);
        s
    }

    #[test]
    fn new_starts_in_trying_without_actions() {
        for reliable in [false, true] {
            let (s, actions) = NonInviteServer::new(reliable, TimerConfig::default());
            assert_eq!(s.state(), S::Trying);
            assert_eq!(actions, vec![]);
        }
    }

    #[test]
    fn retransmitted_request_in_trying_is_absorbed() {
        let mut s = trying(false);
        assert_eq!(s.on_request(), vec![]);
        assert_eq!(s.state(), S::Trying);
    }

    #[test]
    fn provisional_enters_proceeding() {
        for reliable in [false, true] {
            let mut s = trying(reliable);
            assert_eq!(s.send_response(100), vec![TransmitResponse]);
            assert_eq!(s.state(), S::Proceeding);
            assert_eq!(s.send_response(180), vec![TransmitResponse]);
            assert_eq!(s.state(), S::Proceeding);
        }
    }

    #[test]
    fn retransmitted_request_in_proceeding_resends_provisional() {
        let mut s = proceeding(false);
        assert_eq!(s.on_request(), vec![TransmitResponse]);
        assert_eq!(s.state(), S::Proceeding);
    }

    #[test]
    fn final_in_trying_or_proceeding_starts_timer_j() {
        for (mut s, status) in [(trying(false), 200), (proceeding(false), 481)] {
            let expected = vec![
                TransmitResponse,
                StartTimer(Timer::J, Duration::from_secs(32)),
            ];
            assert_eq!(s.send_response(status), expected);
            assert_eq!(s.state(), S::Completed);
        }
    }

    #[test]
    fn reliable_transport_skips_timer_j() {
        for mut s in [trying(true), proceeding(true)] {
            assert_eq!(s.send_response(200), vec![TransmitResponse, Terminated]);
            assert_eq!(s.state(), S::Terminated);
        }
    }

    #[test]
    fn retransmitted_request_in_completed_resends_final() {
        let mut s = completed();
        assert_eq!(s.on_request(), vec![TransmitResponse]);
        assert_eq!(s.on_request(), vec![TransmitResponse]);
        assert_eq!(s.state(), S::Completed);
    }

    #[test]
    fn responses_from_tu_in_completed_are_discarded() {
        let mut s = completed();
        for status in [100, 200, 500] {
            assert_eq!(s.send_response(status), vec![], "{status}");
        }
        assert_eq!(s.state(), S::Completed);
    }

    #[test]
    fn timer_j_terminates_completed() {
        let mut s = completed();
        assert_eq!(s.on_timer(Timer::J), vec![Terminated]);
        assert_eq!(s.state(), S::Terminated);
    }

    #[test]
    fn unreliable_schedule_answers_copies_until_j() {
        let mut s = trying(false);
        let mut clock = Clock::default();
        clock.apply(s.send_response(200));
        assert!(clock.is_armed(Timer::J));
        clock.run(|t| s.on_timer(t));
        assert_eq!(clock.times_of(Terminated), [32_000]);
        assert_eq!(clock.now(), Duration::from_secs(32));
        assert_eq!(s.on_request(), vec![]);
    }

    #[test]
    fn only_timer_j_in_completed_acts() {
        let cases: [StateCase<NonInviteServer>; 4] = [
            (|| trying(false), &[]),
            (|| proceeding(false), &[]),
            (completed, &[Timer::J]),
            (|| proceeding(true), &[]),
        ];
        assert_only_live_timers_act(&cases, NonInviteServer::on_timer, NonInviteServer::state);
    }

    #[test]
    fn transport_error_terminates_every_live_state() {
        for mut s in [
            trying(false),
            proceeding(true),
            proceeding(false),
            completed(),
        ] {
            assert_eq!(s.on_transport_error(), vec![TransportError, Terminated]);
            assert_eq!(s.state(), S::Terminated);
        }
    }

    #[test]
    fn stale_timer_after_terminated_is_ignored() {
        let mut s = terminated();
        for t in Timer::ALL {
            assert_eq!(s.on_timer(t), vec![], "{t:?}");
        }
        assert_eq!(s.on_request(), vec![]);
        assert_eq!(s.on_transport_error(), vec![]);
        for status in 0..=1_000 {
            assert_eq!(s.send_response(status), vec![], "{status}");
        }
        assert_eq!(s.state(), S::Terminated);
    }

    #[test]
    fn out_of_range_status_is_ignored() {
        for status in [0, 99, 700, u16::MAX] {
            let mut s = trying(false);
            assert_eq!(s.send_response(status), vec![], "{status}");
            assert_eq!(s.state(), S::Trying);
        }
    }
}
