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
fn dns_servers_default_to_the_system_and_are_checked() {
    let s = Config::parse(MINIMAL, "config.toml").unwrap();
    assert!(s.dns_servers.is_empty(), "none: the system's configuration");
    let text = format!("[sip]\ndns_servers = [\"127.0.0.1:5353\", \"[::1]:53\"]\n{MINIMAL}");
    let s = Config::parse(&text, "config.toml").unwrap();
    assert_eq!(
        s.dns_servers,
        vec![
            "127.0.0.1:5353".parse::<SocketAddr>().unwrap(),
            "[::1]:53".parse().unwrap()
        ]
    );
    let e = err(&format!("[sip]\ndns_servers = [\"127.0.0.1\"]\n{MINIMAL}"));
    assert!(
        e.contains("sip.dns_servers") && e.contains("127.0.0.1"),
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

#[test]
fn http_defaults_and_keys() {
    let s = Config::parse(MINIMAL, "config.toml").unwrap();
    assert_eq!(s.http.listen, "127.0.0.1:8080".parse().unwrap());
    assert_eq!(s.http.public_base_url, "http://127.0.0.1:8080");
    assert!(s.http.signing_keys.is_empty() && s.http.api_key.is_none());
    assert_eq!(s.http.signature_max_age, Duration::from_secs(300));
    let text = format!(
        "[http]\nlisten = \"127.0.0.1:0\"\npublic_base_url = \"https://hooks.example.com/\"\napi_key = \"0123456789abcdef\"\ntoken_ttl_secs = 60\n[[http.signing_keys]]\nkid = \"a\"\nsecret = \"0123456789abcdef\"\nissuer = \"me\"\n[[http.signing_keys]]\nkid = \"b\"\nsecret = \"fedcba9876543210\"\nissuer = \"me\"\n[zendesk]\nwebhook_signing_secret = \"s\"\n{MINIMAL}"
    );
    let s = Config::parse(&text, "config.toml").unwrap();
    assert_eq!(s.http.public_base_url, "https://hooks.example.com");
    assert_eq!(
        s.http.signing_keys.last().map(|k| k.kid.as_str()),
        Some("b")
    );
    assert_eq!(s.http.token_ttl, Duration::from_secs(60));
    assert!(
        !format!("{:?}", s.http).contains("0123456789abcdef"),
        "secrets stay out of Debug"
    );
}

#[test]
fn bad_http_keys_are_named() {
    let key = |kid: &str, secret: &str| {
        format!("[[http.signing_keys]]\nkid = \"{kid}\"\nsecret = \"{secret}\"\nissuer = \"me\"\n")
    };
    for (text, needle) in [
        ("[http]\nlisten = \"8080\"\n".to_owned(), "http.listen"),
        (
            "[http]\npublic_base_url = \"ftp://x\"\n".to_owned(),
            "http.public_base_url",
        ),
        ("[http]\napi_key = \"short\"\n".to_owned(), "http.api_key"),
        (
            "[http]\ndashboard_jwt_secret = \"has space 0123456789\"\n".to_owned(),
            "http.dashboard_jwt_secret",
        ),
        (
            "[http]\ntoken_ttl_secs = 0\n".to_owned(),
            "http.token_ttl_secs",
        ),
        ("[http]\nlisten_on = \"x\"\n".to_owned(), "listen_on"),
        (key("a b", "0123456789abcdef"), "http.signing_keys[0].kid"),
        (key("a", "short"), "http.signing_keys[0].secret"),
        (
            format!(
                "{}{}",
                key("a", "0123456789abcdef"),
                key("a", "0123456789abcdef")
            ),
            "http.signing_keys[1].kid",
        ),
        (
            "[zendesk]\nsignature_max_age_secs = 0\n".to_owned(),
            "zendesk.signature_max_age_secs",
        ),
        (
            "[zendesk]\nwebhook_signing_secret = \"\"\n".to_owned(),
            "zendesk.webhook_signing_secret",
        ),
    ] {
        let e = err(&format!("{text}{MINIMAL}"));
        assert!(e.contains(needle), "{needle}: {e}");
    }
}

#[test]
fn session_store_is_memory_unless_named_otherwise() {
    let s = Config::parse(MINIMAL, "config.toml").unwrap();
    assert_eq!(s.session_store, crate::session::SessionStoreKind::Memory);
    let s = Config::parse(&format!("[session]\nstore = \"memory\"\n{MINIMAL}"), "c").unwrap();
    assert_eq!(s.session_store, crate::session::SessionStoreKind::Memory);
    let e = err(&format!("[session]\nstore = \"mongo\"\n{MINIMAL}"));
    assert!(e.contains("session.store") && e.contains("redis"), "{e}");
    assert!(!e.contains('\n'));
    // Redis needs its URL; with it, the store is Redis.
    let e = err(&format!("[session]\nstore = \"redis\"\n{MINIMAL}"));
    assert!(e.contains("session.redis_url"), "{e}");
    let text = format!(
        "[session]\nstore = \"redis\"\nredis_url = \"redis://:pw@127.0.0.1:6379/0\"\n\
         [cluster]\nnode_id = \"node-a\"\n{MINIMAL}"
    );
    let s = Config::parse(&text, "c").unwrap();
    assert_eq!(s.session_store, crate::session::SessionStoreKind::Redis);
    assert_eq!(s.node_id, "node-a");
    let r = s.session_redis.expect("redis settings");
    assert_eq!(r.key_prefix, "handoff:");
    assert!(!format!("{r:?}").contains(":pw@"), "{r:?}");
}

#[test]
fn trunk_client_ca_needs_a_tls_listener_and_a_readable_file() {
    let trunk = |ca: &str| {
        format!("[[trunk]]\nname = \"c\"\nsources = [\"127.0.0.1\"]\ntls_client_ca = \"{ca}\"\n{MINIMAL}")
    };
    let e = err(&trunk("/nonexistent/ca.pem"));
    assert!(
        e.contains("trunk[0].tls_client_ca") && e.contains("sip.listen_tls"),
        "{e}"
    );
}

#[test]
fn srtp_policies_are_read_and_a_bad_one_is_named() {
    let text = format!(
        "{MINIMAL}srtp = \"required\"\ncaller_srtp = \"optional\"\n\
         [[trunk]]\nname = \"c\"\nsources = [\"127.0.0.1\"]\nsrtp = \"optional\"\n\
         [transfer]\ndestination = [{{ name = \"z\", uri = \"sip:z@127.0.0.1\", srtp = \"required\" }}]\n"
    );
    let s = Config::parse(&text, "config.toml").unwrap();
    assert_eq!(s.routes[0].srtp, srtp::SrtpPolicy::Required);
    assert_eq!(s.routes[0].caller_srtp, srtp::SrtpPolicy::Optional);
    assert_eq!(s.trunks[0].srtp, srtp::SrtpPolicy::Optional);
    assert_eq!(
        Config::parse(MINIMAL, "config.toml").unwrap().routes[0].srtp,
        srtp::SrtpPolicy::Off
    );
    let e = err(&format!("{MINIMAL}srtp = \"on\"\n"));
    assert!(
        e.contains("route[0].srtp") && e.contains("\"required\""),
        "{e}"
    );
    let e = err(&text.replace("srtp = \"required\" }", "srtp = \"yes\" }"));
    assert!(e.contains("transfer.destination[0].srtp"), "{e}");
    let e = err(&format!("[media]\nmode = \"passthrough\"\n{text}"));
    assert!(
        e.contains("route[0].srtp") && e.contains("media.mode"),
        "{e}"
    );
}
