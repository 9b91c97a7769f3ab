//! One SRTP cryptographic context (RFC 3711 3.2): the session keys one
//! master key derives, for SRTP and SRTCP, and the per-SSRC state of one
//! direction. Protect and unprotect work in place on the caller's buffer
//! and allocate nothing: the relay runs them on its batch buffers.

use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use subtle::ConstantTimeEq;

use super::index::{estimate, Refusal, ReplayWindow};
use super::kdf::{
    derive, Label, SessionCipher, SESSION_AUTH_LEN, SESSION_KEY_LEN, SESSION_SALT_LEN,
};
use super::{SrtpKey, SrtpSuite};

/// SSRCs one context keeps state for (per direction, RTP and RTCP each);
/// a packet of one more is dropped and counted, so a peer cannot grow it.
pub const MAX_SSRCS: usize = 8;
/// The SRTCP tag is 80 bits in both suites (RFC 3711 5.2, RFC 4568 6.2).
pub const SRTCP_TAG_LEN: usize = 10;
/// E flag and 31-bit SRTCP index (RFC 3711 3.4).
pub const SRTCP_INDEX_LEN: usize = 4;
/// The most bytes protecting a packet adds (an SRTCP trailer).
pub const MAX_OVERHEAD: usize = SRTCP_TAG_LEN + SRTCP_INDEX_LEN;

const RTP_HEADER_LEN: usize = 12;
const RTCP_HEADER_LEN: usize = 8;
const SRTCP_INDEX_MAX: u32 = 0x7fff_ffff;

/// Why a packet was not protected or unprotected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SrtpError {
    #[error("not an SRTP/SRTCP packet (too short or bad header)")]
    Malformed,
    #[error("authentication failed")]
    AuthFailed,
    #[error("replayed or too old")]
    Replayed,
    #[error("more SSRCs than a context keeps")]
    TooManySsrcs,
    #[error("no room in the buffer for the authentication tag")]
    NoRoom,
    #[error("SRTCP index exhausted: the key must change")]
    IndexExhausted,
}

type HmacSha1 = Hmac<Sha1>;

/// The session keys of one of SRTP or SRTCP, their schedules made once.
#[derive(Clone)]
struct SessionKeys {
    cipher: SessionCipher,
    // Keyed once; cloned per packet (its inner and outer states, no allocation).
    mac: HmacSha1,
}

impl SessionKeys {
    fn derive(key: &SrtpKey, encryption: Label, auth: Label, salt: Label) -> SessionKeys {
        let (master_key, master_salt) = (key.master_key(), key.master_salt());
        let mut k_e = [0u8; SESSION_KEY_LEN];
        let mut k_a = [0u8; SESSION_AUTH_LEN];
        let mut k_s = [0u8; SESSION_SALT_LEN];
        derive(master_key, master_salt, encryption, &mut k_e);
        derive(master_key, master_salt, auth, &mut k_a);
        derive(master_key, master_salt, salt, &mut k_s);
        // RFC 2104: a key shorter than the block is zero-padded to it, so
        // the padded block keys the same HMAC, through the infallible `new`.
        let mut block = [0u8; 64];
        block[..SESSION_AUTH_LEN].copy_from_slice(&k_a);
        let keys = SessionKeys {
            cipher: SessionCipher::new(&k_e, k_s),
            mac: <HmacSha1 as KeyInit>::new(&block.into()),
        };
        k_e.fill(0);
        k_a.fill(0);
        block.fill(0);
        keys
    }

    // HMAC-SHA1 over `parts`, full 20 bytes (RFC 3711 4.2.1).
    fn tag(&self, parts: [&[u8]; 2]) -> [u8; 20] {
        let mut mac = self.mac.clone();
        for part in parts {
            mac.update(part);
        }
        mac.finalize().into_bytes().into()
    }
}

/// Per-SSRC state: the highest index and the replay window behind it.
#[derive(Debug, Clone, Copy)]
struct Stream {
    ssrc: u32,
    window: ReplayWindow,
}

// At most MAX_SSRCS entries, found by a scan (calls have one or two).
#[derive(Debug, Clone)]
struct Streams(Vec<Stream>);

impl Streams {
    fn new() -> Streams {
        Streams(Vec::with_capacity(MAX_SSRCS))
    }

    fn find(&self, ssrc: u32) -> Option<usize> {
        self.0.iter().position(|s| s.ssrc == ssrc)
    }

    fn full(&self) -> bool {
        self.0.len() >= MAX_SSRCS
    }

