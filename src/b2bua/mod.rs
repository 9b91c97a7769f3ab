//! The back-to-back user agent: the dispatcher that turns received messages into calls,
//! answers what needs no call, and enforces the limits; the call actors themselves live
//! in [`call`].

pub mod acl;
mod call;
mod dial_out;
mod inbox;
pub mod outbound;
pub mod peers;
pub mod policy;
mod registry;
pub mod srtp_policy;
pub mod transfer;
pub mod trunk;
mod trunk_auth;

pub use call::CallEvent;

use crate::config::Settings;
use crate::e164::normalize_e164;
use crate::metrics::Metrics;
use crate::session::SessionStore;
use crate::sip::message::{generate_tag, malformed_response, Message, Method, ParseError};
use crate::sip::transaction::{Absorb, Absorber, TimerConfig};
use crate::sip::transport::{response_peer, Peer, Sink, TransportLayer};
use inbox::TrySendError;
use policy::{method_support, MethodSupport, ALLOW, SUPPORTED};
use registry::CallRegistry;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// RTP/RTCP port pairs the media pool keeps bound ahead of need. The refill
/// thread wakes when half are gone: at 800 transfer calls/s (three pairs
/// each) about 150 times a second.
const MEDIA_SPARE_PAIRS: usize = 32;

/// State shared by the dispatcher and every call.
pub struct Shared {
    pub settings: Arc<Settings>,
    pub sessions: Arc<dyn SessionStore>,
    pub metrics: Arc<Metrics>,
    /// Call-ID (of any leg) to the call's inbox.
    calls: CallRegistry,
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
    /// The ticket-note task (None: notes are off).
    notes: Option<crate::zendesk::TicketNotes>,
    /// Who may send requests outside a dialog (`[[trunk]]`, the peers).
    acl: Arc<acl::Acl>,
    /// The trunks' own `max_calls` and `max_calls_per_second`.
    trunks: Arc<trunk::TrunkLimits>,
    /// `[trunk.auth]`: the trunks whose INVITEs must carry digest credentials.
    trunk_auth: trunk_auth::TrunkAuth,
    /// `[trunk.register]`: the registration tasks' Call-IDs, for their responses.
    registrations: Arc<crate::sip::register::task::Routes>,
    /// `[[outbound]]`: each org's outbound `max_calls` and `max_calls_per_second`.
    org_limits: Arc<outbound::OrgLimits>,
}

/// The dispatcher: what the transport hands every message to (with itself, to answer
/// through), so it is built before the transport and holds none.
#[derive(Clone)]
pub struct B2bua {
    shared: Arc<Shared>,
}

/// Why the B2BUA cannot start.
#[derive(Debug, thiserror::Error)]
pub enum B2buaStartError {
    /// `[media]` relay mode, and not one RTP/RTCP pair of the range can be bound.
    #[error("media relay cannot start: media.port_min..media.port_max = {port_min}..{port_max} on media.ip {ip}: {problem}")]
    MediaPorts {
        ip: IpAddr,
        port_min: u16,
        port_max: u16,
        problem: String,
    },
}

impl B2bua {
    pub fn new(
        settings: Arc<Settings>,
        sessions: Arc<dyn SessionStore>,
        metrics: Arc<Metrics>,
        events: crate::events::Events,
        notes: Option<crate::zendesk::TicketNotes>,
    ) -> Result<Self, B2buaStartError> {
        let rate = f64::from(settings.max_calls_per_second);
        let timers = TimerConfig {
            t1: settings.t1,
            t2: settings.t2,
            t4: settings.t4,
        };
        let media = match settings.media.as_ref() {
            Some(m) => Some(media_shared(m, &metrics)?),
            None => None,
        };
        let transfer = settings.transfer.clone();
        let acl = Arc::new(acl::Acl::new(&settings));
        if !settings.trunks.is_empty() {
            tracing::info!(
                trunks = settings.trunks.len(),
                allow_any_source = settings.allow_any_source,
                "source ACL on: requests outside a dialog from a source in no trunk are dropped"
            );
        } else if settings.allow_any_source {
            tracing::warn!("sip.allow_any_source = true and no [[trunk]]: anyone who reaches the SIP port can call in");
        }
        let trunks = trunk::TrunkLimits::new(&settings.trunks, metrics.clone());
        Ok(B2bua {
            shared: Arc::new(Shared {
                trunk_auth: trunk_auth::TrunkAuth::new(&settings.trunks),
                registrations: Arc::default(),
                org_limits: outbound::OrgLimits::new(&settings.outbound),
                acl,
                trunks,
                events,
                notes,
                transfer,
                media,
                settings,
                sessions,
                metrics,
                calls: CallRegistry::default(),
                active: AtomicUsize::new(0),
                draining: AtomicBool::new(false),
                cps: Mutex::new(TokenBucket::new(rate)),
                timers,
                absorber: Absorber::new(200_000),
            }),
        })
    }

