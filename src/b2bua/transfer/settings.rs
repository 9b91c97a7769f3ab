//! The `[transfer]` table: typed, defaulted, validated with errors naming the full key,
//! and compiled once into a [`TransferPolicy`].

use super::allow::{
    default_ticket_note, is_zendesk_host, uri_transport, AllowList, NamedDestination, Pattern,
};
use super::headers::{CopyRule, FallbackFrom};
use super::Credentials;
use crate::config::Secret;
use crate::sip::message::{check_value, is_token_char, SipUri};
use crate::sip::transport::Transport;
use serde::Deserialize;
use std::time::Duration;

/// Codecs offered to a destination without its own list: G.711 and RFC 4733 events,
/// all that Zendesk SIP-IN (Twilio) takes.
pub const DEFAULT_CODECS: [&str; 3] = ["PCMU", "PCMA", "telephone-event"];

/// The From of a transfer leg when the caller's number is unknown.
pub const DEFAULT_FALLBACK_FROM: &str = "sip:anonymous@anonymous.invalid";

/// `[transfer]` in `config.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TransferSettings {
    /// Targets that may be dialled: `"*.zendesk.sip.twilio.com"`, `"sip.example.com"`,
    /// `"sip:line@host"`, `"tel:+*"`, `"tel:+4420*"`. Default empty: only named
    /// destinations.
    pub allow: Vec<String>,
    /// `[[transfer.destination]]`: named targets with their own codecs and credentials.
    pub destination: Vec<DestinationConfig>,
    /// From of the transfer leg for an anonymous caller (a SIP URI or name-addr).
    pub fallback_from: String,
    /// `X-` headers embedded in the Refer-To URI that are copied onto the transfer
    /// INVITE (`"X-*"`: all of them). Default none.
    pub copy_refer_headers: Vec<String>,
    /// Also send Zendesk's own `X-Zendesk-Ticket-Id` with the ticket id. Default true.
    pub zendesk_native_ticket_header: bool,
    /// The REFER header the AI agent's summary for the ticket note comes in
    /// (control characters dropped, cut to 2,000 bytes). Default
    /// "X-OPENCX-SUMMARY"; "" reads none.
    pub summary_header: String,
    /// How long the transfer target may ring before the transfer fails. Default 30.
    pub ring_timeout_secs: u64,
    /// 3xx redirects followed per transfer, each target checked again. Default 3.
    pub max_redirects: u32,
    /// How long to wait for the answer to the final NOTIFY before BYE-ing the AI leg.
    /// Default 2000.
    pub notify_timeout_ms: u64,
    /// Where `tel:` targets are sent (the carrier): a sip: URI whose host, port and
    /// transport are used, the number becoming the user part with `user=phone`.
    /// Default none: `tel:` targets fail with 503.
    pub pstn_gateway: Option<String>,
}

impl Default for TransferSettings {
    fn default() -> Self {
        TransferSettings {
            allow: Vec::new(),
            destination: Vec::new(),
            fallback_from: DEFAULT_FALLBACK_FROM.into(),
            copy_refer_headers: Vec::new(),
            zendesk_native_ticket_header: true,
            summary_header: crate::zendesk::note::DEFAULT_SUMMARY_HEADER.into(),
            ring_timeout_secs: 30,
            max_redirects: 3,
            notify_timeout_ms: 2000,
            pstn_gateway: None,
        }
    }
}

/// One `[[transfer.destination]]`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DestinationConfig {
    /// A label the AI agent knows the destination by ("zendesk-tier2").
    pub name: String,
    /// sip: or tel: URI; a Refer-To equal to it selects this destination.
    pub uri: String,
    /// Codecs to offer, in preference order; default PCMU, PCMA, telephone-event.
    #[serde(default)]
    pub codecs: Option<Vec<String>>,
    /// Digest credentials, given together.
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    /// "udp" or "tcp"; default the URI's transport parameter, else UDP.
    #[serde(default)]
    pub transport: Option<String>,
    /// The header contract (`contract.rs`): whose rules ("generic", "twilio";
    /// default "twilio" for Twilio and Zendesk SIP-IN hosts).
    #[serde(default)]
    pub profile: Option<String>,
    /// Headers of the REFER itself copied onto the INVITE: names or `X-...*`
    /// prefixes, `X-` names and `User-to-User` only.
    #[serde(default)]
    pub refer_headers: Vec<String>,
    /// Session `custom_data` keys written as (`X-`) headers: key = header name.
    #[serde(default)]
    pub custom_data_headers: std::collections::BTreeMap<String, String>,
    /// Where copied and mapped headers go: "header", "uri" or "both".
    #[serde(default)]
    pub header_placement: Option<String>,
    /// Where the ticket headers go: "header", "uri" or "both".
    #[serde(default)]
    pub ticket_placement: Option<String>,
    /// A completed transfer here leaves a private note on the session's Zendesk
    /// ticket; default true for Zendesk SIP-IN hosts, false elsewhere.
    #[serde(default)]
    pub ticket_note: Option<bool>,
    /// SRTP on the target leg: "off" (default), "optional", "required".
    #[serde(default)]
    pub srtp: Option<String>,
    /// Mutual TLS: our client certificate chain and key (PEM) for this destination
    /// (`config::tls_client`); default the listener's pair when the peer asks.
    #[serde(default)]
    pub tls_client_cert: Option<String>,
    #[serde(default)]
    pub tls_client_key: Option<String>,
}

