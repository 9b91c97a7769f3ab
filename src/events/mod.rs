//! Lifecycle events: `phone_call.*` (and `conversation.started`) posted, signed,
//! to the `[[webhooks]]` subscribers, through a durable outbox.
//!
//! The call path only calls [`Events::emit`]: a counted send into a bounded
//! queue, never I/O. One writer thread (SQLite blocks) takes the queue in
//! batches, writes each batch to the outbox in one transaction (group commit:
//! one fsync for many events), and only then hands the events to the
//! subscribers' delivery tasks. Finished deliveries come back to the writer,
//! which marks them in the outbox in its next transaction. On start the
//! deliveries still pending are sent first. See the README, "Lifecycle events".
//!
//! Delivery runs on a runtime of its own (one thread, `events-delivery`), so
//! HTTP work never queues behind or in front of SIP work on the call runtime.
//! Both event threads run at nice +10: when the cores are short, calls go first
//! and the outbox absorbs the backlog.

pub mod category;
pub mod claims;
pub mod custom_data;
pub mod delivery;
pub mod live;
pub mod payload;
pub mod record;
pub mod settings;
pub mod sign;

pub use category::{failure_category, FailureCategory, SipOutcome};
pub use payload::{EndedBy, Event, EventData, EventType};
pub use record::{CallRecord, StoredParts, TransferRecord};

use crate::metrics::Metrics;
use crate::store::live_calls::LiveChange;
use crate::store::outbox::{DeliveryState, Finished, NewEvent, Outbox, OutboxError};
use crate::store::{Store, StoreError};
use delivery::Job;
use live::Change;
use settings::EventSettings;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc::UnboundedSender;

/// Most queue messages one outbox transaction takes.
const BATCH: usize = 4096;

/// How long the writer gathers messages after the first before it commits: one
/// fsync (`synchronous = FULL`) per window instead of one per event.
const GROUP_COMMIT_WINDOW: Duration = Duration::from_millis(5);

/// What the writer thread receives.
#[derive(Debug)]
pub enum WriterMsg {
    /// An event, and the change to the live-call table that goes with it (in
    /// the same transaction; dropped with the event if it is refused).
    Emit(Box<Event>, Option<Change>),
    /// A live-call change with no event (its event is not wanted).
    Live(Change),
    /// A delivery finished (delivered, or failed for good).
    Done {
        seq: i64,
        subscriber: usize,
        state: DeliveryState,
    },
    /// Answered once everything received before it is committed.
    Flush(tokio::sync::oneshot::Sender<()>),
    /// The cluster's requests (`claims`).
    Cluster(claims::ClusterMsg),
}