    /// Periodic housekeeping: expired absorber entries (the server sweeps the
    /// session store beside it).
    pub fn sweep(&self) {
        self.shared.absorber.sweep(Instant::now());
    }

    pub fn active_calls(&self) -> usize {
        self.shared.active.load(Ordering::Relaxed)
    }

    /// Where responses to the registration tasks' REGISTERs go.
    pub fn registrations(&self) -> &Arc<crate::sip::register::task::Routes> {
        &self.shared.registrations
    }

    /// The source ACL, for the task that keeps its peers' addresses current.
    pub fn acl(&self) -> &Arc<acl::Acl> {
        &self.shared.acl
    }

    /// The ACL's verdict on a request outside any dialog; an untrusted source is
    /// counted and gets nothing (`None`): no answer tells a scanner handoff is here.
    fn admit_source(&self, from: &Peer, what: &str) -> Option<acl::Source> {
        match self.shared.acl.classify(from.addr.ip()) {
            acl::Source::Untrusted => {
                Metrics::inc(&self.shared.metrics.sip_untrusted_dropped_total);
                tracing::debug!(peer = %from.addr, what, "message from a source in no trunk dropped unanswered");
                None
            }
            source => Some(source),
        }
    }

    /// Stop taking new calls (they get 503).
    pub fn start_draining(&self) {
        self.shared.draining.store(true, Ordering::Relaxed);
        self.shared.metrics.draining.store(1, Ordering::Relaxed);
    }

    /// Whether the node drains (new calls and OPTIONS get 503).
    pub fn is_draining(&self) -> bool {
        self.shared.draining.load(Ordering::Relaxed)
    }

    /// Tell every live call to end now (BYE or CANCEL on both legs).
    pub fn end_all_calls(&self) {
        self.shared.calls.offer_all(|| CallEvent::Shutdown);
    }

