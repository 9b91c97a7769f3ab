//! AES counter mode as SRTP uses it (RFC 3711 4.1.1) and the session key
//! derivation over it (4.3, key derivation rate 0). AES itself and the
//! counter mode are RustCrypto's (`aes`, `ctr`); only the IV layout is ours.

use aes::cipher::{InnerIvInit, KeyInit, KeyIvInit, StreamCipher};
use aes::Aes128;

use super::{MASTER_KEY_LEN, MASTER_SALT_LEN};

type Aes128Ctr = ctr::Ctr128BE<Aes128>;

/// Session encryption key length (AES-128).
pub const SESSION_KEY_LEN: usize = 16;
/// Session authentication key length (HMAC-SHA1, RFC 3711 4.2.1: 160 bits).
pub const SESSION_AUTH_LEN: usize = 20;
/// Session salt length (112 bits).
pub const SESSION_SALT_LEN: usize = 14;

/// RFC 3711 4.3.1 key derivation labels.
#[derive(Debug, Clone, Copy)]
pub enum Label {
    RtpEncryption = 0,
    RtpAuth = 1,
    RtpSalt = 2,
    RtcpEncryption = 3,
    RtcpAuth = 4,
    RtcpSalt = 5,
}

/// RFC 3711 4.3.1 with a key derivation rate of 0 (r = 0): the keystream of
/// AES-CM under the master key with IV = (label << 48 XOR master salt) << 16.
pub fn derive(
    master_key: &[u8; MASTER_KEY_LEN],
    master_salt: &[u8; MASTER_SALT_LEN],
    label: Label,
    out: &mut [u8],
) {
    let mut iv = [0u8; 16];
    iv[..MASTER_SALT_LEN].copy_from_slice(master_salt);
    // key_id = label || r (48 bits), r = 0: the label sits 7 bytes in.
    iv[7] ^= label as u8;
    out.fill(0);
    let mut ctr = Aes128Ctr::new(master_key.into(), &iv.into());
    ctr.apply_keystream(out);
}

/// The 128-bit IV of AES-CM for one packet (RFC 3711 4.1.1):
/// (salt << 16) XOR (SSRC << 64) XOR (index << 16).
pub fn packet_iv(salt: &[u8; SESSION_SALT_LEN], ssrc: u32, index: u64) -> [u8; 16] {
    let mut iv = [0u8; 16];
    iv[..SESSION_SALT_LEN].copy_from_slice(salt);
    for (b, s) in iv[4..8].iter_mut().zip(ssrc.to_be_bytes()) {
        *b ^= s;
    }
    // The index is 48 bits: bytes 8..14.
    for (b, s) in iv[8..14].iter_mut().zip(&index.to_be_bytes()[2..]) {
        *b ^= s;
    }
    iv
}

/// One session encryption key, its AES key schedule made once.
#[derive(Clone)]
pub struct SessionCipher {
    aes: Aes128,
    salt: [u8; SESSION_SALT_LEN],
}

impl SessionCipher {
    pub fn new(key: &[u8; SESSION_KEY_LEN], salt: [u8; SESSION_SALT_LEN]) -> SessionCipher {
        SessionCipher {
            aes: Aes128::new(key.into()),
            salt,
        }
    }

    /// XOR `data` with the keystream of (ssrc, index), in place: encrypts
    /// and decrypts alike.
    pub fn apply(&self, ssrc: u32, index: u64, data: &mut [u8]) {
        let iv = packet_iv(&self.salt, ssrc, index);
        let core = ctr::CtrCore::inner_iv_init(self.aes.clone(), &iv.into());
        let mut ctr = Aes128Ctr::from_core(core);
        ctr.apply_keystream(data);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
            .collect()
    }

    #[test]
    fn aes_cm_keystream_matches_rfc3711_b2() {
        // RFC 3711 B.2: session key and salt, IV from the salt alone.
        let key: [u8; 16] = hex("2B7E151628AED2A6ABF7158809CF4F3C")
            .try_into()
            .expect("16");
        let salt: [u8; 14] = hex("F0F1F2F3F4F5F6F7F8F9FAFBFCFD").try_into().expect("14");
        let cipher = SessionCipher::new(&key, salt);
        let mut stream = vec![0u8; 48];
        cipher.apply(0, 0, &mut stream);
        assert_eq!(
            stream,
            hex("E03EAD0935C95E80E166B16DD92B4EB4
                 D23513162B02D0F72A43A2FE4A5F97AB
                 41E95B3BB0A2E8DD477901E4FCA894C0")
        );
        // And the last blocks of the B.2 keystream (counter 0xfeff..0xff01).
        let mut tail = vec![0u8; 16 * 0xff02];
        cipher.apply(0, 0, &mut tail);
        assert_eq!(
            &tail[16 * 0xfeff..],
            &hex("EC8CDF7398607CB0F2D21675EA9EA1E4
                  362B7C3C6773516318A077D7FC5073AE
                  6A2CC3787889374FBEB4C81B17BA6C44")[..]
        );
    }

    #[test]
    fn key_derivation_matches_rfc3711_b3() {
        let key: [u8; 16] = hex("E1F97A0D3E018BE0D64FA32C06DE4139")
            .try_into()
            .expect("16");
        let salt: [u8; 14] = hex("0EC675AD498AFEEBB6960B3AABE6").try_into().expect("14");
        let mut enc = [0u8; SESSION_KEY_LEN];
        derive(&key, &salt, Label::RtpEncryption, &mut enc);
        assert_eq!(enc.to_vec(), hex("C61E7A93744F39EE10734AFE3FF7A087"));
        let mut session_salt = [0u8; SESSION_SALT_LEN];
        derive(&key, &salt, Label::RtpSalt, &mut session_salt);
        assert_eq!(session_salt.to_vec(), hex("30CBBC08863D8C85D49DB34A9AE1"));
        let mut auth = [0u8; 94];
        derive(&key, &salt, Label::RtpAuth, &mut auth);
        assert_eq!(
            auth.to_vec(),
            hex("CEBE321F6FF7716B6FD4AB49AF256A15
                 6D38BAA48F0A0ACF3C34E2359E6CDBCE
                 E049646C43D9327AD175578EF7227098
                 6371C10C9A369AC2F94A8C5FBCDDDC25
                 6D6E919A48B610EF17C2041E47403576
                 6B68642C59BBFC2F34DB60DBDFB2")
        );
    }

    #[test]
    fn the_packet_iv_places_ssrc_and_index() {
        let iv = packet_iv(&[0; 14], 0x0102_0304, 0x0000_a0b0_c0d0_e0f0);
        assert_eq!(
            iv,
            [0, 0, 0, 0, 1, 2, 3, 4, 0xa0, 0xb0, 0xc0, 0xd0, 0xe0, 0xf0, 0, 0]
        );
    }
}
