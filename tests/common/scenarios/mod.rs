//! Call scenarios shared by `calls_udp.rs` and `calls_tcp.rs`: each takes the transport
//! and runs the carrier leg and the AI leg over it. The steps they share live here.

pub mod calls;
pub mod limits;
pub mod media;
pub mod mid_call;
pub mod requests;
pub mod transfer;

use super::build::{branch_of, AI_SDP};
use super::{eventually, Dialog, InviteOpts, Received, Rig, TestUa, CALLED, WAIT};
use crate::common::media::assert_sdp_relayed;
use handoff::metrics::Metrics;
use handoff::server::Server;
use handoff::session::{Session, SessionId, SessionTable};
use handoff::sip::message::{Message, Method};
use std::time::Duration;

/// A call that is up: both dialogs as the two test UAs see them.
pub struct Established {
    pub caller_invite: Message,
    pub caller_ok: Message,
    pub caller_dlg: Dialog,
    pub ai_invite: Received,
    pub agent_dlg: Dialog,
    pub session_id: String,
}

/// The carrier's INVITE reaches the AI agent; 100 Trying comes back at once.
pub async fn place_call(rig: &mut Rig, opts: &InviteOpts) -> (Message, Received) {
    let invite = rig.caller.invite(opts);
    rig.caller.send(&invite).await;
    rig.caller
        .expect_response_to(Method::Invite, 100, WAIT)
        .await;
    let ai_invite = rig.agent.expect_request(Method::Invite, WAIT).await;
    (invite, ai_invite)
}

/// Place a call, have the AI agent ring and answer, and ACK it from the carrier.
/// Checks the AI agent's answer reaches the caller with the caller leg's own identity
/// and that handoff ACKs the AI agent's 2xx.
pub async fn establish(rig: &mut Rig, opts: InviteOpts) -> Established {
    let (caller_invite, ai_invite) = place_call(rig, &opts).await;
    rig.agent.respond(&ai_invite, 180, &[], None).await;
    let ringing = rig
        .caller
        .expect_response_to(Method::Invite, 180, WAIT)
        .await;
    assert!(
        ringing.msg.to_tag().is_some(),
        "180 to the caller has a To tag"
    );
    let ai_ok = rig.agent.respond(&ai_invite, 200, &[], Some(AI_SDP)).await;
    let ok = rig
        .caller
        .expect_response_to(Method::Invite, 200, WAIT)
        .await
        .msg;
    assert_eq!(
        ok.call_id(),
        caller_invite.call_id(),
        "200 is in the caller's dialog"
    );
    assert_eq!(
        ok.to_tag(),
        ringing.msg.to_tag(),
        "180 and 200 carry the same To tag"
    );
    assert_ne!(
        ok.to_tag(),
        ai_ok.to_tag(),
        "the caller leg has handoff's own To tag, not the AI agent's"
    );
    assert_sdp_relayed(
        ok.body(),
        AI_SDP,
        "the AI agent's SDP answer is relayed intact",
    );
    assert!(
        ok.header("Contact").is_some(),
        "200 to the caller has a Contact"
    );
    let caller_dlg = Dialog::as_uac(&caller_invite, &ok);
    rig.caller.send(&rig.caller.ack(&caller_dlg, None)).await;
    // Over TCP the two legs are two connections read in parallel: let the ACK reach
    // the call before the test moves on (a re-INVITE before it would rightly get 491).
    rig.caller.barrier().await;
    let ai_ack = rig.agent.expect_request(Method::Ack, WAIT).await;
    assert_eq!(
        ai_ack.msg.call_id(),
        ai_invite.msg.call_id(),
        "ACK is in the AI leg's dialog"
    );
    assert_eq!(
        ai_ack.msg.cseq().map(|c| c.seq),
        ai_invite.msg.cseq().map(|c| c.seq),
        "ACK takes the INVITE's CSeq number"
    );
    assert_ne!(
        branch_of(&ai_ack.msg),
        branch_of(&ai_invite.msg),
        "ACK for a 2xx has a new branch"
    );
    let agent_dlg = Dialog::as_uas(&ai_invite.msg, &ai_ok);
    let session_id = ai_invite
        .msg
        .header("X-OPENCX-SESSION-ID")
        .unwrap_or_default()
        .to_owned();
    // INVITE retransmissions that crossed the 180 are of no further interest.
    rig.agent.clear_backlog();
    rig.caller.clear_backlog();
    Established {
        caller_invite,
        caller_ok: ok,
        caller_dlg,
        ai_invite,
        agent_dlg,
        session_id,
    }
}

