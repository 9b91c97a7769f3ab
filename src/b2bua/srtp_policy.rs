//! SDES SRTP offer/answer on one leg (RFC 4568, RFC 3264), as a sans-IO state:
//! given the leg's `srtp` policy and what its peer offers or answers, what
//! handoff answers or offers there and which keys the relay gets for it.
//!
//! handoff terminates SRTP per leg: a peer's `a=crypto` never crosses to the
//! other leg, each leg gets handoff's own key. The rules:
//!
//! - An offer on `RTP/SAVP` with a usable `a=crypto` (a suite handoff speaks,
//!   one key, no MKI, no session parameter) is answered `RTP/SAVP` with a fresh
//!   key of handoff's under the same tag (RFC 4568 6.1: the first line we can
//!   take, in the offerer's order), on an `optional` or `required` leg. On an
//!   `off` leg it is refused with 488 (an answer must keep the offer's profile,
//!   RFC 3264 6.1, and plain RTP is all an `off` leg does).
//! - An `RTP/AVP` offer with `a=crypto` (best-effort SRTP, as FreeSWITCH and
//!   Asterisk send) is answered `RTP/AVP` with handoff's crypto on an
//!   `optional` or `required` leg (the media is SRTP either way), plain on `off`.
//! - A plain offer on a `required` leg gets 488.
//! - `RTP/SAVPF` and DTLS-SRTP (`UDP/TLS/RTP/SAVP[F]`) are refused with 488:
//!   handoff keys SRTP by SDES only.
//! - handoff's own offers: `required` offers `RTP/SAVP` with one line per suite
//!   (80 first); `optional` offers `RTP/AVP` with the same lines (best effort:
//!   no 488 round trip with peers that do not do SRTP); `off` offers plain RTP.
//!   A re-offer on a leg whose keys are agreed offers that key again, alone.
//! - An answer must pick one of the offered tags with its suite; a plain answer
//!   to a `required` offer is refused (the caller of this module fails the leg).

use crate::config::srtp::SrtpPolicy;
use crate::media::sdp::crypto::{Crypto, CryptoError, CryptoLine};
use crate::media::srtp::{LegSrtp, SrtpKey, SrtpSuite};

/// The suites handoff offers, in preference order.
const OFFERED_SUITES: [SrtpSuite; 2] = [
    SrtpSuite::AesCm128HmacSha1_80,
    SrtpSuite::AesCm128HmacSha1_32,
];

/// Why an SDP is refused for SRTP reasons; always answered 488.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SrtpRefusal {
    #[error("plain RTP offered or answered where SRTP is required")]
    SrtpRequired,
    #[error("RTP/SAVP offered on a leg whose srtp is off")]
    SrtpOff,
    #[error("RTP/SAVP without an a=crypto line handoff can use")]
    NoUsableCrypto,
    #[error("media profile {0} is not supported (SDES on RTP/SAVP or RTP/AVP only)")]
    UnsupportedProfile(String),
    #[error("the answer's a=crypto matches no offered tag and suite")]
    AnswerMismatch,
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

impl SrtpRefusal {
    /// RFC 3261 20.43 warning code: 302 for a profile we do not take, 305
    /// (incompatible media format) for the rest.
    pub fn warning_code(&self) -> u16 {
        match self {
            SrtpRefusal::SrtpOff | SrtpRefusal::UnsupportedProfile(_) => 302,
            _ => 305,
        }
    }

    /// Header-safe words for the Warning.
    pub fn reason(&self) -> &'static str {
        match self {
            SrtpRefusal::SrtpRequired => "SRTP required",
            SrtpRefusal::SrtpOff => "SRTP not enabled",
            SrtpRefusal::NoUsableCrypto => "No supported SRTP crypto suite",
            SrtpRefusal::UnsupportedProfile(_) => "Only SDES SRTP (RTP/SAVP) is supported",
            SrtpRefusal::AnswerMismatch => "SRTP crypto answer does not match the offer",
            SrtpRefusal::Crypto(e) => e.reason(),
        }
    }
}

/// The RTP profile of an m= line, as far as SRTP is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Profile {
    /// `RTP/AVP`, `RTP/AVPF`.
    Plain,
    /// `RTP/SAVP`.
    Savp,
}

