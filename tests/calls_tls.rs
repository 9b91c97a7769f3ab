//! SIP over TLS (issue 14, item 1): calls with the carrier connecting to handoff's TLS
//! listener and handoff connecting to a TLS AI agent (certificates from a test CA
//! made in the test), the shared scenarios of `common::scenarios` over TLS, and the
//! peers that cannot or will not do TLS: refused, counted, handoff unharmed.

mod common;

use common::scenarios::{bye_from_caller, count, establish};
use common::tls::{test_ca, TestCa};
use common::{bounded, handoff_addr, InviteOpts, Rig, TestUa, Transport, WAIT};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

scenario_tests! {
    Transport::Tls;
    calls::basic_call_with_bye_from_caller,
    calls::basic_call_with_bye_from_ai_agent,
    calls::cancel_before_answer_gets_487_and_cancels_ai_leg,
    calls::ai_agent_busy_486_reaches_caller_and_is_acked,
    calls::quiet_call_outlives_tcp_idle_timeout,
    mid_call::caller_hold_reinvite_is_relayed_with_sdp_and_answer,
    mid_call::ai_agent_reinvite_is_relayed_to_caller,
    requests::options_gets_200_with_allow_and_supported,
    requests::retransmitted_invite_is_absorbed,
    media::rtp_flows_both_ways_intact_and_in_order,
}

/// Both legs say TLS: our Via on the AI leg, our Contact on both (`;transport=tls`,
/// a `sip:` dialog), and the in-dialog BYE comes back over the caller's connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_legs_carry_tls_via_and_contact() {
    bounded(Duration::from_secs(20), async {
        let mut rig = Rig::new(Transport::Tls, "").await;
        let mut call = establish(&mut rig, InviteOpts::default()).await;
        let ai = &call.ai_invite.msg;
        let via = ai.header("Via").expect("Via");
        assert!(via.starts_with("SIP/2.0/TLS "), "{via}");
        let contact = ai.header("Contact").expect("Contact");
        assert!(contact.ends_with(";transport=tls>"), "{contact}");
        let ok = call.caller_ok.header("Contact").expect("Contact on 200");
        assert!(ok.ends_with(";transport=tls>"), "{ok}");
        // One connection each way, reused for the whole call.
        assert_eq!(rig.agent.accepted_connections().await, 1);
        // The carrier's connection and ours to the AI agent.
        let open = rig
            .server
            .metrics()
            .tls_connections
            .load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(open, 2);
        bye_from_caller(&mut rig, &mut call).await;
    })
    .await;
}

/// A client speaking plain SIP to the TLS port is no TLS client: the connection is
/// closed, the failure counted, and a TLS call goes through afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_sip_to_the_tls_port_is_refused_and_counted() {
    bounded(Duration::from_secs(20), async {
        let mut rig = Rig::new(Transport::Tls, "").await;
        let tls_port = handoff_addr(&rig.server, Transport::Tls);
        let mut plain = TcpStream::connect(tls_port).await.expect("connect");
        plain
            .write_all(b"OPTIONS sip:handoff@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:9;branch=z9hG4bK1\r\nContent-Length: 0\r\n\r\n")
            .await
            .expect("write");
        assert_closed_without_sip(&mut plain).await;
        assert!(
            common::eventually(WAIT, || count(&rig.server, |m| &m
                .sip_tls_handshakes_failed_total)
                == 1)
            .await
        );
        let mut call = establish(&mut rig, InviteOpts::default()).await;
        bye_from_caller(&mut rig, &mut call).await;
    })
    .await;
}

/// A ClientHello offering TLS 1.0 only (no supported_versions, legacy version 3.1):
/// refused with an alert, counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_1_0_client_hello_is_refused_and_counted() {
    bounded(Duration::from_secs(20), async {
        let mut rig = Rig::new(Transport::Tls, "").await;
        let mut old = TcpStream::connect(handoff_addr(&rig.server, Transport::Tls))
            .await
            .expect("connect");
        old.write_all(&tls10_client_hello()).await.expect("write");
        let mut buf = vec![0u8; 64];
        let n = tokio::time::timeout(WAIT, old.read(&mut buf))
            .await
            .expect("an answer or a close in time")
            .unwrap_or(0);
        // An alert record (21), or the connection closed: never a handshake going on.
        assert!(n == 0 || buf[0] == 21, "got {:?}", &buf[..n]);
        assert!(
            common::eventually(WAIT, || count(&rig.server, |m| &m
                .sip_tls_handshakes_failed_total)
                == 1)
            .await
        );
        let mut call = establish(&mut rig, InviteOpts::default()).await;
        bye_from_caller(&mut rig, &mut call).await;
    })
    .await;
}

