//! SRTP on one relay leg (issue 14): the leg's two contexts, one to open
//! what its peer sends (the peer's key), one to seal what the relay sends
//! it (handoff's key), and how each failure is counted. In place on the
//! relay's batch buffers; nothing allocated per packet.

use super::stats::SrtpStats;
use crate::media::srtp::{LegSrtp, SrtpContext, SrtpError};

/// Which of the two protocols a datagram is (RTCP may come muxed on the
/// RTP port, RFC 5761).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    Rtp,
    Rtcp,
}

#[derive(Debug)]
pub(crate) struct LegCrypto {
    receive: SrtpContext,
    send: SrtpContext,
}

impl LegCrypto {
    /// New contexts (session keys derived, no SSRC state) for `keys`.
    pub(crate) fn new(keys: &LegSrtp) -> LegCrypto {
        LegCrypto {
            receive: SrtpContext::new(&keys.receive),
            send: SrtpContext::new(&keys.send),
        }
    }

    /// Authenticate and decrypt, in place, a packet this leg's peer sent:
    /// the plain packet's length, or `None` with the cause counted. Nothing
    /// of the context moves for a packet that fails.
    pub(crate) fn open(
        &mut self,
        protocol: Protocol,
        packet: &mut [u8],
        stats: &mut SrtpStats,
    ) -> Option<usize> {
        let opened = match protocol {
            Protocol::Rtp => self.receive.unprotect_rtp(packet),
            Protocol::Rtcp => self.receive.unprotect_rtcp(packet),
        };
        opened.map_err(|e| count(e, stats)).ok()
    }

    /// Encrypt and authenticate, in place, the plain packet in `buf[..len]`
    /// for this leg's peer: the SRTP packet's length, or `None`, counted.
    pub(crate) fn seal(
        &mut self,
        protocol: Protocol,
        buf: &mut [u8],
        len: usize,
        stats: &mut SrtpStats,
    ) -> Option<usize> {
        let sealed = match protocol {
            Protocol::Rtp => self.send.protect_rtp(buf, len),
            Protocol::Rtcp => self.send.protect_rtcp(buf, len),
        };
        sealed.map_err(|e| count(e, stats)).ok()
    }
}

fn count(e: SrtpError, stats: &mut SrtpStats) {
    match e {
        // Too short to hold a tag is as unauthenticated as a wrong one.
        SrtpError::AuthFailed | SrtpError::Malformed => stats.auth_failures += 1,
        SrtpError::Replayed => stats.replays += 1,
        SrtpError::TooManySsrcs => stats.ssrc_overflows += 1,
        SrtpError::NoRoom | SrtpError::IndexExhausted => stats.protect_failures += 1,
    }
    tracing::trace!(error = %e, "SRTP packet dropped");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::srtp::{SrtpKey, SrtpSuite};

    fn keys() -> LegSrtp {
        LegSrtp {
            receive: SrtpKey::generate(SrtpSuite::AesCm128HmacSha1_80),
            send: SrtpKey::generate(SrtpSuite::AesCm128HmacSha1_32),
        }
    }

    #[test]
    fn each_failure_is_counted_by_cause() {
        let keys = keys();
        let mut leg = LegCrypto::new(&keys);
        let mut peer = SrtpContext::new(&keys.receive);
        let mut stats = SrtpStats::default();
        let mut buf = [0u8; 64];
        buf[..12].copy_from_slice(&[0x80, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 5]);
        let n = peer.protect_rtp(&mut buf, 30).expect("protect");
        let sealed = buf;
        assert_eq!(leg.open(Protocol::Rtp, &mut buf[..n], &mut stats), Some(30));
        let mut again = sealed;
        assert_eq!(leg.open(Protocol::Rtp, &mut again[..n], &mut stats), None);
        // A tampered copy of a packet not seen yet (one seen is a replay
        // before its tag is even checked).
        let mut forged = [0u8; 64];
        forged[..12].copy_from_slice(&[0x80, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 5]);
        assert_eq!(peer.protect_rtp(&mut forged, 30), Ok(n));
        forged[20] ^= 1;
        assert_eq!(leg.open(Protocol::Rtp, &mut forged[..n], &mut stats), None);
        assert_eq!(leg.open(Protocol::Rtcp, &mut [0x80; 4], &mut stats), None);
        let mut full = [0u8; 30];
        full[0] = 0x80;
        assert_eq!(leg.seal(Protocol::Rtp, &mut full, 30, &mut stats), None);
        // SSRCs 5 and 100..: the ninth authentic SSRC is one too many.
        for ssrc in 100..100 + crate::media::srtp::MAX_SSRCS as u8 {
            let mut p = [0u8; 64];
            p[..12].copy_from_slice(&[0x80, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, ssrc]);
            let mut peer = SrtpContext::new(&keys.receive);
            let n = peer.protect_rtp(&mut p, 30).expect("protect");
            let opened = leg.open(Protocol::Rtp, &mut p[..n], &mut stats);
            assert_eq!(opened.is_some(), ssrc < 107, "SSRC {ssrc}");
        }
        assert_eq!(
            stats,
            SrtpStats {
                auth_failures: 2,
                replays: 1,
                ssrc_overflows: 1,
                protect_failures: 1,
            }
        );
    }
}
