//! The voice-prefetch webhook's body: the fields handoff reads, each at most once.

use crate::e164::normalize_e164;
use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::{Map, Value};

/// A webhook body, validated: the ticket id and the phones to try, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrefetchRequest {
    pub ticket_id: u64,
    /// E.164; `caller_phone` first, then `requester_phone`, without repeats.
    pub phones: Vec<String>,
}

/// Why a webhook body was refused (400); each names its field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrefetchBodyError {
    #[error("body is not a JSON object")]
    NotJson,
    #[error("ticket_id is missing")]
    MissingTicketId,
    #[error("ticket_id must be a positive whole number or a string of digits")]
    BadTicketId,
    #[error("{0} must be a string")]
    NotAString(&'static str),
    #[error("{0} is not a phone number")]
    BadPhone(&'static str),
    #[error("caller_phone and requester_phone are both blank: one of them is required")]
    NoPhone,
    /// serde_json lets the last of repeated keys win: an unescaped subject could
    /// then move a stamp to another caller.
    #[error("{0} appears more than once in the body")]
    DuplicateKey(&'static str),
}

impl PrefetchBodyError {
    pub fn field(&self) -> &'static str {
        match self {
            PrefetchBodyError::NotJson => "body",
            PrefetchBodyError::MissingTicketId | PrefetchBodyError::BadTicketId => "ticket_id",
            PrefetchBodyError::NotAString(f)
            | PrefetchBodyError::BadPhone(f)
            | PrefetchBodyError::DuplicateKey(f) => f,
            PrefetchBodyError::NoPhone => "caller_phone",
        }
    }
}

/// The fields handoff reads from a webhook body.
const FIELDS: [&str; 3] = ["ticket_id", "caller_phone", "requester_phone"];

/// A body's JSON object, keeping only [`FIELDS`], each at most once: the first
/// key seen twice is recorded (the whole object is still read, so that a syntax
/// error after it is still one).
#[derive(Debug, Default)]
struct Fields {
    values: Map<String, Value>,
    duplicate: Option<&'static str>,
}

impl<'de> Deserialize<'de> for Fields {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Fields, D::Error> {
        struct FieldsVisitor;
        impl<'de> Visitor<'de> for FieldsVisitor {
            type Value = Fields;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields, A::Error> {
                let mut out = Fields::default();
                let mut seen = [false; FIELDS.len()];
                // Keys are compared unescaped: "ticket\u005fid" is ticket_id.
                while let Some(key) = map.next_key::<String>()? {
                    match FIELDS.iter().position(|f| *f == key) {
                        Some(i) if seen[i] => {
                            out.duplicate = out.duplicate.or(Some(FIELDS[i]));
                            map.next_value::<IgnoredAny>()?;
                        }
                        Some(i) => {
                            seen[i] = true;
                            out.values.insert(key, map.next_value::<Value>()?);
                        }
                        None => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(out)
            }
        }
        d.deserialize_map(FieldsVisitor)
    }
}

/// Validate a webhook body. Zendesk does not JSON-escape placeholders, so a subject
/// with a quote or a line break makes the body invalid JSON: then the three fields we
/// need are read from the text as long as they themselves are plain. A field given
/// twice is refused either way.
pub fn parse_prefetch_body(
    body: &[u8],
    default_country: Option<&str>,
) -> Result<PrefetchRequest, PrefetchBodyError> {
    let fields = match serde_json::from_slice::<Fields>(body) {
        Ok(Fields {
            duplicate: Some(key),
            ..
        }) => return Err(PrefetchBodyError::DuplicateKey(key)),
        Ok(f) => f.values,
        // Valid JSON that is not an object.
        Err(e) if e.classify() == serde_json::error::Category::Data => {
            return Err(PrefetchBodyError::NotJson)
        }
        Err(_) => salvage(body)?,
    };
    let ticket_id = ticket_id(fields.get("ticket_id"))?;
    let mut phones = Vec::new();
    let mut bad = None;
    for field in ["caller_phone", "requester_phone"] {
        let raw = match fields.get(field) {
            None | Some(Value::Null) => continue,
            Some(Value::String(s)) => s.trim(),
            Some(_) => return Err(PrefetchBodyError::NotAString(field)),
        };
        if raw.is_empty() {
            continue;
        }
        match normalize_e164(raw, default_country) {
            Some(p) if !phones.contains(&p) => phones.push(p),
            Some(_) => {}
            // An unusable phone is an error only when the other one cannot stand in.
            None => bad = bad.or(Some(field)),
        }
    }
    match (phones.is_empty(), bad) {
        (false, _) => Ok(PrefetchRequest { ticket_id, phones }),
        (true, Some(field)) => Err(PrefetchBodyError::BadPhone(field)),
        (true, None) => Err(PrefetchBodyError::NoPhone),
    }
}

/// A JSON number or a string of 1-20 ASCII digits, as a positive u64.
fn ticket_id(v: Option<&Value>) -> Result<u64, PrefetchBodyError> {
    let id = match v {
        None | Some(Value::Null) => return Err(PrefetchBodyError::MissingTicketId),
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) if (1..=20).contains(&s.len()) => s
            .bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| s.parse::<u64>().ok())
            .flatten(),
        Some(_) => None,
    };
    id.filter(|&n| n > 0).ok_or(PrefetchBodyError::BadTicketId)
}

/// The fields we need from a body that is not valid JSON: each `"key": value` where
/// the value is a bare word or a string without escapes. Text is all there is to
/// go by here, so a key written twice as `"key":` is a duplicate.
fn salvage(body: &[u8]) -> Result<Map<String, Value>, PrefetchBodyError> {
    let text = std::str::from_utf8(body).map_err(|_| PrefetchBodyError::NotJson)?;
    let mut map = Map::new();
    for key in FIELDS {
        let at = key_positions(text, key);
        let Some(&first) = at.first() else { continue };
        if at.len() > 1 {
            return Err(PrefetchBodyError::DuplicateKey(key));
        }
        if let Some(v) = raw_value(&text[first..]) {
            map.insert(key.into(), v);
        }
    }
    if map.contains_key("ticket_id") {
        Ok(map)
    } else {
        Err(PrefetchBodyError::NotJson)
    }
}

/// Where the value of each `"key":` in `text` starts (after the colon).
fn key_positions(text: &str, key: &str) -> Vec<usize> {
    let quoted = format!("\"{key}\"");
    text.match_indices(&quoted)
        .filter_map(|(at, _)| {
            let rest = &text[at + quoted.len()..];
            let value = rest.trim_start().strip_prefix(':')?;
            Some(text.len() - value.len())
        })
        .collect()
}

fn raw_value(rest: &str) -> Option<Value> {
    let rest = rest.trim_start();
    if let Some(s) = rest.strip_prefix('"') {
        let end = s.find('"')?;
        let value = &s[..end];
        return (!value.contains('\\')).then(|| Value::String(value.to_owned()));
    }
    let end = rest
        .find(|c: char| c == ',' || c == '}' || c.is_whitespace())
        .unwrap_or(rest.len());
    let word = &rest[..end];
    Some(serde_json::from_str(word).unwrap_or_else(|_| Value::String(word.to_owned())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<PrefetchRequest, PrefetchBodyError> {
        parse_prefetch_body(body.as_bytes(), Some("US"))
    }

    #[test]
    fn zendesk_body_with_number_or_digit_string_ticket() {
        let r = parse(
            r#"{"ticket_id": 123, "caller_phone": "(415) 555-1212", "requester_phone": "+14155550000", "subject": "Call"}"#,
        );
        assert_eq!(
            r,
            Ok(PrefetchRequest {
                ticket_id: 123,
                phones: vec!["+14155551212".into(), "+14155550000".into()]
            })
        );
        let r =
            parse(r#"{"ticket_id": "456", "caller_phone": "", "requester_phone": "+14155550000"}"#);
        assert_eq!(
            r.map(|r| (r.ticket_id, r.phones)),
            Ok((456, vec!["+14155550000".into()]))
        );
    }

    #[test]
    fn bad_ticket_ids_name_the_field() {
        for t in [
            r#""12\r\n34""#,
            r#""12a""#,
            r#""abc""#,
            "-5",
            "0",
            "1.5",
            r#""-5""#,
            "18446744073709551616",
            r#""18446744073709551616""#,
            r#""""#,
            "true",
            "[1]",
        ] {
            let body = format!(r#"{{"ticket_id": {t}, "caller_phone": "+14155551212"}}"#);
            let e = parse(&body).expect_err(t);
            assert_eq!(e, PrefetchBodyError::BadTicketId, "{t}");
            assert_eq!(e.field(), "ticket_id");
        }
        assert_eq!(
            parse(r#"{"caller_phone": "+14155551212"}"#),
            Err(PrefetchBodyError::MissingTicketId)
        );
    }

    #[test]
    fn phones_blank_bad_or_of_wrong_type() {
        let e =
            parse(r#"{"ticket_id": 1, "caller_phone": " ", "requester_phone": ""}"#).unwrap_err();
        assert_eq!(e, PrefetchBodyError::NoPhone);
        assert!(e.to_string().contains("requester_phone"));
        assert_eq!(
            parse(r#"{"ticket_id": 1}"#),
            Err(PrefetchBodyError::NoPhone)
        );
        assert_eq!(
            parse(r#"{"ticket_id": 1, "caller_phone": "call me\r\n"}"#),
            Err(PrefetchBodyError::BadPhone("caller_phone"))
        );
        assert_eq!(
            parse(r#"{"ticket_id": 1, "caller_phone": 4155551212}"#),
            Err(PrefetchBodyError::NotAString("caller_phone"))
        );
        // A bad caller phone is not fatal when the requester phone stands in.
        assert_eq!(
            parse(r#"{"ticket_id": 1, "caller_phone": "anonymous", "requester_phone": "+14155550000"}"#)
                .map(|r| r.phones),
            Ok(vec!["+14155550000".into()])
        );
        assert_eq!(parse("[1]"), Err(PrefetchBodyError::NotJson));
        assert_eq!(parse("nonsense"), Err(PrefetchBodyError::NotJson));
    }

    #[test]
    fn unescaped_subject_does_not_lose_the_stamp() {
        let body = "{\n  \"ticket_id\": 789,\n  \"caller_phone\": \"+14155551212\",\n  \"requester_phone\": \"\",\n  \"subject\": \"Call from \"Bob\"\r\n\"\n}";
        assert!(serde_json::from_str::<Value>(body).is_err());
        assert_eq!(
            parse(body),
            Ok(PrefetchRequest {
                ticket_id: 789,
                phones: vec!["+14155551212".into()]
            })
        );
        let bad =
            "{\"ticket_id\": 78x9, \"caller_phone\": \"+14155551212\", \"subject\": \"a\"b\"}";
        assert_eq!(parse(bad), Err(PrefetchBodyError::BadTicketId));
    }
}

#[cfg(test)]
mod duplicate_tests {
    use super::*;

    fn parse(body: &str) -> Result<PrefetchRequest, PrefetchBodyError> {
        parse_prefetch_body(body.as_bytes(), Some("US"))
    }

    #[test]
    fn a_field_given_twice_is_refused_naming_it() {
        // An unescaped title that makes valid JSON with a second caller_phone:
        // serde_json alone would let the victim's number win.
        let title = r#"x", "caller_phone": "+14155559999"#;
        let body = format!(
            r#"{{"ticket_id": 1, "caller_phone": "+14155551212", "requester_phone": "", "subject": "{title}"}}"#
        );
        assert_eq!(
            parse(&body),
            Err(PrefetchBodyError::DuplicateKey("caller_phone"))
        );
        assert_eq!(
            PrefetchBodyError::DuplicateKey("caller_phone").field(),
            "caller_phone"
        );
        for (body, key) in [
            (
                r#"{"ticket_id": 1, "ticket_id": 2, "caller_phone": "+14155551212"}"#,
                "ticket_id",
            ),
            (
                r#"{"ticket_id": 1, "requester_phone": "", "requester_phone": "+14155551212"}"#,
                "requester_phone",
            ),
            // The same key written with an escape is the same key.
            (
                r#"{"ticket_id": 1, "caller_phone": "+14155551212", "caller\u005fphone": "+14155559999"}"#,
                "caller_phone",
            ),
            // Null twice is still twice.
            (
                r#"{"ticket_id": 1, "caller_phone": null, "caller_phone": "+14155559999"}"#,
                "caller_phone",
            ),
        ] {
            assert_eq!(
                parse(body),
                Err(PrefetchBodyError::DuplicateKey(key)),
                "{body}"
            );
        }
    }

    #[test]
    fn repeated_fields_handoff_does_not_read_are_fine() {
        let body = r#"{"ticket_id": 1, "caller_phone": "+14155551212", "subject": "a", "subject": "b", "nested": {"caller_phone": "+14155559999"}}"#;
        assert_eq!(
            parse(body).map(|r| r.phones),
            Ok(vec!["+14155551212".into()])
        );
    }

    #[test]
    fn a_duplicate_in_a_body_that_is_not_json_is_refused_too() {
        let body = "{\"ticket_id\": 1, \"caller_phone\": \"+14155551212\", \"subject\": \"a\"b\", \"caller_phone\" : \"+14155559999\"}";
        assert!(serde_json::from_str::<Value>(body).is_err());
        assert_eq!(
            parse(body),
            Err(PrefetchBodyError::DuplicateKey("caller_phone"))
        );
        // A key named in the free text without the colon is not a key.
        let body = "{\"ticket_id\": 1, \"caller_phone\": \"+14155551212\", \"subject\": \"about \"caller_phone\" \"}";
        assert_eq!(
            parse(body).map(|r| r.phones),
            Ok(vec!["+14155551212".into()])
        );
    }
}
