//! Calls whose media runs through handoff's relay: test UAs with real RTP
//! sockets on loopback send packets through the ports handoff advertised.

use super::{bye_from_caller, count, place_call, Established};
use crate::common::build::{AI_SDP, AI_SDP_RECVONLY, SDP_SENDONLY};
use crate::common::media::{assert_sdp_relayed, rtcp_rr, rtp, rtp_pt, Phone};
use crate::common::{media_range, Dialog, InviteOpts, Rig, Transport, SDP, WAIT};
use handoff::sip::message::Method;
use std::net::SocketAddr;
use std::time::Duration;

/// A call that is up with media endpoints on both sides.
pub struct MediaCall {
    pub call: Established,
    pub caller: Phone,
    pub agent: Phone,
    /// Where the caller sends RTP: the relay port handoff gave it in the 200.
    pub relay_for_caller: SocketAddr,
    /// Where the AI agent sends RTP: the relay port in handoff's INVITE.
    pub relay_for_agent: SocketAddr,
}

/// Place a call with the phones' addresses in both SDPs; the AI agent answers.
pub async fn establish_media(rig: &mut Rig) -> MediaCall {
    let (caller, agent) = (Phone::new().await, Phone::new().await);
    let caller_sdp = caller.sdp(SDP);
    let agent_sdp = agent.sdp(AI_SDP);
    let opts = InviteOpts {
        sdp: Some(caller_sdp.clone()),
        ..InviteOpts::default()
    };
    let (invite, ai_invite) = place_call(rig, &opts).await;
    let relay_for_agent =
        assert_sdp_relayed(ai_invite.msg.body(), &caller_sdp, "offer to the AI agent");
    let ai_ok = rig
        .agent
        .respond(&ai_invite, 200, &[], Some(&agent_sdp))
        .await;
    let ok = rig
        .caller
        .expect_response_to(Method::Invite, 200, WAIT)
        .await
        .msg;
    let relay_for_caller = assert_sdp_relayed(ok.body(), &agent_sdp, "answer to the caller");
    assert_ne!(relay_for_caller, relay_for_agent, "one port pair per leg");
    let caller_dlg = Dialog::as_uac(&invite, &ok);
    rig.caller.send(&rig.caller.ack(&caller_dlg, None)).await;
    rig.caller.barrier().await;
    rig.agent.expect_request(Method::Ack, WAIT).await;
    let agent_dlg = Dialog::as_uas(&ai_invite.msg, &ai_ok);
    let session_id = ai_invite
        .msg
        .header("X-OPENCX-SESSION-ID")
        .unwrap_or_default()
        .to_owned();
    rig.agent.clear_backlog();
    MediaCall {
        call: Established {
            caller_invite: invite,
            caller_ok: ok,
            caller_dlg,
            ai_invite,
            agent_dlg,
            session_id,
        },
        caller,
        agent,
        relay_for_caller,
        relay_for_agent,
    }
}

fn rtcp_of(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip(), addr.port() + 1)
}

