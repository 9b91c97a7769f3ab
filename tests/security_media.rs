//! Issue 12, media: an attacker's RTP cannot take a call's audio (strict
//! latching), and an offer on hold from the start cannot keep a call's slot
//! and ports for the hold timeout. A second loopback address (127.0.0.9;
//! Linux answers for all of 127/8) plays the attacker. SIP over UDP.

mod common;

use common::build::SDP;
use common::media::{assert_sdp_relayed, relayed, rtp, Phone};
use common::scenarios::media::establish_media;
use common::scenarios::{bye_from_caller, count, place_call};
use common::{InviteOpts, Rig, Transport, WAIT};
use handoff::sip::message::Method;
use std::time::Duration;
use tokio::net::UdpSocket;

const ATTACKER_IP: &str = "127.0.0.9";

async fn attacker() -> UdpSocket {
    UdpSocket::bind((ATTACKER_IP, 0))
        .await
        .expect("bind the attacker's socket on 127.0.0.9")
}

fn refused(rig: &Rig) -> u64 {
    count(&rig.server, |x| &x.media_packets_refused_total)
}

async fn bounded(test: impl std::future::Future<Output = ()>) {
    common::bounded(Duration::from_secs(20), test).await;
}

/// The attack of CVE-2017-14099: one RTP packet from elsewhere, before the
/// caller's first, to the caller-facing relay port. It is refused and
/// counted; the AI agent's audio still goes to the caller and the caller's
/// audio still reaches the AI agent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtp_from_another_address_does_not_take_the_calls_media() {
    bounded(async {
        let mut rig = Rig::new(Transport::Udp, "").await;
        let mut m = establish_media(&mut rig).await;
        let before = refused(&rig);
        let attacker = attacker().await;
        for seq in 1..=3 {
            attacker
                .send_to(&rtp(seq, 0x0bad), m.relay_for_caller)
                .await
                .expect("send");
        }
        Phone::assert_silent(
            &m.agent.rtp,
            Duration::from_millis(300),
            "the attacker's RTP at the AI agent",
        )
        .await;

        // The AI agent speaks: the real caller hears it, the attacker does not.
        relayed(
            &m.agent.rtp,
            m.relay_for_agent,
            &m.caller.rtp,
            rtp(1, 0x2222),
            "AI audio at the real caller",
        )
        .await;
        Phone::assert_silent(
            &attacker,
            Duration::from_millis(200),
            "AI audio at the attacker",
        )
        .await;

        // The real caller speaks: the AI agent hears it.
        relayed(
            &m.caller.rtp,
            m.relay_for_caller,
            &m.agent.rtp,
            rtp(1, 0x1111),
            "caller audio at the AI agent",
        )
        .await;

        // And after it has latched, the attacker still gets nothing through.
        attacker
            .send_to(&rtp(4, 0x0bad), m.relay_for_caller)
            .await
            .expect("send");
        relayed(
            &m.agent.rtp,
            m.relay_for_agent,
            &m.caller.rtp,
            rtp(2, 0x2222),
            "AI audio still at the caller",
        )
        .await;
        Phone::assert_silent(
            &m.agent.rtp,
            Duration::from_millis(200),
            "the attacker's 4th",
        )
        .await;

        // The AI-facing port too: a stranger cannot speak as the AI agent.
        attacker
            .send_to(&rtp(5, 0x0bad), m.relay_for_agent)
            .await
            .expect("send");
        Phone::assert_silent(
            &m.caller.rtp,
            Duration::from_millis(200),
            "the attacker's RTP at the caller",
        )
        .await;

        assert!(
            common::eventually(Duration::from_secs(2), || refused(&rig) >= before + 5).await,
            "the refused packets are counted while the call lasts: {} -> {}",
            before,
            refused(&rig)
        );
        bye_from_caller(&mut rig, &mut m.call).await;
    })
    .await;
}

