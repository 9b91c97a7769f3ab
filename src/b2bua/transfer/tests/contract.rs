use super::*;

fn compile(
    profile: Option<&str>,
    refer: &[&str],
    custom: &[(&str, &str)],
    place: Option<&str>,
    ticket: Option<&str>,
    host: &str,
) -> Result<Contract, (String, String)> {
    let refer: Vec<String> = refer.iter().map(|s| s.to_string()).collect();
    let custom: BTreeMap<String, String> = custom
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Contract::compile(
        &ContractInput {
            profile,
            refer_headers: &refer,
            custom_data_headers: &custom,
            header_placement: place,
            ticket_placement: ticket,
        },
        host,
    )
}

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

const TWILIO: &str = "acme.zendesk.sip.twilio.com";

#[test]
fn the_profile_follows_the_host_unless_named() {
    assert_eq!(
        compile(None, &[], &[], None, None, TWILIO).unwrap().profile,
        Profile::Twilio
    );
    assert_eq!(
        compile(None, &[], &[], None, None, "pbx.example.com")
            .unwrap()
            .profile,
        Profile::Generic
    );
    assert_eq!(
        compile(Some("generic"), &[], &[], None, None, TWILIO)
            .unwrap()
            .profile,
        Profile::Generic
    );
    assert_eq!(
        compile(Some("avaya"), &[], &[], None, None, TWILIO)
            .unwrap_err()
            .0,
        "profile"
    );
}

#[test]
fn bad_contracts_are_refused_naming_the_entry() {
    let e = |refer: &[&str], custom: &[(&str, &str)], profile| {
        compile(profile, refer, custom, None, None, TWILIO).unwrap_err()
    };
    assert_eq!(e(&["Referred-By"], &[], None).0, "refer_headers[0]");
    assert_eq!(
        e(&["X-Ok", "X-OPENCX-AGENT-ID"], &[], None).0,
        "refer_headers[1]"
    );
    assert_eq!(e(&["X-OpenCX-*"], &[], None).0, "refer_headers[0]");
    assert_eq!(e(&["X-Zendesk-Ticket-Id"], &[], None).0, "refer_headers[0]");
    assert_eq!(e(&["X-Twilio-Foo"], &[], None).0, "refer_headers[0]");
    assert_eq!(e(&["X-Twilio*"], &[], None).0, "refer_headers[0]");
    assert_eq!(e(&["X-a b"], &[], None).0, "refer_headers[0]");
    assert_eq!(e(&["User-to-User*"], &[], None).0, "refer_headers[0]");
    assert_eq!(
        e(&[], &[("crm", "Crm-Id")], None).0,
        "custom_data_headers.crm"
    );
    assert_eq!(
        e(&[], &[("crm", "X-Twilio-Crm")], None).0,
        "custom_data_headers.crm"
    );
    assert_eq!(
        e(&[], &[("t", "X-OPENCX-TRANSFER")], None).0,
        "custom_data_headers.t"
    );
    assert_eq!(
        compile(None, &[], &[], Some("body"), None, TWILIO)
            .unwrap_err()
            .0,
        "header_placement"
    );
    assert_eq!(
        compile(None, &[], &[], None, Some("line"), TWILIO)
            .unwrap_err()
            .0,
        "ticket_placement"
    );
    // The identity headers Twilio takes without X-, by exact name only.
    assert!(compile(
        None,
        &[
            "P-Preferred-Identity",
            "Remote-Party-ID",
            "P-Called-Party-ID"
        ],
        &[],
        None,
        None,
        TWILIO
    )
    .is_ok());
    assert_eq!(e(&["P-*"], &[], None).0, "refer_headers[0]");
    assert_eq!(e(&["Diversion"], &[], None).0, "refer_headers[0]");
    // A generic target may take X-Twilio-Foo.
    assert!(compile(Some("generic"), &["X-Twilio-Foo"], &[], None, None, TWILIO).is_ok());
    assert!(compile(
        None,
        &["X-*", "User-to-User"],
        &[("crm", "X-Crm")],
        None,
        None,
        TWILIO
    )
    .is_ok());
}

#[test]
fn refer_headers_are_copied_by_pattern_and_the_target_rules() {
    let c = compile(
        None,
        &["X-Acme-*", "User-to-User", "X-Twilio*"],
        &[],
        None,
        None,
        "pbx.example",
    )
    .unwrap();
    let refer = pairs(&[
        ("X-Acme-Case", "42"),
        ("x-acme-lang", "en"),
        ("X-Other", "no"),
        ("User-to-User", "56a390f3d2b7310023a2;encoding=hex"),
        ("X-OPENCX-ZENDESK-TICKET-ID", "999"),
        ("X-Twilio-Foo", "generic takes it"),
    ]);
    let p = c.plan(&[], &[], &refer, &BTreeMap::new());
    assert_eq!(
        p.lines,
        pairs(&[
            ("X-Acme-Case", "42"),
            ("x-acme-lang", "en"),
            ("User-to-User", "56a390f3d2b7310023a2;encoding=hex"),
            ("X-Twilio-Foo", "generic takes it"),
        ])
    );
    assert!(p.uri.is_empty());

    let t = compile(None, &["X-*", "User-to-User"], &[], None, None, TWILIO).unwrap();
    let p = t.plan(&[], &[], &refer, &BTreeMap::new());
    let names: Vec<&str> = p.lines.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["X-Acme-Case", "x-acme-lang", "X-Other", "User-to-User"]
    );
    let problems: Vec<(&str, &HeaderProblem)> = p
        .omitted
        .iter()
        .map(|o| (o.name.as_str(), &o.problem))
        .collect();
    assert_eq!(
        problems,
        [
            ("X-OPENCX-ZENDESK-TICKET-ID", &HeaderProblem::Reserved),
            ("X-Twilio-Foo", &HeaderProblem::RefusedByTarget),
        ]
    );
}

