//! ns per packet for SRTP protect and unprotect of a G.711 packet (12-byte
//! header, 160-byte payload), AES_CM_128_HMAC_SHA1_80: webrtc-srtp's
//! `Context` against handoff's `SrtpContext`. Prints a markdown table.

#[allow(dead_code, unused_imports)]
#[path = "../../../src/media/srtp/mod.rs"]
mod srtp;

use std::hint::black_box;
use std::time::Instant;

use srtp::{SrtpContext, SrtpKey, SrtpSuite, MAX_OVERHEAD};
use webrtc_srtp::context::Context;
use webrtc_srtp::protection_profile::ProtectionProfile;

const PACKETS: usize = 200_000;
const ROUNDS: usize = 5;

fn plain(seq: u16) -> Vec<u8> {
    let mut p = vec![0x80, 0x00];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    p.extend_from_slice(&0x1234_5678u32.to_be_bytes());
    p.extend((0..160u16).map(|i| i as u8 ^ seq as u8));
    p
}

// Best of ROUNDS, in ns per packet.
fn best(mut run: impl FnMut() -> f64) -> f64 {
    (0..ROUNDS).map(|_| run()).fold(f64::INFINITY, f64::min)
}

fn per_packet(start: Instant) -> f64 {
    start.elapsed().as_nanos() as f64 / PACKETS as f64
}

fn main() {
    let key = SrtpKey::generate(SrtpSuite::AesCm128HmacSha1_80);
    let profile = ProtectionProfile::Aes128CmHmacSha1_80;
    let webrtc = || {
        Context::new(key.master_key(), key.master_salt(), profile, None, None)
            .expect("webrtc-srtp context")
    };
    let packets: Vec<Vec<u8>> = (0..PACKETS).map(|i| plain(i as u16)).collect();

    // Cross-check: each side decrypts what the other encrypted.
    let mut ours = SrtpContext::new(&key);
    let mut theirs = webrtc();
    for p in packets.iter().take(1000) {
        let mut buf = p.clone();
        buf.resize(p.len() + MAX_OVERHEAD, 0);
        let n = ours.protect_rtp(&mut buf, p.len()).expect("protect");
        let back = theirs
            .decrypt_rtp(&buf[..n])
            .expect("webrtc-srtp decrypts ours");
        assert_eq!(&back[..], &p[..]);
    }

    let mut rows = Vec::new();

    let protect_webrtc = best(|| {
        let mut ctx = webrtc();
        let t = Instant::now();
        for p in &packets {
            black_box(ctx.encrypt_rtp(black_box(p)).expect("encrypt"));
        }
        per_packet(t)
    });
    let sealed: Vec<Vec<u8>> = {
        let mut ctx = webrtc();
        packets
            .iter()
            .map(|p| ctx.encrypt_rtp(p).expect("encrypt").to_vec())
            .collect()
    };
    let unprotect_webrtc = best(|| {
        let mut ctx = webrtc();
        let t = Instant::now();
        for p in &sealed {
            black_box(ctx.decrypt_rtp(black_box(p)).expect("decrypt"));
        }
        per_packet(t)
    });
    rows.push((
        "webrtc-srtp 0.15 `Context` (allocates a `Bytes` per packet)",
        protect_webrtc,
        unprotect_webrtc,
    ));

    // Ours, in place on a reused buffer as the relay does (the copy in is
    // the relay's recvmmsg; counted here so both sides read the packet).
    let mut buf = vec![0u8; 2048];
    let protect_ours = best(|| {
        let mut ctx = SrtpContext::new(&key);
        let t = Instant::now();
        for p in &packets {
            buf[..p.len()].copy_from_slice(p);
            black_box(ctx.protect_rtp(&mut buf, p.len()).expect("protect"));
        }
        per_packet(t)
    });
    let unprotect_ours = best(|| {
        let mut ctx = SrtpContext::new(&key);
        let t = Instant::now();
        for p in &sealed {
            buf[..p.len()].copy_from_slice(p);
            black_box(ctx.unprotect_rtp(&mut buf[..p.len()]).expect("unprotect"));
        }
        per_packet(t)
    });
    rows.push((
        "handoff `SrtpContext` over RustCrypto aes 0.8 + ctr 0.9 + hmac 0.12 + sha1 0.10, in place",
        protect_ours,
        unprotect_ours,
    ));

    // The primitives alone, for where the time goes.
    use aes::cipher::{KeyIvInit, StreamCipher};
    use hmac::{Hmac, Mac};
    let aes_ctr = best(|| {
        let t = Instant::now();
        for p in &packets {
            buf[..p.len()].copy_from_slice(p);
            let mut c = ctr::Ctr128BE::<aes::Aes128>::new(&[7u8; 16].into(), &[9u8; 16].into());
            c.apply_keystream(&mut buf[12..172]);
            black_box(&buf);
        }
        per_packet(t)
    });
    let mac = Hmac::<sha1::Sha1>::new_from_slice(&[3u8; 20]).expect("key");
    let hmac_rustcrypto = best(|| {
        let t = Instant::now();
        for p in &packets {
            let mut m = mac.clone();
            m.update(p);
            m.update(&[0, 0, 0, 0]);
            black_box(m.finalize().into_bytes());
        }
        per_packet(t)
    });
    let ring_key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, &[3u8; 20]);
    let hmac_ring = best(|| {
        let t = Instant::now();
        for p in &packets {
            let mut c = ring::hmac::Context::with_key(&ring_key);
            c.update(p);
            c.update(&[0, 0, 0, 0]);
            black_box(c.sign());
        }
        per_packet(t)
    });

    println!("| implementation | protect ns/packet | unprotect ns/packet |");
    println!("| --- | ---: | ---: |");
    for (name, p, u) in rows {
        println!("| {name} | {p:.0} | {u:.0} |");
    }
    println!();
    println!("| primitive, 172-byte packet | ns/packet |");
    println!("| --- | ---: |");
    println!("| AES-128-CTR over 160 bytes (RustCrypto, key schedule included) | {aes_ctr:.0} |");
    println!(
        "| HMAC-SHA1 over 176 bytes, RustCrypto (keyed state cloned) | {hmac_rustcrypto:.0} |"
    );
    println!("| HMAC-SHA1 over 176 bytes, ring 0.17 | {hmac_ring:.0} |");
}