/// NAT: the caller's packets come from its SDP address's IP but another
/// port. That is accepted and latched, even after an attacker's packet came
/// first, and the AI agent's audio follows the NAT port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtp_from_the_sdp_address_on_another_port_is_accepted() {
    bounded(async {
        let mut rig = Rig::new(Transport::Udp, "").await;
        let mut m = establish_media(&mut rig).await;
        let attacker = attacker().await;
        attacker
            .send_to(&rtp(1, 0x0bad), m.relay_for_caller)
            .await
            .expect("send");

        // 127.0.0.1 (the SDP's c=), another port than the SDP's m= port.
        let natted = Phone::new().await;
        assert_ne!(natted.rtp_port(), m.caller.rtp_port());
        relayed(
            &natted.rtp,
            m.relay_for_caller,
            &m.agent.rtp,
            rtp(1, 0x1111),
            "caller RTP from the NAT port",
        )
        .await;
        relayed(
            &m.agent.rtp,
            m.relay_for_agent,
            &natted.rtp,
            rtp(1, 0x2222),
            "AI audio at the NAT port",
        )
        .await;
        Phone::assert_silent(
            &attacker,
            Duration::from_millis(200),
            "AI audio at the attacker",
        )
        .await;
        assert!(refused(&rig) >= 1, "the attacker's packet was counted");
        bye_from_caller(&mut rig, &mut m.call).await;
    })
    .await;
}

/// A re-INVITE moves the caller's media to another address: from then on
/// only the new address may latch. The old address's packets, which would
/// have re-latched the freed latch before, are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reinvite_moves_the_allowed_address() {
    bounded(async {
        let mut rig = Rig::new(Transport::Udp, "").await;
        let mut m = establish_media(&mut rig).await;
        m.caller
            .rtp
            .send_to(&rtp(1, 0x1111), m.relay_for_caller)
            .await
            .expect("send");
        Phone::recv(&m.agent.rtp, WAIT, "caller RTP before the move").await;

        let moved = UdpSocket::bind(("127.0.0.5", 0))
            .await
            .expect("bind 127.0.0.5");
        let port = moved.local_addr().expect("addr").port();
        let offer = m
            .caller
            .sdp(SDP)
            .replace("c=IN IP4 127.0.0.1", "c=IN IP4 127.0.0.5")
            .replace("o=carrier 1 1 ", "o=carrier 1 2 ")
            .replace(
                &format!("m=audio {} ", m.caller.rtp_port()),
                &format!("m=audio {port} "),
            );
        let reinvite = rig.caller.in_dialog(
            &mut m.call.caller_dlg,
            Method::Invite,
            Some(("application/sdp", &offer)),
        );
        rig.caller.send(&reinvite).await;
        let ai_reinvite = rig.agent.expect_request(Method::Invite, WAIT).await;
        let answer = m.agent.sdp(common::build::AI_SDP);
        rig.agent
            .respond(&ai_reinvite, 200, &[], Some(&answer))
            .await;
        rig.caller
            .expect_response_to(Method::Invite, 200, WAIT)
            .await;
        rig.caller
            .send(&rig.caller.ack(&m.call.caller_dlg, None))
            .await;
        rig.agent.expect_request(Method::Ack, WAIT).await;

        // The old address first: refused, the latch stays free.
        m.caller
            .rtp
            .send_to(&rtp(2, 0x1111), m.relay_for_caller)
            .await
            .expect("send");
        Phone::assert_silent(&m.agent.rtp, Duration::from_millis(300), "the old address").await;
        relayed(
            &moved,
            m.relay_for_caller,
            &m.agent.rtp,
            rtp(3, 0x1111),
            "caller RTP from the new address",
        )
        .await;
        relayed(
            &m.agent.rtp,
            m.relay_for_agent,
            &moved,
            rtp(2, 0x2222),
            "AI audio at the new address",
        )
        .await;
        Phone::assert_silent(
            &m.caller.rtp,
            Duration::from_millis(200),
            "AI audio at the old one",
        )
        .await;
        bye_from_caller(&mut rig, &mut m.call).await;
    })
    .await;
}