/// 100 packets each way, interleaved: every one arrives intact, in order,
/// from the relay port facing the receiver; RTCP goes both ways too; the
/// counts reach the metrics when the call ends.
pub async fn rtp_flows_both_ways_intact_and_in_order(t: Transport) {
    let mut rig = Rig::new(t, "").await;
    let mut m = establish_media(&mut rig).await;
    const N: u16 = 100;
    let mut to_agent = Vec::new();
    let mut to_caller = Vec::new();
    for seq in 1..=N {
        m.caller
            .rtp
            .send_to(&rtp(seq, 0x1111), m.relay_for_caller)
            .await
            .expect("send");
        m.agent
            .rtp
            .send_to(&rtp(seq, 0x2222), m.relay_for_agent)
            .await
            .expect("send");
        if seq % 10 == 0 {
            // Loopback is fast; pacing keeps the receive buffers small.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let (p, from) = Phone::recv(&m.agent.rtp, WAIT, "RTP to the AI agent").await;
        assert_eq!(
            from, m.relay_for_agent,
            "sent from the relay port facing the agent"
        );
        to_agent.push(p);
        let (p, from) = Phone::recv(&m.caller.rtp, WAIT, "RTP to the caller").await;
        assert_eq!(
            from, m.relay_for_caller,
            "sent from the relay port facing the caller"
        );
        to_caller.push(p);
    }
    for (i, p) in to_agent.iter().enumerate() {
        assert_eq!(
            *p,
            rtp(i as u16 + 1, 0x1111),
            "packet {i} to the agent intact"
        );
    }
    for (i, p) in to_caller.iter().enumerate() {
        assert_eq!(
            *p,
            rtp(i as u16 + 1, 0x2222),
            "packet {i} to the caller intact"
        );
    }

    // RFC 4733 DTMF passes as is.
    let dtmf = rtp_pt(101, N + 1, 0x1111);
    m.caller
        .rtp
        .send_to(&dtmf, m.relay_for_caller)
        .await
        .expect("send");
    let (p, _) = Phone::recv(&m.agent.rtp, WAIT, "telephone-event to the agent").await;
    assert_eq!(p, dtmf);

    // RTCP: port + 1 on both sides.
    m.caller
        .rtcp
        .send_to(&rtcp_rr(0x1111), rtcp_of(m.relay_for_caller))
        .await
        .expect("send");
    let (p, from) = Phone::recv(&m.agent.rtcp, WAIT, "RTCP to the agent").await;
    assert_eq!(p, rtcp_rr(0x1111));
    assert_eq!(from, rtcp_of(m.relay_for_agent));
    m.agent
        .rtcp
        .send_to(&rtcp_rr(0x2222), rtcp_of(m.relay_for_agent))
        .await
        .expect("send");
    let (p, _) = Phone::recv(&m.caller.rtcp, WAIT, "RTCP to the caller").await;
    assert_eq!(p, rtcp_rr(0x2222));

    let before = count(&rig.server, |x| &x.rtp_packets_relayed_total);
    bye_from_caller(&mut rig, &mut m.call).await;
    assert!(
        crate::common::eventually(Duration::from_secs(3), || {
            count(&rig.server, |x| &x.rtp_packets_relayed_total) > before + 2 * u64::from(N)
        })
        .await,
        "relayed packets counted at call end"
    );
    assert!(count(&rig.server, |x| &x.rtcp_packets_relayed_total) >= 2);
    assert_eq!(count(&rig.server, |x| &x.rtp_packets_lost_total), 0);
}

/// The caller's SDP names one port, its packets come from another (NAT):
/// handoff latches to where they come from and ignores anyone else.
pub async fn latching_follows_the_real_source_port(t: Transport) {
    let mut rig = Rig::new(t, "").await;
    let m = establish_media(&mut rig).await;
    // Before the caller speaks, the AI agent's audio goes to the SDP address.
    m.agent
        .rtp
        .send_to(&rtp(1, 0x2222), m.relay_for_agent)
        .await
        .expect("send");
    Phone::recv(&m.caller.rtp, WAIT, "RTP to the SDP address").await;

    let natted = Phone::new().await;
    natted
        .rtp
        .send_to(&rtp(1, 0x1111), m.relay_for_caller)
        .await
        .expect("send");
    let (p, _) = Phone::recv(&m.agent.rtp, WAIT, "caller RTP from the NAT port").await;
    assert_eq!(p, rtp(1, 0x1111));
    m.agent
        .rtp
        .send_to(&rtp(2, 0x2222), m.relay_for_agent)
        .await
        .expect("send");
    let (p, _) = Phone::recv(&natted.rtp, WAIT, "RTP to the latched port").await;
    assert_eq!(p, rtp(2, 0x2222));
    Phone::assert_silent(&m.caller.rtp, Duration::from_millis(200), "old SDP address").await;

    // Once latched, a stranger's packets to the caller-facing port go nowhere.
    let stranger = Phone::new().await;
    stranger
        .rtp
        .send_to(&rtp(9, 0x6666), m.relay_for_caller)
        .await
        .expect("send");
    Phone::assert_silent(&m.agent.rtp, Duration::from_millis(300), "stranger's RTP").await;
}

/// No RTP for `[media] timeout_secs`: BYE on both legs with a Reason.
pub async fn media_timeout_ends_the_call_with_bye(t: Transport) {
    let mut rig = Rig::new(t, "media.timeout_secs = 1").await;
    let m = establish_media(&mut rig).await;
    // The caller speaks once, then both go quiet.
    m.caller
        .rtp
        .send_to(&rtp(1, 0x1111), m.relay_for_caller)
        .await
        .expect("send");
    let wait = Duration::from_secs(4);
    let bye = rig.caller.expect_request(Method::Bye, wait).await;
    let reason = bye.msg.header("Reason").unwrap_or_default().to_owned();
    assert!(reason.contains("media timeout"), "Reason {reason:?}");
    rig.caller.respond(&bye, 200, &[], None).await;
    let bye = rig.agent.expect_request(Method::Bye, WAIT).await;
    assert!(bye.msg.header("Reason").is_some());
    rig.agent.respond(&bye, 200, &[], None).await;
    assert_eq!(count(&rig.server, |x| &x.media_timeouts_total), 1);
    super::assert_call_gone(&rig.server, &m.call.session_id, crate::common::CALLER_E164).await;
}

/// On hold the long timeout applies: a held call whose media has flowed
/// stays silent past the normal one and lives. (Until a side's first RTP
/// packet the normal timeout applies even on hold: issue 12.)
pub async fn held_call_outlives_the_media_timeout(t: Transport) {
    let extra = "media.timeout_secs = 1\nmedia.hold_timeout_secs = 30";
    let mut rig = Rig::new(t, extra).await;
    let mut m = establish_media(&mut rig).await;
    // Both sides speak once before the hold.
    m.caller
        .rtp
        .send_to(&rtp(1, 0x1111), m.relay_for_caller)
        .await
        .expect("send");
    Phone::recv(&m.agent.rtp, WAIT, "caller RTP").await;
    m.agent
        .rtp
        .send_to(&rtp(1, 0x2222), m.relay_for_agent)
        .await
        .expect("send");
    Phone::recv(&m.caller.rtp, WAIT, "agent RTP").await;
    let hold = m.caller.sdp(SDP_SENDONLY);
    let reinvite = rig.caller.in_dialog(
        &mut m.call.caller_dlg,
        Method::Invite,
        Some(("application/sdp", &hold)),
    );
    rig.caller.send(&reinvite).await;
    let ai_reinvite = rig.agent.expect_request(Method::Invite, WAIT).await;
    assert_sdp_relayed(ai_reinvite.msg.body(), &hold, "hold offer");
    let answer = m.agent.sdp(AI_SDP_RECVONLY);
    rig.agent
        .respond(&ai_reinvite, 200, &[], Some(&answer))
        .await;
    let ok = rig
        .caller
        .expect_response_to(Method::Invite, 200, WAIT)
        .await;
    assert_sdp_relayed(ok.msg.body(), &answer, "hold answer");
    rig.caller
        .send(&rig.caller.ack(&m.call.caller_dlg, None))
        .await;
    rig.agent.expect_request(Method::Ack, WAIT).await;
    rig.caller
        .expect_silence("BYE while on hold", Duration::from_millis(2500), |msg| {
            msg.method() == Some(&Method::Bye)
        })
        .await;
    bye_from_caller(&mut rig, &mut m.call).await;
    assert_eq!(count(&rig.server, |x| &x.media_timeouts_total), 0);
}

/// Ports run out before limits.max_calls (another process holds some of the
/// range): the second call gets 503 and never reaches the AI agent; once the
/// first ends its ports serve a third.
pub async fn port_exhaustion_gives_503(t: Transport) {
    // Four pairs, room for two calls (the range must hold limits.max_calls);
    // two pairs are held here, so one call's worth is left.
    let (min, max) = media_range(8);
    let _held: Vec<std::net::UdpSocket> = (min..min + 4)
        .map(|p| std::net::UdpSocket::bind(("127.0.0.1", p)).expect("hold a media port"))
        .collect();
    let extra = format!("media.port_min = {min}\nmedia.port_max = {max}\nlimits.max_calls = 2");
    let mut rig = Rig::new(t, &extra).await;
    let mut first = establish_media(&mut rig).await;

    let mut second = rig.another_caller().await;
    second.send(&second.invite(&InviteOpts::default())).await;
    let refused = second.expect_response_to(Method::Invite, 503, WAIT).await;
    assert!(refused.msg.to_tag().is_some());
    rig.agent
        .expect_silence(
            "INVITE for a call without ports",
            Duration::from_millis(300),
            |m| m.method() == Some(&Method::Invite),
        )
        .await;
    assert_eq!(count(&rig.server, |x| &x.media_ports_exhausted_total), 1);

    bye_from_caller(&mut rig, &mut first.call).await;
    // The relay frees its ports on its own task; the gauge drops after that.
    let relays = || {
        rig.server
            .metrics()
            .media_relays_active
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    assert!(
        crate::common::eventually(Duration::from_secs(3), || relays() == 0).await,
        "the first call's relay is gone"
    );
    let mut third = establish_media(&mut rig).await;
    bye_from_caller(&mut rig, &mut third.call).await;
}

/// An offer that is not valid SDP gets 488 with a Warning saying why; one
/// that is not SDP at all gets 415 with Accept. Neither reaches the agent.
pub async fn bad_offers_are_refused_before_the_ai_leg(t: Transport) {
    let mut rig = Rig::new(t, "").await;
    let opts = InviteOpts {
        sdp: Some("v=0\r\nthis is not sdp\r\n".into()),
        ..InviteOpts::default()
    };
    rig.caller.send(&rig.caller.invite(&opts)).await;
    let r = rig
        .caller
        .expect_response_to(Method::Invite, 488, WAIT)
        .await;
    let warning = r.msg.header("Warning").unwrap_or_default().to_owned();
    assert!(warning.starts_with("399 "), "Warning {warning:?}");

    let mut other = rig.another_caller().await;
    let mut invite = other.invite(&InviteOpts::default());
    invite.set("Content-Type", "text/plain");
    other.send(&invite).await;
    let r = other.expect_response_to(Method::Invite, 415, WAIT).await;
    assert_eq!(r.msg.header("Accept"), Some("application/sdp"));

    // A video stream beside the audio is declined (port 0) on the AI leg.
    let video = format!("{SDP}m=video 40002 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n");
    let opts = InviteOpts {
        sdp: Some(video),
        ..InviteOpts::default()
    };
    let third = rig.another_caller().await;
    third.send(&third.invite(&opts)).await;
    let ai_invite = rig.agent.expect_request(Method::Invite, WAIT).await;
    let body = String::from_utf8_lossy(ai_invite.msg.body()).into_owned();
    assert!(body.contains("m=video 0 "), "video declined: {body}");
    assert!(!body.contains("m=audio 40000"), "audio relayed: {body}");
    assert_eq!(count(&rig.server, |x| &x.sdp_rejected_total), 2);
}

/// `[media] mode = "passthrough"`: the SDP goes through untouched.
pub async fn passthrough_mode_leaves_sdp_alone(t: Transport) {
    let mut rig = Rig::new(t, "media.mode = \"passthrough\"").await;
    let (_, ai_invite) = place_call(&mut rig, &InviteOpts::default()).await;
    assert_eq!(&ai_invite.msg.body()[..], SDP.as_bytes());
    let relays = rig
        .server
        .metrics()
        .media_relays_active
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(relays, 0, "no relay in passthrough mode");
}
