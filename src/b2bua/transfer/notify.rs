//! The pieces of the NOTIFYs that report a transfer's progress to the AI agent
//! (RFC 3515 2.4.4-2.4.5, RFC 6665 7.2, RFC 4488 for `Refer-Sub: false`).

use crate::sip::message::default_reason;

/// `Content-Type` of a NOTIFY body (RFC 3515 2.4.5, RFC 3420).
pub const SIPFRAG_CONTENT_TYPE: &str = "message/sipfrag;version=2.0";

/// `Subscription-State` of the last NOTIFY (RFC 3515 2.4.7, RFC 6665 4.1.3).
pub const SUBSCRIPTION_TERMINATED: &str = "terminated;reason=noresource";

/// `Event` of every NOTIFY: the REFER's CSeq number as id (RFC 3515 2.4.6).
pub fn event_value(refer_cseq: u32) -> String {
    format!("refer;id={refer_cseq}")
}

/// `Subscription-State` while the transfer is running.
pub fn subscription_active(expires_secs: u32) -> String {
    format!("active;expires={expires_secs}")
}

/// Longest reason phrase written into a sipfrag.
const MAX_REASON: usize = 128;

/// A NOTIFY body: the full status line of the transfer leg, CRLF-terminated
/// (`SIP/2.0 100 Trying\r\n`); receivers break on a body without `SIP/2.0`.
/// The reason is stripped of control characters and cut to 128 bytes; an empty one
/// gets the RFC 3261 phrase. A status outside 100-699 is reported as 500.
pub fn sipfrag(status: u16, reason: &str) -> String {
    let status = if (100..=699).contains(&status) {
        status
    } else {
        500
    };
    let clean: String = reason.chars().filter(|c| !c.is_control()).collect();
    let clean = clean.trim();
    let mut end = clean.len().min(MAX_REASON);
    while !clean.is_char_boundary(end) {
        end -= 1;
    }
    let clean = clean[..end].trim_end();
    let reason = if clean.is_empty() {
        default_reason(status)
    } else {
        clean
    };
    format!("SIP/2.0 {status} {reason}\r\n")
}

/// RFC 4488 4: `Refer-Sub: false` asks for no implicit subscription, so no NOTIFYs;
/// the 2xx that accepts such a REFER carries `Refer-Sub: false` too. Anything else,
/// or no header, keeps the subscription.
pub fn refer_sub_disabled(value: Option<&str>) -> bool {
    value.is_some_and(|v| {
        v.split(';')
            .next()
            .is_some_and(|b| b.trim().eq_ignore_ascii_case("false"))
    })
}
