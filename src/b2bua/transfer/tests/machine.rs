//! Every transition of the transfer machine, one test each: the call's side
//! is played by hand (events in), the asserted actions are what it would do.

use super::*;
use crate::b2bua::transfer::DestinationKind;
use crate::sip::message::SipUri;

const LIMITS: Limits = Limits {
    max_redirects: 2,
    ring_timeout: Duration::from_secs(30),
    notify_timeout: Duration::from_secs(2),
};

fn dest(uri: &str) -> Destination {
    Destination {
        name: None,
        uri: SipUri::parse(uri).expect("test URI"),
        kind: DestinationKind::Sip,
        codecs: vec!["PCMU".into()],
        credentials: None,
        transport: None,
        contract: Default::default(),
        ticket_note: false,
        srtp: Default::default(),
    }
}

fn wall() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

/// A machine whose REFER was accepted (subscription on), with its first actions.
fn started(now: Instant) -> (TransferMachine, Vec<Action>) {
    TransferMachine::start(
        dest("sip:line@acme.zendesk.sip.twilio.com"),
        "sip:line@acme.zendesk.sip.twilio.com".into(),
        7,
        true,
        LIMITS,
        now,
        wall(),
    )
}

/// A machine whose INVITE is out (the 100 NOTIFY sent), the target ringing.
fn inviting(now: Instant) -> TransferMachine {
    let (mut m, _) = started(now);
    m.handle(Event::DialStarted { sent: true }, now);
    assert_eq!(m.state(), State::Inviting);
    m
}

/// The target's 200 OK.
fn answer(m: &mut TransferMachine, now: Instant) -> Vec<Action> {
    m.handle(
        Event::Answered {
            status: 200,
            reason: "OK",
        },
        now,
    )
}

/// A final non-2xx answer from the target.
fn reject(m: &mut TransferMachine, status: u16, reason: &str, now: Instant) -> Vec<Action> {
    m.handle(Event::Rejected { status, reason }, now)
}

fn notify(status: u16, reason: &str, last: bool) -> Action {
    Action::Notify {
        id: 7,
        status,
        reason: reason.into(),
        state: if last {
            NotifyState::Terminated
        } else {
            NotifyState::Active {
                expires: SUBSCRIPTION_SECS,
            }
        },
    }
}

fn reported_status(actions: &[Action]) -> Option<Option<u16>> {
    actions.iter().find_map(|a| match a {
        Action::Report(at) => Some(at.status),
        _ => None,
    })
}

#[test]
fn refer_accepted_dials_then_notifies_100() {
    let now = Instant::now();
    let (mut m, actions) = started(now);
    assert_eq!(actions, vec![Action::Dial { generation: 1 }]);
    assert_eq!(m.state(), State::Resolving);
    assert!(m.first_invite());
    let out = m.handle(Event::DialStarted { sent: false }, now);
    assert_eq!(out, vec![notify(100, "", false)]);
    assert_eq!(m.state(), State::Resolving, "lookup under way");
    assert!(m.first_invite(), "no INVITE yet");
    let out = m.handle(
        Event::Resolved {
            generation: 1,
            reachable: true,
        },
        now,
    );
    assert_eq!(out, vec![Action::SendInvite]);
    let later = now + Duration::from_millis(40);
    assert!(m.handle(Event::InviteSent, later).is_empty());
    assert_eq!(m.state(), State::Inviting);
    assert_eq!(m.ring_deadline(), Some(later + LIMITS.ring_timeout));
    assert_eq!(
        m.attempt().invite_sent_at,
        Some(wall() + Duration::from_millis(40))
    );
}

#[test]
fn refer_with_refer_sub_false_sends_no_notify() {
    let now = Instant::now();
    let (mut m, _) = TransferMachine::start(
        dest("sip:a@b.example"),
        "sip:a@b.example".into(),
        3,
        false,
        LIMITS,
        now,
        wall(),
    );
    assert!(m.handle(Event::DialStarted { sent: true }, now).is_empty());
    let out = answer(&mut m, now);
    assert_eq!(out, vec![Action::SwitchMedia]);
    let out = m.handle(Event::MediaSwitched(Ok(())), now);
    assert!(!out.iter().any(|a| matches!(a, Action::Notify { .. })));
    assert_eq!(
        out.last(),
        Some(&Action::ReleaseAi),
        "no NOTIFY to wait for"
    );
    assert_eq!(m.state(), State::Done);
}

