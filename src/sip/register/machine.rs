//! One registration binding as a sans-IO machine (RFC 3261 10.2): `handle(now, event)
//! -> actions`, the clock a parameter. The task (`task.rs`) builds and sends the
//! REGISTER each `Send` asks for and feeds the final responses back.
//!
//! - One Call-ID for every REGISTER, CSeq up by one each time (RFC 3261 10.2.4).
//! - 401/407: answered (digest, `sip::auth`) when the request carried no credentials;
//!   a second challenge after an answer is a failure unless it says `stale=true`.
//! - 423: the request is sent again with the registrar's `Min-Expires`.
//! - 2xx: registered for what the registrar granted; refreshed after half of it (the
//!   earlier of half and expiry - 30 s for every grant of a minute or more).
//! - Failures and timeouts: exponential back-off with jitter, capped; a 503's
//!   `Retry-After` honoured up to [`MAX_RETRY_AFTER`]. A registration still inside
//!   its granted time stays up until that ends.
//! - Shutdown: one REGISTER with `Expires: 0` (its challenge answered), then done.

use crate::sip::auth::{ChallengeKind, DigestChallenge, DigestCredentials};
use std::time::{Duration, Instant};

/// First back-off after a failure; doubles per failure.
pub const BACKOFF_BASE: Duration = Duration::from_secs(2);
/// Longest back-off.
pub const BACKOFF_CAP: Duration = Duration::from_secs(300);
/// Longest `Retry-After` honoured.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);
/// Longest `Min-Expires` accepted from a 423 (one day).
const MAX_MIN_EXPIRES: u32 = 86_400;
/// `stale=true` challenges answered in a row before giving up.
const MAX_STALE: u32 = 3;

/// What the machine needs of the configuration.
#[derive(Clone)]
pub struct Params {
    /// The Request-URI (also the digest `uri`).
    pub request_uri: String,
    pub expires: u32,
    /// (username, password).
    pub credentials: Option<(String, String)>,
}

/// What the task read from a final (or provisional) response.
#[derive(Debug, Clone, Default)]
pub struct Response {
    pub status: u16,
    /// The CSeq number it answers.
    pub cseq: u32,
    /// Granted expiry: our Contact's `expires` parameter, else the `Expires` header.
    pub expires: Option<u32>,
    pub min_expires: Option<u32>,
    pub retry_after: Option<u32>,
    /// `WWW-Authenticate` (401) or `Proxy-Authenticate` (407) values, in order.
    pub challenges: Vec<String>,
}

#[derive(Debug, Clone)]
pub enum Event {
    /// Time passed (the task wakes at `next_wakeup`).
    Tick,
    Response(Response),
    /// The transaction of CSeq `cseq` timed out or could not be sent.
    Failed {
        cseq: u32,
    },
    /// SIGTERM: unregister.
    Shutdown,
}

/// A REGISTER to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub cseq: u32,
    pub expires: u32,
    /// (`Authorization` or `Proxy-Authorization`, value).
    pub authorization: Option<(&'static str, String)>,
}

/// Outcomes counted in `handoff_trunk_registrations_total{result}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Failed,
    Challenged,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Send(Request),
    /// Registered (again) for `expires` seconds.
    Registered {
        expires: u32,
    },
    /// No longer registered (expired, refused, or unregistered).
    Unregistered,
    Count(Outcome),
    /// Why a failure happened, for one log line (no secrets).
    Failure(String),
    /// Shutdown finished: the task may end.
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Send the next REGISTER at this time.
    Idle(Instant),
    /// A REGISTER is in flight.
    Waiting {
        unregister: bool,
    },
    Done,
}

pub struct RegisterMachine {
    params: Params,
    state: State,
    cseq: u32,
    /// What we ask for (raised by a 423).
    expires: u32,
    /// The request in flight carried credentials.
    sent_auth: bool,
    stale_answers: u32,
    failures: u32,
    registered_until: Option<Instant>,
    rng: u64,
}

