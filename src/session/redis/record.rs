//! The Redis record of a session, as pure functions: key names, and a `Session`
//! to and from the fields of its Redis hash.
//!
//! One hash per session. Every value is a string Redis stores as bytes: nothing is
//! interpolated into a script or a key but the session id (a safe token) and the
//! caller's phone (used only as a key suffix, which Redis treats as bytes). Ticket
//! and Zendesk user ids are kept as decimal strings, so no Lua number (a double)
//! ever rounds them. Custom data and the contact's details are one field each
//! (`c:<key>`, `k:<field>`, `kc:<key>`), so merging them in a script is `HSET`.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::session::{ContactDetails, Session, SessionId};

/// Key names under one prefix.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Keys {
        Keys {
            prefix: prefix.to_owned(),
        }
    }

    /// The prefix every key of this store starts with.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// What a session's key starts with (the scripts append the id).
    pub fn session_prefix(&self) -> String {
        format!("{}session:", self.prefix)
    }

    /// What a phone index's key starts with (the scripts append the phone).
    pub fn phone_prefix(&self) -> String {
        format!("{}phone:", self.prefix)
    }

    /// The hash holding one session.
    pub fn session(&self, id: &SessionId) -> String {
        format!("{}session:{}", self.prefix, id.as_str())
    }

    /// The sorted set of live session ids whose caller is this phone, scored by
    /// start time (microseconds since the epoch).
    pub fn phone(&self, phone_e164: &str) -> String {
        format!("{}phone:{phone_e164}", self.prefix)
    }
}

