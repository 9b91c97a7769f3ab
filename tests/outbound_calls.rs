//! Outbound calls end to end, in-process on loopback: an AI agent (a test UA on
//! 127.0.0.2, an `ai_agent` trunk) INVITEs a number; handoff places the carrier leg
//! (a test UA on 127.0.0.3, a carrier trunk with `[trunk.outbound]`), answers its
//! digest challenge, relays ringing, answer and hang-ups, and reports the lifecycle
//! events to a capture subscriber. The refusals (outside the prefixes, another
//! org's agent) must leave the carrier with nothing.

mod common;

use common::build::{ack_for_non_2xx, AI_SDP};
use common::capture::{Capture, Captured};
use common::media::{rtp, Phone};
use common::scenarios::transfer::{prefetch_url, SIGNING_SECRET};
use common::{
    bounded, cancel_for, config_text, handoff_addr, start_with_config, Dialog, InviteOpts,
    Received, TestUa, Transport, SDP, WAIT,
};
use handoff::server::Server;
use handoff::sip::message::Method;
use serde_json::Value;
use std::net::SocketAddr;
use std::time::Duration;

const SECRET: &str = "outbound-test-secret-0123456789";
const LIMIT: Duration = Duration::from_secs(40);
const SOON: Duration = Duration::from_secs(10);
const CALLEE: &str = "+14155550123";
const CALLER_ID: &str = "+18005550100";
const OTHER_CALLER_ID: &str = "+18005550111";
const CARRIER_SDP: &str = "v=0\r\no=callee 3 3 IN IP4 127.0.0.3\r\ns=-\r\nc=IN IP4 127.0.0.3\r\nt=0 0\r\nm=audio 52000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n";
const CHALLENGE: &str =
    "Digest realm=\"carrier.test\", nonce=\"abc123\", algorithm=MD5, qop=\"auth\"";

struct Rig {
    server: Server,
    agent: TestUa,
    carrier: TestUa,
    capture: Capture,
}

/// handoff with an AI agent trunk on 127.0.0.2 for `org-test` and a carrier trunk on
/// 127.0.0.3; `carrier_uri` overrides where outbound calls go; `org_extra` adds keys
/// to the org's `[[outbound]]`.
async fn rig(carrier_uri: Option<String>, org_extra: &str) -> Rig {
    rig_with(carrier_uri, org_extra, "").await
}

async fn rig_with(carrier_uri: Option<String>, org_extra: &str, keys: &str) -> Rig {
    let capture = Capture::start().await;
    let carrier = TestUa::udp_bound(SocketAddr::from(([127, 0, 0, 3], 0))).await;
    let uri = carrier_uri.unwrap_or_else(|| format!("sip:{}", carrier.local_addr()));
    let extra = format!(
        "webhooks = [{{ url = \"{}\", secret = \"{SECRET}\" }}]\n\
         events.retry_base_ms = 50\nevents.retry_max_ms = 200\n{keys}\n\
         \n[[trunk]]\nname = \"carrier\"\nsources = [\"127.0.0.3\"]\n\
         [trunk.outbound]\nuri = \"{uri}\"\nusername = \"handoff\"\npassword = \"s3cret\"\n\
         \n[[trunk]]\nname = \"agents\"\nkind = \"ai_agent\"\nsources = [\"127.0.0.2\"]\norg_id = \"org-test\"\n\
         agent_ids = [\"agent-test\", \"agent-two\"]\n\
         \n[[trunk]]\nname = \"others\"\nkind = \"ai_agent\"\nsources = [\"127.0.0.4\"]\norg_id = \"org-other\"\n\
         \n[[outbound]]\norg_id = \"org-test\"\ntrunk = \"carrier\"\nallowed_prefixes = [\"+1415\"]\n\
         caller_ids = [\"{CALLER_ID}\", \"{OTHER_CALLER_ID}\"]\n{org_extra}\
         \n[[outbound]]\norg_id = \"org-other\"\ntrunk = \"carrier\"\nallowed_prefixes = [\"+1\"]\ncaller_ids = [\"+18005550199\"]\n\
         \n[[route]]\ndefault = true\norg_id = \"org-test\"\nagent_id = \"agent-test\"\nai_agent_uri = \"{{ai}}\"\n\
         \n[[route]]\nnumber = \"+18005550999\"\norg_id = \"org-other\"\nagent_id = \"agent-other\"\nai_agent_uri = \"{{ai}}\"\n",
        capture.url()
    );
    let server = start_with_config(&config_text(Transport::Udp, 9, &extra)).await;
    let mut agent = TestUa::udp_bound(SocketAddr::from(([127, 0, 0, 2], 0))).await;
    agent.set_peer(handoff_addr(&server, Transport::Udp));
    Rig {
        server,
        agent,
        carrier,
        capture,
    }
}

