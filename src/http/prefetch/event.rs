//! Zendesk's event-subscription envelope on the voice-prefetch webhook: told from
//! a trigger body by its shape (a top-level `type`), read one key once like the
//! trigger body, and validated field by field. Pure: the handler
//! (`prefetch/subscription.rs`) acts on what this returns.
//!
//! ```json
//! {"type": "zen:event-type:ticket.created", "account_id": 88888888,
//!  "id": "01HN...", "time": "...", "zendesk_event_version": "2022-11-06",
//!  "subject": "zen:ticket:35436", "detail": {"id": "35436", ...}, "event": {...}}
//! ```

use super::super::replay::{ReplayError, ReplayGuard, SignatureKey};
use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// What every Zendesk event type starts with.
pub const EVENT_TYPE_PREFIX: &str = "zen:event-type:";

/// The one event type handoff acts on.
pub const TICKET_CREATED: &str = "zen:event-type:ticket.created";

/// Longest `type`, `id` or invocation id accepted (Zendesk's are ULIDs and short
/// names).
const MAX_ID: usize = 128;

/// A seen event or invocation id is kept about an hour (two windows).
pub const DEDUP_WINDOW_SECS: u64 = 1800;

/// An envelope, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventEnvelope {
    /// `type`, e.g. [`TICKET_CREATED`].
    pub event_type: String,
    pub account_id: u64,
    /// The event's own id.
    pub id: String,
    /// For `ticket.created`: the ticket of `subject` (`zen:ticket:<digits>`).
    pub ticket_id: Option<u64>,
}

/// Why an envelope was refused (400); each names its field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventBodyError {
    #[error("{0} appears more than once in the body")]
    DuplicateKey(&'static str),
    #[error("{0} is missing")]
    Missing(&'static str),
    #[error("{0}: {1}")]
    Bad(&'static str, &'static str),
    #[error("a body with both type (an event envelope) and ticket_id (a trigger body) is neither")]
    Ambiguous,
}

impl EventBodyError {
    pub fn field(&self) -> &'static str {
        match self {
            EventBodyError::DuplicateKey(f)
            | EventBodyError::Missing(f)
            | EventBodyError::Bad(f, _) => f,
            EventBodyError::Ambiguous => "type",
        }
    }
}

const TOP: [&str; 6] = ["type", "account_id", "id", "subject", "detail", "ticket_id"];

/// The top-level keys handoff reads, each once; `detail`'s `id` likewise.
#[derive(Debug, Default)]
struct Top {
    values: [Option<Value>; TOP.len()],
    detail_id: Option<Value>,
    duplicate: Option<&'static str>,
}

#[derive(Debug, Default)]
struct Detail {
    id: Option<Value>,
    duplicate: bool,
}

impl<'de> Deserialize<'de> for Detail {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Detail, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Detail;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Detail, A::Error> {
                let mut out = Detail::default();
                while let Some(key) = map.next_key::<String>()? {
                    if key == "id" {
                        if out.id.is_some() {
                            out.duplicate = true;
                            map.next_value::<IgnoredAny>()?;
                        } else {
                            out.id = Some(map.next_value::<Value>()?);
                        }
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(out)
            }
            // `detail` that is not an object: no id in it.
            fn visit_unit<E>(self) -> Result<Detail, E> {
                Ok(Detail::default())
            }
            fn visit_bool<E>(self, _: bool) -> Result<Detail, E> {
                Ok(Detail::default())
            }
            fn visit_i64<E>(self, _: i64) -> Result<Detail, E> {
                Ok(Detail::default())
            }
            fn visit_u64<E>(self, _: u64) -> Result<Detail, E> {
                Ok(Detail::default())
            }
            fn visit_f64<E>(self, _: f64) -> Result<Detail, E> {
                Ok(Detail::default())
            }
            fn visit_str<E>(self, _: &str) -> Result<Detail, E> {
                Ok(Detail::default())
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Detail, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Detail::default())
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for Top {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Top, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Top;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Top, A::Error> {
                let mut out = Top::default();
                while let Some(key) = map.next_key::<String>()? {
                    let Some(i) = TOP.iter().position(|f| *f == key) else {
                        map.next_value::<IgnoredAny>()?;
                        continue;
                    };
                    if out.values[i].is_some() {
                        out.duplicate = out.duplicate.or(Some(TOP[i]));
                        map.next_value::<IgnoredAny>()?;
                        continue;
                    }
                    if TOP[i] == "detail" {
                        let detail = map.next_value::<Detail>()?;
                        if detail.duplicate {
                            out.duplicate = out.duplicate.or(Some("detail.id"));
                        }
                        out.detail_id = detail.id;
                        out.values[i] = Some(Value::Bool(true));
                    } else {
                        out.values[i] = Some(map.next_value::<Value>()?);
                    }
                }
                Ok(out)
            }
        }
        d.deserialize_map(V)
    }
}

impl Top {
    fn get(&self, key: &str) -> Option<&Value> {
        let i = TOP.iter().position(|f| *f == key)?;
        self.values[i].as_ref().filter(|v| !v.is_null())
    }

