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
    /// Transactions that timed out (Timer B, F or H).
    counter transaction_timeouts_total,
    /// Calls whose media runs through handoff's relay now.
    gauge media_relays_active,
    /// Calls refused with 503 because no RTP port pair was free.
    counter media_ports_exhausted_total,
    /// Calls ended because no RTP arrived within the media timeout.
    counter media_timeouts_total,
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
    /// No signing key configured.
    Unavailable,
}

impl WebhookOutcome {
    pub const ALL: [WebhookOutcome; 8] = [
        WebhookOutcome::Stamped,
        WebhookOutcome::AlreadyStamped,
        WebhookOutcome::Conflict,
        WebhookOutcome::NoSession,
        WebhookOutcome::Unauthorized,
        WebhookOutcome::BadSignature,
        WebhookOutcome::BadRequest,
        WebhookOutcome::Unavailable,
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
}
