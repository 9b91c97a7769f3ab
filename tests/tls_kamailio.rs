//! Interop with an independent TLS stack (issue 14): Kamailio's TLS module (OpenSSL
//! underneath) as handoff's TLS peer on one leg, in both roles.
//! - Kamailio as TLS client: the caller's UA over UDP to Kamailio, Kamailio over TLS
//!   to handoff, verifying handoff's certificate against the test CA; a whole call
//!   with a transfer, and the BYE through Kamailio. With handoff's certificate from a
//!   CA Kamailio does not trust, Kamailio refuses the handshake and no call starts.
//! - Kamailio as TLS server: handoff transfers to a `sips:` destination that is
//!   Kamailio, which relays over UDP to the far UA; handoff verifies Kamailio's
//!   certificate with `sip.tls_ca_file`. A certificate from another CA, or for
//!   another name, is refused: the transfer fails and nothing reaches the far UA.
//!
//! Needs `kamailio` and `kamailio-tls-modules` (Debian): `scripts/install-test-deps.sh`.

mod common;

use common::build::AI_SDP;
use common::kamailio::{call, hang_up, send_in_dialog, wait_up, EDGE_WAIT};
use common::kamailio_tls::{KamTls, KamTlsOpts};
use common::scenarios::count;
use common::scenarios::media::establish_media;
use common::scenarios::transfer::{
    answer_target, expect_notify, expect_target_invite, refer, transfer_rig_with,
};
use common::tls::{handoff_keys, test_ca, Leaf, TestCa};
use common::{bounded, start_handoff, InviteOpts, TestUa, Transport, WAIT};
use handoff::sip::message::Method;
use std::time::Duration;

/// Kamailio as the TLS client in front of handoff (its TLS server side unused but
/// present), trusting `ca`.
fn kamailio_in_front(handoff_tls: std::net::SocketAddr, ca: &TestCa) -> KamTls {
    let leaf = ca.leaf(&["127.0.0.1"]);
    KamTls::start(&KamTlsOpts {
        handoff_tls: Some(handoff_tls),
        far_udp: None,
        server: &leaf,
        ca_pem: &ca.pem(),
        verify_client: false,
        client_ca_pem: None,
        client_cert: None,
    })
}

