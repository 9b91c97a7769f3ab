//! Mutual TLS outbound with a client certificate of the destination's own (issue 14,
//! item 2): `tls_client_cert` / `tls_client_key` on a `[[transfer.destination]]` and
//! on a `[[route]]`. Against Kamailio's TLS module with `verify_certificate = yes` on
//! its server (OpenSSL checks our certificate against a partner CA that signed only
//! the destination's certificate, not handoff's listener one), and against
//! handoff's own listener with a trunk's `tls_client_ca`. Connections opened with one
//! identity are never reused by another to the same host.
//!
//! Needs `kamailio` and `kamailio-tls-modules` (Debian): `scripts/install-test-deps.sh`.

mod common;

use common::kamailio::EDGE_WAIT;
use common::kamailio_tls::{KamTls, KamTlsOpts};
use common::scenarios::count;
use common::scenarios::media::establish_media;
use common::scenarios::transfer::{
    answer_target, expect_notify, expect_target_invite, refer, transfer_rig_with,
};
use common::tls::{handoff_keys, test_ca, TestCa};
use common::{bounded, start_handoff, InviteOpts, Rig, TestUa, Transport, WAIT};
use handoff::sip::message::Method;
use std::time::Duration;

/// Wait until Kamailio's TLS port accepts connections.
async fn wait_tls_up(kam: &KamTls) {
    let until = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < until {
        if tokio::net::TcpStream::connect(kam.tls).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("kamailio's TLS port never opened:\n{}", kam.kam.log());
}

/// Two destinations on one Kamailio (same address, same name to verify): "partner"
/// with a client certificate from the partner CA Kamailio requires, "other" without
/// (handoff's own listener pair, from the test CA, which Kamailio does not accept).
/// A transfer to "partner" completes; with that call still up (its connection open
/// and verified for the same name), a transfer to "other" must not ride on it: a new
/// connection presents handoff's own certificate, Kamailio refuses it, the transfer
/// fails and nothing reaches the far UA.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destinations_client_certificate_is_presented_and_not_reused_by_another() {
    let partner = TestCa::new("partner CA");
    let client_leaf = partner.leaf(&["handoff.partner.test"]);
    let (client_cert, client_key) = client_leaf.write("partner-client");
    let far = TestUa::agent(Transport::Udp).await;
    let server_leaf = test_ca().leaf(&["127.0.0.1"]);
    let partner_pem = partner.pem();
    let kam = KamTls::start(&KamTlsOpts {
        handoff_tls: None,
        far_udp: Some(far.local_addr()),
        server: &server_leaf,
        ca_pem: &test_ca().pem(),
        verify_client: true,
        client_ca_pem: Some(&partner_pem),
        client_cert: None,
    });
    let partner_uri = format!("sips:support@{}", kam.tls);
    let other_uri = format!("sips:other@{}", kam.tls);
    let extra = format!(
        "{}transfer.destination = [{{ name = \"partner\", uri = \"{partner_uri}\", tls_client_cert = {:?}, tls_client_key = {:?} }}, {{ name = \"other\", uri = \"{other_uri}\" }}]",
        handoff_keys(),
        client_cert.display().to_string(),
        client_key.display().to_string(),
    );
    let mut tr = transfer_rig_with(Transport::Udp, &extra, far).await;
    bounded(Duration::from_secs(60), async {
        wait_tls_up(&kam).await;
        // 1. "partner": our partner certificate is verified by OpenSSL; it completes.
        let mut first = establish_media(&mut tr.rig).await;
        let refer_msg = refer(&mut tr, &mut first, &format!("<{partner_uri}>"), 202).await;
        expect_notify(&mut tr, &first, &refer_msg).await;
        let inv = expect_target_invite(&mut tr).await;
        answer_target(&mut tr, &inv).await;
        let (frag, _) = expect_notify(&mut tr, &first, &refer_msg).await;
        assert_eq!(frag, "SIP/2.0 200 OK\r\n");
        let bye = tr.rig.agent.expect_request(Method::Bye, WAIT).await;
        tr.rig.agent.respond(&bye, 200, &[], None).await;
        assert_eq!(count(&tr.rig.server, |x| &x.transfers_succeeded_total), 1);

        // 2. "other", same host, while the partner connection is up: refused.
        let mut second = establish_media(&mut tr.rig).await;
        let refer_msg = refer(&mut tr, &mut second, &format!("<{other_uri}>"), 202).await;
        expect_notify(&mut tr, &second, &refer_msg).await;
        let n = tr
            .rig
            .agent
            .expect_request(Method::Notify, Duration::from_secs(10))
            .await;
        let frag = String::from_utf8_lossy(n.msg.body()).into_owned();
        tr.rig.agent.respond(&n, 200, &[], None).await;
        assert!(!frag.starts_with("SIP/2.0 2"), "final NOTIFY {frag:?}");
        assert_eq!(count(&tr.rig.server, |x| &x.transfers_failed_total), 1);
        tr.zendesk
            .expect_silence(
                "a request of the identity-less destination on the partner's connection",
                Duration::from_millis(300),
                |m| m.method() == Some(&Method::Invite),
            )
            .await;
        // The first call is still up and ends normally through Kamailio.
        let bye = tr.rig.caller.bye(&mut first.call.caller_dlg);
        tr.rig.caller.send(&bye).await;
        tr.rig
            .caller
            .expect_response_to(Method::Bye, 200, WAIT)
            .await;
        let far_bye = tr.zendesk.expect_request(Method::Bye, EDGE_WAIT).await;
        tr.zendesk.respond(&far_bye, 200, &[], None).await;
    })
    .await;
    drop(kam);
}

