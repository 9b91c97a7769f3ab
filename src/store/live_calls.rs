//! Live calls, kept durably beside the event outbox so that a call cut by a crash
//! still gets its end: a row is written when a call starts (in the transaction
//! that queues its `phone_call.started`), marked when it is answered, and removed
//! in the transaction that queues its `phone_call.ended` or `phone_call.failed`.
//! A row found at start-up belongs to a call the previous run never ended.
//!
//! The store knows nothing of events: a row's `record` is opaque bytes the events
//! layer wrote (`events::live`). Blocking SQLite calls, on the events writer thread.

use rusqlite::{params, Transaction};

/// The table, created when missing.
pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS live_calls (
    session_id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL,
    node_id TEXT NOT NULL,
    started_ms INTEGER NOT NULL,
    answered_ms INTEGER,
    record BLOB NOT NULL
) WITHOUT ROWID;
";

/// One live call as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveRow {
    pub session_id: String,
    pub org_id: String,
    /// The node that holds the call (`[cluster] node_id`, else the hostname).
    pub node_id: String,
    pub started_ms: u64,
    /// When the AI agent answered; None while it rings.
    pub answered_ms: Option<u64>,
    /// What the events layer needs to build the call's end (JSON).
    pub record: Vec<u8>,
}

/// A change to the live-call table, applied in an outbox transaction in the
/// order the call made them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LiveChange {
    Started(Box<LiveRow>),
    Answered {
        session_id: String,
        at_ms: u64,
    },
    /// The call's end is queued (or it needs none): the row goes.
    Closed {
        session_id: String,
    },
}

impl LiveChange {
    pub fn session_id(&self) -> &str {
        match self {
            LiveChange::Started(r) => &r.session_id,
            LiveChange::Answered { session_id, .. } | LiveChange::Closed { session_id } => {
                session_id
            }
        }
    }
}

/// Apply `changes`, in order, inside `tx`.
pub fn apply(tx: &Transaction<'_>, changes: &[LiveChange]) -> rusqlite::Result<()> {
    if changes.is_empty() {
        return Ok(());
    }
    let mut ins = tx.prepare_cached(
        "INSERT OR REPLACE INTO live_calls
           (session_id, org_id, node_id, started_ms, answered_ms, record)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    let mut ans =
        tx.prepare_cached("UPDATE live_calls SET answered_ms = ?2 WHERE session_id = ?1")?;
    let mut del = tx.prepare_cached("DELETE FROM live_calls WHERE session_id = ?1")?;
    for c in changes {
        match c {
            LiveChange::Started(r) => {
                ins.execute(params![
                    r.session_id,
                    r.org_id,
                    r.node_id,
                    r.started_ms as i64,
                    r.answered_ms.map(|a| a as i64),
                    r.record
                ])?;
            }
            LiveChange::Answered { session_id, at_ms } => {
                ans.execute(params![session_id, *at_ms as i64])?;
            }
            LiveChange::Closed { session_id } => {
                del.execute([session_id])?;
            }
        }
    }
    Ok(())
}

/// Every live row (of any node), oldest first.
pub fn all(tx: &Transaction<'_>) -> rusqlite::Result<Vec<LiveRow>> {
    let mut st = tx.prepare_cached(
        "SELECT session_id, org_id, node_id, started_ms, answered_ms, record
         FROM live_calls ORDER BY started_ms, session_id",
    )?;
    let rows = st.query_map([], |r| {
        Ok(LiveRow {
            session_id: r.get(0)?,
            org_id: r.get(1)?,
            node_id: r.get(2)?,
            started_ms: r.get::<_, i64>(3)?.max(0) as u64,
            answered_ms: r.get::<_, Option<i64>>(4)?.map(|a| a.max(0) as u64),
            record: r.get(5)?,
        })
    })?;
    rows.collect()
}

/// Remove one row; whether it was there.
pub fn remove(tx: &Transaction<'_>, session_id: &str) -> rusqlite::Result<bool> {
    let mut del = tx.prepare_cached("DELETE FROM live_calls WHERE session_id = ?1")?;
    Ok(del.execute([session_id])? > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    fn row(sid: &str) -> LiveRow {
        LiveRow {
            session_id: sid.into(),
            org_id: "o".into(),
            node_id: "n1".into(),
            started_ms: 10,
            answered_ms: None,
            record: b"{}".to_vec(),
        }
    }

    #[test]
    fn a_call_started_answered_and_closed_in_one_batch_leaves_no_row() {
        let mut conn = Store::in_memory().connect().unwrap();
        let tx = conn.transaction().unwrap();
        apply(
            &tx,
            &[
                LiveChange::Started(Box::new(row("a"))),
                LiveChange::Started(Box::new(row("b"))),
                LiveChange::Answered {
                    session_id: "a".into(),
                    at_ms: 20,
                },
                LiveChange::Closed {
                    session_id: "b".into(),
                },
            ],
        )
        .unwrap();
        let rows = all(&tx).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].session_id, "a");
        assert_eq!(rows[0].answered_ms, Some(20));
        assert!(remove(&tx, "a").unwrap());
        assert!(!remove(&tx, "a").unwrap(), "gone already");
        assert!(all(&tx).unwrap().is_empty());
    }

    #[test]
    fn a_close_for_a_call_never_recorded_changes_nothing() {
        let mut conn = Store::in_memory().connect().unwrap();
        let tx = conn.transaction().unwrap();
        apply(
            &tx,
            &[
                LiveChange::Started(Box::new(row("a"))),
                LiveChange::Closed {
                    session_id: "zz".into(),
                },
                LiveChange::Answered {
                    session_id: "zz".into(),
                    at_ms: 1,
                },
            ],
        )
        .unwrap();
        assert_eq!(all(&tx).unwrap(), [row("a")]);
    }
}
