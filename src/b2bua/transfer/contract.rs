//! The header contract of a transfer destination (pure): which headers besides
//! the session's own go on the transfer INVITE, where (a header line, a URI
//! header on the Request-URI, or both), and the target's rules on names and
//! sizes. Declared per `[[transfer.destination]]`, checked at start-up:
//!
//! - `refer_headers`: headers of the REFER itself to copy (exact names, or a
//!   prefix ending in `*`: `X-*`, `X-Acme-*`), `X-` names, `User-to-User`
//!   (RFC 7433) and the three identity headers Twilio takes without `X-`
//!   (`Remote-Party-ID`, `P-Preferred-Identity`, `P-Called-Party-ID`), each of
//!   those named exactly; `X-OPENCX-*` and `X-Zendesk-Ticket-Id` never (handoff
//!   writes them from the session);
//! - `custom_data_headers`: session `custom_data` keys written as headers;
//! - `header_placement` and `ticket_placement`: `header`, `uri` or `both`;
//! - `profile`: `generic`, or `twilio` (the default for Twilio and Zendesk
//!   SIP-IN hosts): names `X-` plus token characters or `User-to-User`, never
//!   `X-Twilio*`, and the URI header part under 1,024 characters.
//!
//! What does not fit is left out whole (reported, counted), never cut.

use super::headers::{check_line, is_reserved, loggable, HeaderProblem, Omitted};
use crate::sip::message::{check_value, is_token_char, NameAddr};
use std::collections::BTreeMap;

/// Names other than `X-` that may be copied from a REFER (each named exactly in
/// `refer_headers`, never by a prefix), and that Twilio takes without the prefix
/// (its error 13252 lists them).
pub const NON_X_COPYABLE: [&str; 4] = [
    "User-to-User",
    "Remote-Party-ID",
    "P-Preferred-Identity",
    "P-Called-Party-ID",
];

/// Longest URI header part (after `?`, escaped), in characters: Twilio's limit is
/// "under 1,024".
pub const MAX_URI_HEADERS: usize = 1023;

/// Most headers copied or mapped onto one INVITE besides the session's own.
pub const MAX_EXTRA_HEADERS: usize = 16;

/// Most REFER headers looked at (a REFER with thousands of `X-` lines costs
/// nothing more than one with 64).
pub const MAX_REFER_CANDIDATES: usize = 64;

/// Where a header goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Placement {
    #[default]
    Header,
    Uri,
    Both,
}

impl Placement {
    pub fn parse(s: &str) -> Option<Placement> {
        match s {
            "header" => Some(Placement::Header),
            "uri" => Some(Placement::Uri),
            "both" => Some(Placement::Both),
            _ => None,
        }
    }
    fn line(self) -> bool {
        self != Placement::Uri
    }
    fn uri(self) -> bool {
        self != Placement::Header
    }
}

/// Whose rules the names and sizes follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Profile {
    #[default]
    Generic,
    Twilio,
}

impl Profile {
    pub fn parse(s: &str) -> Option<Profile> {
        match s {
            "generic" => Some(Profile::Generic),
            "twilio" => Some(Profile::Twilio),
            _ => None,
        }
    }

    /// The profile a destination gets when its config names none.
    pub fn default_for_host(host: &str) -> Profile {
        let h = host.trim_end_matches('.').to_ascii_lowercase();
        if h == "twilio.com" || h.ends_with(".twilio.com") {
            Profile::Twilio
        } else {
            Profile::Generic
        }
    }

    /// Whether this target takes a header of this name from us.
    fn admits(self, name: &str) -> Result<(), HeaderProblem> {
        let x = is_x_token(name);
        let listed = NON_X_COPYABLE.iter().any(|n| n.eq_ignore_ascii_case(name));
        match self {
            Profile::Generic if x || listed => Ok(()),
            Profile::Generic => Err(HeaderProblem::BadName),
            Profile::Twilio if name.len() >= 8 && name[..8].eq_ignore_ascii_case("X-Twilio") => {
                Err(HeaderProblem::RefusedByTarget)
            }
            Profile::Twilio if x || listed => Ok(()),
            Profile::Twilio => Err(HeaderProblem::RefusedByTarget),
        }
    }
}

fn is_x_token(name: &str) -> bool {
    name.len() > 2
        && name.len() <= 128
        && name[..2].eq_ignore_ascii_case("X-")
        && name.bytes().all(is_token_char)
}

/// One `refer_headers` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
enum NamePattern {
    /// Lowercase name.
    Exact(String),
    /// Lowercase prefix (the pattern without its `*`).
    Prefix(String),
}

