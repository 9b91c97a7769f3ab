//! The AI agent hands the caller to "Zendesk" (a third test UA) with REFER:
//! the transfer INVITE and its headers, the NOTIFYs, the media switch, the AI
//! leg's release, and every way it can fail.

use super::media::{establish_media, MediaCall};
use super::{assert_in_dialog, bye_from_caller, count, table};
use crate::common::build::AI_SDP;
use crate::common::media::{rtp, Phone};
use crate::common::{Received, Rig, TestUa, Transport, CALLER_E164, WAIT};
use handoff::config::{Secret, SigningKey};
use handoff::http::auth::mint_prefetch_token;
use handoff::sip::message::{Message, Method};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub const SIGNING_SECRET: &str = "transfer-test-signing-secret-0123";

/// A rig whose config routes transfers: the named destination "zendesk" is
/// the third UA, which is also the PSTN gateway for `tel:` targets.
pub struct TransferRig {
    pub rig: Rig,
    pub zendesk: TestUa,
    pub target: String,
}

impl TransferRig {
    /// A rig around a handoff started elsewhere (its own session store, a node of
    /// a cluster): the carrier UA is made here, talking to it over `t`.
    pub async fn around(
        server: handoff::server::Server,
        agent: TestUa,
        zendesk: TestUa,
        target: String,
        t: Transport,
    ) -> TransferRig {
        let caller = TestUa::carrier(t, crate::common::handoff_addr(&server, t)).await;
        TransferRig {
            rig: Rig {
                server,
                caller,
                agent,
                transport: t,
            },
            zendesk,
            target,
        }
    }
}

pub async fn transfer_rig(t: Transport, extra: &str) -> TransferRig {
    transfer_rig_with(t, extra, TestUa::agent(t).await).await
}

/// The same with a given "Zendesk" UA (whose port `extra` may already name).
pub async fn transfer_rig_with(t: Transport, extra: &str, zendesk: TestUa) -> TransferRig {
    transfer_rig_dest(t, "", extra, zendesk).await
}

/// The same with more keys on the "zendesk" destination (`dest`: `, key = value`).
pub async fn transfer_rig_dest(
    t: Transport,
    dest: &str,
    extra: &str,
    zendesk: TestUa,
) -> TransferRig {
    let port = zendesk.local_addr().port();
    let target = format!("sip:support@127.0.0.1:{port}{}", t.uri_param());
    let extra = format!(
        "transfer.allow = [\"tel:+*\"]\n\
         transfer.pstn_gateway = \"sip:127.0.0.1:{port}{}\"\n\
         transfer.destination = [{{ name = \"zendesk\", uri = \"{target}\"{dest} }}]\n\
         http.signing_keys = [{{ kid = \"k1\", secret = \"{SIGNING_SECRET}\", issuer = \"t\" }}]\n\
         {extra}",
        t.uri_param()
    );
    let rig = Rig::new(t, &extra).await;
    TransferRig {
        rig,
        zendesk,
        target,
    }
}

/// The AI agent sends REFER to `refer_to` (a header value) and gets `status`.
pub async fn refer(
    tr: &mut TransferRig,
    m: &mut MediaCall,
    refer_to: &str,
    status: u16,
) -> Message {
    let mut req = tr
        .rig
        .agent
        .in_dialog(&mut m.call.agent_dlg, Method::Refer, None);
    if !refer_to.is_empty() {
        req.push_checked("Refer-To", refer_to).expect("header");
    }
    tr.rig.agent.send(&req).await;
    tr.rig
        .agent
        .expect_response_to(Method::Refer, status, WAIT)
        .await;
    req
}

/// The next NOTIFY to the AI agent: checked against the REFER, answered 200.
/// Returns its sipfrag body.
pub async fn expect_notify(
    tr: &mut TransferRig,
    m: &MediaCall,
    refer: &Message,
) -> (String, String) {
    let n = tr.rig.agent.expect_request(Method::Notify, WAIT).await;
    assert_in_dialog(&n.msg, &m.call.agent_dlg, "NOTIFY");
    // One Contact (RFC 6665 4.1.2.2); the dialog's builder and the NOTIFY
    // code once both added one.
    assert_eq!(
        n.msg.header_values("Contact").count(),
        1,
        "Contact header fields on a NOTIFY"
    );
    let seq = refer.cseq().expect("CSeq").seq;
    assert_eq!(
        n.msg.header("Event"),
        Some(format!("refer;id={seq}").as_str())
    );
    assert_eq!(
        n.msg.header("Content-Type"),
        Some("message/sipfrag;version=2.0")
    );
    let state = n
        .msg
        .header("Subscription-State")
        .unwrap_or_default()
        .to_owned();
    let body = String::from_utf8_lossy(n.msg.body()).into_owned();
    assert!(
        body.starts_with("SIP/2.0 ") && body.ends_with("\r\n"),
        "sipfrag {body:?}"
    );
    tr.rig.agent.respond(&n, 200, &[], None).await;
    (body, state)
}

