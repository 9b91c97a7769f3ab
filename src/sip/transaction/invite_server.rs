//! INVITE server transaction: RFC 3261 17.2.1 with RFC 6026 7.1's Accepted state.

use std::time::Duration;

use super::{classify, Action, StatusClass, Timer, TimerConfig};

/// States of the INVITE server transaction (RFC 3261 Figure 7 as amended by RFC 6026 8.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InviteServerState {
    Proceeding,
    Completed,
    Confirmed,
    Accepted,
    Terminated,
}

/// A sans-IO INVITE server transaction.
#[derive(Debug, Clone)]
pub struct InviteServer {
    state: InviteServerState,
    reliable: bool,
    timers: TimerConfig,
    /// Current Timer G interval.
    interval: Duration,
}

impl InviteServer {
    /// Start in Proceeding. No actions: the shell sends 100 Trying itself
    /// through [`InviteServer::send_response`] straight away (RFC 3261 17.2.1).
    pub fn new(reliable: bool, timers: TimerConfig) -> (Self, Vec<Action>) {
        let machine = Self {
            state: InviteServerState::Proceeding,
            reliable,
            timers,
            interval: timers.timer_g(),
        };
        (machine, Vec::new())
    }

    pub fn state(&self) -> InviteServerState {
        self.state
    }

    /// The TU passed a response; the shell has stored it as "most recent".
    pub fn send_response(&mut self, status: u16) -> Vec<Action> {
        use InviteServerState::*;
        let Some(class) = classify(status) else {
            return Vec::new();
        };
        match (self.state, class) {
            // RFC 3261 17.2.1: provisionals go out unreliably, no state change.
            (Proceeding, StatusClass::Provisional) => vec![Action::TransmitResponse],
            // RFC 6026 7.1: a 2xx moves to Accepted, where the transaction
            // lives on for 64*T1 to absorb INVITE retransmissions.
            (Proceeding, StatusClass::Success) => {
                self.state = Accepted;
                vec![
                    Action::TransmitResponse,
                    Action::StartTimer(Timer::L, self.timers.timer_l()),
                ]
            }
            (Proceeding, StatusClass::Failure) => self.complete(),
            // RFC 6026 7.1: the UA core retransmits its 2xx (RFC 3261
            // 13.3.1.4) through the transaction while it is Accepted.
            (Accepted, StatusClass::Success) => vec![Action::TransmitResponse],
            // A final response is final: nothing else may follow it.
            _ => Vec::new(),
        }
    }

    /// A retransmission of the INVITE arrived.
    pub fn on_request(&mut self) -> Vec<Action> {
        match self.state {
            // RFC 3261 17.2.1: answer with the most recent response.
            InviteServerState::Proceeding | InviteServerState::Completed => {
                vec![Action::TransmitResponse]
            }
            // RFC 6026 7.1: absorbed in Accepted; the 2xx is retransmitted
            // on the UA core's own schedule, not per INVITE copy.
            _ => Vec::new(),
        }
    }

    /// An ACK matched to this transaction arrived.
    pub fn on_ack(&mut self) -> Vec<Action> {
        match self.state {
            InviteServerState::Completed => self.confirm(),
            // RFC 6026 7.1: an ACK for a 2xx belongs to the TU (it ends the
            // core's 2xx retransmissions); the transaction stays Accepted.
            InviteServerState::Accepted => vec![Action::PassToTu],
            // RFC 3261 17.2.1: Confirmed absorbs ACK retransmissions.
            _ => Vec::new(),
        }
    }

