//! Outbound calls in-process on loopback: an AI agent (a test UA on 127.0.0.2, an
//! `ai_agent` trunk) INVITEs a number; handoff places the carrier leg (a test UA on
//! 127.0.0.3, a carrier trunk with `[trunk.outbound]`) and reports the lifecycle
//! events to a capture subscriber. Used by `outbound_calls.rs` and
//! `outbound_transfer.rs`.

use super::capture::{Capture, Captured};
use super::{
    config_text, handoff_addr, start_with_config, InviteOpts, Received, TestUa, Transport, WAIT,
};
use handoff::server::Server;
use handoff::sip::message::Method;
use serde_json::Value;
use std::net::SocketAddr;
use std::time::Duration;

pub const SECRET: &str = "outbound-test-secret-0123456789";
pub const LIMIT: Duration = Duration::from_secs(40);
pub const SOON: Duration = Duration::from_secs(10);
pub const CALLEE: &str = "+14155550123";
pub const CALLER_ID: &str = "+18005550100";
pub const OTHER_CALLER_ID: &str = "+18005550111";
pub const CARRIER_SDP: &str = "v=0\r\no=callee 3 3 IN IP4 127.0.0.3\r\ns=-\r\nc=IN IP4 127.0.0.3\r\nt=0 0\r\nm=audio 52000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n";
pub const CHALLENGE: &str =
    "Digest realm=\"carrier.test\", nonce=\"abc123\", algorithm=MD5, qop=\"auth\"";

pub struct Rig {
    pub server: Server,
    pub agent: TestUa,
    pub carrier: TestUa,
    pub capture: Capture,
}

/// handoff with an AI agent trunk on 127.0.0.2 for `org-test` and a carrier trunk on
/// 127.0.0.3; `carrier_uri` overrides where outbound calls go; `org_extra` adds keys
/// to the org's `[[outbound]]`.
pub async fn rig(carrier_uri: Option<String>, org_extra: &str) -> Rig {
    rig_with(carrier_uri, org_extra, "").await
}

pub async fn rig_with(carrier_uri: Option<String>, org_extra: &str, keys: &str) -> Rig {
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

pub fn dial(number: &str) -> InviteOpts {
    InviteOpts::default()
        .from("<sip:agent@ai.example>")
        .called(number)
        .header("X-OPENCX-AGENT-ID", "agent-test")
}

/// The agent sends its INVITE and gets 100; the carrier gets the INVITE, which it
/// challenges with 407 and then receives again with credentials.
pub async fn place(r: &mut Rig, opts: &InviteOpts) -> (handoff::sip::message::Message, Received) {
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
pub async fn events(capture: &Capture, n: usize) -> Vec<Value> {
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

pub fn types(got: &[Value]) -> Vec<&str> {
    got.iter()
        .map(|v| v["type"].as_str().unwrap_or_default())
        .collect()
}

pub fn assert_outbound_parties(d: &Value) {
    assert_eq!(d["direction"], "outbound", "{d}");
    assert_eq!(d["from"], CALLER_ID, "{d}");
    assert_eq!(d["to"], CALLEE, "{d}");
    assert_eq!(d["agent_id"], "agent-test", "{d}");
}
