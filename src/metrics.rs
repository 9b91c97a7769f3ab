//! Counters and gauges for one running handoff, read by the HTTP sidecar's Prometheus
//! endpoint (its own issue) and by tests. Plain atomics: no lock on any hot path.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

macro_rules! metrics {
    ($( $(#[doc = $doc:literal])* $kind:ident $name:ident ),* $(,)?) => {
        /// Every metric handoff keeps.
        #[derive(Debug, Default)]
        pub struct Metrics {
            $( $(#[doc = $doc])* pub $name: metrics!(@ty $kind), )*
            /// Voice-prefetch webhook requests by outcome.
            pub webhook: WebhookCounters,
            /// Time from a REFER reaching its call to the transfer INVITE sent, in seconds
            /// (socket read, parse and dispatch to the call come before it).
            pub transfer_setup_seconds: Histogram,
            /// SIP messages in and out by method and status.
            pub sip: SipTraffic,
            /// Lifecycle events: emitted, delivered, queued, dropped.
            pub events: EventMetrics,
            /// Per-trunk calls started, refused by the trunk's limits, active.
            pub trunks: TrunkMetrics,
        }

        impl Metrics {
            /// Prometheus text exposition format (version 0.0.4).
            pub fn render_prometheus(&self) -> String {
                let mut out = String::with_capacity(4096);
                $(
                    let help = concat!($($doc),*).trim();
                    let _ = writeln!(out, "# HELP handoff_{} {}", stringify!($name), help);
                    let _ = writeln!(out, "# TYPE handoff_{} {}", stringify!($name), metrics!(@prom $kind));
                    let _ = writeln!(out, "handoff_{} {}", stringify!($name), self.$name.load(Ordering::Relaxed));
                )*
                self.webhook.render(&mut out);
                self.sip.render(&mut out);
                self.events.render(&mut out);
                self.trunks.render(&mut out);
                self.transfer_setup_seconds.render(
                    &mut out,
                    "handoff_transfer_setup_seconds",
                    "Time from a REFER reaching its call to the transfer INVITE sent.",
                );
                out
            }
        }
    };
    (@ty counter) => { AtomicU64 };
    (@ty gauge) => { AtomicI64 };
    (@prom counter) => { "counter" };
    (@prom gauge) => { "gauge" };
}

metrics! {
    /// Calls received from trunks (INVITEs that created a call).
    counter calls_started_total,
    /// Calls answered by the AI agent.
    counter calls_answered_total,
    /// Calls that ended without being answered (AI leg failed, cancelled, timed out).
    counter calls_failed_total,
    /// Calls in progress.
    gauge calls_active,
    /// New INVITEs refused with 503 because a limit was reached or handoff is draining.
    counter calls_rejected_overload_total,
    /// SIP messages received on any transport.
    counter sip_messages_received_total,
    /// SIP messages sent on any transport.
    counter sip_messages_sent_total,
    /// Received messages that could not be parsed (answered 400 when possible).
    counter sip_parse_errors_total,
    /// Received messages dropped: oversize, unparsable with no way to answer, or stray.
    counter sip_messages_dropped_total,
    /// Messages that could not be sent (socket error, full queue, closed connection).
    counter sip_send_errors_total,
    /// Inbound X-OPENCX-* headers removed from trunk requests.
    counter spoofed_headers_stripped_total,
    /// TCP connections open.
    gauge tcp_connections,
    /// SIP over TLS connections open (handshake done).
    gauge tls_connections,
    /// Transactions that timed out (Timer B, F or H).
    counter transaction_timeouts_total,
    /// Calls whose media runs through handoff's relay now.
    gauge media_relays_active,
    /// Calls refused with 503 because no RTP port pair was free.
    counter media_ports_exhausted_total,
    /// Calls ended because no RTP arrived within the media timeout.
    counter media_timeouts_total,
    // ---- media: strict latching (issue 12) ----
    /// RTP/RTCP packets refused because their source was neither the leg's SDP
    /// address nor in its allowed media networks (or not where the leg latched).
    counter media_packets_refused_total,
    // ---- media: SRTP on a leg (issue 14) ----
    /// SRTP/SRTCP packets dropped because their authentication tag did not
    /// verify (forged, corrupted, under another key, or too short for a tag).
    counter srtp_auth_failures_total,
    /// SRTP/SRTCP packets dropped as replays (seen already, or behind the replay window).
    counter srtp_replays_total,
    /// SRTP/SRTCP packets dropped because their SSRC was beyond the bound of 8 per leg and direction.
    counter srtp_ssrc_overflows_total,
    /// Packets not sent to an SRTP leg because they could not be protected (no room for the tag).
    counter srtp_protect_failures_total,
    /// Offers and answers refused (488, 415) or not rewritable.
    counter sdp_rejected_total,
    /// RTP packets relayed (both directions, counted at call end).
    counter rtp_packets_relayed_total,
    /// Bytes of RTP relayed (UDP payloads, counted at call end).
    counter rtp_bytes_relayed_total,
    /// RTP packets the peers lost before reaching handoff (RFC 3550, at call end).
    counter rtp_packets_lost_total,
    /// RTCP packets relayed (counted at call end).
    counter rtcp_packets_relayed_total,
    /// Zendesk API requests sent (each attempt, retries included).
    counter zendesk_requests_total,
    /// Zendesk API requests answered 2xx.
    counter zendesk_requests_ok_total,
    /// Zendesk API answers 401 or 403 (API or token endpoint): credentials to fix.
    counter zendesk_auth_failures_total,
    /// Zendesk API answers 404: the ticket, user or organization is gone.
    counter zendesk_not_found_total,
    /// Zendesk API answers 429.
    counter zendesk_rate_limited_total,
    /// Zendesk API requests retried (after 429, 5xx, a timeout or a connection error).
    counter zendesk_retries_total,
    /// Zendesk API requests given up (retries spent, or an answer not worth retrying).
    counter zendesk_request_failures_total,
    /// OAuth access tokens obtained with the client credentials.
    counter zendesk_token_refreshes_total,
    /// Contact enrichments that updated a session's contact.
    counter enrichments_total,
    /// Contact enrichments that changed nothing (Zendesk error, ticket gone, no slot).
    counter enrichments_failed_total,
    /// REFERs received on any leg.
    counter refers_received_total,
    /// REFERs refused (400 bad Refer-To, 403 target not allowed, 491, 501).
    counter refers_refused_total,
    /// Transfers accepted (202) and attempted.
    counter transfers_total,
    /// Transfers the target answered: the caller was switched to it.
    counter transfers_succeeded_total,
    /// Headers left out of a transfer INVITE (invalid, reserved, refused by the
    /// destination's profile, too long, or over the URI header limit): logged too.
    counter transfer_headers_dropped_total,
    /// Transfers that failed (target refused, timed out, unreachable); the caller
    /// stayed with the AI agent.
    counter transfers_failed_total,
    // Session API scope, dashboard JWT and outbound HTTP (issue 12).
    /// Session API requests with an org's key for another org's session (answered 404).
    counter session_api_cross_org_refused_total,
    /// Dashboard JWTs refused (bad signature, algorithm, claims or times).
    counter dashboard_tokens_refused_total,
    /// Outbound HTTP answers with a 3xx (Zendesk API, OAuth token, event delivery):
    /// never followed, the request fails.
    counter outbound_redirects_refused_total,
    // Trunks (issue 12): the source ACL.
    /// Requests outside any dialog (and malformed messages) from a source in no trunk
    /// that is not a configured AI agent or transfer destination, dropped unanswered.
    counter sip_untrusted_dropped_total,
    // Webhook and tokens (issue 12).
    /// Webhook-URL tokens refused because they are past their exp.
    counter webhook_tokens_expired_total,
    /// Webhook-URL tokens refused because [[http.revoked_tokens]] names them.
    counter webhook_tokens_revoked_total,
    /// Zendesk webhook signatures refused because they were already used (replay).
    counter webhook_replays_refused_total,
    /// Signed webhooks refused (503) because the replay table was full.
    counter webhook_replay_table_full_total,
    /// Stamps refused because the ticket names another caller or does not exist.
    counter webhook_stamps_unconfirmed_total,
    /// Webhook bodies refused because a field handoff reads appeared twice.
    counter webhook_duplicate_keys_total,

    // Zendesk event-subscription webhooks and per-org accounts (issue 16).
    /// Event-subscription envelopes received (token, and signature when required,
    /// valid), whatever came of them.
    counter webhook_events_total,
    /// Events refused because their account_id (or x-zendesk-account-id) is not
    /// the org's Zendesk account.
    counter webhook_events_wrong_account_total,
    /// Events not acted on because their invocation id or event id was seen.
    counter webhook_events_duplicate_total,
    /// Events refused (503) because the table of seen event ids was full.
    counter webhook_events_table_full_total,

    // Connections (issue 12): caps, eviction, deadlines.
    /// HTTP connections open.
    gauge http_connections,
    /// HTTP connections closed at accept: over http.max_connections or http.max_connections_per_ip.
    counter http_connections_refused_total,
    /// HTTP requests answered 503 at once: http.max_concurrent_requests in progress.
    counter http_requests_shed_total,
    /// SIP/TCP connections closed at accept: over a cap with no idle connection to evict.
    counter sip_tcp_connections_refused_total,
    /// Idle SIP/TCP connections carrying no dialog closed to make room for a new one.
    counter sip_tcp_connections_evicted_total,
    /// SIP/TCP connections closed because a message was not complete within sip.tcp_message_timeout_ms.
    counter sip_tcp_message_timeouts_total,
    // SIP over TLS (issue 14).
    /// Accepted TLS connections closed because the handshake failed or stalled past sip.tls_handshake_timeout_ms.
    counter sip_tls_handshakes_failed_total,
    /// Outbound TLS connections that failed: handshake refused, stalled, or the peer's certificate did not verify.
    counter sip_tls_connect_failures_total,
    /// Reloads of sip.tls_cert and sip.tls_key (SIGHUP) that took effect.
    counter sip_tls_cert_reloads_total,
    /// Reloads refused (missing, unreadable, not PEM, key not the certificate's): the old pair stays.
    counter sip_tls_cert_reload_failures_total,
    /// Requests with a sips: Request-URI that arrived over UDP or TCP: 416 (RFC 5630), never taken.
    counter sip_sips_over_plain_refused_total,
    // Strict parsing (issue 12).
    /// Malformed requests answered 400 (or 416, 505) with the problem in the reason.
    counter sip_malformed_answered_total,
    // Crash recovery (issue 13): calls that die with their node get an end.
    /// Calls a previous run left live (a crash), ended at start-up by the system
    /// (phone_call.ended if answered, else phone_call.failed).
    counter calls_recovered_total,
    // Node identity and drain (issue 13).
    /// 1 while this node drains (new calls and OPTIONS get 503, live calls finish), else 0.
    gauge draining,
    // Session store (issue 13): Redis health, degraded mode.
    /// 1 while the session store answers, 0 while it cannot be reached (degraded mode).
    gauge session_store_up,
    /// Session store operations that failed (unreachable, timed out, or a bad answer).
    counter session_store_errors_total,
    // Cluster liveness and claims (issue 13).
    /// 1 once this node has joined the cluster in Redis (the calls its last run
    /// left are ended from then on), 0 before and while another node holds it for dead.
    gauge cluster_joined,
    /// Calls of nodes found dead that this node ended (one end each, by the system).
    counter cluster_calls_claimed_total,
    /// Times this node found another had taken it for dead and ended its calls.
    counter cluster_fenced_total,
    /// Heartbeats (with the live-call mirror) that did not reach Redis.
    counter cluster_heartbeat_errors_total,
    // Shared contacts (issue 13): the contact table in Redis.
    /// Contact store (Redis) operations that failed: unreachable, timed out, or a
    /// stored value that is not a contact (the enrichment goes on without it).
    counter contact_store_errors_total,
    /// Contacts copied from this node's SQLite file into Redis at start-up (ids
    /// Redis already had are kept and not counted).
    counter contacts_copied_to_redis_total,
    // Ticket notes (issue 16): the private comment on the ticket at handoff.
    /// Private notes added to a Zendesk ticket after a completed transfer
    /// (including a retry that found the note already there).
    counter ticket_notes_posted_total,
    /// Notes that could not be added (Zendesk refused or stayed unreachable through
    /// the retries, or the queue to the note task was full).
    counter ticket_notes_failed_total,
    /// Retries after a lost answer that found their note already on the ticket and
    /// posted nothing more.
    counter ticket_notes_deduplicated_total,
    // SRTP signalling (issue 14, item 2): SDES (a=crypto) per leg.
    /// SRTP keys agreed on a leg and handed to the relay (a call's first answer,
    /// a re-INVITE that changed them, a transfer target's answer).
    counter srtp_keys_agreed_total,
    /// Offers and answers refused for SRTP (488): a plain one where SRTP is
    /// required, RTP/SAVP where it is off, no usable or a malformed a=crypto,
    /// RTP/SAVPF or DTLS-SRTP.
    counter srtp_refused_total,
    // Outbound calls (issue 15): the AI agent calls a number through a carrier trunk.
    /// Outbound calls admitted (the carrier leg is placed).
    counter outbound_calls_started_total,
    /// Outbound INVITEs refused with 403 because the number is not E.164 or is
    /// outside the org's `allowed_prefixes` (toll-fraud guard): nothing dialled.
    counter outbound_refused_destination_total,
    /// Outbound INVITEs refused with 403: the agent is not one of the trunk's org, or
    /// asked for a caller ID the org may not present.
    counter outbound_refused_identity_total,
    /// Outbound INVITEs refused with 503 by the org's or the carrier trunk's limits.
    counter outbound_refused_limit_total,
}

mod trunk;
pub use trunk::{TrunkCounters, TrunkMetrics};

/// The method label values: the methods SIP defines that handoff meets, then
/// "other" (so a peer cannot grow the label set).
const METHODS: [&str; 15] = [
    "INVITE",
    "ACK",
    "BYE",
    "CANCEL",
    "OPTIONS",
    "UPDATE",
    "INFO",
    "REFER",
    "NOTIFY",
    "PRACK",
    "REGISTER",
    "SUBSCRIBE",
    "MESSAGE",
    "PUBLISH",
    "other",
];
const STATUSES: usize = 600; // 100..=699

/// Which way a message went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    In = 0,
    Out = 1,
}

/// SIP requests by direction and method, responses by direction, method (of their
/// CSeq) and status. Fixed arrays of atomics: no lock, bounded labels.
#[derive(Debug)]
pub struct SipTraffic {
    requests: Box<[AtomicU64]>,
    responses: Box<[AtomicU64]>,
}

impl Default for SipTraffic {
    fn default() -> Self {
        let n = |len: usize| (0..len).map(|_| AtomicU64::new(0)).collect::<Box<[_]>>();
        SipTraffic {
            requests: n(2 * METHODS.len()),
            responses: n(2 * METHODS.len() * STATUSES),
        }
    }
}

fn method_index(method: &str) -> usize {
    METHODS[..METHODS.len() - 1]
        .iter()
        .position(|m| m.eq_ignore_ascii_case(method))
        .unwrap_or(METHODS.len() - 1)
}

impl SipTraffic {
    /// A request of `method` went `dir`.
    pub fn request(&self, dir: Direction, method: &str) {
        let i = dir as usize * METHODS.len() + method_index(method);
        self.requests[i].fetch_add(1, Ordering::Relaxed);
    }

    /// A response `status` to a `method` request went `dir`. Statuses outside
    /// 100..=699 are not counted (they were refused as malformed).
    pub fn response(&self, dir: Direction, method: &str, status: u16) {
        if !(100..=699).contains(&status) {
            return;
        }
        let i = (dir as usize * METHODS.len() + method_index(method)) * STATUSES
            + usize::from(status - 100);
        self.responses[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Count a message handoff is sending, from its bytes (our own messages:
    /// canonical start line and `CSeq` header).
    pub fn outgoing(&self, bytes: &[u8]) {
        let line_end = bytes
            .windows(2)
            .position(|w| w == b"\r\n")
            .unwrap_or(bytes.len());
        let line = std::str::from_utf8(&bytes[..line_end]).unwrap_or("");
        if let Some(rest) = line.strip_prefix("SIP/2.0 ") {
            let status = rest.get(..3).and_then(|s| s.parse().ok()).unwrap_or(0);
            let method = cseq_method(bytes).unwrap_or("other");
            self.response(Direction::Out, method, status);
        } else if let Some(method) = line.split(' ').next().filter(|m| !m.is_empty()) {
            self.request(Direction::Out, method);
        }
    }

    /// How many requests of `method` went `dir` (for tests).
    pub fn requests_of(&self, dir: Direction, method: &str) -> u64 {
        self.requests[dir as usize * METHODS.len() + method_index(method)].load(Ordering::Relaxed)
    }

    fn render(&self, out: &mut String) {
        let dirs = ["in", "out"];
        let name = "handoff_sip_requests_total";
        let _ = writeln!(
            out,
            "# HELP {name} SIP requests received (in) and sent (out), by method."
        );
        let _ = writeln!(out, "# TYPE {name} counter");
        for (d, dir) in dirs.iter().enumerate() {
            for (m, method) in METHODS.iter().enumerate() {
                let v = self.requests[d * METHODS.len() + m].load(Ordering::Relaxed);
                let _ = writeln!(out, "{name}{{direction=\"{dir}\",method=\"{method}\"}} {v}");
            }
        }
        let name = "handoff_sip_responses_total";
        let _ = writeln!(
            out,
            "# HELP {name} SIP responses received (in) and sent (out), by the method they answer and status."
        );
        let _ = writeln!(out, "# TYPE {name} counter");
        for (d, dir) in dirs.iter().enumerate() {
            for (m, method) in METHODS.iter().enumerate() {
                for s in 0..STATUSES {
                    let v = self.responses[(d * METHODS.len() + m) * STATUSES + s]
                        .load(Ordering::Relaxed);
                    if v > 0 {
                        let status = s + 100;
                        let _ = writeln!(
                            out,
                            "{name}{{direction=\"{dir}\",method=\"{method}\",status=\"{status}\"}} {v}"
                        );
                    }
                }
            }
        }
    }
}

/// The method of the `CSeq` header in raw message bytes.
fn cseq_method(bytes: &[u8]) -> Option<&str> {
    let at = bytes
        .windows(7)
        .position(|w| w.eq_ignore_ascii_case(b"\r\nCSeq:"))?;
    let rest = &bytes[at + 7..];
    let end = rest
        .windows(2)
        .position(|w| w == b"\r\n")
        .unwrap_or(rest.len());
    let value = std::str::from_utf8(&rest[..end]).ok()?;
    value.split_whitespace().nth(1)
}

/// Upper bounds (seconds) of the histogram buckets: fine below a millisecond, where
/// a transfer INVITE should go out (25 to 100 us steps, so a p99 can be told from
/// 1 ms), coarse above.
const BUCKETS: [f64; 24] = [
    0.000_025, 0.000_05, 0.000_075, 0.000_1, 0.000_15, 0.000_2, 0.000_25, 0.000_3, 0.000_4,
    0.000_5, 0.000_6, 0.000_7, 0.000_8, 0.000_9, 0.001, 0.001_25, 0.001_5, 0.002, 0.005, 0.01,
    0.05, 0.1, 0.5, 1.0,
];

/// A Prometheus histogram with fixed buckets, lock-free.
#[derive(Debug, Default)]
pub struct Histogram {
    counts: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    /// Sum in nanoseconds, so it stays an integer atomic.
    sum_ns: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, seconds: f64) {
        if let Some(i) = BUCKETS.iter().position(|b| seconds <= *b) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let ns = (seconds.max(0.0) * 1e9) as u64;
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} histogram");
        let mut cumulative = 0;
        for (b, c) in BUCKETS.iter().zip(&self.counts) {
            cumulative += c.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {cumulative}");
        }
        let count = self.count();
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum {sum}");
        let _ = writeln!(out, "{name}_count {count}");
    }
}

/// How a voice-prefetch webhook request ended; the `outcome` label of
/// `handoff_webhook_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookOutcome {
    /// The ticket id was stamped on a live session.
    Stamped,
    /// The same ticket id was already on the session (idempotent repeat).
    AlreadyStamped,
    /// The session already carries another ticket id.
    Conflict,
    /// No live session for the phone.
    NoSession,
    /// Token missing, invalid, expired or for an unknown key.
    Unauthorized,
    /// Zendesk signature missing, wrong or too old.
    BadSignature,
    /// Body refused: bad JSON, field, content type or size.
    BadRequest,
    /// No signing key configured, the session store failed, or Zendesk could not
    /// be asked to confirm the ticket (503).
    Unavailable,
    /// The ticket names another caller (or does not exist): not stamped.
    Unconfirmed,
    /// An event envelope of a type handoff does not act on, or one it cannot
    /// serve for the org (no API credentials, no account id configured): 200.
    Ignored,
    /// An event whose invocation id or event id was already received: 200,
    /// nothing changed.
    Duplicate,
    /// An event (or `x-zendesk-account-id`) naming another Zendesk account than
    /// the org's: 403.
    WrongAccount,
}

impl WebhookOutcome {
    pub const ALL: [WebhookOutcome; 12] = [
        WebhookOutcome::Stamped,
        WebhookOutcome::AlreadyStamped,
        WebhookOutcome::Conflict,
        WebhookOutcome::NoSession,
        WebhookOutcome::Unauthorized,
        WebhookOutcome::BadSignature,
        WebhookOutcome::BadRequest,
        WebhookOutcome::Unavailable,
        WebhookOutcome::Unconfirmed,
        WebhookOutcome::Ignored,
        WebhookOutcome::Duplicate,
        WebhookOutcome::WrongAccount,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            WebhookOutcome::Stamped => "stamped",
            WebhookOutcome::AlreadyStamped => "already_stamped",
            WebhookOutcome::Conflict => "conflict",
            WebhookOutcome::NoSession => "no_session",
            WebhookOutcome::Unauthorized => "unauthorized",
            WebhookOutcome::BadSignature => "bad_signature",
            WebhookOutcome::BadRequest => "bad_request",
            WebhookOutcome::Unavailable => "unavailable",
            WebhookOutcome::Unconfirmed => "unconfirmed",
            WebhookOutcome::Ignored => "ignored",
            WebhookOutcome::Duplicate => "duplicate",
            WebhookOutcome::WrongAccount => "wrong_account",
        }
    }
}

/// One counter per [`WebhookOutcome`].
#[derive(Debug, Default)]
pub struct WebhookCounters([AtomicU64; WebhookOutcome::ALL.len()]);

impl WebhookCounters {
    pub fn inc(&self, outcome: WebhookOutcome) {
        self.0[outcome as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self, outcome: WebhookOutcome) -> u64 {
        self.0[outcome as usize].load(Ordering::Relaxed)
    }

    fn render(&self, out: &mut String) {
        let name = "handoff_webhook_requests_total";
        let _ = writeln!(
            out,
            "# HELP {name} Voice-prefetch webhook requests by outcome."
        );
        let _ = writeln!(out, "# TYPE {name} counter");
        for o in WebhookOutcome::ALL {
            let _ = writeln!(out, "{name}{{outcome=\"{}\"}} {}", o.as_str(), self.get(o));
        }
    }
}

/// The event types, in `events::EventType::ALL` order (the `type` label).
pub const EVENT_TYPES: [&str; 6] = [
    "phone_call.started",
    "conversation.started",
    "phone_call.answered",
    "phone_call.transferred",
    "phone_call.ended",
    "phone_call.failed",
];

/// Lifecycle-event counters and the outbox depth.
#[derive(Debug, Default)]
pub struct EventMetrics {
    /// By type, in [`EVENT_TYPES`] order.
    pub emitted: [AtomicU64; EVENT_TYPES.len()],
    pub delivered_total: AtomicU64,
    /// Attempts that failed and were scheduled again.
    pub retried_total: AtomicU64,
    /// Deliveries given up: a final 4xx, or too old.
    pub failed_total: AtomicU64,
    /// Deliveries (event x subscriber) in the outbox not yet finished.
    pub outbox_depth: AtomicI64,
    pub dropped_queue_full: AtomicU64,
    pub dropped_outbox_full: AtomicU64,
    /// Events that could not be written to the outbox (sent without it).
    pub dropped_store_error: AtomicU64,
    /// Inbound custom data refused (JSON in X-OPENCX-SESSION-CUSTOM-DATA, bad keys).
    pub custom_data_rejected_total: AtomicU64,
}

impl EventMetrics {
    fn render(&self, out: &mut String) {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let name = "handoff_events_emitted_total";
        let _ = writeln!(out, "# HELP {name} Lifecycle events emitted, by type.");
        let _ = writeln!(out, "# TYPE {name} counter");
        for (t, c) in EVENT_TYPES.iter().zip(&self.emitted) {
            let _ = writeln!(out, "{name}{{type=\"{t}\"}} {}", get(c));
        }
        let name = "handoff_events_deliveries_total";
        let _ = writeln!(out, "# HELP {name} Event delivery attempts by outcome (retried: failed and scheduled again).");
        let _ = writeln!(out, "# TYPE {name} counter");
        for (o, c) in [
            ("delivered", &self.delivered_total),
            ("retried", &self.retried_total),
            ("failed", &self.failed_total),
        ] {
            let _ = writeln!(out, "{name}{{outcome=\"{o}\"}} {}", get(c));
        }
        let name = "handoff_events_outbox_depth";
        let _ = writeln!(
            out,
            "# HELP {name} Event deliveries in the outbox not yet delivered or given up."
        );
        let _ = writeln!(out, "# TYPE {name} gauge");
        let _ = writeln!(out, "{name} {}", self.outbox_depth.load(Ordering::Relaxed));
        let name = "handoff_events_dropped_total";
        let _ = writeln!(out, "# HELP {name} Events not queued durably: queue full, outbox full of undelivered events, or outbox write failed (then sent without it).");
        let _ = writeln!(out, "# TYPE {name} counter");
        for (r, c) in [
            ("queue_full", &self.dropped_queue_full),
            ("outbox_full", &self.dropped_outbox_full),
            ("store_error", &self.dropped_store_error),
        ] {
            let _ = writeln!(out, "{name}{{reason=\"{r}\"}} {}", get(c));
        }
        let name = "handoff_events_custom_data_rejected_total";
        let _ = writeln!(out, "# HELP {name} Inbound custom data left out (JSON X-OPENCX-SESSION-CUSTOM-DATA, bad key or value).");
        let _ = writeln!(out, "# TYPE {name} counter");
        let _ = writeln!(out, "{name} {}", get(&self.custom_data_rejected_total));
    }
}

impl Metrics {
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn dec(gauge: &AtomicI64) {
        gauge.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn up(gauge: &AtomicI64) {
        gauge.fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_text_has_help_type_and_value() {
        let m = Metrics::default();
        Metrics::inc(&m.calls_started_total);
        m.calls_active.fetch_add(2, Ordering::Relaxed);
        let text = m.render_prometheus();
        assert!(text.contains(
            "# TYPE handoff_calls_started_total counter\nhandoff_calls_started_total 1\n"
        ));
        assert!(text.contains("# TYPE handoff_calls_active gauge\nhandoff_calls_active 2\n"));
        assert!(text.contains("# HELP handoff_calls_active Calls in progress."));
        m.webhook.inc(WebhookOutcome::Conflict);
        let text = m.render_prometheus();
        assert!(text.contains("handoff_webhook_requests_total{outcome=\"conflict\"} 1\n"));
        assert!(text.contains("handoff_webhook_requests_total{outcome=\"stamped\"} 0\n"));
    }

    #[test]
    fn webhook_outcomes_index_their_own_counter() {
        for (i, o) in WebhookOutcome::ALL.iter().enumerate() {
            assert_eq!(*o as usize, i, "{o:?}");
        }
    }

    #[test]
    fn histogram_buckets_are_cumulative_with_sum_and_count() {
        let m = Metrics::default();
        m.transfer_setup_seconds.observe(0.000_08);
        m.transfer_setup_seconds.observe(0.000_4);
        m.transfer_setup_seconds.observe(3.0);
        let text = m.render_prometheus();
        let name = "handoff_transfer_setup_seconds";
        assert!(text.contains(&format!("# TYPE {name} histogram\n")));
        assert!(text.contains(&format!("{name}_bucket{{le=\"0.00005\"}} 0\n")));
        assert!(text.contains(&format!("{name}_bucket{{le=\"0.0001\"}} 1\n")));
        assert!(text.contains(&format!("{name}_bucket{{le=\"0.0005\"}} 2\n")));
        assert!(text.contains(&format!("{name}_bucket{{le=\"1\"}} 2\n")));
        assert!(text.contains(&format!("{name}_bucket{{le=\"+Inf\"}} 3\n")));
        assert!(text.contains(&format!("{name}_count 3\n")));
        let sum: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}_sum ")))
            .and_then(|v| v.parse().ok())
            .expect("a sum line");
        assert!((sum - 3.00048).abs() < 1e-6, "{sum}");
    }

    #[test]
    fn sip_traffic_by_method_and_status() {
        let m = Metrics::default();
        m.sip.request(Direction::In, "INVITE");
        m.sip.request(Direction::In, "FOO");
        m.sip
            .outgoing(b"SIP/2.0 180 Ringing\r\nVia: x\r\nCSeq: 1 INVITE\r\n\r\n");
        m.sip
            .outgoing(b"BYE sip:a@b SIP/2.0\r\nCSeq: 2 BYE\r\n\r\n");
        m.sip.response(Direction::In, "BYE", 200);
        m.sip.response(Direction::In, "BYE", 700);
        let text = m.render_prometheus();
        assert!(text.contains("handoff_sip_requests_total{direction=\"in\",method=\"INVITE\"} 1\n"));
        assert!(text.contains("handoff_sip_requests_total{direction=\"in\",method=\"other\"} 1\n"));
        assert!(text.contains("handoff_sip_requests_total{direction=\"out\",method=\"BYE\"} 1\n"));
        assert!(text.contains(
            "handoff_sip_responses_total{direction=\"out\",method=\"INVITE\",status=\"180\"} 1\n"
        ));
        assert!(text.contains(
            "handoff_sip_responses_total{direction=\"in\",method=\"BYE\",status=\"200\"} 1\n"
        ));
        assert!(!text.contains("status=\"700\""));
        assert_eq!(m.sip.requests_of(Direction::Out, "BYE"), 1);
    }
}
