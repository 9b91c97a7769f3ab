//! The `custom_data` a call brings with it: the trunk's `X-` headers (prefix
//! stripped) and the values of `X-OPENCX-SESSION-CUSTOM-DATA`.
//!
//! `X-OPENCX-SESSION-CUSTOM-DATA` is URL-encoded, like an HTML form:
//! `plan=gold&ref=A%2F17&note=call+back` (`+` is a space, `%XX` a byte of UTF-8).
//! It fits a SIP header as it is, where JSON's quotes and commas get mangled by
//! proxies. A value that looks like JSON (`{...}` or `[...]`), or that does not
//! decode, is refused as a whole: logged, counted in
//! `handoff_events_custom_data_rejected_total`, and the call goes on without it.
//!
//! Keys are 1-64 token characters, values at most 1024 characters without
//! control characters, at most 64 entries: the limits of the session API's
//! `custom_data`, which merges on top later.

use crate::metrics::Metrics;
use crate::sip::message::{is_token_char, Message};
use std::collections::BTreeMap;

pub const CUSTOM_DATA_HEADER: &str = "X-OPENCX-SESSION-CUSTOM-DATA";
const OPENCX_PREFIX: &str = "X-OPENCX-";
pub const MAX_KEY: usize = 64;
pub const MAX_VALUE: usize = 1024;
pub const MAX_ENTRIES: usize = 64;

/// Why (part of) the inbound custom data was left out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CustomDataError {
    #[error("X-OPENCX-SESSION-CUSTOM-DATA looks like JSON; it must be URL-encoded (k=v&k2=v2)")]
    Json,
    #[error("X-OPENCX-SESSION-CUSTOM-DATA does not decode as UTF-8 URL-encoding")]
    Encoding,
    #[error("custom data key {0:?} must be 1-{MAX_KEY} token characters")]
    Key(String),
    #[error("custom data value of {0:?} is over {MAX_VALUE} characters or has control characters")]
    Value(String),
    #[error("more than {MAX_ENTRIES} custom data entries; the rest are left out")]
    TooMany,
}

/// What the INVITE brought, and what of it was refused.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InboundCustomData {
    pub values: BTreeMap<String, String>,
    pub problems: Vec<CustomDataError>,
}

/// Read the INVITE's custom data (before its `X-OPENCX-*` headers are stripped),
/// log and count what is refused. Never fails the call.
pub fn from_invite_logged(invite: &Message, metrics: &Metrics) -> BTreeMap<String, String> {
    let got = from_invite(invite);
    for p in &got.problems {
        tracing::warn!(problem = %p, "inbound custom data left out");
        Metrics::inc(&metrics.events.custom_data_rejected_total);
    }
    got.values
}

/// The pure part of [`from_invite_logged`]: the trunk's `X-` headers other than
/// `X-OPENCX-*` with the prefix stripped, then the custom-data header's values
/// (which win on a clash).
pub fn from_invite(invite: &Message) -> InboundCustomData {
    let mut out = InboundCustomData::default();
    let mut pairs: Vec<(String, String)> = Vec::new();
    let mut header_values = Vec::new();
    for h in invite.headers() {
        let name = h.name().as_str();
        if name.eq_ignore_ascii_case(CUSTOM_DATA_HEADER) {
            header_values.push(h.value());
            continue;
        }
        let is_x = name.len() > 2 && name[..2].eq_ignore_ascii_case("X-");
        let is_opencx = name.len() >= OPENCX_PREFIX.len()
            && name[..OPENCX_PREFIX.len()].eq_ignore_ascii_case(OPENCX_PREFIX);
        if is_x && !is_opencx {
            pairs.push((name[2..].to_owned(), h.value().to_owned()));
        }
    }
    for value in header_values {
        match parse_header(value) {
            Ok(mut p) => pairs.append(&mut p),
            Err(e) => out.problems.push(e),
        }
    }
    for (k, v) in pairs {
        if let Err(e) = check_pair(&k, &v) {
            out.problems.push(e);
            continue;
        }
        if out.values.len() >= MAX_ENTRIES && !out.values.contains_key(&k) {
            if !out.problems.contains(&CustomDataError::TooMany) {
                out.problems.push(CustomDataError::TooMany);
            }
            continue;
        }
        out.values.insert(k, v);
    }
    out
}

