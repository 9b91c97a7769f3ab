//! `[[trunk]]`: the carriers handoff takes calls from, by source address, with their
//! own limits; `[sip] allow_any_source`; `[[route]] trunks`. Validated here, used by
//! `b2bua::acl` (who may send a request outside a dialog) and `b2bua::trunk` (limits).

use ipnet::IpNet;
use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// More trunks than this is a configuration mistake (and a slower source check).
const MAX_TRUNKS: usize = 256;
/// CIDRs per list (`sources`, `media`) of one trunk.
const MAX_CIDRS: usize = 1024;

/// One `[[trunk]]` as written in `config.toml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrunkConfig {
    /// A token (letters, digits, `-._!%*+`'~`), unique; used in routes and metric labels.
    pub name: String,
    /// Signalling source addresses: CIDRs or bare IPs (a bare IP is /32 or /128).
    pub sources: Vec<String>,
    /// Where the trunk's media may come from (the media relay's latching); optional.
    #[serde(default)]
    pub media: Vec<String>,
    /// Concurrent calls from this trunk; none: only the global limit.
    #[serde(default)]
    pub max_calls: Option<usize>,
    /// New calls per second from this trunk; none: only the global limit.
    #[serde(default)]
    pub max_calls_per_second: Option<u32>,
    /// Mutual TLS: a PEM file of the CAs this trunk's client certificates chain to.
    /// Set: a TLS connection from the trunk's sources must present one.
    #[serde(default)]
    pub tls_client_ca: Option<String>,
    /// SRTP on the carrier leg: "off" (default), "optional", "required".
    #[serde(default)]
    pub srtp: Option<String>,
    /// `[trunk.auth]`: handoff digest-authenticates this trunk's INVITEs (407).
    #[serde(default)]
    pub auth: Option<super::registration::TrunkAuthConfig>,
    /// `[trunk.register]`: handoff registers with this trunk's registrar.
    #[serde(default)]
    pub register: Option<super::registration::RegistrationConfig>,
    /// `carrier` (default) or `ai_agent` (its INVITEs to numbers are outbound calls).
    #[serde(default)]
    pub kind: super::trunk_outbound::TrunkKind,
    /// `ai_agent`: the org whose calls it places.
    #[serde(default)]
    pub org_id: Option<String>,
    /// `ai_agent`: the agent ids that may call; none: the org's agents of `[[route]]`.
    #[serde(default)]
    pub agent_ids: Vec<String>,
    /// `carrier`: where outbound calls go (`[trunk.outbound]`).
    #[serde(default)]
    pub outbound: Option<super::trunk_outbound::TrunkOutboundConfig>,
}

/// One validated trunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trunk {
    pub name: String,
    /// Networks (host bits cleared) its requests come from.
    pub sources: Vec<IpNet>,
    /// Networks its media comes from; empty when not configured.
    pub media: Arc<[IpNet]>,
    pub max_calls: Option<usize>,
    pub max_calls_per_second: Option<u32>,
    /// `tls_client_ca`: read and checked with the TLS settings (`config::tls`).
    pub tls_client_ca: Option<std::path::PathBuf>,
    /// `srtp`: the caller leg of this trunk's calls.
    pub srtp: super::srtp::SrtpPolicy,
    /// `[trunk.auth]`, validated: the credentials its INVITEs must carry.
    pub auth: Option<crate::sip::auth::server::VerifierConfig>,
    /// `[trunk.register]`, validated.
    pub register: Option<super::registration::Registration>,
    /// A carrier (with or without an outbound side) or an AI agent placing calls.
    pub role: super::trunk_outbound::TrunkRole,
}

/// A trunk value that cannot be used; `key` is the full key (`trunk[0].sources[1]`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {problem}")]
pub struct TrunkConfigError {
    pub key: String,
    pub problem: String,
}

fn bad(key: impl Into<String>, problem: impl Into<String>) -> TrunkConfigError {
    TrunkConfigError {
        key: key.into(),
        problem: problem.into(),
    }
}

