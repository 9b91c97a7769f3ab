//! Per-trunk counters, labelled by the trunk's name (a config-validated token, safe
//! in a label). The set is fixed once at start-up: no lock, no label a peer can grow.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::OnceLock;

/// One trunk's counters.
#[derive(Debug, Default)]
pub struct TrunkCounters {
    pub name: String,
    /// Calls from this trunk that started (a call task was spawned).
    pub calls_started_total: AtomicU64,
    /// INVITEs from this trunk refused with 503 by its own limits.
    pub calls_rejected_limit_total: AtomicU64,
    /// Calls from this trunk in progress.
    pub calls_active: AtomicI64,
    // Digest authentication by handoff and registration (issue 15).
    /// INVITEs answered 407 (no credentials for our realm, or a stale nonce).
    pub auth_challenges_total: AtomicU64,
    /// INVITEs refused 403 for wrong, replayed or malformed credentials.
    pub auth_failures_total: AtomicU64,
    /// 1 while handoff holds a registration with the trunk's registrar.
    pub registered: AtomicI64,
    /// REGISTER outcomes: 2xx, final failures (and transport errors), 401/407.
    pub registrations_ok_total: AtomicU64,
    pub registrations_failed_total: AtomicU64,
    pub registrations_challenged_total: AtomicU64,
    /// The expiry the registrar granted (0 when not registered).
    pub registration_expires_seconds: AtomicI64,
}

/// Every trunk's counters, in configuration order.
#[derive(Debug, Default)]
pub struct TrunkMetrics {
    trunks: OnceLock<Box<[TrunkCounters]>>,
}

impl TrunkMetrics {
    /// Set the trunks (once, at start-up; later calls change nothing).
    pub fn init<'a>(&self, names: impl IntoIterator<Item = &'a str>) {
        let list: Box<[TrunkCounters]> = names
            .into_iter()
            .map(|n| TrunkCounters {
                name: n.to_owned(),
                ..Default::default()
            })
            .collect();
        let _ = self.trunks.set(list);
    }

    /// The counters of the trunk at `index` in the configuration.
    pub fn get(&self, index: usize) -> Option<&TrunkCounters> {
        self.trunks.get().and_then(|t| t.get(index))
    }

    /// The counters of the trunk named `name`.
    pub fn by_name(&self, name: &str) -> Option<&TrunkCounters> {
        self.trunks.get()?.iter().find(|t| t.name == name)
    }

    pub(super) fn render(&self, out: &mut String) {
        let Some(list) = self.trunks.get().filter(|l| !l.is_empty()) else {
            return;
        };
        type Get = fn(&TrunkCounters) -> i64;
        let families: [(&str, &str, &str, Get); 7] = [
            (
                "handoff_trunk_calls_started_total",
                "counter",
                "Calls started from each trunk.",
                |c| c.calls_started_total.load(Ordering::Relaxed) as i64,
            ),
            (
                "handoff_trunk_calls_rejected_limit_total",
                "counter",
                "INVITEs refused with 503 by the trunk's max_calls or max_calls_per_second.",
                |c| c.calls_rejected_limit_total.load(Ordering::Relaxed) as i64,
            ),
            (
                "handoff_trunk_calls_active",
                "gauge",
                "Calls in progress from each trunk.",
                |c| c.calls_active.load(Ordering::Relaxed),
            ),
            (
                "handoff_trunk_auth_challenges_total",
                "counter",
                "INVITEs from each trunk answered 407 by handoff's digest authentication.",
                |c| c.auth_challenges_total.load(Ordering::Relaxed) as i64,
            ),
            (
                "handoff_trunk_auth_failures_total",
                "counter",
                "INVITEs from each trunk refused 403 for wrong, replayed or malformed credentials.",
                |c| c.auth_failures_total.load(Ordering::Relaxed) as i64,
            ),
            (
                "handoff_trunk_registered",
                "gauge",
                "1 while handoff holds a registration with the trunk's registrar.",
                |c| c.registered.load(Ordering::Relaxed),
            ),
            (
                "handoff_trunk_registration_expires_seconds",
                "gauge",
                "The registration expiry the trunk's registrar granted (0: not registered).",
                |c| c.registration_expires_seconds.load(Ordering::Relaxed),
            ),
        ];
        for (name, kind, help, get) in families {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for c in list.iter() {
                let _ = writeln!(out, "{name}{{trunk=\"{}\"}} {}", c.name, get(c));
            }
        }
        let name = "handoff_trunk_registrations_total";
        let _ = writeln!(
            out,
            "# HELP {name} REGISTER transactions with each trunk's registrar, by result."
        );
        let _ = writeln!(out, "# TYPE {name} counter");
        for c in list.iter() {
            for (result, n) in [
                ("ok", &c.registrations_ok_total),
                ("failed", &c.registrations_failed_total),
                ("challenged", &c.registrations_challenged_total),
            ] {
                let _ = writeln!(
                    out,
                    "{name}{{trunk=\"{}\",result=\"{result}\"}} {}",
                    c.name,
                    n.load(Ordering::Relaxed)
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_trunk_has_its_labelled_series() {
        let m = TrunkMetrics::default();
        let mut out = String::new();
        m.render(&mut out);
        assert!(out.is_empty(), "no trunk, no series");
        m.init(["carrier-a", "carrier-b"]);
        m.get(1)
            .unwrap()
            .calls_started_total
            .fetch_add(3, Ordering::Relaxed);
        m.by_name("carrier-a")
            .unwrap()
            .calls_active
            .fetch_add(1, Ordering::Relaxed);
        m.render(&mut out);
        assert!(out.contains("handoff_trunk_calls_started_total{trunk=\"carrier-b\"} 3\n"));
        assert!(out.contains("handoff_trunk_calls_active{trunk=\"carrier-a\"} 1\n"));
        assert!(out.contains("# TYPE handoff_trunk_calls_active gauge\n"));
        assert!(out.contains("handoff_trunk_calls_rejected_limit_total{trunk=\"carrier-a\"} 0\n"));
        assert!(out.contains("handoff_trunk_auth_failures_total{trunk=\"carrier-a\"} 0\n"));
        assert!(out.contains("handoff_trunk_registered{trunk=\"carrier-b\"} 0\n"));
        assert!(out
            .contains("handoff_trunk_registrations_total{trunk=\"carrier-b\",result=\"ok\"} 0\n"));
    }
}
