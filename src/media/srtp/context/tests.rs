use super::*;
use crate::media::srtp::{SrtpKey, SrtpSuite};

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

// RFC 3711 B.3's master key and salt; libsrtp's `srtp_validate` uses the
// same key for its published known-answer packets below.
fn rfc_key(suite: SrtpSuite) -> SrtpKey {
    let key = hex("E1F97A0D3E018BE0D64FA32C06DE4139");
    let salt = hex("0EC675AD498AFEEBB6960B3AABE6");
    SrtpKey::new(
        suite,
        key.try_into().expect("16"),
        salt.try_into().expect("14"),
    )
}

fn pair(suite: SrtpSuite) -> (SrtpContext, SrtpContext) {
    let key = SrtpKey::generate(suite);
    (SrtpContext::new(&key), SrtpContext::new(&key))
}

fn rtp(seq: u16, ssrc: u32, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x80, 0x00];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

fn protect(tx: &mut SrtpContext, plain: &[u8]) -> Vec<u8> {
    let mut buf = plain.to_vec();
    buf.resize(plain.len() + MAX_OVERHEAD, 0);
    let n = tx.protect_rtp(&mut buf, plain.len()).expect("protect");
    buf.truncate(n);
    buf
}

fn unprotect(rx: &mut SrtpContext, packet: &[u8]) -> Result<Vec<u8>, SrtpError> {
    let mut buf = packet.to_vec();
    let n = rx.unprotect_rtp(&mut buf)?;
    buf.truncate(n);
    Ok(buf)
}

const PLAIN_RTP: &str = "800f1234 decafbad cafebabe abababab abababab abababab abababab";
const PLAIN_RTCP: &str = "81c8000b cafebabe abababab abababab abababab abababab";

#[test]
fn known_answer_srtp_packet_80() {
    let plain = hex(PLAIN_RTP);
    let expected = hex(
        "800f1234 decafbad cafebabe 4e55dc4c e79978d8 8ca4d215 949d2402
                        b78d6acc 99ea179b 8dbb",
    );
    let mut tx = SrtpContext::new(&rfc_key(SrtpSuite::AesCm128HmacSha1_80));
    assert_eq!(protect(&mut tx, &plain), expected);
    let mut rx = SrtpContext::new(&rfc_key(SrtpSuite::AesCm128HmacSha1_80));
    assert_eq!(unprotect(&mut rx, &expected), Ok(plain));
}

#[test]
fn known_answer_srtp_packet_32_is_the_80_tag_truncated() {
    let plain = hex(PLAIN_RTP);
    let expected = hex(
        "800f1234 decafbad cafebabe 4e55dc4c e79978d8 8ca4d215 949d2402
                        b78d6acc",
    );
    let mut tx = SrtpContext::new(&rfc_key(SrtpSuite::AesCm128HmacSha1_32));
    assert_eq!(protect(&mut tx, &plain), expected);
}

