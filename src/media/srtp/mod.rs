//! SRTP (RFC 3711) on one leg of the relay, keyed by SDES (RFC 4568).
//!
//! This module is the seam between signalling and media: the call actor
//! learns keys from SDP (`a=crypto`, `media::sdp`) and hands them to the
//! relay per leg (`RelayLeg::srtp`, `MediaRelay::set_srtp`); the relay
//! decrypts what a leg sends and encrypts what it sends to that leg. Keys
//! are never printed: `Debug` shows the suite only.

mod context;
mod index;
mod kdf;

use std::fmt;

use rand::RngCore;

pub use context::{SrtpContext, SrtpError, MAX_OVERHEAD, MAX_SSRCS};
pub use index::REPLAY_WINDOW;

/// Master key length of the AES_CM_128 suites (RFC 4568 6.2.1).
pub const MASTER_KEY_LEN: usize = 16;
/// Master salt length of the AES_CM_128 suites.
pub const MASTER_SALT_LEN: usize = 14;

/// The SDES crypto suites handoff speaks (the ones Twilio's Secure Media and
/// carriers offer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SrtpSuite {
    /// `AES_CM_128_HMAC_SHA1_80`: 80-bit authentication tag.
    AesCm128HmacSha1_80,
    /// `AES_CM_128_HMAC_SHA1_32`: 32-bit tag on RTP (RTCP keeps 80 bits).
    AesCm128HmacSha1_32,
}

impl SrtpSuite {
    /// The suite's name in `a=crypto` (RFC 4568 6.2).
    pub fn sdes_name(self) -> &'static str {
        match self {
            SrtpSuite::AesCm128HmacSha1_80 => "AES_CM_128_HMAC_SHA1_80",
            SrtpSuite::AesCm128HmacSha1_32 => "AES_CM_128_HMAC_SHA1_32",
        }
    }

    /// A suite name from `a=crypto`; names are case-sensitive in RFC 4568
    /// but peers are not all careful, so case is ignored.
    pub fn from_sdes_name(name: &str) -> Option<SrtpSuite> {
        [
            SrtpSuite::AesCm128HmacSha1_80,
            SrtpSuite::AesCm128HmacSha1_32,
        ]
        .into_iter()
        .find(|suite| suite.sdes_name().eq_ignore_ascii_case(name))
    }

    /// Bytes of authentication tag on an SRTP (not SRTCP) packet.
    pub fn rtp_tag_len(self) -> usize {
        match self {
            SrtpSuite::AesCm128HmacSha1_80 => 10,
            SrtpSuite::AesCm128HmacSha1_32 => 4,
        }
    }
}

/// One SDES master key and salt with its suite. `Debug` never shows the key.
#[derive(Clone, PartialEq, Eq)]
pub struct SrtpKey {
    suite: SrtpSuite,
    key: [u8; MASTER_KEY_LEN],
    salt: [u8; MASTER_SALT_LEN],
}

impl SrtpKey {
    pub fn new(
        suite: SrtpSuite,
        key: [u8; MASTER_KEY_LEN],
        salt: [u8; MASTER_SALT_LEN],
    ) -> SrtpKey {
        SrtpKey { suite, key, salt }
    }

    /// A fresh random key and salt from the operating system's generator.
    pub fn generate(suite: SrtpSuite) -> SrtpKey {
        let mut key = [0u8; MASTER_KEY_LEN];
        let mut salt = [0u8; MASTER_SALT_LEN];
        rand::rngs::OsRng.fill_bytes(&mut key);
        rand::rngs::OsRng.fill_bytes(&mut salt);
        SrtpKey { suite, key, salt }
    }

    pub fn suite(&self) -> SrtpSuite {
        self.suite
    }

    pub fn master_key(&self) -> &[u8; MASTER_KEY_LEN] {
        &self.key
    }

    pub fn master_salt(&self) -> &[u8; MASTER_SALT_LEN] {
        &self.salt
    }

    /// Key then salt, as the `inline:` key parameter carries them (before base64).
    pub fn key_and_salt(&self) -> [u8; MASTER_KEY_LEN + MASTER_SALT_LEN] {
        let mut out = [0u8; MASTER_KEY_LEN + MASTER_SALT_LEN];
        out[..MASTER_KEY_LEN].copy_from_slice(&self.key);
        out[MASTER_KEY_LEN..].copy_from_slice(&self.salt);
        out
    }
}

impl fmt::Debug for SrtpKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SrtpKey({}, ..)", self.suite.sdes_name())
    }
}

/// SRTP on one relay leg: the two keys of its SDES exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegSrtp {
    /// The peer's key (its `a=crypto`): decrypts and authenticates what
    /// arrives from this leg.
    pub receive: SrtpKey,
    /// handoff's key for this leg (the `a=crypto` handoff sent it):
    /// encrypts what the relay sends to this leg.
    pub send: SrtpKey,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_key() {
        let key = SrtpKey::new(SrtpSuite::AesCm128HmacSha1_80, [0xAB; 16], [0xCD; 14]);
        let shown = format!(
            "{key:?} {:?}",
            LegSrtp {
                receive: key.clone(),
                send: key.clone()
            }
        );
        assert!(!shown.to_lowercase().contains("ab"), "{shown}");
        assert!(!shown.contains("171"), "{shown}");
        assert!(shown.contains("AES_CM_128_HMAC_SHA1_80"));
    }

    #[test]
    fn suite_names_round_trip_and_unknown_is_none() {
        for suite in [
            SrtpSuite::AesCm128HmacSha1_80,
            SrtpSuite::AesCm128HmacSha1_32,
        ] {
            assert_eq!(SrtpSuite::from_sdes_name(suite.sdes_name()), Some(suite));
        }
        assert_eq!(
            SrtpSuite::from_sdes_name("aes_cm_128_hmac_sha1_32"),
            Some(SrtpSuite::AesCm128HmacSha1_32)
        );
        assert_eq!(SrtpSuite::from_sdes_name("AES_256_CM_HMAC_SHA1_80"), None);
    }

    #[test]
    fn generated_keys_differ_and_carry_key_then_salt() {
        let a = SrtpKey::generate(SrtpSuite::AesCm128HmacSha1_80);
        let b = SrtpKey::generate(SrtpSuite::AesCm128HmacSha1_80);
        assert_ne!(a.key_and_salt(), b.key_and_salt());
        assert_eq!(&a.key_and_salt()[..16], a.master_key());
        assert_eq!(&a.key_and_salt()[16..], a.master_salt());
    }
}