impl NamePattern {
    fn parse(p: &str) -> Result<NamePattern, String> {
        let (stem, prefix) = match p.strip_suffix('*') {
            Some(s) => (s, true),
            None => (p, false),
        };
        let listed = NON_X_COPYABLE.iter().any(|n| n.eq_ignore_ascii_case(p));
        let x_stem = stem.len() >= 2
            && stem[..2].eq_ignore_ascii_case("X-")
            && stem.len() <= 128
            && stem.bytes().all(is_token_char);
        if !(listed || x_stem) || (prefix && listed) {
            return Err(format!(
                "{p:?} is not an X- header name, an X- prefix ending in *, or one of {}",
                NON_X_COPYABLE.join(", ")
            ));
        }
        let lower = stem.to_ascii_lowercase();
        if lower.starts_with("x-opencx") {
            return Err(format!(
                "{p:?}: X-OPENCX-* headers are set only by handoff, never copied"
            ));
        }
        if !prefix && is_reserved(stem) {
            return Err(format!("{p:?} is set only by handoff, never copied"));
        }
        Ok(if prefix {
            NamePattern::Prefix(lower)
        } else {
            NamePattern::Exact(lower)
        })
    }

    fn matches(&self, name: &str) -> bool {
        let lower = name.to_ascii_lowercase();
        match self {
            NamePattern::Exact(n) => *n == lower,
            NamePattern::Prefix(p) => lower.starts_with(p.as_str()),
        }
    }
}

/// A destination's contract as configured (the raw values; `compile` checks them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContractInput<'a> {
    pub profile: Option<&'a str>,
    pub refer_headers: &'a [String],
    pub custom_data_headers: &'a BTreeMap<String, String>,
    pub header_placement: Option<&'a str>,
    pub ticket_placement: Option<&'a str>,
}

/// A destination's contract, checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Contract {
    pub profile: Profile,
    refer: Vec<NamePattern>,
    /// (custom_data key, header name).
    custom: Vec<(String, String)>,
    pub placement: Placement,
    pub ticket_placement: Placement,
}

/// Most `custom_data_headers` entries.
const MAX_CUSTOM_HEADERS: usize = 16;

impl Contract {
    /// The contract of a destination with nothing configured: header lines, the
    /// profile its host implies.
    pub fn for_host(host: &str) -> Contract {
        Contract {
            profile: Profile::default_for_host(host),
            ..Contract::default()
        }
    }

    /// Check `input`; the error is (key suffix, problem), the key suffix being
    /// the field name (with an index or map key when it is one entry).
    pub fn compile(input: &ContractInput<'_>, host: &str) -> Result<Contract, (String, String)> {
        let profile = match input.profile {
            None => Profile::default_for_host(host),
            Some(p) => Profile::parse(p).ok_or_else(|| {
                (
                    "profile".to_owned(),
                    format!("{p:?} is not \"generic\" or \"twilio\""),
                )
            })?,
        };
        let placement = |k: &str, v: Option<&str>| match v {
            None => Ok(Placement::Header),
            Some(v) => Placement::parse(v).ok_or_else(|| {
                (
                    k.to_owned(),
                    format!("{v:?} is not \"header\", \"uri\" or \"both\""),
                )
            }),
        };
        let header_placement = placement("header_placement", input.header_placement)?;
        let ticket_placement = placement("ticket_placement", input.ticket_placement)?;
        if input.refer_headers.len() > MAX_EXTRA_HEADERS {
            return Err((
                "refer_headers".into(),
                format!("at most {MAX_EXTRA_HEADERS} entries"),
            ));
        }
        let mut refer = Vec::new();
        for (i, p) in input.refer_headers.iter().enumerate() {
            let key = format!("refer_headers[{i}]");
            let pat = NamePattern::parse(p).map_err(|e| (key.clone(), e))?;
            // A name the target refuses is a configuration mistake, said now.
            if let NamePattern::Exact(_) = pat {
                profile
                    .admits(p)
                    .map_err(|e| (key.clone(), format!("{p:?}: {e} ({profile:?} profile)")))?;
            } else if profile == Profile::Twilio
                && p.len() >= 9
                && p[..8].eq_ignore_ascii_case("X-Twilio")
            {
                return Err((key, format!("{p:?}: Twilio refuses X-Twilio* headers")));
            }
            refer.push(pat);
        }
        if input.custom_data_headers.len() > MAX_CUSTOM_HEADERS {
            return Err((
                "custom_data_headers".into(),
                format!("at most {MAX_CUSTOM_HEADERS} entries"),
            ));
        }
        let mut custom = Vec::new();
        for (k, h) in input.custom_data_headers {
            let key = format!("custom_data_headers.{}", loggable(k));
            if !is_x_token(h) {
                return Err((key, format!("{:?} is not an X- header name", loggable(h))));
            }
            if is_reserved(h) {
                return Err((key, format!("{h:?} is set only by handoff")));
            }
            profile
                .admits(h)
                .map_err(|e| (key.clone(), format!("{h:?}: {e} ({profile:?} profile)")))?;
            custom.push((k.clone(), h.clone()));
        }
        Ok(Contract {
            profile,
            refer,
            custom,
            placement: header_placement,
            ticket_placement,
        })
    }

    /// Whether a REFER header is a candidate at all (cheap, on the REFER path):
    /// some `refer_headers` entry matches it.
    pub fn wants_refer_header(&self, name: &str) -> bool {
        self.refer.iter().any(|p| p.matches(name))
    }

