//! A trunk's `[trunk.register]` (handoff registers with the carrier, RFC 3261 10) and
//! `[trunk.auth]` (handoff digest-authenticates the trunk's INVITEs, RFC 3261 22.3).
//! Both optional; validated here, errors naming the full key.

use super::trunk::TrunkConfigError;
use crate::sip::auth::server::{Offer, VerifierConfig};
use crate::sip::message::{check_value, is_token_char, SipUri};
use serde::Deserialize;

/// `expires_secs` default: ten minutes, a common carrier value.
pub const DEFAULT_EXPIRES_SECS: u32 = 600;
/// Shortest `expires_secs`. RFC 3261 10.2.8 lets a registrar ask for more (423, which
/// handoff honours); 10 s is low enough for tests to see refreshes in seconds and high
/// enough that a typo cannot make handoff hammer a registrar.
pub const MIN_EXPIRES_SECS: u32 = 10;
/// Longest `expires_secs`: one day.
pub const MAX_EXPIRES_SECS: u32 = 86_400;

/// `[trunk.register]` as written.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrationConfig {
    /// The registrar's SIP URI (`sip:registrar.example.com;transport=tcp`).
    pub registrar: String,
    /// The address of record registered (`sip:+14155550100@carrier.example.com`).
    pub aor: String,
    /// Digest credentials, both or neither.
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub expires_secs: Option<u32>,
    /// The user part of the Contact registered (a token); default `handoff`.
    #[serde(default)]
    pub contact_user: Option<String>,
}

impl std::fmt::Debug for RegistrationConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistrationConfig")
            .field("registrar", &self.registrar)
            .field("aor", &self.aor)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// One validated registration.
#[derive(Clone, PartialEq, Eq)]
pub struct Registration {
    pub registrar: SipUri,
    pub aor: SipUri,
    /// (username, password).
    pub credentials: Option<(String, String)>,
    pub expires_secs: u32,
    pub contact_user: String,
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration")
            .field("registrar", &self.registrar.to_string())
            .field("aor", &self.aor.to_string())
            .field("username", &self.credentials.as_ref().map(|c| &c.0))
            .field("expires_secs", &self.expires_secs)
            .finish_non_exhaustive()
    }
}

/// `[trunk.auth]` as written.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrunkAuthConfig {
    /// The realm of handoff's challenge; default `handoff`.
    #[serde(default)]
    pub realm: Option<String>,
    pub username: String,
    pub password: String,
    /// `sha-256` (default): SHA-256 only. `md5`: MD5 only (clients that answer only
    /// the first challenge, such as SIPp 3.6). `sha-256,md5`: both, SHA-256 first
    /// (RFC 8760 2.4).
    #[serde(default)]
    pub algorithm: Option<String>,
}

impl std::fmt::Debug for TrunkAuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrunkAuthConfig")
            .field("realm", &self.realm)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

fn bad(key: &str, problem: impl Into<String>) -> TrunkConfigError {
    TrunkConfigError {
        key: key.to_owned(),
        problem: problem.into(),
    }
}

/// A value that goes into a quoted-string of a SIP header: printable, no `"` or `\`.
fn quotable(key: &str, v: &str, max: usize) -> Result<(), TrunkConfigError> {
    if v.is_empty()
        || v.len() > max
        || check_value(v).is_err()
        || v.contains(['"', '\\'])
        || v.chars().any(char::is_control)
    {
        return Err(bad(
            key,
            format!("must be 1-{max} printable characters without '\"' or '\\'"),
        ));
    }
    Ok(())
}

/// Validate `[trunk.auth]`; `key` is the table's key (`trunk[0].auth`).
pub fn compile_auth(key: &str, a: &TrunkAuthConfig) -> Result<VerifierConfig, TrunkConfigError> {
    let k = |f: &str| format!("{key}.{f}");
    let realm = a.realm.clone().unwrap_or_else(|| "handoff".into());
    quotable(&k("realm"), &realm, 128)?;
    quotable(&k("username"), &a.username, 128)?;
    quotable(&k("password"), &a.password, 256)?;
    if a.password.len() < 12 {
        return Err(bad(
            &k("password"),
            "must be at least 12 characters (it guards who may place calls)",
        ));
    }
    let offer = match a
        .algorithm
        .as_deref()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None | Some("sha-256") => Offer::Sha256,
        Some("md5") => Offer::Md5,
        Some("sha-256,md5") => Offer::Both,
        Some(other) => {
            return Err(bad(
                &k("algorithm"),
                format!("{other:?} is not \"sha-256\", \"md5\" or \"sha-256,md5\""),
            ))
        }
    };
    Ok(VerifierConfig {
        realm,
        username: a.username.clone(),
        password: a.password.clone(),
        offer,
    })
}

fn sip_uri(key: &str, v: &str) -> Result<SipUri, TrunkConfigError> {
    let uri = SipUri::parse(v)
        .filter(|u| u.scheme == "sip" || u.scheme == "sips")
        .ok_or_else(|| bad(key, format!("{v:?} is not a sip: or sips: URI")))?;
    if let Some(t) = uri.transport() {
        use crate::sip::transport::Transport;
        let t = Transport::from_name(&t)
            .ok_or_else(|| bad(key, format!("transport {t:?} is not udp, tcp or tls")))?;
        if uri.scheme == "sips" && t == Transport::Udp {
            return Err(bad(key, "a sips: URI cannot go over udp"));
        }
    }
    Ok(uri)
}