/// The carrier hangs up: 200 to it, BYE to the AI agent (answered 200).
pub async fn bye_from_caller(rig: &mut Rig, call: &mut Established) {
    let bye = rig.caller.bye(&mut call.caller_dlg);
    rig.caller.send(&bye).await;
    rig.caller.expect_response_to(Method::Bye, 200, WAIT).await;
    let ai_bye = rig.agent.expect_request(Method::Bye, WAIT).await;
    assert_in_dialog(&ai_bye.msg, &call.agent_dlg, "BYE to the AI agent");
    rig.agent.respond(&ai_bye, 200, &[], None).await;
}

/// The AI agent hangs up: 200 to it, BYE to the carrier (answered 200).
pub async fn bye_from_agent(rig: &mut Rig, call: &mut Established) {
    let bye = rig.agent.bye(&mut call.agent_dlg);
    rig.agent.send(&bye).await;
    rig.agent.expect_response_to(Method::Bye, 200, WAIT).await;
    let caller_bye = rig.caller.expect_request(Method::Bye, WAIT).await;
    assert_in_dialog(&caller_bye.msg, &call.caller_dlg, "BYE to the caller");
    rig.caller.respond(&caller_bye, 200, &[], None).await;
}

/// A request handoff sent is in the dialog `dlg` (seen from the receiving UA): same
/// Call-ID, its From tag is the far end's, its To tag ours.
pub fn assert_in_dialog(req: &Message, dlg: &Dialog, what: &str) {
    assert_eq!(req.call_id(), Some(dlg.call_id.as_str()), "{what}: Call-ID");
    assert_eq!(
        req.from_tag(),
        Some(dlg.remote_tag.as_str()),
        "{what}: From tag"
    );
    assert_eq!(req.to_tag(), Some(dlg.local_tag.as_str()), "{what}: To tag");
}

/// The in-memory session table the test servers run with, read synchronously.
pub fn table(server: &Server) -> &SessionTable {
    server
        .sessions()
        .expect("the test servers use the in-memory session store")
}

/// The session handoff recorded for the call.
pub fn session(server: &Server, id: &str) -> Session {
    let sid = SessionId::parse(id).unwrap_or_else(|| panic!("{id:?} is not a session id"));
    table(server)
        .get(&sid)
        .unwrap_or_else(|| panic!("no session {id} in the table"))
}

/// The call is over: no active calls, its session ended, no live session for the caller.
pub async fn assert_call_gone(server: &Server, session_id: &str, caller_e164: &str) {
    assert!(
        eventually(Duration::from_secs(3), || server.active_calls() == 0).await,
        "active_calls stays at {} after the call ended",
        server.active_calls()
    );
    assert!(
        eventually(Duration::from_secs(1), || session(server, session_id)
            .ended_at
            .is_some())
        .await,
        "session {session_id} is not marked ended"
    );
    assert!(
        table(server).live_by_phone(caller_e164).is_empty(),
        "a live session remains for {caller_e164}"
    );
}

/// A counter of the server's metrics.
pub fn count(server: &Server, pick: impl Fn(&Metrics) -> &std::sync::atomic::AtomicU64) -> u64 {
    Metrics::get(pick(server.metrics()))
}

/// The session id handoff put on an AI-leg INVITE: exactly one, 32 lowercase hex.
pub fn assert_session_header(ai_invite: &Message) -> String {
    assert_eq!(
        ai_invite.header_count("X-OPENCX-SESSION-ID"),
        1,
        "exactly one X-OPENCX-SESSION-ID"
    );
    let sid = ai_invite.header("X-OPENCX-SESSION-ID").unwrap();
    assert!(
        sid.len() == 32
            && sid
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "X-OPENCX-SESSION-ID {sid:?} is not 32 lowercase hex characters"
    );
    sid.to_owned()
}

/// Check the session handoff recorded while the call is up.
pub fn assert_live_session(server: &Server, id: &str, caller_e164: &str, display: &str) {
    let s = session(server, id);
    assert_eq!(s.org_id, "org-test");
    assert_eq!(s.agent_id, "agent-test");
    assert_eq!(s.caller_phone.as_deref(), Some(caller_e164));
    assert_eq!(s.caller_display_name.as_deref(), Some(display));
    assert_eq!(s.called, CALLED);
    assert!(s.answered_at.is_some(), "session marked answered");
    assert!(s.ended_at.is_none(), "session still live");
    let live = table(server).live_by_phone(caller_e164);
    assert!(
        live.iter().any(|l| l.id.as_str() == id),
        "live_by_phone({caller_e164}) finds the session"
    );
}

/// Answer an INVITE the test does not care about any further with a final failure.
pub async fn reject(ua: &mut TestUa, invite: &Received, status: u16) {
    ua.respond(invite, status, &[], None).await;
}
