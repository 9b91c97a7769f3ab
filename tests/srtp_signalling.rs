//! SDES SRTP signalling (issue 14, item 2): per leg `srtp` policies, the
//! `a=crypto` offers and answers handoff makes, and what it refuses. Media is
//! not decrypted here (the relay's side is tested with it); these tests check
//! SDP on each leg and the call's outcome. Over UDP, and one call over TLS.

mod common;

use common::build::AI_SDP;
use common::media::{rtp, Phone};
use common::scenarios::media::establish_media;
use common::scenarios::transfer::{expect_notify, expect_target_invite, refer, transfer_rig_dest};
use common::scenarios::{count, place_call};
use common::trunks::{trunk_rig, CARRIER_TRUNK};
use common::{bounded, Dialog, InviteOpts, Rig, TestUa, Transport, SDP, WAIT};
use handoff::media::sdp::crypto::{crypto_lines, Crypto, CryptoLine};
use handoff::media::sdp::SessionDescription;
use handoff::media::srtp::SrtpSuite;
use handoff::sip::message::{Message, Method};
use std::net::Ipv4Addr;
use std::time::Duration;

/// 30 bytes (0x00..0x1d) and another 30 (0x64..0x81), base64: two callers' keys.
const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwd";
const KEY2: &str = "ZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXp7fH1+f4CB";

/// The carrier's SDP on RTP/SAVP with one 80-bit crypto line keyed `key`.
fn savp(key: &str, version: u32) -> String {
    SDP.replace("RTP/AVP", "RTP/SAVP")
        .replace("o=carrier 1 1", &format!("o=carrier 1 {version}"))
        .replace(
            "a=sendrecv\r\n",
            &format!("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{key}|2^31\r\na=sendrecv\r\n"),
        )
}

/// The one default route, with `lines` added.
fn route(lines: &str) -> String {
    format!(
        "\n[[route]]\ndefault = true\norg_id = \"org-test\"\nagent_id = \"agent-test\"\n\
         ai_agent_uri = \"{{ai}}\"\n{lines}\n"
    )
}

/// The profile and crypto lines of a body's first m= line.
fn audio(body: &[u8]) -> (String, Vec<CryptoLine>) {
    let sdp = SessionDescription::parse(body)
        .unwrap_or_else(|e| panic!("SDP: {e}: {}", String::from_utf8_lossy(body)));
    let m = &sdp.media()[0];
    (m.proto().to_owned(), crypto_lines(m).expect("crypto lines"))
}

fn only_usable(lines: &[CryptoLine]) -> Crypto {
    match lines {
        [CryptoLine::Usable(c)] => c.clone(),
        other => panic!("one usable crypto line expected: {other:?}"),
    }
}

fn key_bytes(b64: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .expect("base64")
}

fn warning(msg: &Message) -> String {
    msg.header("Warning").unwrap_or_default().to_owned()
}

