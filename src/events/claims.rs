//! The events writer's side of the cluster (`crate::cluster`): ending the calls
//! the last run left live once Redis has said which of them another node ended
//! already, ending the calls this node claimed from a dead one, and not sending
//! the end of a call another node has ended. Each runs on the writer thread, in
//! one outbox transaction, and the ends it queues go to the subscribers at once.

use super::live::{self, Orphaned, Recovered};
use super::{EventType, Events, Writer, WriterMsg};
use crate::metrics::Metrics;
use crate::store::live_calls::{LiveChange, LiveRow};
use crate::store::outbox::{NewEvent, OutboxError};
use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::SystemTime;
use tokio::sync::oneshot;

/// What the cluster task gets from [`Events::start_clustered`].
#[derive(Debug)]
pub struct ClusterLink {
    /// Every live-call change the writer commits, in order.
    pub feed: tokio::sync::mpsc::UnboundedReceiver<Vec<LiveChange>>,
    /// The calls the last run left live (not yet ended).
    pub startup: Vec<LiveRow>,
}

type Ack = oneshot::Sender<Result<Recovered, String>>;

/// A request of the cluster task to the writer.
#[derive(Debug)]
pub enum ClusterMsg {
    /// End the calls the last run left, except those in `claimed` (another node
    /// ended them: their rows go without an end).
    RecoverStartup { claimed: HashSet<String>, ack: Ack },
    /// End calls claimed from a dead node.
    EndClaimed { rows: Vec<LiveRow>, ack: Ack },
    /// Another node ended these calls of this one: do not send their end.
    Suppress(Vec<String>),
}

/// Count what a recovery ended, and say so.
pub fn count_recovered(metrics: &Metrics, r: Recovered, why: Orphaned) {
    if r.calls == 0 {
        return;
    }
    match why {
        Orphaned::NodeRestarted => Metrics::add(&metrics.calls_recovered_total, r.calls as u64),
        Orphaned::NodeLost => Metrics::add(&metrics.cluster_calls_claimed_total, r.calls as u64),
    }
    let m = &metrics.events.emitted;
    m[EventType::PhoneCallEnded as usize].fetch_add(r.ended as u64, Ordering::Relaxed);
    m[EventType::PhoneCallFailed as usize].fetch_add(r.failed as u64, Ordering::Relaxed);
    match why {
        Orphaned::NodeRestarted => tracing::warn!(
            calls = r.calls,
            ended = r.ended,
            failed = r.failed,
            "calls left live by the last run (a crash) get their end now, by the system"
        ),
        Orphaned::NodeLost => tracing::warn!(
            calls = r.calls,
            ended = r.ended,
            failed = r.failed,
            "calls of a node found dead get their end now, by the system"
        ),
    }
}

impl Events {
    async fn ask(&self, msg: impl FnOnce(Ack) -> ClusterMsg) -> Result<Recovered, String> {
        let (tx, rx) = oneshot::channel();
        self.inner
            .tx
            .send(WriterMsg::Cluster(msg(tx)))
            .map_err(|_| "events writer is gone".to_owned())?;
        rx.await.map_err(|_| "events writer is gone".to_owned())?
    }

    /// End the calls the last run left live, but for those another node ended
    /// (`claimed`). Only with [`Events::start_clustered`]; done once.
    pub async fn recover_startup(&self, claimed: HashSet<String>) -> Result<Recovered, String> {
        self.ask(|ack| ClusterMsg::RecoverStartup { claimed, ack })
            .await
    }

    /// End calls this node claimed from a dead one (`node_lost`). An end queued
    /// before (a claim retried) is not queued again.
    pub async fn end_claimed(&self, rows: Vec<LiveRow>) -> Result<Recovered, String> {
        self.ask(|ack| ClusterMsg::EndClaimed { rows, ack }).await
    }

    /// Another node ended these calls of this node: their own end, when it
    /// comes, is not sent (the cluster sends one end per call).
    pub fn suppress_ends(&self, session_ids: Vec<String>) {
        let _ = self
            .inner
            .tx
            .send(WriterMsg::Cluster(ClusterMsg::Suppress(session_ids)));
    }
}

