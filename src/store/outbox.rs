//! The lifecycle-event outbox: every event is written here before it is sent,
//! one delivery row per subscriber that wants it. A delivery row is marked
//! delivered (or finally failed) once it is; the event stays as history until
//! room is needed, and the oldest finished events go first. On start the
//! pending deliveries are read back and sent.
//!
//! Blocking SQLite calls: only the events writer thread uses this.

use super::live_calls::{self, LiveChange, LiveRow};
use rusqlite::{params, Connection, OptionalExtension};

/// Tables of the outbox, created when missing.
pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS outbox_events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    session_id TEXT NOT NULL,
    type TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    body BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox_deliveries (
    event_seq INTEGER NOT NULL,
    subscriber TEXT NOT NULL,
    state INTEGER NOT NULL,
    finished_ms INTEGER,
    PRIMARY KEY (event_seq, subscriber)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS outbox_deliveries_by_state ON outbox_deliveries (state, event_seq);
";

/// `outbox_deliveries.state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryState {
    Pending = 0,
    Delivered = 1,
    /// Given up: a final 4xx, or older than `[events] max_age_secs`.
    Failed = 2,
}

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("outbox: {0}")]
    Sqlite(#[from] rusqlite::Error),
}

/// An event to store, with the subscribers (by URL) it goes to.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub id: String,
    pub session_id: String,
    pub kind: String,
    pub created_ms: u64,
    pub body: Vec<u8>,
    pub subscribers: Vec<String>,
}

/// A delivery read back at start-up.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingDelivery {
    pub seq: i64,
    pub id: String,
    pub session_id: String,
    pub kind: String,
    pub created_ms: u64,
    pub body: Vec<u8>,
    pub subscriber: String,
}

/// A delivery that has finished.
#[derive(Debug, Clone)]
pub struct Finished {
    pub seq: i64,
    pub subscriber: String,
    pub state: DeliveryState,
    pub at_ms: u64,
}

pub struct Outbox {
    conn: Connection,
}

impl Outbox {
    /// Wraps a connection from [`crate::store::Store::connect`] (schema in place).
    pub fn new(conn: Connection) -> Outbox {
        Outbox { conn }
    }

    /// Events stored (pending and history).
    pub fn event_count(&self) -> Result<usize, OutboxError> {
        let n: i64 = self
            .conn
            .query_row("SELECT COUNT(*) FROM outbox_events", [], |r| r.get(0))?;
        Ok(n as usize)
    }

