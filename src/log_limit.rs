//! Rate limits for log lines that a failing dependency would repeat per call or
//! per request (Redis away at 100 calls a second is hundreds of identical
//! warnings a second). Each call site has its own [`LogLimit`]: a few lines per
//! window go out, the rest are counted and the next line that goes out says how
//! many were left out. The metrics count every failure regardless.

use std::sync::Mutex;
use std::time::Instant;

/// A site's budget: `burst` lines per `window_ms`.
pub struct LogLimit {
    window_ms: u64,
    burst: u32,
    state: Mutex<Window>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Window {
    /// Start of the current window (ms since `clock`'s origin); None before the first line.
    start: Option<u64>,
    logged: u32,
    /// Lines left out since the last one logged.
    suppressed: u64,
}

/// The decision for one line at `now_ms` (pure): the window after it, and
/// `Some(left out before it)` when it is logged.
fn decide(w: Window, now_ms: u64, window_ms: u64, burst: u32) -> (Window, Option<u64>) {
    let fresh = w
        .start
        .is_none_or(|s| now_ms.saturating_sub(s) >= window_ms);
    let mut w = if fresh {
        Window {
            start: Some(now_ms),
            logged: 0,
            suppressed: w.suppressed,
        }
    } else {
        w
    };
    if w.logged < burst {
        w.logged += 1;
        let left_out = std::mem::take(&mut w.suppressed);
        (w, Some(left_out))
    } else {
        w.suppressed += 1;
        (w, None)
    }
}

fn clock_ms() -> u64 {
    static ORIGIN: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    ORIGIN.get_or_init(Instant::now).elapsed().as_millis() as u64
}

impl LogLimit {
    pub const fn new(window_ms: u64, burst: u32) -> LogLimit {
        LogLimit {
            window_ms,
            burst,
            state: Mutex::new(Window {
                start: None,
                logged: 0,
                suppressed: 0,
            }),
        }
    }

    /// Whether to log this line: `Some(n)` with the lines left out before it.
    pub fn admit(&self) -> Option<u64> {
        let mut w = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (next, verdict) = decide(*w, clock_ms(), self.window_ms, self.burst);
        *w = next;
        verdict
    }
}

/// The usual budget of a per-call or per-request failure line: 10 per 10 s.
pub const fn per_call() -> LogLimit {
    LogLimit::new(10_000, 10)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_goes_out_then_lines_are_counted_and_reported_with_the_next_window() {
        let mut w = Window::default();
        let mut out = Vec::new();
        for t in 0..5 {
            let (n, v) = decide(w, t, 1000, 3);
            w = n;
            out.push(v);
        }
        assert_eq!(out, [Some(0), Some(0), Some(0), None, None]);
        // A new window: the first line says two were left out.
        let (n, v) = decide(w, 1000, 1000, 3);
        assert_eq!(v, Some(2));
        let (_, v) = decide(n, 1001, 1000, 3);
        assert_eq!(v, Some(0), "reported once");
    }

    #[test]
    fn a_quiet_site_logs_every_line() {
        let mut w = Window::default();
        for t in [0, 5000, 20_000, 21_000] {
            let (n, v) = decide(w, t, 1000, 1);
            assert_eq!(v, Some(0), "at {t}");
            w = n;
            // One per window: a second line in the same window is held.
            if t == 20_000 {
                assert_eq!(decide(w, t, 1000, 1).1, None);
            }
        }
    }

    #[test]
    fn the_shared_limiter_holds_a_flood() {
        let l = LogLimit::new(60_000, 4);
        let logged = (0..1000).filter(|_| l.admit().is_some()).count();
        assert_eq!(logged, 4);
    }
}
