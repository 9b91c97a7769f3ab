//! The leg's own bookkeeping, without sockets: dialog state, ACK copies, 2xx
//! retransmission timers, in-dialog request checks.

use super::*;
use crate::sip::message::parse;
use crate::sip::transport::{Peer, Transport};

const INVITE: &str = "INVITE sip:agent@127.0.0.1:5080 SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKleg1\r\n\
Max-Forwards: 70\r\n\
From: <sip:+14155550100@127.0.0.1>;tag=ours\r\n\
To: <sip:agent@127.0.0.1:5080>\r\n\
Call-ID: leg-test-1\r\n\
CSeq: 1 INVITE\r\n\
Contact: <sip:handoff@127.0.0.1:5060>\r\n\
Content-Length: 0\r\n\r\n";

fn ok_200(seq: u32) -> Message {
    let text = format!(
        "SIP/2.0 200 OK\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKleg1\r\n\
From: <sip:+14155550100@127.0.0.1>;tag=ours\r\n\
To: <sip:agent@127.0.0.1:5080>;tag=theirs\r\n\
Call-ID: leg-test-1\r\n\
CSeq: {seq} INVITE\r\n\
Contact: <sip:agent@127.0.0.2:5090>\r\n\
Content-Length: 0\r\n\r\n"
    );
    parse(Bytes::from(text)).expect("200 parses")
}

fn peer(transport: Transport) -> Peer {
    let mut p = Peer::udp("127.0.0.1:5080".parse().expect("addr"));
    p.transport = transport;
    p
}

fn leg() -> Leg {
    let invite = parse(Bytes::from_static(INVITE.as_bytes())).expect("INVITE parses");
    let dialog = Dialog::uac(
        &invite,
        peer(Transport::Udp),
        "<sip:handoff@127.0.0.1:5060>".into(),
    )
    .expect("dialog");
    Leg::new(dialog, "127.0.0.1".into(), 5060)
}

#[test]
fn a_2xx_confirms_the_leg_and_moves_its_target() {
    let mut l = leg();
    assert_eq!(l.state(), LegState::Early);
    assert_eq!(l.confirm(&ok_200(1)), 1);
    assert!(l.is_up());
    let bye = l.request(Method::Bye, "handoff");
    assert_eq!(bye.request_uri(), Some("sip:agent@127.0.0.2:5090"));
    assert!(bye.header("To").is_some_and(|t| t.ends_with(";tag=theirs")));
    assert_eq!(bye.cseq().map(|c| c.seq), Some(2), "CSeq goes up by one");
}

#[test]
fn bye_makes_the_leg_ending_then_done_on_its_own_transaction_only() {
    let mut l = leg();
    l.confirm(&ok_200(1));
    l.hanging_up(7);
    assert!(l.is_ending() && !l.is_done() && !l.is_up());
    assert!(!l.bye_finished(8), "another transaction");
    assert!(l.bye_finished(7));
    assert!(l.is_done());
}

#[test]
fn reack_answers_only_the_acknowledged_2xx_until_its_invite_ends() {
    let mut l = leg();
    l.confirm(&ok_200(1));
    let ack = l.ack(1, "handoff");
    assert_eq!(ack.method(), Some(&Method::Ack));
    assert_eq!(
        ack.cseq().map(|c| c.seq),
        Some(1),
        "ACK keeps the INVITE's CSeq"
    );
    let bytes = ack.to_bytes();
    l.remember_ack(1, 3, bytes.clone());
    assert_eq!(l.reack(1).map(|(_, b)| b), Some(bytes));
    assert_eq!(l.reack(2), None);
    l.on_invite_terminated(4);
    assert!(l.reack(1).is_some(), "another INVITE's end keeps it");
    l.on_invite_terminated(3);
    assert_eq!(l.reack(1), None);
}

