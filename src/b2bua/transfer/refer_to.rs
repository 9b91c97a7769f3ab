//! Refer-To (RFC 3515 2.1): one name-addr or addr-spec naming the transfer target.
//! Headers embedded in the URI (RFC 3261 19.1.5, `?X-Foo=bar&Replaces=...`) are split
//! off the target and handed back percent-decoded; nothing in them is acted on here.

use crate::sip::message::{check_value, split_list, SipUri};

/// The transfer target named by a REFER.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReferTarget {
    /// The display name of a name-addr, unquoted (for logs only).
    pub display_name: Option<String>,
    /// The target URI with its embedded headers removed.
    pub uri: SipUri,
    /// Headers embedded in the URI, in order, names and values percent-decoded.
    /// Values may hold anything (CR, LF included): validate before use.
    pub uri_headers: Vec<(String, String)>,
    /// Header parameters after the URI (`>;x=y`, or every `;` of an addr-spec),
    /// names lowercased.
    pub params: Vec<(String, Option<String>)>,
}

impl ReferTarget {
    /// The first embedded header of that name (case-insensitive), e.g. `Replaces`.
    pub fn uri_header(&self, name: &str) -> Option<&str> {
        self.uri_headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Why a REFER's Refer-To cannot be used; the caller answers 400 with
/// [`ReferToError::reason`] as the reason phrase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReferToError {
    #[error("Missing Refer-To")]
    Missing,
    /// RFC 3515 2.4.1: a REFER carries exactly one Refer-To.
    #[error("Multiple Refer-To")]
    Multiple,
    #[error("Malformed Refer-To")]
    Malformed,
    #[error("Unsupported Refer-To URI scheme")]
    UnsupportedScheme,
    /// RFC 3515 2.1: `method=` asks for a request other than INVITE; we only invite.
    #[error("Refer-To method not supported")]
    UnsupportedMethod,
}

impl ReferToError {
    /// A short reason phrase, safe to put on a status line.
    pub fn reason(self) -> &'static str {
        match self {
            ReferToError::Missing => "Missing Refer-To",
            ReferToError::Multiple => "Multiple Refer-To",
            ReferToError::Malformed => "Malformed Refer-To",
            ReferToError::UnsupportedScheme => "Unsupported Refer-To URI scheme",
            ReferToError::UnsupportedMethod => "Refer-To method not supported",
        }
    }
}

/// Longest Refer-To value accepted; a real one is a fraction of this.
const MAX_REFER_TO_LEN: usize = 4096;

/// Parse every Refer-To value of a REFER (full `Refer-To` and compact `r` alike,
/// collected by the caller). Exactly one value is accepted, also when several hide in
/// one header line as a comma-separated list.
pub fn parse_refer_to(values: &[&str]) -> Result<ReferTarget, ReferToError> {
    let mut found = values.iter().flat_map(|v| split_list(v));
    let value = found.next().ok_or(ReferToError::Missing)?;
    if found.next().is_some() {
        return Err(ReferToError::Multiple);
    }
    parse_one(value)
}

fn parse_one(value: &str) -> Result<ReferTarget, ReferToError> {
    let value = value.trim();
    if value.len() > MAX_REFER_TO_LEN || check_value(value).is_err() {
        return Err(ReferToError::Malformed);
    }
    let (display_name, uri_text, params) = match find_unquoted(value, b'<') {
        Some(lt) => {
            let gt = value[lt..].find('>').ok_or(ReferToError::Malformed)? + lt;
            let display = value[..lt].trim();
            let display_name = if display.is_empty() {
                None
            } else {
                Some(unquote(display).ok_or(ReferToError::Malformed)?)
            };
            (display_name, &value[lt + 1..gt], value[gt + 1..].trim())
        }
        None => {
            // RFC 3261 20.10: an addr-spec with `?` (or `,`) must be a name-addr; every
            // `;` of an addr-spec starts a header parameter.
            if value.contains(['?', '"', '>']) {
                return Err(ReferToError::Malformed);
            }
            match value.find(';') {
                Some(i) => (None, &value[..i], &value[i..]),
                None => (None, value, ""),
            }
        }
    };
    if !params.is_empty() && !params.starts_with(';') {
        return Err(ReferToError::Malformed);
    }
    let (uri_text, headers_text) = match uri_text.split_once('?') {
        Some((u, h)) => (u, Some(h)),
        None => (uri_text, None),
    };
    let scheme = uri_text.split_once(':').map(|(s, _)| s).unwrap_or("");
    if !["sip", "sips", "tel"]
        .iter()
        .any(|s| s.eq_ignore_ascii_case(scheme))
    {
        return Err(ReferToError::UnsupportedScheme);
    }
    let uri = SipUri::parse(uri_text).ok_or(ReferToError::Malformed)?;
    if uri
        .param("method")
        .is_some_and(|m| !m.is_some_and(|m| m.eq_ignore_ascii_case("INVITE")))
    {
        return Err(ReferToError::UnsupportedMethod);
    }
    let uri_headers = match headers_text {
        Some(h) => parse_uri_headers(h)?,
        None => Vec::new(),
    };
    Ok(ReferTarget {
        display_name,
        uri,
        uri_headers,
        params: split_params(params),
    })
}

/// RFC 3261 25.1: `headers = "?" header *( "&" header )`, `header = hname "=" hvalue`,
/// both escaped. Empty pieces (`?&a=b`) are skipped; a piece without `=` or with an
/// empty name is malformed.
fn parse_uri_headers(s: &str) -> Result<Vec<(String, String)>, ReferToError> {
    s.split('&')
        .filter(|piece| !piece.is_empty())
        .map(|piece| {
            let (name, value) = piece.split_once('=').ok_or(ReferToError::Malformed)?;
            if name.is_empty() {
                return Err(ReferToError::Malformed);
            }
            Ok((decode(name), decode(value)))
        })
        .collect()
}

/// Percent-decoding; bytes that are not UTF-8 become U+FFFD rather than failing the
/// whole REFER over a header nobody may copy.
fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// Byte position of `want` outside any quoted string.
fn find_unquoted(s: &str, want: u8) -> Option<usize> {
    let (mut quoted, mut escaped) = (false, false);
    for (i, b) in s.bytes().enumerate() {
        if escaped {
            escaped = false;
        } else if quoted && b == b'\\' {
            escaped = true;
        } else if b == b'"' {
            quoted = !quoted;
        } else if !quoted && b == want {
            return Some(i);
        }
    }
    None
}

/// A display name: a quoted string (escapes removed) or a run of tokens.
fn unquote(s: &str) -> Option<String> {
    let Some(inner) = s.strip_prefix('"') else {
        return (!s.contains('"')).then(|| s.to_owned());
    };
    let inner = inner.strip_suffix('"')?;
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push(chars.next()?),
            '"' => return None,
            c => out.push(c),
        }
    }
    Some(out)
}

fn split_params(s: &str) -> Vec<(String, Option<String>)> {
    s.split(';')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((n, v)) => (n.trim().to_ascii_lowercase(), Some(v.trim().to_owned())),
            None => (p.to_ascii_lowercase(), None),
        })
        .collect()
}
