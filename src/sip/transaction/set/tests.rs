use super::*;
use crate::sip::message::parse;
use std::time::Duration;

fn msg(s: &str) -> Message {
    parse(Bytes::copy_from_slice(s.replace('\n', "\r\n").as_bytes())).expect("test message parses")
}

fn invite() -> Message {
    msg("INVITE sip:ai@127.0.0.1:5080 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKc1;rport\nMax-Forwards: 70\nFrom: <sip:a@h>;tag=f1\nTo: <sip:ai@127.0.0.1>\nCall-ID: cid1\nCSeq: 1 INVITE\nContent-Length: 0\n\n")
}

fn resp(status: u16, method: &str, branch: &str) -> Message {
    msg(&format!("SIP/2.0 {status} X\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch={branch};rport\nFrom: <sip:a@h>;tag=f1\nTo: <sip:ai@127.0.0.1>;tag=t9\nCall-ID: cid1\nCSeq: 1 {method}\nContent-Length: 0\n\n"))
}

fn peer() -> Peer {
    Peer::udp("127.0.0.1:5080".parse().unwrap())
}

fn sends(out: &[TxEvent]) -> Vec<String> {
    out.iter()
        .filter_map(|e| match e {
            TxEvent::Send(_, _, b) => Some(
                String::from_utf8_lossy(b)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_owned(),
            ),
            _ => None,
        })
        .collect()
}

#[test]
fn client_invite_is_retransmitted_on_timer_a_over_udp() {
    let mut set = TransactionSet::new(TimerConfig::default());
    let t0 = Instant::now();
    let mut out = vec![];
    set.start_client(invite(), peer(), t0, &mut out);
    assert_eq!(sends(&out), vec!["INVITE sip:ai@127.0.0.1:5080 SIP/2.0"]);
    out.clear();
    set.on_tick(t0 + Duration::from_millis(499), &mut out);
    assert!(out.is_empty());
    set.on_tick(t0 + Duration::from_millis(500), &mut out);
    assert_eq!(sends(&out).len(), 1);
    assert_eq!(set.next_deadline(), Some(t0 + Duration::from_millis(1500)));
}

#[test]
fn non_2xx_final_is_acked_hop_by_hop_with_same_branch_and_response_to_tag() {
    let mut set = TransactionSet::new(TimerConfig::default());
    let t0 = Instant::now();
    let mut out = vec![];
    let id = set.start_client(invite(), peer(), t0, &mut out);
    out.clear();
    assert!(set
        .on_response(resp(486, "INVITE", "z9hG4bKc1"), t0, &mut out)
        .is_none());
    let ack = out.iter().find_map(|e| match e {
        TxEvent::Send(_, _, b) => Some(parse(b.clone()).unwrap()),
        _ => None,
    });
    let ack = ack.expect("an ACK was sent");
    assert_eq!(ack.method(), Some(&Method::Ack));
    assert_eq!(ack.top_via().unwrap().branch(), Some("z9hG4bKc1"));
    assert_eq!(ack.to_tag(), Some("t9"));
    assert_eq!(ack.cseq().unwrap().seq, 1);
    assert!(out
        .iter()
        .any(|e| matches!(e, TxEvent::Response(i, m) if *i == id && m.status() == Some(486))));
    // A retransmitted 486 is ACKed again and not passed up.
    out.clear();
    assert!(set
        .on_response(resp(486, "INVITE", "z9hG4bKc1"), t0, &mut out)
        .is_none());
    assert_eq!(sends(&out), vec!["ACK sip:ai@127.0.0.1:5080 SIP/2.0"]);
    assert!(!out.iter().any(|e| matches!(e, TxEvent::Response(..))));
}

#[test]
fn response_with_other_branch_or_method_does_not_match() {
    let mut set = TransactionSet::new(TimerConfig::default());
    let mut out = vec![];
    set.start_client(invite(), peer(), Instant::now(), &mut out);
    assert!(set
        .on_response(
            resp(200, "INVITE", "z9hG4bKother"),
            Instant::now(),
            &mut out
        )
        .is_some());
    assert!(set
        .on_response(resp(200, "BYE", "z9hG4bKc1"), Instant::now(), &mut out)
        .is_some());
}

#[test]
fn retransmitted_request_is_absorbed_and_last_response_resent() {
    let mut set = TransactionSet::new(TimerConfig::default());
    let t0 = Instant::now();
    let mut out = vec![];
    let inv = msg("INVITE sip:h@127.0.0.1 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKs1\nFrom: <sip:a@h>;tag=f1\nTo: <sip:h@h>\nCall-ID: s1\nCSeq: 1 INVITE\nContent-Length: 0\n\n");
    assert_eq!(set.match_request(&inv, t0, &mut out), RequestMatch::New);
    let id = set.start_server(&inv, Peer::udp("127.0.0.1:5070".parse().unwrap()));
    set.respond(id, &Message::response_to(&inv, 100, None), t0, &mut out);
    assert_eq!(sends(&out), vec!["SIP/2.0 100 Trying"]);
    out.clear();
    assert_eq!(
        set.match_request(&inv, t0, &mut out),
        RequestMatch::Absorbed
    );
    assert_eq!(sends(&out), vec!["SIP/2.0 100 Trying"]);
    // Final 486, then the ACK for it is absorbed (Confirmed).
    out.clear();
    set.respond(
        id,
        &Message::response_to(&inv, 486, Some("x")),
        t0,
        &mut out,
    );
    assert_eq!(set.final_status(id), Some(486));
    let ack = msg("ACK sip:h@127.0.0.1 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKs1\nFrom: <sip:a@h>;tag=f1\nTo: <sip:h@h>;tag=x\nCall-ID: s1\nCSeq: 1 ACK\nContent-Length: 0\n\n");
    out.clear();
    assert_eq!(
        set.match_request(&ack, t0, &mut out),
        RequestMatch::Absorbed
    );
    assert!(!out.iter().any(|e| matches!(e, TxEvent::AckOf2xx(..))));
}

