//! Transfers over TLS (issue 14, item 1, outbound): the shared transfer scenarios with
//! every leg over TLS (`;transport=tls` destinations), a `sips:` destination found by
//! RFC 3263 (`_sips._tcp` SRV) and verified for the URI's domain with SNI, and a
//! destination whose certificate does not verify: refused, counted, no plaintext.

mod common;

use common::dns::{FakeDns, Zone};
use common::scenarios::count;
use common::scenarios::media::establish_media;
use common::scenarios::transfer::{
    answer_target, expect_notify, expect_target_invite, refer, transfer_rig_with,
};
use common::tls::{test_ca, TestCa};
use common::{bounded, TestUa, Transport, WAIT};
use handoff::sip::message::Method;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

mod over_tls {
    use super::common;
    use common::Transport;

    crate::scenario_tests! {
        Transport::Tls;
        transfer::transfer_to_sip_uri_without_ticket,
        transfer::busy_target_leaves_the_caller_with_the_ai_agent,
        transfer::caller_hangup_mid_transfer_cancels_the_target,
        transfer::redirect_is_followed_to_an_allowed_target,
    }
}

/// A TLS "Zendesk" listening on loopback with a leaf for `names` from `ca`.
async fn tls_zendesk(ca: &TestCa, names: &[&str]) -> TestUa {
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    TestUa::tls_listen(any, ca.leaf(names).server_config()).await
}

/// `sips:support@zendesk.test`: handoff asks `_sips._tcp.zendesk.test` (RFC 3263 4.1),
/// connects to the SRV target with SNI `zendesk.test`, verifies the certificate for
/// `zendesk.test` (the URI's domain, RFC 5922 4.1, not the SRV target's name) against
/// `sip.tls_ca_file`, and the transfer completes over TLS with a `sips:` Contact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_to_a_sips_destination_by_srv_verifies_the_domain() {
    bounded(Duration::from_secs(20), async {
        let zendesk = tls_zendesk(test_ca(), &["zendesk.test"]).await;
        let port = zendesk.local_addr().port();
        let zone = Zone::default()
            .srv("_sips._tcp.zendesk.test", 10, 0, port, "sbc1.zendesk.test")
            .a("sbc1.zendesk.test", Ipv4Addr::LOCALHOST);
        let dns = FakeDns::start(zone, Duration::ZERO).await;
        let target = "sips:support@zendesk.test";
        let extra = format!(
            "{}\n{}transfer.destination = [{{ name = \"zendesk\", uri = \"{target}\" }}]",
            dns.config_key(),
            common::tls::ca_key()
        );
        let mut tr = transfer_rig_with(Transport::Udp, &extra, zendesk).await;
        let mut m = establish_media(&mut tr.rig).await;
        let refer_msg = refer(&mut tr, &mut m, &format!("<{target}>"), 202).await;
        let (frag, _) = expect_notify(&mut tr, &m, &refer_msg).await;
        assert_eq!(frag, "SIP/2.0 100 Trying\r\n");
        let inv = expect_target_invite(&mut tr).await;
        assert_eq!(inv.msg.request_uri(), Some(target));
        let via = inv.msg.header("Via").expect("Via");
        assert!(via.starts_with("SIP/2.0/TLS "), "{via}");
        // RFC 3261 8.1.1.8: a sips: Request-URI, a sips: Contact.
        let contact = inv.msg.header("Contact").expect("Contact");
        assert!(contact.starts_with("<sips:"), "{contact}");
        assert_eq!(tr.zendesk.sni_seen(), [Some("zendesk.test".to_owned())]);
        answer_target(&mut tr, &inv).await;
        let (frag, _) = expect_notify(&mut tr, &m, &refer_msg).await;
        assert_eq!(frag, "SIP/2.0 200 OK\r\n");
        let bye = tr.rig.agent.expect_request(Method::Bye, WAIT).await;
        tr.rig.agent.respond(&bye, 200, &[], None).await;
        assert_eq!(count(&tr.rig.server, |x| &x.transfers_succeeded_total), 1);
        assert_eq!(
            count(&tr.rig.server, |x| &x.sip_tls_connect_failures_total),
            0
        );
    })
    .await;
}