/// A client that does not trust handoff's certificate (another CA) gives up the
/// handshake; handoff counts it and carries on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_not_trusting_handoff_fails_the_handshake_counted() {
    bounded(Duration::from_secs(20), async {
        let mut rig = Rig::new(Transport::Tls, "").await;
        let stranger = TestCa::new("some other CA");
        let got = TestUa::try_tls_connect(
            handoff_addr(&rig.server, Transport::Tls),
            stranger.client_config(),
        )
        .await;
        assert!(got.is_err(), "the handshake succeeded with an untrusted CA");
        assert!(
            common::eventually(WAIT, || count(&rig.server, |m| &m
                .sip_tls_handshakes_failed_total)
                == 1)
            .await
        );
        let mut call = establish(&mut rig, InviteOpts::default()).await;
        bye_from_caller(&mut rig, &mut call).await;
    })
    .await;
}

/// A connection that never starts its handshake is closed after
/// `sip.tls_handshake_timeout_ms`, counted; while it waits it holds a place under the
/// connection caps, so a source cannot pile up stalled handshakes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_handshakes_time_out_and_count_against_the_caps() {
    bounded(Duration::from_secs(20), async {
        let extra = "sip.tls_handshake_timeout_ms = 800\nsip.tcp_max_connections_per_ip = 2";
        let rig = Rig::new(Transport::Tls, extra).await;
        let addr = handoff_addr(&rig.server, Transport::Tls);
        // The carrier's own connection holds one place; one stall takes the other.
        let mut stalled = TcpStream::connect(addr).await.expect("connect");
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut over = TcpStream::connect(addr).await.expect("connect");
        assert_closed_without_sip(&mut over).await;
        assert_eq!(
            count(&rig.server, |m| &m.sip_tcp_connections_refused_total),
            1
        );
        assert_closed_without_sip(&mut stalled).await;
        assert!(
            common::eventually(WAIT, || count(&rig.server, |m| &m
                .sip_tls_handshakes_failed_total)
                == 1)
            .await
        );
        // Its place is free again.
        let again = TestUa::tls_connect(addr, test_ca().client_config()).await;
        drop(again);
    })
    .await;
}

/// Wait for the far end to close `s`, and see nothing that looks like SIP meanwhile.
async fn assert_closed_without_sip(s: &mut TcpStream) {
    let mut buf = vec![0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf)).await {
            Err(_) => panic!("handoff kept the connection open"),
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(n)) => assert!(
                !buf[..n].starts_with(b"SIP/2.0"),
                "handoff answered plain SIP on its TLS port"
            ),
        }
    }
}

/// A TLS 1.0 ClientHello: record version 3.1, client_version 3.1, one TLS 1.0 cipher
/// suite (TLS_RSA_WITH_AES_128_CBC_SHA), no extensions.
fn tls10_client_hello() -> Vec<u8> {
    let mut body = vec![0x03, 0x01];
    body.extend_from_slice(&[7u8; 32]); // random
    body.push(0); // session id
    body.extend_from_slice(&[0x00, 0x02, 0x00, 0x2f]); // cipher suites
    body.extend_from_slice(&[0x01, 0x00]); // compression: null
    let mut hs = vec![0x01, 0x00, 0x00, body.len() as u8];
    hs.extend_from_slice(&body);
    let mut rec = vec![0x16, 0x03, 0x01, 0x00, hs.len() as u8];
    rec.extend_from_slice(&hs);
    rec
}

/// The leaf handoff presents to a new TLS connection at `addr`, as DER.
async fn presented_leaf(addr: std::net::SocketAddr) -> Vec<u8> {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
    let tls = tokio_rustls::TlsConnector::from(test_ca().client_config())
        .connect(name, tcp)
        .await
        .expect("handshake");
    let leaf = tls.get_ref().1.peer_certificates().expect("certificates")[0].to_vec();
    leaf
}

fn der_of(pem: &str) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
        .expect("PEM")
        .to_vec()
}