/// Microseconds since the Unix epoch (a time before it counts as 0). Exact in a
/// double for the next couple of centuries, so also usable as a sorted-set score.
pub fn micros(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn from_micros(s: &str, field: &str) -> Result<SystemTime, String> {
    let us: u64 = s
        .parse()
        .map_err(|_| format!("field {field} is not a time"))?;
    UNIX_EPOCH
        .checked_add(Duration::from_micros(us))
        .ok_or_else(|| format!("field {field} is out of range"))
}

/// The hash fields of a new session record, owned by `node`.
pub fn encode(s: &Session, node: &str) -> Vec<(String, String)> {
    let mut f: Vec<(String, String)> = vec![
        ("id".into(), s.id.as_str().to_owned()),
        ("org".into(), s.org_id.clone()),
        ("agent".into(), s.agent_id.clone()),
        ("called".into(), s.called.clone()),
        ("started".into(), micros(s.started_at).to_string()),
        ("node".into(), node.to_owned()),
    ];
    let mut opt = |k: &str, v: Option<String>| {
        if let Some(v) = v {
            f.push((k.to_owned(), v));
        }
    };
    opt("phone", s.caller_phone.clone());
    opt("name", s.caller_display_name.clone());
    opt("answered", s.answered_at.map(|t| micros(t).to_string()));
    opt("ended", s.ended_at.map(|t| micros(t).to_string()));
    opt("ticket", s.zendesk_ticket_id.map(|t| t.to_string()));
    opt("contact_id", s.contact_id.clone());
    opt("summary", s.summary.clone());
    for (k, v) in &s.custom_data {
        f.push((format!("c:{k}"), v.clone()));
    }
    if let Some(c) = &s.contact {
        f.extend(encode_contact(c));
    }
    f
}

/// The fields that set these contact details over a record's (`HSET` of them is
/// [`ContactDetails::merge`]: a value given wins, one missing is kept).
pub fn encode_contact(c: &ContactDetails) -> Vec<(String, String)> {
    let mut f = vec![("k".to_owned(), "1".to_owned())];
    let mut opt = |k: &str, v: Option<String>| {
        if let Some(v) = v {
            f.push((k.to_owned(), v));
        }
    };
    opt("k:name", c.name.clone());
    opt("k:email", c.email.clone());
    opt("k:phone", c.phone.clone());
    opt("k:zuid", c.zendesk_user_id.map(|u| u.to_string()));
    opt("k:ext", c.external_id.clone());
    for (k, v) in &c.custom_data {
        f.push((format!("kc:{k}"), v.to_string()));
    }
    f
}

/// A session from its hash fields (`HGETALL`); unknown fields are ignored (a newer
/// node may write more), a missing or malformed required one is an error.
pub fn decode(fields: Vec<(String, String)>) -> Result<Session, String> {
    let mut m: BTreeMap<String, String> = BTreeMap::new();
    let mut custom = BTreeMap::new();
    let mut contact_custom = BTreeMap::new();
    for (k, v) in fields {
        if let Some(key) = k.strip_prefix("c:") {
            custom.insert(key.to_owned(), v);
        } else if let Some(key) = k.strip_prefix("kc:") {
            let value: serde_json::Value = serde_json::from_str(&v)
                .map_err(|_| format!("contact custom field {key:?} is not JSON"))?;
            contact_custom.insert(key.to_owned(), value);
        } else {
            m.insert(k, v);
        }
    }
    let mut take = |k: &str| m.remove(k);
    let need = |v: Option<String>, k: &str| v.ok_or_else(|| format!("field {k} is missing"));
    let id = need(take("id"), "id")?;
    let id = SessionId::parse(&id).ok_or("field id is not a session id")?;
    let started = from_micros(&need(take("started"), "started")?, "started")?;
    let time = |v: Option<String>, k: &str| v.map(|v| from_micros(&v, k)).transpose();
    let answered_at = time(take("answered"), "answered")?;
    let ended_at = time(take("ended"), "ended")?;
    let zendesk_ticket_id = take("ticket")
        .map(|t| {
            t.parse::<u64>()
                .map_err(|_| "field ticket is not a ticket id")
        })
        .transpose()?;
    let contact = match take("k") {
        Some(_) => Some(ContactDetails {
            name: take("k:name"),
            email: take("k:email"),
            phone: take("k:phone"),
            zendesk_user_id: take("k:zuid")
                .map(|u| {
                    u.parse::<u64>()
                        .map_err(|_| "field k:zuid is not a user id")
                })
                .transpose()?,
            external_id: take("k:ext"),
            custom_data: contact_custom,
        }),
        None => None,
    };
    Ok(Session {
        id,
        org_id: need(take("org"), "org")?,
        agent_id: need(take("agent"), "agent")?,
        caller_phone: take("phone"),
        caller_display_name: take("name"),
        called: need(take("called"), "called")?,
        started_at: started,
        answered_at,
        ended_at,
        zendesk_ticket_id,
        contact_id: take("contact_id"),
        contact,
        custom_data: custom,
        summary: take("summary"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hostile_session() -> Session {
        let mut s = Session::new(
            SessionId::parse("abc-1").unwrap(),
            "org\"}; redis.call('FLUSHALL') --".into(),
            "agent\r\n\0".into(),
            Some("+14155551212".into()),
            Some("Zoë \"x\" \\ {}".into()),
            "c:called".into(),
        );
        s.started_at = UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_456);
        s.answered_at = Some(s.started_at + Duration::from_secs(1));
        s.ended_at = Some(s.started_at + Duration::from_secs(9));
        s.zendesk_ticket_id = Some(u64::MAX);
        s.contact_id = Some("ct-\n1".into());
        s.custom_data.insert("c:nested".into(), "v:1\r\n".into());
        s.custom_data.insert("".into(), "".into());
        s.contact = Some(ContactDetails {
            name: Some("k:name".into()),
            email: None,
            phone: Some("+1".into()),
            zendesk_user_id: Some(9_007_199_254_740_993), // 2^53 + 1: a double would round it
            external_id: Some("\u{0}".into()),
            custom_data: [
                ("kc:x".to_owned(), serde_json::json!({"a": [1, "b", null]})),
                ("n".to_owned(), serde_json::json!(12345678901234567890u64)),
            ]
            .into(),
        });
        s
    }

    fn same(a: &Session, b: &Session) {
        assert_eq!(format!("{a:?}"), format!("{b:?}"));
    }

    #[test]
    fn hostile_values_round_trip_exactly() {
        let s = hostile_session();
        let f = encode(&s, "node-a");
        assert!(f.contains(&("node".into(), "node-a".into())));
        same(&decode(f).unwrap(), &s);
        let plain = Session::new(
            SessionId::parse("p").unwrap(),
            "o".into(),
            "a".into(),
            None,
            None,
            "".into(),
        );
        let mut got = decode(encode(&plain, "n")).unwrap();
        assert_eq!(got.caller_phone, None);
        assert!(got.contact.is_none());
        got.started_at = plain.started_at;
        same(&got, &plain);
    }

    #[test]
    fn malformed_records_are_errors_not_panics() {
        let good = encode(&hostile_session(), "n");
        let with = |k: &str, v: &str| {
            let mut f: Vec<_> = good.iter().filter(|(x, _)| x != k).cloned().collect();
            f.push((k.into(), v.into()));
            f
        };
        for (k, v) in [
            ("id", "a b"),
            ("id", ""),
            ("started", "-1"),
            ("started", "18446744073709551616"),
            ("answered", "soon"),
            ("ticket", "1.5"),
            ("ticket", "-3"),
            ("k:zuid", "x"),
            ("kc:x", "{not json"),
        ] {
            assert!(decode(with(k, v)).is_err(), "{k}={v:?}");
        }
        for required in ["id", "org", "agent", "called", "started"] {
            let f: Vec<_> = good
                .iter()
                .filter(|(x, _)| x != required)
                .cloned()
                .collect();
            let e = decode(f).unwrap_err();
            assert!(e.contains(required), "{e}");
        }
        assert!(decode(Vec::new()).is_err());
        // A time far in the future is refused or kept, never a panic.
        let _ = decode(with("started", &u64::MAX.to_string()));
    }

    #[test]
    fn keys_are_prefixed_and_carry_the_id_or_phone_as_is() {
        let k = Keys::new("hx:");
        assert_eq!(k.session(&SessionId::parse("a1").unwrap()), "hx:session:a1");
        assert_eq!(k.phone("+14155551212"), "hx:phone:+14155551212");
        assert_eq!(k.session_prefix(), "hx:session:");
        assert_eq!(k.phone_prefix(), "hx:phone:");
    }

    #[test]
    fn micros_before_the_epoch_is_zero() {
        assert_eq!(micros(UNIX_EPOCH - Duration::from_secs(1)), 0);
        assert_eq!(micros(UNIX_EPOCH + Duration::from_micros(7)), 7);
    }
}