/// The destination presents a certificate from a CA handoff does not trust: the
/// handshake is refused, the transfer fails (NOTIFY with an error, counted), nothing
/// goes in plaintext, and the caller stays with the AI agent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sips_destination_with_a_certificate_from_another_ca_is_refused() {
    bounded(Duration::from_secs(20), async {
        let stranger = TestCa::new("not trusted by handoff");
        let mut zendesk = tls_zendesk(&stranger, &["127.0.0.1"]).await;
        let port = zendesk.local_addr().port();
        let target = format!("sips:support@127.0.0.1:{port}");
        let extra =
            format!("transfer.destination = [{{ name = \"zendesk\", uri = \"{target}\" }}]");
        let mut tr =
            transfer_rig_with(Transport::Udp, &extra, TestUa::agent(Transport::Udp).await).await;
        let mut m = establish_media(&mut tr.rig).await;
        let refer_msg = refer(&mut tr, &mut m, &format!("<{target}>"), 202).await;
        let (frag, _) = expect_notify(&mut tr, &m, &refer_msg).await;
        assert_eq!(frag, "SIP/2.0 100 Trying\r\n");
        let (frag, state) = expect_notify(&mut tr, &m, &refer_msg).await;
        assert!(
            frag.starts_with("SIP/2.0 5") || frag.starts_with("SIP/2.0 4"),
            "final NOTIFY {frag:?}"
        );
        assert!(state.starts_with("terminated"), "{state}");
        assert_eq!(
            count(&tr.rig.server, |x| &x.sip_tls_connect_failures_total),
            1
        );
        assert_eq!(count(&tr.rig.server, |x| &x.transfers_failed_total), 1);
        assert_eq!(count(&tr.rig.server, |x| &x.transfers_succeeded_total), 0);
        // The destination never saw a completed handshake, nor any SIP.
        assert_eq!(zendesk.accepted_connections().await, 0);
        zendesk
            .expect_silence(
                "any request at the untrusted destination",
                Duration::from_millis(200),
                |_| true,
            )
            .await;
        // The caller is still with the AI agent: the AI agent hangs up normally.
        let bye = tr.rig.caller.bye(&mut m.call.caller_dlg);
        tr.rig.caller.send(&bye).await;
        tr.rig
            .caller
            .expect_response_to(Method::Bye, 200, WAIT)
            .await;
    })
    .await;
}

/// A `;transport=tls` destination with a certificate for another name: refused too
/// (hostname verification, not only the chain).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_destination_whose_certificate_names_another_host_is_refused() {
    bounded(Duration::from_secs(20), async {
        let zendesk = tls_zendesk(test_ca(), &["elsewhere.test"]).await;
        let port = zendesk.local_addr().port();
        let target = format!("sip:support@127.0.0.1:{port};transport=tls");
        let extra = format!(
            "{}transfer.destination = [{{ name = \"zendesk\", uri = \"{target}\" }}]",
            common::tls::ca_key()
        );
        let mut tr = transfer_rig_with(Transport::Udp, &extra, zendesk).await;
        let mut m = establish_media(&mut tr.rig).await;
        let refer_msg = refer(&mut tr, &mut m, &format!("<{target}>"), 202).await;
        expect_notify(&mut tr, &m, &refer_msg).await;
        let (frag, _) = expect_notify(&mut tr, &m, &refer_msg).await;
        assert!(!frag.starts_with("SIP/2.0 2"), "final NOTIFY {frag:?}");
        assert_eq!(
            count(&tr.rig.server, |x| &x.sip_tls_connect_failures_total),
            1
        );
        assert_eq!(count(&tr.rig.server, |x| &x.transfers_failed_total), 1);
    })
    .await;
}