/// Kamailio as the TLS server behind handoff, presenting `leaf`, relaying to `far`.
fn kamailio_behind(far: std::net::SocketAddr, leaf: &Leaf) -> KamTls {
    KamTls::start(&KamTlsOpts {
        handoff_tls: None,
        far_udp: Some(far),
        server: leaf,
        ca_pem: &test_ca().pem(),
        verify_client: false,
        client_ca_pem: None,
        client_cert: None,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kamailio_as_tls_client_carries_a_call_with_a_transfer() {
    let mut agent = TestUa::agent(Transport::Udp).await;
    let mut zendesk = TestUa::agent(Transport::Udp).await;
    let target = format!("sip:support@{}", zendesk.local_addr());
    let extra = format!(
        "{}transfer.destination = [{{ name = \"zendesk\", uri = \"{target}\" }}]",
        handoff_keys()
    );
    let server = start_handoff(Transport::Udp, agent.local_addr().port(), &extra).await;
    let mut kam = kamailio_in_front(server.tls_addrs()[0], test_ca());
    let edge = kam.udp;
    let mut caller = TestUa::carrier(Transport::Udp, edge).await;
    bounded(Duration::from_secs(60), async {
        wait_up(&mut kam.kam, &mut caller).await;
        let mut c = call(&mut caller, &mut agent, edge).await;
        // The caller's leg reached handoff over TLS: Kamailio's Record-Route for
        // handoff's side says so, and handoff holds Kamailio's TLS connection.
        assert!(c.route.contains("transport=tls"), "{}", c.route);
        assert!(
            server
                .metrics()
                .tls_connections
                .load(std::sync::atomic::Ordering::Relaxed)
                >= 1
        );
        assert_eq!(count(&server, |m| &m.sip_tls_handshakes_failed_total), 0);

        // The AI agent transfers the caller to "Zendesk".
        let mut refer_req = agent.in_dialog(&mut c.agent_dlg, Method::Refer, None);
        refer_req
            .push_checked("Refer-To", &format!("<{target}>"))
            .expect("header");
        agent.send(&refer_req).await;
        agent.expect_response_to(Method::Refer, 202, WAIT).await;
        let n = agent.expect_request(Method::Notify, WAIT).await;
        assert_eq!(n.msg.body(), b"SIP/2.0 100 Trying\r\n".as_slice());
        agent.respond(&n, 200, &[], None).await;
        let inv = zendesk.expect_request(Method::Invite, WAIT).await;
        assert_eq!(
            inv.msg.header("X-OPENCX-SESSION-ID"),
            Some(c.session_id.as_str())
        );
        let target_ok = zendesk.respond(&inv, 200, &[], Some(AI_SDP)).await;
        zendesk.expect_request(Method::Ack, WAIT).await;
        let n = agent.expect_request(Method::Notify, WAIT).await;
        assert_eq!(n.msg.body(), b"SIP/2.0 200 OK\r\n".as_slice());
        agent.respond(&n, 200, &[], None).await;
        let ai_bye = agent.expect_request(Method::Bye, WAIT).await;
        agent.respond(&ai_bye, 200, &[], None).await;
        assert_eq!(count(&server, |m| &m.transfers_succeeded_total), 1);

        // The caller hangs up through Kamailio (over TLS to handoff); handoff ends
        // the transferred leg.
        let bye = caller.bye(&mut c.dlg);
        send_in_dialog(&caller, edge, bye, &c.route).await;
        caller.expect_response_to(Method::Bye, 200, EDGE_WAIT).await;
        let target_bye = zendesk.expect_request(Method::Bye, WAIT).await;
        assert_eq!(
            target_bye.msg.call_id(),
            target_ok.call_id(),
            "the BYE ends the transferred leg"
        );
        zendesk.respond(&target_bye, 200, &[], None).await;
        assert!(common::eventually(WAIT, || server.active_calls() == 0).await);
        // And a second call over the same TLS connection, hung up by the caller.
        let mut c2 = call(&mut caller, &mut agent, edge).await;
        hang_up(&mut caller, &mut agent, edge, &mut c2).await;
    })
    .await;
    drop(kam);
}

/// Kamailio verifies handoff's certificate: one from a CA it does not trust fails
/// the handshake (OpenSSL's verification, not ours), so no INVITE reaches handoff
/// and the caller gets Kamailio's failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kamailio_refuses_a_handoff_certificate_it_does_not_trust() {
    let mut agent = TestUa::agent(Transport::Udp).await;
    let server = start_handoff(Transport::Udp, agent.local_addr().port(), &handoff_keys()).await;
    let stranger = TestCa::new("not handoff's CA");
    let mut kam = kamailio_in_front(server.tls_addrs()[0], &stranger);
    let edge = kam.udp;
    let mut caller = TestUa::carrier(Transport::Udp, edge).await;
    bounded(Duration::from_secs(30), async {
        wait_up(&mut kam.kam, &mut caller).await;
        let invite = caller.invite(&InviteOpts::default());
        caller.send(&invite).await;
        let fin = caller
            .expect(
                "Kamailio's final failure",
                Duration::from_secs(8),
                |m| m.status().is_some_and(|s| s >= 300),
                |m| m.status().is_some_and(|s| s < 200),
            )
            .await;
        assert!(
            fin.msg.status().is_some_and(|s| s >= 400),
            "{:?}",
            fin.msg.status()
        );
        agent
            .expect_silence(
                "an AI leg without a verified TLS hop",
                Duration::from_millis(200),
                |m| m.method() == Some(&Method::Invite),
            )
            .await;
        assert_eq!(count(&server, |m| &m.calls_started_total), 0);
        assert!(
            common::eventually(WAIT, || count(&server, |m| &m
                .sip_tls_handshakes_failed_total)
                >= 1)
            .await,
            "handoff saw the handshake Kamailio aborted"
        );
    })
    .await;
    let log = kam.kam.log();
    drop(kam);
    assert!(
        log.to_ascii_lowercase().contains("certificate"),
        "Kamailio's log names the certificate failure:\n{log}"
    );
}

/// Transfer to `sips:support@<Kamailio>`: handoff connects over TLS, verifies
/// Kamailio's certificate for 127.0.0.1 against `sip.tls_ca_file`, and Kamailio
/// relays to the far UA over UDP; the whole transfer and the caller's BYE go through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_to_kamailio_as_tls_server_verifies_its_certificate() {
    let far = TestUa::agent(Transport::Udp).await;
    let leaf = test_ca().leaf(&["127.0.0.1"]);
    let kam = kamailio_behind(far.local_addr(), &leaf);
    let target = format!("sips:support@{}", kam.tls);
    let extra = format!(
        "{}transfer.destination = [{{ name = \"zendesk\", uri = \"{target}\" }}]",
        handoff_keys()
    );
    let mut tr = transfer_rig_with(Transport::Udp, &extra, far).await;
    bounded(Duration::from_secs(60), async {
        wait_tls_up(&kam).await;
        let mut m = establish_media(&mut tr.rig).await;
        let refer_msg = refer(&mut tr, &mut m, &format!("<{target}>"), 202).await;
        let (frag, _) = expect_notify(&mut tr, &m, &refer_msg).await;
        assert_eq!(frag, "SIP/2.0 100 Trying\r\n");
        let inv = expect_target_invite(&mut tr).await;
        // Through Kamailio: its Via on top, handoff's TLS Via under it.
        let vias: Vec<&str> = inv.msg.header_values("Via").collect();
        assert!(
            vias.iter().any(|v| v.starts_with("SIP/2.0/TLS ")),
            "{vias:?}"
        );
        assert_eq!(inv.msg.request_uri(), Some(target.as_str()));
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
        // The caller hangs up: handoff's BYE reaches the far UA through Kamailio.
        let bye = tr.rig.caller.bye(&mut m.call.caller_dlg);
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

/// A transfer to Kamailio whose certificate handoff must refuse: the transfer fails
/// (final NOTIFY not 2xx), the failure is counted, nothing reaches the far UA.
async fn transfer_to_kamailio_is_refused(leaf: &Leaf, ca_file: Option<&std::path::Path>) {
    let far = TestUa::agent(Transport::Udp).await;
    let kam = kamailio_behind(far.local_addr(), leaf);
    let target = format!("sips:support@{}", kam.tls);
    let mut extra = format!(
        "{}transfer.destination = [{{ name = \"zendesk\", uri = \"{target}\" }}]\n",
        handoff_keys()
    );
    if let Some(ca) = ca_file {
        extra.push_str(&format!(
            "sip.tls_ca_file = {:?}\n",
            ca.display().to_string()
        ));
    }
    let mut tr = transfer_rig_with(Transport::Udp, &extra, far).await;
    bounded(Duration::from_secs(40), async {
        wait_tls_up(&kam).await;
        let mut m = establish_media(&mut tr.rig).await;
        let refer_msg = refer(&mut tr, &mut m, &format!("<{target}>"), 202).await;
        expect_notify(&mut tr, &m, &refer_msg).await;
        let n = tr.rig.agent.expect_request(Method::Notify, EDGE_WAIT).await;
        let frag = String::from_utf8_lossy(n.msg.body()).into_owned();
        tr.rig.agent.respond(&n, 200, &[], None).await;
        assert!(!frag.starts_with("SIP/2.0 2"), "final NOTIFY {frag:?}");
        assert_eq!(
            count(&tr.rig.server, |x| &x.sip_tls_connect_failures_total),
            1
        );
        assert_eq!(count(&tr.rig.server, |x| &x.transfers_failed_total), 1);
        tr.zendesk
            .expect_silence(
                "any request relayed by an unverified Kamailio",
                Duration::from_millis(300),
                |_| true,
            )
            .await;
    })
    .await;
    drop(kam);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kamailio_certificate_from_another_ca_is_refused() {
    let stranger = TestCa::new("not trusted by handoff");
    let leaf = stranger.leaf(&["127.0.0.1"]);
    transfer_to_kamailio_is_refused(&leaf, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kamailio_certificate_for_another_name_is_refused() {
    let leaf = test_ca().leaf(&["elsewhere.test"]);
    transfer_to_kamailio_is_refused(&leaf, None).await;
}

/// handoff's `sip.tls_ca_file` pointing at another CA than the one that signed
/// Kamailio's certificate: refused as well (the CA file is what decides).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_ca_file_of_another_ca_refuses_kamailio() {
    let other = TestCa::new("another CA");
    let (other_ca_file, _) = Leaf {
        cert_pem: other.pem(),
        key_pem: String::new(),
    }
    .write("other-ca");
    let leaf = test_ca().leaf(&["127.0.0.1"]);
    transfer_to_kamailio_is_refused(&leaf, Some(&other_ca_file)).await;
}
