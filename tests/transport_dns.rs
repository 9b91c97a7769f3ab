//! Target selection by DNS (RFC 3263), against a fake DNS server on loopback: the
//! 100 Trying does not wait for a slow lookup, an SRV record leads to the AI agent,
//! a target that refuses the connection is skipped for the next one, a transfer
//! target named by host is found by SRV; and
//! `TransportLayer::peer_for` on its own: failover order, errors.

mod common;

use common::build::AI_SDP;
use common::dns::{rig_with_dns, FakeDns, Zone};
use common::scenarios::media::establish_media;
use common::scenarios::transfer::{
    answer_target, expect_notify, expect_target_invite, refer, transfer_rig_with,
};
use common::scenarios::{bye_from_caller, establish};
use common::{bounded, Dialog, InviteOpts, TestUa, Transport};
use handoff::metrics::Metrics;
use handoff::sip::message::{Method, SipUri};
use handoff::sip::transport::{
    Peer, PeerError, ResolveError, Sink, TransportConfig, TransportLayer,
};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

const LOOPBACK: Ipv4Addr = Ipv4Addr::LOCALHOST;

#[tokio::test]
async fn trying_goes_out_before_a_slow_dns_answer_and_the_call_completes() {
    bounded(Duration::from_secs(20), async {
        let agent = TestUa::agent(Transport::Udp).await;
        let zone = Zone::default().a("slow.ai.test", LOOPBACK);
        let dns = FakeDns::start(zone, Duration::from_secs(2)).await;
        let port = agent.local_addr().port();
        let uri = format!("sip:agent@slow.ai.test:{port}");
        let mut rig = rig_with_dns(Transport::Udp, agent, &dns, &uri).await;

        let invite = rig.caller.invite(&InviteOpts::default());
        let sent = Instant::now();
        rig.caller.send(&invite).await;
        rig.caller
            .expect_response_to(Method::Invite, 100, Duration::from_millis(300))
            .await;
        let trying_after = sent.elapsed();
        let ai_invite = rig
            .agent
            .expect_request(Method::Invite, Duration::from_secs(6))
            .await;
        let invite_after = sent.elapsed();
        assert!(
            trying_after < Duration::from_millis(300),
            "100 Trying took {trying_after:?}"
        );
        assert!(
            invite_after >= Duration::from_millis(1800),
            "the AI leg waited for the DNS answer ({invite_after:?})"
        );
        assert!(dns.queries() >= 1, "the AI agent's host was looked up");

        // The call goes on as any other once the answer came.
        let ai_ok = rig.agent.respond(&ai_invite, 200, &[], Some(AI_SDP)).await;
        let ok = rig
            .caller
            .expect_response_to(Method::Invite, 200, common::WAIT)
            .await
            .msg;
        let mut caller_dlg = Dialog::as_uac(&invite, &ok);
        rig.caller.send(&rig.caller.ack(&caller_dlg, None)).await;
        rig.agent.expect_request(Method::Ack, common::WAIT).await;
        let agent_dlg = Dialog::as_uas(&ai_invite.msg, &ai_ok);
        let bye = rig.caller.bye(&mut caller_dlg);
        rig.caller.send(&bye).await;
        rig.caller
            .expect_response_to(Method::Bye, 200, common::WAIT)
            .await;
        let ai_bye = rig.agent.expect_request(Method::Bye, common::WAIT).await;
        assert_eq!(ai_bye.msg.call_id(), Some(agent_dlg.call_id.as_str()));
        rig.agent.respond(&ai_bye, 200, &[], None).await;
    })
    .await;
}

#[tokio::test]
async fn srv_record_leads_to_the_ai_agent_and_is_looked_up_once() {
    bounded(Duration::from_secs(20), async {
        let agent = TestUa::agent(Transport::Udp).await;
        let port = agent.local_addr().port();
        let zone = Zone::default()
            .srv("_sip._udp.ai.test", 10, 0, port, "agent1.ai.test")
            .a("agent1.ai.test", LOOPBACK);
        let dns = FakeDns::start(zone, Duration::ZERO).await;
        let mut rig = rig_with_dns(Transport::Udp, agent, &dns, "sip:agent@ai.test").await;

        let mut call = establish(&mut rig, InviteOpts::default()).await;
        assert_eq!(
            call.ai_invite.msg.request_uri(),
            Some("sip:agent@ai.test"),
            "the Request-URI stays the configured URI"
        );
        bye_from_caller(&mut rig, &mut call).await;
        let after_first = dns.queries();
        assert!(after_first >= 2, "SRV, then the target's address");

        // A second call to the same host is served from the cache.
        let mut call = establish(&mut rig, InviteOpts::default()).await;
        bye_from_caller(&mut rig, &mut call).await;
        assert_eq!(
            dns.queries(),
            after_first,
            "no second lookup within the TTL"
        );
    })
    .await;
}

#[tokio::test]
async fn refused_first_srv_target_fails_over_to_the_next_over_tcp() {
    bounded(Duration::from_secs(20), async {
        let agent = TestUa::agent(Transport::Tcp).await;
        let live = agent.local_addr().port();
        // A port that was free a moment ago: nothing listens there.
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let zone = Zone::default()
            .srv("_sip._tcp.ai.test", 10, 0, closed, "dead.ai.test")
            .srv("_sip._tcp.ai.test", 20, 0, live, "live.ai.test")
            .a("dead.ai.test", LOOPBACK)
            .a("live.ai.test", LOOPBACK);
        let dns = FakeDns::start(zone, Duration::ZERO).await;
        let uri = "sip:agent@ai.test;transport=tcp";
        let mut rig = rig_with_dns(Transport::Tcp, agent, &dns, uri).await;

        let mut call = establish(&mut rig, InviteOpts::default()).await;
        assert!(
            call.ai_invite
                .msg
                .header("Via")
                .is_some_and(|v| v.contains("TCP")),
            "the AI leg runs over TCP"
        );
        bye_from_caller(&mut rig, &mut call).await;
    })
    .await;
}

