//! `transfer_headers` (one test per issue-4 rule) and the Refer-To header copy.

use super::*;

fn zendesk() -> Destination {
    dest("<sip:line@acme.zendesk.sip.twilio.com>")
}

fn names(h: &TransferHeaders) -> Vec<&'static str> {
    h.headers.iter().map(|(n, _)| *n).collect()
}

#[test]
fn session_id_header_carries_the_session_id() {
    let h = transfer_headers(&session(), &zendesk(), &TransferSettings::default());
    assert_eq!(h.get(X_OPENCX_SESSION_ID), Some("3f2a9c1e"));
}

#[test]
fn agent_id_header_carries_the_ai_agent_id() {
    let h = transfer_headers(&session(), &zendesk(), &TransferSettings::default());
    assert_eq!(h.get(X_OPENCX_AGENT_ID), Some("agent-7"));
}

#[test]
fn transfer_header_is_true() {
    let h = transfer_headers(&session(), &zendesk(), &TransferSettings::default());
    assert_eq!(h.get(X_OPENCX_TRANSFER), Some("true"));
}

#[test]
fn without_contact_or_ticket_only_the_three_always_headers() {
    let h = transfer_headers(&session(), &zendesk(), &TransferSettings::default());
    assert_eq!(
        names(&h),
        [X_OPENCX_SESSION_ID, X_OPENCX_AGENT_ID, X_OPENCX_TRANSFER]
    );
    assert!(h.omitted.is_empty());
}

#[test]
fn contact_id_header_only_when_resolved() {
    let mut s = session();
    s.contact_id = Some("contact_42".into());
    let h = transfer_headers(&s, &zendesk(), &TransferSettings::default());
    assert_eq!(h.get(X_OPENCX_CONTACT_ID), Some("contact_42"));
    s.contact_id = None;
    let h = transfer_headers(&s, &zendesk(), &TransferSettings::default());
    assert_eq!(h.get(X_OPENCX_CONTACT_ID), None);
}

#[test]
fn ticket_headers_when_stamped_and_destination_is_sip() {
    let mut s = session();
    s.zendesk_ticket_id = Some(12345);
    let h = transfer_headers(&s, &zendesk(), &TransferSettings::default());
    assert_eq!(h.get(X_OPENCX_ZENDESK_TICKET_ID), Some("12345"));
    assert_eq!(h.get(X_ZENDESK_TICKET_ID), Some("12345"));
    assert_eq!(
        names(&h),
        [
            X_OPENCX_SESSION_ID,
            X_OPENCX_AGENT_ID,
            X_OPENCX_TRANSFER,
            X_OPENCX_ZENDESK_TICKET_ID,
            X_ZENDESK_TICKET_ID
        ]
    );
}

#[test]
fn no_ticket_headers_without_a_stamped_ticket() {
    let h = transfer_headers(&session(), &zendesk(), &TransferSettings::default());
    assert_eq!(h.get(X_OPENCX_ZENDESK_TICKET_ID), None);
    assert_eq!(h.get(X_ZENDESK_TICKET_ID), None);
}

#[test]
fn refer_to_pstn_omits_ticket_header() {
    let mut s = session();
    s.zendesk_ticket_id = Some(12345);
    let tel = dest("<tel:+15551234567>");
    assert_eq!(tel.kind, DestinationKind::Tel);
    let h = transfer_headers(&s, &tel, &TransferSettings::default());
    assert_eq!(h.get(X_OPENCX_ZENDESK_TICKET_ID), None);
    assert_eq!(h.get(X_ZENDESK_TICKET_ID), None);
    assert_eq!(h.get(X_OPENCX_SESSION_ID), Some("3f2a9c1e"));
}

#[test]
fn user_phone_target_omits_ticket_header() {
    let mut s = session();
    s.zendesk_ticket_id = Some(12345);
    let phone = dest("<sip:+15551234567@carrier.example.net;user=phone>");
    let h = transfer_headers(&s, &phone, &TransferSettings::default());
    assert_eq!(h.get(X_OPENCX_ZENDESK_TICKET_ID), None);
    assert_eq!(h.get(X_ZENDESK_TICKET_ID), None);
}

#[test]
fn native_zendesk_ticket_header_can_be_turned_off() {
    let mut s = session();
    s.zendesk_ticket_id = Some(12345);
    let off = settings("zendesk_native_ticket_header = false");
    let h = transfer_headers(&s, &zendesk(), &off);
    assert_eq!(h.get(X_OPENCX_ZENDESK_TICKET_ID), Some("12345"));
    assert_eq!(h.get(X_ZENDESK_TICKET_ID), None);
}

