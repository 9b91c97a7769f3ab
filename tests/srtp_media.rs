//! SRTP end to end (issue 14, item 2): a call whose caller leg is SDES-keyed
//! SRTP and whose AI leg is plain RTP (the common case: an SRTP carrier and a
//! plain AI agent), and one with SRTP on both legs under different keys. The
//! test UAs encrypt and decrypt with `media::srtp::SrtpContext`; what crosses
//! the relay must arrive intact, in order, with each leg's own key, and a
//! packet under a wrong key must not cross.

mod common;

use common::build::AI_SDP;
use common::media::{rtp, Phone};
use common::scenarios::place_call;
use common::{bounded, Dialog, InviteOpts, Rig, Transport, SDP, WAIT};
use handoff::media::sdp::crypto::{crypto_lines, CryptoLine};
use handoff::media::sdp::SessionDescription;
use handoff::media::srtp::{SrtpContext, SrtpKey, SrtpSuite};
use handoff::sip::message::Method;
use std::net::SocketAddr;
use std::time::Duration;

const PACKETS: u16 = 100;

fn route(lines: &str) -> String {
    format!(
        "\n[[route]]\ndefault = true\norg_id = \"org-test\"\nagent_id = \"agent-test\"\n\
         ai_agent_uri = \"{{ai}}\"\n{lines}\n"
    )
}

/// `sdp` on RTP/SAVP with one crypto line carrying `key`.
fn with_key(sdp: &str, key: &SrtpKey) -> String {
    use base64::Engine as _;
    let inline = base64::engine::general_purpose::STANDARD.encode(key.key_and_salt());
    sdp.replace("RTP/AVP", "RTP/SAVP").replace(
        "a=sendrecv\r\n",
        &format!(
            "a=crypto:1 {} inline:{inline}\r\na=sendrecv\r\n",
            key.suite().sdes_name()
        ),
    )
}

/// The relay address, profile and (at most one usable) key of a body's audio.
fn media_of(body: &[u8]) -> (SocketAddr, String, Option<SrtpKey>) {
    let text = String::from_utf8_lossy(body).into_owned();
    let sdp = SessionDescription::parse(body).unwrap_or_else(|e| panic!("SDP: {e}: {text}"));
    let m = &sdp.media()[0];
    let ip = text
        .lines()
        .find_map(|l| l.strip_prefix("c=IN IP4 "))
        .expect("c= line")
        .trim()
        .parse()
        .expect("IPv4");
    let port = text
        .lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .and_then(|rest| rest.split(' ').next())
        .and_then(|p| p.parse().ok())
        .expect("m= port");
    let key = crypto_lines(m)
        .expect("crypto lines")
        .into_iter()
        .find_map(|l| match l {
            CryptoLine::Usable(c) => Some(c.key),
            _ => None,
        });
    (SocketAddr::new(ip, port), m.proto().to_owned(), key)
}

fn protect(ctx: &mut SrtpContext, plain: &[u8]) -> Vec<u8> {
    let mut buf = plain.to_vec();
    buf.resize(plain.len() + 16, 0);
    let n = ctx.protect_rtp(&mut buf, plain.len()).expect("protect");
    buf.truncate(n);
    buf
}

fn unprotect(ctx: &mut SrtpContext, mut packet: Vec<u8>, what: &str) -> Vec<u8> {
    let n = ctx
        .unprotect_rtp(&mut packet)
        .unwrap_or_else(|e| panic!("{what}: does not authenticate: {e:?}"));
    packet.truncate(n);
    packet
}

/// Both legs up with media phones; returns the keys each side must use.
struct Up {
    caller: Phone,
    agent: Phone,
    relay_for_caller: SocketAddr,
    relay_for_agent: SocketAddr,
    /// handoff's keys: towards the caller, towards the AI agent (if SRTP).
    handoff_to_caller: Option<SrtpKey>,
    handoff_to_agent: Option<SrtpKey>,
}

async fn call_up(rig: &mut Rig, caller_key: &SrtpKey, agent_key: Option<&SrtpKey>) -> Up {
    let (caller, agent) = (Phone::new().await, Phone::new().await);
    let opts = InviteOpts {
        sdp: Some(with_key(&caller.sdp(SDP), caller_key)),
        ..InviteOpts::default()
    };
    let (invite, ai_invite) = place_call(rig, &opts).await;
    let (relay_for_agent, ai_proto, handoff_to_agent) = media_of(ai_invite.msg.body());
    let agent_sdp = match (&handoff_to_agent, agent_key) {
        (Some(_), Some(k)) => with_key(&agent.sdp(AI_SDP), k),
        (None, None) => agent.sdp(AI_SDP),
        other => panic!("AI leg offered {ai_proto} with key {:?}", other.0),
    };
    rig.agent
        .respond(&ai_invite, 200, &[], Some(&agent_sdp))
        .await;
    let ok = rig
        .caller
        .expect_response_to(Method::Invite, 200, WAIT)
        .await
        .msg;
    let (relay_for_caller, proto, handoff_to_caller) = media_of(ok.body());
    assert_eq!(
        proto, "RTP/SAVP",
        "the caller's SRTP offer is answered with SRTP"
    );
    let handoff_to_caller = handoff_to_caller.expect("handoff's key for the caller");
    assert_ne!(
        handoff_to_caller.key_and_salt(),
        caller_key.key_and_salt(),
        "handoff keys its own direction"
    );
    let dlg = Dialog::as_uac(&invite, &ok);
    rig.caller.send(&rig.caller.ack(&dlg, None)).await;
    rig.agent.expect_request(Method::Ack, WAIT).await;
    Up {
        caller,
        agent,
        relay_for_caller,
        relay_for_agent,
        handoff_to_caller: Some(handoff_to_caller),
        handoff_to_agent,
    }
}

