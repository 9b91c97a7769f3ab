//! Outbound calls: `[[trunk]] kind` (a carrier, or an AI agent that places calls),
//! a carrier's `[trunk.outbound]` side (where its calls go, digest credentials, the
//! default caller ID) and `[[outbound]]`, one per org: which carrier trunk its calls
//! use and the anti-fraud knobs (allowed number prefixes, the caller IDs the agent
//! may ask for, limits). Validated here with errors naming the key; used by
//! `b2bua::outbound`.
//!
//! Safe defaults: an org with no `[[outbound]]` places no call; an `[[outbound]]`
//! with no `allowed_prefixes` dials nothing.

use super::trunk::{Trunk, TrunkConfigError};
use super::{Route, Secret};
use crate::sip::message::SipUri;
use serde::Deserialize;
use std::time::Duration;

/// Entries of `allowed_prefixes`, `caller_ids`, `agent_ids`.
const MAX_LIST: usize = 1024;
/// `[[outbound]]` tables.
const MAX_ORGS: usize = 1024;
/// `ring_timeout_secs` bounds and default.
const RING_TIMEOUT_DEFAULT: u64 = 60;
const RING_TIMEOUT_MAX: u64 = 600;

/// `[[trunk]] kind`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrunkKind {
    /// A carrier: calls come in from it; with `[trunk.outbound]`, calls go out to it.
    #[default]
    Carrier,
    /// An AI agent platform: its INVITEs to a number are outbound calls of `org_id`.
    AiAgent,
}

/// `[trunk.outbound]` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrunkOutboundConfig {
    /// Where outbound INVITEs go (`sip:`/`sips:`, `;transport=` as elsewhere); the
    /// callee's number becomes its user part.
    pub uri: String,
    /// Digest credentials, answered when the carrier challenges (401/407).
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    /// The caller ID presented when the org's `[[outbound]]` names none (E.164).
    #[serde(default)]
    pub caller_id: Option<String>,
    /// Mutual TLS to the carrier (a `sips:` or `;transport=tls` uri only): our client
    /// certificate chain and key (PEM), registered as `trunk:<name>` (`config::tls_client`).
    #[serde(default)]
    pub tls_client_cert: Option<String>,
    #[serde(default)]
    pub tls_client_key: Option<String>,
}

/// `[[outbound]]` as written: one org's outbound calls.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboundConfig {
    pub org_id: String,
    /// The `[[trunk]]` (a carrier with `[trunk.outbound]`) the calls go through.
    pub trunk: String,
    /// E.164 prefixes (`"+1"`, `"+4420"`) the org may dial; none: nothing.
    #[serde(default)]
    pub allowed_prefixes: Vec<String>,
    /// Caller IDs (E.164) the agent may ask for with `X-OPENCX-CALLER-ID`; the
    /// first is the default, else the trunk's `outbound.caller_id`.
    #[serde(default)]
    pub caller_ids: Vec<String>,
    /// Concurrent outbound calls of the org; none: only the other limits.
    #[serde(default)]
    pub max_calls: Option<usize>,
    /// New outbound calls per second of the org; none: only the other limits.
    #[serde(default)]
    pub max_calls_per_second: Option<u32>,
    /// How long the callee may ring before handoff gives up (480 to the agent).
    #[serde(default)]
    pub ring_timeout_secs: Option<u64>,
}

/// A carrier trunk's validated outbound side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CarrierOutbound {
    pub uri: SipUri,
    pub credentials: Option<(String, Secret)>,
    pub caller_id: Option<String>,
    /// The client certificate presented to the carrier (`tls_client_cert`); set
    /// after the trunks compile, with the other TLS identities.
    pub tls_client: Option<super::tls_client::ClientId>,
}

/// What a trunk is, validated.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum TrunkRole {
    /// A carrier; `Some`: calls may go out through it.
    #[default]
    Carrier,
    CarrierWithOutbound(Box<CarrierOutbound>),
    /// An AI agent source placing calls for `org_id`, as one of `agent_ids`
    /// (empty here: the org's agents of `[[route]]`, filled in by `compile_orgs`).
    AiAgent {
        org_id: String,
        agent_ids: Vec<String>,
    },
}

/// One org's validated `[[outbound]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrgOutbound {
    pub org_id: String,
    /// Index into `Settings::trunks` of the carrier.
    pub trunk: usize,
    pub allowed_prefixes: Vec<String>,
    /// Every caller ID the agent may ask for, the default first.
    pub caller_ids: Vec<String>,
    pub max_calls: Option<usize>,
    pub max_calls_per_second: Option<u32>,
    pub ring_timeout: Duration,
}

fn bad(key: impl Into<String>, problem: impl Into<String>) -> TrunkConfigError {
    TrunkConfigError {
        key: key.into(),
        problem: problem.into(),
    }
}

