//! A live call as the cluster keeps it in Redis: one hash field per call (the
//! session id) holding the row as JSON. Rows come back from Redis written by
//! other nodes (or by anyone who can write to that Redis), so decoding checks
//! every part and refuses what does not fit, rather than trusting it.
//!
//! The `record` is the events layer's JSON (`events::live::LiveRecord`), carried
//! here as opaque text and checked where it is read (`live::orphan_end`). A field
//! added to it, as `outbound` was, needs no new version of this row: a row
//! without it reads as its default (an old node's call: inbound), and a node
//! that predates it ignores it, so in a cluster of mixed versions an outbound
//! call claimed by an older node ends as inbound (it is still ended, once). A
//! new version number would instead make the older nodes refuse the row and
//! leave the call without an end.

use crate::session::SessionId;
use crate::store::live_calls::LiveRow;
use serde::{Deserialize, Serialize};

/// Largest row accepted back from Redis; a call's record is far smaller.
pub const MAX_ROW_BYTES: usize = 64 * 1024;

#[derive(Serialize, Deserialize)]
struct Wire<'a> {
    v: u8,
    #[serde(borrow)]
    org_id: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    node_id: std::borrow::Cow<'a, str>,
    started_ms: u64,
    answered_ms: Option<u64>,
    /// The events layer's record (JSON text), kept as a string.
    #[serde(borrow)]
    record: std::borrow::Cow<'a, str>,
}

/// Why a row read from Redis is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("live-call field is not a session id")]
    SessionId,
    #[error("live-call row is {0} bytes; at most {MAX_ROW_BYTES}")]
    TooLarge(usize),
    #[error("live-call row is not a row of this version: {0}")]
    Shape(String),
    #[error("live-call row names a node that is not a node id")]
    NodeId,
}

/// The value stored for `row` (its session id is the field name).
pub fn encode(row: &LiveRow) -> String {
    let w = Wire {
        v: 1,
        org_id: row.org_id.as_str().into(),
        node_id: row.node_id.as_str().into(),
        started_ms: row.started_ms,
        answered_ms: row.answered_ms,
        record: String::from_utf8_lossy(&row.record),
    };
    // Strings and integers only: serialising cannot fail.
    serde_json::to_string(&w).unwrap_or_default()
}