/// One `X-OPENCX-SESSION-CUSTOM-DATA` value: `k=v&k2=v2`, form-encoded. All or
/// nothing: any bad part refuses the whole header.
pub fn parse_header(value: &str) -> Result<Vec<(String, String)>, CustomDataError> {
    let value = value.trim();
    if value.starts_with('{') || value.starts_with('[') {
        return Err(CustomDataError::Json);
    }
    let mut out = Vec::new();
    for part in value.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        let (k, v) = (decode(k)?, decode(v)?);
        check_pair(&k, &v)?;
        out.push((k, v));
    }
    Ok(out)
}

fn decode(s: &str) -> Result<String, CustomDataError> {
    let spaced = s.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| CustomDataError::Encoding)
}

fn check_pair(k: &str, v: &str) -> Result<(), CustomDataError> {
    if k.is_empty() || k.len() > MAX_KEY || !k.bytes().all(is_token_char) {
        return Err(CustomDataError::Key(k.chars().take(MAX_KEY).collect()));
    }
    if v.chars().count() > MAX_VALUE || v.chars().any(char::is_control) {
        return Err(CustomDataError::Value(k.to_owned()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::parse;

    fn invite(extra: &str) -> Message {
        let text = format!(
            "INVITE sip:+18005550100@h SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1\r\n\
             From: <sip:a@b>;tag=1\r\nTo: <sip:+18005550100@h>\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\n\
             Max-Forwards: 70\r\n{extra}Content-Length: 0\r\n\r\n"
        );
        parse(bytes::Bytes::from(text)).expect("parses")
    }

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn x_headers_lose_their_prefix_and_opencx_ones_are_skipped() {
        let got = from_invite(&invite(
            "X-Campaign: spring\r\nx-lower: yes\r\nX-OPENCX-AGENT-ID: spoofed\r\nSubject: no\r\n",
        ));
        assert_eq!(got.values, map(&[("Campaign", "spring"), ("lower", "yes")]));
        assert!(got.problems.is_empty());
    }

    #[test]
    fn url_encoded_custom_data_is_decoded_and_wins_over_headers() {
        let got = from_invite(&invite(
            "X-plan: silver\r\nX-OPENCX-SESSION-CUSTOM-DATA: plan=gold&ref=A%2F17&note=call+back&flag\r\n",
        ));
        assert_eq!(
            got.values,
            map(&[
                ("plan", "gold"),
                ("ref", "A/17"),
                ("note", "call back"),
                ("flag", "")
            ])
        );
    }

    #[test]
    fn json_custom_data_is_refused_cleanly_and_the_rest_stays() {
        let got = from_invite(&invite(
            "X-Campaign: spring\r\nX-OPENCX-SESSION-CUSTOM-DATA: {\"plan\": \"gold\"}\r\n",
        ));
        assert_eq!(got.values, map(&[("Campaign", "spring")]));
        assert_eq!(got.problems, vec![CustomDataError::Json]);
        assert_eq!(parse_header(" [1,2]"), Err(CustomDataError::Json));
    }

    #[test]
    fn bad_encodings_keys_and_values_refuse_the_header() {
        assert_eq!(parse_header("a=%FF"), Err(CustomDataError::Encoding));
        assert_eq!(
            parse_header("ok=1&bad%20key=2"),
            Err(CustomDataError::Key("bad key".into()))
        );
        assert_eq!(
            parse_header("k=line%0Abreak"),
            Err(CustomDataError::Value("k".into()))
        );
        assert_eq!(parse_header(""), Ok(vec![]));
        let long = format!("k={}", "v".repeat(MAX_VALUE + 1));
        assert_eq!(parse_header(&long), Err(CustomDataError::Value("k".into())));
    }

    #[test]
    fn entries_are_bounded() {
        let pairs: Vec<String> = (0..MAX_ENTRIES + 5).map(|i| format!("k{i}={i}")).collect();
        let got = from_invite(&invite(&format!(
            "X-OPENCX-SESSION-CUSTOM-DATA: {}\r\n",
            pairs.join("&")
        )));
        assert_eq!(got.values.len(), MAX_ENTRIES);
        assert_eq!(got.problems, vec![CustomDataError::TooMany]);
    }
}