fn profile(proto: &str) -> Result<Profile, SrtpRefusal> {
    let p = proto.to_ascii_uppercase();
    match p.as_str() {
        "RTP/AVP" | "RTP/AVPF" => Ok(Profile::Plain),
        "RTP/SAVP" => Ok(Profile::Savp),
        _ if p.contains("SAVP") || p.contains("TLS") => Err(SrtpRefusal::UnsupportedProfile(
            proto.chars().take(32).collect(),
        )),
        // Anything else is not RTP; the SDP layer decides about it.
        _ => Ok(Profile::Plain),
    }
}

/// What one SDP on a leg says to handoff, to be written as `proto` and `lines`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Media {
    pub proto: String,
    pub lines: Vec<Crypto>,
}

/// One leg's SDES state for the dialog.
#[derive(Debug, Clone)]
pub struct LegCrypto {
    policy: SrtpPolicy,
    /// handoff's key for this leg and its tag, once agreed: kept for the dialog.
    ours: Option<Crypto>,
    /// The peer's last offer: its profile and the line chosen from it.
    their_offer: Option<(String, Option<Crypto>)>,
    /// handoff's last offer on this leg, until a new one.
    our_offer: Option<Vec<Crypto>>,
    /// The keys the relay has for this leg.
    active: Option<LegSrtp>,
    /// The leg's agreed profile is `RTP/SAVP`: an `optional` re-offer keeps it
    /// (a peer that offered SAVP may take nothing else).
    savp: bool,
}

/// What the relay must be told after an answer: the leg's keys changed to this.
pub type KeyChange = Option<Option<LegSrtp>>;

impl LegCrypto {
    pub fn new(policy: SrtpPolicy) -> LegCrypto {
        LegCrypto {
            policy,
            ours: None,
            their_offer: None,
            our_offer: None,
            active: None,
            savp: false,
        }
    }

    pub fn policy(&self) -> SrtpPolicy {
        self.policy
    }

    /// True while handoff's own offer on this leg waits for (or has had) its answer:
    /// SDP from the peer in a response is then an answer, not a late offer.
    pub fn has_offered(&self) -> bool {
        self.our_offer.is_some()
    }

    /// The keys the relay holds for this leg.
    pub fn active(&self) -> Option<&LegSrtp> {
        self.active.as_ref()
    }

    /// The peer offers `proto` with `lines` (its m= line's crypto, read).
    pub fn receive_offer(&mut self, proto: &str, lines: &[CryptoLine]) -> Result<(), SrtpRefusal> {
        let usable = lines.iter().find_map(|l| match l {
            CryptoLine::Usable(c) => Some(c.clone()),
            CryptoLine::Skipped { .. } => None,
        });
        let chosen = match (profile(proto)?, self.policy, usable) {
            (Profile::Savp, SrtpPolicy::Off, _) => return Err(SrtpRefusal::SrtpOff),
            (Profile::Savp, _, None) => return Err(SrtpRefusal::NoUsableCrypto),
            (Profile::Plain, SrtpPolicy::Required, None) => return Err(SrtpRefusal::SrtpRequired),
            (_, SrtpPolicy::Off, _) => None,
            (_, _, chosen) => chosen,
        };
        self.their_offer = Some((proto.to_owned(), chosen));
        Ok(())
    }

    /// handoff's answer to the peer's last offer, and the relay's new keys for
    /// the leg if they change. Without an offer (a caller bug) the answer is plain.
    pub fn make_answer(&mut self) -> (Media, KeyChange) {
        let Some((proto, chosen)) = self.their_offer.clone() else {
            return (self.plain("RTP/AVP"), self.change(None));
        };
        let Some(peer) = chosen else {
            return (self.plain(&proto), self.change(None));
        };
        let key = match &self.ours {
            Some(o) if o.suite() == peer.suite() => o.key.clone(),
            _ => SrtpKey::generate(peer.suite()),
        };
        let ours = Crypto { tag: peer.tag, key };
        self.ours = Some(ours.clone());
        self.savp = profile(&proto) == Ok(Profile::Savp);
        let keys = LegSrtp {
            receive: peer.key,
            send: ours.key.clone(),
        };
        let media = Media {
            proto,
            lines: vec![ours],
        };
        (media, self.change(Some(keys)))
    }