/// A `[[route]]` with its own client certificate, the AI agent being another handoff
/// whose trunk requires a client certificate from the partner CA (`tls_client_ca`):
/// the AI leg's handshake presents the route's certificate and the call reaches the
/// far side. Without `tls_client_cert` on the route, handoff's own pair (test CA) is
/// refused and the caller hears a failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_routes_client_certificate_satisfies_a_trunk_with_tls_client_ca() {
    let partner = TestCa::new("partner CA for routes");
    let (ca_file, _) = common::tls::Leaf {
        cert_pem: partner.pem(),
        key_pem: String::new(),
    }
    .write("partner-ca");
    let (client_cert, client_key) = partner.leaf(&["handoff.route.test"]).write("route-client");
    // The "AI agent": a second handoff with a TLS listener, whose one trunk (all of
    // loopback) requires a partner client certificate, and its own AI agent.
    let mut far_agent = TestUa::agent(Transport::Udp).await;
    let far = start_handoff(
        Transport::Udp,
        far_agent.local_addr().port(),
        &format!(
            "{}trunk = [{{ name = \"edge\", sources = [\"127.0.0.0/8\"], tls_client_ca = {:?} }}]",
            handoff_keys(),
            ca_file.display().to_string()
        ),
    )
    .await;
    let far_tls = far.tls_addrs()[0];
    let route = |with_cert: bool| {
        let cert = if with_cert {
            format!(
                "tls_client_cert = {:?}\ntls_client_key = {:?}\n",
                client_cert.display().to_string(),
                client_key.display().to_string()
            )
        } else {
            String::new()
        };
        format!(
            "{}\n[[route]]\ndefault = true\norg_id = \"org-test\"\nagent_id = \"agent-test\"\nai_agent_uri = \"sips:ai@{far_tls}\"\n{cert}",
            handoff_keys()
        )
    };
    bounded(Duration::from_secs(40), async {
        // With the route's certificate: the AI leg reaches the far handoff's AI agent.
        let mut rig = Rig::new(Transport::Udp, &route(true)).await;
        let invite = rig.caller.invite(&InviteOpts::default());
        rig.caller.send(&invite).await;
        let ai = far_agent.expect_request(Method::Invite, EDGE_WAIT).await;
        far_agent.respond(&ai, 486, &[], None).await;
        rig.caller
            .expect(
                "the far side's 486",
                EDGE_WAIT,
                |m| m.status() == Some(486),
                |m| m.status().is_some_and(|s| s < 200),
            )
            .await;
        assert_eq!(count(&far, |m| &m.sip_tls_handshakes_failed_total), 0);

        // Without it: handoff's own pair is not the partner's; refused.
        let mut rig = Rig::new(Transport::Udp, &route(false)).await;
        let invite = rig.caller.invite(&InviteOpts::default());
        rig.caller.send(&invite).await;
        let fin = rig
            .caller
            .expect(
                "a failure for the caller",
                Duration::from_secs(10),
                |m| m.status().is_some_and(|s| s >= 300),
                |m| m.status().is_some_and(|s| s < 200),
            )
            .await;
        assert_ne!(fin.msg.status(), Some(486));
        far_agent
            .expect_silence(
                "an AI leg through an unauthenticated connection",
                Duration::from_millis(200),
                |m| m.method() == Some(&Method::Invite),
            )
            .await;
        assert!(
            common::eventually(WAIT, || count(&far, |m| &m.sip_tls_handshakes_failed_total)
                >= 1)
            .await
        );
    })
    .await;
}

