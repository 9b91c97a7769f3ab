//! Header names and values: canonical names (compact forms expanded), case-insensitive
//! lookup, and values checked so that nothing with CR, LF or another control character
//! ever reaches the wire.

use std::borrow::Cow;
use std::fmt;

/// A header field name. Known names are stored in their canonical spelling so that
/// lookups and serialisation do not depend on how a peer wrote them.
#[derive(Debug, Clone)]
pub struct HeaderName(Cow<'static, str>);

/// RFC 3261 7.3.3 compact forms plus the RFC 3515 (Refer-To) and RFC 4474/3892 ones
/// rsip 0.4 does not know.
const COMPACT: &[(u8, &str)] = &[
    (b'i', "Call-ID"),
    (b'f', "From"),
    (b't', "To"),
    (b'v', "Via"),
    (b'm', "Contact"),
    (b'l', "Content-Length"),
    (b'c', "Content-Type"),
    (b'k', "Supported"),
    (b's', "Subject"),
    (b'e', "Content-Encoding"),
    (b'o', "Event"),
    (b'r', "Refer-To"),
    (b'x', "Session-Expires"),
    (b'u', "Allow-Events"),
    (b'b', "Referred-By"),
];

/// Canonical spellings of the long names we look up often.
const KNOWN: &[&str] = &[
    "Via",
    "From",
    "To",
    "Call-ID",
    "CSeq",
    "Contact",
    "Max-Forwards",
    "Content-Length",
    "Content-Type",
    "Route",
    "Record-Route",
    "Allow",
    "Supported",
    "Require",
    "Proxy-Require",
    "Unsupported",
    "User-Agent",
    "Server",
    "Retry-After",
    "Event",
    "Refer-To",
    "Referred-By",
    "Subscription-State",
    "Session-Expires",
    "Subject",
    "Content-Encoding",
    "Allow-Events",
    "Accept",
    "Authorization",
    "Proxy-Authorization",
    "WWW-Authenticate",
    "Proxy-Authenticate",
    "Reason",
    "Warning",
    "Expires",
];

impl HeaderName {
    /// Canonicalise a name as read from the wire: compact forms are expanded and known
    /// names get their canonical case; anything else is kept as sent.
    pub fn from_wire(name: &str) -> Self {
        if name.len() == 1 {
            let c = name.as_bytes()[0].to_ascii_lowercase();
            if let Some((_, long)) = COMPACT.iter().find(|(k, _)| *k == c) {
                return HeaderName(Cow::Borrowed(long));
            }
        }
        match KNOWN.iter().find(|k| k.eq_ignore_ascii_case(name)) {
            Some(k) => HeaderName(Cow::Borrowed(k)),
            None => HeaderName(Cow::Owned(name.to_owned())),
        }
    }

    /// A name written in our own code (always canonical already).
    pub const fn of(name: &'static str) -> Self {
        HeaderName(Cow::Borrowed(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is(&self, other: &str) -> bool {
        self.0.eq_ignore_ascii_case(other)
    }

    /// RFC 3261 25.1: a header name is a token.
    pub fn is_valid_token(name: &str) -> bool {
        !name.is_empty() && name.bytes().all(is_token_char)
    }
}

impl PartialEq for HeaderName {
    fn eq(&self, other: &Self) -> bool {
        self.0.eq_ignore_ascii_case(&other.0)
    }
}
impl Eq for HeaderName {}

impl fmt::Display for HeaderName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// RFC 3261 25.1 `token` characters.
pub fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b)
}

/// Why a value may not go into a header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderValueError {
    #[error("header value contains a control character (CR, LF, NUL or similar)")]
    ControlCharacter,
    #[error("header line would be {0} bytes, over the {MAX_HEADER_LINE} byte limit")]
    TooLong(usize),
    #[error("header name {0:?} is not a token")]
    BadName(String),
}

/// Twilio rejects header lines of 1 KiB and more; keep every line we write under it.
pub const MAX_HEADER_LINE: usize = 1000;

/// A value is safe for the wire when it has no control characters other than HTAB
/// (RFC 3261 25.1: TEXT-UTF8 and LWS; folding is never emitted).
pub fn check_value(value: &str) -> Result<(), HeaderValueError> {
    if value.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Err(HeaderValueError::ControlCharacter);
    }
    Ok(())
}

/// One header field line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub(crate) name: HeaderName,
    pub(crate) value: String,
}