    fn has(&self, key: &str) -> bool {
        TOP.iter()
            .position(|f| *f == key)
            .is_some_and(|i| self.values[i].is_some())
    }
}

/// A short id as Zendesk writes them: 1-128 printable ASCII characters.
fn short_id(v: Option<&Value>, field: &'static str) -> Result<String, EventBodyError> {
    match v {
        None => Err(EventBodyError::Missing(field)),
        Some(Value::String(s))
            if !s.is_empty() && s.len() <= MAX_ID && s.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            Ok(s.clone())
        }
        Some(_) => Err(EventBodyError::Bad(
            field,
            "must be a string of 1-128 printable characters",
        )),
    }
}

/// 1-20 ASCII digits as a positive u64.
fn digits(s: &str) -> Option<u64> {
    if !(1..=20).contains(&s.len()) || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<u64>().ok().filter(|&n| n > 0)
}

/// A positive whole number, or a string of digits.
fn positive(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64().filter(|&n| n > 0),
        Value::String(s) => digits(s),
        _ => None,
    }
}

/// The ticket id of a `subject`: exactly `zen:ticket:` and its digits.
pub fn subject_ticket(subject: &str) -> Option<u64> {
    digits(subject.strip_prefix("zen:ticket:")?)
}

/// The envelope in `body`, or None when the body is not one (not a JSON object,
/// or no top-level `type` starting `zen:event-type:`): then it is a trigger body,
/// read by `body.rs`. Invalid
/// JSON is never an envelope (Zendesk writes envelopes itself; only trigger bodies
/// carry unescaped placeholders).
pub fn parse_event(body: &[u8]) -> Result<Option<EventEnvelope>, EventBodyError> {
    let top = match serde_json::from_slice::<Top>(body) {
        Ok(top) => top,
        // A value handoff reads nested past serde_json's depth limit (values it
        // skips are skipped without recursion; the body is at most 16 KiB).
        Err(e) if too_deep(&e) => {
            return Err(EventBodyError::Bad("body", "JSON nested too deeply"))
        }
        Err(_) => return Ok(None),
    };
    // A trigger body may well have a `type` of its own (`{{ticket.ticket_type}}`):
    // only Zendesk's event types make an envelope.
    let is_event =
        matches!(top.get("type"), Some(Value::String(t)) if t.starts_with(EVENT_TYPE_PREFIX));
    if !is_event {
        return Ok(None);
    }
    if let Some(key) = top.duplicate {
        return Err(EventBodyError::DuplicateKey(key));
    }
    if top.has("ticket_id") {
        return Err(EventBodyError::Ambiguous);
    }
    let event_type = short_id(top.get("type"), "type")?;
    let account_id = match top.get("account_id") {
        None => return Err(EventBodyError::Missing("account_id")),
        Some(v) => positive(v).ok_or(EventBodyError::Bad(
            "account_id",
            "must be a positive whole number",
        ))?,
    };
    let id = short_id(top.get("id"), "id")?;
    let ticket_id = if event_type == TICKET_CREATED {
        let subject = match top.get("subject") {
            None => return Err(EventBodyError::Missing("subject")),
            Some(Value::String(s)) => s,
            Some(_) => return Err(EventBodyError::Bad("subject", "must be a string")),
        };
        let ticket = subject_ticket(subject).ok_or(EventBodyError::Bad(
            "subject",
            "must be zen:ticket:<ticket id>",
        ))?;
        // detail.id, when given, is the same ticket: a body naming two tickets is
        // refused rather than guessed at.
        if let Some(d) = top.detail_id.as_ref().filter(|v| !v.is_null()) {
            if positive(d) != Some(ticket) {
                return Err(EventBodyError::Bad(
                    "detail.id",
                    "must be the ticket id of subject",
                ));
            }
        }
        Some(ticket)
    } else {
        None
    };
    Ok(Some(EventEnvelope {
        event_type,
        account_id,
        id,
        ticket_id,
    }))
}

/// serde_json's depth limit (128) was hit: it has no category of its own.
fn too_deep(e: &serde_json::Error) -> bool {
    e.to_string().starts_with("recursion limit exceeded")
}

