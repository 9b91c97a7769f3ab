//! Building the requests a test UA sends: a new INVITE, and in an established dialog
//! ACK, BYE, re-INVITE, INFO and UPDATE; CANCEL and the ACK of a failure response.

use super::{TestUa, CALLED};
use bytes::Bytes;
use handoff::sip::message::{generate_tag, Message, Method, NameAddr};

/// The carrier's SDP offer.
pub const SDP: &str = "v=0\r\no=carrier 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n";

/// The carrier putting the call on hold (RFC 3264 8.4).
pub const SDP_SENDONLY: &str = "v=0\r\no=carrier 1 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=sendonly\r\n";

/// The AI agent's SDP answer.
pub const AI_SDP: &str = "v=0\r\no=ai 7 7 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 50000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n";

/// The AI agent's answer to a hold.
pub const AI_SDP_RECVONLY: &str = "v=0\r\no=ai 7 8 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 50000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=recvonly\r\n";

/// What a new INVITE from the carrier looks like.
#[derive(Debug, Clone)]
pub struct InviteOpts {
    /// From value without tag.
    pub from: String,
    /// Request-URI and To user (the called number).
    pub to_user: String,
    pub sdp: Option<String>,
    pub headers: Vec<(String, String)>,
    pub max_forwards: u32,
}

impl Default for InviteOpts {
    fn default() -> Self {
        InviteOpts {
            from: "\"Alice\" <sip:+1-415-555-1212@carrier.example>".into(),
            to_user: CALLED.into(),
            sdp: Some(SDP.into()),
            headers: Vec::new(),
            max_forwards: 70,
        }
    }
}

impl InviteOpts {
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn from(mut self, from: &str) -> Self {
        self.from = from.into();
        self
    }

    pub fn called(mut self, user: &str) -> Self {
        self.to_user = user.into();
        self
    }

    pub fn without_sdp(mut self) -> Self {
        self.sdp = None;
        self
    }
}

/// One side's view of an established dialog (RFC 3261 12).
#[derive(Debug, Clone)]
pub struct Dialog {
    pub call_id: String,
    pub local_tag: String,
    pub remote_tag: String,
    /// Our From/To value, without tag.
    pub local_uri: String,
    pub remote_uri: String,
    /// CSeq of the last request we sent in the dialog.
    pub local_cseq: u32,
    /// CSeq of our last INVITE, which an ACK for a 2xx takes.
    pub invite_cseq: u32,
    /// The peer's Contact: the Request-URI of our requests.
    pub remote_target: String,
}

impl Dialog {
    /// The caller's side, from the INVITE it sent and the 2xx that came back.
    pub fn as_uac(invite: &Message, ok: &Message) -> Dialog {
        let seq = invite.cseq().expect("INVITE CSeq").seq;
        Dialog {
            call_id: invite.call_id().expect("Call-ID").to_owned(),
            local_tag: invite.from_tag().expect("From tag").to_owned(),
            remote_tag: ok.to_tag().expect("2xx has a To tag").to_owned(),
            local_uri: strip_tag(invite.header("From").unwrap()),
            remote_uri: strip_tag(invite.header("To").unwrap()),
            local_cseq: seq,
            invite_cseq: seq,
            remote_target: contact_uri(ok).expect("2xx has a Contact"),
        }
    }

    /// The callee's side, from the INVITE it received and the 2xx it sent.
    pub fn as_uas(invite: &Message, ok: &Message) -> Dialog {
        Dialog {
            call_id: invite.call_id().expect("Call-ID").to_owned(),
            local_tag: ok.to_tag().expect("our 2xx has a To tag").to_owned(),
            remote_tag: invite.from_tag().expect("From tag").to_owned(),
            local_uri: strip_tag(invite.header("To").unwrap()),
            remote_uri: strip_tag(invite.header("From").unwrap()),
            local_cseq: 100,
            invite_cseq: 0,
            remote_target: contact_uri(invite).expect("INVITE has a Contact"),
        }
    }

    /// A target refresh (re-INVITE, UPDATE, or their 2xx) moves the remote target.
    pub fn refresh(&mut self, msg: &Message) {
        if let Some(t) = contact_uri(msg) {
            self.remote_target = t;
        }
    }
}

impl TestUa {
    /// A new INVITE to handoff.
    pub fn invite(&self, opts: &InviteOpts) -> Message {
        let host = self
            .peer()
            .map(|p| p.to_string())
            .unwrap_or_else(|| "127.0.0.1".into());
        let mut m = Message::request(Method::Invite, format!("sip:{}@{host}", opts.to_user));
        m.push("Via", self.via());
        m.push("Max-Forwards", opts.max_forwards.to_string());
        m.push("From", format!("{};tag={}", opts.from, generate_tag()));
        m.push("To", format!("<sip:{}@carrier.example>", opts.to_user));
        m.push("Call-ID", format!("{}@carrier.test", generate_tag()));
        m.push("CSeq", "1 INVITE");
        m.push("Contact", self.contact());
        m.push("User-Agent", "handoff-test-carrier");
        for (name, value) in &opts.headers {
            m.push_checked(name, value).expect("test header is valid");
        }
        if let Some(sdp) = &opts.sdp {
            m.push("Content-Type", "application/sdp");
            m.set_body(Bytes::copy_from_slice(sdp.as_bytes()));
        }
        m
    }

