//! Which `failure_category` a `phone_call.failed` event carries: a pure mapping of
//! how the SIP side of the call ended.

use serde::Serialize;

/// How a call (or a transfer) failed to connect, as the SIP side saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SipOutcome {
    /// The far party answered with this final status (300-699).
    Status(u16),
    /// No final answer in time (Timer B, the answer or ring timeout).
    Timeout,
    /// The far party could not be reached (DNS, connection, send failure).
    TransportFailure,
    /// The caller gave up before the answer (CANCEL, or BYE in an early dialog):
    /// the caller was answered 487.
    Cancelled,
    /// handoff ended the attempt itself (shutdown, media it could not relay).
    Local(u16),
}

impl SipOutcome {
    /// The SIP status that stands for this outcome (`sip_status` in the event).
    pub fn status(self) -> Option<u16> {
        match self {
            SipOutcome::Status(s) | SipOutcome::Local(s) => Some(s),
            SipOutcome::Timeout => Some(408),
            SipOutcome::Cancelled => Some(487),
            SipOutcome::TransportFailure => None,
        }
    }

    /// A word for `failure_reason`: what happened, beyond the category.
    pub fn reason(self) -> &'static str {
        match self {
            SipOutcome::Status(_) => "sip_status",
            SipOutcome::Timeout => "timeout",
            SipOutcome::TransportFailure => "transport_failure",
            SipOutcome::Cancelled => "cancelled",
            SipOutcome::Local(_) => "local",
        }
    }
}

/// The `failure_category` values of the seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureCategory {
    NoAnswer,
    Rejected,
    Busy,
    TrunkError,
    Failed,
}

/// no_answer: timeout, 408, 480; rejected: 603, 403; busy: 486, 600;
/// trunk_error: 502, 503, 504 and transport failures; failed: everything else
/// (a CANCEL's 487 included).
pub fn failure_category(outcome: SipOutcome) -> FailureCategory {
    match outcome {
        SipOutcome::Timeout => FailureCategory::NoAnswer,
        SipOutcome::TransportFailure => FailureCategory::TrunkError,
        SipOutcome::Cancelled | SipOutcome::Local(_) => FailureCategory::Failed,
        SipOutcome::Status(s) => match s {
            408 | 480 => FailureCategory::NoAnswer,
            403 | 603 => FailureCategory::Rejected,
            486 | 600 => FailureCategory::Busy,
            502..=504 => FailureCategory::TrunkError,
            _ => FailureCategory::Failed,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::FailureCategory::*;
    use super::SipOutcome::*;
    use super::*;

    fn status(s: u16) -> FailureCategory {
        failure_category(Status(s))
    }

    #[test]
    fn timeout_is_no_answer() {
        assert_eq!(failure_category(Timeout), NoAnswer);
    }

    #[test]
    fn status_408_is_no_answer() {
        assert_eq!(status(408), NoAnswer);
    }

    #[test]
    fn status_480_is_no_answer() {
        assert_eq!(status(480), NoAnswer);
    }

    #[test]
    fn status_603_is_rejected() {
        assert_eq!(status(603), Rejected);
    }

    #[test]
    fn status_403_is_rejected() {
        assert_eq!(status(403), Rejected);
    }

    #[test]
    fn status_486_is_busy() {
        assert_eq!(status(486), Busy);
    }

    #[test]
    fn status_600_is_busy() {
        assert_eq!(status(600), Busy);
    }

    #[test]
    fn status_502_is_trunk_error() {
        assert_eq!(status(502), TrunkError);
    }

    #[test]
    fn status_503_is_trunk_error() {
        assert_eq!(status(503), TrunkError);
    }

    #[test]
    fn status_504_is_trunk_error() {
        assert_eq!(status(504), TrunkError);
    }

    #[test]
    fn transport_failure_is_trunk_error() {
        assert_eq!(failure_category(TransportFailure), TrunkError);
    }

    #[test]
    fn other_statuses_are_failed() {
        for s in [
            300, 302, 400, 401, 404, 407, 481, 487, 488, 500, 501, 505, 580, 604, 606, 699,
        ] {
            assert_eq!(status(s), Failed, "{s}");
        }
    }

    #[test]
    fn cancel_and_local_endings_are_failed() {
        assert_eq!(failure_category(Cancelled), Failed);
        assert_eq!(failure_category(Local(503)), Failed);
        assert_eq!(Cancelled.status(), Some(487));
        assert_eq!(Timeout.status(), Some(408));
        assert_eq!(TransportFailure.status(), None);
    }

    #[test]
    fn categories_serialize_as_the_seed_names_them() {
        let names: Vec<String> = [NoAnswer, Rejected, Busy, TrunkError, Failed]
            .iter()
            .map(|c| serde_json::to_string(c).unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "\"no_answer\"",
                "\"rejected\"",
                "\"busy\"",
                "\"trunk_error\"",
                "\"failed\""
            ]
        );
    }
}
