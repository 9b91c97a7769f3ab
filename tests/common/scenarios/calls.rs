//! A call's life from the INVITE: answered and hung up by either side, cancelled,
//! refused by the AI agent, or never answered.

use super::*;
use crate::common::build::ack_for_non_2xx;
use crate::common::media::assert_sdp_relayed;
use crate::common::{cancel_for, Transport, CALLER_E164, SDP};
use std::time::Instant;

fn ai_uri(rig: &Rig) -> String {
    format!(
        "sip:ai@{}{}",
        rig.agent.local_addr(),
        rig.transport.uri_param()
    )
}

/// What handoff puts on the AI leg: new dialog identity, the session headers, the
/// caller's E.164 number and display name in From, the caller's SDP as is.
fn assert_ai_invite(rig: &Rig, call: &Established, display: &str) {
    let inv = &call.ai_invite.msg;
    assert_eq!(
        inv.request_uri(),
        Some(ai_uri(rig).as_str()),
        "AI leg goes to the route's ai_agent_uri"
    );
    assert_session_header(inv);
    assert_eq!(inv.header("X-OPENCX-AGENT-ID"), Some("agent-test"));
    assert_ne!(
        inv.call_id(),
        call.caller_invite.call_id(),
        "AI leg has its own Call-ID"
    );
    assert_ne!(
        inv.from_tag(),
        call.caller_invite.from_tag(),
        "AI leg has its own From tag"
    );
    assert!(inv.to_tag().is_none(), "AI leg INVITE has no To tag");
    let from = inv.from_header().expect("AI leg From parses");
    assert_eq!(
        from.display_name.as_deref(),
        Some(display),
        "From display name"
    );
    assert_eq!(
        from.uri.user.as_deref(),
        Some(CALLER_E164),
        "From user is the caller's E.164 number"
    );
    assert_sdp_relayed(inv.body(), SDP, "caller's SDP passed through");
    assert_eq!(inv.header("Content-Type"), Some("application/sdp"));
    assert!(
        inv.header("Contact").is_some(),
        "AI leg INVITE has a Contact"
    );
}

pub async fn basic_call_with_bye_from_caller(t: Transport) {
    let mut rig = Rig::new(t, "").await;
    let mut call = establish(&mut rig, InviteOpts::default()).await;
    assert_ai_invite(&rig, &call, "Alice");
    assert_live_session(&rig.server, &call.session_id, CALLER_E164, "Alice");
    assert_eq!(rig.server.active_calls(), 1);

    bye_from_caller(&mut rig, &mut call).await;
    assert_call_gone(&rig.server, &call.session_id, CALLER_E164).await;
    assert_eq!(count(&rig.server, |m| &m.calls_answered_total), 1);
    assert_eq!(count(&rig.server, |m| &m.calls_started_total), 1);
}

pub async fn basic_call_with_bye_from_ai_agent(t: Transport) {
    let mut rig = Rig::new(t, "").await;
    // A national number: default_country US makes it +14155551212.
    let opts = InviteOpts::default().from("\"Alice\" <sip:4155551212@carrier.example>");
    let mut call = establish(&mut rig, opts).await;
    assert_ai_invite(&rig, &call, "Alice");
    assert_live_session(&rig.server, &call.session_id, CALLER_E164, "Alice");

    bye_from_agent(&mut rig, &mut call).await;
    assert_call_gone(&rig.server, &call.session_id, CALLER_E164).await;
    assert_eq!(count(&rig.server, |m| &m.calls_answered_total), 1);
}

/// The AI agent's side of a CANCEL: 200 to it, 487 to the INVITE, then the ACK.
async fn agent_accepts_cancel(rig: &mut Rig, ai_invite: &Received) {
    let cancel = rig.agent.expect_request(Method::Cancel, WAIT).await;
    assert_eq!(
        branch_of(&cancel.msg),
        branch_of(&ai_invite.msg),
        "CANCEL has the INVITE's branch"
    );
    assert_eq!(cancel.msg.call_id(), ai_invite.msg.call_id());
    assert_eq!(
        cancel.msg.cseq().map(|c| c.seq),
        ai_invite.msg.cseq().map(|c| c.seq)
    );
    rig.agent.respond(&cancel, 200, &[], None).await;
    rig.agent.respond(ai_invite, 487, &[], None).await;
    let ack = rig.agent.expect_request(Method::Ack, WAIT).await;
    assert_eq!(
        branch_of(&ack.msg),
        branch_of(&ai_invite.msg),
        "ACK for 487 is hop-by-hop (INVITE's branch)"
    );
    assert_eq!(
        ack.msg.cseq().map(|c| c.seq),
        ai_invite.msg.cseq().map(|c| c.seq)
    );
}

/// The carrier's side of a CANCEL: 200 to it, 487 to the INVITE, which it ACKs.
async fn caller_cancels(rig: &mut Rig, invite: &Message) {
    rig.caller.send(&cancel_for(invite)).await;
    rig.caller
        .expect_response_to(Method::Cancel, 200, WAIT)
        .await;
    let terminated = rig
        .caller
        .expect_response_to(Method::Invite, 487, WAIT)
        .await;
    rig.caller
        .send(&ack_for_non_2xx(invite, &terminated.msg))
        .await;
}

