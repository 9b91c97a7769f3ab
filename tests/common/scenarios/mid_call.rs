//! A confirmed call: re-INVITE, UPDATE and INFO relayed between the legs, late offer,
//! and (UDP) the 2xx retransmission and ACK rules of RFC 3261 13.3.1.4 and 13.2.2.4.

use super::*;
use crate::common::build::{AI_SDP_RECVONLY, SDP_SENDONLY};
use crate::common::media::assert_sdp_relayed;
use crate::common::{Transport, CALLER_E164, SDP};

const DTMF: &str = "Signal=5\r\nDuration=160\r\n";

/// Wait for a request of `method` that belongs to the call's dialog `dlg` (as that UA
/// sees it), skipping nothing.
async fn expect_in_dialog(ua: &mut TestUa, method: Method, dlg: &Dialog) -> Received {
    let r = ua.expect_request(method.clone(), WAIT).await;
    assert_in_dialog(&r.msg, dlg, &format!("relayed {method}"));
    r
}

pub async fn caller_hold_reinvite_is_relayed_with_sdp_and_answer(t: Transport) {
    let mut rig = Rig::new(t, "").await;
    let mut call = establish(&mut rig, InviteOpts::default()).await;

    let reinvite = rig.caller.in_dialog(
        &mut call.caller_dlg,
        Method::Invite,
        Some(("application/sdp", SDP_SENDONLY)),
    );
    rig.caller.send(&reinvite).await;
    let ai_reinvite = expect_in_dialog(&mut rig.agent, Method::Invite, &call.agent_dlg).await;
    assert_sdp_relayed(
        ai_reinvite.msg.body(),
        SDP_SENDONLY,
        "hold SDP relayed intact",
    );
    assert_eq!(
        ai_reinvite.msg.header("Content-Type"),
        Some("application/sdp")
    );
    assert!(
        ai_reinvite.msg.cseq().unwrap().seq > call.ai_invite.msg.cseq().unwrap().seq,
        "re-INVITE on the AI leg has a higher CSeq than the first INVITE"
    );
    rig.agent
        .respond(&ai_reinvite, 200, &[], Some(AI_SDP_RECVONLY))
        .await;

    let ok = rig
        .caller
        .expect_response_to(Method::Invite, 200, WAIT)
        .await;
    assert_eq!(
        ok.msg.cseq().unwrap().seq,
        call.caller_dlg.invite_cseq,
        "200 answers the re-INVITE"
    );
    assert_sdp_relayed(
        ok.msg.body(),
        AI_SDP_RECVONLY,
        "answer SDP relayed back intact",
    );
    rig.caller
        .send(&rig.caller.ack(&call.caller_dlg, None))
        .await;
    let ack = rig.agent.expect_request(Method::Ack, WAIT).await;
    assert_eq!(
        ack.msg.cseq().unwrap().seq,
        ai_reinvite.msg.cseq().unwrap().seq,
        "ACK for the re-INVITE's 2xx"
    );

    bye_from_caller(&mut rig, &mut call).await;
    assert_call_gone(&rig.server, &call.session_id, CALLER_E164).await;
}

pub async fn ai_agent_reinvite_is_relayed_to_caller(t: Transport) {
    let mut rig = Rig::new(t, "").await;
    let mut call = establish(&mut rig, InviteOpts::default()).await;

    let reinvite = rig.agent.in_dialog(
        &mut call.agent_dlg,
        Method::Invite,
        Some(("application/sdp", AI_SDP_RECVONLY)),
    );
    rig.agent.send(&reinvite).await;
    let caller_reinvite = expect_in_dialog(&mut rig.caller, Method::Invite, &call.caller_dlg).await;
    assert_sdp_relayed(
        caller_reinvite.msg.body(),
        AI_SDP_RECVONLY,
        "SDP relayed intact",
    );
    rig.caller
        .respond(&caller_reinvite, 200, &[], Some(SDP_SENDONLY))
        .await;

    let ok = rig
        .agent
        .expect_response_to(Method::Invite, 200, WAIT)
        .await;
    assert_sdp_relayed(
        ok.msg.body(),
        SDP_SENDONLY,
        "caller's answer relayed to the AI agent",
    );
    rig.agent.send(&rig.agent.ack(&call.agent_dlg, None)).await;
    // handoff ACKs the caller's 2xx (the offer was in the re-INVITE).
    let ack = rig.caller.expect_request(Method::Ack, WAIT).await;
    assert_eq!(
        ack.msg.cseq().unwrap().seq,
        caller_reinvite.msg.cseq().unwrap().seq
    );

    bye_from_agent(&mut rig, &mut call).await;
    assert_call_gone(&rig.server, &call.session_id, CALLER_E164).await;
}

