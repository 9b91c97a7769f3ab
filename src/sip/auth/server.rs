//! Digest authentication *by* handoff (RFC 3261 22.3, RFC 7616, RFC 8760): a trunk's
//! out-of-dialog INVITE must carry a `Proxy-Authorization` answering a challenge
//! handoff made. Pure apart from a bounded replay table behind a mutex; the clock is
//! a parameter (unix seconds), so every decision is unit-tested.
//!
//! Nonces are stateless: `<unix seconds, hex>-<8 random bytes, hex>-<HMAC-SHA256(secret,
//! seconds:salt:realm), first 16 bytes, hex>`, the secret random per process. A nonce older than
//! [`NONCE_TTL_SECS`] is stale (`stale=true`: the client retries without asking its
//! user). Every nonce-count seen is remembered until the nonce expires, in a table of
//! at most [`MAX_TRACKED_NONCES`] nonces; an evicted nonce counts as stale from then
//! on, so eviction never lets a replay through.

use super::digest::{parse_auth_params, DigestAlgorithm};
use hmac::{Hmac, Mac};
use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::Mutex;
use subtle::ConstantTimeEq;

/// How long a nonce is good for.
pub const NONCE_TTL_SECS: u64 = 300;
/// Nonces whose counts are tracked at once (about 100 bytes each).
pub const MAX_TRACKED_NONCES: usize = 10_000;
/// A retransmitted INVITE carries the same nonce-count: taken again within this long
/// (RFC 3261 17.2.1: Timer H's 64*T1) when its Call-ID and CSeq are the same.
const RETRANSMIT_SECS: u64 = 32;
/// Longest `Proxy-Authorization` value read; real ones are a few hundred bytes.
const MAX_AUTHORIZATION_LEN: usize = 4096;
/// `Proxy-Authorization` headers looked at in one request.
const MAX_AUTHORIZATIONS: usize = 8;

/// What one trunk's credentials are, as validated configuration gives them.
#[derive(Clone, PartialEq, Eq)]
pub struct VerifierConfig {
    pub realm: String,
    pub username: String,
    pub password: String,
    /// The algorithms offered and accepted.
    pub offer: Offer,
}

/// Which digest algorithms a trunk is challenged with, in the order offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// SHA-256 only (the default).
    Sha256,
    /// MD5 only: for clients that answer only the first `Proxy-Authenticate` whatever
    /// its algorithm (SIPp 3.6.1 fails on a SHA-256 one even with an MD5 one after it).
    Md5,
    /// SHA-256 first, then MD5 (RFC 8760 2.4): the client answers the first it supports.
    Both,
}

impl Offer {
    fn algorithms(self) -> &'static [DigestAlgorithm] {
        match self {
            Offer::Sha256 => &[DigestAlgorithm::Sha256],
            Offer::Md5 => &[DigestAlgorithm::Md5],
            Offer::Both => &[DigestAlgorithm::Sha256, DigestAlgorithm::Md5],
        }
    }
}

impl std::fmt::Debug for VerifierConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifierConfig")
            .field("realm", &self.realm)
            .field("username", &self.username)
            .field("offer", &self.offer)
            .finish_non_exhaustive()
    }
}

/// The request being checked: only what the digest covers or the replay check keys on.
#[derive(Debug, Clone, Copy)]
pub struct AuthRequest<'a> {
    pub method: &'a str,
    /// The Request-URI exactly as received: the answer's `uri` must equal it.
    pub request_uri: &'a str,
    /// Call-ID and CSeq: tell a retransmission from a replay.
    pub call_id: &'a str,
    pub cseq: u32,
}

/// Why credentials were refused (for logs and the failure metric).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The header could not be parsed, or a field is missing or malformed.
    Malformed,
    /// The nonce was not made by this process (forged, or from before a restart).
    BadNonce,
    /// Another user name than the trunk's.
    UnknownUser,
    /// An algorithm, qop or `userhash` handoff did not offer.
    Unsupported,
    /// The `uri` answered is not this request's Request-URI.
    UriMismatch,
    /// The digest does not match: a wrong password.
    BadResponse,
    /// A nonce-count already used with this nonce (a replayed request).
    Replay,
}

/// The verdict on a request's credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Authorized,
    /// No credentials for our realm, or right ones with a stale nonce: `407` with
    /// fresh challenges (`stale=true` in the second case).
    Challenge {
        stale: bool,
    },
    /// Credentials for our realm that are wrong: `403` (counted). Not another `407`:
    /// a client that got the password wrong once will again, and a fresh challenge
    /// per guess only feeds a guesser.
    Refused(Refusal),
}

/// One trunk's verifier. Shared by the dispatcher's threads.
pub struct DigestVerifier {
    realm: String,
    username: String,
    /// HA1 (RFC 7616 3.4.2) per offered algorithm, preferred first; the password
    /// itself is not kept.
    ha1: Vec<(DigestAlgorithm, String)>,
    secret: [u8; 32],
    txn_keys: RandomState,
    seen: Mutex<NonceTable>,
}

