//! The header contract of a transfer destination (issue 16, item 4), end to
//! end: the AI agent's REFER carries `X-` headers, `User-to-User` (RFC 7433),
//! a header Twilio refuses, an oversized one and a `Referred-By`; the
//! destination, declared with the `twilio` profile, copies `X-*` and
//! `User-to-User` as header lines AND as URI headers on the Request-URI, and
//! the ticket likewise. What the profile refuses or what does not fit the URI
//! is left out whole and counted; `X-OPENCX-*` from the REFER never passes.

mod common;

use common::http_security::metric_value;
use common::scenarios::media::establish_media;
use common::scenarios::transfer::{
    expect_notify, expect_target_invite, stamp_via_webhook, transfer_rig, transfer_rig_with,
};
use common::Transport;
use handoff::sip::message::Method;

const UUI: &str = "56a390f3d2b7310023a2;encoding=hex;purpose=isdn-uui;content=isdn-uui";

async fn run(t: Transport, placement: &str) {
    // The rig names its Zendesk UA as destination "zendesk"; the same key, with
    // the contract, replaces it.
    let zendesk = common::TestUa::agent(t).await;
    let port = zendesk.local_addr().port();
    let target = format!("sip:support@127.0.0.1:{port}{}", t.uri_param());
    let extra = format!(
        "transfer.destination = [{{ name = \"zendesk\", uri = \"{target}\", profile = \"twilio\", \
         refer_headers = [\"X-*\", \"User-to-User\"], header_placement = \"{placement}\", \
         ticket_placement = \"{placement}\" }}]\n"
    );
    let mut tr = transfer_rig_with(t, &extra, zendesk).await;
    let mut m = establish_media(&mut tr.rig).await;
    stamp_via_webhook(&tr.rig, 35436).await;

    let big = "b".repeat(900);
    let mut req = tr
        .rig
        .agent
        .in_dialog(&mut m.call.agent_dlg, Method::Refer, None);
    req.push_checked("Refer-To", &format!("<{}>", tr.target))
        .unwrap();
    req.push_checked("Referred-By", "\"AI\" <sip:agent@ai.example.com>")
        .unwrap();
    req.push_checked("X-Acme-Case", "case 42&more").unwrap();
    req.push_checked("User-to-User", UUI).unwrap();
    req.push_checked("X-Twilio-Foo", "refused").unwrap();
    req.push_checked("X-OPENCX-ZENDESK-TICKET-ID", "666")
        .unwrap();
    req.push_checked("X-Big", &big).unwrap();
    tr.rig.agent.send(&req).await;
    tr.rig
        .agent
        .expect_response_to(Method::Refer, 202, common::WAIT)
        .await;
    expect_notify(&mut tr, &m, &req).await;
    let (inv, query) = tr
        .zendesk
        .expect_request_with_uri_headers(Method::Invite, common::WAIT)
        .await;
    let msg = &inv.msg;
    let ruri = msg.request_uri().expect("request").to_owned();
    let lines = placement != "uri";
    let uri = placement != "header";

    // Header lines.
    assert_eq!(
        msg.header("Referred-By"),
        Some("\"AI\" <sip:agent@ai.example.com>")
    );
    assert_eq!(msg.header("X-Acme-Case").is_some(), lines, "{placement}");
    assert_eq!(msg.header("User-to-User").is_some(), lines);
    assert_eq!(
        msg.header("X-Big").is_some(),
        lines,
        "fits a line (under 1000 bytes)"
    );
    assert_eq!(msg.header("X-Zendesk-Ticket-Id").is_some(), lines);
    assert_eq!(
        msg.header("X-OPENCX-ZENDESK-TICKET-ID"),
        lines.then_some("35436"),
        "the session's ticket, never the REFER's"
    );
    assert_eq!(msg.header("X-Twilio-Foo"), None, "Twilio refuses X-Twilio*");
    assert!(msg.header("X-OPENCX-SESSION-ID").is_some());

    // URI headers.
    assert_eq!(ruri, tr.target.as_str());
    assert_eq!(!query.is_empty(), uri, "{ruri}");
    if uri {
        assert!(query.len() < 1024, "URI header part {} long", query.len());
        let parts: Vec<&str> = query.split('&').collect();
        assert!(
            parts.contains(&"X-OPENCX-ZENDESK-TICKET-ID=35436"),
            "{query}"
        );
        assert!(parts.contains(&"X-Zendesk-Ticket-Id=35436"), "{query}");
        assert!(parts.contains(&"X-Acme-Case=case%2042%26more"), "{query}");
        assert!(
            parts.contains(&"User-to-User=56a390f3d2b7310023a2%3Bencoding%3Dhex%3Bpurpose%3Disdn-uui%3Bcontent%3Disdn-uui"),
            "{query}"
        );
        assert!(
            !query.contains("X-Big"),
            "900 bytes do not fit beside the rest"
        );
        assert!(!query.contains("Twilio") && !query.contains("666"));
    }
    // The destination answers (what a lenient receiver such as Twilio does).
    // To stays the plain URI.
    assert!(!msg.header("To").unwrap_or_default().contains('?'));

    let text = tr.rig.server.metrics().render_prometheus();
    let dropped = metric_value(&text, "handoff_transfer_headers_dropped_total");
    // X-Twilio-Foo and the REFER's X-OPENCX-ZENDESK-TICKET-ID always; X-Big from the URI.
    assert_eq!(dropped, if uri { 3 } else { 2 }, "{placement}");
    tr.zendesk.respond(&inv, 486, &[], None).await;
    let (frag, _) = expect_notify(&mut tr, &m, &req).await;
    assert_eq!(frag, "SIP/2.0 486 Busy Here\r\n");
}

#[tokio::test]
async fn a_twilio_destination_takes_the_refer_headers_as_header_lines() {
    common::bounded(common::WAIT * 10, run(Transport::Udp, "header")).await;
}

#[tokio::test]
async fn a_twilio_destination_takes_the_refer_headers_as_uri_headers() {
    common::bounded(common::WAIT * 10, run(Transport::Udp, "uri")).await;
}

#[tokio::test]
async fn a_twilio_destination_takes_the_refer_headers_both_ways_over_tcp() {
    common::bounded(common::WAIT * 10, run(Transport::Tcp, "both")).await;
}

#[tokio::test]
async fn without_a_contract_nothing_of_the_refer_is_copied() {
    common::bounded(common::WAIT * 10, async {
        let mut tr = transfer_rig(Transport::Udp, "").await;
        let mut m = establish_media(&mut tr.rig).await;
        let target = format!("<{}>", tr.target);
        let mut req = tr
            .rig
            .agent
            .in_dialog(&mut m.call.agent_dlg, Method::Refer, None);
        req.push_checked("Refer-To", &target).unwrap();
        req.push_checked("X-Acme-Case", "42").unwrap();
        req.push_checked("User-to-User", UUI).unwrap();
        tr.rig.agent.send(&req).await;
        tr.rig
            .agent
            .expect_response_to(Method::Refer, 202, common::WAIT)
            .await;
        expect_notify(&mut tr, &m, &req).await;
        let inv = expect_target_invite(&mut tr).await;
        assert_eq!(inv.msg.header("X-Acme-Case"), None);
        assert_eq!(inv.msg.header("User-to-User"), None);
        assert!(!inv.msg.request_uri().unwrap_or_default().contains('?'));
        tr.zendesk.respond(&inv, 486, &[], None).await;
        expect_notify(&mut tr, &m, &req).await;
    })
    .await;
}
