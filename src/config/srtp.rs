//! `srtp = "off" | "optional" | "required"` on a `[[route]]` (the AI agent leg;
//! `caller_srtp`: the caller leg of a call from no trunk), a `[[trunk]]` (the
//! carrier leg) and a `[[transfer.destination]]` (the target leg). What each
//! means for offers and answers is decided in `b2bua::srtp_policy`.

/// SRTP (SDES, RFC 4568) on one leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SrtpPolicy {
    /// Plain RTP only: an `RTP/SAVP` offer is refused with 488; crypto lines
    /// on an `RTP/AVP` offer are ignored (answered plain).
    #[default]
    Off,
    /// SRTP when the peer offers it; handoff's own offers are `RTP/AVP` with
    /// `a=crypto` (best effort: a peer that knows SDES answers with a key, one
    /// that does not answers plain).
    Optional,
    /// SRTP only: a plain offer gets 488, handoff offers `RTP/SAVP`, a plain
    /// answer fails the leg.
    Required,
}

impl SrtpPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            SrtpPolicy::Off => "off",
            SrtpPolicy::Optional => "optional",
            SrtpPolicy::Required => "required",
        }
    }
}

/// A value as written in `config.toml` (`None`: the key is absent: `off`),
/// checked; the error is the problem, the caller adds the key.
pub fn parse(value: Option<&str>) -> Result<SrtpPolicy, String> {
    match value {
        None | Some("off") => Ok(SrtpPolicy::Off),
        Some("optional") => Ok(SrtpPolicy::Optional),
        Some("required") => Ok(SrtpPolicy::Required),
        Some(other) => Err(format!(
            "{:?} is not \"off\", \"optional\" or \"required\"",
            other.chars().take(32).collect::<String>()
        )),
    }
}

/// Every `srtp` key of a configuration and its value as written.
pub fn keys(cfg: &super::Config) -> Vec<(String, Option<&str>)> {
    let mut out = Vec::new();
    for (i, r) in cfg.routes.iter().enumerate() {
        out.push((format!("route[{i}].srtp"), r.srtp.as_deref()));
        out.push((format!("route[{i}].caller_srtp"), r.caller_srtp.as_deref()));
    }
    for (i, t) in cfg.trunks.iter().enumerate() {
        out.push((format!("trunk[{i}].srtp"), t.srtp.as_deref()));
    }
    for (i, d) in cfg.transfer.destination.iter().enumerate() {
        out.push((format!("transfer.destination[{i}].srtp"), d.srtp.as_deref()));
    }
    out
}

/// SRTP is terminated by the media relay: with `media.mode = "passthrough"`
/// (no relay) a policy other than `off` cannot be kept. The error names the key.
pub fn check_relay(relay: bool, keys: &[(String, Option<&str>)]) -> Result<(), (String, String)> {
    if relay {
        return Ok(());
    }
    match keys
        .iter()
        .find(|(_, v)| !matches!(parse(*v), Ok(SrtpPolicy::Off)))
    {
        Some((key, _)) => Err((
            key.clone(),
            "needs media.mode = \"relay\": handoff's relay encrypts and decrypts SRTP".into(),
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn srtp_without_the_relay_is_refused_naming_the_key() {
        let keys = vec![
            ("route[0].srtp".to_owned(), Some("off")),
            ("trunk[1].srtp".to_owned(), Some("required")),
        ];
        assert_eq!(check_relay(true, &keys), Ok(()));
        let (key, problem) = check_relay(false, &keys).expect_err("passthrough");
        assert_eq!(key, "trunk[1].srtp");
        assert!(problem.contains("media.mode"), "{problem}");
        assert_eq!(check_relay(false, &keys[..1]), Ok(()));
    }

    #[test]
    fn the_three_values_parse_and_absent_is_off() {
        assert_eq!(parse(None), Ok(SrtpPolicy::Off));
        assert_eq!(parse(Some("off")), Ok(SrtpPolicy::Off));
        assert_eq!(parse(Some("optional")), Ok(SrtpPolicy::Optional));
        assert_eq!(parse(Some("required")), Ok(SrtpPolicy::Required));
    }

    #[test]
    fn anything_else_is_refused_with_the_choices() {
        for v in ["", "on", "Required", "true", "sdes"] {
            let e = parse(Some(v)).expect_err(v);
            assert!(e.contains("\"required\""), "{e}");
        }
    }
}