/// `SIGHUP` (`Server::reload_tls`) reads a route's client certificate again: after
/// the files are replaced by a pair the far side does not accept, and the old
/// connection has gone idle and closed, the next AI leg presents the new pair and
/// is refused; the reload is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_routes_client_certificate_is_reloaded() {
    let partner = TestCa::new("partner CA for reload");
    let (ca_file, _) = common::tls::Leaf {
        cert_pem: partner.pem(),
        key_pem: String::new(),
    }
    .write("partner-ca-reload");
    let (client_cert, client_key) = partner.leaf(&["handoff.route.test"]).write("reload-client");
    let mut far_agent = TestUa::agent(Transport::Udp).await;
    let far = start_handoff(
        Transport::Udp,
        far_agent.local_addr().port(),
        &format!(
            "{}trunk = [{{ name = \"edge\", sources = [\"127.0.0.0/8\"], tls_client_ca = {:?} }}]",
            handoff_keys(),
            ca_file.display().to_string()
        ),
    )
    .await;
    let extra = format!(
        "{}sip.tcp_idle_timeout_secs = 1\n\n[[route]]\ndefault = true\norg_id = \"org-test\"\nagent_id = \"agent-test\"\nai_agent_uri = \"sips:ai@{}\"\ntls_client_cert = {:?}\ntls_client_key = {:?}\n",
        handoff_keys(),
        far.tls_addrs()[0],
        client_cert.display().to_string(),
        client_key.display().to_string()
    );
    bounded(Duration::from_secs(40), async {
        let mut rig = Rig::new(Transport::Udp, &extra).await;
        let call = |rig: &mut Rig| rig.caller.invite(&InviteOpts::default());
        let invite = call(&mut rig);
        rig.caller.send(&invite).await;
        let ai = far_agent.expect_request(Method::Invite, EDGE_WAIT).await;
        far_agent.respond(&ai, 486, &[], None).await;
        rig.caller
            .expect_response_to(Method::Invite, 486, EDGE_WAIT)
            .await;

        // The files now hold a pair from a CA the far side does not trust.
        let stranger = TestCa::new("stranger").leaf(&["handoff.route.test"]);
        std::fs::write(&client_cert, &stranger.cert_pem).expect("write");
        std::fs::write(&client_key, &stranger.key_pem).expect("write");
        let before = count(&rig.server, |m| &m.sip_tls_cert_reloads_total);
        rig.server.reload_tls().expect("reload");
        // The listener's pair and the route's.
        assert_eq!(
            count(&rig.server, |m| &m.sip_tls_cert_reloads_total),
            before + 2
        );
        // The old connection closes when idle (1 s here); the next one presents the
        // new pair, which the far side refuses.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let invite = call(&mut rig);
        rig.caller.send(&invite).await;
        far_agent
            .expect_silence(
                "an AI leg presenting the reloaded, untrusted certificate",
                Duration::from_secs(2),
                |m| m.method() == Some(&Method::Invite),
            )
            .await;
        assert!(
            common::eventually(WAIT, || count(&far, |m| &m.sip_tls_handshakes_failed_total)
                >= 1)
            .await
        );
    })
    .await;
}
