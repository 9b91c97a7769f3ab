//! `[transfer]`: defaults, unknown keys, and validation errors that name the key.

use super::*;
use std::time::Duration;

fn err(toml_body: &str) -> String {
    settings(toml_body).validate().unwrap_err().to_string()
}

#[test]
fn defaults() {
    let s = settings("");
    assert_eq!(s, TransferSettings::default());
    assert!(s.allow.is_empty());
    assert!(s.destination.is_empty());
    assert_eq!(s.fallback_from, "sip:anonymous@anonymous.invalid");
    assert!(s.copy_refer_headers.is_empty());
    assert!(s.zendesk_native_ticket_header);
    assert_eq!(s.ring_timeout(), Duration::from_secs(30));
    assert_eq!(s.max_redirects, 3);
    assert_eq!(s.notify_timeout(), Duration::from_millis(2000));
    assert_eq!(s.validate(), Ok(()));
}

#[test]
fn a_full_table_parses_and_compiles() {
    let p = policy(
        r#"
allow = ["*.zendesk.sip.twilio.com", "tel:+*", "sip:line@pbx.example.com", "10.0.0.5:5090"]
fallback_from = '"Acme" <sip:support@acme.example>'
copy_refer_headers = ["X-Queue", "X-*"]
zendesk_native_ticket_header = false
ring_timeout_secs = 20
max_redirects = 0
notify_timeout_ms = 500

[[destination]]
name = "tier2"
uri = "sip:tier2@acme.zendesk.sip.twilio.com"
codecs = ["PCMA", "telephone-event"]
transport = "tcp"
"#,
    );
    assert_eq!(p.settings.ring_timeout_secs, 20);
    assert!(!p.settings.zendesk_native_ticket_header);
    let d = p.allow.destination("tier2").unwrap();
    assert_eq!(d.codecs, ["PCMA", "telephone-event"]);
    assert_eq!(d.transport, Some(crate::sip::transport::Transport::Tcp));
}

#[test]
fn unknown_keys_are_errors() {
    let e = toml::from_str::<TransferSettings>("alow = []").unwrap_err();
    assert!(e.to_string().contains("alow"), "{e}");
    let e = toml::from_str::<TransferSettings>(
        "[[destination]]\nname = \"a\"\nuri = \"sip:a@b.example\"\npasword = \"x\"\n",
    )
    .unwrap_err();
    assert!(e.to_string().contains("pasword"), "{e}");
}

