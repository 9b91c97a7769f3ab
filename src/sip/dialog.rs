//! Dialog identity and state (RFC 3261 12): Call-ID, tags, CSeq, route set, remote
//! target; building in-dialog requests. Knows nothing of what a call means.

use crate::sip::message::{generate_branch, CSeq, Message, Method, NameAddr, Via};
use crate::sip::transport::Peer;

#[derive(Debug, Clone)]
pub struct Dialog {
    pub call_id: String,
    pub local_tag: String,
    /// None while no response with a To tag has arrived (UAC side, early).
    pub remote_tag: Option<String>,
    /// Our From/To value without its tag, exactly as first sent.
    pub local_uri: String,
    pub remote_uri: String,
    pub local_cseq: u32,
    pub remote_cseq: Option<u32>,
    /// Route headers for requests we send, in order (RFC 3261 12.1.1 / 12.1.2).
    pub route_set: Vec<String>,
    /// Request-URI of requests we send: the peer's Contact.
    pub remote_target: String,
    /// Where requests of this dialog are sent.
    pub peer: Peer,
    /// Our Contact header value.
    pub local_contact: String,
}

/// Why an in-dialog request is refused (RFC 3261 12.2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InDialogError {
    #[error("CSeq lower than the last one seen")]
    CSeqOutOfOrder,
    #[error("request has no CSeq")]
    NoCSeq,
}

impl Dialog {
    /// RFC 3261 12.1.1: the UAS side, from the INVITE we answer. `peer` is where the
    /// INVITE came from: requests go back along the same flow (NAT-friendly, and the
    /// only way back over a TCP connection the peer opened).
    pub fn uas(
        invite: &Message,
        local_tag: String,
        local_contact: String,
        peer: Peer,
    ) -> Option<Dialog> {
        let remote_target = invite
            .header("Contact")
            .and_then(NameAddr::parse)
            .map(|c| c.uri.to_string())
            .or_else(|| invite.from_header().map(|f| f.uri.to_string()))?;
        Some(Dialog {
            call_id: invite.call_id()?.to_owned(),
            local_tag,
            remote_tag: invite.from_tag().map(str::to_owned),
            local_uri: strip_tag(invite.header("To")?),
            remote_uri: strip_tag(invite.header("From")?),
            local_cseq: 0,
            remote_cseq: invite.cseq().map(|c| c.seq),
            route_set: invite
                .header_values("Record-Route")
                .map(str::to_owned)
                .collect(),
            remote_target,
            peer,
            local_contact,
        })
    }

    /// RFC 3261 12.1.2: the UAC side, from the INVITE we sent, before any response.
    pub fn uac(invite: &Message, peer: Peer, local_contact: String) -> Option<Dialog> {
        Some(Dialog {
            call_id: invite.call_id()?.to_owned(),
            local_tag: invite.from_tag()?.to_owned(),
            remote_tag: None,
            local_uri: strip_tag(invite.header("From")?),
            remote_uri: strip_tag(invite.header("To")?),
            local_cseq: invite.cseq()?.seq,
            remote_cseq: None,
            route_set: invite.header_values("Route").map(str::to_owned).collect(),
            remote_target: invite.request_uri()?.to_owned(),
            peer,
            local_contact,
        })
    }

    /// RFC 3261 12.1.2: a response with a To tag sets the remote tag, and the route set
    /// (Record-Route reversed) and remote target (Contact) of the dialog.
    pub fn update_from_response(&mut self, resp: &Message) {
        if let Some(tag) = resp.to_tag() {
            self.remote_tag = Some(tag.to_owned());
        }
        let rr: Vec<String> = resp
            .header_values("Record-Route")
            .map(str::to_owned)
            .collect();
        if !rr.is_empty() {
            self.route_set = rr.into_iter().rev().collect();
        }
        self.refresh_target(resp);
    }

    /// RFC 3261 12.2: a target refresh (re-INVITE, UPDATE, or their 2xx) moves the
    /// remote target to the new Contact.
    pub fn refresh_target(&mut self, msg: &Message) {
        if let Some(c) = msg.header("Contact").and_then(NameAddr::parse) {
            self.remote_target = c.uri.to_string();
        }
    }

