//! The dashboard JWT of `GET /backend/zendesk-v2/voice-prefetch-url`: HS256 with
//! `http.dashboard_jwt_secret` (the algorithm pinned before any key is used), and
//! claims `exp` (required), `aud` = `http.dashboard_jwt_audience`, `iss` =
//! `http.dashboard_jwt_issuer`, `org_id`; `nbf` honoured, `iat` in the future
//! refused. Pure: the time is passed in.

use crate::config::Secret;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

/// Seconds of clock skew allowed on `exp` and `nbf` (the webhook tokens' leeway).
pub const LEEWAY_SECS: u64 = 5;

/// How far in the future `iat` may be: the dashboard's clock may run a little
/// ahead of ours, but a token "issued" later than that was not issued yet.
pub const IAT_LEEWAY_SECS: u64 = 30;

/// What a dashboard JWT must be: signed with `secret`, for `audience`, by `issuer`.
#[derive(Debug, Clone, Copy)]
pub struct DashboardJwt<'a> {
    pub secret: &'a Secret,
    pub issuer: &'a str,
    pub audience: &'a str,
}

/// Why a dashboard JWT was refused. The messages never contain the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DashboardTokenError {
    #[error("token is not a well-formed JWT")]
    Malformed,
    #[error("token algorithm is not HS256")]
    Algorithm,
    #[error("token signature does not verify")]
    Signature,
    #[error("token has no exp claim: dashboard tokens must expire")]
    NoExpiry,
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet (nbf)")]
    NotYetValid,
    #[error("token iat is in the future")]
    IssuedInFuture,
    #[error("token audience is missing or not the configured one")]
    Audience,
    #[error("token issuer is missing or not the configured one")]
    Issuer,
    #[error("token org_id is missing or not 1-128 token characters")]
    OrgId,
}

impl From<super::auth::TokenError> for DashboardTokenError {
    fn from(e: super::auth::TokenError) -> Self {
        match e {
            super::auth::TokenError::Algorithm => DashboardTokenError::Algorithm,
            _ => DashboardTokenError::Malformed,
        }
    }
}

#[derive(Debug, Deserialize)]
struct Claims {
    org_id: Option<String>,
    exp: Option<u64>,
    nbf: Option<u64>,
    iat: Option<u64>,
    /// Read so that an `iss` that is not one string is malformed, not accepted
    /// (its presence and value are the library's checks).
    #[allow(dead_code)]
    iss: Option<String>,
}

/// The time claims against `now` (seconds since the Unix epoch): `exp` required
/// and not past (with [`LEEWAY_SECS`]), `nbf` not ahead (the same leeway), `iat`
/// not more than [`IAT_LEEWAY_SECS`] ahead.
pub fn check_times(
    exp: Option<u64>,
    nbf: Option<u64>,
    iat: Option<u64>,
    now: u64,
) -> Result<(), DashboardTokenError> {
    let exp = exp.ok_or(DashboardTokenError::NoExpiry)?;
    if exp.saturating_add(LEEWAY_SECS) <= now {
        return Err(DashboardTokenError::Expired);
    }
    if nbf.is_some_and(|nbf| nbf > now.saturating_add(LEEWAY_SECS)) {
        return Err(DashboardTokenError::NotYetValid);
    }
    if iat.is_some_and(|iat| iat > now.saturating_add(IAT_LEEWAY_SECS)) {
        return Err(DashboardTokenError::IssuedInFuture);
    }
    Ok(())
}

fn map_jwt_error(e: jsonwebtoken::errors::Error) -> DashboardTokenError {
    match e.kind() {
        ErrorKind::InvalidSignature => DashboardTokenError::Signature,
        ErrorKind::InvalidAlgorithm => DashboardTokenError::Algorithm,
        ErrorKind::InvalidAudience => DashboardTokenError::Audience,
        ErrorKind::InvalidIssuer => DashboardTokenError::Issuer,
        ErrorKind::MissingRequiredClaim(c) if c == "exp" => DashboardTokenError::NoExpiry,
        ErrorKind::MissingRequiredClaim(c) if c == "aud" => DashboardTokenError::Audience,
        ErrorKind::MissingRequiredClaim(c) if c == "iss" => DashboardTokenError::Issuer,
        _ => DashboardTokenError::Malformed,
    }
}

