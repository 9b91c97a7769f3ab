//! Digest authentication of a request when the far end challenges it with
//! 401/407 (RFC 2617, RFC 7616, RFC 8760 for SIP): MD5, SHA-256 and SHA-512/256, with
//! `qop=auth` or, for MD5 only, the legacy no-qop form (RFC 2069).
//!
//! The challenge is parsed here rather than by the `digest_auth` crate: its parser
//! slices the input by character count as if it were a byte offset (a panic on
//! non-ASCII input from the network), compares scheme and algorithm names
//! case-sensitively, rejects unknown qop tokens, and silently answers an
//! `auth-int`-only challenge with `auth`. Hashing is RustCrypto's `md-5` and `sha2`.

use super::DigestCredentials;
use crate::sip::message::{check_value, is_token_char, MAX_HEADER_LINE};
use sha2::Digest;

/// Why a challenge cannot be answered; the caller then treats the 401/407 as final.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    #[error("challenge is not a Digest challenge")]
    NotDigest,
    #[error("malformed Digest challenge: {0}")]
    Malformed(&'static str),
    #[error("Digest challenge without {0}")]
    Missing(&'static str),
    #[error("unsupported Digest algorithm {0:?}")]
    UnsupportedAlgorithm(String),
    /// Only `auth` is done: `auth-int` alone (or unknown qops) cannot be answered.
    #[error("Digest challenge offers no qop=auth")]
    UnsupportedQop,
    /// RFC 7616 3.3: only MD5 has a legacy form without qop.
    #[error("Digest algorithm {0} without qop")]
    QopRequired(&'static str),
    #[error("no challenge offers a supported Digest algorithm")]
    NoneSupported,
    #[error("invalid {0} for a Digest answer")]
    BadInput(&'static str),
    #[error("Authorization header would be {0} bytes, over the limit")]
    TooLong(usize),
}

/// Which challenge a status carries and which header answers it (RFC 3261 22.2, 22.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChallengeKind {
    /// 401: `WWW-Authenticate` answered by `Authorization`.
    Www,
    /// 407: `Proxy-Authenticate` answered by `Proxy-Authorization`.
    Proxy,
}

impl ChallengeKind {
    pub fn from_status(status: u16) -> Option<ChallengeKind> {
        match status {
            401 => Some(ChallengeKind::Www),
            407 => Some(ChallengeKind::Proxy),
            _ => None,
        }
    }

    pub fn challenge_header(self) -> &'static str {
        match self {
            ChallengeKind::Www => "WWW-Authenticate",
            ChallengeKind::Proxy => "Proxy-Authenticate",
        }
    }

    pub fn authorization_header(self) -> &'static str {
        match self {
            ChallengeKind::Www => "Authorization",
            ChallengeKind::Proxy => "Proxy-Authorization",
        }
    }
}

/// The hash algorithms of RFC 7616 3.3 / RFC 8760 2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigestAlgorithm {
    Md5,
    Md5Sess,
    Sha256,
    Sha256Sess,
    Sha512_256,
    Sha512_256Sess,
}

impl DigestAlgorithm {
    const ALL: [DigestAlgorithm; 6] = [
        DigestAlgorithm::Md5,
        DigestAlgorithm::Md5Sess,
        DigestAlgorithm::Sha256,
        DigestAlgorithm::Sha256Sess,
        DigestAlgorithm::Sha512_256,
        DigestAlgorithm::Sha512_256Sess,
    ];

