//! The allow-list: patterns, named destinations, and no open relay.

use super::*;

fn check(toml_body: &str, refer_to: &str) -> Result<Destination, Refused> {
    policy(toml_body).allow.check(&target(refer_to))
}

const ZENDESK: &str = r#"allow = ["*.zendesk.sip.twilio.com"]"#;

#[test]
fn wildcard_matches_one_or_more_labels() {
    let d = check(ZENDESK, "<sip:line@acme.zendesk.sip.twilio.com>").unwrap();
    assert_eq!(d.name, None);
    assert_eq!(d.kind, DestinationKind::Sip);
    assert_eq!(d.uri.as_str(), "sip:line@acme.zendesk.sip.twilio.com");
    assert!(check(ZENDESK, "<sip:line@a.b.zendesk.sip.twilio.com>").is_ok());
}

#[test]
fn wildcard_needs_at_least_one_label_and_a_real_suffix() {
    for t in [
        "<sip:line@zendesk.sip.twilio.com>",
        "<sip:line@evilzendesk.sip.twilio.com>",
        "<sip:line@acme.zendesk.sip.twilio.com.evil.example>",
        "<sip:line@.zendesk.sip.twilio.com>",
    ] {
        assert_eq!(check(ZENDESK, t), Err(Refused::NotAllowed), "{t}");
    }
}

#[test]
fn host_matching_is_case_insensitive() {
    assert!(check(ZENDESK, "<sip:line@ACME.Zendesk.SIP.Twilio.COM>").is_ok());
    let exact = r#"allow = ["Carrier.Example.NET"]"#;
    assert!(check(exact, "<sip:+15551234567@carrier.example.net>").is_ok());
}

#[test]
fn trailing_root_dot_is_the_same_host() {
    assert!(check(ZENDESK, "<sip:line@acme.zendesk.sip.twilio.com.>").is_ok());
}

#[test]
fn wildcard_never_matches_ip_literals_localhost_or_dotless_hosts() {
    let broad = r#"allow = ["*.example.com", "*.zendesk.sip.twilio.com"]"#;
    for t in [
        "<sip:a@127.0.0.1>",
        "<sip:a@10.0.0.5:5060>",
        "<sip:a@[::1]>",
        "<sip:a@[fd00::5]:5070>",
        "<sip:a@localhost>",
        "<sip:a@intranet>",
        "<sip:a@169.254.169.254>",
    ] {
        assert_eq!(check(broad, t), Err(Refused::NotAllowed), "{t}");
    }
}

#[test]
fn wildcard_guard_holds_even_for_patterns_validation_would_refuse() {
    use crate::b2bua::transfer::allow::Pattern;
    let list = AllowList {
        patterns: vec![
            Pattern::Wildcard("0.1".into()),
            Pattern::Wildcard("localhost".into()),
            Pattern::Wildcard("168.192.in-addr.arpa.1".into()),
        ],
        named: Vec::new(),
    };
    for t in [
        "<sip:a@127.0.0.1>",
        "<sip:a@x.localhost>",
        "<sip:a@127.0.1>",
    ] {
        assert_eq!(list.check(&target(t)), Err(Refused::NotAllowed), "{t}");
    }
}

#[test]
fn ip_literals_and_localhost_match_only_an_exact_pattern() {
    let exact = r#"allow = ["127.0.0.1", "[::1]", "localhost", "10.0.0.5:5090"]"#;
    assert!(check(exact, "<sip:zd@127.0.0.1:5090>").is_ok());
    assert!(check(exact, "<sip:zd@[::1]:5090>").is_ok());
    assert!(
        check(exact, "<sip:zd@[0:0::1]>").is_ok(),
        "same IPv6 address"
    );
    assert!(check(exact, "<sip:zd@LOCALHOST>").is_ok());
    assert!(check(exact, "<sip:zd@10.0.0.5:5090>").is_ok());
    assert_eq!(
        check(exact, "<sip:zd@10.0.0.5:5091>"),
        Err(Refused::NotAllowed),
        "port is part of that pattern"
    );
    assert_eq!(check(exact, "<sip:zd@127.0.0.2>"), Err(Refused::NotAllowed));
}

