//! RFC 3263 section 4: from a `sip:` URI to the ordered `(transport, address)`
//! targets to try. The decisions are in [`select`] (pure); this is the shell around
//! them that asks DNS (hickory) and keeps answers in a small TTL-bounded cache, with
//! concurrent lookups of one name coalesced, so a burst of calls to the same host
//! does one lookup.
//!
//! Not done: NAPTR (RFC 3263 4.1 lets a client without it go straight to the SRV
//! records of the transports it supports) and `maddr`. `sips:` and `;transport=tls`
//! look up `_sips._tcp` (RFC 3263 4.1), else the host at 5061.

mod cache;
mod select;

pub use select::{default_port, ResolveError, Target, DEFAULT_PORT, DEFAULT_TLS_PORT};

use super::Transport;
use crate::sip::message::SipUri;
use cache::TtlCache;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::NetError;
use hickory_resolver::proto::rr::RData;
use hickory_resolver::TokioResolver;
use rand::Rng;
use select::{Candidate, Plan};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::OnceCell;

/// Names whose answers are kept at once.
const CACHE_ENTRIES: usize = 1024;
/// Lookups in flight that later callers may join; past it they look up on their own.
const MAX_INFLIGHT: usize = 1024;

/// What is cached per name: the candidates, or why there are none.
type Answer = Result<Arc<[Candidate]>, ResolveError>;

/// A cache key: the plan's inputs, never the URI's user part or parameters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    host: String,
    port: Option<u16>,
    transports: &'static [Transport],
}

/// The targets a URI resolves to, via DNS when it names a host.
pub struct Resolver {
    /// None when no resolver could be built: every lookup fails.
    dns: Option<TokioResolver>,
    cache: Mutex<TtlCache<Key, Answer>>,
    inflight: Mutex<HashMap<Key, Arc<OnceCell<Answer>>>>,
}