/// A CIDR (`192.0.2.0/24`, `2001:db8::/32`) or a bare IP address (one host).
pub fn parse_net(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    if s.contains('/') {
        s.parse::<IpNet>().map(|n| n.trunc()).map_err(|_| {
            format!("{s:?} is not a CIDR such as \"192.0.2.0/24\" or \"2001:db8::/32\"")
        })
    } else {
        s.parse::<IpAddr>()
            .map(IpNet::from)
            .map_err(|_| format!("{s:?} is not an IP address or a CIDR such as \"192.0.2.0/24\""))
    }
}

fn parse_list(key: &str, list: &[String]) -> Result<Vec<IpNet>, TrunkConfigError> {
    if list.len() > MAX_CIDRS {
        return Err(bad(key, format!("at most {MAX_CIDRS} entries")));
    }
    list.iter()
        .enumerate()
        .map(|(j, s)| parse_net(s).map_err(|e| bad(format!("{key}[{j}]"), e)))
        .collect()
}

/// Validate every `[[trunk]]`; the error names the first bad key.
pub fn compile(list: &[TrunkConfig]) -> Result<Vec<Trunk>, TrunkConfigError> {
    if list.len() > MAX_TRUNKS {
        return Err(bad("trunk", format!("at most {MAX_TRUNKS} trunks")));
    }
    let mut trunks: Vec<Trunk> = Vec::with_capacity(list.len());
    for (i, t) in list.iter().enumerate() {
        let key = |k: &str| format!("trunk[{i}].{k}");
        if t.name.is_empty()
            || t.name.len() > 64
            || !t.name.bytes().all(crate::sip::message::is_token_char)
        {
            return Err(bad(
                key("name"),
                format!(
                    "{:?} must be 1-64 token characters (letters, digits, -._!%*+`'~)",
                    t.name
                ),
            ));
        }
        if trunks.iter().any(|o| o.name == t.name) {
            return Err(bad(key("name"), format!("{:?} is used twice", t.name)));
        }
        if t.sources.is_empty() {
            return Err(bad(
                key("sources"),
                "is required and must list at least one CIDR or IP address",
            ));
        }
        let sources = parse_list(&key("sources"), &t.sources)?;
        let media = parse_list(&key("media"), &t.media)?;
        if t.max_calls == Some(0) {
            return Err(bad(key("max_calls"), "must be at least 1 (or left out)"));
        }
        if t.max_calls_per_second == Some(0) {
            return Err(bad(
                key("max_calls_per_second"),
                "must be at least 1 (or left out)",
            ));
        }
        let auth = t
            .auth
            .as_ref()
            .map(|a| super::registration::compile_auth(&key("auth"), a))
            .transpose()?;
        let register = t
            .register
            .as_ref()
            .map(|r| super::registration::compile_registration(&key("register"), r))
            .transpose()?;
        let role = super::trunk_outbound::compile_role(
            i,
            t.kind,
            t.org_id.as_deref(),
            &t.agent_ids,
            t.outbound.as_ref(),
        )?;
        trunks.push(Trunk {
            role,
            name: t.name.clone(),
            sources,
            media: media.into(),
            max_calls: t.max_calls,
            max_calls_per_second: t.max_calls_per_second,
            tls_client_ca: t.tls_client_ca.as_ref().map(std::path::PathBuf::from),
            srtp: super::srtp::parse(t.srtp.as_deref()).map_err(|e| bad(key("srtp"), e))?,
            auth,
            register,
        });
    }
    Ok(trunks)
}

/// A SIP listener off loopback with no trunk takes calls from the whole internet:
/// refused unless `sip.allow_any_source = true` says so.
pub fn check_exposure(
    trunks: &[Trunk],
    allow_any_source: bool,
    listeners: &[SocketAddr],
) -> Result<(), TrunkConfigError> {
    if !trunks.is_empty() || allow_any_source {
        return Ok(());
    }
    match listeners.iter().find(|a| !a.ip().is_loopback()) {
        None => Ok(()),
        Some(a) => Err(bad(
            "trunk",
            format!(
                "SIP listens on {a}, off loopback, and no [[trunk]] is configured: list the \
                 carriers' source addresses in [[trunk]] sources, or set \
                 sip.allow_any_source = true (labs only: anyone can call in)"
            ),
        )),
    }
}

