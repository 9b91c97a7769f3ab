//! `[trunk.auth]` at admission: an out-of-dialog INVITE from a trunk with credentials
//! configured must answer handoff's digest challenge (RFC 3261 22.3). ACK and CANCEL
//! never reach here (RFC 3261 22.1: they cannot be challenged); in-dialog requests go
//! to their call. The verdict is `sip::auth::server`'s; this only maps it to a reply
//! and counts it.

use crate::config::Trunk;
use crate::metrics::Metrics;
use crate::sip::auth::server::{AuthRequest, DigestVerifier, Verdict};
use crate::sip::message::Message;
use std::sync::atomic::Ordering;

/// Each trunk's verifier, by trunk index; `None`: the trunk is not authenticated.
pub struct TrunkAuth {
    verifiers: Vec<Option<DigestVerifier>>,
}

/// A stateless answer instead of a call.
#[derive(Debug, PartialEq, Eq)]
pub struct AuthReply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
}

impl TrunkAuth {
    pub fn new(trunks: &[Trunk]) -> TrunkAuth {
        TrunkAuth {
            verifiers: trunks
                .iter()
                .map(|t| t.auth.as_ref().map(DigestVerifier::new))
                .collect(),
        }
    }

    /// `None`: let the INVITE through (authorized, or the trunk needs no credentials).
    pub fn check(
        &self,
        index: usize,
        trunk: &str,
        invite: &Message,
        now: u64,
        metrics: &Metrics,
    ) -> Option<AuthReply> {
        let verifier = self.verifiers.get(index)?.as_ref()?;
        let counters = metrics.trunks.get(index);
        let request = AuthRequest {
            method: invite.method().map_or("INVITE", |m| m.as_str()),
            request_uri: invite.request_uri().unwrap_or(""),
            call_id: invite.call_id().unwrap_or(""),
            cseq: invite.cseq().map_or(0, |c| c.seq),
        };
        let authorizations = invite
            .headers()
            .iter()
            .filter(|h| h.name().is("Proxy-Authorization"))
            .map(|h| h.value());
        match verifier.verify(&request, authorizations, now) {
            Verdict::Authorized => None,
            Verdict::Challenge { stale } => {
                if let Some(c) = counters {
                    c.auth_challenges_total.fetch_add(1, Ordering::Relaxed);
                }
                tracing::debug!(trunk, stale, "INVITE challenged (407)");
                Some(AuthReply {
                    status: 407,
                    headers: verifier
                        .challenges(now, stale)
                        .into_iter()
                        .map(|v| ("Proxy-Authenticate", v))
                        .collect(),
                })
            }
            Verdict::Refused(why) => {
                if let Some(c) = counters {
                    c.auth_failures_total.fetch_add(1, Ordering::Relaxed);
                }
                tracing::info!(trunk, ?why, "INVITE with bad credentials refused (403)");
                Some(AuthReply {
                    status: 403,
                    headers: Vec::new(),
                })
            }
        }
    }
}