impl RegisterMachine {
    /// A machine that sends its first REGISTER at `now`; `seed` feeds the jitter and
    /// the cnonces (any value but 0 is fine; tests pass a fixed one).
    pub fn new(params: Params, now: Instant, seed: u64) -> RegisterMachine {
        RegisterMachine {
            expires: params.expires,
            params,
            state: State::Idle(now),
            cseq: 0,
            sent_auth: false,
            stale_answers: 0,
            failures: 0,
            registered_until: None,
            rng: seed | 1,
        }
    }

    /// When to call `handle(now, Tick)` next; `None`: only on an event.
    pub fn next_wakeup(&self) -> Option<Instant> {
        let send = match self.state {
            State::Idle(at) => Some(at),
            _ => None,
        };
        match (send, self.registered_until) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    pub fn handle(&mut self, now: Instant, event: Event) -> Vec<Action> {
        let mut out = Vec::new();
        if self.state == State::Done {
            return out;
        }
        match event {
            Event::Tick => {
                self.expire(now, &mut out);
                if let State::Idle(at) = self.state {
                    if now >= at {
                        self.send(false, None, &mut out);
                    }
                }
            }
            Event::Response(r) => self.on_response(now, r, &mut out),
            Event::Failed { cseq } => {
                if cseq == self.cseq {
                    if let State::Waiting { unregister } = self.state {
                        self.fail(
                            now,
                            unregister,
                            "no answer (timeout or transport error)",
                            None,
                            &mut out,
                        );
                    }
                }
            }
            Event::Shutdown => {
                self.expire(now, &mut out);
                let in_flight = matches!(self.state, State::Waiting { .. });
                if self.registered_until.is_some() || in_flight {
                    self.send(true, None, &mut out);
                } else {
                    self.state = State::Done;
                    out.push(Action::Done);
                }
            }
        }
        out
    }

    fn expire(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.registered_until.is_some_and(|u| now >= u) {
            self.registered_until = None;
            out.push(Action::Unregistered);
        }
    }

    fn send(
        &mut self,
        unregister: bool,
        authorization: Option<(&'static str, String)>,
        out: &mut Vec<Action>,
    ) {
        self.cseq += 1;
        self.sent_auth = authorization.is_some();
        if !self.sent_auth {
            self.stale_answers = 0;
        }
        self.state = State::Waiting { unregister };
        out.push(Action::Send(Request {
            cseq: self.cseq,
            expires: if unregister { 0 } else { self.expires },
            authorization,
        }));
    }

    fn on_response(&mut self, now: Instant, r: Response, out: &mut Vec<Action>) {
        let State::Waiting { unregister } = self.state else {
            return;
        };
        // A late answer to an earlier REGISTER, or a provisional one.
        if r.cseq != self.cseq || r.status < 200 {
            return;
        }
        match r.status {
            200..=299 => {
                out.push(Action::Count(Outcome::Ok));
                if unregister {
                    if self.registered_until.take().is_some() {
                        out.push(Action::Unregistered);
                    }
                    self.state = State::Done;
                    out.push(Action::Done);
                    return;
                }
                let granted = r.expires.unwrap_or(self.expires);
                if granted == 0 {
                    return self.fail(now, false, "registrar granted expires 0", None, out);
                }
                self.failures = 0;
                self.registered_until = Some(now + Duration::from_secs(u64::from(granted)));
                self.state = State::Idle(now + refresh_after(granted));
                out.push(Action::Registered { expires: granted });
            }
            401 | 407 => {
                out.push(Action::Count(Outcome::Challenged));
                let kind = if r.status == 401 {
                    ChallengeKind::Www
                } else {
                    ChallengeKind::Proxy
                };
                match self.answer(kind, &r.challenges) {
                    Ok(auth) => self.send(unregister, Some(auth), out),
                    Err(why) => self.fail(now, unregister, &why, None, out),
                }
            }
            423 => match r.min_expires {
                Some(min) if min > self.expires && min <= MAX_MIN_EXPIRES && !unregister => {
                    self.expires = min;
                    self.send(false, None, out);
                }
                _ => self.fail(
                    now,
                    unregister,
                    "423 without a usable Min-Expires",
                    None,
                    out,
                ),
            },
            status => {
                let retry_after = (status == 503).then_some(r.retry_after).flatten();
                self.fail(
                    now,
                    unregister,
                    &format!("registrar answered {status}"),
                    retry_after,
                    out,
                );
            }
        }
    }

    /// The header answering a challenge, or why not.
    fn answer(
        &mut self,
        kind: ChallengeKind,
        challenges: &[String],
    ) -> Result<(&'static str, String), String> {
        if self.params.credentials.is_none() {
            return Err("challenged, and no credentials are configured".into());
        }
        let challenge = DigestChallenge::first_supported(challenges.iter().map(String::as_str))
            .map_err(|e| format!("challenge not answerable: {e}"))?;
        if self.sent_auth {
            if !challenge.stale {
                return Err("credentials refused (challenged again)".into());
            }
            self.stale_answers += 1;
            if self.stale_answers > MAX_STALE {
                return Err("stale nonces without end".into());
            }
        }
        let cnonce = format!("{:016x}", self.next_random());
        let Some((user, pass)) = &self.params.credentials else {
            return Err("challenged, and no credentials are configured".into());
        };
        let credentials = DigestCredentials {
            username: user,
            password: pass,
        };
        let value = challenge
            .answer(
                "REGISTER",
                &self.params.request_uri,
                &credentials,
                &cnonce,
                1,
            )
            .map_err(|e| format!("cannot answer the challenge: {e}"))?;
        Ok((kind.authorization_header(), value))
    }

    fn fail(
        &mut self,
        now: Instant,
        unregister: bool,
        why: &str,
        retry_after: Option<u32>,
        out: &mut Vec<Action>,
    ) {
        out.push(Action::Count(Outcome::Failed));
        out.push(Action::Failure(why.to_owned()));
        if unregister {
            self.state = State::Done;
            out.push(Action::Done);
            return;
        }
        self.failures = self.failures.saturating_add(1);
        let jitter = (self.next_random() % 1000) as f64 / 1000.0;
        let mut delay = backoff(self.failures, jitter);
        if let Some(ra) = retry_after {
            delay = delay.max(Duration::from_secs(u64::from(ra)).min(MAX_RETRY_AFTER));
        }
        self.state = State::Idle(now + delay);
    }

    /// xorshift64: jitter and cnonces need no more.
    fn next_random(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }

    /// The CSeq of the latest REGISTER.
    pub fn cseq(&self) -> u32 {
        self.cseq
    }
}

/// When to refresh a registration granted for `granted` seconds: the earlier of half
/// of it and 30 s before it ends (half, for every grant).
pub fn refresh_after(granted: u32) -> Duration {
    let g = u64::from(granted);
    let half = g / 2;
    let before_end = g.saturating_sub(30);
    Duration::from_secs(
        if before_end == 0 {
            half
        } else {
            half.min(before_end)
        }
        .max(1),
    )
}

/// The `failures`-th back-off: `BACKOFF_BASE` doubled per failure up to `BACKOFF_CAP`,
/// then scaled into [half, all] of it by `jitter` in [0, 1) ("equal jitter": many
/// nodes that failed together do not retry together).
pub fn backoff(failures: u32, jitter: f64) -> Duration {
    let exp = failures.saturating_sub(1).min(16);
    let full = BACKOFF_BASE.saturating_mul(1 << exp).min(BACKOFF_CAP);
    full.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
}

#[cfg(test)]
#[path = "machine_tests.rs"]
mod tests;