#[test]
fn exact_sip_uri_pattern() {
    let p = r#"allow = ["sip:line@pbx.example.com"]"#;
    assert!(check(p, "<sip:line@PBX.example.com>").is_ok());
    assert_eq!(
        check(p, "<sip:other@pbx.example.com>"),
        Err(Refused::NotAllowed)
    );
    assert_eq!(
        check(p, "<sip:LINE@pbx.example.com>"),
        Err(Refused::NotAllowed),
        "user part is case-sensitive"
    );
    assert_eq!(
        check(p, "<sip:line@pbx.example.com:5070>"),
        Err(Refused::NotAllowed),
        "an explicit port is another URI"
    );
    assert_eq!(
        check(p, "<sip:line@pbx.example.com;transport=tcp>"),
        Err(Refused::NotAllowed),
        "transport must agree when either side has it"
    );
}

#[test]
fn tel_prefix_globs() {
    let p = r#"allow = ["tel:+4420*"]"#;
    let d = check(p, "<tel:+442079460000>").unwrap();
    assert_eq!(d.kind, DestinationKind::Tel);
    assert!(
        check(p, "<tel:+44-20-7946-0000>").is_ok(),
        "visual separators"
    );
    assert_eq!(check(p, "<tel:+441632960000>"), Err(Refused::NotAllowed));
    assert_eq!(
        check(p, "<sip:+442079460000@carrier.example.net>"),
        Err(Refused::NotAllowed)
    );
    let any = r#"allow = ["tel:+*"]"#;
    assert!(check(any, "<tel:+15551234567>").is_ok());
    assert_eq!(
        check(any, "<tel:5551234;phone-context=example.com>"),
        Err(Refused::NotAllowed),
        "local numbers do not match +"
    );
    assert_eq!(
        check(any, "<tel:+1*67#>"),
        Err(Refused::NotAllowed),
        "service codes never match"
    );
}

#[test]
fn exact_tel_number() {
    let p = r#"allow = ["tel:+15551234567"]"#;
    assert!(check(p, "tel:+1-555-123-4567").is_ok());
    assert_eq!(check(p, "tel:+155512345678"), Err(Refused::NotAllowed));
}

const NAMED: &str = r#"
[[destination]]
name = "zendesk-tier2"
uri = "sip:tier2@acme.zendesk.sip.twilio.com"

[[destination]]
name = "pbx"
uri = "sip:queue@10.1.2.3:5070;transport=tcp"
codecs = ["opus", "PCMU"]
username = "handoff"
password = "s3cret-pass"
"#;

#[test]
fn named_destination_matches_its_uri_with_nothing_else_allowed() {
    let d = check(NAMED, "<sip:tier2@acme.zendesk.sip.twilio.com>").unwrap();
    assert_eq!(d.name.as_deref(), Some("zendesk-tier2"));
    assert_eq!(d.kind, DestinationKind::Sip);
    assert_eq!(d.codecs, ["PCMU", "PCMA", "telephone-event"]);
    assert_eq!(d.credentials, None);
    assert_eq!(
        check(NAMED, "<sip:tier1@acme.zendesk.sip.twilio.com>"),
        Err(Refused::NotAllowed),
        "empty allow list: only named destinations"
    );
}

#[test]
fn named_destination_carries_codecs_credentials_and_transport() {
    let d = check(NAMED, "<sip:queue@10.1.2.3:5070;transport=TCP?X-Foo=1>").unwrap();
    assert_eq!(d.name.as_deref(), Some("pbx"));
    assert_eq!(d.codecs, ["opus", "PCMU"]);
    let c = d.credentials.expect("credentials");
    assert_eq!(c.username, "handoff");
    assert_eq!(c.password.expose(), "s3cret-pass");
    assert_eq!(d.transport, Some(crate::sip::transport::Transport::Tcp));
    assert_eq!(d.uri.as_str(), "sip:queue@10.1.2.3:5070;transport=tcp");
    assert!(policy(NAMED).allow.destination("pbx").is_some());
    assert!(policy(NAMED).allow.destination("nope").is_none());
}