/// A reload (what SIGHUP does) swaps the certificate for new handshakes while the call
/// on a connection made before it goes on; a pair that cannot be used is refused,
/// counted, and the one in use stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_swaps_the_certificate_without_dropping_the_call() {
    bounded(Duration::from_secs(20), async {
        let first = test_ca().leaf(&["127.0.0.1"]);
        let (cert, key) = first.write("reload");
        let extra = format!(
            "sip.tls_cert = {:?}\nsip.tls_key = {:?}",
            cert.display().to_string(),
            key.display().to_string()
        );
        let mut rig = Rig::new(Transport::Tls, &extra).await;
        let addr = handoff_addr(&rig.server, Transport::Tls);
        let mut call = establish(&mut rig, InviteOpts::default()).await;
        assert_eq!(presented_leaf(addr).await, der_of(&first.cert_pem));

        let second = test_ca().leaf(&["127.0.0.1"]);
        std::fs::write(&cert, &second.cert_pem).expect("write");
        std::fs::write(&key, &second.key_pem).expect("write");
        assert!(rig.server.reload_tls().expect("reload"));
        assert_eq!(presented_leaf(addr).await, der_of(&second.cert_pem));
        assert_eq!(count(&rig.server, |m| &m.sip_tls_cert_reloads_total), 1);

        // A key that is not the certificate's: refused, the second pair stays.
        std::fs::write(&key, &first.key_pem).expect("write");
        let err = rig.server.reload_tls().expect_err("mismatched pair");
        assert!(err.to_string().contains("does not match"), "{err}");
        assert_eq!(
            count(&rig.server, |m| &m.sip_tls_cert_reload_failures_total),
            1
        );
        assert_eq!(presented_leaf(addr).await, der_of(&second.cert_pem));

        // The call made before the reloads, on its old connection, ends normally.
        bye_from_caller(&mut rig, &mut call).await;
    })
    .await;
}

/// Mutual TLS per trunk: with `tls_client_ca` on the trunk of 127.0.0.1, a client
/// without a certificate is refused (counted, nothing answered); one presenting a
/// certificate from that CA makes a call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trunk_with_tls_client_ca_needs_a_client_certificate() {
    bounded(Duration::from_secs(20), async {
        let extra = format!(
            "\n[[trunk]]\nname = \"carrier\"\nsources = [\"127.0.0.1\"]\ntls_client_ca = {:?}\n\n[[route]]\ndefault = true\norg_id = \"org-test\"\nagent_id = \"agent-test\"\nai_agent_uri = \"{{ai}}\"\n",
            common::tls::ca_file().display().to_string()
        );
        // The rig's own carrier connects without a client certificate.
        let mut rig = Rig::new(Transport::Tls, &extra).await;
        let addr = handoff_addr(&rig.server, Transport::Tls);
        // The server's refusal closes it (TLS 1.3: after the client's own Finished).
        assert!(rig.caller.wait_closed(WAIT).await, "no client certificate, still open");
        assert!(
            common::eventually(WAIT, || count(&rig.server, |m| &m
                .sip_tls_handshakes_failed_total)
                == 1)
            .await
        );
        let leaf = test_ca().leaf(&["carrier.test"]);
        rig.caller = TestUa::tls_connect(addr, test_ca().client_config_presenting(&leaf)).await;
        let mut call = establish(&mut rig, InviteOpts::default()).await;
        bye_from_caller(&mut rig, &mut call).await;
    })
    .await;
}

/// Keep-alive as on TCP (RFC 5626 4.4.1): a double-CRLF ping inside TLS gets a CRLF pong.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn double_crlf_ping_over_tls_gets_a_pong() {
    bounded(Duration::from_secs(20), async {
        let rig = Rig::new(Transport::Tls, "").await;
        let addr = handoff_addr(&rig.server, Transport::Tls);
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
        let mut tls = tokio_rustls::TlsConnector::from(test_ca().client_config())
            .connect(name, tcp)
            .await
            .expect("handshake");
        tls.write_all(b"\r\n\r\n").await.expect("ping");
        let mut pong = [0u8; 2];
        tokio::time::timeout(WAIT, tls.read_exact(&mut pong))
            .await
            .expect("a pong in time")
            .expect("read");
        assert_eq!(&pong, b"\r\n");
    })
    .await;
}

/// TCP and TLS share the connection caps, so over one an idle SIP/TCP connection with
/// no dialog gives way to a new TLS connection (and the other way round).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_tcp_connection_gives_way_to_a_tls_one() {
    bounded(Duration::from_secs(20), async {
        // The carrier's TLS connection and one idle TCP connection fill the cap.
        let extra = "sip.tcp_max_connections_per_ip = 2";
        let mut rig = Rig::new(Transport::Tls, extra).await;
        let mut idle_tcp = TcpStream::connect(handoff_addr(&rig.server, Transport::Tcp))
            .await
            .expect("connect");
        tokio::time::sleep(Duration::from_millis(1200)).await;
        // The carrier is busy a moment ago: not the one to go.
        rig.caller.barrier().await;
        let newcomer = TestUa::tls_connect(
            handoff_addr(&rig.server, Transport::Tls),
            test_ca().client_config(),
        )
        .await;
        assert_closed_without_sip(&mut idle_tcp).await;
        assert_eq!(
            count(&rig.server, |m| &m.sip_tcp_connections_evicted_total),
            1
        );
        drop(newcomer);
        let mut call = establish(&mut rig, InviteOpts::default()).await;
        bye_from_caller(&mut rig, &mut call).await;
    })
    .await;
}