#[test]
fn lookup_failure_fails_with_503_and_keeps_the_caller_with_the_ai() {
    let now = Instant::now();
    let (mut m, _) = started(now);
    m.handle(Event::DialStarted { sent: false }, now);
    let out = m.handle(
        Event::Resolved {
            generation: 1,
            reachable: false,
        },
        now,
    );
    assert!(out.contains(&notify(503, "Service Unavailable", true)));
    assert!(out.contains(&Action::DropMedia));
    assert!(!out.contains(&Action::EndCall));
    assert_eq!(reported_status(&out), Some(Some(503)));
    assert_eq!(m.state(), State::Done);
}

#[test]
fn a_dial_that_fails_at_once_sends_only_the_final_notify() {
    let now = Instant::now();
    let (mut m, _) = started(now);
    let out = m.handle(
        Event::DialFailed {
            status: 503,
            reason: "No PSTN gateway",
        },
        now,
    );
    assert!(out.contains(&notify(503, "No PSTN gateway", true)));
    assert_eq!(m.subscription(), Subscription::Ended);
    // The call still reports the dial as started: no 100 after the final NOTIFY.
    assert!(m.handle(Event::DialStarted { sent: false }, now).is_empty());
}

#[test]
fn target_provisional_changes_nothing_and_a_stale_lookup_is_ignored() {
    let now = Instant::now();
    let mut m = inviting(now);
    let out = m.handle(
        Event::Resolved {
            generation: 0,
            reachable: false,
        },
        now,
    );
    assert!(out.is_empty());
    assert_eq!(m.state(), State::Inviting);
}

#[test]
fn target_2xx_switches_media_notifies_200_and_releases_the_ai_on_the_answer() {
    let now = Instant::now();
    let mut m = inviting(now);
    let out = answer(&mut m, now);
    assert_eq!(out, vec![Action::SwitchMedia]);
    let out = m.handle(Event::MediaSwitched(Ok(())), now);
    assert_eq!(out[0], Action::Count { succeeded: true });
    assert_eq!(reported_status(&out), Some(Some(200)));
    assert!(out.contains(&notify(200, "OK", true)));
    assert!(
        !out.contains(&Action::ReleaseAi),
        "waits for the NOTIFY's answer"
    );
    assert_eq!(m.state(), State::Answered);
    assert!(!m.running());
    assert_eq!(m.deadline(), Some(now + LIMITS.notify_timeout));
    // Final NOTIFY answered (200, or refused with 481: both end it).
    let out = m.handle(Event::FinalNotifyDone, now);
    assert_eq!(out, vec![Action::ReleaseAi]);
    assert_eq!(m.state(), State::Done);
    assert!(m.handle(Event::FinalNotifyDone, now).is_empty(), "once");
}

#[test]
fn final_notify_unanswered_releases_the_ai_at_the_timeout() {
    let now = Instant::now();
    let mut m = inviting(now);
    m.handle(
        Event::Answered {
            status: 200,
            reason: "",
        },
        now,
    );
    let out = m.handle(Event::MediaSwitched(Ok(())), now);
    assert!(out.contains(&notify(200, "OK", true)), "empty reason: OK");
    assert!(m.tick(now + Duration::from_secs(1)).is_empty());
    let out = m.tick(now + LIMITS.notify_timeout);
    assert_eq!(out, vec![Action::ReleaseAi]);
    assert_eq!(m.state(), State::Done);
}

#[test]
fn media_switch_failure_hangs_up_the_target_and_fails_488() {
    let now = Instant::now();
    let mut m = inviting(now);
    answer(&mut m, now);
    let out = m.handle(Event::MediaSwitched(Err((488, "Not Acceptable Here"))), now);
    assert_eq!(out[0], Action::ByeTarget);
    assert!(out.contains(&notify(488, "Not Acceptable Here", true)));
    assert_eq!(m.state(), State::Done);
}

