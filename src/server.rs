//! A running handoff: the transport bound, the B2BUA dispatching, the housekeeping
//! timer, and the graceful stop.

use crate::b2bua::{B2bua, B2buaStartError};
use crate::config::Settings;
use crate::http::{HttpBindError, HttpServer, HttpState};
use crate::metrics::Metrics;
use crate::session::{SessionStore, SessionStoreKind, SessionTable};
use crate::sip::transport::{BindError, TransportConfig, TransportLayer};
use crate::store::{Store, StoreError};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often expired absorber entries and lingering sessions are removed.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// What a node on Redis shares with the others besides its sessions: the
/// store's connection and settings (liveness and claims) and the contacts.
struct SharedRedis {
    conn: redis::aio::ConnectionManager,
    settings: crate::config::session::RedisSettings,
    contacts: crate::session::redis::contacts::RedisContacts,
}

pub struct Server {
    b2bua: B2bua,
    transport: Arc<TransportLayer>,
    metrics: Arc<Metrics>,
    sessions: Arc<dyn SessionStore>,
    /// The same store when it is the in-memory table, for tests and tools that
    /// inspect it synchronously.
    memory: Option<Arc<SessionTable>>,
    settings: Arc<Settings>,
    store: Store,
    events: crate::events::Events,
    sweeper: tokio::task::JoinHandle<()>,
    /// Keeps the source ACL's peer addresses current (only with trunks).
    peer_refresh: Option<tokio::task::JoinHandle<()>>,
    http: HttpServer,
    http_state: HttpState,
    /// Liveness and claims among the nodes on one Redis (Redis store only).
    cluster: tokio::sync::Mutex<Option<crate::cluster::Cluster>>,
    /// `[trunk.register]`: one registration task per trunk that registers.
    registrations: std::sync::Mutex<Vec<crate::sip::register::task::RegisterHandle>>,
}