fn dial(number: &str) -> InviteOpts {
    InviteOpts::default()
        .from("<sip:agent@ai.example>")
        .called(number)
        .header("X-OPENCX-AGENT-ID", "agent-test")
}

/// The agent sends its INVITE and gets 100; the carrier gets the INVITE, which it
/// challenges with 407 and then receives again with credentials.
async fn place(r: &mut Rig, opts: &InviteOpts) -> (handoff::sip::message::Message, Received) {
    let invite = r.agent.invite(opts);
    r.agent.send(&invite).await;
    r.agent.expect_response_to(Method::Invite, 100, WAIT).await;
    let first = r.carrier.expect_request(Method::Invite, WAIT).await;
    r.carrier
        .respond(&first, 407, &[("Proxy-Authenticate", CHALLENGE)], None)
        .await;
    r.carrier.expect_request(Method::Ack, WAIT).await;
    let second = r.carrier.expect_request(Method::Invite, WAIT).await;
    (invite, second)
}

/// The events of the one session, once `n` have come.
async fn events(capture: &Capture, n: usize) -> Vec<Value> {
    let seen = capture
        .wait_for(&format!("{n} events"), SOON, |s| {
            s.iter().filter(|c| c.delivered()).count() >= n
        })
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got: Vec<Value> = capture
        .requests()
        .iter()
        .filter(|c| c.delivered())
        .map(Captured::json)
        .collect();
    assert_eq!(got.len(), n, "exactly {n} events: {got:?}");
    assert!(seen.len() >= n);
    got
}

fn types(got: &[Value]) -> Vec<&str> {
    got.iter()
        .map(|v| v["type"].as_str().unwrap_or_default())
        .collect()
}

fn assert_outbound_parties(d: &Value) {
    assert_eq!(d["direction"], "outbound", "{d}");
    assert_eq!(d["from"], CALLER_ID, "{d}");
    assert_eq!(d["to"], CALLEE, "{d}");
    assert_eq!(d["agent_id"], "agent-test", "{d}");
}

