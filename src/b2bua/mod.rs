//! The back-to-back user agent: the dispatcher that turns received messages into calls,
//! answers what needs no call, and enforces the limits; the call actors themselves live
//! in [`call`].

mod call;
mod inbox;
pub mod policy;
pub mod transfer;

pub use call::CallEvent;

use crate::config::Settings;
use crate::metrics::Metrics;
use crate::session::phone::normalize_e164;
use crate::session::SessionTable;
use crate::sip::message::{generate_tag, Message, Method, ParseError};
use crate::sip::transaction::{Absorb, Absorber, TimerConfig};
use crate::sip::transport::{response_peer, Peer, Sink, TransportLayer};
use dashmap::DashMap;
use inbox::{InboxSender, TrySendError};
use policy::{method_support, MethodSupport, ALLOW, SUPPORTED};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

/// RTP/RTCP port pairs the media pool keeps bound ahead of need. The refill
/// thread wakes when half are gone: at 800 transfer calls/s (three pairs
/// each) about 150 times a second.
const MEDIA_SPARE_PAIRS: usize = 32;

/// State shared by the dispatcher and every call.
pub struct Shared {
    pub settings: Arc<Settings>,
    pub sessions: Arc<SessionTable>,
    pub metrics: Arc<Metrics>,
    transport: OnceLock<Arc<TransportLayer>>,
    /// Call-ID (of either leg) to the call's inbox.
    calls: DashMap<String, InboxSender<CallEvent>>,
    active: AtomicUsize,
    draining: AtomicBool,
    cps: Mutex<TokenBucket>,
    timers: TimerConfig,
    /// Finished server transactions of calls that have gone.
    pub absorber: Absorber,
    /// The RTP port pool and relay settings; `None` in passthrough mode.
    media: Option<call::MediaShared>,
    /// `[transfer]`: who may be dialled and what the transfer INVITE carries.
    transfer: transfer::TransferPolicy,
    /// Lifecycle events to the webhook subscribers.
    events: crate::events::Events,
}

/// The dispatcher: what the transport hands every message to.
#[derive(Clone)]
pub struct B2bua {
    shared: Arc<Shared>,
}

impl B2bua {
    pub fn new(
        settings: Arc<Settings>,
        sessions: Arc<SessionTable>,
        metrics: Arc<Metrics>,
        events: crate::events::Events,
    ) -> Self {
        let rate = f64::from(settings.max_calls_per_second);
        let timers = TimerConfig {
            t1: settings.t1,
            t2: settings.t2,
            t4: settings.t4,
        };
        let media = settings.media.as_ref().and_then(|m| {
            match crate::media::relay::PortPool::new(m.ip, m.port_min, m.port_max) {
                Ok(pool) => {
                    // Pairs bound ahead: no socket is made on the path of a call
                    // set-up or of a transfer INVITE (see the pool's notes).
                    if let Err(e) = pool.keep_spares(MEDIA_SPARE_PAIRS) {
                        tracing::warn!(error = %e, "no spare media ports: bound per call");
                    }
                    Some(call::MediaShared {
                        pool,
                        sdp_ip: m.sdp_ip,
                        relay: crate::media::relay::RelayConfig {
                            latching: m.latching,
                            timeout: m.timeout,
                            hold_timeout: m.hold_timeout,
                            ..Default::default()
                        },
                    })
                }
                // The range was validated with the config; this cannot happen.
                Err(e) => {
                    tracing::error!(error = %e, "media relay disabled");
                    None
                }
            }
        });
        let transfer = settings.transfer.clone();
        B2bua {
            shared: Arc::new(Shared {
                events,
                transfer,
                media,
                settings,
                sessions,
                metrics,
                transport: OnceLock::new(),
                calls: DashMap::new(),
                active: AtomicUsize::new(0),
                draining: AtomicBool::new(false),
                cps: Mutex::new(TokenBucket::new(rate)),
                timers,
                absorber: Absorber::new(200_000),
            }),
        }
    }

    /// The transport is bound after the dispatcher exists (it needs a sink).
    pub fn attach_transport(&self, t: Arc<TransportLayer>) {
        let _ = self.shared.transport.set(t);
    }

    /// Periodic housekeeping: expired absorber entries and lingering sessions.
    pub fn sweep(&self) {
        self.shared.absorber.sweep(Instant::now());
        self.shared.sessions.sweep();
    }

    pub fn active_calls(&self) -> usize {
        self.shared.active.load(Ordering::Relaxed)
    }

    /// Stop taking new calls (they get 503).
    pub fn start_draining(&self) {
        self.shared.draining.store(true, Ordering::Relaxed);
    }

