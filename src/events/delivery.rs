//! Delivery to one subscriber: a dispatcher task that keeps each session's events
//! in order (a session's next event waits until the one before is delivered or
//! finally failed) while different sessions go in parallel, up to
//! `[events] max_in_flight` requests at once; and the retry loop of one delivery.

use super::settings::{EventSettings, Subscriber};
use super::sign;
use super::WriterMsg;
use crate::metrics::Metrics;
use bytes::Bytes;
use rand::Rng;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;

/// One event for one subscriber.
#[derive(Debug, Clone)]
pub struct Job {
    /// The event's outbox sequence number.
    pub seq: i64,
    pub id: Arc<str>,
    pub session_id: Arc<str>,
    pub created_ms: u64,
    pub body: Bytes,
}

/// What one attempt's answer means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Delivered,
    /// Try again: after the `Retry-After` the subscriber asked for, or the backoff.
    Retry(Option<Duration>),
    /// A 4xx other than 408 and 429: sending again would not help.
    Final,
    /// A 3xx: never followed (the signed event would go where the answer points)
    /// nor sent again.
    Redirect,
}

/// `status` None: no answer (connection refused or reset, timeout).
pub fn verdict(status: Option<u16>, retry_after: Option<&str>) -> Verdict {
    match status {
        None => Verdict::Retry(None),
        Some(200..=299) => Verdict::Delivered,
        Some(429) => Verdict::Retry(retry_after.and_then(parse_retry_after)),
        Some(408) | Some(500..=599) => Verdict::Retry(None),
        Some(s) if crate::outbound_http::is_redirect(s) => Verdict::Redirect,
        Some(_) => Verdict::Final,
    }
}