impl Writer {
    pub(super) fn cluster(&mut self, msg: ClusterMsg) {
        match msg {
            ClusterMsg::RecoverStartup { claimed, ack } => {
                let r = self.recover_startup(&claimed);
                let _ = ack.send(r.map_err(|e| e.to_string()));
            }
            ClusterMsg::EndClaimed { rows, ack } => {
                let r = self.end_claimed(rows);
                let _ = ack.send(r.map_err(|e| e.to_string()));
            }
            ClusterMsg::Suppress(ids) => self.suppressed.extend(ids),
        }
    }

    /// The events of a batch less the ends of calls another node ended.
    pub(super) fn unsuppressed(&mut self, emits: Vec<super::Event>) -> Vec<super::Event> {
        if self.suppressed.is_empty() {
            return emits;
        }
        emits
            .into_iter()
            .filter(|e| {
                let end = matches!(
                    e.kind,
                    EventType::PhoneCallEnded | EventType::PhoneCallFailed
                );
                let keep = !(end && self.suppressed.remove(&e.session_id));
                if !keep {
                    tracing::info!(session_id = %e.session_id, "call ended by another node already: its end is not sent again");
                }
                keep
            })
            .collect()
    }

    fn recover_startup(&mut self, claimed: &HashSet<String>) -> Result<Recovered, OutboxError> {
        let startup = std::mem::take(&mut self.startup);
        let now = SystemTime::now();
        let settings = self.settings.clone();
        let mut out = Recovered::default();
        let (calls, queued) =
            self.outbox
                .recover_selected(&mut |r| startup.contains(&r.session_id), &mut |r| {
                    if claimed.contains(&r.session_id) {
                        return None;
                    }
                    end_of(r, Orphaned::NodeRestarted, now, &settings, &mut out)
                })?;
        out.calls = calls.saturating_sub(claimed.iter().filter(|c| startup.contains(*c)).count());
        self.dispatch(queued);
        count_recovered(&self.metrics, out, Orphaned::NodeRestarted);
        Ok(out)
    }

    fn end_claimed(&mut self, rows: Vec<LiveRow>) -> Result<Recovered, OutboxError> {
        let now = SystemTime::now();
        let settings = self.settings.clone();
        let mut out = Recovered {
            calls: rows.len(),
            ..Default::default()
        };
        let events: Vec<NewEvent> = rows
            .iter()
            .filter_map(|r| end_of(r, Orphaned::NodeLost, now, &settings, &mut out))
            .collect();
        let queued = self.outbox.queue_unique(events)?;
        self.dispatch(queued);
        count_recovered(&self.metrics, out, Orphaned::NodeLost);
        Ok(out)
    }

    /// Hand newly queued events to the subscribers named in them.
    fn dispatch(&mut self, queued: Vec<(i64, NewEvent)>) {
        for (seq, row) in queued {
            self.stored += 1;
            let body = bytes::Bytes::from(row.body);
            let (id, session): (Arc<str>, Arc<str>) = (row.id.into(), row.session_id.into());
            let mut sent = 0;
            for url in &row.subscribers {
                let Some(i) = self
                    .settings
                    .subscribers
                    .iter()
                    .position(|s| s.url.as_str() == url)
                else {
                    continue;
                };
                if self.send_job(i, seq, &id, &session, row.created_ms, &body) {
                    sent += 1;
                }
            }
            if sent > 0 {
                self.remaining.insert(seq, sent);
            }
        }
        self.metrics
            .events
            .outbox_depth
            .store(self.pending, Ordering::Relaxed);
    }
}

/// The end of an orphaned call as an outbox row, counted in `out`; None when no
/// subscriber wants it or its record cannot be read (logged).
fn end_of(
    r: &LiveRow,
    why: Orphaned,
    now: SystemTime,
    settings: &super::settings::EventSettings,
    out: &mut Recovered,
) -> Option<NewEvent> {
    match live::orphan_end(r, why, now) {
        Ok(ev) => {
            match ev.kind {
                EventType::PhoneCallEnded => out.ended += 1,
                _ => out.failed += 1,
            }
            live::outbox_row(&ev, settings)
        }
        Err(e) => {
            tracing::error!(error = %e, "a live call's record cannot be read: it gets no end");
            None
        }
    }
}