#[test]
fn udp_2xx_is_retransmitted_doubling_to_t2_then_given_up() {
    let mut l = leg();
    let (t1, t2) = (Duration::from_millis(500), Duration::from_secs(4));
    let now = Instant::now();
    l.retransmit_2xx(5, Bytes::from_static(b"200"), peer(Transport::Udp), t1, now);
    assert!(l.invite_unfinished());
    assert_eq!(l.next_retransmit(), Some(now + t1));
    assert_eq!(l.on_retransmit_timer(now, t2), None, "not yet");
    let mut at = now + t1;
    let mut gaps = Vec::new();
    while let Some(Retransmit::Send(_, _)) = l.on_retransmit_timer(at, t2) {
        let next = l.next_retransmit().expect("still running");
        gaps.push(next - at);
        at = next;
    }
    assert_eq!(gaps[..4], [t1 * 2, t1 * 4, t2, t2]);
    assert!(at >= now + t1 * 64, "gave up at 64*T1");
    assert!(!l.retransmitting());
}

#[test]
fn tcp_2xx_is_not_retransmitted_but_still_given_up() {
    let mut l = leg();
    let t1 = Duration::from_millis(500);
    let now = Instant::now();
    l.retransmit_2xx(5, Bytes::from_static(b"200"), peer(Transport::Tcp), t1, now);
    assert_eq!(l.next_retransmit(), Some(now + t1 * 64));
    assert_eq!(
        l.on_retransmit_timer(now + t1 * 64, Duration::from_secs(4)),
        Some(Retransmit::GiveUp)
    );
}

#[test]
fn their_ack_stops_the_retransmissions_of_its_2xx_only() {
    let mut l = leg();
    let now = Instant::now();
    let t1 = Duration::from_millis(500);
    l.retransmit_2xx(5, Bytes::from_static(b"200"), peer(Transport::Udp), t1, now);
    l.on_ack(4);
    assert!(l.retransmitting());
    l.on_ack(5);
    assert!(!l.retransmitting());
}

#[test]
fn in_dialog_requests_need_our_tag_and_a_rising_cseq() {
    let invite = parse(Bytes::from_static(INVITE.as_bytes())).expect("INVITE parses");
    let dialog = Dialog::uas(
        &invite,
        "mine".into(),
        "<sip:handoff@127.0.0.1>".into(),
        peer(Transport::Udp),
    )
    .expect("dialog");
    let mut l = Leg::new(dialog, "127.0.0.1".into(), 5060);
    let req = |tag: &str, seq: u32| {
        let text = format!(
            "BYE sip:handoff@127.0.0.1 SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bKb{seq}\r\n\
From: <sip:+14155550100@127.0.0.1>;tag=ours\r\n\
To: <sip:agent@127.0.0.1:5080>;tag={tag}\r\n\
Call-ID: leg-test-1\r\n\
CSeq: {seq} BYE\r\n\
Content-Length: 0\r\n\r\n"
        );
        parse(Bytes::from(text)).expect("BYE parses")
    };
    assert_eq!(l.accept_request(&req("other", 2)), Err(481));
    assert_eq!(
        l.accept_request(&req("mine", 0)),
        Err(500),
        "CSeq went down"
    );
    assert_eq!(l.accept_request(&req("mine", 2)), Ok(()));
}

#[test]
fn retry_with_credentials_takes_the_next_cseq_a_new_branch_and_no_tag() {
    let mut l = leg();
    let invite = parse(Bytes::from_static(INVITE.as_bytes())).expect("INVITE parses");
    let branch = invite.header("Via").map(str::to_owned);
    l.on_early_response(&ok_200(1));
    let retry = l.retry_invite(invite, "Authorization", "Digest x".into());
    assert_eq!(retry.cseq().map(|c| c.seq), Some(2));
    assert_ne!(retry.header("Via").map(str::to_owned), branch);
    assert_eq!(retry.header("Authorization"), Some("Digest x"));
    assert_eq!(l.state(), LegState::Early);
    let ack = l.ack(2, "handoff");
    assert!(ack.header("To").is_some_and(|t| !t.contains("tag=")));
}
