//! The one builder of the INVITEs handoff originates (to the AI agent, to a
//! transfer target): a new dialog's identity and what every one of them
//! carries. What else goes in (session headers, the body) is the caller's.

use super::contact::is_sips;
use super::contact_for;
use crate::b2bua::policy::ALLOW;
use crate::sip::message::{generate_branch, generate_call_id, Message, Method, Via};
use crate::sip::transport::Transport;

/// A new dialog's first INVITE.
pub(super) struct NewInvite<'a> {
    pub request_uri: &'a str,
    /// The From value, our tag included.
    pub from: String,
    /// The To value (no tag).
    pub to: String,
    pub transport: Transport,
    /// Our address for this leg (Via and Contact).
    pub host: &'a str,
    pub port: u16,
    pub max_forwards: u32,
    pub user_agent: &'a str,
}

impl NewInvite<'_> {
    /// The request, and our Contact for the dialog it starts.
    pub fn build(self) -> (Message, String) {
        let contact = contact_for(
            self.host,
            self.port,
            self.transport,
            is_sips(self.request_uri),
        );
        let mut m = Message::request(Method::Invite, self.request_uri);
        m.push(
            "Via",
            Via::ours(
                self.transport.via_name(),
                self.host,
                self.port,
                &generate_branch(),
            ),
        );
        m.push("Max-Forwards", self.max_forwards.to_string());
        m.push("From", self.from);
        m.push("To", self.to);
        m.push("Call-ID", generate_call_id());
        m.push("CSeq", "1 INVITE");
        m.push("Contact", contact.clone());
        m.push("Allow", ALLOW);
        m.push("User-Agent", self.user_agent.to_owned());
        (m, contact)
    }
}
