//! Pure decisions of the B2BUA, each with its tests: what the caller hears when the AI
//! leg fails, which methods are allowed, which trunk headers are never trusted, and
//! what identity the AI leg presents.

use crate::sip::message::{Message, Method, NameAddr};
use crate::sip::transport::Transport;

/// RFC 3261 20.5: what we do, advertised on OPTIONS answers, 405s and dialogs.
pub const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, INFO, REFER";

/// Option tags we support (none yet beyond the baseline; sent as an empty list).
pub const SUPPORTED: &str = "";

/// The prefix of headers only handoff may write: never trusted from a trunk.
pub const OPENCX_PREFIX: &str = "X-OPENCX-";

/// RFC 5630 3.1 and RFC 3261 26.2.2: a `sips:` Request-URI asks for TLS on
/// every hop, so one that arrived over UDP or TCP was not protected on the last
/// hop and is refused. The code is RFC 3261 8.2.2.1's for a Request-URI the UAS
/// does not take: 416 (Unsupported URI Scheme), as `sips:` is not served on a
/// plain transport. TLS is where `sips:` is taken; `sip:` is taken over anything.
pub fn sips_over_plain_transport(request_uri: &str, transport: Transport) -> bool {
    let sips = request_uri
        .get(..5)
        .is_some_and(|s| s.eq_ignore_ascii_case("sips:"));
    sips && transport != Transport::Tls
}

/// The status a `sips:` request over a plain transport gets (see
/// [`sips_over_plain_transport`]).
pub const SIPS_OVER_PLAIN_STATUS: u16 = 416;

/// How handoff treats a request method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MethodSupport {
    Supported,
    /// Known to SIP but not done here: 405 with Allow.
    NotAllowed,
    /// Unknown method: 501.
    NotImplemented,
}

pub fn method_support(m: &Method) -> MethodSupport {
    match m {
        Method::Invite
        | Method::Ack
        | Method::Cancel
        | Method::Bye
        | Method::Options
        | Method::Update
        | Method::Info
        | Method::Refer => MethodSupport::Supported,
        Method::Register
        | Method::Notify
        | Method::Subscribe
        | Method::Prack
        | Method::Message
        | Method::Publish => MethodSupport::NotAllowed,
        Method::Extension(_) => MethodSupport::NotImplemented,
    }
}

/// What the caller is told when the AI leg ends without an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AiOutcome {
    /// The AI agent answered with this final status (300-699).
    Status(u16),
    /// No final answer within Timer B or the configured answer timeout.
    Timeout,
    /// The AI agent could not be reached (DNS, connection, send failure).
    Unreachable,
}

/// The final response for the caller when the AI leg fails. Statuses that only make
/// sense between handoff and the AI agent (redirects, auth challenges, 481/487/489)
/// are not passed through: the caller could do nothing with them.
pub fn caller_status_for_ai_failure(outcome: AiOutcome) -> u16 {
    match outcome {
        AiOutcome::Timeout => 480,
        AiOutcome::Unreachable => 503,
        AiOutcome::Status(s) => match s {
            300..=399 => 480,
            401 | 407 => 503,
            408 => 480,
            481 | 487 | 489 | 491 => 500,
            400..=699 => s,
            _ => 500,
        },
    }
}

/// Remove every `X-OPENCX-*` header a trunk sent: only handoff sets them. Returns how
/// many were removed.
pub fn strip_spoofed_headers(msg: &mut Message) -> usize {
    msg.remove_prefixed(OPENCX_PREFIX)
}

/// The From value of the AI leg: the caller's display name and E.164 number, or
/// anonymous (RFC 3323) when the number is withheld or unusable.
pub fn ai_leg_from(
    caller_display: Option<&str>,
    caller_e164: Option<&str>,
    host: &str,
    tag: &str,
) -> String {
    match caller_e164 {
        Some(num) if num.starts_with('+') && num[1..].bytes().all(|b| b.is_ascii_digit()) => {
            let display = caller_display
                .filter(|d| crate::sip::message::check_value(d).is_ok() && d.len() <= 100);
            NameAddr::format(display, &format!("sip:{num}@{host}"), Some(tag))
        }
        _ => NameAddr::format(
            Some("Anonymous"),
            "sip:anonymous@anonymous.invalid",
            Some(tag),
        ),
    }
}

