//! The call machinery on an outbound call, with media: the AI agent's REFER
//! hands the callee to "Zendesk" (a test UA on 127.0.0.5) as it would a caller,
//! a refused transfer leaves the callee with the agent, and early media, hold
//! and DTMF cross the call. The rig is `common::outbound`'s.

mod common;

use common::build::{AI_SDP, SDP_SENDONLY};
use common::capture::Captured;
use common::media::{assert_sdp_relayed, rtp, rtp_pt, Phone};
use common::outbound::*;
use common::scenarios::count;
use common::scenarios::transfer::{prefetch_url, SIGNING_SECRET};
use common::{bounded, Dialog, TestUa, SDP, WAIT};
use handoff::sip::message::Method;
use serde_json::Value;
use std::net::SocketAddr;
use std::time::Duration;

/// An outbound call answered with real media: the agent's and the callee's
/// phones, and the relay addresses each must send to.
struct MediaUp {
    agent_dlg: Dialog,
    callee_dlg: Dialog,
    agent: Phone,
    callee: Phone,
    relay_for_agent: SocketAddr,
    relay_for_callee: SocketAddr,
    session_id: String,
}

/// The relay address an SDP body points at.
fn sdp_target(body: &[u8]) -> SocketAddr {
    let text = String::from_utf8_lossy(body);
    let port: u16 = text
        .lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .and_then(|r| r.split(' ').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("an audio port in {text}"));
    SocketAddr::from(([127, 0, 0, 1], port))
}

async fn answered_with_media(r: &mut Rig) -> MediaUp {
    let (agent, callee) = (Phone::new().await, Phone::new().await);
    let mut opts = dial(CALLEE);
    opts.sdp = Some(agent.sdp(SDP));
    let (invite, carrier_invite) = place(r, &opts).await;
    let relay_for_callee = sdp_target(carrier_invite.msg.body());
    let ok = r
        .carrier
        .respond(
            &carrier_invite,
            200,
            &[],
            Some(&callee.sdp(&CARRIER_SDP.replace("127.0.0.3", "127.0.0.1"))),
        )
        .await;
    let agent_ok = r.agent.expect_response_to(Method::Invite, 200, WAIT).await;
    let relay_for_agent = sdp_target(agent_ok.msg.body());
    let agent_dlg = Dialog::as_uac(&invite, &agent_ok.msg);
    r.agent.send(&r.agent.ack(&agent_dlg, None)).await;
    r.carrier.expect_request(Method::Ack, WAIT).await;
    let started = events(&r.capture, 3).await;
    let session_id = started[0]["data"]["session_id"]
        .as_str()
        .or(started[0]["session_id"].as_str())
        .unwrap_or_default()
        .to_owned();
    MediaUp {
        agent_dlg,
        callee_dlg: Dialog::as_uas(&carrier_invite.msg, &ok),
        agent,
        callee,
        relay_for_agent,
        relay_for_callee,
        session_id,
    }
}

/// A rig whose transfers go to "Zendesk", a test UA on 127.0.0.5, for the
/// prefetch webhook signed with the transfer rigs' key.
async fn transfer_rig() -> (Rig, TestUa, String) {
    let zendesk = TestUa::udp_bound(SocketAddr::from(([127, 0, 0, 5], 0))).await;
    let target = format!("sip:support@{}", zendesk.local_addr());
    let keys = format!(
        "transfer.allow = [\"{target}\"]\n\
         transfer.destination = [{{ name = \"zendesk\", uri = \"{target}\" }}]\n\
         http.signing_keys = [{{ kid = \"k1\", secret = \"{SIGNING_SECRET}\", issuer = \"t\" }}]"
    );
    (rig_with(None, "", &keys).await, zendesk, target)
}

/// The agent's REFER to `target`, answered 202, and the first NOTIFY (100).
async fn agent_refers(r: &mut Rig, m: &mut MediaUp, target: &str) -> u32 {
    let mut refer = r.agent.in_dialog(&mut m.agent_dlg, Method::Refer, None);
    refer
        .push_checked("Refer-To", &format!("<{target}>"))
        .expect("header");
    r.agent.send(&refer).await;
    r.agent.expect_response_to(Method::Refer, 202, WAIT).await;
    let n = r.agent.expect_request(Method::Notify, WAIT).await;
    assert_eq!(
        String::from_utf8_lossy(n.msg.body()),
        "SIP/2.0 100 Trying\r\n"
    );
    r.agent.respond(&n, 200, &[], None).await;
    refer.cseq().expect("CSeq").seq
}

