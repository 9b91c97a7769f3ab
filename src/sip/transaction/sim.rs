//! Test-only virtual clock: executes a machine's timer actions the way the
//! shell will, so retransmission schedules can be checked end to end.

use std::time::Duration;

use super::{Action, Timer};

/// Upper bound on simulated timer firings, so a machine that re-arms forever
/// fails the test instead of hanging it.
const MAX_FIRINGS: usize = 1_000;

#[derive(Debug, Default)]
pub(super) struct Clock {
    now: Duration,
    /// Armed timers in arming order; ties fire in that order.
    armed: Vec<(Timer, Duration)>,
    /// Every non-timer action with the virtual time it was emitted at.
    pub(super) log: Vec<(Duration, Action)>,
    pub(super) terminated: bool,
}

impl Clock {
    pub(super) fn apply(&mut self, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::StartTimer(t, d) => {
                    self.armed.retain(|(u, _)| *u != t);
                    self.armed.push((t, self.now.saturating_add(d)));
                }
                Action::CancelTimer(t) => self.armed.retain(|(u, _)| *u != t),
                Action::Terminated => {
                    self.armed.clear();
                    self.terminated = true;
                    self.log.push((self.now, action));
                }
                other => self.log.push((self.now, other)),
            }
        }
    }

    /// Fire timers in deadline order, feeding each to `machine`, until the
    /// transaction terminates or nothing is armed.
    pub(super) fn run(&mut self, mut machine: impl FnMut(Timer) -> Vec<Action>) {
        for _ in 0..MAX_FIRINGS {
            if self.terminated {
                return;
            }
            let Some(next) = self
                .armed
                .iter()
                .enumerate()
                .min_by_key(|(i, (_, at))| (*at, *i))
                .map(|(i, _)| i)
            else {
                return;
            };
            let (timer, at) = self.armed.remove(next);
            self.now = at;
            let actions = machine(timer);
            self.apply(actions);
        }
    }

    pub(super) fn now(&self) -> Duration {
        self.now
    }

    pub(super) fn is_armed(&self, t: Timer) -> bool {
        self.armed.iter().any(|(u, _)| *u == t)
    }

    /// Times (in milliseconds) at which `action` was emitted.
    pub(super) fn times_of(&self, action: Action) -> Vec<u128> {
        self.log
            .iter()
            .filter(|(_, a)| *a == action)
            .map(|(at, _)| at.as_millis())
            .collect()
    }
}

/// A way to build a machine in some state, and the timers that mean
/// something there.
pub(super) type StateCase<M> = (fn() -> M, &'static [Timer]);

/// In each case, exactly the live timers act; every other timer is stale and
/// must neither produce actions nor change the state.
pub(super) fn assert_only_live_timers_act<M, S>(
    cases: &[StateCase<M>],
    on_timer: fn(&mut M, Timer) -> Vec<Action>,
    state: fn(&M) -> S,
) where
    S: PartialEq + std::fmt::Debug,
{
    for (build, live) in cases {
        for t in Timer::ALL {
            let mut machine = build();
            let before = state(&machine);
            let acted = !on_timer(&mut machine, t).is_empty();
            assert_eq!(acted, live.contains(&t), "{t:?} in {before:?}");
            if !acted {
                assert_eq!(state(&machine), before, "stale {t:?} changed state");
            }
        }
    }
}