    /// A request in `dlg` with the next CSeq. `body` is (Content-Type, body).
    pub fn in_dialog(
        &self,
        dlg: &mut Dialog,
        method: Method,
        body: Option<(&str, &str)>,
    ) -> Message {
        dlg.local_cseq += 1;
        if method == Method::Invite {
            dlg.invite_cseq = dlg.local_cseq;
        }
        let mut m = self.dialog_request(dlg, method.clone(), dlg.local_cseq);
        if matches!(method, Method::Invite | Method::Update) {
            m.push("Contact", self.contact());
        }
        if let Some((ct, b)) = body {
            m.push_checked("Content-Type", ct).expect("content type");
            m.set_body(Bytes::copy_from_slice(b.as_bytes()));
        }
        m
    }

    /// The ACK for the 2xx to our last INVITE in `dlg`: a new branch, the INVITE's
    /// CSeq number (RFC 3261 13.2.2.4), and the SDP answer when the 2xx held the offer.
    pub fn ack(&self, dlg: &Dialog, sdp: Option<&str>) -> Message {
        let mut m = self.dialog_request(dlg, Method::Ack, dlg.invite_cseq);
        if let Some(b) = sdp {
            m.push("Content-Type", "application/sdp");
            m.set_body(Bytes::copy_from_slice(b.as_bytes()));
        }
        m
    }

    pub fn bye(&self, dlg: &mut Dialog) -> Message {
        self.in_dialog(dlg, Method::Bye, None)
    }

    fn dialog_request(&self, dlg: &Dialog, method: Method, seq: u32) -> Message {
        let mut m = Message::request(method.clone(), dlg.remote_target.clone());
        m.push("Via", self.via());
        m.push("Max-Forwards", "70");
        m.push("From", format!("{};tag={}", dlg.local_uri, dlg.local_tag));
        m.push("To", format!("{};tag={}", dlg.remote_uri, dlg.remote_tag));
        m.push("Call-ID", dlg.call_id.clone());
        m.push("CSeq", format!("{seq} {method}"));
        m
    }
}

/// CANCEL for an INVITE we sent (RFC 3261 9.1): same Request-URI, top Via (branch),
/// Call-ID, From, To and CSeq number.
pub fn cancel_for(invite: &Message) -> Message {
    let mut m = Message::request(Method::Cancel, invite.request_uri().unwrap().to_owned());
    m.push("Via", invite.header("Via").unwrap().to_owned());
    m.push("Max-Forwards", "70");
    m.push("From", invite.header("From").unwrap().to_owned());
    m.push("To", invite.header("To").unwrap().to_owned());
    m.push("Call-ID", invite.call_id().unwrap().to_owned());
    m.push("CSeq", format!("{} CANCEL", invite.cseq().unwrap().seq));
    m
}

/// The ACK for a 300-699 answer to our INVITE (RFC 3261 17.1.1.3): the INVITE's branch
/// and CSeq number, the response's To (with its tag).
pub fn ack_for_non_2xx(invite: &Message, resp: &Message) -> Message {
    let mut m = Message::request(Method::Ack, invite.request_uri().unwrap().to_owned());
    m.push("Via", invite.header("Via").unwrap().to_owned());
    m.push("Max-Forwards", "70");
    m.push("From", invite.header("From").unwrap().to_owned());
    m.push("To", resp.header("To").unwrap().to_owned());
    m.push("Call-ID", invite.call_id().unwrap().to_owned());
    m.push("CSeq", format!("{} ACK", invite.cseq().unwrap().seq));
    m
}

/// A From/To value without its tag parameter.
pub fn strip_tag(value: &str) -> String {
    let lower = value.to_ascii_lowercase();
    match lower.find(";tag=") {
        Some(i) => {
            let rest = &value[i + 5..];
            let end = rest.find(';').map_or(value.len(), |j| i + 5 + j);
            format!("{}{}", &value[..i], &value[end..])
        }
        None => value.to_owned(),
    }
}

/// The URI in a message's Contact.
pub fn contact_uri(m: &Message) -> Option<String> {
    m.header("Contact")
        .and_then(NameAddr::parse)
        .map(|c| c.uri.to_string())
}

/// The branch of a message's top Via.
pub fn branch_of(m: &Message) -> String {
    m.top_via()
        .and_then(|v| v.branch().map(str::to_owned))
        .unwrap_or_default()
}