/// `packet` from `from` to `relay` arrives unchanged at `to` (RTP from other
/// streams that arrives first is skipped).
async fn crosses(from: &Phone, relay: SocketAddr, to: &Phone, packet: Vec<u8>, what: &str) {
    from.rtp.send_to(&packet, relay).await.expect("send");
    loop {
        let (p, _) = Phone::recv(&to.rtp, WAIT, what).await;
        if p == packet {
            return;
        }
    }
}

/// Issue 15: the AI agent's REFER on an outbound call moves the callee to
/// Zendesk exactly as a caller: the callee's number in From, the session's
/// headers and the ticket the prefetch webhook stamped; the callee's media
/// goes to Zendesk and nothing more to the agent, whose leg is released
/// after the final NOTIFY; the callee hanging up ends it by the `user`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agents_refer_moves_the_callee_to_zendesk_with_the_session_headers() {
    bounded(LIMIT, async {
        let (mut r, mut zendesk, target) = transfer_rig().await;
        let mut m = answered_with_media(&mut r).await;
        crosses(
            &m.callee,
            m.relay_for_callee,
            &m.agent,
            rtp(1, 0x1111),
            "callee to agent",
        )
        .await;
        crosses(
            &m.agent,
            m.relay_for_agent,
            &m.callee,
            rtp(1, 0x2222),
            "agent to callee",
        )
        .await;

        // Zendesk's prefetch webhook finds the live session by the callee's number.
        let body =
            format!(r#"{{"ticket_id": 4711, "caller_phone": "{CALLEE}", "requester_phone": ""}}"#);
        let resp: Value = reqwest::Client::new()
            .post(prefetch_url(&r.server))
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .await
            .expect("webhook")
            .json()
            .await
            .expect("json");
        assert_eq!(
            resp["success"], true,
            "the outbound session is stamped: {resp}"
        );

        let refer_seq = agent_refers(&mut r, &mut m, &target).await;
        let inv = zendesk.expect_request(Method::Invite, WAIT).await;
        let from = inv.msg.from_header().expect("From");
        assert_eq!(
            from.uri.user.as_deref(),
            Some(CALLEE),
            "the callee for Zendesk"
        );
        let h = |n: &str| inv.msg.header(n).map(str::to_owned);
        assert_eq!(
            h("X-OPENCX-SESSION-ID").as_deref(),
            Some(m.session_id.as_str())
        );
        assert_eq!(h("X-OPENCX-AGENT-ID").as_deref(), Some("agent-test"));
        assert_eq!(h("X-OPENCX-TRANSFER").as_deref(), Some("true"));
        assert_eq!(h("X-OPENCX-ZENDESK-TICKET-ID").as_deref(), Some("4711"));
        let to_relay = sdp_target(inv.msg.body());
        assert!(
            ![m.relay_for_agent, m.relay_for_callee].contains(&to_relay),
            "Zendesk gets ports of its own"
        );
        // The agent keeps the callee until Zendesk answers.
        crosses(
            &m.callee,
            m.relay_for_callee,
            &m.agent,
            rtp(2, 0x1111),
            "callee to agent while ringing",
        )
        .await;

        let zphone = Phone::new().await;
        zendesk.respond(&inv, 180, &[], None).await;
        let z_ok = zendesk
            .respond(&inv, 200, &[], Some(&zphone.sdp(AI_SDP)))
            .await;
        zendesk.expect_request(Method::Ack, WAIT).await;
        let n = r.agent.expect_request(Method::Notify, WAIT).await;
        assert_eq!(String::from_utf8_lossy(n.msg.body()), "SIP/2.0 200 OK\r\n");
        assert_eq!(
            n.msg.header("Event"),
            Some(format!("refer;id={refer_seq}").as_str())
        );
        r.agent.respond(&n, 200, &[], None).await;
        let bye = r.agent.expect_request(Method::Bye, WAIT).await;
        r.agent.respond(&bye, 200, &[], None).await;

        // The callee, on the ports it always had, now talks with Zendesk.
        for seq in 3..8 {
            crosses(
                &m.callee,
                m.relay_for_callee,
                &zphone,
                rtp(seq, 0x1111),
                "callee to Zendesk",
            )
            .await;
        }
        crosses(
            &zphone,
            to_relay,
            &m.callee,
            rtp(1, 0x3333),
            "Zendesk to callee",
        )
        .await;
        Phone::assert_silent(
            &m.agent.rtp,
            Duration::from_millis(300),
            "the released agent",
        )
        .await;

        // The callee hangs up: Zendesk gets the BYE; the call ends by the `user`.
        r.carrier.send(&r.carrier.bye(&mut m.callee_dlg)).await;
        r.carrier.expect_response_to(Method::Bye, 200, WAIT).await;
        let zbye = zendesk.expect_request(Method::Bye, WAIT).await;
        assert_eq!(zbye.msg.call_id(), z_ok.call_id());
        zendesk.respond(&zbye, 200, &[], None).await;
        // Every packet relayed counts, the released agent's leg's too: 7 from
        // the callee, 1 from the agent, 1 from Zendesk.
        assert!(
            common::eventually(Duration::from_secs(3), || {
                count(&r.server, |x| &x.rtp_packets_relayed_total) == 9
            })
            .await,
            "rtp_packets_relayed_total is {}",
            count(&r.server, |x| &x.rtp_packets_relayed_total)
        );

        let got = events(&r.capture, 5).await;
        assert_eq!(
            types(&got),
            [
                "phone_call.started",
                "conversation.started",
                "phone_call.answered",
                "phone_call.transferred",
                "phone_call.ended",
            ]
        );
        let transferred = &got[3]["data"];
        assert_eq!(transferred["outcome"], "completed", "{transferred}");
        assert_outbound_parties(transferred);
        let ended = &got[4];
        assert_eq!(ended["data"]["call_ended_by"], "user", "{ended}");
        assert_eq!(ended["data"]["custom_data"]["is_outbound"], true);
    })
    .await;
}

