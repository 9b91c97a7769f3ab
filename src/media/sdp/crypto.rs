//! SDES `a=crypto` (RFC 4568 9.1): read the lines of an m= section and write
//! handoff's own. Pure; never panics on input.
//!
//! What handoff takes (the relay keys one master key per direction, no MKI):
//! - a line with one key parameter `inline:<base64 of 30 bytes>` and an
//!   optional lifetime (`|2^31`, accepted and not enforced: the relay's
//!   replay window and rollover counter bound a key's use);
//! - a line whose suite handoff does not speak, several key parameters, an
//!   MKI (`|1:4`) or any session parameter (`UNENCRYPTED_SRTP`, `KDR=`,
//!   `FEC_ORDER=`, ...) is *not acceptable*: skipped, as RFC 4568 6.1 lets an
//!   answerer skip lines it cannot honour;
//! - a malformed line, a bad base64 key or one of the wrong length for a
//!   suite handoff speaks, a repeated tag, too many or too long lines are
//!   errors of the whole SDP (answered 488).

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use super::{Attribute, MediaDescription, SessionDescription};
use crate::media::srtp::{SrtpKey, SrtpSuite, MASTER_KEY_LEN, MASTER_SALT_LEN};

/// Most `a=crypto` lines read in one m= section: real offers carry two to four.
pub const MAX_CRYPTO_LINES: usize = 8;
/// Longest `a=crypto` value read (a line with one inline key is ~70 bytes).
pub const MAX_CRYPTO_LEN: usize = 256;
/// RFC 4568 9.1: `tag = 1*9DIGIT`.
const MAX_TAG_DIGITS: usize = 9;

/// Why an m= section's crypto lines cannot be read. The text names no key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    #[error("more than {MAX_CRYPTO_LINES} a=crypto lines in one m= line")]
    TooMany,
    #[error("a=crypto line longer than {MAX_CRYPTO_LEN} bytes")]
    TooLong,
    #[error("malformed a=crypto line")]
    Malformed,
    #[error("a=crypto tag is not 1 to 9 digits")]
    BadTag,
    #[error("a=crypto tag {0} appears twice")]
    DuplicateTag(u32),
    #[error("a=crypto key is not valid base64")]
    BadBase64,
    #[error("a=crypto key is {0} bytes, not the suite's 30")]
    BadKeyLength(usize),
}

impl CryptoError {
    /// A short, header-safe reason for the 488's Warning.
    pub fn reason(&self) -> &'static str {
        match self {
            CryptoError::TooMany | CryptoError::TooLong => "Too many or too long crypto lines",
            CryptoError::Malformed | CryptoError::BadTag | CryptoError::DuplicateTag(_) => {
                "Malformed crypto attribute"
            }
            CryptoError::BadBase64 | CryptoError::BadKeyLength(_) => "Bad SRTP master key",
        }
    }
}

/// One `a=crypto` line handoff can use: its tag, suite and master key.
/// `Debug` shows the key's suite only (see `SrtpKey`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Crypto {
    pub tag: u32,
    pub key: SrtpKey,
}

impl Crypto {
    pub fn suite(&self) -> SrtpSuite {
        self.key.suite()
    }

    /// The attribute value: `<tag> <suite> inline:<base64 key||salt>`.
    /// It carries a key: never log it.
    pub fn to_value(&self) -> String {
        format!(
            "{} {} inline:{}",
            self.tag,
            self.suite().sdes_name(),
            STANDARD.encode(self.key.key_and_salt())
        )
    }
}

/// One line as read: usable, or skipped (with its tag, so an answer naming
/// it can be recognised as choosing a line we could not take).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CryptoLine {
    Usable(Crypto),
    Skipped { tag: u32, why: Skip },
}

impl CryptoLine {
    pub fn tag(&self) -> u32 {
        match self {
            CryptoLine::Usable(c) => c.tag,
            CryptoLine::Skipped { tag, .. } => *tag,
        }
    }
}

/// Why a well-formed line is not acceptable to handoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    UnknownSuite,
    SeveralKeys,
    Mki,
    SessionParameter,
}

