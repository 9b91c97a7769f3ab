//! Issue 12, item 1: trunks. A source in no `[[trunk]]` that is not a configured AI
//! agent or transfer destination gets nothing for a request outside a dialog (not
//! even a 400); a trunk's calls go through, within the trunk's own limits; a route
//! naming trunks refuses others with 403; the AI agent's in-dialog requests reach
//! their call from any address; a listener off loopback with no trunk refuses to
//! start. Over UDP, with 127.0.0.7 (and other 127/8 addresses) as other hosts.

mod common;

use common::dns::{FakeDns, Zone};
use common::scenarios::{establish, place_call};
use common::trunks::{
    trunk_counts, trunk_rig, trunk_rig_with, udp_ua_on, untrusted_dropped, CARRIER_TRUNK,
};
use common::{bounded, eventually, InviteOpts, TestUa, WAIT};
use handoff::sip::message::Method;
use std::net::Ipv4Addr;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(30);
/// How long "no answer" is waited for (T1 is 50 ms in tests: a 400 or 200 comes in
/// well under 1 ms, and an INVITE's 100 Trying at once).
const SILENCE: Duration = Duration::from_millis(700);

const TRUNK_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
const ATTACKER_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 7);

const OPTIONS: &str = "OPTIONS sip:handoff@{handoff} SIP/2.0
Via: {via}
Max-Forwards: 70
From: <sip:probe@scanner.example>;tag={tag}
To: <sip:handoff@{handoff}>
Call-ID: {call_id}
CSeq: 1 OPTIONS

";

/// Parses far enough to answer (it has a Via) but has a bad CSeq: today's 400.
const BAD_CSEQ: &str = "INVITE sip:+18005550100@{handoff} SIP/2.0
Via: {via}
Max-Forwards: 70
From: <sip:+14155550000@scanner.example>;tag={tag}
To: <sip:+18005550100@scanner.example>
Call-ID: {call_id}
CSeq: abc INVITE

";

#[tokio::test]
async fn untrusted_source_gets_no_answer_to_any_request_outside_a_dialog() {
    bounded(LIMIT, async {
        let mut rig = trunk_rig(TRUNK_IP, TRUNK_IP, "", CARRIER_TRUNK, "").await;
        let handoff = rig.server.udp_addrs()[0];
        let mut attacker = udp_ua_on(ATTACKER_IP, handoff).await;
        attacker
            .send(&attacker.invite(&InviteOpts::default()))
            .await;
        attacker.send_raw(OPTIONS).await;
        attacker
            .send_raw(&OPTIONS.replace("OPTIONS", "REGISTER"))
            .await;
        attacker.send_raw(&OPTIONS.replace("OPTIONS", "BYE")).await;
        attacker.send_raw(BAD_CSEQ).await;
        attacker
            .send_bytes(b"\x16\x03\x01 not SIP at all\r\n\r\n")
            .await;
        attacker
            .expect_silence("answer to an untrusted source", SILENCE, |_| true)
            .await;
        rig.agent
            .expect_silence(
                "INVITE placed for an untrusted source",
                Duration::ZERO,
                |m| m.method() == Some(&Method::Invite),
            )
            .await;
        assert_eq!(rig.server.active_calls(), 0);
        // INVITE, OPTIONS, REGISTER, BYE and the malformed INVITE; the bytes that are
        // no SIP at all have no start line to count as a request, counted or not.
        assert!(
            untrusted_dropped(&rig.server) >= 5,
            "dropped: {}",
            untrusted_dropped(&rig.server)
        );
        // The trunk's own OPTIONS is answered as before.
        rig.caller.send_raw(OPTIONS).await;
        rig.caller
            .expect_response_to(Method::Options, 200, WAIT)
            .await;
    })
    .await;
}