/// The caller offers RTP/SAVP with its key (caller leg `optional`, AI leg `off`):
/// the AI agent gets plain RTP/AVP without the caller's key, and the caller gets
/// RTP/SAVP with a key of handoff's own under the same tag and suite.
async fn savp_offer_is_answered_with_savp_and_a_fresh_key(t: Transport) {
    let mut rig = Rig::new(t, &route("caller_srtp = \"optional\"")).await;
    let opts = InviteOpts {
        sdp: Some(savp(KEY, 1)),
        ..InviteOpts::default()
    };
    let (invite, ai_invite) = place_call(&mut rig, &opts).await;
    let (proto, lines) = audio(ai_invite.msg.body());
    assert_eq!(proto, "RTP/AVP", "the AI leg is plain");
    assert!(lines.is_empty(), "no crypto to a plain AI leg");
    assert!(!String::from_utf8_lossy(ai_invite.msg.body()).contains(KEY));

    rig.agent.respond(&ai_invite, 200, &[], Some(AI_SDP)).await;
    let ok = rig
        .caller
        .expect_response_to(Method::Invite, 200, WAIT)
        .await
        .msg;
    let (proto, lines) = audio(ok.body());
    assert_eq!(proto, "RTP/SAVP");
    let ours = only_usable(&lines);
    assert_eq!(ours.tag, 1);
    assert_eq!(ours.suite(), SrtpSuite::AesCm128HmacSha1_80);
    assert_ne!(
        ours.key.key_and_salt().to_vec(),
        key_bytes(KEY),
        "a fresh key"
    );
    let dlg = Dialog::as_uac(&invite, &ok);
    rig.caller.send(&rig.caller.ack(&dlg, None)).await;
    rig.agent.expect_request(Method::Ack, WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn savp_offer_is_answered_with_savp_and_a_fresh_key_over_udp() {
    bounded(
        Duration::from_secs(20),
        savp_offer_is_answered_with_savp_and_a_fresh_key(Transport::Udp),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn savp_offer_is_answered_with_savp_and_a_fresh_key_over_tls() {
    bounded(
        Duration::from_secs(20),
        savp_offer_is_answered_with_savp_and_a_fresh_key(Transport::Tls),
    )
    .await;
}

/// A trunk with `srtp = "required"`: a plain offer gets 488 with a Warning
/// saying SRTP is required, and the AI agent is never called.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_trunk_refuses_a_plain_offer_with_488() {
    bounded(Duration::from_secs(20), async {
        let tables = format!("{CARRIER_TRUNK}srtp = \"required\"\n");
        let lo = Ipv4Addr::LOCALHOST;
        let mut rig = trunk_rig(lo, lo, "", &tables, "").await;
        rig.caller
            .send(&rig.caller.invite(&InviteOpts::default()))
            .await;
        let r = rig
            .caller
            .expect_response_to(Method::Invite, 488, WAIT)
            .await;
        let w = warning(&r.msg);
        assert!(w.starts_with("305 "), "Warning {w:?}");
        assert!(w.contains("SRTP required"), "Warning {w:?}");
        rig.agent
            .expect_silence(
                "an INVITE to the AI agent",
                Duration::from_millis(300),
                |m| m.method() == Some(&Method::Invite),
            )
            .await;
        assert_eq!(count(&rig.server, |x| &x.sdp_rejected_total), 1);
        assert_eq!(count(&rig.server, |x| &x.srtp_refused_total), 1);
    })
    .await;
}

/// `srtp` off (the default): an RTP/SAVP-only offer cannot be answered plain
/// (RFC 3264 6.1 keeps the profile), so it gets 488 with Warning 302.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn off_leg_refuses_a_savp_only_offer_with_488() {
    bounded(Duration::from_secs(20), async {
        let mut rig = Rig::new(Transport::Udp, "").await;
        let opts = InviteOpts {
            sdp: Some(savp(KEY, 1)),
            ..InviteOpts::default()
        };
        rig.caller.send(&rig.caller.invite(&opts)).await;
        let r = rig
            .caller
            .expect_response_to(Method::Invite, 488, WAIT)
            .await;
        let w = warning(&r.msg);
        assert!(w.starts_with("302 "), "Warning {w:?}");
        assert!(w.contains("SRTP not enabled"), "Warning {w:?}");
        rig.agent
            .expect_silence(
                "an INVITE to the AI agent",
                Duration::from_millis(300),
                |m| m.method() == Some(&Method::Invite),
            )
            .await;
    })
    .await;
}

/// The AI leg `required`: handoff offers RTP/SAVP with one line per suite (80
/// first). A plain 200 is ACKed, then BYEd, and the caller gets 502; a SAVP
/// answer picking a tag makes the call, the caller's leg staying plain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_ai_leg_offers_savp_and_a_plain_answer_fails_the_call() {
    bounded(Duration::from_secs(20), async {
        let mut rig = Rig::new(Transport::Udp, &route("srtp = \"required\"")).await;
        let (_, ai_invite) = place_call(&mut rig, &InviteOpts::default()).await;
        let (proto, lines) = audio(ai_invite.msg.body());
        assert_eq!(proto, "RTP/SAVP");
        let offered: Vec<(u32, SrtpSuite)> = lines
            .iter()
            .map(|l| match l {
                CryptoLine::Usable(c) => (c.tag, c.suite()),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            offered,
            [
                (1, SrtpSuite::AesCm128HmacSha1_80),
                (2, SrtpSuite::AesCm128HmacSha1_32)
            ]
        );
        rig.agent.respond(&ai_invite, 200, &[], Some(AI_SDP)).await;
        rig.agent.expect_request(Method::Ack, WAIT).await;
        let bye = rig.agent.expect_request(Method::Bye, WAIT).await;
        rig.agent.respond(&bye, 200, &[], None).await;
        rig.caller
            .expect_response_to(Method::Invite, 502, WAIT)
            .await;

        // Again, answered with the 32-bit suite's tag: the call is made.
        let mut caller = rig.another_caller().await;
        caller.send(&caller.invite(&InviteOpts::default())).await;
        let ai_invite = rig.agent.expect_request(Method::Invite, WAIT).await;
        let answer = AI_SDP.replace("RTP/AVP", "RTP/SAVP").replace(
            "a=sendrecv\r\n",
            &format!("a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:{KEY2}\r\na=sendrecv\r\n"),
        );
        rig.agent.respond(&ai_invite, 200, &[], Some(&answer)).await;
        let ok = caller
            .expect_response_to(Method::Invite, 200, WAIT)
            .await
            .msg;
        let (proto, lines) = audio(ok.body());
        assert_eq!((proto.as_str(), lines.len()), ("RTP/AVP", 0));
        assert!(!String::from_utf8_lossy(ok.body()).contains(KEY2));
    })
    .await;
}

/// A transfer to a `required` destination offers RTP/SAVP with crypto; a plain
/// 200 from it is ACKed and BYEd, the NOTIFY reports the failure, and the caller
/// stays with the AI agent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_to_a_required_destination_fails_on_a_plain_answer() {
    bounded(Duration::from_secs(20), async {
        let t = Transport::Udp;
        let zendesk = TestUa::agent(t).await;
        let mut tr = transfer_rig_dest(t, ", srtp = \"required\"", "", zendesk).await;
        let mut m = establish_media(&mut tr.rig).await;
        let target = format!("<{}>", tr.target);
        let refer_msg = refer(&mut tr, &mut m, &target, 202).await;
        expect_notify(&mut tr, &m, &refer_msg).await;
        let inv = expect_target_invite(&mut tr).await;
        let (proto, lines) = audio(inv.msg.body());
        assert_eq!(proto, "RTP/SAVP");
        assert_eq!(lines.len(), 2, "one line per suite");
        let phone = Phone::new().await;
        tr.zendesk
            .respond(&inv, 200, &[], Some(&phone.sdp(AI_SDP)))
            .await;
        tr.zendesk.expect_request(Method::Ack, WAIT).await;
        let bye = tr.zendesk.expect_request(Method::Bye, WAIT).await;
        tr.zendesk.respond(&bye, 200, &[], None).await;
        let (frag, state) = expect_notify(&mut tr, &m, &refer_msg).await;
        assert_eq!(frag, "SIP/2.0 488 Not Acceptable Here\r\n");
        assert!(state.starts_with("terminated"), "{state}");
        assert_eq!(count(&tr.rig.server, |x| &x.transfers_failed_total), 1);
        assert_eq!(count(&tr.rig.server, |x| &x.srtp_refused_total), 1);
        // The caller is still with the AI agent.
        m.caller
            .rtp
            .send_to(&rtp(9, 0x2222), m.relay_for_caller)
            .await
            .expect("send");
        let (p, _) = Phone::recv(&m.agent.rtp, WAIT, "caller still with the AI agent").await;
        assert_eq!(p, rtp(9, 0x2222));
    })
    .await;
}

/// A re-INVITE from the caller with a new key is answered RTP/SAVP, with the
/// same key of handoff's as before (it lives for the dialog).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn re_invite_with_a_new_key_is_answered_with_savp() {
    bounded(Duration::from_secs(20), async {
        let mut rig = Rig::new(Transport::Udp, &route("caller_srtp = \"optional\"")).await;
        let opts = InviteOpts {
            sdp: Some(savp(KEY, 1)),
            ..InviteOpts::default()
        };
        let (invite, ai_invite) = place_call(&mut rig, &opts).await;
        let ai_ok = rig.agent.respond(&ai_invite, 200, &[], Some(AI_SDP)).await;
        let ok = rig
            .caller
            .expect_response_to(Method::Invite, 200, WAIT)
            .await
            .msg;
        let first = only_usable(&audio(ok.body()).1);
        let mut dlg = Dialog::as_uac(&invite, &ok);
        rig.caller.send(&rig.caller.ack(&dlg, None)).await;
        rig.caller.barrier().await;
        rig.agent.expect_request(Method::Ack, WAIT).await;
        let mut agent_dlg = Dialog::as_uas(&ai_invite.msg, &ai_ok);

        let offer = savp(KEY2, 2);
        let reinvite =
            rig.caller
                .in_dialog(&mut dlg, Method::Invite, Some(("application/sdp", &offer)));
        rig.caller.send(&reinvite).await;
        let ai_re = rig.agent.expect_request(Method::Invite, WAIT).await;
        assert!(!String::from_utf8_lossy(ai_re.msg.body()).contains(KEY2));
        rig.agent
            .respond(
                &ai_re,
                200,
                &[],
                Some(&AI_SDP.replace("o=ai 7 7", "o=ai 7 8")),
            )
            .await;
        let ok2 = rig
            .caller
            .expect_response_to(Method::Invite, 200, WAIT)
            .await
            .msg;
        let (proto, lines) = audio(ok2.body());
        assert_eq!(proto, "RTP/SAVP");
        let again = only_usable(&lines);
        assert_eq!(again, first, "handoff's key for the leg is kept");
        rig.caller.send(&rig.caller.ack(&dlg, None)).await;
        rig.caller.barrier().await;

        // The AI agent re-offers (plain): the caller leg gets RTP/SAVP again,
        // with handoff's same key, and its answer's new key is taken.
        let body = AI_SDP.replace("o=ai 7 7", "o=ai 7 9");
        let re = rig.agent.in_dialog(
            &mut agent_dlg,
            Method::Invite,
            Some(("application/sdp", &body)),
        );
        rig.agent.send(&re).await;
        let to_caller = rig.caller.expect_request(Method::Invite, WAIT).await;
        let (proto, lines) = audio(to_caller.msg.body());
        assert_eq!(proto, "RTP/SAVP", "the caller's profile is kept");
        assert_eq!(only_usable(&lines), first);
        rig.caller
            .respond(&to_caller, 200, &[], Some(&savp(KEY, 3)))
            .await;
        let ok3 = rig
            .agent
            .expect_response_to(Method::Invite, 200, WAIT)
            .await
            .msg;
        let (proto, lines) = audio(ok3.body());
        assert_eq!((proto.as_str(), lines.len()), ("RTP/AVP", 0));
    })
    .await;
}