#[test]
fn bad_allow_pattern_names_its_index() {
    let e = err(r#"allow = ["*.zendesk.sip.twilio.com", "tel:+*", "*"]"#);
    assert!(e.starts_with("transfer.allow[2]: "), "{e}");
    for bad in [
        "",
        "*",
        "*.com",
        "*.localhost",
        "*.*.example.com",
        "a*.example.com",
        "sip:*@x.example",
        "sip:a@b.example?X=1",
        "sips:a@b.example;transport=udp",
        "tel:",
        "tel:+44*20",
        "tel:abc*",
        "tel:5551234",
        "http://x.example",
        "bad host",
        "[::1",
        "host:99999",
        "sip:a@b.example;maddr=10.0.0.1",
        "sip:a@b.example;transport=sctp",
    ] {
        let e = err(&format!("allow = [{bad:?}]"));
        assert!(e.starts_with("transfer.allow[0]: "), "{bad}: {e}");
    }
}

#[test]
fn destination_errors_name_the_field() {
    let d = |body: &str| err(&format!("[[destination]]\n{body}"));
    assert!(d("name = \"a b\"\nuri = \"sip:a@b.example\"")
        .starts_with("transfer.destination[0].name: "));
    assert!(d("name = \"a\"\nuri = \"http://b\"").starts_with("transfer.destination[0].uri: "));
    assert!(d("name = \"a\"\nuri = \"sips:a@b.example;transport=udp\"")
        .starts_with("transfer.destination[0].uri: "));
    assert!(
        d("name = \"a\"\nuri = \"<sip:a@b.example>\"").starts_with("transfer.destination[0].uri: ")
    );
    assert!(d("name = \"a\"\nuri = \"sip:a@b.example?X-A=1\"")
        .starts_with("transfer.destination[0].uri: "));
    assert!(d("name = \"a\"\nuri = \"sip:a@b.example;transport=sctp\"")
        .starts_with("transfer.destination[0].uri: "));
    assert!(
        d("name = \"a\"\nuri = \"sip:a@b.example\"\ntransport = \"sctp\"")
            .starts_with("transfer.destination[0].transport: ")
    );
    // sips: is TLS on every hop: never UDP.
    assert!(
        d("name = \"a\"\nuri = \"sips:a@b.example\"\ntransport = \"udp\"")
            .starts_with("transfer.destination[0].transport: ")
    );
    assert!(
        d("name = \"a\"\nuri = \"sip:a@b.example;transport=udp\"\ntransport = \"tcp\"")
            .starts_with("transfer.destination[0].transport: ")
    );
    assert!(d("name = \"a\"\nuri = \"sip:a@b.example\"\ncodecs = []")
        .starts_with("transfer.destination[0].codecs: "));
    assert!(
        d("name = \"a\"\nuri = \"sip:a@b.example\"\ncodecs = [\"PCMU\", \"pcmu\"]")
            .starts_with("transfer.destination[0].codecs: ")
    );
    assert!(
        d("name = \"a\"\nuri = \"sip:a@b.example\"\nusername = \"u\"")
            .starts_with("transfer.destination[0].password: ")
    );
    assert!(
        d("name = \"a\"\nuri = \"sip:a@b.example\"\npassword = \"p\"")
            .starts_with("transfer.destination[0].username: ")
    );
    assert!(
        d("name = \"a\"\nuri = \"sip:a@b.example\"\nusername = \"u\\n\"\npassword = \"p\"")
            .starts_with("transfer.destination[0].username: ")
    );
}

#[test]
fn zendesk_destination_codecs_must_include_g711() {
    let e = err("[[destination]]\nname = \"zd\"\nuri = \"sip:l@acme.zendesk.sip.twilio.com\"\ncodecs = [\"opus\"]");
    assert!(e.starts_with("transfer.destination[0].codecs: "), "{e}");
    assert!(e.contains("G.711"), "{e}");
}

#[test]
fn duplicate_destination_names_are_refused() {
    let e = err(
        "[[destination]]\nname = \"a\"\nuri = \"sip:a@b.example\"\n[[destination]]\nname = \"a\"\nuri = \"sip:c@b.example\"\n",
    );
    assert!(e.starts_with("transfer.destination[1].name: "), "{e}");
}

#[test]
fn destination_debug_hides_the_password() {
    let s = settings("[[destination]]\nname = \"a\"\nuri = \"sip:a@b.example\"\nusername = \"u\"\npassword = \"hunter22\"");
    assert!(!format!("{s:?}").contains("hunter22"));
    let p = s.compile().unwrap();
    assert!(!format!("{:?}", p.allow).contains("hunter22"));
}

#[test]
fn fallback_from_must_be_a_sip_uri_or_name_addr() {
    for bad in [
        "",
        "anonymous",
        "tel:+15551234567",
        "<sip:a@b.example>;tag=x",
        "<sip:a@b.example?X=1>",
        "\"A\r\n\" <sip:a@b.example>",
    ] {
        let e = err(&format!("fallback_from = {bad:?}"));
        assert!(e.starts_with("transfer.fallback_from: "), "{bad}: {e}");
    }
    assert_eq!(
        settings("fallback_from = 'sips:a@b.example'").validate(),
        Ok(())
    );
}

#[test]
fn copy_refer_headers_must_be_x_names_and_not_reserved() {
    for bad in [
        "Replaces",
        "X-",
        "X-A B",
        "*",
        "X-OPENCX-SESSION-ID",
        "x-opencx-foo",
        "X-Zendesk-Ticket-Id",
    ] {
        let e = err(&format!("copy_refer_headers = [\"X-Ok\", {bad:?}]"));
        assert!(
            e.starts_with("transfer.copy_refer_headers[1]: "),
            "{bad}: {e}"
        );
    }
}

#[test]
fn numeric_bounds_name_their_key() {
    assert!(err("ring_timeout_secs = 0").starts_with("transfer.ring_timeout_secs: "));
    assert!(err("max_redirects = 11").starts_with("transfer.max_redirects: "));
    assert!(err("notify_timeout_ms = 0").starts_with("transfer.notify_timeout_ms: "));
    assert_eq!(settings("max_redirects = 0").validate(), Ok(()));
}

#[test]
fn ticket_note_defaults_to_zendesk_sip_in_hosts_and_can_be_set() {
    let p = policy(
        r#"
allow = ["*.zendesk.sip.twilio.com", "pbx.example.com"]

[[destination]]
name = "zd"
uri = "sip:line@acme.zendesk.sip.twilio.com"

[[destination]]
name = "pbx"
uri = "sip:desk@pbx.example.com"

[[destination]]
name = "pbx-noted"
uri = "sip:desk2@pbx.example.com"
ticket_note = true

[[destination]]
name = "zd-quiet"
uri = "sip:quiet@acme.zendesk.sip.twilio.com"
ticket_note = false
"#,
    );
    let note = |name: &str| p.allow.destination(name).expect(name).ticket_note;
    assert!(note("zd"), "Zendesk SIP-IN: on by default");
    assert!(!note("pbx"), "elsewhere: off by default");
    assert!(note("pbx-noted"));
    assert!(!note("zd-quiet"));
    // Targets allowed by pattern: by host.
    let check = |uri: &str| {
        p.allow
            .check_uri(&crate::sip::message::SipUri::parse(uri).expect("uri"))
            .expect("allowed")
            .ticket_note
    };
    assert!(check("sip:other@acme.zendesk.sip.twilio.com"));
    assert!(!check("sip:x@pbx.example.com"));
}

#[test]
fn summary_header_is_a_header_name_or_empty() {
    assert_eq!(settings("").summary_header, "X-OPENCX-SUMMARY");
    assert_eq!(settings(r#"summary_header = """#).validate(), Ok(()));
    assert_eq!(
        settings(r#"summary_header = "X-Summary""#).validate(),
        Ok(())
    );
    let e = err(r#"summary_header = "X-Bad: 1""#);
    assert!(e.starts_with("transfer.summary_header: "), "{e}");
}

#[test]
fn pstn_gateway_may_be_reached_over_tls_but_sips_never_over_udp() {
    assert!(settings("pstn_gateway = 'sip:gw.example;transport=tls'")
        .validate()
        .is_ok());
    assert!(settings("pstn_gateway = 'sips:gw.example'")
        .validate()
        .is_ok());
    let e = err("pstn_gateway = 'sips:gw.example;transport=udp'");
    assert!(e.starts_with("transfer.pstn_gateway: "), "{e}");
    let e = err("pstn_gateway = 'sip:gw.example;transport=sctp'");
    assert!(e.starts_with("transfer.pstn_gateway: "), "{e}");
}