/// The same over TCP: the connection from 127.0.0.7 carries an OPTIONS and an
/// INVITE and gets not one byte back.
#[tokio::test]
async fn untrusted_source_over_tcp_gets_no_answer() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    bounded(LIMIT, async {
        let rig = trunk_rig(TRUNK_IP, TRUNK_IP, "", CARRIER_TRUNK, "").await;
        let handoff = rig.server.tcp_addrs()[0];
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.bind((ATTACKER_IP, 0).into()).unwrap();
        let mut conn = sock.connect(handoff).await.expect("connect to handoff");
        let local = conn.local_addr().unwrap();
        for (method, cseq) in [("OPTIONS", 1), ("INVITE", 2)] {
            let msg = format!(
                "{method} sip:+18005550100@{handoff} SIP/2.0\r\n\
                 Via: SIP/2.0/TCP {local};branch=z9hG4bK-tcp-{cseq}\r\n\
                 Max-Forwards: 70\r\n\
                 From: <sip:probe@scanner.example>;tag=t{cseq}\r\n\
                 To: <sip:+18005550100@{handoff}>\r\n\
                 Call-ID: tcp-probe-{cseq}@scanner\r\n\
                 CSeq: {cseq} {method}\r\n\
                 Contact: <sip:probe@{local};transport=tcp>\r\n\
                 Content-Length: 0\r\n\r\n"
            );
            conn.write_all(msg.as_bytes()).await.unwrap();
        }
        let mut buf = [0u8; 512];
        match tokio::time::timeout(SILENCE, conn.read(&mut buf)).await {
            Err(_) | Ok(Ok(0)) | Ok(Err(_)) => {}
            Ok(Ok(n)) => panic!(
                "untrusted TCP source got an answer: {}",
                String::from_utf8_lossy(&buf[..n])
            ),
        }
        assert_eq!(untrusted_dropped(&rig.server), 2);
        assert_eq!(rig.server.active_calls(), 0);
    })
    .await;
}

#[tokio::test]
async fn trunk_source_places_a_call_and_its_slot_is_given_back_when_it_ends() {
    bounded(LIMIT, async {
        let mut rig = trunk_rig(TRUNK_IP, TRUNK_IP, "", CARRIER_TRUNK, "").await;
        let mut call = establish(&mut rig, InviteOpts::default()).await;
        assert_eq!(trunk_counts(&rig.server, "carrier"), (1, 0, 1));
        common::scenarios::bye_from_caller(&mut rig, &mut call).await;
        let server = &rig.server;
        assert!(
            eventually(WAIT, || trunk_counts(server, "carrier") == (1, 0, 0)).await,
            "trunk gauge after the call: {:?}",
            trunk_counts(server, "carrier")
        );
        let text = rig.server.metrics().render_prometheus();
        assert!(
            text.contains("handoff_trunk_calls_started_total{trunk=\"carrier\"} 1\n"),
            "{text}"
        );
        assert_eq!(untrusted_dropped(&rig.server), 0);
    })
    .await;
}

#[tokio::test]
async fn route_restricted_to_another_trunk_refuses_with_403() {
    bounded(LIMIT, async {
        let tables = "[[trunk]]\nname = \"carrier\"\nsources = [\"127.0.0.1\"]\n\
                      [[trunk]]\nname = \"partner\"\nsources = [\"127.0.0.8/32\"]\n";
        let mut rig = trunk_rig(TRUNK_IP, TRUNK_IP, "", tables, "trunks = [\"partner\"]").await;
        let invite = rig.caller.invite(&InviteOpts::default());
        rig.caller.send(&invite).await;
        rig.caller
            .expect_response_to(Method::Invite, 403, WAIT)
            .await;
        rig.agent
            .expect_silence("AI leg for a refused trunk", SILENCE, |m| {
                m.method() == Some(&Method::Invite)
            })
            .await;
        // The partner trunk's INVITE goes through.
        rig.caller = udp_ua_on(Ipv4Addr::new(127, 0, 0, 8), rig.server.udp_addrs()[0]).await;
        place_call(&mut rig, &InviteOpts::default()).await;
        assert_eq!(trunk_counts(&rig.server, "partner").0, 1);
        assert_eq!(trunk_counts(&rig.server, "carrier").0, 0);
    })
    .await;
}