#[derive(Debug, thiserror::Error)]
pub enum EventsStartError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Outbox(#[from] OutboxError),
    #[error("cannot build the webhook HTTP client: {0}")]
    Client(#[from] reqwest::Error),
    #[error("cannot start the events threads: {0}")]
    Thread(#[from] std::io::Error),
}

/// The handle the B2BUA emits through; cheap to clone.
#[derive(Clone)]
pub struct Events {
    inner: Arc<Inner>,
}

struct Inner {
    tx: Sender<WriterMsg>,
    /// Emits sent and not yet taken by the writer: the queue's bound.
    queued: Arc<AtomicUsize>,
    capacity: usize,
    /// Per event type (in `EventType::ALL` order): some subscriber wants it.
    wanted: [bool; 6],
    metrics: Arc<Metrics>,
    refused_logged: AtomicU64,
    /// Some subscriber takes `phone_call.ended` or `phone_call.failed`: calls
    /// are recorded live so that a crash does not cost them their end.
    tracks_live: bool,
    /// This node's name in the live-call records.
    node_id: Arc<str>,
    /// The delivery runtime; shut down (without waiting) with the last handle.
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl Events {
    /// [`Events::start_on_node`] with the hostname as the node's name.
    pub fn start(
        settings: &EventSettings,
        store: &Store,
        metrics: Arc<Metrics>,
    ) -> Result<Events, EventsStartError> {
        Events::start_on_node(settings, store, metrics, &live::hostname())
    }

    /// Open the outbox, end the calls the last run left live (each gets one
    /// `phone_call.ended` or `phone_call.failed` by the `system`), start the
    /// writer thread and the delivery runtime with one dispatcher per
    /// subscriber, and queue the deliveries left pending by the last run.
    pub fn start_on_node(
        settings: &EventSettings,
        store: &Store,
        metrics: Arc<Metrics>,
        node_id: &str,
    ) -> Result<Events, EventsStartError> {
        Events::start_inner(settings, store, metrics, node_id, None)
    }

    /// [`Events::start_on_node`] for a node of a cluster: the calls the last run
    /// left live are not ended here but kept for the cluster task, which ends
    /// them once Redis says which of them another node ended already
    /// ([`Events::recover_startup`]); every live-call change committed from now
    /// on is also sent to the returned feed, for the task to mirror in Redis.
    pub fn start_clustered(
        settings: &EventSettings,
        store: &Store,
        metrics: Arc<Metrics>,
        node_id: &str,
    ) -> Result<(Events, claims::ClusterLink), EventsStartError> {
        let (tx, feed) = tokio::sync::mpsc::unbounded_channel();
        let mut link = claims::ClusterLink {
            feed,
            startup: Vec::new(),
        };
        let events = Events::start_inner(
            settings,
            store,
            metrics,
            node_id,
            Some((tx, &mut link.startup)),
        )?;
        Ok((events, link))
    }

    fn start_inner(
        settings: &EventSettings,
        store: &Store,
        metrics: Arc<Metrics>,
        node_id: &str,
        cluster: Option<(
            UnboundedSender<Vec<LiveChange>>,
            &mut Vec<crate::store::live_calls::LiveRow>,
        )>,
    ) -> Result<Events, EventsStartError> {
        let settings = Arc::new(settings.clone());
        let mut outbox = Outbox::new(store.connect()?);
        let (mirror, startup) = match cluster {
            Some((tx, startup)) => {
                // Kept for the cluster task: each is ended once Redis answers.
                *startup = outbox.live_calls()?;
                let ids = startup.iter().map(|r| r.session_id.clone()).collect();
                (Some(tx), ids)
            }
            None => {
                // Before any call is taken: every row is a call of a previous run.
                let recovered = live::recover(
                    &mut outbox,
                    None,
                    &settings,
                    live::Orphaned::NodeRestarted,
                    std::time::SystemTime::now(),
                )?;
                claims::count_recovered(&metrics, recovered, live::Orphaned::NodeRestarted);
                (None, std::collections::HashSet::new())
            }
        };
        let stored = outbox.event_count()?;
        let pending = outbox.pending()?;
        // Redirects never followed: a 3xx is a final failure (delivery.rs).
        let client = crate::outbound_http::client_builder(settings.request_timeout).build()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("events-delivery")
            .on_thread_start(lower_priority)
            .enable_all()
            .build()?;
        let (tx, rx) = std::sync::mpsc::channel();
        let mut jobs = Vec::new();
        for (i, sub) in settings.subscribers.iter().enumerate() {
            let (jtx, jrx) = tokio::sync::mpsc::unbounded_channel();
            delivery::spawn_subscriber(
                runtime.handle(),
                i,
                sub.clone(),
                client.clone(),
                settings.clone(),
                metrics.clone(),
                jrx,
                tx.clone(),
            );
            jobs.push(jtx);
        }
        let queued = Arc::new(AtomicUsize::new(0));
        let mut wanted = [false; 6];
        for (i, t) in EventType::ALL.iter().enumerate() {
            wanted[i] = settings.subscribers.iter().any(|s| s.wants(*t));
        }
        let mut writer = Writer {
            outbox,
            settings: settings.clone(),
            metrics: metrics.clone(),
            jobs,
            queued: queued.clone(),
            stored,
            pending: 0,
            finished: Vec::new(),
            remaining: std::collections::HashMap::new(),
            synthetic_seq: 0,
            mirror,
            startup,
            suppressed: std::collections::HashSet::new(),
        };
        writer.resume(pending);
        std::thread::Builder::new()
            .name("events-writer".into())
            .spawn(move || {
                lower_priority();
                writer.run(rx)
            })?;
        Ok(Events {
            inner: Arc::new(Inner {
                tx,
                queued,
                capacity: settings.queue_capacity,
                wanted,
                metrics,
                refused_logged: AtomicU64::new(0),
                tracks_live: wanted[EventType::PhoneCallEnded as usize]
                    || wanted[EventType::PhoneCallFailed as usize],
                node_id: node_id.into(),
                runtime: Some(runtime),
            }),
        })
    }

    /// Whether some subscriber takes events of this type (else building one is
    /// wasted work).
    pub fn wants(&self, kind: EventType) -> bool {
        self.inner.wanted[kind as usize]
    }

    /// Count an event of a type no subscriber takes (nothing to build or send).
    pub fn count(&self, kind: EventType) {
        self.inner.metrics.events.emitted[kind as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Whether calls are recorded live (some subscriber takes their end): else
    /// building a live-call change is wasted work.
    pub fn tracks_live(&self) -> bool {
        self.inner.tracks_live
    }

    /// This node's name, as the live-call records carry it.
    pub fn node_id(&self) -> &str {
        &self.inner.node_id
    }

    /// Queue an event for the outbox. Never blocks: when the queue is full the
    /// event is refused, counted (`handoff_events_dropped_total{reason="queue_full"}`)
    /// and logged.
    pub fn emit(&self, event: Event) {
        self.emit_with(event, None)
    }

    /// [`Events::emit`] with a change to the live-call table written in the same
    /// transaction. An event no subscriber wants still carries its change; a
    /// refused event drops its change too (a close refused leaves the call live,
    /// so a restart still ends it).
    pub fn emit_with(&self, event: Event, live: Option<Change>) {
        let m = &self.inner.metrics.events;
        m.emitted[event.kind as usize].fetch_add(1, Ordering::Relaxed);
        if !self.wants(event.kind) {
            if let Some(change) = live {
                self.live(change);
            }
            return;
        }
        if self.inner.queued.fetch_add(1, Ordering::AcqRel) >= self.inner.capacity {
            self.inner.queued.fetch_sub(1, Ordering::AcqRel);
            Metrics::inc(&m.dropped_queue_full);
            let n = self.inner.refused_logged.fetch_add(1, Ordering::Relaxed);
            if n.is_multiple_of(1000) {
                tracing::error!(event_id = %event.id, kind = event.kind.as_str(), session_id = %event.session_id, refused_so_far = n + 1, "events queue full: event dropped (see [events] queue_capacity)");
            }
            return;
        }
        if self
            .inner
            .tx
            .send(WriterMsg::Emit(Box::new(event), live))
            .is_err()
        {
            self.inner.queued.fetch_sub(1, Ordering::AcqRel);
            Metrics::inc(&m.dropped_store_error);
            tracing::error!("events writer is gone: event dropped");
        }
    }

    /// A live-call change with no event. Not bounded by the events queue: at
    /// most three per call, and calls are bounded by `limits.max_calls`.
    pub fn live(&self, change: Change) {
        if self.inner.tracks_live && self.inner.tx.send(WriterMsg::Live(change)).is_err() {
            tracing::error!("events writer is gone: live-call change dropped");
        }
    }

    /// Wait (up to `within`) until everything emitted so far is in the outbox.
    pub async fn flush(&self, within: Duration) -> bool {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.inner.tx.send(WriterMsg::Flush(tx)).is_err() {
            return false;
        }
        matches!(tokio::time::timeout(within, rx).await, Ok(Ok(())))
    }
}

/// How much less CPU priority the event threads have than the SIP workers.
const NICE: i32 = 10;

/// Lower the calling thread's CPU priority (Linux applies nice per thread).
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: plain syscalls on the calling thread's own id; no memory is shared.
        let rc = unsafe {
            let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
            libc::setpriority(libc::PRIO_PROCESS as _, tid, NICE)
        };
        if rc != 0 {
            tracing::debug!("could not lower the priority of an events thread");
        }
    }
}

/// The writer thread's state.
struct Writer {
    outbox: Outbox,
    settings: Arc<EventSettings>,
    metrics: Arc<Metrics>,
    /// Per subscriber, its dispatcher's inbox.
    jobs: Vec<UnboundedSender<Job>>,
    queued: Arc<AtomicUsize>,
    /// Events in the outbox (pending and history).
    stored: usize,
    /// Deliveries not finished (the depth gauge).
    pending: i64,
    /// Finished deliveries not yet written.
    finished: Vec<Finished>,
    /// Stored events with deliveries still pending, and how many.
    remaining: std::collections::HashMap<i64, usize>,
    /// For events that could not be stored: negative sequence numbers.
    synthetic_seq: i64,
    /// In a cluster: where committed live-call changes go to be mirrored.
    mirror: Option<UnboundedSender<Vec<LiveChange>>>,
    /// In a cluster: the calls the last run left live, not yet ended.
    startup: std::collections::HashSet<String>,
    /// Calls another node ended for this one: their own end is not sent.
    suppressed: std::collections::HashSet<String>,
}

impl Writer {
    /// Hand one stored event to subscriber `i`'s dispatcher; whether it took it.
    fn send_job(
        &mut self,
        i: usize,
        seq: i64,
        id: &Arc<str>,
        session: &Arc<str>,
        created_ms: u64,
        body: &bytes::Bytes,
    ) -> bool {
        let job = Job {
            seq,
            id: id.clone(),
            session_id: session.clone(),
            created_ms,
            body: body.clone(),
        };
        let sent = self.jobs.get(i).is_some_and(|j| j.send(job).is_ok());
        if sent {
            self.pending += 1;
        }
        sent
    }

    fn resume(&mut self, pending: Vec<crate::store::outbox::PendingDelivery>) {
        let mut orphans = Vec::new();
        let mut resumed = 0;
        for p in pending {
            let Some(i) = self
                .settings
                .subscribers
                .iter()
                .position(|s| s.url.as_str() == p.subscriber)
            else {
                orphans.push(Finished {
                    seq: p.seq,
                    subscriber: p.subscriber,
                    state: DeliveryState::Failed,
                    at_ms: delivery::now_ms(),
                });
                continue;
            };
            let job = Job {
                seq: p.seq,
                id: p.id.into(),
                session_id: p.session_id.into(),
                created_ms: p.created_ms,
                body: p.body.into(),
            };
            if self.jobs[i].send(job).is_ok() {
                resumed += 1;
                self.pending += 1;
                *self.remaining.entry(p.seq).or_default() += 1;
            }
        }
        if !orphans.is_empty() {
            tracing::warn!(
                count = orphans.len(),
                "queued events for subscribers no longer configured are given up"
            );
            self.finished = orphans;
        }
        if resumed > 0 {
            tracing::info!(resumed, "resuming event deliveries from the outbox");
        }
        self.metrics
            .events
            .outbox_depth
            .store(self.pending, Ordering::Relaxed);
    }

    fn run(mut self, rx: Receiver<WriterMsg>) {
        if !self.finished.is_empty() {
            self.commit(Vec::new(), Vec::new(), Vec::new());
        }
        loop {
            let first = match rx.recv_timeout(Duration::from_secs(1)) {
                Ok(m) => m,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => return,
            };
            let mut emits = Vec::new();
            let mut flushes = Vec::new();
            let mut lives = Vec::new();
            let mut clusters = Vec::new();
            let mut take = |m: WriterMsg, this: &mut Writer| match m {
                WriterMsg::Emit(e, live) => {
                    this.queued.fetch_sub(1, Ordering::AcqRel);
                    if let Some(l) = live {
                        lives.push((Some(e.id.clone()), l));
                    }
                    emits.push(*e);
                }
                WriterMsg::Live(l) => lives.push((None, l)),
                WriterMsg::Done {
                    seq,
                    subscriber,
                    state,
                } => {
                    this.pending -= 1;
                    if let Some(n) = this.remaining.get_mut(&seq) {
                        *n = n.saturating_sub(1);
                        if *n == 0 {
                            this.remaining.remove(&seq);
                        }
                    }
                    if seq >= 0 {
                        if let Some(s) = this.settings.subscribers.get(subscriber) {
                            this.finished.push(Finished {
                                seq,
                                subscriber: s.url.as_str().to_owned(),
                                state,
                                at_ms: delivery::now_ms(),
                            });
                        }
                    }
                }
                WriterMsg::Flush(ack) => flushes.push(ack),
                WriterMsg::Cluster(m) => clusters.push(m),
            };
            take(first, &mut self);
            // Sleep through the window rather than wait on the channel: senders
            // then find no parked receiver to wake (no syscall per event).
            std::thread::sleep(GROUP_COMMIT_WINDOW);
            for _ in 1..BATCH {
                match rx.try_recv() {
                    Ok(m) => take(m, &mut self),
                    Err(_) => break,
                }
            }
            self.commit(emits, lives, flushes);
            for m in clusters {
                self.cluster(m);
            }
        }
    }

    /// One transaction for the batch (events, finished deliveries, live-call
    /// changes in the order they came); then the new events go to their subscribers.
    fn commit(
        &mut self,
        emits: Vec<Event>,
        mut lives: Vec<(Option<String>, Change)>,
        flushes: Vec<tokio::sync::oneshot::Sender<()>>,
    ) {
        let emits = self.unsuppressed(emits);
        let ev = &self.metrics.events;
        let mut rows: Vec<(NewEvent, Vec<usize>)> = emits
            .into_iter()
            .filter_map(|e| {
                let subs: Vec<usize> = self
                    .settings
                    .subscribers
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| s.wants(e.kind))
                    .map(|(i, _)| i)
                    .collect();
                (!subs.is_empty()).then(|| {
                    let row = NewEvent {
                        body: e.to_json(),
                        id: e.id,
                        session_id: e.session_id,
                        kind: e.kind.as_str().to_owned(),
                        created_ms: e
                            .created_at
                            .duration_since(std::time::UNIX_EPOCH)
                            .unwrap_or_default()
                            .as_millis() as u64,
                        subscribers: subs
                            .iter()
                            .map(|i| self.settings.subscribers[*i].url.as_str().to_owned())
                            .collect(),
                    };
                    (row, subs)
                })
            })
            .collect();
        // Room: the oldest finished history goes first (a tenth of the outbox
        // more than needed, so pruning is not paid on every batch). If the outbox
        // is still full of undelivered events, the newest events that do not fit
        // are refused, loudly.
        let cap = self.settings.outbox_capacity;
        let finished_events = self.stored.saturating_sub(self.remaining.len());
        let prune = if self.stored + rows.len() > cap {
            (self.stored + rows.len() - cap + cap / 10).min(finished_events)
        } else {
            0
        };
        let room = cap.saturating_sub(self.stored - prune);
        if room < rows.len() {
            Metrics::add(&ev.dropped_outbox_full, (rows.len() - room) as u64);
            for (r, _) in &rows[room..] {
                tracing::error!(event_id = %r.id, kind = %r.kind, session_id = %r.session_id, "event outbox full of undelivered events: event dropped (see [events] outbox_capacity)");
            }
            // A dropped event's live-call change goes with it.
            let dropped: std::collections::HashSet<&str> =
                rows[room..].iter().map(|(r, _)| r.id.as_str()).collect();
            lives.retain(|(id, _)| id.as_deref().is_none_or(|id| !dropped.contains(id)));
            rows.truncate(room);
        }
        let finished = std::mem::take(&mut self.finished);
        let events: Vec<NewEvent> = rows.iter().map(|(r, _)| r.clone()).collect();
        let lives: Vec<LiveChange> = lives.into_iter().map(|(_, l)| l.into_store()).collect();
        let committed = self.outbox.commit_with(&finished, prune, &events, &lives);
        // Mirrored even if the local write failed: the cluster may still end the call.
        if let Some(m) = &self.mirror {
            if !lives.is_empty() {
                let _ = m.send(lives);
            }
        }
        let seqs: Vec<i64> = match committed {
            Ok((seqs, pruned)) => {
                self.stored = self.stored.saturating_sub(pruned) + seqs.len();
                for (seq, (_, subs)) in seqs.iter().zip(&rows) {
                    self.remaining.insert(*seq, subs.len());
                }
                seqs
            }
            Err(e) => {
                // Not durable, but still sent: lost only if handoff stops first.
                tracing::error!(error = %e, count = rows.len(), "cannot write events to the outbox; sending them without it");
                Metrics::add(&ev.dropped_store_error, rows.len() as u64);
                rows.iter()
                    .map(|_| {
                        self.synthetic_seq -= 1;
                        self.synthetic_seq
                    })
                    .collect()
            }
        };
        for ((row, subs), seq) in rows.into_iter().zip(seqs) {
            let body = bytes::Bytes::from(row.body);
            let (id, session): (Arc<str>, Arc<str>) = (row.id.into(), row.session_id.into());
            for i in subs {
                self.send_job(i, seq, &id, &session, row.created_ms, &body);
            }
        }
        let ev = &self.metrics.events;
        ev.outbox_depth.store(self.pending, Ordering::Relaxed);
        for f in flushes {
            let _ = f.send(());
        }
    }
}

#[cfg(test)]
mod tests;