    /// handoff's offer on this leg; `source_proto` is the profile of the SDP it
    /// is made from (the other leg's).
    pub fn make_offer(&mut self, source_proto: &str) -> Media {
        let plain = match profile(source_proto) {
            Ok(Profile::Plain) => source_proto.to_owned(),
            _ => "RTP/AVP".to_owned(),
        };
        let lines = match (&self.policy, &self.ours) {
            (SrtpPolicy::Off, _) => Vec::new(),
            (_, Some(ours)) => vec![ours.clone()],
            _ => OFFERED_SUITES
                .iter()
                .zip(1..)
                .map(|(suite, tag)| Crypto {
                    tag,
                    key: SrtpKey::generate(*suite),
                })
                .collect(),
        };
        self.our_offer = Some(lines.clone());
        let proto = match self.policy {
            SrtpPolicy::Required => "RTP/SAVP".to_owned(),
            SrtpPolicy::Optional if self.savp && self.ours.is_some() => "RTP/SAVP".to_owned(),
            _ => plain,
        };
        Media { proto, lines }
    }

    /// The peer answers handoff's last offer with `proto` and `lines`: the
    /// relay's new keys for the leg if they change, or why the answer is refused.
    pub fn receive_answer(
        &mut self,
        proto: &str,
        lines: &[CryptoLine],
    ) -> Result<KeyChange, SrtpRefusal> {
        let offered = self.our_offer.clone().unwrap_or_default();
        let profile = profile(proto)?;
        let usable: Vec<&Crypto> = lines
            .iter()
            .filter_map(|l| match l {
                CryptoLine::Usable(c) => Some(c),
                CryptoLine::Skipped { .. } => None,
            })
            .collect();
        if offered.is_empty() {
            // We offered plain: SAVP back is a profile we did not offer.
            return match profile {
                Profile::Savp => Err(SrtpRefusal::SrtpOff),
                Profile::Plain => Ok(self.change(None)),
            };
        }
        let Some(peer) = usable.first() else {
            if profile == Profile::Savp || !lines.is_empty() {
                return Err(SrtpRefusal::AnswerMismatch);
            }
            if self.policy == SrtpPolicy::Required {
                return Err(SrtpRefusal::SrtpRequired);
            }
            return Ok(self.change(None));
        };
        // RFC 4568 5.1.2: one line, an offered tag, the suite offered under it.
        let ours = offered
            .iter()
            .find(|o| o.tag == peer.tag && o.suite() == peer.suite())
            .filter(|_| usable.len() == 1 && lines.len() == 1)
            .ok_or(SrtpRefusal::AnswerMismatch)?
            .clone();
        let keys = LegSrtp {
            receive: peer.key.clone(),
            send: ours.key.clone(),
        };
        self.ours = Some(ours);
        self.savp = profile == Profile::Savp;
        Ok(self.change(Some(keys)))
    }

    fn plain(&self, proto: &str) -> Media {
        Media {
            proto: proto.to_owned(),
            lines: Vec::new(),
        }
    }