pub async fn cancel_before_answer_gets_487_and_cancels_ai_leg(t: Transport) {
    let mut rig = Rig::new(t, "").await;
    let (invite, ai_invite) = place_call(&mut rig, &InviteOpts::default()).await;
    let sid = assert_session_header(&ai_invite.msg);
    rig.agent.respond(&ai_invite, 180, &[], None).await;
    rig.caller
        .expect_response_to(Method::Invite, 180, WAIT)
        .await;

    caller_cancels(&mut rig, &invite).await;
    agent_accepts_cancel(&mut rig, &ai_invite).await;
    assert_call_gone(&rig.server, &sid, CALLER_E164).await;
    assert_eq!(count(&rig.server, |m| &m.calls_failed_total), 1);
    assert_eq!(count(&rig.server, |m| &m.calls_answered_total), 0);
}

pub async fn cancel_before_ai_provisional_is_sent_after_first_1xx(t: Transport) {
    let mut rig = Rig::new(t, "").await;
    let (invite, ai_invite) = place_call(&mut rig, &InviteOpts::default()).await;
    // The AI agent has sent nothing yet: handoff may not CANCEL (RFC 3261 9.1).
    caller_cancels(&mut rig, &invite).await;
    rig.agent
        .expect_silence(
            "CANCEL before the AI agent's first 1xx",
            Duration::from_millis(300),
            |m| m.method() == Some(&Method::Cancel),
        )
        .await;
    rig.agent.respond(&ai_invite, 180, &[], None).await;
    agent_accepts_cancel(&mut rig, &ai_invite).await;
    // The caller already has its final answer: no 180 relayed after the 487.
    rig.caller
        .expect_silence("response after the 487", Duration::from_millis(200), |m| {
            m.status().is_some_and(|s| s != 487)
        })
        .await;
}

/// The AI agent refuses with `ai_status`: the caller hears `caller_status` and ACKs it,
/// the AI agent gets the hop-by-hop ACK for its answer.
async fn ai_refusal(rig: &mut Rig, ai_status: u16, caller_status: u16) {
    let (invite, ai_invite) = place_call(rig, &InviteOpts::default()).await;
    let extra: &[(&str, &str)] = if (300..400).contains(&ai_status) {
        &[("Contact", "<sip:elsewhere@127.0.0.1:9>")]
    } else {
        &[]
    };
    rig.agent.respond(&ai_invite, ai_status, extra, None).await;
    let ack = rig.agent.expect_request(Method::Ack, WAIT).await;
    assert_eq!(
        branch_of(&ack.msg),
        branch_of(&ai_invite.msg),
        "ACK for {ai_status} has the INVITE's branch"
    );
    let resp = rig
        .caller
        .expect(
            &format!(
                "the final answer ({caller_status}) to the INVITE after the AI agent's {ai_status}"
            ),
            WAIT,
            |m| {
                m.status().is_some_and(|s| s >= 200)
                    && m.cseq().is_some_and(|c| c.method == Method::Invite)
            },
            |m| m.status().is_some_and(|s| s < 200),
        )
        .await;
    assert_eq!(
        resp.msg.status(),
        Some(caller_status),
        "AI agent answered {ai_status}: caller should get {caller_status}"
    );
    assert_eq!(resp.msg.call_id(), invite.call_id());
    rig.caller.send(&ack_for_non_2xx(&invite, &resp.msg)).await;
    if rig.transport == Transport::Udp {
        // The ACK matched handoff's server transaction: no more retransmissions.
        rig.caller
            .expect_silence(
                "retransmission of the final answer after the ACK",
                Duration::from_millis(300),
                |m| m.status() == Some(caller_status),
            )
            .await;
    }
}

pub async fn ai_agent_busy_486_reaches_caller_and_is_acked(t: Transport) {
    let mut rig = Rig::new(t, "").await;
    ai_refusal(&mut rig, 486, 486).await;
    assert!(eventually(Duration::from_secs(3), || rig.server.active_calls() == 0).await);
    assert_eq!(count(&rig.server, |m| &m.calls_failed_total), 1);
}

pub async fn ai_agent_decline_603_reaches_caller_and_is_acked(t: Transport) {
    let mut rig = Rig::new(t, "").await;
    ai_refusal(&mut rig, 603, 603).await;
    assert!(eventually(Duration::from_secs(3), || rig.server.active_calls() == 0).await);
}

pub async fn ai_agent_failures_map_to_caller_statuses(t: Transport) {
    let mut rig = Rig::new(t, "").await;
    for (ai, caller) in [(404, 404), (302, 480), (401, 503), (407, 503)] {
        ai_refusal(&mut rig, ai, caller).await;
        rig.caller.clear_backlog();
        rig.agent.clear_backlog();
    }
}

