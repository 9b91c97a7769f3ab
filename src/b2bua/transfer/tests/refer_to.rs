//! Refer-To parsing (RFC 3515 2.1, RFC 3261 19.1.5 and 20.10).

use super::*;

#[test]
fn name_addr_with_display_name_and_params_after_the_uri() {
    let t = target(r#""Support" <sip:line1@acme.zendesk.sip.twilio.com;transport=tcp>;foo=bar"#);
    assert_eq!(t.display_name.as_deref(), Some("Support"));
    assert_eq!(t.uri.scheme, "sip");
    assert_eq!(t.uri.user.as_deref(), Some("line1"));
    assert_eq!(t.uri.host, "acme.zendesk.sip.twilio.com");
    assert_eq!(t.uri.transport().as_deref(), Some("tcp"));
    assert_eq!(t.params, vec![("foo".to_owned(), Some("bar".to_owned()))]);
    assert!(t.uri_headers.is_empty());
}

#[test]
fn quoted_display_name_may_hold_angle_brackets_and_escapes() {
    let t = target(r#""Tier <2> \"VIP\"" <sip:line@acme.zendesk.sip.twilio.com>"#);
    assert_eq!(t.display_name.as_deref(), Some(r#"Tier <2> "VIP""#));
    assert_eq!(t.uri.as_str(), "sip:line@acme.zendesk.sip.twilio.com");
}

#[test]
fn addr_spec_params_belong_to_the_header() {
    let t = target("sip:line@acme.zendesk.sip.twilio.com;user=phone");
    assert_eq!(t.display_name, None);
    assert_eq!(t.uri.as_str(), "sip:line@acme.zendesk.sip.twilio.com");
    assert_eq!(t.uri.param("user"), None);
    assert_eq!(
        t.params,
        vec![("user".to_owned(), Some("phone".to_owned()))]
    );
}

#[test]
fn sip_sips_and_tel_schemes_parse() {
    assert_eq!(target("<sips:a@secure.example.com>").uri.scheme, "sips");
    let t = target("<tel:+1-415-555-1212>");
    assert_eq!(t.uri.scheme, "tel");
    assert_eq!(t.uri.user.as_deref(), Some("+1-415-555-1212"));
    assert_eq!(target("tel:+442079460000").uri.scheme, "tel");
}

#[test]
fn embedded_headers_are_removed_and_percent_decoded() {
    let t = target(
        "<sip:line@acme.zendesk.sip.twilio.com;transport=udp?X-Foo=bar%20baz&Replaces=abc%40host%3Bto-tag%3D1%3Bfrom-tag%3D2&X-Empty=>",
    );
    assert_eq!(
        t.uri.as_str(),
        "sip:line@acme.zendesk.sip.twilio.com;transport=udp"
    );
    assert_eq!(t.uri.transport().as_deref(), Some("udp"));
    assert_eq!(
        t.uri_headers,
        vec![
            ("X-Foo".to_owned(), "bar baz".to_owned()),
            (
                "Replaces".to_owned(),
                "abc@host;to-tag=1;from-tag=2".to_owned()
            ),
            ("X-Empty".to_owned(), String::new()),
        ]
    );
    assert_eq!(
        t.uri_header("replaces"),
        Some("abc@host;to-tag=1;from-tag=2")
    );
}

#[test]
fn encoded_crlf_in_an_embedded_header_is_decoded_not_trusted() {
    // Decoded as sent; the copy step refuses it (see headers tests).
    let t = target("<sip:a@b.example.com?X-Evil=1%0D%0AVia:%20x>");
    assert_eq!(t.uri_header("X-Evil"), Some("1\r\nVia: x"));
}

#[test]
fn no_refer_to_is_missing() {
    assert_eq!(parse_refer_to(&[]), Err(ReferToError::Missing));
    assert_eq!(parse_refer_to(&["", "  "]), Err(ReferToError::Missing));
}

#[test]
fn two_refer_to_values_are_refused() {
    assert_eq!(
        parse_refer_to(&["<sip:a@x.example.com>", "<sip:b@x.example.com>"]),
        Err(ReferToError::Multiple)
    );
    assert_eq!(
        parse_refer_to(&["<sip:a@x.example.com>, <sip:b@x.example.com>"]),
        Err(ReferToError::Multiple)
    );
    // A comma inside the brackets or quotes is not a list separator.
    assert!(parse_refer_to(&[r#""Doe, John" <sip:a@x.example.com>"#]).is_ok());
}

#[test]
fn unparsable_values_are_malformed() {
    for bad in [
        "<sip:a@x.example.com",
        "sip:a@x.example.com?X-Foo=bar",
        "<sip:a b@x.example.com>",
        "<sip:a@x.example.com> junk",
        r#""unterminated <sip:a@x.example.com>"#,
        "<sip:a@x.example.com?=novalue>",
        "<sip:a@x.example.com?X-Foo>",
        "<tel:+1;x>junk",
        "<tel:abc-not-a-number!>",
        "<sip:a@x.example.com>\r\nVia: x",
    ] {
        assert_eq!(
            parse_refer_to(&[bad]),
            Err(ReferToError::Malformed),
            "{bad}"
        );
    }
    let long = format!("<sip:{}@x.example.com>", "a".repeat(5000));
    assert_eq!(parse_refer_to(&[&long]), Err(ReferToError::Malformed));
}

#[test]
fn other_schemes_are_unsupported() {
    for bad in [
        "<http://evil.example.com/>",
        "<mailto:a@b>",
        "urn:service:sos",
        "<nothing>",
    ] {
        assert_eq!(
            parse_refer_to(&[bad]),
            Err(ReferToError::UnsupportedScheme),
            "{bad}"
        );
    }
}

#[test]
fn method_other_than_invite_is_refused() {
    assert_eq!(
        parse_refer_to(&["<sip:a@x.example.com;method=BYE>"]),
        Err(ReferToError::UnsupportedMethod)
    );
    assert!(parse_refer_to(&["<sip:a@x.example.com;method=INVITE>"]).is_ok());
}

#[test]
fn error_reasons_are_header_safe() {
    for e in [
        ReferToError::Missing,
        ReferToError::Multiple,
        ReferToError::Malformed,
        ReferToError::UnsupportedScheme,
        ReferToError::UnsupportedMethod,
    ] {
        let r = e.reason();
        assert!(!r.is_empty() && r.len() < 40, "{r}");
        assert!(r.bytes().all(|b| b.is_ascii_graphic() || b == b' '), "{r}");
        assert_eq!(e.to_string(), r);
    }
}

#[test]
fn hostile_input_never_panics() {
    for v in [
        "<",
        ">",
        "\"",
        "<>",
        "<:>",
        "<sip:>",
        "<sip:@>",
        "sip:",
        "tel:",
        "<tel:>",
        "\"\\",
        "<sip:a@[::1>",
        "<sip:a@[zz]>",
        "é<sip:a@b.example.com>",
        "<sip:€@b.example.com?€=%FF%>",
        "<sip:a@b.example.com?&&&>",
        ";;;",
        "<sips:a@b;maddr=1.2.3.4?X-A=%E2%82>",
    ] {
        let _ = parse_refer_to(&[v]);
    }
}