    /// Answer a request without any state (RFC 3261 8.2.7 permits a stateless UAS).
    fn reply(
        &self,
        t: &TransportLayer,
        req: &Message,
        from: Peer,
        status: u16,
        extra: &[(&'static str, String)],
    ) {
        let mut resp = Message::response_to(req, status, Some(&generate_tag()));
        for (name, value) in extra {
            resp.push(name, value.clone());
        }
        resp.push("Server", self.shared.settings.user_agent.clone());
        let _ = t.send(&response_peer(req, from), resp.to_bytes());
    }

    /// A `sips:` request that came over UDP or TCP (`policy::sips_over_plain_transport`):
    /// 416 to a known source, whether or not it names a call of ours; an ACK and an
    /// unknown source get nothing. Counted either way.
    fn refuse_sips_over_plain(&self, t: &TransportLayer, req: &Message, from: Peer) {
        Metrics::inc(&self.shared.metrics.sip_sips_over_plain_refused_total);
        let Some(method) = req.method() else { return };
        if *method == Method::Ack || self.admit_source(&from, method.as_str()).is_none() {
            return;
        }
        tracing::info!(peer = %from.addr, transport = %from.transport, method = method.as_str(), "sips: request over a plain transport refused");
        self.reply(t, req, from, policy::SIPS_OVER_PLAIN_STATUS, &[]);
    }

    fn reply_503(&self, t: &TransportLayer, req: &Message, from: Peer) {
        Metrics::inc(&self.shared.metrics.calls_rejected_overload_total);
        let ra = self.shared.settings.retry_after_secs.to_string();
        self.reply(t, req, from, 503, &[("Retry-After", ra)]);
    }

    fn on_request_without_call(&self, t: &Arc<TransportLayer>, msg: Message, from: Peer) {
        let Some(method) = msg.method().cloned() else {
            return;
        };
        let Some(source) = self.admit_source(&from, method.as_str()) else {
            return;
        };
        match method {
            // The ACK of a stateless rejection, or a stray: nothing to answer.
            Method::Ack => {}
            Method::Invite if msg.to_tag().is_none() => self.new_call(t, msg, from, source),
            // While draining, a load balancer's OPTIONS probe learns to send no
            // more calls here (RFC 3261 11.2: OPTIONS answers as an INVITE would).
            Method::Options if self.is_draining() => {
                let ra = self.shared.settings.retry_after_secs.to_string();
                self.reply(t, &msg, from, 503, &[("Retry-After", ra)])
            }
            Method::Options => self.reply(
                t,
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
            Method::Refer if msg.to_tag().is_none() => self.reply(t, &msg, from, 403, &[]),
            m => match method_support(&m) {
                MethodSupport::NotImplemented => {
                    self.reply(t, &msg, from, 501, &[("Allow", ALLOW.into())])
                }
                MethodSupport::NotAllowed if msg.to_tag().is_none() => {
                    self.reply(t, &msg, from, 405, &[("Allow", ALLOW.into())])
                }
                // In-dialog requests and CANCELs for calls we do not have.
                _ => self.reply(t, &msg, from, 481, &[]),
            },
        }
    }

    fn new_call(
        &self,
        t: &Arc<TransportLayer>,
        mut invite: Message,
        from: Peer,
        source: acl::Source,
    ) {
        let sh = &self.shared;
        if sh.draining.load(Ordering::Relaxed) {
            return self.reply_503(t, &invite, from);
        }
        // RFC 3261 8.2.2.3: an extension we do not support is refused with 420.
        let required = policy::unsupported_required(&invite);
        if !required.is_empty() {
            return self.reply(
                t,
                &invite,
                from,
                420,
                &[("Unsupported", required.join(", "))],
            );
        }
        // RFC 3261 16.3 step 3 applies to what we forward: at zero, 483.
        if let Some(Ok(0)) = invite.max_forwards() {
            return self.reply(t, &invite, from, 483, &[]);
        }
        // `[trunk.auth]`: before any limit or route is spent on an unauthenticated INVITE.
        if let acl::Source::Trunk(i) = source {
            let name = sh.settings.trunks.get(i).map_or("", |t| t.name.as_str());
            let now = crate::sip::auth::server::unix_now();
            if let Some(r) = sh.trunk_auth.check(i, name, &invite, now, &sh.metrics) {
                return self.reply(t, &invite, from, r.status, &r.headers);
            }
        }
        if sh.active.load(Ordering::Relaxed) >= sh.settings.max_calls {
            tracing::warn!(
                max_calls = sh.settings.max_calls,
                "call limit reached, refusing INVITE with 503"
            );
            return self.reply_503(t, &invite, from);
        }
        if !sh
            .cps
            .lock()
            .map(|mut b| b.take(Instant::now()))
            .unwrap_or(false)
        {
            tracing::debug!("calls-per-second limit reached, refusing INVITE with 503");
            return self.reply_503(t, &invite, from);
        }
        if let Some(agent_trunk) = self.outbound_source(source) {
            return self.new_outbound_call(t, invite, from, agent_trunk);
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
            tracing::info!(
                called = %crate::redact::Phone(&called),
                "no route for called number, 404"
            );
            return self.reply(t, &invite, from, 404, &[]);
        };
        // A route that names its trunks takes calls from those alone.
        if !route.trunks.is_empty()
            && !matches!(source, acl::Source::Trunk(i) if route.trunks.contains(&i))
        {
            tracing::info!(peer = %from.addr, org_id = %route.org_id, "route does not take calls from this source, 403");
            return self.reply(t, &invite, from, 403, &[]);
        }
        // The trunk's own limits, beside the global ones; the slot is held by the
        // call's task until it ends.
        let trunk_slot = match source {
            acl::Source::Trunk(i) => match sh.trunks.admit(i, Instant::now()) {
                Ok(slot) => Some(slot),
                Err(why) => {
                    let trunk = sh.settings.trunks.get(i).map_or("", |t| t.name.as_str());
                    tracing::debug!(trunk, ?why, "trunk limit reached, refusing INVITE with 503");
                    return self.reply_503(t, &invite, from);
                }
            },
            _ => None,
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
        let (inbox, rx) = inbox::inbox(sh.settings.call_inbox_depth);
        // Two datagrams of one INVITE racing on two threads must not make two calls.
        if let Err(owner) = sh.calls.claim(call_id, &inbox) {
            let _ = owner.try_send(CallEvent::Sip(Box::new((invite, from))));
            return;
        }
        sh.active.fetch_add(1, Ordering::Relaxed);
        sh.metrics.calls_active.fetch_add(1, Ordering::Relaxed);
        Metrics::inc(&sh.metrics.calls_started_total);
        if let Some(slot) = &trunk_slot {
            slot.started();
        }
        let caller_srtp = trunk_slot.as_ref().map_or(route.caller_srtp, |s| s.srtp());
        let start = call::CallStart {
            sh: self.shared.clone(),
            transport: t.clone(),
            inbox,
            invite,
            from,
            route,
            called,
            custom_data,
            // The caller's media may come from its trunk's media networks besides the
            // SDP address; other sources (a peer, an open lab port) latch to the SDP
            // address only.
            media_cidrs: trunk_slot
                .as_ref()
                .map_or_else(|| Arc::from(Vec::new()), |s| s.media()),
            caller_srtp,
            outbound: None,
        };
        call::spawn(Box::new(start), rx, trunk_slot);
    }
}

impl Shared {
    /// A call registers the Call-ID of a leg it created.
    fn register_call_id(&self, call_id: String, inbox: registry::Inbox) {
        self.calls.add(call_id, inbox);
    }

    /// A call is gone: forget its Call-IDs and release its slot.
    fn call_finished(&self, call_ids: &[&str]) {
        self.calls.remove(call_ids);
        self.active.fetch_sub(1, Ordering::Relaxed);
        self.metrics.calls_active.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Sink for B2bua {
    fn on_message(&self, msg: Message, from: Peer, t: &Arc<TransportLayer>) {
        let Some(call_id) = msg.call_id() else { return };
        if msg
            .request_uri()
            .is_some_and(|u| policy::sips_over_plain_transport(u, from.transport))
        {
            return self.refuse_sips_over_plain(t, &msg, from);
        }
        if msg.is_request() {
            match self.shared.absorber.check(&msg, Instant::now()) {
                Some(Absorb::Silent) => return,
                Some(Absorb::Resend(peer, bytes)) => {
                    let _ = t.send(&peer, bytes);
                    return;
                }
                None => {}
            }
        }
        let sender = self.shared.calls.inbox(call_id);
        if let Some(tx) = sender {
            let is_request = msg.is_request();
            let is_ack = msg.method() == Some(&Method::Ack);
            match tx.try_send(CallEvent::Sip(Box::new((msg, from)))) {
                Ok(()) => return,
                Err(TrySendError::Full(ev)) => {
                    Metrics::inc(&self.shared.metrics.sip_messages_dropped_total);
                    if let (CallEvent::Sip(b), true, false) = (ev, is_request, is_ack) {
                        self.reply_503(t, &b.0, from);
                    }
                    return;
                }
                Err(TrySendError::Closed(CallEvent::Sip(b))) => {
                    // The call ended between lookup and send: treat as no call.
                    let (msg, from) = *b;
                    if msg.is_request() {
                        self.on_request_without_call(t, msg, from);
                    }
                    return;
                }
                Err(TrySendError::Closed(_)) => return,
            }
        }
        if msg.is_request() {
            self.on_request_without_call(t, msg, from);
        } else if !self.shared.registrations.deliver(msg) {
            // A response for no call or registration of ours (late retransmission): drop it.
            Metrics::inc(&self.shared.metrics.sip_messages_dropped_total);
        }
    }

    fn on_bad_message(&self, err: ParseError, from: Peer, t: &Arc<TransportLayer>) {
        // Nobody we know: not even a 400 (it would tell a scanner handoff is here).
        if self.admit_source(&from, "malformed").is_none() {
            return;
        }
        // RFC 3261 8.2.2, 16.3: a request that can be answered gets its 400 (416, 505)
        // with the problem named; the rest is a counted drop.
        let server = &self.shared.settings.user_agent;
        match malformed_response(&err, from.addr, server) {
            Some(resp) => {
                tracing::info!(peer = %from.addr, error = %err, status = err.status(), "malformed request answered");
                Metrics::inc(&self.shared.metrics.sip_malformed_answered_total);
                let _ = t.send(&response_peer(&resp, from), resp.to_bytes());
            }
            None => {
                Metrics::inc(&self.shared.metrics.sip_messages_dropped_total);
                tracing::debug!(peer = %from.addr, error = %err, "malformed message dropped");
            }
        }
    }
}

/// The media relay's shared parts; fails when not one port pair of the range can be
/// bound (an address not on this host, or every port taken), which would otherwise
/// refuse every call.
fn media_shared(
    m: &crate::config::MediaSettings,
    metrics: &Arc<Metrics>,
) -> Result<call::MediaShared, B2buaStartError> {
    use crate::media::relay::{PoolError, PortPool};
    let failed = |problem: String| B2buaStartError::MediaPorts {
        ip: m.ip,
        port_min: m.port_min,
        port_max: m.port_max,
        problem,
    };
    let pool = PortPool::new(m.ip, m.port_min, m.port_max).map_err(|e| failed(e.to_string()))?;
    // One pair bound and let go at once: the range is usable now.
    match pool.allocate() {
        Ok(_pair) => {}
        Err(PoolError::Exhausted { .. }) => {
            return Err(failed(
                "every port of the range is in use by another socket (address in use)".into(),
            ))
        }
        Err(e) => return Err(failed(e.to_string())),
    }
    // Pairs bound ahead: no socket is made on the path of a call set-up or of a
    // transfer INVITE (see the pool's notes).
    if let Err(e) = pool.keep_spares(MEDIA_SPARE_PAIRS) {
        tracing::warn!(error = %e, "no spare media ports: bound per call");
    }
    Ok(call::MediaShared {
        metrics: metrics.clone(),
        pool,
        sdp_ip: m.sdp_ip,
        relay: crate::media::relay::RelayConfig {
            latching: m.latching,
            timeout: m.timeout,
            hold_timeout: m.hold_timeout,
            on_refused: Some(refused_counter(metrics)),
            on_srtp_dropped: Some(srtp_counter(metrics)),
            ..Default::default()
        },
    })
}

/// Strict latching's refusals, counted live (a batch at a time) so an attack
/// shows while it lasts, not when the call ends.
fn refused_counter(metrics: &Arc<Metrics>) -> crate::media::relay::OnRefused {
    let metrics = Arc::clone(metrics);
    crate::media::relay::OnRefused(Arc::new(move |n| {
        Metrics::add(&metrics.media_packets_refused_total, n)
    }))
}

/// SRTP packets the relays dropped, by cause, counted live like refusals.
fn srtp_counter(metrics: &Arc<Metrics>) -> crate::media::relay::OnSrtpDropped {
    let metrics = Arc::clone(metrics);
    crate::media::relay::OnSrtpDropped(Arc::new(move |d| {
        Metrics::add(&metrics.srtp_auth_failures_total, d.auth_failures);
        Metrics::add(&metrics.srtp_replays_total, d.replays);
        Metrics::add(&metrics.srtp_ssrc_overflows_total, d.ssrc_overflows);
        Metrics::add(&metrics.srtp_protect_failures_total, d.protect_failures);
    }))
}

/// Calls-per-second limit: a bucket of one second's worth of calls, refilled smoothly.
#[derive(Debug)]
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