/// The row stored under field `session_id` as `value`, checked.
pub fn decode(session_id: &str, value: &[u8]) -> Result<LiveRow, WireError> {
    if SessionId::parse(session_id).is_none() {
        return Err(WireError::SessionId);
    }
    if value.len() > MAX_ROW_BYTES {
        return Err(WireError::TooLarge(value.len()));
    }
    let w: Wire = serde_json::from_slice(value).map_err(|e| WireError::Shape(e.to_string()))?;
    if w.v != 1 {
        return Err(WireError::Shape(format!("version {}", w.v)));
    }
    if crate::config::cluster::check_node_id(&w.node_id).is_err() {
        return Err(WireError::NodeId);
    }
    Ok(LiveRow {
        session_id: session_id.to_owned(),
        org_id: w.org_id.into_owned(),
        node_id: w.node_id.into_owned(),
        started_ms: w.started_ms,
        answered_ms: w.answered_ms,
        record: w.record.into_owned().into_bytes(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> LiveRow {
        LiveRow {
            session_id: "0123abcd".into(),
            org_id: "org \"1\"".into(),
            node_id: "node-a".into(),
            started_ms: 1_700_000_000_000,
            answered_ms: Some(1_700_000_000_500),
            record: br#"{"agent_id":"a","called":"+1"}"#.to_vec(),
        }
    }

    #[test]
    fn a_row_survives_the_round_trip() {
        let r = row();
        assert_eq!(decode(&r.session_id, encode(&r).as_bytes()), Ok(r));
    }

    /// The record as an outbound call writes it (`events::live::started`).
    const OUTBOUND_RECORD: &str = r#"{"agent_id":"a","caller_phone":"+14155551212","caller_name":null,"called":"+18005550100","languages":null,"agent_version":null,"custom_data":{},"outbound":true}"#;

    fn end_of(r: &LiveRow) -> serde_json::Value {
        use crate::events::live::{orphan_end, Orphaned};
        let ev = orphan_end(r, Orphaned::NodeLost, std::time::SystemTime::now()).unwrap();
        serde_json::from_slice(&ev.to_json()).unwrap()
    }

    #[test]
    fn an_outbound_call_survives_the_round_trip_and_ends_outbound() {
        let mut r = row();
        r.record = OUTBOUND_RECORD.as_bytes().to_vec();
        let back = decode(&r.session_id, encode(&r).as_bytes()).unwrap();
        assert_eq!(back, r);
        let v = end_of(&back);
        assert_eq!(v["type"], "phone_call.ended");
        assert_eq!(v["data"]["direction"], "outbound");
        assert_eq!(v["data"]["custom_data"]["is_outbound"], true);
        assert_eq!(v["data"]["to"], "+14155551212");
    }

    #[test]
    fn a_row_an_older_node_wrote_reads_as_inbound() {
        // Byte for byte what a node before `outbound` put in Redis.
        let old = r#"{"v":1,"org_id":"o","node_id":"node-a","started_ms":1700000000000,"answered_ms":null,"record":"{\"agent_id\":\"a\",\"caller_phone\":\"+14155551212\",\"caller_name\":null,\"called\":\"+18005550100\",\"languages\":null,\"agent_version\":null,\"custom_data\":{}}"}"#;
        let r = decode("0123abcd", old.as_bytes()).unwrap();
        assert_eq!(r.node_id, "node-a");
        let v = end_of(&r);
        assert_eq!(v["type"], "phone_call.failed");
        assert_eq!(v["data"]["direction"], "inbound");
        assert_eq!(v["data"]["custom_data"]["is_outbound"], false);
    }

    #[test]
    fn a_row_with_fields_this_version_does_not_know_still_reads() {
        // A newer node's row: its extra fields are ignored, its call still ended.
        let mut r = row();
        r.record = OUTBOUND_RECORD.as_bytes().to_vec();
        let newer = encode(&r).replacen('{', r#"{"direction":"sideways","#, 1);
        assert_eq!(decode(&r.session_id, newer.as_bytes()), Ok(r));
    }

    #[test]
    fn a_hostile_outbound_flag_passes_the_wire_and_is_refused_by_the_record() {
        use crate::events::live::{orphan_end, OrphanError, Orphaned};
        for bad in [r#""true""#, "1", "null", r#"{"x":1}"#] {
            let mut r = row();
            r.record = OUTBOUND_RECORD
                .replace(r#""outbound":true"#, &format!(r#""outbound":{bad}"#))
                .into_bytes();
            let back = decode(&r.session_id, encode(&r).as_bytes()).unwrap();
            assert!(
                matches!(
                    orphan_end(&back, Orphaned::NodeLost, std::time::SystemTime::now()),
                    Err(OrphanError::Record { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn rows_that_do_not_fit_are_refused() {
        let good = encode(&row());
        assert_eq!(decode("a b", good.as_bytes()), Err(WireError::SessionId));
        assert_eq!(decode("", good.as_bytes()), Err(WireError::SessionId));
        assert!(matches!(
            decode("s1", b"not json"),
            Err(WireError::Shape(_))
        ));
        assert!(matches!(decode("s1", b"{}"), Err(WireError::Shape(_))));
        let v2 = good.replace("\"v\":1", "\"v\":2");
        assert!(matches!(
            decode("s1", v2.as_bytes()),
            Err(WireError::Shape(_))
        ));
        let evil = good.replace("node-a", "a\\r\\nX: y");
        assert_eq!(decode("s1", evil.as_bytes()), Err(WireError::NodeId));
        let huge = vec![b' '; MAX_ROW_BYTES + 1];
        assert_eq!(
            decode("s1", &huge),
            Err(WireError::TooLarge(MAX_ROW_BYTES + 1))
        );
    }
}