#[tokio::test]
async fn trunk_max_calls_gives_503_until_a_call_ends() {
    bounded(LIMIT, async {
        let tables = format!("{CARRIER_TRUNK}max_calls = 1\n");
        let mut rig = trunk_rig(TRUNK_IP, TRUNK_IP, "", &tables, "").await;
        let (_first, ai_invite) = place_call(&mut rig, &InviteOpts::default()).await;
        let mut second = rig.another_caller().await;
        second.send(&second.invite(&InviteOpts::default())).await;
        let r = second.expect_response_to(Method::Invite, 503, WAIT).await;
        assert!(
            r.msg.header("Retry-After").is_some(),
            "503 with Retry-After"
        );
        assert_eq!(trunk_counts(&rig.server, "carrier"), (1, 1, 1));
        // The AI agent refuses the first call: it ends, its slot comes back.
        rig.agent.respond(&ai_invite, 486, &[], None).await;
        rig.caller
            .expect_response_to(Method::Invite, 486, WAIT)
            .await;
        let server = &rig.server;
        assert!(
            eventually(WAIT, || trunk_counts(server, "carrier").2 == 0).await,
            "slot given back: {:?}",
            trunk_counts(server, "carrier")
        );
        // The next call goes through; a caller CANCEL ends it and gives it back too.
        let mut third = rig.another_caller().await;
        let invite = third.invite(&InviteOpts::default());
        third.send(&invite).await;
        third.expect_response_to(Method::Invite, 100, WAIT).await;
        let ai = rig.agent.expect_request(Method::Invite, WAIT).await;
        rig.agent.respond(&ai, 180, &[], None).await;
        third.expect_response_to(Method::Invite, 180, WAIT).await;
        third.send(&common::cancel_for(&invite)).await;
        third.expect_response_to(Method::Cancel, 200, WAIT).await;
        let cancel = rig.agent.expect_request(Method::Cancel, WAIT).await;
        rig.agent.respond(&cancel, 200, &[], None).await;
        rig.agent.respond(&ai, 487, &[], None).await;
        let terminated = third.expect_response_to(Method::Invite, 487, WAIT).await;
        third
            .send(&common::build::ack_for_non_2xx(&invite, &terminated.msg))
            .await;
        assert!(
            eventually(Duration::from_secs(5), || trunk_counts(server, "carrier").2
                == 0
                && server.active_calls() == 0)
            .await,
            "slot given back after CANCEL: {:?}",
            trunk_counts(server, "carrier")
        );
        assert_eq!(trunk_counts(server, "carrier").0, 2);
        assert!(
            !server
                .metrics()
                .render_prometheus()
                .contains("trunk=\"carrier\"} -"),
            "no gauge below zero"
        );
    })
    .await;
}

#[tokio::test]
async fn trunk_calls_per_second_gives_503() {
    bounded(LIMIT, async {
        let tables = format!("{CARRIER_TRUNK}max_calls_per_second = 1\n");
        let mut rig = trunk_rig(TRUNK_IP, TRUNK_IP, "", &tables, "").await;
        place_call(&mut rig, &InviteOpts::default()).await;
        let mut second = rig.another_caller().await;
        second.send(&second.invite(&InviteOpts::default())).await;
        second.expect_response_to(Method::Invite, 503, WAIT).await;
        let (started, rejected, active) = trunk_counts(&rig.server, "carrier");
        assert_eq!((started, rejected, active), (1, 1, 1));
        assert_eq!(rig.server.active_calls(), 1);
    })
    .await;
}

/// The AI agent at 127.0.0.9, outside every trunk: its REFER and BYE reach the call,
/// its out-of-dialog OPTIONS is answered (a configured peer), while a stranger at
/// 127.0.0.7 gets nothing.
#[tokio::test]
async fn ai_agent_outside_every_trunk_keeps_its_requests() {
    bounded(LIMIT, async {
        let agent_ip = Ipv4Addr::new(127, 0, 0, 9);
        let zendesk = TestUa::udp_bound((Ipv4Addr::new(127, 0, 0, 10), 0).into()).await;
        let target = format!("sip:support@{}", zendesk.local_addr());
        let keys = format!("transfer.destination = [{{ name = \"zendesk\", uri = \"{target}\" }}]");
        let mut rig = trunk_rig(agent_ip, TRUNK_IP, &keys, CARRIER_TRUNK, "").await;
        let mut zendesk = zendesk;
        let mut call = establish(&mut rig, InviteOpts::default()).await;

        // REFER from the AI leg: accepted, the target dialled, its 486 reported.
        let mut refer = rig
            .agent
            .in_dialog(&mut call.agent_dlg, Method::Refer, None);
        refer
            .push_checked("Refer-To", &format!("<{target}>"))
            .unwrap();
        rig.agent.send(&refer).await;
        rig.agent.expect_response_to(Method::Refer, 202, WAIT).await;
        let notify = rig.agent.expect_request(Method::Notify, WAIT).await;
        rig.agent.respond(&notify, 200, &[], None).await;
        let inv = zendesk.expect_request(Method::Invite, WAIT).await;
        zendesk.respond(&inv, 486, &[], None).await;
        let notify = rig.agent.expect_request(Method::Notify, WAIT).await;
        assert!(
            String::from_utf8_lossy(notify.msg.body()).contains("486"),
            "final NOTIFY reports the target's 486"
        );
        rig.agent.respond(&notify, 200, &[], None).await;

        // An OPTIONS keep-alive from the AI agent outside any dialog: answered.
        rig.agent.set_peer(rig.server.udp_addrs()[0]);
        rig.agent.send_raw(OPTIONS).await;
        rig.agent
            .expect_response_to(Method::Options, 200, WAIT)
            .await;

        // The stranger's OPTIONS: nothing.
        let mut stranger = udp_ua_on(ATTACKER_IP, rig.server.udp_addrs()[0]).await;
        stranger.send_raw(OPTIONS).await;
        stranger
            .expect_silence("answer to a stranger", SILENCE, |_| true)
            .await;

        // BYE from the AI leg: 200, and the caller is hung up.
        common::scenarios::bye_from_agent(&mut rig, &mut call).await;
        let server = &rig.server;
        assert!(eventually(WAIT, || server.active_calls() == 0).await);
        assert_eq!(untrusted_dropped(server), 1, "only the stranger's OPTIONS");
        assert_eq!(trunk_counts(server, "carrier").2, 0);
    })
    .await;
}

