//! Who may call the sidecar: the webhook-URL token (HS256 JWT in the path), the
//! dashboard JWT, and Zendesk's webhook signature. Pure functions; the handlers only
//! pass them headers and bytes.

use crate::config::{RevokedToken, Secret, SigningKey};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::time::Duration;

/// The `aud` claim of every webhook-URL token.
pub const PREFETCH_AUDIENCE: &str = "voice-prefetch";

/// Longest token looked at; real ones are a few hundred bytes.
const MAX_TOKEN_LEN: usize = 4096;

/// Seconds of clock skew allowed on `exp`.
const LEEWAY_SECS: u64 = 5;

/// Why a JWT was refused. The messages never contain the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token is not a well-formed JWT")]
    Malformed,
    #[error("token algorithm is not HS256")]
    Algorithm,
    #[error("token header names no key id (kid)")]
    NoKeyId,
    #[error("token key id is not a configured signing key")]
    UnknownKeyId,
    #[error("token signature does not verify")]
    Signature,
    #[error("token has expired")]
    Expired,
    #[error("token has been revoked ([[http.revoked_tokens]])")]
    Revoked,
    #[error("token audience is not {PREFETCH_AUDIENCE}")]
    Audience,
    #[error("token issuer does not match its key")]
    Issuer,
    #[error("token org_id is missing or not 1-128 token characters")]
    OrgId,
    #[error("cannot sign a token: {0}")]
    Sign(String),
}

/// Claims of a webhook-URL token as minted.
#[derive(Debug, Serialize)]
struct PrefetchClaims<'a> {
    iss: &'a str,
    aud: &'a str,
    org_id: &'a str,
    iat: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    exp: Option<u64>,
    jti: String,
}

/// Claims read back; `aud` and `iss` are checked by the validation.
#[derive(Debug, Deserialize)]
struct OrgClaims {
    org_id: Option<String>,
    iat: Option<u64>,
    /// Tokens minted before ids were added have none; a dashboard JWT's may be of
    /// any type (it is not read).
    jti: Option<serde_json::Value>,
}

/// A webhook-URL token that verified: whose it is and what identifies it for
/// revocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrefetchToken {
    pub org_id: String,
    pub iat: u64,
    pub jti: Option<String>,
}

/// An org id as routes have them: 1-128 SIP token characters.
pub fn valid_org_id(org: &str) -> bool {
    (1..=128).contains(&org.len()) && org.bytes().all(crate::sip::message::is_token_char)
}

/// Mint a webhook-URL token for `org_id` with `key` (HS256, `kid` in the header),
/// with `iat`, a random `jti` (128 bits, hex) and, given a lifetime, `exp`.
pub fn mint_prefetch_token(
    key: &SigningKey,
    org_id: &str,
    now_unix: u64,
    ttl: Option<Duration>,
) -> Result<String, TokenError> {
    if !valid_org_id(org_id) {
        return Err(TokenError::OrgId);
    }
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(key.kid.clone());
    let claims = PrefetchClaims {
        iss: &key.issuer,
        aud: PREFETCH_AUDIENCE,
        org_id,
        iat: now_unix,
        exp: ttl.map(|t| now_unix.saturating_add(t.as_secs())),
        jti: format!("{:032x}", rand::random::<u128>()),
    };
    jsonwebtoken::encode(
        &header,
        &claims,
        &EncodingKey::from_secret(key.secret.expose().as_bytes()),
    )
    .map_err(|e| TokenError::Sign(e.to_string()))
}

/// The `jti` and `exp` of a token just minted, read back without verifying (to
/// tell the operator what identifies it): None when it lacks either.
pub fn minted_id_and_expiry(token: &str) -> Option<(String, u64)> {
    let claims = token.split('.').nth(1)?;
    let claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(claims).ok()?).ok()?;
    Some((claims["jti"].as_str()?.to_owned(), claims["exp"].as_u64()?))
}

