//! Requests handoff answers itself: out-of-dialog OPTIONS and the methods it does not
//! do, INVITEs it refuses before any AI leg, retransmissions it absorbs, headers it
//! strips, and malformed messages it survives.

use super::*;
use crate::common::build::ack_for_non_2xx;
use crate::common::{Transport, CALLER_E164, SDP};
use std::collections::HashSet;

const OPTIONS: &str = "OPTIONS sip:handoff@{handoff} SIP/2.0
Via: {via}
Max-Forwards: 70
From: <sip:probe@carrier.example>;tag={tag}
To: <sip:handoff@{handoff}>
Call-ID: {call_id}
CSeq: 1 OPTIONS

";

/// An out-of-dialog request of `method` to handoff.
fn request(method: &str) -> String {
    OPTIONS.replace("OPTIONS", method)
}

pub async fn options_gets_200_with_allow_and_supported(t: Transport) {
    let mut rig = Rig::new(t, "").await;
    rig.caller.send_raw(OPTIONS).await;
    let ok = rig
        .caller
        .expect_response_to(Method::Options, 200, WAIT)
        .await;
    let allow: Vec<&str> = ok.msg.header_values("Allow").collect();
    for m in ["INVITE", "ACK", "CANCEL", "BYE", "OPTIONS"] {
        assert!(allow.contains(&m), "Allow {allow:?} lacks {m}");
    }
    assert!(
        ok.msg.header("Supported").is_some(),
        "200 to OPTIONS has a Supported header"
    );
    assert!(ok.msg.to_tag().is_some(), "200 to OPTIONS has a To tag");
}

pub async fn unknown_method_gets_501(t: Transport) {
    let mut rig = Rig::new(t, "").await;
    rig.caller.send_raw(&request("FOO")).await;
    rig.caller.expect_response(501, WAIT).await;
}

pub async fn register_gets_405_with_allow(t: Transport) {
    let mut rig = Rig::new(t, "").await;
    // REFER is allowed, but only the AI agent's, inside its call.
    rig.caller.send_raw(&request("REFER")).await;
    rig.caller.expect_response(403, WAIT).await;
    rig.caller.send_raw(&request("REGISTER")).await;
    let r = rig
        .caller
        .expect_response_to(Method::Register, 405, WAIT)
        .await;
    assert!(
        r.msg.header_values("Allow").any(|m| m == "INVITE"),
        "405 carries Allow"
    );
    for method in ["SUBSCRIBE", "MESSAGE", "PUBLISH", "NOTIFY", "PRACK"] {
        rig.caller.send_raw(&request(method)).await;
        let r = rig.caller.expect_response(405, WAIT).await;
        assert_eq!(
            r.msg.cseq().map(|c| c.method.to_string()),
            Some(method.to_owned())
        );
        assert!(
            r.msg.header("Allow").is_some(),
            "405 to {method} carries Allow"
        );
    }
}

pub async fn bye_for_unknown_call_gets_481(t: Transport) {
    let mut rig = Rig::new(t, "").await;
    let bye = "BYE sip:handoff@{handoff} SIP/2.0
Via: {via}
Max-Forwards: 70
From: <sip:+14155551212@carrier.example>;tag={tag}
To: <sip:+18005550100@carrier.example>;tag=nosuchtag
Call-ID: {call_id}
CSeq: 2 BYE

";
    rig.caller.send_raw(bye).await;
    rig.caller.expect_response_to(Method::Bye, 481, WAIT).await;
}

/// The INVITE is refused with `status` and no AI leg is attempted.
async fn refused_invite(rig: &mut Rig, opts: InviteOpts, status: u16) -> Received {
    let invite = rig.caller.invite(&opts);
    rig.caller.send(&invite).await;
    let r = rig
        .caller
        .expect_response_to(Method::Invite, status, WAIT)
        .await;
    rig.caller.send(&ack_for_non_2xx(&invite, &r.msg)).await;
    rig.agent
        .expect_silence("INVITE on the AI leg", Duration::from_millis(200), |m| {
            m.method() == Some(&Method::Invite)
        })
        .await;
    assert_eq!(rig.server.active_calls(), 0);
    r
}