impl std::fmt::Debug for DigestVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DigestVerifier")
            .field("realm", &self.realm)
            .finish_non_exhaustive()
    }
}

impl DigestVerifier {
    /// A verifier with a fresh random secret.
    pub fn new(cfg: &VerifierConfig) -> DigestVerifier {
        DigestVerifier::with_secret(cfg, rand::random())
    }

    pub fn with_secret(cfg: &VerifierConfig, secret: [u8; 32]) -> DigestVerifier {
        let a1 = format!("{}:{}:{}", cfg.username, cfg.realm, cfg.password);
        DigestVerifier {
            realm: cfg.realm.clone(),
            username: cfg.username.clone(),
            ha1: cfg
                .offer
                .algorithms()
                .iter()
                .map(|a| (*a, a.hash(&a1)))
                .collect(),
            secret,
            txn_keys: RandomState::new(),
            seen: Mutex::new(NonceTable::new(MAX_TRACKED_NONCES)),
        }
    }

    /// The `Proxy-Authenticate` values of a 407, preferred algorithm first (RFC 8760 2.4).
    pub fn challenges(&self, now: u64, stale: bool) -> Vec<String> {
        let nonce = self.nonce(now);
        self.ha1
            .iter()
            .map(|(alg, _)| {
                let mut v = format!(
                    "Digest realm=\"{}\", nonce=\"{nonce}\", algorithm={}, qop=\"auth\"",
                    self.realm,
                    alg.name()
                );
                if stale {
                    v.push_str(", stale=true");
                }
                v
            })
            .collect()
    }

    fn mac(&self, ts: u64, salt: &str) -> [u8; 32] {
        // HMAC takes a key of any length: new_from_slice cannot fail.
        let mut mac = match Hmac::<sha2::Sha256>::new_from_slice(&self.secret) {
            Ok(m) => m,
            Err(_) => return [0; 32],
        };
        mac.update(format!("{ts}:{salt}:{}", self.realm).as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// A fresh nonce: two 407s in one second must not share one (their nonce-counts
    /// would collide), hence the random salt.
    fn nonce(&self, ts: u64) -> String {
        let salt = hex(&rand::random::<[u8; 8]>());
        format!("{ts:x}-{salt}-{}", hex(&self.mac(ts, &salt)[..16]))
    }

    /// The nonce's time when this process made it.
    fn nonce_time(&self, nonce: &str) -> Option<u64> {
        let mut parts = nonce.split('-');
        let (ts, salt, mac) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || ts.is_empty() || ts.len() > 16 || salt.len() != 16 {
            return None;
        }
        if mac.len() != 32 {
            return None;
        }
        let ts = u64::from_str_radix(ts, 16).ok()?;
        let expected = hex(&self.mac(ts, salt)[..16]);
        bool::from(expected.as_bytes().ct_eq(mac.as_bytes())).then_some(ts)
    }

    /// Check `authorizations` (every `Proxy-Authorization` value of the request).
    pub fn verify<'a>(
        &self,
        req: &AuthRequest<'_>,
        authorizations: impl IntoIterator<Item = &'a str>,
        now: u64,
    ) -> Verdict {
        // The answer for our realm; others (an upstream proxy's) are not ours to judge.
        let mut ours = None;
        for value in authorizations.into_iter().take(MAX_AUTHORIZATIONS) {
            if value.len() > MAX_AUTHORIZATION_LEN {
                return Verdict::Refused(Refusal::Malformed);
            }
            let value = value.trim_start_matches([' ', '\t']);
            let scheme_end = value.find([' ', '\t']).unwrap_or(value.len());
            if !value[..scheme_end].eq_ignore_ascii_case("Digest") {
                continue;
            }
            let Ok(params) = parse_auth_params(&value[scheme_end..]) else {
                return Verdict::Refused(Refusal::Malformed);
            };
            let realm_is_ours = params
                .iter()
                .any(|(n, v)| n.eq_ignore_ascii_case("realm") && *v == self.realm);
            if realm_is_ours {
                ours = Some(params);
                break;
            }
        }
        let Some(params) = ours else {
            return Verdict::Challenge { stale: false };
        };
        match self.check(req, &params, now) {
            Ok(v) => v,
            Err(r) => Verdict::Refused(r),
        }
    }

    fn check(
        &self,
        req: &AuthRequest<'_>,
        params: &[(String, String)],
        now: u64,
    ) -> Result<Verdict, Refusal> {
        let get = |name: &str| {
            params
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        };
        let need = |name: &str| get(name).ok_or(Refusal::Malformed);
        let username = need("username")?;
        let nonce = need("nonce")?;
        let uri = need("uri")?;
        let response = need("response")?;
        let cnonce = need("cnonce")?;
        let nc_hex = need("nc")?;
        // RFC 7616 3.4: qop=auth is what we offered; no-qop (RFC 2069) is refused.
        if !get("qop").is_some_and(|q| q.eq_ignore_ascii_case("auth"))
            || get("userhash").is_some_and(|u| u.eq_ignore_ascii_case("true"))
        {
            return Err(Refusal::Unsupported);
        }
        // An answer without `algorithm` is MD5 (RFC 7616 3.4).
        let alg = match get("algorithm") {
            None => DigestAlgorithm::Md5,
            Some(a) => DigestAlgorithm::parse(a).ok_or(Refusal::Unsupported)?,
        };
        let Some((_, ha1)) = self.ha1.iter().find(|(a, _)| *a == alg) else {
            return Err(Refusal::Unsupported);
        };
        if nc_hex.len() != 8 || !nc_hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Refusal::Malformed);
        }
        let nc = u32::from_str_radix(nc_hex, 16).map_err(|_| Refusal::Malformed)?;
        if nc == 0 || cnonce.is_empty() {
            return Err(Refusal::Malformed);
        }
        let issued = self.nonce_time(nonce).ok_or(Refusal::BadNonce)?;
        if !bool::from(username.as_bytes().ct_eq(self.username.as_bytes())) {
            return Err(Refusal::UnknownUser);
        }
        if uri != req.request_uri {
            return Err(Refusal::UriMismatch);
        }
        let ha2 = alg.hash(&format!("{}:{uri}", req.method));
        let expected = alg.hash(&format!("{ha1}:{nonce}:{nc_hex}:{cnonce}:auth:{ha2}"));
        // Hex case is not significant; compare lowercase in constant time.
        let given = response.to_ascii_lowercase();
        if !bool::from(expected.as_bytes().ct_eq(given.as_bytes())) {
            return Err(Refusal::BadResponse);
        }
        // Right password: an old nonce is only stale (the client retries at once).
        if now.saturating_sub(issued) > NONCE_TTL_SECS || issued > now.saturating_add(5) {
            return Ok(Verdict::Challenge { stale: true });
        }
        let txn = self.transaction_key(req);
        let mut table = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        match table.record(nonce, issued, nc, txn, now) {
            NcCheck::Fresh => Ok(Verdict::Authorized),
            NcCheck::Replay => Err(Refusal::Replay),
            NcCheck::Forgotten => Ok(Verdict::Challenge { stale: true }),
        }
    }

    fn transaction_key(&self, req: &AuthRequest<'_>) -> u64 {
        // Randomly keyed SipHash: a peer cannot aim a collision.
        self.txn_keys.hash_one((req.call_id, req.cseq))
    }
}