/// A transfer Zendesk refuses leaves the callee with the agent (media both
/// ways, a final NOTIFY 486); the agent hanging up then ends the call by the
/// `agent`, and a second REFER from the callee is still refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_transfer_leaves_the_callee_with_the_agent() {
    bounded(LIMIT, async {
        let (mut r, mut zendesk, target) = transfer_rig().await;
        let mut m = answered_with_media(&mut r).await;
        agent_refers(&mut r, &mut m, &target).await;
        let inv = zendesk.expect_request(Method::Invite, WAIT).await;
        zendesk.respond(&inv, 486, &[], None).await;
        zendesk.expect_request(Method::Ack, WAIT).await;
        let n = r.agent.expect_request(Method::Notify, WAIT).await;
        assert_eq!(
            String::from_utf8_lossy(n.msg.body()),
            "SIP/2.0 486 Busy Here\r\n"
        );
        r.agent.respond(&n, 200, &[], None).await;

        crosses(
            &m.callee,
            m.relay_for_callee,
            &m.agent,
            rtp(1, 0x1111),
            "callee to agent after the failure",
        )
        .await;
        crosses(
            &m.agent,
            m.relay_for_agent,
            &m.callee,
            rtp(1, 0x2222),
            "agent to callee after the failure",
        )
        .await;

        // The swapped legs still carry re-INVITEs both ways: the agent holds
        // the callee, the callee re-offers to the agent.
        let hold = m.agent.sdp(SDP_SENDONLY);
        let reinvite = r.agent.in_dialog(
            &mut m.agent_dlg,
            Method::Invite,
            Some(("application/sdp", &hold)),
        );
        r.agent.send(&reinvite).await;
        let at_callee = r.carrier.expect_request(Method::Invite, WAIT).await;
        assert_eq!(at_callee.msg.call_id(), Some(m.callee_dlg.call_id.as_str()));
        assert_sdp_relayed(at_callee.msg.body(), &hold, "hold offer at the callee");
        let callee_sdp = m.callee.sdp(&CARRIER_SDP.replace("127.0.0.3", "127.0.0.1"));
        let recvonly = callee_sdp.replace("a=sendrecv", "a=recvonly");
        r.carrier
            .respond(&at_callee, 200, &[], Some(&recvonly))
            .await;
        let held = r.agent.expect_response_to(Method::Invite, 200, WAIT).await;
        assert_sdp_relayed(held.msg.body(), &recvonly, "hold answer at the agent");
        r.agent.send(&r.agent.ack(&m.agent_dlg, None)).await;
        r.carrier.expect_request(Method::Ack, WAIT).await;
        let reoffer = r.carrier.in_dialog(
            &mut m.callee_dlg,
            Method::Invite,
            Some(("application/sdp", &callee_sdp)),
        );
        r.carrier.send(&reoffer).await;
        let at_agent = r.agent.expect_request(Method::Invite, WAIT).await;
        assert_eq!(at_agent.msg.call_id(), Some(m.agent_dlg.call_id.as_str()));
        assert_sdp_relayed(
            at_agent.msg.body(),
            &callee_sdp,
            "callee's offer at the agent",
        );
        let agent_sdp = m.agent.sdp(SDP);
        r.agent.respond(&at_agent, 200, &[], Some(&agent_sdp)).await;
        let answered = r
            .carrier
            .expect_response_to(Method::Invite, 200, WAIT)
            .await;
        assert_sdp_relayed(
            answered.msg.body(),
            &agent_sdp,
            "agent's answer at the callee",
        );
        assert_eq!(answered.msg.header("X-OPENCX-SESSION-ID"), None);
        r.carrier.send(&r.carrier.ack(&m.callee_dlg, None)).await;
        r.agent.expect_request(Method::Ack, WAIT).await;

        // The callee still may not transfer anyone.
        let mut refer = r.carrier.in_dialog(&mut m.callee_dlg, Method::Refer, None);
        refer
            .push_checked("Refer-To", &format!("<{target}>"))
            .expect("header");
        r.carrier.send(&refer).await;
        r.carrier.expect_response_to(Method::Refer, 403, WAIT).await;

        r.agent.send(&r.agent.bye(&mut m.agent_dlg)).await;
        r.agent.expect_response_to(Method::Bye, 200, WAIT).await;
        let bye = r.carrier.expect_request(Method::Bye, WAIT).await;
        r.carrier.respond(&bye, 200, &[], None).await;
        let ended = r
            .capture
            .wait_for("phone_call.ended", SOON, |s| {
                s.iter()
                    .any(|c| c.delivered() && c.json()["type"] == "phone_call.ended")
            })
            .await;
        let ended = ended
            .iter()
            .map(Captured::json)
            .find(|e| e["type"] == "phone_call.ended")
            .expect("ended");
        assert_eq!(ended["data"]["call_ended_by"], "agent", "{ended}");
        zendesk
            .expect_silence("a second INVITE", Duration::from_millis(300), |_| true)
            .await;
    })
    .await;
}

