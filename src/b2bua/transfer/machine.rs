//! One blind transfer (RFC 3515) as a sans-IO state machine: the call feeds it
//! what happened (`Event`) and executes what it asks for (`Action`), in order,
//! in one place. The machine owns what only the transfer needs: its state, the
//! implicit subscription of the REFER (NOTIFYs, RFC 3515 2.4.4-2.4.7), the
//! redirects followed, the one digest retry, the ring and release deadlines and
//! the attempt record the lifecycle events report.
//!
//! ```text
//!   REFER ──> Resolving ──INVITE sent──> Inviting ──2xx──> Switching ──ok──> Answered ──NOTIFY answered──> Done
//!                 │  ^                      │  │                 │                      (or timeout, AI gone)
//!                 │  └────── 3xx followed ──┘  └── 401/407 ──> Inviting (once, with credentials)
//!                 └── fails ──> Done            └── fails, caller gone ──> Abandoned ──final answer──> Done
//! ```

use super::Destination;
use std::time::{Duration, Instant, SystemTime};

/// How long the implicit subscription of a REFER lasts (RFC 3515 2.4.6): the
/// final NOTIFY ends it long before.
pub const SUBSCRIPTION_SECS: u32 = 120;

/// What a transfer is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// The target's address is being looked up (DNS, TCP connect).
    Resolving,
    /// Our INVITE to the target is pending.
    Inviting,
    /// The target answered; the caller's media is being moved to it.
    Switching,
    /// The caller is with the target; the AI leg goes once it has heard so.
    Answered,
    /// Failed or cut short, and reported; our INVITE still awaits its final
    /// answer after a CANCEL.
    Abandoned,
    /// Nothing left to do: the call drops the machine.
    Done,
}

/// The REFER's implicit subscription (RFC 3515 2.4.4, RFC 4488).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subscription {
    /// NOTIFYs go to the AI agent; `id` is the REFER's CSeq number.
    Active { id: u32 },
    /// The final NOTIFY went, or none is wanted (`Refer-Sub: false`), or the
    /// AI agent is gone.
    Ended,
}

/// The `Subscription-State` of a NOTIFY.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotifyState {
    Active { expires: u32 },
    Terminated,
}

/// The record of one transfer attempt, reported by `phone_call.transferred`:
/// the call's own record type, kept here while the attempt runs.
pub use crate::events::TransferRecord as Attempt;

/// The settings a transfer runs by (`[transfer]`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_redirects: u32,
    pub ring_timeout: Duration,
    pub notify_timeout: Duration,
}

