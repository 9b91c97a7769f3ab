//! Our Contact for a leg: where the peer sends its in-dialog requests.

use crate::sip::transport::Transport;

/// Our Contact for a leg reached over `transport`. `sips`: the dialog is a `sips:` one
/// (its Request-URI was `sips:`); RFC 3261 8.1.1.8 and 12.1.1 then want a `sips:`
/// Contact. A TLS leg of a `sip:` dialog says `;transport=tls`: RFC 5630 deprecates
/// the parameter, but it is what carriers (Twilio among them) write and read for TLS
/// hop by hop, and a `sips:` Contact would ask for TLS on every hop beyond handoff.
pub(super) fn contact_for(host: &str, port: u16, transport: Transport, sips: bool) -> String {
    let host = crate::sip::message::bracket_v6(host);
    if sips && transport == Transport::Tls {
        return format!("<sips:handoff@{host}:{port}>");
    }
    format!("<sip:handoff@{host}:{port}{}>", transport.uri_param())
}

/// Is this Request-URI a `sips:` one?
pub(super) fn is_sips(uri: &str) -> bool {
    uri.get(..5)
        .is_some_and(|s| s.eq_ignore_ascii_case("sips:"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_transport_says_itself_in_the_contact() {
        assert_eq!(
            contact_for("192.0.2.1", 5060, Transport::Udp, false),
            "<sip:handoff@192.0.2.1:5060>"
        );
        assert_eq!(
            contact_for("192.0.2.1", 5060, Transport::Tcp, false),
            "<sip:handoff@192.0.2.1:5060;transport=tcp>"
        );
        assert_eq!(
            contact_for("::1", 5061, Transport::Tls, false),
            "<sip:handoff@[::1]:5061;transport=tls>"
        );
    }

    #[test]
    fn a_sips_dialog_over_tls_gets_a_sips_contact() {
        assert_eq!(
            contact_for("sbc.example.com", 5061, Transport::Tls, true),
            "<sips:handoff@sbc.example.com:5061>"
        );
        assert!(is_sips("SIPS:a@b"));
        assert!(!is_sips("sip:a@b"));
        assert!(!is_sips("sip"));
    }
}
