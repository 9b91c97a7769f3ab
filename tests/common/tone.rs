//! The PCMU tone SIPp's `rtp_stream` plays in the SIPp media tests
//! (`sipp_media.rs`, `outbound_sipp.rs`, `outbound_sipp_transfer.rs`).
//!
//! Included with `#[path = "common/tone.rs"] mod tone;` like `common/sipp.rs`,
//! so those tests do not compile the in-process test UA of `common/mod.rs`.

/// Packets of 20 ms at 8 kHz: 160 samples, 160 bytes of mu-law each.
pub const SAMPLES_PER_PACKET: u32 = 160;

/// Writes `packets` * 20 ms of a 440 Hz tone as raw 8 kHz G.711 mu-law, the
/// way `scripts/make-pcmu-tone.py` does: SIPp's rtp_stream sends a file's
/// bytes as they are, 160 a packet, so no header.
pub fn write_tone(path: &std::path::Path, packets: u32) {
    let data: Vec<u8> = (0..packets * SAMPLES_PER_PACKET)
        .map(|n| {
            let t = f64::from(n) / 8000.0;
            mulaw((8000.0 * (2.0 * std::f64::consts::PI * 440.0 * t).sin()) as i16)
        })
        .collect();
    std::fs::write(path, data).expect("write the PCMU tone");
}

/// G.711 mu-law encoding of one 16-bit linear sample (Sun's g711.c).
pub fn mulaw(sample: i16) -> u8 {
    let mut value = i32::from(sample) >> 2;
    let mask: i32 = if value < 0 {
        value = -value;
        0x7F
    } else {
        0xFF
    };
    value = value.min(8159) + 0x21;
    let mut segment = 0;
    while segment < 8 && value >= (0x40 << segment) {
        segment += 1;
    }
    if segment == 8 {
        return (0x7F ^ mask) as u8;
    }
    (((segment << 4) | ((value >> (segment + 1)) & 0x0F)) ^ mask) as u8
}

#[test]
fn mulaw_matches_g711_reference_values() {
    // Values as CPython's audioop.lin2ulaw (also Sun's g711.c) gives them.
    assert_eq!(mulaw(0), 0xFF);
    assert_eq!(mulaw(-1), 0x7E);
    assert_eq!(mulaw(i16::MAX), 0x80);
    assert_eq!(mulaw(i16::MIN), 0x00);
    assert_eq!(mulaw(1000), 0xCE);
}