/// The JOSE header, read before any key is chosen: the algorithm is pinned to HS256
/// here, so `none` and every other algorithm are refused whatever the library does.
pub(super) fn pinned_header_kid(token: &str) -> Result<Option<String>, TokenError> {
    if token.len() > MAX_TOKEN_LEN || token.split('.').count() != 3 {
        return Err(TokenError::Malformed);
    }
    let head = token.split('.').next().ok_or(TokenError::Malformed)?;
    let bytes = URL_SAFE_NO_PAD
        .decode(head)
        .map_err(|_| TokenError::Malformed)?;
    let value: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|_| TokenError::Malformed)?;
    if value.get("alg").and_then(|a| a.as_str()) != Some("HS256") {
        return Err(TokenError::Algorithm);
    }
    match value.get("kid") {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(k)) => Ok(Some(k.clone())),
        Some(_) => Err(TokenError::Malformed),
    }
}

fn map_jwt_error(e: jsonwebtoken::errors::Error) -> TokenError {
    match e.kind() {
        ErrorKind::InvalidSignature => TokenError::Signature,
        ErrorKind::ExpiredSignature => TokenError::Expired,
        ErrorKind::InvalidAudience => TokenError::Audience,
        ErrorKind::InvalidIssuer => TokenError::Issuer,
        ErrorKind::InvalidAlgorithm => TokenError::Algorithm,
        ErrorKind::MissingRequiredClaim(c) if c == "aud" => TokenError::Audience,
        ErrorKind::MissingRequiredClaim(c) if c == "iss" => TokenError::Issuer,
        _ => TokenError::Malformed,
    }
}

fn hs256_validation() -> Validation {
    let mut v = Validation::new(Algorithm::HS256);
    v.algorithms = vec![Algorithm::HS256];
    v.leeway = LEEWAY_SECS;
    v.validate_exp = true;
    v.required_spec_claims.clear();
    v
}

/// Check a webhook-URL token against the configured keys; returns its org id.
/// The key is chosen by `kid`, so a URL stays valid while its key is configured.
pub fn verify_prefetch_token(token: &str, keys: &[SigningKey]) -> Result<String, TokenError> {
    verify_prefetch_claims(token, keys).map(|t| t.org_id)
}

/// The same, refusing a token that `revoked` names.
pub fn verify_unrevoked_prefetch_token(
    token: &str,
    keys: &[SigningKey],
    revoked: &[RevokedToken],
) -> Result<PrefetchToken, TokenError> {
    let t = verify_prefetch_claims(token, keys)?;
    if revoked
        .iter()
        .any(|r| r.revokes(&t.org_id, t.iat, t.jti.as_deref()))
    {
        return Err(TokenError::Revoked);
    }
    Ok(t)
}

/// Check a webhook-URL token; returns its org id, `iat` and `jti`.
pub fn verify_prefetch_claims(
    token: &str,
    keys: &[SigningKey],
) -> Result<PrefetchToken, TokenError> {
    let kid = pinned_header_kid(token)?.ok_or(TokenError::NoKeyId)?;
    let key = keys
        .iter()
        .find(|k| k.kid == kid)
        .ok_or(TokenError::UnknownKeyId)?;
    let mut v = hs256_validation();
    v.set_audience(&[PREFETCH_AUDIENCE]);
    v.set_issuer(&[key.issuer.as_str()]);
    v.set_required_spec_claims(&["aud", "iss"]);
    let data = jsonwebtoken::decode::<OrgClaims>(
        token,
        &DecodingKey::from_secret(key.secret.expose().as_bytes()),
        &v,
    )
    .map_err(map_jwt_error)?;
    let iat = data.claims.iat.ok_or(TokenError::Malformed)?;
    let jti = match data.claims.jti {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(j))
            if (1..=128).contains(&j.len()) && j.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            Some(j)
        }
        Some(_) => return Err(TokenError::Malformed),
    };
    Ok(PrefetchToken {
        org_id: checked_org(data.claims.org_id)?,
        iat,
        jti,
    })
}

// The dashboard JWT is checked in `super::dashboard_jwt`.

fn checked_org(org: Option<String>) -> Result<String, TokenError> {
    org.filter(|o| valid_org_id(o)).ok_or(TokenError::OrgId)
}

/// The credentials of `Authorization: Bearer <credentials>`.
pub fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, rest) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| rest.trim())
        .filter(|t| !t.is_empty())
}