    fn change(&mut self, keys: Option<LegSrtp>) -> KeyChange {
        if self.active == keys {
            return None;
        }
        self.active = keys.clone();
        Some(keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::sdp::crypto::Skip;

    fn line(tag: u32, suite: SrtpSuite) -> CryptoLine {
        CryptoLine::Usable(Crypto {
            tag,
            key: SrtpKey::generate(suite),
        })
    }

    const S80: SrtpSuite = SrtpSuite::AesCm128HmacSha1_80;
    const S32: SrtpSuite = SrtpSuite::AesCm128HmacSha1_32;

    fn leg(p: SrtpPolicy) -> LegCrypto {
        LegCrypto::new(p)
    }

    #[test]
    fn a_savp_offer_is_answered_with_our_own_key_under_the_same_tag() {
        for policy in [SrtpPolicy::Optional, SrtpPolicy::Required] {
            let mut l = leg(policy);
            let offer = [
                CryptoLine::Skipped {
                    tag: 1,
                    why: Skip::UnknownSuite,
                },
                line(2, S32),
                line(3, S80),
            ];
            l.receive_offer("RTP/SAVP", &offer).expect("taken");
            let (media, change) = l.make_answer();
            assert_eq!(media.proto, "RTP/SAVP");
            assert_eq!(media.lines.len(), 1);
            assert_eq!(media.lines[0].tag, 2);
            assert_eq!(media.lines[0].suite(), S32);
            let keys = change.flatten().expect("keys for the relay");
            let CryptoLine::Usable(theirs) = &offer[1] else {
                unreachable!()
            };
            assert_eq!(keys.receive, theirs.key);
            assert_eq!(keys.send, media.lines[0].key);
            assert_ne!(keys.send.key_and_salt(), keys.receive.key_and_salt());
        }
    }

    #[test]
    fn a_savp_offer_on_an_off_leg_and_one_without_usable_crypto_are_refused() {
        let mut off = leg(SrtpPolicy::Off);
        assert_eq!(
            off.receive_offer("RTP/SAVP", &[line(1, S80)]),
            Err(SrtpRefusal::SrtpOff)
        );
        let mut opt = leg(SrtpPolicy::Optional);
        let mki = [CryptoLine::Skipped {
            tag: 1,
            why: Skip::Mki,
        }];
        assert_eq!(
            opt.receive_offer("RTP/SAVP", &mki),
            Err(SrtpRefusal::NoUsableCrypto)
        );
        assert_eq!(SrtpRefusal::SrtpOff.warning_code(), 302);
    }

    #[test]
    fn a_plain_offer_on_a_required_leg_is_refused_and_taken_elsewhere() {
        let mut req = leg(SrtpPolicy::Required);
        let e = req.receive_offer("RTP/AVP", &[]).expect_err("488");
        assert_eq!(e, SrtpRefusal::SrtpRequired);
        assert_eq!(e.warning_code(), 305);
        assert_eq!(e.reason(), "SRTP required");
        for policy in [SrtpPolicy::Off, SrtpPolicy::Optional] {
            let mut l = leg(policy);
            l.receive_offer("RTP/AVP", &[]).expect("plain is fine");
            let (media, change) = l.make_answer();
            assert_eq!(media.proto, "RTP/AVP");
            assert!(media.lines.is_empty());
            assert_eq!(change, None, "no keys before, none now");
        }
    }

    #[test]
    fn best_effort_crypto_on_avp_is_answered_with_crypto_unless_off() {
        let mut opt = leg(SrtpPolicy::Optional);
        opt.receive_offer("RTP/AVP", &[line(5, S80)]).expect("ok");
        let (media, change) = opt.make_answer();
        assert_eq!((media.proto.as_str(), media.lines.len()), ("RTP/AVP", 1));
        assert!(change.flatten().is_some());
        let mut off = leg(SrtpPolicy::Off);
        off.receive_offer("RTP/AVP", &[line(5, S80)]).expect("ok");
        let (media, _) = off.make_answer();
        assert!(media.lines.is_empty());
    }

    #[test]
    fn savpf_and_dtls_profiles_are_refused() {
        for proto in ["RTP/SAVPF", "UDP/TLS/RTP/SAVP", "UDP/TLS/RTP/SAVPF"] {
            let e = leg(SrtpPolicy::Optional)
                .receive_offer(proto, &[line(1, S80)])
                .expect_err(proto);
            assert!(matches!(e, SrtpRefusal::UnsupportedProfile(_)), "{proto}");
        }
    }

    #[test]
    fn our_offers_follow_the_policy_with_80_first() {
        let m = leg(SrtpPolicy::Required).make_offer("RTP/AVP");
        assert_eq!(m.proto, "RTP/SAVP");
        let suites: Vec<_> = m.lines.iter().map(|c| (c.tag, c.suite())).collect();
        assert_eq!(suites, vec![(1, S80), (2, S32)]);
        assert_ne!(m.lines[0].key.key_and_salt(), m.lines[1].key.key_and_salt());
        let m = leg(SrtpPolicy::Optional).make_offer("RTP/SAVP");
        assert_eq!((m.proto.as_str(), m.lines.len()), ("RTP/AVP", 2));
        let m = leg(SrtpPolicy::Off).make_offer("RTP/SAVP");
        assert_eq!((m.proto.as_str(), m.lines.len()), ("RTP/AVP", 0));
    }

    #[test]
    fn an_answer_picks_an_offered_tag_and_the_keys_are_kept_for_re_offers() {
        let mut l = leg(SrtpPolicy::Required);
        let offer = l.make_offer("RTP/AVP");
        let answer = line(2, S32);
        let keys = l
            .receive_answer("RTP/SAVP", std::slice::from_ref(&answer))
            .expect("valid")
            .flatten()
            .expect("keys");
        assert_eq!(keys.send, offer.lines[1].key);
        // A re-offer on the dialog: the agreed key again, alone.
        let again = l.make_offer("RTP/AVP");
        assert_eq!(again.lines, vec![offer.lines[1].clone()]);
        // The same answer again changes nothing for the relay.
        assert_eq!(l.receive_answer("RTP/SAVP", &[answer]), Ok(None));
    }

    #[test]
    fn a_plain_answer_to_a_required_offer_is_refused_not_to_an_optional_one() {
        let mut req = leg(SrtpPolicy::Required);
        req.make_offer("RTP/AVP");
        assert_eq!(
            req.receive_answer("RTP/AVP", &[]),
            Err(SrtpRefusal::SrtpRequired)
        );
        let mut opt = leg(SrtpPolicy::Optional);
        opt.make_offer("RTP/AVP");
        assert_eq!(opt.receive_answer("RTP/AVP", &[]), Ok(None));
    }

    #[test]
    fn an_answer_with_a_tag_or_suite_we_did_not_offer_is_refused() {
        for answer in [line(3, S80), line(1, S32)] {
            let mut l = leg(SrtpPolicy::Optional);
            l.make_offer("RTP/AVP");
            assert_eq!(
                l.receive_answer("RTP/AVP", &[answer]),
                Err(SrtpRefusal::AnswerMismatch)
            );
        }
        let mut l = leg(SrtpPolicy::Required);
        l.make_offer("RTP/AVP");
        assert_eq!(
            l.receive_answer("RTP/SAVP", &[line(1, S80), line(2, S32)]),
            Err(SrtpRefusal::AnswerMismatch)
        );
        let mut off = leg(SrtpPolicy::Off);
        off.make_offer("RTP/AVP");
        assert_eq!(
            off.receive_answer("RTP/SAVP", &[line(1, S80)]),
            Err(SrtpRefusal::SrtpOff)
        );
    }

    #[test]
    fn an_optional_re_offer_keeps_the_savp_profile_the_peer_chose() {
        let mut l = leg(SrtpPolicy::Optional);
        l.receive_offer("RTP/SAVP", &[line(1, S80)]).expect("ok");
        let (answer, _) = l.make_answer();
        let again = l.make_offer("RTP/AVP");
        assert_eq!(again.proto, "RTP/SAVP");
        assert_eq!(again.lines, answer.lines);
        // Best-effort SRTP on AVP stays AVP.
        let mut l = leg(SrtpPolicy::Optional);
        l.receive_offer("RTP/AVP", &[line(1, S80)]).expect("ok");
        l.make_answer();
        assert_eq!(l.make_offer("RTP/AVP").proto, "RTP/AVP");
    }

    #[test]
    fn a_re_invite_with_a_new_peer_key_changes_the_relay_keys_but_not_ours() {
        let mut l = leg(SrtpPolicy::Optional);
        l.receive_offer("RTP/SAVP", &[line(1, S80)]).expect("ok");
        let (first, c1) = l.make_answer();
        let k1 = c1.flatten().expect("keys");
        l.receive_offer("RTP/SAVP", &[line(1, S80)]).expect("ok");
        let (second, c2) = l.make_answer();
        let k2 = c2.flatten().expect("new keys");
        assert_ne!(k1.receive, k2.receive);
        assert_eq!(first.lines[0].key, second.lines[0].key, "our key is kept");
    }
}