pub async fn info_is_relayed_both_ways(t: Transport) {
    let mut rig = Rig::new(t, "").await;
    let mut call = establish(&mut rig, InviteOpts::default()).await;

    let info = rig.caller.in_dialog(
        &mut call.caller_dlg,
        Method::Info,
        Some(("application/dtmf-relay", DTMF)),
    );
    rig.caller.send(&info).await;
    let got = expect_in_dialog(&mut rig.agent, Method::Info, &call.agent_dlg).await;
    assert_eq!(&got.msg.body()[..], DTMF.as_bytes());
    assert_eq!(
        got.msg.header("Content-Type"),
        Some("application/dtmf-relay")
    );
    rig.agent.respond(&got, 200, &[], None).await;
    rig.caller.expect_response_to(Method::Info, 200, WAIT).await;

    let info = rig.agent.in_dialog(
        &mut call.agent_dlg,
        Method::Info,
        Some(("application/dtmf-relay", DTMF)),
    );
    rig.agent.send(&info).await;
    let got = expect_in_dialog(&mut rig.caller, Method::Info, &call.caller_dlg).await;
    assert_eq!(&got.msg.body()[..], DTMF.as_bytes());
    rig.caller.respond(&got, 200, &[], None).await;
    rig.agent.expect_response_to(Method::Info, 200, WAIT).await;

    bye_from_caller(&mut rig, &mut call).await;
}

pub async fn update_is_relayed_with_answer(t: Transport) {
    let mut rig = Rig::new(t, "").await;
    let mut call = establish(&mut rig, InviteOpts::default()).await;

    let update = rig.caller.in_dialog(
        &mut call.caller_dlg,
        Method::Update,
        Some(("application/sdp", SDP_SENDONLY)),
    );
    rig.caller.send(&update).await;
    let got = expect_in_dialog(&mut rig.agent, Method::Update, &call.agent_dlg).await;
    assert_sdp_relayed(got.msg.body(), SDP_SENDONLY, "SDP relayed");
    rig.agent
        .respond(
            &got,
            200,
            &[("Contact", &rig.agent.contact())],
            Some(AI_SDP_RECVONLY),
        )
        .await;
    let ok = rig
        .caller
        .expect_response_to(Method::Update, 200, WAIT)
        .await;
    assert_sdp_relayed(ok.msg.body(), AI_SDP_RECVONLY, "SDP relayed");

    bye_from_agent(&mut rig, &mut call).await;
}

pub async fn late_offer_ack_sdp_is_carried_to_ai_agent(t: Transport) {
    let mut rig = Rig::new(t, "").await;
    let (invite, ai_invite) = place_call(&mut rig, &InviteOpts::default().without_sdp()).await;
    assert!(
        ai_invite.msg.body().is_empty(),
        "no SDP on the AI leg either"
    );
    rig.agent.respond(&ai_invite, 200, &[], Some(AI_SDP)).await;
    let ok = rig
        .caller
        .expect_response_to(Method::Invite, 200, WAIT)
        .await;
    assert_sdp_relayed(
        ok.msg.body(),
        AI_SDP,
        "the offer in the AI agent's 2xx reaches the caller",
    );
    // handoff's ACK must wait for the caller's answer.
    rig.agent
        .expect_silence(
            "ACK before the caller's ACK",
            Duration::from_millis(300),
            |m| m.method() == Some(&Method::Ack),
        )
        .await;
    let dlg = Dialog::as_uac(&invite, &ok.msg);
    rig.caller.send(&rig.caller.ack(&dlg, Some(SDP))).await;
    let ack = rig.agent.expect_request(Method::Ack, WAIT).await;
    assert_sdp_relayed(
        ack.msg.body(),
        SDP,
        "the caller's SDP answer is copied into the ACK",
    );
    assert_eq!(ack.msg.header("Content-Type"), Some("application/sdp"));
}