    /// Every pending delivery, oldest event first.
    pub fn pending(&self) -> Result<Vec<PendingDelivery>, OutboxError> {
        let mut st = self.conn.prepare(
            "SELECT e.seq, e.id, e.session_id, e.type, e.created_ms, e.body, d.subscriber
             FROM outbox_deliveries d JOIN outbox_events e ON e.seq = d.event_seq
             WHERE d.state = 0 ORDER BY e.seq, d.subscriber",
        )?;
        let rows = st.query_map([], |r| {
            Ok(PendingDelivery {
                seq: r.get(0)?,
                id: r.get(1)?,
                session_id: r.get(2)?,
                kind: r.get(3)?,
                created_ms: r.get::<_, i64>(4)? as u64,
                body: r.get(5)?,
                subscriber: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// One transaction: record finished deliveries, remove up to `prune` of the
    /// oldest fully finished events, and insert the new events. Returns the
    /// sequence numbers of the new events and how many were pruned.
    pub fn commit(
        &mut self,
        finished: &[Finished],
        prune: usize,
        events: &[NewEvent],
    ) -> Result<(Vec<i64>, usize), OutboxError> {
        self.commit_with(finished, prune, events, &[])
    }

    /// [`Outbox::commit`], and the live-call changes of the same batch in the same
    /// transaction (after the events): a call's row goes with its end event.
    pub fn commit_with(
        &mut self,
        finished: &[Finished],
        prune: usize,
        events: &[NewEvent],
        live: &[LiveChange],
    ) -> Result<(Vec<i64>, usize), OutboxError> {
        let tx = self.conn.transaction()?;
        {
            let mut done = tx.prepare_cached(
                "UPDATE outbox_deliveries SET state = ?1, finished_ms = ?2
                 WHERE event_seq = ?3 AND subscriber = ?4 AND state = 0",
            )?;
            for f in finished {
                done.execute(params![f.state as i64, f.at_ms as i64, f.seq, f.subscriber])?;
            }
        }
        let pruned = if prune > 0 {
            prune_oldest(&tx, prune)?
        } else {
            0
        };
        let mut seqs = Vec::with_capacity(events.len());
        for e in events {
            seqs.push(insert_event(&tx, e)?);
        }
        live_calls::apply(&tx, live)?;
        tx.commit()?;
        Ok((seqs, pruned))
    }

    /// Start-up: every live call a previous run of this store left (of `node`, or
    /// of any node) gets its end.
    /// In one transaction, each row is removed and the event `end` builds for it
    /// (None: no subscriber wants it) is queued, so a crash during recovery leaves
    /// either all rows and no end, or all ends and no row. Returns how many calls
    /// were recovered.
    pub fn recover_live(
        &mut self,
        node: Option<&str>,
        end: &mut dyn FnMut(&LiveRow) -> Option<NewEvent>,
    ) -> Result<usize, OutboxError> {
        let (n, _) = self.recover_selected(&mut |r| node.is_none_or(|n| r.node_id == n), end)?;
        Ok(n)
    }

    /// [`Outbox::recover_live`] for the rows `select` picks; returns how many
    /// were removed and the ends queued (with their sequence numbers).
    pub fn recover_selected(
        &mut self,
        select: &mut dyn FnMut(&LiveRow) -> bool,
        end: &mut dyn FnMut(&LiveRow) -> Option<NewEvent>,
    ) -> Result<(usize, Vec<(i64, NewEvent)>), OutboxError> {
        let tx = self.conn.transaction()?;
        let mut rows = live_calls::all(&tx)?;
        rows.retain(|r| select(r));
        let mut queued = Vec::new();
        for r in &rows {
            live_calls::remove(&tx, &r.session_id)?;
            if let Some(e) = end(r) {
                if let Some(seq) = insert_unique(&tx, &e)? {
                    queued.push((seq, e));
                }
            }
        }
        tx.commit()?;
        Ok((rows.len(), queued))
    }

    /// Queue `events` in one transaction, each unless an event with its id is
    /// queued already; returns those queued, with their sequence numbers.
    pub fn queue_unique(
        &mut self,
        events: Vec<NewEvent>,
    ) -> Result<Vec<(i64, NewEvent)>, OutboxError> {
        let tx = self.conn.transaction()?;
        let mut queued = Vec::new();
        for e in events {
            if let Some(seq) = insert_unique(&tx, &e)? {
                queued.push((seq, e));
            }
        }
        tx.commit()?;
        Ok(queued)
    }

    /// Session ids of the live calls recorded now, oldest first.
    pub fn live_ids(&mut self) -> Result<Vec<String>, OutboxError> {
        Ok(self
            .live_calls()?
            .into_iter()
            .map(|r| r.session_id)
            .collect())
    }

    /// Live calls recorded now (for tests and diagnostics).
    pub fn live_calls(&mut self) -> Result<Vec<LiveRow>, OutboxError> {
        let tx = self.conn.transaction()?;
        let rows = live_calls::all(&tx)?;
        tx.commit()?;
        Ok(rows)
    }

    /// The state of one delivery (for tests and diagnostics).
    pub fn state_of(&self, id: &str, subscriber: &str) -> Result<Option<i64>, OutboxError> {
        Ok(self
            .conn
            .query_row(
                "SELECT d.state FROM outbox_deliveries d JOIN outbox_events e ON e.seq = d.event_seq
                 WHERE e.id = ?1 AND d.subscriber = ?2",
                params![id, subscriber],
                |r| r.get(0),
            )
            .optional()?)
    }
}

/// [`insert_event`] unless an event with the same id is queued already (an end
/// queued twice, by two claims or two start-ups, is sent once).
fn insert_unique(tx: &rusqlite::Transaction<'_>, e: &NewEvent) -> Result<Option<i64>, OutboxError> {
    let queued: Option<i64> = tx
        .query_row(
            "SELECT seq FROM outbox_events WHERE id = ?1",
            [&e.id],
            |row| row.get(0),
        )
        .optional()?;
    match queued {
        Some(_) => Ok(None),
        None => insert_event(tx, e).map(Some),
    }
}

/// Insert one event and its pending deliveries; its sequence number.
fn insert_event(tx: &rusqlite::Transaction<'_>, e: &NewEvent) -> Result<i64, OutboxError> {
    let mut ins = tx.prepare_cached(
        "INSERT INTO outbox_events (id, session_id, type, created_ms, body)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    let mut del = tx.prepare_cached(
        "INSERT INTO outbox_deliveries (event_seq, subscriber, state) VALUES (?1, ?2, 0)",
    )?;
    ins.execute(params![
        e.id,
        e.session_id,
        e.kind,
        e.created_ms as i64,
        e.body
    ])?;
    let seq = tx.last_insert_rowid();
    for s in &e.subscribers {
        del.execute(params![seq, s])?;
    }
    Ok(seq)
}

/// Delete up to `n` of the oldest events none of whose deliveries is pending.
fn prune_oldest(tx: &rusqlite::Transaction<'_>, n: usize) -> Result<usize, OutboxError> {
    let seqs: Vec<i64> = {
        let mut st = tx.prepare_cached(
            "SELECT seq FROM outbox_events e WHERE NOT EXISTS
               (SELECT 1 FROM outbox_deliveries d WHERE d.event_seq = e.seq AND d.state = 0)
             ORDER BY seq LIMIT ?1",
        )?;
        let rows = st.query_map([n as i64], |r| r.get(0))?;
        rows.collect::<Result<_, _>>()?
    };
    let mut de = tx.prepare_cached("DELETE FROM outbox_events WHERE seq = ?1")?;
    let mut dd = tx.prepare_cached("DELETE FROM outbox_deliveries WHERE event_seq = ?1")?;
    for s in &seqs {
        dd.execute([s])?;
        de.execute([s])?;
    }
    Ok(seqs.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    fn event(id: &str, subs: &[&str]) -> NewEvent {
        NewEvent {
            id: id.into(),
            session_id: "s1".into(),
            kind: "phone_call.started".into(),
            created_ms: 1,
            body: format!("{{\"id\":\"{id}\"}}").into_bytes(),
            subscribers: subs.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn fin(seq: i64, sub: &str, state: DeliveryState) -> Finished {
        Finished {
            seq,
            subscriber: sub.into(),
            state,
            at_ms: 2,
        }
    }

    #[test]
    fn events_survive_a_reopen_and_finished_ones_leave_the_pending_list() {
        let dir = std::env::temp_dir().join(format!("handoff-outbox-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let store = Store::open(Some(&dir.join("h.db"))).unwrap();
        let mut ob = Outbox::new(store.connect().unwrap());
        let (seqs, _) = ob
            .commit(&[], 0, &[event("e1", &["a", "b"]), event("e2", &["a"])])
            .unwrap();
        assert_eq!(seqs.len(), 2);
        assert!(seqs[0] < seqs[1]);
        drop(ob);
        let mut ob = Outbox::new(store.connect().unwrap());
        let p = ob.pending().unwrap();
        let ids: Vec<(&str, &str)> = p
            .iter()
            .map(|d| (d.id.as_str(), d.subscriber.as_str()))
            .collect();
        assert_eq!(ids, [("e1", "a"), ("e1", "b"), ("e2", "a")]);
        assert_eq!(p[0].body, b"{\"id\":\"e1\"}");
        ob.commit(
            &[
                fin(seqs[0], "a", DeliveryState::Delivered),
                fin(seqs[1], "a", DeliveryState::Failed),
            ],
            0,
            &[],
        )
        .unwrap();
        let p = ob.pending().unwrap();
        assert_eq!(p.len(), 1);
        assert_eq!((p[0].id.as_str(), p[0].subscriber.as_str()), ("e1", "b"));
        assert_eq!(ob.state_of("e1", "a").unwrap(), Some(1));
        assert_eq!(ob.state_of("e2", "a").unwrap(), Some(2));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn pruning_takes_only_finished_events_oldest_first() {
        let store = Store::in_memory();
        let mut ob = Outbox::new(store.connect().unwrap());
        let (seqs, _) = ob
            .commit(
                &[],
                0,
                &[
                    event("e1", &["a"]),
                    event("e2", &["a"]),
                    event("e3", &["a"]),
                ],
            )
            .unwrap();
        // e2 and e3 delivered, e1 still pending: only those two may go.
        ob.commit(
            &[
                fin(seqs[1], "a", DeliveryState::Delivered),
                fin(seqs[2], "a", DeliveryState::Delivered),
            ],
            0,
            &[],
        )
        .unwrap();
        let (_, pruned) = ob.commit(&[], 1, &[]).unwrap();
        assert_eq!(pruned, 1);
        assert_eq!(
            ob.state_of("e2", "a").unwrap(),
            None,
            "oldest finished went"
        );
        assert_eq!(ob.state_of("e3", "a").unwrap(), Some(1));
        let (_, pruned) = ob.commit(&[], 10, &[]).unwrap();
        assert_eq!(pruned, 1);
        assert_eq!(ob.event_count().unwrap(), 1);
        assert_eq!(ob.pending().unwrap()[0].id, "e1", "the pending one stays");
    }
}