/// The `x-zendesk-webhook-invocation-id` header, when sent: 1-128 printable
/// characters, else an error.
pub fn invocation_id(header: Option<&[u8]>) -> Result<Option<String>, EventBodyError> {
    let Some(raw) = header else { return Ok(None) };
    match std::str::from_utf8(raw) {
        Ok(s) if !s.is_empty() && s.len() <= MAX_ID && s.bytes().all(|b| b.is_ascii_graphic()) => {
            Ok(Some(s.to_owned()))
        }
        _ => Err(EventBodyError::Bad(
            "x-zendesk-webhook-invocation-id",
            "must be 1-128 printable characters",
        )),
    }
}

/// The keys an event is remembered by: its invocation id and its event id, each
/// within its Zendesk account.
pub fn dedup_keys(account_id: u64, invocation: Option<&str>, event_id: &str) -> Vec<SignatureKey> {
    let key = |kind: &str, id: &str| -> SignatureKey {
        let mut h = Sha256::new();
        h.update(format!("{account_id}\0{kind}\0{id}").as_bytes());
        h.finalize().into()
    };
    let mut out = vec![key("event", event_id)];
    if let Some(inv) = invocation {
        out.push(key("invocation", inv));
    }
    out
}

/// Record every key, or none: a key already seen makes the event a duplicate
/// (`Replayed`), a full table refuses it (`Full`); either way nothing is left
/// recorded by this call.
pub fn remember(
    guard: &mut ReplayGuard,
    keys: &[SignatureKey],
    now_unix: i64,
) -> Result<(), ReplayError> {
    for (i, k) in keys.iter().enumerate() {
        if let Err(e) = guard.check(*k, now_unix, DEDUP_WINDOW_SECS) {
            keys[..i].iter().for_each(|k| guard.forget(k));
            return Err(e);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{"type": "zen:event-type:ticket.created", "account_id": 88888888,
        "id": "01HN5G9ZDNDWZQ2WRB7T4QX7KZ", "time": "2024-04-17T17:18:10Z",
        "zendesk_event_version": "2022-11-06", "subject": "zen:ticket:35436",
        "detail": {"id": "35436", "status": "OPEN", "via": {"channel": "voice"}},
        "event": {"meta": {"sequence": {"id": "x"}}}}"#;

    fn parse(s: &str) -> Result<Option<EventEnvelope>, EventBodyError> {
        parse_event(s.as_bytes())
    }

    fn field(s: &str) -> &'static str {
        parse(s).expect_err(s).field()
    }

    #[test]
    fn a_ticket_created_envelope_names_its_ticket_and_account() {
        let e = parse(GOOD).expect("valid").expect("an envelope");
        assert_eq!(e.event_type, TICKET_CREATED);
        assert_eq!(e.account_id, 88888888);
        assert_eq!(e.id, "01HN5G9ZDNDWZQ2WRB7T4QX7KZ");
        assert_eq!(e.ticket_id, Some(35436));
    }

    #[test]
    fn trigger_bodies_and_non_json_are_not_envelopes() {
        for body in [
            r#"{"ticket_id": 5, "caller_phone": "+14155551212"}"#,
            r#"{"ticket_id": 5, "subject": "say "hi""}"#,
            r#"{"ticket_id": 5, "type": "incident", "caller_phone": "+14155551212"}"#,
            r#"{"type": {"zen:event-type:x": 1}, "account_id": 1, "id": "e"}"#,
            "[1, 2]",
            "not json",
            "",
        ] {
            assert_eq!(parse(body), Ok(None), "{body}");
        }
    }

    #[test]
    fn a_detail_that_is_no_object_names_no_ticket_of_its_own() {
        for detail in ["\"35436\"", "[1, 2]", "7", "true", "null"] {
            let body = GOOD.replacen(
                "{\"id\": \"35436\", \"status\": \"OPEN\", \"via\": {\"channel\": \"voice\"}}",
                detail,
                1,
            );
            assert_ne!(body, GOOD);
            let e = parse(&body).expect(&body).expect("an envelope");
            assert_eq!(e.ticket_id, Some(35436), "{body}");
        }
    }

    #[test]
    fn other_types_need_no_subject() {
        let e = parse(r#"{"type": "zen:event-type:user.created", "account_id": 1, "id": "e1", "subject": "zen:user:9"}"#)
            .expect("valid")
            .expect("envelope");
        assert_eq!(e.ticket_id, None);
        assert_eq!(e.event_type, "zen:event-type:user.created");
    }

    #[test]
    fn hostile_envelopes_name_their_field() {
        let with = |from: &str, to: &str| GOOD.replacen(from, to, 1);
        for (body, f) in [
            (with("zen:ticket:35436", "zen:ticket:1; DROP"), "subject"),
            (with("zen:ticket:35436", "zen:ticket:"), "subject"),
            (with("zen:ticket:35436", "zen:ticket:0"), "subject"),
            (with("zen:ticket:35436", "zen:user:35436"), "subject"),
            (
                with("zen:ticket:35436", "zen:ticket:123456789012345678901"),
                "subject",
            ),
            (with("\"zen:ticket:35436\"", "35436"), "subject"),
            (with("\"subject\"", "\"subjekt\""), "subject"),
            (with("88888888", "-1"), "account_id"),
            (with("88888888", "\"acme\""), "account_id"),
            (with("88888888", "0"), "account_id"),
            (with("\"account_id\"", "\"acct\""), "account_id"),
            (with("\"01HN5G9ZDNDWZQ2WRB7T4QX7KZ\"", "\"a b\""), "id"),
            (with("\"01HN5G9ZDNDWZQ2WRB7T4QX7KZ\"", "7"), "id"),
            (with("\"id\": \"35436\"", "\"id\": \"99\""), "detail.id"),
            (with("\"status\"", "\"id\": \"35436\", \"x\""), "detail.id"),
            (
                with("\"time\"", "\"type\": \"zen:event-type:x\", \"t\""),
                "type",
            ),
            (with("\"time\"", "\"account_id\": 1, \"t\""), "account_id"),
            (
                with("\"time\"", "\"subject\": \"zen:ticket:1\", \"t\""),
                "subject",
            ),
            (with("\"time\"", "\"ticket_id\""), "type"),
            (with("ticket.created\"", "ticket.created\u{7f}\""), "type"),
        ] {
            assert_eq!(field(&body), f, "{body}");
        }
        let long_type = format!(
            r#"{{"type": "zen:event-type:{}", "account_id": 1, "id": "e"}}"#,
            "t".repeat(129)
        );
        assert_eq!(field(&long_type), "type");
    }

    #[test]
    fn deep_json_is_refused_where_read_and_skipped_where_not() {
        let nest = |n: usize| format!("{}1{}", "[".repeat(n), "]".repeat(n));
        let read = GOOD.replace("\"id\": \"35436\"", &format!("\"id\": {}", nest(5000)));
        assert_eq!(field(&read), "body");
        let read = GOOD.replace("\"zen:ticket:35436\"", &nest(200));
        assert_eq!(field(&read), "body");
        // Skipped without recursion: no stack at risk, the envelope stands.
        let skipped = GOOD.replace("{\"meta\": {\"sequence\": {\"id\": \"x\"}}}", &nest(5000));
        assert!(skipped.len() > GOOD.len());
        assert_eq!(
            parse(&skipped).expect("valid").map(|e| e.ticket_id),
            Some(Some(35436))
        );
    }

    #[test]
    fn invocation_ids_are_short_and_printable() {
        assert_eq!(invocation_id(None), Ok(None));
        assert_eq!(
            invocation_id(Some(b"01HN-abc")),
            Ok(Some("01HN-abc".into()))
        );
        for bad in [&b""[..], b"a b", &[b'x'; 129], b"\xff"] {
            assert_eq!(
                invocation_id(Some(bad)).expect_err("bad").field(),
                "x-zendesk-webhook-invocation-id"
            );
        }
    }

    #[test]
    fn a_seen_invocation_or_event_id_is_a_duplicate_and_nothing_half_recorded() {
        let mut g = ReplayGuard::default();
        let first = dedup_keys(1, Some("inv-1"), "ev-1");
        assert_eq!(remember(&mut g, &first, 1000), Ok(()));
        // Zendesk's retry: same invocation, same event.
        assert_eq!(remember(&mut g, &first, 1001), Err(ReplayError::Replayed));
        // Another webhook delivering the same event.
        let same_event = dedup_keys(1, Some("inv-2"), "ev-1");
        assert_eq!(
            remember(&mut g, &same_event, 1002),
            Err(ReplayError::Replayed)
        );
        // A new event under a reused invocation id.
        let same_inv = dedup_keys(1, Some("inv-1"), "ev-2");
        assert_eq!(
            remember(&mut g, &same_inv, 1003),
            Err(ReplayError::Replayed)
        );
        assert_eq!(g.len(), 2, "the refused ones left nothing behind");
        // Another account's event of the same id is its own.
        assert_eq!(remember(&mut g, &dedup_keys(2, None, "ev-1"), 1004), Ok(()));
        // Pruned after two windows.
        let later = 1000 + 2 * DEDUP_WINDOW_SECS as i64 + 2;
        assert_eq!(remember(&mut g, &first, later), Ok(()));
    }
}