/// `[[route]] trunks` as indices into `trunks`; `None` (key left out): every source.
pub fn route_trunks(
    names: Option<&[String]>,
    trunks: &[Trunk],
    route: usize,
) -> Result<Vec<usize>, TrunkConfigError> {
    let key = format!("route[{route}].trunks");
    let Some(names) = names else {
        return Ok(Vec::new());
    };
    if names.is_empty() {
        return Err(bad(
            key,
            "is empty: name at least one trunk, or leave the key out to accept every source",
        ));
    }
    let mut out = Vec::with_capacity(names.len());
    for n in names {
        let Some(i) = trunks.iter().position(|t| &t.name == n) else {
            return Err(bad(key, format!("{n:?} is not the name of a [[trunk]]")));
        };
        if !out.contains(&i) {
            out.push(i);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(name: &str, sources: &[&str]) -> TrunkConfig {
        TrunkConfig {
            name: name.into(),
            sources: sources.iter().map(|s| (*s).to_owned()).collect(),
            media: Vec::new(),
            max_calls: None,
            ..Default::default()
        }
    }

    #[test]
    fn a_bare_ip_is_one_host_and_a_cidr_loses_its_host_bits() {
        assert_eq!(parse_net("192.0.2.7").unwrap().to_string(), "192.0.2.7/32");
        assert_eq!(
            parse_net("2001:db8::1").unwrap().to_string(),
            "2001:db8::1/128"
        );
        assert_eq!(
            parse_net(" 192.0.2.77/24 ").unwrap().to_string(),
            "192.0.2.0/24"
        );
        for bad in [
            "",
            "192.0.2.0/33",
            "example.com",
            "192.0.2/24",
            "1.2.3.4/",
            "::/129",
        ] {
            assert!(parse_net(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn trunks_compile_with_their_lists_and_limits() {
        let mut c = cfg("carrier-a", &["198.51.100.0/24", "203.0.113.9"]);
        c.media = vec!["168.86.128.0/18".into()];
        c.max_calls = Some(10);
        c.max_calls_per_second = Some(2);
        let t = compile(&[c]).unwrap();
        assert_eq!(t[0].sources.len(), 2);
        assert_eq!(t[0].media.len(), 1);
        assert_eq!(t[0].max_calls, Some(10));
        assert_eq!(t[0].max_calls_per_second, Some(2));
    }

    #[test]
    fn bad_trunks_name_the_key() {
        let key = |list: &[TrunkConfig]| compile(list).unwrap_err().key;
        assert_eq!(key(&[cfg("a b", &["10.0.0.1"])]), "trunk[0].name");
        assert_eq!(key(&[cfg("", &["10.0.0.1"])]), "trunk[0].name");
        assert_eq!(key(&[cfg("a\"x", &["10.0.0.1"])]), "trunk[0].name");
        assert_eq!(
            key(&[cfg("a", &["10.0.0.1"]), cfg("a", &["10.0.0.2"])]),
            "trunk[1].name"
        );
        assert_eq!(key(&[cfg("a", &[])]), "trunk[0].sources");
        assert_eq!(
            key(&[cfg("a", &["10.0.0.1", "nope"])]),
            "trunk[0].sources[1]"
        );
        let mut m = cfg("a", &["10.0.0.1"]);
        m.media = vec!["10.0.0.0/99".into()];
        assert_eq!(key(&[m]), "trunk[0].media[0]");
        let mut z = cfg("a", &["10.0.0.1"]);
        z.max_calls = Some(0);
        assert_eq!(key(&[z]), "trunk[0].max_calls");
        let mut z = cfg("a", &["10.0.0.1"]);
        z.max_calls_per_second = Some(0);
        assert_eq!(key(&[z]), "trunk[0].max_calls_per_second");
    }

    #[test]
    fn a_listener_off_loopback_needs_a_trunk_or_the_explicit_opt_out() {
        let lo: SocketAddr = "127.0.0.1:5060".parse().unwrap();
        let lo6: SocketAddr = "[::1]:5060".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:5060".parse().unwrap();
        let public: SocketAddr = "192.0.2.1:5060".parse().unwrap();
        assert!(check_exposure(&[], false, &[lo, lo6]).is_ok());
        let e = check_exposure(&[], false, &[lo, any]).unwrap_err();
        assert_eq!(e.key, "trunk");
        assert!(e.problem.contains("sip.allow_any_source"), "{e}");
        assert!(check_exposure(&[], false, &[public]).is_err());
        assert!(check_exposure(&[], true, &[any]).is_ok());
        let t = compile(&[cfg("a", &["10.0.0.1"])]).unwrap();
        assert!(check_exposure(&t, false, &[any]).is_ok());
    }

    #[test]
    fn route_trunks_are_checked_against_the_trunk_names() {
        let t = compile(&[cfg("a", &["10.0.0.1"]), cfg("b", &["10.0.0.2"])]).unwrap();
        assert_eq!(route_trunks(None, &t, 0).unwrap(), Vec::<usize>::new());
        let names = ["b".to_owned(), "a".to_owned(), "b".to_owned()];
        assert_eq!(route_trunks(Some(&names), &t, 0).unwrap(), vec![1, 0]);
        let e = route_trunks(Some(&["c".to_owned()]), &t, 3).unwrap_err();
        assert_eq!(e.key, "route[3].trunks");
        assert!(e.problem.contains("\"c\""));
        assert_eq!(
            route_trunks(Some(&[]), &t, 1).unwrap_err().key,
            "route[1].trunks"
        );
    }
}

#[cfg(test)]
mod config_tests {
    use crate::config::Config;

    const ROUTE: &str = "[[route]]\ndefault = true\norg_id = \"o\"\nagent_id = \"a\"\nai_agent_uri = \"sip:ai@127.0.0.1:5080\"\n";

    fn err(text: &str) -> String {
        Config::parse(text, "t").unwrap_err().to_string()
    }

    #[test]
    fn a_whole_config_with_trunks_and_a_restricted_route() {
        let text = format!(
            "[[trunk]]\nname = \"a\"\nsources = [\"10.0.0.0/8\"]\nmax_calls = 5\n\
             [[trunk]]\nname = \"b\"\nsources = [\"192.0.2.1\"]\nmedia = [\"192.0.2.0/24\"]\n\
             {ROUTE}trunks = [\"b\"]\n"
        );
        let s = Config::parse(&text, "t").unwrap();
        assert_eq!(s.trunks.len(), 2);
        assert_eq!(s.routes[0].trunks, vec![1]);
        assert_eq!(s.trunks[1].media.len(), 1);
        assert!(!s.allow_any_source);
    }

    #[test]
    fn bad_trunk_keys_stop_start_up_naming_them() {
        let e = err(&format!(
            "[[trunk]]\nname = \"a\"\nsources = [\"10.0.0.0/8\"]\ncolour = 1\n{ROUTE}"
        ));
        assert!(e.contains("colour"), "{e}");
        let e = err(&format!("[[trunk]]\nname = \"a\"\n{ROUTE}"));
        assert!(e.contains("sources"), "{e}");
        let e = err(&format!(
            "[[trunk]]\nname = \"a\"\nsources = [\"10.0.0.300\"]\n{ROUTE}"
        ));
        assert!(e.contains("trunk[0].sources[0]"), "{e}");
        let e = err(&format!("{ROUTE}trunks = [\"ghost\"]\n"));
        assert!(e.contains("route[0].trunks"), "{e}");
        let e = err(&format!("[sip]\nlisten_tcp = [\"0.0.0.0:5060\"]\n{ROUTE}"));
        assert!(
            e.contains("key `trunk`") && e.contains("sip.allow_any_source"),
            "{e}"
        );
        let open =
            format!("[sip]\nlisten_tcp = [\"0.0.0.0:5060\"]\nallow_any_source = true\n{ROUTE}");
        assert!(Config::parse(&open, "t").is_ok());
    }
}
