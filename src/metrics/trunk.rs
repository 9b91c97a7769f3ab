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
        let families: [(&str, &str, &str, Get); 3] = [
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
        ];
        for (name, kind, help, get) in families {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for c in list.iter() {
                let _ = writeln!(out, "{name}{{trunk=\"{}\"}} {}", c.name, get(c));
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
    }
}