/// The option tags of a Require header we do not support (RFC 3261 8.2.2.3: 420).
pub fn unsupported_required(msg: &Message) -> Vec<String> {
    msg.header_values("Require").map(str::to_owned).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::parse;
    use bytes::Bytes;

    #[test]
    fn sips_is_refused_over_udp_and_tcp_and_taken_over_tls() {
        for t in [Transport::Udp, Transport::Tcp] {
            assert!(sips_over_plain_transport("sips:ai@handoff.example", t));
            assert!(sips_over_plain_transport("SIPS:ai@handoff.example", t));
            assert!(!sips_over_plain_transport("sip:ai@handoff.example", t));
        }
        assert!(!sips_over_plain_transport(
            "sips:ai@handoff.example",
            Transport::Tls
        ));
        assert!(!sips_over_plain_transport("sip", Transport::Udp));
    }

    #[test]
    fn ai_failures_map_to_fitting_caller_statuses() {
        assert_eq!(caller_status_for_ai_failure(AiOutcome::Status(486)), 486);
        assert_eq!(caller_status_for_ai_failure(AiOutcome::Status(603)), 603);
        assert_eq!(caller_status_for_ai_failure(AiOutcome::Status(503)), 503);
        assert_eq!(caller_status_for_ai_failure(AiOutcome::Status(404)), 404);
        assert_eq!(caller_status_for_ai_failure(AiOutcome::Status(302)), 480);
        assert_eq!(caller_status_for_ai_failure(AiOutcome::Status(407)), 503);
        assert_eq!(caller_status_for_ai_failure(AiOutcome::Status(401)), 503);
        assert_eq!(caller_status_for_ai_failure(AiOutcome::Status(481)), 500);
        assert_eq!(caller_status_for_ai_failure(AiOutcome::Status(408)), 480);
        assert_eq!(caller_status_for_ai_failure(AiOutcome::Timeout), 480);
        assert_eq!(caller_status_for_ai_failure(AiOutcome::Unreachable), 503);
    }

    #[test]
    fn method_support_table() {
        assert_eq!(method_support(&Method::Invite), MethodSupport::Supported);
        assert_eq!(method_support(&Method::Info), MethodSupport::Supported);
        assert_eq!(method_support(&Method::Register), MethodSupport::NotAllowed);
        assert_eq!(method_support(&Method::Refer), MethodSupport::Supported);
        assert_eq!(
            method_support(&Method::Extension("FOO".into())),
            MethodSupport::NotImplemented
        );
        for m in ALLOW.split(", ") {
            assert_eq!(
                method_support(&Method::parse(m).unwrap()),
                MethodSupport::Supported,
                "{m}"
            );
        }
    }

    #[test]
    fn spoofed_opencx_headers_are_stripped_whatever_their_case() {
        let mut m = parse(Bytes::from_static(b"INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\nX-OPENCX-SESSION-ID: spoofed\r\nx-opencx-zendesk-ticket-id: 1\r\nX-Other: keep\r\n\r\n")).unwrap();
        assert_eq!(strip_spoofed_headers(&mut m), 2);
        assert!(m.header("X-OPENCX-SESSION-ID").is_none());
        assert_eq!(m.header("X-Other"), Some("keep"));
    }

    #[test]
    fn ai_leg_from_carries_display_and_e164_or_anonymous() {
        assert_eq!(
            ai_leg_from(Some("Alice"), Some("+14155551212"), "127.0.0.1", "t"),
            "\"Alice\" <sip:+14155551212@127.0.0.1>;tag=t"
        );
        assert_eq!(
            ai_leg_from(None, None, "127.0.0.1", "t"),
            "\"Anonymous\" <sip:anonymous@anonymous.invalid>;tag=t"
        );
        assert_eq!(
            ai_leg_from(Some("x"), Some("+1415;evil"), "h", "t"),
            "\"Anonymous\" <sip:anonymous@anonymous.invalid>;tag=t"
        );
        assert!(
            ai_leg_from(Some("Bad\r\nVia: x"), Some("+14155551212"), "h", "t")
                .starts_with("<sip:+1")
        );
    }
}