#[test]
fn respond_serialises_the_response_once_and_returns_what_it_sends() {
    let mut set = TransactionSet::new(TimerConfig::default());
    let t0 = Instant::now();
    let mut out = vec![];
    let inv = msg("INVITE sip:h@127.0.0.1 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKs3\nFrom: <sip:a@h>;tag=f1\nTo: <sip:h@h>\nCall-ID: s3\nCSeq: 1 INVITE\nContent-Length: 0\n\n");
    let id = set.start_server(&inv, Peer::udp("127.0.0.1:5070".parse().unwrap()));
    let ok = Message::response_to(&inv, 200, Some("x"));
    let wire = set.respond(id, &ok, t0, &mut out);
    assert_eq!(wire, ok.to_bytes());
    let sent: Vec<&Bytes> = out
        .iter()
        .filter_map(|e| match e {
            TxEvent::Send(i, _, b) if *i == id => Some(b),
            _ => None,
        })
        .collect();
    assert_eq!(sent.len(), 1);
    // The very buffer that went out, not a second serialisation of the message.
    assert_eq!(sent[0].as_ptr(), wire.as_ptr());

    // A response serialised by the TU goes out as given, and is what a
    // retransmitted request gets again.
    let bye = msg("BYE sip:h@127.0.0.1 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKs4\nFrom: <sip:a@h>;tag=f1\nTo: <sip:h@h>;tag=x\nCall-ID: s3\nCSeq: 2 BYE\nContent-Length: 0\n\n");
    let id = set.start_server(&bye, Peer::udp("127.0.0.1:5070".parse().unwrap()));
    let wire = Message::response_to(&bye, 200, None).to_bytes();
    out.clear();
    set.respond_wire(id, 200, wire.clone(), t0, &mut out);
    assert!(matches!(&out[..], [TxEvent::Send(_, _, b)] if b.as_ptr() == wire.as_ptr()));
    assert_eq!(set.final_status(id), Some(200));
    out.clear();
    assert_eq!(
        set.match_request(&bye, t0, &mut out),
        RequestMatch::Absorbed
    );
    assert!(matches!(&out[..], [TxEvent::Send(_, _, b)] if b.as_ptr() == wire.as_ptr()));
}

#[test]
fn server_invite_answered_2xx_absorbs_retransmitted_invite_silently() {
    let mut set = TransactionSet::new(TimerConfig::default());
    let t0 = Instant::now();
    let mut out = vec![];
    let inv = msg("INVITE sip:h@127.0.0.1 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKs2\nFrom: <sip:a@h>;tag=f1\nTo: <sip:h@h>\nCall-ID: s2\nCSeq: 1 INVITE\nContent-Length: 0\n\n");
    let id = set.start_server(&inv, Peer::udp("127.0.0.1:5070".parse().unwrap()));
    set.respond(
        id,
        &Message::response_to(&inv, 200, Some("x")),
        t0,
        &mut out,
    );
    out.clear();
    // RFC 6026: the 2xx is the TU's to retransmit; the transaction absorbs the INVITE.
    assert_eq!(
        set.match_request(&inv, t0, &mut out),
        RequestMatch::Absorbed
    );
    assert!(sends(&out).is_empty());
    // Timer L ends it.
    set.on_tick(t0 + Duration::from_secs(32), &mut out);
    assert!(set.is_empty());
}

#[test]
fn timer_b_times_out_and_terminates() {
    let mut set = TransactionSet::new(TimerConfig::default());
    let t0 = Instant::now();
    let mut out = vec![];
    let id = set.start_client(invite(), peer(), t0, &mut out);
    out.clear();
    for ms in (0..=32_000).step_by(250) {
        set.on_tick(t0 + Duration::from_millis(ms), &mut out);
    }
    assert!(out
        .iter()
        .any(|e| matches!(e, TxEvent::Timeout(i) if *i == id)));
    assert!(out
        .iter()
        .any(|e| matches!(e, TxEvent::Terminated(i) if *i == id)));
    assert_eq!(sends(&out).len(), 6, "six retransmissions before Timer B");
    assert!(set.is_empty());
    assert_eq!(set.next_deadline(), None);
}

#[test]
fn tcp_client_never_retransmits() {
    let mut set = TransactionSet::new(TimerConfig::default());
    let t0 = Instant::now();
    let mut out = vec![];
    let p = Peer {
        transport: crate::sip::transport::Transport::Tcp,
        addr: "127.0.0.1:5080".parse().unwrap(),
        conn: Some(1),
        identity: None,
    };
    set.start_client(invite(), p, t0, &mut out);
    out.clear();
    set.on_tick(t0 + Duration::from_secs(10), &mut out);
    assert!(sends(&out).is_empty());
}

#[test]
fn cancel_matches_its_invite_and_is_built_from_it() {
    let inv = invite();
    let c = cancel_for(&inv);
    assert_eq!(c.method(), Some(&Method::Cancel));
    assert_eq!(c.top_via().unwrap().branch(), Some("z9hG4bKc1"));
    assert_eq!(
        c.cseq().unwrap(),
        CSeq {
            seq: 1,
            method: Method::Cancel
        }
    );
    assert_eq!(c.request_uri(), inv.request_uri());
    let mut set = TransactionSet::new(TimerConfig::default());
    let id = set.start_server(&inv, Peer::udp("127.0.0.1:5060".parse().unwrap()));
    assert_eq!(set.server_invite_for_cancel(&c), Some(id));
}