/// What happened, as the call tells it.
#[derive(Debug)]
pub enum Event<'a> {
    /// The call began dialling: the INVITE went out at once (`sent`), or a
    /// lookup of the target is under way and comes back as `Resolved`.
    DialStarted { sent: bool },
    /// The lookup for attempt `generation` finished.
    Resolved { generation: u32, reachable: bool },
    /// The INVITE for the current attempt went out.
    InviteSent,
    /// The INVITE could not be built or sent (no PSTN gateway, no SDP offer).
    DialFailed { status: u16, reason: &'a str },
    /// A 2xx from the target.
    Answered { status: u16, reason: &'a str },
    /// The caller's media was moved to the target, or could not be.
    MediaSwitched(Result<(), (u16, &'static str)>),
    /// A 3xx; `next` is the first Contact the allow-list accepts.
    Redirected {
        status: u16,
        reason: &'a str,
        next: Option<Destination>,
    },
    /// A 401/407; `answer` is the credentials header when the destination has
    /// credentials and the challenge could be answered.
    Challenged {
        status: u16,
        reason: &'a str,
        answer: Option<(&'static str, String)>,
    },
    /// Any other final answer, or none (408 for a timeout, 503 for a
    /// transport error).
    Rejected { status: u16, reason: &'a str },
    /// The ring deadline passed with no final answer.
    RingTimeout,
    /// The call is ending (the caller hung up, shutdown, media timeout).
    CallEnding,
    /// The AI agent hung up.
    AiGone,
    /// The final NOTIFY has its answer, failed, or its time ran out.
    FinalNotifyDone,
}

/// What the call must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Find the current destination and send it an INVITE (or start a lookup
    /// for `generation`); answer with `DialStarted` or `DialFailed`.
    Dial { generation: u32 },
    /// The lookup succeeded: send the INVITE; answer `InviteSent` or `DialFailed`.
    SendInvite,
    /// The last INVITE again, new branch and CSeq, with this credentials
    /// header (RFC 3261 22.2); answer `InviteSent`.
    SendInviteWithAuth { header: &'static str, value: String },
    /// A NOTIFY to the AI agent (RFC 3515 2.4.5) with a sipfrag of `status`.
    Notify {
        id: u32,
        status: u16,
        reason: String,
        state: NotifyState,
    },
    /// Move the caller's media to the target; answer `MediaSwitched`.
    SwitchMedia,
    /// Give back the media ports set aside for the target.
    DropMedia,
    /// CANCEL the INVITE to the target (now, or on its first 1xx).
    CancelTarget,
    /// BYE the target's confirmed dialog.
    ByeTarget,
    /// BYE the AI leg: its part is over.
    ReleaseAi,
    /// The attempt has its outcome: record it and emit `phone_call.transferred`.
    Report(Attempt),
    /// Count the transfer as succeeded or failed.
    Count { succeeded: bool },
    /// The AI agent left and the transfer failed: nobody is left for the caller.
    EndCall,
}

/// Why a REFER is refused before a transfer starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReferRefusal {
    /// Only the AI agent of a live call hands it off, once (403).
    NotAllowedOnLeg,
    /// A transfer is still running (491, RFC 3515 2.4.2 leaves it to us).
    Busy,
    /// Without the relay the caller's media cannot move (501).
    NoRelay,
}

impl ReferRefusal {
    pub fn status(self) -> u16 {
        match self {
            ReferRefusal::NotAllowedOnLeg => 403,
            ReferRefusal::Busy => 491,
            ReferRefusal::NoRelay => 501,
        }
    }

    pub fn reason(self) -> &'static str {
        match self {
            ReferRefusal::NotAllowedOnLeg => "Transfer not allowed on this leg",
            ReferRefusal::Busy => "",
            ReferRefusal::NoRelay => "Transfer needs media relay mode",
        }
    }
}

/// Whether a REFER may start a transfer: it comes from the AI agent while the
/// AI agent is bridged to the caller in an answered call, no transfer is
/// still running, and media is relayed.
pub fn admit_refer(
    from_ai: bool,
    ai_bridged: bool,
    answered: bool,
    current: Option<&TransferMachine>,
    relay: bool,
) -> Result<(), ReferRefusal> {
    if !from_ai || !ai_bridged || !answered {
        return Err(ReferRefusal::NotAllowedOnLeg);
    }
    if current.is_some_and(|m| m.state != State::Done) {
        return Err(ReferRefusal::Busy);
    }
    if !relay {
        return Err(ReferRefusal::NoRelay);
    }
    Ok(())
}

/// One transfer, from the accepted REFER to its end.
#[derive(Debug)]
pub struct TransferMachine {
    state: State,
    subscription: Subscription,
    /// The AI agent's leg is still there (an AI that hung up mid-transfer
    /// leaves the caller to the transfer's outcome).
    ai_present: bool,
    dest: Destination,
    limits: Limits,
    /// Bumped for every dial, so a late lookup result for an old one is ignored.
    generation: u32,
    redirects: u32,
    auth_tried: bool,
    /// A dial has started (the first NOTIFY follows the first).
    dialled: bool,
    /// An INVITE has gone (the setup latency is measured to the first).
    invited: bool,
    refer_at: Instant,
    ring_deadline: Option<Instant>,
    release_at: Option<Instant>,
    /// The target's 2xx, reported in the final NOTIFY once media has moved.
    answer: Option<(u16, String)>,
    attempt: Attempt,
}

impl TransferMachine {
    /// A REFER was accepted (202): dial the destination. `subscribe` is false
    /// for `Refer-Sub: false`; `refer_cseq` names the subscription.
    pub fn start(
        dest: Destination,
        target: String,
        refer_cseq: u32,
        subscribe: bool,
        limits: Limits,
        now: Instant,
        wall: SystemTime,
    ) -> (TransferMachine, Vec<Action>) {
        let attempt = Attempt {
            target,
            destination: dest.name.clone(),
            status: None,
            requested_at: wall,
            invite_sent_at: None,
            completed_at: None,
        };
        let m = TransferMachine {
            state: State::Resolving,
            subscription: if subscribe {
                Subscription::Active { id: refer_cseq }
            } else {
                Subscription::Ended
            },
            ai_present: true,
            dest,
            limits,
            generation: 1,
            redirects: 0,
            auth_tried: false,
            dialled: false,
            invited: false,
            refer_at: now,
            ring_deadline: None,
            release_at: None,
            answer: None,
            attempt,
        };
        (m, vec![Action::Dial { generation: 1 }])
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// The transfer is still trying to reach the target (a second REFER gets
    /// 491; an AI agent leaving now does not end the call).
    pub fn running(&self) -> bool {
        matches!(
            self.state,
            State::Resolving | State::Inviting | State::Switching
        )
    }

    pub fn subscription(&self) -> Subscription {
        self.subscription
    }

    /// Where the current attempt goes.
    pub fn destination(&self) -> &Destination {
        &self.dest
    }

    pub fn generation(&self) -> u32 {
        self.generation
    }

    pub fn refer_at(&self) -> Instant {
        self.refer_at
    }

    /// No INVITE has gone yet: the one being sent is the transfer's first.
    pub fn first_invite(&self) -> bool {
        !self.invited
    }

    pub fn attempt(&self) -> &Attempt {
        &self.attempt
    }

    /// The ring deadline of the whole transfer (redirects and the auth retry
    /// included): for the target's pending INVITE.
    pub fn ring_deadline(&self) -> Option<Instant> {
        self.ring_deadline
    }

    /// The next time the machine wants `tick` (the ring deadline is the
    /// target's pending INVITE's, which reports `RingTimeout`).
    pub fn deadline(&self) -> Option<Instant> {
        self.release_at.filter(|_| self.state == State::Answered)
    }

    /// Time-driven events: the final NOTIFY's time is up.
    pub fn tick(&mut self, now: Instant) -> Vec<Action> {
        match self.deadline() {
            Some(d) if now >= d => self.handle(Event::FinalNotifyDone, now),
            _ => Vec::new(),
        }
    }

    /// One event in, the actions it calls for out.
    pub fn handle(&mut self, event: Event<'_>, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        match (self.state, event) {
            (State::Resolving, Event::DialStarted { sent }) => {
                if sent {
                    self.invite_sent(now);
                }
                // RFC 3515 2.4.4: the first NOTIFY (100) follows the first dial.
                if !std::mem::replace(&mut self.dialled, true) {
                    self.notify(100, "", false, &mut out);
                }
            }
            (
                State::Resolving,
                Event::Resolved {
                    generation,
                    reachable,
                },
            ) => {
                if generation != self.generation {
                    // A lookup for an attempt that a redirect replaced.
                } else if reachable {
                    out.push(Action::SendInvite);
                } else {
                    self.fail(503, "Service Unavailable", false, &mut out, now);
                }
            }
            (State::Resolving | State::Inviting, Event::InviteSent) => self.invite_sent(now),
            (State::Resolving | State::Inviting, Event::DialFailed { status, reason }) => {
                self.fail(status, reason, false, &mut out, now)
            }
            (State::Inviting, Event::Answered { status, reason }) => {
                self.state = State::Switching;
                self.answer = Some((status, reason.to_owned()));
                out.push(Action::SwitchMedia);
            }
            (State::Abandoned, Event::Answered { .. }) => {
                // The answer crossed our CANCEL: hang it up.
                self.state = State::Done;
                out.push(Action::ByeTarget);
            }
            (State::Switching, Event::MediaSwitched(Ok(()))) => self.succeeded(&mut out, now),
            (State::Switching, Event::MediaSwitched(Err((status, reason)))) => {
                out.push(Action::ByeTarget);
                self.fail(status, reason, false, &mut out, now);
            }
            (
                State::Inviting,
                Event::Redirected {
                    status,
                    reason,
                    next,
                },
            ) => match next {
                Some(dest) if self.redirects < self.limits.max_redirects => {
                    self.redirects += 1;
                    self.dest = dest;
                    self.generation = self.generation.wrapping_add(1);
                    self.state = State::Resolving;
                    out.push(Action::DropMedia);
                    out.push(Action::Dial {
                        generation: self.generation,
                    });
                }
                _ => self.fail(status, reason, false, &mut out, now),
            },
            (
                State::Inviting,
                Event::Challenged {
                    status,
                    reason,
                    answer,
                },
            ) => match answer.filter(|_| !self.auth_tried) {
                Some((header, value)) => {
                    self.auth_tried = true;
                    out.push(Action::SendInviteWithAuth { header, value });
                }
                None => self.fail(status, reason, false, &mut out, now),
            },
            (State::Inviting, Event::Rejected { status, reason }) => {
                self.fail(status, reason, false, &mut out, now)
            }
            (
                State::Abandoned,
                Event::Rejected { .. } | Event::Redirected { .. } | Event::Challenged { .. },
            ) => {
                // The INVITE we cancelled has its final answer.
                self.state = State::Done;
                out.push(Action::DropMedia);
            }
            (State::Inviting, Event::RingTimeout) => {
                self.fail(408, "Request Timeout", true, &mut out, now);
                out.push(Action::CancelTarget);
            }
            (State::Resolving, Event::CallEnding) => {
                // The AI agent gets its BYE with the call, not a NOTIFY.
                self.subscription = Subscription::Ended;
                self.state = State::Done;
                out.push(Action::Report(self.attempt.clone()));
                out.push(Action::DropMedia);
            }
            (State::Inviting | State::Switching, Event::CallEnding) => {
                self.subscription = Subscription::Ended;
                self.state = State::Abandoned;
                out.push(Action::Report(self.attempt.clone()));
                out.push(Action::CancelTarget);
            }
            (_, Event::AiGone) => {
                self.ai_present = false;
                self.subscription = Subscription::Ended;
                if self.state == State::Answered {
                    // Nobody left to tell; nothing left to release.
                    self.state = State::Done;
                    self.release_at = None;
                }
            }
            (State::Answered, Event::FinalNotifyDone) => {
                self.state = State::Done;
                self.release_at = None;
                out.push(Action::ReleaseAi);
            }
            // Anything else changes nothing: a late lookup, a 2xx retransmission,
            // a NOTIFY answer after the release, an event after the end.
            _ => {}
        }
        out
    }

    fn invite_sent(&mut self, now: Instant) {
        self.state = State::Inviting;
        self.invited = true;
        self.ring_deadline
            .get_or_insert(now + self.limits.ring_timeout);
        let at = self.wall(now);
        self.attempt.invite_sent_at.get_or_insert(at);
    }

    fn succeeded(&mut self, out: &mut Vec<Action>, now: Instant) {
        let (status, reason) = self.answer.take().unwrap_or((200, String::new()));
        self.attempt.status = Some(200);
        self.attempt.completed_at = Some(self.wall(now));
        self.ring_deadline = None;
        out.push(Action::Count { succeeded: true });
        out.push(Action::Report(self.attempt.clone()));
        let reason = if reason.is_empty() { "OK" } else { &reason };
        if self.notify(status, reason, true, out) {
            // RFC 3515: the AI leg goes once the final NOTIFY is answered (some
            // agents answer 481 to a NOTIFY after a BYE), or when it times out.
            self.state = State::Answered;
            self.release_at = Some(now + self.limits.notify_timeout);
        } else {
            self.state = State::Done;
            out.push(Action::ReleaseAi);
        }
    }

    /// The transfer did not happen: the AI agent hears why and keeps the caller.
    /// `invite_pending`: our INVITE still awaits its final answer (a CANCEL follows).
    fn fail(
        &mut self,
        status: u16,
        reason: &str,
        invite_pending: bool,
        out: &mut Vec<Action>,
        now: Instant,
    ) {
        self.attempt.status = Some(status);
        self.attempt.completed_at = Some(self.wall(now));
        self.ring_deadline = None;
        out.push(Action::Count { succeeded: false });
        out.push(Action::Report(self.attempt.clone()));
        self.notify(status, reason, true, out);
        out.push(Action::DropMedia);
        self.state = if invite_pending {
            State::Abandoned
        } else {
            State::Done
        };
        if !self.ai_present {
            out.push(Action::EndCall);
        }
    }

    /// A NOTIFY while the subscription is active; the last one ends it.
    /// Returns whether one was sent.
    fn notify(&mut self, status: u16, reason: &str, last: bool, out: &mut Vec<Action>) -> bool {
        let Subscription::Active { id } = self.subscription else {
            return false;
        };
        let state = if last {
            self.subscription = Subscription::Ended;
            NotifyState::Terminated
        } else {
            NotifyState::Active {
                expires: SUBSCRIPTION_SECS,
            }
        };
        out.push(Action::Notify {
            id,
            status,
            reason: reason.to_owned(),
            state,
        });
        true
    }

    /// Wall-clock time of `now`, from the REFER's.
    fn wall(&self, now: Instant) -> SystemTime {
        self.attempt.requested_at + now.saturating_duration_since(self.refer_at)
    }
}

#[cfg(test)]
#[path = "tests/machine.rs"]
mod tests;
