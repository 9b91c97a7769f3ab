//! SIP client authentication: answering a 401/407 challenge with digest credentials
//! (RFC 2617, RFC 7616, RFC 8760). Knows nothing of who asked for the request.
//! And the server side (`server`): checking the digest a trunk answers handoff's
//! own 407 with.

pub mod digest;
pub mod server;

pub use digest::{digest_authorization, ChallengeKind, DigestChallenge, DigestError};

/// A user name and password to answer a challenge with, borrowed from wherever they
/// are configured.
#[derive(Clone, Copy)]
pub struct DigestCredentials<'a> {
    pub username: &'a str,
    pub password: &'a str,
}

impl std::fmt::Debug for DigestCredentials<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DigestCredentials")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests;