#[test]
fn pattern_destinations_default_to_g711_and_telephone_event() {
    let d = dest("<sip:line@acme.zendesk.sip.twilio.com>");
    assert_eq!(d.codecs, DEFAULT_CODECS);
    let d = dest("<sip:+15551234567@carrier.example.net;user=phone>");
    assert_eq!(d.codecs, DEFAULT_CODECS);
    assert_eq!(d.credentials, None);
}

#[test]
fn kind_follows_scheme_and_user_phone() {
    assert_eq!(
        dest("<sip:line@acme.zendesk.sip.twilio.com>").kind,
        DestinationKind::Sip
    );
    assert_eq!(dest("<tel:+15551234567>").kind, DestinationKind::Tel);
    assert_eq!(
        dest("<sip:+15551234567@carrier.example.net;user=phone>").kind,
        DestinationKind::SipUserPhone
    );
    assert_eq!(
        dest("sip:+15551234567@carrier.example.net;user=phone").kind,
        DestinationKind::SipUserPhone,
        "user=phone as an addr-spec header parameter"
    );
}

#[test]
fn maddr_sips_over_udp_and_unknown_transports_are_refused() {
    let p = policy(r#"allow = ["*.zendesk.sip.twilio.com"]"#);
    let c = |v: &str| p.allow.check(&target(v));
    assert_eq!(
        c("<sip:line@acme.zendesk.sip.twilio.com;maddr=10.0.0.1>"),
        Err(Refused::Maddr)
    );
    assert_eq!(
        c("<sips:line@acme.zendesk.sip.twilio.com;transport=udp>"),
        Err(Refused::Transport("udp".into()))
    );
    assert_eq!(
        c("<sip:line@acme.zendesk.sip.twilio.com;transport=sctp>"),
        Err(Refused::Transport("sctp".into()))
    );
    // TLS: a sips: target (over TLS whatever it says) and a transport=tls one.
    let d = c("<sips:line@acme.zendesk.sip.twilio.com>").unwrap();
    assert_eq!(d.uri.scheme, "sips");
    let d = c("<sip:line@acme.zendesk.sip.twilio.com;transport=tls>").unwrap();
    assert_eq!(d.transport, Some(crate::sip::transport::Transport::Tls));
    let d = c("<sip:line@acme.zendesk.sip.twilio.com;transport=tcp>").unwrap();
    assert_eq!(d.transport, Some(crate::sip::transport::Transport::Tcp));
}

#[test]
fn a_redirect_never_goes_from_tls_to_the_clear() {
    let p = policy(r#"allow = ["*.zendesk.sip.twilio.com"]"#);
    let c = |v: &str| p.allow.check(&target(v)).expect("allowed");
    let sips = c("<sips:line@acme.zendesk.sip.twilio.com>");
    let tls = c("<sip:line@acme.zendesk.sip.twilio.com;transport=tls>");
    let plain = c("<sip:line@acme.zendesk.sip.twilio.com>");
    assert!(sips.is_secure() && tls.is_secure() && !plain.is_secure());
    assert!(!sips.may_redirect_to(&plain));
    assert!(!tls.may_redirect_to(&plain));
    assert!(sips.may_redirect_to(&tls));
    assert!(plain.may_redirect_to(&sips));
    assert!(plain.may_redirect_to(&plain));
}

#[test]
fn redirect_contacts_are_checked_like_targets() {
    let p = policy(ZENDESK);
    let ok = crate::sip::message::SipUri::parse("sip:other@acme.zendesk.sip.twilio.com").unwrap();
    assert!(p.allow.check_uri(&ok).is_ok());
    let internal = crate::sip::message::SipUri::parse("sip:x@192.168.1.1").unwrap();
    assert_eq!(p.allow.check_uri(&internal), Err(Refused::NotAllowed));
}

#[test]
fn empty_settings_allow_nothing() {
    let p = TransferSettings::default().compile().unwrap();
    assert_eq!(
        p.allow
            .check(&target("<sip:line@acme.zendesk.sip.twilio.com>")),
        Err(Refused::NotAllowed)
    );
    assert_eq!(
        p.allow.check(&target("<tel:+15551234567>")),
        Err(Refused::NotAllowed)
    );
}
