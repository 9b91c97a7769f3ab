//! The From of the transfer leg.

use super::*;

fn fallback(value: &str) -> FallbackFrom {
    policy(&format!("fallback_from = {value:?}")).fallback_from
}

fn default_fallback() -> FallbackFrom {
    TransferSettings::default().compile().unwrap().fallback_from
}

#[test]
fn caller_e164_number_is_the_user_part_with_display_name_kept() {
    let f = transfer_from(&session(), "sip.handoff.example", "t1", &default_fallback());
    assert_eq!(
        f,
        r#""Alice Caller" <sip:+15551234567@sip.handoff.example>;tag=t1"#
    );
}

#[test]
fn display_name_is_escaped_and_stripped_of_control_characters() {
    let mut s = session();
    s.caller_display_name = Some("Bob \"The\" \\Boss\r\nVia: evil\u{7f}".into());
    let f = transfer_from(&s, "h.example", "t", &default_fallback());
    assert_eq!(
        f,
        r#""Bob \"The\" \\BossVia: evil" <sip:+15551234567@h.example>;tag=t"#
    );
    assert!(crate::sip::message::check_value(&f).is_ok());
}

#[test]
fn long_or_empty_display_names() {
    let mut s = session();
    s.caller_display_name = Some("é".repeat(80));
    let f = transfer_from(&s, "h.example", "t", &default_fallback());
    let shown = f.split('"').nth(1).unwrap();
    assert_eq!(shown, "é".repeat(50), "cut to 100 bytes on a char boundary");
    s.caller_display_name = Some(" \r\n ".into());
    let f = transfer_from(&s, "h.example", "t", &default_fallback());
    assert_eq!(f, "<sip:+15551234567@h.example>;tag=t");
}

#[test]
fn ipv6_host_is_bracketed() {
    let mut s = session();
    s.caller_display_name = None;
    let f = transfer_from(&s, "2001:db8::1", "t", &default_fallback());
    assert_eq!(f, "<sip:+15551234567@[2001:db8::1]>;tag=t");
}

#[test]
fn no_caller_number_uses_the_default_fallback() {
    let mut s = session();
    s.caller_phone = None;
    let f = transfer_from(&s, "h.example", "t", &default_fallback());
    assert_eq!(f, "<sip:anonymous@anonymous.invalid>;tag=t");
}

#[test]
fn configured_fallback_name_addr_is_used() {
    let mut s = session();
    s.caller_phone = None;
    let fb = fallback(r#""Acme Support" <sip:+18005550100@acme.example>"#);
    let f = transfer_from(&s, "h.example", "t9", &fb);
    assert_eq!(
        f,
        r#""Acme Support" <sip:+18005550100@acme.example>;tag=t9"#
    );
}

#[test]
fn unusable_caller_numbers_use_the_fallback() {
    let fb = fallback("sip:fallback@acme.example");
    for bad in [
        "15551234567",
        "+1555;evil",
        "+",
        "+0123",
        "+1234567890123456",
        "anonymous",
    ] {
        let mut s = session();
        s.caller_phone = Some(bad.into());
        let f = transfer_from(&s, "h.example", "t", &fb);
        assert_eq!(f, "<sip:fallback@acme.example>;tag=t", "{bad}");
    }
}