/// `Retry-After` in delay-seconds (RFC 9110 10.2.3); an HTTP-date is not read
/// (the backoff applies instead).
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    v.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// The wait before attempt `attempt + 1` (`attempt` >= 1 failed so far):
/// exponential from `base`, capped at `max`, with "equal jitter" (half fixed,
/// half random) so that many deliveries failing together do not retry together.
pub fn backoff(base: Duration, max: Duration, attempt: u32, jitter: f64) -> Duration {
    let exp = base.saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
    let cap = exp.min(max);
    cap / 2 + cap.mul_f64(jitter.clamp(0.0, 1.0) / 2.0)
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

/// Everything a delivery needs, shared by a subscriber's tasks.
struct Ctx {
    index: usize,
    sub: Subscriber,
    client: reqwest::Client,
    settings: Arc<EventSettings>,
    metrics: Arc<Metrics>,
    done: std::sync::mpsc::Sender<WriterMsg>,
}

/// Start the dispatcher of subscriber `index`; it takes jobs from `jobs` until
/// that channel closes.
#[allow(clippy::too_many_arguments)]
pub fn spawn_subscriber(
    runtime: &tokio::runtime::Handle,
    index: usize,
    sub: Subscriber,
    client: reqwest::Client,
    settings: Arc<EventSettings>,
    metrics: Arc<Metrics>,
    jobs: mpsc::UnboundedReceiver<Job>,
    done: std::sync::mpsc::Sender<WriterMsg>,
) {
    let ctx = Arc::new(Ctx {
        index,
        sub,
        client,
        settings,
        metrics,
        done,
    });
    runtime.spawn(dispatch(ctx, jobs));
}

async fn dispatch(ctx: Arc<Ctx>, mut jobs: mpsc::UnboundedReceiver<Job>) {
    // Per session: its events not yet finished, the head in flight or waiting.
    let mut queues: HashMap<Arc<str>, VecDeque<Job>> = HashMap::new();
    // Sessions whose head may be sent now.
    let mut ready: VecDeque<Arc<str>> = VecDeque::new();
    let (fin_tx, mut fin_rx) = mpsc::unbounded_channel::<Arc<str>>();
    let mut in_flight = 0usize;
    let mut open = true;
    loop {
        while in_flight < ctx.settings.max_in_flight {
            let Some(session) = ready.pop_front() else {
                break;
            };
            let Some(job) = queues.get(&session).and_then(|q| q.front()).cloned() else {
                continue;
            };
            in_flight += 1;
            let (ctx, fin) = (ctx.clone(), fin_tx.clone());
            tokio::spawn(async move {
                let state = deliver(&ctx, &job).await;
                let _ = ctx.done.send(WriterMsg::Done {
                    seq: job.seq,
                    subscriber: ctx.index,
                    state,
                });
                let _ = fin.send(job.session_id.clone());
            });
        }
        if !open && in_flight == 0 && ready.is_empty() {
            return;
        }
        tokio::select! {
            job = jobs.recv(), if open => match job {
                Some(job) => {
                    let q = queues.entry(job.session_id.clone()).or_default();
                    if q.is_empty() {
                        ready.push_back(job.session_id.clone());
                    }
                    q.push_back(job);
                }
                None => open = false,
            },
            Some(session) = fin_rx.recv() => {
                in_flight -= 1;
                let more = queues.get_mut(&session).is_some_and(|q| {
                    q.pop_front();
                    !q.is_empty()
                });
                if more {
                    ready.push_back(session);
                } else {
                    queues.remove(&session);
                }
            }
        }
    }
}

/// Send one event until it is delivered, refused for good, or too old.
async fn deliver(ctx: &Ctx, job: &Job) -> crate::store::outbox::DeliveryState {
    use crate::store::outbox::DeliveryState;
    let ev = &ctx.metrics.events;
    let max_age = ctx.settings.max_age.as_millis() as u64;
    let mut attempt: u32 = 0;
    if now_ms().saturating_sub(job.created_ms) > max_age {
        // Queued longer than it may live (handoff was down, or the subscriber stalled).
        tracing::warn!(url = %ctx.sub.url, event_id = %job.id, "event older than [events] max_age_secs before its first attempt; giving up");
        Metrics::inc(&ev.failed_total);
        return DeliveryState::Failed;
    }
    loop {
        attempt += 1;
        let ts = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let sig = sign::signature(ctx.sub.secret.expose(), ts, &job.body);
        let sent = ctx
            .client
            .post(ctx.sub.url.clone())
            .header("Content-Type", "application/json")
            .header(sign::EVENT_ID_HEADER, &*job.id)
            .header(sign::TIMESTAMP_HEADER, ts.to_string())
            .header(sign::SIGNATURE_HEADER, sig)
            .body(job.body.clone())
            .send()
            .await;
        let (status, retry_after, error) = match &sent {
            Ok(resp) => (
                Some(resp.status().as_u16()),
                resp.headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned),
                None,
            ),
            Err(e) => (None, None, Some(e.to_string())),
        };
        // The body is not needed; dropping the response frees the connection.
        drop(sent);
        let wait = match verdict(status, retry_after.as_deref()) {
            Verdict::Delivered => {
                Metrics::inc(&ev.delivered_total);
                return DeliveryState::Delivered;
            }
            Verdict::Final => {
                tracing::warn!(url = %ctx.sub.url, event_id = %job.id, status, "subscriber refused the event; not sent again");
                Metrics::inc(&ev.failed_total);
                return DeliveryState::Failed;
            }
            Verdict::Redirect => {
                tracing::error!(url = %ctx.sub.url, event_id = %job.id, status, "subscriber answered a redirect; not followed, not sent again (fix the [[webhooks]] url)");
                Metrics::inc(&ctx.metrics.outbound_redirects_refused_total);
                Metrics::inc(&ev.failed_total);
                return DeliveryState::Failed;
            }
            Verdict::Retry(Some(asked)) => asked.min(ctx.settings.retry_after_max),
            Verdict::Retry(None) => backoff(
                ctx.settings.retry_base,
                ctx.settings.retry_max,
                attempt,
                rand::thread_rng().gen(),
            ),
        };
        let age = now_ms().saturating_sub(job.created_ms);
        if age + wait.as_millis() as u64 > max_age {
            tracing::warn!(url = %ctx.sub.url, event_id = %job.id, status, error, attempts = attempt, "event older than [events] max_age_secs; giving up");
            Metrics::inc(&ev.failed_total);
            return DeliveryState::Failed;
        }
        tracing::debug!(url = %ctx.sub.url, event_id = %job.id, status, error, wait_ms = wait.as_millis() as u64, "delivery failed; retrying");
        Metrics::inc(&ev.retried_total);
        tokio::time::sleep(wait).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn success_retry_and_final_answers() {
        assert_eq!(verdict(Some(200), None), Verdict::Delivered);
        assert_eq!(verdict(Some(204), None), Verdict::Delivered);
        assert_eq!(verdict(None, None), Verdict::Retry(None));
        assert_eq!(verdict(Some(500), None), Verdict::Retry(None));
        assert_eq!(verdict(Some(503), Some("5")), Verdict::Retry(None));
        assert_eq!(verdict(Some(408), None), Verdict::Retry(None));
        assert_eq!(
            verdict(Some(429), Some(" 7 ")),
            Verdict::Retry(Some(Duration::from_secs(7)))
        );
        assert_eq!(
            verdict(Some(429), Some("Wed, 21 Oct 2015 07:28:00 GMT")),
            Verdict::Retry(None)
        );
        for s in [400, 401, 403, 404, 410, 413, 422] {
            assert_eq!(verdict(Some(s), None), Verdict::Final, "{s}");
        }
        for s in [301, 302, 303, 307, 308] {
            assert_eq!(verdict(Some(s), None), Verdict::Redirect, "{s}");
        }
    }

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        let (b, m) = (Duration::from_millis(100), Duration::from_secs(1));
        assert_eq!(backoff(b, m, 1, 0.0), Duration::from_millis(50));
        assert_eq!(backoff(b, m, 1, 1.0), Duration::from_millis(100));
        assert_eq!(backoff(b, m, 2, 0.0), Duration::from_millis(100));
        assert_eq!(backoff(b, m, 3, 1.0), Duration::from_millis(400));
        assert_eq!(backoff(b, m, 10, 1.0), Duration::from_secs(1));
        assert_eq!(backoff(b, m, 10, 0.0), Duration::from_millis(500));
        assert_eq!(backoff(b, m, u32::MAX, 0.5), Duration::from_millis(750));
        let w = backoff(b, m, 2, 0.5);
        assert!(w > Duration::from_millis(100) && w < Duration::from_millis(200));
    }
}