/// UDP only: the carrier does not ACK at first; handoff retransmits the 200 with
/// doubling intervals until the ACK, and then stops. The AI agent gets one ACK.
pub async fn unacked_200_is_retransmitted_until_ack(t: Transport) {
    assert_eq!(t, Transport::Udp);
    let mut rig = Rig::new(t, "").await;
    let (invite, ai_invite) = place_call(&mut rig, &InviteOpts::default()).await;
    rig.agent.respond(&ai_invite, 200, &[], Some(AI_SDP)).await;
    let first = rig
        .caller
        .expect_response_to(Method::Invite, 200, WAIT)
        .await;
    // T1 = 50 ms, T2 = 400 ms: retransmissions at about 50, 150, 350, 750 ms.
    let more: Vec<Received> = rig
        .caller
        .collect(Duration::from_millis(600))
        .await
        .into_iter()
        .filter(|r| r.msg.status() == Some(200))
        .collect();
    assert!(
        more.len() >= 2,
        "expected the unACKed 200 retransmitted at least twice within 600 ms, saw {}:\n{}",
        more.len(),
        rig.caller.history()
    );
    let mut times = vec![first.at];
    times.extend(more.iter().map(|r| r.at));
    let gaps: Vec<Duration> = times
        .windows(2)
        .map(|w| w[1].duration_since(w[0]))
        .collect();
    assert!(
        gaps[0] >= Duration::from_millis(35),
        "first retransmission after {:?}, before T1",
        gaps[0]
    );
    // Doubling intervals, with room for scheduling jitter on a busy machine.
    for w in gaps.windows(2) {
        assert!(
            w[1] * 5 >= w[0] * 4,
            "retransmission interval shrank: {gaps:?}"
        );
    }
    assert!(
        *gaps.last().unwrap() * 2 >= gaps[0] * 3,
        "retransmission intervals do not grow (T1 doubling): {gaps:?}"
    );
    for r in &more {
        assert_eq!(
            r.msg.to_tag(),
            first.msg.to_tag(),
            "retransmission is the same 200"
        );
    }
    let dlg = Dialog::as_uac(&invite, &first.msg);
    rig.caller.send(&rig.caller.ack(&dlg, None)).await;
    tokio::time::sleep(Duration::from_millis(30)).await; // one in flight may cross the ACK
    rig.caller.clear_backlog();
    rig.caller
        .expect_silence(
            "200 retransmission after the ACK",
            Duration::from_millis(700),
            |m| m.status() == Some(200),
        )
        .await;
    let acks = rig.agent.collect(Duration::from_millis(100)).await;
    let n = acks
        .iter()
        .filter(|r| r.msg.method() == Some(&Method::Ack))
        .count();
    assert_eq!(
        n,
        1,
        "the AI agent gets exactly one ACK for its one 200:\n{}",
        rig.agent.history()
    );
}

/// UDP only: the AI agent did not see handoff's ACK and retransmits its 200: handoff
/// ACKs every copy (RFC 3261 13.2.2.4).
pub async fn ai_agent_200_retransmission_is_acked_again(t: Transport) {
    assert_eq!(t, Transport::Udp);
    let mut rig = Rig::new(t, "").await;
    let call = establish(&mut rig, InviteOpts::default()).await;
    let ok_again = {
        let mut m = handoff::sip::message::Message::response_to(
            &call.ai_invite.msg,
            200,
            Some(&call.agent_dlg.local_tag),
        );
        m.push("Contact", rig.agent.contact());
        m.push("Content-Type", "application/sdp");
        m.set_body(bytes::Bytes::from_static(AI_SDP.as_bytes()));
        m
    };
    for attempt in 1..=2 {
        rig.agent
            .send_bytes_to(&ok_again.to_bytes(), Some(call.ai_invite.from))
            .await;
        let ack = rig
            .agent
            .expect(
                &format!("an ACK for retransmitted 200 number {attempt}"),
                WAIT,
                |m| m.method() == Some(&Method::Ack),
                |_| false,
            )
            .await;
        assert_eq!(
            ack.msg.cseq().unwrap().seq,
            call.ai_invite.msg.cseq().unwrap().seq
        );
        assert_eq!(ack.msg.call_id(), call.ai_invite.msg.call_id());
    }
    assert_eq!(rig.server.active_calls(), 1, "the call is still up");
}