/// Every key of a call with SRTP on both legs (the caller's, the AI agent's and
/// handoff's own two) stays out of handoff's log, at debug level. The binary
/// runs as an operator runs it; its stderr is the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srtp_keys_never_reach_the_log() {
    use common::cli::{Running, BIN};
    use std::io::{BufRead, BufReader, Read};
    use std::process::{Command, Stdio};

    bounded(Duration::from_secs(30), async {
        let mut agent = TestUa::agent(Transport::Udp).await;
        let extra = format!(
            "sip.listen_tcp = []\nlog.level = \"debug\"\n{}",
            route("caller_srtp = \"optional\"\nsrtp = \"required\"")
        );
        let text = common::config_text(Transport::Udp, agent.local_addr().port(), &extra);
        let path = common::cli::temp_config("srtp-log", &text);
        let child = Command::new(BIN)
            .args(["run", "--config", path.to_str().expect("utf-8 path")])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start handoff");
        let mut running = Running(child);
        let mut stderr = running.0.stderr.take().expect("stderr");
        let log = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        });
        let stdout = running.0.stdout.take().expect("stdout");
        let first = tokio::task::spawn_blocking(move || {
            BufReader::new(stdout)
                .lines()
                .next()
                .expect("a line")
                .expect("utf-8")
        })
        .await
        .expect("stdout read");
        let udp: std::net::SocketAddr = first
            .strip_prefix("listening udp ")
            .expect("the UDP address first")
            .parse()
            .expect("address");

        let mut caller = TestUa::carrier(Transport::Udp, udp).await;
        let opts = InviteOpts {
            sdp: Some(savp(KEY, 1)),
            ..InviteOpts::default()
        };
        let invite = caller.invite(&opts);
        caller.send(&invite).await;
        let ai_invite = agent.expect_request(Method::Invite, WAIT).await;
        let (_, offered) = audio(ai_invite.msg.body());
        let answer = AI_SDP.replace("RTP/AVP", "RTP/SAVP").replace(
            "a=sendrecv\r\n",
            &format!("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY2}\r\na=sendrecv\r\n"),
        );
        agent.respond(&ai_invite, 200, &[], Some(&answer)).await;
        let ok = caller
            .expect_response_to(Method::Invite, 200, WAIT)
            .await
            .msg;
        let ours = only_usable(&audio(ok.body()).1);
        let dlg = Dialog::as_uac(&invite, &ok);
        caller.send(&caller.ack(&dlg, None)).await;
        agent.expect_request(Method::Ack, WAIT).await;

        let pid = running.0.id().to_string();
        assert!(Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill")
            .success());
        let log = tokio::task::spawn_blocking(move || log.join().expect("log reader"))
            .await
            .expect("join");
        let _ = running.0.wait();
        if let Some(dir) = path.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
        assert!(
            log.contains("SRTP keys agreed"),
            "a debug log was kept:\n{log}"
        );
        let mut secrets: Vec<String> = vec![KEY.into(), KEY2.into()];
        for c in offered
            .iter()
            .chain(std::iter::once(&CryptoLine::Usable(ours)))
        {
            if let CryptoLine::Usable(c) = c {
                let value = c.to_value();
                let b64 = value.rsplit("inline:").next().expect("inline").to_owned();
                secrets.push(b64);
            }
        }
        for s in &secrets {
            assert!(!log.contains(s.as_str()), "a key in the log:\n{log}");
            // Nor its first bytes as a Debug list of numbers.
            let bytes = key_bytes(s);
            let debug = format!("{:?}", &bytes[..4])
                .trim_end_matches(']')
                .to_owned();
            assert!(!log.contains(&debug), "key bytes in the log:\n{log}");
        }
    })
    .await;
}
