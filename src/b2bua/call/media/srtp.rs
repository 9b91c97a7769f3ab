//! A call's SDES SRTP: each SDP crossing the call has its peer's `a=crypto`
//! read against its leg's policy (`b2bua::srtp_policy`), and the copy for the
//! other leg carries handoff's own crypto for that leg; the keys agreed on a
//! leg go to the relay.

use super::{CallMedia, MediaError, Side};
use crate::b2bua::srtp_policy::{KeyChange, LegCrypto};
use crate::media::relay::Side as MediaSide;
use crate::media::sdp::crypto::{crypto_lines, with_crypto};
use crate::media::sdp::SessionDescription;
use crate::metrics::Metrics;
use crate::sip::message::{Message, Method};

/// Whether an SDP is an offer or an answer (RFC 3264).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Offer,
    Answer,
}

impl CallMedia {
    /// An SDP in a request is an offer, but in an ACK (the answer to a 2xx
    /// offer); in a response it answers handoff's offer on that leg, or is
    /// an offer when handoff sent none (a late offer in a 2xx).
    fn role(&self, from: Side, msg: &Message) -> Role {
        match msg.method() {
            Some(Method::Ack) => Role::Answer,
            Some(_) => Role::Offer,
            None if self.crypto[from as usize].has_offered() => Role::Answer,
            None => Role::Offer,
        }
    }

    /// `sdp` from leg `from` with the crypto it must carry to leg `to`: the
    /// peer's offer or answer checked, handoff's own answer or offer written.
    pub(super) fn crypto_for(
        &mut self,
        from: Side,
        to: Side,
        msg: &Message,
        sdp: &SessionDescription,
        stream: usize,
    ) -> Result<SessionDescription, MediaError> {
        let Some(m) = sdp.media().get(stream) else {
            return Err(MediaError::NoAudio);
        };
        let role = self.role(from, msg);
        let refused = |e| {
            Metrics::inc(&self.metrics.srtp_refused_total);
            MediaError::Srtp(e)
        };
        let lines = crypto_lines(m).map_err(|e| refused(e.into()))?;
        let proto = m.proto();
        let out = match role {
            Role::Offer => {
                self.crypto[from as usize]
                    .receive_offer(proto, &lines)
                    .map_err(refused)?;
                let offer = self.crypto[to as usize].make_offer(proto);
                with_crypto(sdp, stream, &offer.proto, &offer.lines)
            }
            Role::Answer => {
                let change = self.crypto[from as usize]
                    .receive_answer(proto, &lines)
                    .map_err(refused)?;
                self.give_keys(from, change);
                let (answer, change) = self.crypto[to as usize].make_answer();
                self.give_keys(to, change);
                with_crypto(sdp, stream, &answer.proto, &answer.lines)
            }
        };
        Ok(out)
    }

    /// handoff's offer for a new leg (a transfer target) made from the caller's SDP.
    pub(super) fn offer_crypto(
        &mut self,
        leg: Side,
        policy: crate::config::srtp::SrtpPolicy,
        sdp: &SessionDescription,
        stream: usize,
    ) -> SessionDescription {
        self.crypto[leg as usize] = LegCrypto::new(policy);
        let proto = sdp.media().get(stream).map_or("RTP/AVP", |m| m.proto());
        let offer = self.crypto[leg as usize].make_offer(proto);
        with_crypto(sdp, stream, &offer.proto, &offer.lines)
    }

    /// The new leg's answer: its keys, kept for the switch (`pending_keys`).
    pub(super) fn answer_crypto(
        &mut self,
        from: Side,
        answer: &SessionDescription,
        stream: usize,
    ) -> Result<(), MediaError> {
        let Some(m) = answer.media().get(stream) else {
            return Err(MediaError::NoAudio);
        };
        let refused = |e| {
            Metrics::inc(&self.metrics.srtp_refused_total);
            MediaError::Srtp(e)
        };
        let lines = crypto_lines(m).map_err(|e| refused(e.into()))?;
        let change = self.crypto[from as usize]
            .receive_answer(m.proto(), &lines)
            .map_err(refused)?;
        self.give_keys(from, change);
        Ok(())
    }

    /// The keys a leg has agreed, for a relay leg being built for it.
    pub(super) fn keys_of(&self, leg: Side) -> Option<crate::media::srtp::LegSrtp> {
        self.crypto[leg as usize].active().cloned()
    }

    /// A leg's keys changed: the relay learns them if the leg is on it (a
    /// pending leg gets them when it is switched in, `keys_of`).
    fn give_keys(&mut self, leg: Side, change: KeyChange) {
        let Some(keys) = change else { return };
        if keys.is_some() && leg != Side::Caller && leg != self.far {
            // A pending leg (transfer target): counted when its keys are agreed.
            Metrics::inc(&self.metrics.srtp_keys_agreed_total);
        }
        let side = if leg == Side::Caller {
            MediaSide::Caller
        } else if leg == self.far {
            MediaSide::Far
        } else {
            return;
        };
        if let Some(k) = &keys {
            Metrics::inc(&self.metrics.srtp_keys_agreed_total);
            tracing::debug!(leg = ?leg, suite = k.send.suite().sdes_name(), "SRTP keys agreed");
        }
        let _ = self.relay.set_srtp(side, keys);
    }
}