    /// One of this transaction's timers fired.
    pub fn on_timer(&mut self, t: Timer) -> Vec<Action> {
        use InviteServerState::*;
        match (self.state, t) {
            // RFC 3261 17.2.1: Timer G doubles up to T2.
            (Completed, Timer::G) if !self.reliable => {
                self.interval = self.timers.doubled_capped_at_t2(self.interval);
                vec![
                    Action::TransmitResponse,
                    Action::StartTimer(Timer::G, self.interval),
                ]
            }
            // RFC 3261 17.2.1: H means the ACK never came.
            (Completed, Timer::H) => {
                self.state = Terminated;
                vec![Action::Timeout, Action::Terminated]
            }
            (Confirmed, Timer::I) | (Accepted, Timer::L) => self.terminate(),
            _ => Vec::new(),
        }
    }

    /// The transport failed to send a response (RFC 3261 17.2.4).
    pub fn on_transport_error(&mut self) -> Vec<Action> {
        match self.state {
            InviteServerState::Terminated => Vec::new(),
            // RFC 6026 8.7 (Figure 7): in Proceeding and Accepted a transport
            // error only informs the TU. Staying alive keeps INVITE
            // retransmissions absorbed instead of starting a new call, and
            // lets the TU still answer (Proceeding) or Timer L end it (Accepted).
            InviteServerState::Proceeding | InviteServerState::Accepted => {
                vec![Action::TransportError]
            }
            InviteServerState::Completed | InviteServerState::Confirmed => {
                self.state = InviteServerState::Terminated;
                vec![Action::TransportError, Action::Terminated]
            }
        }
    }

    /// 300-699 in Proceeding: wait for the hop-by-hop ACK (RFC 3261 17.2.1).
    fn complete(&mut self) -> Vec<Action> {
        let mut actions = vec![Action::TransmitResponse];
        if !self.reliable {
            actions.push(Action::StartTimer(Timer::G, self.interval));
        }
        actions.push(Action::StartTimer(Timer::H, self.timers.timer_h()));
        self.state = InviteServerState::Completed;
        actions
    }

    /// ACK in Completed (RFC 3261 17.2.1).
    fn confirm(&mut self) -> Vec<Action> {
        let timer_i = self.timers.timer_i(self.reliable);
        // Table 4: I is 0 on reliable transports, so Confirmed is left at once.
        if timer_i.is_zero() {
            return self.terminate();
        }
        self.state = InviteServerState::Confirmed;
        vec![
            Action::CancelTimer(Timer::G),
            Action::CancelTimer(Timer::H),
            Action::StartTimer(Timer::I, timer_i),
        ]
    }

    fn terminate(&mut self) -> Vec<Action> {
        self.state = InviteServerState::Terminated;
        vec![Action::Terminated]
    }
}