    /// RFC 3261 12.2.2: accept an in-dialog request's CSeq, or say why not.
    pub fn accept_remote_cseq(&mut self, req: &Message) -> Result<(), InDialogError> {
        let cseq = req.cseq().ok_or(InDialogError::NoCSeq)?;
        if matches!(cseq.method, Method::Ack | Method::Cancel) {
            return Ok(());
        }
        match self.remote_cseq {
            Some(last) if cseq.seq < last => Err(InDialogError::CSeqOutOfOrder),
            // Equal is a retransmission the transaction layer absorbed, or a new request
            // with a reused number, which is the peer's error; let it through.
            _ => {
                self.remote_cseq = Some(cseq.seq);
                Ok(())
            }
        }
    }

    /// RFC 3261 12.2.1.1: a new request in this dialog, with a fresh branch on a Via
    /// naming `via_host:via_port` over the dialog's transport.
    pub fn request(
        &mut self,
        method: Method,
        via_host: &str,
        via_port: u16,
        user_agent: &str,
    ) -> Message {
        self.local_cseq = self.local_cseq.wrapping_add(1).min((1 << 31) - 1);
        let seq = self.local_cseq;
        self.build(method, seq, via_host, via_port, user_agent)
    }

    /// RFC 3261 13.2.2.4: the ACK for a 2xx takes the INVITE's CSeq number and a new
    /// branch.
    pub fn ack(&self, invite_seq: u32, via_host: &str, via_port: u16, user_agent: &str) -> Message {
        self.build(Method::Ack, invite_seq, via_host, via_port, user_agent)
    }

    fn build(
        &self,
        method: Method,
        seq: u32,
        via_host: &str,
        via_port: u16,
        user_agent: &str,
    ) -> Message {
        let mut m = Message::request(method.clone(), self.remote_target.clone());
        m.push(
            "Via",
            Via::ours(
                self.peer.transport.via_name(),
                via_host,
                via_port,
                &generate_branch(),
            ),
        );
        m.push("Max-Forwards", "70");
        m.push("From", format!("{};tag={}", self.local_uri, self.local_tag));
        m.push(
            "To",
            match &self.remote_tag {
                Some(t) => format!("{};tag={t}", self.remote_uri),
                None => self.remote_uri.clone(),
            },
        );
        m.push("Call-ID", self.call_id.clone());
        m.push(
            "CSeq",
            CSeq {
                seq,
                method: method.clone(),
            }
            .to_string(),
        );
        for r in &self.route_set {
            m.push("Route", r.clone());
        }
        if matches!(
            method,
            Method::Invite | Method::Update | Method::Subscribe | Method::Refer | Method::Notify
        ) {
            m.push("Contact", self.local_contact.clone());
        }
        m.push("User-Agent", user_agent.to_owned());
        m
    }
}