#[test]
fn crlf_injection_in_contact_id_is_left_out_and_reported() {
    let mut s = session();
    s.contact_id = Some("c1\r\nX-OPENCX-ZENDESK-TICKET-ID: 999".into());
    let h = transfer_headers(&s, &zendesk(), &TransferSettings::default());
    assert_eq!(h.get(X_OPENCX_CONTACT_ID), None);
    assert_eq!(h.get(X_OPENCX_ZENDESK_TICKET_ID), None);
    assert!(h.headers.iter().all(|(_, v)| !v.contains(['\r', '\n'])));
    assert_eq!(
        h.omitted,
        vec![Omitted {
            name: X_OPENCX_CONTACT_ID.into(),
            problem: HeaderProblem::ControlCharacter
        }]
    );
}

#[test]
fn contact_id_must_be_token_characters() {
    let mut s = session();
    s.contact_id = Some("a b;c".into());
    let h = transfer_headers(&s, &zendesk(), &TransferSettings::default());
    assert_eq!(h.get(X_OPENCX_CONTACT_ID), None);
    assert_eq!(h.omitted[0].problem, HeaderProblem::NotToken);
}

#[test]
fn over_long_contact_id_is_left_out() {
    let mut s = session();
    s.contact_id = Some("c".repeat(1024));
    let h = transfer_headers(&s, &zendesk(), &TransferSettings::default());
    assert_eq!(h.get(X_OPENCX_CONTACT_ID), None);
    let expected = X_OPENCX_CONTACT_ID.len() + 2 + 1024;
    assert_eq!(h.omitted[0].problem, HeaderProblem::TooLong(expected));
    // Just under the limit is written.
    let fits = crate::sip::message::MAX_HEADER_LINE - X_OPENCX_CONTACT_ID.len() - 3;
    s.contact_id = Some("c".repeat(fits));
    let h = transfer_headers(&s, &zendesk(), &TransferSettings::default());
    assert_eq!(h.get(X_OPENCX_CONTACT_ID).map(str::len), Some(fits));
}

#[test]
fn invalid_agent_id_is_never_written() {
    let mut s = session();
    s.agent_id = "agent\u{0}7".into();
    let h = transfer_headers(&s, &zendesk(), &TransferSettings::default());
    assert_eq!(h.get(X_OPENCX_AGENT_ID), None);
    assert_eq!(h.omitted[0].name, X_OPENCX_AGENT_ID);
}

#[test]
fn every_written_line_is_under_the_limit_and_clean() {
    let mut s = session();
    s.contact_id = Some("x".repeat(900));
    s.zendesk_ticket_id = Some(u64::MAX);
    let h = transfer_headers(&s, &zendesk(), &TransferSettings::default());
    for (n, v) in &h.headers {
        assert!(n.len() + 2 + v.len() < crate::sip::message::MAX_HEADER_LINE);
        assert!(crate::sip::message::check_value(v).is_ok());
    }
    assert_eq!(
        h.get(X_OPENCX_ZENDESK_TICKET_ID),
        Some("18446744073709551615")
    );
}

#[test]
fn ticket_id_check_is_digits_only() {
    assert_eq!(check_ticket_id(X_ZENDESK_TICKET_ID, "12345"), Ok(()));
    assert_eq!(
        check_ticket_id(X_ZENDESK_TICKET_ID, "12a45"),
        Err(HeaderProblem::NotDigits)
    );
    assert_eq!(
        check_ticket_id(X_ZENDESK_TICKET_ID, "-1"),
        Err(HeaderProblem::NotDigits)
    );
    assert_eq!(
        check_ticket_id(X_ZENDESK_TICKET_ID, "1\r\n2"),
        Err(HeaderProblem::ControlCharacter)
    );
    assert_eq!(
        check_ticket_id(X_ZENDESK_TICKET_ID, ""),
        Err(HeaderProblem::Empty)
    );
}

#[test]
fn id_check_is_token_characters_only() {
    assert_eq!(check_id(X_OPENCX_CONTACT_ID, "abc-1.2_x~"), Ok(()));
    assert_eq!(
        check_id(X_OPENCX_CONTACT_ID, "a\"b"),
        Err(HeaderProblem::NotToken)
    );
    assert_eq!(
        check_id(X_OPENCX_CONTACT_ID, "é"),
        Err(HeaderProblem::NotToken)
    );
    assert_eq!(
        check_id(X_OPENCX_CONTACT_ID, "a\tb"),
        Err(HeaderProblem::NotToken)
    );
    assert_eq!(check_id(X_OPENCX_CONTACT_ID, ""), Err(HeaderProblem::Empty));
}