impl std::fmt::Debug for DestinationConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DestinationConfig")
            .field("name", &self.name)
            .field("uri", &self.uri)
            .field("codecs", &self.codecs)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "(hidden)"))
            .field("transport", &self.transport)
            .field("profile", &self.profile)
            .field("refer_headers", &self.refer_headers)
            .field("custom_data_headers", &self.custom_data_headers)
            .field("header_placement", &self.header_placement)
            .field("ticket_placement", &self.ticket_placement)
            .field("ticket_note", &self.ticket_note)
            .field("srtp", &self.srtp)
            .field("tls_client_cert", &self.tls_client_cert)
            .field("tls_client_key", &self.tls_client_key)
            .finish()
    }
}

/// A `[transfer]` value that cannot be used; `key` is the full key
/// (`transfer.destination[0].uri`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {problem}")]
pub struct TransferConfigError {
    pub key: String,
    pub problem: String,
}

fn bad(key: impl Into<String>, problem: impl Into<String>) -> TransferConfigError {
    TransferConfigError {
        key: key.into(),
        problem: problem.into(),
    }
}

/// `[transfer]` compiled: what the call actor consults on every REFER.
#[derive(Debug, Clone)]
pub struct TransferPolicy {
    pub allow: AllowList,
    pub fallback_from: FallbackFrom,
    pub copy: CopyRule,
    pub settings: TransferSettings,
    /// `pstn_gateway` parsed.
    pub pstn_gateway: Option<SipUri>,
}

const MAX_CODECS: usize = 16;
const MAX_DESTINATIONS: usize = 256;
const MAX_PATTERNS: usize = 1024;

impl TransferSettings {
    /// Check every value; the error names the first bad key.
    pub fn validate(&self) -> Result<(), TransferConfigError> {
        self.compile().map(drop)
    }

    /// Validate and compile the allow-list, destinations, fallback From and copy rule.
    pub fn compile(&self) -> Result<TransferPolicy, TransferConfigError> {
        if self.allow.len() > MAX_PATTERNS {
            return Err(bad(
                "transfer.allow",
                format!("at most {MAX_PATTERNS} patterns"),
            ));
        }
        let patterns = self
            .allow
            .iter()
            .enumerate()
            .map(|(i, p)| Pattern::parse(p).map_err(|e| bad(format!("transfer.allow[{i}]"), e)))
            .collect::<Result<Vec<_>, _>>()?;
        if self.destination.len() > MAX_DESTINATIONS {
            return Err(bad(
                "transfer.destination",
                format!("at most {MAX_DESTINATIONS} destinations"),
            ));
        }
        let mut named: Vec<NamedDestination> = Vec::with_capacity(self.destination.len());
        for (i, d) in self.destination.iter().enumerate() {
            let n = d.compile(i)?;
            if named.iter().any(|o| o.name == n.name) {
                return Err(bad(
                    format!("transfer.destination[{i}].name"),
                    format!("{:?} is used twice", n.name),
                ));
            }
            named.push(n);
        }
        let fallback_from = FallbackFrom::parse(&self.fallback_from)
            .map_err(|e| bad("transfer.fallback_from", e))?;
        let copy = CopyRule::parse(&self.copy_refer_headers)
            .map_err(|(i, e)| bad(format!("transfer.copy_refer_headers[{i}]"), e))?;
        let summary_ok = self.summary_header.is_empty()
            || (self.summary_header.len() <= 64 && self.summary_header.bytes().all(is_token_char));
        if !summary_ok {
            return Err(bad(
                "transfer.summary_header",
                format!(
                    "{:?} must be a header name (1-64 token characters) or \"\"",
                    self.summary_header
                ),
            ));
        }
        if !(1..=600).contains(&self.ring_timeout_secs) {
            return Err(bad(
                "transfer.ring_timeout_secs",
                "must be between 1 and 600",
            ));
        }
        if self.max_redirects > 10 {
            return Err(bad("transfer.max_redirects", "must be between 0 and 10"));
        }
        if !(100..=60_000).contains(&self.notify_timeout_ms) {
            return Err(bad(
                "transfer.notify_timeout_ms",
                "must be between 100 and 60000",
            ));
        }
        let pstn_gateway = match &self.pstn_gateway {
            None => None,
            Some(g) => {
                let uri = SipUri::parse(g)
                    .filter(|u| (u.scheme == "sip" || u.scheme == "sips") && check_value(g).is_ok())
                    .ok_or_else(|| {
                        bad(
                            "transfer.pstn_gateway",
                            format!("{g:?} is not a sip: or sips: URI"),
                        )
                    })?;
                if uri_transport(&uri).is_err() {
                    return Err(bad(
                        "transfer.pstn_gateway",
                        "transport must be udp, tcp or tls (a sips: URI: not udp)",
                    ));
                }
                Some(uri)
            }
        };
        Ok(TransferPolicy {
            pstn_gateway,
            allow: AllowList { patterns, named },
            fallback_from,
            copy,
            settings: self.clone(),
        })
    }

