//! Target selection by DNS (RFC 3263), against a fake DNS server on loopback: the
//! 100 Trying does not wait for a slow lookup, an SRV record leads to the AI agent,
//! and a target that refuses the connection is skipped for the next one.

mod common;

use common::build::AI_SDP;
use common::dns::{FakeDns, Zone};
use common::scenarios::{bye_from_caller, establish};
use common::{bounded, handoff_addr, start_handoff, Dialog, InviteOpts, Rig, TestUa, Transport};
use handoff::sip::message::Method;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

const LOOPBACK: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// handoff with its AI agent at `ai_uri`, asking `dns` for host names; the carrier
/// and the agent over `transport`.
async fn rig_with_dns(transport: Transport, agent: TestUa, dns: &FakeDns, ai_uri: &str) -> Rig {
    let extra = format!(
        "{}\n[[route]]\ndefault = true\norg_id = \"org-test\"\nagent_id = \"agent-test\"\nai_agent_uri = \"{ai_uri}\"\n",
        dns.config_key()
    );
    let server = start_handoff(transport, agent.local_addr().port(), &extra).await;
    let caller = TestUa::carrier(transport, handoff_addr(&server, transport)).await;
    Rig {
        server,
        caller,
        agent,
        transport,
    }
}

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
