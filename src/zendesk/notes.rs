//! The task that posts ticket notes, off the SIP path: a call hands a
//! [`TicketNote`] to [`TicketNotes::queue`] (a bounded channel, never waited on)
//! and goes on; the task posts each note on a task of its own through the
//! Zendesk client of the note's org ([`ClientFor`], the seam per-org accounts
//! plug into), a bounded number at a time.

use super::comment::CommentOutcome;
use super::note::{body, marker, TicketNote};
use super::ZendeskClient;
use crate::metrics::Metrics;
use std::sync::Arc;
use tokio::sync::{mpsc, Semaphore};

/// Notes waiting for the task; more are dropped and counted as failed.
const QUEUE: usize = 1024;
/// Notes being posted at once.
const CONCURRENT: usize = 16;

/// The Zendesk client a note for this org is posted with (None: the org has no
/// Zendesk account handoff can write to).
pub trait ClientFor: Send + Sync {
    fn client_for(&self, org_id: &str) -> Option<Arc<ZendeskClient>>;
}

/// The calls' handle on the note task.
#[derive(Clone)]
pub struct TicketNotes {
    tx: mpsc::Sender<TicketNote>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for TicketNotes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TicketNotes")
    }
}

impl TicketNotes {
    /// Starts the task (on the current tokio runtime).
    pub fn start(clients: Arc<dyn ClientFor>, metrics: Arc<Metrics>) -> TicketNotes {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(rx, clients, metrics.clone()));
        TicketNotes { tx, metrics }
    }

    /// Hands `note` to the task; never waits. A full queue drops it, counted.
    pub fn queue(&self, note: TicketNote) {
        match self.tx.try_send(note) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(n)) => {
                Metrics::inc(&self.metrics.ticket_notes_failed_total);
                tracing::warn!(
                    ticket = n.ticket_id,
                    "ticket note dropped: the note queue is full"
                );
            }
            Err(mpsc::error::TrySendError::Closed(n)) => {
                Metrics::inc(&self.metrics.ticket_notes_failed_total);
                tracing::warn!(
                    ticket = n.ticket_id,
                    "ticket note dropped: the note task has stopped"
                );
            }
        }
    }
}

async fn run(
    mut rx: mpsc::Receiver<TicketNote>,
    clients: Arc<dyn ClientFor>,
    metrics: Arc<Metrics>,
) {
    let slots = Arc::new(Semaphore::new(CONCURRENT));
    while let Some(note) = rx.recv().await {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let Some(client) = clients.client_for(&note.org_id) else {
            Metrics::inc(&metrics.ticket_notes_failed_total);
            tracing::warn!(org = %note.org_id, ticket = note.ticket_id, "no Zendesk account for the org: no ticket note");
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            post(&client, &note, &metrics).await;
            drop(permit);
        });
    }
}

/// Posts one note and counts what became of it.
pub async fn post(client: &ZendeskClient, note: &TicketNote, metrics: &Metrics) {
    let text = body(note);
    let mark = marker(&note.session_id, note.transfer);
    match client
        .add_private_comment(note.ticket_id, &text, &mark)
        .await
    {
        Ok(outcome) => {
            Metrics::inc(&metrics.ticket_notes_posted_total);
            if outcome == CommentOutcome::AlreadyThere {
                Metrics::inc(&metrics.ticket_notes_deduplicated_total);
            }
            tracing::info!(ticket = note.ticket_id, session = %note.session_id, already_there = outcome == CommentOutcome::AlreadyThere, "ticket note added");
        }
        Err(e) => {
            Metrics::inc(&metrics.ticket_notes_failed_total);
            tracing::warn!(ticket = note.ticket_id, session = %note.session_id, error = %e, "ticket note not added");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn note(ticket_id: u64) -> TicketNote {
        TicketNote {
            ticket_id,
            org_id: "org-1".into(),
            session_id: "s-1".into(),
            agent_id: "a-1".into(),
            caller_phone: None,
            destination: None,
            duration: Duration::ZERO,
            summary: None,
            transfer: 0,
        }
    }

    #[test]
    fn a_full_queue_or_a_stopped_task_drops_the_note_counted_never_waits() {
        let metrics = Arc::new(Metrics::default());
        let (tx, mut rx) = mpsc::channel(1);
        let notes = TicketNotes {
            tx,
            metrics: metrics.clone(),
        };
        notes.queue(note(1));
        notes.queue(note(2)); // full: dropped at once
        assert_eq!(rx.try_recv().map(|n| n.ticket_id), Ok(1));
        assert_eq!(
            metrics
                .ticket_notes_failed_total
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
        drop(rx);
        notes.queue(note(3)); // the task is gone
        assert_eq!(
            metrics
                .ticket_notes_failed_total
                .load(std::sync::atomic::Ordering::Relaxed),
            2
        );
    }
}