#[test]
fn redirect_followed_redials_without_a_second_100() {
    let now = Instant::now();
    let mut m = inviting(now);
    let ring = m.ring_deadline();
    let out = m.handle(
        Event::Redirected {
            status: 302,
            reason: "Moved",
            next: Some(dest("sip:other@acme.zendesk.sip.twilio.com")),
        },
        now,
    );
    assert_eq!(out, vec![Action::DropMedia, Action::Dial { generation: 2 }]);
    assert_eq!(
        m.destination().uri.as_str(),
        "sip:other@acme.zendesk.sip.twilio.com"
    );
    assert!(m.handle(Event::DialStarted { sent: true }, now).is_empty());
    assert_eq!(
        m.ring_deadline(),
        ring,
        "one ring deadline for the whole transfer"
    );
    assert!(!m.first_invite());
}

#[test]
fn redirect_not_followable_fails_with_the_3xx() {
    let now = Instant::now();
    let mut m = inviting(now);
    let out = m.handle(
        Event::Redirected {
            status: 302,
            reason: "Moved",
            next: None,
        },
        now,
    );
    assert!(out.contains(&notify(302, "Moved", true)));
    assert_eq!(m.state(), State::Done);
}

#[test]
fn redirects_stop_at_the_limit() {
    let now = Instant::now();
    let mut m = inviting(now);
    for _ in 0..LIMITS.max_redirects {
        let out = m.handle(
            Event::Redirected {
                status: 301,
                reason: "",
                next: Some(dest("sip:x@y.example")),
            },
            now,
        );
        assert!(matches!(out.last(), Some(Action::Dial { .. })));
        m.handle(Event::DialStarted { sent: true }, now);
    }
    let out = m.handle(
        Event::Redirected {
            status: 301,
            reason: "",
            next: Some(dest("sip:x@y.example")),
        },
        now,
    );
    assert_eq!(reported_status(&out), Some(Some(301)));
}

#[test]
fn challenge_answered_once() {
    let now = Instant::now();
    let mut m = inviting(now);
    let out = m.handle(
        Event::Challenged {
            status: 407,
            reason: "Proxy Authentication Required",
            answer: Some(("Proxy-Authorization", "Digest x".into())),
        },
        now,
    );
    assert_eq!(
        out,
        vec![Action::SendInviteWithAuth {
            header: "Proxy-Authorization",
            value: "Digest x".into()
        }]
    );
    m.handle(Event::InviteSent, now);
    // A second challenge is a failure, even with an answer at hand.
    let out = m.handle(
        Event::Challenged {
            status: 407,
            reason: "Proxy Authentication Required",
            answer: Some(("Proxy-Authorization", "Digest y".into())),
        },
        now,
    );
    assert!(out.contains(&notify(407, "Proxy Authentication Required", true)));
    assert_eq!(m.state(), State::Done);
}

#[test]
fn challenge_not_answerable_fails_with_it() {
    let now = Instant::now();
    let mut m = inviting(now);
    let out = m.handle(
        Event::Challenged {
            status: 401,
            reason: "Unauthorized",
            answer: None,
        },
        now,
    );
    assert!(out.contains(&notify(401, "Unauthorized", true)));
    assert_eq!(reported_status(&out), Some(Some(401)));
}

#[test]
fn target_4xx_to_6xx_fail_with_their_status() {
    for status in [404, 486, 503, 603] {
        let now = Instant::now();
        let mut m = inviting(now);
        let out = m.handle(
            Event::Rejected {
                status,
                reason: "No",
            },
            now,
        );
        assert_eq!(out[0], Action::Count { succeeded: false });
        assert!(out.contains(&notify(status, "No", true)), "{status}");
        assert!(out.contains(&Action::DropMedia));
        assert!(!out.contains(&Action::CancelTarget));
        assert_eq!(m.state(), State::Done, "{status}");
    }
}

#[test]
fn ring_timeout_fails_408_and_cancels_then_waits_for_the_final_answer() {
    let now = Instant::now();
    let mut m = inviting(now);
    assert!(
        m.tick(now + LIMITS.ring_timeout).is_empty(),
        "the INVITE's timer"
    );
    let out = m.handle(Event::RingTimeout, now + LIMITS.ring_timeout);
    assert!(out.contains(&notify(408, "Request Timeout", true)));
    assert_eq!(out.last(), Some(&Action::CancelTarget));
    assert_eq!(m.state(), State::Abandoned);
    assert!(!m.running(), "a new REFER may come once this one has ended");
    // The 487 to our CANCEL ends it, quietly.
    let out = reject(&mut m, 487, "", now);
    assert_eq!(out, vec![Action::DropMedia]);
    assert_eq!(m.state(), State::Done);
}