/// The call machinery on an outbound call: the callee's early media (183)
/// reaches the agent before the answer, the agent's hold (re-INVITE) and
/// DTMF (INFO and RFC 4733 packets) reach the callee.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_media_hold_and_dtmf_cross_an_outbound_call() {
    bounded(LIMIT, async {
        let mut r = rig(None, "").await;
        let (agent, callee) = (Phone::new().await, Phone::new().await);
        let mut opts = dial(CALLEE);
        opts.sdp = Some(agent.sdp(SDP));
        let (invite, carrier_invite) = place(&mut r, &opts).await;
        let relay_for_callee = sdp_target(carrier_invite.msg.body());
        let callee_sdp = callee.sdp(&CARRIER_SDP.replace("127.0.0.3", "127.0.0.1"));
        r.carrier
            .respond(&carrier_invite, 183, &[], Some(&callee_sdp))
            .await;
        let early = r.agent.expect_response_to(Method::Invite, 183, WAIT).await;
        let relay_for_agent = assert_sdp_relayed(early.msg.body(), &callee_sdp, "early media SDP");
        crosses(
            &callee,
            relay_for_callee,
            &agent,
            rtp(1, 0x1111),
            "early media",
        )
        .await;

        let ok = r
            .carrier
            .respond(&carrier_invite, 200, &[], Some(&callee_sdp))
            .await;
        let agent_ok = r.agent.expect_response_to(Method::Invite, 200, WAIT).await;
        let mut agent_dlg = Dialog::as_uac(&invite, &agent_ok.msg);
        r.agent.send(&r.agent.ack(&agent_dlg, None)).await;
        r.carrier.expect_request(Method::Ack, WAIT).await;
        let mut callee_dlg = Dialog::as_uas(&carrier_invite.msg, &ok);

        // The agent holds the callee.
        let hold = agent.sdp(SDP_SENDONLY);
        let reinvite = r.agent.in_dialog(
            &mut agent_dlg,
            Method::Invite,
            Some(("application/sdp", &hold)),
        );
        r.agent.send(&reinvite).await;
        let at_callee = r.carrier.expect_request(Method::Invite, WAIT).await;
        assert_eq!(at_callee.msg.call_id(), carrier_invite.msg.call_id());
        assert_sdp_relayed(at_callee.msg.body(), &hold, "hold offer at the callee");
        let recvonly = callee_sdp.replace("a=sendrecv", "a=recvonly");
        r.carrier
            .respond(&at_callee, 200, &[], Some(&recvonly))
            .await;
        let held = r.agent.expect_response_to(Method::Invite, 200, WAIT).await;
        assert_sdp_relayed(held.msg.body(), &recvonly, "hold answer at the agent");
        r.agent.send(&r.agent.ack(&agent_dlg, None)).await;
        r.carrier.expect_request(Method::Ack, WAIT).await;

        // DTMF both ways it travels: INFO in the dialog, telephone-events in RTP.
        let info = r.agent.in_dialog(
            &mut agent_dlg,
            Method::Info,
            Some(("application/dtmf-relay", "Signal=5\r\nDuration=160\r\n")),
        );
        r.agent.send(&info).await;
        let at_callee = r.carrier.expect_request(Method::Info, WAIT).await;
        assert_eq!(
            at_callee.msg.body().as_ref(),
            b"Signal=5\r\nDuration=160\r\n"
        );
        r.carrier.respond(&at_callee, 200, &[], None).await;
        r.agent.expect_response_to(Method::Info, 200, WAIT).await;
        crosses(
            &agent,
            relay_for_agent,
            &callee,
            rtp_pt(101, 7, 0x2222),
            "telephone-event",
        )
        .await;

        r.carrier.send(&r.carrier.bye(&mut callee_dlg)).await;
        r.carrier.expect_response_to(Method::Bye, 200, WAIT).await;
        let bye = r.agent.expect_request(Method::Bye, WAIT).await;
        r.agent.respond(&bye, 200, &[], None).await;
    })
    .await;
}

