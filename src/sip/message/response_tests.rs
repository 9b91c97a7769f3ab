//! `Message::response_to`: what a response copies from its request.

use super::*;

fn req(text: &str) -> Message {
    parse::parse(Bytes::from(text.replace('\n', "\r\n"))).expect("test request parses")
}

const INVITE: &str = "INVITE sip:+18005550100@127.0.0.1 SIP/2.0\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKedge\nVia: SIP/2.0/UDP 10.0.0.9:5070;branch=z9hG4bKa\nRecord-Route: <sip:10.0.0.1;lr;ftag=ft>\nRecord-Route: <sip:p2;lr>\nFrom: <sip:+14155551212@carrier>;tag=ft\nTo: <sip:+18005550100@127.0.0.1>\nCall-ID: rr1\nCSeq: 1 INVITE\nContact: <sip:a@10.0.0.9:5070>\nContent-Length: 0\n\n";

#[test]
fn dialog_establishing_responses_copy_record_route_in_order() {
    let invite = req(INVITE);
    for status in [180, 183, 200] {
        let resp = Message::response_to(&invite, status, Some("ours"));
        let rr: Vec<&str> = resp.header_values("Record-Route").collect();
        assert_eq!(
            rr,
            ["<sip:10.0.0.1;lr;ftag=ft>", "<sip:p2;lr>"],
            "{status} copies every Record-Route value in order"
        );
    }
}

#[test]
fn other_responses_do_not_copy_record_route() {
    let invite = req(INVITE);
    for status in [100, 486, 503] {
        let resp = Message::response_to(&invite, status, Some("ours"));
        assert_eq!(resp.header("Record-Route"), None, "{status}");
    }
    let options = req(&INVITE.replace("INVITE", "OPTIONS"));
    let resp = Message::response_to(&options, 200, Some("ours"));
    assert_eq!(resp.header("Record-Route"), None, "200 to OPTIONS");
}