pub async fn invite_with_max_forwards_zero_gets_483(t: Transport) {
    let mut rig = Rig::new(t, "").await;
    let opts = InviteOpts {
        max_forwards: 0,
        ..InviteOpts::default()
    };
    refused_invite(&mut rig, opts, 483).await;
}

pub async fn invite_requiring_100rel_gets_420_with_unsupported(t: Transport) {
    let mut rig = Rig::new(t, "").await;
    let r = refused_invite(
        &mut rig,
        InviteOpts::default().header("Require", "100rel"),
        420,
    )
    .await;
    assert_eq!(r.msg.header("Unsupported"), Some("100rel"));
}

pub async fn unroutable_number_gets_404(t: Transport) {
    let routes = "[[route]]\nprefix = \"+1800\"\norg_id = \"org-test\"\nagent_id = \"agent-test\"\nai_agent_uri = \"{ai}\"\n";
    let mut rig = Rig::new(t, routes).await;
    refused_invite(&mut rig, InviteOpts::default().called("+442079460000"), 404).await;
    // The prefix route still takes the numbers it names.
    let call = establish(&mut rig, InviteOpts::default()).await;
    assert_session_header(&call.ai_invite.msg);
}

pub async fn retransmitted_invite_is_absorbed(t: Transport) {
    let mut rig = Rig::new(t, "").await;
    let invite = rig.caller.invite(&InviteOpts::default());
    let bytes = invite.to_bytes();
    rig.caller.send(&invite).await;
    rig.caller
        .expect_response_to(Method::Invite, 100, WAIT)
        .await;
    let ai_invite = rig.agent.expect_request(Method::Invite, WAIT).await;

    // Same INVITE again (same branch) before the AI agent answered: 100 again.
    rig.caller.send_bytes(&bytes).await;
    rig.caller
        .expect_response_to(Method::Invite, 100, WAIT)
        .await;
    rig.agent.respond(&ai_invite, 180, &[], None).await;
    rig.caller
        .expect_response_to(Method::Invite, 180, WAIT)
        .await;
    // And after the 180: the 180 again.
    rig.caller.send_bytes(&bytes).await;
    rig.caller
        .expect_response_to(Method::Invite, 180, WAIT)
        .await;

    let seen = rig.agent.collect(Duration::from_millis(300)).await;
    let transactions: HashSet<(String, String)> = std::iter::once(&ai_invite)
        .chain(seen.iter())
        .filter(|r| r.msg.method() == Some(&Method::Invite))
        .map(|r| (r.msg.call_id().unwrap_or("").to_owned(), branch_of(&r.msg)))
        .collect();
    assert_eq!(
        transactions.len(),
        1,
        "the AI agent saw more than one INVITE:\n{}",
        rig.agent.history()
    );
    assert_eq!(count(&rig.server, |m| &m.calls_started_total), 1);
    assert_eq!(rig.server.active_calls(), 1);
}

pub async fn spoofed_opencx_headers_are_stripped_and_other_x_headers_pass(t: Transport) {
    let mut rig = Rig::new(t, "").await;
    let opts = InviteOpts::default()
        .header("X-OPENCX-SESSION-ID", "spoofed")
        .header("x-opencx-zendesk-ticket-id", "999")
        .header("X-Foo", "bar");
    let (_invite, ai_invite) = place_call(&mut rig, &opts).await;
    let m = &ai_invite.msg;
    let sid = assert_session_header(m);
    assert_ne!(sid, "spoofed");
    assert!(
        m.header("X-OPENCX-ZENDESK-TICKET-ID").is_none(),
        "spoofed ticket id reached the AI agent"
    );
    for h in m.headers() {
        assert_ne!(
            h.value(),
            "spoofed",
            "header {} carries the spoofed value",
            h.name()
        );
        assert_ne!(
            h.value(),
            "999",
            "header {} carries the spoofed ticket id",
            h.name()
        );
    }
    assert_eq!(
        m.header("X-Foo"),
        Some("bar"),
        "other X- headers are passed on"
    );
    assert_eq!(count(&rig.server, |m| &m.spoofed_headers_stripped_total), 2);
    reject(&mut rig.agent, &ai_invite, 603).await;
}

