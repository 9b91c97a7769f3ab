//! The cluster task: the async shell around [`Mirror`] and the scripts. It only
//! moves bytes between the events writer and Redis; what to write and what a
//! claim means are decided in `mirror`, `wire` and the scripts.

use super::mirror::{Batch, Mirror};
use super::{scripts, wire};
use crate::config::cluster::ClusterSettings;
use crate::events::claims::ClusterLink;
use crate::events::Events;
use crate::metrics::Metrics;
use crate::store::live_calls::{LiveChange, LiveRow};
use redis::aio::ConnectionManager;
use redis::Script;
use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::Instant;

/// Longest a committed live-call change waits before it is written to Redis.
pub const MIRROR_DELAY: Duration = Duration::from_millis(50);

/// The running task; [`Cluster::stop`] writes what is left and ends it.
pub struct Cluster {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Cluster {
    /// Write the live-call changes not yet in Redis (the events must be flushed
    /// first), then stop; waits at most `within`.
    pub async fn stop(mut self, within: Duration) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if tokio::time::timeout(within, &mut self.task).await.is_err() {
            self.task.abort();
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Start the task for node `settings.node_id` on `conn`, keys under `prefix`,
/// each Redis call bounded by `timeout`.
pub fn spawn(
    conn: ConnectionManager,
    prefix: &str,
    timeout: Duration,
    settings: ClusterSettings,
    events: Events,
    link: ClusterLink,
    metrics: Arc<Metrics>,
) -> Cluster {
    let (stop, stop_rx) = tokio::sync::oneshot::channel();
    let mut names: Vec<String> = vec![settings.node_id.clone()];
    for r in &link.startup {
        if !names.contains(&r.node_id) {
            names.push(r.node_id.clone());
        }
    }
    let t = Task {
        conn,
        prefix: prefix.to_owned(),
        timeout,
        settings,
        events,
        metrics,
        mirror: Mirror::default(),
        joined: false,
        startup_pending: true,
        startup_names: names,
        claiming_pending: true,
        failing: false,
        healthy_since: None,
        join: Script::new(scripts::JOIN),
        beat: Script::new(scripts::BEAT),
        claim: Script::new(scripts::CLAIM),
    };
    Cluster {
        stop: Some(stop),
        task: tokio::spawn(t.run(link.feed, stop_rx)),
    }
}

struct Task {
    conn: ConnectionManager,
    prefix: String,
    timeout: Duration,
    settings: ClusterSettings,
    events: Events,
    metrics: Arc<Metrics>,
    mirror: Mirror,
    /// Listed alive in Redis (joined, and not since taken for dead).
    joined: bool,
    /// The calls the last run left are not ended yet.
    startup_pending: bool,
    /// This node's name and every other its old live calls carry.
    startup_names: Vec<String>,
    /// Calls in this node's claim may wait to be ended.
    claiming_pending: bool,
    /// The last Redis call failed (logged once per change).
    failing: bool,
    /// Since when every Redis call has worked (None: the last one failed).
    healthy_since: Option<Instant>,
    join: Script,
    beat: Script,
    claim: Script,
}

enum Beat {
    Written,
    /// Another node took this one for dead.
    Fenced,
}

impl Task {
    async fn run(
        mut self,
        mut feed: UnboundedReceiver<Vec<LiveChange>>,
        mut stop: tokio::sync::oneshot::Receiver<()>,
    ) {
        let mut tick = tokio::time::interval(self.settings.heartbeat);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // When a committed change must be written by (None: nothing waits).
        let mut due: Option<Instant> = None;
        loop {
            tokio::select! {
                biased;
                _ = &mut stop => {
                    while let Ok(changes) = feed.try_recv() {
                        self.apply(changes);
                    }
                    if self.joined && !self.mirror.is_clean() {
                        let _ = self.beat_once().await;
                    }
                    return;
                }
                Some(changes) = feed.recv() => {
                    self.apply(changes);
                    due.get_or_insert_with(|| Instant::now() + MIRROR_DELAY);
                }
                _ = sleep_until(due) => {
                    due = None;
                    if self.joined {
                        self.beat_once().await;
                    }
                }
                _ = tick.tick() => {
                    due = None;
                    self.tick().await;
                }
            }
        }
    }

    fn apply(&mut self, changes: Vec<LiveChange>) {
        for c in changes {
            self.mirror.apply(c);
        }
    }

    async fn tick(&mut self) {
        if !self.joined && !self.join_once().await {
            return;
        }
        if !self.beat_once().await {
            return;
        }
        self.claim_once().await;
    }

    /// Runs one Redis call under the timeout; logs a change between working and
    /// failing once.
    async fn redis<T>(
        &mut self,
        what: &str,
        f: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Option<T> {
        let out = match tokio::time::timeout(self.timeout, f).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {} ms", self.timeout.as_millis())),
        };
        match out {
            Ok(v) => {
                self.healthy_since.get_or_insert_with(Instant::now);
                if self.failing {
                    self.failing = false;
                    tracing::info!("cluster: Redis answers again");
                }
                Some(v)
            }
            Err(e) => {
                self.healthy_since = None;
                Metrics::inc(&self.metrics.cluster_heartbeat_errors_total);
                if !self.failing {
                    self.failing = true;
                    tracing::error!(error = %e, step = what, "cluster: Redis does not answer; liveness and claims wait for it");
                }
                None
            }
        }
    }

    /// Join (or join again after being taken for dead). True once joined.
    async fn join_once(&mut self) -> bool {
        let script = self.join.clone();
        let mut inv = script.prepare_invoke();
        inv.arg(&self.prefix);
        for n in &self.startup_names {
            inv.arg(n);
        }
        let mut conn = self.conn.clone();
        let Some(claimed) = self
            .redis::<Vec<String>>("join", inv.invoke_async(&mut conn))
            .await
        else {
            return false;
        };
        let claimed: HashSet<String> = claimed.into_iter().collect();
        let first_join = self.startup_pending;
        if self.startup_pending {
            match self.events.recover_startup(claimed.clone()).await {
                Ok(r) => {
                    self.startup_pending = false;
                    tracing::info!(
                        node_id = %self.settings.node_id,
                        ended_here = r.calls,
                        ended_elsewhere = claimed.len(),
                        "joined the cluster"
                    );
                }
                Err(e) => {
                    // Joining again is harmless: try at the next tick.
                    tracing::error!(error = %e, "cluster: the calls the last run left cannot be ended yet");
                    return false;
                }
            }
        }
        // Calls this node still holds that another node ended: it was taken for
        // dead while alive. (Not listed, with none of them: Redis forgot it.)
        let lost = self.mirror.held(&claimed);
        if !lost.is_empty() {
            Metrics::inc(&self.metrics.cluster_fenced_total);
            tracing::error!(
                node_id = %self.settings.node_id,
                calls = lost.len(),
                timeout_secs = self.settings.node_timeout.as_secs(),
                "cluster: another node took this one for dead (no heartbeat reached Redis for cluster.node_timeout_secs) and ended its calls; their own end will not be sent"
            );
            self.events.suppress_ends(lost);
        } else if !first_join && self.mirror.live_calls() > 0 {
            tracing::warn!(
                node_id = %self.settings.node_id,
                "cluster: Redis no longer listed this node (restarted without its data?); live calls written again"
            );
        }
        self.mirror.rejoin(&claimed);
        self.joined = true;
        self.metrics.cluster_joined.store(1, Ordering::Relaxed);
        true
    }

    /// One heartbeat with the live set's changes. False when not written.
    async fn beat_once(&mut self) -> bool {
        let batch = self.mirror.batch();
        match self.write(&batch).await {
            Some(Beat::Written) => {
                self.mirror.written(&batch);
                true
            }
            Some(Beat::Fenced) => {
                // Taken for dead, or Redis lost its data: the join tells which.
                self.metrics.cluster_joined.store(0, Ordering::Relaxed);
                self.joined = false;
                false
            }
            None => false,
        }
    }

    async fn write(&mut self, batch: &Batch) -> Option<Beat> {
        let script = self.beat.clone();
        let mut inv = script.prepare_invoke();
        inv.arg(&self.prefix)
            .arg(&self.settings.node_id)
            .arg(batch.puts.len());
        for (id, row) in &batch.puts {
            inv.arg(id).arg(row);
        }
        for id in &batch.dels {
            inv.arg(id);
        }
        let mut conn = self.conn.clone();
        let r: i64 = self.redis("heartbeat", inv.invoke_async(&mut conn)).await?;
        Some(if r == 1 { Beat::Written } else { Beat::Fenced })
    }

    /// Claim the calls of dead nodes, then end every call in this node's claim.
    async fn claim_once(&mut self) {
        if !may_claim(
            self.healthy_since,
            Instant::now(),
            self.settings.node_timeout,
        ) {
            // Just back from an outage: the others' heartbeats are as old as ours.
            if self.claiming_pending {
                self.end_claimed().await;
            }
            return;
        }
        let script = self.claim.clone();
        let mut inv = script.prepare_invoke();
        inv.arg(&self.prefix)
            .arg(&self.settings.node_id)
            .arg(self.settings.node_timeout.as_millis() as u64);
        let mut conn = self.conn.clone();
        let Some(moved) = self
            .redis::<u64>("claim", inv.invoke_async(&mut conn))
            .await
        else {
            return;
        };
        if moved > 0 {
            tracing::warn!(
                calls = moved,
                "cluster: claimed the live calls of a node found dead"
            );
            self.claiming_pending = true;
        }
        if self.claiming_pending {
            self.end_claimed().await;
        }
    }

    async fn end_claimed(&mut self) {
        let key = format!("{}claiming:{}", self.prefix, self.settings.node_id);
        let mut conn = self.conn.clone();
        let Some(fields) = self
            .redis::<Vec<(String, Vec<u8>)>>(
                "read claim",
                redis::cmd("HGETALL").arg(&key).query_async(&mut conn),
            )
            .await
        else {
            return;
        };
        let (rows, ids) = decode_claim(fields);
        if !rows.is_empty() {
            if let Err(e) = self.events.end_claimed(rows).await {
                tracing::error!(error = %e, "cluster: claimed calls cannot be ended yet");
                return;
            }
        }
        if !ids.is_empty() {
            let mut conn = self.conn.clone();
            let mut hdel = redis::cmd("HDEL");
            hdel.arg(&key).arg(&ids);
            if self
                .redis("clear claim", hdel.query_async::<i64>(&mut conn))
                .await
                .is_none()
            {
                // Ended already: a retry queues nothing twice (same event ids).
                return;
            }
        }
        self.claiming_pending = false;
    }
}

/// Whether this node may take others for dead: only once its own Redis calls
/// have all worked for a whole node timeout. After an outage of Redis (or of
/// this node's link to it) every heartbeat in Redis is old, this node's too;
/// a live node shows itself again within the timeout, so nobody is claimed for
/// an outage they all shared.
fn may_claim(healthy_since: Option<Instant>, now: Instant, timeout: Duration) -> bool {
    healthy_since.is_some_and(|t| now.saturating_duration_since(t) >= timeout)
}

/// The rows of a claim, and every field to clear (refused rows included:
/// logged, they cannot be ended).
fn decode_claim(fields: Vec<(String, Vec<u8>)>) -> (Vec<LiveRow>, Vec<String>) {
    let mut rows = Vec::new();
    let mut ids = Vec::new();
    for (id, value) in fields {
        match wire::decode(&id, &value) {
            Ok(r) => rows.push(r),
            Err(e) => {
                tracing::error!(error = %e, "cluster: a claimed live call cannot be read; it gets no end")
            }
        }
        ids.push(id);
    }
    (rows, ids)
}

async fn sleep_until(due: Option<Instant>) {
    match due {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_claims_only_after_a_whole_timeout_of_working_redis_calls() {
        let t0 = Instant::now();
        let timeout = Duration::from_secs(15);
        assert!(!may_claim(None, t0, timeout));
        assert!(!may_claim(Some(t0), t0 + Duration::from_secs(14), timeout));
        assert!(may_claim(Some(t0), t0 + timeout, timeout));
    }

    #[test]
    fn a_claim_is_read_and_every_field_cleared_even_the_unreadable() {
        let row = LiveRow {
            session_id: "abc".into(),
            org_id: "o".into(),
            node_id: "n1".into(),
            started_ms: 1,
            answered_ms: None,
            record: b"{}".to_vec(),
        };
        let (rows, ids) = decode_claim(vec![
            ("abc".into(), wire::encode(&row).into_bytes()),
            ("bad id!".into(), wire::encode(&row).into_bytes()),
            ("def".into(), b"garbage".to_vec()),
        ]);
        assert_eq!(rows, vec![row]);
        assert_eq!(ids, vec!["abc", "bad id!", "def"]);
    }
}