/// What the nonce table says of a nonce-count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NcCheck {
    Fresh,
    Replay,
    /// The nonce was evicted from the table: we can no longer tell, so it is stale.
    Forgotten,
}

#[derive(Debug, Clone, Copy)]
struct NonceUse {
    issued: u64,
    nc: u32,
    txn: u64,
    at: u64,
}

/// Highest nonce-count per nonce, bounded.
#[derive(Debug)]
struct NonceTable {
    cap: usize,
    uses: HashMap<String, NonceUse>,
    order: VecDeque<String>,
    /// Nonces issued at or before this time and not in `uses` were evicted.
    floor: u64,
}

impl NonceTable {
    fn new(cap: usize) -> NonceTable {
        NonceTable {
            cap,
            uses: HashMap::new(),
            order: VecDeque::new(),
            floor: 0,
        }
    }

    fn record(&mut self, nonce: &str, issued: u64, nc: u32, txn: u64, now: u64) -> NcCheck {
        if let Some(u) = self.uses.get_mut(nonce) {
            if nc > u.nc {
                *u = NonceUse {
                    issued,
                    nc,
                    txn,
                    at: now,
                };
                return NcCheck::Fresh;
            }
            if nc == u.nc && txn == u.txn && now.saturating_sub(u.at) <= RETRANSMIT_SECS {
                return NcCheck::Fresh;
            }
            return NcCheck::Replay;
        }
        if issued <= self.floor {
            return NcCheck::Forgotten;
        }
        self.expire(now);
        while self.uses.len() >= self.cap {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Some(u) = self.uses.remove(&old) {
                self.floor = self.floor.max(u.issued);
            }
        }
        if issued <= self.floor {
            return NcCheck::Forgotten;
        }
        self.uses.insert(
            nonce.to_owned(),
            NonceUse {
                issued,
                nc,
                txn,
                at: now,
            },
        );
        self.order.push_back(nonce.to_owned());
        NcCheck::Fresh
    }

    /// Drop expired nonces from the front (they would be stale anyway).
    fn expire(&mut self, now: u64) {
        while let Some(front) = self.order.front() {
            let expired = self
                .uses
                .get(front)
                .is_none_or(|u| now.saturating_sub(u.issued) > NONCE_TTL_SECS);
            if !expired {
                break;
            }
            if let Some(old) = self.order.pop_front() {
                self.uses.remove(&old);
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.uses.len()
    }
}

fn hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(HEX[usize::from(b >> 4)]));
        s.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    s
}

/// Seconds since the epoch, for the verifier's clock.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
#[path = "server_tests.rs"]
mod tests;