    /// The headers of the transfer INVITE besides the From and the SDP:
    /// - `context`: the session's headers (`transfer_headers`), the ticket ones
    ///   placed by `ticket_placement`, the others as header lines;
    /// - then, placed by `header_placement`: `refer_to` (the Refer-To URI's
    ///   headers the global copy rule let through), the REFER's own headers this
    ///   contract lists, and the mapped `custom_data` keys.
    pub fn plan(
        &self,
        context: &[(&'static str, String)],
        refer_to: &[(String, String)],
        refer: &[(String, String)],
        custom_data: &BTreeMap<String, String>,
    ) -> Planned {
        let mut out = Planned::default();
        for (name, value) in context {
            let ticket = name.eq_ignore_ascii_case(super::headers::X_OPENCX_ZENDESK_TICKET_ID)
                || name.eq_ignore_ascii_case(super::headers::X_ZENDESK_TICKET_ID);
            let place = if ticket {
                self.ticket_placement
            } else {
                Placement::Header
            };
            out.place(name, value, place);
        }
        let mapped = self
            .custom
            .iter()
            .filter_map(|(k, h)| custom_data.get(k).map(|v| (h.as_str(), v.as_str())));
        let candidates = refer_to
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str(), true))
            .chain(
                refer
                    .iter()
                    .take(MAX_REFER_CANDIDATES)
                    .filter(|(n, _)| self.wants_refer_header(n))
                    .map(|(n, v)| (n.as_str(), v.as_str(), false)),
            )
            .chain(mapped.map(|(n, v)| (n, v, true)));
        let mut extra = 0;
        for (name, value, _) in candidates {
            let verdict = if is_reserved(name) {
                Err(HeaderProblem::Reserved)
            } else if let Err(p) = self.profile.admits(name) {
                Err(p)
            } else if out.has(name) {
                Err(HeaderProblem::Duplicate)
            } else if extra >= MAX_EXTRA_HEADERS {
                Err(HeaderProblem::TooMany)
            } else {
                check_line(name, value)
            };
            match verdict {
                Ok(()) => {
                    extra += 1;
                    out.place(name, value, self.placement);
                }
                Err(problem) => out.omitted.push(Omitted {
                    name: loggable(name),
                    problem,
                }),
            }
        }
        out
    }
}

/// What the transfer INVITE carries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Planned {
    /// Header lines, in order.
    pub lines: Vec<(String, String)>,
    /// URI headers for the Request-URI, in order (unescaped).
    pub uri: Vec<(String, String)>,
    pub omitted: Vec<Omitted>,
    /// Length of the escaped URI header part so far.
    uri_len: usize,
}

impl Planned {
    fn has(&self, name: &str) -> bool {
        self.lines
            .iter()
            .chain(&self.uri)
            .any(|(n, _)| n.eq_ignore_ascii_case(name))
    }

    fn place(&mut self, name: &str, value: &str, place: Placement) {
        if place.uri() {
            let part = escape(name).len() + 1 + escape(value).len();
            let len = self.uri_len + usize::from(self.uri_len > 0) + part;
            if len > MAX_URI_HEADERS {
                self.omitted.push(Omitted {
                    name: loggable(name),
                    problem: HeaderProblem::UriTooLong(len),
                });
            } else {
                self.uri_len = len;
                self.uri.push((name.to_owned(), value.to_owned()));
            }
        }
        if place.line() {
            self.lines.push((name.to_owned(), value.to_owned()));
        }
    }

    /// `uri` with the URI headers appended (`?name=value&...`, escaped per RFC
    /// 3261 25.1 `hname`/`hvalue`); `uri` itself unchanged when there are none.
    pub fn request_uri(&self, uri: &str) -> String {
        if self.uri.is_empty() {
            return uri.to_owned();
        }
        let mut s = String::with_capacity(uri.len() + 1 + self.uri_len);
        s.push_str(uri);
        for (i, (n, v)) in self.uri.iter().enumerate() {
            s.push(if i == 0 { '?' } else { '&' });
            s.push_str(&escape(n));
            s.push('=');
            s.push_str(&escape(v));
        }
        s
    }
}

/// Longest Referred-By carried.
pub const MAX_REFERRED_BY: usize = 512;

/// The REFER's `Referred-By` (RFC 3892) as the triggered INVITE carries it: a
/// name-addr or addr-spec with a sip:, sips: or tel: URI, no control characters,
/// at most 512 bytes; None otherwise (left out, not repaired).
pub fn referred_by_value(v: &str) -> Option<String> {
    let v = v.trim();
    if v.is_empty() || v.len() > MAX_REFERRED_BY || check_value(v).is_err() {
        return None;
    }
    let na = NameAddr::parse(v)?;
    matches!(na.uri.scheme.as_str(), "sip" | "sips" | "tel").then(|| v.to_owned())
}

/// RFC 3261 25.1: `hnv-unreserved / unreserved` stay, everything else is `%HH`.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        let keep = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'_'
                    | b'.'
                    | b'!'
                    | b'~'
                    | b'*'
                    | b'\''
                    | b'('
                    | b')'
                    | b'['
                    | b']'
                    | b'/'
                    | b'?'
                    | b':'
                    | b'+'
                    | b'$'
            );
        if keep {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
#[path = "tests/contract.rs"]
mod tests;