#[cfg(test)]
mod tests {
    use super::super::sim::{assert_only_live_timers_act, Clock, StateCase};
    use super::*;
    use Action::*;
    use InviteServerState as S;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }
    fn proceeding(reliable: bool) -> InviteServer {
        let mut s = InviteServer::new(reliable, TimerConfig::default()).0;
        s.send_response(100);
        s
    }
    fn after(reliable: bool, status: u16) -> InviteServer {
        let mut s = proceeding(reliable);
        s.send_response(status);
        s
    }
    fn accepted(reliable: bool) -> InviteServer {
        after(reliable, 200)
    }
    fn completed(reliable: bool) -> InviteServer {
        after(reliable, 486)
    }
    fn confirmed() -> InviteServer {
        let mut s = completed(false);
        s.on_ack();
        s
    }
    fn terminated() -> InviteServer {
        let mut s = accepted(false);
        s.on_timer(Timer::L);
        s
    }

    #[test]
    fn new_starts_in_proceeding_without_actions() {
        for reliable in [false, true] {
            let (s, actions) = InviteServer::new(reliable, TimerConfig::default());
            assert_eq!(s.state(), S::Proceeding);
            assert_eq!(actions, vec![]);
        }
    }

    #[test]
    fn provisionals_in_proceeding_are_transmitted() {
        let (mut s, _) = InviteServer::new(false, TimerConfig::default());
        for status in [100, 180, 183] {
            assert_eq!(s.send_response(status), vec![TransmitResponse]);
            assert_eq!(s.state(), S::Proceeding);
        }
    }

    #[test]
    fn retransmitted_invite_in_proceeding_resends_response() {
        let mut s = proceeding(false);
        assert_eq!(s.on_request(), vec![TransmitResponse]);
        assert_eq!(s.state(), S::Proceeding);
    }

    #[test]
    fn success_enters_accepted_and_starts_timer_l() {
        for reliable in [false, true] {
            let mut s = proceeding(reliable);
            let expected = vec![TransmitResponse, StartTimer(Timer::L, ms(32_000))];
            assert_eq!(s.send_response(200), expected);
            assert_eq!(s.state(), S::Accepted);
        }
    }

    #[test]
    fn retransmitted_invite_in_accepted_is_absorbed() {
        let mut s = accepted(false);
        assert_eq!(s.on_request(), vec![]);
        assert_eq!(s.state(), S::Accepted);
    }

    #[test]
    fn further_2xx_from_tu_in_accepted_is_transmitted() {
        let mut s = accepted(false);
        assert_eq!(s.send_response(200), vec![TransmitResponse]);
        assert_eq!(s.state(), S::Accepted);
    }

    #[test]
    fn non_2xx_from_tu_in_accepted_is_dropped() {
        let mut s = accepted(false);
        assert_eq!(s.send_response(180), vec![]);
        assert_eq!(s.send_response(500), vec![]);
        assert_eq!(s.state(), S::Accepted);
    }

    #[test]
    fn ack_in_accepted_is_passed_to_tu() {
        let mut s = accepted(false);
        assert_eq!(s.on_ack(), vec![PassToTu]);
        assert_eq!(s.on_ack(), vec![PassToTu]);
        assert_eq!(s.state(), S::Accepted);
    }

    #[test]
    fn timer_l_terminates_accepted() {
        for reliable in [false, true] {
            let mut s = accepted(reliable);
            assert_eq!(s.on_timer(Timer::L), vec![Terminated]);
            assert_eq!(s.state(), S::Terminated);
        }
    }

    #[test]
    fn failure_enters_completed_and_starts_g_and_h() {
        let mut s = proceeding(false);
        let expected = vec![
            TransmitResponse,
            StartTimer(Timer::G, ms(500)),
            StartTimer(Timer::H, ms(32_000)),
        ];
        assert_eq!(s.send_response(486), expected);
        assert_eq!(s.state(), S::Completed);
    }

    #[test]
    fn reliable_failure_starts_only_timer_h() {
        let mut s = proceeding(true);
        let expected = vec![TransmitResponse, StartTimer(Timer::H, ms(32_000))];
        assert_eq!(s.send_response(603), expected);
        assert_eq!(s.state(), S::Completed);
    }

    #[test]
    fn retransmitted_invite_in_completed_resends_final() {
        let mut s = completed(false);
        assert_eq!(s.on_request(), vec![TransmitResponse]);
        assert_eq!(s.state(), S::Completed);
    }

    #[test]
    fn responses_from_tu_after_final_non_2xx_are_dropped() {
        let mut s = completed(false);
        for status in [180, 200, 500] {
            assert_eq!(s.send_response(status), vec![], "{status}");
        }
        assert_eq!(s.state(), S::Completed);
    }

    #[test]
    fn timer_g_caps_at_t2_in_completed() {
        let mut s = completed(false);
        for next in [1_000, 2_000, 4_000, 4_000, 4_000] {
            let expected = vec![TransmitResponse, StartTimer(Timer::G, ms(next))];
            assert_eq!(s.on_timer(Timer::G), expected);
            assert_eq!(s.state(), S::Completed);
        }
    }

    #[test]
    fn unreliable_schedule_retransmits_final_until_h() {
        let mut s = proceeding(false);
        let mut clock = Clock::default();
        clock.apply(s.send_response(486));
        clock.run(|t| s.on_timer(t));
        // Original at 0, then intervals 0.5, 1, 2, 4, 4, ...
        let sends = [
            0, 500, 1_500, 3_500, 7_500, 11_500, 15_500, 19_500, 23_500, 27_500, 31_500,
        ];
        assert_eq!(clock.times_of(TransmitResponse), sends);
        assert_eq!(clock.times_of(Timeout), [32_000]);
        assert_eq!(s.state(), S::Terminated);
    }

    #[test]
    fn timer_h_times_out_completed() {
        for reliable in [false, true] {
            let mut s = completed(reliable);
            assert_eq!(s.on_timer(Timer::H), vec![Timeout, Terminated]);
            assert_eq!(s.state(), S::Terminated);
        }
    }

    #[test]
    fn ack_in_completed_confirms_and_starts_timer_i() {
        let mut s = completed(false);
        let expected = vec![
            CancelTimer(Timer::G),
            CancelTimer(Timer::H),
            StartTimer(Timer::I, ms(5_000)),
        ];
        assert_eq!(s.on_ack(), expected);
        assert_eq!(s.state(), S::Confirmed);
    }

    #[test]
    fn reliable_transport_skips_timer_i() {
        let mut s = completed(true);
        assert_eq!(s.on_ack(), vec![Terminated]);
        assert_eq!(s.state(), S::Terminated);
    }

    #[test]
    fn ack_and_invite_retransmissions_in_confirmed_are_absorbed() {
        let mut s = confirmed();
        assert_eq!(s.on_ack(), vec![]);
        assert_eq!(s.on_request(), vec![]);
        assert_eq!(s.send_response(500), vec![]);
        assert_eq!(s.state(), S::Confirmed);
    }

    #[test]
    fn timer_i_terminates_confirmed() {
        let mut s = confirmed();
        assert_eq!(s.on_timer(Timer::I), vec![Terminated]);
        assert_eq!(s.state(), S::Terminated);
    }

    #[test]
    fn ack_in_proceeding_is_ignored() {
        let mut s = proceeding(false);
        assert_eq!(s.on_ack(), vec![]);
        assert_eq!(s.state(), S::Proceeding);
    }

    #[test]
    fn timer_g_on_reliable_is_stale() {
        let mut s = completed(true);
        assert_eq!(s.on_timer(Timer::G), vec![]);
        assert_eq!(s.state(), S::Completed);
    }

    #[test]
    fn only_the_timers_of_each_state_act() {
        let cases: [StateCase<InviteServer>; 6] = [
            (|| proceeding(false), &[]),
            (|| completed(false), &[Timer::G, Timer::H]),
            (confirmed, &[Timer::I]),
            (|| accepted(false), &[Timer::L]),
            (|| completed(true), &[Timer::H]),
            (|| accepted(true), &[Timer::L]),
        ];
        assert_only_live_timers_act(&cases, InviteServer::on_timer, InviteServer::state);
    }

    #[test]
    fn transport_error_in_proceeding_or_accepted_informs_tu_and_stays() {
        for mut s in [proceeding(false), accepted(false), accepted(true)] {
            let before = s.state();
            assert_eq!(s.on_transport_error(), vec![TransportError]);
            assert_eq!(s.state(), before);
        }
    }

    #[test]
    fn transport_error_in_completed_or_confirmed_terminates() {
        for mut s in [completed(false), completed(true), confirmed()] {
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
        assert_eq!(s.on_ack(), vec![]);
        assert_eq!(s.on_transport_error(), vec![]);
        for status in 0..=1_000 {
            assert_eq!(s.send_response(status), vec![], "{status}");
        }
        assert_eq!(s.state(), S::Terminated);
    }

    #[test]
    fn out_of_range_status_is_ignored() {
        for status in [0, 99, 700, u16::MAX] {
            let mut s = proceeding(false);
            assert_eq!(s.send_response(status), vec![], "{status}");
            assert_eq!(s.state(), S::Proceeding);
        }
    }
}