/// An id (org, agent): 1-64 token characters.
fn check_token(key: &str, v: &str) -> Result<(), TrunkConfigError> {
    if v.is_empty() || v.len() > 64 || !v.bytes().all(crate::sip::message::is_token_char) {
        return Err(bad(
            key,
            format!("{v:?} must be 1-64 token characters (letters, digits, -._!%*+`'~)"),
        ));
    }
    Ok(())
}

/// A number exactly in E.164 form: `+`, then 7-15 digits, the first not 0.
pub fn is_e164(v: &str) -> bool {
    v.strip_prefix('+').is_some_and(|d| {
        (7..=15).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit()) && !d.starts_with('0')
    })
}

fn check_e164(key: &str, v: &str) -> Result<String, TrunkConfigError> {
    if is_e164(v) {
        Ok(v.to_owned())
    } else {
        Err(bad(
            key,
            format!("{v:?} is not an E.164 number such as \"+14155550100\""),
        ))
    }
}

/// The role of trunk `i`, from its `kind`, `org_id`, `agent_ids` and `outbound`.
pub fn compile_role(
    i: usize,
    kind: TrunkKind,
    org_id: Option<&str>,
    agent_ids: &[String],
    outbound: Option<&TrunkOutboundConfig>,
) -> Result<TrunkRole, TrunkConfigError> {
    let key = |k: &str| format!("trunk[{i}].{k}");
    match kind {
        TrunkKind::AiAgent => {
            let Some(org) = org_id else {
                return Err(bad(key("org_id"), "is required for kind = \"ai_agent\""));
            };
            check_token(&key("org_id"), org)?;
            if outbound.is_some() {
                return Err(bad(
                    key("outbound"),
                    "is for kind = \"carrier\" trunks only",
                ));
            }
            if agent_ids.len() > MAX_LIST {
                return Err(bad(key("agent_ids"), format!("at most {MAX_LIST} entries")));
            }
            for (j, a) in agent_ids.iter().enumerate() {
                check_token(&format!("{}[{j}]", key("agent_ids")), a)?;
            }
            Ok(TrunkRole::AiAgent {
                org_id: org.to_owned(),
                agent_ids: agent_ids.to_vec(),
            })
        }
        TrunkKind::Carrier => {
            if org_id.is_some() {
                return Err(bad(key("org_id"), "is for kind = \"ai_agent\" trunks only"));
            }
            if !agent_ids.is_empty() {
                return Err(bad(
                    key("agent_ids"),
                    "is for kind = \"ai_agent\" trunks only",
                ));
            }
            let Some(o) = outbound else {
                return Ok(TrunkRole::Carrier);
            };
            let ukey = key("outbound.uri");
            let uri = SipUri::parse(&o.uri)
                .filter(|u| u.scheme == "sip" || u.scheme == "sips")
                .ok_or_else(|| bad(&ukey, format!("{:?} is not a sip: or sips: URI", o.uri)))?;
            if uri.user.is_some() {
                return Err(bad(
                    ukey,
                    "must have no user part: the callee's number goes there",
                ));
            }
            let credentials = match (&o.username, &o.password) {
                (None, None) => None,
                (Some(u), Some(p)) => {
                    if u.is_empty()
                        || u.len() > 128
                        || crate::sip::message::check_value(u).is_err()
                        || u.contains('"')
                    {
                        return Err(bad(
                            key("outbound.username"),
                            "must be 1-128 printable characters without quotes",
                        ));
                    }
                    if p.is_empty() || p.len() > 256 {
                        return Err(bad(key("outbound.password"), "must be 1-256 characters"));
                    }
                    Some((u.clone(), Secret::new(p.clone())))
                }
                (Some(_), None) => {
                    return Err(bad(key("outbound.password"), "is required with username"))
                }
                (None, Some(_)) => {
                    return Err(bad(key("outbound.username"), "is required with password"))
                }
            };
            let caller_id = o
                .caller_id
                .as_deref()
                .map(|c| check_e164(&key("outbound.caller_id"), c))
                .transpose()?;
            Ok(TrunkRole::CarrierWithOutbound(Box::new(CarrierOutbound {
                uri,
                credentials,
                caller_id,
                tls_client: None,
            })))
        }
    }
}