#[tokio::test]
async fn transfer_target_named_by_host_is_found_by_srv() {
    bounded(Duration::from_secs(20), async {
        let zendesk = TestUa::agent(Transport::Udp).await;
        let port = zendesk.local_addr().port();
        let zone = Zone::default()
            .srv("_sip._udp.support.test", 10, 0, port, "pbx.support.test")
            .a("pbx.support.test", LOOPBACK);
        let dns = FakeDns::start(zone, Duration::ZERO).await;
        let extra = format!(
            "{}transfer.allow = [\"tel:+*\", \"support.test\"]\n",
            dns.config_key()
        );
        let mut tr = transfer_rig_with(Transport::Udp, &extra, zendesk).await;
        let mut m = establish_media(&mut tr.rig).await;
        let refer_msg = refer(&mut tr, &mut m, "<sip:support@support.test>", 202).await;
        expect_notify(&mut tr, &m, &refer_msg).await;
        let inv = expect_target_invite(&mut tr).await;
        assert_eq!(inv.msg.request_uri(), Some("sip:support@support.test"));
        answer_target(&mut tr, &inv).await;
        let (frag, _) = expect_notify(&mut tr, &m, &refer_msg).await;
        assert_eq!(frag, "SIP/2.0 200 OK\r\n");
        let bye = tr.rig.agent.expect_request(Method::Bye, common::WAIT).await;
        tr.rig.agent.respond(&bye, 200, &[], None).await;
    })
    .await;
}

/// Discards what the transport receives: these tests only open peers.
struct NoSink;

impl Sink for NoSink {
    fn on_message(&self, _: handoff::sip::message::Message, _: Peer, _: &Arc<TransportLayer>) {}
    fn on_bad_message(
        &self,
        _: handoff::sip::message::ParseError,
        _: Peer,
        _: &Arc<TransportLayer>,
    ) {
    }
}

async fn transport_layer(dns: &FakeDns) -> Arc<TransportLayer> {
    let loopback = SocketAddr::from((LOOPBACK, 0));
    let cfg = TransportConfig {
        udp: vec![loopback],
        tcp: vec![loopback],
        max_message_size: 65536,
        tcp_idle_timeout: Duration::from_secs(30),
        tcp_connect_timeout: Duration::from_secs(2),
        dns_servers: vec![dns.addr()],
        tcp_limits: Default::default(),
        tls: None,
    };
    TransportLayer::start(cfg, Arc::new(NoSink), Arc::new(Metrics::default()))
        .await
        .expect("transport starts")
}

#[tokio::test]
async fn targets_fail_over_in_priority_order_then_run_out() {
    bounded(Duration::from_secs(10), async {
        let zone = Zone::default()
            .srv("_sip._udp.pool.test", 20, 0, 5002, "b.pool.test")
            .srv("_sip._udp.pool.test", 10, 0, 5001, "a.pool.test")
            .a("a.pool.test", LOOPBACK)
            .a("b.pool.test", LOOPBACK);
        let dns = FakeDns::start(zone, Duration::ZERO).await;
        let layer = transport_layer(&dns).await;
        let uri = SipUri::parse("sip:agent@pool.test").expect("URI");
        let mut targets = layer.peer_for(&uri).await.expect("resolves");
        assert_eq!(
            targets.peer().addr.port(),
            5001,
            "lower priority value first"
        );
        assert_eq!(targets.remaining(), 1);
        let next = targets.next(&layer).await.expect("a second target");
        assert_eq!(next.addr.port(), 5002);
        assert_eq!(targets.peer(), next);
        assert!(targets.next(&layer).await.is_none(), "none left");
    })
    .await;
}

#[tokio::test]
async fn a_name_with_many_targets_is_tried_on_its_first_eight_only() {
    bounded(Duration::from_secs(10), async {
        let mut zone = Zone::default().a("h.pool.test", LOOPBACK);
        for i in 0..12u16 {
            zone = zone.srv("_sip._udp.many.test", 10 + i, 0, 6001 + i, "h.pool.test");
        }
        let dns = FakeDns::start(zone, Duration::ZERO).await;
        let layer = transport_layer(&dns).await;
        let uri = SipUri::parse("sip:agent@many.test").expect("URI");
        let targets = layer.peer_for(&uri).await.expect("resolves");
        assert_eq!(targets.peer().addr.port(), 6001);
        assert_eq!(
            targets.remaining(),
            handoff::sip::transport::MAX_TARGETS - 1,
            "the rest of the first eight, by priority"
        );
    })
    .await;
}

#[tokio::test]
async fn unknown_name_and_sips_are_errors() {
    bounded(Duration::from_secs(10), async {
        let dns = FakeDns::start(Zone::default(), Duration::ZERO).await;
        let layer = transport_layer(&dns).await;
        let uri = SipUri::parse("sip:agent@nowhere.test").expect("URI");
        let e = layer.peer_for(&uri).await.expect_err("no such name");
        assert!(
            matches!(e, PeerError::Resolve(ResolveError::NotFound(_))),
            "{e}"
        );
        let uri = SipUri::parse("sips:agent@127.0.0.1").expect("URI");
        let e = layer.peer_for(&uri).await.expect_err("no TLS");
        assert!(
            matches!(e, PeerError::Resolve(ResolveError::TlsUnsupported)),
            "{e}"
        );
    })
    .await;
}