    pub fn name(self) -> &'static str {
        match self {
            DigestAlgorithm::Md5 => "MD5",
            DigestAlgorithm::Md5Sess => "MD5-sess",
            DigestAlgorithm::Sha256 => "SHA-256",
            DigestAlgorithm::Sha256Sess => "SHA-256-sess",
            DigestAlgorithm::Sha512_256 => "SHA-512-256",
            DigestAlgorithm::Sha512_256Sess => "SHA-512-256-sess",
        }
    }

    /// Algorithm names are case-insensitive tokens.
    pub fn parse(name: &str) -> Option<DigestAlgorithm> {
        Self::ALL
            .into_iter()
            .find(|a| a.name().eq_ignore_ascii_case(name))
    }

    fn is_sess(self) -> bool {
        matches!(
            self,
            DigestAlgorithm::Md5Sess
                | DigestAlgorithm::Sha256Sess
                | DigestAlgorithm::Sha512_256Sess
        )
    }

    /// Lowercase hex of the hash of `data`.
    pub(crate) fn hash(self, data: &str) -> String {
        let bytes: Vec<u8> = match self {
            DigestAlgorithm::Md5 | DigestAlgorithm::Md5Sess => {
                md5::Md5::digest(data.as_bytes()).to_vec()
            }
            DigestAlgorithm::Sha256 | DigestAlgorithm::Sha256Sess => {
                sha2::Sha256::digest(data.as_bytes()).to_vec()
            }
            DigestAlgorithm::Sha512_256 | DigestAlgorithm::Sha512_256Sess => {
                sha2::Sha512_256::digest(data.as_bytes()).to_vec()
            }
        };
        let mut hex = String::with_capacity(bytes.len() * 2);
        for b in bytes {
            hex.push(char::from(HEX[usize::from(b >> 4)]));
            hex.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
        hex
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// A parsed Digest challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestChallenge {
    pub realm: String,
    pub nonce: String,
    pub opaque: Option<String>,
    pub algorithm: DigestAlgorithm,
    /// The challenge offered `qop=auth`; false is the legacy form (MD5 only).
    pub qop_auth: bool,
    /// The previous answer used an expired nonce (RFC 7616 3.3): retry, do not give up.
    pub stale: bool,
    /// RFC 7616 3.4.4: the server wants the username hashed (`userhash=true`).
    pub userhash: bool,
}

/// Longest challenge read; real ones are a few hundred bytes.
const MAX_CHALLENGE_LEN: usize = 4096;

impl DigestChallenge {
    /// Parse one `WWW-Authenticate` / `Proxy-Authenticate` value.
    pub fn parse(value: &str) -> Result<DigestChallenge, DigestError> {
        if value.len() > MAX_CHALLENGE_LEN {
            return Err(DigestError::Malformed("too long"));
        }
        let value = value.trim_start_matches([' ', '\t']);
        let scheme_end = value.find([' ', '\t']).unwrap_or(value.len());
        if !value[..scheme_end].eq_ignore_ascii_case("Digest") {
            return Err(DigestError::NotDigest);
        }
        let params = parse_auth_params(&value[scheme_end..])?;
        let get = |name: &str| {
            params
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        };
        let echoed = |name: &'static str| -> Result<Option<String>, DigestError> {
            match get(name) {
                None => Ok(None),
                Some(v) if check_value(v).is_err() => Err(DigestError::Malformed(name)),
                Some(v) => Ok(Some(v.to_owned())),
            }
        };
        let realm = echoed("realm")?.ok_or(DigestError::Missing("realm"))?;
        let nonce = echoed("nonce")?
            .filter(|n| !n.is_empty())
            .ok_or(DigestError::Missing("nonce"))?;
        let opaque = echoed("opaque")?;
        let algorithm = match get("algorithm") {
            None => DigestAlgorithm::Md5,
            Some(a) => DigestAlgorithm::parse(a)
                .ok_or_else(|| DigestError::UnsupportedAlgorithm(a.chars().take(32).collect()))?,
        };
        let qop_auth = match get("qop") {
            None => false,
            Some(list) => {
                if !list
                    .split(',')
                    .any(|q| q.trim().eq_ignore_ascii_case("auth"))
                {
                    return Err(DigestError::UnsupportedQop);
                }
                true
            }
        };
        if !qop_auth && algorithm != DigestAlgorithm::Md5 {
            return Err(DigestError::QopRequired(algorithm.name()));
        }
        let flag = |name: &str| get(name).is_some_and(|s| s.eq_ignore_ascii_case("true"));
        Ok(DigestChallenge {
            realm,
            nonce,
            opaque,
            algorithm,
            qop_auth,
            stale: flag("stale"),
            userhash: flag("userhash"),
        })
    }

    /// RFC 8760 2.4: of several challenges, answer the topmost one we support.
    /// With none supported, the error of the first one (or `NoneSupported`).
    pub fn first_supported<'a>(
        values: impl IntoIterator<Item = &'a str>,
    ) -> Result<DigestChallenge, DigestError> {
        let mut first_err = None;
        for v in values {
            match DigestChallenge::parse(v) {
                Ok(c) => return Ok(c),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        Err(first_err.unwrap_or(DigestError::NoneSupported))
    }

    /// The `Authorization` / `Proxy-Authorization` value for a request. `uri` is the
    /// Request-URI as sent, `cnonce` fresh per challenge, `nc` counts the requests
    /// answered with this nonce, starting at 1.
    pub fn answer(
        &self,
        method: &str,
        uri: &str,
        credentials: &DigestCredentials<'_>,
        cnonce: &str,
        nc: u32,
    ) -> Result<String, DigestError> {
        let username = credentials.username;
        let password = credentials.password;
        if username.is_empty() || check_value(username).is_err() {
            return Err(DigestError::BadInput("username"));
        }
        if check_value(password).is_err() {
            return Err(DigestError::BadInput("password"));
        }
        if method.is_empty() || !method.bytes().all(is_token_char) {
            return Err(DigestError::BadInput("method"));
        }
        if uri.is_empty() || uri.bytes().any(|b| b <= b' ' || b == b'"' || b == 0x7f) {
            return Err(DigestError::BadInput("uri"));
        }
        if self.qop_auth {
            if cnonce.is_empty() || check_value(cnonce).is_err() || cnonce.contains('"') {
                return Err(DigestError::BadInput("cnonce"));
            }
            if nc == 0 {
                return Err(DigestError::BadInput("nc"));
            }
        }
        let alg = self.algorithm;
        let nc_hex = format!("{nc:08x}");
        // RFC 7616 3.4.2: A1 = user:realm:password, or H(that):nonce:cnonce for -sess.
        let mut ha1 = alg.hash(&format!("{username}:{}:{password}", self.realm));
        if alg.is_sess() {
            ha1 = alg.hash(&format!("{ha1}:{}:{cnonce}", self.nonce));
        }
        // RFC 7616 3.4.3 with qop=auth: A2 = method:uri.
        let ha2 = alg.hash(&format!("{method}:{uri}"));
        let response = if self.qop_auth {
            alg.hash(&format!(
                "{ha1}:{}:{nc_hex}:{cnonce}:auth:{ha2}",
                self.nonce
            ))
        } else {
            // RFC 2069 2.1.2.
            alg.hash(&format!("{ha1}:{}:{ha2}", self.nonce))
        };
        // RFC 7616 3.4.4: a hashed username replaces the name sent, not the one in A1.
        let sent_username = if self.userhash {
            alg.hash(&format!("{username}:{}", self.realm))
        } else {
            quote(username)
        };
        let mut out = format!(
            "Digest username=\"{sent_username}\", realm=\"{}\", nonce=\"{}\", uri=\"{}\", response=\"{response}\", algorithm={}",
            quote(&self.realm),
            quote(&self.nonce),
            quote(uri),
            alg.name(),
        );
        if self.qop_auth {
            out.push_str(&format!(
                ", cnonce=\"{}\", qop=auth, nc={nc_hex}",
                quote(cnonce)
            ));
        }
        if let Some(opaque) = &self.opaque {
            out.push_str(&format!(", opaque=\"{}\"", quote(opaque)));
        }
        if self.userhash {
            out.push_str(", userhash=true");
        }
        let line = "Proxy-Authorization".len() + 2 + out.len();
        if line >= MAX_HEADER_LINE {
            return Err(DigestError::TooLong(line));
        }
        Ok(out)
    }
}

/// Parse `challenge` and answer it: the value of the `Authorization` (401) or
/// `Proxy-Authorization` (407) header of the retried request.
pub fn digest_authorization(
    challenge: &str,
    method: &str,
    uri: &str,
    credentials: &DigestCredentials<'_>,
    cnonce: &str,
    nc: u32,
) -> Result<String, DigestError> {
    DigestChallenge::parse(challenge)?.answer(method, uri, credentials, cnonce, nc)
}

/// A quoted-string body: `"` and `\` escaped (RFC 3261 25.1 quoted-pair).
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// `auth-param *(COMMA auth-param)`, `auth-param = token EQUAL (token / quoted-string)`
/// (RFC 3261 25.1). Names are kept as sent; a repeated name is malformed.
pub(super) fn parse_auth_params(s: &str) -> Result<Vec<(String, String)>, DigestError> {
    let b = s.as_bytes();
    let mut i = 0;
    let mut out: Vec<(String, String)> = Vec::new();
    let skip_ws = |i: &mut usize| {
        while *i < b.len() && matches!(b[*i], b' ' | b'\t') {
            *i += 1;
        }
    };
    loop {
        // Empty list elements (`a=b,,c=d`) are allowed by the #rule.
        skip_ws(&mut i);
        while i < b.len() && b[i] == b',' {
            i += 1;
            skip_ws(&mut i);
        }
        if i >= b.len() {
            break;
        }
        let start = i;
        while i < b.len() && is_token_char(b[i]) {
            i += 1;
        }
        if i == start {
            return Err(DigestError::Malformed("parameter name"));
        }
        let name = &s[start..i];
        skip_ws(&mut i);
        if i >= b.len() || b[i] != b'=' {
            return Err(DigestError::Malformed("parameter without value"));
        }
        i += 1;
        skip_ws(&mut i);
        let value = if i < b.len() && b[i] == b'"' {
            i += 1;
            let mut v = Vec::new();
            loop {
                match b.get(i) {
                    None => return Err(DigestError::Malformed("unterminated quoted string")),
                    Some(b'"') => {
                        i += 1;
                        break;
                    }
                    Some(b'\\') => {
                        let escaped = b.get(i + 1).ok_or(DigestError::Malformed("escape"))?;
                        v.push(*escaped);
                        i += 2;
                    }
                    Some(c) => {
                        v.push(*c);
                        i += 1;
                    }
                }
            }
            String::from_utf8(v).map_err(|_| DigestError::Malformed("not UTF-8"))?
        } else {
            let vstart = i;
            while i < b.len() && is_token_char(b[i]) {
                i += 1;
            }
            if i == vstart {
                return Err(DigestError::Malformed("parameter value"));
            }
            s[vstart..i].to_owned()
        };
        if out.iter().any(|(n, _)| n.eq_ignore_ascii_case(name)) {
            return Err(DigestError::Malformed("repeated parameter"));
        }
        out.push((name.to_owned(), value));
        skip_ws(&mut i);
        match b.get(i) {
            None => break,
            Some(b',') => i += 1,
            Some(_) => return Err(DigestError::Malformed("expected a comma")),
        }
    }
    if out.is_empty() {
        return Err(DigestError::Malformed("no parameters"));
    }
    Ok(out)
}