impl Resolver {
    /// Asks `servers` when given (tests point this at a fake server), else the
    /// system's resolver configuration (`/etc/resolv.conf`).
    pub fn new(servers: &[SocketAddr]) -> Resolver {
        let provider = TokioRuntimeProvider::default();
        let builder = if servers.is_empty() {
            match TokioResolver::builder_tokio() {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(error = %e, "no system DNS configuration: host names in URIs will not resolve");
                    TokioResolver::builder_with_config(ResolverConfig::default(), provider)
                }
            }
        } else {
            let servers = servers
                .iter()
                .map(|s| {
                    let mut udp = ConnectionConfig::udp();
                    udp.port = s.port();
                    let mut tcp = ConnectionConfig::tcp();
                    tcp.port = s.port();
                    NameServerConfig::new(s.ip(), true, vec![udp, tcp])
                })
                .collect();
            TokioResolver::builder_with_config(ResolverConfig::from_name_servers(servers), provider)
        };
        let dns = builder
            .build()
            .inspect_err(|e| {
                tracing::warn!(error = %e, "DNS resolver not configured: host names in URIs will not resolve");
            })
            .ok();
        Resolver {
            dns,
            cache: Mutex::new(TtlCache::new(CACHE_ENTRIES)),
            inflight: Mutex::new(HashMap::new()),
        }
    }

    /// The target of a URI that needs no lookup (an IP literal), if it is one.
    pub fn literal(
        uri: &SipUri,
        forced: Option<Transport>,
    ) -> Result<Option<Target>, ResolveError> {
        match select::plan(uri, forced)? {
            Plan::Literal(t) => Ok(Some(t)),
            _ => Ok(None),
        }
    }

    /// Every target of `uri` in the order to try them (RFC 3263 4.1, 4.2 and RFC 2782).
    /// `forced` overrides the URI's `;transport=`.
    pub async fn resolve(
        &self,
        uri: &SipUri,
        forced: Option<Transport>,
    ) -> Result<Vec<Target>, ResolveError> {
        let plan = select::plan(uri, forced)?;
        let key = match &plan {
            Plan::Literal(t) => return Ok(vec![*t]),
            Plan::Address {
                host,
                port,
                transport,
            } => Key {
                host: host.to_ascii_lowercase(),
                port: Some(*port),
                transports: match transport {
                    Transport::Udp => &[Transport::Udp],
                    Transport::Tcp => &[Transport::Tcp],
                    Transport::Tls => &[Transport::Tls],
                },
            },
            Plan::Srv { host, transports } => Key {
                host: host.to_ascii_lowercase(),
                port: None,
                transports,
            },
        };
        let candidates = self.candidates(key).await?;
        let mut rng = rand::thread_rng();
        Ok(select::order(&candidates, &mut |total| {
            rng.gen_range(0..=total)
        }))
    }

    /// The cached answer for `key`, else one lookup shared by every caller asking
    /// for it meanwhile.
    async fn candidates(&self, key: Key) -> Answer {
        if let Some(hit) = lock(&self.cache).get(&key, Instant::now()) {
            return hit;
        }
        let cell = {
            let mut inflight = lock(&self.inflight);
            match inflight.get(&key) {
                Some(c) => c.clone(),
                None if inflight.len() >= MAX_INFLIGHT => Arc::new(OnceCell::new()),
                None => inflight.entry(key.clone()).or_default().clone(),
            }
        };
        let answer = cell
            .get_or_init(|| async {
                let (answer, valid_until) = self.lookup(&key).await;
                let now = Instant::now();
                let negative = matches!(answer, Err(ResolveError::NotFound(_)));
                // A failed lookup (timeout) is not an answer: it is not cached.
                if answer.is_ok() || negative {
                    let until = cache::expiry(now, valid_until, negative);
                    lock(&self.cache).insert(key.clone(), answer.clone(), until, now);
                }
                answer
            })
            .await
            .clone();
        let mut inflight = lock(&self.inflight);
        if inflight.get(&key).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
            inflight.remove(&key);
        }
        answer
    }

    /// Ask DNS: SRV per transport in turn, else the host's A/AAAA. Returns the
    /// earliest expiry of the records used.
    async fn lookup(&self, key: &Key) -> (Answer, Option<Instant>) {
        let host = key.host.as_str();
        let mut until: Option<Instant> = None;
        let mut note = |v: Instant| until = Some(until.map_or(v, |u| u.min(v)));
        if let Some(port) = key.port {
            // An explicit port: the host's addresses, no SRV (RFC 3263 4.2).
            return self.host_only(host, port, key.transports).await;
        }
        for &transport in key.transports {
            let service = match transport {
                Transport::Udp => "_sip._udp",
                Transport::Tcp => "_sip._tcp",
                Transport::Tls => "_sips._tcp",
            };
            let Some(dns) = &self.dns else {
                return (Err(no_resolver(host)), None);
            };
            let srv = match dns.srv_lookup(format!("{service}.{host}")).await {
                Ok(l) => l,
                Err(e) if is_negative(&e) => continue,
                Err(e) => return (Err(failed(host, &e)), None),
            };
            note(srv.valid_until());
            let mut out = Vec::new();
            for record in srv.answers() {
                let RData::SRV(s) = &record.data else {
                    continue;
                };
                // RFC 2782: a target of "." says the service is not offered here.
                if s.target.is_root() {
                    continue;
                }
                match self.addresses(&s.target.to_ascii(), s.port).await {
                    Ok((addrs, v)) => {
                        note(v);
                        out.push(Candidate {
                            priority: s.priority,
                            weight: s.weight,
                            transport,
                            addrs,
                        });
                    }
                    Err(e) => {
                        tracing::debug!(target = %s.target, error = %e, "SRV target has no address")
                    }
                }
            }
            if !out.is_empty() {
                return (Ok(Arc::from(out)), until);
            }
        }
        // RFC 3263 4.2: no SRV records: the host's own addresses at the default port.
        let first = key.transports.first().copied().unwrap_or(Transport::Udp);
        let (answer, expiry) = self
            .host_only(host, default_port(first), key.transports)
            .await;
        if let Some(v) = expiry {
            note(v);
        }
        (answer, expiry.and(until))
    }

    /// The host's own addresses at `port`, as one candidate, and their expiry.
    async fn host_only(
        &self,
        host: &str,
        port: u16,
        transports: &[Transport],
    ) -> (Answer, Option<Instant>) {
        let transport = transports.first().copied().unwrap_or(Transport::Udp);
        match self.addresses(host, port).await {
            Ok((addrs, v)) => {
                let c = Candidate {
                    priority: 0,
                    weight: 0,
                    transport,
                    addrs,
                };
                (Ok(Arc::from(vec![c])), Some(v))
            }
            Err(e) => (Err(e), None),
        }
    }

    /// A/AAAA of `host` (IPv4 first, as hickory's default strategy does).
    async fn addresses(
        &self,
        host: &str,
        port: u16,
    ) -> Result<(Vec<SocketAddr>, Instant), ResolveError> {
        let Some(dns) = &self.dns else {
            return Err(no_resolver(host));
        };
        match dns.lookup_ip(host).await {
            Ok(l) => {
                let addrs: Vec<SocketAddr> = l.iter().map(|ip| SocketAddr::new(ip, port)).collect();
                if addrs.is_empty() {
                    return Err(ResolveError::NotFound(host.to_owned()));
                }
                Ok((addrs, l.valid_until()))
            }
            Err(e) if is_negative(&e) => Err(ResolveError::NotFound(host.to_owned())),
            Err(e) => Err(failed(host, &e)),
        }
    }
}

fn is_negative(e: &NetError) -> bool {
    e.is_nx_domain() || e.is_no_records_found()
}

fn no_resolver(host: &str) -> ResolveError {
    ResolveError::Lookup {
        host: host.to_owned(),
        reason: "no DNS resolver configured".into(),
    }
}

fn failed(host: &str, e: &NetError) -> ResolveError {
    ResolveError::Lookup {
        host: host.to_owned(),
        reason: e.to_string(),
    }
}

/// A poisoned lock only means another task panicked mid-update of a cache: the
/// data is still a valid cache.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