// --- copy_refer_headers ---

fn copy(list: &str, refer_to: &str) -> CopiedHeaders {
    policy(&format!("copy_refer_headers = {list}"))
        .copy
        .copy(&target(refer_to))
}

const REFER: &str =
    "<sip:line@acme.zendesk.sip.twilio.com?X-Queue=gold&x-lang=en%2DGB&Replaces=abc&X-Other=1>";

#[test]
fn nothing_is_copied_by_default() {
    let c = TransferSettings::default()
        .compile()
        .unwrap()
        .copy
        .copy(&target(REFER));
    assert!(c.headers.is_empty());
    assert!(c
        .omitted
        .iter()
        .all(|o| o.problem == HeaderProblem::NotListed));
}

#[test]
fn listed_x_headers_are_copied_case_insensitively() {
    let c = copy(r#"["X-Queue", "X-Lang"]"#, REFER);
    assert_eq!(
        c.headers,
        vec![
            ("X-Queue".to_owned(), "gold".to_owned()),
            ("x-lang".to_owned(), "en-GB".to_owned())
        ]
    );
    assert_eq!(
        c.omitted,
        vec![Omitted {
            name: "X-Other".into(),
            problem: HeaderProblem::NotListed
        }]
    );
}

#[test]
fn x_star_copies_every_x_header_but_never_others() {
    let c = copy(r#"["X-*"]"#, REFER);
    let got: Vec<&str> = c.headers.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(got, ["X-Queue", "x-lang", "X-Other"]);
    assert!(c.omitted.is_empty(), "Replaces is not a candidate at all");
}

#[test]
fn opencx_and_zendesk_ticket_headers_never_come_from_the_refer() {
    let c = copy(
        r#"["X-*"]"#,
        "<sip:l@acme.zendesk.sip.twilio.com?X-OPENCX-SESSION-ID=spoof&x-opencx-transfer=false&X-Zendesk-Ticket-Id=1>",
    );
    assert!(c.headers.is_empty());
    assert_eq!(c.omitted.len(), 3);
    assert!(c
        .omitted
        .iter()
        .all(|o| o.problem == HeaderProblem::Reserved));
}

#[test]
fn copied_values_are_validated() {
    let long = "v".repeat(1000);
    let c = copy(
        r#"["X-*"]"#,
        &format!("<sip:l@acme.zendesk.sip.twilio.com?X-Evil=1%0D%0AVia:%20x&X-Long={long}&X-Bad%20Name=1&X-Ok=fine>"),
    );
    assert_eq!(c.headers, vec![("X-Ok".to_owned(), "fine".to_owned())]);
    assert!(c.headers.iter().all(|(_, v)| !v.contains(['\r', '\n'])));
    let problems: Vec<_> = c
        .omitted
        .iter()
        .map(|o| (o.name.as_str(), &o.problem))
        .collect();
    assert_eq!(
        problems,
        [
            ("X-Evil", &HeaderProblem::ControlCharacter),
            ("X-Long", &HeaderProblem::TooLong("X-Long".len() + 2 + 1000)),
            ("X-Bad Name", &HeaderProblem::BadName),
        ]
    );
}

#[test]
fn omitted_names_are_safe_to_log() {
    let c = copy(
        r#"["X-*"]"#,
        &format!(
            "<sip:l@acme.zendesk.sip.twilio.com?X-A%0D%0AVia:%20x=1&X-{}=2>",
            "n".repeat(200)
        ),
    );
    assert!(c.headers.is_empty());
    assert_eq!(c.omitted[0].name, "X-A\\r\\nVia: x");
    assert_eq!(c.omitted[1].problem, HeaderProblem::BadName);
    assert!(c.omitted[1].name.len() <= 64);
}

#[test]
fn copy_is_bounded() {
    let many: Vec<String> = (0..20).map(|i| format!("X-H{i}=v")).collect();
    let c = copy(
        r#"["X-*"]"#,
        &format!("<sip:l@acme.zendesk.sip.twilio.com?{}>", many.join("&")),
    );
    assert_eq!(c.headers.len(), MAX_COPIED_HEADERS);
    assert_eq!(c.omitted.len(), 20 - MAX_COPIED_HEADERS);
    assert!(c
        .omitted
        .iter()
        .all(|o| o.problem == HeaderProblem::TooMany));
}