/// Peers named by host name are looked up (through `sip.dns_servers`) and trusted:
/// the AI agent `ai.test` at 127.0.0.9 and the transfer destination `pbx.test` at
/// 127.0.0.11 get answers to their OPTIONS; 127.0.0.12, in no DNS answer, does not.
#[tokio::test]
async fn peers_named_by_host_name_are_resolved_and_trusted() {
    bounded(LIMIT, async {
        let dns = FakeDns::start(
            Zone::default()
                .a("ai.test", Ipv4Addr::new(127, 0, 0, 9))
                .a("pbx.test", Ipv4Addr::new(127, 0, 0, 11)),
            Duration::ZERO,
        )
        .await;
        let agent = TestUa::udp_bound((Ipv4Addr::new(127, 0, 0, 9), 0).into()).await;
        let uri = format!("sip:ai@ai.test:{}", agent.local_addr().port());
        let keys = format!(
            "{}transfer.destination = [{{ name = \"pbx\", uri = \"sip:desk@pbx.test\" }}]",
            dns.config_key()
        );
        let rig = trunk_rig_with(agent, &uri, TRUNK_IP, &keys, CARRIER_TRUNK, "").await;
        let handoff = rig.server.udp_addrs()[0];
        for ip in [Ipv4Addr::new(127, 0, 0, 9), Ipv4Addr::new(127, 0, 0, 11)] {
            let mut peer = udp_ua_on(ip, handoff).await;
            // The first lookup runs beside start-up: ask until it has landed.
            let mut answered = false;
            for _ in 0..20 {
                peer.send_raw(OPTIONS).await;
                if peer.recv(Duration::from_millis(100)).await.is_some() {
                    answered = true;
                    break;
                }
            }
            assert!(answered, "OPTIONS from the peer at {ip} answered");
        }
        let mut stranger = udp_ua_on(Ipv4Addr::new(127, 0, 0, 12), handoff).await;
        stranger.send_raw(OPTIONS).await;
        stranger
            .expect_silence("answer to a stranger", SILENCE, |_| true)
            .await;
    })
    .await;
}

/// Without trunks, on loopback, everyone is taken as before (the shipped config).
#[tokio::test]
async fn without_trunks_on_loopback_every_source_is_answered() {
    bounded(LIMIT, async {
        let rig = trunk_rig(TRUNK_IP, TRUNK_IP, "", "", "").await;
        let mut other = udp_ua_on(ATTACKER_IP, rig.server.udp_addrs()[0]).await;
        other.send_raw(OPTIONS).await;
        other.expect_response_to(Method::Options, 200, WAIT).await;
        assert_eq!(untrusted_dropped(&rig.server), 0);
    })
    .await;
}

use common::cli::{check_config, ROUTE};

#[test]
fn listener_off_loopback_without_a_trunk_refuses_to_start_naming_the_key() {
    let open = format!(
        "[sip]\nlisten_udp = [\"0.0.0.0:0\"]\nlisten_tcp = []\n\n[http]\nlisten = \"127.0.0.1:0\"\n\n{ROUTE}"
    );
    let (code, err) = check_config("open", &open);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("trunk"), "{err}");
    assert!(err.contains("sip.allow_any_source"), "{err}");

    let lab = open.replace(
        "listen_tcp = []",
        "listen_tcp = []\nallow_any_source = true",
    );
    let (code, err) = check_config("lab", &lab);
    assert_eq!(code, Some(0), "allow_any_source = true starts: {err}");

    let trunked = format!("{open}\n[[trunk]]\nname = \"carrier\"\nsources = [\"192.0.2.0/24\"]\n");
    let (code, err) = check_config("trunked", &trunked);
    assert_eq!(code, Some(0), "with a trunk it starts: {err}");

    // A route naming a trunk that does not exist: refused, naming the key.
    let unknown = trunked.replace(
        "ai_agent_uri = \"sip:ai@127.0.0.1:5080\"\n",
        "ai_agent_uri = \"sip:ai@127.0.0.1:5080\"\ntrunks = [\"nobody\"]\n",
    );
    let (code, err) = check_config("unknown", &unknown);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("route[0].trunks"), "{err}");
    assert!(err.contains("nobody"), "{err}");
}