/// The callee hanging up while Zendesk rings cancels the transfer: Zendesk
/// gets a CANCEL, the agent a BYE, and the call ends by the `user`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_callee_hanging_up_during_the_transfer_cancels_it() {
    bounded(LIMIT, async {
        let (mut r, mut zendesk, target) = transfer_rig().await;
        let mut m = answered_with_media(&mut r).await;
        agent_refers(&mut r, &mut m, &target).await;
        let inv = zendesk.expect_request(Method::Invite, WAIT).await;
        zendesk.respond(&inv, 180, &[], None).await;

        r.carrier.send(&r.carrier.bye(&mut m.callee_dlg)).await;
        r.carrier.expect_response_to(Method::Bye, 200, WAIT).await;
        let cancel = zendesk.expect_request(Method::Cancel, WAIT).await;
        zendesk.respond(&cancel, 200, &[], None).await;
        zendesk.respond(&inv, 487, &[], None).await;
        zendesk.expect_request(Method::Ack, WAIT).await;
        // The agent hears of it: the last NOTIFY, if any, then the BYE.
        loop {
            let req = r.agent.recv(WAIT).await.expect("the agent's leg is ended");
            let Some(method) = req.msg.method().cloned() else {
                continue;
            };
            r.agent.respond(&req, 200, &[], None).await;
            if method == Method::Bye {
                break;
            }
        }

        let got = events(&r.capture, 5).await;
        assert_eq!(
            types(&got),
            [
                "phone_call.started",
                "conversation.started",
                "phone_call.answered",
                "phone_call.transferred",
                "phone_call.ended",
            ]
        );
        assert_eq!(got[3]["data"]["outcome"], "cancelled", "{}", got[3]);
        assert_eq!(got[4]["data"]["call_ended_by"], "user", "{}", got[4]);
    })
    .await;
}