/// The transfer INVITE at Zendesk.
pub async fn expect_target_invite(tr: &mut TransferRig) -> Received {
    tr.zendesk.expect_request(Method::Invite, WAIT).await
}

/// Zendesk answers with a phone of its own; returns the phone and the relay
/// address it should send to (from handoff's offer).
pub async fn answer_target(tr: &mut TransferRig, invite: &Received) -> (Phone, Message) {
    let phone = Phone::new().await;
    let sdp = phone.sdp(AI_SDP);
    tr.zendesk.respond(invite, 180, &[], None).await;
    let ok = tr.zendesk.respond(invite, 200, &[], Some(&sdp)).await;
    tr.zendesk.expect_request(Method::Ack, WAIT).await;
    (phone, ok)
}

fn relay_addr_in(invite: &Message) -> std::net::SocketAddr {
    let body = String::from_utf8_lossy(invite.body()).into_owned();
    let port: u16 = body
        .lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .and_then(|r| r.split(' ').next())
        .and_then(|p| p.parse().ok())
        .expect("an audio port in the offer");
    std::net::SocketAddr::from(([127, 0, 0, 1], port))
}

/// The complete happy path: REFER, 202, NOTIFY 100, INVITE with the context
/// headers (no ticket), media switched (nothing more to the AI agent), final
/// NOTIFY, and only then BYE to the AI agent; the caller then talks to Zendesk
/// until it hangs up.
pub async fn transfer_to_sip_uri_without_ticket(t: Transport) {
    let mut tr = transfer_rig(t, "").await;
    let mut m = establish_media(&mut tr.rig).await;
    let target = format!("<{}>", tr.target);
    let refer_msg = refer(&mut tr, &mut m, &target, 202).await;
    let (frag, state) = expect_notify(&mut tr, &m, &refer_msg).await;
    assert_eq!(frag, "SIP/2.0 100 Trying\r\n");
    assert!(state.starts_with("active"), "{state}");

    let inv = expect_target_invite(&mut tr).await;
    let h = |n: &str| inv.msg.header(n).map(str::to_owned);
    assert_eq!(
        h("X-OPENCX-SESSION-ID").as_deref(),
        Some(m.call.session_id.as_str())
    );
    assert_eq!(h("X-OPENCX-AGENT-ID").as_deref(), Some("agent-test"));
    assert_eq!(h("X-OPENCX-TRANSFER").as_deref(), Some("true"));
    assert_eq!(h("X-OPENCX-ZENDESK-TICKET-ID"), None, "no ticket stamped");
    assert_eq!(h("X-Zendesk-Ticket-Id"), None, "no ticket stamped");
    assert_eq!(h("X-OPENCX-CONTACT-ID"), None, "no contact resolved");
    let from = inv.msg.from_header().expect("From");
    assert_eq!(
        from.uri.user.as_deref(),
        Some(CALLER_E164),
        "caller id for Zendesk"
    );
    let body = String::from_utf8_lossy(inv.msg.body()).into_owned();
    assert!(
        body.contains("RTP/AVP 0 101"),
        "G.711 and events offered: {body}"
    );
    let to_relay = relay_addr_in(&inv.msg);
    assert_ne!(to_relay, m.relay_for_agent);

    // The AI agent still has the caller until Zendesk answers.
    m.caller
        .rtp
        .send_to(&rtp(1, 0x1111), m.relay_for_caller)
        .await
        .expect("send");
    Phone::recv(
        &m.agent.rtp,
        WAIT,
        "caller to the AI agent before the answer",
    )
    .await;

    let (zphone, _ok) = answer_target(&mut tr, &inv).await;
    let n = tr.rig.agent.expect_request(Method::Notify, WAIT).await;
    assert_eq!(String::from_utf8_lossy(n.msg.body()), "SIP/2.0 200 OK\r\n");
    assert_eq!(
        n.msg.header("Subscription-State"),
        Some("terminated;reason=noresource")
    );
    // BYE to the AI agent only once that NOTIFY is answered.
    tr.rig
        .agent
        .expect_silence(
            "BYE before the final NOTIFY is answered",
            Duration::from_millis(300),
            |x| x.method() == Some(&Method::Bye),
        )
        .await;
    tr.rig.agent.respond(&n, 200, &[], None).await;
    let bye = tr.rig.agent.expect_request(Method::Bye, WAIT).await;
    assert_in_dialog(&bye.msg, &m.call.agent_dlg, "BYE to the AI agent");
    tr.rig.agent.respond(&bye, 200, &[], None).await;

    // Media: the caller's stream reaches Zendesk, and nothing reaches the AI agent.
    for seq in 2..12 {
        m.caller
            .rtp
            .send_to(&rtp(seq, 0x1111), m.relay_for_caller)
            .await
            .expect("send");
        let (p, _) = Phone::recv(&zphone.rtp, WAIT, "caller RTP at Zendesk").await;
        assert_eq!(p, rtp(seq, 0x1111));
    }
    zphone
        .rtp
        .send_to(&rtp(1, 0x3333), to_relay)
        .await
        .expect("send");
    loop {
        let (p, _) = Phone::recv(&m.caller.rtp, WAIT, "Zendesk RTP at the caller").await;
        if p == rtp(1, 0x3333) {
            break;
        }
    }
    Phone::assert_silent(
        &m.agent.rtp,
        Duration::from_millis(200),
        "RTP to the old AI leg",
    )
    .await;

    // The caller hangs up: Zendesk gets the BYE.
    let bye = tr.rig.caller.bye(&mut m.call.caller_dlg);
    tr.rig.caller.send(&bye).await;
    tr.rig
        .caller
        .expect_response_to(Method::Bye, 200, WAIT)
        .await;
    let zbye = tr.zendesk.expect_request(Method::Bye, WAIT).await;
    tr.zendesk.respond(&zbye, 200, &[], None).await;
    // The call keeps its transfer attempts (they travel in phone_call.transferred,
    // pinned by tests/events.rs); here the counters say one attempt, answered.
    assert_eq!(count(&tr.rig.server, |x| &x.transfers_total), 1);
    assert_eq!(count(&tr.rig.server, |x| &x.transfers_failed_total), 0);
    assert_eq!(count(&tr.rig.server, |x| &x.transfers_succeeded_total), 1);
    assert_eq!(tr.rig.server.metrics().transfer_setup_seconds.count(), 1);
}