    pub fn ring_timeout(&self) -> Duration {
        Duration::from_secs(self.ring_timeout_secs)
    }

    pub fn notify_timeout(&self) -> Duration {
        Duration::from_millis(self.notify_timeout_ms)
    }
}

impl DestinationConfig {
    fn compile(&self, i: usize) -> Result<NamedDestination, TransferConfigError> {
        let key = |k: &str| format!("transfer.destination[{i}].{k}");
        if self.name.is_empty() || self.name.len() > 64 || !self.name.bytes().all(is_token_char) {
            return Err(bad(
                key("name"),
                format!("{:?} must be 1-64 token characters", self.name),
            ));
        }
        let uri = SipUri::parse(&self.uri)
            .filter(|u| u.scheme == "sip" || u.scheme == "sips" || u.scheme == "tel")
            .filter(|_| !self.uri.contains(['?', '<', '>']) && check_value(&self.uri).is_ok())
            .ok_or_else(|| {
                bad(
                    key("uri"),
                    format!(
                        "{:?} is not a sip:, sips: or tel: URI without headers",
                        self.uri
                    ),
                )
            })?;
        if uri.param("maddr").is_some() {
            return Err(bad(key("uri"), "maddr is not allowed"));
        }
        let from_uri = uri_transport(&uri).map_err(|e| bad(key("uri"), e))?;
        let transport = match &self.transport {
            None => from_uri,
            Some(t) => {
                let t = Transport::from_name(t).ok_or_else(|| {
                    bad(
                        key("transport"),
                        format!("{t:?} is not \"udp\", \"tcp\" or \"tls\""),
                    )
                })?;
                if uri.scheme == "sips" && t == Transport::Udp {
                    return Err(bad(
                        key("transport"),
                        "a sips: destination cannot go over udp",
                    ));
                }
                if from_uri.is_some_and(|u| u != t) {
                    return Err(bad(
                        key("transport"),
                        "differs from the transport parameter of the uri",
                    ));
                }
                Some(t)
            }
        };
        let codecs = match &self.codecs {
            None => None,
            Some(list) => Some(check_codecs(list, &uri).map_err(|e| bad(key("codecs"), e))?),
        };
        let printable = |v: &str| !v.is_empty() && v.len() <= 256 && check_value(v).is_ok();
        let credentials = match (&self.username, &self.password) {
            (None, None) => None,
            (Some(u), Some(p)) => {
                if !printable(u) {
                    return Err(bad(
                        key("username"),
                        "must be 1-256 characters without control characters",
                    ));
                }
                if !printable(p) {
                    return Err(bad(
                        key("password"),
                        "must be 1-256 characters without control characters",
                    ));
                }
                Some(Credentials {
                    username: u.clone(),
                    password: Secret::new(p.clone()),
                })
            }
            (Some(_), None) => return Err(bad(key("password"), "username given without password")),
            (None, Some(_)) => return Err(bad(key("username"), "password given without username")),
        };
        let contract = super::contract::Contract::compile(
            &super::contract::ContractInput {
                profile: self.profile.as_deref(),
                refer_headers: &self.refer_headers,
                custom_data_headers: &self.custom_data_headers,
                header_placement: self.header_placement.as_deref(),
                ticket_placement: self.ticket_placement.as_deref(),
            },
            &uri.host,
        )
        .map_err(|(k, p)| bad(key(&k), p))?;
        let ticket_note = self
            .ticket_note
            .unwrap_or_else(|| default_ticket_note(&uri));
        let srtp =
            crate::config::srtp::parse(self.srtp.as_deref()).map_err(|e| bad(key("srtp"), e))?;
        Ok(NamedDestination {
            srtp,
            ticket_note,
            name: self.name.clone(),
            uri,
            codecs,
            credentials,
            transport,
            contract: std::sync::Arc::new(contract),
        })
    }
}

/// A codec list: 1-16 distinct token names; Zendesk gets G.711 or nothing.
fn check_codecs(list: &[String], uri: &SipUri) -> Result<Vec<String>, String> {
    if list.is_empty() || list.len() > MAX_CODECS {
        return Err(format!("give 1 to {MAX_CODECS} codec names"));
    }
    for (j, c) in list.iter().enumerate() {
        if c.is_empty() || c.len() > 32 || !c.bytes().all(is_token_char) {
            return Err(format!("{c:?} is not a codec name"));
        }
        if list[..j].iter().any(|o| o.eq_ignore_ascii_case(c)) {
            return Err(format!("{c:?} is listed twice"));
        }
    }
    let g711 = list
        .iter()
        .any(|c| c.eq_ignore_ascii_case("PCMU") || c.eq_ignore_ascii_case("PCMA"));
    if uri.scheme == "sip" && is_zendesk_host(&uri.host) && !g711 {
        return Err("Zendesk SIP-IN takes only G.711: include PCMU or PCMA".into());
    }
    Ok(list.to_vec())
}