#[test]
fn nothing_is_copied_from_a_refer_without_a_contract_that_asks() {
    let c = Contract::for_host(TWILIO);
    let p = c.plan(
        &[],
        &[],
        &pairs(&[("X-Acme", "1"), ("User-to-User", "00")]),
        &BTreeMap::new(),
    );
    assert!(p.lines.is_empty() && p.omitted.is_empty());
}

#[test]
fn custom_data_keys_become_headers_and_the_ticket_goes_where_told() {
    let c = compile(
        None,
        &[],
        &[("crm_id", "X-Crm-Id"), ("absent", "X-None")],
        Some("both"),
        Some("uri"),
        TWILIO,
    )
    .unwrap();
    let context = vec![
        ("X-OPENCX-SESSION-ID", "s1".to_owned()),
        ("X-OPENCX-ZENDESK-TICKET-ID", "35436".to_owned()),
        ("X-Zendesk-Ticket-Id", "35436".to_owned()),
    ];
    let custom: BTreeMap<String, String> = [("crm_id".to_owned(), "a b&c".to_owned())].into();
    let p = c.plan(&context, &[], &[], &custom);
    assert_eq!(
        p.lines,
        pairs(&[("X-OPENCX-SESSION-ID", "s1"), ("X-Crm-Id", "a b&c")])
    );
    assert_eq!(
        p.uri,
        pairs(&[
            ("X-OPENCX-ZENDESK-TICKET-ID", "35436"),
            ("X-Zendesk-Ticket-Id", "35436"),
            ("X-Crm-Id", "a b&c"),
        ])
    );
    assert_eq!(
        p.request_uri("sip:line@acme.zendesk.sip.twilio.com"),
        "sip:line@acme.zendesk.sip.twilio.com?X-OPENCX-ZENDESK-TICKET-ID=35436&X-Zendesk-Ticket-Id=35436&X-Crm-Id=a%20b%26c"
    );
}

#[test]
fn what_does_not_fit_is_left_out_whole() {
    let c = compile(None, &["X-*"], &[], Some("both"), None, TWILIO).unwrap();
    let big = "v".repeat(600);
    let line_too_long = "w".repeat(1000);
    let refer = pairs(&[
        ("X-A", &big),
        ("X-B", &big),
        ("X-C", "small"),
        ("X-D", &line_too_long),
        ("X-A", "again"),
        ("X-E", "bad\r\nX-Evil: 1"),
    ]);
    let p = c.plan(&[], &[], &refer, &BTreeMap::new());
    // X-B fits as a line but not in the URI (600 + 600 > 1023): dropped there.
    let line_names: Vec<&str> = p.lines.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(line_names, ["X-A", "X-B", "X-C"]);
    let uri_names: Vec<&str> = p.uri.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(uri_names, ["X-A", "X-C"]);
    assert!(p.request_uri("sip:x@h").len() <= "sip:x@h?".len() + MAX_URI_HEADERS);
    let problems: Vec<(&str, bool)> = p
        .omitted
        .iter()
        .map(|o| {
            (
                o.name.as_str(),
                matches!(
                    o.problem,
                    HeaderProblem::UriTooLong(_)
                        | HeaderProblem::TooLong(_)
                        | HeaderProblem::Duplicate
                        | HeaderProblem::ControlCharacter
                ),
            )
        })
        .collect();
    assert_eq!(
        problems,
        [("X-B", true), ("X-D", true), ("X-A", true), ("X-E", true)]
    );
    for (_, v) in p.lines.iter().chain(&p.uri) {
        assert!(v == &big || v == "small", "never cut: {}", v.len());
    }
}

#[test]
fn at_most_sixteen_extra_headers_and_sixty_four_refer_lines_looked_at() {
    let c = compile(Some("generic"), &["X-*"], &[], None, None, "h").unwrap();
    let refer: Vec<(String, String)> = (0..100).map(|i| (format!("X-H{i}"), "v".into())).collect();
    let p = c.plan(&[], &[], &refer, &BTreeMap::new());
    assert_eq!(p.lines.len(), MAX_EXTRA_HEADERS);
    assert_eq!(p.omitted.len(), MAX_REFER_CANDIDATES - MAX_EXTRA_HEADERS);
}

#[test]
fn referred_by_is_carried_only_when_it_is_an_address() {
    for ok in [
        "<sip:agent@ai.example.com>",
        "\"AI Agent\" <sip:agent@ai.example.com>;cid=\"20398823.2UWQFN309shb3@ai.example.com\"",
        "sip:agent@ai.example.com",
        "<tel:+14155550000>",
    ] {
        assert_eq!(referred_by_value(ok).as_deref(), Some(ok), "{ok}");
    }
    for bad in [
        "",
        "agent",
        "<http://evil.example/>",
        "<sip:a@b>\r\nX-Evil: 1",
        &format!("<sip:{}@b>", "a".repeat(600)),
    ] {
        assert_eq!(referred_by_value(bad), None, "{bad:?}");
    }
}

#[test]
fn uri_escaping_keeps_only_rfc3261_hvalue_characters() {
    assert_eq!(escape("a-Z_0.!~*'()[]/?:+$"), "a-Z_0.!~*'()[]/?:+$");
    assert_eq!(escape("a b&c=d;e%\"<>"), "a%20b%26c%3Dd%3Be%25%22%3C%3E");
    assert_eq!(escape("é"), "%C3%A9");
}