pub async fn ai_agent_no_answer_gives_480_and_cancels_ai_leg(t: Transport) {
    let mut rig = Rig::new(t, "").await;
    let sent = Instant::now();
    let (_invite, ai_invite) = place_call(&mut rig, &InviteOpts::default()).await;
    rig.agent.respond(&ai_invite, 180, &[], None).await;
    rig.caller
        .expect_response_to(Method::Invite, 180, WAIT)
        .await;
    let unavailable = rig
        .caller
        .expect_response_to(Method::Invite, 480, Duration::from_secs(4))
        .await;
    let waited = unavailable.at.duration_since(sent);
    assert!(
        waited >= Duration::from_millis(1900),
        "480 came after {waited:?}, before ai_answer_timeout_secs (2 s)"
    );
    agent_accepts_cancel(&mut rig, &ai_invite).await;
    assert!(eventually(Duration::from_secs(3), || rig.server.active_calls() == 0).await);
    assert_eq!(count(&rig.server, |m| &m.calls_failed_total), 1);
}

pub async fn silent_ai_agent_gives_480(t: Transport) {
    let mut rig = Rig::new(t, "").await;
    let sent = Instant::now();
    place_call(&mut rig, &InviteOpts::default()).await;
    let unavailable = rig
        .caller
        .expect_response_to(Method::Invite, 480, Duration::from_secs(5))
        .await;
    let waited = unavailable.at.duration_since(sent);
    assert!(
        waited >= Duration::from_millis(1900),
        "480 came after only {waited:?}"
    );
    assert!(eventually(Duration::from_secs(5), || rig.server.active_calls() == 0).await);
}

/// TCP only: the AI agent's port refuses connections, so the caller gets 503 at once.
pub async fn unreachable_ai_agent_gives_503(t: Transport) {
    // Bind then drop a listener: its port is (very likely) closed for the test's life.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server = crate::common::start_handoff(t, port, "").await;
    let mut caller = TestUa::carrier(t, crate::common::handoff_addr(&server, t)).await;
    let invite = caller.invite(&InviteOpts::default());
    caller.send(&invite).await;
    let resp = caller
        .expect_response_to(Method::Invite, 503, Duration::from_secs(5))
        .await;
    caller.send(&ack_for_non_2xx(&invite, &resp.msg)).await;
    assert!(eventually(Duration::from_secs(3), || server.active_calls() == 0).await);
}

/// The AI agent's 200 crosses handoff's CANCEL: handoff ACKs it and hangs up the AI
/// leg with BYE; the caller, already answered 487, hears nothing more (RFC 3261 9.1,
/// 15).
pub async fn ai_answer_crossing_cancel_is_acked_and_hung_up(t: Transport) {
    let mut rig = Rig::new(t, "").await;
    let (invite, ai_invite) = place_call(&mut rig, &InviteOpts::default()).await;
    rig.agent.respond(&ai_invite, 180, &[], None).await;
    rig.caller
        .expect_response_to(Method::Invite, 180, WAIT)
        .await;
    caller_cancels(&mut rig, &invite).await;

    let cancel = rig.agent.expect_request(Method::Cancel, WAIT).await;
    rig.agent.respond(&cancel, 200, &[], None).await;
    let ai_ok = rig
        .agent
        .respond(&ai_invite, 200, &[], Some(crate::common::build::AI_SDP))
        .await;
    let ack = rig.agent.expect_request(Method::Ack, WAIT).await;
    assert_eq!(
        ack.msg.cseq().map(|c| c.seq),
        ai_invite.msg.cseq().map(|c| c.seq)
    );
    assert_ne!(
        branch_of(&ack.msg),
        branch_of(&ai_invite.msg),
        "ACK for the 2xx is end to end"
    );
    let bye = rig.agent.expect_request(Method::Bye, WAIT).await;
    assert_in_dialog(
        &bye.msg,
        &Dialog::as_uas(&ai_invite.msg, &ai_ok),
        "BYE to the AI agent",
    );
    rig.agent.respond(&bye, 200, &[], None).await;
    rig.caller
        .expect_silence(
            "request or further answer after the 487",
            Duration::from_millis(400),
            |m| m.is_request() || m.status().is_some_and(|s| s != 487),
        )
        .await;
    assert!(eventually(Duration::from_secs(3), || rig.server.active_calls() == 0).await);
    assert_eq!(count(&rig.server, |m| &m.calls_answered_total), 0);
}

/// A call with no signalling for longer than the TCP idle timeout: the connections
/// its dialogs use stay open, so the hang-up still reaches the other side.
pub async fn quiet_call_outlives_tcp_idle_timeout(t: Transport) {
    let mut rig = Rig::new(t, "sip.tcp_idle_timeout_secs = 1").await;
    let mut call = establish(&mut rig, InviteOpts::default()).await;
    tokio::time::sleep(std::time::Duration::from_millis(2600)).await;
    bye_from_agent(&mut rig, &mut call).await;
    assert_call_gone(&rig.server, &call.session_id, CALLER_E164).await;
}
