//! The thin shell around the pure machines: one call's transactions, the messages they
//! hold for retransmission, their timers, and RFC 3261 17.1.3 / 17.2.3 matching.
//! Still sans-IO: it returns what to send and what to tell the TU; the call actor does
//! the sending and the waiting.

use super::absorber::Lingering;
use super::{
    Action, InviteClient, InviteClientState, InviteServer, InviteServerState, NonInviteClient,
    NonInviteClientState, NonInviteServer, NonInviteServerState, Timer, TimerConfig,
};
use crate::sip::message::{CSeq, Message, Method};
use crate::sip::transport::Peer;
use bytes::Bytes;
use std::time::Instant;

/// A transaction's handle, unique within its set.
pub type TxId = u32;

/// What the owner of the set must do or know.
#[derive(Debug)]
pub enum TxEvent {
    /// Transmit these bytes for transaction `TxId`.
    Send(TxId, Peer, Bytes),
    /// A response that a client transaction passes up.
    Response(TxId, Message),
    /// An ACK that matched an INVITE server transaction in Accepted (RFC 6026 8.7): it
    /// acknowledges a 2xx and belongs to the TU.
    AckOf2xx(TxId, Message),
    /// Timer B, F or H fired.
    Timeout(TxId),
    TransportError(TxId),
    Terminated(TxId),
}

/// What a received request turned out to be.
#[derive(Debug, PartialEq, Eq)]
pub enum RequestMatch {
    /// A retransmission (or the ACK of a non-2xx): handled inside the set.
    Absorbed,
    /// It belongs to the TU: an ACK for a 2xx, or a new request.
    New,
}

enum Machine {
    InviteClient(InviteClient),
    NonInviteClient(NonInviteClient),
    InviteServer(InviteServer),
    NonInviteServer(NonInviteServer),
}

struct Entry {
    id: TxId,
    machine: Machine,
    branch: String,
    /// RFC 3261 17.2.3: sent-by takes part in server matching.
    sent_by: String,
    method: Method,
    peer: Peer,
    is_client: bool,
    /// Client: the request as sent (for retransmission, ACK and CANCEL); dropped once
    /// an INVITE has its 2xx (Accepted needs none of it).
    request: Option<Box<Message>>,
    wire: Bytes,
    /// Client INVITE: the hop-by-hop ACK for the last non-2xx final response.
    ack: Option<Bytes>,
    /// Server: the last response the TU gave.
    response: Option<Bytes>,
    /// Server: the status of that response.
    status: u16,
}

/// All transactions of one call.
pub struct TransactionSet {
    entries: Vec<Entry>,
    timers: Vec<(Instant, TxId, Timer)>,
    cfg: TimerConfig,
    next_id: TxId,
}