    /// Tell every live call to end now (BYE or CANCEL on both legs).
    pub fn end_all_calls(&self) {
        for entry in self.shared.calls.iter() {
            let _ = entry.value().try_send(CallEvent::Shutdown);
        }
    }

    fn transport(&self) -> Option<&Arc<TransportLayer>> {
        self.shared.transport.get()
    }

    /// Answer a request without any state (RFC 3261 8.2.7 permits a stateless UAS).
    fn reply(&self, req: &Message, from: Peer, status: u16, extra: &[(&'static str, String)]) {
        let Some(t) = self.transport() else { return };
        let mut resp = Message::response_to(req, status, Some(&generate_tag()));
        for (name, value) in extra {
            resp.push(name, value.clone());
        }
        resp.push("Server", self.shared.settings.user_agent.clone());
        let _ = t.send(&response_peer(req, from), resp.to_bytes());
    }

    fn reply_503(&self, req: &Message, from: Peer) {
        Metrics::inc(&self.shared.metrics.calls_rejected_overload_total);
        let ra = self.shared.settings.retry_after_secs.to_string();
        self.reply(req, from, 503, &[("Retry-After", ra)]);
    }

    fn on_request_without_call(&self, msg: Message, from: Peer) {
        let Some(method) = msg.method().cloned() else {
            return;
        };
        match method {
            // The ACK of a stateless rejection, or a stray: nothing to answer.
            Method::Ack => {}
            Method::Invite if msg.to_tag().is_none() => self.new_call(msg, from),
            Method::Options => self.reply(
                &msg,
                from,
                200,
                &[
                    ("Allow", ALLOW.into()),
                    ("Supported", SUPPORTED.into()),
                    ("Accept", "application/sdp".into()),
                ],
            ),
            // RFC 3515 allows a REFER outside a dialog; handoff only takes the
            // AI agent's, inside its call.
            Method::Refer if msg.to_tag().is_none() => self.reply(&msg, from, 403, &[]),
            m => match method_support(&m) {
                MethodSupport::NotImplemented => {
                    self.reply(&msg, from, 501, &[("Allow", ALLOW.into())])
                }
                MethodSupport::NotAllowed if msg.to_tag().is_none() => {
                    self.reply(&msg, from, 405, &[("Allow", ALLOW.into())])
                }
                // In-dialog requests and CANCELs for calls we do not have.
                _ => self.reply(&msg, from, 481, &[]),
            },
        }
    }

    fn new_call(&self, mut invite: Message, from: Peer) {
        let sh = &self.shared;
        if sh.draining.load(Ordering::Relaxed) {
            return self.reply_503(&invite, from);
        }
        // RFC 3261 8.2.2.3: an extension we do not support is refused with 420.
        let required = policy::unsupported_required(&invite);
        if !required.is_empty() {
            return self.reply(&invite, from, 420, &[("Unsupported", required.join(", "))]);
        }
        // RFC 3261 16.3 step 3 applies to what we forward: at zero, 483.
        if let Some(Ok(0)) = invite.max_forwards() {
            return self.reply(&invite, from, 483, &[]);
        }
        if sh.active.load(Ordering::Relaxed) >= sh.settings.max_calls {
            tracing::warn!(
                max_calls = sh.settings.max_calls,
                "call limit reached, refusing INVITE with 503"
            );
            return self.reply_503(&invite, from);
        }
        if !sh
            .cps
            .lock()
            .map(|mut b| b.take(Instant::now()))
            .unwrap_or(false)
        {
            tracing::debug!("calls-per-second limit reached, refusing INVITE with 503");
            return self.reply_503(&invite, from);
        }
        let called = invite
            .request_uri()
            .and_then(crate::sip::message::SipUri::parse)
            .and_then(|u| u.user)
            .unwrap_or_default();
        let called_e164 = normalize_e164(&called, sh.settings.default_country.as_deref());
        let Some(route) = sh
            .settings
            .route_for(&called, called_e164.as_deref())
            .cloned()
        else {
            tracing::info!(called = %called, "no route for called number, 404");
            return self.reply(&invite, from, 404, &[]);
        };
        // Before the X-OPENCX-* headers go: X-OPENCX-SESSION-CUSTOM-DATA is data.
        let custom_data = crate::events::custom_data::from_invite_logged(&invite, &sh.metrics);
        let stripped = policy::strip_spoofed_headers(&mut invite);
        if stripped > 0 {
            sh.metrics
                .spoofed_headers_stripped_total
                .fetch_add(stripped as u64, Ordering::Relaxed);
            tracing::warn!(
                count = stripped,
                "stripped X-OPENCX-* headers sent by the trunk"
            );
        }
        let Some(call_id) = invite.call_id().map(str::to_owned) else {
            return;
        };
        let Some(transport) = self.transport().cloned() else {
            return;
        };
        let (tx, rx) = inbox::inbox(sh.settings.call_inbox_depth);
        // Two datagrams of one INVITE racing on two threads must not make two calls.
        match sh.calls.entry(call_id) {
            dashmap::Entry::Occupied(e) => {
                let _ = e.get().try_send(CallEvent::Sip(Box::new((invite, from))));
                return;
            }
            dashmap::Entry::Vacant(v) => {
                v.insert(tx);
            }
        }
        sh.active.fetch_add(1, Ordering::Relaxed);
        sh.metrics.calls_active.fetch_add(1, Ordering::Relaxed);
        Metrics::inc(&sh.metrics.calls_started_total);
        let start = call::CallStart {
            sh: self.shared.clone(),
            transport,
            invite,
            from,
            route,
            called,
            custom_data,
        };
        call::spawn(Box::new(start), rx);
    }
}

impl Shared {
    /// A call registers the Call-ID of a leg it created.
    fn register_call_id(&self, call_id: String, tx: InboxSender<CallEvent>) {
        self.calls.insert(call_id, tx);
    }

    /// A call is gone: forget its Call-IDs and release its slot.
    fn call_finished(&self, call_ids: &[&str]) {
        for id in call_ids {
            self.calls.remove(*id);
        }
        self.active.fetch_sub(1, Ordering::Relaxed);
        self.metrics.calls_active.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Sink for B2bua {
    fn on_message(&self, msg: Message, from: Peer) {
        let Some(call_id) = msg.call_id() else { return };
        if msg.is_request() {
            match self.shared.absorber.check(&msg, Instant::now()) {
                Some(Absorb::Silent) => return,
                Some(Absorb::Resend(peer, bytes)) => {
                    if let Some(t) = self.transport() {
                        let _ = t.send(&peer, bytes);
                    }
                    return;
                }
                None => {}
            }
        }
        let sender = self.shared.calls.get(call_id).map(|e| e.value().clone());
        if let Some(tx) = sender {
            let is_request = msg.is_request();
            let is_ack = msg.method() == Some(&Method::Ack);
            match tx.try_send(CallEvent::Sip(Box::new((msg, from)))) {
                Ok(()) => return,
                Err(TrySendError::Full(ev)) => {
                    Metrics::inc(&self.shared.metrics.sip_messages_dropped_total);
                    if let (CallEvent::Sip(b), true, false) = (ev, is_request, is_ack) {
                        self.reply_503(&b.0, from);
                    }
                    return;
                }
                Err(TrySendError::Closed(CallEvent::Sip(b))) => {
                    // The call ended between lookup and send: treat as no call.
                    let (msg, from) = *b;
                    if msg.is_request() {
                        self.on_request_without_call(msg, from);
                    }
                    return;
                }
                Err(TrySendError::Closed(_)) => return,
            }
        }
        if msg.is_request() {
            self.on_request_without_call(msg, from);
        } else {
            // A response for no call of ours (late retransmission): drop it.
            Metrics::inc(&self.shared.metrics.sip_messages_dropped_total);
        }
    }

    fn on_bad_message(&self, err: ParseError, from: Peer) {
        let status = err.status();
        match err.partial() {
            Some(req)
                if req.is_request()
                    && req.method() != Some(&Method::Ack)
                    && req.header("Via").is_some()
                    && req.top_via().is_some() =>
            {
                tracing::info!(peer = %from.addr, error = %err, "malformed request answered {status}");
                let Some(t) = self.transport() else { return };
                let mut resp = Message::response_to(req, status, Some(&generate_tag()));
                resp.set_reason(format!(
                    "{} ({})",
                    crate::sip::message::default_reason(status),
                    err.kind
                ));
                resp.push("Server", self.shared.settings.user_agent.clone());
                let _ = t.send(&response_peer(req, from), resp.to_bytes());
            }
            _ => {
                Metrics::inc(&self.shared.metrics.sip_messages_dropped_total);
                tracing::debug!(peer = %from.addr, error = %err, "malformed message dropped");
            }
        }
    }
}

/// Calls-per-second limit: a bucket of one second's worth of calls, refilled smoothly.
struct TokenBucket {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    fn new(rate: f64) -> Self {
        TokenBucket {
            rate,
            tokens: rate,
            last: Instant::now(),
        }
    }

    fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn token_bucket_allows_a_second_of_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket {
            rate: 10.0,
            tokens: 10.0,
            last: t0,
        };
        assert_eq!((0..15).filter(|_| b.take(t0)).count(), 10);
        assert!(!b.take(t0));
        assert!(b.take(t0 + Duration::from_millis(100)));
        assert!(!b.take(t0 + Duration::from_millis(100)));
    }
}
