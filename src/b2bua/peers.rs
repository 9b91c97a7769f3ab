//! Keeps the source ACL's peer addresses current: each configured AI agent and
//! transfer destination resolved through the transport's resolver (its TTL cache),
//! at start and then every [`REFRESH`]. A lookup that fails keeps that peer's last
//! addresses. Only run when trunks are configured (without them everyone is taken).

use super::acl::{literal_ip, peer_uris, Acl};
use crate::sip::transport::TransportLayer;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

/// How often peers' host names are looked up again.
pub const REFRESH: Duration = Duration::from_secs(60);

/// Addresses kept per peer at most (a hostile DNS answer cannot grow the list).
const MAX_ADDRESSES_PER_PEER: usize = 32;

/// Resolve every peer now and every `every` after, for as long as the task lives.
pub async fn refresh_loop(
    acl: Arc<Acl>,
    settings: Arc<crate::config::Settings>,
    transport: Arc<TransportLayer>,
    every: Duration,
) {
    let uris = peer_uris(&settings);
    // IP literals are known without a lookup (and stay known if one fails).
    let mut known: Vec<Vec<IpAddr>> = uris
        .iter()
        .map(|u| literal_ip(&u.host).into_iter().collect())
        .collect();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        for (uri, ips) in uris.iter().zip(known.iter_mut()) {
            match transport.addresses_of(uri).await {
                Ok(mut found) => {
                    found.truncate(MAX_ADDRESSES_PER_PEER);
                    *ips = found;
                }
                Err(e) => {
                    tracing::debug!(host = %uri.host, error = %e, "peer address lookup failed; keeping the last answer")
                }
            }
        }
        acl.set_peers(known.iter().flatten().copied().collect());
    }
}
