//! Outbound calls end to end, in-process on loopback: an AI agent (a test UA on
//! 127.0.0.2, an `ai_agent` trunk) INVITEs a number; handoff places the carrier leg
//! (a test UA on 127.0.0.3, a carrier trunk with `[trunk.outbound]`), answers its
//! digest challenge, relays ringing, answer and hang-ups, and reports the lifecycle
//! events to a capture subscriber. The refusals (outside the prefixes, another
//! org's agent) must leave the carrier with nothing.

mod common;

use common::build::ack_for_non_2xx;
use common::outbound::*;
use common::{bounded, cancel_for, handoff_addr, Dialog, InviteOpts, TestUa, Transport, SDP, WAIT};
use handoff::sip::message::Method;
use serde_json::Value;
use std::net::SocketAddr;
use std::time::Duration;

/// A failure response from the carrier, after the digest retry: what the agent gets
/// and the one `phone_call.failed`.
async fn carrier_fails(status: u16, agent_status: u16, category: &str) {
    let mut r = rig(None, "").await;
    let (_invite, carrier_invite) = place(&mut r, &dial(CALLEE)).await;
    r.carrier.respond(&carrier_invite, 180, &[], None).await;
    r.agent.expect_response_to(Method::Invite, 180, WAIT).await;
    r.carrier.respond(&carrier_invite, status, &[], None).await;
    r.carrier.expect_request(Method::Ack, WAIT).await;
    let failure = r
        .agent
        .expect_response_to(Method::Invite, agent_status, WAIT)
        .await;
    let got = events(&r.capture, 3).await;
    assert_eq!(
        failure.msg.header("X-OPENCX-SESSION-ID"),
        got[0]["session_id"].as_str(),
        "the failure names the session"
    );
    assert_eq!(
        types(&got),
        [
            "phone_call.started",
            "conversation.started",
            "phone_call.failed"
        ]
    );
    let d = &got[2]["data"];
    assert_eq!(d["failure_category"], category, "{d}");
    assert_eq!(d["call_ended_by"], Value::Null, "never connected: null");
    assert_eq!(d["custom_data"]["is_outbound"], true, "{d}");
    assert_outbound_parties(d);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answered_outbound_call_reaches_the_callee_with_the_caller_id_and_credentials() {
    bounded(LIMIT, async {
        let mut r = rig(None, "").await;
        let opts = dial(CALLEE).header("X-OPENCX-CALLER-ID", OTHER_CALLER_ID);
        let (invite, carrier_invite) = place(&mut r, &opts).await;
        let m = &carrier_invite.msg;
        assert!(
            m.request_uri()
                .unwrap()
                .starts_with(&format!("sip:{CALLEE}@127.0.0.3:")),
            "{:?}",
            m.request_uri()
        );
        assert!(m.header("To").unwrap().contains(CALLEE));
        assert!(
            m.header("From")
                .unwrap()
                .contains(&format!("sip:{OTHER_CALLER_ID}@")),
            "the caller ID the agent asked for: {:?}",
            m.header("From")
        );
        let auth = m
            .header("Proxy-Authorization")
            .expect("credentials after the 407");
        assert!(
            auth.contains("username=\"handoff\"") && auth.contains("qop=auth"),
            "{auth}"
        );
        assert!(
            m.headers().iter().all(|h| !h
                .name()
                .as_str()
                .to_ascii_uppercase()
                .starts_with("X-OPENCX")),
            "no session header goes to the carrier"
        );
        // Media anchored: the carrier sees handoff's relay, not the agent's SDP address.
        let body = String::from_utf8_lossy(m.body()).into_owned();
        assert!(!body.contains("m=audio 40000"), "SDP is relayed: {body}");

        r.carrier.respond(&carrier_invite, 180, &[], None).await;
        let ringing = r.agent.expect_response_to(Method::Invite, 180, WAIT).await;
        let ok = r
            .carrier
            .respond(&carrier_invite, 200, &[], Some(CARRIER_SDP))
            .await;
        let agent_ok = r.agent.expect_response_to(Method::Invite, 200, WAIT).await;
        // The agent placed the call: the responses tell it the session id.
        let sid = agent_ok
            .msg
            .header("X-OPENCX-SESSION-ID")
            .expect("the session id on the 200")
            .to_owned();
        assert_eq!(
            ringing.msg.header("X-OPENCX-SESSION-ID"),
            Some(sid.as_str())
        );
        let agent_body = String::from_utf8_lossy(agent_ok.msg.body()).into_owned();
        assert!(
            !agent_body.contains("52000"),
            "callee's SDP relayed: {agent_body}"
        );
        let agent_dlg = Dialog::as_uac(&invite, &agent_ok.msg);
        r.agent.send(&r.agent.ack(&agent_dlg, None)).await;
        r.carrier.expect_request(Method::Ack, WAIT).await;

        // The callee hangs up: the agent gets the BYE; the call ends by the `user`.
        let mut callee_dlg = Dialog::as_uas(&carrier_invite.msg, &ok);
        r.carrier.send(&r.carrier.bye(&mut callee_dlg)).await;
        r.carrier.expect_response_to(Method::Bye, 200, WAIT).await;
        let bye = r.agent.expect_request(Method::Bye, WAIT).await;
        r.agent.respond(&bye, 200, &[], None).await;

        let got = events(&r.capture, 4).await;
        assert_eq!(
            types(&got),
            [
                "phone_call.started",
                "conversation.started",
                "phone_call.answered",
                "phone_call.ended"
            ]
        );
        assert!(
            got.iter().all(|e| e["session_id"] == sid.as_str()),
            "{got:?}"
        );
        let started = &got[0]["data"];
        assert_eq!(started["direction"], "outbound");
        assert_eq!(started["custom_data"]["is_outbound"], true, "{started}");
        assert_eq!(started["from"], OTHER_CALLER_ID);
        assert_eq!(started["to"], CALLEE);
        let ended = &got[3]["data"];
        assert_eq!(ended["call_ended_by"], "user", "{ended}");
        assert_eq!(ended["custom_data"]["is_outbound"], true);
        assert_eq!(got[0]["org_id"], "org-test");
        let _ = &r.server;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_hanging_up_ends_the_call_by_the_agent() {
    bounded(LIMIT, async {
        let mut r = rig(None, "").await;
        let (invite, carrier_invite) = place(&mut r, &dial(CALLEE)).await;
        r.carrier
            .respond(&carrier_invite, 200, &[], Some(CARRIER_SDP))
            .await;
        let agent_ok = r.agent.expect_response_to(Method::Invite, 200, WAIT).await;
        let mut dlg = Dialog::as_uac(&invite, &agent_ok.msg);
        r.agent.send(&r.agent.ack(&dlg, None)).await;
        r.carrier.expect_request(Method::Ack, WAIT).await;
        r.agent.send(&r.agent.bye(&mut dlg)).await;
        r.agent.expect_response_to(Method::Bye, 200, WAIT).await;
        let bye = r.carrier.expect_request(Method::Bye, WAIT).await;
        r.carrier.respond(&bye, 200, &[], None).await;
        let got = events(&r.capture, 4).await;
        assert_eq!(got[3]["data"]["call_ended_by"], "agent");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_callee_is_486_to_the_agent_and_failed_busy() {
    bounded(LIMIT, carrier_fails(486, 486, "busy")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejecting_callee_is_603_to_the_agent_and_failed_rejected() {
    bounded(LIMIT, carrier_fails(603, 603, "rejected")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_answer_within_the_ring_timeout_is_480_and_a_cancel_to_the_carrier() {
    bounded(LIMIT, async {
        let mut r = rig(None, "ring_timeout_secs = 1\n").await;
        let (_invite, carrier_invite) = place(&mut r, &dial(CALLEE)).await;
        r.carrier.respond(&carrier_invite, 180, &[], None).await;
        r.agent.expect_response_to(Method::Invite, 180, WAIT).await;
        let cancel = r
            .carrier
            .expect_request(Method::Cancel, Duration::from_secs(4))
            .await;
        r.carrier.respond(&cancel, 200, &[], None).await;
        r.carrier.respond(&carrier_invite, 487, &[], None).await;
        r.agent.expect_response_to(Method::Invite, 480, WAIT).await;
        let got = events(&r.capture, 3).await;
        let d = &got[2]["data"];
        assert_eq!(d["failure_category"], "no_answer", "{d}");
        assert_eq!(d["call_ended_by"], Value::Null);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_trunk_is_503_to_the_agent_and_a_trunk_error() {
    bounded(LIMIT, async {
        let closed = std::net::TcpListener::bind("127.0.0.3:0")
            .unwrap()
            .local_addr()
            .unwrap();
        // Nothing listens there once the listener is dropped: the connect is refused.
        let mut r = rig(Some(format!("sip:{closed};transport=tcp")), "").await;
        let invite = r.agent.invite(&dial(CALLEE));
        r.agent.send(&invite).await;
        r.agent.expect_response_to(Method::Invite, 100, WAIT).await;
        r.agent
            .expect_response_to(Method::Invite, 503, Duration::from_secs(10))
            .await;
        let got = events(&r.capture, 3).await;
        let d = &got[2]["data"];
        assert_eq!(d["failure_category"], "trunk_error", "{d}");
        assert_eq!(d["call_ended_by"], Value::Null);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_cancelling_cancels_the_carrier_leg() {
    bounded(LIMIT, async {
        let mut r = rig(None, "").await;
        let (invite, carrier_invite) = place(&mut r, &dial(CALLEE)).await;
        r.carrier.respond(&carrier_invite, 180, &[], None).await;
        r.agent.expect_response_to(Method::Invite, 180, WAIT).await;
        r.agent.send(&cancel_for(&invite)).await;
        r.agent.expect_response_to(Method::Cancel, 200, WAIT).await;
        let cancel = r.carrier.expect_request(Method::Cancel, WAIT).await;
        r.carrier.respond(&cancel, 200, &[], None).await;
        let terminated = r.carrier.respond(&carrier_invite, 487, &[], None).await;
        let _ = terminated;
        let resp = r.agent.expect_response_to(Method::Invite, 487, WAIT).await;
        r.agent.send(&ack_for_non_2xx(&invite, &resp.msg)).await;
        let got = events(&r.capture, 3).await;
        assert_eq!(got[2]["data"]["call_ended_by"], Value::Null);
    })
    .await;
}

/// Refused outbound INVITEs: 403 to the agent, nothing at the carrier, no session.
async fn refused(opts: InviteOpts, from_other_trunk: bool) -> Rig {
    let mut r = rig(None, "").await;
    if from_other_trunk {
        let mut other = TestUa::udp_bound(SocketAddr::from(([127, 0, 0, 4], 0))).await;
        other.set_peer(handoff_addr(&r.server, Transport::Udp));
        r.agent = other;
    }
    let invite = r.agent.invite(&opts);
    r.agent.send(&invite).await;
    let resp = r.agent.expect_response_to(Method::Invite, 403, WAIT).await;
    r.agent.send(&ack_for_non_2xx(&invite, &resp.msg)).await;
    r.carrier
        .expect_silence("any request", Duration::from_millis(500), |_| true)
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(r.capture.requests().is_empty(), "no session, no event");
    r
}

/// An offer handoff cannot relay is refused before any session exists: the
/// refusal names no session (there is none to ask about), nothing is dialled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offer_without_audio_is_488_naming_no_session() {
    bounded(LIMIT, async {
        let mut r = rig(None, "").await;
        let mut opts = dial(CALLEE);
        opts.sdp = Some(
            "v=0\r\no=agent 1 1 IN IP4 127.0.0.2\r\ns=-\r\nc=IN IP4 127.0.0.2\r\n\
             t=0 0\r\nm=video 40000 RTP/AVP 31\r\n"
                .into(),
        );
        let invite = r.agent.invite(&opts);
        r.agent.send(&invite).await;
        let resp = r.agent.expect_response_to(Method::Invite, 488, WAIT).await;
        assert_eq!(resp.msg.header("X-OPENCX-SESSION-ID"), None);
        r.agent.send(&ack_for_non_2xx(&invite, &resp.msg)).await;
        r.carrier
            .expect_silence("any request", Duration::from_millis(500), |_| true)
            .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_number_outside_the_allowed_prefixes_is_403_and_nothing_is_dialled() {
    bounded(LIMIT, async {
        let r = refused(dial("+19005550123"), false).await;
        let m = r.server.metrics().render_prometheus();
        assert!(
            m.contains("handoff_outbound_refused_destination_total 1"),
            "{m}"
        );
        refused(dial("4155550123"), false).await;
        refused(
            dial(CALLEE).header("X-OPENCX-CALLER-ID", "+19005550000"),
            false,
        )
        .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_claiming_another_org_is_403_and_nothing_is_dialled() {
    bounded(LIMIT, async {
        // An agent of org-other (a route names it) on org-test's trunk.
        let r = refused(
            InviteOpts::default()
                .called(CALLEE)
                .header("X-OPENCX-AGENT-ID", "agent-other"),
            false,
        )
        .await;
        let m = r.server.metrics().render_prometheus();
        assert!(
            m.contains("handoff_outbound_refused_identity_total 1"),
            "{m}"
        );
        // org-test's agent on org-other's trunk.
        refused(dial(CALLEE), true).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_org_limit_is_503_with_retry_after() {
    bounded(LIMIT, async {
        let mut r = rig(None, "max_calls = 1\n").await;
        let (_invite, _carrier_invite) = place(&mut r, &dial(CALLEE)).await;
        let second = r.agent.invite(&dial(CALLEE));
        r.agent.send(&second).await;
        let resp = r.agent.expect_response_to(Method::Invite, 503, WAIT).await;
        assert!(resp.msg.header("Retry-After").is_some());
        let _ = SDP;
    })
    .await;
}

/// An answered outbound call: the agent's dialog and the callee's.
async fn answered(r: &mut Rig) -> (Dialog, Dialog) {
    let (invite, carrier_invite) = place(r, &dial(CALLEE)).await;
    let ok = r
        .carrier
        .respond(&carrier_invite, 200, &[], Some(CARRIER_SDP))
        .await;
    let agent_ok = r.agent.expect_response_to(Method::Invite, 200, WAIT).await;
    let agent_dlg = Dialog::as_uac(&invite, &agent_ok.msg);
    r.agent.send(&r.agent.ack(&agent_dlg, None)).await;
    r.carrier.expect_request(Method::Ack, WAIT).await;
    (agent_dlg, Dialog::as_uas(&carrier_invite.msg, &ok))
}

/// The callee (the carrier side) may not move the AI agent anywhere with a REFER,
/// even to a target the allow-list takes: 403, nothing dialled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refer_from_the_callee_is_403_and_nothing_is_dialled() {
    bounded(LIMIT, async {
        let target = TestUa::udp_bound(SocketAddr::from(([127, 0, 0, 5], 0))).await;
        let keys = format!(
            "transfer.allow = [\"sip:support@{0}\"]\ntransfer.destination = [{{ name = \"zendesk\", uri = \"sip:support@{0}\" }}]",
            target.local_addr()
        );
        let mut r = rig_with(None, "", &keys).await;
        let (_agent_dlg, mut callee_dlg) = answered(&mut r).await;
        let mut refer = r.carrier.in_dialog(&mut callee_dlg, Method::Refer, None);
        refer
            .push_checked("Refer-To", &format!("<sip:support@{}>", target.local_addr()))
            .unwrap();
        r.carrier.send(&refer).await;
        r.carrier.expect_response_to(Method::Refer, 403, WAIT).await;
        let mut target = target;
        target
            .expect_silence("any request", Duration::from_millis(500), |_| true)
            .await;
    })
    .await;
}