/// Every `a=crypto` line of `m`, in order (RFC 4568: the offerer's preference).
pub fn crypto_lines(m: &MediaDescription) -> Result<Vec<CryptoLine>, CryptoError> {
    let values: Vec<&str> = m
        .attributes()
        .iter()
        .filter(|a| a.name().eq_ignore_ascii_case("crypto"))
        .map(|a| a.value().unwrap_or(""))
        .collect();
    if values.len() > MAX_CRYPTO_LINES {
        return Err(CryptoError::TooMany);
    }
    let mut out: Vec<CryptoLine> = Vec::with_capacity(values.len());
    for v in values {
        let line = parse_crypto(v)?;
        if out.iter().any(|l| l.tag() == line.tag()) {
            return Err(CryptoError::DuplicateTag(line.tag()));
        }
        out.push(line);
    }
    Ok(out)
}

/// One attribute value (after `a=crypto:`).
pub fn parse_crypto(value: &str) -> Result<CryptoLine, CryptoError> {
    if value.len() > MAX_CRYPTO_LEN {
        return Err(CryptoError::TooLong);
    }
    let mut fields = value.split_ascii_whitespace();
    let (Some(tag), Some(suite), Some(key_params)) = (fields.next(), fields.next(), fields.next())
    else {
        return Err(CryptoError::Malformed);
    };
    let tag = parse_tag(tag)?;
    let Some(suite) = SrtpSuite::from_sdes_name(suite) else {
        return Ok(CryptoLine::Skipped {
            tag,
            why: Skip::UnknownSuite,
        });
    };
    if fields.next().is_some() {
        return Ok(CryptoLine::Skipped {
            tag,
            why: Skip::SessionParameter,
        });
    }
    let mut params = key_params.split(';');
    let first = params.next().unwrap_or("");
    let several = params.next().is_some();
    let Some(info) = strip_prefix_ignore_case(first, "inline:") else {
        return Err(CryptoError::Malformed);
    };
    let mut parts = info.split('|');
    let key = parse_key(suite, parts.next().unwrap_or(""))?;
    let (mut lifetime, mut mki) = (false, false);
    for part in parts {
        if !lifetime && !mki && is_lifetime(part) {
            lifetime = true;
        } else if !mki && is_mki(part) {
            mki = true;
        } else {
            return Err(CryptoError::Malformed);
        }
    }
    if several {
        return Ok(CryptoLine::Skipped {
            tag,
            why: Skip::SeveralKeys,
        });
    }
    if mki {
        return Ok(CryptoLine::Skipped {
            tag,
            why: Skip::Mki,
        });
    }
    Ok(CryptoLine::Usable(Crypto { tag, key }))
}

/// `sdp` with stream `index` on `proto` and its `a=crypto` lines replaced by
/// `lines` (none: plain). Crypto lines of every other m= line go too: they
/// described the other leg's keys, which never cross the relay.
pub fn with_crypto(
    sdp: &SessionDescription,
    index: usize,
    proto: &str,
    lines: &[Crypto],
) -> SessionDescription {
    let mut out = sdp.clone();
    out.attributes
        .retain(|a| !a.name.eq_ignore_ascii_case("crypto"));
    for (i, m) in out.media.iter_mut().enumerate() {
        m.attributes
            .retain(|a| !a.name.eq_ignore_ascii_case("crypto"));
        if i == index {
            m.proto = proto.to_owned();
            m.attributes.extend(
                lines
                    .iter()
                    .map(|c| Attribute::new("crypto", Some(c.to_value()))),
            );
        }
    }
    out
}

fn parse_tag(tag: &str) -> Result<u32, CryptoError> {
    if tag.is_empty() || tag.len() > MAX_TAG_DIGITS || !tag.bytes().all(|b| b.is_ascii_digit()) {
        return Err(CryptoError::BadTag);
    }
    tag.parse().map_err(|_| CryptoError::BadTag)
}

fn parse_key(suite: SrtpSuite, b64: &str) -> Result<SrtpKey, CryptoError> {
    // RFC 4568 6.1: base64 with padding; some peers leave the padding out.
    let bytes = STANDARD
        .decode(b64)
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(b64))
        .map_err(|_| CryptoError::BadBase64)?;
    if bytes.len() != MASTER_KEY_LEN + MASTER_SALT_LEN {
        return Err(CryptoError::BadKeyLength(bytes.len()));
    }
    let mut key = [0u8; MASTER_KEY_LEN];
    let mut salt = [0u8; MASTER_SALT_LEN];
    key.copy_from_slice(&bytes[..MASTER_KEY_LEN]);
    salt.copy_from_slice(&bytes[MASTER_KEY_LEN..]);
    Ok(SrtpKey::new(suite, key, salt))
}