/// UDP only: no ACK ever comes for the 200: after 64*T1 (3.2 s) handoff gives up and
/// sends BYE on both legs (RFC 3261 13.3.1.4).
pub async fn no_ack_for_200_ends_call_with_bye_on_both_legs(t: Transport) {
    assert_eq!(t, Transport::Udp);
    let mut rig = Rig::new(t, "").await;
    let (_invite, ai_invite) = place_call(&mut rig, &InviteOpts::default()).await;
    let ai_ok = rig.agent.respond(&ai_invite, 200, &[], Some(AI_SDP)).await;
    rig.caller
        .expect_response_to(Method::Invite, 200, WAIT)
        .await;
    let caller_bye = rig
        .caller
        .expect_request(Method::Bye, Duration::from_secs(5))
        .await;
    rig.caller.respond(&caller_bye, 200, &[], None).await;
    let ai_bye = rig.agent.expect_request(Method::Bye, WAIT).await;
    assert_in_dialog(
        &ai_bye.msg,
        &Dialog::as_uas(&ai_invite.msg, &ai_ok),
        "BYE to the AI agent",
    );
    rig.agent.respond(&ai_bye, 200, &[], None).await;
    assert!(eventually(Duration::from_secs(3), || rig.server.active_calls() == 0).await);
}

/// A second re-INVITE while the first is still with the far end: 491 (RFC 3261 14.2);
/// the first one completes normally.
pub async fn reinvite_while_one_is_pending_gets_491(t: Transport) {
    let mut rig = Rig::new(t, "").await;
    let mut call = establish(&mut rig, InviteOpts::default()).await;
    let hold = rig.caller.in_dialog(
        &mut call.caller_dlg,
        Method::Invite,
        Some(("application/sdp", SDP_SENDONLY)),
    );
    let hold_seq = call.caller_dlg.invite_cseq;
    rig.caller.send(&hold).await;
    let ai_hold = expect_in_dialog(&mut rig.agent, Method::Invite, &call.agent_dlg).await;

    let again = rig.caller.in_dialog(
        &mut call.caller_dlg,
        Method::Invite,
        Some(("application/sdp", SDP)),
    );
    rig.caller.send(&again).await;
    let pending = rig
        .caller
        .expect_response_to(Method::Invite, 491, WAIT)
        .await;
    assert_eq!(
        pending.msg.cseq().unwrap().seq,
        call.caller_dlg.invite_cseq,
        "491 answers the second re-INVITE"
    );
    rig.caller
        .send(&crate::common::build::ack_for_non_2xx(&again, &pending.msg))
        .await;

    rig.agent
        .respond(&ai_hold, 200, &[], Some(AI_SDP_RECVONLY))
        .await;
    let ok = rig
        .caller
        .expect_response_to(Method::Invite, 200, WAIT)
        .await;
    assert_eq!(
        ok.msg.cseq().unwrap().seq,
        hold_seq,
        "200 answers the first re-INVITE"
    );
    let mut first = call.caller_dlg.clone();
    first.invite_cseq = hold_seq;
    rig.caller.send(&rig.caller.ack(&first, None)).await;
    rig.agent.expect_request(Method::Ack, WAIT).await;
    rig.agent
        .expect_silence(
            "the second re-INVITE on the AI leg",
            Duration::from_millis(200),
            |m| m.method() == Some(&Method::Invite),
        )
        .await;
    bye_from_caller(&mut rig, &mut call).await;
}

/// TCP only: a reliable transport delivers the 200 once; handoff does not retransmit it
/// while waiting for the ACK (RFC 3261 13.3.1.4 retransmits over unreliable ones).
pub async fn unacked_200_is_sent_once_over_tcp(t: Transport) {
    assert_eq!(t, Transport::Tcp);
    let mut rig = Rig::new(t, "").await;
    let (invite, ai_invite) = place_call(&mut rig, &InviteOpts::default()).await;
    rig.agent.respond(&ai_invite, 200, &[], Some(AI_SDP)).await;
    let ok = rig
        .caller
        .expect_response_to(Method::Invite, 200, WAIT)
        .await;
    rig.caller
        .expect_silence("a second 200 over TCP", Duration::from_millis(500), |m| {
            m.status() == Some(200)
        })
        .await;
    let mut dlg = Dialog::as_uac(&invite, &ok.msg);
    rig.caller.send(&rig.caller.ack(&dlg, None)).await;
    let bye = rig.caller.bye(&mut dlg);
    rig.caller.send(&bye).await;
    rig.caller.expect_response_to(Method::Bye, 200, WAIT).await;
}