    // Within the capacity reserved at creation: never allocates.
    fn insert(&mut self, ssrc: u32, index: u64) {
        if !self.full() {
            self.0.push(Stream {
                ssrc,
                window: ReplayWindow::new(index),
            });
        }
    }
}

/// One direction of SRTP and SRTCP under one master key: the relay keeps
/// one to unprotect what a leg sends and one to protect what it sends the
/// leg. `Debug` shows no key.
#[derive(Clone)]
pub struct SrtpContext {
    suite: SrtpSuite,
    rtp: SessionKeys,
    rtcp: SessionKeys,
    rtp_streams: Streams,
    rtcp_streams: Streams,
    // The next SRTCP index this context sends (RFC 3711 3.4).
    srtcp_index: u32,
}

impl std::fmt::Debug for SrtpContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SrtpContext")
            .field("suite", &self.suite)
            .field("rtp_ssrcs", &self.rtp_streams.0.len())
            .field("rtcp_ssrcs", &self.rtcp_streams.0.len())
            .finish_non_exhaustive()
    }
}

impl SrtpContext {
    /// Derive the session keys of `key` (key derivation rate 0).
    pub fn new(key: &SrtpKey) -> SrtpContext {
        SrtpContext {
            suite: key.suite(),
            rtp: SessionKeys::derive(key, Label::RtpEncryption, Label::RtpAuth, Label::RtpSalt),
            rtcp: SessionKeys::derive(key, Label::RtcpEncryption, Label::RtcpAuth, Label::RtcpSalt),
            rtp_streams: Streams::new(),
            rtcp_streams: Streams::new(),
            srtcp_index: 0,
        }
    }

    pub fn suite(&self) -> SrtpSuite {
        self.suite
    }

    /// Authenticate and decrypt the SRTP packet `packet` in place; returns
    /// the length of the RTP packet now at its start. Nothing in the
    /// context changes unless the packet authenticates (RFC 3711 3.3).
    pub fn unprotect_rtp(&mut self, packet: &mut [u8]) -> Result<usize, SrtpError> {
        let tag_len = self.suite.rtp_tag_len();
        let body_len = packet
            .len()
            .checked_sub(tag_len)
            .ok_or(SrtpError::Malformed)?;
        let header_len = rtp_header_len(&packet[..body_len])?;
        let (seq, ssrc) = rtp_seq_ssrc(packet);
        let slot = self.rtp_streams.find(ssrc);
        let index = match slot {
            Some(i) => {
                let window = &self.rtp_streams.0[i].window;
                let index = estimate(window.highest(), seq).ok_or(SrtpError::Replayed)?;
                window.check(index).map_err(refused)?;
                index
            }
            None if self.rtp_streams.full() => return Err(SrtpError::TooManySsrcs),
            // A new SSRC starts at ROC 0 (RFC 3711 3.3.1).
            None => u64::from(seq),
        };
        let roc = ((index >> 16) as u32).to_be_bytes();
        let (body, tag) = packet.split_at_mut(body_len);
        let expected = self.rtp.tag([body, &roc]);
        if !bool::from(expected[..tag_len].ct_eq(tag)) {
            return Err(SrtpError::AuthFailed);
        }
        self.rtp.cipher.apply(ssrc, index, &mut body[header_len..]);
        match slot {
            Some(i) => self.rtp_streams.0[i].window.accept(index),
            None => self.rtp_streams.insert(ssrc, index),
        }
        Ok(body_len)
    }