/// A failure response from the carrier, after the digest retry: what the agent gets
/// and the one `phone_call.failed`.
async fn carrier_fails(status: u16, agent_status: u16, category: &str) {
    let mut r = rig(None, "").await;
    let (_invite, carrier_invite) = place(&mut r, &dial(CALLEE)).await;
    r.carrier.respond(&carrier_invite, 180, &[], None).await;
    r.agent.expect_response_to(Method::Invite, 180, WAIT).await;
    r.carrier.respond(&carrier_invite, status, &[], None).await;
    r.carrier.expect_request(Method::Ack, WAIT).await;
    r.agent
        .expect_response_to(Method::Invite, agent_status, WAIT)
        .await;
    let got = events(&r.capture, 3).await;
    assert_eq!(
        types(&got),
        [
            "phone_call.started",
            "conversation.started",
            "phone_call.failed"
        ]
    );
    let d = &got[2]["data"];
    assert_eq!(d["failure_category"], category, "{d}");
    assert_eq!(d["call_ended_by"], Value::Null, "never connected: null");
    assert_eq!(d["custom_data"]["is_outbound"], true, "{d}");
    assert_outbound_parties(d);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answered_outbound_call_reaches_the_callee_with_the_caller_id_and_credentials() {
    bounded(LIMIT, async {
        let mut r = rig(None, "").await;
        let opts = dial(CALLEE).header("X-OPENCX-CALLER-ID", OTHER_CALLER_ID);
        let (invite, carrier_invite) = place(&mut r, &opts).await;
        let m = &carrier_invite.msg;
        assert!(
            m.request_uri()
                .unwrap()
                .starts_with(&format!("sip:{CALLEE}@127.0.0.3:")),
            "{:?}",
            m.request_uri()
        );
        assert!(m.header("To").unwrap().contains(CALLEE));
        assert!(
            m.header("From")
                .unwrap()
                .contains(&format!("sip:{OTHER_CALLER_ID}@")),
            "the caller ID the agent asked for: {:?}",
            m.header("From")
        );
        let auth = m
            .header("Proxy-Authorization")
            .expect("credentials after the 407");
        assert!(
            auth.contains("username=\"handoff\"") && auth.contains("qop=auth"),
            "{auth}"
        );
        assert!(
            m.headers().iter().all(|h| !h
                .name()
                .as_str()
                .to_ascii_uppercase()
                .starts_with("X-OPENCX")),
            "no session header goes to the carrier"
        );
        // Media anchored: the carrier sees handoff's relay, not the agent's SDP address.
        let body = String::from_utf8_lossy(m.body()).into_owned();
        assert!(!body.contains("m=audio 40000"), "SDP is relayed: {body}");

        r.carrier.respond(&carrier_invite, 180, &[], None).await;
        r.agent.expect_response_to(Method::Invite, 180, WAIT).await;
        let ok = r
            .carrier
            .respond(&carrier_invite, 200, &[], Some(CARRIER_SDP))
            .await;
        let agent_ok = r.agent.expect_response_to(Method::Invite, 200, WAIT).await;
        let agent_body = String::from_utf8_lossy(agent_ok.msg.body()).into_owned();
        assert!(
            !agent_body.contains("52000"),
            "callee's SDP relayed: {agent_body}"
        );
        let agent_dlg = Dialog::as_uac(&invite, &agent_ok.msg);
        r.agent.send(&r.agent.ack(&agent_dlg, None)).await;
        r.carrier.expect_request(Method::Ack, WAIT).await;

        // The callee hangs up: the agent gets the BYE; the call ends by the `user`.
        let mut callee_dlg = Dialog::as_uas(&carrier_invite.msg, &ok);
        r.carrier.send(&r.carrier.bye(&mut callee_dlg)).await;
        r.carrier.expect_response_to(Method::Bye, 200, WAIT).await;
        let bye = r.agent.expect_request(Method::Bye, WAIT).await;
        r.agent.respond(&bye, 200, &[], None).await;

        let got = events(&r.capture, 4).await;
        assert_eq!(
            types(&got),
            [
                "phone_call.started",
                "conversation.started",
                "phone_call.answered",
                "phone_call.ended"
            ]
        );
        let started = &got[0]["data"];
        assert_eq!(started["direction"], "outbound");
        assert_eq!(started["from"], OTHER_CALLER_ID);
        assert_eq!(started["to"], CALLEE);
        let ended = &got[3]["data"];
        assert_eq!(ended["call_ended_by"], "user", "{ended}");
        assert_eq!(ended["custom_data"]["is_outbound"], true);
        assert_eq!(got[0]["org_id"], "org-test");
        let _ = &r.server;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_hanging_up_ends_the_call_by_the_agent() {
    bounded(LIMIT, async {
        let mut r = rig(None, "").await;
        let (invite, carrier_invite) = place(&mut r, &dial(CALLEE)).await;
        r.carrier
            .respond(&carrier_invite, 200, &[], Some(CARRIER_SDP))
            .await;
        let agent_ok = r.agent.expect_response_to(Method::Invite, 200, WAIT).await;
        let mut dlg = Dialog::as_uac(&invite, &agent_ok.msg);
        r.agent.send(&r.agent.ack(&dlg, None)).await;
        r.carrier.expect_request(Method::Ack, WAIT).await;
        r.agent.send(&r.agent.bye(&mut dlg)).await;
        r.agent.expect_response_to(Method::Bye, 200, WAIT).await;
        let bye = r.carrier.expect_request(Method::Bye, WAIT).await;
        r.carrier.respond(&bye, 200, &[], None).await;
        let got = events(&r.capture, 4).await;
        assert_eq!(got[3]["data"]["call_ended_by"], "agent");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_callee_is_486_to_the_agent_and_failed_busy() {
    bounded(LIMIT, carrier_fails(486, 486, "busy")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejecting_callee_is_603_to_the_agent_and_failed_rejected() {
    bounded(LIMIT, carrier_fails(603, 603, "rejected")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_answer_within_the_ring_timeout_is_480_and_a_cancel_to_the_carrier() {
    bounded(LIMIT, async {
        let mut r = rig(None, "ring_timeout_secs = 1\n").await;
        let (_invite, carrier_invite) = place(&mut r, &dial(CALLEE)).await;
        r.carrier.respond(&carrier_invite, 180, &[], None).await;
        r.agent.expect_response_to(Method::Invite, 180, WAIT).await;
        let cancel = r
            .carrier
            .expect_request(Method::Cancel, Duration::from_secs(4))
            .await;
        r.carrier.respond(&cancel, 200, &[], None).await;
        r.carrier.respond(&carrier_invite, 487, &[], None).await;
        r.agent.expect_response_to(Method::Invite, 480, WAIT).await;
        let got = events(&r.capture, 3).await;
        let d = &got[2]["data"];
        assert_eq!(d["failure_category"], "no_answer", "{d}");
        assert_eq!(d["call_ended_by"], Value::Null);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_trunk_is_503_to_the_agent_and_a_trunk_error() {
    bounded(LIMIT, async {
        let closed = std::net::TcpListener::bind("127.0.0.3:0")
            .unwrap()
            .local_addr()
            .unwrap();
        // Nothing listens there once the listener is dropped: the connect is refused.
        let mut r = rig(Some(format!("sip:{closed};transport=tcp")), "").await;
        let invite = r.agent.invite(&dial(CALLEE));
        r.agent.send(&invite).await;
        r.agent.expect_response_to(Method::Invite, 100, WAIT).await;
        r.agent
            .expect_response_to(Method::Invite, 503, Duration::from_secs(10))
            .await;
        let got = events(&r.capture, 3).await;
        let d = &got[2]["data"];
        assert_eq!(d["failure_category"], "trunk_error", "{d}");
        assert_eq!(d["call_ended_by"], Value::Null);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_cancelling_cancels_the_carrier_leg() {
    bounded(LIMIT, async {
        let mut r = rig(None, "").await;
        let (invite, carrier_invite) = place(&mut r, &dial(CALLEE)).await;
        r.carrier.respond(&carrier_invite, 180, &[], None).await;
        r.agent.expect_response_to(Method::Invite, 180, WAIT).await;
        r.agent.send(&cancel_for(&invite)).await;
        r.agent.expect_response_to(Method::Cancel, 200, WAIT).await;
        let cancel = r.carrier.expect_request(Method::Cancel, WAIT).await;
        r.carrier.respond(&cancel, 200, &[], None).await;
        let terminated = r.carrier.respond(&carrier_invite, 487, &[], None).await;
        let _ = terminated;
        let resp = r.agent.expect_response_to(Method::Invite, 487, WAIT).await;
        r.agent.send(&ack_for_non_2xx(&invite, &resp.msg)).await;
        let got = events(&r.capture, 3).await;
        assert_eq!(got[2]["data"]["call_ended_by"], Value::Null);
    })
    .await;
}

/// Refused outbound INVITEs: 403 to the agent, nothing at the carrier, no session.
async fn refused(opts: InviteOpts, from_other_trunk: bool) -> Rig {
    let mut r = rig(None, "").await;
    if from_other_trunk {
        let mut other = TestUa::udp_bound(SocketAddr::from(([127, 0, 0, 4], 0))).await;
        other.set_peer(handoff_addr(&r.server, Transport::Udp));
        r.agent = other;
    }
    let invite = r.agent.invite(&opts);
    r.agent.send(&invite).await;
    let resp = r.agent.expect_response_to(Method::Invite, 403, WAIT).await;
    r.agent.send(&ack_for_non_2xx(&invite, &resp.msg)).await;
    r.carrier
        .expect_silence("any request", Duration::from_millis(500), |_| true)
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(r.capture.requests().is_empty(), "no session, no event");
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_number_outside_the_allowed_prefixes_is_403_and_nothing_is_dialled() {
    bounded(LIMIT, async {
        let r = refused(dial("+19005550123"), false).await;
        let m = r.server.metrics().render_prometheus();
        assert!(
            m.contains("handoff_outbound_refused_destination_total 1"),
            "{m}"
        );
        refused(dial("4155550123"), false).await;
        refused(
            dial(CALLEE).header("X-OPENCX-CALLER-ID", "+19005550000"),
            false,
        )
        .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_claiming_another_org_is_403_and_nothing_is_dialled() {
    bounded(LIMIT, async {
        // An agent of org-other (a route names it) on org-test's trunk.
        let r = refused(
            InviteOpts::default()
                .called(CALLEE)
                .header("X-OPENCX-AGENT-ID", "agent-other"),
            false,
        )
        .await;
        let m = r.server.metrics().render_prometheus();
        assert!(
            m.contains("handoff_outbound_refused_identity_total 1"),
            "{m}"
        );
        // org-test's agent on org-other's trunk.
        refused(dial(CALLEE), true).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_org_limit_is_503_with_retry_after() {
    bounded(LIMIT, async {
        let mut r = rig(None, "max_calls = 1\n").await;
        let (_invite, _carrier_invite) = place(&mut r, &dial(CALLEE)).await;
        let second = r.agent.invite(&dial(CALLEE));
        r.agent.send(&second).await;
        let resp = r.agent.expect_response_to(Method::Invite, 503, WAIT).await;
        assert!(resp.msg.header("Retry-After").is_some());
        let _ = SDP;
    })
    .await;
}

/// An answered outbound call: the agent's dialog and the callee's.
async fn answered(r: &mut Rig) -> (Dialog, Dialog) {
    let (invite, carrier_invite) = place(r, &dial(CALLEE)).await;
    let ok = r
        .carrier
        .respond(&carrier_invite, 200, &[], Some(CARRIER_SDP))
        .await;
    let agent_ok = r.agent.expect_response_to(Method::Invite, 200, WAIT).await;
    let agent_dlg = Dialog::as_uac(&invite, &agent_ok.msg);
    r.agent.send(&r.agent.ack(&agent_dlg, None)).await;
    r.carrier.expect_request(Method::Ack, WAIT).await;
    (agent_dlg, Dialog::as_uas(&carrier_invite.msg, &ok))
}

/// The callee (the carrier side) may not move the AI agent anywhere with a REFER,
/// even to a target the allow-list takes: 403, nothing dialled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refer_from_the_callee_is_403_and_nothing_is_dialled() {
    bounded(LIMIT, async {
        let target = TestUa::udp_bound(SocketAddr::from(([127, 0, 0, 5], 0))).await;
        let keys = format!(
            "transfer.allow = [\"sip:support@{0}\"]\ntransfer.destination = [{{ name = \"zendesk\", uri = \"sip:support@{0}\" }}]",
            target.local_addr()
        );
        let mut r = rig_with(None, "", &keys).await;
        let (_agent_dlg, mut callee_dlg) = answered(&mut r).await;
        let mut refer = r.carrier.in_dialog(&mut callee_dlg, Method::Refer, None);
        refer
            .push_checked("Refer-To", &format!("<sip:support@{}>", target.local_addr()))
            .unwrap();
        r.carrier.send(&refer).await;
        r.carrier.expect_response_to(Method::Refer, 403, WAIT).await;
        let mut target = target;
        target
            .expect_silence("any request", Duration::from_millis(500), |_| true)
            .await;
    })
    .await;
}

/// An outbound call answered with real media: the agent's and the callee's
/// phones, and the relay addresses each must send to.
struct MediaUp {
    agent_dlg: Dialog,
    callee_dlg: Dialog,
    agent: Phone,
    callee: Phone,
    relay_for_agent: SocketAddr,
    relay_for_callee: SocketAddr,
    session_id: String,
}

/// The relay address an SDP body points at.
fn sdp_target(body: &[u8]) -> SocketAddr {
    let text = String::from_utf8_lossy(body);
    let port: u16 = text
        .lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .and_then(|r| r.split(' ').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("an audio port in {text}"));
    SocketAddr::from(([127, 0, 0, 1], port))
}

async fn answered_with_media(r: &mut Rig) -> MediaUp {
    let (agent, callee) = (Phone::new().await, Phone::new().await);
    let mut opts = dial(CALLEE);
    opts.sdp = Some(agent.sdp(SDP));
    let (invite, carrier_invite) = place(r, &opts).await;
    let relay_for_callee = sdp_target(carrier_invite.msg.body());
    let ok = r
        .carrier
        .respond(
            &carrier_invite,
            200,
            &[],
            Some(&callee.sdp(&CARRIER_SDP.replace("127.0.0.3", "127.0.0.1"))),
        )
        .await;
    let agent_ok = r.agent.expect_response_to(Method::Invite, 200, WAIT).await;
    let relay_for_agent = sdp_target(agent_ok.msg.body());
    let agent_dlg = Dialog::as_uac(&invite, &agent_ok.msg);
    r.agent.send(&r.agent.ack(&agent_dlg, None)).await;
    r.carrier.expect_request(Method::Ack, WAIT).await;
    let started = events(&r.capture, 3).await;
    let session_id = started[0]["data"]["session_id"]
        .as_str()
        .or(started[0]["session_id"].as_str())
        .unwrap_or_default()
        .to_owned();
    MediaUp {
        agent_dlg,
        callee_dlg: Dialog::as_uas(&carrier_invite.msg, &ok),
        agent,
        callee,
        relay_for_agent,
        relay_for_callee,
        session_id,
    }
}

/// A rig whose transfers go to "Zendesk", a test UA on 127.0.0.5, for the
/// prefetch webhook signed with the transfer rigs' key.
async fn transfer_rig() -> (Rig, TestUa, String) {
    let zendesk = TestUa::udp_bound(SocketAddr::from(([127, 0, 0, 5], 0))).await;
    let target = format!("sip:support@{}", zendesk.local_addr());
    let keys = format!(
        "transfer.allow = [\"{target}\"]\n\
         transfer.destination = [{{ name = \"zendesk\", uri = \"{target}\" }}]\n\
         http.signing_keys = [{{ kid = \"k1\", secret = \"{SIGNING_SECRET}\", issuer = \"t\" }}]"
    );
    (rig_with(None, "", &keys).await, zendesk, target)
}

/// The agent's REFER to `target`, answered 202, and the first NOTIFY (100).
async fn agent_refers(r: &mut Rig, m: &mut MediaUp, target: &str) -> u32 {
    let mut refer = r.agent.in_dialog(&mut m.agent_dlg, Method::Refer, None);
    refer
        .push_checked("Refer-To", &format!("<{target}>"))
        .expect("header");
    r.agent.send(&refer).await;
    r.agent.expect_response_to(Method::Refer, 202, WAIT).await;
    let n = r.agent.expect_request(Method::Notify, WAIT).await;
    assert_eq!(
        String::from_utf8_lossy(n.msg.body()),
        "SIP/2.0 100 Trying\r\n"
    );
    r.agent.respond(&n, 200, &[], None).await;
    refer.cseq().expect("CSeq").seq
}

/// `packet` from `from` to `relay` arrives unchanged at `to` (RTP from other
/// streams that arrives first is skipped).
async fn crosses(from: &Phone, relay: SocketAddr, to: &Phone, packet: Vec<u8>, what: &str) {
    from.rtp.send_to(&packet, relay).await.expect("send");
    loop {
        let (p, _) = Phone::recv(&to.rtp, WAIT, what).await;
        if p == packet {
            return;
        }
    }
}

/// Issue 15: the AI agent's REFER on an outbound call moves the callee to
/// Zendesk exactly as a caller: the callee's number in From, the session's
/// headers and the ticket the prefetch webhook stamped; the callee's media
/// goes to Zendesk and nothing more to the agent, whose leg is released
/// after the final NOTIFY; the callee hanging up ends it by the `user`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agents_refer_moves_the_callee_to_zendesk_with_the_session_headers() {
    bounded(LIMIT, async {
        let (mut r, mut zendesk, target) = transfer_rig().await;
        let mut m = answered_with_media(&mut r).await;
        crosses(
            &m.callee,
            m.relay_for_callee,
            &m.agent,
            rtp(1, 0x1111),
            "callee to agent",
        )
        .await;
        crosses(
            &m.agent,
            m.relay_for_agent,
            &m.callee,
            rtp(1, 0x2222),
            "agent to callee",
        )
        .await;

        // Zendesk's prefetch webhook finds the live session by the callee's number.
        let body =
            format!(r#"{{"ticket_id": 4711, "caller_phone": "{CALLEE}", "requester_phone": ""}}"#);
        let resp: Value = reqwest::Client::new()
            .post(prefetch_url(&r.server))
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .await
            .expect("webhook")
            .json()
            .await
            .expect("json");
        assert_eq!(
            resp["success"], true,
            "the outbound session is stamped: {resp}"
        );

        let refer_seq = agent_refers(&mut r, &mut m, &target).await;
        let inv = zendesk.expect_request(Method::Invite, WAIT).await;
        let from = inv.msg.from_header().expect("From");
        assert_eq!(
            from.uri.user.as_deref(),
            Some(CALLEE),
            "the callee for Zendesk"
        );
        let h = |n: &str| inv.msg.header(n).map(str::to_owned);
        assert_eq!(
            h("X-OPENCX-SESSION-ID").as_deref(),
            Some(m.session_id.as_str())
        );
        assert_eq!(h("X-OPENCX-AGENT-ID").as_deref(), Some("agent-test"));
        assert_eq!(h("X-OPENCX-TRANSFER").as_deref(), Some("true"));
        assert_eq!(h("X-OPENCX-ZENDESK-TICKET-ID").as_deref(), Some("4711"));
        let to_relay = sdp_target(inv.msg.body());
        assert!(
            ![m.relay_for_agent, m.relay_for_callee].contains(&to_relay),
            "Zendesk gets ports of its own"
        );
        // The agent keeps the callee until Zendesk answers.
        crosses(
            &m.callee,
            m.relay_for_callee,
            &m.agent,
            rtp(2, 0x1111),
            "callee to agent while ringing",
        )
        .await;

        let zphone = Phone::new().await;
        zendesk.respond(&inv, 180, &[], None).await;
        let z_ok = zendesk
            .respond(&inv, 200, &[], Some(&zphone.sdp(AI_SDP)))
            .await;
        zendesk.expect_request(Method::Ack, WAIT).await;
        let n = r.agent.expect_request(Method::Notify, WAIT).await;
        assert_eq!(String::from_utf8_lossy(n.msg.body()), "SIP/2.0 200 OK\r\n");
        assert_eq!(
            n.msg.header("Event"),
            Some(format!("refer;id={refer_seq}").as_str())
        );
        r.agent.respond(&n, 200, &[], None).await;
        let bye = r.agent.expect_request(Method::Bye, WAIT).await;
        r.agent.respond(&bye, 200, &[], None).await;

        // The callee, on the ports it always had, now talks with Zendesk.
        for seq in 3..8 {
            crosses(
                &m.callee,
                m.relay_for_callee,
                &zphone,
                rtp(seq, 0x1111),
                "callee to Zendesk",
            )
            .await;
        }
        crosses(
            &zphone,
            to_relay,
            &m.callee,
            rtp(1, 0x3333),
            "Zendesk to callee",
        )
        .await;
        Phone::assert_silent(
            &m.agent.rtp,
            Duration::from_millis(300),
            "the released agent",
        )
        .await;

        // The callee hangs up: Zendesk gets the BYE; the call ends by the `user`.
        r.carrier.send(&r.carrier.bye(&mut m.callee_dlg)).await;
        r.carrier.expect_response_to(Method::Bye, 200, WAIT).await;
        let zbye = zendesk.expect_request(Method::Bye, WAIT).await;
        assert_eq!(zbye.msg.call_id(), z_ok.call_id());
        zendesk.respond(&zbye, 200, &[], None).await;

        let got = events(&r.capture, 5).await;
        assert_eq!(
            types(&got),
            [
                "phone_call.started",
                "conversation.started",
                "phone_call.answered",
                "phone_call.transferred",
                "phone_call.ended",
            ]
        );
        let transferred = &got[3]["data"];
        assert_eq!(transferred["outcome"], "completed", "{transferred}");
        assert_outbound_parties(transferred);
        let ended = &got[4];
        assert_eq!(ended["data"]["call_ended_by"], "user", "{ended}");
        assert_eq!(ended["data"]["custom_data"]["is_outbound"], true);
    })
    .await;
}

/// A transfer Zendesk refuses leaves the callee with the agent (media both
/// ways, a final NOTIFY 486); the agent hanging up then ends the call by the
/// `agent`, and a second REFER from the callee is still refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_transfer_leaves_the_callee_with_the_agent() {
    bounded(LIMIT, async {
        let (mut r, mut zendesk, target) = transfer_rig().await;
        let mut m = answered_with_media(&mut r).await;
        agent_refers(&mut r, &mut m, &target).await;
        let inv = zendesk.expect_request(Method::Invite, WAIT).await;
        zendesk.respond(&inv, 486, &[], None).await;
        zendesk.expect_request(Method::Ack, WAIT).await;
        let n = r.agent.expect_request(Method::Notify, WAIT).await;
        assert_eq!(
            String::from_utf8_lossy(n.msg.body()),
            "SIP/2.0 486 Busy Here\r\n"
        );
        r.agent.respond(&n, 200, &[], None).await;

        crosses(
            &m.callee,
            m.relay_for_callee,
            &m.agent,
            rtp(1, 0x1111),
            "callee to agent after the failure",
        )
        .await;
        crosses(
            &m.agent,
            m.relay_for_agent,
            &m.callee,
            rtp(1, 0x2222),
            "agent to callee after the failure",
        )
        .await;

        // The callee still may not transfer anyone.
        let mut refer = r.carrier.in_dialog(&mut m.callee_dlg, Method::Refer, None);
        refer
            .push_checked("Refer-To", &format!("<{target}>"))
            .expect("header");
        r.carrier.send(&refer).await;
        r.carrier.expect_response_to(Method::Refer, 403, WAIT).await;

        r.agent.send(&r.agent.bye(&mut m.agent_dlg)).await;
        r.agent.expect_response_to(Method::Bye, 200, WAIT).await;
        let bye = r.carrier.expect_request(Method::Bye, WAIT).await;
        r.carrier.respond(&bye, 200, &[], None).await;
        let ended = r
            .capture
            .wait_for("phone_call.ended", SOON, |s| {
                s.iter()
                    .any(|c| c.delivered() && c.json()["type"] == "phone_call.ended")
            })
            .await;
        let ended = ended
            .iter()
            .map(Captured::json)
            .find(|e| e["type"] == "phone_call.ended")
            .expect("ended");
        assert_eq!(ended["data"]["call_ended_by"], "agent", "{ended}");
        zendesk
            .expect_silence("a second INVITE", Duration::from_millis(300), |_| true)
            .await;
    })
    .await;
}