const BAD_CSEQ: &str = "INVITE sip:+18005550100@{handoff} SIP/2.0
Via: {via}
Max-Forwards: 70
From: \"Mallory\" <sip:+14155550000@carrier.example>;tag={tag}
To: <sip:+18005550100@carrier.example>
Call-ID: {call_id}
CSeq: abc INVITE
Contact: <sip:m@{local}>
Content-Type: application/sdp

";

const NO_CALL_ID: &str = "INVITE sip:+18005550100@{handoff} SIP/2.0
Via: {via}
Max-Forwards: 70
From: <sip:+14155550000@carrier.example>;tag={tag}
To: <sip:+18005550100@carrier.example>
CSeq: 1 INVITE

";

pub async fn malformed_requests_get_400_and_next_call_succeeds(t: Transport) {
    let mut rig = Rig::new(t, "").await;
    rig.caller.send_raw(&format!("{BAD_CSEQ}{SDP}")).await;
    let line = rig.caller.expect_status_line(400, WAIT).await;
    assert!(line.starts_with("SIP/2.0 400"), "{line}");
    rig.caller.send_raw(NO_CALL_ID).await;
    rig.caller.expect_status_line(400, WAIT).await;
    // A Request-URI that is not a SIP URI: 416 (RFC 3261 8.2.2.1).
    rig.caller
        .send_raw(&OPTIONS.replace(
            "OPTIONS sip:handoff@{handoff} ",
            "OPTIONS http://example.com/ ",
        ))
        .await;
    rig.caller.expect_status_line(416, WAIT).await;
    if t == Transport::Udp {
        // Noise with no SIP in it: no answer, and the server keeps serving.
        rig.caller
            .send_bytes(b"\x16\x03\x01\x00\xa5\x01\x00\x00garbage\xff\xfe\r\n\r\n")
            .await;
        rig.caller
            .expect_silence("answer to garbage", Duration::from_millis(300), |_| true)
            .await;
    }
    assert_eq!(rig.server.active_calls(), 0);
    let mut call = establish(&mut rig, InviteOpts::default()).await;
    bye_from_caller(&mut rig, &mut call).await;
    assert_call_gone(&rig.server, &call.session_id, CALLER_E164).await;
    assert_eq!(count(&rig.server, |m| &m.calls_started_total), 1);
}

pub async fn request_with_bad_sip_version_gets_505(t: Transport) {
    let mut rig = Rig::new(t, "").await;
    rig.caller
        .send_raw(&OPTIONS.replace("{handoff} SIP/2.0", "{handoff} SIP/3.0"))
        .await;
    rig.caller.expect_status_line(505, WAIT).await;
    // Still serving.
    rig.caller.send_raw(OPTIONS).await;
    rig.caller
        .expect_response_to(Method::Options, 200, WAIT)
        .await;
}

/// TCP only: a connection that sends garbage is closed; another connection carries a
/// whole call meanwhile.
pub async fn garbage_tcp_connection_is_closed_while_another_carries_a_call(t: Transport) {
    assert_eq!(t, Transport::Tcp);
    let mut rig = Rig::new(t, "").await;
    let mut noisy = rig.another_caller().await;
    noisy
        .send_bytes(b"\x16\x03\x01\x00\xa5\x01\x00\x00garbage\xff\xfe\r\n\r\n")
        .await;
    assert!(
        noisy.wait_closed(WAIT).await,
        "handoff kept a garbage TCP connection open"
    );
    let mut call = establish(&mut rig, InviteOpts::default()).await;
    bye_from_agent(&mut rig, &mut call).await;
    assert_call_gone(&rig.server, &call.session_id, CALLER_E164).await;
}