#[test]
fn answer_crossing_the_cancel_is_hung_up() {
    let now = Instant::now();
    let mut m = inviting(now);
    m.handle(Event::RingTimeout, now);
    let out = answer(&mut m, now);
    assert_eq!(out, vec![Action::ByeTarget]);
    assert_eq!(m.state(), State::Done);
}

#[test]
fn caller_bye_while_the_target_rings_cancels_without_notify() {
    let now = Instant::now();
    let mut m = inviting(now);
    let out = m.handle(Event::CallEnding, now);
    assert!(!out.iter().any(|a| matches!(a, Action::Notify { .. })));
    assert_eq!(reported_status(&out), Some(None), "reported as cut short");
    assert_eq!(out.last(), Some(&Action::CancelTarget));
    assert_eq!(m.state(), State::Abandoned);
}

#[test]
fn caller_bye_while_resolving_drops_the_transfer() {
    let now = Instant::now();
    let (mut m, _) = started(now);
    m.handle(Event::DialStarted { sent: false }, now);
    let out = m.handle(Event::CallEnding, now);
    assert!(out.contains(&Action::DropMedia));
    assert_eq!(m.state(), State::Done);
    // The lookup coming back later does nothing.
    let out = m.handle(
        Event::Resolved {
            generation: 1,
            reachable: true,
        },
        now,
    );
    assert!(out.is_empty());
}

#[test]
fn ai_bye_while_the_target_rings_lets_the_transfer_go_on() {
    let now = Instant::now();
    let mut m = inviting(now);
    assert!(m.handle(Event::AiGone, now).is_empty());
    assert!(m.running());
    // Answered: no NOTIFY to anyone, nothing to release.
    answer(&mut m, now);
    let out = m.handle(Event::MediaSwitched(Ok(())), now);
    assert!(!out.iter().any(|a| matches!(a, Action::Notify { .. })));
    assert_eq!(m.state(), State::Done);
}

#[test]
fn ai_bye_then_target_failure_ends_the_call() {
    let now = Instant::now();
    let mut m = inviting(now);
    m.handle(Event::AiGone, now);
    let out = reject(&mut m, 486, "Busy Here", now);
    assert!(!out.iter().any(|a| matches!(a, Action::Notify { .. })));
    assert_eq!(out.last(), Some(&Action::EndCall));
}

#[test]
fn ai_bye_while_the_final_notify_waits_ends_the_transfer() {
    let now = Instant::now();
    let mut m = inviting(now);
    answer(&mut m, now);
    m.handle(Event::MediaSwitched(Ok(())), now);
    assert!(m.handle(Event::AiGone, now).is_empty());
    assert_eq!(m.state(), State::Done);
    assert_eq!(m.deadline(), None);
}

#[test]
fn second_refer_while_one_runs_gets_491_and_after_it_ended_is_accepted() {
    let now = Instant::now();
    let mut m = inviting(now);
    assert_eq!(
        admit_refer(true, true, true, Some(&m), true),
        Err(ReferRefusal::Busy)
    );
    assert_eq!(ReferRefusal::Busy.status(), 491);
    reject(&mut m, 486, "", now);
    assert_eq!(admit_refer(true, true, true, Some(&m), true), Ok(()));
    assert_eq!(admit_refer(true, true, true, None, true), Ok(()));
}

#[test]
fn refer_refused_off_the_ai_leg_or_before_the_answer_or_without_relay() {
    assert_eq!(
        admit_refer(false, true, true, None, true),
        Err(ReferRefusal::NotAllowedOnLeg)
    );
    assert_eq!(
        admit_refer(true, false, true, None, true),
        Err(ReferRefusal::NotAllowedOnLeg)
    );
    assert_eq!(
        admit_refer(true, true, false, None, true),
        Err(ReferRefusal::NotAllowedOnLeg)
    );
    assert_eq!(
        admit_refer(true, true, true, None, false),
        Err(ReferRefusal::NoRelay)
    );
    assert_eq!(ReferRefusal::NoRelay.status(), 501);
}
