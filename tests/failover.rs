//! Failover to the next DNS target (RFC 3263 4.3): an INVITE that a server
//! answers 503 (before any provisional response) goes, as the same request on a
//! new transaction, to the next target SRV gave, for the AI leg and for a
//! transfer target; the caller and the AI agent see one call.

mod common;

use common::dns::{rig_with_dns, FakeDns, Zone};
use common::scenarios::media::establish_media;
use common::scenarios::transfer::{
    answer_target, expect_notify, expect_target_invite, refer, transfer_rig_with,
};
use common::scenarios::{bye_from_caller, establish};
use common::{bounded, InviteOpts, TestUa, Transport, WAIT};
use handoff::sip::message::Method;
use std::net::Ipv4Addr;
use std::time::Duration;

const LOOPBACK: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// A server that answers the first INVITE it gets with 503; returns that INVITE's
/// Call-ID and top Via.
async fn refuse_first_invite(ua: &mut TestUa) -> (String, String) {
    let inv = ua.expect_request(Method::Invite, WAIT).await;
    ua.respond(&inv, 503, &[], None).await;
    let call_id = inv.msg.call_id().unwrap_or_default().to_owned();
    let via = inv.msg.header("Via").unwrap_or_default().to_owned();
    // The ACK for the 503 comes back here, not to the next target.
    ua.expect_request(Method::Ack, WAIT).await;
    (call_id, via)
}

#[tokio::test]
async fn ai_invite_answered_503_goes_to_the_next_srv_target() {
    bounded(Duration::from_secs(20), async {
        let mut dead = TestUa::agent(Transport::Udp).await;
        let agent = TestUa::agent(Transport::Udp).await;
        let zone = Zone::default()
            .srv(
                "_sip._udp.ai.test",
                10,
                0,
                dead.local_addr().port(),
                "a.ai.test",
            )
            .srv(
                "_sip._udp.ai.test",
                20,
                0,
                agent.local_addr().port(),
                "b.ai.test",
            )
            .a("a.ai.test", LOOPBACK)
            .a("b.ai.test", LOOPBACK);
        let dns = FakeDns::start(zone, Duration::ZERO).await;
        let mut rig = rig_with_dns(Transport::Udp, agent, &dns, "sip:agent@ai.test").await;
        let (mut call, (call_id, via)) = tokio::join!(
            establish(&mut rig, InviteOpts::default()),
            refuse_first_invite(&mut dead)
        );
        assert_eq!(
            call.ai_invite.msg.call_id(),
            Some(call_id.as_str()),
            "the same request, to the next target"
        );
        assert_ne!(
            call.ai_invite.msg.header("Via"),
            Some(via.as_str()),
            "on a new transaction (a new branch)"
        );
        bye_from_caller(&mut rig, &mut call).await;
    })
    .await;
}

#[tokio::test]
async fn transfer_invite_answered_503_goes_to_the_next_srv_target() {
    bounded(Duration::from_secs(20), async {
        let mut dead = TestUa::agent(Transport::Udp).await;
        let zendesk = TestUa::agent(Transport::Udp).await;
        let zone = Zone::default()
            .srv(
                "_sip._udp.support.test",
                10,
                0,
                dead.local_addr().port(),
                "a.support.test",
            )
            .srv(
                "_sip._udp.support.test",
                20,
                0,
                zendesk.local_addr().port(),
                "b.support.test",
            )
            .a("a.support.test", LOOPBACK)
            .a("b.support.test", LOOPBACK);
        let dns = FakeDns::start(zone, Duration::ZERO).await;
        let extra = format!(
            "{}transfer.allow = [\"tel:+*\", \"support.test\"]\n",
            dns.config_key()
        );
        let mut tr = transfer_rig_with(Transport::Udp, &extra, zendesk).await;
        let mut m = establish_media(&mut tr.rig).await;
        let ((refer_msg, inv), (call_id, _)) = tokio::join!(
            async {
                let refer_msg = refer(&mut tr, &mut m, "<sip:support@support.test>", 202).await;
                let (first, _) = expect_notify(&mut tr, &m, &refer_msg).await;
                assert_eq!(first, "SIP/2.0 100 Trying\r\n");
                let inv = expect_target_invite(&mut tr).await;
                (refer_msg, inv)
            },
            refuse_first_invite(&mut dead)
        );
        assert_eq!(inv.msg.call_id(), Some(call_id.as_str()));
        answer_target(&mut tr, &inv).await;
        // The AI agent hears the outcome of the transfer, not of the failover.
        let (frag, _) = expect_notify(&mut tr, &m, &refer_msg).await;
        assert_eq!(frag, "SIP/2.0 200 OK\r\n");
        let bye = tr.rig.agent.expect_request(Method::Bye, WAIT).await;
        tr.rig.agent.respond(&bye, 200, &[], None).await;
    })
    .await;
}
