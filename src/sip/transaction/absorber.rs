//! Server transactions that outlived their call. Once a call has nothing left to do but
//! absorb retransmissions (Timers G/H/I/J/L of its finished server transactions), its
//! task exits and hands them here: a retransmitted request gets the last response again,
//! an ACK or a retransmitted INVITE after a 2xx is swallowed, and nothing can start a
//! second call. Bounded, and swept.

use crate::sip::message::{Message, Method};
use crate::sip::transport::Peer;
use bytes::Bytes;
use dashmap::DashMap;
use std::time::Instant;

/// One finished server transaction.
#[derive(Debug, Clone)]
pub struct Lingering {
    pub branch: String,
    pub sent_by: String,
    pub method: Method,
    /// Sent again on a retransmitted request; None: absorb silently.
    pub response: Option<Bytes>,
    pub peer: Peer,
    pub until: Instant,
}

/// What to do with a request the absorber knows.
#[derive(Debug, PartialEq, Eq)]
pub enum Absorb {
    /// Send this response again.
    Resend(Peer, Bytes),
    /// Swallow it.
    Silent,
}

/// What is kept of a lingering transaction, keyed by (branch, method).
struct Absorbed {
    sent_by: String,
    response: Option<Bytes>,
    peer: Peer,
    until: Instant,
}

pub struct Absorber {
    map: DashMap<(String, Method), Absorbed>,
    capacity: usize,
}

impl Absorber {
    pub fn new(capacity: usize) -> Self {
        Absorber {
            map: DashMap::new(),
            capacity,
        }
    }

    pub fn insert(&self, l: Lingering) {
        if self.map.len() >= self.capacity {
            // Full: the retransmission will find no transaction and get a 481, which is
            // still a correct answer for a finished dialog.
            return;
        }
        self.map.insert(
            (l.branch, l.method),
            Absorbed {
                sent_by: l.sent_by,
                response: l.response,
                peer: l.peer,
                until: l.until,
            },
        );
    }

    /// RFC 3261 17.2.3 matching (branch, sent-by, method; ACK matches INVITE).
    pub fn check(&self, req: &Message, now: Instant) -> Option<Absorb> {
        if self.map.is_empty() {
            return None;
        }
        let method = req.method()?;
        let via = req.top_via()?;
        let branch = via.branch()?.to_owned();
        let key_method = if *method == Method::Ack {
            Method::Invite
        } else {
            method.clone()
        };
        let entry = self.map.get(&(branch, key_method))?;
        let a = entry.value();
        if a.sent_by != via.sent_by_key() || now >= a.until {
            return None;
        }
        Some(match (method, &a.response) {
            (Method::Ack, _) | (_, None) => Absorb::Silent,
            (_, Some(bytes)) => Absorb::Resend(a.peer, bytes.clone()),
        })
    }

    pub fn sweep(&self, now: Instant) -> usize {
        let before = self.map.len();
        self.map.retain(|_, v| v.until > now);
        before - self.map.len()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::parse;
    use std::time::Duration;

    fn req(method: &str, branch: &str) -> Message {
        parse(Bytes::from(format!("{method} sip:h@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch={branch}\r\nFrom: <sip:a@h>;tag=1\r\nTo: <sip:h@h>;tag=2\r\nCall-ID: c\r\nCSeq: 2 {method}\r\n\r\n"))).unwrap()
    }

    fn lingering(method: Method, response: Option<&'static [u8]>, until: Instant) -> Lingering {
        Lingering {
            branch: "z9hG4bKx".into(),
            sent_by: "127.0.0.1:5070".into(),
            method,
            response: response.map(Bytes::from_static),
            peer: Peer::udp("127.0.0.1:5070".parse().unwrap()),
            until,
        }
    }

    #[test]
    fn retransmitted_bye_gets_its_200_again() {
        let a = Absorber::new(10);
        let now = Instant::now();
        a.insert(lingering(
            Method::Bye,
            Some(b"SIP/2.0 200 OK"),
            now + Duration::from_secs(32),
        ));
        assert!(
            matches!(a.check(&req("BYE", "z9hG4bKx"), now), Some(Absorb::Resend(_, b)) if &b[..] == b"SIP/2.0 200 OK")
        );
        assert_eq!(a.check(&req("BYE", "z9hG4bKother"), now), None);
        assert_eq!(a.check(&req("INFO", "z9hG4bKx"), now), None);
    }

    #[test]
    fn invite_after_2xx_and_its_ack_are_swallowed() {
        let a = Absorber::new(10);
        let now = Instant::now();
        a.insert(lingering(
            Method::Invite,
            None,
            now + Duration::from_secs(32),
        ));
        assert_eq!(
            a.check(&req("INVITE", "z9hG4bKx"), now),
            Some(Absorb::Silent)
        );
        assert_eq!(a.check(&req("ACK", "z9hG4bKx"), now), Some(Absorb::Silent));
    }

    #[test]
    fn expired_entries_do_not_match_and_are_swept() {
        let a = Absorber::new(10);
        let now = Instant::now();
        a.insert(lingering(
            Method::Bye,
            Some(b"x"),
            now + Duration::from_millis(10),
        ));
        assert_eq!(
            a.check(&req("BYE", "z9hG4bKx"), now + Duration::from_millis(20)),
            None
        );
        assert_eq!(a.sweep(now + Duration::from_millis(20)), 1);
        assert!(a.is_empty());
    }

    #[test]
    fn capacity_bounds_the_table() {
        let a = Absorber::new(1);
        let now = Instant::now() + Duration::from_secs(5);
        a.insert(lingering(Method::Bye, None, now));
        let mut other = lingering(Method::Info, None, now);
        other.branch = "z9hG4bKy".into();
        a.insert(other);
        assert_eq!(a.len(), 1);
    }
}