/// How long the unregistering REGISTERs of a drain may take.
const UNREGISTER_LIMIT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    B2bua(#[from] B2buaStartError),
    #[error(transparent)]
    Bind(#[from] BindError),
    #[error(transparent)]
    HttpBind(#[from] HttpBindError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Enrichment(#[from] crate::zendesk::EnricherSetupError),
    #[error(transparent)]
    Events(#[from] crate::events::EventsStartError),
    #[error(transparent)]
    Redis(#[from] crate::session::redis::RedisSetupError),
}

impl Server {
    /// Bind every listener and start serving calls, with the session store
    /// `[session] store` names.
    pub async fn start(settings: Settings) -> Result<Server, StartError> {
        let metrics = Arc::new(Metrics::default());
        match (settings.session_store, &settings.session_redis) {
            (SessionStoreKind::Redis, Some(redis)) => {
                let store = crate::session::RedisStore::new(
                    redis,
                    &settings.node_id,
                    settings.session_capacity,
                    settings.session_linger,
                    metrics.clone(),
                )?;
                tracing::info!(
                    url = %crate::config::session::redact_url(&redis.url),
                    node_id = %settings.node_id,
                    "sessions in Redis"
                );
                // Unreachable is not a start-up failure: degraded mode until it answers.
                let _ = store.probe().await;
                let contacts = store.contacts();
                let redis = Some(SharedRedis {
                    conn: store.connection(),
                    settings: redis.clone(),
                    contacts,
                });
                Self::start_inner(settings, Arc::new(store), None, metrics, redis).await
            }
            _ => {
                let table = Arc::new(SessionTable::new(
                    settings.session_capacity,
                    settings.session_linger,
                ));
                metrics
                    .session_store_up
                    .store(1, std::sync::atomic::Ordering::Relaxed);
                Self::start_inner(settings, table.clone(), Some(table), metrics, None).await
            }
        }
    }

    /// The same with a session store made elsewhere (`[session] store` is not
    /// read): for embedding handoff, and for tests of a store that fails.
    pub async fn start_with_session_store(
        settings: Settings,
        sessions: Arc<dyn SessionStore>,
    ) -> Result<Server, StartError> {
        let metrics = Arc::new(Metrics::default());
        metrics
            .session_store_up
            .store(1, std::sync::atomic::Ordering::Relaxed);
        Self::start_inner(settings, sessions, None, metrics, None).await
    }

    async fn start_inner(
        settings: Settings,
        sessions: Arc<dyn SessionStore>,
        memory: Option<Arc<SessionTable>>,
        metrics: Arc<Metrics>,
        redis: Option<SharedRedis>,
    ) -> Result<Server, StartError> {
        let settings = Arc::new(settings);
        // Before anything opens a descriptor: the caps that fit beside the media reserve.
        let conns = crate::net::fd_budget::fit_to_descriptors(&settings);
        for w in settings.startup_warnings() {
            tracing::warn!("{w}");
        }
        let store = Store::open(settings.store_path.as_deref())?;
        if !store.is_durable() {
            tracing::warn!("no [store] path: contacts and queued events live in memory and are lost on restart");
        }
        // With Redis, the calls a crash left are ended by the cluster task, once
        // Redis says which of them another node ended already.
        let (events, cluster) = match &redis {
            Some(redis) => {
                let (events, link) = crate::events::Events::start_clustered(
                    &settings.events,
                    &store,
                    metrics.clone(),
                    &settings.node_id,
                )?;
                let cluster = crate::cluster::spawn(
                    redis.conn.clone(),
                    &redis.settings.key_prefix,
                    redis.settings.timeout,
                    settings.cluster.clone(),
                    events.clone(),
                    link,
                    metrics.clone(),
                );
                (events, Some(cluster))
            }
            None => (
                crate::events::Events::start_on_node(
                    &settings.events,
                    &store,
                    metrics.clone(),
                    &settings.node_id,
                )?,
                None,
            ),
        };
        let shared_contacts = redis.map(|r| r.contacts);
        // Ids this node gave while single-node stay theirs in Redis.
        if let Some(shared) = &shared_contacts {
            crate::session::contacts::copy_at_start(
                &store,
                shared.clone(),
                crate::session::contacts::COPY_RETRY,
            )
            .await?;
        }
        // Before any listener: a setup failure leaves nothing bound.
        let zendesk = crate::zendesk::hooks(
            &settings,
            &store,
            shared_contacts,
            sessions.clone(),
            metrics.clone(),
        )?;
        let b2bua = B2bua::new(
            settings.clone(),
            sessions.clone(),
            metrics.clone(),
            events.clone(),
            zendesk.notes.clone(),
        )?;
        // The dispatcher is the transport's sink and holds no transport: each message
        // comes with the transport to answer through.
        let transport = TransportLayer::start(
            TransportConfig {
                udp: settings.listen_udp.clone(),
                tcp: settings.listen_tcp.clone(),
                max_message_size: settings.max_message_size,
                tcp_idle_timeout: settings.tcp_idle_timeout,
                tcp_connect_timeout: settings.tcp_connect_timeout,
                dns_servers: settings.dns_servers.clone(),
                tcp_limits: conns.sip_tcp,
                tls: Some(crate::sip::transport::TlsTransportConfig {
                    listen: settings.tls.listen.clone(),
                    server: settings.tls.server.as_ref().map(|s| s.config.clone()),
                    client_auth: settings
                        .tls
                        .server
                        .as_ref()
                        .map(|s| s.client_auth.clone())
                        .unwrap_or_default(),
                    client: settings.tls.client.clone(),
                    identities: settings
                        .tls
                        .identities
                        .iter()
                        .map(|i| (i.name.clone(), i.config.clone()))
                        .collect(),
                    handshake_timeout: settings.tls.handshake_timeout,
                }),
            },
            Arc::new(b2bua.clone()),
            metrics.clone(),
        )
        .await?;
        // With trunks, the AI agents' and transfer destinations' addresses are
        // trusted too: looked up now and every minute.
        let peer_refresh = (!b2bua.acl().takes_everyone()).then(|| {
            tokio::spawn(crate::b2bua::peers::refresh_loop(
                b2bua.acl().clone(),
                settings.clone(),
                transport.clone(),
                crate::b2bua::peers::REFRESH,
            ))
        });
        let sweeping = b2bua.clone();
        let swept_sessions = sessions.clone();
        let sweeper = tokio::spawn(async move {
            let mut tick = tokio::time::interval(SWEEP_INTERVAL);
            loop {
                tick.tick().await;
                sweeping.sweep();
                if let Err(e) = swept_sessions.sweep().await {
                    tracing::warn!(error = %e, "session store sweep failed");
                }
            }
        });
        // The sidecar comes up after the SIP listeners, so /readyz is true from the start.
        let http_state = HttpState::new(
            settings.clone(),
            sessions.clone(),
            metrics.clone(),
            zendesk.enricher,
        );
        if let Some(c) = zendesk.confirmer {
            http_state.set_confirmer(c);
        }
        let http =
            match HttpServer::start(settings.http.listen, http_state.clone(), conns.http).await {
                Ok(h) => h,
                Err(e) => {
                    sweeper.abort();
                    if let Some(p) = &peer_refresh {
                        p.abort();
                    }
                    return Err(e.into());
                }
            };
        http_state.set_ready(true);
        let registrations = start_registrations(&settings, &b2bua, &transport, &metrics);
        Ok(Server {
            registrations: std::sync::Mutex::new(registrations),
            b2bua,
            transport,
            metrics,
            sessions,
            memory,
            settings,
            store,
            events,
            sweeper,
            peer_refresh,
            http,
            http_state,
            cluster: tokio::sync::Mutex::new(cluster),
        })
    }

    pub fn udp_addrs(&self) -> &[SocketAddr] {
        self.transport.udp_addrs()
    }

    pub fn tcp_addrs(&self) -> &[SocketAddr] {
        self.transport.tcp_addrs()
    }

    pub fn tls_addrs(&self) -> &[SocketAddr] {
        self.transport.tls_addrs()
    }

    /// Read `sip.tls_cert` and `sip.tls_key` again (on SIGHUP): handshakes from now on
    /// present the new pair; connections already up, and their calls, keep theirs. A
    /// pair that cannot be used is refused and the one in use stays. `Ok(false)`: no
    /// TLS listener, nothing to reload.
    pub fn reload_tls(&self) -> Result<bool, crate::config::tls::TlsFileError> {
        // The client certificates per destination and route, each on its own.
        let (reloaded, failed) = self.settings.tls.identities.reload();
        Metrics::add(&self.metrics.sip_tls_cert_reloads_total, reloaded as u64);
        for (name, e) in &failed {
            Metrics::inc(&self.metrics.sip_tls_cert_reload_failures_total);
            tracing::warn!(identity = %name, error = %e, "TLS client certificate not reloaded; the one in use stays");
        }
        let Some(server) = &self.settings.tls.server else {
            return match failed.into_iter().next() {
                Some((_, e)) => Err(e),
                None => Ok(reloaded > 0),
            };
        };
        match server.cert.reload() {
            Ok(()) => {
                Metrics::inc(&self.metrics.sip_tls_cert_reloads_total);
                tracing::info!(cert = %server.cert.cert_path.display(), "TLS certificate reloaded");
                Ok(true)
            }
            Err(e) => {
                Metrics::inc(&self.metrics.sip_tls_cert_reload_failures_total);
                tracing::warn!(error = %e, "TLS certificate not reloaded; the one in use stays");
                Err(e)
            }
        }
    }

    /// Where the HTTP sidecar listens.
    pub fn http_addr(&self) -> SocketAddr {
        self.http.local_addr()
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The session store the calls and the sidecar share.
    pub fn session_store(&self) -> &Arc<dyn SessionStore> {
        &self.sessions
    }

    /// The in-memory session table, when that is the configured store
    /// (`[session] store = "memory"`); None for a store shared between nodes.
    pub fn sessions(&self) -> Option<&Arc<SessionTable>> {
        self.memory.as_ref()
    }

    /// The embedded store (contacts, event outbox).
    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn active_calls(&self) -> usize {
        self.b2bua.active_calls()
    }

    /// This node's `[cluster] node_id`.
    pub fn node_id(&self) -> &str {
        &self.settings.node_id
    }

    /// Begin draining without waiting: new calls and OPTIONS get 503, `/readyz`
    /// answers 503 `"draining"`, live calls go on. `drain` does this first.
    pub fn start_draining(&self) {
        self.b2bua.start_draining();
        self.http_state.set_draining();
    }

    /// Graceful stop: refuse new calls with 503, let live calls finish for up to the
    /// configured drain time, then end the rest with BYE and wait briefly for them.
    pub async fn drain(&self) {
        self.start_draining();
        // The registrars learn at once that calls should go elsewhere (RFC 3261 10.2.2).
        self.unregister().await;
        let active = self.active_calls();
        tracing::info!(
            node_id = %self.settings.node_id,
            active,
            drain_secs = self.settings.drain_timeout.as_secs(),
            "draining: new calls get 503"
        );
        let until = Instant::now() + self.settings.drain_timeout;
        while self.active_calls() > 0 && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if self.active_calls() > 0 {
            tracing::info!(
                active = self.active_calls(),
                "drain time over: ending the remaining calls"
            );
            self.b2bua.end_all_calls();
            // Time for the BYEs to be answered (one Timer F at most, usually far less).
            let until = Instant::now() + (self.settings.t1 * 64).min(Duration::from_secs(5));
            while self.active_calls() > 0 && Instant::now() < until {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        // Webhooks are served until the last call is gone: a late stamp still counts.
        self.http.stop();
        // The calls' last events are in the outbox before handoff exits.
        if !self.events.flush(Duration::from_secs(5)).await {
            tracing::warn!("events not all written to the outbox at stop");
        }
        // Then Redis learns of the calls' ends, so no other node ends them again.
        if let Some(c) = self.cluster.lock().await.take() {
            c.stop(Duration::from_secs(2)).await;
        }
        tracing::info!(left = self.active_calls(), "stopped");
    }
}

impl Server {
    /// Every registration ends with `Expires: 0`, all at once, within `UNREGISTER_LIMIT`.
    async fn unregister(&self) {
        let handles: Vec<_> = match self.registrations.lock() {
            Ok(mut h) => h.drain(..).collect(),
            Err(_) => return,
        };
        let mut stopping = tokio::task::JoinSet::new();
        for h in handles {
            stopping.spawn(h.stop(UNREGISTER_LIMIT));
        }
        while stopping.join_next().await.is_some() {}
    }
}

/// One registration task per trunk with `[trunk.register]`.
fn start_registrations(
    settings: &Arc<Settings>,
    b2bua: &B2bua,
    transport: &Arc<TransportLayer>,
    metrics: &Arc<Metrics>,
) -> Vec<crate::sip::register::task::RegisterHandle> {
    use crate::sip::register::task::{spawn, RegisterContext};
    settings
        .trunks
        .iter()
        .enumerate()
        .filter_map(|(i, t)| {
            let reg = t.register.clone()?;
            let ctx = RegisterContext {
                transport: transport.clone(),
                routes: b2bua.registrations().clone(),
                metrics: metrics.clone(),
                timers: crate::sip::transaction::TimerConfig {
                    t1: settings.t1,
                    t2: settings.t2,
                    t4: settings.t4,
                },
                user_agent: settings.user_agent.clone(),
                advertised_host: settings.advertised_host.clone(),
            };
            Some(spawn(i, t.name.clone(), reg, ctx, UNREGISTER_LIMIT))
        })
        .collect()
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(h) = self.registrations.get_mut() {
            for r in h.drain(..) {
                r.abort();
            }
        }
        self.sweeper.abort();
        if let Some(p) = &self.peer_refresh {
            p.abort();
        }
    }
}