/// Constant-time comparison of a presented API key with the configured one.
pub fn api_key_matches(presented: &str, configured: &Secret) -> bool {
    use subtle::ConstantTimeEq;
    presented
        .as_bytes()
        .ct_eq(configured.expose().as_bytes())
        .into()
}

/// Why a Zendesk webhook signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("X-Zendesk-Webhook-Signature header is missing")]
    MissingSignature,
    #[error("X-Zendesk-Webhook-Signature-Timestamp header is missing")]
    MissingTimestamp,
    #[error("X-Zendesk-Webhook-Signature-Timestamp is not an ISO 8601 date-time")]
    BadTimestamp,
    #[error("X-Zendesk-Webhook-Signature-Timestamp is outside the allowed age")]
    Stale,
    #[error("X-Zendesk-Webhook-Signature does not match the body")]
    Mismatch,
}

/// The 32 bytes of a presented Zendesk signature (base64), the replay guard's key.
pub fn signature_bytes(signature: &str) -> Option<[u8; 32]> {
    STANDARD.decode(signature.trim()).ok()?.try_into().ok()
}

/// base64(HMAC-SHA256(secret, timestamp + body)), as Zendesk signs a webhook. The
/// secret is used as given, not base64-decoded.
pub fn zendesk_signature(secret: &str, timestamp: &str, body: &[u8]) -> String {
    STANDARD.encode(zendesk_mac(secret, timestamp, body).finalize().into_bytes())
}

fn zendesk_mac(secret: &str, timestamp: &str, body: &[u8]) -> Hmac<Sha256> {
    // HMAC takes a key of any length; `new_from_slice` cannot fail for it.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    mac.update(timestamp.as_bytes());
    mac.update(body);
    mac
}

/// Check a Zendesk webhook signature: present, fresh within `max_age` either way
/// of `now_unix`, and equal (in constant time) to the one computed over the body.
pub fn verify_zendesk_signature(
    secret: &str,
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now_unix: i64,
    max_age: Duration,
) -> Result<(), SignatureError> {
    let signature = signature.ok_or(SignatureError::MissingSignature)?;
    let timestamp = timestamp.ok_or(SignatureError::MissingTimestamp)?;
    let at = parse_iso8601(timestamp).ok_or(SignatureError::BadTimestamp)?;
    let age = now_unix.abs_diff(at);
    if age > max_age.as_secs() {
        return Err(SignatureError::Stale);
    }
    let presented = STANDARD
        .decode(signature.trim())
        .map_err(|_| SignatureError::Mismatch)?;
    zendesk_mac(secret, timestamp, body)
        .verify_slice(&presented)
        .map_err(|_| SignatureError::Mismatch)
}

/// Seconds since the Unix epoch of an ISO 8601 / RFC 3339 date-time:
/// `YYYY-MM-DDTHH:MM:SS`, optional fraction, then `Z` or `±HH:MM` (or `±HHMM`).
pub fn parse_iso8601(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || !b.is_ascii() {
        return None;
    }
    let num = |from: usize, len: usize| -> Option<i64> {
        let part = s.get(from..from + len)?;
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    let sep_ok = b[4] == b'-' && b[7] == b'-' && matches!(b[10], b'T' | b't' | b' ');
    if !sep_ok || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (year, month, day) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    let (hour, min, sec) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || min > 59 || sec > 60 {
        return None;
    }
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        rest = &frac[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let tz = rest[1..].replace(':', "");
            if tz.len() != 4 || !tz.bytes().all(|c| c.is_ascii_digit()) {
                return None;
            }
            let (h, m) = (tz[..2].parse::<i64>().ok()?, tz[2..].parse::<i64>().ok()?);
            if h > 23 || m > 59 {
                return None;
            }
            sign * (h * 3600 + m * 60)
        }
    };
    let days = days_from_civil(year, month, day);
    Some(days * 86_400 + hour * 3600 + min * 60 + sec - offset)
}

/// `YYYY-MM-DDTHH:MM:SSZ` for seconds since the Unix epoch.
pub fn format_iso8601(unix: i64) -> String {
    let (days, secs) = (unix.div_euclid(86_400), unix.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

// Howard Hinnant's days_from_civil / civil_from_days (proleptic Gregorian).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests;