/// An offer on hold from the start (`a=inactive`) with no RTP ever: the call
/// ends with BYE after `timeout_secs`, not after `hold_timeout_secs`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inactive_call_with_no_rtp_ends_after_the_media_timeout() {
    bounded(async {
        let extra = "media.timeout_secs = 1\nmedia.hold_timeout_secs = 3600";
        let mut rig = Rig::new(Transport::Udp, extra).await;
        let inactive = SDP.replace("a=sendrecv", "a=inactive");
        let opts = InviteOpts {
            sdp: Some(inactive.clone()),
            ..InviteOpts::default()
        };
        let (invite, ai_invite) = place_call(&mut rig, &opts).await;
        assert_sdp_relayed(ai_invite.msg.body(), &inactive, "the held offer");
        let answer = common::build::AI_SDP.replace("a=sendrecv", "a=inactive");
        rig.agent.respond(&ai_invite, 200, &[], Some(&answer)).await;
        let ok = rig
            .caller
            .expect_response_to(Method::Invite, 200, WAIT)
            .await;
        let dlg = common::Dialog::as_uac(&invite, &ok.msg);
        rig.caller.send(&rig.caller.ack(&dlg, None)).await;
        rig.agent.expect_request(Method::Ack, WAIT).await;
        let began = std::time::Instant::now();
        let bye = rig
            .caller
            .expect_request(Method::Bye, Duration::from_secs(5))
            .await;
        assert!(
            began.elapsed() < Duration::from_secs(4),
            "BYE after the media timeout, not the hold one"
        );
        let reason = bye.msg.header("Reason").unwrap_or_default().to_owned();
        assert!(reason.contains("media timeout"), "Reason {reason:?}");
        rig.caller.respond(&bye, 200, &[], None).await;
        let bye = rig.agent.expect_request(Method::Bye, WAIT).await;
        rig.agent.respond(&bye, 200, &[], None).await;
        assert_eq!(count(&rig.server, |x| &x.media_timeouts_total), 1);
    })
    .await;
}

/// A trunk's `media` networks: an offer whose connection address lies outside
/// them is refused with 488 and reaches no AI agent; inside them, the caller's
/// relay port latches to another host of those networks (a carrier's media
/// server beside the one its SDP names) while a stranger stays refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trunk_media_networks_bound_the_offer_and_the_latch() {
    use common::build::AI_SDP;
    use common::trunks::trunk_rig;
    use common::Dialog;
    use std::net::Ipv4Addr;
    bounded(async {
        let trunk = "[[trunk]]\nname = \"carrier\"\nsources = [\"127.0.0.1/32\"]\n\
                     media = [\"127.0.0.64/26\"]\n";
        let mut rig = trunk_rig(Ipv4Addr::LOCALHOST, Ipv4Addr::LOCALHOST, "", trunk, "").await;

        // c=127.0.0.1: outside 127.0.0.64/26.
        let outside = InviteOpts {
            sdp: Some(SDP.to_owned()),
            ..InviteOpts::default()
        };
        rig.caller.send(&rig.caller.invite(&outside)).await;
        rig.caller
            .expect_response_to(Method::Invite, 488, WAIT)
            .await;
        rig.agent
            .expect_silence(
                "an AI leg for a refused offer",
                Duration::from_millis(300),
                |m| m.method() == Some(&Method::Invite),
            )
            .await;

        // c=127.0.0.70: inside.
        let media_server = UdpSocket::bind(("127.0.0.70", 0)).await.expect("bind");
        let port = media_server.local_addr().expect("addr").port();
        let sdp = SDP
            .replace("IN IP4 127.0.0.1", "IN IP4 127.0.0.70")
            .replace("m=audio 40000", &format!("m=audio {port}"));
        let inside = InviteOpts {
            sdp: Some(sdp),
            ..InviteOpts::default()
        };
        let (invite, ai_invite) = place_call(&mut rig, &inside).await;
        let agent = common::media::Phone::new().await;
        let agent_sdp = agent.sdp(AI_SDP);
        rig.agent
            .respond(&ai_invite, 200, &[], Some(&agent_sdp))
            .await;
        let ok = rig
            .caller
            .expect_response_to(Method::Invite, 200, WAIT)
            .await
            .msg;
        let relay_for_caller = assert_sdp_relayed(ok.body(), &agent_sdp, "answer to the caller");
        rig.caller
            .send(&rig.caller.ack(&Dialog::as_uac(&invite, &ok), None))
            .await;

        let before = refused(&rig);
        attacker()
            .await
            .send_to(&rtp(1, 0x0bad), relay_for_caller)
            .await
            .expect("send");
        Phone::assert_silent(
            &agent.rtp,
            Duration::from_millis(300),
            "a stranger's RTP at the AI agent",
        )
        .await;
        assert!(refused(&rig) > before, "the stranger's packet is counted");

        let neighbour = UdpSocket::bind(("127.0.0.71", 0)).await.expect("bind");
        relayed(
            &neighbour,
            relay_for_caller,
            &agent.rtp,
            rtp(1, 0x1111),
            "the trunk's media at the AI agent",
        )
        .await;
    })
    .await;
}