/// A From/To value without its tag parameter (the tag is kept apart in the dialog).
fn strip_tag(value: &str) -> String {
    let (head, params) = match value.rfind('>') {
        Some(gt) => value.split_at(gt + 1),
        None => match value.find(';') {
            Some(i) => value.split_at(i),
            None => (value, ""),
        },
    };
    let mut out = head.to_owned();
    for p in params.split(';').filter(|p| !p.trim().is_empty()) {
        let name = p.split('=').next().unwrap_or("").trim();
        if !name.eq_ignore_ascii_case("tag") {
            out.push(';');
            out.push_str(p.trim());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::parse;
    use bytes::Bytes;

    fn msg(s: &str) -> Message {
        parse(Bytes::copy_from_slice(s.replace('\n', "\r\n").as_bytes())).unwrap()
    }

    fn inbound_invite() -> Message {
        msg("INVITE sip:+18005550100@127.0.0.1 SIP/2.0\nVia: SIP/2.0/UDP 10.0.0.9:5070;branch=z9hG4bKa\nRecord-Route: <sip:p1;lr>, <sip:p2;lr>\nFrom: \"A\" <sip:+14155551212@carrier>;tag=ft;x=1\nTo: <sip:+18005550100@127.0.0.1>\nCall-ID: d1\nCSeq: 10 INVITE\nContact: <sip:alice@10.0.0.9:5070>\nContent-Length: 0\n\n")
    }

    #[test]
    fn uas_dialog_takes_identity_route_set_and_target() {
        let peer = Peer::udp("10.0.0.9:5070".parse().unwrap());
        let d = Dialog::uas(
            &inbound_invite(),
            "lt".into(),
            "<sip:h@127.0.0.1>".into(),
            peer,
        )
        .unwrap();
        assert_eq!(d.remote_tag.as_deref(), Some("ft"));
        assert_eq!(d.remote_uri, "\"A\" <sip:+14155551212@carrier>;x=1");
        assert_eq!(d.route_set, vec!["<sip:p1;lr>", "<sip:p2;lr>"]);
        assert_eq!(d.remote_target, "sip:alice@10.0.0.9:5070");
        assert_eq!(d.remote_cseq, Some(10));
    }

    #[test]
    fn in_dialog_request_has_dialog_identity_and_increasing_cseq() {
        let peer = Peer::udp("10.0.0.9:5070".parse().unwrap());
        let mut d = Dialog::uas(
            &inbound_invite(),
            "lt".into(),
            "<sip:h@127.0.0.1>".into(),
            peer,
        )
        .unwrap();
        let bye = d.request(Method::Bye, "127.0.0.1", 5060, "handoff");
        assert_eq!(bye.request_uri(), Some("sip:alice@10.0.0.9:5070"));
        assert_eq!(bye.from_tag(), Some("lt"));
        assert_eq!(bye.to_tag(), Some("ft"));
        assert_eq!(bye.cseq().unwrap().seq, 1);
        assert_eq!(
            bye.header_values("Route").collect::<Vec<_>>(),
            vec!["<sip:p1;lr>", "<sip:p2;lr>"]
        );
        assert!(bye.header("Contact").is_none());
        let again = d.request(Method::Invite, "127.0.0.1", 5060, "handoff");
        assert_eq!(again.cseq().unwrap().seq, 2);
        assert!(again.header("Contact").is_some());
        assert_ne!(
            bye.top_via().unwrap().branch(),
            again.top_via().unwrap().branch()
        );
    }

    #[test]
    fn uac_dialog_learns_tag_reversed_route_set_and_contact_from_response() {
        let out = msg("INVITE sip:ai@127.0.0.1:5080 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKb\nFrom: <sip:+14155551212@127.0.0.1>;tag=ours\nTo: <sip:ai@127.0.0.1:5080>\nCall-ID: d2\nCSeq: 1 INVITE\nContent-Length: 0\n\n");
        let mut d = Dialog::uac(
            &out,
            Peer::udp("127.0.0.1:5080".parse().unwrap()),
            "<sip:h@127.0.0.1>".into(),
        )
        .unwrap();
        assert_eq!(d.local_cseq, 1);
        let ok = msg("SIP/2.0 200 OK\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKb\nRecord-Route: <sip:p1;lr>, <sip:p2;lr>\nFrom: <sip:+14155551212@127.0.0.1>;tag=ours\nTo: <sip:ai@127.0.0.1:5080>;tag=theirs\nCall-ID: d2\nCSeq: 1 INVITE\nContact: <sip:ai@127.0.0.1:5099>\nContent-Length: 0\n\n");
        d.update_from_response(&ok);
        assert_eq!(d.remote_tag.as_deref(), Some("theirs"));
        assert_eq!(d.route_set, vec!["<sip:p2;lr>", "<sip:p1;lr>"]);
        assert_eq!(d.remote_target, "sip:ai@127.0.0.1:5099");
        let ack = d.ack(1, "127.0.0.1", 5060, "handoff");
        assert_eq!(
            ack.cseq().unwrap(),
            CSeq {
                seq: 1,
                method: Method::Ack
            }
        );
        assert_eq!(ack.to_tag(), Some("theirs"));
    }

    #[test]
    fn lower_remote_cseq_is_refused() {
        let peer = Peer::udp("10.0.0.9:5070".parse().unwrap());
        let mut d = Dialog::uas(&inbound_invite(), "lt".into(), "<sip:h>".into(), peer).unwrap();
        let bye = |n: u32| {
            msg(&format!("BYE sip:h@127.0.0.1 SIP/2.0\nVia: SIP/2.0/UDP 10.0.0.9:5070;branch=z9hG4bK{n}\nFrom: <sip:a@c>;tag=ft\nTo: <sip:h@h>;tag=lt\nCall-ID: d1\nCSeq: {n} BYE\nContent-Length: 0\n\n"))
        };
        assert_eq!(
            d.accept_remote_cseq(&bye(9)),
            Err(InDialogError::CSeqOutOfOrder)
        );
        assert_eq!(d.accept_remote_cseq(&bye(11)), Ok(()));
    }
}
