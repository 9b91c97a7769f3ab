//! What to answer a message that could not be parsed (RFC 3261 8.2.2, 16.3): a request
//! whose start line and Via were read gets its status (400, 416, 505) with the problem
//! named in the reason phrase; anything else (a response, an ACK, noise, no readable
//! Via) gets nothing. Pure: the caller sends the answer.

use super::{generate_tag, Header, HeaderName, Message, Method, NameAddr, ParseError};
use std::net::SocketAddr;

/// The response to a message `parse` refused, or `None` when it must be dropped. The
/// top Via gets `received` and `rport` from `source` (RFC 3261 18.2.1, RFC 3581 4), so
/// the response's own top Via says where it goes (`transport::response_peer`).
/// Values copied from the request lose their control characters: a 400 must not carry
/// the bare CR it refuses.
pub fn malformed_response(err: &ParseError, source: SocketAddr, server: &str) -> Option<Message> {
    let req = err.partial()?;
    if !req.is_request() || req.method() == Some(&Method::Ack) {
        return None;
    }
    let mut via = req.top_via()?.clone();
    via.stamp_source(source.ip(), source.port());
    let status = err.status();
    let mut resp = Message::response(status, err.kind.reason());
    let mut first_via = true;
    let mut copied = [false; 4];
    for h in req.headers() {
        let name = h.name();
        if name.is("Via") {
            if first_via {
                // The stamped top Via, then the rest of its line.
                let mut value = via.to_string();
                for rest in super::split_list(h.value()).skip(1) {
                    value.push_str(", ");
                    value.push_str(rest);
                }
                resp.headers.push(clean(name, &value));
                first_via = false;
            } else {
                resp.headers.push(clean(name, h.value()));
            }
            continue;
        }
        // One of each: a repeated Call-ID is the problem being answered, not echoed.
        let Some(slot) = ["From", "To", "Call-ID", "CSeq"]
            .iter()
            .position(|n| name.is(n))
        else {
            continue;
        };
        if std::mem::replace(&mut copied[slot], true) {
            continue;
        }
        let mut value = h.value().to_owned();
        if slot == 1 && !NameAddr::has_tag_param(&value) {
            value.push_str(";tag=");
            value.push_str(&generate_tag());
        }
        resp.headers.push(clean(name, &value));
    }
    resp.push("Server", server.to_owned());
    Some(resp)
}

/// A header copied into our response: control characters become spaces.
fn clean(name: &HeaderName, value: &str) -> Header {
    let value = if super::check_value(value).is_err() {
        value
            .chars()
            .map(|c| {
                if c.is_ascii_control() && c != '\t' {
                    ' '
                } else {
                    c
                }
            })
            .collect()
    } else {
        value.to_owned()
    };
    Header {
        name: name.clone(),
        value,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::parse;
    use bytes::Bytes;

    const SRC: &str = "192.0.2.9:40000";

    fn answer(raw: &str) -> Option<Message> {
        let err = parse(Bytes::copy_from_slice(raw.as_bytes())).expect_err("refused");
        malformed_response(&err, SRC.parse().unwrap(), "handoff-test")
    }

    const INVITE: &str = "INVITE sip:+18005550100@h SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK1;rport\r\nVia: SIP/2.0/UDP 10.0.0.2;branch=z9hG4bK0\r\nFrom: \"A\" <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCall-ID: one\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n";

    #[test]
    fn request_uri_with_spaces_gets_400_to_rport_and_received() {
        let r = answer(&INVITE.replace("sip:+18005550100@h", "sip:+1800 555 0100@h")).unwrap();
        assert_eq!(r.status(), Some(400));
        assert_eq!(r.reason(), Some("Bad Request-URI"));
        let via = r.top_via().unwrap();
        assert_eq!(via.response_port(), 40000);
        assert_eq!(via.received(), Some("192.0.2.9".parse().unwrap()));
        assert_eq!(r.header_count("Via"), 2);
        assert_eq!(r.call_id(), Some("one"));
        assert!(r.to_tag().is_some());
        assert_eq!(r.header("Server"), Some("handoff-test"));
    }

    #[test]
    fn repeated_call_id_is_answered_with_one_call_id() {
        let r = answer(&INVITE.replace("Call-ID: one\r\n", "Call-ID: one\r\nCall-ID: two\r\n"))
            .unwrap();
        assert_eq!(r.reason(), Some("Multiple Call-ID"));
        assert_eq!(r.header_count("Call-ID"), 1);
        assert_eq!(r.call_id(), Some("one"));
    }

    #[test]
    fn bare_cr_is_not_echoed() {
        let r = answer(&INVITE.replace("\"A\"", "\"A\rB\"")).unwrap();
        assert_eq!(r.reason(), Some("Bad Display Name"));
        let wire = r.to_bytes();
        let text = std::str::from_utf8(&wire).unwrap();
        assert!(text.contains("From: \"A B\" <sip:a@b>;tag=1\r\n"), "{text}");
        assert!(!text.replace("\r\n", "").contains('\r'), "{text}");
    }

    #[test]
    fn ack_response_and_unreadable_via_get_nothing() {
        let ack = INVITE
            .replace("INVITE sip:+18005550100@h", "ACK sip:a b@h")
            .replace("1 INVITE", "1 ACK");
        assert!(answer(&ack).is_none());
        assert!(answer("SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nCall-ID: a\r\nCall-ID: b\r\n\r\n").is_none());
        let no_via = INVITE
            .replace("sip:+18005550100@h", "sip:a b@h")
            .replace("Via: SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK1;rport\r\nVia: SIP/2.0/UDP 10.0.0.2;branch=z9hG4bK0\r\n", "");
        assert!(answer(&no_via).is_none());
    }

    #[test]
    fn statuses_follow_the_error() {
        let r = answer(&INVITE.replace("sip:+18005550100@h", "http://x/")).unwrap();
        assert_eq!(r.status(), Some(416));
        let r = answer(&INVITE.replace("h SIP/2.0", "h SIP/3.0")).unwrap();
        assert_eq!(r.status(), Some(505));
    }
}