impl Header {
    /// A header whose value is checked for control characters and line length; use for
    /// anything that did not come from our own string literals.
    pub fn checked(name: &str, value: impl Into<String>) -> Result<Self, HeaderValueError> {
        if !HeaderName::is_valid_token(name) {
            return Err(HeaderValueError::BadName(name.to_owned()));
        }
        let value = value.into();
        check_value(&value)?;
        let line = name.len() + 2 + value.len();
        if line >= MAX_HEADER_LINE {
            return Err(HeaderValueError::TooLong(line));
        }
        Ok(Header {
            name: HeaderName::from_wire(name),
            value,
        })
    }

    pub fn name(&self) -> &HeaderName {
        &self.name
    }

    pub fn value(&self) -> &str {
        &self.value
    }
}

/// Split a header value on top-level commas (not inside quotes or angle brackets), as
/// RFC 3261 7.3.1 allows several values of a list header on one line.
pub fn split_list(value: &str) -> impl Iterator<Item = &str> {
    let mut parts = Vec::new();
    let mut start = 0;
    for (i, b) in top_level(value) {
        if b == b',' {
            parts.push(value[start..i].trim());
            start = i + 1;
        }
    }
    parts.push(value[start..].trim());
    parts.into_iter().filter(|p| !p.is_empty())
}

/// The bytes of a header value (with their positions) that stand outside quoted
/// strings (escapes honoured) and `<...>`: where a list's commas and a value's
/// parameter semicolons mean something. Quotes and angle brackets themselves are
/// not yielded.
pub(crate) fn top_level(value: &str) -> impl Iterator<Item = (usize, u8)> + '_ {
    let (mut quoted, mut angle, mut escaped) = (false, false, false);
    value.bytes().enumerate().filter(move |&(_, b)| {
        if escaped {
            escaped = false;
            return false;
        }
        match b {
            b'\\' if quoted => {
                escaped = true;
                false
            }
            b'"' => {
                quoted = !quoted;
                false
            }
            b'<' if !quoted => {
                angle = true;
                false
            }
            b'>' if !quoted => {
                angle = false;
                false
            }
            _ => !quoted && !angle,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_names_expand_to_canonical() {
        for (c, long) in [
            ("i", "Call-ID"),
            ("F", "From"),
            ("t", "To"),
            ("v", "Via"),
            ("m", "Contact"),
            ("l", "Content-Length"),
            ("c", "Content-Type"),
            ("k", "Supported"),
            ("s", "Subject"),
            ("e", "Content-Encoding"),
            ("o", "Event"),
            ("r", "Refer-To"),
            ("x", "Session-Expires"),
        ] {
            assert_eq!(HeaderName::from_wire(c).as_str(), long, "{c}");
        }
    }

    #[test]
    fn known_names_are_canonicalised_and_unknown_kept() {
        assert_eq!(HeaderName::from_wire("call-id").as_str(), "Call-ID");
        assert_eq!(HeaderName::from_wire("CSEQ").as_str(), "CSeq");
        assert_eq!(HeaderName::from_wire("X-Custom").as_str(), "X-Custom");
        assert!(HeaderName::from_wire("x-custom").is("X-CUSTOM"));
    }

    #[test]
    fn checked_header_rejects_crlf_and_controls() {
        assert_eq!(
            Header::checked("X-A", "1\r\nVia: evil"),
            Err(HeaderValueError::ControlCharacter)
        );
        assert_eq!(
            Header::checked("X-A", "a\0b"),
            Err(HeaderValueError::ControlCharacter)
        );
        assert!(Header::checked("X-A", "tab\tok").is_ok());
        assert!(matches!(
            Header::checked("X A", "v"),
            Err(HeaderValueError::BadName(_))
        ));
        assert!(matches!(
            Header::checked("X-A", "9".repeat(1000)),
            Err(HeaderValueError::TooLong(_))
        ));
    }

    #[test]
    fn split_list_respects_quotes_and_brackets() {
        let v: Vec<_> = split_list(r#""Doe, John" <sip:a@b;x=1,2>, <sip:c@d> , sip:e@f"#).collect();
        assert_eq!(
            v,
            vec![r#""Doe, John" <sip:a@b;x=1,2>"#, "<sip:c@d>", "sip:e@f"]
        );
        assert_eq!(split_list("").count(), 0);
    }
}