/// Validate `[trunk.register]`; `key` is the table's key (`trunk[0].register`).
pub fn compile_registration(
    key: &str,
    r: &RegistrationConfig,
) -> Result<Registration, TrunkConfigError> {
    let k = |f: &str| format!("{key}.{f}");
    let registrar = sip_uri(&k("registrar"), &r.registrar)?;
    let aor = sip_uri(&k("aor"), &r.aor)?;
    if aor.user.as_deref().is_none_or(str::is_empty) {
        return Err(bad(&k("aor"), "needs a user part (sip:user@domain)"));
    }
    let credentials = match (&r.username, &r.password) {
        (None, None) => None,
        (Some(u), Some(p)) => {
            quotable(&k("username"), u, 128)?;
            quotable(&k("password"), p, 256)?;
            Some((u.clone(), p.clone()))
        }
        (Some(_), None) => return Err(bad(&k("password"), "is required with username")),
        (None, Some(_)) => return Err(bad(&k("username"), "is required with password")),
    };
    let expires_secs = r.expires_secs.unwrap_or(DEFAULT_EXPIRES_SECS);
    if !(MIN_EXPIRES_SECS..=MAX_EXPIRES_SECS).contains(&expires_secs) {
        return Err(bad(
            &k("expires_secs"),
            format!("must be {MIN_EXPIRES_SECS}-{MAX_EXPIRES_SECS}"),
        ));
    }
    let contact_user = r.contact_user.clone().unwrap_or_else(|| "handoff".into());
    if contact_user.is_empty()
        || contact_user.len() > 64
        || !contact_user.bytes().all(is_token_char)
    {
        return Err(bad(
            &k("contact_user"),
            "must be 1-64 token characters (letters, digits, -._!%*+`'~)",
        ));
    }
    Ok(Registration {
        registrar,
        aor,
        credentials,
        expires_secs,
        contact_user,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> TrunkAuthConfig {
        TrunkAuthConfig {
            realm: None,
            username: "agent".into(),
            password: "a-long-secret".into(),
            algorithm: None,
        }
    }

    fn reg() -> RegistrationConfig {
        RegistrationConfig {
            registrar: "sip:registrar.example.com;transport=tcp".into(),
            aor: "sip:+14155550100@carrier.example.com".into(),
            username: Some("u".into()),
            password: Some("p".into()),
            expires_secs: None,
            contact_user: None,
        }
    }

    #[test]
    fn auth_defaults_and_algorithms() {
        let v = compile_auth("trunk[0].auth", &auth()).unwrap();
        assert_eq!(v.realm, "handoff");
        assert_eq!(v.offer, Offer::Sha256);
        let mut a = auth();
        a.algorithm = Some("MD5".into());
        assert_eq!(compile_auth("k", &a).unwrap().offer, Offer::Md5);
        a.algorithm = Some("SHA-256,MD5".into());
        assert_eq!(compile_auth("k", &a).unwrap().offer, Offer::Both);
        a.algorithm = Some("sha-512".into());
        let e = compile_auth("trunk[0].auth", &a).unwrap_err();
        assert_eq!(e.key, "trunk[0].auth.algorithm");
    }

    #[test]
    fn auth_values_that_break_a_header_or_are_weak_are_refused() {
        for (field, value) in [
            ("realm", "a\"b"),
            ("realm", ""),
            ("username", "x\r\nVia: evil"),
            ("password", "short"),
            ("password", "back\\slash-long-enough"),
        ] {
            let mut a = auth();
            match field {
                "realm" => a.realm = Some(value.into()),
                "username" => a.username = value.into(),
                _ => a.password = value.into(),
            }
            let e = compile_auth("trunk[1].auth", &a).unwrap_err();
            assert_eq!(e.key, format!("trunk[1].auth.{field}"), "{value}");
        }
    }

    #[test]
    fn auth_debug_hides_the_password() {
        let v = compile_auth("k", &auth()).unwrap();
        assert!(!format!("{v:?} {:?}", auth()).contains("a-long-secret"));
    }

    #[test]
    fn registration_defaults_and_bounds() {
        let r = compile_registration("trunk[0].register", &reg()).unwrap();
        assert_eq!(r.expires_secs, DEFAULT_EXPIRES_SECS);
        assert_eq!(r.contact_user, "handoff");
        assert!(!format!("{r:?}").contains("\"p\""));
        for (expires, ok) in [(9, false), (10, true), (86_400, true), (86_401, false)] {
            let mut c = reg();
            c.expires_secs = Some(expires);
            let res = compile_registration("trunk[0].register", &c);
            assert_eq!(res.is_ok(), ok, "{expires}");
            if let Err(e) = res {
                assert_eq!(e.key, "trunk[0].register.expires_secs");
            }
        }
    }

    #[test]
    fn registration_refuses_bad_uris_and_half_credentials() {
        type Edit = fn(&mut RegistrationConfig);
        let cases: [(&str, Edit); 6] = [
            ("registrar", |c| c.registrar = "http://x".into()),
            ("registrar", |c| c.registrar = "sip:x;transport=sctp".into()),
            ("registrar", |c| c.registrar = "sips:x;transport=udp".into()),
            ("aor", |c| c.aor = "sip:carrier.example.com".into()),
            ("password", |c| c.password = None),
            ("contact_user", |c| c.contact_user = Some("a b".into())),
        ];
        for (field, edit) in cases {
            let mut c = reg();
            edit(&mut c);
            let e = compile_registration("trunk[2].register", &c).unwrap_err();
            assert_eq!(e.key, format!("trunk[2].register.{field}"));
        }
    }
}