#[test]
fn known_answer_srtcp_packet() {
    let plain = hex(PLAIN_RTCP);
    let expected = hex("81c8000b cafebabe 7128035b e487b9bd bef89041 f977a5a8
                        80000001 993e08cd 54d6c123 0798");
    // The first SRTCP index libsrtp sends is 1; ours starts at 0.
    let mut tx = SrtpContext::new(&rfc_key(SrtpSuite::AesCm128HmacSha1_80));
    tx.srtcp_index = 1;
    let mut buf = plain.clone();
    buf.resize(plain.len() + MAX_OVERHEAD, 0);
    assert_eq!(tx.protect_rtcp(&mut buf, plain.len()), Ok(expected.len()));
    assert_eq!(buf, expected);
    // The 32-bit suite keeps the 80-bit SRTCP tag.
    let mut rx = SrtpContext::new(&rfc_key(SrtpSuite::AesCm128HmacSha1_32));
    let mut packet = expected.clone();
    assert_eq!(rx.unprotect_rtcp(&mut packet), Ok(plain.len()));
    assert_eq!(&packet[..plain.len()], &plain[..]);
}

#[test]
fn round_trips_in_both_suites() {
    for suite in [
        SrtpSuite::AesCm128HmacSha1_80,
        SrtpSuite::AesCm128HmacSha1_32,
    ] {
        let (mut tx, mut rx) = pair(suite);
        for seq in 0..100u16 {
            let plain = rtp(seq, 7, &[seq as u8; 160]);
            let sealed = protect(&mut tx, &plain);
            assert_eq!(sealed.len(), plain.len() + suite.rtp_tag_len());
            assert_ne!(&sealed[12..172], &plain[12..], "payload encrypted");
            assert_eq!(unprotect(&mut rx, &sealed), Ok(plain));
        }
        let report = hex(PLAIN_RTCP);
        let mut buf = report.clone();
        buf.resize(report.len() + MAX_OVERHEAD, 0);
        let n = tx.protect_rtcp(&mut buf, report.len()).expect("protect");
        buf.truncate(n);
        assert_eq!(rx.unprotect_rtcp(&mut buf), Ok(report.len()));
        assert_eq!(&buf[..report.len()], &report[..]);
    }
}

#[test]
fn the_rollover_counter_follows_the_wrap_with_reordering() {
    let (mut tx, mut rx) = pair(SrtpSuite::AesCm128HmacSha1_80);
    // Sent in order across 65535 -> 0: the sender's ROC becomes 1.
    let sent: Vec<(u16, Vec<u8>)> = (65_500u16..=65_535)
        .chain(0..40)
        .map(|seq| (seq, protect(&mut tx, &rtp(seq, 9, &[1; 20]))))
        .collect();
    // Received out of order near the wrap: every one authenticates, which
    // needs the right ROC in the tag.
    let mut order: Vec<usize> = (0..sent.len()).collect();
    for pair in order.chunks_mut(3) {
        pair.reverse();
    }
    for i in order {
        let (seq, packet) = &sent[i];
        let plain = unprotect(&mut rx, packet).unwrap_or_else(|e| panic!("seq {seq}: {e}"));
        assert_eq!(plain, rtp(*seq, 9, &[1; 20]));
    }
    // A late one from before the wrap still has ROC 0.
    let (mut tx2, mut rx2) = pair(SrtpSuite::AesCm128HmacSha1_80);
    let before = protect(&mut tx2, &rtp(65_530, 3, &[2; 8]));
    let after = protect(&mut tx2, &rtp(2, 3, &[2; 8]));
    let late = protect(&mut tx2, &rtp(65_533, 3, &[2; 8]));
    assert!(unprotect(&mut rx2, &before).is_ok());
    assert!(unprotect(&mut rx2, &after).is_ok());
    assert!(unprotect(&mut rx2, &late).is_ok());
}

#[test]
fn a_replayed_packet_is_refused() {
    let (mut tx, mut rx) = pair(SrtpSuite::AesCm128HmacSha1_80);
    let first = protect(&mut tx, &rtp(10, 1, &[0; 160]));
    let second = protect(&mut tx, &rtp(11, 1, &[0; 160]));
    assert!(unprotect(&mut rx, &first).is_ok());
    assert!(unprotect(&mut rx, &second).is_ok());
    assert_eq!(unprotect(&mut rx, &first), Err(SrtpError::Replayed));
    assert_eq!(unprotect(&mut rx, &second), Err(SrtpError::Replayed));

    let report = hex(PLAIN_RTCP);
    let mut buf = report.clone();
    buf.resize(report.len() + MAX_OVERHEAD, 0);
    let n = tx.protect_rtcp(&mut buf, report.len()).expect("protect");
    buf.truncate(n);
    assert!(rx.unprotect_rtcp(&mut buf.clone()).is_ok());
    assert_eq!(rx.unprotect_rtcp(&mut buf), Err(SrtpError::Replayed));
}

#[test]
fn a_tampered_packet_is_refused_and_leaves_no_state() {
    for suite in [
        SrtpSuite::AesCm128HmacSha1_80,
        SrtpSuite::AesCm128HmacSha1_32,
    ] {
        let (mut tx, mut rx) = pair(suite);
        let good = protect(&mut tx, &rtp(500, 1, &[5; 160]));
        for at in [2, 20, good.len() - 1] {
            let mut bad = good.clone();
            bad[at] ^= 0x01;
            assert_eq!(unprotect(&mut rx, &bad), Err(SrtpError::AuthFailed), "{at}");
        }
        // A forged packet from another key.
        let (mut forger, _) = pair(suite);
        let forged = protect(&mut forger, &rtp(501, 1, &[6; 160]));
        assert_eq!(unprotect(&mut rx, &forged), Err(SrtpError::AuthFailed));
        // None of them moved the window or made a stream.
        assert_eq!(rx.rtp_streams.0.len(), 0);
        assert!(unprotect(&mut rx, &good).is_ok());
        let mut short = good[..good.len() - suite.rtp_tag_len()].to_vec();
        short.truncate(13);
        assert!(unprotect(&mut rx, &short).is_err());
    }
}

#[test]
fn ssrcs_beyond_the_bound_are_refused_and_unauthenticated_ones_take_no_slot() {
    let key = SrtpKey::generate(SrtpSuite::AesCm128HmacSha1_80);
    let (mut tx, mut rx) = (SrtpContext::new(&key), SrtpContext::new(&key));
    // Forged packets with fresh SSRCs fill nothing.
    let forger = SrtpKey::generate(SrtpSuite::AesCm128HmacSha1_80);
    for ssrc in 100..200 {
        let forged = protect(&mut SrtpContext::new(&forger), &rtp(1, ssrc, &[0; 20]));
        assert_eq!(unprotect(&mut rx, &forged), Err(SrtpError::AuthFailed));
    }
    for ssrc in 0..MAX_SSRCS as u32 {
        let packet = protect(&mut tx, &rtp(1, ssrc, &[0; 20]));
        assert!(unprotect(&mut rx, &packet).is_ok());
    }
    let extra = protect(&mut SrtpContext::new(&key), &rtp(1, 99, &[0; 20]));
    assert_eq!(unprotect(&mut rx, &extra), Err(SrtpError::TooManySsrcs));
    // The sending side is bounded the same way.
    let mut buf = rtp(1, 1234, &[0; 20]);
    let len = buf.len();
    buf.resize(len + MAX_OVERHEAD, 0);
    assert_eq!(tx.protect_rtp(&mut buf, len), Err(SrtpError::TooManySsrcs));
}

#[test]
fn protect_needs_room_for_the_tag_and_a_valid_header() {
    let (mut tx, _) = pair(SrtpSuite::AesCm128HmacSha1_80);
    let mut exact = rtp(1, 1, &[0; 20]);
    let len = exact.len();
    assert_eq!(tx.protect_rtp(&mut exact, len), Err(SrtpError::NoRoom));
    let mut bad = vec![0x40u8; 40];
    assert_eq!(tx.protect_rtp(&mut bad, 20), Err(SrtpError::Malformed));
    // A header extension longer than the packet.
    let mut ext = rtp(1, 1, &[0; 4]);
    ext[0] |= 0x10;
    ext[14] = 0xff;
    let len = ext.len();
    ext.resize(len + 20, 0);
    assert_eq!(tx.protect_rtp(&mut ext, len), Err(SrtpError::Malformed));
    let mut rtcp = vec![0x81u8, 0xc8, 0, 1, 0, 0, 0, 1];
    assert_eq!(tx.protect_rtcp(&mut rtcp, 8), Err(SrtpError::NoRoom));
}

#[test]
fn the_header_extension_and_csrcs_stay_in_the_clear() {
    let (mut tx, mut rx) = pair(SrtpSuite::AesCm128HmacSha1_80);
    // One CSRC and a one-word extension: 12 + 4 + 8 header bytes.
    let mut plain = vec![0x91, 0x00, 0, 7, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3];
    plain.extend_from_slice(&[0xbe, 0xde, 0, 1, 1, 2, 3, 4]);
    plain.extend_from_slice(&[9; 40]);
    let sealed = protect(&mut tx, &plain);
    assert_eq!(&sealed[..24], &plain[..24]);
    assert_ne!(&sealed[24..64], &plain[24..]);
    assert_eq!(unprotect(&mut rx, &sealed), Ok(plain));
}

#[test]
fn debug_shows_no_key_material() {
    let ctx = SrtpContext::new(&rfc_key(SrtpSuite::AesCm128HmacSha1_80));
    let shown = format!("{ctx:?}");
    assert!(!shown.to_lowercase().contains("e1f97a"), "{shown}");
    assert!(shown.contains("AesCm128HmacSha1_80"));
}
