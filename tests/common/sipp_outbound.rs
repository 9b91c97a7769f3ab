//! The handoff configuration the SIPp outbound tests share (`outbound_sipp.rs`,
//! `outbound_sipp_failures.rs`, `outbound_sipp_transfer.rs`): a carrier trunk
//! whose outbound side SIPp plays, org-test's AI agent trunk on 127.0.0.2 and
//! what org-test may dial. Included with `#[path]` beside `common/sipp.rs`.

#![allow(dead_code)]

/// The number the agent dials (inside org-test's `+1415` prefix).
pub const CALLEE: &str = "+14155550123";
/// org-test's caller ID, presented to the carrier.
pub const CALLER_ID: &str = "+18005550100";
/// org-test's agent (its default route names it).
pub const AGENT: &str = "agent-test";
/// The carrier's digest credentials (the SIPp carrier checks them).
pub const USERNAME: &str = "handoff";
pub const PASSWORD: &str = "s3cret-pass";

/// Relay media, and events to `hook` signed with `secret`, retried fast.
pub fn relay_with_events(hook: &str, secret: &str) -> String {
    format!(
        r#"mode = "relay"

[events]
retry_base_ms = 50
retry_max_ms = 200

[[webhooks]]
url = "{hook}"
secret = "{secret}"
"#
    )
}

/// The carrier trunk at `carrier_uri` with credentials, org-test's agent trunk
/// on 127.0.0.2, org-test's `[[outbound]]` (`+1415`, [`CALLER_ID`], ringing at
/// most `ring_secs`) and its default route. Array tables only: what follows
/// may add more of them.
pub fn outbound_trunks(carrier_uri: &str, ring_secs: u64) -> String {
    format!(
        r#"
[[trunk]]
name = "carrier"
sources = ["127.0.0.1"]
[trunk.outbound]
uri = "{carrier_uri}"
username = "{USERNAME}"
password = "{PASSWORD}"

[[trunk]]
name = "agents"
kind = "ai_agent"
sources = ["127.0.0.2"]
org_id = "org-test"

[[outbound]]
org_id = "org-test"
trunk = "carrier"
allowed_prefixes = ["+1415"]
caller_ids = ["{CALLER_ID}"]
ring_timeout_secs = {ring_secs}

[[route]]
default = true
org_id = "org-test"
agent_id = "{AGENT}"
ai_agent_uri = "sip:ai@127.0.0.1:9"
"#
    )
}