/// `lifetime = ["2^"] 1*(DIGIT)`.
fn is_lifetime(s: &str) -> bool {
    let digits = s.strip_prefix("2^").unwrap_or(s);
    !digits.is_empty() && digits.len() <= 20 && digits.bytes().all(|b| b.is_ascii_digit())
}

/// `mki = mki-value ":" mki-length`, 1*128DIGIT ":" 1*3DIGIT.
fn is_mki(s: &str) -> bool {
    let Some((value, length)) = s.split_once(':') else {
        return false;
    };
    let digits = |d: &str, max: usize| {
        !d.is_empty() && d.len() <= max && d.bytes().all(|b| b.is_ascii_digit())
    };
    digits(value, 128) && digits(length, 3)
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// Replaces every `a=crypto` key in an SDP text by `<redacted>`, for logs.
pub fn redact_keys(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = find_ignore_case(rest, "inline:") {
        let start = i + "inline:".len();
        out.push_str(&rest[..start]);
        out.push_str("<redacted>");
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| c == '|' || c == ';' || c.is_ascii_whitespace())
            .unwrap_or(tail.len());
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

fn find_ignore_case(hay: &str, needle: &str) -> Option<usize> {
    hay.as_bytes()
        .windows(needle.len())
        .position(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 30 bytes: 0x00..0x1d.
    const KEY_B64: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwd";

    fn usable(v: &str) -> Crypto {
        match parse_crypto(v) {
            Ok(CryptoLine::Usable(c)) => c,
            other => panic!("{v}: {other:?}"),
        }
    }

    fn skipped(v: &str) -> Skip {
        match parse_crypto(v) {
            Ok(CryptoLine::Skipped { why, .. }) => why,
            other => panic!("{v}: {other:?}"),
        }
    }

    #[test]
    fn a_plain_line_gives_tag_suite_key_and_salt() {
        let c = usable(&format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_B64}"));
        assert_eq!(c.tag, 1);
        assert_eq!(c.suite(), SrtpSuite::AesCm128HmacSha1_80);
        assert_eq!(c.key.master_key()[0], 0);
        assert_eq!(c.key.master_salt()[13], 0x1d);
        let c = usable(&format!(
            "123456789 AES_CM_128_HMAC_SHA1_32 inline:{KEY_B64}|2^31"
        ));
        assert_eq!(c.tag, 123_456_789);
        assert_eq!(c.suite(), SrtpSuite::AesCm128HmacSha1_32);
    }

    #[test]
    fn written_lines_read_back() {
        let c = Crypto {
            tag: 7,
            key: SrtpKey::generate(SrtpSuite::AesCm128HmacSha1_32),
        };
        assert_eq!(usable(&c.to_value()), c);
    }

    #[test]
    fn lines_handoff_cannot_honour_are_skipped() {
        let k = KEY_B64;
        assert_eq!(
            skipped(&format!("1 AES_256_CM_HMAC_SHA1_80 inline:{k}")),
            Skip::UnknownSuite
        );
        assert_eq!(
            skipped(&format!("1 AES_CM_128_HMAC_SHA1_80 inline:{k}|2^20|1:4")),
            Skip::Mki
        );
        assert_eq!(
            skipped(&format!(
                "1 AES_CM_128_HMAC_SHA1_80 inline:{k}|2^20|1:4;inline:{k}|2^20|2:4"
            )),
            Skip::SeveralKeys
        );
        for param in [
            "UNENCRYPTED_SRTP",
            "KDR=1",
            "FEC_ORDER=FEC_SRTP",
            "UNENCRYPTED_SRTCP",
        ] {
            assert_eq!(
                skipped(&format!("1 AES_CM_128_HMAC_SHA1_80 inline:{k} {param}")),
                Skip::SessionParameter
            );
        }
    }

    #[test]
    fn malformed_lines_are_errors_not_panics() {
        let k = KEY_B64;
        let cases: &[(String, CryptoError)] = &[
            (String::new(), CryptoError::Malformed),
            ("1 AES_CM_128_HMAC_SHA1_80".into(), CryptoError::Malformed),
            (
                format!("x AES_CM_128_HMAC_SHA1_80 inline:{k}"),
                CryptoError::BadTag,
            ),
            (
                format!("1234567890 AES_CM_128_HMAC_SHA1_80 inline:{k}"),
                CryptoError::BadTag,
            ),
            (
                format!("-1 AES_CM_128_HMAC_SHA1_80 inline:{k}"),
                CryptoError::BadTag,
            ),
            (
                "1 AES_CM_128_HMAC_SHA1_80 inline:!!!".into(),
                CryptoError::BadBase64,
            ),
            (
                "1 AES_CM_128_HMAC_SHA1_80 inline:AAEC".into(),
                CryptoError::BadKeyLength(3),
            ),
            (
                format!("1 AES_CM_128_HMAC_SHA1_80 key:{k}"),
                CryptoError::Malformed,
            ),
            (
                format!("1 AES_CM_128_HMAC_SHA1_80 inline:{k}|junk"),
                CryptoError::Malformed,
            ),
            (
                format!("1 AES_CM_128_HMAC_SHA1_80 inline:{k}|2^"),
                CryptoError::Malformed,
            ),
            (
                "1 AES_CM_128_HMAC_SHA1_80 inline:".into(),
                CryptoError::BadKeyLength(0),
            ),
            (
                format!("1 AES_CM_128_HMAC_SHA1_80 inline:{}", "A".repeat(300)),
                CryptoError::TooLong,
            ),
        ];
        for (value, want) in cases {
            assert_eq!(parse_crypto(value).as_ref(), Err(want), "{value}");
        }
    }

    fn media(lines: &[String]) -> MediaDescription {
        let mut text = String::from(
            "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/SAVP 0\r\n",
        );
        for l in lines {
            text.push_str(&format!("a=crypto:{l}\r\n"));
        }
        let sdp = super::super::SessionDescription::parse(text.as_bytes()).expect("parses");
        sdp.media()[0].clone()
    }

    #[test]
    fn an_m_line_is_read_in_order_bounded_and_without_repeated_tags() {
        let k = KEY_B64;
        let m = media(&[
            format!("1 AES_256_CM_HMAC_SHA1_80 inline:{k}"),
            format!("2 AES_CM_128_HMAC_SHA1_80 inline:{k}"),
        ]);
        let lines = crypto_lines(&m).expect("reads");
        assert_eq!(lines.len(), 2);
        assert!(matches!(
            lines[1],
            CryptoLine::Usable(Crypto { tag: 2, .. })
        ));

        let dup = media(&[
            format!("1 AES_CM_128_HMAC_SHA1_80 inline:{k}"),
            format!("1 AES_CM_128_HMAC_SHA1_32 inline:{k}"),
        ]);
        assert_eq!(crypto_lines(&dup), Err(CryptoError::DuplicateTag(1)));

        let many: Vec<String> = (1..=9)
            .map(|t| format!("{t} AES_CM_128_HMAC_SHA1_80 inline:{k}"))
            .collect();
        assert_eq!(crypto_lines(&media(&many)), Err(CryptoError::TooMany));
    }

    #[test]
    fn an_sdp_printed_with_debug_shows_no_key() {
        let text = format!(
            "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n\
             m=audio 4000 RTP/SAVP 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_B64}\r\n"
        );
        let sdp = SessionDescription::parse(text.as_bytes()).expect("parses");
        let shown = format!("{sdp:?}");
        assert!(!shown.contains(KEY_B64), "{shown}");
        assert!(
            shown.contains("AES_CM_128_HMAC_SHA1_80 inline:<redacted>"),
            "{shown}"
        );
    }

    #[test]
    fn redaction_hides_every_inline_key() {
        let text = format!(
            "m=audio 1 RTP/SAVP 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_B64}|2^31\r\n\
             a=crypto:2 AES_CM_128_HMAC_SHA1_32 INLINE:{KEY_B64}\r\n"
        );
        let out = redact_keys(&text);
        assert!(!out.contains(KEY_B64), "{out}");
        assert!(out.contains("inline:<redacted>|2^31"), "{out}");
        assert!(out.contains("a=crypto:2 AES_CM_128_HMAC_SHA1_32 INLINE:<redacted>"));
    }
}
