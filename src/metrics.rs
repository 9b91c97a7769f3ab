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
}

impl Metrics {
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
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
    }
}