/// A destination that asks for a client certificate (mutual TLS) gets handoff's own
/// (`sip.tls_cert`, the listener's pair); the transfer completes. Without a
/// certificate of its own handoff cannot satisfy it: the transfer fails, counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destination_asking_for_a_client_certificate_gets_handoffs_own() {
    bounded(Duration::from_secs(30), async {
        let mtls = |_| {
            let any = SocketAddr::from(([127, 0, 0, 1], 0));
            let config = test_ca()
                .leaf(&["127.0.0.1"])
                .server_config_requiring_client(test_ca());
            TestUa::tls_listen(any, config)
        };
        // handoff with a TLS listener (and so a certificate): accepted.
        let zendesk = mtls(()).await;
        let target = format!("sips:support@127.0.0.1:{}", zendesk.local_addr().port());
        let extra =
            format!("transfer.destination = [{{ name = \"zendesk\", uri = \"{target}\" }}]");
        let mut tr = transfer_rig_with(Transport::Tls, &extra, zendesk).await;
        let mut m = establish_media(&mut tr.rig).await;
        let refer_msg = refer(&mut tr, &mut m, &format!("<{target}>"), 202).await;
        expect_notify(&mut tr, &m, &refer_msg).await;
        let inv = expect_target_invite(&mut tr).await;
        answer_target(&mut tr, &inv).await;
        let (frag, _) = expect_notify(&mut tr, &m, &refer_msg).await;
        assert_eq!(frag, "SIP/2.0 200 OK\r\n");

        // handoff without a certificate (no listener, only tls_ca_file): refused.
        let zendesk = mtls(()).await;
        let target = format!("sips:support@127.0.0.1:{}", zendesk.local_addr().port());
        let extra = format!(
            "{}transfer.destination = [{{ name = \"zendesk\", uri = \"{target}\" }}]",
            common::tls::ca_key()
        );
        let mut tr = transfer_rig_with(Transport::Udp, &extra, zendesk).await;
        let mut m = establish_media(&mut tr.rig).await;
        let refer_msg = refer(&mut tr, &mut m, &format!("<{target}>"), 202).await;
        expect_notify(&mut tr, &m, &refer_msg).await;
        // TLS 1.3: the client's side of the handshake is done before the server
        // refuses it, so the INVITE is lost with the connection and Timer B (3.2 s
        // here) ends the attempt.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let (frag, _) = expect_notify(&mut tr, &m, &refer_msg).await;
        assert!(!frag.starts_with("SIP/2.0 2"), "final NOTIFY {frag:?}");
        assert_eq!(count(&tr.rig.server, |x| &x.transfers_failed_total), 1);
        assert_eq!(tr.zendesk.accepted_connections().await, 0);
    })
    .await;
}

/// A `sips:` PSTN gateway: a `tel:` target is dialled as `sips:<number>@gateway`
/// over TLS, never downgraded to `sip:`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tel_target_through_a_sips_gateway_stays_sips() {
    bounded(Duration::from_secs(20), async {
        let gateway = tls_zendesk(test_ca(), &["127.0.0.1"]).await;
        let port = gateway.local_addr().port();
        let extra = format!(
            "{}transfer.pstn_gateway = \"sips:127.0.0.1:{port}\"",
            common::tls::ca_key()
        );
        let mut tr = transfer_rig_with(Transport::Udp, &extra, gateway).await;
        let mut m = establish_media(&mut tr.rig).await;
        let refer_msg = refer(&mut tr, &mut m, "<tel:+14155550199>", 202).await;
        expect_notify(&mut tr, &m, &refer_msg).await;
        let inv = expect_target_invite(&mut tr).await;
        let ruri = inv.msg.request_uri().unwrap_or_default().to_owned();
        assert!(ruri.starts_with("sips:+14155550199@127.0.0.1"), "{ruri}");
        let via = inv.msg.header("Via").expect("Via");
        assert!(via.starts_with("SIP/2.0/TLS "), "{via}");
        tr.zendesk.respond(&inv, 603, &[], None).await;
        let (frag, _) = expect_notify(&mut tr, &m, &refer_msg).await;
        assert_eq!(frag, "SIP/2.0 603 Decline\r\n");
    })
    .await;
}