async fn media_crosses(up: &Up, caller_key: &SrtpKey, agent_key: Option<&SrtpKey>) {
    let mut caller_tx = SrtpContext::new(caller_key);
    let mut caller_rx = SrtpContext::new(up.handoff_to_caller.as_ref().expect("key"));
    let mut agent_tx = agent_key.map(SrtpContext::new);
    let mut agent_rx = up.handoff_to_agent.as_ref().map(SrtpContext::new);
    for seq in 0..PACKETS {
        // Caller -> AI agent.
        let plain = rtp(seq, 0x1111_0001);
        let wire = protect(&mut caller_tx, &plain);
        assert_ne!(
            wire[12..172],
            plain[12..],
            "the caller's payload is encrypted"
        );
        up.caller
            .rtp
            .send_to(&wire, up.relay_for_caller)
            .await
            .expect("send");
        let (got, _) = Phone::recv(&up.agent.rtp, WAIT, "caller to AI agent").await;
        let got = match agent_rx.as_mut() {
            Some(ctx) => unprotect(ctx, got, "at the AI agent"),
            None => got,
        };
        assert_eq!(got, plain, "caller to AI agent, packet {seq}");
        // AI agent -> caller.
        let plain = rtp(seq, 0x2222_0002);
        let wire = match agent_tx.as_mut() {
            Some(ctx) => protect(ctx, &plain),
            None => plain.clone(),
        };
        up.agent
            .rtp
            .send_to(&wire, up.relay_for_agent)
            .await
            .expect("send");
        let (got, _) = Phone::recv(&up.caller.rtp, WAIT, "AI agent to caller").await;
        assert_ne!(got[12..172], plain[12..], "the caller leg is encrypted");
        assert_eq!(
            unprotect(&mut caller_rx, got, "at the caller"),
            plain,
            "AI agent to caller, packet {seq}"
        );
    }
    // A packet under another key, from the caller's own address: dropped.
    let mut forger = SrtpContext::new(&SrtpKey::generate(SrtpSuite::AesCm128HmacSha1_80));
    let forged = protect(&mut forger, &rtp(PACKETS, 0x1111_0001));
    up.caller
        .rtp
        .send_to(&forged, up.relay_for_caller)
        .await
        .expect("send");
    Phone::assert_silent(&up.agent.rtp, Duration::from_millis(300), "a forged packet").await;
    // A replay of a packet already relayed: dropped too.
    let replay = protect(&mut SrtpContext::new(caller_key), &rtp(0, 0x1111_0001));
    up.caller
        .rtp
        .send_to(&replay, up.relay_for_caller)
        .await
        .expect("send");
    Phone::assert_silent(
        &up.agent.rtp,
        Duration::from_millis(300),
        "a replayed packet",
    )
    .await;
}

/// The common case: the carrier leg on SRTP, the AI agent on plain RTP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srtp_caller_and_plain_ai_agent_hear_each_other() {
    bounded(Duration::from_secs(30), async {
        let mut rig = Rig::new(Transport::Udp, &route("caller_srtp = \"required\"")).await;
        let caller_key = SrtpKey::generate(SrtpSuite::AesCm128HmacSha1_80);
        let up = call_up(&mut rig, &caller_key, None).await;
        assert!(up.handoff_to_agent.is_none(), "the AI leg stays plain");
        media_crosses(&up, &caller_key, None).await;
    })
    .await;
}

/// SRTP on both legs: each leg has its own pair of keys, and the relay
/// decrypts with one and encrypts with the other (32-bit tags on the caller).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srtp_on_both_legs_with_different_keys() {
    bounded(Duration::from_secs(30), async {
        let mut rig = Rig::new(
            Transport::Udp,
            &route("caller_srtp = \"required\"\nsrtp = \"required\""),
        )
        .await;
        let caller_key = SrtpKey::generate(SrtpSuite::AesCm128HmacSha1_32);
        let agent_key = SrtpKey::generate(SrtpSuite::AesCm128HmacSha1_80);
        let up = call_up(&mut rig, &caller_key, Some(&agent_key)).await;
        let to_agent = up
            .handoff_to_agent
            .as_ref()
            .expect("SRTP towards the AI agent");
        assert_ne!(to_agent.key_and_salt(), caller_key.key_and_salt());
        media_crosses(&up, &caller_key, Some(&agent_key)).await;
    })
    .await;
}