/// A ticket stamped through the real voice-prefetch webhook just before the
/// REFER: both ticket headers go to a SIP target.
pub async fn ticket_stamped_by_webhook_goes_on_the_transfer_invite(t: Transport) {
    let mut tr = transfer_rig(t, "").await;
    let mut m = establish_media(&mut tr.rig).await;
    stamp_via_webhook(&tr.rig, 90210).await;
    let target = format!("<{}>", tr.target);
    let refer_msg = refer(&mut tr, &mut m, &target, 202).await;
    expect_notify(&mut tr, &m, &refer_msg).await;
    let inv = expect_target_invite(&mut tr).await;
    assert_eq!(inv.msg.header("X-OPENCX-ZENDESK-TICKET-ID"), Some("90210"));
    assert_eq!(inv.msg.header("X-Zendesk-Ticket-Id"), Some("90210"));
    tr.zendesk.respond(&inv, 486, &[], None).await;
    let (frag, _) = expect_notify(&mut tr, &m, &refer_msg).await;
    assert_eq!(frag, "SIP/2.0 486 Busy Here\r\n");
    bye_from_caller(&mut tr.rig, &mut m.call).await;
}

pub async fn stamp_via_webhook(rig: &Rig, ticket: u64) {
    let body = format!(
        r#"{{"ticket_id": {ticket}, "caller_phone": "{CALLER_E164}", "requester_phone": ""}}"#
    );
    let resp = post_webhook(rig, body).await;
    let v: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(v["success"], true, "stamped: {v}");
}

/// POST `body` to the voice-prefetch webhook with a valid token for the org.
pub async fn post_webhook(rig: &Rig, body: String) -> reqwest::Response {
    reqwest::Client::new()
        .post(webhook_url(rig))
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .await
        .expect("webhook")
}

/// The voice-prefetch webhook URL of the rig's handoff, with a valid token for the org.
pub fn webhook_url(rig: &Rig) -> String {
    prefetch_url(&rig.server)
}

