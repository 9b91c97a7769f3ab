//! `sips:` only over TLS (issue 14, item 3; RFC 5630 3.1, RFC 3261 26.2.2): a request
//! whose Request-URI is `sips:` that arrives over UDP or TCP is refused with 416 and
//! starts nothing; over TLS it is taken. Outbound, a `sips:` AI agent is reached over
//! TLS only: the first bytes on the wire are a TLS handshake, never SIP in the clear.

mod common;

use common::scenarios::count;
use common::{bounded, InviteOpts, Rig, Transport, WAIT};
use handoff::sip::message::Method;
use std::time::Duration;
use tokio::io::AsyncReadExt;

/// The carrier's INVITE with its Request-URI turned `sips:`.
fn sips_invite(rig: &Rig) -> handoff::sip::message::Message {
    let invite = rig.caller.invite(&InviteOpts::default());
    let text = String::from_utf8(invite.to_bytes().to_vec()).expect("utf-8");
    let text = text.replacen("INVITE sip:", "INVITE sips:", 1);
    handoff::sip::message::parse(bytes::Bytes::from(text)).expect("parses")
}

async fn sips_over_plain_is_refused(transport: Transport) {
    let mut rig = Rig::new(transport, "").await;
    let invite = sips_invite(&rig);
    assert!(invite.request_uri().is_some_and(|u| u.starts_with("sips:")));
    rig.caller.send(&invite).await;
    rig.caller
        .expect_response_to(Method::Invite, 416, WAIT)
        .await;
    rig.agent
        .expect_silence(
            "an AI leg for a sips: call over a plain transport",
            Duration::from_millis(300),
            |m| m.method() == Some(&Method::Invite),
        )
        .await;
    assert_eq!(count(&rig.server, |m| &m.calls_started_total), 0);
    assert_eq!(
        count(&rig.server, |m| &m.sip_sips_over_plain_refused_total),
        1
    );
    // A sip: call on the same transport goes through as ever.
    let call = common::scenarios::establish(&mut rig, InviteOpts::default()).await;
    drop(call);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sips_request_over_udp_gets_416_and_starts_no_call() {
    bounded(
        Duration::from_secs(20),
        sips_over_plain_is_refused(Transport::Udp),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sips_request_over_tcp_gets_416_and_starts_no_call() {
    bounded(
        Duration::from_secs(20),
        sips_over_plain_is_refused(Transport::Tcp),
    )
    .await;
}

/// Over TLS a `sips:` INVITE is what RFC 5630 wants: taken, the AI leg placed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sips_request_over_tls_is_taken() {
    bounded(Duration::from_secs(20), async {
        let mut rig = Rig::new(Transport::Tls, "").await;
        let invite = sips_invite(&rig);
        rig.caller.send(&invite).await;
        rig.agent.expect_request(Method::Invite, WAIT).await;
        assert_eq!(
            count(&rig.server, |m| &m.sip_sips_over_plain_refused_total),
            0
        );
    })
    .await;
}

/// A `sips:` AI agent (even with `;transport=tcp` on it) gets a TLS ClientHello on its
/// port, never a SIP request in the clear; with no TLS server there the call fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sips_target_is_never_sent_plain_sip() {
    bounded(Duration::from_secs(20), async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let extra = format!(
            "{}\n[[route]]\ndefault = true\norg_id = \"org-test\"\nagent_id = \"agent-test\"\nai_agent_uri = \"sips:ai@127.0.0.1:{port};transport=tcp\"\n",
            common::tls::ca_key()
        );
        let mut rig = Rig::new(Transport::Udp, &extra).await;
        let invite = rig.caller.invite(&InviteOpts::default());
        rig.caller.send(&invite).await;
        let (mut conn, _) = tokio::time::timeout(WAIT, listener.accept())
            .await
            .expect("handoff connects to the sips: target")
            .expect("accept");
        let mut first = [0u8; 3];
        conn.read_exact(&mut first).await.expect("first bytes");
        // A TLS handshake record (type 22), version 3.x: not "INV".
        assert_eq!(first[0], 0x16, "not a TLS handshake: {first:?}");
        assert_eq!(first[1], 3);
        drop(conn);
        // No TLS server there: the caller hears a failure, no call is up.
        let final_status = rig
            .caller
            .expect(
                "a final failure for the caller",
                Duration::from_secs(10),
                |m| m.status().is_some_and(|s| s >= 300),
                |m| m.status().is_some_and(|s| s < 200),
            )
            .await;
        assert!(
            final_status.msg.status().is_some_and(|s| s >= 400),
            "{:?}",
            final_status.msg.status()
        );
    })
    .await;
}
