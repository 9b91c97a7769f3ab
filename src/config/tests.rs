use super::*;

const MINIMAL: &str = r#"
[[route]]
default = true
org_id = "org1"
agent_id = "agent1"
ai_agent_uri = "sip:ai@127.0.0.1:5080"
"#;

fn err(text: &str) -> String {
    Config::parse(text, "config.toml").unwrap_err().to_string()
}

#[test]
fn minimal_config_gets_defaults() {
    let s = Config::parse(MINIMAL, "config.toml").unwrap();
    assert_eq!(s.listen_udp, vec!["127.0.0.1:5060".parse().unwrap()]);
    assert_eq!(s.t1, Duration::from_millis(500));
    assert_eq!(s.max_message_size, 65536);
    assert_eq!(s.routes.len(), 1);
}

#[test]
fn unknown_key_is_named() {
    let e = err(&format!(
        "[sip]\nlisten_udpp = [\"127.0.0.1:5060\"]\n{MINIMAL}"
    ));
    assert!(
        e.contains("listen_udpp") && e.contains("unknown field"),
        "{e}"
    );
    assert!(e.contains("line 2"), "{e}");
    assert!(!e.contains('\n'));
}

#[test]
fn bad_address_is_named() {
    let e = err(&format!("[sip]\nlisten_udp = [\"localhost\"]\n{MINIMAL}"));
    assert!(
        e.contains("sip.listen_udp") && e.contains("localhost"),
        "{e}"
    );
}

#[test]
fn missing_ai_agent_uri_is_named() {
    let e = err("[[route]]\ndefault = true\norg_id = \"o\"\nagent_id = \"a\"\n");
    assert!(e.contains("ai_agent_uri"), "{e}");
    let e = err("[[route]]\ndefault = true\norg_id = \"o\"\nagent_id = \"a\"\nai_agent_uri = \"http://x\"\n");
    assert!(e.contains("route[0].ai_agent_uri"), "{e}");
}

#[test]
fn no_route_is_an_error() {
    assert!(err("[sip]\n").contains("route"));
}

#[test]
fn route_needs_exactly_one_matcher() {
    let e = err("[[route]]\nnumber = \"+1800\"\nprefix = \"+1\"\norg_id = \"o\"\nagent_id = \"a\"\nai_agent_uri = \"sip:a@127.0.0.1\"\n");
    assert!(e.contains("route[0].number"), "{e}");
}

#[test]
fn ids_must_be_tokens() {
    let e = err("[[route]]\ndefault = true\norg_id = \"o r g\"\nagent_id = \"a\"\nai_agent_uri = \"sip:a@127.0.0.1\"\n");
    assert!(e.contains("route[0].org_id"), "{e}");
}

#[test]
fn bad_log_level_and_country() {
    assert!(err(&format!("[log]\nlevel = \"loud\"\n{MINIMAL}")).contains("log.level"));
    assert!(
        err(&format!("[session]\ndefault_country = \"ZZ\"\n{MINIMAL}"))
            .contains("session.default_country")
    );
}

#[test]
fn routes_pick_number_then_longest_prefix_then_default() {
    let s = Config::parse(
        r#"
[[route]]
number = "+18005550100"
org_id = "exact"
agent_id = "a"
ai_agent_uri = "sip:a@127.0.0.1"
[[route]]
prefix = "+1800"
org_id = "short"
agent_id = "a"
ai_agent_uri = "sip:a@127.0.0.1"
[[route]]
prefix = "+18005"
org_id = "long"
agent_id = "a"
ai_agent_uri = "sip:a@127.0.0.1"
[[route]]
default = true
org_id = "fallback"
agent_id = "a"
ai_agent_uri = "sip:a@127.0.0.1"
"#,
        "t",
    )
    .unwrap();
    let org = |u: &str, e: Option<&str>| s.route_for(u, e).map(|r| r.org_id.as_str());
    assert_eq!(org("8005550100", Some("+18005550100")), Some("exact"));
    assert_eq!(org("+18005550199", Some("+18005550199")), Some("long"));
    assert_eq!(org("+18009990000", Some("+18009990000")), Some("short"));
    assert_eq!(
        org("+442079460018", Some("+442079460018")),
        Some("fallback")
    );
}

#[test]
fn no_default_and_no_match_gives_none() {
    let s = Config::parse(
        "[[route]]\nprefix = \"+1800\"\norg_id = \"o\"\nagent_id = \"a\"\nai_agent_uri = \"sip:a@127.0.0.1\"\n",
        "t",
    )
    .unwrap();
    assert!(s.route_for("+4420", Some("+4420")).is_none());
}

#[test]
fn shipped_config_toml_is_valid() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml");
    Config::load(Path::new(path)).unwrap();
}