/// Validate every `[[outbound]]` against the trunks and routes, and give each
/// `ai_agent` trunk without `agent_ids` its org's agents from `[[route]]`.
pub fn compile_orgs(
    list: &[OutboundConfig],
    trunks: &mut [Trunk],
    routes: &[Route],
) -> Result<Vec<OrgOutbound>, TrunkConfigError> {
    if list.len() > MAX_ORGS {
        return Err(bad("outbound", format!("at most {MAX_ORGS} tables")));
    }
    let mut orgs: Vec<OrgOutbound> = Vec::with_capacity(list.len());
    for (i, o) in list.iter().enumerate() {
        let key = |k: &str| format!("outbound[{i}].{k}");
        check_token(&key("org_id"), &o.org_id)?;
        if orgs.iter().any(|x| x.org_id == o.org_id) {
            return Err(bad(
                key("org_id"),
                format!("{:?} has two [[outbound]] tables", o.org_id),
            ));
        }
        let Some(t) = trunks.iter().position(|t| t.name == o.trunk) else {
            return Err(bad(
                key("trunk"),
                format!("{:?} is not the name of a [[trunk]]", o.trunk),
            ));
        };
        let TrunkRole::CarrierWithOutbound(carrier) = &trunks[t].role else {
            return Err(bad(
                key("trunk"),
                format!(
                    "{:?} is not a carrier trunk with a [trunk.outbound] table",
                    o.trunk
                ),
            ));
        };
        for (name, len) in [
            ("allowed_prefixes", o.allowed_prefixes.len()),
            ("caller_ids", o.caller_ids.len()),
        ] {
            if len > MAX_LIST {
                return Err(bad(key(name), format!("at most {MAX_LIST} entries")));
            }
        }
        let mut allowed_prefixes = Vec::with_capacity(o.allowed_prefixes.len());
        for (j, p) in o.allowed_prefixes.iter().enumerate() {
            let ok = p.strip_prefix('+').is_some_and(|d| {
                (1..=15).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit())
            });
            if !ok {
                return Err(bad(
                    format!("{}[{j}]", key("allowed_prefixes")),
                    format!("{p:?} is not an E.164 prefix such as \"+1\" or \"+4420\""),
                ));
            }
            allowed_prefixes.push(p.clone());
        }
        let mut caller_ids = Vec::with_capacity(o.caller_ids.len() + 1);
        for (j, c) in o.caller_ids.iter().enumerate() {
            caller_ids.push(check_e164(&format!("{}[{j}]", key("caller_ids")), c)?);
        }
        if caller_ids.is_empty() {
            match &carrier.caller_id {
                Some(c) => caller_ids.push(c.clone()),
                None => {
                    return Err(bad(
                        key("caller_ids"),
                        format!(
                            "is empty and trunk {:?} has no outbound.caller_id: no caller ID to present",
                            o.trunk
                        ),
                    ))
                }
            }
        }
        if o.max_calls == Some(0) {
            return Err(bad(key("max_calls"), "must be at least 1 (or left out)"));
        }
        if o.max_calls_per_second == Some(0) {
            return Err(bad(
                key("max_calls_per_second"),
                "must be at least 1 (or left out)",
            ));
        }
        let ring = o.ring_timeout_secs.unwrap_or(RING_TIMEOUT_DEFAULT);
        if ring == 0 || ring > RING_TIMEOUT_MAX {
            return Err(bad(
                key("ring_timeout_secs"),
                format!("must be 1-{RING_TIMEOUT_MAX}"),
            ));
        }
        orgs.push(OrgOutbound {
            org_id: o.org_id.clone(),
            trunk: t,
            allowed_prefixes,
            caller_ids,
            max_calls: o.max_calls,
            max_calls_per_second: o.max_calls_per_second,
            ring_timeout: Duration::from_secs(ring),
        });
    }
    for (i, t) in trunks.iter_mut().enumerate() {
        let TrunkRole::AiAgent { org_id, agent_ids } = &mut t.role else {
            continue;
        };
        if !orgs.iter().any(|o| &o.org_id == org_id) {
            return Err(bad(
                format!("trunk[{i}].org_id"),
                format!("{org_id:?} has no [[outbound]] table: its agents could dial nothing"),
            ));
        }
        if agent_ids.is_empty() {
            for r in routes.iter().filter(|r| &r.org_id == org_id) {
                if !agent_ids.contains(&r.agent_id) {
                    agent_ids.push(r.agent_id.clone());
                }
            }
        }
        if agent_ids.is_empty() {
            return Err(bad(
                format!("trunk[{i}].agent_ids"),
                format!("is empty and no [[route]] has org_id {org_id:?}: no agent may call"),
            ));
        }
    }
    Ok(orgs)
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    const ROUTE: &str = "[[route]]\ndefault = true\norg_id = \"acme\"\nagent_id = \"a1\"\nai_agent_uri = \"sip:ai@127.0.0.1:5080\"\n";
    const CARRIER: &str = "[[trunk]]\nname = \"carrier\"\nsources = [\"127.0.0.3\"]\n\
        [trunk.outbound]\nuri = \"sip:127.0.0.3:5090\"\nusername = \"u\"\npassword = \"p\"\ncaller_id = \"+14155550100\"\n";
    const AGENT: &str =
        "[[trunk]]\nname = \"agents\"\nkind = \"ai_agent\"\nsources = [\"127.0.0.2\"]\norg_id = \"acme\"\n";
    const ORG: &str =
        "[[outbound]]\norg_id = \"acme\"\ntrunk = \"carrier\"\nallowed_prefixes = [\"+1\"]\n";

    fn err(text: &str) -> String {
        Config::parse(text, "t").unwrap_err().to_string()
    }

    #[test]
    fn a_whole_outbound_config_compiles_with_the_routes_agents() {
        let s = Config::parse(&format!("{CARRIER}{AGENT}{ORG}{ROUTE}"), "t").unwrap();
        let o = &s.outbound[0];
        assert_eq!(o.trunk, 0);
        assert_eq!(o.caller_ids, vec!["+14155550100".to_owned()]);
        assert_eq!(o.ring_timeout.as_secs(), 60);
        assert_eq!(
            s.trunks[1].role,
            super::TrunkRole::AiAgent {
                org_id: "acme".into(),
                agent_ids: vec!["a1".into()]
            }
        );
    }

    #[test]
    fn no_outbound_config_is_no_outbound_call() {
        let s = Config::parse(ROUTE, "t").unwrap();
        assert!(s.outbound.is_empty());
        assert!(s.trunks.iter().all(|t| t.role == super::TrunkRole::Carrier));
    }

    #[test]
    fn bad_outbound_keys_stop_start_up_naming_them() {
        let cases: Vec<(String, &str)> = vec![
            (
                format!(
                    "{}{AGENT}{ORG}{ROUTE}",
                    CARRIER.replace("sip:127", "http:127")
                ),
                "trunk[0].outbound.uri",
            ),
            (
                format!(
                    "{}{AGENT}{ORG}{ROUTE}",
                    CARRIER.replace("sip:127", "sip:x@127")
                ),
                "trunk[0].outbound.uri",
            ),
            (
                format!(
                    "{}{AGENT}{ORG}{ROUTE}",
                    CARRIER.replace("password = \"p\"\n", "")
                ),
                "trunk[0].outbound.password",
            ),
            (
                format!("{}{AGENT}{ORG}{ROUTE}", CARRIER.replace("+1415", "1415")),
                "trunk[0].outbound.caller_id",
            ),
            (
                format!(
                    "{CARRIER}{}{ORG}{ROUTE}",
                    AGENT.replace("org_id = \"acme\"\n", "")
                ),
                "trunk[1].org_id",
            ),
            (
                format!("{CARRIER}{AGENT}agent_ids = [\"a b\"]\n{ORG}{ROUTE}"),
                "trunk[1].agent_ids[0]",
            ),
            (format!("{CARRIER}{AGENT}{ROUTE}"), "trunk[1].org_id"),
            (
                format!(
                    "{CARRIER}{AGENT}{}{ROUTE}",
                    ORG.replace("trunk = \"carrier\"", "trunk = \"agents\"")
                ),
                "outbound[0].trunk",
            ),
            (
                format!("{CARRIER}{AGENT}{}{ROUTE}", ORG.replace("\"+1\"", "\"1\"")),
                "outbound[0].allowed_prefixes[0]",
            ),
            (
                format!("{CARRIER}{AGENT}{ORG}caller_ids = [\"+1 415\"]\n{ROUTE}"),
                "outbound[0].caller_ids[0]",
            ),
            (
                format!("{CARRIER}{AGENT}{ORG}max_calls = 0\n{ROUTE}"),
                "outbound[0].max_calls",
            ),
            (
                format!("{CARRIER}{AGENT}{ORG}ring_timeout_secs = 0\n{ROUTE}"),
                "outbound[0].ring_timeout_secs",
            ),
            (
                format!("{CARRIER}{AGENT}{ORG}{ORG}{ROUTE}"),
                "outbound[1].org_id",
            ),
            (
                format!(
                    "{CARRIER}{AGENT}{ORG}{}",
                    ROUTE.replace("org_id = \"acme\"", "org_id = \"other\"")
                ),
                "trunk[1].agent_ids",
            ),
        ];
        for (text, key) in cases {
            let e = err(&text);
            assert!(e.contains(key), "{key}: {e}");
        }
    }

    #[test]
    fn e164_is_strict() {
        assert!(super::is_e164("+14155550100"));
        for bad in [
            "14155550100",
            "+1 415",
            "+0123456789",
            "+1234",
            "+1234567890123456",
            "+",
        ] {
            assert!(!super::is_e164(bad), "{bad}");
        }
    }
}