/// Check a dashboard JWT at `now`; returns its org id.
pub fn verify_dashboard_token(
    token: &str,
    expect: &DashboardJwt<'_>,
    now: u64,
) -> Result<String, DashboardTokenError> {
    // `alg` read from the raw header and pinned to HS256 (none, RS256, a duplicate
    // alg: refused) before the library sees the token.
    super::auth::pinned_header_kid(token)?;
    let mut v = Validation::new(Algorithm::HS256);
    v.algorithms = vec![Algorithm::HS256];
    // The times are checked below against `now`, not the library's clock.
    v.validate_exp = false;
    v.validate_nbf = false;
    v.leeway = 0;
    v.set_audience(&[expect.audience]);
    v.set_issuer(&[expect.issuer]);
    v.set_required_spec_claims(&["exp", "aud", "iss"]);
    let data = jsonwebtoken::decode::<Claims>(
        token,
        &DecodingKey::from_secret(expect.secret.expose().as_bytes()),
        &v,
    )
    .map_err(map_jwt_error)?;
    let c = data.claims;
    check_times(c.exp, c.nbf, c.iat, now)?;
    c.org_id
        .filter(|o| super::auth::valid_org_id(o))
        .ok_or(DashboardTokenError::OrgId)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    use hmac::{Hmac, Mac};
    use serde_json::{json, Value};
    use sha2::Sha256;

    const SECRET: &str = "dashboard-secret-0123456789";
    const NOW: u64 = 1_800_000_000;

    fn token(header: Value, claims: Value, secret: &str) -> String {
        let h = URL_SAFE_NO_PAD.encode(header.to_string());
        let c = URL_SAFE_NO_PAD.encode(claims.to_string());
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(format!("{h}.{c}").as_bytes());
        format!(
            "{h}.{c}.{}",
            URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
        )
    }

    fn claims(extra: Value) -> Value {
        let mut c = json!({"iss": "dash", "aud": "handoff", "org_id": "org-a", "iat": NOW, "exp": NOW + 600});
        for (k, v) in extra.as_object().unwrap() {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        c
    }

    fn verify(claims: Value) -> Result<String, DashboardTokenError> {
        let secret = Secret::new(SECRET);
        let expect = DashboardJwt {
            secret: &secret,
            issuer: "dash",
            audience: "handoff",
        };
        let t = token(json!({"alg": "HS256", "typ": "JWT"}), claims, SECRET);
        verify_dashboard_token(&t, &expect, NOW)
    }

    #[test]
    fn a_good_token_names_its_org() {
        assert_eq!(verify(claims(json!({}))), Ok("org-a".into()));
        // aud may be a list that holds ours (RFC 7519 4.1.3).
        assert_eq!(
            verify(claims(json!({"aud": ["other", "handoff"]}))),
            Ok("org-a".into())
        );
        // nbf now and iat a little ahead (clock skew) are fine.
        assert_eq!(
            verify(claims(json!({"nbf": NOW, "iat": NOW + 20}))),
            Ok("org-a".into())
        );
    }

    #[test]
    fn exp_aud_iss_are_required() {
        use DashboardTokenError::*;
        assert_eq!(verify(claims(json!({"exp": null}))), Err(NoExpiry));
        assert_eq!(verify(claims(json!({"aud": null}))), Err(Audience));
        assert_eq!(verify(claims(json!({"iss": null}))), Err(Issuer));
        assert_eq!(verify(claims(json!({"aud": "other"}))), Err(Audience));
        assert_eq!(verify(claims(json!({"iss": "other"}))), Err(Issuer));
        assert_eq!(verify(claims(json!({"iss": ["dash"]}))), Err(Malformed));
        assert_eq!(verify(claims(json!({"exp": "soon"}))), Err(Malformed));
        assert_eq!(verify(claims(json!({"org_id": null}))), Err(OrgId));
        assert_eq!(verify(claims(json!({"org_id": "a b"}))), Err(OrgId));
    }

    #[test]
    fn times_are_checked_against_now() {
        use DashboardTokenError::*;
        assert_eq!(verify(claims(json!({"exp": NOW - 60}))), Err(Expired));
        assert_eq!(verify(claims(json!({"nbf": NOW + 60}))), Err(NotYetValid));
        assert_eq!(
            verify(claims(json!({"iat": NOW + 31}))),
            Err(IssuedInFuture)
        );
        assert_eq!(check_times(Some(NOW - 4), None, None, NOW), Ok(()));
        assert_eq!(check_times(Some(NOW - 5), None, None, NOW), Err(Expired));
        assert_eq!(check_times(Some(NOW), Some(NOW + 5), None, NOW), Ok(()));
        assert_eq!(check_times(Some(NOW), None, Some(NOW + 30), NOW), Ok(()));
        assert_eq!(check_times(None, None, None, NOW), Err(NoExpiry));
        assert_eq!(check_times(Some(u64::MAX), Some(0), Some(0), NOW), Ok(()));
    }

    #[test]
    fn algorithm_and_signature_are_pinned() {
        use DashboardTokenError::*;
        let secret = Secret::new(SECRET);
        let expect = DashboardJwt {
            secret: &secret,
            issuer: "dash",
            audience: "handoff",
        };
        let c = claims(json!({}));
        let wrong_key = token(json!({"alg": "HS256"}), c.clone(), "not-the-secret-0123456");
        assert_eq!(
            verify_dashboard_token(&wrong_key, &expect, NOW),
            Err(Signature)
        );
        for alg in ["none", "HS512", "RS256"] {
            let t = token(json!({"alg": alg}), c.clone(), SECRET);
            assert_eq!(
                verify_dashboard_token(&t, &expect, NOW),
                Err(Algorithm),
                "{alg}"
            );
        }
        let unsigned = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#),
            URL_SAFE_NO_PAD.encode(c.to_string())
        );
        assert!(verify_dashboard_token(&unsigned, &expect, NOW).is_err());
        assert_eq!(verify_dashboard_token("junk", &expect, NOW), Err(Malformed));
    }
}