/// The voice-prefetch webhook URL of `server`, with a valid token for `org-test`
/// (the key the transfer rigs configure).
pub fn prefetch_url(server: &handoff::server::Server) -> String {
    let key = SigningKey {
        kid: "k1".into(),
        secret: Secret::new(SIGNING_SECRET),
        issuer: "t".into(),
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let token = mint_prefetch_token(&key, "org-test", now, None).expect("mint");
    format!(
        "http://{}/backend/zendesk-v2/voice-prefetch/{token}",
        server.http_addr()
    )
}

/// A `tel:` target goes to the PSTN gateway with `user=phone`, and never with
/// the ticket headers even when a ticket is stamped.
pub async fn tel_target_never_carries_ticket_headers(t: Transport) {
    let mut tr = transfer_rig(t, "").await;
    let mut m = establish_media(&mut tr.rig).await;
    stamp_via_webhook(&tr.rig, 777).await;
    let refer_msg = refer(&mut tr, &mut m, "<tel:+14155550199>", 202).await;
    expect_notify(&mut tr, &m, &refer_msg).await;
    let inv = expect_target_invite(&mut tr).await;
    let ruri = inv.msg.request_uri().unwrap_or_default().to_owned();
    assert!(ruri.starts_with("sip:+14155550199@127.0.0.1"), "{ruri}");
    assert!(ruri.contains("user=phone"), "{ruri}");
    assert_eq!(inv.msg.header("X-OPENCX-ZENDESK-TICKET-ID"), None);
    assert_eq!(inv.msg.header("X-Zendesk-Ticket-Id"), None);
    assert_eq!(inv.msg.header("X-OPENCX-TRANSFER"), Some("true"));
    tr.zendesk.respond(&inv, 603, &[], None).await;
    let (frag, state) = expect_notify(&mut tr, &m, &refer_msg).await;
    assert_eq!(frag, "SIP/2.0 603 Decline\r\n");
    assert!(state.starts_with("terminated"));
    bye_from_caller(&mut tr.rig, &mut m.call).await;
}

/// An anonymous caller reaches Zendesk as the configured fallback From.
pub async fn anonymous_caller_gets_the_fallback_from(t: Transport) {
    let extra = "transfer.fallback_from = \"\\\"Unknown\\\" <sip:unknown@handoff.invalid>\"";
    let mut tr = transfer_rig(t, extra).await;
    let (caller, agent) = (Phone::new().await, Phone::new().await);
    let opts = crate::common::InviteOpts {
        from: "\"Anonymous\" <sip:anonymous@anonymous.invalid>".into(),
        sdp: Some(caller.sdp(crate::common::SDP)),
        ..Default::default()
    };
    let (invite, ai_invite) = super::place_call(&mut tr.rig, &opts).await;
    let ok_ai = tr
        .rig
        .agent
        .respond(&ai_invite, 200, &[], Some(&agent.sdp(AI_SDP)))
        .await;
    let ok = tr
        .rig
        .caller
        .expect_response_to(Method::Invite, 200, WAIT)
        .await;
    let caller_dlg = crate::common::Dialog::as_uac(&invite, &ok.msg);
    tr.rig
        .caller
        .send(&tr.rig.caller.ack(&caller_dlg, None))
        .await;
    tr.rig.agent.expect_request(Method::Ack, WAIT).await;
    let mut agent_dlg = crate::common::Dialog::as_uas(&ai_invite.msg, &ok_ai);
    let mut req = tr.rig.agent.in_dialog(&mut agent_dlg, Method::Refer, None);
    req.push_checked("Refer-To", &format!("<{}>", tr.target))
        .expect("header");
    tr.rig.agent.send(&req).await;
    tr.rig
        .agent
        .expect_response_to(Method::Refer, 202, WAIT)
        .await;
    let inv = expect_target_invite(&mut tr).await;
    let from = inv.msg.from_header().expect("From");
    assert_eq!(from.uri.as_str(), "sip:unknown@handoff.invalid");
    assert_eq!(from.display_name.as_deref(), Some("Unknown"));
    assert!(from.params.iter().any(|(k, _)| k == "tag"), "our own tag");
}

/// 486 from Zendesk: NOTIFY 486, the caller stays with the AI agent (its
/// media untouched) and the AI agent may try again.
pub async fn busy_target_leaves_the_caller_with_the_ai_agent(t: Transport) {
    let mut tr = transfer_rig(t, "").await;
    let mut m = establish_media(&mut tr.rig).await;
    let target = format!("<{}>", tr.target);
    let refer_msg = refer(&mut tr, &mut m, &target, 202).await;
    expect_notify(&mut tr, &m, &refer_msg).await;
    let inv = expect_target_invite(&mut tr).await;
    tr.zendesk.respond(&inv, 486, &[], None).await;
    let (frag, state) = expect_notify(&mut tr, &m, &refer_msg).await;
    assert_eq!(frag, "SIP/2.0 486 Busy Here\r\n");
    assert_eq!(state, "terminated;reason=noresource");
    m.caller
        .rtp
        .send_to(&rtp(5, 0x1111), m.relay_for_caller)
        .await
        .expect("send");
    let (p, _) = Phone::recv(&m.agent.rtp, WAIT, "caller still with the AI agent").await;
    assert_eq!(p, rtp(5, 0x1111));
    // The first attempt failed (the 486 itself is in the NOTIFY above).
    assert_eq!(count(&tr.rig.server, |x| &x.transfers_failed_total), 1);
    assert_eq!(count(&tr.rig.server, |x| &x.transfers_succeeded_total), 0);
    // Try again: this time Zendesk answers.
    let refer_msg = refer(&mut tr, &mut m, &target, 202).await;
    expect_notify(&mut tr, &m, &refer_msg).await;
    let inv = expect_target_invite(&mut tr).await;
    answer_target(&mut tr, &inv).await;
    let (frag, _) = expect_notify(&mut tr, &m, &refer_msg).await;
    assert_eq!(frag, "SIP/2.0 200 OK\r\n");
    let bye = tr.rig.agent.expect_request(Method::Bye, WAIT).await;
    tr.rig.agent.respond(&bye, 200, &[], None).await;
    assert_eq!(count(&tr.rig.server, |x| &x.transfers_total), 2);
    assert_eq!(count(&tr.rig.server, |x| &x.transfers_succeeded_total), 1);
}

/// Zendesk rings past `ring_timeout_secs`: CANCEL to it, NOTIFY 408.
pub async fn ringing_target_times_out(t: Transport) {
    let mut tr = transfer_rig(t, "transfer.ring_timeout_secs = 1").await;
    let mut m = establish_media(&mut tr.rig).await;
    let target = format!("<{}>", tr.target);
    let refer_msg = refer(&mut tr, &mut m, &target, 202).await;
    expect_notify(&mut tr, &m, &refer_msg).await;
    let inv = expect_target_invite(&mut tr).await;
    tr.zendesk.respond(&inv, 180, &[], None).await;
    let cancel = tr
        .zendesk
        .expect_request(Method::Cancel, Duration::from_secs(3))
        .await;
    tr.zendesk.respond(&cancel, 200, &[], None).await;
    tr.zendesk.respond(&inv, 487, &[], None).await;
    let (frag, _) = expect_notify(&mut tr, &m, &refer_msg).await;
    assert_eq!(frag, "SIP/2.0 408 Request Timeout\r\n");
    bye_from_caller(&mut tr.rig, &mut m.call).await;
}

/// The caller hangs up while Zendesk rings: CANCEL to Zendesk, BYE to the AI agent.
pub async fn caller_hangup_mid_transfer_cancels_the_target(t: Transport) {
    let mut tr = transfer_rig(t, "").await;
    let mut m = establish_media(&mut tr.rig).await;
    let target = format!("<{}>", tr.target);
    let refer_msg = refer(&mut tr, &mut m, &target, 202).await;
    expect_notify(&mut tr, &m, &refer_msg).await;
    let inv = expect_target_invite(&mut tr).await;
    tr.zendesk.respond(&inv, 180, &[], None).await;
    let bye = tr.rig.caller.bye(&mut m.call.caller_dlg);
    tr.rig.caller.send(&bye).await;
    tr.rig
        .caller
        .expect_response_to(Method::Bye, 200, WAIT)
        .await;
    let cancel = tr.zendesk.expect_request(Method::Cancel, WAIT).await;
    tr.zendesk.respond(&cancel, 200, &[], None).await;
    tr.zendesk.respond(&inv, 487, &[], None).await;
    let ai_bye = tr.rig.agent.expect_request(Method::Bye, WAIT).await;
    tr.rig.agent.respond(&ai_bye, 200, &[], None).await;
    super::assert_call_gone(&tr.rig.server, &m.call.session_id, CALLER_E164).await;
}

/// A target outside the allow-list: 403 and nothing dialled. A REFER without
/// Refer-To: 400.
pub async fn target_not_allowed_gets_403_and_nothing_is_dialled(t: Transport) {
    let mut tr = transfer_rig(t, "").await;
    let mut m = establish_media(&mut tr.rig).await;
    refer(&mut tr, &mut m, "<sip:admin@10.0.0.1>", 403).await;
    refer(&mut tr, &mut m, "<sip:support@internal.example.com>", 403).await;
    refer(&mut tr, &mut m, "", 400).await;
    refer(&mut tr, &mut m, "<sip:a@b.example>, <sip:c@d.example>", 400).await;
    tr.zendesk
        .expect_silence(
            "an INVITE for a refused target",
            Duration::from_millis(300),
            |x| x.method() == Some(&Method::Invite),
        )
        .await;
    tr.rig
        .agent
        .expect_silence(
            "a NOTIFY for a refused REFER",
            Duration::from_millis(100),
            |x| x.method() == Some(&Method::Notify),
        )
        .await;
    assert_eq!(count(&tr.rig.server, |x| &x.refers_refused_total), 4);
    assert_eq!(count(&tr.rig.server, |x| &x.transfers_total), 0);
    bye_from_caller(&mut tr.rig, &mut m.call).await;
}

/// Values that would inject headers never reach the wire: a ticket id with
/// CRLF is refused by the webhook, a contact id with CRLF is left out.
pub async fn crlf_in_ticket_or_contact_never_reaches_the_invite(t: Transport) {
    let mut tr = transfer_rig(t, "").await;
    let mut m = establish_media(&mut tr.rig).await;
    let body = format!(
        r#"{{"ticket_id": "123\r\nX-Evil: 1", "caller_phone": "{CALLER_E164}", "requester_phone": ""}}"#
    );
    let resp = post_webhook(&tr.rig, body).await;
    assert_eq!(resp.status().as_u16(), 400, "ticket id with CRLF refused");
    let sid = handoff::session::SessionId::parse(&m.call.session_id).expect("id");
    table(&tr.rig.server).update(&sid, |s| {
        s.contact_id = Some("c-1\r\nX-Evil: injected".into());
    });
    let target = format!("<{}>", tr.target);
    let refer_msg = refer(&mut tr, &mut m, &target, 202).await;
    expect_notify(&mut tr, &m, &refer_msg).await;
    let inv = expect_target_invite(&mut tr).await;
    assert_eq!(inv.msg.header("X-Evil"), None, "no injected header");
    assert_eq!(
        inv.msg.header("X-OPENCX-CONTACT-ID"),
        None,
        "bad contact id left out"
    );
    assert_eq!(inv.msg.header("X-OPENCX-ZENDESK-TICKET-ID"), None);
    assert_eq!(
        inv.msg.header("X-OPENCX-SESSION-ID"),
        Some(m.call.session_id.as_str())
    );
    tr.zendesk.respond(&inv, 480, &[], None).await;
    expect_notify(&mut tr, &m, &refer_msg).await;
}

/// A second REFER while the first is under way gets 491; `Refer-Sub: false`
/// is honoured (202 says so, no NOTIFY), and the AI leg is released after the
/// answer all the same.
pub async fn second_refer_gets_491_and_refer_sub_false_is_honoured(t: Transport) {
    let mut tr = transfer_rig(t, "").await;
    let mut m = establish_media(&mut tr.rig).await;
    let mut req = tr
        .rig
        .agent
        .in_dialog(&mut m.call.agent_dlg, Method::Refer, None);
    req.push_checked("Refer-To", &format!("<{}>", tr.target))
        .expect("header");
    req.push("Refer-Sub", "false");
    tr.rig.agent.send(&req).await;
    let accepted = tr
        .rig
        .agent
        .expect_response_to(Method::Refer, 202, WAIT)
        .await;
    assert_eq!(accepted.msg.header("Refer-Sub"), Some("false"));
    let inv = expect_target_invite(&mut tr).await;
    let target = format!("<{}>", tr.target);
    refer(&mut tr, &mut m, &target, 491).await;
    answer_target(&mut tr, &inv).await;
    let no_notify = |x: &Message| x.method() == Some(&Method::Notify);
    let bye = tr.rig.agent.expect_request(Method::Bye, WAIT).await;
    tr.rig.agent.respond(&bye, 200, &[], None).await;
    tr.rig
        .agent
        .expect_silence(
            "a NOTIFY with Refer-Sub: false",
            Duration::from_millis(200),
            no_notify,
        )
        .await;
}

/// The AI agent hangs up while Zendesk rings: the transfer goes on and the
/// caller ends up with Zendesk.
pub async fn ai_hangup_during_transfer_lets_it_complete(t: Transport) {
    let mut tr = transfer_rig(t, "").await;
    let mut m = establish_media(&mut tr.rig).await;
    let target = format!("<{}>", tr.target);
    let refer_msg = refer(&mut tr, &mut m, &target, 202).await;
    expect_notify(&mut tr, &m, &refer_msg).await;
    let inv = expect_target_invite(&mut tr).await;
    let bye = tr.rig.agent.bye(&mut m.call.agent_dlg);
    tr.rig.agent.send(&bye).await;
    tr.rig
        .agent
        .expect_response_to(Method::Bye, 200, WAIT)
        .await;
    tr.rig
        .caller
        .expect_silence(
            "BYE to the caller while the transfer runs",
            Duration::from_millis(300),
            |x| x.method() == Some(&Method::Bye),
        )
        .await;
    let (zphone, _) = answer_target(&mut tr, &inv).await;
    m.caller
        .rtp
        .send_to(&rtp(1, 0x1111), m.relay_for_caller)
        .await
        .expect("send");
    Phone::recv(&zphone.rtp, WAIT, "caller RTP at Zendesk").await;
    bye_from_caller_to_zendesk(&mut tr, &mut m).await;
}

async fn bye_from_caller_to_zendesk(tr: &mut TransferRig, m: &mut MediaCall) {
    let bye = tr.rig.caller.bye(&mut m.call.caller_dlg);
    tr.rig.caller.send(&bye).await;
    tr.rig
        .caller
        .expect_response_to(Method::Bye, 200, WAIT)
        .await;
    let zbye = tr.zendesk.expect_request(Method::Bye, WAIT).await;
    tr.zendesk.respond(&zbye, 200, &[], None).await;
}

/// A 302 to another allowed target is followed; its Contact is checked
/// against the allow-list like the Refer-To was.
pub async fn redirect_is_followed_to_an_allowed_target(t: Transport) {
    let zendesk = TestUa::agent(t).await;
    let port = zendesk.local_addr().port();
    // An IP literal is allowed only by an exact pattern.
    let tier2 = format!("sip:tier2@127.0.0.1:{port}{}", t.uri_param());
    let extra = format!("transfer.allow = [\"tel:+*\", \"{tier2}\"]");
    let mut tr = transfer_rig_with(t, &extra, zendesk).await;
    let mut m = establish_media(&mut tr.rig).await;
    let target = format!("<{}>", tr.target);
    let refer_msg = refer(&mut tr, &mut m, &target, 202).await;
    expect_notify(&mut tr, &m, &refer_msg).await;
    let inv = expect_target_invite(&mut tr).await;
    tr.zendesk
        .respond(&inv, 302, &[("Contact", &format!("<{tier2}>"))], None)
        .await;
    let inv2 = expect_target_invite(&mut tr).await;
    assert!(
        inv2.msg
            .request_uri()
            .unwrap_or_default()
            .starts_with("sip:tier2@"),
        "redirected INVITE"
    );
    assert_eq!(inv2.msg.header("X-OPENCX-TRANSFER"), Some("true"));
    // A redirect to somewhere not allowed ends the transfer with the 3xx.
    tr.zendesk
        .respond(&inv2, 302, &[("Contact", "<sip:evil@10.1.2.3>")], None)
        .await;
    let (frag, _) = expect_notify(&mut tr, &m, &refer_msg).await;
    assert!(frag.starts_with("SIP/2.0 302 "), "{frag}");
    tr.zendesk
        .expect_silence(
            "an INVITE to a refused redirect",
            Duration::from_millis(200),
            |x| x.method() == Some(&Method::Invite),
        )
        .await;
    // The transfer is over: the caller stays with the AI agent, which may try again.
    again_after_a_failed_transfer(&mut tr, &mut m, &target).await;
}

/// A 407 handoff has no credentials for and a 3xx with nothing to follow each
/// end the transfer: final NOTIFY with the target's status, the caller stays
/// with the AI agent, and the next REFER is accepted.
pub async fn unanswerable_challenge_and_unfollowable_redirect_clear_the_transfer(t: Transport) {
    let mut tr = transfer_rig(t, "transfer.max_redirects = 0").await;
    let mut m = establish_media(&mut tr.rig).await;
    let target = format!("<{}>", tr.target);
    let challenge = "Digest realm=\"zendesk\", nonce=\"n1\", qop=\"auth\"";
    let cases: [(u16, &str, &str); 3] = [
        (407, "Proxy-Authenticate", challenge),
        (302, "Contact", "<sip:tier2@127.0.0.1:9>"),
        (301, "X-Nothing", "no Contact at all"),
    ];
    for (status, name, value) in cases {
        let refer_msg = refer(&mut tr, &mut m, &target, 202).await;
        expect_notify(&mut tr, &m, &refer_msg).await;
        let inv = expect_target_invite(&mut tr).await;
        tr.zendesk
            .respond(&inv, status, &[(name, value)], None)
            .await;
        let (frag, state) = expect_notify(&mut tr, &m, &refer_msg).await;
        assert!(frag.starts_with(&format!("SIP/2.0 {status} ")), "{frag}");
        assert_eq!(state, "terminated;reason=noresource");
    }
    assert_eq!(count(&tr.rig.server, |x| &x.transfers_failed_total), 3);
    again_after_a_failed_transfer(&mut tr, &mut m, &target).await;
}

/// After a transfer that failed, the caller is still with the AI agent and
/// its next REFER starts a new transfer (a transfer that never cleared made
/// every later REFER get 491).
async fn again_after_a_failed_transfer(tr: &mut TransferRig, m: &mut MediaCall, target: &str) {
    m.caller
        .rtp
        .send_to(&rtp(9, 0x2222), m.relay_for_caller)
        .await
        .expect("send");
    let (p, _) = Phone::recv(&m.agent.rtp, WAIT, "caller still with the AI agent").await;
    assert_eq!(p, rtp(9, 0x2222));
    let refer_msg = refer(tr, m, target, 202).await;
    expect_notify(tr, m, &refer_msg).await;
    let inv = expect_target_invite(tr).await;
    tr.zendesk.respond(&inv, 486, &[], None).await;
    let (frag, state) = expect_notify(tr, m, &refer_msg).await;
    assert_eq!(frag, "SIP/2.0 486 Busy Here\r\n");
    assert_eq!(state, "terminated;reason=noresource");
}

/// A destination with credentials answers a 401 digest challenge (SHA-256,
/// qop=auth) once; the retried INVITE carries them and a higher CSeq.
pub async fn digest_challenge_is_answered_with_the_destination_credentials(t: Transport) {
    let zendesk = TestUa::agent(t).await;
    let port = zendesk.local_addr().port();
    let target = format!("sip:support@127.0.0.1:{port}{}", t.uri_param());
    let extra = format!(
        "transfer.destination = [{{ name = \"zendesk\", uri = \"{target}\", username = \"handoff\", password = \"s3cret-pass\" }}]"
    );
    let mut tr = transfer_rig_with(t, &extra, zendesk).await;
    let mut m = establish_media(&mut tr.rig).await;
    let refer_msg = refer(&mut tr, &mut m, &format!("<{target}>"), 202).await;
    expect_notify(&mut tr, &m, &refer_msg).await;
    let inv = expect_target_invite(&mut tr).await;
    assert_eq!(inv.msg.header("Authorization"), None);
    let challenge = "Digest realm=\"zendesk\", nonce=\"abc123\", qop=\"auth\", algorithm=SHA-256";
    tr.zendesk
        .respond(&inv, 401, &[("WWW-Authenticate", challenge)], None)
        .await;
    let inv2 = expect_target_invite(&mut tr).await;
    let auth = inv2
        .msg
        .header("Authorization")
        .unwrap_or_default()
        .to_owned();
    assert!(auth.starts_with("Digest "), "{auth}");
    assert!(auth.contains("username=\"handoff\""), "{auth}");
    assert!(auth.contains("algorithm=SHA-256"), "{auth}");
    assert!(auth.contains("qop=auth"), "{auth}");
    assert!(!auth.contains("s3cret"), "the password never goes out");
    assert!(inv2.msg.cseq().unwrap().seq > inv.msg.cseq().unwrap().seq);
    assert_eq!(inv2.msg.call_id(), inv.msg.call_id());
    // A second challenge is final.
    tr.zendesk
        .respond(&inv2, 401, &[("WWW-Authenticate", challenge)], None)
        .await;
    let (frag, _) = expect_notify(&mut tr, &m, &refer_msg).await;
    assert!(frag.starts_with("SIP/2.0 401 "), "{frag}");
    again_after_a_failed_transfer(&mut tr, &mut m, &format!("<{target}>")).await;
}