    /// Encrypt and authenticate the RTP packet in `buf[..len]` in place,
    /// the tag written after it; returns the SRTP packet's length.
    pub fn protect_rtp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        let tag_len = self.suite.rtp_tag_len();
        let packet = buf.get(..len).ok_or(SrtpError::Malformed)?;
        let header_len = rtp_header_len(packet)?;
        if buf.len() < len + tag_len {
            return Err(SrtpError::NoRoom);
        }
        let (seq, ssrc) = rtp_seq_ssrc(packet);
        // The sender's index: the same estimate from the highest sent, so
        // packets the relay forwards out of order keep their ROC.
        let index = match self.rtp_streams.find(ssrc) {
            Some(i) => {
                let window = &mut self.rtp_streams.0[i].window;
                let index = estimate(window.highest(), seq).unwrap_or(u64::from(seq));
                window.accept(index);
                index
            }
            None if self.rtp_streams.full() => return Err(SrtpError::TooManySsrcs),
            None => {
                self.rtp_streams.insert(ssrc, u64::from(seq));
                u64::from(seq)
            }
        };
        let roc = ((index >> 16) as u32).to_be_bytes();
        let (body, rest) = buf.split_at_mut(len);
        self.rtp.cipher.apply(ssrc, index, &mut body[header_len..]);
        let tag = self.rtp.tag([body, &roc]);
        rest[..tag_len].copy_from_slice(&tag[..tag_len]);
        Ok(len + tag_len)
    }

    /// Authenticate and decrypt the SRTCP packet `packet` in place; returns
    /// the length of the RTCP compound packet now at its start.
    pub fn unprotect_rtcp(&mut self, packet: &mut [u8]) -> Result<usize, SrtpError> {
        let len = packet.len();
        if len < RTCP_HEADER_LEN + MAX_OVERHEAD || packet[0] >> 6 != 2 {
            return Err(SrtpError::Malformed);
        }
        let body_len = len - MAX_OVERHEAD;
        let ssrc = be32(&packet[4..8]);
        let e_index = be32(&packet[body_len..body_len + SRTCP_INDEX_LEN]);
        let encrypted = e_index >> 31 == 1;
        let index = u64::from(e_index & SRTCP_INDEX_MAX);
        let slot = self.rtcp_streams.find(ssrc);
        match slot {
            Some(i) => self.rtcp_streams.0[i]
                .window
                .check(index)
                .map_err(refused)?,
            None if self.rtcp_streams.full() => return Err(SrtpError::TooManySsrcs),
            None => {}
        }
        let (authenticated, tag) = packet.split_at_mut(len - SRTCP_TAG_LEN);
        let expected = self.rtcp.tag([authenticated, &[]]);
        if !bool::from(expected[..SRTCP_TAG_LEN].ct_eq(tag)) {
            return Err(SrtpError::AuthFailed);
        }
        if encrypted {
            self.rtcp
                .cipher
                .apply(ssrc, index, &mut authenticated[RTCP_HEADER_LEN..body_len]);
        }
        match slot {
            Some(i) => self.rtcp_streams.0[i].window.accept(index),
            None => self.rtcp_streams.insert(ssrc, index),
        }
        Ok(body_len)
    }

    /// Encrypt and authenticate the RTCP packet in `buf[..len]` in place,
    /// with E flag, index and tag after it; returns the SRTCP length.
    pub fn protect_rtcp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        if len < RTCP_HEADER_LEN || buf.len() < len {
            return Err(SrtpError::Malformed);
        }
        if buf.len() < len + MAX_OVERHEAD {
            return Err(SrtpError::NoRoom);
        }
        let index = self.srtcp_index;
        if index > SRTCP_INDEX_MAX {
            return Err(SrtpError::IndexExhausted);
        }
        self.srtcp_index += 1;
        let ssrc = be32(&buf[4..8]);
        self.rtcp
            .cipher
            .apply(ssrc, u64::from(index), &mut buf[RTCP_HEADER_LEN..len]);
        buf[len..len + SRTCP_INDEX_LEN].copy_from_slice(&(index | 0x8000_0000).to_be_bytes());
        let (authenticated, rest) = buf.split_at_mut(len + SRTCP_INDEX_LEN);
        let tag = self.rtcp.tag([authenticated, &[]]);
        rest[..SRTCP_TAG_LEN].copy_from_slice(&tag[..SRTCP_TAG_LEN]);
        Ok(len + MAX_OVERHEAD)
    }
}

fn refused(_: Refusal) -> SrtpError {
    SrtpError::Replayed
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn rtp_seq_ssrc(packet: &[u8]) -> (u16, u32) {
    (
        u16::from_be_bytes([packet[2], packet[3]]),
        be32(&packet[8..12]),
    )
}

/// The RTP header's length (RFC 3550 5.1, 5.3.1): fixed part, CSRCs and the
/// header extension, all of which SRTP leaves in the clear.
fn rtp_header_len(packet: &[u8]) -> Result<usize, SrtpError> {
    if packet.len() < RTP_HEADER_LEN || packet[0] >> 6 != 2 {
        return Err(SrtpError::Malformed);
    }
    let csrcs = usize::from(packet[0] & 0x0f);
    let mut len = RTP_HEADER_LEN + 4 * csrcs;
    if packet[0] & 0x10 != 0 {
        let ext = packet.get(len..len + 4).ok_or(SrtpError::Malformed)?;
        len += 4 + 4 * usize::from(u16::from_be_bytes([ext[2], ext[3]]));
    }
    if len > packet.len() {
        return Err(SrtpError::Malformed);
    }
    Ok(len)
}

#[cfg(test)]
mod tests;