impl TransactionSet {
    pub fn new(cfg: TimerConfig) -> Self {
        TransactionSet {
            entries: Vec::with_capacity(2),
            timers: Vec::with_capacity(2),
            cfg,
            next_id: 1,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Start a client transaction for `req`, whose top Via carries our branch.
    pub fn start_client(
        &mut self,
        req: Message,
        peer: Peer,
        now: Instant,
        out: &mut Vec<TxEvent>,
    ) -> TxId {
        let id = self.alloc();
        let branch = branch_of(&req);
        let method = req.method().cloned().unwrap_or(Method::Options);
        let reliable = peer.transport.is_reliable();
        let (machine, actions) = if method == Method::Invite {
            let (m, a) = InviteClient::new(reliable, self.cfg);
            (Machine::InviteClient(m), a)
        } else {
            let (m, a) = NonInviteClient::new(reliable, self.cfg);
            (Machine::NonInviteClient(m), a)
        };
        let wire = req.to_bytes();
        self.entries.push(Entry {
            id,
            machine,
            branch,
            sent_by: String::new(),
            method,
            peer,
            is_client: true,
            request: Some(Box::new(req)),
            wire,
            ack: None,
            response: None,
            status: 0,
        });
        self.apply(id, actions, None, now, out);
        id
    }

    /// Start a server transaction for a request the TU takes on. For INVITE the TU
    /// sends 100 Trying at once through [`TransactionSet::respond`].
    pub fn start_server(&mut self, req: &Message, peer: Peer) -> TxId {
        let id = self.alloc();
        let reliable = peer.transport.is_reliable();
        let method = req.method().cloned().unwrap_or(Method::Options);
        let machine = if method == Method::Invite {
            Machine::InviteServer(InviteServer::new(reliable, self.cfg).0)
        } else {
            Machine::NonInviteServer(NonInviteServer::new(reliable, self.cfg).0)
        };
        self.entries.push(Entry {
            id,
            machine,
            branch: branch_of(req),
            sent_by: sent_by_of(req),
            method,
            peer,
            is_client: false,
            request: None,
            wire: Bytes::new(),
            ack: None,
            response: None,
            status: 0,
        });
        id
    }

    /// The TU answers a server transaction. Returns the response as serialised, once:
    /// the same buffer the transaction sends and retransmits, for a TU that sends it
    /// again itself (an INVITE's 2xx, RFC 6026 Accepted).
    pub fn respond(
        &mut self,
        id: TxId,
        resp: &Message,
        now: Instant,
        out: &mut Vec<TxEvent>,
    ) -> Bytes {
        let wire = resp.to_bytes();
        let status = resp.status().unwrap_or(500);
        self.respond_wire(id, status, wire.clone(), now, out);
        wire
    }

    /// [`TransactionSet::respond`] with the response already serialised.
    fn respond_wire(
        &mut self,
        id: TxId,
        status: u16,
        wire: Bytes,
        now: Instant,
        out: &mut Vec<TxEvent>,
    ) {
        let Some(e) = self.entries.iter_mut().find(|e| e.id == id) else {
            return;
        };
        e.response = Some(wire);
        e.status = status;
        let actions = match &mut e.machine {
            Machine::InviteServer(m) => m.send_response(status),
            Machine::NonInviteServer(m) => m.send_response(status),
            _ => return,
        };
        self.apply(id, actions, None, now, out);
        if matches!(self.entries.iter().find(|e| e.id == id), Some(e) if e.method == Method::Invite && (200..300).contains(&status))
        {
            // RFC 6026 Accepted: the TU retransmits the 2xx; the transaction only
            // absorbs retransmitted INVITEs, silently.
            if let Some(e) = self.entries.iter_mut().find(|e| e.id == id) {
                e.response = None;
            }
        }
    }

    /// RFC 3261 17.2.3: is this request a retransmission, or the ACK of a non-2xx?
    pub fn match_request(
        &mut self,
        req: &Message,
        now: Instant,
        out: &mut Vec<TxEvent>,
    ) -> RequestMatch {
        let Some(method) = req.method() else {
            return RequestMatch::New;
        };
        let branch = req.branch();
        if branch.is_empty() {
            return RequestMatch::New;
        }
        let wanted = if *method == Method::Ack {
            &Method::Invite
        } else {
            method
        };
        let Some(e) = self.entries.iter_mut().find(|e| {
            !e.is_client
                && e.branch == branch
                && &e.method == wanted
                && e.sent_by == sent_by_of(req)
        }) else {
            return RequestMatch::New;
        };
        let id = e.id;
        let (actions, to_tu) = match (&mut e.machine, method) {
            (Machine::InviteServer(m), Method::Ack) => {
                let accepted = m.state() == InviteServerState::Accepted;
                (m.on_ack(), accepted)
            }
            (Machine::InviteServer(m), _) => (m.on_request(), false),
            (Machine::NonInviteServer(m), _) => (m.on_request(), false),
            _ => return RequestMatch::New,
        };
        let passes = actions.contains(&Action::PassToTu);
        self.apply(id, actions, None, now, out);
        if to_tu && passes {
            out.push(TxEvent::AckOf2xx(id, req.clone()));
        }
        RequestMatch::Absorbed
    }

    /// RFC 3261 17.1.3: hand a response to the client transaction it belongs to.
    /// Gives the response back when none matches (a stray, or a 2xx retransmission after the
    /// transaction ended: the TU deals with those).
    pub fn on_response(
        &mut self,
        resp: Message,
        now: Instant,
        out: &mut Vec<TxEvent>,
    ) -> Option<Message> {
        let Some(cseq) = resp.cseq() else {
            return Some(resp);
        };
        let branch = resp.branch();
        let Some(e) = self
            .entries
            .iter_mut()
            .find(|e| e.is_client && e.branch == branch && e.method == cseq.method)
        else {
            return Some(resp);
        };
        let id = e.id;
        let status = resp.status().unwrap_or(0);
        let actions = match &mut e.machine {
            Machine::InviteClient(m) => m.on_response(status),
            Machine::NonInviteClient(m) => m.on_response(status),
            _ => return Some(resp),
        };
        if actions.contains(&Action::TransmitAck) {
            if let Some(req) = &e.request {
                e.ack = Some(ack_for_non_2xx(req, &resp).to_bytes());
            }
        }
        if e.method == Method::Invite && (200..300).contains(&status) {
            // Accepted: 2xx retransmissions go to the TU, which ACKs end to end.
            e.request = None;
            e.wire = Bytes::new();
        }
        self.apply(id, actions, Some(resp), now, out);
        None
    }

    /// A send on this transaction's transport failed.
    pub fn on_transport_error(&mut self, id: TxId, now: Instant, out: &mut Vec<TxEvent>) {
        let Some(e) = self.entries.iter_mut().find(|e| e.id == id) else {
            return;
        };
        let actions = match &mut e.machine {
            Machine::InviteClient(m) => m.on_transport_error(),
            Machine::NonInviteClient(m) => m.on_transport_error(),
            Machine::InviteServer(m) => m.on_transport_error(),
            Machine::NonInviteServer(m) => m.on_transport_error(),
        };
        self.apply(id, actions, None, now, out);
    }

    /// The earliest armed timer.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.timers.iter().map(|(at, _, _)| *at).min()
    }

    /// Fire every timer that is due.
    pub fn on_tick(&mut self, now: Instant, out: &mut Vec<TxEvent>) {
        while let Some(pos) = self.timers.iter().position(|(at, _, _)| *at <= now) {
            let (_, id, timer) = self.timers.swap_remove(pos);
            let Some(e) = self.entries.iter_mut().find(|e| e.id == id) else {
                continue;
            };
            let actions = match &mut e.machine {
                Machine::InviteClient(m) => m.on_timer(timer),
                Machine::NonInviteClient(m) => m.on_timer(timer),
                Machine::InviteServer(m) => m.on_timer(timer),
                Machine::NonInviteServer(m) => m.on_timer(timer),
            };
            self.apply(id, actions, None, now, out);
        }
    }

    /// The request a client transaction carries (to build a CANCEL from, say).
    pub fn request(&self, id: TxId) -> Option<&Message> {
        self.entries
            .iter()
            .find(|e| e.id == id)
            .and_then(|e| e.request.as_deref())
    }

    /// The request of a client transaction as it went on the wire (a cheap
    /// handle on the same bytes).
    pub fn wire(&self, id: TxId) -> Option<bytes::Bytes> {
        self.entries
            .iter()
            .find(|e| e.id == id && e.is_client)
            .map(|e| e.wire.clone())
    }

    /// The peer a transaction talks to.
    pub fn peer(&self, id: TxId) -> Option<Peer> {
        self.entries.iter().find(|e| e.id == id).map(|e| e.peer)
    }

    /// The final status a server transaction has sent, if any.
    pub fn final_status(&self, id: TxId) -> Option<u16> {
        self.entries
            .iter()
            .find(|e| e.id == id)
            .map(|e| e.status)
            .filter(|s| *s >= 200)
    }

    /// The INVITE server transaction a CANCEL names (RFC 3261 9.2: same branch and
    /// sent-by, method INVITE).
    pub fn server_invite_for_cancel(&self, cancel: &Message) -> Option<TxId> {
        let branch = branch_of(cancel);
        let sent_by = sent_by_of(cancel);
        self.entries
            .iter()
            .find(|e| {
                !e.is_client
                    && e.method == Method::Invite
                    && e.branch == branch
                    && e.sent_by == sent_by
            })
            .map(|e| e.id)
    }

    /// Is any transaction still waiting for a final response, or for the TU's answer?
    /// While so, the owner must stay; afterwards only absorption of retransmissions is
    /// left, which [`TransactionSet::take_lingering`] hands over.
    pub fn has_pending_work(&self) -> bool {
        self.entries.iter().any(|e| match &e.machine {
            Machine::InviteClient(m) => matches!(
                m.state(),
                InviteClientState::Calling | InviteClientState::Proceeding
            ),
            Machine::NonInviteClient(m) => {
                matches!(
                    m.state(),
                    NonInviteClientState::Trying | NonInviteClientState::Proceeding
                )
            }
            Machine::InviteServer(m) => m.state() == InviteServerState::Proceeding,
            Machine::NonInviteServer(m) => {
                matches!(
                    m.state(),
                    NonInviteServerState::Trying | NonInviteServerState::Proceeding
                )
            }
        })
    }

    /// Empty the set, returning the server transactions that must keep absorbing
    /// retransmissions (Completed, Confirmed, Accepted) until their timers would have
    /// ended them. Client transactions in Completed only absorb stray responses, which
    /// the dispatcher drops anyway.
    pub fn take_lingering(&mut self, now: Instant) -> Vec<Lingering> {
        let linger = self.cfg.timer_b() + self.cfg.t4;
        let out = self
            .entries
            .drain(..)
            .filter(|e| {
                matches!(
                    e.machine,
                    Machine::InviteServer(_) | Machine::NonInviteServer(_)
                )
            })
            .filter(|e| !e.branch.is_empty())
            .map(|e| {
                // A 2xx to an INVITE is the TU's to retransmit; a retransmitted INVITE
                // after it is absorbed silently (RFC 6026 Accepted).
                let silent = e.method == Method::Invite && (200..300).contains(&e.status);
                Lingering {
                    branch: e.branch,
                    sent_by: e.sent_by,
                    method: e.method,
                    response: if silent { None } else { e.response },
                    peer: e.peer,
                    until: now + linger,
                }
            })
            .collect();
        self.timers.clear();
        out
    }

    pub fn contains(&self, id: TxId) -> bool {
        self.entries.iter().any(|e| e.id == id)
    }

    fn alloc(&mut self) -> TxId {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        id
    }

    fn apply(
        &mut self,
        id: TxId,
        actions: Vec<Action>,
        msg: Option<Message>,
        now: Instant,
        out: &mut Vec<TxEvent>,
    ) {
        let mut msg = msg;
        for action in actions {
            let Some(e) = self.entries.iter().find(|e| e.id == id) else {
                return;
            };
            match action {
                Action::TransmitRequest => out.push(TxEvent::Send(id, e.peer, e.wire.clone())),
                Action::TransmitAck => {
                    if let Some(ack) = &e.ack {
                        out.push(TxEvent::Send(id, e.peer, ack.clone()));
                    }
                }
                Action::TransmitResponse => {
                    if let Some(r) = &e.response {
                        out.push(TxEvent::Send(id, e.peer, r.clone()));
                    }
                }
                Action::PassToTu => {
                    if let Some(m) = msg.take() {
                        out.push(TxEvent::Response(id, m));
                    }
                }
                Action::StartTimer(t, d) => {
                    self.timers.retain(|(_, i, tt)| !(*i == id && *tt == t));
                    self.timers.push((now + d, id, t));
                }
                Action::CancelTimer(t) => self.timers.retain(|(_, i, tt)| !(*i == id && *tt == t)),
                Action::Timeout => out.push(TxEvent::Timeout(id)),
                Action::TransportError => out.push(TxEvent::TransportError(id)),
                Action::Terminated => {
                    self.entries.retain(|e| e.id != id);
                    self.timers.retain(|(_, i, _)| *i != id);
                    out.push(TxEvent::Terminated(id));
                    return;
                }
            }
        }
    }
}

fn branch_of(m: &Message) -> String {
    m.branch().to_owned()
}

fn sent_by_of(m: &Message) -> String {
    m.top_via().map(|v| v.sent_by_key()).unwrap_or_default()
}

/// RFC 3261 17.1.1.3: the ACK for a non-2xx final response, built by the transaction:
/// the INVITE's Request-URI, Call-ID, From, top Via and Route, the response's To.
pub fn ack_for_non_2xx(invite: &Message, resp: &Message) -> Message {
    same_transaction_request(invite, Method::Ack, resp.header("To"))
}

/// RFC 3261 9.1: a CANCEL for a pending INVITE: same Request-URI, Call-ID, From, To,
/// CSeq number, top Via and Route.
pub fn cancel_for(invite: &Message) -> Message {
    same_transaction_request(invite, Method::Cancel, invite.header("To"))
}

/// ACK (for a non-2xx) and CANCEL share the INVITE's transaction: its top Via, and
/// its CSeq number with their own method.
fn same_transaction_request(invite: &Message, method: Method, to: Option<&str>) -> Message {
    let mut m = Message::request(method.clone(), invite.request_uri().unwrap_or_default());
    if let Some(v) = invite.header_values("Via").next() {
        m.push("Via", v.to_owned());
    }
    m.push("Max-Forwards", "70");
    if let Some(v) = invite.header("From") {
        m.push("From", v.to_owned());
    }
    if let Some(v) = to {
        m.push("To", v.to_owned());
    }
    if let Some(v) = invite.call_id() {
        m.push("Call-ID", v.to_owned());
    }
    let seq = invite.cseq().map_or(1, |c| c.seq);
    m.push("CSeq", CSeq { seq, method }.to_string());
    for r in invite.header_values("Route") {
        m.push("Route", r.to_owned());
    }
    m
}

#[cfg(test)]
mod tests;
